/* SPDX-License-Identifier: MIT */
/* chan_pool.c: the channel's zero-copy path: our pool lent to the peer, the peer's pool held here, and the releases between them. */
#include "chan.h"

#include <stdlib.h>
#include <string.h>

/* Our pool is made when first needed (memport__chan_pool_alloc): a side that never sends
 * zero-copy never maps it. Its read-only handle reaches the peer in a MEMPORT__CTL_POOL message
 * sent ahead of the first record that names one of its buffers. */
int memport__chan_pool_setup(memport_chan_t *ch, uint32_t count, size_t buf_size) {
  ch->tx_pool_want_count = count;
  ch->tx_pool_want_size = buf_size;
  return 0;
}

/* Under ctl_lock: the receiving side's thread reads tx_pool.count and port_returns
 * (memport__chan_pool_returned). */
static int pool_make_locked(memport_chan_t *ch) {
  uint32_t count = ch->tx_pool_want_count;
  ch->tx_pool_loans = calloc(count, sizeof ch->tx_pool_loans[0]);
  ch->port_returns = calloc(count, sizeof ch->port_returns[0]);
  int rc = ch->tx_pool_loans == NULL || ch->port_returns == NULL
               ? MEMPORT_ENOMEM
               : memport__pool_create(&ch->tx_pool, count, ch->tx_pool_want_size, &ch->tx_pool_lend);
  if (rc < 0) {
    free(ch->tx_pool_loans);
    free(ch->port_returns);
    ch->tx_pool_loans = NULL;
    ch->port_returns = NULL;
  }
  return rc;
}

static int pool_make(memport_chan_t *ch) {
  memport__chan_lock(ch);
  int rc = pool_make_locked(ch);
  memport__chan_unlock(ch);
  return rc;
}

/* The peer's pool: `region` is the caller's. */
static int pool_adopt(memport_chan_t *ch, memport_region_t *region, uint32_t count, size_t buf_size) {
  int rc = memport__pool_view_open(&ch->rx_pool, region, count, buf_size);
  if (rc < 0)
    return rc;
  /* Each owed release is a distinct buffer of the peer's: at most `count`. */
  ch->owed_releases = calloc(count, sizeof ch->owed_releases[0]);
  ch->rx_pool_tickets = calloc(count, sizeof ch->rx_pool_tickets[0]);
  if (ch->owed_releases == NULL || ch->rx_pool_tickets == NULL) {
    free(ch->owed_releases);
    free(ch->rx_pool_tickets);
    ch->owed_releases = NULL;
    ch->rx_pool_tickets = NULL;
    memport__pool_view_close(&ch->rx_pool);
    return MEMPORT_ENOMEM;
  }
  /* The receiving side uses rx_pool without the lock once it sees this. */
  atomic_store_explicit(&ch->rx_pool_ready, true, memory_order_release);
  return 0;
}

int memport__chan_pool_adopt(memport_chan_t *ch, memport_msg_t *hello, size_t index, uint32_t count,
                             size_t buf_size) {
  memport_region_t *region = NULL;
  int rc = memport_msg_take_region(hello, index, &region);
  if (rc < 0)
    return rc;
  rc = pool_adopt(ch, region, count, buf_size);
  memport_region_close(region);
  return rc;
}

int memport__chan_pool_arrived(memport_chan_t *ch, memport_msg_t *m, const unsigned char *b, size_t len) {
  struct memport__ctl_pool c;
  if (len != sizeof c || memport_msg_handle_count(m) != 1 || memport_msg_handle_kind(m, 0) != MEMPORT_HANDLE_REGION)
    return MEMPORT_EPROTO;
  memcpy(&c, b, sizeof c);
  if (ch->rx_pool.count != 0 || memport__pool_geometry_check(c.buffers, c.buffer_size) < 0)
    return MEMPORT_EPROTO; /* a second pool, or an impossible one */
  memport_region_t *region = NULL;
  int rc = memport_msg_take_region(m, 0, &region);
  if (rc < 0)
    return rc;
  rc = pool_adopt(ch, region, c.buffers, (size_t)c.buffer_size);
  memport_region_close(region);
  return rc;
}

