/* SPDX-License-Identifier: MIT */
/* producer-consumer.c: two processes, one named channel, messages of mixed sizes with checksums verified. */

/*
 * The producer serves a name and accepts a channel on it (memport_service_create +
 * memport_chan_accept); the consumer connects to the name (memport_chan_connect). The producer
 * then sends a stream of messages whose sizes mix many small ones, some medium ones and a few
 * large ones, the way a media or sensor pipeline does:
 *   - up to the channel's zero-copy threshold (64 KiB by default) it uses memport_chan_send: the
 *     bytes are copied once, into the shared ring, and the consumer reads them there in place;
 *   - above it, it takes a buffer from the channel's shared pool (memport_chan_alloc), writes the
 *     message directly into it and sends it (memport_chan_send_buf): nothing is copied; the
 *     consumer gets a read-only view of the same pages, and the buffer returns to the producer's
 *     pool when the consumer releases it.
 * Every message carries its sequence number, its length and a checksum of its payload; the
 * consumer checks all three (and that the sizes follow the agreed sequence), then releases the
 * message. At the end the consumer sends its own totals back over the same channel and the
 * producer compares them with what it sent.
 *
 *   producer-consumer [-n MESSAGES]         both, the consumer in a forked child (default 20000)
 *   producer-consumer --produce NAME [-n N] only the producer (start the consumer in another shell)
 *   producer-consumer --consume NAME [-n N] only the consumer
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
#define MSG_MAGIC 0x4d50504du /* "MPPM" */
#define END_MAGIC 0x4d50454eu /* "MPEN" */
#define SUM_MAGIC 0x4d505355u /* "MPSU" */
#define MAX_PAYLOAD (2u << 20)

/* The head of every data message; the payload follows. */
struct head {
  uint32_t magic;
  uint32_t seq;
  uint64_t len;      /* payload bytes */
  uint64_t checksum; /* of the payload */
};

/* The last message of the stream (producer to consumer) and the consumer's answer. */
struct totals {
  uint32_t magic;
  uint32_t messages;
  uint64_t bytes;
  uint64_t checksums; /* the sum of all payload checksums */
};

static uint32_t nmessages = 20000;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A small deterministic generator: both sides derive each message's size from its number. */
static uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= UINT64_C(0xff51afd7ed558ccd);
  x ^= x >> 33;
  x *= UINT64_C(0xc4ceb9fe1a85ec53);
  x ^= x >> 33;
  return x;
}

/* Payload size of message `seq`: 70% 0..512 B, 20% up to 16 KiB, 9% up to 64 KiB, 1% up to 2 MiB. */
static size_t payload_size(uint32_t seq) {
  uint64_t r = mix(seq + UINT64_C(0x9e3779b97f4a7c15));
  unsigned bucket = (unsigned)(r % 100);
  r >>= 8;
  if (bucket < 70)
    return (size_t)(r % 513);
  if (bucket < 90)
    return 513 + (size_t)(r % (16384 - 513));
  if (bucket < 99)
    return 16384 + (size_t)(r % (65536 - 16384));
  return 65536 + (size_t)(r % (MAX_PAYLOAD - 65536));
}

/* Fill a payload with bytes derived from the message number, returning their checksum. */
static uint64_t fill_payload(unsigned char *p, size_t len, uint32_t seq) {
  uint64_t x = mix(seq) | 1, sum = 0;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    memcpy(p + i, &x, 8);
    sum = (sum ^ x) * UINT64_C(0x100000001b3);
  }
  for (; i < len; i++) {
    p[i] = (unsigned char)(seq + i);
    sum = (sum ^ p[i]) * UINT64_C(0x100000001b3);
  }
  return sum;
}

/* The same checksum, computed by the consumer over what it received. */
static uint64_t checksum(const unsigned char *p, size_t len) {
  uint64_t sum = 0;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t x;
    memcpy(&x, p + i, 8);
    sum = (sum ^ x) * UINT64_C(0x100000001b3);
  }
  for (; i < len; i++)
    sum = (sum ^ p[i]) * UINT64_C(0x100000001b3);
  return sum;
}

static int fail(const char *who, const char *what, int rc) {
  fprintf(stderr, "producer-consumer: %s: %s: %s\n", who, what, memport_strerror(rc));
  return 1;
}

