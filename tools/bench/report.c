/* SPDX-License-Identifier: MIT */
/* report.c: memport-bench's output: the latency table's columns and rows, the machine's limits, and the CSV. */
#include "bench.h"

#include <errno.h>
#include <string.h>

void fmt_us(double us, char *out, size_t cap) {
  if (us < 10)
    snprintf(out, cap, "%.2f", us);
  else if (us < 1000)
    snprintf(out, cap, "%.1f", us);
  else
    snprintf(out, cap, "%.0f", us);
}

struct lat_method methods[2 + 1 + 2 * MAX_MODES];
size_t nmethods;

void build_methods(void) {
  nmethods = 0;
  methods[nmethods++] = (struct lat_method){LK_PIPE, "pipe", -1, "pipe"};
  methods[nmethods++] = (struct lat_method){LK_UNIX, "unix", -1, "unix"};
  methods[nmethods++] = (struct lat_method){LK_PORT, "port", -1, "port"};
  for (size_t i = 0; i < cfg.nmodes; i++) {
    struct lat_method *m = &methods[nmethods++];
    *m = (struct lat_method){LK_RING, "ring", cfg.modes[i], ""};
    snprintf(m->label, sizeof m->label, "ring %s", mode_name(cfg.modes[i]));
  }
  for (size_t i = 0; i < cfg.nmodes; i++) {
    struct lat_method *m = &methods[nmethods++];
    *m = (struct lat_method){LK_ZC, "zerocopy", cfg.modes[i], ""};
    snprintf(m->label, sizeof m->label, "zc %s", mode_name(cfg.modes[i]));
  }
}

const struct result *lat_result(const struct lat_method *m, size_t bytes) {
  return find_result(m->method, m->policy >= 0 ? mode_name(m->policy) : "", bytes, R_BYTES | R_LAT);
}

size_t small_size(void) {
  for (size_t k = 0; k < cfg.nsizes; k++)
    if (cfg.sizes[k] == 100) return 100;
  size_t s = SIZE_MAX;
  for (size_t k = 0; k < cfg.nsizes; k++)
    if (cfg.sizes[k] < s) s = cfg.sizes[k];
  return s;
}

size_t large_size(void) {
  size_t s = 0;
  for (size_t k = 0; k < cfg.nsizes; k++)
    if (cfg.sizes[k] > s) s = cfg.sizes[k];
  return s;
}

void print_table(void) {
  printf("\nOne-way latency in microseconds, p50/p98, by message size\n");
  printf("  %u messages per size (after %u warm-up messages); from 1 MiB the copying paths send %u (after %u),\n"
         "  zero-copy still %u\n",
         cfg.messages, cfg.warmup, cfg.big_messages, cfg.big_warmup, cfg.messages);
  printf("  %-9s", "bytes");
  for (size_t i = 0; i < nmethods; i++) printf(" %15s", methods[i].label);
  printf("  x better than pipe (p50): blocking | any\n");
  for (size_t k = 0; k < cfg.nsizes; k++) {
    size_t bytes = cfg.sizes[k];
    printf("  %-9zu", bytes);
    /* the fastest memport path overall, and the fastest one that sleeps instead of spinning */
    double best[2] = {0, 0};
    const char *best_label[2] = {NULL, NULL};
    for (size_t i = 0; i < nmethods; i++) {
      const struct result *r = lat_result(&methods[i], bytes);
      char cell[40], a[16], b[16];
      if (r) {
        fmt_us(r->p50, a, sizeof a);
        fmt_us(r->p98, b, sizeof b);
        snprintf(cell, sizeof cell, "%s/%s", a, b);
        bool sleeps = methods[i].policy < 0 || methods[i].policy == MEMPORT_WAIT_BLOCK;
        for (int j = 0; j < 2 && methods[i].kind >= LK_PORT; j++) {
          if ((j == 0 && !sleeps) || (best_label[j] != NULL && r->p50 >= best[j])) continue;
          best[j] = r->p50;
          best_label[j] = methods[i].label;
        }
      } else {
        snprintf(cell, sizeof cell, "%s", bytes > method_limit(&methods[i]) ? "-" : "n/a");
      }
      printf(" %15s", cell);
    }
    const struct result *pipe = find_result("pipe", "", bytes, R_BYTES | R_LAT);
    for (int j = 0; j < 2; j++) {
      char x[48] = "n/a";
      if (pipe && best_label[j] && best[j] > 0)
        snprintf(x, sizeof x, pipe->p50 / best[j] >= 100 ? "%.0fx %s" : "%.1fx %s", pipe->p50 / best[j], best_label[j]);
      printf(j == 0 ? "  %-16s" : " | %s\n", x);
    }
  }
  printf("  '-': beyond that path's limit (port: MEMPORT_MSG_MAX_BYTES = %u); n/a: not measured or failed\n",
         (unsigned)MEMPORT_MSG_MAX_BYTES);
  size_t maxlen = large_size();
  memport_chan_opts_t ro, zo;
  struct lat_method rm = {LK_RING, "ring", MEMPORT_WAIT_BLOCK, ""}, zm = {LK_ZC, "zerocopy", MEMPORT_WAIT_BLOCK, ""};
  chan_options(&rm, maxlen, &ro);
  chan_options(&zm, maxlen, &zo);
  printf("  pipe: pipe(2) write/read; unix: SOCK_STREAM socketpair; port: memport_port_send/recv (%s);\n"
         "  ring: memport_chan_send + memport_chan_recv in place, ring capacity %zu KiB (every size fits), wrapped\n"
         "  twice before timing; zc: memport_chan_alloc/send_buf + memport_chan_recv, pool of %u x %zu KiB buffers,\n"
         "  each written and compared once, header and marks every message. Copying paths compare every payload.\n",
         bench_port_transport,
         ro.ring_capacity / KIB, zo.pool_buffers, (zo.pool_buffer_size + KIB - 1) / KIB);
}

