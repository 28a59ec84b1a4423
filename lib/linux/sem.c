/* SPDX-License-Identifier: MIT */
/* lib/linux/sem.c: counting semaphores as a futex word in a sealed one-page memfd shared between processes. */
#include "config.h"

#include "internal.h"
#include "os.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/*
 * The shared page. Every process that holds the semaphore maps it MAP_SHARED, and any of them may
 * write anything into it, so nothing here is trusted: values are loaded once into locals, a count
 * is only ever taken with a compare-and-swap from a value > 0, and `waiters` is a hint that
 * decides whether signal makes a FUTEX_WAKE call (a wrong hint costs a wasted system call or,
 * if a peer zeroes it on purpose, a missed wake-up that peer could have caused by never
 * signalling anyway; it never makes us crash or spin).
 *
 * Waiter protocol (no lost wake-up between honest parties):
 *   wait:   c = count; while c > 0: CAS(count, c, c-1) -> done
 *           waiters += 1                       (seq_cst)
 *           FUTEX_WAIT(&count, 0, deadline)    (the kernel re-reads count under its hash lock and
 *                                              sleeps only if it is still 0)
 *           waiters -= 1 (saturating at 0); loop
 *   signal: count += 1 (CAS, refusing to pass MEMPORT__SEM_MAX) (seq_cst)
 *           if waiters != 0: FUTEX_WAKE(&count, 1)
 * Both sides do a seq_cst write then a seq_cst read of the other's variable, so at least one
 * sees the other: either signal sees waiters != 0 and wakes, or the waiter's futex call sees
 * count != 0 and returns at once (EAGAIN).
 */
struct memport__futex_sem {
  _Atomic uint32_t count;   /* the futex word; offset 0 */
  _Atomic uint32_t waiters; /* processes/threads between registering and leaving FUTEX_WAIT */
  uint32_t magic;           /* MEMPORT__SEM_MAGIC: written once at create, checked on adopt */
  uint32_t version;         /* MEMPORT__SEM_VERSION */
};

#define MEMPORT__SEM_MAGIC   0x4d505345u /* "MPSE" */
#define MEMPORT__SEM_VERSION 1u
#define MEMPORT__SEM_MAX     0x7fffffffu

static long futex(_Atomic uint32_t *addr, int op, uint32_t val, const struct timespec *ts, uint32_t val3) {
  /* Not FUTEX_PRIVATE_FLAG: the word lives in a MAP_SHARED mapping used by several processes. */
  return syscall(SYS_futex, (uint32_t *)addr, op, val, ts, NULL, val3);
}

/* An absolute CLOCK_MONOTONIC deadline for FUTEX_WAIT_BITSET, or NULL for none. */
static const struct timespec *deadline_ts(uint64_t deadline, struct timespec *ts) {
  if (deadline == MEMPORT__NO_DEADLINE)
    return NULL;
  ts->tv_sec = (time_t)(deadline / 1000000000u);
  ts->tv_nsec = (long)(deadline % 1000000000u);
  return ts;
}

static size_t sem_map_len(void) { return memport__os_page_size(); }

static struct memport__futex_sem *sem_page(const memport_sem_t *s) { return s->os.page; }

int memport__linux_sem_adopt(memport_sem_t *s, int fd) {
  /* A hostile sender could hand us a file it can later shrink (SIGBUS on access) or a file too
   * small for the page: require a memfd (only shmem files have seals; checking them first never
   * reaches another file system) sealed against shrinking, a regular file of at least one page. */
  int seals = fcntl(fd, F_GET_SEALS);
  if (seals < 0 || !(seals & F_SEAL_SHRINK))
    return MEMPORT_EPROTO;
  struct stat st;
  if (fstat(fd, &st) != 0)
    return MEMPORT_EPROTO;
  size_t len = sem_map_len();
  if (!S_ISREG(st.st_mode) || st.st_size < 0 || (uint64_t)st.st_size < (uint64_t)len)
    return MEMPORT_EPROTO;
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    int e = errno;
    /* Read-only descriptor or write-sealed file: not a semaphore we can use. */
    return (e == ENOMEM || e == EAGAIN) ? MEMPORT_ENOMEM : MEMPORT_EPROTO;
  }
  struct memport__futex_sem *page = p;
  uint32_t magic = __atomic_load_n(&page->magic, __ATOMIC_RELAXED);
  uint32_t version = __atomic_load_n(&page->version, __ATOMIC_RELAXED);
  if (magic != MEMPORT__SEM_MAGIC || version != MEMPORT__SEM_VERSION) {
    munmap(p, len);
    return MEMPORT_EPROTO;
  }
  s->handle = fd;
  s->os.page = p;
  return 0;
}

