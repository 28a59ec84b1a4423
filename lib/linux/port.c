/* SPDX-License-Identifier: MIT */
/* lib/linux/port.c: ports as AF_UNIX SOCK_SEQPACKET sockets; one message is one record with SCM_RIGHTS and SCM_CREDENTIALS. */
#include "config.h"

#include "internal.h"
#include "os.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/*
 * Wire format: every message is exactly one SOCK_SEQPACKET record
 *
 *   struct wire_hdr (80 bytes, native byte order: both ends are on this machine)
 *   nbytes bytes of payload
 *
 * with the handles as one SCM_RIGHTS control message, in the order of hdr.handle[]. The fixed
 * header size lets the receiver scatter the record straight into the message's preallocated
 * buffer: iov[0] is the header, iov[1] the payload area.
 *
 * The receiver trusts nothing: the record length, the header, the number and the kind of every
 * descriptor are checked; on any mismatch every received descriptor is closed and nothing is
 * delivered. The kernel attaches the sender's pid/uid/gid (SCM_CREDENTIALS) to every record
 * because both ends set SO_PASSCRED; those are filled in by the kernel, not by the sender.
 */
#define WIRE_MAGIC   0x534d504du /* "MPMS" */
#define WIRE_VERSION 1u

#define WIRE_KIND_MASK 0x0fu
#define WIRE_READONLY  0x10u /* region handles: the receiver gets a read-only handle */

struct wire_hdr {
  uint32_t magic;
  uint16_t version;
  uint16_t nhandles;
  uint32_t nbytes;
  uint32_t reserved; /* 0 */
  uint8_t handle[MEMPORT_MSG_MAX_HANDLES];
};
_Static_assert(sizeof(struct wire_hdr) == 16 + MEMPORT_MSG_MAX_HANDLES, "wire header has no padding");

/* Largest record we send; the socket's send buffer must hold it (plus the kernel's 32 bytes). */
#define WIRE_MAX_RECORD (sizeof(struct wire_hdr) + MEMPORT_MSG_MAX_BYTES)

/* Room for the credentials and the most descriptors a valid message has. A sender that passes
 * more gets MSG_CTRUNC: the kernel installs what fits (we close them) and drops the rest. */
union wire_ctl {
  char buf[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * MEMPORT_MSG_MAX_HANDLES)];
  struct cmsghdr align;
};

/* ------------------------------------------------------------------------------------------ */
/* Sockets.                                                                                     */

static int sock_int(int fd, int level, int name, int *val) {
  socklen_t len = sizeof *val;
  if (getsockopt(fd, level, name, val, &len) != 0 || len != sizeof *val)
    return -1;
  return 0;
}

/* Is fd a connected (or once connected) AF_UNIX SOCK_SEQPACKET socket that is not listening? */
static int check_seqpacket(int fd, struct ucred *peer) {
  int v;
  if (sock_int(fd, SOL_SOCKET, SO_DOMAIN, &v) != 0 || v != AF_UNIX)
    return MEMPORT_EPROTO;
  if (sock_int(fd, SOL_SOCKET, SO_TYPE, &v) != 0 || v != SOCK_SEQPACKET)
    return MEMPORT_EPROTO;
  if (sock_int(fd, SOL_SOCKET, SO_ACCEPTCONN, &v) != 0 || v != 0)
    return MEMPORT_EPROTO;
  socklen_t len = sizeof *peer;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, peer, &len) != 0 || len != sizeof *peer)
    return MEMPORT_EPROTO;
  /* A socket that was never connected has no peer credentials (uid and gid -1). */
  if (peer->uid == (uid_t)-1 && peer->gid == (gid_t)-1)
    return MEMPORT_EPROTO;
  return 0;
}

int memport__linux_port_from_socket(memport_port_t *p, int fd) {
  struct ucred peer;
  int rc = check_seqpacket(fd, &peer);
  if (rc != 0)
    return rc;
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) != 0)
    return memport__linux_err();
  /* The largest message must fit the send buffer (it does with the default of 208 KiB; raise it
   * where a system default is smaller, as far as net.core.wmem_max lets us). */
  int sndbuf;
  if (sock_int(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf) == 0 && (size_t)sndbuf < 2 * WIRE_MAX_RECORD + 64) {
    int want = (int)(2 * WIRE_MAX_RECORD + 64);
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &want, sizeof want);
  }
  memset(p, 0, sizeof *p);
  p->rx = fd;
  p->tx = fd;
  p->peer.pid = peer.pid;
  p->peer.uid = peer.uid;
  p->peer.gid = peer.gid;
  return 0;
}

