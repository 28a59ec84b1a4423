/* SPDX-License-Identifier: MIT */
/* test_bridge_hard.c: the bridge under hostile conditions: each bridge killed -9 and restarted, CURVE with wrong keys, malformed frames from a raw ZeroMQ peer. */
#include "topic_helpers.h"

#include "../bridge/frame.h"
#include "memport_bridge.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zmq.h>

#define NSLOT 4

/* What the forked bridges and subscribers tell the test, through a MAP_SHARED page. */
struct slot {
  _Atomic int port;  /* export: the port it bound */
  _Atomic int up;    /* 1 once created */
  _Atomic uint64_t messages, lost, skipped, malformed, restarts, connected;
};
struct shared {
  struct slot s[NSLOT];
  _Atomic uint64_t sub_count, sub_last, sub_ends, sub_bad;
  _Atomic int sub_stop;
};
static struct shared *g_sh;

static void shared_reset(void) {
  if (g_sh == NULL) {
    g_sh = mmap(NULL, sizeof *g_sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(g_sh != MAP_FAILED);
  }
  memset(g_sh, 0, sizeof *g_sh);
}

static bool vg(void) { return th_under_valgrind(); }
/* Messages to see at each step: far fewer under valgrind. */
static uint64_t want_n(void) { return vg() ? 10 : 200; }

/* ------------------------------------------------------------------------------------------ */
/* A bridge in its own process: runs until SIGTERM, publishing its stats into its slot.        */

struct bargs {
  int dir;
  char name[MEMPORT_NAME_MAX + 1];
  char endpoint[160];
  int slot;
  const char *curve_secret, *curve_public, *curve_server;
  const char *allowed[2];
};

static memport_bridge_t *volatile g_b;
static volatile sig_atomic_t g_term;
static void on_term(int sig) {
  (void)sig;
  g_term = 1;
  if (g_b != NULL)
    memport_bridge_stop(g_b);
}

static void publish_stats(memport_bridge_t *b, struct slot *sl) {
  memport_bridge_stats_t st = {.struct_size = sizeof st};
  if (memport_bridge_stats(b, &st) != 0)
    return;
  atomic_store(&sl->messages, st.messages);
  atomic_store(&sl->lost, st.lost);
  atomic_store(&sl->skipped, st.skipped);
  atomic_store(&sl->malformed, st.malformed);
  atomic_store(&sl->restarts, st.restarts);
  atomic_store(&sl->connected, st.connected);
}

static int child_bridge(void *arg) {
  struct bargs *a = arg;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, NULL);
  memport_bridge_opts_t o;
  memport_bridge_opts_init(&o);
  o.direction = a->dir;
  o.kind = MEMPORT_BRIDGE_TOPIC;
  o.name = a->name;
  o.endpoint = a->endpoint;
  if (a->dir == MEMPORT_BRIDGE_IMPORT) {
    opts(&o.topic, 16, MEMPORT_TOPIC_BLOCK, 8); /* buffer_size set: the topic exists at once */
  }
  o.curve_secret = a->curve_secret;
  o.curve_public = a->curve_public;
  o.curve_server = a->curve_server;
  if (a->allowed[0] != NULL)
    o.curve_allowed = a->allowed;
  char ep_wait[64];
  if (a->endpoint[0] == '\0') { /* the test binds after forking us: its port comes through the page */
    uint64_t until = th_now_ns() + 60 * SEC;
    while (atomic_load(&g_sh->s[a->slot].port) == 0) {
      if (th_now_ns() > until || g_term)
        return 13;
      th_sleep_ms(5);
    }
    snprintf(ep_wait, sizeof ep_wait, "tcp://127.0.0.1:%d", atomic_load(&g_sh->s[a->slot].port));
    o.endpoint = ep_wait;
  }
  memport_bridge_t *b = NULL;
  int rc;
  uint64_t end = th_now_ns() + 30 * SEC;
  /* A port (or, after a kill -9, the topic's name) may take a moment to be free again. */
  while ((rc = memport_bridge_create(&b, &o)) == MEMPORT_EBUSY && th_now_ns() < end && !g_term)
    th_sleep_ms(50);
  if (rc != 0) {
    fprintf(stderr, "bridge create (%s %s): %s\n", a->dir == MEMPORT_BRIDGE_EXPORT ? "export" : "import",
            a->endpoint, memport_err_name(rc));
    return 10;
  }
  g_b = b;
  struct slot *sl = &g_sh->s[a->slot];
  if (a->dir == MEMPORT_BRIDGE_EXPORT) {
    char ep[128];
    if (memport_bridge_endpoint(b, ep, sizeof ep) != 0 || strrchr(ep, ':') == NULL)
      return 12;
    atomic_store(&sl->port, atoi(strrchr(ep, ':') + 1));
  }
  atomic_store(&sl->up, 1);
  rc = 0;
  while (!g_term && rc == 0) {
    rc = memport_bridge_run(b, 20 * MS);
    publish_stats(b, sl);
  }
  g_b = NULL;
  memport_bridge_close(b);
  return rc != 0 ? 11 : 0;
}

