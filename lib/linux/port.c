/* SPDX-License-Identifier: MIT */
/* lib/linux/port.c: PLACEHOLDER, to be written. */
#include "internal.h"
