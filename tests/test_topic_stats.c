/* SPDX-License-Identifier: MIT */
/* test_topic_stats.c: topic counters (memport_pub_stats, memport_pub_sub_stats, memport_sub_stats) in known scenarios, and topics in the name listing (memport_name_foreach, memport-ls). */
#include "topic_helpers.h"

#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define BIG 5000 /* a pool message */

/* A message of `len` bytes, inline (small) or in a pool buffer (BIG), never waiting. */
static int publish(memport_pub_t *p, size_t len) {
  static unsigned char b[BIG];
  memset(b, 0x5a, len);
  return memport_pub_send(p, b, len, MEMPORT_NOWAIT);
}

static memport_pub_stats_t pstats(memport_pub_t *p) {
  memport_pub_stats_t s = {.struct_size = sizeof s};
  th_assert_ok(memport_pub_stats(p, &s));
  assert_int_equal(s.struct_size, sizeof s);
  return s;
}

static memport_pub_sub_stats_t psub(memport_pub_t *p, unsigned i) {
  memport_pub_sub_stats_t s = {.struct_size = sizeof s};
  th_assert_ok(memport_pub_sub_stats(p, i, &s));
  assert_int_equal(s.struct_size, sizeof s);
  return s;
}

static memport_sub_stats_t sstats(memport_sub_t *sub) {
  memport_sub_stats_t s = {.struct_size = sizeof s};
  th_assert_ok(memport_sub_stats(sub, &s));
  assert_int_equal(s.struct_size, sizeof s);
  return s;
}

static void check_psub(memport_pub_t *p, unsigned i, uint64_t delivered, uint64_t dropped, uint32_t queued,
                       uint32_t held) {
  memport_pub_sub_stats_t s = psub(p, i);
  assert_int_equal(s.cred.pid, getpid());
  assert_int_equal(s.cred.uid, geteuid());
  assert_int_equal(s.delivered, delivered);
  assert_int_equal(s.dropped, dropped);
  assert_int_equal(s.queued, queued);
  assert_int_equal(s.held, held);
}

static void check_sub(memport_sub_t *sub, uint64_t received, uint64_t received_pool, uint64_t missed,
                      uint32_t queued, uint32_t held) {
  memport_sub_stats_t s = sstats(sub);
  assert_int_equal(s.received, received);
  assert_int_equal(s.received_pool, received_pool);
  assert_int_equal(s.missed, missed);
  assert_int_equal(s.queued, queued);
  assert_int_equal(s.held, held);
}

/* ------------------------------------------------------------------------------------------ */

static void test_stats_args(void **state) {
  (void)state;
  memport_pub_t *p;
  th_assert_ok(memport_pub_create(&p, th_unique_name("tstats"), NULL));
  memport_pub_stats_t ps = {.struct_size = sizeof ps - 1};
  memport_pub_sub_stats_t pss = {.struct_size = sizeof pss};
  memport_sub_stats_t ss = {.struct_size = sizeof ss};
  th_assert_rc(memport_pub_stats(NULL, &ps), MEMPORT_EINVAL);
  th_assert_rc(memport_pub_stats(p, NULL), MEMPORT_EINVAL);
  th_assert_rc(memport_pub_stats(p, &ps), MEMPORT_EINVAL); /* struct_size too small */
  th_assert_rc(memport_pub_sub_stats(NULL, 0, &pss), MEMPORT_EINVAL);
  th_assert_rc(memport_pub_sub_stats(p, 0, NULL), MEMPORT_EINVAL);
  th_assert_rc(memport_pub_sub_stats(p, 0, &pss), MEMPORT_ENOENT); /* no subscriber yet */
  pss.struct_size = 0;
  th_assert_rc(memport_pub_sub_stats(p, 0, &pss), MEMPORT_EINVAL);
  th_assert_rc(memport_sub_stats(NULL, &ss), MEMPORT_EINVAL);
  /* A larger (newer) structure: filled as far as this version knows, struct_size says so. */
  struct {
    memport_pub_stats_t s;
    uint64_t later;
  } big;
  memset(&big, 0xff, sizeof big);
  big.s.struct_size = sizeof big;
  th_assert_ok(memport_pub_stats(p, &big.s));
  assert_int_equal(big.s.struct_size, sizeof big.s);
  assert_int_equal(big.later, UINT64_MAX);
  assert_int_equal(big.s.published, 0);
  assert_int_equal(big.s.subscribers, 0);
  assert_int_equal(big.s.buffers, 32);
  assert_int_equal(big.s.buffers_free, 32);
  th_assert_ok(memport_pub_close(p));
}

