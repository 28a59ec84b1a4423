/* SPDX-License-Identifier: MIT */
/* fuzz_topic.c: libFuzzer harness: a topic publisher whose subscribers are hostile (any HELLO, port messages, lane head, release-queue entries and wait words), and a subscriber whose publisher is hostile (any WELCOME, lane header, slots, tail, head, closed and dropped). */
#include "fuzz.h"

#include "topic.h"

/*
 * Per input, one of two games.
 *
 * Publisher under test (memport_pub_create and every call after it, all MEMPORT_NOWAIT): the
 * harness plays up to SUBS subscribers with plain ports: connects, sends a HELLO built from the
 * input (valid, perturbed, short, with other handles, or none), reads the WELCOME and maps the
 * lane writable, then takes positions honestly or not, pushes release-queue entries (held buffers
 * or anything), scribbles head, the queue's tail and entries and both wait words, sends any port
 * message, hangs up. The publisher loans, publishes, discards, sends inline messages, processes,
 * makes its pollable handle; the virtual clock moves when the input says.
 * Checked after every input: the publisher's accounting (per buffer: the references are exactly
 * those of its history; every other buffer free unless loaned) once every subscriber has hung up.
 *
 * Subscriber under test (memport_sub_connect, recv, recv_copy, release, missed, pollable): the
 * harness plays the publisher: a service whose WELCOME (sent as the subscriber connects, through
 * a wrapped memport__port_connect) has any status, geometry and handles, and a lane whose header,
 * slots (kind, len, index, gen, offset, payload), tail, head, closed and dropped it writes at
 * will; it takes releases honestly, hangs up, sends WAKEs or anything else.
 * Checked: no crash or undefined behaviour, every buffer handed out is readable over its length.
 *
 * Both: nothing leaks (memory, descriptors, memfd mappings) once everything is closed. Time is
 * virtual (memport__now_ns, memport__deadline and memport__expired are wrapped), so no call waits.
 */

#define MAX_OPS 96
#define SUBS 3
#define HELD 4
#define PAGE_BUF 4096u

/* ------------------------------------------------------------------------------------------ */
/* The virtual clock.                                                                          */

static uint64_t vclock = 1000000000u;

uint64_t __wrap_memport__now_ns(void);
uint64_t __wrap_memport__deadline(int64_t timeout_ns);
int __wrap_memport__expired(uint64_t deadline);
int __wrap_memport__port_connect(memport_port_t **out, const char *name, uint64_t deadline);
int __real_memport__port_connect(memport_port_t **out, const char *name, uint64_t deadline);

uint64_t __wrap_memport__now_ns(void) { return vclock; }

uint64_t __wrap_memport__deadline(int64_t timeout_ns) {
  if (timeout_ns == 0)
    return 0;
  if (timeout_ns < 0 || (uint64_t)timeout_ns >= MEMPORT__NO_DEADLINE - vclock)
    return MEMPORT__NO_DEADLINE;
  return vclock + (uint64_t)timeout_ns;
}

int __wrap_memport__expired(uint64_t deadline) {
  return deadline == 0 || (deadline != MEMPORT__NO_DEADLINE && vclock >= deadline);
}

/* The fake publisher answers a connection as soon as it is made (before the HELLO: the answer
 * waits in the port), so memport_sub_connect never waits. */
static void (*on_connect)(void);

int __wrap_memport__port_connect(memport_port_t **out, const char *name, uint64_t deadline) {
  int rc = __real_memport__port_connect(out, name, deadline);
  if (rc == 0 && on_connect != NULL) {
    void (*fn)(void) = on_connect;
    on_connect = NULL;
    fn();
  }
  return rc;
}

static struct fz_leaks leaks;
static char tmpdir[256];
static unsigned long inputs;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  const char *base = getenv("TMPDIR");
  snprintf(tmpdir, sizeof tmpdir, "%s/memport-fuzz-topic-XXXXXX", base != NULL && base[0] == '/' ? base : "/tmp");
  if (mkdtemp(tmpdir) == NULL) {
    perror("mkdtemp");
    exit(1);
  }
  setenv("XDG_RUNTIME_DIR", tmpdir, 1);
  return 0;
}

static void fz_name(char *out, size_t cap) { snprintf(out, cap, "fz-topic-%d-%lu", (int)getpid(), inputs); }

