/* SPDX-License-Identifier: MIT */
/* lib/chan.c: PLACEHOLDER, to be written. */
#include "internal.h"
