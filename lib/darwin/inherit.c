/* SPDX-License-Identifier: MIT */
/* inherit.c: fork inheritance of memory ranges on Darwin (mach_vm_inherit, and ZERO built from NONE). */
#include "darwin/os.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * SHARE, COPY and NONE are the kernel's own inheritance values (mach_vm_inherit). xnu has no
 * zero-on-fork value (vm_inherit.h: SHARE, COPY, NONE, and the obsolete DONATE_COPY), so ZERO is
 * built from NONE: the range is marked VM_INHERIT_NONE, so that no byte of it ever reaches a child,
 * and remembered; in a child made by fork(), memport's atfork child handler (fork.c) maps fresh
 * zero-filled pages at the same addresses with the same protections, and marks them NONE again for
 * grandchildren. Children made without fork()'s atfork handlers (a raw fork system call, vfork)
 * see the range absent, as with NONE. Setting another mode on (part of) the range forgets it.
 *
 * COPY is refused on memory the kernel treats as truly shared (a memport region mapping: a memory
 * entry mapped with mach_vm_map), as Linux refuses it for shared mappings. mach_make_memory_entry
 * marks the object true_share with the COPY_DELAY strategy (osfmk/vm/vm_memory_entry.c,
 * mach_make_memory_entry_share); vm_map_fork then leaves the quick copy-on-write path for
 * true_share objects (osfmk/vm/vm_map.c, vm_map_fork: "goto slow_vm_map_fork_copy") and
 * vm_map_fork_copy -> vm_map_copyin_internal -> vm_object_copy_strategically makes a delayed copy
 * (vm_object_copy_delayed, osfmk/vm/vm_object.c): a copy object that every later first write to a
 * page, by any process sharing the region, must push a physical page copy into; with wired pages
 * vm_object_copy_delayed gives up and vm_object_copy_slowly copies the whole range at fork. Either
 * way the region stops being a zero-copy shared object, and the child sees a snapshot that Linux
 * cannot give: MEMPORT_ENOTSUP. ZERO is refused there too, as on Linux (MADV_WIPEONFORK takes
 * private memory only), although NONE plus fresh pages would work here: a portable program must
 * not come to rely on it.
 */

struct zero_range {
  uint64_t start, end;
};

struct zero_piece {
  uint64_t start, end;
  vm_prot_t prot, max;
};

static pthread_mutex_t zero_lock = PTHREAD_MUTEX_INITIALIZER; /* guards everything below */
static struct zero_range *zeros;
static size_t nzeros, capzeros;
static struct zero_piece *zero_plan; /* made by the prepare handler, used in the child */
static size_t nplan;
static bool plan_short; /* the plan misses pieces (out of memory at fork) */

/* Forget [start, end) from the ZERO ranges (zero_lock held). Needs one free slot for a split. */
static void zero_forget(uint64_t start, uint64_t end) {
  for (size_t i = 0; i < nzeros; i++) {
    struct zero_range z = zeros[i];
    if (z.end <= start || z.start >= end)
      continue;
    if (z.start < start && z.end > end) { /* split in two (room made by the caller) */
      zeros[i].end = start;
      zeros[nzeros].start = end;
      zeros[nzeros].end = z.end;
      nzeros++;
      continue;
    }
    if (z.start < start) {
      zeros[i].end = start;
    } else if (z.end > end) {
      zeros[i].start = end;
    } else {
      zeros[i] = zeros[--nzeros];
      i--; /* look at the moved one */
    }
  }
}

/* Walk [start, end): false when a page is not mapped (vm_map_inherit itself passes over holes).
 * With refuse_trueshared, *trueshared tells whether a piece is truly shared memory (see above):
 * vm_map_region_walk (osfmk/vm/vm_map.c) reports SM_TRUESHARED for an unshadowed true_share
 * object with more than one reference, which a mapped memory entry is. */
