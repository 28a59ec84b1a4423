/* SPDX-License-Identifier: MIT */
/* test_chan_misuse.c: stale copies of a memport_buf_t are refused on every path (release, buf_kind), lengths are not raised, and allow_uid of our own uid takes no slot. */
#include "helpers.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define POOL_BUF (64 * 1024)

/* Small options: a one-buffer pool (so a buffer comes back under the same index), messages above
 * POOL_BUF in one-off regions. */
static void opts_one_buffer(memport_chan_opts_t *o) {
  memport_chan_opts_init(o);
  o->ring_capacity = 64 * 1024;
  o->zerocopy_threshold = 1024;
  o->pool_buffer_size = POOL_BUF;
  o->pool_buffers = 1;
}

static void pair(memport_chan_t **a, memport_chan_t **b) {
  memport_chan_opts_t o;
  opts_one_buffer(&o);
  th_assert_ok(memport_chan_pair(a, b, &o));
}

/* Send `len` bytes of the pattern `seed` (the path follows from len). */
static void send_pattern(memport_chan_t *ch, size_t len, uint32_t seed) {
  memport_buf_t b;
  th_assert_ok(memport_chan_alloc(ch, len, &b, SEC));
  th_fill(b.data, len, seed);
  th_assert_ok(memport_chan_send_buf(ch, &b, SEC));
}

static void send_small(memport_chan_t *ch, size_t len, uint32_t seed) {
  unsigned char tmp[512];
  assert_true(len <= sizeof tmp);
  th_fill(tmp, len, seed);
  th_assert_ok(memport_chan_send(ch, tmp, len, 0, SEC));
}

/* ------------------------------------------------------------------------------------------ */
/* Received messages.                                                                          */

/* memport_chan_buf_kind names the path of each held message, changes nothing, and refuses what is
 * not held: released buffers, stale copies (also when the index is in use again), another
 * channel's, and buffers of the sending side. */
static void test_buf_kind_names_each_path_and_refuses_the_rest(void **state) {
  (void)state;
  memport_chan_t *a, *b, *x, *y;
  pair(&a, &b);
  pair(&x, &y);
  send_small(b, 100, 1);
  send_pattern(b, 2000, 2);         /* above the zero-copy threshold: the pool */
  send_pattern(b, POOL_BUF + 1, 3); /* above a pool buffer: a one-off region */
  memport_buf_t ring, pool, big;
  th_assert_ok(memport_chan_recv(a, &ring, SEC));
  assert_int_equal(memport_chan_buf_kind(a, &ring), MEMPORT_CHAN_BUF_RING);
  assert_int_equal(memport_chan_buf_kind(a, &ring), MEMPORT_CHAN_BUF_RING); /* asking changes nothing */
  memport_buf_t stale_ring = ring;
  th_assert_ok(memport_chan_release(a, &ring));
  th_assert_rc(memport_chan_buf_kind(a, &stale_ring), MEMPORT_EINVAL);
  th_assert_ok(memport_chan_recv(a, &pool, SEC));
  th_assert_ok(memport_chan_recv(a, &big, SEC)); /* the pool buffer is still held */
  assert_int_equal(memport_chan_buf_kind(a, &pool), MEMPORT_CHAN_BUF_POOL);
  assert_int_equal(memport_chan_buf_kind(a, &big), MEMPORT_CHAN_BUF_REGION);
  assert_int_equal(th_check(pool.data, pool.len, 2), 0);
  assert_int_equal(th_check(big.data, big.len, 3), 0);
  th_assert_rc(memport_chan_buf_kind(y, &pool), MEMPORT_EINVAL); /* another channel's */
  th_assert_rc(memport_chan_buf_kind(NULL, &pool), MEMPORT_EINVAL);
  th_assert_rc(memport_chan_buf_kind(a, NULL), MEMPORT_EINVAL);
  memport_buf_t stale_pool = pool, stale_big = big;
  th_assert_ok(memport_chan_release(a, &pool));
  th_assert_ok(memport_chan_release(a, &big));
  th_assert_rc(memport_chan_buf_kind(a, &stale_pool), MEMPORT_EINVAL);
  th_assert_rc(memport_chan_buf_kind(a, &stale_big), MEMPORT_EINVAL);
  /* The one pool buffer comes back under the same index: the stale copy still names nothing. */
  send_pattern(b, 2000, 4);
  th_assert_ok(memport_chan_recv(a, &pool, SEC));
  assert_int_equal(memport_chan_buf_kind(a, &pool), MEMPORT_CHAN_BUF_POOL);
  th_assert_rc(memport_chan_buf_kind(a, &stale_pool), MEMPORT_EINVAL);
  th_assert_ok(memport_chan_release(a, &pool));
  /* A new ring message held: the stale copy of the first names nothing either. */
  send_small(b, 100, 5);
  th_assert_ok(memport_chan_recv(a, &ring, SEC));
  th_assert_rc(memport_chan_buf_kind(a, &stale_ring), MEMPORT_EINVAL);
  th_assert_ok(memport_chan_release(a, &ring));
  /* The sending side's buffers are not received messages. */
  memport_buf_t out;
  th_assert_ok(memport_chan_alloc(b, 2000, &out, SEC));
  th_assert_rc(memport_chan_buf_kind(b, &out), MEMPORT_EINVAL);
  th_assert_ok(memport_chan_free_buf(b, &out));
  memport_chan_close(a);
  memport_chan_close(b);
  memport_chan_close(x);
  memport_chan_close(y);
}