/* Block policy: published, delivered, queued and held counted exactly; a publish that fails
 * counts nothing; a holder's buffers are in use until released. */
static void test_stats_block(void **state) {
  (void)state;
  const char *name = th_unique_name("tstats");
  memport_topic_opts_t o;
  opts(&o, 4, MEMPORT_TOPIC_BLOCK, 8);
  memport_pub_t *p;
  th_assert_ok(memport_pub_create(&p, name, &o));
  memport_sub_t *s[2];
  connect_n(p, name, s, 2);
  memport_pub_stats_t ps = pstats(p);
  assert_int_equal(ps.subscribers, 2);
  assert_int_equal(ps.joined, 2);
  assert_int_equal(ps.left, 0);

  th_assert_ok(publish(p, 10));
  th_assert_ok(publish(p, BIG));
  th_assert_ok(publish(p, BIG));
  ps = pstats(p);
  assert_int_equal(ps.published, 3);
  assert_int_equal(ps.published_pool, 2);
  assert_int_equal(ps.delivered, 0);
  assert_int_equal(ps.buffers_in_use, 2);
  assert_int_equal(ps.buffers_loaned, 0);
  assert_int_equal(ps.buffers_free, 6);
  check_psub(p, 0, 0, 0, 3, 0);
  check_psub(p, 1, 0, 0, 3, 0);
  check_sub(s[0], 0, 0, 0, 3, 0);

  /* Subscriber 0 takes two and holds the pool one; subscriber 1 takes all three and releases. */
  memport_buf_t b0, b1;
  th_assert_ok(memport_sub_recv(s[0], &b0, SEC));
  th_assert_ok(memport_sub_release(s[0], &b0));
  th_assert_ok(memport_sub_recv(s[0], &b1, SEC));
  assert_int_equal(b1.len, BIG);
  for (int k = 0; k < 3; k++) {
    memport_buf_t b;
    th_assert_ok(memport_sub_recv(s[1], &b, SEC));
    th_assert_ok(memport_sub_release(s[1], &b));
  }
  check_sub(s[0], 2, 1, 0, 1, 1);
  check_sub(s[1], 3, 2, 0, 0, 0);
  ps = pstats(p);
  assert_int_equal(ps.delivered, 5);
  assert_int_equal(ps.buffers_in_use, 2); /* one held by 0, one queued for 0 */
  check_psub(p, 0, 2, 0, 1, 1);
  check_psub(p, 1, 3, 0, 0, 0);

  /* A loan counts as loaned until published. */
  memport_buf_t loan;
  th_assert_ok(memport_pub_loan(p, BIG, &loan, MEMPORT_NOWAIT));
  assert_int_equal(pstats(p).buffers_loaned, 1);
  memset(loan.data, 1, BIG);
  th_assert_ok(memport_pub_publish(p, &loan, MEMPORT_NOWAIT));
  /* Fill subscriber 0's queue (depth 4: 1 + 3 more); the next publish blocks and counts nothing. */
  th_assert_ok(publish(p, 10));
  th_assert_ok(publish(p, 10));
  th_assert_rc(publish(p, 10), MEMPORT_EAGAIN);
  th_assert_rc(publish(p, BIG), MEMPORT_EAGAIN);
  ps = pstats(p);
  assert_int_equal(ps.published, 6);
  assert_int_equal(ps.published_pool, 3);
  assert_int_equal(ps.buffers_loaned, 0);
  assert_int_equal(ps.buffers_in_use, 3);
  check_psub(p, 0, 2, 0, 4, 1);
  check_psub(p, 1, 3, 0, 3, 0);
  check_sub(s[0], 2, 1, 0, 4, 1);

  /* The holder lets go: its buffer is free again once the publisher looks. */
  th_assert_ok(memport_sub_release(s[0], &b1));
  check_sub(s[0], 2, 1, 0, 4, 0);
  ps = pstats(p);
  assert_int_equal(ps.buffers_in_use, 2);
  check_psub(p, 0, 2, 0, 4, 0);

  /* Leaving: counted once the publisher notices. */
  th_assert_ok(memport_sub_close(s[1]));
  uint64_t end = th_now_ns() + 10 * SEC;
  while (memport_pub_subscribers(p) != 1 && th_now_ns() < end) {
    memport_pub_process(p);
    th_sleep_ms(1);
  }
  ps = pstats(p);
  assert_int_equal(ps.subscribers, 1);
  assert_int_equal(ps.left, 1);
  assert_int_equal(ps.delivered, 5);
  check_psub(p, 0, 2, 0, 4, 0);
  th_assert_rc(memport_pub_sub_stats(p, 1, &(memport_pub_sub_stats_t){.struct_size = sizeof(memport_pub_sub_stats_t)}),
               MEMPORT_ENOENT);
  th_assert_ok(memport_sub_close(s[0]));
  th_assert_ok(memport_pub_close(p));
}

