/* SPDX-License-Identifier: MIT */
/* lib/darwin/name.c: PLACEHOLDER, to be written. */
#include "internal.h"
