/* SPDX-License-Identifier: MIT */
/* ring.c: the single-producer single-consumer record ring in a mirrored region, safe against a hostile peer. */
#include "ring.h"
#include "wait.h"

#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(sizeof(struct memport__ring_shared) == 5 * MEMPORT__RING_LINE,
               "ring control layout");
_Static_assert(sizeof(struct memport__ring_shared) <= 4096, "the control block fits the smallest page");
_Static_assert(sizeof(struct memport__ring_rec) == MEMPORT__RING_HDR, "record header size");
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2 && ATOMIC_INT_LOCK_FREE == 2, "shared atomics must be lock-free");

/* The object is private to one process. The producer's and the consumer's private state live on
 * separate cache lines, so one thread may produce while another consumes the same object. */
struct memport_ring {
  struct memport__ring_shared *sh; /* control page, mapped read-write */
  unsigned char *data;             /* data area, mapped twice back to back */
  uint64_t cap;                    /* bytes of the data area */
  size_t max_record;
  memport_region_t *ctrl_region;
  memport_region_t *data_region;
  memport_sem_t *data_sem;  /* the consumer sleeps on it, the producer signals */
  memport_sem_t *space_sem; /* the producer sleeps on it, the consumer signals */
  struct memport__wait_policy wait;
  _Atomic int broken; /* 0, or MEMPORT_EPROTO once the peer broke the protocol */

  alignas(64) struct {
    uint64_t pos;  /* our committed position (the truth; shared prod only mirrors it) */
    uint64_t off;  /* pos % cap */
    uint64_t peer; /* last validated consumer position */
    size_t reserved;
    bool has_res;
  } p;
  alignas(64) struct {
    uint64_t pos;  /* our released position */
    uint64_t off;  /* pos % cap */
    uint64_t peer; /* last validated producer position */
    uint64_t held; /* bytes of the record handed out by peek, 0 if none */
    size_t held_len;
    uint32_t held_type;
  } c;
};

static inline uint64_t rec_total(uint64_t len) {
  return MEMPORT__RING_HDR + ((len + (MEMPORT__RING_ALIGN - 1)) & ~(uint64_t)(MEMPORT__RING_ALIGN - 1));
}

static int ring_break(memport_ring_t *r) {
  atomic_store_explicit(&r->broken, MEMPORT_EPROTO, memory_order_relaxed);
  return MEMPORT_EPROTO;
}

static inline int ring_broken(const memport_ring_t *r) {
  return atomic_load_explicit(&r->broken, memory_order_relaxed);
}

/* Producer: load the consumer's position once and check it: it only grows, and never passes what
 * we committed (which also bounds the used bytes by the capacity). */
static int refresh_cons(memport_ring_t *r) {
  uint64_t c = atomic_load_explicit(&r->sh->cons, memory_order_seq_cst);
  if (MEMPORT__UNLIKELY(c < r->p.peer || c > r->p.pos || (c & (MEMPORT__RING_ALIGN - 1)) != 0))
    return ring_break(r);
  r->p.peer = c;
  return 0;
}

/* Consumer: the producer's position only grows and never runs more than a capacity ahead. */
static int refresh_prod(memport_ring_t *r) {
  uint64_t p = atomic_load_explicit(&r->sh->prod, memory_order_seq_cst);
  if (MEMPORT__UNLIKELY(p < r->c.peer || p - r->c.pos > r->cap || (p & (MEMPORT__RING_ALIGN - 1)) != 0))
    return ring_break(r);
  r->c.peer = p;
  return 0;
}

static int space_ready(memport_ring_t *r, uint64_t need) {
  int rc = refresh_cons(r);
  if (rc < 0)
    return rc;
  return r->cap - (r->p.pos - r->p.peer) >= need;
}

static int data_ready(memport_ring_t *r, uint64_t need) {
  MEMPORT__UNUSED(need);
  int rc = refresh_prod(r);
  if (rc < 0)
    return rc;
  return r->c.peer != r->c.pos;
}

/* The ready() functions of lib/wait.c: the producer waits for `need` free bytes, the consumer
 * for a record. */
struct ring_need {
  memport_ring_t *r;
  uint64_t need;
};

static int space_ready_fn(void *arg) {
  struct ring_need *n = arg;
  return space_ready(n->r, n->need);
}

