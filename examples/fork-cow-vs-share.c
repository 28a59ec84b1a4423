/* SPDX-License-Identifier: MIT */
/* fork-cow-vs-share.c: what a forked child gets of memory in each inheritance mode, as the kernel counts. */

/*
 * The parent prepares six buffers of the same size and fills each with its own pattern:
 *
 *   COPY           private anonymous memory, memport_inherit(COPY): fork's default, copy-on-write
 *   SHARE          private anonymous memory, memport_inherit(SHARE): parent and child share it
 *   NONE           private anonymous memory, memport_inherit(NONE): the child does not get it
 *   ZERO           private anonymous memory, memport_inherit(ZERO): the child gets zero pages
 *   shared region  memport_region_create + memport_region_map: shared memory by construction
 *   read-only map  memport_region_readonly + memport_region_map(MEMPORT_MAP_READONLY)
 *
 * Then it forks. The child reads every buffer, writes a few pages of each writable one and
 * measures what those writes cost with the kernel's own accounting. /proc/self/smaps gives, per
 * mapping, the pages this process has in memory (Rss) and those of them that no other process
 * maps (Private_Dirty). After fork every page of a COPY buffer is mapped by both processes; a
 * write that copies a page replaces a shared page by a private one: Private_Dirty grows by one
 * page, Rss does not. A write that needs a page where there was none (ZERO) grows both. So
 * "new" = growth of Rss, "copied" = growth of Private_Dirty minus new.
 * getrusage(RUSAGE_SELF).ru_minflt counts the page faults the writes took.
 * Accesses that should fault (the NONE range, a write to the read-only mapping) are made by a
 * grandchild, so the signal ends that grandchild only; it reports the signal by exit status.
 * The child sends its observations to the parent through a pipe and exits; the parent then looks
 * at its own copy of each buffer and prints one table line per buffer.
 *
 * The exit status is 0 only if every observation matches what the mode promises, so the program
 * is also a test. Options: -n PAGES (pages per buffer, default 64), -q (print mismatches only).
 * Walk-through: doc/fork-cow-vs-share.md.
 */

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memport.h>

enum kind { K_COPY, K_SHARE, K_NONE, K_ZERO, K_REGION, K_READONLY, K_COUNT };

static const char *const kind_label[K_COUNT] = {
  "COPY (default)", "SHARE", "NONE", "ZERO", "shared region", "read-only map",
};

/* What a process found when it read a whole buffer. */
enum seen {
  SEEN_NOTHING,
  SEEN_PARENT,      /* the parent's bytes in every page */
  SEEN_ZERO,        /* zeros in every page */
  SEEN_CHILD_PAGES, /* the child's bytes in exactly the pages it writes, the parent's elsewhere */
  SEEN_CHILD_OTHER, /* the child's bytes in other pages (or more of them), the parent's elsewhere */
  SEEN_FAULT,
  SEEN_MIXED /* anything else */
};
struct view {
  enum seen what;
  size_t child_pages; /* SEEN_CHILD_*: how many pages hold the child's bytes */
};

/* A fault observed by a grandchild: the signal and its si_code, or 0 when the access worked. */
struct fault {
  int sig;
  int code;
};

/* The kernel's page accounting of one mapping (see smaps_usage). */
struct usage {
  long rss_kb;
  long private_kb;
};

/* One buffer, as the parent set it up. */
struct buffer {
  enum kind kind;
  unsigned char *addr;       /* the pages every process looks at */
  unsigned char *alloc;      /* anonymous kinds: the allocation with a guard page on each side */
  memport_region_t *region;  /* region kinds: the region (read-only handle for K_READONLY) */
  int setup_rc;              /* 0, or the memport error that made this kind unavailable here */
};

