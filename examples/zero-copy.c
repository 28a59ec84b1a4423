/* SPDX-License-Identifier: MIT */
/* zero-copy.c: hand a 256 MiB message to another process without copying it, and show that none happened. */

/*
 * A parent and its child share a channel (memport_chan_pair before fork) whose pool has one buffer
 * as large as the message. Each round, the parent (the sender)
 *   1. takes the pool buffer (memport_chan_alloc) and writes the message into it, in place: a small
 *      header (round, checksum, the time of sending) and 256 MiB of data;
 *   2. sends it (memport_chan_send_buf), which puts a few bytes describing the buffer in the ring.
 * The child (the receiver)
 *   3. gets it from memport_chan_recv as a pointer to a read-only view of the very same pages;
 *   4. reads all of it in place and checks the checksum, then releases it, which gives the buffer
 *      back to the sender's pool for the next round.
 * The receiver measures, from /proc/self/status, how much private memory (RssAnon) and shared
 * memory (RssShmem) it has before receiving and after reading everything, and how long each step
 * took. A copy would show as 256 MiB more private memory and as the time of a 256 MiB memcpy; to
 * show that the measurement would catch one, the receiver makes one such copy after the first
 * round, on purpose, and measures it the same way.
 *
 *   zero-copy [-s MIB] [-r ROUNDS]      (defaults: 256 MiB, 3 rounds)
 *
 * Exit status 0 when every checksum matched and, where /proc exists, receiving and reading the
 * message added (almost) no private memory while the deliberate copy added its full size.
 */

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <memport.h>

#define SECOND (INT64_C(1000000000))
#define HEAD_SIZE 64
#define MSG_MAGIC 0x4d505a43u    /* "MPZC" */
#define REPORT_MAGIC 0x4d505250u /* "MPRP" */
#define UNKNOWN INT64_MIN

/* The start of each message. */
struct head {
  uint32_t magic;
  uint32_t round;
  uint64_t size;     /* the whole message, header included */
  uint64_t checksum; /* of the bytes after the header */
  int64_t sent_ns;   /* monotonic clock, just before memport_chan_send_buf */
};

/* What the receiver measured in one round; sent back to the parent, which prints the table. */
struct report {
  uint32_t magic;
  uint32_t round;
  int32_t ok;          /* size and checksum right */
  int32_t pad;
  int64_t delivered_ns; /* from the sender's send_buf call to the receiver's recv returning */
  int64_t read_ns;      /* reading the whole message in place */
  int64_t anon_kb;      /* RssAnon growth from before recv to after the read (UNKNOWN without /proc) */
  int64_t shmem_kb;     /* RssShmem growth, same interval */
  int64_t copy_ns;      /* round 1 only: the deliberate memcpy into private memory */
  int64_t copy_anon_kb; /* and its RssAnon growth */
};

static size_t size = (size_t)256 << 20;
static unsigned rounds = 3;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* RssAnon and RssShmem of this process in kB, from /proc/self/status; -1 where there is no /proc. */
static int mem_kb(int64_t *anon, int64_t *shmem) {
  FILE *f = fopen("/proc/self/status", "re");
  if (f == NULL)
    return -1;
  char line[256];
  long a = -1, s = -1, v;
  while (fgets(line, sizeof line, f) != NULL) {
    if (sscanf(line, "RssAnon: %ld kB", &v) == 1)
      a = v;
    else if (sscanf(line, "RssShmem: %ld kB", &v) == 1)
      s = v;
  }
  fclose(f);
  if (a < 0 || s < 0)
    return -1;
  *anon = a;
  *shmem = s;
  return 0;
}

/* Fill with words derived from `seed`, returning their checksum (len is a multiple of 8). */
static uint64_t fill(unsigned char *p, size_t len, uint64_t seed) {
  uint64_t x = seed * UINT64_C(0x9e3779b97f4a7c15) | 1, sum = 0;
  for (size_t i = 0; i < len; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    memcpy(p + i, &x, 8);
    sum += x ^ (sum >> 7);
  }
  return sum;
}

static uint64_t checksum(const unsigned char *p, size_t len) {
  uint64_t sum = 0;
  for (size_t i = 0; i < len; i += 8) {
    uint64_t x;
    memcpy(&x, p + i, 8);
    sum += x ^ (sum >> 7);
  }
  return sum;
}

static int fail(const char *who, const char *what, int rc) {
  fprintf(stderr, "zero-copy: %s: %s: %s\n", who, what, memport_strerror(rc));
  return 1;
}

/* ------------------------------------------------------------------------------------------ */