static bool range_mapped(uint64_t start, uint64_t end, bool *trueshared) {
  mach_port_t task = mach_task_self();
  mach_vm_address_t a = start;
  *trueshared = false;
  while (a < end) {
    mach_vm_address_t ra = a;
    mach_vm_size_t rs = 0;
    vm_region_extended_info_data_t info;
    mach_msg_type_number_t count = VM_REGION_EXTENDED_INFO_COUNT;
    mach_port_t obj = MACH_PORT_NULL;
    kern_return_t kr =
        mach_vm_region(task, &ra, &rs, VM_REGION_EXTENDED_INFO, (vm_region_info_t)&info, &count, &obj);
    memport__darwin_release_send(obj);
    if (kr != KERN_SUCCESS || ra > a || rs == 0)
      return false; /* nothing at a, or the next mapping starts after it */
    if (info.share_mode == SM_TRUESHARED)
      *trueshared = true;
    a = ra + rs;
  }
  return true;
}

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
  case MEMPORT_INHERIT_ZERO:
    inh = VM_INHERIT_NONE;
    break;
  default:
    return MEMPORT_EINVAL;
  }
  uint64_t mask = (uint64_t)vm_page_size - 1;
  if (addr == NULL || len == 0 || ((uint64_t)(uintptr_t)addr & mask) != 0 || ((uint64_t)len & mask) != 0)
    return MEMPORT_EINVAL;
  if ((uintptr_t)addr > UINTPTR_MAX - len)
    return MEMPORT_EOVERFLOW;
  if (mode == MEMPORT_INHERIT_ZERO && memport__darwin_stamp() == 0)
    return MEMPORT_ENOMEM; /* no fork handlers */
  uint64_t start = (uint64_t)(uintptr_t)addr, end = start + len;
  pthread_mutex_lock(&zero_lock);
  /* Room for the bookkeeping first (a split and a new range), so that a failure leaves the
   * inheritance unchanged. */
  int err = 0;
  if (nzeros + 2 > capzeros) {
    size_t cap = capzeros == 0 ? 16 : capzeros * 2 + 2;
    struct zero_range *n = realloc(zeros, cap * sizeof *n);
    if (n == NULL)
      err = MEMPORT_ENOMEM;
    else {
      zeros = n;
      capzeros = cap;
    }
  }
  /* A range with unmapped pages is refused, as madvise(2) refuses it on Linux (ENOMEM). */
  bool trueshared = false;
  if (err == 0 && !range_mapped(start, end, &trueshared))
    err = MEMPORT_ENOMEM;
  if (err == 0 && (mode == MEMPORT_INHERIT_COPY || mode == MEMPORT_INHERIT_ZERO) && trueshared)
    err = MEMPORT_ENOTSUP; /* a region mapping: see the top of this file */
  if (err == 0) {
    kern_return_t kr = mach_vm_inherit(mach_task_self(), (mach_vm_address_t)start, (mach_vm_size_t)len, inh);
    if (kr == KERN_INVALID_ADDRESS)
      err = MEMPORT_ENOMEM;
    else if (kr != KERN_SUCCESS)
      err = memport__darwin_err(kr);
  }
  if (err == 0) {
    zero_forget(start, end);
    if (mode == MEMPORT_INHERIT_ZERO) {
      zeros[nzeros].start = start;
      zeros[nzeros].end = end;
      nzeros++;
    }
  }
  pthread_mutex_unlock(&zero_lock);
  return err;
}

/* Prepare handler: the pieces of the ZERO ranges that are still mapped with VM_INHERIT_NONE, and
 * their protections. Ranges nothing is mapped in any more are dropped. Takes zero_lock until the
 * parent or child handler. */
void memport__darwin_zero_prepare(void) {
  pthread_mutex_lock(&zero_lock);
  free(zero_plan);
  zero_plan = NULL;
  nplan = 0;
  plan_short = false;
  if (nzeros == 0)
    return;
  size_t cap = nzeros * 2 + 8;
  zero_plan = malloc(cap * sizeof *zero_plan);
  plan_short = zero_plan == NULL; /* the child then sees the ranges absent, and says so */
  if (zero_plan == NULL)
    return;
  mach_port_t task = mach_task_self();
  for (size_t i = 0; i < nzeros; i++) {
    bool mapped = false;
    mach_vm_address_t a = zeros[i].start;
    while (a < zeros[i].end) {
      mach_vm_address_t ra = a;
      mach_vm_size_t rs = 0;
      vm_region_basic_info_data_64_t info;
      mach_msg_type_number_t count = VM_REGION_BASIC_INFO_COUNT_64;
      mach_port_t obj = MACH_PORT_NULL;
      kern_return_t kr =
          mach_vm_region(task, &ra, &rs, VM_REGION_BASIC_INFO_64, (vm_region_info_t)&info, &count, &obj);
      memport__darwin_release_send(obj);
      if (kr != KERN_SUCCESS || ra >= zeros[i].end || rs == 0)
        break;
      mapped = true;
      uint64_t ps = ra > a ? ra : a;
      uint64_t pe = ra + rs < zeros[i].end ? ra + rs : zeros[i].end;
      if (info.inheritance == VM_INHERIT_NONE && pe > ps) {
        if (nplan == cap) {
          struct zero_piece *n = realloc(zero_plan, cap * 2 * sizeof *n);
          if (n == NULL) {
            plan_short = true;
            return;
          }
          zero_plan = n;
          cap *= 2;
        }
        zero_plan[nplan].start = ps;
        zero_plan[nplan].end = pe;
        zero_plan[nplan].prot = info.protection;
        zero_plan[nplan].max = info.max_protection;
        nplan++;
      }
      a = ra + rs;
    }
    if (!mapped) { /* unmapped since: forget it */
      zeros[i] = zeros[--nzeros];
      i--;
    }
  }
}

