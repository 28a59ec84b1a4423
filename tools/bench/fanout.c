/* SPDX-License-Identifier: MIT */
/* fanout.c: memport-bench's fan-out rows: one publisher, 1 to 8 subscriber processes, through a topic (zero-copy
 * loan + publish) and, beside it, through one channel per subscriber (the message copied N times); latency until
 * the last subscriber has the message, and the throughput of 8 MiB messages. */
#include "bench.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

/*
 * Method. The parent is the publisher; each subscriber is a forked process. One session per (method, N): the
 * subscribers connect once, then every phase runs in the order both sides know from the configuration:
 * the 8 MiB throughput first (which also touches every pool buffer and wraps every channel ring several times,
 * so no timed message pays a first-touch page fault), then the latency of each size.
 *
 *   topic       memport_pub_loan, the header and the marks written in place (the payload was produced once
 *               per pool buffer), memport_pub_publish; each subscriber memport_sub_recv (a read-only view of
 *               the publisher's pages; 100 B travels inline in each subscriber's lane, by the topic's design),
 *               checks header and marks, memport_sub_release.
 *   copyfanout  the same message copied with memport_chan_send into N channels (one per subscriber, ring
 *               large enough for 8 MiB), one after the other; each subscriber memport_chan_recv in place,
 *               checks, memport_chan_release. This is what a user without topics writes.
 *
 * Latency ("until the LAST subscriber has the message"): one message in flight. The publisher's clock goes
 * into the header just before the publish (topic) or the first send (copy); each subscriber, once it has the
 * message and checked header and marks, reads the clock and writes its one-way time into its own cache line
 * of a shared mapping, then (after release) increments a shared counter; the subscriber that completes the
 * count posts one semaphore, on which the publisher sleeps. The sample is the largest of the N one-way
 * times. So the measurement adds one atomic add per subscriber and one semaphore post per message, all
 * after the clock was read: nothing on the measured path, and no extra wake-ups competing with the
 * subscribers still receiving (the publisher is not spinning and is woken once).
 *
 * Throughput: W warm-up messages of 8 MiB (every subscriber has them all before the clock starts), then n
 * published back to back (the topic: block policy, depth 8, 8 pool buffers; the channels: a 32 MiB ring
 * each, about three messages in flight per subscriber). The clock starts at the publisher before the first
 * of the n and stops when the last subscriber has the last message.
 * GB/s = n x 8 MiB / that time: the payload counted ONCE per message, whatever the number of subscribers.
 *
 * Every wait is MEMPORT_WAIT_BLOCK (mode "block"): with more subscribers than CPUs, spinning processes would
 * take the CPU from the very processes they wait for. Placement: the publisher on the first CPU, subscriber i
 * on the other CPU for even i, the first one for odd i (--placement same: all on the first CPU). On a 2-CPU
 * machine the 1->N latency therefore includes the subscribers queuing for a CPU: with N subscribers on 2 CPUs
 * the last one runs after about N/2 others on its CPU, each a wake-up and a context switch. The ratios
 * between N and between methods on the same machine are what compares; the absolute 1->8 figure is not
 * what a machine with 9 CPUs would show.
 */

#define FAN_MAX_SUBS 8
#define FAN_BIG (8 * MIB) /* the throughput's message size and the pool buffer size */
#define FAN_DEPTH 8
#define FAN_BUFFERS 8

static const unsigned fan_subs[] = {1, 2, 4, 8};
static const size_t fan_sizes[] = {100, 64 * KIB, 8 * MIB};
#define FAN_NSUBS (sizeof fan_subs / sizeof fan_subs[0])
#define FAN_NSIZES (sizeof fan_sizes / sizeof fan_sizes[0])

enum fan_kind { FK_TOPIC, FK_COPY };

/* What a session runs, in this order (the subscribers, forked, follow the same plan): the throughput, then
 * the latency of each size. The paired rounds of the 1->8 target run the 8 MiB latency only. */
static bool plan_tput = true;
static const size_t *plan_sizes = fan_sizes;
static size_t plan_nsizes = FAN_NSIZES;

struct fan_slot {
  _Alignas(64) int64_t oneway; /* this subscriber's one-way time of the current message */
  int64_t t_end;               /* throughput: when it had the last message */
  char err[200];
};

struct fan_shared {
  _Alignas(64) _Atomic unsigned acked; /* subscribers that have the current message (or finished the stream) */
  _Alignas(64) _Atomic unsigned ready;  /* subscribers connected */
  _Atomic int failed;
  struct fan_slot sub[FAN_MAX_SUBS];
};

