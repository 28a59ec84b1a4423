/* SPDX-License-Identifier: MIT */
/* lib/ring.c: PLACEHOLDER, to be written. */
#include "internal.h"
