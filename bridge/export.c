/* SPDX-License-Identifier: MIT */
/* export.c: local topic or channel -> ZeroMQ, zero-copy: each received view is lent to ZeroMQ and released when its free function says ZeroMQ is done with it. */
#include "bridge_int.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RETRY_NS 100000000LL  /* a topic not there yet: look again after 100 ms */
#define JOIN_NS 5000000000LL /* a publisher silent this long in the join is left */
#define FREE_BATCH 8          /* views given back before the loop is woken to release them (see lent_free_fn) */

/* Whether the views ZeroMQ gave back are worth releasing now: FREE_BATCH of them, or at least as
 * many as are still lent (so that a small pool is never more than half held), which includes the
 * last one (with nothing lent, one message in flight is given back at once). Releasing each view as
 * it came back cost two context switches per message on the sending host (the loop's, then the
 * publisher's, woken for its one free buffer, publishing one message, waking the loop again) and
 * halved the 64 KiB throughput; ZeroMQ itself wakes a blocked sender only at half its high-water
 * mark. */
static bool batch_due(uint32_t back, uint32_t out) { return back >= FREE_BATCH || back >= out; }

/* Called by ZeroMQ, on its I/O thread (or ours, inside a zmq call), once per lent view: push it on
 * the freed stack, and wake the loop once a batch is due. No memport call here: the source is the
 * loop's alone. */
static void lent_free_fn(void *data, void *hint) {
  (void)data;
  struct memport__bridge_lent *l = hint;
  struct memport_bridge *b = l->b;
  uint32_t me = (uint32_t)(l - b->lent) + 1;
  uint32_t head = atomic_load_explicit(&b->freed, memory_order_relaxed);
  do
    l->next = head;
  while (!atomic_compare_exchange_weak_explicit(&b->freed, &head, me, memory_order_release, memory_order_relaxed));
  uint32_t back = atomic_fetch_add_explicit(&b->freed_n, 1, memory_order_relaxed) + 1;
  uint32_t out = atomic_fetch_sub_explicit(&b->lent_out, 1, memory_order_relaxed) - 1;
  if (batch_due(back, out))
    memport__bridge_wake(b);
}

static void release(struct memport_bridge *b, void *owner, memport_buf_t *buf) {
  if (b->kind == MEMPORT_BRIDGE_TOPIC)
    memport_sub_release(owner, buf);
  else
    memport_chan_release(owner, buf);
}

/* Release what ZeroMQ gave back (the stack is taken whole: no ABA): all of it, or (all false) only
 * once a batch is due, or no slot is left to lend, or the source is ending. */
void memport__bridge_reap(struct memport_bridge *b, bool all) {
  if (!all && b->lent_free != 0 && b->ending == NULL &&
      !batch_due(atomic_load_explicit(&b->freed_n, memory_order_relaxed),
                 atomic_load_explicit(&b->lent_out, memory_order_relaxed)))
    return;
  uint32_t i = atomic_exchange_explicit(&b->freed, 0, memory_order_acquire);
  uint32_t got = 0;
  while (i != 0) {
    got++;
    struct memport__bridge_lent *l = &b->lent[i - 1];
    uint32_t next = l->next;
    release(b, l->owner, &l->buf);
    l->used = false;
    l->next = b->lent_free;
    b->lent_free = i;
    b->in_flight--;
    b->ring_held = false;
    i = next;
  }
  if (got != 0)
    atomic_fetch_sub_explicit(&b->freed_n, got, memory_order_relaxed);
}

static uint64_t source_missed(struct memport_bridge *b) {
  uint64_t m = 0;
  if (b->sub != NULL)
    memport_sub_missed(b->sub, &m);
  return b->missed_base + m;
}

/* The source ended (publisher gone, channel closed): no more receives; it is closed once every
 * view lent from it came back. */
static void source_end(struct memport_bridge *b) {
  if (b->kind == MEMPORT_BRIDGE_TOPIC) {
    b->missed_base = source_missed(b);
    b->ending = b->sub;
    b->sub = NULL;
  } else {
    b->ending = b->ch;
    b->ch = NULL;
  }
  b->st.connected = 0;
}

static void ending_close(struct memport_bridge *b) {
  if (b->ending == NULL || b->in_flight != 0 || b->held_stage != 0)
    return;
  if (b->kind == MEMPORT_BRIDGE_TOPIC)
    memport_sub_close(b->ending);
  else
    memport_chan_close(b->ending);
  b->ending = NULL;
  b->retry_at_ns = 0;
}

/* Subscribe without ever waiting for the publisher: it may be run by this very thread (a program
 * that publishes and exports its own topic), so the join is started here and finished by a later
 * turn of the loop, when the publisher's answer is there. */
