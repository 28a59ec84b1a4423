/* SPDX-License-Identifier: MIT */
/* test_name.c: named services, connect by name, reclaim, uid policy, the private directory, named regions, listing. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>


/* The test runs with XDG_RUNTIME_DIR pointing at a fresh private directory of its own, so the
 * files behind names can be inspected and parallel runs never meet. */
static char g_xdg[PATH_MAX];
static char g_dir[PATH_MAX]; /* g_xdg/memport */

/* snprintf that fails the test instead of truncating. */
__attribute__((format(printf, 3, 4))) static void xsnprintf(char *buf, size_t cap, const char *f, ...) {
  va_list ap;
  va_start(ap, f);
  int n = vsnprintf(buf, cap, f, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= cap)
    fail_msg("path too long");
}

static char *name_dup(const char *prefix) {
  char *s = strdup(th_unique_name(prefix));
  assert_non_null(s);
  return s;
}

static bool entry_exists(const char *name, const char *suffix) {
  char path[PATH_MAX];
  xsnprintf(path, sizeof path, "%s/%s%s", g_dir, name, suffix);
  struct stat st;
  return lstat(path, &st) == 0;
}

/* ---- a pair of pipes between a parent and the child it forks ---- */
struct sync {
  int up[2];   /* child -> parent */
  int down[2]; /* parent -> child */
};

static void sync_init(struct sync *s) {
  assert_int_equal(pipe2(s->up, O_CLOEXEC), 0);
  assert_int_equal(pipe2(s->down, O_CLOEXEC), 0);
}

static void sync_close(struct sync *s) {
  close(s->up[0]);
  close(s->up[1]);
  close(s->down[0]);
  close(s->down[1]);
}

/* Wait up to timeout_ms for one byte on fd; returns it, or -1. */
static int read_byte(int fd, int timeout_ms) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  if (poll(&p, 1, timeout_ms) != 1)
    return -1;
  unsigned char c;
  return read(fd, &c, 1) == 1 ? c : -1;
}

static void write_byte(int fd, unsigned char c) {
  ssize_t r = write(fd, &c, 1);
  (void)r;
}

static int child_tell(struct sync *s, unsigned char c) {
  write_byte(s->up[1], c);
  return 0;
}
static int child_await(struct sync *s, int timeout_ms) { return read_byte(s->down[0], timeout_ms); }
static int parent_await(struct sync *s, int timeout_ms) { return read_byte(s->up[0], timeout_ms); }
static void parent_tell(struct sync *s, unsigned char c) { write_byte(s->down[1], c); }

/* ---- children that inherit a publication thread ----
 * A child forked while a thread runs (the parent's publication thread, or one of its own) holds a
 * copy of memory that only that thread referenced; valgrind would report it as lost when the
 * child exits. Such children report their result through a pipe and end with SIGKILL, which
 * valgrind does not audit. The parent sees the same result as th_wait would give. */
#define QUIET_MAX 8
static struct {
  pid_t pid;
  int fd;
} g_quiet[QUIET_MAX];

static pid_t quiet_fork(int (*fn)(void *arg), void *arg, unsigned timeout_s) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0)
    return -1;
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    signal(SIGALRM, SIG_DFL);
    alarm(timeout_s);
    unsigned char b = (unsigned char)(fn(arg) & 0xff);
    ssize_t w = write(p[1], &b, 1);
    (void)w;
    raise(SIGKILL);
    _exit(b);
  }
  close(p[1]);
  if (pid < 0) {
    close(p[0]);
    return -1;
  }
  for (int i = 0; i < QUIET_MAX; i++)
    if (g_quiet[i].pid == 0) {
      g_quiet[i].pid = pid;
      g_quiet[i].fd = p[0];
      return pid;
    }
  close(p[0]);
  return pid;
}

/* The child's result, or -1 if it died otherwise (crash, timeout). */
static int quiet_wait(pid_t pid, unsigned timeout_s) {
  int st = th_wait(pid, timeout_s);
  for (int i = 0; i < QUIET_MAX; i++)
    if (g_quiet[i].pid == pid) {
      unsigned char b;
      ssize_t r = read(g_quiet[i].fd, &b, 1);
      close(g_quiet[i].fd);
      g_quiet[i].pid = 0;
      return st == 128 + SIGKILL && r == 1 ? b : -1;
    }
  return -1;
}

static int quiet_run(int (*fn)(void *arg), void *arg, unsigned timeout_s) {
  return quiet_wait(quiet_fork(fn, arg, timeout_s), timeout_s + 5);
}

/* ---- messages ---- */
static int send_text(memport_port_t *p, const char *text) {
  memport_msg_t *m = NULL;
  int rc = memport_msg_create(&m);
  if (rc == 0)
    rc = memport_msg_set_bytes(m, text, strlen(text));
  if (rc == 0)
    rc = memport_port_send(p, m, 5 * SEC);
  memport_msg_close(m);
  return rc;
}

/* Receive a message and compare its bytes with `text`: 0 when equal, 1 when not, or an error. */
static int recv_text(memport_port_t *p, const char *text, memport_cred_t *sender) {
  memport_msg_t *m = NULL;
  int rc = memport_msg_create(&m);
  if (rc == 0)
    rc = memport_port_recv(p, m, 5 * SEC);
  if (rc == 0) {
    size_t len = 0;
    const void *b = memport_msg_bytes(m, &len);
    rc = (len == strlen(text) && memcmp(b, text, len) == 0) ? 0 : 1;
    if (rc == 0 && sender != NULL && memport_msg_sender(m, sender) != 0)
      rc = 1;
  }
  memport_msg_close(m);
  return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Name syntax.                                                                                */

static void test_name_syntax_is_checked_by_every_entry_point(void **state) {
  (void)state;
  int fds = th_count_fds();
  memport_service_t *s = NULL;
  char longest[MEMPORT_NAME_MAX + 2];
  const char *base = th_unique_name("syn");
  memset(longest, 'x', sizeof longest);
  memcpy(longest, base, strlen(base));
  longest[MEMPORT_NAME_MAX] = '\0';

  /* valid */
  const char *good[] = {longest, th_unique_name("A.b_c-9"), th_unique_name("x")};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    char *n = strdup(good[i]);
    th_assert_ok(memport_service_create(&s, n, 0));
    th_assert_ok(memport_service_close(s));
    free(n);
  }
  /* one byte too long */
  longest[MEMPORT_NAME_MAX] = 'y';
  longest[MEMPORT_NAME_MAX + 1] = '\0';
  th_assert_rc(memport_service_create(&s, longest, 0), MEMPORT_ENAMETOOLONG);

  const char *bad[] = {"", ".", "..", ".hidden", "-dash", "a/b", "/abs", "../up", "a b", "tab\t",
                       "star*", "caf\xc3\xa9", "nl\n", "colon:x"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    th_assert_rc(memport_service_create(&s, bad[i], 0), MEMPORT_EINVAL);
    memport_port_t *p = NULL;
    th_assert_rc(memport_port_connect(&p, bad[i], MEMPORT_NOWAIT), MEMPORT_EINVAL);
    memport_region_t *r = NULL;
    th_assert_rc(memport_region_open(&r, bad[i], MEMPORT_NOWAIT), MEMPORT_EINVAL);
  }
  memport_port_t *p = NULL;
  th_assert_rc(memport_port_connect(&p, longest, MEMPORT_NOWAIT), MEMPORT_ENAMETOOLONG);
  memport_region_t *r = NULL;
  th_assert_rc(memport_region_open(&r, longest, MEMPORT_NOWAIT), MEMPORT_ENAMETOOLONG);
  th_assert_ok(memport_region_create(&r, 4096, 0));
  memport_publication_t *pub = NULL;
  th_assert_rc(memport_region_publish(&pub, r, "..", NULL, NULL), MEMPORT_EINVAL);
  th_assert_rc(memport_region_publish(&pub, r, longest, NULL, NULL), MEMPORT_ENAMETOOLONG);
  th_assert_ok(memport_region_close(r));
  assert_int_equal(th_count_fds(), fds);
}

