/* SPDX-License-Identifier: MIT */
/* lat.c: memport-bench's latency driver: forks the receiver, runs the priming, warm-up and timed messages of
 * every size through one method family (lat_*.c) and adds a p50/p98 row per size. */
#include "lat.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

int ctx_fail(struct lat_ctx *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->err, sizeof c->err, fmt, ap);
  va_end(ap);
  return -1;
}

static const struct lat_ops *ops_of(const struct lat_ctx *c) {
  switch (c->m->kind) {
  case LK_PIPE:
  case LK_UNIX: return &lat_fd_ops;
  case LK_PORT: return &lat_port_ops;
  case LK_RING:
  case LK_ZC: break;
  }
  return &lat_chan_ops;
}

static int lat_open(struct lat_ctx *c) { return ops_of(c)->open(c); }
static int lat_side(struct lat_ctx *c) { return ops_of(c)->side(c); }
static void lat_close(struct lat_ctx *c) { ops_of(c)->close(c); }
static int lat_recv(struct lat_ctx *c, size_t len, const unsigned char **data) { return ops_of(c)->recv(c, len, data); }
static int lat_release(struct lat_ctx *c) { return ops_of(c)->release(c); }
static int lat_ack(struct lat_ctx *c, uint64_t seq) { return ops_of(c)->ack(c, seq); }
static int lat_send(struct lat_ctx *c, size_t len, uint64_t seq) { return ops_of(c)->send(c, len, seq); }
static int lat_wait_ack(struct lat_ctx *c, uint64_t seq) { return ops_of(c)->wait_ack(c, seq); }

size_t method_limit(const struct lat_method *m) {
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
void run_latency(const struct lat_method *m) {
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

