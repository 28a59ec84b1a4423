/* SPDX-License-Identifier: MIT */
/* python_peer.c: the C side of tools/bench/python-bench.py: a topic publisher of frames, and the C subscriber the Python subscriber is compared with. */

/*
 *   python-peer pub TOPIC FRAMES BYTES   publish FRAMES frames of BYTES (overflow block, depth 8, 16 pool
 *                                        buffers) once one subscriber joined; each frame is a loaned pool
 *                                        buffer with its number written in its first 8 bytes (nothing else
 *                                        is touched: what is measured is the hand-over, not the drawing);
 *                                        then close in order
 *   python-peer sub TOPIC                receive until the topic ends, summing the first 8 bytes of each
 *                                        frame; prints "FRAMES SECONDS SUM CPU_SECONDS" (first frame to
 *                                        the last; CPU: this process's, from the first frame to the end)
 *
 * Exit status 0 on success, 1 on a memport error, 2 on bad arguments.
 */

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <memport.h>

#define SECOND (INT64_C(1000000000))

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * SECOND + t.tv_nsec;
}

static int64_t cpu_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return (int64_t)t.tv_sec * SECOND + t.tv_nsec;
}

static int publish(const char *topic, unsigned long frames, size_t bytes) {
  memport_topic_opts_t o;
  memport_topic_opts_init(&o);
  o.depth = 8;
  o.buffers = 16;
  o.buffer_size = (bytes + 4095) & ~(size_t)4095;
  memport_pub_t *pub;
  int rc = memport_pub_create(&pub, topic, &o);
  if (rc != 0) {
    fprintf(stderr, "python-peer: create %s: %s\n", topic, memport_strerror(rc));
    return 1;
  }
  int64_t until = now_ns() + 30 * SECOND;
  while (memport_pub_subscribers(pub) < 1 && now_ns() < until) {
    memport_pub_process(pub);
    struct timespec t = {0, 1000000};
    nanosleep(&t, NULL);
  }
  for (uint64_t seq = 0; seq < frames && rc == 0; seq++) {
    memport_buf_t b;
    rc = memport_pub_loan(pub, bytes, &b, 30 * SECOND);
    if (rc == 0) {
      memcpy(b.data, &seq, sizeof seq);
      rc = memport_pub_publish(pub, &b, 30 * SECOND);
      if (rc != 0)
        memport_pub_discard(pub, &b);
    }
  }
  if (rc != 0)
    fprintf(stderr, "python-peer: publish: %s\n", memport_strerror(rc));
  memport_pub_close(pub);
  return rc == 0 ? 0 : 1;
}

static int subscribe(const char *topic) {
  memport_sub_t *sub;
  int rc = memport_sub_connect(&sub, topic, NULL, 30 * SECOND);
  if (rc != 0) {
    fprintf(stderr, "python-peer: connect %s: %s\n", topic, memport_strerror(rc));
    return 1;
  }
  uint64_t n = 0, sum = 0;
  int64_t t0 = 0, t1 = 0, c0 = 0, c1 = 0;
  for (;;) {
    memport_buf_t b;
    rc = memport_sub_recv(sub, &b, 30 * SECOND);
    if (rc != 0)
      break;
    uint64_t v = 0;
    if (b.len >= sizeof v)
      memcpy(&v, b.data, sizeof v);
    sum += v;
    t1 = now_ns();
    if (n++ == 0) {
      t0 = t1;
      c0 = cpu_ns();
    }
    memport_sub_release(sub, &b);
  }
  c1 = cpu_ns();
  memport_sub_close(sub);
  if (rc != MEMPORT_ECLOSED) {
    fprintf(stderr, "python-peer: receive: %s\n", memport_strerror(rc));
    return 1;
  }
  printf("%" PRIu64 " %.9f %" PRIu64 " %.9f\n", n, (double)(t1 - t0) / (double)SECOND, sum,
         (double)(c1 - c0) / (double)SECOND);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 5 && strcmp(argv[1], "pub") == 0) {
    unsigned long frames = strtoul(argv[3], NULL, 10), bytes = strtoul(argv[4], NULL, 10);
    if (frames == 0 || bytes < 8 || bytes > (1ul << 30))
      return 2;
    return publish(argv[2], frames, bytes);
  }
  if (argc == 3 && strcmp(argv[1], "sub") == 0)
    return subscribe(argv[2]);
  fprintf(stderr, "usage: python-peer pub TOPIC FRAMES BYTES | python-peer sub TOPIC\n");
  return 2;
}
