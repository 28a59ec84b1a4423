/* SPDX-License-Identifier: MIT */
/* pool.h: loaned buffers: an owner's pool of fixed-size buffers with generations, a borrower's read-only view, and the release queue between them. */
#ifndef MEMPORT_POOL_H
#define MEMPORT_POOL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------------------------------ */
/* The release queue: buffers a borrower has finished with travel back to their owner through   */
/* this single-producer single-consumer queue of (gen << 32 | index) entries, without a system  */
/* call. It lives in shared memory its user provides (one queue per borrower).                */

#define MEMPORT__RELQ_SIZE 256u
#define MEMPORT__RELQ_LINE 128u

struct memport__relq_shared {
  _Atomic uint64_t tail; /* written by the borrower: entries pushed */
  unsigned char pad0[MEMPORT__RELQ_LINE - 8];
  _Atomic uint64_t head; /* written by the owner: entries taken */
  unsigned char pad1[MEMPORT__RELQ_LINE - 8];
  _Atomic uint32_t owner_wait; /* nonzero while the owner waits for an entry and asks to be told */
  unsigned char pad2[MEMPORT__RELQ_LINE - 4];
  _Atomic uint64_t entries[MEMPORT__RELQ_SIZE];
};

/* ------------------------------------------------------------------------------------------ */
/* Internal interface (lib/pool.c).                                                            */
#ifdef MEMPORT_BUILDING
#include "internal.h"

#define MEMPORT__POOL_MAX_BUFFERS 4096u
/* A pool's bytes: 1 TiB, or what size_t can count where it is smaller. */
#define MEMPORT__POOL_MAX_BYTES \
  ((uint64_t)SIZE_MAX < ((uint64_t)1 << 40) ? (uint64_t)SIZE_MAX : ((uint64_t)1 << 40))

/* 0 when `count` buffers of `buf_size` bytes (a page multiple) make a valid pool, else
 * MEMPORT_EINVAL. For geometry announced by a peer as well as asked for by a caller. */
MEMPORT_HIDDEN int memport__pool_geometry_check(uint64_t count, uint64_t buf_size);

/* States of an owner's buffers. */
#define MEMPORT__POOL_FREE 0
#define MEMPORT__POOL_ALLOCATED 1 /* handed to the application, being filled */
#define MEMPORT__POOL_LENT 2      /* lent to a borrower until it is released */

/* The owner's pool: mapped writable here, lent read-only. Private to one thread at a time. */
struct memport__pool {
  unsigned char *base; /* count * buf_size bytes */
  size_t buf_size;
  uint32_t count; /* 0: no pool */
  uint8_t *state;        /* MEMPORT__POOL_* of each buffer */
  uint32_t *gen;         /* generation of each buffer's current or last loan */
  uint32_t *free_stack;  /* indices of the free buffers */
  uint32_t free_count;
};

/* Make the pool (its memory is zero) and a read-only handle to it for borrowers (*lend). */
MEMPORT_HIDDEN int memport__pool_create(struct memport__pool *p, uint32_t count, size_t buf_size,
                                        memport_region_t **lend);
MEMPORT_HIDDEN void memport__pool_destroy(struct memport__pool *p);
static inline bool memport__pool_has_free(const struct memport__pool *p) { return p->free_count != 0; }
/* Take a free buffer (there must be one): ALLOCATED. */
MEMPORT_HIDDEN uint32_t memport__pool_alloc(struct memport__pool *p);
static inline void *memport__pool_buf(const struct memport__pool *p, uint32_t i) {
  return p->base + (size_t)i * p->buf_size;
}
static inline bool memport__pool_is_allocated(const struct memport__pool *p, uint32_t i) {
  return i < p->count && p->state[i] == MEMPORT__POOL_ALLOCATED;
}
/* An ALLOCATED buffer back to FREE (never lent). */
MEMPORT_HIDDEN void memport__pool_free(struct memport__pool *p, uint32_t i);
/* An ALLOCATED buffer lent: LENT under a new generation, which the borrower echoes to return it. */
MEMPORT_HIDDEN uint32_t memport__pool_lend(struct memport__pool *p, uint32_t i);
/* A borrower gives buffer i of generation gen back: FREE, or MEMPORT_EPROTO when it was not lent
 * under that generation (nothing changes then). */
