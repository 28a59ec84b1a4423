/* SPDX-License-Identifier: MIT */
/* chan_proto.h: the channel's wire formats: its link page, ring records and control messages.
 * Everything here is read by a peer we do not trust, or written by one: the layout is fixed,
 * readers load each field once and check it. */
#ifndef MEMPORT_CHAN_PROTO_H
#define MEMPORT_CHAN_PROTO_H

#include <stdatomic.h>
#include <stdint.h>

#include "ring.h"
#include "pool.h"

/* ------------------------------------------------------------------------------------------ */
/* The link page: one page of shared memory per direction, made by that direction's sender and
 * sent in its HELLO, mapped read-write by both ends. It holds what the channel shares beyond the
 * ring and the pool, so that neither of those knows about the channel. */
#define MEMPORT__CHAN_LINE 128u
struct memport__chan_link {
  /* Set (nonzero) by the receiver before it waits on the port instead of the ring; the sender,
   * after committing a record, clears it by exchange and sends MEMPORT__CTL_WAKE. */
  _Atomic uint32_t port_wake;
  unsigned char pad0[MEMPORT__CHAN_LINE - 4];
  /* The receiver gives the sender's pool buffers back through this queue (lib/pool.h); the
   * sender, waiting for one, sets its owner_wait and is woken with MEMPORT__CTL_WAKE. */
  struct memport__relq_shared pool_releases;
  /* Set (nonzero) by the sender when a send failed for want of ring space and it waits on its
   * port; the receiver, after releasing a record, clears it by exchange and sends MEMPORT__CTL_WAKE. */
  _Atomic uint32_t space_wake;
  unsigned char pad1[MEMPORT__CHAN_LINE - 4];
  /* Written once by the sender when it closes its direction: 0 while open, else the TX ring
   * position after its last record, with MEMPORT__CHAN_CLOSED_SEND (it sends no more) and
   * MEMPORT__CHAN_CLOSED_ALL (it closed the channel) in the low bits (positions are multiples of
   * 16). The receiver loads it once, checks it against the ring and latches it. */
  _Atomic uint64_t closed;
};
#define MEMPORT__CHAN_CLOSED_SEND 1u
#define MEMPORT__CHAN_CLOSED_ALL 2u

/* Channel record types (the ring's record type field). */
#define MEMPORT__REC_INLINE 1u /* channel: the payload is the message */
#define MEMPORT__REC_POOL   2u /* channel: struct memport__rec_pool, the message is in the sender's pool */
#define MEMPORT__REC_BLOB   3u /* channel: struct memport__rec_blob, the message is a one-off region */
#define MEMPORT__REC_HANDLES 4u /* channel: struct memport__rec_handles then the message's bytes; its
                                 * handles came over the port (MEMPORT__CTL_HANDLES) */

struct memport__rec_pool {
  uint32_t index;  /* pool buffer */
  uint32_t gen;    /* the sender's generation of that buffer, echoed in the release */
  uint64_t offset; /* of the message inside the buffer */
  uint64_t len;    /* of the message */
};

/* Sequence numbers of BLOB and HANDLES records are one count per direction: the n-th message
 * whose handles travel over the port (a one-off region, or the handles of a message), from 0. A
 * port message dropped for want of descriptors is thereby matched with its record whatever its
 * type. */
struct memport__rec_blob {
  uint32_t seq; /* n-th message of this direction carried over the port, from 0 */
  uint32_t reserved;
  uint64_t len; /* of the message */
};

struct memport__rec_handles {
  uint32_t seq;   /* as struct memport__rec_blob's */
  uint32_t count; /* handles (1 .. MEMPORT_MSG_MAX_HANDLES) */
  /* the message's bytes follow */
};

/* ------------------------------------------------------------------------------------------ */
/* Channel control messages over the port. All start with this header.                        */

#define MEMPORT__CTL_MAGIC 0x4843504du /* "MPCH" */
#define MEMPORT__CHAN_VERSION 5u /* 2: the link page (wake request, release queue); 3: MEMPORT__CTL_POOL; 4: space wake, close position; 5: MEMPORT__CTL_HANDLES, one sequence for BLOB and HANDLES */
#define MEMPORT__CTL_HELLO   1u /* handshake: ring handles (4), the pool when pool_buffers > 0 (1), the link page (1) */
#define MEMPORT__CTL_WAKE    2u /* a record or a release waits (asked for through the link page) */
#define MEMPORT__CTL_RELEASE 3u /* pool buffers given back to their owner */
#define MEMPORT__CTL_BLOB    4u /* one read-only region holding an oversized message */
#define MEMPORT__CTL_POOL    5u /* the sender's pool (one read-only region), made when first needed: sent
                                 * once, ahead of the first record naming one of its buffers, and only
                                 * when the HELLO carried no pool */
#define MEMPORT__CTL_HANDLES 6u /* the handles (1 .. MEMPORT_MSG_MAX_HANDLES) of the message whose
                                 * struct memport__rec_handles record follows in the ring */

/* Messages carried over the port (one-off regions and handles together) sent and not yet consumed. */
#define MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT 64u

struct memport__ctl_hdr {
  uint32_t magic; /* MEMPORT__CTL_MAGIC */
  uint16_t type;  /* MEMPORT__CTL_* */
  uint16_t reserved;
};

struct memport__ctl_hello {
  struct memport__ctl_hdr hdr;
  uint32_t version;          /* MEMPORT__CHAN_VERSION */
  uint32_t pool_buffers;     /* buffers in the sender's pool (0: none, no pool handle) */
  uint64_t ring_capacity;    /* bytes of the sender's TX ring data area */
  uint64_t pool_buffer_size; /* bytes of each pool buffer (a page multiple) */
  uint64_t reserved;
};

struct memport__ctl_release_entry {
  uint32_t index;
  uint32_t gen;
};

struct memport__ctl_release {
  struct memport__ctl_hdr hdr;
  uint32_t count; /* entries that follow */
  uint32_t reserved;
  /* struct memport__ctl_release_entry entries[count]; */
};

struct memport__ctl_blob {
  struct memport__ctl_hdr hdr;
  uint32_t seq; /* matches the struct memport__rec_blob record that follows in the ring */
  uint32_t reserved;
  uint64_t len;
};

struct memport__ctl_pool {
  struct memport__ctl_hdr hdr;
  uint32_t buffers; /* as struct memport__ctl_hello's pool_buffers (never 0) */
  uint32_t reserved;
  uint64_t buffer_size;
};

struct memport__ctl_handles {
  struct memport__ctl_hdr hdr;
  uint32_t seq;   /* matches the struct memport__rec_handles record that follows in the ring */
  uint32_t count; /* handles attached, and kind bytes that follow */
  /* uint8_t kinds[count]: MEMPORT_HANDLE_* of each attached handle, in order */
};

#endif /* MEMPORT_CHAN_PROTO_H */
