/* SPDX-License-Identifier: MIT */
/* memcpy.c: memport-bench's copy bandwidth of one process: large buffers (bound by DRAM), and 64 KiB blocks
 * through a buffer of the stream ring's size (the working set of the ring stream, in cache). */
#include "bench.h"

#include <inttypes.h>
#include <string.h>
#include <sys/mman.h>

void run_memcpy(void) {
  size_t len = cfg.memcpy_bytes;
  progress("memcpy: %zu MiB x %u", len / MIB, cfg.memcpy_reps);
  unsigned char *a = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANON, -1, 0);
  unsigned char *b = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANON, -1, 0);
  if (a == MAP_FAILED || b == MAP_FAILED) {
    progress_more(" n/a (mmap)\n");
    if (a != MAP_FAILED) munmap(a, len);
    if (b != MAP_FAILED) munmap(b, len);
    return;
  }
  pin_to(cpus[0]);
  fill_pattern(a, len);
  memset(b, 0, len);
  double best = 0, rates[64];
  unsigned reps = cfg.memcpy_reps > 64 ? 64 : cfg.memcpy_reps;
  unsigned sum = 0;
  for (unsigned r = 0; r < reps; r++) {
    int64_t t0 = now_ns();
    memcpy(r % 2 ? a : b, r % 2 ? b : a, len);
    __asm__ __volatile__("" ::: "memory");
    int64_t t1 = now_ns();
    sum += (r % 2 ? a : b)[len / 3];
    rates[r] = (double)len / (double)(t1 - t0); /* bytes per ns = GB/s */
    if (rates[r] > best) best = rates[r];
  }
  restore_affinity();
  /* median of the repetitions */
  for (unsigned i = 1; i < reps; i++)
    for (unsigned j = i; j > 0 && rates[j - 1] > rates[j]; j--) {
      double t = rates[j];
      rates[j] = rates[j - 1];
      rates[j - 1] = t;
    }
  struct result *r = add_result("memcpy", "");
  r->bytes = len;
  r->messages = reps;
  r->gbps = rates[reps / 2];
  r->has = R_BYTES | R_MSGS | R_GBPS;
  progress_more(" done (median %.2f GB/s, best %.2f, check %u)\n", r->gbps, best, sum & 1u);
  munmap(a, len);
  munmap(b, len);
}


/* 64 KiB blocks copied one after the other into the slots of a buffer of the stream ring's size, what the
 * ring stream's producer does per record; timed in segments like the stream, median of their rates. */
void run_memcpy_blocks(void) {
  size_t len = cfg.stream_ring < STREAM_RECORD ? STREAM_RECORD : cfg.stream_ring / STREAM_RECORD * STREAM_RECORD;
  size_t slots = len / STREAM_RECORD;
  uint64_t n = cfg.stream_bytes / STREAM_RECORD, w = 64;
  if (n < STREAM_SEGMENTS) n = STREAM_SEGMENTS;
  uint64_t seg = n / STREAM_SEGMENTS;
  n = seg * STREAM_SEGMENTS;
  progress("memcpy: %" PRIu64 " x 64 KiB through a %zu KiB buffer:", n, len / KIB);
  unsigned char *src = mmap(NULL, STREAM_RECORD, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANON, -1, 0);
  unsigned char *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANON, -1, 0);
  if (src == MAP_FAILED || buf == MAP_FAILED) {
    progress_more(" n/a (mmap)\n");
    if (src != MAP_FAILED) munmap(src, STREAM_RECORD);
    if (buf != MAP_FAILED) munmap(buf, len);
    return;
  }
  pin_to(cpus[0]);
  fill_pattern(src, STREAM_RECORD);
  memset(buf, 0, len);
  int64_t t[STREAM_SEGMENTS + 1];
  unsigned sum = 0;
  for (uint64_t i = 0; i < w + n; i++) {
    unsigned char *slot = buf + (i % slots) * STREAM_RECORD;
    memcpy(src, &i, 8); /* a different block each time, as the stream's records */
    memcpy(slot, src, STREAM_RECORD);
    __asm__ __volatile__("" ::: "memory");
    sum += slot[STREAM_RECORD - 1];
    if (i + 1 >= w && (i + 1 - w) % seg == 0) t[(i + 1 - w) / seg] = now_ns();
  }
  restore_affinity();
  struct result *r = add_result("memcpy", "");
  r->bytes = STREAM_RECORD;
  r->messages = (unsigned)n;
  r->gbps = segments_gbps(t, seg * STREAM_RECORD);
  r->has = R_BYTES | R_MSGS | R_GBPS;
  progress_more(" %.2f GB/s (median of %d segments; overall %.2f; check %u)\n", r->gbps, STREAM_SEGMENTS,
                (double)(n * STREAM_RECORD) / (double)(t[STREAM_SEGMENTS] - t[0] > 0 ? t[STREAM_SEGMENTS] - t[0] : 1),
                sum & 1u);
  munmap(src, STREAM_RECORD);
  munmap(buf, len);
}
