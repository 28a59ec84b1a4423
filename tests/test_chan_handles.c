/* SPDX-License-Identifier: MIT */
/* test_chan_handles.c: channel messages that carry handles: order with the other messages across processes, moved and copied handles, limits, and no descriptor left behind. */
#include "helpers.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define POOL_BUF (64 * 1024)

static void opts_small(memport_chan_opts_t *o) {
  memport_chan_opts_init(o);
  o->ring_capacity = 64 * 1024;
  o->zerocopy_threshold = 1024;
  o->pool_buffer_size = POOL_BUF;
  o->pool_buffers = 4;
}

static void pair(memport_chan_t **a, memport_chan_t **b) {
  memport_chan_opts_t o;
  opts_small(&o);
  th_assert_ok(memport_chan_pair(a, b, &o));
}

static memport_region_t *pattern_region(size_t len, uint32_t seed) {
  memport_region_t *r;
  void *p;
  th_assert_ok(memport_region_create(&r, len, 0));
  th_assert_ok(memport_region_map(r, 0, &p));
  th_fill(p, len, seed);
  memport_unmap(p);
  return r;
}

/* 0 when `r` holds the pattern `seed` over len bytes. */
static int region_check(memport_region_t *r, size_t len, uint32_t seed) {
  void *p;
  if (memport_region_map(r, MEMPORT_MAP_READONLY, &p) != 0)
    return -1;
  int rc = th_check(p, len, seed);
  memport_unmap(p);
  return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Order with the other messages, across processes, each handle used.                          */

#define BIG (POOL_BUF + 5000)

struct ends {
  memport_chan_t *mine, *theirs;
};

/* Receive the next message (any path) with its handles: 0 when its bytes are `want` (len, seed)
 * and it carries `nh` handles of the kinds in `kinds`. */
static int expect(memport_chan_t *c, memport_msg_t *hm, size_t len, uint32_t seed, int nh, const int *kinds) {
  memport_buf_t b;
  int rc = memport_chan_recv_msg(c, &b, hm, 10 * SEC);
  if (rc != 0) {
    fprintf(stderr, "recv_msg: %s\n", memport_err_name(rc));
    return 1;
  }
  int bad = b.len != len || th_check(b.data, len, seed) != 0;
  if (memport_chan_release(c, &b) != 0)
    bad = 1;
  if (memport_msg_handle_count(hm) != nh)
    bad = 1;
  for (int i = 0; i < nh && !bad; i++)
    bad = memport_msg_handle_kind(hm, (size_t)i) != kinds[i];
  if (bad)
    fprintf(stderr, "message of %zu bytes (seed %u): got %zu bytes, %d handles\n", len, seed, b.len,
            memport_msg_handle_count(hm));
  return bad;
}

static int mixed_child(void *arg) {
  struct ends *e = arg;
  memport_chan_close(e->mine);
  memport_chan_t *c = e->theirs;
  memport_msg_t *hm, *out;
  if (memport_msg_create(&hm) != 0 || memport_msg_create(&out) != 0)
    return 1;
  static const int k_region[] = {MEMPORT_HANDLE_REGION};
  static const int k_sem[] = {MEMPORT_HANDLE_SEM};
  static const int k_port[] = {MEMPORT_HANDLE_PORT};
  static const int k_three[] = {MEMPORT_HANDLE_REGION, MEMPORT_HANDLE_SEM, MEMPORT_HANDLE_PORT};
  memport_region_t *r;
  memport_sem_t *s;
  memport_port_t *p;
  if (expect(c, hm, 10, 0, 0, NULL))
    return 2;
  if (expect(c, hm, 20, 1, 1, k_region) || memport_msg_take_region(hm, 0, &r) != 0 || region_check(r, 8192, 100))
    return 3;
  memport_region_close(r);
  if (expect(c, hm, 5000, 2, 0, NULL))
    return 4;
  if (expect(c, hm, 30, 3, 1, k_sem) || memport_msg_take_sem(hm, 0, &s) != 0 || memport_sem_signal(s) != 0)
    return 5;
  memport_sem_close(s);
  if (expect(c, hm, BIG, 4, 0, NULL))
    return 6;
  if (expect(c, hm, 0, 5, 1, k_port) || memport_msg_take_port(hm, 0, &p) != 0)
    return 7;
  memport_msg_set_bytes(out, "over the port", 13);
  if (memport_port_send(p, out, SEC) != 0)
    return 8;
  memport_port_close(p);
  if (expect(c, hm, 40, 6, 3, k_three) || memport_msg_take_region(hm, 0, &r) != 0 || region_check(r, 4096, 200) ||
      memport_msg_take_sem(hm, 1, &s) != 0 || memport_sem_signal(s) != 0 || memport_msg_take_port(hm, 2, &p) != 0)
    return 9;
  memport_region_close(r);
  memport_sem_close(s);
  memport_msg_set_bytes(out, "again", 5);
  if (memport_port_send(p, out, SEC) != 0)
    return 10;
  memport_port_close(p);
  if (expect(c, hm, 50, 7, 0, NULL))
    return 11;
  memport_buf_t b;
  int rc = memport_chan_recv_msg(c, &b, hm, 10 * SEC);
  memport_msg_close(hm);
  memport_msg_close(out);
  memport_chan_close(c);
  return rc == MEMPORT_ECLOSED ? 0 : 12;
}

static void send_bytes(memport_chan_t *c, size_t len, uint32_t seed, memport_msg_t *hm, unsigned flags) {
  static unsigned char tmp[BIG];
  th_fill(tmp, len, seed);
  th_assert_ok(memport_chan_send_msg(c, tmp, len, hm, flags, 5 * SEC));
}

static void test_mixed_messages_in_order_across_processes(void **state) {
  (void)state;
  int fds = th_count_fds();
  memport_chan_t *a, *b;
  pair(&a, &b);
  struct ends e = {a, b};
  pid_t pid = th_fork(mixed_child, &e, 60);
  memport_chan_close(b);
  memport_msg_t *hm;
  th_assert_ok(memport_msg_create(&hm));
  memport_sem_t *sem;
  th_assert_ok(memport_sem_create(&sem, 0, 0));
  memport_port_t *p1, *p2, *q1, *q2;
  th_assert_ok(memport_port_pair(&p1, &p2));
  th_assert_ok(memport_port_pair(&q1, &q2));

  send_bytes(a, 10, 0, NULL, 0); /* plain, ring */
  memport_region_t *r = pattern_region(8192, 100);
  th_assert_ok(memport_msg_attach_region(hm, r, 0));
  send_bytes(a, 20, 1, hm, 0);
  assert_int_equal(memport_msg_handle_count(hm), 0); /* moved */
  send_bytes(a, 5000, 2, NULL, 0); /* plain, pool */
  th_assert_ok(memport_msg_attach_sem(hm, sem, MEMPORT_ATTACH_COPY));
  send_bytes(a, 30, 3, hm, 0);
  send_bytes(a, BIG, 4, NULL, 0); /* plain, one-off region */
  th_assert_ok(memport_msg_attach_port(hm, p2, 0));
  send_bytes(a, 0, 5, hm, 0);
  th_assert_ok(memport_msg_attach_region(hm, pattern_region(4096, 200), 0));
  th_assert_ok(memport_msg_attach_sem(hm, sem, MEMPORT_ATTACH_COPY)); /* a copy in the message, moved */
  th_assert_ok(memport_msg_attach_port(hm, q2, 0));
  memport_chan_stats_t st;
  st.struct_size = sizeof st;
  th_assert_ok(memport_chan_stats(a, &st));
  assert_int_equal(st.sent_handle_msgs, 3);
  send_bytes(a, 40, 6, hm, 0);
  send_bytes(a, 50, 7, NULL, 0);
  th_assert_ok(memport_chan_stats(a, &st));
  assert_int_equal(st.sent_handle_msgs, 4);
  assert_int_equal(st.sent_handles, 6);
  memport_chan_shutdown(a, MEMPORT_CHAN_SHUT_SEND);

  /* The child used each handle. */
  memport_msg_t *in;
  th_assert_ok(memport_msg_create(&in));
  th_assert_ok(memport_port_recv(p1, in, 20 * SEC));
  size_t len;
  const void *bytes = memport_msg_bytes(in, &len);
  assert_int_equal(len, 13);
  assert_memory_equal(bytes, "over the port", 13);
  th_assert_ok(memport_port_recv(q1, in, 20 * SEC));
  bytes = memport_msg_bytes(in, &len);
  assert_int_equal(len, 5);
  memport_msg_close(in);
  th_assert_ok(memport_sem_wait(sem, 20 * SEC)); /* signalled twice, through two copies */
  th_assert_ok(memport_sem_wait(sem, 20 * SEC));
  memport_sem_close(sem);
  assert_int_equal(th_wait(pid, 60), 0);
  memport_port_close(p1);
  memport_port_close(q1);
  memport_msg_close(hm);
  memport_chan_close(a);
  assert_int_equal(th_count_fds(), fds);
}

/* ------------------------------------------------------------------------------------------ */
/* Moved and copied.                                                                           */

static void test_moved_and_copied(void **state) {
  (void)state;
  int fds = th_count_fds();
  memport_chan_t *a, *b;
  pair(&a, &b);
  memport_msg_t *hm, *got;
  th_assert_ok(memport_msg_create(&hm));
  th_assert_ok(memport_msg_create(&got));
  memport_region_t *r;
  th_assert_ok(memport_region_create(&r, 4096, 0));
  unsigned char *w;
  th_assert_ok(memport_region_map(r, 0, (void **)&w));

  /* Copied: the caller's handle stays in the message, usable; the receiver's is another handle
   * of the same memory. */
  th_assert_ok(memport_msg_attach_region(hm, r, MEMPORT_ATTACH_COPY));
  th_assert_ok(memport_chan_send_msg(b, "c", 1, hm, MEMPORT_ATTACH_COPY, SEC));
  assert_int_equal(memport_msg_handle_count(hm), 1);
  assert_int_equal(memport_msg_handle_kind(hm, 0), MEMPORT_HANDLE_REGION);
  memport_buf_t m;
  th_assert_ok(memport_chan_recv_msg(a, &m, got, SEC));
  assert_int_equal(m.len, 1);
  th_assert_ok(memport_chan_release(a, &m));
  memport_region_t *rr;
  th_assert_ok(memport_msg_take_region(got, 0, &rr));
  unsigned char *rp;
  th_assert_ok(memport_region_map(rr, 0, (void **)&rp));
  w[7] = 0x5a;
  assert_int_equal(rp[7], 0x5a); /* shared memory */
  memport_unmap(rp);
  memport_region_close(rr);
  memport_cred_t cred;
  th_assert_ok(memport_msg_sender(got, &cred));
  assert_int_equal(cred.pid, getpid());

  /* Moved: gone from the message. */
  th_assert_ok(memport_chan_send_msg(b, "m", 1, hm, 0, SEC));
  assert_int_equal(memport_msg_handle_count(hm), 0);
  th_assert_ok(memport_chan_recv_msg(a, &m, got, SEC));
  th_assert_ok(memport_chan_release(a, &m));
  assert_int_equal(memport_msg_handle_count(got), 1);

  /* A plain message received with recv_msg: no handles (those of the last one were closed). */
  th_assert_ok(memport_chan_send(b, "plain", 5, 0, SEC));
  th_assert_ok(memport_chan_recv_msg(a, &m, got, SEC));
  assert_int_equal(memport_msg_handle_count(got), 0);
  th_assert_ok(memport_chan_release(a, &m));

  /* No handles (or only taken slots): a plain message. */
  th_assert_ok(memport_chan_send_msg(b, "none", 4, hm, 0, SEC));
  th_assert_ok(memport_chan_send_msg(b, "null", 4, NULL, 0, SEC));
  for (int i = 0; i < 2; i++) {
    th_assert_ok(memport_chan_recv_msg(a, &m, got, SEC));
    assert_int_equal(memport_msg_handle_count(got), 0);
    th_assert_ok(memport_chan_release(a, &m));
  }
  memport_unmap(w);
  memport_region_close(r);
  memport_msg_close(hm);
  memport_msg_close(got);
  memport_chan_close(a);
  memport_chan_close(b);
  assert_int_equal(th_count_fds(), fds);
}

/* memport_chan_recv and memport_chan_recv_copy take the bytes and close the handles. */
static void test_plain_receivers_close_the_handles(void **state) {
  (void)state;
  memport_chan_t *a, *b;
  pair(&a, &b);
  int fds = th_count_fds();
  memport_msg_t *hm;
  th_assert_ok(memport_msg_create(&hm));
  for (int i = 0; i < 2; i++) {
    for (int k = 0; k < 5; k++) {
      memport_sem_t *s;
      th_assert_ok(memport_sem_create(&s, 0, 0));
      th_assert_ok(memport_msg_attach_sem(hm, s, 0));
    }
    th_assert_ok(memport_chan_send_msg(b, "hello", 5, hm, 0, SEC));
  }
  memport_buf_t m;
  th_assert_ok(memport_chan_recv(a, &m, SEC));
  assert_int_equal(m.len, 5);
  assert_memory_equal(m.data, "hello", 5);
  th_assert_ok(memport_chan_release(a, &m));
  char buf[2];
  size_t len;
  th_assert_rc(memport_chan_recv_copy(a, buf, sizeof buf, &len, SEC), MEMPORT_EMSGSIZE); /* kept */
  char buf2[8];
  th_assert_ok(memport_chan_recv_copy(a, buf2, sizeof buf2, &len, SEC));
  assert_int_equal(len, 5);
  memport_chan_stats_t st;
  st.struct_size = sizeof st;
  th_assert_ok(memport_chan_stats(a, &st));
  assert_int_equal(st.recv_handle_msgs, 2);
  assert_int_equal(st.recv_handles, 10);
  assert_int_equal(st.recv_ring_msgs, 2);
  assert_int_equal(th_count_fds(), fds);
  memport_msg_close(hm);
  memport_chan_close(a);
  memport_chan_close(b);
}

/* ------------------------------------------------------------------------------------------ */
/* Limits and refusals.                                                                        */

static void test_limits(void **state) {
  (void)state;
  memport_chan_t *a, *b;
  pair(&a, &b);
  int fds = th_count_fds();
  memport_msg_t *hm, *got;
  th_assert_ok(memport_msg_create(&hm));
  th_assert_ok(memport_msg_create(&got));
  memport_sem_t *s;
  th_assert_ok(memport_sem_create(&s, 0, 0));
  th_assert_ok(memport_msg_attach_sem(hm, s, 0));
  /* Unknown flags, bytes larger than a ring record: refused, the handles stay. */
  th_assert_rc(memport_chan_send_msg(b, "x", 1, hm, 1u << 5, SEC), MEMPORT_EINVAL);
  th_assert_rc(memport_chan_send_msg(b, NULL, 1, hm, 0, SEC), MEMPORT_EINVAL);
  static unsigned char big[64 * 1024];
  th_assert_rc(memport_chan_send_msg(b, big, sizeof big, hm, 0, SEC), MEMPORT_EMSGSIZE);
  assert_int_equal(memport_msg_handle_count(hm), 1);
  th_assert_rc(memport_chan_recv_msg(a, NULL, got, SEC), MEMPORT_EINVAL);
  memport_buf_t m;
  th_assert_rc(memport_chan_recv_msg(a, &m, NULL, SEC), MEMPORT_EINVAL);
  /* The most handles a message carries. */
  for (unsigned k = 1; k < MEMPORT_MSG_MAX_HANDLES; k++)
    th_assert_ok(memport_msg_attach_sem(hm, s, MEMPORT_ATTACH_COPY));
  th_assert_ok(memport_chan_send_msg(b, big, 100, hm, MEMPORT_ATTACH_COPY, SEC));
  th_assert_ok(memport_chan_recv_msg(a, &m, got, SEC));
  assert_int_equal(memport_msg_handle_count(got), MEMPORT_MSG_MAX_HANDLES);
  th_assert_ok(memport_chan_release(a, &m));
  memport_msg_clear(got);
  memport_msg_clear(hm);
  assert_int_equal(th_count_fds(), fds);
  /* In flight: at most 64 messages carried over the port (with the one-off regions) that the
   * receiver has not taken: the next one waits, then times out, and goes once one is taken. */
  th_assert_ok(memport_sem_create(&s, 0, 0));
  th_assert_ok(memport_msg_attach_sem(hm, s, 0));
  unsigned n = 0;
  while (memport_chan_send_msg(b, "f", 1, hm, MEMPORT_ATTACH_COPY, MEMPORT_NOWAIT) == 0)
    n++;
  assert_int_equal(n, 64);
  th_assert_rc(memport_chan_send_msg(b, "f", 1, hm, MEMPORT_ATTACH_COPY, 20 * MS), MEMPORT_ETIMEDOUT);
  th_assert_ok(memport_chan_recv_msg(a, &m, got, SEC));
  th_assert_ok(memport_chan_release(a, &m));
  th_assert_ok(memport_chan_send_msg(b, "f", 1, hm, MEMPORT_ATTACH_COPY, SEC));
  memport_msg_close(hm);
  memport_msg_close(got);
  /* Closing with 64 messages undelivered leaves no descriptor behind. */
  memport_chan_close(a);
  memport_chan_close(b);
}

/* Handles undelivered (in the port, or read but their records not yet received) are closed with
 * the channel; nothing is left open in either end. */
static void test_close_with_handles_undelivered(void **state) {
  (void)state;
  int fds = th_count_fds();
  for (int round = 0; round < 3; round++) {
    memport_chan_t *a, *b;
    pair(&a, &b);
    memport_msg_t *hm;
    th_assert_ok(memport_msg_create(&hm));
    for (int i = 0; i < 10; i++) {
      memport_region_t *r;
      th_assert_ok(memport_region_create(&r, 4096, 0));
      th_assert_ok(memport_msg_attach_region(hm, r, 0));
      memport_port_t *p, *q;
      th_assert_ok(memport_port_pair(&p, &q));
      th_assert_ok(memport_msg_attach_port(hm, p, 0));
      memport_port_close(q);
      th_assert_ok(memport_chan_send_msg(b, "u", 1, hm, 0, SEC));
    }
    if (round >= 1) { /* some of them read from the port: a receive pumps it */
      memport_buf_t m;
      th_assert_ok(memport_chan_recv(a, &m, SEC));
      th_assert_ok(memport_chan_release(a, &m));
    }
    if (round == 2) { /* the whole port read, no record received */
      memport_chan_stats_t st;
      st.struct_size = sizeof st;
      th_assert_ok(memport_chan_stats(a, &st));
    }
    memport_msg_close(hm);
    memport_chan_close(round == 2 ? b : a);
    memport_chan_close(round == 2 ? a : b);
  }
  assert_int_equal(th_count_fds(), fds);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mixed_messages_in_order_across_processes),
      cmocka_unit_test(test_moved_and_copied),
      cmocka_unit_test(test_plain_receivers_close_the_handles),
      cmocka_unit_test(test_limits),
      cmocka_unit_test(test_close_with_handles_undelivered),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
