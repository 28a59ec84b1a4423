/* SPDX-License-Identifier: MIT */
/* inherit.c: fork inheritance on Darwin: of memory ranges (mach_vm_inherit) and of memport's Mach send rights. */
#include "darwin/os.h"

#include <mach/mach_param.h>
#include <mach/notify.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Ranges.
 *
 * SHARE, COPY and NONE are the kernel's own inheritance values (mach_vm_inherit). xnu has no
 * zero-on-fork value (vm_inherit.h: SHARE, COPY, NONE, and the obsolete DONATE_COPY), so ZERO is
 * built from NONE: the range is marked VM_INHERIT_NONE, so that no byte of it ever reaches a child,
 * and remembered; in a child made by fork(), memport's atfork handler maps fresh zero-filled pages
 * at the same addresses with the same protections, and marks them NONE again for grandchildren.
 * Children made without fork()'s atfork handlers (a raw fork system call) see the range absent,
 * as with NONE. Setting another mode on (part of) the range forgets it.
 */

struct zero_range {
  uint64_t start, end;
};

struct zero_piece {
  uint64_t start, end;
  vm_prot_t prot, max;
};

static pthread_mutex_t fork_lock = PTHREAD_MUTEX_INITIALIZER; /* guards everything below */
static struct zero_range *zeros;
static size_t nzeros, capzeros;
static struct zero_piece *zero_plan; /* made by the prepare handler, used in the child */
static size_t nplan;

/* Forget [start, end) from the ZERO ranges (fork_lock held). May need one more slot. */
static int zero_forget(uint64_t start, uint64_t end) {
  for (size_t i = 0; i < nzeros; i++) {
    struct zero_range z = zeros[i];
    if (z.end <= start || z.start >= end)
      continue;
    if (z.start < start && z.end > end) { /* split in two */
      if (nzeros == capzeros) {
        size_t cap = capzeros == 0 ? 16 : capzeros * 2;
        struct zero_range *n = realloc(zeros, cap * sizeof *n);
        if (n == NULL)
          return MEMPORT_ENOMEM;
        zeros = n;
        capzeros = cap;
      }
      zeros[i].end = start;
      zeros[nzeros].start = end;
      zeros[nzeros].end = z.end;
      nzeros++;
      continue;
    }
    if (z.start < start) {
      zeros[i].end = start;
    } else if (z.end > end) {
      zeros[i].start = end;
    } else {
      zeros[i] = zeros[--nzeros];
      i--; /* look at the moved one */
    }
  }
  return 0;
}

static int zero_remember(uint64_t start, uint64_t end) {
  int err = zero_forget(start, end);
  if (err < 0)
    return err;
  if (nzeros == capzeros) {
    size_t cap = capzeros == 0 ? 16 : capzeros * 2;
    struct zero_range *n = realloc(zeros, cap * sizeof *n);
    if (n == NULL)
      return MEMPORT_ENOMEM;
    zeros = n;
    capzeros = cap;
  }
  zeros[nzeros].start = start;
  zeros[nzeros].end = end;
  nzeros++;
  return 0;
}

/* Is every page of [start, end) mapped? (vm_map_inherit itself passes over holes.) */
static bool range_mapped(uint64_t start, uint64_t end) {
  mach_port_t task = mach_task_self();
  mach_vm_address_t a = start;
  while (a < end) {
    mach_vm_address_t ra = a;
    mach_vm_size_t rs = 0;
    vm_region_basic_info_data_64_t info;
    mach_msg_type_number_t count = VM_REGION_BASIC_INFO_COUNT_64;
    mach_port_t obj = MACH_PORT_NULL;
    kern_return_t kr = mach_vm_region(task, &ra, &rs, VM_REGION_BASIC_INFO_64, (vm_region_info_t)&info, &count, &obj);
    memport__darwin_release_send(obj);
    if (kr != KERN_SUCCESS || ra > a || rs == 0)
      return false; /* nothing at a, or the next mapping starts after it */
    a = ra + rs;
  }
  return true;
}

int memport__os_inherit(void *addr, size_t len, int mode) {
  vm_inherit_t inh;
  switch (mode) {
  case MEMPORT_INHERIT_SHARE:
    inh = VM_INHERIT_SHARE;
    break;
  case MEMPORT_INHERIT_COPY:
    inh = VM_INHERIT_COPY;
    break;
  case MEMPORT_INHERIT_NONE:
  case MEMPORT_INHERIT_ZERO:
    inh = VM_INHERIT_NONE;
    break;
  default:
    return MEMPORT_EINVAL;
  }
  uint64_t mask = (uint64_t)vm_page_size - 1;
  if (addr == NULL || len == 0 || ((uint64_t)(uintptr_t)addr & mask) != 0 || ((uint64_t)len & mask) != 0)
    return MEMPORT_EINVAL;
  if ((uintptr_t)addr > UINTPTR_MAX - len)
    return MEMPORT_EOVERFLOW;
  if (mode == MEMPORT_INHERIT_ZERO && memport__darwin_stamp() == 0)
    return MEMPORT_ENOMEM; /* no fork handlers */
  uint64_t start = (uint64_t)(uintptr_t)addr, end = start + len;
  pthread_mutex_lock(&fork_lock);
  /* Room for the bookkeeping first, so that a failure leaves the inheritance unchanged. */
  int err = 0;
  if (nzeros + 2 > capzeros) {
    size_t cap = capzeros == 0 ? 16 : capzeros * 2 + 2;
    struct zero_range *n = realloc(zeros, cap * sizeof *n);
    if (n == NULL)
      err = MEMPORT_ENOMEM;
    else {
      zeros = n;
      capzeros = cap;
    }
  }
  /* A range with unmapped pages is refused, as madvise(2) refuses it on Linux (ENOMEM). */
  if (err == 0 && !range_mapped(start, end))
    err = MEMPORT_ENOMEM;
  if (err == 0) {
    kern_return_t kr = mach_vm_inherit(mach_task_self(), (mach_vm_address_t)start, (mach_vm_size_t)len, inh);
    if (kr == KERN_INVALID_ADDRESS)
      err = MEMPORT_ENOMEM;
    else if (kr != KERN_SUCCESS)
      err = memport__darwin_err(kr);
  }
  if (err == 0)
    err = mode == MEMPORT_INHERIT_ZERO ? zero_remember(start, end) : zero_forget(start, end);
  pthread_mutex_unlock(&fork_lock);
  return err;
}

