/* SPDX-License-Identifier: MIT */
/* pool.c: loaned buffers: the owner's pool and generations, the borrower's read-only view, the release queue. */
#include "pool.h"

#include <stdlib.h>
#include <string.h>

_Static_assert(sizeof(struct memport__relq_shared) == 3 * MEMPORT__RELQ_LINE + 8 * MEMPORT__RELQ_SIZE,
               "release queue layout");

int memport__pool_geometry_check(uint64_t count, uint64_t buf_size) {
  if (count == 0 || count > MEMPORT__POOL_MAX_BUFFERS || buf_size == 0 || buf_size % memport_page_size() != 0 ||
      buf_size > MEMPORT__POOL_MAX_BYTES / count)
    return MEMPORT_EINVAL;
  return 0;
}

int memport__pool_create(struct memport__pool *p, uint32_t count, size_t buf_size, memport_region_t **lend) {
  memset(p, 0, sizeof *p);
  *lend = NULL;
  p->state = calloc(count, 1);
  p->gen = calloc(count, sizeof p->gen[0]);
  p->free_stack = calloc(count, sizeof p->free_stack[0]);
  if (p->state == NULL || p->gen == NULL || p->free_stack == NULL) {
    memport__pool_destroy(p);
    return MEMPORT_ENOMEM;
  }
  memport_region_t *region = NULL;
  void *map = NULL;
  int rc = memport_region_create(&region, (size_t)count * buf_size, 0);
  if (rc == 0)
    rc = memport_region_map(region, 0, &map);
  if (rc == 0) {
    p->base = map;
    rc = memport_region_readonly(region, lend); /* our writable mapping stays writable */
  }
  memport_region_close(region);
  if (rc < 0) {
    memport__pool_destroy(p);
    return rc;
  }
  p->count = count;
  p->buf_size = buf_size;
  for (uint32_t i = 0; i < count; i++)
    p->free_stack[i] = count - 1 - i; /* buffer 0 first */
  p->free_count = count;
  return 0;
}

void memport__pool_destroy(struct memport__pool *p) {
  if (p->base != NULL)
    memport_unmap(p->base);
  free(p->state);
  free(p->gen);
  free(p->free_stack);
  memset(p, 0, sizeof *p);
}

uint32_t memport__pool_alloc(struct memport__pool *p) {
  uint32_t i = p->free_stack[--p->free_count];
  p->state[i] = MEMPORT__POOL_ALLOCATED;
  return i;
}

void memport__pool_free(struct memport__pool *p, uint32_t i) {
  p->state[i] = MEMPORT__POOL_FREE;
  p->free_stack[p->free_count++] = i;
}

uint32_t memport__pool_lend(struct memport__pool *p, uint32_t i) {
  p->state[i] = MEMPORT__POOL_LENT;
  return ++p->gen[i];
}

int memport__pool_return(struct memport__pool *p, uint32_t i, uint32_t gen) {
  if (i >= p->count || p->state[i] != MEMPORT__POOL_LENT || p->gen[i] != gen)
    return MEMPORT_EPROTO;
  memport__pool_free(p, i);
  return 0;
}

void memport__pool_reclaim(struct memport__pool *p) {
  for (uint32_t i = 0; i < p->count; i++)
    if (p->state[i] == MEMPORT__POOL_LENT)
      memport__pool_free(p, i);
}

int memport__pool_collect(struct memport__pool *p, struct memport__relq_owner *q) {
  uint64_t t = atomic_load_explicit(&q->sh->tail, memory_order_seq_cst);
  if (MEMPORT__LIKELY(t == q->head))
    return 0;
  if (t < q->head || t - q->head > MEMPORT__RELQ_SIZE)
    return MEMPORT_EPROTO;
  for (uint64_t h = q->head; h != t; h++) {
    uint64_t e = atomic_load_explicit(&q->sh->entries[h % MEMPORT__RELQ_SIZE], memory_order_relaxed);
    int rc = memport__pool_return(p, (uint32_t)e, (uint32_t)(e >> 32));
    if (rc < 0)
      return rc;
  }
  q->head = t;
  atomic_store_explicit(&q->sh->head, t, memory_order_release);
  return 0;
}

int memport__relq_push(struct memport__relq_borrower *q, uint32_t i, uint32_t gen, bool *tell_owner) {
  *tell_owner = false;
  if (q->tail - q->head_seen >= MEMPORT__RELQ_SIZE) {
    uint64_t h = atomic_load_explicit(&q->sh->head, memory_order_acquire);
    if (h < q->head_seen || h > q->tail)
      return MEMPORT_EPROTO;
    q->head_seen = h;
    if (q->tail - h >= MEMPORT__RELQ_SIZE)
      return 0;
  }
  atomic_store_explicit(&q->sh->entries[q->tail % MEMPORT__RELQ_SIZE], ((uint64_t)gen << 32) | i,
                        memory_order_relaxed);
  q->tail++;
  /* Publish, then look at the owner's request (the owner sets it, then collects: one of the two
   * always sees the other). */
  atomic_exchange_explicit(&q->sh->tail, q->tail, memory_order_seq_cst);
  if (atomic_load_explicit(&q->sh->owner_wait, memory_order_seq_cst) != 0 &&
      atomic_exchange_explicit(&q->sh->owner_wait, 0, memory_order_seq_cst) != 0)
    *tell_owner = true;
  return 1;
}

int memport__pool_view_open(struct memport__pool_view *v, memport_region_t *region, uint32_t count,
                            size_t buf_size) {
  memset(v, 0, sizeof *v);
  if (memport_region_size(region) < (size_t)count * buf_size)
    return MEMPORT_EPROTO;
  void *map = NULL;
  int rc = memport_region_map(region, MEMPORT_MAP_READONLY, &map);
  if (rc < 0)
    return rc;
  v->base = map;
  v->held = calloc(count, 1);
  v->gen = calloc(count, sizeof v->gen[0]);
  if (v->held == NULL || v->gen == NULL) {
    memport__pool_view_close(v);
    return MEMPORT_ENOMEM;
  }
  v->count = count;
  v->buf_size = buf_size;
  return 0;
}

void memport__pool_view_close(struct memport__pool_view *v) {
  if (v->base != NULL)
    memport_unmap((void *)v->base);
  free(v->held);
  free(v->gen);
  memset(v, 0, sizeof *v);
}
