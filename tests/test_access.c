/* SPDX-License-Identifier: MIT */
/* test_access.c: another local user (a child dropped to nobody) cannot reach root's channels, names, regions or payloads. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include "helpers.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/*
 * Needs root: the test (root) serves names and makes regions; a forked child drops to uid/gid
 * 65534 (setgroups(0), setgid, setuid) and tries to get at them. Each child reports the first
 * thing that unexpectedly worked by its exit status (0: everything was refused as it must be).
 *
 * Covered elsewhere, not repeated here (tests/test_name.c): a plain port connect by another uid
 * is dropped at accept until memport_service_allow_uid (test_other_uid_is_refused_at_accept_
 * until_allowed); an abstract address squatted by a non-root process is not trusted
 * (test_exported_address_held_by_non_root_is_not_trusted); the directory is 0700 and owned by us
 * (test_private_dir_is_0700_and_owned_by_us). tests/test_region.c: another uid cannot reopen a
 * memfd writable through /proc, only duplicate it read-only
 * (test_other_uid_holder_cannot_reopen_writable_but_can_dup_readonly).
 */

#define NOBODY 65534

static char g_xdg[64];
static char g_dir[128]; /* g_xdg/memport: root's private name directory */

static int become_nobody(void) {
  if (setgroups(0, NULL) != 0 || setgid(NOBODY) != 0 || setuid(NOBODY) != 0)
    return -1;
  return getuid() == NOBODY && geteuid() == NOBODY && getgid() == NOBODY ? 0 : -1;
}

static void need_root(void) {
  if (geteuid() != 0) {
    printf("# not root: the access tests need to drop a child to another uid; skipped\n");
    skip();
  }
}

/* ------------------------------------------------------------------------------------------ */

struct conn_arg {
  const char *name;
};

static int child_chan_connect(void *varg) {
  struct conn_arg *a = varg;
  if (become_nobody() != 0)
    return 90;
  memport_chan_t *c = NULL;
  int rc = memport_chan_connect(&c, a->name, NULL, 2 * SEC);
  if (rc == 0) {
    memport_chan_close(c);
    return 1; /* a channel to root's service: must not happen */
  }
  printf("# as uid %d, memport_chan_connect: %s\n", NOBODY, memport_err_name(rc));
  fflush(stdout);
  /* Dropped at accept: the handshake sees the connection closed. */
  return rc == MEMPORT_EPEER || rc == MEMPORT_ETIMEDOUT ? 0 : 2;
}

/* A same-uid-only channel service: the other user's connection never becomes a channel, on
 * either side. */
static void test_other_uid_cannot_open_a_channel_to_a_same_uid_service(void **state) {
  (void)state;
  need_root();
  int fds = th_count_fds();
  const char *name = th_unique_name("acc-chan");
  memport_service_t *svc = NULL;
  th_assert_ok(memport_service_create(&svc, name, 0));
  struct conn_arg a = {name};
  pid_t pid = th_fork(child_chan_connect, &a, 20);
  memport_chan_t *c = NULL;
  th_assert_rc(memport_chan_accept(&c, svc, NULL, 1500 * MS), MEMPORT_ETIMEDOUT);
  assert_null(c);
  assert_int_equal(th_wait(pid, 20), 0);
  memport_service_close(svc);
  assert_int_equal(th_count_fds(), fds);
}

/* ------------------------------------------------------------------------------------------ */

struct dir_arg {
  const char *name;
};

static int count_names(const memport_name_info_t *info, void *arg) {
  (void)info;
  (*(int *)arg)++;
  return 0;
}

static int child_private_dir(void *varg) {
  struct dir_arg *a = varg;
  if (become_nobody() != 0)
    return 90;
  errno = 0;
  DIR *d = opendir(g_dir);
  if (d != NULL) {
    closedir(d);
    return 1;
  }
  if (errno != EACCES)
    return 2;
  /* Not even an entry whose name is known. */
  char path[PATH_MAX];
  if (snprintf(path, sizeof path, "%s/%.64s.lock", g_dir, a->name) >= (int)sizeof path)
    return 91;
  if (open(path, O_RDONLY | O_CLOEXEC) >= 0 || errno != EACCES)
    return 3;
  struct stat st;
  if (stat(path, &st) == 0 || errno != EACCES)
    return 4;
  /* The listing of this user shows none of root's names (its own directory is elsewhere). */
  int n = 0;
  int rc = memport_name_foreach(count_names, &n);
  if (rc < 0 && rc != MEMPORT_ENOENT)
    return 5;
  if (n != 0)
    return 6;
  return 0;
}

