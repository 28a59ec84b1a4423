/* SPDX-License-Identifier: MIT */
/* lib/linux/region.c: regions as sealed memfds, their mappings and remaps, on Linux. */
#include "config.h"

#include "linux/os.h"

#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>

#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif
#ifndef MREMAP_MAYMOVE
#define MREMAP_MAYMOVE 1
#endif
#ifndef MREMAP_FIXED
#define MREMAP_FIXED 2
#endif

size_t memport__os_page_size(void) {
  static atomic_size_t cached;
  size_t page = atomic_load_explicit(&cached, memory_order_relaxed);
  if (MEMPORT__UNLIKELY(page == 0)) {
    long v = sysconf(_SC_PAGESIZE);
    page = v > 0 ? (size_t)v : 4096u;
    atomic_store_explicit(&cached, page, memory_order_relaxed);
  }
  return page;
}

/* ------------------------------------------------------------------------------------------ */
/* Shared helpers (declared in os.h).                                                          */

bool memport__linux_fd_readonly(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0 && (fl & O_ACCMODE) == O_RDONLY)
    return true;
  return (memport__linux_seals(fd) & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) != 0;
}

static int memport__memfd_create(const char *name, unsigned flags) {
#if defined(SYS_memfd_create)
  return (int)syscall(SYS_memfd_create, name, flags);
#else
  return memfd_create(name, flags);
#endif
}

int memport__linux_memfd(const char *name, size_t size, int *out) {
  /* A file larger than off_t can express cannot exist: that is an impossible size. */
  if (size == 0 || size > (size_t)INT64_MAX)
    return size == 0 ? MEMPORT_EINVAL : MEMPORT_ENOMEM;
  int fd = memport__memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL);
  if (fd < 0 && errno == EINVAL) /* kernels before 6.3 do not know MFD_NOEXEC_SEAL */
    fd = memport__memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0)
    return errno == ENOSYS ? MEMPORT_ENOTSUP : memport__linux_err();
  int rc;
  while ((rc = ftruncate(fd, (off_t)size)) < 0 && errno == EINTR) {
  }
  if (rc < 0) {
    int e = errno;
    memport__linux_close(fd);
    /* EFBIG/EINVAL: larger than the file system allows; ENOSPC/ENOMEM: memory limits. */
    return (e == EFBIG || e == EINVAL || e == ENOSPC || e == ENOMEM) ? MEMPORT_ENOMEM : -e;
  }
  /* Nobody who ever holds this descriptor can change the size, so no mapping can SIGBUS. */
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK) < 0) {
    int e = errno;
    memport__linux_close(fd);
    return e == EINVAL ? MEMPORT_ENOTSUP : -e;
  }
  /* Defence in depth: mode 0444, so that a holder without CAP_DAC_OVERRIDE cannot reopen the
   * memfd writable through /proc/PID/fd (which is how a read-only descriptor would regain write
   * access), while any holder, of any uid, can still reopen it read-only to make a read-only
   * duplicate. The seals, not the mode, are the real guarantee, so a failure here (e.g. a sandbox
   * refusing fchmod) is not fatal. */
  (void)fchmod(fd, 0444);
  *out = fd;
  return 0;
}

int memport__linux_memfd_check(int fd, size_t *size, bool *readonly) {
  if (fd < 0)
    return MEMPORT_EBADF;
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0)
    return MEMPORT_EBADF;
#ifdef O_PATH
  if (fl & O_PATH)
    return MEMPORT_EBADF;
#endif
  struct stat st;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < 0)
    return MEMPORT_EBADF;
  struct statfs sfs;
  if (fstatfs(fd, &sfs) < 0 || (unsigned long)sfs.f_type != (unsigned long)TMPFS_MAGIC)
    return MEMPORT_EBADF;
  if ((fl & O_ACCMODE) == O_WRONLY) /* a memory object, but one that cannot be mapped at all */
    return MEMPORT_EACCES;
  if ((uintmax_t)st.st_size > (uintmax_t)SIZE_MAX)
    return MEMPORT_ENOMEM;
  *size = (size_t)st.st_size;
  *readonly = memport__linux_fd_readonly(fd);
  return 0;
}

