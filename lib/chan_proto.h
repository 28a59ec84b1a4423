/* SPDX-License-Identifier: MIT */
/* chan_proto.h: the ring's shared-memory layout, the channel's record and control-message formats,
 * and the internal ring interface the channel uses. Everything here is read by a peer we do not
 * trust, or written by one: the layout is fixed, little helpers validate, callers load once. */
#ifndef MEMPORT_CHAN_PROTO_H
#define MEMPORT_CHAN_PROTO_H

#include <stdatomic.h>
#include <stdint.h>

/* ------------------------------------------------------------------------------------------ */
/* Ring: control page layout (the first page of the control region).                          */

#define MEMPORT__RING_MAGIC 0x474e5252u /* "RRNG" */
#define MEMPORT__RING_VERSION 1u
#define MEMPORT__RING_LINE 128u             /* two cache lines: no adjacent-line prefetch sharing */
#define MEMPORT__RING_ALIGN 16u             /* records start on 16-byte boundaries */
#define MEMPORT__RING_HDR 16u               /* bytes of record header */
#define MEMPORT__RING_MAX_CAPACITY (1u << 30) /* data area limit (records carry 32-bit lengths) */
#define MEMPORT__REL_QUEUE 256u             /* entries of the channel's release queue */

/* Bits of the wait words. A sleeper sets them; the other side clears them by exchange and acts. */
#define MEMPORT__WAIT_SEM  1u /* asleep (or about to be) on the semaphore: signal it */
#define MEMPORT__WAIT_PORT 2u /* consumer only: send a wake message over the channel's port */

/* Offsets in the control page. Positions are 64-bit byte counts that only grow; a record at
 * position p starts at data[p % capacity] and, the data area being mapped twice back to back,
 * is contiguous even when it crosses the end. */
struct memport__ring_shared {
  uint32_t magic;    /* MEMPORT__RING_MAGIC, written at creation */
  uint32_t version;  /* MEMPORT__RING_VERSION */
  uint64_t capacity; /* informational: importers use the data region's size */
  unsigned char pad0[MEMPORT__RING_LINE - 16];
  _Atomic uint64_t prod; /* written by the producer only: end of the last committed record */
  unsigned char pad1[MEMPORT__RING_LINE - 8];
  _Atomic uint64_t cons; /* written by the consumer only: end of the last released record */
  unsigned char pad2[MEMPORT__RING_LINE - 8];
  _Atomic uint32_t cons_wait; /* consumer waiting for data: MEMPORT__WAIT_* bits */
  unsigned char pad3[MEMPORT__RING_LINE - 4];
  _Atomic uint32_t prod_wait; /* producer waiting for space: MEMPORT__WAIT_SEM */
  unsigned char pad4[MEMPORT__RING_LINE - 4];
  /* Channel only: the release queue. Pool buffers of the ring's CONSUMER that the ring's producer
   * has finished with travel back in the same direction as the ring's records, through this
   * single-producer single-consumer queue of (gen << 32 | index) entries, without a system call.
   * The consumer sets rel_wait before it sleeps waiting for a release; the producer, seeing it,
   * clears it and sends MEMPORT__CTL_WAKE over the port. */
  _Atomic uint64_t rel_tail; /* written by the ring's producer: entries pushed */
  unsigned char pad5[MEMPORT__RING_LINE - 8];
  _Atomic uint64_t rel_head; /* written by the ring's consumer: entries taken */
  unsigned char pad6[MEMPORT__RING_LINE - 8];
  _Atomic uint32_t rel_wait; /* MEMPORT__WAIT_PORT while the consumer waits for a release */
  unsigned char pad7[MEMPORT__RING_LINE - 4];
  _Atomic uint64_t rel[MEMPORT__REL_QUEUE];
};

/* The header in front of every record (16 bytes, so payloads are 16-byte aligned). The record
 * occupies MEMPORT__RING_HDR + len rounded up to MEMPORT__RING_ALIGN bytes. */
struct memport__ring_rec {
  uint32_t len;  /* payload bytes */
  uint32_t type; /* MEMPORT__REC_* */
  uint32_t reserved[2];
};

/* Record types. The public ring API writes and accepts only MEMPORT__REC_DATA. */
#define MEMPORT__REC_DATA   0u
#define MEMPORT__REC_INLINE 1u /* channel: the payload is the message */
#define MEMPORT__REC_POOL   2u /* channel: struct memport__rec_pool, the message is in the sender's pool */
#define MEMPORT__REC_BLOB   3u /* channel: struct memport__rec_blob, the message is a one-off region */

