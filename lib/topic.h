/* SPDX-License-Identifier: MIT */
/* topic.h: the topic's publisher and subscriber objects and what their files (topic_lane, topic_pub, topic_sub) share. */
#ifndef MEMPORT_TOPIC_H
#define MEMPORT_TOPIC_H

#include "internal.h"
#include "pool.h"
#include "topic_proto.h"
#include "wait.h"

#define MEMPORT__TOPIC_SLICE_NS 20000000u     /* blocked waits look at ports this often */
#define MEMPORT__TOPIC_LIVE_NS 10000000u      /* loan/publish look at joins and deaths this often */
#define MEMPORT__TOPIC_PENDING_MAX 64u        /* connections whose HELLO has not come yet */
#define MEMPORT__TOPIC_PENDING_NS 5000000000LL /* a silent connection is dropped after this */
#define MEMPORT__TOPIC_DRAIN_MAX 64u          /* port messages read per subscriber per look */

/* Tags in memport_buf_t.priv[0] (as the channel's: a magic, a kind, an index). */
#define MEMPORT__TBUF_MAGIC 0x4d505442u /* "MPTB" */
#define MEMPORT__TBUF_LOAN 1u           /* publisher: a loaned pool buffer */
#define MEMPORT__TBUF_POOL 2u           /* subscriber: a view of a pool buffer */
#define MEMPORT__TBUF_INLINE 3u         /* subscriber: a private copy of an inline message */
#define MEMPORT__TBUF_TAG(kind, index) \
  (((uint64_t)MEMPORT__TBUF_MAGIC << 32) | ((uint64_t)(kind) << 24) | (uint64_t)(index))
#define MEMPORT__TBUF_KIND(tag) \
  ((((tag) >> 32) == MEMPORT__TBUF_MAGIC) ? (unsigned)(((tag) >> 24) & 0xffu) : 0u)
#define MEMPORT__TBUF_INDEX(tag) ((uint32_t)((tag) & 0xffffffu))

/* The publisher's shadow value of a position holding an inline message. */
#define MEMPORT__SHADOW_INLINE UINT32_MAX
/* Per subscriber, per pool buffer: where that buffer stands with it. */
#define MEMPORT__HOLD_NONE 0
#define MEMPORT__HOLD_QUEUED 1 /* in its lane, not taken */
#define MEMPORT__HOLD_HELD 2   /* taken, not released */

/* The publisher's record of one subscriber. Everything here is private; the lane is shared. */
struct memport__topic_peer {
  memport_port_t *port;
  memport_sem_t *sem; /* the subscriber's: wakes it */
  struct memport__lane *lane;
  uint64_t head;     /* positions the subscriber took or we dropped, as last synced */
  uint64_t tail;     /* positions we published */
  uint32_t *shadow;  /* per position modulo depth: pool buffer index, or MEMPORT__SHADOW_INLINE */
  uint8_t *hold;     /* per pool buffer: MEMPORT__HOLD_* */
  uint64_t relq_head; /* release entries taken */
  uint64_t dropped;  /* our count (the lane's is a copy) */
  uint64_t taken;    /* positions the subscriber took (memport_pub_sub_stats' delivered) */
  memport_cred_t cred;
};

/* A connection whose HELLO has not been read yet (chan_accept.c's idea: never wait for it). */
struct memport__topic_pending {
  memport_port_t *port;
  uint64_t give_up; /* dropped after this time */
};

/* A message kept for late joiners. */
struct memport__topic_hist {
  uint32_t kind, len, index;
  uint64_t offset;
  unsigned char *data; /* inline payload (inline capacity bytes) */
};

struct memport_pub {
  memport_service_t *svc;
  memport_access_fn access;
  void *access_arg;
  memport_sem_t *sem; /* ours: subscribers post it */
  memport_msg_t *msg; /* port messages we send or receive */
  struct memport__wait_policy wait;
  uint32_t depth, slot_size, inline_cap, max_subs, history;
  size_t inline_max;
  int overflow;