/* A read-only open file description of the same file, through the /proc magic link. */
static int memport__reopen_readonly(int fd, int *out) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  int nfd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (nfd < 0) {
    int e = errno;
    if (e == EMFILE || e == ENFILE)
      return MEMPORT_EMFILE;
    if (e == ENOMEM)
      return MEMPORT_ENOMEM;
    if (e == EACCES || e == EPERM) /* the file's mode does not let this process read it */
      return MEMPORT_EACCES;
    return MEMPORT_ENOTSUP; /* no /proc (chroot, sandbox): no other way to drop write access */
  }
  *out = nfd;
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Regions.                                                                                     */

int memport__os_region_create(memport_region_t *r, size_t size) {
  int fd;
  int rc = memport__linux_memfd("memport-region", size, &fd);
  if (rc < 0)
    return rc;
  r->handle = fd;
  return 0;
}

void memport__os_region_close(memport_region_t *r) {
  memport__linux_close(r->handle);
  r->handle = MEMPORT_OS_HANDLE_INVALID;
}

int memport__os_region_dup(const memport_region_t *r, bool readonly, memport_region_t *out) {
  int fd;
  if (!readonly || memport__linux_fd_readonly(r->handle)) {
    /* Either no restriction was asked for, or the descriptor is read-only already (O_RDONLY or
     * sealed): the seals travel with the file, so a plain duplicate is just as read-only. */
    fd = fcntl(r->handle, F_DUPFD_CLOEXEC, 0);
    if (fd < 0)
      return errno == EBADF ? MEMPORT_EBADF : memport__linux_err();
  } else {
    int rc = memport__reopen_readonly(r->handle, &fd);
    if (rc < 0)
      return rc;
  }
  out->handle = fd;
  out->size = r->size;
  out->readonly = readonly || r->readonly;
  return 0;
}

int memport__os_region_seal(memport_region_t *r) {
  if (fcntl(r->handle, F_ADD_SEALS, F_SEAL_FUTURE_WRITE) == 0)
    return 0;
  int e = errno;
  /* A descriptor that is read-only already (O_RDONLY, or sealed by someone) needs nothing more;
   * F_ADD_SEALS refuses O_RDONLY descriptors with EPERM. */
  if (memport__linux_fd_readonly(r->handle))
    return 0;
  if (e == EBADF)
    return MEMPORT_EBADF;
  /* EINVAL: kernel before 5.1 or a file that cannot carry seals; EPERM: F_SEAL_SEAL is set (as on
   * every POSIX shm object). Neither can be made read-only for every holder. */
  return MEMPORT_ENOTSUP;
}

int memport__os_region_adopt(memport_region_t *r, memport_os_handle_t h, size_t size, bool readonly) {
  size_t fsize;
  bool ro;
  int rc = memport__linux_memfd_check(h, &fsize, &ro);
  if (rc < 0)
    return rc;
  size_t frounded = memport__page_round(fsize);
  if (fsize == 0 || frounded == 0)
    return MEMPORT_EINVAL; /* an empty file is no region */
  if (size == 0)
    size = frounded;
  else if (size > frounded)
    return MEMPORT_EINVAL; /* mapping past the end of the file would SIGBUS */
  int fd = h;
  if (readonly && !ro) {
    /* A read-only region must be read-only at the OS level, so that sending it on cannot give
     * write access: swap the descriptor for a read-only one of the same file. */
    rc = memport__reopen_readonly(h, &fd);
    if (rc < 0)
      return rc;
    memport__linux_close(h);
    ro = true;
  } else {
    int fdfl = fcntl(fd, F_GETFD);
    if (fdfl >= 0 && !(fdfl & FD_CLOEXEC))
      (void)fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC);
  }
  r->handle = fd;
  r->size = size;
  r->readonly = ro;
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Mappings.                                                                                    */

int memport__os_reserve(size_t len, void **addr) {
  void *p = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED)
    return errno == EINVAL ? MEMPORT_ENOMEM : memport__linux_err();
  *addr = p;
  return 0;
}