static const char *mib(uint64_t bytes, char *buf, size_t cap) {
  snprintf(buf, cap, "%.1f MiB", (double)bytes / (1024.0 * 1024.0));
  return buf;
}

/* ------------------------------------------------------------------------------------------ */

static int produce(memport_chan_t *chan) {
  memport_chan_opts_t opts;
  memport_chan_opts_init(&opts); /* the defaults both sides use: the threshold is known */
  size_t threshold = opts.zerocopy_threshold;
  unsigned char *scratch = malloc(sizeof(struct head) + threshold);
  if (scratch == NULL)
    return fail("producer", "malloc", MEMPORT_ENOMEM);
  uint32_t ring_msgs = 0, pool_msgs = 0;
  uint64_t bytes = 0, sums = 0;
  double t0 = now_s();
  int rc = 0;
  for (uint32_t seq = 0; seq < nmessages && rc == 0; seq++) {
    size_t len = payload_size(seq), total = sizeof(struct head) + len;
    struct head h = {MSG_MAGIC, seq, len, 0};
    if (total <= threshold) { /* small: composed here, copied once into the ring */
      h.checksum = fill_payload(scratch + sizeof h, len, seq);
      memcpy(scratch, &h, sizeof h);
      rc = memport_chan_send(chan, scratch, total, 0, 10 * SECOND);
      ring_msgs++;
    } else { /* large: written in place in a pool buffer the consumer will read, never copied */
      memport_buf_t buf;
      rc = memport_chan_alloc(chan, total, &buf, 10 * SECOND);
      if (rc != 0)
        break;
      unsigned char *p = buf.data;
      h.checksum = fill_payload(p + sizeof h, len, seq);
      memcpy(p, &h, sizeof h);
      rc = memport_chan_send_buf(chan, &buf, 10 * SECOND);
      if (rc != 0)
        memport_chan_free_buf(chan, &buf);
      pool_msgs++;
    }
    bytes += len;
    sums += h.checksum;
  }
  free(scratch);
  if (rc != 0)
    return fail("producer", "send", rc);
  struct totals end = {END_MAGIC, nmessages, bytes, sums}, got;
  size_t len = 0;
  if ((rc = memport_chan_send(chan, &end, sizeof end, 0, 10 * SECOND)) != 0 ||
      (rc = memport_chan_recv_copy(chan, &got, sizeof got, &len, 30 * SECOND)) != 0)
    return fail("producer", "totals", rc);
  double dt = now_s() - t0;
  char m[32];
  printf("producer: sent %" PRIu32 " messages, %s in %.2f s:\n"
         "          %" PRIu32 " through the ring (copied in once), %" PRIu32
         " zero-copy (written in place)\n",
         nmessages, mib(bytes, m, sizeof m), dt, ring_msgs, pool_msgs);
  if (len != sizeof got || got.magic != SUM_MAGIC || got.messages != nmessages || got.bytes != bytes ||
      got.checksums != sums) {
    fprintf(stderr, "producer-consumer: producer: the consumer's totals do not match what was sent\n");
    return 1;
  }
  printf("producer: the consumer's totals match: %" PRIu32 " messages, %s, checksums 0x%016" PRIx64 "\n",
         got.messages, mib(got.bytes, m, sizeof m), got.checksums);
  return 0;
}