/* A region of a few pages (read-only if asked), a semaphore, a port or nothing. */
static void attach_junk(memport_msg_t *m, uint8_t tok) {
  switch (tok % 5u) {
  case 0:
  case 1: {
    memport_region_t *r;
    if (memport_region_create(&r, memport_page_size() * (1u + tok % 3u), 0) != 0)
      abort();
    if (tok % 5u == 1) {
      memport_region_t *ro;
      if (memport_region_readonly(r, &ro) != 0)
        abort();
      memport_region_close(r);
      r = ro;
    }
    (void)memport_msg_attach_region(m, r, 0);
    break;
  }
  case 2: {
    memport_sem_t *s;
    if (memport_sem_create(&s, 0, 0) != 0)
      abort();
    (void)memport_msg_attach_sem(m, s, 0);
    break;
  }
  case 3: {
    memport_port_t *x, *y;
    if (memport_port_pair(&x, &y) != 0)
      abort();
    memport_port_close(y);
    (void)memport_msg_attach_port(m, x, 0);
    break;
  }
  default:
    break;
  }
}

/* Perturb k bytes of a message. */
static void perturb(struct fz *f, void *b, size_t len) {
  unsigned k = 1u + fz_u8(f) % 3u;
  for (unsigned i = 0; i < k; i++) {
    uint8_t at = fz_u8(f);
    ((unsigned char *)b)[at % len] ^= fz_u8(f);
  }
}

/* ========================================================================================== */
/* The publisher under test.                                                                    */

struct fsub {
  memport_port_t *port; /* NULL: not connected */
  int state;            /* 0 HELLO sent, 1 joined (lane mapped), 2 refused */
  memport_region_t *lane_r;
  struct memport__lane *lane;
  uint64_t head, relq_tail;
  uint32_t depth, slot_size, count;
  uint64_t held[16]; /* (gen << 32 | index) taken, not released */
  unsigned nheld;
};

static void fsub_close(struct fsub *s) {
  if (s->lane != NULL)
    memport_unmap(s->lane);
  memport_region_close(s->lane_r);
  memport_port_close(s->port);
  memset(s, 0, sizeof *s);
}

static void fsub_connect(struct fsub *s, const char *name, memport_msg_t *m, struct fz *f) {
  if (__real_memport__port_connect(&s->port, name, MEMPORT__NO_DEADLINE) != 0) {
    s->port = NULL;
    return;
  }
  uint8_t mode = fz_u8(f);
  struct memport__topic_hdr h = {MEMPORT__TOPIC_MAGIC, MEMPORT__TOPIC_HELLO, MEMPORT__TOPIC_VERSION};
  unsigned char b[sizeof h + 8];
  memset(b, 0, sizeof b);
  memcpy(b, &h, sizeof h);
  size_t len = sizeof h;
  if (mode & 1u)
    perturb(f, b, sizeof h);
  if (mode & 2u)
    len = fz_u8(f) % sizeof b;
  memport_msg_clear(m);
  if (mode & 4u) {
    unsigned n = fz_u8(f) % 4u;
    for (unsigned i = 0; i < n; i++)
      attach_junk(m, fz_u8(f));
  } else {
    attach_junk(m, 2); /* its semaphore */
  }
  if ((mode & 8u) == 0 && memport_msg_set_bytes(m, b, len) == 0)
    (void)memport_port_send(s->port, m, MEMPORT_NOWAIT);
  memport_msg_clear(m);
  s->state = 0;
}

/* The WELCOME, if it came: map the lane. */
static void fsub_welcome(struct fsub *s, memport_msg_t *m) {
  if (s->port == NULL || s->state != 0)
    return;
  int rc = memport_port_recv(s->port, m, MEMPORT_NOWAIT);
  if (rc == MEMPORT_EAGAIN)
    return;
  size_t n;
  const unsigned char *b = memport_msg_bytes(m, &n);
  struct memport__topic_welcome w;
  if (rc != 0 || b == NULL || n != sizeof w || memport_msg_handle_count(m) != 3) {
    s->state = 2;
    memport_msg_clear(m);
    return;
  }
  memcpy(&w, b, sizeof w);
  void *map;
  if (w.status != 0 || memport_msg_take_region(m, 0, &s->lane_r) != 0 || memport_region_map(s->lane_r, 0, &map) != 0)
    abort(); /* the publisher's own WELCOME is always well formed */
  s->lane = map;
  s->depth = w.depth;
  s->slot_size = w.slot_size;
  s->count = w.buffers;
  s->head = atomic_load(&s->lane->head);
  s->state = 1;
  memport_msg_clear(m);
}

