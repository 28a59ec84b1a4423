/* SPDX-License-Identifier: MIT */
/* topic_sub.c: the topic subscriber: the handshake, taking messages from its lane, releases, the end, readiness. */
#include "topic.h"

#include <stdlib.h>
#include <string.h>

/*
 * Receiving costs no system call: load head and tail, copy the slot at head (and an inline
 * payload into a private buffer), check it, CAS head -> head+1. A lost CAS means the publisher
 * dropped that message (drop-oldest): look again. The port is read only when the lane stays
 * empty (a NOWAIT call, or a wait slice without a message): it ends when the publisher is gone,
 * and carries the WAKEs the pollable handle asked for.
 *
 * Pollable handle (a bell on the port, as lib/chan_ready.c): ready whenever a message waits or the
 * publisher is gone. Every look at the port goes through sub_idle: arm MEMPORT__TOPIC_WAKE_PORT in
 * sub_wait, clear our ring, drain the port, then look at the lane and ring when a message waits.
 * The publisher stores tail, then exchanges sub_wait and sends a WAKE if it was armed; so a
 * message either is seen by that look or its WAKE keeps the port readable until the next look,
 * which looks again after draining it.
 */

static uint64_t ticket_base(void) {
  static _Atomic uint64_t subs;
  return (atomic_fetch_add_explicit(&subs, 1, memory_order_relaxed) + 1) << 40;
}

static int sub_break(memport_sub_t *s, int err) {
  if (s->broken == 0)
    s->broken = err;
  return s->broken;
}

/* A message waits, or the end came: something for recv to return. */
static int ready_sub(void *arg) {
  memport_sub_t *s = arg;
  struct memport__lane *l = s->lane;
  if (s->broken || s->peer_gone || atomic_load_explicit(&l->closed, memory_order_acquire) != 0)
    return 1;
  return atomic_load_explicit(&l->tail, memory_order_acquire) != atomic_load_explicit(&l->head, memory_order_acquire)
             ? 1
             : 0;
}

/* Read what the port holds now: WAKEs, or its end. */
static void drain_port(memport_sub_t *s) {
  for (unsigned n = 0; n < MEMPORT__TOPIC_DRAIN_MAX && !s->peer_gone && !s->broken; n++) {
    int rc = memport__port_recv(s->port, s->msg, 0);
    if (rc == MEMPORT_ETIMEDOUT || rc == MEMPORT_EAGAIN)
      return;
    if (rc == MEMPORT_EPEER) {
      s->peer_gone = true;
      return;
    }
    bool ok = rc == 0 && memport__topic_hdr_is(s->msg, MEMPORT__TOPIC_WAKE, sizeof(struct memport__topic_hdr), 0);
    memport_msg_clear(s->msg);
    if (!ok)
      sub_break(s, MEMPORT_EPROTO);
  }
}

static void sub_idle(memport_sub_t *s) {
  if (s->bell_made)
    atomic_fetch_or_explicit(&s->lane->sub_wait, MEMPORT__TOPIC_WAKE_PORT, memory_order_seq_cst);
  if (s->bell_rung) {
    s->bell_rung = false;
    memport__os_bell_clear(&s->bell);
  }
  drain_port(s);
  if (s->bell_made && ready_sub(s)) {
    s->bell_rung = true;
    memport__os_bell_ring(&s->bell);
  }
}

/* Queue a release for the publisher (or keep it owed while the queue is full), then wake it if it
 * asked. */
static void release_push(memport_sub_t *s, uint64_t e) {
  /* An honest publisher lends a buffer again only after taking its release from the queue: at
   * most one entry per buffer is ever owed. More means it handed out a buffer we still owe (or
   * we are broken and nothing drains): the entry is dropped, never stored past the array. */
  if (e != UINT64_MAX) {
    if (s->nowed < s->view.count)
      s->owed[s->nowed++] = e;
    else
      sub_break(s, MEMPORT_EPROTO);
  }
  uint32_t done = 0;
  while (done < s->nowed && !s->broken) {
    bool tell;
    int rc = memport__relq_push(&s->relq, (uint32_t)s->owed[done], (uint32_t)(s->owed[done] >> 32), &tell);
    if (rc < 0)
      sub_break(s, rc);
    if (rc <= 0)
      break;
    done++;
  }
  if (done != 0) {
    memmove(s->owed, s->owed + done, (s->nowed - done) * sizeof s->owed[0]);
    s->nowed -= done;
  }
  memport__topic_wake(&s->lane->pub_wait, s->pub_sem, s->port, s->msg);
}

