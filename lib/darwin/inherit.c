/* SPDX-License-Identifier: MIT */
/* lib/darwin/inherit.c: PLACEHOLDER, to be written. */
#include "internal.h"
