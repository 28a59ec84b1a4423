/* SPDX-License-Identifier: MIT */
/* test_hostile.c: a channel peer that speaks the wire protocol itself and scribbles its shared memory and control traffic. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include "helpers.h"

#include "../lib/chan_proto.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>


/*
 * The victim is a real channel end (memport_chan_open over a port). The hostile peer is built at
 * the wire level: it makes its own ring (control page, mirrored data area, two semaphores) and
 * pool with the public API, announces them in a HELLO exactly as a channel does, maps what the
 * victim announces back, and then writes whatever it likes: into its TX ring's control page and
 * data (which the victim consumes), into the victim's TX ring control page (which it legitimately
 * shares as that ring's consumer), into the release queue of the victim's pool, and over the port.
 *
 * The randomized test runs the victim in a forked child with an alarm: the child checks every
 * return code against the documented set, that no call overruns its deadline, that every received
 * byte can be read (a record pointing outside the mappings would fault), that MEMPORT_EPROTO is
 * sticky, and that closing the channel returns every descriptor and mapping it made.
 */

static uint64_t rnd(uint64_t *x) {
  *x ^= *x << 13;
  *x ^= *x >> 7;
  *x ^= *x << 17;
  return *x;
}

/* Honest messages: 8 bytes of sequence number, then bytes derived from it. */
static void fill_msg(unsigned char *p, size_t len, uint64_t seq) {
  if (len >= 8)
    memcpy(p, &seq, 8);
  uint32_t x = (uint32_t)seq * 2654435761u + 1;
  for (size_t i = 8; i < len; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    p[i] = (unsigned char)x;
  }
}

static int check_msg(const unsigned char *p, size_t len, uint64_t seq) {
  if (len < 8)
    return 0;
  uint64_t s;
  memcpy(&s, p, 8);
  if (s != seq)
    return -1;
  uint32_t x = (uint32_t)seq * 2654435761u + 1;
  for (size_t i = 8; i < len; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    if (p[i] != (unsigned char)x)
      return -1;
  }
  return 0;
}

static uint64_t rec_total(uint64_t len) { return MEMPORT__RING_HDR + ((len + 15u) & ~(uint64_t)15u); }

/* ------------------------------------------------------------------------------------------ */
/* The hostile peer.                                                                            */

struct hpeer {
  memport_port_t *port;
  memport_msg_t *m;
  uint64_t x; /* random state */
  bool honest, deaf, lazy;
  int focus; /* the one kind of adversarial action of this round, or -1 for any */
  /* Our TX ring: we produce, the victim consumes. */
  memport_region_t *ctrl_r, *data_r;
  memport_sem_t *dsem, *ssem; /* the victim sleeps on dsem, we would sleep on ssem */
  struct memport__ring_shared *sh;
  unsigned char *data;
  uint64_t cap, prod;
  /* Our pool (read-only at the victim). */
  memport_region_t *pool_r;
  unsigned char *pool;
  uint32_t pn;
  uint64_t pbs;
  uint8_t *pstate;
  uint32_t *pgen;
  uint64_t vrel_head; /* entries taken from the victim's release queue for our pool */
  uint32_t blob_seq;
  /* The victim's TX ring (we consume) and pool. */
  struct memport__ring_shared *vsh;
  const unsigned char *vdata;
  uint64_t vcap, vcons;
  memport_sem_t *vdsem, *vssem;
  const unsigned char *vpool;
  uint32_t vpn;
  uint64_t vpbs;
  uint64_t rel_tail; /* releases we pushed for the victim's pool */
  /* The link pages (chan_proto.h): ours, sent in our HELLO, and the victim's. */
  memport_region_t *link_r;
  struct memport__chan_link *link, *vlink;
  /* Honest traffic. */
  uint64_t seq_out, seq_in;
  unsigned bad_in, got_in;
};

/* Build our ring and pool; `hello` receives our HELLO (bytes and handles). */
static void hp_init(struct hpeer *h, memport_port_t *port, uint64_t cap, uint32_t pn, uint64_t pbs, uint64_t seed) {
  memset(h, 0, sizeof *h);
  h->port = port;
  h->focus = -1;
  h->x = seed | 1;
  h->cap = cap;
  h->pn = pn;
  h->pbs = pbs;
  assert_int_equal(memport_msg_create(&h->m), 0);
  memport_ring_t *ring;
  th_assert_ok(memport_ring_create(&ring, cap, 0));
  th_assert_ok(memport_ring_export(ring, h->m));
  memport_ring_close(ring); /* the exported copies keep everything alive */
  th_assert_ok(memport_msg_take_region(h->m, 0, &h->ctrl_r));
  th_assert_ok(memport_msg_take_region(h->m, 1, &h->data_r));
  th_assert_ok(memport_msg_take_sem(h->m, 2, &h->dsem));
  th_assert_ok(memport_msg_take_sem(h->m, 3, &h->ssem));
  memport_msg_clear(h->m);
  void *p;
  th_assert_ok(memport_region_map(h->ctrl_r, 0, &p));
  h->sh = p;
  th_assert_ok(memport_region_map(h->data_r, MEMPORT_MAP_MIRROR, &p));
  h->data = p;
  th_assert_ok(memport_region_create(&h->link_r, sizeof(struct memport__chan_link), 0));
  th_assert_ok(memport_region_map(h->link_r, 0, &p));
  h->link = p;
  if (pn != 0) {
    th_assert_ok(memport_region_create(&h->pool_r, pn * pbs, 0));
    th_assert_ok(memport_region_map(h->pool_r, 0, &p));
    h->pool = p;
    h->pstate = calloc(pn, 1);
    h->pgen = calloc(pn, sizeof *h->pgen);
    assert_non_null(h->pstate);
    assert_non_null(h->pgen);
  }
}

/* The HELLO as a channel would send it (the caller may edit it before sending). */
static void hp_hello(struct hpeer *h, struct memport__ctl_hello *hello) {
  memset(hello, 0, sizeof *hello);
  hello->hdr.magic = MEMPORT__CTL_MAGIC;
  hello->hdr.type = MEMPORT__CTL_HELLO;
  hello->version = MEMPORT__CHAN_VERSION;
  hello->pool_buffers = h->pn;
  hello->ring_capacity = h->cap;
  hello->pool_buffer_size = h->pn != 0 ? h->pbs : 0;
  memport_msg_clear(h->m);
  th_assert_ok(memport_msg_attach_region(h->m, h->ctrl_r, MEMPORT_ATTACH_COPY));
  th_assert_ok(memport_msg_attach_region(h->m, h->data_r, MEMPORT_ATTACH_COPY));
  th_assert_ok(memport_msg_attach_sem(h->m, h->dsem, MEMPORT_ATTACH_COPY));
  th_assert_ok(memport_msg_attach_sem(h->m, h->ssem, MEMPORT_ATTACH_COPY));
  if (h->pn != 0)
    th_assert_ok(memport_msg_attach_region(h->m, h->pool_r, MEMPORT_ATTACH_COPY));
  th_assert_ok(memport_msg_attach_region(h->m, h->link_r, MEMPORT_ATTACH_COPY));
}

static void hp_send_hello(struct hpeer *h) {
  struct memport__ctl_hello hello;
  hp_hello(h, &hello);
  th_assert_ok(memport_msg_set_bytes(h->m, &hello, sizeof hello));
  th_assert_ok(memport_port_send(h->port, h->m, SEC));
}

/* Receive and map the victim's HELLO. */
static int hp_recv_hello(struct hpeer *h) {
  int rc = memport_port_recv(h->port, h->m, 5 * SEC);
  if (rc != 0)
    return rc;
  size_t len;
  struct memport__ctl_hello hello;
  const void *b = memport_msg_bytes(h->m, &len);
  if (len != sizeof hello)
    return MEMPORT_EPROTO;
  memcpy(&hello, b, sizeof hello);
  memport_region_t *r;
  void *p;
  th_assert_ok(memport_msg_take_region(h->m, 0, &r));
  th_assert_ok(memport_region_map(r, 0, &p));
  h->vsh = p;
  memport_region_close(r);
  th_assert_ok(memport_msg_take_region(h->m, 1, &r));
  h->vcap = memport_region_size(r);
  th_assert_ok(memport_region_map(r, MEMPORT_MAP_MIRROR | MEMPORT_MAP_READONLY, &p));
  h->vdata = p;
  memport_region_close(r);
  th_assert_ok(memport_msg_take_sem(h->m, 2, &h->vdsem));
  th_assert_ok(memport_msg_take_sem(h->m, 3, &h->vssem));
  if (hello.pool_buffers != 0) {
    th_assert_ok(memport_msg_take_region(h->m, 4, &r));
    th_assert_ok(memport_region_map(r, MEMPORT_MAP_READONLY, &p));
    h->vpool = p;
    memport_region_close(r);
    h->vpn = hello.pool_buffers;
    h->vpbs = hello.pool_buffer_size;
  }
  th_assert_ok(memport_msg_take_region(h->m, hello.pool_buffers != 0 ? 5 : 4, &r));
  th_assert_ok(memport_region_map(r, 0, &p));
  h->vlink = p;
  memport_region_close(r);
  memport_msg_clear(h->m);
  return 0;
}

static void hp_fini(struct hpeer *h) {
  memport_port_close(h->port);
  memport_msg_close(h->m);
  memport_unmap(h->sh);
  memport_unmap(h->data);
  memport_region_close(h->ctrl_r);
  memport_region_close(h->data_r);
  memport_sem_close(h->dsem);
  memport_sem_close(h->ssem);
  if (h->pool != NULL)
    memport_unmap(h->pool);
  memport_region_close(h->pool_r);
  free(h->pstate);
  free(h->pgen);
  if (h->link != NULL)
    memport_unmap(h->link);
  if (h->vlink != NULL)
    memport_unmap(h->vlink);
  memport_region_close(h->link_r);
  if (h->vsh != NULL)
    memport_unmap(h->vsh);
  if (h->vdata != NULL)
    memport_unmap((void *)h->vdata);
  if (h->vpool != NULL)
    memport_unmap((void *)h->vpool);
  memport_sem_close(h->vdsem);
  memport_sem_close(h->vssem);
  memset(h, 0, sizeof *h);
}

