/* SPDX-License-Identifier: MIT */
/* chan_ready.c: the channel's pollable handle, ready whenever a message waits, the receiving side ended (until a receive said so) or a failed send could now succeed, and the orderly close. */
#include "chan.h"

#include <unistd.h>

/*
 * Readiness is derived from state, never kept as an edge. The handle (a "bell", internal.h) is
 * ready while the control port holds a message or the peer is gone, or while we rang it. The
 * invariant, between any two calls on the endpoint:
 *
 *   a record waits in the RX ring, or the peer went away, or it closed its sending side and no
 *   receive has returned MEMPORT_ECLOSED yet  =>  the handle is ready
 *   (and, after a send failed with MEMPORT_EAGAIN: that send could now succeed, or would now fail
 *   with the end code  =>  ready)
 *
 * Once a receive has returned MEMPORT_ECLOSED, the ended side no longer counts (nothing more can
 * come from it), so an end still sending after the peer's half-close waits on the handle for room
 * like any sender; the peer's death or full close still wakes it (its port ends, or it sends a
 * wake with its close), and the send then returns MEMPORT_EPEER or MEMPORT_ECLOSED.
 *
 * holds because:
 *  - the RX link page's port_wake is armed at creation and re-armed before every look at the ring
 *    made here; a sender that commits a record while it is armed takes it (exchange) and sends a
 *    WAKE, which keeps the port readable until we read it;
 *  - every time this end reads the port (in any call), memport__chan_ready_update runs after it:
 *    it re-arms port_wake and then looks at the ring (Dekker with the sender's commit: either it
 *    sees the record, or the sender sees the request), and rings the bell when a record waits;
 *  - the bell is cleared only by memport__chan_rx_idle / memport__chan_tx_idle, which then read the
 *    port and derive readiness again before returning.
 * The send side works the same way with the sender's space_wake (ring space) and the release
 * queue's owner_wait (pool buffers), re-armed and re-checked by the same update.
 *
 * No call on the fast path touches any of this: a record found in the ring, a send that finds
 * room, a release without a waiting sender cost no system call and no shared-memory write.
 */

/* The bell is made by the first memport_chan_pollable (a channel nobody polls needs none); until
 * then bell_rung alone keeps the derived readiness, and the new bell starts from it. */
static bool bell_made(const memport_chan_t *ch) { return ch->bell.handle != MEMPORT_OS_HANDLE_INVALID; }

int memport__chan_ready_open(memport_chan_t *ch) {
  if (bell_made(ch))
    return 0;
  int rc = memport__os_bell_open(&ch->bell, ch->port);
  if (rc < 0) {
    ch->bell.handle = ch->bell.self = MEMPORT_OS_HANDLE_INVALID;
    return rc;
  }
  if (ch->bell_rung)
    memport__os_bell_ring(&ch->bell);
  return 0;
}

void memport__chan_ready_close(memport_chan_t *ch) {
  if (bell_made(ch))
    memport__os_bell_close(&ch->bell);
}

static void ring_bell(memport_chan_t *ch) {
  if (!ch->bell_rung) {
    ch->bell_rung = true;
    if (bell_made(ch))
      memport__os_bell_ring(&ch->bell);
  }
}

/* Latch the peer's close from its link page (loaded once, checked against the ring's shared
 * positions: either direction's thread may latch it, under ctl_lock). */
static int rx_close_latch(memport_chan_t *ch) {
  if (ch->peer_closed_all || ch->rx_link == NULL)
    return 0;
  uint64_t v = atomic_load_explicit(&ch->rx_link->closed, memory_order_seq_cst);
  if (MEMPORT__LIKELY(v == 0))
    return 0;
  if (ch->rx_closed) { /* a half-close may become a close; any other change is ignored */
    if (v == (ch->rx_close_pos | MEMPORT__CHAN_CLOSED_SEND | MEMPORT__CHAN_CLOSED_ALL))
      ch->peer_closed_all = true;
    return 0;
  }
  uint64_t pos = v & ~(uint64_t)(MEMPORT__RING_ALIGN - 1);
  uint64_t how = v & (MEMPORT__RING_ALIGN - 1);
  if (how != MEMPORT__CHAN_CLOSED_SEND && how != (MEMPORT__CHAN_CLOSED_SEND | MEMPORT__CHAN_CLOSED_ALL))
    return memport__chan_break(ch, MEMPORT_EPROTO);
  int rc = memport__ring_end_check_shared(ch->rx_ring, pos);
  if (rc < 0)
    return memport__chan_ring_error(ch, rc);
  ch->rx_closed = true;
  ch->rx_close_pos = pos;
  ch->peer_closed_all = (how & MEMPORT__CHAN_CLOSED_ALL) != 0;
  return 0;
}

