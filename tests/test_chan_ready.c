/* SPDX-License-Identifier: MIT */
/* test_chan_ready.c: the channel in event loops: level-triggered readiness for receivers and senders, orderly close and half-close. */
#include "helpers.h"

#include "../lib/chan.h" /* the link page, for the hostile-peer test */

#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* A tiny ring, a tiny pool: sends fail with MEMPORT_EAGAIN often, every path is taken. */
static void tiny_opts(memport_chan_opts_t *o) {
  memport_chan_opts_init(o);
  o->ring_capacity = 4096;
  o->zerocopy_threshold = 512;
  o->pool_buffer_size = 4096;
  o->pool_buffers = 2;
}

static volatile sig_atomic_t alarmed;
static void on_alarm(int sig) {
  (void)sig;
  alarmed = 1;
}

/* The parent's watchdog: SIGALRM interrupts a stalled poll() (EINTR) instead of killing us. */
static void watchdog(unsigned seconds) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGALRM, &sa, NULL); /* no SA_RESTART */
  alarmed = 0;
  alarm(seconds);
}

static void watchdog_off(void) {
  alarm(0);
  signal(SIGALRM, SIG_DFL);
}

/* Wait on the channel's handle without limit: 0 when it fired, 1 when the watchdog stopped it. */
static int wait_ready(memport_chan_t *ch) {
  memport_os_handle_t h;
  if (memport_chan_pollable(ch, &h) != 0)
    return 0; /* the channel ended: the next call says how */
  struct pollfd p = {.fd = h, .events = POLLIN};
  for (;;) {
    int n = poll(&p, 1, -1);
    if (n > 0)
      return 0;
    if (alarmed)
      return 1;
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Randomized interleavings of send, receive and poll on both ends.                            */

#define LOOP_MSGS 2500
#define LOOP_MAX_LEN 3000

struct loop_arg {
  memport_chan_t *ch;
  uint32_t seed;
  unsigned stats[4]; /* polls, send EAGAIN, alloc EAGAIN, send_buf EAGAIN */
};

static uint32_t rnd(uint32_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 17;
  *s ^= *s << 5;
  return *s;
}

static size_t msg_len(uint32_t seq) { return (seq * 2654435761u) % LOOP_MAX_LEN; }

/* Check message seq: its first 4 bytes are seq, the rest a pattern of seq. */
static int check_msg(const unsigned char *p, size_t len, uint32_t seq) {
  if (len != msg_len(seq))
    return 10;
  if (len >= 4) {
    uint32_t s;
    memcpy(&s, p, 4);
    if (s != seq || th_check(p + 4, len - 4, seq) != 0)
      return 11;
  }
  return 0;
}

static void fill_msg(unsigned char *p, size_t len, uint32_t seq) {
  if (len >= 4) {
    memcpy(p, &seq, 4);
    th_fill(p + 4, len - 4, seq);
  }
}

/* One end of the event loop: sends LOOP_MSGS messages (copied, or zero-copy through alloc and
 * send_buf, retried after MEMPORT_EAGAIN with the same buffer), receives LOOP_MSGS, in a random
 * order of calls, and waits on the handle whenever it cannot go on: after a send that failed,
 * or simply because it expects a message (drained or not). The wait must always end. */
static int event_loop(struct loop_arg *a) {
  memport_chan_t *ch = a->ch;
  uint32_t s = a->seed;
  uint32_t sent = 0, received = 0;
  bool send_blocked = false, have_buf = false;
  memport_buf_t buf;
  static unsigned char tmp[LOOP_MAX_LEN];
  while (sent < LOOP_MSGS || received < LOOP_MSGS) {
    uint32_t r = rnd(&s) % 8;
    if (r < 3 && sent < LOOP_MSGS && !send_blocked) {
      size_t len = msg_len(sent);
      int rc;
      if (have_buf) { /* a send_buf that failed: the filled buffer is still ours */
        if (buf.len != len || check_msg(buf.data, buf.len, sent) != 0)
          return 20;
        rc = memport_chan_send_buf(ch, &buf, MEMPORT_NOWAIT);
        if (rc == 0)
          have_buf = false;
        else
          a->stats[3]++;
      } else if (len > 512 && (r & 1)) {
        rc = memport_chan_alloc(ch, len, &buf, MEMPORT_NOWAIT);
        if (rc == MEMPORT_EAGAIN)
          a->stats[2]++;
        if (rc == 0) {
          fill_msg(buf.data, len, sent);
          have_buf = true;
          if ((rnd(&s) & 1) == 0)
            continue; /* filled, sent by a later turn */
          {
            rc = memport_chan_send_buf(ch, &buf, MEMPORT_NOWAIT);
            if (rc == 0)
              have_buf = false;
            else
              a->stats[3]++;
          }
        }
      } else {
        fill_msg(tmp, len, sent);
        rc = memport_chan_send(ch, tmp, len, 0, MEMPORT_NOWAIT);
        if (rc == MEMPORT_EAGAIN)
          a->stats[1]++;
      }
      if (rc == 0)
        sent++;
      else if (rc == MEMPORT_EAGAIN)
        send_blocked = true;
      else
        return 21;
    } else if (r < 6 && received < LOOP_MSGS) {
      int rc;
      if (r == 5) {
        memport_buf_t m;
        rc = memport_chan_recv(ch, &m, MEMPORT_NOWAIT);
        if (rc == 0) {
          int bad = check_msg(m.data, m.len, received);
          if (memport_chan_release(ch, &m) != 0 || bad)
            return 22;
        }
      } else {
        size_t len;
        rc = memport_chan_recv_copy(ch, tmp, sizeof tmp, &len, MEMPORT_NOWAIT);
        if (rc == 0 && check_msg(tmp, len, received) != 0)
          return 23;
      }
      if (rc == 0)
        received++;
      else if (rc != MEMPORT_EAGAIN)
        return 24;
    } else if ((sent == LOOP_MSGS || send_blocked) && (received < LOOP_MSGS || send_blocked)) {
      /* Nothing to do but wait: a message must come, or the failed send must become possible. */
      a->stats[0]++;
      if (wait_ready(ch) != 0) {
        fprintf(stderr, "# stalled: sent %u received %u send_blocked %d have_buf %d\n", sent, received,
                (int)send_blocked, (int)have_buf);
        return 25;
      }
      send_blocked = false;
    }
  }
  return 0;
}

static int loop_child(void *arg) {
  watchdog(60); /* poll() interrupted: the loop reports the stall */
  return event_loop(arg);
}

static void test_chan_ready_random_event_loops_never_stall(void **state) {
  (void)state;
  for (uint32_t round = 0; round < 4; round++) {
    memport_chan_opts_t o;
    tiny_opts(&o);
    memport_chan_t *a = NULL, *b = NULL;
    th_assert_ok(memport_chan_pair(&a, &b, &o));
    struct loop_arg la = {a, 0x9e3779b9u ^ (round * 7919u + 1), {0}};
    struct loop_arg lb = {b, 0x85ebca6bu ^ (round * 104729u + 3), {0}};
    pid_t pid = th_fork(loop_child, &lb, 90);
    watchdog(60);
    int rc = event_loop(&la);
    watchdog_off();
    int child = th_wait(pid, 95);
    printf("# round %u: polls %u, send EAGAIN %u, alloc EAGAIN %u, send_buf EAGAIN %u (parent: %d, child: %d)\n",
           round, la.stats[0], la.stats[1], la.stats[2], la.stats[3], rc, child);
    memport_chan_close(a);
    memport_chan_close(b);
    assert_int_equal(rc, 0);
    assert_int_equal(child, 0);
  }
}

/* The sequence: recv NOWAIT says EAGAIN, then this end sends, then the peer's message
 * (sent meanwhile) must make the handle ready, however long the send path looked at the port. */
static int send_one_later(void *arg) {
  memport_chan_t *b = arg;
  th_sleep_ms(20);
  return memport_chan_send(b, "x", 1, 0, SEC) == 0 ? 0 : 1;
}

static void test_chan_ready_send_between_eagain_and_poll(void **state) {
  (void)state;
  memport_chan_t *a = NULL, *b = NULL;
  th_assert_ok(memport_chan_pair(&a, &b, NULL));
  char c;
  size_t len;
  th_assert_rc(memport_chan_recv_copy(a, &c, 1, &len, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
  pid_t pid = th_fork(send_one_later, b, 10);
  assert_int_equal(th_wait(pid, 10), 0);
  /* the peer's message and its wake are there; our sends now look at the port */
  for (int i = 0; i < 20; i++) {
    th_assert_ok(memport_chan_send(a, "y", 1, 0, MEMPORT_NOWAIT));
    th_sleep_ms(2);
  }
  watchdog(10);
  int stalled = wait_ready(a);
  watchdog_off();
  assert_int_equal(stalled, 0);
  th_assert_ok(memport_chan_recv_copy(a, &c, 1, &len, MEMPORT_NOWAIT));
  assert_int_equal(c, 'x');
  memport_chan_close(a);
  memport_chan_close(b);
}

/* A new channel whose peer sent before anyone received is ready at once; after everything is
 * received (and EAGAIN seen) it is not. */
static void test_chan_ready_new_channel_starts_ready(void **state) {
  (void)state;
  memport_chan_t *a = NULL, *b = NULL;
  th_assert_ok(memport_chan_pair(&a, &b, NULL));
  memport_os_handle_t h;
  th_assert_ok(memport_chan_pollable(a, &h));
  struct pollfd p = {.fd = h, .events = POLLIN};
  assert_int_equal(poll(&p, 1, 0), 0);
  th_assert_ok(memport_chan_send(b, "hello", 5, 0, MEMPORT_NOWAIT));
  th_assert_ok(memport_chan_send(b, "again", 5, 0, MEMPORT_NOWAIT));
  assert_int_equal(poll(&p, 1, 1000), 1);
  char buf[8];
  size_t len;
  th_assert_ok(memport_chan_recv_copy(a, buf, sizeof buf, &len, MEMPORT_NOWAIT));
  /* one of two received: still ready (level-triggered), whatever else this end does */
  th_assert_ok(memport_chan_send(a, "r", 1, 0, MEMPORT_NOWAIT));
  assert_int_equal(poll(&p, 1, 1000), 1);
  th_assert_ok(memport_chan_recv_copy(a, buf, sizeof buf, &len, MEMPORT_NOWAIT));
  th_assert_rc(memport_chan_recv_copy(a, buf, sizeof buf, &len, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
  assert_int_equal(poll(&p, 1, 0), 0);
  memport_chan_close(a);
  memport_chan_close(b);
}

/* ------------------------------------------------------------------------------------------ */
/* Sender readiness.                                                                           */

static void test_chan_ready_sender_waits_for_ring_space_and_pool(void **state) {
  (void)state;
  memport_chan_opts_t o;
  tiny_opts(&o);
  memport_chan_t *a = NULL, *b = NULL;
  th_assert_ok(memport_chan_pair(&a, &b, &o));
  memport_os_handle_t h;
  th_assert_ok(memport_chan_pollable(a, &h));
  struct pollfd p = {.fd = h, .events = POLLIN};
  /* fill the ring */
  char msg[400] = {0};
  int n = 0, rc;
  while ((rc = memport_chan_send(a, msg, sizeof msg, 0, MEMPORT_NOWAIT)) == 0)
    n++;
  th_assert_rc(rc, MEMPORT_EAGAIN);
  assert_true(n > 0);
  assert_int_equal(poll(&p, 1, 0), 0); /* nothing to do yet */
  size_t len;
  th_assert_ok(memport_chan_recv_copy(b, msg, sizeof msg, &len, MEMPORT_NOWAIT));
  assert_int_equal(poll(&p, 1, 1000), 1); /* the failed send could now succeed */
  th_assert_ok(memport_chan_send(a, msg, sizeof msg, 0, MEMPORT_NOWAIT));
  while (memport_chan_recv_copy(b, msg, sizeof msg, &len, MEMPORT_NOWAIT) == 0)
    ;
  /* the pool: two buffers, both held by the receiver */
  memport_buf_t x, y, z, rx1, rx2;
  th_assert_ok(memport_chan_alloc(a, 4000, &x, MEMPORT_NOWAIT));
  th_assert_ok(memport_chan_alloc(a, 4000, &y, MEMPORT_NOWAIT));
  th_assert_ok(memport_chan_send_buf(a, &x, MEMPORT_NOWAIT));
  th_assert_ok(memport_chan_send_buf(a, &y, MEMPORT_NOWAIT));
  th_assert_ok(memport_chan_recv(b, &rx1, MEMPORT_NOWAIT));
  th_assert_ok(memport_chan_recv(b, &rx2, MEMPORT_NOWAIT));
  th_assert_rc(memport_chan_alloc(a, 4000, &z, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
  int r = poll(&p, 1, 0);
  if (r == 1) { /* at most one spurious wake: the next failed alloc settles it */
    th_assert_rc(memport_chan_alloc(a, 4000, &z, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
    assert_int_equal(poll(&p, 1, 0), 0);
  }
  th_assert_ok(memport_chan_release(b, &rx1));
  assert_int_equal(poll(&p, 1, 1000), 1);
  th_assert_ok(memport_chan_alloc(a, 4000, &z, MEMPORT_NOWAIT));
  th_assert_ok(memport_chan_free_buf(a, &z));
  th_assert_ok(memport_chan_release(b, &rx2));
  memport_chan_close(a);
  memport_chan_close(b);
}

/* A send_buf that fails for want of ring space leaves the filled buffer with the caller. */
static void test_chan_ready_failed_send_buf_keeps_the_buffer(void **state) {
  (void)state;
  memport_chan_opts_t o;
  tiny_opts(&o);
  memport_chan_t *a = NULL, *b = NULL;
  th_assert_ok(memport_chan_pair(&a, &b, &o));
  memport_buf_t x, y;
  th_assert_ok(memport_chan_alloc(a, 3000, &x, MEMPORT_NOWAIT));
  th_fill(x.data, 3000, 77);
  th_assert_ok(memport_chan_alloc(a, 6000, &y, MEMPORT_NOWAIT)); /* larger than a pool buffer: one-off */
  th_fill(y.data, 6000, 78);
  char msg[400] = {0};
  while (memport_chan_send(a, msg, sizeof msg, 0, MEMPORT_NOWAIT) == 0)
    ;
  while (memport_chan_send(a, msg, 0, 0, MEMPORT_NOWAIT) == 0) /* the last bytes of the ring */
    ;
  memport_buf_t keep = x;
  th_assert_rc(memport_chan_send_buf(a, &x, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
  assert_memory_equal(&keep, &x, sizeof x);
  assert_int_equal(th_check(x.data, 3000, 77), 0);
  th_assert_rc(memport_chan_send_buf(a, &x, 5 * MS), MEMPORT_ETIMEDOUT);
  assert_memory_equal(&keep, &x, sizeof x);
  memport_buf_t keep_y = y;
  th_assert_rc(memport_chan_send_buf(a, &y, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
  th_assert_rc(memport_chan_send_buf(a, &y, 5 * MS), MEMPORT_ETIMEDOUT);
  assert_memory_equal(&keep_y, &y, sizeof y);
  assert_int_equal(th_check(y.data, 6000, 78), 0);
  size_t len;
  while (memport_chan_recv_copy(b, msg, sizeof msg, &len, MEMPORT_NOWAIT) == 0)
    ;
  th_assert_ok(memport_chan_send_buf(a, &x, MEMPORT_NOWAIT));
  memport_buf_t m;
  th_assert_ok(memport_chan_recv(b, &m, MEMPORT_NOWAIT));
  assert_int_equal(m.len, 3000);
  assert_int_equal(th_check(m.data, 3000, 77), 0);
  th_assert_ok(memport_chan_release(b, &m));
  th_assert_ok(memport_chan_send_buf(a, &y, MEMPORT_NOWAIT));
  th_assert_ok(memport_chan_recv(b, &m, MEMPORT_NOWAIT));
  assert_int_equal(m.len, 6000);
  assert_int_equal(th_check(m.data, 6000, 78), 0);
  th_assert_ok(memport_chan_release(b, &m));
  memport_chan_close(a);
  memport_chan_close(b);
}


/* ------------------------------------------------------------------------------------------ */
/* Orderly close and half-close.                                                               */

#define CLOSE_MSGS 300

/* Send CLOSE_MSGS messages of every path (ring, pool, one-off region), then close in order. */
static int send_then_close(void *arg) {
  memport_port_t *port = arg;
  memport_chan_opts_t o;
  tiny_opts(&o);
  memport_chan_t *c;
  if (memport_chan_open(&c, port, &o, 5 * SEC) != 0)
    return 90;
  static unsigned char m[9000];
  for (uint32_t i = 0; i < CLOSE_MSGS; i++) {
    size_t len = i % 3 == 0 ? 100 : i % 3 == 1 ? 2000 : 9000; /* ring, pool, one-off */
    fill_msg(m, len, i);
    if (memport_chan_send(c, m, len, 0, 5 * SEC) != 0)
      return 91;
  }
  memport_chan_close(c);
  return 0;
}

static void test_chan_ready_close_delivers_everything_then_eclosed(void **state) {
  (void)state;
  memport_port_t *pa, *pb;
  th_assert_ok(memport_port_pair(&pa, &pb));
  pid_t pid = th_fork(send_then_close, pb, 30);
  memport_port_close(pb);
  memport_chan_opts_t o;
  tiny_opts(&o);
  memport_chan_t *c;
  th_assert_ok(memport_chan_open(&c, pa, &o, 5 * SEC));
  static unsigned char m[9000];
  for (uint32_t i = 0; i < CLOSE_MSGS; i++) {
    size_t len;
    th_assert_ok(memport_chan_recv_copy(c, m, sizeof m, &len, 5 * SEC));
    size_t want = i % 3 == 0 ? 100 : i % 3 == 1 ? 2000 : 9000;
    assert_int_equal(len, want);
    uint32_t seq;
    memcpy(&seq, m, 4);
    assert_int_equal(seq, i);
    assert_int_equal(th_check(m + 4, len - 4, i), 0);
  }
  assert_int_equal(th_wait(pid, 30), 0);
  size_t len;
  th_assert_rc(memport_chan_recv_copy(c, m, sizeof m, &len, 5 * SEC), MEMPORT_ECLOSED);
  th_assert_rc(memport_chan_recv_copy(c, m, sizeof m, &len, MEMPORT_NOWAIT), MEMPORT_ECLOSED);
  memport_buf_t b;
  th_assert_rc(memport_chan_recv(c, &b, MEMPORT_NOWAIT), MEMPORT_ECLOSED);
  int rc;
  uint64_t t0 = th_now_ns();
  while ((rc = memport_chan_send(c, "x", 1, 0, MEMPORT_NOWAIT)) == 0 && th_now_ns() - t0 < 5 * (uint64_t)SEC)
    th_sleep_ms(1);
  th_assert_rc(rc, MEMPORT_ECLOSED); /* the peer closed the whole channel: not MEMPORT_EPEER */
  th_assert_rc(memport_chan_alloc(c, 2000, &b, MEMPORT_NOWAIT), MEMPORT_ECLOSED);
  memport_os_handle_t h;
  th_assert_ok(memport_chan_pollable(c, &h));
  struct pollfd p = {.fd = h, .events = POLLIN};
  assert_int_equal(poll(&p, 1, 0), 1); /* and stays ready */
  assert_int_equal(poll(&p, 1, 0), 1);
  memport_chan_close(c);
  assert_true(strcmp(memport_err_name(MEMPORT_ECLOSED), "MEMPORT_ECLOSED") == 0);
  assert_true(MEMPORT_ECLOSED != MEMPORT_EPEER);
}

/* The half-closing end: three requests, "no more", then the replies still arrive. */
static int half_close_client(void *arg) {
  memport_chan_t *c = arg;
  for (int i = 0; i < 3; i++)
    if (memport_chan_send(c, "request", 7, 0, SEC) != 0)
      return 100;
  th_sleep_ms(30); /* the other end is blocked in recv and in poll meanwhile */
  if (memport_chan_shutdown(c, MEMPORT_CHAN_SHUT_SEND) != 0)
    return 101;
  if (memport_chan_shutdown(c, MEMPORT_CHAN_SHUT_SEND) != 0) /* again: nothing more to do */
    return 102;
  if (memport_chan_send(c, "late", 4, 0, SEC) != MEMPORT_ECLOSED)
    return 103;
  memport_buf_t z;
  if (memport_chan_alloc(c, 2000, &z, SEC) != MEMPORT_ECLOSED)
    return 104;
  char buf[16];
  size_t len;
  for (int i = 0; i < 3; i++)
    if (memport_chan_recv_copy(c, buf, sizeof buf, &len, 5 * SEC) != 0 || len != 5 || memcmp(buf, "reply", 5) != 0)
      return 105;
  return 0;
}

static void test_chan_ready_half_close_then_replies(void **state) {
  (void)state;
  memport_chan_t *a, *b;
  th_assert_ok(memport_chan_pair(&a, &b, NULL));
  th_assert_rc(memport_chan_shutdown(a, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_chan_shutdown(a, 2), MEMPORT_EINVAL);
  th_assert_rc(memport_chan_shutdown(NULL, MEMPORT_CHAN_SHUT_SEND), MEMPORT_EINVAL);
  pid_t pid = th_fork(half_close_client, b, 30);
  char buf[16];
  size_t len;
  for (int i = 0; i < 3; i++)
    th_assert_ok(memport_chan_recv_copy(a, buf, sizeof buf, &len, 5 * SEC));
  /* blocked in recv when the shutdown comes: MEMPORT_ECLOSED, not a timeout */
  th_assert_rc(memport_chan_recv_copy(a, buf, sizeof buf, &len, 10 * SEC), MEMPORT_ECLOSED);
  memport_os_handle_t h;
  th_assert_ok(memport_chan_pollable(a, &h));
  struct pollfd p = {.fd = h, .events = POLLIN};
  /* told: the ended side no longer makes the handle ready (the peer's wake may still be queued;
   * the next receive reads it) */
  th_assert_rc(memport_chan_recv_copy(a, buf, sizeof buf, &len, MEMPORT_NOWAIT), MEMPORT_ECLOSED);
  assert_int_equal(poll(&p, 1, 0), 0);
  for (int i = 0; i < 3; i++)
    th_assert_ok(memport_chan_send(a, "reply", 5, 0, SEC));
  assert_int_equal(th_wait(pid, 30), 0);
  th_assert_rc(memport_chan_recv_copy(a, buf, sizeof buf, &len, MEMPORT_NOWAIT), MEMPORT_ECLOSED);
  memport_chan_close(a);
  memport_chan_close(b);
}

/* A waiter in poll(-1) is woken by the peer's shutdown. */
static int shut_later(void *arg) {
  th_sleep_ms(50);
  return memport_chan_shutdown(arg, MEMPORT_CHAN_SHUT_SEND) == 0 ? 0 : 1;
}

static void test_chan_ready_poll_waiter_sees_the_close(void **state) {
  (void)state;
  memport_chan_t *a, *b;
  th_assert_ok(memport_chan_pair(&a, &b, NULL));
  char buf[4];
  size_t len;
  th_assert_rc(memport_chan_recv_copy(a, buf, sizeof buf, &len, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
  pid_t pid = th_fork(shut_later, b, 10);
  watchdog(10);
  int stalled = wait_ready(a);
  watchdog_off();
  assert_int_equal(stalled, 0);
  th_assert_rc(memport_chan_recv_copy(a, buf, sizeof buf, &len, MEMPORT_NOWAIT), MEMPORT_ECLOSED);
  assert_int_equal(th_wait(pid, 10), 0);
  memport_chan_close(a);
  memport_chan_close(b);
}

/* Fill our TX ring with NOWAIT sends: how many went. */
static int fill_ring(memport_chan_t *ch) {
  char msg[400] = {0};
  int n = 0, rc;
  while ((rc = memport_chan_send(ch, msg, sizeof msg, 0, MEMPORT_NOWAIT)) == 0)
    n++;
  th_assert_rc(rc, MEMPORT_EAGAIN);
  return n;
}

/* After the peer's half-close and our MEMPORT_ECLOSED, the handle waits for what is still
 * pending: room for a failed send, a pool buffer, the peer's full close. */
static void test_chan_ready_after_half_close_handle_waits_for_room(void **state) {
  (void)state;
  memport_chan_opts_t o;
  tiny_opts(&o);
  memport_chan_t *a = NULL, *b = NULL;
  th_assert_ok(memport_chan_pair(&a, &b, &o));
  memport_os_handle_t h;
  th_assert_ok(memport_chan_pollable(a, &h));
  struct pollfd p = {.fd = h, .events = POLLIN};
  th_assert_ok(memport_chan_shutdown(b, MEMPORT_CHAN_SHUT_SEND));
  assert_int_equal(poll(&p, 1, 1000), 1); /* the end: ready until a receive says so */
  assert_int_equal(poll(&p, 1, 0), 1);
  char msg[400];
  size_t len;
  th_assert_rc(memport_chan_recv_copy(a, msg, sizeof msg, &len, MEMPORT_NOWAIT), MEMPORT_ECLOSED);
  assert_int_equal(poll(&p, 1, 0), 0); /* told: nothing pending */
  /* the ring */
  assert_true(fill_ring(a) > 0);
  assert_int_equal(poll(&p, 1, 0), 0);
  assert_int_equal(poll(&p, 1, 50), 0);
  th_assert_rc(memport_chan_recv_copy(a, msg, sizeof msg, &len, MEMPORT_NOWAIT), MEMPORT_ECLOSED);
  assert_int_equal(poll(&p, 1, 0), 0); /* still told */
  th_assert_ok(memport_chan_recv_copy(b, msg, sizeof msg, &len, MEMPORT_NOWAIT)); /* the peer consumes */
  assert_int_equal(poll(&p, 1, 1000), 1);
  th_assert_ok(memport_chan_send(a, msg, sizeof msg, 0, MEMPORT_NOWAIT));
  while (memport_chan_recv_copy(b, msg, sizeof msg, &len, MEMPORT_NOWAIT) == 0)
    ;
  /* the pool: both buffers held by the peer */
  memport_buf_t x, y, z, rx1, rx2;
  th_assert_ok(memport_chan_alloc(a, 4000, &x, MEMPORT_NOWAIT));
  th_assert_ok(memport_chan_alloc(a, 4000, &y, MEMPORT_NOWAIT));
  th_assert_ok(memport_chan_send_buf(a, &x, MEMPORT_NOWAIT));
  th_assert_ok(memport_chan_send_buf(a, &y, MEMPORT_NOWAIT));
  th_assert_ok(memport_chan_recv(b, &rx1, MEMPORT_NOWAIT));
  th_assert_ok(memport_chan_recv(b, &rx2, MEMPORT_NOWAIT));
  th_assert_rc(memport_chan_alloc(a, 4000, &z, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
  if (poll(&p, 1, 0) == 1) { /* at most one spurious wake (the wakes for the ring space above) */
    th_assert_rc(memport_chan_alloc(a, 4000, &z, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
    assert_int_equal(poll(&p, 1, 0), 0);
  }
  assert_int_equal(poll(&p, 1, 50), 0);
  th_assert_ok(memport_chan_release(b, &rx1));
  assert_int_equal(poll(&p, 1, 1000), 1);
  th_assert_ok(memport_chan_alloc(a, 4000, &z, MEMPORT_NOWAIT));
  th_assert_ok(memport_chan_free_buf(a, &z));
  th_assert_ok(memport_chan_release(b, &rx2));
  /* the peer's full close wakes a waiting sender, whose sends then end */
  fill_ring(a);
  assert_int_equal(poll(&p, 1, 0), 0);
  memport_chan_close(b);
  assert_int_equal(poll(&p, 1, 1000), 1);
  th_assert_rc(memport_chan_send(a, msg, sizeof msg, 0, MEMPORT_NOWAIT), MEMPORT_ECLOSED);
  assert_int_equal(poll(&p, 1, 0), 1); /* and stays ready: every call ends at once */
  memport_chan_close(a);
}

/* Both ends half-close at once: each is told, then neither handle is ready (nothing can happen but
 * the peer's close), and the close of one wakes the other. */
static void test_chan_ready_both_half_close(void **state) {
  (void)state;
  memport_chan_t *a = NULL, *b = NULL;
  th_assert_ok(memport_chan_pair(&a, &b, NULL));
  th_assert_ok(memport_chan_send(a, "a", 1, 0, MEMPORT_NOWAIT));
  th_assert_ok(memport_chan_shutdown(a, MEMPORT_CHAN_SHUT_SEND));
  th_assert_ok(memport_chan_shutdown(b, MEMPORT_CHAN_SHUT_SEND));
  memport_os_handle_t ha, hb;
  th_assert_ok(memport_chan_pollable(a, &ha));
  th_assert_ok(memport_chan_pollable(b, &hb));
  struct pollfd pa = {.fd = ha, .events = POLLIN}, pb = {.fd = hb, .events = POLLIN};
  assert_int_equal(poll(&pa, 1, 0), 1);
  assert_int_equal(poll(&pb, 1, 0), 1);
  char c;
  size_t len;
  th_assert_rc(memport_chan_recv_copy(a, &c, 1, &len, MEMPORT_NOWAIT), MEMPORT_ECLOSED);
  th_assert_ok(memport_chan_recv_copy(b, &c, 1, &len, MEMPORT_NOWAIT)); /* sent before the close */
  assert_int_equal(c, 'a');
  assert_int_equal(poll(&pb, 1, 0), 1);
  th_assert_rc(memport_chan_recv_copy(b, &c, 1, &len, MEMPORT_NOWAIT), MEMPORT_ECLOSED);
  assert_int_equal(poll(&pa, 1, 0), 0);
  assert_int_equal(poll(&pb, 1, 0), 0);
  th_assert_rc(memport_chan_send(a, "x", 1, 0, MEMPORT_NOWAIT), MEMPORT_ECLOSED);
  th_assert_rc(memport_chan_send(b, "x", 1, 0, MEMPORT_NOWAIT), MEMPORT_ECLOSED);
  assert_int_equal(poll(&pa, 1, 50), 0);
  memport_chan_close(b);
  assert_int_equal(poll(&pa, 1, 1000), 1);
  th_assert_rc(memport_chan_recv_copy(a, &c, 1, &len, MEMPORT_NOWAIT), MEMPORT_ECLOSED);
  memport_chan_close(a);
}

/* The close arriving while the other end sends: a peer half-closes after a few messages, then
 * consumes the rest slowly; this end sends everything from an event loop (NOWAIT, poll(-1)). Its
 * handle must neither stall nor stay ready for good (each wait is for room, woken by a release). */
#define HALF_MSGS 300
static int half_close_slow_reader(void *arg) {
  memport_chan_t *c = arg;
  char buf[400];
  size_t len;
  for (int i = 0; i < 3; i++)
    if (memport_chan_recv_copy(c, buf, sizeof buf, &len, 5 * SEC) != 0)
      return 110;
  if (memport_chan_shutdown(c, MEMPORT_CHAN_SHUT_SEND) != 0)
    return 111;
  for (uint32_t i = 3; i < HALF_MSGS; i++) {
    if (i % 8 == 0)
      th_sleep_ms(1);
    if (memport_chan_recv_copy(c, buf, sizeof buf, &len, 5 * SEC) != 0)
      return 112;
    uint32_t seq;
    memcpy(&seq, buf, 4);
    if (len != sizeof buf || seq != i)
      return 113;
  }
  return 0;
}

static void test_chan_ready_sender_after_half_close_does_not_spin(void **state) {
  (void)state;
  memport_chan_opts_t o;
  tiny_opts(&o);
  memport_chan_t *a = NULL, *b = NULL;
  th_assert_ok(memport_chan_pair(&a, &b, &o));
  pid_t pid = th_fork(half_close_slow_reader, b, 60);
  watchdog(60);
  unsigned polls = 0, eclosed = 0;
  uint32_t sent = 0;
  char msg[400] = {0};
  int bad = 0;
  while (sent < HALF_MSGS && !bad) {
    memcpy(msg, &sent, 4);
    int rc = memport_chan_send(a, msg, sizeof msg, 0, MEMPORT_NOWAIT);
    if (rc == 0) {
      sent++;
      continue;
    }
    if (rc != MEMPORT_EAGAIN) {
      bad = rc;
      break;
    }
    size_t len;
    char in[4];
    rc = memport_chan_recv_copy(a, in, sizeof in, &len, MEMPORT_NOWAIT);
    if (rc == MEMPORT_ECLOSED)
      eclosed++;
    else if (rc != MEMPORT_EAGAIN)
      bad = rc;
    polls++;
    if (wait_ready(a) != 0)
      bad = 1; /* stalled */
  }
  watchdog_off();
  int child = th_wait(pid, 60);
  printf("# sent %u, polls %u, ECLOSED seen %u\n", sent, polls, eclosed);
  assert_int_equal(bad, 0);
  assert_int_equal(child, 0);
  assert_int_equal(sent, HALF_MSGS);
  /* one wait per release at most, and a few spurious ones: a handle stuck ready would loop here
   * hundreds of thousands of times while the reader sleeps */
  assert_true(polls <= 2 * HALF_MSGS);
  th_assert_rc(memport_chan_recv_copy(a, msg, sizeof msg, &(size_t){0}, MEMPORT_NOWAIT), MEMPORT_ECLOSED);
  memport_chan_close(a);
  memport_chan_close(b);
}

/* The peer closes the whole channel while its port lives on in another process (a fork holds
 * it): the port does not end, yet a waiting sender is woken and its sends end with MEMPORT_ECLOSED. */
static int hold_fds(void *arg) {
  (void)arg;
  th_sleep_ms(3000);
  return 0;
}

static void test_chan_ready_full_close_with_port_held_elsewhere(void **state) {
  (void)state;
  memport_chan_opts_t o;
  tiny_opts(&o);
  memport_chan_t *a = NULL, *b = NULL;
  th_assert_ok(memport_chan_pair(&a, &b, &o));
  th_assert_ok(memport_chan_shutdown(b, MEMPORT_CHAN_SHUT_SEND)); /* this process speaks for b */
  pid_t pid = th_fork(hold_fds, NULL, 10);
  memport_os_handle_t h;
  th_assert_ok(memport_chan_pollable(a, &h));
  struct pollfd p = {.fd = h, .events = POLLIN};
  char msg[400];
  size_t len;
  th_assert_rc(memport_chan_recv_copy(a, msg, sizeof msg, &len, MEMPORT_NOWAIT), MEMPORT_ECLOSED);
  fill_ring(a);
  assert_int_equal(poll(&p, 1, 0), 0);
  memport_chan_close(b);
  assert_int_equal(poll(&p, 1, 1000), 1);
  th_assert_rc(memport_chan_send(a, msg, sizeof msg, 0, MEMPORT_NOWAIT), MEMPORT_ECLOSED);
  th_assert_rc(memport_chan_send(a, msg, sizeof msg, 0, 10 * MS), MEMPORT_ECLOSED);
  assert_int_equal(poll(&p, 1, 0), 1);
  memport_chan_close(a);
  kill(pid, SIGKILL);
  (void)th_wait(pid, 10);
}

/* A hostile peer's close position (in its link page) that does not fit the ring breaks the
 * channel with MEMPORT_EPROTO, at once or when the receiver gets there; never a hang. */
static void test_chan_ready_bogus_close_position_gives_eproto(void **state) {
  (void)state;
  /* 1 message of 1 byte takes 32 bytes of ring (16 of header, 16 of payload) */
  const uint64_t cases[][2] = {
      {0, 32 | MEMPORT__CHAN_CLOSED_SEND},                          /* past what was produced */
      {1, 32 | 4u},                                                 /* unknown bits */
      {1, 40 | MEMPORT__CHAN_CLOSED_SEND},                          /* misaligned */
      {2, 0 | MEMPORT__CHAN_CLOSED_SEND},                           /* records after the close */
      {1, MEMPORT__CHAN_CLOSED_ALL},                                /* "all" without "send" */
      {2, 16 | MEMPORT__CHAN_CLOSED_SEND},                          /* inside a record */
      {1, (UINT64_MAX & ~(uint64_t)15) | MEMPORT__CHAN_CLOSED_SEND}, /* far away */
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    memport_chan_t *a, *b;
    th_assert_ok(memport_chan_pair(&a, &b, NULL));
    for (uint64_t i = 0; i < cases[k][0]; i++)
      th_assert_ok(memport_chan_send(b, "m", 1, 0, MEMPORT_NOWAIT));
    atomic_store(&b->tx_link->closed, cases[k][1]);
    char buf[4];
    size_t len;
    int rc = 0;
    for (int n = 0; n < 4 && rc == 0; n++)
      rc = memport_chan_recv_copy(a, buf, sizeof buf, &len, 2 * SEC);
    if (rc != MEMPORT_EPROTO)
      fail_msg("case %zu: %s, expected MEMPORT_EPROTO", k, memport_err_name(rc));
    th_assert_rc(memport_chan_recv_copy(a, buf, sizeof buf, &len, MEMPORT_NOWAIT), MEMPORT_EPROTO);
    memport_chan_close(a);
    memport_chan_close(b);
  }
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_chan_ready_send_between_eagain_and_poll),
      cmocka_unit_test(test_chan_ready_new_channel_starts_ready),
      cmocka_unit_test(test_chan_ready_sender_waits_for_ring_space_and_pool),
      cmocka_unit_test(test_chan_ready_failed_send_buf_keeps_the_buffer),
      cmocka_unit_test(test_chan_ready_close_delivers_everything_then_eclosed),
      cmocka_unit_test(test_chan_ready_half_close_then_replies),
      cmocka_unit_test(test_chan_ready_poll_waiter_sees_the_close),
      cmocka_unit_test(test_chan_ready_after_half_close_handle_waits_for_room),
      cmocka_unit_test(test_chan_ready_both_half_close),
      cmocka_unit_test(test_chan_ready_sender_after_half_close_does_not_spin),
      cmocka_unit_test(test_chan_ready_full_close_with_port_held_elsewhere),
      cmocka_unit_test(test_chan_ready_bogus_close_position_gives_eproto),
      cmocka_unit_test(test_chan_ready_random_event_loops_never_stall),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
