/* SPDX-License-Identifier: MIT */
/* stream.c: memport-bench's ring throughput: 64 KiB records through a memport ring shared by fork,
 * memport_ring_write in the parent, memport_ring_read in the child; the child times the transfer after a
 * warm-up. */
#include "bench.h"

#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

/* The median of the segments' rates, robust against a neighbour stealing a CPU for a moment. */
double segments_gbps(const int64_t *t, uint64_t seg_bytes) {
  double rate[STREAM_SEGMENTS];
  for (int i = 0; i < STREAM_SEGMENTS; i++) {
    double v = (double)seg_bytes / (double)(t[i + 1] - t[i] > 0 ? t[i + 1] - t[i] : 1);
    int j = i;
    for (; j > 0 && rate[j - 1] > v; j--) rate[j] = rate[j - 1];
    rate[j] = v;
  }
  return (rate[STREAM_SEGMENTS / 2 - 1] + rate[STREAM_SEGMENTS / 2]) / 2;
}


struct stream_shared {
  int64_t t[STREAM_SEGMENTS + 1]; /* consumer's clock at the segment boundaries */
  uint64_t records;
  char err[200];
};

void run_stream(int policy) {
  uint64_t n = cfg.stream_bytes / STREAM_RECORD, w = 64;
  if (n < STREAM_SEGMENTS) n = STREAM_SEGMENTS;
  uint64_t seg = n / STREAM_SEGMENTS;
  n = seg * STREAM_SEGMENTS;
  progress("stream/%s: %" PRIu64 " x 64 KiB through a %zu KiB ring:", mode_name(policy), n, cfg.stream_ring / KIB);
  if (policy != MEMPORT_WAIT_BLOCK && usable_cpus() < 2) {
    progress_more(" n/a (one CPU)\n");
    return;
  }
  memport_ring_t *ring = NULL;
  int rc = memport_ring_create(&ring, cfg.stream_ring, 0);
  if (rc < 0) {
    progress_more(" n/a (memport_ring_create: %s)\n", memport_strerror(rc));
    return;
  }
  struct stream_shared *sh = shared_alloc(sizeof *sh);
  if (sh == NULL) {
    memport_ring_close(ring);
    return;
  }
  memset(sh, 0, sizeof *sh);
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    alarm((unsigned)(120 + (n + w) / 1000)); /* at least 64 MB/s */
    pin_to(cpu_for(1, policy != MEMPORT_WAIT_BLOCK));
    unsigned char *buf = malloc(STREAM_RECORD);
    int e = buf ? memport_ring_set_wait(ring, policy, 0) : MEMPORT_ENOMEM;
    if (e < 0) {
      snprintf(sh->err, sizeof sh->err, "consumer setup: %s", memport_strerror(e));
      _exit(1);
    }
    for (uint64_t i = 0; i < w + n; i++) {
      size_t len = 0;
      e = memport_ring_read(ring, buf, STREAM_RECORD, &len, IO_TIMEOUT);
      if (e < 0) {
        snprintf(sh->err, sizeof sh->err, "memport_ring_read: %s", memport_strerror(e));
        _exit(1);
      }
      uint64_t a, b;
      memcpy(&a, buf, 8);
      memcpy(&b, buf + STREAM_RECORD - 8, 8);
      if (len != STREAM_RECORD || a != i || b != ~i) {
        snprintf(sh->err, sizeof sh->err, "record %" PRIu64 ": bad length or marks", i);
        _exit(1);
      }
      if (i + 1 >= w && (i + 1 - w) % seg == 0) sh->t[(i + 1 - w) / seg] = now_ns();
    }
    sh->records = n;
    memport_ring_close(ring);
    free(buf);
    _exit(0);
  }
  if (pid < 0) {
    progress_more(" n/a (fork)\n");
    memport_ring_close(ring);
    munmap(sh, sizeof *sh);
    return;
  }
  pin_to(cpu_for(0, policy != MEMPORT_WAIT_BLOCK));
  unsigned char *src = malloc(STREAM_RECORD);
  char err[200] = "";
  rc = src ? memport_ring_set_wait(ring, policy, 0) : MEMPORT_ENOMEM;
  if (rc < 0) snprintf(err, sizeof err, "producer setup: %s", memport_strerror(rc));
  if (src) fill_pattern(src, STREAM_RECORD);
  for (uint64_t i = 0; rc >= 0 && i < w + n; i++) {
    uint64_t tail = ~i;
    memcpy(src, &i, 8);
    memcpy(src + STREAM_RECORD - 8, &tail, 8);
    rc = memport_ring_write(ring, src, STREAM_RECORD, IO_TIMEOUT);
    if (rc < 0) snprintf(err, sizeof err, "memport_ring_write: %s", memport_strerror(rc));
  }
  free(src);
  int st;
  if (rc < 0) kill(pid, SIGKILL);
  wait_child(pid, &st);
  restore_affinity();
  memport_ring_close(ring);
  if (rc < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0 || sh->t[STREAM_SEGMENTS] <= sh->t[0]) {
    char why[64];
    describe_status(st, why, sizeof why);
    progress_more(" FAILED: %s%s%s (consumer: %s)\n", err, sh->err[0] ? " " : "", sh->err, why);
    bench_failures++;
  } else {
    struct result *r = add_result("stream", mode_name(policy));
    r->bytes = STREAM_RECORD;
    r->messages = (unsigned)n;
    r->gbps = segments_gbps(sh->t, seg * STREAM_RECORD);
    r->has = R_BYTES | R_MSGS | R_GBPS;
    progress_more(" %.2f GB/s (median of %d segments; overall %.2f)\n", r->gbps, STREAM_SEGMENTS,
                  (double)(n * STREAM_RECORD) / (double)(sh->t[STREAM_SEGMENTS] - sh->t[0]));
  }
  munmap(sh, sizeof *sh);
}

