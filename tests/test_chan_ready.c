/* SPDX-License-Identifier: MIT */
/* test_chan_ready.c: the channel in event loops: level-triggered readiness for receivers and senders, orderly close and half-close. */
#include "helpers.h"

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
  watchdog(12);
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
    pid_t pid = th_fork(loop_child, &lb, 60);
    watchdog(15);
    int rc = event_loop(&la);
    watchdog_off();
    int child = th_wait(pid, 65);
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
  memport_buf_t x;
  th_assert_ok(memport_chan_alloc(a, 3000, &x, MEMPORT_NOWAIT));
  th_fill(x.data, 3000, 77);
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
  size_t len;
  while (memport_chan_recv_copy(b, msg, sizeof msg, &len, MEMPORT_NOWAIT) == 0)
    ;
  th_assert_ok(memport_chan_send_buf(a, &x, MEMPORT_NOWAIT));
  memport_buf_t m;
  th_assert_ok(memport_chan_recv(b, &m, MEMPORT_NOWAIT));
  assert_int_equal(m.len, 3000);
  assert_int_equal(th_check(m.data, 3000, 77), 0);
  th_assert_ok(memport_chan_release(b, &m));
  memport_chan_close(a);
  memport_chan_close(b);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_chan_ready_send_between_eagain_and_poll),
      cmocka_unit_test(test_chan_ready_new_channel_starts_ready),
      cmocka_unit_test(test_chan_ready_sender_waits_for_ring_space_and_pool),
      cmocka_unit_test(test_chan_ready_failed_send_buf_keeps_the_buffer),
      cmocka_unit_test(test_chan_ready_random_event_loops_never_stall),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
