/* SPDX-License-Identifier: MIT */
/* python.c: memport-bench's Python part: runs tools/bench/python-bench.py with the build tree's binding and C helper, when the binding is built. */
#include "bench.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Where the build put things (tools/local.am); empty where this build has no Python. */
#ifndef MEMPORT_BENCH_PYTHON
#define MEMPORT_BENCH_PYTHON ""
#endif
#ifndef MEMPORT_BENCH_PYSCRIPT
#define MEMPORT_BENCH_PYSCRIPT ""
#endif
#ifndef MEMPORT_BENCH_PYPATH
#define MEMPORT_BENCH_PYPATH ""
#endif
#ifndef MEMPORT_BENCH_PYPEER
#define MEMPORT_BENCH_PYPEER ""
#endif
#ifndef MEMPORT_BENCH_LIBDIR
#define MEMPORT_BENCH_LIBDIR ""
#endif

static bool exists(const char *path) {
  struct stat st;
  return path[0] != '\0' && stat(path, &st) == 0;
}

/* Why the Python part cannot run here, or NULL when it can. */
const char *python_unavailable(void) {
  char init[4096];
  snprintf(init, sizeof init, "%s/memport/__init__.py", MEMPORT_BENCH_PYPATH);
  if (MEMPORT_BENCH_PYTHON[0] == '\0')
    return "built without Python (configure --enable-python, python3-dev)";
  if (!exists(MEMPORT_BENCH_PYTHON) || !exists(MEMPORT_BENCH_PYSCRIPT))
    return "no " MEMPORT_BENCH_PYTHON " or no " MEMPORT_BENCH_PYSCRIPT;
  if (!exists(init))
    return "the binding is not built in " MEMPORT_BENCH_PYPATH;
  return NULL;
}

/* Run the script in a child (its table on our stdout, its progress on our stderr), its rows appended
 * to `csv` when given. 0: it ran and every measurement succeeded; 1: it failed; -1: not available. */
int run_python(const char *csv) {
  const char *why = python_unavailable();
  if (why != NULL) {
    printf("\nPython (tools/bench/python-bench.py): n/a: %s\n", why);
    return -1;
  }
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) {
    fprintf(stderr, "memport-bench: fork: %s\n", strerror(errno));
    return 1;
  }
  if (pid == 0) {
    restore_affinity(); /* the script places nothing itself: every CPU this run was given */
    const char *old = getenv("LD_LIBRARY_PATH");
    char lib[8192];
    snprintf(lib, sizeof lib, "%s%s%s", MEMPORT_BENCH_LIBDIR, old && old[0] ? ":" : "", old ? old : "");
    setenv("LD_LIBRARY_PATH", lib, 1);
    setenv("PYTHONPATH", MEMPORT_BENCH_PYPATH, 1);
    const char *argv[12];
    int n = 0;
    argv[n++] = MEMPORT_BENCH_PYTHON;
    argv[n++] = MEMPORT_BENCH_PYSCRIPT;
    argv[n++] = "--c-helper";
    argv[n++] = MEMPORT_BENCH_PYPEER;
    if (cfg.quick) argv[n++] = "--quick";
    if (csv != NULL) {
      argv[n++] = "--csv";
      argv[n++] = csv;
    }
    argv[n] = NULL;
    execv(argv[0], (char *const *)argv);
    fprintf(stderr, "memport-bench: %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  int st;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}
