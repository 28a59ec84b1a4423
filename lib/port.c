/* SPDX-License-Identifier: MIT */
/* lib/port.c: PLACEHOLDER, to be written. */
#include "internal.h"
