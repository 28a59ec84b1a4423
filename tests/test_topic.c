/* SPDX-License-Identifier: MIT */
/* test_topic.c: the topic (one publisher, many subscribers): order, back-pressure, drop-oldest, history, deaths, misuse, hostile lanes, readiness, restart. */
#include "topic_helpers.h"

#include "../lib/topic.h" /* the lane layout, for the hostile-subscriber test */

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Message `seq` (tests/topic_helpers.h): small ones sent inline (copied into each queue), large
 * ones in a loaned pool buffer. */
static int pub_msg(memport_pub_t *p, uint64_t seq, int64_t timeout_ns) {
  size_t len = len_of(seq);
  if (len <= INLINE_MAX) {
    unsigned char b[INLINE_MAX];
    make_msg(b, len, seq);
    return memport_pub_send(p, b, len, timeout_ns);
  }
  return pub_msg_loaned(p, seq, timeout_ns);
}

/* A publisher in a child waits (bounded) for `n` subscribers. */
static int wait_subscribers(memport_pub_t *pub, int n, unsigned seconds) {
  uint64_t end = th_now_ns() + (uint64_t)seconds * SEC;
  while (memport_pub_subscribers(pub) < n) {
    if (th_now_ns() > end)
      return 1;
    memport_pub_process(pub);
    th_sleep_ms(1);
  }
  return 0;
}

/* ------------------------------------------------------------------------------------------ */

static void test_opts(void **state) {
  (void)state;
  memport_topic_opts_t o;
  const char *field;
  memport_topic_opts_init(&o);
  th_assert_ok(memport_topic_opts_check(&o, &field));
  o.depth = 0;
  th_assert_rc(memport_topic_opts_check(&o, &field), MEMPORT_EINVAL);
  assert_string_equal(field, "depth");
  memport_topic_opts_init(&o);
  o.history = o.depth + 1;
  th_assert_rc(memport_topic_opts_check(&o, &field), MEMPORT_EINVAL);
  assert_string_equal(field, "history");
  memport_topic_opts_init(&o);
  o.overflow = 7;
  th_assert_rc(memport_topic_opts_check(&o, &field), MEMPORT_EINVAL);
  memport_topic_opts_init(&o);
  o.buffer_size = 0;
  memport_pub_t *p = NULL;
  th_assert_rc(memport_pub_create(&p, th_unique_name("topic"), &o), MEMPORT_EINVAL);
  assert_null(p);
  /* A buffer size that is not a page multiple is rounded up, as the channel's is: a loan of the
   * rounded size fits, one byte more does not. */
  o.buffer_size = memport_page_size() + 1;
  th_assert_ok(memport_pub_create(&p, th_unique_name("topic"), &o));
  memport_buf_t lb;
  th_assert_rc(memport_pub_loan(p, 2 * memport_page_size() + 1, &lb, MEMPORT_NOWAIT), MEMPORT_EMSGSIZE);
  th_assert_ok(memport_pub_loan(p, 2 * memport_page_size(), &lb, MEMPORT_NOWAIT));
  th_assert_ok(memport_pub_discard(p, &lb));
  th_assert_ok(memport_pub_close(p));
  p = NULL;
  th_assert_ok(memport_pub_close(NULL));
  th_assert_ok(memport_sub_close(NULL));
}

