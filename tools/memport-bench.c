/* SPDX-License-Identifier: MIT */
/* memport-bench.c: measures one-way latency by message size (pipe, unix socket, memport port, ring channel,
 * zero-copy channel), the machine's limits, ring streaming throughput, steady-state costs and resident memory. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE 1
#endif

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef __linux__
#include <linux/futex.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#endif

#include "memport.h"

/* ------------------------------------------------------------------------------------------ */
/* Heap-allocation counter. On glibc the program defines malloc/calloc/realloc/free (and the   */
/* aligned variants) and forwards them to glibc's allocator; the dynamic linker binds          */
/* libmemport's calls to these definitions, so the steady-state check can count every heap     */
/* allocation the library makes. Not under sanitizers (they replace the allocator themselves). */

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define BENCH_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#ifndef BENCH_SANITIZED
#define BENCH_SANITIZED 1
#endif
#endif

#ifdef __linux__
static _Atomic unsigned long bench_allocs;
static unsigned long alloc_count(void) { return atomic_load_explicit(&bench_allocs, memory_order_relaxed); }
#endif

#if defined(__GLIBC__) && defined(__linux__) && !defined(BENCH_SANITIZED)
#define BENCH_COUNTS_MALLOC 1
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void *__libc_memalign(size_t align, size_t size);
extern void __libc_free(void *p);

void *malloc(size_t size) {
  atomic_fetch_add_explicit(&bench_allocs, 1, memory_order_relaxed);
  return __libc_malloc(size);
}
void *calloc(size_t n, size_t size) {
  atomic_fetch_add_explicit(&bench_allocs, 1, memory_order_relaxed);
  return __libc_calloc(n, size);
}
void *realloc(void *p, size_t size) {
  atomic_fetch_add_explicit(&bench_allocs, 1, memory_order_relaxed);
  return __libc_realloc(p, size);
}
void free(void *p) { __libc_free(p); }
int posix_memalign(void **out, size_t align, size_t size) {
  if (align % sizeof(void *) != 0 || (align & (align - 1)) != 0) return EINVAL;
  atomic_fetch_add_explicit(&bench_allocs, 1, memory_order_relaxed);
  void *p = __libc_memalign(align, size);
  if (p == NULL) return ENOMEM;
  *out = p;
  return 0;
}
void *aligned_alloc(size_t align, size_t size) {
  atomic_fetch_add_explicit(&bench_allocs, 1, memory_order_relaxed);
  return __libc_memalign(align, size);
}
#endif

/* ------------------------------------------------------------------------------------------ */
/* Configuration.                                                                              */

#define MAX_SIZES   64
#define MAX_MODES   3
#define MIB         ((size_t)1 << 20)
#define KIB         ((size_t)1 << 10)
#define IO_TIMEOUT  ((int64_t)10 * 1000000000) /* every memport call in the benchmark */
#define HDR_BYTES   32                         /* seq, len, timestamp, check */
#define MARK_MIN    48                         /* sizes from here carry a middle and a tail mark */
#define MIN_BYTES   32

enum part { P_TABLE = 1, P_LIMITS = 2, P_STREAM = 4, P_SYSCHECK = 8, P_RSS = 16 };

static const size_t default_sizes[] = {100,  200,  500,  1024, 2048,    3072,    4096,   5120,
                                       6144, 7168, 8192, 9216, 1048576, 5242880, 7340032};

static struct config {
  size_t sizes[MAX_SIZES];
  size_t nsizes;
  unsigned messages;     /* timed messages per size below 1 MiB */
  unsigned big_messages; /* timed messages per size from 1 MiB */
  unsigned warmup, big_warmup;
  unsigned base_messages; /* futex / spin ping-pong */
  size_t memcpy_bytes;
  unsigned memcpy_reps;
  uint64_t stream_bytes;
  size_t stream_ring;
  unsigned sys_messages;
  size_t rss_ring;
  int modes[MAX_MODES];
  size_t nmodes;
  unsigned parts;
  bool pin, quick, verbose;
  int placement; /* PLACE_* */
  const char *csv, *plot;
} cfg;

static int cpus[2] = {-1, -1}; /* the two CPUs the processes are pinned to, -1: not pinned */

/* Placement. A blocking hand-off is a context switch: on one CPU it costs a few microseconds, while
 * waking a peer asleep on another (virtual) CPU can cost much more; spinning needs a CPU per side.
 * PLACE_AUTO runs blocking paths with both processes on cpus[0], spinning ones on cpus[0], cpus[1]. */
#define PLACE_AUTO  0
#define PLACE_SAME  1
#define PLACE_SPLIT 2

/* The CPU for role 0 (sender/producer) or 1 (receiver/consumer) of a spinning or blocking path. */
static int cpu_for(int role, bool spinning) {
  if (cpus[0] < 0) return -1;
  if (cfg.placement == PLACE_SPLIT || (cfg.placement == PLACE_AUTO && spinning)) return cpus[role];
  return cpus[0];
}

static const char *placement_text(bool spinning) {
  if (cpus[0] < 0) return "not pinned";
  return cpu_for(1, spinning) == cpu_for(0, spinning) ? "one CPU" : "two CPUs";
}

/* The futex ping-pong across two CPUs, shown next to the one-CPU figure (not in the CSV). */
static struct {
  bool have;
  unsigned n;
  double p50, p98;
} futex_split;

/* ------------------------------------------------------------------------------------------ */
/* Small helpers.                                                                              */

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  __asm__ __volatile__("yield" ::: "memory");
#else
  atomic_signal_fence(memory_order_seq_cst);
#endif
}

#ifdef __linux__
static void sleep_ns(int64_t ns) {
  struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}
#endif

static int64_t bench_start;
static unsigned bench_failures; /* measurements that failed (not merely unavailable) */

static bool progress_off; /* the paired target runs report once, not per round */

__attribute__((format(printf, 1, 2))) static void progress(const char *fmt, ...) {
  if (progress_off) return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "[%5.1fs] ", (double)(now_ns() - bench_start) / 1e9);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fflush(stderr);
}

__attribute__((format(printf, 1, 2))) static void progress_more(const char *fmt, ...) {
  if (progress_off) return;
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fflush(stderr);
}