/* Take the position at head as a subscriber does (CAS). */
static void fsub_take(struct fsub *s) {
  uint64_t h = atomic_load(&s->lane->head), t = atomic_load(&s->lane->tail);
  if (h >= t || t - h > s->depth)
    return;
  struct memport__lane_slot sl;
  memcpy(&sl, memport__lane_slot_at(s->lane, s->slot_size, s->depth, h), sizeof sl);
  if (!atomic_compare_exchange_strong(&s->lane->head, &h, h + 1))
    return;
  if (sl.kind == MEMPORT__SLOT_POOL && s->nheld < 16)
    s->held[s->nheld++] = ((uint64_t)sl.gen << 32) | sl.index;
}

static void fsub_push(struct fsub *s, uint64_t e) {
  struct memport__relq_shared *q = &s->lane->relq;
  uint64_t t = atomic_load(&q->tail);
  atomic_store(&q->entries[t % MEMPORT__RELQ_SIZE], e);
  atomic_store(&q->tail, t + 1);
  if (atomic_exchange(&s->lane->pub_wait, 0) != 0) {
    /* the publisher's semaphore is not ours here: its slices find the entry */
  }
}

static void fsub_scribble(struct fsub *s, struct fz *f) {
  struct memport__lane *l = s->lane;
  uint8_t what = fz_u8(f);
  switch (what % 8u) {
  case 0:
    atomic_store(&l->head, fz_num(f, atomic_load(&l->head)));
    break;
  case 1:
    atomic_store(&l->relq.tail, fz_num(f, atomic_load(&l->relq.tail)));
    break;
  case 2:
    atomic_store(&l->relq.entries[fz_u8(f) % MEMPORT__RELQ_SIZE], fz_num(f, 0));
    break;
  case 3:
    atomic_store(&l->pub_wait, (uint32_t)fz_num(f, 0));
    break;
  case 4:
    atomic_store(&l->sub_wait, (uint32_t)fz_num(f, 0));
    break;
  case 5:
    atomic_store(&l->relq.head, fz_num(f, 0));
    break;
  case 6: { /* tail, closed, dropped, the header: the publisher must not read them back */
    atomic_store(&l->tail, fz_num(f, 0));
    atomic_store(&l->closed, fz_num(f, 0));
    atomic_store(&l->dropped, fz_num(f, 0));
    l->depth = fz_u32(f);
    break;
  }
  default: { /* a slot */
    unsigned char *p = (unsigned char *)memport__lane_slot_at(l, s->slot_size, s->depth, fz_u8(f));
    p[fz_u8(f) % s->slot_size] = fz_u8(f);
    break;
  }
  }
}

static void fsub_send(struct fsub *s, memport_msg_t *m, struct fz *f) {
  struct memport__topic_hdr h = {MEMPORT__TOPIC_MAGIC, MEMPORT__TOPIC_WAKE, MEMPORT__TOPIC_VERSION};
  unsigned char b[sizeof h + 8];
  memset(b, 0, sizeof b);
  memcpy(b, &h, sizeof h);
  size_t len = sizeof h;
  uint8_t mode = fz_u8(f);
  if (mode & 1u)
    perturb(f, b, sizeof h);
  if (mode & 2u)
    len = fz_u8(f) % sizeof b;
  memport_msg_clear(m);
  if (mode & 4u)
    attach_junk(m, fz_u8(f));
  if (memport_msg_set_bytes(m, b, len) == 0)
    (void)memport_port_send(s->port, m, MEMPORT_NOWAIT);
  memport_msg_clear(m);
}

/* With every subscriber gone: a buffer's references are its history's, and it is free unless the
 * application holds it. */
static void pub_check(memport_pub_t *p, unsigned nloans) {
  if (p->npeers != 0)
    abort();
  uint32_t in_hist = 0;
  for (uint32_t i = 0; i < p->pool.count; i++) {
    uint32_t want = 0;
    for (uint32_t j = 0; j < p->hist_count; j++) {
      const struct memport__topic_hist *e = &p->hist[(p->hist_first + j) % p->history];
      if (e->kind == MEMPORT__SLOT_POOL && e->index == i)
        want++;
    }
    if (p->refs[i] != want) {
      fprintf(stderr, "fuzz: buffer %u: %u references, %u in history\n", i, p->refs[i], want);
      abort();
    }
    in_hist += want != 0;
  }
  if (p->pool.free_count != p->pool.count - in_hist - nloans) {
    fprintf(stderr, "fuzz: %u buffers free, %u in the pool, %u in history, %u loaned\n", p->pool.free_count,
            p->pool.count, in_hist, nloans);
    abort();
  }
}