/* Has the publisher moved head past h since we loaded it (a drop-oldest drop)? Called after reading
 * what position h held. The read-modify-write (adding 0: nothing changes) cannot move before
 * those reads, so a head still at h means the publisher had not yet dropped h, and so had not yet
 * rewritten its slot, while we read it: it moves head with a seq_cst CAS before it writes the slot
 * again. Only on the path of a check that failed. */
static bool head_moved(struct memport__lane *l, uint64_t h) {
  return atomic_fetch_add_explicit(&l->head, 0, memory_order_acq_rel) != h;
}

/* Take the message at head: 1 (into *buf), 0 none, or an error (MEMPORT_EMSGSIZE when longer than
 * cap: not taken). Under drop-oldest the publisher moves head too, at any moment: what we loaded
 * (tail against head, the slot) may be stale rather than false. A check that fails is a protocol
 * error only if head did not move meanwhile; otherwise we look again. Each look again needs a drop,
 * so a publish: the loop ends whenever the publisher pauses. */
static int take(memport_sub_t *s, size_t cap, memport_buf_t *buf) {
  struct memport__lane *l = s->lane;
  for (;;) {
    uint64_t h = atomic_load_explicit(&l->head, memory_order_acquire);
    uint64_t t = atomic_load_explicit(&l->tail, memory_order_acquire);
    if (MEMPORT__UNLIKELY(h < s->head || t < h)) /* both only grow, and tail (loaded later) >= head */
      return sub_break(s, MEMPORT_EPROTO);
    if (MEMPORT__UNLIKELY(t - h > s->depth)) {
      if (head_moved(l, h))
        continue; /* h was stale: dropped meanwhile */
      return sub_break(s, MEMPORT_EPROTO);
    }
    s->head = h; /* beyond ours: the publisher dropped the oldest */
    if (t == h)
      return 0;
    const struct memport__lane_slot *src = memport__lane_slot_at(l, s->slot_size, s->depth, h);
    struct memport__lane_slot sl;
    memcpy(&sl, src, sizeof sl); /* loaded once */
    const void *data = NULL;
    uint32_t j = 0;
    int bad = 0;
    if (sl.kind == MEMPORT__SLOT_INLINE) {
      if (sl.len > s->inline_cap)
        bad = MEMPORT_EPROTO;
      else if (sl.len > cap)
        bad = MEMPORT_EMSGSIZE;
      else if (s->inl_nfree == 0)
        bad = MEMPORT_ENOSPC; /* `depth` inline messages held: release some */
      else {
        j = s->inl_free[s->inl_nfree - 1];
        unsigned char *dst = s->inl + (size_t)j * s->inline_cap;
        memcpy(dst, src + 1, sl.len);
        data = dst;
      }
    } else if (sl.kind == MEMPORT__SLOT_POOL) {
      data = memport__pool_view_find(&s->view, sl.index, sl.offset, sl.len);
      if (data == NULL)
        bad = MEMPORT_EPROTO;
      else if (sl.len > cap)
        bad = MEMPORT_EMSGSIZE;
    } else {
      bad = MEMPORT_EPROTO;
    }
    if (MEMPORT__UNLIKELY(bad != 0)) {
      if (head_moved(l, h))
        continue; /* the slot may have been rewritten as we read it */
      return bad == MEMPORT_EPROTO ? sub_break(s, bad) : bad;
    }
    /* Success also proves the slot (and the inline bytes copied) were read before any drop of h. */
    if (!atomic_compare_exchange_strong_explicit(&l->head, &h, h + 1, memory_order_seq_cst, memory_order_relaxed))
      continue; /* dropped meanwhile */
    s->head = h + 1;
    s->received++;
    s->received_pool += sl.kind == MEMPORT__SLOT_POOL;
    uint64_t ticket = ++s->next_ticket;
    if (sl.kind == MEMPORT__SLOT_INLINE) {
      s->inl_nfree--;
      s->inl_ticket[j] = ticket;
      buf->priv[0] = MEMPORT__TBUF_TAG(MEMPORT__TBUF_INLINE, j);
    } else {
      memport__pool_view_hold(&s->view, sl.index, sl.gen);
      s->pool_ticket[sl.index] = ticket;
      buf->priv[0] = MEMPORT__TBUF_TAG(MEMPORT__TBUF_POOL, sl.index);
    }
    buf->data = (void *)(uintptr_t)data;
    buf->len = sl.len;
    buf->priv[1] = ticket;
    buf->priv[2] = (uintptr_t)s;
    /* Room in the lane: a publisher blocked on it may go on. */
    memport__topic_wake(&l->pub_wait, s->pub_sem, s->port, s->msg);
    return 1;
  }
}

