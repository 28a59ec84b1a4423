/* SPDX-License-Identifier: MIT */
/* wait.c: spin-then-sleep on an absolute deadline, the one wait the ring, the pool and the channel use. */
#include "wait.h"

void memport__wait_policy_set(struct memport__wait_policy *w, int policy, uint64_t spin_ns) {
  w->policy = policy;
  w->spin_ns = spin_ns != 0 ? spin_ns : MEMPORT__SPIN_DEFAULT_NS;
}

uint64_t memport__slice_end(uint64_t deadline, uint64_t slice_ns) {
  uint64_t now = memport__now_ns();
  uint64_t end = now + slice_ns < now ? MEMPORT__NO_DEADLINE : now + slice_ns;
  return end < deadline ? end : deadline;
}

int memport__wait_spin(const struct memport__wait_policy *w, memport__ready_fn ready, void *arg, uint64_t deadline) {
  int rc = ready(arg);
  if (rc != 0)
    return rc > 0 ? 0 : rc;
  if (deadline == 0) /* not asked to wait: no clock read */
    return MEMPORT_ETIMEDOUT;
  if (w->policy == MEMPORT_WAIT_BLOCK)
    return memport__expired(deadline) ? MEMPORT_ETIMEDOUT : MEMPORT__WAIT_SLEEP;
  uint64_t now = memport__now_ns();
  if (now >= deadline)
    return MEMPORT_ETIMEDOUT;
  uint64_t spin_end = w->policy == MEMPORT_WAIT_SPIN ? MEMPORT__NO_DEADLINE
                      : (now + w->spin_ns < now ? MEMPORT__NO_DEADLINE : now + w->spin_ns);
  for (unsigned i = 1;; i++) {
    rc = ready(arg);
    if (rc != 0)
      return rc > 0 ? 0 : rc;
    memport__cpu_relax();
    if ((i & 31) == 0) { /* the clock is read every 32 turns only */
      now = memport__now_ns();
      if (now >= deadline)
        return MEMPORT_ETIMEDOUT;
      if (now >= spin_end)
        return MEMPORT__WAIT_SLEEP;
    }
  }
}

int memport__wait_sleep(memport__ready_fn ready, void *arg, _Atomic uint32_t *word, memport_sem_t *sem,
                        uint64_t deadline) {
  for (;;) {
    atomic_fetch_or_explicit(word, MEMPORT__WAIT_SEM, memory_order_seq_cst);
    int rc = ready(arg);
    if (rc == 0 && memport__expired(deadline))
      rc = MEMPORT_ETIMEDOUT;
    if (rc == 0)
      rc = memport__os_sem_wait(sem, deadline);
    if (rc != 0 && rc != MEMPORT_ETIMEDOUT) {
      atomic_fetch_and_explicit(word, ~MEMPORT__WAIT_SEM, memory_order_relaxed);
      return rc > 0 ? 0 : rc;
    }
    if (rc == MEMPORT_ETIMEDOUT && memport__expired(deadline)) {
      /* one last look: what was published while we slept still counts */
      atomic_fetch_and_explicit(word, ~MEMPORT__WAIT_SEM, memory_order_relaxed);
      rc = ready(arg);
      return rc > 0 ? 0 : rc < 0 ? rc : MEMPORT_ETIMEDOUT;
    }
  }
}

int memport__wait_sleep_count(memport__ready_fn ready, void *arg, _Atomic uint32_t *word,
                              const _Atomic uint32_t *count, uint64_t deadline) {
  for (;;) {
    /* The count first: a bump made after the other side saw our bit (below) changes it. */
    uint32_t seen = atomic_load_explicit(count, memory_order_seq_cst);
    atomic_fetch_or_explicit(word, MEMPORT__WAIT_SEM, memory_order_seq_cst);
    int rc = ready(arg);
    if (rc == 0 && memport__expired(deadline))
      rc = MEMPORT_ETIMEDOUT;
    if (rc == 0)
      rc = memport__os_count_wait(count, seen, deadline);
    if (rc != 0 && rc != MEMPORT_ETIMEDOUT) {
      atomic_fetch_and_explicit(word, ~MEMPORT__WAIT_SEM, memory_order_relaxed);
      return rc > 0 ? 0 : rc;
    }
    if (rc == MEMPORT_ETIMEDOUT && memport__expired(deadline)) {
      atomic_fetch_and_explicit(word, ~MEMPORT__WAIT_SEM, memory_order_relaxed);
      rc = ready(arg);
      return rc > 0 ? 0 : rc < 0 ? rc : MEMPORT_ETIMEDOUT;
    }
  }
}

int memport__wait(const struct memport__wait_policy *w, memport__ready_fn ready, void *arg, _Atomic uint32_t *word,
                  memport_sem_t *sem, uint64_t deadline) {
  int rc = memport__wait_spin(w, ready, arg, deadline);
  if (rc != MEMPORT__WAIT_SLEEP)
    return rc;
  return memport__wait_sleep(ready, arg, word, sem, deadline);
}
