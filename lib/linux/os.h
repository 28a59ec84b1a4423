/* SPDX-License-Identifier: MIT */
/* os.h: helpers shared by the Linux backend files (memfds, seals, descriptors, errno mapping). */
#ifndef MEMPORT_LINUX_OS_H
#define MEMPORT_LINUX_OS_H

#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

/* Seals and memfd flags newer than some C libraries' headers (values are the kernel ABI). */
#ifndef F_ADD_SEALS
#define F_ADD_SEALS 1033
#endif
#ifndef F_GET_SEALS
#define F_GET_SEALS 1034
#endif
#ifndef F_SEAL_SEAL
#define F_SEAL_SEAL 0x0001
#endif
#ifndef F_SEAL_SHRINK
#define F_SEAL_SHRINK 0x0002
#endif
#ifndef F_SEAL_GROW
#define F_SEAL_GROW 0x0004
#endif
#ifndef F_SEAL_WRITE
#define F_SEAL_WRITE 0x0008
#endif
#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif
#ifndef MFD_CLOEXEC
#define MFD_CLOEXEC 0x0001U
#endif
#ifndef MFD_ALLOW_SEALING
#define MFD_ALLOW_SEALING 0x0002U
#endif
#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U /* Linux 6.3: not executable, ever (implies MFD_ALLOW_SEALING) */
#endif

/* The negated errno of the last failed call, as a MEMPORT_E* code (ENFILE counts as EMFILE,
 * EOPNOTSUPP is ENOTSUP on Linux). Never 0: a missing errno becomes MEMPORT_EINVAL. */
static inline int memport__linux_err(void) {
  int e = errno;
  if (e == ENFILE)
    return MEMPORT_EMFILE;
  if (e == 0)
    return MEMPORT_EINVAL;
  return -e;
}

/* close() that keeps errno and never retries: on Linux the descriptor is gone even when close
 * reports EINTR, and retrying could close a descriptor another thread just opened. */
static inline void memport__linux_close(int fd) {
  if (fd < 0)
    return;
  int saved = errno;
  (void)close(fd);
  errno = saved;
}

/* The seals of a memfd/shmem file (F_GET_SEALS), 0 when the file cannot carry seals. */
static inline unsigned memport__linux_seals(int fd) {
  int s = fcntl(fd, F_GET_SEALS);
  return s < 0 ? 0u : (unsigned)s;
}

/* True when no writable mapping or write can be made through this descriptor: it is open
 * O_RDONLY, or the file carries F_SEAL_WRITE or F_SEAL_FUTURE_WRITE. */
MEMPORT_HIDDEN bool memport__linux_fd_readonly(int fd);

/* A new memfd of `size` bytes (a page multiple), close-on-exec, never executable where the
 * kernel can say so, sealed F_SEAL_GROW|F_SEAL_SHRINK (no holder can ever change its size, so
 * a mapping of it can never SIGBUS), mode 0444 (no holder without CAP_DAC_OVERRIDE can reopen it
 * writable through /proc; any holder can reopen it read-only). `name` shows in /proc/PID/maps as "/memfd:NAME". Returns 0 and *fd, or MEMPORT_ENOMEM
 * (size impossible or no memory), MEMPORT_EMFILE, or another negative code. */
MEMPORT_HIDDEN int memport__linux_memfd(const char *name, size_t size, int *fd);

/* Check that fd is a memory object memport can map (a regular file on tmpfs: a memfd or a POSIX
 * shm object) and report its size in bytes and whether it is read-only as
 * memport__linux_fd_readonly says. MEMPORT_EBADF for anything else, MEMPORT_EACCES for an
 * O_WRONLY descriptor (it cannot be mapped). Does not take ownership. */
MEMPORT_HIDDEN int memport__linux_memfd_check(int fd, size_t *size, bool *readonly);

/* The memfd name of memory that memport_inherit(SHARE) moved onto a memfd: "/memfd:NAME" in maps. */
#define MEMPORT__LINUX_SHARE_NAME "memport-share"

/* One kernel mapping (VMA) of this process, as /proc/self/maps shows it. */
struct memport__vma {
  uintptr_t start, end; /* [start, end), page-aligned */
  uint64_t pgoff;       /* file offset of start */
  unsigned dev_major, dev_minor;
  uint64_t inode;       /* 0: no file behind it */
  int prot;             /* PROT_READ | PROT_WRITE | PROT_EXEC */
  bool shared;          /* MAP_SHARED */
  bool anon;            /* private or shared anonymous memory: no file, or [heap], [stack], [anon:...] */
  bool memport_share;   /* a memfd made by memport_inherit(MEMPORT_INHERIT_SHARE) */
};
/* Call fn for every mapping of this process, in address order, until fn returns non-zero (which
 * is returned). MEMPORT_ENOTSUP if /proc/self/maps cannot be read. A snapshot: fn must not map
 * or unmap memory, and other threads may change mappings meanwhile. */
MEMPORT_HIDDEN int memport__linux_maps_foreach(int (*fn)(const struct memport__vma *v, void *arg), void *arg);
/* The mappings covering [addr, addr+len), in address order, clipped to the range (pgoff adjusted),
 * in a malloc'd array the caller frees. MEMPORT_ENOMEM if part of the range is not mapped. */
MEMPORT_HIDDEN int memport__linux_vmas(uintptr_t addr, size_t len, struct memport__vma **out, size_t *count);

#endif /* MEMPORT_LINUX_OS_H */

/* ------------------------------------------------------------------------------------------ */
/* linux-ipc section (owner: lib/linux/port.c, lib/linux/sem.c): ports and semaphores.        */
#ifndef MEMPORT_LINUX_OS_IPC_H
#define MEMPORT_LINUX_OS_IPC_H
#include "internal.h"

/* Make *p a port over `fd`, a connected AF_UNIX SOCK_SEQPACKET socket (from socketpair, connect
 * or accept). Checks SO_DOMAIN/SO_TYPE, that it is not listening and has peer credentials (else
 * MEMPORT_EPROTO), turns on SO_PASSCRED (so every
 * message this end receives carries the sender's kernel-checked pid/uid/gid) and records the peer
 * from SO_PEERCRED. On success *p owns fd; on failure fd is left open for the caller to close and
 * *p is untouched. Set FD_CLOEXEC yourself (SOCK_CLOEXEC / accept4). For no message to arrive
 * without credentials, set SO_PASSCRED on the socket before connect() and on the listening socket
 * before listen() (accepted sockets inherit it); a message that still arrives without them gets
 * the SO_PEERCRED identity as its sender. */
MEMPORT_HIDDEN int memport__linux_port_from_socket(memport_port_t *p, int fd);
/* Make *s a semaphore over `fd`, a memfd received from a peer (or a dup of ours): checks it is a
 * regular file of at least one page sealed F_SEAL_SHRINK, maps it shared read-write and checks
 * the magic/version in the page (else MEMPORT_EPROTO). On success *s owns fd; on failure fd is
 * left open for the caller. */
MEMPORT_HIDDEN int memport__linux_sem_adopt(memport_sem_t *s, int fd);
#endif /* MEMPORT_LINUX_OS_IPC_H */
/* ---- end of linux-ipc section ---- */

/* ------------------------------------------------------------------------------------------ */
/* linux-name section (owner: lib/linux/name.c).                                               */
#ifndef MEMPORT_LINUX_OS_NAME_H
#define MEMPORT_LINUX_OS_NAME_H
#include "internal.h"
/* (The lock-file record and its parser are portable now: memport__registry_* in internal.h.) */
#endif /* MEMPORT_LINUX_OS_NAME_H */