/* The lane is empty: the code that ends the subscription, or 0. */
static int sub_end(memport_sub_t *s) {
  if (s->broken)
    return s->broken;
  uint64_t c = atomic_load_explicit(&s->lane->closed, memory_order_acquire);
  if (c == MEMPORT__LANE_DROPPED)
    return sub_break(s, MEMPORT_EPROTO); /* the publisher dropped us */
  if (c != 0) {
    if (s->head >= c - 1)
      return MEMPORT_ECLOSED;
    if (atomic_load_explicit(&s->lane->tail, memory_order_acquire) <= s->head)
      return sub_break(s, MEMPORT_EPROTO); /* a close position beyond what was published */
    return 0;
  }
  return s->peer_gone ? MEMPORT_EPEER : 0;
}

static int recv_impl(memport_sub_t *s, size_t cap, memport_buf_t *buf, int64_t timeout_ns) {
  if (MEMPORT__UNLIKELY(s->nowed != 0))
    release_push(s, UINT64_MAX);
  int rc = take(s, cap, buf);
  if (MEMPORT__LIKELY(rc > 0))
    return 0;
  uint64_t deadline = memport__deadline(timeout_ns);
  /* The lane is empty. With time to wait, and the publisher not known to be gone, wait first
   * (spinning costs no system call) and look at the port only after a slice passed without a
   * message, as the channel does; asked not to wait, look at once. */
  bool look = deadline == 0 || s->peer_gone;
  for (;;) {
    if (rc < 0)
      return rc;
    rc = sub_end(s);
    if (rc < 0)
      return rc;
    if (look) {
      sub_idle(s); /* the port: its end, WAKEs; readiness derived again */
      rc = take(s, cap, buf);
      if (rc != 0)
        return rc > 0 ? 0 : rc;
      rc = sub_end(s);
      if (rc < 0)
        return rc;
    }
    look = true;
    if (memport__expired(deadline))
      return memport__nowait_code(MEMPORT_ETIMEDOUT, timeout_ns);
    uint64_t until = memport__slice_end(deadline, MEMPORT__TOPIC_SLICE_NS);
    if (s->count == NULL) {
      rc = memport__wait(&s->wait, ready_sub, s, &s->lane->sub_wait, s->sem, until);
    } else { /* the publisher's event count: one wake for all its sleeping subscribers */
      rc = memport__wait_spin(&s->wait, ready_sub, s, until);
      if (rc == MEMPORT__WAIT_SLEEP)
        rc = memport__wait_sleep_count(ready_sub, s, &s->lane->sub_wait, s->count, until);
    }
    if (rc == MEMPORT_ETIMEDOUT)
      rc = 0;
    if (rc == 0)
      rc = take(s, cap, buf);
    if (rc > 0)
      return 0;
  }
}

static int sub_check(memport_sub_t *s, memport_buf_t *buf) {
  if (s == NULL || buf == NULL || !s->joined)
    return MEMPORT_EINVAL;
  memset(buf, 0, sizeof *buf);
  return 0;
}

int memport_sub_recv(memport_sub_t *s, memport_buf_t *buf, int64_t timeout_ns) {
  int rc = sub_check(s, buf);
  return rc < 0 ? rc : recv_impl(s, SIZE_MAX, buf, timeout_ns);
}