static void subscribe(struct memport_bridge *b) {
  if (b->sub != NULL || b->ending != NULL)
    return;
  uint64_t now = memport__bridge_now_ns();
  if (b->joining == NULL) {
    if (now < b->retry_at_ns)
      return;
    if (memport_sub_connect_start(&b->joining, b->name, NULL) != 0) {
      b->joining = NULL;
      b->retry_at_ns = now + RETRY_NS;
      return;
    }
    b->join_since = now;
  }
  int rc = memport_sub_connect_finish(b->joining, MEMPORT_NOWAIT);
  if (rc == MEMPORT_EAGAIN || rc == MEMPORT_ETIMEDOUT) {
    if (now - b->join_since < (uint64_t)JOIN_NS)
      return;
    rc = MEMPORT_ETIMEDOUT; /* a publisher that does not answer: start again */
  }
  if (rc < 0) {
    memport_sub_close(b->joining);
    b->joining = NULL;
    b->retry_at_ns = now + RETRY_NS;
    return;
  }
  memport_sub_t *s = b->joining;
  b->joining = NULL;
  memport_sub_stats_t ss;
  memset(&ss, 0, sizeof ss);
  ss.struct_size = sizeof ss;
  if (memport_sub_stats(s, &ss) == 0 && ss.buffer_size > b->max_len)
    b->max_len = ss.buffer_size;
  b->sub = s;
  b->st.restarts++;
  b->st.connected = 1;
}

int memport__bridge_export_init(struct memport_bridge *b) {
  uint64_t r = 0;
  for (int tries = 0; r == 0; tries++) { /* this run's stream: random, so an importer tells a restart from a gap */
    if (tries > 2 || getentropy(&r, sizeof r) < 0)
      r = memport__bridge_now_ns() ^ ((uint64_t)getpid() << 40) ^ (uint64_t)(uintptr_t)b;
  }
  b->stream = r;
  b->nlent = (uint32_t)b->hwm + 8; /* ZeroMQ queues hwm, and a few more are being written */
  b->lent = calloc(b->nlent, sizeof b->lent[0]);
  if (b->lent == NULL)
    return MEMPORT_ENOMEM;
  for (uint32_t i = 0; i < b->nlent; i++) {
    b->lent[i].b = b;
    b->lent[i].next = i + 2 <= b->nlent ? i + 2 : 0;
  }
  b->lent_free = 1;
  if (b->kind == MEMPORT_BRIDGE_CHANNEL)
    return memport_service_create(&b->svc, b->name, 0);
  subscribe(b);
  return 0;
}

void memport__bridge_export_fini(struct memport_bridge *b) {
  if (b->held_stage == 2)
    zmq_msg_close(&b->held_msg); /* its free function pushes the view back */
  else if (b->held_stage == 1)
    release(b, b->held_owner, &b->held);
  b->held_stage = 0;
  memport__bridge_reap(b, true);
  if (b->ending != NULL) {
    if (b->kind == MEMPORT_BRIDGE_TOPIC)
      memport_sub_close(b->ending);
    else
      memport_chan_close(b->ending);
    b->ending = NULL;
  }
  memport_sub_close(b->sub);
  b->sub = NULL;
  memport_sub_close(b->joining);
  b->joining = NULL;
  free(b->lent);
  b->lent = NULL;
}