static void test_null_arguments_and_flags_are_einval(void **state) {
  (void)state;
  memport_service_t *s = NULL;
  memport_port_t *p = NULL;
  memport_region_t *r = NULL;
  memport_publication_t *pub = NULL;
  memport_os_handle_t h;
  char *n = name_dup("args");
  th_assert_rc(memport_service_create(NULL, n, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_service_create(&s, NULL, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_service_create(&s, n, 1u), MEMPORT_EINVAL);
  th_assert_rc(memport_service_accept(NULL, &p, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_service_allow_uid(NULL, 1), MEMPORT_EINVAL);
  th_assert_rc(memport_service_pollable(NULL, &h), MEMPORT_EINVAL);
  th_assert_rc(memport_port_connect(NULL, n, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_port_connect(&p, NULL, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_region_open(NULL, n, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_region_publish(&pub, NULL, n, NULL, NULL), MEMPORT_EINVAL);
  th_assert_rc(memport_name_foreach(NULL, NULL), MEMPORT_EINVAL);
  th_assert_ok(memport_service_close(NULL));
  th_assert_ok(memport_publication_close(NULL));
  th_assert_ok(memport_service_create(&s, n, 0));
  th_assert_rc(memport_service_accept(s, NULL, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_service_pollable(s, NULL), MEMPORT_EINVAL);
  for (uid_t u = 1000; u < 1000 + 16; u++)
    th_assert_ok(memport_service_allow_uid(s, u));
  th_assert_ok(memport_service_allow_uid(s, 1000)); /* already there */
  th_assert_rc(memport_service_allow_uid(s, 5000), MEMPORT_ENOSPC);
  th_assert_ok(memport_service_close(s));
  (void)r;
  free(n);
}

/* ------------------------------------------------------------------------------------------ */
/* Services across processes.                                                                  */

struct exchange_arg {
  const char *name;
};

static int child_connect_and_exchange(void *arg) {
  struct exchange_arg *a = arg;
  memport_port_t *p = NULL;
  if (memport_port_connect(&p, a->name, 5 * SEC) != 0)
    return 10;
  memport_cred_t peer;
  if (memport_port_peer(p, &peer) != 0 || peer.pid != getppid() || peer.uid != geteuid())
    return 11;
  if (send_text(p, "ping") != 0)
    return 12;
  if (recv_text(p, "pong", NULL) != 0)
    return 13;
  memport_port_close(p);
  return 0;
}

static void test_service_connect_and_exchange_across_fork(void **state) {
  (void)state;
  int fds = th_count_fds();
  char *n = name_dup("xchg");
  memport_service_t *s = NULL;
  th_assert_ok(memport_service_create(&s, n, 0));
  assert_true(entry_exists(n, ".lock"));
  assert_true(entry_exists(n, ".sock"));
  struct exchange_arg a = {n};
  pid_t pid = th_fork(child_connect_and_exchange, &a, 20);
  memport_port_t *p = NULL;
  th_assert_ok(memport_service_accept(s, &p, 10 * SEC));
  memport_cred_t peer, sender;
  th_assert_ok(memport_port_peer(p, &peer));
  assert_int_equal(peer.pid, pid);
  assert_int_equal(peer.uid, geteuid());
  assert_int_equal(recv_text(p, "ping", &sender), 0);
  assert_int_equal(sender.pid, pid);
  th_assert_ok(send_text(p, "pong"));
  assert_int_equal(th_wait(pid, 20), 0);
  th_assert_ok(memport_port_close(p));
  th_assert_ok(memport_service_close(s));
  assert_false(entry_exists(n, ".lock"));
  assert_false(entry_exists(n, ".sock"));
  assert_int_equal(th_count_fds(), fds);
  free(n);
}

static void test_pollable_becomes_readable_when_a_connection_waits(void **state) {
  (void)state;
  char *n = name_dup("poll");
  memport_service_t *s = NULL;
  th_assert_ok(memport_service_create(&s, n, 0));
  memport_os_handle_t h;
  th_assert_ok(memport_service_pollable(s, &h));
  struct pollfd pf = {.fd = h, .events = POLLIN};
  assert_int_equal(poll(&pf, 1, 0), 0);
  memport_port_t *c = NULL, *a = NULL;
  th_assert_ok(memport_port_connect(&c, n, 5 * SEC));
  assert_int_equal(poll(&pf, 1, 5000), 1);
  th_assert_ok(memport_service_accept(s, &a, MEMPORT_NOWAIT));
  th_assert_ok(send_text(c, "x"));
  assert_int_equal(recv_text(a, "x", NULL), 0);
  memport_port_close(a);
  memport_port_close(c);
  memport_service_close(s);
  free(n);
}

static int child_hold_service(void *arg) {
  struct sync *sy = arg;
  const char *name = getenv("MEMPORT_TEST_NAME");
  memport_service_t *s = NULL;
  int rc = memport_service_create(&s, name, 0);
  child_tell(sy, rc == 0 ? 'r' : 'f');
  if (rc != 0)
    return 1;
  child_await(sy, 30000); /* until the parent is done or kills us */
  memport_service_close(s);
  return 0;
}

static int child_hold_publication(void *arg) {
  struct sync *sy = arg;
  const char *name = getenv("MEMPORT_TEST_NAME");
  memport_region_t *r = NULL;
  memport_publication_t *pub = NULL;
  int rc = memport_region_create(&r, 4096, 0);
  if (rc == 0)
    rc = memport_region_publish(&pub, r, name, NULL, NULL);
  memport_region_close(r);
  child_tell(sy, rc == 0 ? 'r' : 'f');
  if (rc != 0)
    return 1;
  child_await(sy, 30000);
  memport_publication_close(pub);
  return 0;
}

/* Start a child holding `name` (a service, or a publication); returns its pid once it holds it. */
static pid_t start_holder(struct sync *sy, const char *name, bool publication) {
  sync_init(sy);
  setenv("MEMPORT_TEST_NAME", name, 1);
  pid_t pid = publication ? quiet_fork(child_hold_publication, sy, 30) : th_fork(child_hold_service, sy, 30);
  assert_true(pid > 0);
  assert_int_equal(parent_await(sy, 10000), 'r');
  return pid;
}

static void test_live_owner_in_another_process_gives_eexist(void **state) {
  (void)state;
  int fds = th_count_fds();
  char *n = name_dup("live");
  struct sync sy;
  pid_t pid = start_holder(&sy, n, false);
  memport_service_t *s = NULL;
  th_assert_rc(memport_service_create(&s, n, 0), MEMPORT_EEXIST);
  memport_region_t *r = NULL;
  memport_publication_t *pub = NULL;
  th_assert_ok(memport_region_create(&r, 4096, 0));
  th_assert_rc(memport_region_publish(&pub, r, n, NULL, NULL), MEMPORT_EEXIST);
  /* The refused creator touched nothing: the owner still answers. */
  memport_port_t *p = NULL;
  th_assert_ok(memport_port_connect(&p, n, 5 * SEC));
  memport_port_close(p);
  parent_tell(&sy, 'q');
  assert_int_equal(th_wait(pid, 20), 0);
  /* The owner closed: the name is free at once. */
  assert_false(entry_exists(n, ".lock"));
  th_assert_ok(memport_region_publish(&pub, r, n, NULL, NULL));
  th_assert_ok(memport_publication_close(pub));
  memport_region_close(r);
  sync_close(&sy);
  assert_int_equal(th_count_fds(), fds);
  free(n);
}

static void test_name_of_killed_owner_is_reclaimed(void **state) {
  (void)state;
  int fds = th_count_fds();
  char *n = name_dup("reclaim");
  struct sync sy;
  pid_t pid = start_holder(&sy, n, false);
  kill(pid, SIGKILL);
  assert_int_equal(th_wait(pid, 20), 128 + SIGKILL);
  /* The dead owner's files are still there, but the name is not live. */
  assert_true(entry_exists(n, ".lock"));
  assert_true(entry_exists(n, ".sock"));
  memport_port_t *p = NULL;
  th_assert_rc(memport_port_connect(&p, n, MEMPORT_NOWAIT), MEMPORT_ENOENT);
  th_assert_rc(memport_port_connect(&p, n, 50 * MS), MEMPORT_ETIMEDOUT);
  memport_service_t *s = NULL;
  th_assert_ok(memport_service_create(&s, n, 0));
  struct exchange_arg a = {n};
  pid_t c = th_fork(child_connect_and_exchange, &a, 20);
  th_assert_ok(memport_service_accept(s, &p, 10 * SEC));
  assert_int_equal(recv_text(p, "ping", NULL), 0);
  th_assert_ok(send_text(p, "pong"));
  assert_int_equal(th_wait(c, 20), 0);
  memport_port_close(p);
  memport_service_close(s);
  sync_close(&sy);
  assert_int_equal(th_count_fds(), fds);
  free(n);
}

struct race_arg {
  const char *name;
  int go_fd;
  atomic_int *holders; /* shared between the racers: how many hold the name right now */
};

static int child_race_create(void *arg) {
  struct race_arg *a = arg;
  if (read_byte(a->go_fd, 10000) < 0)
    return 20;
  memport_service_t *s = NULL;
  int rc = memport_service_create(&s, a->name, 0);
  if (rc == MEMPORT_EEXIST)
    return 1;
  if (rc != 0)
    return 21;
  int before = atomic_fetch_add(a->holders, 1);
  struct timespec ts = {0, 200 * 1000000}; /* hold it while the others try */
  nanosleep(&ts, NULL);
  atomic_fetch_sub(a->holders, 1);
  memport_service_close(s);
  return before == 0 ? 0 : 22;
}

static void test_concurrent_creators_never_share_a_name(void **state) {
  (void)state;
  char *n = name_dup("race");
  /* Make it a stale name first, so the racers also race the reclaim. */
  struct sync sy;
  pid_t holder = start_holder(&sy, n, false);
  kill(holder, SIGKILL);
  th_wait(holder, 20);
  sync_close(&sy);
  int go[2];
  assert_int_equal(pipe2(go, O_CLOEXEC), 0);
  atomic_int *holders = mmap(NULL, sizeof *holders, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  assert_true(holders != MAP_FAILED);
  atomic_init(holders, 0);
  struct race_arg a = {n, go[0], holders};
  enum { RACERS = 6 };
  pid_t pids[RACERS];
  for (int i = 0; i < RACERS; i++)
    pids[i] = th_fork(child_race_create, &a, 20);
  for (int i = 0; i < RACERS; i++)
    write_byte(go[1], 'g');
  int winners = 0, losers = 0;
  for (int i = 0; i < RACERS; i++) {
    int st = th_wait(pids[i], 20);
    if (st == 0)
      winners++;
    else if (st == 1)
      losers++;
    else
      fail_msg("racer exited with %d", st);
  }
  assert_true(winners >= 1);
  assert_int_equal(winners + losers, RACERS);
  munmap(holders, sizeof *holders);
  close(go[0]);
  close(go[1]);
  free(n);
}

static void test_connect_times_out_when_nobody_serves(void **state) {
  (void)state;
  int fds = th_count_fds();
  char *n = name_dup("nobody");
  memport_port_t *p = NULL;
  th_assert_rc(memport_port_connect(&p, n, MEMPORT_NOWAIT), MEMPORT_ENOENT);
  int64_t t0 = th_now_ns();
  th_assert_rc(memport_port_connect(&p, n, 100 * MS), MEMPORT_ETIMEDOUT);
  int64_t took = th_now_ns() - t0;
  assert_true(took >= 100 * MS);
  assert_true(took < 5 * SEC);
  memport_region_t *r = NULL;
  th_assert_rc(memport_region_open(&r, n, MEMPORT_NOWAIT), MEMPORT_ENOENT);
  th_assert_rc(memport_region_open(&r, n, 50 * MS), MEMPORT_ETIMEDOUT);
  assert_int_equal(th_count_fds(), fds);
  free(n);
}

static int child_create_late(void *arg) {
  const char *name = arg;
  struct timespec ts = {0, 200 * 1000000};
  nanosleep(&ts, NULL);
  memport_service_t *s = NULL;
  if (memport_service_create(&s, name, 0) != 0)
    return 1;
  memport_port_t *p = NULL;
  int rc = memport_service_accept(s, &p, 10 * SEC);
  if (rc == 0)
    rc = send_text(p, "late");
  memport_port_close(p);
  memport_service_close(s);
  return rc == 0 ? 0 : 2;
}

static void test_connect_waits_for_the_name_to_appear(void **state) {
  (void)state;
  char *n = name_dup("late");
  pid_t pid = th_fork(child_create_late, n, 20);
  memport_port_t *p = NULL;
  th_assert_ok(memport_port_connect(&p, n, 10 * SEC));
  assert_int_equal(recv_text(p, "late", NULL), 0);
  memport_port_close(p);
  assert_int_equal(th_wait(pid, 20), 0);
  free(n);
}

static void test_accept_times_out(void **state) {
  (void)state;
  int fds = th_count_fds();
  char *n = name_dup("acc");
  memport_service_t *s = NULL;
  memport_port_t *p = NULL;
  th_assert_ok(memport_service_create(&s, n, 0));
  th_assert_rc(memport_service_accept(s, &p, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
  int64_t t0 = th_now_ns();
  th_assert_rc(memport_service_accept(s, &p, 100 * MS), MEMPORT_ETIMEDOUT);
  int64_t took = th_now_ns() - t0;
  assert_true(took >= 100 * MS);
  assert_true(took < 5 * SEC);
  memport_service_close(s);
  assert_int_equal(th_count_fds(), fds);
  free(n);
}

/* ------------------------------------------------------------------------------------------ */
/* The uid policy (needs root: the child becomes another user).                                 */

#define OTHER_UID 65534

struct uid_arg {
  const char *name;
  struct sync *sy;
};

static int child_as_other_user(void *arg) {
  struct uid_arg *a = arg;
  if (setgroups(0, NULL) != 0 || setgid(OTHER_UID) != 0 || setuid(OTHER_UID) != 0)
    return 30;
  memport_port_t *p = NULL;
  int rc = memport_port_connect(&p, a->name, 5 * SEC);
  child_tell(a->sy, rc == 0 ? 'c' : 'f');
  if (rc != 0)
    return 31;
  /* Refused at accept: the server closes our connection, so recv sees the peer gone. Allowed:
   * the server says hello. */
  memport_msg_t *m = NULL;
  if (memport_msg_create(&m) != 0)
    return 32;
  rc = memport_port_recv(p, m, 10 * SEC);
  memport_msg_close(m);
  memport_port_close(p);
  if (rc == MEMPORT_EPEER)
    return 1;
  return rc == 0 ? 0 : 33;
}

static void test_other_uid_is_refused_at_accept_until_allowed(void **state) {
  (void)state;
  if (geteuid() != 0)
    skip();
  int fds = th_count_fds();
  char *n = name_dup("uid");
  memport_service_t *s = NULL;
  th_assert_ok(memport_service_create(&s, n, 0));

  /* Not allowed: the connection reaches the service but accept drops it. */
  struct sync sy;
  sync_init(&sy);
  struct uid_arg a = {n, &sy};
  pid_t pid = th_fork(child_as_other_user, &a, 30);
  assert_int_equal(parent_await(&sy, 10000), 'c');
  memport_port_t *p = NULL;
  th_assert_rc(memport_service_accept(s, &p, 300 * MS), MEMPORT_ETIMEDOUT);
  assert_int_equal(th_wait(pid, 20), 1); /* the child saw MEMPORT_EPEER */
  sync_close(&sy);

  /* Allowed now. */
  th_assert_ok(memport_service_allow_uid(s, OTHER_UID));
  sync_init(&sy);
  pid = th_fork(child_as_other_user, &a, 30);
  assert_int_equal(parent_await(&sy, 10000), 'c');
  th_assert_ok(memport_service_accept(s, &p, 10 * SEC));
  memport_cred_t peer;
  th_assert_ok(memport_port_peer(p, &peer));
  assert_int_equal(peer.uid, OTHER_UID);
  assert_int_equal(peer.pid, pid);
  th_assert_ok(send_text(p, "hello"));
  assert_int_equal(th_wait(pid, 20), 0);
  memport_port_close(p);
  sync_close(&sy);
  memport_service_close(s);
  assert_int_equal(th_count_fds(), fds);
  free(n);
}

/* A process that is not root binds the address where root's names are exported for other users. */
static int bind_squatter(const char *name) {
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  int n = snprintf(sa.sun_path + 1, sizeof sa.sun_path - 1, "memport/svc/%s", name);
  socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
  if (bind(fd, (struct sockaddr *)&sa, len) != 0 || listen(fd, 8) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static int child_squat_then_connect(void *arg) {
  struct uid_arg *a = arg;
  if (setgroups(0, NULL) != 0 || setgid(OTHER_UID) != 0 || setuid(OTHER_UID) != 0)
    return 30;
  int fd = bind_squatter(a->name);
  if (fd < 0)
    return 31;
  /* Our own squatter answers at the exported address, but it is not root: not a name. */
  memport_port_t *p = NULL;
  int rc = memport_port_connect(&p, a->name, 200 * MS);
  if (rc == 0) {
    memport_port_close(p);
    return 32;
  }
  if (rc != MEMPORT_ETIMEDOUT)
    return 33;
  /* Hold the address for the parent's create. */
  child_tell(a->sy, 's');
  child_await(a->sy, 10000);
  close(fd);
  return 0;
}

static void test_exported_address_held_by_non_root_is_not_trusted(void **state) {
  (void)state;
  if (geteuid() != 0)
    skip();
  char *n = name_dup("squat");
  struct sync sy;
  sync_init(&sy);
  struct uid_arg a = {n, &sy};
  pid_t pid = th_fork(child_squat_then_connect, &a, 30);
  assert_int_equal(parent_await(&sy, 10000), 's');
  /* Root cannot serve a name whose exported address somebody else holds. */
  memport_service_t *s = NULL;
  th_assert_rc(memport_service_create(&s, n, 0), MEMPORT_EEXIST);
  assert_false(entry_exists(n, ".lock"));
  assert_false(entry_exists(n, ".sock"));
  parent_tell(&sy, 'q');
  assert_int_equal(th_wait(pid, 20), 0);
  sync_close(&sy);
  free(n);
}

/* ------------------------------------------------------------------------------------------ */
/* The private directory.                                                                       */

static void make_tmpdir(char *buf, size_t cap) {
  xsnprintf(buf, cap, "/tmp/memport-test-XXXXXX");
  assert_non_null(mkdtemp(buf));
}

static void rm_tree_shallow(const char *dir) {
  /* Remove the name entries a test left and the directory itself (two levels at most). */
  char cmd[PATH_MAX + 32];
  xsnprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  int r = system(cmd);
  (void)r;
}

static void test_private_dir_is_0700_and_owned_by_us(void **state) {
  (void)state;
  char *n = name_dup("dir");
  memport_service_t *s = NULL;
  th_assert_ok(memport_service_create(&s, n, 0));
  struct stat st;
  assert_int_equal(lstat(g_dir, &st), 0);
  assert_true(S_ISDIR(st.st_mode));
  assert_int_equal(st.st_mode & 07777, 0700);
  assert_int_equal(st.st_uid, geteuid());
  char path[PATH_MAX];
  xsnprintf(path, sizeof path, "%s/%s.sock", g_dir, n);
  assert_int_equal(lstat(path, &st), 0);
  assert_true(S_ISSOCK(st.st_mode));
  memport_service_close(s);
  free(n);
}

/* Run create/connect/foreach with XDG_RUNTIME_DIR=xdg and expect `expected` from create. */
static int count_cb(const memport_name_info_t *info, void *arg) {
  (void)info;
  (*(int *)arg)++;
  return 0;
}

static void expect_refused_dir(const char *xdg) {
  int fds = th_count_fds();
  setenv("XDG_RUNTIME_DIR", xdg, 1);
  char *n = name_dup("bad");
  memport_service_t *s = NULL;
  th_assert_rc(memport_service_create(&s, n, 0), MEMPORT_EACCES);
  memport_port_t *p = NULL;
  th_assert_rc(memport_port_connect(&p, n, MEMPORT_NOWAIT), MEMPORT_EACCES);
  int count = 0;
  th_assert_rc(memport_name_foreach(count_cb, &count), MEMPORT_EACCES);
  setenv("XDG_RUNTIME_DIR", g_xdg, 1);
  assert_int_equal(th_count_fds(), fds);
  free(n);
}

static void test_symlinked_foreign_or_open_dir_is_refused(void **state) {
  (void)state;
  char xdg[PATH_MAX], target[PATH_MAX], path[PATH_MAX];

  /* memport is a symlink to a directory of ours with the right mode: still refused. */
  make_tmpdir(xdg, sizeof xdg);
  make_tmpdir(target, sizeof target);
  assert_int_equal(chmod(target, 0700), 0);
  xsnprintf(path, sizeof path, "%s/memport", xdg);
  assert_int_equal(symlink(target, path), 0);
  expect_refused_dir(xdg);
  rm_tree_shallow(xdg);
  rm_tree_shallow(target);

  /* memport is a directory open to others. */
  make_tmpdir(xdg, sizeof xdg);
  xsnprintf(path, sizeof path, "%s/memport", xdg);
  assert_int_equal(mkdir(path, 0700), 0);
  assert_int_equal(chmod(path, 0755), 0);
  expect_refused_dir(xdg);
  rm_tree_shallow(xdg);

  /* memport is a regular file. */
  make_tmpdir(xdg, sizeof xdg);
  xsnprintf(path, sizeof path, "%s/memport", xdg);
  int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  assert_true(fd >= 0);
  close(fd);
  expect_refused_dir(xdg);
  rm_tree_shallow(xdg);

  /* memport belongs to another user (root can arrange that). */
  if (geteuid() == 0) {
    make_tmpdir(xdg, sizeof xdg);
    xsnprintf(path, sizeof path, "%s/memport", xdg);
    assert_int_equal(mkdir(path, 0700), 0);
    assert_int_equal(chown(path, OTHER_UID, OTHER_UID), 0);
    expect_refused_dir(xdg);
    rm_tree_shallow(xdg);
  }
}

static void test_unusable_xdg_runtime_dir_falls_back_to_tmp(void **state) {
  (void)state;
  char fallback[PATH_MAX];
  xsnprintf(fallback, sizeof fallback, "/tmp/memport-%lu", (unsigned long)geteuid());
  const char *bad_xdg[3] = {"relative/dir", "/nonexistent-memport-test-dir", NULL};
  char foreign[PATH_MAX];
  if (geteuid() == 0) {
    make_tmpdir(foreign, sizeof foreign);
    assert_int_equal(chown(foreign, OTHER_UID, OTHER_UID), 0);
    bad_xdg[2] = foreign;
  }
  for (size_t i = 0; i < 3 && bad_xdg[i] != NULL; i++) {
    setenv("XDG_RUNTIME_DIR", bad_xdg[i], 1);
    char *n = name_dup("fallback");
    memport_service_t *s = NULL;
    int rc = memport_service_create(&s, n, 0);
    if (rc == MEMPORT_EACCES) {
      /* /tmp/memport-UID exists but is not a private directory of ours: not our test's to fix. */
      setenv("XDG_RUNTIME_DIR", g_xdg, 1);
      free(n);
      skip();
    }
    th_assert_ok(rc);
    char path[PATH_MAX];
    xsnprintf(path, sizeof path, "%s/%s.lock", fallback, n);
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    memport_service_close(s);
    assert_int_not_equal(lstat(path, &st), 0);
    free(n);
  }
  setenv("XDG_RUNTIME_DIR", g_xdg, 1);
  if (bad_xdg[2] != NULL)
    rm_tree_shallow(foreign);
}

/* ------------------------------------------------------------------------------------------ */
/* Named regions.                                                                              */

static atomic_int g_access_calls;
static atomic_int g_access_pid;
static atomic_int g_access_uid;

static int access_fixed(const memport_cred_t *peer, void *arg) {
  atomic_fetch_add(&g_access_calls, 1);
  atomic_store(&g_access_pid, (int)peer->pid);
  atomic_store(&g_access_uid, (int)peer->uid);
  return *(const int *)arg;
}

struct open_arg {
  const char *name;
  struct sync *sy;
};

/* READONLY peer: read-only handle, no writable mapping, sees the publisher's later writes. */
static int child_open_readonly(void *arg) {
  struct open_arg *a = arg;
  memport_region_t *r = NULL;
  if (memport_region_open(&r, a->name, 5 * SEC) != 0)
    return 40;
  if (memport_region_is_readonly(r) != 1)
    return 41;
  void *w = NULL;
  if (memport_region_map(r, 0, &w) != MEMPORT_EACCES)
    return 42;
  void *ro = NULL;
  if (memport_region_map(r, MEMPORT_MAP_READONLY, &ro) != 0)
    return 43;
  volatile const char *c = ro;
  if (strcmp((const char *)ro, "before") != 0)
    return 44;
  child_tell(a->sy, 'm');
  if (child_await(a->sy, 10000) != 'w')
    return 45;
  if (strcmp((const char *)c, "after") != 0)
    return 46;
  memport_unmap(ro);
  memport_region_close(r);
  return 0;
}

static int child_open_readwrite(void *arg) {
  struct open_arg *a = arg;
  memport_region_t *r = NULL;
  if (memport_region_open(&r, a->name, 5 * SEC) != 0)
    return 50;
  if (memport_region_is_readonly(r) != 0)
    return 51;
  void *w = NULL;
  if (memport_region_map(r, 0, &w) != 0)
    return 52;
  if (strcmp((const char *)w, "before") != 0)
    return 53;
  strcpy((char *)w, "from the child");
  memport_unmap(w);
  memport_region_close(r);
  return 0;
}

static int child_open_expect(void *arg) {
  struct open_arg *a = arg;
  memport_region_t *r = NULL;
  int rc = memport_region_open(&r, a->name, 5 * SEC);
  memport_region_close(r);
  return rc == MEMPORT_EPERM ? 0 : 60;
}

struct published {
  char *name;
  memport_region_t *region;
  char *map;
  memport_publication_t *pub;
};

static void publish(struct published *p, const char *prefix, memport_access_fn fn, void *arg) {
  p->name = name_dup(prefix);
  th_assert_ok(memport_region_create(&p->region, 3 * memport_page_size(), 0));
  void *m = NULL;
  th_assert_ok(memport_region_map(p->region, 0, &m));
  p->map = m;
  strcpy(p->map, "before");
  th_assert_ok(memport_region_publish(&p->pub, p->region, p->name, fn, arg));
}

static void unpublish(struct published *p) {
  th_assert_ok(memport_publication_close(p->pub));
  memport_unmap(p->map);
  memport_region_close(p->region);
  free(p->name);
}

static void test_readonly_peer_cannot_map_writable_and_sees_writes(void **state) {
  (void)state;
  int fds = th_count_fds();
  struct published p;
  publish(&p, "ro", NULL, NULL); /* default policy: read-only for the same uid */
  /* The publication holds its own handle: closing ours changes nothing. */
  struct sync sy;
  sync_init(&sy);
  struct open_arg a = {p.name, &sy};
  pid_t pid = quiet_fork(child_open_readonly, &a, 30);
  assert_int_equal(parent_await(&sy, 10000), 'm');
  strcpy(p.map, "after");
  parent_tell(&sy, 'w');
  assert_int_equal(quiet_wait(pid, 20), 0);
  sync_close(&sy);
  unpublish(&p);
  assert_int_equal(th_count_fds(), fds);
}

static void test_readwrite_peer_writes_and_publisher_sees_it(void **state) {
  (void)state;
  int fds = th_count_fds();
  int level = MEMPORT_ACCESS_READWRITE;
  atomic_store(&g_access_calls, 0);
  struct published p;
  publish(&p, "rw", access_fixed, &level);
  struct open_arg a = {p.name, NULL};
  pid_t pid = quiet_fork(child_open_readwrite, &a, 30);
  assert_int_equal(quiet_wait(pid, 20), 0);
  assert_string_equal(p.map, "from the child");
  assert_int_equal(atomic_load(&g_access_calls), 1);
  assert_int_equal(atomic_load(&g_access_pid), pid);
  assert_int_equal(atomic_load(&g_access_uid), (int)geteuid());
  unpublish(&p);
  assert_int_equal(th_count_fds(), fds);
}

static void test_readonly_grant_of_a_sealed_region_stays_readonly(void **state) {
  (void)state;
  int level = MEMPORT_ACCESS_READWRITE; /* asks for more than the region can give */
  memport_region_t *w = NULL, *ro = NULL;
  th_assert_ok(memport_region_create(&w, 4096, 0));
  th_assert_ok(memport_region_readonly(w, &ro));
  char *n = name_dup("sealed");
  memport_publication_t *pub = NULL;
  th_assert_ok(memport_region_publish(&pub, ro, n, access_fixed, &level));
  memport_region_t *got = NULL;
  th_assert_ok(memport_region_open(&got, n, 5 * SEC));
  assert_int_equal(memport_region_is_readonly(got), 1);
  void *m = NULL;
  th_assert_rc(memport_region_map(got, 0, &m), MEMPORT_EACCES);
  memport_region_close(got);
  memport_publication_close(pub);
  memport_region_close(ro);
  memport_region_close(w);
  free(n);
}

static void test_denied_peer_gets_eperm(void **state) {
  (void)state;
  int fds = th_count_fds();
  int level = MEMPORT_ACCESS_DENY;
  struct published p;
  publish(&p, "deny", access_fixed, &level);
  struct open_arg a = {p.name, NULL};
  assert_int_equal(quiet_run(child_open_expect, &a, 30), 0);
  /* In this process too (the thread serves its own process like any other). */
  memport_region_t *r = NULL;
  th_assert_rc(memport_region_open(&r, p.name, 5 * SEC), MEMPORT_EPERM);
  /* An access function returning nonsense denies. */
  level = 42;
  th_assert_rc(memport_region_open(&r, p.name, 5 * SEC), MEMPORT_EPERM);
  unpublish(&p);
  assert_int_equal(th_count_fds(), fds);
}

static void test_name_disappears_after_publication_close(void **state) {
  (void)state;
  int fds = th_count_fds();
  struct published p;
  publish(&p, "gone", NULL, NULL);
  memport_region_t *r = NULL;
  th_assert_ok(memport_region_open(&r, p.name, 5 * SEC));
  memport_region_close(r);
  char *n = strdup(p.name);
  int64_t t0 = th_now_ns();
  th_assert_ok(memport_publication_close(p.pub));
  assert_true(th_now_ns() - t0 < 2 * SEC); /* prompt: the thread is woken, not waited out */
  p.pub = NULL;
  th_assert_rc(memport_region_open(&r, n, MEMPORT_NOWAIT), MEMPORT_ENOENT);
  assert_false(entry_exists(n, ".lock"));
  assert_false(entry_exists(n, ".sock"));
  /* and can be published again */
  memport_publication_t *again = NULL;
  th_assert_ok(memport_region_publish(&again, p.region, n, NULL, NULL));
  th_assert_ok(memport_publication_close(again));
  memport_unmap(p.map);
  memport_region_close(p.region);
  free(p.name);
  free(n);
  assert_int_equal(th_count_fds(), fds);
}

static void test_kinds_are_checked(void **state) {
  (void)state;
  char *sname = name_dup("kind-svc");
  memport_service_t *s = NULL;
  th_assert_ok(memport_service_create(&s, sname, 0));
  struct published p;
  publish(&p, "kind-reg", NULL, NULL);
  memport_port_t *port = NULL;
  th_assert_rc(memport_port_connect(&port, p.name, 1 * SEC), MEMPORT_EPROTO);
  memport_region_t *r = NULL;
  th_assert_rc(memport_region_open(&r, sname, 1 * SEC), MEMPORT_EPROTO);
  /* One namespace: a service name cannot be published, nor a published name served. */
  memport_publication_t *pub = NULL;
  th_assert_rc(memport_region_publish(&pub, p.region, sname, NULL, NULL), MEMPORT_EEXIST);
  memport_service_t *s2 = NULL;
  th_assert_rc(memport_service_create(&s2, p.name, 0), MEMPORT_EEXIST);
  unpublish(&p);
  memport_service_close(s);
  free(sname);
}

/* Clients that connect and never read cannot stall the publication. */
static void test_clients_that_never_read_do_not_stall_the_publisher(void **state) {
  (void)state;
  int fds = th_count_fds();
  struct published p;
  publish(&p, "stall", NULL, NULL);
  enum { N = 16 };
  int raw[N];
  for (int i = 0; i < N; i++) {
    raw[i] = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    assert_true(raw[i] >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    xsnprintf(sa.sun_path, sizeof sa.sun_path, "%s/%s.sock", g_dir, p.name);
    assert_int_equal(connect(raw[i], (struct sockaddr *)&sa, sizeof sa), 0);
  }
  memport_region_t *r = NULL;
  th_assert_ok(memport_region_open(&r, p.name, 5 * SEC));
  memport_region_close(r);
  for (int i = 0; i < N; i++)
    close(raw[i]);
  unpublish(&p);
  assert_int_equal(th_count_fds(), fds);
}

static int child_close_inherited_publication(void *arg) {
  memport_publication_t *pub = arg;
  return memport_publication_close(pub) == 0 ? 0 : 1;
}

static void test_forked_child_closing_a_publication_leaves_the_parents_name(void **state) {
  (void)state;
  struct published p;
  publish(&p, "forkpub", NULL, NULL);
  assert_int_equal(quiet_run(child_close_inherited_publication, p.pub, 20), 0);
  memport_region_t *r = NULL;
  th_assert_ok(memport_region_open(&r, p.name, 5 * SEC));
  memport_region_close(r);
  unpublish(&p);
}

/* ------------------------------------------------------------------------------------------ */
/* Listing.                                                                                    */

struct seen {
  const char *want[3];
  memport_name_info_t got[3];
  int found[3];
  int total;
};

static int collect_cb(const memport_name_info_t *info, void *arg) {
  struct seen *s = arg;
  s->total++;
  for (int i = 0; i < 3; i++)
    if (s->want[i] != NULL && strcmp(info->name, s->want[i]) == 0) {
      s->found[i]++;
      s->got[i] = *info;
    }
  return 0;
}

static int stop_cb(const memport_name_info_t *info, void *arg) {
  (void)info;
  (*(int *)arg)++;
  return 77;
}

/* Hold a lock file named NAME.lock with `content`, locked as an owner would. */
static int plant_lock_file(const char *name, const char *content) {
  char path[PATH_MAX];
  xsnprintf(path, sizeof path, "%s/%s.lock", g_dir, name);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
  assert_int_equal(fcntl(fd, F_OFD_SETLK, &fl), 0);
  return fd;
}

static void test_foreach_lists_live_names_with_owner_and_kind(void **state) {
  (void)state;
  int fds = th_count_fds();
  char *svc_name = name_dup("ls-svc");
  char *reg_name = name_dup("ls-reg");
  char *dead_name = name_dup("ls-dead");
  memport_service_t *s = NULL;
  th_assert_ok(memport_service_create(&s, svc_name, 0));
  struct sync reg_sy, dead_sy;
  pid_t reg_pid = start_holder(&reg_sy, reg_name, true);
  pid_t dead_pid = start_holder(&dead_sy, dead_name, false);
  kill(dead_pid, SIGKILL);
  assert_int_equal(th_wait(dead_pid, 20), 128 + SIGKILL);
  /* Garbage that looks like names: a locked file with junk, one with a bad kind, one unlocked. */
  char *junk1 = name_dup("ls-junk");
  char *junk2 = name_dup("ls-junk");
  int j1 = plant_lock_file(junk1, "garbage\n");
  char bad[128];
  xsnprintf(bad, sizeof bad, "memport-name 1 kind=7 pid=%ld uid=0 gid=0\n", (long)getpid());
  int j2 = plant_lock_file(junk2, bad);

  struct seen seen = {.want = {svc_name, reg_name, dead_name}};
  th_assert_ok(memport_name_foreach(collect_cb, &seen));
  assert_int_equal(seen.found[0], 1);
  assert_int_equal(seen.got[0].kind, MEMPORT_NAME_SERVICE);
  assert_int_equal(seen.got[0].owner.pid, getpid());
  assert_int_equal(seen.got[0].owner.uid, geteuid());
  assert_int_equal(seen.got[0].owner.gid, getegid());
  assert_int_equal(seen.found[1], 1);
  assert_int_equal(seen.got[1].kind, MEMPORT_NAME_REGION);
  assert_int_equal(seen.got[1].owner.pid, reg_pid);
  assert_int_equal(seen.found[2], 0); /* dead */

  struct seen junk = {.want = {junk1, junk2, NULL}};
  th_assert_ok(memport_name_foreach(collect_cb, &junk));
  assert_int_equal(junk.found[0], 0);
  assert_int_equal(junk.found[1], 0);

  /* A non-zero return stops the walk and is returned. */
  int calls = 0;
  th_assert_rc(memport_name_foreach(stop_cb, &calls), 77);
  assert_int_equal(calls, 1);

  close(j1);
  close(j2);
  parent_tell(&reg_sy, 'q');
  assert_int_equal(quiet_wait(reg_pid, 20), 0);
  memport_service_close(s);
  struct seen after = {.want = {svc_name, reg_name, NULL}};
  th_assert_ok(memport_name_foreach(collect_cb, &after));
  assert_int_equal(after.found[0], 0);
  assert_int_equal(after.found[1], 0);
  sync_close(&reg_sy);
  sync_close(&dead_sy);
  assert_int_equal(th_count_fds(), fds);
  free(svc_name);
  free(reg_name);
  free(dead_name);
  free(junk1);
  free(junk2);
}

/* ------------------------------------------------------------------------------------------ */
/* memport-ls.                                                                                 */

static bool find_memport_ls(char *out, size_t cap) {
  const char *top = getenv("top_builddir");
  if (top != NULL) {
    xsnprintf(out, cap, "%s/tools/memport-ls", top);
    if (access(out, X_OK) == 0)
      return true;
  }
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0)
    return false;
  exe[n] = '\0';
  for (int up = 0; up < 3; up++) {
    char *slash = strrchr(exe, '/');
    if (slash == NULL)
      return false;
    *slash = '\0';
    xsnprintf(out, cap, "%s/tools/memport-ls", exe);
    if (access(out, X_OK) == 0)
      return true;
  }
  return false;
}

static void test_memport_ls_prints_live_names(void **state) {
  (void)state;
  char tool[PATH_MAX];
  if (!find_memport_ls(tool, sizeof tool))
    skip();
  char *n = name_dup("ls-tool");
  memport_service_t *s = NULL;
  th_assert_ok(memport_service_create(&s, n, 0));
  char cmd[PATH_MAX + 64];
  xsnprintf(cmd, sizeof cmd, "'%s'", tool);
  FILE *f = popen(cmd, "r");
  assert_non_null(f);
  char line[512];
  bool header = false, found = false;
  while (fgets(line, sizeof line, f) != NULL) {
    char nm[128], kind[32];
    long pid;
    unsigned long uid;
    if (strncmp(line, "NAME", 4) == 0 && strstr(line, "KIND") && strstr(line, "PID") && strstr(line, "UID"))
      header = true;
    else if (sscanf(line, "%127s %31s %ld %lu", nm, kind, &pid, &uid) == 4 && strcmp(nm, n) == 0) {
      found = strcmp(kind, "service") == 0 && pid == getpid() && uid == geteuid();
    }
  }
  assert_int_equal(pclose(f), 0);
  assert_true(header);
  assert_true(found);
  xsnprintf(cmd, sizeof cmd, "'%s' -h >/dev/null", tool);
  assert_int_equal(system(cmd), 0);
  xsnprintf(cmd, sizeof cmd, "'%s' --bogus >/dev/null 2>&1", tool);
  int st = system(cmd);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 2);
  memport_service_close(s);
  free(n);
}

/* ------------------------------------------------------------------------------------------ */

/* ------------------------------------------------------------------------------------------ */
/* Sweeping what dead owners left (memport_name_sweep, service creation, memport-ls).         */

#define SWEEP_DEAD 4

/* Start `n` holders of the names dead[i] (all of them first: a creation sweeps the dead), then
 * kill them all with SIGKILL: their entries stay. */
static void make_dead_owners(char *dead[], int n) {
  struct sync sy[SWEEP_DEAD];
  pid_t pid[SWEEP_DEAD];
  assert_true(n <= SWEEP_DEAD);
  for (int i = 0; i < n; i++)
    pid[i] = start_holder(&sy[i], dead[i], false);
  for (int i = 0; i < n; i++) {
    kill(pid[i], SIGKILL);
    assert_int_equal(th_wait(pid[i], 20), 128 + SIGKILL);
    sync_close(&sy[i]);
    assert_true(entry_exists(dead[i], ".lock"));
    assert_true(entry_exists(dead[i], ".sock"));
  }
}

/* A process that claimed `name` (the claim byte of NAME.lock) and has not written its record: an
 * owner still starting. Returns the descriptor that holds the lock. */
static int start_claim(const char *name) {
  char path[PATH_MAX];
  xsnprintf(path, sizeof path, "%s/%s.lock", g_dir, name);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  assert_true(fd >= 0);
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
  assert_int_equal(fcntl(fd, F_OFD_SETLK, &fl), 0);
  return fd;
}

static void test_sweep_removes_dead_owners_entries_and_never_a_live_one(void **state) {
  (void)state;
  int fds = th_count_fds();
  char *live = name_dup("sw-live"), *starting = name_dup("sw-start"), *fresh = name_dup("sw-new");
  char *dead[SWEEP_DEAD];
  for (int i = 0; i < SWEEP_DEAD; i++)
    dead[i] = name_dup("sw-dead");
  struct sync sy;
  pid_t holder = start_holder(&sy, live, false);
  int claim_fd = start_claim(starting);
  make_dead_owners(dead, SWEEP_DEAD);

  /* Creating another service clears the dead owners' entries, and only theirs. */
  memport_service_t *s = NULL;
  th_assert_ok(memport_service_create(&s, fresh, 0));
  for (int i = 0; i < SWEEP_DEAD; i++) {
    assert_false(entry_exists(dead[i], ".lock"));
    assert_false(entry_exists(dead[i], ".sock"));
  }
  assert_true(entry_exists(live, ".lock"));
  assert_true(entry_exists(live, ".sock"));
  assert_true(entry_exists(starting, ".lock"));
  assert_true(entry_exists(fresh, ".lock"));
  memport_port_t *p = NULL;
  th_assert_ok(memport_port_connect(&p, live, 5 * SEC)); /* the live owner still answers */
  memport_port_close(p);

  /* memport_name_sweep: the same, on demand; a second call finds nothing left. */
  make_dead_owners(dead, SWEEP_DEAD);
  assert_int_equal(memport_name_sweep(0), SWEEP_DEAD);
  for (int i = 0; i < SWEEP_DEAD; i++)
    assert_false(entry_exists(dead[i], ".lock"));
  assert_int_equal(memport_name_sweep(0), 0);
  assert_true(entry_exists(live, ".lock"));
  assert_true(entry_exists(starting, ".lock"));
  assert_true(entry_exists(fresh, ".lock"));
  /* A bound of one looks at one name at most. */
  make_dead_owners(dead, 2);
  int one = memport_name_sweep(1);
  assert_true(one == 0 || one == 1);
  assert_int_equal(memport_name_sweep(0), 2 - one);

  /* The owner that was starting died: its file goes too. */
  close(claim_fd);
  assert_int_equal(memport_name_sweep(0), 1);
  assert_false(entry_exists(starting, ".lock"));

  parent_tell(&sy, 'q');
  assert_int_equal(th_wait(holder, 20), 0);
  sync_close(&sy);
  memport_service_close(s);
  assert_int_equal(th_count_fds(), fds);
  for (int i = 0; i < SWEEP_DEAD; i++)
    free(dead[i]);
  free(live);
  free(starting);
  free(fresh);
}

static void test_memport_ls_sweeps_dead_owners(void **state) {
  (void)state;
  char tool[PATH_MAX];
  if (!find_memport_ls(tool, sizeof tool))
    skip();
  char *dead[SWEEP_DEAD];
  for (int i = 0; i < SWEEP_DEAD; i++)
    dead[i] = name_dup("ls-dead");
  char *live = name_dup("ls-live");
  memport_service_t *s = NULL;
  th_assert_ok(memport_service_create(&s, live, 0));
  make_dead_owners(dead, SWEEP_DEAD);
  char cmd[PATH_MAX + 64];
  xsnprintf(cmd, sizeof cmd, "'%s' >/dev/null", tool);
  assert_int_equal(system(cmd), 0);
  for (int i = 0; i < SWEEP_DEAD; i++) {
    assert_false(entry_exists(dead[i], ".lock"));
    assert_false(entry_exists(dead[i], ".sock"));
    free(dead[i]);
  }
  assert_true(entry_exists(live, ".lock"));
  assert_true(entry_exists(live, ".sock"));
  memport_service_close(s);
  free(live);
}

/* Sweeps in another process while this one creates and closes one name over and over: every
 * creation succeeds (a sweeper holding a dead file's lock is waited out, never taken for an owner). */
static int child_sweep_loop(void *arg) {
  struct sync *sy = arg;
  child_tell(sy, 'r');
  while (read_byte(sy->down[0], 0) < 0)
    (void)memport_name_sweep(0);
  return 0;
}

static char g_race_name[MEMPORT_NAME_MAX + 1]; /* static: the forked children see it, no leak */

static void test_sweeps_never_make_a_create_fail(void **state) {
  (void)state;
  xsnprintf(g_race_name, sizeof g_race_name, "%s", th_unique_name("sw-race"));
  const char *n = g_race_name;
  struct sync sy;
  sync_init(&sy);
  pid_t pid = th_fork(child_sweep_loop, &sy, 300);
  assert_int_equal(parent_await(&sy, 10000), 'r');
  int rounds = th_under_valgrind() ? 50 : 200; /* a fork under valgrind takes tens of ms */
  for (int i = 0; i < rounds; i++) {
    /* A dead owner: a child that serves the name and exits without closing it. */
    pid_t c = fork();
    assert_true(c >= 0);
    if (c == 0) {
      memport_service_t *cs = NULL;
      _exit(memport_service_create(&cs, n, 0) == 0 ? 0 : 1);
    }
    assert_int_equal(th_wait(c, 20), 0);
    /* Its name is reclaimed while the other process sweeps it. */
    memport_service_t *s = NULL;
    th_assert_ok(memport_service_create(&s, n, 0));
    memport_service_close(s);
  }
  parent_tell(&sy, 'q');
  assert_int_equal(th_wait(pid, 20), 0);
  sync_close(&sy);
}

/* ------------------------------------------------------------------------------------------ */
/* The portable registry (lib/registry.c), the same on Linux and Darwin.                      */

static void read_file(const char *path, char *buf, size_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  assert_true(fd >= 0);
  ssize_t n = read(fd, buf, cap - 1);
  assert_true(n >= 0);
  buf[n] = '\0';
  close(fd);
}

/* The on-disk record is one exact line, for a service and for a publication. */
static void test_lock_file_holds_the_portable_record(void **state) {
  (void)state;
  char *n = name_dup("record");
  char *r = name_dup("record-reg");
  memport_service_t *s = NULL;
  th_assert_ok(memport_service_create(&s, n, 0));
  memport_region_t *region = NULL;
  th_assert_ok(memport_region_create(&region, memport_page_size(), 0));
  memport_publication_t *pub = NULL;
  th_assert_ok(memport_region_publish(&pub, region, r, NULL, NULL));
  char path[PATH_MAX], got[256], want[256];
  xsnprintf(path, sizeof path, "%s/%s.lock", g_dir, n);
  read_file(path, got, sizeof got);
  xsnprintf(want, sizeof want, "memport-name 1 kind=1 pid=%ld uid=%lu gid=%lu\n", (long)getpid(),
            (unsigned long)geteuid(), (unsigned long)getegid());
  assert_string_equal(got, want);
  xsnprintf(path, sizeof path, "%s/%s.lock", g_dir, r);
  read_file(path, got, sizeof got);
  xsnprintf(want, sizeof want, "memport-name 1 kind=2 pid=%ld uid=%lu gid=%lu\n", (long)getpid(),
            (unsigned long)geteuid(), (unsigned long)getegid());
  assert_string_equal(got, want);
  memport_publication_close(pub);
  memport_region_close(region);
  memport_service_close(s);
  assert_false(entry_exists(n, ".lock"));
  assert_false(entry_exists(r, ".lock"));
  free(n);
  free(r);
}

struct lookers_arg {
  const char *name;
  int stop_fd;
  int started_fd;
};

/* Look at the name as hard as possible (listing, connecting without waiting) until told to stop. */
static int child_look_until_stopped(void *arg) {
  struct lookers_arg *a = arg;
  int count = 0;
  write_byte(a->started_fd, 1);
  for (;;) {
    struct pollfd p = {.fd = a->stop_fd, .events = POLLIN};
    if (poll(&p, 1, 0) != 0)
      return 0;
    if (memport_name_foreach(count_cb, &count) != 0)
      return 1;
    memport_port_t *port = NULL;
    int rc = memport_port_connect(&port, a->name, MEMPORT_NOWAIT);
    if (rc == 0)
      memport_port_close(port);
    else if (rc != MEMPORT_ENOENT && rc != MEMPORT_ETIMEDOUT)
      return 2;
  }
}

/* Liveness is tested without taking the lock: processes that list and look up a name never make
 * its creation fail (a probe that took the lock, even shared, would give MEMPORT_EEXIST). */
static void test_lookups_never_make_a_create_fail(void **state) {
  (void)state;
  int fds = th_count_fds();
  char *n = name_dup("probe");
  struct sync sy;
  sync_init(&sy);
  struct lookers_arg a = {n, sy.down[0], sy.up[1]};
  pid_t lookers[2];
  for (int i = 0; i < 2; i++)
    lookers[i] = th_fork(child_look_until_stopped, &a, 60);
  for (int i = 0; i < 2; i++)
    assert_int_equal(parent_await(&sy, 10000), 1);
  int eexist = 0;
  for (int i = 0; i < 2000; i++) {
    memport_service_t *s = NULL;
    int rc = memport_service_create(&s, n, 0);
    if (rc == MEMPORT_EEXIST)
      eexist++;
    else
      th_assert_ok(rc);
    memport_service_close(s);
  }
  parent_tell(&sy, 1);
  for (int i = 0; i < 2; i++)
    assert_int_equal(th_wait(lookers[i], 30), 0);
  assert_int_equal(eexist, 0);
  sync_close(&sy);
  assert_false(entry_exists(n, ".lock"));
  assert_int_equal(th_count_fds(), fds);
  free(n);
}

static int child_fifo_lookups(void *arg) {
  const char *n = arg;
  alarm(10); /* an open that blocked on the FIFO would hang here: SIGALRM fails the child */
  int count = 0;
  if (memport_name_foreach(count_cb, &count) != 0 || count != 0)
    return 1;
  memport_port_t *p = NULL;
  if (memport_port_connect(&p, n, MEMPORT_NOWAIT) != MEMPORT_ENOENT)
    return 2;
  memport_service_t *s = NULL;
  if (memport_service_create(&s, n, 0) != MEMPORT_EACCES)
    return 3;
  return 0;
}

/* Something other than a regular file where a lock file should be (here a FIFO, which a blocking
 * open would wait on forever) is not a name: never listed, never served, never waited on. */
static void test_a_fifo_in_place_of_a_lock_file_blocks_nothing(void **state) {
  (void)state;
  char *n = name_dup("fifo");
  char path[PATH_MAX];
  xsnprintf(path, sizeof path, "%s/%s.lock", g_dir, n);
  assert_int_equal(mkfifo(path, 0600), 0);
  assert_int_equal(th_run_child(child_fifo_lookups, n, 20), 0);
  assert_int_equal(unlink(path), 0);
  free(n);
}

/* Something other than a lock file in its place, which open itself refuses for writing (a
 * directory: EISDIR; a socket: ENXIO), is MEMPORT_EACCES as memport_service_create(3) says, like a
 * FIFO or a symbolic link, never a raw errno; lookups skip it. */
static void test_a_directory_or_socket_in_place_of_a_lock_file_is_eacces(void **state) {
  (void)state;
  int fds = th_count_fds();
  char *n = name_dup("notlock");
  char path[PATH_MAX];
  xsnprintf(path, sizeof path, "%s/%s.lock", g_dir, n);
  memport_service_t *s = NULL;
  memport_port_t *p = NULL;
  int count = 0;

  assert_int_equal(mkdir(path, 0700), 0);
  th_assert_rc(memport_service_create(&s, n, 0), MEMPORT_EACCES);
  th_assert_rc(memport_port_connect(&p, n, MEMPORT_NOWAIT), MEMPORT_ENOENT);
  th_assert_ok(memport_name_foreach(count_cb, &count));
  assert_int_equal(rmdir(path), 0);

  int sk = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(sk >= 0);
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  assert_true(strlen(path) < sizeof sa.sun_path);
  strcpy(sa.sun_path, path);
  assert_int_equal(bind(sk, (struct sockaddr *)&sa, sizeof sa), 0);
  th_assert_rc(memport_service_create(&s, n, 0), MEMPORT_EACCES);
  th_assert_rc(memport_port_connect(&p, n, MEMPORT_NOWAIT), MEMPORT_ENOENT);
  close(sk);
  assert_int_equal(unlink(path), 0);

  memport_region_t *r = NULL;
  th_assert_ok(memport_region_create(&r, memport_page_size(), 0));
  memport_publication_t *pub = NULL;
  assert_int_equal(mkdir(path, 0700), 0);
  th_assert_rc(memport_region_publish(&pub, r, n, NULL, NULL), MEMPORT_EACCES);
  assert_int_equal(rmdir(path), 0);
  memport_region_close(r);
  assert_int_equal(count, 0);
  assert_int_equal(th_count_fds(), fds);
  free(n);
}

struct stale_arg {
  const char *name;
  int stop_fd;
  int started_fd;
};

static int region_kind_of_cb(const memport_name_info_t *info, void *arg) {
  const struct stale_arg *a = arg;
  return strcmp(info->name, a->name) == 0 && info->kind != MEMPORT_NAME_SERVICE;
}

/* Look at the name until told to stop; fail if it ever shows the dead owner's kind. */
static int child_never_sees_the_dead_record(void *arg) {
  struct stale_arg *a = arg;
  write_byte(a->started_fd, 1);
  for (;;) {
    struct pollfd p = {.fd = a->stop_fd, .events = POLLIN};
    if (poll(&p, 1, 0) != 0)
      return 0;
    int rc = memport_name_foreach(region_kind_of_cb, a);
    if (rc != 0)
      return rc == 1 ? 1 : 2;
    memport_port_t *port = NULL;
    rc = memport_port_connect(&port, a->name, MEMPORT_NOWAIT);
    if (rc == 0)
      memport_port_close(port);
    else if (rc == MEMPORT_EPROTO)
      return 3; /* took the dead publication's record for the live service's */
    else if (rc != MEMPORT_ENOENT && rc != MEMPORT_ETIMEDOUT)
      return 4;
  }
}

/* A creator that reclaims a dead owner's lock file holds the lock before it has written its own
 * record: the dead owner's record (here a publication's) must be gone by then, or lookups take it
 * for the new owner's (a connect for the service fails with MEMPORT_EPROTO, a listing shows a
 * region). Statistical: without the truncation at claim, lookers see it in most runs. */
static void test_a_reclaimed_name_never_shows_the_dead_owners_record(void **state) {
  (void)state;
  int fds = th_count_fds();
  char *n = name_dup("stale");
  char path[PATH_MAX], dead[128];
  xsnprintf(path, sizeof path, "%s/%s.lock", g_dir, n);
  /* A dead publication's record, longer than ours would be (a short one is overwritten whole). */
  xsnprintf(dead, sizeof dead, "memport-name 1 kind=2 pid=2147483646 uid=%lu gid=%lu\n", (unsigned long)geteuid(),
            (unsigned long)getegid());
  struct sync sy;
  sync_init(&sy);
  struct stale_arg a = {n, sy.down[0], sy.up[1]};
  pid_t lookers[2];
  for (int i = 0; i < 2; i++)
    lookers[i] = th_fork(child_never_sees_the_dead_record, &a, 60);
  for (int i = 0; i < 2; i++)
    assert_int_equal(parent_await(&sy, 10000), 1);
  for (int i = 0; i < 3000; i++) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, dead, strlen(dead)), (ssize_t)strlen(dead));
    close(fd); /* nobody holds its lock: a dead owner's file */
    memport_service_t *s = NULL;
    th_assert_ok(memport_service_create(&s, n, 0));
    memport_service_close(s);
  }
  parent_tell(&sy, 1);
  for (int i = 0; i < 2; i++)
    assert_int_equal(th_wait(lookers[i], 30), 0);
  sync_close(&sy);
  assert_false(entry_exists(n, ".lock"));
  assert_int_equal(th_count_fds(), fds);
  free(n);
}

static void test_no_descriptor_leaks_across_everything(void **state) {
  (void)state;
  /* Each test above checks its own count; this one repeats a mixed cycle many times. */
  int fds = th_count_fds();
  for (int i = 0; i < 20; i++) {
    char *n = name_dup("cycle");
    memport_service_t *s = NULL;
    memport_port_t *c = NULL, *a = NULL;
    th_assert_ok(memport_service_create(&s, n, 0));
    th_assert_ok(memport_port_connect(&c, n, 5 * SEC));
    th_assert_ok(memport_service_accept(s, &a, 5 * SEC));
    memport_port_close(c);
    memport_port_close(a);
    memport_service_close(s);
    memport_region_t *r = NULL, *o = NULL;
    memport_publication_t *pub = NULL;
    th_assert_ok(memport_region_create(&r, 4096, 0));
    th_assert_ok(memport_region_publish(&pub, r, n, NULL, NULL));
    th_assert_ok(memport_region_open(&o, n, 5 * SEC));
    memport_region_close(o);
    memport_publication_close(pub);
    memport_region_close(r);
    free(n);
  }
  assert_int_equal(th_count_fds(), fds);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  make_tmpdir(g_xdg, sizeof g_xdg);
  xsnprintf(g_dir, sizeof g_dir, "%s/memport", g_xdg);
  setenv("XDG_RUNTIME_DIR", g_xdg, 1);

  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_name_syntax_is_checked_by_every_entry_point),
      cmocka_unit_test(test_null_arguments_and_flags_are_einval),
      cmocka_unit_test(test_service_connect_and_exchange_across_fork),
      cmocka_unit_test(test_pollable_becomes_readable_when_a_connection_waits),
      cmocka_unit_test(test_live_owner_in_another_process_gives_eexist),
      cmocka_unit_test(test_name_of_killed_owner_is_reclaimed),
      cmocka_unit_test(test_concurrent_creators_never_share_a_name),
      cmocka_unit_test(test_connect_times_out_when_nobody_serves),
      cmocka_unit_test(test_connect_waits_for_the_name_to_appear),
      cmocka_unit_test(test_accept_times_out),
      cmocka_unit_test(test_other_uid_is_refused_at_accept_until_allowed),
      cmocka_unit_test(test_exported_address_held_by_non_root_is_not_trusted),
      cmocka_unit_test(test_private_dir_is_0700_and_owned_by_us),
      cmocka_unit_test(test_symlinked_foreign_or_open_dir_is_refused),
      cmocka_unit_test(test_unusable_xdg_runtime_dir_falls_back_to_tmp),
      cmocka_unit_test(test_readonly_peer_cannot_map_writable_and_sees_writes),
      cmocka_unit_test(test_readwrite_peer_writes_and_publisher_sees_it),
      cmocka_unit_test(test_readonly_grant_of_a_sealed_region_stays_readonly),
      cmocka_unit_test(test_denied_peer_gets_eperm),
      cmocka_unit_test(test_name_disappears_after_publication_close),
      cmocka_unit_test(test_kinds_are_checked),
      cmocka_unit_test(test_clients_that_never_read_do_not_stall_the_publisher),
      cmocka_unit_test(test_forked_child_closing_a_publication_leaves_the_parents_name),
      cmocka_unit_test(test_foreach_lists_live_names_with_owner_and_kind),
      cmocka_unit_test(test_memport_ls_prints_live_names),
      cmocka_unit_test(test_sweep_removes_dead_owners_entries_and_never_a_live_one),
      cmocka_unit_test(test_memport_ls_sweeps_dead_owners),
      cmocka_unit_test(test_sweeps_never_make_a_create_fail),
      cmocka_unit_test(test_lock_file_holds_the_portable_record),
      cmocka_unit_test(test_lookups_never_make_a_create_fail),
      cmocka_unit_test(test_a_fifo_in_place_of_a_lock_file_blocks_nothing),
      cmocka_unit_test(test_a_directory_or_socket_in_place_of_a_lock_file_is_eacces),
      cmocka_unit_test(test_a_reclaimed_name_never_shows_the_dead_owners_record),
      cmocka_unit_test(test_no_descriptor_leaks_across_everything),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  rm_tree_shallow(g_xdg);
  return failed;
}
