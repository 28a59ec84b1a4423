/* SPDX-License-Identifier: MIT */
/* region.c: Darwin regions as Mach memory entries, mapped, mirrored and remapped with mach_vm_*. */
#include "darwin/os.h"

#include <mach/memory_object_types.h>
#include <mach/vm_map.h>

size_t memport__os_page_size(void) { return (size_t)vm_page_size; }

static bool page_aligned(uint64_t v) { return (v & (uint64_t)(vm_page_size - 1)) == 0; }

/* The kernel's page size, never smaller than this task's. The two differ for an x86_64 task under
 * Rosetta on Apple silicon: its map has 4 KiB pages (vm_page_size, the comm page's user page shift)
 * while the kernel and every native peer use 16 KiB pages (vm_kernel_page_size, its kernel page
 * shift; libsyscall mach_init.c). */
static uint64_t kernel_page(void) {
  uint64_t k = (uint64_t)vm_kernel_page_size, p = (uint64_t)vm_page_size;
  return k > p ? k : p;
}

/* Regions are made in whole kernel pages. A named entry created here is sized in this task's pages
 * (MAP_MEM_NAMED_CREATE rounds with the target map's page mask: mach_make_memory_entry_named_create
 * in xnu-11417 osfmk/vm/vm_memory_entry.c, mach_make_memory_entry_internal in xnu-7195
 * osfmk/vm/vm_user.c), while every request for a sub-entry rounds its end with the kernel's
 * PAGE_MASK and fails with KERN_INVALID_ARGUMENT past the parent's size
 * (mach_make_memory_entry_from_parent_entry_sanitize; the parent_entry path in xnu-7195). Under
 * Rosetta a 20 KiB entry could then not even be named whole again, and a native peer, which rounds
 * the announced size to its own 16 KiB pages, could not map it (mach_vm_map: the entry is smaller
 * than asked). In whole kernel pages both problems are gone, at the cost of at most 12 KiB more
 * address space (never memory: pages are allocated when touched); memport_region_size() reports
 * the size made.
 *
 * There is no size limit here: the kernel's is ANON_MAX_SIZE (osfmk/mach/vm_param.h), checked by
 * MAP_MEM_NAMED_CREATE, which answers KERN_FAILURE above it. It was 4 GiB less one kernel page up to
 * xnu-8020 (macOS 12) and is 0xFFFFFFFF kernel pages since xnu-8792 (macOS 13): about 16 TiB with
 * 4 KiB pages, 64 TiB with 16 KiB pages. Asking is the cheapest way to learn the running kernel's
 * limit, and the only one that stays right. */
int memport__os_region_create(memport_region_t *r, size_t size) {
  if (r == NULL || size == 0 || !page_aligned(size))
    return MEMPORT_EINVAL;
  const uint64_t kpage = kernel_page();
  if ((uint64_t)size > (uint64_t)SIZE_MAX - (kpage - 1))
    return MEMPORT_EOVERFLOW;
  const size_t full = (size_t)(((uint64_t)size + kpage - 1) & ~(kpage - 1));
  uintptr_t stamp = memport__darwin_stamp();
  if (stamp == 0)
    return MEMPORT_ENOMEM;
  memory_object_size_t got = full;
  mach_port_t entry = MACH_PORT_NULL;
  /* A new anonymous, zero-filled VM object that belongs to no address space, named by a send
   * right to its memory entry. */
  kern_return_t kr = mach_make_memory_entry_64(mach_task_self(), &got, 0,
                                               MAP_MEM_NAMED_CREATE | VM_PROT_READ | VM_PROT_WRITE, &entry,
                                               MACH_PORT_NULL);
  if (kr != KERN_SUCCESS) {
    /* KERN_FAILURE: larger than ANON_MAX_SIZE (or no entry could be allocated). Every argument but
     * the size is fixed here, so KERN_INVALID_ARGUMENT (xnu-11417's vm_sanitize_addr_size on a
     * size that overflows once rounded) also means "too large". */
    if (kr == KERN_FAILURE || kr == KERN_INVALID_ARGUMENT)
      return MEMPORT_ENOMEM;
    return memport__darwin_err(kr);
  }
  if (!MACH_PORT_VALID(entry)) /* xnu-7195 answers a size that wraps to 0 with no entry */
    return MEMPORT_ENOMEM;
  if (got < full) {
    memport__darwin_release_send(entry);
    return MEMPORT_ENOMEM;
  }
  r->handle = entry;
  r->size = full;
  r->os.gen = stamp;
  memport__darwin_track(r, MEMPORT_HANDLE_REGION);
  return 0;
}