int memport_sub_release(memport_sub_t *s, memport_buf_t *buf) {
  if (s == NULL || buf == NULL || !s->joined || buf->priv[2] != (uintptr_t)s || buf->priv[1] == 0)
    return MEMPORT_EINVAL;
  uint32_t i = MEMPORT__TBUF_INDEX(buf->priv[0]);
  switch (MEMPORT__TBUF_KIND(buf->priv[0])) {
  case MEMPORT__TBUF_INLINE:
    if (i >= s->depth || s->inl_ticket[i] != buf->priv[1])
      return MEMPORT_EINVAL;
    s->inl_ticket[i] = 0;
    s->inl_free[s->inl_nfree++] = i;
    break;
  case MEMPORT__TBUF_POOL: {
    if (!memport__pool_view_holds(&s->view, i) || s->pool_ticket[i] != buf->priv[1])
      return MEMPORT_EINVAL;
    s->pool_ticket[i] = 0;
    uint32_t gen = memport__pool_view_drop(&s->view, i);
    release_push(s, ((uint64_t)gen << 32) | i);
    break;
  }
  default:
    return MEMPORT_EINVAL;
  }
  memset(buf, 0, sizeof *buf);
  return 0;
}

int memport_sub_recv_copy(memport_sub_t *s, void *dst, size_t cap, size_t *len, int64_t timeout_ns) {
  if (s == NULL || len == NULL || !s->joined || (dst == NULL && cap != 0))
    return MEMPORT_EINVAL;
  memport_buf_t b;
  memset(&b, 0, sizeof b);
  int rc = recv_impl(s, cap, &b, timeout_ns);
  if (rc < 0)
    return rc;
  if (b.len != 0)
    memcpy(dst, b.data, b.len);
  *len = b.len;
  return memport_sub_release(s, &b);
}

int memport_sub_missed(memport_sub_t *s, uint64_t *missed) {
  if (s == NULL || missed == NULL || !s->joined)
    return MEMPORT_EINVAL;
  *missed = atomic_load_explicit(&s->lane->dropped, memory_order_acquire);
  return 0;
}

int memport_sub_stats(memport_sub_t *s, memport_sub_stats_t *stats) {
  if (s == NULL || stats == NULL || stats->struct_size < sizeof *stats || !s->joined)
    return MEMPORT_EINVAL;
  memport_sub_stats_t st;
  memset(&st, 0, sizeof st);
  st.received = s->received;
  st.received_pool = s->received_pool;
  st.missed = atomic_load_explicit(&s->lane->dropped, memory_order_acquire);
  /* The publisher's positions, loaded once each: a count that cannot be is reported as 0. */
  uint64_t h = atomic_load_explicit(&s->lane->head, memory_order_acquire);
  uint64_t t = atomic_load_explicit(&s->lane->tail, memory_order_acquire);
  st.queued = t >= h ? (uint32_t)(t - h <= s->depth ? t - h : s->depth) : 0; /* h may be stale */
  for (uint32_t i = 0; i < s->view.count; i++)
    st.held += memport__pool_view_holds(&s->view, i);
  st.held += s->depth - s->inl_nfree;
  st.buffer_size = s->view.buf_size;
  st.struct_size = sizeof st;
  memcpy(stats, &st, sizeof st); /* a larger (newer) struct: the fields we know, struct_size says which */
  return 0;
}

int memport_sub_pollable(memport_sub_t *s, memport_os_handle_t *out) {
  if (s == NULL || out == NULL)
    return MEMPORT_EINVAL;
  if (!s->joined) /* joining: the port, where the publisher's answer arrives */
    return memport_port_pollable(s->port, out);
  if (!s->bell_made) {
    int rc = memport__os_bell_open(&s->bell, s->port);
    if (rc < 0)
      return rc;
    s->bell_made = true;
    sub_idle(s);
  }
  *out = s->bell.handle;
  return 0;
}

static void sub_free(memport_sub_t *s) {
  if (s->bell_made)
    memport__os_bell_close(&s->bell);
  if (s->lane != NULL)
    memport_unmap(s->lane);
  memport__pool_view_close(&s->view);
  memport_port_close(s->port);
  memport_sem_close(s->sem);
  memport_sem_close(s->pub_sem);
  if (s->count != NULL)
    memport_unmap((void *)s->count);
  memport_msg_close(s->msg);
  free(s->pool_ticket);
  free(s->owed);
  free(s->inl);
  free(s->inl_ticket);
  free(s->inl_free);
  free(s);
}

int memport_sub_close(memport_sub_t *s) {
  if (s == NULL)
    return 0;
  sub_free(s); /* the publisher sees the port end and takes back what we held */
  return 0;
}