void memport__chan_pool_fini(memport_chan_t *ch) {
  memport__pool_destroy(&ch->tx_pool);
  memport_region_close(ch->tx_pool_lend);
  ch->tx_pool_lend = NULL;
  memport__pool_view_close(&ch->rx_pool);
  free(ch->owed_releases);
  ch->owed_releases = NULL;
  free(ch->tx_pool_loans);
  ch->tx_pool_loans = NULL;
  free(ch->port_returns);
  ch->port_returns = NULL;
  free(ch->rx_pool_tickets);
  ch->rx_pool_tickets = NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Our pool.                                                                                   */

/* Releases the peer sent over the port (read by either side's thread, kept under ctl_lock). */
static int take_port_returns(memport_chan_t *ch) {
  int rc = 0;
  memport__chan_lock(ch);
  for (uint32_t i = 0; i < ch->port_returns_count && rc == 0; i++)
    rc = memport__pool_return(&ch->tx_pool, ch->port_returns[i].index, ch->port_returns[i].gen);
  ch->port_returns_count = 0;
  atomic_store_explicit(&ch->port_returns_pending, false, memory_order_relaxed);
  memport__chan_unlock(ch);
  return rc;
}

/* Take back the buffers the peer queued in our link page or sent over the port (after its death
 * the pool is ours: the sending side takes it back here, once). */
static int collect(memport_chan_t *ch) {
  if (ch->peer_gone) {
    if (!ch->tx_pool_reclaimed) {
      ch->tx_pool_reclaimed = true;
      memport__pool_reclaim(&ch->tx_pool);
    }
    return 0;
  }
  int rc = 0;
  if (MEMPORT__UNLIKELY(atomic_load_explicit(&ch->port_returns_pending, memory_order_relaxed)))
    rc = take_port_returns(ch);
  if (rc == 0)
    rc = memport__pool_collect(&ch->tx_pool, &ch->tx_pool_returns);
  return rc < 0 ? memport__chan_break(ch, rc) : 0;
}

static bool blobs_full(memport_chan_t *ch) {
  memport__chan_lock(ch);
  bool full = memport__chan_blobs_full(ch);
  memport__chan_unlock(ch);
  return full;
}

static int pool_ready(void *arg) {
  memport_chan_t *ch = arg;
  int rc = collect(ch);
  return rc < 0 ? rc : memport__pool_has_free(&ch->tx_pool);
}

/* Wait for one of our pool buffers to come back: from the release queue (spinning as the wait
 * policy says, looking at the port every slice), or, asleep, from the port (a wake after the peer
 * queued one, a release sent over the port when its queue was full, or the peer's death). */
static int pool_wait(memport_chan_t *ch, uint64_t deadline) {
  int rc = collect(ch);
  if (rc == 0 && !memport__pool_has_free(&ch->tx_pool)) {
    rc = memport__chan_drain(ch);
    if (rc == 0)
      rc = collect(ch);
  }
  if (rc < 0 || memport__pool_has_free(&ch->tx_pool))
    return rc;
  for (;;) {
    uint64_t until = deadline == 0 ? 0 : memport__slice_end(deadline, MEMPORT__CHAN_SLICE_NS);
    rc = memport__wait_spin(&ch->wait, pool_ready, ch, until);
    if (rc != MEMPORT_ETIMEDOUT || until == deadline)
      break;
    if ((rc = memport__chan_drain(ch)) < 0)
      return rc;
  }
  if (rc != MEMPORT__WAIT_SLEEP)
    return rc;
  static const struct memport__wait_policy spin = {MEMPORT_WAIT_SPIN, 0};
  for (;;) {
    memport__relq_arm(&ch->tx_pool_returns);
    rc = collect(ch);
    if (rc == 0 && !memport__pool_has_free(&ch->tx_pool) && memport__expired(deadline))
      rc = MEMPORT_ETIMEDOUT;
    if (rc < 0 || memport__pool_has_free(&ch->tx_pool)) {
      memport__relq_disarm(&ch->tx_pool_returns);
      return rc;
    }
    rc = memport__chan_pool_flush(ch);
    if (rc == 0 && MEMPORT__UNLIKELY(blobs_full(ch))) {
      /* The port is not read (see memport__chan_pump): poll the queue for a slice instead. */
      rc = memport__wait_spin(&spin, pool_ready, ch, memport__slice_end(deadline, MEMPORT__CHAN_SLICE_NS));
      if (rc == MEMPORT_ETIMEDOUT)
        rc = memport__chan_pump(ch, 0); /* is the peer still there? */
    } else if (rc == 0) {
      /* In slices: the other direction's thread needs ctl_lock meanwhile. */
      rc = memport__chan_pump(ch, memport__slice_end(deadline, MEMPORT__CHAN_LOCK_SLICE_NS));
    }
    if (rc < 0 && rc != MEMPORT_ETIMEDOUT && rc != MEMPORT_EAGAIN) {
      memport__relq_disarm(&ch->tx_pool_returns);
      return rc;
    }
  }
}

int memport__chan_pool_alloc(memport_chan_t *ch, size_t len, memport_buf_t *buf, uint64_t deadline) {
  if (ch->tx_pool_want_count == 0 || len > ch->tx_pool_want_size)
    return 1; /* not for the pool */
  if (MEMPORT__UNLIKELY(ch->tx_pool.count == 0)) {
    int rc = pool_make(ch);
    if (rc < 0)
      return rc;
  }
  if (!memport__pool_has_free(&ch->tx_pool)) {
    int rc = pool_wait(ch, deadline);
    if (rc < 0) {
      if (rc == MEMPORT_ETIMEDOUT)
        memport__chan_tx_want(ch, 0, true); /* for the pollable handle */
      return rc;
    }
    if (MEMPORT__UNLIKELY(ch->peer_gone)) /* the reclaimed pool cannot be sent from */
      return MEMPORT_EPEER;
  }
  uint32_t i = memport__pool_alloc(&ch->tx_pool);
  uint64_t ticket = memport__chan_tx_ticket(ch);
  ch->tx_pool_loans[i].ticket = ticket;
  ch->tx_pool_loans[i].len = len;
  memport__chan_buf_set(ch, buf, memport__pool_buf(&ch->tx_pool, i), len, MEMPORT__BUF_TX_POOL, i, ticket);
  return 0;
}

/* The pool buffer `buf` names, if this copy is the one it was allocated as. */
static int tx_buf_index(memport_chan_t *ch, const memport_buf_t *buf, uint32_t *i) {
  *i = MEMPORT__BUF_INDEX(buf->priv[0]);
  if (buf->priv[2] != (uintptr_t)ch || !memport__pool_is_allocated(&ch->tx_pool, *i) ||
      ch->tx_pool_loans[*i].ticket != buf->priv[1])
    return MEMPORT_EINVAL;
  return 0;
}

int memport__chan_pool_free(memport_chan_t *ch, memport_buf_t *buf) {
  uint32_t i;
  if (tx_buf_index(ch, buf, &i) < 0)
    return MEMPORT_EINVAL;
  ch->tx_pool_loans[i].ticket = 0;
  memport__pool_free(&ch->tx_pool, i);
  memset(buf, 0, sizeof *buf);
  return 0;
}

/* Our pool's read-only handle to the peer, ahead of the first record naming one of its buffers.
 * Never waits when deadline is 0 (MEMPORT_ETIMEDOUT: the port is full). */
static int pool_announce(memport_chan_t *ch, uint64_t deadline) {
  struct memport__ctl_pool c = {{MEMPORT__CTL_MAGIC, MEMPORT__CTL_POOL, 0}, ch->tx_pool.count, 0,
                                ch->tx_pool.buf_size};
  memport_msg_clear(ch->ctl_out);
  int rc = memport_msg_attach_region(ch->ctl_out, ch->tx_pool_lend, MEMPORT_ATTACH_COPY);
  if (rc == 0)
    rc = memport__chan_ctl_send(ch, ch->ctl_out, &c, sizeof c, deadline);
  memport_msg_clear(ch->ctl_out);
  if (rc == MEMPORT_EAGAIN)
    rc = MEMPORT_ETIMEDOUT;
  if (rc == 0) {
    memport_region_close(ch->tx_pool_lend);
    ch->tx_pool_lend = NULL;
  }
  return rc;
}

int memport__chan_pool_send(memport_chan_t *ch, memport_buf_t *buf, uint64_t deadline) {
  uint32_t i;
  if (tx_buf_index(ch, buf, &i) < 0 || buf->len > ch->tx_pool_loans[i].len)
    return MEMPORT_EINVAL;
  size_t len = buf->len;
  void *slot;
  int rc = memport__chan_reserve(ch, sizeof(struct memport__rec_pool), &slot, deadline);
  if (rc < 0)
    return rc;
  if (MEMPORT__UNLIKELY(ch->tx_pool_lend != NULL) && (rc = pool_announce(ch, deadline)) < 0) {
    memport__ring_unreserve(ch->tx_ring);
    return rc;
  }
  struct memport__rec_pool d = {i, memport__pool_lend(&ch->tx_pool, i), 0, len};
  ch->tx_pool_loans[i].ticket = 0;
  memcpy(slot, &d, sizeof d);
  rc = memport__chan_commit(ch, sizeof d, MEMPORT__REC_POOL);
  if (rc < 0)
    return rc;
  memset(buf, 0, sizeof *buf);
  ch->stats.tx_msgs[1]++;
  ch->stats.tx_bytes[1] += len;
  return 0;
}

int memport__chan_pool_returned(memport_chan_t *ch, const unsigned char *b, size_t len) {
  struct memport__ctl_release r;
  if (len < sizeof r)
    return MEMPORT_EPROTO;
  memcpy(&r, b, sizeof r);
  if (r.count == 0 || r.count > ch->tx_pool.count ||
      len != sizeof r + (size_t)r.count * sizeof(struct memport__ctl_release_entry))
    return MEMPORT_EPROTO;
  if (ch->peer_gone)
    return 0; /* sent before it died: the pool is reclaimed (memport__chan_peer_gone) */
  /* Under ctl_lock, maybe on the receiving side's thread: kept for the sending side (collect),
   * which owns tx_pool. Each is a distinct lent buffer: more than count is a lie. */
  if (r.count > ch->tx_pool.count - ch->port_returns_count)
    return MEMPORT_EPROTO;
  for (uint32_t i = 0; i < r.count; i++)
    memcpy(&ch->port_returns[ch->port_returns_count++], b + sizeof r + i * sizeof(struct memport__ctl_release_entry),
           sizeof(struct memport__ctl_release_entry));
  atomic_store_explicit(&ch->port_returns_pending, true, memory_order_relaxed);
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* The peer's pool.                                                                            */

static int flush(memport_chan_t *ch) {
  while (ch->owed_count > 0 && !ch->peer_gone && ch->broken == 0) {
    unsigned char buf[4096];
    uint32_t per = (uint32_t)((sizeof buf - sizeof(struct memport__ctl_release)) /
                              sizeof(struct memport__ctl_release_entry));
    uint32_t n = ch->owed_count < per ? ch->owed_count : per;
    struct memport__ctl_release hdr = {{MEMPORT__CTL_MAGIC, MEMPORT__CTL_RELEASE, 0}, n, 0};
    memcpy(buf, &hdr, sizeof hdr);
    memcpy(buf + sizeof hdr, ch->owed_releases, n * sizeof ch->owed_releases[0]);
    int rc = memport__chan_ctl_send(ch, ch->ctl_small, buf, sizeof hdr + n * sizeof ch->owed_releases[0], 0);
    if (rc == MEMPORT_EAGAIN || rc == MEMPORT_ETIMEDOUT)
      return 0; /* a full port keeps them for the next try */
    if (rc == MEMPORT_EPEER) {
      ch->owed_count = 0;
      return 0;
    }
    if (rc < 0)
      return rc;
    ch->owed_count -= n;
    memmove(ch->owed_releases, ch->owed_releases + n, ch->owed_count * sizeof ch->owed_releases[0]);
  }
  return 0;
}

int memport__chan_pool_flush(memport_chan_t *ch) {
  memport__chan_lock(ch);
  int rc = flush(ch);
  memport__chan_unlock(ch);
  return rc;
}

#define CHAN_POOL_DRAIN_MAX 65536u /* control messages read while looking for the peer's pool */

int memport__chan_pool_find(memport_chan_t *ch, struct memport__chan_rec *rec, const void *p) {
  memcpy(&rec->pool, p, sizeof rec->pool); /* once: the peer may change the ring under us */
  /* The peer's first zero-copy message: its pool was sent over the port before the record was
   * committed (as an oversized message's region, memport__chan_blob_take). */
  if (MEMPORT__UNLIKELY(!atomic_load_explicit(&ch->rx_pool_ready, memory_order_acquire))) {
    memport__chan_lock(ch);
    for (unsigned n = 0; ch->rx_pool.count == 0 && n < CHAN_POOL_DRAIN_MAX; n++) {
      int rc = memport__chan_pump(ch, 0);
      if (rc < 0)
        break; /* nothing more (or broken): the record is then a protocol error */
    }
    memport__chan_unlock(ch);
  }
  const void *at = memport__pool_view_find(&ch->rx_pool, rec->pool.index, rec->pool.offset, rec->pool.len);
  if (at == NULL)
    return 0;
  rec->ptr = at;
  rec->len = (size_t)rec->pool.len;
  return 1;
}

void memport__chan_pool_hold(memport_chan_t *ch, const struct memport__chan_rec *rec) {
  memport__pool_view_hold(&ch->rx_pool, rec->pool.index, rec->pool.gen);
  ch->stats.rx_msgs[1]++;
  ch->stats.rx_bytes[1] += rec->len;
}

uint64_t memport__chan_pool_hand_out(memport_chan_t *ch, uint32_t i) {
  uint64_t ticket = memport__chan_rx_ticket(ch);
  ch->rx_pool_tickets[i] = ticket;
  return ticket;
}

bool memport__chan_pool_held(const memport_chan_t *ch, const memport_buf_t *buf, uint32_t *i) {
  *i = MEMPORT__BUF_INDEX(buf->priv[0]);
  return memport__pool_view_holds(&ch->rx_pool, *i) && ch->rx_pool_tickets[*i] == buf->priv[1];
}

/* Give a pool buffer back to the peer: through the release queue in its link page; when that is
 * full, over the port, batched while more messages wait (the application will call again) and
 * sent at once when nothing else waits or half the peer's pool is owed. */
int memport__chan_pool_release(memport_chan_t *ch, uint32_t i) {
  uint32_t gen = memport__pool_view_drop(&ch->rx_pool, i);
  if (ch->broken || ch->peer_gone)
    return 0;
  if (ch->owed_count == 0) { /* keep the order simple: the queue only while nothing waits for the port */
    bool tell_owner;
    int rc = memport__relq_push(&ch->rx_pool_returns, i, gen, &tell_owner);
    if (tell_owner)
      memport__chan_send_wake(ch);
    if (rc != 0)
      return rc > 0 ? 0 : memport__chan_break(ch, rc);
  }
  /* Each owed release is a distinct buffer the peer still counts as lent, so at most count are
   * owed; more means the peer sent a buffer again before getting it back. */
  memport__chan_lock(ch);
  int rc = 0;
  if (MEMPORT__UNLIKELY(ch->owed_count >= ch->rx_pool.count)) {
    rc = memport__chan_break(ch, MEMPORT_EPROTO);
  } else if (!ch->peer_gone && ch->broken == 0) {
    ch->owed_releases[ch->owed_count].index = i;
    ch->owed_releases[ch->owed_count].gen = gen;
    ch->owed_count++;
    if (ch->owed_count * 2 >= ch->rx_pool.count || memport__ring_readable(ch->rx_ring) <= 0)
      rc = flush(ch);
  }
  memport__chan_unlock(ch);
  return rc;
}
