/* SPDX-License-Identifier: MIT */
/* os.h: shared helpers of the Darwin backend: Mach error mapping, deadlines as Mach timeouts, rights. */
#ifndef MEMPORT_DARWIN_OS_H
#define MEMPORT_DARWIN_OS_H

#include "internal.h"

#include <mach/mach.h>
#include <mach/mach_vm.h>

/* Map a kern_return_t or mach_msg_return_t to a MEMPORT_E* code (0 for success). Callers that know
 * better for their context (e.g. KERN_INVALID_RIGHT from mach_vm_map means "protection") map those
 * codes first. */
static inline int memport__darwin_err(kern_return_t kr) {
  switch (kr) {
  case KERN_SUCCESS:
    return 0;
  case KERN_INVALID_ADDRESS:
  case KERN_INVALID_ARGUMENT:
  case KERN_INVALID_VALUE:
  case KERN_INVALID_POLICY:
  case MACH_SEND_INVALID_HEADER:
  case MACH_SEND_MSG_TOO_SMALL:
  case MACH_SEND_INVALID_TYPE:
  case MACH_SEND_INVALID_MEMORY:
  case MACH_SEND_INVALID_DATA:
  case MACH_RCV_INVALID_DATA:
    return MEMPORT_EINVAL;
  case KERN_PROTECTION_FAILURE:
  case KERN_NO_ACCESS:
    return MEMPORT_EACCES;
  case KERN_NO_SPACE:
  case KERN_RESOURCE_SHORTAGE:
  case KERN_MEMORY_FAILURE:
  case KERN_MEMORY_ERROR:
  case MACH_SEND_NO_BUFFER:
  case MACH_RCV_HEADER_ERROR | MACH_MSG_VM_SPACE:
  case MACH_RCV_HEADER_ERROR | MACH_MSG_VM_KERNEL:
  case MACH_RCV_BODY_ERROR | MACH_MSG_VM_SPACE:
  case MACH_RCV_BODY_ERROR | MACH_MSG_VM_KERNEL:
    return MEMPORT_ENOMEM;
  case KERN_UREFS_OVERFLOW:
  case MACH_RCV_HEADER_ERROR | MACH_MSG_IPC_SPACE:
  case MACH_RCV_BODY_ERROR | MACH_MSG_IPC_SPACE:
  case MACH_RCV_HEADER_ERROR | MACH_MSG_IPC_KERNEL:
  case MACH_RCV_BODY_ERROR | MACH_MSG_IPC_KERNEL:
    return MEMPORT_EMFILE;
  case KERN_INVALID_NAME:
  case KERN_INVALID_RIGHT:
  case KERN_INVALID_CAPABILITY:
  case KERN_INVALID_OBJECT:
  case KERN_INVALID_TASK:
  case MACH_SEND_INVALID_RIGHT:
  case MACH_SEND_INVALID_REPLY:
  case MACH_RCV_INVALID_NAME:
  case MACH_RCV_IN_SET:
    return MEMPORT_EBADF;
  case KERN_NAME_EXISTS:
  case KERN_RIGHT_EXISTS:
    return MEMPORT_EEXIST;
  case KERN_ABORTED:
  case MACH_SEND_INTERRUPTED:
  case MACH_RCV_INTERRUPTED:
    return MEMPORT_EINTR;
  case KERN_OPERATION_TIMED_OUT:
  case MACH_SEND_TIMED_OUT:
  case MACH_RCV_TIMED_OUT:
    return MEMPORT_ETIMEDOUT;
  case KERN_TERMINATED:
  case MACH_SEND_INVALID_DEST:
  case MACH_RCV_PORT_DIED:
  case MACH_RCV_PORT_CHANGED:
    return MEMPORT_EPEER;
  case MACH_SEND_TOO_LARGE:
  case MACH_RCV_TOO_LARGE:
  case MACH_RCV_SCATTER_SMALL:
    return MEMPORT_EMSGSIZE;
  case KERN_NOT_SUPPORTED:
  case KERN_POLICY_STATIC:
    return MEMPORT_ENOTSUP;
  case KERN_NOT_RECEIVER:
    return MEMPORT_EPERM;
  default:
    return MEMPORT_EPROTO;
  }
}

