/* SPDX-License-Identifier: MIT */
/* test_region.c: regions, mappings (read-write, read-only, mirrored), read-only handles, dup,
 * raw handle interop and remap, checked against the kernel's own enforcement. */
#include "config.h"

#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef F_ADD_SEALS
#define F_ADD_SEALS 1033
#define F_GET_SEALS 1034
#define F_SEAL_SHRINK 0x0002
#define F_SEAL_GROW 0x0004
#endif
#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif
#ifndef MFD_CLOEXEC
#define MFD_CLOEXEC 0x0001U
#define MFD_ALLOW_SEALING 0x0002U
#endif

static const char *g_argv0;
static size_t g_page;

/* A counting snapshot of descriptors and mappings, to prove an error path leaked nothing. */
struct counts {
  int fds, maps;
};
static struct counts counts_now(void) { return (struct counts){th_count_fds(), th_count_maps()}; }
static void assert_counts(struct counts before) {
  struct counts after = counts_now();
  assert_int_equal(before.fds, after.fds);
  assert_int_equal(before.maps, after.maps);
}

/* Mappings of memport regions in this process (threads and malloc arenas come and go in the
 * total count, these do not). */
static int count_region_maps(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  assert_non_null(f);
  char line[4096];
  int n = 0;
  while (fgets(line, sizeof line, f) != NULL)
    if (strstr(line, "/memfd:memport-region") != NULL)
      n++;
  fclose(f);
  return n;
}

static bool is_mapped(const void *p, size_t len) {
  unsigned char vec[64];
  size_t pages = (len + g_page - 1) / g_page;
  assert_true(pages <= sizeof vec);
  return mincore((void *)p, len, vec) == 0;
}

