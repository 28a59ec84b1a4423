/* SPDX-License-Identifier: MIT */
/* bridge.c: memport-bench's bridge rows: a topic carried by memport-bridge over TCP loopback (publisher -> export
 * bridge -> 127.0.0.1 -> import bridge -> subscriber) beside a raw ZeroMQ PUSH/PULL pair, throughput and latency. */
#include "bench.h"

#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "memport_bridge.h"

/*
 * Method. Two "hosts" on one machine: the sending side pinned to the first CPU, the receiving side to the
 * second (--placement same: both on the first), every process blocking (no spinning: ZeroMQ's I/O threads need
 * the CPUs too).
 *
 *   bridge  the bench process publishes a topic (memport_pub_loan, header and marks written in place, the payload
 *           produced once per pool buffer, memport_pub_publish); a forked process runs an export bridge of that
 *           topic (memport_bridge_run; it lends each view to ZeroMQ, zero-copy) bound to tcp://127.0.0.1:*; a
 *           second forked process runs the import bridge (ZeroMQ PULL -> memport_pub_send into a local topic, the
 *           one copy); a third forked process subscribes to the local topic (memport_sub_recv, a view).
 *   zmq     no memport: the bench process zmq_send()s (ZeroMQ copies the message, as an application sending
 *           its own buffer does) on a PUSH socket connected to a forked process's PULL socket bound to
 *           tcp://127.0.0.1:*, which zmq_msg_recv()s.
 * Both use the same high-water mark (BR_HWM messages, the bridge's default) on each side's socket, and the same
 * malloc settings, memport-bridge's (run_bridge). Each receiver
 * checks the header (first 32 bytes) and the marks in the middle and the last 8 bytes of every message, the same
 * way in both methods; it compares whole payloads during the warm-ups only.
 *
 * Throughput: W warm-up messages (the receiver posts a memport semaphore after the last), then n messages sent
 * back to back; the clock starts at the sender before the first and stops when the receiver has checked the
 * last (the receiver's clock, written to shared memory, then a post of the semaphore): n x size / that time.
 * Latency: one message in flight: the sender's CLOCK_MONOTONIC goes into the header just before the publish /
 * zmq_send, the receiver reads the clock after its check, writes the one-way time to shared memory and posts the
 * semaphore the sender sleeps on (the reply path is the same in both methods and outside the measured path).
 *
 * Rounds: the host moves this VM's CPUs around, so both methods run in each round, back to back, several rounds;
 * the rows are the medians over the rounds, the targets the medians of the rounds' ratios.
 */

#define BR_HWM         16                  /* ZeroMQ high-water mark of each socket, both methods */
#define BR_BIG         (8 * MIB)           /* pool buffer size of both topics */
#define BR_SRC_BUFFERS (BR_HWM + 16 + 2)   /* the export lends up to hwm + 16 views; + 2 for the publisher */
#define BR_SRC_DEPTH   (BR_HWM + 16)
#define BR_DST_BUFFERS 8
#define BR_DST_DEPTH   6

enum br_kind { BK_BRIDGE, BK_ZMQ };

struct br_shared {
  _Atomic unsigned flags; /* BF_* */
  _Atomic int failed;
  char endpoint[256];
  int64_t oneway; /* latency: the receiver's one-way time of the current message */
  int64_t t_end;  /* throughput: when the receiver had checked the last message */
  char err[256];
};
#define BF_RECEIVER 1u /* the receiver is connected (bridge: subscribed to the local topic) */
#define BF_EXPORT   2u /* the export bound its socket: endpoint set */
#define BF_IMPORT   4u /* the import connected and created the local topic */

struct br_ctx {
  enum br_kind kind;
  struct br_shared *sh;
  memport_sem_t *done; /* posted by the receiver */
  char src_name[64], dst_name[64];
  /* sender */
  memport_pub_t *pub;
  void *zctx, *zsock;
  unsigned char *src; /* zmq: the message */
  /* receiver */
  memport_sub_t *sub;
  zmq_msg_t zmsg;
  memport_buf_t rbuf;
  unsigned char *ref;
  char err[256];
};