/* What the child observed in one buffer; sent to the parent through the pipe. */
struct report {
  int seen;                 /* enum seen, from the child's read of every page */
  struct fault read_fault;  /* NONE: the grandchild's read */
  struct fault write_fault; /* read-only map: the grandchild's write */
  int mprotect_errno;       /* read-only map: errno of mprotect(+PROT_WRITE), 0 if it worked */
  int map_rw_rc;            /* read-only map: memport_region_map read-write of the handle */
  struct usage before;      /* smaps of the buffer before the writes (-1: unavailable) */
  struct usage after;       /* and after them */
  long faults;              /* minor faults taken by the writes, -1 if unavailable */
};

static size_t page;
static size_t npages = 64;
static size_t nwrites; /* pages the child writes in each buffer */
static int quiet;
static int mismatches;
static char mismatch_text[4096]; /* the MISMATCH lines, printed after the table */

/* The byte the parent (or the child) puts in page i of buffer k: distinct per buffer and page,
 * never zero, and never equal between parent and child. */
static unsigned char parent_byte(enum kind k, size_t i) {
  return (unsigned char)(0x80 | (k << 4) | (i & 0x0f));
}
static unsigned char child_byte(enum kind k, size_t i) {
  return (unsigned char)(0x01 | (k << 4) | ((i & 0x07) << 1));
}

/* Is page i one of the pages the child writes? They are spread evenly over the buffer. */
static int child_writes_page(size_t i) {
  size_t step = npages / nwrites;
  return i % step == 0 && i / step < nwrites;
}

/* memset, always called through the C library (never expanded inline by the compiler). */
static void *(*volatile page_fill)(void *, int, size_t) = memset;

static int page_is(const unsigned char *p, unsigned char byte) {
  for (size_t j = 0; j < page; j++)
    if (p[j] != byte)
      return 0;
  return 1;
}

/* Classify what a buffer holds, page by page. */
static struct view look_at(enum kind k, const unsigned char *addr) {
  size_t own = 0, zero = 0, child = 0, child_where_written = 0;
  for (size_t i = 0; i < npages; i++) {
    const unsigned char *p = addr + i * page;
    if (page_is(p, parent_byte(k, i))) {
      own++;
    } else if (page_is(p, 0)) {
      zero++;
    } else if (page_is(p, child_byte(k, i))) {
      child++;
      child_where_written += (size_t)child_writes_page(i);
    }
  }
  struct view v = {SEEN_MIXED, child};
  if (own == npages)
    v.what = SEEN_PARENT;
  else if (zero == npages)
    v.what = SEEN_ZERO;
  else if (own + child == npages)
    v.what = child == nwrites && child_where_written == nwrites ? SEEN_CHILD_PAGES : SEEN_CHILD_OTHER;
  return v;
}

static void fill(enum kind k, unsigned char *addr) {
  for (size_t i = 0; i < npages; i++)
    memset(addr + i * page, parent_byte(k, i), page);
}

/* ------------------------------------------------------------------------------------------ */
/* Kernel accounting.                                                                          */

/* The kernel's accounting of the mapping that starts exactly at addr, from /proc/self/smaps: Rss
 * (pages of it this process has in memory) and Private_Dirty (those no other process maps), in kB.
 * -1 where there is no smaps (Darwin) or no such mapping. */
static struct usage smaps_usage(const void *addr) {
  struct usage u = {-1, -1};
  FILE *f = fopen("/proc/self/smaps", "re");
  if (f == NULL)
    return u;
  char *line = NULL;
  size_t cap = 0;
  int inside = 0;
  while (getline(&line, &cap, f) > 0) {
    unsigned long long start, end;
    if (sscanf(line, "%llx-%llx ", &start, &end) == 2) { /* a mapping's header line */
      if (inside)
        break;
      inside = start == (unsigned long long)(uintptr_t)addr;
      continue;
    }
    long kb;
    if (inside && sscanf(line, "Rss: %ld kB", &kb) == 1)
      u.rss_kb = kb;
    if (inside && sscanf(line, "Private_Dirty: %ld kB", &kb) == 1)
      u.private_kb = kb;
  }
  free(line);
  fclose(f);
  if (u.rss_kb < 0 || u.private_kb < 0)
    u.rss_kb = u.private_kb = -1;
  return u;
}

