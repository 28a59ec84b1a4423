/* SPDX-License-Identifier: MIT */
/* test_chan_diag.c: channel diagnostics: memport_chan_stats, option errors naming their field, one-off fallbacks counted or refused, the pool made when first needed. */
#include "helpers.h"

#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define POOL_BUF (64 * 1024)

static void opts_small(memport_chan_opts_t *o) {
  memport_chan_opts_init(o);
  o->ring_capacity = 64 * 1024;
  o->zerocopy_threshold = 1024;
  o->pool_buffer_size = POOL_BUF;
  o->pool_buffers = 2;
}

static void stats(memport_chan_t *ch, memport_chan_stats_t *s) {
  memset(s, 0xa5, sizeof *s);
  s->struct_size = sizeof *s;
  th_assert_ok(memport_chan_stats(ch, s));
  assert_int_equal(s->struct_size, sizeof *s);
}

static void recv_release(memport_chan_t *ch, size_t len) {
  memport_buf_t m;
  th_assert_ok(memport_chan_recv(ch, &m, SEC));
  assert_int_equal(m.len, len);
  th_assert_ok(memport_chan_release(ch, &m));
}

/* ------------------------------------------------------------------------------------------ */

static void test_stats_counts_each_path(void **state) {
  (void)state;
  memport_chan_opts_t o;
  opts_small(&o);
  memport_chan_t *a, *b;
  th_assert_ok(memport_chan_pair(&a, &b, &o));
  memport_chan_stats_t s;
  th_assert_rc(memport_chan_stats(NULL, &s), MEMPORT_EINVAL);
  th_assert_rc(memport_chan_stats(a, NULL), MEMPORT_EINVAL);
  s.struct_size = 8;
  th_assert_rc(memport_chan_stats(a, &s), MEMPORT_EINVAL);
  stats(a, &s);
  assert_int_equal(s.sent_ring_msgs + s.sent_pool_msgs + s.sent_oneoff_msgs, 0);
  assert_int_equal(s.tx_ring_used, 0);
  assert_true(s.tx_ring_capacity >= 64 * 1024);
  assert_true(s.rx_ring_capacity >= 64 * 1024);

  static unsigned char big[POOL_BUF + 1];
  th_assert_ok(memport_chan_send(a, big, 100, 0, SEC));
  th_assert_ok(memport_chan_send(a, big, 200, 0, SEC));
  th_assert_ok(memport_chan_send(a, big, 5000, 0, SEC));          /* pool */
  th_assert_ok(memport_chan_send(a, big, POOL_BUF + 1, 0, SEC));  /* one-off: a fallback */
  stats(a, &s);
  assert_int_equal(s.sent_ring_msgs, 2);
  assert_int_equal(s.sent_ring_bytes, 300);
  assert_int_equal(s.sent_pool_msgs, 1);
  assert_int_equal(s.sent_pool_bytes, 5000);
  assert_int_equal(s.sent_oneoff_msgs, 1);
  assert_int_equal(s.sent_oneoff_bytes, POOL_BUF + 1);
  assert_int_equal(s.oneoff_fallbacks, 1);
  assert_true(s.tx_ring_used > 300); /* four records, none consumed */
  assert_int_equal(s.tx_pool_buffers, 2);
  assert_int_equal(s.tx_pool_lent, 1);
  assert_int_equal(s.tx_pool_allocated, 0);
  memport_chan_stats_t r;
  stats(b, &r);
  assert_int_equal(r.rx_ring_used, s.tx_ring_used);
  assert_int_equal(r.recv_ring_msgs, 0);

  recv_release(b, 100);
  memport_buf_t held;
  size_t got;
  th_assert_ok(memport_chan_recv_copy(b, big, sizeof big, &got, SEC));
  assert_int_equal(got, 200);
  th_assert_ok(memport_chan_recv(b, &held, SEC)); /* pool, held */
  stats(b, &r);
  assert_int_equal(r.recv_ring_msgs, 2);
  assert_int_equal(r.recv_ring_bytes, 300);
  assert_int_equal(r.recv_pool_msgs, 1);
  assert_int_equal(r.recv_pool_bytes, 5000);
  assert_int_equal(r.rx_pool_buffers, 2);
  assert_int_equal(r.rx_pool_held, 1);
  th_assert_ok(memport_chan_release(b, &held));
  recv_release(b, POOL_BUF + 1);
  stats(b, &r);
  assert_int_equal(r.recv_oneoff_msgs, 1);
  assert_int_equal(r.recv_oneoff_bytes, POOL_BUF + 1);
  assert_int_equal(r.rx_pool_held, 0);
  assert_int_equal(r.rx_ring_used, 0);
  /* our pool: one allocated, one lent until the sender collects the release */
  memport_buf_t x;
  th_assert_ok(memport_chan_alloc(a, 10, &x, SEC));
  stats(a, &s);
  assert_int_equal(s.tx_pool_allocated, 1);
  assert_int_equal(s.tx_ring_used, 0);
  th_assert_ok(memport_chan_free_buf(a, &x));

  /* Wake-ups: b waits through its pollable handle (recv NOWAIT asks for one), a's send wakes it. */
  memport_buf_t m;
  th_assert_rc(memport_chan_recv(b, &m, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
  stats(a, &s);
  uint64_t sent_before = s.wakeups_sent; /* a new channel asks for a wake-up at the first message */
  stats(b, &r);
  uint64_t received_before = r.wakeups_received;
  th_assert_ok(memport_chan_send(a, big, 10, 0, SEC));
  stats(a, &s);
  assert_int_equal(s.wakeups_sent, sent_before + 1);
  recv_release(b, 10); /* from the ring: the wake-up may still be in the port */
  th_assert_rc(memport_chan_recv(b, &m, MEMPORT_NOWAIT), MEMPORT_EAGAIN); /* reads the port */
  stats(b, &r);
  assert_int_equal(r.wakeups_received, received_before + 1);
  memport_chan_close(a);
  memport_chan_close(b);
}

/* A side that never sends zero-copy never makes its pool; the other side's is made on first use
 * and reaches the peer with that message. */
static void test_pool_made_when_first_needed(void **state) {
  (void)state;
  int maps0 = th_count_memport_maps();
  memport_chan_t *a, *b;
  th_assert_ok(memport_chan_pair(&a, &b, NULL)); /* the defaults: 8 buffers of 8 MiB */
  memport_chan_stats_t s;
  stats(a, &s);
  assert_int_equal(s.tx_pool_buffers, 0);
  assert_int_equal(s.rx_pool_buffers, 0);
  int maps1 = th_count_memport_maps();
  static unsigned char msg[1 << 20];
  th_fill(msg, sizeof msg, 9);
  th_assert_ok(memport_chan_send(a, msg, 100, 0, SEC));
  recv_release(b, 100);
  assert_int_equal(th_count_memport_maps(), maps1); /* small messages: still no pool */
  th_assert_ok(memport_chan_send(a, msg, sizeof msg, 0, SEC));
  stats(a, &s);
  assert_int_equal(s.tx_pool_buffers, 8);
  memport_buf_t m;
  th_assert_ok(memport_chan_recv(b, &m, SEC));
  assert_int_equal(m.len, sizeof msg);
  assert_int_equal(th_check(m.data, m.len, 9), 0);
  th_assert_ok(memport_chan_release(b, &m));
  stats(b, &s);
  assert_int_equal(s.rx_pool_buffers, 8);
  assert_int_equal(s.tx_pool_buffers, 0); /* b never sent zero-copy */
  assert_int_equal(s.recv_pool_msgs, 1);
  /* the second message through the pool needs no announcement */
  th_assert_ok(memport_chan_send(a, msg, sizeof msg, 0, SEC));
  th_assert_ok(memport_chan_recv(b, &m, SEC));
  assert_int_equal(th_check(m.data, m.len, 9), 0);
  th_assert_ok(memport_chan_release(b, &m));
  memport_chan_close(a);
  memport_chan_close(b);
  assert_int_equal(th_count_memport_maps(), maps0);
}

/* A receiver asleep in its poll() is woken by the first zero-copy message (its pool announced
 * ahead of it) and finds it: the announcement does not swallow the wake-up. */
static int send_first_zerocopy(void *arg) {
  memport_chan_t *ch = arg;
  th_sleep_ms(50);
  static unsigned char msg[200000];
  th_fill(msg, sizeof msg, 5);
  return memport_chan_send(ch, msg, sizeof msg, 0, 5 * SEC) == 0 ? 0 : 1;
}

static void test_pool_announcement_wakes_with_the_message(void **state) {
  (void)state;
  memport_chan_opts_t o;
  opts_small(&o);
  o.pool_buffer_size = 256 * 1024;
  memport_chan_t *a, *b;
  th_assert_ok(memport_chan_pair(&a, &b, &o));
  pid_t pid = th_fork(send_first_zerocopy, a, 10);
  memport_chan_close(a);
  memport_buf_t m;
  th_assert_rc(memport_chan_recv(b, &m, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
  memport_os_handle_t h;
  th_assert_ok(memport_chan_pollable(b, &h));
  int rc;
  /* The pool's announcement, just ahead of the message, may make the handle ready before the
   * message is there (spurious readiness); then it is ready again with the message. */
  struct pollfd pfd = {(int)h, POLLIN, 0};
  int tries = 0;
  do
    assert_int_equal(poll(&pfd, 1, 5000), 1);
  while ((rc = memport_chan_recv(b, &m, MEMPORT_NOWAIT)) == MEMPORT_EAGAIN && ++tries < 3);
  th_assert_ok(rc);
  assert_int_equal(m.len, 200000);
  assert_int_equal(th_check(m.data, m.len, 5), 0);
  th_assert_ok(memport_chan_release(b, &m));
  assert_int_equal(th_wait(pid, 10), 0);
  memport_chan_close(b);
}

/* ------------------------------------------------------------------------------------------ */

static void test_no_oneoff_refuses_with_emsgsize(void **state) {
  (void)state;
  memport_chan_opts_t o;
  opts_small(&o);
  o.flags = MEMPORT_CHAN_NO_ONEOFF;
  memport_chan_t *a, *b;
  th_assert_ok(memport_chan_pair(&a, &b, &o));
  static unsigned char big[POOL_BUF + 1];
  int fds = th_count_fds();
  th_assert_rc(memport_chan_send(a, big, POOL_BUF + 1, 0, SEC), MEMPORT_EMSGSIZE);
  memport_buf_t x;
  th_assert_rc(memport_chan_alloc(a, POOL_BUF + 1, &x, SEC), MEMPORT_EMSGSIZE);
  assert_int_equal(th_count_fds(), fds); /* no region made */
  th_assert_ok(memport_chan_send(a, big, POOL_BUF, 0, SEC)); /* fits a pool buffer */
  recv_release(b, POOL_BUF);
  memport_chan_stats_t s;
  stats(a, &s);
  assert_int_equal(s.oneoff_refused, 2);
  assert_int_equal(s.oneoff_fallbacks, 0);
  assert_int_equal(s.sent_oneoff_msgs, 0);
  memport_chan_close(a);
  memport_chan_close(b);
  /* without a pool, everything above the threshold is refused */
  o.pool_buffers = 0;
  th_assert_ok(memport_chan_pair(&a, &b, &o));
  th_assert_rc(memport_chan_send(a, big, 2000, 0, SEC), MEMPORT_EMSGSIZE);
  th_assert_ok(memport_chan_send(a, big, 1000, 0, SEC));
  memport_chan_close(a);
  memport_chan_close(b);
}

static void expect_field(const memport_chan_opts_t *o, const char *field) {
  const char *f = "unset";
  th_assert_rc(memport_chan_opts_check(o, &f), MEMPORT_EINVAL);
  assert_non_null(f);
  assert_string_equal(f, field);
  memport_chan_t *a = NULL, *b = NULL;
  th_assert_rc(memport_chan_pair(&a, &b, o), MEMPORT_EINVAL);
}

static void test_opts_check_names_the_field(void **state) {
  (void)state;
  memport_chan_opts_t o, bad;
  memport_chan_opts_init(&o);
  const char *f = "unset";
  th_assert_ok(memport_chan_opts_check(&o, &f));
  assert_null(f);
  th_assert_ok(memport_chan_opts_check(&o, NULL));
  th_assert_rc(memport_chan_opts_check(NULL, &f), MEMPORT_EINVAL);
  bad = o, bad.struct_size = 8;
  expect_field(&bad, "struct_size");
  bad = o, bad.ring_capacity = 0;
  expect_field(&bad, "ring_capacity");
  bad = o, bad.pool_buffers = 1u << 30;
  expect_field(&bad, "pool_buffers");
  bad = o, bad.pool_buffer_size = 0;
  expect_field(&bad, "pool_buffer_size");
  bad = o, bad.wait_policy = 9;
  expect_field(&bad, "wait_policy");
  bad = o, bad.spin_ns = -1;
  expect_field(&bad, "spin_ns");
  bad = o, bad.flags = 1u << 7;
  expect_field(&bad, "flags");
  /* A threshold above the ring's record limit is clamped to it: the channel works. */
  memport_chan_t *a, *b;
  bad = o, bad.ring_capacity = 64 * 1024, bad.zerocopy_threshold = (size_t)1 << 40;
  th_assert_ok(memport_chan_opts_check(&bad, NULL));
  th_assert_ok(memport_chan_pair(&a, &b, &bad));
  static unsigned char msg[128 * 1024];
  th_assert_ok(memport_chan_send(a, msg, 60 * 1024, 0, SEC)); /* fits a record: the ring */
  th_assert_ok(memport_chan_send(a, msg, sizeof msg, 0, SEC)); /* does not: zero-copy */
  recv_release(b, 60 * 1024);
  recv_release(b, sizeof msg);
  memport_chan_stats_t s;
  stats(a, &s);
  assert_int_equal(s.sent_ring_msgs, 1);
  assert_int_equal(s.sent_pool_msgs, 1);
  memport_chan_close(a);
  memport_chan_close(b);
  /* Options from before `flags` existed (struct_size = its offset) are accepted. */
  bad = o, bad.struct_size = offsetof(memport_chan_opts_t, flags);
  th_assert_ok(memport_chan_opts_check(&bad, NULL));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_stats_counts_each_path),
      cmocka_unit_test(test_pool_made_when_first_needed),
      cmocka_unit_test(test_pool_announcement_wakes_with_the_message),
      cmocka_unit_test(test_no_oneoff_refuses_with_emsgsize),
      cmocka_unit_test(test_opts_check_names_the_field),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