static int data_ready_fn(void *arg) { return data_ready(arg, 0); }

/* ------------------------------------------------------------------------------------------ */
/* Construction.                                                                               */

static void ring_free(memport_ring_t *r) {
  if (r->data != NULL)
    memport_unmap(r->data);
  if (r->sh != NULL)
    memport_unmap(r->sh);
  memport_region_close(r->ctrl_region);
  memport_region_close(r->data_region);
  memport_sem_close(r->data_sem);
  memport_sem_close(r->space_sem);
  free(r);
}

static memport_ring_t *ring_alloc(void) {
  size_t sz = (sizeof(memport_ring_t) + 63) & ~(size_t)63;
  memport_ring_t *r = aligned_alloc(64, sz);
  if (r == NULL)
    return NULL;
  memset(r, 0, sizeof *r);
  memport__wait_policy_set(&r->wait, MEMPORT_WAIT_ADAPTIVE, 0);
  atomic_init(&r->broken, 0);
  return r;
}

/* Map both regions and set the private positions from the shared ones (validated). */
static int ring_map(memport_ring_t *r, bool data_readonly) {
  void *ctrl = NULL, *data = NULL;
  int rc = memport_region_map(r->ctrl_region, 0, &ctrl);
  if (rc < 0)
    return rc;
  r->sh = ctrl;
  rc = memport_region_map(r->data_region, MEMPORT_MAP_MIRROR | (data_readonly ? MEMPORT_MAP_READONLY : 0u), &data);
  if (rc < 0)
    return rc;
  r->data = data;
  r->cap = memport_region_size(r->data_region);
  r->max_record = (size_t)(r->cap - MEMPORT__RING_HDR);
  return 0;
}

static int ring_init_positions(memport_ring_t *r) {
  uint64_t p = atomic_load_explicit(&r->sh->prod, memory_order_seq_cst);
  uint64_t c = atomic_load_explicit(&r->sh->cons, memory_order_seq_cst);
  if (c > p || p - c > r->cap || ((p | c) & (MEMPORT__RING_ALIGN - 1)) != 0)
    return MEMPORT_EPROTO;
  r->p.pos = p;
  r->p.off = p % r->cap;
  r->p.peer = c;
  r->c.pos = c;
  r->c.off = c % r->cap;
  r->c.peer = p;
  return 0;
}

int memport_ring_create(memport_ring_t **out, size_t capacity, unsigned flags) {
  if (out == NULL || capacity == 0 || flags != 0)
    return MEMPORT_EINVAL;
  *out = NULL;
  size_t cap = memport__page_round(capacity);
  if (cap == 0 || cap > MEMPORT__RING_MAX_CAPACITY)
    return MEMPORT_EINVAL;
  memport_ring_t *r = ring_alloc();
  if (r == NULL)
    return MEMPORT_ENOMEM;
  int rc = memport_region_create(&r->ctrl_region, sizeof(struct memport__ring_shared), 0);
  if (rc == 0)
    rc = memport_region_create(&r->data_region, cap, 0);
  if (rc == 0)
    rc = memport_sem_create(&r->data_sem, 0, 0);
  if (rc == 0)
    rc = memport_sem_create(&r->space_sem, 0, 0);
  if (rc == 0)
    rc = ring_map(r, false);
  if (rc < 0) {
    ring_free(r);
    return rc;
  }
  r->sh->magic = MEMPORT__RING_MAGIC;
  r->sh->version = MEMPORT__RING_VERSION;
  r->sh->capacity = r->cap;
  atomic_store_explicit(&r->sh->prod, 0, memory_order_relaxed);
  atomic_store_explicit(&r->sh->cons, 0, memory_order_relaxed);
  atomic_store_explicit(&r->sh->cons_wait, 0, memory_order_relaxed);
  atomic_store_explicit(&r->sh->prod_wait, 0, memory_order_seq_cst);
  *out = r;
  return 0;
}

int memport_ring_close(memport_ring_t *ring) {
  if (ring == NULL)
    return 0;
  ring_free(ring);
  return 0;
}

