/* SPDX-License-Identifier: MIT */
/* lib/linux/bell.c: a port's readiness handle: an epoll descriptor over the port's socket and an eventfd this process rings. */
#include "config.h"

#include "internal.h"
#include "os.h"

#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

int memport__os_bell_open(struct memport__bell *b, const memport_port_t *p) {
  b->handle = MEMPORT_OS_HANDLE_INVALID;
  b->self = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (b->self < 0) {
    int rc = memport__linux_err();
    b->self = MEMPORT_OS_HANDLE_INVALID;
    return rc;
  }
  b->handle = epoll_create1(EPOLL_CLOEXEC);
  int rc = 0;
  if (b->handle < 0)
    rc = memport__linux_err();
  /* Level-triggered: ready for as long as a message waits or the bell rings. */
  struct epoll_event ev = {.events = EPOLLIN};
  if (rc == 0 && epoll_ctl(b->handle, EPOLL_CTL_ADD, p->rx, &ev) != 0)
    rc = memport__linux_err();
  if (rc == 0 && epoll_ctl(b->handle, EPOLL_CTL_ADD, b->self, &ev) != 0)
    rc = memport__linux_err();
  if (rc < 0) {
    if (b->handle < 0)
      b->handle = MEMPORT_OS_HANDLE_INVALID;
    memport__os_bell_close(b);
  }
  return rc;
}

void memport__os_bell_close(struct memport__bell *b) {
  if (b->handle >= 0)
    memport__linux_close(b->handle);
  if (b->self >= 0)
    memport__linux_close(b->self);
  b->handle = MEMPORT_OS_HANDLE_INVALID;
  b->self = MEMPORT_OS_HANDLE_INVALID;
}

void memport__os_bell_ring(struct memport__bell *b) {
  uint64_t one = 1;
  /* Only a counter at its limit refuses (EAGAIN), and that is rung already. */
  (void)!write(b->self, &one, sizeof one);
}

void memport__os_bell_clear(struct memport__bell *b) {
  uint64_t v;
  (void)!read(b->self, &v, sizeof v); /* EAGAIN when it was not rung */
}