static void test_other_uid_cannot_list_or_open_the_private_directory(void **state) {
  (void)state;
  need_root();
  const char *name = th_unique_name("acc-dir");
  memport_service_t *svc = NULL;
  th_assert_ok(memport_service_create(&svc, name, 0));
  int n = 0;
  th_assert_ok(memport_name_foreach(count_names, &n));
  assert_true(n >= 1); /* root sees its own name */
  struct dir_arg a = {name};
  assert_int_equal(th_run_child(child_private_dir, &a, 20), 0);
  memport_service_close(svc);
}

/* ------------------------------------------------------------------------------------------ */

struct open_arg {
  const char *name;
  int go[2]; /* the parent writes a byte once the region is published */
};

static int child_region_open(void *varg) {
  struct open_arg *a = varg;
  const char *name = a->name;
  close(a->go[1]);
  char c;
  if (read(a->go[0], &c, 1) != 1)
    return 91;
  if (become_nobody() != 0)
    return 90;
  memport_region_t *r = NULL;
  int rc = memport_region_open(&r, name, 2 * SEC);
  if (rc == 0) {
    memport_region_close(r);
    return 1;
  }
  printf("# as uid %d, memport_region_open: %s\n", NOBODY, memport_err_name(rc));
  fflush(stdout);
  return rc == MEMPORT_EPERM || rc == MEMPORT_EPEER || rc == MEMPORT_ETIMEDOUT ? 0 : 2;
}

/* A region published with the default policy (read-only for the same uid only). */
static void test_other_uid_cannot_open_a_same_uid_published_region(void **state) {
  (void)state;
  need_root();
  /* The child is forked before the publication's thread exists (its allocations would show as
   * lost in a child forked later, under valgrind). */
  struct open_arg a;
  a.name = th_unique_name("acc-reg");
  assert_int_equal(pipe2(a.go, O_CLOEXEC), 0);
  pid_t pid = th_fork(child_region_open, &a, 20);
  close(a.go[0]);
  const char *name = a.name;
  memport_region_t *r;
  th_assert_ok(memport_region_create(&r, 4096, 0));
  memport_publication_t *pub = NULL;
  th_assert_ok(memport_region_publish(&pub, r, name, NULL, NULL));
  /* The same uid may (the contrast that shows the name works). */
  memport_region_t *got = NULL;
  th_assert_ok(memport_region_open(&got, name, 5 * SEC));
  memport_region_close(got);
  assert_int_equal(write(a.go[1], "g", 1), 1);
  close(a.go[1]);
  assert_int_equal(th_wait(pid, 25), 0);
  memport_publication_close(pub);
  memport_region_close(r);
}

/* ------------------------------------------------------------------------------------------ */

struct ro_arg {
  memport_region_t *ro; /* from memport_region_readonly */
  memport_region_t *rw; /* the original handle, sealed by the same call */
  size_t size;
  memport_port_t *port; /* the child's end: a third handle arrives in a message */
};

static int no_write_access(memport_region_t *r, size_t size, int base) {
  memport_os_handle_t fd;
  if (memport_region_os_handle(r, &fd) != 0)
    return base + 0;
  void *p = NULL;
  if (memport_region_map(r, 0, &p) != MEMPORT_EACCES)
    return base + 1;
  if (memport_region_map(r, MEMPORT_MAP_MIRROR, &p) != MEMPORT_EACCES)
    return base + 2;
  if (mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) != MAP_FAILED)
    return base + 3;
  void *m = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED)
    return base + 4;
  if (mprotect(m, size, PROT_READ | PROT_WRITE) == 0)
    return base + 5;
  if (strcmp(m, "root's bytes") != 0)
    return base + 6;
  munmap(m, size);
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  int wfd = open(path, O_RDWR | O_CLOEXEC);
  if (wfd >= 0) {
    close(wfd);
    return base + 7;
  }
  if (pwrite(fd, "x", 1, 0) == 1)
    return base + 8;
  if (ftruncate(fd, (off_t)size * 2) == 0 || ftruncate(fd, 0) == 0)
    return base + 9;
  /* A duplicate is no way out either. */
  memport_region_t *d = NULL;
  if (memport_region_dup(r, 0, &d) != 0)
    return base + 10;
  int ro = memport_region_is_readonly(d);
  int rc = memport_region_map(d, 0, &p);
  memport_region_close(d);
  if (ro != 1 || rc != MEMPORT_EACCES)
    return base + 11;
  return 0;
}

