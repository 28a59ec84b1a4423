/* SPDX-License-Identifier: MIT */
/* fuzz_ring.c: libFuzzer harness: the ring's consumer (and producer) against a peer that writes any bytes into the shared control page and records, also while they wait. */
#include "fuzz.h"

#include "chan_proto.h"

/*
 * Per input: a ring is created (the legitimate producer object P), exported, and imported as a
 * second object C (the consumer under test), exactly as a peer process would. The harness also
 * maps the ring's two regions itself, writable: that is the hostile peer's view. The input is a
 * schedule of operations: the hostile peer overwrites positions, wait words and record headers
 * (anything, anywhere, including before the import), the legitimate producer writes records of
 * any type and size, and the consumer peeks, reads and releases, with deadline 0 or inside a
 * spinning/blocking wait (lib/wait.c) during which the peer changes the control page between two
 * of the waiter's loads (torn updates). Time is virtual (the link wraps memport__now_ns,
 * memport__deadline, memport__expired and memport__os_sem_wait): every look at the clock and
 * every "sleep" inside a wait is a step of the schedule, and once the scheduled writes are used
 * up the clock jumps to the wait's deadline. Nothing sleeps.
 *
 * Checked: no access outside the mappings (ASan, SIGSEGV), every record handed out lies inside
 * the data area and is no longer than the largest record, once the consumer reported
 * MEMPORT_EPROTO it keeps doing so, a wait gives up (MEMPORT_ETIMEDOUT) only at its deadline, and
 * nothing leaks (memory, descriptors, mappings).
 */

#define MAX_OPS 96

static struct {
  struct fz *f;
  unsigned char *ctrl; /* the peer's view of the control page */
  unsigned char *data; /* the peer's view of the data area (mapped once) */
  size_t cap;
  unsigned writes; /* scheduled writes the current wait may still see */
  unsigned calls;
  bool waiting;     /* inside a wait: the clock and the semaphore are steps of the schedule */
  uint64_t wait_end; /* that wait's deadline */
} g;

/* ------------------------------------------------------------------------------------------ */
/* The virtual clock (one second after boot at the start of every wait).                        */

static uint64_t vclock = 1000000000u;
static void scribble(struct fz *f);

/* One step of a wait: the peer writes, time moves a little; once the schedule is used up (or
 * after 64 steps) time jumps to the deadline. */
static void step(void) {
  g.calls++;
  if (g.writes > 0 && g.calls <= 64) {
    g.writes--;
    scribble(g.f);
    vclock += 1000u;
  } else if (g.wait_end != MEMPORT__NO_DEADLINE && vclock < g.wait_end) {
    vclock = g.wait_end;
  }
}

uint64_t __wrap_memport__now_ns(void);
uint64_t __wrap_memport__deadline(int64_t timeout_ns);
int __wrap_memport__expired(uint64_t deadline);
int __wrap_memport__os_sem_wait(memport_sem_t *s, uint64_t deadline);

uint64_t __wrap_memport__now_ns(void) {
  if (g.waiting)
    step();
  return vclock;
}

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

/* A sleep on the ring's semaphore: a step, then a wake-up (spurious or not) or the slice's end. */
int __wrap_memport__os_sem_wait(memport_sem_t *s, uint64_t deadline) {
  (void)s;
  (void)deadline;
  step();
  return fz_u8(g.f) & 1u ? 0 : MEMPORT_ETIMEDOUT;
}

static struct fz_leaks leaks;

