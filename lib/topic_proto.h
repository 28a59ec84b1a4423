/* SPDX-License-Identifier: MIT */
/* topic_proto.h: the topic's wire formats: a subscriber's lane (shared memory) and the handshake messages.
 * A lane is shared by the publisher and one subscriber only; the publisher never reads back what a
 * subscriber could have changed except head, the release queue and the wait word, each loaded once
 * and checked. A subscriber scribbling its lane can only hurt itself. */
#ifndef MEMPORT_TOPIC_PROTO_H
#define MEMPORT_TOPIC_PROTO_H

#include <stdatomic.h>
#include <stdint.h>

#include "pool.h"

#define MEMPORT__TOPIC_LINE 128u
#define MEMPORT__LANE_MAGIC 0x4c54504du /* "MPTL" */
#define MEMPORT__TOPIC_VERSION 1u

/* Bits of the lane's wait words (sub_wait, pub_wait). MEMPORT__WAIT_SEM (lib/wait.h, 1u): the
 * word's owner sleeps on its semaphore. MEMPORT__TOPIC_WAKE_PORT: the owner asks for a WAKE
 * message on the port (its pollable handle waits). The other side clears the word by exchange
 * and does what the bits ask. */
#define MEMPORT__TOPIC_WAKE_PORT 2u

/* lane->closed: 0 open; 1 + the position after the last message at the publisher's orderly close;
 * MEMPORT__LANE_DROPPED when the publisher dropped this subscriber for breaking the protocol. */
#define MEMPORT__LANE_DROPPED UINT64_MAX

struct memport__lane {
  uint32_t magic, version, depth, slot_size; /* written at creation; checked once by the subscriber */
  unsigned char pad0[MEMPORT__TOPIC_LINE - 16];
  _Atomic uint64_t tail; /* publisher: positions published into this lane */
  unsigned char pad1[MEMPORT__TOPIC_LINE - 8];
  _Atomic uint64_t head; /* consumed: the subscriber CASes h -> h+1 to take position h; under
                            drop-oldest the publisher CASes it too, to drop the oldest */
  unsigned char pad2[MEMPORT__TOPIC_LINE - 8];
  _Atomic uint32_t sub_wait; /* the subscriber's wait word */
  unsigned char pad3[MEMPORT__TOPIC_LINE - 4];
  _Atomic uint32_t pub_wait; /* the publisher's wait word (room in the lane, a release) */
  unsigned char pad4[MEMPORT__TOPIC_LINE - 4];
  _Atomic uint64_t dropped; /* publisher: messages dropped for this subscriber */
  unsigned char pad5[MEMPORT__TOPIC_LINE - 8];
  _Atomic uint64_t closed; /* see MEMPORT__LANE_DROPPED */
  unsigned char pad6[MEMPORT__TOPIC_LINE - 8];
  struct memport__relq_shared relq; /* subscriber -> publisher: pool buffers released */
  /* slots[depth] of slot_size bytes follow */
};

/* One queue position. */
#define MEMPORT__SLOT_INLINE 1u /* the payload follows the header */
#define MEMPORT__SLOT_POOL   2u /* the message is [offset, offset+len) of pool buffer `index` */
struct memport__lane_slot {
  uint32_t kind;
  uint32_t len;
  uint32_t index; /* pool buffer */
  uint32_t gen;   /* its generation, echoed in the release */
  uint64_t seq;   /* publisher's message number */
  uint64_t offset;
  /* unsigned char data[slot_size - 32]: an inline payload */
};
#define MEMPORT__SLOT_HDR 32u
#define MEMPORT__INLINE_MAX 4096u /* largest inline_max */
#define MEMPORT__DEPTH_MAX 4096u

/* Bytes of one slot holding up to inline_max payload bytes, and of a whole lane (not rounded). */
static inline uint32_t memport__slot_size(uint64_t inline_max) {
  return (uint32_t)((MEMPORT__SLOT_HDR + inline_max + 63u) & ~(uint64_t)63u);
}
static inline uint64_t memport__lane_bytes(uint64_t depth, uint64_t slot_size) {
  return sizeof(struct memport__lane) + depth * slot_size;
}
static inline struct memport__lane_slot *memport__lane_slot_at(struct memport__lane *l, uint32_t slot_size,
                                                               uint32_t depth, uint64_t pos) {
  return (struct memport__lane_slot *)((unsigned char *)(l + 1) + (size_t)(pos % depth) * slot_size);
}

/* ------------------------------------------------------------------------------------------ */
/* Messages over a subscriber's port. All start with this header.                              */
#define MEMPORT__TOPIC_MAGIC 0x5054504du /* "MPTP" */
#define MEMPORT__TOPIC_HELLO   1u /* subscriber -> publisher, first: its semaphore (1 handle) */
#define MEMPORT__TOPIC_WELCOME 2u /* publisher -> subscriber: status; if 0 the lane (RW), the pool (RO) and
                                     the publisher's semaphore (3 handles) */
#define MEMPORT__TOPIC_WAKE    3u /* either way, no handle: look at the lane (asked through a wait word) */

struct memport__topic_hdr {
  uint32_t magic;   /* MEMPORT__TOPIC_MAGIC */
  uint16_t type;    /* MEMPORT__TOPIC_* */
  uint16_t version; /* MEMPORT__TOPIC_VERSION */
};

struct memport__topic_welcome {
  struct memport__topic_hdr hdr;
  int32_t status; /* 0, or MEMPORT_EPERM (refused; no handles) */
  uint32_t depth;
  uint32_t slot_size;
  uint32_t buffers;
  uint64_t buffer_size;
  uint64_t inline_max;
};

#endif /* MEMPORT_TOPIC_PROTO_H */
