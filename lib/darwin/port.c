/* SPDX-License-Identifier: MIT */
/* port.c: Darwin ports as Mach receive/send right pairs; messages as complex mach_msg with port descriptors. */
#include "darwin/os.h"

#include <bsm/libbsm.h>
#include <mach/notify.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * A memport port is our receive right `rx` plus a send right `tx` to the peer's receive right.
 * Every receive right memport makes carries a no-senders notification addressed to itself: once
 * the peer's send right is gone (closed, or its process died) the kernel queues the notification
 * behind every message the peer sent before, so recv returns those first and MEMPORT_EPEER after.
 * Sending to a peer whose receive right is gone fails with MACH_SEND_INVALID_DEST (MEMPORT_EPEER)
 * once the kernel sees the death at copy-in; a death after copy-in is reported to the sender as
 * success, the message destroyed (see memport__os_port_send). A dead-name notification on tx,
 * also sent to rx, tells recv of the peer's receive right dying (dead_name_arm).
 *
 * A message on the wire:
 *   mach_msg_header_t   (always complex; no reply port)
 *   mach_msg_body_t     descriptor count
 *   mach_msg_port_descriptor_t[]   one per region or semaphore, two per port (receive, send)
 *   struct wire_hdr     magic, byte count, handle count, descriptor count
 *   struct wire_handle[]  kind, flags (read-only), region size
 *   bytes, padded to 4
 * Send rights are sent with COPY_SEND and released only once the send succeeded, so that a failed
 * send leaves every handle as it was (take_back balances what a returned message holds); a port's
 * receive right can only be moved (MOVE_RECEIVE).
 *
 * Received messages are checked here and their rights handed to lib/msg.c raw
 * (memport__os_port_recv); it makes the objects and calls memport__os_recv_finish on each.
 */

#define MAX_DESC (2u * MEMPORT_MSG_MAX_HANDLES)
#define WIRE_MAGIC 0x3174706du /* "mpt1" */
#define WIRE_READONLY 1u

struct wire_hdr {
  uint32_t magic;
  uint32_t nbytes;
  uint32_t nhandles;
  uint32_t ndesc;
};

struct wire_handle {
  uint32_t kind;
  uint32_t flags;
  uint64_t size;
};

#define PREFIX_SIZE (sizeof(mach_msg_header_t) + sizeof(mach_msg_body_t))
#define BUF_SIZE                                                                                                  \
  (PREFIX_SIZE + MAX_DESC * sizeof(mach_msg_port_descriptor_t) + sizeof(struct wire_hdr) +                        \
   MEMPORT_MSG_MAX_HANDLES * sizeof(struct wire_handle) + MEMPORT_MSG_MAX_BYTES + 8 + sizeof(mach_msg_max_trailer_t))

#define RCV_TRAILER (MACH_RCV_TRAILER_TYPE(MACH_MSG_TRAILER_FORMAT_0) | MACH_RCV_TRAILER_ELEMENTS(MACH_RCV_TRAILER_AUDIT))

static bool port_mine(const memport_port_t *p) { return memport__darwin_mine(p->os.gen); }

static void self_cred(memport_cred_t *c) {
  c->pid = getpid();
  c->uid = geteuid();
  c->gid = getegid();
}

int memport__darwin_new_receive(mach_port_name_t *out, bool notify_no_senders) {
  mach_port_t task = mach_task_self();
  mach_port_name_t p = MACH_PORT_NULL;
  *out = MACH_PORT_NULL;
  kern_return_t kr = mach_port_allocate(task, MACH_PORT_RIGHT_RECEIVE, &p);
  if (kr != KERN_SUCCESS)
    return memport__darwin_err(kr);
  mach_port_limits_t limits = {.mpl_qlimit = MACH_PORT_QLIMIT_LARGE};
  kr = mach_port_set_attributes(task, p, MACH_PORT_LIMITS_INFO, (mach_port_info_t)&limits,
                                MACH_PORT_LIMITS_INFO_COUNT);
  if (kr == KERN_SUCCESS && notify_no_senders) {
    /* sync = 1: no send right has been made yet (make-send count 0), so the request is armed
     * rather than answered at once; it fires when the last send right made later goes away. */
    mach_port_t prev = MACH_PORT_NULL;
    kr = mach_port_request_notification(task, p, MACH_NOTIFY_NO_SENDERS, 1, p, MACH_MSG_TYPE_MAKE_SEND_ONCE,
                                        &prev);
    if (kr == KERN_SUCCESS && MACH_PORT_VALID(prev))
      (void)mach_port_deallocate(task, prev);
  }
  if (kr != KERN_SUCCESS) {
    memport__darwin_release_receive(p);
    return memport__darwin_err(kr);
  }
  *out = p;
  return 0;
}

/* Re-arm the no-senders notification of a receive right that arrived in a message. If its peer is
 * already gone the kernel queues the notification at once; a previous request's send-once right
 * comes back and is released (the kernel then queues a send-once notification, which recv skips). */
static void rearm_no_senders(mach_port_name_t rx) {
  mach_port_t task = mach_task_self();
  mach_port_t prev = MACH_PORT_NULL;
  kern_return_t kr =
      mach_port_request_notification(task, rx, MACH_NOTIFY_NO_SENDERS, 1, rx, MACH_MSG_TYPE_MAKE_SEND_ONCE, &prev);
  if (kr == KERN_SUCCESS && MACH_PORT_VALID(prev))
    (void)mach_port_deallocate(task, prev);
}