void memport__os_region_close(memport_region_t *r) {
  if (r == NULL)
    return;
  memport__darwin_untrack(r);
  mach_port_name_t h = r->handle;
  bool mine = memport__darwin_mine(r->os.gen);
  r->handle = MEMPORT_OS_HANDLE_INVALID;
  r->os.gen = 0;
  if (mine)
    memport__darwin_release_send(h);
}

/* A new VM_PROT_READ memory entry for [0, size) of the checked entry `entry`, made the way
 * Chromium converts a region to read-only (base/memory/platform_shared_memory_region_mac.cc,
 * ConvertToReadOnly): map the entry read-only, then make an entry of that address range.
 *
 * Why not a sub-entry of `entry` (mach_make_memory_entry_64 with it as parent)? That path rounds
 * the end to the kernel page and refuses anything past the parent (see memport__os_region_create),
 * so a 4 KiB-page task gets KERN_INVALID_ARGUMENT for any entry that is not a whole number of
 * kernel pages (made by another Rosetta process, or adopted with a smaller size), and it refuses
 * every parent made with MAP_MEM_VM_SHARE (is_copy). The address path rounds with the task's own
 * page mask (mach_make_memory_entry_share, xnu-11417; the parent_entry == NULL branch of
 * xnu-7195), copies nothing (vm_map_copy_extract with copy FALSE shares the VM object, and with
 * vmkf_copy_single_object stops where the object changes) and gives an entry whose protection is
 * exactly VM_PROT_READ, so vm_map_enter_mem_object refuses VM_PROT_WRITE through it for good.
 * It also never names a parent: for a port that is no memory entry, the kernel would have taken
 * the sub-entry request as one about this task's own address space.
 *
 * The temporary mapping costs address space only (nothing is touched) and is not inherited by a
 * concurrent fork. A thread that unmaps memory it does not own could swap it before the entry is
 * made; that thread corrupts this process in any case. */
static int readonly_entry(mach_port_t entry, size_t size, mach_port_t *out) {
  mach_port_t task = mach_task_self();
  mach_vm_address_t addr = 0;
  kern_return_t kr = mach_vm_map(task, &addr, (mach_vm_size_t)size, 0, VM_FLAGS_ANYWHERE, entry, 0, FALSE,
                                 VM_PROT_READ, VM_PROT_READ, VM_INHERIT_NONE);
  if (kr != KERN_SUCCESS) {
    if (kr == KERN_INVALID_RIGHT || kr == KERN_INVALID_OBJECT)
      return MEMPORT_EBADF; /* not a memory entry, or one without read access */
    return memport__darwin_err(kr);
  }
  memory_object_size_t got = size;
  mach_port_t ro = MACH_PORT_NULL;
  kr = mach_make_memory_entry_64(task, &got, (memory_object_offset_t)addr, VM_PROT_READ, &ro, MACH_PORT_NULL);
  (void)mach_vm_deallocate(task, addr, (mach_vm_size_t)size);
  if (kr != KERN_SUCCESS)
    return kr == KERN_FAILURE ? MEMPORT_ENOMEM : memport__darwin_err(kr);
  if (!MACH_PORT_VALID(ro))
    return MEMPORT_EPROTO;
  if (got < size) {
    /* The entry spans several VM objects (one made with MAP_MEM_VM_SHARE elsewhere): a single
     * read-only entry cannot name it whole. */
    memport__darwin_release_send(ro);
    return MEMPORT_ENOTSUP;
  }
  *out = ro;
  return 0;
}

int memport__os_region_dup(const memport_region_t *r, bool readonly, memport_region_t *out) {
  if (r == NULL || out == NULL || !MACH_PORT_VALID(r->handle) || !memport__darwin_mine(r->os.gen))
    return MEMPORT_EBADF;
  if (readonly || r->readonly) {
    /* An entry for the same pages that the kernel lets nobody map with VM_PROT_WRITE
     * (vm_map_enter_mem_object compares the requested maximum protection with the entry's). Made
     * for every read-only duplicate, also of a handle already read-only: the new handle must never
     * name a writable entry, whatever the parent handle names. */
    mach_port_t ro = MACH_PORT_NULL;
    int err = readonly_entry(r->handle, r->size, &ro);
    if (err < 0)
      return err;
    out->handle = ro;
    out->os.gen = r->os.gen;
    memport__darwin_track(out, MEMPORT_HANDLE_REGION);
    return 0;
  }
  /* Same entry, same access: one more user reference on the send right. */
  kern_return_t kr = mach_port_mod_refs(mach_task_self(), r->handle, MACH_PORT_RIGHT_SEND, 1);
  if (kr != KERN_SUCCESS)
    return memport__darwin_err(kr);
  out->handle = r->handle;
  out->os.gen = r->os.gen;
  memport__darwin_track(out, MEMPORT_HANDLE_REGION);
  return 0;
}

