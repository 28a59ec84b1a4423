/* SPDX-License-Identifier: MIT */
/* lib/linux/inherit.c: fork inheritance on Linux: madvise flags, and private memory moved onto a
 * memfd in place (contents and address kept) for MEMPORT_INHERIT_SHARE, and back for COPY/ZERO. */
#include "config.h"

#include "linux/os.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#ifndef MADV_WIPEONFORK
#define MADV_WIPEONFORK 18
#endif
#ifndef MADV_KEEPONFORK
#define MADV_KEEPONFORK 19
#endif
#ifndef MREMAP_MAYMOVE
#define MREMAP_MAYMOVE 1
#endif
#ifndef MREMAP_FIXED
#define MREMAP_FIXED 2
#endif

#define MEMPORT__PROT_RWX (PROT_READ | PROT_WRITE | PROT_EXEC)

static bool memport__page_is_zero(const unsigned char *p, size_t page) {
  const uint64_t *w = (const uint64_t *)(const void *)p;
  for (size_t i = 0; i < page / sizeof *w; i++)
    if (w[i] != 0)
      return false;
  return true;
}

/* Copy n bytes page by page into fresh zero-filled memory, skipping pages that are all zero, so
 * that moving a large, mostly untouched range does not allocate memory for its empty pages. */
static void memport__copy_pages(unsigned char *dst, const unsigned char *src, size_t n) {
  size_t page = memport__os_page_size();
  for (size_t off = 0; off < n; off += page)
    if (!memport__page_is_zero(src + off, page))
      memcpy(dst + off, src + off, page);
}

/* Make [addr, addr+n) readable for the copy if it is not; *changed says whether to undo it. */
static int memport__make_readable(void *addr, size_t n, int prot, bool *changed) {
  *changed = false;
  if (prot & PROT_READ)
    return 0;
  if (mprotect(addr, n, PROT_READ) < 0)
    return MEMPORT_EACCES;
  *changed = true;
  return 0;
}

/* Replace the shared pages [addr, addr+n) with private anonymous pages holding the same bytes and
 * the same protection. The replacement is one mremap over the old pages: at no moment is the
 * range empty or wrong, for a thread that only reads it. */
static int memport__move_to_private(uintptr_t addr, size_t n, int prot) {
  void *src = (void *)addr;
  void *tmp = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (tmp == MAP_FAILED)
    return memport__linux_err();
  bool changed;
  int rc = memport__make_readable(src, n, prot, &changed);
  if (rc < 0) {
    munmap(tmp, n);
    return rc;
  }
  memport__copy_pages(tmp, src, n);
  if (changed)
    (void)mprotect(src, n, prot & MEMPORT__PROT_RWX);
  if ((prot & MEMPORT__PROT_RWX) != (PROT_READ | PROT_WRITE) && mprotect(tmp, n, prot & MEMPORT__PROT_RWX) < 0) {
    rc = memport__linux_err();
    munmap(tmp, n);
    return rc;
  }
  if (mremap(tmp, n, n, MREMAP_MAYMOVE | MREMAP_FIXED, src) == MAP_FAILED) {
    rc = memport__linux_err();
    munmap(tmp, n);
    return rc;
  }
  return 0;
}

/* SHARE: every private piece of the range is copied into one new memfd, then the memfd is mapped
 * MAP_SHARED|MAP_FIXED over each piece (same address, same protection). Shared pieces already are
 * inherited shared and stay as they are. */
static int memport__share(uintptr_t addr, size_t len, const struct memport__vma *v, size_t nv) {
  bool any = false;
  for (size_t i = 0; i < nv; i++) {
    if (v[i].shared)
      continue;
    if (!v[i].anon || (v[i].prot & PROT_EXEC))
      return MEMPORT_ENOTSUP; /* private file mappings, kernel-provided pages, code */
    any = true;
  }
  if (!any)
    return 0;
  int fd;
  int rc = memport__linux_memfd(MEMPORT__LINUX_SHARE_NAME, len, &fd);
  if (rc < 0)
    return rc;
  unsigned char *staging = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (staging == MAP_FAILED) {
    rc = memport__linux_err();
    memport__linux_close(fd);
    return rc;
  }
  for (size_t i = 0; i < nv && rc == 0; i++) {
    if (v[i].shared)
      continue;
    size_t n = v[i].end - v[i].start;
    bool changed;
    rc = memport__make_readable((void *)v[i].start, n, v[i].prot, &changed);
    if (rc == 0) {
      memport__copy_pages(staging + (v[i].start - addr), (const unsigned char *)v[i].start, n);
      if (changed)
        (void)mprotect((void *)v[i].start, n, v[i].prot);
    }
  }
  size_t done = 0;
  for (; done < nv && rc == 0; done++) {
    if (v[done].shared)
      continue;
    size_t n = v[done].end - v[done].start;
    void *p = mmap((void *)v[done].start, n, v[done].prot & MEMPORT__PROT_RWX, MAP_SHARED | MAP_FIXED, fd,
                   (off_t)(v[done].start - addr));
    if (p == MAP_FAILED) {
      rc = memport__linux_err();
      break;
    }
  }
  if (rc < 0) {
    /* Put back what was already moved; the bytes are the same either way, so a failure here
     * leaves a piece shared but never loses data. */
    for (size_t i = 0; i < done; i++)
      if (!v[i].shared)
        (void)memport__move_to_private(v[i].start, v[i].end - v[i].start, v[i].prot);
  }
  munmap(staging, len);
  memport__linux_close(fd);
  return rc;
}

