/* SPDX-License-Identifier: MIT */
/* test_chan_threads.c: a channel endpoint under threads: one sending and one receiving thread per endpoint at once, and two threads of one direction refused with MEMPORT_EBUSY. */
#include "helpers.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define POOL_BUF (16 * 1024)
#define THRESHOLD 1024
#define MAX_MSG (40 * 1024)
#define WATCHDOG_S 600 /* a hang fails the test (TSan and valgrind are slow) */

static void opts_small(memport_chan_opts_t *o) {
  memport_chan_opts_init(o);
  o->ring_capacity = 64 * 1024;
  o->zerocopy_threshold = THRESHOLD;
  o->pool_buffer_size = POOL_BUF;
  o->pool_buffers = 8;
}

/* A thread's first failure: the line, and the code it got. */
static _Atomic int fail_line, fail_rc;
#define T_CHECK(cond, rc)                                   \
  do {                                                      \
    if (!(cond)) {                                          \
      int zero_ = 0;                                        \
      if (atomic_compare_exchange_strong(&fail_line, &zero_, __LINE__)) \
        atomic_store(&fail_rc, (rc));                       \
      return NULL;                                          \
    }                                                       \
  } while (0)
#define FAILED() (atomic_load(&fail_line) != 0)

static void start(void) {
  atomic_store(&fail_line, 0);
  atomic_store(&fail_rc, 0);
  alarm(WATCHDOG_S);
}

static void finish(void) {
  alarm(0);
  if (FAILED())
    fprintf(stderr, "thread failed at line %d (rc %d)\n", atomic_load(&fail_line), atomic_load(&fail_rc));
  assert_int_equal(atomic_load(&fail_line), 0);
}

/* Messages: 4 bytes of the sender's id, 4 of its sequence number, then bytes from th_fill seeded
 * by both. Lengths follow the sequence number: mostly ring records, every 8th through a pool
 * buffer, every 500th in a one-off region. */
static size_t msg_len(uint32_t seq) {
  if (seq % 500 == 499)
    return POOL_BUF + 1 + (seq * 7919u) % (MAX_MSG - POOL_BUF - 1);
  if (seq % 8 == 7)
    return THRESHOLD + 1 + (seq * 131u) % (POOL_BUF - THRESHOLD - 1);
  return 8 + (seq * 37u) % (THRESHOLD - 8);
}

static uint32_t seed_of(uint32_t id, uint32_t seq) { return id * 0x9e3779b9u ^ seq; }

static void fill(unsigned char *p, size_t len, uint32_t id, uint32_t seq) {
  memcpy(p, &id, 4);
  memcpy(p + 4, &seq, 4);
  th_fill(p + 8, len - 8, seed_of(id, seq));
}

/* A whole, well-formed message from sender `id` (or any id when id is UINT32_MAX): its seq. */
static bool well_formed(const unsigned char *p, size_t len, uint32_t *id, uint32_t *seq) {
  if (len < 8)
    return false;
  memcpy(id, p, 4);
  memcpy(seq, p + 4, 4);
  return len == msg_len(*seq) && th_check(p + 8, len - 8, seed_of(*id, *seq)) == 0;
}

/* Send message (id, seq): through memport_chan_send, or alloc + send_buf every other time it is
 * large. EBUSY is retried when `retry_busy` (*busy counts it), any other failure is returned. */
static int send_one(memport_chan_t *ch, uint32_t id, uint32_t seq, unsigned char *scratch, unsigned long *busy) {
  size_t len = msg_len(seq);
  int rc;
  if (len > THRESHOLD && seq % 3 != 0) {
    memport_buf_t b;
    while ((rc = memport_chan_alloc(ch, len, &b, 10 * SEC)) == MEMPORT_EBUSY)
      ++*busy, sched_yield();
    if (rc < 0)
      return rc;
    fill(b.data, len, id, seq);
    while ((rc = memport_chan_send_buf(ch, &b, 10 * SEC)) == MEMPORT_EBUSY)
      ++*busy, sched_yield();
    return rc;
  }
  fill(scratch, len, id, seq);
  while ((rc = memport_chan_send(ch, scratch, len, 0, 10 * SEC)) == MEMPORT_EBUSY)
    ++*busy, sched_yield();
  return rc;
}