/* Drop-oldest with a subscriber that never reads: exact drops, on both sides; the reader loses
 * nothing. Then a holder of every pool buffer: loans drop the non-reader's untaken pool messages. */
static void test_stats_drop_oldest(void **state) {
  (void)state;
  const char *name = th_unique_name("tstats");
  memport_topic_opts_t o;
  opts(&o, 4, MEMPORT_TOPIC_DROP_OLDEST, 4);
  memport_pub_t *p;
  th_assert_ok(memport_pub_create(&p, name, &o));
  memport_sub_t *s[2]; /* 0 never reads, 1 reads everything */
  connect_n(p, name, s, 2);
  for (int k = 0; k < 10; k++) {
    th_assert_ok(publish(p, 10));
    memport_buf_t b;
    th_assert_ok(memport_sub_recv(s[1], &b, SEC));
    th_assert_ok(memport_sub_release(s[1], &b));
  }
  memport_pub_stats_t ps = pstats(p);
  assert_int_equal(ps.published, 10);
  assert_int_equal(ps.dropped, 6);
  assert_int_equal(ps.delivered, 10);
  check_psub(p, 0, 0, 6, 4, 0);
  check_psub(p, 1, 10, 0, 0, 0);
  check_sub(s[0], 0, 0, 6, 4, 0);
  check_sub(s[1], 10, 0, 0, 0, 0);
  uint64_t missed;
  th_assert_ok(memport_sub_missed(s[0], &missed));
  assert_int_equal(missed, 6);

  /* Subscriber 1 holds 3 pool messages; subscriber 0 has them queued (and one inline before). */
  memport_buf_t held[4];
  for (int k = 0; k < 3; k++) {
    th_assert_ok(publish(p, BIG));
    th_assert_ok(memport_sub_recv(s[1], &held[k], SEC));
  }
  ps = pstats(p);
  assert_int_equal(ps.dropped, 9);
  assert_int_equal(ps.buffers_in_use, 3);
  assert_int_equal(ps.buffers_free, 1);
  check_psub(p, 0, 0, 9, 4, 0);
  check_psub(p, 1, 13, 0, 0, 3);
  check_sub(s[1], 13, 3, 0, 0, 3);
  /* The fourth buffer; then a fifth pool message finds none free: its loan drops subscriber 0's
   * untaken pool messages, which frees nothing, as 1 holds them all. */
  th_assert_ok(publish(p, BIG));
  th_assert_ok(memport_sub_recv(s[1], &held[3], SEC));
  ps = pstats(p);
  assert_int_equal(ps.buffers_free, 0);
  assert_int_equal(ps.dropped, 10);
  th_assert_rc(publish(p, BIG), MEMPORT_EAGAIN); /* dropping 0's queue frees nothing: 1 holds all */
  ps = pstats(p);
  assert_int_equal(ps.published, 14);
  assert_int_equal(ps.dropped, 14); /* 0's four pool messages dropped trying */
  check_psub(p, 0, 0, 14, 0, 0);
  check_sub(s[0], 0, 0, 14, 0, 0);
  /* The holder releases one: the next publish takes it. */
  th_assert_ok(memport_sub_release(s[1], &held[0]));
  th_assert_ok(publish(p, BIG));
  ps = pstats(p);
  assert_int_equal(ps.published, 15);
  assert_int_equal(ps.published_pool, 5);
  check_psub(p, 0, 0, 14, 1, 0);
  check_psub(p, 1, 14, 0, 1, 3);
  /* Subscriber 0 finally reads: what it gets and what it missed add up. */
  memport_buf_t b;
  th_assert_ok(memport_sub_recv(s[0], &b, SEC));
  assert_int_equal(b.len, BIG);
  check_sub(s[0], 1, 1, 14, 0, 1);
  th_assert_ok(memport_sub_release(s[0], &b));
  for (int k = 1; k < 4; k++)
    th_assert_ok(memport_sub_release(s[1], &held[k]));
  th_assert_ok(memport_sub_recv(s[1], &b, SEC));
  th_assert_ok(memport_sub_release(s[1], &b));
  ps = pstats(p);
  assert_int_equal(ps.delivered, 16);
  assert_int_equal(ps.buffers_free, 4);
  assert_int_equal(ps.buffers_in_use, 0);
  check_psub(p, 0, 1, 14, 0, 0);
  check_psub(p, 1, 15, 0, 0, 0);
  for (int i = 0; i < 2; i++)
    th_assert_ok(memport_sub_close(s[i]));
  th_assert_ok(memport_pub_close(p));
}

