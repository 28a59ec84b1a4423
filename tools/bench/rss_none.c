/* SPDX-License-Identifier: MIT */
/* rss_none.c: memport-bench's stand-in for the resident-memory figure where there is no /proc/self/smaps
 * (Darwin): the figure is reported as n/a. */
#include "bench.h"

#include <string.h>

struct rss_report rssrep;

void run_rss(void) {
  memset(&rssrep, 0, sizeof rssrep);
  rssrep.ring_capacity = cfg.rss_ring;
  snprintf(rssrep.err, sizeof rssrep.err, "n/a on this platform (uses /proc/self/smaps and mincore)");
}