/* Receive one message (zero-copy or copied, by turns): 0 with its id and seq, MEMPORT_EBUSY when
 * another receiving call was running (nothing taken), or another failure (as a negative code;
 * 1 for a malformed message). */
static int recv_one(memport_chan_t *ch, bool copy, unsigned char *scratch, int64_t timeout, uint32_t *id,
                    uint32_t *seq) {
  if (copy) {
    size_t len = 0;
    int rc = memport_chan_recv_copy(ch, scratch, MAX_MSG, &len, timeout);
    if (rc < 0)
      return rc;
    return well_formed(scratch, len, id, seq) ? 0 : 1;
  }
  memport_buf_t m;
  int rc = memport_chan_recv(ch, &m, timeout);
  if (rc < 0)
    return rc;
  bool ok = well_formed(m.data, m.len, id, seq);
  while ((rc = memport_chan_release(ch, &m)) == MEMPORT_EBUSY)
    sched_yield();
  if (rc < 0)
    return rc;
  return ok ? 0 : 1;
}

/* ------------------------------------------------------------------------------------------ */
/* (a) One sending and one receiving thread on each end of a pair, both directions at once.     */

struct side {
  memport_chan_t *ch;
  uint32_t id; /* of what this end sends */
  uint32_t count;
};

static void *sender(void *arg) {
  struct side *s = arg;
  unsigned char *scratch = malloc(MAX_MSG);
  T_CHECK(scratch != NULL, 0);
  unsigned long busy = 0;
  for (uint32_t seq = 0; seq < s->count && !FAILED(); seq++) {
    int rc = send_one(s->ch, s->id, seq, scratch, &busy);
    if (rc < 0)
      free(scratch);
    T_CHECK(rc == 0, rc);
  }
  free(scratch);
  T_CHECK(busy == 0, (int)busy); /* the only sender of its end: never busy */
  return NULL;
}

static void *receiver(void *arg) {
  struct side *s = arg;
  unsigned char *scratch = malloc(MAX_MSG);
  T_CHECK(scratch != NULL, 0);
  for (uint32_t want = 0; want < s->count && !FAILED(); want++) {
    uint32_t id, seq;
    int rc = recv_one(s->ch, want % 2 == 1, scratch, 10 * SEC, &id, &seq);
    if (rc != 0 || id != s->id || seq != want)
      free(scratch);
    T_CHECK(rc == 0, rc);
    T_CHECK(id == s->id, (int)id);
    T_CHECK(seq == want, (int)seq); /* in order, none lost */
  }
  free(scratch);
  return NULL;
}

static uint32_t scaled(uint32_t n) { return th_under_valgrind() ? n / 20 : n; }

static void test_one_sender_one_receiver_per_end(void **state) {
  (void)state;
  start();
  memport_chan_opts_t o;
  opts_small(&o);
  memport_chan_t *a, *b;
  th_assert_ok(memport_chan_pair(&a, &b, &o));
  uint32_t n = scaled(100000); /* per direction: 200000 in all */
  struct side a_tx = {a, 1, n}, b_rx = {b, 1, n}, b_tx = {b, 2, n}, a_rx = {a, 2, n};
  pthread_t t[4];
  assert_int_equal(pthread_create(&t[0], NULL, sender, &a_tx), 0);
  assert_int_equal(pthread_create(&t[1], NULL, receiver, &a_rx), 0);
  assert_int_equal(pthread_create(&t[2], NULL, sender, &b_tx), 0);
  assert_int_equal(pthread_create(&t[3], NULL, receiver, &b_rx), 0);
  for (int i = 0; i < 4; i++)
    pthread_join(t[i], NULL);
  finish();
  memport_chan_stats_t s;
  memset(&s, 0, sizeof s);
  s.struct_size = sizeof s;
  th_assert_ok(memport_chan_stats(a, &s));
  assert_true(s.sent_ring_msgs > 0 && s.sent_pool_msgs > 0 && s.sent_oneoff_msgs > 0);
  assert_int_equal(s.recv_ring_msgs + s.recv_pool_msgs + s.recv_oneoff_msgs, n);
  memport_chan_close(a);
  memport_chan_close(b);
}