static void *shared_alloc(size_t len) {
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANON, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

static const char *mode_name(int policy) {
  switch (policy) {
  case MEMPORT_WAIT_BLOCK: return "block";
  case MEMPORT_WAIT_SPIN: return "spin";
  case MEMPORT_WAIT_ADAPTIVE: return "adaptive";
  default: return "";
  }
}

static void size_label(size_t bytes, char *out, size_t cap) {
  if (bytes >= MIB && bytes % MIB == 0)
    snprintf(out, cap, "%zu MiB", bytes / MIB);
  else if (bytes >= MIB)
    snprintf(out, cap, "%.1f MiB", (double)bytes / (double)MIB);
  else if (bytes >= 64 * KIB && bytes % KIB == 0)
    snprintf(out, cap, "%zu KiB", bytes / KIB);
  else
    snprintf(out, cap, "%zu B", bytes);
}

/* Pin the calling process to one CPU (Linux); returns 0 when pinned. */
static int pin_to(int cpu) {
#ifdef __linux__
  if (cpu < 0) return -1;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return sched_setaffinity(0, sizeof set, &set) == 0 ? 0 : -1;
#else
  (void)cpu;
  return -1;
#endif
}

#ifdef __linux__
static cpu_set_t saved_affinity;
static bool have_saved_affinity;
#endif

static void save_affinity(void) {
#ifdef __linux__
  have_saved_affinity = sched_getaffinity(0, sizeof saved_affinity, &saved_affinity) == 0;
#endif
}

static void restore_affinity(void) {
#ifdef __linux__
  if (have_saved_affinity) sched_setaffinity(0, sizeof saved_affinity, &saved_affinity);
#endif
}

/* Choose two CPUs of the allowed set for the two processes of every measurement. */
static void choose_cpus(void) {
#ifdef __linux__
  cpu_set_t set;
  if (!cfg.pin || sched_getaffinity(0, sizeof set, &set) != 0) return;
  int n = 0;
  for (int c = 0; c < CPU_SETSIZE && n < 2; c++)
    if (CPU_ISSET(c, &set)) cpus[n++] = c;
  if (n < 2) cpus[0] = cpus[1] = -1;
#endif
}

static int online_cpus(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

/* CPUs this process may run on (its affinity mask on Linux): spinning needs two. */
static int usable_cpus(void) {
#ifdef __linux__
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
#endif
  return online_cpus();
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted samples, in microseconds. */
static double pct_us(const int64_t *sorted, size_t n, double p) {
  if (n == 0) return 0;
  size_t rank = (size_t)((p / 100.0) * (double)n + 0.999999);
  if (rank < 1) rank = 1;
  if (rank > n) rank = n;
  return (double)sorted[rank - 1] / 1000.0;
}

static void wait_child(pid_t pid, int *status) {
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (status) *status = st;
}

static void describe_status(int st, char *out, size_t cap) {
  if (WIFEXITED(st))
    snprintf(out, cap, "exit status %d", WEXITSTATUS(st));
  else if (WIFSIGNALED(st))
    snprintf(out, cap, "killed by signal %d", WTERMSIG(st));
  else
    snprintf(out, cap, "status 0x%x", (unsigned)st);
}

/* ------------------------------------------------------------------------------------------ */
/* Results.                                                                                    */

#define R_BYTES 1u
#define R_MSGS  2u
#define R_LAT   4u
#define R_GBPS  8u

struct result {
  char method[12];
  char mode[12];
  size_t bytes;
  unsigned messages;
  double p50, p98, gbps;
  unsigned has;
};

static struct result *results;
static size_t nresults, capresults;

static struct result *add_result(const char *method, const char *mode) {
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

static const struct result *find_result(const char *method, const char *mode, size_t bytes, unsigned need) {
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

static void fill_pattern(unsigned char *p, size_t len) {
  for (size_t i = 0; i < len; i++) p[i] = (unsigned char)(i * 7u + (i >> 9) + 1u);
}

/* Write the marks, then the header with the send time taken just before returning. */
static void stamp(unsigned char *p, size_t len, uint64_t seq) {
  if (len >= MARK_MIN) {
    uint64_t mid = seq ^ MID_KEY, tail = ~seq;
    memcpy(p + mid_off(len), &mid, 8);
    memcpy(p + len - 8, &tail, 8);
  }
  struct hdr h = {seq, len, 0, check_of(seq, len)};
  h.ts = now_ns();
  memcpy(p, &h, sizeof h);
}

/* Check the header and marks (the part the timing includes); returns the send time or -1. */
static int64_t check_marks(const unsigned char *p, size_t len, uint64_t seq) {
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
static bool check_body(const unsigned char *p, const unsigned char *ref, size_t len) {
  if (len <= HDR_BYTES) return true;
  if (len < MARK_MIN) return memcmp(p + HDR_BYTES, ref + HDR_BYTES, len - HDR_BYTES) == 0;
  size_t mid = mid_off(len);
  return memcmp(p + HDR_BYTES, ref + HDR_BYTES, mid - HDR_BYTES) == 0 &&
         memcmp(p + mid + 8, ref + mid + 8, len - 8 - (mid + 8)) == 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Latency methods: a sender (parent) and a receiver (child) ping-pong; the receiver computes  */
/* the one-way time from the timestamp in the message and acknowledges with 8 bytes back.      */

enum lat_kind { LK_PIPE, LK_UNIX, LK_PORT, LK_RING, LK_ZC };

struct lat_method {
  enum lat_kind kind;
  const char *method; /* CSV name */
  int policy;         /* MEMPORT_WAIT_* for the channel, -1 otherwise */
  char label[16];     /* table column */
};

struct lat_ctx {
  const struct lat_method *m;
  bool receiver;
  size_t maxlen;       /* largest timed message */
  size_t buflen;       /* largest message including the priming ones */
  unsigned char *src; /* sender: pattern + marks */
  unsigned char *ref; /* receiver: reference pattern */
  unsigned char *dst; /* receiver: buffer for copying transports */
  int fwd[2], back[2]; /* pipe: fwd sender->receiver, back receiver->sender; unix: fwd = socketpair */
  int wfd, rfd;
  memport_port_t *pa, *pb, *port;
  memport_msg_t *msg, *ack;
  memport_chan_t *chan;
  memport_buf_t rbuf;
  void *filled[64]; /* zero-copy: pool buffers already holding the pattern for this size */
  size_t nfilled;
  bool notsup; /* the library says this platform cannot do it: n/a rather than a failure */
  char err[200];
};

__attribute__((format(printf, 2, 3))) static int ctx_fail(struct lat_ctx *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->err, sizeof c->err, fmt, ap);
  va_end(ap);
  return -1;
}

static int write_full(int fd, const void *buf, size_t len) {
  const unsigned char *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int read_full(int fd, void *buf, size_t len) {
  unsigned char *p = buf;
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) return -EPIPE;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

static int set_cloexec(int fd) { return fcntl(fd, F_SETFD, FD_CLOEXEC); }

static size_t pow2_at_least(size_t v) {
  size_t p = 4096;
  while (p < v && p < ((size_t)1 << 40)) p <<= 1;
  return p;
}

static void chan_options(const struct lat_method *m, size_t maxlen, memport_chan_opts_t *o) {
  memport_chan_opts_init(o);
  o->wait_policy = m->policy;
  if (m->kind == LK_RING) {
    /* large enough that every size of the run travels through the ring */
    size_t want = pow2_at_least(2 * maxlen + 4096);
    if (want > o->ring_capacity) o->ring_capacity = want;
    if (o->zerocopy_threshold < maxlen) o->zerocopy_threshold = maxlen;
  } else {
    size_t page = memport_page_size();
    size_t want = (maxlen + page - 1) / page * page;
    if (o->pool_buffer_size < want) o->pool_buffer_size = want;
    o->pool_buffers = 4; /* one message in flight; the warm-up produces each buffer once */
  }
}

/* Before fork: create the transport. */
static int lat_open(struct lat_ctx *c) {
  switch (c->m->kind) {
  case LK_PIPE:
    if (pipe(c->fwd) != 0 || pipe(c->back) != 0) return ctx_fail(c, "pipe: %s", strerror(errno));
    set_cloexec(c->fwd[0]);
    set_cloexec(c->fwd[1]);
    set_cloexec(c->back[0]);
    set_cloexec(c->back[1]);
    return 0;
  case LK_UNIX:
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, c->fwd) != 0) return ctx_fail(c, "socketpair: %s", strerror(errno));
    set_cloexec(c->fwd[0]);
    set_cloexec(c->fwd[1]);
    return 0;
  case LK_PORT:
  case LK_RING:
  case LK_ZC: {
    int rc = memport_port_pair(&c->pa, &c->pb);
    if (rc < 0) return ctx_fail(c, "memport_port_pair: %s", memport_strerror(rc));
    return 0;
  }
  }
  return -1;
}

/* After fork: keep this side's end and finish the setup (the channel handshake runs here). */
static int lat_side(struct lat_ctx *c) {
  int rc;
  switch (c->m->kind) {
  case LK_PIPE:
    if (c->receiver) {
      close_fd(&c->fwd[1]);
      close_fd(&c->back[0]);
      c->rfd = c->fwd[0];
      c->wfd = c->back[1];
    } else {
      close_fd(&c->fwd[0]);
      close_fd(&c->back[1]);
      c->wfd = c->fwd[1];
      c->rfd = c->back[0];
    }
    return 0;
  case LK_UNIX:
    if (c->receiver) {
      close_fd(&c->fwd[0]);
      c->rfd = c->wfd = c->fwd[1];
    } else {
      close_fd(&c->fwd[1]);
      c->rfd = c->wfd = c->fwd[0];
    }
    return 0;
  case LK_PORT:
  case LK_RING:
  case LK_ZC:
    if (c->receiver) {
      memport_port_close(c->pa);
      c->port = c->pb;
    } else {
      memport_port_close(c->pb);
      c->port = c->pa;
    }
    c->pa = c->pb = NULL;
    if (c->m->kind == LK_PORT) {
      if ((rc = memport_msg_create(&c->msg)) < 0 || (rc = memport_msg_create(&c->ack)) < 0) {
        c->notsup = rc == MEMPORT_ENOTSUP;
        return ctx_fail(c, "memport_msg_create: %s", memport_strerror(rc));
      }
      return 0;
    }
    memport_chan_opts_t o;
    chan_options(c->m, c->maxlen, &o);
    memport_port_t *p = c->port;
    c->port = NULL;
    rc = memport_chan_open(&c->chan, p, &o, IO_TIMEOUT);
    if (rc < 0) {
      c->notsup = rc == MEMPORT_ENOTSUP;
      return ctx_fail(c, "memport_chan_open: %s", memport_strerror(rc));
    }
    return 0;
  }
  return -1;
}

static void lat_close(struct lat_ctx *c) {
  close_fd(&c->fwd[0]);
  close_fd(&c->fwd[1]);
  close_fd(&c->back[0]);
  close_fd(&c->back[1]);
  memport_chan_close(c->chan);
  memport_port_close(c->port);
  memport_port_close(c->pa);
  memport_port_close(c->pb);
  memport_msg_close(c->msg);
  memport_msg_close(c->ack);
  c->chan = NULL;
  c->port = c->pa = c->pb = NULL;
  c->msg = c->ack = NULL;
}

/* Sender: stamp and send one message of len bytes. */
static int lat_send(struct lat_ctx *c, size_t len, uint64_t seq) {
  int rc;
  switch (c->m->kind) {
  case LK_PIPE:
  case LK_UNIX:
    stamp(c->src, len, seq);
    rc = write_full(c->wfd, c->src, len);
    return rc < 0 ? ctx_fail(c, "write: %s", strerror(-rc)) : 0;
  case LK_PORT:
    stamp(c->src, len, seq);
    if ((rc = memport_msg_set_bytes(c->msg, c->src, len)) < 0)
      return ctx_fail(c, "memport_msg_set_bytes: %s", memport_strerror(rc));
    rc = memport_port_send(c->port, c->msg, IO_TIMEOUT);
    return rc < 0 ? ctx_fail(c, "memport_port_send: %s", memport_strerror(rc)) : 0;
  case LK_RING:
    stamp(c->src, len, seq);
    rc = memport_chan_send(c->chan, c->src, len, 0, IO_TIMEOUT);
    return rc < 0 ? ctx_fail(c, "memport_chan_send(%zu): %s", len, memport_strerror(rc)) : 0;
  case LK_ZC: {
    memport_buf_t b;
    if ((rc = memport_chan_alloc(c->chan, len, &b, IO_TIMEOUT)) < 0)
      return ctx_fail(c, "memport_chan_alloc(%zu): %s", len, memport_strerror(rc));
    bool known = false;
    for (size_t i = 0; i < c->nfilled; i++) known = known || c->filled[i] == b.data;
    if (!known) {
      /* the payload is produced in place once per pool buffer; later messages re-stamp it */
      fill_pattern(b.data, len);
      if (c->nfilled < sizeof c->filled / sizeof c->filled[0]) c->filled[c->nfilled++] = b.data;
    }
    stamp(b.data, len, seq);
    rc = memport_chan_send_buf(c->chan, &b, IO_TIMEOUT);
    return rc < 0 ? ctx_fail(c, "memport_chan_send_buf(%zu): %s", len, memport_strerror(rc)) : 0;
  }
  }
  return -1;
}

/* Receiver: the next message, whole; *data stays valid until lat_release. */
static int lat_recv(struct lat_ctx *c, size_t len, const unsigned char **data) {
  int rc;
  switch (c->m->kind) {
  case LK_PIPE:
  case LK_UNIX:
    rc = read_full(c->rfd, c->dst, len);
    if (rc < 0) return ctx_fail(c, "read: %s", strerror(-rc));
    *data = c->dst;
    return 0;
  case LK_PORT: {
    if ((rc = memport_port_recv(c->port, c->msg, IO_TIMEOUT)) < 0)
      return ctx_fail(c, "memport_port_recv: %s", memport_strerror(rc));
    size_t n = 0;
    const void *p = memport_msg_bytes(c->msg, &n);
    if (n != len || p == NULL) return ctx_fail(c, "port: got %zu bytes, expected %zu", n, len);
    *data = p;
    return 0;
  }
  case LK_RING:
  case LK_ZC:
    if ((rc = memport_chan_recv(c->chan, &c->rbuf, IO_TIMEOUT)) < 0)
      return ctx_fail(c, "memport_chan_recv: %s", memport_strerror(rc));
    if (c->rbuf.len != len) return ctx_fail(c, "channel: got %zu bytes, expected %zu", c->rbuf.len, len);
    *data = c->rbuf.data;
    return 0;
  }
  return -1;
}

static int lat_release(struct lat_ctx *c) {
  if (c->m->kind != LK_RING && c->m->kind != LK_ZC) return 0;
  int rc = memport_chan_release(c->chan, &c->rbuf);
  return rc < 0 ? ctx_fail(c, "memport_chan_release: %s", memport_strerror(rc)) : 0;
}

static int lat_ack(struct lat_ctx *c, uint64_t seq) {
  int rc;
  switch (c->m->kind) {
  case LK_PIPE:
  case LK_UNIX:
    rc = write_full(c->wfd, &seq, sizeof seq);
    return rc < 0 ? ctx_fail(c, "ack write: %s", strerror(-rc)) : 0;
  case LK_PORT:
    if ((rc = memport_msg_set_bytes(c->ack, &seq, sizeof seq)) < 0 ||
        (rc = memport_port_send(c->port, c->ack, IO_TIMEOUT)) < 0)
      return ctx_fail(c, "ack send: %s", memport_strerror(rc));
    return 0;
  case LK_RING:
  case LK_ZC:
    rc = memport_chan_send(c->chan, &seq, sizeof seq, 0, IO_TIMEOUT);
    return rc < 0 ? ctx_fail(c, "ack memport_chan_send: %s", memport_strerror(rc)) : 0;
  }
  return -1;
}

static int lat_wait_ack(struct lat_ctx *c, uint64_t seq) {
  uint64_t got = 0;
  int rc;
  switch (c->m->kind) {
  case LK_PIPE:
  case LK_UNIX:
    rc = read_full(c->rfd, &got, sizeof got);
    if (rc < 0) return ctx_fail(c, "ack read: %s", strerror(-rc));
    break;
  case LK_PORT: {
    if ((rc = memport_port_recv(c->port, c->ack, IO_TIMEOUT)) < 0)
      return ctx_fail(c, "ack memport_port_recv: %s", memport_strerror(rc));
    size_t n = 0;
    const void *p = memport_msg_bytes(c->ack, &n);
    if (n != sizeof got || p == NULL) return ctx_fail(c, "ack: %zu bytes", n);
    memcpy(&got, p, sizeof got);
    break;
  }
  case LK_RING:
  case LK_ZC: {
    size_t n = 0;
    if ((rc = memport_chan_recv_copy(c->chan, &got, sizeof got, &n, IO_TIMEOUT)) < 0)
      return ctx_fail(c, "ack memport_chan_recv_copy: %s", memport_strerror(rc));
    if (n != sizeof got) return ctx_fail(c, "ack: %zu bytes", n);
    break;
  }
  }
  return got == seq ? 0 : ctx_fail(c, "ack %" PRIu64 ", expected %" PRIu64, got, seq);
}

static size_t method_limit(const struct lat_method *m) {
  return m->kind == LK_PORT ? (size_t)MEMPORT_MSG_MAX_BYTES : SIZE_MAX;
}

/* Copying paths send fewer messages from 1 MiB (each costs milliseconds); zero-copy ones cost the
 * same at every size, so they send the full count and their p98 compares like with like. */
static unsigned count_for(const struct lat_method *m, size_t bytes) {
  return bytes >= MIB && m->kind != LK_ZC ? cfg.big_messages : cfg.messages;
}
static unsigned warm_for(const struct lat_method *m, size_t bytes) {
  if (bytes < MIB) return cfg.warmup;
  return m->kind == LK_ZC && cfg.warmup > cfg.big_warmup ? cfg.warmup : cfg.big_warmup;
}

struct lat_shared {
  char err[240];
  uint32_t nrec[MAX_SIZES];
  int64_t samples[]; /* [MAX_SIZES][max count] */
};

static unsigned max_count(void) { return cfg.messages > cfg.big_messages ? cfg.messages : cfg.big_messages; }

/* Ring channel: before the timed sizes, wrap its ring twice with large messages so every page of
 * it has been touched by both processes (the steady state, not first-touch page faults). */
static size_t prime_len(const struct lat_ctx *c, unsigned *count) {
  *count = 0;
  if (c->m->kind != LK_RING) return 0;
  memport_chan_opts_t o;
  chan_options(c->m, c->maxlen, &o);
  /* as large as the channel still sends through the ring, at most a quarter of it */
  size_t len = o.ring_capacity / 4 < o.zerocopy_threshold ? o.ring_capacity / 4 : o.zerocopy_threshold;
  if (len < MIN_BYTES) return 0;
  *count = (unsigned)((2 * o.ring_capacity + len - 1) / len);
  return len;
}

/* Receive `w + n` messages of len bytes; the last n one-way times go to out. */
static int recv_phase(struct lat_ctx *c, size_t len, unsigned w, unsigned n, uint64_t *seq, int64_t *out) {
  c->nfilled = 0;
  for (unsigned i = 0; i < w + n; i++) {
    const unsigned char *data = NULL;
    uint64_t q = ++*seq;
    if (lat_recv(c, len, &data) < 0) return -1;
    int64_t ts = check_marks(data, len, q);
    int64_t t1 = now_ns();
    if (ts < 0) return ctx_fail(c, "message %" PRIu64 " (%zu bytes): bad header or marks", q, len);
    if (i >= w && out) out[i - w] = t1 - ts > 0 ? t1 - ts : 0;
    /* copying paths deliver a fresh copy every time: compare all of it; a zero-copy message is a
     * view of the sender's pool buffer, produced once per buffer: compare it the first time */
    bool whole = true;
    if (c->m->kind == LK_ZC) {
      for (size_t j = 0; j < c->nfilled && whole; j++) whole = c->filled[j] != data;
      if (whole && c->nfilled < sizeof c->filled / sizeof c->filled[0]) c->filled[c->nfilled++] = (void *)data;
    }
    if (whole && !check_body(data, c->ref, len))
      return ctx_fail(c, "message %" PRIu64 " (%zu bytes): payload differs", q, len);
    if (lat_release(c) < 0 || lat_ack(c, q) < 0) return -1;
  }
  return 0;
}

static int send_phase(struct lat_ctx *c, size_t len, unsigned count, uint64_t *seq) {
  c->nfilled = 0;
  if (c->src) fill_pattern(c->src, len); /* clear the previous size's marks */
  for (unsigned i = 0; i < count; i++) {
    uint64_t q = ++*seq;
    if (lat_send(c, len, q) < 0 || lat_wait_ack(c, q) < 0) return -1;
  }
  return 0;
}

static int lat_receiver(struct lat_ctx *c, struct lat_shared *sh) {
  unsigned stride = max_count(), prime;
  uint64_t seq = 0;
  size_t plen = prime_len(c, &prime);
  if (prime && recv_phase(c, plen, prime, 0, &seq, NULL) < 0) return -1;
  for (size_t k = 0; k < cfg.nsizes; k++) {
    size_t len = cfg.sizes[k];
    if (len > method_limit(c->m)) continue;
    if (recv_phase(c, len, warm_for(c->m, len), count_for(c->m, len), &seq, sh->samples + k * stride) < 0) return -1;
    sh->nrec[k] = count_for(c->m, len);
  }
  return 0;
}

static int lat_sender(struct lat_ctx *c) {
  unsigned prime;
  uint64_t seq = 0;
  size_t plen = prime_len(c, &prime);
  if (prime && send_phase(c, plen, prime, &seq) < 0) return -1;
  for (size_t k = 0; k < cfg.nsizes; k++) {
    size_t len = cfg.sizes[k];
    if (len > method_limit(c->m)) continue;
    progress_more(" %zu", len);
    if (send_phase(c, len, warm_for(c->m, len) + count_for(c->m, len), &seq) < 0) return -1;
  }
  return 0;
}

/* Run one latency method over every size; add a result per size. */
static void run_latency(const struct lat_method *m) {
  size_t maxlen = 0;
  for (size_t k = 0; k < cfg.nsizes; k++)
    if (cfg.sizes[k] <= method_limit(m) && cfg.sizes[k] > maxlen) maxlen = cfg.sizes[k];
  if (maxlen == 0) return;
  progress("%s%s%s:", m->method, m->policy >= 0 ? "/" : "", m->policy >= 0 ? mode_name(m->policy) : "");
  if (m->policy == MEMPORT_WAIT_SPIN && usable_cpus() < 2) {
    progress_more(" n/a (one CPU: a spinning receiver would wait for the scheduler)\n");
    return;
  }

  size_t shlen = sizeof(struct lat_shared) + (size_t)MAX_SIZES * max_count() * sizeof(int64_t);
  struct lat_shared *sh = shared_alloc(shlen);
  struct lat_ctx c;
  memset(&c, 0, sizeof c);
  c.m = m;
  c.maxlen = c.buflen = maxlen;
  unsigned nprime;
  size_t plen = prime_len(&c, &nprime);
  if (plen > c.buflen) c.buflen = plen;
  c.fwd[0] = c.fwd[1] = c.back[0] = c.back[1] = c.wfd = c.rfd = -1;
  if (sh == NULL) {
    progress_more(" n/a (mmap failed)\n");
    return;
  }
  if (lat_open(&c) < 0) {
    progress_more(" n/a (%s)\n", c.err);
    munmap(sh, shlen);
    return;
  }
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    progress_more(" n/a (fork: %s)\n", strerror(errno));
    lat_close(&c);
    munmap(sh, shlen);
    return;
  }
  if (pid == 0) {
    /* a stuck run ends instead of hanging: generous, at least 2 ms per message */
    unsigned long total = 0;
    for (size_t k = 0; k < cfg.nsizes; k++) total += warm_for(m, cfg.sizes[k]) + count_for(m, cfg.sizes[k]);
    alarm((unsigned)(120 + total / 500));
    pin_to(cpu_for(1, m->policy == MEMPORT_WAIT_SPIN || m->policy == MEMPORT_WAIT_ADAPTIVE));
    c.receiver = true;
    c.ref = malloc(c.buflen);
    c.dst = malloc(c.buflen);
    int rc = -1;
    if (c.ref == NULL || c.dst == NULL)
      ctx_fail(&c, "out of memory");
    else {
      fill_pattern(c.ref, c.buflen);
      memset(c.dst, 0, c.buflen);
      rc = lat_side(&c);
      if (rc == 0) rc = lat_receiver(&c, sh);
    }
    if (rc < 0) snprintf(sh->err, sizeof sh->err, "%s", c.err);
    lat_close(&c);
    _exit(rc < 0 ? 1 : 0);
  }
  pin_to(cpu_for(0, m->policy == MEMPORT_WAIT_SPIN || m->policy == MEMPORT_WAIT_ADAPTIVE));
  c.receiver = false;
  c.src = malloc(c.buflen);
  int rc = -1;
  if (c.src == NULL)
    ctx_fail(&c, "out of memory");
  else {
    fill_pattern(c.src, c.buflen);
    rc = lat_side(&c);
    if (rc == 0) rc = lat_sender(&c);
  }
  lat_close(&c);
  free(c.src);
  int st = 0;
  if (rc < 0) kill(pid, SIGKILL);
  wait_child(pid, &st);
  restore_affinity();
  if (rc < 0 && c.notsup) {
    progress_more(" n/a (%s)\n", c.err);
  } else if (rc < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    char why[64];
    describe_status(st, why, sizeof why);
    progress_more(" FAILED: %s%s%s (receiver: %s)\n", c.err, sh->err[0] ? "; receiver: " : "", sh->err, why);
    bench_failures++;
  } else {
    progress_more(" done\n");
  }
  unsigned stride = max_count();
  for (size_t k = 0; k < cfg.nsizes; k++) {
    size_t n = sh->nrec[k];
    if (cfg.sizes[k] > method_limit(m) || n == 0) continue;
    int64_t *v = sh->samples + k * stride;
    qsort(v, n, sizeof *v, cmp_i64);
    struct result *r = add_result(m->method, m->policy >= 0 ? mode_name(m->policy) : "");
    r->bytes = cfg.sizes[k];
    r->messages = (unsigned)n;
    r->p50 = pct_us(v, n, 50);
    r->p98 = pct_us(v, n, 98);
    r->has = R_BYTES | R_MSGS | R_LAT;
  }
  munmap(sh, shlen);
}

/* ------------------------------------------------------------------------------------------ */
/* The machine's limits: futex and spin ping-pong on one cache line, memcpy bandwidth.        */

struct pingpong {
  _Alignas(64) _Atomic uint32_t fwd;
  _Atomic uint32_t back;
  _Atomic int64_t ts;
  _Atomic int failed;
  _Alignas(64) int64_t samples[];
};

#ifdef __linux__
static void futex_wait_word(_Atomic uint32_t *w, uint32_t val) {
  struct timespec t = {0, 100 * 1000 * 1000};
  syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT, val, &t, NULL, 0);
}
static void futex_wake_word(_Atomic uint32_t *w) { syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE, 1, NULL, NULL, 0); }
#endif

/* Wait until *w == want; futex or spin; false after the deadline. */
static bool pp_wait(_Atomic uint32_t *w, uint32_t want, bool futex, int64_t deadline) {
  unsigned spins = 0;
  for (;;) {
    uint32_t v = atomic_load_explicit(w, memory_order_acquire);
    if (v == want) return true;
#ifdef __linux__
    if (futex) {
      futex_wait_word(w, v);
      if (now_ns() > deadline) return false;
      continue;
    }
#else
    (void)futex;
#endif
    cpu_relax();
    if ((++spins & 0xfff) == 0 && now_ns() > deadline) return false;
  }
}

static void pp_post(_Atomic uint32_t *w, uint32_t v, bool futex) {
  atomic_store_explicit(w, v, memory_order_release);
#ifdef __linux__
  if (futex) futex_wake_word(w);
#else
  (void)futex;
#endif
}

static void run_pingpong(bool futex, bool split) {
  const char *name = futex ? "futex" : "spin";
#ifndef __linux__
  if (futex) {
    progress("futex: n/a on this platform\n");
    return;
  }
#endif
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

static void run_memcpy(void) {
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

/* ------------------------------------------------------------------------------------------ */
/* Streaming 64 KiB records through a ring shared by fork: memport_ring_write in the parent,  */
/* memport_ring_read in the child; the child times the transfer after a warm-up.               */

#define STREAM_RECORD (64 * KIB)

#define STREAM_SEGMENTS 8

struct stream_shared {
  int64_t t[STREAM_SEGMENTS + 1]; /* consumer's clock at the segment boundaries */
  uint64_t records;
  char err[200];
};

static void run_stream(int policy) {
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
    /* the median of the segments' rates, robust against a neighbour stealing a CPU for a moment */
    double rate[STREAM_SEGMENTS];
    for (int i = 0; i < STREAM_SEGMENTS; i++) {
      double v = (double)(seg * STREAM_RECORD) / (double)(sh->t[i + 1] - sh->t[i] > 0 ? sh->t[i + 1] - sh->t[i] : 1);
      int j = i;
      for (; j > 0 && rate[j - 1] > v; j--) rate[j] = rate[j - 1];
      rate[j] = v;
    }
    r->gbps = (rate[STREAM_SEGMENTS / 2 - 1] + rate[STREAM_SEGMENTS / 2]) / 2;
    r->has = R_BYTES | R_MSGS | R_GBPS;
    progress_more(" %.2f GB/s (median of %d segments; overall %.2f)\n", r->gbps, STREAM_SEGMENTS,
                  (double)(n * STREAM_RECORD) / (double)(sh->t[STREAM_SEGMENTS] - sh->t[0]));
  }
  munmap(sh, sizeof *sh);
}

/* ------------------------------------------------------------------------------------------ */
/* Steady state: system calls (counted by ptrace) and heap allocations (counted by the malloc */
/* wrappers above) of a channel ping-pong after warm-up, per process.                          */

struct sys_result {
  bool ok;
  char what[80];
  unsigned messages;
  unsigned long syscalls[2], allocs[2];
  unsigned long probe_allocs; /* allocations counted in one memport_msg_create: proves the counter sees the library */
  long first_nr[2][6];
  unsigned nfirst[2];
  char err[256];
};

static struct sys_result sysres[4];
static size_t nsysres;

#ifdef __linux__
struct sys_shared {
  _Atomic int ready[2], go, started[2], finished[2], notsup;
  unsigned long allocs[2], probe_allocs;
  char err[2][160];
};

static const char *syscall_name(long nr) {
  static const struct {
    long nr;
    const char *name;
  } names[] = {
#ifdef SYS_futex
    {SYS_futex, "futex"},
#endif
#ifdef SYS_sched_yield
    {SYS_sched_yield, "sched_yield"},
#endif
#ifdef SYS_clock_gettime
    {SYS_clock_gettime, "clock_gettime"},
#endif
#ifdef SYS_sendmsg
    {SYS_sendmsg, "sendmsg"},
#endif
#ifdef SYS_recvmsg
    {SYS_recvmsg, "recvmsg"},
#endif
#ifdef SYS_read
    {SYS_read, "read"},
#endif
#ifdef SYS_write
    {SYS_write, "write"},
#endif
#ifdef SYS_poll
    {SYS_poll, "poll"},
#endif
#ifdef SYS_ppoll
    {SYS_ppoll, "ppoll"},
#endif
#ifdef SYS_mmap
    {SYS_mmap, "mmap"},
#endif
#ifdef SYS_munmap
    {SYS_munmap, "munmap"},
#endif
#ifdef SYS_brk
    {SYS_brk, "brk"},
#endif
#ifdef SYS_nanosleep
    {SYS_nanosleep, "nanosleep"},
#endif
#ifdef SYS_clock_nanosleep
    {SYS_clock_nanosleep, "clock_nanosleep"},
#endif
#ifdef SYS_getpid
    {SYS_getpid, "getpid"},
#endif
#ifdef SYS_close
    {SYS_close, "close"},
#endif
#ifdef SYS_exit_group
    {SYS_exit_group, "exit_group"},
#endif
  };
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (names[i].nr == nr) return names[i].name;
  return NULL;
}

/* One side of the traced ping-pong: role 0 sends and waits for the echo, role 1 echoes. */
static int sys_peer(int role, memport_port_t *port, int policy, bool zerocopy, struct sys_shared *sh) {
  memport_chan_opts_t o;
  memport_chan_opts_init(&o);
  o.wait_policy = policy;
  memport_chan_t *ch = NULL;
  char *err = sh->err[role];
  int rc = memport_chan_open(&ch, port, &o, IO_TIMEOUT);
  if (rc < 0) {
    snprintf(err, 160, "memport_chan_open: %s", memport_strerror(rc));
    if (rc == MEMPORT_ENOTSUP) atomic_store(&sh->notsup, 1);
    return -1;
  }
  unsigned char payload[100];
  memset(payload, 0x5a, sizeof payload);
  unsigned w = cfg.warmup > 1000 ? cfg.warmup : 1000, n = cfg.sys_messages;
  if (role == 0) {
    /* the instrument's own check: a library call known to allocate must be counted */
    memport_msg_t *probe = NULL;
    unsigned long p0 = alloc_count();
    if (memport_msg_create(&probe) == 0) sh->probe_allocs = alloc_count() - p0;
    memport_msg_close(probe);
  }
  unsigned long a0 = 0;
  for (unsigned i = 0; i < w + n; i++) {
    if (i == w) {
      atomic_store(&sh->ready[role], 1);
      while (!atomic_load(&sh->go)) sched_yield();
      atomic_store(&sh->started[role], 1);
      a0 = alloc_count();
    }
    if (role == 0) {
      if (zerocopy) {
        memport_buf_t b;
        rc = memport_chan_alloc(ch, sizeof payload, &b, IO_TIMEOUT);
        if (rc >= 0) {
          memcpy(b.data, payload, sizeof payload);
          memcpy(b.data, &i, sizeof i);
          rc = memport_chan_send_buf(ch, &b, IO_TIMEOUT);
        }
      } else {
        memcpy(payload, &i, sizeof i);
        rc = memport_chan_send(ch, payload, sizeof payload, 0, IO_TIMEOUT);
      }
      if (rc < 0) break;
      memport_buf_t r;
      rc = memport_chan_recv(ch, &r, IO_TIMEOUT);
      if (rc < 0) break;
      unsigned got = 0;
      if (r.len >= sizeof got) memcpy(&got, r.data, sizeof got);
      rc = memport_chan_release(ch, &r);
      if (rc >= 0 && got != i) {
        snprintf(err, 160, "echo %u, expected %u", got, i);
        rc = MEMPORT_EPROTO;
        err = NULL; /* keep this text */
      }
    } else {
      memport_buf_t r;
      rc = memport_chan_recv(ch, &r, IO_TIMEOUT);
      if (rc < 0) break;
      unsigned got = 0;
      if (r.len >= sizeof got) memcpy(&got, r.data, sizeof got);
      rc = memport_chan_release(ch, &r);
      if (rc >= 0) rc = memport_chan_send(ch, &got, sizeof got, 0, IO_TIMEOUT);
    }
    if (rc < 0) break;
  }
  sh->allocs[role] = alloc_count() - a0;
  atomic_store(&sh->finished[role], 1);
  if (rc < 0 && err) snprintf(err, 160, "%s", memport_strerror(rc));
  /* keep the channel open until both sides finished, so the close is outside the window */
  while (!atomic_load(&sh->finished[1 - role])) sched_yield();
  memport_chan_close(ch);
  return rc < 0 ? -1 : 0;
}

static void run_syscheck_one(int policy, bool zerocopy, unsigned messages) {
  struct sys_result *res = &sysres[nsysres++];
  memset(res, 0, sizeof *res);
  snprintf(res->what, sizeof res->what, "%s 100 B, %s mode", zerocopy ? "zero-copy" : "ring", mode_name(policy));
  unsigned saved = cfg.sys_messages;
  cfg.sys_messages = messages;
  res->messages = messages;
  progress("steady state: %s, %u round trips:", res->what, messages);
  struct sys_shared *sh = shared_alloc(sizeof *sh);
  memport_port_t *pa = NULL, *pb = NULL;
  int rc = sh ? memport_port_pair(&pa, &pb) : MEMPORT_ENOMEM;
  if (rc < 0) {
    snprintf(res->err, sizeof res->err, "setup: %s", memport_strerror(rc));
    progress_more(" n/a (%s)\n", res->err);
    if (sh) munmap(sh, sizeof *sh);
    cfg.sys_messages = saved;
    return;
  }
  memset(sh, 0, sizeof *sh);
  pid_t pids[2] = {-1, -1};
  fflush(NULL);
  for (int role = 0; role < 2; role++) {
    pids[role] = fork();
    if (pids[role] == 0) {
      alarm(60);
      pin_to(cpu_for(role, policy != MEMPORT_WAIT_BLOCK));
      memport_port_close(role == 0 ? pb : pa);
      _exit(sys_peer(role, role == 0 ? pa : pb, policy, zerocopy, sh) < 0 ? 1 : 0);
    }
  }
  memport_port_close(pa);
  memport_port_close(pb);
  cfg.sys_messages = saved;
  if (pids[0] < 0 || pids[1] < 0) snprintf(res->err, sizeof res->err, "fork: %s", strerror(errno));
  bool unavailable = false;
  int64_t deadline = now_ns() + (int64_t)30 * 1000000000;
  while (!res->err[0] && (!atomic_load(&sh->ready[0]) || !atomic_load(&sh->ready[1])) && now_ns() < deadline) {
    if (sh->err[0][0] || sh->err[1][0] || atomic_load(&sh->notsup)) break;
    sleep_ns(1000000);
  }
  bool ready = atomic_load(&sh->ready[0]) && atomic_load(&sh->ready[1]);
  for (int i = 0; i < 2 && ready && !res->err[0]; i++) {
    if (ptrace(PTRACE_SEIZE, pids[i], 0, (void *)(uintptr_t)(PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL)) != 0) {
      /* e.g. Yama ptrace_scope 3 or a container's seccomp policy: the check cannot run here */
      unavailable = errno == EPERM || errno == ENOSYS || errno == EACCES;
      snprintf(res->err, sizeof res->err, "ptrace(PTRACE_SEIZE): %s", strerror(errno));
      break;
    }
    int st;
    if (ptrace(PTRACE_INTERRUPT, pids[i], 0, 0) != 0 || waitpid(pids[i], &st, __WALL) != pids[i] ||
        ptrace(PTRACE_SYSCALL, pids[i], 0, 0) != 0) {
      snprintf(res->err, sizeof res->err, "ptrace: %s", strerror(errno));
      break;
    }
  }
  if (!ready && !res->err[0]) snprintf(res->err, sizeof res->err, "peers did not get ready");
  if (res->err[0]) {
    for (int i = 0; i < 2; i++)
      if (pids[i] > 0) kill(pids[i], SIGKILL);
  }
  atomic_store(&sh->go, 1);
  int alive = (pids[0] > 0) + (pids[1] > 0), status[2] = {0, 0};
  bool in_call[2] = {false, false};
  while (alive > 0) {
    int st;
    pid_t p = waitpid(-1, &st, __WALL);
    if (p < 0) {
      if (errno == EINTR) continue;
      break;
    }
    int i = p == pids[0] ? 0 : p == pids[1] ? 1 : -1;
    if (i < 0) continue;
    if (WIFEXITED(st) || WIFSIGNALED(st)) {
      status[i] = st;
      alive--;
      continue;
    }
    if (!WIFSTOPPED(st)) continue;
    int sig = WSTOPSIG(st), event = (st >> 16) & 0xff;
    if (sig == (SIGTRAP | 0x80)) {
      bool entry;
      long nr = -1;
#ifdef PTRACE_GET_SYSCALL_INFO
      struct __ptrace_syscall_info info;
      memset(&info, 0, sizeof info);
      if (ptrace(PTRACE_GET_SYSCALL_INFO, p, (void *)sizeof info, &info) > 0) {
        entry = info.op == PTRACE_SYSCALL_INFO_ENTRY;
        if (entry) nr = (long)info.entry.nr;
      } else {
        entry = !in_call[i];
      }
#else
      entry = !in_call[i];
#endif
      in_call[i] = entry;
      if (entry && atomic_load(&sh->started[i]) && !atomic_load(&sh->finished[i])) {
        if (res->nfirst[i] < 6) res->first_nr[i][res->nfirst[i]++] = nr;
        res->syscalls[i]++;
      }
      ptrace(PTRACE_SYSCALL, p, 0, 0);
    } else if (event == PTRACE_EVENT_STOP) {
      ptrace(PTRACE_SYSCALL, p, 0, 0);
    } else {
      ptrace(PTRACE_SYSCALL, p, 0, (void *)(uintptr_t)sig);
    }
  }
  bool ok = !res->err[0];
  for (int i = 0; i < 2; i++) {
    if (!WIFEXITED(status[i]) || WEXITSTATUS(status[i]) != 0) {
      ok = false;
      if (!res->err[0]) {
        char why[64];
        describe_status(status[i], why, sizeof why);
        snprintf(res->err, sizeof res->err, "%s %s: %s", i ? "receiver" : "sender", why, sh->err[i]);
      }
    }
    res->allocs[i] = sh->allocs[i];
  }
  res->probe_allocs = sh->probe_allocs;
  res->ok = ok;
  if (!ok && (unavailable || atomic_load(&sh->notsup))) {
    if (!unavailable) snprintf(res->err, sizeof res->err, "%s", sh->err[0][0] ? sh->err[0] : sh->err[1]);
    progress_more(" n/a (%s)\n", res->err);
  } else if (ok)
    progress_more(" sender %lu syscalls %lu allocations, receiver %lu syscalls %lu allocations\n", res->syscalls[0],
                  res->allocs[0], res->syscalls[1], res->allocs[1]);
  else {
    progress_more(" FAILED: %s\n", res->err);
    bench_failures++;
  }
  munmap(sh, sizeof *sh);
}
#endif

static void run_syscheck(void) {
#ifdef __linux__
  if (usable_cpus() < 2 || cpus[0] < 0) {
    progress("steady state: spin mode needs two CPUs to pin the peers to; skipped\n");
    return;
  }
  run_syscheck_one(MEMPORT_WAIT_SPIN, false, cfg.sys_messages);
  run_syscheck_one(MEMPORT_WAIT_SPIN, true, cfg.sys_messages);
  run_syscheck_one(MEMPORT_WAIT_BLOCK, false, cfg.sys_messages / 20 > 100 ? cfg.sys_messages / 20 : 100);
#else
  progress("steady state: the syscall count uses ptrace and is Linux-only\n");
#endif
}

/* ------------------------------------------------------------------------------------------ */
/* Resident memory of one channel endpoint beyond its pool (Linux): mappings added by the      */
/* channel, shared ones counted once per memory object (mincore, so a mirror counts once),    */
/* private ones by their Rss growth.                                                           */

struct rss_report {
  bool ok, notsup;
  size_t ring_capacity;
  size_t ring_objects, ring_resident, ctl_objects, ctl_resident, other_resident, pool_objects, pool_resident;
  char err[200];
};

static struct rss_report rssrep;

#ifdef __linux__
#define MAX_VMAS 4096
struct vma {
  uintptr_t start, end;
  unsigned long inode;
  bool shared;
  size_t rss_kb;
};
static struct vma vmas_before[MAX_VMAS], vmas_after[MAX_VMAS];
static char smaps_buf[4 << 20];
static unsigned char mincore_vec[65536];

static int read_smaps(struct vma *out, size_t *count) {
  int fd = open("/proc/self/smaps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  size_t len = 0;
  for (;;) {
    ssize_t n = read(fd, smaps_buf + len, sizeof smaps_buf - 1 - len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    len += (size_t)n;
    if (len >= sizeof smaps_buf - 1) break;
  }
  close(fd);
  smaps_buf[len] = 0;
  size_t nv = 0;
  char *line = smaps_buf;
  while (line && *line) {
    char *next = strchr(line, '\n');
    if (next) *next++ = 0;
    unsigned long s, e, off, ino;
    char perms[8];
    int consumed = 0;
    if (sscanf(line, "%lx-%lx %7s %lx %*s %lu%n", &s, &e, perms, &off, &ino, &consumed) == 5 && nv < MAX_VMAS) {
      out[nv].start = s;
      out[nv].end = e;
      out[nv].inode = ino;
      out[nv].shared = perms[3] == 's';
      out[nv].rss_kb = 0;
      nv++;
    } else if (nv > 0 && strncmp(line, "Rss:", 4) == 0) {
      out[nv - 1].rss_kb = strtoul(line + 4, NULL, 10);
    }
    line = next;
  }
  *count = nv;
  return 0;
}

static size_t resident_bytes(uintptr_t start, uintptr_t end) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE), total = 0;
  for (uintptr_t a = start; a < end;) {
    size_t chunk = end - a;
    if (chunk / page > sizeof mincore_vec) chunk = sizeof mincore_vec * page;
    if (mincore((void *)a, chunk, mincore_vec) != 0) return 0;
    for (size_t i = 0; i < chunk / page; i++) total += (mincore_vec[i] & 1) ? page : 0;
    a += chunk;
  }
  return total;
}

static void rss_echo(memport_port_t *port, size_t cap) {
  memport_chan_opts_t o;
  memport_chan_opts_init(&o);
  o.ring_capacity = cap;
  o.zerocopy_threshold = cap / 4;
  o.pool_buffer_size = 4 * cap;
  o.pool_buffers = 2;
  memport_chan_t *ch = NULL;
  if (memport_chan_open(&ch, port, &o, IO_TIMEOUT) < 0) _exit(1);
  for (;;) {
    memport_buf_t b;
    if (memport_chan_recv(ch, &b, IO_TIMEOUT) < 0) break;
    if (b.len == 0) {
      memport_chan_release(ch, &b);
      break;
    }
    int rc = memport_chan_send(ch, b.data, b.len, 0, IO_TIMEOUT);
    memport_chan_release(ch, &b);
    if (rc < 0) break;
  }
  memport_chan_close(ch);
  _exit(0);
}

/* In a child process: open a channel, exercise both rings over many wraps, compare mappings. */
static void rss_measure(struct rss_report *rep) {
  size_t cap = rep->ring_capacity;
  memport_port_t *pa = NULL, *pb = NULL;
  int rc = memport_port_pair(&pa, &pb);
  if (rc < 0) {
    snprintf(rep->err, sizeof rep->err, "memport_port_pair: %s", memport_strerror(rc));
    return;
  }
  pid_t pid = fork();
  if (pid == 0) {
    memport_port_close(pa);
    rss_echo(pb, cap);
  }
  memport_port_close(pb);
  if (pid < 0) {
    memport_port_close(pa);
    snprintf(rep->err, sizeof rep->err, "fork: %s", strerror(errno));
    return;
  }
  unsigned char *src = malloc(cap), *dst = malloc(cap);
  if (src == NULL || dst == NULL) {
    snprintf(rep->err, sizeof rep->err, "out of memory");
    kill(pid, SIGKILL);
    return;
  }
  fill_pattern(src, cap);
  memset(dst, 0xa5, cap); /* not 0: a compiler may turn malloc + zeroing into calloc, leaving pages untouched */
  /* touch everything the measurement itself uses, so only the channel's pages show */
  memset(vmas_before, 0, sizeof vmas_before);
  memset(vmas_after, 0, sizeof vmas_after);
  memset(mincore_vec, 0, sizeof mincore_vec);
  memset(smaps_buf, 0, sizeof smaps_buf);
  size_t nb = 0, na = 0;
  if (read_smaps(vmas_before, &nb) < 0) {
    snprintf(rep->err, sizeof rep->err, "/proc/self/smaps: %s", strerror(errno));
    kill(pid, SIGKILL);
    return;
  }
  memport_chan_opts_t o;
  memport_chan_opts_init(&o);
  o.ring_capacity = cap;
  o.zerocopy_threshold = cap / 4;
  o.pool_buffer_size = 4 * cap;
  o.pool_buffers = 2;
  memport_chan_t *ch = NULL;
  rc = memport_chan_open(&ch, pa, &o, IO_TIMEOUT);
  rep->notsup = rc == MEMPORT_ENOTSUP;
  const size_t sizes[] = {64, 1000, 4000, cap / 8 > 64 ? cap / 8 : 64};
  uint64_t moved = 0;
  for (unsigned i = 0; rc >= 0 && moved < 8 * (uint64_t)cap; i++) {
    size_t len = sizes[i % 4];
    rc = memport_chan_send(ch, src, len, 0, IO_TIMEOUT);
    size_t got = 0;
    if (rc >= 0) rc = memport_chan_recv_copy(ch, dst, cap, &got, IO_TIMEOUT);
    if (rc >= 0 && (got != len || memcmp(src, dst, len) != 0)) rc = MEMPORT_EPROTO;
    moved += len;
  }
  if (rc < 0) {
    snprintf(rep->err, sizeof rep->err, "channel: %s", memport_strerror(rc));
  } else if (read_smaps(vmas_after, &na) < 0) {
    snprintf(rep->err, sizeof rep->err, "/proc/self/smaps: %s", strerror(errno));
    rc = -1;
  }
  if (rc >= 0) {
    /* shared memory objects: the largest resident view per inode; pool objects are those larger than the ring */
    for (size_t i = 0; i < na; i++) {
      struct vma *v = &vmas_after[i];
      bool existed = false;
      size_t before_kb = 0, before_len = 0;
      for (size_t j = 0; j < nb; j++)
        if (vmas_before[j].start == v->start) {
          existed = vmas_before[j].end == v->end && vmas_before[j].inode == v->inode;
          before_kb = vmas_before[j].rss_kb;
          before_len = vmas_before[j].end - vmas_before[j].start;
        }
      if (v->shared && v->inode != 0) {
        if (existed) continue;
        bool first = true;
        size_t span = 0, res = 0;
        for (size_t j = 0; j < na; j++) {
          if (vmas_after[j].inode != v->inode || !vmas_after[j].shared) continue;
          if (j < i) first = false;
          size_t l = vmas_after[j].end - vmas_after[j].start, r = resident_bytes(vmas_after[j].start, vmas_after[j].end);
          if (l > span) span = l;
          if (r > res) res = r;
        }
        if (!first) continue;
        const char *kind;
        if (span > 2 * cap) {
          kind = "pool";
          rep->pool_objects++;
          rep->pool_resident += res;
        } else if (span >= cap) {
          kind = "ring data";
          rep->ring_objects++;
          rep->ring_resident += res;
        } else {
          kind = "ring control/semaphore";
          rep->ctl_objects++;
          rep->ctl_resident += res;
        }
        if (cfg.verbose)
          fprintf(stderr, "\n    shared object inode %lu: %s, largest view %zu KiB, resident %zu KiB", v->inode, kind,
                  span / KIB, res / KIB);
      } else if (v->inode == 0 && v->rss_kb > before_kb) { /* anonymous: heap, stacks, private mmaps (not code) */
        rep->other_resident += (v->rss_kb - before_kb) * KIB;
        if (cfg.verbose)
          fprintf(stderr, "\n    private %#lx-%#lx (%zu KiB, before %zu KiB): Rss %zu -> %zu KiB", (unsigned long)v->start,
                  (unsigned long)v->end, (size_t)(v->end - v->start) / KIB, before_len / KIB, before_kb, v->rss_kb);
      }
    }
    rep->ok = true;
  }
  memport_chan_send(ch, src, 0, 0, IO_TIMEOUT);
  memport_chan_close(ch);
  if (ch == NULL) memport_port_close(pa);
  wait_child(pid, NULL);
  free(src);
  free(dst);
}
#endif

static void run_rss(void) {
  memset(&rssrep, 0, sizeof rssrep);
  rssrep.ring_capacity = cfg.rss_ring;
#ifdef __linux__
  progress("resident memory: channel with %zu KiB rings:", cfg.rss_ring / KIB);
  struct rss_report *sh = shared_alloc(sizeof *sh);
  if (sh == NULL) return;
  *sh = rssrep;
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    alarm(60);
    rss_measure(sh);
    _exit(0);
  }
  if (pid > 0) wait_child(pid, NULL);
  rssrep = *sh;
  munmap(sh, sizeof *sh);
  if (rssrep.ok)
    progress_more("%s %zu KiB ring data + %zu KiB ring control + %zu KiB private\n", cfg.verbose ? "\n   " : "",
                  rssrep.ring_resident / KIB, rssrep.ctl_resident / KIB, rssrep.other_resident / KIB);
  else if (rssrep.notsup) {
    progress_more(" n/a (%s)\n", rssrep.err);
  } else {
    progress_more(" FAILED: %s\n", rssrep.err[0] ? rssrep.err : "measuring process died");
    bench_failures++;
  }
#else
  snprintf(rssrep.err, sizeof rssrep.err, "n/a on this platform (uses /proc/self/smaps and mincore)");
#endif
}

/* ------------------------------------------------------------------------------------------ */
/* Paired runs for the two latency targets. How the host schedules this VM's CPUs changes from */
/* one second to the next (a spin ping-pong reads 0.07 us in one run and 0.18 us in the next), */
/* so each ratio is taken from back-to-back rounds: baseline, then channel, several times; the */
/* median of the rounds' ratios is reported.                                                   */

#define PAIR_ROUNDS 5

struct pair_result {
  bool have;
  int rounds;
  double ratio, chan_p50, base_p50; /* medians over the rounds */
};

static struct pair_result pair_block, pair_adaptive;

static double median_of(double *v, int n) {
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
      double t = v[j];
      v[j] = v[j - 1];
      v[j - 1] = t;
    }
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Take the last result row if it is (method, mode, bytes) and drop it from the table. */
static bool pop_result(const char *method, const char *mode, double *p50) {
  if (nresults == 0) return false;
  const struct result *r = &results[nresults - 1];
  if (strcmp(r->method, method) != 0 || strcmp(r->mode, mode) != 0 || !(r->has & R_LAT)) return false;
  *p50 = r->p50;
  nresults--;
  return true;
}

static void run_pair(struct pair_result *out, int policy) {
  bool futex = policy == MEMPORT_WAIT_BLOCK;
  size_t small = SIZE_MAX;
  for (size_t k = 0; k < cfg.nsizes; k++)
    if (cfg.sizes[k] == 100 || (small != 100 && cfg.sizes[k] < small)) small = cfg.sizes[k];
#ifndef __linux__
  if (futex) return;
#endif
  if (!futex && usable_cpus() < 2) return;
  progress("paired rounds for the %s target: %s ping-pong, then channel %s %zu B, %d times:", mode_name(policy),
           futex ? "futex" : "spin", mode_name(policy), small, PAIR_ROUNDS);
  /* the rounds use the regular runs with one size and a share of the messages */
  struct config saved = cfg;
  cfg.sizes[0] = small;
  cfg.nsizes = 1;
  cfg.messages = saved.messages / 2 > 500 ? saved.messages / 2 : 500;
  cfg.base_messages = cfg.messages;
  struct lat_method m = {LK_RING, "ring", policy, ""};
  double ratio[PAIR_ROUNDS], chan[PAIR_ROUNDS], base[PAIR_ROUNDS];
  int n = 0;
  unsigned failures = bench_failures;
  progress_off = true;
  for (int r = 0; r < PAIR_ROUNDS; r++) {
    double b = 0, c = 0;
    run_pingpong(futex, false);
    if (!pop_result(futex ? "futex" : "spin", "", &b)) break;
    run_latency(&m);
    if (!pop_result("ring", mode_name(policy), &c)) break;
    if (b <= 0) continue;
    base[n] = b;
    chan[n] = c;
    ratio[n] = c / b;
    n++;
  }
  progress_off = false;
  cfg = saved;
  if (n == 0 || bench_failures != failures) {
    progress_more(" FAILED\n");
    return;
  }
  out->have = true;
  out->rounds = n;
  out->ratio = median_of(ratio, n);
  out->chan_p50 = median_of(chan, n);
  out->base_p50 = median_of(base, n);
  progress_more(" median ratio %.2f\n", out->ratio);
}

/* ------------------------------------------------------------------------------------------ */
/* Output: the table, the limits, the targets, CSV and the plot.                               */

static void fmt_us(double us, char *out, size_t cap) {
  if (us < 10)
    snprintf(out, cap, "%.2f", us);
  else if (us < 1000)
    snprintf(out, cap, "%.1f", us);
  else
    snprintf(out, cap, "%.0f", us);
}

static struct lat_method methods[2 + 1 + 2 * MAX_MODES];
static size_t nmethods;

static void build_methods(void) {
  nmethods = 0;
  methods[nmethods++] = (struct lat_method){LK_PIPE, "pipe", -1, "pipe"};
  methods[nmethods++] = (struct lat_method){LK_UNIX, "unix", -1, "unix"};
  methods[nmethods++] = (struct lat_method){LK_PORT, "port", -1, "port"};
  for (size_t i = 0; i < cfg.nmodes; i++) {
    struct lat_method *m = &methods[nmethods++];
    *m = (struct lat_method){LK_RING, "ring", cfg.modes[i], ""};
    snprintf(m->label, sizeof m->label, "ring %s", mode_name(cfg.modes[i]));
  }
  for (size_t i = 0; i < cfg.nmodes; i++) {
    struct lat_method *m = &methods[nmethods++];
    *m = (struct lat_method){LK_ZC, "zerocopy", cfg.modes[i], ""};
    snprintf(m->label, sizeof m->label, "zc %s", mode_name(cfg.modes[i]));
  }
}

static const struct result *lat_result(const struct lat_method *m, size_t bytes) {
  return find_result(m->method, m->policy >= 0 ? mode_name(m->policy) : "", bytes, R_BYTES | R_LAT);
}

static size_t small_size(void) {
  for (size_t k = 0; k < cfg.nsizes; k++)
    if (cfg.sizes[k] == 100) return 100;
  size_t s = SIZE_MAX;
  for (size_t k = 0; k < cfg.nsizes; k++)
    if (cfg.sizes[k] < s) s = cfg.sizes[k];
  return s;
}

static size_t large_size(void) {
  size_t s = 0;
  for (size_t k = 0; k < cfg.nsizes; k++)
    if (cfg.sizes[k] > s) s = cfg.sizes[k];
  return s;
}

static void print_table(void) {
  printf("\nOne-way latency in microseconds, p50/p98, by message size\n");
  printf("  %u messages per size (after %u warm-up messages); from 1 MiB the copying paths send %u (after %u),\n"
         "  zero-copy still %u\n",
         cfg.messages, cfg.warmup, cfg.big_messages, cfg.big_warmup, cfg.messages);
  printf("  %-9s", "bytes");
  for (size_t i = 0; i < nmethods; i++) printf(" %15s", methods[i].label);
  printf("  x better than pipe (p50): blocking | any\n");
  for (size_t k = 0; k < cfg.nsizes; k++) {
    size_t bytes = cfg.sizes[k];
    printf("  %-9zu", bytes);
    /* the fastest memport path overall, and the fastest one that sleeps instead of spinning */
    double best[2] = {0, 0};
    const char *best_label[2] = {NULL, NULL};
    for (size_t i = 0; i < nmethods; i++) {
      const struct result *r = lat_result(&methods[i], bytes);
      char cell[40], a[16], b[16];
      if (r) {
        fmt_us(r->p50, a, sizeof a);
        fmt_us(r->p98, b, sizeof b);
        snprintf(cell, sizeof cell, "%s/%s", a, b);
        bool sleeps = methods[i].policy < 0 || methods[i].policy == MEMPORT_WAIT_BLOCK;
        for (int j = 0; j < 2 && methods[i].kind >= LK_PORT; j++) {
          if ((j == 0 && !sleeps) || (best_label[j] != NULL && r->p50 >= best[j])) continue;
          best[j] = r->p50;
          best_label[j] = methods[i].label;
        }
      } else {
        snprintf(cell, sizeof cell, "%s", bytes > method_limit(&methods[i]) ? "-" : "n/a");
      }
      printf(" %15s", cell);
    }
    const struct result *pipe = find_result("pipe", "", bytes, R_BYTES | R_LAT);
    for (int j = 0; j < 2; j++) {
      char x[48] = "n/a";
      if (pipe && best_label[j] && best[j] > 0)
        snprintf(x, sizeof x, pipe->p50 / best[j] >= 100 ? "%.0fx %s" : "%.1fx %s", pipe->p50 / best[j], best_label[j]);
      printf(j == 0 ? "  %-16s" : " | %s\n", x);
    }
  }
  printf("  '-': beyond that path's limit (port: MEMPORT_MSG_MAX_BYTES = %u); n/a: not measured or failed\n",
         (unsigned)MEMPORT_MSG_MAX_BYTES);
  size_t maxlen = large_size();
  memport_chan_opts_t ro, zo;
  struct lat_method rm = {LK_RING, "ring", MEMPORT_WAIT_BLOCK, ""}, zm = {LK_ZC, "zerocopy", MEMPORT_WAIT_BLOCK, ""};
  chan_options(&rm, maxlen, &ro);
  chan_options(&zm, maxlen, &zo);
  printf("  pipe: pipe(2) write/read; unix: SOCK_STREAM socketpair; port: memport_port_send/recv (%s);\n"
         "  ring: memport_chan_send + memport_chan_recv in place, ring capacity %zu KiB (every size fits), wrapped\n"
         "  twice before timing; zc: memport_chan_alloc/send_buf + memport_chan_recv, pool of %u x %zu KiB buffers,\n"
         "  each written and compared once, header and marks every message. Copying paths compare every payload.\n",
#ifdef __APPLE__
         "Mach messages",
#else
         "SOCK_SEQPACKET",
#endif
         ro.ring_capacity / KIB, zo.pool_buffers, (zo.pool_buffer_size + KIB - 1) / KIB);
}

static void print_limits(void) {
  printf("\nLimits of this machine\n");
  const struct result *f = find_result("futex", "", 0, R_LAT);
  const struct result *s = find_result("spin", "", 0, R_LAT);
  const struct result *m = find_result("memcpy", "", 0, R_GBPS);
  char a[16], b[16];
  char label[64];
  snprintf(label, sizeof label, "futex ping-pong (%s):", placement_text(false));
  if (f) {
    fmt_us(f->p50, a, sizeof a);
    fmt_us(f->p98, b, sizeof b);
    printf("  %-42sp50 %s us, p98 %s us (%u messages, one-way)\n", label, a, b, f->messages);
  } else {
    printf("  %-42sn/a\n", label);
  }
  if (futex_split.have) {
    fmt_us(futex_split.p50, a, sizeof a);
    fmt_us(futex_split.p98, b, sizeof b);
    printf("  %-42sp50 %s us, p98 %s us (%u messages; for reference, not in the CSV)\n",
           "futex ping-pong (two CPUs):", a, b, futex_split.n);
  }
  snprintf(label, sizeof label, "spin ping-pong (%s):", placement_text(true));
  if (s) {
    fmt_us(s->p50, a, sizeof a);
    fmt_us(s->p98, b, sizeof b);
    printf("  %-42sp50 %s us, p98 %s us (%u messages, one-way, one cache line)\n", label, a, b, s->messages);
  } else {
    printf("  %-42sn/a\n", label);
  }
  if (m)
    printf("  %-42s%.2f GB/s (median of %u copies of %zu MiB)\n", "memcpy bandwidth:", m->gbps, m->messages,
           m->bytes / MIB);
  else
    printf("  %-42sn/a\n", "memcpy bandwidth:");
  static const int order[] = {MEMPORT_WAIT_BLOCK, MEMPORT_WAIT_ADAPTIVE, MEMPORT_WAIT_SPIN};
  for (int i = 0; i < 3; i++) {
    int pol = order[i];
    const struct result *r = find_result("stream", mode_name(pol), 0, R_GBPS);
    if (r) {
      snprintf(label, sizeof label, "ring stream 64 KiB, %s (%s):", mode_name(pol),
               placement_text(pol != MEMPORT_WAIT_BLOCK));
      printf("  %-42s%.2f GB/s (%u records, copy in + copy out, %zu KiB ring; median of %d segments)\n", label,
             r->gbps, r->messages, cfg.stream_ring / KIB, STREAM_SEGMENTS);
    }
  }
}

static void verdict(const char *what, double value, bool have, bool le, double limit, const char *detail) {
  if (!have) {
    printf("  %-62s n/a%s%s\n", what, detail[0] ? "  " : "", detail);
    return;
  }
  bool pass = le ? value <= limit : value >= limit;
  printf("  %-62s %7.2f  (%s %.2f)  %s%s%s\n", what, value, le ? "<=" : ">=", limit, pass ? "PASS" : "MISS",
         detail[0] ? "  " : "", detail);
}

static void print_latency_targets(void) {
  size_t small = small_size(), big = large_size();
  char what[96], detail[256];
  const struct result *f = find_result("futex", "", 0, R_LAT), *s = find_result("spin", "", 0, R_LAT);

  const struct {
    const char *mode, *base_name;
    const struct result *base;
    const struct pair_result *pair;
    double limit;
  } lt[] = {{"block", "futex", f, &pair_block, 1.25}, {"adaptive", "spin", s, &pair_adaptive, 3.0}};
  for (size_t i = 0; i < sizeof lt / sizeof lt[0]; i++) {
    const struct result *ch = find_result("ring", lt[i].mode, small, R_BYTES | R_LAT);
    const struct result *base = lt[i].base;
    char table[96] = "";
    if (ch && base) snprintf(table, sizeof table, "table run: %.2f / %.2f us = %.2f", ch->p50, base->p50, ch->p50 / base->p50);
    if (lt[i].pair->have) {
      const struct pair_result *p = lt[i].pair;
      snprintf(what, sizeof what, "%s %zu B channel p50 / %s p50 (paired rounds)", lt[i].mode, small, lt[i].base_name);
      snprintf(detail, sizeof detail, "median of %d rounds; %.2f / %.2f us%s%s", p->rounds, p->chan_p50, p->base_p50,
               table[0] ? "; " : "", table);
      verdict(what, p->ratio, true, true, lt[i].limit, detail);
    } else {
      snprintf(what, sizeof what, "%s %zu B channel p50 / %s p50", lt[i].mode, small, lt[i].base_name);
      verdict(what, ch && base ? ch->p50 / base->p50 : 0, ch && base && base->p50 > 0, true, lt[i].limit, table);
    }
  }

  for (size_t i = 0; i < cfg.nmodes; i++) {
    const char *mode = mode_name(cfg.modes[i]);
    const struct result *zb = find_result("zerocopy", mode, big, R_BYTES | R_LAT);
    const struct result *zs = find_result("zerocopy", mode, small, R_BYTES | R_LAT);
    char bl[24];
    size_label(big, bl, sizeof bl);
    snprintf(what, sizeof what, "zero-copy %s %s p98 / %zu B p98", mode, bl, small);
    detail[0] = 0;
    if (zb && zs) snprintf(detail, sizeof detail, "%.2f / %.2f us", zb->p98, zs->p98);
    verdict(what, zb && zs ? zb->p98 / zs->p98 : 0, zb && zs && zs->p98 > 0, true, 2.0, detail);
  }

  for (size_t i = 0; i < cfg.nmodes; i++) {
    const char *mode = mode_name(cfg.modes[i]);
    double worst = 0;
    bool have = false;
    size_t len = 0;
    int n = 0;
    detail[0] = 0;
    for (size_t k = 0; k < cfg.nsizes; k++) {
      if (cfg.sizes[k] < MIB) continue;
      const struct result *p = find_result("pipe", "", cfg.sizes[k], R_BYTES | R_LAT);
      const struct result *z = find_result("zerocopy", mode, cfg.sizes[k], R_BYTES | R_LAT);
      if (!p || !z || z->p50 <= 0) continue;
      double x = p->p50 / z->p50;
      if (!have || x < worst) worst = x;
      have = true;
      char sl[24];
      size_label(cfg.sizes[k], sl, sizeof sl);
      if (len < sizeof detail)
        len += (size_t)snprintf(detail + len, sizeof detail - len, "%s%s %.0fx", n++ ? ", " : "", sl, x);
    }
    snprintf(what, sizeof what, "pipe p50 / zero-copy %s p50, every size >= 1 MiB (min)", mode);
    verdict(what, worst, have, false, 20.0, detail);
  }

}

static void print_targets(void) {
  printf("\nTargets (ratios from this run; reporting, not assertions)\n");
  char what[96], detail[256];
  if (cfg.parts & P_TABLE) print_latency_targets();

  const struct result *m = find_result("memcpy", "", 0, R_GBPS);
  static const int order[] = {MEMPORT_WAIT_BLOCK, MEMPORT_WAIT_ADAPTIVE, MEMPORT_WAIT_SPIN};
  for (int i = 0; i < 3 && (cfg.parts & P_STREAM); i++) {
    int pol = order[i];
    const struct result *st = find_result("stream", mode_name(pol), 0, R_GBPS);
    if (!st && pol != MEMPORT_WAIT_BLOCK) continue;
    snprintf(what, sizeof what, "stream 64 KiB %s GB/s / memcpy GB/s", mode_name(pol));
    detail[0] = 0;
    if (st && m) snprintf(detail, sizeof detail, "%.2f / %.2f GB/s", st->gbps, m->gbps);
    verdict(what, st && m ? st->gbps / m->gbps : 0, st && m && m->gbps > 0, false, 0.40, detail);
  }

  /* steady state */
  for (size_t i = 0; i < nsysres; i++) {
    const struct sys_result *r = &sysres[i];
    if (!r->ok) {
      printf("  steady state, %-48s n/a  (%s)\n", r->what, r->err);
      continue;
    }
    double sc = (double)(r->syscalls[0] + r->syscalls[1]) / r->messages;
    double al = (double)(r->allocs[0] + r->allocs[1]) / r->messages;
    bool spin = strstr(r->what, "spin") != NULL;
    printf("  steady state, %-48s %lu+%lu syscalls, %lu+%lu allocations in %u round trips"
           " (%.3f syscalls, %.3f allocations per round trip)",
           r->what, r->syscalls[0], r->syscalls[1], r->allocs[0], r->allocs[1], r->messages, sc, al);
    if (spin)
      printf("  %s%s\n", sc < 0.01 && r->allocs[0] + r->allocs[1] == 0 ? "PASS" : "MISS",
             r->probe_allocs ? "" : " (system calls only: allocations not counted)");
    else
      printf("  (contrast: blocking mode sleeps)\n");
#ifdef BENCH_COUNTS_MALLOC
    if (r->probe_allocs == 0) printf("      the allocation counter did NOT see memport_msg_create allocate: counts unreliable\n");
#endif
#ifdef __linux__
    for (int side = 0; side < 2; side++) {
      if (r->nfirst[side] == 0) continue;
      printf("      %s's first system calls:", side ? "receiver" : "sender");
      for (unsigned j = 0; j < r->nfirst[side]; j++) {
        const char *nm = syscall_name(r->first_nr[side][j]);
        if (nm)
          printf(" %s", nm);
        else
          printf(" #%ld", r->first_nr[side][j]);
      }
      printf("\n");
    }
#endif
  }
#ifdef BENCH_COUNTS_MALLOC
  if (nsysres && sysres[0].ok)
    printf("  (instrument check: one memport_msg_create counted %lu allocation(s) in libmemport)\n", sysres[0].probe_allocs);
#endif
  if (nsysres)
    printf("  (steady state PASS: no allocation and under 1 system call per 100 round trips, i.e. none per message;\n"
           "   a few periodic ones, e.g. a liveness look at the port, are listed above)\n");
#ifndef BENCH_COUNTS_MALLOC
  if (nsysres) printf("  (allocation counts are 0 by construction: this build cannot count them, see -h)\n");
#endif

  if (rssrep.ok) {
    /* the endpoint maps one ring per direction, each of capacity C: compare per direction */
    size_t c = rssrep.ring_capacity, dirs = 2;
    size_t total = rssrep.ring_resident + rssrep.ctl_resident + rssrep.other_resident;
    snprintf(what, sizeof what, "resident beyond pool per direction (KiB), C = %zu KiB", c / KIB);
    snprintf(detail, sizeof detail,
             "endpoint %zu KiB = ring data %zu (%zu objects) + ring control %zu (%zu) + private %zu; pool %zu KiB",
             total / KIB, rssrep.ring_resident / KIB, rssrep.ring_objects, rssrep.ctl_resident / KIB,
             rssrep.ctl_objects, rssrep.other_resident / KIB, rssrep.pool_resident / KIB);
    verdict(what, (double)total / (double)dirs / (double)KIB, true, true, (double)(c + 64 * KIB) / (double)KIB,
            detail);
  } else if (cfg.parts & P_RSS) {
    printf("  resident memory beyond pool: n/a (%s)\n", rssrep.err[0] ? rssrep.err : "not measured");
  }
}

static void csv_num(FILE *f, double v, bool have) {
  if (have) fprintf(f, "%.3f", v);
}

static int write_csv(const char *path) {
  FILE *f = fopen(path, "w");
  if (f == NULL) {
    fprintf(stderr, "memport-bench: %s: %s\n", path, strerror(errno));
    return -1;
  }
  fprintf(f, "method,mode,bytes,messages,p50_us,p98_us,gbps\n");
  for (size_t i = 0; i < nresults; i++) {
    const struct result *r = &results[i];
    fprintf(f, "%s,%s,", r->method, r->mode);
    if (r->has & R_BYTES) fprintf(f, "%zu", r->bytes);
    fputc(',', f);
    if (r->has & R_MSGS) fprintf(f, "%u", r->messages);
    fputc(',', f);
    csv_num(f, r->p50, r->has & R_LAT);
    fputc(',', f);
    csv_num(f, r->p98, r->has & R_LAT);
    fputc(',', f);
    csv_num(f, r->gbps, r->has & R_GBPS);
    fputc('\n', f);
  }
  if (fclose(f) != 0) {
    fprintf(stderr, "memport-bench: %s: %s\n", path, strerror(errno));
    return -1;
  }
  printf("\nCSV: %zu rows written to %s\n", nresults, path);
  return 0;
}

/* Run a command with stdout/stderr sent to /dev/null; its exit status or -1. */
static int run_quiet(char *const argv[]) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    int fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
      dup2(fd, 0);
      dup2(fd, 1);
      dup2(fd, 2);
    }
    execvp(argv[0], argv);
    _exit(127);
  }
  int st;
  wait_child(pid, &st);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int write_plot(const char *path) {
  bool any_data = false;
  for (size_t i = 0; i < nresults && !any_data; i++) any_data = (results[i].has & (R_BYTES | R_LAT)) == (R_BYTES | R_LAT);
  if (!any_data) {
    printf("\nPlot: no latency figures in this run (see --only); %s not written\n", path);
    return 0;
  }
  static const char *terms[][2] = {
      {"pngcairo", "set terminal pngcairo size 1100,700 enhanced font 'sans,10'"},
      {"png", "set terminal png size 1100,700"},
      {"svg", "set terminal svg size 1100,700 dynamic"},
      {"dumb", "set terminal dumb size 120,40"},
  };
  int chosen = -1;
  for (int i = 0; i < 4 && chosen < 0; i++) {
    char cmd[64];
    snprintf(cmd, sizeof cmd, "set terminal %s", terms[i][0]);
    char *argv[] = {(char *)"gnuplot", (char *)"-e", cmd, NULL};
    int rc = run_quiet(argv);
    if (rc == 127) {
      /* documented: the plot needs gnuplot; its absence is reported, not an error of the run */
      printf("\nPlot: gnuplot is not installed; %s not written (the CSV has the same figures)\n", path);
      fprintf(stderr, "memport-bench: --plot: gnuplot not found in PATH; %s not written\n", path);
      return 0;
    }
    if (rc == 0) chosen = i;
  }
  if (chosen < 0) {
    printf("\nPlot: gnuplot has none of the pngcairo, png, svg, dumb terminals; %s not written\n", path);
    return -1;
  }
  const char *tmp = getenv("TMPDIR");
  char script[PATH_MAX];
  snprintf(script, sizeof script, "%s/memport-bench-plot.XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
  int fd = mkstemp(script);
  if (fd < 0) {
    fprintf(stderr, "memport-bench: mkstemp: %s\n", strerror(errno));
    return -1;
  }
  FILE *f = fdopen(fd, "w");
  if (f == NULL) {
    close(fd);
    unlink(script);
    return -1;
  }
  fprintf(f, "%s\nset output '", terms[chosen][1]);
  for (const char *p = path; *p; p++) {
    if (*p == '\'')
      fputs("''", f);
    else
      fputc(*p, f);
  }
  fprintf(f, "'\nset title 'memport-bench: one-way latency (p50) by message size'\n");
  fprintf(f, "set logscale xy\nset format x '10^{%%L}'\nset format y '10^{%%L}'\nset xlabel 'message size (bytes)'\nset ylabel 'one-way latency p50 (us)'\n");
  fprintf(f, "set grid\nset key left top\n");
  size_t series = 0;
  for (size_t i = 0; i < nmethods; i++) {
    fprintf(f, "$d%zu << EOD\n", i);
    for (size_t k = 0; k < cfg.nsizes; k++) {
      const struct result *r = lat_result(&methods[i], cfg.sizes[k]);
      if (r && r->p50 > 0) fprintf(f, "%zu %.4f %.4f\n", r->bytes, r->p50, r->p98);
    }
    fprintf(f, "EOD\n");
  }
  fprintf(f, "plot ");
  for (size_t i = 0; i < nmethods; i++) {
    bool any = false;
    for (size_t k = 0; k < cfg.nsizes; k++) any = any || lat_result(&methods[i], cfg.sizes[k]) != NULL;
    if (!any) continue;
    fprintf(f, "%s$d%zu using 1:2 with linespoints title '%s'", series++ ? ", " : "", i, methods[i].label);
  }
  fprintf(f, "\n");
  if (fclose(f) != 0) {
    unlink(script);
    return -1;
  }
  char *argv[] = {(char *)"gnuplot", script, NULL};
  int rc = run_quiet(argv);
  unlink(script);
  if (rc != 0) {
    printf("\nPlot: gnuplot failed (status %d); %s may be incomplete\n", rc, path);
    return -1;
  }
  printf("\nPlot: %s written with gnuplot's %s terminal (%s)\n", path, terms[chosen][0],
         chosen <= 1 ? "PNG" : chosen == 2 ? "SVG, no PNG terminal available" : "text, no PNG or SVG terminal available");
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Command line.                                                                               */

static void usage(FILE *out) {
  fprintf(out,
          "Usage: memport-bench [OPTIONS]\n"
          "Measure memport against pipes and unix sockets on this machine, and the machine's limits.\n"
          "The table goes to stdout, progress to stderr. A default run takes under a minute.\n"
          "\n"
          "  --quick            a short run (200 messages per size, 5 from 1 MiB, small stream) for CI\n"
          "  --sizes LIST       message sizes in bytes, comma-separated (suffixes k, m: KiB, MiB);\n"
          "                     default: the seed's 100,200,500,1024,...,9216,1048576,5242880,7340032\n"
          "  --messages N       timed messages per size (default 2000)\n"
          "  --big-messages N   timed messages per size from 1 MiB on the copying paths (default 100)\n"
          "  --modes LIST       channel wait policies for the table: block,adaptive,spin (default block,adaptive)\n"
          "  --only LIST        run only these parts: table,limits,stream,syscheck,rss (default: all)\n"
          "  --syscheck         same as --only syscheck\n"
          "  --stream-mib N     MiB streamed through the ring per wait policy (default 1024)\n"
          "  --stream-ring N    ring capacity in KiB for the stream (default 1024)\n"
          "  --csv FILE         write every figure as CSV: method,mode,bytes,messages,p50_us,p98_us,gbps\n"
          "  --plot FILE        draw latency against size (log-log) with gnuplot (PNG with pngcairo or png,\n"
          "                     else SVG, else text); without gnuplot a notice, not a failure\n"
          "  --placement MODE   auto (default): blocking paths on one CPU, spinning ones on two; same: every\n"
          "                     path on one CPU; split: every path on two CPUs\n"
          "  --no-pin           do not pin the processes at all (the scheduler places them)\n"
          "  -v, --verbose      details on stderr (the mappings the resident-memory figure counts)\n"
          "  -h, --help         this text\n"
          "\n"
          "Method. Every latency figure is one-way: the sender writes CLOCK_MONOTONIC into the message header\n"
          "just before the send call; the receiver reads the clock after the receive call returned and it\n"
          "checked the header and the marks in the middle and at the end of the payload. The receiver then\n"
          "compares the whole payload with the expected pattern (outside the timing) and acknowledges with\n"
          "8 bytes over the same path, so exactly one message is in flight. The two processes (fork) are\n"
          "pinned (see --placement).\n"
          "  pipe       write()/read() of the whole message on a pipe, ack on a second pipe\n"
          "  unix       SOCK_STREAM socketpair, write()/read() of the whole message\n"
          "  port       memport_msg_set_bytes + memport_port_send / memport_port_recv (<= MEMPORT_MSG_MAX_BYTES)\n"
          "  ring       memport_chan_send (copy into the ring) / memport_chan_recv in place + release; the\n"
          "             ring is large enough for every size and wrapped twice before the timing starts\n"
          "  zerocopy   memport_chan_alloc, payload written in place, timed from memport_chan_send_buf to\n"
          "             memport_chan_recv (a read-only view of the same pages) + release; each pool buffer\n"
          "             is written and compared in full once, header and marks on every message\n"
          "  futex      raw futex ping-pong on one shared cache line (FUTEX_WAIT / FUTEX_WAKE)\n"
          "  spin       busy-poll ping-pong on one shared cache line\n"
          "  memcpy     one process, large buffers, median of several copies\n"
          "  stream     64 KiB records, memport_ring_write in one process, memport_ring_read in the other\n"
          "\n"
          "Targets: the ratios the issue names, PASS/MISS from this run's figures (reporting only). The two\n"
          "latency ratios (channel / futex, channel / spin at 100 B) come from %d back-to-back rounds of\n"
          "baseline then channel, median ratio: the host moves this machine's CPUs around between runs.\n"
          "Steady state (--syscheck, Linux): two processes run a channel ping-pong of 100 B messages in spin\n"
          "mode; after 1000 warm-up round trips the parent attaches to both with ptrace (PTRACE_SEIZE +\n"
          "PTRACE_SYSCALL) and counts every system call entry between two flags in shared memory; heap\n"
          "allocations are counted by malloc/calloc/realloc/posix_memalign/aligned_alloc definitions in this\n"
          "program that forward to glibc (libmemport's calls bind to them; not in sanitizer builds, where\n"
          "the counts read 0 by construction). Blocking mode is shown for contrast (it sleeps in futex).\n"
          "Resident memory (Linux): a channel is opened and both rings exercised over 8 wraps; the\n"
          "mappings added since before the open are read from /proc/self/smaps, each shared memory object\n"
          "counted once by mincore (a mirrored ring counts once), anonymous private mappings (heap,\n"
          "malloc'd memory) by their Rss growth; library code and data pages are not counted;\n"
          "objects larger than the ring are the pool and reported apart.\n",
          PAIR_ROUNDS);
}

static size_t parse_size(const char *s, bool *ok) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s) {
    *ok = false;
    return 0;
  }
  if (*end == 'k' || *end == 'K') {
    v *= 1024;
    end++;
  } else if (*end == 'm' || *end == 'M') {
    v *= 1024 * 1024;
    end++;
  }
  if (*end != 0 && *end != ',') *ok = false;
  return (size_t)v;
}

