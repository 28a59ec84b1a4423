/* SPDX-License-Identifier: MIT */
/* chan.h: the channel object and the functions its files (chan, chan_ctl, chan_pool, chan_blob) share. */
#ifndef MEMPORT_CHAN_H
#define MEMPORT_CHAN_H

#include "internal.h"
#include "chan_proto.h"
#include "pool.h"
#include "ring.h"
#include "wait.h"

#define MEMPORT__CHAN_SLICE_NS 20000000u /* waits look at the port this often */
#define MEMPORT__CHAN_ACCEPT_GRACE_NS 1000000000LL /* memport_chan_accept: least wait for a HELLO */

/* Tags in memport_buf_t.priv[0]: a magic in the high half, the kind and a pool index below. */
#define MEMPORT__BUF_MAGIC 0x4d504246u /* "MPBF" */
#define MEMPORT__BUF_RX_INLINE 1u
#define MEMPORT__BUF_RX_POOL 2u
#define MEMPORT__BUF_RX_BLOB 3u
#define MEMPORT__BUF_TX_POOL 4u
#define MEMPORT__BUF_TX_BLOB 5u
#define MEMPORT__BUF_TAG(kind, index) \
  (((uint64_t)MEMPORT__BUF_MAGIC << 32) | ((uint64_t)(kind) << 24) | (uint64_t)(index))
#define MEMPORT__BUF_KIND(tag) ((((tag) >> 32) == MEMPORT__BUF_MAGIC) ? (unsigned)(((tag) >> 24) & 0xffu) : 0u)
#define MEMPORT__BUF_INDEX(tag) ((uint32_t)((tag) & 0xffffffu))

/* Buffers handed to the application (memport_buf_t) carry a ticket in priv[1], drawn from the
 * endpoint's counter and kept here too: a buffer whose ticket is not the one kept for its slot (a
 * copy taken before it was released, sent or freed) is refused with MEMPORT_EINVAL. Private to
 * the endpoint: no shared memory, no system call. priv[2] is the channel. */
struct memport__chan_tx_loan { /* one of our pool buffers, allocated by the application */
  uint64_t ticket;             /* 0: not allocated */
  size_t len;                  /* as allocated: send_buf may lower it, never raise it */
};
struct memport__chan_blob_held { /* a one-off region the application holds */
  uint64_t ticket;               /* 0: free slot */
  unsigned kind;                 /* MEMPORT__BUF_RX_BLOB or MEMPORT__BUF_TX_BLOB */
  void *map;
  size_t maplen;
  size_t len;                 /* TX: as allocated */
  memport_region_t *region;   /* TX: the region, until sent or freed */
};
#define MEMPORT__CHAN_MAX_HELD_BLOBS (1u << 24) /* MEMPORT__BUF_INDEX's range */

/* Statistics, private to the endpoint (memport_chan_stats). Paths: 0 ring, 1 pool, 2 one-off. */
struct memport__chan_counters {
  uint64_t tx_msgs[3], tx_bytes[3];
  uint64_t rx_msgs[3], rx_bytes[3];
  uint64_t oneoff_fallbacks, oneoff_refused;
  uint64_t wakes_sent, wakes_received;
  uint64_t tx_handle_msgs, tx_handles, rx_handle_msgs, rx_handles;
};

/* The handles of one message, received over the port ahead of its ring record (chan_handles.c). */
struct memport__chan_handles {
  uint32_t count;
  struct memport__handle h[]; /* count of them, owned */
};

/* What a message carried over the port brought, received ahead of its ring record: an oversized
 * message's region, or a message's handles. */
struct memport__chan_blob {
  memport_region_t *region; /* a one-off region; NULL with handles NULL: lost for want of
                               descriptors (memport__chan_pump), whatever it was */
  uint64_t len;
  struct memport__chan_handles *handles; /* a message's handles (region NULL) */
};