/*
 * Dead-name notification on tx, delivered to rx. The kernel keeps it as a request on our name of
 * the peer's port; when that port dies (its receive right destroyed: the peer closed it or died)
 * the kernel sends MACH_NOTIFY_DEAD_NAME to rx, behind every message the peer sent before, and
 * adds to our name the user reference the notification carries (osfmk/ipc/ipc_right.c,
 * ipc_right_check: "Add the reference that the notification carries"). recv then gives
 * MEMPORT_EPEER and releases that reference; a port closed or sent away before the notification
 * was read cancels the request or, if it fired already, releases the reference itself.
 * Requested on first use of the port in this process (send or recv), so that every port gets one
 * however it was made (pair, received, connected, accepted, inherited through fork).
 */
static bool dead_name_armed(const memport_port_t *p) {
  return p->os.dn_gen != 0 && p->os.dn_gen == atomic_load_explicit(&memport__darwin_gen, memory_order_relaxed);
}

static void dead_name_arm(memport_port_t *p) {
  if (dead_name_armed(p) || !MACH_PORT_VALID(p->tx) || !MACH_PORT_VALID(p->rx))
    return;
  mach_port_t task = mach_task_self();
  mach_port_t prev = MACH_PORT_NULL;
  /* sync 0: on a name that is dead already this fails (KERN_INVALID_ARGUMENT) and adds nothing;
   * sends then fail with MACH_SEND_INVALID_DEST by themselves. (xnu-11417 ignores sync for
   * dead-name requests, osfmk/ipc/mach_port.c mach_port_request_notification.) */
  kern_return_t kr =
      mach_port_request_notification(task, p->tx, MACH_NOTIFY_DEAD_NAME, 0, p->rx, MACH_MSG_TYPE_MAKE_SEND_ONCE, &prev);
  if (kr == KERN_SUCCESS && MACH_PORT_VALID(prev))
    (void)mach_port_deallocate(task, prev); /* not expected: one request per port and process */
  if (kr == KERN_SUCCESS || kr == KERN_INVALID_ARGUMENT) {
    p->os.dn_gen = atomic_load_explicit(&memport__darwin_gen, memory_order_relaxed);
    p->os.dn_seen = kr != KERN_SUCCESS; /* nothing pending, no reference to release */
  }
}

/* Before tx is released (close, or the port was sent away): leave no request and no reference
 * of the notification behind. */
static void dead_name_disarm(memport_port_t *p) {
  bool armed = dead_name_armed(p);
  p->os.dn_gen = 0;
  if (!armed || p->os.dn_seen || !MACH_PORT_VALID(p->tx))
    return;
  mach_port_t task = mach_task_self();
  mach_port_t prev = MACH_PORT_NULL;
  /* notify NULL cancels: a pending request gives back its send-once right (releasing it queues a
   * send-once notification on rx, which recv skips). A request that fired already is gone from
   * the name (ipc_right_request_alloc: KERN_SUCCESS with nothing, or KERN_INVALID_ARGUMENT on the
   * dead name it just became), and the notification's reference is on the name: release it. */
  kern_return_t kr = mach_port_request_notification(task, p->tx, MACH_NOTIFY_DEAD_NAME, 0, MACH_PORT_NULL,
                                                    MACH_MSG_TYPE_MAKE_SEND_ONCE, &prev);
  if (kr == KERN_SUCCESS && MACH_PORT_VALID(prev))
    (void)mach_port_deallocate(task, prev);
  else if (kr == KERN_SUCCESS || kr == KERN_INVALID_ARGUMENT)
    memport__darwin_release_send(p->tx);
  p->os.dn_seen = true;
}

int memport__darwin_trailer_cred(const mach_msg_header_t *hdr, size_t buf_size, memport_cred_t *cred,
                                 bool *from_kernel) {
  size_t off = round_msg(hdr->msgh_size);
  if (off > buf_size || buf_size - off < sizeof(mach_msg_audit_trailer_t))
    return MEMPORT_EPROTO;
  mach_msg_audit_trailer_t tr;
  memcpy(&tr, (const char *)hdr + off, sizeof tr);
  if (tr.msgh_trailer_type != MACH_MSG_TRAILER_FORMAT_0 || tr.msgh_trailer_size < sizeof tr)
    return MEMPORT_EPROTO;
  cred->pid = audit_token_to_pid(tr.msgh_audit);
  cred->uid = audit_token_to_euid(tr.msgh_audit);
  cred->gid = audit_token_to_egid(tr.msgh_audit);
  if (from_kernel != NULL)
    *from_kernel = cred->pid == 0;
  return 0;
}

