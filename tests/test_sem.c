/* SPDX-License-Identifier: MIT */
/* test_sem.c: counting semaphores across threads of control: fork, messages, deadlines, signals, wake-all, no-syscall signal. */
#include "config.h"

#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/futex.h>
#include <linux/seccomp.h>


/* Read a small /proc file of process pid into buf; false if it cannot be read. */
static bool read_proc(pid_t pid, const char *what, char *buf, size_t cap) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%ld/%s", (long)pid, what);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return false;
  ssize_t n = read(fd, buf, cap - 1);
  close(fd);
  if (n <= 0)
    return false;
  buf[n] = '\0';
  return true;
}

/* Is process `pid` blocked in the futex system call right now? /proc/PID/syscall starts with the
 * number of the call it sleeps in (a parent may read its children's); where that file is not
 * available, settle for "sleeping" in /proc/PID/stat. */
static bool in_futex(pid_t pid) {
  char buf[512];
  if (read_proc(pid, "syscall", buf, sizeof buf))
    return strtol(buf, NULL, 10) == SYS_futex;
  if (!read_proc(pid, "stat", buf, sizeof buf))
    return false;
  const char *end = strrchr(buf, ')');
  return end != NULL && end[1] == ' ' && end[2] == 'S';
}

/* Wait (up to 10 s) until every pid is asleep in futex. */
static void wait_all_in_futex(const pid_t *pids, int n) {
  for (int tries = 0; tries < 10000; tries++) {
    int asleep = 0;
    for (int i = 0; i < n; i++)
      asleep += in_futex(pids[i]);
    if (asleep == n) {
      th_sleep_ms(50); /* and they stay there */
      return;
    }
    th_sleep_ms(1);
  }
  fail_msg("children never blocked in futex");
}

/* ------------------------------------------------------------------------------------------ */

