/* SPDX-License-Identifier: MIT */
/* inherit.c: fork inheritance of a range on Darwin with mach_vm_inherit (SHARE, COPY, NONE). */
#include "darwin/os.h"

int memport__os_inherit(void *addr, size_t len, int mode) {
  vm_inherit_t inh;
  switch (mode) {
  case MEMPORT_INHERIT_SHARE:
    inh = VM_INHERIT_SHARE;
    break;
  case MEMPORT_INHERIT_COPY:
    inh = VM_INHERIT_COPY;
    break;
  case MEMPORT_INHERIT_NONE:
    inh = VM_INHERIT_NONE;
    break;
  case MEMPORT_INHERIT_ZERO:
    /* xnu has no zero-on-fork inheritance (vm_inherit.h defines SHARE, COPY, NONE and the
     * obsolete DONATE_COPY only; minherit(2) the same three). */
    return MEMPORT_ENOTSUP;
  default:
    return MEMPORT_EINVAL;
  }
  uint64_t mask = (uint64_t)vm_page_size - 1;
  if (addr == NULL || len == 0 || ((uint64_t)(uintptr_t)addr & mask) != 0 || ((uint64_t)len & mask) != 0)
    return MEMPORT_EINVAL;
  if ((uintptr_t)addr > UINTPTR_MAX - len)
    return MEMPORT_EOVERFLOW;
  kern_return_t kr = mach_vm_inherit(mach_task_self(), (mach_vm_address_t)(uintptr_t)addr, (mach_vm_size_t)len, inh);
  /* vm_map_inherit applies the mode to every mapping inside the range and passes over holes (where
   * Linux's madvise(2) fails with ENOMEM); an address outside the task's map is "not mapped". */
  if (kr == KERN_INVALID_ADDRESS)
    return MEMPORT_ENOMEM;
  return memport__darwin_err(kr);
}
