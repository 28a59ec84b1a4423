/* SPDX-License-Identifier: MIT */
/* chan.c: the channel's API: options, handshake, sending and receiving through a ring per direction, zero-copy and oversized paths (chan_pool.c, chan_blob.c) and control traffic (chan_ctl.c). */
#include "chan.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHAN_DEFAULT_RING (1u << 20)
#define CHAN_DEFAULT_THRESHOLD (64u << 10)
#define CHAN_DEFAULT_POOL_BUFFER (8u << 20)
#define CHAN_DEFAULT_POOL_BUFFERS 8u
#define CHAN_DEFAULT_SPIN_NS 50000

_Static_assert(sizeof(struct memport__chan_link) <= 4096, "the link page fits the smallest page");

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

/* The options before `flags` was added (memport_chan_opts_init of an older memport.h). */
#define CHAN_OPTS_SIZE_V1 offsetof(memport_chan_opts_t, flags)

/* Check and normalize (page rounding, clamping) the options into *o; *field names the first
 * wrong one. */
static int opts_normalize(const memport_chan_opts_t *in, memport_chan_opts_t *o, const char **field) {
  *field = NULL;
  if (in == NULL) {
    memport_chan_opts_init(o);
  } else {
    if (in->struct_size != sizeof *in && in->struct_size != CHAN_OPTS_SIZE_V1) {
      *field = "struct_size";
      return MEMPORT_EINVAL;
    }
    memport_chan_opts_init(o);
    memcpy(o, in, in->struct_size);
    o->struct_size = sizeof *o;
  }
  size_t cap = memport__page_round(o->ring_capacity);
  if (o->ring_capacity == 0 || cap == 0 || cap > MEMPORT__RING_MAX_CAPACITY) {
    *field = "ring_capacity";
    return MEMPORT_EINVAL;
  }
  o->ring_capacity = cap;
  if (o->zerocopy_threshold > cap - MEMPORT__RING_HDR)
    o->zerocopy_threshold = cap - MEMPORT__RING_HDR; /* clamped: larger ones go zero-copy */
  if (o->pool_buffers > MEMPORT__POOL_MAX_BUFFERS) {
    *field = "pool_buffers";
    return MEMPORT_EINVAL;
  }
  if (o->pool_buffers != 0) {
    size_t bs = memport__page_round(o->pool_buffer_size);
    if (o->pool_buffer_size == 0 || bs == 0 || memport__pool_geometry_check(o->pool_buffers, bs) < 0) {
      *field = "pool_buffer_size";
      return MEMPORT_EINVAL;
    }
    o->pool_buffer_size = bs;
  } else {
    o->pool_buffer_size = 0;
  }
  if (o->wait_policy != MEMPORT_WAIT_BLOCK && o->wait_policy != MEMPORT_WAIT_SPIN &&
      o->wait_policy != MEMPORT_WAIT_ADAPTIVE) {
    *field = "wait_policy";
    return MEMPORT_EINVAL;
  }
  if (o->spin_ns < 0) {
    *field = "spin_ns";
    return MEMPORT_EINVAL;
  }
  if ((o->flags & ~(unsigned)MEMPORT_CHAN_NO_ONEOFF) != 0) {
    *field = "flags";
    return MEMPORT_EINVAL;
  }
  return 0;
}

static int opts_check(const memport_chan_opts_t *in, memport_chan_opts_t *o) {
  const char *field;
  return opts_normalize(in, o, &field);
}

