/* SPDX-License-Identifier: MIT */
/* fields.h: what the Darwin backend keeps in each object beyond its Mach names (included by internal.h). */
#ifndef MEMPORT_DARWIN_FIELDS_H
#define MEMPORT_DARWIN_FIELDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* `gen` is the fork generation the object's Mach names belong to (memport__darwin_stamp): names
 * copied into a fork child mean nothing there, so an object of an older generation is refused
 * (memport__darwin_mine). 0: the object holds no rights. */

struct memport__os_region {
  uintptr_t gen;
};

struct memport__os_sem {
  uintptr_t gen;
};

struct memport__os_port {
  uintptr_t gen;
  bool peer_gone; /* the no-senders notification of rx has been received: recv gives EPEER */
  size_t claim;   /* inherited through fork: index + 1 of its receive right in the fork record */
  uintptr_t dn_gen; /* the generation in which a dead-name notification on tx, sent to rx, was
                       requested (port.c); 0 or an older generation: none of this process */
  bool dn_seen;   /* that notification was received and the reference it carries released */
};

struct memport__os_service {
  uintptr_t gen;
  int lock_fd_plus1; /* the registry lock file descriptor + 1; 0 when none (zeroed objects) */
};

#endif /* MEMPORT_DARWIN_FIELDS_H */