struct memport_chan {
  /* Control traffic over the port (chan_ctl.c). */
  memport_port_t *port;
  memport_cred_t peer;    /* the port's peer, as it was when the channel was made */
  memport_msg_t *ctl_out;   /* control messages with handles we send (HELLO, POOL, BLOB: sending side) */
  memport_msg_t *ctl_small; /* control messages without handles we send (WAKE, RELEASE: either side) */
  memport_msg_t *ctl_in;    /* control messages we receive */
  _Atomic int broken;       /* MEMPORT_EPROTO once the peer broke the protocol */
  _Atomic bool peer_gone;   /* a send or a receive on the port said the peer is gone */
  bool port_eof;            /* ... and everything it sent over the port has been read */
  uint64_t next_liveness_check; /* sends look at the port no more often than this */
  uint64_t next_probe;          /* when the port is not read (back-pressure): next liveness probe */

  /* Small messages: a ring per direction, and the link pages (chan_proto.h). */
  memport_ring_t *tx_ring; /* ours: we produce */
  memport_ring_t *rx_ring; /* the peer's: we consume */
  memport_region_t *tx_link_region;
  struct memport__chan_link *tx_link; /* ours: the peer asks for wakes, returns our pool here */
  struct memport__chan_link *rx_link; /* the peer's: we ask for wakes, return its pool here */
  size_t zerocopy_threshold;          /* larger messages go through a pool buffer */
  struct memport__wait_policy wait;
  bool holding_inline; /* the application holds the record at the head of rx_ring */
  uint64_t rx_inline_ticket; /* ... under this ticket */
  uint64_t next_tx_ticket;   /* the last ticket handed out by the sending side */
  uint64_t next_rx_ticket;   /* ... and by the receiving side */
  struct memport__chan_counters stats;
  unsigned flags; /* MEMPORT_CHAN_* of the options */

  /* Zero-copy (chan_pool.c): our pool, lent read-only to the peer, and the peer's pool. */
  struct memport__pool tx_pool;
  memport_region_t *tx_pool_lend;          /* its read-only handle until the HELLO takes it */
  struct memport__relq_owner tx_pool_returns;    /* in tx_link */
  struct memport__pool_view rx_pool;
  struct memport__relq_borrower rx_pool_returns; /* in rx_link */
  struct memport__ctl_release_entry *owed_releases; /* not yet sent (the queue was full) */
  _Atomic uint32_t owed_count;                      /* written under ctl_lock */
  _Atomic bool rx_pool_ready;                       /* rx_pool adopted (written under ctl_lock) */
  struct memport__ctl_release_entry *port_returns;  /* releases of our pool read from the port ... */
  uint32_t port_returns_count;                      /* ... (under ctl_lock), applied by the sending side */
  _Atomic bool port_returns_pending;
  bool tx_pool_reclaimed;                           /* the sending side took the pool back (peer gone) */
  struct memport__chan_tx_loan *tx_pool_loans; /* per buffer of tx_pool */
  uint64_t *rx_pool_tickets;                   /* per buffer of rx_pool held by the application */
  uint32_t tx_pool_want_count;                 /* our pool as configured: made when first needed */
  size_t tx_pool_want_size;

  /* Oversized messages (chan_blob.c) and messages with handles (chan_handles.c): both carried
   * over the port, numbered and bounded together (chan_proto.h). */
  uint32_t tx_blob_seq;  /* sequence number of the next one we send */
  uint64_t tx_blobs_sent;
  uint64_t tx_blob_end[MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT]; /* TX ring position after each one's record */
  uint32_t rx_blob_seq;       /* next ring record's sequence number expected */
  uint32_t rx_blob_announced; /* next port message's sequence number expected */
  struct memport__chan_blob rx_blobs[MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT]; /* arrived, record not yet read */
  uint32_t rx_blobs_head, rx_blobs_count;
  struct memport__chan_blob_held *blobs_held; /* one-off regions the application holds */
  uint32_t blobs_held_cap;