static void test_sem_rejects_bad_arguments(void **state) {
  (void)state;
  memport_sem_t *s = NULL;
  th_assert_rc(memport_sem_create(NULL, 0, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_sem_create(&s, 0, 1u), MEMPORT_EINVAL);
  th_assert_rc(memport_sem_create(&s, 0x80000000u, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_sem_signal(NULL), MEMPORT_EINVAL);
  th_assert_rc(memport_sem_signal_all(NULL), MEMPORT_EINVAL);
  th_assert_rc(memport_sem_wait(NULL, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_sem_trywait(NULL), MEMPORT_EINVAL);
  th_assert_rc(memport_sem_dup(NULL, &s), MEMPORT_EINVAL);
  th_assert_ok(memport_sem_close(NULL));
  th_assert_ok(memport_sem_create(&s, 0x7fffffffu, 0));
  th_assert_rc(memport_sem_dup(s, NULL), MEMPORT_EINVAL);
  th_assert_rc(memport_sem_signal(s), MEMPORT_EOVERFLOW); /* the count never wraps */
  th_assert_ok(memport_sem_trywait(s));
  th_assert_ok(memport_sem_signal(s));
  th_assert_ok(memport_sem_close(s));
}

static void test_sem_trywait_takes_the_count_then_eagain(void **state) {
  (void)state;
  memport_sem_t *s;
  th_assert_ok(memport_sem_create(&s, 2, 0));
  th_assert_ok(memport_sem_trywait(s));
  th_assert_ok(memport_sem_trywait(s));
  th_assert_rc(memport_sem_trywait(s), MEMPORT_EAGAIN);
  th_assert_rc(memport_sem_wait(s, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
  th_assert_ok(memport_sem_signal(s));
  th_assert_ok(memport_sem_wait(s, MEMPORT_NOWAIT));
  th_assert_rc(memport_sem_trywait(s), MEMPORT_EAGAIN);
  for (int i = 0; i < 100; i++)
    th_assert_ok(memport_sem_signal(s));
  for (int i = 0; i < 100; i++)
    th_assert_ok(memport_sem_wait(s, MEMPORT_FOREVER));
  th_assert_rc(memport_sem_trywait(s), MEMPORT_EAGAIN);
  memport_sem_close(s);
}

static void test_sem_dup_shares_the_count_and_outlives_the_original(void **state) {
  (void)state;
  int fds0 = th_count_fds();
  int maps0 = th_count_maps();
  memport_sem_t *a, *b;
  th_assert_ok(memport_sem_create(&a, 0, 0));
  th_assert_ok(memport_sem_dup(a, &b));
  th_assert_ok(memport_sem_signal(a));
  th_assert_ok(memport_sem_close(a));
  th_assert_ok(memport_sem_trywait(b));
  th_assert_rc(memport_sem_trywait(b), MEMPORT_EAGAIN);
  memport_sem_close(b);
  assert_int_equal(th_count_fds(), fds0);
  if (!th_under_valgrind()) /* valgrind's own memory shows in /proc/self/maps */
    assert_int_equal(th_count_maps(), maps0);
}

static void test_sem_timedwait_expires_with_etimedout_not_early(void **state) {
  (void)state;
  memport_sem_t *s;
  th_assert_ok(memport_sem_create(&s, 0, 0));
  int64_t t0 = th_now_ns();
  th_assert_rc(memport_sem_wait(s, 120 * MS), MEMPORT_ETIMEDOUT);
  int64_t el = th_now_ns() - t0;
  assert_true(el >= 120 * MS);
  assert_true(el < 5000 * MS);
  /* A count that is there is taken even with an expired deadline. */
  th_assert_ok(memport_sem_signal(s));
  th_assert_ok(memport_sem_wait(s, 1));
  memport_sem_close(s);
}

static volatile sig_atomic_t g_usr1;
static void on_usr1(int sig) {
  (void)sig;
  g_usr1++;
}

struct pester_arg {
  pid_t target;
  memport_sem_t *sem; /* signalled after the pestering when non-NULL */
  int rounds;
};

static int pester_child(void *arg) {
  struct pester_arg *p = arg;
  for (int i = 0; i < p->rounds; i++) {
    kill(p->target, SIGUSR1);
    th_sleep_ms(3);
  }
  if (p->sem != NULL && memport_sem_signal(p->sem) != 0)
    return 1;
  return 0;
}

static void test_sem_wait_is_not_interrupted_by_signals(void **state) {
  (void)state;
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1; /* no SA_RESTART: a raw futex wait would fail with EINTR */
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, &old);
  memport_sem_t *s;
  th_assert_ok(memport_sem_create(&s, 0, 0));

  /* Signals during a timed wait that expires: ETIMEDOUT, after the whole timeout. */
  g_usr1 = 0;
  struct pester_arg pa = {getpid(), NULL, 60};
  pid_t pid = th_fork(pester_child, &pa, 20);
  int64_t t0 = th_now_ns();
  th_assert_rc(memport_sem_wait(s, 400 * MS), MEMPORT_ETIMEDOUT);
  int64_t el = th_now_ns() - t0;
  assert_int_equal(th_wait(pid, 20), 0);
  assert_true(g_usr1 > 0);
  assert_true(el >= 400 * MS);

  /* Signals during an unbounded wait, then the semaphore: 0. */
  g_usr1 = 0;
  pa.sem = s;
  pa.rounds = 40;
  pid = th_fork(pester_child, &pa, 20);
  th_assert_ok(memport_sem_wait(s, 20000 * MS));
  assert_int_equal(th_wait(pid, 20), 0);
  assert_true(g_usr1 > 0);

  memport_sem_close(s);
  sigaction(SIGUSR1, &old, NULL);
}

/* ---- across fork ---- */

#define PINGPONG_ROUNDS 5000

struct pingpong {
  memport_sem_t *to_child, *to_parent;
};

static int child_waits_then_answers(void *arg) {
  struct pingpong *pp = arg;
  for (int i = 0; i < PINGPONG_ROUNDS; i++) {
    if (memport_sem_wait(pp->to_child, 10000 * MS) != 0)
      return 1;
    if (memport_sem_signal(pp->to_parent) != 0)
      return 2;
  }
  return 0;
}

static void test_sem_works_across_fork_both_directions(void **state) {
  (void)state;
  struct pingpong pp;
  th_assert_ok(memport_sem_create(&pp.to_child, 0, 0));
  th_assert_ok(memport_sem_create(&pp.to_parent, 0, 0));
  pid_t pid = th_fork(child_waits_then_answers, &pp, 30);
  for (int i = 0; i < PINGPONG_ROUNDS; i++) {
    if (i % 1000 == 0)
      th_sleep_ms(5); /* sometimes let the child block in the kernel first */
    th_assert_ok(memport_sem_signal(pp.to_child));
    th_assert_ok(memport_sem_wait(pp.to_parent, 10000 * MS));
  }
  assert_int_equal(th_wait(pid, 30), 0);
  th_assert_rc(memport_sem_trywait(pp.to_child), MEMPORT_EAGAIN);
  th_assert_rc(memport_sem_trywait(pp.to_parent), MEMPORT_EAGAIN);
  memport_sem_close(pp.to_child);
  memport_sem_close(pp.to_parent);
}

/* ---- contention: producers and consumers in four processes ---- */

#define CONTENTION_ROUNDS 20000

static int producer(void *arg) {
  for (int i = 0; i < CONTENTION_ROUNDS; i++) {
    if (memport_sem_signal(arg) != 0)
      return 1;
    if (i % 1000 == 0)
      th_sleep_ms(1); /* let the consumers run dry and sleep in the kernel now and then */
  }
  return 0;
}

static int consumer(void *arg) {
  for (int i = 0; i < CONTENTION_ROUNDS; i++)
    if (memport_sem_wait(arg, 10000 * MS) != 0)
      return 1; /* a lost wake-up shows as a timeout here */
  return 0;
}

static void test_sem_loses_no_wakeup_under_contention(void **state) {
  (void)state;
  memport_sem_t *s;
  th_assert_ok(memport_sem_create(&s, 0, 0));
  pid_t c1 = th_fork(consumer, s, 60);
  pid_t c2 = th_fork(consumer, s, 60);
  pid_t p1 = th_fork(producer, s, 60);
  pid_t p2 = th_fork(producer, s, 60);
  assert_int_equal(th_wait(p1, 60), 0);
  assert_int_equal(th_wait(p2, 60), 0);
  assert_int_equal(th_wait(c1, 60), 0);
  assert_int_equal(th_wait(c2, 60), 0);
  th_assert_rc(memport_sem_trywait(s), MEMPORT_EAGAIN);
  memport_sem_close(s);
}

/* ---- sent in a message ---- */

static int child_receives_sem(void *arg) {
  memport_port_t *port = arg;
  memport_msg_t *m;
  memport_sem_t *s = NULL;
  if (memport_msg_create(&m) != 0 || memport_port_recv(port, m, 10000 * MS) != 0)
    return 1;
  if (memport_msg_handle_count(m) != 1 || memport_msg_handle_kind(m, 0) != MEMPORT_HANDLE_SEM)
    return 2;
  if (memport_msg_take_sem(m, 0, &s) != 0)
    return 3;
  /* The parent kept its handle: it signals us, we say so on the port, then answer twice. */
  if (memport_sem_wait(s, 10000 * MS) != 0)
    return 4;
  if (memport_msg_set_bytes(m, "taken", 5) != 0 || memport_port_send(port, m, 10000 * MS) != 0)
    return 5;
  if (memport_sem_signal(s) != 0 || memport_sem_signal(s) != 0)
    return 6;
  memport_msg_close(m);
  memport_sem_close(s);
  return 0;
}

static void test_sem_sent_in_a_message_works_in_the_receiver(void **state) {
  (void)state;
  memport_port_t *a, *b;
  th_assert_ok(memport_port_pair(&a, &b));
  pid_t pid = th_fork(child_receives_sem, b, 30);
  memport_port_close(b);
  memport_sem_t *s;
  th_assert_ok(memport_sem_create(&s, 0, 0));
  memport_msg_t *m;
  th_assert_ok(memport_msg_create(&m));
  th_assert_ok(memport_msg_attach_sem(m, s, MEMPORT_ATTACH_COPY));
  th_assert_ok(memport_port_send(a, m, 10000 * MS));
  th_assert_ok(memport_sem_signal(s));
  /* The child took our signal (it says so), then made two of its own. */
  th_assert_ok(memport_port_recv(a, m, 10000 * MS));
  size_t len;
  const void *bytes = memport_msg_bytes(m, &len);
  assert_int_equal(len, 5);
  assert_memory_equal(bytes, "taken", 5);
  th_assert_ok(memport_sem_wait(s, 10000 * MS));
  th_assert_ok(memport_sem_wait(s, 10000 * MS));
  assert_int_equal(th_wait(pid, 30), 0);
  th_assert_rc(memport_sem_trywait(s), MEMPORT_EAGAIN);
  memport_msg_close(m);
  memport_sem_close(s);
  memport_port_close(a);
}

/* ---- signal_all ---- */

static int child_waits_once(void *arg) { return memport_sem_wait(arg, 20000 * MS) == 0 ? 0 : 1; }

static void test_sem_signal_all_wakes_every_waiting_process(void **state) {
  (void)state;
  enum { N = 4 };
  memport_sem_t *s;
  th_assert_ok(memport_sem_create(&s, 0, 0));
  /* With nobody waiting, signal_all leaves the count alone. */
  th_assert_ok(memport_sem_signal_all(s));
  th_assert_rc(memport_sem_trywait(s), MEMPORT_EAGAIN);

  pid_t pids[N];
  for (int i = 0; i < N; i++)
    pids[i] = th_fork(child_waits_once, s, 40);
  wait_all_in_futex(pids, N);
  th_assert_ok(memport_sem_signal_all(s));
  for (int i = 0; i < N; i++)
    assert_int_equal(th_wait(pids[i], 30), 0);
  /* Exactly one unit per waiter was made. */
  th_assert_rc(memport_sem_trywait(s), MEMPORT_EAGAIN);
  memport_sem_close(s);
}

/* ---- the fast path makes no system call ---- */

#if defined(__x86_64__)
#define SECCOMP_ARCH AUDIT_ARCH_X86_64
#define REG_ARG(uc, i)                                                                            \
  ((i) == 0   ? (uc)->uc_mcontext.gregs[REG_RDI]                                                  \
   : (i) == 1 ? (uc)->uc_mcontext.gregs[REG_RSI]                                                  \
   : (i) == 2 ? (uc)->uc_mcontext.gregs[REG_RDX]                                                  \
   : (i) == 3 ? (uc)->uc_mcontext.gregs[REG_R10]                                                  \
              : (uc)->uc_mcontext.gregs[REG_R8])
#define SET_RET(uc, v) ((uc)->uc_mcontext.gregs[REG_RAX] = (v))
#elif defined(__aarch64__)
#define SECCOMP_ARCH AUDIT_ARCH_AARCH64
#define REG_ARG(uc, i) ((long)(uc)->uc_mcontext.regs[(i)])
#define SET_RET(uc, v) ((uc)->uc_mcontext.regs[0] = (unsigned long)(v))
#endif

#ifdef SECCOMP_ARCH
#define PASS_MAGIC 0x6d656d70u /* futex calls with this val3 are let through by the filter */

static volatile sig_atomic_t g_futex_calls;

/* Count the trapped futex call, then make it for real (marked so the filter lets it pass). */
static void on_sigsys(int sig, siginfo_t *si, void *ctx) {
  (void)sig;
  (void)si;
  ucontext_t *uc = ctx;
  g_futex_calls++;
  long r = syscall(SYS_futex, REG_ARG(uc, 0), REG_ARG(uc, 1), REG_ARG(uc, 2), REG_ARG(uc, 3), REG_ARG(uc, 4),
                   (long)PASS_MAGIC);
  SET_RET(uc, r < 0 ? -errno : r);
}

/* From now on every futex system call of this process traps to on_sigsys. */
static int trap_futex(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_sigsys;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGSYS, &sa, NULL) != 0)
    return -1;
  struct sock_filter prog[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SECCOMP_ARCH, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_futex, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[5])),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PASS_MAGIC, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP),
  };
  struct sock_fprog fprog = {(unsigned short)(sizeof prog / sizeof prog[0]), prog};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    return -1;
  if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) != 0)
    return -1;
  return 0;
}

