/* SPDX-License-Identifier: MIT */
/* lib/linux/inherit.c: PLACEHOLDER, to be written. */
#include "internal.h"