int memport__os_port_pair(memport_port_t *a, memport_port_t *b) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    return memport__linux_err();
  int rc = memport__linux_port_from_socket(a, sv[0]);
  if (rc == 0) {
    rc = memport__linux_port_from_socket(b, sv[1]);
    if (rc != 0)
      memset(a, 0, sizeof *a);
  }
  if (rc != 0) {
    memport__linux_close(sv[0]);
    memport__linux_close(sv[1]);
    return rc;
  }
  return 0;
}

void memport__os_port_close(memport_port_t *p) {
  memport__linux_close(p->rx);
  p->rx = MEMPORT_OS_HANDLE_INVALID;
  p->tx = MEMPORT_OS_HANDLE_INVALID;
}

int memport__os_port_dup(const memport_port_t *p, memport_port_t *out) {
  int fd = fcntl(p->rx, F_DUPFD_CLOEXEC, 0);
  if (fd < 0)
    return errno == EBADF ? MEMPORT_EBADF : memport__linux_err();
  *out = *p;
  out->rx = fd;
  out->tx = fd;
  return 0;
}

void memport__os_msg_free(memport_msg_t *msg) {
  /* Headers and control buffers live on the stack of send/recv: no per-message scratch. */
  free(msg->os_buf);
  msg->os_buf = NULL;
}

/* Wait until fd is ready for `events` (or in error/hang-up, which the caller's next call will
 * report), or until the deadline: MEMPORT_ETIMEDOUT. Signals are retried, never surfaced. */