static void rederive(memport_chan_t *ch); /* below, with idle */

/* The application is being told that the receiving side ended (MEMPORT_ECLOSED): from now on that
 * end no longer makes the handle ready, which reflects only what can still happen (a failed send
 * that could now succeed, the peer's death or close); derive it again without it. */
static void told_end(memport_chan_t *ch) {
  ch->rx_end_told = true;
  rederive(ch);
}

static int rx_end(memport_chan_t *ch) {
  if (ch->broken)
    return ch->broken;
  int rc = rx_close_latch(ch);
  if (rc < 0)
    return rc;
  if (ch->rx_closed) {
    rc = memport__ring_at_end(ch->rx_ring, ch->rx_close_pos);
    if (rc < 0)
      return memport__chan_ring_error(ch, rc);
    if (rc == 0)
      return 0;
    if (!ch->rx_end_told)
      told_end(ch);
    return MEMPORT_ECLOSED;
  }
  return ch->peer_gone ? MEMPORT_EPEER : 0;
}

/* Called by the receiving side only (the ring's private positions are its own). */
int memport__chan_rx_end(memport_chan_t *ch) {
  memport__chan_lock(ch);
  int rc = rx_end(ch);
  memport__chan_unlock(ch);
  return rc;
}

int memport__chan_tx_code(memport_chan_t *ch, int rc) {
  if ((rc != MEMPORT_EPEER && rc != MEMPORT_EAGAIN && rc != MEMPORT_ETIMEDOUT) || ch->broken)
    return rc;
  memport__chan_lock(ch);
  if (rx_close_latch(ch) < 0)
    rc = ch->broken;
  else if (ch->peer_closed_all)
    rc = MEMPORT_ECLOSED; /* closed the whole channel: nothing will be consumed or released any
                             more, even while its port lives on (in a forked process), so a send
                             that must wait never succeeds */
  memport__chan_unlock(ch);
  return rc;
}

void memport__chan_tx_want(memport_chan_t *ch, uint64_t space, bool pool) {
  memport__chan_lock(ch);
  ch->tx_want_space = space;
  ch->tx_want_pool = pool;
  memport__chan_unlock(ch);
}

/* Would the send that failed succeed now? Arms the wake requests first, then looks. What it
 * lacked stays wanted (the handle stays ready) until the next send, alloc or send_buf. Either
 * direction's thread may ask (under ctl_lock), so it looks only at shared positions, never at the
 * sending side's private state: a release queued or read from the port, or ring space. */
static bool tx_ready(memport_chan_t *ch) {
  if ((ch->tx_want_pool || ch->tx_want_space != 0) && ch->peer_closed_all)
    return true; /* it would now fail with MEMPORT_ECLOSED (memport__chan_tx_code) */
  if (ch->tx_want_pool) {
    memport__relq_arm(&ch->tx_pool_returns);
    if (ch->peer_gone || ch->port_returns_count != 0 || memport__relq_pending(&ch->tx_pool_returns)) {
      memport__relq_disarm(&ch->tx_pool_returns);
      return true; /* (a bogus release breaks the channel at the next call) */
    }
  }
  if (ch->tx_want_space != 0) {
    atomic_store_explicit(&ch->tx_link->space_wake, 1u, memory_order_seq_cst);
    if (ch->peer_gone || memport__ring_writable_shared(ch->tx_ring, ch->tx_want_space) != 0) {
      atomic_store_explicit(&ch->tx_link->space_wake, 0u, memory_order_relaxed);
      return true;
    }
  }
  return false;
}

