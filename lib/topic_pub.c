/* SPDX-License-Identifier: MIT */
/* topic_pub.c: the topic publisher: its pool and per-subscriber accounting, lanes, joins, deaths, history and readiness. */
#include "topic.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * The publisher keeps the authoritative accounting. Per pool buffer: refs, the lanes it is queued
 * or held in plus one while it is in the history; at 0 it is free again. Per subscriber and
 * buffer: hold (none / queued / held). Per subscriber: a private shadow of what it put at each
 * lane position. From a lane it reads back only head (checked: shadow head <= head <= tail; the
 * positions passed were taken, their buffers become held) and the release queue (each entry must
 * be a buffer that subscriber holds, under its current generation). Anything else breaks the
 * protocol: that subscriber is dropped (its lane marked, its port closed, its references
 * reclaimed), the others never notice.
 *
 * Nothing here waits on a subscriber's port: joins are accepted, their HELLOs read and deaths
 * noticed without waiting, from the publisher's own calls (every MEMPORT__TOPIC_LIVE_NS on the fast
 * path, every MEMPORT__TOPIC_SLICE_NS while a loan or publish waits, and memport_pub_process).
 */

static uint64_t ticket_base(void) {
  static _Atomic uint64_t pubs;
  return (atomic_fetch_add_explicit(&pubs, 1, memory_order_relaxed) + 1) << 40;
}

static bool bell_made(const memport_pub_t *p) { return p->bell.handle != MEMPORT_OS_HANDLE_INVALID; }

static void buf_unref(memport_pub_t *p, uint32_t i) {
  if (--p->refs[i] == 0)
    memport__pool_free(&p->pool, i);
}

/* ------------------------------------------------------------------------------------------ */
/* Subscribers: sync, releases, removal.                                                       */

static void pub_wake_flush(memport_pub_t *p, bool force);

static void peer_free(memport_pub_t *p, struct memport__topic_peer *s, bool dropped) {
  if (s->lane != NULL) {
    if (s->hold != NULL)
      for (uint32_t i = 0; i < p->pool.count; i++)
        if (s->hold[i] != MEMPORT__HOLD_NONE)
          buf_unref(p, i);
    if (dropped) { /* tell it why (its own lane: only it could make this lie) */
      atomic_store_explicit(&s->lane->closed, MEMPORT__LANE_DROPPED, memory_order_seq_cst);
      memport__topic_wake_slow(&s->lane->sub_wait, s->sem, NULL, NULL);
      pub_wake_flush(p, true);
    }
    memport_unmap(s->lane);
  }
  if (s->port != NULL) {
    if (bell_made(p))
      memport__os_bell_remove(&p->bell, s->port->rx);
    memport_port_close(s->port); /* the subscriber sees its port end */
  }
  memport_sem_close(s->sem);
  free(s->shadow);
  free(s->hold);
  free(s);
}

/* The subscriber count in our registry record (memport-ls reads it there; nobody else does) follows
 * joins and departures: one write per change, never on the message path. A failed write is tried
 * again at the next change or look at events. A fork child leaves it to its parent. */
static void record_subscribers(memport_pub_t *p) {
  if (p->closing || p->listed == p->npeers || p->owner != getpid())
    return;
  if (memport__service_set_subscribers(p->svc, p->npeers) == 0)
    p->listed = p->npeers;
}

static void peer_remove(memport_pub_t *p, uint32_t k, bool dropped) {
  struct memport__topic_peer *s = p->peers[k];
  p->peers[k] = p->peers[--p->npeers];
  p->peers[p->npeers] = NULL;
  p->left++;
  peer_free(p, s, dropped);
  record_subscribers(p);
}

/* Positions the subscriber took since the last sync: their buffers are held now. */
static int peer_sync(memport_pub_t *p, struct memport__topic_peer *s) {
  uint64_t h = atomic_load_explicit(&s->lane->head, memory_order_acquire);
  if (MEMPORT__LIKELY(h == s->head))
    return 0;
  if (h < s->head || h > s->tail)
    return MEMPORT_EPROTO;
  for (uint64_t q = s->head; q != h; q++) {
    uint32_t i = s->shadow[q % p->depth];
    if (i != MEMPORT__SHADOW_INLINE)
      s->hold[i] = MEMPORT__HOLD_HELD;
  }
  s->taken += h - s->head;
  p->delivered += h - s->head;
  s->head = h;
  return 0;
}

/* Take the subscriber's releases. The queue's tail is loaded before head is synced: every entry
 * up to it names a position taken already. */
