/* SPDX-License-Identifier: MIT */
/* fuzz_ctl.c: libFuzzer harness: a channel whose peer is hostile: any HELLO, WAKE, RELEASE, BLOB, POOL and HANDLES control messages (with any handles), any ring records and release-queue entries, any close position and space-wake request in the link page. */
#include "fuzz.h"

#include "chan_proto.h"

#include <sys/socket.h>

/*
 * Per input: a port pair; the channel under test is opened (memport_chan_open) on one end, the
 * harness plays the peer on the other with plain ports, rings and regions. It sends a HELLO built
 * from the input (fields valid or perturbed, handles: its ring's four, a pool region, its link
 * page, or any other list of regions, semaphores and ports), reads the channel's HELLO (and maps
 * the control page of the channel's TX ring and the channel's link page, writable, as a peer
 * can), then runs a schedule:
 *
 *   peer: control messages (WAKE / RELEASE / BLOB / POOL / HANDLES / raw, with any handles); records
 *         in its ring of any type with any payload (INLINE bytes, POOL, BLOB and HANDLES
 *         descriptors); entries in the
 *         release queue in the channel's link page; consuming (or scribbling) the channel's TX
 *         ring positions, the release-queue head in its own link page, wait words, wake
 *         requests and its close position; reading the channel's control messages; hanging up;
 *   channel: recv or recv_msg / release / recv_copy / send (inline and zero-copy) or send_msg
 *         (with handles, moved or copied) / alloc + send_buf or
 *         free_buf / pollable / shutdown, every one with MEMPORT_NOWAIT.
 *
 * Time is virtual (the link wraps memport__now_ns, memport__deadline and memport__expired): it
 * moves only when the input says so, so the channel's periodic look at the port happens at the
 * same step for the same input, and no call can wait.
 *
 * Checked: no crash or undefined behaviour, every buffer handed out is readable over its whole
 * length, a broken channel stays broken (MEMPORT_EPROTO), and nothing leaks (memory,
 * descriptors, memfd mappings) once the channel is closed.
 */

#define MAX_OPS 64
#define HELD 4
#define RING_CAP 4096u
#define POOL_BUF 4096u

/* ------------------------------------------------------------------------------------------ */
/* The virtual clock.                                                                          */

/* One second after boot at the start of every input: should an absolute deadline ever reach the
 * kernel (futex), it has long passed. */
static uint64_t vclock = 1000000000u;

uint64_t __wrap_memport__now_ns(void);
uint64_t __wrap_memport__deadline(int64_t timeout_ns);
int __wrap_memport__expired(uint64_t deadline);

uint64_t __wrap_memport__now_ns(void) { return vclock; }

uint64_t __wrap_memport__deadline(int64_t timeout_ns) {
  if (timeout_ns == 0)
    return 0; /* as the real one: "do not wait" */
  if (timeout_ns < 0 || (uint64_t)timeout_ns >= MEMPORT__NO_DEADLINE - vclock)
    return MEMPORT__NO_DEADLINE;
  return vclock + (uint64_t)timeout_ns;
}

int __wrap_memport__expired(uint64_t deadline) {
  return deadline == 0 || (deadline != MEMPORT__NO_DEADLINE && vclock >= deadline);
}

/* ------------------------------------------------------------------------------------------ */

static struct fz_leaks leaks;

struct peer {
  memport_port_t *port;     /* ours; NULL once we hung up */
  memport_ring_t *ring;     /* the channel's RX ring: we produce */
  memport_region_t *rxc_r;  /* its control page, mapped here too (as by any importer) */
  struct memport__ring_shared *rxc;
  memport_region_t *link_r; /* our link page (sent in our HELLO) */
  struct memport__chan_link *link;
  memport_region_t *vlink_r; /* the channel's link page, mapped writable */
  struct memport__chan_link *vlink;
  memport_region_t *pool_r; /* our pool (the channel maps it read-only) */
  void *pool;
  memport_region_t *txc_r; /* the channel's TX ring control page, mapped writable */
  struct memport__ring_shared *txc;
  memport_msg_t *msg;
  uint32_t pool_n; /* buffers of our pool (0: none) */
};

