/* SPDX-License-Identifier: MIT */
/* util.c: deadlines on the monotonic clock, page rounding, name syntax and the version query. */
#include "internal.h"

#include <string.h>
#include <time.h>
#include <unistd.h>

uint64_t memport__now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t memport__deadline(int64_t timeout_ns) {
  if (timeout_ns < 0)
    return MEMPORT__NO_DEADLINE;
  if (timeout_ns == 0)
    return 0;
  uint64_t now = memport__now_ns();
  if ((uint64_t)timeout_ns >= MEMPORT__NO_DEADLINE - now)
    return MEMPORT__NO_DEADLINE;
  return now + (uint64_t)timeout_ns;
}

int memport__expired(uint64_t deadline) {
  return deadline == 0 || (deadline != MEMPORT__NO_DEADLINE && memport__now_ns() >= deadline);
}

int64_t memport__remaining_ns(uint64_t deadline) {
  if (deadline == MEMPORT__NO_DEADLINE)
    return MEMPORT_FOREVER;
  uint64_t now = memport__now_ns();
  if (now >= deadline)
    return 0;
  uint64_t left = deadline - now;
  return left > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)left;
}

int memport__nowait_code(int rc, int64_t timeout_ns) {
  return rc == MEMPORT_ETIMEDOUT && timeout_ns == MEMPORT_NOWAIT ? MEMPORT_EAGAIN : rc;
}

size_t memport_page_size(void) { return memport__os_page_size(); }

size_t memport__page_round(size_t size) {
  size_t page = memport__os_page_size();
  if (size > SIZE_MAX - (page - 1))
    return 0;
  return (size + page - 1) & ~(page - 1);
}

int memport__name_check(const char *name) {
  if (name == NULL || name[0] == '\0' || name[0] == '.' || name[0] == '-')
    return MEMPORT_EINVAL;
  size_t i = 0;
  for (; name[i] != '\0'; i++) {
    if (i >= MEMPORT_NAME_MAX)
      return MEMPORT_ENAMETOOLONG;
    unsigned char c = (unsigned char)name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-';
    if (!ok)
      return MEMPORT_EINVAL;
  }
  return 0;
}

bool memport__service_allows(const memport_service_t *svc, const memport_cred_t *peer) {
  if (svc->kind == MEMPORT_NAME_REGION)
    return true; /* a publication's access function decides, per peer (lib/name.c) */
  if (peer->uid == geteuid()) /* peers are identified by effective uid (SO_PEERCRED, audit token) */
    return true;
  /* memport_service_allow_uid may run concurrently: it fills the slot, then publishes the count. */
  size_t n = __atomic_load_n(&svc->nallowed, __ATOMIC_ACQUIRE);
  for (size_t i = 0; i < n; i++)
    if (svc->allowed[i] == peer->uid)
      return true;
  return false;
}

unsigned memport_version(void) { return MEMPORT_VERSION; }

const char *memport_version_string(void) { return MEMPORT_VERSION_STRING; }
