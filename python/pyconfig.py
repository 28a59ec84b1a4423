# SPDX-License-Identifier: MIT
# pyconfig.py: run by configure with the chosen interpreter; prints what the build of the Python binding needs.
"""Usage: PYTHON pyconfig.py include|platinclude|ext-suffix|platlib PREFIX

platlib prints the install directory of the memport package for PREFIX, relative to PREFIX:
the interpreter's own search directory under PREFIX if there is one (Debian: for /usr/local,
lib/python3.X/dist-packages; for /usr, lib/python3/dist-packages, not its nested
prefix /usr/local), else the layout of the
interpreter's default install scheme (Debian's posix_local scheme names <base>/local/...,
that is the prefix /usr/local: its "local/" is dropped so the layout is relative to PREFIX).
"""
import os
import site
import sys
import sysconfig


def platlib(prefix):
    prefix = os.path.normpath(prefix)
    for d in site.getsitepackages():
        d = os.path.normpath(d)
        rel = os.path.relpath(d, prefix)
        # under PREFIX, but not in the nested prefix PREFIX/local (prefix /usr: not /usr/local)
        if d.startswith(prefix + os.sep) and os.path.basename(d) in ("dist-packages", "site-packages") \
                and not rel.startswith("local" + os.sep):
            return rel
    marker = os.sep + "@prefix@"
    scheme = sysconfig.get_default_scheme() if hasattr(sysconfig, "get_default_scheme") else None
    rel = os.path.relpath(sysconfig.get_path("platlib", vars={"base": marker, "platbase": marker}), marker)
    if scheme == "posix_local" and rel.startswith("local" + os.sep):
        rel = rel[len("local" + os.sep):]
    return rel


def main(argv):
    what = argv[1] if len(argv) > 1 else ""
    if what == "include":
        print(sysconfig.get_path("include"))
    elif what == "platinclude":
        print(sysconfig.get_path("platinclude"))
    elif what == "ext-suffix":
        print(sysconfig.get_config_var("EXT_SUFFIX") or ".so")
    elif what == "platlib" and len(argv) == 3:
        print(platlib(argv[2]))
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