static long minor_faults(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0)
    return -1;
  return ru.ru_minflt;
}

/* ------------------------------------------------------------------------------------------ */
/* Faulting accesses, made by a grandchild.                                                    */

/* The grandchild's fault handler: report the signal and its code by exit status, then die. */
static void on_fault(int sig, siginfo_t *si, void *ctx) {
  (void)ctx;
  int code = si->si_code > 0 && si->si_code < 10 ? si->si_code : 0;
  _exit((sig == SIGBUS ? 20 : 10) + code);
}

/* Touch addr (read, or write when `write`) in a fresh grandchild; report how it ended. */
static struct fault probe(volatile unsigned char *addr, int write) {
  struct fault f = {0, 0};
  pid_t pid = fork();
  if (pid < 0) {
    f.sig = -1;
    return f;
  }
  if (pid == 0) {
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core); /* a demonstration leaves no core file behind */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
    if (write)
      addr[0] = 0x5a;
    else
      (void)addr[0];
    _exit(0);
  }
  int status;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) {
      f.sig = -1;
      return f;
    }
  if (WIFSIGNALED(status)) { /* the handler did not run: the signal itself ended it */
    f.sig = WTERMSIG(status);
  } else if (WEXITSTATUS(status) >= 20 && WEXITSTATUS(status) < 30) {
    f.sig = SIGBUS;
    f.code = WEXITSTATUS(status) - 20;
  } else if (WEXITSTATUS(status) >= 10 && WEXITSTATUS(status) < 20) {
    f.sig = SIGSEGV;
    f.code = WEXITSTATUS(status) - 10;
  } else if (WEXITSTATUS(status) != 0) {
    f.sig = -1;
  }
  return f;
}

static const char *fault_text(struct fault f, char *buf, size_t cap) {
  if (f.sig == 0)
    return "no fault";
  if (f.sig < 0)
    return "probe failed";
  const char *code = "";
  if (f.sig == SIGSEGV)
    code = f.code == SEGV_MAPERR ? " not mapped" : f.code == SEGV_ACCERR ? " not allowed" : "";
  else if (f.sig == SIGBUS)
    code = f.code == BUS_ADRERR ? " bad address" : f.code == BUS_OBJERR ? " object error" : "";
  snprintf(buf, cap, "%s%s", f.sig == SIGSEGV ? "SIGSEGV" : f.sig == SIGBUS ? "SIGBUS" : strsignal(f.sig),
           code);
  return buf;
}

/* ------------------------------------------------------------------------------------------ */
/* The parent's set-up.                                                                        */

static int setup_anonymous(struct buffer *b, int mode) {
  size_t len = npages * page;
  /* A guard page on each side keeps the buffer in a mapping of its own, never merged with a
   * neighbouring one, so that its smaps entry describes this buffer and nothing else. */
  void *p = mmap(NULL, len + 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANON, -1, 0);
  if (p == MAP_FAILED) {
    fprintf(stderr, "fork-cow-vs-share: mmap: %s\n", strerror(errno));
    return -1;
  }
  b->alloc = p;
  b->addr = b->alloc + page;
#ifdef MADV_NOHUGEPAGE
  /* Count in base pages even where transparent huge pages are on for all memory: a write to a
   * huge page could otherwise be served with 2 MiB at once. */
  madvise(b->addr, len, MADV_NOHUGEPAGE);
#endif
  if (mprotect(b->alloc, page, PROT_NONE) != 0 || mprotect(b->addr + len, page, PROT_NONE) != 0) {
    fprintf(stderr, "fork-cow-vs-share: mprotect: %s\n", strerror(errno));
    return -1;
  }
  fill(b->kind, b->addr);
  int rc = memport_inherit(b->addr, len, mode);
  if (rc == MEMPORT_ENOTSUP) { /* this platform cannot do it: the table says so */
    b->setup_rc = rc;
    return 0;
  }
  if (rc != 0) {
    fprintf(stderr, "fork-cow-vs-share: memport_inherit(%s): %s\n", kind_label[b->kind],
            memport_strerror(rc));
    return -1;
  }
  /* The mode keeps the contents (SHARE moves the pages onto shared memory in place). */
  if (look_at(b->kind, b->addr).what != SEEN_PARENT) {
    fprintf(stderr, "fork-cow-vs-share: memport_inherit(%s) changed the buffer's contents\n",
            kind_label[b->kind]);
    return -1;
  }
  return 0;
}

