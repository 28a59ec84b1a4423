/* SPDX-License-Identifier: MIT */
/* lib/linux/name.c: PLACEHOLDER, to be written. */
#include "internal.h"