static int receiver(memport_chan_t *chan) {
  for (unsigned r = 1; r <= rounds; r++) {
    struct report rep;
    memset(&rep, 0, sizeof rep);
    rep.magic = REPORT_MAGIC;
    rep.round = r;
    rep.anon_kb = rep.shmem_kb = rep.copy_anon_kb = UNKNOWN;
    int64_t anon0 = 0, shmem0 = 0, anon1 = 0, shmem1 = 0;
    int have_mem = mem_kb(&anon0, &shmem0) == 0;

    memport_buf_t buf;
    int rc = memport_chan_recv(chan, &buf, 60 * SECOND);
    int64_t t_recv = now_ns();
    if (rc != 0)
      return fail("receiver", "memport_chan_recv", rc);
    const unsigned char *p = buf.data;
    struct head h;
    memset(&h, 0, sizeof h);
    if (buf.len == size)
      memcpy(&h, p, sizeof h); /* shared memory: copy the header once, then check it */
    rep.ok = buf.len == size && h.magic == MSG_MAGIC && h.round == r && h.size == size;
    if (rep.ok) {
      rep.delivered_ns = t_recv - h.sent_ns;
      int64_t t0 = now_ns();
      rep.ok = checksum(p + HEAD_SIZE, size - HEAD_SIZE) == h.checksum; /* every byte, in place */
      rep.read_ns = now_ns() - t0;
    }
    if (have_mem && mem_kb(&anon1, &shmem1) == 0) {
      rep.anon_kb = anon1 - anon0;
      rep.shmem_kb = shmem1 - shmem0;
    }
    if (r == 1 && rep.ok) { /* the control experiment: what a copy looks like */
      unsigned char *copy = malloc(size);
      if (copy != NULL) {
        int64_t t0 = now_ns();
        memcpy(copy, p, size);
        rep.copy_ns = now_ns() - t0;
        int64_t anon2, shmem2;
        if (have_mem && mem_kb(&anon2, &shmem2) == 0)
          rep.copy_anon_kb = anon2 - anon1;
        if (checksum(copy + HEAD_SIZE, size - HEAD_SIZE) != h.checksum) /* and keeps the copy alive */
          rep.ok = 0;
        free(copy);
      }
    }
    if ((rc = memport_chan_release(chan, &buf)) != 0) /* the buffer goes back to the sender's pool */
      return fail("receiver", "memport_chan_release", rc);
    if ((rc = memport_chan_send(chan, &rep, sizeof rep, 0, 10 * SECOND)) != 0)
      return fail("receiver", "send the report", rc);
  }
  return 0;
}

static void ms_text(char *buf, size_t cap, int64_t ns) {
  if (ns < 1000000)
    snprintf(buf, cap, "%.0f us", (double)ns / 1e3);
  else
    snprintf(buf, cap, "%.1f ms", (double)ns / 1e6);
}

static void mib_text(char *buf, size_t cap, int64_t kb) {
  if (kb == UNKNOWN)
    snprintf(buf, cap, "n/a");
  else
    snprintf(buf, cap, "%+.1f MiB", (double)kb / 1024.0);
}