static bool parse_list(const char *arg, bool (*item)(const char *tok, size_t len)) {
  const char *p = arg;
  while (*p) {
    const char *e = strchr(p, ',');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len > 0 && !item(p, len)) return false;
    p += len;
    if (*p == ',') p++;
  }
  return true;
}

static bool size_item(const char *tok, size_t len) {
  char buf[32];
  bool ok = true;
  if (len >= sizeof buf || cfg.nsizes >= MAX_SIZES) return false;
  memcpy(buf, tok, len);
  buf[len] = 0;
  size_t v = parse_size(buf, &ok);
  if (!ok || v < MIN_BYTES || v > ((size_t)1 << 30)) return false;
  cfg.sizes[cfg.nsizes++] = v;
  return true;
}

static bool mode_item(const char *tok, size_t len) {
  int m = -1;
  if (len == 5 && strncmp(tok, "block", 5) == 0) m = MEMPORT_WAIT_BLOCK;
  if (len == 4 && strncmp(tok, "spin", 4) == 0) m = MEMPORT_WAIT_SPIN;
  if (len == 8 && strncmp(tok, "adaptive", 8) == 0) m = MEMPORT_WAIT_ADAPTIVE;
  if (m < 0 || cfg.nmodes >= MAX_MODES) return false;
  for (size_t i = 0; i < cfg.nmodes; i++)
    if (cfg.modes[i] == m) return true;
  cfg.modes[cfg.nmodes++] = m;
  return true;
}

