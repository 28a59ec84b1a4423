/* SPDX-License-Identifier: MIT */
/* smaps.c: memport-bench's resident memory of one channel endpoint beyond its pool (Linux): mappings added by
 * the channel, shared ones counted once per memory object (mincore, so a mirror counts once), private ones
 * by their Rss growth in /proc/self/smaps. */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct rss_report rssrep;

#define MAX_VMAS 4096
struct vma {
  uintptr_t start, end;
  unsigned long inode;
  bool shared;
  size_t rss_kb;
};
static struct vma vmas_before[MAX_VMAS], vmas_after[MAX_VMAS];
static char smaps_buf[4 << 20];
static unsigned char mincore_vec[65536];

static int read_smaps(struct vma *out, size_t *count) {
  int fd = open("/proc/self/smaps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  size_t len = 0;
  for (;;) {
    ssize_t n = read(fd, smaps_buf + len, sizeof smaps_buf - 1 - len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    len += (size_t)n;
    if (len >= sizeof smaps_buf - 1) break;
  }
  close(fd);
  smaps_buf[len] = 0;
  size_t nv = 0;
  char *line = smaps_buf;
  while (line && *line) {
    char *next = strchr(line, '\n');
    if (next) *next++ = 0;
    unsigned long s, e, off, ino;
    char perms[8];
    int consumed = 0;
    if (sscanf(line, "%lx-%lx %7s %lx %*s %lu%n", &s, &e, perms, &off, &ino, &consumed) == 5 && nv < MAX_VMAS) {
      out[nv].start = s;
      out[nv].end = e;
      out[nv].inode = ino;
      out[nv].shared = perms[3] == 's';
      out[nv].rss_kb = 0;
      nv++;
    } else if (nv > 0 && strncmp(line, "Rss:", 4) == 0) {
      out[nv - 1].rss_kb = strtoul(line + 4, NULL, 10);
    }
    line = next;
  }
  *count = nv;
  return 0;
}

static size_t resident_bytes(uintptr_t start, uintptr_t end) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE), total = 0;
  for (uintptr_t a = start; a < end;) {
    size_t chunk = end - a;
    if (chunk / page > sizeof mincore_vec) chunk = sizeof mincore_vec * page;
    if (mincore((void *)a, chunk, mincore_vec) != 0) return 0;
    for (size_t i = 0; i < chunk / page; i++) total += (mincore_vec[i] & 1) ? page : 0;
    a += chunk;
  }
  return total;
}

static void rss_echo(memport_port_t *port, size_t cap) {
  memport_chan_opts_t o;
  memport_chan_opts_init(&o);
  o.ring_capacity = cap;
  o.zerocopy_threshold = cap / 4;
  o.pool_buffer_size = 4 * cap;
  o.pool_buffers = 2;
  memport_chan_t *ch = NULL;
  if (memport_chan_open(&ch, port, &o, IO_TIMEOUT) < 0) _exit(1);
  for (;;) {
    memport_buf_t b;
    if (memport_chan_recv(ch, &b, IO_TIMEOUT) < 0) break;
    if (b.len == 0) {
      memport_chan_release(ch, &b);
      break;
    }
    int rc = memport_chan_send(ch, b.data, b.len, 0, IO_TIMEOUT);
    memport_chan_release(ch, &b);
    if (rc < 0) break;
  }
  memport_chan_close(ch);
  _exit(0);
}

