/* SPDX-License-Identifier: MIT */
/* lib/region.c: PLACEHOLDER, to be written. */
#include "internal.h"