static int raw_memfd(size_t size) {
  int fd = (int)syscall(SYS_memfd_create, "test-raw", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  assert_true(fd >= 0);
  if (size)
    assert_int_equal(ftruncate(fd, (off_t)size), 0);
  return fd;
}

static int region_fd_raw(const memport_region_t *r) {
  memport_os_handle_t h = MEMPORT_OS_HANDLE_INVALID;
  return memport_region_os_handle(r, &h) == 0 ? h : -1;
}

static int region_fd(const memport_region_t *r) {
  memport_os_handle_t h = MEMPORT_OS_HANDLE_INVALID;
  th_assert_ok(memport_region_os_handle(r, &h));
  assert_true(h >= 0);
  return h;
}

/* The child writes one byte at arg; a read-only mapping must kill it with SIGSEGV. */
static int child_write_byte(void *arg) {
  signal(SIGSEGV, SIG_DFL); /* cmocka's handler would turn the fault into a failed test */
  signal(SIGBUS, SIG_DFL);
  *(volatile unsigned char *)arg = 0x77;
  return 0;
}

/* ---- create, size, close ------------------------------------------------------------------ */

static void test_region_create_rounds_up_to_pages_and_is_zero_filled(void **state) {
  (void)state;
  memport_region_t *r = NULL;
  th_assert_ok(memport_region_create(&r, 1, 0));
  assert_int_equal(memport_region_size(r), g_page);
  th_assert_rc(memport_region_is_readonly(r), 0);
  memport_region_close(r);

  th_assert_ok(memport_region_create(&r, 3 * g_page + 1, 0));
  assert_int_equal(memport_region_size(r), 4 * g_page);
  unsigned char *p;
  th_assert_ok(memport_region_map(r, 0, (void **)&p));
  for (size_t i = 0; i < 4 * g_page; i++)
    if (p[i] != 0)
      fail_msg("byte %zu of a new region is %u", i, p[i]);
  th_assert_ok(memport_unmap(p));
  th_assert_ok(memport_region_close(r));
}

static void test_region_create_rejects_bad_arguments_without_leaks(void **state) {
  (void)state;
  memport_region_t *r = (memport_region_t *)&r; /* must stay untouched */
  memport_region_t *const sentinel = r;
  struct counts c = counts_now();
  th_assert_rc(memport_region_create(NULL, g_page, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_region_create(&r, 0, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_region_create(&r, g_page, 1), MEMPORT_EINVAL);
  th_assert_rc(memport_region_create(&r, g_page, 1u << 31), MEMPORT_EINVAL);
  th_assert_rc(memport_region_create(&r, SIZE_MAX, 0), MEMPORT_EOVERFLOW);
  th_assert_rc(memport_region_create(&r, SIZE_MAX - g_page, 0), MEMPORT_ENOMEM);
  th_assert_rc(memport_region_create(&r, SIZE_MAX / 2, 0), MEMPORT_ENOMEM);
  th_assert_rc(memport_region_create(&r, SIZE_MAX / 2 + 1, 0), MEMPORT_ENOMEM);
  assert_ptr_equal(r, sentinel);
  assert_counts(c);
}

static void test_region_close_releases_descriptor_and_handles_null(void **state) {
  (void)state;
  th_assert_ok(memport_region_close(NULL));
  assert_int_equal(memport_region_size(NULL), 0);
  th_assert_rc(memport_region_is_readonly(NULL), MEMPORT_EINVAL);
  int fds = th_count_fds();
  memport_region_t *r;
  th_assert_ok(memport_region_create(&r, g_page, 0));
  assert_int_equal(th_count_fds(), fds + 1);
  th_assert_ok(memport_region_close(r));
  assert_int_equal(th_count_fds(), fds);
}

static void test_region_memfd_is_sealed_against_resize_cloexec_and_mode_0444(void **state) {
  (void)state;
  memport_region_t *r;
  th_assert_ok(memport_region_create(&r, 2 * g_page, 0));
  int fd = region_fd(r);
  int seals = fcntl(fd, F_GET_SEALS);
  assert_true(seals >= 0);
  assert_true(seals & F_SEAL_GROW);
  assert_true(seals & F_SEAL_SHRINK);
  assert_false(seals & F_SEAL_FUTURE_WRITE);
  assert_int_equal(ftruncate(fd, (off_t)g_page), -1);
  assert_int_equal(errno, EPERM);
  assert_int_equal(ftruncate(fd, (off_t)(4 * g_page)), -1);
  assert_int_equal(errno, EPERM);
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0);
  assert_int_equal(st.st_mode & 07777, 0444);
  assert_int_equal(st.st_size, (off_t)(2 * g_page));
  assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
  assert_int_equal(fcntl(fd, F_GETFL) & O_ACCMODE, O_RDWR);
  memport_region_close(r);
}

/* ---- mappings ----------------------------------------------------------------------------- */

static void test_map_read_write_is_shared_between_mappings(void **state) {
  (void)state;
  memport_region_t *r;
  th_assert_ok(memport_region_create(&r, 2 * g_page, 0));
  char *a, *b;
  th_assert_ok(memport_region_map(r, 0, (void **)&a));
  th_assert_ok(memport_region_map(r, MEMPORT_MAP_READONLY, (void **)&b));
  assert_ptr_not_equal(a, b);
  size_t len = 0;
  th_assert_ok(memport_mapping_size(a, &len));
  assert_int_equal(len, 2 * g_page);
  th_assert_ok(memport_mapping_size(b, &len));
  assert_int_equal(len, 2 * g_page);
  strcpy(a + g_page + 5, "through the other mapping");
  assert_string_equal(b + g_page + 5, "through the other mapping");
  th_assert_ok(memport_unmap(a));
  th_assert_ok(memport_unmap(b));
  assert_false(is_mapped(a, g_page));
  assert_false(is_mapped(b, g_page));
  memport_region_close(r);
}

static void test_map_stays_valid_after_region_close(void **state) {
  (void)state;
  memport_region_t *r;
  th_assert_ok(memport_region_create(&r, g_page, 0));
  char *p;
  th_assert_ok(memport_region_map(r, 0, (void **)&p));
  th_assert_ok(memport_region_close(r));
  strcpy(p, "still here");
  assert_string_equal(p, "still here");
  th_assert_ok(memport_unmap(p));
}

static void test_map_readonly_faults_on_write(void **state) {
  (void)state;
  memport_region_t *r;
  th_assert_ok(memport_region_create(&r, g_page, 0));
  char *p;
  th_assert_ok(memport_region_map(r, MEMPORT_MAP_READONLY, (void **)&p));
  assert_int_equal(th_run_child(child_write_byte, p, 10), 128 + SIGSEGV);
  assert_int_equal(p[0], 0);
  th_assert_ok(memport_unmap(p));
  memport_region_close(r);
}

static void test_map_rejects_bad_arguments_without_leaks(void **state) {
  (void)state;
  memport_region_t *r;
  th_assert_ok(memport_region_create(&r, g_page, 0));
  void *p = &p;
  struct counts c = counts_now();
  th_assert_rc(memport_region_map(NULL, 0, &p), MEMPORT_EINVAL);
  th_assert_rc(memport_region_map(r, 0, NULL), MEMPORT_EINVAL);
  th_assert_rc(memport_region_map(r, 1u << 2, &p), MEMPORT_EINVAL);
  th_assert_rc(memport_region_map(r, MEMPORT_MAP_MIRROR | (1u << 30), &p), MEMPORT_EINVAL);
  assert_ptr_equal(p, &p);
  assert_counts(c);
  memport_region_close(r);
}

static void test_unmap_rejects_addresses_that_are_not_memport_mappings(void **state) {
  (void)state;
  memport_region_t *r;
  th_assert_ok(memport_region_create(&r, 3 * g_page, 0));
  char *p;
  th_assert_ok(memport_region_map(r, 0, (void **)&p));
  char *foreign = mmap(NULL, g_page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(foreign != MAP_FAILED);
  char *heap = malloc(64);
  assert_non_null(heap);
  int local;
  size_t len = 12345;

  th_assert_rc(memport_unmap(NULL), MEMPORT_EINVAL);
  th_assert_rc(memport_unmap(foreign), MEMPORT_EINVAL);
  th_assert_rc(memport_unmap(heap), MEMPORT_EINVAL);
  th_assert_rc(memport_unmap(&local), MEMPORT_EINVAL);
  th_assert_rc(memport_unmap(p + g_page), MEMPORT_EINVAL);
  th_assert_rc(memport_unmap(p + 1), MEMPORT_EINVAL);
  th_assert_rc(memport_mapping_size(p + g_page, &len), MEMPORT_EINVAL);
  th_assert_rc(memport_mapping_size(foreign, &len), MEMPORT_EINVAL);
  th_assert_rc(memport_mapping_size(NULL, &len), MEMPORT_EINVAL);
  th_assert_rc(memport_mapping_size(p, NULL), MEMPORT_EINVAL);
  assert_int_equal(len, 12345);
  /* nothing was unmapped by the refused calls */
  foreign[0] = 1;
  p[g_page] = 2;
  assert_true(is_mapped(p, 3 * g_page));

  th_assert_ok(memport_unmap(p));
  th_assert_rc(memport_unmap(p), MEMPORT_EINVAL); /* double unmap */
  th_assert_rc(memport_mapping_size(p, &len), MEMPORT_EINVAL);
  munmap(foreign, g_page);
  free(heap);
  memport_region_close(r);
}

static void test_mirror_wraps_writes_around_the_end(void **state) {
  (void)state;
  for (size_t pages = 1; pages <= 3; pages++) {
    size_t size = pages * g_page;
    memport_region_t *r;
    th_assert_ok(memport_region_create(&r, size, 0));
    unsigned char *p;
    struct counts c = counts_now();
    th_assert_ok(memport_region_map(r, MEMPORT_MAP_MIRROR, (void **)&p));
    size_t len = 0;
    th_assert_ok(memport_mapping_size(p, &len));
    assert_int_equal(len, 2 * size);
    /* a record written across the end of the first copy reads back whole from the start */
    for (size_t i = 0; i < 16; i++)
      p[size - 8 + i] = (unsigned char)(0xa0 + i);
    for (size_t i = 0; i < 8; i++)
      assert_int_equal(p[i], 0xa8 + i);
    p[3] = 0x33;
    assert_int_equal(p[size + 3], 0x33);
    for (size_t i = 0; i < size; i += 97)
      assert_int_equal(p[i], p[size + i]);
    th_assert_ok(memport_unmap(p));
    assert_false(is_mapped(p, g_page));
    assert_false(is_mapped(p + size, g_page));
    assert_counts(c);
    memport_region_close(r);
  }
}

static void test_mirror_readonly_is_allowed_and_shows_the_writers_bytes(void **state) {
  (void)state;
  memport_region_t *r, *ro;
  th_assert_ok(memport_region_create(&r, g_page, 0));
  char *w, *m;
  th_assert_ok(memport_region_map(r, 0, (void **)&w));
  th_assert_ok(memport_region_readonly(r, &ro));
  th_assert_ok(memport_region_map(ro, MEMPORT_MAP_READONLY | MEMPORT_MAP_MIRROR, (void **)&m));
  w[g_page - 1] = 'x';
  w[0] = 'y';
  assert_int_equal(m[g_page - 1], 'x');
  assert_int_equal(m[g_page], 'y');
  assert_int_equal(th_run_child(child_write_byte, m + g_page, 10), 128 + SIGSEGV);
  th_assert_rc(memport_region_map(ro, MEMPORT_MAP_MIRROR, (void **)&m), MEMPORT_EACCES);
  th_assert_ok(memport_unmap(m));
  th_assert_ok(memport_unmap(w));
  memport_region_close(ro);
  memport_region_close(r);
}

static void test_mirror_failure_after_reserve_leaves_nothing_mapped(void **state) {
  (void)state;
  /* Someone else seals the memfd behind the handle's back: the handle still says writable, so
   * the reservation is made and the first fixed map then fails. All of it must be undone. */
  memport_region_t *r;
  th_assert_ok(memport_region_create(&r, g_page, 0));
  assert_int_equal(fcntl(region_fd(r), F_ADD_SEALS, F_SEAL_FUTURE_WRITE), 0);
  th_assert_rc(memport_region_is_readonly(r), 0);
  void *p = NULL;
  struct counts c = counts_now();
  th_assert_rc(memport_region_map(r, MEMPORT_MAP_MIRROR, &p), MEMPORT_EACCES);
  th_assert_rc(memport_region_map(r, 0, &p), MEMPORT_EACCES);
  assert_null(p);
  assert_counts(c);
  memport_region_close(r);
}

static void test_map_of_impossible_size_fails_with_enomem_without_leaks(void **state) {
  (void)state;
  /* A sparse 4 EiB memfd exists, but no address space can hold it (or twice it). */
  memport_region_t *r;
  th_assert_ok(memport_region_create(&r, (size_t)1 << 62, 0));
  assert_int_equal(memport_region_size(r), (size_t)1 << 62);
  void *p = NULL;
  struct counts c = counts_now();
  th_assert_rc(memport_region_map(r, 0, &p), MEMPORT_ENOMEM);
  th_assert_rc(memport_region_map(r, MEMPORT_MAP_MIRROR, &p), MEMPORT_ENOMEM);
  th_assert_rc(memport_region_map(r, MEMPORT_MAP_READONLY, &p), MEMPORT_ENOMEM);
  assert_null(p);
  assert_counts(c);
  memport_region_close(r);
}

static void test_map_writable_of_readonly_handle_is_eacces(void **state) {
  (void)state;
  memport_region_t *r, *ro;
  th_assert_ok(memport_region_create(&r, g_page, 0));
  th_assert_ok(memport_region_dup(r, MEMPORT_DUP_READONLY, &ro));
  void *p = NULL;
  struct counts c = counts_now();
  th_assert_rc(memport_region_map(ro, 0, &p), MEMPORT_EACCES);
  th_assert_rc(memport_region_map(ro, MEMPORT_MAP_MIRROR, &p), MEMPORT_EACCES);
  assert_null(p);
  assert_counts(c);
  memport_region_close(ro);
  memport_region_close(r);
}

/* ---- read-only handles (memport_region_readonly) ------------------------------------------ */

struct ro_fixture {
  memport_region_t *rw, *ro;
  char *wmap; /* the creator's writable mapping, made before the conversion */
  int fd;     /* OS handle of ro */
};

static void ro_setup(struct ro_fixture *f) {
  th_assert_ok(memport_region_create(&f->rw, 2 * g_page, 0));
  th_assert_ok(memport_region_map(f->rw, 0, (void **)&f->wmap));
  strcpy(f->wmap, "before");
  th_assert_ok(memport_region_readonly(f->rw, &f->ro));
  f->fd = region_fd(f->ro);
}

static void ro_teardown(struct ro_fixture *f) {
  th_assert_ok(memport_unmap(f->wmap));
  memport_region_close(f->ro);
  memport_region_close(f->rw);
}

/* The kernel refuses every way of writing through fd. */
static void assert_fd_cannot_write(int fd, size_t size) {
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  assert_true(p == MAP_FAILED);
  assert_true(errno == EPERM || errno == EACCES);
  p = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
  assert_true(p != MAP_FAILED);
  assert_int_equal(mprotect(p, size, PROT_READ | PROT_WRITE), -1);
  assert_int_equal(errno, EACCES);
  munmap(p, size);
  assert_int_equal(write(fd, "x", 1), -1);
  assert_true(errno == EPERM || errno == EBADF);
  assert_int_equal(pwrite(fd, "x", 1, 10), -1);
  assert_true(errno == EPERM || errno == EBADF);
  assert_int_equal(ftruncate(fd, (off_t)(size * 2)), -1);
  assert_int_equal(ftruncate(fd, (off_t)(size / 2)), -1);
  assert_int_equal(ftruncate(fd, 0), -1);
  assert_int_equal(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)size), -1);
}

static void test_readonly_handle_refuses_writable_mmap_mprotect_write_ftruncate(void **state) {
  (void)state;
  struct ro_fixture f;
  ro_setup(&f);
  assert_true(fcntl(f.fd, F_GET_SEALS) & F_SEAL_FUTURE_WRITE);
  assert_fd_cannot_write(f.fd, 2 * g_page);
  /* the original descriptor carries the same seal */
  assert_fd_cannot_write(region_fd(f.rw), 2 * g_page);
  struct stat st;
  assert_int_equal(fstat(f.fd, &st), 0);
  assert_int_equal(st.st_size, (off_t)(2 * g_page));
  assert_string_equal(f.wmap, "before");
  ro_teardown(&f);
}

static void test_readonly_mapping_cannot_be_mprotected_writable(void **state) {
  (void)state;
  struct ro_fixture f;
  ro_setup(&f);
  char *m;
  th_assert_ok(memport_region_map(f.ro, MEMPORT_MAP_READONLY, (void **)&m));
  assert_int_equal(mprotect(m, 2 * g_page, PROT_READ | PROT_WRITE), -1);
  assert_int_equal(errno, EACCES);
  char *m2;
  th_assert_ok(memport_region_map(f.rw, MEMPORT_MAP_READONLY, (void **)&m2));
  assert_int_equal(mprotect(m2, g_page, PROT_READ | PROT_WRITE), -1);
  th_assert_ok(memport_unmap(m2));
  th_assert_ok(memport_unmap(m));
  ro_teardown(&f);
}

static void test_readonly_handle_refuses_proc_reopen_for_writing(void **state) {
  (void)state;
  struct ro_fixture f;
  ro_setup(&f);
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", f.fd);
  int wfd = open(path, O_RDWR | O_CLOEXEC);
  if (wfd < 0) {
    /* a process without CAP_DAC_OVERRIDE is stopped by the 0444 mode already */
    assert_int_equal(errno, EACCES);
  } else {
    /* root may reopen it, but the seal still refuses every write */
    assert_fd_cannot_write(wfd, 2 * g_page);
    close(wfd);
  }
  snprintf(path, sizeof path, "/proc/%ld/fd/%d", (long)getpid(), region_fd(f.rw));
  wfd = open(path, O_RDWR | O_CLOEXEC);
  if (wfd >= 0) {
    assert_fd_cannot_write(wfd, 2 * g_page);
    close(wfd);
  }
  ro_teardown(&f);
}

static void test_readonly_keeps_the_creators_existing_writable_mapping(void **state) {
  (void)state;
  struct ro_fixture f;
  ro_setup(&f);
  th_assert_rc(memport_region_is_readonly(f.ro), 1);
  th_assert_rc(memport_region_is_readonly(f.rw), 1);
  void *p = NULL;
  th_assert_rc(memport_region_map(f.rw, 0, &p), MEMPORT_EACCES);
  th_assert_rc(memport_region_map(f.ro, 0, &p), MEMPORT_EACCES);
  char *r1, *r2;
  th_assert_ok(memport_region_map(f.ro, MEMPORT_MAP_READONLY, (void **)&r1));
  th_assert_ok(memport_region_map(f.rw, MEMPORT_MAP_READONLY, (void **)&r2));
  assert_string_equal(r1, "before");
  strcpy(f.wmap, "after the conversion");
  f.wmap[2 * g_page - 1] = 'z';
  assert_string_equal(r1, "after the conversion");
  assert_string_equal(r2, "after the conversion");
  assert_int_equal(r1[2 * g_page - 1], 'z');
  th_assert_ok(memport_unmap(r1));
  th_assert_ok(memport_unmap(r2));
  ro_teardown(&f);
}

static void test_readonly_again_returns_another_readonly_handle(void **state) {
  (void)state;
  struct ro_fixture f;
  ro_setup(&f);
  memport_region_t *again, *dup;
  th_assert_ok(memport_region_readonly(f.ro, &again));
  th_assert_rc(memport_region_is_readonly(again), 1);
  assert_fd_cannot_write(region_fd(again), 2 * g_page);
  th_assert_ok(memport_region_dup(f.ro, 0, &dup));
  th_assert_rc(memport_region_is_readonly(dup), 1);
  assert_fd_cannot_write(region_fd(dup), 2 * g_page);
  memport_region_close(dup);
  memport_region_close(again);
  memport_region_t *x = NULL;
  th_assert_rc(memport_region_readonly(NULL, &x), MEMPORT_EINVAL);
  th_assert_rc(memport_region_readonly(f.rw, NULL), MEMPORT_EINVAL);
  ro_teardown(&f);
}

/* Another process gets only the descriptor number (fork + exec): it sees the writer's bytes,
 * including those written after it started, and cannot write by any means. */
static int helper_readonly_peer(const char *arg) {
  signal(SIGSEGV, SIG_DFL); /* the last step must die of it (also under ASan) */
  int fd = atoi(arg);
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  memport_region_t *r;
  if (memport_region_adopt(&r, fd, 0, 0) != 0)
    return 10;
  if (memport_region_is_readonly(r) != 1 || memport_region_size(r) != 2 * page)
    return 11;
  void *w;
  if (memport_region_map(r, 0, &w) != MEMPORT_EACCES)
    return 12;
  if (mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) != MAP_FAILED)
    return 13;
  if (write(fd, "x", 1) != -1 || pwrite(fd, "x", 1, 0) != -1)
    return 14;
  if (ftruncate(fd, (off_t)page) != -1 || ftruncate(fd, (off_t)(4 * page)) != -1)
    return 15;
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  int wfd = open(path, O_RDWR);
  if (wfd >= 0) {
    if (write(wfd, "x", 1) != -1 || mmap(NULL, page, PROT_WRITE, MAP_SHARED, wfd, 0) != MAP_FAILED)
      return 16;
    close(wfd);
  }
  volatile char *m;
  if (memport_region_map(r, MEMPORT_MAP_READONLY, (void **)&m) != 0)
    return 17;
  if (mprotect((void *)m, 2 * page, PROT_READ | PROT_WRITE) != -1)
    return 18;
  if (strcmp((const char *)m, "before") != 0)
    return 19;
  m[100] = 1; /* tell the writer we are ready: must not get here, the mapping is read-only */
  return 20;
}

