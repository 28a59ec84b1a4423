/* SPDX-License-Identifier: MIT */
/* lib/darwin/port.c: PLACEHOLDER, to be written. */
#include "internal.h"