/* Three subscribers in this process, each receives every message, in order, whatever its path. */
static void test_order(void **state) {
  (void)state;
  char name[MEMPORT_NAME_MAX + 1];
  snprintf(name, sizeof name, "%s", th_unique_name("topic"));
  memport_topic_opts_t o;
  opts(&o, 8, MEMPORT_TOPIC_BLOCK, 4);
  memport_pub_t *pub;
  th_assert_ok(memport_pub_create(&pub, name, &o));
  memport_sub_t *subs[3];
  connect_n(pub, name, subs, 3);
  for (uint64_t seq = 1; seq <= 300; seq++) {
    th_assert_ok(pub_msg(pub, seq, 5 * SEC));
    for (int i = 0; i < 3; i++)
      th_assert_ok(sub_expect(subs[i], seq, 5 * SEC));
  }
  memport_buf_t b;
  th_assert_rc(memport_sub_recv(subs[0], &b, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
  /* recv_copy: too small keeps the message */
  th_assert_ok(pub_msg(pub, 301, 5 * SEC));
  unsigned char small[4], big[8192];
  size_t len = 0;
  th_assert_rc(memport_sub_recv_copy(subs[1], small, sizeof small, &len, MEMPORT_NOWAIT), MEMPORT_EMSGSIZE);
  th_assert_ok(memport_sub_recv_copy(subs[1], big, sizeof big, &len, MEMPORT_NOWAIT));
  assert_int_equal(msg_bad(big, len, 301), 0);
  uint64_t missed = 99;
  th_assert_ok(memport_sub_missed(subs[0], &missed));
  assert_int_equal(missed, 0);
  /* too large for a buffer */
  th_assert_rc(memport_pub_loan(pub, 8193, &b, 0), MEMPORT_EMSGSIZE);
  for (int i = 0; i < 3; i++)
    th_assert_ok(memport_sub_close(subs[i]));
  th_assert_ok(memport_pub_close(pub));
}

/* Block: a subscriber that does not read holds the publisher; a publish that times out leaves the
 * loan with the caller and delivers nothing to anyone. */
static void test_block_timeout(void **state) {
  (void)state;
  char name[MEMPORT_NAME_MAX + 1];
  snprintf(name, sizeof name, "%s", th_unique_name("topic"));
  memport_topic_opts_t o;
  opts(&o, 4, MEMPORT_TOPIC_BLOCK, 16);
  memport_pub_t *pub;
  th_assert_ok(memport_pub_create(&pub, name, &o));
  memport_sub_t *subs[2];
  connect_n(pub, name, subs, 2);
  for (uint64_t seq = 1; seq <= 4; seq++) {
    th_assert_ok(pub_msg(pub, seq, 5 * SEC));
    th_assert_ok(sub_expect(subs[1], seq, 5 * SEC)); /* the fast one */
  }
  memport_buf_t b;
  th_assert_ok(memport_pub_loan(pub, len_of(6), &b, 5 * SEC));
  b.len = len_of(5); /* sent as message 5 below: a loan may be published shorter */
  make_msg(b.data, b.len, 5);
  th_assert_rc(memport_pub_publish(pub, &b, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
  th_assert_rc(memport_pub_publish(pub, &b, 30 * MS), MEMPORT_ETIMEDOUT);
  th_assert_rc(memport_pub_send(pub, "x", 1, 10 * MS), MEMPORT_ETIMEDOUT);
  /* nothing of it reached the fast subscriber */
  memport_buf_t r;
  th_assert_rc(memport_sub_recv(subs[1], &r, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
  /* the slow one reads one: the same loan now goes */
  th_assert_ok(sub_expect(subs[0], 1, 5 * SEC));
  th_assert_ok(memport_pub_publish(pub, &b, 5 * SEC));
  th_assert_rc(memport_pub_publish(pub, &b, 0), MEMPORT_EINVAL); /* published: a stale copy */
  for (uint64_t seq = 2; seq <= 5; seq++)
    th_assert_ok(sub_expect(subs[0], seq, 5 * SEC));
  th_assert_ok(sub_expect(subs[1], 5, 5 * SEC));
  for (int i = 0; i < 2; i++)
    th_assert_ok(memport_sub_close(subs[i]));
  th_assert_ok(memport_pub_close(pub));
}

/* Block, across processes: a slow subscriber loses nothing, in order. */
#define BLOCK_MSGS 3000u
struct child_sub_arg {
  char name[MEMPORT_NAME_MAX + 1];
  unsigned msgs;
  int end; /* expected end code */
  int slow;
};

static int child_subscriber(void *arg) {
  struct child_sub_arg *a = arg;
  memport_sub_t *s;
  if (memport_sub_connect(&s, a->name, NULL, 20 * SEC) != 0)
    return 2;
  for (uint64_t seq = 1; seq <= a->msgs; seq++) {
    if (sub_expect(s, seq, 30 * SEC) != 0)
      return 3;
    if (a->slow && seq % 50 == 0)
      th_sleep_ms(2);
  }
  memport_buf_t b;
  int rc = memport_sub_recv(s, &b, 30 * SEC);
  if (a->end != 0 && rc != a->end)
    return 4;
  memport_sub_close(s);
  return 0;
}

static void test_block_no_loss(void **state) {
  (void)state;
  struct child_sub_arg a = {.msgs = th_under_valgrind() ? 300 : BLOCK_MSGS, .end = MEMPORT_ECLOSED};
  snprintf(a.name, sizeof a.name, "%s", th_unique_name("topic"));
  memport_topic_opts_t o;
  opts(&o, 8, MEMPORT_TOPIC_BLOCK, 4);
  memport_pub_t *pub;
  th_assert_ok(memport_pub_create(&pub, a.name, &o));
  pid_t kids[3];
  for (int i = 0; i < 3; i++) {
    a.slow = i == 0;
    kids[i] = th_fork(child_subscriber, &a, 120);
  }
  assert_int_equal(wait_subscribers(pub, 3, 60), 0);
  for (uint64_t seq = 1; seq <= a.msgs; seq++)
    th_assert_ok(pub_msg(pub, seq, 30 * SEC));
  th_assert_ok(memport_pub_close(pub));
  for (int i = 0; i < 3; i++)
    assert_int_equal(th_wait(kids[i], 120), 0);
}

/* Drop-oldest: a subscriber that does not read misses exactly published - depth, receives the
 * newest `depth` in order; the others lose nothing. */
static void test_drop_oldest(void **state) {
  (void)state;
  char name[MEMPORT_NAME_MAX + 1];
  snprintf(name, sizeof name, "%s", th_unique_name("topic"));
  memport_topic_opts_t o;
  opts(&o, 8, MEMPORT_TOPIC_DROP_OLDEST, 16); /* enough buffers: loans never need to drop */
  memport_pub_t *pub;
  th_assert_ok(memport_pub_create(&pub, name, &o));
  memport_sub_t *subs[3];
  connect_n(pub, name, subs, 3);
  const uint64_t n = 200;
  for (uint64_t seq = 1; seq <= n; seq++) {
    th_assert_ok(pub_msg(pub, seq, MEMPORT_NOWAIT)); /* never waits */
    for (int i = 1; i < 3; i++)
      th_assert_ok(sub_expect(subs[i], seq, 5 * SEC));
  }
  uint64_t missed;
  th_assert_ok(memport_sub_missed(subs[0], &missed));
  assert_int_equal(missed, n - 8);
  for (uint64_t seq = n - 7; seq <= n; seq++)
    th_assert_ok(sub_expect(subs[0], seq, 5 * SEC));
  memport_buf_t b;
  th_assert_rc(memport_sub_recv(subs[0], &b, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
  for (int i = 1; i < 3; i++) {
    th_assert_ok(memport_sub_missed(subs[i], &missed));
    assert_int_equal(missed, 0);
  }
  for (int i = 0; i < 3; i++)
    th_assert_ok(memport_sub_close(subs[i]));
  th_assert_ok(memport_pub_close(pub));
}

/* Drop-oldest with the pool exhausted by one subscriber's queue: a loan drops its oldest queued
 * pool message instead of waiting. */
static void test_drop_oldest_pool(void **state) {
  (void)state;
  char name[MEMPORT_NAME_MAX + 1];
  snprintf(name, sizeof name, "%s", th_unique_name("topic"));
  memport_topic_opts_t o;
  opts(&o, 8, MEMPORT_TOPIC_DROP_OLDEST, 4);
  memport_pub_t *pub;
  th_assert_ok(memport_pub_create(&pub, name, &o));
  memport_sub_t *s[2];
  connect_n(pub, name, s, 2);
  for (uint64_t k = 1; k <= 10; k++) {
    th_assert_ok(pub_msg(pub, 3 * k, MEMPORT_NOWAIT)); /* large: a pool buffer each */
    th_assert_ok(sub_expect(s[1], 3 * k, 5 * SEC));
  }
  uint64_t missed;
  th_assert_ok(memport_sub_missed(s[0], &missed));
  assert_int_equal(missed, 6); /* four buffers: the last four stay queued */
  for (uint64_t k = 7; k <= 10; k++)
    th_assert_ok(sub_expect(s[0], 3 * k, 5 * SEC));
  th_assert_ok(memport_sub_missed(s[1], &missed));
  assert_int_equal(missed, 0);
  for (int i = 0; i < 2; i++)
    th_assert_ok(memport_sub_close(s[i]));
  th_assert_ok(memport_pub_close(pub));
}

/* Drop-oldest under a flood: the publisher drops from the head of a lane while the subscriber
 * takes from it, in another process, at full speed on both sides. A subscriber that saw a stale
 * head, or read a slot as it was rewritten, must look again, never call the publisher broken:
 * every message it gets is whole and newer than the last, received + missed = published, and
 * the end is the orderly one. */
static int child_flood_reader(void *arg) {
  const char *name = arg;
  memport_sub_t *s;
  if (memport_sub_connect(&s, name, NULL, 20 * SEC) != 0)
    return 2;
  memport_buf_t b;
  int rc;
  uint64_t last = 0, received = 0;
  while ((rc = memport_sub_recv(s, &b, 60 * SEC)) == 0) {
    uint64_t seq = 0;
    if (b.len >= 8)
      memcpy(&seq, b.data, 8);
    if (seq <= last || msg_bad(b.data, b.len, seq) != 0) {
      fprintf(stderr, "flood reader: message %llu after %llu\n", (unsigned long long)seq, (unsigned long long)last);
      return 3;
    }
    last = seq;
    received++;
    if (memport_sub_release(s, &b) != 0)
      return 4;
  }
  uint64_t missed = 0;
  if (rc != MEMPORT_ECLOSED || memport_sub_missed(s, &missed) != 0 || received + missed != last) {
    fprintf(stderr, "flood reader: %s after %llu; %llu received, %llu missed\n", memport_err_name(rc),
            (unsigned long long)last, (unsigned long long)received, (unsigned long long)missed);
    return 5;
  }
  memport_sub_close(s);
  return 0;
}

static void test_drop_oldest_flood(void **state) {
  (void)state;
  char name[MEMPORT_NAME_MAX + 1];
  snprintf(name, sizeof name, "%s", th_unique_name("topic"));
  memport_topic_opts_t o;
  opts(&o, 2, MEMPORT_TOPIC_DROP_OLDEST, 3);
  memport_pub_t *pub;
  th_assert_ok(memport_pub_create(&pub, name, &o));
  pid_t kid = th_fork(child_flood_reader, name, 300);
  assert_int_equal(wait_subscribers(pub, 1, 60), 0);
  const uint64_t n = th_under_valgrind() ? 20000 : 400000;
  for (uint64_t seq = 1; seq <= n; seq++)
    th_assert_ok(pub_msg(pub, seq, MEMPORT_NOWAIT)); /* never waits: drops instead */
  memport_pub_stats_t st;
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  th_assert_ok(memport_pub_stats(pub, &st));
  th_assert_ok(memport_pub_close(pub));
  assert_int_equal(th_wait(kid, 120), 0);
  printf("flood: %llu published, %llu dropped\n", (unsigned long long)n, (unsigned long long)st.dropped);
}

/* History: a late joiner receives the last K, then what follows. */
static void test_history(void **state) {
  (void)state;
  char name[MEMPORT_NAME_MAX + 1];
  snprintf(name, sizeof name, "%s", th_unique_name("topic"));
  memport_topic_opts_t o;
  opts(&o, 8, MEMPORT_TOPIC_BLOCK, 8);
  o.history = 5;
  memport_pub_t *pub;
  th_assert_ok(memport_pub_create(&pub, name, &o));
  for (uint64_t seq = 1; seq <= 20; seq++)
    th_assert_ok(pub_msg(pub, seq, MEMPORT_NOWAIT)); /* nobody there: never waits */
  memport_sub_t *s[1];
  connect_n(pub, name, s, 1);
  for (uint64_t seq = 16; seq <= 20; seq++)
    th_assert_ok(sub_expect(s[0], seq, 5 * SEC));
  memport_buf_t b;
  th_assert_rc(memport_sub_recv(s[0], &b, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
  th_assert_ok(pub_msg(pub, 21, 5 * SEC));
  th_assert_ok(sub_expect(s[0], 21, 5 * SEC));
  th_assert_ok(memport_sub_close(s[0]));
  th_assert_ok(memport_pub_close(pub));
}

/* 64 subscribers in one process. */
static void test_64(void **state) {
  (void)state;
  char name[MEMPORT_NAME_MAX + 1];
  snprintf(name, sizeof name, "%s", th_unique_name("topic"));
  memport_topic_opts_t o;
  opts(&o, 16, MEMPORT_TOPIC_BLOCK, 8);
  memport_pub_t *pub;
  th_assert_ok(memport_pub_create(&pub, name, &o));
  memport_sub_t *subs[64];
  connect_n(pub, name, subs, 64);
  for (uint64_t seq = 1; seq <= 60; seq++) {
    th_assert_ok(pub_msg(pub, seq, 5 * SEC));
    if (seq % 10 == 0) /* each reads in batches */
      for (int i = 0; i < 64; i++)
        for (uint64_t q = seq - 9; q <= seq; q++)
          th_assert_ok(sub_expect(subs[i], q, 5 * SEC));
  }
  /* one more joins past the limit? max_subscribers is 64 by default */
  memport_sub_t *extra = NULL;
  struct pump pm = {.pub = pub};
  atomic_init(&pm.stop, false);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, pump_main, &pm), 0);
  int rc = memport_sub_connect(&extra, name, NULL, 10 * SEC);
  atomic_store(&pm.stop, true);
  pthread_join(t, NULL);
  th_assert_rc(rc, MEMPORT_ENOSPC);
  for (int i = 0; i < 64; i++)
    th_assert_ok(memport_sub_close(subs[i]));
  th_assert_ok(memport_pub_process(pub));
  th_assert_rc(memport_pub_subscribers(pub), 0);
  th_assert_ok(memport_pub_close(pub));
}

/* A subscriber killed with SIGKILL while it holds every buffer: the publisher's blocked loan
 * succeeds soon after, and nothing of the subscriber is left in the publisher. */
struct holder_arg {
  char name[MEMPORT_NAME_MAX + 1];
  int fd; /* a byte once it holds everything */
  unsigned hold;
};

static int child_holder(void *arg) {
  struct holder_arg *a = arg;
  memport_sub_t *s;
  if (memport_sub_connect(&s, a->name, NULL, 20 * SEC) != 0)
    return 2;
  memport_buf_t b[16];
  for (unsigned i = 0; i < a->hold; i++)
    if (memport_sub_recv(s, &b[i], 30 * SEC) != 0)
      return 3;
  if (write(a->fd, "h", 1) != 1)
    return 4;
  for (;;)
    pause();
}

static void test_kill_subscriber(void **state) {
  (void)state;
  for (int round = 0; round < 2; round++) {
    struct holder_arg a = {.hold = 4};
    snprintf(a.name, sizeof a.name, "%s", th_unique_name("topic"));
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    a.fd = fds[1];
    memport_topic_opts_t o;
    opts(&o, 8, round == 0 ? MEMPORT_TOPIC_BLOCK : MEMPORT_TOPIC_DROP_OLDEST, 4);
    memport_pub_t *pub;
    th_assert_ok(memport_pub_create(&pub, a.name, &o));
    th_assert_ok(memport_pub_process(pub));
    int fds0 = th_count_fds(), maps0 = th_count_memport_maps();
    pid_t kid = th_fork(child_holder, &a, 120);
    assert_int_equal(wait_subscribers(pub, 1, 60), 0);
    for (uint64_t seq = 3; seq <= 12; seq += 3) /* four large messages */
      th_assert_ok(pub_msg(pub, seq, 5 * SEC));
    struct pollfd pf = {.fd = fds[0], .events = POLLIN};
    uint64_t end = th_now_ns() + 60 * SEC;
    int status;
    while (poll(&pf, 1, 10) == 0) {
      memport_pub_process(pub);
      assert_false(th_exited(kid, &status));
      assert_true(th_now_ns() < end);
    }
    memport_buf_t b;
    th_assert_rc(memport_pub_loan(pub, 5000, &b, MEMPORT_NOWAIT), MEMPORT_EAGAIN); /* all held */
    kill(kid, SIGKILL);
    th_assert_ok(memport_pub_loan(pub, 5000, &b, 30 * SEC)); /* reclaimed */
    th_assert_ok(memport_pub_discard(pub, &b));
    assert_int_equal(th_wait(kid, 30), 128 + SIGKILL);
    th_assert_rc(memport_pub_subscribers(pub), 0);
    assert_int_equal(th_count_fds(), fds0);
    assert_int_equal(th_count_memport_maps(), maps0);
    /* the whole pool is free again */
    memport_buf_t all[4];
    for (int i = 0; i < 4; i++)
      th_assert_ok(memport_pub_loan(pub, 100, &all[i], MEMPORT_NOWAIT));
    for (int i = 0; i < 4; i++)
      th_assert_ok(memport_pub_discard(pub, &all[i]));
    th_assert_ok(memport_pub_close(pub));
    close(fds[0]);
    close(fds[1]);
  }
}

/* The publisher killed, or closed: each subscriber receives everything, then MEMPORT_EPEER, or
 * MEMPORT_ECLOSED. */
struct child_pub_arg {
  char name[MEMPORT_NAME_MAX + 1];
  unsigned subs, msgs;
  uint64_t first;
  int how; /* 0 close, 1 SIGKILL */
};

static int child_publisher(void *arg) {
  struct child_pub_arg *a = arg;
  memport_topic_opts_t o;
  opts(&o, 64, MEMPORT_TOPIC_BLOCK, 32); /* everything fits: subscribers read after the end */
  memport_pub_t *pub;
  if (memport_pub_create(&pub, a->name, &o) != 0)
    return 2;
  /* wait for the subscribers through the pollable handle */
  memport_os_handle_t h;
  if (memport_pub_pollable(pub, &h) != 0)
    return 3;
  uint64_t end = th_now_ns() + 60 * SEC;
  while (memport_pub_subscribers(pub) < (int)a->subs) {
    struct pollfd pf = {.fd = h, .events = POLLIN};
    if (poll(&pf, 1, 1000) < 0 || th_now_ns() > end)
      return 4;
    memport_pub_process(pub);
  }
  for (uint64_t seq = a->first; seq < a->first + a->msgs; seq++)
    if (pub_msg(pub, seq, 30 * SEC) != 0)
      return 5;
  if (a->how == 1)
    raise(SIGKILL);
  memport_pub_close(pub);
  return 0;
}

static void publisher_end(int how) {
  struct child_pub_arg a = {.subs = 2, .msgs = 50, .first = 1, .how = how};
  snprintf(a.name, sizeof a.name, "%s", th_unique_name("topic"));
  int fds0 = th_count_fds(), maps0 = th_count_memport_maps();
  pid_t kid = th_fork(child_publisher, &a, 120);
  memport_sub_t *s[2];
  for (int i = 0; i < 2; i++)
    th_assert_ok(memport_sub_connect(&s[i], a.name, NULL, 30 * SEC));
  assert_int_equal(th_wait(kid, 60), how == 1 ? 128 + SIGKILL : 0);
  for (int i = 0; i < 2; i++) {
    for (uint64_t seq = 1; seq <= 50; seq++)
      th_assert_ok(sub_expect(s[i], seq, 5 * SEC));
    memport_buf_t b;
    th_assert_rc(memport_sub_recv(s[i], &b, 5 * SEC), how == 1 ? MEMPORT_EPEER : MEMPORT_ECLOSED);
    th_assert_rc(memport_sub_recv(s[i], &b, MEMPORT_NOWAIT), how == 1 ? MEMPORT_EPEER : MEMPORT_ECLOSED);
    th_assert_ok(memport_sub_close(s[i]));
  }
  assert_int_equal(th_count_fds(), fds0);
  assert_int_equal(th_count_memport_maps(), maps0);
}

static void test_publisher_killed(void **state) {
  (void)state;
  publisher_end(1);
}

static void test_publisher_closed(void **state) {
  (void)state;
  publisher_end(0);
}

/* A subscriber cannot release what it does not hold, twice, or another's; the others are not
 * affected. */
static void test_release_misuse(void **state) {
  (void)state;
  char name[MEMPORT_NAME_MAX + 1];
  snprintf(name, sizeof name, "%s", th_unique_name("topic"));
  memport_topic_opts_t o;
  opts(&o, 8, MEMPORT_TOPIC_BLOCK, 4);
  memport_pub_t *pub;
  th_assert_ok(memport_pub_create(&pub, name, &o));
  memport_sub_t *s[2];
  connect_n(pub, name, s, 2);
  th_assert_ok(pub_msg(pub, 3, 5 * SEC)); /* pool */
  th_assert_ok(pub_msg(pub, 4, 5 * SEC)); /* inline */
  memport_buf_t a0, a1, b0, copy;
  th_assert_ok(memport_sub_recv(s[0], &a0, 5 * SEC));
  th_assert_ok(memport_sub_recv(s[0], &a1, 5 * SEC));
  th_assert_ok(memport_sub_recv(s[1], &b0, 5 * SEC));
  th_assert_rc(memport_sub_release(s[1], &a0), MEMPORT_EINVAL); /* another's */
  th_assert_rc(memport_sub_release(s[0], &b0), MEMPORT_EINVAL);
  memport_buf_t forged = a0;
  forged.priv[1]++;
  th_assert_rc(memport_sub_release(s[0], &forged), MEMPORT_EINVAL);
  copy = a0;
  th_assert_ok(memport_sub_release(s[0], &a0));
  th_assert_rc(memport_sub_release(s[0], &copy), MEMPORT_EINVAL); /* twice */
  copy = a1;
  th_assert_ok(memport_sub_release(s[0], &a1));
  th_assert_rc(memport_sub_release(s[0], &copy), MEMPORT_EINVAL);
  memset(&forged, 0, sizeof forged);
  th_assert_rc(memport_sub_release(s[0], &forged), MEMPORT_EINVAL);
  assert_int_equal(msg_bad(b0.data, b0.len, 3), 0);
  th_assert_ok(memport_sub_release(s[1], &b0));
  th_assert_ok(sub_expect(s[1], 4, 5 * SEC));
  for (uint64_t seq = 5; seq <= 40; seq++) {
    th_assert_ok(pub_msg(pub, seq, 5 * SEC));
    for (int i = 0; i < 2; i++)
      th_assert_ok(sub_expect(s[i], seq, 5 * SEC));
  }
  th_assert_rc(memport_pub_subscribers(pub), 2);
  for (int i = 0; i < 2; i++)
    th_assert_ok(memport_sub_close(s[i]));
  th_assert_ok(memport_pub_close(pub));
}

/* A hostile subscriber scribbles its lane: head beyond tail, a release of a buffer it does not
 * hold, a release twice, a bogus queue position. It is dropped (its calls fail), the others go on. */
static void test_hostile_lane(void **state) {
  (void)state;
  for (int how = 0; how < 4; how++) {
    char name[MEMPORT_NAME_MAX + 1];
    snprintf(name, sizeof name, "%s", th_unique_name("topic"));
    memport_topic_opts_t o;
    opts(&o, 8, how % 2 ? MEMPORT_TOPIC_DROP_OLDEST : MEMPORT_TOPIC_BLOCK, 4);
    memport_pub_t *pub;
    th_assert_ok(memport_pub_create(&pub, name, &o));
    memport_sub_t *s[3];
    connect_n(pub, name, s, 3);
    th_assert_ok(pub_msg(pub, 3, 5 * SEC));
    for (int i = 0; i < 3; i++)
      th_assert_ok(sub_expect(s[i], 3, 5 * SEC));
    struct memport__lane *lane = s[2]->lane;
    struct memport__relq_shared *q = &lane->relq;
    uint64_t t = atomic_load(&q->tail);
    switch (how) {
    case 0: /* head beyond tail */
      atomic_store(&lane->head, atomic_load(&lane->tail) + 5);
      break;
    case 1: /* a buffer it does not hold */
      atomic_store(&q->entries[t % MEMPORT__RELQ_SIZE], ((uint64_t)1 << 32) | 3);
      atomic_store(&q->tail, t + 1);
      break;
    case 2: /* the one it released already, again */
      atomic_store(&q->entries[t % MEMPORT__RELQ_SIZE], atomic_load(&q->entries[(t - 1) % MEMPORT__RELQ_SIZE]));
      atomic_store(&q->tail, t + 1);
      break;
    case 3: /* a queue position far ahead */
      atomic_store(&q->tail, t + 100000);
      break;
    }
    for (uint64_t seq = 4; seq <= 30; seq++) {
      th_assert_ok(pub_msg(pub, seq, 5 * SEC));
      for (int i = 0; i < 2; i++)
        th_assert_ok(sub_expect(s[i], seq, 5 * SEC));
    }
    th_assert_ok(memport_pub_process(pub));
    th_assert_rc(memport_pub_subscribers(pub), 2);
    memport_buf_t b;
    int rc = 0;
    for (int n = 0; n < 100 && rc >= 0; n++) { /* whatever it still finds, then the end */
      rc = memport_sub_recv(s[2], &b, 5 * SEC);
      if (rc == 0)
        memport_sub_release(s[2], &b);
    }
    if (rc != MEMPORT_EPROTO && rc != MEMPORT_EPEER)
      fail_msg("hostile case %d: %s", how, memport_err_name(rc));
    for (int i = 0; i < 3; i++)
      th_assert_ok(memport_sub_close(s[i]));
    th_assert_ok(memport_pub_close(pub));
  }
}

/* Readiness. The subscriber's handle is ready whenever a message waits: a loop that receives until
 * MEMPORT_EAGAIN and then polls without a timeout gets everything a publisher in another process
 * sends at random moments (a lost wake-up hangs the poll: the alarm fails the test). */
static volatile sig_atomic_t alarmed;
static void on_alarm(int sig) {
  (void)sig;
  alarmed = 1;
}

static void watchdog(unsigned seconds) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGALRM, &sa, NULL); /* no SA_RESTART: poll returns EINTR */
  alarmed = 0;
  alarm(seconds);
}

static void watchdog_off(void) {
  alarm(0);
  signal(SIGALRM, SIG_DFL);
}

static int poll_forever(memport_os_handle_t h) {
  struct pollfd pf = {.fd = h, .events = POLLIN};
  for (;;) {
    if (poll(&pf, 1, -1) > 0)
      return 0;
    if (alarmed)
      return 1;
  }
}

static int child_random_publisher(void *arg) {
  struct child_pub_arg *a = arg;
  memport_topic_opts_t o;
  opts(&o, 4, MEMPORT_TOPIC_BLOCK, 4);
  memport_pub_t *pub;
  if (memport_pub_create(&pub, a->name, &o) != 0)
    return 2;
  if (wait_subscribers(pub, 1, 60) != 0)
    return 3;
  uint32_t r = 12345;
  for (uint64_t seq = 1; seq <= a->msgs; seq++) {
    r ^= r << 13, r ^= r >> 17, r ^= r << 5;
    if (r % 4 == 0)
      th_sleep_ns(r % 300 * US);
    if (pub_msg(pub, seq, 30 * SEC) != 0)
      return 4;
  }
  memport_pub_close(pub);
  return 0;
}

static void test_sub_pollable(void **state) {
  (void)state;
  struct child_pub_arg a = {.msgs = th_under_valgrind() ? 200 : 2000};
  snprintf(a.name, sizeof a.name, "%s", th_unique_name("topic"));
  pid_t kid = th_fork(child_random_publisher, &a, 300);
  memport_sub_t *s;
  th_assert_ok(memport_sub_connect(&s, a.name, NULL, 30 * SEC));
  memport_os_handle_t h;
  th_assert_ok(memport_sub_pollable(s, &h));
  watchdog(th_under_valgrind() ? 600 : 120);
  uint64_t seq = 1;
  int rc, polls = 0;
  for (;;) {
    memport_buf_t b;
    rc = memport_sub_recv(s, &b, MEMPORT_NOWAIT);
    if (rc == 0) {
      assert_int_equal(msg_bad(b.data, b.len, seq), 0);
      seq++;
      th_assert_ok(memport_sub_release(s, &b));
      continue;
    }
    if (rc != MEMPORT_EAGAIN)
      break;
    polls++;
    if (poll_forever(h) != 0)
      break;
  }
  watchdog_off();
  assert_false(alarmed);
  th_assert_rc(rc, MEMPORT_ECLOSED);
  assert_int_equal(seq, a.msgs + 1);
  assert_true(polls > 0);
  assert_int_equal(th_wait(kid, 60), 0);
  th_assert_ok(memport_sub_close(s));
}

/* The publisher's handle: after a loan failed for want of a buffer, ready once a release waits. */
static void test_pub_pollable(void **state) {
  (void)state;
  char name[MEMPORT_NAME_MAX + 1];
  snprintf(name, sizeof name, "%s", th_unique_name("topic"));
  memport_topic_opts_t o;
  opts(&o, 8, MEMPORT_TOPIC_BLOCK, 2);
  memport_pub_t *pub;
  th_assert_ok(memport_pub_create(&pub, name, &o));
  memport_sub_t *s[1];
  connect_n(pub, name, s, 1);
  memport_os_handle_t h;
  th_assert_ok(memport_pub_pollable(pub, &h));
  th_assert_ok(pub_msg(pub, 3, 5 * SEC));
  th_assert_ok(pub_msg(pub, 6, 5 * SEC));
  memport_buf_t b[2], l;
  th_assert_ok(memport_sub_recv(s[0], &b[0], 5 * SEC));
  th_assert_ok(memport_sub_recv(s[0], &b[1], 5 * SEC));
  th_assert_rc(memport_pub_loan(pub, 5000, &l, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
  struct pollfd pf = {.fd = h, .events = POLLIN};
  assert_int_equal(poll(&pf, 1, 0), 0); /* nothing could succeed yet */
  th_assert_ok(memport_sub_release(s[0], &b[0]));
  watchdog(60);
  assert_int_equal(poll_forever(h), 0);
  watchdog_off();
  th_assert_ok(memport_pub_loan(pub, 5000, &l, MEMPORT_NOWAIT));
  th_assert_ok(memport_pub_discard(pub, &l));
  th_assert_ok(memport_sub_release(s[0], &b[1]));
  th_assert_ok(memport_sub_close(s[0]));
  th_assert_ok(memport_pub_close(pub));
}

/* A join that never waits: one thread runs the publisher and a subscriber of it. Until the
 * publisher answered, finish says not yet and the other calls are refused; a refused join says
 * why. */
static int deny_all(const memport_cred_t *peer, void *arg) {
  (void)peer;
  (void)arg;
  return MEMPORT_ACCESS_DENY;
}

static void test_join_nowait(void **state) {
  (void)state;
  char name[MEMPORT_NAME_MAX + 1];
  snprintf(name, sizeof name, "%s", th_unique_name("topic"));
  memport_sub_t *s = NULL;
  th_assert_rc(memport_sub_connect_start(&s, name, NULL), MEMPORT_ENOENT);
  memport_topic_opts_t o;
  opts(&o, 8, MEMPORT_TOPIC_BLOCK, 4);
  memport_pub_t *pub;
  th_assert_ok(memport_pub_create(&pub, name, &o));
  th_assert_ok(memport_sub_connect_start(&s, name, NULL));
  th_assert_rc(memport_sub_connect_finish(s, MEMPORT_NOWAIT), MEMPORT_EAGAIN); /* not answered yet */
  memport_buf_t b;
  uint64_t missed;
  memport_sub_stats_t ss = {.struct_size = sizeof ss};
  th_assert_rc(memport_sub_recv(s, &b, MEMPORT_NOWAIT), MEMPORT_EINVAL);
  th_assert_rc(memport_sub_missed(s, &missed), MEMPORT_EINVAL);
  th_assert_rc(memport_sub_stats(s, &ss), MEMPORT_EINVAL);
  memport_os_handle_t h;
  th_assert_ok(memport_sub_pollable(s, &h)); /* ready once the answer waits */
  struct pollfd pfd = {.fd = h, .events = POLLIN};
  int rc = MEMPORT_EAGAIN;
  for (int i = 0; i < 5000 && rc == MEMPORT_EAGAIN; i++) {
    th_assert_ok(memport_pub_process(pub));
    if (poll(&pfd, 1, 1) == 1)
      rc = memport_sub_connect_finish(s, MEMPORT_NOWAIT);
  }
  th_assert_ok(rc);
  th_assert_ok(memport_sub_connect_finish(s, MEMPORT_NOWAIT)); /* joined: 0 again */
  assert_int_equal(memport_pub_subscribers(pub), 1);
  th_assert_ok(memport_sub_stats(s, &ss));
  assert_int_equal(ss.buffer_size, BUF_SIZE);
  th_assert_ok(pub_msg(pub, 1, MEMPORT_NOWAIT));
  th_assert_ok(pub_msg(pub, 3, MEMPORT_NOWAIT)); /* a pool one */
  th_assert_ok(sub_expect(s, 1, 5 * SEC));
  th_assert_ok(sub_expect(s, 3, 5 * SEC));
  th_assert_ok(memport_sub_close(s));
  /* Refused: the publisher's access function says no; finish says so. */
  th_assert_ok(memport_pub_set_access(pub, deny_all, NULL));
  th_assert_ok(memport_sub_connect_start(&s, name, NULL));
  rc = MEMPORT_EAGAIN;
  for (int i = 0; i < 5000 && (rc == MEMPORT_EAGAIN || rc == MEMPORT_ETIMEDOUT); i++) {
    th_assert_ok(memport_pub_process(pub));
    rc = memport_sub_connect_finish(s, 1 * MS);
  }
  th_assert_rc(rc, MEMPORT_EPERM);
  th_assert_ok(memport_sub_close(s));
  th_assert_ok(memport_pub_close(pub));
}

/* A publisher restarted under the same name is found by a subscriber that reconnects. */
static void test_restart(void **state) {
  (void)state;
  struct child_pub_arg a = {.subs = 1, .msgs = 10, .first = 1, .how = 1};
  snprintf(a.name, sizeof a.name, "%s", th_unique_name("topic"));
  for (int round = 0; round < 3; round++) {
    pid_t kid = th_fork(child_publisher, &a, 120);
    memport_sub_t *s;
    th_assert_ok(memport_sub_connect(&s, a.name, NULL, 30 * SEC));
    for (uint64_t seq = a.first; seq < a.first + a.msgs; seq++)
      th_assert_ok(sub_expect(s, seq, 10 * SEC));
    memport_buf_t b;
    th_assert_rc(memport_sub_recv(s, &b, 10 * SEC), a.how == 1 ? MEMPORT_EPEER : MEMPORT_ECLOSED);
    assert_int_equal(th_wait(kid, 60), a.how == 1 ? 128 + SIGKILL : 0);
    th_assert_ok(memport_sub_close(s));
    a.first += a.msgs;
    a.how = !a.how;
  }
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_opts),
      cmocka_unit_test(test_order),
      cmocka_unit_test(test_block_timeout),
      cmocka_unit_test(test_block_no_loss),
      cmocka_unit_test(test_drop_oldest),
      cmocka_unit_test(test_drop_oldest_pool),
      cmocka_unit_test(test_drop_oldest_flood),
      cmocka_unit_test(test_history),
      cmocka_unit_test(test_64),
      cmocka_unit_test(test_kill_subscriber),
      cmocka_unit_test(test_publisher_killed),
      cmocka_unit_test(test_publisher_closed),
      cmocka_unit_test(test_release_misuse),
      cmocka_unit_test(test_hostile_lane),
      cmocka_unit_test(test_sub_pollable),
      cmocka_unit_test(test_pub_pollable),
      cmocka_unit_test(test_join_nowait),
      cmocka_unit_test(test_restart),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
