/* SPDX-License-Identifier: MIT */
/* fork.c: Mach rights across fork() on Darwin: fork generations, object tracking, and the parent's broker that hands a child its rights. */
#include "darwin/os.h"

#include <errno.h>
#include <mach/notify.h>
#include <pthread.h>
#include <servers/bootstrap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysctl.h>
#include <unistd.h>

/*
 * fork() gives the child a fresh port name space: none of the parent's rights (xnu
 * osfmk/kern/ipc_tt.c, ipc_task_init: only the special ports, the bootstrap port among them, and
 * the registered ports are copied). So that regions, semaphores and ports copied into a child keep
 * working there, as descriptors do on Linux:
 *  - every object holding a Mach right is tracked here while it lives;
 *  - the prepare handler takes one extra send-right reference per tracked object (region and
 *    semaphore: the object's right; port: the send right to its peer) into a fork record with a
 *    random token, and makes sure the parent's broker runs: a thread serving a receive right
 *    checked in with the bootstrap server as "org.memport.fork.<parent pid>"
 *    (a name unknown to launchd is created for the caller on check-in: launchd src/core.c,
 *    job_mig_check_in2; it goes away with our receive right);
 *  - the child handler moves the child to a new fork generation (so that nothing inherited is
 *    used by mistake), finds the broker with bootstrap_look_up of "org.memport.fork.<getppid()>"
 *    (the child inherits the bootstrap port, ipc_task_init; Libsystem's child handlers, xpc's
 *    among them, have run before ours, and launchd itself talks to its bootstrap port in a forked
 *    child before exec: src/core.c, job_start_child)
 *    and claims the record with its token and a "lifeline" (a send right to a receive right the
 *    child keeps to its end). The broker checks the claimant by the audit token the kernel
 *    attaches (its parent must be this process, its effective uid ours) and the token, and
 *    answers with the references (MOVE_SEND); the child checks that the answer comes from its
 *    parent (audit token again) and stores the rights in its copies of the objects. This is the
 *    pattern of Chromium's base/apple/mach_port_rendezvous_mac.cc (a rendezvous server keyed by
 *    pid in the bootstrap namespace, claimants checked by audit token), not the registered-port
 *    slot memport used before: the kernel copies registered ports into every task made from this
 *    one (ipc_task_init, "inherit registered ports"), posix_spawn'd programs included
 *    (bsd/kern/kern_exec.c posix_spawn -> fork1 -> task_create_internal, and exec's
 *    ipc_task_reset leaves them), so another thread's system() would hand the broker to an
 *    unrelated program;
 *  - the parent handler waits (up to CLAIM_WAIT_MS, without holding the lock, so that the broker
 *    can serve) until the child has claimed: fork() returns in the parent only once the child
 *    holds its own send rights, so a parent that exits at once (daemonizing) takes nothing away
 *    from the child. Libsystem runs the pthread_atfork parent handlers after its own (malloc,
 *    dispatch, xpc) parent handlers (Libsystem init.c, libSystem_atfork_parent), so everything
 *    works while we wait. A fork that failed (Libc sys/fork.c _do_fork: __fork() returned -1 and
 *    set errno, then the parent handlers run) is seen by errno, which the prepare handler set to
 *    0: no wait, and its record expires after the claim window instead of RECORD_TTL_NS.
 * A receive right has one holder. A port's receive right stays with the parent while the parent
 * uses that port; the child's copy of the port gets it once the parent closes its own copy (as a
 * parent does with the child's end of a pair): the parent's close moves the right into a message
 * queued on the child's lifeline (which the child owns, so the right survives the parent's exit),
 * and the child picks it up on its first receive (a child that receives earlier waits for it,
 * within its deadline). A close before the child claimed keeps the right in the record, and the
 * grant carries it. A child that closes its copy of a port whose right it has not got tells the
 * broker, so that the parent's later close destroys the right instead of handing it on, and the
 * peer sees MEMPORT_EPEER as on Linux. A parent that exits (or sends the port away) before closing
 * its copy takes the receive right with it: the child's copy then gives MEMPORT_EPEER (exit) or
 * MEMPORT_EBADF (sent away) on receive.
 * The broker forgets a record when the child's lifeline dies (the child exited), when nothing is
 * left to hand over, or RECORD_TTL_NS after the fork when nobody claimed it. Services are not
 * inherited (the child's copy gives MEMPORT_EBADF). Should anything fail (no bootstrap server, no
 * memory, a broker that does not answer within CLAIM_WAIT_MS), the child's copies are unusable
 * (MEMPORT_EBADF), never wrong.
 */

_Atomic uintptr_t memport__darwin_gen = 1;

#define TOKEN_BYTES 16
#define GRANT_MAGIC 0x7267706du /* "mpgr" */
#define REQ_MAGIC 0x7172706du   /* "mprq" */
#define MSG_CLAIM 0x6d700010    /* child -> broker: token, lifeline; reply: MSG_GRANT */
#define MSG_GRANT 0x6d700011
#define MSG_RXCLAIM 0x6d700012  /* child -> broker: token, index; reply on the lifeline */
#define MSG_PUSH 0x6d700013     /* -> lifeline: index, the receive right */
#define MSG_GONE 0x6d700014     /* -> lifeline: index: the right will never come */
#define MSG_HELD 0x6d700015     /* -> lifeline: index: the parent still uses it */
#define MSG_UNCLAIM 0x6d700016  /* child -> broker: token, index: the child closed its copy */
#define MSG_UNCLAIMED 0x6d700017 /* -> lifeline: index: noted */
#define MSG_WAKE 0x6d700018      /* -> broker, from this process: look at the expiries again */
#define CLAIM_WAIT_MS 2000u          /* how long a fork's two sides wait for each other */
#define RECORD_TTL_NS 30000000000ull /* records nobody claimed are dropped after 30 s */
#define BROKER_POLL_MS 5000u
#define SLICE_MS 50u        /* a child waiting on its lifeline looks at its table this often */
#define NUDGE_NS 500000000u /* and asks the broker again this often */
#define UNCLAIM_ACK_MS 200u /* how long a child's close waits for the broker's acknowledgement */

enum { RX_NONE, RX_HELD, RX_PARKED, RX_GONE, RX_DROPPED };
enum { CS_NONE, CS_WAIT, CS_GOT, CS_GONE, CS_CLOSED };

struct tracked {
  void *obj;
  int kind; /* MEMPORT_HANDLE_* */
};

struct fork_record {
  struct fork_record *next;
  unsigned char token[TOKEN_BYTES];
  uint64_t id;               /* serial number, for the parent handler's wait */
  uint64_t expires;          /* unclaimed records are dropped then */
  bool claimed;
  mach_port_name_t lifeline; /* after the claim: a send right to the child's lifeline */
  size_t n;
  struct tracked *objs;      /* the objects, as the child finds them in its copy of memory */
  mach_port_name_t *names;   /* the parent's extra send references (MACH_PORT_NULL where none) */
  mach_port_name_t *rx;      /* ports: the receive right (the object's while RX_HELD, ours while RX_PARKED) */
  unsigned char *rx_state;   /* RX_* */
};

struct req_msg { /* child -> broker: MSG_RXCLAIM, MSG_UNCLAIM (reply: send-once to the lifeline) */
  mach_msg_header_t hdr;
  uint32_t magic;
  uint32_t index;
  unsigned char token[TOKEN_BYTES];
};

struct note_msg { /* -> lifeline: MSG_GONE, MSG_HELD, MSG_UNCLAIMED */
  mach_msg_header_t hdr;
  uint32_t magic;
  uint32_t index;
};

struct push_msg { /* -> lifeline: MSG_PUSH */
  mach_msg_header_t hdr;
  mach_msg_body_t body;
  mach_msg_port_descriptor_t rx;
  uint32_t magic;
  uint32_t index;
};

struct claim_msg { /* child -> broker at fork */
  mach_msg_header_t hdr;
  mach_msg_body_t body;
  mach_msg_port_descriptor_t lifeline;
  uint32_t magic;
  unsigned char token[TOKEN_BYTES];
};