struct fan_ctx {
  enum fan_kind kind;
  unsigned nsubs;
  int index; /* subscriber's index, -1 in the publisher */
  char name[64];
  struct fan_shared *sh;
  memport_sem_t *done; /* posted by the subscriber that completes a message's count */
  /* topic */
  memport_pub_t *pub;
  memport_sub_t *sub;
  void *filled[FAN_BUFFERS * 2]; /* publisher: pool buffers that hold the pattern */
  size_t nfilled;
  /* copy */
  memport_port_t *pa[FAN_MAX_SUBS], *pb[FAN_MAX_SUBS];
  memport_chan_t *chan[FAN_MAX_SUBS]; /* publisher: one per subscriber; subscriber: chan[0] */
  unsigned char *src;                 /* publisher (copy): the message */
  unsigned char *ref;                 /* subscriber: the pattern */
  memport_buf_t rbuf;
  char err[200];
};

__attribute__((format(printf, 2, 3))) static int fan_fail(struct fan_ctx *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->err, sizeof c->err, fmt, ap);
  va_end(ap);
  return -1;
}

static const char *kind_name(enum fan_kind k) { return k == FK_TOPIC ? "topic" : "copyfanout"; }

static int fan_cpu(int index) {
  if (cpus[0] < 0) return -1;
  if (index < 0 || cfg.placement == PLACE_SAME) return cpus[0];
  return cpus[(index + 1) % 2];
}

/* The plan both sides follow. */
/* zero-copy messages cost microseconds, copied ones milliseconds: the topic streams more of them */
static unsigned tput_count(enum fan_kind k) {
  if (k == FK_TOPIC) return cfg.quick ? 400 : 4000;
  return cfg.quick ? 16 : 64;
}
static unsigned tput_warm(void) { return FAN_BUFFERS + 2; }
static unsigned lat_count(enum fan_kind k, size_t len) {
  /* copying 8 MiB N times costs milliseconds: fewer messages, as the copying paths of the table */
  if (k == FK_COPY && len >= MIB) return cfg.big_messages > 20 ? cfg.big_messages : 20;
  return cfg.messages;
}
static unsigned lat_warm(enum fan_kind k, size_t len) {
  if (k == FK_COPY && len >= MIB) return cfg.big_warmup;
  return cfg.warmup;
}