/* ------------------------------------------------------------------------------------------ */
/* (b) Two threads of one direction on one endpoint: each call succeeds or gets MEMPORT_EBUSY.   */

static _Atomic unsigned long busy_seen;

struct hammer {
  memport_chan_t *ch;
  uint32_t id;
  uint32_t count;
};

static void *hammer_send(void *arg) {
  struct hammer *h = arg;
  unsigned char *scratch = malloc(MAX_MSG);
  T_CHECK(scratch != NULL, 0);
  unsigned long busy = 0;
  for (uint32_t seq = 0; seq < h->count && !FAILED(); seq++) {
    int rc = send_one(h->ch, h->id, seq, scratch, &busy);
    if (rc < 0)
      free(scratch);
    T_CHECK(rc == 0, rc); /* anything but success or EBUSY (retried) fails */
  }
  free(scratch);
  atomic_fetch_add(&busy_seen, busy);
  return NULL;
}

struct two_rx {
  memport_chan_t *ch;
  uint32_t senders; /* ids 1..senders */
  uint32_t count;   /* per sender */
  _Atomic uint32_t received;
  _Atomic uint32_t next[3]; /* per sender id: the next seq expected (one receiver) */
  _Atomic unsigned char *seen; /* per seq (one sender, two receivers) */
  bool ordered;
};

static void *hammer_recv(void *arg) {
  struct two_rx *r = arg;
  unsigned char *scratch = malloc(MAX_MSG);
  T_CHECK(scratch != NULL, 0);
  uint32_t total = r->senders * r->count;
  unsigned long busy = 0;
  for (unsigned turn = 0; atomic_load(&r->received) < total && !FAILED(); turn++) {
    uint32_t id, seq;
    int rc = recv_one(r->ch, turn % 4 != 0, scratch, 50 * MS, &id, &seq);
    if (rc == MEMPORT_EBUSY || rc == MEMPORT_ETIMEDOUT) {
      busy += rc == MEMPORT_EBUSY;
      sched_yield();
      continue;
    }
    if (rc != 0)
      free(scratch);
    T_CHECK(rc == 0, rc); /* never MEMPORT_EPROTO, never a malformed message */
    if (r->ordered) {
      T_CHECK(id >= 1 && id <= r->senders, (int)id);
      uint32_t want = atomic_fetch_add(&r->next[id], 1);
      T_CHECK(seq == want, (int)seq); /* each sender's messages whole and in order */
    } else {
      T_CHECK(id == 1 && seq < r->count, (int)seq);
      T_CHECK(atomic_exchange(&r->seen[seq], 1) == 0, (int)seq); /* each exactly once */
    }
    atomic_fetch_add(&r->received, 1);
  }
  free(scratch);
  atomic_fetch_add(&busy_seen, busy);
  return NULL;
}

static void test_two_senders_refused_with_ebusy(void **state) {
  (void)state;
  start();
  atomic_store(&busy_seen, 0);
  memport_chan_opts_t o;
  opts_small(&o);
  memport_chan_t *a, *b;
  th_assert_ok(memport_chan_pair(&a, &b, &o));
  uint32_t n = scaled(20000);
  struct hammer h1 = {a, 1, n}, h2 = {a, 2, n};
  struct two_rx r = {.ch = b, .senders = 2, .count = n, .ordered = true};
  pthread_t t[3];
  assert_int_equal(pthread_create(&t[0], NULL, hammer_send, &h1), 0);
  assert_int_equal(pthread_create(&t[1], NULL, hammer_send, &h2), 0);
  assert_int_equal(pthread_create(&t[2], NULL, hammer_recv, &r), 0);
  for (int i = 0; i < 3; i++)
    pthread_join(t[i], NULL);
  finish();
  assert_int_equal(atomic_load(&r.received), 2 * n);
  fprintf(stderr, "# two senders: %lu calls refused with MEMPORT_EBUSY\n", atomic_load(&busy_seen));
  memport_chan_close(a);
  memport_chan_close(b);
}