struct grant_tail { /* after the 2n descriptors of a grant; then n state bytes, padded to 4 */
  uint32_t magic;
  uint32_t count;
};

#define RCV_AUDIT (MACH_RCV_TRAILER_TYPE(MACH_MSG_TRAILER_FORMAT_0) | MACH_RCV_TRAILER_ELEMENTS(MACH_RCV_TRAILER_AUDIT))

/* ---- parent side: guarded by fork_lock ---- */
static pthread_mutex_t fork_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t claim_cv = PTHREAD_COND_INITIALIZER; /* a record was claimed */
static struct tracked *tracked;
static size_t ntracked, captracked;
static struct fork_record *pending; /* records the broker serves, newest first */
static struct fork_record *current; /* the record of the fork in progress */
static uint64_t record_serial;
static int saved_errno;                              /* the caller's errno, kept over fork() */
static mach_port_name_t broker_rx = MACH_PORT_NULL; /* checked in as "org.memport.fork.<pid>" */
static pid_t broker_pid;                             /* the pid it was checked in for */
static bool broker_running;
static bool last_wait_missed; /* the last fork's child did not claim in time: do not wait again */
static bool handlers_installed;
static pthread_once_t handlers_once = PTHREAD_ONCE_INIT;

/* ---- child side: guarded by child_lock ---- */
static pthread_mutex_t child_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
  uintptr_t gen;             /* valid in this generation only */
  mach_port_name_t broker;   /* a send right to the parent's broker (dead-name armed) */
  mach_port_name_t lifeline; /* our receive right */
  unsigned char token[TOKEN_BYTES];
  size_t n;
  unsigned char *st;     /* CS_* by record index */
  mach_port_name_t *got; /* CS_GOT: the receive right, waiting for its object */
  bool parent_gone;
} kid;

/* ------------------------------------------------------------------------------------------ */
/* Rights helpers. */

/* A MSG_PUSH moving the receive right `rx` (entry `index` of a record) to `to`. */
static void push_msg_make(struct push_msg *m, mach_port_name_t to, mach_msg_type_name_t to_disposition,
                          mach_port_name_t rx, size_t index) {
  memset(m, 0, sizeof *m);
  m->hdr.msgh_bits = MACH_MSGH_BITS(to_disposition, 0) | MACH_MSGH_BITS_COMPLEX;
  m->hdr.msgh_size = sizeof *m;
  m->hdr.msgh_remote_port = to;
  m->hdr.msgh_id = MSG_PUSH;
  m->body.msgh_descriptor_count = 1;
  m->rx.name = rx;
  m->rx.disposition = MACH_MSG_TYPE_MOVE_RECEIVE;
  m->rx.type = MACH_MSG_PORT_DESCRIPTOR;
  m->magic = REQ_MAGIC;
  m->index = (uint32_t)index;
}


/* A send that failed after copy-in (MACH_SEND_TIMED_OUT: the queue was full) hands the message
 * back to the sender (osfmk/ipc/mach_msg.c mach_msg_receive_pseudo -> ipc_kmsg_copyout_pseudo,
 * xnu-7195 and xnu-11417 alike): the header keeps its order, and a destination copied with
 * COPY_SEND comes back under msgh_remote_port as one more send reference (remote bits
 * MACH_MSG_TYPE_PORT_SEND), a MOVE_SEND_ONCE one as the send-once right. Release that. */
static void pseudo_release_dest(const mach_msg_header_t *h) {
  mach_msg_type_name_t t = MACH_MSGH_BITS_REMOTE(h->msgh_bits);
  if (!MACH_PORT_VALID(h->msgh_remote_port))
    return;
  if (t == MACH_MSG_TYPE_PORT_SEND)
    (void)mach_port_mod_refs(mach_task_self(), h->msgh_remote_port, MACH_PORT_RIGHT_SEND, -1);
  else if (t == MACH_MSG_TYPE_PORT_SEND_ONCE)
    (void)mach_port_mod_refs(mach_task_self(), h->msgh_remote_port, MACH_PORT_RIGHT_SEND_ONCE, -1);
}

/* Did a failed send hand the message back (pseudo-receive, above)? The result then also carries
 * MACH_MSG_IPC_* / MACH_MSG_VM_* bits when a right could not be copied back out (xnu-11417
 * osfmk/ipc/mach_msg.c mach_msg_trap_send: "mr |= mach_msg_receive_pseudo(...)"; xnu-7195
 * mach_msg_overwrite_trap: "mr |= ipc_kmsg_copyout_pseudo(...)"). */
static bool came_back(mach_msg_return_t mr) {
  mr &= ~(mach_msg_return_t)MACH_MSG_MASK;
  return mr == MACH_SEND_TIMED_OUT || mr == MACH_SEND_INTERRUPTED;
}

/* A send-once right we will not use: release it (its port then gets a send-once notification). */
static void release_send_once(mach_port_name_t so) {
  if (!MACH_PORT_VALID(so))
    return;
  /* a send-once right whose port died is a dead name by now (ipc_right.c, ipc_right_check) */
  if (mach_port_mod_refs(mach_task_self(), so, MACH_PORT_RIGHT_SEND_ONCE, -1) != KERN_SUCCESS)
    (void)mach_port_deallocate(mach_task_self(), so);
}

/* Re-arm the no-senders notification of a receive right that arrived in a message (as port.c
 * does for received ports): sync 1, delivered to the port itself. */
static void rearm_no_senders(mach_port_name_t rx) {
  mach_port_t prev = MACH_PORT_NULL;
  if (mach_port_request_notification(mach_task_self(), rx, MACH_NOTIFY_NO_SENDERS, 1, rx,
                                     MACH_MSG_TYPE_MAKE_SEND_ONCE, &prev) == KERN_SUCCESS)
    memport__darwin_release_send(prev);
}

/* A simple note (MSG_GONE / MSG_HELD / MSG_UNCLAIMED) for index i. `so`: a send-once reply right
 * (consumed; never blocked by a full queue: ipc_mqueue.c, ipc_mqueue_send_locked lets send-once
 * messages past the queue limit), or a send right to the lifeline (copied; timeout 0). */
static void send_note(mach_port_name_t dest, bool so, mach_msg_id_t id, size_t i) {
  struct note_msg m;
  memset(&m, 0, sizeof m);
  m.hdr.msgh_bits = MACH_MSGH_BITS(so ? MACH_MSG_TYPE_MOVE_SEND_ONCE : MACH_MSG_TYPE_COPY_SEND, 0);
  m.hdr.msgh_size = sizeof m;
  m.hdr.msgh_remote_port = dest;
  m.hdr.msgh_id = id;
  m.magic = REQ_MAGIC;
  m.index = (uint32_t)i;
  mach_msg_return_t mr = mach_msg(&m.hdr, MACH_SEND_MSG | MACH_SEND_TIMEOUT, sizeof m, 0, MACH_PORT_NULL, 0,
                                  MACH_PORT_NULL);
  if (came_back(mr))
    pseudo_release_dest(&m.hdr); /* (lost: the child asks again, or its deadline passes) */
  else if (mr != MACH_MSG_SUCCESS && so)
    release_send_once(dest); /* refused before copy-in (a dead reply port): still ours */
}

/* ------------------------------------------------------------------------------------------ */
/* Parent side (fork_lock held unless said otherwise). */

static void record_free(struct fork_record *r, bool parent_side) {
  if (r == NULL)
    return;
  if (parent_side) {
    for (size_t i = 0; i < r->n; i++) {
      memport__darwin_release_send(r->names[i]);
      if (r->rx_state[i] == RX_PARKED)
        memport__darwin_release_receive(r->rx[i]);
    }
    /* (a dead-name request armed on it is cancelled with it: the kernel sends the broker a
     * port-deleted notification, which it drops) */
    memport__darwin_release_send(r->lifeline);
  }
  free(r->objs);
  free(r->names);
  free(r->rx);
  free(r->rx_state);
  free(r);
}

static void record_unlink(struct fork_record *r) {
  for (struct fork_record **pp = &pending; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == r) {
      *pp = r->next;
      return;
    }
  }
}

