/* SPDX-License-Identifier: MIT */
/* name.c: Darwin named services through the bootstrap server, with a per-user registry of live owners. */
#include "darwin/os.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <servers/bootstrap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/*
 * A name lives in two places:
 *  - the bootstrap server, as "org.memport.<name>": checked in by the owner (bootstrap_check_in,
 *    which launchd accepts for names no job declares), or, where launchd refuses that, registered
 *    with the deprecated bootstrap_register. Clients find the service port with bootstrap_look_up.
 *  - the portable registry (lib/registry.c) in a directory of this user
 *    (confstr(_CS_DARWIN_USER_TEMP_DIR)/memport, or /tmp/memport-UID; created 0700, checked for
 *    owner, mode and symlinks): "<name>.lock", holding the same record as on Linux, locked by the
 *    owner while it lives. The bootstrap server has no public enumeration and keeps a dead owner's
 *    entry until launchd has processed its exit, so the registry decides "live owner:
 *    MEMPORT_EEXIST" versus "reclaim", and feeds memport_name_foreach, as on Linux.
 *
 * The bootstrap namespace is not the registry's: it belongs to a launchd domain (a login session
 * or the per-user background domain; the system domain for daemons), not to a uid. A process of
 * this user in another session can see a live owner in the registry and still find no bootstrap
 * entry; memport__os_port_connect reports that as MEMPORT_EPERM after a short grace period rather
 * than waiting out its timeout. A peer of another uid (memport_service_allow_uid) has a registry of
 * its own, which knows nothing of this name: it finds the service only when it shares the
 * service's bootstrap namespace (the same session, or a root daemon's name in the system domain).
 *
 * Connection handshake: the client makes a receive right and sends HELLO {magic, kind} to the
 * service port with a send right to it; accept receives it with the audit trailer, checks the
 * sender's uid (memport__service_allows) and answers WELCOME {status 0} with a send right to a
 * fresh per-connection receive right, or WELCOME {status MEMPORT_EPERM (uid not allowed) /
 * MEMPORT_EPROTO (the name is of the other kind)} and drops the client.
 */

#define BOOTSTRAP_PREFIX "org.memport."
#define HELLO_MAGIC 0x6c68706du   /* "mphl" */
#define WELCOME_MAGIC 0x6c77706du /* "mpwl" */
#define STALE_RETRY_NS 1000000000ull /* how long a dead owner's bootstrap entry may linger */
#define UNSEEN_GRACE_NS 250000000ull /* how long a live registry owner may stay unseen by look-up */

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

/* What this user's registry says of `name` (MEMPORT__REG_*), with the kind of a live owner. */
static int registry_state(const char *name, int *kind) {
  int dirfd = -1;
  if (registry_open(false, &dirfd) < 0)
    return MEMPORT__REG_ABSENT;
  memport_cred_t owner;
  int state = memport__registry_lookup(dirfd, name, kind, &owner);
  close(dirfd);
  return state;
}

/* ------------------------------------------------------------------------------------------ */
/* Services.                                                                                    */

/* Give the registry entry back: removed (while still locked) by its owner, only closed by a fork
 * child's copy of the service. */
static void service_unregister(memport_service_t *s, bool remove) {
  int fd = s->os.lock_fd_plus1 - 1;
  if (fd < 0)
    return;
  s->os.lock_fd_plus1 = 0;
  int dirfd = -1;
  if (!remove || registry_open(false, &dirfd) < 0)
    dirfd = -1;
  memport__registry_release(dirfd, s->name, fd, remove && dirfd >= 0);
  if (dirfd >= 0)
    close(dirfd);
}

/* Is this refusal of check-in/register one that a dead owner's entry explains?
 *
 * launchd keeps a service in the job that created it until it has processed that job's end, and
 * refuses the name to every other job meanwhile. In the open-source launchd (launchd-842,
 * src/core.c): job_mig_check_in2 finds the name with jobmgr_lookup_service and, when
 * machservice_job(ms) != j (the dead process's anonymous job), returns BOOTSTRAP_NOT_PRIVILEGED
 * ("tried to hijack the service"), SERVICE_ACTIVE only to the same job; job_mig_register2 does
 * the same. The dead process's anonymous job and its services go only when launchd handles the
 * process's NOTE_EXIT kevent (job_callback_proc: job_reap, then job_remove for anonymous jobs), or
 * the port's dead-name notification (jobmgr_delete_anything_with_port -> machservice_delete):
 * asynchronously, after the registry lock, which the kernel drops at once, has let us in.
 * Our caller holds the registry lock, so no live memport owner of this user has the name. */