int memport_chan_opts_check(const memport_chan_opts_t *opts, const char **field) {
  const char *f = NULL;
  memport_chan_opts_t o;
  int rc = opts == NULL ? MEMPORT_EINVAL : opts_normalize(opts, &o, &f);
  if (field != NULL)
    *field = f;
  return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Teardown and failure.                                                                       */

void memport__chan_free(memport_chan_t *ch) {
  memport__chan_lock_fini(ch);
  memport__chan_ready_close(ch);
  memport_ring_close(ch->tx_ring);
  memport_ring_close(ch->rx_ring);
  if (ch->tx_link != NULL)
    memport_unmap(ch->tx_link);
  if (ch->rx_link != NULL)
    memport_unmap(ch->rx_link);
  memport_region_close(ch->tx_link_region);
  memport__chan_pool_fini(ch);
  memport__chan_blob_fini(ch);
  memport__chan_blob_held_fini(ch);
  memport_port_close(ch->port);
  memport_msg_close(ch->ctl_out);
  memport_msg_close(ch->ctl_small);
  memport_msg_close(ch->ctl_in);
  free(ch);
}

/* Every later call fails with `err`; the port is closed at once so the peer sees MEMPORT_EPEER.
 * Mappings stay until memport_chan_close (buffers may point there). */
int memport__chan_break(memport_chan_t *ch, int err) {
  memport__chan_lock(ch);
  if (ch->broken == 0)
    ch->broken = err;
  memport_port_close(ch->port);
  ch->port = NULL;
  ch->owed_count = 0;
  memport__chan_unlock(ch);
  return ch->broken;
}

int memport__chan_ring_error(memport_chan_t *ch, int rc) {
  if (rc == MEMPORT_EPROTO)
    return memport__chan_break(ch, rc);
  return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* The TX ring, as the channel uses it.                                                        */

int memport__chan_commit(memport_chan_t *ch, size_t len, uint32_t type) {
  int rc = memport__ring_commit(ch->tx_ring, len, type);
  if (MEMPORT__UNLIKELY(rc < 0))
    return memport__chan_ring_error(ch, rc);
  /* The ring published the record (a seq_cst exchange); the receiver sets port_wake and then looks
   * at the ring: one of the two sees the other. */
  _Atomic uint32_t *w = &ch->tx_link->port_wake;
  if (MEMPORT__UNLIKELY(atomic_load_explicit(w, memory_order_seq_cst) != 0) &&
      atomic_exchange_explicit(w, 0, memory_order_seq_cst) != 0)
    memport__chan_send_wake(ch);
  return 0;
}

/* Ring waits go in slices of MEMPORT__CHAN_SLICE_NS: between them the channel looks at its port
 * (the peer's death, releases sent over the port, oversized messages announced). */
int memport__chan_reserve(memport_chan_t *ch, size_t len, void **slot, uint64_t deadline) {
  int rc = memport__ring_reserve(ch->tx_ring, len, slot, 0);
  while (rc == MEMPORT_ETIMEDOUT && deadline != 0) {
    uint64_t until = memport__slice_end(deadline, MEMPORT__CHAN_SLICE_NS);
    rc = memport__ring_reserve(ch->tx_ring, len, slot, until);
    if (rc != MEMPORT_ETIMEDOUT || until == deadline)
      break;
    rc = memport__chan_drain(ch);
    if (rc == 0)
      rc = MEMPORT_ETIMEDOUT;
  }
  if (rc == MEMPORT_ETIMEDOUT)
    memport__chan_tx_want(ch, memport__ring_record_space(len), false); /* for the pollable handle */
  return memport__chan_ring_error(ch, rc);
}

int memport__chan_wait_consumed(memport_chan_t *ch, uint64_t pos, uint64_t deadline) {
  int rc = memport__ring_wait_consumed(ch->tx_ring, pos, 0);
  while (rc == MEMPORT_ETIMEDOUT && deadline != 0) {
    uint64_t until = memport__slice_end(deadline, MEMPORT__CHAN_SLICE_NS);
    rc = memport__ring_wait_consumed(ch->tx_ring, pos, until);
    if (rc != MEMPORT_ETIMEDOUT || until == deadline)
      break;
    rc = memport__chan_drain(ch);
    if (rc == 0)
      rc = MEMPORT_ETIMEDOUT;
  }
  if (rc == MEMPORT_ETIMEDOUT)
    memport__chan_tx_want(ch, memport__ring_space_after(ch->tx_ring, pos), false); /* for the pollable handle */
  return memport__chan_ring_error(ch, rc);
}

/* ------------------------------------------------------------------------------------------ */
/* Handshake.                                                                                  */

/* Tickets (chan.h) of each channel start apart from every other channel's in this process, so a
 * buffer handed out by a closed channel does not match the tickets of a new one at its address. */
static uint64_t memport__chan_ticket_base(void) {
  static _Atomic uint64_t channels;
  return (atomic_fetch_add_explicit(&channels, 1, memory_order_relaxed) + 1) << 40;
}

static int chan_new(memport_chan_t **out, memport_port_t *port, const memport_chan_opts_t *o) {
  memport_chan_t *ch = calloc(1, sizeof *ch);
  if (ch == NULL) {
    memport_port_close(port);
    return MEMPORT_ENOMEM;
  }
  ch->port = port;
  ch->peer = port->peer; /* kept: memport_chan_peer answers after the port is gone */
  ch->bell.handle = ch->bell.self = MEMPORT_OS_HANDLE_INVALID;
  ch->zerocopy_threshold = o->zerocopy_threshold;
  ch->flags = o->flags;
  ch->next_tx_ticket = memport__chan_ticket_base();
  ch->next_rx_ticket = ch->next_tx_ticket | ((uint64_t)1 << 39);
  memport__wait_policy_set(&ch->wait, o->wait_policy, (uint64_t)o->spin_ns);
  int rc = memport__chan_lock_init(ch);
  if (rc < 0) {
    memport_port_close(port);
    free(ch);
    return rc;
  }
  rc = memport_msg_create(&ch->ctl_out);
  if (rc == 0)
    rc = memport_msg_create(&ch->ctl_small);
  if (rc == 0)
    rc = memport_msg_create(&ch->ctl_in);
  if (rc == 0)
    rc = memport_ring_create(&ch->tx_ring, o->ring_capacity, 0);
  if (rc == 0)
    rc = memport_region_create(&ch->tx_link_region, sizeof(struct memport__chan_link), 0);
  void *map = NULL;
  if (rc == 0)
    rc = memport_region_map(ch->tx_link_region, 0, &map);
  if (rc == 0) {
    ch->tx_link = map; /* zero: the queue is empty, the channel open */
    ch->tx_pool_returns.sh = &ch->tx_link->pool_releases;
    /* The peer asks for a wake from the start: its handle is ready once our first record is there. */
    atomic_store_explicit(&ch->tx_link->port_wake, 1u, memory_order_relaxed);
  }
  if (rc == 0 && o->pool_buffers != 0)
    rc = memport__chan_pool_setup(ch, o->pool_buffers, o->pool_buffer_size);
  if (rc < 0) {
    memport__chan_free(ch);
    return rc;
  }
  memport__ring_set_policy(ch->tx_ring, o->wait_policy, (uint64_t)o->spin_ns);
  *out = ch;
  return 0;
}

/* Our HELLO: our TX ring (4 handles), our pool read-only (1, when we have one), our link page (1). */
static int chan_send_hello(memport_chan_t *ch, uint64_t deadline) {
  struct memport__ctl_hello h;
  memset(&h, 0, sizeof h);
  h.hdr.magic = MEMPORT__CTL_MAGIC;
  h.hdr.type = MEMPORT__CTL_HELLO;
  h.version = MEMPORT__CHAN_VERSION;
  h.pool_buffers = ch->tx_pool.count;
  h.ring_capacity = memport_ring_max_record(ch->tx_ring) + MEMPORT__RING_HDR;
  h.pool_buffer_size = ch->tx_pool.buf_size;
  memport_msg_clear(ch->ctl_out);
  int rc = memport__ring_export_rx(ch->tx_ring, ch->ctl_out);
  if (ch->tx_pool_lend != NULL) {
    int rc2 = memport_msg_attach_region(ch->ctl_out, ch->tx_pool_lend, 0); /* moved, even on failure */
    ch->tx_pool_lend = NULL;
    if (rc == 0)
      rc = rc2;
  }
  if (rc == 0)
    rc = memport_msg_attach_region(ch->ctl_out, ch->tx_link_region, MEMPORT_ATTACH_COPY);
  if (rc == 0)
    rc = memport__chan_ctl_send(ch, ch->ctl_out, &h, sizeof h, deadline);
  memport_msg_clear(ch->ctl_out);
  return rc;
}

static int chan_recv_hello(memport_chan_t *ch, uint64_t deadline) {
  memport_msg_t *m = ch->ctl_in;
  int rc = memport__port_recv(ch->port, m, deadline);
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
  if (h.pool_buffers != 0 && memport__pool_geometry_check(h.pool_buffers, h.pool_buffer_size) < 0)
    goto out;
  size_t link_index = 4 + (h.pool_buffers != 0 ? 1 : 0);
  if (memport_msg_handle_count(m) != (int)link_index + 1)
    goto out;
  if (h.pool_buffers != 0 && memport_msg_handle_kind(m, 4) != MEMPORT_HANDLE_REGION)
    goto out;
  if (memport_msg_handle_kind(m, link_index) != MEMPORT_HANDLE_REGION)
    goto out;
  rc = memport__ring_import_rx(&ch->rx_ring, m, 0);
  if (rc < 0)
    goto out;
  rc = MEMPORT_EPROTO;
  if (memport_ring_max_record(ch->rx_ring) + MEMPORT__RING_HDR != h.ring_capacity)
    goto out;
  memport_region_t *link = NULL;
  rc = memport_msg_take_region(m, link_index, &link);
  if (rc < 0)
    goto out;
  void *map = NULL;
  if (memport_region_size(link) < sizeof(struct memport__chan_link) || memport_region_is_readonly(link) != 0)
    rc = MEMPORT_EPROTO;
  else
    rc = memport_region_map(link, 0, &map);
  memport_region_close(link);
  if (rc < 0)
    goto out;
  ch->rx_link = map;
  ch->rx_pool_returns.sh = &ch->rx_link->pool_releases;
  if (h.pool_buffers != 0) {
    rc = memport__chan_pool_adopt(ch, m, 4, h.pool_buffers, (size_t)h.pool_buffer_size);
    if (rc < 0)
      goto out;
  }
  memport__ring_set_policy(ch->rx_ring, ch->wait.policy, ch->wait.spin_ns);
  rc = 0;
out:
  memport_msg_clear(m);
  return rc;
}

/* Our half of the handshake: the endpoint made (owned by this process, which announces its
 * close) and our HELLO sent within `deadline`. */
static int chan_start(memport_chan_t **out, memport_port_t *port, const memport_chan_opts_t *o, uint64_t deadline) {
  memport_chan_t *ch;
  int rc = chan_new(&ch, port, o);
  if (rc < 0)
    return rc;
  ch->owner = getpid(); /* a copy inherited through fork closes silently */
  rc = chan_send_hello(ch, deadline);
  if (rc < 0) {
    memport__chan_free(ch);
    return rc;
  }
  *out = ch;
  return 0;
}

static int chan_open(memport_chan_t **out, memport_port_t *port, const memport_chan_opts_t *o, uint64_t deadline) {
  memport_chan_t *ch;
  int rc = chan_start(&ch, port, o, deadline);
  if (rc < 0)
    return rc;
  rc = chan_recv_hello(ch, deadline);
  if (rc < 0) {
    memport__chan_free(ch);
    return rc;
  }
  *out = ch;
  return 0;
}

/* The two halves of chan_open for a server that must not wait (chan_accept.c): our side made and
 * our HELLO sent without waiting (on a fresh connection it always fits), then the peer's HELLO. */
int memport__chan_handshake_start(memport_chan_t **out, memport_port_t *port, const memport_chan_opts_t *opts) {
  memport_chan_opts_t o;
  int rc = opts_check(opts, &o);
  if (rc < 0) {
    memport_port_close(port);
    return rc;
  }
  rc = chan_start(out, port, &o, 0);
  return rc == MEMPORT_ETIMEDOUT ? MEMPORT_EPEER : rc; /* a fresh connection that takes nothing */
}

int memport__chan_handshake_finish(memport_chan_t *ch, uint64_t deadline) { return chan_recv_hello(ch, deadline); }

int memport__chan_opts_valid(const memport_chan_opts_t *opts) {
  memport_chan_opts_t o;
  return opts_check(opts, &o);
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
  return memport__nowait_code(chan_open(out, port, &o, memport__deadline(timeout_ns)), timeout_ns);
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
    rc = chan_send_hello(ca, MEMPORT__NO_DEADLINE);
  if (rc == 0)
    rc = chan_send_hello(cb, MEMPORT__NO_DEADLINE);
  if (rc == 0)
    rc = chan_recv_hello(ca, MEMPORT__NO_DEADLINE);
  if (rc == 0)
    rc = chan_recv_hello(cb, MEMPORT__NO_DEADLINE);
  if (rc < 0) {
    if (cb != NULL)
      memport__chan_free(cb);
    memport__chan_free(ca);
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
  rc = memport__port_connect(&port, name, deadline);
  if (rc < 0)
    return rc; /* as memport_port_connect(3) */
  return memport__nowait_code(chan_open(out, port, &o, deadline), timeout_ns);
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
  rc = memport__service_accept(svc, &port, deadline);
  if (rc < 0)
    return memport__nowait_code(rc, timeout_ns); /* nobody connected: MEMPORT_EAGAIN for NOWAIT */
  memport_chan_t *ch;
  rc = memport__chan_handshake_start(&ch, port, &o);
  if (rc < 0)
    return rc;
  /* A connection was taken from the service: its client's HELLO gets at least the grace period,
   * whatever the timeout, so that MEMPORT_NOWAIT never drops a client that is a moment behind.
   * MEMPORT_ETIMEDOUT here means the handshake timed out (memport_chan_accept(3)). */
  uint64_t grace = memport__deadline(MEMPORT__CHAN_ACCEPT_GRACE_NS);
  rc = memport__chan_handshake_finish(ch, deadline > grace ? deadline : grace);
  if (rc < 0) {
    memport__chan_free(ch);
    return rc;
  }
  *out = ch;
  return 0;
}

int memport_chan_close(memport_chan_t *chan) {
  if (chan == NULL)
    return 0;
  if (chan->broken == 0 && !chan->peer_gone)
    (void)memport__chan_pool_flush(chan);
  memport__chan_close_announce(chan);
  memport__chan_free(chan);
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Sending. The public calls compute their deadline once, and only when they must wait; NOWAIT  */
/* becomes MEMPORT_EAGAIN here, at the edge.                                                    */

/* A send path failed: after waiting in vain (or not at all), make the pollable handle wait for
 * what it lacked; a peer gone after its orderly close gives MEMPORT_ECLOSED. */
static int tx_fail(memport_chan_t *ch, int rc, int64_t timeout_ns) {
  if (rc == MEMPORT_ETIMEDOUT || rc == MEMPORT_EAGAIN)
    memport__chan_tx_idle(ch);
  rc = memport__chan_tx_code(ch, rc);
  return memport__nowait_code(rc, timeout_ns);
}

static int chan_alloc(memport_chan_t *ch, size_t len, memport_buf_t *buf, uint64_t deadline) {
  int rc = memport__chan_pool_alloc(ch, len, buf, deadline);
  if (rc <= 0)
    return rc;
  if (ch->flags & MEMPORT_CHAN_NO_ONEOFF) { /* oversized (or no pool): refused */
    ch->stats.oneoff_refused++;
    return MEMPORT_EMSGSIZE;
  }
  return memport__chan_blob_alloc(ch, len, buf); /* oversized (or no pool) */
}

static int chan_alloc_impl(memport_chan_t *chan, size_t len, memport_buf_t *buf, int64_t timeout_ns) {
  if (chan == NULL || buf == NULL)
    return MEMPORT_EINVAL;
  memset(buf, 0, sizeof *buf);
  int rc = memport__chan_live(chan);
  if (rc < 0)
    return memport__chan_tx_code(chan, rc);
  /* Only a pool without a free buffer may wait. */
  bool may_wait = chan->tx_pool.count != 0 && len <= chan->tx_pool.buf_size && !memport__pool_has_free(&chan->tx_pool);
  rc = chan_alloc(chan, len, buf, may_wait ? memport__deadline(timeout_ns) : 0);
  return rc < 0 ? tx_fail(chan, rc, timeout_ns) : rc;
}

static int chan_free_buf_impl(memport_chan_t *chan, memport_buf_t *buf) {
  if (chan == NULL || buf == NULL)
    return MEMPORT_EINVAL;
  switch (MEMPORT__BUF_KIND(buf->priv[0])) {
  case MEMPORT__BUF_TX_POOL:
    return memport__chan_pool_free(chan, buf);
  case MEMPORT__BUF_TX_BLOB:
    return memport__chan_blob_free(chan, buf);
  default:
    return MEMPORT_EINVAL;
  }
}

static int chan_send_buf_impl(memport_chan_t *chan, memport_buf_t *buf, int64_t timeout_ns) {
  if (chan == NULL || buf == NULL)
    return MEMPORT_EINVAL;
  int rc = memport__chan_live(chan);
  if (rc < 0)
    return memport__chan_tx_code(chan, rc);
  switch (MEMPORT__BUF_KIND(buf->priv[0])) {
  case MEMPORT__BUF_TX_POOL:
    rc = memport__chan_pool_send(chan, buf, 0); /* fails before changing anything when it must wait */
    if (rc == MEMPORT_ETIMEDOUT && timeout_ns != 0)
      rc = memport__chan_pool_send(chan, buf, memport__deadline(timeout_ns));
    break;
  case MEMPORT__BUF_TX_BLOB:
    rc = memport__chan_blob_send(chan, buf, memport__deadline(timeout_ns));
    break;
  default:
    return MEMPORT_EINVAL;
  }
  return rc < 0 ? tx_fail(chan, rc, timeout_ns) : rc;
}

int memport__chan_send_impl(memport_chan_t *chan, const void *data, size_t len, unsigned flags, int64_t timeout_ns) {
  if (chan == NULL || (data == NULL && len != 0) || (flags & ~MEMPORT_SEND_ZEROCOPY) != 0)
    return MEMPORT_EINVAL;
  int rc = memport__chan_live(chan);
  if (rc < 0)
    return memport__chan_tx_code(chan, rc);
  if (MEMPORT__LIKELY(len <= chan->zerocopy_threshold && !(flags & MEMPORT_SEND_ZEROCOPY))) {
    void *p;
    rc = memport__ring_reserve(chan->tx_ring, len, &p, 0);
    if (MEMPORT__UNLIKELY(rc < 0)) {
      if (rc == MEMPORT_ETIMEDOUT && timeout_ns != 0) {
        rc = memport__chan_reserve(chan, len, &p, memport__deadline(timeout_ns));
      } else {
        if (rc == MEMPORT_ETIMEDOUT)
          memport__chan_tx_want(chan, memport__ring_record_space(len), false);
        rc = memport__chan_ring_error(chan, rc);
      }
      if (rc < 0)
        return tx_fail(chan, rc, timeout_ns);
    }
    if (len != 0)
      memcpy(p, data, len);
    rc = memport__chan_commit(chan, len, MEMPORT__REC_INLINE);
    chan->stats.tx_msgs[0]++;
    chan->stats.tx_bytes[0] += len;
    return rc;
  }
  uint64_t deadline = memport__deadline(timeout_ns);
  memport_buf_t buf;
  memset(&buf, 0, sizeof buf);
  rc = chan_alloc(chan, len, &buf, deadline);
  if (rc < 0)
    return tx_fail(chan, rc, timeout_ns);
  if (len != 0)
    memcpy(buf.data, data, len);
  if (MEMPORT__BUF_KIND(buf.priv[0]) == MEMPORT__BUF_TX_POOL)
    rc = memport__chan_pool_send(chan, &buf, deadline);
  else
    rc = memport__chan_blob_send(chan, &buf, deadline);
  if (rc < 0 && MEMPORT__BUF_KIND(buf.priv[0]) != 0)
    chan_free_buf_impl(chan, &buf);
  return rc < 0 ? tx_fail(chan, rc, timeout_ns) : rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Receiving.                                                                                  */

/* Wait for a record (none was there a moment ago), in slices that look at the port. After the
 * last record the peer sent before closing comes MEMPORT_ECLOSED; after its death MEMPORT_EPEER. */
static int chan_wait_record(memport_chan_t *ch, const void **p, size_t *len, uint32_t *type, uint64_t deadline) {
  int rc;
  /* Nothing waits: settle what we owe and learn what happened before sleeping or saying so. */
  if (ch->owed_count != 0 && !ch->peer_gone && (rc = memport__chan_pool_flush(ch)) < 0)
    return rc;
  if (deadline == 0 || ch->peer_gone) {
    /* Ask for a wake through the port (the pollable handle), then look again. */
    memport__chan_rx_idle(ch);
    if (ch->broken)
      return ch->broken;
    /* Anything committed before the peer closed or died (or before we asked) is still delivered. */
    rc = memport__ring_peek(ch->rx_ring, p, len, type, 0);
    if (rc == MEMPORT_ETIMEDOUT) {
      int end = memport__chan_rx_end(ch);
      if (end < 0)
        return end;
      rc = memport__ring_peek(ch->rx_ring, p, len, type, 0);
    }
    return rc;
  }
  for (;;) {
    uint64_t until = memport__slice_end(deadline, MEMPORT__CHAN_SLICE_NS);
    rc = memport__ring_peek(ch->rx_ring, p, len, type, until);
    if (rc != MEMPORT_ETIMEDOUT)
      return rc;
    int end = memport__chan_rx_end(ch);
    if (end < 0)
      return end;
    if (until == deadline)
      return rc;
    rc = memport__chan_drain(ch);
    if (rc == MEMPORT_EPEER) {
      rc = memport__ring_peek(ch->rx_ring, p, len, type, 0);
      if (rc == MEMPORT_ETIMEDOUT && (end = memport__chan_rx_end(ch)) < 0)
        return end;
      return rc == MEMPORT_ETIMEDOUT ? MEMPORT_EPEER : rc;
    }
    if (rc < 0)
      return rc;
  }
}

/* The next record, left in the ring, validated. Drains the ring before reporting a dead peer. */
static int chan_next(memport_chan_t *ch, struct memport__chan_rec *rec, int64_t timeout_ns) {
  if (MEMPORT__UNLIKELY(ch->broken))
    return ch->broken;
  if (MEMPORT__UNLIKELY(ch->holding_inline))
    return MEMPORT_EBUSY;
  const void *p;
  size_t len;
  uint32_t type;
  int rc = memport__ring_peek(ch->rx_ring, &p, &len, &type, 0);
  if (rc == MEMPORT_ETIMEDOUT)
    rc = memport__nowait_code(chan_wait_record(ch, &p, &len, &type, memport__deadline(timeout_ns)), timeout_ns);
  if (MEMPORT__UNLIKELY(rc < 0))
    return memport__chan_ring_error(ch, rc);
  rec->type = type;
  if (MEMPORT__LIKELY(type == MEMPORT__REC_INLINE)) {
    rec->ptr = p;
    rec->len = len;
    return 0;
  }
  if (type == MEMPORT__REC_POOL && len == sizeof rec->pool) {
    if (memport__chan_pool_find(ch, rec, p))
      return 0;
  } else if (type == MEMPORT__REC_BLOB && len == sizeof rec->blob) {
    memcpy(&rec->blob, p, sizeof rec->blob); /* once: the peer may change the ring under us */
    if (rec->blob.seq == ch->rx_blob_seq && rec->blob.len <= SIZE_MAX) {
      rec->ptr = NULL;
      rec->len = (size_t)rec->blob.len;
      return 0;
    }
  } else if (type == MEMPORT__REC_HANDLES && len >= sizeof rec->handles) {
    memcpy(&rec->handles, p, sizeof rec->handles); /* once */
    if (rec->handles.seq == ch->rx_blob_seq && rec->handles.count != 0 &&
        rec->handles.count <= MEMPORT_MSG_MAX_HANDLES) {
      rec->ptr = (const unsigned char *)p + sizeof rec->handles;
      rec->len = len - sizeof rec->handles;
      return 0;
    }
  }
  return memport__chan_break(ch, MEMPORT_EPROTO);
}

/* Release the record at the head of the RX ring; a sender waiting for space is told. */
static int chan_release_record(memport_chan_t *ch) {
  int rc = memport__ring_release(ch->rx_ring);
  if (MEMPORT__UNLIKELY(rc < 0))
    return memport__chan_ring_error(ch, rc);
  memport__chan_released(ch);
  return 0;
}

/* memport_chan_recv, and memport_chan_recv_msg when `handles` is not NULL (the handles of a
 * message that carries some go there; with NULL they are closed). */
static int chan_recv_impl(memport_chan_t *chan, memport_buf_t *buf, memport_msg_t *handles, int64_t timeout_ns) {
  if (chan == NULL || buf == NULL)
    return MEMPORT_EINVAL;
  struct memport__chan_rec rec;
  int rc = chan_next(chan, &rec, timeout_ns);
  if (rc < 0)
    return rc;
  switch (rec.type) {
  case MEMPORT__REC_HANDLES:
    rc = memport__chan_handles_take(chan, &rec, handles);
    if (rc < 0)
      return rc;
    /* fall through - its bytes are held in the ring as an inline message's */
  case MEMPORT__REC_INLINE:
    chan->holding_inline = true;
    chan->rx_inline_ticket = memport__chan_rx_ticket(chan);
    memport__chan_buf_set(chan, buf, (void *)(uintptr_t)rec.ptr, rec.len, MEMPORT__BUF_RX_INLINE, 0,
                          chan->rx_inline_ticket);
    chan->stats.rx_msgs[0]++;
    chan->stats.rx_bytes[0] += rec.len;
    return 0;
  case MEMPORT__REC_POOL:
    memport__chan_pool_hold(chan, &rec);
    memport__chan_buf_set(chan, buf, (void *)(uintptr_t)rec.ptr, rec.len, MEMPORT__BUF_RX_POOL, rec.pool.index,
                          memport__chan_pool_hand_out(chan, rec.pool.index));
    return chan_release_record(chan);
  default: {
    void *map;
    size_t maplen;
    rc = memport__chan_blob_take(chan, &rec, &map, &maplen);
    if (rc < 0)
      return rc;
    rc = memport__chan_blob_hold(chan, map, maplen, rec.len, buf);
    if (rc < 0) { /* the record stays; the region is gone: this message is lost */
      memport_unmap(map);
      (void)chan_release_record(chan);
      return rc;
    }
    chan->stats.rx_msgs[2]++;
    chan->stats.rx_bytes[2] += rec.len;
    return chan_release_record(chan);
  }
  }
}

static int chan_release_impl(memport_chan_t *chan, memport_buf_t *buf) {
  if (chan == NULL || buf == NULL || buf->priv[2] != (uintptr_t)chan)
    return MEMPORT_EINVAL;
  int rc = 0;
  switch (MEMPORT__BUF_KIND(buf->priv[0])) {
  case MEMPORT__BUF_RX_INLINE:
    if (!chan->holding_inline || buf->priv[1] != chan->rx_inline_ticket)
      return MEMPORT_EINVAL;
    chan->holding_inline = false;
    rc = chan->broken ? 0 : chan_release_record(chan);
    break;
  case MEMPORT__BUF_RX_POOL: {
    uint32_t i;
    if (!memport__chan_pool_held(chan, buf, &i))
      return MEMPORT_EINVAL;
    rc = memport__chan_pool_release(chan, i);
    break;
  }
  case MEMPORT__BUF_RX_BLOB:
    if (memport__chan_blob_release(chan, buf) < 0)
      return MEMPORT_EINVAL;
    break;
  default:
    return MEMPORT_EINVAL;
  }
  memset(buf, 0, sizeof *buf);
  return rc;
}

/* The same checks as a release, nothing changed: the kind of a buffer received and still held. */
static int chan_buf_kind_impl(memport_chan_t *chan, const memport_buf_t *buf) {
  if (buf->priv[2] != (uintptr_t)chan)
    return MEMPORT_EINVAL;
  uint32_t i;
  switch (MEMPORT__BUF_KIND(buf->priv[0])) {
  case MEMPORT__BUF_RX_INLINE:
    return chan->holding_inline && buf->priv[1] == chan->rx_inline_ticket ? MEMPORT_CHAN_BUF_RING : MEMPORT_EINVAL;
  case MEMPORT__BUF_RX_POOL:
    return memport__chan_pool_held(chan, buf, &i) ? MEMPORT_CHAN_BUF_POOL : MEMPORT_EINVAL;
  case MEMPORT__BUF_RX_BLOB:
    return memport__chan_blob_held(chan, buf) ? MEMPORT_CHAN_BUF_REGION : MEMPORT_EINVAL;
  default:
    return MEMPORT_EINVAL;
  }
}

static int chan_recv_copy_impl(memport_chan_t *chan, void *dst, size_t cap, size_t *len, int64_t timeout_ns) {
  if (chan == NULL || len == NULL || (dst == NULL && cap != 0))
    return MEMPORT_EINVAL;
  struct memport__chan_rec rec;
  int rc = chan_next(chan, &rec, timeout_ns);
  if (rc < 0)
    return rc;
  *len = rec.len;
  if (rec.len > cap)
    return MEMPORT_EMSGSIZE; /* the record stays first in the ring */
  switch (rec.type) {
  case MEMPORT__REC_HANDLES:
    rc = memport__chan_handles_take(chan, &rec, NULL); /* closed: a copy takes the bytes only */
    if (rc < 0)
      return rc;
    /* fall through */
  case MEMPORT__REC_INLINE:
    if (rec.len != 0)
      memcpy(dst, rec.ptr, rec.len);
    chan->stats.rx_msgs[0]++;
    chan->stats.rx_bytes[0] += rec.len;
    return chan_release_record(chan);
  case MEMPORT__REC_POOL:
    if (rec.len != 0)
      memcpy(dst, rec.ptr, rec.len);
    memport__chan_pool_hold(chan, &rec);
    rc = chan_release_record(chan);
    if (rc < 0)
      return rc;
    return memport__chan_pool_release(chan, rec.pool.index);
  default: {
    void *map;
    size_t maplen;
    rc = memport__chan_blob_take(chan, &rec, &map, &maplen);
    if (rc < 0)
      return rc;
    if (rec.len != 0)
      memcpy(dst, map, rec.len);
    memport_unmap(map);
    chan->stats.rx_msgs[2]++;
    chan->stats.rx_bytes[2] += rec.len;
    return chan_release_record(chan);
  }
  }
}

int memport_chan_peer(const memport_chan_t *chan, memport_cred_t *out) {
  if (chan == NULL || out == NULL)
    return MEMPORT_EINVAL;
  *out = chan->peer;
  return 0;
}

int memport_chan_pollable(memport_chan_t *chan, memport_os_handle_t *out) {
  if (chan == NULL || out == NULL)
    return MEMPORT_EINVAL;
  if (chan->broken)
    return chan->broken;
  memport__chan_lock(chan);
  int rc = memport__chan_ready_open(chan);
  if (rc == 0)
    *out = chan->bell.handle;
  memport__chan_unlock(chan);
  return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* One thread per direction (chan_lock.c): a second call of the same direction is refused.      */

#define CHAN_ONE_AT_A_TIME(busy, call)   \
  do {                                   \
    int rc_ = memport__chan_enter(busy); \
    if (rc_ == 0) {                      \
      rc_ = (call);                      \
      memport__chan_leave(busy);         \
    }                                    \
    return rc_;                          \
  } while (0)

int memport_chan_alloc(memport_chan_t *chan, size_t len, memport_buf_t *buf, int64_t timeout_ns) {
  if (chan == NULL || buf == NULL)
    return MEMPORT_EINVAL;
  CHAN_ONE_AT_A_TIME(&chan->tx_busy, chan_alloc_impl(chan, len, buf, timeout_ns));
}

int memport_chan_free_buf(memport_chan_t *chan, memport_buf_t *buf) {
  if (chan == NULL || buf == NULL)
    return MEMPORT_EINVAL;
  CHAN_ONE_AT_A_TIME(&chan->tx_busy, chan_free_buf_impl(chan, buf));
}

int memport_chan_send_buf(memport_chan_t *chan, memport_buf_t *buf, int64_t timeout_ns) {
  if (chan == NULL || buf == NULL)
    return MEMPORT_EINVAL;
  CHAN_ONE_AT_A_TIME(&chan->tx_busy, chan_send_buf_impl(chan, buf, timeout_ns));
}

int memport_chan_send(memport_chan_t *chan, const void *data, size_t len, unsigned flags, int64_t timeout_ns) {
  if (chan == NULL)
    return MEMPORT_EINVAL;
  CHAN_ONE_AT_A_TIME(&chan->tx_busy, memport__chan_send_impl(chan, data, len, flags, timeout_ns));
}

int memport_chan_recv(memport_chan_t *chan, memport_buf_t *buf, int64_t timeout_ns) {
  if (chan == NULL || buf == NULL)
    return MEMPORT_EINVAL;
  CHAN_ONE_AT_A_TIME(&chan->rx_busy, chan_recv_impl(chan, buf, NULL, timeout_ns));
}

int memport_chan_recv_msg(memport_chan_t *chan, memport_buf_t *buf, memport_msg_t *handles, int64_t timeout_ns) {
  if (chan == NULL || buf == NULL || handles == NULL)
    return MEMPORT_EINVAL;
  memport_msg_clear(handles);
  CHAN_ONE_AT_A_TIME(&chan->rx_busy, chan_recv_impl(chan, buf, handles, timeout_ns));
}

int memport_chan_send_msg(memport_chan_t *chan, const void *data, size_t len, memport_msg_t *handles, unsigned flags,
                          int64_t timeout_ns) {
  if (chan == NULL)
    return MEMPORT_EINVAL;
  CHAN_ONE_AT_A_TIME(&chan->tx_busy, memport__chan_send_msg_impl(chan, data, len, handles, flags, timeout_ns));
}

int memport_chan_release(memport_chan_t *chan, memport_buf_t *buf) {
  if (chan == NULL || buf == NULL)
    return MEMPORT_EINVAL;
  CHAN_ONE_AT_A_TIME(&chan->rx_busy, chan_release_impl(chan, buf));
}

int memport_chan_buf_kind(memport_chan_t *chan, const memport_buf_t *buf) {
  if (chan == NULL || buf == NULL)
    return MEMPORT_EINVAL;
  CHAN_ONE_AT_A_TIME(&chan->rx_busy, chan_buf_kind_impl(chan, buf));
}

int memport_chan_recv_copy(memport_chan_t *chan, void *dst, size_t cap, size_t *len, int64_t timeout_ns) {
  if (chan == NULL)
    return MEMPORT_EINVAL;
  CHAN_ONE_AT_A_TIME(&chan->rx_busy, chan_recv_copy_impl(chan, dst, cap, len, timeout_ns));
}