/* Fork generations (fork.c). Mach rights are not inherited by fork(): a child starts with a fresh
 * port name space, where the names stored in objects copied from the parent mean nothing or,
 * worse, name the child's own unrelated rights. Every object records the generation it was made
 * in; a pthread_atfork child handler moves the child to a new generation, and every operation on
 * an object of an older one fails with MEMPORT_EBADF (closing it only frees the object), unless
 * the child got rights of its own for it from its parent's fork broker (fork.c). */
MEMPORT_HIDDEN extern _Atomic uintptr_t memport__darwin_gen;
/* Install the fork handlers (once) and return the current generation, for a new object. */
MEMPORT_HIDDEN uintptr_t memport__darwin_stamp(void);
/* Track an object that holds Mach rights (kind MEMPORT_HANDLE_*) so that a fork child's copy of it
 * gets rights of its own; untrack it before its rights are released. */
MEMPORT_HIDDEN void memport__darwin_track(void *obj, int kind);
MEMPORT_HIDDEN void memport__darwin_untrack(void *obj);
/* Replace the Mach name held in a field of a tracked object (a region's or semaphore's handle, a
 * port's tx or rx) and return the old one. Done under the lock the fork prepare handler holds while
 * it reads those fields and takes a reference on each name, so that a concurrent fork either sees
 * the old name before the swap (and its reference keeps that name alive) or the new one: never a
 * name the caller is about to release, which the kernel may then free and reuse for an unrelated
 * right (ipc_right_dealloc / ipc_entry_dealloc). Release the old name after this returns. */
MEMPORT_HIDDEN mach_port_name_t memport__darwin_swap_name(memport_os_handle_t *field, mach_port_name_t name);
/* Parent side, closing port p (its receive right still held): if a fork child may still want p's
 * receive right, it is handed to that child, or kept for it (true: do not destroy it). */
MEMPORT_HIDDEN bool memport__darwin_park_receive(const memport_port_t *p);
/* Parent side: p's receive right has left this process (sent away): no child can have it. Clears
 * p->rx in the same critical section, so that no later fork records it as held. */
MEMPORT_HIDDEN void memport__darwin_forget_receive(memport_port_t *p);
/* Child side: get the receive right of an inherited port p (p->os.claim != 0) from the parent
 * (waits up to deadline for the parent to close its copy). 0 and p->rx set, or MEMPORT_EBADF (the
 * parent sent it away), MEMPORT_EPEER (it died with the parent) or MEMPORT_ETIMEDOUT. */
MEMPORT_HIDDEN int memport__darwin_claim_receive(memport_port_t *p, uint64_t deadline);
/* Child side, closing an inherited port p that never got its receive right (p->os.claim != 0):
 * tell the parent, whose own close then destroys the right (the peer sees MEMPORT_EPEER). */
MEMPORT_HIDDEN void memport__darwin_unclaim(memport_port_t *p);
/* inherit.c's part of the fork handlers (ZERO ranges): prepare takes its lock, parent or child
 * releases it; child maps the zero pages. */
MEMPORT_HIDDEN void memport__darwin_zero_prepare(void);
MEMPORT_HIDDEN void memport__darwin_zero_parent(void);
MEMPORT_HIDDEN void memport__darwin_zero_child(void);
/* Was an object stamped `stamp` made in this process (not inherited through fork)? */
static inline bool memport__darwin_mine(uintptr_t stamp) {
  return stamp != 0 && stamp == atomic_load_explicit(&memport__darwin_gen, memory_order_relaxed);
}

/* True for a port name that denotes a right (not MACH_PORT_NULL, not MACH_PORT_DEAD). */
static inline bool memport__darwin_valid(mach_port_name_t name) { return MACH_PORT_VALID(name); }

/* Release one send (or dead-name) reference held under `name`; NULL and DEAD are ignored. */
static inline void memport__darwin_release_send(mach_port_name_t name) {
  if (MACH_PORT_VALID(name))
    (void)mach_port_deallocate(mach_task_self(), name);
}

/* Destroy the receive right held under `name`; NULL and DEAD are ignored. */
static inline void memport__darwin_release_receive(mach_port_name_t name) {
  if (MACH_PORT_VALID(name))
    (void)mach_port_mod_refs(mach_task_self(), name, MACH_PORT_RIGHT_RECEIVE, -1);
}

