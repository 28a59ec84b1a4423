/* SPDX-License-Identifier: MIT */
/* syscheck.c: memport-bench's steady-state check (Linux): the system calls (counted by ptrace) and heap
 * allocations (counted by alloc_count.c) of a channel ping-pong after warm-up, per process. */
#include "bench.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

struct sys_result sysres[SYS_RUNS];
size_t nsysres;

struct sys_shared {
  _Atomic int ready[2], go, started[2], finished[2], notsup;
  unsigned long allocs[2], probe_allocs;
  char err[2][160];
  /* topic */
  _Alignas(64) _Atomic uint64_t ack; /* the subscriber: messages received and released */
  _Alignas(64) _Atomic int pub_up;
  char name[64];
};

enum sys_kind { SK_RING, SK_ZC, SK_TOPIC_INLINE, SK_TOPIC_POOL };

const char *syscall_name(long nr) {
  static const struct {
    long nr;
    const char *name;
  } names[] = {
#ifdef SYS_futex
    {SYS_futex, "futex"},
#endif
#ifdef SYS_sched_yield
    {SYS_sched_yield, "sched_yield"},
#endif
#ifdef SYS_clock_gettime
    {SYS_clock_gettime, "clock_gettime"},
#endif
#ifdef SYS_sendmsg
    {SYS_sendmsg, "sendmsg"},
#endif
#ifdef SYS_recvmsg
    {SYS_recvmsg, "recvmsg"},
#endif
#ifdef SYS_read
    {SYS_read, "read"},
#endif
#ifdef SYS_write
    {SYS_write, "write"},
#endif
#ifdef SYS_poll
    {SYS_poll, "poll"},
#endif
#ifdef SYS_ppoll
    {SYS_ppoll, "ppoll"},
#endif
#ifdef SYS_mmap
    {SYS_mmap, "mmap"},
#endif
#ifdef SYS_munmap
    {SYS_munmap, "munmap"},
#endif
#ifdef SYS_brk
    {SYS_brk, "brk"},
#endif
#ifdef SYS_nanosleep
    {SYS_nanosleep, "nanosleep"},
#endif
#ifdef SYS_clock_nanosleep
    {SYS_clock_nanosleep, "clock_nanosleep"},
#endif
#ifdef SYS_getpid
    {SYS_getpid, "getpid"},
#endif
#ifdef SYS_close
    {SYS_close, "close"},
#endif
#ifdef SYS_exit_group
    {SYS_exit_group, "exit_group"},
#endif
  };
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (names[i].nr == nr) return names[i].name;
  return NULL;
}