  /* Readiness and orderly close (chan_ready.c). */
  struct memport__bell bell; /* the pollable handle (made on first use): the port, or rung by us */
  bool bell_rung;            /* we rang it and have not cleared it since */
  bool tx_want_pool;         /* a send failed for want of a pool buffer ... */
  uint64_t tx_want_space;    /* ... or of this many free ring bytes (0: none) */
  int tx_end;                /* 0, or MEMPORT_ECLOSED once we shut our sending down */
  bool rx_closed;            /* the peer closed its direction (its link page said so) ... */
  bool peer_closed_all;      /* ... and the whole channel */
  bool rx_end_told;          /* a receive returned MEMPORT_ECLOSED: the ended side no longer makes
                                the handle ready */
  uint64_t rx_close_pos;     /* where its records end */
  pid_t owner;               /* the process whose memport_chan_close announces a close (0: none,
                                for memport_chan_pair ends: fork decides who uses them) */

  /* Threads (chan_lock.c): one sending and one receiving thread may use the endpoint at once. */
  _Atomic unsigned tx_busy, rx_busy; /* a call of that direction is running (MEMPORT_EBUSY) */
  pthread_mutex_t ctl_lock;          /* recursive: the port, the bell, the state both sides share */
  unsigned ctl_depth;                /* under ctl_lock: its recursion depth */
  _Atomic bool wake_owed;            /* a wake could not take ctl_lock: its holder sends it */
};

/* A fresh ticket for a buffer handed to the application, by the sending or the receiving side. */
static inline uint64_t memport__chan_tx_ticket(memport_chan_t *ch) { return ++ch->next_tx_ticket; }
static inline uint64_t memport__chan_rx_ticket(memport_chan_t *ch) { return ++ch->next_rx_ticket; }

/* chan_lock.c: threads. Each public call of a direction holds that direction's busy flag (one
 * uncontended atomic exchange; a second call of the same direction gets MEMPORT_EBUSY); state both
 * directions touch (the port and its messages, the bell, the close, the one-off table, releases
 * read from the port, the pool announcement) is used under ctl_lock, a recursive mutex taken only
 * off the fast path. Nothing under ctl_lock waits longer than a short slice. */
MEMPORT_HIDDEN int memport__chan_lock_init(memport_chan_t *ch);
MEMPORT_HIDDEN void memport__chan_lock_fini(memport_chan_t *ch);
MEMPORT_HIDDEN void memport__chan_lock(memport_chan_t *ch);
/* Unlock; the outermost unlock sends a wake another thread could not send (wake_owed). */
MEMPORT_HIDDEN void memport__chan_unlock(memport_chan_t *ch);
static inline int memport__chan_enter(_Atomic unsigned *busy) {
  return atomic_exchange_explicit(busy, 1u, memory_order_acquire) != 0 ? MEMPORT_EBUSY : 0;
}
static inline void memport__chan_leave(_Atomic unsigned *busy) { atomic_store_explicit(busy, 0u, memory_order_release); }
/* Blocking port sends and receives under ctl_lock wait at most this long at a time. */
#define MEMPORT__CHAN_LOCK_SLICE_NS 1000000u
static inline void memport__chan_buf_set(memport_chan_t *ch, memport_buf_t *buf, void *data, size_t len,
                                         unsigned kind, uint32_t index, uint64_t ticket) {
  buf->data = data;
  buf->len = len;
  buf->priv[0] = MEMPORT__BUF_TAG(kind, index);
  buf->priv[1] = ticket;
  buf->priv[2] = (uintptr_t)ch;
}

/* A validated view of the next record (chan.c). */
struct memport__chan_rec {
  uint32_t type;
  const void *ptr;
  size_t len; /* of the message */
  struct memport__rec_pool pool;
  struct memport__rec_blob blob;
  struct memport__rec_handles handles;
};

/* chan.c */
MEMPORT_HIDDEN void memport__chan_free(memport_chan_t *ch);
/* The peer broke the protocol: every later call fails with `err`; the port is closed at once. */
MEMPORT_HIDDEN int memport__chan_break(memport_chan_t *ch, int err);
/* A ring's MEMPORT_EPROTO breaks the channel; other codes pass. */
MEMPORT_HIDDEN int memport__chan_ring_error(memport_chan_t *ch, int rc);
/* Commit the reserved TX record and wake the peer through the port if it asked. */
MEMPORT_HIDDEN int memport__chan_commit(memport_chan_t *ch, size_t len, uint32_t type);
/* TX ring space, and waits for the peer to consume, in slices that look at the port between them. */
MEMPORT_HIDDEN int memport__chan_reserve(memport_chan_t *ch, size_t len, void **slot, uint64_t deadline);
MEMPORT_HIDDEN int memport__chan_wait_consumed(memport_chan_t *ch, uint64_t pos, uint64_t deadline);
/* The handshake in two halves (the server's non-blocking path, chan_accept.c). start: check the
 * options, make our side over `port` (taken, closed on failure) and send our HELLO without
 * waiting. finish: read the peer's HELLO until `deadline` (MEMPORT_ETIMEDOUT leaves `ch` as it
 * was, to be finished later; any other error leaves it to be freed). */