static int wait_ready(int fd, short events, uint64_t deadline) {
  for (;;) {
    struct timespec ts, *tsp = NULL;
    if (deadline != MEMPORT__NO_DEADLINE) {
      uint64_t now = memport__now_ns();
      if (now >= deadline)
        return MEMPORT_ETIMEDOUT;
      uint64_t left = deadline - now;
      ts.tv_sec = (time_t)(left / 1000000000u);
      ts.tv_nsec = (long)(left % 1000000000u);
      tsp = &ts;
    }
    struct pollfd pfd = {.fd = fd, .events = events, .revents = 0};
    int r = ppoll(&pfd, 1, tsp, NULL);
    if (r > 0)
      return 0;
    if (r < 0 && errno != EINTR)
      return memport__linux_err();
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Send.                                                                                        */

/* Do two descriptors name the same open socket (one a dup of the other)? */
static bool same_socket(int a, int b) {
  if (a == b)
    return true;
  struct stat sa, sb;
  return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int memport__os_port_send(memport_port_t *p, memport_msg_t *msg, uint64_t deadline) {
  struct wire_hdr hdr;
  memset(&hdr, 0, sizeof hdr);
  int fds[MEMPORT_MSG_MAX_HANDLES];
  size_t n = 0;
  for (size_t i = 0; i < msg->nhandles && i < MEMPORT_MSG_MAX_HANDLES; i++) {
    const struct memport__handle *h = &msg->handles[i];
    int fd;
    uint8_t desc = (uint8_t)h->kind;
    switch (h->kind) {
    case MEMPORT_HANDLE_REGION:
      fd = h->u.region->handle;
      /* The receiver refuses a file that can shrink under its mapping (it would SIGBUS): say
       * so here rather than let the whole message bounce off the peer. */
      if (!(memport__linux_seals(fd) & F_SEAL_SHRINK))
        return MEMPORT_ENOTSUP;
      if (h->u.region->readonly)
        desc |= WIRE_READONLY;
      break;
    case MEMPORT_HANDLE_SEM:
      fd = h->u.sem->handle;
      break;
    case MEMPORT_HANDLE_PORT:
      fd = h->u.port->tx;
      /* lib/port.c refuses the port itself; a copy of it (MEMPORT_ATTACH_COPY) is the same
       * socket, which would sit in its own receive queue: refuse that too. */
      if (same_socket(fd, p->tx))
        return MEMPORT_EINVAL;
      break;
    default:
      continue; /* a slot whose handle was taken out: not sent */
    }
    hdr.handle[n] = desc;
    fds[n++] = fd;
  }
  hdr.magic = WIRE_MAGIC;
  hdr.version = WIRE_VERSION;
  hdr.nhandles = (uint16_t)n;
  hdr.nbytes = (uint32_t)msg->len;

  struct iovec iov[2] = {{.iov_base = &hdr, .iov_len = sizeof hdr}, {.iov_base = msg->bytes, .iov_len = msg->len}};
  union wire_ctl ctl;
  struct msghdr mh;
  memset(&mh, 0, sizeof mh);
  mh.msg_iov = iov;
  mh.msg_iovlen = msg->len != 0 ? 2 : 1;
  if (n != 0) {
    memset(&ctl, 0, sizeof ctl);
    mh.msg_control = ctl.buf;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * n);
    struct cmsghdr *c = &ctl.align; /* CMSG_FIRSTHDR(&mh), which cannot be NULL here */
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * n);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
  }

  for (;;) {
    ssize_t r = sendmsg(p->tx, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (r >= 0)
      return 0; /* a SOCK_SEQPACKET record is sent whole or not at all */
    int e = errno;
    if (e == EINTR)
      continue;
    if (e == EAGAIN || e == EWOULDBLOCK) {
      int rc = wait_ready(p->tx, POLLOUT, deadline);
      if (rc != 0)
        return rc;
      continue;
    }
    switch (e) {
    case EPIPE:
    case ECONNRESET:
    case ECONNREFUSED:
    case ENOTCONN:
      return MEMPORT_EPEER;
    case ETOOMANYREFS: /* too many descriptors in flight for this user (RLIMIT_NOFILE) */
      return MEMPORT_EMFILE;
    case ENOBUFS:
      return MEMPORT_ENOMEM;
    default:
      return memport__linux_err();
    }
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Receive.                                                                                     */

/* Is fd something a region can be made of: a memory file that can never shrink? */
static int check_region_fd(int fd) {
  /* Seals first: F_GET_SEALS answers from the inode of a shmem file and fails at once for anything
   * else, so a hostile descriptor (a FUSE file whose daemon never answers fstat, a device) is
   * turned away before any call that could reach its file system. */
  if (!(memport__linux_seals(fd) & F_SEAL_SHRINK))
    return MEMPORT_EPROTO;
  size_t size;
  bool ro;
  int rc = memport__linux_memfd_check(fd, &size, &ro);
  if (rc == MEMPORT_ENOMEM)
    return rc;
  if (rc != 0 || size == 0)
    return MEMPORT_EPROTO;
  return 0;
}

/* Finish an object lib/msg.c made from a received descriptor: check it fully and take it (a region
 * is sized by the kernel and made read-only at the OS level if announced so, a semaphore's futex
 * page is mapped, a port's socket gets its options). */
int memport__os_recv_finish(int kind, void *object) {
  int rc;
  switch (kind) {
  case MEMPORT_HANDLE_REGION: {
    memport_region_t *r = object;
    rc = memport__os_region_adopt(r, r->handle, 0, r->readonly);
    break;
  }
  case MEMPORT_HANDLE_SEM: {
    memport_sem_t *s = object;
    rc = memport__linux_sem_adopt(s, s->handle);
    break;
  }
  case MEMPORT_HANDLE_PORT: {
    memport_port_t *pt = object;
    rc = memport__linux_port_from_socket(pt, pt->rx);
    break;
  }
  default:
    return MEMPORT_EPROTO;
  }
  /* Checked already, so a failure here is resources (EMFILE/ENOMEM), no /proc to reopen a
   * writable descriptor read-only (ENOTSUP), or a file that changed under us (another holder
   * added seals): report the first two, call the rest a protocol error. */
  if (rc != 0 && rc != MEMPORT_ENOMEM && rc != MEMPORT_EMFILE && rc != MEMPORT_ENOTSUP)
    rc = MEMPORT_EPROTO;
  return rc;
}

void memport__os_recv_release(const struct memport__raw_handle *raw) {
  memport__linux_close(raw->h[0]); /* a port's h[1] is the same socket */
}

/* Check one received record; on success describe its descriptors in raw (which then owns them).
 * On failure the caller still owns every descriptor. */
static int accept_record(struct memport__raw_msg *raw, const struct wire_hdr *hdr, size_t len, int msg_flags,
                         const int *fds, size_t nfds, bool fds_overflow) {
  if (msg_flags & MSG_TRUNC)
    return MEMPORT_EMSGSIZE; /* the kernel discarded the rest of the record */
  bool hdr_whole = len >= sizeof *hdr && hdr->magic == WIRE_MAGIC && hdr->version == WIRE_VERSION;
  if ((msg_flags & MSG_CTRUNC) || fds_overflow) {
    /* Fewer descriptors than a valid header announced: this process ran out of descriptors
     * (the kernel installs what it can and drops the rest); anything else is the sender. */
    if (hdr_whole && !fds_overflow && hdr->nhandles <= MEMPORT_MSG_MAX_HANDLES && nfds < hdr->nhandles)
      return MEMPORT_EMFILE;
    return MEMPORT_EPROTO;
  }
  if (!hdr_whole || hdr->reserved != 0)
    return MEMPORT_EPROTO;
  size_t nbytes = len - sizeof *hdr;
  if (hdr->nbytes != nbytes || hdr->nhandles > MEMPORT_MSG_MAX_HANDLES || hdr->nhandles != nfds)
    return MEMPORT_EPROTO;
  for (size_t i = 0; i < MEMPORT_MSG_MAX_HANDLES; i++) {
    uint8_t d = hdr->handle[i];
    if (i >= nfds) {
      if (d != 0)
        return MEMPORT_EPROTO;
      continue;
    }
    unsigned kind = d & WIRE_KIND_MASK;
    unsigned flags = d & ~WIRE_KIND_MASK;
    int rc;
    switch (kind) {
    case MEMPORT_HANDLE_REGION:
      if (flags & ~WIRE_READONLY)
        return MEMPORT_EPROTO;
      rc = check_region_fd(fds[i]);
      break;
    case MEMPORT_HANDLE_SEM:
      rc = flags ? MEMPORT_EPROTO : 0; /* the descriptor itself is checked by memport__linux_sem_adopt */
      break;
    case MEMPORT_HANDLE_PORT: {
      struct ucred uc;
      rc = flags ? MEMPORT_EPROTO : check_seqpacket(fds[i], &uc);
      break;
    }
    default:
      rc = MEMPORT_EPROTO;
      break;
    }
    if (rc != 0)
      return rc;
  }
  for (size_t i = 0; i < nfds; i++) {
    struct memport__raw_handle *rh = &raw->handles[i];
    rh->kind = (int)(hdr->handle[i] & WIRE_KIND_MASK);
    rh->readonly = (hdr->handle[i] & WIRE_READONLY) != 0;
    rh->size = 0; /* the kernel's size of the file, when finished */
    rh->h[0] = fds[i];
    rh->h[1] = fds[i];
  }
  raw->nhandles = nfds;
  raw->len = nbytes;
  return 0;
}

int memport__os_port_recv(memport_port_t *p, memport_msg_t *msg, struct memport__raw_msg *raw, uint64_t deadline) {
  raw->nhandles = 0;
  raw->len = 0;
  for (;;) {
    struct wire_hdr hdr;
    union wire_ctl ctl;
    struct iovec iov[2] = {{.iov_base = &hdr, .iov_len = sizeof hdr},
                           {.iov_base = msg->bytes, .iov_len = MEMPORT_MSG_MAX_BYTES}};
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = iov;
    mh.msg_iovlen = 2;
    mh.msg_control = ctl.buf;
    mh.msg_controllen = sizeof ctl.buf;
    ssize_t n = recvmsg(p->rx, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) {
      int e = errno;
      if (e == EINTR || e == ECONNRESET)
        continue; /* ECONNRESET is reported once, before what the peer sent us is delivered */
      if (e == EAGAIN || e == EWOULDBLOCK) {
        int rc = wait_ready(p->rx, POLLIN, deadline);
        if (rc != 0)
          return rc;
        continue;
      }
      if (e == ENOTCONN)
        return MEMPORT_EPEER;
      return memport__linux_err();
    }

    /* Collect every descriptor and the credentials before judging anything. */
    int fds[MEMPORT_MSG_MAX_HANDLES];
    size_t nfds = 0;
    bool fds_overflow = false, have_cred = false;
    struct ucred cred;
    memset(&cred, 0, sizeof cred);
    if (mh.msg_controllen != 0) {
      for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET)
          continue;
        if (c->cmsg_type == SCM_RIGHTS && c->cmsg_len >= CMSG_LEN(0)) {
          size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
          const unsigned char *data = CMSG_DATA(c);
          for (size_t j = 0; j < k; j++) {
            int fd;
            memcpy(&fd, data + j * sizeof(int), sizeof fd);
            if (nfds < MEMPORT_MSG_MAX_HANDLES) {
              fds[nfds++] = fd;
            } else {
              memport__linux_close(fd);
              fds_overflow = true;
            }
          }
        } else if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len >= CMSG_LEN(sizeof cred)) {
          memcpy(&cred, CMSG_DATA(c), sizeof cred);
          have_cred = true;
        }
      }
    }

    int rc;
    if (n == 0 && nfds == 0 && !have_cred && !(mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
      /* End of file (the peer closed and everything it sent was read), or an empty record sent
       * to a socket that did not pass credentials yet: only the former leaves a read hang-up. */
      struct pollfd pfd = {.fd = p->rx, .events = POLLIN | POLLRDHUP, .revents = 0};
      if (poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP)))
        return MEMPORT_EPEER;
      rc = MEMPORT_EPROTO;
    } else {
      rc = accept_record(raw, &hdr, (size_t)n, mh.msg_flags, fds, nfds, fds_overflow);
    }
    if (rc != 0) {
      for (size_t i = 0; i < nfds; i++)
        memport__linux_close(fds[i]);
      raw->nhandles = 0;
      raw->len = 0;
      return rc;
    }
    if (have_cred) {
      raw->sender.pid = cred.pid;
      raw->sender.uid = cred.uid;
      raw->sender.gid = cred.gid;
    } else {
      raw->sender = p->peer; /* see memport__linux_port_from_socket */
    }
    return 0;
  }
}
