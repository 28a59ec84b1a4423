/* SPDX-License-Identifier: MIT */
/* test_topic_death.c: kill -9 of a topic subscriber or publisher at many points: the others go on, references come back, nothing leaks. */
#include "topic_helpers.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define NBUF 6

/* The sequence number a message carries, or 0 when it is not a whole message. */
static uint64_t msg_seq(const memport_buf_t *b) {
  uint64_t v = 0;
  if (b->len < 8)
    return 0;
  memcpy(&v, b->data, 8);
  return v != 0 && msg_bad(b->data, b->len, v) == 0 ? v : 0;
}

struct shared {
  _Atomic uint32_t stage;    /* how far the child got */
  _Atomic uint32_t taken;    /* messages the child received */
  _Atomic uint32_t released; /* and released */
};
static struct shared *g_sh;

static void shared_reset(void) {
  if (g_sh == NULL) {
    g_sh = mmap(NULL, sizeof *g_sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(g_sh != MAP_FAILED);
  }
  memset(g_sh, 0, sizeof *g_sh);
}

struct arg {
  char name[MEMPORT_NAME_MAX + 1];
  int point;   /* where to stop (see the children) */
  unsigned n;  /* messages */
};

/* Wait (bounded, ending if the child ended) until cond holds, running the publisher. */
#define WAIT_FOR(pub, kid, cond)                                                               \
  do {                                                                                         \
    uint64_t end_ = th_now_ns() + 60 * SEC;                                                    \
    int st_;                                                                                   \
    while (!(cond)) {                                                                          \
      if ((pub) != NULL)                                                                       \
        memport_pub_process(pub);                                                              \
      if (th_exited((kid), &st_))                                                              \
        fail_msg("child ended early (%d) waiting for %s", st_, #cond);                         \
      assert_true(th_now_ns() < end_);                                                         \
      th_sleep_ns(200 * US);                                                                   \
    }                                                                                          \
  } while (0)

/* ------------------------------------------------------------------------------------------ */
/* Subscribers killed.                                                                          */

/* Points: 0 connected at the port level, nothing sent; 1 HELLO sent, WELCOME never read;
 * 2 subscribed, reads nothing; 3 holds every pool message it takes; 4 receives and releases in a
 * loop until killed (released at random moments). */
static int child_sub(void *arg) {
  struct arg *a = arg;
  if (a->point <= 1) {
    memport_port_t *port;
    if (memport_port_connect(&port, a->name, 20 * SEC) != 0)
      return 2;
    if (a->point == 1) {
      memport_msg_t *m;
      memport_sem_t *sem;
      uint32_t hdr[2] = {0x5054504du, 1u | (1u << 16)}; /* HELLO, version 1 (lib/topic_proto.h) */
      if (memport_msg_create(&m) != 0 || memport_sem_create(&sem, 0, 0) != 0 ||
          memport_msg_set_bytes(m, hdr, sizeof hdr) != 0 || memport_msg_attach_sem(m, sem, 0) != 0 ||
          memport_port_send(port, m, 5 * SEC) != 0)
        return 3;
    }
    atomic_store(&g_sh->stage, 1);
    for (;;)
      pause();
  }
  memport_sub_t *s;
  if (memport_sub_connect(&s, a->name, NULL, 20 * SEC) != 0)
    return 4;
  atomic_store(&g_sh->stage, 1);
  memport_buf_t held[NBUF];
  unsigned nheld = 0;
  for (uint64_t last = 0; a->point >= 3;) {
    memport_buf_t b;
    int rc = memport_sub_recv(s, &b, 60 * SEC);
    uint64_t seq = rc == 0 ? msg_seq(&b) : 0;
    if (rc != 0 || seq <= last || (a->n == MEMPORT_TOPIC_BLOCK && seq != last + 1)) {
      fprintf(stderr, "subscriber: message %llu after %llu: %s\n", (unsigned long long)seq,
              (unsigned long long)last, memport_err_name(rc));
      return 5;
    }
    last = seq;
    atomic_fetch_add(&g_sh->taken, 1);
    if (a->point == 3 && b.len > INLINE_MAX && nheld < NBUF) {
      held[nheld++] = b;
      continue;
    }
    if (memport_sub_release(s, &b) != 0)
      return 6;
    atomic_fetch_add(&g_sh->released, 1);
  }
  (void)held; /* never released: the publisher takes them back at the kill */
  for (;;)
    pause();
}

/* A good subscriber: every message in order (under drop-oldest: increasing, with the losses
 * counted exactly: received + missed = published), then the orderly end. */
static int child_good(void *arg) {
  struct arg *a = arg;
  memport_sub_t *s;
  if (memport_sub_connect(&s, a->name, NULL, 20 * SEC) != 0)
    return 2;
  memport_buf_t b;
  int rc;
  uint64_t last = 0, received = 0;
  while ((rc = memport_sub_recv(s, &b, 60 * SEC)) == 0) {
    uint64_t seq = msg_seq(&b);
    if (seq == 0 || (a->n == MEMPORT_TOPIC_BLOCK ? seq != last + 1 : seq <= last)) {
      fprintf(stderr, "good subscriber: message %llu after %llu\n", (unsigned long long)seq, (unsigned long long)last);
      return 3;
    }
    last = seq;
    received++;
    if (memport_sub_release(s, &b) != 0)
      return 4;
  }
  if (rc != MEMPORT_ECLOSED) {
    fprintf(stderr, "good subscriber: recv gave %s after %llu\n", memport_err_name(rc), (unsigned long long)last);
    return 5;
  }
  uint64_t missed = 0;
  if (memport_sub_missed(s, &missed) != 0 || received + missed != last) {
    fprintf(stderr, "good subscriber: %llu received, %llu missed, last %llu\n", (unsigned long long)received,
            (unsigned long long)missed, (unsigned long long)last);
    return 6;
  }
  memport_sub_close(s);
  return 0;
}

/* A subscriber killed at `point` beside a good one in this process: the good one receives
 * everything, the publisher's blocked calls go on, the pool is whole again, nothing leaks. */
static void sub_killed(int point, int overflow, unsigned when) {
  shared_reset();
  struct arg a = {.point = point, .n = (unsigned)overflow}; /* n: the policy, for the children */
  snprintf(a.name, sizeof a.name, "%s", th_unique_name("topic"));
  memport_topic_opts_t o;
  opts(&o, 4, overflow, NBUF);
  memport_pub_t *pub;
  th_assert_ok(memport_pub_create(&pub, a.name, &o));
  pid_t good = th_fork(child_good, &a, 300);
  WAIT_FOR(pub, good, memport_pub_subscribers(pub) == 1);
  th_assert_ok(memport_pub_process(pub));
  int fds0 = th_count_fds(), maps0 = th_count_memport_maps();
  pid_t kid = th_fork(child_sub, &a, 300);
  WAIT_FOR(pub, kid, atomic_load(&g_sh->stage) >= 1);
  if (point >= 2)
    WAIT_FOR(pub, kid, memport_pub_subscribers(pub) == 2);
  else
    for (int i = 0; i < 20; i++) { /* the connection is accepted (and the HELLO read) */
      memport_pub_process(pub);
      th_sleep_ms(1);
    }
  uint64_t seq = 1;
  if (point == 2 && overflow == MEMPORT_TOPIC_BLOCK) {
    /* Its queue fills; the publisher blocks on it until the kill, then goes on. */
    for (; seq <= 4; seq++)
      th_assert_ok(pub_msg_loaned(pub, seq, 5 * SEC));
    th_assert_rc(pub_msg_loaned(pub, seq, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
    pid_t killer = fork();
    assert_true(killer >= 0);
    if (killer == 0) {
      th_sleep_ms(20 + when % 50);
      kill(kid, SIGKILL);
      _exit(0);
    }
    th_assert_ok(pub_msg_loaned(pub, seq, 30 * SEC)); /* goes on once the dead one is reclaimed */
    seq++;
    assert_int_equal(th_wait(killer, 30), 0);
  } else if (point >= 3) {
    /* Publish until it has taken `when` messages (it holds or releases them as it goes). */
    unsigned target = 1 + when % 12;
    while (atomic_load(&g_sh->taken) < target) {
      int rc = pub_msg_loaned(pub, seq, 10 * MS);
      if (rc == 0)
        seq++;
      else if (rc != MEMPORT_ETIMEDOUT)
        th_assert_ok(rc);
      int st;
      if (th_exited(kid, &st))
        fail_msg("subscriber ended early: %d", st);
    }
    if (point == 4)
      for (unsigned i = 0; i < when % 7; i++) /* kill it while it goes on receiving and releasing */
        if (pub_msg_loaned(pub, seq, MEMPORT_NOWAIT) == 0)
          seq++;
    kill(kid, SIGKILL);
  } else {
    kill(kid, SIGKILL);
  }
  assert_int_equal(th_wait(kid, 30), 128 + SIGKILL);
  /* Reclaimed: a loan that finds every buffer held waits for it. */
  memport_buf_t all[NBUF];
  for (int i = 0; i < NBUF; i++)
    th_assert_ok(memport_pub_loan(pub, 5000, &all[i], 30 * SEC));
  for (int i = 0; i < NBUF; i++)
    th_assert_ok(memport_pub_discard(pub, &all[i]));
  uint64_t end = th_now_ns() + 30 * SEC;
  while (memport_pub_subscribers(pub) != 1 && th_now_ns() < end) {
    memport_pub_process(pub);
    th_sleep_ms(1);
  }
  th_assert_rc(memport_pub_subscribers(pub), 1);
  /* Pending connections and lanes of the dead are gone too (a pending one is noticed by the
   * publisher's next look). */
  end = th_now_ns() + 30 * SEC;
  while ((th_count_fds() != fds0 || th_count_memport_maps() != maps0) && th_now_ns() < end) {
    memport_pub_process(pub);
    th_sleep_ms(1);
  }
  assert_int_equal(th_count_fds(), fds0);
  assert_int_equal(th_count_memport_maps(), maps0);
  for (uint64_t k = 0; k < 10; k++, seq++) /* the good one goes on */
    th_assert_ok(pub_msg_loaned(pub, seq, 30 * SEC));
  th_assert_ok(memport_pub_close(pub));
  assert_int_equal(th_wait(good, 60), 0);
}

static void test_sub_killed_before_hello(void **state) {
  (void)state;
  sub_killed(0, MEMPORT_TOPIC_BLOCK, 0);
}

static void test_sub_killed_mid_handshake(void **state) {
  (void)state;
  sub_killed(1, MEMPORT_TOPIC_BLOCK, 0);
}

static void test_sub_killed_blocking_publisher(void **state) {
  (void)state;
  int rounds = th_under_valgrind() ? 2 : 8;
  for (int r = 0; r < rounds; r++)
    sub_killed(2, MEMPORT_TOPIC_BLOCK, (unsigned)r * 13);
  sub_killed(2, MEMPORT_TOPIC_DROP_OLDEST, 0);
}

static void test_sub_killed_holding(void **state) {
  (void)state;
  int rounds = th_under_valgrind() ? 3 : 12;
  for (int r = 0; r < rounds; r++)
    sub_killed(3, r % 2 ? MEMPORT_TOPIC_DROP_OLDEST : MEMPORT_TOPIC_BLOCK, (unsigned)r);
}

static void test_sub_killed_releasing(void **state) {
  (void)state;
  int rounds = th_under_valgrind() ? 4 : 24;
  for (int r = 0; r < rounds; r++)
    sub_killed(4, r % 2 ? MEMPORT_TOPIC_DROP_OLDEST : MEMPORT_TOPIC_BLOCK, (unsigned)r * 7);
}

/* ------------------------------------------------------------------------------------------ */
/* Publishers killed.                                                                           */

/* Points: 0 publishing in a loop (killed at a random moment); 1 published `n`, then idle while
 * the subscriber waits in recv; 2 published `n`, holding loans of every free buffer. */
static int child_pub(void *arg) {
  struct arg *a = arg;
  memport_topic_opts_t o;
  opts(&o, 64, MEMPORT_TOPIC_BLOCK, NBUF);
  memport_pub_t *pub;
  if (memport_pub_create(&pub, a->name, &o) != 0)
    return 2;
  uint64_t end = th_now_ns() + 60 * SEC;
  while (memport_pub_subscribers(pub) < 2) {
    if (th_now_ns() > end)
      return 3;
    memport_pub_process(pub);
    th_sleep_ms(1);
  }
  uint64_t seq = 1;
  for (; a->point == 0 || seq <= a->n; seq++) {
    if (pub_msg_loaned(pub, seq, 60 * SEC) != 0)
      return 4;
    atomic_store(&g_sh->taken, (uint32_t)seq); /* published */
  }
  if (a->point == 2) {
    memport_buf_t b;
    while (memport_pub_loan(pub, 100, &b, MEMPORT_NOWAIT) == 0)
      memset(b.data, 1, 100);
  }
  atomic_store(&g_sh->stage, 1);
  for (;;) {
    memport_pub_process(pub);
    th_sleep_ms(1);
  }
}

static void pub_killed(int point, unsigned when) {
  shared_reset();
  struct arg a = {.point = point, .n = 3 + when % 12};
  snprintf(a.name, sizeof a.name, "%s", th_unique_name("topic"));
  int fds0 = th_count_fds(), maps0 = th_count_memport_maps();
  pid_t kid = th_fork(child_pub, &a, 300);
  memport_sub_t *s[2];
  for (int i = 0; i < 2; i++)
    th_assert_ok(memport_sub_connect(&s[i], a.name, NULL, 30 * SEC));
  memport_buf_t held[2] = {{0}};
  uint64_t held_seq[2] = {0, 0};
  uint64_t got[2] = {0, 0};
  if (point == 0) {
    /* Both keep up, each holding one view at a time; the publisher dies mid-stream. */
    unsigned target = 5 + when % 40;
    while (got[0] < target) {
      for (int i = 0; i < 2; i++) {
        memport_buf_t b;
        th_assert_ok(memport_sub_recv(s[i], &b, 30 * SEC));
        assert_int_equal(msg_bad(b.data, b.len, ++got[i]), 0);
        if (held[i].data != NULL)
          th_assert_ok(memport_sub_release(s[i], &held[i]));
        held[i] = b;
        held_seq[i] = got[i];
      }
    }
    kill(kid, SIGKILL);
  } else {
    WAIT_FOR(NULL, kid, atomic_load(&g_sh->stage) == 1);
    if (point == 2) { /* holding views too */
      for (int i = 0; i < 2; i++) {
        th_assert_ok(memport_sub_recv(s[i], &held[i], 5 * SEC));
        assert_int_equal(msg_bad(held[i].data, held[i].len, ++got[i]), 0);
        held_seq[i] = got[i];
      }
    }
    while (got[1] < a.n) { /* subscriber 1 reads everything, then waits in recv */
      memport_buf_t b;
      th_assert_ok(memport_sub_recv(s[1], &b, 5 * SEC));
      assert_int_equal(msg_bad(b.data, b.len, ++got[1]), 0);
      th_assert_ok(memport_sub_release(s[1], &b));
    }
    pid_t killer = fork();
    assert_true(killer >= 0);
    if (killer == 0) {
      th_sleep_ms(20 + when % 30);
      kill(kid, SIGKILL);
      _exit(0);
    }
    memport_buf_t b;
    th_assert_rc(memport_sub_recv(s[1], &b, 30 * SEC), MEMPORT_EPEER); /* blocked, then woken */
    assert_int_equal(th_wait(killer, 30), 0);
  }
  assert_int_equal(th_wait(kid, 30), 128 + SIGKILL);
  /* Each receives what was published, in order, then MEMPORT_EPEER, for good. */
  uint32_t published = atomic_load(&g_sh->taken);
  for (int i = 0; i < 2; i++) {
    memport_buf_t b;
    int rc;
    while ((rc = memport_sub_recv(s[i], &b, 5 * SEC)) == 0) {
      assert_int_equal(msg_bad(b.data, b.len, ++got[i]), 0);
      th_assert_ok(memport_sub_release(s[i], &b));
    }
    th_assert_rc(rc, MEMPORT_EPEER);
    assert_true(got[i] >= published); /* published: stored before the kill could come */
    th_assert_rc(memport_sub_recv(s[i], &b, MEMPORT_NOWAIT), MEMPORT_EPEER);
    if (held[i].data != NULL) { /* a view held across the death is still whole, then released */
      assert_int_equal(msg_bad(held[i].data, held[i].len, held_seq[i]), 0);
      th_assert_ok(memport_sub_release(s[i], &held[i]));
    }
    th_assert_ok(memport_sub_close(s[i]));
  }
  assert_int_equal(th_count_fds(), fds0);
  assert_int_equal(th_count_memport_maps(), maps0);
}

static void test_pub_killed_mid_publish(void **state) {
  (void)state;
  int rounds = th_under_valgrind() ? 3 : 16;
  for (int r = 0; r < rounds; r++)
    pub_killed(0, (unsigned)r * 11);
}

static void test_pub_killed_recv_blocked(void **state) {
  (void)state;
  int rounds = th_under_valgrind() ? 2 : 6;
  for (int r = 0; r < rounds; r++)
    pub_killed(1, (unsigned)r * 7);
}

static void test_pub_killed_loans_out(void **state) {
  (void)state;
  int rounds = th_under_valgrind() ? 2 : 6;
  for (int r = 0; r < rounds; r++)
    pub_killed(2, (unsigned)r * 5);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sub_killed_before_hello),
      cmocka_unit_test(test_sub_killed_mid_handshake),
      cmocka_unit_test(test_sub_killed_blocking_publisher),
      cmocka_unit_test(test_sub_killed_holding),
      cmocka_unit_test(test_sub_killed_releasing),
      cmocka_unit_test(test_pub_killed_mid_publish),
      cmocka_unit_test(test_pub_killed_recv_blocked),
      cmocka_unit_test(test_pub_killed_loans_out),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
