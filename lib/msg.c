/* SPDX-License-Identifier: MIT */
/* lib/msg.c: PLACEHOLDER, to be written. */
#include "internal.h"
