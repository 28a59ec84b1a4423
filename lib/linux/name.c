/* SPDX-License-Identifier: MIT */
/* lib/linux/name.c: named services on Linux: a private per-user directory of lock files and sockets. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include "internal.h"
#include "linux/os.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/*
 * Layout. Every user has one private directory: $XDG_RUNTIME_DIR/memport when XDG_RUNTIME_DIR is
 * an absolute path to a directory owned by us, else /tmp/memport-UID. It is created 0700 and,
 * before every use, opened with O_NOFOLLOW and checked through the descriptor: a directory, owned
 * by our effective uid, mode exactly 0700. Everything below is reached through that descriptor
 * (openat, unlinkat, and bind/connect through /proc/self/fd/DIRFD/...), so a path component swapped
 * for a symlink after the check cannot redirect us.
 *
 * A name N is two entries: "N.lock" and "N.sock". (Names cannot contain '/', so no two names map
 * to the same entry.) N.lock belongs to the portable registry (lib/registry.c: its record,
 * liveness by an open-file-description lock, reclaiming, listing); this file only supplies the
 * lock primitive (F_OFD_SETLK / F_OFD_GETLK). N.sock is the listening SOCK_SEQPACKET socket; only
 * the lock holder creates or removes it.
 *
 * Processes running as root are also reachable by processes of other users: a root-owned name is
 * in addition bound in the abstract socket namespace as "\0memport/svc/N" or "\0memport/reg/N".
 * A client that does not find N in its own directory tries that address and keeps the connection
 * only if the kernel says the listener runs as uid 0 (anyone can bind abstract names; only root
 * can pass this check). Who may actually connect is decided at accept from SO_PEERCRED.
 */

#define SOCK_SUFFIX ".sock"
#define ENTRY_MAX (MEMPORT_NAME_MAX + 6)
#define LISTEN_BACKLOG 128
#define CONNECT_RETRY_NS 5000000u /* 5 ms between attempts while waiting for a name */

static int neg_errno(int e, int fallback) { return e > 0 ? -e : fallback; }

/* ------------------------------------------------------------------------------------------ */
/* The private directory.                                                                      */

struct name_dir {
  int fd;
  char path[PATH_MAX];
};

/* Open (creating it if `create`) and verify the private directory. Returns 0, MEMPORT_ENOENT
 * (does not exist and !create), MEMPORT_EACCES (not a private directory of ours) or another error. */
static int dir_open(struct name_dir *d, bool create) {
  uid_t uid = geteuid();
  const char *xdg = getenv("XDG_RUNTIME_DIR");
  char parent[PATH_MAX];
  char leaf[32];
  struct stat st;
  d->fd = -1;
  if (xdg != NULL && xdg[0] == '/' && strlen(xdg) < sizeof parent - sizeof leaf - 1 && stat(xdg, &st) == 0 &&
      S_ISDIR(st.st_mode) && st.st_uid == uid) {
    snprintf(parent, sizeof parent, "%s", xdg);
    snprintf(leaf, sizeof leaf, "memport");
  } else {
    snprintf(parent, sizeof parent, "/tmp");
    snprintf(leaf, sizeof leaf, "memport-%lu", (unsigned long)uid);
  }
  int pn = snprintf(d->path, sizeof d->path, "%s/%s", parent, leaf);
  if (pn < 0 || (size_t)pn >= sizeof d->path)
    return MEMPORT_ENAMETOOLONG;

  int pfd = open(parent, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (pfd < 0)
    return neg_errno(errno, MEMPORT_ENOENT);
  bool created = false;
  if (create) {
    if (mkdirat(pfd, leaf, 0700) == 0)
      created = true;
    else if (errno != EEXIST) {
      int e = errno;
      close(pfd);
      return neg_errno(e, MEMPORT_EACCES);
    }
  }
  int fd = openat(pfd, leaf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  int e = errno;
  close(pfd);
  if (fd < 0) {
    if (e == ENOENT)
      return MEMPORT_ENOENT;
    if (e == ELOOP || e == ENOTDIR || e == EACCES || e == EPERM)
      return MEMPORT_EACCES; /* a symlink or something else where our directory should be */
    return neg_errno(e, MEMPORT_EACCES);
  }
  if (fstat(fd, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != uid) {
    close(fd);
    return MEMPORT_EACCES;
  }
  if ((st.st_mode & 07777) != 0700) {
    /* Only a directory we made this very moment (under a strict umask) is repaired. */
    if (!created || fchmod(fd, 0700) != 0) {
      close(fd);
      return MEMPORT_EACCES;
    }
  }
  d->fd = fd;
  return 0;
}

/* The address of entry `entry` of the directory, reached through its descriptor. */
static int dir_addr(const struct name_dir *d, const char *entry, struct sockaddr_un *sa, socklen_t *len) {
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  int n = snprintf(sa->sun_path, sizeof sa->sun_path, "/proc/self/fd/%d/%s", d->fd, entry);
  if (n < 0 || (size_t)n >= sizeof sa->sun_path)
    return MEMPORT_ENAMETOOLONG;
  *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)n + 1);
  return 0;
}

/* The same address spelled as a plain path, for systems without /proc (may be too long). */
static int dir_addr_plain(const struct name_dir *d, const char *entry, struct sockaddr_un *sa,
                          socklen_t *len) {
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  int n = snprintf(sa->sun_path, sizeof sa->sun_path, "%s/%s", d->path, entry);
  if (n < 0 || (size_t)n >= sizeof sa->sun_path)
    return MEMPORT_ENAMETOOLONG;
  *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)n + 1);
  return 0;
}