struct memport__rec_pool {
  uint32_t index;  /* pool buffer */
  uint32_t gen;    /* the sender's generation of that buffer, echoed in the release */
  uint64_t offset; /* of the message inside the buffer */
  uint64_t len;    /* of the message */
};

struct memport__rec_blob {
  uint32_t seq; /* n-th oversized message of this direction, from 0 */
  uint32_t reserved;
  uint64_t len; /* of the message */
};

/* ------------------------------------------------------------------------------------------ */
/* Channel control messages over the port. All start with this header.                        */

#define MEMPORT__CTL_MAGIC 0x4843504du /* "MPCH" */
#define MEMPORT__CHAN_VERSION 1u
#define MEMPORT__CTL_HELLO   1u /* handshake: ring handles (4) and, when pool_buffers > 0, the pool (1) */
#define MEMPORT__CTL_WAKE    2u /* a record waits (the consumer asked through MEMPORT__WAIT_PORT) */
#define MEMPORT__CTL_RELEASE 3u /* pool buffers given back to their owner */
#define MEMPORT__CTL_BLOB    4u /* one read-only region holding an oversized message */

#define MEMPORT__CHAN_MAX_POOL_BUFFERS 4096u
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

/* ------------------------------------------------------------------------------------------ */
/* Internal ring interface (lib/ring.c), for the channel. Waits take the caller's relative
 * timeout (MEMPORT_NOWAIT: MEMPORT_EAGAIN at once) and, when several steps share one, an absolute
 * deadline (memport__deadline); deadline 0 means "timeout_ns from the moment a wait starts".   */
#ifdef MEMPORT_BUILDING
/* A hint to the CPU inside a spin loop (both ring ends and the channel spin). */
static inline void memport__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  __asm__ __volatile__("yield" ::: "memory");
#else
  atomic_signal_fence(memory_order_seq_cst);
#endif
}

struct memport_ring;
/* Called between sleeping slices of every wait: non-zero ends the wait with that code. */
MEMPORT_HIDDEN void memport__ring_set_hook(struct memport_ring *r, int (*fn)(void *arg), void *arg,
                                           uint64_t slice_ns);
MEMPORT_HIDDEN int memport__ring_reserve(struct memport_ring *r, size_t len, void **ptr, int64_t timeout_ns,
                                         uint64_t deadline);
/* Returns 1 when the consumer asked to be woken through the port, else 0 (or an error). */
MEMPORT_HIDDEN int memport__ring_commit(struct memport_ring *r, size_t len, uint32_t type);
MEMPORT_HIDDEN int memport__ring_peek(struct memport_ring *r, const void **ptr, size_t *len, uint32_t *type,
                                      int64_t timeout_ns, uint64_t deadline);
MEMPORT_HIDDEN int memport__ring_release(struct memport_ring *r);
/* Consumer: ask for MEMPORT__WAIT_PORT, then report whether a record is already waiting (1/0). */
MEMPORT_HIDDEN int memport__ring_arm_port_wake(struct memport_ring *r);
/* Consumer: 1 if a record waits now, 0 if not, or an error. */
MEMPORT_HIDDEN int memport__ring_readable(struct memport_ring *r);
/* Producer: abandon the current reservation. */
MEMPORT_HIDDEN void memport__ring_unreserve(struct memport_ring *r);
/* Producer: the position after the last committed record; wait until the consumer has released
 * everything before `pos` (a position this producer had reached). */
MEMPORT_HIDDEN uint64_t memport__ring_produced(const struct memport_ring *r);
MEMPORT_HIDDEN int memport__ring_wait_consumed(struct memport_ring *r, uint64_t pos, int64_t timeout_ns,
                                               uint64_t deadline);
MEMPORT_HIDDEN void memport__ring_set_policy(struct memport_ring *r, int policy, uint64_t spin_ns);
/* Export for a peer that only consumes (a read-only data region), and that peer's import (the
 * data area mapped read-only; the object must never produce). */
MEMPORT_HIDDEN int memport__ring_export_rx(struct memport_ring *r, memport_msg_t *msg);
MEMPORT_HIDDEN int memport__ring_import_rx(struct memport_ring **out, memport_msg_t *msg, size_t first);
/* The mapped control page (for the channel's release queue). */
MEMPORT_HIDDEN struct memport__ring_shared *memport__ring_ctrl(struct memport_ring *r);
#endif

#endif /* MEMPORT_CHAN_PROTO_H */
