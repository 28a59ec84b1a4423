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
  if (rc == 0 && p != NULL && epoll_ctl(b->handle, EPOLL_CTL_ADD, p->rx, &ev) != 0)
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

int memport__os_bell_add(struct memport__bell *b, memport_os_handle_t h) {
  struct epoll_event ev = {.events = EPOLLIN}; /* level-triggered, as the port of bell_open */
  return epoll_ctl(b->handle, EPOLL_CTL_ADD, h, &ev) != 0 ? memport__linux_err() : 0;
}

void memport__os_bell_remove(struct memport__bell *b, memport_os_handle_t h) {
  /* ENOENT (not there) is fine; a closed descriptor left the epoll set by itself. */
  struct epoll_event ev = {0};
  (void)epoll_ctl(b->handle, EPOLL_CTL_DEL, h, &ev);
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
