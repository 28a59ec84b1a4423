/* SPDX-License-Identifier: MIT */
/* test_inherit.c: fork-inheritance modes (SHARE, COPY, NONE, ZERO), each through a real fork and
 * seen from both sides, plus the Linux rules for moving memory onto a memfd and back. */
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
#include <unistd.h>

static size_t g_page;

struct counts {
  int fds, maps;
};
static struct counts counts_now(void) { return (struct counts){th_count_fds(), th_count_maps()}; }
static void assert_counts(struct counts before) {
  struct counts after = counts_now();
  assert_int_equal(before.fds, after.fds);
  assert_int_equal(before.maps, after.maps);
}

/* Private anonymous pages between two inaccessible guard pages, so that the kernel never merges
 * them with a neighbouring mapping and the mapping counts of the tests are exact. */
static char *anon(size_t pages) {
  char *g = mmap(NULL, (pages + 2) * g_page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(g != MAP_FAILED);
  assert_int_equal(mprotect(g + g_page, pages * g_page, PROT_READ | PROT_WRITE), 0);
  return g + g_page;
}

static void unanon(char *p, size_t pages) { assert_int_equal(munmap(p - g_page, (pages + 2) * g_page), 0); }

/* The /proc/self/maps line of the mapping holding addr: its permissions ("rw-p") and path. */
static bool vma_of(const void *addr, char perms[5], char *path, size_t pathlen) {
  FILE *f = fopen("/proc/self/maps", "r");
  assert_non_null(f);
  char line[4096];
  bool found = false;
  while (!found && fgets(line, sizeof line, f) != NULL) {
    unsigned long lo, hi;
    int n = 0;
    if (sscanf(line, "%lx-%lx %4s %*s %*s %*s %n", &lo, &hi, perms, &n) < 3)
      continue;
    if ((uintptr_t)addr >= lo && (uintptr_t)addr < hi) {
      found = true;
      if (path != NULL) {
        snprintf(path, pathlen, "%s", n > 0 ? line + n : "");
        path[strcspn(path, "\n")] = '\0';
      }
    }
  }
  fclose(f);
  return found;
}

static bool is_shared(const void *addr) {
  char perms[5];
  assert_true(vma_of(addr, perms, NULL, 0));
  return perms[3] == 's';
}

static bool all_zero(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != 0)
      return false;
  return true;
}

/* ---- a fork seen from both sides ----------------------------------------------------------- */

/* Layout of the 3-page test range: the parent writes page 0 before the fork; the child writes
 * page 1; the parent writes page 2 after the child has written, and the child looks at it. */
#define BEFORE "written by the parent before fork"
#define CHILD  "written by the child"
#define AFTER  "written by the parent after the child"

struct both_sides {
  char *p;
  int mode;
  int to_parent[2], to_child[2];
};

static int wait_byte(int fd) {
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  char c;
  if (poll(&pfd, 1, 20000) != 1 || read(fd, &c, 1) != 1)
    return -1;
  return 0;
}

static int child_both_sides(void *arg) {
  struct both_sides *s = arg;
  signal(SIGSEGV, SIG_DFL);
  signal(SIGBUS, SIG_DFL);
  char *p = s->p;
  /* 1. what the child sees of the parent's data */
  if (s->mode == MEMPORT_INHERIT_ZERO) {
    if (!all_zero(p, 3 * g_page))
      return 10;
  } else if (strcmp(p, BEFORE) != 0) {
    return 11;
  }
  /* 2. the child writes; the parent looks */
  strcpy(p + g_page, CHILD);
  if (write(s->to_parent[1], "w", 1) != 1 || wait_byte(s->to_child[0]) != 0)
    return 12;
  /* 3. the parent has written page 2 */
  bool sees_parent = strcmp(p + 2 * g_page, AFTER) == 0;
  if (s->mode == MEMPORT_INHERIT_SHARE && !sees_parent)
    return 13;
  if (s->mode != MEMPORT_INHERIT_SHARE && (sees_parent || !all_zero(p + 2 * g_page, g_page)))
    return 14;
  return 0;
}