/* History: kept messages are counted; a late joiner's are delivered to it like any other. */
static void test_stats_history(void **state) {
  (void)state;
  const char *name = th_unique_name("tstats");
  memport_topic_opts_t o;
  opts(&o, 8, MEMPORT_TOPIC_BLOCK, 8);
  o.history = 2;
  memport_pub_t *p;
  th_assert_ok(memport_pub_create(&p, name, &o));
  th_assert_ok(publish(p, 10));
  th_assert_ok(publish(p, BIG));
  th_assert_ok(publish(p, BIG));
  memport_pub_stats_t ps = pstats(p);
  assert_int_equal(ps.published, 3);
  assert_int_equal(ps.history, 2);
  assert_int_equal(ps.buffers_in_use, 2); /* the history's */
  memport_sub_t *s;
  connect_n(p, name, &s, 1);
  check_psub(p, 0, 0, 0, 2, 0);
  check_sub(s, 0, 0, 0, 2, 0);
  memport_buf_t b;
  th_assert_ok(memport_sub_recv(s, &b, SEC));
  check_sub(s, 1, 1, 0, 1, 1);
  check_psub(p, 0, 1, 0, 1, 1);
  th_assert_ok(memport_sub_release(s, &b));
  th_assert_ok(memport_sub_close(s));
  th_assert_ok(memport_pub_close(p));
}

/* ------------------------------------------------------------------------------------------ */
/* Listing.                                                                                    */

struct find {
  const char *name;
  int found, kind;
  memport_cred_t owner;
  uint32_t subs;
};

static int find_cb(const memport_name_info_t *info, void *arg) {
  struct find *f = arg;
  if (strcmp(info->name, f->name) == 0) {
    f->found++;
    f->kind = info->kind;
    f->owner = info->owner;
    f->subs = info->subscribers;
  }
  return 0;
}

static struct find lookup(const char *name) {
  struct find f = {.name = name};
  th_assert_ok(memport_name_foreach(find_cb, &f));
  return f;
}

