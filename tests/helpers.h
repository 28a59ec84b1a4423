/* SPDX-License-Identifier: MIT */
/* helpers.h: what the cmocka tests share: peer processes with timeouts, descriptor and mapping counts. */
#ifndef MEMPORT_TESTS_HELPERS_H
#define MEMPORT_TESTS_HELPERS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <cmocka.h>

#include "memport.h"

#include <stdbool.h>

#define SEC 1000000000LL /* nanoseconds */
#define MS 1000000LL
#define US 1000LL

/* Assert that a memport call returned `expected`, printing both codes by name when not. */
#define th_assert_rc(call, expected)                                                           \
  do {                                                                                         \
    int th_rc_ = (call);                                                                       \
    int th_ex_ = (expected);                                                                   \
    if (th_rc_ != th_ex_)                                                                      \
      fail_msg("%s returned %d (%s), expected %d (%s)", #call, th_rc_, memport_err_name(th_rc_), \
               th_ex_, memport_err_name(th_ex_));                                              \
  } while (0)
#define th_assert_ok(call) th_assert_rc((call), 0)

/* Open descriptors of this process (/proc/self/fd or /dev/fd), or -1 if they cannot be counted. */
int th_count_fds(void);
/* Mappings of this process (lines of /proc/self/maps), or -1 where there is no such file. */
int th_count_maps(void);

/* Mappings of memport memory (memfd:memport) in this process, or -1 without /proc/self/maps.
 * Unlike th_count_maps, malloc arenas, thread stacks and valgrind's own mappings do not move it. */
int th_count_memport_maps(void);
/* The monotonic clock in nanoseconds. */
uint64_t th_now_ns(void);
/* Sleep the whole time, whatever signals arrive. */
void th_sleep_ns(uint64_t ns);
void th_sleep_ms(unsigned ms);
/* True when running under valgrind (its preload library is in LD_PRELOAD). */
bool th_under_valgrind(void);

/* A byte pattern that depends on seed, and a check of it (0 when p holds exactly that pattern). */
void th_fill(unsigned char *p, size_t len, uint32_t seed);
int th_check(const unsigned char *p, size_t len, uint32_t seed);
/* Whether this kernel (or emulator: valgrind does not model it) can give a shared mapping a
 * second address with mremap(old_size 0), which memport_remap uses on Linux. */
bool th_can_duplicate_mappings(void);

/* Fork a child that runs fn(arg) and exits with its return value (0: success). The child is
 * killed by SIGALRM after timeout_s seconds, so a deadlock fails instead of hanging. */
pid_t th_fork(int (*fn)(void *arg), void *arg, unsigned timeout_s);
/* Wait up to timeout_s seconds for pid; returns its exit status, 128+signal if killed by a
 * signal, or -1 if it had to be killed on timeout. */
int th_wait(pid_t pid, unsigned timeout_s);
/* Whether pid has ended, without waiting: then *status is what th_wait would have returned and
 * the child is reaped. For a parent's loop that waits for a child's progress: a child that failed
 * early must end the loop, never leave it spinning. */
bool th_exited(pid_t pid, int *status);
/* Fork and wait: the child's exit status, as th_wait. */
int th_run_child(int (*fn)(void *arg), void *arg, unsigned timeout_s);

/* Re-run this test binary as a fresh process image: argv0 --helper NAME [ARG]. The child's
 * main must call th_helper_dispatch first. Returns the pid. */
pid_t th_spawn_helper(const char *argv0, const char *name, const char *arg);
/* In main: if argv asks for a helper, run it from `table` (NULL-terminated by name) and exit. */
struct th_helper {
  const char *name;
  int (*fn)(const char *arg);
};
void th_helper_dispatch(int argc, char **argv, const struct th_helper *table);

/* The RLIMIT_NOFILE that leaves exactly `want` descriptor numbers free below it (want >= 0). */
rlim_t th_limit_with_free_slots(int want);

/* A unique name for this test process (prefix + pid + counter), for services and regions. */
const char *th_unique_name(const char *prefix);

#endif