/* Attach one handle of the kind the input picks. */
static void attach_token(struct peer *p, memport_msg_t *m, uint8_t tok, struct fz *f) {
  size_t page = memport_page_size();
  switch (tok % 8u) {
  case 0: /* our ring, as a channel exports it */
    if (memport__ring_export_rx(p->ring, m) != 0)
      abort();
    break;
  case 1: /* our ring, data writable */
    if (memport_ring_export(p->ring, m) != 0)
      abort();
    break;
  case 2: /* our pool (read-only duplicate) */
    if (p->pool_r != NULL) {
      memport_region_t *ro;
      if (memport_region_dup(p->pool_r, MEMPORT_DUP_READONLY, &ro) != 0)
        abort();
      (void)memport_msg_attach_region(m, ro, 0);
    }
    break;
  case 3:
  case 4: { /* a region of a few pages, with recognizable bytes */
    memport_region_t *r;
    void *map;
    size_t size = page * (1u + fz_u8(f) % 3u);
    if (memport_region_create(&r, size, 0) != 0 || memport_region_map(r, 0, &map) != 0)
      abort();
    memset(map, tok, size);
    memport_unmap(map);
    if (tok % 8u == 4) { /* sent read-only */
      memport_region_t *ro;
      if (memport_region_readonly(r, &ro) != 0)
        abort();
      memport_region_close(r);
      r = ro;
    }
    (void)memport_msg_attach_region(m, r, 0);
    break;
  }
  case 5: {
    memport_sem_t *s;
    if (memport_sem_create(&s, 0, 0) != 0)
      abort();
    (void)memport_msg_attach_sem(m, s, 0);
    break;
  }
  case 6: {
    memport_port_t *x, *y;
    if (memport_port_pair(&x, &y) != 0)
      abort();
    memport_port_close(y);
    (void)memport_msg_attach_port(m, x, 0);
    break;
  }
  default:
    if (tok & 0x80u) /* our link page */
      (void)memport_msg_attach_region(m, p->link_r, MEMPORT_ATTACH_COPY);
    break; /* else no handle */
  }
}

/* The HELLO: valid fields unless the input perturbs them; valid handles unless it lists others. */
static int send_hello(struct peer *p, struct fz *f, uint32_t pool_n) {
  struct memport__ctl_hello h;
  memset(&h, 0, sizeof h);
  h.hdr.magic = MEMPORT__CTL_MAGIC;
  h.hdr.type = MEMPORT__CTL_HELLO;
  h.version = MEMPORT__CHAN_VERSION;
  uint8_t mode = fz_u8(f);
  if (mode & 8u)
    pool_n = 0; /* the pool comes later, in a MEMPORT__CTL_POOL message (send_ctl) */
  h.pool_buffers = pool_n;
  h.ring_capacity = memport_ring_max_record(p->ring) + MEMPORT__RING_HDR;
  h.pool_buffer_size = pool_n != 0 ? POOL_BUF : 0;
  size_t len = sizeof h;
  if (mode & 1u) { /* perturb: xor a few bytes, or set a field to something odd */
    unsigned k = 1u + fz_u8(f) % 3u;
    for (unsigned i = 0; i < k; i++) {
      uint8_t at = fz_u8(f);
      if (at & 0x80u) {
        switch (at % 4u) {
        case 0:
          h.pool_buffers = (uint32_t)fz_num(f, pool_n);
          break;
        case 1:
          h.pool_buffer_size = fz_num(f, POOL_BUF);
          break;
        case 2:
          h.ring_capacity = fz_num(f, RING_CAP);
          break;
        default:
          h.version = fz_u32(f);
          break;
        }
      } else {
        ((unsigned char *)&h)[at % sizeof h] ^= fz_u8(f);
      }
    }
  }
  if (mode & 2u)
    len = fz_u8(f) % (sizeof h + 8); /* short or long */
  unsigned char bytes[sizeof h + 8];
  memset(bytes, 0, sizeof bytes);
  memcpy(bytes, &h, sizeof h);
  memport_msg_clear(p->msg);
  if (mode & 4u) {
    unsigned n = fz_u8(f) % 7u;
    for (unsigned i = 0; i < n; i++)
      attach_token(p, p->msg, fz_u8(f), f);
  } else {
    attach_token(p, p->msg, 0, f);
    if (pool_n != 0)
      attach_token(p, p->msg, 2, f);
    attach_token(p, p->msg, 0xffu, f); /* the link page */
  }
  if (memport_msg_set_bytes(p->msg, bytes, len) != 0)
    abort();
  int rc = memport_port_send(p->port, p->msg, MEMPORT_NOWAIT);
  memport_msg_clear(p->msg);
  return rc;
}