int memport__os_port_pair(memport_port_t *a, memport_port_t *b) {
  if (a == NULL || b == NULL)
    return MEMPORT_EINVAL;
  uintptr_t stamp = memport__darwin_stamp();
  if (stamp == 0)
    return MEMPORT_ENOMEM;
  mach_port_t task = mach_task_self();
  mach_port_name_t ra = MACH_PORT_NULL, rb = MACH_PORT_NULL;
  int err = memport__darwin_new_receive(&ra, true);
  if (err < 0)
    return err;
  if ((err = memport__darwin_new_receive(&rb, true)) < 0)
    goto fail;
  kern_return_t kr = mach_port_insert_right(task, ra, ra, MACH_MSG_TYPE_MAKE_SEND);
  if (kr != KERN_SUCCESS) {
    err = memport__darwin_err(kr);
    goto fail;
  }
  kr = mach_port_insert_right(task, rb, rb, MACH_MSG_TYPE_MAKE_SEND);
  if (kr != KERN_SUCCESS) {
    err = memport__darwin_err(kr);
    /* destroying ra below also turns its send right into a dead name: release that too */
    memport__darwin_release_receive(ra);
    memport__darwin_release_send(ra);
    memport__darwin_release_receive(rb);
    return err;
  }
  /* In one task a receive right and send rights to the same port share a name: a->tx == b->rx and
   * b->tx == a->rx as names, each side owning its own right under it. */
  a->rx = ra;
  a->tx = rb;
  b->rx = rb;
  b->tx = ra;
  self_cred(&a->peer);
  self_cred(&b->peer);
  memset(&a->os, 0, sizeof a->os);
  memset(&b->os, 0, sizeof b->os);
  a->os.gen = stamp;
  b->os.gen = stamp;
  memport__darwin_track(a, MEMPORT_HANDLE_PORT);
  memport__darwin_track(b, MEMPORT_HANDLE_PORT);
  return 0;
fail:
  memport__darwin_release_receive(ra);
  memport__darwin_release_receive(rb);
  return err;
}

void memport__os_port_close(memport_port_t *p) {
  if (p == NULL)
    return;
  memport__darwin_untrack(p);
  mach_port_name_t rx = p->rx, tx = p->tx;
  bool mine = port_mine(p);
  if (mine)
    dead_name_disarm(p); /* before tx goes (rx still here to take a send-once notification) */
  /* a fork child that inherited this port may still claim the receive right: then it is kept */
  bool parked = mine && MACH_PORT_VALID(rx) && memport__darwin_park_receive(p);
  if (mine && !MACH_PORT_VALID(rx) && p->os.claim != 0)
    memport__darwin_unclaim(p); /* an inherited copy that never got its receive right */
  p->rx = MACH_PORT_NULL;
  p->tx = MACH_PORT_NULL;
  p->os.gen = 0;
  p->os.claim = 0;
  if (mine) {
    if (!parked)
      memport__darwin_release_receive(rx);
    memport__darwin_release_send(tx);
  }
}

int memport__os_port_dup(const memport_port_t *p, memport_port_t *out) {
  MEMPORT__UNUSED(p);
  MEMPORT__UNUSED(out);
  /* A Mach receive right has exactly one holder: a port cannot be duplicated, only moved. */
  return MEMPORT_ENOTSUP;
}

static int ensure_buf(memport_msg_t *msg) {
  if (msg->os_buf == NULL) {
    msg->os_buf = malloc(BUF_SIZE);
    if (msg->os_buf == NULL)
      return MEMPORT_ENOMEM;
  }
  return 0;
}

void memport__os_msg_free(memport_msg_t *msg) {
  if (msg == NULL)
    return;
  free(msg->os_buf);
  msg->os_buf = NULL;
}

static bool has_right(mach_port_name_t name, mach_port_type_t want) {
  mach_port_type_t type = 0;
  if (!MACH_PORT_VALID(name) || mach_port_type(mach_task_self(), name, &type) != KERN_SUCCESS)
    return false;
  return (type & want) != 0;
}

static void put_desc(mach_msg_port_descriptor_t *d, mach_port_name_t name, mach_msg_type_name_t disposition) {
  memset(d, 0, sizeof *d);
  d->name = name;
  d->disposition = disposition;
  d->type = MACH_MSG_PORT_DESCRIPTOR;
}

/*
 * A send that fails after the message was copied in (MACH_SEND_TIMED_OUT, also with a zero
 * timeout; MACH_SEND_INTERRUPTED; MACH_SEND_NO_BUFFER) hands the message back to the sender
 * (osfmk/ipc/mach_msg.c mach_msg_trap_send -> mach_msg_receive_pseudo -> ipc_kmsg_copyout_pseudo
 * in ipc_kmsg.c). The header is not reversed: the destination stays in msgh_remote_port. Every
 * right in the message is copied out to us again with the type it was copied in as
 * (ipc_object_copyin_type): each COPY_SEND, in the header and in each descriptor, comes back as
 * one more user reference under the same name with disposition PORT_SEND (== MOVE_SEND); a moved
 * receive right comes back as a receive right (PORT_RECEIVE == MOVE_RECEIVE), under the name it
 * had or, if none of our rights was left under it, a new one; a right to a port that died
 * meanwhile comes back as MACH_PORT_DEAD and is gone (ipc_kmsg_copyout_port); one that could not
 * be copied out (no space) as MACH_PORT_NULL, gone, with MACH_MSG_IPC_* bits in the result.
 *
 * take_back releases each extra reference here, exactly once, and rewrites the buffer as it was
 * built (COPY_SEND everywhere, receive rights under their current names), so that whatever the
 * next try or the failure path does, every reference is balanced. (Resending the returned message
 * as it is, as Chromium's mojo/core/channel_mac.cc does, is also balanced as long as the resend is
 * copied in whole; a resend refused during copy-in after the header destroys the MOVE_SEND the
 * buffer then holds, ipc_kmsg_copyin_from_user -> ipc_kmsg_clean_header, and the buffer could no
 * longer tell what is ours.) Returns false when a receive right did not come back.
 */