static bool stale_refusal(kern_return_t kr) {
  return kr == BOOTSTRAP_NOT_PRIVILEGED || kr == BOOTSTRAP_SERVICE_ACTIVE || kr == BOOTSTRAP_NAME_IN_USE;
}

/* Put a receive right in the bootstrap server under bname: check in (launchd creates the service
 * and hands us its receive right), or, where launchd refuses to create a name on check-in, register
 * one of ours. A refusal that a dead owner's lingering entry explains is retried for
 * STALE_RETRY_NS; after that NOT_PRIVILEGED gives MEMPORT_EPERM (a sandbox, or the name held in
 * this bootstrap namespace by a live process of another user), the others MEMPORT_EEXIST.
 * Returns 0 with *rx set, or an error. */
static int bootstrap_publish(const char *bname, mach_port_name_t *rx) {
  mach_port_t task = mach_task_self();
  uint64_t until = memport__now_ns() + STALE_RETRY_NS;
  mach_port_name_t own = MACH_PORT_NULL; /* ours to register, made on first need */
  int err = 0;
  for (;;) {
    mach_port_t got = MACH_PORT_NULL;
    kern_return_t kr = bootstrap_check_in(bootstrap_port, bname, &got);
    if (kr == BOOTSTRAP_SUCCESS) {
      if (!MACH_PORT_VALID(got)) {
        err = MEMPORT_EPROTO;
        break;
      }
      mach_port_limits_t limits = {.mpl_qlimit = MACH_PORT_QLIMIT_LARGE};
      (void)mach_port_set_attributes(task, got, MACH_PORT_LIMITS_INFO, (mach_port_info_t)&limits,
                                     MACH_PORT_LIMITS_INFO_COUNT);
      memport__darwin_drop_all(own);
      *rx = got;
      return 0;
    }
    if (kr == BOOTSTRAP_UNKNOWN_SERVICE || kr == BOOTSTRAP_NOT_PRIVILEGED) {
      /* This launchd may not create services on check-in: register one ourselves. */
      if (own == MACH_PORT_NULL) {
        if ((err = memport__darwin_new_receive(&own, false)) < 0)
          return err;
        kern_return_t ir = mach_port_insert_right(task, own, own, MACH_MSG_TYPE_MAKE_SEND);
        if (ir != KERN_SUCCESS) {
          memport__darwin_release_receive(own);
          return memport__darwin_err(ir);
        }
      }
      char nm[BOOTSTRAP_MAX_NAME_LEN];
      snprintf(nm, sizeof nm, "%s", bname);
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wdeprecated-declarations"
      kr = bootstrap_register(bootstrap_port, nm, own); /* copies the send right */
#pragma clang diagnostic pop
      if (kr == BOOTSTRAP_SUCCESS) {
        /* Keep only the receive right: launchd holds the send right it needs. */
        memport__darwin_release_send(own);
        *rx = own;
        return 0;
      }
    }
    if (!stale_refusal(kr)) {
      err = bootstrap_err(kr);
      break;
    }
    if (memport__now_ns() >= until) {
      err = kr == BOOTSTRAP_NOT_PRIVILEGED ? MEMPORT_EPERM : MEMPORT_EEXIST;
      break;
    }
    sleep_ns(10000000u);
  }
  memport__darwin_drop_all(own);
  return err;
}

int memport__os_service_record_fd(const memport_service_t *s) {
  return s->os.lock_fd_plus1 - 1; /* -1 when none; a fork child's callers check their pid */
}