/* One side of the traced ping-pong: role 0 sends and waits for the echo, role 1 echoes. */
static int sys_peer(int role, memport_port_t *port, int policy, bool zerocopy, struct sys_shared *sh) {
  memport_chan_opts_t o;
  memport_chan_opts_init(&o);
  o.wait_policy = policy;
  memport_chan_t *ch = NULL;
  char *err = sh->err[role];
  int rc = memport_chan_open(&ch, port, &o, IO_TIMEOUT);
  if (rc < 0) {
    snprintf(err, 160, "memport_chan_open: %s", memport_strerror(rc));
    if (rc == MEMPORT_ENOTSUP) atomic_store(&sh->notsup, 1);
    return -1;
  }
  unsigned char payload[100];
  memset(payload, 0x5a, sizeof payload);
  unsigned w = cfg.warmup > 1000 ? cfg.warmup : 1000, n = cfg.sys_messages;
  if (role == 0) {
    /* the instrument's own check: a library call known to allocate must be counted */
    memport_msg_t *probe = NULL;
    unsigned long p0 = alloc_count();
    if (memport_msg_create(&probe) == 0) sh->probe_allocs = alloc_count() - p0;
    memport_msg_close(probe);
  }
  unsigned long a0 = 0;
  for (unsigned i = 0; i < w + n; i++) {
    if (i == w) {
      atomic_store(&sh->ready[role], 1);
      while (!atomic_load(&sh->go)) sched_yield();
      atomic_store(&sh->started[role], 1);
      a0 = alloc_count();
    }
    if (role == 0) {
      if (zerocopy) {
        memport_buf_t b;
        rc = memport_chan_alloc(ch, sizeof payload, &b, IO_TIMEOUT);
        if (rc >= 0) {
          memcpy(b.data, payload, sizeof payload);
          memcpy(b.data, &i, sizeof i);
          rc = memport_chan_send_buf(ch, &b, IO_TIMEOUT);
        }
      } else {
        memcpy(payload, &i, sizeof i);
        rc = memport_chan_send(ch, payload, sizeof payload, 0, IO_TIMEOUT);
      }
      if (rc < 0) break;
      memport_buf_t r;
      rc = memport_chan_recv(ch, &r, IO_TIMEOUT);
      if (rc < 0) break;
      unsigned got = 0;
      if (r.len >= sizeof got) memcpy(&got, r.data, sizeof got);
      rc = memport_chan_release(ch, &r);
      if (rc >= 0 && got != i) {
        snprintf(err, 160, "echo %u, expected %u", got, i);
        rc = MEMPORT_EPROTO;
        err = NULL; /* keep this text */
      }
    } else {
      memport_buf_t r;
      rc = memport_chan_recv(ch, &r, IO_TIMEOUT);
      if (rc < 0) break;
      unsigned got = 0;
      if (r.len >= sizeof got) memcpy(&got, r.data, sizeof got);
      rc = memport_chan_release(ch, &r);
      if (rc >= 0) rc = memport_chan_send(ch, &got, sizeof got, 0, IO_TIMEOUT);
    }
    if (rc < 0) break;
  }
  sh->allocs[role] = alloc_count() - a0;
  atomic_store(&sh->finished[role], 1);
  if (rc < 0 && err) snprintf(err, 160, "%s", memport_strerror(rc));
  /* keep the channel open until both sides finished, so the close is outside the window */
  while (!atomic_load(&sh->finished[1 - role])) sched_yield();
  memport_chan_close(ch);
  return rc < 0 ? -1 : 0;
}

/* One side of the traced topic ping-pong: role 0 publishes (loan, write, publish) and spins on the shared ack
 * word, role 1 subscribes, receives, releases and writes the ack. The ack goes through plain shared memory, so
 * every system call counted is the topic's. */
