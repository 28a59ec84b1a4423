/* SPDX-License-Identifier: MIT */
/* test_death.c: the peer killed at many points: MEMPORT_EPEER in bounded time, committed messages delivered, nothing leaked, names reusable. */
#include "helpers.h"

#include "../lib/chan_proto.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/*
 * Every iteration forks a peer, lets it reach a chosen point (it kills itself there with
 * raise(SIGKILL), or the test kills it after a random delay), and checks on the survivor:
 *   - MEMPORT_EPEER arrives, and how long after the death (or after the call started, for a call
 *     made once the peer was already dead). Two clocks: from the kill (SIGKILL sent), which
 *     includes the kernel's teardown of the dying process, and from its exit (its pidfd became
 *     readable: its descriptors are closed), which is the library's part and is asserted below
 *     1 s (the target is 100 ms; loaded CI machines stall). Max and p99 of both are printed;
 *   - every message the peer committed before it died is delivered first, whole and in order;
 *   - descriptors and memport mappings are back to where they were once the channel is closed;
 *   - the survivor's pool is whole again: buffers it had allocated are freed, a new channel has
 *     every buffer at once;
 *   - a name the dead peer owned can be served again at once (here and by a fresh process).
 * The kill points and delays come from a seed printed at the start; MEMPORT_TEST_SEED=<n>
 * reproduces a run, MEMPORT_DEATH_ROUNDS=<n> changes the iterations per kill point, and
 * MEMPORT_DEATH_ONLY=<text> runs only the kill points whose description contains <text>.
 */


/* Channel shape: a small ring and pool, so every path (inline, pool, one-off region) is cheap. */
#define RING_CAP (64u << 10)
#define THRESH (4u << 10)
#define POOL_BUF (64u << 10)
#define POOL_N 4u
#define BIG_MAX (160u << 10)

#define EPEER_BOUND_MS 1000.0 /* asserted (the target is 100 ms; CI machines stall) */

static const char *g_argv0;
static uint64_t g_seed;
static unsigned g_rounds;
static const char *g_only; /* MEMPORT_DEATH_ONLY: run the kill points whose name contains it */

/* A page shared with the forked peers. */
struct shared {
  _Atomic uint64_t death_ns;  /* when the peer died (stamped just before) */
  _Atomic uint32_t committed; /* messages whose send returned 0 in the peer */
  _Atomic uint32_t stage;     /* how far the peer got */
  _Atomic uint32_t go;        /* the survivor lets the peer continue */
};
static struct shared *g_sh;

/* ------------------------------------------------------------------------------------------ */
/* Utilities.                                                                                   */

static uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

/* Per-iteration random numbers (derived from the seed, the kill point and the round). */
static uint64_t rnd(uint64_t *s) {
  *s += 0x9e3779b97f4a7c15ULL;
  return mix(*s);
}
static uint64_t rnd_below(uint64_t *s, uint64_t n) { return n == 0 ? 0 : rnd(s) % n; }

/* Message sizes: both sides compute them from (salt, seq). */
#define SZ_MIXED 0
#define SZ_BIG 1
#define SZ_SMALL 2
#define SZ_POOL 3
static size_t msg_size(uint32_t salt, uint32_t seq, int kind) {
  uint64_t h = mix(((uint64_t)salt << 32) | seq);
  unsigned k = (unsigned)(h % 20);
  h >>= 8;
  if (kind == SZ_BIG || (kind == SZ_MIXED && k >= 18))
    return POOL_BUF + 1 + h % (BIG_MAX - POOL_BUF); /* oversized: a one-off region */
  if (kind == SZ_POOL || (kind == SZ_MIXED && k >= 14))
    return THRESH + 1 + h % (POOL_BUF - THRESH); /* zero-copy from the pool */
  if (kind == SZ_MIXED && k >= 10)
    return 4 + h % (THRESH - 3); /* through the ring, up to the threshold */
  return 4 + h % 300;
}

static uint64_t xs(uint64_t x) {
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return x;
}

static void pattern(unsigned char *p, size_t len, uint32_t salt, uint32_t seq) {
  memcpy(p, &seq, 4);
  uint64_t x = mix(((uint64_t)seq << 32) ^ salt ^ 0x5bd1e995u) | 1;
  size_t i = 4;
  for (; i + 8 <= len; i += 8) {
    x = xs(x);
    memcpy(p + i, &x, 8);
  }
  for (; i < len; i++) {
    x = xs(x);
    p[i] = (unsigned char)x;
  }
}

static bool pattern_ok(const unsigned char *p, size_t len, uint32_t salt, uint32_t seq) {
  if (len < 4 || memcmp(p, &seq, 4) != 0)
    return false;
  uint64_t x = mix(((uint64_t)seq << 32) ^ salt ^ 0x5bd1e995u) | 1;
  size_t i = 4;
  for (; i + 8 <= len; i += 8) {
    x = xs(x);
    if (memcmp(p + i, &x, 8) != 0)
      return false;
  }
  for (; i < len; i++) {
    x = xs(x);
    if (p[i] != (unsigned char)x)
      return false;
  }
  return true;
}

static unsigned char g_sbuf[BIG_MAX];
static unsigned char g_rbuf[BIG_MAX];

/* Send message `seq`: by copy, or (for zero-copy sizes, half the time) through alloc + send_buf. */
static int send_msg(memport_chan_t *c, uint32_t salt, uint32_t seq, int kind, int64_t timeout) {
  size_t n = msg_size(salt, seq, kind);
  if (n > THRESH && (mix(seq ^ ((uint64_t)salt << 17)) & 1)) {
    memport_buf_t b;
    int rc = memport_chan_alloc(c, n, &b, timeout);
    if (rc != 0)
      return rc;
    pattern(b.data, n, salt, seq);
    rc = memport_chan_send_buf(c, &b, timeout);
    if (rc != 0)
      memport_chan_free_buf(c, &b);
    return rc;
  }
  pattern(g_sbuf, n, salt, seq);
  return memport_chan_send(c, g_sbuf, n, 0, timeout);
}

/* Receive message `seq` and check it (in place or by copy). 0, a memport error, or 1 when the
 * message is not the expected one. */