static void test_readonly_handle_holds_in_another_process(void **state) {
  (void)state;
  struct ro_fixture f;
  ro_setup(&f);
  int inheritable = fcntl(f.fd, F_DUPFD, 100); /* without FD_CLOEXEC, to survive exec */
  assert_true(inheritable >= 0);
  char arg[16];
  snprintf(arg, sizeof arg, "%d", inheritable);
  pid_t pid = th_spawn_helper(g_argv0, "readonly-peer", arg);
  close(inheritable);
  /* the peer's last step writes into its read-only mapping and must die of SIGSEGV */
  assert_int_equal(th_wait(pid, 30), 128 + SIGSEGV);
  ro_teardown(&f);
}

static int helper_readonly_reader(const char *arg) {
  int fd = atoi(arg);
  memport_region_t *r;
  if (memport_region_adopt(&r, fd, 0, 0) != 0 || memport_region_is_readonly(r) != 1)
    return 10;
  volatile char *m;
  if (memport_region_map(r, MEMPORT_MAP_READONLY, (void **)&m) != 0)
    return 11;
  /* wait (bounded) for the writer's update through its pre-existing writable mapping */
  for (int i = 0; i < 10000 && m[0] != 'U'; i++) {
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  if (strcmp((const char *)m, "Updated by the writer") != 0)
    return 12;
  memport_unmap((void *)m);
  memport_region_close(r);
  return 0;
}

static void test_readonly_reader_in_another_process_sees_later_writes(void **state) {
  (void)state;
  struct ro_fixture f;
  ro_setup(&f);
  int inheritable = fcntl(f.fd, F_DUPFD, 100);
  assert_true(inheritable >= 0);
  char arg[16];
  snprintf(arg, sizeof arg, "%d", inheritable);
  pid_t pid = th_spawn_helper(g_argv0, "readonly-reader", arg);
  close(inheritable);
  struct timespec ts = {0, 20000000};
  nanosleep(&ts, NULL);
  strcpy(f.wmap, "Updated by the writer");
  assert_int_equal(th_wait(pid, 30), 0);
  ro_teardown(&f);
}

static void test_readonly_fails_cleanly_where_the_file_cannot_be_sealed(void **state) {
  (void)state;
  /* a memfd made without MFD_ALLOW_SEALING carries F_SEAL_SEAL from birth */
  int fd = (int)syscall(SYS_memfd_create, "test-unsealable", MFD_CLOEXEC);
  assert_true(fd >= 0);
  assert_int_equal(ftruncate(fd, (off_t)g_page), 0);
  memport_region_t *r, *ro = NULL;
  th_assert_ok(memport_region_adopt(&r, fd, 0, 0));
  struct counts c = counts_now();
  th_assert_rc(memport_region_readonly(r, &ro), MEMPORT_ENOTSUP);
  assert_null(ro);
  assert_counts(c);
  th_assert_rc(memport_region_is_readonly(r), 0); /* unchanged */
  char *p;
  th_assert_ok(memport_region_map(r, 0, (void **)&p));
  p[0] = 1;
  th_assert_ok(memport_unmap(p));
  memport_region_close(r);
}

/* Without /proc there is no way to make a read-only description of a writable memfd. */
static int child_without_proc(void *arg) {
  memport_region_t **regions = arg;
  if (unshare(CLONE_NEWNS) != 0 || mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) != 0 ||
      mount("none", "/proc", "tmpfs", 0, NULL) != 0)
    return 77; /* no privilege for a private mount namespace here */
  memport_region_t *d = NULL;
  if (memport_region_dup(regions[0], MEMPORT_DUP_READONLY, &d) != MEMPORT_ENOTSUP || d != NULL)
    return 10;
  /* a sealed region needs no reopening: its duplicate is read-only through the seal */
  if (memport_region_dup(regions[1], MEMPORT_DUP_READONLY, &d) != 0 || memport_region_is_readonly(d) != 1)
    return 11;
  memport_region_close(d);
  /* memport_region_readonly still works: it seals first, then duplicates */
  memport_region_t *ro = NULL;
  if (memport_region_readonly(regions[0], &ro) != 0 || memport_region_is_readonly(ro) != 1 ||
      memport_region_is_readonly(regions[0]) != 1)
    return 12;
  memport_os_handle_t fd;
  if (memport_region_os_handle(ro, &fd) != 0 || !(fcntl(fd, F_GET_SEALS) & F_SEAL_FUTURE_WRITE) ||
      mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) != MAP_FAILED)
    return 13;
  memport_region_close(ro);
  return 0;
}