static void expect_listed(const char *name, pid_t pid, uint32_t subs) {
  struct find f = lookup(name);
  assert_int_equal(f.found, 1);
  assert_int_equal(f.kind, MEMPORT_NAME_TOPIC);
  assert_int_equal(f.owner.pid, pid);
  assert_int_equal(f.subs, subs);
}

static void test_listing_counts(void **state) {
  (void)state;
  char name[MEMPORT_NAME_MAX + 1];
  snprintf(name, sizeof name, "%s", th_unique_name("tstats"));
  memport_pub_t *p;
  th_assert_ok(memport_pub_create(&p, name, NULL));
  expect_listed(name, getpid(), 0);
  memport_sub_t *s[3];
  connect_n(p, name, s, 3);
  expect_listed(name, getpid(), 3);
  th_assert_ok(memport_sub_close(s[1]));
  uint64_t end = th_now_ns() + 10 * SEC;
  while (memport_pub_subscribers(p) != 2 && th_now_ns() < end) {
    memport_pub_process(p);
    th_sleep_ms(1);
  }
  expect_listed(name, getpid(), 2);
  /* A topic is a service to memport_port_connect, not a region; its name is taken. */
  memport_region_t *r;
  th_assert_rc(memport_region_open(&r, name, MEMPORT_NOWAIT), MEMPORT_EPROTO);
  memport_service_t *svc;
  th_assert_rc(memport_service_create(&svc, name, 0), MEMPORT_EEXIST);
  th_assert_ok(memport_sub_close(s[0]));
  th_assert_ok(memport_sub_close(s[2]));
  th_assert_ok(memport_pub_close(p));
  assert_int_equal(lookup(name).found, 0);
  /* A plain service is no topic. */
  th_assert_ok(memport_service_create(&svc, name, 0));
  struct find f = lookup(name);
  assert_int_equal(f.found, 1);
  assert_int_equal(f.kind, MEMPORT_NAME_SERVICE);
  assert_int_equal(f.subs, 0);
  memport_service_close(svc);
}

/* Subscribers come and go while another thread lists names: every listing finds the topic (its
 * record is rewritten in place, never absent or malformed), with a count that can be; connects
 * meanwhile never fail. */
struct lister {
  const char *name;
  atomic_bool stop;
  int listings, bad;
};

static void *lister_main(void *arg) {
  struct lister *l = arg;
  while (!atomic_load(&l->stop)) {
    struct find f = {.name = l->name};
    if (memport_name_foreach(find_cb, &f) != 0 || f.found != 1 || f.kind != MEMPORT_NAME_TOPIC || f.subs > 3)
      l->bad++;
    l->listings++;
  }
  return NULL;
}

static void test_listing_churn(void **state) {
  (void)state;
  char name[MEMPORT_NAME_MAX + 1];
  snprintf(name, sizeof name, "%s", th_unique_name("tstats"));
  memport_pub_t *p;
  th_assert_ok(memport_pub_create(&p, name, NULL));
  struct lister l = {.name = name};
  atomic_init(&l.stop, false);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, lister_main, &l), 0);
  int rounds = th_under_valgrind() ? 2 : 10;
  for (int r = 0; r < rounds; r++) {
    memport_sub_t *s[3];
    connect_n(p, name, s, 3);
    for (int i = 0; i < 3; i++)
      th_assert_ok(memport_sub_close(s[i]));
    uint64_t end = th_now_ns() + 10 * SEC;
    while (memport_pub_subscribers(p) != 0 && th_now_ns() < end) {
      memport_pub_process(p);
      th_sleep_ms(1);
    }
    th_assert_rc(memport_pub_subscribers(p), 0);
  }
  atomic_store(&l.stop, true);
  pthread_join(t, NULL);
  assert_int_equal(l.bad, 0);
  assert_true(l.listings > 0);
  expect_listed(name, getpid(), 0);
  memport_pub_stats_t ps = pstats(p);
  assert_int_equal(ps.joined, 3 * (uint64_t)rounds);
  assert_int_equal(ps.left, 3 * (uint64_t)rounds);
  th_assert_ok(memport_pub_close(p));
}

