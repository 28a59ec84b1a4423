/* SPDX-License-Identifier: MIT */
/* lib/linux/sem.c: PLACEHOLDER, to be written. */
#include "internal.h"
