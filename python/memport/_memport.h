/* SPDX-License-Identifier: MIT */
/* _memport.h: PLACEHOLDER from the pybuild branch (build plumbing only); pyext's file replaces it at merge. */
#ifndef MEMPORT_PY_MEMPORT_H
#define MEMPORT_PY_MEMPORT_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#endif