int memport__os_service_create(memport_service_t *s) {
  if (s == NULL)
    return MEMPORT_EINVAL;
  int err = memport__name_check(s->name);
  if (err < 0)
    return err;
  if (s->kind != MEMPORT_NAME_SERVICE && s->kind != MEMPORT_NAME_REGION && s->kind != MEMPORT_NAME_TOPIC)
    return MEMPORT_EINVAL;
  uintptr_t stamp = memport__darwin_stamp();
  if (stamp == 0)
    return MEMPORT_ENOMEM;
  char bname[BOOTSTRAP_MAX_NAME_LEN];
  if ((err = bootstrap_name(bname, s->name)) < 0)
    return err;
  int dirfd = -1, fd = -1;
  if ((err = registry_open(true, &dirfd)) < 0)
    return err;
  /* Names left by dead owners do not pile up: a few are cleared at every creation. Their
   * bootstrap entries went with their receive rights; only the lock files stay behind. */
  (void)memport__registry_sweep(dirfd, MEMPORT__SWEEP_AT_CREATE, NULL);
  err = memport__registry_claim(dirfd, s->name, &fd);
  close(dirfd);
  if (err < 0)
    return err;
  s->os.lock_fd_plus1 = fd + 1;
  mach_port_name_t rx = MACH_PORT_NULL;
  if ((err = bootstrap_publish(bname, &rx)) < 0) {
    service_unregister(s, true);
    return err;
  }
  /* The record last: a client that reads it knows the bootstrap entry exists (connect relies on
   * this to tell "not yet published" from "published where this process cannot look"). */
  if ((err = memport__registry_write(fd, s->kind)) < 0) {
    memport__darwin_release_receive(rx);
    service_unregister(s, true);
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
    service_unregister(s, false);
    s->handle = MACH_PORT_NULL;
    return;
  }
  /* Withdraw the port first (pending hellos are destroyed with it: their clients see the peer
   * gone), then the registry entry. */
  memport__darwin_release_receive(s->handle);
  s->handle = MACH_PORT_NULL;
  service_unregister(s, true);
  s->os.gen = 0;
}

/* Send the control message at hdr (its destination given with COPY_SEND: the caller keeps its
 * own reference; at most one port descriptor) until it is queued or the deadline passes (an
 * expired deadline: one try that never waits). A send that fails leaves every right as it was
 * before the call, except that a send right made from one of our receive rights (MAKE_SEND) and
 * handed back stays ours: the descriptor then says MOVE_SEND of it.
 *
 * When a send fails after the kernel has copied the message in (MACH_SEND_TIMED_OUT: the queue
 * stayed full, also with a zero timeout; MACH_SEND_INTERRUPTED), xnu hands the message back to the
 * sender: xnu-11417 osfmk/ipc/mach_msg.c mach_msg_trap_send -> mach_msg_receive_pseudo ->
 * ipc_kmsg_copyout_pseudo (osfmk/ipc/ipc_kmsg.c; xnu-7195: mach_msg_send and
 * mach_msg_overwrite_trap call it directly). The header is not reversed: the destination, which
 * copy-in made a send right of its own (ipc_object_copyin_type: COPY_SEND -> PORT_SEND), comes
 * back as one more user reference on its name with MACH_MSGH_BITS_REMOTE = PORT_SEND; so does a
 * COPY_SEND or MAKE_SEND descriptor, while a moved right comes back as the right we gave. A
 * failure before or during copy-in writes nothing back (a right copied in before the failing
 * one is destroyed again: ipc_kmsg_copyin_header_cleanup, ipc_kmsg_clean_descriptors).
 * So, as lib/darwin/port.c's take_back does for data messages: release each extra reference
 * exactly once, put back what we built (a moved right under the name it came back as; a made one
 * as moved), and send that again. (Resending the returned message as it is, as mojo/core/channel_mac.cc does, is
 * balanced only while every resend is copied in whole; one refused after the header destroys
 * the MOVE_SEND the buffer then holds, and the buffer can no longer tell what is ours.) The
 * previous code rebuilt the header with COPY_SEND and released nothing: one leaked reference on
 * the peer per timed-out try, so the peer never got its no-senders notification.
 * MACH_SEND_INTERRUPT: an interrupted send comes back here rather than being resent by mach_msg()
 * itself from the buffer the kernel rewrote. */