/* Fork with the range in its current mode and check both directions. `p` holds BEFORE. */
static void check_both_sides(char *p, int mode) {
  struct both_sides s = {.p = p, .mode = mode};
  assert_int_equal(pipe2(s.to_parent, O_CLOEXEC), 0);
  assert_int_equal(pipe2(s.to_child, O_CLOEXEC), 0);
  pid_t pid = th_fork(child_both_sides, &s, 30);
  assert_true(pid > 0);
  int got = wait_byte(s.to_parent[0]);
  bool parent_sees_child = got == 0 && strcmp(p + g_page, CHILD) == 0;
  bool parent_page1_clean = got == 0 && all_zero(p + g_page, g_page);
  strcpy(p + 2 * g_page, AFTER);
  assert_int_equal(write(s.to_child[1], "p", 1), 1);
  int status = th_wait(pid, 30);
  close(s.to_parent[0]);
  close(s.to_parent[1]);
  close(s.to_child[0]);
  close(s.to_child[1]);
  assert_int_equal(got, 0);
  assert_int_equal(status, 0);
  if (mode == MEMPORT_INHERIT_SHARE)
    assert_true(parent_sees_child);
  else
    assert_true(parent_page1_clean);
  /* the parent's own data is never changed by the child */
  assert_string_equal(p, BEFORE);
  /* reset for the next round */
  memset(p + g_page, 0, 2 * g_page);
}

static int child_touch(void *arg) {
  signal(SIGSEGV, SIG_DFL);
  signal(SIGBUS, SIG_DFL);
  return *(volatile char *)arg == 0x7f ? 1 : 2; /* must not return: the page is absent */
}

static int child_sees_0x5a(void *arg) {
  signal(SIGSEGV, SIG_DFL);
  signal(SIGBUS, SIG_DFL);
  return *(volatile char *)arg == 0x5a ? 0 : 3; /* faults when the page is absent */
}

static int child_check_absent(void *arg) {
  unsigned char vec[4];
  /* the range is unmapped in the child: mincore says so, without touching it */
  if (mincore(arg, g_page, vec) == 0 || errno != ENOMEM)
    return 1;
  return 0;
}

/* ---- SHARE --------------------------------------------------------------------------------- */

static void test_share_moves_private_memory_in_place_keeping_contents(void **state) {
  (void)state;
  char *p = anon(3);
  strcpy(p, BEFORE);
  p[3 * g_page - 1] = 'e';
  assert_false(is_shared(p));
  struct counts c = counts_now();
  th_assert_ok(memport_inherit(p, 3 * g_page, MEMPORT_INHERIT_SHARE));
  assert_counts(c); /* the memfd is closed, the mapping replaced one for one */
  assert_true(is_shared(p));
  char perms[5], path[256];
  assert_true(vma_of(p, perms, path, sizeof path));
  assert_string_equal(perms, "rw-s");
  assert_non_null(strstr(path, "/memfd:memport-share"));
  assert_string_equal(p, BEFORE);
  assert_int_equal(p[3 * g_page - 1], 'e');
  p[3 * g_page - 1] = 0;
  check_both_sides(p, MEMPORT_INHERIT_SHARE);
  /* again on the same range: already shared, nothing changes */
  th_assert_ok(memport_inherit(p, 3 * g_page, MEMPORT_INHERIT_SHARE));
  assert_counts(c);
  check_both_sides(p, MEMPORT_INHERIT_SHARE);
  unanon(p, 3);
}

static void test_share_of_a_subrange_leaves_the_neighbours_private(void **state) {
  (void)state;
  char *big = anon(5);
  char *p = big + g_page;
  strcpy(big, "left");
  strcpy(p, BEFORE);
  strcpy(big + 4 * g_page, "right");
  th_assert_ok(memport_inherit(p, 3 * g_page, MEMPORT_INHERIT_SHARE));
  assert_false(is_shared(big));
  assert_true(is_shared(p));
  assert_true(is_shared(p + 2 * g_page));
  assert_false(is_shared(big + 4 * g_page));
  assert_string_equal(big, "left");
  assert_string_equal(big + 4 * g_page, "right");
  check_both_sides(p, MEMPORT_INHERIT_SHARE);
  unanon(big, 5);
}

