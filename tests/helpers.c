/* SPDX-License-Identifier: MIT */
/* helpers.c: what the tests share: peer processes with timeouts, counts, clocks, byte patterns. */
#include "config.h"

#include "helpers.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int th_count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL)
    d = opendir("/dev/fd");
  if (d == NULL)
    return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  return n - 1; /* the directory's own descriptor */
}

int th_count_maps(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  if (f == NULL)
    return -1;
  int n = 0, c;
  while ((c = fgetc(f)) != EOF)
    if (c == '\n')
      n++;
  fclose(f);
  return n;
}

int th_count_memport_maps(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  if (f == NULL)
    return -1;
  char line[4096];
  int n = 0;
  while (fgets(line, sizeof line, f) != NULL)
    if (strstr(line, "memfd:memport") != NULL)
      n++;
  fclose(f);
  return n;
}

uint64_t th_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void th_sleep_ns(uint64_t ns) {
  struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

void th_sleep_ms(unsigned ms) { th_sleep_ns((uint64_t)ms * 1000000u); }

bool th_under_valgrind(void) {
  const char *p = getenv("LD_PRELOAD");
  return p != NULL && strstr(p, "vgpreload") != NULL;
}

void th_fill(unsigned char *p, size_t len, uint32_t seed) {
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    p[i] = (unsigned char)x;
  }
}

int th_check(const unsigned char *p, size_t len, uint32_t seed) {
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    if (p[i] != (unsigned char)x)
      return -1;
  }
  return 0;
}

bool th_can_duplicate_mappings(void) {
#ifdef MREMAP_MAYMOVE
  size_t page = memport_page_size();
  void *p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  assert_true(p != MAP_FAILED);
  void *q = mremap(p, 0, page, MREMAP_MAYMOVE);
  munmap(p, page);
  if (q != MAP_FAILED) {
    munmap(q, page);
    return true;
  }
#endif
  print_message("mremap(old_size 0) is not available here (valgrind?): remap test skipped\n");
  return false;
}

/* A child out of time: print its stacks (gdb, where it is installed), then end as SIGALRM would
 * have ended it (th_wait: 128 + SIGALRM). Not async-signal-safe throughout, but the process is
 * ending anyway, and a timed-out child's stacks say what it waited for. */
static void th_child_timed_out(int sig) {
  static const char msg[] = "th_fork: a child ran out of time (SIGALRM); its stacks follow, if gdb is installed\n";
  ssize_t w = write(2, msg, sizeof msg - 1);
  (void)w;
  char pid[24];
  snprintf(pid, sizeof pid, "%ld", (long)getpid());
  pid_t g = fork();
  if (g == 0) {
    struct rlimit rl; /* the test may have lowered the descriptor limit: gdb needs descriptors */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
      rl.rlim_cur = rl.rlim_max;
      setrlimit(RLIMIT_NOFILE, &rl);
    }
    dup2(2, 1);
    execlp("gdb", "gdb", "-q", "-batch", "-p", pid, "-ex", "thread apply all bt", (char *)NULL);
    _exit(127);
  }
  if (g > 0) {
    int st;
    waitpid(g, &st, 0);
  }
  _exit(128 + sig);
}

pid_t th_fork(int (*fn)(void *arg), void *arg, unsigned timeout_s) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    signal(SIGALRM, th_child_timed_out);
    alarm(timeout_s);
    _exit(fn(arg) & 0xff);
  }
  return pid;
}

int th_wait(pid_t pid, unsigned timeout_s) {
  if (pid < 0)
    return -1;
  struct timespec start, now;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    int status;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      if (WIFEXITED(status))
        return WEXITSTATUS(status);
      if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
      return -1;
    }
    if (r < 0)
      return -1;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec - start.tv_sec >= (time_t)timeout_s) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    struct timespec nap = {0, 1000000};
    nanosleep(&nap, NULL);
  }
}

bool th_exited(pid_t pid, int *status) {
  int st;
  pid_t r = waitpid(pid, &st, WNOHANG);
  if (r == 0)
    return false;
  *status = r != pid ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : -1;
  return true;
}

int th_run_child(int (*fn)(void *arg), void *arg, unsigned timeout_s) {
  return th_wait(th_fork(fn, arg, timeout_s), timeout_s + 5);
}

pid_t th_spawn_helper(const char *argv0, const char *name, const char *arg) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    char *argv[5] = {(char *)argv0, (char *)"--helper", (char *)name, (char *)arg, NULL};
    execv(argv0, argv);
    _exit(127);
  }
  return pid;
}

void th_helper_dispatch(int argc, char **argv, const struct th_helper *table) {
  if (argc < 3 || strcmp(argv[1], "--helper") != 0)
    return;
  for (const struct th_helper *h = table; h != NULL && h->name != NULL; h++)
    if (strcmp(h->name, argv[2]) == 0) {
      alarm(60);
      exit(h->fn(argc > 3 ? argv[3] : NULL) & 0xff);
    }
  fprintf(stderr, "unknown helper %s\n", argv[2]);
  exit(127);
}

const char *th_unique_name(const char *prefix) {
  static char buf[MEMPORT_NAME_MAX + 1];
  static unsigned counter;
  snprintf(buf, sizeof buf, "%s-%ld-%u", prefix, (long)getpid(), counter++);
  return buf;
}

rlim_t th_limit_with_free_slots(int want) {
  int nfree = 0;
  for (int fd = 0;; fd++) {
    if (nfree == want && fcntl(fd, F_GETFD) < 0)
      return (rlim_t)fd; /* fd itself would be the next one: excluded */
    if (fcntl(fd, F_GETFD) < 0)
      nfree++;
  }
}