/* Read the channel's HELLO and map its TX ring's control page and its link page (the peer may
 * write both). */
static void take_hello(struct peer *p) {
  if (memport_port_recv(p->port, p->msg, MEMPORT_NOWAIT) != 0)
    abort();
  void *map;
  if (memport_msg_take_region(p->msg, 0, &p->txc_r) != 0 || memport_region_map(p->txc_r, 0, &map) != 0)
    abort();
  p->txc = map;
  int n = memport_msg_handle_count(p->msg);
  if (n < 5 || memport_msg_take_region(p->msg, (size_t)n - 1, &p->vlink_r) != 0 ||
      memport_region_map(p->vlink_r, 0, &map) != 0)
    abort();
  p->vlink = map;
  memport_msg_clear(p->msg);
}

/* A control message after the handshake. */
static void send_ctl(struct peer *p, struct fz *f) {
  unsigned char b[512];
  size_t len;
  uint8_t kind = fz_u8(f);
  memport_msg_clear(p->msg);
  /* A message's handles for kind 0xf5 and 0xfb (which meant "anything" before HANDLES existed). */
  switch (kind % 6u == 5u && kind >= 0xf0u ? 6u : kind % 6u) {
  case 6: { /* a message's handles: count and kinds true unless perturbed, sequence numbers near */
    uint32_t n = fz_u8(f) % 4u;
    struct memport__ctl_handles c = {{MEMPORT__CTL_MAGIC, MEMPORT__CTL_HANDLES, 0}, fz_u8(f) % 4u, n};
    uint8_t m = fz_u8(f);
    for (uint32_t i = 0; i < n; i++) {
      uint8_t tok = (m & 1u) ? fz_u8(f) : (uint8_t)(3u + i % 4u); /* regions, a semaphore, a port */
      int before = memport_msg_handle_count(p->msg);
      attach_token(p, p->msg, tok, f);
      b[sizeof c + i] = (uint8_t)memport_msg_handle_kind(p->msg, (size_t)before);
    }
    if (m & 2u)
      c.count = fz_u8(f) % 66u;
    if (m & 4u && n != 0)
      b[sizeof c + fz_u8(f) % n] = fz_u8(f) % 5u;
    memcpy(b, &c, sizeof c);
    len = sizeof c + n;
    if (m & 8u)
      len = fz_u8(f) % (sizeof c + 8);
    break;
  }
  case 4: { /* our pool, made when first needed: valid, perturbed, again, or with other handles */
    struct memport__ctl_pool c = {{MEMPORT__CTL_MAGIC, MEMPORT__CTL_POOL, 0}, p->pool_n, 0, POOL_BUF};
    uint8_t m = fz_u8(f);
    if (m & 1u)
      c.buffers = (uint32_t)fz_num(f, p->pool_n);
    if (m & 2u)
      c.buffer_size = fz_num(f, POOL_BUF);
    if (m & 4u)
      c.reserved = fz_u32(f);
    memcpy(b, &c, sizeof c);
    len = (m & 8u) ? fz_u8(f) % (sizeof c + 8) : sizeof c;
    attach_token(p, p->msg, (m & 16u) ? fz_u8(f) : 2, f);
    break;
  }
  case 0: {
    struct memport__ctl_hdr h = {MEMPORT__CTL_MAGIC, MEMPORT__CTL_WAKE, 0};
    memcpy(b, &h, sizeof h);
    len = sizeof h;
    break;
  }
  case 1: {
    uint32_t n = fz_u8(f) % 9u;
    struct memport__ctl_release r = {{MEMPORT__CTL_MAGIC, MEMPORT__CTL_RELEASE, 0}, n, 0};
    if (fz_u8(f) == 0xffu)
      r.count = fz_u32(f); /* a count that does not match the length */
    memcpy(b, &r, sizeof r);
    for (uint32_t i = 0; i < n; i++) {
      struct memport__ctl_release_entry e;
      e.index = fz_u8(f) % 8u;
      e.gen = fz_u8(f) % 8u;
      memcpy(b + sizeof r + i * sizeof e, &e, sizeof e);
    }
    len = sizeof r + n * sizeof(struct memport__ctl_release_entry);
    break;
  }
  case 2:
  case 3: {
    struct memport__ctl_blob bl = {{MEMPORT__CTL_MAGIC, MEMPORT__CTL_BLOB, 0}, 0, 0, 0};
    bl.seq = fz_u8(f) % 4u;
    bl.len = fz_num(f, 4096);
    memcpy(b, &bl, sizeof bl);
    len = sizeof bl;
    attach_token(p, p->msg, (kind % 5u) == 2 ? 3 : fz_u8(f), f);
    break;
  }
  default: /* anything */
    len = fz_u8(f) % 64u;
    fz_bytes(f, b, len);
    if (fz_u8(f) & 1u) {
      struct memport__ctl_hdr h = {MEMPORT__CTL_MAGIC, (uint16_t)(fz_u8(f) % 7u), 0};
      if (len >= sizeof h)
        memcpy(b, &h, sizeof h);
    }
    attach_token(p, p->msg, fz_u8(f), f);
    break;
  }
  if (fz_u8(f) == 0xfeu) /* and maybe more handles */
    attach_token(p, p->msg, fz_u8(f), f);
  (void)memport_msg_set_bytes(p->msg, b, len);
  (void)memport_port_send(p->port, p->msg, MEMPORT_NOWAIT);
  memport_msg_clear(p->msg);
}