static int topic_peer(int role, int policy, size_t len, struct sys_shared *sh) {
  char *err = sh->err[role];
  memport_topic_opts_t o;
  memport_topic_opts_init(&o);
  o.wait_policy = policy;
  o.depth = 8;
  o.buffers = 4;
  o.buffer_size = 64 * KIB;
  o.max_subscribers = 4;
  memport_pub_t *pub = NULL;
  memport_sub_t *sub = NULL;
  int rc;
  int64_t deadline = now_ns() + IO_TIMEOUT;
  if (role == 0) {
    if ((rc = memport_pub_create(&pub, sh->name, &o)) < 0) {
      snprintf(err, 160, "memport_pub_create: %s", memport_strerror(rc));
      if (rc == MEMPORT_ENOTSUP) atomic_store(&sh->notsup, 1);
      return -1;
    }
    atomic_store(&sh->pub_up, 1);
    while ((rc = memport_pub_process(pub)) == 0 && memport_pub_subscribers(pub) < 1 && now_ns() < deadline &&
           !sh->err[1][0])
      sleep_ns(200000);
    if (memport_pub_subscribers(pub) < 1) {
      snprintf(err, 160, "no subscriber joined");
      memport_pub_close(pub);
      return -1;
    }
    memport_msg_t *probe = NULL;
    unsigned long p0 = alloc_count();
    if (memport_msg_create(&probe) == 0) sh->probe_allocs = alloc_count() - p0;
    memport_msg_close(probe);
  } else {
    while (!atomic_load(&sh->pub_up) && now_ns() < deadline && !sh->err[0][0]) sleep_ns(200000);
    if ((rc = memport_sub_connect(&sub, sh->name, &o, IO_TIMEOUT)) < 0) {
      snprintf(err, 160, "memport_sub_connect: %s", memport_strerror(rc));
      return -1;
    }
  }
  unsigned w = cfg.warmup > 1000 ? cfg.warmup : 1000, n = cfg.sys_messages;
  unsigned long a0 = 0;
  rc = 0;
  for (unsigned i = 0; i < w + n; i++) {
    if (i == w) {
      atomic_store(&sh->ready[role], 1);
      while (!atomic_load(&sh->go)) sched_yield();
      atomic_store(&sh->started[role], 1);
      a0 = alloc_count();
    }
    if (role == 0) {
      memport_buf_t b;
      rc = memport_pub_loan(pub, len, &b, IO_TIMEOUT);
      if (rc < 0) break;
      memset(b.data, 0x5a, len < 256 ? len : 256);
      memcpy(b.data, &i, sizeof i);
      rc = memport_pub_publish(pub, &b, IO_TIMEOUT);
      if (rc < 0) break;
      /* spin on the ack (the clock is read through the vDSO: no system call) */
      unsigned spins = 0;
      while (atomic_load_explicit(&sh->ack, memory_order_acquire) != (uint64_t)i + 1) {
        cpu_relax();
        if ((++spins & 0xffff) == 0 && (now_ns() > deadline + IO_TIMEOUT || sh->err[1][0])) {
          rc = MEMPORT_ETIMEDOUT;
          break;
        }
      }
      if (rc < 0) break;
    } else {
      memport_buf_t b;
      rc = memport_sub_recv(sub, &b, IO_TIMEOUT);
      if (rc < 0) break;
      unsigned got = 0;
      if (b.len >= sizeof got) memcpy(&got, b.data, sizeof got);
      rc = memport_sub_release(sub, &b);
      if (rc >= 0 && got != i) {
        snprintf(err, 160, "message %u, expected %u", got, i);
        rc = MEMPORT_EPROTO;
        err = NULL;
      }
      if (rc < 0) break;
      atomic_store_explicit(&sh->ack, (uint64_t)i + 1, memory_order_release);
    }
  }
  sh->allocs[role] = alloc_count() - a0;
  atomic_store(&sh->finished[role], 1);
  if (rc < 0 && err) snprintf(err, 160, "%s", memport_strerror(rc));
  while (!atomic_load(&sh->finished[1 - role])) sched_yield();
  if (role == 0) {
    /* the subscriber leaves first, so the close is nobody's error */
    while (atomic_load(&sh->pub_up) != 2) {
      if (now_ns() > deadline + 2 * IO_TIMEOUT) break;
      sched_yield();
    }
    memport_pub_close(pub);
  } else {
    memport_sub_close(sub);
    atomic_store(&sh->pub_up, 2);
  }
  return rc < 0 ? -1 : 0;
}