static int peer_collect(memport_pub_t *p, struct memport__topic_peer *s) {
  struct memport__relq_shared *q = &s->lane->relq;
  uint64_t t = atomic_load_explicit(&q->tail, memory_order_seq_cst);
  int rc = peer_sync(p, s);
  if (rc < 0 || MEMPORT__LIKELY(t == s->relq_head))
    return rc;
  if (t < s->relq_head || t - s->relq_head > MEMPORT__RELQ_SIZE)
    return MEMPORT_EPROTO;
  for (uint64_t h = s->relq_head; h != t; h++) {
    uint64_t e = atomic_load_explicit(&q->entries[h % MEMPORT__RELQ_SIZE], memory_order_relaxed);
    uint32_t i = (uint32_t)e, gen = (uint32_t)(e >> 32);
    if (i >= p->pool.count || s->hold[i] != MEMPORT__HOLD_HELD || p->pool.gen[i] != gen)
      return MEMPORT_EPROTO; /* not held, released twice, or another's */
    s->hold[i] = MEMPORT__HOLD_NONE;
    buf_unref(p, i);
  }
  s->relq_head = t;
  atomic_store_explicit(&q->head, t, memory_order_release);
  return 0;
}

static void collect_all(memport_pub_t *p) {
  for (uint32_t k = 0; k < p->npeers;) {
    if (peer_collect(p, p->peers[k]) < 0) {
      peer_remove(p, k, true);
      continue;
    }
    k++;
  }
}

/* Read what a subscriber sent over its port (only WAKEs are allowed after its HELLO): 0,
 * MEMPORT_EPEER (gone) or MEMPORT_EPROTO. */
