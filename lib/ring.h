/* SPDX-License-Identifier: MIT */
/* ring.h: the ring's shared-memory layout and the internal ring interface; the ring knows no user of it. */
#ifndef MEMPORT_RING_H
#define MEMPORT_RING_H

#include <stdatomic.h>
#include <stdint.h>

/* ------------------------------------------------------------------------------------------ */
/* Control page layout (the first page of the control region). Everything here is written by a  */
/* peer we do not trust: the layout is fixed, readers load each field once and check it.      */

#define MEMPORT__RING_MAGIC 0x474e5252u /* "RRNG" */
#define MEMPORT__RING_VERSION 2u        /* 2: the page holds the ring only (no channel state) */
#define MEMPORT__RING_LINE 128u             /* two cache lines: no adjacent-line prefetch sharing */
#define MEMPORT__RING_ALIGN 16u             /* records start on 16-byte boundaries */
#define MEMPORT__RING_HDR 16u               /* bytes of record header */
#define MEMPORT__RING_MAX_CAPACITY (1u << 30) /* data area limit (records carry 32-bit lengths) */

/* Bit of a wait word (the same as lib/wait.h): its owner sleeps, or is about to, on its semaphore. */
#define MEMPORT__WAIT_SEM 1u

/* Positions are 64-bit byte counts that only grow; a record at position p starts at
 * data[p % capacity] and, the data area being mapped twice back to back, is contiguous even when
 * it crosses the end. The wait words hold MEMPORT__WAIT_SEM (lib/wait.h). */
struct memport__ring_shared {
  uint32_t magic;    /* MEMPORT__RING_MAGIC, written at creation */
  uint32_t version;  /* MEMPORT__RING_VERSION */
  uint64_t capacity; /* informational: importers use the data region's size */
  unsigned char pad0[MEMPORT__RING_LINE - 16];
  _Atomic uint64_t prod; /* written by the producer only: end of the last committed record */
  unsigned char pad1[MEMPORT__RING_LINE - 8];
  _Atomic uint64_t cons; /* written by the consumer only: end of the last released record */
  unsigned char pad2[MEMPORT__RING_LINE - 8];
  _Atomic uint32_t cons_wait; /* consumer asleep waiting for data */
  unsigned char pad3[MEMPORT__RING_LINE - 4];
  _Atomic uint32_t prod_wait; /* producer asleep waiting for space */
  unsigned char pad4[MEMPORT__RING_LINE - 4];
};

/* The header in front of every record (16 bytes, so payloads are 16-byte aligned). The record
 * occupies MEMPORT__RING_HDR + len rounded up to MEMPORT__RING_ALIGN bytes. */
struct memport__ring_rec {
  uint32_t len;  /* payload bytes */
  uint32_t type; /* chosen by the ring's user; the public ring API writes and accepts only 0 */
  uint32_t reserved[2];
};

#define MEMPORT__REC_DATA 0u /* the type of the public ring API's records */

/* ------------------------------------------------------------------------------------------ */
/* Internal interface (lib/ring.c). Waits take an absolute deadline (memport__deadline): 0 does  */
/* not wait, MEMPORT__NO_DEADLINE waits forever; a wait that gives up says MEMPORT_ETIMEDOUT.   */
#ifdef MEMPORT_BUILDING
#include "internal.h"

struct memport_ring;
MEMPORT_HIDDEN int memport__ring_reserve(struct memport_ring *r, size_t len, void **ptr, uint64_t deadline);
MEMPORT_HIDDEN int memport__ring_commit(struct memport_ring *r, size_t len, uint32_t type);
MEMPORT_HIDDEN int memport__ring_peek(struct memport_ring *r, const void **ptr, size_t *len, uint32_t *type,
                                      uint64_t deadline);
MEMPORT_HIDDEN int memport__ring_release(struct memport_ring *r);
/* Consumer: 1 if a record waits now, 0 if not, or an error. */
MEMPORT_HIDDEN int memport__ring_readable(struct memport_ring *r);
/* Producer: abandon the current reservation. */
MEMPORT_HIDDEN void memport__ring_unreserve(struct memport_ring *r);
/* Producer: the position after the last committed record; wait until the consumer has released
 * everything before `pos` (a position this producer had reached). */
MEMPORT_HIDDEN uint64_t memport__ring_produced(const struct memport_ring *r);
MEMPORT_HIDDEN int memport__ring_wait_consumed(struct memport_ring *r, uint64_t pos, uint64_t deadline);
/* Bytes committed and not yet released, for statistics: the producer's view (tx) or the
 * consumer's (rx); the other end's position is loaded once and kept within what is possible. */
MEMPORT_HIDDEN uint64_t memport__ring_tx_fill(const struct memport_ring *r);
MEMPORT_HIDDEN uint64_t memport__ring_rx_fill(const struct memport_ring *r);
MEMPORT_HIDDEN uint64_t memport__ring_capacity(const struct memport_ring *r);
/* Producer: bytes of ring a record of `len` bytes takes; 1 when `space` bytes are free now, 0 if
 * not, or an error; the free bytes once the consumer is past `pos` (a position we reached). */
MEMPORT_HIDDEN uint64_t memport__ring_record_space(size_t len);
MEMPORT_HIDDEN int memport__ring_writable(struct memport_ring *r, uint64_t space);
MEMPORT_HIDDEN uint64_t memport__ring_space_after(const struct memport_ring *r, uint64_t pos);
/* Consumer: where the producer said its records end (`end`, peer-given): MEMPORT_EPROTO when it is
 * misaligned, behind what we released or ahead of what was produced; 1 when everything before it
 * is released and nothing more was produced, 0 when records before it remain, MEMPORT_EPROTO when
 * records were produced after it. */
MEMPORT_HIDDEN int memport__ring_end_check(struct memport_ring *r, uint64_t end);
/* The same questions from another thread than the one that produces (or consumes): the shared
 * positions alone, never the private ones. Readable / writable may answer yes spuriously when the
 * other end is hostile (the next call of the owning thread finds the error); end_check is as
 * above but against the shared positions. */
MEMPORT_HIDDEN int memport__ring_readable_shared(struct memport_ring *r);
MEMPORT_HIDDEN int memport__ring_writable_shared(struct memport_ring *r, uint64_t space);
MEMPORT_HIDDEN int memport__ring_end_check_shared(struct memport_ring *r, uint64_t end);
MEMPORT_HIDDEN int memport__ring_at_end(struct memport_ring *r, uint64_t end);
MEMPORT_HIDDEN void memport__ring_set_policy(struct memport_ring *r, int policy, uint64_t spin_ns);
/* Export for a peer that only consumes (a read-only data region), and that peer's import (the
 * data area mapped read-only; the object must never produce). */
MEMPORT_HIDDEN int memport__ring_export_rx(struct memport_ring *r, memport_msg_t *msg);
MEMPORT_HIDDEN int memport__ring_import_rx(struct memport_ring **out, memport_msg_t *msg, size_t first);
#endif

#endif /* MEMPORT_RING_H */
