/* SPDX-License-Identifier: MIT */
/* bridge_none.c: memport-bench's bridge rows where libmemport-bridge is not built (no libzmq, or not Linux): n/a. */
#include "bench.h"

void run_bridge(void) { progress("bridge vs raw ZeroMQ: n/a (memport-bench built without libmemport-bridge)\n"); }

void print_bridge(void) {
  printf("\nBridge: n/a (memport-bench built without libmemport-bridge: it needs libzmq and the Linux backend)\n");
}