/* One hostile write, described by the input. */
static void scribble(struct fz *f) {
  struct memport__ring_shared *sh = (struct memport__ring_shared *)(void *)g.ctrl;
  uint8_t what = fz_u8(f);
  switch (what % 12u) {
  case 0: {
    uint64_t p = atomic_load(&sh->prod);
    atomic_store(&sh->prod, fz_num(f, p));
    break;
  }
  case 1: {
    uint64_t c = atomic_load(&sh->cons);
    atomic_store(&sh->cons, fz_num(f, c));
    break;
  }
  case 2: /* the producer "publishes" a plausible amount: prod = cons + aligned step */
    atomic_store(&sh->prod, atomic_load(&sh->cons) + ((uint64_t)fz_u16(f) & ~(uint64_t)15));
    break;
  case 3:
    atomic_store(&sh->cons_wait, fz_u32(f));
    break;
  case 4:
    atomic_store(&sh->prod_wait, fz_u32(f));
    break;
  case 5:
  case 6: { /* a record header where the consumer will look (its position is cons) */
    uint64_t at = (atomic_load(&sh->cons) + (what == 6 ? (uint64_t)fz_u8(f) * 16u : 0u)) % g.cap;
    struct memport__ring_rec h;
    h.len = (uint32_t)fz_num(f, 16);
    h.type = fz_u8(f) & 7u;
    h.reserved[0] = h.reserved[1] = 0;
    if (at + sizeof h <= g.cap)
      memcpy(g.data + at, &h, sizeof h);
    break;
  }
  case 7: { /* raw bytes anywhere in the data area */
    size_t at = fz_u16(f) % g.cap;
    size_t len = fz_u8(f) % 33u;
    if (len > g.cap - at)
      len = g.cap - at;
    fz_bytes(f, g.data + at, len);
    break;
  }
  case 8: { /* raw bytes anywhere in the control page (magic, version, padding, queue) */
    size_t at = fz_u16(f) % sizeof(struct memport__ring_shared);
    size_t len = fz_u8(f) % 17u;
    if (len > sizeof(struct memport__ring_shared) - at)
      len = sizeof(struct memport__ring_shared) - at;
    fz_bytes(f, g.ctrl + at, len);
    break;
  }
  case 9: /* positions far away (wrapping the 64-bit counters) */
    atomic_store(&sh->prod, UINT64_MAX - (fz_u16(f) & ~15u));
    break;
  case 10:
    atomic_store(&sh->cons, atomic_load(&sh->prod) - (fz_u16(f) & ~15u));
    break;
  default: /* a plausible pool or blob descriptor record (the channel's record types) */
  {
    uint64_t at = atomic_load(&sh->cons) % g.cap;
    unsigned char rec[16 + 24];
    struct memport__ring_rec h = {0, 0, {0, 0}};
    if (fz_u8(f) & 1u) {
      struct memport__rec_pool d;
      d.index = fz_u32(f);
      d.gen = fz_u32(f);
      d.offset = fz_num(f, 0);
      d.len = fz_num(f, 4096);
      h.len = sizeof d;
      h.type = MEMPORT__REC_POOL;
      memcpy(rec + 16, &d, sizeof d);
    } else {
      struct memport__rec_blob d = {0, 0, 0};
      d.seq = fz_u32(f);
      d.len = fz_num(f, 1u << 20);
      h.len = sizeof d;
      h.type = MEMPORT__REC_BLOB;
      memcpy(rec + 16, &d, sizeof d);
    }
    memcpy(rec, &h, sizeof h);
    size_t len = 16 + h.len;
    if (at + len <= g.cap)
      memcpy(g.data + at, rec, len);
    break;
  }
  }
}

/* Touch every byte of a record the consumer handed out: it must be inside a mapping. */
static void touch(const void *ptr, size_t len, size_t max_record) {
  if (len > max_record)
    abort();
  if ((uintptr_t)ptr % MEMPORT__RING_ALIGN != 0)
    abort();
  const volatile unsigned char *p = ptr;
  unsigned sum = 0;
  for (size_t i = 0; i < len; i++)
    sum += p[i];
  (void)sum;
}

