/* SPDX-License-Identifier: MIT */
/* util.c: memport-bench's small helpers: the clock, progress lines, placement, the result table and the
 * message layout every latency method stamps and checks. */
#include "bench.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct config cfg;
int cpus[2] = {-1, -1};

int cpu_for(int role, bool spinning) {
  if (cpus[0] < 0) return -1;
  if (cfg.placement == PLACE_SPLIT || (cfg.placement == PLACE_AUTO && spinning)) return cpus[role];
  return cpus[0];
}

const char *placement_text(bool spinning) {
  if (cpus[0] < 0) return "not pinned";
  return cpu_for(1, spinning) == cpu_for(0, spinning) ? "one CPU" : "two CPUs";
}

/* ------------------------------------------------------------------------------------------ */
/* Small helpers.                                                                              */

int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void sleep_ns(int64_t ns) {
  struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

int64_t bench_start;
unsigned bench_failures; /* measurements that failed (not merely unavailable) */

bool progress_off; /* the paired target runs report once, not per round */

__attribute__((format(printf, 1, 2))) void progress(const char *fmt, ...) {
  if (progress_off) return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "[%5.1fs] ", (double)(now_ns() - bench_start) / 1e9);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fflush(stderr);
}

__attribute__((format(printf, 1, 2))) void progress_more(const char *fmt, ...) {
  if (progress_off) return;
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fflush(stderr);
}

