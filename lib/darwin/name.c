/* SPDX-License-Identifier: MIT */
/* name.c: Darwin named services through the bootstrap server, with a per-user registry of live owners. */
#include "darwin/os.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <servers/bootstrap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/*
 * A name lives in two places:
 *  - the bootstrap server, as "org.memport.<name>": checked in by the owner (bootstrap_check_in,
 *    which launchd accepts for names no job declares), or, where launchd refuses that, registered
 *    with the deprecated bootstrap_register. Clients find the service port with bootstrap_look_up.
 *  - a registry directory of this user (confstr(_CS_DARWIN_USER_TEMP_DIR)/memport, or
 *    /tmp/memport-UID; created 0700, checked for owner, mode and symlinks): a file "<name>.lock"
 *    holding the owner's pid, uid, gid and kind, flock()ed exclusively by the owner while it lives.
 *    The bootstrap server has no public enumeration, and a crashed owner's flock disappears with it:
 *    the registry decides "live owner: MEMPORT_EEXIST" versus "reclaim", and feeds
 *    memport_name_foreach, as on Linux.
 *
 * Connection handshake: the client makes a receive right and sends HELLO {magic, kind} to the
 * service port with a send right to it; accept receives it with the audit trailer, checks the
 * sender's uid (memport__service_allows) and answers WELCOME {status 0} with a send right to a
 * fresh per-connection receive right, or WELCOME {status MEMPORT_EPERM (uid not allowed) /
 * MEMPORT_EPROTO (the name is of the other kind)} and drops the client.
 */

#define BOOTSTRAP_PREFIX "org.memport."
#define LOCK_SUFFIX ".lock"
#define HELLO_MAGIC 0x6c68706du   /* "mphl" */
#define WELCOME_MAGIC 0x6c77706du /* "mpwl" */
#define REGISTRY_TAG "memport-name-v1"
#define STALE_RETRY_NS 1000000000ull /* how long a dead owner's bootstrap entry may linger */

struct ctl_payload {
  uint32_t magic;
  int32_t value; /* HELLO: the kind asked for; WELCOME: 0 or a negative MEMPORT_E* code */
};

struct ctl_msg {
  mach_msg_header_t hdr;
  mach_msg_body_t body;
  mach_msg_port_descriptor_t port;
  struct ctl_payload payload;
};

static void sleep_ns(uint64_t ns) {
  struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* Sleep a little (5 ms) without passing the deadline. Returns false once the deadline has passed. */
static bool nap(uint64_t deadline) {
  if (memport__expired(deadline))
    return false;
  uint64_t step = 5000000u;
  if (deadline != MEMPORT__NO_DEADLINE) {
    uint64_t now = memport__now_ns();
    if (deadline - now < step)
      step = deadline - now;
  }
  sleep_ns(step);
  return true;
}

static int bootstrap_name(char out[BOOTSTRAP_MAX_NAME_LEN], const char *name) {
  int n = snprintf(out, BOOTSTRAP_MAX_NAME_LEN, "%s%s", BOOTSTRAP_PREFIX, name);
  if (n < 0 || n >= BOOTSTRAP_MAX_NAME_LEN)
    return MEMPORT_ENAMETOOLONG;
  return 0;
}

static int bootstrap_err(kern_return_t kr) {
  switch (kr) {
  case BOOTSTRAP_SUCCESS:
    return 0;
  case BOOTSTRAP_NOT_PRIVILEGED:
    return MEMPORT_EPERM;
  case BOOTSTRAP_NAME_IN_USE:
  case BOOTSTRAP_SERVICE_ACTIVE:
    return MEMPORT_EEXIST;
  case BOOTSTRAP_UNKNOWN_SERVICE:
    return MEMPORT_ENOENT;
  case BOOTSTRAP_NO_MEMORY:
    return MEMPORT_ENOMEM;
  case BOOTSTRAP_BAD_COUNT:
  case BOOTSTRAP_NO_CHILDREN:
    return MEMPORT_EPROTO;
  default:
    return memport__darwin_err(kr);
  }
}

static int errno_err(int e) { return e > 0 ? -e : MEMPORT_EPROTO; }

/* ------------------------------------------------------------------------------------------ */
/* The registry directory.                                                                     */

static int registry_path(char *out, size_t cap) {
  char tmp[PATH_MAX];
  size_t n = confstr(_CS_DARWIN_USER_TEMP_DIR, tmp, sizeof tmp);
  int len;
  if (n > 0 && n <= sizeof tmp && tmp[0] == '/')
    len = snprintf(out, cap, "%s%smemport", tmp, tmp[n - 2] == '/' ? "" : "/");
  else
    len = snprintf(out, cap, "/tmp/memport-%u", (unsigned)geteuid());
  if (len < 0 || (size_t)len >= cap)
    return MEMPORT_ENAMETOOLONG;
  return 0;
}

/* Open (and with `create`, make) the registry directory; refuse one that is not ours, a symlink, or
 * open to others. */
static int registry_open(bool create, int *dirfd) {
  char path[PATH_MAX];
  int err = registry_path(path, sizeof path);
  if (err < 0)
    return err;
  if (create && mkdir(path, 0700) != 0 && errno != EEXIST)
    return errno_err(errno);
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return errno == ELOOP ? MEMPORT_EACCES : errno_err(errno);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    err = errno_err(errno);
    close(fd);
    return err;
  }
  if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077) != 0) {
    close(fd);
    return MEMPORT_EACCES;
  }
  *dirfd = fd;
  return 0;
}