/* A record in our ring (the channel's RX ring). */
static void put_record(struct peer *p, struct fz *f) {
  uint8_t kind = fz_u8(f);
  unsigned char d[256];
  size_t len;
  uint32_t type;
  /* A HANDLES record for kind 0xf3, 0xf7 and 0xfb (which meant "anything" before it existed). */
  switch (kind % 4u == 3u && kind >= 0xf0u && kind < 0xfcu ? 4u : kind % 4u) {
  case 4: { /* a message with handles: the count and sequence number near the truth */
    struct memport__rec_handles r;
    r.seq = fz_u8(f) % 4u;
    r.count = fz_u8(f) % 5u;
    memcpy(d, &r, sizeof r);
    len = sizeof r + fz_u8(f) % 32u;
    memset(d + sizeof r, kind, len - sizeof r);
    type = MEMPORT__REC_HANDLES;
    break;
  }
  case 0: {
    struct memport__rec_pool r;
    r.index = fz_u8(f) % 4u;
    r.gen = fz_u8(f) % 4u;
    r.offset = fz_num(f, 0);
    r.len = fz_num(f, 64);
    memcpy(d, &r, sizeof r);
    len = sizeof r;
    type = MEMPORT__REC_POOL;
    break;
  }
  case 1: {
    struct memport__rec_blob r = {0, 0, 0};
    r.seq = fz_u8(f) % 4u;
    r.len = fz_num(f, 4096);
    memcpy(d, &r, sizeof r);
    len = sizeof r;
    type = MEMPORT__REC_BLOB;
    break;
  }
  case 2:
    len = fz_u8(f);
    memset(d, kind, len);
    type = MEMPORT__REC_INLINE;
    break;
  default:
    len = fz_u8(f) % 48u;
    fz_bytes(f, d, len);
    type = fz_u8(f) % 6u;
    break;
  }
  void *slot;
  if (memport__ring_reserve(p->ring, len, &slot, 0) != 0)
    return;
  memcpy(slot, d, len);
  (void)memport__ring_commit(p->ring, len, type);
  if (atomic_exchange(&p->link->port_wake, 0) != 0 && p->port != NULL && (fz_u8(f) & 1u)) {
    /* the channel asked for a wake */
    struct memport__ctl_hdr h = {MEMPORT__CTL_MAGIC, MEMPORT__CTL_WAKE, 0};
    memport_msg_clear(p->msg);
    (void)memport_msg_set_bytes(p->msg, &h, sizeof h);
    (void)memport_port_send(p->port, p->msg, MEMPORT_NOWAIT);
  }
}