void *shared_alloc(size_t len) {
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANON, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

const char *mode_name(int policy) {
  switch (policy) {
  case MEMPORT_WAIT_BLOCK: return "block";
  case MEMPORT_WAIT_SPIN: return "spin";
  case MEMPORT_WAIT_ADAPTIVE: return "adaptive";
  default: return "";
  }
}

void size_label(size_t bytes, char *out, size_t cap) {
  if (bytes >= MIB && bytes % MIB == 0)
    snprintf(out, cap, "%zu MiB", bytes / MIB);
  else if (bytes >= MIB)
    snprintf(out, cap, "%.1f MiB", (double)bytes / (double)MIB);
  else if (bytes >= 64 * KIB && bytes % KIB == 0)
    snprintf(out, cap, "%zu KiB", bytes / KIB);
  else
    snprintf(out, cap, "%zu B", bytes);
}

int online_cpus(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted samples, in microseconds. */
double pct_us(const int64_t *sorted, size_t n, double p) {
  if (n == 0) return 0;
  size_t rank = (size_t)((p / 100.0) * (double)n + 0.999999);
  if (rank < 1) rank = 1;
  if (rank > n) rank = n;
  return (double)sorted[rank - 1] / 1000.0;
}

void wait_child(pid_t pid, int *status) {
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (status) *status = st;
}

void describe_status(int st, char *out, size_t cap) {
  if (WIFEXITED(st))
    snprintf(out, cap, "exit status %d", WEXITSTATUS(st));
  else if (WIFSIGNALED(st))
    snprintf(out, cap, "killed by signal %d", WTERMSIG(st));
  else
    snprintf(out, cap, "status 0x%x", (unsigned)st);
}

/* ------------------------------------------------------------------------------------------ */
/* Results.                                                                                    */

struct result *results;
size_t nresults;
static size_t capresults;

struct result *add_result(const char *method, const char *mode) {
  if (nresults == capresults) {
    size_t cap = capresults ? capresults * 2 : 64;
    struct result *r = realloc(results, cap * sizeof *r);
    if (r == NULL) {
      fprintf(stderr, "memport-bench: out of memory\n");
      exit(1);
    }
    results = r;
    capresults = cap;
  }
  struct result *r = &results[nresults++];
  memset(r, 0, sizeof *r);
  snprintf(r->method, sizeof r->method, "%s", method);
  snprintf(r->mode, sizeof r->mode, "%s", mode);
  return r;
}

const struct result *find_result(const char *method, const char *mode, size_t bytes, unsigned need) {
  for (size_t i = 0; i < nresults; i++) {
    const struct result *r = &results[i];
    if (strcmp(r->method, method) == 0 && strcmp(r->mode, mode) == 0 && (r->has & need) == need &&
        (!(r->has & R_BYTES) || bytes == 0 || r->bytes == bytes))
      return r;
  }
  return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Message layout: a header (seq, len, send timestamp, check) at offset 0, a mark in the middle */
/* and one at the end; the rest is a fixed pattern the receiver compares outside the timing.   */

struct hdr {
  uint64_t seq;
  uint64_t len;
  int64_t ts;
  uint64_t check;
};

#define MID_KEY 0x5a5aa5a5c3c33c3cull

static size_t mid_off(size_t len) {
  size_t m = (len / 2) & ~(size_t)7;
  return m < HDR_BYTES ? HDR_BYTES : m;
}

static uint64_t check_of(uint64_t seq, uint64_t len) { return (seq * 0x9e3779b97f4a7c15ull) ^ len ^ 0xb5ad4eceda1ce2a9ull; }

void fill_pattern(unsigned char *p, size_t len) {
  for (size_t i = 0; i < len; i++) p[i] = (unsigned char)(i * 7u + (i >> 9) + 1u);
}

/* Write the marks, then the header with the send time taken just before returning. */
void stamp(unsigned char *p, size_t len, uint64_t seq) {
  if (len >= MARK_MIN) {
    uint64_t mid = seq ^ MID_KEY, tail = ~seq;
    memcpy(p + mid_off(len), &mid, 8);
    memcpy(p + len - 8, &tail, 8);
  }
  struct hdr h = {seq, len, 0, check_of(seq, len)};
  h.ts = now_ns();
  memcpy(p, &h, sizeof h);
}

/* Put the pattern back where stamp(p, len, ...) wrote the header and the marks. */
void unstamp(unsigned char *p, const unsigned char *pat, size_t len) {
  memcpy(p, pat, HDR_BYTES);
  if (len >= MARK_MIN) {
    memcpy(p + mid_off(len), pat + mid_off(len), 8);
    memcpy(p + len - 8, pat + len - 8, 8);
  }
}

/* Check the header and marks (the part the timing includes); returns the send time or -1. */
int64_t check_marks(const unsigned char *p, size_t len, uint64_t seq) {
  struct hdr h;
  memcpy(&h, p, sizeof h);
  if (h.seq != seq || h.len != len || h.check != check_of(seq, len)) return -1;
  if (len >= MARK_MIN) {
    uint64_t mid, tail;
    memcpy(&mid, p + mid_off(len), 8);
    memcpy(&tail, p + len - 8, 8);
    if (mid != (seq ^ MID_KEY) || tail != ~seq) return -1;
  }
  return h.ts;
}

/* Compare everything but the header and the marks with the reference pattern. */
bool check_body(const unsigned char *p, const unsigned char *ref, size_t len) {
  if (len <= HDR_BYTES) return true;
  if (len < MARK_MIN) return memcmp(p + HDR_BYTES, ref + HDR_BYTES, len - HDR_BYTES) == 0;
  size_t mid = mid_off(len);
  return memcmp(p + HDR_BYTES, ref + HDR_BYTES, mid - HDR_BYTES) == 0 &&
         memcmp(p + mid + 8, ref + mid + 8, len - 8 - (mid + 8)) == 0;
}


/* Take the last result row if it is (method, mode, bytes) and drop it from the table. */
bool pop_result(const char *method, const char *mode, double *p50) {
  if (nresults == 0) return false;
  const struct result *r = &results[nresults - 1];
  if (strcmp(r->method, method) != 0 || strcmp(r->mode, mode) != 0 || !(r->has & R_LAT)) return false;
  *p50 = r->p50;
  nresults--;
  return true;
}

double median_of(double *v, int n) {
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
      double t = v[j];
      v[j] = v[j - 1];
      v[j - 1] = t;
    }
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}
