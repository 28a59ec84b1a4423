/* SPDX-License-Identifier: MIT */
/* camera-fanout.c: a camera publishing 1080p frames to three subscribers, one slow, under both overflow policies, and a late joiner that gets the history. */

/*
 * A "camera" (the parent) publishes 1080p RGB frames (1920 x 1080 x 3 = 6,220,800 bytes) on a
 * topic. Each frame is written in place into a loaned pool buffer (memport_pub_loan) and published
 * (memport_pub_publish): the subscribers receive read-only views of the camera's own pages, so a
 * frame costs the same to hand out whatever its size and however many subscribers there are.
 *
 * Three subscribers (forked processes) connect to the topic by name:
 *   - "display" and "recorder" keep up;
 *   - "analytics" is slow: it takes four frame periods per frame.
 * The demonstration runs twice, once per overflow policy:
 *   - block: the camera waits for the slowest subscriber, so its frame rate drops to the slow
 *     one's, and nobody loses a frame;
 *   - drop-oldest: the camera and the fast subscribers keep the full rate; the slow one loses its
 *     oldest frames and is told how many (memport_sub_missed).
 * In the drop-oldest run a fourth subscriber, "late", joins half-way: the topic keeps the last
 * four frames (history), so it starts with frames published before it connected.
 *
 * Each subscriber checks every frame (its number, and a checksum over a sample of its bytes) and
 * measures its private memory (RssAnon in /proc/self/status, Linux) before and after: reading
 * hundreds of megabytes of frames adds almost none, because nothing was copied.
 *
 *   camera-fanout [-f FRAMES] [-r FPS]     (defaults: 90 frames at 60 frames per second)
 *
 * Exit status 0 when every subscriber saw its frames in order with right checksums, received +
 * missed == published for each, nobody missed a frame under block, the fast ones missed none
 * under drop-oldest, and the late joiner began with a frame published before it connected.
 */

#include <inttypes.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <memport.h>

#define SECOND (INT64_C(1000000000))
#define WIDTH 1920
#define HEIGHT 1080
#define FRAME_BYTES ((size_t)WIDTH * HEIGHT * 3)
#define FRAME_MAGIC 0x4d504652u /* "MPFR" */
#define HISTORY 4
#define NSUBS 4

/* The start of each frame. */
struct frame_head {
  uint32_t magic;
  uint32_t seq;
  uint64_t sample_sum; /* of every 4096th byte after the header */
};

enum { DISPLAY, RECORDER, ANALYTICS, LATE };
static const char *const sub_names[NSUBS] = {"display", "recorder", "analytics", "late"};

/* What a subscriber measured; in memory shared with the parent. */
struct report {
  int done;
  int ok;              /* frames in order, checksums right */
  uint32_t received;   /* frames received */
  uint32_t first_seq;  /* number of the first frame received */
  uint32_t published_at_connect; /* frames the camera had published when our connect returned */
  uint64_t missed;     /* memport_sub_missed at the end, less what it had missed before its first frame */
  double fps;          /* frames received per second, first to last */
  long rss_anon_kib_0; /* private memory before the first frame (-1: unknown) */
  long rss_anon_kib_1; /* ... and after the last */
  char why[96];        /* what went wrong */
};

struct shared {
  _Atomic uint32_t published; /* frames published so far */
  _Atomic uint32_t connected; /* subscribers connected */
  _Atomic int late_go;        /* the late joiner may connect */
  struct report rep[NSUBS];
};

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * SECOND + t.tv_nsec;
}

static void sleep_ns(int64_t ns) {
  if (ns <= 0)
    return;
  struct timespec t = {(time_t)(ns / SECOND), (long)(ns % SECOND)};
  while (nanosleep(&t, &t) != 0) {
  }
}

/* Private (anonymous) resident memory in KiB, or -1 where /proc is not there. */
static long rss_anon_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (f == NULL)
    return -1;
  char line[256];
  long v = -1;
  while (fgets(line, sizeof line, f) != NULL)
    if (sscanf(line, "RssAnon: %ld", &v) == 1)
      break;
  fclose(f);
  return v;
}

static uint64_t sample_sum(const unsigned char *p, size_t len) {
  uint64_t s = 0;
  for (size_t i = sizeof(struct frame_head); i < len; i += 4096)
    s = s * 31 + p[i];
  return s;
}

/* The camera's picture: a moving gradient, cheap to make, different in every frame. */
static void draw(unsigned char *p, uint32_t seq) {
  struct frame_head h = {FRAME_MAGIC, seq, 0};
  unsigned char *px = p + sizeof h;
  size_t n = FRAME_BYTES - sizeof h;
  for (size_t i = 0; i < n; i += 64)
    memset(px + i, (int)((i / 64 + seq * 7) & 0xff), n - i < 64 ? n - i : 64);
  h.sample_sum = sample_sum(p, FRAME_BYTES);
  memcpy(p, &h, sizeof h);
}

