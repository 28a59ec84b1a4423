/* SPDX-License-Identifier: MIT */
/* lib/darwin/region.c: PLACEHOLDER, to be written. */
#include "internal.h"