static void run_publisher(struct fz *f) {
  char name[64];
  fz_name(name, sizeof name);
  memport_topic_opts_t o;
  memport_topic_opts_init(&o);
  o.depth = 1u + fz_u8(f) % 8u;
  o.overflow = fz_u8(f) & 1u ? MEMPORT_TOPIC_DROP_OLDEST : MEMPORT_TOPIC_BLOCK;
  o.buffers = 1u + fz_u8(f) % 4u;
  uint8_t hb = fz_u8(f);
  o.history = hb % (o.depth < o.buffers ? o.depth + 1u : o.buffers);
  o.inline_max = hb & 0x80u ? 0 : 64;
  o.buffer_size = PAGE_BUF;
  o.max_subscribers = 1u + fz_u8(f) % SUBS;
  o.wait_policy = MEMPORT_WAIT_BLOCK;
  memport_pub_t *p;
  if (memport_pub_create(&p, name, &o) != 0)
    abort();
  memport_msg_t *m;
  if (memport_msg_create(&m) != 0)
    abort();
  struct fsub subs[SUBS];
  memset(subs, 0, sizeof subs);
  memport_buf_t loans[HELD];
  unsigned nloans = 0;
  unsigned char data[PAGE_BUF + 1];
  memset(data, 0x5a, sizeof data);
  for (unsigned op = 0; op < MAX_OPS && !fz_empty(f); op++) {
    uint8_t c = fz_u8(f);
    struct fsub *s = &subs[(c >> 4) % SUBS];
    int rc = 0;
    switch (c % 16u) {
    case 0:
      if (s->port == NULL)
        fsub_connect(s, name, m, f);
      break;
    case 1:
    case 2:
      rc = memport_pub_process(p);
      for (unsigned k = 0; k < SUBS; k++)
        fsub_welcome(&subs[k], m);
      break;
    case 3: { /* loan and publish (or keep the loan) */
      memport_buf_t b;
      size_t len = (size_t)fz_num(f, 100) % (PAGE_BUF + 2);
      rc = memport_pub_loan(p, len, &b, MEMPORT_NOWAIT);
      if (rc == 0) {
        memset(b.data, (int)op, b.len);
        uint8_t how = fz_u8(f);
        if (how % 3u == 0 && nloans < HELD)
          loans[nloans++] = b;
        else if ((rc = memport_pub_publish(p, &b, MEMPORT_NOWAIT)) < 0 && memport_pub_discard(p, &b) != 0)
          abort();
      }
      break;
    }
    case 4:
      if (nloans != 0) {
        memport_buf_t *b = &loans[--nloans];
        if (fz_u8(f) & 1u) {
          rc = memport_pub_publish(p, b, MEMPORT_NOWAIT);
          if (rc == 0)
            break;
        }
        if (memport_pub_discard(p, b) != 0)
          abort();
      }
      break;
    case 5:
      rc = memport_pub_send(p, data, (size_t)fz_num(f, 60) % (PAGE_BUF + 2), MEMPORT_NOWAIT);
      break;
    case 6:
      if (s->state == 1)
        fsub_take(s);
      break;
    case 7: /* release one held buffer honestly */
      if (s->state == 1 && s->nheld != 0) {
        unsigned k = fz_u8(f) % s->nheld;
        fsub_push(s, s->held[k]);
        s->held[k] = s->held[--s->nheld];
      }
      break;
    case 8: /* release anything */
      if (s->state == 1)
        fsub_push(s, fz_u8(f) & 1u ? fz_num(f, 0) : (s->nheld != 0 ? s->held[0] : 0));
      break;
    case 9:
    case 10:
      if (s->state == 1)
        fsub_scribble(s, f);
      break;
    case 11:
      if (s->port != NULL)
        fsub_send(s, m, f);
      break;
    case 12:
      fsub_close(s);
      break;
    case 13:
      vclock += fz_u8(f) & 1u ? MEMPORT__TOPIC_PENDING_NS : fz_num(f, MEMPORT__TOPIC_LIVE_NS) % (10 * 1000000000ull);
      break;
    case 14: {
      memport_os_handle_t h;
      rc = memport_pub_pollable(p, &h);
      break;
    }
    default:
      rc = memport_pub_subscribers(p);
      break;
    }
    fz_debug("pub op %u (%u): %d\n", op, c % 16u, rc);
  }
  for (unsigned k = 0; k < SUBS; k++)
    fsub_close(&subs[k]);
  vclock += MEMPORT__TOPIC_PENDING_NS + 1;
  if (memport_pub_process(p) != 0)
    abort();
  pub_check(p, nloans);
  while (nloans != 0)
    if (memport_pub_discard(p, &loans[--nloans]) != 0)
      abort();
  pub_check(p, 0);
  memport_msg_close(m);
  memport_pub_close(p);
}