static int child_readonly(void *varg) {
  struct ro_arg *a = varg;
  if (become_nobody() != 0)
    return 90;
  int rc = no_write_access(a->ro, a->size, 10);
  if (rc == 0)
    rc = no_write_access(a->rw, a->size, 30);
  memport_region_close(a->ro);
  memport_region_close(a->rw);
  memport_msg_t *m = NULL;
  memport_region_t *got = NULL;
  if (rc == 0 && (memport_msg_create(&m) != 0 || memport_port_recv(a->port, m, 10 * SEC) != 0 ||
                  memport_msg_take_region(m, 0, &got) != 0))
    rc = 49;
  if (rc == 0)
    rc = no_write_access(got, a->size, 50);
  memport_region_close(got);
  memport_msg_close(m);
  memport_port_close(a->port);
  return rc;
}

/* Root makes a region read-only and the child (another uid) inherits both handles across fork,
 * and gets a third one in a message:
 * no API call, raw mmap, mprotect, /proc reopen, write, truncate or duplicate gives it write
 * access, while root's own mapping made before stays writable and the child sees its bytes. */
static void test_other_uid_cannot_upgrade_a_readonly_region_it_was_given(void **state) {
  (void)state;
  need_root();
  struct ro_arg a;
  a.size = memport_page_size();
  th_assert_ok(memport_region_create(&a.rw, a.size, 0));
  char *w;
  th_assert_ok(memport_region_map(a.rw, 0, (void **)&w));
  strcpy(w, "root's bytes");
  th_assert_ok(memport_region_readonly(a.rw, &a.ro));
  memport_port_t *mine;
  th_assert_ok(memport_port_pair(&mine, &a.port));
  pid_t pid = th_fork(child_readonly, &a, 20);
  memport_port_close(a.port);
  memport_msg_t *m;
  th_assert_ok(memport_msg_create(&m));
  th_assert_ok(memport_msg_attach_region(m, a.ro, MEMPORT_ATTACH_COPY));
  th_assert_ok(memport_port_send(mine, m, 5 * SEC));
  memport_msg_close(m);
  int st = th_wait(pid, 25);
  memport_port_close(mine);
  if (st != 0)
    fail_msg("the other user got write access (step %d)", st);
  assert_string_equal(w, "root's bytes");
  w[0] = 'R'; /* the mapping made before the conversion keeps its access */
  th_assert_ok(memport_unmap(w));
  memport_region_close(a.ro);
  memport_region_close(a.rw);
}

static void cleanup_dir(void) {
  char cmd[sizeof g_xdg + 16];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_xdg);
  if (system(cmd) != 0)
    fprintf(stderr, "could not remove %s\n", g_xdg);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  /* Root's names live in a private directory of this test (XDG_RUNTIME_DIR, 0700, root's). The
   * child, not owning it, falls back to its own /tmp/memport-65534. The parent directory is made
   * searchable so that it is the 0700 name directory itself that stops the child. */
  snprintf(g_xdg, sizeof g_xdg, "/tmp/memport-access-XXXXXX");
  if (mkdtemp(g_xdg) == NULL)
    return 1;
  if (chmod(g_xdg, 0755) != 0)
    return 1;
  snprintf(g_dir, sizeof g_dir, "%s/memport", g_xdg);
  setenv("XDG_RUNTIME_DIR", g_xdg, 1);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_other_uid_cannot_open_a_channel_to_a_same_uid_service),
      cmocka_unit_test(test_other_uid_cannot_list_or_open_the_private_directory),
      cmocka_unit_test(test_other_uid_cannot_open_a_same_uid_published_region),
      cmocka_unit_test(test_other_uid_cannot_upgrade_a_readonly_region_it_was_given),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  cleanup_dir();
  return rc;
}
