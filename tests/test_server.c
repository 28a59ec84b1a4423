/* SPDX-License-Identifier: MIT */
/* test_server.c: channel servers: the non-blocking handshake, a silent client beside served ones, idle connections, memport_chan_peer. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include "helpers.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define CLIENTS 8
#define IDLE_CONNECTIONS 100

/* Small channels: a page of ring each way and no pool, so a hundred of them are cheap. */
static void small_opts(memport_chan_opts_t *o) {
  memport_chan_opts_init(o);
  o->ring_capacity = 4096;
  o->zerocopy_threshold = 1024;
  o->pool_buffers = 0;
  o->wait_policy = MEMPORT_WAIT_BLOCK;
}

static bool handle_ready(memport_os_handle_t h, int timeout_ms) {
  struct pollfd p = {.fd = h, .events = POLLIN};
  return poll(&p, 1, timeout_ms) == 1;
}

/* Wait up to timeout_ms for one byte on fd (0/1 from the peer, -1 on EOF or timeout). */
static int read_byte(int fd, int timeout_ms) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  if (poll(&p, 1, timeout_ms) != 1)
    return -1;
  unsigned char c;
  return read(fd, &c, 1) == 1 ? c : -1;
}

/* ------------------------------------------------------------------------------------------ */
/* The pending handshake on a port pair, in one process.                                       */