/* Claimed, and nothing left for the child: neither a receive right the parent still uses nor
 * one kept for the child. */
static bool record_done(const struct fork_record *r) {
  if (!r->claimed)
    return false;
  for (size_t i = 0; i < r->n; i++)
    if (r->rx_state[i] == RX_HELD || r->rx_state[i] == RX_PARKED)
      return false;
  return true;
}

/* Free the records that are done, and the unclaimed ones past their time. */
static void records_sweep(uint64_t now) {
  struct fork_record **pp = &pending;
  while (*pp != NULL) {
    struct fork_record *r = *pp;
    if (r != current && (record_done(r) || (!r->claimed && now >= r->expires))) {
      *pp = r->next;
      record_free(r, true);
    } else {
      pp = &r->next;
    }
  }
}

static struct fork_record *record_find(const unsigned char *token) {
  for (struct fork_record *r = pending; r != NULL; r = r->next) {
    unsigned char diff = 0;
    for (size_t i = 0; i < TOKEN_BYTES; i++)
      diff |= (unsigned char)(r->token[i] ^ token[i]);
    if (diff == 0)
      return r;
  }
  return NULL;
}

/* Move the receive right of entry i (RX_HELD being closed, or RX_PARKED) of a claimed record to
 * the child's lifeline. On a full queue it stays parked here (the child asks for it with
 * MSG_RXCLAIM); a dead lifeline (the child exited) destroys it. */
static void push_rx(struct fork_record *r, size_t i) {
  struct push_msg m;
  push_msg_make(&m, r->lifeline, MACH_MSG_TYPE_COPY_SEND, r->rx[i], i);
  mach_msg_return_t mr =
      mach_msg(&m.hdr, MACH_SEND_MSG | MACH_SEND_TIMEOUT, sizeof m, 0, MACH_PORT_NULL, 0, MACH_PORT_NULL);
  if (mr == MACH_MSG_SUCCESS) {
    /* (if the child died after copy-in, xnu destroys the message and the right with it and still
     * answers success: ipc_kmsg.c ipc_kmsg_send, "!ip_active(port)") */
    r->rx_state[i] = RX_GONE;
    r->rx[i] = MACH_PORT_NULL;
    return;
  }
  if (came_back(mr)) {
    /* handed back (pseudo-receive): the receive right under the name in the descriptor */
    pseudo_release_dest(&m.hdr);
    r->rx[i] = m.rx.name;
    r->rx_state[i] = RX_PARKED;
    return;
  }
  if (mr == MACH_SEND_INVALID_DEST) { /* the child is gone; the record goes with its lifeline */
    memport__darwin_release_receive(r->rx[i]);
    r->rx[i] = MACH_PORT_NULL;
    r->rx_state[i] = RX_GONE;
    return;
  }
  r->rx_state[i] = RX_PARKED; /* refused before copy-in: still ours */
}

bool memport__darwin_park_receive(const memport_port_t *p) {
  bool kept = false;
  pthread_mutex_lock(&fork_lock);
  for (struct fork_record *r = pending; r != NULL; r = r->next) {
    for (size_t i = 0; i < r->n; i++) {
      if (r->objs[i].obj != p || r->rx_state[i] != RX_HELD)
        continue;
      if (!kept && r->rx[i] == p->rx) {
        /* the newest fork's child gets it (records are newest first) */
        kept = true;
        if (r->claimed && MACH_PORT_VALID(r->lifeline))
          push_rx(r, i);
        else
          r->rx_state[i] = RX_PARKED; /* the grant carries it, or the record expires with it */
      } else {
        r->rx_state[i] = RX_GONE;
        if (r->claimed && MACH_PORT_VALID(r->lifeline))
          send_note(r->lifeline, false, MSG_GONE, i);
      }
    }
  }
  records_sweep(memport__now_ns());
  pthread_mutex_unlock(&fork_lock);
  return kept;
}

void memport__darwin_forget_receive(memport_port_t *p) {
  pthread_mutex_lock(&fork_lock);
  p->rx = MACH_PORT_NULL; /* moved: prepare_record must not take it for one we hold */
  for (struct fork_record *r = pending; r != NULL; r = r->next) {
    for (size_t i = 0; i < r->n; i++) {
      if (r->objs[i].obj == p && r->rx_state[i] == RX_HELD) {
        r->rx_state[i] = RX_GONE;
        if (r->claimed && MACH_PORT_VALID(r->lifeline))
          send_note(r->lifeline, false, MSG_GONE, i);
      }
    }
  }
  records_sweep(memport__now_ns());
  pthread_mutex_unlock(&fork_lock);
}

/* Is the process with this audit identity a child of ours, with our effective uid? */
static bool our_child(const memport_cred_t *c) {
  if (c->pid <= 0 || c->uid != geteuid())
    return false;
  int mib[4] = {CTL_KERN, KERN_PROC, KERN_PROC_PID, (int)c->pid};
  struct kinfo_proc kp;
  size_t len = sizeof kp;
  memset(&kp, 0, sizeof kp);
  if (sysctl(mib, 4, &kp, &len, NULL, 0) != 0 || len != sizeof kp)
    return false;
  return kp.kp_eproc.e_ppid == getpid();
}

/* Answer a claim: the record's send references (MOVE_SEND) and the receive rights parked since
 * the fork (MOVE_RECEIVE), to the send-once `reply`. True when the child has them. */
static bool broker_grant(struct fork_record *r, mach_port_name_t reply) {
  size_t n = r->n;
  size_t states = (n + 3u) & ~(size_t)3u;
  size_t size = sizeof(mach_msg_header_t) + sizeof(mach_msg_body_t) + 2 * n * sizeof(mach_msg_port_descriptor_t) +
                sizeof(struct grant_tail) + states;
  unsigned char *buf = calloc(1, size);
  if (buf == NULL) {
    release_send_once(reply); /* the child sees a send-once notification: no grant */
    return false;
  }
  mach_msg_header_t *hdr = (mach_msg_header_t *)(void *)buf;
  mach_msg_body_t *body = (mach_msg_body_t *)(void *)(buf + sizeof *hdr);
  mach_msg_port_descriptor_t *d = (mach_msg_port_descriptor_t *)(void *)(buf + sizeof *hdr + sizeof *body);
  hdr->msgh_bits = MACH_MSGH_BITS(MACH_MSG_TYPE_MOVE_SEND_ONCE, 0) | MACH_MSGH_BITS_COMPLEX;
  hdr->msgh_size = (mach_msg_size_t)size;
  hdr->msgh_remote_port = reply;
  hdr->msgh_id = MSG_GRANT;
  body->msgh_descriptor_count = (mach_msg_size_t)(2 * n);
  unsigned char *st = buf + size - states;
  for (size_t i = 0; i < n; i++) {
    /* a null name travels as such (ipc_kmsg.c, ipc_kmsg_copyin_port_descriptor) */
    d[i].name = r->names[i];
    d[i].disposition = MACH_MSG_TYPE_MOVE_SEND;
    d[i].type = MACH_MSG_PORT_DESCRIPTOR;
    d[n + i].name = r->rx_state[i] == RX_PARKED ? r->rx[i] : MACH_PORT_NULL;
    d[n + i].disposition = MACH_MSG_TYPE_MOVE_RECEIVE;
    d[n + i].type = MACH_MSG_PORT_DESCRIPTOR;
    st[i] = r->rx_state[i] == RX_HELD ? 1 : 0; /* 1: the parent still uses it; a push follows */
  }
  struct grant_tail tail = {GRANT_MAGIC, (uint32_t)n};
  memcpy(buf + size - states - sizeof tail, &tail, sizeof tail);
  /* A send-once right is never blocked by a full queue (ipc_mqueue_send_locked). */
  mach_msg_return_t mr = mach_msg(hdr, MACH_SEND_MSG | MACH_SEND_TIMEOUT, (mach_msg_size_t)size, 0, MACH_PORT_NULL,
                                  0, MACH_PORT_NULL);
  bool ok = mr == MACH_MSG_SUCCESS;
  if (ok) {
    for (size_t i = 0; i < n; i++) {
      r->names[i] = MACH_PORT_NULL; /* the references went to the child */
      if (r->rx_state[i] == RX_PARKED) {
        r->rx_state[i] = RX_GONE;
        r->rx[i] = MACH_PORT_NULL;
      }
    }
  } else if (came_back(mr)) {
    /* copied in and handed back: every right under the name in its descriptor */
    pseudo_release_dest(hdr);
    for (size_t i = 0; i < n; i++) {
      mach_msg_port_descriptor_t s, rv;
      memcpy(&s, &d[i], sizeof s);
      memcpy(&rv, &d[n + i], sizeof rv);
      r->names[i] = s.name;
      if (r->rx_state[i] == RX_PARKED)
        r->rx[i] = rv.name;
    }
  } else {
    release_send_once(reply); /* refused before copy-in (the child stopped waiting) */
  }
  free(buf);
  return ok;
}