/* One subscriber's life: connect, receive until the camera closes, check and measure. */
static int subscriber(struct shared *sh, int who, const char *topic, int64_t period_ns) {
  struct report *r = &sh->rep[who];
  memset(r, 0, sizeof *r);
  r->ok = 1;
  if (who == LATE)
    while (!atomic_load(&sh->late_go))
      sleep_ns(SECOND / 1000);
  memport_sub_t *sub;
  int rc = memport_sub_connect(&sub, topic, NULL, 10 * SECOND);
  if (rc != 0) {
    snprintf(r->why, sizeof r->why, "connect: %s", memport_err_name(rc));
    r->ok = 0;
    r->done = 1;
    return 1;
  }
  r->published_at_connect = atomic_load(&sh->published);
  atomic_fetch_add(&sh->connected, 1);
  r->rss_anon_kib_0 = rss_anon_kib();
  int64_t t_first = 0, t_last = 0;
  uint32_t expect = 0;
  uint64_t missed_before = 0;
  for (;;) {
    memport_buf_t b;
    rc = memport_sub_recv(sub, &b, 30 * SECOND);
    if (rc == MEMPORT_ECLOSED)
      break; /* the camera closed in order, after we had everything */
    if (rc != 0) {
      snprintf(r->why, sizeof r->why, "receive: %s", memport_err_name(rc));
      r->ok = 0;
      break;
    }
    struct frame_head h;
    memcpy(&h, b.data, sizeof h);
    uint64_t missed = 0;
    memport_sub_missed(sub, &missed);
    if (b.len != FRAME_BYTES || h.magic != FRAME_MAGIC || h.sample_sum != sample_sum(b.data, b.len)) {
      snprintf(r->why, sizeof r->why, "frame %" PRIu32 " is damaged", h.seq);
      r->ok = 0;
    } else if (r->received > 0 && h.seq < expect) {
      snprintf(r->why, sizeof r->why, "frame %" PRIu32 " after %" PRIu32, h.seq, expect - 1);
      r->ok = 0;
    }
    if (r->received == 0) {
      r->first_seq = h.seq;
      t_first = now_ns();
      missed_before = missed; /* a late joiner's history may have lost its oldest already */
    }
    t_last = now_ns();
    expect = h.seq + 1;
    r->received++;
    memport_sub_release(sub, &b);
    if (who == ANALYTICS)
      sleep_ns(4 * period_ns); /* slow analysis */
  }
  memport_sub_missed(sub, &r->missed);
  r->missed -= missed_before;
  r->rss_anon_kib_1 = rss_anon_kib();
  r->fps = r->received > 1 ? (double)(r->received - 1) * (double)SECOND / (double)(t_last - t_first) : 0;
  memport_sub_close(sub);
  r->done = 1;
  return r->ok ? 0 : 1;
}

