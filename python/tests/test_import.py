# SPDX-License-Identifier: MIT
# test_import.py: the package imports from the build tree, with its error class and its extension module.
import os

import memport


def test_import():
    assert issubclass(memport.Error, Exception)
    assert memport._memport.__name__ == "memport._memport"
    assert callable(memport.recv_async)


def test_imported_from_build_tree():
    # tests/test_python.sh sets MEMPORT_TOP_BUILDDIR; the package must be this build's, never
    # the sources' python/memport (no module there) nor an installed copy.
    top = os.environ.get("MEMPORT_TOP_BUILDDIR")
    if top is None:
        return
    build = os.path.join(top, "python", "build", "memport") + os.sep
    assert memport.__file__.startswith(build)
    assert memport._memport.__file__.startswith(build)
