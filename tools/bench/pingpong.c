/* SPDX-License-Identifier: MIT */
/* pingpong.c: memport-bench's latency limits of the machine: a futex and a spin ping-pong between two
 * processes on one shared cache line, no library. */
#include "bench.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

struct futex_split futex_split;

struct pingpong {
  _Alignas(64) _Atomic uint32_t fwd;
  _Atomic uint32_t back;
  _Atomic int64_t ts;
  _Atomic int failed;
  _Alignas(64) int64_t samples[];
};

/* Wait until *w == want; futex or spin; false after the deadline. */
static bool pp_wait(_Atomic uint32_t *w, uint32_t want, bool futex, int64_t deadline) {
  unsigned spins = 0;
  for (;;) {
    uint32_t v = atomic_load_explicit(w, memory_order_acquire);
    if (v == want) return true;
    if (futex) {
      futex_wait_word(w, v);
      if (now_ns() > deadline) return false;
      continue;
    }
    cpu_relax();
    if ((++spins & 0xfff) == 0 && now_ns() > deadline) return false;
  }
}

static void pp_post(_Atomic uint32_t *w, uint32_t v, bool futex) {
  atomic_store_explicit(w, v, memory_order_release);
  if (futex) futex_wake_word(w);
}

void run_pingpong(bool futex, bool split) {
  const char *name = futex ? "futex" : "spin";
  if (futex && !bench_have_futex) {
    progress("futex: n/a on this platform\n");
    return;
  }
  if (!futex && usable_cpus() < 2) {
    progress("spin: n/a (one CPU: spinning would wait for the scheduler)\n");
    return;
  }
  unsigned n = cfg.base_messages, w = cfg.warmup;
  size_t shlen = sizeof(struct pingpong) + (size_t)n * sizeof(int64_t);
  struct pingpong *pp = shared_alloc(shlen);
  if (pp == NULL) return;
  progress("%s ping-pong%s: %u messages", name, split ? " across two CPUs" : "", n);
  int cpu0 = split ? cpus[0] : cpu_for(0, !futex), cpu1 = split ? cpus[1] : cpu_for(1, !futex);
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    alarm(60);
    pin_to(cpu1);
    int64_t deadline = now_ns() + (int64_t)30 * 1000000000;
    for (uint32_t i = 1; i <= w + n; i++) {
      if (!pp_wait(&pp->fwd, i, futex, deadline)) {
        atomic_store(&pp->failed, 1);
        _exit(1);
      }
      int64_t t1 = now_ns(), ts = atomic_load_explicit(&pp->ts, memory_order_relaxed);
      if (i > w) pp->samples[i - w - 1] = t1 - ts;
      pp_post(&pp->back, i, futex);
    }
    _exit(0);
  }
  if (pid < 0) {
    munmap(pp, shlen);
    progress_more(" fork failed\n");
    return;
  }
  pin_to(cpu0);
  int64_t deadline = now_ns() + (int64_t)30 * 1000000000;
  bool ok = true;
  for (uint32_t i = 1; i <= w + n && ok; i++) {
    atomic_store_explicit(&pp->ts, now_ns(), memory_order_relaxed);
    pp_post(&pp->fwd, i, futex);
    ok = pp_wait(&pp->back, i, futex, deadline);
  }
  if (!ok) kill(pid, SIGKILL);
  int st;
  wait_child(pid, &st);
  restore_affinity();
  if (!ok || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    progress_more(" FAILED (timeout)\n");
    bench_failures++;
  } else {
    qsort(pp->samples, n, sizeof(int64_t), cmp_i64);
    if (split) {
      futex_split.have = true;
      futex_split.n = n;
      futex_split.p50 = pct_us(pp->samples, n, 50);
      futex_split.p98 = pct_us(pp->samples, n, 98);
    } else {
      struct result *r = add_result(name, "");
      r->messages = n;
      r->p50 = pct_us(pp->samples, n, 50);
      r->p98 = pct_us(pp->samples, n, 98);
      r->has = R_MSGS | R_LAT;
    }
    progress_more(" done\n");
  }
  munmap(pp, shlen);
}