static int sender(memport_chan_t *chan, pid_t child) {
  int status = 0;
  printf("zero-copy: %u rounds of a %zu MiB message from pid %ld to pid %ld, through the channel's pool\n\n",
         rounds, size >> 20, (long)getpid(), (long)child);
  printf("       ------- sender -------  "
         "---------------------------- receiver ----------------------------\n");
  printf("%5s  %13s  %13s  %13s  %13s  %14s  %14s\n", "round", "write", "send_buf()", "delivered in",
         "read", "RssAnon", "RssShmem");
  struct report first;
  memset(&first, 0, sizeof first);
  for (unsigned r = 1; r <= rounds; r++) {
    memport_buf_t buf;
    int rc = memport_chan_alloc(chan, size, &buf, 60 * SECOND);
    if (rc != 0)
      return fail("sender", "memport_chan_alloc", rc);
    int64_t t0 = now_ns();
    struct head h = {MSG_MAGIC, r, size, 0, 0};
    h.checksum = fill((unsigned char *)buf.data + HEAD_SIZE, size - HEAD_SIZE, r);
    int64_t t_fill = now_ns() - t0;
    h.sent_ns = now_ns();
    memcpy(buf.data, &h, sizeof h);
    rc = memport_chan_send_buf(chan, &buf, 10 * SECOND);
    int64_t t_send = now_ns() - h.sent_ns;
    if (rc != 0) {
      memport_chan_free_buf(chan, &buf);
      return fail("sender", "memport_chan_send_buf", rc);
    }
    struct report rep;
    size_t len = 0;
    if ((rc = memport_chan_recv_copy(chan, &rep, sizeof rep, &len, 60 * SECOND)) != 0)
      return fail("sender", "the receiver's report", rc);
    if (len != sizeof rep || rep.magic != REPORT_MAGIC || rep.round != r) {
      fprintf(stderr, "zero-copy: sender: a malformed report\n");
      return 1;
    }
    if (r == 1)
      first = rep;
    char c1[24], c2[24], c3[24], c4[24], c5[24], c6[24];
    ms_text(c1, sizeof c1, t_fill);
    ms_text(c2, sizeof c2, t_send);
    ms_text(c3, sizeof c3, rep.delivered_ns);
    ms_text(c4, sizeof c4, rep.read_ns);
    mib_text(c5, sizeof c5, rep.anon_kb);
    mib_text(c6, sizeof c6, rep.shmem_kb);
    printf("%5u  %13s  %13s  %13s  %13s  %14s  %14s%s\n", r, c1, c2, c3, c4, c5, c6,
           rep.ok ? "" : "  BAD DATA");
    if (!rep.ok)
      status = 1;
    /* Zero-copy: receiving and reading the message adds no private memory (a few pages of slack
     * for the process's own bookkeeping). */
    if (rep.anon_kb != UNKNOWN && rep.anon_kb > (int64_t)(size >> 10) / 16) {
      printf("MISMATCH: the receiver's private memory grew by %" PRId64 " kB: the message was copied\n",
             rep.anon_kb);
      status = 1;
    }
  }
  char c1[24], c2[24];
  ms_text(c1, sizeof c1, first.copy_ns);
  mib_text(c2, sizeof c2, first.copy_anon_kb);
  printf("\nwrite: the sender fills the pool buffer in place (in round 1 its pages are allocated too).\n"
         "send_buf(): the call that hands the buffer over. delivered in: from that call to the\n"
         "receiver's memport_chan_recv returning. read: the receiver reads every byte in place and\n"
         "checks the checksum. RssAnon, RssShmem: growth of the receiver's private and shared resident\n"
         "memory across receiving and reading (from /proc/self/status).\n\n");
  printf("For comparison, the receiver copied the message once into private memory (malloc + memcpy):\n"
         "%s, RssAnon %s. Receiving it cost none of that: the receiver read the sender's own\n"
         "pages through a read-only mapping. RssShmem grows once, when those pages are first mapped,\n"
         "and not in later rounds: nothing is allocated or mapped per message.\n",
         c1, c2);
  if (first.copy_anon_kb != UNKNOWN && first.copy_anon_kb < (int64_t)(size >> 10) / 2) {
    printf("MISMATCH: the deliberate copy did not show in RssAnon: the measurement cannot be trusted here\n");
    status = 1;
  }
  return status;
}

static int usage(void) {
  fprintf(stderr, "usage: zero-copy [-s MIB] [-r ROUNDS]   (1..4096 MiB, default 256; 1..100 rounds, "
                  "default 3)\n");
  return 2;
}

int main(int argc, char **argv) {
  int opt;
  while ((opt = getopt(argc, argv, "s:r:")) != -1) {
    char *end;
    unsigned long v = strtoul(optarg, &end, 10);
    if (*end != '\0' || end == optarg)
      return usage();
    if (opt == 's' && v >= 1 && v <= 4096)
      size = (size_t)v << 20;
    else if (opt == 'r' && v >= 1 && v <= 100)
      rounds = (unsigned)v;
    else
      return usage();
  }
  if (optind != argc)
    return usage();
  setvbuf(stdout, NULL, _IOLBF, 0);

  /* One pool buffer exactly as large as the message: shared with the peer once, when the
   * channel is set up, then reused every round. */
  memport_chan_opts_t opts;
  memport_chan_opts_init(&opts);
  opts.pool_buffer_size = size;
  opts.pool_buffers = 1;
  memport_chan_t *mine = NULL, *theirs = NULL;
  int rc = memport_chan_pair(&mine, &theirs, &opts);
  if (rc != 0)
    return fail("parent", "memport_chan_pair", rc);
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    perror("zero-copy: fork");
    return 1;
  }
  if (pid == 0) {
    memport_chan_close(mine);
    int st = receiver(theirs);
    memport_chan_close(theirs);
    _exit(st);
  }
  memport_chan_close(theirs);
  int status = sender(mine, pid);
  memport_chan_close(mine);
  int ws = 0;
  while (waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
    status = 1;
  if (status == 0)
    printf("OK: %u x %zu MiB handed over, no copy.\n", rounds, size >> 20);
  return status;
}