static void run_syscheck_one(int policy, enum sys_kind kind, unsigned messages) {
  struct sys_result *res = &sysres[nsysres++];
  memset(res, 0, sizeof *res);
  res->topic = kind == SK_TOPIC_INLINE || kind == SK_TOPIC_POOL;
  if (res->topic)
    snprintf(res->what, sizeof res->what, "topic 1->1 %s, %s mode",
             kind == SK_TOPIC_POOL ? "64 KiB (zero-copy)" : "100 B (inline)", mode_name(policy));
  else
    snprintf(res->what, sizeof res->what, "%s 100 B, %s mode", kind == SK_ZC ? "zero-copy" : "ring", mode_name(policy));
  unsigned saved = cfg.sys_messages;
  cfg.sys_messages = messages;
  res->messages = messages;
  progress("steady state: %s, %u round trips:", res->what, messages);
  struct sys_shared *sh = shared_alloc(sizeof *sh);
  memport_port_t *pa = NULL, *pb = NULL;
  int rc = sh ? memport_port_pair(&pa, &pb) : MEMPORT_ENOMEM;
  if (rc < 0) {
    snprintf(res->err, sizeof res->err, "setup: %s", memport_strerror(rc));
    progress_more(" n/a (%s)\n", res->err);
    if (sh) munmap(sh, sizeof *sh);
    cfg.sys_messages = saved;
    return;
  }
  memset(sh, 0, sizeof *sh);
  snprintf(sh->name, sizeof sh->name, "memport-bench-sys-%ld-%zu", (long)getpid(), nsysres);
  pid_t pids[2] = {-1, -1};
  fflush(NULL);
  for (int role = 0; role < 2; role++) {
    pids[role] = fork();
    if (pids[role] == 0) {
      alarm(60);
      pin_to(cpu_for(role, policy != MEMPORT_WAIT_BLOCK));
      memport_port_close(role == 0 ? pb : pa);
      if (res->topic) {
        memport_port_close(role == 0 ? pa : pb);
        _exit(topic_peer(role, policy, kind == SK_TOPIC_POOL ? 64 * KIB : 100, sh) < 0 ? 1 : 0);
      }
      _exit(sys_peer(role, role == 0 ? pa : pb, policy, kind == SK_ZC, sh) < 0 ? 1 : 0);
    }
  }
  memport_port_close(pa);
  memport_port_close(pb);
  cfg.sys_messages = saved;
  if (pids[0] < 0 || pids[1] < 0) snprintf(res->err, sizeof res->err, "fork: %s", strerror(errno));
  bool unavailable = false;
  int64_t deadline = now_ns() + (int64_t)30 * 1000000000;
  while (!res->err[0] && (!atomic_load(&sh->ready[0]) || !atomic_load(&sh->ready[1])) && now_ns() < deadline) {
    if (sh->err[0][0] || sh->err[1][0] || atomic_load(&sh->notsup)) break;
    sleep_ns(1000000);
  }
  bool ready = atomic_load(&sh->ready[0]) && atomic_load(&sh->ready[1]);
  for (int i = 0; i < 2 && ready && !res->err[0]; i++) {
    if (ptrace(PTRACE_SEIZE, pids[i], 0, (void *)(uintptr_t)(PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL)) != 0) {
      /* e.g. Yama ptrace_scope 3 or a container's seccomp policy: the check cannot run here */
      unavailable = errno == EPERM || errno == ENOSYS || errno == EACCES;
      snprintf(res->err, sizeof res->err, "ptrace(PTRACE_SEIZE): %s", strerror(errno));
      break;
    }
    int st;
    if (ptrace(PTRACE_INTERRUPT, pids[i], 0, 0) != 0 || waitpid(pids[i], &st, __WALL) != pids[i] ||
        ptrace(PTRACE_SYSCALL, pids[i], 0, 0) != 0) {
      snprintf(res->err, sizeof res->err, "ptrace: %s", strerror(errno));
      break;
    }
  }
  if (!ready && !res->err[0]) snprintf(res->err, sizeof res->err, "peers did not get ready");
  if (res->err[0]) {
    for (int i = 0; i < 2; i++)
      if (pids[i] > 0) kill(pids[i], SIGKILL);
  }
  atomic_store(&sh->go, 1);
  int alive = (pids[0] > 0) + (pids[1] > 0), status[2] = {0, 0};
  bool in_call[2] = {false, false};
  while (alive > 0) {
    int st;
    pid_t p = waitpid(-1, &st, __WALL);
    if (p < 0) {
      if (errno == EINTR) continue;
      break;
    }
    int i = p == pids[0] ? 0 : p == pids[1] ? 1 : -1;
    if (i < 0) continue;
    if (WIFEXITED(st) || WIFSIGNALED(st)) {
      status[i] = st;
      alive--;
      continue;
    }
    if (!WIFSTOPPED(st)) continue;
    int sig = WSTOPSIG(st), event = (st >> 16) & 0xff;
    if (sig == (SIGTRAP | 0x80)) {
      bool entry;
      long nr = -1;
#ifdef PTRACE_GET_SYSCALL_INFO
      struct __ptrace_syscall_info info;
      memset(&info, 0, sizeof info);
      if (ptrace(PTRACE_GET_SYSCALL_INFO, p, (void *)sizeof info, &info) > 0) {
        entry = info.op == PTRACE_SYSCALL_INFO_ENTRY;
        if (entry) nr = (long)info.entry.nr;
      } else {
        entry = !in_call[i];
      }
#else
      entry = !in_call[i];
#endif
      in_call[i] = entry;
      if (entry && atomic_load(&sh->started[i]) && !atomic_load(&sh->finished[i])) {
        if (res->nfirst[i] < 6) res->first_nr[i][res->nfirst[i]++] = nr;
        res->syscalls[i]++;
      }
      ptrace(PTRACE_SYSCALL, p, 0, 0);
    } else if (event == PTRACE_EVENT_STOP) {
      ptrace(PTRACE_SYSCALL, p, 0, 0);
    } else {
      ptrace(PTRACE_SYSCALL, p, 0, (void *)(uintptr_t)sig);
    }
  }
  bool ok = !res->err[0];
  for (int i = 0; i < 2; i++) {
    if (!WIFEXITED(status[i]) || WEXITSTATUS(status[i]) != 0) {
      ok = false;
      if (!res->err[0]) {
        char why[64];
        describe_status(status[i], why, sizeof why);
        snprintf(res->err, sizeof res->err, "%s %s: %s",
                 res->topic ? (i ? "subscriber" : "publisher") : i ? "receiver" : "sender", why, sh->err[i]);
      }
    }
    res->allocs[i] = sh->allocs[i];
  }
  res->probe_allocs = sh->probe_allocs;
  res->ok = ok;
  if (!ok && (unavailable || atomic_load(&sh->notsup))) {
    if (!unavailable) snprintf(res->err, sizeof res->err, "%s", sh->err[0][0] ? sh->err[0] : sh->err[1]);
    progress_more(" n/a (%s)\n", res->err);
  } else if (ok)
    progress_more(" %s %lu syscalls %lu allocations, %s %lu syscalls %lu allocations\n",
                  res->topic ? "publisher" : "sender", res->syscalls[0], res->allocs[0],
                  res->topic ? "subscriber" : "receiver", res->syscalls[1], res->allocs[1]);
  else {
    progress_more(" FAILED: %s\n", res->err);
    bench_failures++;
  }
  munmap(sh, sizeof *sh);
}

void run_syscheck(void) {
  if (usable_cpus() < 2 || cpus[0] < 0) {
    progress("steady state: spin mode needs two CPUs to pin the peers to; skipped\n");
    return;
  }
  run_syscheck_one(MEMPORT_WAIT_SPIN, SK_RING, cfg.sys_messages);
  run_syscheck_one(MEMPORT_WAIT_SPIN, SK_ZC, cfg.sys_messages);
  run_syscheck_one(MEMPORT_WAIT_BLOCK, SK_RING, cfg.sys_messages / 20 > 100 ? cfg.sys_messages / 20 : 100);
  /* the topic, publisher and one subscriber: spinning needs a CPU per process, and this check pins two */
  run_syscheck_one(MEMPORT_WAIT_SPIN, SK_TOPIC_INLINE, cfg.sys_messages);
  run_syscheck_one(MEMPORT_WAIT_SPIN, SK_TOPIC_POOL, cfg.sys_messages);
}