const struct result *find_fanout(const char *method, size_t bytes, unsigned subscribers, unsigned need) {
  for (size_t i = 0; i < nresults; i++) {
    const struct result *r = &results[i];
    if ((r->has & (R_SUBS | R_BYTES | need)) == (R_SUBS | R_BYTES | need) && strcmp(r->method, method) == 0 &&
        r->bytes == bytes && r->subscribers == subscribers)
      return r;
  }
  return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Publisher side.                                                                             */

static int pub_send(struct fan_ctx *c, size_t len, uint64_t seq) {
  int rc;
  if (c->kind == FK_TOPIC) {
    memport_buf_t b;
    if ((rc = memport_pub_loan(c->pub, len, &b, IO_TIMEOUT)) < 0)
      return fan_fail(c, "memport_pub_loan(%zu): %s", len, memport_strerror(rc));
    bool known = false;
    for (size_t i = 0; i < c->nfilled && !known; i++) known = c->filled[i] == b.data;
    if (!known) {
      /* produced in place once per pool buffer (its whole size: later sizes reuse it) */
      fill_pattern(b.data, FAN_BIG);
      if (c->nfilled < sizeof c->filled / sizeof c->filled[0]) c->filled[c->nfilled++] = b.data;
    }
    stamp(b.data, len, seq);
    if ((rc = memport_pub_publish(c->pub, &b, IO_TIMEOUT)) < 0) {
      memport_pub_discard(c->pub, &b);
      return fan_fail(c, "memport_pub_publish(%zu): %s", len, memport_strerror(rc));
    }
    return 0;
  }
  stamp(c->src, len, seq);
  for (unsigned i = 0; i < c->nsubs; i++)
    if ((rc = memport_chan_send(c->chan[i], c->src, len, 0, IO_TIMEOUT)) < 0)
      return fan_fail(c, "memport_chan_send(%zu) to subscriber %u: %s", len, i, memport_strerror(rc));
  return 0;
}

/* Sleep until every subscriber counted the current message (or finished the stream). */
static int pub_wait_all(struct fan_ctx *c) {
  int rc = memport_sem_wait(c->done, IO_TIMEOUT);
  if (atomic_load(&c->sh->failed)) return fan_fail(c, "a subscriber failed");
  if (rc < 0) return fan_fail(c, "waiting for the subscribers: %s", memport_strerror(rc));
  if (atomic_load(&c->sh->acked) != c->nsubs) return fan_fail(c, "woken with %u of %u", atomic_load(&c->sh->acked), c->nsubs);
  return 0;
}

static void reset_marks(struct fan_ctx *c, size_t len) {
  /* the previous size's marks would sit inside this size's payload */
  if (c->kind == FK_COPY) fill_pattern(c->src, len);
  else
    for (size_t i = 0; i < c->nfilled; i++) fill_pattern(c->filled[i], FAN_BIG);
}

/* Topic: produce the payload in every pool buffer now (loan them all, fill, give them back), so that no timed
 * message is the first one through its buffer. */
static int pub_prefill(struct fan_ctx *c) {
  memport_buf_t b[FAN_BUFFERS];
  unsigned n = 0;
  int rc = 0;
  for (; n < FAN_BUFFERS; n++) {
    if ((rc = memport_pub_loan(c->pub, FAN_BIG, &b[n], IO_TIMEOUT)) < 0) break;
    fill_pattern(b[n].data, FAN_BIG);
    c->filled[c->nfilled++] = b[n].data;
  }
  for (unsigned i = 0; i < n; i++) memport_pub_discard(c->pub, &b[i]);
  return rc < 0 ? fan_fail(c, "memport_pub_loan(%zu): %s", (size_t)FAN_BIG, memport_strerror(rc)) : 0;
}

static int pub_throughput(struct fan_ctx *c, uint64_t *seq, double *gbps) {
  unsigned w = tput_warm(), n = tput_count(c->kind);
  if (c->kind == FK_TOPIC && pub_prefill(c) < 0) return -1;
  atomic_store(&c->sh->acked, 0);
  for (unsigned i = 0; i < w; i++)
    if (pub_send(c, FAN_BIG, ++*seq) < 0) return -1;
  /* the warm-up (whose payloads the subscribers compare in full) is over everywhere before the clock starts */
  if (pub_wait_all(c) < 0) return -1;
  atomic_store(&c->sh->acked, 0);
  int64_t t0 = now_ns();
  for (unsigned i = 0; i < n; i++)
    if (pub_send(c, FAN_BIG, ++*seq) < 0) return -1;
  if (pub_wait_all(c) < 0) return -1;
  int64_t t1 = 0;
  for (unsigned i = 0; i < c->nsubs; i++)
    if (c->sh->sub[i].t_end > t1) t1 = c->sh->sub[i].t_end;
  *gbps = (double)n * (double)FAN_BIG / (double)(t1 - t0 > 0 ? t1 - t0 : 1);
  return 0;
}

static int pub_latency(struct fan_ctx *c, size_t len, uint64_t *seq, int64_t *samples) {
  unsigned w = lat_warm(c->kind, len), n = lat_count(c->kind, len);
  reset_marks(c, len);
  for (unsigned i = 0; i < w + n; i++) {
    atomic_store(&c->sh->acked, 0);
    if (pub_send(c, len, ++*seq) < 0 || pub_wait_all(c) < 0) return -1;
    int64_t worst = 0;
    for (unsigned k = 0; k < c->nsubs; k++)
      if (c->sh->sub[k].oneway > worst) worst = c->sh->sub[k].oneway;
    if (i >= w) samples[i - w] = worst;
  }
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Subscriber side.                                                                            */

static int sub_recv(struct fan_ctx *c, size_t len, const unsigned char **data) {
  int rc;
  if (c->kind == FK_TOPIC)
    rc = memport_sub_recv(c->sub, &c->rbuf, IO_TIMEOUT);
  else
    rc = memport_chan_recv(c->chan[0], &c->rbuf, IO_TIMEOUT);
  if (rc < 0) return fan_fail(c, "%s: %s", c->kind == FK_TOPIC ? "memport_sub_recv" : "memport_chan_recv", memport_strerror(rc));
  if (c->rbuf.len != len) return fan_fail(c, "got %zu bytes, expected %zu", c->rbuf.len, len);
  *data = c->rbuf.data;
  return 0;
}

static int sub_release(struct fan_ctx *c) {
  int rc = c->kind == FK_TOPIC ? memport_sub_release(c->sub, &c->rbuf) : memport_chan_release(c->chan[0], &c->rbuf);
  return rc < 0 ? fan_fail(c, "release: %s", memport_strerror(rc)) : 0;
}

/* Count this subscriber in; the last one wakes the publisher. */
static void sub_count(struct fan_ctx *c) {
  if (atomic_fetch_add(&c->sh->acked, 1) + 1 == c->nsubs) memport_sem_signal(c->done);
}

/* Receive w + n messages of len; latency: record and count each; else: the time of the last, counted once. */
static int sub_phase(struct fan_ctx *c, size_t len, unsigned w, unsigned n, bool latency, uint64_t *seq) {
  struct fan_slot *me = &c->sh->sub[c->index];
  for (unsigned i = 0; i < w + n; i++) {
    const unsigned char *data = NULL;
    uint64_t q = ++*seq;
    if (sub_recv(c, len, &data) < 0) return -1;
    int64_t ts = check_marks(data, len, q);
    int64_t t1 = now_ns();
    if (ts < 0) return fan_fail(c, "message %" PRIu64 " (%zu bytes): bad header or marks", q, len);
    if (latency) me->oneway = t1 - ts > 0 ? t1 - ts : 0;
    /* the whole payload is compared during the warm-up (outside the timing) */
    if (i < w && !check_body(data, c->ref, len))
      return fan_fail(c, "message %" PRIu64 " (%zu bytes): payload differs", q, len);
    if (sub_release(c) < 0) return -1;
    if (latency) {
      sub_count(c);
    } else if (i + 1 == w || i + 1 == w + n) { /* the end of the warm-up, the end of the stream */
      me->t_end = t1;
      sub_count(c);
    }
  }
  return 0;
}

static int sub_main(struct fan_ctx *c) {
  int rc;
  c->ref = malloc(FAN_BIG);
  if (c->ref == NULL) return fan_fail(c, "out of memory");
  fill_pattern(c->ref, FAN_BIG);
  if (c->kind == FK_TOPIC) {
    memport_topic_opts_t o;
    memport_topic_opts_init(&o);
    o.wait_policy = MEMPORT_WAIT_BLOCK;
    if ((rc = memport_sub_connect(&c->sub, c->name, &o, IO_TIMEOUT)) < 0)
      return fan_fail(c, "memport_sub_connect: %s", memport_strerror(rc));
  } else {
    memport_chan_opts_t o;
    memport_chan_opts_init(&o);
    o.wait_policy = MEMPORT_WAIT_BLOCK;
    o.ring_capacity = 4 * FAN_BIG;
    o.zerocopy_threshold = FAN_BIG;
    memport_port_t *p = c->pb[c->index];
    c->pb[c->index] = NULL;
    if ((rc = memport_chan_open(&c->chan[0], p, &o, IO_TIMEOUT)) < 0)
      return fan_fail(c, "memport_chan_open: %s", memport_strerror(rc));
  }
  atomic_fetch_add(&c->sh->ready, 1);
  uint64_t seq = 0;
  if (plan_tput && sub_phase(c, FAN_BIG, tput_warm(), tput_count(c->kind), false, &seq) < 0) return -1;
  for (size_t k = 0; k < plan_nsizes; k++)
    if (sub_phase(c, plan_sizes[k], lat_warm(c->kind, plan_sizes[k]), lat_count(c->kind, plan_sizes[k]), true, &seq) < 0)
      return -1;
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* One session: set up, fork the subscribers, run the phases, add the rows.                    */

static void fan_close(struct fan_ctx *c) {
  for (unsigned i = 0; i < FAN_MAX_SUBS; i++) {
    memport_chan_close(c->chan[i]);
    memport_port_close(c->pa[i]);
    memport_port_close(c->pb[i]);
    c->chan[i] = NULL;
    c->pa[i] = c->pb[i] = NULL;
  }
  memport_sub_close(c->sub);
  memport_pub_close(c->pub);
  c->sub = NULL;
  c->pub = NULL;
}

/* The publisher's setup once the subscribers run: the topic takes their joins, the channels their handshakes. */
static int pub_connect(struct fan_ctx *c, const pid_t *pids) {
  int64_t deadline = now_ns() + IO_TIMEOUT;
  if (c->kind == FK_COPY) {
    memport_chan_opts_t o;
    memport_chan_opts_init(&o);
    o.wait_policy = MEMPORT_WAIT_BLOCK;
    o.ring_capacity = 4 * FAN_BIG;
    o.zerocopy_threshold = FAN_BIG;
    for (unsigned i = 0; i < c->nsubs; i++) {
      memport_port_t *p = c->pa[i];
      c->pa[i] = NULL;
      int rc = memport_chan_open(&c->chan[i], p, &o, IO_TIMEOUT);
      if (rc < 0) return fan_fail(c, "memport_chan_open (subscriber %u): %s", i, memport_strerror(rc));
    }
  }
  for (;;) {
    int joined = c->kind == FK_TOPIC ? memport_pub_process(c->pub) : 0;
    if (joined == 0 && c->kind == FK_TOPIC) joined = memport_pub_subscribers(c->pub);
    if (joined < 0) return fan_fail(c, "memport_pub_process: %s", memport_strerror(joined));
    if ((c->kind == FK_COPY || (unsigned)joined == c->nsubs) && atomic_load(&c->sh->ready) == c->nsubs) return 0;
    if (atomic_load(&c->sh->failed)) return fan_fail(c, "a subscriber failed to connect");
    for (unsigned i = 0; i < c->nsubs; i++) {
      int st;
      if (waitpid(pids[i], &st, WNOHANG) == pids[i]) return fan_fail(c, "subscriber %u ended while connecting", i);
    }
    if (now_ns() > deadline) return fan_fail(c, "%u of %u subscribers connected in time", atomic_load(&c->sh->ready), c->nsubs);
    sleep_ns(200000);
  }
}

static void add_lat_row(enum fan_kind k, unsigned nsubs, size_t len, int64_t *v, unsigned n) {
  qsort(v, n, sizeof *v, cmp_i64);
  struct result *r = add_result(kind_name(k), "block");
  r->bytes = len;
  r->messages = n;
  r->p50 = pct_us(v, n, 50);
  r->p98 = pct_us(v, n, 98);
  r->subscribers = nsubs;
  r->has = R_BYTES | R_MSGS | R_LAT | R_SUBS;
}

/* One session; its rows go to the table, or (paired rounds: p50 not NULL) the p50 of its one size to *p50. */
static bool run_session(enum fan_kind kind, unsigned nsubs, double *p50) {
  progress("%s 1->%u:", kind_name(kind), nsubs);
  struct fan_ctx c;
  memset(&c, 0, sizeof c);
  c.kind = kind;
  c.nsubs = nsubs;
  c.index = -1;
  snprintf(c.name, sizeof c.name, "memport-bench-fan-%ld-%u", (long)getpid(), nsubs);
  struct fan_shared *sh = shared_alloc(sizeof *sh);
  unsigned maxn = cfg.messages > 20 ? cfg.messages : 20;
  if (cfg.big_messages > maxn) maxn = cfg.big_messages;
  int64_t *samples = malloc(maxn * sizeof *samples);
  int rc = sh && samples ? memport_sem_create(&c.done, 0, 0) : MEMPORT_ENOMEM;
  if (rc == 0) {
    memset(sh, 0, sizeof *sh);
    c.sh = sh;
  }
  if (rc == 0 && kind == FK_TOPIC) {
    memport_topic_opts_t o;
    memport_topic_opts_init(&o);
    o.wait_policy = MEMPORT_WAIT_BLOCK;
    o.depth = FAN_DEPTH;
    o.buffers = FAN_BUFFERS;
    o.buffer_size = FAN_BIG;
    o.max_subscribers = FAN_MAX_SUBS;
    rc = memport_pub_create(&c.pub, c.name, &o);
  }
  for (unsigned i = 0; rc == 0 && kind == FK_COPY && i < nsubs; i++) rc = memport_port_pair(&c.pa[i], &c.pb[i]);
  if (rc < 0) {
    progress_more(" n/a (setup: %s)\n", memport_strerror(rc));
    if (rc != MEMPORT_ENOTSUP) bench_failures++;
    fan_close(&c);
    memport_sem_close(c.done);
    free(samples);
    if (sh) munmap(sh, sizeof *sh);
    return false;
  }
  pid_t pids[FAN_MAX_SUBS];
  unsigned forked = 0;
  fflush(NULL);
  for (; forked < nsubs; forked++) {
    pid_t pid = fork();
    if (pid < 0) break;
    if (pid == 0) {
      alarm(300);
      pin_to(fan_cpu((int)forked));
      c.index = (int)forked;
      /* keep only this subscriber's end of its port pair */
      for (unsigned i = 0; i < FAN_MAX_SUBS; i++) {
        memport_port_close(c.pa[i]);
        c.pa[i] = NULL;
        if (i != forked) {
          memport_port_close(c.pb[i]);
          c.pb[i] = NULL;
        }
      }
      int r = sub_main(&c);
      if (r < 0) {
        snprintf(sh->sub[forked].err, sizeof sh->sub[forked].err, "%s", c.err);
        atomic_store(&sh->failed, 1);
        memport_sem_signal(c.done);
      }
      /* c.pub is the parent's: left alone (its memory goes with _exit) */
      memport_sub_close(c.sub);
      memport_chan_close(c.chan[0]);
      memport_port_close(c.pb[forked]);
      _exit(r < 0 ? 1 : 0);
    }
    pids[forked] = pid;
  }
  pin_to(fan_cpu(-1));
  for (unsigned i = 0; i < FAN_MAX_SUBS; i++) { /* the subscribers' ends are theirs */
    memport_port_close(c.pb[i]);
    c.pb[i] = NULL;
  }
  if (forked < nsubs) rc = fan_fail(&c, "fork: %s", strerror(errno));
  if (rc == 0 && kind == FK_COPY && (c.src = malloc(FAN_BIG)) == NULL) rc = fan_fail(&c, "out of memory");
  if (rc == 0) {
    if (c.src) fill_pattern(c.src, FAN_BIG);
    rc = pub_connect(&c, pids);
  }
  uint64_t seq = 0;
  double gbps = 0;
  bool have_tput = false;
  unsigned nlat = 0;
  if (rc == 0 && !plan_tput) {
    have_tput = true;
    if (kind == FK_TOPIC) rc = pub_prefill(&c);
  } else if (rc == 0 && pub_throughput(&c, &seq, &gbps) == 0) {
    have_tput = true;
    progress_more(" 8 MiB %.2f GB/s;", gbps);
    struct result *r = add_result(kind_name(kind), "block");
    r->bytes = FAN_BIG;
    r->messages = tput_count(kind);
    r->gbps = gbps;
    r->subscribers = nsubs;
    r->has = R_BYTES | R_MSGS | R_GBPS | R_SUBS;
  }
  for (size_t k = 0; rc == 0 && have_tput && k < plan_nsizes; k++) {
    unsigned n = lat_count(kind, plan_sizes[k]);
    if (pub_latency(&c, plan_sizes[k], &seq, samples) < 0) break;
    double v;
    if (p50) {
      qsort(samples, n, sizeof *samples, cmp_i64);
      v = *p50 = pct_us(samples, n, 50);
    } else {
      add_lat_row(kind, nsubs, plan_sizes[k], samples, n);
      v = results[nresults - 1].p50;
    }
    char lbl[24], a[16];
    size_label(plan_sizes[k], lbl, sizeof lbl);
    fmt_us(v, a, sizeof a);
    progress_more(" %s %s us", lbl, a);
    nlat++;
  }
  bool ok = rc == 0 && have_tput && nlat == plan_nsizes;
  if (!ok) {
    for (unsigned i = 0; i < forked; i++) kill(pids[i], SIGKILL);
  }
  fan_close(&c); /* orderly: the subscribers are done with everything */
  char why[200] = "";
  for (unsigned i = 0; i < forked; i++) {
    int st;
    wait_child(pids[i], &st);
    if (ok && (!WIFEXITED(st) || WEXITSTATUS(st) != 0)) {
      ok = false;
      describe_status(st, why, sizeof why);
    }
  }
  restore_affinity();
  if (ok) {
    progress_more(" done\n");
  } else {
    char sub_err[240] = "";
    for (unsigned i = 0; i < nsubs && !sub_err[0]; i++)
      if (sh->sub[i].err[0]) snprintf(sub_err, sizeof sub_err, "; subscriber %u: %s", i, sh->sub[i].err);
    progress_more(" FAILED: %s%s%s%s\n", c.err, sub_err, why[0] ? "; " : "", why);
    bench_failures++;
  }
  memport_sem_close(c.done);
  free(c.src);
  free(samples);
  munmap(sh, sizeof *sh);
  return ok;
}

struct pair_result pair_fanout, pair_fanout_floor;
double pair_fanout_excess;

/* The floor of the 1->8 target on this machine: the same rounds without the library. The parent (pinned as the
 * publisher) stores its clock and a sequence number, bumps one shared futex word and wakes every waiter with
 * one FUTEX_WAKE (what the topic does for its sleeping subscribers); each child (pinned as subscriber i)
 * sleeps on that word, and once woken reads the clock and counts itself in as fan_shared's subscribers do.
 * What remains is the machine: wake-ups, context switches and the queueing of N processes on 2 CPUs. */
struct raw_fan {
  _Alignas(64) _Atomic uint32_t ev;   /* the futex word */
  _Alignas(64) _Atomic uint64_t seq;  /* the message number; UINT64_MAX: stop */
  _Atomic int64_t ts;                 /* the parent's clock at the message */
  _Alignas(64) _Atomic unsigned acked;
  _Alignas(64) _Atomic uint32_t done; /* the last child's post */
  struct fan_slot sub[FAN_MAX_SUBS];
};

static bool raw_fan_p50(unsigned nsubs, unsigned n, double *p50) {
  struct raw_fan *r = shared_alloc(sizeof *r);
  int64_t *v = malloc(n * sizeof *v);
  if (r == NULL || v == NULL) {
    free(v);
    if (r) munmap(r, sizeof *r);
    return false;
  }
  memset(r, 0, sizeof *r);
  pid_t pids[FAN_MAX_SUBS];
  unsigned forked = 0;
  fflush(NULL);
  for (; forked < nsubs; forked++) {
    pid_t pid = fork();
    if (pid < 0) break;
    if (pid == 0) {
      alarm(60);
      pin_to(fan_cpu((int)forked));
      for (uint64_t mine = 0;;) {
        uint32_t seen = atomic_load(&r->ev);
        uint64_t q = atomic_load(&r->seq);
        if (q == UINT64_MAX) _exit(0);
        if (q == mine) {
          futex_wait_word(&r->ev, seen);
          continue;
        }
        int64_t t1 = now_ns();
        r->sub[forked].oneway = t1 - atomic_load(&r->ts);
        mine = q;
        if (atomic_fetch_add(&r->acked, 1) + 1 == nsubs) {
          atomic_store(&r->done, 1);
          futex_wake_word(&r->done);
        }
      }
    }
    pids[forked] = pid;
  }
  pin_to(fan_cpu(-1));
  bool ok = forked == nsubs;
  unsigned w = lat_warm(FK_TOPIC, FAN_BIG);
  int64_t deadline = now_ns() + IO_TIMEOUT;
  for (unsigned i = 0; ok && i < w + n; i++) {
    atomic_store(&r->acked, 0);
    atomic_store(&r->done, 0);
    atomic_store(&r->ts, now_ns());
    atomic_fetch_add(&r->seq, 1);
    atomic_fetch_add(&r->ev, 1);
    futex_wake_all_word(&r->ev);
    while (ok && atomic_load(&r->done) == 0) {
      futex_wait_word(&r->done, 0);
      ok = now_ns() < deadline;
    }
    int64_t worst = 0;
    for (unsigned k = 0; k < nsubs; k++)
      if (r->sub[k].oneway > worst) worst = r->sub[k].oneway;
    if (i >= w) v[i - w] = worst;
  }
  atomic_store(&r->seq, UINT64_MAX);
  atomic_fetch_add(&r->ev, 1);
  futex_wake_all_word(&r->ev);
  for (unsigned i = 0; i < forked; i++) {
    int st;
    if (!ok) kill(pids[i], SIGKILL);
    wait_child(pids[i], &st);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) ok = false;
  }
  restore_affinity();
  if (ok) {
    qsort(v, n, sizeof *v, cmp_i64);
    *p50 = pct_us(v, n, 50);
  }
  free(v);
  munmap(r, sizeof *r);
  return ok;
}

/* The 1->8 / 1->1 target: as the latency targets, from back-to-back rounds (1->1, then 1->8, 8 MiB latency
 * only), the median of the rounds' ratios: how the host schedules 9 processes on 2 CPUs changes from one
 * second to the next. */
static void run_fanout_pair(void) {
  static const size_t big[] = {8 * MIB};
  double ratio[FAN_PAIR_ROUNDS], one[FAN_PAIR_ROUNDS], eight[FAN_PAIR_ROUNDS];
  double fratio[FAN_PAIR_ROUNDS], fone[FAN_PAIR_ROUNDS], feight[FAN_PAIR_ROUNDS], excess[FAN_PAIR_ROUNDS];
  int n = 0, nf = 0, ne = 0;
  unsigned failures = bench_failures;
  progress("paired rounds for the fan-out target: topic 8 MiB 1->1, then 1->8, then the raw futex floor, %d times:",
           FAN_PAIR_ROUNDS);
  plan_tput = false;
  plan_sizes = big;
  plan_nsizes = 1;
  progress_off = true;
  for (int r = 0; r < FAN_PAIR_ROUNDS; r++) {
    double a = 0, b = 0;
    if (!run_session(FK_TOPIC, 1, &a) || !run_session(FK_TOPIC, 8, &b)) break;
    if (a <= 0) continue;
    one[n] = a;
    eight[n] = b;
    ratio[n] = b / a;
    n++;
    /* the floor, in the same round: no library, same placement, same count */
    double fa = 0, fb = 0;
    unsigned cnt = lat_count(FK_TOPIC, FAN_BIG);
    if (bench_have_futex && raw_fan_p50(1, cnt, &fa) && raw_fan_p50(8, cnt, &fb) && fa > 0) {
      fone[nf] = fa;
      feight[nf] = fb;
      fratio[nf] = fb / fa;
      excess[ne++] = ratio[n - 1] - fratio[nf]; /* what the library adds, this round */
      nf++;
    }
  }
  progress_off = false;
  plan_tput = true;
  plan_sizes = fan_sizes;
  plan_nsizes = FAN_NSIZES;
  if (n == 0 || bench_failures != failures) {
    progress_more(" FAILED\n");
    return;
  }
  pair_fanout.have = true;
  pair_fanout.rounds = n;
  pair_fanout.ratio = median_of(ratio, n);
  pair_fanout.chan_p50 = median_of(eight, n);
  pair_fanout.base_p50 = median_of(one, n);
  if (nf > 0) {
    pair_fanout_floor.have = true;
    pair_fanout_floor.rounds = nf;
    pair_fanout_floor.ratio = median_of(fratio, nf);
    pair_fanout_floor.chan_p50 = median_of(feight, nf);
    pair_fanout_floor.base_p50 = median_of(fone, nf);
    pair_fanout_excess = median_of(excess, ne);
    progress_more(" median ratio %.2f (raw futex floor %.2f)\n", pair_fanout.ratio, pair_fanout_floor.ratio);
  } else {
    progress_more(" median ratio %.2f\n", pair_fanout.ratio);
  }
}

void run_fanout(void) {
  for (size_t i = 0; i < FAN_NSUBS; i++) {
    run_session(FK_TOPIC, fan_subs[i], NULL);
    run_session(FK_COPY, fan_subs[i], NULL);
  }
  run_fanout_pair();
}

/* ------------------------------------------------------------------------------------------ */
/* The table.                                                                                  */

void print_fanout(void) {
  printf("\nFan-out: one publisher, N subscriber processes (mode block), latency until the LAST subscriber has the\n"
         "message, us p50/p98; topic = zero-copy loan + publish, copyfanout = memport_chan_send into N channels\n");
  printf("  %-9s %4s %15s %15s  %s\n", "bytes", "subs", "topic", "copyfanout", "copy/topic p50");
  for (size_t k = 0; k < FAN_NSIZES; k++)
    for (size_t i = 0; i < FAN_NSUBS; i++) {
      char lbl[24], cell[2][40], x[24] = "n/a";
      const struct result *r[2] = {find_fanout("topic", fan_sizes[k], fan_subs[i], R_LAT),
                                   find_fanout("copyfanout", fan_sizes[k], fan_subs[i], R_LAT)};
      for (int j = 0; j < 2; j++) {
        char a[16], b[16];
        snprintf(cell[j], sizeof cell[j], "n/a");
        if (!r[j]) continue;
        fmt_us(r[j]->p50, a, sizeof a);
        fmt_us(r[j]->p98, b, sizeof b);
        snprintf(cell[j], sizeof cell[j], "%s/%s", a, b);
      }
      if (r[0] && r[1] && r[0]->p50 > 0) snprintf(x, sizeof x, "%.1fx", r[1]->p50 / r[0]->p50);
      size_label(fan_sizes[k], lbl, sizeof lbl);
      printf("  %-9s %4u %15s %15s  %s\n", i == 0 ? lbl : "", fan_subs[i], cell[0], cell[1], x);
    }
  printf("  8 MiB throughput, GB/s of payload (each message counted once, not once per subscriber):\n");
  printf("  %-9s %4s %15s %15s  %s\n", "", "subs", "topic", "copyfanout", "topic/copy");
  for (size_t i = 0; i < FAN_NSUBS; i++) {
    const struct result *r[2] = {find_fanout("topic", FAN_BIG, fan_subs[i], R_GBPS),
                                 find_fanout("copyfanout", FAN_BIG, fan_subs[i], R_GBPS)};
    char cell[2][24], x[24] = "n/a";
    for (int j = 0; j < 2; j++) {
      if (r[j])
        snprintf(cell[j], sizeof cell[j], "%.2f", r[j]->gbps);
      else
        snprintf(cell[j], sizeof cell[j], "n/a");
    }
    if (r[0] && r[1] && r[1]->gbps > 0) snprintf(x, sizeof x, "%.1fx", r[0]->gbps / r[1]->gbps);
    printf("  %-9s %4u %15s %15s  %s\n", "", fan_subs[i], cell[0], cell[1], x);
  }
  printf("  Publisher on one CPU, subscribers alternating over %s; with more subscribers than CPUs the last\n"
         "  one waits for a CPU behind the others (see -h). 100 B travels inline in each subscriber's lane (the topic\n"
         "  copies small messages by design); %u messages per size, copyfanout 8 MiB %u; throughput %u (topic) and\n"
         "  %u (copyfanout) x 8 MiB.\n",
         cpus[0] < 0 ? "the CPUs (not pinned)" : cfg.placement == PLACE_SAME ? "the same CPU (--placement same)" : "both CPUs",
         cfg.messages, lat_count(FK_COPY, FAN_BIG), tput_count(FK_TOPIC), tput_count(FK_COPY));
}