int memport_ring_export(memport_ring_t *ring, memport_msg_t *msg) {
  if (ring == NULL || msg == NULL)
    return MEMPORT_EINVAL;
  int n = memport_msg_handle_count(msg);
  if (n < 0)
    return n;
  if (n > (int)(MEMPORT_MSG_MAX_HANDLES - 4))
    return MEMPORT_ENOSPC;
  /* All or nothing: make the four copies first; attaching them cannot fail once there is room. */
  memport_region_t *ctrl = NULL, *data = NULL;
  memport_sem_t *dsem = NULL, *ssem = NULL;
  int rc = memport_region_dup(ring->ctrl_region, 0, &ctrl);
  if (rc == 0)
    rc = memport_region_dup(ring->data_region, 0, &data);
  if (rc == 0)
    rc = memport_sem_dup(ring->data_sem, &dsem);
  if (rc == 0)
    rc = memport_sem_dup(ring->space_sem, &ssem);
  if (rc != 0) {
    memport_region_close(ctrl);
    memport_region_close(data);
    memport_sem_close(dsem);
    return rc;
  }
  memport_msg_attach_region(msg, ctrl, 0);
  memport_msg_attach_region(msg, data, 0);
  memport_msg_attach_sem(msg, dsem, 0);
  memport_msg_attach_sem(msg, ssem, 0);
  return 0;
}

/* A read-only duplicate of the data region instead of a writable one: the importer
 * (memport__ring_import_rx) can only consume. */
int memport__ring_export_rx(memport_ring_t *ring, memport_msg_t *msg) {
  memport_region_t *ro = NULL;
  int rc = memport_region_dup(ring->data_region, MEMPORT_DUP_READONLY, &ro);
  if (rc < 0)
    return rc;
  rc = memport_msg_attach_region(msg, ring->ctrl_region, MEMPORT_ATTACH_COPY);
  int rc2 = memport_msg_attach_region(msg, ro, 0); /* moved, even on failure */
  if (rc == 0)
    rc = rc2;
  if (rc == 0)
    rc = memport_msg_attach_sem(msg, ring->data_sem, MEMPORT_ATTACH_COPY);
  if (rc == 0)
    rc = memport_msg_attach_sem(msg, ring->space_sem, MEMPORT_ATTACH_COPY);
  return rc;
}

static int ring_import(memport_ring_t **out, memport_msg_t *msg, size_t first, bool rx_only) {
  *out = NULL;
  int n = memport_msg_handle_count(msg);
  if (n < 0)
    return n;
  if (first > (size_t)n || (size_t)n - first < 4)
    return MEMPORT_EINVAL;
  if (memport_msg_handle_kind(msg, first) != MEMPORT_HANDLE_REGION ||
      memport_msg_handle_kind(msg, first + 1) != MEMPORT_HANDLE_REGION ||
      memport_msg_handle_kind(msg, first + 2) != MEMPORT_HANDLE_SEM ||
      memport_msg_handle_kind(msg, first + 3) != MEMPORT_HANDLE_SEM)
    return MEMPORT_EPROTO;
  memport_ring_t *r = ring_alloc();
  if (r == NULL)
    return MEMPORT_ENOMEM;
  int rc = memport_msg_take_region(msg, first, &r->ctrl_region);
  if (rc == 0)
    rc = memport_msg_take_region(msg, first + 1, &r->data_region);
  if (rc == 0)
    rc = memport_msg_take_sem(msg, first + 2, &r->data_sem);
  if (rc == 0)
    rc = memport_msg_take_sem(msg, first + 3, &r->space_sem);
  if (rc == 0) {
    size_t csz = memport_region_size(r->ctrl_region), dsz = memport_region_size(r->data_region);
    if (csz < sizeof(struct memport__ring_shared) || dsz < memport_page_size() ||
        dsz > MEMPORT__RING_MAX_CAPACITY || dsz % memport_page_size() != 0 ||
        memport_region_is_readonly(r->ctrl_region) != 0 ||
        (!rx_only && memport_region_is_readonly(r->data_region) != 0))
      rc = MEMPORT_EPROTO;
  }
  if (rc == 0)
    rc = ring_map(r, rx_only);
  if (rc == 0) {
    uint32_t magic = __atomic_load_n(&r->sh->magic, __ATOMIC_RELAXED);
    uint32_t version = __atomic_load_n(&r->sh->version, __ATOMIC_RELAXED);
    if (magic != MEMPORT__RING_MAGIC || version != MEMPORT__RING_VERSION)
      rc = MEMPORT_EPROTO;
  }
  if (rc == 0)
    rc = ring_init_positions(r);
  if (rc < 0) {
    ring_free(r);
    return rc;
  }
  *out = r;
  return 0;
}