static void test_share_keeps_protection_and_unreadable_contents(void **state) {
  (void)state;
  char *p = anon(2);
  strcpy(p, "read-only data");
  strcpy(p + g_page, "hidden data");
  assert_int_equal(mprotect(p, g_page, PROT_READ), 0);
  assert_int_equal(mprotect(p + g_page, g_page, PROT_NONE), 0);
  th_assert_ok(memport_inherit(p, 2 * g_page, MEMPORT_INHERIT_SHARE));
  char perms[5];
  assert_true(vma_of(p, perms, NULL, 0));
  assert_string_equal(perms, "r--s");
  assert_true(vma_of(p + g_page, perms, NULL, 0));
  assert_string_equal(perms, "---s");
  assert_string_equal(p, "read-only data");
  assert_int_equal(mprotect(p + g_page, g_page, PROT_READ), 0);
  assert_string_equal(p + g_page, "hidden data");
  unanon(p, 2);
}

static void test_share_of_heap_memory_works(void **state) {
  (void)state;
  char *p = NULL;
  assert_int_equal(posix_memalign((void **)&p, g_page, 3 * g_page), 0);
  memset(p, 0, 3 * g_page);
  strcpy(p, BEFORE);
  char perms[5];
  assert_true(vma_of(p, perms, NULL, 0));
  if (perms[2] == 'x') {
    /* valgrind's heap is executable, and executable memory is never moved */
    th_assert_rc(memport_inherit(p, 3 * g_page, MEMPORT_INHERIT_SHARE), MEMPORT_ENOTSUP);
    free(p);
    skip();
  }
  th_assert_ok(memport_inherit(p, 3 * g_page, MEMPORT_INHERIT_SHARE));
  assert_string_equal(p, BEFORE);
  check_both_sides(p, MEMPORT_INHERIT_SHARE);
  /* back to private before the allocator gets the pages again */
  th_assert_ok(memport_inherit(p, 3 * g_page, MEMPORT_INHERIT_COPY));
  assert_false(is_shared(p));
  free(p);
}

static void test_share_is_a_noop_on_a_memport_mapping(void **state) {
  (void)state;
  memport_region_t *r;
  th_assert_ok(memport_region_create(&r, 3 * g_page, 0));
  char *p;
  th_assert_ok(memport_region_map(r, 0, (void **)&p));
  char before[256], after[256], perms[5];
  assert_true(vma_of(p, perms, before, sizeof before));
  strcpy(p, BEFORE);
  struct counts c = counts_now();
  th_assert_ok(memport_inherit(p, 3 * g_page, MEMPORT_INHERIT_SHARE));
  assert_counts(c);
  assert_true(vma_of(p, perms, after, sizeof after));
  assert_string_equal(before, after);
  check_both_sides(p, MEMPORT_INHERIT_SHARE);
  th_assert_ok(memport_unmap(p));
  memport_region_close(r);
}

static void test_shared_memory_can_be_remapped_and_is_not_moved_back_while_viewed(void **state) {
  (void)state;
  if (!th_can_duplicate_mappings())
    skip();
  char *p = anon(2);
  void *v = NULL;
  th_assert_rc(memport_remap(p, 2 * g_page, 0, &v), MEMPORT_ENOTSUP);
  th_assert_ok(memport_inherit(p, 2 * g_page, MEMPORT_INHERIT_SHARE));
  char *view;
  th_assert_ok(memport_remap(p, 2 * g_page, 0, (void **)&view));
  strcpy(p + g_page, "one page, two addresses");
  assert_string_equal(view + g_page, "one page, two addresses");
  /* moving it back to private memory would detach it from the view: refused while it exists */
  struct counts c = counts_now();
  th_assert_rc(memport_inherit(p, 2 * g_page, MEMPORT_INHERIT_COPY), MEMPORT_EBUSY);
  th_assert_rc(memport_inherit(p + g_page, g_page, MEMPORT_INHERIT_ZERO), MEMPORT_EBUSY);
  assert_counts(c);
  assert_true(is_shared(p));
  /* a view of the first page only does not hold the second */
  char *view1;
  th_assert_ok(memport_remap(p, g_page, MEMPORT_MAP_READONLY, (void **)&view1));
  th_assert_ok(memport_unmap(view));
  th_assert_ok(memport_inherit(p + g_page, g_page, MEMPORT_INHERIT_COPY));
  th_assert_rc(memport_inherit(p, g_page, MEMPORT_INHERIT_COPY), MEMPORT_EBUSY);
  th_assert_ok(memport_unmap(view1));
  th_assert_ok(memport_inherit(p, g_page, MEMPORT_INHERIT_COPY));
  assert_false(is_shared(p));
  assert_string_equal(p + g_page, "one page, two addresses");
  unanon(p, 2);
}

