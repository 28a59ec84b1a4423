/* SPDX-License-Identifier: MIT */
/* lib/name.c: PLACEHOLDER, to be written. */
#include "internal.h"
