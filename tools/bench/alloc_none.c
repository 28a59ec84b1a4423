/* SPDX-License-Identifier: MIT */
/* alloc_none.c: memport-bench's stand-in for the allocation counter where the allocator cannot be wrapped
 * (Darwin): nothing is counted, and the steady-state report says so. */
#include "bench.h"

const bool bench_counts_malloc = false;

unsigned long alloc_count(void) { return 0; }