static mach_msg_return_t ctl_send(mach_msg_header_t *hdr, mach_msg_size_t size, uint64_t deadline) {
  const mach_msg_bits_t bits = hdr->msgh_bits;
  const mach_port_name_t dest = hdr->msgh_remote_port;
  mach_msg_port_descriptor_t *desc = NULL;
  mach_msg_port_descriptor_t built;
  memset(&built, 0, sizeof built);
  if (bits & MACH_MSGH_BITS_COMPLEX) {
    desc = (mach_msg_port_descriptor_t *)(void *)((unsigned char *)hdr + sizeof *hdr + sizeof(mach_msg_body_t));
    built = *desc;
  }
  for (;;) {
    bool forever;
    mach_msg_timeout_t ms = memport__darwin_timeout_ms(deadline, &forever);
    hdr->msgh_size = size;
    mach_msg_return_t mr = mach_msg(hdr, MACH_SEND_MSG | MACH_SEND_INTERRUPT | (forever ? 0 : MACH_SEND_TIMEOUT),
                                    size, 0, MACH_PORT_NULL, ms, MACH_PORT_NULL);
    if (mr == MACH_MSG_SUCCESS || MACH_MSGH_BITS_REMOTE(hdr->msgh_bits) != MACH_MSG_TYPE_PORT_SEND)
      return mr; /* queued, or refused before or during copy-in: nothing came back */
    memport__darwin_release_send(hdr->msgh_remote_port); /* the extra reference on the destination */
    if (desc != NULL) {
      mach_port_name_t got = desc->name;
      if (built.disposition == MACH_MSG_TYPE_COPY_SEND) {
        memport__darwin_release_send(got); /* a reference of its own, made for the message */
      } else {
        /* A moved right is ours again; so is a send right made from our receive right, kept and
         * moved by the next try: releasing it could be the last send right and fire the receive
         * right's no-senders notification before anyone used it. NULL: lost on the way back. */
        built.name = MACH_PORT_VALID(got) ? got : MACH_PORT_NULL;
        if (built.disposition == MACH_MSG_TYPE_MAKE_SEND)
          built.disposition = MACH_MSG_TYPE_MOVE_SEND;
      }
      *desc = built;
    }
    hdr->msgh_bits = bits;
    hdr->msgh_remote_port = dest;
    hdr->msgh_local_port = MACH_PORT_NULL;
    hdr->msgh_voucher_port = MACH_PORT_NULL;
    mach_msg_return_t lost = mr & MACH_MSG_MASK; /* a right that could not be copied back out */
    mr &= ~(mach_msg_return_t)MACH_MSG_MASK;
    if (lost == 0 && (mr == MACH_SEND_INTERRUPTED || (mr == MACH_SEND_TIMED_OUT && !memport__expired(deadline))))
      continue; /* a capped wait ended early, or a signal: the same message again */
    return mr;
  }
}

/* Send a WELCOME to `to` (a send right, copied: the caller still owns it): status 0 with a send
 * right made from `conn`, or a refusal. Never waits for queue space. A failed send leaves `to` as
 * it was and may leave a send right under `conn` (ctl_send): the caller destroys conn with
 * memport__darwin_drop_all, which takes it too. */
static mach_msg_return_t send_welcome(mach_port_name_t to, int32_t status, mach_port_name_t conn) {
  uint64_t now = memport__now_ns(); /* an expired deadline: one try, MACH_SEND_TIMEOUT 0 */
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
    return ctl_send(&m.hdr, sizeof m, now);
  }
  /* a refusal carries no port: header and payload only */
  struct {
    mach_msg_header_t hdr;
    struct ctl_payload payload;
  } r;
  memset(&r, 0, sizeof r);
  r.hdr = m.hdr;
  r.payload = m.payload;
  return ctl_send(&r.hdr, sizeof r, now);
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
    int32_t refusal = !memport__kind_serves(s->kind, m.payload.value) ? MEMPORT_EPROTO
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
 * owns svc, and ctl_send leaves no extra reference on it). The send right is made from rx, or
 * moved when *have_send says an earlier try handed one back. Such a right is kept for the next
 * try, never released: dropping the last send right to rx would fire its no-senders notification
 * before the connection exists. Returns 0, MEMPORT_ENOENT when svc is dead, or another error. */
