# SPDX-License-Identifier: MIT
# memport: a placeholder package over the C extension (the real __init__.py is pybuild's).
from ._memport import *  # noqa: F401,F403