__attribute__((format(printf, 2, 3))) static int br_fail(struct br_ctx *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->err, sizeof c->err, fmt, ap);
  va_end(ap);
  return -1;
}

static const char *kind_name(enum br_kind k) { return k == BK_BRIDGE ? "bridge" : "zmq"; }

static int br_cpu(int side) {
  if (cpus[0] < 0) return -1;
  return cfg.placement == PLACE_SAME ? cpus[0] : cpus[side];
}

/* The plan both sides follow: the throughput of each size, then the latency of each size. */
static unsigned tput_count(size_t len) {
  if (len >= MIB) return cfg.quick ? 24 : 48;
  return cfg.quick ? 1500 : 4000;
}
static unsigned tput_warm(size_t len) { return len >= MIB ? 8 : 64; }
static unsigned lat_count(size_t len) {
  if (len >= MIB) return cfg.quick ? 10 : 30;
  return cfg.quick ? 100 : 500;
}
static unsigned lat_warm(size_t len) { return len >= MIB ? 3 : 10; }
static unsigned rounds(void) { return cfg.quick ? 3 : PAIR_ROUNDS; }

/* ------------------------------------------------------------------------------------------ */
/* Sender (the bench process).                                                                 */

static int send_one(struct br_ctx *c, size_t len, uint64_t seq) {
  if (c->kind == BK_BRIDGE) {
    memport_buf_t b;
    int rc = memport_pub_loan(c->pub, len, &b, IO_TIMEOUT);
    if (rc < 0) return br_fail(c, "memport_pub_loan(%zu): %s", len, memport_strerror(rc));
    stamp(b.data, len, seq);
    if ((rc = memport_pub_publish(c->pub, &b, IO_TIMEOUT)) < 0) {
      memport_pub_discard(c->pub, &b);
      return br_fail(c, "memport_pub_publish(%zu): %s", len, memport_strerror(rc));
    }
    return 0;
  }
  stamp(c->src, len, seq);
  if (zmq_send(c->zsock, c->src, len, 0) < 0) return br_fail(c, "zmq_send(%zu): %s", len, zmq_strerror(zmq_errno()));
  return 0;
}

static int wait_receiver(struct br_ctx *c) {
  int rc = memport_sem_wait(c->done, IO_TIMEOUT);
  if (atomic_load(&c->sh->failed)) return br_fail(c, "the receiver failed");
  if (rc < 0) return br_fail(c, "waiting for the receiver: %s", memport_strerror(rc));
  return 0;
}

static unsigned char *pattern; /* BR_BIG bytes of fill_pattern, made once; the receivers' reference too */

/* The bridge's source: every pool buffer loaned and given back, the pattern copied into it (first: whole, so
 * that no timed message is the first one through its buffer nor its pages' first touch; later: only where
 * an earlier phase stamped its header and marks, which would sit inside this phase's payload). */
static int prefill(struct br_ctx *c, bool whole) {
  memport_buf_t b[BR_SRC_BUFFERS];
  unsigned n = 0;
  int rc = 0;
  for (; n < BR_SRC_BUFFERS; n++) {
    if ((rc = memport_pub_loan(c->pub, BR_BIG, &b[n], IO_TIMEOUT)) < 0) break;
    if (whole)
      memcpy(b[n].data, pattern, BR_BIG);
    else
      for (size_t k = 0; k < BRIDGE_NSIZES; k++) unstamp(b[n].data, pattern, bridge_sizes[k]);
  }
  for (unsigned i = 0; i < n; i++) memport_pub_discard(c->pub, &b[i]);
  return rc < 0 ? br_fail(c, "memport_pub_loan(%zu): %s", (size_t)BR_BIG, memport_strerror(rc)) : 0;
}