/* Drop every right held under `name` when this code alone owns it (a port it made): its send and
 * send-once references first, then the receive right, then any dead-name references (mach_port_destroy does this too, but is
 * deprecated). */
static inline void memport__darwin_drop_all(mach_port_name_t name) {
  if (!MACH_PORT_VALID(name))
    return;
  mach_port_t task = mach_task_self();
  mach_port_urefs_t refs = 0;
  if (mach_port_get_refs(task, name, MACH_PORT_RIGHT_SEND, &refs) == KERN_SUCCESS && refs > 0)
    (void)mach_port_mod_refs(task, name, MACH_PORT_RIGHT_SEND, -(mach_port_delta_t)refs);
  refs = 0;
  if (mach_port_get_refs(task, name, MACH_PORT_RIGHT_SEND_ONCE, &refs) == KERN_SUCCESS && refs > 0)
    (void)mach_port_mod_refs(task, name, MACH_PORT_RIGHT_SEND_ONCE, -(mach_port_delta_t)refs);
  (void)mach_port_mod_refs(task, name, MACH_PORT_RIGHT_RECEIVE, -1);
  refs = 0; /* send rights to a port that died before are dead names now */
  if (mach_port_get_refs(task, name, MACH_PORT_RIGHT_DEAD_NAME, &refs) == KERN_SUCCESS && refs > 0)
    (void)mach_port_mod_refs(task, name, MACH_PORT_RIGHT_DEAD_NAME, -(mach_port_delta_t)refs);
}

/* Milliseconds left until `deadline`, rounded up, for MACH_SEND_TIMEOUT / MACH_RCV_TIMEOUT
 * (0 once it has passed). *forever is set when there is no deadline. Long waits are capped; the
 * callers loop until the deadline itself has passed. */
static inline mach_msg_timeout_t memport__darwin_timeout_ms(uint64_t deadline, bool *forever) {
  *forever = deadline == MEMPORT__NO_DEADLINE;
  if (*forever)
    return MACH_MSG_TIMEOUT_NONE;
  uint64_t now = memport__now_ns();
  if (now >= deadline)
    return 0;
  uint64_t ms = (deadline - now + 999999u) / 1000000u;
  const uint64_t cap = 24u * 3600u * 1000u; /* a day per mach_msg call */
  return (mach_msg_timeout_t)(ms > cap ? cap : ms);
}

/* A fresh receive right for a memport port or service: a large queue limit (so a busy sender does
 * not block after the default five messages) and, when `notify_no_senders`, a no-senders
 * notification sent to the port itself, so that it is queued after every message sent before the
 * last sender went away. Returns 0 or a MEMPORT_E* code; *out is MACH_PORT_NULL on failure. */
MEMPORT_HIDDEN int memport__darwin_new_receive(mach_port_name_t *out, bool notify_no_senders);

/* msgh_id values of the messages memport's Darwin backend sends ('mp' + a small number). */
#define MEMPORT__DARWIN_MSG_DATA   0x6d700001
#define MEMPORT__DARWIN_MSG_HELLO  0x6d700002
#define MEMPORT__DARWIN_MSG_WELCOME 0x6d700003

/* Receive buffer for memport's own control messages (hello / welcome): header, body, one port
 * descriptor, a small inline part and the largest trailer. */
#define MEMPORT__DARWIN_CTL_BUF 512

/* Fill *cred from the audit-token trailer that follows a received message. Returns 0 or
 * MEMPORT_EPROTO if the trailer is missing or too short. */
MEMPORT_HIDDEN int memport__darwin_trailer_cred(const mach_msg_header_t *hdr, size_t buf_size,
                                               memport_cred_t *cred, bool *from_kernel);

/* Check that `name` is a send right to a memory entry that can be mapped for [0, size) with at
 * least VM_PROT_READ (and VM_PROT_WRITE when `writable`). Does not consume the right.
 * Returns 0, MEMPORT_EBADF (not a memory entry), MEMPORT_EACCES (the entry is read-only and
 * writable was asked), MEMPORT_EINVAL (the entry is smaller than size) or another code. */
MEMPORT_HIDDEN int memport__darwin_entry_check(mach_port_name_t name, size_t size, bool writable);

#endif /* MEMPORT_DARWIN_OS_H */