static int child_signals_without_waiters(void *arg) {
  memport_sem_t *s = arg;
  if (trap_futex() != 0)
    return 10;
  /* The trap works: a futex call of our own is counted. */
  uint32_t word = 0;
  syscall(SYS_futex, &word, FUTEX_WAKE, 1, NULL, NULL, 0);
  if (g_futex_calls != 1)
    return 11;
  g_futex_calls = 0;
  for (int i = 0; i < 1000; i++)
    if (memport_sem_signal(s) != 0)
      return 12;
  /* Taking an available count makes no system call either. */
  for (int i = 0; i < 500; i++)
    if (memport_sem_wait(s, 1000 * MS) != 0 || memport_sem_trywait(s) != 0)
      return 13;
  if (memport_sem_trywait(s) != MEMPORT_EAGAIN)
    return 14;
  return g_futex_calls == 0 ? 0 : 20 + (g_futex_calls > 100 ? 100 : (int)g_futex_calls);
}

static int child_signals_one_waiter(void *arg) {
  memport_sem_t *s = arg;
  if (trap_futex() != 0)
    return 10;
  if (memport_sem_signal(s) != 0)
    return 12;
  /* The waiter registered itself: this signal had to wake it through the kernel. */
  return g_futex_calls >= 1 ? 0 : 13;
}
#endif