MEMPORT_HIDDEN int memport__chan_handshake_start(memport_chan_t **out, memport_port_t *port,
                                                 const memport_chan_opts_t *opts);
MEMPORT_HIDDEN int memport__chan_handshake_finish(memport_chan_t *ch, uint64_t deadline);
/* 0 when opts (NULL: the defaults) would be accepted, else MEMPORT_EINVAL. */
MEMPORT_HIDDEN int memport__chan_opts_valid(const memport_chan_opts_t *opts);

/* chan_ctl.c: control traffic. */
MEMPORT_HIDDEN int memport__chan_ctl_send(memport_chan_t *ch, memport_msg_t *msg, const void *bytes, size_t len,
                                          uint64_t deadline);
MEMPORT_HIDDEN void memport__chan_send_wake(memport_chan_t *ch);
MEMPORT_HIDDEN void memport__chan_peer_gone(memport_chan_t *ch);
/* Receive one control message (until deadline) and act on it: 0, MEMPORT_ETIMEDOUT/EAGAIN when
 * nothing came, MEMPORT_EPEER when the peer is gone, or an error. */
MEMPORT_HIDDEN int memport__chan_pump(memport_chan_t *ch, uint64_t deadline);
/* Read the control messages waiting now (bounded), send what we owe: 0, MEMPORT_EPEER or an error. */
MEMPORT_HIDDEN int memport__chan_drain(memport_chan_t *ch);
/* What the send that failed lacked (sending side; read by either under ctl_lock). */
MEMPORT_HIDDEN void memport__chan_tx_want(memport_chan_t *ch, uint64_t space, bool pool);
/* The send paths notice a dead peer without a system call per message. */
MEMPORT_HIDDEN int memport__chan_live_slow(memport_chan_t *ch, uint64_t now);
static inline int memport__chan_live(memport_chan_t *ch) {
  if (MEMPORT__UNLIKELY(ch->broken | ch->tx_end | (ch->tx_want_space != 0) | ch->tx_want_pool)) {
    int broken = ch->broken;
    if (broken | ch->tx_end)
      return broken ? broken : ch->tx_end;
    memport__chan_tx_want(ch, 0, false); /* a new attempt: what the last one lacked no longer makes the handle ready */
  }
  if (MEMPORT__UNLIKELY(ch->peer_gone))
    return MEMPORT_EPEER;
  uint64_t now = memport__now_ns();
  if (MEMPORT__LIKELY(now < ch->next_liveness_check))
    return 0;
  return memport__chan_live_slow(ch, now);
}

/* chan_ready.c: the pollable handle, level-triggered in effect, and the orderly close. */
/* Make the handle (once; memport_chan_pollable). */
MEMPORT_HIDDEN int memport__chan_ready_open(memport_chan_t *ch);
MEMPORT_HIDDEN void memport__chan_ready_close(memport_chan_t *ch);
/* Derive the handle's readiness from the state (call after reading the port): ring it when a
 * message waits, the receiving side has ended, or the send that failed could now succeed. */
MEMPORT_HIDDEN void memport__chan_ready_update(memport_chan_t *ch);
/* Nothing to receive now: ask for a wake, clear the handle, read the port, derive readiness. */
MEMPORT_HIDDEN void memport__chan_rx_idle(memport_chan_t *ch);
/* A send failed for want of what tx_want_* says: the same for the sending side. */
MEMPORT_HIDDEN void memport__chan_tx_idle(memport_chan_t *ch);
/* The RX ring is empty: MEMPORT_ECLOSED when the peer closed its direction and everything before
 * was received, MEMPORT_EPEER when it is gone, MEMPORT_EPROTO for a bogus close, 0 otherwise. */