/* One step of the message in hand: 1 progressed, 0 must wait, or a fatal error. */
static int push(struct memport_bridge *b) {
  if (b->held_stage == 0) {
    void *src = b->kind == MEMPORT_BRIDGE_TOPIC ? (void *)b->sub : (void *)b->ch;
    if (src == NULL || b->lent_free == 0)
      return 0; /* nothing to read, or every slot lent: wait for ZeroMQ to give some back */
    int rc = b->kind == MEMPORT_BRIDGE_TOPIC ? memport_sub_recv(src, &b->held, MEMPORT_NOWAIT)
                                             : memport_chan_recv(src, &b->held, MEMPORT_NOWAIT);
    if (rc == MEMPORT_EAGAIN || rc == MEMPORT_ETIMEDOUT || rc == MEMPORT_ENOSPC)
      return 0; /* ENOSPC: the subscription holds its most small messages: wait for releases */
    if (rc == MEMPORT_EBUSY && b->kind == MEMPORT_BRIDGE_CHANNEL && b->in_flight != 0) {
      b->ring_held = true; /* a message of the channel's ring is lent: the next waits for its release */
      return 0;
    }
    if (rc < 0) {
      source_end(b);
      return 1;
    }
    b->held_owner = src;
    b->held_stage = 1;
    b->held_copy = false;
    if (b->kind == MEMPORT_BRIDGE_CHANNEL) {
      /* A message of the channel's ring (small: the channel copied it there already) is copied
       * once more into ZeroMQ and given back at once: the ring lends one message at a time, so
       * lending it to ZeroMQ would carry one small message per network round. Pool and one-off
       * messages are lent without a copy. */
      b->held_copy = memport_chan_buf_kind(src, &b->held) == MEMPORT_CHAN_BUF_RING;
    }
  }
  if (b->held_stage == 1) {
    struct memport__bridge_frame f = {b->stream, b->seq + 1, b->held.len, source_missed(b),
                                      b->kind == MEMPORT_BRIDGE_TOPIC ? b->max_len : 0};
    unsigned char hdr[MEMPORT__BRIDGE_HDR];
    memport__bridge_frame_build(hdr, &f);
    if (zmq_send(b->sock, hdr, sizeof hdr, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
      return zmq_errno() == EAGAIN || zmq_errno() == EINTR ? 0 : memport__bridge_zmq_err();
    b->seq++;
    if (b->held_copy) {
      if (zmq_msg_init_size(&b->held_msg, b->held.len) < 0)
        return memport__bridge_zmq_err();
      if (b->held.len != 0)
        memcpy(zmq_msg_data(&b->held_msg), b->held.data, b->held.len);
      b->held_stage = 2;
      size_t len = b->held.len;
      release(b, b->held_owner, &b->held);
      b->held.len = len; /* for the counters below */
      goto send;
    }
    /* The payload: the view itself, lent until ZeroMQ calls the free function. */
    uint32_t i = b->lent_free - 1;
    struct memport__bridge_lent *l = &b->lent[i];
    b->lent_free = l->next;
    l->used = true;
    l->buf = b->held;
    l->owner = b->held_owner;
    b->in_flight++;
    atomic_fetch_add_explicit(&b->lent_out, 1, memory_order_relaxed);
    if (zmq_msg_init_data(&b->held_msg, b->held.data, b->held.len, lent_free_fn, l) < 0) {
      b->in_flight--;
      atomic_fetch_sub_explicit(&b->lent_out, 1, memory_order_relaxed);
      l->used = false;
      l->next = b->lent_free;
      b->lent_free = i + 1;
      return memport__bridge_zmq_err();
    }
    b->held_stage = 2;
  }
send:;
  /* After the first part, ZeroMQ takes the rest of a message whatever the high-water mark (it
   * counts whole messages); a retry is only for an interrupted call. */
  size_t len = b->held.len;
  if (zmq_msg_send(&b->held_msg, b->sock, ZMQ_DONTWAIT) < 0)
    return zmq_errno() == EAGAIN || zmq_errno() == EINTR ? 0 : memport__bridge_zmq_err();
  b->held_stage = 0;
  b->st.messages++;
  b->st.bytes += len;
  return 1;
}

int memport__bridge_export_process(struct memport_bridge *b) {
  memport__bridge_reap(b, false);
  ending_close(b);
  if (b->kind == MEMPORT_BRIDGE_TOPIC)
    subscribe(b);
  else if (b->ending == NULL)
    memport__bridge_chan_progress(b);
  for (int budget = 256; budget > 0; budget--) {
    int rc = push(b);
    if (rc < 0)
      return rc;
    if (rc == 0)
      break;
    memport__bridge_reap(b, false);
    ending_close(b);
  }
  b->st.source_missed = source_missed(b);
  return 0;
}

int memport__bridge_export_fds(struct memport_bridge *b, struct pollfd *fds, int n, int64_t *timeout_ns) {
  /* Asked every time, also with nothing to send: ZMQ_EVENTS processes ZeroMQ's pending commands,
   * else ZMQ_FD stays readable and the caller's wait returns at once, again and again. */
  bool out = memport__bridge_sock_has(b->sock, ZMQ_POLLOUT);
  if (b->held_stage != 0) {
    if (out)
      *timeout_ns = 0; /* room now: the descriptor may never fire again for it */
    return n;
  }
  memport_os_handle_t h;
  if (b->kind == MEMPORT_BRIDGE_TOPIC && b->sub != NULL && b->lent_free != 0 &&
      memport_sub_pollable(b->sub, &h) == 0) {
    fds[n].fd = memport__bridge_pollable_fd(h);
    fds[n].events = POLLIN;
    fds[n].revents = 0;
    n++;
  }
  if (b->kind == MEMPORT_BRIDGE_TOPIC && b->sub == NULL && b->ending == NULL) {
    uint64_t now = memport__bridge_now_ns();
    uint64_t at = b->retry_at_ns;
    if (b->joining != NULL) { /* the publisher's answer, or giving up on it */
      if (memport_sub_pollable(b->joining, &h) == 0) {
        fds[n].fd = memport__bridge_pollable_fd(h);
        fds[n].events = POLLIN;
        fds[n].revents = 0;
        n++;
      }
      at = b->join_since + (uint64_t)JOIN_NS;
    }
    *timeout_ns = at > now ? (int64_t)(at - now) : 0;
  }
  return n;
}