static void test_dup_readonly_without_proc_is_enotsup_but_readonly_works(void **state) {
  (void)state;
  memport_region_t *regions[2], *sealed;
  th_assert_ok(memport_region_create(&regions[0], g_page, 0));
  th_assert_ok(memport_region_create(&sealed, g_page, 0));
  th_assert_ok(memport_region_readonly(sealed, &regions[1]));
  int rc = th_run_child(child_without_proc, regions, 20);
  memport_region_close(regions[0]);
  memport_region_close(regions[1]);
  memport_region_close(sealed);
  if (rc == 77)
    skip();
  assert_int_equal(rc, 0);
}

/* ---- dup ---------------------------------------------------------------------------------- */

static void test_dup_shares_memory_and_keeps_access(void **state) {
  (void)state;
  memport_region_t *r, *d;
  th_assert_ok(memport_region_create(&r, g_page, 0));
  th_assert_ok(memport_region_dup(r, 0, &d));
  assert_int_not_equal(region_fd(r), region_fd(d));
  assert_true(fcntl(region_fd(d), F_GETFD) & FD_CLOEXEC);
  assert_int_equal(memport_region_size(d), g_page);
  th_assert_rc(memport_region_is_readonly(d), 0);
  char *a, *b;
  th_assert_ok(memport_region_map(r, 0, (void **)&a));
  th_assert_ok(memport_region_close(r)); /* the duplicate keeps the memory alive */
  th_assert_ok(memport_region_map(d, 0, (void **)&b));
  strcpy(b, "dup");
  assert_string_equal(a, "dup");
  th_assert_ok(memport_unmap(a));
  th_assert_ok(memport_unmap(b));
  memport_region_close(d);
}

