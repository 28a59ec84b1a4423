/* SPDX-License-Identifier: MIT */
/* chan_lock.c: the channel endpoint under threads: the lock both directions share off the fast path, and wakes a thread could not send while another held it. */
#include "chan.h"

int memport__chan_lock_init(memport_chan_t *ch) {
  pthread_mutexattr_t a;
  if (pthread_mutexattr_init(&a) != 0)
    return MEMPORT_ENOMEM;
  int rc = pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE) == 0 && pthread_mutex_init(&ch->ctl_lock, &a) == 0
               ? 0
               : MEMPORT_ENOMEM;
  pthread_mutexattr_destroy(&a);
  return rc;
}

void memport__chan_lock_fini(memport_chan_t *ch) { pthread_mutex_destroy(&ch->ctl_lock); }

void memport__chan_lock(memport_chan_t *ch) {
  pthread_mutex_lock(&ch->ctl_lock);
  ch->ctl_depth++;
}

/* A wake owed by a thread that found ctl_lock taken (memport__chan_send_wake): sent by whoever
 * holds the lock next, at its outermost unlock. */
static void send_owed(memport_chan_t *ch) {
  if (atomic_exchange_explicit(&ch->wake_owed, false, memory_order_seq_cst))
    memport__chan_send_wake(ch);
}

void memport__chan_unlock(memport_chan_t *ch) {
  if (ch->ctl_depth == 1)
    send_owed(ch);
  ch->ctl_depth--;
  pthread_mutex_unlock(&ch->ctl_lock);
  /* The owing thread sets wake_owed and then tries the lock again: one of the two sees the other. */
  atomic_thread_fence(memory_order_seq_cst);
  if (MEMPORT__UNLIKELY(atomic_load_explicit(&ch->wake_owed, memory_order_relaxed)) &&
      pthread_mutex_trylock(&ch->ctl_lock) == 0) {
    ch->ctl_depth++;
    send_owed(ch);
    ch->ctl_depth--;
    pthread_mutex_unlock(&ch->ctl_lock);
  }
}