static void hp_ctl(struct hpeer *h, const void *bytes, size_t len) {
  memport_msg_clear(h->m);
  memport_msg_set_bytes(h->m, bytes, len);
  (void)memport_port_send(h->port, h->m, MEMPORT_NOWAIT);
  memport_msg_clear(h->m);
}

static void hp_wake(struct hpeer *h) {
  struct memport__ctl_hdr w = {MEMPORT__CTL_MAGIC, MEMPORT__CTL_WAKE, 0};
  hp_ctl(h, &w, sizeof w);
}

/* Publish our producer position and wake the victim as a channel producer would. */
static void hp_publish(struct hpeer *h) {
  atomic_store(&h->sh->prod, h->prod);
  uint32_t w = atomic_exchange(&h->sh->cons_wait, 0);
  if (w & MEMPORT__WAIT_SEM)
    memport_sem_signal(h->dsem);
  if (atomic_exchange(&h->link->port_wake, 0) != 0)
    hp_wake(h);
}

/* Reserve a record of `len` payload bytes in our ring: its header, or NULL when full. */
static struct memport__ring_rec *hp_reserve(struct hpeer *h, uint64_t len) {
  uint64_t c = atomic_load(&h->sh->cons);
  if (c > h->prod || h->cap - (h->prod - c) < rec_total(len))
    return NULL;
  return (struct memport__ring_rec *)(h->data + h->prod % h->cap);
}

static bool hp_record(struct hpeer *h, uint32_t type, const void *payload, uint32_t len) {
  struct memport__ring_rec *r = hp_reserve(h, len);
  if (r == NULL)
    return false;
  r->len = len;
  r->type = type;
  memcpy(r + 1, payload, len);
  h->prod += rec_total(len);
  hp_publish(h);
  return true;
}

static bool hp_honest_inline(struct hpeer *h, uint32_t len) {
  struct memport__ring_rec *r = hp_reserve(h, len);
  if (r == NULL)
    return false;
  fill_msg((unsigned char *)(r + 1), len, h->seq_out);
  r->len = len;
  r->type = MEMPORT__REC_INLINE;
  h->prod += rec_total(len);
  h->seq_out++;
  hp_publish(h);
  return true;
}

static bool hp_honest_pool(struct hpeer *h, uint64_t len) {
  if (h->pn == 0)
    return false;
  uint32_t i = (uint32_t)(rnd(&h->x) % h->pn);
  if (h->pstate[i] != 0 || hp_reserve(h, sizeof(struct memport__rec_pool)) == NULL)
    return false;
  len %= h->pbs + 1;
  uint64_t off = (h->pbs - len) & ~(uint64_t)7 & (rnd(&h->x) % (h->pbs - len + 1));
  fill_msg(h->pool + i * h->pbs + off, len, h->seq_out);
  struct memport__rec_pool d = {i, ++h->pgen[i], off, len};
  h->pstate[i] = 1;
  h->seq_out++;
  return hp_record(h, MEMPORT__REC_POOL, &d, sizeof d);
}

static bool hp_honest_blob(struct hpeer *h, uint64_t len) {
  if (hp_reserve(h, sizeof(struct memport__rec_blob)) == NULL)
    return false;
  memport_region_t *r, *ro;
  void *p;
  th_assert_ok(memport_region_create(&r, len != 0 ? len : 1, 0));
  th_assert_ok(memport_region_map(r, 0, &p));
  fill_msg(p, len, h->seq_out);
  memport_unmap(p);
  th_assert_ok(memport_region_readonly(r, &ro));
  memport_region_close(r);
  struct memport__ctl_blob b = {{MEMPORT__CTL_MAGIC, MEMPORT__CTL_BLOB, 0}, h->blob_seq, 0, len};
  memport_msg_clear(h->m);
  memport_msg_set_bytes(h->m, &b, sizeof b);
  memport_msg_attach_region(h->m, ro, 0);
  int rc = memport_port_send(h->port, h->m, MEMPORT_NOWAIT);
  memport_msg_clear(h->m);
  if (rc != 0)
    return false;
  struct memport__rec_blob d = {h->blob_seq++, 0, len};
  h->seq_out++;
  return hp_record(h, MEMPORT__REC_BLOB, &d, sizeof d);
}

/* Give a victim's pool buffer back through the release queue in its link page (or the port when full). */
static void hp_release(struct hpeer *h, uint32_t index, uint32_t gen) {
  uint64_t head = atomic_load(&h->vlink->pool_releases.head);
  if (h->rel_tail - head < MEMPORT__RELQ_SIZE && head <= h->rel_tail) {
    atomic_store(&h->vlink->pool_releases.entries[h->rel_tail % MEMPORT__RELQ_SIZE], ((uint64_t)gen << 32) | index);
    h->rel_tail++;
    atomic_store(&h->vlink->pool_releases.tail, h->rel_tail);
  } else {
    unsigned char b[sizeof(struct memport__ctl_release) + sizeof(struct memport__ctl_release_entry)];
    struct memport__ctl_release r = {{MEMPORT__CTL_MAGIC, MEMPORT__CTL_RELEASE, 0}, 1, 0};
    struct memport__ctl_release_entry e = {index, gen};
    memcpy(b, &r, sizeof r);
    memcpy(b + sizeof r, &e, sizeof e);
    hp_ctl(h, b, sizeof b);
  }
  if (atomic_exchange(&h->vlink->pool_releases.owner_wait, 0) != 0)
    hp_wake(h);
}

static void hp_read_port(struct hpeer *h);

/* Consume what the victim sent (checking it when honest) and hand its pool buffers back. */
static void hp_consume(struct hpeer *h) {
  uint64_t p = atomic_load(&h->vsh->prod);
  if (p < h->vcons || p - h->vcons > h->vcap)
    return; /* the victim is honest: this does not happen */
  while (h->vcons < p) {
    const struct memport__ring_rec *r = (const void *)(h->vdata + h->vcons % h->vcap);
    uint32_t len = r->len, type = r->type;
    if (rec_total(len) > p - h->vcons) {
      h->bad_in++;
      break;
    }
    const unsigned char *payload = (const unsigned char *)(r + 1);
    if (type == MEMPORT__REC_INLINE) {
      h->bad_in += check_msg(payload, len, h->seq_in++) != 0;
    } else if (type == MEMPORT__REC_POOL && len == sizeof(struct memport__rec_pool)) {
      struct memport__rec_pool d;
      memcpy(&d, payload, sizeof d);
      if (h->vpool == NULL) /* its pool came over the port ahead of this record */
        hp_read_port(h);
      if (d.index < h->vpn && d.offset <= h->vpbs && d.len <= h->vpbs - d.offset)
        h->bad_in += check_msg(h->vpool + d.index * h->vpbs + d.offset, d.len, h->seq_in++) != 0;
      else
        h->bad_in++;
      if (d.index < h->vpn)
        hp_release(h, d.index, d.gen);
    } else if (type == MEMPORT__REC_BLOB) {
      h->seq_in++; /* the region came over the port; it is closed unread */
    } else {
      h->bad_in++;
    }
    h->got_in++;
    h->vcons += rec_total(len);
  }
  atomic_store(&h->vsh->cons, h->vcons);
  uint32_t w = atomic_exchange(&h->vsh->prod_wait, 0);
  if (w & MEMPORT__WAIT_SEM)
    memport_sem_signal(h->vssem);
}

/* Take back our pool buffers from the release queue in our link page. */
static void hp_take_releases(struct hpeer *h) {
  uint64_t t = atomic_load(&h->link->pool_releases.tail);
  if (t < h->vrel_head || t - h->vrel_head > MEMPORT__RELQ_SIZE)
    return;
  for (; h->vrel_head < t; h->vrel_head++) {
    uint64_t e = atomic_load(&h->link->pool_releases.entries[h->vrel_head % MEMPORT__RELQ_SIZE]);
    uint32_t i = (uint32_t)e;
    if (i < h->pn && h->pgen[i] == (uint32_t)(e >> 32))
      h->pstate[i] = 0;
  }
  atomic_store(&h->link->pool_releases.head, h->vrel_head);
}

/* Read the port: releases free our buffers, blob regions are closed. */
static void hp_read_port(struct hpeer *h) {
  for (int n = 0; n < 32; n++) {
    if (memport_port_recv(h->port, h->m, MEMPORT_NOWAIT) != 0)
      break;
    size_t len;
    const unsigned char *b = memport_msg_bytes(h->m, &len);
    struct memport__ctl_release r;
    struct memport__ctl_pool pc;
    if (len == sizeof pc && h->vpool == NULL && memport_msg_handle_count(h->m) == 1) {
      memcpy(&pc, b, sizeof pc);
      memport_region_t *reg;
      void *pm;
      if (pc.hdr.type == MEMPORT__CTL_POOL && memport_msg_take_region(h->m, 0, &reg) == 0) {
        th_assert_ok(memport_region_map(reg, MEMPORT_MAP_READONLY, &pm));
        memport_region_close(reg);
        h->vpool = pm;
        h->vpn = pc.buffers;
        h->vpbs = pc.buffer_size;
      }
    } else if (len >= sizeof r) {
      memcpy(&r, b, sizeof r);
      if (r.hdr.type == MEMPORT__CTL_RELEASE && len == sizeof r + (size_t)r.count * 8) {
        for (uint32_t k = 0; k < r.count; k++) {
          struct memport__ctl_release_entry e;
          memcpy(&e, b + sizeof r + k * sizeof e, sizeof e);
          if (e.index < h->pn && h->pgen[e.index] == e.gen)
            h->pstate[e.index] = 0;
        }
      }
    }
    memport_msg_clear(h->m);
  }
}

#define H_EVIL_KINDS 26