static bool proc_available(void) { return access("/proc/self/fd", X_OK) == 0; }

/* bind() or connect() fd to the entry, through /proc/self/fd when it exists. */
static int dir_sock_op(const struct name_dir *d, const char *entry, int fd, bool do_bind) {
  struct sockaddr_un sa;
  socklen_t len;
  int rc = proc_available() ? dir_addr(d, entry, &sa, &len) : dir_addr_plain(d, entry, &sa, &len);
  if (rc != 0)
    return rc;
  int r = do_bind ? bind(fd, (struct sockaddr *)&sa, len) : connect(fd, (struct sockaddr *)&sa, len);
  return r == 0 ? 0 : neg_errno(errno, MEMPORT_EPROTO);
}

static void entry_name(char *out, const char *name, const char *suffix) {
  snprintf(out, ENTRY_MAX, "%s%s", name, suffix);
}

static void abstract_addr(const char *name, int kind, struct sockaddr_un *sa, socklen_t *len) {
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  int n = snprintf(sa->sun_path + 1, sizeof sa->sun_path - 1, "memport/%s/%s",
                   kind == MEMPORT_NAME_REGION ? "reg" : "svc", name);
  *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

/* ------------------------------------------------------------------------------------------ */
/* Services.                                                                                   */

struct memport__linux_service {
  int dirfd;      /* the verified private directory */
  int lockfd;     /* N.lock, claimed from the registry for our lifetime */
  int listenfd;   /* N.sock */
  int exportfd;   /* abstract-namespace listener (root only), or -1 */
  int epfd;       /* epoll over both listeners when there are two, or -1 */
  pid_t owner;    /* the process that created the name; only it removes the entries */
  dev_t sock_dev; /* identity of our socket, checked before unlinking */
  ino_t sock_ino;
};

static struct memport__linux_service *svc_state(const memport_service_t *s) { return s->os.state; }

static void close_if(int fd) {
  if (fd >= 0)
    close(fd);
}

/* Unlink `entry` only if it is still the file we made (dev/ino match). */
static void unlink_if_ours(int dirfd, const char *entry, dev_t dev, ino_t ino) {
  struct stat st;
  if (fstatat(dirfd, entry, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_dev == dev && st.st_ino == ino)
    unlinkat(dirfd, entry, 0);
}

static void service_state_free(struct memport__linux_service *ls, const char *name, bool remove_entries) {
  bool remove = remove_entries && getpid() == ls->owner;
  if (remove && ls->listenfd >= 0 && ls->sock_ino != 0) {
    char entry[ENTRY_MAX];
    entry_name(entry, name, SOCK_SUFFIX);
    unlink_if_ours(ls->dirfd, entry, ls->sock_dev, ls->sock_ino);
  }
  close_if(ls->epfd);
  close_if(ls->exportfd);
  close_if(ls->listenfd);
  memport__registry_release(ls->dirfd, name, ls->lockfd, remove);
  close_if(ls->dirfd);
  free(ls);
}

/* The registry swept the dead owner of `name` (and holds its lock): remove the socket it left. */
static void drop_socket(int dirfd, const char *name) {
  char entry[ENTRY_MAX];
  entry_name(entry, name, SOCK_SUFFIX);
  struct stat st;
  if (fstatat(dirfd, entry, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISSOCK(st.st_mode))
    (void)unlinkat(dirfd, entry, 0);
}

static int make_listener(void) {
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return neg_errno(errno, MEMPORT_EMFILE);
  int one = 1;
  /* Accepted sockets inherit SO_PASSCRED: every message then carries the sender's credentials. */
  if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) != 0) {
    int e = errno;
    close(fd);
    return neg_errno(e, MEMPORT_EPROTO);
  }
  return fd;
}

int memport__os_service_record_fd(const memport_service_t *s) {
  const struct memport__linux_service *ls = svc_state(s);
  return ls != NULL && ls->owner == getpid() ? ls->lockfd : -1;
}

int memport__os_service_create(memport_service_t *s) {
  struct memport__linux_service *ls = calloc(1, sizeof *ls);
  if (ls == NULL)
    return MEMPORT_ENOMEM;
  ls->dirfd = ls->lockfd = ls->listenfd = ls->exportfd = ls->epfd = -1;
  ls->owner = getpid();

  struct name_dir d;
  int rc = dir_open(&d, true);
  if (rc != 0)
    goto fail;
  ls->dirfd = d.fd;

  /* Names left by dead owners do not pile up: a few are cleared at every creation. */
  (void)memport__registry_sweep(ls->dirfd, MEMPORT__SWEEP_AT_CREATE, drop_socket);
  rc = memport__registry_claim(ls->dirfd, s->name, &ls->lockfd);
  if (rc != 0)
    goto fail;
  /* The record first, so that a connecting client never reads a previous owner's kind. */
  rc = memport__registry_write(ls->lockfd, s->kind);
  if (rc != 0)
    goto fail;

  /* We own the name: whatever socket a dead owner left is ours to replace. */
  char entry[ENTRY_MAX];
  entry_name(entry, s->name, SOCK_SUFFIX);
  if (unlinkat(ls->dirfd, entry, 0) != 0 && errno != ENOENT) {
    rc = neg_errno(errno, MEMPORT_EACCES);
    goto fail;
  }
  rc = ls->listenfd = make_listener();
  if (rc < 0)
    goto fail;
  rc = dir_sock_op(&d, entry, ls->listenfd, true);
  if (rc != 0)
    goto fail;
  struct stat sst;
  if (fstatat(ls->dirfd, entry, &sst, AT_SYMLINK_NOFOLLOW) == 0) {
    ls->sock_dev = sst.st_dev;
    ls->sock_ino = sst.st_ino;
  }
  if (listen(ls->listenfd, LISTEN_BACKLOG) != 0) {
    rc = neg_errno(errno, MEMPORT_EPROTO);
    goto fail;
  }

  if (geteuid() == 0) {
    /* Root's names are reachable from every user (see the top of this file). */
    rc = ls->exportfd = make_listener();
    if (rc < 0)
      goto fail;
    struct sockaddr_un sa;
    socklen_t len;
    abstract_addr(s->name, s->kind, &sa, &len);
    if (bind(ls->exportfd, (struct sockaddr *)&sa, len) != 0) {
      rc = errno == EADDRINUSE ? MEMPORT_EEXIST : neg_errno(errno, MEMPORT_EPROTO);
      goto fail;
    }
    if (listen(ls->exportfd, LISTEN_BACKLOG) != 0) {
      rc = neg_errno(errno, MEMPORT_EPROTO);
      goto fail;
    }
    ls->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (ls->epfd < 0) {
      rc = neg_errno(errno, MEMPORT_EMFILE);
      goto fail;
    }
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.fd = ls->listenfd;
    if (epoll_ctl(ls->epfd, EPOLL_CTL_ADD, ls->listenfd, &ev) != 0) {
      rc = neg_errno(errno, MEMPORT_ENOMEM);
      goto fail;
    }
    ev.data.fd = ls->exportfd;
    if (epoll_ctl(ls->epfd, EPOLL_CTL_ADD, ls->exportfd, &ev) != 0) {
      rc = neg_errno(errno, MEMPORT_ENOMEM);
      goto fail;
    }
  }

  s->handle = ls->epfd >= 0 ? ls->epfd : ls->listenfd;
  s->os.state = ls;
  return 0;

fail:
  /* Entries are removed only if we got as far as owning the name. */
  service_state_free(ls, s->name, ls->lockfd >= 0);
  return rc;
}

void memport__os_service_close(memport_service_t *s) {
  struct memport__linux_service *ls = svc_state(s);
  if (ls == NULL)
    return;
  s->os.state = NULL;
  s->handle = MEMPORT_OS_HANDLE_INVALID;
  service_state_free(ls, s->name, true);
}

static int poll_timeout_ms(uint64_t deadline) {
  if (deadline == MEMPORT__NO_DEADLINE)
    return -1;
  uint64_t now = memport__now_ns();
  if (now >= deadline)
    return 0;
  uint64_t ms = (deadline - now + 999999u) / 1000000u;
  return ms > INT_MAX ? INT_MAX : (int)ms;
}

int memport__os_service_accept(memport_service_t *s, memport_port_t *out, uint64_t deadline) {
  struct memport__linux_service *ls = svc_state(s);
  if (ls == NULL)
    return MEMPORT_EBADF;
  for (;;) {
    struct pollfd pfd[2];
    nfds_t n = 0;
    pfd[n++] = (struct pollfd){.fd = ls->listenfd, .events = POLLIN};
    if (ls->exportfd >= 0)
      pfd[n++] = (struct pollfd){.fd = ls->exportfd, .events = POLLIN};
    int r = poll(pfd, n, poll_timeout_ms(deadline));
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return neg_errno(errno, MEMPORT_EPROTO);
    }
    if (r == 0) {
      if (memport__expired(deadline))
        return MEMPORT_ETIMEDOUT;
      continue; /* poll rounds to milliseconds */
    }
    for (nfds_t i = 0; i < n; i++) {
      if (!(pfd[i].revents & (POLLIN | POLLERR | POLLHUP)))
        continue;
      int fd = accept4(pfd[i].fd, NULL, NULL, SOCK_CLOEXEC);
      if (fd < 0) {
        int e = errno;
        if (e == EAGAIN || e == EWOULDBLOCK || e == EINTR || e == ECONNABORTED || e == EPROTO)
          continue;
        if (e == EMFILE || e == ENFILE)
          return MEMPORT_EMFILE;
        if (e == ENOMEM || e == ENOBUFS)
          return MEMPORT_ENOMEM;
        return neg_errno(e, MEMPORT_EPROTO);
      }
      struct ucred uc;
      socklen_t ulen = sizeof uc;
      if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &ulen) != 0 || ulen != sizeof uc) {
        close(fd);
        continue;
      }
      memport_cred_t peer = {.pid = uc.pid, .uid = uc.uid, .gid = uc.gid};
      if (!memport__service_allows(s, &peer)) {
        close(fd); /* refused: the peer sees its end closed */
        continue;
      }
      int rc = memport__linux_port_from_socket(out, fd);
      if (rc != 0) {
        close(fd);
        if (rc == MEMPORT_ENOMEM || rc == MEMPORT_EMFILE)
          return rc;
        continue;
      }
      return 0;
    }
    if (memport__expired(deadline))
      return MEMPORT_ETIMEDOUT;
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Connecting.                                                                                 */