/* Shared-memory moves of the peer: release queue entries, TX ring consumption, scribbles. */
static void peer_shm(struct peer *p, struct fz *f) {
  struct memport__ring_shared *rx = p->rxc; /* the channel's RX ring */
  struct memport__relq_shared *q = &p->vlink->pool_releases; /* the channel's pool comes back here */
  struct memport__relq_shared *ours = &p->link->pool_releases; /* ... and ours here */
  uint8_t what = fz_u8(f);
  switch (what % 10u) {
  case 0: { /* queue a release of the channel's pool buffer (index, gen) */
    uint64_t t = atomic_load(&q->tail);
    uint64_t index = fz_u8(f) % 4u;
    uint64_t gen = fz_u8(f) % 4u;
    atomic_store(&q->entries[t % MEMPORT__RELQ_SIZE], gen << 32 | index);
    atomic_store(&q->tail, t + 1);
    break;
  }
  case 1:
    atomic_store(&q->tail, fz_num(f, atomic_load(&q->tail)));
    break;
  case 2: /* consume everything the channel sent */
    atomic_store(&p->txc->cons, atomic_load(&p->txc->prod));
    break;
  case 3:
    atomic_store(&p->txc->cons, fz_num(f, atomic_load(&p->txc->cons)));
    break;
  case 4: /* take the releases the channel queued for our pool, or lie about it */
    atomic_store(&ours->head, fz_u8(f) & 1u ? atomic_load(&ours->tail) : fz_num(f, atomic_load(&ours->head)));
    break;
  case 5:
    atomic_store(&ours->owner_wait, fz_u32(f));
    atomic_store(&p->link->port_wake, fz_u32(f));
    break;
  case 6:
    atomic_store(&p->txc->cons_wait, fz_u32(f));
    atomic_store(&q->owner_wait, fz_u32(f));
    atomic_store(&p->vlink->port_wake, fz_u32(f));
    break;
  case 7:
    atomic_store(&rx->prod, fz_num(f, atomic_load(&rx->prod)));
    break;
  case 8: { /* close our direction: where our records end (true or not), and how */
    uint64_t end = atomic_load(&rx->prod);
    uint8_t k = fz_u8(f);
    uint64_t v = k & 1u ? end | MEMPORT__CHAN_CLOSED_SEND | (k & 2u ? MEMPORT__CHAN_CLOSED_ALL : 0u)
                        : fz_num(f, end + 64) ^ (uint64_t)(k >> 4);
    atomic_store(&p->link->closed, v);
    if (p->port != NULL && (k & 8u)) {
      struct memport__ctl_hdr h = {MEMPORT__CTL_MAGIC, MEMPORT__CTL_WAKE, 0};
      memport_msg_clear(p->msg);
      (void)memport_msg_set_bytes(p->msg, &h, sizeof h);
      (void)memport_port_send(p->port, p->msg, MEMPORT_NOWAIT);
    }
    break;
  }
  default: /* the space-wake requests, ours and the channel's */
    atomic_store(&p->link->space_wake, fz_u32(f));
    atomic_store(&p->vlink->space_wake, fz_u32(f));
    break;
  }
}

static void touch(const memport_buf_t *b) {
  const volatile unsigned char *d = b->data;
  unsigned sum = 0;
  for (size_t i = 0; i < b->len; i++)
    sum += d[i];
  (void)sum;
}

/* Read (and drop) what the channel sent us over the port. */
static void drain_peer(struct peer *p, int max) {
  for (int i = 0; i < max && p->port != NULL; i++) {
    int rc = memport_port_recv(p->port, p->msg, MEMPORT_NOWAIT);
    memport_msg_clear(p->msg);
    if (rc == MEMPORT_EAGAIN || rc == MEMPORT_ETIMEDOUT || rc == MEMPORT_EPEER)
      break;
  }
}

/* The peer stops reading: fill the channel's outgoing queue (junk records, as if the channel had
 * sent many messages), so the channel's next sends find the port full. */
static memport_os_handle_t chan_sock = MEMPORT_OS_HANDLE_INVALID; /* the channel's end of the port */