/* Prepare handler: the pieces of the ZERO ranges that are still mapped with VM_INHERIT_NONE, and
 * their protections (fork_lock held). Ranges nothing is mapped in any more are dropped. */
static void zero_plan_make(void) {
  free(zero_plan);
  zero_plan = NULL;
  nplan = 0;
  if (nzeros == 0)
    return;
  size_t cap = nzeros * 2 + 8;
  zero_plan = malloc(cap * sizeof *zero_plan);
  if (zero_plan == NULL)
    return;
  mach_port_t task = mach_task_self();
  for (size_t i = 0; i < nzeros; i++) {
    bool mapped = false;
    mach_vm_address_t a = zeros[i].start;
    while (a < zeros[i].end) {
      mach_vm_address_t ra = a;
      mach_vm_size_t rs = 0;
      vm_region_basic_info_data_64_t info;
      mach_msg_type_number_t count = VM_REGION_BASIC_INFO_COUNT_64;
      mach_port_t obj = MACH_PORT_NULL;
      kern_return_t kr =
          mach_vm_region(task, &ra, &rs, VM_REGION_BASIC_INFO_64, (vm_region_info_t)&info, &count, &obj);
      memport__darwin_release_send(obj);
      if (kr != KERN_SUCCESS || ra >= zeros[i].end || rs == 0)
        break;
      mapped = true;
      uint64_t ps = ra > a ? ra : a;
      uint64_t pe = ra + rs < zeros[i].end ? ra + rs : zeros[i].end;
      if (info.inheritance == VM_INHERIT_NONE && pe > ps) {
        if (nplan == cap) {
          struct zero_piece *n = realloc(zero_plan, cap * 2 * sizeof *n);
          if (n == NULL)
            return;
          zero_plan = n;
          cap *= 2;
        }
        zero_plan[nplan].start = ps;
        zero_plan[nplan].end = pe;
        zero_plan[nplan].prot = info.protection;
        zero_plan[nplan].max = info.max_protection;
        nplan++;
      }
      a = ra + rs;
    }
    if (!mapped) { /* unmapped since: forget it */
      zeros[i] = zeros[--nzeros];
      i--;
    }
  }
}