/* Does another mapping of this process show the same memfd pages as the SHARE'd piece `v`
 * (a view made by memport_remap)? Moving the piece back to private memory would silently
 * detach it from that view. */
struct memport__views {
  const struct memport__vma *piece;
  uint64_t off_hi;
};

static int memport__views_fn(const struct memport__vma *w, void *arg) {
  const struct memport__views *q = arg;
  const struct memport__vma *v = q->piece;
  if (w->inode != v->inode || w->dev_major != v->dev_major || w->dev_minor != v->dev_minor)
    return 0;
  if (v->start >= w->start && v->start < w->end)
    return 0; /* the piece's own mapping */
  uint64_t lo = w->pgoff, hi = w->pgoff + (w->end - w->start);
  return (lo < q->off_hi && v->pgoff < hi) ? 1 : 0;
}

static int memport__check_no_views(const struct memport__vma *v) {
  struct memport__views q = {.piece = v, .off_hi = v->pgoff + (v->end - v->start)};
  int rc = memport__linux_maps_foreach(memport__views_fn, &q);
  return rc > 0 ? MEMPORT_EBUSY : rc;
}

static int memport__madvise(uintptr_t addr, size_t n, int advice) {
  if (madvise((void *)addr, n, advice) == 0)
    return 0;
  if (errno == EINVAL)
    return MEMPORT_ENOTSUP; /* this kind of mapping (or this kernel) cannot take the advice */
  return memport__linux_err();
}

int memport__os_inherit(void *addr, size_t len, int mode) {
  uintptr_t a = (uintptr_t)addr;
  struct memport__vma *v;
  size_t nv;
  int rc = memport__linux_vmas(a, len, &v, &nv);
  if (rc < 0)
    return rc;
  switch (mode) {
  case MEMPORT_INHERIT_SHARE:
    rc = memport__share(a, len, v, nv);
    /* Pieces that were shared already stay in place: they may still carry MADV_DONTFORK from an
     * earlier NONE, which would keep them out of the child. */
    for (size_t i = 0; i < nv && rc == 0; i++)
      if (v[i].shared)
        rc = memport__madvise(v[i].start, v[i].end - v[i].start, MADV_DOFORK);
    break;
  case MEMPORT_INHERIT_NONE:
    rc = memport__madvise(a, len, MADV_DONTFORK);
    break;
  case MEMPORT_INHERIT_COPY:
  case MEMPORT_INHERIT_ZERO:
    /* Check every piece before changing any: memory memport moved onto a memfd goes back to
     * private memory; other shared mappings cannot be copied or wiped by the kernel on fork. */
    for (size_t i = 0; i < nv && rc == 0; i++) {
      if (v[i].shared && !v[i].memport_share)
        rc = MEMPORT_ENOTSUP;
      else if (mode == MEMPORT_INHERIT_ZERO && !v[i].shared && !v[i].anon)
        rc = MEMPORT_ENOTSUP; /* MADV_WIPEONFORK takes private anonymous memory only */
      else if (v[i].memport_share)
        rc = memport__check_no_views(&v[i]); /* MEMPORT_EBUSY while remapped elsewhere */
    }
    for (size_t i = 0; i < nv && rc == 0; i++)
      if (v[i].memport_share)
        rc = memport__move_to_private(v[i].start, v[i].end - v[i].start, v[i].prot);
    for (size_t i = 0; i < nv && rc == 0; i++) {
      size_t n = v[i].end - v[i].start;
      rc = memport__madvise(v[i].start, n, MADV_DOFORK);
      if (rc == 0 && (v[i].anon || v[i].memport_share))
        rc = memport__madvise(v[i].start, n, mode == MEMPORT_INHERIT_ZERO ? MADV_WIPEONFORK : MADV_KEEPONFORK);
    }
    break;
  default:
    rc = MEMPORT_EINVAL;
    break;
  }
  free(v);
  return rc;
}