/* A publisher in a child that is killed: its name leaves the listing (and its count with it). */
struct child_arg {
  char name[MEMPORT_NAME_MAX + 1];
};

static int child_publisher(void *arg) {
  struct child_arg *a = arg;
  memport_pub_t *pub;
  if (memport_pub_create(&pub, a->name, NULL) != 0)
    return 2;
  for (;;) { /* serve joins until killed */
    memport_pub_process(pub);
    th_sleep_ms(1);
  }
}

static void test_listing_publisher_killed(void **state) {
  (void)state;
  struct child_arg a;
  snprintf(a.name, sizeof a.name, "%s", th_unique_name("tstats"));
  pid_t kid = th_fork(child_publisher, &a, 120);
  memport_sub_t *s;
  th_assert_ok(memport_sub_connect(&s, a.name, NULL, 30 * SEC));
  uint64_t end = th_now_ns() + 30 * SEC;
  struct find f;
  int st;
  /* The count is written right after the join is answered: wait (bounded) to see it. */
  while ((f = lookup(a.name)).subs != 1 && th_now_ns() < end && !th_exited(kid, &st))
    th_sleep_ms(1);
  expect_listed(a.name, kid, 1);
  kill(kid, SIGKILL);
  assert_int_equal(th_wait(kid, 60), 128 + SIGKILL);
  assert_int_equal(lookup(a.name).found, 0);
  memport_buf_t b;
  th_assert_rc(memport_sub_recv(s, &b, 5 * SEC), MEMPORT_EPEER);
  th_assert_ok(memport_sub_close(s));
  /* The same name is free for a new publisher, listed with no subscriber. */
  memport_pub_t *p;
  th_assert_ok(memport_pub_create(&p, a.name, NULL));
  expect_listed(a.name, getpid(), 0);
  th_assert_ok(memport_pub_close(p));
}

/* memport-ls prints a topic's kind and subscriber count. */
static bool find_memport_ls(char *out, size_t cap) {
  const char *top = getenv("top_builddir");
  if (top != NULL) {
    snprintf(out, cap, "%s/tools/memport-ls", top);
    if (access(out, X_OK) == 0)
      return true;
  }
  return false;
}

static void test_memport_ls_topic(void **state) {
  (void)state;
  char tool[PATH_MAX];
  if (!find_memport_ls(tool, sizeof tool))
    skip();
  char name[MEMPORT_NAME_MAX + 1];
  snprintf(name, sizeof name, "%s", th_unique_name("tstats"));
  memport_pub_t *p;
  th_assert_ok(memport_pub_create(&p, name, NULL));
  memport_sub_t *s[2];
  connect_n(p, name, s, 2);
  char cmd[PATH_MAX + 64];
  snprintf(cmd, sizeof cmd, "'%s'", tool);
  FILE *f = popen(cmd, "r");
  assert_non_null(f);
  char line[512];
  bool header = false, found = false;
  while (fgets(line, sizeof line, f) != NULL) {
    char nm[128], kind[32], subs[32];
    long pid;
    unsigned long uid;
    if (strncmp(line, "NAME", 4) == 0 && strstr(line, "SUBS") != NULL)
      header = true;
    else if (sscanf(line, "%127s %31s %ld %lu %31s", nm, kind, &pid, &uid, subs) == 5 && strcmp(nm, name) == 0)
      found = strcmp(kind, "topic") == 0 && pid == getpid() && uid == geteuid() && strcmp(subs, "2") == 0;
  }
  assert_int_equal(pclose(f), 0);
  assert_true(header);
  assert_true(found);
  for (int i = 0; i < 2; i++)
    th_assert_ok(memport_sub_close(s[i]));
  th_assert_ok(memport_pub_close(p));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_stats_args),
      cmocka_unit_test(test_stats_block),
      cmocka_unit_test(test_stats_drop_oldest),
      cmocka_unit_test(test_stats_history),
      cmocka_unit_test(test_listing_counts),
      cmocka_unit_test(test_listing_churn),
      cmocka_unit_test(test_listing_publisher_killed),
      cmocka_unit_test(test_memport_ls_topic),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
