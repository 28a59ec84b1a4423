/* SPDX-License-Identifier: MIT */
/* test_bridge_idle.c: an idle bridge sleeps: its wait (memport_bridge_pollfds + poll) does not return again and again with nothing to do once a link is up and a message went through. */
#include "helpers.h"

#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "memport_bridge.h"

#define IDLE_MS 500
#define MAX_IDLE_WAKEUPS 50 /* nothing happens in the window: a sleeping loop wakes a few times at most */

struct shared {
  char endpoint[256];
  _Atomic int phase;              /* 0 link up, 1 idle window, 2 stop */
  _Atomic int ready[2];           /* export bound, import created */
  _Atomic unsigned long wakeups[2]; /* waits that returned during the idle window */
  char err[2][200];
};

static struct shared *sh;
static const char *src_name, *dst_name;


/* A bridge driven by its own loop, as an application embedding one does: counts the waits that
 * returned (descriptor ready or timeout) while the test says nothing happens. */
static int bridge_child(void *arg) {
  int side = *(int *)arg; /* 0 export, 1 import */
  memport_bridge_opts_t o;
  memport_bridge_opts_init(&o);
  o.direction = side == 0 ? MEMPORT_BRIDGE_EXPORT : MEMPORT_BRIDGE_IMPORT;
  o.kind = MEMPORT_BRIDGE_TOPIC;
  o.name = side == 0 ? src_name : dst_name;
  o.endpoint = side == 0 ? "tcp://127.0.0.1:*" : sh->endpoint;
  o.topic.buffer_size = 8192;
  memport_bridge_t *b = NULL;
  int rc = memport_bridge_create(&b, &o);
  if (rc == 0 && side == 0) rc = memport_bridge_endpoint(b, sh->endpoint, sizeof sh->endpoint);
  if (rc < 0) {
    snprintf(sh->err[side], sizeof sh->err[side], "create: %s", memport_strerror(rc));
    return 1;
  }
  atomic_store(&sh->ready[side], 1);
  uint64_t deadline = th_now_ns() + 50ull * 1000000000ull;
  while (atomic_load(&sh->phase) != 2) {
    if ((rc = memport_bridge_process(b)) < 0) {
      snprintf(sh->err[side], sizeof sh->err[side], "process: %s", memport_strerror(rc));
      return 1;
    }
    struct pollfd fds[MEMPORT_BRIDGE_MAX_FDS];
    int64_t t;
    int n = memport_bridge_pollfds(b, fds, MEMPORT_BRIDGE_MAX_FDS, &t);
    if (n < 0) return 1;
    int ms = t < 0 || t > 20000000 ? 20 : (int)((t + 999999) / 1000000); /* look at the phase often */
    bool idle = atomic_load(&sh->phase) == 1;
    int r = poll(fds, (nfds_t)n, ms);
    if (idle && r > 0) atomic_fetch_add(&sh->wakeups[side], 1);
    if (th_now_ns() > deadline) {
      snprintf(sh->err[side], sizeof sh->err[side], "never told to stop");
      return 1;
    }
  }
  memport_bridge_close(b);
  return 0;
}

static void wait_flag(_Atomic int *flag, pid_t pid) {
  uint64_t deadline = th_now_ns() + 20ull * 1000000000ull;
  int st;
  while (!atomic_load(flag)) {
    assert_false(th_exited(pid, &st));
    assert_true(th_now_ns() < deadline);
    th_sleep_ms(1);
  }
}

static void run_case(void) {
  sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  assert_true(sh != MAP_FAILED);
  memset(sh, 0, sizeof *sh);
  char s1[64], s2[64];
  snprintf(s1, sizeof s1, "%s", th_unique_name("bidle-src"));
  snprintf(s2, sizeof s2, "%s", th_unique_name("bidle-dst"));
  src_name = s1;
  dst_name = s2;
  memport_topic_opts_t o;
  memport_topic_opts_init(&o);
  o.buffer_size = 8192;
  memport_pub_t *pub;
  th_assert_ok(memport_pub_create(&pub, src_name, &o));
  static int sides[2] = {0, 1};
  pid_t exp = th_fork(bridge_child, &sides[0], 60);
  wait_flag(&sh->ready[0], exp);
  pid_t imp = th_fork(bridge_child, &sides[1], 60);
  wait_flag(&sh->ready[1], imp);
  /* the export subscribes to the source; a subscriber to the imported topic; one message through */
  uint64_t deadline = th_now_ns() + 20ull * 1000000000ull;
  int st;
  while (memport_pub_subscribers(pub) < 1) {
    assert_true(memport_pub_process(pub) >= 0);
    assert_false(th_exited(exp, &st));
    assert_true(th_now_ns() < deadline);
    th_sleep_ms(1);
  }
  memport_sub_t *sub = NULL;
  while (memport_sub_connect(&sub, dst_name, NULL, 100000000) != 0) {
    assert_false(th_exited(imp, &st));
    assert_true(th_now_ns() < deadline);
    th_sleep_ms(5);
  }
  static const char msg[] = "one message";
  th_assert_ok(memport_pub_send(pub, msg, sizeof msg, 10ll * 1000000000));
  memport_buf_t b;
  th_assert_ok(memport_sub_recv(sub, &b, 20ll * 1000000000));
  assert_int_equal(b.len, sizeof msg);
  assert_memory_equal(b.data, msg, sizeof msg);
  th_assert_ok(memport_sub_release(sub, &b));
  /* now nothing happens: both loops should sleep */
  th_sleep_ms(100);
  atomic_store(&sh->phase, 1);
  th_sleep_ms(IDLE_MS);
  atomic_store(&sh->phase, 2);
  int rc0 = th_wait(exp, 30), rc1 = th_wait(imp, 30);
  if (sh->err[0][0] || sh->err[1][0]) fprintf(stderr, "export: %s; import: %s\n", sh->err[0], sh->err[1]);
  assert_int_equal(rc0, 0);
  assert_int_equal(rc1, 0);
  fprintf(stderr, "wake-ups in %d ms of idleness: export %lu, import %lu\n", IDLE_MS, atomic_load(&sh->wakeups[0]),
          atomic_load(&sh->wakeups[1]));
  assert_true(atomic_load(&sh->wakeups[0]) < MAX_IDLE_WAKEUPS);
  assert_true(atomic_load(&sh->wakeups[1]) < MAX_IDLE_WAKEUPS);
  memport_sub_close(sub);
  memport_pub_close(pub);
  munmap(sh, sizeof *sh);
}

static void test_idle_bridges_sleep(void **state) {
  (void)state;
  run_case();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_idle_bridges_sleep),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