int memport_ring_import(memport_ring_t **out, memport_msg_t *msg, size_t first) {
  if (out == NULL || msg == NULL)
    return MEMPORT_EINVAL;
  return ring_import(out, msg, first, false);
}

/* Consumer only: the data area is mapped read-only (the object must never produce). */
int memport__ring_import_rx(memport_ring_t **out, memport_msg_t *msg, size_t first) {
  return ring_import(out, msg, first, true);
}

size_t memport_ring_max_record(const memport_ring_t *ring) { return ring == NULL ? 0 : ring->max_record; }

void memport__ring_set_policy(memport_ring_t *r, int policy, uint64_t spin_ns) {
  memport__wait_policy_set(&r->wait, policy, spin_ns);
}

int memport_ring_set_wait(memport_ring_t *ring, int policy, int64_t spin_ns) {
  if (ring == NULL || spin_ns < 0 ||
      (policy != MEMPORT_WAIT_BLOCK && policy != MEMPORT_WAIT_SPIN && policy != MEMPORT_WAIT_ADAPTIVE))
    return MEMPORT_EINVAL;
  memport__ring_set_policy(ring, policy, (uint64_t)spin_ns);
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Producer.                                                                                   */

int memport__ring_reserve(memport_ring_t *r, size_t len, void **ptr, uint64_t deadline) {
  if (MEMPORT__UNLIKELY(ring_broken(r)))
    return MEMPORT_EPROTO;
  if (MEMPORT__UNLIKELY(len > r->max_record))
    return MEMPORT_EMSGSIZE;
  uint64_t need = rec_total(len);
  r->p.has_res = false;
  if (r->cap - (r->p.pos - r->p.peer) < need) {
    struct ring_need n = {r, need};
    int rc = memport__wait(&r->wait, space_ready_fn, &n, &r->sh->prod_wait, r->space_sem, deadline);
    if (rc < 0)
      return rc;
  }
  r->p.reserved = len;
  r->p.has_res = true;
  *ptr = r->data + r->p.off + MEMPORT__RING_HDR;
  return 0;
}

void memport__ring_unreserve(memport_ring_t *r) { r->p.has_res = false; }

uint64_t memport__ring_produced(const memport_ring_t *r) { return r->p.pos; }

int memport__ring_wait_consumed(memport_ring_t *r, uint64_t pos, uint64_t deadline) {
  if (MEMPORT__UNLIKELY(ring_broken(r)))
    return MEMPORT_EPROTO;
  if (pos > r->p.pos)
    return MEMPORT_EINVAL;
  if (r->p.peer >= pos)
    return 0;
  int rc = refresh_cons(r);
  if (rc < 0 || r->p.peer >= pos)
    return rc;
  /* The consumer is past pos exactly when the free space reaches cap - (pos now - pos); less
   * than a capacity was produced since, or it would be past already. */
  struct ring_need n = {r, r->cap - (r->p.pos - pos)};
  return memport__wait(&r->wait, space_ready_fn, &n, &r->sh->prod_wait, r->space_sem, deadline);
}

int memport__ring_commit(memport_ring_t *r, size_t len, uint32_t type) {
  if (MEMPORT__UNLIKELY(ring_broken(r)))
    return MEMPORT_EPROTO;
  if (MEMPORT__UNLIKELY(!r->p.has_res || len > r->p.reserved))
    return MEMPORT_EINVAL;
  struct memport__ring_rec *h = (struct memport__ring_rec *)(r->data + r->p.off);
  h->len = (uint32_t)len;
  h->type = type;
  uint64_t total = rec_total(len);
  r->p.pos += total;
  r->p.off += total;
  if (r->p.off >= r->cap)
    r->p.off -= r->cap;
  r->p.has_res = false;
  /* Publish (release semantics for the record) and order it before reading the wait word. */
  atomic_exchange_explicit(&r->sh->prod, r->p.pos, memory_order_seq_cst);
  memport__wait_wake(&r->sh->cons_wait, r->data_sem);
  return 0;
}

/* The public calls try first without reading the clock; only a call that must wait computes its
 * deadline, once. NOWAIT becomes MEMPORT_EAGAIN here, at the edge. */
static int ring_reserve_timed(memport_ring_t *r, size_t len, void **ptr, int64_t timeout_ns) {
  int rc = memport__ring_reserve(r, len, ptr, 0);
  if (rc == MEMPORT_ETIMEDOUT && timeout_ns != 0)
    rc = memport__ring_reserve(r, len, ptr, memport__deadline(timeout_ns));
  return memport__nowait_code(rc, timeout_ns);
}

int memport_ring_reserve(memport_ring_t *ring, size_t len, void **ptr, int64_t timeout_ns) {
  if (ring == NULL || ptr == NULL)
    return MEMPORT_EINVAL;
  return ring_reserve_timed(ring, len, ptr, timeout_ns);
}

int memport_ring_commit(memport_ring_t *ring, size_t len) {
  if (ring == NULL)
    return MEMPORT_EINVAL;
  int rc = memport__ring_commit(ring, len, MEMPORT__REC_DATA);
  return rc < 0 ? rc : 0;
}

int memport_ring_write(memport_ring_t *ring, const void *data, size_t len, int64_t timeout_ns) {
  if (ring == NULL || (data == NULL && len != 0))
    return MEMPORT_EINVAL;
  void *p;
  int rc = ring_reserve_timed(ring, len, &p, timeout_ns);
  if (rc < 0)
    return rc;
  if (len != 0)
    memcpy(p, data, len);
  rc = memport__ring_commit(ring, len, MEMPORT__REC_DATA);
  return rc < 0 ? rc : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Consumer.                                                                                   */

int memport__ring_peek(memport_ring_t *r, const void **ptr, size_t *len, uint32_t *type, uint64_t deadline) {
  if (MEMPORT__UNLIKELY(ring_broken(r)))
    return MEMPORT_EPROTO;
  if (r->c.held == 0) {
    if (r->c.peer == r->c.pos) {
      int rc = memport__wait(&r->wait, data_ready_fn, r, &r->sh->cons_wait, r->data_sem, deadline);
      if (rc < 0)
        return rc;
    }
    /* The header is peer-written: read each field once, then check it against what the
     * validated producer position says is there. */
    const struct memport__ring_rec *h = (const struct memport__ring_rec *)(r->data + r->c.off);
    uint32_t l = __atomic_load_n(&h->len, __ATOMIC_RELAXED);
    uint32_t t = __atomic_load_n(&h->type, __ATOMIC_RELAXED);
    uint64_t total = rec_total(l);
    if (MEMPORT__UNLIKELY(l > r->max_record || total > r->c.peer - r->c.pos))
      return ring_break(r);
    r->c.held = total;
    r->c.held_len = l;
    r->c.held_type = t;
  }
  *ptr = r->data + r->c.off + MEMPORT__RING_HDR;
  *len = r->c.held_len;
  *type = r->c.held_type;
  return 0;
}

int memport__ring_release(memport_ring_t *r) {
  if (MEMPORT__UNLIKELY(ring_broken(r)))
    return MEMPORT_EPROTO;
  if (MEMPORT__UNLIKELY(r->c.held == 0))
    return MEMPORT_EINVAL;
  r->c.pos += r->c.held;
  r->c.off += r->c.held;
  if (r->c.off >= r->cap)
    r->c.off -= r->cap;
  r->c.held = 0;
  atomic_exchange_explicit(&r->sh->cons, r->c.pos, memory_order_seq_cst);
  memport__wait_wake(&r->sh->prod_wait, r->space_sem);
  return 0;
}

int memport__ring_readable(memport_ring_t *r) {
  if (ring_broken(r))
    return MEMPORT_EPROTO;
  if (r->c.held != 0 || r->c.peer != r->c.pos)
    return 1;
  return data_ready(r, 0);
}

int memport_ring_peek(memport_ring_t *ring, const void **ptr, size_t *len, int64_t timeout_ns) {
  if (ring == NULL || ptr == NULL || len == NULL)
    return MEMPORT_EINVAL;
  uint32_t type;
  int rc = memport__ring_peek(ring, ptr, len, &type, 0);
  if (rc == MEMPORT_ETIMEDOUT && timeout_ns != 0)
    rc = memport__ring_peek(ring, ptr, len, &type, memport__deadline(timeout_ns));
  if (rc < 0)
    return memport__nowait_code(rc, timeout_ns);
  if (type != MEMPORT__REC_DATA) {
    ring->c.held = 0;
    return ring_break(ring);
  }
  return 0;
}

int memport_ring_release(memport_ring_t *ring) {
  if (ring == NULL)
    return MEMPORT_EINVAL;
  return memport__ring_release(ring);
}

int memport_ring_read(memport_ring_t *ring, void *buf, size_t cap, size_t *len, int64_t timeout_ns) {
  if (ring == NULL || len == NULL || (buf == NULL && cap != 0))
    return MEMPORT_EINVAL;
  const void *p;
  size_t n;
  int rc = memport_ring_peek(ring, &p, &n, timeout_ns);
  if (rc < 0)
    return rc;
  *len = n;
  if (n > cap)
    return MEMPORT_EMSGSIZE;
  if (n != 0)
    memcpy(buf, p, n);
  return memport__ring_release(ring);
}

uint64_t memport__ring_tx_fill(const memport_ring_t *r) {
  uint64_t c = atomic_load_explicit(&r->sh->cons, memory_order_acquire);
  if (c < r->p.peer || c > r->p.pos)
    c = r->p.peer;
  return r->p.pos - c;
}

uint64_t memport__ring_rx_fill(const memport_ring_t *r) {
  uint64_t p = atomic_load_explicit(&r->sh->prod, memory_order_acquire);
  if (p < r->c.pos || p - r->c.pos > r->cap)
    p = r->c.pos;
  return p - r->c.pos;
}

uint64_t memport__ring_capacity(const memport_ring_t *r) { return r->cap; }

/* ------------------------------------------------------------------------------------------ */
/* Readiness and the end of a stream, for users that wait elsewhere than on the ring.          */

uint64_t memport__ring_record_space(size_t len) { return rec_total(len); }

int memport__ring_writable(memport_ring_t *r, uint64_t space) {
  if (ring_broken(r))
    return MEMPORT_EPROTO;
  return space_ready(r, space);
}

uint64_t memport__ring_space_after(const memport_ring_t *r, uint64_t pos) {
  return pos > r->p.pos || r->p.pos - pos > r->cap ? r->cap : r->cap - (r->p.pos - pos);
}

int memport__ring_end_check(memport_ring_t *r, uint64_t end) {
  if (ring_broken(r))
    return MEMPORT_EPROTO;
  int rc = refresh_prod(r);
  if (rc < 0)
    return rc;
  if ((end & (MEMPORT__RING_ALIGN - 1)) != 0 || end < r->c.pos || end > r->c.peer)
    return ring_break(r);
  return 0;
}

int memport__ring_at_end(memport_ring_t *r, uint64_t end) {
  if (ring_broken(r))
    return MEMPORT_EPROTO;
  int rc = refresh_prod(r);
  if (rc < 0)
    return rc;
  if (r->c.pos < end)
    return 0;
  if (r->c.pos > end || r->c.peer != end)
    return ring_break(r);
  return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* From another thread than the ring's producer or consumer: shared positions only.             */

int memport__ring_readable_shared(memport_ring_t *r) {
  if (ring_broken(r))
    return MEMPORT_EPROTO;
  uint64_t c = atomic_load_explicit(&r->sh->cons, memory_order_seq_cst);
  uint64_t p = atomic_load_explicit(&r->sh->prod, memory_order_seq_cst);
  return p != c;
}

int memport__ring_writable_shared(memport_ring_t *r, uint64_t space) {
  if (ring_broken(r))
    return MEMPORT_EPROTO;
  uint64_t p = atomic_load_explicit(&r->sh->prod, memory_order_seq_cst);
  uint64_t c = atomic_load_explicit(&r->sh->cons, memory_order_seq_cst);
  if (c > p || p - c > r->cap)
    return 1; /* impossible: the producer's next call says so */
  return r->cap - (p - c) >= space;
}

int memport__ring_end_check_shared(memport_ring_t *r, uint64_t end) {
  if (ring_broken(r))
    return MEMPORT_EPROTO;
  uint64_t c = atomic_load_explicit(&r->sh->cons, memory_order_seq_cst);
  uint64_t p = atomic_load_explicit(&r->sh->prod, memory_order_seq_cst);
  if ((end & (MEMPORT__RING_ALIGN - 1)) != 0 || end < c || end > p || p - c > r->cap)
    return ring_break(r);
  return 0;
}