  struct memport__pool pool;
  memport_region_t *pool_lend; /* read-only handle, copied to each subscriber */
  /* The event count sleeping subscribers wait on (internal.h memport__os_count_*; NULL where the
   * platform has none, and each sleeper's semaphore is signalled instead): one page, ours to
   * write, lent read-only. A publish that finds sleepers bumps it and wakes them all at once. */
  _Atomic uint32_t *count;
  memport_region_t *count_lend;
  bool count_wake; /* a lane put this publish found its subscriber asleep */
  uint32_t *refs;              /* per buffer: lanes it is queued or held in, + 1 in history */
  uint64_t *loan_ticket;       /* per buffer: ticket of the application's loan (0: none) */
  size_t *loan_len;
  uint64_t next_ticket;
  uint64_t seq; /* messages published */
  uint64_t published_pool, delivered, dropped, joined, left; /* memport_pub_stats */
  uint32_t listed; /* the subscriber count our registry record shows (memport-ls) */
  bool closing;    /* pub_free: subscribers leave without the record being rewritten */

  struct memport__topic_peer **peers; /* max_subs of them, the first npeers in use */
  uint32_t npeers;
  struct memport__topic_pending pending[MEMPORT__TOPIC_PENDING_MAX];
  uint32_t npending;

  struct memport__topic_hist *hist; /* ring of `history` entries */
  uint32_t hist_first, hist_count;

  uint64_t next_live; /* loan/publish look at joins and deaths after this time */
  struct memport__bell bell; /* pollable: service, pending and subscriber ports, and our ring */
  bool bell_rung;
  bool want_buffer; /* a loan failed: the handle waits for a free buffer */
  bool want_room;   /* a publish failed: for room in every lane */
  pid_t owner;
};

struct memport_sub {
  memport_port_t *port;
  bool joined;            /* the WELCOME was taken (memport_sub_connect_start: not yet) */
  bool hello_refused;     /* the publisher ended the connection at once: its answer says why */
  memport_sem_t *sem;     /* ours: the publisher posts it */
  memport_sem_t *pub_sem; /* the publisher's */
  const _Atomic uint32_t *count; /* the publisher's event count, read-only (NULL: we sleep on sem) */
  memport_msg_t *msg;
  struct memport__wait_policy wait;
  struct memport__lane *lane;
  uint32_t depth, slot_size, inline_cap;
  uint64_t head; /* positions we took (or saw dropped) */
  uint64_t received, received_pool; /* memport_sub_stats */
  struct memport__pool_view view;
  struct memport__relq_borrower relq;
  uint64_t *pool_ticket; /* per pool buffer handed to the application */
  uint64_t *owed; /* releases not yet queued (the queue was full): (gen << 32 | index) */
  uint32_t nowed;
  /* Inline messages handed out: private copies, one per slot of `depth`. */
  unsigned char *inl;
  uint64_t *inl_ticket; /* 0: free */
  uint32_t *inl_free;   /* free copies */
  uint32_t inl_nfree;
  uint64_t next_ticket;
  int broken;       /* MEMPORT_EPROTO / MEMPORT_EPEER once ended for good */
  bool peer_gone;   /* the port ended: the publisher is gone */
  struct memport__bell bell;
  bool bell_made, bell_rung;
};

/* topic_lane.c */
MEMPORT_HIDDEN int memport__topic_opts_valid(const memport_topic_opts_t *o, const char **field);
/* After publishing into a lane (or freeing room / releasing): wake its other side as *word asks:
 * signal `sem` when it sleeps, send a WAKE on `port` (never waiting) when its handle waits. The
 * fast path is one load. */
MEMPORT_HIDDEN void memport__topic_wake_slow(_Atomic uint32_t *word, memport_sem_t *sem, memport_port_t *port,
                                             memport_msg_t *msg);
static inline void memport__topic_wake(_Atomic uint32_t *word, memport_sem_t *sem, memport_port_t *port,
                                       memport_msg_t *msg) {
  if (MEMPORT__LIKELY(atomic_load_explicit(word, memory_order_seq_cst) == 0))
    return;
  memport__topic_wake_slow(word, sem, port, msg);
}
/* Send a header-only message of `type` over port, never waiting (errors ignored but EPEER). */
MEMPORT_HIDDEN int memport__topic_send_hdr(memport_port_t *port, memport_msg_t *msg, uint16_t type);
/* A received message is exactly a header of `type` with `nhandles` handles. */
MEMPORT_HIDDEN bool memport__topic_hdr_is(memport_msg_t *msg, uint16_t type, size_t len, int nhandles);

#endif /* MEMPORT_TOPIC_H */