/* One adversarial action (of kind h->focus, or any). */
static void hp_evil(struct hpeer *h) {
  uint64_t v = rnd(&h->x);
  unsigned what = h->focus >= 0 ? (unsigned)h->focus : (unsigned)(rnd(&h->x) % H_EVIL_KINDS);
  struct memport__ring_rec *r;
  switch (what) {
  case 0: /* a length that does not fit (huge, wrapping, past the producer) */
    if ((r = hp_reserve(h, 16)) != NULL) {
      static const uint32_t lens[] = {0xffffffffu, 0xfffffff8u, 0xfffffff0u, 0x80000000u, 17, 4096, 1u << 30};
      r->len = lens[v % 7];
      r->type = MEMPORT__REC_INLINE;
      h->prod += 32;
      hp_publish(h);
    }
    break;
  case 1: /* producer position past the end, misaligned, backwards, or wildly off */
    switch (v % 5) {
    case 0: atomic_store(&h->sh->prod, atomic_load(&h->sh->cons) + h->cap + 16); break;
    case 1: atomic_store(&h->sh->prod, h->prod + 8); break;
    case 2: atomic_store(&h->sh->prod, h->prod - 16); break;
    case 3: atomic_store(&h->sh->prod, UINT64_MAX - (v & 0xff0)); break;
    default: atomic_store(&h->sh->prod, v); break;
    }
    break;
  case 2: { /* a torn update: the new position written as two halves, slowly */
    uint64_t np = h->prod + (v & 0x3ff0) + ((v >> 20) & 1 ? (uint64_t)1 << 32 : 0);
    volatile uint32_t *half = (volatile uint32_t *)(void *)&h->sh->prod;
    half[v >> 40 & 1] = (uint32_t)(np >> (32 * (v >> 40 & 1)));
    for (volatile int i = 0; i < 2000; i++) {
    }
    half[!(v >> 40 & 1)] = (uint32_t)(np >> (32 * !(v >> 40 & 1)));
    break;
  }
  case 3: /* a record changed after it was committed, while the victim may be reading it */
    if ((r = hp_reserve(h, 64)) != NULL) {
      uint64_t at = h->prod;
      hp_honest_inline(h, 64);
      r = (struct memport__ring_rec *)(h->data + at % h->cap);
      for (int i = 0; i < 200; i++) {
        __atomic_store_n(&r->type, (uint32_t)rnd(&h->x) % 5, __ATOMIC_RELAXED);
        __atomic_store_n(&r->len, (uint32_t)rnd(&h->x) % 200, __ATOMIC_RELAXED);
      }
    }
    break;
  case 4: { /* pool descriptors out of range */
    struct memport__rec_pool d = {0, 1, 0, 16};
    switch (v % 8) {
    case 0: d.index = h->pn; break;
    case 1: d.index = 0xffffffffu; break;
    case 2: d.offset = h->pbs + 16; break;
    case 3: d.offset = (uint64_t)1 << 63; break;
    case 4: d.len = UINT64_MAX; break;
    case 5: d.offset = 16; d.len = UINT64_MAX - 8; break; /* offset + len wraps */
    case 6: d.offset = h->pbs - 8; break;                 /* runs past the buffer */
    default: break;                                       /* a descriptor record of the wrong size */
    }
    hp_record(h, MEMPORT__REC_POOL, &d, v % 8 != 7 ? sizeof d : sizeof d - 8);
    break;
  }
  case 5: { /* the same pool buffer again while the victim may still hold it */
    struct memport__rec_pool d = {h->pn != 0 ? (uint32_t)(v % h->pn) : 0, (uint32_t)v, 0, v % 64};
    hp_record(h, MEMPORT__REC_POOL, &d, sizeof d);
    break;
  }
  case 6: { /* a blob record without its region, or with the wrong sequence number */
    struct memport__rec_blob d = {h->blob_seq + (uint32_t)(v % 3), 0, v % 100};
    hp_record(h, MEMPORT__REC_BLOB, &d, sizeof d);
    break;
  }
  case 7: { /* BLOB control messages that lie: sequence, length, handles */
    struct memport__ctl_blob b = {{MEMPORT__CTL_MAGIC, MEMPORT__CTL_BLOB, 0}, h->blob_seq, 0, 4096};
    memport_msg_clear(h->m);
    switch (v % 5) {
    case 0: b.seq += 7; break;
    case 1: b.len = (uint64_t)1 << 40; break; /* longer than the region */
    case 2: b.len = UINT64_MAX; break;
    default: break;
    }
    memport_msg_set_bytes(h->m, &b, v % 5 == 4 ? sizeof b - 4 : sizeof b);
    if (v % 5 != 3) {
      memport_region_t *reg;
      th_assert_ok(memport_region_create(&reg, 4096, 0));
      memport_msg_attach_region(h->m, reg, 0);
    } else {
      memport_sem_t *s;
      th_assert_ok(memport_sem_create(&s, 0, 0));
      memport_msg_attach_sem(h->m, s, 0);
    }
    (void)memport_port_send(h->port, h->m, MEMPORT_NOWAIT);
    memport_msg_clear(h->m);
    break;
  }
  case 8: /* release-queue entries for buffers that do not exist or were never sent */
    atomic_store(&h->vlink->pool_releases.entries[h->rel_tail % MEMPORT__RELQ_SIZE], v);
    h->rel_tail++;
    atomic_store(&h->vlink->pool_releases.tail, h->rel_tail);
    break;
  case 9: /* release-queue tail racing ahead, or going back */
    atomic_store(&h->vlink->pool_releases.tail, v & 1 ? h->rel_tail + MEMPORT__RELQ_SIZE + 1 + (v % 1000) : h->rel_tail - 1);
    break;
  case 10: { /* RELEASE control messages with lying counts */
    unsigned char b[64];
    struct memport__ctl_release rl = {{MEMPORT__CTL_MAGIC, MEMPORT__CTL_RELEASE, 0}, (uint32_t)(v % 5), 0};
    if (v & 32)
      rl.count = 0xffffffffu;
    memcpy(b, &rl, sizeof rl);
    for (size_t i = sizeof rl; i < sizeof b; i++)
      b[i] = (unsigned char)rnd(&h->x);
    hp_ctl(h, b, sizeof rl + (v >> 8) % (sizeof b - sizeof rl + 1));
    break;
  }
  case 11: { /* random control bytes, unknown types, wakes carrying handles */
    unsigned char b[40];
    for (size_t i = 0; i < sizeof b; i++)
      b[i] = (unsigned char)rnd(&h->x);
    struct memport__ctl_hdr hd = {MEMPORT__CTL_MAGIC, (uint16_t)(v % 8), 0};
    if (v & 16)
      memcpy(b, &hd, sizeof hd);
    memport_msg_clear(h->m);
    memport_msg_set_bytes(h->m, b, (v >> 8) % sizeof b);
    if (v & 64) {
      memport_sem_t *s;
      th_assert_ok(memport_sem_create(&s, 0, 0));
      memport_msg_attach_sem(h->m, s, 0);
    }
    (void)memport_port_send(h->port, h->m, MEMPORT_NOWAIT);
    memport_msg_clear(h->m);
    break;
  }
  case 12: /* the victim's TX ring: its consumer position, scribbled */
    switch (v % 5) {
    case 0: atomic_store(&h->vsh->cons, atomic_load(&h->vsh->prod) + 16); break;
    case 1: atomic_store(&h->vsh->cons, h->vcons > 16 ? h->vcons - 16 : 0); break;
    case 2: atomic_store(&h->vsh->cons, h->vcons + 8); break;
    case 3: atomic_store(&h->vsh->cons, v); break;
    default: atomic_store(&h->vsh->cons, UINT64_MAX); break;
    }
    break;
  case 13: /* the release queue for our pool (our link page): the head the victim reads, scribbled */
    atomic_store(&h->link->pool_releases.head, v & 1 ? v : atomic_load(&h->link->pool_releases.tail) + 1 + (v % 4));
    break;
  case 14: /* wait words, both rings and both link pages: any bits */
    atomic_store(&h->vsh->cons_wait, (uint32_t)v);
    atomic_store(&h->vsh->prod_wait, (uint32_t)(v >> 32));
    atomic_store(&h->sh->cons_wait, (uint32_t)(v >> 16));
    atomic_store(&h->sh->prod_wait, (uint32_t)(v >> 8));
    atomic_store(&h->vlink->pool_releases.owner_wait, (uint32_t)(v >> 24));
    atomic_store(&h->link->pool_releases.owner_wait, (uint32_t)(v >> 40));
    atomic_store(&h->link->port_wake, (uint32_t)(v >> 48));
    atomic_store(&h->vlink->port_wake, (uint32_t)(v >> 20));
    break;
  case 15: /* fields the victim writes: our ring's consumer position, its release queue's head */
    atomic_store(&h->sh->cons, v % 3 == 0 ? v : h->prod + 16);
    atomic_store(&h->vlink->pool_releases.head, v >> 3);
    break;
  case 16: /* random bytes anywhere in our data area, committed or not */
    for (int i = 0; i < 16; i++)
      h->data[rnd(&h->x) % h->cap] = (unsigned char)rnd(&h->x);
    break;
  case 17: /* random words over the magic, version and capacity */
    memcpy(h->sh, &v, sizeof v);
    __atomic_store_n(&h->sh->capacity, v >> 1, __ATOMIC_RELAXED);
    break;
  case 18: /* spurious wake-ups */
    for (int i = 0; i < 8; i++) {
      memport_sem_signal(h->dsem);
      memport_sem_signal(h->vssem);
      memport_sem_signal_all(h->vdsem);
    }
    break;
  case 19: /* stop reading the port: the victim's sends fill it */
    h->deaf = true;
    break;
  case 20: /* stop consuming */
    h->lazy = true;
    break;
  case 21: /* an oversized-record flood of valid headers of wrong types */
    for (int i = 0; i < 8; i++) {
      uint32_t t = (uint32_t)rnd(&h->x);
      hp_record(h, t, &v, (uint32_t)(v % 9));
    }
    break;
  case 23: /* more valid oversized-message announcements than may be in flight, and no records */
    for (int i = 0; i < (int)MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT + 8; i++) {
      memport_region_t *reg, *ro;
      th_assert_ok(memport_region_create(&reg, 4096, 0));
      th_assert_ok(memport_region_readonly(reg, &ro));
      memport_region_close(reg);
      struct memport__ctl_blob b = {{MEMPORT__CTL_MAGIC, MEMPORT__CTL_BLOB, 0}, h->blob_seq, 0, 100};
      memport_msg_clear(h->m);
      memport_msg_set_bytes(h->m, &b, sizeof b);
      memport_msg_attach_region(h->m, ro, 0);
      int rc = memport_port_send(h->port, h->m, MEMPORT_NOWAIT);
      memport_msg_clear(h->m);
      if (rc != 0)
        break;
      h->blob_seq++;
    }
    break;
  case 24: { /* a valid-looking control message carrying the most handles a message can */
    struct memport__ctl_hdr hd = {MEMPORT__CTL_MAGIC, (uint16_t)(v % 2 ? MEMPORT__CTL_WAKE : MEMPORT__CTL_RELEASE), 0};
    memport_msg_clear(h->m);
    memport_msg_set_bytes(h->m, &hd, sizeof hd);
    for (unsigned i = 0; i < MEMPORT_MSG_MAX_HANDLES; i++) {
      if (i % 2)
        memport_msg_attach_sem(h->m, h->dsem, MEMPORT_ATTACH_COPY);
      else
        memport_msg_attach_region(h->m, h->data_r, MEMPORT_ATTACH_COPY);
    }
    (void)memport_port_send(h->port, h->m, MEMPORT_NOWAIT);
    memport_msg_clear(h->m);
    break;
  }
  case 22: /* the same release twice */
    if (h->vpn != 0) {
      hp_release(h, 0, 1);
      hp_release(h, 0, 1);
    }
    break;
  default: { /* a blob whose record and announcement disagree on its length, or agree on a length
              * its region does not have */
    struct memport__rec_blob d = {h->blob_seq, 0, v & 1 ? 8192 : (uint64_t)1 << 20};
    memport_region_t *reg, *ro;
    th_assert_ok(memport_region_create(&reg, 4096, 0));
    th_assert_ok(memport_region_readonly(reg, &ro));
    memport_region_close(reg);
    struct memport__ctl_blob b = {{MEMPORT__CTL_MAGIC, MEMPORT__CTL_BLOB, 0}, h->blob_seq, 0, v & 1 ? 100 : d.len};
    memport_msg_clear(h->m);
    memport_msg_set_bytes(h->m, &b, sizeof b);
    memport_msg_attach_region(h->m, ro, 0);
    if (memport_port_send(h->port, h->m, MEMPORT_NOWAIT) == 0)
      h->blob_seq++;
    memport_msg_clear(h->m);
    hp_record(h, MEMPORT__REC_BLOB, &d, sizeof d);
    break;
  }
  }
}

