/* SPDX-License-Identifier: MIT */
/* test_bridge.c: memport-bridge over TCP loopback: topics end to end, slow subscribers under block and drop-oldest, channels, options. */
#include "helpers.h"

#include <memport_bridge.h>

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#define MIB (1024u * 1024u)
#define HDR 16 /* each message: 8 bytes sequence number, 8 bytes checksum of the rest */

/* ------------------------------------------------------------------------------------------ */
/* Messages.                                                                                    */

static uint64_t xs_next(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

/* FNV-1a over 64-bit words (the tail byte by byte). */
static uint64_t checksum(const unsigned char *p, size_t len) {
  uint64_t h = 0xcbf29ce484222325ull;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    h = (h ^ w) * 0x100000001b3ull;
  }
  for (; i < len; i++)
    h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

/* Sizes of the topic tests: every 997th 8 MiB, every 101st 64 KiB..1 MiB, the rest 100 B..4 KiB. */
static size_t topic_len(uint64_t seq) {
  uint64_t r = seq * 0x9e3779b97f4a7c15ull;
  r ^= r >> 29;
  if (seq % 997 == 0)
    return 8 * MIB;
  if (seq % 101 == 0)
    return 64 * 1024 + (size_t)(r % (960 * 1024 + 1));
  return 100 + (size_t)(r % (4096 - 100 + 1));
}

static void make(unsigned char *p, size_t len, uint64_t seq) {
  uint64_t s = seq * 0x2545f4914f6cdd1dull + 1;
  size_t i = HDR;
  for (; i + 8 <= len; i += 8) {
    uint64_t w = xs_next(&s);
    memcpy(p + i, &w, 8);
  }
  for (; i < len; i++)
    p[i] = (unsigned char)xs_next(&s);
  uint64_t c = checksum(p + HDR, len - HDR);
  memcpy(p, &seq, 8);
  memcpy(p + 8, &c, 8);
}

/* 0 when p holds message `seq` of `len` bytes; 1 length, 2 number, 3 checksum. */
static int bad(const void *data, size_t len, size_t want_len, uint64_t seq) {
  const unsigned char *p = data;
  uint64_t s, c;
  if (len != want_len || len < HDR)
    return 1;
  memcpy(&s, p, 8);
  if (s != seq)
    return 2;
  memcpy(&c, p + 8, 8);
  return checksum(p + HDR, len - HDR) == c ? 0 : 3;
}

/* The sequence number a message says it has (0 if too short). */
static uint64_t seq_of(const void *data, size_t len) {
  uint64_t s = 0;
  if (len >= HDR)
    memcpy(&s, data, 8);
  return s;
}

/* ------------------------------------------------------------------------------------------ */
/* What the processes share (a MAP_SHARED page).                                                */

struct kid_report {
  _Atomic uint32_t joined;    /* subscribed / connected */
  _Atomic uint64_t received;  /* messages received */
  _Atomic uint64_t last;      /* the last sequence number */
  _Atomic uint64_t missed;    /* memport_sub_missed at the end */
  _Atomic uint32_t errors;    /* wrong messages */
  _Atomic uint64_t first_bad; /* seq expected at the first error, and the code */
  _Atomic int bad_code;
  _Atomic int end_rc;         /* what ended the receive loop */
  _Atomic uint32_t done;
};

struct shared {
  char ep[256];             /* the export bridge's endpoint */
  _Atomic uint32_t ep_ready;
  _Atomic int bridge_rc[2];  /* 0, or a bridge's create error */
  memport_bridge_stats_t st[2]; /* each bridge's stats, written as it ends */
  _Atomic uint32_t go;       /* the slow subscriber may start */
  _Atomic uint64_t published;
  struct kid_report kid[4];
};
static struct shared *g_sh;

static void shared_new(void) {
  g_sh = mmap(NULL, sizeof *g_sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  assert_true(g_sh != MAP_FAILED);
  memset(g_sh, 0, sizeof *g_sh);
}

static void shared_free(void) {
  munmap(g_sh, sizeof *g_sh);
  g_sh = NULL;
}

static unsigned scale(unsigned normal, unsigned valgrind) { return th_under_valgrind() ? valgrind : normal; }
static int64_t deadline_ns(void) { return (th_under_valgrind() ? 600 : 90) * SEC; }

/* ------------------------------------------------------------------------------------------ */
/* A bridge in its own process: run until SIGTERM, then close and report its stats.            */

struct bcfg {
  int slot; /* 0 export, 1 import */
  int direction, kind;
  char name[MEMPORT_NAME_MAX + 1];
  size_t buffer_size;
  unsigned depth, buffers;
  int overflow;
  int hwm;
  bool chan;
  memport_chan_opts_t chan_opts;
};

static memport_bridge_t *volatile g_br;
static void on_term(int sig) {
  (void)sig;
  if (g_br != NULL)
    memport_bridge_stop(g_br);
}

static int bridge_main(void *arg) {
  struct bcfg *c = arg;
  memport_bridge_opts_t o;
  memport_bridge_opts_init(&o);
  o.direction = c->direction;
  o.kind = c->kind;
  o.name = c->name;
  o.endpoint = c->direction == MEMPORT_BRIDGE_EXPORT ? "tcp://127.0.0.1:*" : g_sh->ep;
  if (c->hwm > 0)
    o.hwm = c->hwm;
  if (c->buffer_size != 0) {
    o.topic.buffer_size = c->buffer_size;
    o.topic.depth = c->depth;
    o.topic.buffers = c->buffers;
    o.topic.overflow = c->overflow;
  }
  if (c->chan)
    o.chan = &c->chan_opts;
  memport_bridge_t *b;
  int rc = memport_bridge_create(&b, &o);
  if (rc != 0) {
    g_sh->bridge_rc[c->slot] = rc;
    return 10;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, NULL);
  g_br = b;
  if (c->direction == MEMPORT_BRIDGE_EXPORT) {
    if (memport_bridge_endpoint(b, g_sh->ep, sizeof g_sh->ep) != 0)
      return 11;
    atomic_store(&g_sh->ep_ready, 1);
  }
  rc = memport_bridge_run(b, MEMPORT_FOREVER);
  g_sh->st[c->slot].struct_size = sizeof g_sh->st[c->slot];
  memport_bridge_stats(b, &g_sh->st[c->slot]);
  g_br = NULL;
  memport_bridge_close(b);
  return rc == 0 ? 0 : 12;
}

/* Every child forked, so that a failed test leaves none running (teardown). */
static pid_t g_pids[16];
static pid_t kid_fork(int (*fn)(void *), void *arg) {
  pid_t pid = th_fork(fn, arg, th_under_valgrind() ? 1200 : 300);
  assert_true(pid > 0);
  for (size_t i = 0; i < sizeof g_pids / sizeof g_pids[0]; i++)
    if (g_pids[i] == 0) {
      g_pids[i] = pid;
      break;
    }
  return pid;
}

static int teardown(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof g_pids / sizeof g_pids[0]; i++)
    if (g_pids[i] > 0) {
      if (waitpid(g_pids[i], NULL, WNOHANG) == 0) { /* still ours and running (a reaped one: ECHILD) */
        kill(g_pids[i], SIGKILL);
        waitpid(g_pids[i], NULL, 0);
      }
      g_pids[i] = 0;
    }
  if (g_sh != NULL)
    shared_free();
  return 0;
}

static pid_t start_bridge(struct bcfg *c) { return kid_fork(bridge_main, c); }

/* SIGTERM, then its exit status must be 0. */
static void stop_bridge(pid_t pid) {
  assert_int_equal(kill(pid, SIGTERM), 0);
  assert_int_equal(th_wait(pid, th_under_valgrind() ? 300 : 60), 0);
}

/* Fail if any of these children ended (0 entries are skipped). */
static void kids_alive(const pid_t *pids, int n, const char *what) {
  for (int i = 0; i < n; i++) {
    int st;
    if (pids[i] > 0 && th_exited(pids[i], &st))
      fail_msg("child %d (%d) ended early (%d) waiting for %s", i, (int)pids[i], st, what);
  }
}

/* Wait (bounded, ending if a child ended) until cond holds, running pub's calls meanwhile. */
#define WAIT_FOR(pub, pids, npids, cond)                                                        \
  do {                                                                                         \
    uint64_t end_ = th_now_ns() + (uint64_t)deadline_ns();                                     \
    while (!(cond)) {                                                                          \
      if ((pub) != NULL)                                                                       \
        memport_pub_process(pub);                                                              \
      kids_alive((pids), (npids), #cond);                                                      \
      if (th_now_ns() > end_)                                                                  \
        fail_msg("timed out waiting for %s", #cond);                                           \
      th_sleep_ns(200 * US);                                                                   \
    }                                                                                          \
  } while (0)

/* Publish `seq` (len bytes) in a loaned buffer: the publish's result (the loan is discarded on failure). */
static int publish(memport_pub_t *pub, uint64_t seq, size_t len, int64_t timeout) {
  memport_buf_t buf;
  int rc = memport_pub_loan(pub, len, &buf, timeout);
  if (rc != 0)
    return rc;
  make(buf.data, len, seq);
  rc = memport_pub_publish(pub, &buf, timeout);
  if (rc != 0)
    memport_pub_discard(pub, &buf);
  return rc;
}

/* Pool buffers of pub published and not yet given back by every subscriber. */
static uint32_t pub_in_use(memport_pub_t *pub) {
  memport_pub_stats_t ps;
  memset(&ps, 0, sizeof ps);
  ps.struct_size = sizeof ps;
  th_assert_ok(memport_pub_stats(pub, &ps));
  return ps.buffers_in_use;
}

/* ------------------------------------------------------------------------------------------ */
/* Subscribers of the imported topic (forked).                                                  */

struct scfg {
  int slot;
  char name[MEMPORT_NAME_MAX + 1];
  unsigned sleep_us;   /* per message */
  bool wait_go;        /* do not receive before g_sh->go */
  bool gaps_allowed;   /* drop-oldest: increasing, not consecutive */
  size_t (*len_of)(uint64_t seq);
};

/* Receive until the topic ends (ECLOSED when the import bridge closed it): every message checked. */
static int sub_main(void *arg) {
  struct scfg *c = arg;
  struct kid_report *r = &g_sh->kid[c->slot];
  memport_sub_t *s;
  int rc = memport_sub_connect(&s, c->name, NULL, 60 * SEC);
  if (rc != 0) {
    r->end_rc = rc;
    return 2;
  }
  atomic_store(&r->joined, 1);
  while (c->wait_go && atomic_load(&g_sh->go) == 0)
    th_sleep_ns(100 * US);
  uint64_t expect = 1;
  for (;;) {
    memport_buf_t buf;
    rc = memport_sub_recv(s, &buf, 120 * SEC);
    if (rc != 0)
      break;
    uint64_t seq = seq_of(buf.data, buf.len);
    if (c->gaps_allowed && seq > expect)
      expect = seq;
    int code = bad(buf.data, buf.len, c->len_of(expect), expect);
    if (code != 0 && atomic_fetch_add(&r->errors, 1) == 0) {
      r->first_bad = expect;
      r->bad_code = code;
    }
    expect = seq + 1;
    memport_sub_release(s, &buf);
    atomic_store(&r->last, seq);
    atomic_fetch_add(&r->received, 1);
    if (c->sleep_us != 0)
      th_sleep_ns(c->sleep_us * US);
  }
  r->end_rc = rc;
  uint64_t m = 0;
  memport_sub_missed(s, &m);
  r->missed = m;
  memport_sub_close(s);
  atomic_store(&r->done, 1);
  return rc == MEMPORT_ECLOSED ? 0 : 3;
}

static void report_ok(int slot, uint64_t n, const char *who) {
  struct kid_report *r = &g_sh->kid[slot];
  if (r->errors != 0)
    fail_msg("%s: %u bad messages, first at %llu (code %d)", who, r->errors, (unsigned long long)r->first_bad,
             r->bad_code);
  if (n != 0 && r->received != n)
    fail_msg("%s: received %llu, expected %llu", who, (unsigned long long)r->received, (unsigned long long)n);
}

/* ------------------------------------------------------------------------------------------ */
/* 1. C producer -> export -> TCP -> import -> two subscribers: 10^5 mixed messages, all there. */

static void test_end_to_end(void **state) {
  (void)state;
  shared_new();
  int fds0 = th_count_fds();
  const uint64_t n = scale(100000, 1000);
  char a[MEMPORT_NAME_MAX + 1], bname[MEMPORT_NAME_MAX + 1];
  snprintf(a, sizeof a, "%s", th_unique_name("bra"));
  snprintf(bname, sizeof bname, "%s", th_unique_name("brb"));

  memport_topic_opts_t to;
  memport_topic_opts_init(&to);
  to.buffer_size = 8 * MIB;
  to.buffers = 8;
  to.depth = 64;
  to.overflow = MEMPORT_TOPIC_BLOCK;
  memport_pub_t *pub;
  th_assert_ok(memport_pub_create(&pub, a, &to));

  pid_t kids[4] = {0};
  struct bcfg ex = {.slot = 0, .direction = MEMPORT_BRIDGE_EXPORT, .kind = MEMPORT_BRIDGE_TOPIC};
  snprintf(ex.name, sizeof ex.name, "%s", a);
  kids[0] = start_bridge(&ex);
  WAIT_FOR(pub, kids, 4, atomic_load(&g_sh->ep_ready) != 0);
  assert_non_null(strstr(g_sh->ep, "tcp://127.0.0.1:"));
  struct bcfg im = {.slot = 1, .direction = MEMPORT_BRIDGE_IMPORT, .kind = MEMPORT_BRIDGE_TOPIC,
                    .buffer_size = 8 * MIB, .depth = 64, .buffers = 16, .overflow = MEMPORT_TOPIC_BLOCK};
  snprintf(im.name, sizeof im.name, "%s", bname);
  kids[1] = start_bridge(&im);
  struct scfg sc[2];
  for (int i = 0; i < 2; i++) {
    sc[i] = (struct scfg){.slot = i, .len_of = topic_len};
    snprintf(sc[i].name, sizeof sc[i].name, "%s", bname);
    kids[2 + i] = kid_fork(sub_main, &sc[i]);
  }
  WAIT_FOR(pub, kids, 4, g_sh->kid[0].joined && g_sh->kid[1].joined && memport_pub_subscribers(pub) == 1);

  for (uint64_t seq = 1; seq <= n; seq++) {
    int rc;
    uint64_t end = th_now_ns() + (uint64_t)deadline_ns();
    /* Block everywhere: a publish waits for the exporter; a short wait lets us watch the children. */
    while ((rc = publish(pub, seq, topic_len(seq), 100 * MS)) == MEMPORT_ETIMEDOUT || rc == MEMPORT_EAGAIN) {
      kids_alive(kids, 4, "a publish");
      if (th_now_ns() > end)
        fail_msg("publish %llu never went through", (unsigned long long)seq);
    }
    if (rc != 0)
      fail_msg("publish %llu: %s", (unsigned long long)seq, memport_err_name(rc));
  }
  WAIT_FOR(pub, kids, 4, g_sh->kid[0].received >= n && g_sh->kid[1].received >= n);
  /* Everything sent: the exporter gave back every view it lent to ZeroMQ. */
  WAIT_FOR(pub, kids, 4, pub_in_use(pub) == 0);
  stop_bridge(kids[0]); /* the exporter first: the importer ends the topic in order */
  stop_bridge(kids[1]);
  for (int i = 0; i < 2; i++) {
    int st = th_wait(kids[2 + i], 60);
    report_ok(i, n, i == 0 ? "subscriber 1" : "subscriber 2");
    assert_int_equal(g_sh->kid[i].end_rc, MEMPORT_ECLOSED);
    assert_int_equal(st, 0);
  }
  memport_bridge_stats_t *es = &g_sh->st[0], *is = &g_sh->st[1];
  printf("# end to end: %llu messages, %llu bytes; import lost %llu skipped %llu dropped %llu malformed %llu\n",
         (unsigned long long)is->messages, (unsigned long long)is->bytes, (unsigned long long)is->lost,
         (unsigned long long)is->skipped, (unsigned long long)is->dropped, (unsigned long long)is->malformed);
  assert_int_equal(es->messages, n);
  assert_int_equal(is->messages, n);
  assert_int_equal(es->bytes, is->bytes);
  assert_int_equal(is->lost + is->skipped + is->dropped + is->malformed + is->source_missed, 0);
  th_assert_ok(memport_pub_close(pub));
  assert_int_equal(th_count_fds(), fds0);
  shared_free();
}

/* ------------------------------------------------------------------------------------------ */
/* 1b. Sizes: an import left to size its topic makes its buffers as large as the exporter's, so  */
/*     every message the source carries arrives, up to the largest; an import forced to smaller */
/*     buffers drops the larger messages and counts each one, and delivers the rest.            */

#define BIG (2u * MIB)
static size_t size_len(uint64_t seq) { return seq % 3 == 0 ? BIG - (size_t)(seq % 1000) : 100 + (size_t)(seq * 37 % 5000); }

static void sizes_phase(memport_pub_t *pub, pid_t exporter, const char *bname, size_t import_buffers, uint64_t *seq,
                        unsigned n) {
  memset(&g_sh->kid[0], 0, sizeof g_sh->kid[0]);
  memset(&g_sh->st[1], 0, sizeof g_sh->st[1]);
  struct bcfg im = {.slot = 1, .direction = MEMPORT_BRIDGE_IMPORT, .kind = MEMPORT_BRIDGE_TOPIC,
                    .buffer_size = import_buffers, .depth = 16, .buffers = 8, .overflow = MEMPORT_TOPIC_BLOCK};
  snprintf(im.name, sizeof im.name, "%s", bname);
  pid_t kids[3] = {exporter, start_bridge(&im), 0};
  /* A lazy import makes its topic at the first message: send one, then let the subscriber join. */
  struct scfg sc = {.slot = 0, .len_of = size_len, .gaps_allowed = true};
  snprintf(sc.name, sizeof sc.name, "%s", bname);
  uint64_t first = *seq;
  if (import_buffers == 0)
    th_assert_ok(publish(pub, (*seq)++, 100 + (size_t)(first * 37 % 5000), 30 * SEC)); /* small, whatever seq */
  kids[2] = kid_fork(sub_main, &sc);
  WAIT_FOR(pub, kids, 3, g_sh->kid[0].joined);
  uint64_t small = 0, big = 0;
  for (unsigned k = 0; k < n; k++, (*seq)++) {
    size_t len = size_len(*seq);
    int rc;
    while ((rc = publish(pub, *seq, len, 100 * MS)) == MEMPORT_ETIMEDOUT || rc == MEMPORT_EAGAIN)
      kids_alive(kids, 3, "a publish");
    th_assert_ok(rc);
    if (len > import_buffers && import_buffers != 0)
      big++;
    else
      small++;
  }
  uint64_t last = *seq - 1;
  if (import_buffers != 0)
    while (size_len(last) > import_buffers)
      last--; /* the last one delivered */
  WAIT_FOR(pub, kids, 3, g_sh->kid[0].last == last && g_sh->kid[0].received >= small);
  stop_bridge(kids[1]);
  assert_int_equal(th_wait(kids[2], 60), 0);
  report_ok(0, small, "subscriber");
  memport_bridge_stats_t *is = &g_sh->st[1];
  printf("# sizes (import buffers %zu): %llu delivered, %llu dropped as too large\n", import_buffers,
         (unsigned long long)is->messages, (unsigned long long)is->dropped);
  assert_int_equal(is->dropped, big);
  assert_int_equal(is->messages, small + (import_buffers == 0 ? 1 : 0));
  assert_int_equal(is->lost + is->malformed, 0);
}

static void test_sizes(void **state) {
  (void)state;
  shared_new();
  char a[MEMPORT_NAME_MAX + 1], bname[MEMPORT_NAME_MAX + 1];
  snprintf(a, sizeof a, "%s", th_unique_name("brsa"));
  snprintf(bname, sizeof bname, "%s", th_unique_name("brsb"));
  memport_topic_opts_t to;
  memport_topic_opts_init(&to);
  to.buffer_size = BIG;
  to.buffers = 40;
  to.depth = 32;
  memport_pub_t *pub;
  th_assert_ok(memport_pub_create(&pub, a, &to));
  struct bcfg ex = {.slot = 0, .direction = MEMPORT_BRIDGE_EXPORT, .kind = MEMPORT_BRIDGE_TOPIC};
  snprintf(ex.name, sizeof ex.name, "%s", a);
  pid_t kids[1] = {start_bridge(&ex)};
  WAIT_FOR(pub, kids, 1, atomic_load(&g_sh->ep_ready) != 0 && memport_pub_subscribers(pub) == 1);
  uint64_t seq = 1;
  unsigned n = scale(300, 30);
  sizes_phase(pub, kids[0], bname, 0, &seq, n);          /* sized from the exporter: all arrive */
  sizes_phase(pub, kids[0], bname, 64 * 1024, &seq, n);  /* forced smaller: the large ones counted */
  stop_bridge(kids[0]);
  th_assert_ok(memport_pub_close(pub));
  shared_free();
}

/* ------------------------------------------------------------------------------------------ */
/* 2. A slow remote subscriber under each overflow policy of the imported topic.               */

static size_t slow_len(uint64_t seq) { return seq % 7 == 0 ? 64 * 1024 : 100 + (size_t)(seq * 37 % 3000); }

/* (a) block: the slow one starts once the producer had to wait, then takes 1 ms per message and
 * still receives every one. */
static void test_slow_block(void **state) {
  (void)state;
  shared_new();
  int fds0 = th_count_fds();
  const uint64_t n = scale(3000, 1500);
  char a[MEMPORT_NAME_MAX + 1], bname[MEMPORT_NAME_MAX + 1];
  snprintf(a, sizeof a, "%s", th_unique_name("bra"));
  snprintf(bname, sizeof bname, "%s", th_unique_name("brb"));
  memport_topic_opts_t to;
  memport_topic_opts_init(&to);
  to.buffer_size = 64 * 1024;
  to.buffers = 8;
  to.depth = 8;
  memport_pub_t *pub;
  th_assert_ok(memport_pub_create(&pub, a, &to));
  pid_t kids[3] = {0};
  struct bcfg ex = {.slot = 0, .direction = MEMPORT_BRIDGE_EXPORT, .kind = MEMPORT_BRIDGE_TOPIC, .hwm = 4};
  snprintf(ex.name, sizeof ex.name, "%s", a);
  kids[0] = start_bridge(&ex);
  WAIT_FOR(pub, kids, 3, atomic_load(&g_sh->ep_ready) != 0);
  struct bcfg im = {.slot = 1, .direction = MEMPORT_BRIDGE_IMPORT, .kind = MEMPORT_BRIDGE_TOPIC, .hwm = 4,
                    .buffer_size = 64 * 1024, .depth = 8, .buffers = 8, .overflow = MEMPORT_TOPIC_BLOCK};
  snprintf(im.name, sizeof im.name, "%s", bname);
  kids[1] = start_bridge(&im);
  struct scfg sc = {.slot = 0, .sleep_us = 1000, .wait_go = true, .len_of = slow_len};
  snprintf(sc.name, sizeof sc.name, "%s", bname);
  kids[2] = kid_fork(sub_main, &sc);
  WAIT_FOR(pub, kids, 3, g_sh->kid[0].joined && memport_pub_subscribers(pub) == 1);

  uint64_t waited = 0;
  for (uint64_t seq = 1; seq <= n; seq++) {
    int rc = publish(pub, seq, slow_len(seq), MEMPORT_NOWAIT);
    if (rc == MEMPORT_EAGAIN || rc == MEMPORT_ETIMEDOUT) {
      waited++; /* back-pressure reached the producer */
      atomic_store(&g_sh->go, 1);
      uint64_t end = th_now_ns() + (uint64_t)deadline_ns();
      while ((rc = publish(pub, seq, slow_len(seq), 100 * MS)) == MEMPORT_ETIMEDOUT || rc == MEMPORT_EAGAIN) {
        kids_alive(kids, 3, "a publish");
        if (th_now_ns() > end)
          fail_msg("publish %llu never went through", (unsigned long long)seq);
      }
    }
    if (rc != 0)
      fail_msg("publish %llu: %s", (unsigned long long)seq, memport_err_name(rc));
  }
  atomic_store(&g_sh->go, 1);
  WAIT_FOR(pub, kids, 3, g_sh->kid[0].received >= n);
  stop_bridge(kids[0]);
  stop_bridge(kids[1]);
  assert_int_equal(th_wait(kids[2], 60), 0);
  report_ok(0, n, "slow subscriber (block)");
  printf("# block: the producer waited %llu times\n", (unsigned long long)waited);
  assert_true(waited > 0); /* nothing buffers without bound while the subscriber reads nothing */
  assert_int_equal(g_sh->kid[0].missed, 0);
  assert_int_equal(g_sh->st[1].lost + g_sh->st[1].dropped, 0);
  th_assert_ok(memport_pub_close(pub));
  assert_int_equal(th_count_fds(), fds0);
  shared_free();
}

/* (c) The export gives each view back once ZeroMQ is done with it, also when it gives them back in
 * batches: a pool of 4 buffers (fewer than a batch), one message at a time, each view released
 * before the next is published (a lone message is never kept for a batch that will not fill); then
 * a burst at full speed through the 4 buffers, all of them back at its end. */
static void test_views_come_back(void **state) {
  (void)state;
  shared_new();
  char a[MEMPORT_NAME_MAX + 1], bname[MEMPORT_NAME_MAX + 1];
  snprintf(a, sizeof a, "%s", th_unique_name("bra"));
  snprintf(bname, sizeof bname, "%s", th_unique_name("brb"));
  memport_topic_opts_t to;
  memport_topic_opts_init(&to);
  to.buffer_size = 64 * 1024;
  to.buffers = 4;
  to.depth = 4;
  memport_pub_t *pub;
  th_assert_ok(memport_pub_create(&pub, a, &to));
  pid_t kids[3] = {0};
  struct bcfg ex = {.slot = 0, .direction = MEMPORT_BRIDGE_EXPORT, .kind = MEMPORT_BRIDGE_TOPIC};
  snprintf(ex.name, sizeof ex.name, "%s", a);
  kids[0] = start_bridge(&ex);
  WAIT_FOR(pub, kids, 3, atomic_load(&g_sh->ep_ready) != 0);
  struct bcfg im = {.slot = 1, .direction = MEMPORT_BRIDGE_IMPORT, .kind = MEMPORT_BRIDGE_TOPIC,
                    .buffer_size = 64 * 1024, .depth = 4, .buffers = 8, .overflow = MEMPORT_TOPIC_BLOCK};
  snprintf(im.name, sizeof im.name, "%s", bname);
  kids[1] = start_bridge(&im);
  struct scfg sc = {.slot = 0, .len_of = slow_len};
  snprintf(sc.name, sizeof sc.name, "%s", bname);
  kids[2] = kid_fork(sub_main, &sc);
  WAIT_FOR(pub, kids, 3, g_sh->kid[0].joined && memport_pub_subscribers(pub) == 1);

  const uint64_t lone = scale(20, 10), burst = scale(2000, 200);
  for (uint64_t seq = 1; seq <= lone; seq++) {
    th_assert_ok(publish(pub, seq, slow_len(seq), 30 * SEC));
    WAIT_FOR(pub, kids, 3, g_sh->kid[0].received >= seq);
    /* Received over there: ZeroMQ sent it, so the export must give the view back now, not when
     * more messages have come back. */
    uint64_t end = th_now_ns() + (th_under_valgrind() ? 60 : 10) * SEC;
    while (pub_in_use(pub) != 0) {
      memport_pub_process(pub);
      kids_alive(kids, 3, "the view's release");
      if (th_now_ns() > end)
        fail_msg("message %llu arrived, but its view was not given back", (unsigned long long)seq);
      th_sleep_ns(200 * US);
    }
  }
  for (uint64_t seq = lone + 1; seq <= lone + burst; seq++) {
    int rc;
    uint64_t end = th_now_ns() + (uint64_t)deadline_ns();
    while ((rc = publish(pub, seq, slow_len(seq), 100 * MS)) == MEMPORT_ETIMEDOUT || rc == MEMPORT_EAGAIN) {
      kids_alive(kids, 3, "a publish");
      if (th_now_ns() > end)
        fail_msg("publish %llu never went through", (unsigned long long)seq);
    }
    th_assert_ok(rc);
  }
  WAIT_FOR(pub, kids, 3, g_sh->kid[0].received >= lone + burst);
  WAIT_FOR(pub, kids, 3, pub_in_use(pub) == 0);
  stop_bridge(kids[0]);
  stop_bridge(kids[1]);
  assert_int_equal(th_wait(kids[2], 60), 0);
  report_ok(0, lone + burst, "subscriber");
  assert_int_equal(g_sh->st[0].in_flight, 0);
  assert_int_equal(g_sh->st[1].lost + g_sh->st[1].dropped, 0);
  th_assert_ok(memport_pub_close(pub));
  shared_free();
}

/* (b) drop-oldest, depth 4: the producer keeps pace with the fast subscriber (at most 3 ahead of
 * it), which receives everything; the slow one starts late, takes 1 ms per message, and what it
 * received plus what it missed is what was published. */
static void test_slow_drop_oldest(void **state) {
  (void)state;
  shared_new();
  int fds0 = th_count_fds();
  const uint64_t n = scale(2000, 300);
  char a[MEMPORT_NAME_MAX + 1], bname[MEMPORT_NAME_MAX + 1];
  snprintf(a, sizeof a, "%s", th_unique_name("bra"));
  snprintf(bname, sizeof bname, "%s", th_unique_name("brb"));
  memport_topic_opts_t to;
  memport_topic_opts_init(&to);
  to.buffer_size = 64 * 1024;
  to.buffers = 8;
  to.depth = 8;
  memport_pub_t *pub;
  th_assert_ok(memport_pub_create(&pub, a, &to));
  pid_t kids[4] = {0};
  struct bcfg ex = {.slot = 0, .direction = MEMPORT_BRIDGE_EXPORT, .kind = MEMPORT_BRIDGE_TOPIC};
  snprintf(ex.name, sizeof ex.name, "%s", a);
  kids[0] = start_bridge(&ex);
  WAIT_FOR(pub, kids, 4, atomic_load(&g_sh->ep_ready) != 0);
  struct bcfg im = {.slot = 1, .direction = MEMPORT_BRIDGE_IMPORT, .kind = MEMPORT_BRIDGE_TOPIC,
                    .buffer_size = 64 * 1024, .depth = 4, .buffers = 16, .overflow = MEMPORT_TOPIC_DROP_OLDEST};
  snprintf(im.name, sizeof im.name, "%s", bname);
  kids[1] = start_bridge(&im);
  struct scfg fast = {.slot = 0, .len_of = slow_len};
  struct scfg slow = {.slot = 1, .sleep_us = 1000, .wait_go = true, .gaps_allowed = true, .len_of = slow_len};
  snprintf(fast.name, sizeof fast.name, "%s", bname);
  snprintf(slow.name, sizeof slow.name, "%s", bname);
  kids[2] = kid_fork(sub_main, &fast);
  kids[3] = kid_fork(sub_main, &slow);
  WAIT_FOR(pub, kids, 4, g_sh->kid[0].joined && g_sh->kid[1].joined && memport_pub_subscribers(pub) == 1);

  for (uint64_t seq = 1; seq <= n; seq++) {
    WAIT_FOR(pub, kids, 4, g_sh->kid[0].received + 2 >= seq - 1);
    if (seq == 50)
      atomic_store(&g_sh->go, 1); /* the slow one's queue overflowed many times by now */
    int rc;
    while ((rc = publish(pub, seq, slow_len(seq), 100 * MS)) == MEMPORT_ETIMEDOUT || rc == MEMPORT_EAGAIN)
      kids_alive(kids, 4, "a publish");
    if (rc != 0)
      fail_msg("publish %llu: %s", (unsigned long long)seq, memport_err_name(rc));
  }
  atomic_store(&g_sh->go, 1);
  WAIT_FOR(pub, kids, 4, g_sh->kid[0].received >= n && g_sh->kid[1].last >= n);
  stop_bridge(kids[0]);
  stop_bridge(kids[1]);
  assert_int_equal(th_wait(kids[2], 60), 0);
  assert_int_equal(th_wait(kids[3], 60), 0);
  report_ok(0, n, "fast subscriber");
  report_ok(1, 0, "slow subscriber");
  struct kid_report *s = &g_sh->kid[1];
  printf("# drop-oldest: the slow subscriber received %llu, missed %llu of %llu\n", (unsigned long long)s->received,
         (unsigned long long)s->missed, (unsigned long long)n);
  assert_int_equal(g_sh->kid[0].missed, 0);
  assert_true(s->missed > 0);
  assert_int_equal(s->received + s->missed, n);
  assert_int_equal(s->last, n);
  assert_int_equal(g_sh->st[1].messages, n); /* the bridge lost nothing: the topic dropped them */
  th_assert_ok(memport_pub_close(pub));
  assert_int_equal(th_count_fds(), fds0);
  shared_free();
}

/* ------------------------------------------------------------------------------------------ */
/* 3. Channels: a producer -> export channel -> TCP -> import channel -> a consumer; then       */
/*    another consumer takes what was sent while none was there.                               */

#define CH_POOL (256u * 1024u)

static size_t chan_len(uint64_t seq) {
  if (seq % 97 == 0)
    return CH_POOL + 1 + (size_t)(seq * 7919 % (3 * CH_POOL)); /* larger than a pool buffer: one-off */
  if (seq % 13 == 0)
    return 64 * 1024 + (size_t)(seq * 104729 % (CH_POOL - 64 * 1024)); /* a pool buffer */
  return 100 + (size_t)(seq * 131 % 4000);
}

static void chan_opts(memport_chan_opts_t *o) {
  memport_chan_opts_init(o);
  o->ring_capacity = 256 * 1024;
  o->pool_buffer_size = CH_POOL;
  o->pool_buffers = 8;
}

struct ccfg {
  int slot;
  char name[MEMPORT_NAME_MAX + 1];
  uint64_t first, count;
};

/* Connect, receive count messages from first on, check them, close. */
static int consumer_main(void *arg) {
  struct ccfg *c = arg;
  struct kid_report *r = &g_sh->kid[c->slot];
  memport_chan_opts_t co;
  chan_opts(&co);
  memport_chan_t *ch;
  int rc = memport_chan_connect(&ch, c->name, &co, 60 * SEC);
  if (rc != 0) {
    r->end_rc = rc;
    return 2;
  }
  atomic_store(&r->joined, 1);
  for (uint64_t seq = c->first; seq < c->first + c->count; seq++) {
    memport_buf_t buf;
    rc = memport_chan_recv(ch, &buf, 120 * SEC);
    if (rc != 0)
      break;
    int code = bad(buf.data, buf.len, chan_len(seq), seq);
    if (code != 0 && atomic_fetch_add(&r->errors, 1) == 0) {
      r->first_bad = seq;
      r->bad_code = code;
    }
    r->last = seq_of(buf.data, buf.len);
    memport_chan_release(ch, &buf);
    atomic_fetch_add(&r->received, 1);
  }
  r->end_rc = rc;
  memport_chan_close(ch);
  atomic_store(&r->done, 1);
  return rc == 0 ? 0 : 3;
}

static void chan_send_seq(memport_chan_t *ch, uint64_t seq, unsigned char *scratch, const pid_t *kids, int nkids) {
  size_t len = chan_len(seq);
  make(scratch, len, seq);
  uint64_t end = th_now_ns() + (uint64_t)deadline_ns();
  int rc;
  while ((rc = memport_chan_send(ch, scratch, len, 0, 100 * MS)) == MEMPORT_ETIMEDOUT || rc == MEMPORT_EAGAIN) {
    kids_alive(kids, nkids, "a channel send");
    if (th_now_ns() > end)
      fail_msg("send %llu never went through", (unsigned long long)seq);
  }
  if (rc != 0)
    fail_msg("send %llu: %s", (unsigned long long)seq, memport_err_name(rc));
}

static void test_channels(void **state) {
  (void)state;
  shared_new();
  int fds0 = th_count_fds();
  const uint64_t n = scale(10000, 300), later = scale(100, 20);
  char ca[MEMPORT_NAME_MAX + 1], cb[MEMPORT_NAME_MAX + 1];
  snprintf(ca, sizeof ca, "%s", th_unique_name("brca"));
  snprintf(cb, sizeof cb, "%s", th_unique_name("brcb"));
  pid_t kids[3] = {0};
  struct bcfg ex = {.slot = 0, .direction = MEMPORT_BRIDGE_EXPORT, .kind = MEMPORT_BRIDGE_CHANNEL, .chan = true};
  chan_opts(&ex.chan_opts);
  snprintf(ex.name, sizeof ex.name, "%s", ca);
  kids[0] = start_bridge(&ex);
  WAIT_FOR(NULL, kids, 3, atomic_load(&g_sh->ep_ready) != 0);
  struct bcfg im = {.slot = 1, .direction = MEMPORT_BRIDGE_IMPORT, .kind = MEMPORT_BRIDGE_CHANNEL, .chan = true};
  chan_opts(&im.chan_opts);
  snprintf(im.name, sizeof im.name, "%s", cb);
  kids[1] = start_bridge(&im);
  struct ccfg c1 = {.slot = 0, .first = 1, .count = n};
  snprintf(c1.name, sizeof c1.name, "%s", cb);
  kids[2] = kid_fork(consumer_main, &c1);

  memport_chan_opts_t co;
  chan_opts(&co);
  memport_chan_t *ch;
  th_assert_ok(memport_chan_connect(&ch, ca, &co, 60 * SEC));
  unsigned char *scratch = malloc(4 * CH_POOL + 1);
  assert_non_null(scratch);
  WAIT_FOR(NULL, kids, 3, g_sh->kid[0].joined != 0);
  for (uint64_t seq = 1; seq <= n; seq++)
    chan_send_seq(ch, seq, scratch, kids, 3);
  int st;
  uint64_t end = th_now_ns() + (uint64_t)deadline_ns();
  while (!th_exited(kids[2], &st)) {
    kids_alive(kids, 2, "the first consumer");
    assert_true(th_now_ns() < end);
    th_sleep_ns(MS);
  }
  report_ok(0, n, "first consumer");
  assert_int_equal(st, 0);

  /* No consumer now: what is sent waits in the bridges. */
  for (uint64_t seq = n + 1; seq <= n + later; seq++)
    chan_send_seq(ch, seq, scratch, kids, 2);
  struct ccfg c2 = {.slot = 1, .first = n + 1, .count = later};
  snprintf(c2.name, sizeof c2.name, "%s", cb);
  kids[2] = kid_fork(consumer_main, &c2);
  end = th_now_ns() + (uint64_t)deadline_ns();
  while (!th_exited(kids[2], &st)) {
    kids_alive(kids, 2, "the second consumer");
    assert_true(th_now_ns() < end);
    th_sleep_ns(MS);
  }
  report_ok(1, later, "second consumer");
  assert_int_equal(st, 0);
  th_assert_ok(memport_chan_close(ch));
  free(scratch);
  stop_bridge(kids[0]);
  stop_bridge(kids[1]);
  memport_bridge_stats_t *es = &g_sh->st[0], *is = &g_sh->st[1];
  printf("# channels: export %llu messages, import %llu (dropped %llu lost %llu)\n", (unsigned long long)es->messages,
         (unsigned long long)is->messages, (unsigned long long)is->dropped, (unsigned long long)is->lost);
  assert_int_equal(es->messages, n + later);
  assert_int_equal(is->messages, n + later);
  assert_int_equal(is->dropped + is->lost + is->malformed, 0);
  assert_int_equal(th_count_fds(), fds0);
  shared_free();
}

/* ------------------------------------------------------------------------------------------ */
/* 4. Options, a malformed endpoint, stats and pollfds arguments.                               */

static void expect_field(const memport_bridge_opts_t *o, const char *want) {
  const char *f = "unset";
  int rc = memport_bridge_opts_check(o, &f);
  if (want == NULL) {
    if (rc != 0)
      fail_msg("valid options refused: field %s", f ? f : "(null)");
    assert_null(f);
    return;
  }
  if (rc != MEMPORT_EINVAL || f == NULL || strcmp(f, want) != 0)
    fail_msg("expected %s named, got rc %d field %s", want, rc, f ? f : "(null)");
  /* and memport_bridge_create refuses them the same way, creating nothing */
  memport_bridge_t *b = (memport_bridge_t *)1;
  th_assert_rc(memport_bridge_create(&b, o), MEMPORT_EINVAL);
  assert_null(b);
}

static void base(memport_bridge_opts_t *o, int dir) {
  memport_bridge_opts_init(o);
  o->direction = dir;
  o->kind = MEMPORT_BRIDGE_TOPIC;
  o->name = "brname";
  o->endpoint = "tcp://127.0.0.1:*";
}

static void test_options(void **state) {
  (void)state;
  int fds0 = th_count_fds();
  char pk[41], sk[41], pk2[41], sk2[41];
  assert_int_equal(zmq_curve_keypair(pk, sk), 0);
  assert_int_equal(zmq_curve_keypair(pk2, sk2), 0);
  const char *allowed[] = {pk2, NULL}, *none[] = {NULL}, *bad_allowed[] = {"short", NULL};
  memport_bridge_opts_t o;

  const char *f = "unset";
  th_assert_rc(memport_bridge_opts_check(NULL, &f), MEMPORT_EINVAL);
  assert_non_null(f);
  base(&o, MEMPORT_BRIDGE_EXPORT);
  expect_field(&o, NULL);
  o.struct_size--;
  expect_field(&o, "struct_size");
  base(&o, 0);
  expect_field(&o, "direction");
  base(&o, 3);
  expect_field(&o, "direction");
  base(&o, MEMPORT_BRIDGE_EXPORT);
  o.kind = 0;
  expect_field(&o, "kind");
  o.kind = 7;
  expect_field(&o, "kind");
  base(&o, MEMPORT_BRIDGE_IMPORT);
  o.name = NULL;
  expect_field(&o, "name");
  o.name = "";
  expect_field(&o, "name");
  char longname[MEMPORT_NAME_MAX + 2];
  memset(longname, 'n', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  o.name = longname;
  expect_field(&o, "name");
  base(&o, MEMPORT_BRIDGE_EXPORT);
  o.endpoint = NULL;
  expect_field(&o, "endpoint");
  o.endpoint = "";
  expect_field(&o, "endpoint");
  base(&o, MEMPORT_BRIDGE_EXPORT);
  o.hwm = 0;
  expect_field(&o, "hwm");
  o.hwm = -5;
  expect_field(&o, "hwm");
  base(&o, MEMPORT_BRIDGE_IMPORT);
  o.topic.depth = 0;
  expect_field(&o, "topic");
  base(&o, MEMPORT_BRIDGE_IMPORT);
  expect_field(&o, NULL); /* buffer_size 0: chosen when the first message comes */

  /* CURVE, export: secret + allowed; the server key is the importer's business. */
  base(&o, MEMPORT_BRIDGE_EXPORT);
  o.curve_secret = sk;
  o.curve_allowed = allowed;
  expect_field(&o, NULL);
  o.curve_server = pk;
  expect_field(&o, "curve_server");
  o.curve_server = NULL;
  o.curve_allowed = NULL;
  expect_field(&o, "curve_allowed");
  o.curve_allowed = none;
  expect_field(&o, "curve_allowed");
  o.curve_allowed = bad_allowed;
  expect_field(&o, "curve_allowed");
  o.curve_allowed = allowed;
  o.curve_secret = "tooshort";
  expect_field(&o, "curve_secret");
  o.curve_secret = NULL; /* allowed keys but no secret */
  expect_field(&o, "curve_secret");
  o.curve_secret = sk;
  o.curve_public = "x";
  expect_field(&o, "curve_public");

  /* CURVE, import: all three of server, public, secret; never allowed keys. */
  base(&o, MEMPORT_BRIDGE_IMPORT);
  o.curve_server = pk;
  o.curve_public = pk2;
  o.curve_secret = sk2;
  expect_field(&o, NULL);
  o.curve_allowed = allowed;
  expect_field(&o, "curve_allowed");
  o.curve_allowed = NULL;
  o.curve_secret = NULL;
  expect_field(&o, "curve_secret");
  o.curve_public = NULL;
  expect_field(&o, "curve_public");
  o.curve_server = NULL;
  o.curve_public = pk2;
  o.curve_secret = sk2;
  expect_field(&o, "curve_server");
  char not_z85[41];
  memset(not_z85, ' ', 40); /* 40 characters, none of them Z85 */
  not_z85[40] = '\0';
  o.curve_server = not_z85;
  expect_field(&o, "curve_server");

  /* Malformed endpoints: memport_bridge_create fails cleanly, leaves no descriptor and no name. */
  const char *eps[] = {"tcp://127.0.0.1:notaport", "nosuchproto://x", "tcp://", "tcp://256.1.1.1:1"};
  for (int dir = MEMPORT_BRIDGE_EXPORT; dir <= MEMPORT_BRIDGE_IMPORT; dir++)
    for (size_t i = 0; i < sizeof eps / sizeof eps[0]; i++) {
      if (dir == MEMPORT_BRIDGE_IMPORT && i == 3)
        continue; /* a connect to a numeric address is only tried later */
      char name[MEMPORT_NAME_MAX + 1];
      snprintf(name, sizeof name, "%s", th_unique_name("brbad"));
      int before = th_count_fds();
      base(&o, dir);
      o.name = name;
      o.endpoint = eps[i];
      o.topic.buffer_size = 65536; /* an import creates its topic at once: it must go again */
      memport_bridge_t *b = (memport_bridge_t *)1;
      int rc = memport_bridge_create(&b, &o);
      if (rc >= 0)
        fail_msg("%s endpoint %s accepted", dir == MEMPORT_BRIDGE_EXPORT ? "export" : "import", eps[i]);
      assert_null(b);
      assert_int_equal(th_count_fds(), before);
      memport_pub_t *p; /* the name is free */
      memport_topic_opts_t to;
      memport_topic_opts_init(&to);
      th_assert_ok(memport_pub_create(&p, name, &to));
      th_assert_ok(memport_pub_close(p));
    }
  th_assert_rc(memport_bridge_create(NULL, &o), MEMPORT_EINVAL);

  /* A bridge that works: stats, pollfds and endpoint refuse what is too small. */
  int before = th_count_fds();
  base(&o, MEMPORT_BRIDGE_EXPORT);
  o.name = th_unique_name("brok");
  memport_bridge_t *b;
  th_assert_ok(memport_bridge_create(&b, &o));
  char ep[256];
  th_assert_ok(memport_bridge_endpoint(b, ep, sizeof ep));
  assert_non_null(strstr(ep, "tcp://127.0.0.1:"));
  assert_null(strchr(ep, '*'));
  th_assert_rc(memport_bridge_endpoint(b, ep, 8), MEMPORT_EMSGSIZE);
  memport_bridge_stats_t st;
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st - 1;
  th_assert_rc(memport_bridge_stats(b, &st), MEMPORT_EINVAL);
  st.struct_size = 0;
  th_assert_rc(memport_bridge_stats(b, &st), MEMPORT_EINVAL);
  th_assert_rc(memport_bridge_stats(b, NULL), MEMPORT_EINVAL);
  th_assert_rc(memport_bridge_stats(NULL, &st), MEMPORT_EINVAL);
  st.struct_size = sizeof st;
  th_assert_ok(memport_bridge_stats(b, &st));
  assert_int_equal(st.struct_size, sizeof st);
  assert_int_equal(st.messages, 0);
  struct pollfd fds[MEMPORT_BRIDGE_MAX_FDS];
  int64_t t;
  th_assert_rc(memport_bridge_pollfds(b, fds, MEMPORT_BRIDGE_MAX_FDS - 1, &t), MEMPORT_EINVAL);
  th_assert_rc(memport_bridge_pollfds(b, fds, 0, &t), MEMPORT_EINVAL);
  th_assert_rc(memport_bridge_pollfds(b, NULL, MEMPORT_BRIDGE_MAX_FDS, &t), MEMPORT_EINVAL);
  int nfd = memport_bridge_pollfds(b, fds, MEMPORT_BRIDGE_MAX_FDS, &t);
  assert_true(nfd >= 1 && nfd <= MEMPORT_BRIDGE_MAX_FDS);
  assert_int_equal(memport_bridge_pollfds(b, fds, MEMPORT_BRIDGE_MAX_FDS, NULL), nfd);
  th_assert_ok(memport_bridge_run(b, 20 * MS)); /* no topic yet: it waits and retries */
  th_assert_ok(memport_bridge_close(b));
  th_assert_ok(memport_bridge_close(NULL));
  assert_int_equal(th_count_fds(), before);
  assert_int_equal(th_count_fds(), fds0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_options, teardown),
      cmocka_unit_test_teardown(test_end_to_end, teardown),
      cmocka_unit_test_teardown(test_sizes, teardown),
      cmocka_unit_test_teardown(test_slow_block, teardown),
      cmocka_unit_test_teardown(test_slow_drop_oldest, teardown),
      cmocka_unit_test_teardown(test_views_come_back, teardown),
      cmocka_unit_test_teardown(test_channels, teardown),
  };
  if (getenv("MEMPORT_TEST_FILTER") != NULL) /* e.g. test_channels, or test_slow* */
    cmocka_set_test_filter(getenv("MEMPORT_TEST_FILTER"));
  return cmocka_run_group_tests(tests, NULL, NULL);
}