/* The WELCOME: checked, then the lane, the pool and the publisher's semaphore taken and mapped. */
static int sub_welcome(memport_sub_t *s, uint64_t deadline) {
  memport_msg_t *m = s->msg;
  int rc = memport__port_recv(s->port, m, deadline);
  if (rc == MEMPORT_EMSGSIZE)
    rc = MEMPORT_EPROTO;
  if (rc < 0)
    return rc;
  struct memport__topic_welcome w;
  size_t n;
  const unsigned char *b = memport_msg_bytes(m, &n);
  rc = MEMPORT_EPROTO;
  if (b == NULL || n != sizeof w)
    goto out;
  memcpy(&w, b, sizeof w);
  if (w.status != 0) {
    if (memport__topic_hdr_is(m, MEMPORT__TOPIC_WELCOME, sizeof w, 0) &&
        (w.status == MEMPORT_EPERM || w.status == MEMPORT_ENOSPC || w.status == MEMPORT_EMFILE ||
         w.status == MEMPORT_ENOMEM))
      rc = w.status;
    goto out;
  }
  /* lane, pool, the publisher's semaphore, and its event count where the platform has one */
  int nh = memport__os_count_wait_supported() ? 4 : 3;
  if (!memport__topic_hdr_is(m, MEMPORT__TOPIC_WELCOME, sizeof w, nh) ||
      memport_msg_handle_kind(m, 0) != MEMPORT_HANDLE_REGION || memport_msg_handle_kind(m, 1) != MEMPORT_HANDLE_REGION ||
      memport_msg_handle_kind(m, 2) != MEMPORT_HANDLE_SEM ||
      (nh == 4 && memport_msg_handle_kind(m, 3) != MEMPORT_HANDLE_REGION))
    goto out;
  if (w.depth < 1 || w.depth > MEMPORT__DEPTH_MAX || w.inline_max > MEMPORT__INLINE_MAX ||
      w.slot_size != memport__slot_size(w.inline_max) || w.inline_max != w.slot_size - MEMPORT__SLOT_HDR ||
      memport__pool_geometry_check(w.buffers, w.buffer_size) < 0 || w.buffer_size > UINT32_MAX)
    goto out;
  s->depth = w.depth;
  s->slot_size = w.slot_size;
  s->inline_cap = (uint32_t)w.inline_max;
  memport_region_t *lane = NULL, *pool = NULL;
  (void)memport_msg_take_region(m, 0, &lane);
  (void)memport_msg_take_region(m, 1, &pool);
  rc = memport_msg_take_sem(m, 2, &s->pub_sem);
  if (rc == 0 && nh == 4) { /* the event count: read-only, at least the word we wait on */
    memport_region_t *cr = NULL;
    void *cmap = NULL;
    (void)memport_msg_take_region(m, 3, &cr);
    if (cr == NULL || memport_region_is_readonly(cr) != 1 || memport_region_size(cr) < sizeof(uint32_t))
      rc = MEMPORT_EPROTO;
    if (rc == 0)
      rc = memport_region_map(cr, MEMPORT_MAP_READONLY, &cmap);
    memport_region_close(cr);
    s->count = cmap;
  }
  void *map = NULL;
  if (rc == 0 && (lane == NULL || pool == NULL || memport_region_is_readonly(lane) != 0 ||
                  memport_region_is_readonly(pool) != 1 ||
                  memport_region_size(lane) < memport__lane_bytes(w.depth, w.slot_size)))
    rc = MEMPORT_EPROTO;
  if (rc == 0)
    rc = memport_region_map(lane, 0, &map);
  if (rc == 0) {
    s->lane = map;
    if (s->lane->magic != MEMPORT__LANE_MAGIC || s->lane->version != MEMPORT__TOPIC_VERSION ||
        s->lane->depth != w.depth || s->lane->slot_size != w.slot_size)
      rc = MEMPORT_EPROTO;
  }
  if (rc == 0)
    rc = memport__pool_view_open(&s->view, pool, w.buffers, (size_t)w.buffer_size);
  memport_region_close(lane);
  memport_region_close(pool);
  if (rc < 0)
    goto out;
  s->pool_ticket = calloc(w.buffers, sizeof s->pool_ticket[0]);
  s->owed = calloc(w.buffers, sizeof s->owed[0]);
  s->inl = malloc((size_t)w.depth * (s->inline_cap != 0 ? s->inline_cap : 1));
  s->inl_ticket = calloc(w.depth, sizeof s->inl_ticket[0]);
  s->inl_free = calloc(w.depth, sizeof s->inl_free[0]);
  if (s->pool_ticket == NULL || s->owed == NULL || s->inl == NULL || s->inl_ticket == NULL || s->inl_free == NULL) {
    rc = MEMPORT_ENOMEM;
    goto out;
  }
  for (uint32_t j = 0; j < w.depth; j++)
    s->inl_free[j] = w.depth - 1 - j;
  s->inl_nfree = w.depth;
  s->relq.sh = &s->lane->relq;
  s->head = atomic_load_explicit(&s->lane->head, memory_order_acquire);
  rc = 0;
out:
  memport_msg_clear(m);
  return rc;
}

