/* SPDX-License-Identifier: MIT */
/* frame_publisher.c: the camera of camera-fanout alone: 1080p frames, in camera-fanout's format, published on a named topic for subscribers in other programs (numpy_subscriber.py). */

/*
 * examples/camera-fanout forks its own subscribers and names its topics after its pid; this is the
 * same camera for an outside subscriber: the same frames (1920 x 1080 x 3 bytes, a 16-byte header
 * {uint32 magic "MPFR", uint32 seq, uint64 sample_sum} then pixels, sample_sum over every 4096th
 * byte after the header) on a topic of a fixed name, default "camera0".
 *
 * `make` builds it as examples/python/frame-publisher. By hand, from the sources after `make`, or against an
 * installed memport with pkg-config:
 *   cc -O2 -Iinclude examples/python/frame_publisher.c -o frame_publisher -L.libs -lmemport -Wl,-rpath,$PWD/.libs
 *   cc -O2 examples/python/frame_publisher.c -o frame_publisher $(pkg-config --cflags --libs memport)
 *
 *   frame_publisher [-t TOPIC] [-f FRAMES] [-r FPS] [-w SUBSCRIBERS]
 *     (defaults: camera0, 300 frames, 60 frames per second, start once 1 subscriber has joined)
 *
 * Overflow policy drop-oldest (a slow subscriber loses frames and counts them, the camera keeps its
 * pace) with a history of 1 frame; the topic ends in order (subscribers receive MEMPORT_ECLOSED
 * after the last frame). Exit status 0 when every frame was published.
 */

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <memport.h>

#define SECOND (INT64_C(1000000000))
#define WIDTH 1920
#define HEIGHT 1080
#define FRAME_BYTES ((size_t)WIDTH * HEIGHT * 3)
#define FRAME_MAGIC 0x4d504652u /* "MPFR" */

struct frame_head {
  uint32_t magic;
  uint32_t seq;
  uint64_t sample_sum; /* of every 4096th byte after the header */
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

static uint64_t sample_sum(const unsigned char *p, size_t len) {
  uint64_t s = 0;
  for (size_t i = sizeof(struct frame_head); i < len; i += 4096)
    s = s * 31 + p[i];
  return s;
}

/* A moving gradient, as camera-fanout draws it. */
static void draw(unsigned char *p, uint32_t seq) {
  struct frame_head h = {FRAME_MAGIC, seq, 0};
  unsigned char *px = p + sizeof h;
  size_t n = FRAME_BYTES - sizeof h;
  for (size_t i = 0; i < n; i += 64)
    memset(px + i, (int)((i / 64 + seq * 7) & 0xff), n - i < 64 ? n - i : 64);
  h.sample_sum = sample_sum(p, FRAME_BYTES);
  memcpy(p, &h, sizeof h);
}

int main(int argc, char **argv) {
  const char *topic = "camera0";
  unsigned long frames = 300, fps = 60, want = 1;
  int c;
  while ((c = getopt(argc, argv, "t:f:r:w:")) != -1) {
    if (c == 't')
      topic = optarg;
    else if (c == 'f')
      frames = strtoul(optarg, NULL, 10);
    else if (c == 'r')
      fps = strtoul(optarg, NULL, 10);
    else if (c == 'w')
      want = strtoul(optarg, NULL, 10);
    else {
      fprintf(stderr, "usage: frame_publisher [-t TOPIC] [-f FRAMES] [-r FPS] [-w SUBSCRIBERS]\n");
      return 2;
    }
  }
  if (fps == 0 || frames == 0 || frames > UINT32_MAX) {
    fprintf(stderr, "frame_publisher: at least one frame, and a rate above 0\n");
    return 2;
  }
  memport_topic_opts_t o;
  memport_topic_opts_init(&o);
  o.overflow = MEMPORT_TOPIC_DROP_OLDEST;
  o.depth = 4;
  o.history = 1;
  o.buffer_size = (FRAME_BYTES + 4095) & ~(size_t)4095;
  o.buffers = 16;
  memport_pub_t *pub;
  int rc = memport_pub_create(&pub, topic, &o);
  if (rc != 0) {
    fprintf(stderr, "frame_publisher: topic %s: %s\n", topic, memport_strerror(rc));
    return 1;
  }
  printf("frame_publisher: topic %s, waiting for %lu subscriber(s)\n", topic, want);
  fflush(stdout);
  while ((unsigned long)memport_pub_subscribers(pub) < want) {
    memport_pub_process(pub); /* admits subscribers */
    sleep_ns(SECOND / 1000);
  }
  int64_t period = SECOND / (int64_t)fps, t0 = now_ns(), next = t0;
  unsigned long sent = 0;
  for (uint32_t seq = 0; seq < frames; seq++) {
    memport_buf_t b;
    rc = memport_pub_loan(pub, FRAME_BYTES, &b, 10 * SECOND);
    if (rc == 0) {
      draw(b.data, seq);
      rc = memport_pub_publish(pub, &b, 10 * SECOND);
      if (rc != 0)
        memport_pub_discard(pub, &b);
    }
    if (rc != 0) {
      fprintf(stderr, "frame_publisher: frame %" PRIu32 ": %s\n", seq, memport_strerror(rc));
      break;
    }
    sent++;
    next += period;
    sleep_ns(next - now_ns());
  }
  double secs = (double)(now_ns() - t0) / (double)SECOND;
  memport_pub_close(pub); /* orderly: subscribers get what was published, then MEMPORT_ECLOSED */
  printf("frame_publisher: %lu frames of %zu bytes in %.2f s (%.1f frames/s)\n", sent, FRAME_BYTES, secs,
         secs > 0 ? (double)sent / secs : 0.0);
  return sent == frames ? 0 : 1;
}
