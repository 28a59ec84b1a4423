/* SPDX-License-Identifier: MIT */
/* lib/darwin/sem.c: PLACEHOLDER, to be written. */
#include "internal.h"