MEMPORT_HIDDEN int memport__pool_return(struct memport__pool *p, uint32_t i, uint32_t gen);
/* The borrower is gone: every lent buffer is free again. */
MEMPORT_HIDDEN void memport__pool_reclaim(struct memport__pool *p);

/* The owner's end of one release queue. */
struct memport__relq_owner {
  struct memport__relq_shared *sh;
  uint64_t head; /* entries taken */
};
/* Take every release queued (each validated as by memport__pool_return): 0 or MEMPORT_EPROTO. */
MEMPORT_HIDDEN int memport__pool_collect(struct memport__pool *p, struct memport__relq_owner *q);
/* Ask the borrower to tell us (by whatever means its user arranged) of its next push; then
 * collect again before sleeping. memport__relq_disarm withdraws the request. */
static inline void memport__relq_arm(struct memport__relq_owner *q) {
  atomic_store_explicit(&q->sh->owner_wait, 1, memory_order_seq_cst);
}
static inline void memport__relq_disarm(struct memport__relq_owner *q) {
  atomic_store_explicit(&q->sh->owner_wait, 0, memory_order_relaxed);
}
/* Entries queued and not yet taken, from the shared positions alone (another thread than the
 * owner's may ask; a hostile borrower can only make it say yes). */
static inline bool memport__relq_pending(const struct memport__relq_owner *q) {
  return atomic_load_explicit(&q->sh->tail, memory_order_seq_cst) !=
         atomic_load_explicit(&q->sh->head, memory_order_seq_cst);
}

/* The borrower's end of a release queue. */
struct memport__relq_borrower {
  struct memport__relq_shared *sh;
  uint64_t tail;      /* entries pushed */
  uint64_t head_seen; /* entries the owner took, last validated */
};
/* Queue buffer i of generation gen for its owner: 1 queued, 0 full, or MEMPORT_EPROTO when the
 * owner's position is impossible. *tell_owner: the owner asked to be told (the request is
 * cleared). */
MEMPORT_HIDDEN int memport__relq_push(struct memport__relq_borrower *q, uint32_t i, uint32_t gen, bool *tell_owner);

/* A borrower's view of an owner's pool: mapped read-only; which buffers it holds, under which
 * generation. */
struct memport__pool_view {
  const unsigned char *base;
  size_t buf_size;
  uint32_t count; /* 0: no pool */
  uint8_t *held;  /* 1 while that buffer is held here */
  uint32_t *gen;  /* the generation the owner lent it under */
};
/* Map `region` (which must hold count * buf_size bytes; geometry checked already) read-only. The
 * region handle stays the caller's. */
MEMPORT_HIDDEN int memport__pool_view_open(struct memport__pool_view *v, memport_region_t *region, uint32_t count,
                                           size_t buf_size);
MEMPORT_HIDDEN void memport__pool_view_close(struct memport__pool_view *v);
/* The message [offset, offset+len) of buffer i as the owner announced it: a pointer, or NULL when
 * that is out of bounds or the buffer is held already (the values were loaded once by the caller). */
static inline const void *memport__pool_view_find(const struct memport__pool_view *v, uint32_t i, uint64_t offset,
                                                  uint64_t len) {
  if (i >= v->count || v->held[i] || offset > v->buf_size || len > v->buf_size - offset)
    return NULL;
  return v->base + (size_t)i * v->buf_size + (size_t)offset;
}
static inline void memport__pool_view_hold(struct memport__pool_view *v, uint32_t i, uint32_t gen) {
  v->held[i] = 1;
  v->gen[i] = gen;
}
static inline bool memport__pool_view_holds(const struct memport__pool_view *v, uint32_t i) {
  return i < v->count && v->held[i];
}
/* Stop holding buffer i: the generation to echo to its owner. */
static inline uint32_t memport__pool_view_drop(struct memport__pool_view *v, uint32_t i) {
  v->held[i] = 0;
  return v->gen[i];
}
#endif

#endif /* MEMPORT_POOL_H */