/* ========================================================================================== */
/* The subscriber under test.                                                                   */

static struct fpub {
  memport_service_t *svc;
  memport_port_t *port;
  memport_msg_t *msg;
  memport_region_t *lane_r, *pool_r;
  struct memport__lane *lane;
  size_t lane_size;
  uint32_t depth, slot_size, count;
  struct fz *f;
  struct memport__topic_welcome w;
  uint8_t handles; /* how the WELCOME's handles are made */
} fp;

static void fpub_answer(void) {
  if (memport__service_accept(fp.svc, &fp.port, 0) != 0) {
    fp.port = NULL;
    return;
  }
  memport_msg_t *m = fp.msg;
  memport_msg_clear(m);
  if (memport_msg_set_bytes(m, &fp.w, sizeof fp.w) != 0)
    abort();
  switch (fp.handles % 8u) {
  case 0:
  case 1:
  case 2:
  case 3: { /* lane, pool read-only, a semaphore: as the publisher sends them */
    memport_region_t *ro;
    if (memport_region_dup(fp.pool_r, MEMPORT_DUP_READONLY, &ro) != 0)
      abort();
    (void)memport_msg_attach_region(m, fp.lane_r, MEMPORT_ATTACH_COPY);
    (void)memport_msg_attach_region(m, ro, 0);
    attach_junk(m, 2);
    break;
  }
  case 4: /* the pool writable */
    (void)memport_msg_attach_region(m, fp.lane_r, MEMPORT_ATTACH_COPY);
    (void)memport_msg_attach_region(m, fp.pool_r, MEMPORT_ATTACH_COPY);
    attach_junk(m, 2);
    break;
  case 5: { /* the lane read-only */
    memport_region_t *ro;
    if (memport_region_readonly(fp.lane_r, &ro) != 0)
      abort();
    (void)memport_msg_attach_region(m, ro, 0);
    if (memport_region_readonly(fp.pool_r, &ro) != 0)
      abort();
    (void)memport_msg_attach_region(m, ro, 0);
    attach_junk(m, 2);
    break;
  }
  default: {
    unsigned n = fz_u8(fp.f) % 5u;
    for (unsigned i = 0; i < n; i++)
      attach_junk(m, fz_u8(fp.f));
    break;
  }
  }
  (void)memport_port_send(fp.port, m, MEMPORT_NOWAIT);
  memport_msg_clear(m);
}

static void fpub_put(struct fz *f) {
  struct memport__lane *l = fp.lane;
  uint64_t t = atomic_load(&l->tail);
  uint8_t mode = fz_u8(f);
  struct memport__lane_slot sl = {0};
  if (mode & 1u) {
    sl.kind = MEMPORT__SLOT_INLINE;
    sl.len = (uint32_t)fz_num(f, 16) % (fp.slot_size + 2);
  } else {
    sl.kind = MEMPORT__SLOT_POOL;
    sl.index = (uint32_t)fz_u8(f) % (fp.count + 1);
    sl.offset = fz_num(f, 0) % (PAGE_BUF + 2);
    sl.len = (uint32_t)fz_num(f, 100) % (PAGE_BUF + 2);
    sl.gen = fz_u32(f);
  }
  if (mode & 2u)
    sl.kind = fz_u32(f);
  if (mode & 4u)
    perturb(f, &sl, sizeof sl);
  sl.seq = t + 1;
  struct memport__lane_slot *dst = memport__lane_slot_at(l, fp.slot_size, fp.depth, t);
  memcpy(dst, &sl, sizeof sl);
  memset(dst + 1, (int)(t & 0xffu), fp.slot_size - sizeof sl);
  atomic_store(&l->tail, mode & 8u ? fz_num(f, t + 1) : t + 1);
}