static void test_sem_signal_makes_no_syscall_when_nobody_waits(void **state) {
  (void)state;
#ifndef SECCOMP_ARCH
  skip();
#else
  if (th_under_valgrind())
    skip(); /* valgrind runs the client's system calls itself; seccomp traps confuse it */
  memport_sem_t *s;
  th_assert_ok(memport_sem_create(&s, 0, 0));
  assert_int_equal(th_run_child(child_signals_without_waiters, s, 20), 0);
  th_assert_rc(memport_sem_trywait(s), MEMPORT_EAGAIN);

  /* And with a waiter asleep, signal does call FUTEX_WAKE, and the waiter wakes. */
  pid_t waiter = th_fork(child_waits_once, s, 30);
  wait_all_in_futex(&waiter, 1);
  assert_int_equal(th_run_child(child_signals_one_waiter, s, 20), 0);
  assert_int_equal(th_wait(waiter, 20), 0);
  memport_sem_close(s);
#endif
}

/* ---- hostile shared page ---- */

/* The semaphore's descriptor as a peer would see it: sent through a port, received raw. */
static int raw_sem_fd(memport_sem_t *s) {
  memport_port_t *a, *b;
  memport_msg_t *m;
  if (memport_port_pair(&a, &b) != 0 || memport_msg_create(&m) != 0)
    return -1;
  memport_msg_attach_sem(m, s, MEMPORT_ATTACH_COPY);
  if (memport_port_send(a, m, 1000 * MS) != 0)
    return -1;
  memport_os_handle_t sock;
  memport_port_pollable(b, &sock);
  char data[256];
  union {
    char buf[CMSG_SPACE(sizeof(int) * 4) + CMSG_SPACE(64)];
    struct cmsghdr align;
  } ctl;
  struct iovec iov = {data, sizeof data};
  struct msghdr mh;
  memset(&mh, 0, sizeof mh);
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = ctl.buf;
  mh.msg_controllen = sizeof ctl.buf;
  int fd = -1;
  if (recvmsg(sock, &mh, MSG_CMSG_CLOEXEC) > 0)
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c))
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
        memcpy(&fd, CMSG_DATA(c), sizeof fd);
  memport_msg_close(m);
  memport_port_close(a);
  memport_port_close(b);
  return fd;
}