int memport__os_region_seal(memport_region_t *r) {
  if (r == NULL || !MACH_PORT_VALID(r->handle) || !memport__darwin_mine(r->os.gen))
    return MEMPORT_EBADF;
  if (r->readonly)
    return 0;
  mach_port_t ro = MACH_PORT_NULL;
  int err = readonly_entry(r->handle, r->size, &ro);
  if (err < 0)
    return err;
  /* Drop this handle's read-write right: from now on it names only the read-only entry. Other
   * handles to the read-write entry (earlier duplicates, copies sent away) are not affected: a
   * Mach memory entry is a capability, there is no seal on the memory object itself. */
  /* The swap is made under the fork lock: a fork's prepare handler reads r->handle and adds a
   * reference to that name; released here without the lock, the name could be freed (and reused)
   * between its read and its reference (fork.c, memport__darwin_swap_name). */
  memport__darwin_release_send(memport__darwin_swap_name(&r->handle, ro));
  return 0;
}

int memport__darwin_entry_check(mach_port_name_t name, size_t size, bool writable) {
  if (!MACH_PORT_VALID(name))
    return MEMPORT_EBADF;
  if (size == 0 || !page_aligned(size))
    return MEMPORT_EINVAL;
  mach_port_type_t type = 0;
  kern_return_t kr = mach_port_type(mach_task_self(), name, &type);
  if (kr != KERN_SUCCESS)
    return MEMPORT_EBADF;
  /* A memory entry's receive right lives in the kernel: a name we can receive on is a user port. */
  if ((type & MACH_PORT_TYPE_SEND) == 0 || (type & MACH_PORT_TYPE_RECEIVE) != 0)
    return MEMPORT_EBADF;
  /* Map it (address space only; nothing is touched): the kernel accepts only a memory entry (or a
   * kernel memory object) here, checks the protections against the entry's and the size against
   * its length. vm_map_enter_mem_object answers KERN_INVALID_RIGHT for a protection mismatch and
   * KERN_INVALID_OBJECT for a port that is no memory entry. */
  vm_prot_t prot = VM_PROT_READ | (writable ? VM_PROT_WRITE : 0);
  mach_vm_address_t addr = 0;
  kr = mach_vm_map(mach_task_self(), &addr, (mach_vm_size_t)size, 0, VM_FLAGS_ANYWHERE, name, 0, FALSE, prot,
                   prot, VM_INHERIT_NONE);
  if (kr == KERN_SUCCESS) {
    (void)mach_vm_deallocate(mach_task_self(), addr, (mach_vm_size_t)size);
    return 0;
  }
  switch (kr) {
  case KERN_INVALID_RIGHT:
    return writable ? MEMPORT_EACCES : MEMPORT_EBADF;
  case KERN_INVALID_ARGUMENT:
    return MEMPORT_EINVAL;
  case KERN_INVALID_OBJECT:
  case KERN_INVALID_NAME:
  case KERN_INVALID_CAPABILITY:
    return MEMPORT_EBADF;
  default:
    return memport__darwin_err(kr);
  }
}

/* Does the checked entry cover [0, size)? Asked by mapping it read-only (address space only) and
 * unmapping it at once: vm_map_enter_mem_object compares the entry's size with the offset plus the
 * size asked, unrounded, and answers KERN_INVALID_ARGUMENT when the entry is smaller, before it
 * looks for address space (xnu-11417 osfmk/vm/vm_map.c; vm_map_enter_mem_object_helper in
 * xnu-7195). A sub-entry request would round the size to the kernel page first (see
 * memport__os_region_create), so a 4 KiB-page task would get a wrong answer for an entry that is
 * not a whole number of kernel pages, and it fails for every entry made with MAP_MEM_VM_SHARE. */