static int peer_read_port(memport_pub_t *p, struct memport__topic_peer *s) {
  for (unsigned n = 0; n < MEMPORT__TOPIC_DRAIN_MAX; n++) {
    int rc = memport__port_recv(s->port, p->msg, 0);
    if (rc == MEMPORT_ETIMEDOUT || rc == MEMPORT_EAGAIN)
      return 0;
    if (rc == MEMPORT_EPEER)
      return rc;
    bool ok = rc == 0 && memport__topic_hdr_is(p->msg, MEMPORT__TOPIC_WAKE, sizeof(struct memport__topic_hdr), 0);
    memport_msg_clear(p->msg);
    if (!ok)
      return MEMPORT_EPROTO;
  }
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Lanes.                                                                                       */

/* After a lane put: wake its subscriber as its wait word asks. A sleeper on the event count is
 * only noted here; pub_wake_flush wakes every such sleeper with one call once all lanes are put. */
static inline void pub_wake_lane(memport_pub_t *p, struct memport__topic_peer *s) {
  if (MEMPORT__LIKELY(atomic_load_explicit(&s->lane->sub_wait, memory_order_seq_cst) == 0))
    return;
  if (p->count == NULL) {
    memport__topic_wake_slow(&s->lane->sub_wait, s->sem, s->port, p->msg);
    return;
  }
  uint32_t v = atomic_exchange_explicit(&s->lane->sub_wait, 0, memory_order_seq_cst);
  if (v & MEMPORT__WAIT_SEM)
    p->count_wake = true;
  if (v & MEMPORT__TOPIC_WAKE_PORT)
    (void)memport__topic_send_hdr(s->port, p->msg, MEMPORT__TOPIC_WAKE);
}

/* Wake the sleepers pub_wake_lane noted (or, with force, any: a close or a removal). */
static void pub_wake_flush(memport_pub_t *p, bool force) {
  if (p->count == NULL || !(p->count_wake || force))
    return;
  p->count_wake = false;
  atomic_fetch_add_explicit(p->count, 1, memory_order_seq_cst);
  memport__os_count_wake_all(p->count);
}

static void lane_put(memport_pub_t *p, struct memport__topic_peer *s, uint32_t kind, uint32_t len, uint32_t index,
                     uint64_t offset, uint64_t seq, const void *data) {
  struct memport__lane_slot *sl = memport__lane_slot_at(s->lane, p->slot_size, p->depth, s->tail);
  sl->kind = kind;
  sl->len = len;
  sl->index = index;
  sl->gen = kind == MEMPORT__SLOT_POOL ? p->pool.gen[index] : 0;
  sl->seq = seq;
  sl->offset = offset;
  if (kind == MEMPORT__SLOT_INLINE) {
    if (len != 0)
      memcpy(sl + 1, data, len);
    s->shadow[s->tail % p->depth] = MEMPORT__SHADOW_INLINE;
  } else {
    s->shadow[s->tail % p->depth] = index;
    s->hold[index] = MEMPORT__HOLD_QUEUED;
    p->refs[index]++;
  }
  s->tail++;
  /* seq_cst: the subscriber arms sub_wait, then loads tail; we store tail, then load sub_wait. */
  atomic_store_explicit(&s->lane->tail, s->tail, memory_order_seq_cst);
  pub_wake_lane(p, s);
}

/* Drop the oldest message of a lane (drop-oldest): 1 dropped, 0 empty, MEMPORT_EPROTO. A lost
 * CAS means the subscriber took it meanwhile: sync and look again. */
static int lane_drop_oldest(memport_pub_t *p, struct memport__topic_peer *s) {
  for (;;) {
    int rc = peer_sync(p, s);
    if (rc < 0)
      return rc;
    if (s->head == s->tail)
      return 0;
    uint64_t h = s->head;
    if (atomic_compare_exchange_strong_explicit(&s->lane->head, &h, s->head + 1, memory_order_seq_cst,
                                                memory_order_seq_cst)) {
      uint32_t i = s->shadow[s->head % p->depth];
      if (i != MEMPORT__SHADOW_INLINE) {
        s->hold[i] = MEMPORT__HOLD_NONE;
        buf_unref(p, i);
      }
      s->head++;
      s->dropped++;
      p->dropped++;
      atomic_store_explicit(&s->lane->dropped, s->dropped, memory_order_release);
      return 1;
    }
  }
}

/* Does the lane hold a pool message not yet taken? */
static bool lane_has_queued_pool(const memport_pub_t *p, const struct memport__topic_peer *s) {
  for (uint64_t q = s->head; q != s->tail; q++)
    if (s->shadow[q % p->depth] != MEMPORT__SHADOW_INLINE)
      return true;
  return false;
}

static int lane_create(memport_pub_t *p, struct memport__topic_peer *s, memport_region_t **region) {
  size_t size = memport__page_round((size_t)memport__lane_bytes(p->depth, p->slot_size));
  if (size == 0)
    return MEMPORT_EOVERFLOW;
  int rc = memport_region_create(region, size, 0);
  void *map = NULL;
  if (rc == 0)
    rc = memport_region_map(*region, 0, &map);
  if (rc < 0) {
    memport_region_close(*region);
    *region = NULL;
    return rc;
  }
  s->lane = map;
  s->lane->magic = MEMPORT__LANE_MAGIC;
  s->lane->version = MEMPORT__TOPIC_VERSION;
  s->lane->depth = p->depth;
  s->lane->slot_size = p->slot_size;
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* History.                                                                                     */

static void hist_push(memport_pub_t *p, uint32_t kind, uint32_t len, uint32_t index, uint64_t offset,
                      const void *data) {
  if (p->history == 0)
    return;
  if (p->hist_count == p->history) {
    struct memport__topic_hist *old = &p->hist[p->hist_first];
    if (old->kind == MEMPORT__SLOT_POOL)
      buf_unref(p, old->index);
    p->hist_first = (p->hist_first + 1) % p->history;
    p->hist_count--;
  }
  struct memport__topic_hist *e = &p->hist[(p->hist_first + p->hist_count) % p->history];
  e->kind = kind;
  e->len = len;
  e->index = index;
  e->offset = offset;
  if (kind == MEMPORT__SLOT_INLINE) {
    if (len != 0)
      memcpy(e->data, data, len);
  } else {
    p->refs[index]++;
  }
  p->hist_count++;
}

/* ------------------------------------------------------------------------------------------ */
/* Joins: accepted and answered without ever waiting for a subscriber.                         */

static void send_welcome_status(memport_pub_t *p, memport_port_t *port, int status) {
  struct memport__topic_welcome w;
  memset(&w, 0, sizeof w);
  w.hdr = (struct memport__topic_hdr){MEMPORT__TOPIC_MAGIC, MEMPORT__TOPIC_WELCOME, MEMPORT__TOPIC_VERSION};
  w.status = status;
  memport_msg_clear(p->msg);
  if (memport_msg_set_bytes(p->msg, &w, sizeof w) == 0)
    (void)memport__port_send(port, p->msg, 0);
  memport_msg_clear(p->msg);
}

static bool access_ok(memport_pub_t *p, const memport_cred_t *peer) {
  if (p->access == NULL)
    return true; /* the service allowed its uid already */
  int level = p->access(peer, p->access_arg);
  return level == MEMPORT_ACCESS_READONLY || level == MEMPORT_ACCESS_READWRITE;
}

/* The HELLO of a pending connection arrived in p->msg: make its lane, queue the history, answer.
 * Takes `port` (closed on failure). */
static int join(memport_pub_t *p, memport_port_t *port) {
  memport_sem_t *sem = NULL;
  int rc = MEMPORT_EPROTO;
  if (memport__topic_hdr_is(p->msg, MEMPORT__TOPIC_HELLO, sizeof(struct memport__topic_hdr), 1) &&
      memport_msg_handle_kind(p->msg, 0) == MEMPORT_HANDLE_SEM)
    rc = memport_msg_take_sem(p->msg, 0, &sem);
  memport_msg_clear(p->msg);
  if (rc < 0) {
    memport_port_close(port);
    return rc;
  }
  struct memport__topic_peer *s = calloc(1, sizeof *s);
  if (s == NULL) {
    memport_sem_close(sem);
    memport_port_close(port);
    return MEMPORT_ENOMEM;
  }
  s->port = port;
  s->sem = sem;
  s->cred = port->peer;
  s->shadow = calloc(p->depth, sizeof s->shadow[0]);
  s->hold = calloc(p->pool.count, 1);
  memport_region_t *lane_region = NULL;
  rc = s->shadow == NULL || s->hold == NULL ? MEMPORT_ENOMEM : lane_create(p, s, &lane_region);
  if (rc == 0) {
    for (uint32_t j = 0; j < p->hist_count; j++) {
      const struct memport__topic_hist *e = &p->hist[(p->hist_first + j) % p->history];
      lane_put(p, s, e->kind, e->len, e->index, e->offset, p->seq - p->hist_count + j + 1, e->data);
    }
    p->count_wake = false; /* it is not waiting yet: nobody to wake */
    struct memport__topic_welcome w;
    memset(&w, 0, sizeof w);
    w.hdr = (struct memport__topic_hdr){MEMPORT__TOPIC_MAGIC, MEMPORT__TOPIC_WELCOME, MEMPORT__TOPIC_VERSION};
    w.depth = p->depth;
    w.slot_size = p->slot_size;
    w.buffers = p->pool.count;
    w.buffer_size = p->pool.buf_size;
    w.inline_max = p->inline_cap;
    memport_msg_clear(p->msg);
    rc = memport_msg_set_bytes(p->msg, &w, sizeof w);
    if (rc == 0)
      rc = memport_msg_attach_region(p->msg, lane_region, 0); /* moved, even on failure */
    lane_region = NULL;
    if (rc == 0)
      rc = memport_msg_attach_region(p->msg, p->pool_lend, MEMPORT_ATTACH_COPY);
    if (rc == 0)
      rc = memport_msg_attach_sem(p->msg, p->sem, MEMPORT_ATTACH_COPY);
    if (rc == 0 && p->count_lend != NULL)
      rc = memport_msg_attach_region(p->msg, p->count_lend, MEMPORT_ATTACH_COPY);
    if (rc == 0) /* a fresh connection: it fits without waiting */
      rc = memport__port_send(port, p->msg, 0);
    memport_msg_clear(p->msg);
  }
  memport_region_close(lane_region);
  if (rc == 0 && bell_made(p))
    rc = memport__os_bell_add(&p->bell, port->rx);
  if (rc < 0) {
    if (rc == MEMPORT_EMFILE || rc == MEMPORT_ENOMEM) /* say why, rather than seem gone */
      send_welcome_status(p, port, rc);
    peer_free(p, s, false);
    return rc;
  }
  p->peers[p->npeers++] = s;
  p->joined++;
  record_subscribers(p);
  return 0;
}

static void pending_remove(memport_pub_t *p, uint32_t k) {
  if (bell_made(p))
    memport__os_bell_remove(&p->bell, p->pending[k].port->rx);
  p->pending[k] = p->pending[--p->npending];
}

static void accept_joins(memport_pub_t *p) {
  for (;;) {
    memport_port_t *port = NULL;
    if (memport__service_accept(p->svc, &port, 0) < 0)
      return; /* none waits (or out of descriptors: the next look tries again) */
    if (!access_ok(p, &port->peer)) {
      send_welcome_status(p, port, MEMPORT_EPERM);
      memport_port_close(port);
      continue;
    }
    if (p->npending == MEMPORT__TOPIC_PENDING_MAX || p->npeers + p->npending >= p->max_subs ||
        (bell_made(p) && memport__os_bell_add(&p->bell, port->rx) < 0)) {
      send_welcome_status(p, port, MEMPORT_ENOSPC);
      memport_port_close(port);
      continue;
    }
    p->pending[p->npending].port = port;
    p->pending[p->npending].give_up = memport__deadline(MEMPORT__TOPIC_PENDING_NS);
    p->npending++;
  }
}

static void advance_pending(memport_pub_t *p) {
  uint64_t now = p->npending != 0 ? memport__now_ns() : 0;
  for (uint32_t k = 0; k < p->npending;) {
    memport_port_t *port = p->pending[k].port;
    int rc = memport__port_recv(port, p->msg, 0);
    if (rc == MEMPORT_ETIMEDOUT && now < p->pending[k].give_up) {
      k++;
      continue;
    }
    pending_remove(p, k);
    if (rc == 0) {
      (void)join(p, port); /* takes the port */
    } else {
      if (rc == MEMPORT_EMFILE || rc == MEMPORT_ENOMEM) /* its HELLO's semaphore did not fit */
        send_welcome_status(p, port, rc);
      memport_port_close(port);
    }
    memport_msg_clear(p->msg);
  }
}

/* Joins, deaths and releases, never waiting. */
static void pub_events(memport_pub_t *p) {
  accept_joins(p);
  advance_pending(p);
  for (uint32_t k = 0; k < p->npeers;) {
    int rc = peer_read_port(p, p->peers[k]);
    if (rc < 0) {
      peer_remove(p, k, rc == MEMPORT_EPROTO);
      continue;
    }
    k++;
  }
  collect_all(p);
  record_subscribers(p);
  p->next_live = memport__now_ns() + MEMPORT__TOPIC_LIVE_NS;
}

/* The fast path looks at joins and deaths only every MEMPORT__TOPIC_LIVE_NS (a clock read). */
static inline void pub_live(memport_pub_t *p) {
  if (MEMPORT__UNLIKELY(memport__now_ns() >= p->next_live))
    pub_events(p);
}

/* ------------------------------------------------------------------------------------------ */
/* Waiting: spin, then sleep on our semaphore with every lane's pub_wait armed, in slices that   */
/* look at joins and deaths between them.                                                      */

static int ready_room(void *arg) {
  memport_pub_t *p = arg;
  for (uint32_t k = 0; k < p->npeers;) {
    struct memport__topic_peer *s = p->peers[k];
    if (peer_sync(p, s) < 0) {
      peer_remove(p, k, true);
      continue;
    }
    if (s->tail - s->head >= p->depth)
      return 0;
    k++;
  }
  return 1;
}

/* Drop-oldest: free a buffer by dropping untaken pool messages, oldest first in each lane. */
static bool drop_for_buffer(memport_pub_t *p) {
  for (uint32_t k = 0; k < p->npeers && !memport__pool_has_free(&p->pool);) {
    struct memport__topic_peer *s = p->peers[k];
    int rc = 0;
    while (!memport__pool_has_free(&p->pool) && lane_has_queued_pool(p, s) && (rc = lane_drop_oldest(p, s)) > 0) {
    }
    if (rc < 0) {
      peer_remove(p, k, true);
      continue;
    }
    k++;
  }
  return memport__pool_has_free(&p->pool);
}

static int ready_buffer(void *arg) {
  memport_pub_t *p = arg;
  if (memport__pool_has_free(&p->pool))
    return 1;
  collect_all(p);
  if (memport__pool_has_free(&p->pool))
    return 1;
  return p->overflow == MEMPORT_TOPIC_DROP_OLDEST && drop_for_buffer(p) ? 1 : 0;
}

static void arm_all(memport_pub_t *p, uint32_t bit) {
  for (uint32_t k = 0; k < p->npeers; k++)
    atomic_fetch_or_explicit(&p->peers[k]->lane->pub_wait, bit, memory_order_seq_cst);
}

static void disarm_all(memport_pub_t *p, uint32_t bit) {
  for (uint32_t k = 0; k < p->npeers; k++)
    atomic_fetch_and_explicit(&p->peers[k]->lane->pub_wait, ~bit, memory_order_relaxed);
}

static int pub_sleep(memport_pub_t *p, memport__ready_fn ready, uint64_t until) {
  for (;;) {
    arm_all(p, MEMPORT__WAIT_SEM);
    int r = ready(p);
    int rc = r != 0 || memport__expired(until) ? MEMPORT_ETIMEDOUT : memport__os_sem_wait(p->sem, until);
    disarm_all(p, MEMPORT__WAIT_SEM);
    if (r != 0)
      return r > 0 ? 0 : r;
    if (rc < 0 && rc != MEMPORT_ETIMEDOUT)
      return rc;
    r = ready(p);
    if (r != 0)
      return r > 0 ? 0 : r;
    if (rc == MEMPORT_ETIMEDOUT)
      return rc;
  }
}

static int pub_wait(memport_pub_t *p, memport__ready_fn ready, uint64_t deadline) {
  for (;;) {
    uint64_t until = deadline == 0 ? 0 : memport__slice_end(deadline, MEMPORT__TOPIC_SLICE_NS);
    int rc = memport__wait_spin(&p->wait, ready, p, until);
    if (rc == MEMPORT__WAIT_SLEEP)
      rc = pub_sleep(p, ready, until);
    if (rc != MEMPORT_ETIMEDOUT)
      return rc;
    pub_events(p); /* a dead subscriber's references are reclaimed here */
    int r = ready(p);
    if (r != 0)
      return r > 0 ? 0 : r;
    if (until == deadline || memport__expired(deadline))
      return MEMPORT_ETIMEDOUT;
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Readiness of the pollable handle: the kernel keeps it ready while a connection, a HELLO, a   */
/* WAKE or a port's end waits; we ring it ourselves when a failed loan or publish could now     */
/* succeed. Every lane's pub_wait is armed with MEMPORT__TOPIC_WAKE_PORT before we look, so a   */
/* release or take after the look sends a WAKE (Dekker, as lib/chan_ready.c).                  */

static void ring_bell(memport_pub_t *p) {
  if (!p->bell_rung) {
    p->bell_rung = true;
    if (bell_made(p))
      memport__os_bell_ring(&p->bell);
  }
}

static void clear_bell(memport_pub_t *p) {
  if (p->bell_rung) {
    p->bell_rung = false;
    if (bell_made(p))
      memport__os_bell_clear(&p->bell);
  }
}

static void ready_update(memport_pub_t *p) {
  if (!p->want_buffer && !p->want_room)
    return;
  arm_all(p, MEMPORT__TOPIC_WAKE_PORT);
  bool ready = false;
  if (p->want_buffer) {
    collect_all(p);
    ready = memport__pool_has_free(&p->pool);
    for (uint32_t k = 0; !ready && p->overflow == MEMPORT_TOPIC_DROP_OLDEST && k < p->npeers; k++)
      ready = lane_has_queued_pool(p, p->peers[k]);
  }
  if (p->want_room && ready_room(p) > 0)
    ready = true;
  if (ready)
    ring_bell(p);
}

static void pub_idle(memport_pub_t *p) {
  clear_bell(p);
  pub_events(p);
  ready_update(p);
}

static int pub_fail(memport_pub_t *p, int rc, int64_t timeout_ns, bool buffer) {
  if (rc == MEMPORT_ETIMEDOUT || rc == MEMPORT_EAGAIN) {
    if (buffer)
      p->want_buffer = true;
    else
      p->want_room = true;
    pub_idle(p);
  }
  return memport__nowait_code(rc, timeout_ns);
}

/* ------------------------------------------------------------------------------------------ */
/* Publishing.                                                                                  */

/* Deliver one message to every lane (and the history), once there is room in each (block) or
 * after dropping the oldest where there is not (drop-oldest). Nothing is written anywhere
 * unless it succeeds. A pool buffer (ALLOCATED) is lent here. */
static int put_all(memport_pub_t *p, uint32_t kind, uint32_t len, uint32_t index, const void *data,
                   uint64_t deadline) {
  if (p->overflow == MEMPORT_TOPIC_BLOCK) {
    int rc = pub_wait(p, ready_room, deadline);
    if (rc < 0)
      return rc;
  } else {
    for (uint32_t k = 0; k < p->npeers;) {
      struct memport__topic_peer *s = p->peers[k];
      int rc = peer_sync(p, s);
      while (rc == 0 && s->tail - s->head >= p->depth)
        rc = lane_drop_oldest(p, s) < 0 ? MEMPORT_EPROTO : peer_sync(p, s);
      if (rc < 0) {
        peer_remove(p, k, true);
        continue;
      }
      k++;
    }
  }
  uint64_t seq = ++p->seq;
  if (kind == MEMPORT__SLOT_POOL) {
    (void)memport__pool_lend(&p->pool, index);
    p->published_pool++;
  }
  for (uint32_t k = 0; k < p->npeers; k++)
    lane_put(p, p->peers[k], kind, len, index, 0, seq, data);
  pub_wake_flush(p, false);
  hist_push(p, kind, len, index, 0, data);
  if (kind == MEMPORT__SLOT_POOL && p->refs[index] == 0)
    memport__pool_free(&p->pool, index); /* nobody to read it */
  return 0;
}

static int pub_check(memport_pub_t *p) { return p == NULL ? MEMPORT_EINVAL : 0; }

int memport_pub_loan(memport_pub_t *p, size_t len, memport_buf_t *buf, int64_t timeout_ns) {
  if (pub_check(p) < 0 || buf == NULL)
    return MEMPORT_EINVAL;
  memset(buf, 0, sizeof *buf);
  if (len > p->pool.buf_size)
    return MEMPORT_EMSGSIZE;
  p->want_buffer = false; /* a new attempt */
  pub_live(p);
  if (MEMPORT__UNLIKELY(!memport__pool_has_free(&p->pool))) {
    int rc = pub_wait(p, ready_buffer, memport__deadline(timeout_ns));
    if (rc < 0)
      return pub_fail(p, rc, timeout_ns, true);
  }
  uint32_t i = memport__pool_alloc(&p->pool);
  uint64_t t = ++p->next_ticket;
  p->loan_ticket[i] = t;
  p->loan_len[i] = len;
  buf->data = memport__pool_buf(&p->pool, i);
  buf->len = len;
  buf->priv[0] = MEMPORT__TBUF_TAG(MEMPORT__TBUF_LOAN, i);
  buf->priv[1] = t;
  buf->priv[2] = (uintptr_t)p;
  return 0;
}

/* `buf` is the copy of a loan handed out by this publisher: its index. */
static int loan_of(memport_pub_t *p, const memport_buf_t *buf, uint32_t *index) {
  if (buf == NULL || MEMPORT__TBUF_KIND(buf->priv[0]) != MEMPORT__TBUF_LOAN || buf->priv[2] != (uintptr_t)p)
    return MEMPORT_EINVAL;
  uint32_t i = MEMPORT__TBUF_INDEX(buf->priv[0]);
  if (!memport__pool_is_allocated(&p->pool, i) || p->loan_ticket[i] != buf->priv[1] || buf->priv[1] == 0 ||
      buf->len > p->loan_len[i])
    return MEMPORT_EINVAL;
  *index = i;
  return 0;
}

int memport_pub_publish(memport_pub_t *p, memport_buf_t *buf, int64_t timeout_ns) {
  uint32_t i;
  if (pub_check(p) < 0 || loan_of(p, buf, &i) < 0)
    return MEMPORT_EINVAL;
  p->want_room = false;
  pub_live(p);
  uint64_t deadline = memport__deadline(timeout_ns);
  size_t len = buf->len;
  bool small = len <= p->inline_max;
  int rc = put_all(p, small ? MEMPORT__SLOT_INLINE : MEMPORT__SLOT_POOL, (uint32_t)len, i,
                   memport__pool_buf(&p->pool, i), deadline);
  if (rc < 0)
    return pub_fail(p, rc, timeout_ns, false);
  p->loan_ticket[i] = 0;
  if (small) /* copied into each lane: the buffer is free again at once */
    memport__pool_free(&p->pool, i);
  memset(buf, 0, sizeof *buf);
  return 0;
}

int memport_pub_discard(memport_pub_t *p, memport_buf_t *buf) {
  uint32_t i;
  if (pub_check(p) < 0 || loan_of(p, buf, &i) < 0)
    return MEMPORT_EINVAL;
  p->loan_ticket[i] = 0;
  memport__pool_free(&p->pool, i);
  memset(buf, 0, sizeof *buf);
  return 0;
}

int memport_pub_send(memport_pub_t *p, const void *data, size_t len, int64_t timeout_ns) {
  if (pub_check(p) < 0 || (data == NULL && len != 0))
    return MEMPORT_EINVAL;
  if (len > p->pool.buf_size)
    return MEMPORT_EMSGSIZE;
  if (len <= p->inline_max) {
    p->want_room = false;
    pub_live(p);
    int rc = put_all(p, MEMPORT__SLOT_INLINE, (uint32_t)len, 0, data, memport__deadline(timeout_ns));
    return rc < 0 ? pub_fail(p, rc, timeout_ns, false) : 0;
  }
  uint64_t deadline = memport__deadline(timeout_ns);
  memport_buf_t b;
  int rc = memport_pub_loan(p, len, &b, timeout_ns);
  if (rc < 0)
    return rc;
  memcpy(b.data, data, len);
  rc = memport_pub_publish(p, &b, memport__remaining_ns(deadline));
  if (rc < 0)
    memport_pub_discard(p, &b);
  return rc == MEMPORT_EAGAIN && timeout_ns != 0 ? MEMPORT_ETIMEDOUT : rc;
}

int memport_pub_process(memport_pub_t *p) {
  if (pub_check(p) < 0)
    return MEMPORT_EINVAL;
  pub_idle(p);
  return 0;
}

int memport_pub_subscribers(memport_pub_t *p) {
  if (pub_check(p) < 0)
    return MEMPORT_EINVAL;
  return (int)p->npeers;
}

int memport_pub_stats(memport_pub_t *p, memport_pub_stats_t *stats) {
  if (pub_check(p) < 0 || stats == NULL || stats->struct_size < sizeof *stats)
    return MEMPORT_EINVAL;
  collect_all(p); /* releases and takes up to now (a subscriber breaking the protocol goes) */
  memport_pub_stats_t st;
  memset(&st, 0, sizeof st);
  st.published = p->seq;
  st.published_pool = p->published_pool;
  st.delivered = p->delivered;
  st.dropped = p->dropped;
  st.joined = p->joined;
  st.left = p->left;
  st.subscribers = p->npeers;
  st.history = p->hist_count;
  st.buffers = p->pool.count;
  for (uint32_t i = 0; i < p->pool.count; i++) {
    st.buffers_free += p->pool.state[i] == MEMPORT__POOL_FREE;
    st.buffers_loaned += p->pool.state[i] == MEMPORT__POOL_ALLOCATED;
    st.buffers_in_use += p->pool.state[i] == MEMPORT__POOL_LENT;
  }
  st.struct_size = sizeof st;
  memcpy(stats, &st, sizeof st); /* a larger (newer) struct: the fields we know, struct_size says which */
  return 0;
}

int memport_pub_sub_stats(memport_pub_t *p, unsigned index, memport_pub_sub_stats_t *stats) {
  if (pub_check(p) < 0 || stats == NULL || stats->struct_size < sizeof *stats)
    return MEMPORT_EINVAL;
  if (index >= p->npeers)
    return MEMPORT_ENOENT;
  struct memport__topic_peer *s = p->peers[index];
  /* Its takes and releases up to now. One that breaks the protocol is reported as it stands and
   * dropped by the next memport_pub_stats or memport_pub_process (never here: the indexes of the
   * others stay as the caller counted them). */
  (void)peer_collect(p, s);
  memport_pub_sub_stats_t st;
  memset(&st, 0, sizeof st);
  st.cred = s->cred;
  st.delivered = s->taken;
  st.dropped = s->dropped;
  st.queued = (uint32_t)(s->tail - s->head); /* our own positions: at most depth */
  for (uint32_t i = 0; i < p->pool.count; i++)
    st.held += s->hold[i] == MEMPORT__HOLD_HELD;
  st.struct_size = sizeof st;
  memcpy(stats, &st, sizeof st);
  return 0;
}

int memport_pub_pollable(memport_pub_t *p, memport_os_handle_t *out) {
  if (pub_check(p) < 0 || out == NULL)
    return MEMPORT_EINVAL;
  if (!bell_made(p)) {
    int rc = memport__os_bell_open(&p->bell, NULL);
    if (rc == 0)
      rc = memport__os_bell_add(&p->bell, p->svc->handle);
    for (uint32_t k = 0; rc == 0 && k < p->npending; k++)
      rc = memport__os_bell_add(&p->bell, p->pending[k].port->rx);
    for (uint32_t k = 0; rc == 0 && k < p->npeers; k++)
      rc = memport__os_bell_add(&p->bell, p->peers[k]->port->rx);
    if (rc < 0) {
      if (bell_made(p))
        memport__os_bell_close(&p->bell);
      p->bell.handle = p->bell.self = MEMPORT_OS_HANDLE_INVALID;
      return rc;
    }
    if (p->bell_rung)
      memport__os_bell_ring(&p->bell);
  }
  *out = p->bell.handle;
  return 0;
}

int memport_pub_allow_uid(memport_pub_t *p, uid_t uid) {
  if (pub_check(p) < 0)
    return MEMPORT_EINVAL;
  return memport_service_allow_uid(p->svc, uid);
}

int memport_pub_set_access(memport_pub_t *p, memport_access_fn fn, void *arg) {
  if (pub_check(p) < 0)
    return MEMPORT_EINVAL;
  p->access = fn;
  p->access_arg = arg;
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Life.                                                                                        */

static void pub_free(memport_pub_t *p) {
  p->closing = true; /* the record goes with the name */
  while (p->npending != 0) {
    memport_port_t *port = p->pending[p->npending - 1].port;
    pending_remove(p, p->npending - 1);
    memport_port_close(port);
  }
  while (p->npeers != 0)
    peer_remove(p, p->npeers - 1, false);
  if (bell_made(p))
    memport__os_bell_close(&p->bell);
  memport_service_close(p->svc);
  memport_sem_close(p->sem);
  memport_msg_close(p->msg);
  memport_region_close(p->pool_lend);
  memport_region_close(p->count_lend);
  if (p->count != NULL)
    memport_unmap((void *)p->count);
  memport__pool_destroy(&p->pool);
  if (p->hist != NULL)
    for (uint32_t j = 0; j < p->history; j++)
      free(p->hist[j].data);
  free(p->hist);
  free(p->refs);
  free(p->loan_ticket);
  free(p->loan_len);
  free(p->peers);
  free(p);
}

int memport_pub_create(memport_pub_t **out, const char *name, const memport_topic_opts_t *opts) {
  if (out == NULL || name == NULL)
    return MEMPORT_EINVAL;
  *out = NULL;
  memport_topic_opts_t o;
  if (opts == NULL)
    memport_topic_opts_init(&o);
  else
    o = *opts;
  int rc = memport__topic_opts_valid(&o, NULL);
  if (rc == 0)
    rc = memport__name_check(name);
  if (rc < 0)
    return rc;
  memport_pub_t *p = calloc(1, sizeof *p);
  if (p == NULL)
    return MEMPORT_ENOMEM;
  p->bell.handle = p->bell.self = MEMPORT_OS_HANDLE_INVALID;
  p->depth = o.depth;
  p->inline_max = o.inline_max;
  p->slot_size = memport__slot_size(o.inline_max);
  p->inline_cap = p->slot_size - MEMPORT__SLOT_HDR;
  p->max_subs = o.max_subscribers;
  p->history = o.history;
  p->overflow = o.overflow;
  p->owner = getpid();
  p->next_ticket = ticket_base();
  memport__wait_policy_set(&p->wait, o.wait_policy, (uint64_t)o.spin_ns);
  rc = memport__pool_create(&p->pool, o.buffers, memport__page_round(o.buffer_size), &p->pool_lend);
  if (rc == 0) {
    p->refs = calloc(o.buffers, sizeof p->refs[0]);
    p->loan_ticket = calloc(o.buffers, sizeof p->loan_ticket[0]);
    p->loan_len = calloc(o.buffers, sizeof p->loan_len[0]);
    p->peers = calloc(o.max_subscribers, sizeof p->peers[0]);
    p->hist = o.history != 0 ? calloc(o.history, sizeof p->hist[0]) : NULL;
    if (p->refs == NULL || p->loan_ticket == NULL || p->loan_len == NULL || p->peers == NULL ||
        (o.history != 0 && p->hist == NULL))
      rc = MEMPORT_ENOMEM;
    for (uint32_t j = 0; rc == 0 && j < o.history; j++)
      if ((p->hist[j].data = malloc(p->inline_cap)) == NULL)
        rc = MEMPORT_ENOMEM;
  }
  if (rc == 0)
    rc = memport_sem_create(&p->sem, 0, 0);
  if (rc == 0 && memport__os_count_wait_supported()) {
    memport_region_t *r = NULL;
    void *map = NULL;
    rc = memport_region_create(&r, memport_page_size(), 0);
    if (rc == 0)
      rc = memport_region_map(r, 0, &map);
    if (rc == 0)
      rc = memport_region_readonly(r, &p->count_lend);
    memport_region_close(r);
    p->count = map;
  }
  if (rc == 0)
    rc = memport_msg_create(&p->msg);
  if (rc == 0) /* last: subscribers may connect from now on */
    rc = memport__service_create_kind(&p->svc, name, MEMPORT_NAME_TOPIC);
  if (rc < 0) {
    pub_free(p);
    return rc;
  }
  *out = p;
  return 0;
}

int memport_pub_close(memport_pub_t *p) {
  if (p == NULL)
    return 0;
  if (p->owner == getpid()) {
    /* Orderly: each lane says where its messages end, then the subscriber is woken (its port's
     * end, when the port closes, also makes its handle ready). */
    for (uint32_t k = 0; k < p->npeers; k++) {
      struct memport__topic_peer *s = p->peers[k];
      if (peer_sync(p, s) < 0)
        continue; /* a broken lane gets no close position */
      atomic_store_explicit(&s->lane->closed, s->tail + 1, memory_order_seq_cst);
      memport__topic_wake_slow(&s->lane->sub_wait, s->sem, NULL, NULL);
    }
    pub_wake_flush(p, true);
  }
  pub_free(p);
  return 0;
}