static int send_hello(mach_port_name_t svc, mach_port_name_t rx, int kind, uint64_t deadline, bool *have_send) {
  struct ctl_msg hello;
  memset(&hello, 0, sizeof hello);
  hello.hdr.msgh_bits = MACH_MSGH_BITS(MACH_MSG_TYPE_COPY_SEND, 0) | MACH_MSGH_BITS_COMPLEX;
  hello.hdr.msgh_remote_port = svc;
  hello.hdr.msgh_local_port = MACH_PORT_NULL;
  hello.hdr.msgh_voucher_port = MACH_PORT_NULL;
  hello.hdr.msgh_id = MEMPORT__DARWIN_MSG_HELLO;
  hello.body.msgh_descriptor_count = 1;
  hello.port.name = rx;
  hello.port.disposition = *have_send ? MACH_MSG_TYPE_MOVE_SEND : MACH_MSG_TYPE_MAKE_SEND;
  hello.port.type = MACH_MSG_PORT_DESCRIPTOR;
  hello.payload.magic = HELLO_MAGIC;
  hello.payload.value = kind;
  mach_msg_return_t mr = ctl_send(&hello.hdr, sizeof hello, deadline);
  if (mr == MACH_MSG_SUCCESS) {
    *have_send = false;
    return 0;
  }
  /* After a failed send (ctl_send) a send right made or moved from rx that came back is ours
   * under rx, marked MOVE_SEND for the next try; NULL if the kernel could not give it back. */
  *have_send = hello.port.disposition == MACH_MSG_TYPE_MOVE_SEND && hello.port.name == rx;
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
  /* Since when this user's registry has shown a live owner with its record written (so its
   * bootstrap entry exists: the record is written after the check-in) that bootstrap_look_up does
   * not know: 0 while that is not the case. */
  uint64_t unseen_since = 0;
  for (;;) {
    int rkind = 0;
    int state = registry_state(name, &rkind);
    if (state == MEMPORT__REG_LIVE && !memport__kind_serves(rkind, kind)) {
      memport__darwin_drop_all(rx);
      return MEMPORT_EPROTO; /* a region where a service was asked for, or the reverse */
    }
    bool exists = state != MEMPORT__REG_ABSENT;
    bool unknown = false;
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
      exists = state != MEMPORT__REG_ABSENT; /* a dead service port counts as absent */
    } else if (kr == BOOTSTRAP_SUCCESS) {
      memport__darwin_release_send(svc); /* a dead name */
    } else if (kr == BOOTSTRAP_UNKNOWN_SERVICE) {
      unknown = true;
    } else {
      memport__darwin_drop_all(rx);
      return bootstrap_err(kr);
    }
    /* Names are per user in the registry but per launchd domain (session) in the bootstrap
     * server: a live owner that our look-up cannot find serves in another session's namespace
     * (or is closing: it withdraws its port just before its registry entry). After a short grace,
     * or at the deadline, say so instead of waiting out the timeout for nothing. */
    if (state == MEMPORT__REG_LIVE && unknown) {
      uint64_t now = memport__now_ns();
      if (unseen_since == 0)
        unseen_since = now;
      if (now - unseen_since >= UNSEEN_GRACE_NS || memport__expired(deadline)) {
        memport__darwin_drop_all(rx);
        return MEMPORT_EPERM;
      }
    } else {
      unseen_since = 0;
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
  err = memport__registry_foreach(dirfd, fn, arg);
  close(dirfd);
  return err;
}

int memport__os_name_sweep(size_t max_entries) {
  int dirfd = -1;
  int err = registry_open(false, &dirfd);
  if (err == MEMPORT_ENOENT)
    return 0; /* nothing was ever published by this user */
  if (err < 0)
    return err;
  err = memport__registry_sweep(dirfd, max_entries, NULL);
  close(dirfd);
  return err;
}