static void stall_peer(memport_chan_t *ch) {
  memport_os_handle_t h;
  if (memport_chan_pollable(ch, &h) != 0 || chan_sock == MEMPORT_OS_HANDLE_INVALID)
    return; /* broken: the socket is closed */
  h = chan_sock;
  unsigned char junk = 0;
  for (int i = 0; i < 4096; i++)
    if (send(h, &junk, 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
      break;
}

/* The same pool buffer announced again and again, each received and released by the
 * application at once (a peer that reuses buffers it has not had back yet). */
static void pool_burst(struct peer *p, memport_chan_t *ch, struct fz *f) {
  unsigned k = 1u + fz_u16(f) % 600u;
  uint32_t index = fz_u8(f) % 4u;
  for (unsigned i = 0; i < k; i++) {
    struct memport__rec_pool r = {index, i, 0, 64};
    void *slot;
    if (memport__ring_reserve(p->ring, sizeof r, &slot, 0) != 0)
      break;
    memcpy(slot, &r, sizeof r);
    (void)memport__ring_commit(p->ring, sizeof r, MEMPORT__REC_POOL);
    memport_buf_t b;
    int rc = memport_chan_recv(ch, &b, MEMPORT_NOWAIT);
    if (rc == 0) {
      touch(&b);
      rc = memport_chan_release(ch, &b);
    }
    if (rc != 0) {
      fz_debug("burst: %s after %u\n", memport_err_name(rc), i);
      break;
    }
  }
}

static void run(struct fz *f) {
  vclock = 1000000000u; /* every input starts at the same time */
  struct peer p;
  memset(&p, 0, sizeof p);
  memport_port_t *mine;
  if (memport_port_pair(&mine, &p.port) != 0 || memport_msg_create(&p.msg) != 0 ||
      memport_ring_create(&p.ring, RING_CAP, 0) != 0)
    abort();
  uint32_t pool_n = fz_u8(f) % 4u;
  p.pool_n = pool_n;
  if (pool_n != 0) {
    if (memport_region_create(&p.pool_r, (size_t)pool_n * POOL_BUF, 0) != 0 ||
        memport_region_map(p.pool_r, 0, &p.pool) != 0)
      abort();
    memset(p.pool, 0x5a, (size_t)pool_n * POOL_BUF);
  }
  {
    void *map;
    memport_msg_t *x;
    if (memport_msg_create(&x) != 0 || memport_ring_export(p.ring, x) != 0 ||
        memport_msg_take_region(x, 0, &p.rxc_r) != 0 || memport_region_map(p.rxc_r, 0, &map) != 0)
      abort();
    memport_msg_close(x);
    p.rxc = map;
    if (memport_region_create(&p.link_r, sizeof(struct memport__chan_link), 0) != 0 ||
        memport_region_map(p.link_r, 0, &map) != 0)
      abort();
    p.link = map;
  }
  memport_chan_opts_t o;
  memport_chan_opts_init(&o);
  o.ring_capacity = RING_CAP;
  o.zerocopy_threshold = 256;
  o.pool_buffer_size = POOL_BUF;
  o.pool_buffers = fz_u8(f) % 4u;
  o.wait_policy = MEMPORT_WAIT_SPIN;
  memport_chan_t *ch = NULL;
  memport_buf_t held[HELD], txb;
  memset(held, 0, sizeof held);
  memset(&txb, 0, sizeof txb);

  (void)send_hello(&p, f, pool_n);
  (void)memport_port_pollable(mine, &chan_sock); /* the channel's pollable handle is not the socket */
  int rc = memport_chan_open(&ch, mine, &o, MEMPORT_NOWAIT);
  fz_debug("open: %s\n", memport_err_name(rc));
  if (rc != 0)
    goto out;
  take_hello(&p);

  int broken = 0;
  unsigned char buf[8192];
  for (unsigned op = 0; op < MAX_OPS && !fz_empty(f); op++) {
    uint8_t o8 = fz_u8(f);
    rc = 0;
    int on_chan = 1;
    switch (o8 % 18u) {
    case 0:
    case 1:
      on_chan = 0;
      if (p.port != NULL)
        send_ctl(&p, f);
      break;
    case 2:
    case 3:
      on_chan = 0;
      put_record(&p, f);
      break;
    case 4:
      on_chan = 0;
      peer_shm(&p, f);
      break;
    case 5:
      on_chan = 0;
      drain_peer(&p, 64);
      break;
    case 6:
      on_chan = 0;
      vclock += (uint64_t)(1u + fz_u8(f)) * 1000000u; /* 1..256 ms */
      break;
    case 7:
    case 8: {
      unsigned i = fz_u8(f) % HELD;
      if (held[i].priv[0] != 0) {
        rc = memport_chan_release(ch, &held[i]);
        memset(&held[i], 0, sizeof held[i]);
      }
      if (rc == 0) {
        if (o8 >= 216u) { /* with the handles: used, then closed with the message */
          rc = memport_chan_recv_msg(ch, &held[i], p.msg, MEMPORT_NOWAIT);
          for (int k = 0; rc == 0 && k < memport_msg_handle_count(p.msg); k++)
            if (memport_msg_handle_kind(p.msg, (size_t)k) <= 0)
              abort();
          memport_msg_clear(p.msg);
        } else {
          rc = memport_chan_recv(ch, &held[i], MEMPORT_NOWAIT);
        }
        if (rc == 0)
          touch(&held[i]);
        else
          memset(&held[i], 0, sizeof held[i]);
      }
      break;
    }
    case 9: { /* releasing works (or is a no-op) on a broken channel too */
      on_chan = 0;
      unsigned i = fz_u8(f) % HELD;
      if (held[i].priv[0] != 0) {
        rc = memport_chan_release(ch, &held[i]);
        memset(&held[i], 0, sizeof held[i]);
      }
      break;
    }
    case 10: {
      size_t n, cap = fz_u16(f) % sizeof buf;
      rc = memport_chan_recv_copy(ch, buf, cap, &n, MEMPORT_NOWAIT);
      if (rc == 0 && n > cap)
        abort();
      break;
    }
    case 11: {
      size_t n = fz_u16(f) % sizeof buf;
      memset(buf, o8, n);
      if (o8 >= 216u) { /* with handles, moved or copied */
        memport_msg_clear(p.msg);
        uint8_t nh = fz_u8(f);
        for (unsigned k = 0; k < nh % 4u; k++)
          attach_token(&p, p.msg, (uint8_t)(3u + (nh >> 2) % 4u), f);
        rc = memport_chan_send_msg(ch, buf, n, p.msg, (nh & 0x80u) ? MEMPORT_ATTACH_COPY : 0u, MEMPORT_NOWAIT);
        memport_msg_clear(p.msg);
      } else {
        rc = memport_chan_send(ch, buf, n, fz_u8(f) & 1u ? MEMPORT_SEND_ZEROCOPY : 0u, MEMPORT_NOWAIT);
      }
      break;
    }
    case 12:
      if (txb.priv[0] == 0) {
        rc = memport_chan_alloc(ch, fz_u16(f) % (2 * POOL_BUF), &txb, MEMPORT_NOWAIT);
        if (rc == 0)
          memset(txb.data, 0x33, txb.len);
        else
          memset(&txb, 0, sizeof txb);
      } else {
        if (fz_u8(f) & 1u) {
          rc = memport_chan_send_buf(ch, &txb, MEMPORT_NOWAIT);
        } else {
          rc = memport_chan_free_buf(ch, &txb);
          on_chan = 0;
        }
        if (rc != 0)
          (void)memport_chan_free_buf(ch, &txb);
        memset(&txb, 0, sizeof txb);
      }
      break;
    case 13: {
      memport_os_handle_t h;
      if ((fz_u8(f) & 3u) == 3u)
        rc = memport_chan_shutdown(ch, MEMPORT_CHAN_SHUT_SEND);
      else
        rc = memport_chan_pollable(ch, &h);
      break;
    }
    case 14:
      on_chan = 0;
      if ((fz_u8(f) & 7u) == 7u) { /* hang up */
        memport_port_close(p.port);
        p.port = NULL;
      }
      break;
    case 15:
      on_chan = 0;
      peer_shm(&p, f);
      break;
    case 16:
      on_chan = 0;
      stall_peer(ch);
      break;
    default:
      on_chan = 0;
      pool_burst(&p, ch, f);
      break;
    }
    fz_debug("op %u (%u): %s\n", op, o8 % 18u, memport_err_name(rc));
    if (!on_chan)
      continue;
    if (broken && rc != MEMPORT_EPROTO && rc != MEMPORT_EINVAL)
      abort(); /* a broken channel stays broken */
    if (rc == MEMPORT_EPROTO)
      broken = 1;
  }

out:
  for (unsigned i = 0; i < HELD; i++)
    if (held[i].priv[0] != 0)
      (void)memport_chan_release(ch, &held[i]);
  if (txb.priv[0] != 0)
    (void)memport_chan_free_buf(ch, &txb);
  memport_chan_close(ch); /* memport_chan_open took `mine`, even on failure */
  drain_peer(&p, 64);
  if (p.txc != NULL)
    memport_unmap(p.txc);
  memport_region_close(p.txc_r);
  if (p.vlink != NULL)
    memport_unmap(p.vlink);
  memport_region_close(p.vlink_r);
  memport_unmap(p.rxc);
  memport_region_close(p.rxc_r);
  memport_unmap(p.link);
  memport_region_close(p.link_r);
  if (p.pool != NULL)
    memport_unmap(p.pool);
  memport_region_close(p.pool_r);
  memport_ring_close(p.ring);
  memport_port_close(p.port);
  memport_msg_close(p.msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct fz f = {data, size};
  fz_leaks_begin(&leaks);
  run(&f);
  fz_leaks_end(&leaks, 1);
  return 0;
}