static void broker_claim(mach_msg_header_t *raw, const memport_cred_t *from) {
  struct claim_msg c;
  memcpy(&c, raw, sizeof c);
  bool ok = (c.hdr.msgh_bits & MACH_MSGH_BITS_COMPLEX) && c.hdr.msgh_size == sizeof c &&
            MACH_MSGH_BITS_REMOTE(c.hdr.msgh_bits) == MACH_MSG_TYPE_PORT_SEND_ONCE &&
            MACH_PORT_VALID(c.hdr.msgh_remote_port) && c.body.msgh_descriptor_count == 1 &&
            c.lifeline.type == MACH_MSG_PORT_DESCRIPTOR && c.lifeline.disposition == MACH_MSG_TYPE_PORT_SEND &&
            MACH_PORT_VALID(c.lifeline.name) && c.magic == REQ_MAGIC && our_child(from);
  if (!ok) {
    mach_msg_destroy(raw); /* releases the lifeline and the reply right */
    return;
  }
  pthread_mutex_lock(&fork_lock);
  struct fork_record *r = record_find(c.token);
  if (r == NULL || r->claimed || !broker_grant(r, c.hdr.msgh_remote_port)) {
    if (r == NULL || r->claimed)
      release_send_once(c.hdr.msgh_remote_port);
    memport__darwin_release_send(c.lifeline.name);
    pthread_mutex_unlock(&fork_lock);
    return;
  }
  r->claimed = true;
  r->lifeline = c.lifeline.name;
  last_wait_missed = false;
  if (!record_done(r)) {
    /* ports to hand over later: keep the record while the child lives (xnu ipc_right.c,
     * ipc_right_request_alloc: a dead-name notification when the lifeline's receive right dies) */
    mach_port_t prev = MACH_PORT_NULL;
    if (mach_port_request_notification(mach_task_self(), r->lifeline, MACH_NOTIFY_DEAD_NAME, 1, broker_rx,
                                       MACH_MSG_TYPE_MAKE_SEND_ONCE, &prev) == KERN_SUCCESS)
      release_send_once(prev);
    /* (if that failed, the record lives until the ports are closed or sent away) */
  }
  pthread_cond_broadcast(&claim_cv);
  records_sweep(memport__now_ns());
  pthread_mutex_unlock(&fork_lock);
}

/* MSG_RXCLAIM (the child waits for a right) and MSG_UNCLAIM (the child closed its copy): always
 * answered once, on the send-once right to the child's lifeline. */
static void broker_request(mach_msg_header_t *raw) {
  struct req_msg c;
  memcpy(&c, raw, sizeof c);
  mach_port_name_t reply = c.hdr.msgh_remote_port;
  if ((c.hdr.msgh_bits & MACH_MSGH_BITS_COMPLEX) || c.hdr.msgh_size != sizeof c ||
      MACH_MSGH_BITS_REMOTE(c.hdr.msgh_bits) != MACH_MSG_TYPE_PORT_SEND_ONCE || !MACH_PORT_VALID(reply) ||
      c.magic != REQ_MAGIC) {
    mach_msg_destroy(raw);
    return;
  }
  pthread_mutex_lock(&fork_lock);
  struct fork_record *r = record_find(c.token);
  size_t i = c.index;
  bool known = r != NULL && r->claimed && i < r->n;
  if (c.hdr.msgh_id == MSG_UNCLAIM) {
    if (known && r->rx_state[i] == RX_HELD) {
      r->rx_state[i] = RX_DROPPED; /* the parent's close will destroy it */
    } else if (known && r->rx_state[i] == RX_PARKED) {
      memport__darwin_release_receive(r->rx[i]);
      r->rx[i] = MACH_PORT_NULL;
      r->rx_state[i] = RX_GONE;
    }
    send_note(reply, true, MSG_UNCLAIMED, i);
  } else if (known && r->rx_state[i] == RX_PARKED) {
    /* answered through the send-once right: past any queue limit */
    struct push_msg m;
    push_msg_make(&m, reply, MACH_MSG_TYPE_MOVE_SEND_ONCE, r->rx[i], i);
    mach_msg_return_t mr =
        mach_msg(&m.hdr, MACH_SEND_MSG | MACH_SEND_TIMEOUT, sizeof m, 0, MACH_PORT_NULL, 0, MACH_PORT_NULL);
    if (mr == MACH_MSG_SUCCESS) {
      r->rx_state[i] = RX_GONE;
      r->rx[i] = MACH_PORT_NULL;
    } else if (came_back(mr)) {
      pseudo_release_dest(&m.hdr);
      r->rx[i] = m.rx.name; /* still parked */
    } else {
      release_send_once(reply);
    }
  } else {
    send_note(reply, true, known && (r->rx_state[i] == RX_HELD) ? MSG_HELD : MSG_GONE, i);
  }
  records_sweep(memport__now_ns());
  pthread_mutex_unlock(&fork_lock);
}

static void broker_dead_name(mach_port_name_t name) {
  pthread_mutex_lock(&fork_lock);
  for (struct fork_record *r = pending; r != NULL; r = r->next) {
    if (r->lifeline == name) {
      record_unlink(r);
      record_free(r, true); /* drops our reference to the dead name; parked rights destroyed */
      break;
    }
  }
  pthread_mutex_unlock(&fork_lock);
  /* the notification brought one more reference to the dead name (ipc_notify_dead_name) */
  (void)mach_port_deallocate(mach_task_self(), name);
}

/* Milliseconds until the next unclaimed record expires (BROKER_POLL_MS at most). */
static mach_msg_timeout_t broker_timeout(void) {
  uint64_t now = memport__now_ns(), ms = BROKER_POLL_MS;
  pthread_mutex_lock(&fork_lock);
  for (struct fork_record *r = pending; r != NULL; r = r->next) {
    if (r->claimed)
      continue;
    uint64_t left = r->expires > now ? (r->expires - now + 999999u) / 1000000u : 0;
    if (left < ms)
      ms = left;
  }
  pthread_mutex_unlock(&fork_lock);
  return (mach_msg_timeout_t)(ms == 0 ? 1 : ms);
}

