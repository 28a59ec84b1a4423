/* SPDX-License-Identifier: MIT */
/* test_exhaust.c: exhaustion: floods of handles, too few descriptors, a full pool, a consumer that never reads. */
#include "helpers.h"

#include "../lib/chan_proto.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>


#define RING_CAP (64u << 10)
#define THRESH (4u << 10)
#define POOL_BUF (64u << 10)
#define POOL_N 4u
#define BIG_MAX (160u << 10)

struct shared {
  _Atomic uint32_t sent;     /* messages the peer sent (send returned 0) */
  _Atomic uint32_t stalls;   /* sends that met back-pressure */
  _Atomic uint32_t stage;
  _Atomic uint32_t go;
  _Atomic uint32_t bound[4]; /* first seq of each phase */
  _Atomic uint32_t max_fds;
};
static struct shared *g_sh;
static rlim_t g_nofile0; /* the soft RLIMIT_NOFILE we started with */

/* ------------------------------------------------------------------------------------------ */
/* Utilities.                                                                                   */

/* Resident memory of this process in bytes. */
static size_t rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  if (f == NULL)
    return 0;
  unsigned long size = 0, res = 0;
  if (fscanf(f, "%lu %lu", &size, &res) != 2)
    res = 0;
  fclose(f);
  return (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
}

static void reset_shared(void) { memset(g_sh, 0, sizeof *g_sh); }

static bool wait_at_least(_Atomic uint32_t *v, uint32_t want, uint64_t timeout_ns) {
  uint64_t end = th_now_ns() + timeout_ns;
  while (atomic_load(v) < want) {
    if (th_now_ns() > end)
      return false;
    th_sleep_ns(100 * US);
  }
  return true;
}

static int set_nofile(rlim_t cur) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return -1;
  rl.rlim_cur = cur;
  return setrlimit(RLIMIT_NOFILE, &rl);
}

static uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

#define SZ_SMALL 0
#define SZ_POOL 1
#define SZ_BIG 2
static size_t msg_size(uint32_t seq, int kind) {
  uint64_t h = mix(seq);
  if (kind == SZ_BIG)
    return POOL_BUF + 1 + h % (BIG_MAX - POOL_BUF);
  if (kind == SZ_POOL)
    return THRESH + 1 + h % (POOL_BUF - THRESH);
  return 4 + h % THRESH;
}

static void pattern(unsigned char *p, size_t len, uint32_t seq) {
  memcpy(p, &seq, 4);
  uint64_t x = mix(seq ^ 0xabcdefULL) | 1;
  for (size_t i = 4; i < len; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    p[i] = (unsigned char)x;
  }
}

static bool pattern_ok(const unsigned char *p, size_t len, uint32_t seq) {
  if (len < 4 || memcmp(p, &seq, 4) != 0)
    return false;
  uint64_t x = mix(seq ^ 0xabcdefULL) | 1;
  for (size_t i = 4; i < len; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    if (p[i] != (unsigned char)x)
      return false;
  }
  return true;
}

/* The two ends of a pair, for a child that keeps the second and closes its copy of the first. */
struct ends {
  memport_chan_t *mine, *theirs;
};

static void small_opts(memport_chan_opts_t *o) {
  memport_chan_opts_init(o);
  o->ring_capacity = RING_CAP;
  o->zerocopy_threshold = THRESH;
  o->pool_buffer_size = POOL_BUF;
  o->pool_buffers = POOL_N;
}

/* ------------------------------------------------------------------------------------------ */
/* Ports flooded with the most handles a message carries.                                       */

struct flood {
  memport_port_t *port;
  uint64_t duration_ns;
};

/* Attach MEMPORT_MSG_MAX_HANDLES copies of one region, semaphore or port (kind = seq % 3). */
static int fill_handles(memport_msg_t *m, uint32_t seq, memport_region_t *r, memport_sem_t *s, memport_port_t *p) {
  memport_msg_clear(m);
  int rc = memport_msg_set_bytes(m, &seq, sizeof seq);
  for (unsigned i = 0; rc == 0 && i < MEMPORT_MSG_MAX_HANDLES; i++) {
    switch (seq % 3) {
    case 0: rc = memport_msg_attach_region(m, r, MEMPORT_ATTACH_COPY); break;
    case 1: rc = memport_msg_attach_sem(m, s, MEMPORT_ATTACH_COPY); break;
    default: rc = memport_msg_attach_port(m, p, MEMPORT_ATTACH_COPY); break;
    }
  }
  return rc;
}

static int flood_child(void *arg) {
  struct flood *f = arg;
  memport_region_t *r;
  memport_sem_t *s;
  memport_port_t *x, *y;
  memport_msg_t *m;
  if (memport_region_create(&r, 4096, 0) != 0 || memport_sem_create(&s, 0, 0) != 0 || memport_port_pair(&x, &y) != 0 ||
      memport_msg_create(&m) != 0)
    return 1;
  int fds0 = th_count_fds();
  uint64_t end = th_now_ns() + f->duration_ns, hard_end = end + 30 * (uint64_t)SEC;
  uint32_t seq = 0;
  bool filled = false;
  /* Until the duration is over and back-pressure was met (a slow, loaded machine may need longer
   * to fill the port while the parent does not read). */
  while (th_now_ns() < end || (atomic_load(&g_sh->stalls) == 0 && th_now_ns() < hard_end)) {
    if (!filled && fill_handles(m, seq, r, s, x) != 0)
      return 2;
    filled = true;
    int n = th_count_fds();
    if ((uint32_t)n > atomic_load(&g_sh->max_fds))
      atomic_store(&g_sh->max_fds, (uint32_t)n);
    if (n > fds0 + (int)MEMPORT_MSG_MAX_HANDLES)
      return 3; /* the sender's own descriptors grow */
    int rc = memport_port_send(f->port, m, MEMPORT_NOWAIT);
    if (rc == 0) {
      atomic_store(&g_sh->sent, ++seq);
      filled = false; /* the handles went to the peer */
    } else if (rc == MEMPORT_EAGAIN || rc == MEMPORT_ETIMEDOUT) {
      if (memport_msg_handle_count(m) != (int)MEMPORT_MSG_MAX_HANDLES)
        return 4; /* a failed send changes nothing */
      atomic_fetch_add(&g_sh->stalls, 1);
      th_sleep_ns(200 * US);
    } else {
      fprintf(stderr, "flood send: %s\n", memport_err_name(rc));
      return 5;
    }
  }
  memport_msg_close(m);
  if (th_count_fds() != fds0)
    return 6;
  memport_region_close(r);
  memport_sem_close(s);
  memport_port_close(x);
  memport_port_close(y);
  memport_port_close(f->port);
  return 0;
}