static void test_share_refuses_file_backed_and_executable_memory(void **state) {
  (void)state;
  char name[] = "/tmp/memport-inherit-XXXXXX";
  int fd = mkstemp(name);
  assert_true(fd >= 0);
  unlink(name);
  assert_int_equal(ftruncate(fd, (off_t)g_page), 0);
  char *file = mmap(NULL, g_page, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  assert_true(file != MAP_FAILED);
  close(fd);
  char *code = mmap(NULL, g_page, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(code != MAP_FAILED);
  struct counts c = counts_now();
  th_assert_rc(memport_inherit(file, g_page, MEMPORT_INHERIT_SHARE), MEMPORT_ENOTSUP);
  th_assert_rc(memport_inherit(file, g_page, MEMPORT_INHERIT_ZERO), MEMPORT_ENOTSUP);
  th_assert_rc(memport_inherit(code, g_page, MEMPORT_INHERIT_SHARE), MEMPORT_ENOTSUP);
  assert_counts(c);
  assert_false(is_shared(file));
  /* COPY and NONE are plain madvise flags and work on any mapping */
  th_assert_ok(memport_inherit(file, g_page, MEMPORT_INHERIT_NONE));
  assert_int_equal(th_run_child(child_check_absent, file, 10), 0);
  th_assert_ok(memport_inherit(file, g_page, MEMPORT_INHERIT_COPY));
  assert_int_equal(th_run_child(child_check_absent, file, 10), 1);
  munmap(file, g_page);
  munmap(code, g_page);
}

/* ---- COPY ---------------------------------------------------------------------------------- */

static void test_copy_is_copy_on_write_from_both_sides(void **state) {
  (void)state;
  char *p = anon(3);
  strcpy(p, BEFORE);
  check_both_sides(p, MEMPORT_INHERIT_COPY); /* the default */
  th_assert_ok(memport_inherit(p, 3 * g_page, MEMPORT_INHERIT_COPY));
  check_both_sides(p, MEMPORT_INHERIT_COPY);
  unanon(p, 3);
}

static void test_copy_moves_shared_memory_back_to_private_keeping_contents(void **state) {
  (void)state;
  char *p = anon(3);
  strcpy(p, BEFORE);
  struct counts c = counts_now();
  th_assert_ok(memport_inherit(p, 3 * g_page, MEMPORT_INHERIT_SHARE));
  th_assert_ok(memport_inherit(p, 3 * g_page, MEMPORT_INHERIT_COPY));
  assert_counts(c);
  assert_false(is_shared(p));
  assert_string_equal(p, BEFORE);
  check_both_sides(p, MEMPORT_INHERIT_COPY);
  unanon(p, 3);
}

static void test_copy_restores_inheritance_after_none_and_zero(void **state) {
  (void)state;
  char *p = anon(3);
  strcpy(p, BEFORE);
  th_assert_ok(memport_inherit(p, 3 * g_page, MEMPORT_INHERIT_NONE));
  th_assert_ok(memport_inherit(p, 3 * g_page, MEMPORT_INHERIT_COPY));
  check_both_sides(p, MEMPORT_INHERIT_COPY);
  th_assert_ok(memport_inherit(p, 3 * g_page, MEMPORT_INHERIT_ZERO));
  th_assert_ok(memport_inherit(p, 3 * g_page, MEMPORT_INHERIT_COPY));
  check_both_sides(p, MEMPORT_INHERIT_COPY);
  unanon(p, 3);
}

static void test_copy_and_zero_of_a_memport_mapping_are_enotsup(void **state) {
  (void)state;
  memport_region_t *r;
  th_assert_ok(memport_region_create(&r, 3 * g_page, 0));
  char *p;
  th_assert_ok(memport_region_map(r, 0, (void **)&p));
  strcpy(p, BEFORE);
  struct counts c = counts_now();
  th_assert_rc(memport_inherit(p, g_page, MEMPORT_INHERIT_COPY), MEMPORT_ENOTSUP);
  th_assert_rc(memport_inherit(p, 3 * g_page, MEMPORT_INHERIT_ZERO), MEMPORT_ENOTSUP);
  assert_counts(c);
  check_both_sides(p, MEMPORT_INHERIT_SHARE); /* unchanged */
  th_assert_ok(memport_unmap(p));
  memport_region_close(r);
}

static void test_copy_of_a_mixed_range_changes_nothing_when_refused(void **state) {
  (void)state;
  memport_region_t *r;
  th_assert_ok(memport_region_create(&r, g_page, 0));
  memport_os_handle_t fd;
  th_assert_ok(memport_region_os_handle(r, &fd));
  char *p = anon(2);
  strcpy(p, BEFORE);
  th_assert_ok(memport_inherit(p, g_page, MEMPORT_INHERIT_SHARE));
  assert_true(mmap(p + g_page, g_page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == p + g_page);
  th_assert_rc(memport_inherit(p, 2 * g_page, MEMPORT_INHERIT_COPY), MEMPORT_ENOTSUP);
  th_assert_rc(memport_inherit(p, 2 * g_page, MEMPORT_INHERIT_ZERO), MEMPORT_ENOTSUP);
  assert_true(is_shared(p)); /* the SHARE'd page was not moved back */
  char perms[5], path[256];
  assert_true(vma_of(p, perms, path, sizeof path));
  assert_non_null(strstr(path, "memport-share"));
  assert_string_equal(p, BEFORE);
  unanon(p, 2);
  memport_region_close(r);
}

/* ---- NONE ---------------------------------------------------------------------------------- */

static void test_none_leaves_the_range_absent_in_the_child(void **state) {
  (void)state;
  char *p = anon(3);
  strcpy(p, BEFORE);
  th_assert_ok(memport_inherit(p, 3 * g_page, MEMPORT_INHERIT_NONE));
  assert_int_equal(th_run_child(child_check_absent, p + g_page, 10), 0);
  assert_int_equal(th_run_child(child_touch, p, 10), 128 + SIGSEGV);
  assert_int_equal(th_run_child(child_touch, p + 2 * g_page, 10), 128 + SIGSEGV);
  /* the parent keeps everything */
  assert_string_equal(p, BEFORE);
  strcpy(p + g_page, "parent still writes");
  assert_string_equal(p + g_page, "parent still writes");
  unanon(p, 3);
}

static void test_none_works_on_shared_memory_too(void **state) {
  (void)state;
  memport_region_t *r;
  th_assert_ok(memport_region_create(&r, g_page, 0));
  char *m;
  th_assert_ok(memport_region_map(r, 0, (void **)&m));
  th_assert_ok(memport_inherit(m, g_page, MEMPORT_INHERIT_NONE));
  assert_int_equal(th_run_child(child_touch, m, 10), 128 + SIGSEGV);
  char *s = anon(1);
  th_assert_ok(memport_inherit(s, g_page, MEMPORT_INHERIT_SHARE));
  th_assert_ok(memport_inherit(s, g_page, MEMPORT_INHERIT_NONE));
  assert_true(is_shared(s));
  assert_int_equal(th_run_child(child_touch, s, 10), 128 + SIGSEGV);
  /* SHARE again makes it inherited, though the memory is shared already and stays in place */
  th_assert_ok(memport_inherit(s, g_page, MEMPORT_INHERIT_SHARE));
  s[0] = 0x5a;
  assert_int_equal(th_run_child(child_sees_0x5a, s, 10), 0);
  th_assert_ok(memport_inherit(m, g_page, MEMPORT_INHERIT_SHARE));
  m[0] = 0x5a;
  assert_int_equal(th_run_child(child_sees_0x5a, m, 10), 0);
  unanon(s, 1);
  th_assert_ok(memport_unmap(m));
  memport_region_close(r);
}

/* In a child, a memport mapping the child did not inherit is no memport mapping: memport_unmap
 * must not unmap what the child has put at that address since. */
static int child_registry_forgot(void *arg) {
  char *p = arg;
  size_t len = 0;
  if (memport_mapping_size(p, &len) != MEMPORT_EINVAL)
    return 1;
  char *mine = mmap(p, 2 * g_page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  if (mine != p)
    return 2;
  mine[0] = 1;
  if (memport_unmap(p) != MEMPORT_EINVAL)
    return 3;
  signal(SIGSEGV, SIG_DFL);
  return mine[0] == 1 ? 0 : 4; /* faults if memport_unmap took the child's own memory */
}

static int child_registry_kept(void *arg) {
  size_t len = 0;
  return memport_mapping_size(arg, &len) == 0 && len == 2 * g_page ? 0 : 1;
}

static void test_none_mapping_is_no_memport_mapping_in_the_child(void **state) {
  (void)state;
  memport_region_t *r;
  th_assert_ok(memport_region_create(&r, 2 * g_page, 0));
  char *m;
  th_assert_ok(memport_region_map(r, 0, (void **)&m));
  th_assert_ok(memport_inherit(m + g_page, g_page, MEMPORT_INHERIT_NONE)); /* part of it is enough */
  assert_int_equal(th_run_child(child_registry_forgot, m, 10), 0);
  /* inherited again as a whole: a memport mapping in the child again */
  th_assert_ok(memport_inherit(m, 2 * g_page, MEMPORT_INHERIT_SHARE));
  assert_int_equal(th_run_child(child_registry_kept, m, 10), 0);
  size_t len = 0;
  th_assert_ok(memport_mapping_size(m, &len)); /* the parent's registry is untouched */
  assert_int_equal(len, 2 * g_page);
  th_assert_ok(memport_unmap(m));
  memport_region_close(r);
}

/* ---- ZERO ---------------------------------------------------------------------------------- */

static void test_zero_gives_the_child_fresh_zero_pages(void **state) {
  (void)state;
  char *p = anon(3);
  strcpy(p, BEFORE);
  th_assert_ok(memport_inherit(p, 3 * g_page, MEMPORT_INHERIT_ZERO));
  check_both_sides(p, MEMPORT_INHERIT_ZERO);
  /* and again: the setting stays for later forks */
  check_both_sides(p, MEMPORT_INHERIT_ZERO);
  unanon(p, 3);
}

static void test_zero_after_none_and_after_share(void **state) {
  (void)state;
  char *p = anon(3);
  strcpy(p, BEFORE);
  th_assert_ok(memport_inherit(p, 3 * g_page, MEMPORT_INHERIT_NONE));
  th_assert_ok(memport_inherit(p, 3 * g_page, MEMPORT_INHERIT_ZERO));
  check_both_sides(p, MEMPORT_INHERIT_ZERO);
  struct counts c = counts_now();
  th_assert_ok(memport_inherit(p, 3 * g_page, MEMPORT_INHERIT_SHARE));
  th_assert_ok(memport_inherit(p, 3 * g_page, MEMPORT_INHERIT_ZERO));
  assert_counts(c);
  assert_false(is_shared(p));
  assert_string_equal(p, BEFORE);
  check_both_sides(p, MEMPORT_INHERIT_ZERO);
  unanon(p, 3);
}

/* ---- arguments ----------------------------------------------------------------------------- */

static void test_inherit_rejects_bad_arguments_and_unmapped_ranges(void **state) {
  (void)state;
  char *p = anon(3);
  assert_int_equal(munmap(p + 2 * g_page, g_page), 0);
  struct counts c = counts_now();
  th_assert_rc(memport_inherit(NULL, g_page, MEMPORT_INHERIT_SHARE), MEMPORT_EINVAL);
  th_assert_rc(memport_inherit(p, 0, MEMPORT_INHERIT_SHARE), MEMPORT_EINVAL);
  th_assert_rc(memport_inherit(p + 1, g_page, MEMPORT_INHERIT_NONE), MEMPORT_EINVAL);
  th_assert_rc(memport_inherit(p, g_page + 1, MEMPORT_INHERIT_NONE), MEMPORT_EINVAL);
  th_assert_rc(memport_inherit(p, g_page, 0), MEMPORT_EINVAL);
  th_assert_rc(memport_inherit(p, g_page, 5), MEMPORT_EINVAL);
  th_assert_rc(memport_inherit(p, g_page, -1), MEMPORT_EINVAL);
  th_assert_rc(memport_inherit((void *)(uintptr_t)(0 - g_page), 2 * g_page, MEMPORT_INHERIT_NONE),
               MEMPORT_EOVERFLOW);
  const int modes[] = {MEMPORT_INHERIT_SHARE, MEMPORT_INHERIT_COPY, MEMPORT_INHERIT_NONE, MEMPORT_INHERIT_ZERO};
  for (size_t i = 0; i < 4; i++) {
    th_assert_rc(memport_inherit(p + 2 * g_page, g_page, modes[i]), MEMPORT_ENOMEM);
    th_assert_rc(memport_inherit(p, 3 * g_page, modes[i]), MEMPORT_ENOMEM);
  }
  assert_counts(c);
  assert_false(is_shared(p)); /* SHARE of a partly unmapped range moved nothing */
  unanon(p, 3);
}

/* Run each path once before any test counts mappings: allocators (the sanitizers' in particular)
 * map their pools on first use, which is no leak of the code under test. */
static void warm_up(void) {
  char *p = anon(2);
  memport_inherit(p, 2 * g_page, MEMPORT_INHERIT_SHARE);
  memport_inherit(p, 2 * g_page, MEMPORT_INHERIT_COPY);
  memport_inherit(p, 2 * g_page, MEMPORT_INHERIT_ZERO);
  memport_inherit(p, 2 * g_page, MEMPORT_INHERIT_NONE);
  unanon(p, 2);
  char perms[5];
  vma_of(&p, perms, NULL, 0);
}

int main(void) {
  g_page = (size_t)sysconf(_SC_PAGESIZE);
  warm_up();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_share_moves_private_memory_in_place_keeping_contents),
      cmocka_unit_test(test_share_of_a_subrange_leaves_the_neighbours_private),
      cmocka_unit_test(test_share_keeps_protection_and_unreadable_contents),
      cmocka_unit_test(test_share_of_heap_memory_works),
      cmocka_unit_test(test_share_is_a_noop_on_a_memport_mapping),
      cmocka_unit_test(test_shared_memory_can_be_remapped_and_is_not_moved_back_while_viewed),
      cmocka_unit_test(test_share_refuses_file_backed_and_executable_memory),
      cmocka_unit_test(test_copy_is_copy_on_write_from_both_sides),
      cmocka_unit_test(test_copy_moves_shared_memory_back_to_private_keeping_contents),
      cmocka_unit_test(test_copy_restores_inheritance_after_none_and_zero),
      cmocka_unit_test(test_copy_and_zero_of_a_memport_mapping_are_enotsup),
      cmocka_unit_test(test_copy_of_a_mixed_range_changes_nothing_when_refused),
      cmocka_unit_test(test_none_leaves_the_range_absent_in_the_child),
      cmocka_unit_test(test_none_works_on_shared_memory_too),
      cmocka_unit_test(test_none_mapping_is_no_memport_mapping_in_the_child),
      cmocka_unit_test(test_zero_gives_the_child_fresh_zero_pages),
      cmocka_unit_test(test_zero_after_none_and_after_share),
      cmocka_unit_test(test_inherit_rejects_bad_arguments_and_unmapped_ranges),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