static int setup_region(struct buffer *b) {
  int rc = memport_region_create(&b->region, npages * page, 0);
  if (rc == 0)
    rc = memport_region_map(b->region, 0, (void **)&b->addr);
  if (rc != 0) {
    fprintf(stderr, "fork-cow-vs-share: shared region: %s\n", memport_strerror(rc));
    return -1;
  }
  fill(b->kind, b->addr);
  return 0;
}

static int setup_readonly(struct buffer *b) {
  memport_region_t *writable = NULL;
  void *w = NULL;
  int rc = memport_region_create(&writable, npages * page, 0);
  if (rc == 0)
    rc = memport_region_map(writable, 0, &w);
  if (rc == 0) {
    fill(b->kind, w);
    /* One-way: from now on nobody can map this memory writable, through either handle. */
    rc = memport_region_readonly(writable, &b->region);
  }
  if (rc == 0)
    rc = memport_region_map(b->region, MEMPORT_MAP_READONLY, (void **)&b->addr);
  /* The writer's own writable view would stay writable; the child is not meant to have one. */
  if (w != NULL)
    memport_unmap(w);
  memport_region_close(writable);
  if (rc != 0) {
    fprintf(stderr, "fork-cow-vs-share: read-only region: %s\n", memport_strerror(rc));
    return -1;
  }
  return 0;
}

static void teardown(struct buffer *b) {
  if (b->alloc != NULL)
    munmap(b->alloc, (npages + 2) * page);
  else if (b->addr != NULL)
    memport_unmap(b->addr);
  memport_region_close(b->region);
}

/* ------------------------------------------------------------------------------------------ */
/* The child.                                                                                  */

static void child_examine(const struct buffer *b, struct report *r) {
  r->before.rss_kb = r->before.private_kb = r->after.rss_kb = r->after.private_kb = r->faults = -1;
  if (b->setup_rc != 0)
    return;
  if (b->kind == K_NONE) { /* reading it here would kill this child: a grandchild does it */
    r->read_fault = probe(b->addr, 0);
    r->seen = SEEN_FAULT;
    return;
  }
  r->seen = look_at(b->kind, b->addr).what;
  if (b->kind == K_READONLY) {
    r->write_fault = probe(b->addr, 1);
    r->mprotect_errno = mprotect(b->addr, npages * page, PROT_READ | PROT_WRITE) == 0 ? 0 : errno;
    void *w = NULL;
    r->map_rw_rc = memport_region_map(b->region, 0, &w);
    if (r->map_rw_rc == 0)
      memport_unmap(w);
    r->before = r->after = smaps_usage(b->addr);
    return;
  }
  r->before = smaps_usage(b->addr);
  long faults = minor_faults();
  for (size_t i = 0; i < npages; i++)
    if (child_writes_page(i))
      page_fill(b->addr + i * page, child_byte(b->kind, i), page);
  long faults_after = minor_faults();
  r->faults = faults < 0 || faults_after < 0 ? -1 : faults_after - faults;
  r->after = smaps_usage(b->addr);
}

