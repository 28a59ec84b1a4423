/* SPDX-License-Identifier: MIT */
/* fields.h: what the Linux backend keeps in each object beyond its OS handle (included by internal.h). */
#ifndef MEMPORT_LINUX_FIELDS_H
#define MEMPORT_LINUX_FIELDS_H

struct memport__futex_sem;
struct memport__linux_service;

struct memport__os_region {
  char unused; /* a memfd says everything: nothing more to keep */
};

struct memport__os_sem {
  struct memport__futex_sem *page; /* the futex page of the memfd, mapped shared; NULL when none */
};

struct memport__os_port {
  char unused; /* the socket says everything: nothing more to keep */
};

struct memport__os_service {
  struct memport__linux_service *state; /* listening socket's directory entries and lock (name.c) */
};

#endif /* MEMPORT_LINUX_FIELDS_H */