static void test_dup_readonly_is_a_readonly_description_while_region_stays_writable(void **state) {
  (void)state;
  memport_region_t *r, *d, *dd;
  th_assert_ok(memport_region_create(&r, g_page, 0));
  th_assert_ok(memport_region_dup(r, MEMPORT_DUP_READONLY, &d));
  th_assert_rc(memport_region_is_readonly(d), 1);
  th_assert_rc(memport_region_is_readonly(r), 0);
  int fd = region_fd(d);
  assert_int_equal(fcntl(fd, F_GETFL) & O_ACCMODE, O_RDONLY);
  assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
  assert_false(fcntl(fd, F_GET_SEALS) & F_SEAL_FUTURE_WRITE); /* no seal: r stays writable */
  assert_fd_cannot_write(fd, g_page);
  /* an O_RDONLY description cannot add seals either, so it cannot take r's write access away */
  assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE), -1);
  char *w, *m;
  th_assert_ok(memport_region_map(r, 0, (void **)&w)); /* made after the dup: still writable */
  th_assert_ok(memport_region_map(d, MEMPORT_MAP_READONLY, (void **)&m));
  strcpy(w, "writer");
  assert_string_equal(m, "writer");
  /* a duplicate of a read-only handle is read-only */
  th_assert_ok(memport_region_dup(d, 0, &dd));
  th_assert_rc(memport_region_is_readonly(dd), 1);
  assert_fd_cannot_write(region_fd(dd), g_page);
  th_assert_ok(memport_unmap(w));
  th_assert_ok(memport_unmap(m));
  memport_region_close(dd);
  memport_region_close(d);
  memport_region_close(r);
}

/* A holder running as another user, without CAP_DAC_OVERRIDE: the memfd's mode stops it from
 * reopening the memfd writable through /proc, but lets it make read-only duplicates. */
struct other_uid_arg {
  memport_region_t *rw, *ro;
};

static int child_other_uid(void *arg) {
  struct other_uid_arg *a = arg;
  if (geteuid() == 0) {
    if (setgroups(0, NULL) != 0 || setresgid(65534, 65534, 65534) != 0 || setresuid(65534, 65534, 65534) != 0)
      return 10;
  }
  int rofd = region_fd_raw(a->ro), rwfd = region_fd_raw(a->rw);
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", rofd);
  int fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd >= 0 || errno != EACCES)
    return 11;
  snprintf(path, sizeof path, "/proc/self/fd/%d", rwfd);
  fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd >= 0 || errno != EACCES)
    return 12;
  memport_region_t *d;
  if (memport_region_dup(a->rw, MEMPORT_DUP_READONLY, &d) != 0)
    return 13;
  int dfd = region_fd_raw(d);
  if ((fcntl(dfd, F_GETFL) & O_ACCMODE) != O_RDONLY)
    return 14;
  if (mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, dfd, 0) != MAP_FAILED)
    return 15;
  const char *m;
  if (memport_region_map(d, MEMPORT_MAP_READONLY, (void **)&m) != 0)
    return 16;
  int rc = strcmp(m, "shared across users") == 0 ? 0 : 17;
  memport_unmap((void *)m);
  memport_region_close(d); /* (valgrind checks the child's leaks too) */
  return rc;
}

static void test_other_uid_holder_cannot_reopen_writable_but_can_dup_readonly(void **state) {
  (void)state;
  struct other_uid_arg a;
  th_assert_ok(memport_region_create(&a.rw, g_page, 0));
  th_assert_ok(memport_region_dup(a.rw, MEMPORT_DUP_READONLY, &a.ro));
  char *w;
  th_assert_ok(memport_region_map(a.rw, 0, (void **)&w));
  strcpy(w, "shared across users");
  assert_int_equal(th_run_child(child_other_uid, &a, 20), 0);
  th_assert_ok(memport_unmap(w));
  memport_region_close(a.ro);
  memport_region_close(a.rw);
}