static void *broker_main(void *arg) {
  mach_port_name_t rx = (mach_port_name_t)(uintptr_t)arg;
  union {
    mach_msg_header_t hdr;
    struct claim_msg claim;
    struct req_msg req;
    mach_dead_name_notification_t dead;
    unsigned char bytes[sizeof(struct claim_msg) + sizeof(mach_msg_max_trailer_t) + 64];
  } buf;
  unsigned errors = 0;
  for (;;) {
    mach_msg_return_t mr =
        mach_msg(&buf.hdr, MACH_RCV_MSG | MACH_RCV_TIMEOUT | RCV_AUDIT, 0, sizeof buf, rx, broker_timeout(),
                 MACH_PORT_NULL);
    if (mr == MACH_RCV_TIMED_OUT || mr == MACH_RCV_TOO_LARGE || mr == MACH_RCV_INTERRUPTED) {
      /* (too large: without MACH_RCV_LARGE the kernel has destroyed the message) */
      pthread_mutex_lock(&fork_lock);
      records_sweep(memport__now_ns());
      pthread_mutex_unlock(&fork_lock);
      continue;
    }
    if ((mr & ~MACH_MSG_MASK) == MACH_RCV_BODY_ERROR) {
      mach_msg_destroy(&buf.hdr);
      continue;
    }
    if (mr != MACH_MSG_SUCCESS) {
      /* Never leave for good while broker_running says we serve: retry a passing error; after
       * that, or if our receive right is gone, say so, and the next fork starts a new broker (on
       * the same right if we still hold it, else on a new check-in). */
      mach_port_type_t type = 0;
      bool have = mach_port_type(mach_task_self(), rx, &type) == KERN_SUCCESS && (type & MACH_PORT_TYPE_RECEIVE);
      if (have && ++errors < 100) {
        usleep(10000);
        continue;
      }
      pthread_mutex_lock(&fork_lock);
      if (broker_rx == rx) {
        broker_running = false;
        if (!have)
          broker_rx = MACH_PORT_NULL;
      }
      pthread_mutex_unlock(&fork_lock);
      return NULL;
    }
    errors = 0;
    memport_cred_t from;
    bool from_kernel = false;
    if (memport__darwin_trailer_cred(&buf.hdr, sizeof buf, &from, &from_kernel) < 0) {
      mach_msg_destroy(&buf.hdr);
      continue;
    }
    if (from_kernel) {
      if (buf.hdr.msgh_id == MACH_NOTIFY_DEAD_NAME &&
          buf.hdr.msgh_size >= offsetof(mach_dead_name_notification_t, trailer) &&
          MACH_PORT_VALID(buf.dead.not_port))
        broker_dead_name(buf.dead.not_port);
      else
        mach_msg_destroy(&buf.hdr); /* port-deleted and send-once notifications */
      continue;
    }
    if (buf.hdr.msgh_id == MSG_CLAIM && buf.hdr.msgh_size == sizeof(struct claim_msg))
      broker_claim(&buf.hdr, &from);
    else if ((buf.hdr.msgh_id == MSG_RXCLAIM || buf.hdr.msgh_id == MSG_UNCLAIM) &&
             buf.hdr.msgh_size == sizeof(struct req_msg) && our_child(&from))
      broker_request(&buf.hdr);
    else
      mach_msg_destroy(&buf.hdr);
  }
}

static void broker_name(char out[128], pid_t pid) { snprintf(out, 128, "org.memport.fork.%d", (int)pid); }

/* The broker's receive right, checked in with the bootstrap server under our pid's name. The
 * check-in is done at the first fork only (and again after a fork made us a new process), so
 * that programs that never fork with memport objects register nothing. */
static int broker_check_in(mach_port_name_t *out) {
  char name[128];
  broker_name(name, getpid());
  mach_port_t got = MACH_PORT_NULL;
  kern_return_t kr = bootstrap_check_in(bootstrap_port, name, &got);
  if (kr == BOOTSTRAP_SUCCESS && MACH_PORT_VALID(got)) {
    *out = got;
    return 0;
  }
  if (kr != BOOTSTRAP_UNKNOWN_SERVICE && kr != BOOTSTRAP_NOT_PRIVILEGED)
    return MEMPORT_EEXIST; /* taken: by a dead process of our pid not yet reaped, or a squatter */
  /* a launchd that does not create services on check-in (as name.c): register our own */
  mach_port_name_t own = MACH_PORT_NULL;
  if (memport__darwin_new_receive(&own, false) < 0)
    return MEMPORT_ENOMEM;
  if (mach_port_insert_right(mach_task_self(), own, own, MACH_MSG_TYPE_MAKE_SEND) != KERN_SUCCESS) {
    memport__darwin_release_receive(own);
    return MEMPORT_ENOMEM;
  }
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wdeprecated-declarations"
  kr = bootstrap_register(bootstrap_port, name, own); /* copies the send right */
#pragma clang diagnostic pop
  memport__darwin_release_send(own);
  if (kr != BOOTSTRAP_SUCCESS) {
    memport__darwin_release_receive(own);
    return MEMPORT_EEXIST;
  }
  *out = own;
  return 0;
}

static bool broker_start(void) {
  if (broker_running)
    return true;
  if (!MACH_PORT_VALID(broker_rx) || broker_pid != getpid()) {
    mach_port_name_t rx = MACH_PORT_NULL;
    if (broker_check_in(&rx) < 0)
      return false;
    mach_port_limits_t limits = {.mpl_qlimit = MACH_PORT_QLIMIT_LARGE};
    (void)mach_port_set_attributes(mach_task_self(), rx, MACH_PORT_LIMITS_INFO, (mach_port_info_t)&limits,
                                   MACH_PORT_LIMITS_INFO_COUNT);
    broker_rx = rx;
    broker_pid = getpid();
  }
  pthread_attr_t attr;
  pthread_t thread;
  bool ok = pthread_attr_init(&attr) == 0;
  if (ok) {
    ok = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0 &&
         pthread_create(&thread, &attr, broker_main, (void *)(uintptr_t)broker_rx) == 0;
    pthread_attr_destroy(&attr);
  }
  broker_running = ok; /* (a failed start is tried again at the next fork; the name stays ours) */
  return ok;
}

/* The send right an object hands to a fork child, or MACH_PORT_NULL. */
static mach_port_name_t object_send_name(const struct tracked *t) {
  switch (t->kind) {
  case MEMPORT_HANDLE_REGION: {
    const memport_region_t *r = t->obj;
    return memport__darwin_mine(r->os.gen) ? r->handle : MACH_PORT_NULL;
  }
  case MEMPORT_HANDLE_SEM: {
    const memport_sem_t *s = t->obj;
    return memport__darwin_mine(s->os.gen) ? s->handle : MACH_PORT_NULL;
  }
  default: {
    const memport_port_t *p = t->obj;
    return memport__darwin_mine(p->os.gen) ? p->tx : MACH_PORT_NULL;
  }
  }
}

/* ------------------------------------------------------------------------------------------ */
/* The fork handlers. */

static void prepare_record(void) {
  if (ntracked == 0 || !broker_start())
    return;
  mach_port_t task = mach_task_self();
  struct fork_record *r = calloc(1, sizeof *r);
  if (r == NULL)
    return;
  size_t n = ntracked;
  r->n = n;
  r->objs = malloc(n * sizeof *r->objs);
  r->names = calloc(n, sizeof *r->names);
  r->rx = calloc(n, sizeof *r->rx);
  r->rx_state = calloc(n, sizeof *r->rx_state);
  if (r->objs == NULL || r->names == NULL || r->rx == NULL || r->rx_state == NULL) {
    record_free(r, false);
    return;
  }
  memcpy(r->objs, tracked, n * sizeof *tracked);
  arc4random_buf(r->token, sizeof r->token);
  r->id = ++record_serial;
  r->expires = memport__now_ns() + RECORD_TTL_NS;
  for (size_t i = 0; i < n; i++) {
    mach_port_name_t name = object_send_name(&r->objs[i]);
    if (MACH_PORT_VALID(name) && mach_port_mod_refs(task, name, MACH_PORT_RIGHT_SEND, 1) == KERN_SUCCESS)
      r->names[i] = name;
    if (r->objs[i].kind == MEMPORT_HANDLE_PORT) {
      const memport_port_t *p = r->objs[i].obj;
      if (memport__darwin_mine(p->os.gen) && MACH_PORT_VALID(p->rx)) {
        r->rx[i] = p->rx;
        r->rx_state[i] = RX_HELD;
      }
    }
  }
  r->next = pending;
  pending = r;
  current = r;
}

static void fork_prepare(void) {
  pthread_mutex_lock(&fork_lock);
  pthread_mutex_lock(&child_lock);
  saved_errno = errno;
  current = NULL;
  memport__darwin_zero_prepare();
  prepare_record();
  /* Last: the parent handler reads a failed fork from errno (Libc sys/fork.c _do_fork: __fork()
   * sets it only on failure). */
  errno = 0;
}

static struct fork_record *record_by_id(uint64_t id) {
  for (struct fork_record *r = pending; r != NULL; r = r->next)
    if (r->id == id)
      return r;
  return NULL;
}