static bool part_item(const char *tok, size_t len) {
  static const struct {
    const char *name;
    unsigned bit;
  } parts[] = {{"table", P_TABLE}, {"limits", P_LIMITS}, {"stream", P_STREAM}, {"syscheck", P_SYSCHECK}, {"rss", P_RSS}};
  for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
    if (strlen(parts[i].name) == len && strncmp(parts[i].name, tok, len) == 0) {
      cfg.parts |= parts[i].bit;
      return true;
    }
  return false;
}

static bool parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *out) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno || end == s || *end || v < min || v > max) return false;
  *out = v;
  return true;
}

static void print_header(void) {
  struct utsname u;
  char cpu[128] = "unknown CPU";
#ifdef __linux__
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (f) {
    char line[256];
    while (fgets(line, sizeof line, f)) {
      if (strncmp(line, "model name", 10) == 0) {
        char *c = strchr(line, ':');
        if (c) {
          c++;
          while (*c == ' ') c++;
          c[strcspn(c, "\n")] = 0;
          snprintf(cpu, sizeof cpu, "%s", c);
        }
        break;
      }
    }
    fclose(f);
  }
#endif
  printf("memport-bench %s on ", memport_version_string());
  if (uname(&u) == 0)
    printf("%s %s %s", u.sysname, u.release, u.machine);
  printf(", %d CPUs (%s)\n", online_cpus(), cpu);
  if (cpus[0] >= 0 && cfg.placement == PLACE_AUTO)
    printf("Placement (sched_setaffinity): blocking paths (pipe, unix, port, channel block, futex, stream block) run\n"
           "both processes on CPU %d, where a hand-off is one context switch; spinning paths (channel adaptive/spin,\n"
           "spin ping-pong, stream adaptive/spin) run them on CPUs %d and %d. --placement split|same to change.\n",
           cpus[0], cpus[0], cpus[1]);
  else if (cpus[0] >= 0)
    printf("Placement (sched_setaffinity, --placement): every path runs %s\n",
           cfg.placement == PLACE_SAME ? "both processes on one CPU" : "sender/producer and receiver/consumer on two CPUs");
  else
    printf("Processes not pinned (%s)\n",
#ifdef __linux__
           cfg.pin ? "fewer than two CPUs allowed" : "--no-pin"
#else
           "no CPU affinity on this platform"
#endif
    );
  printf("One-way latency = receiver's CLOCK_MONOTONIC after receive and header/mark check minus the\n"
         "sender's just before the send call (shared clock), one message in flight; see -h for details.\n");
  fflush(stdout);
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"quick", no_argument, NULL, 'q'},       {"sizes", required_argument, NULL, 's'},
      {"messages", required_argument, NULL, 'n'}, {"big-messages", required_argument, NULL, 'N'},
      {"modes", required_argument, NULL, 'm'}, {"only", required_argument, NULL, 'o'},
      {"syscheck", no_argument, NULL, 'S'},     {"stream-mib", required_argument, NULL, 'B'},
      {"stream-ring", required_argument, NULL, 'R'}, {"csv", required_argument, NULL, 'c'},
      {"plot", required_argument, NULL, 'p'},   {"no-pin", no_argument, NULL, 'P'},
      {"verbose", no_argument, NULL, 'v'},     {"placement", required_argument, NULL, 'L'},
      {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
  };
  memset(&cfg, 0, sizeof cfg);
  cfg.pin = true;
  long messages = -1, big = -1, stream_mib = -1, stream_ring_kib = -1;
  int opt;
  while ((opt = getopt_long(argc, argv, "hv", longopts, NULL)) != -1) {
    unsigned long v;
    switch (opt) {
    case 'q': cfg.quick = true; break;
    case 's':
      cfg.nsizes = 0;
      if (!parse_list(optarg, size_item) || cfg.nsizes == 0) {
        fprintf(stderr, "memport-bench: --sizes: a comma-separated list of sizes from %d bytes to 1 GiB (at most %d)\n",
                MIN_BYTES, MAX_SIZES);
        return 2;
      }
      break;
    case 'n':
    case 'N':
      if (!parse_uint(optarg, 1, 10000000, &v)) {
        fprintf(stderr, "memport-bench: --%s: a number from 1 to 10000000\n", opt == 'n' ? "messages" : "big-messages");
        return 2;
      }
      if (opt == 'n')
        messages = (long)v;
      else
        big = (long)v;
      break;
    case 'm':
      cfg.nmodes = 0;
      if (!parse_list(optarg, mode_item) || cfg.nmodes == 0) {
        fprintf(stderr, "memport-bench: --modes: a list of block, adaptive, spin\n");
        return 2;
      }
      break;
    case 'o':
      if (!parse_list(optarg, part_item) || cfg.parts == 0) {
        fprintf(stderr, "memport-bench: --only: a list of table, limits, stream, syscheck, rss\n");
        return 2;
      }
      break;
    case 'S': cfg.parts |= P_SYSCHECK; break;
    case 'B':
    case 'R':
      if (!parse_uint(optarg, 1, 1 << 20, &v)) {
        fprintf(stderr, "memport-bench: --%s: a number from 1 to 1048576\n", opt == 'B' ? "stream-mib" : "stream-ring");
        return 2;
      }
      if (opt == 'B')
        stream_mib = (long)v;
      else
        stream_ring_kib = (long)v;
      break;
    case 'c': cfg.csv = optarg; break;
    case 'p': cfg.plot = optarg; break;
    case 'P': cfg.pin = false; break;
    case 'v': cfg.verbose = true; break;
    case 'L':
      if (strcmp(optarg, "auto") == 0)
        cfg.placement = PLACE_AUTO;
      else if (strcmp(optarg, "same") == 0)
        cfg.placement = PLACE_SAME;
      else if (strcmp(optarg, "split") == 0)
        cfg.placement = PLACE_SPLIT;
      else {
        fprintf(stderr, "memport-bench: --placement: auto, same or split\n");
        return 2;
      }
      break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "memport-bench: unexpected argument '%s' (see -h)\n", argv[optind]);
    return 2;
  }
  if (cfg.nsizes == 0) {
    memcpy(cfg.sizes, default_sizes, sizeof default_sizes);
    cfg.nsizes = sizeof default_sizes / sizeof default_sizes[0];
  }
  /* ascending, without repeats: the table and the plot read them in order */
  for (size_t i = 1; i < cfg.nsizes; i++)
    for (size_t j = i; j > 0 && cfg.sizes[j - 1] > cfg.sizes[j]; j--) {
      size_t t = cfg.sizes[j];
      cfg.sizes[j] = cfg.sizes[j - 1];
      cfg.sizes[j - 1] = t;
    }
  size_t uniq = 0;
  for (size_t i = 0; i < cfg.nsizes; i++)
    if (uniq == 0 || cfg.sizes[uniq - 1] != cfg.sizes[i]) cfg.sizes[uniq++] = cfg.sizes[i];
  cfg.nsizes = uniq;
  if (cfg.nmodes == 0) {
    cfg.modes[cfg.nmodes++] = MEMPORT_WAIT_BLOCK;
    cfg.modes[cfg.nmodes++] = MEMPORT_WAIT_ADAPTIVE;
  }
  if (cfg.parts == 0) cfg.parts = P_TABLE | P_LIMITS | P_STREAM | P_SYSCHECK | P_RSS;
  cfg.messages = cfg.quick ? 200 : 2000;
  cfg.big_messages = cfg.quick ? 5 : 100;
  cfg.warmup = cfg.quick ? 20 : 100;
  cfg.big_warmup = cfg.quick ? 2 : 8; /* copying paths; zero-copy warms up with the full count */
  cfg.base_messages = cfg.quick ? 2000 : 5000;
  cfg.memcpy_bytes = (cfg.quick ? 32 : 128) * MIB;
  cfg.memcpy_reps = cfg.quick ? 3 : 6;
  cfg.stream_bytes = (uint64_t)(cfg.quick ? 64 : 1024) * MIB;
  cfg.stream_ring = MIB;
  cfg.sys_messages = cfg.quick ? 2000 : 10000;
  cfg.rss_ring = 256 * KIB;
  if (messages > 0) cfg.messages = (unsigned)messages;
  if (big > 0) cfg.big_messages = (unsigned)big;
  else if (messages > 0 && cfg.messages < cfg.big_messages) cfg.big_messages = cfg.messages;
  if (stream_mib > 0) cfg.stream_bytes = (uint64_t)stream_mib * MIB;
  if (stream_ring_kib > 0) cfg.stream_ring = (size_t)stream_ring_kib * KIB;

  signal(SIGPIPE, SIG_IGN);
  bench_start = now_ns();
  save_affinity();
  choose_cpus();
  build_methods();
  print_header();

  /* the baselines run next to what the targets compare them with: futex and spin just before
   * the channel, memcpy just before the stream */
  if (cfg.parts & P_TABLE)
    for (size_t i = 0; i < nmethods; i++)
      if (methods[i].kind < LK_RING) run_latency(&methods[i]);
  if (cfg.parts & P_LIMITS) {
    run_pingpong(true, false);
    if (cpus[0] >= 0 && cfg.placement != PLACE_SPLIT) run_pingpong(true, true);
    run_pingpong(false, false);
  }
  if (cfg.parts & P_TABLE)
    for (size_t i = 0; i < nmethods; i++)
      if (methods[i].kind >= LK_RING) run_latency(&methods[i]);
  if ((cfg.parts & P_TABLE) && (cfg.parts & P_LIMITS)) {
    run_pair(&pair_block, MEMPORT_WAIT_BLOCK);
    run_pair(&pair_adaptive, MEMPORT_WAIT_ADAPTIVE);
  }
  if (cfg.parts & P_LIMITS) run_memcpy();
  if (cfg.parts & P_STREAM) {
    run_stream(MEMPORT_WAIT_BLOCK);
    run_stream(MEMPORT_WAIT_ADAPTIVE);
    run_stream(MEMPORT_WAIT_SPIN);
  }
  if (cfg.parts & P_SYSCHECK) run_syscheck();
  if (cfg.parts & P_RSS) run_rss();

  if (cfg.parts & P_TABLE) print_table();
  if (cfg.parts & (P_LIMITS | P_STREAM)) print_limits();
  print_targets();
  int rc = 0;
  if (cfg.csv && write_csv(cfg.csv) < 0) rc = 1;
  if (cfg.plot && write_plot(cfg.plot) < 0) rc = 1;
  if (bench_failures) {
    printf("\n%u measurement(s) FAILED (see the progress output on stderr)\n", bench_failures);
    rc = 1;
  }
  progress("finished\n");
  free(results);
  return rc;
}