static int entry_covers(mach_port_t entry, uint64_t size, bool *covers) {
  int err = memport__darwin_entry_check(entry, (size_t)size, false);
  if (err == 0 || err == MEMPORT_EINVAL) {
    *covers = err == 0;
    return 0;
  }
  return err;
}

/* The length of a checked memory entry, found by probing (there is no public query): doubling,
 * then bisecting in this task's pages; at most about 2 x 48 probes. */
static int entry_size(mach_port_t entry, size_t *out) {
  const uint64_t page = vm_page_size;
  const uint64_t max_pages = ((uint64_t)1 << 47) / page; /* no user address space is larger */
  uint64_t lo = 1, hi = 2; /* lo pages are covered (checked by the caller); hi is a candidate */
  bool covers = false;
  int err;
  for (;;) {
    if (hi > max_pages) {
      hi = max_pages + 1;
      break;
    }
    if ((err = entry_covers(entry, hi * page, &covers)) < 0)
      return err;
    if (!covers)
      break;
    lo = hi;
    hi *= 2;
  }
  /* invariant: lo pages covered, hi pages not (or beyond what we accept) */
  while (hi - lo > 1) {
    uint64_t mid = lo + (hi - lo) / 2;
    if ((err = entry_covers(entry, mid * page, &covers)) < 0)
      return err;
    if (covers)
      lo = mid;
    else
      hi = mid;
  }
  *out = (size_t)(lo * page);
  return 0;
}

int memport__os_region_adopt(memport_region_t *r, memport_os_handle_t h, size_t size, bool readonly) {
  if (r == NULL)
    return MEMPORT_EINVAL;
  if (!MACH_PORT_VALID(h))
    return MEMPORT_EBADF;
  if (size != 0 && !page_aligned(size))
    return MEMPORT_EINVAL;
  uintptr_t stamp = memport__darwin_stamp();
  if (stamp == 0)
    return MEMPORT_ENOMEM;
  /* First page, read access: proves that h is a memory entry before anything else names it. */
  int err = memport__darwin_entry_check(h, vm_page_size, false);
  if (err < 0)
    return err; /* MEMPORT_EINVAL: an entry shorter than a page */
  if (size == 0) {
    if ((err = entry_size(h, &size)) < 0)
      return err;
  } else {
    bool covers = false;
    if ((err = entry_covers(h, size, &covers)) < 0)
      return err;
    if (!covers)
      return MEMPORT_EINVAL;
  }
  /* Is the entry itself writable? Asked by mapping its first page read-write (the kernel compares
   * the maximum protection with the entry's: KERN_INVALID_RIGHT, MEMPORT_EACCES, when it is
   * read-only). A read-only entry adopted without MEMPORT_ADOPT_READONLY is still read-only: say
   * so. */
  bool entry_writable = true;
  err = memport__darwin_entry_check(h, vm_page_size, true);
  if (err == MEMPORT_EACCES)
    entry_writable = false;
  else if (err < 0)
    return err;
  mach_port_name_t keep = h;
  if (readonly && entry_writable) {
    /* A read-only region must name a read-only entry, so that a duplicate or a copy sent on can
     * never be mapped writable (as on Linux, where the descriptor is swapped for a read-only one):
     * derive one, as memport__os_region_seal does, and give up the writable right. Nothing is
     * released before this can fail, so on failure the caller still owns h. */
    mach_port_t ro = MACH_PORT_NULL;
    if ((err = readonly_entry(h, size, &ro)) < 0)
      return err;
    keep = ro;
  }
  r->handle = keep;
  r->size = size;
  r->readonly = readonly || !entry_writable;
  r->os.gen = stamp;
  memport__darwin_track(r, MEMPORT_HANDLE_REGION);
  if (keep != h)
    memport__darwin_release_send(h); /* the reference adopt took over: the region holds ro instead */
  return 0;
}

int memport__os_reserve(size_t len, void **addr) {
  if (addr == NULL || len == 0 || !page_aligned(len))
    return MEMPORT_EINVAL;
  mach_vm_address_t a = 0;
  /* Anonymous memory nobody can access (maximum protection none): only a fixed mapping placed
   * over it can make any of it usable. */
  kern_return_t kr = mach_vm_map(mach_task_self(), &a, (mach_vm_size_t)len, 0, VM_FLAGS_ANYWHERE, MACH_PORT_NULL,
                                 0, FALSE, VM_PROT_NONE, VM_PROT_NONE, VM_INHERIT_NONE);
  if (kr != KERN_SUCCESS)
    return kr == KERN_INVALID_ARGUMENT ? MEMPORT_ENOMEM : memport__darwin_err(kr);
  *addr = (void *)(uintptr_t)a;
  return 0;
}