static void fork_parent(void) {
  int fork_errno = errno; /* 0 unless __fork() failed (Libc sys/fork.c _do_fork) */
  int caller_errno = saved_errno; /* (another thread's fork may run while we wait) */
  pthread_mutex_unlock(&child_lock);
  memport__darwin_zero_parent();
  struct fork_record *r = current;
  current = NULL;
  if (r != NULL && fork_errno != 0) {
    /* The fork failed: nobody will claim. The record is not freed on the spot, in case a later
     * handler, not __fork, left errno set: it expires once a child could have claimed. */
    r->expires = memport__now_ns() + (uint64_t)CLAIM_WAIT_MS * 1000000u;
    if (MACH_PORT_VALID(broker_rx)) { /* so that the broker's next timeout is that one */
      mach_msg_header_t h;
      memset(&h, 0, sizeof h);
      h.msgh_bits = MACH_MSGH_BITS(MACH_MSG_TYPE_MAKE_SEND_ONCE, 0);
      h.msgh_size = sizeof h;
      h.msgh_remote_port = broker_rx;
      h.msgh_id = MSG_WAKE;
      mach_msg_return_t mr = mach_msg(&h, MACH_SEND_MSG | MACH_SEND_TIMEOUT, sizeof h, 0, MACH_PORT_NULL, 0,
                                      MACH_PORT_NULL);
      if (came_back(mr))
        pseudo_release_dest(&h); /* (before copy-in nothing was made) */
    }
  } else if (r != NULL && !last_wait_missed) {
    /* Wait for the child's claim: then it holds its send rights before fork() returns here. The
     * lock is released while waiting (pthread_cond_timedwait), so the broker can serve. */
    uint64_t id = r->id, until = memport__now_ns() + (uint64_t)CLAIM_WAIT_MS * 1000000u;
    for (;;) {
      struct fork_record *w = record_by_id(id);
      if (w == NULL || w->claimed)
        break;
      uint64_t now = memport__now_ns();
      if (now >= until) {
        /* A child that cannot reach us (a sandbox without bootstrap look-ups, say) would cost
         * every fork this wait: wait again only once a claim has come through. */
        last_wait_missed = true;
        break;
      }
      struct timespec rel = {(time_t)((until - now) / 1000000000u), (long)((until - now) % 1000000000u)};
      (void)pthread_cond_timedwait_relative_np(&claim_cv, &fork_lock, &rel);
    }
  }
  errno = fork_errno != 0 ? fork_errno : caller_errno;
  pthread_mutex_unlock(&fork_lock);
}

/* Child side: forget the state of a claim made in a previous generation (our parent's). */
static void kid_reset(void) {
  free(kid.st);
  free(kid.got);
  memset(&kid, 0, sizeof kid);
}

/* In the child: claim the record of this fork from the parent's broker and install the rights. */
static bool child_claim(struct fork_record *r) {
  mach_port_t task = mach_task_self();
  pid_t parent = getppid();
  if (parent <= 1)
    return false; /* the parent is gone already (we were reparented) */
  char name[128];
  broker_name(name, parent);
  mach_port_t broker = MACH_PORT_NULL;
  if (bootstrap_look_up(bootstrap_port, name, &broker) != BOOTSTRAP_SUCCESS || !MACH_PORT_VALID(broker))
    return false;
  mach_port_name_t reply = MACH_PORT_NULL, lifeline = MACH_PORT_NULL;
  if (mach_port_allocate(task, MACH_PORT_RIGHT_RECEIVE, &reply) != KERN_SUCCESS) {
    memport__darwin_release_send(broker);
    return false;
  }
  /* The lifeline: a receive right this process keeps to its end (its death tells the parent's
   * broker to forget what it keeps for us); pushed receive rights queue on it. */
  if (memport__darwin_new_receive(&lifeline, false) < 0) {
    memport__darwin_drop_all(reply);
    memport__darwin_release_send(broker);
    return false;
  }
  size_t n = r->n;
  size_t states = (n + 3u) & ~(size_t)3u;
  size_t want = sizeof(mach_msg_header_t) + sizeof(mach_msg_body_t) + 2 * n * sizeof(mach_msg_port_descriptor_t) +
                sizeof(struct grant_tail) + states;
  size_t bufsize = want + sizeof(mach_msg_max_trailer_t);
  unsigned char *buf = malloc(bufsize);
  unsigned char *st = calloc(n, 1);
  mach_port_name_t *got = calloc(n, sizeof *got);
  if (buf == NULL || st == NULL || got == NULL) {
    free(buf);
    free(st);
    free(got);
    memport__darwin_drop_all(reply);
    memport__darwin_drop_all(lifeline);
    memport__darwin_release_send(broker);
    return false;
  }
  struct claim_msg out;
  memset(&out, 0, sizeof out);
  out.hdr.msgh_bits = MACH_MSGH_BITS(MACH_MSG_TYPE_COPY_SEND, MACH_MSG_TYPE_MAKE_SEND_ONCE) | MACH_MSGH_BITS_COMPLEX;
  out.hdr.msgh_size = sizeof out;
  out.hdr.msgh_remote_port = broker;
  out.hdr.msgh_local_port = reply;
  out.hdr.msgh_id = MSG_CLAIM;
  out.body.msgh_descriptor_count = 1;
  out.lifeline.name = lifeline;
  out.lifeline.disposition = MACH_MSG_TYPE_MAKE_SEND;
  out.lifeline.type = MACH_MSG_PORT_DESCRIPTOR;
  out.magic = REQ_MAGIC;
  memcpy(out.token, r->token, sizeof out.token);
  mach_msg_return_t mr =
      mach_msg(&out.hdr, MACH_SEND_MSG | MACH_SEND_TIMEOUT, sizeof out, 0, MACH_PORT_NULL, CLAIM_WAIT_MS, MACH_PORT_NULL);
  mach_msg_header_t *hdr = (mach_msg_header_t *)(void *)buf;
  bool ok = mr == MACH_MSG_SUCCESS;
  if (!ok && came_back(mr)) {
    pseudo_release_dest(&out.hdr);
    /* The made send-once right came back under a name of its own (ipc_object_copyout never merges
     * a send-once right into an existing entry), not under `reply`: release it, or it would stay a
     * dead name once reply is destroyed. The lifeline's send right came back merged into the
     * lifeline's entry (ipc_right_reverse): drop_name takes it below. */
    if (MACH_MSGH_BITS_LOCAL(out.hdr.msgh_bits) == MACH_MSG_TYPE_PORT_SEND_ONCE)
      release_send_once(out.hdr.msgh_local_port);
  }
  if (ok) {
    mr = mach_msg(hdr, MACH_RCV_MSG | MACH_RCV_TIMEOUT | RCV_AUDIT, 0, (mach_msg_size_t)bufsize, reply,
                  CLAIM_WAIT_MS, MACH_PORT_NULL);
    if ((mr & ~MACH_MSG_MASK) == MACH_RCV_BODY_ERROR)
      mach_msg_destroy(hdr);
    ok = mr == MACH_MSG_SUCCESS;
  }
  memport__darwin_drop_all(reply);
  if (ok) {
    memport_cred_t from;
    struct grant_tail tail = {0, 0};
    mach_msg_body_t body = {0};
    if (hdr->msgh_size == want) {
      memcpy(&body, buf + sizeof *hdr, sizeof body);
      memcpy(&tail, buf + want - states - sizeof tail, sizeof tail);
    }
    /* only our parent's answer counts (the audit token the kernel attached) */
    ok = hdr->msgh_id == MSG_GRANT && (hdr->msgh_bits & MACH_MSGH_BITS_COMPLEX) && hdr->msgh_size == want &&
         body.msgh_descriptor_count == 2 * n && tail.magic == GRANT_MAGIC && tail.count == n &&
         memport__darwin_trailer_cred(hdr, bufsize, &from, NULL) == 0 && from.pid == parent &&
         from.uid == geteuid();
    const unsigned char *dp = buf + sizeof *hdr + sizeof body;
    for (size_t i = 0; ok && i < 2 * n; i++) {
      mach_msg_port_descriptor_t d;
      memcpy(&d, dp + i * sizeof d, sizeof d);
      ok = d.type == MACH_MSG_PORT_DESCRIPTOR &&
           (d.name == MACH_PORT_NULL ||
            d.disposition == (i < n ? MACH_MSG_TYPE_PORT_SEND : MACH_MSG_TYPE_PORT_RECEIVE));
    }
    if (!ok && (hdr->msgh_bits & MACH_MSGH_BITS_COMPLEX))
      mach_msg_destroy(hdr);
  }
  if (!ok) {
    free(buf);
    free(st);
    free(got);
    memport__darwin_drop_all(lifeline);
    memport__darwin_release_send(broker);
    return false;
  }
  uintptr_t gen = atomic_load_explicit(&memport__darwin_gen, memory_order_relaxed);
  const unsigned char *dp = buf + sizeof *hdr + sizeof(mach_msg_body_t);
  const unsigned char *held = buf + want - states;
  size_t kept = 0;
  bool waiting = false;
  for (size_t i = 0; i < n; i++) {
    mach_msg_port_descriptor_t ds, dr;
    memcpy(&ds, dp + i * sizeof ds, sizeof ds);
    memcpy(&dr, dp + (n + i) * sizeof dr, sizeof dr);
    struct tracked *t = &r->objs[i];
    if (t->kind != MEMPORT_HANDLE_PORT) {
      memport__darwin_release_receive(dr.name); /* (none is sent for these) */
      if (!MACH_PORT_VALID(ds.name))
        continue; /* nothing for this one: it stays unusable here */
    }
    if (t->kind == MEMPORT_HANDLE_REGION) {
      memport_region_t *o = t->obj;
      o->handle = ds.name;
      o->os.gen = gen;
    } else if (t->kind == MEMPORT_HANDLE_SEM) {
      memport_sem_t *o = t->obj;
      o->handle = ds.name;
      o->os.gen = gen;
    } else {
      memport_port_t *o = t->obj;
      o->tx = MACH_PORT_VALID(ds.name) ? ds.name : MACH_PORT_DEAD;
      o->rx = MACH_PORT_NULL;
      o->os.claim = 0;
      o->os.peer_gone = false;
      o->os.gen = gen;
      if (MACH_PORT_VALID(dr.name)) { /* closed by the parent before we claimed */
        o->rx = dr.name;
        rearm_no_senders(dr.name);
      } else if (held[i] == 1) { /* still the parent's: pushed to the lifeline once it closes it */
        o->os.claim = i + 1;
        st[i] = CS_WAIT;
        waiting = true;
      }
    }
    tracked[kept++] = *t; /* the child's own object from now on */
  }
  ntracked = kept;
  free(buf);
  if (!waiting) {
    /* nothing more to come: the parent forgets the record when it sees the lifeline die */
    free(st);
    free(got);
    memport__darwin_drop_all(lifeline);
    memport__darwin_release_send(broker);
    return true;
  }
  /* The parent's death (its broker's receive right dies with it) is a dead-name notification
   * on our lifeline, queued after every push the parent made before. */
  mach_port_t prev = MACH_PORT_NULL;
  if (mach_port_request_notification(task, broker, MACH_NOTIFY_DEAD_NAME, 1, lifeline, MACH_MSG_TYPE_MAKE_SEND_ONCE,
                                     &prev) == KERN_SUCCESS)
    release_send_once(prev);
  kid.gen = gen;
  kid.broker = broker;
  kid.lifeline = lifeline;
  memcpy(kid.token, r->token, sizeof kid.token);
  kid.n = n;
  kid.st = st;
  kid.got = got;
  kid.parent_gone = false;
  return true;
}