int memport__os_sem_create(memport_sem_t *s, unsigned initial) {
  if (initial > MEMPORT__SEM_MAX)
    return MEMPORT_EINVAL;
  size_t len = sem_map_len();
  int fd = -1;
  /* One page, sealed GROW|SHRINK by the helper: its size can never change under a mapping. */
  int rc = memport__linux_memfd("memport-sem", len, &fd);
  if (rc != 0)
    return rc;
  /* No further seals either: nobody can add F_SEAL_FUTURE_WRITE to stop later receivers from
   * mapping it writable. */
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL) != 0) {
    rc = memport__linux_err();
    goto fail;
  }
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    rc = memport__linux_err();
    goto fail;
  }
  struct memport__futex_sem *page = p;
  atomic_store_explicit(&page->count, initial, memory_order_relaxed);
  atomic_store_explicit(&page->waiters, 0, memory_order_relaxed);
  page->magic = MEMPORT__SEM_MAGIC;
  page->version = MEMPORT__SEM_VERSION;
  atomic_thread_fence(memory_order_seq_cst);
  s->handle = fd;
  s->os.page = p;
  return 0;
fail:
  memport__linux_close(fd);
  return rc;
}

void memport__os_sem_close(memport_sem_t *s) {
  if (s->os.page != NULL)
    munmap(s->os.page, sem_map_len());
  if (s->handle >= 0)
    close(s->handle);
  s->os.page = NULL;
  s->handle = -1;
}

int memport__os_sem_dup(const memport_sem_t *s, memport_sem_t *out) {
  int fd = fcntl(s->handle, F_DUPFD_CLOEXEC, 0);
  if (fd < 0)
    return memport__linux_err();
  int rc = memport__linux_sem_adopt(out, fd);
  if (rc != 0)
    close(fd);
  return rc;
}

int memport__os_sem_trywait(memport_sem_t *s) {
  struct memport__futex_sem *page = sem_page(s);
  uint32_t c = atomic_load_explicit(&page->count, memory_order_relaxed);
  while (c > 0) {
    /* Acquire on success: what the signaller wrote before signalling is visible to us. */
    if (atomic_compare_exchange_weak_explicit(&page->count, &c, c - 1, memory_order_acquire,
                                              memory_order_relaxed))
      return 0;
  }
  return MEMPORT_EAGAIN;
}

static void waiters_leave(struct memport__futex_sem *page) {
  /* Saturating: a peer may have zeroed the hint while we slept; never wrap to 2^32-1. */
  uint32_t w = atomic_load_explicit(&page->waiters, memory_order_relaxed);
  while (w > 0 &&
         !atomic_compare_exchange_weak_explicit(&page->waiters, &w, w - 1, memory_order_relaxed,
                                                memory_order_relaxed)) {
  }
}

static void waiters_enter(struct memport__futex_sem *page) {
  uint32_t w = atomic_load_explicit(&page->waiters, memory_order_relaxed);
  for (;;) {
    /* Saturating too: a garbage value near the top must not wrap back to 0 (which would make
     * signallers skip the wake-up). */
    uint32_t next = w == UINT32_MAX ? w : w + 1;
    if (atomic_compare_exchange_weak_explicit(&page->waiters, &w, next, memory_order_seq_cst,
                                              memory_order_relaxed))
      return;
  }
}