static int child_main(const struct buffer *bufs, int fd) {
  struct report reports[K_COUNT];
  /* Fork does not copy the page-table entries of file mappings such as the C library's code: the
   * first call of a library function in the child faults its page in. Call memset once here, so
   * that the faults counted around the writes are the writes' own. */
  page_fill(reports, 0, sizeof reports);
  for (int k = 0; k < K_COUNT; k++)
    child_examine(&bufs[k], &reports[k]);
  const char *p = (const char *)reports;
  size_t left = sizeof reports;
  while (left > 0) {
    ssize_t n = write(fd, p, left);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return 1;
    p += n;
    left -= (size_t)n;
  }
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* The parent's table.                                                                         */

static const char *seen_text(struct view v, char *buf, size_t cap) {
  switch (v.what) {
  case SEEN_PARENT: return "the parent's data";
  case SEEN_ZERO: return "zero pages";
  case SEEN_CHILD_PAGES:
  case SEEN_CHILD_OTHER:
    snprintf(buf, cap, "the child's %zu page%s", v.child_pages, v.child_pages == 1 ? "" : "s");
    return buf;
  case SEEN_MIXED: return "unexpected contents";
  case SEEN_FAULT: return "(see fault)";
  case SEEN_NOTHING: break;
  }
  return "-";
}

static void mismatch(enum kind k, const char *what, const char *got, const char *expected) {
  size_t used = strlen(mismatch_text);
  mismatches++;
  snprintf(mismatch_text + used, sizeof mismatch_text - used, "MISMATCH  %s: %s is \"%s\", expected \"%s\"\n",
           kind_label[k], what, got, expected);
}

static void expect_seen(enum kind k, const char *what, struct view got, enum seen expected) {
  char a[64], b[64];
  struct view want = {expected, nwrites};
  if (got.what != expected)
    mismatch(k, what, seen_text(got, a, sizeof a), seen_text(want, b, sizeof b));
}

/* What the child's read found (the child reports the kind only). */
static struct view child_view(const struct report *r) {
  struct view v = {(enum seen)r->seen, 0};
  return v;
}

/* The table cells of one buffer that judge() fills. */
struct cells {
  char copied[24];
  char fresh[24];
  char note[24];
};

/* Check one buffer against what its mode promises; fill its table cells. */
static void judge(const struct buffer *b, const struct report *r, struct view parent_sees, struct cells *c) {
  enum kind k = b->kind;
  long page_kb = (long)(page / 1024);
  /* A write that copies a page leaves Rss alone (one shared page is replaced by a private one)
   * and adds a page to Private_Dirty; a write that needs a page where there was none (ZERO,
   * whose reads all mapped the shared zero page) adds one to both. */
  int counted = r->before.rss_kb >= 0 && r->after.rss_kb >= 0;
  long fresh = counted ? (r->after.rss_kb - r->before.rss_kb) / page_kb : -1;
  long copies = counted ? (r->after.private_kb - r->before.private_kb) / page_kb - fresh : -1;
  char got[64], want[64];
  snprintf(c->copied, sizeof c->copied, "%s", k == K_NONE || b->setup_rc != 0 ? "-" : "n/a");
  snprintf(c->fresh, sizeof c->fresh, "%s", c->copied);
  if (counted) {
    snprintf(c->copied, sizeof c->copied, "%ld", copies);
    snprintf(c->fresh, sizeof c->fresh, "%ld", fresh);
  }
  switch (k) {
  case K_COPY:
    snprintf(c->note, sizeof c->note, "copy-on-write");
    expect_seen(k, "what the child read", child_view(r), SEEN_PARENT);
    expect_seen(k, "what the parent sees", parent_sees, SEEN_PARENT);
    break;
  case K_SHARE:
  case K_REGION:
    snprintf(c->note, sizeof c->note, k == K_SHARE ? "one copy, shared" : "shared memory");
    expect_seen(k, "what the child read", child_view(r), SEEN_PARENT);
    expect_seen(k, "what the parent sees", parent_sees, SEEN_CHILD_PAGES);
    break;
  case K_NONE:
    snprintf(c->note, sizeof c->note, "not inherited");
    if (r->read_fault.sig != SIGSEGV && r->read_fault.sig != SIGBUS)
      mismatch(k, "the child's read", fault_text(r->read_fault, got, sizeof got), "SIGSEGV");
    expect_seen(k, "what the parent sees", parent_sees, SEEN_PARENT);
    break;
  case K_ZERO:
    if (b->setup_rc != 0) { /* the platform cannot: said in the table, not a mismatch */
      snprintf(c->note, sizeof c->note, "%s", memport_err_name(b->setup_rc));
      return;
    }
    snprintf(c->note, sizeof c->note, "fresh zero pages");
    expect_seen(k, "what the child read", child_view(r), SEEN_ZERO);
    expect_seen(k, "what the parent sees", parent_sees, SEEN_PARENT);
    break;
  case K_READONLY:
    snprintf(c->note, sizeof c->note, "write refused");
    expect_seen(k, "what the child read", child_view(r), SEEN_PARENT);
    expect_seen(k, "what the parent sees", parent_sees, SEEN_PARENT);
    if (r->write_fault.sig != SIGSEGV && r->write_fault.sig != SIGBUS)
      mismatch(k, "the child's write", fault_text(r->write_fault, got, sizeof got), "SIGSEGV or SIGBUS");
    if (r->mprotect_errno == 0)
      mismatch(k, "mprotect(PROT_WRITE) in the child", "success", "refused");
    if (r->map_rw_rc != MEMPORT_EACCES)
      mismatch(k, "memport_region_map read-write", memport_err_name(r->map_rw_rc), "MEMPORT_EACCES");
    break;
  case K_COUNT: break;
  }
  /* The kernel's count: copy-on-write copies exactly the pages the child wrote, ZERO gives it
   * exactly that many fresh pages, and shared memory needs neither. */
  long want_copies = k == K_COPY ? (long)nwrites : 0, want_fresh = k == K_ZERO ? (long)nwrites : 0;
  if (counted && k != K_NONE && (copies != want_copies || fresh != want_fresh)) {
    snprintf(got, sizeof got, "%ld copied, %ld new", copies, fresh);
    snprintf(want, sizeof want, "%ld copied, %ld new", want_copies, want_fresh);
    mismatch(k, "the pages the child's writes cost (smaps)", got, want);
  }
}

#define ROW "%-14s  %-19s  %-22s  %6s  %5s  %6s  %s\n"

static void usage(FILE *f) {
  fprintf(f, "usage: fork-cow-vs-share [-n PAGES] [-q]\n"
             "  -n PAGES  pages per buffer (2..65536, default 64)\n"
             "  -q        quiet: print mismatches only; the exit status tells the result\n");
}

int main(int argc, char **argv) {
  int opt;
  while ((opt = getopt(argc, argv, "n:qh")) != -1) {
    char *end;
    switch (opt) {
    case 'n':
      errno = 0;
      npages = (size_t)strtoul(optarg, &end, 10);
      if (errno != 0 || *end != '\0' || end == optarg || npages < 2 || npages > 65536) {
        usage(stderr);
        return 2;
      }
      break;
    case 'q': quiet = 1; break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (optind != argc) {
    usage(stderr);
    return 2;
  }
  page = memport_page_size();
  nwrites = npages / 16 > 0 ? npages / 16 : 1; /* a few pages, never all */
  alarm(120); /* a stuck child ends the demo (with a failure) instead of hanging it */

  struct buffer bufs[K_COUNT];
  memset(bufs, 0, sizeof bufs);
  static const int modes[] = {MEMPORT_INHERIT_COPY, MEMPORT_INHERIT_SHARE, MEMPORT_INHERIT_NONE,
                              MEMPORT_INHERIT_ZERO};
  int status = 1;
  for (int k = 0; k < K_COUNT; k++) {
    bufs[k].kind = (enum kind)k;
    int rc = k <= K_ZERO ? setup_anonymous(&bufs[k], modes[k]) : k == K_REGION ? setup_region(&bufs[k])
                                                                               : setup_readonly(&bufs[k]);
    if (rc != 0)
      goto out;
  }

  int fds[2];
  if (pipe(fds) != 0) {
    perror("fork-cow-vs-share: pipe");
    goto out;
  }
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork-cow-vs-share: fork");
    close(fds[0]);
    close(fds[1]);
    goto out;
  }
  if (pid == 0) {
    close(fds[0]);
    _exit(child_main(bufs, fds[1]));
  }
  close(fds[1]);
  struct report reports[K_COUNT];
  size_t got = 0;
  while (got < sizeof reports) {
    ssize_t n = read(fds[0], (char *)reports + got, sizeof reports - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    got += (size_t)n;
  }
  close(fds[0]);
  int wstatus;
  while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  if (got != sizeof reports || !WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
    fprintf(stderr, "fork-cow-vs-share: the child failed before reporting\n");
    goto out;
  }

  if (!quiet) {
    char list[96] = "";
    size_t used = 0, shown = 0;
    for (size_t i = 0; i < npages; i++) {
      if (!child_writes_page(i))
        continue;
      if (shown == 4) {
        snprintf(list + used, sizeof list - used, ", ...");
        break;
      }
      used += (size_t)snprintf(list + used, sizeof list - used, "%s%zu", shown > 0 ? ", " : "", i);
      shown++;
    }
    printf("Each buffer: %zu pages of %zu bytes. The child writes %zu of them (page%s %s).\n\n", npages, page,
           nwrites, nwrites == 1 ? "" : "s", list);
    printf(ROW, "mode", "the child read", "the parent then sees", "copied", "new", "faults", "notes");
    printf(ROW, "--------------", "-------------------", "----------------------", "------", "-----",
           "------", "----------------");
  }
  for (int k = 0; k < K_COUNT; k++) {
    const struct buffer *b = &bufs[k];
    const struct report *r = &reports[k];
    struct view parent_sees = {SEEN_NOTHING, 0};
    if (b->setup_rc == 0)
      parent_sees = look_at(b->kind, b->addr);
    struct cells c;
    char faults[24] = "-", child[64], parent[64], fbuf[48];
    memset(&c, 0, sizeof c);
    judge(b, r, parent_sees, &c);
    if (r->faults >= 0)
      snprintf(faults, sizeof faults, "%ld", r->faults);
    if (b->setup_rc != 0)
      snprintf(child, sizeof child, "-");
    else if (k == K_NONE)
      snprintf(child, sizeof child, "%s", fault_text(r->read_fault, fbuf, sizeof fbuf));
    else
      snprintf(child, sizeof child, "%s", seen_text(child_view(r), fbuf, sizeof fbuf));
    snprintf(parent, sizeof parent, "%s", parent_sees.what == SEEN_PARENT ? "its own data, intact"
                                          : seen_text(parent_sees, fbuf, sizeof fbuf));
    if (!quiet)
      printf(ROW, kind_label[k], child, parent, c.copied, c.fresh, faults, c.note);
  }
  if (!quiet) {
    char wf[48];
    const struct report *ro = &reports[K_READONLY];
    printf("\nread-only map, in the child:  write -> %s\n"
           "                              mprotect(PROT_WRITE) -> %s\n"
           "                              memport_region_map(read-write) -> %s\n",
           fault_text(ro->write_fault, wf, sizeof wf),
           ro->mprotect_errno ? strerror(ro->mprotect_errno) : "allowed",
           ro->map_rw_rc == 0 ? "allowed" : memport_err_name(ro->map_rw_rc));
    printf("copied, new: what the child's writes cost, from the buffer's mapping in /proc/self/smaps\n"
           "  (after minus before the writes; n/a where there is no /proc): new = growth of Rss (pages\n"
           "  that did not exist before), copied = growth of Private_Dirty minus new (pages that were\n"
           "  shared with the parent and now are the child's own copy).\n"
           "faults: minor page faults taken by the writes, from getrusage(RUSAGE_SELF).ru_minflt.\n"
           "Faulting accesses (NONE, the read-only write) were made by a grandchild.\n\n");
  }
  if (mismatches == 0) {
    if (!quiet)
      printf("All behaviours as expected.\n");
    status = 0;
  } else {
    printf("%s%d mismatch%s: the behaviour above is not what the modes promise.\n", mismatch_text, mismatches,
           mismatches == 1 ? "" : "es");
  }
out:
  for (int k = 0; k < K_COUNT; k++)
    teardown(&bufs[k]);
  return status;
}
