/* SPDX-License-Identifier: MIT */
/* wait.h: the one spin-then-sleep wait of the library, on an absolute deadline, for ring, pool and channel. */
#ifndef MEMPORT_WAIT_H
#define MEMPORT_WAIT_H

#include "internal.h"

/* A hint to the CPU inside a spin loop. */
static inline void memport__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  __asm__ __volatile__("yield" ::: "memory");
#else
  atomic_signal_fence(memory_order_seq_cst);
#endif
}

#define MEMPORT__SPIN_DEFAULT_NS 50000u /* ADAPTIVE: spin this long before sleeping */

/* How a waiter spends its time before the awaited thing is there: MEMPORT_WAIT_SPIN never sleeps,
 * MEMPORT_WAIT_BLOCK never spins, MEMPORT_WAIT_ADAPTIVE spins spin_ns, then sleeps. */
struct memport__wait_policy {
  int policy;
  uint64_t spin_ns;
};

/* Bit of a wait word: the owner of the word is asleep (or about to be) on its semaphore; the other
 * side, having published what it waits for, clears the word by exchange and signals. */
#define MEMPORT__WAIT_SEM 1u

/* The awaited condition: > 0 there, 0 not yet, < 0 an error that ends the wait. */
typedef int (*memport__ready_fn)(void *arg);

/* Returned by memport__wait_spin when the policy's spinning is over and the caller should sleep. */
#define MEMPORT__WAIT_SLEEP 1

MEMPORT_HIDDEN void memport__wait_policy_set(struct memport__wait_policy *w, int policy, uint64_t spin_ns);

/* Spin until ready() says yes (0), `deadline` passes (MEMPORT_ETIMEDOUT), ready() fails (its
 * code), or the policy says to stop spinning (MEMPORT__WAIT_SLEEP). Checks ready() once even when
 * the deadline has passed already. */
MEMPORT_HIDDEN int memport__wait_spin(const struct memport__wait_policy *w, memport__ready_fn ready, void *arg,
                                      uint64_t deadline);

/* Sleep on `sem` until ready() says yes, with the event-count protocol: set MEMPORT__WAIT_SEM in
 * *word (a seq_cst read-modify-write), check ready() again, then sleep; the other side publishes
 * with a seq_cst exchange and then reads *word, so one of the two always sees the other. A
 * hostile peer can only cause spurious wake-ups or none, so the sleep is bounded by `deadline`.
 * 0, MEMPORT_ETIMEDOUT, or an error. */
MEMPORT_HIDDEN int memport__wait_sleep(memport__ready_fn ready, void *arg, _Atomic uint32_t *word,
                                       memport_sem_t *sem, uint64_t deadline);

/* The same protocol on a shared event count instead of a semaphore (internal.h
 * memport__os_count_*): load *count, set MEMPORT__WAIT_SEM in *word, check ready(), sleep until
 * *count changes. The other side exchanges *word after publishing and, when the bit was set, bumps
 * *count and wakes every sleeper with one call: many sleepers cost it one system call. */
MEMPORT_HIDDEN int memport__wait_sleep_count(memport__ready_fn ready, void *arg, _Atomic uint32_t *word,
                                             const _Atomic uint32_t *count, uint64_t deadline);

/* Spin (as the policy says), then sleep: memport__wait_spin followed by memport__wait_sleep. */
MEMPORT_HIDDEN int memport__wait(const struct memport__wait_policy *w, memport__ready_fn ready, void *arg,
                                 _Atomic uint32_t *word, memport_sem_t *sem, uint64_t deadline);

/* The other side of a wait word: after publishing, wake a sleeper if there is one. The fast path
 * is one load of a line the sleeper rarely writes. */
static inline void memport__wait_wake(_Atomic uint32_t *word, memport_sem_t *sem) {
  if (MEMPORT__LIKELY(atomic_load_explicit(word, memory_order_seq_cst) == 0))
    return;
  if (atomic_exchange_explicit(word, 0, memory_order_seq_cst) & MEMPORT__WAIT_SEM)
    memport__os_sem_signal(sem);
}

/* The earlier of two deadlines, and `slice_ns` from now capped by `deadline`. */
static inline uint64_t memport__deadline_min(uint64_t a, uint64_t b) { return a < b ? a : b; }
MEMPORT_HIDDEN uint64_t memport__slice_end(uint64_t deadline, uint64_t slice_ns);

#endif /* MEMPORT_WAIT_H */