static int check_flood_msg(memport_msg_t *m, uint32_t seq) {
  size_t len;
  const void *b = memport_msg_bytes(m, &len);
  uint32_t got;
  if (b == NULL || len != sizeof got)
    return 1;
  memcpy(&got, b, sizeof got);
  if (got != seq || memport_msg_handle_count(m) != (int)MEMPORT_MSG_MAX_HANDLES)
    return 2;
  int kind = seq % 3 == 0 ? MEMPORT_HANDLE_REGION : seq % 3 == 1 ? MEMPORT_HANDLE_SEM : MEMPORT_HANDLE_PORT;
  for (size_t i = 0; i < MEMPORT_MSG_MAX_HANDLES; i++)
    if (memport_msg_handle_kind(m, i) != kind)
      return 3;
  return 0;
}

/* A sender floods messages of 64 regions, 64 semaphores, 64 ports; we read, pause, read again:
 * the sender meets back-pressure, nobody's descriptors grow beyond one message, nothing is lost. */
static void test_flood_of_messages_with_the_most_handles(void **state) {
  (void)state;
  reset_shared();
  int fds = th_count_fds(), maps = th_count_memport_maps();
  memport_port_t *a, *b;
  th_assert_ok(memport_port_pair(&a, &b));
  struct flood f = {b, (th_under_valgrind() ? 3000 : 900) * (uint64_t)MS};
  pid_t pid = th_fork(flood_child, &f, 60);
  memport_port_close(b);
  memport_msg_t *m;
  th_assert_ok(memport_msg_create(&m));
  int base = th_count_fds(), worst = base;
  uint32_t got = 0;
  uint64_t t0 = th_now_ns();
  for (int phase = 0; phase < 3; phase++) {
    uint64_t until = th_now_ns() + (phase == 2 ? 60 * (uint64_t)SEC : f.duration_ns / 3);
    if (phase == 1) { /* not reading: the sender must wait */
      th_sleep_ns(f.duration_ns / 3);
      assert_true(wait_at_least(&g_sh->stalls, 1, 30 * SEC));
      continue;
    }
    while (th_now_ns() < until) {
      int rc = memport_port_recv(a, m, 2 * SEC);
      if (rc == MEMPORT_EPEER && phase == 2)
        break;
      if (rc != 0)
        fail_msg("receive %u: %s", got, memport_err_name(rc));
      int n = th_count_fds();
      worst = n > worst ? n : worst;
      if (check_flood_msg(m, got) != 0)
        fail_msg("message %u is not the one sent", got);
      got++;
      memport_msg_clear(m);
    }
  }
  assert_int_equal(th_wait(pid, 60), 0);
  printf("# %u messages of %u handles in %.2f s; the sender met back-pressure %u times; descriptors: "
         "receiver at most +%d, sender at most %u\n",
         got, MEMPORT_MSG_MAX_HANDLES, (double)(th_now_ns() - t0) / 1e9, atomic_load(&g_sh->stalls), worst - base,
         atomic_load(&g_sh->max_fds));
  assert_int_equal(got, atomic_load(&g_sh->sent));
  assert_true(atomic_load(&g_sh->stalls) > 0);
  assert_true(worst - base <= (int)MEMPORT_MSG_MAX_HANDLES);
  memport_msg_close(m);
  memport_port_close(a);
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

/* ------------------------------------------------------------------------------------------ */
/* Too few descriptors.                                                                         */

static const int free_slots[] = {0, 1, 2, 3, 7, 31, 62, 63, 64, 65, 80};

static int emfile_receive_child(void *arg) {
  (void)arg;
  memport_port_t *a, *b, *x, *y;
  memport_region_t *r;
  memport_sem_t *s;
  memport_msg_t *m, *in;
  if (memport_port_pair(&a, &b) != 0 || memport_port_pair(&x, &y) != 0 || memport_region_create(&r, 4096, 0) != 0 ||
      memport_sem_create(&s, 0, 0) != 0 || memport_msg_create(&m) != 0 || memport_msg_create(&in) != 0)
    return 1;
  int base = th_count_fds();
  for (uint32_t kind = 0; kind < 3; kind++)
    for (size_t k = 0; k < sizeof free_slots / sizeof free_slots[0]; k++) {
      if (fill_handles(m, kind, r, s, x) != 0 || memport_port_send(a, m, SEC) != 0)
        return 2;
      if (set_nofile(th_limit_with_free_slots(free_slots[k])) != 0)
        return 3;
      int rc = memport_port_recv(b, in, SEC);
      set_nofile(g_nofile0);
      size_t len = 99;
      memport_msg_bytes(in, &len);
      if (rc == 0) {
        if (check_flood_msg(in, kind) != 0)
          return 4;
      } else if (rc != MEMPORT_EMFILE) {
        fprintf(stderr, "%d free: %s\n", free_slots[k], memport_err_name(rc));
        return 5;
      } else if (memport_msg_handle_count(in) != 0 || len != 0) {
        return 6; /* half delivered */
      } else if (free_slots[k] >= 2 * (int)MEMPORT_MSG_MAX_HANDLES) {
        return 7;
      }
      memport_msg_clear(in);
      if (th_count_fds() != base) {
        fprintf(stderr, "%d free, kind %u: %d descriptors, was %d\n", free_slots[k], kind, th_count_fds(), base);
        return 8;
      }
      /* The port goes on: the next message arrives whole. */
      uint32_t v = 1000 + kind;
      memport_msg_clear(m);
      if (memport_msg_set_bytes(m, &v, sizeof v) != 0 || memport_port_send(a, m, SEC) != 0 ||
          memport_port_recv(b, in, SEC) != 0)
        return 9;
      const void *bytes = memport_msg_bytes(in, &len);
      if (len != sizeof v || memcmp(bytes, &v, sizeof v) != 0)
        return 10;
      if (free_slots[k] < (int)MEMPORT_MSG_MAX_HANDLES && rc != MEMPORT_EMFILE)
        return 11; /* cannot have received 64 descriptors into fewer slots */
    }
  memport_msg_close(m);
  memport_msg_close(in);
  memport_region_close(r);
  memport_sem_close(s);
  memport_port_close(a);
  memport_port_close(b);
  memport_port_close(x);
  memport_port_close(y);
  return 0;
}

static void test_too_few_descriptors_for_a_message_gives_emfile_and_the_port_goes_on(void **state) {
  (void)state;
  if (th_under_valgrind())
    skip(); /* valgrind keeps descriptors of its own near the limit */
  assert_int_equal(th_run_child(emfile_receive_child, NULL, 60), 0);
}

struct conn_arg {
  const char *name;        /* a channel service the parent serves */
  const char *region_name; /* a region the parent publishes (4096 bytes of 0x5a) */
};

static int emfile_channel_child(void *arg) {
  struct conn_arg *c = arg;
  if (!wait_at_least(&g_sh->go, 1, 20 * SEC))
    return 7;
  memport_chan_opts_t o;
  small_opts(&o);
  int fds = th_count_fds(), maps = th_count_memport_maps();
  unsigned ok = 0, emfile = 0;
  for (int free = 0; free <= 40; free++) {
    for (int what = 0; what < 3; what++) {
      static const char *const whats[3] = {"pair", "connect", "region open"};
      memport_chan_t *x = NULL, *y = NULL;
      memport_region_t *r = NULL;
      if (set_nofile(th_limit_with_free_slots(free)) != 0)
        return 1;
      int rc = what == 0   ? memport_chan_pair(&x, &y, &o)
               : what == 1 ? memport_chan_connect(&x, c->name, &o, 10 * SEC)
                           : memport_region_open(&r, c->region_name, 10 * SEC);
      set_nofile(g_nofile0);
      if (rc == 0) {
        ok++;
        if (what == 1 && (memport_chan_send(x, "hi", 2, 0, SEC) != 0))
          return 2;
        void *map;
        if (what == 2 && (memport_region_map(r, MEMPORT_MAP_READONLY, &map) != 0 || ((unsigned char *)map)[7] != 0x5a ||
                          memport_unmap(map) != 0))
          return 2;
        memport_chan_close(x);
        memport_chan_close(y);
        memport_region_close(r);
      } else if (rc == MEMPORT_EMFILE) {
        emfile++;
        if (x != NULL || y != NULL || r != NULL)
          return 3;
      } else {
        fprintf(stderr, "%s with %d free descriptors: %s\n", whats[what], free, memport_err_name(rc));
        return 4;
      }
      if (th_count_fds() != fds || th_count_memport_maps() != maps) {
        fprintf(stderr, "%s with %d free: %d fds (was %d), %d maps (was %d)\n", whats[what], free, th_count_fds(),
                fds, th_count_memport_maps(), maps);
        return 5;
      }
    }
  }
  atomic_store(&g_sh->stage, 1);
  printf("# channel pair/connect, region open with 0..40 free descriptors: %u opened, %u MEMPORT_EMFILE\n", ok,
         emfile);
  fflush(stdout);
  return ok > 0 && emfile > 0 ? 0 : 6;
}

/* The server side: accepting with too few descriptors. A connection that could not be taken
 * waits in the backlog for the next accept; one that was taken but could not be opened is
 * closed (the client sees MEMPORT_EPEER and tries again). */
static int emfile_server_child(void *arg) {
  struct conn_arg *c = arg;
  memport_chan_opts_t o;
  small_opts(&o);
  memport_service_t *svc;
  if (memport_service_create(&svc, c->name, 0) != 0)
    return 1;
  atomic_store(&g_sh->stage, 1);
  int fds = th_count_fds(), maps = th_count_memport_maps();
  unsigned ok = 0, emfile = 0;
  for (int free = 0; free <= 40; free++) {
    memport_chan_t *x = NULL;
    if (set_nofile(th_limit_with_free_slots(free)) != 0)
      return 2;
    int rc = memport_chan_accept(&x, svc, &o, 5 * SEC);
    set_nofile(g_nofile0);
    if (rc == 0) {
      ok++;
      char buf[4];
      size_t len;
      if (memport_chan_recv_copy(x, buf, sizeof buf, &len, 5 * SEC) != 0 || len != 2)
        return 3;
      memport_chan_close(x);
    } else if (rc == MEMPORT_EMFILE) {
      emfile++;
    } else {
      fprintf(stderr, "accept with %d free descriptors: %s\n", free, memport_err_name(rc));
      return 4;
    }
    if (th_count_fds() != fds || th_count_memport_maps() != maps) {
      fprintf(stderr, "accept with %d free: %d fds (was %d), %d maps (was %d)\n", free, th_count_fds(), fds,
              th_count_memport_maps(), maps);
      return 5;
    }
  }
  atomic_store(&g_sh->stage, 2);
  memport_service_close(svc);
  printf("# channel accept with 0..40 free descriptors: %u opened, %u MEMPORT_EMFILE\n", ok, emfile);
  fflush(stdout);
  return ok > 0 && emfile > 0 ? 0 : 6;
}

/* Opening channels (a pair; connect to a named service; accept) and named regions with too few
 * descriptors: MEMPORT_EMFILE, nothing left behind, on both sides; the service goes on serving. */
static void test_too_few_descriptors_for_a_channel_gives_emfile_without_leaks(void **state) {
  (void)state;
  if (th_under_valgrind())
    skip();
  reset_shared();
  int fds = th_count_fds(), maps = th_count_memport_maps();
  char name[MEMPORT_NAME_MAX + 1];
  snprintf(name, sizeof name, "%s", th_unique_name("exhaust"));
  char region_name[MEMPORT_NAME_MAX + 1];
  snprintf(region_name, sizeof region_name, "%s", th_unique_name("exhaust-reg"));
  /* The child is forked first and told to start once the name and the region are served: a fork
   * while the publication's thread is starting could copy a lock held by that thread (ASan's
   * allocator, in GCC 12, takes no fork handler) and deadlock the child. */
  struct conn_arg ca = {name, region_name};
  pid_t pid = th_fork(emfile_channel_child, &ca, 120);
  memport_region_t *reg;
  void *map;
  memport_publication_t *pub;
  th_assert_ok(memport_region_create(&reg, 4096, 0));
  th_assert_ok(memport_region_map(reg, 0, &map));
  memset(map, 0x5a, 4096);
  th_assert_ok(memport_region_publish(&pub, reg, region_name, NULL, NULL));
  memport_service_t *svc;
  th_assert_ok(memport_service_create(&svc, name, 0));
  atomic_store(&g_sh->go, 1);
  memport_chan_opts_t o;
  small_opts(&o);
  unsigned served = 0;
  int status = -1;
  bool ended = false; /* the child failed early: its status says how, the loop must not spin */
  uint64_t deadline = th_now_ns() + 150 * (uint64_t)SEC;
  while (atomic_load(&g_sh->stage) == 0 && !(ended = th_exited(pid, &status))) {
    if (th_now_ns() > deadline)
      fail_msg("the connecting child made no progress for 150 s");
    memport_chan_t *c = NULL;
    int rc = memport_chan_accept(&c, svc, &o, 20 * MS);
    if (rc == 0) {
      char buf[4];
      size_t len;
      rc = memport_chan_recv_copy(c, buf, sizeof buf, &len, 5 * SEC);
      if (rc == 0)
        served++;
      else if (rc != MEMPORT_EPEER && rc != MEMPORT_ECLOSED)
        fail_msg("serving: %s", memport_err_name(rc));
      memport_chan_close(c);
    } else if (rc != MEMPORT_ETIMEDOUT && rc != MEMPORT_EPEER) {
      fail_msg("accept: %s", memport_err_name(rc));
    }
  }
  assert_int_equal(ended ? status : th_wait(pid, 120), 0);
  assert_true(served > 0);
  memport_service_close(svc);
  memport_publication_close(pub);
  memport_unmap(map);
  memport_region_close(reg);
  /* Now the other way round: the child serves under the low limits, we connect. */
  reset_shared();
  snprintf(name, sizeof name, "%s", th_unique_name("exhaust"));
  pid = th_fork(emfile_server_child, &ca, 120);
  assert_true(wait_at_least(&g_sh->stage, 1, 20 * SEC));
  served = 0;
  ended = false;
  deadline = th_now_ns() + 150 * (uint64_t)SEC;
  while (atomic_load(&g_sh->stage) < 2 && !(ended = th_exited(pid, &status))) {
    if (th_now_ns() > deadline)
      fail_msg("the serving child made no progress for 150 s");
    memport_chan_t *c = NULL;
    int rc = memport_chan_connect(&c, name, &o, 300 * MS);
    if (rc == 0) {
      th_assert_ok(memport_chan_send(c, "hi", 2, 0, SEC));
      memport_buf_t b;
      th_assert_rc(memport_chan_recv(c, &b, 10 * SEC), MEMPORT_ECLOSED); /* the server closed in order */
      memport_chan_close(c);
      served++;
    } else if (rc != MEMPORT_EPEER && rc != MEMPORT_ETIMEDOUT && rc != MEMPORT_ENOENT) {
      fail_msg("connect: %s", memport_err_name(rc));
    }
  }
  assert_int_equal(ended ? status : th_wait(pid, 120), 0);
  assert_true(served > 0);
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

static int emfile_receiver_child(void *arg) {
  struct ends *e = arg;
  memport_chan_close(e->mine);
  memport_chan_t *c = e->theirs;
  if (!wait_at_least(&g_sh->stage, 1, 20 * SEC))
    return 1;
  memport_buf_t b;
  if (memport_chan_recv(c, &b, SEC) != 0 || b.len != 2 || memcmp(b.data, "m0", 2) != 0 ||
      memport_chan_release(c, &b) != 0)
    return 2;
  int fds = th_count_fds();
  if (set_nofile(th_limit_with_free_slots(0)) != 0)
    return 3;
  int rc = memport_chan_recv(c, &b, SEC); /* the region of message 1 cannot be received */
  set_nofile(g_nofile0);
  if (rc != MEMPORT_EMFILE) {
    fprintf(stderr, "oversized message without descriptors: %s\n", memport_err_name(rc));
    return 4;
  }
  if (th_count_fds() != fds)
    return 5;
  /* That one is gone; the channel goes on with the next ones, in order. */
  rc = memport_chan_recv(c, &b, SEC);
  if (rc != 0 || b.len != 2 || memcmp(b.data, "m2", 2) != 0 || memport_chan_release(c, &b) != 0) {
    fprintf(stderr, "after the lost message: %s\n", memport_err_name(rc));
    return 6;
  }
  rc = memport_chan_recv(c, &b, SEC);
  if (rc != 0 || b.len != msg_size(3, SZ_BIG) || !pattern_ok(b.data, b.len, 3) || memport_chan_release(c, &b) != 0) {
    fprintf(stderr, "oversized message 3: %s\n", memport_err_name(rc));
    return 7;
  }
  return memport_chan_recv(c, &b, 10 * SEC) == MEMPORT_EPEER ? 0 : 8;
}

/* A channel receiver out of descriptors when an oversized message's region arrives: that message
 * is reported (MEMPORT_EMFILE) and dropped, the ones before and after it arrive whole, in order. */
static void test_channel_receiver_out_of_descriptors_drops_one_oversized_message(void **state) {
  (void)state;
  if (th_under_valgrind())
    skip();
  reset_shared();
  int fds = th_count_fds(), maps = th_count_memport_maps();
  memport_chan_opts_t o;
  small_opts(&o);
  memport_chan_t *a, *b;
  th_assert_ok(memport_chan_pair(&a, &b, &o));
  struct ends e = {a, b};
  pid_t pid = th_fork(emfile_receiver_child, &e, 60);
  memport_chan_close(b);
  static unsigned char big[BIG_MAX];
  th_assert_ok(memport_chan_send(a, "m0", 2, 0, SEC));
  pattern(big, msg_size(1, SZ_BIG), 1);
  th_assert_ok(memport_chan_send(a, big, msg_size(1, SZ_BIG), 0, SEC));
  th_assert_ok(memport_chan_send(a, "m2", 2, 0, SEC));
  pattern(big, msg_size(3, SZ_BIG), 3);
  th_assert_ok(memport_chan_send(a, big, msg_size(3, SZ_BIG), 0, SEC));
  atomic_store(&g_sh->stage, 1);
  memport_chan_close(a);
  assert_int_equal(th_wait(pid, 60), 0);
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

/* A message's handles, or an oversized message's region, that arrive while the receiver has no
 * descriptor free: that message alone is reported (MEMPORT_EMFILE) and dropped, whichever kind
 * it was (both are numbered in one sequence); the others arrive whole, in order. */
static int emfile_handles_child(void *arg) {
  struct ends *e = arg;
  memport_chan_close(e->mine);
  memport_chan_t *c = e->theirs;
  memport_msg_t *hm;
  if (memport_msg_create(&hm) != 0 || !wait_at_least(&g_sh->stage, 1, 20 * SEC))
    return 1;
  memport_buf_t b;
  if (memport_chan_recv_msg(c, &b, hm, SEC) != 0 || b.len != 2 || memport_chan_release(c, &b) != 0)
    return 2;
  int fds = th_count_fds();
  for (int lost = 1; lost <= 3; lost += 2) { /* message 1 (handles), then message 3 (one-off) */
    if (set_nofile(th_limit_with_free_slots(0)) != 0)
      return 3;
    int rc = memport_chan_recv_msg(c, &b, hm, SEC);
    set_nofile(g_nofile0);
    if (rc != MEMPORT_EMFILE || th_count_fds() != fds) {
      fprintf(stderr, "message %d without descriptors: %s, %d fds (was %d)\n", lost, memport_err_name(rc),
              th_count_fds(), fds);
      return 4;
    }
    rc = memport_chan_recv_msg(c, &b, hm, SEC); /* the next one, whole */
    if (rc != 0 || (lost == 1 && (b.len != 2 || memcmp(b.data, "m2", 2) != 0)) ||
        (lost == 3 && (b.len != 4 || memcmp(b.data, "with", 4) != 0 || memport_msg_handle_count(hm) != 2))) {
      fprintf(stderr, "after lost message %d: %s\n", lost, memport_err_name(rc));
      return 5;
    }
    if (lost == 3) {
      memport_region_t *r;
      void *p;
      if (memport_msg_take_region(hm, 1, &r) != 0 || memport_region_map(r, MEMPORT_MAP_READONLY, &p) != 0 ||
          !pattern_ok(p, 4096, 4))
        return 6;
      memport_unmap(p);
      memport_region_close(r);
    }
    memport_chan_release(c, &b);
  }
  int rc = memport_chan_recv_msg(c, &b, hm, SEC);
  if (rc != 0 || b.len != msg_size(5, SZ_BIG) || !pattern_ok(b.data, b.len, 5) || memport_chan_release(c, &b) != 0)
    return 7;
  memport_msg_clear(hm);
  rc = memport_chan_recv_msg(c, &b, hm, 10 * SEC);
  memport_msg_close(hm);
  return rc == MEMPORT_EPEER ? 0 : 8;
}

static void attach_pattern_region(memport_msg_t *hm, uint32_t seed) {
  memport_region_t *r;
  void *p;
  th_assert_ok(memport_region_create(&r, 4096, 0));
  th_assert_ok(memport_region_map(r, 0, &p));
  pattern(p, 4096, seed);
  memport_unmap(p);
  th_assert_ok(memport_msg_attach_region(hm, r, 0));
}

static void test_channel_receiver_out_of_descriptors_drops_one_message_with_handles(void **state) {
  (void)state;
  if (th_under_valgrind())
    skip();
  reset_shared();
  int fds = th_count_fds(), maps = th_count_memport_maps();
  memport_chan_opts_t o;
  small_opts(&o);
  memport_chan_t *a, *b;
  th_assert_ok(memport_chan_pair(&a, &b, &o));
  struct ends e = {a, b};
  pid_t pid = th_fork(emfile_handles_child, &e, 60);
  memport_chan_close(b);
  memport_msg_t *hm;
  th_assert_ok(memport_msg_create(&hm));
  static unsigned char big[BIG_MAX];
  th_assert_ok(memport_chan_send(a, "m0", 2, 0, SEC));
  attach_pattern_region(hm, 1);
  attach_pattern_region(hm, 2);
  th_assert_ok(memport_chan_send_msg(a, "lost", 4, hm, 0, SEC));
  th_assert_ok(memport_chan_send(a, "m2", 2, 0, SEC));
  pattern(big, msg_size(3, SZ_BIG), 3);
  th_assert_ok(memport_chan_send(a, big, msg_size(3, SZ_BIG), 0, SEC));
  attach_pattern_region(hm, 3);
  attach_pattern_region(hm, 4);
  th_assert_ok(memport_chan_send_msg(a, "with", 4, hm, 0, SEC));
  pattern(big, msg_size(5, SZ_BIG), 5);
  th_assert_ok(memport_chan_send(a, big, msg_size(5, SZ_BIG), 0, SEC));
  atomic_store(&g_sh->stage, 1);
  memport_msg_close(hm);
  memport_chan_close(a);
  assert_int_equal(th_wait(pid, 60), 0);
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

/* ------------------------------------------------------------------------------------------ */
/* A full pool.                                                                                 */

static int holder_child(void *arg) {
  struct ends *e = arg;
  memport_chan_close(e->mine); /* the parent's end: only the parent may hold it */
  memport_chan_t *c = e->theirs;
  memport_buf_t held[POOL_N];
  for (unsigned i = 0; i < POOL_N; i++)
    if (memport_chan_recv(c, &held[i], 5 * SEC) != 0)
      return 1;
  atomic_store(&g_sh->stage, 1);
  if (!wait_at_least(&g_sh->go, 1, 20 * SEC))
    return 2;
  if (memport_chan_release(c, &held[0]) != 0)
    return 3;
  if (!wait_at_least(&g_sh->go, 2, 20 * SEC))
    return 4;
  for (unsigned i = 1; i < POOL_N; i++)
    if (memport_chan_release(c, &held[i]) != 0)
      return 5;
  char buf[8];
  size_t len;
  if (memport_chan_recv_copy(c, buf, sizeof buf, &len, 10 * SEC) != 0 || len != 4 || memcmp(buf, "ring", 4) != 0)
    return 6;
  memport_buf_t b;
  int rc = memport_chan_recv(c, &b, 10 * SEC);
  return rc == MEMPORT_EPEER ? 0 : 7;
}

/* Every pool buffer held by the peer: alloc and zero-copy send say EAGAIN at once and ETIMEDOUT
 * after the timeout (not before, not much after); each release makes one buffer available. */
static void test_full_pool_waits_then_times_out_then_recovers(void **state) {
  (void)state;
  reset_shared();
  int fds = th_count_fds(), maps = th_count_memport_maps();
  memport_chan_opts_t o;
  small_opts(&o);
  for (int policy = 0; policy < 3; policy++) {
    o.wait_policy = policy;
    reset_shared();
    memport_chan_t *a, *b;
    th_assert_ok(memport_chan_pair(&a, &b, &o));
    struct ends e = {a, b};
    pid_t pid = th_fork(holder_child, &e, 60);
    memport_chan_close(b);
    for (unsigned i = 0; i < POOL_N; i++)
      th_assert_ok(memport_chan_send(a, "zc", 2, MEMPORT_SEND_ZEROCOPY, SEC));
    assert_true(wait_at_least(&g_sh->stage, 1, 20 * SEC));
    memport_buf_t z;
    th_assert_rc(memport_chan_alloc(a, 10, &z, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
    th_assert_rc(memport_chan_send(a, "zc", 2, MEMPORT_SEND_ZEROCOPY, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
    uint64_t t0 = th_now_ns();
    th_assert_rc(memport_chan_alloc(a, 10, &z, 60 * MS), MEMPORT_ETIMEDOUT);
    uint64_t el = th_now_ns() - t0;
    assert_true(el >= 60 * (uint64_t)MS && el < (uint64_t)SEC);
    t0 = th_now_ns();
    th_assert_rc(memport_chan_send(a, "zc", 2, MEMPORT_SEND_ZEROCOPY, 40 * MS), MEMPORT_ETIMEDOUT);
    el = th_now_ns() - t0;
    assert_true(el >= 40 * (uint64_t)MS && el < (uint64_t)SEC);
    /* Small messages still go through the ring meanwhile. */
    th_assert_ok(memport_chan_send(a, "ring", 4, 0, SEC));
    atomic_store(&g_sh->go, 1);
    t0 = th_now_ns();
    th_assert_ok(memport_chan_alloc(a, 10, &z, 5 * SEC));
    assert_true(th_now_ns() - t0 < (uint64_t)SEC);
    memport_buf_t w;
    th_assert_rc(memport_chan_alloc(a, 10, &w, MEMPORT_NOWAIT), MEMPORT_EAGAIN); /* just the one */
    th_assert_ok(memport_chan_free_buf(a, &z));
    atomic_store(&g_sh->go, 2);
    memport_buf_t all[POOL_N];
    for (unsigned i = 0; i < POOL_N; i++)
      th_assert_ok(memport_chan_alloc(a, POOL_BUF, &all[i], 5 * SEC));
    for (unsigned i = 0; i < POOL_N; i++)
      th_assert_ok(memport_chan_free_buf(a, &all[i]));
    memport_chan_close(a);
    assert_int_equal(th_wait(pid, 30), 0);
  }
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

/* ------------------------------------------------------------------------------------------ */
/* A consumer that does not read.                                                               */

/* Oversized first, then the pool, then the ring (each fills the ring a little more). */
static const int phase_kinds[3] = {SZ_BIG, SZ_POOL, SZ_SMALL};
static const char *const phase_names[3] = {"one-off regions", "pool", "ring"};

static int phase_kind(uint32_t seq) {
  if (seq < atomic_load(&g_sh->bound[1]))
    return phase_kinds[0];
  if (seq < atomic_load(&g_sh->bound[2]))
    return phase_kinds[1];
  return phase_kinds[2];
}

static int late_reader_child(void *arg) {
  struct ends *e = arg;
  memport_chan_close(e->mine);
  memport_chan_t *c = e->theirs;
  if (!wait_at_least(&g_sh->go, 1, 60 * SEC))
    return 1;
  uint32_t total = atomic_load(&g_sh->sent);
  for (uint32_t seq = 0; seq < total; seq++) {
    memport_buf_t b;
    int rc = memport_chan_recv(c, &b, 5 * SEC);
    if (rc != 0) {
      fprintf(stderr, "late reader: message %u of %u: %s\n", seq, total, memport_err_name(rc));
      return 2;
    }
    if (b.len != msg_size(seq, phase_kind(seq)) || !pattern_ok(b.data, b.len, seq)) {
      fprintf(stderr, "late reader: message %u of %u is not the one sent\n", seq, total);
      return 3;
    }
    if (memport_chan_release(c, &b) != 0)
      return 4;
  }
  memport_buf_t b;
  int rc = memport_chan_recv(c, &b, 10 * SEC); /* nothing else: the producer closes */
  return rc == MEMPORT_EPEER ? 0 : 5;
}

static unsigned char g_buf[BIG_MAX];

/* The producer keeps trying for a while against a consumer that reads nothing: through the
 * ring, from the pool, as one-off regions. Each send either completes or reports back-pressure
 * (ETIMEDOUT) and leaves nothing behind; memory and descriptors stay flat; and when the consumer
 * finally reads, it gets exactly the messages whose send completed, in order. */
static void test_consumer_that_never_reads_gives_back_pressure_and_loses_nothing(void **state) {
  (void)state;
  reset_shared();
  int fds = th_count_fds(), maps = th_count_memport_maps();
  memport_chan_opts_t o;
  small_opts(&o);
  memport_chan_t *a, *b;
  th_assert_ok(memport_chan_pair(&a, &b, &o));
  struct ends e = {a, b};
  pid_t pid = th_fork(late_reader_child, &e, 120);
  memport_chan_close(b);
  uint64_t phase_ns = (th_under_valgrind() ? 1500 : 500) * (uint64_t)MS;
  uint32_t seq = 0;
  for (int phase = 0; phase < 3; phase++) {
    for (int k = phase; k < 3; k++)
      atomic_store(&g_sh->bound[k], k == phase ? seq : UINT32_MAX);
    uint32_t first = seq, stalls = 0;
    uint64_t start = th_now_ns(), end = start + phase_ns, hard_end = end + 30 * (uint64_t)SEC;
    size_t rss0 = 0, rss_max = 0;
    int fd_max = 0;
    /* The phase's time, and then until back-pressure was met a few times (a loaded machine may
     * take longer to fill the ring, the pool or the one-off regions in flight). */
    while (th_now_ns() < end || (stalls < 3 && th_now_ns() < hard_end)) {
      int kind = phase_kinds[phase];
      size_t n = msg_size(seq, kind);
      int rc;
      if ((seq & 1) && kind != SZ_SMALL) { /* the zero-copy API (a small alloc would take a pool buffer) */
        memport_buf_t z;
        rc = memport_chan_alloc(a, n, &z, 2 * MS);
        if (rc == 0) {
          pattern(z.data, n, seq);
          rc = memport_chan_send_buf(a, &z, 2 * MS);
          if (rc != 0)
            th_assert_ok(memport_chan_free_buf(a, &z));
        }
      } else {
        pattern(g_buf, n, seq);
        rc = memport_chan_send(a, g_buf, n, 0, 2 * MS);
      }
      if (rc == 0)
        atomic_store(&g_sh->sent, ++seq);
      else if (rc == MEMPORT_ETIMEDOUT)
        stalls++;
      else
        fail_msg("%s: send %u: %s", phase_names[phase], seq, memport_err_name(rc));
      if (th_now_ns() - start > phase_ns / 5) {
        size_t r = rss_bytes();
        if (rss0 == 0)
          rss0 = r; /* after the warm-up */
        rss_max = r > rss_max ? r : rss_max;
        int f = th_count_fds();
        fd_max = f > fd_max ? f : fd_max;
      }
    }
    printf("# %s: %u messages sent before back-pressure, then %u sends timed out; resident memory grew "
           "by %zu KiB while trying, descriptors at most %d (%d before)\n",
           phase_names[phase], seq - first, stalls, rss_max > rss0 ? (rss_max - rss0) >> 10 : 0, fd_max, fds);
    assert_true(stalls > 0);
    assert_true(rss_max <= rss0 + (4u << 20));
    assert_true(fd_max <= fds + 12);
    if (phase_kinds[phase] == SZ_BIG) /* the oversized messages in flight are bounded too */
      assert_true(seq - first <= MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT + 1);
  }
  atomic_store(&g_sh->go, 1); /* read now: every message sent, nothing else */
  memport_chan_close(a);      /* what was sent is still delivered, then MEMPORT_EPEER */
  assert_int_equal(th_wait(pid, 120), 0);
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

/* ------------------------------------------------------------------------------------------ */
/* A flood of control messages.                                                                 */

/* A peer speaking the wire format itself: its own ring and link page (in a HELLO without a pool). */
struct raw_peer {
  memport_port_t *port;
  memport_ring_t *ring;
  struct memport__ring_shared *sh;
  unsigned char *data;
  size_t cap;
  uint64_t prod;
};

static void raw_peer_init(struct raw_peer *rp, memport_port_t *port) {
  memset(rp, 0, sizeof *rp);
  rp->port = port;
  rp->cap = 65536;
  th_assert_ok(memport_ring_create(&rp->ring, rp->cap, 0));
  memport_msg_t *m;
  th_assert_ok(memport_msg_create(&m));
  th_assert_ok(memport_ring_export(rp->ring, m));
  memport_region_t *cr, *dr;
  void *c, *d;
  th_assert_ok(memport_msg_take_region(m, 0, &cr));
  th_assert_ok(memport_msg_take_region(m, 1, &dr));
  th_assert_ok(memport_region_map(cr, 0, &c));
  th_assert_ok(memport_region_map(dr, MEMPORT_MAP_MIRROR, &d));
  memport_region_close(cr);
  memport_region_close(dr);
  /* the HELLO: the same ring, no pool */
  memport_msg_clear(m);
  struct memport__ctl_hello h;
  memset(&h, 0, sizeof h);
  h.hdr.magic = MEMPORT__CTL_MAGIC;
  h.hdr.type = MEMPORT__CTL_HELLO;
  h.version = MEMPORT__CHAN_VERSION;
  h.ring_capacity = rp->cap;
  th_assert_ok(memport_msg_set_bytes(m, &h, sizeof h));
  th_assert_ok(memport_ring_export(rp->ring, m));
  memport_region_t *link; /* its link page: never looked at here */
  th_assert_ok(memport_region_create(&link, sizeof(struct memport__chan_link), 0));
  th_assert_ok(memport_msg_attach_region(m, link, 0));
  th_assert_ok(memport_port_send(rp->port, m, SEC));
  memport_msg_close(m);
  rp->sh = c;
  rp->data = d;
}

static void raw_peer_fini(struct raw_peer *rp) {
  memport_unmap(rp->sh);
  memport_unmap(rp->data);
  memport_ring_close(rp->ring);
  memport_port_close(rp->port);
}

static void raw_record(struct raw_peer *rp, uint32_t type, const void *payload, uint32_t len) {
  struct memport__ring_rec *h = (struct memport__ring_rec *)(rp->data + rp->prod % rp->cap);
  h->len = len;
  h->type = type;
  memcpy(h + 1, payload, len);
  rp->prod += MEMPORT__RING_HDR + ((len + 15u) & ~15u);
  atomic_store(&rp->sh->prod, rp->prod);
}

/* A peer announces oversized messages (each with its region) as fast as the port takes them,
 * ahead of their records: the receiver takes in no more than it may have in flight, the rest
 * waits in the flooder's port (back-pressure), and once the records come every one is delivered. */
static void test_flood_of_oversized_announcements_is_held_back(void **state) {
  (void)state;
  int fds = th_count_fds(), maps = th_count_memport_maps();
  memport_port_t *pa, *pb;
  th_assert_ok(memport_port_pair(&pa, &pb));
  struct raw_peer rp;
  raw_peer_init(&rp, pb);
  memport_chan_opts_t o;
  small_opts(&o);
  memport_chan_t *c;
  th_assert_ok(memport_chan_open(&c, pa, &o, 2 * SEC));
  memport_msg_t *hello;
  th_assert_ok(memport_msg_create(&hello));
  th_assert_ok(memport_port_recv(rp.port, hello, SEC)); /* the victim's HELLO: dropped */
  memport_msg_close(hello);
  memport_region_t *r;
  th_assert_ok(memport_region_create(&r, 4096, 0));
  memport_region_t *ro;
  th_assert_ok(memport_region_readonly(r, &ro));
  memport_msg_t *m;
  th_assert_ok(memport_msg_create(&m));
  int base = th_count_fds(), worst = base;
  uint32_t sent = 0;
  size_t rss0 = rss_bytes(), rss_max = rss0;
  for (unsigned stalls = 0; stalls < 50 && sent < 5000;) {
    struct memport__ctl_blob b = {{MEMPORT__CTL_MAGIC, MEMPORT__CTL_BLOB, 0}, sent, 0, 4096};
    memport_msg_clear(m);
    th_assert_ok(memport_msg_set_bytes(m, &b, sizeof b));
    th_assert_ok(memport_msg_attach_region(m, ro, MEMPORT_ATTACH_COPY));
    int rc = memport_port_send(rp.port, m, MEMPORT_NOWAIT);
    if (rc == 0) {
      sent++;
    } else {
      th_assert_rc(rc, MEMPORT_EAGAIN);
      stalls++;
    }
    if (sent % 16 == 0 || rc != 0) { /* the victim looks at its port meanwhile */
      memport_buf_t buf;
      th_assert_rc(memport_chan_recv(c, &buf, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
      int n = th_count_fds();
      worst = n > worst ? n : worst;
      size_t rs = rss_bytes();
      rss_max = rs > rss_max ? rs : rss_max;
    }
  }
  memport_msg_clear(m);
  printf("# %u oversized messages announced before the flooder's port was full; the receiver held at most "
         "%d descriptors more, its resident memory grew by %zu KiB\n",
         sent, worst - base, (rss_max - rss0) >> 10);
  assert_true(sent > MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT);
  assert_true(worst - base <= (int)MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT + 2);
  assert_true(rss_max - rss0 < (2u << 20));
  /* The records come: every announced message is delivered, in order. */
  uint32_t got = 0;
  for (uint32_t i = 0; i < sent; i++) {
    struct memport__rec_blob d = {i, 0, 4096};
    raw_record(&rp, MEMPORT__REC_BLOB, &d, sizeof d);
    if (rp.prod - atomic_load(&rp.sh->cons) < rp.cap - 64 && i + 1 < sent)
      continue;
    for (; got <= i; got++) {
      memport_buf_t buf;
      int rc = memport_chan_recv(c, &buf, SEC);
      if (rc != 0)
        fail_msg("announced message %u of %u: %s", got, sent, memport_err_name(rc));
      assert_int_equal(buf.len, 4096);
      th_assert_ok(memport_chan_release(c, &buf));
    }
  }
  assert_int_equal(got, sent);
  memport_msg_close(m);
  memport_region_close(ro);
  memport_region_close(r);
  memport_chan_close(c);
  raw_peer_fini(&rp);
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(th_count_memport_maps(), maps);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  g_nofile0 = rl.rlim_cur;
  g_sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (g_sh == MAP_FAILED)
    return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_flood_of_messages_with_the_most_handles),
      cmocka_unit_test(test_too_few_descriptors_for_a_message_gives_emfile_and_the_port_goes_on),
      cmocka_unit_test(test_too_few_descriptors_for_a_channel_gives_emfile_without_leaks),
      cmocka_unit_test(test_channel_receiver_out_of_descriptors_drops_one_oversized_message),
      cmocka_unit_test(test_channel_receiver_out_of_descriptors_drops_one_message_with_handles),
      cmocka_unit_test(test_full_pool_waits_then_times_out_then_recovers),
      cmocka_unit_test(test_consumer_that_never_reads_gives_back_pressure_and_loses_nothing),
      cmocka_unit_test(test_flood_of_oversized_announcements_is_held_back),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
