/* SPDX-License-Identifier: MIT */
/* lib/inherit.c: PLACEHOLDER, to be written. */
#include "internal.h"