/* One step of the peer: mostly protocol-abiding traffic, an adversarial action with probability
 * evil_per_mille / 1000. */
static void hp_step(struct hpeer *h, unsigned evil_per_mille) {
  if (!h->deaf)
    hp_read_port(h);
  hp_take_releases(h);
  if (!h->lazy)
    hp_consume(h);
  if (!h->honest && rnd(&h->x) % 1000 < evil_per_mille) {
    hp_evil(h);
    return;
  }
  uint64_t v = rnd(&h->x);
  switch (v % 16) {
  case 0:
    hp_honest_pool(h, (v >> 8) % (h->pbs + 1));
    break;
  case 1:
    if (v % 64 == 1)
      hp_honest_blob(h, 4096 + (v >> 8) % 20000);
    break;
  default:
    hp_honest_inline(h, 8 + (uint32_t)((v >> 8) % (v & 16 ? 1024 : 64)));
    break;
  }
}

/* ------------------------------------------------------------------------------------------ */
/* The victim (a forked child).                                                                 */

struct victim_arg {
  memport_port_t *port;   /* the victim's end */
  memport_port_t *other;  /* the peer's end: closed in the child */
  memport_chan_opts_t opts;
  bool honest;
  uint64_t seed;
};

#define V_FAIL(code, ...)                                                                          \
  do {                                                                                           \
    fprintf(stderr, "victim: " __VA_ARGS__);                                                     \
    fputc('\n', stderr);                                                                         \
    return code;                                                                                 \
  } while (0)

static bool allowed(int rc) {
  return rc == 0 || rc == MEMPORT_EAGAIN || rc == MEMPORT_ETIMEDOUT || rc == MEMPORT_EPROTO || rc == MEMPORT_EPEER ||
         rc == MEMPORT_EMSGSIZE;
}

/* Give back the messages held: each is still readable (its mapping is still there), and the
 * release succeeds or reports the broken channel. Returns 0 (EPROTO, as a release may return it,
 * is passed on as 0 too: the caller sees it on its next call) or minus an exit status. */
static int release_all(memport_chan_t *c, memport_buf_t *held, int *nheld) {
  volatile unsigned sink = 0;
  for (int k = 0; k < *nheld; k++) {
    for (size_t i = 0; i < held[k].len; i++)
      sink += ((const volatile unsigned char *)held[k].data)[i];
    int rc = memport_chan_release(c, &held[k]);
    if (rc != 0 && rc != MEMPORT_EPROTO) {
      fprintf(stderr, "victim: release of a held message: %s\n", memport_err_name(rc));
      return -1;
    }
  }
  (void)sink;
  *nheld = 0;
  return 0;
}

static int victim(void *varg) {
  struct victim_arg *a = varg;
  memport_port_close(a->other);
  uint64_t x = a->seed * 0x9e3779b97f4a7c15ull + 7;
  int fds = th_count_fds(), maps = th_count_memport_maps();
  memport_chan_t *c = NULL;
  int rc = memport_chan_open(&c, a->port, &a->opts, 5 * SEC);
  if (rc == MEMPORT_EPROTO && !a->honest) {
    /* The peer starts scribbling once it has our HELLO, possibly before we mapped its ring. */
    if (th_count_fds() != fds - 1 || th_count_memport_maps() != maps)
      V_FAIL(3, "leak after a failed open");
    return 100;
  }
  if (rc != 0)
    V_FAIL(10, "open: %s", memport_err_name(rc));
  size_t cap = a->opts.pool_buffer_size * 2 + 65536;
  /* Zeroed for valgrind: see test_ring_survives_random_scribbling. */
  unsigned char *buf = calloc(1, cap);
  if (buf == NULL)
    return 11;
  uint64_t slack = (th_under_valgrind() ? 5 : 1) * (uint64_t)SEC;
  uint64_t seq_in = 0, seq_out = 0, start = th_now_ns();
  bool broken = false, gone = false;
  unsigned long ops = 0, got = 0;
  memport_buf_t held[4];
  int nheld = 0;
  volatile unsigned sink = 0;
  while (!broken && !gone) {
    if (th_now_ns() - start > 15 * (uint64_t)SEC)
      V_FAIL(7, "still running after 15 s (%lu operations)", ops);
    ops++;
    uint64_t v = rnd(&x);
    int64_t tmo = (int64_t[]){0, 0, MS, 5 * MS}[v % 4];
    const char *what;
    uint64_t t0 = th_now_ns();
    memport_buf_t b;
    size_t len = 0;
    switch ((v >> 4) % 8) {
    case 0:
    case 1:
    case 2: /* receive in place, read every byte */
      what = "recv";
      rc = memport_chan_recv(c, &b, tmo);
      if (rc == MEMPORT_EBUSY && nheld > 0) { /* a message still held: give them all back */
        if ((rc = release_all(c, held, &nheld)) < 0)
          return -rc;
      } else if (rc == 0) {
        for (size_t i = 0; i < b.len; i++)
          sink += ((const volatile unsigned char *)b.data)[i];
        if (a->honest && check_msg(b.data, b.len, seq_in++) != 0)
          V_FAIL(5, "honest message %llu corrupted (len %zu)", (unsigned long long)seq_in - 1, b.len);
        got++;
        if (nheld < 4 && (v >> 12) % 2 == 0) { /* keep it a while */
          held[nheld++] = b;
        } else {
          int r2 = memport_chan_release(c, &b);
          if (r2 != 0 && r2 != MEMPORT_EPROTO)
            V_FAIL(1, "release: %s", memport_err_name(r2));
          if (r2 != 0)
            rc = r2;
        }
      }
      if (rc == MEMPORT_EPEER)
        gone = true;
      break;
    case 3: { /* receive by copy, sometimes into a short buffer */
      what = "recv_copy";
      size_t n = (v >> 8) & 1 ? cap : (v >> 9) % 100;
      rc = memport_chan_recv_copy(c, buf, n, &len, tmo);
      if (rc == MEMPORT_EBUSY && nheld > 0) {
        if ((rc = release_all(c, held, &nheld)) < 0)
          return -rc;
      } else if (rc == 0) {
        if (len > n)
          V_FAIL(1, "recv_copy returned %zu bytes into %zu", len, n);
        if (a->honest && check_msg(buf, len, seq_in++) != 0)
          V_FAIL(5, "honest message corrupted");
        got++;
      }
      if (rc == MEMPORT_EPEER)
        gone = true;
      break;
    }
    case 4:
    case 5: { /* send through the ring */
      what = "send";
      size_t n = 8 + (v >> 8) % (a->opts.zerocopy_threshold - 8);
      fill_msg(buf, n, seq_out);
      rc = memport_chan_send(c, buf, n, 0, tmo);
      if (rc == 0)
        seq_out++;
      break;
    }
    case 6: { /* send zero-copy (pool or, larger, a one-off region) */
      what = "send zerocopy";
      size_t n = (v >> 8) & 7 ? 8 + (v >> 12) % (a->opts.pool_buffer_size - 8)
                              : a->opts.pool_buffer_size + 1 + (v >> 12) % 5000;
      if (n > cap)
        n = cap;
      fill_msg(buf, n, seq_out);
      rc = memport_chan_send(c, buf, n, MEMPORT_SEND_ZEROCOPY, tmo);
      if (rc == 0)
        seq_out++;
      break;
    }
    default: { /* alloc, fill, then send or give back */
      what = "alloc";
      rc = memport_chan_alloc(c, 8 + (v >> 8) % 256, &b, tmo);
      if (rc == 0) {
        fill_msg(b.data, b.len, seq_out);
        if ((v >> 20) & 1) {
          what = "send_buf";
          rc = memport_chan_send_buf(c, &b, tmo);
          if (rc == 0)
            seq_out++;
          else
            memport_chan_free_buf(c, &b);
        } else if (memport_chan_free_buf(c, &b) != 0) {
          V_FAIL(1, "free_buf failed");
        }
      }
      break;
    }
    }
    uint64_t took = th_now_ns() - t0;
    if (!allowed(rc) || (rc == MEMPORT_EMSGSIZE && what[0] != 'r'))
      V_FAIL(1, "%s: unexpected %s", what, memport_err_name(rc));
    if (took > (uint64_t)tmo + slack)
      V_FAIL(2, "%s with a %lld ns timeout took %llu ns", what, (long long)tmo, (unsigned long long)took);
    if (rc == MEMPORT_EPROTO) {
      if (a->honest)
        V_FAIL(6, "%s: MEMPORT_EPROTO from an honest peer", what);
      broken = true;
    }
  }
  if (broken) { /* sticky: every later call says so at once */
    memport_buf_t b;
    size_t len;
    memport_os_handle_t oh;
    if ((rc = memport_chan_recv(c, &b, SEC)) != MEMPORT_EPROTO ||
        (rc = memport_chan_recv_copy(c, buf, cap, &len, SEC)) != MEMPORT_EPROTO ||
        (rc = memport_chan_send(c, buf, 10, 0, SEC)) != MEMPORT_EPROTO ||
        (rc = memport_chan_send(c, buf, 100, MEMPORT_SEND_ZEROCOPY, SEC)) != MEMPORT_EPROTO ||
        (rc = memport_chan_alloc(c, 10, &b, SEC)) != MEMPORT_EPROTO || (rc = memport_chan_pollable(c, &oh)) != MEMPORT_EPROTO)
      V_FAIL(4, "after MEMPORT_EPROTO a call returned %s", memport_err_name(rc));
  }
  if ((rc = release_all(c, held, &nheld)) < 0)
    return -rc;
  if (a->honest && got == 0)
    V_FAIL(6, "an honest peer delivered nothing");
  memport_chan_close(c);
  free(buf);
  int fds2 = th_count_fds(), maps2 = th_count_memport_maps();
  if (fds2 != fds - 1 || maps2 != maps) /* the channel owned (and closed) the port's descriptor */
    V_FAIL(3, "leak: %d -> %d descriptors, %d -> %d mappings", fds, fds2, maps, maps2);
  (void)sink;
  return broken ? 100 : 101; /* how it ended, for the statistics */
}