/* Connect and send the HELLO (waiting up to `deadline` for the name): a joining subscriber. */
static int sub_start(memport_sub_t **out, const char *name, const memport_topic_opts_t *opts, uint64_t deadline) {
  if (out == NULL || name == NULL)
    return MEMPORT_EINVAL;
  *out = NULL;
  int rc = opts != NULL ? memport__topic_opts_valid(opts, NULL) : 0;
  if (rc < 0)
    return rc;
  memport_sub_t *s = calloc(1, sizeof *s);
  if (s == NULL)
    return MEMPORT_ENOMEM;
  s->bell.handle = s->bell.self = MEMPORT_OS_HANDLE_INVALID;
  s->next_ticket = ticket_base();
  memport__wait_policy_set(&s->wait, opts != NULL ? opts->wait_policy : MEMPORT_WAIT_ADAPTIVE,
                           opts != NULL ? (uint64_t)opts->spin_ns : 0);
  rc = memport_msg_create(&s->msg);
  if (rc == 0)
    rc = memport_sem_create(&s->sem, 0, 0);
  if (rc == 0)
    rc = memport__port_connect(&s->port, name, deadline);
  if (rc == 0) {
    struct memport__topic_hdr h = {MEMPORT__TOPIC_MAGIC, MEMPORT__TOPIC_HELLO, MEMPORT__TOPIC_VERSION};
    rc = memport_msg_set_bytes(s->msg, &h, sizeof h);
    if (rc == 0)
      rc = memport_msg_attach_sem(s->msg, s->sem, MEMPORT_ATTACH_COPY);
    if (rc == 0)
      rc = memport__port_send(s->port, s->msg, deadline);
    memport_msg_clear(s->msg);
    if (rc == MEMPORT_EPEER) { /* refused at once: its answer may wait in the port all the same */
      s->hello_refused = true;
      rc = 0;
    }
  }
  if (rc < 0) {
    sub_free(s);
    return rc;
  }
  *out = s;
  return 0;
}

/* Take the publisher's answer (waiting up to `deadline`). */
static int sub_finish(memport_sub_t *s, uint64_t deadline) {
  if (s->joined)
    return 0;
  int rc = sub_welcome(s, deadline);
  if (s->hello_refused && rc != MEMPORT_EAGAIN && rc != MEMPORT_ETIMEDOUT)
    rc = rc == MEMPORT_EPERM || rc == MEMPORT_ENOSPC || rc == MEMPORT_EMFILE || rc == MEMPORT_ENOMEM ? rc
                                                                                                  : MEMPORT_EPEER;
  if (rc == 0)
    s->joined = true;
  return rc;
}

int memport_sub_connect(memport_sub_t **out, const char *name, const memport_topic_opts_t *opts, int64_t timeout_ns) {
  uint64_t deadline = memport__deadline(timeout_ns);
  memport_sub_t *s = NULL;
  int rc = sub_start(&s, name, opts, deadline);
  if (rc == 0) {
    rc = sub_finish(s, deadline);
    if (rc < 0)
      sub_free(s);
    else
      *out = s;
  }
  return rc < 0 ? memport__nowait_code(rc, timeout_ns) : 0;
}

int memport_sub_connect_start(memport_sub_t **out, const char *name, const memport_topic_opts_t *opts) {
  int rc = sub_start(out, name, opts, 0);
  return rc < 0 ? memport__nowait_code(rc, MEMPORT_NOWAIT) : 0;
}

int memport_sub_connect_finish(memport_sub_t *s, int64_t timeout_ns) {
  if (s == NULL)
    return MEMPORT_EINVAL;
  int rc = sub_finish(s, memport__deadline(timeout_ns));
  return rc < 0 ? memport__nowait_code(rc, timeout_ns) : 0;
}
