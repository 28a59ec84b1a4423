/* SPDX-License-Identifier: MIT */
/* lib/linux/region.c: PLACEHOLDER, to be written. */
#include "internal.h"
