/* SPDX-License-Identifier: MIT */
/* lib/sem.c: PLACEHOLDER, to be written. */
#include "internal.h"