/* ------------------------------------------------------------------------------------------ */

static uint64_t env_u64(const char *name, uint64_t dflt) {
  const char *s = getenv(name);
  return s != NULL && *s != '\0' ? strtoull(s, NULL, 0) : dflt;
}

static uint64_t g_seed; /* MEMPORT_HOSTILE_SEED, or drawn once per run */

static void test_hostile_peer_randomized_rounds(void **state) {
  (void)state;
  uint64_t seed = g_seed;
  unsigned rounds = (unsigned)env_u64("MEMPORT_HOSTILE_ROUNDS", th_under_valgrind() ? 40 : 300);
  printf("# hostile rounds: %u, seed %llu (MEMPORT_HOSTILE_SEED=%llu MEMPORT_HOSTILE_ROUNDS=%u to replay)\n",
         rounds, (unsigned long long)seed, (unsigned long long)seed, rounds);
  fflush(stdout);
  int fds = th_count_fds(), maps = th_count_memport_maps();
  unsigned broke = 0, ended = 0, honest_rounds = 0;
  uint64_t t_start = th_now_ns();
  for (unsigned round = 0; round < rounds; round++) {
    uint64_t x = seed + round * 0x9e3779b97f4a7c15ull;
    rnd(&x);
    struct victim_arg va;
    memset(&va, 0, sizeof va);
    memport_chan_opts_init(&va.opts);
    va.opts.ring_capacity = (size_t)4096 << (rnd(&x) % 5);
    va.opts.zerocopy_threshold = 64 + rnd(&x) % 2000;
    va.opts.pool_buffers = (unsigned)(rnd(&x) % 4);
    va.opts.pool_buffer_size = 4096 * (1 + rnd(&x) % 3);
    va.opts.wait_policy = (int)(rnd(&x) % 3);
    va.opts.spin_ns = 20000;
    va.honest = round % 8 == 0;
    va.seed = x;
    honest_rounds += va.honest;
    memport_port_t *pa, *pb;
    th_assert_ok(memport_port_pair(&pa, &pb));
    va.port = pa;
    va.other = pb;
    struct hpeer h;
    uint32_t pn = (uint32_t)(rnd(&x) % 4);
    uint64_t cap = (uint64_t)4096 << (rnd(&x) % 4), pbs = 4096 * (1 + rnd(&x) % 2);
    hp_init(&h, pb, cap, pn, pbs, x);
    h.honest = va.honest;
    /* Two rounds in three stick to one kind of attack (each kind gets its turns), the others mix. */
    h.focus = round % 3 != 0 ? (int)((round / 3 * 2 + round % 3) % H_EVIL_KINDS) : -1;
    hp_send_hello(&h);
    pid_t pid = th_fork(victim, &va, th_under_valgrind() ? 120 : 20);
    memport_port_close(pa);
    th_assert_ok(hp_recv_hello(&h));
    unsigned evil = (unsigned)(1 + rnd(&x) % 300);
    uint64_t end = th_now_ns() + (5 + rnd(&x) % 40) * (uint64_t)MS;
    /* A time budget, and a number of steps too (a loaded machine may give us few in that time). */
    for (unsigned steps = 0; th_now_ns() < end || steps < 64; steps++) {
      hp_step(&h, evil);
      if (rnd(&h.x) % 16 == 0)
        sched_yield();
    }
    if (va.honest) { /* let the victim's last messages arrive, then check what we got */
      for (int i = 0; i < 50; i++) {
        hp_read_port(&h);
        hp_take_releases(&h);
        hp_consume(&h);
      }
      if (h.bad_in != 0)
        fail_msg("round %u: %u of the honest victim's %u messages were wrong", round, h.bad_in, h.got_in);
    }
    hp_fini(&h);
    int st = th_wait(pid, th_under_valgrind() ? 120 : 20);
    if (st != 100 && st != 101)
      fail_msg("round %u (seed %llu): victim ended with status %d (victim ring %zu, threshold %zu, pool %u x %zu, "
               "policy %d; peer ring %llu, pool %u x %llu)", round, (unsigned long long)seed, st, va.opts.ring_capacity,
               va.opts.zerocopy_threshold, va.opts.pool_buffers, va.opts.pool_buffer_size, va.opts.wait_policy,
               (unsigned long long)cap, pn, (unsigned long long)pbs);
    broke += st == 100;
    ended += st == 101;
  }
  printf("# %u rounds (%u honest) in %.1f s: %u ended in MEMPORT_EPROTO, %u in MEMPORT_EPEER\n", rounds,
         honest_rounds, (double)(th_now_ns() - t_start) / 1e9, broke, ended);
  assert_true(broke > 0 || rounds < 8);
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

/* ------------------------------------------------------------------------------------------ */
/* Targeted cases, the victim in this process.                                                  */

static memport_chan_t *open_victim(struct hpeer *h, const memport_chan_opts_t *o) {
  memport_port_t *pa, *pb;
  th_assert_ok(memport_port_pair(&pa, &pb));
  hp_init(h, pb, 65536, 2, 65536, 42);
  hp_send_hello(h);
  memport_chan_t *c = NULL;
  th_assert_ok(memport_chan_open(&c, pa, o, 2 * SEC));
  th_assert_ok(hp_recv_hello(h));
  return c;
}

/* A hostile HELLO: wrong sizes, missing handles, wrong kinds. Each gives MEMPORT_EPROTO and
 * leaves no descriptor or mapping behind. */
static void test_hostile_hello_gives_eproto_without_leaks(void **state) {
  (void)state;
  int fds = th_count_fds(), maps = th_count_memport_maps();
  for (int k = 0; k < 12; k++) {
    memport_port_t *pa, *pb;
    th_assert_ok(memport_port_pair(&pa, &pb));
    struct hpeer h;
    hp_init(&h, pb, 65536, 2, 65536, 1);
    struct memport__ctl_hello hello;
    hp_hello(&h, &hello);
    memport_region_t *r;
    switch (k) {
    case 0: /* a ring handle missing (pool handle where the second semaphore should be) */
      memport_msg_clear(h.m);
      memport_msg_attach_region(h.m, h.ctrl_r, MEMPORT_ATTACH_COPY);
      memport_msg_attach_region(h.m, h.data_r, MEMPORT_ATTACH_COPY);
      memport_msg_attach_sem(h.m, h.dsem, MEMPORT_ATTACH_COPY);
      memport_msg_attach_region(h.m, h.pool_r, MEMPORT_ATTACH_COPY);
      break;
    case 1: /* no handles at all */
      memport_msg_clear(h.m);
      break;
    case 2: /* a semaphore where the control region should be */
      memport_msg_clear(h.m);
      memport_msg_attach_sem(h.m, h.dsem, MEMPORT_ATTACH_COPY);
      memport_msg_attach_region(h.m, h.data_r, MEMPORT_ATTACH_COPY);
      memport_msg_attach_sem(h.m, h.dsem, MEMPORT_ATTACH_COPY);
      memport_msg_attach_sem(h.m, h.ssem, MEMPORT_ATTACH_COPY);
      memport_msg_attach_region(h.m, h.pool_r, MEMPORT_ATTACH_COPY);
      break;
    case 3: /* a semaphore where the pool should be */
      memport_msg_clear(h.m);
      hello.pool_buffers = 2;
      memport_msg_attach_region(h.m, h.ctrl_r, MEMPORT_ATTACH_COPY);
      memport_msg_attach_region(h.m, h.data_r, MEMPORT_ATTACH_COPY);
      memport_msg_attach_sem(h.m, h.dsem, MEMPORT_ATTACH_COPY);
      memport_msg_attach_sem(h.m, h.ssem, MEMPORT_ATTACH_COPY);
      memport_msg_attach_sem(h.m, h.dsem, MEMPORT_ATTACH_COPY);
      break;
    case 4: /* the ring region is smaller than the HELLO claims */
      hello.ring_capacity = 2 * h.cap;
      break;
    case 5: /* the ring region is larger than the HELLO claims */
      hello.ring_capacity = h.cap / 2;
      break;
    case 6: /* pool region too small for pool_buffers * pool_buffer_size */
      hello.pool_buffers = 3;
      break;
    case 7: /* pool buffer size not a page multiple */
      hello.pool_buffer_size = 65536 + 100;
      break;
    case 8: /* a pool handle too many */
      th_assert_ok(memport_region_create(&r, 4096, 0));
      memport_msg_attach_region(h.m, r, 0);
      break;
    case 9: /* a read-only control region: the victim could not write its consumer position */
      memport_msg_clear(h.m);
      th_assert_ok(memport_region_dup(h.ctrl_r, MEMPORT_DUP_READONLY, &r));
      memport_msg_attach_region(h.m, r, 0);
      memport_msg_attach_region(h.m, h.data_r, MEMPORT_ATTACH_COPY);
      memport_msg_attach_sem(h.m, h.dsem, MEMPORT_ATTACH_COPY);
      memport_msg_attach_sem(h.m, h.ssem, MEMPORT_ATTACH_COPY);
      memport_msg_attach_region(h.m, h.pool_r, MEMPORT_ATTACH_COPY);
      break;
    case 10: /* a data region that is no ring (the pool passed as the control page: no magic) */
      memport_msg_clear(h.m);
      memport_msg_attach_region(h.m, h.pool_r, MEMPORT_ATTACH_COPY);
      memport_msg_attach_region(h.m, h.data_r, MEMPORT_ATTACH_COPY);
      memport_msg_attach_sem(h.m, h.dsem, MEMPORT_ATTACH_COPY);
      memport_msg_attach_sem(h.m, h.ssem, MEMPORT_ATTACH_COPY);
      memport_msg_attach_region(h.m, h.pool_r, MEMPORT_ATTACH_COPY);
      break;
    default: /* positions that are already inconsistent */
      atomic_store(&h.sh->prod, 3 * h.cap);
      break;
    }
    th_assert_ok(memport_msg_set_bytes(h.m, &hello, sizeof hello));
    th_assert_ok(memport_port_send(h.port, h.m, SEC));
    memport_chan_t *c = NULL;
    int rc = memport_chan_open(&c, pa, NULL, 2 * SEC);
    if (rc != MEMPORT_EPROTO)
      fail_msg("hostile hello %d: %s, expected MEMPORT_EPROTO", k, memport_err_name(rc));
    assert_null(c);
    hp_fini(&h);
  }
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

/* A ring data file whose size is not a page multiple is mapped as the rounded-up region (the
 * partial last page is backed by the file, so nothing past it is touched): the HELLO must then
 * state that rounded size, and the channel works. */
static void test_hostile_hello_with_odd_sized_ring_file(void **state) {
  (void)state;
  int fds = th_count_fds(), maps = th_count_memport_maps();
  memport_port_t *pa, *pb;
  th_assert_ok(memport_port_pair(&pa, &pb));
  struct hpeer h;
  hp_init(&h, pb, 8192, 0, 0, 1);
  /* Replace the data region by a memfd of 5000 bytes, sealed against shrinking. */
  int fd = memfd_create("odd", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  assert_true(fd >= 0);
  assert_int_equal(ftruncate(fd, 5000), 0);
  assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK), 0);
  memport_region_t *odd;
  th_assert_ok(memport_region_adopt(&odd, fd, 0, 0));
  assert_int_equal(memport_region_size(odd), 8192);
  memport_unmap(h.data);
  memport_region_close(h.data_r);
  h.data_r = odd;
  void *p;
  th_assert_ok(memport_region_map(odd, MEMPORT_MAP_MIRROR, &p));
  h.data = p;
  hp_send_hello(&h);
  memport_chan_t *c = NULL;
  th_assert_ok(memport_chan_open(&c, pa, NULL, 2 * SEC));
  th_assert_ok(hp_recv_hello(&h));
  /* Records in the partial page and across the end of the data area all arrive. */
  unsigned char buf[4096];
  for (int i = 0; i < 40; i++) {
    assert_true(hp_honest_inline(&h, 1000));
    size_t len;
    th_assert_ok(memport_chan_recv_copy(c, buf, sizeof buf, &len, SEC));
    assert_int_equal(len, 1000);
    assert_int_equal(check_msg(buf, len, (uint64_t)i), 0);
  }
  memport_chan_close(c);
  hp_fini(&h);
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

/* A record whose header the peer rewrites after the victim took it: the victim keeps what it
 * validated (length and type), releases exactly that record and reads the next one correctly. */
static void test_hostile_record_rewritten_after_peek_changes_nothing(void **state) {
  (void)state;
  memport_chan_opts_t o;
  memport_chan_opts_init(&o);
  o.ring_capacity = 65536;
  o.zerocopy_threshold = 1024;
  o.pool_buffers = 2;
  o.pool_buffer_size = 65536;
  struct hpeer h;
  memport_chan_t *c = open_victim(&h, &o);
  uint64_t at = h.prod;
  assert_true(hp_honest_inline(&h, 100));
  assert_true(hp_honest_inline(&h, 200));
  memport_buf_t b;
  th_assert_ok(memport_chan_recv(c, &b, SEC));
  assert_int_equal(b.len, 100);
  struct memport__ring_rec *r = (struct memport__ring_rec *)(h.data + at % h.cap);
  r->len = 0xfffffff0u;
  r->type = MEMPORT__REC_BLOB;
  assert_int_equal(b.len, 100);
  assert_int_equal(check_msg(b.data, b.len, 0), 0);
  th_assert_ok(memport_chan_release(c, &b));
  assert_int_equal(atomic_load(&h.sh->cons), at + rec_total(100));
  th_assert_ok(memport_chan_recv(c, &b, SEC));
  assert_int_equal(b.len, 200);
  assert_int_equal(check_msg(b.data, b.len, 1), 0);
  th_assert_ok(memport_chan_release(c, &b));
  memport_chan_close(c);
  hp_fini(&h);
}

/* A producer position written as two 32-bit halves: whichever half lands first, the victim
 * either sees a position it can check (and accepts only records that are really there) or
 * refuses it with MEMPORT_EPROTO; never a read outside the ring. */
static void test_hostile_torn_position_is_checked_as_a_whole(void **state) {
  (void)state;
  for (int order = 0; order < 2; order++) {
    memport_port_t *pa, *pb;
    th_assert_ok(memport_port_pair(&pa, &pb));
    struct hpeer h;
    hp_init(&h, pb, 65536, 0, 0, 3);
    /* Start both positions just below 2^32, so the next record crosses into the high half. */
    uint64_t start = ((uint64_t)1 << 32) - 32;
    atomic_store(&h.sh->prod, start);
    atomic_store(&h.sh->cons, start);
    h.prod = start;
    hp_send_hello(&h);
    memport_chan_t *c = NULL;
    th_assert_ok(memport_chan_open(&c, pa, NULL, 2 * SEC));
    th_assert_ok(hp_recv_hello(&h));
    assert_non_null(hp_reserve(&h, 64));
    struct memport__ring_rec *r = (struct memport__ring_rec *)(h.data + h.prod % h.cap);
    fill_msg((unsigned char *)(r + 1), 64, 0);
    r->len = 64;
    r->type = MEMPORT__REC_INLINE;
    uint64_t np = h.prod + rec_total(64);
    volatile uint32_t *half = (volatile uint32_t *)(void *)&h.sh->prod;
    half[order] = (uint32_t)(np >> (32 * order)); /* only one half written */
    unsigned char buf[128];
    size_t len;
    int rc = memport_chan_recv_copy(c, buf, sizeof buf, &len, 0);
    /* low half first: 0x0000000000000050 is behind the consumer; high half first:
     * 0x00000001ffffffe0 is far more than a ring ahead. Both are refused. */
    if (rc != MEMPORT_EPROTO)
      fail_msg("torn position (half %d first): %s, expected MEMPORT_EPROTO", order, memport_err_name(rc));
    half[!order] = (uint32_t)(np >> (32 * !order));
    th_assert_rc(memport_chan_recv_copy(c, buf, sizeof buf, &len, 0), MEMPORT_EPROTO);
    memport_chan_close(c);
    hp_fini(&h);
  }
}

/* The peer sends the same pool buffer again and again without ever taking the releases back (its
 * release queue stays full and it never reads the port, so the releases pile up in the victim):
 * once more of its buffers are owed back than it has, that is a protocol error, not a write past
 * the victim's list of owed releases. */
static void test_hostile_pool_buffer_resent_while_release_owed_gives_eproto(void **state) {
  (void)state;
  int fds = th_count_fds(), maps = th_count_memport_maps();
  memport_port_t *pa, *pb;
  th_assert_ok(memport_port_pair(&pa, &pb));
  struct hpeer h;
  hp_init(&h, pb, 65536, 1, 4096, 5);
  hp_send_hello(&h);
  memport_chan_t *c = NULL;
  th_assert_ok(memport_chan_open(&c, pa, NULL, 2 * SEC));
  th_assert_ok(hp_recv_hello(&h));
  int rc = 0;
  unsigned i;
  for (i = 0; i < 20000 && rc == 0; i++) {
    struct memport__rec_pool d = {0, 1, 0, 16};
    assert_true(hp_record(&h, MEMPORT__REC_POOL, &d, sizeof d));
    unsigned char buf[64];
    size_t len;
    rc = memport_chan_recv_copy(c, buf, sizeof buf, &len, SEC);
  }
  printf("# the victim refused the resent buffer after %u records\n", i);
  if (rc != MEMPORT_EPROTO)
    fail_msg("after %u resends: %s, expected MEMPORT_EPROTO", i, memport_err_name(rc));
  memport_chan_close(c);
  hp_fini(&h);
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

/* The peer announces more oversized messages than may be in flight, sends none of their records,
 * and goes away: the victim (which then stops reading its port) still learns of the end, with
 * MEMPORT_EPEER, well within its timeout, and closing returns every stashed region. */
static void test_hostile_announcement_flood_then_exit_gives_epeer(void **state) {
  (void)state;
  int fds = th_count_fds(), maps = th_count_memport_maps();
  struct hpeer h;
  memport_chan_t *c = open_victim(&h, NULL);
  for (unsigned i = 0; i < MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT + 8; i++) {
    memport_region_t *reg, *ro;
    th_assert_ok(memport_region_create(&reg, 4096, 0));
    th_assert_ok(memport_region_readonly(reg, &ro));
    memport_region_close(reg);
    struct memport__ctl_blob b = {{MEMPORT__CTL_MAGIC, MEMPORT__CTL_BLOB, 0}, i, 0, 100};
    memport_msg_clear(h.m);
    memport_msg_set_bytes(h.m, &b, sizeof b);
    memport_msg_attach_region(h.m, ro, 0);
    th_assert_ok(memport_port_send(h.port, h.m, SEC));
  }
  memport_buf_t b;
  th_assert_rc(memport_chan_recv(c, &b, 50 * MS), MEMPORT_ETIMEDOUT); /* nothing in the ring */
  hp_fini(&h);
  uint64_t t0 = th_now_ns();
  th_assert_rc(memport_chan_recv(c, &b, 5 * SEC), MEMPORT_EPEER);
  uint64_t took = th_now_ns() - t0;
  printf("# MEMPORT_EPEER after %.1f ms with the port no longer read\n", (double)took / 1e6);
  assert_true(took < (uint64_t)SEC);
  th_assert_rc(memport_chan_send(c, "x", 1, 0, SEC), MEMPORT_EPEER);
  memport_chan_close(c);
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

/* ------------------------------------------------------------------------------------------ */
/* Messages that carry handles (MEMPORT__CTL_HANDLES and MEMPORT__REC_HANDLES).                 */

/* Send a MEMPORT__CTL_HANDLES that says `count` and `kinds` (nkinds bytes) with `nregions`
 * regions attached. */
static void hp_handles_ctl(struct hpeer *h, uint32_t seq, uint32_t count, const uint8_t *kinds, size_t nkinds,
                           unsigned nregions) {
  unsigned char bytes[sizeof(struct memport__ctl_handles) + 80];
  struct memport__ctl_handles c = {{MEMPORT__CTL_MAGIC, MEMPORT__CTL_HANDLES, 0}, seq, count};
  memcpy(bytes, &c, sizeof c);
  memcpy(bytes + sizeof c, kinds, nkinds);
  memport_msg_clear(h->m);
  memport_msg_set_bytes(h->m, bytes, sizeof c + nkinds);
  for (unsigned i = 0; i < nregions; i++) {
    memport_region_t *r;
    th_assert_ok(memport_region_create(&r, 4096, 0));
    th_assert_ok(memport_msg_attach_region(h->m, r, 0));
  }
  th_assert_ok(memport_port_send(h->port, h->m, SEC));
}

static bool hp_handles_record(struct hpeer *h, uint32_t seq, uint32_t count) {
  unsigned char rec[sizeof(struct memport__rec_handles) + 3];
  struct memport__rec_handles r = {seq, count};
  memcpy(rec, &r, sizeof r);
  memcpy(rec + sizeof r, "abc", 3);
  return hp_record(h, MEMPORT__REC_HANDLES, rec, sizeof rec);
}

/* Announcements that do not match: handles that never come, wrong counts, wrong kinds, a record
 * of the other kind, a wrong sequence number. Each gives MEMPORT_EPROTO (never a hang), an honest
 * one delivers its handle, and nothing is left behind. */
static void test_hostile_handles_mismatch_gives_eproto_without_leaks(void **state) {
  (void)state;
  int fds = th_count_fds(), maps = th_count_memport_maps();
  static const uint8_t region1[] = {MEMPORT_HANDLE_REGION}, region2[] = {MEMPORT_HANDLE_REGION, MEMPORT_HANDLE_REGION},
                       sem1[] = {MEMPORT_HANDLE_SEM};
  for (int k = 0; k < 9; k++) {
    struct hpeer h;
    memport_chan_t *c = open_victim(&h, NULL);
    int want = MEMPORT_EPROTO;
    switch (k) {
    case 0: /* honest */
      hp_handles_ctl(&h, 0, 1, region1, 1, 1);
      assert_true(hp_handles_record(&h, 0, 1));
      want = 0;
      break;
    case 1: /* a record announcing handles that never come */
      assert_true(hp_handles_record(&h, 0, 1));
      break;
    case 2: /* the control message says 2, carries 1 */
      hp_handles_ctl(&h, 0, 2, region2, 2, 1);
      assert_true(hp_handles_record(&h, 0, 2));
      break;
    case 3: /* a semaphore announced, a region attached */
      hp_handles_ctl(&h, 0, 1, sem1, 1, 1);
      assert_true(hp_handles_record(&h, 0, 1));
      break;
    case 4: /* the record's count is not the control message's */
      hp_handles_ctl(&h, 0, 1, region1, 1, 1);
      assert_true(hp_handles_record(&h, 0, 2));
      break;
    case 5: { /* handles where a one-off region's record follows */
      hp_handles_ctl(&h, 0, 1, region1, 1, 1);
      struct memport__rec_blob d = {0, 0, 100};
      assert_true(hp_record(&h, MEMPORT__REC_BLOB, &d, sizeof d));
      break;
    }
    case 6: /* a one-off region where a handles record follows */
      assert_true(hp_honest_blob(&h, 100));
      h.prod -= rec_total(sizeof(struct memport__rec_blob)); /* overwrite its record */
      assert_true(hp_handles_record(&h, 0, 1));
      break;
    case 7: /* a wrong sequence number */
      hp_handles_ctl(&h, 0, 1, region1, 1, 1);
      assert_true(hp_handles_record(&h, 1, 1));
      break;
    default: /* count 0 in both */
      hp_handles_ctl(&h, 0, 0, region1, 0, 0);
      assert_true(hp_handles_record(&h, 0, 0));
      break;
    }
    memport_msg_t *got;
    th_assert_ok(memport_msg_create(&got));
    memport_buf_t b;
    int rc = memport_chan_recv_msg(c, &b, got, 2 * SEC);
    if (rc != want)
      fail_msg("case %d: %s, expected %s", k, memport_err_name(rc), memport_err_name(want));
    if (want == 0) {
      assert_int_equal(b.len, 3);
      assert_int_equal(memport_msg_handle_count(got), 1);
      th_assert_ok(memport_chan_release(c, &b));
    } else {
      th_assert_rc(memport_chan_recv_msg(c, &b, got, 0), MEMPORT_EPROTO); /* sticky */
    }
    memport_msg_close(got);
    memport_chan_close(c);
    hp_fini(&h);
  }
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

/* Handles sent with no record, more than may be in flight, then the peer goes: the victim stops
 * reading its port (back-pressure), still learns of the end, and closing returns every handle. */
static void test_hostile_handles_flood_then_exit_gives_epeer(void **state) {
  (void)state;
  int fds = th_count_fds(), maps = th_count_memport_maps();
  struct hpeer h;
  memport_chan_t *c = open_victim(&h, NULL);
  static const uint8_t kinds[4] = {MEMPORT_HANDLE_REGION, MEMPORT_HANDLE_REGION, MEMPORT_HANDLE_REGION,
                                   MEMPORT_HANDLE_REGION};
  for (unsigned i = 0; i < MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT + 8; i++)
    hp_handles_ctl(&h, i, 4, kinds, 4, 4);
  memport_buf_t b;
  th_assert_rc(memport_chan_recv(c, &b, 50 * MS), MEMPORT_ETIMEDOUT); /* nothing in the ring */
  hp_fini(&h);
  th_assert_rc(memport_chan_recv(c, &b, 5 * SEC), MEMPORT_EPEER);
  memport_chan_close(c);
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

/* The peer's semaphores count up without limit and its wait words are garbage: a victim waiting
 * for data is woken for nothing over and over, yet returns MEMPORT_ETIMEDOUT at its deadline. */
static void test_hostile_spurious_wakeups_do_not_stretch_a_deadline(void **state) {
  (void)state;
  struct hpeer h;
  memport_chan_t *c = open_victim(&h, NULL);
  for (int i = 0; i < 100000; i++)
    if (memport_sem_signal(h.dsem) != 0)
      break;
  atomic_store(&h.sh->cons_wait, 0xffffffffu);
  memport_buf_t b;
  uint64_t t0 = th_now_ns();
  th_assert_rc(memport_chan_recv(c, &b, 50 * MS), MEMPORT_ETIMEDOUT);
  uint64_t took = th_now_ns() - t0;
  assert_true(took >= 50 * (uint64_t)MS);
  assert_true(took < 50 * (uint64_t)MS + (th_under_valgrind() ? 5 : 1) * (uint64_t)SEC);
  memport_chan_close(c);
  hp_fini(&h);
}

/* ------------------------------------------------------------------------------------------ */
/* The bare ring: the victim (a forked child) consumes one ring and produces into another with
 * the public API, while its peer (the producer of the first, which legitimately has the control
 * page and data writable, and the consumer of the second) mixes honest traffic with scribbling.
 * A ring has no port, so no MEMPORT_EPEER: the victim runs for a while, then closes.           */

struct raw_ring {
  memport_region_t *ctrl_r, *data_r;
  memport_sem_t *dsem, *ssem;
  struct memport__ring_shared *sh;
  unsigned char *data;
  uint64_t cap, pos; /* our position: produced (first ring) or consumed (second) */
};

static void raw_ring_open(struct raw_ring *rr, memport_ring_t *ring) {
  memset(rr, 0, sizeof *rr);
  memport_msg_t *m;
  th_assert_ok(memport_msg_create(&m));
  th_assert_ok(memport_ring_export(ring, m));
  th_assert_ok(memport_msg_take_region(m, 0, &rr->ctrl_r));
  th_assert_ok(memport_msg_take_region(m, 1, &rr->data_r));
  th_assert_ok(memport_msg_take_sem(m, 2, &rr->dsem));
  th_assert_ok(memport_msg_take_sem(m, 3, &rr->ssem));
  memport_msg_close(m);
  void *p;
  th_assert_ok(memport_region_map(rr->ctrl_r, 0, &p));
  rr->sh = p;
  th_assert_ok(memport_region_map(rr->data_r, MEMPORT_MAP_MIRROR, &p));
  rr->data = p;
  rr->cap = memport_region_size(rr->data_r);
}

static void raw_ring_close(struct raw_ring *rr) {
  memport_unmap(rr->sh);
  memport_unmap(rr->data);
  memport_region_close(rr->ctrl_r);
  memport_region_close(rr->data_r);
  memport_sem_close(rr->dsem);
  memport_sem_close(rr->ssem);
}

struct ring_victim_arg {
  memport_ring_t *in, *out;
  uint64_t seed;
};

static int ring_victim(void *varg) {
  struct ring_victim_arg *a = varg;
  uint64_t x = a->seed | 1;
  int fds = th_count_fds();
  size_t max = memport_ring_max_record(a->in);
  unsigned char *buf = malloc(max + 1);
  if (buf == NULL)
    return 11;
  memset(buf, 7, max + 1);
  uint64_t slack = (th_under_valgrind() ? 5 : 1) * (uint64_t)SEC, end = th_now_ns() + 60 * (uint64_t)MS;
  bool in_broken = false, out_broken = false;
  volatile unsigned sink = 0;
  while (th_now_ns() < end && !(in_broken && out_broken)) {
    uint64_t v = rnd(&x);
    int64_t tmo = (int64_t[]){0, 0, MS / 2, 2 * MS}[v % 4];
    uint64_t t0 = th_now_ns();
    int rc;
    bool in = (v >> 4) % 2 == 0;
    const char *what;
    if (in && (v >> 5) % 2 == 0) {
      what = "peek";
      const void *p;
      size_t len = 0;
      rc = memport_ring_peek(a->in, &p, &len, tmo);
      if (rc == 0) {
        if (len > max)
          V_FAIL(1, "peek returned %zu bytes, more than a record can hold", len);
        for (size_t i = 0; i < len; i++)
          sink += ((const volatile unsigned char *)p)[i];
        rc = memport_ring_release(a->in);
      }
    } else if (in) {
      what = "read";
      size_t len = 0, cap = (v >> 6) % 2 ? max : (v >> 7) % 64;
      rc = memport_ring_read(a->in, buf, cap, &len, tmo);
      if (rc == 0 && len > cap)
        V_FAIL(1, "read returned %zu bytes into %zu", len, cap);
    } else {
      what = "write";
      size_t omax = memport_ring_max_record(a->out);
      rc = memport_ring_write(a->out, buf, (v >> 8) % ((omax < max ? omax : max) / 4 + 1), tmo);
    }
    if (rc != 0 && rc != MEMPORT_EAGAIN && rc != MEMPORT_ETIMEDOUT && rc != MEMPORT_EPROTO &&
        !(rc == MEMPORT_EMSGSIZE && what[0] == 'r'))
      V_FAIL(1, "ring %s: unexpected %s", what, memport_err_name(rc));
    if (th_now_ns() - t0 > (uint64_t)tmo + slack)
      V_FAIL(2, "ring %s with a %lld ns timeout overran", what, (long long)tmo);
    if ((in ? in_broken : out_broken) && rc != MEMPORT_EPROTO)
      V_FAIL(4, "ring %s after MEMPORT_EPROTO returned %s", what, memport_err_name(rc));
    if (rc == MEMPORT_EPROTO)
      *(in ? &in_broken : &out_broken) = true;
  }
  memport_ring_close(a->in);
  memport_ring_close(a->out);
  free(buf);
  if (th_count_fds() != fds - 8) /* each ring held two regions and two semaphores */
    V_FAIL(3, "leak: %d descriptors before, %d after closing both rings", fds, th_count_fds());
  (void)sink;
  return in_broken || out_broken ? 100 : 101;
}

/* One step of the rings' peer. */
static void ring_peer_step(struct raw_ring *prod, struct raw_ring *cons, uint64_t *x, unsigned evil) {
  uint64_t v = rnd(x);
  /* Consume the victim's records honestly (checking nothing: the victim writes constant bytes). */
  uint64_t p = atomic_load(&cons->sh->prod);
  if (p >= cons->pos && p - cons->pos <= cons->cap) {
    cons->pos = p;
    atomic_store(&cons->sh->cons, p);
    if (atomic_exchange(&cons->sh->prod_wait, 0) & MEMPORT__WAIT_SEM)
      memport_sem_signal(cons->ssem);
  }
  if (rnd(x) % 1000 >= evil) { /* an honest record */
    uint32_t len = (uint32_t)(v % 700);
    uint64_t c = atomic_load(&prod->sh->cons);
    if (c <= prod->pos && prod->cap - (prod->pos - c) >= rec_total(len)) {
      struct memport__ring_rec *r = (struct memport__ring_rec *)(prod->data + prod->pos % prod->cap);
      r->len = len;
      r->type = MEMPORT__REC_DATA;
      memset(r + 1, (int)v, len);
      prod->pos += rec_total(len);
      atomic_store(&prod->sh->prod, prod->pos);
      if (atomic_exchange(&prod->sh->cons_wait, 0) & MEMPORT__WAIT_SEM)
        memport_sem_signal(prod->dsem);
    }
    return;
  }
  uint64_t w = rnd(x);
  volatile uint32_t *half;
  switch (v % 10) {
  case 0: atomic_store(&prod->sh->prod, prod->pos + prod->cap + 16); break;       /* past the end */
  case 1: atomic_store(&prod->sh->prod, prod->pos + 8); break;                    /* misaligned */
  case 2: atomic_store(&prod->sh->prod, prod->pos >= 16 ? prod->pos - 16 : w); break; /* backwards */
  case 3: /* a header that lies: huge, wrapping, or running past the producer */
  {
    const uint32_t lens[4] = {0xffffffffu, 0xfffffff8u, 4096, (uint32_t)w};
    ((struct memport__ring_rec *)(prod->data + prod->pos % prod->cap))->len = lens[w % 4];
  }
    ((struct memport__ring_rec *)(prod->data + prod->pos % prod->cap))->type = MEMPORT__REC_DATA;
    atomic_store(&prod->sh->prod, prod->pos + 32);
    prod->pos += 32;
    break;
  case 4: /* a record of a type the public ring never writes */
    ((struct memport__ring_rec *)(prod->data + prod->pos % prod->cap))->len = 0;
    ((struct memport__ring_rec *)(prod->data + prod->pos % prod->cap))->type = 1 + (uint32_t)(w % 5);
    prod->pos += 16;
    atomic_store(&prod->sh->prod, prod->pos);
    break;
  case 5: /* a torn position */
    half = (volatile uint32_t *)(void *)&prod->sh->prod;
    half[w & 1] = (uint32_t)w;
    break;
  case 6: /* the victim's consumer position in the ring it produces into */
  {
    const uint64_t bad[4] = {cons->pos + 16, w, cons->pos + 8, UINT64_MAX};
    atomic_store(&cons->sh->cons, bad[w % 4]);
  }
    break;
  case 7: /* the header of a committed record, rewritten while the victim may be reading it */
    for (uint64_t at = atomic_load(&prod->sh->cons); at < prod->pos && at + 16 <= prod->pos; at += 16) {
      ((struct memport__ring_rec *)(prod->data + at % prod->cap))->len = (uint32_t)rnd(x) % 1000;
      break;
    }
    break;
  case 8: /* wait words: any bits; semaphores: spurious wake-ups */
    atomic_store(&prod->sh->cons_wait, (uint32_t)w);
    atomic_store(&cons->sh->prod_wait, (uint32_t)(w >> 32));
    memport_sem_signal(prod->dsem);
    memport_sem_signal(cons->ssem);
    break;
  default: /* random bytes over the data area */
    for (int i = 0; i < 8; i++)
      prod->data[rnd(x) % prod->cap] = (unsigned char)rnd(x);
    break;
  }
}

static void test_hostile_ring_peer_randomized_rounds(void **state) {
  (void)state;
  uint64_t seed = g_seed;
  unsigned rounds = (unsigned)env_u64("MEMPORT_HOSTILE_ROUNDS", th_under_valgrind() ? 15 : 100);
  printf("# ring rounds: %u, seed %llu (MEMPORT_HOSTILE_SEED=%llu MEMPORT_HOSTILE_ROUNDS=%u to replay)\n", rounds,
         (unsigned long long)seed, (unsigned long long)seed, rounds);
  fflush(stdout);
  int fds = th_count_fds(), maps = th_count_memport_maps();
  unsigned broke = 0;
  for (unsigned round = 0; round < rounds; round++) {
    uint64_t x = seed + round * 0x9e3779b97f4a7c15ull + 1;
    rnd(&x);
    struct ring_victim_arg va;
    th_assert_ok(memport_ring_create(&va.in, (size_t)4096 << (rnd(&x) % 3), 0));
    th_assert_ok(memport_ring_create(&va.out, (size_t)4096 << (rnd(&x) % 3), 0));
    th_assert_ok(memport_ring_set_wait(va.in, (int)(rnd(&x) % 3), 10000));
    th_assert_ok(memport_ring_set_wait(va.out, (int)(rnd(&x) % 3), 10000));
    va.seed = rnd(&x);
    struct raw_ring prod, cons;
    raw_ring_open(&prod, va.in);
    raw_ring_open(&cons, va.out);
    pid_t pid = th_fork(ring_victim, &va, th_under_valgrind() ? 120 : 20);
    memport_ring_close(va.in);
    memport_ring_close(va.out);
    unsigned evil = (unsigned)(rnd(&x) % 100);
    uint64_t end = th_now_ns() + 70 * (uint64_t)MS; /* the victim runs for 60 ms */
    while (th_now_ns() < end) {
      ring_peer_step(&prod, &cons, &x, evil);
      if (rnd(&x) % 8 == 0)
        sched_yield();
    }
    int st = th_wait(pid, th_under_valgrind() ? 120 : 20);
    raw_ring_close(&prod);
    raw_ring_close(&cons);
    if (st != 100 && st != 101)
      fail_msg("ring round %u (seed %llu): victim ended with status %d", round, (unsigned long long)seed, st);
    broke += st == 100;
  }
  printf("# %u ring rounds: %u ended with a ring refused as broken\n", rounds, broke);
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  g_seed = env_u64("MEMPORT_HOSTILE_SEED", th_now_ns() ^ (uint64_t)getpid() << 32);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hostile_hello_gives_eproto_without_leaks),
      cmocka_unit_test(test_hostile_hello_with_odd_sized_ring_file),
      cmocka_unit_test(test_hostile_record_rewritten_after_peek_changes_nothing),
      cmocka_unit_test(test_hostile_torn_position_is_checked_as_a_whole),
      cmocka_unit_test(test_hostile_pool_buffer_resent_while_release_owed_gives_eproto),
      cmocka_unit_test(test_hostile_spurious_wakeups_do_not_stretch_a_deadline),
      cmocka_unit_test(test_hostile_announcement_flood_then_exit_gives_epeer),
      cmocka_unit_test(test_hostile_handles_mismatch_gives_eproto_without_leaks),
      cmocka_unit_test(test_hostile_handles_flood_then_exit_gives_epeer),
      cmocka_unit_test(test_hostile_peer_randomized_rounds),
      cmocka_unit_test(test_hostile_ring_peer_randomized_rounds),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