void print_limits(void) {
  printf("\nLimits of this machine\n");
  const struct result *f = find_result("futex", "", 0, R_LAT);
  const struct result *s = find_result("spin", "", 0, R_LAT);
  const struct result *m = find_result("memcpy", "", cfg.memcpy_bytes, R_BYTES | R_GBPS);
  char a[16], b[16];
  char label[64];
  snprintf(label, sizeof label, "futex ping-pong (%s):", placement_text(false));
  if (f) {
    fmt_us(f->p50, a, sizeof a);
    fmt_us(f->p98, b, sizeof b);
    printf("  %-42sp50 %s us, p98 %s us (%u messages, one-way)\n", label, a, b, f->messages);
  } else {
    printf("  %-42sn/a\n", label);
  }
  if (futex_split.have) {
    fmt_us(futex_split.p50, a, sizeof a);
    fmt_us(futex_split.p98, b, sizeof b);
    printf("  %-42sp50 %s us, p98 %s us (%u messages; for reference, not in the CSV)\n",
           "futex ping-pong (two CPUs):", a, b, futex_split.n);
  }
  snprintf(label, sizeof label, "spin ping-pong (%s):", placement_text(true));
  if (s) {
    fmt_us(s->p50, a, sizeof a);
    fmt_us(s->p98, b, sizeof b);
    printf("  %-42sp50 %s us, p98 %s us (%u messages, one-way, one cache line)\n", label, a, b, s->messages);
  } else {
    printf("  %-42sn/a\n", label);
  }
  if (m)
    printf("  %-42s%.2f GB/s (median of %u copies of %zu MiB)\n", "memcpy bandwidth:", m->gbps, m->messages,
           m->bytes / MIB);
  else
    printf("  %-42sn/a\n", "memcpy bandwidth:");
  const struct result *mb = find_result("memcpy", "", STREAM_RECORD, R_BYTES | R_GBPS);
  if (mb)
    printf("  %-42s%.2f GB/s (%u blocks into a %zu KiB buffer, one process; median of %d segments)\n",
           "memcpy 64 KiB blocks (in cache):", mb->gbps, mb->messages, cfg.stream_ring / KIB, STREAM_SEGMENTS);
  const struct result *raw = find_result("rawring", "spin", STREAM_RECORD, R_BYTES | R_GBPS);
  if (raw) {
    snprintf(label, sizeof label, "raw ring 64 KiB, spin (%s):", placement_text(true));
    printf("  %-42s%.2f GB/s (%u records, copy in + copy out, %zu KiB ring, no library; median of %d segments)\n",
           label, raw->gbps, raw->messages, cfg.stream_ring / KIB, STREAM_SEGMENTS);
  }
  static const int order[] = {MEMPORT_WAIT_BLOCK, MEMPORT_WAIT_ADAPTIVE, MEMPORT_WAIT_SPIN};
  for (int i = 0; i < 3; i++) {
    int pol = order[i];
    const struct result *r = find_result("stream", mode_name(pol), 0, R_GBPS);
    if (r) {
      snprintf(label, sizeof label, "ring stream 64 KiB, %s (%s):", mode_name(pol),
               placement_text(pol != MEMPORT_WAIT_BLOCK));
      printf("  %-42s%.2f GB/s (%u records, copy in + copy out, %zu KiB ring; median of %d segments)\n", label,
             r->gbps, r->messages, cfg.stream_ring / KIB, STREAM_SEGMENTS);
    }
  }
}

static void csv_num(FILE *f, double v, bool have) {
  if (have) fprintf(f, "%.3f", v);
}

int write_csv(const char *path) {
  FILE *f = fopen(path, "w");
  if (f == NULL) {
    fprintf(stderr, "memport-bench: %s: %s\n", path, strerror(errno));
    return -1;
  }
  fprintf(f, "method,mode,bytes,messages,p50_us,p98_us,gbps,subscribers\n");
  for (size_t i = 0; i < nresults; i++) {
    const struct result *r = &results[i];
    fprintf(f, "%s,%s,", r->method, r->mode);
    if (r->has & R_BYTES) fprintf(f, "%zu", r->bytes);
    fputc(',', f);
    if (r->has & R_MSGS) fprintf(f, "%u", r->messages);
    fputc(',', f);
    csv_num(f, r->p50, r->has & R_LAT);
    fputc(',', f);
    csv_num(f, r->p98, r->has & R_LAT);
    fputc(',', f);
    csv_num(f, r->gbps, r->has & R_GBPS);
    fputc(',', f);
    if (r->has & R_SUBS) fprintf(f, "%u", r->subscribers);
    fputc('\n', f);
  }
  if (fclose(f) != 0) {
    fprintf(stderr, "memport-bench: %s: %s\n", path, strerror(errno));
    return -1;
  }
  printf("\nCSV: %zu rows written to %s\n", nresults, path);
  return 0;
}