static bool take_back(memport_port_t *p, memport_msg_t *msg, mach_msg_header_t *hdr,
                      mach_msg_port_descriptor_t *desc, mach_msg_size_t size) {
  bool whole = true;
  if (MACH_PORT_VALID(hdr->msgh_remote_port))
    memport__darwin_release_send(hdr->msgh_remote_port); /* the extra reference to the peer */
  hdr->msgh_bits = MACH_MSGH_BITS(MACH_MSG_TYPE_COPY_SEND, 0) | MACH_MSGH_BITS_COMPLEX;
  hdr->msgh_size = size;
  hdr->msgh_remote_port = p->tx;
  hdr->msgh_local_port = MACH_PORT_NULL;
  hdr->msgh_voucher_port = MACH_PORT_NULL;
  hdr->msgh_id = MEMPORT__DARWIN_MSG_DATA;
  size_t d = 0;
  for (size_t i = 0; i < msg->nhandles; i++) {
    struct memport__handle *h = &msg->handles[i];
    mach_msg_port_descriptor_t got;
    mach_port_name_t own;
    if (h->kind == MEMPORT_HANDLE_PORT) {
      memcpy(&got, &desc[d], sizeof got);
      if (MACH_PORT_VALID(got.name)) {
        (void)memport__darwin_swap_name(&h->u.port->rx, got.name); /* (a fork may read it) */
      } else {
        memport__darwin_forget_receive(h->u.port); /* lost: no fork child waits for it either */
        whole = false;
      }
      put_desc(&desc[d++], h->u.port->rx, MACH_MSG_TYPE_MOVE_RECEIVE);
      own = h->u.port->tx;
    } else if (h->kind == MEMPORT_HANDLE_REGION) {
      own = h->u.region->handle;
    } else {
      own = h->u.sem->handle;
    }
    memcpy(&got, &desc[d], sizeof got);
    if (got.disposition == MACH_MSG_TYPE_PORT_SEND && MACH_PORT_VALID(got.name))
      memport__darwin_release_send(got.name);
    put_desc(&desc[d++], own, MACH_MSG_TYPE_COPY_SEND);
  }
  return whole;
}

/* After a send refused during copy-in: a port whose receive right is no longer ours has none. */
static void forget_lost_receives(memport_msg_t *msg) {
  for (size_t i = 0; i < msg->nhandles; i++) {
    struct memport__handle *h = &msg->handles[i];
    if (h->kind == MEMPORT_HANDLE_PORT && !has_right(h->u.port->rx, MACH_PORT_TYPE_RECEIVE))
      memport__darwin_forget_receive(h->u.port); /* rx cleared; a fork child waiting for it hears so */
  }
}