static int reset_marks(struct br_ctx *c) {
  if (c->kind == BK_ZMQ) {
    for (size_t k = 0; k < BRIDGE_NSIZES; k++) unstamp(c->src, pattern, bridge_sizes[k]);
    return 0;
  }
  return prefill(c, false);
}

static int send_tput(struct br_ctx *c, size_t len, uint64_t *seq, double *gbps) {
  unsigned w = tput_warm(len), n = tput_count(len);
  if (reset_marks(c) < 0) return -1;
  for (unsigned i = 0; i < w; i++)
    if (send_one(c, len, ++*seq) < 0) return -1;
  if (wait_receiver(c) < 0) return -1;
  int64_t t0 = now_ns();
  for (unsigned i = 0; i < n; i++)
    if (send_one(c, len, ++*seq) < 0) return -1;
  if (wait_receiver(c) < 0) return -1;
  int64_t t1 = c->sh->t_end;
  *gbps = (double)n * (double)len / (double)(t1 - t0 > 0 ? t1 - t0 : 1);
  return 0;
}

static int send_lat(struct br_ctx *c, size_t len, uint64_t *seq, int64_t *samples) {
  unsigned w = lat_warm(len), n = lat_count(len);
  if (reset_marks(c) < 0) return -1;
  for (unsigned i = 0; i < w + n; i++) {
    if (send_one(c, len, ++*seq) < 0 || wait_receiver(c) < 0) return -1;
    if (i >= w) samples[i - w] = c->sh->oneway;
  }
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Receiver (forked).                                                                          */

static int recv_one(struct br_ctx *c, size_t len, const unsigned char **data) {
  size_t got;
  if (c->kind == BK_BRIDGE) {
    int rc = memport_sub_recv(c->sub, &c->rbuf, IO_TIMEOUT);
    if (rc < 0) return br_fail(c, "memport_sub_recv: %s", memport_strerror(rc));
    *data = c->rbuf.data;
    got = c->rbuf.len;
  } else {
    if (zmq_msg_recv(&c->zmsg, c->zsock, 0) < 0) return br_fail(c, "zmq_msg_recv: %s", zmq_strerror(zmq_errno()));
    *data = zmq_msg_data(&c->zmsg);
    got = zmq_msg_size(&c->zmsg);
  }
  if (got != len) return br_fail(c, "got %zu bytes, expected %zu", got, len);
  return 0;
}

static void recv_done(struct br_ctx *c) {
  if (c->kind == BK_BRIDGE) memport_sub_release(c->sub, &c->rbuf);
  /* zmq: the next zmq_msg_recv (or the close) lets the message go */
}

static int recv_phase(struct br_ctx *c, size_t len, unsigned w, unsigned n, bool latency, uint64_t *seq) {
  for (unsigned i = 0; i < w + n; i++) {
    const unsigned char *data = NULL;
    uint64_t q = ++*seq;
    if (recv_one(c, len, &data) < 0) return -1;
    int64_t ts = check_marks(data, len, q);
    int64_t t1 = now_ns();
    if (ts < 0) return br_fail(c, "message %" PRIu64 " (%zu bytes): bad header or marks", q, len);
    if (i < w && !check_body(data, c->ref, len))
      return br_fail(c, "message %" PRIu64 " (%zu bytes): payload differs", q, len);
    recv_done(c);
    if (latency) {
      c->sh->oneway = t1 - ts > 0 ? t1 - ts : 0;
      memport_sem_signal(c->done);
    } else if (i + 1 == w || i + 1 == w + n) {
      c->sh->t_end = t1;
      memport_sem_signal(c->done);
    }
  }
  return 0;
}

static int recv_connect(struct br_ctx *c) {
  int64_t deadline = now_ns() + IO_TIMEOUT;
  if (c->kind == BK_BRIDGE) {
    memport_topic_opts_t o;
    memport_topic_opts_init(&o);
    o.wait_policy = MEMPORT_WAIT_BLOCK;
    for (;;) { /* the import creates the topic once it runs */
      int rc = memport_sub_connect(&c->sub, c->dst_name, &o, 100000000);
      if (rc == 0) return 0;
      if (now_ns() > deadline) return br_fail(c, "memport_sub_connect(%s): %s", c->dst_name, memport_strerror(rc));
      sleep_ns(1000000);
    }
  }
  c->zctx = zmq_ctx_new();
  c->zsock = c->zctx ? zmq_socket(c->zctx, ZMQ_PULL) : NULL;
  int hwm = BR_HWM, tmo = (int)(IO_TIMEOUT / 1000000);
  size_t cap = sizeof c->sh->endpoint;
  if (c->zsock == NULL || zmq_setsockopt(c->zsock, ZMQ_RCVHWM, &hwm, sizeof hwm) < 0 ||
      zmq_setsockopt(c->zsock, ZMQ_RCVTIMEO, &tmo, sizeof tmo) < 0 || zmq_bind(c->zsock, "tcp://127.0.0.1:*") < 0 ||
      zmq_getsockopt(c->zsock, ZMQ_LAST_ENDPOINT, c->sh->endpoint, &cap) < 0)
    return br_fail(c, "ZeroMQ PULL socket: %s", zmq_strerror(zmq_errno()));
  zmq_msg_init(&c->zmsg);
  return 0;
}

static int recv_main(struct br_ctx *c) {
  c->ref = pattern;
  if (recv_connect(c) < 0) return -1;
  atomic_fetch_or(&c->sh->flags, BF_RECEIVER);
  uint64_t seq = 0;
  for (size_t k = 0; k < BRIDGE_NSIZES; k++)
    if (recv_phase(c, bridge_sizes[k], tput_warm(bridge_sizes[k]), tput_count(bridge_sizes[k]), false, &seq) < 0)
      return -1;
  for (size_t k = 0; k < BRIDGE_NSIZES; k++)
    if (recv_phase(c, bridge_sizes[k], lat_warm(bridge_sizes[k]), lat_count(bridge_sizes[k]), true, &seq) < 0) return -1;
  return 0;
}

static void recv_close(struct br_ctx *c) {
  memport_sub_close(c->sub);
  c->sub = NULL;
  if (c->zsock) {
    zmq_msg_close(&c->zmsg);
    int linger = 0;
    zmq_setsockopt(c->zsock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(c->zsock);
  }
  if (c->zctx) zmq_ctx_term(c->zctx);
  c->zsock = c->zctx = NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* The bridges (forked), as memport-bridge runs them: memport_bridge_run until SIGTERM.         */

static memport_bridge_t *running;

static void on_term(int sig) {
  (void)sig;
  if (running) memport_bridge_stop(running);
}

static void bridge_main(struct br_ctx *c, int direction) {
  struct br_shared *sh = c->sh;
  memport_bridge_opts_t o;
  memport_bridge_opts_init(&o);
  o.direction = direction;
  o.kind = MEMPORT_BRIDGE_TOPIC;
  o.hwm = BR_HWM;
  if (direction == MEMPORT_BRIDGE_EXPORT) {
    o.name = c->src_name;
    o.endpoint = "tcp://127.0.0.1:*";
  } else {
    int64_t deadline = now_ns() + IO_TIMEOUT;
    while (!(atomic_load(&sh->flags) & BF_EXPORT) && !atomic_load(&sh->failed)) {
      if (now_ns() > deadline) _exit(1);
      sleep_ns(200000);
    }
    o.name = c->dst_name;
    o.endpoint = sh->endpoint;
    o.topic.wait_policy = MEMPORT_WAIT_BLOCK;
    o.topic.buffer_size = BR_BIG;
    o.topic.buffers = BR_DST_BUFFERS;
    o.topic.depth = BR_DST_DEPTH;
    o.topic.max_subscribers = 4;
  }
  memport_bridge_t *b = NULL;
  int rc = memport_bridge_create(&b, &o);
  if (rc == 0 && direction == MEMPORT_BRIDGE_EXPORT) rc = memport_bridge_endpoint(b, sh->endpoint, sizeof sh->endpoint);
  if (rc < 0) {
    snprintf(sh->err, sizeof sh->err, "%s bridge: %s", direction == MEMPORT_BRIDGE_EXPORT ? "export" : "import",
             memport_strerror(rc));
    atomic_store(&sh->failed, 1);
    memport_sem_signal(c->done);
    _exit(1);
  }
  running = b;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, NULL);
  atomic_fetch_or(&sh->flags, direction == MEMPORT_BRIDGE_EXPORT ? BF_EXPORT : BF_IMPORT);
  rc = memport_bridge_run(b, MEMPORT_FOREVER);
  running = NULL;
  memport_bridge_close(b);
  _exit(rc < 0 ? 1 : 0);
}

/* ------------------------------------------------------------------------------------------ */
/* One session: set up, fork, run the plan.                                                    */

struct br_figures {
  double gbps[BRIDGE_NSIZES], p50[BRIDGE_NSIZES], p98[BRIDGE_NSIZES];
};

/* The sender's side of the set-up: everyone connected, or an error. */
static int send_connect(struct br_ctx *c, const pid_t *pids, unsigned npids) {
  int64_t deadline = now_ns() + IO_TIMEOUT;
  for (;;) {
    unsigned f = atomic_load(&c->sh->flags);
    if (c->kind == BK_BRIDGE) {
      int rc = memport_pub_process(c->pub); /* the export's join */
      if (rc < 0) return br_fail(c, "memport_pub_process: %s", memport_strerror(rc));
      if ((f & BF_RECEIVER) && memport_pub_subscribers(c->pub) == 1) return 0;
    } else if (f & BF_RECEIVER) {
      c->zctx = zmq_ctx_new(); /* after the fork: a ZeroMQ context does not survive one */
      c->zsock = c->zctx ? zmq_socket(c->zctx, ZMQ_PUSH) : NULL;
      int hwm = BR_HWM, tmo = (int)(IO_TIMEOUT / 1000000);
      if (c->zsock == NULL || zmq_setsockopt(c->zsock, ZMQ_SNDHWM, &hwm, sizeof hwm) < 0 ||
          zmq_setsockopt(c->zsock, ZMQ_SNDTIMEO, &tmo, sizeof tmo) < 0 || zmq_connect(c->zsock, c->sh->endpoint) < 0)
        return br_fail(c, "ZeroMQ PUSH socket: %s", zmq_strerror(zmq_errno()));
      return 0;
    }
    if (atomic_load(&c->sh->failed)) return br_fail(c, "a peer failed to set up: %s", c->sh->err);
    for (unsigned i = 0; i < npids; i++) {
      int st;
      if (waitpid(pids[i], &st, WNOHANG) == pids[i]) return br_fail(c, "a peer process ended while connecting");
    }
    if (now_ns() > deadline) return br_fail(c, "not connected in time (flags %#x)", f);
    sleep_ns(200000);
  }
}

static bool run_session(enum br_kind kind, struct br_figures *fig) {
  struct br_ctx c;
  memset(&c, 0, sizeof c);
  c.kind = kind;
  snprintf(c.src_name, sizeof c.src_name, "memport-bench-br-%ld-src", (long)getpid());
  snprintf(c.dst_name, sizeof c.dst_name, "memport-bench-br-%ld-dst", (long)getpid());
  struct br_shared *sh = shared_alloc(sizeof *sh);
  unsigned maxn = 0;
  for (size_t k = 0; k < BRIDGE_NSIZES; k++)
    if (lat_count(bridge_sizes[k]) > maxn) maxn = lat_count(bridge_sizes[k]);
  int64_t *samples = malloc(maxn * sizeof *samples);
  int rc = sh && samples ? memport_sem_create(&c.done, 0, 0) : MEMPORT_ENOMEM;
  if (rc == 0) {
    memset(sh, 0, sizeof *sh);
    c.sh = sh;
  }
  if (rc == 0 && kind == BK_BRIDGE) {
    memport_topic_opts_t o;
    memport_topic_opts_init(&o);
    o.wait_policy = MEMPORT_WAIT_BLOCK;
    o.depth = BR_SRC_DEPTH;
    o.buffers = BR_SRC_BUFFERS;
    o.buffer_size = BR_BIG;
    o.max_subscribers = 4;
    rc = memport_pub_create(&c.pub, c.src_name, &o);
  }
  if (rc == 0 && kind == BK_ZMQ && (c.src = malloc(BR_BIG)) == NULL) rc = MEMPORT_ENOMEM;
  if (rc < 0) {
    progress_more(" %s n/a (setup: %s)", kind_name(kind), memport_strerror(rc));
    bench_failures++;
    memport_pub_close(c.pub);
    memport_sem_close(c.done);
    free(samples);
    free(c.src);
    if (sh) munmap(sh, sizeof *sh);
    return false;
  }
  /* bridge: export (sending side), import, receiver (receiving side); zmq: the receiver */
  pid_t pids[3];
  unsigned nproc = kind == BK_BRIDGE ? 3 : 1, forked = 0;
  fflush(NULL);
  for (; forked < nproc; forked++) {
    pid_t pid = fork();
    if (pid < 0) break;
    if (pid == 0) {
      alarm(120);
      bool receiver = forked + 1 == nproc;
      pin_to(br_cpu(receiver || forked == 1 ? 1 : 0));
      if (c.pub) { /* the parent's: left alone, its memory goes with _exit */
        c.pub = NULL;
      }
      if (!receiver) bridge_main(&c, forked == 0 ? MEMPORT_BRIDGE_EXPORT : MEMPORT_BRIDGE_IMPORT);
      int r = recv_main(&c);
      if (r < 0) {
        snprintf(sh->err, sizeof sh->err, "%s", c.err);
        atomic_store(&sh->failed, 1);
        memport_sem_signal(c.done);
      }
      recv_close(&c);
      _exit(r < 0 ? 1 : 0);
    }
    pids[forked] = pid;
  }
  pin_to(br_cpu(0));
  if (forked < nproc) rc = br_fail(&c, "fork: %s", strerror(errno));
  if (rc == 0 && c.src) memcpy(c.src, pattern, BR_BIG);
  if (rc == 0 && c.pub) rc = prefill(&c, true);
  if (rc == 0) rc = send_connect(&c, pids, forked);
  uint64_t seq = 0;
  for (size_t k = 0; rc == 0 && k < BRIDGE_NSIZES; k++) rc = send_tput(&c, bridge_sizes[k], &seq, &fig->gbps[k]);
  for (size_t k = 0; rc == 0 && k < BRIDGE_NSIZES; k++) {
    size_t len = bridge_sizes[k];
    unsigned n = lat_count(len);
    rc = send_lat(&c, len, &seq, samples);
    if (rc == 0) {
      qsort(samples, n, sizeof *samples, cmp_i64);
      fig->p50[k] = pct_us(samples, n, 50);
      fig->p98[k] = pct_us(samples, n, 98);
    }
  }
  bool ok = rc == 0;
  char why[64] = "";
  /* the receiver first (it ends by itself), then the bridges (SIGTERM, as memport-bridge is stopped) */
  for (unsigned j = forked; j-- > 0;) {
    int st;
    if (!ok) kill(pids[j], SIGKILL);
    else if (j + 1 != nproc) kill(pids[j], SIGTERM);
    wait_child(pids[j], &st);
    if (ok && (!WIFEXITED(st) || WEXITSTATUS(st) != 0)) {
      ok = false;
      describe_status(st, why, sizeof why);
    }
  }
  restore_affinity();
  if (c.zsock) {
    int linger = 0;
    zmq_setsockopt(c.zsock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(c.zsock);
  }
  if (c.zctx) zmq_ctx_term(c.zctx);
  memport_pub_close(c.pub);
  if (!ok) {
    progress_more(" %s FAILED: %s%s%s%s%s", kind_name(kind), c.err, sh->err[0] ? "; peer: " : "", sh->err,
                  why[0] ? "; " : "", why);
    bench_failures++;
  }
  memport_sem_close(c.done);
  free(c.src);
  free(samples);
  munmap(sh, sizeof *sh);
  return ok;
}

void run_bridge(void) {
  unsigned nr = rounds();
  if (nr > PAIR_ROUNDS) nr = PAIR_ROUNDS;
  struct br_figures fig[2][PAIR_ROUNDS];
  double tr[BRIDGE_NSIZES][PAIR_ROUNDS], lr[BRIDGE_NSIZES][PAIR_ROUNDS];
  int n = 0;
  progress("bridge vs raw ZeroMQ over 127.0.0.1, 64 KiB and 8 MiB, %u paired rounds:", nr);
  if (pattern == NULL && (pattern = malloc(BR_BIG)) == NULL) {
    progress_more(" n/a (out of memory)\n");
    bench_failures++;
    return;
  }
  fill_pattern(pattern, BR_BIG);
  /* malloc as memport-bridge sets it (tools/memport-bridge.c malloc_setup), in this process and so in
   * every process forked from it, of both methods: ZeroMQ's per-message buffers are reused, not given
   * back to the kernel and faulted in again. The other rows allocate nothing per message. */
#if defined(M_TRIM_THRESHOLD) && defined(M_MMAP_THRESHOLD)
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 32 << 20);
#endif
  for (unsigned r = 0; r < nr; r++) {
    memset(&fig[0][n], 0, sizeof fig[0][n]);
    memset(&fig[1][n], 0, sizeof fig[1][n]);
    if (!run_session(BK_BRIDGE, &fig[0][n]) || !run_session(BK_ZMQ, &fig[1][n])) break;
    for (size_t k = 0; k < BRIDGE_NSIZES; k++) {
      tr[k][n] = fig[1][n].gbps[k] > 0 ? fig[0][n].gbps[k] / fig[1][n].gbps[k] : 0;
      lr[k][n] = fig[1][n].p50[k] > 0 ? fig[0][n].p50[k] / fig[1][n].p50[k] : 0;
    }
    progress_more(" [%.2f/%.2f GB/s %.0f/%.0f us]", fig[0][n].gbps[1], fig[1][n].gbps[1], fig[0][n].p50[0],
                  fig[1][n].p50[0]);
    n++;
  }
  if (n == 0) {
    progress_more(" FAILED\n");
    return;
  }
  /* the rows: each figure's median over the rounds */
  for (int m = 0; m < 2; m++)
    for (size_t k = 0; k < BRIDGE_NSIZES; k++) {
      double g[PAIR_ROUNDS], a[PAIR_ROUNDS], b[PAIR_ROUNDS];
      for (int i = 0; i < n; i++) {
        g[i] = fig[m][i].gbps[k];
        a[i] = fig[m][i].p50[k];
        b[i] = fig[m][i].p98[k];
      }
      struct result *t = add_result(kind_name((enum br_kind)m), "tcp");
      t->bytes = bridge_sizes[k];
      t->messages = tput_count(bridge_sizes[k]);
      t->gbps = median_of(g, n);
      t->has = R_BYTES | R_MSGS | R_GBPS;
      struct result *l = add_result(kind_name((enum br_kind)m), "tcp");
      l->bytes = bridge_sizes[k];
      l->messages = lat_count(bridge_sizes[k]);
      l->p50 = median_of(a, n);
      l->p98 = median_of(b, n);
      l->has = R_BYTES | R_MSGS | R_LAT;
    }
  pair_bridge.have = true;
  pair_bridge.rounds = n;
  for (size_t k = 0; k < BRIDGE_NSIZES; k++) {
    pair_bridge.tput_ratio[k] = median_of(tr[k], n);
    pair_bridge.p50_ratio[k] = median_of(lr[k], n);
  }
  progress_more(" done\n");
}

void print_bridge(void) {
  printf("\nBridge: a topic through memport-bridge (publisher -> export -> TCP 127.0.0.1 -> import -> subscriber)\n"
         "beside a raw ZeroMQ PUSH/PULL pair (zmq_send / zmq_msg_recv), medians of %d paired rounds\n",
         pair_bridge.have ? pair_bridge.rounds : 0);
  printf("  %-9s %15s %15s  %8s %19s %19s  %8s\n", "bytes", "bridge GB/s", "zmq GB/s", "ratio", "bridge p50/p98 us",
         "zmq p50/p98 us", "p50 x");
  for (size_t k = 0; k < BRIDGE_NSIZES; k++) {
    size_t len = bridge_sizes[k];
    const struct result *bt = find_result("bridge", "tcp", len, R_BYTES | R_GBPS), *zt = find_result("zmq", "tcp", len, R_BYTES | R_GBPS);
    const struct result *bl = find_result("bridge", "tcp", len, R_BYTES | R_LAT), *zl = find_result("zmq", "tcp", len, R_BYTES | R_LAT);
    char lbl[24], c[4][40], a[16], b[16];
    size_label(len, lbl, sizeof lbl);
    const struct result *t[2] = {bt, zt}, *l[2] = {bl, zl};
    for (int j = 0; j < 2; j++) {
      snprintf(c[j], sizeof c[j], "n/a");
      if (t[j]) snprintf(c[j], sizeof c[j], "%.2f", t[j]->gbps);
      snprintf(c[2 + j], sizeof c[2 + j], "n/a");
      if (l[j]) {
        fmt_us(l[j]->p50, a, sizeof a);
        fmt_us(l[j]->p98, b, sizeof b);
        snprintf(c[2 + j], sizeof c[2 + j], "%s/%s", a, b);
      }
    }
    char x[2][16] = {"n/a", "n/a"};
    if (pair_bridge.have) {
      snprintf(x[0], sizeof x[0], "%.2f", pair_bridge.tput_ratio[k]);
      snprintf(x[1], sizeof x[1], "%.2f", pair_bridge.p50_ratio[k]);
    }
    printf("  %-9s %15s %15s  %8s %19s %19s  %8s\n", lbl, c[0], c[1], x[0], c[2], c[3], x[1]);
  }
  printf("  Sending side (publisher + export bridge, or the zmq_send process) on %s, receiving side (import bridge +\n"
         "  subscriber, or the zmq_msg_recv process) on %s; ZeroMQ high-water mark %d on each socket; source topic\n"
         "  %d x 8 MiB buffers, imported topic %d x 8 MiB. Throughput: %u x 64 KiB, %u x 8 MiB per round; latency: %u x\n"
         "  64 KiB, %u x 8 MiB, one in flight, the receiver posting a semaphore back. Ratios: medians of the rounds' ratios.\n",
         cpus[0] < 0 ? "any CPU" : "the first CPU", cpus[0] < 0 ? "any CPU" : cfg.placement == PLACE_SAME ? "the same CPU" : "the second",
         BR_HWM, BR_SRC_BUFFERS, BR_DST_BUFFERS, tput_count(64 * KIB), tput_count(8 * MIB), lat_count(64 * KIB),
         lat_count(8 * MIB));
}