static void fork_child(void) {
  /* Everything stamped before belongs to the parent's name space. */
  atomic_fetch_add_explicit(&memport__darwin_gen, 1, memory_order_relaxed);
  memport__darwin_zero_child();
  struct fork_record *r = current;
  /* None of the parent's records, threads or ports exist here. Free the copies of the records
   * (the child's memory) other than ours; their names mean nothing in this task. */
  for (struct fork_record *p = pending; p != NULL;) {
    struct fork_record *next = p->next;
    if (p != r)
      record_free(p, false);
    p = next;
  }
  pending = NULL;
  current = NULL;
  broker_running = false;
  broker_rx = MACH_PORT_NULL; /* a child that forks checks in under its own pid */
  broker_pid = 0;
  last_wait_missed = false;
  kid_reset(); /* a claim of the grandparent's: not ours any more (child_lock held since prepare) */
  bool claimed = r != NULL && child_claim(r);
  if (!claimed)
    ntracked = 0; /* nothing of the parent's is usable here */
  record_free(r, false);
  pthread_mutex_unlock(&child_lock);
  pthread_mutex_unlock(&fork_lock);
  errno = saved_errno; /* fork() returns 0 here with the caller's errno */
}

/* ------------------------------------------------------------------------------------------ */
/* Child side: receive rights of inherited ports, from the lifeline. */

/* Take one lifeline message into the table (child_lock held). */
static void kid_take(mach_msg_header_t *h, size_t size) {
  if (h->msgh_id == MACH_NOTIFY_DEAD_NAME && !(h->msgh_bits & MACH_MSGH_BITS_COMPLEX)) {
    /* the parent's broker died, so did the parent: what it still held is gone with it */
    mach_dead_name_notification_t dn;
    if (size < sizeof dn - sizeof dn.trailer)
      return;
    memcpy(&dn, h, sizeof dn - sizeof dn.trailer);
    if (dn.not_port != kid.broker || !MACH_PORT_VALID(dn.not_port))
      return; /* (no other dead-name request points here) */
    (void)mach_port_deallocate(mach_task_self(), dn.not_port); /* the notification's reference */
    kid.parent_gone = true;
    for (size_t i = 0; i < kid.n; i++)
      if (kid.st[i] == CS_WAIT)
        kid.st[i] = CS_GONE;
    return;
  }
  if (h->msgh_id == MSG_PUSH && (h->msgh_bits & MACH_MSGH_BITS_COMPLEX) && h->msgh_size == sizeof(struct push_msg)) {
    struct push_msg m;
    memcpy(&m, h, sizeof m);
    if (m.body.msgh_descriptor_count == 1 && m.rx.type == MACH_MSG_PORT_DESCRIPTOR &&
        m.rx.disposition == MACH_MSG_TYPE_PORT_RECEIVE && MACH_PORT_VALID(m.rx.name) && m.magic == REQ_MAGIC &&
        m.index < kid.n && kid.st[m.index] == CS_WAIT) {
      kid.got[m.index] = m.rx.name;
      kid.st[m.index] = CS_GOT;
      return;
    }
    mach_msg_destroy(h); /* for a copy closed since (CS_CLOSED), or unexpected: destroyed */
    return;
  }
  if (h->msgh_id == MSG_GONE && !(h->msgh_bits & MACH_MSGH_BITS_COMPLEX) &&
      h->msgh_size == sizeof(struct note_msg)) {
    struct note_msg m;
    memcpy(&m, h, sizeof m);
    if (m.magic == REQ_MAGIC && m.index < kid.n && kid.st[m.index] == CS_WAIT)
      kid.st[m.index] = CS_GONE;
    return;
  }
  mach_msg_destroy(h); /* MSG_HELD, MSG_UNCLAIMED (the waiter looks at its own), send-once notes */
}

union lifeline_buf {
  mach_msg_header_t hdr;
  unsigned char bytes[sizeof(struct push_msg) + sizeof(mach_msg_max_trailer_t) + 64];
};

/* Receive from the lifeline for up to ms (0: what is queued). Returns the message id taken, or 0.
 * Called without child_lock (receiving does not need it; several threads may). */