/* Ring record: a copy of the first held message released again must not release the second
 * (which the sender would then overwrite). */
static void test_stale_release_ring_record(void **state) {
  (void)state;
  memport_chan_t *a, *b;
  pair(&a, &b);
  send_small(b, 100, 1);
  send_small(b, 100, 2);
  memport_buf_t m1, stale, m2;
  th_assert_ok(memport_chan_recv(a, &m1, SEC));
  stale = m1;
  th_assert_ok(memport_chan_release(a, &m1));
  th_assert_rc(memport_chan_release(a, &stale), MEMPORT_EINVAL); /* nothing held */
  th_assert_ok(memport_chan_recv(a, &m2, SEC));
  th_assert_rc(memport_chan_release(a, &stale), MEMPORT_EINVAL); /* the second is held */
  /* Had the stale copy released it, this fills its space in the ring. */
  for (uint32_t k = 0; k < 100; k++)
    (void)memport_chan_send(b, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", 40, 0, 0);
  assert_int_equal(th_check(m2.data, m2.len, 2), 0);
  th_assert_ok(memport_chan_release(a, &m2));
  memport_chan_close(a);
  memport_chan_close(b);
}

/* Pool buffer: with one buffer, the second message comes in the same buffer; a stale copy of the
 * first must not give it back while the second is read. */
static void test_stale_release_pool_buffer(void **state) {
  (void)state;
  memport_chan_t *a, *b;
  pair(&a, &b);
  send_pattern(b, 5000, 1);
  memport_buf_t m1, stale, m2;
  th_assert_ok(memport_chan_recv(a, &m1, SEC));
  stale = m1;
  th_assert_ok(memport_chan_release(a, &m1));
  send_pattern(b, 5000, 2); /* the same buffer, returned by the release */
  th_assert_ok(memport_chan_recv(a, &m2, SEC));
  assert_int_equal(m2.priv[0], stale.priv[0]); /* the same buffer indeed */
  th_assert_rc(memport_chan_release(a, &stale), MEMPORT_EINVAL);
  /* Had it been given back, the sender could take it and overwrite the message being read. */
  memport_buf_t w;
  th_assert_rc(memport_chan_alloc(b, 5000, &w, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
  assert_int_equal(th_check(m2.data, m2.len, 2), 0);
  th_assert_ok(memport_chan_release(a, &m2));
  memport_chan_close(a);
  memport_chan_close(b);
}

/* One-off region received: a stale copy must not unmap what now lives at that address. */
static void test_stale_release_oneoff_received(void **state) {
  (void)state;
  memport_chan_t *a, *b;
  pair(&a, &b);
  int fds = th_count_fds(), maps = th_count_memport_maps();
  send_pattern(b, POOL_BUF + 4096, 1);
  send_pattern(b, POOL_BUF + 4096, 2);
  memport_buf_t m1, stale, m2;
  th_assert_ok(memport_chan_recv(a, &m1, SEC));
  stale = m1;
  th_assert_ok(memport_chan_release(a, &m1));
  th_assert_ok(memport_chan_recv(a, &m2, SEC));
  stale.data = m2.data; /* the worst case: the kernel put the second where the first was */
  th_assert_rc(memport_chan_release(a, &stale), MEMPORT_EINVAL);
  assert_int_equal(th_check(m2.data, m2.len, 2), 0); /* still mapped */
  th_assert_ok(memport_chan_release(a, &m2));
  th_assert_rc(memport_chan_release(a, &m2), MEMPORT_EINVAL); /* cleared by the release */
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
  memport_chan_close(a);
  memport_chan_close(b);
}

/* A buffer received on one channel is refused by another. */
static void test_release_on_the_wrong_channel(void **state) {
  (void)state;
  memport_chan_t *a, *b, *c, *d;
  pair(&a, &b);
  pair(&c, &d);
  send_small(b, 10, 1);
  send_small(d, 10, 2);
  memport_buf_t m, n;
  th_assert_ok(memport_chan_recv(a, &m, SEC));
  th_assert_ok(memport_chan_recv(c, &n, SEC));
  th_assert_rc(memport_chan_release(c, &m), MEMPORT_EINVAL);
  th_assert_ok(memport_chan_release(a, &m));
  th_assert_ok(memport_chan_release(c, &n));
  memport_chan_close(a);
  memport_chan_close(b);
  memport_chan_close(c);
  memport_chan_close(d);
}

/* ------------------------------------------------------------------------------------------ */
/* Allocated buffers.                                                                          */

/* Pool buffer: a stale copy freed again must not free the buffer a later allocation holds (two
 * live allocations would then share it); sent again it must not send it. */
static void test_stale_free_and_send_pool_buffer(void **state) {
  (void)state;
  memport_chan_t *a, *b;
  pair(&a, &b);
  memport_buf_t x, stale, y, z;
  th_assert_ok(memport_chan_alloc(a, 5000, &x, SEC));
  stale = x;
  th_assert_ok(memport_chan_free_buf(a, &x));
  th_assert_ok(memport_chan_alloc(a, 5000, &y, SEC)); /* the same buffer */
  assert_ptr_equal(y.data, stale.data);
  th_assert_rc(memport_chan_free_buf(a, &stale), MEMPORT_EINVAL);
  th_assert_rc(memport_chan_send_buf(a, &stale, SEC), MEMPORT_EINVAL);
  th_assert_rc(memport_chan_alloc(a, 5000, &z, MEMPORT_NOWAIT), MEMPORT_EAGAIN); /* still taken */
  th_fill(y.data, 5000, 7);
  th_assert_ok(memport_chan_send_buf(a, &y, SEC));
  memport_buf_t m;
  th_assert_ok(memport_chan_recv(b, &m, SEC));
  assert_int_equal(m.len, 5000);
  assert_int_equal(th_check(m.data, m.len, 7), 0);
  th_assert_ok(memport_chan_release(b, &m));
  /* a copy of a buffer already sent */
  th_assert_ok(memport_chan_alloc(a, 5000, &x, SEC));
  stale = x;
  th_fill(x.data, 5000, 8);
  th_assert_ok(memport_chan_send_buf(a, &x, SEC));
  th_assert_rc(memport_chan_send_buf(a, &stale, SEC), MEMPORT_EINVAL);
  th_assert_rc(memport_chan_free_buf(a, &stale), MEMPORT_EINVAL);
  th_assert_ok(memport_chan_recv(b, &m, SEC));
  assert_int_equal(th_check(m.data, m.len, 8), 0);
  th_assert_ok(memport_chan_release(b, &m));
  th_assert_rc(memport_chan_recv(b, &m, MEMPORT_NOWAIT), MEMPORT_EAGAIN); /* sent once only */
  memport_chan_close(a);
  memport_chan_close(b);
}

/* One-off region allocated: a stale copy freed again must not close a region created since (its
 * descriptor, or its object at the same address); sent again it must not read the freed one. */
static void test_stale_free_and_send_oneoff(void **state) {
  (void)state;
  memport_chan_t *a, *b;
  pair(&a, &b);
  int fds = th_count_fds(), maps = th_count_memport_maps();
  memport_buf_t x, stale;
  th_assert_ok(memport_chan_alloc(a, POOL_BUF + 1, &x, SEC));
  stale = x;
  th_assert_ok(memport_chan_free_buf(a, &x));
  memport_region_t *unrelated; /* likely gets the freed descriptor, perhaps the freed object */
  th_assert_ok(memport_region_create(&unrelated, 4096, 0));
  th_assert_rc(memport_chan_free_buf(a, &stale), MEMPORT_EINVAL);
  th_assert_rc(memport_chan_send_buf(a, &stale, SEC), MEMPORT_EINVAL);
  void *p;
  th_assert_ok(memport_region_map(unrelated, 0, &p)); /* still open */
  memport_unmap(p);
  memport_region_close(unrelated);
  /* a copy of one already sent */
  th_assert_ok(memport_chan_alloc(a, POOL_BUF + 1, &x, SEC));
  stale = x;
  th_fill(x.data, x.len, 3);
  th_assert_ok(memport_chan_send_buf(a, &x, SEC));
  th_assert_rc(memport_chan_send_buf(a, &stale, SEC), MEMPORT_EINVAL);
  th_assert_rc(memport_chan_free_buf(a, &stale), MEMPORT_EINVAL);
  memport_buf_t m;
  th_assert_ok(memport_chan_recv(b, &m, SEC));
  assert_int_equal(th_check(m.data, m.len, 3), 0);
  th_assert_ok(memport_chan_release(b, &m));
  th_assert_rc(memport_chan_recv(b, &m, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
  assert_int_equal(th_count_fds(), fds);
  memport_chan_close(a);
  memport_chan_close(b);
  assert_true(th_count_memport_maps() <= maps);
}

/* send_buf may lower buf->len, never raise it above what was allocated (pool and one-off). */
static void test_send_buf_len_raised(void **state) {
  (void)state;
  memport_chan_t *a, *b;
  pair(&a, &b);
  size_t sizes[2] = {5000, POOL_BUF + 100};
  for (int k = 0; k < 2; k++) {
    memport_buf_t x;
    th_assert_ok(memport_chan_alloc(a, sizes[k], &x, SEC));
    th_fill(x.data, sizes[k], 4);
    x.len = sizes[k] + 1;
    th_assert_rc(memport_chan_send_buf(a, &x, SEC), MEMPORT_EINVAL);
    x.len = sizes[k] - 1; /* lowered: fine, and the buffer was still ours */
    th_assert_ok(memport_chan_send_buf(a, &x, SEC));
    memport_buf_t m;
    th_assert_ok(memport_chan_recv(b, &m, SEC));
    assert_int_equal(m.len, sizes[k] - 1);
    th_assert_ok(memport_chan_release(b, &m));
  }
  memport_chan_close(a);
  memport_chan_close(b);
}

/* Buffers the application still holds at close are unmapped and closed with the channel. */
static void test_close_with_buffers_held(void **state) {
  (void)state;
  int fds = th_count_fds(), maps = th_count_memport_maps();
  memport_chan_t *a, *b;
  pair(&a, &b);
  send_pattern(b, POOL_BUF + 1, 1);
  memport_buf_t m, x;
  th_assert_ok(memport_chan_recv(a, &m, SEC));
  th_assert_ok(memport_chan_alloc(a, POOL_BUF + 1, &x, SEC));
  memport_chan_close(a);
  memport_chan_close(b);
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

/* ------------------------------------------------------------------------------------------ */

/* Allowing the service's own uid (always allowed) takes none of the 16 slots. */
static void test_allow_own_uid_takes_no_slot(void **state) {
  (void)state;
  memport_service_t *svc;
  th_assert_ok(memport_service_create(&svc, th_unique_name("misuse-uid"), 0));
  uid_t me = geteuid();
  th_assert_ok(memport_service_allow_uid(svc, me));
  uid_t u = 50000;
  for (int k = 0; k < 16; u++) {
    if (u == me)
      continue;
    th_assert_ok(memport_service_allow_uid(svc, u));
    k++;
  }
  if (u == me)
    u++;
  th_assert_rc(memport_service_allow_uid(svc, u), MEMPORT_ENOSPC);
  th_assert_ok(memport_service_allow_uid(svc, me)); /* still fine */
  memport_service_close(svc);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_buf_kind_names_each_path_and_refuses_the_rest),
      cmocka_unit_test(test_stale_release_ring_record),
      cmocka_unit_test(test_stale_release_pool_buffer),
      cmocka_unit_test(test_stale_release_oneoff_received),
      cmocka_unit_test(test_release_on_the_wrong_channel),
      cmocka_unit_test(test_stale_free_and_send_pool_buffer),
      cmocka_unit_test(test_stale_free_and_send_oneoff),
      cmocka_unit_test(test_send_buf_len_raised),
      cmocka_unit_test(test_close_with_buffers_held),
      cmocka_unit_test(test_allow_own_uid_takes_no_slot),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