static void test_server_pending_handshake_over_a_port_pair(void **state) {
  (void)state;
  int fds = th_count_fds();
  memport_chan_opts_t o;
  small_opts(&o);
  memport_port_t *pa, *pb;
  th_assert_ok(memport_port_pair(&pa, &pb));
  memport_chan_pending_t *p;
  th_assert_ok(memport_chan_open_start(&p, pa, &o));
  memport_os_handle_t h;
  th_assert_ok(memport_chan_pending_pollable(p, &h));
  assert_false(handle_ready(h, 0)); /* nothing from the other side yet */
  memport_chan_t *ca = NULL, *cb = NULL;
  for (int i = 0; i < 3; i++) /* not yet, and asking again drops nothing */
    th_assert_rc(memport_chan_pending_finish(p, &ca, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
  th_assert_rc(memport_chan_pending_finish(p, &ca, 10 * MS), MEMPORT_ETIMEDOUT);
  assert_null(ca);
  memport_cred_t cred;
  th_assert_ok(memport_chan_pending_peer(p, &cred));
  assert_int_equal(cred.pid, getpid());
  /* The other side's blocking open completes at once: our HELLO went out with the start. */
  th_assert_ok(memport_chan_open(&cb, pb, &o, 5 * SEC));
  assert_true(handle_ready(h, 5000));
  th_assert_ok(memport_chan_pending_finish(p, &ca, MEMPORT_NOWAIT));
  assert_non_null(ca);
  memport_chan_t *again = NULL;
  th_assert_rc(memport_chan_pending_finish(p, &again, MEMPORT_NOWAIT), MEMPORT_EINVAL); /* done once */
  assert_null(again);
  th_assert_rc(memport_chan_pending_pollable(p, &h), MEMPORT_EINVAL);
  th_assert_ok(memport_chan_pending_close(p));
  th_assert_rc(memport_chan_pending_finish(NULL, &again, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_chan_open_start(&p, NULL, &o), MEMPORT_EINVAL);
  th_assert_ok(memport_chan_pending_close(NULL));

  /* The channel works. */
  th_assert_ok(memport_chan_send(cb, "ping", 4, 0, SEC));
  char buf[8];
  size_t len;
  th_assert_ok(memport_chan_recv_copy(ca, buf, sizeof buf, &len, SEC));
  assert_int_equal(len, 4);
  memport_chan_close(cb);
  memport_chan_close(ca);
  assert_int_equal(th_count_fds(), fds);
}

static void test_server_pending_peer_gone_gives_epeer(void **state) {
  (void)state;
  int fds = th_count_fds();
  memport_port_t *pa, *pb;
  th_assert_ok(memport_port_pair(&pa, &pb));
  memport_chan_pending_t *p;
  memport_chan_opts_t o;
  small_opts(&o);
  th_assert_ok(memport_chan_open_start(&p, pa, &o));
  memport_port_close(pb);
  memport_os_handle_t h;
  th_assert_ok(memport_chan_pending_pollable(p, &h));
  assert_true(handle_ready(h, 5000)); /* a gone client makes the handle ready too */
  memport_chan_t *c = NULL;
  th_assert_rc(memport_chan_pending_finish(p, &c, MEMPORT_NOWAIT), MEMPORT_EPEER);
  th_assert_rc(memport_chan_pending_finish(p, &c, MEMPORT_NOWAIT), MEMPORT_EPEER); /* stays */
  th_assert_rc(memport_chan_pending_pollable(p, &h), MEMPORT_EPEER);
  assert_null(c);
  memport_chan_pending_close(p);
  o.struct_size = 1;
  th_assert_ok(memport_port_pair(&pa, &pb));
  th_assert_rc(memport_chan_open_start(&p, pa, &o), MEMPORT_EINVAL); /* the port is closed */
  memport_port_close(pb);
  assert_int_equal(th_count_fds(), fds);
}

static void test_server_chan_peer_names_the_other_process(void **state) {
  (void)state;
  memport_chan_t *a, *b;
  memport_chan_opts_t o;
  small_opts(&o);
  th_assert_ok(memport_chan_pair(&a, &b, &o));
  memport_cred_t c;
  th_assert_ok(memport_chan_peer(a, &c));
  assert_int_equal(c.pid, getpid());
  assert_int_equal(c.uid, geteuid());
  assert_int_equal(c.gid, getegid());
  th_assert_rc(memport_chan_peer(NULL, &c), MEMPORT_EINVAL);
  th_assert_rc(memport_chan_peer(a, NULL), MEMPORT_EINVAL);
  memport_chan_close(b);
  th_assert_ok(memport_chan_peer(a, &c)); /* still known once the peer is gone */
  assert_int_equal(c.pid, getpid());
  memport_chan_close(a);
}

/* ------------------------------------------------------------------------------------------ */
/* A silent client, and eight clients served meanwhile.                                        */

static const char *g_name;
/* What the parent holds while it forks lives in globals: a forked child then still points at it,
 * so that valgrind does not count the parent's objects as the child's leaks. */
static memport_service_t *g_svc;
static memport_chan_t *g_chan;
static memport_chan_pending_t *g_pending;
static int g_silent_pipe[2]; /* the silent client waits for EOF on [0] */

static int silent_child(void *arg) {
  (void)arg;
  close(g_silent_pipe[1]);
  memport_port_t *port;
  if (memport_port_connect(&port, g_name, 10 * SEC) != 0)
    return 10;
  (void)read_byte(g_silent_pipe[0], 30000); /* say nothing until told to go */
  memport_port_close(port);
  return 0;
}

static int client_child(void *arg) {
  uint32_t index = (uint32_t)(uintptr_t)arg;
  memport_chan_opts_t o;
  small_opts(&o);
  memport_chan_t *c;
  int rc = memport_chan_connect(&c, g_name, &o, 20 * SEC);
  if (rc != 0)
    return 20;
  if (memport_chan_send(c, &index, sizeof index, 0, 10 * SEC) != 0)
    return 21;
  uint32_t reply = 0;
  size_t len = 0;
  if (memport_chan_recv_copy(c, &reply, sizeof reply, &len, 20 * SEC) != 0 || len != sizeof reply ||
      reply != index * 3 + 1)
    return 22;
  memport_chan_close(c);
  return 0;
}

static void test_server_silent_client_does_not_stall_the_others(void **state) {
  (void)state;
  int fds = th_count_fds();
  char name[MEMPORT_NAME_MAX + 1];
  snprintf(name, sizeof name, "%s", th_unique_name("srv"));
  g_name = name;
  th_assert_ok(memport_service_create(&g_svc, name, 0));
  memport_service_t *svc = g_svc;
  assert_int_equal(pipe2(g_silent_pipe, O_CLOEXEC), 0);
  pid_t silent_pid = th_fork(silent_child, NULL, 60);
  close(g_silent_pipe[0]);
  memport_chan_opts_t o;
  small_opts(&o);

  /* The silent client is the first connection: it is pending before anyone else connects. */
  memport_chan_pending_t *silent;
  th_assert_ok(memport_chan_accept_start(&silent, svc, &o, 20 * SEC));
  g_pending = silent;
  memport_cred_t cred;
  th_assert_ok(memport_chan_pending_peer(silent, &cred));
  assert_int_equal(cred.pid, silent_pid);

  pid_t pids[CLIENTS];
  for (uintptr_t i = 0; i < CLIENTS; i++)
    pids[i] = th_fork(client_child, (void *)i, 60);

  /* The event loop: the service, the pending connections, the channels. */
  memport_chan_pending_t *pending[CLIENTS + 1] = {silent};
  size_t npending = 1;
  memport_chan_t *chans[CLIENTS] = {0};
  bool answered[CLIENTS] = {0}; /* chans[i] got its reply (its client may be gone since) */
  size_t nchans = 0;
  bool served[CLIENTS] = {0};
  unsigned nserved = 0;
  uint64_t give_up = th_now_ns() + 60 * SEC; /* a watchdog, not a timing */
  while (nserved < CLIENTS && th_now_ns() < give_up) {
    struct pollfd pfd[1 + CLIENTS + 1 + CLIENTS];
    size_t n = 0;
    memport_os_handle_t h;
    th_assert_ok(memport_service_pollable(svc, &h));
    pfd[n++] = (struct pollfd){.fd = h, .events = POLLIN};
    for (size_t i = 0; i < npending; i++) {
      th_assert_ok(memport_chan_pending_pollable(pending[i], &h));
      pfd[n++] = (struct pollfd){.fd = h, .events = POLLIN};
    }
    for (size_t i = 0; i < nchans; i++) {
      th_assert_ok(memport_chan_pollable(chans[i], &h));
      pfd[n++] = (struct pollfd){.fd = h, .events = POLLIN};
    }
    assert_true(poll(pfd, (nfds_t)n, 1000) >= 0);
    size_t polled = npending; /* pfd[1 .. polled] are theirs */
    if (pfd[0].revents != 0) {
      memport_chan_pending_t *p;
      int rc = memport_chan_accept_start(&p, svc, &o, MEMPORT_NOWAIT);
      if (rc == 0) {
        assert_true(npending < CLIENTS + 1);
        pending[npending++] = p;
      } else if (rc != MEMPORT_EAGAIN) {
        fail_msg("accept_start: %s", memport_err_name(rc));
      }
    }
    for (size_t i = 0; i < polled; i++) {
      if (pfd[1 + i].revents == 0)
        continue;
      assert_true(pending[i] != silent); /* it never says anything, so it is never ready */
      memport_chan_t *c;
      int rc = memport_chan_pending_finish(pending[i], &c, MEMPORT_NOWAIT);
      if (rc == MEMPORT_EAGAIN)
        continue;
      th_assert_ok(rc);
      memport_chan_pending_close(pending[i]);
      pending[i] = NULL;
      assert_true(nchans < CLIENTS);
      chans[nchans++] = c;
    }
    size_t w = 0; /* compact; the pollfd indices of this round are used no more */
    for (size_t i = 0; i < npending; i++)
      if (pending[i] != NULL)
        pending[w++] = pending[i];
    npending = w;
    for (size_t i = 0; i < nchans; i++) {
      if (answered[i])
        continue;
      uint32_t index;
      size_t len;
      int rc = memport_chan_recv_copy(chans[i], &index, sizeof index, &len, MEMPORT_NOWAIT);
      if (rc == MEMPORT_EAGAIN)
        continue;
      th_assert_ok(rc);
      assert_int_equal(len, sizeof index);
      assert_true(index < CLIENTS);
      assert_false(served[index]);
      memport_cred_t peer;
      th_assert_ok(memport_chan_peer(chans[i], &peer));
      assert_int_equal(peer.pid, pids[index]);
      assert_int_equal(peer.uid, geteuid());
      uint32_t reply = index * 3 + 1;
      th_assert_ok(memport_chan_send(chans[i], &reply, sizeof reply, 0, 10 * SEC));
      served[index] = true;
      answered[i] = true;
      nserved++;
    }
  }
  assert_int_equal(nserved, CLIENTS);
  for (int i = 0; i < CLIENTS; i++)
    assert_int_equal(th_wait(pids[i], 60), 0);

  /* All eight were served while the silent one stayed pending, undropped. */
  assert_int_equal(npending, 1);
  assert_ptr_equal(pending[0], silent);
  memport_chan_t *c = NULL;
  th_assert_rc(memport_chan_pending_finish(silent, &c, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
  memport_os_handle_t h;
  th_assert_ok(memport_chan_pending_pollable(silent, &h));
  assert_false(handle_ready(h, 0));
  close(g_silent_pipe[1]); /* now it goes, and its pending connection says so */
  assert_int_equal(th_wait(silent_pid, 60), 0);
  th_assert_rc(memport_chan_pending_finish(silent, &c, 10 * SEC), MEMPORT_EPEER);
  memport_chan_pending_close(silent);
  g_pending = NULL;
  for (size_t i = 0; i < nchans; i++)
    memport_chan_close(chans[i]);
  memport_service_close(svc);
  assert_int_equal(th_count_fds(), fds);
}

/* ------------------------------------------------------------------------------------------ */
/* memport_chan_accept(MEMPORT_NOWAIT) keeps a client whose HELLO is a moment behind.           */

static int late_client(void *arg) {
  (void)arg;
  memport_chan_opts_t o;
  small_opts(&o);
  memport_port_t *port;
  if (memport_port_connect(&port, g_name, 10 * SEC) != 0)
    return 30;
  th_sleep_ms(200); /* connected, HELLO not sent yet */
  memport_chan_t *c;
  if (memport_chan_open(&c, port, &o, 20 * SEC) != 0)
    return 31;
  char buf[8];
  size_t len;
  if (memport_chan_recv_copy(c, buf, sizeof buf, &len, 20 * SEC) != 0 || len != 2 || memcmp(buf, "hi", 2) != 0)
    return 32;
  memport_chan_close(c);
  return 0;
}

static void test_server_accept_nowait_keeps_a_late_client(void **state) {
  (void)state;
  char name[MEMPORT_NAME_MAX + 1];
  snprintf(name, sizeof name, "%s", th_unique_name("late"));
  g_name = name;
  th_assert_ok(memport_service_create(&g_svc, name, 0));
  memport_service_t *svc = g_svc;
  memport_chan_opts_t o;
  small_opts(&o);
  memport_chan_t *c = NULL;
  th_assert_rc(memport_chan_accept(&c, svc, &o, MEMPORT_NOWAIT), MEMPORT_EAGAIN); /* nobody yet */
  memport_chan_pending_t *p = NULL;
  th_assert_rc(memport_chan_accept_start(&p, svc, &o, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
  assert_null(p);
  g_chan = NULL;
  pid_t pid = th_fork(late_client, NULL, 60);
  memport_os_handle_t h;
  th_assert_ok(memport_service_pollable(svc, &h));
  int rc = MEMPORT_EAGAIN;
  for (int round = 0; round < 100 && rc == MEMPORT_EAGAIN; round++) {
    (void)handle_ready(h, 1000);
    rc = memport_chan_accept(&c, svc, &o, MEMPORT_NOWAIT);
  }
  th_assert_ok(rc);
  g_chan = c;
  th_assert_ok(memport_chan_send(c, "hi", 2, 0, 10 * SEC));
  assert_int_equal(th_wait(pid, 60), 0);
  memport_chan_close(c);
  g_chan = NULL;

  /* The same with the pending API: EAGAIN as often as asked, then the channel. Invalid options
   * are refused before the connection is taken from the service. */
  pid = th_fork(late_client, NULL, 60);
  memport_chan_opts_t bad = o;
  bad.wait_policy = 99;
  th_assert_ok(handle_ready(h, 10000) ? 0 : -1);
  th_assert_rc(memport_chan_accept_start(&p, svc, &bad, 20 * SEC), MEMPORT_EINVAL);
  th_assert_ok(memport_chan_accept_start(&p, svc, &o, 20 * SEC));
  unsigned not_yet = 0;
  for (int round = 0; round < 1000; round++) {
    rc = memport_chan_pending_finish(p, &c, MEMPORT_NOWAIT);
    if (rc != MEMPORT_EAGAIN)
      break;
    not_yet++;
    th_sleep_ms(1);
  }
  th_assert_ok(rc);
  assert_true(not_yet > 0); /* the client waited 200 ms before its HELLO */
  memport_chan_pending_close(p);
  th_assert_ok(memport_chan_send(c, "hi", 2, 0, 10 * SEC));
  assert_int_equal(th_wait(pid, 60), 0);
  memport_chan_close(c);
  memport_service_close(svc);
}

/* ------------------------------------------------------------------------------------------ */
/* A hundred idle connections cost the server nothing.                                         */

static int g_idle_pipe[2];

static int idle_clients(void *arg) {
  (void)arg;
  close(g_idle_pipe[1]);
  memport_chan_opts_t o;
  small_opts(&o);
  memport_chan_t *c[IDLE_CONNECTIONS];
  for (int i = 0; i < IDLE_CONNECTIONS; i++)
    if (memport_chan_connect(&c[i], g_name, &o, 20 * SEC) != 0)
      return 40;
  (void)read_byte(g_idle_pipe[0], 60000); /* idle until told to go */
  for (int i = 0; i < IDLE_CONNECTIONS; i++)
    memport_chan_close(c[i]);
  return 0;
}

/* This process's user and system CPU time, in clock ticks (/proc/self/stat), or -1. */
static long cpu_ticks(void) {
  FILE *f = fopen("/proc/self/stat", "r");
  if (f == NULL)
    return -1;
  char buf[1024];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
  if (p == NULL)
    return -1;
  unsigned long ut = 0, st = 0;
  /* after ")": state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime */
  if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
    return -1;
  return (long)(ut + st);
}

static void test_server_idle_connections_use_no_cpu(void **state) {
  (void)state;
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 4096 && rl.rlim_max > rl.rlim_cur) {
    rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
    (void)setrlimit(RLIMIT_NOFILE, &rl);
  }
  char name[MEMPORT_NAME_MAX + 1];
  snprintf(name, sizeof name, "%s", th_unique_name("idle"));
  g_name = name;
  th_assert_ok(memport_service_create(&g_svc, name, 0));
  memport_service_t *svc = g_svc;
  assert_int_equal(pipe2(g_idle_pipe, O_CLOEXEC), 0);
  pid_t pid = th_fork(idle_clients, NULL, 120);
  close(g_idle_pipe[0]);
  memport_chan_opts_t o;
  small_opts(&o);
  memport_chan_t *c[IDLE_CONNECTIONS];
  struct pollfd pfd[IDLE_CONNECTIONS];
  for (int i = 0; i < IDLE_CONNECTIONS; i++) {
    memport_chan_pending_t *p;
    th_assert_ok(memport_chan_accept_start(&p, svc, &o, 20 * SEC));
    th_assert_ok(memport_chan_pending_finish(p, &c[i], 20 * SEC));
    memport_chan_pending_close(p);
    memport_os_handle_t h;
    th_assert_ok(memport_chan_pollable(c[i], &h));
    pfd[i] = (struct pollfd){.fd = h, .events = POLLIN};
  }

  /* One second of an event loop over the hundred: the handles never become ready, so the loop
   * makes one poll() call (a few if the kernel returns early) and the process uses no CPU time. */
  long before = cpu_ticks();
  uint64_t end = th_now_ns() + SEC;
  unsigned polls = 0, ready = 0;
  for (uint64_t now; (now = th_now_ns()) < end;) {
    int ms = (int)((end - now + MS - 1) / MS);
    int r = poll(pfd, IDLE_CONNECTIONS, ms);
    polls++;
    assert_true(r >= 0);
    for (int i = 0; i < IDLE_CONNECTIONS && r > 0; i++) {
      if (pfd[i].revents == 0)
        continue;
      ready++;
      char buf[8];
      size_t len;
      (void)memport_chan_recv_copy(c[i], buf, sizeof buf, &len, MEMPORT_NOWAIT);
    }
  }
  long after = cpu_ticks();
  assert_int_equal(ready, 0);
  assert_true(polls <= 3);
  if (before >= 0 && after >= 0)
    assert_true(after - before <= 10); /* generous: idle is 0 ticks */

  close(g_idle_pipe[1]);
  assert_int_equal(th_wait(pid, 120), 0);
  for (int i = 0; i < IDLE_CONNECTIONS; i++)
    memport_chan_close(c[i]);
  memport_service_close(svc);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_server_pending_handshake_over_a_port_pair),
      cmocka_unit_test(test_server_pending_peer_gone_gives_epeer),
      cmocka_unit_test(test_server_chan_peer_names_the_other_process),
      cmocka_unit_test(test_server_silent_client_does_not_stall_the_others),
      cmocka_unit_test(test_server_accept_nowait_keeps_a_late_client),
      cmocka_unit_test(test_server_idle_connections_use_no_cpu),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
