/* SPDX-License-Identifier: MIT */
/* lib/port.c: the portable half of message ports: argument checks, object lifetime, handle ownership on send. */
#include "config.h"

#include "internal.h"

#include <stdlib.h>
#include <string.h>

memport_port_t *memport__port_alloc(void) {
  memport_port_t *p = calloc(1, sizeof *p);
  if (p != NULL) {
    p->rx = MEMPORT_OS_HANDLE_INVALID;
    p->tx = MEMPORT_OS_HANDLE_INVALID;
  }
  return p;
}

int memport_port_pair(memport_port_t **a, memport_port_t **b) {
  if (a == NULL || b == NULL || a == b)
    return MEMPORT_EINVAL;
  memport_port_t *pa = memport__port_alloc();
  memport_port_t *pb = memport__port_alloc();
  if (pa == NULL || pb == NULL) {
    free(pa);
    free(pb);
    return MEMPORT_ENOMEM;
  }
  int rc = memport__os_port_pair(pa, pb);
  if (rc != 0) {
    free(pa);
    free(pb);
    return rc;
  }
  *a = pa;
  *b = pb;
  return 0;
}

int memport_port_close(memport_port_t *port) {
  if (port == NULL)
    return 0;
  memport__os_port_close(port);
  free(port);
  return 0;
}

int memport_port_send(memport_port_t *port, memport_msg_t *msg, int64_t timeout_ns) {
  if (port == NULL || msg == NULL)
    return MEMPORT_EINVAL;
  return memport__nowait_code(memport__port_send(port, msg, memport__deadline(timeout_ns)), timeout_ns);
}

int memport__port_send(memport_port_t *port, memport_msg_t *msg, uint64_t deadline) {
  /* A port cannot travel through itself: on Darwin its receive right would be queued on itself,
   * on Linux the socket would sit in its own receive queue, an unreachable reference cycle that
   * only the kernel's garbage collector can break. Nothing useful can come of it on either. (A
   * backend may refuse more: Darwin also refuses the peer's end of this port.) */
  for (size_t i = 0; i < msg->nhandles; i++)
    if (msg->handles[i].kind == MEMPORT_HANDLE_PORT && msg->handles[i].u.port == port)
      return MEMPORT_EINVAL;
  int rc = memport__os_port_send(port, msg, deadline);
  if (rc != 0)
    return rc;
  /* The peer holds its own copies now. A backend that consumed the OS handles while sending
   * (Mach move rights) has already forgotten them; whatever is left is ours to close. */
  memport__msg_drop_handles(msg);
  return 0;
}

int memport_port_recv(memport_port_t *port, memport_msg_t *msg, int64_t timeout_ns) {
  if (port == NULL || msg == NULL)
    return MEMPORT_EINVAL;
  return memport__nowait_code(memport__port_recv(port, msg, memport__deadline(timeout_ns)), timeout_ns);
}

int memport__port_recv(memport_port_t *port, memport_msg_t *msg, uint64_t deadline) {
  memport_msg_clear(msg);
  int rc = memport__msg_recv(port, msg, deadline);
  if (rc != 0) {
    /* All-or-nothing: the backend released everything; make sure no stale bytes show. */
    msg->len = 0;
    msg->has_sender = false;
  }
  return rc;
}

int memport_port_peer(const memport_port_t *port, memport_cred_t *out) {
  if (port == NULL || out == NULL)
    return MEMPORT_EINVAL;
  *out = port->peer;
  return 0;
}

int memport_port_pollable(const memport_port_t *port, memport_os_handle_t *out) {
  if (port == NULL || out == NULL)
    return MEMPORT_EINVAL;
  *out = port->rx;
  return 0;
}