/* One run of the demonstration under `overflow`. 0 when every check held. */
static int run(struct shared *sh, int overflow, unsigned frames, int64_t period_ns) {
  char topic[64];
  snprintf(topic, sizeof topic, "camera-fanout-%ld-%d", (long)getpid(), overflow);
  memport_topic_opts_t o;
  memport_topic_opts_init(&o);
  o.overflow = overflow;
  o.depth = 4;
  o.history = overflow == MEMPORT_TOPIC_DROP_OLDEST ? HISTORY : 0;
  o.buffer_size = (FRAME_BYTES + 4095) & ~(size_t)4095;
  o.buffers = 16; /* the queues (their newest frames overlap the history), what each subscriber holds, one frame being drawn */
  memport_pub_t *pub;
  int rc = memport_pub_create(&pub, topic, &o);
  if (rc != 0) {
    fprintf(stderr, "camera-fanout: memport_pub_create: %s\n", memport_err_name(rc));
    return 1;
  }
  memset(sh, 0, sizeof *sh);
  int nsubs = overflow == MEMPORT_TOPIC_DROP_OLDEST ? 4 : 3;
  pid_t pids[NSUBS];
  for (int i = 0; i < nsubs; i++) {
    pids[i] = fork();
    if (pids[i] == 0)
      _exit(subscriber(sh, i, topic, period_ns));
  }
  /* Wait for the first three (the publisher admits them from its own calls). */
  int64_t until = now_ns() + 10 * SECOND;
  while (memport_pub_subscribers(pub) < 3 && now_ns() < until) {
    memport_pub_process(pub);
    sleep_ns(SECOND / 1000);
  }
  int64_t t0 = now_ns(), next = t0;
  unsigned sent = 0;
  for (uint32_t seq = 0; seq < frames; seq++) {
    if (seq == frames / 2)
      atomic_store(&sh->late_go, 1);
    memport_buf_t b;
    rc = memport_pub_loan(pub, FRAME_BYTES, &b, 10 * SECOND);
    if (rc == 0) {
      draw(b.data, seq);
      rc = memport_pub_publish(pub, &b, 10 * SECOND);
      if (rc != 0)
        memport_pub_discard(pub, &b);
    }
    if (rc != 0) {
      fprintf(stderr, "camera-fanout: frame %" PRIu32 ": %s\n", seq, memport_err_name(rc));
      break;
    }
    atomic_store(&sh->published, ++sent);
    next += period_ns;
    sleep_ns(next - now_ns()); /* the camera's own pace; under block the slow subscriber sets it */
  }
  double cam_fps = sent > 1 ? (double)(sent - 1) * (double)SECOND / (double)(now_ns() - t0) : 0;
  /* The late joiner must have joined before we close, or it would find no topic. */
  until = now_ns() + 10 * SECOND;
  while ((int)atomic_load(&sh->connected) < nsubs && now_ns() < until) {
    memport_pub_process(pub);
    sleep_ns(SECOND / 1000);
  }
  memport_pub_close(pub); /* orderly: each subscriber receives what it was sent, then ECLOSED */
  int failed = sent != frames;
  for (int i = 0; i < nsubs; i++) {
    int st;
    waitpid(pids[i], &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
      failed = 1;
  }
  printf("\n%s: the camera published %u frames of %zu bytes at %.1f frames/s (asked: %.1f)\n",
         overflow == MEMPORT_TOPIC_BLOCK ? "block" : "drop-oldest", sent, FRAME_BYTES, cam_fps,
         (double)SECOND / (double)period_ns);
  printf("  %-10s %9s %7s %9s %9s %22s\n", "subscriber", "received", "missed", "first", "frames/s",
         "private memory (KiB)");
  for (int i = 0; i < nsubs; i++) {
    struct report *r = &sh->rep[i];
    printf("  %-10s %9" PRIu32 " %7" PRIu64 " %9" PRIu32 " %9.1f %10ld -> %-10ld %s\n", sub_names[i], r->received,
           r->missed, r->first_seq, r->fps, r->rss_anon_kib_0, r->rss_anon_kib_1, r->ok ? "" : r->why);
    if (!r->done || !r->ok)
      failed = 1;
    /* Every frame since the first is accounted for: received or reported missed. */
    if (r->received + r->missed != sent - r->first_seq) {
      printf("  %s: %" PRIu32 " received + %" PRIu64 " missed != %u published since its first\n", sub_names[i],
             r->received, r->missed, sent - r->first_seq);
      failed = 1;
    }
    if ((overflow == MEMPORT_TOPIC_BLOCK || i == DISPLAY || i == RECORDER) && r->missed != 0)
      failed = 1;
    if (i == LATE)
      printf("  late: connected when %" PRIu32 " frames were out; it began with frame %" PRIu32
             " (the topic keeps the last %d)\n",
             r->published_at_connect, r->first_seq, HISTORY);
    if (i == LATE && r->received > 0 && r->first_seq >= r->published_at_connect) {
      printf("  late: its first frame (%" PRIu32 ") was not one from before it connected (%" PRIu32 ")\n",
             r->first_seq, r->published_at_connect);
      failed = 1;
    }
    /* No copy: reading the frames added far less private memory than one frame. */
    if (r->rss_anon_kib_0 >= 0 && r->rss_anon_kib_1 - r->rss_anon_kib_0 > (long)(FRAME_BYTES / 1024 / 2)) {
      printf("  %s: its private memory grew by %ld KiB: a copy?\n", sub_names[i],
             r->rss_anon_kib_1 - r->rss_anon_kib_0);
      failed = 1;
    }
  }
  return failed;
}

int main(int argc, char **argv) {
  unsigned frames = 90, fps = 60;
  int c;
  while ((c = getopt(argc, argv, "f:r:")) != -1) {
    if (c == 'f')
      frames = (unsigned)strtoul(optarg, NULL, 10);
    else if (c == 'r')
      fps = (unsigned)strtoul(optarg, NULL, 10);
    else {
      fprintf(stderr, "usage: camera-fanout [-f FRAMES] [-r FPS]\n");
      return 2;
    }
  }
  if (frames < 8 || fps == 0) {
    fprintf(stderr, "camera-fanout: at least 8 frames, and a rate above 0\n");
    return 2;
  }
  struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (sh == MAP_FAILED)
    return 1;
  int64_t period = SECOND / fps;
  int failed = run(sh, MEMPORT_TOPIC_BLOCK, frames, period);
  failed |= run(sh, MEMPORT_TOPIC_DROP_OLDEST, frames, period);
  printf("\n%s\n", failed ? "camera-fanout: FAILED" : "camera-fanout: every frame accounted for, none copied");
  return failed;
}
