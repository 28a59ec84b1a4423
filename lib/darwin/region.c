/* SPDX-License-Identifier: MIT */
/* region.c: Darwin regions as Mach memory entries, mapped, mirrored and remapped with mach_vm_*. */
#include "darwin/os.h"

#include <mach/memory_object_types.h>
#include <mach/vm_map.h>

/* The largest anonymous VM object the kernel creates for MAP_MEM_NAMED_CREATE (ANON_MAX_SIZE in
 * xnu: 4 GiB less one 4 KiB page); larger requests fail there with KERN_FAILURE. */
#define MEMPORT__DARWIN_REGION_MAX ((uint64_t)0xFFFFF000u)

size_t memport__os_page_size(void) { return (size_t)vm_page_size; }

static bool page_aligned(uint64_t v) { return (v & (uint64_t)(vm_page_size - 1)) == 0; }

int memport__os_region_create(memport_region_t *r, size_t size) {
  if (r == NULL || size == 0 || !page_aligned(size))
    return MEMPORT_EINVAL;
  if ((uint64_t)size > MEMPORT__DARWIN_REGION_MAX)
    return MEMPORT_ENOMEM;
  uintptr_t stamp = memport__darwin_stamp();
  if (stamp == 0)
    return MEMPORT_ENOMEM;
  memory_object_size_t got = size;
  mach_port_t entry = MACH_PORT_NULL;
  /* A new anonymous, zero-filled VM object that belongs to no address space, named by a send
   * right to its memory entry. */
  kern_return_t kr = mach_make_memory_entry_64(mach_task_self(), &got, 0,
                                               MAP_MEM_NAMED_CREATE | VM_PROT_READ | VM_PROT_WRITE, &entry,
                                               MACH_PORT_NULL);
  if (kr != KERN_SUCCESS)
    return kr == KERN_FAILURE ? MEMPORT_ENOMEM : memport__darwin_err(kr);
  if (!MACH_PORT_VALID(entry)) /* the kernel answers a zero size with no entry */
    return MEMPORT_ENOMEM;
  if (got < size) {
    memport__darwin_release_send(entry);
    return MEMPORT_ENOMEM;
  }
  r->handle = entry;
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

/* A new memory entry for [0, size) of the entry `parent` with exactly `prot`. The parent must be
 * a checked memory entry (see memport__darwin_entry_check): for any other port the kernel would
 * take the request as one about this task's own address space. */
static int sub_entry(mach_port_t parent, size_t size, vm_prot_t prot, mach_port_t *out) {
  memory_object_size_t got = size;
  mach_port_t entry = MACH_PORT_NULL;
  kern_return_t kr = mach_make_memory_entry_64(mach_task_self(), &got, 0, prot, &entry, parent);
  if (kr != KERN_SUCCESS)
    return kr == KERN_FAILURE ? MEMPORT_ENOMEM : memport__darwin_err(kr);
  if (!MACH_PORT_VALID(entry))
    return MEMPORT_EINVAL;
  if (got < size) {
    memport__darwin_release_send(entry);
    return MEMPORT_EINVAL;
  }
  *out = entry;
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
    int err = sub_entry(r->handle, r->size, VM_PROT_READ, &ro);
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
  int err = sub_entry(r->handle, r->size, VM_PROT_READ, &ro);
  if (err < 0)
    return err;
  /* Drop this handle's read-write right: from now on it names only the read-only entry. Other
   * handles to the read-write entry (earlier duplicates, copies sent away) are not affected: a
   * Mach memory entry is a capability, there is no seal on the memory object itself. */
  mach_port_name_t rw = r->handle;
  r->handle = ro;
  memport__darwin_release_send(rw);
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

/* Does the checked entry cover [0, size)? A sub-entry request answers without mapping anything. */
static int entry_covers(mach_port_t entry, uint64_t size, bool *covers) {
  mach_port_t probe = MACH_PORT_NULL;
  memory_object_size_t got = size;
  kern_return_t kr = mach_make_memory_entry_64(mach_task_self(), &got, 0, VM_PROT_NONE, &probe, entry);
  if (kr == KERN_SUCCESS) {
    memport__darwin_release_send(probe);
    *covers = got >= size;
    return 0;
  }
  if (kr == KERN_INVALID_ARGUMENT) {
    *covers = false;
    return 0;
  }
  return memport__darwin_err(kr);
}

/* The length of a checked memory entry, found by asking for sub-entries (there is no public
 * query): doubling, then bisecting in pages; at most about 2 x 48 kernel calls. */
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
  /* First page, read access: proves that h is a memory entry before any request that names it as a
   * parent entry. */
  int err = memport__darwin_entry_check(h, vm_page_size, false);
  if (err == MEMPORT_EINVAL)
    return MEMPORT_EINVAL; /* an entry shorter than a page */
  if (err < 0)
    return err;
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
  /* Is the entry itself writable? Only a writable entry yields a read-write sub-entry. A read-only
   * entry adopted without MEMPORT_ADOPT_READONLY is still read-only: say so. */
  bool entry_writable = true;
  mach_port_t probe = MACH_PORT_NULL;
  err = sub_entry(h, vm_page_size, VM_PROT_READ | VM_PROT_WRITE, &probe);
  if (err == MEMPORT_EACCES)
    entry_writable = false;
  else if (err < 0)
    return err;
  else
    memport__darwin_release_send(probe);
  mach_port_name_t keep = h;
  if (readonly && entry_writable) {
    /* A read-only region must name a read-only entry, so that a duplicate or a copy sent on can
     * never be mapped writable (as on Linux, where the descriptor is swapped for a read-only one):
     * derive one, as memport__os_region_seal does, and give up the writable right. Nothing is
     * released before this can fail, so on failure the caller still owns h. */
    mach_port_t ro = MACH_PORT_NULL;
    if ((err = sub_entry(h, size, VM_PROT_READ, &ro)) < 0)
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