static int consume(memport_chan_t *chan) {
  uint64_t bytes = 0, sums = 0;
  size_t largest = 0;
  double t0 = now_s();
  for (uint32_t seq = 0; seq <= nmessages; seq++) {
    memport_buf_t buf;
    int rc = memport_chan_recv(chan, &buf, 10 * SECOND);
    if (rc != 0)
      return fail("consumer", "receive", rc);
    const unsigned char *p = buf.data;
    int ok;
    if (seq == nmessages) { /* the end of the stream */
      struct totals end;
      ok = buf.len == sizeof end;
      if (ok) {
        memcpy(&end, p, sizeof end);
        ok = end.magic == END_MAGIC && end.messages == nmessages && end.bytes == bytes &&
             end.checksums == sums;
      }
    } else {
      struct head h;
      ok = buf.len >= sizeof h;
      if (ok) {
        memcpy(&h, p, sizeof h); /* shared memory: copy the head once, then check it */
        size_t want = payload_size(seq);
        ok = h.magic == MSG_MAGIC && h.seq == seq && h.len == want && buf.len == sizeof h + want &&
             checksum(p + sizeof h, want) == h.checksum;
        bytes += want;
        sums += h.checksum;
        largest = want > largest ? want : largest;
      }
    }
    memport_chan_release(chan, &buf);
    if (!ok) {
      fprintf(stderr, "producer-consumer: consumer: message %" PRIu32 " is wrong (order, size or checksum)\n",
              seq);
      return 1;
    }
  }
  double dt = now_s() - t0;
  char m[32], l[32];
  printf("consumer: received %" PRIu32 " messages in order, %s in %.2f s (largest %s); "
         "every checksum verified\n",
         nmessages, mib(bytes, m, sizeof m), dt, mib(largest, l, sizeof l));
  struct totals sum = {SUM_MAGIC, nmessages, bytes, sums};
  int rc = memport_chan_send(chan, &sum, sizeof sum, 0, 10 * SECOND);
  if (rc != 0)
    return fail("consumer", "send the totals", rc);
  return 0;
}

static int consumer_main(const char *name) {
  memport_chan_t *chan = NULL;
  int rc = memport_chan_connect(&chan, name, NULL, 10 * SECOND);
  if (rc != 0)
    return fail("consumer", "memport_chan_connect", rc);
  int status = consume(chan);
  memport_chan_close(chan);
  return status;
}

/* Serve `name`, start the consumer (fork) unless `alone`, accept its channel and produce. */
static int producer_main(const char *name, int alone) {
  memport_service_t *svc = NULL;
  memport_chan_t *chan = NULL;
  pid_t pid = -1;
  int status = 1;
  int rc = memport_service_create(&svc, name, 0);
  if (rc != 0)
    return fail("producer", "memport_service_create", rc);
  printf("producer: serving \"%s\"; %" PRIu32 " messages of 0 B to %u KiB of payload follow\n", name,
         nmessages, MAX_PAYLOAD / 1024);
  if (!alone) {
    fflush(NULL);
    pid = fork();
    if (pid == 0) { /* the consumer knows only the name: it connects like any other process */
      memport_service_close(svc);
      _exit(consumer_main(name));
    }
    if (pid < 0) {
      perror("producer-consumer: fork");
      goto out;
    }
  }
  if ((rc = memport_chan_accept(&chan, svc, NULL, alone ? 60 * SECOND : 10 * SECOND)) != 0) {
    fail("producer", "memport_chan_accept", rc);
    goto out;
  }
  status = produce(chan);
out:
  memport_chan_close(chan);
  memport_service_close(svc);
  if (pid > 0) {
    int ws = 0;
    while (waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
      status = 1;
  }
  if (status == 0)
    printf("OK\n");
  return status;
}

static int usage(void) {
  fprintf(stderr, "usage: producer-consumer [-n MESSAGES]\n"
                  "       producer-consumer --produce NAME [-n MESSAGES]\n"
                  "       producer-consumer --consume NAME [-n MESSAGES]\n");
  return 2;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  const char *role = NULL, *name = NULL;
  for (int i = 1; i < argc; i++) {
    int is_role = strcmp(argv[i], "--produce") == 0 || strcmp(argv[i], "--consume") == 0;
    if (is_role && i + 1 < argc && role == NULL) {
      role = argv[i];
      name = argv[++i];
    } else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
      char *end;
      unsigned long n = strtoul(argv[++i], &end, 10);
      if (*end != '\0' || n == 0 || n > 100000000)
        return usage();
      nmessages = (uint32_t)n;
    } else {
      return usage();
    }
  }
  if (role != NULL && strcmp(role, "--consume") == 0) {
    int st = consumer_main(name);
    if (st == 0)
      printf("OK\n");
    return st;
  }
  char own[MEMPORT_NAME_MAX + 1];
  if (role == NULL) {
    snprintf(own, sizeof own, "producer-consumer-%ld", (long)getpid());
    name = own;
  }
  return producer_main(name, role != NULL);
}
