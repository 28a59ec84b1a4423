/* SPDX-License-Identifier: MIT */
/* bell.c: a port's readiness handle on Darwin: a port set holding the port's receive right and a receive right this process rings. */
#include "darwin/os.h"

#include <string.h>

int memport__os_bell_open(struct memport__bell *b, const memport_port_t *p) {
  mach_port_t task = mach_task_self();
  b->handle = MACH_PORT_NULL;
  b->self = MACH_PORT_NULL;
  mach_port_name_t set = MACH_PORT_NULL, self = MACH_PORT_NULL;
  kern_return_t kr = mach_port_allocate(task, MACH_PORT_RIGHT_PORT_SET, &set);
  if (kr != KERN_SUCCESS)
    return memport__darwin_err(kr);
  kr = mach_port_allocate(task, MACH_PORT_RIGHT_RECEIVE, &self);
  if (kr == KERN_SUCCESS) {
    /* One ring is enough: a second finds the queue full and is dropped (MACH_SEND_TIMEOUT 0). */
    mach_port_limits_t limits = {.mpl_qlimit = 1};
    kr = mach_port_set_attributes(task, self, MACH_PORT_LIMITS_INFO, (mach_port_info_t)&limits,
                                  MACH_PORT_LIMITS_INFO_COUNT);
  }
  if (kr == KERN_SUCCESS)
    kr = mach_port_insert_member(task, self, set);
  if (kr == KERN_SUCCESS && p != NULL)
    kr = mach_port_insert_member(task, p->rx, set);
  if (kr != KERN_SUCCESS) {
    memport__darwin_release_receive(self);
    (void)mach_port_mod_refs(task, set, MACH_PORT_RIGHT_PORT_SET, -1);
    return memport__darwin_err(kr);
  }
  b->handle = set;
  b->self = self;
  return 0;
}

/* A receive right may be a member of several port sets at once: xnu's mach_port_insert_member
 * (osfmk/ipc/mach_port.c) refuses only a second insertion into the same set
 * (KERN_ALREADY_IN_SET), ipc_mqueue_add_locked (osfmk/ipc/ipc_mqueue.c) links the port's waitq to
 * one more set and hands messages already queued to that set's waiters, and
 * mach_port_extract_member removes it "from one portset that it is a member of", leaving the
 * others. So a port that is also in its own bell (memport_port_pollable users) can join ours. */
int memport__os_bell_add(struct memport__bell *b, memport_os_handle_t h) {
  kern_return_t kr = mach_port_insert_member(mach_task_self(), h, b->handle);
  return kr == KERN_SUCCESS ? 0 : memport__darwin_err(kr);
}

void memport__os_bell_remove(struct memport__bell *b, memport_os_handle_t h) {
  /* KERN_NOT_IN_SET (never added) and a right already destroyed (which left every set) are fine. */
  (void)mach_port_extract_member(mach_task_self(), h, b->handle);
}

void memport__os_bell_close(struct memport__bell *b) {
  if (MACH_PORT_VALID(b->self))
    memport__darwin_drop_all(b->self);
  if (MACH_PORT_VALID(b->handle))
    (void)mach_port_mod_refs(mach_task_self(), b->handle, MACH_PORT_RIGHT_PORT_SET, -1);
  b->handle = MACH_PORT_NULL;
  b->self = MACH_PORT_NULL;
}

void memport__os_bell_ring(struct memport__bell *b) {
  mach_msg_header_t h;
  memset(&h, 0, sizeof h);
  h.msgh_bits = MACH_MSGH_BITS(MACH_MSG_TYPE_MAKE_SEND_ONCE, 0);
  h.msgh_size = sizeof h;
  h.msgh_remote_port = b->self;
  h.msgh_local_port = MACH_PORT_NULL;
  (void)mach_msg(&h, MACH_SEND_MSG | MACH_SEND_TIMEOUT, sizeof h, 0, MACH_PORT_NULL, 0, MACH_PORT_NULL);
}

void memport__os_bell_clear(struct memport__bell *b) {
  union {
    mach_msg_header_t h;
    char buf[sizeof(mach_msg_header_t) + sizeof(mach_msg_max_trailer_t) + 64];
  } m;
  for (;;) {
    memset(&m.h, 0, sizeof m.h);
    kern_return_t kr = mach_msg(&m.h, MACH_RCV_MSG | MACH_RCV_TIMEOUT, 0, sizeof m, b->self, 0, MACH_PORT_NULL);
    if (kr != MACH_MSG_SUCCESS)
      return;
    mach_msg_destroy(&m.h);
  }
}