int memport__os_sem_wait(memport_sem_t *s, uint64_t deadline) {
  struct memport__futex_sem *page = sem_page(s);
  for (;;) {
    if (memport__os_sem_trywait(s) == 0)
      return 0;
    if (memport__expired(deadline))
      return MEMPORT_ETIMEDOUT;
    struct timespec ts;
    const struct timespec *tsp = deadline_ts(deadline, &ts);
    waiters_enter(page);
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline (no FUTEX_CLOCK_REALTIME), so
     * retrying after EINTR or a spurious wake-up does not stretch the wait. */
    long r = futex(&page->count, FUTEX_WAIT_BITSET, 0, tsp, FUTEX_BITSET_MATCH_ANY);
    int e = r == 0 ? 0 : errno;
    waiters_leave(page);
    if (r != 0 && e != EAGAIN && e != EINTR && e != ETIMEDOUT) {
      /* EFAULT/EINVAL/ENOSYS cannot happen on a valid mapping; do not spin on them. */
      return e == ENOSYS ? MEMPORT_ENOTSUP : MEMPORT_EPROTO;
    }
    /* Woken, count changed, interrupted or timed out: try again (the expiry check above ends a
     * timed-out wait after one last attempt to take the count). */
  }
}

int memport__os_sem_signal(memport_sem_t *s) {
  struct memport__futex_sem *page = sem_page(s);
  uint32_t c = atomic_load_explicit(&page->count, memory_order_relaxed);
  do {
    if (c >= MEMPORT__SEM_MAX)
      return MEMPORT_EOVERFLOW;
  } while (!atomic_compare_exchange_weak_explicit(&page->count, &c, c + 1, memory_order_seq_cst,
                                                  memory_order_relaxed));
  /* The fast path: nobody registered as waiting, no system call. */
  if (atomic_load_explicit(&page->waiters, memory_order_seq_cst) == 0)
    return 0;
  futex(&page->count, FUTEX_WAKE, 1, NULL, 0);
  return 0;
}

int memport__os_sem_signal_all(memport_sem_t *s) {
  struct memport__futex_sem *page = sem_page(s);
  /* Make one unit of count for every waiter registered now, then wake them all. `waiters` may be
   * garbage: the count saturates at MEMPORT__SEM_MAX and never wraps. */
  uint32_t w = atomic_load_explicit(&page->waiters, memory_order_seq_cst);
  if (w == 0)
    return 0;
  uint32_t c = atomic_load_explicit(&page->count, memory_order_relaxed);
  uint32_t next;
  do {
    if (c >= MEMPORT__SEM_MAX)
      next = c; /* already saturated (or garbage): leave it, still wake */
    else
      next = (w > MEMPORT__SEM_MAX - c) ? MEMPORT__SEM_MAX : c + w;
  } while (next != c && !atomic_compare_exchange_weak_explicit(&page->count, &c, next, memory_order_seq_cst,
                                                               memory_order_relaxed));
  futex(&page->count, FUTEX_WAKE, INT_MAX, NULL, 0);
  return 0;
}

/* The event count: a plain futex on the shared word. FUTEX_WAIT only reads the word, so the
 * waiter's mapping may be read-only; the kernel compares it with `seen` under its hash-bucket
 * lock, so a change made (and woken) after our load is never missed. */
bool memport__os_count_wait_supported(void) { return true; }

int memport__os_count_wait(const _Atomic uint32_t *count, uint32_t seen, uint64_t deadline) {
  if (memport__expired(deadline))
    return MEMPORT_ETIMEDOUT;
  struct timespec ts;
  long r = futex((_Atomic uint32_t *)count, FUTEX_WAIT_BITSET, seen, deadline_ts(deadline, &ts), FUTEX_BITSET_MATCH_ANY);
  if (r == 0 || errno == EAGAIN || errno == EINTR)
    return 0;
  if (errno == ETIMEDOUT)
    return MEMPORT_ETIMEDOUT;
  return errno == ENOSYS ? MEMPORT_ENOTSUP : MEMPORT_EPROTO;
}

void memport__os_count_wake_all(_Atomic uint32_t *count) { (void)futex(count, FUTEX_WAKE, INT_MAX, NULL, 0); }
