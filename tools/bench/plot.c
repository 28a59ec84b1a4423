/* SPDX-License-Identifier: MIT */
/* plot.c: memport-bench's gnuplot driver: latency against size, log-log, as PNG, else SVG, else text. */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Run a command with stdout/stderr sent to /dev/null; its exit status or -1. */
static int run_quiet(char *const argv[]) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    int fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
      dup2(fd, 0);
      dup2(fd, 1);
      dup2(fd, 2);
    }
    execvp(argv[0], argv);
    _exit(127);
  }
  int st;
  wait_child(pid, &st);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int write_plot(const char *path) {
  bool any_data = false;
  for (size_t i = 0; i < nresults && !any_data; i++) any_data = (results[i].has & (R_BYTES | R_LAT)) == (R_BYTES | R_LAT);
  if (!any_data) {
    printf("\nPlot: no latency figures in this run (see --only); %s not written\n", path);
    return 0;
  }
  static const char *terms[][2] = {
      {"pngcairo", "set terminal pngcairo size 1100,700 enhanced font 'sans,10'"},
      {"png", "set terminal png size 1100,700"},
      {"svg", "set terminal svg size 1100,700 dynamic"},
      {"dumb", "set terminal dumb size 120,40"},
  };
  int chosen = -1;
  for (int i = 0; i < 4 && chosen < 0; i++) {
    char cmd[64];
    snprintf(cmd, sizeof cmd, "set terminal %s", terms[i][0]);
    char *argv[] = {(char *)"gnuplot", (char *)"-e", cmd, NULL};
    int rc = run_quiet(argv);
    if (rc == 127) {
      /* documented: the plot needs gnuplot; its absence is reported, not an error of the run */
      printf("\nPlot: gnuplot is not installed; %s not written (the CSV has the same figures)\n", path);
      fprintf(stderr, "memport-bench: --plot: gnuplot not found in PATH; %s not written\n", path);
      return 0;
    }
    if (rc == 0) chosen = i;
  }
  if (chosen < 0) {
    printf("\nPlot: gnuplot has none of the pngcairo, png, svg, dumb terminals; %s not written\n", path);
    return -1;
  }
  const char *tmp = getenv("TMPDIR");
  char script[PATH_MAX];
  snprintf(script, sizeof script, "%s/memport-bench-plot.XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
  int fd = mkstemp(script);
  if (fd < 0) {
    fprintf(stderr, "memport-bench: mkstemp: %s\n", strerror(errno));
    return -1;
  }
  FILE *f = fdopen(fd, "w");
  if (f == NULL) {
    close(fd);
    unlink(script);
    return -1;
  }
  fprintf(f, "%s\nset output '", terms[chosen][1]);
  for (const char *p = path; *p; p++) {
    if (*p == '\'')
      fputs("''", f);
    else
      fputc(*p, f);
  }
  fprintf(f, "'\nset title 'memport-bench: one-way latency (p50) by message size'\n");
  fprintf(f, "set logscale xy\nset format x '10^{%%L}'\nset format y '10^{%%L}'\nset xlabel 'message size (bytes)'\nset ylabel 'one-way latency p50 (us)'\n");
  fprintf(f, "set grid\nset key left top\n");
  size_t series = 0;
  for (size_t i = 0; i < nmethods; i++) {
    fprintf(f, "$d%zu << EOD\n", i);
    for (size_t k = 0; k < cfg.nsizes; k++) {
      const struct result *r = lat_result(&methods[i], cfg.sizes[k]);
      if (r && r->p50 > 0) fprintf(f, "%zu %.4f %.4f\n", r->bytes, r->p50, r->p98);
    }
    fprintf(f, "EOD\n");
  }
  fprintf(f, "plot ");
  for (size_t i = 0; i < nmethods; i++) {
    bool any = false;
    for (size_t k = 0; k < cfg.nsizes; k++) any = any || lat_result(&methods[i], cfg.sizes[k]) != NULL;
    if (!any) continue;
    fprintf(f, "%s$d%zu using 1:2 with linespoints title '%s'", series++ ? ", " : "", i, methods[i].label);
  }
  fprintf(f, "\n");
  if (fclose(f) != 0) {
    unlink(script);
    return -1;
  }
  char *argv[] = {(char *)"gnuplot", script, NULL};
  int rc = run_quiet(argv);
  unlink(script);
  if (rc != 0) {
    printf("\nPlot: gnuplot failed (status %d); %s may be incomplete\n", rc, path);
    return -1;
  }
  printf("\nPlot: %s written with gnuplot's %s terminal (%s)\n", path, terms[chosen][0],
         chosen <= 1 ? "PNG" : chosen == 2 ? "SVG, no PNG terminal available" : "text, no PNG or SVG terminal available");
  return 0;
}

