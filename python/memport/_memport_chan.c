/* SPDX-License-Identifier: MIT */
/* _memport_chan.c: PLACEHOLDER from the pybuild branch (an empty translation unit); pyext's file replaces it at merge. */
#include "_memport.h"

typedef int memport_py_placeholder_chan;