int memport__os_map(const memport_region_t *r, size_t off, size_t len, bool writable, void *fixed, void **addr) {
  if (r == NULL || addr == NULL)
    return MEMPORT_EINVAL;
  if (!MACH_PORT_VALID(r->handle) || !memport__darwin_mine(r->os.gen))
    return MEMPORT_EBADF;
  if (len == 0 || !page_aligned(off) || !page_aligned(len) || off > r->size || len > r->size - off)
    return MEMPORT_EINVAL;
  if (fixed != NULL && !page_aligned((uint64_t)(uintptr_t)fixed))
    return MEMPORT_EINVAL;
  if (writable && r->readonly)
    return MEMPORT_EACCES;
  /* The maximum protection equals the current one: a read-only view can never be raised to
   * writable with mach_vm_protect / mprotect. Children made by fork share the mapping, as with a
   * MAP_SHARED mapping on Linux. */
  vm_prot_t prot = VM_PROT_READ | (writable ? VM_PROT_WRITE : 0);
  mach_vm_address_t a = (mach_vm_address_t)(uintptr_t)fixed;
  int flags = fixed != NULL ? (VM_FLAGS_FIXED | VM_FLAGS_OVERWRITE) : VM_FLAGS_ANYWHERE;
  kern_return_t kr = mach_vm_map(mach_task_self(), &a, (mach_vm_size_t)len, 0, flags, r->handle,
                                 (memory_object_offset_t)off, FALSE, prot, prot, VM_INHERIT_SHARE);
  if (kr != KERN_SUCCESS) {
    if (kr == KERN_INVALID_RIGHT) /* the entry does not allow prot */
      return writable ? MEMPORT_EACCES : MEMPORT_EBADF;
    if (kr == KERN_INVALID_OBJECT)
      return MEMPORT_EBADF;
    return memport__darwin_err(kr);
  }
  *addr = (void *)(uintptr_t)a;
  return 0;
}

int memport__os_unmap(void *addr, size_t len) {
  if (addr == NULL || len == 0 || !page_aligned((uint64_t)(uintptr_t)addr) || !page_aligned(len))
    return MEMPORT_EINVAL;
  kern_return_t kr = mach_vm_deallocate(mach_task_self(), (mach_vm_address_t)(uintptr_t)addr, (mach_vm_size_t)len);
  return memport__darwin_err(kr);
}

int memport__os_remap(void *src, size_t len, bool readonly, void **out) {
  if (src == NULL || out == NULL || len == 0 || !page_aligned((uint64_t)(uintptr_t)src) || !page_aligned(len))
    return MEMPORT_EINVAL;
  mach_port_t task = mach_task_self();
  mach_vm_address_t target = 0;
  vm_prot_t cur = VM_PROT_NONE, max = VM_PROT_NONE;
  /* copy=FALSE: the new range maps the very pages of [src, src+len) (sharing them, not a
   * copy-on-write snapshot), with their current and maximum protections. */
  kern_return_t kr = mach_vm_remap(task, &target, (mach_vm_size_t)len, 0, VM_FLAGS_ANYWHERE, task,
                                   (mach_vm_address_t)(uintptr_t)src, FALSE, &cur, &max, VM_INHERIT_SHARE);
  if (kr != KERN_SUCCESS)
    return kr == KERN_INVALID_ADDRESS ? MEMPORT_EINVAL : memport__darwin_err(kr);
  if (readonly) {
    /* Lower the maximum protection of the view (the current one follows): it can never be made
     * writable again, while the original range keeps its own protections. */
    kr = mach_vm_protect(task, target, (mach_vm_size_t)len, TRUE, VM_PROT_READ);
    if (kr != KERN_SUCCESS) {
      (void)mach_vm_deallocate(task, target, (mach_vm_size_t)len);
      return memport__darwin_err(kr);
    }
  } else if ((cur & VM_PROT_WRITE) == 0) {
    /* A writable view of memory that is not writable here is not what was asked for. */
    (void)mach_vm_deallocate(task, target, (mach_vm_size_t)len);
    return MEMPORT_EACCES;
  }
  *out = (void *)(uintptr_t)target;
  return 0;
}