static uint32_t *g_page;
static int child_zeroes_waiters(void *arg) {
  (void)arg;
  for (int i = 0; i < 5000 && __atomic_load_n(&g_page[1], __ATOMIC_SEQ_CST) == 0; i++)
    th_sleep_ms(1);
  if (__atomic_load_n(&g_page[1], __ATOMIC_SEQ_CST) != 1)
    return 1;
  th_sleep_ms(10);
  __atomic_store_n(&g_page[1], 0, __ATOMIC_SEQ_CST);
  return 0;
}

static void test_sem_survives_garbage_in_the_shared_page(void **state) {
  (void)state;
  memport_sem_t *s;
  th_assert_ok(memport_sem_create(&s, 0, 0));
  int fd = raw_sem_fd(s);
  assert_true(fd >= 0);
  uint32_t *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  assert_true(page != MAP_FAILED);

  /* A huge waiter count: waits and signals still work and terminate. */
  __atomic_store_n(&page[1], 0xffffffffu, __ATOMIC_SEQ_CST);
  th_assert_rc(memport_sem_wait(s, 10 * MS), MEMPORT_ETIMEDOUT);
  th_assert_ok(memport_sem_signal(s));
  th_assert_ok(memport_sem_signal_all(s));
  th_assert_ok(memport_sem_wait(s, 10 * MS));

  /* Waiters zeroed by a peer while we wait: our leaving does not wrap the hint to 2^32-1 (which
   * would cost every later signal a system call). */
  __atomic_store_n(&page[1], 0, __ATOMIC_SEQ_CST);
  __atomic_store_n(&page[0], 0, __ATOMIC_SEQ_CST);
  g_page = page;
  pid_t pid = th_fork(child_zeroes_waiters, NULL, 10);
  th_assert_rc(memport_sem_wait(s, 150 * MS), MEMPORT_ETIMEDOUT);
  assert_int_equal(th_wait(pid, 10), 0);
  assert_int_equal(__atomic_load_n(&page[1], __ATOMIC_SEQ_CST), 0);

  /* A count beyond the maximum: signal refuses to go on, wait takes from it. */
  __atomic_store_n(&page[0], 0xfffffff0u, __ATOMIC_SEQ_CST);
  th_assert_rc(memport_sem_signal(s), MEMPORT_EOVERFLOW);
  th_assert_ok(memport_sem_signal_all(s));
  th_assert_ok(memport_sem_trywait(s));
  assert_int_equal(__atomic_load_n(&page[0], __ATOMIC_SEQ_CST), 0xffffffefu);

  /* A wrecked magic does not disturb holders, but a new receiver refuses the semaphore. */
  __atomic_store_n(&page[0], 0, __ATOMIC_SEQ_CST);
  __atomic_store_n(&page[2], 0xdeadbeefu, __ATOMIC_SEQ_CST);
  th_assert_ok(memport_sem_signal(s));
  th_assert_ok(memport_sem_trywait(s));
  memport_sem_t *d = NULL;
  th_assert_rc(memport_sem_dup(s, &d), MEMPORT_EPROTO);

  munmap(page, 4096);
  close(fd);
  memport_sem_close(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sem_rejects_bad_arguments),
      cmocka_unit_test(test_sem_trywait_takes_the_count_then_eagain),
      cmocka_unit_test(test_sem_dup_shares_the_count_and_outlives_the_original),
      cmocka_unit_test(test_sem_timedwait_expires_with_etimedout_not_early),
      cmocka_unit_test(test_sem_wait_is_not_interrupted_by_signals),
      cmocka_unit_test(test_sem_works_across_fork_both_directions),
      cmocka_unit_test(test_sem_loses_no_wakeup_under_contention),
      cmocka_unit_test(test_sem_sent_in_a_message_works_in_the_receiver),
      cmocka_unit_test(test_sem_signal_all_wakes_every_waiting_process),
      cmocka_unit_test(test_sem_signal_makes_no_syscall_when_nobody_waits),
      cmocka_unit_test(test_sem_survives_garbage_in_the_shared_page),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
