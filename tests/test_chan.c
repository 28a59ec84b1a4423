/* SPDX-License-Identifier: MIT */
/* test_chan.c: the channel: sizes, order over a million messages, zero-copy pool, dying and hostile peers, poll. */
#include "helpers.h"

#include "../lib/chan_proto.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>


/* A page shared with forked children (for timestamps). */
static volatile uint64_t *shared_page(void) {
  void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  assert_true(p != MAP_FAILED);
  memset(p, 0, 4096);
  return p;
}

/* Small channel options so the tests cover every path quickly. */
static void small_opts(memport_chan_opts_t *o) {
  memport_chan_opts_init(o);
  o->ring_capacity = 256 * 1024;
  o->zerocopy_threshold = 16 * 1024;
  o->pool_buffer_size = 1024 * 1024;
  o->pool_buffers = 4;
}

/* ------------------------------------------------------------------------------------------ */

static void test_chan_opts_defaults_and_validation(void **state) {
  (void)state;
  memport_chan_opts_t o;
  memport_chan_opts_init(&o);
  memport_chan_opts_init(NULL);
  assert_int_equal(o.struct_size, sizeof o);
  assert_true(o.ring_capacity >= 64 * 1024);
  assert_true(o.zerocopy_threshold > 0 && o.zerocopy_threshold < o.ring_capacity);
  assert_true(o.pool_buffers > 0 && o.pool_buffer_size >= o.zerocopy_threshold);
  assert_int_equal(o.wait_policy, MEMPORT_WAIT_ADAPTIVE);
  assert_true(o.spin_ns > 0);
  int fds = th_count_fds(), maps = th_count_memport_maps();
  memport_chan_t *a = NULL, *b = NULL;
  memport_chan_opts_t bad = o;
  bad.struct_size = 8;
  th_assert_rc(memport_chan_pair(&a, &b, &bad), MEMPORT_EINVAL);
  bad = o;
  bad.ring_capacity = 0;
  th_assert_rc(memport_chan_pair(&a, &b, &bad), MEMPORT_EINVAL);
  bad = o;
  bad.zerocopy_threshold = o.ring_capacity; /* more than a ring record can hold: clamped */
  th_assert_ok(memport_chan_opts_check(&bad, NULL));
  bad = o;
  bad.pool_buffer_size = 0;
  th_assert_rc(memport_chan_pair(&a, &b, &bad), MEMPORT_EINVAL);
  bad = o;
  bad.pool_buffers = 1u << 30;
  th_assert_rc(memport_chan_pair(&a, &b, &bad), MEMPORT_EINVAL);
  bad = o;
  bad.wait_policy = 9;
  th_assert_rc(memport_chan_pair(&a, &b, &bad), MEMPORT_EINVAL);
  bad = o;
  bad.spin_ns = -5;
  th_assert_rc(memport_chan_pair(&a, &b, &bad), MEMPORT_EINVAL);
  th_assert_rc(memport_chan_pair(NULL, &b, NULL), MEMPORT_EINVAL);
  th_assert_rc(memport_chan_pair(&a, &a, NULL), MEMPORT_EINVAL); /* as memport_port_pair */
  th_assert_rc(memport_chan_open(&a, NULL, NULL, 0), MEMPORT_EINVAL);
  th_assert_ok(memport_chan_close(NULL));
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
  /* Rounded: a ring of 100 bytes is a page; the threshold must then fit a page record. */
  o.ring_capacity = 100;
  o.zerocopy_threshold = 64;
  o.pool_buffer_size = 1;
  o.pool_buffers = 1;
  th_assert_ok(memport_chan_pair(&a, &b, &o));
  th_assert_ok(memport_chan_send(a, "x", 1, 0, 0));
  char c;
  size_t len;
  th_assert_ok(memport_chan_recv_copy(b, &c, 1, &len, 0));
  assert_int_equal(c, 'x');
  th_assert_rc(memport_chan_send(a, "x", 1, 1u << 9, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_chan_send(a, NULL, 1, 0, 0), MEMPORT_EINVAL);
  memport_chan_close(a);
  memport_chan_close(b);
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

static void roundtrip(memport_chan_t *a, memport_chan_t *b, size_t n, unsigned flags, uint32_t seed) {
  unsigned char *src = malloc(n + 1);
  assert_non_null(src);
  th_fill(src, n, seed);
  th_assert_ok(memport_chan_send(a, src, n, flags, 5 * SEC));
  memport_buf_t buf;
  th_assert_ok(memport_chan_recv(b, &buf, 5 * SEC));
  assert_int_equal(buf.len, n);
  if (th_check(buf.data, n, seed) != 0)
    fail_msg("message of %zu bytes corrupted", n);
  th_assert_ok(memport_chan_release(b, &buf));
  th_assert_rc(memport_chan_release(b, &buf), MEMPORT_EINVAL);
  /* and by copy */
  th_assert_ok(memport_chan_send(a, src, n, flags, 5 * SEC));
  memset(src, 0, n);
  size_t len = 0;
  th_assert_ok(memport_chan_recv_copy(b, src, n, &len, 5 * SEC));
  assert_int_equal(len, n);
  if (th_check(src, n, seed) != 0)
    fail_msg("copied message of %zu bytes corrupted", n);
  free(src);
}

static void test_chan_sizes_at_every_boundary(void **state) {
  (void)state;
  int fds = th_count_fds(), maps = th_count_memport_maps();
  memport_chan_opts_t o;
  small_opts(&o);
  for (int variant = 0; variant < 2; variant++) {
    if (variant == 1)
      o.zerocopy_threshold = o.ring_capacity - MEMPORT__RING_HDR; /* everything fits the ring */
    memport_chan_t *a, *b;
    th_assert_ok(memport_chan_pair(&a, &b, &o));
    size_t t = o.zerocopy_threshold, ring = o.ring_capacity;
    size_t sizes[] = {0, 1, t - 1, t, t + 1, ring / 2, ring + 1, o.pool_buffer_size, o.pool_buffer_size + 1,
                      3 * o.pool_buffer_size + 5};
    for (int round = 0; round < 3; round++)
      for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        if (sizes[i] > 2 * o.pool_buffer_size && round > 0)
          continue;
        roundtrip(a, b, sizes[i], 0, (uint32_t)(i + 100 * round));
        roundtrip(b, a, sizes[i], 0, (uint32_t)(i + 1000 * round));
      }
    /* Zero-copy on request, whatever the size. */
    roundtrip(a, b, 0, MEMPORT_SEND_ZEROCOPY, 1);
    roundtrip(a, b, 10, MEMPORT_SEND_ZEROCOPY, 2);
    memport_buf_t buf;
    th_assert_rc(memport_chan_recv(b, &buf, 0), MEMPORT_EAGAIN);
    memport_chan_close(a);
    memport_chan_close(b);
  }
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

static void test_chan_recv_copy_with_short_buffer_keeps_message(void **state) {
  (void)state;
  int fds = th_count_fds(), maps = th_count_memport_maps();
  memport_chan_opts_t o;
  small_opts(&o);
  memport_chan_t *a, *b;
  th_assert_ok(memport_chan_pair(&a, &b, &o));
  size_t sizes[] = {100, o.zerocopy_threshold + 100, o.pool_buffer_size + 100};
  unsigned char *src = malloc(o.pool_buffer_size + 100), *dst = malloc(o.pool_buffer_size + 100);
  for (size_t i = 0; i < 3; i++) {
    th_fill(src, sizes[i], (uint32_t)i);
    th_assert_ok(memport_chan_send(a, src, sizes[i], 0, SEC));
  }
  for (size_t i = 0; i < 3; i++) {
    size_t len = 0;
    th_assert_rc(memport_chan_recv_copy(b, dst, sizes[i] - 1, &len, SEC), MEMPORT_EMSGSIZE);
    assert_int_equal(len, sizes[i]);
    th_assert_rc(memport_chan_recv_copy(b, NULL, 0, &len, SEC), MEMPORT_EMSGSIZE);
    th_assert_ok(memport_chan_recv_copy(b, dst, sizes[i], &len, SEC));
    assert_int_equal(len, sizes[i]);
    assert_int_equal(th_check(dst, len, (uint32_t)i), 0);
  }
  /* An in-place message must be released before the next one is received. */
  th_assert_ok(memport_chan_send(a, "one", 3, 0, SEC));
  th_assert_ok(memport_chan_send(a, "two", 3, 0, SEC));
  memport_buf_t buf, buf2;
  th_assert_ok(memport_chan_recv(b, &buf, SEC));
  th_assert_rc(memport_chan_recv(b, &buf2, SEC), MEMPORT_EBUSY);
  th_assert_ok(memport_chan_release(b, &buf));
  th_assert_ok(memport_chan_recv(b, &buf2, SEC));
  assert_memory_equal(buf2.data, "two", 3);
  th_assert_ok(memport_chan_release(b, &buf2));
  free(src);
  free(dst);
  memport_chan_close(a);
  memport_chan_close(b);
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}


static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
         (double)ru.ru_stime.tv_usec / 1e6;
}

/* BLOCK and ADAPTIVE waits sleep (a few slices to look at the port), they do not spin. */
static void test_chan_blocked_waits_sleep_instead_of_spinning(void **state) {
  (void)state;
  int pol[2] = {MEMPORT_WAIT_BLOCK, MEMPORT_WAIT_ADAPTIVE};
  for (int i = 0; i < 2; i++) {
    memport_chan_opts_t o;
    small_opts(&o);
    o.wait_policy = pol[i];
    memport_chan_t *a, *b;
    th_assert_ok(memport_chan_pair(&a, &b, &o));
    memport_buf_t m;
    double c0 = cpu_seconds();
    th_assert_rc(memport_chan_recv(a, &m, 400 * MS), MEMPORT_ETIMEDOUT);
    /* and a full ring */
    static unsigned char chunk[8192];
    int rc;
    do
      rc = memport_chan_send(b, chunk, sizeof chunk, 0, 0);
    while (rc == 0);
    th_assert_rc(rc, MEMPORT_EAGAIN);
    th_assert_rc(memport_chan_send(b, chunk, sizeof chunk, 0, 400 * MS), MEMPORT_ETIMEDOUT);
    double used = cpu_seconds() - c0;
    printf("# policy %d: %.1f ms of CPU over 800 ms of waiting\n", pol[i], used * 1e3);
    assert_true(used < 0.2);
    memport_chan_close(a);
    memport_chan_close(b);
  }
}

/* ------------------------------------------------------------------------------------------ */
/* A million messages across fork.                                                              */

struct stream_arg {
  memport_chan_t *chan;
  uint32_t count;
};

static size_t stream_size(uint32_t i, size_t threshold) {
  if (i % 4999 == 0)
    return 300 * 1024; /* pool, via alloc/send_buf */
  if (i % 997 == 0)
    return threshold + 1 + i % 5000; /* pool, via send */
  if (i % 101 == 0)
    return 4000 + i % 9000;
  return 8 + (i * 2654435761u) % 120;
}

static int stream_sender(void *varg) {
  struct stream_arg *a = varg;
  static unsigned char buf[400 * 1024];
  for (uint32_t i = 0; i < a->count; i++) {
    size_t n = stream_size(i, 64 * 1024);
    if (i % 4999 == 0) {
      memport_buf_t zb;
      int rc = memport_chan_alloc(a->chan, n, &zb, 10 * SEC);
      if (rc != 0) {
        fprintf(stderr, "sender: alloc %u: %s\n", i, memport_err_name(rc));
        return 30;
      }
      memcpy(zb.data, &i, 4);
      th_fill((unsigned char *)zb.data + 4, n - 4, i);
      if (memport_chan_send_buf(a->chan, &zb, 10 * SEC) != 0)
        return 31;
      continue;
    }
    memcpy(buf, &i, 4);
    th_fill(buf + 4, n - 4, i);
    int rc = memport_chan_send(a->chan, buf, n, 0, 10 * SEC);
    if (rc != 0) {
      fprintf(stderr, "sender: send %u: %s\n", i, memport_err_name(rc));
      return 32;
    }
  }
  return 0;
}

static void test_chan_million_messages_keep_order_across_fork(void **state) {
  (void)state;
  int fds = th_count_fds(), maps = th_count_memport_maps();
  uint32_t count = th_under_valgrind() ? 20000 : 1000000;
  memport_chan_t *a, *b;
  th_assert_ok(memport_chan_pair(&a, &b, NULL));
  struct stream_arg arg = {b, count};
  uint64_t t0 = th_now_ns();
  pid_t pid = th_fork(stream_sender, &arg, 120);
  memport_chan_close(b);
  uint64_t bytes = 0;
  for (uint32_t i = 0; i < count; i++) {
    memport_buf_t m;
    int rc = memport_chan_recv(a, &m, 10 * SEC);
    if (rc != 0)
      fail_msg("recv %u: %s", i, memport_err_name(rc));
    size_t n = stream_size(i, 64 * 1024);
    if (m.len != n)
      fail_msg("message %u: %zu bytes, expected %zu", i, m.len, n);
    uint32_t seq;
    memcpy(&seq, m.data, 4);
    if (seq != i)
      fail_msg("message %u carries sequence %u (lost, duplicated or reordered)", i, seq);
    if (th_check((const unsigned char *)m.data + 4, n - 4, i) != 0)
      fail_msg("message %u: checksum mismatch", i);
    bytes += n;
    th_assert_ok(memport_chan_release(a, &m));
  }
  double s = (double)(th_now_ns() - t0) / 1e9;
  printf("# %u messages (%.1f MB) in %.2f s\n", count, (double)bytes / 1e6, s);
  assert_int_equal(th_wait(pid, 60), 0);
  memport_buf_t m;
  th_assert_rc(memport_chan_recv(a, &m, 2 * SEC), MEMPORT_EPEER);
  memport_chan_close(a);
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

/* ------------------------------------------------------------------------------------------ */
/* Zero-copy.                                                                                   */

static void test_chan_zero_copy_shares_the_senders_pages(void **state) {
  (void)state;
  int fds = th_count_fds(), maps = th_count_memport_maps();
  memport_chan_opts_t o;
  small_opts(&o);
  memport_chan_t *a, *b;
  th_assert_ok(memport_chan_pair(&a, &b, &o));
  memport_buf_t zb, rb;
  th_assert_rc(memport_chan_alloc(a, o.pool_buffer_size, NULL, 0), MEMPORT_EINVAL);
  th_assert_ok(memport_chan_alloc(a, 5000, &zb, 0));
  assert_int_equal(zb.len, 5000);
  unsigned char *p = zb.data;
  th_fill(p, 5000, 9);
  th_assert_ok(memport_chan_send_buf(a, &zb, SEC));
  th_assert_rc(memport_chan_send_buf(a, &zb, SEC), MEMPORT_EINVAL); /* already sent */
  th_assert_ok(memport_chan_recv(b, &rb, SEC));
  assert_int_equal(rb.len, 5000);
  assert_int_equal(th_check(rb.data, 5000, 9), 0);
  /* Same pages: what the owner writes shows through the receiver's read-only view. */
  p[0] ^= 0xff;
  assert_int_equal(((unsigned char *)rb.data)[0], p[0]);
  th_assert_ok(memport_chan_release(b, &rb));
  /* A shortened buffer sends only its new length. */
  th_assert_ok(memport_chan_alloc(a, 100, &zb, 0));
  zb.len = 10;
  memcpy(zb.data, "0123456789", 10);
  th_assert_ok(memport_chan_send_buf(a, &zb, SEC));
  th_assert_ok(memport_chan_recv(b, &rb, SEC));
  assert_int_equal(rb.len, 10);
  th_assert_ok(memport_chan_release(b, &rb));
  /* Freed without sending. */
  th_assert_ok(memport_chan_alloc(a, 100, &zb, 0));
  th_assert_ok(memport_chan_free_buf(a, &zb));
  th_assert_rc(memport_chan_free_buf(a, &zb), MEMPORT_EINVAL);
  th_assert_ok(memport_chan_alloc(a, 3 * o.pool_buffer_size, &zb, 0)); /* oversized */
  th_assert_ok(memport_chan_free_buf(a, &zb));
  memport_chan_close(a);
  memport_chan_close(b);
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

/* Zero-copy through a two-buffer pool, across fork, for every wait policy: the sender keeps
 * running out of buffers and must be woken by releases (queue + wake over the port). */
struct zc_arg {
  memport_chan_t *chan;
  uint32_t count;
};

static int zc_sender(void *varg) {
  struct zc_arg *a = varg;
  for (uint32_t i = 0; i < a->count; i++) {
    memport_buf_t z;
    size_t n = 64 + (i * 977u) % 30000u;
    int rc = memport_chan_alloc(a->chan, n, &z, 10 * SEC);
    if (rc != 0) {
      fprintf(stderr, "zc sender: alloc %u: %s\n", i, memport_err_name(rc));
      return 90;
    }
    memcpy(z.data, &i, 4);
    th_fill((unsigned char *)z.data + 4, n - 4, i);
    if (memport_chan_send_buf(a->chan, &z, 10 * SEC) != 0)
      return 91;
  }
  return 0;
}

static void test_chan_zero_copy_stream_through_a_tiny_pool(void **state) {
  (void)state;
  int fds = th_count_fds(), maps = th_count_memport_maps();
  int pol[3] = {MEMPORT_WAIT_BLOCK, MEMPORT_WAIT_ADAPTIVE, MEMPORT_WAIT_SPIN};
  uint32_t count = th_under_valgrind() ? 500 : 8000;
  for (int p = 0; p < 3; p++) {
    memport_chan_opts_t o;
    small_opts(&o);
    o.pool_buffers = 2;
    o.pool_buffer_size = 32 * 1024;
    o.zerocopy_threshold = 1024;
    o.wait_policy = pol[p];
    memport_chan_t *a, *b;
    th_assert_ok(memport_chan_pair(&a, &b, &o));
    struct zc_arg arg = {b, count};
    uint64_t t0 = th_now_ns();
    pid_t pid = th_fork(zc_sender, &arg, 60);
    memport_chan_close(b);
    memport_buf_t held = {0};
    for (uint32_t i = 0; i < count; i++) {
      memport_buf_t m;
      int rc = memport_chan_recv(a, &m, 10 * SEC);
      if (rc != 0)
        fail_msg("policy %d: recv %u: %s", pol[p], i, memport_err_name(rc));
      size_t n = 64 + (i * 977u) % 30000u;
      uint32_t seq;
      memcpy(&seq, m.data, 4);
      if (m.len != n || seq != i || th_check((const unsigned char *)m.data + 4, n - 4, i) != 0)
        fail_msg("policy %d: message %u wrong (len %zu, seq %u)", pol[p], i, m.len, seq);
      /* Hold one buffer now and then, so the sender really runs dry. */
      if (held.data != NULL)
        th_assert_ok(memport_chan_release(a, &held));
      if (i % 7 == 0)
        held = m;
      else
        th_assert_ok(memport_chan_release(a, &m));
    }
    if (held.data != NULL)
      th_assert_ok(memport_chan_release(a, &held));
    printf("# policy %d: %u zero-copy messages through 2 buffers in %.2f s\n", pol[p], count,
           (double)(th_now_ns() - t0) / 1e9);
    assert_int_equal(th_wait(pid, 60), 0);
    memport_chan_close(a);
  }
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

/* Oversized messages the application has not received yet are not a protocol error: the
 * receiver stashes what the sender may have in flight (and then stops reading the port), and the
 * sender waits once that many are untaken (back-pressure) instead of pinning more regions. */
static void test_chan_many_oversized_messages_in_flight(void **state) {
  (void)state;
  int fds = th_count_fds(), maps = th_count_memport_maps();
  memport_chan_opts_t o;
  small_opts(&o);
  o.pool_buffer_size = 4096;
  o.zerocopy_threshold = 1024;
  memport_chan_t *a, *b;
  th_assert_ok(memport_chan_pair(&a, &b, &o));
  unsigned char buf[10000];
  const unsigned count = MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT + 10;
  for (unsigned i = 0; i < MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT; i++) {
    th_fill(buf, sizeof buf, i);
    th_assert_ok(memport_chan_send(a, buf, sizeof buf, 0, SEC));
    if (i % 16 == 0) {
      th_sleep_ms(11); /* let the receiver's send path look at its port */
      th_assert_ok(memport_chan_send(b, "x", 1, 0, SEC));
    }
  }
  th_fill(buf, sizeof buf, MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT);
  th_assert_rc(memport_chan_send(a, buf, sizeof buf, 0, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
  th_assert_rc(memport_chan_send(a, buf, sizeof buf, 0, 20 * MS), MEMPORT_ETIMEDOUT);
  unsigned sent = MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT;
  for (unsigned i = 0; i < count; i++) {
    size_t len;
    memset(buf, 0, sizeof buf);
    th_assert_ok(memport_chan_recv_copy(b, buf, sizeof buf, &len, SEC));
    assert_int_equal(len, sizeof buf);
    if (th_check(buf, len, i) != 0)
      fail_msg("oversized message %u corrupted", i);
    if (sent < count) { /* each one taken lets one more go, at once */
      th_fill(buf, sizeof buf, sent++);
      th_assert_ok(memport_chan_send(a, buf, sizeof buf, 0, MEMPORT_NOWAIT));
    }
  }
  memport_chan_close(a);
  memport_chan_close(b);
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

/* A peer that releases many pool buffers while the release queue is full sends one control
 * message per release; an oversized message sent after them has its region behind more control
 * messages than one look at the port reads. It still arrives (it broke the channel with
 * MEMPORT_EPROTO). */
static void test_chan_oversized_message_behind_many_port_releases(void **state) {
  (void)state;
  memport_chan_opts_t o;
  memport_chan_opts_init(&o);
  o.ring_capacity = 1u << 20;
  o.pool_buffers = 1024;
  o.pool_buffer_size = 4096;
  o.zerocopy_threshold = 1024;
  memport_chan_t *a, *b;
  th_assert_ok(memport_chan_pair(&a, &b, &o));
  unsigned char small[2000];
  memset(small, 5, sizeof small);
  /* The first MEMPORT__RELQ_SIZE releases fill the queue (the sender takes them back only when its
   * pool runs dry); each later one goes over the port on its own (the receiver's ring is empty).
   * 264 of them: more than one look at the port reads (256), fewer than the port holds. */
  for (unsigned i = 0; i < MEMPORT__RELQ_SIZE + 264; i++) {
    th_assert_ok(memport_chan_send(a, small, sizeof small, 0, SEC));
    memport_buf_t m;
    th_assert_ok(memport_chan_recv(b, &m, SEC));
    assert_int_equal(m.len, sizeof small);
    th_assert_ok(memport_chan_release(b, &m));
  }
  static unsigned char big[100000];
  th_fill(big, sizeof big, 9);
  th_assert_ok(memport_chan_send(b, big, sizeof big, 0, SEC));
  memport_buf_t m;
  th_assert_ok(memport_chan_recv(a, &m, SEC));
  assert_int_equal(m.len, sizeof big);
  assert_int_equal(th_check(m.data, m.len, 9), 0);
  th_assert_ok(memport_chan_release(a, &m));
  th_assert_ok(memport_chan_send(a, small, sizeof small, 0, SEC)); /* the channel still works */
  memport_chan_close(a);
  memport_chan_close(b);
}

static int write_byte_child(void *arg) {
  volatile unsigned char *p = arg;
  signal(SIGSEGV, SIG_DFL); /* cmocka's (or ASan's) handler would hide the fault */
  signal(SIGBUS, SIG_DFL);
  p[0] = 1; /* must fault */
  return 0;
}

struct ro_arg {
  memport_chan_t *chan;
  size_t size;
};

static int ro_receiver(void *varg) {
  struct ro_arg *a = varg;
  for (int k = 0; k < 3; k++) { /* a ring message, a pool buffer, an oversized one-off region */
    memport_buf_t rb;
    if (memport_chan_recv(a->chan, &rb, 10 * SEC) != 0)
      return 40;
    if (th_check(rb.data, rb.len, 77) != 0)
      return 41;
    int st = th_run_child(write_byte_child, rb.data, 10);
    if (st != 128 + SIGSEGV && st != 128 + SIGBUS) {
      fprintf(stderr, "grandchild writing the zero-copy buffer: status %d\n", st);
      return 42;
    }
    if (memport_chan_release(a->chan, &rb) != 0)
      return 43;
  }
  return 0;
}

/* Received bytes are read-only for the receiver, whichever path they took. */
static void test_chan_receiver_cannot_write_received_bytes(void **state) {
  (void)state;
  memport_chan_opts_t o;
  small_opts(&o);
  memport_chan_t *a, *b;
  th_assert_ok(memport_chan_pair(&a, &b, &o));
  struct ro_arg arg = {b, 0};
  pid_t pid = th_fork(ro_receiver, &arg, 30);
  memport_chan_close(b);
  unsigned char small[100];
  th_fill(small, sizeof small, 77);
  th_assert_ok(memport_chan_send(a, small, sizeof small, 0, SEC));
  size_t sizes[2] = {o.zerocopy_threshold + 1, o.pool_buffer_size * 2};
  for (int k = 0; k < 2; k++) {
    memport_buf_t zb;
    th_assert_ok(memport_chan_alloc(a, sizes[k], &zb, SEC));
    th_fill(zb.data, sizes[k], 77);
    th_assert_ok(memport_chan_send_buf(a, &zb, SEC));
  }
  assert_int_equal(th_wait(pid, 30), 0);
  memport_chan_close(a);
}

static void *release_later(void *arg) {
  void **v = arg;
  th_sleep_ms(100);
  memport_chan_release(v[0], v[1]);
  return NULL;
}

static void test_chan_pool_exhaustion_times_out_then_recovers(void **state) {
  (void)state;
  int fds = th_count_fds(), maps = th_count_memport_maps();
  memport_chan_opts_t o;
  small_opts(&o);
  o.pool_buffers = 2;
  memport_chan_t *a, *b;
  th_assert_ok(memport_chan_pair(&a, &b, &o));
  memport_buf_t z[3], r[2];
  th_assert_ok(memport_chan_alloc(a, 10, &z[0], 0));
  th_assert_ok(memport_chan_alloc(a, 10, &z[1], 0));
  th_assert_rc(memport_chan_alloc(a, 10, &z[2], 0), MEMPORT_EAGAIN);
  uint64_t t0 = th_now_ns();
  th_assert_rc(memport_chan_alloc(a, 10, &z[2], 50 * MS), MEMPORT_ETIMEDOUT);
  uint64_t el = th_now_ns() - t0;
  assert_true(el >= 50 * MS && el < SEC);
  th_assert_ok(memport_chan_free_buf(a, &z[1]));
  th_assert_ok(memport_chan_alloc(a, 10, &z[1], 0));
  th_assert_ok(memport_chan_send_buf(a, &z[0], SEC));
  th_assert_ok(memport_chan_send_buf(a, &z[1], SEC));
  /* The receiver holds both: the sender waits for a release, then gets the buffer back. */
  th_assert_ok(memport_chan_recv(b, &r[0], SEC));
  th_assert_ok(memport_chan_recv(b, &r[1], SEC));
  th_assert_rc(memport_chan_alloc(a, 10, &z[2], 30 * MS), MEMPORT_ETIMEDOUT);
  th_assert_rc(memport_chan_send(a, "big", 3, MEMPORT_SEND_ZEROCOPY, 0), MEMPORT_EAGAIN);
  th_assert_ok(memport_chan_release(b, &r[0]));
  th_assert_ok(memport_chan_alloc(a, 10, &z[2], SEC));
  th_assert_ok(memport_chan_free_buf(a, &z[2]));
  /* A release from another thread wakes an alloc that waits. */
  th_assert_ok(memport_chan_alloc(a, 10, &z[2], 0));
  void *targ[2] = {b, &r[1]};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, release_later, targ), 0);
  t0 = th_now_ns();
  th_assert_ok(memport_chan_alloc(a, 10, &z[0], 5 * SEC));
  el = th_now_ns() - t0;
  pthread_join(t, NULL);
  assert_true(el < 3 * SEC);
  th_assert_ok(memport_chan_free_buf(a, &z[0]));
  th_assert_ok(memport_chan_free_buf(a, &z[2]));
  memport_chan_close(a);
  memport_chan_close(b);
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

/* ------------------------------------------------------------------------------------------ */
/* Dying peers.                                                                                 */

static int exit_at_once(void *arg) {
  memport_port_t *p = arg;
  memport_port_close(p);
  return 0;
}

static void test_chan_peer_exit_before_handshake_gives_epeer(void **state) {
  (void)state;
  int fds = th_count_fds(), maps = th_count_memport_maps();
  memport_port_t *pa, *pb;
  th_assert_ok(memport_port_pair(&pa, &pb));
  pid_t pid = th_fork(exit_at_once, pb, 10);
  memport_port_close(pb);
  memport_chan_t *c = NULL;
  uint64_t t0 = th_now_ns();
  th_assert_rc(memport_chan_open(&c, pa, NULL, 5 * SEC), MEMPORT_EPEER);
  assert_true(th_now_ns() - t0 < (uint64_t)SEC);
  assert_null(c);
  assert_int_equal(th_wait(pid, 10), 0);
  /* Nobody answers at all: the handshake times out. */
  th_assert_ok(memport_port_pair(&pa, &pb));
  th_assert_rc(memport_chan_open(&c, pa, NULL, 50 * MS), MEMPORT_ETIMEDOUT);
  memport_port_close(pb);
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

struct death_arg {
  memport_chan_t *chan;
  volatile uint64_t *stamp;
  unsigned sends;
  unsigned zerocopy; /* of which go zero-copy (and one oversized) */
  unsigned linger_ms;
};

static int send_then_exit(void *varg) {
  struct death_arg *a = varg;
  for (unsigned i = 0; i < a->sends; i++) {
    unsigned char buf[300];
    size_t n = sizeof buf;
    th_fill(buf, n, i);
    unsigned flags = i < a->zerocopy ? MEMPORT_SEND_ZEROCOPY : 0;
    if (i == 0 && a->zerocopy > 0) {
      unsigned char *big = malloc(3u << 20);
      th_fill(big, 3u << 20, i);
      int rc = memport_chan_send(a->chan, big, 3u << 20, 0, 5 * SEC);
      free(big);
      if (rc != 0)
        return 50;
      continue;
    }
    if (memport_chan_send(a->chan, buf, n, flags, 5 * SEC) != 0)
      return 51;
  }
  th_sleep_ms(a->linger_ms);
  a->stamp[0] = th_now_ns();
  _exit(0); /* no close: as if killed */
}

static void run_death_while_blocked(int policy, unsigned sends, unsigned zerocopy, unsigned linger_ms) {
  int fds = th_count_fds(), maps = th_count_memport_maps();
  memport_chan_opts_t o;
  small_opts(&o);
  o.wait_policy = policy;
  memport_chan_t *a, *b;
  th_assert_ok(memport_chan_pair(&a, &b, &o));
  volatile uint64_t *stamp = shared_page();
  struct death_arg arg = {b, stamp, sends, zerocopy, linger_ms};
  pid_t pid = th_fork(send_then_exit, &arg, 30);
  memport_chan_close(b);
  if (linger_ms == 0)
    assert_int_equal(th_wait(pid, 30), 0); /* dead before we look: everything must still arrive */
  memport_buf_t held[8];
  unsigned nheld = 0;
  for (unsigned i = 0; i < sends; i++) {
    memport_buf_t m;
    int rc = memport_chan_recv(a, &m, 5 * SEC);
    if (rc != 0)
      fail_msg("message %u of %u: %s", i, sends, memport_err_name(rc));
    size_t n = (i == 0 && zerocopy > 0) ? 3u << 20 : 300;
    assert_int_equal(m.len, n);
    assert_int_equal(th_check(m.data, n, i), 0);
    if (i < zerocopy && nheld < 8)
      held[nheld++] = m; /* keep the peer's buffers across its death */
    else
      th_assert_ok(memport_chan_release(a, &m));
  }
  memport_buf_t m;
  int rc = memport_chan_recv(a, &m, 10 * SEC);
  uint64_t t = th_now_ns();
  th_assert_rc(rc, MEMPORT_EPEER);
  if (linger_ms != 0) {
    double ms = (double)(t - stamp[0]) / 1e6;
    printf("# policy %d: MEMPORT_EPEER %.1f ms after the peer exited\n", policy, ms);
    assert_true(ms < 1000.0);
    assert_int_equal(th_wait(pid, 30), 0);
  }
  /* Later calls keep saying so, and the buffers we hold are still readable. */
  th_assert_rc(memport_chan_send(a, "x", 1, 0, SEC), MEMPORT_EPEER);
  th_assert_rc(memport_chan_recv(a, &m, 0), MEMPORT_EPEER);
  for (unsigned i = 0; i < nheld; i++) {
    size_t n = i == 0 ? 3u << 20 : 300;
    assert_int_equal(th_check(held[i].data, n, i), 0);
    th_assert_ok(memport_chan_release(a, &held[i]));
  }
  memport_chan_close(a);
  munmap((void *)stamp, 4096);
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

static void test_chan_peer_exit_while_blocked_in_recv_gives_epeer(void **state) {
  (void)state;
  run_death_while_blocked(MEMPORT_WAIT_BLOCK, 10, 0, 150);
  run_death_while_blocked(MEMPORT_WAIT_ADAPTIVE, 10, 0, 150);
  run_death_while_blocked(MEMPORT_WAIT_SPIN, 10, 0, 150);
}

static void test_chan_messages_committed_before_death_are_delivered(void **state) {
  (void)state;
  run_death_while_blocked(MEMPORT_WAIT_ADAPTIVE, 200, 0, 0);
  run_death_while_blocked(MEMPORT_WAIT_BLOCK, 50, 4, 0); /* one oversized, three from the pool */
}

static void test_chan_peer_exit_while_holding_zero_copy_buffers(void **state) {
  (void)state;
  run_death_while_blocked(MEMPORT_WAIT_ADAPTIVE, 6, 4, 100);
}

static int hold_then_die(void *varg) {
  struct death_arg *a = varg;
  memport_buf_t m[4];
  for (int i = 0; i < 2; i++)
    if (memport_chan_recv(a->chan, &m[i], 5 * SEC) != 0)
      return 60;
  th_sleep_ms(100);
  a->stamp[0] = th_now_ns();
  kill(getpid(), SIGKILL);
  return 61;
}

/* The receiver dies holding our buffers while we wait for one in alloc, then while we are
 * blocked sending into a full ring. */
static void test_chan_sender_blocked_in_alloc_or_send_sees_epeer(void **state) {
  (void)state;
  int fds = th_count_fds(), maps = th_count_memport_maps();
  for (int stage = 0; stage < 2; stage++) {
    memport_chan_opts_t o;
    small_opts(&o);
    o.pool_buffers = 2;
    memport_chan_t *a, *b;
    th_assert_ok(memport_chan_pair(&a, &b, &o));
    volatile uint64_t *stamp = shared_page();
    struct death_arg arg = {b, stamp, 0, 0, 0};
    pid_t pid = th_fork(hold_then_die, &arg, 30);
    memport_chan_close(b);
    th_assert_ok(memport_chan_send(a, "a", 1, MEMPORT_SEND_ZEROCOPY, SEC));
    th_assert_ok(memport_chan_send(a, "b", 1, MEMPORT_SEND_ZEROCOPY, SEC));
    int rc;
    if (stage == 0) {
      memport_buf_t z;
      rc = memport_chan_alloc(a, 10, &z, 10 * SEC);
    } else {
      static unsigned char chunk[8192];
      do
        rc = memport_chan_send(a, chunk, sizeof chunk, 0, 10 * SEC);
      while (rc == 0);
    }
    uint64_t t = th_now_ns();
    th_assert_rc(rc, MEMPORT_EPEER);
    double ms = (double)(t - stamp[0]) / 1e6;
    printf("# blocked in %s: MEMPORT_EPEER %.1f ms after the peer was killed\n", stage ? "send" : "alloc", ms);
    assert_true(ms < 1000.0);
    assert_int_equal(th_wait(pid, 30), 128 + SIGKILL);
    memport_chan_close(a);
    munmap((void *)stamp, 4096);
  }
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

static int exit_soon(void *varg) {
  struct death_arg *a = varg;
  th_sleep_ms(50);
  a->stamp[0] = th_now_ns();
  _exit(0);
}

/* A sender that never blocks (the ring has room) still learns of the peer's death. */
static void test_chan_sender_with_room_sees_epeer(void **state) {
  (void)state;
  int fds = th_count_fds(), maps = th_count_memport_maps();
  memport_chan_opts_t o;
  small_opts(&o);
  memport_chan_t *a, *b;
  th_assert_ok(memport_chan_pair(&a, &b, &o));
  volatile uint64_t *stamp = shared_page();
  struct death_arg arg = {b, stamp, 0, 0, 0};
  pid_t pid = th_fork(exit_soon, &arg, 10);
  memport_chan_close(b);
  int rc;
  unsigned sent = 0;
  uint64_t t0 = th_now_ns();
  while ((rc = memport_chan_send(a, "tick", 4, 0, 0)) == 0 && th_now_ns() - t0 < 5 * (uint64_t)SEC) {
    sent++;
    th_sleep_ms(1);
  }
  uint64_t t = th_now_ns();
  th_assert_rc(rc, MEMPORT_EPEER);
  assert_int_equal(th_wait(pid, 10), 0);
  double ms = (double)(t - stamp[0]) / 1e6;
  printf("# a sender with room: MEMPORT_EPEER %.1f ms after the peer exited (%u sends)\n", ms, sent);
  assert_true(ms < 1000.0);
  memport_chan_close(a);
  munmap((void *)stamp, 4096);
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

/* ------------------------------------------------------------------------------------------ */
/* Poll.                                                                                        */

static int send_later(void *varg) {
  memport_chan_t *c = varg;
  th_sleep_ms(100);
  if (memport_chan_send(c, "ping", 4, 0, SEC) != 0)
    return 70;
  th_sleep_ms(100);
  if (memport_chan_send(c, "big", 3, MEMPORT_SEND_ZEROCOPY, SEC) != 0)
    return 71;
  th_sleep_ms(100);
  return 0;
}

static void test_chan_pollable_becomes_ready_when_a_message_waits(void **state) {
  (void)state;
  int fds = th_count_fds(), maps = th_count_memport_maps();
  memport_chan_t *a, *b;
  th_assert_ok(memport_chan_pair(&a, &b, NULL));
  memport_os_handle_t h;
  th_assert_rc(memport_chan_pollable(a, NULL), MEMPORT_EINVAL);
  th_assert_ok(memport_chan_pollable(a, &h));
  pid_t pid = th_fork(send_later, b, 10);
  memport_chan_close(b);
  const char *expect[2] = {"ping", "big"};
  for (int k = 0; k < 2; k++) {
    memport_buf_t m;
    th_assert_rc(memport_chan_recv(a, &m, 0), MEMPORT_EAGAIN); /* arms the wake-up */
    struct pollfd pfd = {(int)h, POLLIN, 0};
    uint64_t t0 = th_now_ns();
    int n = poll(&pfd, 1, 5000);
    assert_int_equal(n, 1);
    assert_true(th_now_ns() - t0 < 4 * (uint64_t)SEC);
    /* Readiness may be spurious (memport_chan_pollable(3)): the first zero-copy message's pool
     * announcement comes just ahead of it. Then the handle is ready again with the message. */
    int rc, tries = 0;
    while ((rc = memport_chan_recv(a, &m, 0)) == MEMPORT_EAGAIN && ++tries < 3)
      assert_int_equal(poll(&pfd, 1, 5000), 1);
    th_assert_ok(rc);
    assert_memory_equal(m.data, expect[k], strlen(expect[k]));
    th_assert_ok(memport_chan_release(a, &m));
  }
  /* Nothing waits: after EAGAIN the handle is not ready. */
  memport_buf_t m;
  th_assert_rc(memport_chan_recv(a, &m, 0), MEMPORT_EAGAIN);
  struct pollfd pfd = {(int)h, POLLIN, 0};
  assert_int_equal(poll(&pfd, 1, 20), 0);
  /* The peer's exit makes it ready too, and recv says MEMPORT_EPEER. */
  assert_int_equal(poll(&pfd, 1, 5000), 1);
  assert_int_equal(th_wait(pid, 10), 0);
  th_assert_rc(memport_chan_recv(a, &m, 0), MEMPORT_EPEER);
  memport_chan_close(a);
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

/* ------------------------------------------------------------------------------------------ */
/* Named services.                                                                              */

static int connect_child(void *arg) {
  const char *name = arg;
  memport_chan_t *c;
  int rc = memport_chan_connect(&c, name, NULL, 5 * SEC);
  if (rc != 0) {
    fprintf(stderr, "connect: %s\n", memport_err_name(rc));
    return 80;
  }
  if (memport_chan_send(c, "hello", 5, 0, SEC) != 0)
    return 81;
  char buf[16];
  size_t len;
  if (memport_chan_recv_copy(c, buf, sizeof buf, &len, 5 * SEC) != 0 || len != 5 || memcmp(buf, "world", 5) != 0)
    return 82;
  memport_chan_close(c);
  return 0;
}

static void test_chan_connect_and_accept_over_a_named_service(void **state) {
  (void)state;
  int fds = th_count_fds(), maps = th_count_memport_maps();
  char name[MEMPORT_NAME_MAX + 1];
  snprintf(name, sizeof name, "%s", th_unique_name("chan"));
  memport_service_t *svc;
  th_assert_ok(memport_service_create(&svc, name, 0));
  pid_t pid = th_fork(connect_child, name, 20);
  memport_chan_t *c;
  th_assert_ok(memport_chan_accept(&c, svc, NULL, 10 * SEC));
  char buf[16];
  size_t len;
  th_assert_ok(memport_chan_recv_copy(c, buf, sizeof buf, &len, 5 * SEC));
  assert_int_equal(len, 5);
  assert_memory_equal(buf, "hello", 5);
  th_assert_ok(memport_chan_send(c, "world", 5, 0, SEC));
  assert_int_equal(th_wait(pid, 20), 0);
  /* the child closed its end in order (a crash would give MEMPORT_EPEER) */
  th_assert_rc(memport_chan_recv_copy(c, buf, sizeof buf, &len, 5 * SEC), MEMPORT_ECLOSED);
  memport_chan_close(c);
  th_assert_rc(memport_chan_accept(&c, svc, NULL, 20 * MS), MEMPORT_ETIMEDOUT);
  memport_service_close(svc);
  assert_true(memport_chan_connect(&c, name, NULL, 20 * MS) < 0); /* nobody serves it any more */
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

/* ------------------------------------------------------------------------------------------ */
/* Hostile peers: a raw peer that speaks the wire format itself.                                */

struct raw_peer {
  memport_port_t *port;
  memport_ring_t *ring; /* its TX ring */
  struct memport__ring_shared *sh;
  unsigned char *data;
  size_t cap;
  uint64_t prod;
  memport_region_t *link_r;           /* its link page, sent in its HELLO */
  struct memport__chan_link *link;
  struct memport__chan_link *vlink;   /* the victim's link page (raw_victim_link) */
};

static memport_msg_t *raw_hello(struct raw_peer *rp, uint32_t pool_buffers, uint64_t bufsize) {
  memport_msg_t *m;
  assert_int_equal(memport_msg_create(&m), 0);
  struct memport__ctl_hello h;
  memset(&h, 0, sizeof h);
  h.hdr.magic = MEMPORT__CTL_MAGIC;
  h.hdr.type = MEMPORT__CTL_HELLO;
  h.version = MEMPORT__CHAN_VERSION;
  h.pool_buffers = pool_buffers;
  h.ring_capacity = rp->cap;
  h.pool_buffer_size = bufsize;
  memport_msg_set_bytes(m, &h, sizeof h);
  memport_ring_export(rp->ring, m);
  if (pool_buffers != 0) {
    memport_region_t *r;
    assert_int_equal(memport_region_create(&r, pool_buffers * bufsize, 0), 0);
    memport_msg_attach_region(m, r, 0);
  }
  memport_msg_attach_region(m, rp->link_r, MEMPORT_ATTACH_COPY);
  return m;
}

/* Read the victim's HELLO and map its link page (its last handle). */
static void raw_victim_link(struct raw_peer *rp, memport_msg_t *m) {
  th_assert_ok(memport_port_recv(rp->port, m, SEC));
  int n = memport_msg_handle_count(m);
  assert_true(n >= 5);
  memport_region_t *r;
  void *p;
  th_assert_ok(memport_msg_take_region(m, (size_t)n - 1, &r));
  th_assert_ok(memport_region_map(r, 0, &p));
  memport_region_close(r);
  rp->vlink = p;
  memport_msg_clear(m);
}

static void raw_peer_init(struct raw_peer *rp, memport_port_t *port) {
  memset(rp, 0, sizeof *rp);
  rp->port = port;
  rp->cap = 65536;
  assert_int_equal(memport_ring_create(&rp->ring, rp->cap, 0), 0);
  memport_msg_t *m;
  memport_msg_create(&m);
  memport_ring_export(rp->ring, m);
  memport_region_t *cr, *dr;
  void *c, *d;
  memport_msg_take_region(m, 0, &cr);
  memport_msg_take_region(m, 1, &dr);
  assert_int_equal(memport_region_map(cr, 0, &c), 0);
  assert_int_equal(memport_region_map(dr, MEMPORT_MAP_MIRROR, &d), 0);
  memport_region_close(cr);
  memport_region_close(dr);
  memport_msg_close(m);
  rp->sh = c;
  rp->data = d;
  void *l;
  assert_int_equal(memport_region_create(&rp->link_r, sizeof(struct memport__chan_link), 0), 0);
  assert_int_equal(memport_region_map(rp->link_r, 0, &l), 0);
  rp->link = l;
}

static void raw_peer_fini(struct raw_peer *rp) {
  memport_unmap(rp->link);
  if (rp->vlink != NULL)
    memport_unmap(rp->vlink);
  memport_region_close(rp->link_r);
  memport_unmap(rp->sh);
  memport_unmap(rp->data);
  memport_ring_close(rp->ring);
  memport_port_close(rp->port);
}

/* Write one record of any type straight into the ring and publish it. */
static void raw_record(struct raw_peer *rp, uint32_t type, const void *payload, uint32_t len) {
  struct memport__ring_rec *h = (struct memport__ring_rec *)(rp->data + rp->prod % rp->cap);
  h->len = len;
  h->type = type;
  memcpy(h + 1, payload, len);
  rp->prod += MEMPORT__RING_HDR + ((len + 15u) & ~15u);
  atomic_store(&rp->sh->prod, rp->prod);
}

static void test_chan_hostile_handshakes_give_eproto(void **state) {
  (void)state;
  int fds = th_count_fds(), maps = th_count_memport_maps();
  for (int k = 0; k < 7; k++) {
    memport_port_t *pa, *pb;
    th_assert_ok(memport_port_pair(&pa, &pb));
    struct raw_peer rp;
    raw_peer_init(&rp, pb);
    memport_msg_t *m = raw_hello(&rp, k == 4 ? 0 : 2, 65536);
    struct memport__ctl_hello h;
    size_t len;
    memcpy(&h, memport_msg_bytes(m, &len), sizeof h);
    switch (k) {
    case 0: h.hdr.magic ^= 1; break;                      /* not a channel */
    case 1: h.version = 99; break;                        /* unknown version */
    case 2: h.pool_buffers = 1u << 20; break;             /* absurd pool */
    case 3: h.pool_buffer_size = (uint64_t)1 << 40; break; /* pool larger than its region */
    case 4: h.pool_buffers = 2; break;                    /* announces a pool it did not attach */
    case 5: h.ring_capacity = 4096; break;                /* lies about its ring */
    default: break;                                       /* sent twice: see below */
    }
    memport_msg_set_bytes(m, &h, k == 6 ? sizeof h - 1 : sizeof h);
    th_assert_ok(memport_port_send(rp.port, m, SEC));
    memport_msg_close(m);
    memport_chan_t *c = NULL;
    int rc = memport_chan_open(&c, pa, NULL, 2 * SEC);
    if (rc != MEMPORT_EPROTO)
      fail_msg("hostile hello %d: %s, expected MEMPORT_EPROTO", k, memport_err_name(rc));
    assert_null(c);
    raw_peer_fini(&rp);
  }
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

static void test_chan_hostile_records_and_controls_give_eproto(void **state) {
  (void)state;
  int fds = th_count_fds(), maps = th_count_memport_maps();
  for (int k = 0; k < 9; k++) {
    memport_port_t *pa, *pb;
    th_assert_ok(memport_port_pair(&pa, &pb));
    struct raw_peer rp;
    raw_peer_init(&rp, pb);
    memport_msg_t *m = raw_hello(&rp, 2, 65536);
    th_assert_ok(memport_port_send(rp.port, m, SEC));
    memport_chan_opts_t o;
    small_opts(&o);
    memport_chan_t *c = NULL;
    th_assert_ok(memport_chan_open(&c, pa, &o, 2 * SEC));
    th_assert_ok(memport_port_recv(rp.port, m, SEC)); /* its hello to us */
    memport_msg_clear(m);
    /* A good message first: it is delivered. */
    raw_record(&rp, MEMPORT__REC_INLINE, "good", 4);
    struct memport__rec_pool pd = {0, 1, 0, 100};
    struct memport__rec_blob bd = {0, 0, 100};
    struct memport__ctl_hdr wake = {MEMPORT__CTL_MAGIC, MEMPORT__CTL_WAKE, 0};
    unsigned char rel[sizeof(struct memport__ctl_release) + 8];
    struct memport__ctl_release rh = {{MEMPORT__CTL_MAGIC, MEMPORT__CTL_RELEASE, 0}, 1, 0};
    struct memport__ctl_release_entry re = {0, 1};
    memcpy(rel, &rh, sizeof rh);
    memcpy(rel + sizeof rh, &re, sizeof re);
    bool control = false;
    switch (k) {
    case 0: raw_record(&rp, 77, "x", 1); break; /* unknown record type */
    case 1: pd.index = 2; raw_record(&rp, MEMPORT__REC_POOL, &pd, sizeof pd); break;
    case 2: pd.offset = 65500; raw_record(&rp, MEMPORT__REC_POOL, &pd, sizeof pd); break;
    case 3: pd.len = UINT64_MAX; pd.offset = 8; raw_record(&rp, MEMPORT__REC_POOL, &pd, sizeof pd); break;
    case 4: raw_record(&rp, MEMPORT__REC_POOL, &pd, sizeof pd - 1); break;
    case 5: raw_record(&rp, MEMPORT__REC_BLOB, &bd, sizeof bd); break; /* no region was sent */
    case 6: /* releases a buffer we never sent */
      memport_msg_set_bytes(m, rel, sizeof rel);
      control = true;
      break;
    case 7: /* a wake carrying a handle */
      memport_msg_set_bytes(m, &wake, sizeof wake);
      {
        memport_sem_t *s;
        memport_sem_create(&s, 0, 0);
        memport_msg_attach_sem(m, s, 0);
      }
      control = true;
      break;
    default: /* unknown control message */
      wake.type = 99;
      memport_msg_set_bytes(m, &wake, sizeof wake);
      control = true;
      break;
    }
    if (control)
      th_assert_ok(memport_port_send(rp.port, m, SEC));
    memport_buf_t b;
    th_assert_ok(memport_chan_recv(c, &b, SEC));
    assert_memory_equal(b.data, "good", 4);
    th_assert_ok(memport_chan_release(c, &b));
    int rc = memport_chan_recv(c, &b, 100 * MS);
    if (rc != MEMPORT_EPROTO)
      fail_msg("hostile case %d: %s, expected MEMPORT_EPROTO", k, memport_err_name(rc));
    th_assert_rc(memport_chan_send(c, "x", 1, 0, 0), MEMPORT_EPROTO);
    th_assert_rc(memport_chan_recv(c, &b, 0), MEMPORT_EPROTO);
    memport_os_handle_t h;
    th_assert_rc(memport_chan_pollable(c, &h), MEMPORT_EPROTO);
    /* The channel closed its port: the hostile peer sees that. */
    th_assert_rc(memport_port_recv(rp.port, m, SEC), MEMPORT_EPEER);
    memport_chan_close(c);
    memport_msg_close(m);
    raw_peer_fini(&rp);
  }
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

/* A peer that scribbles the release queue of our pool: bad index, replayed generation, tail
 * beyond what it could have pushed. Our alloc notices when it looks for a buffer. */
static void test_chan_hostile_release_queue_gives_eproto(void **state) {
  (void)state;
  int fds = th_count_fds(), maps = th_count_memport_maps();
  for (int k = 0; k < 4; k++) {
    memport_port_t *pa, *pb;
    th_assert_ok(memport_port_pair(&pa, &pb));
    struct raw_peer rp;
    raw_peer_init(&rp, pb);
    memport_msg_t *m = raw_hello(&rp, 2, 65536);
    th_assert_ok(memport_port_send(rp.port, m, SEC));
    memport_chan_opts_t o;
    small_opts(&o);
    memport_chan_t *c = NULL;
    th_assert_ok(memport_chan_open(&c, pa, &o, 2 * SEC));
    memport_msg_clear(m);
    raw_victim_link(&rp, m);
    memport_buf_t z[4];
    for (int i = 0; i < 4; i++)
      th_assert_ok(memport_chan_alloc(c, 10, &z[i], 0));
    th_assert_ok(memport_chan_send_buf(c, &z[0], SEC)); /* index 0, generation 1 in flight */
    uint32_t sent = 0;
    switch (k) {
    case 0: atomic_store(&rp.vlink->pool_releases.entries[0], ((uint64_t)1 << 32) | 9); break;     /* no such buffer */
    case 1: atomic_store(&rp.vlink->pool_releases.entries[0], ((uint64_t)1 << 32) | 3); break;     /* allocated, not sent */
    case 2: atomic_store(&rp.vlink->pool_releases.entries[0], ((uint64_t)7 << 32) | sent); break;  /* wrong generation */
    default: atomic_store(&rp.vlink->pool_releases.entries[0], ((uint64_t)1 << 32) | sent); break; /* right entry, ... */
    }
    atomic_store(&rp.vlink->pool_releases.tail, k == 3 ? MEMPORT__RELQ_SIZE + 1 : 1);      /* ... impossible tail */
    memport_buf_t extra;
    int rc = memport_chan_alloc(c, 10, &extra, 50 * MS);
    if (rc != MEMPORT_EPROTO)
      fail_msg("hostile release queue %d: %s, expected MEMPORT_EPROTO", k, memport_err_name(rc));
    th_assert_rc(memport_chan_send(c, "x", 1, 0, 0), MEMPORT_EPROTO);
    for (int i = 1; i < 4; i++)
      th_assert_ok(memport_chan_free_buf(c, &z[i]));
    memport_chan_close(c);
    memport_msg_close(m);
    raw_peer_fini(&rp);
  }
  /* The honest case for contrast: a correct entry gives the buffer back. */
  {
    memport_port_t *pa, *pb;
    th_assert_ok(memport_port_pair(&pa, &pb));
    struct raw_peer rp;
    raw_peer_init(&rp, pb);
    memport_msg_t *m = raw_hello(&rp, 2, 65536);
    th_assert_ok(memport_port_send(rp.port, m, SEC));
    memport_chan_opts_t o;
    small_opts(&o);
    o.pool_buffers = 1;
    memport_chan_t *c = NULL;
    th_assert_ok(memport_chan_open(&c, pa, &o, 2 * SEC));
    memport_msg_clear(m);
    raw_victim_link(&rp, m);
    memport_buf_t z;
    th_assert_ok(memport_chan_alloc(c, 10, &z, 0));
    th_assert_ok(memport_chan_send_buf(c, &z, SEC));
    th_assert_rc(memport_chan_alloc(c, 10, &z, 0), MEMPORT_EAGAIN);
    atomic_store(&rp.vlink->pool_releases.entries[0], ((uint64_t)1 << 32) | 0);
    atomic_store(&rp.vlink->pool_releases.tail, 1);
    th_assert_ok(memport_chan_alloc(c, 10, &z, 0));
    assert_int_equal(atomic_load(&rp.vlink->pool_releases.head), 1);
    th_assert_ok(memport_chan_free_buf(c, &z));
    memport_chan_close(c);
    memport_msg_close(m);
    raw_peer_fini(&rp);
  }
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

struct flood_arg {
  struct raw_peer *rp;
  memport_chan_t *victim; /* the parent's: the child closes its copies before it exits */
  memport_msg_t *hello;
};

static int flood_child(void *varg) {
  struct raw_peer *rp = ((struct flood_arg *)varg)->rp;
  memport_msg_t *m;
  if (memport_msg_create(&m) != 0)
    return 100;
  struct memport__ctl_hdr wake = {MEMPORT__CTL_MAGIC, MEMPORT__CTL_WAKE, 0};
  memport_msg_set_bytes(m, &wake, sizeof wake);
  uint64_t end = th_now_ns() + 700 * MS;
  while (th_now_ns() < end) {
    int rc = memport_port_send(rp->port, m, MEMPORT_NOWAIT);
    if (rc != 0 && rc != MEMPORT_EAGAIN)
      break;
  }
  memport_msg_close(m);
  memport_chan_close(((struct flood_arg *)varg)->victim);
  memport_msg_close(((struct flood_arg *)varg)->hello);
  raw_peer_fini(rp);
  return 0;
}

/* A peer that floods the port with (valid) wake messages cannot keep a call from returning. */
static void test_chan_control_flood_cannot_stall_a_call(void **state) {
  (void)state;
  int fds = th_count_fds(), maps = th_count_memport_maps();
  memport_port_t *pa, *pb;
  th_assert_ok(memport_port_pair(&pa, &pb));
  struct raw_peer rp;
  raw_peer_init(&rp, pb);
  memport_msg_t *m = raw_hello(&rp, 2, 65536);
  th_assert_ok(memport_port_send(rp.port, m, SEC));
  memport_chan_opts_t o;
  small_opts(&o);
  memport_chan_t *c = NULL;
  th_assert_ok(memport_chan_open(&c, pa, &o, 2 * SEC));
  struct flood_arg fa = {&rp, c, m};
  pid_t pid = th_fork(flood_child, &fa, 10);
  th_sleep_ms(50);
  memport_buf_t b;
  uint64_t worst = 0;
  for (int i = 0; i < 20; i++) {
    uint64_t t0 = th_now_ns();
    th_assert_rc(memport_chan_recv(c, &b, i % 2 ? 0 : 20 * MS), i % 2 ? MEMPORT_EAGAIN : MEMPORT_ETIMEDOUT);
    uint64_t el = th_now_ns() - t0;
    worst = el > worst ? el : worst;
  }
  printf("# under a wake flood: slowest receive returned after %.1f ms\n", (double)worst / 1e6);
  assert_true(worst < (uint64_t)SEC);
  assert_int_equal(th_wait(pid, 10), 0);
  memport_chan_close(c);
  memport_msg_close(m);
  raw_peer_fini(&rp);
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_chan_opts_defaults_and_validation),
      cmocka_unit_test(test_chan_sizes_at_every_boundary),
      cmocka_unit_test(test_chan_recv_copy_with_short_buffer_keeps_message),
      cmocka_unit_test(test_chan_blocked_waits_sleep_instead_of_spinning),
      cmocka_unit_test(test_chan_million_messages_keep_order_across_fork),
      cmocka_unit_test(test_chan_zero_copy_shares_the_senders_pages),
      cmocka_unit_test(test_chan_receiver_cannot_write_received_bytes),
      cmocka_unit_test(test_chan_many_oversized_messages_in_flight),
      cmocka_unit_test(test_chan_oversized_message_behind_many_port_releases),
      cmocka_unit_test(test_chan_zero_copy_stream_through_a_tiny_pool),
      cmocka_unit_test(test_chan_pool_exhaustion_times_out_then_recovers),
      cmocka_unit_test(test_chan_peer_exit_before_handshake_gives_epeer),
      cmocka_unit_test(test_chan_peer_exit_while_blocked_in_recv_gives_epeer),
      cmocka_unit_test(test_chan_messages_committed_before_death_are_delivered),
      cmocka_unit_test(test_chan_peer_exit_while_holding_zero_copy_buffers),
      cmocka_unit_test(test_chan_sender_blocked_in_alloc_or_send_sees_epeer),
      cmocka_unit_test(test_chan_sender_with_room_sees_epeer),
      cmocka_unit_test(test_chan_pollable_becomes_ready_when_a_message_waits),
      cmocka_unit_test(test_chan_connect_and_accept_over_a_named_service),
      cmocka_unit_test(test_chan_hostile_handshakes_give_eproto),
      cmocka_unit_test(test_chan_hostile_records_and_controls_give_eproto),
      cmocka_unit_test(test_chan_hostile_release_queue_gives_eproto),
      cmocka_unit_test(test_chan_control_flood_cannot_stall_a_call),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
