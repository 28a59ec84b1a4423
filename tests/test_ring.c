/* SPDX-License-Identifier: MIT */
/* test_ring.c: the mirrored SPSC record ring: boundaries, wrap, waits across fork, hostile shared memory. */
#include "helpers.h"

#include "../lib/chan_proto.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A deterministic byte pattern per (seed, index). */
static const int policies[3] = {MEMPORT_WAIT_BLOCK, MEMPORT_WAIT_SPIN, MEMPORT_WAIT_ADAPTIVE};

/* Map the shared control page of `ring` (as a hostile peer would, from the exported handles). */
static struct memport__ring_shared *map_ctrl(memport_ring_t *ring, unsigned char **data) {
  memport_msg_t *m;
  if (memport_msg_create(&m) != 0 || memport_ring_export(ring, m) != 0)
    return NULL;
  memport_region_t *cr = NULL, *dr = NULL;
  void *c = NULL, *d = NULL;
  if (memport_msg_take_region(m, 0, &cr) != 0 || memport_msg_take_region(m, 1, &dr) != 0 ||
      memport_region_map(cr, 0, &c) != 0 || memport_region_map(dr, MEMPORT_MAP_MIRROR, &d) != 0)
    c = NULL;
  memport_region_close(cr);
  memport_region_close(dr);
  memport_msg_close(m);
  if (data != NULL)
    *data = d;
  else if (d != NULL)
    memport_unmap(d);
  return c;
}

/* ------------------------------------------------------------------------------------------ */