static void test_dup_rejects_bad_arguments_without_leaks(void **state) {
  (void)state;
  memport_region_t *r, *d = NULL;
  th_assert_ok(memport_region_create(&r, g_page, 0));
  struct counts c = counts_now();
  th_assert_rc(memport_region_dup(NULL, 0, &d), MEMPORT_EINVAL);
  th_assert_rc(memport_region_dup(r, 0, NULL), MEMPORT_EINVAL);
  th_assert_rc(memport_region_dup(r, 1u << 1, &d), MEMPORT_EINVAL);
  assert_null(d);
  assert_counts(c);
  memport_region_close(r);
}

/* ---- OS handles and adopt ----------------------------------------------------------------- */

static void test_os_handle_rejects_null(void **state) {
  (void)state;
  memport_os_handle_t h = 42;
  memport_region_t *r;
  th_assert_ok(memport_region_create(&r, g_page, 0));
  th_assert_rc(memport_region_os_handle(NULL, &h), MEMPORT_EINVAL);
  th_assert_rc(memport_region_os_handle(r, NULL), MEMPORT_EINVAL);
  assert_int_equal(h, 42);
  memport_region_close(r);
}

static void test_adopt_takes_size_from_the_file_and_owns_the_handle(void **state) {
  (void)state;
  int fd = raw_memfd(3 * g_page);
  memport_region_t *r;
  th_assert_ok(memport_region_adopt(&r, fd, 0, 0));
  assert_int_equal(region_fd(r), fd);
  assert_int_equal(memport_region_size(r), 3 * g_page);
  th_assert_rc(memport_region_is_readonly(r), 0);
  char *p;
  th_assert_ok(memport_region_map(r, 0, (void **)&p));
  assert_int_equal(pwrite(fd, "adopted", 8, (off_t)g_page), 8);
  assert_string_equal(p + g_page, "adopted");
  th_assert_ok(memport_unmap(p));
  th_assert_ok(memport_region_close(r));
  assert_int_equal(fcntl(fd, F_GETFD), -1); /* closed with the region */

  /* an explicit size may be smaller than the file, and is rounded up to pages */
  fd = raw_memfd(3 * g_page);
  th_assert_ok(memport_region_adopt(&r, fd, g_page + 1, 0));
  assert_int_equal(memport_region_size(r), 2 * g_page);
  assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
  memport_region_close(r);

  /* a file whose size is not a page multiple is rounded up; its last page is still mapped */
  fd = raw_memfd(100);
  th_assert_ok(memport_region_adopt(&r, fd, 0, 0));
  assert_int_equal(memport_region_size(r), g_page);
  th_assert_ok(memport_region_map(r, 0, (void **)&p));
  p[g_page - 1] = 1;
  th_assert_ok(memport_unmap(p));
  memport_region_close(r);
}

static void test_adopt_detects_readonly_from_seals_and_access_mode(void **state) {
  (void)state;
  memport_region_t *r;
  void *p = NULL;
  /* sealed against future writes */
  int fd = raw_memfd(g_page);
  assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE), 0);
  th_assert_ok(memport_region_adopt(&r, fd, 0, 0));
  th_assert_rc(memport_region_is_readonly(r), 1);
  th_assert_rc(memport_region_map(r, 0, &p), MEMPORT_EACCES);
  memport_region_close(r);

  /* opened O_RDONLY */
  int wfd = raw_memfd(g_page);
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", wfd);
  fd = open(path, O_RDONLY | O_CLOEXEC);
  assert_true(fd >= 0);
  close(wfd);
  th_assert_ok(memport_region_adopt(&r, fd, 0, 0));
  th_assert_rc(memport_region_is_readonly(r), 1);
  th_assert_rc(memport_region_map(r, 0, &p), MEMPORT_EACCES);
  memport_region_close(r);

  /* MEMPORT_ADOPT_READONLY on a writable descriptor: read-only at the OS level too */
  fd = raw_memfd(g_page);
  th_assert_ok(memport_region_adopt(&r, fd, 0, MEMPORT_ADOPT_READONLY));
  th_assert_rc(memport_region_is_readonly(r), 1);
  th_assert_rc(memport_region_map(r, 0, &p), MEMPORT_EACCES);
  assert_int_equal(fcntl(region_fd(r), F_GETFL) & O_ACCMODE, O_RDONLY);
  assert_fd_cannot_write(region_fd(r), g_page);
  assert_null(p);
  memport_region_close(r);
}