MEMPORT_HIDDEN int memport__chan_rx_end(memport_chan_t *ch);
/* The code for a send to a peer that is gone: MEMPORT_ECLOSED after its orderly close, else rc. */
MEMPORT_HIDDEN int memport__chan_tx_code(memport_chan_t *ch, int rc);
/* memport_chan_close: tell the peer, through the link page, where our records end. */
MEMPORT_HIDDEN void memport__chan_close_announce(memport_chan_t *ch);
/* After releasing RX records: wake the sender through the port if it waits for space. */
static inline void memport__chan_released(memport_chan_t *ch) {
  _Atomic uint32_t *w = &ch->rx_link->space_wake;
  if (MEMPORT__UNLIKELY(atomic_load_explicit(w, memory_order_seq_cst) != 0) &&
      atomic_exchange_explicit(w, 0, memory_order_seq_cst) != 0)
    memport__chan_send_wake(ch);
}

/* chan_pool.c: zero-copy through pool buffers. */
MEMPORT_HIDDEN int memport__chan_pool_setup(memport_chan_t *ch, uint32_t count, size_t buf_size);
MEMPORT_HIDDEN int memport__chan_pool_adopt(memport_chan_t *ch, memport_msg_t *hello, size_t index, uint32_t count,
                                            size_t buf_size);
/* Control message MEMPORT__CTL_POOL arrived with the peer's pool. */
MEMPORT_HIDDEN int memport__chan_pool_arrived(memport_chan_t *ch, memport_msg_t *m, const unsigned char *b,
                                              size_t len);
MEMPORT_HIDDEN void memport__chan_pool_fini(memport_chan_t *ch);
/* Allocate one of our buffers (waiting for a release until deadline): MEMPORT_ENOENT when the
 * message does not fit a pool buffer (or there is no pool). */
MEMPORT_HIDDEN int memport__chan_pool_alloc(memport_chan_t *ch, size_t len, memport_buf_t *buf, uint64_t deadline);
MEMPORT_HIDDEN int memport__chan_pool_free(memport_chan_t *ch, memport_buf_t *buf);
MEMPORT_HIDDEN int memport__chan_pool_send(memport_chan_t *ch, memport_buf_t *buf, uint64_t deadline);
/* A release the peer sent over the port (its queue was full). */
MEMPORT_HIDDEN int memport__chan_pool_returned(memport_chan_t *ch, const unsigned char *b, size_t len);
/* Send the releases we owe over the port, never waiting. */
MEMPORT_HIDDEN int memport__chan_pool_flush(memport_chan_t *ch);
/* The record `rec` names a buffer of the peer's pool: validate and point at it (1), or 0. */
MEMPORT_HIDDEN int memport__chan_pool_find(memport_chan_t *ch, struct memport__chan_rec *rec, const void *p);
MEMPORT_HIDDEN void memport__chan_pool_hold(memport_chan_t *ch, const struct memport__chan_rec *rec);
MEMPORT_HIDDEN int memport__chan_pool_release(memport_chan_t *ch, uint32_t index);
/* A held buffer of the peer's pool handed to the application: its ticket. */
MEMPORT_HIDDEN uint64_t memport__chan_pool_hand_out(memport_chan_t *ch, uint32_t index);
/* `buf` is the copy of a held buffer of the peer's pool that was handed out (*index: which). */
MEMPORT_HIDDEN bool memport__chan_pool_held(const memport_chan_t *ch, const memport_buf_t *buf, uint32_t *index);

/* chan_blob.c: oversized messages in one-off regions. */
MEMPORT_HIDDEN int memport__chan_blob_alloc(memport_chan_t *ch, size_t len, memport_buf_t *buf);
/* MEMPORT_EINVAL unless `buf` is the copy handed out for a one-off region allocated here. */
MEMPORT_HIDDEN int memport__chan_blob_free(memport_chan_t *ch, memport_buf_t *buf);
/* Hand a received one-off region's mapping to the application / take it back (MEMPORT_EINVAL
 * unless `buf` is the copy handed out). */