/* Take the subscriber's releases as the publisher does (only advancing the queue). */
static void fpub_collect(void) {
  struct memport__relq_shared *q = &fp.lane->relq;
  atomic_store(&q->head, atomic_load(&q->tail));
}

static void fpub_scribble(struct fz *f) {
  struct memport__lane *l = fp.lane;
  switch (fz_u8(f) % 7u) {
  case 0:
    atomic_store(&l->head, fz_num(f, atomic_load(&l->head)));
    break;
  case 1:
    atomic_store(&l->closed, fz_u8(f) & 1u ? atomic_load(&l->tail) + 1 : fz_num(f, 0));
    break;
  case 2:
    atomic_store(&l->dropped, fz_num(f, 0));
    break;
  case 3:
    atomic_store(&l->sub_wait, (uint32_t)fz_num(f, 0));
    break;
  case 4:
    atomic_store(&l->relq.head, fz_num(f, atomic_load(&l->relq.head)));
    break;
  case 5:
    atomic_store(&l->relq.owner_wait, fz_u32(f));
    break;
  default:
    atomic_store(&l->closed, MEMPORT__LANE_DROPPED);
    break;
  }
}

static void fpub_send(struct fz *f) {
  if (fp.port == NULL)
    return;
  struct memport__topic_hdr h = {MEMPORT__TOPIC_MAGIC, MEMPORT__TOPIC_WAKE, MEMPORT__TOPIC_VERSION};
  unsigned char b[sizeof h + 8];
  memset(b, 0, sizeof b);
  memcpy(b, &h, sizeof h);
  size_t len = sizeof h;
  uint8_t mode = fz_u8(f);
  if (mode & 1u)
    perturb(f, b, sizeof h);
  if (mode & 2u)
    len = fz_u8(f) % sizeof b;
  memport_msg_clear(fp.msg);
  if (mode & 4u)
    attach_junk(fp.msg, fz_u8(f));
  if (memport_msg_set_bytes(fp.msg, b, len) == 0)
    (void)memport_port_send(fp.port, fp.msg, MEMPORT_NOWAIT);
  memport_msg_clear(fp.msg);
}

/* Every byte of a buffer handed out is readable. */
static unsigned touch(const memport_buf_t *b) {
  unsigned sum = 0;
  for (size_t i = 0; i < b->len; i++)
    sum += ((const unsigned char *)b->data)[i];
  return sum;
}