static void test_adopt_failure_leaves_the_handle_open_and_leaks_nothing(void **state) {
  (void)state;
  memport_region_t *r = NULL;
  int fd = raw_memfd(2 * g_page);
  int empty = raw_memfd(0);
  int pipefd[2];
  assert_int_equal(pipe2(pipefd, O_CLOEXEC), 0);
  int proc = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  assert_true(proc >= 0);
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  int wronly = open(path, O_WRONLY | O_CLOEXEC);
  assert_true(wronly >= 0);
  int closed = dup(fd);
  close(closed);

  struct counts c = counts_now();
  th_assert_rc(memport_region_adopt(NULL, fd, 0, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_region_adopt(&r, fd, 0, 1u << 3), MEMPORT_EINVAL);
  th_assert_rc(memport_region_adopt(&r, MEMPORT_OS_HANDLE_INVALID, 0, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_region_adopt(&r, closed, 0, 0), MEMPORT_EBADF);
  th_assert_rc(memport_region_adopt(&r, fd, 3 * g_page, 0), MEMPORT_EINVAL); /* larger than the file */
  th_assert_rc(memport_region_adopt(&r, fd, SIZE_MAX, 0), MEMPORT_EOVERFLOW);
  th_assert_rc(memport_region_adopt(&r, empty, 0, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_region_adopt(&r, pipefd[0], 0, 0), MEMPORT_EBADF);
  th_assert_rc(memport_region_adopt(&r, proc, 0, 0), MEMPORT_EBADF);
  th_assert_rc(memport_region_adopt(&r, wronly, 0, 0), MEMPORT_EACCES);
  th_assert_rc(memport_region_adopt(&r, pipefd[1], 0, 0),
               MEMPORT_EBADF);
  assert_null(r);
  assert_counts(c);
  int all[] = {fd, empty, pipefd[0], pipefd[1], proc, wronly};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
    assert_true(fcntl(all[i], F_GETFD) >= 0);
    close(all[i]);
  }
}

static int helper_adopt_and_reply(const char *arg) {
  int fd = atoi(arg);
  memport_region_t *r;
  if (memport_region_adopt(&r, fd, 0, 0) != 0)
    return 10;
  if (memport_region_is_readonly(r) != 0 || memport_region_size(r) != 4 * (size_t)sysconf(_SC_PAGESIZE))
    return 11;
  char *p;
  if (memport_region_map(r, 0, (void **)&p) != 0)
    return 12;
  if (strcmp(p, "from the parent") != 0)
    return 13;
  strcpy(p + 100, "from the exec'd child");
  memport_unmap(p);
  memport_region_close(r);
  return 0;
}

static void test_region_travels_across_fork_and_exec_as_a_raw_handle(void **state) {
  (void)state;
  memport_region_t *r;
  th_assert_ok(memport_region_create(&r, 4 * g_page, 0));
  char *p;
  th_assert_ok(memport_region_map(r, 0, (void **)&p));
  strcpy(p, "from the parent");
  int inheritable = fcntl(region_fd(r), F_DUPFD, 100);
  assert_true(inheritable >= 0);
  char arg[16];
  snprintf(arg, sizeof arg, "%d", inheritable);
  pid_t pid = th_spawn_helper(g_argv0, "adopt-reply", arg);
  close(inheritable);
  assert_int_equal(th_wait(pid, 30), 0);
  assert_string_equal(p + 100, "from the exec'd child");
  th_assert_ok(memport_unmap(p));
  memport_region_close(r);
}

/* ---- remap -------------------------------------------------------------------------------- */

static void test_remap_of_a_memport_mapping_shares_the_pages_and_holds_the_original(void **state) {
  (void)state;
  if (!th_can_duplicate_mappings())
    skip();
  memport_region_t *r;
  th_assert_ok(memport_region_create(&r, 4 * g_page, 0));
  char *p, *v;
  th_assert_ok(memport_region_map(r, 0, (void **)&p));
  th_assert_ok(memport_remap(p + g_page, 2 * g_page, 0, (void **)&v));
  size_t len = 0;
  th_assert_ok(memport_mapping_size(v, &len));
  assert_int_equal(len, 2 * g_page);
  strcpy(p + g_page + 10, "original");
  assert_string_equal(v + 10, "original");
  strcpy(v + g_page + 20, "view");
  assert_string_equal(p + 2 * g_page + 20, "view");
  /* the original cannot go while a view of it exists */
  th_assert_rc(memport_unmap(p), MEMPORT_EBUSY);
  assert_true(is_mapped(p, 4 * g_page));
  /* a view of a view holds the first view */
  char *vv;
  th_assert_ok(memport_remap(v + g_page, g_page, MEMPORT_MAP_READONLY, (void **)&vv));
  assert_string_equal(vv + 20, "view");
  th_assert_rc(memport_unmap(v), MEMPORT_EBUSY);
  th_assert_ok(memport_unmap(vv));
  th_assert_ok(memport_unmap(v));
  assert_false(is_mapped(v, 2 * g_page));
  th_assert_rc(memport_unmap(v), MEMPORT_EINVAL);
  th_assert_ok(memport_unmap(p));
  memport_region_close(r);
}

static void test_remap_readonly_view_faults_while_original_stays_writable(void **state) {
  (void)state;
  if (!th_can_duplicate_mappings())
    skip();
  memport_region_t *r;
  th_assert_ok(memport_region_create(&r, 2 * g_page, 0));
  char *p, *v;
  th_assert_ok(memport_region_map(r, 0, (void **)&p));
  th_assert_ok(memport_remap(p, 2 * g_page, MEMPORT_MAP_READONLY, (void **)&v));
  strcpy(p + g_page, "still writable");
  assert_string_equal(v + g_page, "still writable");
  assert_int_equal(th_run_child(child_write_byte, v + g_page, 10), 128 + SIGSEGV);
  assert_int_equal(th_run_child(child_write_byte, v, 10), 128 + SIGSEGV);
  assert_string_equal(v + g_page, "still writable");
  th_assert_ok(memport_unmap(v));
  th_assert_ok(memport_unmap(p));
  memport_region_close(r);
}

static void test_remap_of_a_whole_mirror_is_a_mirror(void **state) {
  (void)state;
  if (!th_can_duplicate_mappings())
    skip();
  memport_region_t *r;
  th_assert_ok(memport_region_create(&r, g_page, 0));
  unsigned char *m, *v;
  th_assert_ok(memport_region_map(r, MEMPORT_MAP_MIRROR, (void **)&m));
  th_assert_ok(memport_remap(m, 2 * g_page, 0, (void **)&v));
  v[g_page + 7] = 0x42;
  assert_int_equal(v[7], 0x42);
  assert_int_equal(m[7], 0x42);
  assert_int_equal(m[g_page + 7], 0x42);
  /* views only hold the mappings they show */
  void *other;
  th_assert_ok(memport_region_map(r, 0, &other));
  th_assert_ok(memport_unmap(other));
  th_assert_rc(memport_unmap(m), MEMPORT_EBUSY);
  th_assert_ok(memport_unmap(v));
  th_assert_ok(memport_unmap(m));
  memport_region_close(r);
}

static void test_remap_of_private_memory_is_enotsup(void **state) {
  (void)state;
  void *heap = NULL;
  assert_int_equal(posix_memalign(&heap, g_page, 2 * g_page), 0);
  memset(heap, 1, 2 * g_page);
  char *anon = mmap(NULL, 2 * g_page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(anon != MAP_FAILED);
  void *v = NULL;
  struct counts c = counts_now();
  th_assert_rc(memport_remap(heap, g_page, 0, &v), MEMPORT_ENOTSUP);
  th_assert_rc(memport_remap(anon, 2 * g_page, 0, &v), MEMPORT_ENOTSUP);
  th_assert_rc(memport_remap(anon, g_page, MEMPORT_MAP_READONLY, &v), MEMPORT_ENOTSUP);
  /* a range that is partly shared and partly private is refused as a whole */
  memport_region_t *r;
  th_assert_ok(memport_region_create(&r, g_page, 0));
  char *p;
  th_assert_ok(memport_region_map(r, 0, (void **)&p));
  char *mixed = mmap(NULL, 2 * g_page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(mixed != MAP_FAILED);
  assert_true(mmap(mixed, g_page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, region_fd(r), 0) == mixed);
  struct counts c2 = counts_now();
  th_assert_rc(memport_remap(mixed, 2 * g_page, 0, &v), MEMPORT_ENOTSUP);
  assert_counts(c2);
  assert_null(v);
  munmap(mixed, 2 * g_page);
  th_assert_ok(memport_unmap(p));
  memport_region_close(r);
  assert_counts(c);
  munmap(anon, 2 * g_page);
  free(heap);
}

static void test_remap_rejects_bad_arguments_and_unmapped_ranges(void **state) {
  (void)state;
  memport_region_t *r;
  th_assert_ok(memport_region_create(&r, 2 * g_page, 0));
  char *p, *ro;
  th_assert_ok(memport_region_map(r, 0, (void **)&p));
  th_assert_ok(memport_region_map(r, MEMPORT_MAP_READONLY, (void **)&ro));
  /* a shared mapping followed by a hole */
  char *holed = mmap(NULL, 2 * g_page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  assert_true(holed != MAP_FAILED);
  assert_int_equal(munmap(holed + g_page, g_page), 0);
  void *v = NULL;
  struct counts c = counts_now();
  th_assert_rc(memport_remap(NULL, g_page, 0, &v), MEMPORT_EINVAL);
  th_assert_rc(memport_remap(p, g_page, 0, NULL), MEMPORT_EINVAL);
  th_assert_rc(memport_remap(p + 1, g_page, 0, &v), MEMPORT_EINVAL);
  th_assert_rc(memport_remap(p, g_page + 1, 0, &v), MEMPORT_EINVAL);
  th_assert_rc(memport_remap(p, 0, 0, &v), MEMPORT_EINVAL);
  th_assert_rc(memport_remap(p, g_page, MEMPORT_MAP_MIRROR, &v), MEMPORT_EINVAL);
  th_assert_rc(memport_remap(p, g_page, 1u << 7, &v), MEMPORT_EINVAL);
  th_assert_rc(memport_remap((void *)(uintptr_t)(0 - g_page), 2 * g_page, 0, &v), MEMPORT_EOVERFLOW);
  th_assert_rc(memport_remap(holed, 2 * g_page, 0, &v), MEMPORT_ENOMEM);
  th_assert_rc(memport_remap(holed + g_page, g_page, 0, &v), MEMPORT_ENOMEM);
  th_assert_rc(memport_remap(ro, g_page, 0, &v), MEMPORT_EACCES); /* no more access than the source */
  assert_null(v);
  assert_counts(c);
  if (th_can_duplicate_mappings()) {
    th_assert_ok(memport_remap(ro, g_page, MEMPORT_MAP_READONLY, &v));
    th_assert_ok(memport_unmap(v));
  }
  munmap(holed, g_page);
  th_assert_ok(memport_unmap(ro));
  th_assert_ok(memport_unmap(p));
  memport_region_close(r);
}

/* ---- the registry under threads ----------------------------------------------------------- */

struct thread_arg {
  memport_region_t *r;
  int iterations;
  int failures;
};

static void *map_unmap_loop(void *arg) {
  struct thread_arg *t = arg;
  for (int i = 0; i < t->iterations; i++) {
    unsigned char *p;
    size_t len;
    unsigned flags = (i % 3 == 0) ? MEMPORT_MAP_MIRROR : 0;
    if (memport_region_map(t->r, flags, (void **)&p) != 0) {
      t->failures++;
      continue;
    }
    if (memport_mapping_size(p, &len) != 0 || len != (flags ? 2 : 1) * memport_region_size(t->r))
      t->failures++;
    p[i % 64]++;
    /* (no double-unmap check here: another thread may already have been given the address) */
    if (memport_unmap(p) != 0)
      t->failures++;
  }
  return NULL;
}

static void test_mapping_registry_is_thread_safe(void **state) {
  (void)state;
  memport_region_t *r;
  th_assert_ok(memport_region_create(&r, g_page, 0));
  pthread_t th[4];
  struct thread_arg args[4];
  int fds = th_count_fds(), maps = count_region_maps();
  for (int i = 0; i < 4; i++) {
    args[i] = (struct thread_arg){r, 200, 0};
    assert_int_equal(pthread_create(&th[i], NULL, map_unmap_loop, &args[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(args[i].failures, 0);
  }
  assert_int_equal(th_count_fds(), fds);
  assert_int_equal(count_region_maps(), maps);
  memport_region_close(r);
}

int main(int argc, char **argv) {
  static const struct th_helper helpers[] = {
      {"readonly-peer", helper_readonly_peer},
      {"readonly-reader", helper_readonly_reader},
      {"adopt-reply", helper_adopt_and_reply},
      {NULL, NULL},
  };
  th_helper_dispatch(argc, argv, helpers);
  g_argv0 = argv[0];
  g_page = (size_t)sysconf(_SC_PAGESIZE);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_region_create_rounds_up_to_pages_and_is_zero_filled),
      cmocka_unit_test(test_region_create_rejects_bad_arguments_without_leaks),
      cmocka_unit_test(test_region_close_releases_descriptor_and_handles_null),
      cmocka_unit_test(test_region_memfd_is_sealed_against_resize_cloexec_and_mode_0444),
      cmocka_unit_test(test_map_read_write_is_shared_between_mappings),
      cmocka_unit_test(test_map_stays_valid_after_region_close),
      cmocka_unit_test(test_map_readonly_faults_on_write),
      cmocka_unit_test(test_map_rejects_bad_arguments_without_leaks),
      cmocka_unit_test(test_unmap_rejects_addresses_that_are_not_memport_mappings),
      cmocka_unit_test(test_mirror_wraps_writes_around_the_end),
      cmocka_unit_test(test_mirror_readonly_is_allowed_and_shows_the_writers_bytes),
      cmocka_unit_test(test_mirror_failure_after_reserve_leaves_nothing_mapped),
      cmocka_unit_test(test_map_of_impossible_size_fails_with_enomem_without_leaks),
      cmocka_unit_test(test_map_writable_of_readonly_handle_is_eacces),
      cmocka_unit_test(test_readonly_handle_refuses_writable_mmap_mprotect_write_ftruncate),
      cmocka_unit_test(test_readonly_mapping_cannot_be_mprotected_writable),
      cmocka_unit_test(test_readonly_handle_refuses_proc_reopen_for_writing),
      cmocka_unit_test(test_readonly_keeps_the_creators_existing_writable_mapping),
      cmocka_unit_test(test_readonly_again_returns_another_readonly_handle),
      cmocka_unit_test(test_readonly_handle_holds_in_another_process),
      cmocka_unit_test(test_readonly_reader_in_another_process_sees_later_writes),
      cmocka_unit_test(test_readonly_fails_cleanly_where_the_file_cannot_be_sealed),
      cmocka_unit_test(test_dup_shares_memory_and_keeps_access),
      cmocka_unit_test(test_dup_readonly_is_a_readonly_description_while_region_stays_writable),
      cmocka_unit_test(test_other_uid_holder_cannot_reopen_writable_but_can_dup_readonly),
      cmocka_unit_test(test_dup_readonly_without_proc_is_enotsup_but_readonly_works),
      cmocka_unit_test(test_dup_rejects_bad_arguments_without_leaks),
      cmocka_unit_test(test_os_handle_rejects_null),
      cmocka_unit_test(test_adopt_takes_size_from_the_file_and_owns_the_handle),
      cmocka_unit_test(test_adopt_detects_readonly_from_seals_and_access_mode),
      cmocka_unit_test(test_adopt_failure_leaves_the_handle_open_and_leaks_nothing),
      cmocka_unit_test(test_region_travels_across_fork_and_exec_as_a_raw_handle),
      cmocka_unit_test(test_remap_of_a_memport_mapping_shares_the_pages_and_holds_the_original),
      cmocka_unit_test(test_remap_readonly_view_faults_while_original_stays_writable),
      cmocka_unit_test(test_remap_of_a_whole_mirror_is_a_mirror),
      cmocka_unit_test(test_remap_of_private_memory_is_enotsup),
      cmocka_unit_test(test_remap_rejects_bad_arguments_and_unmapped_ranges),
      cmocka_unit_test(test_mapping_registry_is_thread_safe),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