static void test_two_receivers_refused_with_ebusy(void **state) {
  (void)state;
  start();
  atomic_store(&busy_seen, 0);
  memport_chan_opts_t o;
  opts_small(&o);
  memport_chan_t *a, *b;
  th_assert_ok(memport_chan_pair(&a, &b, &o));
  uint32_t n = scaled(20000);
  struct hammer h = {a, 1, n};
  struct two_rx r = {.ch = b, .senders = 1, .count = n, .ordered = false};
  r.seen = calloc(n, 1);
  assert_non_null(r.seen);
  pthread_t t[3];
  assert_int_equal(pthread_create(&t[0], NULL, hammer_send, &h), 0);
  assert_int_equal(pthread_create(&t[1], NULL, hammer_recv, &r), 0);
  assert_int_equal(pthread_create(&t[2], NULL, hammer_recv, &r), 0);
  for (int i = 0; i < 3; i++)
    pthread_join(t[i], NULL);
  finish();
  assert_int_equal(atomic_load(&r.received), n);
  fprintf(stderr, "# two receivers: %lu calls refused with MEMPORT_EBUSY\n", atomic_load(&busy_seen));
  free((void *)r.seen);
  memport_chan_close(a);
  memport_chan_close(b);
}

/* A call of one direction does not make the other direction's calls busy, and a second call of the
 * same direction is refused while one runs (a sender blocked on a full ring holds the flag). */
static void *blocked_send(void *arg) {
  memport_chan_t *ch = arg;
  static unsigned char big[900];
  int rc = memport_chan_send(ch, big, sizeof big, 0, 30 * SEC);
  T_CHECK(rc == 0, rc);
  return NULL;
}

static void test_busy_is_per_direction(void **state) {
  (void)state;
  start();
  memport_chan_opts_t o;
  opts_small(&o);
  memport_chan_t *a, *b;
  th_assert_ok(memport_chan_pair(&a, &b, &o));
  static unsigned char big[900];
  unsigned sent = 0;
  while (memport_chan_send(a, big, 8, 0, MEMPORT_NOWAIT) == 0) /* fill a's ring to the last record */
    sent++;
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, blocked_send, a), 0);
  int rc = 0;
  for (unsigned i = 0; i < 1000 && rc != MEMPORT_EBUSY; i++) {
    th_sleep_ms(5);
    rc = memport_chan_send(a, big, 8, 0, MEMPORT_NOWAIT);
    if (rc != MEMPORT_EBUSY)
      assert_int_equal(rc, MEMPORT_EAGAIN); /* before the thread's call started */
  }
  assert_int_equal(rc, MEMPORT_EBUSY);
  memport_buf_t m;
  th_assert_rc(memport_chan_alloc(a, 100, &m, 0), MEMPORT_EBUSY);
  th_assert_rc(memport_chan_shutdown(a, MEMPORT_CHAN_SHUT_SEND), MEMPORT_EBUSY);
  /* The receiving side of `a` is free meanwhile. */
  th_assert_rc(memport_chan_recv(a, &m, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
  for (unsigned i = 0; i <= sent; i++) { /* room for the blocked sender */
    size_t len;
    th_assert_ok(memport_chan_recv_copy(b, big, sizeof big, &len, 10 * SEC));
  }
  pthread_join(t, NULL);
  finish();
  th_assert_ok(memport_chan_send(a, big, 8, 0, MEMPORT_NOWAIT));
  memport_chan_close(a);
  memport_chan_close(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_busy_is_per_direction),
      cmocka_unit_test(test_two_senders_refused_with_ebusy),
      cmocka_unit_test(test_two_receivers_refused_with_ebusy),
      cmocka_unit_test(test_one_sender_one_receiver_per_end),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