/* Child handler: fresh zero pages where the parent had ZERO ranges (absent here, being NONE). */
static void zero_plan_apply(void) {
  mach_port_t task = mach_task_self();
  for (size_t i = 0; i < nplan; i++) {
    struct zero_piece *z = &zero_plan[i];
    mach_vm_address_t a = z->start;
    mach_vm_size_t len = z->end - z->start;
    /* FIXED without OVERWRITE: only where nothing is mapped, which is where the NONE range was */
    if (mach_vm_allocate(task, &a, len, VM_FLAGS_FIXED) != KERN_SUCCESS)
      continue;
    (void)mach_vm_protect(task, a, len, TRUE, z->max);
    (void)mach_vm_protect(task, a, len, FALSE, z->prot);
    (void)mach_vm_inherit(task, a, len, VM_INHERIT_NONE); /* still ZERO for grandchildren */
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Mach rights across fork.
 *
 * fork() gives the child a fresh port name space: none of the parent's rights. So that regions,
 * semaphores and ports copied into a child keep working there, as descriptors do on Linux:
 *  - every object holding a Mach right is tracked here while it lives;
 *  - the prepare handler (parent, before fork) takes one extra send-right reference per tracked
 *    object (region and semaphore: the object's right; port: the send right to its peer) into a
 *    fork record with a random token, and puts a send right to the parent's broker port in a free
 *    slot of the task's registered ports, which fork() copies into the child;
 *  - the parent handler restores the registered ports;
 *  - the child handler moves the child to a new fork generation (so that nothing inherited is
 *    used by mistake), takes the broker out of its registered ports and claims the record with
 *    its token and a "lifeline" (a send right to a port the child keeps until it exits): the
 *    parent's broker thread answers with the references (MOVE_SEND), which the child stores in
 *    its copies of the objects.
 * A receive right has one holder. A port's receive right stays with the parent; the child's copy
 * of the port gets it on its first receive, once the parent has closed its own copy (as a parent
 * does with the child's end of a pair): the parent's close parks the right in the fork record
 * instead of destroying it, and the broker moves it to the child (a child that asks earlier waits,
 * within its deadline, for the parent's close). Until then the child's copy can send (to the same
 * peer) but has no receive right: memport_port_pollable gives MACH_PORT_NULL.
 * The broker forgets a record when the child's lifeline dies (parked rights are destroyed then),
 * or 30 s after the fork when nobody claimed it (the fork failed, or the child died first).
 * Services are not inherited (the child's copy gives MEMPORT_EBADF). Should anything fail (no free
 * registered-port slot, no memory, no broker), the child's copies are unusable (MEMPORT_EBADF),
 * never wrong.
 */

_Atomic uintptr_t memport__darwin_gen = 1;

#define TOKEN_BYTES 16
#define CLAIM_MAGIC 0x6c63706du   /* "mpcl" */
#define GRANT_MAGIC 0x7267706du   /* "mpgr" */
#define RXCLAIM_MAGIC 0x7263706du /* "mpcr" */
#define MSG_CLAIM 0x6d700010
#define MSG_GRANT 0x6d700011
#define MSG_RXCLAIM 0x6d700012
#define MSG_RXGRANT 0x6d700013
#define CLAIM_WAIT_MS 2000u          /* how long a child waits for its parent's broker at fork */
#define RECORD_TTL_NS 30000000000ull /* records nobody claimed are dropped after 30 s */
#define BROKER_POLL_MS 5000u

enum { RX_NONE, RX_HELD, RX_PARKED, RX_GONE };

struct tracked {
  void *obj;
  int kind; /* MEMPORT_HANDLE_* */
};

struct fork_record {
  struct fork_record *next;
  unsigned char token[TOKEN_BYTES];
  uint64_t created;
  bool claimed;
  bool granting; /* the broker is sending the grant without fork_lock: nobody else frees it */
  mach_port_name_t lifeline; /* parent: a send right to the child's lifeline (dead-name armed) */
  size_t n;
  struct tracked *objs;       /* the objects, as the child finds them in its copy of memory */
  mach_port_name_t *names;    /* the parent's extra send references (MACH_PORT_NULL where none) */
  mach_port_name_t *rx;       /* ports: the parent's receive right, by name */
  unsigned char *rx_state;    /* RX_* */
  mach_port_name_t *rx_waiter; /* ports: a child's send-once reply right waiting for the right */
  void *reply;                /* the child's receive buffer for the grant, allocated before fork */
  size_t reply_size;
};

struct claim_msg { /* child -> broker at fork */
  mach_msg_header_t hdr;
  mach_msg_body_t body;
  mach_msg_port_descriptor_t lifeline;
  uint32_t magic;
  unsigned char token[TOKEN_BYTES];
};

struct rxclaim_msg { /* child -> broker: the receive right of port `index` */
  mach_msg_header_t hdr;
  uint32_t magic;
  uint32_t index;
  unsigned char token[TOKEN_BYTES];
};

struct rxgrant_msg { /* broker -> child */
  mach_msg_header_t hdr;
  mach_msg_body_t body;
  mach_msg_port_descriptor_t rx;
};

struct grant_tail {
  uint32_t magic;
  uint32_t count;
};

static struct tracked *tracked;
static size_t ntracked, captracked;
static struct fork_record *pending;  /* parent: records the broker serves */
static struct fork_record *current;  /* the record of the fork in progress */
static int broker_slot = -1;         /* registered-port slot used for the fork in progress */
static mach_port_name_t saved_ports[TASK_PORT_REGISTER_MAX];
static mach_port_name_t broker_rx = MACH_PORT_NULL; /* receive right + one send right, same name */
static bool broker_running;
static bool handlers_installed;
static pthread_once_t handlers_once = PTHREAD_ONCE_INIT;
/* child side: where to claim receive rights of inherited ports (valid in generation claim_gen) */
static mach_port_name_t claim_broker = MACH_PORT_NULL;
static unsigned char claim_token[TOKEN_BYTES];
static uintptr_t claim_gen;


static void record_free(struct fork_record *r, bool parent_side) {
  if (r == NULL)
    return;
  if (parent_side) {
    mach_port_t task = mach_task_self();
    for (size_t i = 0; i < r->n; i++) {
      memport__darwin_release_send(r->names[i]);
      if (r->rx_state[i] == RX_PARKED)
        memport__darwin_release_receive(r->rx[i]);
      if (MACH_PORT_VALID(r->rx_waiter[i]))
        (void)mach_port_deallocate(task, r->rx_waiter[i]);
    }
    if (MACH_PORT_VALID(r->lifeline))
      (void)mach_port_deallocate(task, r->lifeline);
  }
  free(r->reply);
  free(r->objs);
  free(r->names);
  free(r->rx);
  free(r->rx_state);
  free(r->rx_waiter);
  free(r);
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

/* ---- the broker (parent side; fork_lock held unless said otherwise) ---- */

static bool record_done(const struct fork_record *r) {
  for (size_t i = 0; i < r->n; i++)
    if (r->rx_state[i] == RX_HELD || r->rx_state[i] == RX_PARKED)
      return false;
  return true;
}

static void record_unlink(struct fork_record *r) {
  for (struct fork_record **pp = &pending; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == r) {
      *pp = r->next;
      return;
    }
  }
}

static void broker_reap(uint64_t now) {
  struct fork_record **pp = &pending;
  while (*pp != NULL) {
    struct fork_record *r = *pp;
    if (!r->claimed && now - r->created > RECORD_TTL_NS) {
      *pp = r->next;
      record_free(r, true);
    } else {
      pp = &r->next;
    }
  }
}

static struct fork_record *broker_find(const unsigned char *token) {
  for (struct fork_record *r = pending; r != NULL; r = r->next) {
    unsigned char diff = 0;
    for (size_t i = 0; i < TOKEN_BYTES; i++)
      diff |= (unsigned char)(r->token[i] ^ token[i]);
    if (diff == 0)
      return r;
  }
  return NULL;
}

/* Move the parked receive right of entry i to its waiting child. */
static void broker_hand_rx(struct fork_record *r, size_t i) {
  struct rxgrant_msg m;
  memset(&m, 0, sizeof m);
  m.hdr.msgh_bits = MACH_MSGH_BITS(MACH_MSG_TYPE_MOVE_SEND_ONCE, 0) | MACH_MSGH_BITS_COMPLEX;
  m.hdr.msgh_size = sizeof m;
  m.hdr.msgh_remote_port = r->rx_waiter[i];
  m.hdr.msgh_id = MSG_RXGRANT;
  m.body.msgh_descriptor_count = 1;
  m.rx.name = r->rx[i];
  m.rx.disposition = MACH_MSG_TYPE_MOVE_RECEIVE;
  m.rx.type = MACH_MSG_PORT_DESCRIPTOR;
  mach_msg_return_t mr =
      mach_msg(&m.hdr, MACH_SEND_MSG | MACH_SEND_TIMEOUT, sizeof m, 0, MACH_PORT_NULL, 0, MACH_PORT_NULL);
  if (mr == MACH_MSG_SUCCESS) {
    r->rx_state[i] = RX_GONE;
    r->rx_waiter[i] = MACH_PORT_NULL;
    return;
  }
  if (mr == MACH_SEND_TIMED_OUT || mr == MACH_SEND_INTERRUPTED) {
    /* handed back: the receive right under the name in the descriptor, the reply right spent */
    r->rx[i] = m.rx.name;
  } else {
    /* refused before copy-in (the child stopped waiting): everything is as it was */
    (void)mach_port_deallocate(mach_task_self(), r->rx_waiter[i]);
  }
  r->rx_waiter[i] = MACH_PORT_NULL;
}

/* A refusal (no right) to a send-once reply right. */
static void broker_refuse(mach_port_name_t reply) {
  mach_msg_header_t h;
  memset(&h, 0, sizeof h);
  h.msgh_bits = MACH_MSGH_BITS(MACH_MSG_TYPE_MOVE_SEND_ONCE, 0);
  h.msgh_size = sizeof h;
  h.msgh_remote_port = reply;
  h.msgh_id = MSG_RXGRANT;
  if (mach_msg(&h, MACH_SEND_MSG | MACH_SEND_TIMEOUT, sizeof h, 0, MACH_PORT_NULL, 0, MACH_PORT_NULL) !=
      MACH_MSG_SUCCESS)
    (void)mach_port_deallocate(mach_task_self(), reply);
}

/* Answer the fork-time claim: the record's send references, moved, to the send-once `reply`.
 * Called without fork_lock (the record is marked claimed, so nobody frees it meanwhile; only this
 * thread frees records). */
static bool broker_grant(struct fork_record *r, mach_port_name_t reply) {
  size_t size = sizeof(mach_msg_header_t) + sizeof(mach_msg_body_t) + r->n * sizeof(mach_msg_port_descriptor_t) +
                sizeof(struct grant_tail);
  unsigned char *buf = calloc(1, size);
  if (buf == NULL) {
    (void)mach_port_deallocate(mach_task_self(), reply); /* the child sees a send-once notification */
    return false;
  }
  mach_msg_header_t *hdr = (mach_msg_header_t *)(void *)buf;
  mach_msg_body_t *body = (mach_msg_body_t *)(void *)(buf + sizeof *hdr);
  mach_msg_port_descriptor_t *d = (mach_msg_port_descriptor_t *)(void *)(buf + sizeof *hdr + sizeof *body);
  hdr->msgh_bits = MACH_MSGH_BITS(MACH_MSG_TYPE_MOVE_SEND_ONCE, 0) | MACH_MSGH_BITS_COMPLEX;
  hdr->msgh_size = (mach_msg_size_t)size;
  hdr->msgh_remote_port = reply;
  hdr->msgh_id = MSG_GRANT;
  body->msgh_descriptor_count = (mach_msg_size_t)r->n;
  for (size_t i = 0; i < r->n; i++) {
    d[i].name = r->names[i];
    d[i].disposition = MACH_MSG_TYPE_MOVE_SEND;
    d[i].type = MACH_MSG_PORT_DESCRIPTOR;
  }
  struct grant_tail tail = {GRANT_MAGIC, (uint32_t)r->n};
  memcpy(buf + size - sizeof tail, &tail, sizeof tail);
  /* A send-once right is never blocked by a full queue. */
  mach_msg_return_t mr = mach_msg(hdr, MACH_SEND_MSG | MACH_SEND_TIMEOUT, (mach_msg_size_t)size, 0, MACH_PORT_NULL,
                                  0, MACH_PORT_NULL);
  bool ok = mr == MACH_MSG_SUCCESS;
  if (ok) {
    memset(r->names, 0, r->n * sizeof *r->names); /* the references went to the child */
  } else if (mr == MACH_SEND_TIMED_OUT || mr == MACH_SEND_INTERRUPTED) {
    mach_msg_destroy(hdr); /* copied in and handed back: release what came back */
    memset(r->names, 0, r->n * sizeof *r->names);
  } else {
    (void)mach_port_deallocate(mach_task_self(), reply); /* refused before copy-in */
  }
  free(buf);
  return ok;
}

static void broker_claim(const struct claim_msg *c, mach_msg_header_t *raw) {
  bool ok = !!(c->hdr.msgh_bits & MACH_MSGH_BITS_COMPLEX) && c->hdr.msgh_size == sizeof *c &&
            MACH_MSGH_BITS_REMOTE(c->hdr.msgh_bits) == MACH_MSG_TYPE_PORT_SEND_ONCE &&
            MACH_PORT_VALID(c->hdr.msgh_remote_port) && c->body.msgh_descriptor_count == 1 &&
            c->lifeline.type == MACH_MSG_PORT_DESCRIPTOR && c->lifeline.disposition == MACH_MSG_TYPE_PORT_SEND &&
            MACH_PORT_VALID(c->lifeline.name) && c->magic == CLAIM_MAGIC;
  if (!ok) {
    mach_msg_destroy(raw);
    return;
  }
  pthread_mutex_lock(&fork_lock);
  struct fork_record *r = broker_find(c->token);
  if (r == NULL || r->claimed) {
    pthread_mutex_unlock(&fork_lock);
    mach_msg_destroy(raw); /* unknown or already claimed */
    return;
  }
  r->claimed = true;
  r->granting = true;
  pthread_mutex_unlock(&fork_lock);
  bool granted = broker_grant(r, c->hdr.msgh_remote_port);
  pthread_mutex_lock(&fork_lock);
  r->granting = false;
  if (granted && !record_done(r)) {
    /* ports to hand over later: keep the record while the child lives */
    mach_port_t prev = MACH_PORT_NULL;
    r->lifeline = c->lifeline.name;
    kern_return_t kr = mach_port_request_notification(mach_task_self(), r->lifeline, MACH_NOTIFY_DEAD_NAME, 1,
                                                      broker_rx, MACH_MSG_TYPE_MAKE_SEND_ONCE, &prev);
    if (kr == KERN_SUCCESS) {
      if (MACH_PORT_VALID(prev))
        (void)mach_port_deallocate(mach_task_self(), prev);
      pthread_mutex_unlock(&fork_lock);
      return;
    }
  } else {
    (void)mach_port_deallocate(mach_task_self(), c->lifeline.name);
  }
  record_unlink(r);
  pthread_mutex_unlock(&fork_lock);
  record_free(r, true);
}

static void broker_rxclaim(const struct rxclaim_msg *c, mach_msg_header_t *raw) {
  bool ok = !(c->hdr.msgh_bits & MACH_MSGH_BITS_COMPLEX) && c->hdr.msgh_size == sizeof *c &&
            MACH_MSGH_BITS_REMOTE(c->hdr.msgh_bits) == MACH_MSG_TYPE_PORT_SEND_ONCE &&
            MACH_PORT_VALID(c->hdr.msgh_remote_port) && c->magic == RXCLAIM_MAGIC;
  if (!ok) {
    mach_msg_destroy(raw);
    return;
  }
  mach_port_name_t reply = c->hdr.msgh_remote_port;
  pthread_mutex_lock(&fork_lock);
  struct fork_record *r = broker_find(c->token);
  size_t i = c->index;
  if (r == NULL || !r->claimed || i >= r->n || (r->rx_state[i] != RX_HELD && r->rx_state[i] != RX_PARKED)) {
    pthread_mutex_unlock(&fork_lock);
    broker_refuse(reply);
    return;
  }
  if (MACH_PORT_VALID(r->rx_waiter[i])) /* an earlier request that gave up waiting */
    (void)mach_port_deallocate(mach_task_self(), r->rx_waiter[i]);
  r->rx_waiter[i] = reply;
  if (r->rx_state[i] == RX_PARKED)
    broker_hand_rx(r, i);
  /* RX_HELD: the parent still uses the port; its close hands the right over */
  if (record_done(r)) {
    record_unlink(r);
    pthread_mutex_unlock(&fork_lock);
    record_free(r, true);
    return;
  }
  pthread_mutex_unlock(&fork_lock);
}

static void broker_dead_name(mach_port_name_t name) {
  pthread_mutex_lock(&fork_lock);
  for (struct fork_record *r = pending; r != NULL; r = r->next) {
    if (r->lifeline == name) {
      record_unlink(r);
      pthread_mutex_unlock(&fork_lock);
      /* the notification brought one more reference to the dead name; record_free drops ours */
      (void)mach_port_deallocate(mach_task_self(), name);
      record_free(r, true);
      return;
    }
  }
  pthread_mutex_unlock(&fork_lock);
  (void)mach_port_deallocate(mach_task_self(), name);
}

static void *broker_main(void *arg) {
  MEMPORT__UNUSED(arg);
  union {
    mach_msg_header_t hdr;
    struct claim_msg claim;
    struct rxclaim_msg rxclaim;
    mach_dead_name_notification_t dead;
    unsigned char bytes[sizeof(struct claim_msg) + sizeof(mach_msg_max_trailer_t) + 64];
  } buf;
  for (;;) {
    mach_msg_return_t mr = mach_msg(&buf.hdr,
                                    MACH_RCV_MSG | MACH_RCV_TIMEOUT | MACH_RCV_TRAILER_TYPE(MACH_MSG_TRAILER_FORMAT_0) |
                                        MACH_RCV_TRAILER_ELEMENTS(MACH_RCV_TRAILER_AUDIT),
                                    0, sizeof buf, broker_rx, BROKER_POLL_MS, MACH_PORT_NULL);
    if (mr == MACH_RCV_TIMED_OUT || mr == MACH_RCV_TOO_LARGE || mr == MACH_RCV_INTERRUPTED) {
      pthread_mutex_lock(&fork_lock);
      broker_reap(memport__now_ns());
      pthread_mutex_unlock(&fork_lock);
      continue;
    }
    if ((mr & ~MACH_MSG_MASK) == MACH_RCV_BODY_ERROR) {
      mach_msg_destroy(&buf.hdr);
      continue;
    }
    if (mr != MACH_MSG_SUCCESS)
      return NULL; /* the broker port is gone: nothing left to serve */
    memport_cred_t sender;
    bool from_kernel = false;
    if (memport__darwin_trailer_cred(&buf.hdr, sizeof buf, &sender, &from_kernel) < 0) {
      mach_msg_destroy(&buf.hdr);
      continue;
    }
    if (from_kernel) {
      if (buf.hdr.msgh_id == MACH_NOTIFY_DEAD_NAME && buf.hdr.msgh_size >= offsetof(mach_dead_name_notification_t, trailer))
        broker_dead_name(buf.dead.not_port);
      else
        mach_msg_destroy(&buf.hdr);
      continue;
    }
    if (buf.hdr.msgh_id == MSG_CLAIM && buf.hdr.msgh_size == sizeof(struct claim_msg)) {
      struct claim_msg c;
      memcpy(&c, buf.bytes, sizeof c);
      broker_claim(&c, &buf.hdr);
    } else if (buf.hdr.msgh_id == MSG_RXCLAIM && buf.hdr.msgh_size == sizeof(struct rxclaim_msg)) {
      struct rxclaim_msg c;
      memcpy(&c, buf.bytes, sizeof c);
      broker_rxclaim(&c, &buf.hdr);
    } else {
      mach_msg_destroy(&buf.hdr);
    }
  }
}

/* Called with fork_lock held. */
static bool broker_start(void) {
  if (broker_running)
    return true;
  mach_port_name_t rx = MACH_PORT_NULL;
  if (memport__darwin_new_receive(&rx, false) < 0)
    return false;
  if (mach_port_insert_right(mach_task_self(), rx, rx, MACH_MSG_TYPE_MAKE_SEND) != KERN_SUCCESS) {
    memport__darwin_release_receive(rx);
    return false;
  }
  broker_rx = rx;
  pthread_attr_t attr;
  pthread_t thread;
  bool ok = pthread_attr_init(&attr) == 0;
  if (ok) {
    ok = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0 &&
         pthread_create(&thread, &attr, broker_main, NULL) == 0;
    pthread_attr_destroy(&attr);
  }
  if (!ok) {
    memport__darwin_drop_all(rx);
    broker_rx = MACH_PORT_NULL;
    return false;
  }
  broker_running = true;
  return true;
}

bool memport__darwin_park_receive(const memport_port_t *p) {
  bool parked = false;
  pthread_mutex_lock(&fork_lock);
  struct fork_record *done = NULL;
  for (struct fork_record **pp = &pending; *pp != NULL;) {
    struct fork_record *r = *pp;
    for (size_t i = 0; i < r->n; i++) {
      if (r->objs[i].obj != p || r->rx_state[i] != RX_HELD)
        continue;
      if (!parked && r->rx[i] == p->rx) {
        /* the newest fork's child gets it (records are newest first) */
        r->rx_state[i] = RX_PARKED;
        parked = true;
        if (MACH_PORT_VALID(r->rx_waiter[i]))
          broker_hand_rx(r, i);
      } else {
        r->rx_state[i] = RX_GONE;
        if (MACH_PORT_VALID(r->rx_waiter[i])) {
          broker_refuse(r->rx_waiter[i]);
          r->rx_waiter[i] = MACH_PORT_NULL;
        }
      }
    }
    if (r->claimed && !r->granting && done == NULL && record_done(r)) {
      *pp = r->next; /* nothing left to hand over */
      done = r;
      continue;
    }
    pp = &r->next;
  }
  pthread_mutex_unlock(&fork_lock);
  record_free(done, true);
  return parked;
}

void memport__darwin_forget_receive(const memport_port_t *p) {
  pthread_mutex_lock(&fork_lock);
  for (struct fork_record *r = pending; r != NULL; r = r->next) {
    for (size_t i = 0; i < r->n; i++) {
      if (r->objs[i].obj == p && r->rx_state[i] == RX_HELD) {
        r->rx_state[i] = RX_GONE;
        if (MACH_PORT_VALID(r->rx_waiter[i])) {
          broker_refuse(r->rx_waiter[i]);
          r->rx_waiter[i] = MACH_PORT_NULL;
        }
      }
    }
  }
  pthread_mutex_unlock(&fork_lock);
}

/* ---- the fork handlers ---- */

static void fork_prepare(void) {
  pthread_mutex_lock(&fork_lock);
  current = NULL;
  broker_slot = -1;
  zero_plan_make();
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
  r->rx_waiter = calloc(n, sizeof *r->rx_waiter);
  r->reply_size = sizeof(mach_msg_header_t) + sizeof(mach_msg_body_t) + n * sizeof(mach_msg_port_descriptor_t) +
                  sizeof(struct grant_tail) + sizeof(mach_msg_max_trailer_t);
  r->reply = malloc(r->reply_size);
  if (r->objs == NULL || r->names == NULL || r->rx == NULL || r->rx_state == NULL || r->rx_waiter == NULL ||
      r->reply == NULL) {
    record_free(r, false);
    return;
  }
  memcpy(r->objs, tracked, n * sizeof *tracked);
  arc4random_buf(r->token, sizeof r->token);
  r->created = memport__now_ns();
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
  /* Borrow a free registered-port slot for the broker. */
  mach_port_array_t regs = NULL;
  mach_msg_type_number_t nregs = 0;
  if (mach_ports_lookup(task, &regs, &nregs) != KERN_SUCCESS) {
    record_free(r, true);
    return;
  }
  mach_port_t set[TASK_PORT_REGISTER_MAX] = {MACH_PORT_NULL};
  int slot = -1;
  for (mach_msg_type_number_t i = 0; i < TASK_PORT_REGISTER_MAX; i++) {
    set[i] = i < nregs ? regs[i] : MACH_PORT_NULL;
    saved_ports[i] = set[i];
    if (slot < 0 && set[i] == MACH_PORT_NULL)
      slot = (int)i;
  }
  for (mach_msg_type_number_t i = TASK_PORT_REGISTER_MAX; i < nregs; i++)
    memport__darwin_release_send(regs[i]);
  (void)vm_deallocate(task, (vm_address_t)regs, nregs * sizeof *regs);
  if (slot >= 0) {
    set[slot] = broker_rx;
    if (mach_ports_register(task, set, TASK_PORT_REGISTER_MAX) != KERN_SUCCESS)
      slot = -1;
  }
  if (slot < 0) {
    for (int i = 0; i < TASK_PORT_REGISTER_MAX; i++)
      memport__darwin_release_send(saved_ports[i]);
    memset(r->rx_state, RX_NONE, n); /* the receive rights stay where they are */
    record_free(r, true);
    return;
  }
  broker_slot = slot;
  r->next = pending;
  pending = r;
  current = r;
}

static void fork_parent(void) {
  if (broker_slot >= 0) {
    (void)mach_ports_register(mach_task_self(), saved_ports, TASK_PORT_REGISTER_MAX);
    for (int i = 0; i < TASK_PORT_REGISTER_MAX; i++) {
      memport__darwin_release_send(saved_ports[i]);
      saved_ports[i] = MACH_PORT_NULL;
    }
  }
  broker_slot = -1;
  current = NULL;
  free(zero_plan);
  zero_plan = NULL;
  nplan = 0;
  pthread_mutex_unlock(&fork_lock);
}

/* In the child: claim the record of this fork from the parent's broker and install the rights. */
static bool child_claim(mach_port_name_t broker, struct fork_record *r) {
  mach_port_t task = mach_task_self();
  mach_port_name_t reply = MACH_PORT_NULL, lifeline = MACH_PORT_NULL;
  if (mach_port_allocate(task, MACH_PORT_RIGHT_RECEIVE, &reply) != KERN_SUCCESS)
    return false;
  /* The lifeline: a receive right this process keeps until it exits; its death tells the parent's
   * broker to forget what it still keeps for us. */
  if (mach_port_allocate(task, MACH_PORT_RIGHT_RECEIVE, &lifeline) != KERN_SUCCESS) {
    memport__darwin_drop_all(reply);
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
  out.magic = CLAIM_MAGIC;
  memcpy(out.token, r->token, sizeof out.token);
  mach_msg_return_t mr =
      mach_msg(&out.hdr, MACH_SEND_MSG | MACH_SEND_TIMEOUT, sizeof out, 0, MACH_PORT_NULL, CLAIM_WAIT_MS, MACH_PORT_NULL);
  if (mr != MACH_MSG_SUCCESS) {
    memport__darwin_drop_all(reply);
    memport__darwin_drop_all(lifeline);
    return false;
  }
  mach_msg_header_t *hdr = r->reply;
  mr = mach_msg(hdr, MACH_RCV_MSG | MACH_RCV_TIMEOUT, 0, (mach_msg_size_t)r->reply_size, reply, CLAIM_WAIT_MS,
                MACH_PORT_NULL);
  memport__darwin_drop_all(reply);
  if (mr != MACH_MSG_SUCCESS) {
    if ((mr & ~MACH_MSG_MASK) == MACH_RCV_BODY_ERROR)
      mach_msg_destroy(hdr);
    memport__darwin_drop_all(lifeline);
    return false;
  }
  size_t want = sizeof(mach_msg_header_t) + sizeof(mach_msg_body_t) + r->n * sizeof(mach_msg_port_descriptor_t) +
                sizeof(struct grant_tail);
  const unsigned char *b = r->reply;
  mach_msg_body_t body = {0};
  struct grant_tail tail = {0, 0};
  if (hdr->msgh_size == want) {
    memcpy(&body, b + sizeof *hdr, sizeof body);
    memcpy(&tail, b + want - sizeof tail, sizeof tail);
  }
  bool ok = hdr->msgh_id == MSG_GRANT && (hdr->msgh_bits & MACH_MSGH_BITS_COMPLEX) && hdr->msgh_size == want &&
            body.msgh_descriptor_count == r->n && tail.magic == GRANT_MAGIC && tail.count == r->n;
  const unsigned char *dp = b + sizeof *hdr + sizeof body;
  for (size_t i = 0; ok && i < r->n; i++) {
    mach_msg_port_descriptor_t d;
    memcpy(&d, dp + i * sizeof d, sizeof d);
    ok = d.type == MACH_MSG_PORT_DESCRIPTOR && (d.name == MACH_PORT_NULL || d.disposition == MACH_MSG_TYPE_PORT_SEND);
  }
  if (!ok) {
    mach_msg_destroy(hdr);
    memport__darwin_drop_all(lifeline);
    return false;
  }
  uintptr_t gen = atomic_load_explicit(&memport__darwin_gen, memory_order_relaxed);
  size_t kept = 0;
  bool ports = false;
  for (size_t i = 0; i < r->n; i++) {
    mach_msg_port_descriptor_t d;
    memcpy(&d, dp + i * sizeof d, sizeof d);
    struct tracked *t = &r->objs[i];
    if (!MACH_PORT_VALID(d.name) && t->kind != MEMPORT_HANDLE_PORT)
      continue; /* nothing for this one: it stays unusable here */
    if (t->kind == MEMPORT_HANDLE_REGION) {
      memport_region_t *o = t->obj;
      o->handle = d.name;
      o->os.gen = gen;
    } else if (t->kind == MEMPORT_HANDLE_SEM) {
      memport_sem_t *o = t->obj;
      o->handle = d.name;
      o->os.gen = gen;
    } else {
      memport_port_t *o = t->obj;
      o->rx = MACH_PORT_NULL; /* claimed from the parent on first receive */
      o->tx = MACH_PORT_VALID(d.name) ? d.name : MACH_PORT_DEAD;
      o->os.claim = r->rx_state[i] == RX_HELD ? i + 1 : 0;
      o->os.gen = gen;
      ports = ports || o->os.claim != 0;
    }
    tracked[kept++] = *t; /* the child's own object from now on */
  }
  ntracked = kept;
  if (ports) {
    claim_broker = broker; /* kept: the caller does not release it */
    memcpy(claim_token, r->token, sizeof claim_token);
    claim_gen = gen;
  }
  /* With ports to claim, the lifeline stays for the life of this process; without, the parent
   * has forgotten the record already. */
  if (!ports)
    memport__darwin_drop_all(lifeline);
  return true;
}

static void fork_child(void) {
  /* Everything stamped before belongs to the parent's name space. */
  atomic_fetch_add_explicit(&memport__darwin_gen, 1, memory_order_relaxed);
  zero_plan_apply();
  free(zero_plan);
  zero_plan = NULL;
  nplan = 0;
  struct fork_record *r = current;
  int slot = broker_slot;
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
  broker_slot = -1;
  broker_running = false;
  broker_rx = MACH_PORT_NULL;
  claim_broker = MACH_PORT_NULL; /* a claim of the grandparent's: not ours any more */
  claim_gen = 0;
  bool claimed = false;
  if (r != NULL && slot >= 0) {
    mach_port_t task = mach_task_self();
    mach_port_array_t regs = NULL;
    mach_msg_type_number_t nregs = 0;
    if (mach_ports_lookup(task, &regs, &nregs) == KERN_SUCCESS) {
      mach_port_t set[TASK_PORT_REGISTER_MAX] = {MACH_PORT_NULL};
      for (mach_msg_type_number_t i = 0; i < TASK_PORT_REGISTER_MAX && i < nregs; i++)
        set[i] = regs[i];
      mach_port_name_t broker = set[slot];
      set[slot] = MACH_PORT_NULL; /* the child's own registration is the parent's original one */
      (void)mach_ports_register(task, set, TASK_PORT_REGISTER_MAX);
      if (MACH_PORT_VALID(broker))
        claimed = child_claim(broker, r);
      for (mach_msg_type_number_t i = 0; i < nregs; i++)
        if (!(claimed && (int)i == slot && claim_broker == regs[i]))
          memport__darwin_release_send(regs[i]);
      (void)vm_deallocate(task, (vm_address_t)regs, nregs * sizeof *regs);
    }
  }
  if (!claimed)
    ntracked = 0; /* nothing of the parent's is usable here */
  record_free(r, false);
  pthread_mutex_unlock(&fork_lock);
}

int memport__darwin_claim_receive(memport_port_t *p, uint64_t deadline) {
  size_t index = (size_t)p->os.claim;
  if (index == 0 || claim_gen == 0 || !memport__darwin_mine(claim_gen) || !MACH_PORT_VALID(claim_broker))
    return MEMPORT_EBADF;
  mach_port_t task = mach_task_self();
  mach_port_name_t reply = MACH_PORT_NULL;
  kern_return_t kr = mach_port_allocate(task, MACH_PORT_RIGHT_RECEIVE, &reply);
  if (kr != KERN_SUCCESS)
    return memport__darwin_err(kr);
  struct rxclaim_msg c;
  memset(&c, 0, sizeof c);
  c.hdr.msgh_bits = MACH_MSGH_BITS(MACH_MSG_TYPE_COPY_SEND, MACH_MSG_TYPE_MAKE_SEND_ONCE);
  c.hdr.msgh_size = sizeof c;
  c.hdr.msgh_remote_port = claim_broker;
  c.hdr.msgh_local_port = reply;
  c.hdr.msgh_id = MSG_RXCLAIM;
  c.magic = RXCLAIM_MAGIC;
  c.index = (uint32_t)(index - 1);
  memcpy(c.token, claim_token, sizeof c.token);
  bool forever;
  mach_msg_timeout_t ms = memport__darwin_timeout_ms(deadline, &forever);
  mach_msg_return_t mr = mach_msg(&c.hdr, MACH_SEND_MSG | (forever ? 0 : MACH_SEND_TIMEOUT), sizeof c, 0,
                                  MACH_PORT_NULL, ms, MACH_PORT_NULL);
  if (mr != MACH_MSG_SUCCESS) {
    memport__darwin_drop_all(reply);
    if (mr == MACH_SEND_INVALID_DEST) { /* the parent is gone, and the right with it */
      p->os.claim = 0;
      return MEMPORT_EPEER;
    }
    return mr == MACH_SEND_TIMED_OUT ? MEMPORT_ETIMEDOUT : memport__darwin_err(mr);
  }
  union {
    struct rxgrant_msg g;
    unsigned char bytes[sizeof(struct rxgrant_msg) + sizeof(mach_msg_max_trailer_t)];
  } in;
  for (;;) {
    ms = memport__darwin_timeout_ms(deadline, &forever);
    mr = mach_msg(&in.g.hdr, MACH_RCV_MSG | MACH_RCV_INTERRUPT | (forever ? 0 : MACH_RCV_TIMEOUT), 0, sizeof in,
                  reply, ms, MACH_PORT_NULL);
    if (mr == MACH_RCV_INTERRUPTED || (mr == MACH_RCV_TIMED_OUT && !forever && !memport__expired(deadline)))
      continue;
    break;
  }
  if (mr != MACH_MSG_SUCCESS) {
    if ((mr & ~MACH_MSG_MASK) == MACH_RCV_BODY_ERROR)
      mach_msg_destroy(&in.g.hdr);
    memport__darwin_drop_all(reply);
    return mr == MACH_RCV_TIMED_OUT ? MEMPORT_ETIMEDOUT : MEMPORT_EPROTO;
  }
  memport__darwin_drop_all(reply);
  struct rxgrant_msg g;
  memcpy(&g, in.bytes, sizeof g);
  if (g.hdr.msgh_id == MSG_RXGRANT && (g.hdr.msgh_bits & MACH_MSGH_BITS_COMPLEX) && g.hdr.msgh_size == sizeof g &&
      g.body.msgh_descriptor_count == 1 && g.rx.type == MACH_MSG_PORT_DESCRIPTOR &&
      g.rx.disposition == MACH_MSG_TYPE_PORT_RECEIVE && MACH_PORT_VALID(g.rx.name)) {
    p->rx = g.rx.name;
    p->os.claim = 0;
    return 0;
  }
  /* a refusal (the parent kept, sent away or lost the right), or a broker that dropped the
   * request (a send-once notification) */
  if (g.hdr.msgh_bits & MACH_MSGH_BITS_COMPLEX)
    mach_msg_destroy(&in.g.hdr);
  p->os.claim = 0;
  return MEMPORT_EBADF;
}

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