int memport__os_map(const memport_region_t *r, size_t off, size_t len, bool writable, void *fixed, void **addr) {
  if (off > (size_t)INT64_MAX)
    return MEMPORT_EINVAL;
  int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  int flags = MAP_SHARED | (fixed != NULL ? MAP_FIXED : 0);
  void *p = mmap(fixed, len, prot, flags, r->handle, (off_t)off);
  if (p == MAP_FAILED) {
    int e = errno;
    if (e == EPERM || e == EACCES) /* sealed against writing, or a read-only descriptor */
      return MEMPORT_EACCES;
    if (e == ENODEV || e == EBADF)
      return MEMPORT_EBADF;
    if (e == EOVERFLOW || e == EINVAL || e == ENOMEM)
      return MEMPORT_ENOMEM; /* no room for it in the address space */
    return -e;
  }
  *addr = p;
  return 0;
}

int memport__os_unmap(void *addr, size_t len) {
  if (munmap(addr, len) < 0)
    return memport__linux_err();
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* /proc/self/maps.                                                                             */

static int memport__hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

/* A number in base 16 or 10 at *p (advanced past it); false when there are no digits. */
static bool memport__parse_num(const char **pp, const char *end, unsigned base, uint64_t *out) {
  const char *p = *pp;
  uint64_t v = 0;
  int d;
  while (p < end && (d = memport__hexval(*p)) >= 0 && (unsigned)d < base) {
    v = v * base + (uint64_t)d;
    p++;
  }
  if (p == *pp)
    return false;
  *pp = p;
  *out = v;
  return true;
}

/* Parse one line of /proc/self/maps: "start-end perms offset major:minor inode   path". */
static int memport__parse_maps_line(const char *line, size_t n, struct memport__vma *v) {
  const char *p = line, *end = line + n;
  uint64_t lo, hi, off, major, minor, inode;
  if (!memport__parse_num(&p, end, 16, &lo) || p >= end || *p++ != '-' || !memport__parse_num(&p, end, 16, &hi) ||
      p + 6 > end || *p++ != ' ')
    return -1;
  memset(v, 0, sizeof *v);
  v->prot = (p[0] == 'r' ? PROT_READ : 0) | (p[1] == 'w' ? PROT_WRITE : 0) | (p[2] == 'x' ? PROT_EXEC : 0);
  v->shared = p[3] == 's';
  p += 4;
  if (p >= end || *p++ != ' ' || !memport__parse_num(&p, end, 16, &off) || p >= end || *p++ != ' ' ||
      !memport__parse_num(&p, end, 16, &major) || p >= end || *p++ != ':' || !memport__parse_num(&p, end, 16, &minor) ||
      p >= end || *p++ != ' ' || !memport__parse_num(&p, end, 10, &inode))
    return -1;
  v->start = (uintptr_t)lo;
  v->end = (uintptr_t)hi;
  v->pgoff = off;
  v->dev_major = (unsigned)major;
  v->dev_minor = (unsigned)minor;
  v->inode = inode;
  while (p < end && *p == ' ')
    p++;
  size_t plen = (size_t)(end - p); /* the path, which may contain spaces */
#define MEMPORT__IS(lit) (plen == sizeof lit - 1 && memcmp(p, lit, plen) == 0)
  v->anon = inode == 0 && (plen == 0 || MEMPORT__IS("[heap]") || MEMPORT__IS("[stack]") ||
                           (plen > 6 && memcmp(p, "[anon:", 6) == 0));
  static const char share_name[] = "/memfd:" MEMPORT__LINUX_SHARE_NAME " (deleted)";
  v->memport_share = v->shared && MEMPORT__IS(share_name);
#undef MEMPORT__IS
  return 0;
}

int memport__linux_maps_foreach(int (*fn)(const struct memport__vma *v, void *arg), void *arg) {
  int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return (errno == EMFILE || errno == ENFILE || errno == ENOMEM) ? memport__linux_err() : MEMPORT_ENOTSUP;
  size_t cap = 8192; /* a line is at most ~100 bytes plus a path of at most PATH_MAX */
  char *buf = malloc(cap);
  size_t have = 0;
  bool eof = false;
  int rc = 0;
  if (buf == NULL) {
    rc = MEMPORT_ENOMEM;
    goto out;
  }
  while (rc == 0) {
    char *nl = memchr(buf, '\n', have);
    if (nl == NULL) {
      if (eof) {
        if (have == 0)
          break;
        nl = buf + have; /* a last line without its newline */
      } else {
        if (have == cap) {
          rc = MEMPORT_EPROTO; /* a line longer than any real one */
          break;
        }
        ssize_t n = read(fd, buf + have, cap - have);
        if (n < 0 && errno == EINTR)
          continue;
        if (n < 0) {
          rc = memport__linux_err();
          break;
        }
        if (n == 0)
          eof = true;
        have += (size_t)n;
        continue;
      }
    }
    size_t linelen = (size_t)(nl - buf);
    struct memport__vma cur;
    if (memport__parse_maps_line(buf, linelen, &cur) == 0)
      rc = fn(&cur, arg);
    size_t consumed = linelen < have ? linelen + 1 : have;
    memmove(buf, buf + consumed, have - consumed);
    have -= consumed;
  }
out:
  memport__linux_close(fd);
  free(buf);
  return rc;
}

struct memport__vma_collect {
  uintptr_t next, lim; /* the first address not yet accounted for; the end of the range */
  struct memport__vma *v;
  size_t nv, cap;
};

static int memport__vma_collect_fn(const struct memport__vma *vma, void *arg) {
  struct memport__vma_collect *c = arg;
  if (vma->start >= c->lim)
    return 1;
  if (vma->end <= c->next)
    return 0;
  if (vma->start > c->next)
    return MEMPORT_ENOMEM; /* a hole in the range */
  struct memport__vma cur = *vma;
  cur.pgoff += c->next - cur.start;
  cur.start = c->next;
  if (cur.end > c->lim)
    cur.end = c->lim;
  if (c->nv == c->cap) {
    size_t ncap = c->cap ? c->cap * 2 : 8;
    struct memport__vma *n = realloc(c->v, ncap * sizeof *n);
    if (n == NULL)
      return MEMPORT_ENOMEM;
    c->v = n;
    c->cap = ncap;
  }
  c->v[c->nv++] = cur;
  c->next = cur.end;
  return c->next >= c->lim ? 1 : 0;
}

int memport__linux_vmas(uintptr_t addr, size_t len, struct memport__vma **out, size_t *count) {
  *out = NULL;
  *count = 0;
  if (len == 0 || addr + len < addr)
    return MEMPORT_EINVAL;
  struct memport__vma_collect c = {.next = addr, .lim = addr + len};
  int rc = memport__linux_maps_foreach(memport__vma_collect_fn, &c);
  if (rc >= 0 && c.next < c.lim)
    rc = MEMPORT_ENOMEM; /* the range runs past the last mapping */
  if (rc < 0) {
    free(c.v);
    return rc;
  }
  *out = c.v;
  *count = c.nv;
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Remap.                                                                                       */

int memport__os_remap(void *src, size_t len, bool readonly, void **out) {
  struct memport__vma *v;
  size_t nv;
  int rc = memport__linux_vmas((uintptr_t)src, len, &v, &nv);
  if (rc < 0)
    return rc;
  /* mremap(old_size 0) duplicates shared mappings only; a private page has no second name. */
  for (size_t i = 0; i < nv; i++) {
    if (!v[i].shared) {
      free(v);
      return MEMPORT_ENOTSUP;
    }
    if (!(v[i].prot & PROT_READ) || (!readonly && !(v[i].prot & PROT_WRITE))) {
      free(v);
      return MEMPORT_EACCES; /* a view never gets more access than the pages it shows */
    }
  }
  void *dst;
  rc = memport__os_reserve(len, &dst);
  if (rc < 0) {
    free(v);
    return rc;
  }
  /* One kernel mapping at a time: mremap cannot cross mappings (a mirror is two). */
  for (size_t i = 0; i < nv && rc == 0; i++) {
    char *piece = (char *)dst + (v[i].start - (uintptr_t)src);
    size_t plen = v[i].end - v[i].start;
    void *p = mremap((void *)v[i].start, 0, plen, MREMAP_MAYMOVE | MREMAP_FIXED, piece);
    if (p == MAP_FAILED)
      rc = (errno == EINVAL || errno == EFAULT) ? MEMPORT_ENOTSUP : memport__linux_err();
  }
  free(v);
  if (rc == 0 && readonly && mprotect(dst, len, PROT_READ) < 0)
    rc = memport__linux_err();
  if (rc < 0) {
    munmap(dst, len);
    return rc;
  }
  *out = dst;
  return 0;
}