static int recv_msg(memport_chan_t *c, uint32_t salt, uint32_t seq, int kind, int64_t timeout) {
  size_t want = msg_size(salt, seq, kind);
  if ((mix(seq * 7u ^ salt) & 3) == 0) {
    size_t len = 0;
    int rc = memport_chan_recv_copy(c, g_rbuf, sizeof g_rbuf, &len, timeout);
    if (rc != 0)
      return rc;
    return len == want && pattern_ok(g_rbuf, len, salt, seq) ? 0 : 1;
  }
  memport_buf_t b;
  int rc = memport_chan_recv(c, &b, timeout);
  if (rc != 0)
    return rc;
  bool ok = b.len == want && pattern_ok(b.data, b.len, salt, seq);
  rc = memport_chan_release(c, &b);
  if (rc != 0)
    return rc;
  return ok ? 0 : 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Kill points and what was measured.                                                           */

enum kp {
  KP_OPEN_BEFORE_HELLO,
  KP_OPEN_AFTER_HELLO,
  KP_OPEN_RANDOM,
  KP_AFTER_COMMIT,
  KP_HOLDING_ALLOCATED,
  KP_STREAM_RANDOM,
  KP_SEND_NOTICES_FIRST,
  KP_STASH_FULL,
  KP_HOLDING_RECEIVED,
  KP_BLOCKED_SEND,
  KP_SENDER_WITH_ROOM,
  KP_SVC_OWNER,
  KP_SVC_CLIENT,
  KP_REGION_PUBLISHER,
  KP_REGION_OPENER,
  KP_COUNT
};

static const char *const kp_name[KP_COUNT] = {
    "handshake: peer dies before its HELLO",
    "handshake: peer dies after its HELLO",
    "handshake: peer killed at a random moment",
    "producer dies right after committing",
    "producer dies holding allocated, unsent buffers",
    "producer killed at random mid-stream",
    "producer dies, survivor's send notices first",
    "producer dies with 64 oversized unreceived",
    "consumer dies holding zero-copy buffers",
    "consumer dies, survivor blocked in send/alloc",
    "consumer dies, survivor sends with room",
    "service owner dies around accept",
    "service client dies around connect",
    "region publisher dies around open",
    "region opener dies around open",
};

static unsigned g_iters[KP_COUNT];
static unsigned g_epeers[KP_COUNT];
static double g_kp_max[KP_COUNT];
#define MAX_SAMPLES 8192
static double g_lat[MAX_SAMPLES];      /* from the kill */
static double g_lat_exit[MAX_SAMPLES]; /* from the exit */
static unsigned g_nlat;

/* Watches the current peer's exit through a pidfd, from a thread (one peer at a time). */
static struct {
  pthread_t thread;
  pid_t pid;
  bool active;
  _Atomic uint64_t exit_ns; /* 0: unknown (no pidfd on this kernel) */
} g_watch;

static void *watch_main(void *arg) {
  (void)arg;
#ifdef SYS_pidfd_open
  int pfd = (int)syscall(SYS_pidfd_open, g_watch.pid, 0);
#else
  int pfd = -1; /* headers without pidfd_open (Linux < 5.3): the kill stamp is used alone */
#endif
  if (pfd < 0)
    return NULL;
  struct pollfd p = {.fd = pfd, .events = POLLIN, .revents = 0};
  while (poll(&p, 1, 30000) < 0 && errno == EINTR) {
  }
  atomic_store(&g_watch.exit_ns, th_now_ns());
  close(pfd);
  return NULL;
}

static pid_t spawn(int (*fn)(void *), void *arg) {
  assert_false(g_watch.active);
  pid_t pid = th_fork(fn, arg, 20);
  assert_true(pid > 0);
  g_watch.pid = pid;
  atomic_store(&g_watch.exit_ns, 0);
  assert_int_equal(pthread_create(&g_watch.thread, NULL, watch_main, NULL), 0);
  g_watch.active = true;
  return pid;
}

/* Wait for the watched peer to have exited (it is dying or dead when this is called). */
static void watch_join(void) {
  if (g_watch.active) {
    pthread_join(g_watch.thread, NULL);
    g_watch.active = false;
  }
}

struct it {
  enum kp kp;
  unsigned round;
  uint64_t rng;
  uint32_t salt;
  memport_chan_opts_t o;
  memport_chan_t *chan;  /* the peer's end (in the child) */
  memport_port_t *port;  /* the peer's port (in the child) */
  char name[MEMPORT_NAME_MAX + 1];
  unsigned n;            /* messages, per kill point */
  unsigned mode;         /* variant, per kill point */
  bool hold;             /* the survivor keeps some of the peer's zero-copy buffers across its death */
  uint64_t delay_ns;
};

/* Record one MEMPORT_EPEER: the call started at t_call and returned at t_ret. */
static double since(uint64_t event, uint64_t t_call, uint64_t t_ret) {
  uint64_t from = event > t_call ? event : t_call;
  return t_ret > from ? (double)(t_ret - from) / 1e6 : 0.0;
}

static void record_epeer(const struct it *it, uint64_t t_call, uint64_t t_ret) {
  uint64_t death = atomic_load(&g_sh->death_ns);
  if (death == 0)
    fail_msg("%s (round %u): MEMPORT_EPEER but the peer has not died (nor closed): did it fail on its own?",
             kp_name[it->kp], it->round);
  watch_join();
  uint64_t exited = atomic_load(&g_watch.exit_ns);
  double ms = since(death, t_call, t_ret);
  double ms_exit = exited != 0 ? since(exited, t_call, t_ret) : ms;
  if (g_nlat < MAX_SAMPLES) {
    g_lat[g_nlat] = ms;
    g_lat_exit[g_nlat++] = ms_exit;
  }
  g_epeers[it->kp]++;
  if (ms > g_kp_max[it->kp])
    g_kp_max[it->kp] = ms;
  if (!th_under_valgrind() && ms_exit >= EPEER_BOUND_MS)
    fail_msg("%s (round %u, seed %llu): MEMPORT_EPEER %.1f ms after the peer exited (%.1f ms after the kill)",
             kp_name[it->kp], it->round, (unsigned long long)g_seed, ms_exit, ms);
}

static _Noreturn void die_now(void) {
  atomic_store(&g_sh->death_ns, th_now_ns());
  raise(SIGKILL);
  _exit(99);
}

static void reset_shared(void) {
  atomic_store(&g_sh->death_ns, 0);
  atomic_store(&g_sh->committed, 0);
  atomic_store(&g_sh->stage, 0);
  atomic_store(&g_sh->go, 0);
}

/* Wait (in the child or the parent) until *v >= want; false after 10 s. */
static bool wait_at_least(_Atomic uint32_t *v, uint32_t want) {
  uint64_t end = th_now_ns() + 10 * (uint64_t)SEC;
  while (atomic_load(v) < want) {
    if (th_now_ns() > end)
      return false;
    th_sleep_ns(50 * US);
  }
  return true;
}

static void it_init(struct it *it, enum kp kp, unsigned round) {
  memset(it, 0, sizeof *it);
  it->kp = kp;
  it->round = round;
  it->rng = mix(g_seed ^ ((uint64_t)kp << 40) ^ round);
  it->salt = (uint32_t)rnd(&it->rng);
  memport_chan_opts_init(&it->o);
  it->o.ring_capacity = RING_CAP;
  it->o.zerocopy_threshold = THRESH;
  it->o.pool_buffer_size = POOL_BUF;
  it->o.pool_buffers = POOL_N;
  static const int policies[3] = {MEMPORT_WAIT_BLOCK, MEMPORT_WAIT_ADAPTIVE, MEMPORT_WAIT_SPIN};
  it->o.wait_policy = policies[rnd_below(&it->rng, 3)];
  snprintf(it->name, sizeof it->name, "%s", th_unique_name("death"));
  reset_shared();
  g_iters[kp]++;
}

/* Kill the child after a delay, from a thread, while the main thread works. */
struct killer {
  pthread_t thread;
  pid_t pid;
  uint64_t delay_ns;
  _Atomic uint32_t *after; /* wait until *after >= after_value first (may be NULL) */
  uint32_t after_value;
};

static void *killer_main(void *arg) {
  struct killer *k = arg;
  if (k->after != NULL)
    wait_at_least(k->after, k->after_value);
  th_sleep_ns(k->delay_ns);
  atomic_store(&g_sh->death_ns, th_now_ns());
  kill(k->pid, SIGKILL);
  return NULL;
}

static void killer_start(struct killer *k, pid_t pid, uint64_t delay_ns, _Atomic uint32_t *after, uint32_t value) {
  k->pid = pid;
  k->delay_ns = delay_ns;
  k->after = after;
  k->after_value = value;
  assert_int_equal(pthread_create(&k->thread, NULL, killer_main, k), 0);
}

static void killer_join(struct killer *k) { pthread_join(k->thread, NULL); }

/* Receive messages 0, 1, ... until MEMPORT_EPEER, each checked; returns how many arrived. The
 * receive that returned MEMPORT_EPEER is the one measured; later calls keep saying so. */
static uint32_t recv_until_epeer(const struct it *it, memport_chan_t *c, int first_kind, int kind) {
  memport_buf_t held[6];
  uint32_t held_seq[6];
  unsigned nheld = 0, npool = 0;
  for (uint32_t seq = 0;; seq++) {
    int k = seq == 0 ? first_kind : kind;
    size_t want = msg_size(it->salt, seq, k);
    /* Keep up to 2 of the peer's pool buffers (it needs the others to go on) and 4 regions. */
    bool keep = it->hold && want > THRESH && nheld < 6 && (want > POOL_BUF || npool < 2);
    uint64_t t0 = th_now_ns();
    int r;
    if (keep) {
      r = memport_chan_recv(c, &held[nheld], 5 * SEC);
      if (r == 0) {
        if (held[nheld].len != want || !pattern_ok(held[nheld].data, want, it->salt, seq)) {
          r = 1;
        } else {
          npool += want <= POOL_BUF;
          held_seq[nheld++] = seq;
        }
      }
    } else {
      r = recv_msg(c, it->salt, seq, k, 5 * SEC);
    }
    uint64_t t1 = th_now_ns();
    if (r == MEMPORT_EPEER) {
      record_epeer(it, t0, t1);
      memport_buf_t b;
      th_assert_rc(memport_chan_recv(c, &b, 0), MEMPORT_EPEER);
      th_assert_rc(memport_chan_send(c, "x", 1, 0, SEC), MEMPORT_EPEER);
      /* The dead peer's buffers we hold are intact and go back without a complaint. */
      for (unsigned i = 0; i < nheld; i++) {
        if (!pattern_ok(held[i].data, held[i].len, it->salt, held_seq[i]))
          fail_msg("%s (round %u): held message %u changed after the death", kp_name[it->kp], it->round,
                   held_seq[i]);
        th_assert_ok(memport_chan_release(c, &held[i]));
      }
      return seq;
    }
    if (r != 0)
      fail_msg("%s (round %u, seed %llu): message %u: %s", kp_name[it->kp], it->round,
               (unsigned long long)g_seed, seq, r == 1 ? "not the one sent" : memport_err_name(r));
  }
}

static void expect_count(const struct it *it, uint32_t got, uint32_t lo, uint32_t hi) {
  if (got < lo || got > hi)
    fail_msg("%s (round %u, seed %llu): %u messages delivered, expected %u..%u", kp_name[it->kp], it->round,
             (unsigned long long)g_seed, got, lo, hi);
}

/* A dead channel gives its pool back: nothing of it is left once closed, and a new channel of
 * the same shape has every buffer at once. */
static void check_fresh_pool(const struct it *it) {
  memport_chan_t *a, *b;
  th_assert_ok(memport_chan_pair(&a, &b, &it->o));
  memport_buf_t z[POOL_N];
  for (unsigned i = 0; i < POOL_N; i++)
    th_assert_ok(memport_chan_alloc(a, POOL_BUF, &z[i], MEMPORT_NOWAIT));
  for (unsigned i = 0; i < POOL_N; i++)
    th_assert_ok(memport_chan_free_buf(a, &z[i]));
  memport_chan_close(a);
  memport_chan_close(b);
}

static void check_no_leak(const struct it *it, int fds, int maps) {
  int f = th_count_fds(), m = th_count_memport_maps();
  if (f != fds || m != maps)
    fail_msg("%s (round %u, seed %llu): %d descriptors (was %d), %d memport mappings (was %d)", kp_name[it->kp],
             it->round, (unsigned long long)g_seed, f, fds, m, maps);
}

static void expect_child(const struct it *it, pid_t pid, int status) {
  watch_join();
  int st = th_wait(pid, 20);
  if (st != status)
    fail_msg("%s (round %u, seed %llu): peer ended with status %d, expected %d", kp_name[it->kp], it->round,
             (unsigned long long)g_seed, st, status);
}

/* A pair whose second end goes to a forked child running fn. */
static pid_t fork_pair(struct it *it, memport_chan_t **mine, int (*fn)(void *)) {
  memport_chan_t *a, *b;
  th_assert_ok(memport_chan_pair(&a, &b, &it->o));
  it->chan = b;
  pid_t pid = spawn(fn, it);
  memport_chan_close(b);
  it->chan = NULL;
  *mine = a;
  return pid;
}

/* ------------------------------------------------------------------------------------------ */
/* Handshake.                                                                                   */

static int child_die_before_hello(void *arg) {
  struct it *it = arg;
  th_sleep_ns(it->delay_ns);
  die_now();
}

static int child_open(void *arg) {
  struct it *it = arg;
  memport_chan_t *c = NULL;
  atomic_store(&g_sh->stage, 1);
  int rc = memport_chan_open(&c, it->port, &it->o, 5 * SEC);
  if (rc != 0)
    return 10;
  atomic_store(&g_sh->stage, 2);
  if (it->mode == 1)
    die_now(); /* handshake complete */
  for (uint32_t seq = 0;; seq++) { /* mode 2: stream until killed */
    if (send_msg(c, it->salt, seq, SZ_MIXED, 5 * SEC) != 0)
      return 11;
    atomic_store(&g_sh->committed, seq + 1);
  }
}

static void run_open(struct it *it) {
  int fds = th_count_fds(), maps = th_count_memport_maps();
  memport_port_t *pa, *pb;
  th_assert_ok(memport_port_pair(&pa, &pb));
  it->port = pb;
  pid_t pid;
  struct killer k;
  bool killer = false;
  if (it->kp == KP_OPEN_BEFORE_HELLO) {
    it->delay_ns = rnd_below(&it->rng, 3000) * US;
    pid = spawn(child_die_before_hello, it);
  } else {
    it->mode = it->kp == KP_OPEN_AFTER_HELLO ? (unsigned)rnd_below(&it->rng, 2) : 2;
    pid = spawn(child_open, it);
    if (it->kp == KP_OPEN_RANDOM) {
      killer_start(&k, pid, rnd_below(&it->rng, 4000) * US, &g_sh->stage, 1);
      killer = true;
    }
  }
  memport_port_close(pb);
  it->port = NULL;
  if (it->kp == KP_OPEN_AFTER_HELLO && it->mode == 0) {
    /* The peer's HELLO has arrived (it now waits for ours): kill it there. */
    memport_os_handle_t h;
    th_assert_ok(memport_port_pollable(pa, &h));
    struct pollfd pfd = {.fd = h, .events = POLLIN, .revents = 0};
    assert_int_equal(poll(&pfd, 1, 10000), 1);
    atomic_store(&g_sh->death_ns, th_now_ns());
    kill(pid, SIGKILL);
    expect_child(it, pid, 128 + SIGKILL);
  }
  memport_chan_t *c = NULL;
  uint64_t t0 = th_now_ns();
  int rc = memport_chan_open(&c, pa, &it->o, 5 * SEC);
  uint64_t t1 = th_now_ns();
  if (killer)
    killer_join(&k);
  if (it->kp == KP_OPEN_BEFORE_HELLO || (it->kp == KP_OPEN_AFTER_HELLO && it->mode == 1)) {
    /* Before the HELLO: EPEER. After a complete handshake the peer's HELLO was sent: open works. */
    th_assert_rc(rc, it->kp == KP_OPEN_BEFORE_HELLO ? MEMPORT_EPEER : 0);
  } else if (rc != 0 && rc != MEMPORT_EPEER) {
    fail_msg("%s (round %u): open gave %s", kp_name[it->kp], it->round, memport_err_name(rc));
  }
  if (rc == MEMPORT_EPEER) {
    assert_null(c);
    record_epeer(it, t0, t1);
  } else {
    uint32_t got = recv_until_epeer(it, c, SZ_MIXED, SZ_MIXED);
    uint32_t committed = atomic_load(&g_sh->committed);
    expect_count(it, got, committed, committed + 1);
    memport_chan_close(c);
  }
  if (!(it->kp == KP_OPEN_AFTER_HELLO && it->mode == 0))
    expect_child(it, pid, 128 + SIGKILL);
  check_no_leak(it, fds, maps);
}

/* ------------------------------------------------------------------------------------------ */
/* The peer produces.                                                                           */

static int child_producer(void *arg) {
  struct it *it = arg;
  memport_chan_t *c = it->chan;
  int kind = it->kp == KP_STASH_FULL ? SZ_BIG : SZ_MIXED;
  if (it->kp == KP_STREAM_RANDOM)
    it->n = UINT32_MAX;
  if (it->kp == KP_SEND_NOTICES_FIRST && !wait_at_least(&g_sh->go, 1))
    return 20;
  for (uint32_t seq = 0; seq < it->n; seq++) {
    int rc = send_msg(c, it->salt, seq, (seq == 0 && it->kp == KP_SEND_NOTICES_FIRST) ? SZ_BIG : kind,
                      5 * SEC);
    if (rc != 0)
      return 21;
    atomic_store(&g_sh->committed, seq + 1);
  }
  if (it->kp == KP_HOLDING_ALLOCATED) {
    /* Reserved, written, never sent: some pool buffers, sometimes a one-off region too. */
    memport_buf_t z[POOL_N + 1];
    unsigned k = 1 + (unsigned)(mix(it->salt) % POOL_N);
    for (unsigned i = 0; i < k; i++) {
      if (memport_chan_alloc(c, POOL_BUF, &z[i], 5 * SEC) != 0)
        return 22;
      memset(z[i].data, 0xa5, POOL_BUF);
    }
    if (it->mode && memport_chan_alloc(c, BIG_MAX, &z[k], 5 * SEC) != 0)
      return 23;
  }
  atomic_store(&g_sh->stage, 1);
  if (it->mode == 2 && it->kp == KP_AFTER_COMMIT) {
    /* An orderly close instead of a death. The stamp goes first: the survivor may see the close
     * (MEMPORT_EPEER) before this process is scheduled again. */
    atomic_store(&g_sh->death_ns, th_now_ns());
    memport_chan_close(c);
    _exit(0);
  }
  th_sleep_ns(it->delay_ns);
  die_now();
}

static void run_producer(struct it *it) {
  int fds = th_count_fds(), maps = th_count_memport_maps();
  switch (it->kp) {
  case KP_AFTER_COMMIT:
    it->n = (unsigned)rnd_below(&it->rng, 40);
    it->mode = (unsigned)rnd_below(&it->rng, 4) == 0 ? 2 : 0;
    it->delay_ns = rnd_below(&it->rng, 2) ? 0 : rnd_below(&it->rng, 10000) * US;
    break;
  case KP_HOLDING_ALLOCATED:
    it->n = (unsigned)rnd_below(&it->rng, 6);
    it->mode = (unsigned)rnd_below(&it->rng, 2);
    it->delay_ns = rnd_below(&it->rng, 5000) * US;
    break;
  case KP_STASH_FULL:
    it->n = MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT; /* as many as may be untaken: the stash is full */
    it->delay_ns = (20 + rnd_below(&it->rng, 20)) * MS; /* long enough for us to block in send */
    it->o.pool_buffers = 2;
    break;
  case KP_SEND_NOTICES_FIRST:
    it->n = 1 + (unsigned)rnd_below(&it->rng, 4);
    break;
  default:
    break;
  }
  /* (not while it must allocate every buffer of its pool, nor when only oversized ones come) */
  it->hold = (it->kp == KP_AFTER_COMMIT || it->kp == KP_STREAM_RANDOM || it->kp == KP_SEND_NOTICES_FIRST) &&
             rnd_below(&it->rng, 2);
  memport_chan_t *c;
  pid_t pid = fork_pair(it, &c, child_producer);
  struct killer k;
  if (it->kp == KP_STREAM_RANDOM)
    killer_start(&k, pid, rnd_below(&it->rng, 15000) * US, NULL, 0);
  int kind = it->kp == KP_STASH_FULL ? SZ_BIG : SZ_MIXED;

  if (it->kp == KP_STASH_FULL) {
    /* We block sending into a full ring (the peer never reads) while its oversized messages
     * wait unreceived, as many as we take in before we stop reading the port. The peer dies
     * meanwhile: only a look at the peer (not the port) can tell. */
    assert_true(wait_at_least(&g_sh->stage, 1));
    static unsigned char chunk[2048];
    int rc;
    uint64_t t0 = th_now_ns();
    do
      rc = memport_chan_send(c, chunk, sizeof chunk, 0, 3 * SEC);
    while (rc == 0);
    uint64_t t1 = th_now_ns();
    if (rc != MEMPORT_EPEER)
      fail_msg("%s (round %u, seed %llu): blocked send gave %s, expected MEMPORT_EPEER", kp_name[it->kp],
               it->round, (unsigned long long)g_seed, memport_err_name(rc));
    record_epeer(it, t0, t1);
  }
  if (it->kp == KP_SEND_NOTICES_FIRST) {
    /* Our send learns of the death before our receive does: what the peer committed (an
     * oversized message first) must still all be delivered. */
    th_assert_ok(memport_chan_send(c, "tick", 4, 0, SEC)); /* a fresh look at the port */
    atomic_store(&g_sh->go, 1);
    expect_child(it, pid, 128 + SIGKILL);
    pattern(g_sbuf, BIG_MAX, 1, 1);
    th_assert_rc(memport_chan_send(c, g_sbuf, BIG_MAX, 0, SEC), MEMPORT_EPEER);
  }
  uint32_t got = recv_until_epeer(it, c, it->kp == KP_SEND_NOTICES_FIRST ? SZ_BIG : kind, kind);
  uint32_t committed = atomic_load(&g_sh->committed);
  if (it->kp == KP_STREAM_RANDOM) {
    killer_join(&k);
    expect_count(it, got, committed, committed + 1); /* killed between a commit and its count */
  } else {
    expect_count(it, got, it->n, it->n);
    assert_int_equal(committed, it->n);
  }
  memport_chan_close(c);
  if (it->kp != KP_SEND_NOTICES_FIRST)
    expect_child(it, pid, it->mode == 2 && it->kp == KP_AFTER_COMMIT ? 0 : 128 + SIGKILL);
  check_no_leak(it, fds, maps);
}

/* ------------------------------------------------------------------------------------------ */
/* The peer consumes.                                                                           */

static int child_consumer(void *arg) {
  struct it *it = arg;
  memport_chan_t *c = it->chan;
  memport_buf_t held[POOL_N + 2];
  unsigned nheld = 0;
  for (uint32_t seq = 0; seq < it->n; seq++) {
    memport_buf_t b;
    if (memport_chan_recv(c, &b, 5 * SEC) != 0)
      return 30;
    if (!pattern_ok(b.data, b.len, it->salt, seq))
      return 31;
    if (it->kp == KP_HOLDING_RECEIVED && b.len > THRESH && nheld < POOL_N + 2)
      held[nheld++] = b; /* zero-copy: the survivor's pool buffer (or its one-off region) */
    else if (memport_chan_release(c, &b) != 0)
      return 32;
  }
  for (unsigned i = 0; i < nheld; i++) /* still readable: held until the death */
    if (((volatile const unsigned char *)held[i].data)[0] != ((const unsigned char *)held[i].data)[0])
      return 33;
  atomic_store(&g_sh->stage, 1);
  th_sleep_ns(it->delay_ns);
  die_now();
}

static void run_consumer(struct it *it) {
  int fds = th_count_fds(), maps = th_count_memport_maps();
  switch (it->kp) {
  case KP_HOLDING_RECEIVED:
    it->mode = (unsigned)rnd_below(&it->rng, 2); /* 1: an oversized message is held too */
    it->n = POOL_N - 1 + it->mode;
    break;
  case KP_BLOCKED_SEND:
    it->n = (unsigned)rnd_below(&it->rng, 10);
    it->mode = (unsigned)rnd_below(&it->rng, 3); /* 0: ring full, 1: pool empty, 2: 64 oversized untaken */
    break;
  default:
    it->n = 0;
    break;
  }
  it->delay_ns = rnd_below(&it->rng, 20000) * US;
  memport_chan_t *c;
  pid_t pid = fork_pair(it, &c, child_consumer);
  int rc;
  uint64_t t0, t1;
  if (it->kp == KP_HOLDING_RECEIVED) {
    /* Every buffer of our pool ends up in the peer's hands; we keep one more allocated. */
    uint32_t seq = 0;
    if (it->mode)
      th_assert_ok(send_msg(c, it->salt, seq++, SZ_BIG, 5 * SEC));
    for (unsigned i = 0; i + 1 < POOL_N; i++)
      th_assert_ok(send_msg(c, it->salt, seq++, SZ_POOL, 5 * SEC));
    memport_buf_t mine, z;
    th_assert_ok(memport_chan_alloc(c, 100, &mine, 0));
    memcpy(mine.data, "mine", 4);
    t0 = th_now_ns();
    rc = memport_chan_alloc(c, 100, &z, 5 * SEC);
    t1 = th_now_ns();
    th_assert_rc(rc, MEMPORT_EPEER);
    record_epeer(it, t0, t1);
    th_assert_rc(memport_chan_alloc(c, 100, &z, 0), MEMPORT_EPEER);
    /* The buffer we hold stays ours: send_buf refuses without taking it, free_buf takes it back. */
    th_assert_rc(memport_chan_send_buf(c, &mine, SEC), MEMPORT_EPEER);
    assert_memory_equal(mine.data, "mine", 4);
    th_assert_ok(memport_chan_free_buf(c, &mine));
  } else if (it->kp == KP_BLOCKED_SEND) {
    uint32_t seq = 0;
    for (; seq < it->n; seq++)
      th_assert_ok(send_msg(c, it->salt, seq, SZ_MIXED, 5 * SEC));
    static unsigned char chunk[POOL_BUF + 1];
    size_t len = it->mode == 0 ? 1024 : it->mode == 1 ? THRESH + 1 : POOL_BUF + 1;
    t0 = th_now_ns();
    do
      rc = memport_chan_send(c, chunk, len, 0, 5 * SEC);
    while (rc == 0);
    t1 = th_now_ns();
    th_assert_rc(rc, MEMPORT_EPEER);
    record_epeer(it, t0, t1);
  } else { /* KP_SENDER_WITH_ROOM: a sender that never waits still learns of the death */
    t0 = th_now_ns();
    do {
      rc = memport_chan_send(c, "tick", 4, 0, MEMPORT_NOWAIT);
      t1 = th_now_ns();
      if (rc == 0)
        th_sleep_ns(500 * US);
    } while (rc == 0 && t1 - t0 < 5 * (uint64_t)SEC);
    th_assert_rc(rc, MEMPORT_EPEER);
    record_epeer(it, t0, t1); /* from the death: every call before it returned at once */
  }
  expect_child(it, pid, 128 + SIGKILL);
  /* Our own pool is ours again: an allocated buffer can be freed, send_buf refuses without
   * taking it, and close gives everything back. */
  th_assert_rc(memport_chan_send(c, "x", 1, MEMPORT_SEND_ZEROCOPY, 0), MEMPORT_EPEER);
  memport_chan_close(c);
  check_no_leak(it, fds, maps);
  check_fresh_pool(it);
  check_no_leak(it, fds, maps);
}

/* ------------------------------------------------------------------------------------------ */
/* Names.                                                                                       */

/* A fresh process serves the name (exit 0) or says why not. */
static int helper_serve(const char *name) {
  memport_service_t *s;
  int rc = memport_service_create(&s, name, 0);
  if (rc != 0) {
    fprintf(stderr, "serve %s: %s\n", name, memport_err_name(rc));
    return 1;
  }
  memport_service_close(s);
  return 0;
}

static int helper_publish(const char *name) {
  memport_region_t *r;
  memport_publication_t *p;
  if (memport_region_create(&r, 4096, 0) != 0)
    return 2;
  int rc = memport_region_publish(&p, r, name, NULL, NULL);
  if (rc != 0) {
    fprintf(stderr, "publish %s: %s\n", name, memport_err_name(rc));
    return 1;
  }
  memport_publication_close(p);
  memport_region_close(r);
  return 0;
}

static void fresh_process(const char *helper, const char *name) {
  pid_t pid = th_spawn_helper(g_argv0, helper, name);
  assert_true(pid > 0);
  assert_int_equal(th_wait(pid, 30), 0);
}

static int child_svc_owner(void *arg) {
  struct it *it = arg;
  memport_service_t *s;
  if (memport_service_create(&s, it->name, 0) != 0)
    return 40;
  atomic_store(&g_sh->stage, 1);
  if (it->mode == 0)
    die_now(); /* nobody connected yet */
  if (it->mode == 1) {
    /* A connection waits in the backlog, not accepted. */
    memport_os_handle_t h;
    memport_service_pollable(s, &h);
    struct pollfd pfd = {.fd = h, .events = POLLIN, .revents = 0};
    if (poll(&pfd, 1, 10000) != 1)
      return 41;
    die_now();
  }
  if (it->mode == 2) {
    memport_port_t *p;
    if (memport_service_accept(s, &p, 10 * SEC) != 0)
      return 42;
    die_now(); /* accepted, no HELLO */
  }
  memport_chan_t *c;
  if (memport_chan_accept(&c, s, &it->o, 10 * SEC) != 0)
    return 43;
  for (uint32_t seq = 0; seq < it->n; seq++)
    if (send_msg(c, it->salt, seq, SZ_MIXED, 5 * SEC) != 0)
      return 44;
  atomic_store(&g_sh->committed, it->n);
  die_now();
}

static void run_svc_owner(struct it *it) {
  int fds = th_count_fds(), maps = th_count_memport_maps();
  it->mode = (unsigned)rnd_below(&it->rng, 4);
  it->n = it->mode == 3 ? (unsigned)rnd_below(&it->rng, 10) : 0;
  pid_t pid = spawn(child_svc_owner, it);
  assert_true(wait_at_least(&g_sh->stage, 1));
  memport_chan_t *c = NULL;
  if (it->mode == 0) {
    expect_child(it, pid, 128 + SIGKILL);
    /* The owner is gone: the name is not served (at once, not after a timeout). */
    th_assert_rc(memport_chan_connect(&c, it->name, &it->o, MEMPORT_NOWAIT), MEMPORT_ENOENT);
  } else {
    uint64_t t0 = th_now_ns();
    int rc = memport_chan_connect(&c, it->name, &it->o, 5 * SEC);
    uint64_t t1 = th_now_ns();
    if (it->mode < 3) {
      th_assert_rc(rc, MEMPORT_EPEER);
      assert_null(c);
      record_epeer(it, t0, t1);
    } else {
      th_assert_ok(rc);
      expect_count(it, recv_until_epeer(it, c, SZ_MIXED, SZ_MIXED), it->n, it->n);
      memport_chan_close(c);
    }
    expect_child(it, pid, 128 + SIGKILL);
  }
  /* The name is free again at once: here, and (sometimes) in a fresh process. */
  memport_service_t *s;
  th_assert_ok(memport_service_create(&s, it->name, 0));
  memport_service_close(s);
  if (it->round % 8 == 0) {
    reset_shared();
    it->mode = 0;
    pid = spawn(child_svc_owner, it); /* dies at once again, owning the name */
    expect_child(it, pid, 128 + SIGKILL);
    fresh_process("serve", it->name);
  }
  check_no_leak(it, fds, maps);
}

static int child_svc_client(void *arg) {
  struct it *it = arg;
  memport_port_t *p;
  if (memport_port_connect(&p, it->name, 5 * SEC) != 0)
    return 50;
  atomic_store(&g_sh->stage, 1);
  if (it->mode == 0)
    die_now(); /* connected, no HELLO */
  memport_chan_t *c;
  if (memport_chan_open(&c, p, &it->o, 5 * SEC) != 0)
    return 51; /* mode 1 is killed in here or later */
  atomic_store(&g_sh->stage, 2);
  if (it->mode == 2)
    die_now();
  for (uint32_t seq = 0;; seq++) {
    if (send_msg(c, it->salt, seq, SZ_MIXED, 5 * SEC) != 0)
      return 52;
    atomic_store(&g_sh->committed, seq + 1);
  }
}

static void run_svc_client(struct it *it) {
  int fds = th_count_fds(), maps = th_count_memport_maps();
  it->mode = (unsigned)rnd_below(&it->rng, 3);
  memport_service_t *svc;
  th_assert_ok(memport_service_create(&svc, it->name, 0));
  pid_t pid = spawn(child_svc_client, it);
  struct killer k;
  if (it->mode == 1)
    killer_start(&k, pid, rnd_below(&it->rng, 3000) * US, &g_sh->stage, 1);
  memport_chan_t *c = NULL;
  uint64_t t0 = th_now_ns();
  int rc = memport_chan_accept(&c, svc, &it->o, 5 * SEC);
  uint64_t t1 = th_now_ns();
  if (it->mode == 1)
    killer_join(&k);
  if (it->mode == 0 || (it->mode == 1 && rc == MEMPORT_EPEER)) {
    th_assert_rc(rc, MEMPORT_EPEER);
    record_epeer(it, t0, t1);
  } else {
    th_assert_ok(rc);
    uint32_t got = recv_until_epeer(it, c, SZ_MIXED, SZ_MIXED);
    uint32_t committed = atomic_load(&g_sh->committed);
    expect_count(it, got, committed, committed + 1);
    memport_chan_close(c);
  }
  expect_child(it, pid, 128 + SIGKILL);
  /* The service takes the next connection as if nothing happened. */
  memport_port_t *p, *q;
  th_assert_ok(memport_port_connect(&p, it->name, SEC));
  th_assert_ok(memport_service_accept(svc, &q, SEC));
  memport_port_close(p);
  memport_port_close(q);
  memport_service_close(svc);
  check_no_leak(it, fds, maps);
}

static int child_publisher(void *arg) {
  struct it *it = arg;
  memport_region_t *r;
  memport_publication_t *p;
  void *map;
  if (memport_region_create(&r, 4096, 0) != 0 || memport_region_map(r, 0, &map) != 0)
    return 60;
  pattern(map, 4096, it->salt, 0);
  if (memport_region_publish(&p, r, it->name, NULL, NULL) != 0)
    return 61;
  atomic_store(&g_sh->stage, 1);
  th_sleep_ns(it->delay_ns);
  die_now();
}

static int child_opener(void *arg) {
  struct it *it = arg;
  atomic_store(&g_sh->stage, 1);
  for (;;) {
    memport_region_t *r;
    if (memport_region_open(&r, it->name, 5 * SEC) != 0)
      return 70;
    void *map;
    if (memport_region_map(r, MEMPORT_MAP_READONLY, &map) != 0 || !pattern_ok(map, 4096, it->salt, 0))
      return 71;
    memport_unmap(map);
    memport_region_close(r);
  }
}

static void open_and_check(const struct it *it) {
  memport_region_t *r;
  th_assert_ok(memport_region_open(&r, it->name, 5 * SEC));
  void *map;
  th_assert_ok(memport_region_map(r, MEMPORT_MAP_READONLY, &map));
  assert_true(pattern_ok(map, 4096, it->salt, 0));
  memport_unmap(map);
  memport_region_close(r);
}

static void run_region(struct it *it) {
  int fds = th_count_fds(), maps = th_count_memport_maps();
  it->delay_ns = rnd_below(&it->rng, 2) ? 0 : rnd_below(&it->rng, 2000) * US;
  if (it->kp == KP_REGION_PUBLISHER) {
    pid_t pid = spawn(child_publisher, it);
    assert_true(wait_at_least(&g_sh->stage, 1));
    memport_region_t *r = NULL;
    uint64_t t0 = th_now_ns();
    int rc = memport_region_open(&r, it->name, MEMPORT_NOWAIT);
    uint64_t t1 = th_now_ns();
    if (rc == 0) {
      void *map;
      th_assert_ok(memport_region_map(r, MEMPORT_MAP_READONLY, &map));
      assert_true(pattern_ok(map, 4096, it->salt, 0));
      memport_unmap(map);
      memport_region_close(r);
    } else if (rc == MEMPORT_EPEER) {
      record_epeer(it, t0, t1);
    } else if (rc != MEMPORT_ENOENT && rc != MEMPORT_ETIMEDOUT) {
      fail_msg("%s (round %u): open gave %s", kp_name[it->kp], it->round, memport_err_name(rc));
    }
    expect_child(it, pid, 128 + SIGKILL);
    /* Stale now: not found at once; then ours to publish at once. */
    th_assert_rc(memport_region_open(&r, it->name, MEMPORT_NOWAIT), MEMPORT_ENOENT);
    if (it->round % 8 == 0)
      fresh_process("publish", it->name);
  }
  memport_region_t *mine;
  void *map;
  memport_publication_t *pub;
  th_assert_ok(memport_region_create(&mine, 4096, 0));
  th_assert_ok(memport_region_map(mine, 0, &map));
  pattern(map, 4096, it->salt, 0);
  th_assert_ok(memport_region_publish(&pub, mine, it->name, NULL, NULL));
  if (it->kp == KP_REGION_OPENER) {
    /* Openers killed at random moments do not disturb the publication. */
    pid_t pid = spawn(child_opener, it);
    struct killer k;
    killer_start(&k, pid, rnd_below(&it->rng, 5000) * US, &g_sh->stage, 1);
    killer_join(&k);
    expect_child(it, pid, 128 + SIGKILL);
  }
  open_and_check(it);
  memport_publication_close(pub);
  memport_unmap(map);
  memport_region_close(mine);
  check_no_leak(it, fds, maps);
}

/* ------------------------------------------------------------------------------------------ */
/* The tests.                                                                                   */

static void run_kp(enum kp kp, unsigned rounds, void (*fn)(struct it *)) {
  if (g_only != NULL && strstr(kp_name[kp], g_only) == NULL)
    return;
  for (unsigned r = 0; r < rounds; r++) {
    struct it it;
    it_init(&it, kp, r);
    fn(&it);
  }
}

static unsigned rounds(unsigned normal) {
  unsigned n = g_rounds != 0 ? g_rounds : normal;
  if (th_under_valgrind())
    n = (n + 9) / 10;
  return n;
}

static void test_peer_killed_during_the_handshake_gives_epeer(void **state) {
  (void)state;
  run_kp(KP_OPEN_BEFORE_HELLO, rounds(30), run_open);
  run_kp(KP_OPEN_AFTER_HELLO, rounds(45), run_open);
  run_kp(KP_OPEN_RANDOM, rounds(60), run_open);
}

static void test_producer_killed_delivers_every_committed_message_then_epeer(void **state) {
  (void)state;
  run_kp(KP_AFTER_COMMIT, rounds(60), run_producer);
  run_kp(KP_HOLDING_ALLOCATED, rounds(37), run_producer);
  run_kp(KP_STREAM_RANDOM, rounds(60), run_producer);
  run_kp(KP_SEND_NOTICES_FIRST, rounds(30), run_producer);
  run_kp(KP_STASH_FULL, rounds(12), run_producer);
}

static void test_consumer_killed_gives_epeer_and_the_pool_back(void **state) {
  (void)state;
  run_kp(KP_HOLDING_RECEIVED, rounds(45), run_consumer);
  run_kp(KP_BLOCKED_SEND, rounds(37), run_consumer);
  run_kp(KP_SENDER_WITH_ROOM, rounds(22), run_consumer);
}

static void test_owner_killed_around_connect_accept_and_open_frees_the_name(void **state) {
  (void)state;
  run_kp(KP_SVC_OWNER, rounds(36), run_svc_owner);
  run_kp(KP_SVC_CLIENT, rounds(36), run_svc_client);
  run_kp(KP_REGION_PUBLISHER, rounds(36), run_region);
  run_kp(KP_REGION_OPENER, rounds(18), run_region);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void test_epeer_latency_summary(void **state) {
  (void)state;
  unsigned total = 0, kps = 0;
  printf("# %-48s %6s %6s %9s\n", "kill point", "iters", "EPEER", "max ms*");
  for (int k = 0; k < KP_COUNT; k++) {
    printf("# %-48s %6u %6u %9.2f\n", kp_name[k], g_iters[k], g_epeers[k], g_kp_max[k]);
    total += g_iters[k];
    kps += g_iters[k] != 0;
  }
  printf("# (* from the kill to MEMPORT_EPEER, or from the call when the peer was dead before it)\n");
  if (g_nlat == 0)
    return;
  qsort(g_lat, g_nlat, sizeof g_lat[0], cmp_double);
  qsort(g_lat_exit, g_nlat, sizeof g_lat_exit[0], cmp_double);
  size_t i50 = g_nlat / 2, i99 = (size_t)((g_nlat - 1) * 0.99);
  printf("# %u iterations over %u kill points (seed %llu): %u MEMPORT_EPEER measured\n", total, kps,
         (unsigned long long)g_seed, g_nlat);
  printf("#   after the peer exited: p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", g_lat_exit[i50], g_lat_exit[i99],
         g_lat_exit[g_nlat - 1]);
  printf("#   after the kill:        p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", g_lat[i50], g_lat[i99],
         g_lat[g_nlat - 1]);
  if (g_only != NULL)
    return;
  assert_int_equal(kps, KP_COUNT);
  if (!th_under_valgrind() && g_rounds == 0)
    assert_true(total >= 500);
}

int main(int argc, char **argv) {
  static const struct th_helper helpers[] = {{"serve", helper_serve}, {"publish", helper_publish}, {NULL, NULL}};
  th_helper_dispatch(argc, argv, helpers);
  g_argv0 = argv[0];
  signal(SIGPIPE, SIG_IGN);
  const char *s = getenv("MEMPORT_TEST_SEED");
  g_seed = s != NULL ? strtoull(s, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
  s = getenv("MEMPORT_DEATH_ROUNDS");
  g_rounds = s != NULL ? (unsigned)strtoul(s, NULL, 0) : 0;
  g_only = getenv("MEMPORT_DEATH_ONLY");
  printf("# seed %llu (MEMPORT_TEST_SEED=%llu reproduces this run)\n", (unsigned long long)g_seed,
         (unsigned long long)g_seed);
  g_sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (g_sh == MAP_FAILED)
    return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_peer_killed_during_the_handshake_gives_epeer),
      cmocka_unit_test(test_producer_killed_delivers_every_committed_message_then_epeer),
      cmocka_unit_test(test_consumer_killed_gives_epeer_and_the_pool_back),
      cmocka_unit_test(test_owner_killed_around_connect_accept_and_open_frees_the_name),
      cmocka_unit_test(test_epeer_latency_summary),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
