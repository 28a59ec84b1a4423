# SPDX-License-Identifier: MIT
# test_import.py: the package imports from the build tree, with its error class and its extension module.
import memport


def test_import():
    assert issubclass(memport.Error, Exception)
    assert memport._memport.__name__ == "memport._memport"
    assert callable(memport.recv_async)