static void run_subscriber(struct fz *f) {
  char name[64];
  fz_name(name, sizeof name);
  memset(&fp, 0, sizeof fp);
  fp.f = f;
  if (memport_msg_create(&fp.msg) != 0 || memport_service_create(&fp.svc, name, 0) != 0)
    abort();
  uint8_t geo = fz_u8(f);
  fp.depth = 1u + geo % 8u;
  uint32_t inline_max = geo & 0x80u ? 0 : 64;
  fp.slot_size = memport__slot_size(inline_max);
  fp.count = 1u + (geo >> 3) % 4u;
  struct memport__topic_welcome *w = &fp.w;
  w->hdr = (struct memport__topic_hdr){MEMPORT__TOPIC_MAGIC, MEMPORT__TOPIC_WELCOME, MEMPORT__TOPIC_VERSION};
  w->depth = fp.depth;
  w->slot_size = fp.slot_size;
  w->buffers = fp.count;
  w->buffer_size = PAGE_BUF;
  w->inline_max = fp.slot_size - MEMPORT__SLOT_HDR; /* the capacity, as the publisher says it */
  uint8_t mode = fz_u8(f);
  fp.handles = fz_u8(f);
  if (mode & 1u) {
    switch (fz_u8(f) % 7u) {
    case 0:
      w->depth = (uint32_t)fz_num(f, fp.depth);
      break;
    case 1:
      w->slot_size = (uint32_t)fz_num(f, fp.slot_size);
      break;
    case 2:
      w->buffers = (uint32_t)fz_num(f, fp.count);
      break;
    case 3:
      w->buffer_size = fz_num(f, PAGE_BUF);
      break;
    case 4:
      w->inline_max = fz_num(f, fp.slot_size - MEMPORT__SLOT_HDR);
      break;
    case 5:
      w->status = (int32_t)fz_u32(f);
      break;
    default:
      perturb(f, w, sizeof *w);
      break;
    }
  }
  /* The lane is made for the true geometry, or for what the WELCOME claims (when it is small). */
  uint64_t ld = w->depth <= 64 ? w->depth : fp.depth, ls = w->slot_size <= 4096 ? w->slot_size : fp.slot_size;
  if (mode & 2u) {
    fp.depth = (uint32_t)(ld != 0 ? ld : 1);
    fp.slot_size = (uint32_t)(ls >= MEMPORT__SLOT_HDR ? ls : MEMPORT__SLOT_HDR);
  }
  fp.lane_size = memport__page_round((size_t)memport__lane_bytes(fp.depth, fp.slot_size));
  if (mode & 4u)
    fp.lane_size = memport_page_size() * (1u + fz_u8(f) % 4u);
  void *map;
  if (memport_region_create(&fp.lane_r, fp.lane_size, 0) != 0 || memport_region_map(fp.lane_r, 0, &map) != 0)
    abort();
  fp.lane = map;
  fp.lane->magic = MEMPORT__LANE_MAGIC;
  fp.lane->version = MEMPORT__TOPIC_VERSION;
  fp.lane->depth = w->depth;
  fp.lane->slot_size = w->slot_size;
  if (mode & 8u)
    perturb(f, fp.lane, 16);
  if (memport_region_create(&fp.pool_r, (size_t)fp.count * PAGE_BUF, 0) != 0)
    abort();
  /* Slots are written within the lane as made, whatever the WELCOME said. */
  if (memport__lane_bytes(fp.depth, fp.slot_size) > fp.lane_size) {
    fp.depth = 1;
    fp.slot_size = MEMPORT__SLOT_HDR;
  }

  on_connect = fpub_answer;
  memport_sub_t *s = NULL;
  int rc = memport_sub_connect(&s, name, NULL, 1000000000);
  on_connect = NULL;
  fz_debug("sub connect: %d\n", rc);
  memport_buf_t held[HELD];
  unsigned nheld = 0;
  volatile unsigned sink = 0;
  for (unsigned op = 0; rc == 0 && op < MAX_OPS && !fz_empty(f); op++) {
    uint8_t c = fz_u8(f);
    int r = 0;
    switch (c % 12u) {
    case 0:
    case 1:
      fpub_put(f);
      break;
    case 2:
    case 3: {
      memport_buf_t b;
      r = memport_sub_recv(s, &b, MEMPORT_NOWAIT);
      if (r == 0) {
        sink += touch(&b);
        if (nheld < HELD && (c & 0x10u))
          held[nheld++] = b;
        else if (memport_sub_release(s, &b) != 0)
          abort();
      }
      break;
    }
    case 4:
      if (nheld != 0) {
        memport_buf_t *b = &held[fz_u8(f) % nheld];
        if (memport_sub_release(s, b) != 0)
          abort();
        *b = held[--nheld];
      }
      break;
    case 5: {
      unsigned char out[256];
      size_t len;
      r = memport_sub_recv_copy(s, out, fz_u8(f), &len, MEMPORT_NOWAIT);
      break;
    }
    case 6:
      fpub_collect();
      break;
    case 7:
    case 8:
      fpub_scribble(f);
      break;
    case 9:
      fpub_send(f);
      break;
    case 10:
      if (fz_u8(f) & 1u) {
        memport_port_close(fp.port);
        fp.port = NULL;
      } else {
        vclock += fz_num(f, MEMPORT__TOPIC_SLICE_NS) % (10 * 1000000000ull);
      }
      break;
    default: {
      uint64_t missed;
      memport_os_handle_t h;
      r = c & 0x10u ? memport_sub_missed(s, &missed) : memport_sub_pollable(s, &h);
      break;
    }
    }
    fz_debug("sub op %u (%u): %d\n", op, c % 12u, r);
  }
  (void)sink;
  while (nheld != 0)
    if (memport_sub_release(s, &held[--nheld]) != 0)
      abort();
  memport_sub_close(s);
  memport_unmap(fp.lane);
  memport_region_close(fp.lane_r);
  memport_region_close(fp.pool_r);
  memport_port_close(fp.port);
  memport_service_close(fp.svc);
  memport_msg_close(fp.msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct fz f = {data, size};
  inputs++;
  fz_leaks_begin(&leaks);
  if (fz_u8(&f) & 1u)
    run_subscriber(&f);
  else
    run_publisher(&f);
  fz_leaks_end(&leaks, 64);
  return 0;
}
