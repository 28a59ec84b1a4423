/* SPDX-License-Identifier: MIT */
/* sem.c: Darwin semaphores as Mach semaphore_t ports, with absolute deadlines and EINTR retried. */
#include "darwin/os.h"

#include <limits.h>
#include <mach/semaphore.h>
#include <mach/task.h>

/* A Mach semaphore belongs to the task that created it: it stays alive while any task holds a send
 * right to it, but is destroyed when its creator exits. Every operation on a destroyed semaphore
 * returns KERN_TERMINATED (waiters are woken with it), reported as MEMPORT_EPEER. A port that is
 * not a semaphore gives KERN_INVALID_CAPABILITY / KERN_INVALID_NAME: MEMPORT_EBADF. */

int memport__os_sem_create(memport_sem_t *s, unsigned initial) {
  if (s == NULL)
    return MEMPORT_EINVAL;
  if (initial > (unsigned)INT_MAX)
    return MEMPORT_EINVAL;
  uintptr_t stamp = memport__darwin_stamp();
  if (stamp == 0)
    return MEMPORT_ENOMEM;
  semaphore_t sem = MACH_PORT_NULL;
  kern_return_t kr = semaphore_create(mach_task_self(), &sem, SYNC_POLICY_FIFO, (int)initial);
  if (kr != KERN_SUCCESS)
    return memport__darwin_err(kr);
  s->handle = sem;
  s->os.gen = stamp;
  memport__darwin_track(s, MEMPORT_HANDLE_SEM);
  return 0;
}

void memport__os_sem_close(memport_sem_t *s) {
  if (s == NULL)
    return;
  /* Only the send right: semaphore_destroy would destroy the semaphore for every other holder too.
   * The kernel frees it when the last send right is gone. */
  memport__darwin_untrack(s);
  mach_port_name_t h = s->handle;
  bool mine = memport__darwin_mine(s->os.gen);
  s->handle = MEMPORT_OS_HANDLE_INVALID;
  s->os.gen = 0;
  if (mine)
    memport__darwin_release_send(h);
}

/* A semaphore of this process (not copied from a fork parent) with a right. */
static bool usable(const memport_sem_t *s) {
  return s != NULL && MACH_PORT_VALID(s->handle) && memport__darwin_mine(s->os.gen);
}

static int sem_result(kern_return_t kr) {
  if (kr == KERN_INVALID_NAME || kr == KERN_INVALID_RIGHT || kr == KERN_INVALID_CAPABILITY)
    return MEMPORT_EBADF;
  return memport__darwin_err(kr);
}

int memport__os_sem_signal(memport_sem_t *s) {
  if (!usable(s))
    return MEMPORT_EBADF;
  return sem_result(semaphore_signal(s->handle));
}

int memport__os_sem_signal_all(memport_sem_t *s) {
  if (!usable(s))
    return MEMPORT_EBADF;
  return sem_result(semaphore_signal_all(s->handle));
}

int memport__os_sem_wait(memport_sem_t *s, uint64_t deadline) {
  if (!usable(s))
    return MEMPORT_EBADF;
  for (;;) {
    kern_return_t kr;
    if (deadline == MEMPORT__NO_DEADLINE) {
      kr = semaphore_wait(s->handle);
    } else {
      /* semaphore_timedwait takes a relative time: recompute it on every retry so that signals
       * (KERN_ABORTED) never stretch the deadline. */
      uint64_t now = memport__now_ns();
      uint64_t left = now >= deadline ? 0 : deadline - now;
      mach_timespec_t ts;
      uint64_t sec = left / 1000000000u;
      if (sec > UINT_MAX) {
        ts.tv_sec = UINT_MAX;
        ts.tv_nsec = 0;
      } else {
        ts.tv_sec = (unsigned int)sec;
        ts.tv_nsec = (clock_res_t)(left % 1000000000u);
      }
      kr = semaphore_timedwait(s->handle, ts);
      if (kr == KERN_OPERATION_TIMED_OUT && sec > UINT_MAX)
        continue; /* capped wait of ~136 years ended early: keep waiting */
    }
    if (kr == KERN_ABORTED)
      continue; /* interrupted (signal, thread_abort_safely): retry */
    return sem_result(kr);
  }
}

int memport__os_sem_trywait(memport_sem_t *s) {
  if (!usable(s))
    return MEMPORT_EBADF;
  for (;;) {
    mach_timespec_t zero = {0, 0};
    kern_return_t kr = semaphore_timedwait(s->handle, zero);
    if (kr == KERN_ABORTED)
      continue;
    if (kr == KERN_OPERATION_TIMED_OUT)
      return MEMPORT_EAGAIN;
    return sem_result(kr);
  }
}

int memport__os_sem_dup(const memport_sem_t *s, memport_sem_t *out) {
  if (out == NULL || !usable(s))
    return MEMPORT_EBADF;
  kern_return_t kr = mach_port_mod_refs(mach_task_self(), s->handle, MACH_PORT_RIGHT_SEND, 1);
  if (kr != KERN_SUCCESS)
    return sem_result(kr);
  out->handle = s->handle;
  out->os.gen = s->os.gen;
  memport__darwin_track(out, MEMPORT_HANDLE_SEM);
  return 0;
}

/* No event count on Darwin: the one cross-process wait on an address (__ulock_wait with
 * UL_COMPARE_AND_WAIT_SHARED) is private API. Callers wake each sleeper's semaphore instead. */
bool memport__os_count_wait_supported(void) { return false; }

int memport__os_count_wait(const _Atomic uint32_t *count, uint32_t seen, uint64_t deadline) {
  (void)count;
  (void)seen;
  (void)deadline;
  return MEMPORT_ENOTSUP;
}

void memport__os_count_wake_all(_Atomic uint32_t *count) { (void)count; }