static void test_ring_create_rejects_bad_arguments(void **state) {
  (void)state;
  memport_ring_t *r = (memport_ring_t *)&r;
  th_assert_rc(memport_ring_create(NULL, 4096, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_ring_create(&r, 0, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_ring_create(&r, 4096, 1u << 7), MEMPORT_EINVAL);
  th_assert_rc(memport_ring_create(&r, (size_t)1 << 31, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_ring_create(&r, SIZE_MAX, 0), MEMPORT_EINVAL);
  th_assert_ok(memport_ring_close(NULL));
  assert_int_equal(memport_ring_max_record(NULL), 0);
  th_assert_rc(memport_ring_set_wait(NULL, MEMPORT_WAIT_BLOCK, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_ring_reserve(NULL, 1, (void **)&r, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_ring_commit(NULL, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_ring_release(NULL), MEMPORT_EINVAL);
  th_assert_rc(memport_ring_export(NULL, NULL), MEMPORT_EINVAL);
  th_assert_rc(memport_ring_import(NULL, NULL, 0), MEMPORT_EINVAL);
}

static void test_ring_capacity_rounds_to_pages_and_bounds_records(void **state) {
  (void)state;
  int fds = th_count_fds(), maps = th_count_memport_maps();
  memport_ring_t *r;
  th_assert_ok(memport_ring_create(&r, 100, 0));
  size_t page = memport_page_size();
  assert_int_equal(memport_ring_max_record(r), page - MEMPORT__RING_HDR);
  th_assert_rc(memport_ring_set_wait(r, 7, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_ring_set_wait(r, MEMPORT_WAIT_SPIN, -1), MEMPORT_EINVAL);
  void *p;
  th_assert_rc(memport_ring_reserve(r, 1, NULL, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_ring_write(r, NULL, 1, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_ring_commit(r, 0), MEMPORT_EINVAL); /* nothing reserved */
  th_assert_rc(memport_ring_release(r), MEMPORT_EINVAL); /* nothing peeked */
  th_assert_ok(memport_ring_reserve(r, 0, &p, 0));
  th_assert_ok(memport_ring_close(r));
  th_assert_ok(memport_ring_create(&r, 3 * page + 1, 0));
  assert_int_equal(memport_ring_max_record(r), 4 * page - MEMPORT__RING_HDR);
  th_assert_ok(memport_ring_close(r));
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

static void test_ring_sizes_at_every_boundary(void **state) {
  (void)state;
  memport_ring_t *r;
  th_assert_ok(memport_ring_create(&r, 16384, 0));
  size_t max = memport_ring_max_record(r);
  unsigned char *buf = malloc(max + 1), *out = malloc(max + 1);
  assert_non_null(buf);
  assert_non_null(out);
  size_t sizes[] = {0, 1, 15, 16, 17, max / 2, max - 17, max - 1, max};
  for (int round = 0; round < 3; round++) {
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
      size_t n = sizes[i];
      th_fill(buf, n, (uint32_t)(n + 7 * i));
      th_assert_ok(memport_ring_write(r, buf, n, 0));
      size_t got = SIZE_MAX;
      memset(out, 0xee, max + 1);
      th_assert_ok(memport_ring_read(r, out, max + 1, &got, 0));
      assert_int_equal(got, n);
      assert_int_equal(th_check(out, n, (uint32_t)(n + 7 * i)), 0);
    }
  }
  void *p;
  th_assert_rc(memport_ring_reserve(r, max + 1, &p, 0), MEMPORT_EMSGSIZE);
  th_assert_rc(memport_ring_write(r, buf, max + 1, 0), MEMPORT_EMSGSIZE);
  th_assert_rc(memport_ring_reserve(r, SIZE_MAX, &p, 0), MEMPORT_EMSGSIZE);
  /* A max record needs the whole ring: with one byte queued it cannot fit. */
  th_assert_ok(memport_ring_write(r, buf, 1, 0));
  th_assert_rc(memport_ring_reserve(r, max, &p, 0), MEMPORT_EAGAIN);
  size_t got;
  th_assert_ok(memport_ring_read(r, out, max, &got, 0));
  th_assert_ok(memport_ring_reserve(r, max, &p, 0));
  free(buf);
  free(out);
  th_assert_ok(memport_ring_close(r));
}

/* Move the ring's position to `to` modulo the capacity with one filler record. */
static void advance(memport_ring_t *r, size_t cap, size_t *cur, size_t to) {
  size_t delta = (to + cap - *cur) % cap;
  if (delta == 0)
    return;
  void *p;
  const void *q;
  size_t len;
  th_assert_ok(memport_ring_reserve(r, delta - MEMPORT__RING_HDR, &p, 0));
  th_assert_ok(memport_ring_commit(r, delta - MEMPORT__RING_HDR));
  th_assert_ok(memport_ring_peek(r, &q, &len, 0));
  assert_int_equal(len, delta - MEMPORT__RING_HDR);
  th_assert_ok(memport_ring_release(r));
  *cur = to;
}

static void test_ring_records_cross_the_end_at_every_offset(void **state) {
  (void)state;
  memport_ring_t *r;
  size_t cap = memport_page_size();
  th_assert_ok(memport_ring_create(&r, cap, 0));
  size_t max = memport_ring_max_record(r), cur = 0;
  unsigned char *tmp = malloc(cap);
  assert_non_null(tmp);
  uint32_t seed = 1;
  for (size_t off = 0; off < cap; off += MEMPORT__RING_ALIGN) {
    /* Lengths whose payload ends just past the end, well past it, and exactly at it. */
    size_t room = cap - off; /* bytes from this offset to the end of the first view */
    size_t lens[] = {room > MEMPORT__RING_HDR ? room - MEMPORT__RING_HDR : 0, room - MEMPORT__RING_HDR + 1,
                     room + 7, room + 100, max};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
      size_t n = lens[i];
      if (n > max || (room < MEMPORT__RING_HDR && i == 0))
        continue;
      advance(r, cap, &cur, off);
      void *p;
      th_assert_ok(memport_ring_reserve(r, n, &p, 0));
      /* The reserved bytes are contiguous and inside the mapping even across the end. */
      th_fill(p, n, seed);
      th_assert_ok(memport_ring_commit(r, n));
      const void *q;
      size_t len;
      th_assert_ok(memport_ring_peek(r, &q, &len, 0));
      assert_ptr_equal(q, p);
      assert_int_equal(len, n);
      if (th_check(q, n, seed) != 0)
        fail_msg("payload of %zu bytes at offset %zu corrupted", n, off);
      th_assert_ok(memport_ring_release(r));
      cur = (off + MEMPORT__RING_HDR + ((n + 15) & ~(size_t)15)) % cap;
      seed++;
    }
  }
  /* And a random-size stream with several records in flight. */
  uint32_t wseed = 1000, rseed = 1000;
  size_t inflight = 0;
  srand(7);
  for (int i = 0; i < 20000; i++) {
    size_t n = (size_t)rand() % (cap / 3);
    th_fill(tmp, n, wseed);
    int rc = memport_ring_write(r, tmp, n, 0);
    if (rc == 0) {
      wseed++;
      inflight++;
    } else {
      th_assert_rc(rc, MEMPORT_EAGAIN);
    }
    if (rc != 0 || rand() % 3 == 0) {
      while (inflight > 0) {
        size_t got;
        th_assert_ok(memport_ring_read(r, tmp, cap, &got, 0));
        assert_int_equal(th_check(tmp, got, rseed), 0);
        rseed++;
        inflight--;
        if (rand() % 2)
          break;
      }
    }
  }
  free(tmp);
  th_assert_ok(memport_ring_close(r));
}

static void test_ring_commit_shorter_than_reserved(void **state) {
  (void)state;
  memport_ring_t *r;
  th_assert_ok(memport_ring_create(&r, 4096, 0));
  void *p;
  th_assert_ok(memport_ring_reserve(r, 100, &p, 0));
  memcpy(p, "0123456789", 10);
  th_assert_rc(memport_ring_commit(r, 101), MEMPORT_EINVAL);
  th_assert_ok(memport_ring_commit(r, 10));
  th_assert_rc(memport_ring_commit(r, 0), MEMPORT_EINVAL); /* reservation used up */
  /* A second reserve replaces an uncommitted one. */
  th_assert_ok(memport_ring_reserve(r, 50, &p, 0));
  th_assert_ok(memport_ring_reserve(r, 20, &p, 0));
  memcpy(p, "abc", 3);
  th_assert_rc(memport_ring_commit(r, 21), MEMPORT_EINVAL);
  th_assert_ok(memport_ring_commit(r, 3));
  const void *q;
  size_t len;
  th_assert_ok(memport_ring_peek(r, &q, &len, 0));
  assert_int_equal(len, 10);
  assert_memory_equal(q, "0123456789", 10);
  th_assert_ok(memport_ring_release(r));
  th_assert_ok(memport_ring_peek(r, &q, &len, 0));
  assert_int_equal(len, 3);
  assert_memory_equal(q, "abc", 3);
  th_assert_ok(memport_ring_release(r));
  th_assert_rc(memport_ring_peek(r, &q, &len, 0), MEMPORT_EAGAIN);
  th_assert_ok(memport_ring_close(r));
}

static void test_ring_peek_is_in_place_until_release(void **state) {
  (void)state;
  memport_ring_t *r;
  th_assert_ok(memport_ring_create(&r, 4096, 0));
  th_assert_ok(memport_ring_write(r, "first", 5, 0));
  th_assert_ok(memport_ring_write(r, "second!", 7, 0));
  const void *a, *b;
  size_t la, lb;
  th_assert_ok(memport_ring_peek(r, &a, &la, 0));
  th_assert_ok(memport_ring_peek(r, &b, &lb, 0));
  assert_ptr_equal(a, b);
  assert_int_equal(la, 5);
  assert_int_equal((uintptr_t)a % MEMPORT__RING_ALIGN, 0);
  th_assert_ok(memport_ring_release(r));
  th_assert_rc(memport_ring_release(r), MEMPORT_EINVAL);
  th_assert_ok(memport_ring_peek(r, &b, &lb, 0));
  assert_int_equal(lb, 7);
  assert_memory_equal(b, "second!", 7);
  assert_ptr_not_equal(a, b);
  th_assert_ok(memport_ring_release(r));
  th_assert_ok(memport_ring_close(r));
}

static void test_ring_read_with_short_buffer_keeps_record(void **state) {
  (void)state;
  memport_ring_t *r;
  th_assert_ok(memport_ring_create(&r, 4096, 0));
  unsigned char in[100], out[100];
  th_fill(in, sizeof in, 5);
  th_assert_ok(memport_ring_write(r, in, sizeof in, 0));
  size_t len = 0;
  th_assert_rc(memport_ring_read(r, out, 50, &len, 0), MEMPORT_EMSGSIZE);
  assert_int_equal(len, 100);
  th_assert_rc(memport_ring_read(r, NULL, 0, &len, 0), MEMPORT_EMSGSIZE);
  th_assert_ok(memport_ring_read(r, out, sizeof out, &len, 0));
  assert_int_equal(len, 100);
  assert_memory_equal(in, out, 100);
  th_assert_rc(memport_ring_read(r, out, sizeof out, &len, 0), MEMPORT_EAGAIN);
  th_assert_ok(memport_ring_close(r));
}

static void test_ring_timeouts_on_empty_and_full(void **state) {
  (void)state;
  for (int i = 0; i < 3; i++) {
    memport_ring_t *r;
    th_assert_ok(memport_ring_create(&r, 4096, 0));
    th_assert_ok(memport_ring_set_wait(r, policies[i], 0));
    const void *q;
    size_t len;
    th_assert_rc(memport_ring_peek(r, &q, &len, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
    uint64_t t0 = th_now_ns();
    th_assert_rc(memport_ring_peek(r, &q, &len, 30000000), MEMPORT_ETIMEDOUT);
    uint64_t el = th_now_ns() - t0;
    assert_true(el >= 30000000u);
    assert_true(el < 1000000000u);
    void *p;
    th_assert_ok(memport_ring_reserve(r, memport_ring_max_record(r), &p, 0));
    th_assert_ok(memport_ring_commit(r, memport_ring_max_record(r)));
    th_assert_rc(memport_ring_reserve(r, 0, &p, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
    t0 = th_now_ns();
    th_assert_rc(memport_ring_reserve(r, 0, &p, 30000000), MEMPORT_ETIMEDOUT);
    el = th_now_ns() - t0;
    assert_true(el >= 30000000u);
    assert_true(el < 1000000000u);
    printf("# policy %d: 30 ms timeouts took %.1f ms\n", policies[i], (double)el / 1e6);
    th_assert_ok(memport_ring_close(r));
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Across fork: the producer in the child, the consumer in the parent.                          */

#define FORK_RECORDS 60000u

struct fork_arg {
  memport_ring_t *ring;
  int policy;
  unsigned pause_every; /* producer pauses so the consumer must sleep */
};

static size_t rec_size(uint32_t i) { return (i * 7919u) % 3000u + (i % 5 == 0 ? 0 : 8); }

static int producer_child(void *varg) {
  struct fork_arg *a = varg;
  if (memport_ring_set_wait(a->ring, a->policy, 20000) != 0)
    return 10;
  for (uint32_t i = 0; i < FORK_RECORDS; i++) {
    size_t n = rec_size(i);
    void *p;
    int rc = memport_ring_reserve(a->ring, n, &p, 30000000000);
    if (rc != 0) {
      fprintf(stderr, "producer: reserve %u: %s\n", i, memport_err_name(rc));
      return 11;
    }
    if (n >= 4)
      memcpy(p, &i, 4);
    if (n > 4)
      th_fill((unsigned char *)p + 4, n - 4, i);
    if (memport_ring_commit(a->ring, n) != 0)
      return 12;
    if (a->pause_every != 0 && i % a->pause_every == 0)
      th_sleep_ms(2);
  }
  return 0;
}

static void run_fork_stream(int policy) {
  memport_ring_t *r;
  th_assert_ok(memport_ring_create(&r, 16384, 0));
  th_assert_ok(memport_ring_set_wait(r, policy, 20000));
  struct fork_arg a = {r, policy, 10000};
  pid_t pid = th_fork(producer_child, &a, 60);
  assert_true(pid > 0);
  for (uint32_t i = 0; i < FORK_RECORDS; i++) {
    const void *q;
    size_t len;
    int rc = memport_ring_peek(r, &q, &len, 30000000000); /* generous: both sides may spin on a loaded 2-CPU machine */
    if (rc != 0)
      fail_msg("consumer: peek %u: %s", i, memport_err_name(rc));
    if (len != rec_size(i))
      fail_msg("record %u: %zu bytes, expected %zu", i, len, rec_size(i));
    if (len >= 4) {
      uint32_t seq;
      memcpy(&seq, q, 4);
      if (seq != i)
        fail_msg("record %u carries %u", i, seq);
    }
    if (len > 4 && th_check((const unsigned char *)q + 4, len - 4, i) != 0)
      fail_msg("record %u corrupted", i);
    th_assert_ok(memport_ring_release(r));
    if (i % 15000 == 0)
      th_sleep_ms(3); /* the ring fills: the producer must wait for space */
  }
  assert_int_equal(th_wait(pid, 60), 0);
  const void *q;
  size_t len;
  th_assert_rc(memport_ring_peek(r, &q, &len, 0), MEMPORT_EAGAIN);
  th_assert_ok(memport_ring_close(r));
}

static void test_ring_block_policy_across_fork(void **state) {
  (void)state;
  run_fork_stream(MEMPORT_WAIT_BLOCK);
}
static void test_ring_spin_policy_across_fork(void **state) {
  (void)state;
  run_fork_stream(MEMPORT_WAIT_SPIN);
}
static void test_ring_adaptive_policy_across_fork(void **state) {
  (void)state;
  run_fork_stream(MEMPORT_WAIT_ADAPTIVE);
}

/* A consumer asleep on the semaphore is woken by a commit (no lost wake-up), many times over. */
static int pingpong_child(void *varg) {
  memport_ring_t **rings = varg; /* [0]: parent -> child, [1]: child -> parent */
  memport_ring_set_wait(rings[0], MEMPORT_WAIT_BLOCK, 0);
  memport_ring_set_wait(rings[1], MEMPORT_WAIT_BLOCK, 0);
  for (uint32_t i = 0; i < 5000; i++) {
    uint32_t v;
    size_t len;
    if (memport_ring_read(rings[0], &v, sizeof v, &len, 5000000000) != 0 || v != i)
      return 20;
    v++;
    if (memport_ring_write(rings[1], &v, sizeof v, 5000000000) != 0)
      return 21;
  }
  return 0;
}

static void test_ring_blocking_pingpong_loses_no_wakeup(void **state) {
  (void)state;
  memport_ring_t *rings[2];
  th_assert_ok(memport_ring_create(&rings[0], 4096, 0));
  th_assert_ok(memport_ring_create(&rings[1], 4096, 0));
  memport_ring_set_wait(rings[0], MEMPORT_WAIT_BLOCK, 0);
  memport_ring_set_wait(rings[1], MEMPORT_WAIT_BLOCK, 0);
  pid_t pid = th_fork(pingpong_child, rings, 60);
  uint64_t t0 = th_now_ns();
  for (uint32_t i = 0; i < 5000; i++) {
    th_assert_ok(memport_ring_write(rings[0], &i, sizeof i, 5000000000));
    uint32_t v;
    size_t len;
    th_assert_ok(memport_ring_read(rings[1], &v, sizeof v, &len, 5000000000));
    assert_int_equal(v, i + 1);
  }
  printf("# blocking ping-pong: %.2f us per round trip\n", (double)(th_now_ns() - t0) / 5000 / 1e3);
  assert_int_equal(th_wait(pid, 60), 0);
  memport_ring_close(rings[0]);
  memport_ring_close(rings[1]);
}

/* ------------------------------------------------------------------------------------------ */
/* Export / import.                                                                             */

/* Export attaches all four handles or none: a message without room for four gets
 * MEMPORT_ENOSPC and keeps exactly what it had, with no descriptor made. */
static void test_ring_export_is_all_or_nothing(void **state) {
  (void)state;
  memport_ring_t *r;
  th_assert_ok(memport_ring_create(&r, 8192, 0));
  memport_msg_t *m;
  th_assert_ok(memport_msg_create(&m));
  for (unsigned i = 0; i < MEMPORT_MSG_MAX_HANDLES - 3; i++) {
    memport_sem_t *s;
    th_assert_ok(memport_sem_create(&s, 0, 0));
    th_assert_ok(memport_msg_attach_sem(m, s, 0));
  }
  int fds = th_count_fds();
  th_assert_rc(memport_ring_export(r, m), MEMPORT_ENOSPC);
  assert_int_equal(memport_msg_handle_count(m), MEMPORT_MSG_MAX_HANDLES - 3);
  assert_int_equal(th_count_fds(), fds);
  th_assert_ok(memport_msg_clear(m));
  th_assert_ok(memport_ring_export(r, m));
  assert_int_equal(memport_msg_handle_count(m), 4);
  assert_int_equal(memport_msg_handle_kind(m, 0), MEMPORT_HANDLE_REGION);
  assert_int_equal(memport_msg_handle_kind(m, 3), MEMPORT_HANDLE_SEM);
  memport_msg_close(m);
  memport_ring_close(r);
}

static void test_ring_export_import_shares_the_same_ring(void **state) {
  (void)state;
  int fds = th_count_fds(), maps = th_count_memport_maps();
  memport_port_t *pa, *pb;
  th_assert_ok(memport_port_pair(&pa, &pb));
  memport_msg_t *m;
  th_assert_ok(memport_msg_create(&m));
  memport_ring_t *r, *r2;
  th_assert_ok(memport_ring_create(&r, 8192, 0));
  th_assert_ok(memport_msg_set_bytes(m, "ring", 4));
  th_assert_ok(memport_ring_export(r, m));
  assert_int_equal(memport_msg_handle_count(m), 4);
  th_assert_ok(memport_port_send(pa, m, 1000000000));
  th_assert_ok(memport_port_recv(pb, m, 1000000000));
  th_assert_ok(memport_ring_import(&r2, m, 0));
  assert_int_equal(memport_ring_max_record(r2), memport_ring_max_record(r));
  for (uint32_t i = 0; i < 3000; i++) {
    unsigned char b[600];
    size_t n = i % 600, len;
    th_fill(b, n, i);
    th_assert_ok(memport_ring_write(r, b, n, 0));
    th_assert_ok(memport_ring_read(r2, b, sizeof b, &len, 0));
    assert_int_equal(len, n);
    assert_int_equal(th_check(b, n, i), 0);
  }
  /* The other way round too: the imported side produces. */
  th_assert_ok(memport_ring_write(r2, "back", 4, 0));
  char out[8];
  size_t len;
  th_assert_ok(memport_ring_read(r, out, sizeof out, &len, 0));
  assert_memory_equal(out, "back", 4);
  th_assert_ok(memport_ring_close(r2));
  th_assert_ok(memport_ring_close(r));
  memport_msg_close(m);
  memport_port_close(pa);
  memport_port_close(pb);
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

static void test_ring_import_rejects_foreign_handles(void **state) {
  (void)state;
  int fds = th_count_fds(), maps = th_count_memport_maps();
  memport_msg_t *m;
  th_assert_ok(memport_msg_create(&m));
  memport_ring_t *r = NULL;
  memport_region_t *a, *b;
  memport_sem_t *s1, *s2;
  /* Too few handles. */
  th_assert_ok(memport_region_create(&a, 4096, 0));
  th_assert_ok(memport_msg_attach_region(m, a, 0));
  th_assert_rc(memport_ring_import(&r, m, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_ring_import(&r, m, 5), MEMPORT_EINVAL);
  /* Wrong kinds. */
  th_assert_ok(memport_sem_create(&s1, 0, 0));
  th_assert_ok(memport_msg_attach_sem(m, s1, 0));
  th_assert_ok(memport_region_create(&b, 4096, 0));
  th_assert_ok(memport_msg_attach_region(m, b, 0));
  th_assert_ok(memport_sem_create(&s2, 0, 0));
  th_assert_ok(memport_msg_attach_sem(m, s2, 0));
  th_assert_rc(memport_ring_import(&r, m, 0), MEMPORT_EPROTO);
  memport_msg_clear(m);
  /* Right kinds, but no ring in there (no magic). */
  th_assert_ok(memport_region_create(&a, 4096, 0));
  th_assert_ok(memport_region_create(&b, 4096, 0));
  th_assert_ok(memport_sem_create(&s1, 0, 0));
  th_assert_ok(memport_sem_create(&s2, 0, 0));
  memport_msg_attach_region(m, a, 0);
  memport_msg_attach_region(m, b, 0);
  memport_msg_attach_sem(m, s1, 0);
  memport_msg_attach_sem(m, s2, 0);
  th_assert_rc(memport_ring_import(&r, m, 0), MEMPORT_EPROTO);
  assert_null(r);
  memport_msg_clear(m);
  /* A real ring whose positions were tampered with before the import. */
  memport_ring_t *good;
  th_assert_ok(memport_ring_create(&good, 4096, 0));
  struct memport__ring_shared *sh = map_ctrl(good, NULL);
  assert_non_null(sh);
  atomic_store(&sh->prod, (uint64_t)1 << 40);
  th_assert_ok(memport_ring_export(good, m));
  th_assert_rc(memport_ring_import(&r, m, 0), MEMPORT_EPROTO);
  memport_msg_clear(m);
  /* A read-only data region is refused. */
  memport_region_t *ro;
  atomic_store(&sh->prod, 0);
  th_assert_ok(memport_ring_export(good, m));
  memport_region_t *ctrl, *data;
  th_assert_ok(memport_msg_take_region(m, 0, &ctrl));
  th_assert_ok(memport_msg_take_region(m, 1, &data));
  memport_sem_t *ds, *ss;
  th_assert_ok(memport_msg_take_sem(m, 2, &ds));
  th_assert_ok(memport_msg_take_sem(m, 3, &ss));
  memport_msg_clear(m);
  th_assert_ok(memport_region_readonly(data, &ro));
  memport_region_close(data);
  memport_msg_attach_region(m, ctrl, 0);
  memport_msg_attach_region(m, ro, 0);
  memport_msg_attach_sem(m, ds, 0);
  memport_msg_attach_sem(m, ss, 0);
  th_assert_rc(memport_ring_import(&r, m, 0), MEMPORT_EPROTO);
  memport_unmap(sh);
  memport_ring_close(good);
  memport_msg_close(m);
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

/* ------------------------------------------------------------------------------------------ */
/* Hostile shared memory.                                                                       */

enum hostile_case {
  H_PROD_PAST_END,
  H_PROD_MISALIGNED,
  H_PROD_BACKWARDS,
  H_LEN_HUGE,
  H_LEN_PAST_PROD,
  H_LEN_WRAPS,
  H_CONS_PAST_PROD,
  H_CONS_BACKWARDS,
  H_COUNT
};

static void test_ring_hostile_indices_and_lengths_give_eproto(void **state) {
  (void)state;
  for (int hc = 0; hc < H_COUNT; hc++) {
    memport_ring_t *r;
    th_assert_ok(memport_ring_create(&r, 4096, 0));
    size_t cap = 4096;
    unsigned char *data;
    struct memport__ring_shared *sh = map_ctrl(r, &data);
    assert_non_null(sh);
    const void *q;
    size_t len;
    void *p;
    static unsigned char buf[2048];
    int rc;
    switch (hc) {
    case H_PROD_PAST_END:
      atomic_store(&sh->prod, cap + 16);
      rc = memport_ring_peek(r, &q, &len, 0);
      break;
    case H_PROD_MISALIGNED:
      atomic_store(&sh->prod, 8);
      rc = memport_ring_peek(r, &q, &len, 0);
      break;
    case H_PROD_BACKWARDS:
      th_assert_ok(memport_ring_write(r, buf, 48, 0));
      th_assert_ok(memport_ring_write(r, buf, 48, 0));
      th_assert_ok(memport_ring_read(r, buf, sizeof buf, &len, 0));
      atomic_store(&sh->prod, 64); /* was 128, consumer is at 64 and saw 128 */
      th_assert_ok(memport_ring_read(r, buf, sizeof buf, &len, 0)); /* already validated */
      rc = memport_ring_peek(r, &q, &len, 0);
      break;
    case H_LEN_HUGE:
      th_assert_ok(memport_ring_write(r, buf, 16, 0));
      ((struct memport__ring_rec *)data)->len = 0xffffffffu;
      rc = memport_ring_peek(r, &q, &len, 0);
      break;
    case H_LEN_PAST_PROD:
      th_assert_ok(memport_ring_write(r, buf, 16, 0));
      ((struct memport__ring_rec *)data)->len = 17; /* needs 48 bytes, 32 committed */
      rc = memport_ring_peek(r, &q, &len, 0);
      break;
    case H_LEN_WRAPS:
      th_assert_ok(memport_ring_write(r, buf, 16, 0));
      ((struct memport__ring_rec *)data)->len = 0xfffffff8u; /* rounding up wraps 32 bits */
      rc = memport_ring_peek(r, &q, &len, 0);
      break;
    case H_CONS_PAST_PROD:
      th_assert_ok(memport_ring_reserve(r, memport_ring_max_record(r), &p, 0));
      th_assert_ok(memport_ring_commit(r, memport_ring_max_record(r)));
      atomic_store(&sh->cons, (uint64_t)cap * 4);
      rc = memport_ring_reserve(r, 16, &p, 0);
      break;
    default: /* H_CONS_BACKWARDS */
      th_assert_ok(memport_ring_write(r, buf, 2000, 0));
      th_assert_ok(memport_ring_read(r, buf, sizeof buf, &len, 0)); /* cons = 2016 */
      th_assert_ok(memport_ring_write(r, buf, 1500, 0));
      th_assert_ok(memport_ring_write(r, buf, 1500, 0)); /* the producer refreshed cons = 2016 */
      atomic_store(&sh->cons, 0);
      rc = memport_ring_reserve(r, 1500, &p, 0);
      break;
    }
    if (rc != MEMPORT_EPROTO)
      fail_msg("hostile case %d: %s, expected MEMPORT_EPROTO", hc, memport_err_name(rc));
    /* Broken for good, whatever the shared memory says afterwards. */
    atomic_store(&sh->prod, 0);
    atomic_store(&sh->cons, 0);
    th_assert_rc(memport_ring_peek(r, &q, &len, 0), MEMPORT_EPROTO);
    th_assert_rc(memport_ring_reserve(r, 0, &p, 0), MEMPORT_EPROTO);
    th_assert_rc(memport_ring_write(r, buf, 1, 0), MEMPORT_EPROTO);
    th_assert_rc(memport_ring_read(r, buf, sizeof buf, &len, 1000000), MEMPORT_EPROTO);
    memport_unmap(data);
    memport_unmap(sh);
    th_assert_ok(memport_ring_close(r));
  }
}

struct scribble_arg {
  struct memport__ring_shared *sh;
  unsigned char *data;
  size_t cap;
};

static int scribbler_child(void *varg) {
  struct scribble_arg *a = varg;
  uint64_t x = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull;
  uint64_t end = th_now_ns() + 300000000u;
  uint64_t *ctrl = (uint64_t *)a->sh;
  while (th_now_ns() < end) {
    for (int i = 0; i < 64; i++) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      uint64_t v;
      switch (x % 6) {
      case 0: v = x; break;
      case 1: v = x & 0xfff0; break;
      case 2: v = UINT64_MAX - (x & 0xff); break;
      case 3: v = (x >> 8) & 0xffff; break;
      default: v = atomic_load(&a->sh->prod) + ((x >> 4) & 0x3f0); break;
      }
      unsigned slot = (unsigned)((x >> 32) % 8);
      if (slot < 5)
        __atomic_store_n(&ctrl[(slot * MEMPORT__RING_LINE) / 8], v, __ATOMIC_RELAXED);
      else
        __atomic_store_n((uint32_t *)(a->data + ((x >> 20) % a->cap & ~(size_t)15)), (uint32_t)v,
                         __ATOMIC_RELAXED);
    }
  }
  return 0;
}

static void test_ring_survives_random_scribbling(void **state) {
  (void)state;
  int fds = th_count_fds(), maps = th_count_memport_maps();
  unsigned rounds = 0, broken = 0;
  uint64_t end = th_now_ns() + 600000000u;
  /* At least two rounds and 0.6 s; then more rounds (at most 20) until one scribble was caught: a
   * round whose scribbles happen to stay consistent is not a failure, but every round missing is. */
  while (th_now_ns() < end || rounds < 2 || (broken == 0 && rounds < 20)) {
    memport_ring_t *r;
    th_assert_ok(memport_ring_create(&r, 8192, 0));
    th_assert_ok(memport_ring_set_wait(r, policies[rounds % 3], 10000));
    struct scribble_arg a = {0};
    a.sh = map_ctrl(r, &a.data);
    a.cap = 8192;
    assert_non_null(a.sh);
    pid_t pid = th_fork(scribbler_child, &a, 10);
    size_t max = memport_ring_max_record(r);
    /* Zeroed: valgrind keeps definedness per process, so payload bytes copied from an unset
     * buffer stay "uninitialised" in this process's view of the shared pages even after the
     * scribbler writes a header over them; reading that header would be reported. */
    unsigned char *buf = calloc(1, max);
    int last = 0;
    for (int i = 0; i < 200000 && last != MEMPORT_EPROTO; i++) {
      size_t len = 0;
      int rc;
      if (i % 2 == 0) {
        rc = memport_ring_write(r, buf, (size_t)i % 3000, i % 7 == 0 ? 100000 : 0);
      } else {
        rc = memport_ring_read(r, buf, max, &len, i % 5 == 0 ? 100000 : 0);
        if (rc == 0 && len > max)
          fail_msg("read returned %zu bytes, more than the ring holds", len);
      }
      if (rc != 0 && rc != MEMPORT_EAGAIN && rc != MEMPORT_ETIMEDOUT && rc != MEMPORT_EPROTO &&
          rc != MEMPORT_EMSGSIZE)
        fail_msg("unexpected %s", memport_err_name(rc));
      last = rc;
    }
    if (last == MEMPORT_EPROTO) {
      broken++;
      size_t len;
      th_assert_rc(memport_ring_read(r, buf, max, &len, 1000000), MEMPORT_EPROTO);
    }
    assert_int_equal(th_wait(pid, 10), 0);
    free(buf);
    memport_unmap(a.data);
    memport_unmap(a.sh);
    memport_ring_close(r);
    rounds++;
  }
  printf("# %u rounds against a scribbling peer, %u detected as broken\n", rounds, broken);
  assert_true(broken > 0);
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

/* ------------------------------------------------------------------------------------------ */
/* Two threads on one ring object (also run under TSan).                                        */

static void *thread_producer(void *arg) {
  memport_ring_t *r = arg;
  for (uint32_t i = 0; i < 30000; i++) {
    unsigned char b[300];
    size_t n = i % 300;
    th_fill(b, n, i);
    if (memport_ring_write(r, b, n, 5000000000) != 0)
      return (void *)1;
  }
  return NULL;
}

static void test_ring_threads_share_one_ring(void **state) {
  (void)state;
  for (int pi = 0; pi < 3; pi++) {
    memport_ring_t *r;
    th_assert_ok(memport_ring_create(&r, 4096, 0));
    th_assert_ok(memport_ring_set_wait(r, policies[pi], 5000));
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, thread_producer, r), 0);
    for (uint32_t i = 0; i < 30000; i++) {
      const void *q;
      size_t len;
      th_assert_ok(memport_ring_peek(r, &q, &len, 5000000000));
      assert_int_equal(len, i % 300);
      if (th_check(q, len, i) != 0)
        fail_msg("record %u corrupted", i);
      th_assert_ok(memport_ring_release(r));
    }
    void *ret;
    pthread_join(t, &ret);
    assert_null(ret);
    memport_ring_close(r);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ring_create_rejects_bad_arguments),
      cmocka_unit_test(test_ring_capacity_rounds_to_pages_and_bounds_records),
      cmocka_unit_test(test_ring_sizes_at_every_boundary),
      cmocka_unit_test(test_ring_records_cross_the_end_at_every_offset),
      cmocka_unit_test(test_ring_commit_shorter_than_reserved),
      cmocka_unit_test(test_ring_peek_is_in_place_until_release),
      cmocka_unit_test(test_ring_read_with_short_buffer_keeps_record),
      cmocka_unit_test(test_ring_timeouts_on_empty_and_full),
      cmocka_unit_test(test_ring_block_policy_across_fork),
      cmocka_unit_test(test_ring_spin_policy_across_fork),
      cmocka_unit_test(test_ring_adaptive_policy_across_fork),
      cmocka_unit_test(test_ring_blocking_pingpong_loses_no_wakeup),
      cmocka_unit_test(test_ring_export_is_all_or_nothing),
      cmocka_unit_test(test_ring_export_import_shares_the_same_ring),
      cmocka_unit_test(test_ring_import_rejects_foreign_handles),
      cmocka_unit_test(test_ring_hostile_indices_and_lengths_give_eproto),
      cmocka_unit_test(test_ring_survives_random_scribbling),
      cmocka_unit_test(test_ring_threads_share_one_ring),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