int memport__os_port_send(memport_port_t *p, memport_msg_t *msg, uint64_t deadline) {
  if (p == NULL || msg == NULL)
    return MEMPORT_EINVAL;
  if (!port_mine(p))
    return MEMPORT_EBADF;
  if (!MACH_PORT_VALID(p->tx))
    return MEMPORT_EPEER;
  if (msg->len > MEMPORT_MSG_MAX_BYTES || msg->nhandles > MEMPORT_MSG_MAX_HANDLES ||
      (msg->len > 0 && msg->bytes == NULL))
    return MEMPORT_EINVAL;
  int err = ensure_buf(msg);
  if (err < 0)
    return err;

  /* Check every handle before the kernel sees them: a body error in mach_msg destroys the rights
   * already copied in, and a moved receive right would be lost with them. */
  size_t ndesc = 0;
  for (size_t i = 0; i < msg->nhandles; i++) {
    const struct memport__handle *h = &msg->handles[i];
    switch (h->kind) {
    case MEMPORT_HANDLE_REGION:
      if (h->u.region == NULL || !memport__darwin_mine(h->u.region->os.gen) ||
          !has_right(h->u.region->handle, MACH_PORT_TYPE_SEND))
        return MEMPORT_EBADF;
      ndesc += 1;
      break;
    case MEMPORT_HANDLE_SEM:
      if (h->u.sem == NULL || !memport__darwin_mine(h->u.sem->os.gen) ||
          !has_right(h->u.sem->handle, MACH_PORT_TYPE_SEND))
        return MEMPORT_EBADF;
      ndesc += 1;
      break;
    case MEMPORT_HANDLE_PORT:
      if (h->u.port == NULL || !port_mine(h->u.port))
        return MEMPORT_EBADF;
      if (!MACH_PORT_VALID(h->u.port->rx) && h->u.port->os.claim != 0) {
        /* inherited through fork: fetch the receive right from the parent before moving it on */
        err = memport__darwin_claim_receive(h->u.port, deadline);
        if (err < 0)
          return err;
      }
      if (!has_right(h->u.port->rx, MACH_PORT_TYPE_RECEIVE))
        return MEMPORT_EBADF;
      /* the port we send on, or its peer's end, cannot travel through itself */
      if (h->u.port == p || h->u.port->rx == p->tx)
        return MEMPORT_EINVAL;
      ndesc += 2;
      break;
    default:
      return MEMPORT_EINVAL;
    }
  }

  unsigned char *buf = msg->os_buf;
  mach_msg_header_t *hdr = (mach_msg_header_t *)(void *)buf;
  mach_msg_body_t *body = (mach_msg_body_t *)(void *)(buf + sizeof *hdr);
  mach_msg_port_descriptor_t *desc = (mach_msg_port_descriptor_t *)(void *)(buf + PREFIX_SIZE);
  unsigned char *w = buf + PREFIX_SIZE + ndesc * sizeof *desc;

  struct wire_hdr wh = {WIRE_MAGIC, (uint32_t)msg->len, (uint32_t)msg->nhandles, (uint32_t)ndesc};
  memcpy(w, &wh, sizeof wh);
  w += sizeof wh;
  size_t d = 0;
  for (size_t i = 0; i < msg->nhandles; i++) {
    const struct memport__handle *h = &msg->handles[i];
    struct wire_handle wt = {(uint32_t)h->kind, 0, 0};
    if (h->kind == MEMPORT_HANDLE_REGION) {
      put_desc(&desc[d++], h->u.region->handle, MACH_MSG_TYPE_COPY_SEND);
      wt.flags = h->u.region->readonly ? WIRE_READONLY : 0;
      wt.size = h->u.region->size;
    } else if (h->kind == MEMPORT_HANDLE_SEM) {
      put_desc(&desc[d++], h->u.sem->handle, MACH_MSG_TYPE_COPY_SEND);
    } else {
      put_desc(&desc[d++], h->u.port->rx, MACH_MSG_TYPE_MOVE_RECEIVE);
      /* a dead or null peer travels as such: the receiver's sends then fail with MEMPORT_EPEER */
      put_desc(&desc[d++], h->u.port->tx, MACH_MSG_TYPE_COPY_SEND);
    }
    memcpy(w, &wt, sizeof wt);
    w += sizeof wt;
  }
  if (msg->len > 0)
    memcpy(w, msg->bytes, msg->len);
  w += msg->len;
  size_t size = (size_t)(w - buf);
  size_t padded = (size + 3u) & ~(size_t)3u;
  memset(w, 0, padded - size);

  dead_name_arm(p);
  hdr->msgh_bits = MACH_MSGH_BITS(MACH_MSG_TYPE_COPY_SEND, 0) | MACH_MSGH_BITS_COMPLEX;
  hdr->msgh_size = (mach_msg_size_t)padded;
  hdr->msgh_remote_port = p->tx;
  hdr->msgh_local_port = MACH_PORT_NULL;
  hdr->msgh_voucher_port = MACH_PORT_NULL;
  hdr->msgh_id = MEMPORT__DARWIN_MSG_DATA;
  body->msgh_descriptor_count = (mach_msg_size_t)ndesc;

  mach_msg_return_t mr;
  bool whole = true;       /* every right came back from a returned message */
  mach_msg_return_t lost = 0; /* MACH_MSG_IPC_* / VM_* bits of rights that could not come back */
  for (;;) {
    bool forever;
    mach_msg_timeout_t ms = memport__darwin_timeout_ms(deadline, &forever);
    /* MACH_SEND_INTERRUPT: an interrupted send comes back to us rather than being resent by
     * mach_msg() itself, which (xnu-11417 libsyscall/mach/mach_msg.c, mach_msg2_internal) would
     * resend the header it was first given, not the one the kernel handed back (see take_back). */
    mr = mach_msg(hdr, MACH_SEND_MSG | MACH_SEND_INTERRUPT | (forever ? 0 : MACH_SEND_TIMEOUT),
                  (mach_msg_size_t)padded, 0, MACH_PORT_NULL, ms, MACH_PORT_NULL);
    if (mr == MACH_MSG_SUCCESS)
      break;
    /* The kernel writes to our buffer only when it hands a copied-in message back, and the remote
     * disposition it then leaves (PORT_SEND) is never the COPY_SEND we wrote. */
    if (MACH_MSGH_BITS_REMOTE(hdr->msgh_bits) == MACH_MSG_TYPE_PORT_SEND) {
      lost = mr & MACH_MSG_MASK;
      mr &= ~(mach_msg_return_t)MACH_MSG_MASK;
      whole = take_back(p, msg, hdr, desc, (mach_msg_size_t)padded) && lost == 0;
      if (whole && (mr == MACH_SEND_INTERRUPTED || (mr == MACH_SEND_TIMED_OUT && !memport__expired(deadline))))
        continue; /* a capped wait ended early, or a signal: the same message again */
    } else {
      /* Refused before or during copy-in: nothing came back, and every send right is as it was
       * (a COPY_SEND copied in before a later descriptor failed is destroyed again: net zero).
       * A receive right moved in before the failure is destroyed with the partial message
       * (ipc_kmsg_copyin_body -> ipc_kmsg_clean_descriptors); the checks above make that
       * unlikely, but never leave a port naming a right it lost. */
      forget_lost_receives(msg);
    }
    break;
  }

  if (mr == MACH_MSG_SUCCESS) {
    /* Success means queued, or destroyed: when the peer's receive right died after copy-in the
     * kernel reports success and destroys the message with every right in it (osfmk/ipc/
     * ipc_kmsg.c ipc_kmsg_send: an inactive destination "we can pretend it got sent and was then
     * immediately destroyed"; the same when the port is destroyed while we wait for queue space,
     * ipc_mqueue_send_locked THREAD_RESTART -> MACH_SEND_INVALID_DEST -> success). A message
     * already queued dies with the receive right too (ipc_port_destroy ->
     * ipc_mqueue_destroy_locked). The death is seen afterwards: the next send fails at copy-in
     * (MACH_SEND_INVALID_DEST: MEMPORT_EPEER), recv gives MEMPORT_EPEER after the peer's last
     * messages (no-senders and dead-name notifications). memport_port_send(3) says what was lost,
     * as on Linux, where unread records die with the peer's socket. Either way the rights now
     * belong to the message: drop ours (the kernel made its copies). */
    for (size_t i = 0; i < msg->nhandles; i++) {
      struct memport__handle *h = &msg->handles[i];
      /* Fields cleared under the fork lock before the release (memport__darwin_swap_name): a fork
       * in another thread takes a reference on each tracked object's name, and must never do so
       * on a name released here, which the kernel may free and reuse. */
      mach_port_name_t name;
      if (h->kind == MEMPORT_HANDLE_REGION) {
        name = memport__darwin_swap_name(&h->u.region->handle, MEMPORT_OS_HANDLE_INVALID);
      } else if (h->kind == MEMPORT_HANDLE_SEM) {
        name = memport__darwin_swap_name(&h->u.sem->handle, MEMPORT_OS_HANDLE_INVALID);
      } else {
        memport__darwin_forget_receive(h->u.port); /* rx moved (cleared there): no child can claim it */
        dead_name_disarm(h->u.port);                /* before its send right goes */
        name = memport__darwin_swap_name(&h->u.port->tx, MACH_PORT_NULL);
      }
      memport__darwin_release_send(name);
    }
    return 0;
  }

  /* Failure: take_back (or the kernel refusing before copy-in) left every reference as it was
   * before the call; a port whose receive right could not be given back has rx NULL. */
  if (!whole)
    return (lost & MACH_MSG_IPC_SPACE) ? MEMPORT_EMFILE : MEMPORT_ENOMEM; /* a right was lost on the way back */
  switch (mr) {
  case MACH_SEND_INVALID_DEST:
    return MEMPORT_EPEER;
  case MACH_SEND_TIMED_OUT:
    return MEMPORT_ETIMEDOUT;
  case MACH_SEND_INVALID_RIGHT:
    return MEMPORT_EBADF;
  default:
    return memport__darwin_err(mr);
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Receive: the backend half. It checks a message and hands its rights over raw (lib/msg.c makes
 * the objects and calls memport__os_recv_finish on each).                                     */

void memport__os_recv_release(const struct memport__raw_handle *raw) {
  if (raw->kind == MEMPORT_HANDLE_PORT) {
    memport__darwin_release_receive(raw->h[0]);
    memport__darwin_release_send(raw->h[1]); /* NULL and DEAD: nothing held */
  } else {
    memport__darwin_release_send(raw->h[0]);
  }
}

int memport__os_recv_finish(int kind, void *object) {
  uintptr_t stamp = memport__darwin_stamp();
  if (stamp == 0)
    return MEMPORT_ENOMEM;
  switch (kind) {
  case MEMPORT_HANDLE_REGION:
    ((memport_region_t *)object)->os.gen = stamp;
    break;
  case MEMPORT_HANDLE_SEM:
    ((memport_sem_t *)object)->os.gen = stamp;
    break;
  case MEMPORT_HANDLE_PORT: {
    memport_port_t *q = object;
    memset(&q->os, 0, sizeof q->os);
    q->os.gen = stamp;
    /* (its dead-name notification is requested on first use, dead_name_arm) */
    rearm_no_senders(q->rx);
    break;
  }
  default:
    return MEMPORT_EPROTO;
  }
  memport__darwin_track(object, kind);
  return 0;
}

static bool desc_ok(const mach_msg_port_descriptor_t *d, mach_msg_type_name_t disposition, bool allow_dead) {
  if (d->type != MACH_MSG_PORT_DESCRIPTOR || d->disposition != disposition)
    return false;
  return MACH_PORT_VALID(d->name) || (allow_dead && (d->name == MACH_PORT_DEAD || d->name == MACH_PORT_NULL));
}

/* Parse and check a received data message; describes its rights in hs[] (which the message still
 * owns: on failure the caller destroys the message). */
static int parse(const unsigned char *buf, mach_msg_size_t size, struct memport__raw_handle *hs, size_t *nh,
                 const unsigned char **bytes, size_t *nbytes) {
  const mach_msg_header_t *hdr = (const mach_msg_header_t *)(const void *)buf;
  if (hdr->msgh_id != MEMPORT__DARWIN_MSG_DATA || !(hdr->msgh_bits & MACH_MSGH_BITS_COMPLEX) ||
      hdr->msgh_remote_port != MACH_PORT_NULL || size < PREFIX_SIZE)
    return MEMPORT_EPROTO;
  mach_msg_body_t body;
  memcpy(&body, buf + sizeof *hdr, sizeof body);
  size_t ndesc = body.msgh_descriptor_count;
  if (ndesc > MAX_DESC || size - PREFIX_SIZE < ndesc * sizeof(mach_msg_port_descriptor_t))
    return MEMPORT_EPROTO;
  /* every descriptor must be a port descriptor (the kernel lays out OOL ones with other sizes) */
  const unsigned char *dp = buf + PREFIX_SIZE;
  for (size_t i = 0; i < ndesc; i++) {
    mach_msg_port_descriptor_t d;
    memcpy(&d, dp + i * sizeof d, sizeof d);
    if (d.type != MACH_MSG_PORT_DESCRIPTOR)
      return MEMPORT_EPROTO;
  }
  size_t off = PREFIX_SIZE + ndesc * sizeof(mach_msg_port_descriptor_t);
  struct wire_hdr wh;
  if (size - off < sizeof wh)
    return MEMPORT_EPROTO;
  memcpy(&wh, buf + off, sizeof wh);
  off += sizeof wh;
  if (wh.magic != WIRE_MAGIC || wh.nhandles > MEMPORT_MSG_MAX_HANDLES || wh.nbytes > MEMPORT_MSG_MAX_BYTES ||
      wh.ndesc != ndesc)
    return MEMPORT_EPROTO;
  size_t need = off + (size_t)wh.nhandles * sizeof(struct wire_handle) + wh.nbytes;
  if (((need + 3u) & ~(size_t)3u) != size)
    return MEMPORT_EPROTO;
  size_t d = 0;
  const size_t page = vm_page_size;
  for (size_t i = 0; i < wh.nhandles; i++) {
    struct wire_handle wt;
    memcpy(&wt, buf + off + i * sizeof wt, sizeof wt);
    struct memport__raw_handle *h = &hs[i];
    memset(h, 0, sizeof *h);
    h->h[0] = MACH_PORT_NULL;
    h->h[1] = MACH_PORT_NULL;
    h->kind = (int)wt.kind;
    mach_msg_port_descriptor_t d0, d1;
    switch (wt.kind) {
    case MEMPORT_HANDLE_REGION:
      if (d + 1 > ndesc || (wt.flags & ~WIRE_READONLY) != 0 || wt.size == 0 || wt.size > SIZE_MAX - page)
        return MEMPORT_EPROTO;
      memcpy(&d0, dp + d * sizeof d0, sizeof d0);
      if (!desc_ok(&d0, MACH_MSG_TYPE_PORT_SEND, false))
        return MEMPORT_EPROTO;
      h->h[0] = d0.name;
      h->readonly = (wt.flags & WIRE_READONLY) != 0;
      /* a peer with smaller pages (x86_64 under Rosetta) may announce 4 KiB multiples */
      h->size = (size_t)((wt.size + page - 1) & ~(uint64_t)(page - 1));
      d += 1;
      break;
    case MEMPORT_HANDLE_SEM:
      if (d + 1 > ndesc || wt.flags != 0 || wt.size != 0)
        return MEMPORT_EPROTO;
      memcpy(&d0, dp + d * sizeof d0, sizeof d0);
      if (!desc_ok(&d0, MACH_MSG_TYPE_PORT_SEND, false))
        return MEMPORT_EPROTO;
      h->h[0] = d0.name;
      d += 1;
      break;
    case MEMPORT_HANDLE_PORT:
      if (d + 2 > ndesc || wt.flags != 0 || wt.size != 0)
        return MEMPORT_EPROTO;
      memcpy(&d0, dp + d * sizeof d0, sizeof d0);
      memcpy(&d1, dp + (d + 1) * sizeof d1, sizeof d1);
      if (!desc_ok(&d0, MACH_MSG_TYPE_PORT_RECEIVE, false) || !desc_ok(&d1, MACH_MSG_TYPE_PORT_SEND, true))
        return MEMPORT_EPROTO;
      h->h[0] = d0.name;
      h->h[1] = d1.name;
      d += 2;
      break;
    default:
      return MEMPORT_EPROTO;
    }
  }
  if (d != ndesc)
    return MEMPORT_EPROTO;
  *nh = wh.nhandles;
  *bytes = buf + off + (size_t)wh.nhandles * sizeof(struct wire_handle);
  *nbytes = wh.nbytes;
  return 0;
}


/* Regions: a kernel memory entry of at least the announced size, writable unless announced
 * read-only. Anything else (a send right to some user port) is refused before anyone uses it. */
static int check_regions(const struct memport__raw_handle *hs, size_t nh) {
  for (size_t i = 0; i < nh; i++) {
    if (hs[i].kind != MEMPORT_HANDLE_REGION)
      continue;
    if (memport__darwin_entry_check(hs[i].h[0], hs[i].size, !hs[i].readonly) < 0 ||
        /* announced read-only, the entry must be: a read-only region sent on from here must never
         * hand out a writable right (a memport sender always derives a VM_PROT_READ entry) */
        (hs[i].readonly && memport__darwin_entry_check(hs[i].h[0], vm_page_size, true) == 0))
      return MEMPORT_EPROTO;
  }
  return 0;
}

/* A dead-name notification came to rx (from the kernel: pid 0 in the audit trailer). True when our
 * peer is gone: tx is a dead name now (mach_port_type converts a name whose port died and reports
 * it: ipc_right_info -> ipc_right_check). Our own request then fired and added a reference to
 * the name, released here once. The notification's not_port is not trusted: one queued before
 * this receive right was sent to us names a right in the sender's space, and a hostile sender
 * could have had the kernel send one about any port of its own, then sent us the receive right.
 * False (not about our peer): the caller skips it. */
static bool dead_name_seen(memport_port_t *p) {
  mach_port_type_t type = 0;
  bool dead = !MACH_PORT_VALID(p->tx) ||
              (mach_port_type(mach_task_self(), p->tx, &type) == KERN_SUCCESS && (type & MACH_PORT_TYPE_DEAD_NAME));
  if (!dead)
    return false;
  if (dead_name_armed(p) && !p->os.dn_seen && MACH_PORT_VALID(p->tx)) {
    p->os.dn_seen = true;
    memport__darwin_release_send(p->tx); /* the notification's reference (ipc_right_check) */
  }
  return true;
}

int memport__os_port_recv(memport_port_t *p, memport_msg_t *msg, struct memport__raw_msg *raw, uint64_t deadline) {
  if (p == NULL || msg == NULL || raw == NULL)
    return MEMPORT_EINVAL;
  raw->nhandles = 0;
  raw->len = 0;
  if (!port_mine(p))
    return MEMPORT_EBADF;
  if (!MACH_PORT_VALID(p->rx) && p->os.claim != 0) {
    /* a port inherited through fork: its receive right comes from the parent on first use */
    int err = memport__darwin_claim_receive(p, deadline);
    if (err < 0)
      return err;
  }
  if (!MACH_PORT_VALID(p->rx))
    return MEMPORT_EBADF;
  if (p->os.peer_gone)
    return MEMPORT_EPEER;
  dead_name_arm(p);
  int err = ensure_buf(msg);
  if (err < 0)
    return err;
  if (msg->bytes == NULL)
    return MEMPORT_ENOMEM;
  mach_msg_header_t *hdr = msg->os_buf;
  for (;;) {
    bool forever;
    mach_msg_timeout_t ms = memport__darwin_timeout_ms(deadline, &forever);
    hdr->msgh_size = 0;
    mach_msg_return_t mr =
        mach_msg(hdr, MACH_RCV_MSG | MACH_RCV_INTERRUPT | RCV_TRAILER | (forever ? 0 : MACH_RCV_TIMEOUT), 0,
                 (mach_msg_size_t)(BUF_SIZE), p->rx, ms, MACH_PORT_NULL);
    if (mr == MACH_RCV_INTERRUPTED)
      continue; /* the deadline is checked by the next timeout computation */
    if (mr == MACH_RCV_TIMED_OUT) {
      if (!forever && !memport__expired(deadline))
        continue; /* a capped wait ended early */
      return MEMPORT_ETIMEDOUT;
    }
    if (mr == MACH_RCV_TOO_LARGE)
      return MEMPORT_EMSGSIZE; /* larger than any memport message: the kernel destroyed it (as Linux) */
    if ((mr & ~MACH_MSG_MASK) == MACH_RCV_BODY_ERROR) {
      /* some rights or memory could not be given to us; release what was */
      mach_msg_destroy(hdr);
      return memport__darwin_err(mr);
    }
    if (mr != MACH_MSG_SUCCESS) {
      if (mr == MACH_RCV_INVALID_NAME || mr == MACH_RCV_PORT_DIED)
        return MEMPORT_EBADF;
      return memport__darwin_err(mr);
    }

    memport_cred_t sender;
    bool from_kernel = false;
    if (hdr->msgh_size > BUF_SIZE || memport__darwin_trailer_cred(hdr, BUF_SIZE, &sender, &from_kernel) < 0) {
      mach_msg_destroy(hdr);
      return MEMPORT_EPROTO;
    }
    /* Notifications come from the kernel (pid 0 in the audit trailer: no process can send that),
     * as simple messages on a send-once right (nothing to destroy but the header). */
    if (from_kernel && !(hdr->msgh_bits & MACH_MSGH_BITS_COMPLEX)) {
      if (hdr->msgh_id == MACH_NOTIFY_NO_SENDERS) {
        p->os.peer_gone = true;
        return MEMPORT_EPEER;
      }
      if (hdr->msgh_id == MACH_NOTIFY_DEAD_NAME && dead_name_seen(p)) {
        p->os.peer_gone = true;
        return MEMPORT_EPEER;
      }
      /* another notification (a send-once right to this port released, as when a dead-name
       * request is cancelled; a port-deleted one; a dead-name one not about our peer): not for
       * the user. Simple messages: destroying them releases nothing but their header rights. */
      mach_msg_destroy(hdr);
      continue;
    }
    size_t nh = 0, nbytes = 0;
    const unsigned char *bytes = NULL;
    if (parse(msg->os_buf, hdr->msgh_size, raw->handles, &nh, &bytes, &nbytes) < 0 ||
        check_regions(raw->handles, nh) < 0) {
      mach_msg_destroy(hdr);
      return MEMPORT_EPROTO;
    }
    /* From here on the rights belong to raw (lib/msg.c makes the objects or releases them). */
    if (nbytes > 0)
      memcpy(msg->bytes, bytes, nbytes);
    raw->nhandles = nh;
    raw->len = nbytes;
    raw->sender = sender;
    return 0;
  }
}
