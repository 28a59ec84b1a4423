/* SPDX-License-Identifier: MIT */
/* os.h: PLACEHOLDER. */

/* ------------------------------------------------------------------------------------------ */
/* linux-ipc section (owner: lib/linux/port.c, lib/linux/sem.c): ports and semaphores.        */
#ifndef MEMPORT_LINUX_OS_IPC_H
#define MEMPORT_LINUX_OS_IPC_H
#include "internal.h"

/* Make *p a port over `fd`, a connected AF_UNIX SOCK_SEQPACKET socket (from socketpair, connect
 * or accept). Checks SO_DOMAIN/SO_TYPE (else MEMPORT_EPROTO), turns on SO_PASSCRED (so every
 * message this end receives carries the sender's kernel-checked pid/uid/gid) and records the peer
 * from SO_PEERCRED. On success *p owns fd; on failure fd is left open for the caller to close and
 * *p is untouched. Set FD_CLOEXEC yourself (SOCK_CLOEXEC / accept4). For no message to arrive
 * without credentials, set SO_PASSCRED on the socket before connect() and on the listening socket
 * before listen() (accepted sockets inherit it); a message that still arrives without them gets
 * the SO_PEERCRED identity as its sender. */
MEMPORT_HIDDEN int memport__linux_port_from_socket(memport_port_t *p, int fd);
#endif /* MEMPORT_LINUX_OS_IPC_H */
/* ---- end of linux-ipc section ---- */