static void ready_update(memport_chan_t *ch) {
  if (ch->broken || ch->rx_link == NULL) /* broken: the pollable call says so; no link: handshake */
    return;
  bool ready = false;
  if (ch->peer_gone) {
    ready = true; /* every call ends at once (recv once the ring is drained) */
  } else if (rx_close_latch(ch) == 0 && ch->rx_closed) {
    /* The receiving side ends: ready until a receive has said so. After that nothing more comes
     * (records past the close position are refused), so no wake is asked for. */
    ready = !ch->rx_end_told;
  } else if (ch->broken == 0) {
    _Atomic uint32_t *w = &ch->rx_link->port_wake;
    if (atomic_load_explicit(w, memory_order_seq_cst) == 0)
      atomic_fetch_or_explicit(w, 1u, memory_order_seq_cst);
    ready = memport__ring_readable_shared(ch->rx_ring) != 0; /* a record, or a broken ring */
  }
  if (tx_ready(ch))
    ready = true;
  if (ready || ch->broken)
    ring_bell(ch);
}

void memport__chan_ready_update(memport_chan_t *ch) {
  memport__chan_lock(ch);
  ready_update(ch);
  memport__chan_unlock(ch);
}

/* Clear the bell and derive readiness again from the state (what the port holds keeps the
 * handle ready by itself). */
static void clear_bell(memport_chan_t *ch) {
  if (ch->bell_rung) {
    ch->bell_rung = false;
    if (bell_made(ch))
      memport__os_bell_clear(&ch->bell);
  }
}

static void rederive(memport_chan_t *ch) {
  if (ch->broken)
    return;
  clear_bell(ch);
  memport__chan_ready_update(ch);
}

/* Clear the bell, read what the port holds now (the drain derives readiness again after each
 * message), and derive it once more for what was there before. */
static void idle(memport_chan_t *ch) {
  if (ch->broken)
    return;
  clear_bell(ch);
  if (!ch->peer_gone)
    (void)memport__chan_drain(ch);
  memport__chan_ready_update(ch);
}

void memport__chan_rx_idle(memport_chan_t *ch) {
  if (!ch->peer_gone)
    atomic_fetch_or_explicit(&ch->rx_link->port_wake, 1u, memory_order_seq_cst);
  memport__chan_lock(ch);
  idle(ch);
  memport__chan_unlock(ch);
}

void memport__chan_tx_idle(memport_chan_t *ch) {
  memport__chan_lock(ch);
  idle(ch);
  memport__chan_unlock(ch);
}

/* ------------------------------------------------------------------------------------------ */
/* Orderly close.                                                                              */

/* Say in our link page where our records end, then wake the peer (a full port is readable
 * already; the peer finds the close in the link page whenever it next reads its port). */
static void announce_close(memport_chan_t *ch, unsigned how) {
  uint64_t v = memport__ring_produced(ch->tx_ring) | MEMPORT__CHAN_CLOSED_SEND | how;
  atomic_store_explicit(&ch->tx_link->closed, v, memory_order_seq_cst);
  if (ch->port != NULL && !ch->peer_gone)
    memport__chan_send_wake(ch);
}

int memport_chan_shutdown(memport_chan_t *chan, unsigned how) {
  if (chan == NULL || how != MEMPORT_CHAN_SHUT_SEND)
    return MEMPORT_EINVAL;
  int rc = memport__chan_enter(&chan->tx_busy); /* a sending-side call */
  if (rc < 0)
    return rc;
  if (chan->broken) {
    rc = chan->broken;
  } else if (chan->tx_end == 0) {
    chan->tx_end = MEMPORT_ECLOSED;
    memport__chan_tx_want(chan, 0, false); /* no send will succeed again: nothing to be ready for */
    chan->owner = getpid(); /* it is this process that speaks for the channel */
    announce_close(chan, 0);
  }
  memport__chan_leave(&chan->tx_busy);
  return rc;
}

void memport__chan_close_announce(memport_chan_t *ch) {
  if (ch->broken == 0 && ch->tx_link != NULL && ch->tx_ring != NULL && ch->owner != 0 && ch->owner == getpid())
    announce_close(ch, MEMPORT__CHAN_CLOSED_ALL);
}
