/* SPDX-License-Identifier: MIT */
/* chan_ctl.c: the channel's control traffic over its port: sending, reading and acting on control messages, the peer's death. */
#include "chan.h"

#include <sched.h>
#include <string.h>

#define CHAN_LIVE_INTERVAL_NS 10000000u /* sends look at the port at most this often */
#define CHAN_DRAIN_MAX 256u             /* control messages read per look at the port */

/* The peer is gone: nothing can be sent any more, but what it committed and sent before is still
 * delivered (memport__chan_pump goes on reading the port until its end). Our pool is entirely ours
 * again: the buffers lent to the peer are reclaimed, since no release will ever come; the channel
 * reports MEMPORT_EPEER to alloc and send, and memport_chan_close unmaps the whole pool. */
void memport__chan_peer_gone(memport_chan_t *ch) {
  memport__chan_lock(ch);
  if (!ch->peer_gone) {
    ch->peer_gone = true;
    ch->owed_count = 0;
    ch->port_returns_count = 0; /* the sending side reclaims the whole pool (memport__chan_pool_alloc) */
  }
  memport__chan_unlock(ch);
}

/* Under ctl_lock, in slices of MEMPORT__CHAN_LOCK_SLICE_NS so that a full port never keeps the
 * other direction's thread from the lock for long. */
int memport__chan_ctl_send(memport_chan_t *ch, memport_msg_t *msg, const void *bytes, size_t len, uint64_t deadline) {
  int rc = memport_msg_set_bytes(msg, bytes, len);
  for (bool first = true; rc == 0; first = false) {
    if (!first)
      sched_yield();
    uint64_t until = deadline == 0 ? 0 : memport__slice_end(deadline, MEMPORT__CHAN_LOCK_SLICE_NS);
    memport__chan_lock(ch);
    rc = ch->port == NULL ? (ch->broken ? ch->broken : MEMPORT_EPEER) : memport__port_send(ch->port, msg, until);
    memport__chan_unlock(ch);
    if ((rc != MEMPORT_ETIMEDOUT && rc != MEMPORT_EAGAIN) || until == deadline)
      break;
    rc = 0;
  }
  if (rc == MEMPORT_EPEER)
    memport__chan_peer_gone(ch);
  return rc;
}

/* The peer asked (in a link page) to be told of a record or a release: a full port already makes
 * its handle ready, and a dead peer is found by the next call, so this never waits or fails. When
 * the other direction's thread holds ctl_lock, the wake is left to it (memport__chan_unlock). */
void memport__chan_send_wake(memport_chan_t *ch) {
  if (pthread_mutex_trylock(&ch->ctl_lock) != 0) {
    atomic_store_explicit(&ch->wake_owed, true, memory_order_seq_cst);
    if (pthread_mutex_trylock(&ch->ctl_lock) != 0)
      return;
    atomic_store_explicit(&ch->wake_owed, false, memory_order_relaxed);
  }
  ch->ctl_depth++;
  struct memport__ctl_hdr h = {MEMPORT__CTL_MAGIC, MEMPORT__CTL_WAKE, 0};
  if (ch->port != NULL && memport__chan_ctl_send(ch, ch->ctl_small, &h, sizeof h, 0) == 0)
    ch->stats.wakes_sent++;
  memport__chan_unlock(ch);
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
    if (len != sizeof h || memport_msg_handle_count(m) != 0)
      return MEMPORT_EPROTO;
    ch->stats.wakes_received++;
    return 0;
  case MEMPORT__CTL_RELEASE:
    return memport_msg_handle_count(m) == 0 ? memport__chan_pool_returned(ch, b, len) : MEMPORT_EPROTO;
  case MEMPORT__CTL_BLOB:
    return memport__chan_blob_arrived(ch, m, b, len);
  case MEMPORT__CTL_POOL:
    return memport__chan_pool_arrived(ch, m, b, len);
  case MEMPORT__CTL_HANDLES:
    return memport__chan_handles_arrived(ch, m, b, len);
  default:
    return MEMPORT_EPROTO;
  }
}

static int pump(memport_chan_t *ch, uint64_t deadline) {
  if (ch->broken)
    return ch->broken;
  if (ch->port_eof)
    return MEMPORT_EPEER;
  /* Back-pressure: while the application has not received the oversized messages already
   * announced, leave the port alone (the sender's port then fills and it waits). Its end cannot
   * be seen then, so a wake (ignored by a live peer, dropped when its port is full) asks the
   * kernel now and then whether the peer is still there. */
  if (MEMPORT__UNLIKELY(memport__chan_blobs_full(ch))) {
    uint64_t now = memport__now_ns();
    if (!ch->peer_gone && now >= ch->next_probe) {
      ch->next_probe = now + MEMPORT__CHAN_SLICE_NS;
      memport__chan_send_wake(ch);
    }
    return ch->peer_gone ? MEMPORT_EPEER : MEMPORT_EAGAIN;
  }
  /* A peer found gone by a send may have sent more before it went: read it, without waiting. */
  int rc = memport__port_recv(ch->port, ch->ctl_in, ch->peer_gone ? 0 : deadline);
  if (rc == MEMPORT_EPEER) {
    ch->port_eof = true;
    memport__chan_peer_gone(ch);
    memport__chan_ready_update(ch);
    return rc;
  }
  if (ch->peer_gone && (rc == MEMPORT_EAGAIN || rc == MEMPORT_ETIMEDOUT))
    return MEMPORT_EPEER;
  if (rc == MEMPORT_EMSGSIZE || rc == MEMPORT_EPROTO)
    return memport__chan_break(ch, MEMPORT_EPROTO);
  if (rc == MEMPORT_EMFILE) {
    /* The port dropped a message whose handles we had no descriptors for. After the handshake
     * only an oversized message's region or a message's handles travel that way (numbered
     * together): its record comes later, and that message is reported (MEMPORT_EMFILE) and
     * skipped in its turn (memport__chan_blob_take, memport__chan_handles_take). */
    memport__chan_blob_lost(ch);
    return MEMPORT_EAGAIN; /* read no further now: the next ones may find descriptors free */
  }
  if (rc < 0)
    return rc;
  rc = handle_ctl(ch, ch->ctl_in);
  memport_msg_clear(ch->ctl_in);
  if (rc < 0)
    return memport__chan_break(ch, rc);
  /* What we read may have been what kept the pollable handle ready: derive it again. */
  memport__chan_ready_update(ch);
  return 0;
}

int memport__chan_pump(memport_chan_t *ch, uint64_t deadline) {
  memport__chan_lock(ch);
  int rc = pump(ch, deadline);
  memport__chan_unlock(ch);
  return rc;
}

static int drain(memport_chan_t *ch) {
  int rc = 0;
  for (unsigned n = 0; n < CHAN_DRAIN_MAX && rc == 0; n++)
    rc = pump(ch, 0);
  if (rc != 0 && rc != MEMPORT_EAGAIN && rc != MEMPORT_ETIMEDOUT)
    return rc;
  rc = memport__chan_pool_flush(ch);
  if (rc < 0)
    return rc;
  return ch->peer_gone ? MEMPORT_EPEER : 0;
}

int memport__chan_drain(memport_chan_t *ch) {
  memport__chan_lock(ch);
  int rc = drain(ch);
  memport__chan_unlock(ch);
  return rc;
}

int memport__chan_live_slow(memport_chan_t *ch, uint64_t now) {
  ch->next_liveness_check = now + CHAN_LIVE_INTERVAL_NS;
  return memport__chan_drain(ch);
}