void memport__darwin_zero_parent(void) {
  free(zero_plan);
  zero_plan = NULL;
  nplan = 0;
  pthread_mutex_unlock(&zero_lock);
}

/* Say on standard error that [start, end) of a ZERO range could not get zero pages in this child
 * (write(2) only: this runs in a fork child). */
static void zero_complain(uint64_t start, uint64_t end, const char *what) {
  char line[200];
  int n = snprintf(line, sizeof line,
                   "memport: fork child %d: MEMPORT_INHERIT_ZERO range [0x%llx, 0x%llx) %s\n", (int)getpid(),
                   (unsigned long long)start, (unsigned long long)end, what);
  if (n > 0)
    (void)!write(STDERR_FILENO, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* Zero pages for [start, end) in this child, with the parent's protections, NONE for grandchildren. */
static bool zero_fill(uint64_t start, uint64_t end, const struct zero_piece *z) {
  mach_port_t task = mach_task_self();
  mach_vm_address_t a = start;
  mach_vm_size_t len = end - start;
  /* FIXED without OVERWRITE: only where nothing is mapped. */
  if (mach_vm_allocate(task, &a, len, VM_FLAGS_FIXED) != KERN_SUCCESS)
    return false;
  (void)mach_vm_protect(task, a, len, TRUE, z->max);
  (void)mach_vm_protect(task, a, len, FALSE, z->prot);
  (void)mach_vm_inherit(task, a, len, VM_INHERIT_NONE); /* still ZERO for grandchildren */
  return true;
}

/* Child handler: fresh zero pages where the parent had ZERO ranges (absent here, being NONE).
 *
 * The range is a hole in the child from fork until this handler runs, and Libsystem's own child
 * handlers and the pthread_atfork child handlers registered before memport's run first
 * (Libsystem init.c, libSystem_atfork_child): one of them may have mapped memory into the hole
 * (malloc growing a zone, say). That memory belongs to whoever mapped it: mapping zero pages over
 * it (VM_FLAGS_OVERWRITE) would free it under its owner. So each piece is filled where it is still
 * free, walked with mach_vm_region, and every part taken by something else (or that could not be
 * allocated) is reported on standard error: the program must not use that part of its range in
 * this child. Never silently. */
void memport__darwin_zero_child(void) {
  mach_port_t task = mach_task_self();
  if (plan_short)
    zero_complain(0, 0, "(some or all ranges) not prepared, out of memory at fork: absent");
  for (size_t i = 0; i < nplan; i++) {
    const struct zero_piece *z = &zero_plan[i];
    if (zero_fill(z->start, z->end, z))
      continue;
    uint64_t a = z->start;
    while (a < z->end) {
      mach_vm_address_t ra = a;
      mach_vm_size_t rs = 0;
      vm_region_basic_info_data_64_t info;
      mach_msg_type_number_t count = VM_REGION_BASIC_INFO_COUNT_64;
      mach_port_t obj = MACH_PORT_NULL;
      kern_return_t kr =
          mach_vm_region(task, &ra, &rs, VM_REGION_BASIC_INFO_64, (vm_region_info_t)&info, &count, &obj);
      memport__darwin_release_send(obj);
      if (kr == KERN_SUCCESS && ra <= a && rs > 0) { /* taken here by someone else */
        uint64_t e = ra + rs < z->end ? ra + rs : z->end;
        zero_complain(a, e, "was taken by another mapping before memport's fork handler ran: not zeroed");
        a = e;
        continue;
      }
      uint64_t e = (kr == KERN_SUCCESS && ra < z->end) ? ra : z->end; /* the free part */
      if (!zero_fill(a, e, z))
        zero_complain(a, e, "could not be allocated: absent");
      a = e;
    }
  }
  free(zero_plan);
  zero_plan = NULL;
  nplan = 0;
  pthread_mutex_unlock(&zero_lock);
}