static void run(struct fz *f) {
  size_t page = memport_page_size();
  size_t cap = page * (1u + (fz_u8(f) & 1u));
  memport_ring_t *P = NULL, *C = NULL;
  memport_msg_t *m1 = NULL, *m2 = NULL;
  memport_region_t *ctrl_r = NULL, *data_r = NULL;
  void *ctrl = NULL, *data = NULL;
  if (memport_ring_create(&P, cap, 0) != 0 || memport_msg_create(&m1) != 0 || memport_msg_create(&m2) != 0 ||
      memport_ring_export(P, m1) != 0 || memport_ring_export(P, m2) != 0 ||
      memport_msg_take_region(m2, 0, &ctrl_r) != 0 || memport_msg_take_region(m2, 1, &data_r) != 0 ||
      memport_region_map(ctrl_r, 0, &ctrl) != 0 || memport_region_map(data_r, 0, &data) != 0)
    abort();
  g.f = f;
  g.ctrl = ctrl;
  g.data = data;
  g.cap = memport_region_size(data_r);
  g.writes = 0;

  /* The peer may have written anything before we import. */
  unsigned pre = fz_u8(f) % 4u;
  for (unsigned i = 0; i < pre; i++)
    scribble(f);
  /* The channel's consumer maps the data read-only (memport__ring_import_rx); the public import
   * maps it writable and may also produce. */
  int rx_only = fz_u8(f) & 1u;
  int rc = rx_only ? memport__ring_import_rx(&C, m1, 0) : memport_ring_import(&C, m1, 0);
  fz_debug("import: %s\n", memport_err_name(rc));
  if (rc != 0) {
    if (rc != MEMPORT_EPROTO)
      abort();
    goto out;
  }
  size_t maxrec = memport_ring_max_record(C);
  if (maxrec != g.cap - MEMPORT__RING_HDR)
    abort();
  int broken = 0;
  unsigned char buf[8192 + 64];

  for (unsigned op = 0; op < MAX_OPS && !fz_empty(f); op++) {
    uint8_t o = fz_u8(f);
    const void *ptr;
    size_t len;
    uint32_t type;
    int on_c = 1; /* the operation ran on the consumer object */
    rc = 0;
    switch (o % 14u) {
    case 0:
    case 1:
    case 2:
      scribble(f);
      continue;
    case 3: { /* the legitimate producer: a record of any size */
      size_t n = (size_t)fz_num(f, 64) % (g.cap + 64);
      if (n > sizeof buf)
        n = sizeof buf;
      memset(buf, o, n);
      (void)memport_ring_write(P, buf, n, MEMPORT_NOWAIT);
      continue;
    }
    case 4: { /* the producer's typed records (the channel's), through reserve/commit */
      void *slot;
      size_t n = fz_u8(f);
      uint32_t t = fz_u8(f) & 3u;
      if (memport__ring_reserve(P, n, &slot, 0) == 0) {
        fz_bytes(f, slot, n);
        (void)memport__ring_commit(P, fz_u8(f) & 1u ? n : n / 2, t);
      }
      continue;
    }
    case 5:
      rc = memport__ring_peek(C, &ptr, &len, &type, 0);
      if (rc == 0)
        touch(ptr, len, maxrec);
      break;
    case 6:
      rc = o & 0x80u ? memport_ring_release(C) : memport__ring_release(C);
      break;
    case 7:
      rc = memport_ring_peek(C, &ptr, &len, MEMPORT_NOWAIT);
      if (rc == 0)
        touch(ptr, len, maxrec);
      break;
    case 8: {
      size_t want = fz_u16(f) % sizeof buf;
      rc = memport_ring_read(C, buf, want, &len, MEMPORT_NOWAIT);
      if (rc == 0 && len > want)
        abort();
      break;
    }
    case 9:
      rc = memport__ring_readable(C);
      break;
    case 10: /* the producer waits (not at all) for the consumer to pass its position */
      (void)memport__ring_wait_consumed(P, memport__ring_produced(P), 0);
      on_c = 0;
      break;
    case 11:
    case 12: { /* a wait during which the peer keeps writing (torn updates between loads) */
      static const int policies[3] = {MEMPORT_WAIT_SPIN, MEMPORT_WAIT_BLOCK, MEMPORT_WAIT_ADAPTIVE};
      memport_ring_t *r = o % 14u == 11 ? C : P;
      memport__ring_set_policy(r, policies[fz_u8(f) % 3u], 1);
      g.writes = fz_u8(f) % 8u;
      g.calls = 0;
      vclock = 1000000000u;
      uint64_t deadline = __wrap_memport__deadline(10 * 1000000000ll);
      size_t n = (size_t)fz_u16(f) % g.cap;
      g.wait_end = deadline;
      g.waiting = true;
      if (r == C) {
        rc = memport__ring_peek(C, &ptr, &len, &type, deadline);
      } else {
        void *slot;
        rc = memport__ring_reserve(P, n, &slot, deadline);
        if (rc == 0)
          (void)memport__ring_commit(P, n, MEMPORT__REC_DATA);
        on_c = 0;
      }
      g.waiting = false;
      if (r == C && rc == 0)
        touch(ptr, len, maxrec);
      if (rc == MEMPORT_ETIMEDOUT && vclock < deadline)
        abort(); /* a wait gives up only at its deadline */
      break;
    }
    default: { /* the producer side of the consumer object: refresh_cons against a hostile cons */
      if (rx_only)
        continue;
      void *slot;
      size_t n = fz_u16(f) % (g.cap + 32);
      rc = memport__ring_reserve(C, n, &slot, 0);
      if (rc == 0)
        rc = memport__ring_commit(C, 0, MEMPORT__REC_DATA);
      break;
    }
    }
    fz_debug("op %u (%u): %s\n", op, o % 14u, memport_err_name(rc));
    if (!on_c)
      continue;
    if (broken && rc != MEMPORT_EPROTO)
      abort(); /* a ring that saw a broken protocol must keep saying so */
    if (rc == MEMPORT_EPROTO)
      broken = 1;
  }

out:
  memport_ring_close(C);
  memport_ring_close(P);
  memport_unmap(ctrl);
  memport_unmap(data);
  memport_region_close(ctrl_r);
  memport_region_close(data_r);
  memport_msg_close(m1);
  memport_msg_close(m2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct fz f = {data, size};
  fz_leaks_begin(&leaks);
  run(&f);
  fz_leaks_end(&leaks, 1);
  return 0;
}
