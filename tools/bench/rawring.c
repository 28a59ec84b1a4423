/* SPDX-License-Identifier: MIT */
/* rawring.c: memport-bench's physical limit of the ring stream: the same 64 KiB records copied in and out of
 * a bare ring in a shared anonymous mapping by two spinning processes, no library. */
#include "bench.h"

#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

/* The simplest correct single-producer single-consumer protocol: two counters, each written by one side
 * only (release after its copy), read by the other (acquire before its copy); slot i % slots. */
struct raw_shared {
  _Alignas(64) _Atomic uint64_t head; /* records written, producer's */
  _Alignas(64) _Atomic uint64_t tail; /* records read, consumer's */
  _Alignas(64) int64_t t[STREAM_SEGMENTS + 1]; /* consumer's clock at the segment boundaries */
  _Atomic int failed;                          /* either side gave up: the other stops too */
  char err[200];
};

#define RAW_CTL 4096 /* the control page; the slots follow it */

/* Spin until *counter > above (consumer: a record is there) or the deadline or the peer's failure. */
static bool raw_wait(_Atomic uint64_t *counter, uint64_t above, uint64_t *seen, const struct raw_shared *sh,
                     int64_t deadline) {
  unsigned spins = 0;
  while ((*seen = atomic_load_explicit(counter, memory_order_acquire)) <= above) {
    cpu_relax();
    if ((++spins & 0xfff) == 0 && (now_ns() > deadline || atomic_load_explicit(&sh->failed, memory_order_relaxed)))
      return false;
  }
  return true;
}

void run_rawring(void) {
  size_t len = cfg.stream_ring < STREAM_RECORD ? STREAM_RECORD : cfg.stream_ring / STREAM_RECORD * STREAM_RECORD;
  uint64_t slots = len / STREAM_RECORD;
  uint64_t n = cfg.stream_bytes / STREAM_RECORD, w = 64;
  if (n < STREAM_SEGMENTS) n = STREAM_SEGMENTS;
  uint64_t seg = n / STREAM_SEGMENTS;
  n = seg * STREAM_SEGMENTS;
  progress("raw ring (no library, spin): %" PRIu64 " x 64 KiB through %" PRIu64 " slots:", n, slots);
  if (usable_cpus() < 2) {
    progress_more(" n/a (one CPU)\n");
    return;
  }
  unsigned char *map = shared_alloc(RAW_CTL + len);
  if (map == NULL) {
    progress_more(" n/a (mmap)\n");
    return;
  }
  struct raw_shared *sh = (struct raw_shared *)map;
  unsigned char *ring = map + RAW_CTL;
  memset(map, 0, RAW_CTL + len);
  unsigned timeout_s = (unsigned)(120 + (n + w) / 1000); /* at least 64 MB/s */
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    alarm(timeout_s);
    pin_to(cpu_for(1, true));
    int64_t deadline = now_ns() + (int64_t)timeout_s * 1000000000;
    unsigned char *dst = malloc(STREAM_RECORD);
    uint64_t head = 0;
    if (dst == NULL) {
      snprintf(sh->err, sizeof sh->err, "consumer: out of memory");
      atomic_store(&sh->failed, 1);
      _exit(1);
    }
    for (uint64_t i = 0; i < w + n; i++) {
      if (head <= i && !raw_wait(&sh->head, i, &head, sh, deadline)) {
        snprintf(sh->err, sizeof sh->err, "consumer: no record %" PRIu64 " in time", i);
        atomic_store(&sh->failed, 1);
        _exit(1);
      }
      memcpy(dst, ring + (i % slots) * STREAM_RECORD, STREAM_RECORD);
      atomic_store_explicit(&sh->tail, i + 1, memory_order_release);
      uint64_t a, b;
      memcpy(&a, dst, 8);
      memcpy(&b, dst + STREAM_RECORD - 8, 8);
      if (a != i || b != ~i) {
        snprintf(sh->err, sizeof sh->err, "record %" PRIu64 ": bad marks", i);
        atomic_store(&sh->failed, 1);
        _exit(1);
      }
      if (i + 1 >= w && (i + 1 - w) % seg == 0) sh->t[(i + 1 - w) / seg] = now_ns();
    }
    free(dst);
    _exit(0);
  }
  if (pid < 0) {
    progress_more(" n/a (fork)\n");
    munmap(map, RAW_CTL + len);
    return;
  }
  pin_to(cpu_for(0, true));
  int64_t deadline = now_ns() + (int64_t)timeout_s * 1000000000;
  unsigned char *src = malloc(STREAM_RECORD);
  char err[200] = "";
  bool ok = src != NULL;
  if (!ok) snprintf(err, sizeof err, "producer: out of memory");
  if (src) fill_pattern(src, STREAM_RECORD);
  uint64_t tail = 0;
  for (uint64_t i = 0; ok && i < w + n; i++) {
    /* slot i % slots is free once the consumer has read record i - slots */
    if (i >= tail + slots && !raw_wait(&sh->tail, i - slots, &tail, sh, deadline)) {
      snprintf(err, sizeof err, "producer: no free slot for record %" PRIu64 " in time", i);
      ok = false;
      break;
    }
    uint64_t mark = ~i;
    memcpy(src, &i, 8);
    memcpy(src + STREAM_RECORD - 8, &mark, 8);
    memcpy(ring + (i % slots) * STREAM_RECORD, src, STREAM_RECORD);
    atomic_store_explicit(&sh->head, i + 1, memory_order_release);
  }
  free(src);
  if (!ok) {
    atomic_store(&sh->failed, 1);
    kill(pid, SIGKILL);
  }
  int st;
  wait_child(pid, &st);
  restore_affinity();
  if (!ok || !WIFEXITED(st) || WEXITSTATUS(st) != 0 || sh->t[STREAM_SEGMENTS] <= sh->t[0]) {
    char why[64];
    describe_status(st, why, sizeof why);
    progress_more(" FAILED: %s%s%s (consumer: %s)\n", err, sh->err[0] ? " " : "", sh->err, why);
    bench_failures++;
  } else {
    struct result *r = add_result("rawring", "spin");
    r->bytes = STREAM_RECORD;
    r->messages = (unsigned)n;
    r->gbps = segments_gbps(sh->t, seg * STREAM_RECORD);
    r->has = R_BYTES | R_MSGS | R_GBPS;
    progress_more(" %.2f GB/s (median of %d segments; overall %.2f)\n", r->gbps, STREAM_SEGMENTS,
                  (double)(n * STREAM_RECORD) / (double)(sh->t[STREAM_SEGMENTS] - sh->t[0]));
  }
  munmap(map, RAW_CTL + len);
}
