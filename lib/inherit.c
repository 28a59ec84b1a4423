/* SPDX-License-Identifier: MIT */
/* lib/inherit.c: argument checks for memport_inherit; the backend sets the fork inheritance. */
#include "config.h"

#include "internal.h"

int memport_inherit(void *addr, size_t len, int mode) {
  if (addr == NULL || len == 0)
    return MEMPORT_EINVAL;
  if (mode != MEMPORT_INHERIT_SHARE && mode != MEMPORT_INHERIT_COPY && mode != MEMPORT_INHERIT_NONE &&
      mode != MEMPORT_INHERIT_ZERO)
    return MEMPORT_EINVAL;
  size_t page = memport__os_page_size();
  if (((uintptr_t)addr & (page - 1)) != 0 || (len & (page - 1)) != 0)
    return MEMPORT_EINVAL;
  if ((uintptr_t)addr + len < (uintptr_t)addr)
    return MEMPORT_EOVERFLOW;
  int rc = memport__os_inherit(addr, len, mode);
  if (rc == 0)
    memport__reg_inherit(addr, len, mode);
  return rc;
}