/* In a child process: open a channel, exercise both rings over many wraps, compare mappings. */
static void rss_measure(struct rss_report *rep) {
  size_t cap = rep->ring_capacity;
  memport_port_t *pa = NULL, *pb = NULL;
  int rc = memport_port_pair(&pa, &pb);
  if (rc < 0) {
    snprintf(rep->err, sizeof rep->err, "memport_port_pair: %s", memport_strerror(rc));
    return;
  }
  pid_t pid = fork();
  if (pid == 0) {
    memport_port_close(pa);
    rss_echo(pb, cap);
  }
  memport_port_close(pb);
  if (pid < 0) {
    memport_port_close(pa);
    snprintf(rep->err, sizeof rep->err, "fork: %s", strerror(errno));
    return;
  }
  unsigned char *src = malloc(cap), *dst = malloc(cap);
  if (src == NULL || dst == NULL) {
    snprintf(rep->err, sizeof rep->err, "out of memory");
    kill(pid, SIGKILL);
    return;
  }
  fill_pattern(src, cap);
  memset(dst, 0xa5, cap); /* not 0: a compiler may turn malloc + zeroing into calloc, leaving pages untouched */
  /* touch everything the measurement itself uses, so only the channel's pages show */
  memset(vmas_before, 0, sizeof vmas_before);
  memset(vmas_after, 0, sizeof vmas_after);
  memset(mincore_vec, 0, sizeof mincore_vec);
  memset(smaps_buf, 0, sizeof smaps_buf);
  size_t nb = 0, na = 0;
  if (read_smaps(vmas_before, &nb) < 0) {
    snprintf(rep->err, sizeof rep->err, "/proc/self/smaps: %s", strerror(errno));
    kill(pid, SIGKILL);
    return;
  }
  memport_chan_opts_t o;
  memport_chan_opts_init(&o);
  o.ring_capacity = cap;
  o.zerocopy_threshold = cap / 4;
  o.pool_buffer_size = 4 * cap;
  o.pool_buffers = 2;
  memport_chan_t *ch = NULL;
  rc = memport_chan_open(&ch, pa, &o, IO_TIMEOUT);
  rep->notsup = rc == MEMPORT_ENOTSUP;
  const size_t sizes[] = {64, 1000, 4000, cap / 8 > 64 ? cap / 8 : 64};
  uint64_t moved = 0;
  for (unsigned i = 0; rc >= 0 && moved < 8 * (uint64_t)cap; i++) {
    size_t len = sizes[i % 4];
    rc = memport_chan_send(ch, src, len, 0, IO_TIMEOUT);
    size_t got = 0;
    if (rc >= 0) rc = memport_chan_recv_copy(ch, dst, cap, &got, IO_TIMEOUT);
    if (rc >= 0 && (got != len || memcmp(src, dst, len) != 0)) rc = MEMPORT_EPROTO;
    moved += len;
  }
  if (rc < 0) {
    snprintf(rep->err, sizeof rep->err, "channel: %s", memport_strerror(rc));
  } else if (read_smaps(vmas_after, &na) < 0) {
    snprintf(rep->err, sizeof rep->err, "/proc/self/smaps: %s", strerror(errno));
    rc = -1;
  }
  if (rc >= 0) {
    /* shared memory objects: the largest resident view per inode; pool objects are those larger than the ring */
    for (size_t i = 0; i < na; i++) {
      struct vma *v = &vmas_after[i];
      bool existed = false;
      size_t before_kb = 0, before_len = 0;
      for (size_t j = 0; j < nb; j++)
        if (vmas_before[j].start == v->start) {
          existed = vmas_before[j].end == v->end && vmas_before[j].inode == v->inode;
          before_kb = vmas_before[j].rss_kb;
          before_len = vmas_before[j].end - vmas_before[j].start;
        }
      if (v->shared && v->inode != 0) {
        if (existed) continue;
        bool first = true;
        size_t span = 0, res = 0;
        for (size_t j = 0; j < na; j++) {
          if (vmas_after[j].inode != v->inode || !vmas_after[j].shared) continue;
          if (j < i) first = false;
          size_t l = vmas_after[j].end - vmas_after[j].start, r = resident_bytes(vmas_after[j].start, vmas_after[j].end);
          if (l > span) span = l;
          if (r > res) res = r;
        }
        if (!first) continue;
        const char *kind;
        if (span > 2 * cap) {
          kind = "pool";
          rep->pool_objects++;
          rep->pool_resident += res;
        } else if (span >= cap) {
          kind = "ring data";
          rep->ring_objects++;
          rep->ring_resident += res;
        } else {
          kind = "ring control/semaphore";
          rep->ctl_objects++;
          rep->ctl_resident += res;
        }
        if (cfg.verbose)
          fprintf(stderr, "\n    shared object inode %lu: %s, largest view %zu KiB, resident %zu KiB", v->inode, kind,
                  span / KIB, res / KIB);
      } else if (v->inode == 0 && v->rss_kb > before_kb) { /* anonymous: heap, stacks, private mmaps (not code) */
        rep->other_resident += (v->rss_kb - before_kb) * KIB;
        if (cfg.verbose)
          fprintf(stderr, "\n    private %#lx-%#lx (%zu KiB, before %zu KiB): Rss %zu -> %zu KiB", (unsigned long)v->start,
                  (unsigned long)v->end, (size_t)(v->end - v->start) / KIB, before_len / KIB, before_kb, v->rss_kb);
      }
    }
    rep->ok = true;
  }
  memport_chan_send(ch, src, 0, 0, IO_TIMEOUT);
  memport_chan_close(ch);
  if (ch == NULL) memport_port_close(pa);
  wait_child(pid, NULL);
  free(src);
  free(dst);
}

void run_rss(void) {
  memset(&rssrep, 0, sizeof rssrep);
  rssrep.ring_capacity = cfg.rss_ring;
  progress("resident memory: channel with %zu KiB rings:", cfg.rss_ring / KIB);
  struct rss_report *sh = shared_alloc(sizeof *sh);
  if (sh == NULL) return;
  *sh = rssrep;
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    alarm(60);
    rss_measure(sh);
    _exit(0);
  }
  if (pid > 0) wait_child(pid, NULL);
  rssrep = *sh;
  munmap(sh, sizeof *sh);
  if (rssrep.ok)
    progress_more("%s %zu KiB ring data + %zu KiB ring control + %zu KiB private\n", cfg.verbose ? "\n   " : "",
                  rssrep.ring_resident / KIB, rssrep.ctl_resident / KIB, rssrep.other_resident / KIB);
  else if (rssrep.notsup) {
    progress_more(" n/a (%s)\n", rssrep.err);
  } else {
    progress_more(" FAILED: %s\n", rssrep.err[0] ? rssrep.err : "measuring process died");
    bench_failures++;
  }
}

