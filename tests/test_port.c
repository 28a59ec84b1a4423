/* SPDX-License-Identifier: MIT */
/* test_port.c: messages and port pairs: bytes, 64 mixed handles moved and copied, credentials, peer death, hostile records. */
#include "config.h"

#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>


static int send_text(memport_port_t *p, const char *text) {
  memport_msg_t *m;
  int rc = memport_msg_create(&m);
  if (rc != 0)
    return rc;
  rc = memport_msg_set_bytes(m, text, strlen(text));
  if (rc == 0)
    rc = memport_port_send(p, m, 10000 * MS);
  memport_msg_close(m);
  return rc;
}

/* Receive a message and compare its bytes with `text`: 0, a memport error, or 1 on mismatch. */
static int recv_text(memport_port_t *p, const char *text) {
  memport_msg_t *m;
  int rc = memport_msg_create(&m);
  if (rc != 0)
    return rc;
  rc = memport_port_recv(p, m, 10000 * MS);
  if (rc == 0) {
    size_t len;
    const void *b = memport_msg_bytes(m, &len);
    if (len != strlen(text) || memcmp(b, text, len) != 0)
      rc = 1;
  }
  memport_msg_close(m);
  return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Messages.                                                                                    */

static void test_msg_rejects_bad_arguments(void **state) {
  (void)state;
  memport_msg_t *m;
  char buf[8] = "abc";
  th_assert_rc(memport_msg_create(NULL), MEMPORT_EINVAL);
  th_assert_ok(memport_msg_close(NULL));
  th_assert_rc(memport_msg_clear(NULL), MEMPORT_EINVAL);
  th_assert_ok(memport_msg_create(&m));
  th_assert_rc(memport_msg_set_bytes(NULL, buf, 1), MEMPORT_EINVAL);
  th_assert_rc(memport_msg_set_bytes(m, NULL, 1), MEMPORT_EINVAL);
  th_assert_ok(memport_msg_set_bytes(m, NULL, 0));
  size_t len = 99;
  assert_null(memport_msg_bytes(NULL, &len));
  assert_int_equal(len, 0);
  th_assert_rc(memport_msg_handle_count(NULL), MEMPORT_EINVAL);
  assert_true(memport_msg_handle_kind(m, 0) < 0);
  assert_true(memport_msg_handle_kind(NULL, 0) < 0);
  memport_region_t *r = NULL;
  th_assert_rc(memport_msg_take_region(m, 0, &r), MEMPORT_EINVAL);
  th_assert_rc(memport_msg_attach_region(m, NULL, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_msg_attach_sem(m, NULL, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_msg_attach_port(m, NULL, 0), MEMPORT_EINVAL);
  memport_cred_t cred;
  th_assert_rc(memport_msg_sender(m, &cred), MEMPORT_ENOENT); /* not a received message */
  th_assert_rc(memport_msg_sender(m, NULL), MEMPORT_EINVAL);
  memport_msg_close(m);
}

static void test_msg_set_bytes_copies_up_to_the_limit(void **state) {
  (void)state;
  memport_msg_t *m;
  th_assert_ok(memport_msg_create(&m));
  unsigned char *big = malloc(MEMPORT_MSG_MAX_BYTES + 1);
  assert_non_null(big);
  for (size_t i = 0; i <= MEMPORT_MSG_MAX_BYTES; i++)
    big[i] = (unsigned char)(i * 7);
  th_assert_ok(memport_msg_set_bytes(m, big, MEMPORT_MSG_MAX_BYTES));
  th_assert_rc(memport_msg_set_bytes(m, big, MEMPORT_MSG_MAX_BYTES + 1), MEMPORT_EMSGSIZE);
  size_t len;
  const unsigned char *b = memport_msg_bytes(m, &len);
  assert_int_equal(len, MEMPORT_MSG_MAX_BYTES); /* the failed call changed nothing */
  big[0] ^= 0xff;                               /* a copy, not a reference */
  assert_int_equal(b[0], 0);
  assert_memory_equal(b + 1, big + 1, MEMPORT_MSG_MAX_BYTES - 1);
  /* Bytes taken from the message itself. */
  th_assert_ok(memport_msg_set_bytes(m, b + 10, 100));
  b = memport_msg_bytes(m, &len);
  assert_int_equal(len, 100);
  assert_memory_equal(b, big + 10, 100);
  free(big);
  memport_msg_close(m);
}

static void test_msg_moved_handle_belongs_to_the_message_even_on_error(void **state) {
  (void)state;
  int fds0 = th_count_fds();
  memport_msg_t *m;
  memport_region_t *r;
  memport_sem_t *s;
  th_assert_ok(memport_msg_create(&m));
  th_assert_ok(memport_region_create(&r, 4096, 0));
  th_assert_rc(memport_msg_attach_region(m, r, 1u << 7), MEMPORT_EINVAL); /* unknown flag: closed */
  th_assert_ok(memport_sem_create(&s, 0, 0));
  th_assert_rc(memport_msg_attach_sem(NULL, s, 0), MEMPORT_EINVAL); /* no message: closed */
  assert_int_equal(th_count_fds(), fds0);
  /* Moving the same handle in twice is refused; the message keeps the one it has. */
  th_assert_ok(memport_sem_create(&s, 0, 0));
  th_assert_ok(memport_msg_attach_sem(m, s, 0));
  th_assert_rc(memport_msg_attach_sem(m, s, 0), MEMPORT_EINVAL);
  assert_int_equal(memport_msg_handle_count(m), 1);
  th_assert_ok(memport_msg_clear(m));
  assert_int_equal(th_count_fds(), fds0);
  /* A copy stays the caller's when the attach fails. */
  th_assert_ok(memport_sem_create(&s, 0, 0));
  th_assert_rc(memport_msg_attach_sem(NULL, s, MEMPORT_ATTACH_COPY), MEMPORT_EINVAL);
  th_assert_ok(memport_sem_signal(s));
  memport_sem_close(s);
  memport_msg_close(m);
  assert_int_equal(th_count_fds(), fds0);
}

static void test_msg_holds_64_handles_and_closes_a_moved_65th(void **state) {
  (void)state;
  int fds0 = th_count_fds();
  int maps0 = th_count_maps();
  memport_msg_t *m;
  th_assert_ok(memport_msg_create(&m));
  for (unsigned i = 0; i < MEMPORT_MSG_MAX_HANDLES; i++) {
    memport_sem_t *s;
    th_assert_ok(memport_sem_create(&s, i, 0));
    th_assert_ok(memport_msg_attach_sem(m, s, 0));
  }
  assert_int_equal(memport_msg_handle_count(m), MEMPORT_MSG_MAX_HANDLES);
  int fds64 = th_count_fds();
  memport_sem_t *extra;
  th_assert_ok(memport_sem_create(&extra, 0, 0));
  th_assert_rc(memport_msg_attach_sem(m, extra, MEMPORT_ATTACH_COPY), MEMPORT_ENOSPC);
  th_assert_ok(memport_sem_signal(extra)); /* still ours */
  th_assert_rc(memport_msg_attach_sem(m, extra, 0), MEMPORT_ENOSPC);
  assert_int_equal(th_count_fds(), fds64); /* the moved one was closed */
  assert_int_equal(memport_msg_handle_count(m), MEMPORT_MSG_MAX_HANDLES);

  /* Take one: its slot stays, with kind 0; the wrong kind or a second take is EBADF. */
  memport_sem_t *s5;
  memport_region_t *r;
  th_assert_rc(memport_msg_take_region(m, 5, &r), MEMPORT_EBADF);
  th_assert_ok(memport_msg_take_sem(m, 5, &s5));
  th_assert_rc(memport_msg_take_sem(m, 5, &s5), MEMPORT_EBADF);
  th_assert_rc(memport_msg_take_sem(m, 6, NULL), MEMPORT_EINVAL);
  th_assert_rc(memport_msg_take_sem(m, MEMPORT_MSG_MAX_HANDLES, &s5), MEMPORT_EINVAL);
  assert_int_equal(memport_msg_handle_kind(m, 6), MEMPORT_HANDLE_SEM); /* a refused take leaves it */
  assert_int_equal(memport_msg_handle_kind(m, 5), 0);
  assert_int_equal(memport_msg_handle_kind(m, 6), MEMPORT_HANDLE_SEM);
  for (int i = 0; i < 5; i++)
    th_assert_ok(memport_sem_trywait(s5));
  th_assert_rc(memport_sem_trywait(s5), MEMPORT_EAGAIN);

  /* clear closes every handle left and keeps the message usable. */
  th_assert_ok(memport_msg_clear(m));
  assert_int_equal(memport_msg_handle_count(m), 0);
  memport_sem_close(s5);
  assert_int_equal(th_count_fds(), fds0);
  if (!th_under_valgrind())
    assert_int_equal(th_count_maps(), maps0);
  th_assert_ok(memport_sem_create(&extra, 0, 0));
  th_assert_ok(memport_msg_attach_sem(m, extra, 0));
  memport_msg_close(m); /* close closes un-taken handles */
  assert_int_equal(th_count_fds(), fds0);
  if (!th_under_valgrind())
    assert_int_equal(th_count_maps(), maps0);
}

/* ------------------------------------------------------------------------------------------ */
/* Port pairs.                                                                                  */

static void test_port_rejects_bad_arguments(void **state) {
  (void)state;
  memport_port_t *a, *b;
  memport_msg_t *m;
  memport_cred_t c;
  memport_os_handle_t h;
  th_assert_rc(memport_port_pair(NULL, &b), MEMPORT_EINVAL);
  th_assert_rc(memport_port_pair(&a, NULL), MEMPORT_EINVAL);
  th_assert_ok(memport_port_close(NULL));
  th_assert_ok(memport_port_pair(&a, &b));
  th_assert_ok(memport_msg_create(&m));
  th_assert_rc(memport_port_send(NULL, m, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_port_send(a, NULL, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_port_recv(NULL, m, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_port_recv(a, NULL, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_port_peer(NULL, &c), MEMPORT_EINVAL);
  th_assert_rc(memport_port_peer(a, NULL), MEMPORT_EINVAL);
  th_assert_rc(memport_port_pollable(NULL, &h), MEMPORT_EINVAL);
  th_assert_rc(memport_port_pollable(a, NULL), MEMPORT_EINVAL);
  memport_msg_close(m);
  memport_port_close(a);
  memport_port_close(b);
}

static int child_echoes(void *arg) {
  memport_port_t *p = arg;
  memport_msg_t *m;
  if (memport_msg_create(&m) != 0)
    return 1;
  for (int i = 0; i < 100; i++) {
    if (memport_port_recv(p, m, 10000 * MS) != 0)
      return 2;
    memport_cred_t c;
    if (memport_msg_sender(m, &c) != 0 || c.pid != getppid())
      return 3;
    size_t len;
    unsigned char *b = (unsigned char *)memport_msg_bytes(m, &len);
    for (size_t j = 0; j < len; j++)
      b[j] ^= 0x5a;
    if (memport_msg_set_bytes(m, b, len) != 0 || memport_port_send(p, m, 10000 * MS) != 0)
      return 4;
  }
  memport_msg_close(m);
  return 0;
}

static void test_port_pair_carries_bytes_both_ways_across_fork(void **state) {
  (void)state;
  memport_port_t *a, *b;
  th_assert_ok(memport_port_pair(&a, &b));
  memport_cred_t c;
  th_assert_ok(memport_port_peer(a, &c));
  assert_int_equal(c.pid, getpid()); /* a pair: the peer is whoever made it */
  assert_int_equal(c.uid, getuid());
  assert_int_equal(c.gid, getgid());
  pid_t pid = th_fork(child_echoes, b, 30);
  memport_port_close(b);
  memport_msg_t *m;
  th_assert_ok(memport_msg_create(&m));
  unsigned char buf[300];
  for (int i = 0; i < 100; i++) {
    size_t len = (size_t)(i * 3); /* 0 bytes included */
    for (size_t j = 0; j < len; j++)
      buf[j] = (unsigned char)(i + j);
    th_assert_ok(memport_msg_set_bytes(m, buf, len));
    th_assert_ok(memport_port_send(a, m, 10000 * MS));
    th_assert_ok(memport_port_recv(a, m, 10000 * MS));
    size_t got;
    const unsigned char *b2 = memport_msg_bytes(m, &got);
    assert_int_equal(got, len);
    for (size_t j = 0; j < len; j++)
      assert_int_equal(b2[j], (unsigned char)((i + j) ^ 0x5a));
    th_assert_ok(memport_msg_sender(m, &c));
    assert_int_equal(c.pid, pid);
  }
  assert_int_equal(th_wait(pid, 30), 0);
  memport_msg_close(m);
  memport_port_close(a);
}

static void test_port_carries_the_largest_message_and_an_empty_one(void **state) {
  (void)state;
  memport_port_t *a, *b;
  th_assert_ok(memport_port_pair(&a, &b));
  memport_msg_t *m, *r;
  th_assert_ok(memport_msg_create(&m));
  th_assert_ok(memport_msg_create(&r));
  unsigned char *big = malloc(MEMPORT_MSG_MAX_BYTES);
  assert_non_null(big);
  for (size_t i = 0; i < MEMPORT_MSG_MAX_BYTES; i++)
    big[i] = (unsigned char)(i * 13 + (i >> 8));
  th_assert_ok(memport_msg_set_bytes(m, big, MEMPORT_MSG_MAX_BYTES));
  for (int i = 0; i < 3; i++) /* several in flight */
    th_assert_ok(memport_port_send(a, m, 10000 * MS));
  for (int i = 0; i < 3; i++) {
    th_assert_ok(memport_port_recv(b, r, 10000 * MS));
    size_t len;
    const void *got = memport_msg_bytes(r, &len);
    assert_int_equal(len, MEMPORT_MSG_MAX_BYTES);
    assert_memory_equal(got, big, MEMPORT_MSG_MAX_BYTES);
  }
  th_assert_rc(memport_msg_set_bytes(m, big, MEMPORT_MSG_MAX_BYTES + 1u), MEMPORT_EMSGSIZE);
  th_assert_ok(memport_msg_clear(m));
  th_assert_ok(memport_port_send(a, m, 10000 * MS));
  th_assert_ok(memport_port_recv(b, r, 10000 * MS));
  size_t len = 1;
  memport_msg_bytes(r, &len);
  assert_int_equal(len, 0);
  assert_int_equal(memport_msg_handle_count(r), 0);
  free(big);
  memport_msg_close(m);
  memport_msg_close(r);
  memport_port_close(a);
  memport_port_close(b);
}

/* ---- 64 handles of every kind ---- */

#define NH MEMPORT_MSG_MAX_HANDLES
enum { K_RW, K_RO, K_SEM, K_PORT };
static int kind_of(unsigned i) { return (int)(i % 4); }
static bool copied(unsigned i) { return (i / 4) % 2 == 1; }

struct mixed {
  memport_port_t *port;
};

static int child_uses_mixed_handles(void *arg) {
  struct mixed *mx = arg;
  memport_msg_t *m;
  if (memport_msg_create(&m) != 0)
    return 1;
  int rc = memport_port_recv(mx->port, m, 10000 * MS);
  if (rc != 0) {
    fprintf(stderr, "child: recv: %s\n", memport_err_name(rc));
    return 1;
  }
  if (memport_msg_handle_count(m) != (int)NH)
    return 2;
  for (unsigned i = 0; i < NH; i++) {
    int k = kind_of(i);
    int want = k == K_SEM ? MEMPORT_HANDLE_SEM : k == K_PORT ? MEMPORT_HANDLE_PORT : MEMPORT_HANDLE_REGION;
    if (memport_msg_handle_kind(m, i) != want)
      return 3;
    if (k == K_RW || k == K_RO) {
      memport_region_t *r;
      void *addr;
      if (memport_msg_take_region(m, i, &r) != 0)
        return 4;
      if (memport_region_is_readonly(r) != (k == K_RO))
        return 5;
      if (k == K_RO) {
        if (memport_region_map(r, 0, &addr) != MEMPORT_EACCES)
          return 6;
        if (memport_region_map(r, MEMPORT_MAP_READONLY, &addr) != 0)
          return 7;
        if (((volatile unsigned *)addr)[0] != 0xab000000u + i)
          return 8;
      } else {
        if (memport_region_map(r, 0, &addr) != 0)
          return 9;
        if (((volatile unsigned *)addr)[0] != 0xab000000u + i)
          return 10;
        ((volatile unsigned *)addr)[0] = 0xcd000000u + i;
      }
      memport_unmap(addr);
      memport_region_close(r);
    } else if (k == K_SEM) {
      memport_sem_t *s;
      if (memport_msg_take_sem(m, i, &s) != 0 || memport_sem_signal(s) != 0)
        return 11;
      memport_sem_close(s);
    } else {
      memport_port_t *p;
      char text[16];
      snprintf(text, sizeof text, "port %u", i);
      if (memport_msg_take_port(m, i, &p) != 0 || send_text(p, text) != 0)
        return 12;
      memport_port_close(p);
    }
  }
  memport_msg_close(m);
  return 0;
}

static void test_port_moves_and_copies_64_handles_of_every_kind(void **state) {
  (void)state;
  struct mixed mx;
  memport_port_t *b;
  th_assert_ok(memport_port_pair(&mx.port, &b));
  void *maps[NH] = {0};
  memport_sem_t *sems[NH] = {0};
  memport_port_t *ends[NH] = {0};
  memport_msg_t *m;
  th_assert_ok(memport_msg_create(&m));
  int fds_before_handles = th_count_fds();
  int moved = 0;
  for (unsigned i = 0; i < NH; i++) {
    unsigned flags = copied(i) ? MEMPORT_ATTACH_COPY : 0;
    switch (kind_of(i)) {
    case K_RW:
    case K_RO: {
      memport_region_t *r, *h;
      th_assert_ok(memport_region_create(&r, 4096, 0));
      th_assert_ok(memport_region_map(r, 0, &maps[i]));
      ((unsigned *)maps[i])[0] = 0xab000000u + i;
      if (kind_of(i) == K_RO) {
        th_assert_ok(memport_region_dup(r, MEMPORT_DUP_READONLY, &h));
        memport_region_close(r);
      } else {
        h = r;
      }
      th_assert_ok(memport_msg_attach_region(m, h, flags));
      if (copied(i))
        memport_region_close(h); /* the message holds its own copy */
      break;
    }
    case K_SEM: {
      memport_sem_t *s;
      th_assert_ok(memport_sem_create(&s, 0, 0));
      if (copied(i)) {
        sems[i] = s;
      } else {
        th_assert_ok(memport_sem_dup(s, &sems[i]));
        moved++;
      }
      th_assert_ok(memport_msg_attach_sem(m, s, flags));
      break;
    }
    default: {
      memport_port_t *x;
      th_assert_ok(memport_port_pair(&x, &ends[i]));
      th_assert_ok(memport_msg_attach_port(m, x, flags));
      if (copied(i))
        memport_port_close(x);
      break;
    }
    }
  }
  (void)moved;
  assert_int_equal(memport_msg_handle_count(m), NH);
  int fds_attached = th_count_fds();
  /* Every slot holds exactly one descriptor of the message's own. */
  assert_int_equal(fds_attached - fds_before_handles, NH + NH / 4 /* sems we kept */ + NH / 4 /* port ends */);
  struct mixed child = {b};
  pid_t pid = th_fork(child_uses_mixed_handles, &child, 30);
  memport_port_close(b);
  th_assert_ok(memport_port_send(mx.port, m, 10000 * MS));
  /* Sent: the message's handles are closed here (the child has its own), the bytes are kept. */
  assert_int_equal(memport_msg_handle_count(m), 0);
  assert_int_equal(th_count_fds(), fds_attached - (int)NH - 1 /* b */);
  assert_int_equal(th_wait(pid, 30), 0);
  for (unsigned i = 0; i < NH; i++) {
    switch (kind_of(i)) {
    case K_RW:
      assert_int_equal(((unsigned *)maps[i])[0], 0xcd000000u + i);
      th_assert_ok(memport_unmap(maps[i]));
      break;
    case K_RO:
      assert_int_equal(((unsigned *)maps[i])[0], 0xab000000u + i);
      th_assert_ok(memport_unmap(maps[i]));
      break;
    case K_SEM:
      th_assert_ok(memport_sem_trywait(sems[i]));
      memport_sem_close(sems[i]);
      break;
    default: {
      char text[16];
      snprintf(text, sizeof text, "port %u", i);
      th_assert_ok(recv_text(ends[i], text));
      memport_port_close(ends[i]);
      break;
    }
    }
  }
  memport_msg_close(m);
  memport_port_close(mx.port);
  assert_int_equal(th_count_fds(), fds_before_handles - 2 /* both ends of the pair */);
}

static void test_port_send_skips_taken_slots(void **state) {
  (void)state;
  memport_port_t *a, *b;
  th_assert_ok(memport_port_pair(&a, &b));
  memport_msg_t *m;
  th_assert_ok(memport_msg_create(&m));
  memport_sem_t *s0, *s1, *kept;
  th_assert_ok(memport_sem_create(&s0, 0, 0));
  th_assert_ok(memport_sem_create(&s1, 7, 0));
  th_assert_ok(memport_msg_attach_sem(m, s0, 0));
  th_assert_ok(memport_msg_attach_sem(m, s1, 0));
  th_assert_ok(memport_msg_take_sem(m, 0, &kept));
  th_assert_ok(memport_port_send(a, m, 1000 * MS));
  th_assert_ok(memport_port_recv(b, m, 1000 * MS));
  assert_int_equal(memport_msg_handle_count(m), 1);
  memport_sem_t *got;
  th_assert_ok(memport_msg_take_sem(m, 0, &got));
  for (int i = 0; i < 7; i++)
    th_assert_ok(memport_sem_trywait(got));
  th_assert_rc(memport_sem_trywait(got), MEMPORT_EAGAIN);
  memport_sem_close(got);
  memport_sem_close(kept);
  memport_msg_close(m);
  memport_port_close(a);
  memport_port_close(b);
}

static void test_port_refuses_to_send_a_region_that_can_shrink(void **state) {
  (void)state;
  memport_port_t *a, *b;
  th_assert_ok(memport_port_pair(&a, &b));
  int fd = memfd_create("unsealed", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  assert_true(fd >= 0);
  assert_int_equal(ftruncate(fd, 4096), 0);
  memport_region_t *r;
  th_assert_ok(memport_region_adopt(&r, fd, 0, 0));
  memport_msg_t *m;
  th_assert_ok(memport_msg_create(&m));
  th_assert_ok(memport_msg_attach_region(m, r, 0));
  int fds = th_count_fds();
  th_assert_rc(memport_port_send(a, m, 0), MEMPORT_ENOTSUP);
  assert_int_equal(memport_msg_handle_count(m), 1); /* unchanged */
  assert_int_equal(th_count_fds(), fds);
  th_assert_rc(memport_port_recv(b, m, 0), MEMPORT_EAGAIN); /* nothing was sent */
  memport_msg_close(m);
  memport_port_close(a);
  memport_port_close(b);
}

static void test_port_whose_peer_is_gone_is_delivered_and_reports_epeer(void **state) {
  (void)state;
  memport_port_t *a, *b, *x, *y;
  th_assert_ok(memport_port_pair(&a, &b));
  th_assert_ok(memport_port_pair(&x, &y));
  memport_port_close(y);
  memport_msg_t *m;
  th_assert_ok(memport_msg_create(&m));
  th_assert_ok(memport_msg_attach_port(m, x, 0));
  th_assert_ok(memport_port_send(a, m, 1000 * MS));
  th_assert_ok(memport_port_recv(b, m, 1000 * MS));
  memport_port_t *got;
  th_assert_ok(memport_msg_take_port(m, 0, &got));
  memport_cred_t c;
  th_assert_ok(memport_port_peer(got, &c));
  assert_int_equal(c.pid, getpid());
  th_assert_rc(memport_port_recv(got, m, 1000 * MS), MEMPORT_EPEER);
  th_assert_rc(memport_port_send(got, m, 1000 * MS), MEMPORT_EPEER);
  memport_port_close(got);
  memport_msg_close(m);
  memport_port_close(a);
  memport_port_close(b);
}

/* ---- credentials ---- */

static int child_sends_its_pid(void *arg) {
  char text[32];
  snprintf(text, sizeof text, "%ld", (long)getpid());
  return send_text(arg, text) == 0 ? 0 : 1;
}

static void test_port_every_message_names_the_process_that_sent_it(void **state) {
  (void)state;
  memport_port_t *a, *b;
  th_assert_ok(memport_port_pair(&a, &b));
  pid_t p1 = th_fork(child_sends_its_pid, b, 20);
  assert_int_equal(th_wait(p1, 20), 0);
  pid_t p2 = th_fork(child_sends_its_pid, b, 20);
  assert_int_equal(th_wait(p2, 20), 0);
  th_assert_ok(send_text(b, "parent"));
  memport_msg_t *m;
  th_assert_ok(memport_msg_create(&m));
  pid_t expect[3] = {p1, p2, getpid()};
  for (int i = 0; i < 3; i++) {
    th_assert_ok(memport_port_recv(a, m, 1000 * MS));
    memport_cred_t c;
    th_assert_ok(memport_msg_sender(m, &c));
    assert_int_equal(c.pid, expect[i]);
    assert_int_equal(c.uid, getuid());
    assert_int_equal(c.gid, getgid());
    if (i < 2) {
      char text[32];
      size_t len;
      const void *bytes = memport_msg_bytes(m, &len);
      snprintf(text, sizeof text, "%ld", (long)expect[i]);
      assert_int_equal(len, strlen(text));
      assert_memory_equal(bytes, text, len);
    }
  }
  /* The connection's peer stays the process that made the pair. */
  memport_cred_t peer;
  th_assert_ok(memport_port_peer(a, &peer));
  assert_int_equal(peer.pid, getpid());
  memport_msg_close(m);
  memport_port_close(a);
  memport_port_close(b);
}

/* ---- the peer goes away ---- */

static int child_sends_three_and_exits(void *arg) {
  for (int i = 0; i < 3; i++) {
    char text[8];
    snprintf(text, sizeof text, "m%d", i);
    if (send_text(arg, text) != 0)
      return 1;
  }
  return 0;
}

static void test_port_peer_close_gives_epeer_after_queued_messages(void **state) {
  (void)state;
  struct sigaction dfl, old;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL; /* SIGPIPE would kill this process */
  sigaction(SIGPIPE, &dfl, &old);
  memport_port_t *a, *b;
  th_assert_ok(memport_port_pair(&a, &b));
  pid_t pid = th_fork(child_sends_three_and_exits, b, 20);
  memport_port_close(b);
  assert_int_equal(th_wait(pid, 20), 0);
  th_assert_ok(recv_text(a, "m0"));
  th_assert_ok(recv_text(a, "m1"));
  th_assert_ok(recv_text(a, "m2"));
  memport_msg_t *m;
  th_assert_ok(memport_msg_create(&m));
  th_assert_rc(memport_port_recv(a, m, 1000 * MS), MEMPORT_EPEER);
  th_assert_rc(memport_port_recv(a, m, MEMPORT_FOREVER), MEMPORT_EPEER);
  th_assert_rc(memport_port_send(a, m, 1000 * MS), MEMPORT_EPEER);
  th_assert_rc(memport_port_send(a, m, MEMPORT_NOWAIT), MEMPORT_EPEER);
  memport_msg_close(m);
  memport_port_close(a);
  sigaction(SIGPIPE, &old, NULL);
}

/* memport_port_pair(3): the parent keeps a, the child keeps b, each closes the other. */
struct two_ports {
  memport_port_t *a, *b;
};

static int child_keeps_b_until_epeer(void *arg) {
  struct two_ports *t = arg;
  memport_port_close(t->a); /* the parent's end: the parent's own close must then end the pair */
  if (recv_text(t->b, "ping") != 0)
    return 1;
  if (send_text(t->b, "pong") != 0)
    return 2;
  memport_msg_t *m;
  if (memport_msg_create(&m) != 0)
    return 3;
  /* the parent closes a once it has "pong": both directions then give EPEER */
  int rc = memport_port_recv(t->b, m, 10000 * MS);
  int rs = memport_port_send(t->b, m, 1000 * MS);
  memport_msg_close(m);
  memport_port_close(t->b);
  if (rc != MEMPORT_EPEER)
    return 4;
  return rs == MEMPORT_EPEER ? 0 : 5;
}

static void test_port_pair_each_side_closing_the_other_across_fork_ends_in_epeer(void **state) {
  (void)state;
  struct sigaction dfl, old;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL; /* SIGPIPE would kill the child */
  sigaction(SIGPIPE, &dfl, &old);
  struct two_ports t;
  th_assert_ok(memport_port_pair(&t.a, &t.b));
  pid_t pid = th_fork(child_keeps_b_until_epeer, &t, 30);
  memport_port_close(t.b);
  th_assert_ok(send_text(t.a, "ping"));
  th_assert_ok(recv_text(t.a, "pong"));
  memport_port_close(t.a);
  assert_int_equal(th_wait(pid, 30), 0);
  sigaction(SIGPIPE, &old, NULL);
}

static int child_dies_later(void *arg) {
  (void)arg;
  th_sleep_ms(100);
  raise(SIGKILL);
  return 1;
}

static int child_dies_with_unread_messages(void *arg) {
  memport_port_t *p = arg;
  if (send_text(p, "last words") != 0)
    return 1;
  /* Die with the parent's message queued here, unread. */
  memport_os_handle_t fd;
  memport_port_pollable(p, &fd);
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  if (poll(&pfd, 1, 10000) != 1)
    return 2;
  raise(SIGKILL);
  return 1;
}

static void test_port_killed_peer_gives_epeer_without_sigpipe(void **state) {
  (void)state;
  struct sigaction dfl, old;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigaction(SIGPIPE, &dfl, &old);
  memport_port_t *a, *b;
  memport_msg_t *m;
  th_assert_ok(memport_msg_create(&m));

  /* Blocked in recv when the peer is killed. */
  th_assert_ok(memport_port_pair(&a, &b));
  pid_t pid = th_fork(child_dies_later, b, 20);
  memport_port_close(b);
  int64_t t0 = th_now_ns();
  th_assert_rc(memport_port_recv(a, m, 10000 * MS), MEMPORT_EPEER);
  assert_true(th_now_ns() - t0 < 5000 * MS);
  assert_int_equal(th_wait(pid, 20), 128 + SIGKILL);
  th_assert_rc(memport_port_send(a, m, 1000 * MS), MEMPORT_EPEER);
  memport_port_close(a);

  /* Killed with our messages unread (the kernel then reports a reset once): what it sent first
   * is still delivered, then EPEER on both sides. */
  th_assert_ok(memport_port_pair(&a, &b));
  pid = th_fork(child_dies_with_unread_messages, b, 20);
  memport_port_close(b);
  th_assert_ok(send_text(a, "unread"));
  assert_int_equal(th_wait(pid, 20), 128 + SIGKILL);
  th_assert_ok(recv_text(a, "last words"));
  th_assert_rc(memport_port_recv(a, m, 1000 * MS), MEMPORT_EPEER);
  th_assert_rc(memport_port_send(a, m, 1000 * MS), MEMPORT_EPEER);
  memport_port_close(a);

  /* Blocked in send on a full queue when the peer is killed. */
  th_assert_ok(memport_port_pair(&a, &b));
  static unsigned char payload[MEMPORT_MSG_MAX_BYTES];
  th_assert_ok(memport_msg_set_bytes(m, payload, sizeof payload));
  int queued = 0;
  while (queued < 10000 && memport_port_send(a, m, MEMPORT_NOWAIT) == 0)
    queued++;
  assert_true(queued < 10000);
  pid = th_fork(child_dies_later, b, 20);
  memport_port_close(b);
  t0 = th_now_ns();
  th_assert_rc(memport_port_send(a, m, 10000 * MS), MEMPORT_EPEER);
  assert_true(th_now_ns() - t0 < 5000 * MS);
  assert_int_equal(th_wait(pid, 20), 128 + SIGKILL);
  memport_port_close(a);

  memport_msg_close(m);
  sigaction(SIGPIPE, &old, NULL);
}

/* ---- timeouts, full queues ---- */

static void test_port_recv_times_out(void **state) {
  (void)state;
  memport_port_t *a, *b;
  th_assert_ok(memport_port_pair(&a, &b));
  memport_msg_t *m;
  th_assert_ok(memport_msg_create(&m));
  th_assert_rc(memport_port_recv(a, m, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
  int64_t t0 = th_now_ns();
  th_assert_rc(memport_port_recv(a, m, 80 * MS), MEMPORT_ETIMEDOUT);
  int64_t el = th_now_ns() - t0;
  assert_true(el >= 80 * MS);
  assert_true(el < 5000 * MS);
  memport_msg_close(m);
  memport_port_close(a);
  memport_port_close(b);
}

static void test_port_failed_send_leaves_the_message_unchanged(void **state) {
  (void)state;
  memport_port_t *a, *b;
  th_assert_ok(memport_port_pair(&a, &b));
  memport_msg_t *big, *m, *r;
  th_assert_ok(memport_msg_create(&big));
  th_assert_ok(memport_msg_create(&m));
  th_assert_ok(memport_msg_create(&r));
  static unsigned char payload[MEMPORT_MSG_MAX_BYTES];
  th_assert_ok(memport_msg_set_bytes(big, payload, sizeof payload));
  int queued = 0;
  while (queued < 10000 && memport_port_send(a, big, MEMPORT_NOWAIT) == 0)
    queued++;
  assert_true(queued > 0 && queued < 10000);
  th_assert_rc(memport_port_send(a, big, MEMPORT_NOWAIT), MEMPORT_EAGAIN);

  memport_sem_t *s;
  th_assert_ok(memport_sem_create(&s, 3, 0));
  th_assert_ok(memport_msg_attach_sem(m, s, 0));
  th_assert_ok(memport_msg_set_bytes(m, "x", 1));
  int fds = th_count_fds();
  int64_t t0 = th_now_ns();
  th_assert_rc(memport_port_send(a, m, 60 * MS), MEMPORT_ETIMEDOUT);
  assert_true(th_now_ns() - t0 >= 60 * MS);
  assert_int_equal(memport_msg_handle_count(m), 1);
  assert_int_equal(memport_msg_handle_kind(m, 0), MEMPORT_HANDLE_SEM);
  assert_int_equal(th_count_fds(), fds);

  /* Room again: the same message goes, and its handle is gone from here. */
  for (int i = 0; i < queued; i++)
    th_assert_ok(memport_port_recv(b, r, 1000 * MS));
  th_assert_ok(memport_port_send(a, m, 1000 * MS));
  assert_int_equal(memport_msg_handle_count(m), 0);
  assert_int_equal(th_count_fds(), fds - 1);
  th_assert_ok(memport_port_recv(b, r, 1000 * MS));
  memport_sem_t *got;
  th_assert_ok(memport_msg_take_sem(r, 0, &got));
  th_assert_ok(memport_sem_trywait(got));
  memport_sem_close(got);

  /* Peer gone: EPEER, message unchanged. */
  th_assert_ok(memport_sem_create(&s, 0, 0));
  th_assert_ok(memport_msg_attach_sem(m, s, 0));
  memport_port_close(b);
  th_assert_rc(memport_port_send(a, m, 1000 * MS), MEMPORT_EPEER);
  assert_int_equal(memport_msg_handle_count(m), 1);

  memport_msg_close(big);
  memport_msg_close(m);
  memport_msg_close(r);
  memport_port_close(a);
}

static void test_port_cannot_be_sent_through_itself(void **state) {
  (void)state;
  memport_port_t *a, *b;
  th_assert_ok(memport_port_pair(&a, &b));
  memport_msg_t *m, *r;
  th_assert_ok(memport_msg_create(&m));
  th_assert_ok(memport_msg_create(&r));
  int fds = th_count_fds();

  /* A copy of the port: the same endpoint, refused, and the copy stays in the message. */
  th_assert_ok(memport_msg_attach_port(m, a, MEMPORT_ATTACH_COPY));
  assert_int_equal(th_count_fds(), fds + 1);
  th_assert_rc(memport_port_send(a, m, 1000 * MS), MEMPORT_EINVAL);
  assert_int_equal(memport_msg_handle_count(m), 1);
  assert_int_equal(memport_msg_handle_kind(m, 0), MEMPORT_HANDLE_PORT);
  th_assert_ok(memport_msg_clear(m));
  assert_int_equal(th_count_fds(), fds);

  /* The port itself, moved into the message: refused, nothing sent, the port still works. */
  th_assert_ok(memport_msg_set_bytes(m, "self", 4));
  th_assert_ok(memport_msg_attach_port(m, a, 0));
  th_assert_rc(memport_port_send(a, m, 1000 * MS), MEMPORT_EINVAL);
  assert_int_equal(memport_msg_handle_count(m), 1);
  th_assert_rc(memport_port_recv(b, r, MEMPORT_NOWAIT), MEMPORT_EAGAIN);
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(send_text(b, "still here"), 0);
  assert_int_equal(recv_text(a, "still here"), 0);

  /* Sent over another port it is an ordinary transfer. */
  memport_port_t *c, *d;
  th_assert_ok(memport_port_pair(&c, &d));
  th_assert_ok(memport_port_send(c, m, 1000 * MS));
  assert_int_equal(memport_msg_handle_count(m), 0);
  th_assert_ok(memport_port_recv(d, r, 1000 * MS));
  memport_port_t *got;
  th_assert_ok(memport_msg_take_port(r, 0, &got));
  assert_int_equal(send_text(got, "moved"), 0);
  assert_int_equal(recv_text(b, "moved"), 0);

  memport_port_close(got);
  memport_port_close(c);
  memport_port_close(d);
  memport_msg_close(m);
  memport_msg_close(r);
  memport_port_close(b);
}

/* ---- pollable ---- */

static void test_port_pollable_fd_is_readable_when_a_message_waits(void **state) {
  (void)state;
  memport_port_t *a, *b;
  th_assert_ok(memport_port_pair(&a, &b));
  memport_os_handle_t fd;
  th_assert_ok(memport_port_pollable(a, &fd));
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  assert_int_equal(poll(&pfd, 1, 0), 0);
  th_assert_ok(send_text(b, "wake up"));
  pfd.revents = 0;
  assert_int_equal(poll(&pfd, 1, 5000), 1);
  assert_true(pfd.revents & POLLIN);
  th_assert_ok(recv_text(a, "wake up"));
  pfd.revents = 0;
  assert_int_equal(poll(&pfd, 1, 0), 0);
  /* A departed peer makes it readable too: recv then reports MEMPORT_EPEER. */
  memport_port_close(b);
  pfd.revents = 0;
  assert_int_equal(poll(&pfd, 1, 5000), 1);
  assert_true(pfd.revents & (POLLIN | POLLHUP));
  memport_msg_t *m;
  th_assert_ok(memport_msg_create(&m));
  th_assert_rc(memport_port_recv(a, m, 0), MEMPORT_EPEER);
  memport_msg_close(m);
  memport_port_close(a);
}

/* ------------------------------------------------------------------------------------------ */
/* Hostile senders: raw records on the socket.                                                  */

/* The wire header as lib/linux/port.c defines it. */
struct wire {
  uint32_t magic;
  uint16_t version;
  uint16_t nhandles;
  uint32_t nbytes;
  uint32_t reserved;
  uint8_t handle[64];
};
#define WIRE_MAGIC 0x534d504du

struct record {
  struct wire h;
  unsigned char bytes[MEMPORT_MSG_MAX_BYTES + 16];
};

static void wire_init(struct record *r, uint16_t nhandles, uint32_t nbytes) {
  memset(&r->h, 0, sizeof r->h);
  r->h.magic = WIRE_MAGIC;
  r->h.version = 1;
  r->h.nhandles = nhandles;
  r->h.nbytes = nbytes;
}

static int raw_send(int sock, const void *data, size_t len, const int *fds, size_t nfds) {
  union {
    char buf[CMSG_SPACE(sizeof(int) * 100)];
    struct cmsghdr align;
  } ctl;
  struct iovec iov = {(void *)data, len};
  struct msghdr mh;
  memset(&mh, 0, sizeof mh);
  memset(&ctl, 0, sizeof ctl);
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  if (nfds > 0) {
    mh.msg_control = ctl.buf;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    struct cmsghdr *c = &ctl.align;
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  return sendmsg(sock, &mh, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -errno;
}

static int memfd_page(bool sealed) {
  int fd = memfd_create("hostile", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  assert_true(fd >= 0);
  assert_int_equal(ftruncate(fd, 4096), 0);
  if (sealed)
    assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
  return fd;
}

/* The descriptor of a real memport semaphore, as a peer would pass it: sent through a port pair
 * and taken off the socket raw. */
static int sem_fd(void) {
  memport_port_t *c, *d;
  th_assert_ok(memport_port_pair(&c, &d));
  memport_sem_t *s;
  th_assert_ok(memport_sem_create(&s, 0, 0));
  memport_msg_t *m;
  th_assert_ok(memport_msg_create(&m));
  th_assert_ok(memport_msg_attach_sem(m, s, 0));
  th_assert_ok(memport_port_send(c, m, 1000 * MS));
  memport_msg_close(m);
  memport_os_handle_t sock;
  th_assert_ok(memport_port_pollable(d, &sock));
  unsigned char buf[256];
  struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
  union {
    char buf[CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(struct ucred))];
    struct cmsghdr align;
  } ctl;
  struct msghdr mh;
  memset(&mh, 0, sizeof mh);
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = ctl.buf;
  mh.msg_controllen = sizeof ctl.buf;
  assert_true(recvmsg(sock, &mh, MSG_CMSG_CLOEXEC) > 0);
  int fd = -1;
  for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm != NULL; cm = CMSG_NXTHDR(&mh, cm))
    if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
      memcpy(&fd, CMSG_DATA(cm), sizeof fd);
  assert_true(fd >= 0);
  memport_port_close(c);
  memport_port_close(d);
  return fd;
}

/* Send a raw record carrying fds (closed here afterwards), expect `expected` from recv with no
 * descriptor or mapping left behind, then check that the port still delivers a good message. */
static void expect_rejected(memport_port_t *rx, memport_port_t *tx, const void *rec, size_t len, int *fds,
                            size_t nfds, int expected, const char *what) {
  memport_os_handle_t sock;
  th_assert_ok(memport_port_pollable(tx, &sock));
  memport_msg_t *m;
  th_assert_ok(memport_msg_create(&m));
  int fds0 = th_count_fds() - (int)nfds;
  int maps0 = th_count_maps();
  int rc = raw_send(sock, rec, len, fds, nfds);
  if (rc != 0)
    fail_msg("%s: raw send failed: %s", what, strerror(-rc));
  for (size_t i = 0; i < nfds; i++)
    close(fds[i]);
  rc = memport_port_recv(rx, m, 1000 * MS);
  if (rc != expected)
    fail_msg("%s: recv returned %s, expected %s", what, memport_err_name(rc), memport_err_name(expected));
  size_t blen = 1;
  memport_msg_bytes(m, &blen);
  assert_int_equal(blen, 0);
  assert_int_equal(memport_msg_handle_count(m), 0);
  if (th_count_fds() != fds0)
    fail_msg("%s: %d descriptors before, %d after", what, fds0, th_count_fds());
  if (!th_under_valgrind() && th_count_maps() != maps0)
    fail_msg("%s: %d mappings before, %d after", what, maps0, th_count_maps());
  memport_msg_close(m);
  th_assert_ok(send_text(tx, "still fine"));
  th_assert_ok(recv_text(rx, "still fine"));
}

static void test_port_rejects_hostile_records_and_leaks_nothing(void **state) {
  (void)state;
  memport_port_t *a, *b;
  th_assert_ok(memport_port_pair(&a, &b));
  static struct record rec;
  int fds[100];

  /* Header cut short, with and without a descriptor. */
  wire_init(&rec, 0, 0);
  expect_rejected(a, b, &rec, 10, fds, 0, MEMPORT_EPROTO, "truncated header");
  wire_init(&rec, 1, 0);
  fds[0] = memfd_page(true);
  expect_rejected(a, b, &rec, 10, fds, 1, MEMPORT_EPROTO, "truncated header with fd");
  fds[0] = memfd_page(true);
  expect_rejected(a, b, "", 0, fds, 1, MEMPORT_EPROTO, "empty record with fd");
  expect_rejected(a, b, "", 0, fds, 0, MEMPORT_EPROTO, "empty record");

  /* Wrong magic, version, reserved field, byte count. */
  wire_init(&rec, 0, 4);
  rec.h.magic ^= 1;
  expect_rejected(a, b, &rec, sizeof rec.h + 4, fds, 0, MEMPORT_EPROTO, "bad magic");
  wire_init(&rec, 0, 4);
  rec.h.version = 2;
  expect_rejected(a, b, &rec, sizeof rec.h + 4, fds, 0, MEMPORT_EPROTO, "bad version");
  wire_init(&rec, 0, 4);
  rec.h.reserved = 1;
  expect_rejected(a, b, &rec, sizeof rec.h + 4, fds, 0, MEMPORT_EPROTO, "reserved set");
  wire_init(&rec, 0, 5);
  expect_rejected(a, b, &rec, sizeof rec.h + 4, fds, 0, MEMPORT_EPROTO, "byte count too large");
  wire_init(&rec, 0, 3);
  expect_rejected(a, b, &rec, sizeof rec.h + 4, fds, 0, MEMPORT_EPROTO, "byte count too small");

  /* Too large: one byte more than a message can hold. */
  wire_init(&rec, 0, MEMPORT_MSG_MAX_BYTES + 1);
  fds[0] = memfd_page(true);
  expect_rejected(a, b, &rec, sizeof rec.h + MEMPORT_MSG_MAX_BYTES + 1, fds, 1, MEMPORT_EMSGSIZE, "oversized");

  /* Descriptor counts that do not match the header. */
  wire_init(&rec, 1, 0);
  rec.h.handle[0] = MEMPORT_HANDLE_REGION;
  fds[0] = memfd_page(true);
  fds[1] = memfd_page(true);
  expect_rejected(a, b, &rec, sizeof rec.h, fds, 2, MEMPORT_EPROTO, "more fds than announced");
  wire_init(&rec, 2, 0);
  rec.h.handle[0] = rec.h.handle[1] = MEMPORT_HANDLE_REGION;
  fds[0] = memfd_page(true);
  expect_rejected(a, b, &rec, sizeof rec.h, fds, 1, MEMPORT_EPROTO, "fewer fds than announced");
  wire_init(&rec, 0, 0);
  fds[0] = memfd_page(true);
  expect_rejected(a, b, &rec, sizeof rec.h, fds, 1, MEMPORT_EPROTO, "fd but none announced");
  wire_init(&rec, 64, 0);
  for (int i = 0; i < 64; i++)
    rec.h.handle[i] = MEMPORT_HANDLE_REGION;
  fds[0] = memfd_page(true);
  for (int i = 1; i < 70; i++)
    fds[i] = dup(fds[0]);
  expect_rejected(a, b, &rec, sizeof rec.h, fds, 70, MEMPORT_EPROTO, "70 fds, 64 announced");
  wire_init(&rec, 65, 0);
  for (int i = 0; i < 64; i++)
    rec.h.handle[i] = MEMPORT_HANDLE_REGION;
  fds[0] = memfd_page(true);
  for (int i = 1; i < 64; i++)
    fds[i] = dup(fds[0]);
  expect_rejected(a, b, &rec, sizeof rec.h, fds, 64, MEMPORT_EPROTO, "65 announced");

  /* Descriptors of the wrong kind. */
  int pfd[2];
  wire_init(&rec, 1, 0);
  rec.h.handle[0] = MEMPORT_HANDLE_REGION;
  assert_int_equal(pipe(pfd), 0);
  expect_rejected(a, b, &rec, sizeof rec.h, pfd, 2 - 1, MEMPORT_EPROTO, "pipe as region");
  close(pfd[1]);
  fds[0] = memfd_page(false);
  expect_rejected(a, b, &rec, sizeof rec.h, fds, 1, MEMPORT_EPROTO, "unsealed memfd as region");
  fds[0] = open("/dev/null", O_RDWR | O_CLOEXEC);
  expect_rejected(a, b, &rec, sizeof rec.h, fds, 1, MEMPORT_EPROTO, "/dev/null as region");
  rec.h.handle[0] = MEMPORT_HANDLE_SEM;
  fds[0] = memfd_page(true);
  expect_rejected(a, b, &rec, sizeof rec.h, fds, 1, MEMPORT_EPROTO, "plain memfd as semaphore");
  assert_int_equal(pipe(pfd), 0);
  expect_rejected(a, b, &rec, sizeof rec.h, pfd, 1, MEMPORT_EPROTO, "pipe as semaphore");
  close(pfd[1]);
  rec.h.handle[0] = MEMPORT_HANDLE_PORT;
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  expect_rejected(a, b, &rec, sizeof rec.h, sv, 1, MEMPORT_EPROTO, "stream socket as port");
  close(sv[1]);
  fds[0] = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  expect_rejected(a, b, &rec, sizeof rec.h, fds, 1, MEMPORT_EPROTO, "unconnected socket as port");
  fds[0] = memfd_page(true);
  expect_rejected(a, b, &rec, sizeof rec.h, fds, 1, MEMPORT_EPROTO, "memfd as port");
  rec.h.handle[0] = 7;
  fds[0] = memfd_page(true);
  expect_rejected(a, b, &rec, sizeof rec.h, fds, 1, MEMPORT_EPROTO, "unknown kind");
  rec.h.handle[0] = MEMPORT_HANDLE_SEM | 0x10;
  fds[0] = memfd_page(true);
  expect_rejected(a, b, &rec, sizeof rec.h, fds, 1, MEMPORT_EPROTO, "read-only flag on a semaphore");
  rec.h.handle[0] = MEMPORT_HANDLE_REGION | 0x80;
  fds[0] = memfd_page(true);
  expect_rejected(a, b, &rec, sizeof rec.h, fds, 1, MEMPORT_EPROTO, "unknown handle flag");
  wire_init(&rec, 1, 0);
  rec.h.handle[0] = MEMPORT_HANDLE_REGION;
  rec.h.handle[1] = MEMPORT_HANDLE_REGION;
  fds[0] = memfd_page(true);
  expect_rejected(a, b, &rec, sizeof rec.h, fds, 1, MEMPORT_EPROTO, "descriptor past the count");
  /* A good region followed by a bad one: the good one is not delivered or leaked either. */
  wire_init(&rec, 2, 0);
  rec.h.handle[0] = MEMPORT_HANDLE_REGION;
  rec.h.handle[1] = MEMPORT_HANDLE_SEM;
  fds[0] = memfd_page(true);
  fds[1] = memfd_page(true);
  expect_rejected(a, b, &rec, sizeof rec.h, fds, 2, MEMPORT_EPROTO, "good region, bad semaphore");
  /* Objects are made one by one after the checks (lib/msg.c): one failing in the middle closes
   * those made before it (a mapped semaphore page, a region) and releases the descriptors after
   * it (a socket) all the same. */
  {
    int sp[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp), 0);
    wire_init(&rec, 4, 0);
    rec.h.handle[0] = MEMPORT_HANDLE_SEM;
    rec.h.handle[1] = MEMPORT_HANDLE_REGION;
    rec.h.handle[2] = MEMPORT_HANDLE_SEM;
    rec.h.handle[3] = MEMPORT_HANDLE_PORT;
    fds[0] = sem_fd();
    fds[1] = memfd_page(true);
    fds[2] = memfd_page(true); /* sealed, but no semaphore page */
    fds[3] = sp[0];
    expect_rejected(a, b, &rec, sizeof rec.h, fds, 4, MEMPORT_EPROTO,
                    "good semaphore and region, bad semaphore, good socket");
    close(sp[1]);
  }

  /* Legitimate: handles and no bytes, sent raw (a read-only region from a sealed memfd). */
  wire_init(&rec, 1, 0);
  rec.h.handle[0] = MEMPORT_HANDLE_REGION | 0x10;
  fds[0] = memfd_page(true);
  memport_os_handle_t sock;
  th_assert_ok(memport_port_pollable(b, &sock));
  assert_int_equal(raw_send(sock, &rec, sizeof rec.h, fds, 1), 0);
  close(fds[0]);
  memport_msg_t *m;
  th_assert_ok(memport_msg_create(&m));
  th_assert_ok(memport_port_recv(a, m, 1000 * MS));
  assert_int_equal(memport_msg_handle_count(m), 1);
  memport_region_t *r;
  th_assert_ok(memport_msg_take_region(m, 0, &r));
  assert_int_equal(memport_region_is_readonly(r), 1);
  assert_int_equal(memport_region_size(r), 4096);
  void *addr;
  th_assert_rc(memport_region_map(r, 0, &addr), MEMPORT_EACCES);
  memport_region_close(r);
  memport_cred_t c;
  th_assert_ok(memport_msg_sender(m, &c));
  assert_int_equal(c.pid, getpid());
  memport_msg_close(m);

  memport_port_close(a);
  memport_port_close(b);
}

static void test_port_out_of_descriptors_drops_the_message_with_emfile(void **state) {
  (void)state;
  memport_port_t *a, *b;
  th_assert_ok(memport_port_pair(&a, &b));
  memport_msg_t *m;
  th_assert_ok(memport_msg_create(&m));
  for (int i = 0; i < 8; i++) {
    memport_sem_t *s;
    th_assert_ok(memport_sem_create(&s, 0, 0));
    th_assert_ok(memport_msg_attach_sem(m, s, 0));
  }
  th_assert_ok(memport_port_send(a, m, 1000 * MS));
  struct rlimit old, low;
  getrlimit(RLIMIT_NOFILE, &old);
  int fds = th_count_fds();
  low = old;
  low.rlim_cur = th_limit_with_free_slots(4); /* room for 4 of the 8 */
  if (th_under_valgrind() || setrlimit(RLIMIT_NOFILE, &low) != 0) {
    memport_msg_close(m);
    memport_port_close(a);
    memport_port_close(b);
    skip();
  }
  int rc = memport_port_recv(b, m, 1000 * MS);
  setrlimit(RLIMIT_NOFILE, &old);
  th_assert_rc(rc, MEMPORT_EMFILE);
  assert_int_equal(th_count_fds(), fds);
  th_assert_ok(send_text(a, "after"));
  th_assert_ok(recv_text(b, "after"));
  memport_msg_close(m);
  memport_port_close(a);
  memport_port_close(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_msg_rejects_bad_arguments),
      cmocka_unit_test(test_msg_set_bytes_copies_up_to_the_limit),
      cmocka_unit_test(test_msg_moved_handle_belongs_to_the_message_even_on_error),
      cmocka_unit_test(test_msg_holds_64_handles_and_closes_a_moved_65th),
      cmocka_unit_test(test_port_rejects_bad_arguments),
      cmocka_unit_test(test_port_pair_carries_bytes_both_ways_across_fork),
      cmocka_unit_test(test_port_pair_each_side_closing_the_other_across_fork_ends_in_epeer),
      cmocka_unit_test(test_port_carries_the_largest_message_and_an_empty_one),
      cmocka_unit_test(test_port_moves_and_copies_64_handles_of_every_kind),
      cmocka_unit_test(test_port_send_skips_taken_slots),
      cmocka_unit_test(test_port_refuses_to_send_a_region_that_can_shrink),
      cmocka_unit_test(test_port_whose_peer_is_gone_is_delivered_and_reports_epeer),
      cmocka_unit_test(test_port_every_message_names_the_process_that_sent_it),
      cmocka_unit_test(test_port_peer_close_gives_epeer_after_queued_messages),
      cmocka_unit_test(test_port_killed_peer_gives_epeer_without_sigpipe),
      cmocka_unit_test(test_port_recv_times_out),
      cmocka_unit_test(test_port_failed_send_leaves_the_message_unchanged),
      cmocka_unit_test(test_port_cannot_be_sent_through_itself),
      cmocka_unit_test(test_port_pollable_fd_is_readable_when_a_message_waits),
      cmocka_unit_test(test_port_rejects_hostile_records_and_leaks_nothing),
      cmocka_unit_test(test_port_out_of_descriptors_drops_the_message_with_emfile),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