static void nap_until(uint64_t deadline) {
  uint64_t ns = CONNECT_RETRY_NS;
  if (deadline != MEMPORT__NO_DEADLINE) {
    uint64_t now = memport__now_ns();
    if (now >= deadline)
      return;
    if (deadline - now < ns)
      ns = deadline - now;
  }
  struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u), .tv_nsec = (long)(ns % 1000000000u)};
  nanosleep(&ts, NULL);
}

/* One attempt: connect a fresh socket to `sa`. 0 with *out, or a negative code:
 * MEMPORT_ENOENT (no listener), MEMPORT_EAGAIN (backlog full), other errors are final. */
static int try_connect(const struct name_dir *d, const char *entry, const struct sockaddr_un *abs,
                       socklen_t abslen, int *out) {
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return neg_errno(errno, MEMPORT_EMFILE);
  int one = 1;
  int rc = 0;
  if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) != 0)
    rc = neg_errno(errno, MEMPORT_EPROTO);
  else if (abs != NULL)
    rc = connect(fd, (const struct sockaddr *)abs, abslen) == 0 ? 0 : neg_errno(errno, MEMPORT_EPROTO);
  else
    rc = dir_sock_op(d, entry, fd, false);
  if (rc == -ECONNREFUSED || rc == -ENOENT)
    rc = MEMPORT_ENOENT;
  else if (rc == -EAGAIN || rc == -EINTR)
    rc = MEMPORT_EAGAIN;
  if (rc == 0) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0)
      rc = neg_errno(errno, MEMPORT_EPROTO);
  }
  if (rc != 0) {
    close(fd);
    return rc;
  }
  *out = fd;
  return 0;
}