static int lock_file_name(char *out, size_t cap, const char *name) {
  int n = snprintf(out, cap, "%s%s", name, LOCK_SUFFIX);
  return n < 0 || (size_t)n >= cap ? MEMPORT_ENAMETOOLONG : 0;
}

/* Is the open file `fd` still the one linked as `file` in the directory? */
static bool still_linked(int dirfd, const char *file, int fd) {
  struct stat a, b;
  if (fstat(fd, &a) != 0 || fstatat(dirfd, file, &b, AT_SYMLINK_NOFOLLOW) != 0)
    return false;
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/* Take the exclusive lock of `file`: 0 and *out, MEMPORT_EEXIST if a live owner holds it. */
static int registry_lock(int dirfd, const char *file, int *out) {
  for (int attempt = 0; attempt < 16; attempt++) {
    int fd = openat(dirfd, file, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
      return errno == ELOOP ? MEMPORT_EACCES : errno_err(errno);
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
      close(fd);
      return MEMPORT_EACCES;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      int e = errno;
      close(fd);
      if (e == EWOULDBLOCK)
        return MEMPORT_EEXIST;
      if (e == EINTR)
        continue;
      return errno_err(e);
    }
    /* Someone cleaning a stale entry may have unlinked the file between our open and our lock. */
    if (still_linked(dirfd, file, fd)) {
      *out = fd;
      return 0;
    }
    close(fd);
  }
  return MEMPORT_EBUSY;
}

static int registry_write(int fd, int kind) {
  char line[128];
  int n = snprintf(line, sizeof line, "%s %ld %u %u %d\n", REGISTRY_TAG, (long)getpid(), (unsigned)geteuid(),
                   (unsigned)getegid(), kind);
  if (n < 0 || (size_t)n >= sizeof line)
    return MEMPORT_EPROTO;
  if (ftruncate(fd, 0) != 0)
    return errno_err(errno);
  ssize_t w = pwrite(fd, line, (size_t)n, 0);
  if (w != (ssize_t)n)
    return w < 0 ? errno_err(errno) : MEMPORT_ENOSPC;
  return 0;
}

/* Parse a registry file's contents (written by another process of this user: checked anyway). */
static bool registry_parse(const char *text, memport_name_info_t *info) {
  char tag[32];
  long pid;
  unsigned uid, gid;
  int kind;
  char extra;
  if (sscanf(text, "%31s %ld %u %u %d %c", tag, &pid, &uid, &gid, &kind, &extra) != 5)
    return false;
  if (strcmp(tag, REGISTRY_TAG) != 0 || pid <= 0 || pid > INT_MAX ||
      (kind != MEMPORT_NAME_SERVICE && kind != MEMPORT_NAME_REGION))
    return false;
  info->owner.pid = (pid_t)pid;
  info->owner.uid = (uid_t)uid;
  info->owner.gid = (gid_t)gid;
  info->kind = kind;
  return true;
}

/* What this user's registry says of `name`: 1 a live owner holds it, 0 a file without a live owner
 * (a crashed owner's leftover: its bootstrap entry, if any, is stale), -1 no record (never
 * published by this uid, closed, or another uid's service): only the bootstrap server can tell. */
static int registry_state(const char *name) {
  int dirfd = -1;
  if (registry_open(false, &dirfd) < 0)
    return -1;
  char file[MEMPORT_NAME_MAX + sizeof LOCK_SUFFIX];
  int state = -1;
  if (lock_file_name(file, sizeof file, name) == 0) {
    int fd = openat(dirfd, file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
      if (flock(fd, LOCK_SH | LOCK_NB) == 0)
        state = 0;
      else
        state = errno == EWOULDBLOCK ? 1 : -1;
      close(fd);
    }
  }
  close(dirfd);
  return state;
}

/* The kind a live owner recorded for `name` in this user's registry: MEMPORT_NAME_SERVICE,
 * MEMPORT_NAME_REGION, or 0 when there is no readable record (yet). */
static int registry_kind(const char *name) {
  int dirfd = -1;
  if (registry_open(false, &dirfd) < 0)
    return 0;
  char file[MEMPORT_NAME_MAX + sizeof LOCK_SUFFIX];
  int kind = 0;
  if (lock_file_name(file, sizeof file, name) == 0) {
    int fd = openat(dirfd, file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
      char text[128];
      ssize_t got = pread(fd, text, sizeof text - 1, 0);
      memport_name_info_t info;
      if (got > 0) {
        text[got] = '\0';
        if (registry_parse(text, &info))
          kind = info.kind;
      }
      close(fd);
    }
  }
  close(dirfd);
  return kind;
}

/* ------------------------------------------------------------------------------------------ */
/* Services.                                                                                    */

static void service_unregister(memport_service_t *s) {
  int fd = s->os.lock_fd_plus1 - 1;
  if (fd < 0)
    return;
  int dirfd = -1;
  char file[MEMPORT_NAME_MAX + sizeof LOCK_SUFFIX];
  if (registry_open(false, &dirfd) == 0) {
    if (lock_file_name(file, sizeof file, s->name) == 0 && still_linked(dirfd, file, fd))
      (void)unlinkat(dirfd, file, 0); /* unlinked while still locked: nobody takes a dying entry */
    close(dirfd);
  }
  close(fd); /* releases the lock */
  s->os.lock_fd_plus1 = 0;
}

/* Put the receive right `rx` in the bootstrap server under bname, or take the one launchd keeps
 * for it. Returns 0 with *rx set, or an error. */
static int bootstrap_publish(const char *bname, mach_port_name_t *rx) {
  mach_port_t task = mach_task_self();
  uint64_t until = memport__now_ns() + STALE_RETRY_NS;
  for (;;) {
    mach_port_t got = MACH_PORT_NULL;
    kern_return_t kr = bootstrap_check_in(bootstrap_port, bname, &got);
    if (kr == BOOTSTRAP_SUCCESS) {
      if (!MACH_PORT_VALID(got))
        return MEMPORT_EPROTO;
      mach_port_limits_t limits = {.mpl_qlimit = MACH_PORT_QLIMIT_LARGE};
      (void)mach_port_set_attributes(task, got, MACH_PORT_LIMITS_INFO, (mach_port_info_t)&limits,
                                     MACH_PORT_LIMITS_INFO_COUNT);
      *rx = got;
      return 0;
    }
    if (kr == BOOTSTRAP_SERVICE_ACTIVE || kr == BOOTSTRAP_NAME_IN_USE) {
      /* We hold the registry lock, so the previous owner is dead: launchd has not noticed yet. */
      if (memport__now_ns() >= until)
        return MEMPORT_EEXIST;
      sleep_ns(10000000u);
      continue;
    }
    if (kr != BOOTSTRAP_UNKNOWN_SERVICE && kr != BOOTSTRAP_NOT_PRIVILEGED)
      return bootstrap_err(kr);
    break; /* this launchd does not create services on check-in: register one ourselves */
  }
  mach_port_name_t own = MACH_PORT_NULL;
  int err = memport__darwin_new_receive(&own, false);
  if (err < 0)
    return err;
  kern_return_t kr = mach_port_insert_right(task, own, own, MACH_MSG_TYPE_MAKE_SEND);
  if (kr != KERN_SUCCESS) {
    memport__darwin_release_receive(own);
    return memport__darwin_err(kr);
  }
  char nm[BOOTSTRAP_MAX_NAME_LEN];
  snprintf(nm, sizeof nm, "%s", bname);
  for (;;) {
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wdeprecated-declarations"
    kr = bootstrap_register(bootstrap_port, nm, own); /* copies the send right */
#pragma clang diagnostic pop
    if ((kr == BOOTSTRAP_NAME_IN_USE || kr == BOOTSTRAP_SERVICE_ACTIVE) && memport__now_ns() < until) {
      sleep_ns(10000000u);
      continue;
    }
    break;
  }
  /* Keep only the receive right: launchd holds the send right it needs. */
  memport__darwin_release_send(own);
  if (kr != BOOTSTRAP_SUCCESS) {
    memport__darwin_release_receive(own);
    return bootstrap_err(kr);
  }
  *rx = own;
  return 0;
}

int memport__os_service_create(memport_service_t *s) {
  if (s == NULL)
    return MEMPORT_EINVAL;
  int err = memport__name_check(s->name);
  if (err < 0)
    return err;
  if (s->kind != MEMPORT_NAME_SERVICE && s->kind != MEMPORT_NAME_REGION)
    return MEMPORT_EINVAL;
  uintptr_t stamp = memport__darwin_stamp();
  if (stamp == 0)
    return MEMPORT_ENOMEM;
  char bname[BOOTSTRAP_MAX_NAME_LEN];
  char file[MEMPORT_NAME_MAX + sizeof LOCK_SUFFIX];
  if ((err = bootstrap_name(bname, s->name)) < 0 || (err = lock_file_name(file, sizeof file, s->name)) < 0)
    return err;
  int dirfd = -1, fd = -1;
  if ((err = registry_open(true, &dirfd)) < 0)
    return err;
  err = registry_lock(dirfd, file, &fd);
  close(dirfd);
  if (err < 0)
    return err;
  s->os.lock_fd_plus1 = fd + 1;
  mach_port_name_t rx = MACH_PORT_NULL;
  if ((err = bootstrap_publish(bname, &rx)) < 0) {
    service_unregister(s);
    return err;
  }
  if ((err = registry_write(fd, s->kind)) < 0) {
    memport__darwin_release_receive(rx);
    service_unregister(s);
    return err;
  }
  s->handle = rx;
  s->os.gen = stamp;
  return 0;
}

void memport__os_service_close(memport_service_t *s) {
  if (s == NULL)
    return;
  if (!memport__darwin_mine(s->os.gen)) {
    /* a fork child's copy: the name and the lock stay the parent's; close our lock descriptor */
    int fd = s->os.lock_fd_plus1 - 1;
    if (fd >= 0)
      close(fd);
    s->os.lock_fd_plus1 = 0;
    s->handle = MACH_PORT_NULL;
    return;
  }
  /* Withdraw the port first (pending hellos are destroyed with it: their clients see the peer
   * gone), then the registry entry. */
  memport__darwin_release_receive(s->handle);
  s->handle = MACH_PORT_NULL;
  service_unregister(s);
  s->os.gen = 0;
}

/* Send a WELCOME to `to` (a send right, copied: the caller still owns it): status 0 with a send
 * right made from `conn`, or a refusal. Never waits for queue space. If the send fails after the
 * kernel copied the message in, the made send right comes back under `conn`; the caller destroys
 * conn with memport__darwin_drop_all, which takes it too. */
static mach_msg_return_t send_welcome(mach_port_name_t to, int32_t status, mach_port_name_t conn) {
  struct ctl_msg m;
  memset(&m, 0, sizeof m);
  m.hdr.msgh_bits = MACH_MSGH_BITS(MACH_MSG_TYPE_COPY_SEND, 0);
  m.hdr.msgh_remote_port = to;
  m.hdr.msgh_local_port = MACH_PORT_NULL;
  m.hdr.msgh_id = MEMPORT__DARWIN_MSG_WELCOME;
  m.payload.magic = WELCOME_MAGIC;
  m.payload.value = status;
  if (status == 0) {
    m.hdr.msgh_bits |= MACH_MSGH_BITS_COMPLEX;
    m.body.msgh_descriptor_count = 1;
    m.port.name = conn;
    m.port.disposition = MACH_MSG_TYPE_MAKE_SEND;
    m.port.type = MACH_MSG_PORT_DESCRIPTOR;
    m.hdr.msgh_size = sizeof m;
    return mach_msg(&m.hdr, MACH_SEND_MSG | MACH_SEND_TIMEOUT, sizeof m, 0, MACH_PORT_NULL, 0, MACH_PORT_NULL);
  }
  /* a refusal carries no port: header and payload only */
  struct {
    mach_msg_header_t hdr;
    struct ctl_payload payload;
  } r;
  memset(&r, 0, sizeof r);
  r.hdr = m.hdr;
  r.hdr.msgh_size = sizeof r;
  r.payload = m.payload;
  return mach_msg(&r.hdr, MACH_SEND_MSG | MACH_SEND_TIMEOUT, sizeof r, 0, MACH_PORT_NULL, 0, MACH_PORT_NULL);
}

/* Receive one message of at most MEMPORT__DARWIN_CTL_BUF bytes on rx, with the audit trailer.
 * Returns 0 with the message in buf, or ETIMEDOUT / another code. Oversized messages are destroyed
 * by the kernel and reported as MEMPORT_EPROTO. */
static int ctl_receive(mach_port_name_t rx, void *buf, uint64_t deadline) {
  mach_msg_header_t *hdr = buf;
  for (;;) {
    bool forever;
    mach_msg_timeout_t ms = memport__darwin_timeout_ms(deadline, &forever);
    mach_msg_return_t mr =
        mach_msg(hdr,
                 MACH_RCV_MSG | MACH_RCV_INTERRUPT | (forever ? 0 : MACH_RCV_TIMEOUT) |
                     MACH_RCV_TRAILER_TYPE(MACH_MSG_TRAILER_FORMAT_0) |
                     MACH_RCV_TRAILER_ELEMENTS(MACH_RCV_TRAILER_AUDIT),
                 0, MEMPORT__DARWIN_CTL_BUF, rx, ms, MACH_PORT_NULL);
    if (mr == MACH_MSG_SUCCESS)
      return 0;
    if (mr == MACH_RCV_INTERRUPTED)
      continue;
    if (mr == MACH_RCV_TIMED_OUT) {
      if (!forever && !memport__expired(deadline))
        continue;
      return MEMPORT_ETIMEDOUT;
    }
    if (mr == MACH_RCV_TOO_LARGE)
      return MEMPORT_EPROTO;
    if ((mr & ~MACH_MSG_MASK) == MACH_RCV_BODY_ERROR) {
      mach_msg_destroy(hdr);
      return MEMPORT_EPROTO;
    }
    if (mr == MACH_RCV_INVALID_NAME || mr == MACH_RCV_PORT_DIED)
      return MEMPORT_EBADF;
    return memport__darwin_err(mr);
  }
}

int memport__os_service_accept(memport_service_t *s, memport_port_t *out, uint64_t deadline) {
  if (s == NULL || out == NULL)
    return MEMPORT_EINVAL;
  if (!MACH_PORT_VALID(s->handle) || !memport__darwin_mine(s->os.gen))
    return MEMPORT_EBADF;
  union {
    mach_msg_header_t hdr;
    unsigned char bytes[MEMPORT__DARWIN_CTL_BUF];
  } buf;
  for (;;) {
    int err = ctl_receive(s->handle, &buf, deadline);
    if (err == MEMPORT_EPROTO)
      continue; /* an oversized message, already destroyed: not a connection */
    if (err < 0)
      return err;
    mach_msg_header_t *hdr = &buf.hdr;
    memport_cred_t peer;
    bool from_kernel = false;
    if (hdr->msgh_size > sizeof buf ||
        memport__darwin_trailer_cred(hdr, sizeof buf, &peer, &from_kernel) < 0 || from_kernel) {
      mach_msg_destroy(hdr);
      continue;
    }
    struct ctl_msg m;
    if (hdr->msgh_size != sizeof m) {
      mach_msg_destroy(hdr);
      continue;
    }
    memcpy(&m, buf.bytes, sizeof m);
    if (m.hdr.msgh_id != MEMPORT__DARWIN_MSG_HELLO || !(m.hdr.msgh_bits & MACH_MSGH_BITS_COMPLEX) ||
        m.hdr.msgh_remote_port != MACH_PORT_NULL || m.body.msgh_descriptor_count != 1 ||
        m.port.type != MACH_MSG_PORT_DESCRIPTOR || m.port.disposition != MACH_MSG_TYPE_PORT_SEND ||
        !MACH_PORT_VALID(m.port.name) || m.payload.magic != HELLO_MAGIC) {
      mach_msg_destroy(hdr);
      continue;
    }
    mach_port_name_t client = m.port.name; /* a send right to the client's receive right: ours now */
    /* A name of the other kind (a publication asked for a service, or the reverse) is a protocol
     * mismatch, as on Linux, where the client reads the kind from the registry. */
    int32_t refusal = m.payload.value != s->kind            ? MEMPORT_EPROTO
                      : !memport__service_allows(s, &peer) ? MEMPORT_EPERM
                                                           : 0;
    if (refusal != 0) {
      (void)send_welcome(client, refusal, MACH_PORT_NULL); /* best effort: it is dropped anyway */
      memport__darwin_release_send(client);
      continue;
    }
    mach_port_name_t conn = MACH_PORT_NULL;
    if ((err = memport__darwin_new_receive(&conn, true)) < 0) {
      memport__darwin_release_send(client);
      return err;
    }
    if (send_welcome(client, 0, conn) != MACH_MSG_SUCCESS) {
      /* the client is gone or hostile (full queue): drop it and wait for the next one */
      memport__darwin_drop_all(conn);
      memport__darwin_release_send(client);
      continue;
    }
    out->rx = conn;
    out->tx = client;
    out->peer = peer;
    memset(&out->os, 0, sizeof out->os);
    out->os.gen = s->os.gen;
    memport__darwin_track(out, MEMPORT_HANDLE_PORT);
    return 0;
  }
}

/* Send HELLO {kind} with a send right to rx to the service right svc (copied: the caller still
 * owns svc). The send right is made from rx, or moved when *have_send says an earlier try handed
 * one back. Such a right is kept for the next try, never released: dropping the last send right
 * to rx would fire its no-senders notification before the connection exists. Returns 0,
 * MEMPORT_ENOENT when svc is dead, or another error. */
static int send_hello(mach_port_name_t svc, mach_port_name_t rx, int kind, uint64_t deadline, bool *have_send) {
  struct ctl_msg hello;
  memset(&hello, 0, sizeof hello);
  hello.hdr.msgh_id = MEMPORT__DARWIN_MSG_HELLO;
  hello.body.msgh_descriptor_count = 1;
  hello.port.name = rx;
  hello.port.disposition = *have_send ? MACH_MSG_TYPE_MOVE_SEND : MACH_MSG_TYPE_MAKE_SEND;
  hello.port.type = MACH_MSG_PORT_DESCRIPTOR;
  hello.payload.magic = HELLO_MAGIC;
  hello.payload.value = kind;
  mach_msg_return_t mr;
  for (;;) {
    /* (Re)build the header: after a timed-out send the kernel hands the message back swapped. The
     * service right is copied, so it stays ours whatever happens; the send right to rx comes back
     * under rx with disposition MOVE_SEND, which the next try moves on. */
    hello.hdr.msgh_bits = MACH_MSGH_BITS(MACH_MSG_TYPE_COPY_SEND, 0) | MACH_MSGH_BITS_COMPLEX;
    hello.hdr.msgh_size = sizeof hello;
    hello.hdr.msgh_remote_port = svc;
    hello.hdr.msgh_local_port = MACH_PORT_NULL;
    hello.hdr.msgh_voucher_port = MACH_PORT_NULL;
    bool forever;
    mach_msg_timeout_t ms = memport__darwin_timeout_ms(deadline, &forever);
    mr = mach_msg(&hello.hdr, MACH_SEND_MSG | (forever ? 0 : MACH_SEND_TIMEOUT), sizeof hello, 0, MACH_PORT_NULL,
                  ms, MACH_PORT_NULL);
    if (mr == MACH_SEND_TIMED_OUT && !memport__expired(deadline))
      continue;
    break;
  }
  if (mr == MACH_MSG_SUCCESS) {
    *have_send = false;
    return 0;
  }
  /* Before copy-in nothing moved (a moved right is still ours); after it, the right came back. */
  *have_send = hello.port.disposition == MACH_MSG_TYPE_MOVE_SEND;
  switch (mr) {
  case MACH_SEND_INVALID_DEST:
    return MEMPORT_ENOENT;
  case MACH_SEND_TIMED_OUT:
    return MEMPORT_ETIMEDOUT;
  default:
    return memport__darwin_err(mr);
  }
}

/* Wait on rx for the service's WELCOME. 0 with *tx and *peer, or an error. */
static int wait_welcome(mach_port_name_t rx, uint64_t deadline, mach_port_name_t *tx, memport_cred_t *peer) {
  union {
    mach_msg_header_t hdr;
    unsigned char bytes[MEMPORT__DARWIN_CTL_BUF];
  } buf;
  for (;;) {
    int err = ctl_receive(rx, &buf, deadline);
    if (err < 0)
      return err;
    mach_msg_header_t *hdr = &buf.hdr;
    bool from_kernel = false;
    if (hdr->msgh_size > sizeof buf || memport__darwin_trailer_cred(hdr, sizeof buf, peer, &from_kernel) < 0) {
      mach_msg_destroy(hdr);
      return MEMPORT_EPROTO;
    }
    if (from_kernel) {
      if (hdr->msgh_id == MACH_NOTIFY_NO_SENDERS)
        return MEMPORT_EPEER; /* our hello was dropped unanswered (the service went away) */
      mach_msg_destroy(hdr);
      continue;
    }
    if (hdr->msgh_id != MEMPORT__DARWIN_MSG_WELCOME || hdr->msgh_remote_port != MACH_PORT_NULL) {
      mach_msg_destroy(hdr);
      return MEMPORT_EPROTO;
    }
    if (!(hdr->msgh_bits & MACH_MSGH_BITS_COMPLEX)) {
      struct {
        mach_msg_header_t hdr;
        struct ctl_payload payload;
      } r;
      if (hdr->msgh_size != sizeof r)
        return MEMPORT_EPROTO; /* simple: no rights to release */
      memcpy(&r, buf.bytes, sizeof r);
      bool known = r.payload.value == MEMPORT_EPERM || r.payload.value == MEMPORT_EPROTO;
      return r.payload.magic == WELCOME_MAGIC && known ? r.payload.value : MEMPORT_EPROTO;
    }
    struct ctl_msg m;
    if (hdr->msgh_size != sizeof m) {
      mach_msg_destroy(hdr);
      return MEMPORT_EPROTO;
    }
    memcpy(&m, buf.bytes, sizeof m);
    if (m.body.msgh_descriptor_count != 1 || m.port.type != MACH_MSG_PORT_DESCRIPTOR ||
        m.port.disposition != MACH_MSG_TYPE_PORT_SEND || !MACH_PORT_VALID(m.port.name) ||
        m.payload.magic != WELCOME_MAGIC || m.payload.value != 0) {
      mach_msg_destroy(hdr);
      return MEMPORT_EPROTO;
    }
    *tx = m.port.name;
    return 0;
  }
}

int memport__os_port_connect(memport_port_t *out, const char *name, int kind, uint64_t deadline) {
  if (out == NULL)
    return MEMPORT_EINVAL;
  int err = memport__name_check(name);
  if (err < 0)
    return err;
  if (kind != MEMPORT_NAME_SERVICE && kind != MEMPORT_NAME_REGION)
    return MEMPORT_EINVAL;
  char bname[BOOTSTRAP_MAX_NAME_LEN];
  if ((err = bootstrap_name(bname, name)) < 0)
    return err;
  uintptr_t stamp = memport__darwin_stamp();
  if (stamp == 0)
    return MEMPORT_ENOMEM;
  mach_port_name_t rx = MACH_PORT_NULL;
  if ((err = memport__darwin_new_receive(&rx, true)) < 0)
    return err;
  /* Until the deadline: find the name with a live owner and get our hello into its queue. A
   * service port that is dead (its owner just exited, launchd not yet updated) counts as absent. */
  bool have_send = false;
  /* As on Linux: MEMPORT_ENOENT only for MEMPORT_NOWAIT and a name nobody serves; a positive
   * timeout that expires gives MEMPORT_ETIMEDOUT. */
  bool nowait = deadline != MEMPORT__NO_DEADLINE && memport__now_ns() >= deadline;
  for (;;) {
    bool exists = false;
    int state = registry_state(name);
    if (state == 1) {
      exists = true;
      int rkind = registry_kind(name);
      if (rkind != 0 && rkind != kind) {
        memport__darwin_drop_all(rx);
        return MEMPORT_EPROTO; /* a region where a service was asked for, or the reverse */
      }
    }
    if (state != 0) {
      mach_port_t svc = MACH_PORT_NULL;
      kern_return_t kr = bootstrap_look_up(bootstrap_port, bname, &svc);
      if (kr == BOOTSTRAP_SUCCESS && MACH_PORT_VALID(svc)) {
        exists = true;
        err = send_hello(svc, rx, kind, deadline, &have_send);
        memport__darwin_release_send(svc);
        if (err == 0)
          break;
        if (err != MEMPORT_ENOENT) {
          memport__darwin_drop_all(rx);
          return err;
        }
        exists = state == 1; /* a dead service port counts as absent */
      } else if (kr == BOOTSTRAP_SUCCESS) {
        memport__darwin_release_send(svc); /* a dead name */
      } else if (kr != BOOTSTRAP_UNKNOWN_SERVICE) {
        memport__darwin_drop_all(rx);
        return bootstrap_err(kr);
      }
    }
    if (!nap(deadline)) {
      memport__darwin_drop_all(rx);
      return nowait && !exists ? MEMPORT_ENOENT : MEMPORT_ETIMEDOUT;
    }
  }
  mach_port_name_t tx = MACH_PORT_NULL;
  memport_cred_t peer;
  if ((err = wait_welcome(rx, deadline, &tx, &peer)) < 0) {
    memport__darwin_drop_all(rx); /* the server's send right to it turns dead */
    return err;
  }
  out->rx = rx;
  out->tx = tx;
  out->peer = peer;
  memset(&out->os, 0, sizeof out->os);
  out->os.gen = stamp;
  memport__darwin_track(out, MEMPORT_HANDLE_PORT);
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Listing.                                                                                     */

int memport__os_name_foreach(int (*fn)(const memport_name_info_t *info, void *arg), void *arg) {
  if (fn == NULL)
    return MEMPORT_EINVAL;
  int dirfd = -1;
  int err = registry_open(false, &dirfd);
  if (err == MEMPORT_ENOENT)
    return 0; /* nothing was ever published by this user */
  if (err < 0)
    return err;
  int listfd = dup(dirfd);
  DIR *dir = listfd < 0 ? NULL : fdopendir(listfd);
  if (dir == NULL) {
    err = errno_err(errno);
    if (listfd >= 0)
      close(listfd);
    close(dirfd);
    return err;
  }
  int ret = 0;
  struct dirent *de;
  while ((de = readdir(dir)) != NULL) {
    size_t n = strlen(de->d_name);
    const size_t sl = sizeof LOCK_SUFFIX - 1;
    if (n <= sl || n - sl > MEMPORT_NAME_MAX || strcmp(de->d_name + n - sl, LOCK_SUFFIX) != 0)
      continue;
    memport_name_info_t info;
    memset(&info, 0, sizeof info);
    memcpy(info.name, de->d_name, n - sl);
    info.name[n - sl] = '\0';
    if (memport__name_check(info.name) != 0)
      continue;
    int fd = openat(dirfd, de->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
      continue;
    if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
      /* No live owner: a crashed one's leftover. Remove it if still nobody's. */
      if (flock(fd, LOCK_EX | LOCK_NB) == 0 && still_linked(dirfd, de->d_name, fd))
        (void)unlinkat(dirfd, de->d_name, 0);
      close(fd);
      continue;
    }
    if (errno != EWOULDBLOCK) {
      close(fd);
      continue;
    }
    char text[128];
    ssize_t got = pread(fd, text, sizeof text - 1, 0);
    close(fd);
    if (got <= 0)
      continue; /* an owner that has not written its record yet */
    text[got] = '\0';
    if (!registry_parse(text, &info))
      continue;
    ret = fn(&info, arg);
    if (ret != 0)
      break;
  }
  closedir(dir);
  close(dirfd);
  return ret;
}
