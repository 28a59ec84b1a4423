/* SPDX-License-Identifier: MIT */
/* lib/sem.c: the portable half of counting semaphores: argument checks, object lifetime, deadlines. */
#include "config.h"

#include "internal.h"

#include <stdlib.h>

static void sem_free(memport_sem_t *s) { free(s); }

static memport_sem_t *sem_alloc(void) {
  memport_sem_t *s = calloc(1, sizeof *s);
  if (s != NULL) {
    s->handle = MEMPORT_OS_HANDLE_INVALID;
  }
  return s;
}

int memport_sem_create(memport_sem_t **out, unsigned initial, unsigned flags) {
  if (out == NULL || flags != 0)
    return MEMPORT_EINVAL;
  memport_sem_t *s = sem_alloc();
  if (s == NULL)
    return MEMPORT_ENOMEM;
  int rc = memport__os_sem_create(s, initial);
  if (rc != 0) {
    sem_free(s);
    return rc;
  }
  *out = s;
  return 0;
}

int memport_sem_close(memport_sem_t *sem) {
  if (sem == NULL)
    return 0;
  memport__os_sem_close(sem);
  sem_free(sem);
  return 0;
}

int memport_sem_signal(memport_sem_t *sem) {
  if (sem == NULL)
    return MEMPORT_EINVAL;
  return memport__os_sem_signal(sem);
}

int memport_sem_signal_all(memport_sem_t *sem) {
  if (sem == NULL)
    return MEMPORT_EINVAL;
  return memport__os_sem_signal_all(sem);
}

int memport_sem_wait(memport_sem_t *sem, int64_t timeout_ns) {
  if (sem == NULL)
    return MEMPORT_EINVAL;
  int rc = memport__os_sem_wait(sem, memport__deadline(timeout_ns));
  /* MEMPORT_NOWAIT behaves as memport_sem_trywait. */
  rc = memport__nowait_code(rc, timeout_ns);
  return rc;
}

int memport_sem_trywait(memport_sem_t *sem) {
  if (sem == NULL)
    return MEMPORT_EINVAL;
  return memport__os_sem_trywait(sem);
}

int memport_sem_dup(memport_sem_t *sem, memport_sem_t **out) {
  if (sem == NULL || out == NULL)
    return MEMPORT_EINVAL;
  memport_sem_t *s = sem_alloc();
  if (s == NULL)
    return MEMPORT_ENOMEM;
  int rc = memport__os_sem_dup(sem, s);
  if (rc != 0) {
    sem_free(s);
    return rc;
  }
  *out = s;
  return 0;
}