MEMPORT_HIDDEN int memport__chan_blob_hold(memport_chan_t *ch, void *map, size_t maplen, size_t len,
                                           memport_buf_t *buf);
MEMPORT_HIDDEN int memport__chan_blob_release(memport_chan_t *ch, memport_buf_t *buf);
/* `buf` is the copy handed out for a received one-off region still held. */
MEMPORT_HIDDEN bool memport__chan_blob_held(memport_chan_t *ch, const memport_buf_t *buf);
/* Unmap and close what the application still holds (memport_chan_close). */
MEMPORT_HIDDEN void memport__chan_blob_held_fini(memport_chan_t *ch);
MEMPORT_HIDDEN int memport__chan_blob_send(memport_chan_t *ch, memport_buf_t *buf, uint64_t deadline);
/* Control message MEMPORT__CTL_BLOB arrived with its region. */
MEMPORT_HIDDEN int memport__chan_blob_arrived(memport_chan_t *ch, memport_msg_t *m, const unsigned char *b,
                                              size_t len);
/* The port dropped a message for want of descriptors: its oversized message is lost. */
MEMPORT_HIDDEN void memport__chan_blob_lost(memport_chan_t *ch);
/* Sending side of the bound on port messages in flight (chan_blob.c): wait for room, then note
 * where the announcing record of a message just sent ends. */
MEMPORT_HIDDEN int memport__chan_port_msg_room(memport_chan_t *ch, uint64_t deadline);
MEMPORT_HIDDEN void memport__chan_port_msg_sent(memport_chan_t *ch);
/* Queue what the next port message in sequence carried (a one-off region, a message's handles,
 * or neither when the port lost it), for the ring record that announces it. */
MEMPORT_HIDDEN void memport__chan_announced_push(memport_chan_t *ch, memport_region_t *region, size_t len,
                                                 struct memport__chan_handles *handles);
static inline bool memport__chan_blobs_full(const memport_chan_t *ch) { /* under ctl_lock */
  return ch->rx_blobs_count >= MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT;
}
/* The region of the oversized message `rec`, mapped. */
MEMPORT_HIDDEN int memport__chan_blob_take(memport_chan_t *ch, const struct memport__chan_rec *rec, void **map,
                                           size_t *maplen);
MEMPORT_HIDDEN void memport__chan_blob_fini(memport_chan_t *ch);
/* The entry at the head of rx_blobs is done with (its record's sequence number is passed). */
MEMPORT_HIDDEN void memport__chan_blob_pop(memport_chan_t *ch);

/* chan_handles.c: messages that carry handles. */
/* Control message MEMPORT__CTL_HANDLES arrived with its handles. */
MEMPORT_HIDDEN int memport__chan_handles_arrived(memport_chan_t *ch, memport_msg_t *m, const unsigned char *b,
                                                 size_t len);
/* The handles of the message `rec` (a MEMPORT__REC_HANDLES record at the head of the RX ring):
 * moved into `out` (cleared first), or closed when out is NULL. MEMPORT_EMFILE: they were lost for
 * want of descriptors, and the record is released (the message is lost). */
MEMPORT_HIDDEN int memport__chan_handles_take(memport_chan_t *ch, const struct memport__chan_rec *rec,
                                              memport_msg_t *out);
/* Close a queued entry's handles. */
MEMPORT_HIDDEN void memport__chan_handles_free(struct memport__chan_handles *h);
/* memport_chan_send_msg and memport_chan_send without the one-sender check (lib/chan.c holds the
 * send direction around them). */
MEMPORT_HIDDEN int memport__chan_send_msg_impl(memport_chan_t *chan, const void *data, size_t len,
                                               memport_msg_t *handles, unsigned flags, int64_t timeout_ns);
MEMPORT_HIDDEN int memport__chan_send_impl(memport_chan_t *chan, const void *data, size_t len, unsigned flags,
                                           int64_t timeout_ns);

#endif /* MEMPORT_CHAN_H */
