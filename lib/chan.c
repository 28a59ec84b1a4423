/* SPDX-License-Identifier: MIT */
/* chan.c: the channel: a ring per direction for small messages, a shared read-only pool for zero-copy
 * ones, one-off regions for oversized ones, and control traffic (handshake, releases, wakes) over a port. */
#include "internal.h"
#include "chan_proto.h"

#include <stdlib.h>
#include <string.h>

#define CHAN_DEFAULT_RING (1u << 20)
#define CHAN_DEFAULT_THRESHOLD (64u << 10)
#define CHAN_DEFAULT_POOL_BUFFER (8u << 20)
#define CHAN_DEFAULT_POOL_BUFFERS 8u
#define CHAN_DEFAULT_SPIN_NS 50000
#define CHAN_SLICE_NS 20000000u      /* blocked waits look at the port this often */
#define CHAN_LIVE_INTERVAL_NS 10000000u /* sends look at the port at most this often */
/* A pool's bytes: 1 TiB, or what size_t can count where it is smaller. */
#define CHAN_MAX_POOL_BYTES ((uint64_t)SIZE_MAX < ((uint64_t)1 << 40) ? (uint64_t)SIZE_MAX : ((uint64_t)1 << 40))
#define CHAN_DRAIN_MAX 256u /* control messages read per look at the port */
#define CHAN_BLOB_DRAIN_MAX 65536u /* control messages read while looking for an oversized message's region */

/* Tags in memport_buf_t.priv[0]: a magic in the high half, the kind and a pool index below. */
#define BUF_MAGIC 0x4d504246u /* "MPBF" */
#define BUF_RX_INLINE 1u
#define BUF_RX_POOL 2u
#define BUF_RX_BLOB 3u
#define BUF_TX_POOL 4u
#define BUF_TX_BLOB 5u
#define BUF_TAG(kind, index) (((uint64_t)BUF_MAGIC << 32) | ((uint64_t)(kind) << 24) | (uint64_t)(index))
#define BUF_KIND(tag) ((((tag) >> 32) == BUF_MAGIC) ? (unsigned)(((tag) >> 24) & 0xffu) : 0u)
#define BUF_INDEX(tag) ((uint32_t)((tag) & 0xffffffu))

/* States of our own pool buffers. */
#define POOL_FREE 0
#define POOL_ALLOCATED 1 /* handed to the application by memport_chan_alloc */
#define POOL_INFLIGHT 2  /* sent; the peer holds it until it sends a release */

struct chan_blob {
  memport_region_t *region; /* NULL: lost for want of descriptors (see chan_pump) */
  uint64_t len;
};

struct memport_chan {
  memport_port_t *port;
  memport_msg_t *cmsg; /* control messages we send */
  memport_msg_t *rmsg; /* control messages we receive */
  memport_ring_t *tx;  /* ours: we produce */
  memport_ring_t *rx;  /* the peer's: we consume */
  size_t threshold;
  uint64_t next_live;
  int broken;     /* MEMPORT_EPROTO once the peer broke the protocol */
  bool peer_dead; /* the peer is gone (a send or a receive on the port said so): see chan_peer_gone */
  bool port_eof;  /* ... and everything it sent over the port has been read */
  uint64_t next_probe; /* when the port is not read (back-pressure): next liveness probe */
  bool held_inline;

  /* Our pool: mapped writable here, read-only at the peer. */
  unsigned char *pool;
  size_t pool_bufsize;
  uint32_t pool_n;
  uint8_t *pool_state;
  uint32_t *pool_gen;
  uint32_t *pool_free; /* stack of free indices */
  uint32_t pool_nfree;

  /* The peer's pool, mapped read-only. */
  const unsigned char *ppool;
  size_t pbufsize;
  uint32_t pn;
  uint8_t *pheld;    /* 1 while the application holds that buffer */
  uint32_t *pgen;    /* generation the peer gave with it */
  struct memport__ctl_release_entry *rel; /* releases not yet sent (the queue was full) */
  uint32_t nrel;

  /* Release queues (in the rings' control pages): ours to push into (TX ring), the peer's to take
   * from (RX ring). */
  uint64_t rq_tail;      /* entries we pushed */
  uint64_t rq_head_seen; /* entries the peer took, last validated */
  uint64_t rq_head;      /* entries we took */

  /* Oversized messages. */
  uint32_t tx_blob_seq;
  uint64_t tx_blobs;                                      /* oversized messages sent */
  uint64_t tx_blob_end[MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT]; /* TX ring position after each one's record */
  uint32_t rx_blob_seq;      /* next ring record seq expected */
  uint32_t rx_blob_port_seq; /* next port message seq expected */
  struct chan_blob stash[MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT];
  uint32_t stash_head, stash_n;

  int wait_policy;
  int64_t spin_ns;
};

/* ------------------------------------------------------------------------------------------ */
/* Options.                                                                                    */

void memport_chan_opts_init(memport_chan_opts_t *opts) {
  if (opts == NULL)
    return;
  memset(opts, 0, sizeof *opts);
  opts->struct_size = sizeof *opts;
  opts->ring_capacity = CHAN_DEFAULT_RING;
  opts->zerocopy_threshold = CHAN_DEFAULT_THRESHOLD;
  opts->pool_buffer_size = CHAN_DEFAULT_POOL_BUFFER;
  opts->pool_buffers = CHAN_DEFAULT_POOL_BUFFERS;
  opts->wait_policy = MEMPORT_WAIT_ADAPTIVE;
  opts->spin_ns = CHAN_DEFAULT_SPIN_NS;
}