static mach_msg_id_t kid_receive(mach_port_name_t lifeline, mach_msg_timeout_t ms, uint32_t *index) {
  union lifeline_buf b;
  mach_msg_return_t mr = mach_msg(&b.hdr, MACH_RCV_MSG | MACH_RCV_TIMEOUT | MACH_RCV_INTERRUPT, 0, sizeof b,
                                  lifeline, ms, MACH_PORT_NULL);
  if ((mr & ~MACH_MSG_MASK) == MACH_RCV_BODY_ERROR)
    mach_msg_destroy(&b.hdr);
  if (mr != MACH_MSG_SUCCESS)
    return 0;
  mach_msg_id_t id = b.hdr.msgh_id;
  if (index != NULL && b.hdr.msgh_size == sizeof(struct note_msg) && !(b.hdr.msgh_bits & MACH_MSGH_BITS_COMPLEX)) {
    struct note_msg m;
    memcpy(&m, &b, sizeof m);
    *index = m.index;
  }
  pthread_mutex_lock(&child_lock);
  if (kid.lifeline == lifeline && memport__darwin_mine(kid.gen))
    kid_take(&b.hdr, b.hdr.msgh_size);
  else
    mach_msg_destroy(&b.hdr);
  pthread_mutex_unlock(&child_lock);
  return id;
}

/* Ask the broker about index i (MSG_RXCLAIM / MSG_UNCLAIM); the answer comes on the lifeline.
 * child_lock held. False when the parent is gone. */
static bool kid_ask(mach_msg_id_t id, size_t i) {
  struct req_msg c;
  memset(&c, 0, sizeof c);
  c.hdr.msgh_bits = MACH_MSGH_BITS(MACH_MSG_TYPE_COPY_SEND, MACH_MSG_TYPE_MAKE_SEND_ONCE);
  c.hdr.msgh_size = sizeof c;
  c.hdr.msgh_remote_port = kid.broker;
  c.hdr.msgh_local_port = kid.lifeline;
  c.hdr.msgh_id = id;
  c.magic = REQ_MAGIC;
  c.index = (uint32_t)i;
  memcpy(c.token, kid.token, sizeof c.token);
  mach_msg_return_t mr =
      mach_msg(&c.hdr, MACH_SEND_MSG | MACH_SEND_TIMEOUT, sizeof c, 0, MACH_PORT_NULL, 0, MACH_PORT_NULL);
  if (came_back(mr)) {
    pseudo_release_dest(&c.hdr);
    /* the send-once right to our lifeline came back too */
    if (MACH_MSGH_BITS_LOCAL(c.hdr.msgh_bits) == MACH_MSG_TYPE_PORT_SEND_ONCE)
      release_send_once(c.hdr.msgh_local_port);
    return true;
  }
  if (mr == MACH_SEND_INVALID_DEST) {
    kid.parent_gone = true;
    for (size_t k = 0; k < kid.n; k++)
      if (kid.st[k] == CS_WAIT)
        kid.st[k] = CS_GONE;
    return false;
  }
  return true;
}

int memport__darwin_claim_receive(memport_port_t *p, uint64_t deadline) {
  size_t index = p->os.claim;
  uint64_t next_nudge = 0;
  bool final = false;
  for (;;) {
    pthread_mutex_lock(&child_lock);
    if (index == 0 || !memport__darwin_mine(kid.gen) || index > kid.n) {
      pthread_mutex_unlock(&child_lock);
      return MEMPORT_EBADF;
    }
    size_t i = index - 1;
    mach_port_name_t lifeline = kid.lifeline;
    if (kid.st[i] == CS_GOT) {
      p->rx = kid.got[i];
      kid.got[i] = MACH_PORT_NULL;
      kid.st[i] = CS_NONE;
      p->os.claim = 0;
      pthread_mutex_unlock(&child_lock);
      rearm_no_senders(p->rx);
      return 0;
    }
    if (kid.st[i] != CS_WAIT) {
      /* died with the parent, or sent away by it (p->os.claim stays: the same answer next time) */
      bool gone = kid.parent_gone;
      pthread_mutex_unlock(&child_lock);
      return gone ? MEMPORT_EPEER : MEMPORT_EBADF;
    }
    if (final) {
      pthread_mutex_unlock(&child_lock);
      return MEMPORT_ETIMEDOUT;
    }
    uint64_t now = memport__now_ns();
    if (now >= next_nudge) { /* "is it parked?" (a full lifeline, or a lost note) */
      (void)kid_ask(MSG_RXCLAIM, i);
      next_nudge = now + NUDGE_NS;
    }
    pthread_mutex_unlock(&child_lock);
    if (memport__expired(deadline)) {
      while (kid_receive(lifeline, 0, NULL) != 0) {
      } /* what is queued already, then a last look */
      final = true;
      continue;
    }
    bool forever;
    mach_msg_timeout_t ms = memport__darwin_timeout_ms(deadline, &forever);
    (void)kid_receive(lifeline, forever || ms > SLICE_MS ? SLICE_MS : ms, NULL);
  }
}

void memport__darwin_unclaim(memport_port_t *p) {
  size_t index = p->os.claim;
  p->os.claim = 0;
  pthread_mutex_lock(&child_lock);
  if (index == 0 || !memport__darwin_mine(kid.gen) || index > kid.n) {
    pthread_mutex_unlock(&child_lock);
    return;
  }
  size_t i = index - 1;
  mach_port_name_t lifeline = kid.lifeline;
  if (kid.st[i] == CS_GOT) {
    memport__darwin_release_receive(kid.got[i]); /* ours already: destroyed, the peer sees EPEER */
    kid.got[i] = MACH_PORT_NULL;
    kid.st[i] = CS_CLOSED;
    pthread_mutex_unlock(&child_lock);
    return;
  }
  bool wait = kid.st[i] == CS_WAIT && kid_ask(MSG_UNCLAIM, i);
  if (kid.st[i] == CS_WAIT || kid.st[i] == CS_GONE)
    kid.st[i] = CS_CLOSED; /* a push still to come is destroyed on arrival */
  pthread_mutex_unlock(&child_lock);
  /* Wait a little for the broker's acknowledgement: a push the parent made before the broker saw
   * our note is queued before it, and is destroyed when taken. */
  uint64_t until = memport__now_ns() + (uint64_t)UNCLAIM_ACK_MS * 1000000u;
  while (wait && !memport__expired(until)) {
    uint32_t got = UINT32_MAX;
    mach_msg_id_t id = kid_receive(lifeline, SLICE_MS, &got);
    if (id == MSG_UNCLAIMED && got == (uint32_t)i)
      break;
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Generations and tracking. */

static void handlers_install(void) {
  handlers_installed = pthread_atfork(fork_prepare, fork_parent, fork_child) == 0;
}

uintptr_t memport__darwin_stamp(void) {
  /* Without the handlers a fork child could release or send its own unrelated rights: no objects
   * then (0: the callers fail with MEMPORT_ENOMEM, which is all pthread_atfork can fail with). */
  if (pthread_once(&handlers_once, handlers_install) != 0 || !handlers_installed)
    return 0;
  return atomic_load_explicit(&memport__darwin_gen, memory_order_relaxed);
}

void memport__darwin_track(void *obj, int kind) {
  if (obj == NULL)
    return;
  pthread_mutex_lock(&fork_lock);
  if (ntracked == captracked) {
    size_t cap = captracked == 0 ? 64 : captracked * 2;
    struct tracked *n = realloc(tracked, cap * sizeof *n);
    if (n == NULL) {
      pthread_mutex_unlock(&fork_lock);
      return; /* not inherited by fork children: their copy gives MEMPORT_EBADF */
    }
    tracked = n;
    captracked = cap;
  }
  tracked[ntracked].obj = obj;
  tracked[ntracked].kind = kind;
  ntracked++;
  pthread_mutex_unlock(&fork_lock);
}

mach_port_name_t memport__darwin_swap_name(memport_os_handle_t *field, mach_port_name_t name) {
  pthread_mutex_lock(&fork_lock); /* prepare_record reads the field and adds its reference under it */
  mach_port_name_t old = *field;
  *field = name;
  pthread_mutex_unlock(&fork_lock);
  return old;
}

void memport__darwin_untrack(void *obj) {
  if (obj == NULL)
    return;
  pthread_mutex_lock(&fork_lock);
  for (size_t i = ntracked; i-- > 0;) {
    if (tracked[i].obj == obj) {
      tracked[i] = tracked[ntracked - 1];
      ntracked--;
      break;
    }
  }
  pthread_mutex_unlock(&fork_lock);
}