/* The children of the running test: a failed test's are killed by the teardown, so that they
 * cannot write into the next test's slots. */
static pid_t g_kids[8];

static pid_t track(pid_t pid) {
  for (unsigned i = 0; i < sizeof g_kids / sizeof g_kids[0]; i++)
    if (g_kids[i] <= 0) {
      g_kids[i] = pid;
      break;
    }
  return pid;
}

static void untrack(pid_t pid) {
  for (unsigned i = 0; i < sizeof g_kids / sizeof g_kids[0]; i++)
    if (g_kids[i] == pid)
      g_kids[i] = 0;
}

static pid_t start_bridge(struct bargs *a) {
  atomic_store(&g_sh->s[a->slot].up, 0);
  return track(th_fork(child_bridge, a, vg() ? 600 : 120));
}

/* Wait (bounded, ending if a child ended) until cond holds; `step` runs each turn. */
#define WAIT_FOR(kids, nkids, step, cond)                                                      \
  do {                                                                                         \
    uint64_t end_ = th_now_ns() + (vg() ? 240 : 60) * SEC;                                     \
    while (!(cond)) {                                                                          \
      for (int k_ = 0; k_ < (nkids); k_++) {                                                   \
        int st_;                                                                               \
        if ((kids)[k_] > 0 && th_exited((kids)[k_], &st_))                                     \
          fail_msg("child %d ended early (%d) waiting for %s", k_, st_, #cond);                \
      }                                                                                        \
      if (th_now_ns() > end_)                                                                  \
        fail_msg("timed out waiting for %s", #cond);                                           \
      step;                                                                                    \
    }                                                                                          \
  } while (0)

static void stop_child(pid_t *pid) {
  untrack(*pid);
  assert_int_equal(kill(*pid, SIGTERM), 0);
  assert_int_equal(th_wait(*pid, vg() ? 120 : 30), 0);
  *pid = 0;
}

static void kill9(pid_t *pid) {
  untrack(*pid);
  assert_int_equal(kill(*pid, SIGKILL), 0);
  assert_int_equal(th_wait(*pid, 30), 128 + SIGKILL);
  *pid = 0;
}

static void set_endpoint(struct bargs *a, int port) {
  snprintf(a->endpoint, sizeof a->endpoint, "tcp://127.0.0.1:%d", port);
}

/* ------------------------------------------------------------------------------------------ */
/* A subscriber of the imported topic: checks every message, sequence numbers only increase;    */
/* when its publisher ends it connects again, until told to stop.                               */

static char g_subname[MEMPORT_NAME_MAX + 1];

static int child_sub(void *arg) {
  (void)arg;
  while (!atomic_load(&g_sh->sub_stop)) {
    memport_sub_t *s = NULL;
    int rc;
    uint64_t end = th_now_ns() + 60 * SEC;
    while ((rc = memport_sub_connect(&s, g_subname, NULL, 100 * MS)) != 0) {
      if (atomic_load(&g_sh->sub_stop))
        return 0;
      if (th_now_ns() > end) {
        fprintf(stderr, "subscriber: connect: %s\n", memport_err_name(rc));
        return 20;
      }
      th_sleep_ms(10);
    }
    for (;;) {
      memport_buf_t b;
      rc = memport_sub_recv(s, &b, 50 * MS);
      if (rc == MEMPORT_ETIMEDOUT) {
        if (atomic_load(&g_sh->sub_stop))
          break;
        continue;
      }
      if (rc == MEMPORT_EPEER || rc == MEMPORT_ECLOSED) {
        atomic_fetch_add(&g_sh->sub_ends, 1);
        break;
      }
      if (rc != 0) {
        fprintf(stderr, "subscriber: recv: %s\n", memport_err_name(rc));
        return 21;
      }
      uint64_t seq = 0;
      if (b.len >= 8)
        memcpy(&seq, b.data, 8);
      if (seq == 0 || msg_bad(b.data, b.len, seq) != 0 || seq <= atomic_load(&g_sh->sub_last))
        atomic_store(&g_sh->sub_bad, seq != 0 ? seq : UINT64_MAX);
      atomic_store(&g_sh->sub_last, seq);
      atomic_fetch_add(&g_sh->sub_count, 1);
      memport_sub_release(s, &b);
    }
    memport_sub_close(s);
  }
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* a. Kill -9 and restart the import bridge, then the export bridge.                            */

#define A_BUFFERS 8

static memport_pub_t *g_pa;
static uint64_t g_seq = 1;

/* Publish the next message if it can go within a moment. */
static void publish_step(void) {
  int rc = pub_msg_loaned(g_pa, g_seq, 10 * MS);
  if (rc == 0)
    g_seq++;
  else if (rc != MEMPORT_ETIMEDOUT && rc != MEMPORT_EAGAIN)
    fail_msg("publish: %s", memport_err_name(rc));
}

static void test_restart_each(void **state) {
  (void)state;
  shared_reset();
  char aname[MEMPORT_NAME_MAX + 1];
  snprintf(aname, sizeof aname, "%s", th_unique_name("bha"));
  snprintf(g_subname, sizeof g_subname, "%s", th_unique_name("bhb"));
  memport_topic_opts_t o;
  opts(&o, 16, MEMPORT_TOPIC_BLOCK, A_BUFFERS);
  th_assert_ok(memport_pub_create(&g_pa, aname, &o));
  g_seq = 1;

  struct bargs ex = {.dir = MEMPORT_BRIDGE_EXPORT, .slot = 0};
  snprintf(ex.name, sizeof ex.name, "%s", aname);
  snprintf(ex.endpoint, sizeof ex.endpoint, "tcp://127.0.0.1:*");
  struct bargs im = {.dir = MEMPORT_BRIDGE_IMPORT, .slot = 1};
  snprintf(im.name, sizeof im.name, "%s", g_subname);

  pid_t kids[3] = {0, 0, 0}; /* export, import, subscriber */
  kids[0] = start_bridge(&ex);
  WAIT_FOR(kids, 3, memport_pub_process(g_pa); th_sleep_ms(2), atomic_load(&g_sh->s[0].up) == 1);
  int port = atomic_load(&g_sh->s[0].port);
  assert_true(port > 0 && port < 65536);
  set_endpoint(&im, port);
  kids[1] = start_bridge(&im);
  kids[2] = track(th_fork(child_sub, NULL, vg() ? 900 : 300));

  /* Messages flow end to end. */
  WAIT_FOR(kids, 3, publish_step(), atomic_load(&g_sh->sub_count) >= want_n());

  /* The import killed: the subscriber sees its publisher die; a new import on the same port
   * serves the topic again, and the subscriber's messages flow again. */
  kill9(&kids[1]);
  WAIT_FOR(kids, 3, publish_step(), atomic_load(&g_sh->sub_ends) >= 1);
  kids[1] = start_bridge(&im);
  uint64_t mark = atomic_load(&g_sh->sub_count);
  WAIT_FOR(kids, 3, publish_step(), atomic_load(&g_sh->sub_count) >= mark + want_n());
  /* What the export sent before the new import heard of it is reported, not silent. */
  WAIT_FOR(kids, 3, publish_step(), atomic_load(&g_sh->s[1].skipped) >= 1);
  assert_int_equal(atomic_load(&g_sh->s[1].malformed), 0);

  /* The export killed: restarted on the same port; the import reconnects by itself and sees a
   * new exporter run. */
  kill9(&kids[0]);
  ex.slot = 2;
  set_endpoint(&ex, port);
  for (int i = 0; i < 20; i++)
    publish_step(); /* the dead export's share is reclaimed by the publisher meanwhile */
  kids[0] = start_bridge(&ex);
  WAIT_FOR(kids, 3, publish_step(), atomic_load(&g_sh->s[2].up) == 1);
  assert_int_equal(atomic_load(&g_sh->s[2].port), port);
  mark = atomic_load(&g_sh->sub_count);
  WAIT_FOR(kids, 3, publish_step(), atomic_load(&g_sh->sub_count) >= mark + want_n());
  WAIT_FOR(kids, 3, publish_step(), atomic_load(&g_sh->s[1].restarts) >= 1);
  assert_int_equal(atomic_load(&g_sh->s[1].malformed), 0);
  assert_int_equal(atomic_load(&g_sh->sub_bad), 0);
  assert_int_equal(atomic_load(&g_sh->sub_ends), 1);

  /* Publisher A leaks nothing: one subscriber (the new export), and once the last messages
   * went through, every pool buffer can be loaned again. */
  memport_pub_stats_t ps = {.struct_size = sizeof ps};
  WAIT_FOR(kids, 3, th_sleep_ms(5),
           memport_pub_stats(g_pa, &ps) == 0 && ps.subscribers == 1 && ps.buffers_free == A_BUFFERS);
  assert_int_equal(ps.left, 1);
  memport_buf_t loans[A_BUFFERS];
  for (int i = 0; i < A_BUFFERS; i++)
    th_assert_ok(memport_pub_loan(g_pa, BUF_SIZE, &loans[i], MEMPORT_NOWAIT));
  for (int i = 0; i < A_BUFFERS; i++)
    th_assert_ok(memport_pub_discard(g_pa, &loans[i]));

  fprintf(stderr,
          "restart: published %llu, subscriber got %llu (last %llu), import: skipped %llu after its restart, "
          "%llu exporter restart(s), %llu lost; publisher A: %llu left, %llu joined\n",
          (unsigned long long)(g_seq - 1), (unsigned long long)atomic_load(&g_sh->sub_count),
          (unsigned long long)atomic_load(&g_sh->sub_last), (unsigned long long)atomic_load(&g_sh->s[1].skipped),
          (unsigned long long)atomic_load(&g_sh->s[1].restarts), (unsigned long long)atomic_load(&g_sh->s[1].lost),
          (unsigned long long)ps.left, (unsigned long long)ps.joined);
  atomic_store(&g_sh->sub_stop, 1);
  untrack(kids[2]);
  assert_int_equal(th_wait(kids[2], 60), 0);
  stop_child(&kids[1]);
  stop_child(&kids[0]);
  assert_int_equal(atomic_load(&g_sh->sub_bad), 0);
  th_assert_ok(memport_pub_close(g_pa));
  g_pa = NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* b. CURVE: an authorised importer receives; an unknown client key or a wrong server key gets  */
/* nothing.                                                                                     */

static void test_curve(void **state) {
  (void)state;
  if (!zmq_has("curve")) {
    fprintf(stderr, "skipped: this libzmq has no CURVE\n");
    skip();
  }
  shared_reset();
  char spub[41], ssec[41], c1pub[41], c1sec[41], c2pub[41], c2sec[41], xpub[41], xsec[41];
  assert_int_equal(zmq_curve_keypair(spub, ssec), 0);
  assert_int_equal(zmq_curve_keypair(c1pub, c1sec), 0);
  assert_int_equal(zmq_curve_keypair(c2pub, c2sec), 0);
  assert_int_equal(zmq_curve_keypair(xpub, xsec), 0); /* a server key nobody serves */

  char aname[MEMPORT_NAME_MAX + 1];
  snprintf(aname, sizeof aname, "%s", th_unique_name("bca"));
  memport_topic_opts_t o;
  opts(&o, 16, MEMPORT_TOPIC_DROP_OLDEST, 8);
  th_assert_ok(memport_pub_create(&g_pa, aname, &o));

  struct bargs ex = {.dir = MEMPORT_BRIDGE_EXPORT, .slot = 0, .curve_secret = ssec, .curve_public = spub};
  ex.allowed[0] = c1pub;
  snprintf(ex.name, sizeof ex.name, "%s", aname);
  snprintf(ex.endpoint, sizeof ex.endpoint, "tcp://127.0.0.1:*");
  pid_t kids[4] = {0, 0, 0, 0};
  kids[0] = start_bridge(&ex);
  WAIT_FOR(kids, 4, memport_pub_process(g_pa); th_sleep_ms(2), atomic_load(&g_sh->s[0].up) == 1);
  int port = atomic_load(&g_sh->s[0].port);

  struct bargs im[3];
  const char *keys[3][3] = {{c1pub, c1sec, spub}, {c2pub, c2sec, spub}, {c1pub, c1sec, xpub}};
  for (int i = 0; i < 3; i++) {
    memset(&im[i], 0, sizeof im[i]);
    im[i].dir = MEMPORT_BRIDGE_IMPORT;
    im[i].slot = 1 + i;
    snprintf(im[i].name, sizeof im[i].name, "%s", th_unique_name("bcb"));
    set_endpoint(&im[i], port);
    im[i].curve_public = keys[i][0];
    im[i].curve_secret = keys[i][1];
    im[i].curve_server = keys[i][2];
    kids[1 + i] = start_bridge(&im[i]);
  }
  WAIT_FOR(kids, 4, th_sleep_ms(2),
           atomic_load(&g_sh->s[1].up) && atomic_load(&g_sh->s[2].up) && atomic_load(&g_sh->s[3].up));
  /* Publish until the authorised one has received plenty, for 2 s at least. */
  uint64_t t0 = th_now_ns(), seq = 1;
  WAIT_FOR(kids, 4,
           {
             if (pub_msg_loaned(g_pa, seq, 10 * MS) == 0)
               seq++;
             th_sleep_ms(1);
           },
           atomic_load(&g_sh->s[1].messages) >= want_n() && th_now_ns() - t0 > 2 * SEC);
  fprintf(stderr, "curve: %llu published, authorised import %llu, unknown client %llu, wrong server key %llu\n",
          (unsigned long long)(seq - 1), (unsigned long long)atomic_load(&g_sh->s[1].messages),
          (unsigned long long)atomic_load(&g_sh->s[2].messages), (unsigned long long)atomic_load(&g_sh->s[3].messages));
  assert_int_equal(atomic_load(&g_sh->s[2].messages), 0); /* client key not allowed */
  assert_int_equal(atomic_load(&g_sh->s[3].messages), 0); /* wrong server key */
  assert_int_equal(atomic_load(&g_sh->s[2].restarts), 0);
  assert_int_equal(atomic_load(&g_sh->s[3].restarts), 0);
  assert_int_equal(atomic_load(&g_sh->s[1].malformed), 0);
  for (int i = 3; i >= 0; i--)
    stop_child(&kids[i]);
  th_assert_ok(memport_pub_close(g_pa));
  g_pa = NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* c. Malformed frames from a raw ZeroMQ peer: only the valid ones reach the topic, in order.   */

static void *g_push;

static void send_parts(const void *const *parts, const size_t *lens, int n) {
  for (int i = 0; i < n; i++)
    assert_int_equal(zmq_send(g_push, parts[i], lens[i], i + 1 < n ? ZMQ_SNDMORE : 0), (int)lens[i]);
}

/* A valid header for a payload of `len` bytes. */
static void header(unsigned char *h, uint64_t stream, uint64_t seq, uint64_t len) {
  struct memport__bridge_frame f = {.stream = stream, .seq = seq, .len = len, .missed = 0, .max_len = BUF_SIZE};
  memport__bridge_frame_build(h, &f);
}

static unsigned char g_payload[BUF_SIZE];

/* The valid message number `id` (payload: message `id` of topic_helpers) as frame `seq`. */
static void send_valid(uint64_t stream, uint64_t seq, uint64_t id) {
  unsigned char h[MEMPORT__BRIDGE_HDR];
  size_t len = len_of(id);
  make_msg(g_payload, len, id);
  header(h, stream, seq, len);
  const void *parts[2] = {h, g_payload};
  size_t lens[2] = {sizeof h, len};
  send_parts(parts, lens, 2);
}

static void test_malformed(void **state) {
  (void)state;
  shared_reset();
  /* The import is forked before this process starts ZeroMQ's threads: a fork while one of them
   * holds the allocator's lock (ASan's has no fork handler) would leave the child hung in malloc.
   * It learns the port through the shared page. */
  struct bargs im = {.dir = MEMPORT_BRIDGE_IMPORT, .slot = 0};
  snprintf(im.name, sizeof im.name, "%s", th_unique_name("bmb"));
  im.endpoint[0] = '\0';
  pid_t kids[1];
  kids[0] = start_bridge(&im);
  void *ctx = zmq_ctx_new();
  assert_non_null(ctx);
  g_push = zmq_socket(ctx, ZMQ_PUSH);
  assert_non_null(g_push);
  int v = 0;
  assert_int_equal(zmq_setsockopt(g_push, ZMQ_LINGER, &v, sizeof v), 0);
  v = 30000;
  assert_int_equal(zmq_setsockopt(g_push, ZMQ_SNDTIMEO, &v, sizeof v), 0);
  assert_int_equal(zmq_bind(g_push, "tcp://127.0.0.1:*"), 0);
  char ep[128];
  size_t epl = sizeof ep;
  assert_int_equal(zmq_getsockopt(g_push, ZMQ_LAST_ENDPOINT, ep, &epl), 0);

  assert_non_null(strrchr(ep, ':'));
  atomic_store(&g_sh->s[0].port, atoi(strrchr(ep, ':') + 1));
  memport_sub_t *s = NULL;
  WAIT_FOR(kids, 1, th_sleep_ms(10), memport_sub_connect(&s, im.name, NULL, 100 * MS) == 0);

  const uint64_t S = 0x1122334455667788u;
  unsigned char h[64];
  const void *parts[3];
  size_t lens[3];
  int bad = 0;
  uint64_t id = 1;
  make_msg(g_payload, len_of(1), 1);

  /* A single part (a valid header, no payload). */
  header(h, S, 1, 0);
  parts[0] = h;
  lens[0] = MEMPORT__BRIDGE_HDR;
  send_parts(parts, lens, 1); bad++;
  /* Three parts. */
  header(h, S, 1, 16);
  parts[1] = g_payload;
  lens[1] = 16;
  parts[2] = g_payload;
  lens[2] = 16;
  send_parts(parts, lens, 3); bad++;
  /* A header of 47 bytes. */
  lens[0] = MEMPORT__BRIDGE_HDR - 1;
  send_parts(parts, lens, 2); bad++;
  lens[0] = MEMPORT__BRIDGE_HDR;
  /* Bad magic, bad version. */
  h[0] ^= 0x01;
  send_parts(parts, lens, 2); bad++;
  h[0] ^= 0x01;
  h[4] = 2;
  send_parts(parts, lens, 2); bad++;
  /* len not the payload's. */
  header(h, S, 1, 17);
  send_parts(parts, lens, 2); bad++;
  /* seq 0, stream 0. */
  header(h, S, 0, 16);
  send_parts(parts, lens, 2); bad++;
  header(h, 0, 1, 16);
  send_parts(parts, lens, 2); bad++;

  /* Valid ones, with a repeated and an old sequence number, and a one-part message, between. */
  send_valid(S, 1, id++);
  send_valid(S, 2, id++);
  send_valid(S, 2, 999); bad++;
  send_valid(S, 3, id++);
  send_valid(S, 1, 999); bad++;
  header(h, S, 4, 0);
  send_parts(parts, lens, 1); bad++;
  send_valid(S, 4, id++);
  send_valid(S, 6, id++); /* a gap: counted lost, delivered */
  for (int i = 0; i < 20; i++)
    send_valid(S, 7 + (uint64_t)i, id++);
  uint64_t nvalid = id - 1;

  for (uint64_t k = 1; k <= nvalid; k++) {
    int rc = sub_expect(s, k, (vg() ? 120 : 30) * SEC);
    if (rc != 0)
      fail_msg("message %llu: %d", (unsigned long long)k, rc);
  }
  memport_buf_t b;
  th_assert_rc(memport_sub_recv(s, &b, 300 * MS), MEMPORT_ETIMEDOUT);
  WAIT_FOR(kids, 1, th_sleep_ms(5), atomic_load(&g_sh->s[0].messages) == nvalid);
  th_sleep_ms(50); /* one more stats turn */
  fprintf(stderr, "malformed: %d bad frames sent, %llu counted; %llu valid delivered\n", bad,
          (unsigned long long)atomic_load(&g_sh->s[0].malformed), (unsigned long long)nvalid);
  assert_int_equal(atomic_load(&g_sh->s[0].malformed), (uint64_t)bad);
  assert_int_equal(atomic_load(&g_sh->s[0].messages), nvalid);
  assert_int_equal(atomic_load(&g_sh->s[0].lost), 1);
  assert_int_equal(atomic_load(&g_sh->s[0].skipped), 0);
  assert_int_equal(atomic_load(&g_sh->s[0].restarts), 0);

  stop_child(&kids[0]);
  th_assert_rc(memport_sub_recv(s, &b, 10 * SEC), MEMPORT_ECLOSED);
  memport_sub_close(s);
  zmq_close(g_push);
  zmq_ctx_term(ctx);
}

/* After a test, failed or not: no child of it left, no publisher. */
static int teardown(void **state) {
  (void)state;
  for (unsigned i = 0; i < sizeof g_kids / sizeof g_kids[0]; i++)
    if (g_kids[i] > 0) {
      kill(g_kids[i], SIGKILL);
      th_wait(g_kids[i], 30);
      g_kids[i] = 0;
    }
  memport_pub_close(g_pa);
  g_pa = NULL;
  return 0;
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_malformed, teardown),
      cmocka_unit_test_teardown(test_curve, teardown),
      cmocka_unit_test_teardown(test_restart_each, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