/* Check and normalize (page rounding) the options into *o. */
static int opts_check(const memport_chan_opts_t *in, memport_chan_opts_t *o) {
  if (in == NULL) {
    memport_chan_opts_init(o);
  } else {
    if (in->struct_size != sizeof *in)
      return MEMPORT_EINVAL;
    *o = *in;
  }
  size_t cap = memport__page_round(o->ring_capacity);
  if (o->ring_capacity == 0 || cap == 0 || cap > MEMPORT__RING_MAX_CAPACITY)
    return MEMPORT_EINVAL;
  o->ring_capacity = cap;
  if (o->zerocopy_threshold > cap - MEMPORT__RING_HDR)
    return MEMPORT_EINVAL;
  if (o->pool_buffers > MEMPORT__CHAN_MAX_POOL_BUFFERS)
    return MEMPORT_EINVAL;
  if (o->pool_buffers != 0) {
    size_t bs = memport__page_round(o->pool_buffer_size);
    if (o->pool_buffer_size == 0 || bs == 0 || (uint64_t)bs > CHAN_MAX_POOL_BYTES / o->pool_buffers)
      return MEMPORT_EINVAL;
    o->pool_buffer_size = bs;
  } else {
    o->pool_buffer_size = 0;
  }
  if (o->wait_policy != MEMPORT_WAIT_BLOCK && o->wait_policy != MEMPORT_WAIT_SPIN &&
      o->wait_policy != MEMPORT_WAIT_ADAPTIVE)
    return MEMPORT_EINVAL;
  if (o->spin_ns < 0)
    return MEMPORT_EINVAL;
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Teardown and failure.                                                                       */

static void chan_free(memport_chan_t *ch) {
  memport_ring_close(ch->tx);
  memport_ring_close(ch->rx);
  if (ch->pool != NULL)
    memport_unmap(ch->pool);
  if (ch->ppool != NULL)
    memport_unmap((void *)ch->ppool);
  for (uint32_t i = 0; i < ch->stash_n; i++)
    memport_region_close(ch->stash[(ch->stash_head + i) % MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT].region);
  memport_port_close(ch->port);
  memport_msg_close(ch->cmsg);
  memport_msg_close(ch->rmsg);
  free(ch->pool_state);
  free(ch->pool_gen);
  free(ch->pool_free);
  free(ch->pheld);
  free(ch->pgen);
  free(ch->rel);
  free(ch);
}

/* The peer broke the protocol: every later call fails with `err`; the port is closed at once so
 * the peer sees MEMPORT_EPEER. Mappings stay until memport_chan_close (buffers may point there). */
static int chan_break(memport_chan_t *ch, int err) {
  if (ch->broken == 0)
    ch->broken = err;
  memport_port_close(ch->port);
  ch->port = NULL;
  ch->nrel = 0;
  return ch->broken;
}

/* ------------------------------------------------------------------------------------------ */
/* Release queues: pool buffers go back to their owner through shared memory, no system call.  */

static int ctl_send(memport_chan_t *ch, const void *bytes, size_t len, int64_t timeout_ns);

/* Give the peer's buffer back through our TX ring's queue: 1 done, 0 full (use the port), or an
 * error when the peer's consumer index is inconsistent. */
static int relq_push(memport_chan_t *ch, uint32_t index, uint32_t gen) {
  struct memport__ring_shared *sh = memport__ring_ctrl(ch->tx);
  if (ch->rq_tail - ch->rq_head_seen >= MEMPORT__REL_QUEUE) {
    uint64_t h = atomic_load_explicit(&sh->rel_head, memory_order_acquire);
    if (h < ch->rq_head_seen || h > ch->rq_tail)
      return MEMPORT_EPROTO;
    ch->rq_head_seen = h;
    if (ch->rq_tail - h >= MEMPORT__REL_QUEUE)
      return 0;
  }
  atomic_store_explicit(&sh->rel[ch->rq_tail % MEMPORT__REL_QUEUE], ((uint64_t)gen << 32) | index,
                        memory_order_relaxed);
  ch->rq_tail++;
  atomic_exchange_explicit(&sh->rel_tail, ch->rq_tail, memory_order_seq_cst);
  if (atomic_load_explicit(&sh->rel_wait, memory_order_seq_cst) != 0 &&
      atomic_exchange_explicit(&sh->rel_wait, 0, memory_order_seq_cst) != 0) {
    struct memport__ctl_hdr h = {MEMPORT__CTL_MAGIC, MEMPORT__CTL_WAKE, 0};
    (void)ctl_send(ch, &h, sizeof h, MEMPORT_NOWAIT); /* a full port wakes the peer anyway */
  }
  return 1;
}

/* Take the releases the peer queued for our pool (validated: index, state, generation). */
static int relq_drain(memport_chan_t *ch) {
  struct memport__ring_shared *sh = memport__ring_ctrl(ch->rx);
  uint64_t t = atomic_load_explicit(&sh->rel_tail, memory_order_seq_cst);
  if (MEMPORT__LIKELY(t == ch->rq_head) || ch->peer_dead) /* after its death the pool is ours */
    return 0;
  if (t < ch->rq_head || t - ch->rq_head > MEMPORT__REL_QUEUE)
    return MEMPORT_EPROTO;
  for (uint64_t h = ch->rq_head; h != t; h++) {
    uint64_t e = atomic_load_explicit(&sh->rel[h % MEMPORT__REL_QUEUE], memory_order_relaxed);
    uint32_t i = (uint32_t)e, gen = (uint32_t)(e >> 32);
    if (i >= ch->pool_n || ch->pool_state[i] != POOL_INFLIGHT || ch->pool_gen[i] != gen)
      return MEMPORT_EPROTO;
    ch->pool_state[i] = POOL_FREE;
    ch->pool_free[ch->pool_nfree++] = i;
  }
  ch->rq_head = t;
  atomic_store_explicit(&sh->rel_head, t, memory_order_release);
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Control messages.                                                                           */

/* The peer is gone: nothing can be sent any more, but what it committed and sent before is still
 * delivered (chan_pump goes on reading the port until its end). Our pool is entirely ours again:
 * the buffers in flight or held by the peer are reclaimed, since no release will ever come; the
 * channel reports MEMPORT_EPEER to alloc and send, and memport_chan_close unmaps the whole pool. */
static void chan_peer_gone(memport_chan_t *ch) {
  if (ch->peer_dead)
    return;
  ch->peer_dead = true;
  ch->nrel = 0;
  for (uint32_t i = 0; i < ch->pool_n; i++)
    if (ch->pool_state[i] == POOL_INFLIGHT) {
      ch->pool_state[i] = POOL_FREE;
      ch->pool_free[ch->pool_nfree++] = i;
    }
}

static int ctl_send(memport_chan_t *ch, const void *bytes, size_t len, int64_t timeout_ns) {
  int rc = memport_msg_set_bytes(ch->cmsg, bytes, len);
  if (rc == 0)
    rc = memport_port_send(ch->port, ch->cmsg, timeout_ns);
  if (rc == MEMPORT_EPEER)
    chan_peer_gone(ch);
  return rc;
}

/* Send the releases we owe the peer, as few messages as possible, never waiting: a full port
 * keeps them for the next try. */
static int chan_flush(memport_chan_t *ch) {
  while (ch->nrel > 0 && !ch->peer_dead && ch->broken == 0) {
    unsigned char buf[4096];
    uint32_t per = (uint32_t)((sizeof buf - sizeof(struct memport__ctl_release)) /
                              sizeof(struct memport__ctl_release_entry));
    uint32_t n = ch->nrel < per ? ch->nrel : per;
    struct memport__ctl_release hdr = {{MEMPORT__CTL_MAGIC, MEMPORT__CTL_RELEASE, 0}, n, 0};
    memcpy(buf, &hdr, sizeof hdr);
    memcpy(buf + sizeof hdr, ch->rel, n * sizeof ch->rel[0]);
    int rc = ctl_send(ch, buf, sizeof hdr + n * sizeof ch->rel[0], MEMPORT_NOWAIT);
    if (rc == MEMPORT_EAGAIN || rc == MEMPORT_ETIMEDOUT)
      return 0;
    if (rc == MEMPORT_EPEER) {
      ch->nrel = 0;
      return 0;
    }
    if (rc < 0)
      return rc;
    ch->nrel -= n;
    memmove(ch->rel, ch->rel + n, ch->nrel * sizeof ch->rel[0]);
  }
  return 0;
}

static int handle_release(memport_chan_t *ch, const unsigned char *b, size_t len) {
  struct memport__ctl_release r;
  if (len < sizeof r)
    return MEMPORT_EPROTO;
  memcpy(&r, b, sizeof r);
  if (r.count == 0 || r.count > ch->pool_n || len != sizeof r + (size_t)r.count * sizeof(struct memport__ctl_release_entry))
    return MEMPORT_EPROTO;
  if (ch->peer_dead)
    return 0; /* sent before it died: the pool was reclaimed already (chan_peer_gone) */
  for (uint32_t i = 0; i < r.count; i++) {
    struct memport__ctl_release_entry e;
    memcpy(&e, b + sizeof r + i * sizeof e, sizeof e);
    if (e.index >= ch->pool_n || ch->pool_state[e.index] != POOL_INFLIGHT || ch->pool_gen[e.index] != e.gen)
      return MEMPORT_EPROTO;
    ch->pool_state[e.index] = POOL_FREE;
    ch->pool_free[ch->pool_nfree++] = e.index;
  }
  return 0;
}

static int handle_blob(memport_chan_t *ch, memport_msg_t *m, const unsigned char *b, size_t len) {
  struct memport__ctl_blob blob;
  if (len != sizeof blob || memport_msg_handle_count(m) != 1 ||
      memport_msg_handle_kind(m, 0) != MEMPORT_HANDLE_REGION)
    return MEMPORT_EPROTO;
  memcpy(&blob, b, sizeof blob);
  if (blob.seq != ch->rx_blob_port_seq || ch->stash_n >= MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT || blob.len > SIZE_MAX)
    return MEMPORT_EPROTO;
  memport_region_t *region;
  int rc = memport_msg_take_region(m, 0, &region);
  if (rc < 0)
    return rc;
  if (memport_region_size(region) < blob.len) {
    memport_region_close(region);
    return MEMPORT_EPROTO;
  }
  struct chan_blob *s = &ch->stash[(ch->stash_head + ch->stash_n) % MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT];
  s->region = region;
  s->len = blob.len;
  ch->stash_n++;
  ch->rx_blob_port_seq++;
  return 0;
}

/* Act on one received control message (after the handshake). */
static int handle_ctl(memport_chan_t *ch, memport_msg_t *m) {
  size_t len;
  const unsigned char *b = memport_msg_bytes(m, &len);
  struct memport__ctl_hdr h;
  if (b == NULL || len < sizeof h)
    return MEMPORT_EPROTO;
  memcpy(&h, b, sizeof h);
  if (h.magic != MEMPORT__CTL_MAGIC)
    return MEMPORT_EPROTO;
  switch (h.type) {
  case MEMPORT__CTL_WAKE:
    return len == sizeof h && memport_msg_handle_count(m) == 0 ? 0 : MEMPORT_EPROTO;
  case MEMPORT__CTL_RELEASE:
    return memport_msg_handle_count(m) == 0 ? handle_release(ch, b, len) : MEMPORT_EPROTO;
  case MEMPORT__CTL_BLOB:
    return handle_blob(ch, m, b, len);
  default:
    return MEMPORT_EPROTO;
  }
}

/* Receive one control message (waiting up to timeout_ns) and act on it. Returns 0, EAGAIN /
 * ETIMEDOUT when nothing came, MEMPORT_EPEER when the peer is gone, or an error. */
static int chan_pump(memport_chan_t *ch, int64_t timeout_ns) {
  if (ch->broken)
    return ch->broken;
  if (ch->port_eof)
    return MEMPORT_EPEER;
  /* Back-pressure: while the application has not received the oversized messages already
   * announced, leave the port alone (the sender's port then fills and it waits). Its end cannot
   * be seen then, so a wake (ignored by a live peer, dropped when its port is full) asks the
   * kernel now and then whether the peer is still there. */
  if (MEMPORT__UNLIKELY(ch->stash_n >= MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT)) {
    uint64_t now = memport__now_ns();
    if (!ch->peer_dead && now >= ch->next_probe) {
      ch->next_probe = now + CHAN_SLICE_NS;
      struct memport__ctl_hdr h = {MEMPORT__CTL_MAGIC, MEMPORT__CTL_WAKE, 0};
      (void)ctl_send(ch, &h, sizeof h, MEMPORT_NOWAIT);
    }
    return ch->peer_dead ? MEMPORT_EPEER : MEMPORT_EAGAIN;
  }
  /* A peer found gone by a send may have sent more before it went: read it, without waiting. */
  int rc = memport_port_recv(ch->port, ch->rmsg, ch->peer_dead ? MEMPORT_NOWAIT : timeout_ns);
  if (rc == MEMPORT_EPEER) {
    ch->port_eof = true;
    chan_peer_gone(ch);
    return rc;
  }
  if (ch->peer_dead && (rc == MEMPORT_EAGAIN || rc == MEMPORT_ETIMEDOUT))
    return MEMPORT_EPEER;
  if (rc == MEMPORT_EMSGSIZE || rc == MEMPORT_EPROTO)
    return chan_break(ch, MEMPORT_EPROTO);
  if (rc == MEMPORT_EMFILE) {
    /* The port dropped a message whose handles we had no descriptors for. After the handshake
     * only an oversized message's region travels that way: its record comes later, and that
     * message is reported (MEMPORT_EMFILE) and skipped in its turn (blob_take). */
    struct chan_blob *s = &ch->stash[(ch->stash_head + ch->stash_n) % MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT];
    s->region = NULL;
    s->len = 0;
    ch->stash_n++;
    ch->rx_blob_port_seq++;
    return MEMPORT_EAGAIN; /* read no further now: the next ones may find descriptors free */
  }
  if (rc < 0)
    return rc;
  rc = handle_ctl(ch, ch->rmsg);
  memport_msg_clear(ch->rmsg);
  if (rc < 0)
    return chan_break(ch, rc);
  return 0;
}

/* Read the control messages waiting now (a bounded number: a peer that floods the port cannot
 * keep us here), send releases we owe. 0, MEMPORT_EPEER or an error. */
static int chan_drain(memport_chan_t *ch) {
  int rc = 0;
  for (unsigned n = 0; n < CHAN_DRAIN_MAX && rc == 0; n++)
    rc = chan_pump(ch, MEMPORT_NOWAIT);
  if (rc != 0 && rc != MEMPORT_EAGAIN && rc != MEMPORT_ETIMEDOUT)
    return rc;
  rc = chan_flush(ch);
  if (rc < 0)
    return rc;
  return ch->peer_dead ? MEMPORT_EPEER : 0;
}

/* Called by the rings between sleeping slices. */
static int chan_hook(void *arg) { return chan_drain(arg); }

/* The send paths notice a dead peer within CHAN_LIVE_INTERVAL_NS without a system call per message. */
static inline int chan_live(memport_chan_t *ch) {
  if (MEMPORT__UNLIKELY(ch->broken))
    return ch->broken;
  if (MEMPORT__UNLIKELY(ch->peer_dead))
    return MEMPORT_EPEER;
  uint64_t now = memport__now_ns();
  if (MEMPORT__LIKELY(now < ch->next_live))
    return 0;
  ch->next_live = now + CHAN_LIVE_INTERVAL_NS;
  return chan_drain(ch);
}

static int ring_error(memport_chan_t *ch, int rc) {
  if (rc == MEMPORT_EPROTO)
    return chan_break(ch, rc);
  return rc;
}

/* After a commit the consumer may have asked for a wake-up through the port (pollable). */
static void chan_wake_peer(memport_chan_t *ch) {
  struct memport__ctl_hdr h = {MEMPORT__CTL_MAGIC, MEMPORT__CTL_WAKE, 0};
  /* A full port already makes the peer's handle ready; a dead peer is found by the next call. */
  (void)ctl_send(ch, &h, sizeof h, MEMPORT_NOWAIT);
}

/* ------------------------------------------------------------------------------------------ */
/* Handshake.                                                                                  */

static int chan_new(memport_chan_t **out, memport_port_t *port, const memport_chan_opts_t *o) {
  memport_chan_t *ch = calloc(1, sizeof *ch);
  if (ch == NULL) {
    memport_port_close(port);
    return MEMPORT_ENOMEM;
  }
  ch->port = port;
  ch->threshold = o->zerocopy_threshold;
  ch->wait_policy = o->wait_policy;
  ch->spin_ns = o->spin_ns;
  int rc = memport_msg_create(&ch->cmsg);
  if (rc == 0)
    rc = memport_msg_create(&ch->rmsg);
  if (rc == 0)
    rc = memport_ring_create(&ch->tx, o->ring_capacity, 0);
  if (rc == 0 && o->pool_buffers != 0) {
    ch->pool_n = o->pool_buffers;
    ch->pool_bufsize = o->pool_buffer_size;
    ch->pool_state = calloc(ch->pool_n, 1);
    ch->pool_gen = calloc(ch->pool_n, sizeof ch->pool_gen[0]);
    ch->pool_free = calloc(ch->pool_n, sizeof ch->pool_free[0]);
    if (ch->pool_state == NULL || ch->pool_gen == NULL || ch->pool_free == NULL)
      rc = MEMPORT_ENOMEM;
    for (uint32_t i = 0; rc == 0 && i < ch->pool_n; i++)
      ch->pool_free[i] = ch->pool_n - 1 - i;
    ch->pool_nfree = ch->pool_n;
  }
  if (rc < 0) {
    chan_free(ch);
    return rc;
  }
  memport__ring_set_policy(ch->tx, o->wait_policy, (uint64_t)o->spin_ns);
  memport__ring_set_hook(ch->tx, chan_hook, ch, CHAN_SLICE_NS);
  *out = ch;
  return 0;
}

/* Build and send our HELLO: our TX ring and our pool, sealed read-only for the peer after we
 * mapped it writable. */
static int chan_send_hello(memport_chan_t *ch, int64_t timeout_ns) {
  memport_region_t *pool_region = NULL, *ro = NULL;
  int rc = 0;
  if (ch->pool_n != 0) {
    rc = memport_region_create(&pool_region, (size_t)ch->pool_n * ch->pool_bufsize, 0);
    void *map = NULL;
    if (rc == 0)
      rc = memport_region_map(pool_region, 0, &map);
    if (rc == 0) {
      ch->pool = map;
      rc = memport_region_readonly(pool_region, &ro);
    }
    memport_region_close(pool_region);
    if (rc < 0)
      return rc;
  }
  struct memport__ctl_hello h;
  memset(&h, 0, sizeof h);
  h.hdr.magic = MEMPORT__CTL_MAGIC;
  h.hdr.type = MEMPORT__CTL_HELLO;
  h.version = MEMPORT__CHAN_VERSION;
  h.pool_buffers = ch->pool_n;
  h.ring_capacity = memport_ring_max_record(ch->tx) + MEMPORT__RING_HDR;
  h.pool_buffer_size = ch->pool_bufsize;
  memport_msg_clear(ch->cmsg);
  rc = memport__ring_export_rx(ch->tx, ch->cmsg);
  if (ro != NULL) {
    int rc2 = memport_msg_attach_region(ch->cmsg, ro, 0); /* moved, even on failure */
    if (rc == 0)
      rc = rc2;
  }
  if (rc == 0)
    rc = ctl_send(ch, &h, sizeof h, timeout_ns);
  memport_msg_clear(ch->cmsg);
  return rc;
}

static int chan_recv_hello(memport_chan_t *ch, int64_t timeout_ns) {
  memport_msg_t *m = ch->rmsg;
  int rc = memport_port_recv(ch->port, m, timeout_ns);
  if (rc == MEMPORT_EMSGSIZE)
    rc = MEMPORT_EPROTO;
  if (rc < 0)
    return rc;
  size_t len;
  const unsigned char *b = memport_msg_bytes(m, &len);
  struct memport__ctl_hello h;
  rc = MEMPORT_EPROTO;
  if (b == NULL || len != sizeof h)
    goto out;
  memcpy(&h, b, sizeof h);
  if (h.hdr.magic != MEMPORT__CTL_MAGIC || h.hdr.type != MEMPORT__CTL_HELLO || h.version != MEMPORT__CHAN_VERSION)
    goto out;
  if (h.pool_buffers > MEMPORT__CHAN_MAX_POOL_BUFFERS)
    goto out;
  if (h.pool_buffers != 0 &&
      (h.pool_buffer_size == 0 || h.pool_buffer_size % memport_page_size() != 0 ||
       h.pool_buffer_size > CHAN_MAX_POOL_BYTES / h.pool_buffers))
    goto out;
  if (memport_msg_handle_count(m) != 4 + (h.pool_buffers != 0 ? 1 : 0))
    goto out;
  if (h.pool_buffers != 0 && memport_msg_handle_kind(m, 4) != MEMPORT_HANDLE_REGION)
    goto out;
  rc = memport__ring_import_rx(&ch->rx, m, 0);
  if (rc < 0)
    goto out;
  rc = MEMPORT_EPROTO;
  if (memport_ring_max_record(ch->rx) + MEMPORT__RING_HDR != h.ring_capacity)
    goto out;
  if (h.pool_buffers != 0) {
    memport_region_t *pr = NULL;
    rc = memport_msg_take_region(m, 4, &pr);
    if (rc < 0)
      goto out;
    size_t need = (size_t)h.pool_buffers * (size_t)h.pool_buffer_size;
    void *map = NULL;
    if (memport_region_size(pr) < need)
      rc = MEMPORT_EPROTO;
    else
      rc = memport_region_map(pr, MEMPORT_MAP_READONLY, &map);
    memport_region_close(pr);
    if (rc < 0)
      goto out;
    ch->ppool = map;
    ch->pn = h.pool_buffers;
    ch->pbufsize = (size_t)h.pool_buffer_size;
    ch->pheld = calloc(ch->pn, 1);
    ch->pgen = calloc(ch->pn, sizeof ch->pgen[0]);
    ch->rel = calloc(ch->pn, sizeof ch->rel[0]);
    if (ch->pheld == NULL || ch->pgen == NULL || ch->rel == NULL) {
      rc = MEMPORT_ENOMEM;
      goto out;
    }
  }
  memport__ring_set_policy(ch->rx, ch->wait_policy, (uint64_t)ch->spin_ns);
  memport__ring_set_hook(ch->rx, chan_hook, ch, CHAN_SLICE_NS);
  rc = 0;
out:
  memport_msg_clear(m);
  return rc;
}

int memport_chan_open(memport_chan_t **out, memport_port_t *port, const memport_chan_opts_t *opts,
                      int64_t timeout_ns) {
  if (out == NULL || port == NULL) {
    memport_port_close(port);
    return MEMPORT_EINVAL;
  }
  *out = NULL;
  memport_chan_opts_t o;
  int rc = opts_check(opts, &o);
  if (rc < 0) {
    memport_port_close(port);
    return rc;
  }
  uint64_t deadline = memport__deadline(timeout_ns);
  memport_chan_t *ch;
  rc = chan_new(&ch, port, &o);
  if (rc < 0)
    return rc;
  rc = chan_send_hello(ch, timeout_ns);
  if (rc == 0) {
    int64_t left = timeout_ns > 0 ? memport__remaining_ns(deadline) : timeout_ns;
    rc = chan_recv_hello(ch, left);
  }
  if (rc < 0) {
    chan_free(ch);
    return rc;
  }
  *out = ch;
  return 0;
}

int memport_chan_pair(memport_chan_t **a, memport_chan_t **b, const memport_chan_opts_t *opts) {
  if (a == NULL || b == NULL || a == b) /* one out-parameter for both ends would leak one */
    return MEMPORT_EINVAL;
  *a = *b = NULL;
  memport_chan_opts_t o;
  int rc = opts_check(opts, &o);
  if (rc < 0)
    return rc;
  memport_port_t *pa, *pb;
  rc = memport_port_pair(&pa, &pb);
  if (rc < 0)
    return rc;
  memport_chan_t *ca = NULL, *cb = NULL;
  rc = chan_new(&ca, pa, &o);
  if (rc < 0) {
    memport_port_close(pb);
    return rc;
  }
  rc = chan_new(&cb, pb, &o);
  /* Both hellos go out first (the port buffers them), then each side reads the other's. */
  if (rc == 0)
    rc = chan_send_hello(ca, MEMPORT_FOREVER);
  if (rc == 0)
    rc = chan_send_hello(cb, MEMPORT_FOREVER);
  if (rc == 0)
    rc = chan_recv_hello(ca, MEMPORT_FOREVER);
  if (rc == 0)
    rc = chan_recv_hello(cb, MEMPORT_FOREVER);
  if (rc < 0) {
    if (cb != NULL)
      chan_free(cb);
    chan_free(ca);
    return rc;
  }
  *a = ca;
  *b = cb;
  return 0;
}

int memport_chan_connect(memport_chan_t **out, const char *name, const memport_chan_opts_t *opts,
                         int64_t timeout_ns) {
  if (out == NULL || name == NULL)
    return MEMPORT_EINVAL;
  *out = NULL;
  memport_chan_opts_t o;
  int rc = opts_check(opts, &o);
  if (rc < 0)
    return rc;
  uint64_t deadline = memport__deadline(timeout_ns);
  memport_port_t *port;
  rc = memport_port_connect(&port, name, timeout_ns);
  if (rc < 0)
    return rc;
  int64_t left = timeout_ns > 0 ? memport__remaining_ns(deadline) : timeout_ns;
  return memport_chan_open(out, port, &o, left);
}

int memport_chan_accept(memport_chan_t **out, memport_service_t *svc, const memport_chan_opts_t *opts,
                        int64_t timeout_ns) {
  if (out == NULL || svc == NULL)
    return MEMPORT_EINVAL;
  *out = NULL;
  memport_chan_opts_t o;
  int rc = opts_check(opts, &o);
  if (rc < 0)
    return rc;
  uint64_t deadline = memport__deadline(timeout_ns);
  memport_port_t *port;
  rc = memport_service_accept(svc, &port, timeout_ns);
  if (rc < 0)
    return rc;
  int64_t left = timeout_ns > 0 ? memport__remaining_ns(deadline) : timeout_ns;
  return memport_chan_open(out, port, &o, left);
}

int memport_chan_close(memport_chan_t *chan) {
  if (chan == NULL)
    return 0;
  if (chan->broken == 0 && !chan->peer_dead)
    (void)chan_flush(chan);
  chan_free(chan);
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Sending.                                                                                    */

/* Wait for one of our pool buffers to come back: from the release queue (spinning as the wait
 * policy says), or, asleep, from the port (a wake after the peer queued one, a release sent
 * over the port when its queue was full, or the peer's death). */
static int pool_wait(memport_chan_t *ch, uint64_t deadline, int64_t timeout_ns) {
  int rc = relq_drain(ch);
  if (rc == 0 && ch->pool_nfree == 0) {
    rc = chan_drain(ch);
    if (rc == 0)
      rc = relq_drain(ch);
  }
  if (rc < 0)
    return rc == MEMPORT_EPROTO ? chan_break(ch, rc) : rc;
  if (ch->pool_nfree != 0)
    return 0;
  if (timeout_ns == 0)
    return MEMPORT_EAGAIN;
  if (deadline == 0)
    deadline = memport__deadline(timeout_ns);
  uint64_t now = memport__now_ns();
  if (ch->wait_policy != MEMPORT_WAIT_BLOCK) {
    uint64_t spin = ch->spin_ns > 0 ? (uint64_t)ch->spin_ns : (uint64_t)CHAN_DEFAULT_SPIN_NS;
    uint64_t spin_end = ch->wait_policy == MEMPORT_WAIT_SPIN ? UINT64_MAX : now + spin;
    uint64_t next_look = now + CHAN_SLICE_NS;
    for (unsigned i = 1;; i++) {
      if ((rc = relq_drain(ch)) < 0)
        return chan_break(ch, rc);
      if (ch->pool_nfree != 0)
        return 0;
      memport__cpu_relax();
      if ((i & 31) == 0) {
        now = memport__now_ns();
        if (now >= deadline)
          return MEMPORT_ETIMEDOUT;
        if (now >= next_look) {
          if ((rc = chan_drain(ch)) < 0)
            return rc;
          next_look = now + CHAN_SLICE_NS;
        }
        if (now >= spin_end)
          break;
      }
    }
  }
  _Atomic uint32_t *w = &memport__ring_ctrl(ch->rx)->rel_wait;
  for (;;) {
    atomic_fetch_or_explicit(w, MEMPORT__WAIT_PORT, memory_order_seq_cst);
    rc = relq_drain(ch);
    if (rc < 0 || ch->pool_nfree != 0) {
      atomic_fetch_and_explicit(w, ~MEMPORT__WAIT_PORT, memory_order_relaxed);
      return rc < 0 ? chan_break(ch, rc) : 0;
    }
    int64_t left = -1;
    if (deadline != MEMPORT__NO_DEADLINE) {
      now = memport__now_ns();
      if (now >= deadline) {
        atomic_fetch_and_explicit(w, ~MEMPORT__WAIT_PORT, memory_order_relaxed);
        return MEMPORT_ETIMEDOUT;
      }
      left = (int64_t)(deadline - now);
    }
    rc = chan_flush(ch);
    if (rc == 0 && MEMPORT__UNLIKELY(ch->stash_n >= MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT)) {
      /* The port is not read (see chan_pump): poll the queue for a slice instead. */
      uint64_t until = memport__now_ns() + CHAN_SLICE_NS;
      for (unsigned i = 1; ch->pool_nfree == 0; i++) {
        if ((rc = relq_drain(ch)) < 0)
          break;
        memport__cpu_relax();
        if ((i & 31) == 0 && memport__now_ns() >= (until < deadline ? until : deadline))
          break;
      }
      if (rc == MEMPORT_EPROTO)
        rc = chan_break(ch, rc);
      else if (rc == 0 && ch->pool_nfree == 0)
        rc = chan_pump(ch, MEMPORT_NOWAIT); /* is the peer still there? */
    } else if (rc == 0) {
      rc = chan_pump(ch, left);
    }
    if (rc < 0 && rc != MEMPORT_ETIMEDOUT && rc != MEMPORT_EAGAIN) {
      atomic_fetch_and_explicit(w, ~MEMPORT__WAIT_PORT, memory_order_relaxed);
      return rc;
    }
  }
}

static int chan_alloc_internal(memport_chan_t *ch, size_t len, memport_buf_t *buf, uint64_t deadline,
                               int64_t timeout_ns) {
  if (ch->pool_n != 0 && len <= ch->pool_bufsize) {
    if (ch->pool_nfree == 0) {
      int rc = pool_wait(ch, deadline, timeout_ns);
      if (rc < 0)
        return rc;
      if (MEMPORT__UNLIKELY(ch->peer_dead)) /* the reclaimed pool cannot be sent from */
        return MEMPORT_EPEER;
    }
    uint32_t i = ch->pool_free[--ch->pool_nfree];
    ch->pool_state[i] = POOL_ALLOCATED;
    buf->data = ch->pool + (size_t)i * ch->pool_bufsize;
    buf->len = len;
    buf->priv[0] = BUF_TAG(BUF_TX_POOL, i);
    buf->priv[1] = ch->pool_bufsize;
    buf->priv[2] = (uintptr_t)ch;
    return 0;
  }
  /* Oversized (or no pool): a one-off region, sealed read-only when sent. */
  memport_region_t *region;
  int rc = memport_region_create(&region, len != 0 ? len : 1, 0);
  if (rc < 0)
    return rc;
  void *map;
  rc = memport_region_map(region, 0, &map);
  if (rc < 0) {
    memport_region_close(region);
    return rc;
  }
  buf->data = map;
  buf->len = len;
  buf->priv[0] = BUF_TAG(BUF_TX_BLOB, 0);
  buf->priv[1] = memport_region_size(region);
  buf->priv[2] = (uintptr_t)region;
  return 0;
}

int memport_chan_alloc(memport_chan_t *chan, size_t len, memport_buf_t *buf, int64_t timeout_ns) {
  if (chan == NULL || buf == NULL)
    return MEMPORT_EINVAL;
  memset(buf, 0, sizeof *buf);
  int rc = chan_live(chan);
  if (rc < 0)
    return rc;
  return chan_alloc_internal(chan, len, buf, 0, timeout_ns); /* deadline computed if it must wait */
}

static void tx_blob_free(memport_buf_t *buf) {
  memport_unmap(buf->data);
  memport_region_close((memport_region_t *)(uintptr_t)buf->priv[2]);
  memset(buf, 0, sizeof *buf);
}

int memport_chan_free_buf(memport_chan_t *chan, memport_buf_t *buf) {
  if (chan == NULL || buf == NULL)
    return MEMPORT_EINVAL;
  switch (BUF_KIND(buf->priv[0])) {
  case BUF_TX_POOL: {
    uint32_t i = BUF_INDEX(buf->priv[0]);
    if (buf->priv[2] != (uintptr_t)chan || i >= chan->pool_n || chan->pool_state[i] != POOL_ALLOCATED)
      return MEMPORT_EINVAL;
    chan->pool_state[i] = POOL_FREE;
    chan->pool_free[chan->pool_nfree++] = i;
    memset(buf, 0, sizeof *buf);
    return 0;
  }
  case BUF_TX_BLOB:
    tx_blob_free(buf);
    return 0;
  default:
    return MEMPORT_EINVAL;
  }
}

/* Put a descriptor record in the ring (whose space was reserved at *slot). */
static int commit_desc(memport_chan_t *ch, void *slot, const void *desc, size_t len, uint32_t type) {
  memcpy(slot, desc, len);
  int rc = memport__ring_commit(ch->tx, len, type);
  if (rc < 0)
    return ring_error(ch, rc);
  if (rc > 0)
    chan_wake_peer(ch);
  return 0;
}

static int send_buf_internal(memport_chan_t *ch, memport_buf_t *buf, uint64_t deadline, int64_t timeout_ns) {
  unsigned kind = BUF_KIND(buf->priv[0]);
  if (kind == BUF_TX_POOL) {
    uint32_t i = BUF_INDEX(buf->priv[0]);
    if (buf->priv[2] != (uintptr_t)ch || i >= ch->pool_n || ch->pool_state[i] != POOL_ALLOCATED ||
        buf->len > ch->pool_bufsize)
      return MEMPORT_EINVAL;
    void *slot;
    int rc = memport__ring_reserve(ch->tx, sizeof(struct memport__rec_pool), &slot, timeout_ns, deadline);
    if (rc < 0)
      return ring_error(ch, rc);
    struct memport__rec_pool d = {i, ++ch->pool_gen[i], 0, buf->len};
    ch->pool_state[i] = POOL_INFLIGHT;
    rc = commit_desc(ch, slot, &d, sizeof d, MEMPORT__REC_POOL);
    if (rc < 0)
      return rc;
    memset(buf, 0, sizeof *buf);
    return 0;
  }
  if (kind != BUF_TX_BLOB || buf->len > buf->priv[1])
    return MEMPORT_EINVAL;
  /* At most MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT oversized messages the consumer has not taken yet:
   * a consumer that does not read pins that many regions, not as many as its port holds. */
  int rc;
  if (deadline == 0 && timeout_ns > 0)
    deadline = memport__deadline(timeout_ns); /* one deadline for the waits below */
  if (ch->tx_blobs >= MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT) {
    rc = memport__ring_wait_consumed(ch->tx, ch->tx_blob_end[ch->tx_blobs % MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT],
                                     timeout_ns, deadline);
    if (rc < 0)
      return ring_error(ch, rc);
  }
  /* Reserve the ring record first so nothing can fail after the region has gone out. */
  memport_region_t *region = (memport_region_t *)(uintptr_t)buf->priv[2];
  void *slot;
  rc = memport__ring_reserve(ch->tx, sizeof(struct memport__rec_blob), &slot, timeout_ns, deadline);
  if (rc < 0)
    return ring_error(ch, rc);
  memport_region_t *ro = NULL;
  rc = memport_region_is_readonly(region);
  if (rc == 0)
    rc = memport_region_readonly(region, &ro); /* our writable mapping stays writable */
  else if (rc > 0)
    rc = memport_region_dup(region, 0, &ro);
  struct memport__ctl_blob b = {{MEMPORT__CTL_MAGIC, MEMPORT__CTL_BLOB, 0}, ch->tx_blob_seq, 0, buf->len};
  memport_msg_clear(ch->cmsg);
  if (rc == 0)
    rc = memport_msg_attach_region(ch->cmsg, ro, 0);
  if (rc == 0) {
    int64_t left = timeout_ns > 0 ? memport__remaining_ns(deadline) : timeout_ns;
    rc = ctl_send(ch, &b, sizeof b, left);
  }
  memport_msg_clear(ch->cmsg);
  if (rc < 0) {
    memport__ring_unreserve(ch->tx);
    return rc;
  }
  struct memport__rec_blob d = {ch->tx_blob_seq++, 0, buf->len};
  rc = commit_desc(ch, slot, &d, sizeof d, MEMPORT__REC_BLOB);
  ch->tx_blob_end[ch->tx_blobs++ % MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT] = memport__ring_produced(ch->tx);
  tx_blob_free(buf);
  return rc;
}

int memport_chan_send_buf(memport_chan_t *chan, memport_buf_t *buf, int64_t timeout_ns) {
  if (chan == NULL || buf == NULL)
    return MEMPORT_EINVAL;
  int rc = chan_live(chan);
  if (rc < 0)
    return rc;
  return send_buf_internal(chan, buf, 0, timeout_ns);
}

int memport_chan_send(memport_chan_t *chan, const void *data, size_t len, unsigned flags, int64_t timeout_ns) {
  if (chan == NULL || (data == NULL && len != 0) || (flags & ~MEMPORT_SEND_ZEROCOPY) != 0)
    return MEMPORT_EINVAL;
  int rc = chan_live(chan);
  if (rc < 0)
    return rc;
  if (MEMPORT__LIKELY(len <= chan->threshold && !(flags & MEMPORT_SEND_ZEROCOPY))) {
    void *p;
    rc = memport__ring_reserve(chan->tx, len, &p, timeout_ns, 0);
    if (MEMPORT__UNLIKELY(rc < 0))
      return ring_error(chan, rc);
    if (len != 0)
      memcpy(p, data, len);
    rc = memport__ring_commit(chan->tx, len, MEMPORT__REC_INLINE);
    if (MEMPORT__UNLIKELY(rc != 0)) {
      if (rc < 0)
        return ring_error(chan, rc);
      chan_wake_peer(chan);
    }
    return 0;
  }
  uint64_t deadline = memport__deadline(timeout_ns);
  memport_buf_t buf;
  memset(&buf, 0, sizeof buf);
  rc = chan_alloc_internal(chan, len, &buf, deadline, timeout_ns);
  if (rc < 0)
    return rc;
  if (len != 0)
    memcpy(buf.data, data, len);
  rc = send_buf_internal(chan, &buf, deadline, timeout_ns);
  if (rc < 0 && BUF_KIND(buf.priv[0]) != 0)
    memport_chan_free_buf(chan, &buf);
  return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Receiving.                                                                                  */

/* A validated view of the next record. */
struct chan_rec {
  uint32_t type;
  const void *ptr;
  size_t len; /* of the message */
  struct memport__rec_pool pool;
  struct memport__rec_blob blob;
};

/* The next record, left in the ring. Drains the ring before reporting a dead peer. */
static int chan_next(memport_chan_t *ch, struct chan_rec *rec, int64_t timeout_ns) {
  if (MEMPORT__UNLIKELY(ch->broken))
    return ch->broken;
  if (MEMPORT__UNLIKELY(ch->held_inline))
    return MEMPORT_EBUSY;
  const void *p;
  size_t len;
  uint32_t type;
  int rc = memport__ring_peek(ch->rx, &p, &len, &type, 0, 0);
  if (rc == MEMPORT_EAGAIN) {
    /* Nothing waits: settle what we owe and learn what happened before sleeping or saying so. */
    if (ch->nrel != 0 && !ch->peer_dead && (rc = chan_flush(ch)) < 0)
      return rc;
    if (timeout_ns == 0 || ch->peer_dead) {
      if (!ch->peer_dead) {
        rc = memport__ring_arm_port_wake(ch->rx);
        if (rc < 0)
          return ring_error(ch, rc);
        rc = chan_drain(ch);
        if (rc < 0 && rc != MEMPORT_EPEER)
          return rc;
      }
      /* Anything committed before the peer died (or before we armed) is still delivered. */
      rc = memport__ring_peek(ch->rx, &p, &len, &type, 0, 0);
      if (rc == MEMPORT_EAGAIN)
        return ch->peer_dead ? MEMPORT_EPEER : MEMPORT_EAGAIN;
    } else {
      rc = memport__ring_peek(ch->rx, &p, &len, &type, timeout_ns, 0);
      if (rc == MEMPORT_EPEER) {
        rc = memport__ring_peek(ch->rx, &p, &len, &type, 0, 0);
        if (rc == MEMPORT_EAGAIN)
          return MEMPORT_EPEER;
      }
    }
  }
  if (MEMPORT__UNLIKELY(rc < 0))
    return ring_error(ch, rc);
  rec->type = type;
  if (MEMPORT__LIKELY(type == MEMPORT__REC_INLINE)) {
    rec->ptr = p;
    rec->len = len;
    return 0;
  }
  if (type == MEMPORT__REC_POOL && len == sizeof rec->pool) {
    memcpy(&rec->pool, p, sizeof rec->pool); /* once: the peer may change the ring under us */
    const struct memport__rec_pool *d = &rec->pool;
    if (d->index < ch->pn && !ch->pheld[d->index] && d->offset <= ch->pbufsize &&
        d->len <= ch->pbufsize - d->offset) {
      rec->ptr = ch->ppool + (size_t)d->index * ch->pbufsize + d->offset;
      rec->len = (size_t)d->len;
      return 0;
    }
  } else if (type == MEMPORT__REC_BLOB && len == sizeof rec->blob) {
    memcpy(&rec->blob, p, sizeof rec->blob);
    if (rec->blob.seq == ch->rx_blob_seq && rec->blob.len <= SIZE_MAX) {
      rec->ptr = NULL;
      rec->len = (size_t)rec->blob.len;
      return 0;
    }
  }
  return chan_break(ch, MEMPORT_EPROTO);
}

/* The region of the oversized message `rec` (sent over the port before its record), mapped. */
static int blob_take(memport_chan_t *ch, const struct chan_rec *rec, void **map, size_t *maplen) {
  /* Its region was sent before its record was committed, so it is in the port, but it may sit
   * behind more control messages than one drain reads (a release per pool buffer, sent while the
   * release queue was full): read on until it is there or the port is empty. The bound only
   * stops a peer that floods the port without ever sending the region. */
  for (unsigned n = 0; ch->stash_n == 0 && n < CHAN_BLOB_DRAIN_MAX; n++) {
    int rc = chan_pump(ch, MEMPORT_NOWAIT);
    if (rc == MEMPORT_EAGAIN || rc == MEMPORT_ETIMEDOUT || rc == MEMPORT_EPEER)
      break;
    if (rc < 0)
      return rc;
  }
  if (ch->stash_n == 0)
    return chan_break(ch, MEMPORT_EPROTO);
  struct chan_blob *s = &ch->stash[ch->stash_head];
  if (s->region == NULL) { /* its region never arrived (chan_pump): this message is lost */
    ch->stash_head = (ch->stash_head + 1) % MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT;
    ch->stash_n--;
    ch->rx_blob_seq++;
    int rc = ring_error(ch, memport__ring_release(ch->rx));
    return rc < 0 ? rc : MEMPORT_EMFILE;
  }
  if (s->len != rec->blob.len)
    return chan_break(ch, MEMPORT_EPROTO);
  int rc = memport_region_map(s->region, MEMPORT_MAP_READONLY, map);
  if (rc < 0)
    return rc;
  *maplen = memport_region_size(s->region);
  memport_region_close(s->region);
  s->region = NULL;
  ch->stash_head = (ch->stash_head + 1) % MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT;
  ch->stash_n--;
  ch->rx_blob_seq++;
  return 0;
}

int memport_chan_recv(memport_chan_t *chan, memport_buf_t *buf, int64_t timeout_ns) {
  if (chan == NULL || buf == NULL)
    return MEMPORT_EINVAL;
  struct chan_rec rec;
  int rc = chan_next(chan, &rec, timeout_ns);
  if (rc < 0)
    return rc;
  switch (rec.type) {
  case MEMPORT__REC_INLINE:
    chan->held_inline = true;
    buf->data = (void *)(uintptr_t)rec.ptr;
    buf->len = rec.len;
    buf->priv[0] = BUF_TAG(BUF_RX_INLINE, 0);
    buf->priv[1] = 0;
    buf->priv[2] = (uintptr_t)chan;
    return 0;
  case MEMPORT__REC_POOL:
    chan->pheld[rec.pool.index] = 1;
    chan->pgen[rec.pool.index] = rec.pool.gen;
    buf->data = (void *)(uintptr_t)rec.ptr;
    buf->len = rec.len;
    buf->priv[0] = BUF_TAG(BUF_RX_POOL, rec.pool.index);
    buf->priv[1] = 0;
    buf->priv[2] = (uintptr_t)chan;
    return ring_error(chan, memport__ring_release(chan->rx));
  default: {
    void *map;
    size_t maplen;
    rc = blob_take(chan, &rec, &map, &maplen);
    if (rc < 0)
      return rc;
    buf->data = map;
    buf->len = rec.len;
    buf->priv[0] = BUF_TAG(BUF_RX_BLOB, 0);
    buf->priv[1] = maplen;
    buf->priv[2] = (uintptr_t)chan;
    return ring_error(chan, memport__ring_release(chan->rx));
  }
  }
}

/* Give a pool buffer back to the peer: through the release queue in shared memory; when that is
 * full, over the port, batched while more messages wait (the application will call again) and
 * sent at once when nothing else waits or half the peer's pool is owed. */
static int rx_pool_release(memport_chan_t *ch, uint32_t i) {
  ch->pheld[i] = 0;
  if (ch->broken || ch->peer_dead)
    return 0;
  if (ch->nrel == 0) { /* keep the order simple: the queue only while nothing waits for the port */
    int rc = relq_push(ch, i, ch->pgen[i]);
    if (rc != 0)
      return rc > 0 ? 0 : chan_break(ch, rc);
  }
  /* Each owed release is a distinct buffer the peer still counts as in flight, so at most pn are
   * owed; more means the peer sent a buffer again before getting it back. */
  if (MEMPORT__UNLIKELY(ch->nrel >= ch->pn))
    return chan_break(ch, MEMPORT_EPROTO);
  ch->rel[ch->nrel].index = i;
  ch->rel[ch->nrel].gen = ch->pgen[i];
  ch->nrel++;
  if (ch->nrel * 2 >= ch->pn || memport__ring_readable(ch->rx) <= 0)
    return chan_flush(ch);
  return 0;
}

int memport_chan_release(memport_chan_t *chan, memport_buf_t *buf) {
  if (chan == NULL || buf == NULL || buf->priv[2] != (uintptr_t)chan)
    return MEMPORT_EINVAL;
  int rc = 0;
  switch (BUF_KIND(buf->priv[0])) {
  case BUF_RX_INLINE:
    if (!chan->held_inline)
      return MEMPORT_EINVAL;
    chan->held_inline = false;
    rc = chan->broken ? 0 : ring_error(chan, memport__ring_release(chan->rx));
    break;
  case BUF_RX_POOL: {
    uint32_t i = BUF_INDEX(buf->priv[0]);
    if (i >= chan->pn || !chan->pheld[i])
      return MEMPORT_EINVAL;
    rc = rx_pool_release(chan, i);
    break;
  }
  case BUF_RX_BLOB:
    memport_unmap(buf->data);
    break;
  default:
    return MEMPORT_EINVAL;
  }
  memset(buf, 0, sizeof *buf);
  return rc;
}

int memport_chan_recv_copy(memport_chan_t *chan, void *dst, size_t cap, size_t *len, int64_t timeout_ns) {
  if (chan == NULL || len == NULL || (dst == NULL && cap != 0))
    return MEMPORT_EINVAL;
  struct chan_rec rec;
  int rc = chan_next(chan, &rec, timeout_ns);
  if (rc < 0)
    return rc;
  *len = rec.len;
  if (rec.len > cap)
    return MEMPORT_EMSGSIZE; /* the record stays first in the ring */
  switch (rec.type) {
  case MEMPORT__REC_INLINE:
    if (rec.len != 0)
      memcpy(dst, rec.ptr, rec.len);
    return ring_error(chan, memport__ring_release(chan->rx));
  case MEMPORT__REC_POOL:
    if (rec.len != 0)
      memcpy(dst, rec.ptr, rec.len);
    chan->pheld[rec.pool.index] = 1;
    chan->pgen[rec.pool.index] = rec.pool.gen;
    rc = ring_error(chan, memport__ring_release(chan->rx));
    if (rc < 0)
      return rc;
    return rx_pool_release(chan, rec.pool.index);
  default: {
    void *map;
    size_t maplen;
    rc = blob_take(chan, &rec, &map, &maplen);
    if (rc < 0)
      return rc;
    if (rec.len != 0)
      memcpy(dst, map, rec.len);
    memport_unmap(map);
    return ring_error(chan, memport__ring_release(chan->rx));
  }
  }
}

int memport_chan_pollable(memport_chan_t *chan, memport_os_handle_t *out) {
  if (chan == NULL || out == NULL)
    return MEMPORT_EINVAL;
  if (chan->broken)
    return chan->broken;
  return memport_port_pollable(chan->port, out);
}