static int peer_uid(int fd, uid_t *uid) {
  struct ucred uc;
  socklen_t ulen = sizeof uc;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &ulen) != 0 || ulen != sizeof uc)
    return MEMPORT_EPROTO;
  *uid = uc.uid;
  return 0;
}

int memport__os_port_connect(memport_port_t *out, const char *name, int kind, uint64_t deadline) {
  if (kind != MEMPORT_NAME_SERVICE && kind != MEMPORT_NAME_REGION)
    return MEMPORT_EINVAL;
  char entry[ENTRY_MAX];
  entry_name(entry, name, SOCK_SUFFIX);
  uid_t self = geteuid();
  struct sockaddr_un abs;
  socklen_t abslen;
  abstract_addr(name, kind, &abs, &abslen);
  bool nowait = deadline != MEMPORT__NO_DEADLINE && memport__now_ns() >= deadline;

  for (;;) {
    bool exists = false;
    int fd = -1;
    int rc = MEMPORT_ENOENT;

    /* 1. Our own directory. */
    struct name_dir d;
    int drc = dir_open(&d, false);
    if (drc == 0) {
      int rkind = 0;
      memport_cred_t rowner;
      int state = memport__registry_lookup(d.fd, name, &rkind, &rowner);
      if (state != MEMPORT__REG_ABSENT) {
        exists = true;
        if (state == MEMPORT__REG_LIVE && !memport__kind_serves(rkind, kind)) {
          close(d.fd);
          return MEMPORT_EPROTO; /* a region where a service was asked for, or the reverse */
        }
        if (state == MEMPORT__REG_LIVE)
          rc = try_connect(&d, entry, NULL, 0, &fd);
        else
          rc = MEMPORT_EAGAIN; /* the owner is still writing its record */
      }
      close(d.fd);
    } else if (drc != MEMPORT_ENOENT) {
      return drc; /* an unsafe directory is an error, not an absent name */
    }

    /* 2. Names of root, reachable from every user. */
    if (!exists && self != 0) {
      rc = try_connect(NULL, NULL, &abs, abslen, &fd);
      if (rc == 0) {
        uid_t srv;
        if (peer_uid(fd, &srv) != 0 || srv != 0) {
          close(fd); /* not root: somebody squatting the address */
          fd = -1;
          rc = MEMPORT_ENOENT;
        } else {
          exists = true;
        }
      }
    }

    if (rc == 0) {
      uid_t srv;
      rc = peer_uid(fd, &srv);
      if (rc == 0 && srv != self && srv != 0)
        rc = MEMPORT_EPERM; /* only we and root can bind in our directory: never happens */
      if (rc == 0)
        rc = memport__linux_port_from_socket(out, fd);
      if (rc != 0)
        close(fd);
      return rc;
    }
    if (rc != MEMPORT_ENOENT && rc != MEMPORT_EAGAIN)
      return rc;
    if (rc == MEMPORT_EAGAIN)
      exists = true;
    if (memport__expired(deadline))
      return nowait && !exists ? MEMPORT_ENOENT : MEMPORT_ETIMEDOUT;
    nap_until(deadline);
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Listing.                                                                                    */

int memport__os_name_foreach(int (*fn)(const memport_name_info_t *info, void *arg), void *arg) {
  struct name_dir d;
  int rc = dir_open(&d, false);
  if (rc == MEMPORT_ENOENT)
    return 0;
  if (rc != 0)
    return rc;
  rc = memport__registry_foreach(d.fd, fn, arg);
  close(d.fd);
  return rc;
}

int memport__os_name_sweep(size_t max_entries) {
  struct name_dir d;
  int rc = dir_open(&d, false);
  if (rc == MEMPORT_ENOENT)
    return 0;
  if (rc != 0)
    return rc;
  rc = memport__registry_sweep(d.fd, max_entries, drop_socket);
  close(d.fd);
  return rc;
}
