/* SPDX-License-Identifier: MIT */
/* c_peer.c: a small C peer for the Python tests (channel server/client, topic publisher/subscriber, a frame camera, a hostile server), driven by argv, reporting each message's size and CRC-32 on stdout. */
#include <memport.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SECOND ((int64_t)1000000000)
#define PEER_TIMEOUT (30 * SECOND)

/* CRC-32 (the reflected 0xEDB88320 polynomial, as Python's zlib.crc32). */
static uint32_t crc_table[256];
static void crc_init(void) {
  for (uint32_t n = 0; n < 256; n++) {
    uint32_t c = n;
    for (int k = 0; k < 8; k++)
      c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    crc_table[n] = c;
  }
}
static uint32_t crc32_of(const void *data, size_t len) {
  const unsigned char *p = data;
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < len; i++)
    c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

/* Pseudo-random bytes (xorshift64*), different for every message. */
static void fill(void *data, size_t len, uint64_t seed) {
  unsigned char *p = data;
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < len; i++) {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    p[i] = (unsigned char)((x * 0x2545F4914F6CDD1Dull) >> 56);
  }
}

/* Message k's size: `size` for even k, something small for odd k (both the ring and the pool). */
static size_t size_of(unsigned k, size_t size) {
  if (k % 2 == 0)
    return size;
  size_t small = 1 + (k * 37u) % 300u;
  return small < size ? small : size;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static int usage_error(const char *why);

static int fail(const char *what, int rc) {
  fprintf(stderr, "c_peer: %s: %s\n", what, memport_err_name(rc));
  return 1;
}

static void report(size_t len, uint32_t crc) {
  printf("%zu %08" PRIx32 "\n", len, crc);
  fflush(stdout);
}

static void say(const char *word) {
  printf("%s\n", word);
  fflush(stdout);
}

static void hold(void) {
  say("held");
  for (;;)
    pause();
}

static int chan_server(const char *name, unsigned count, size_t size, int held) {
  memport_service_t *svc;
  int rc = memport_service_create(&svc, name, 0);
  if (rc != 0)
    return fail("memport_service_create", rc);
  say("ready");
  memport_chan_t *chan;
  rc = memport_chan_accept(&chan, svc, NULL, PEER_TIMEOUT);
  if (rc != 0)
    return fail("memport_chan_accept", rc);
  unsigned char *data = malloc(size ? size : 1);
  if (data == NULL)
    return fail("malloc", MEMPORT_ENOMEM);
  for (unsigned k = 0; k < count; k++) {
    size_t len = size_of(k, size);
    fill(data, len, k + 1);
    rc = memport_chan_send(chan, data, len, 0, PEER_TIMEOUT);
    if (rc != 0)
      return fail("memport_chan_send", rc);
    report(len, crc32_of(data, len));
  }
  free(data);
  if (held)
    hold();
  rc = memport_chan_shutdown(chan, MEMPORT_CHAN_SHUT_SEND);
  if (rc != 0)
    return fail("memport_chan_shutdown", rc);
  /* Wait for the peer to end its side, so it has received everything before we close. */
  memport_buf_t b;
  while ((rc = memport_chan_recv(chan, &b, PEER_TIMEOUT)) == 0)
    memport_chan_release(chan, &b);
  printf("end %s\n", memport_err_name(rc));
  fflush(stdout);
  memport_chan_close(chan);
  memport_service_close(svc);
  return rc == MEMPORT_ECLOSED || rc == MEMPORT_EPEER ? 0 : 1;
}

static int chan_client(const char *name, unsigned count) {
  memport_chan_t *chan;
  int rc = memport_chan_connect(&chan, name, NULL, PEER_TIMEOUT);
  if (rc != 0)
    return fail("memport_chan_connect", rc);
  say("ready");
  memport_buf_t b;
  for (unsigned k = 0; k < count; k++) {
    rc = memport_chan_recv(chan, &b, PEER_TIMEOUT);
    if (rc != 0)
      return fail("memport_chan_recv", rc);
    report(b.len, crc32_of(b.data, b.len));
    memport_chan_release(chan, &b);
  }
  rc = memport_chan_recv(chan, &b, PEER_TIMEOUT);
  if (rc == 0) {
    memport_chan_release(chan, &b);
    fprintf(stderr, "c_peer: one message more than %u\n", count);
    return 1;
  }
  printf("end %s\n", memport_err_name(rc));
  fflush(stdout);
  memport_chan_close(chan);
  return rc == MEMPORT_ECLOSED ? 0 : 1;
}

static int publisher(const char *name, unsigned count, size_t size, unsigned nsubs, int held) {
  memport_topic_opts_t o;
  memport_topic_opts_init(&o);
  size_t page = memport_page_size();
  o.buffer_size = size < page ? page : (size + page - 1) / page * page;
  o.buffers = 8;
  o.depth = 8;
  memport_pub_t *pub;
  int rc = memport_pub_create(&pub, name, &o);
  if (rc != 0)
    return fail("memport_pub_create", rc);
  say("ready");
  for (int i = 0; memport_pub_subscribers(pub) < (int)nsubs; i++) {
    if (i > 30000)
      return fail("waiting for subscribers", MEMPORT_ETIMEDOUT);
    memport_pub_process(pub);
    sleep_ms(1);
  }
  for (unsigned k = 0; k < count; k++) {
    size_t len = size_of(k, size);
    memport_buf_t b;
    rc = memport_pub_loan(pub, len, &b, PEER_TIMEOUT);
    if (rc != 0)
      return fail("memport_pub_loan", rc);
    fill(b.data, len, k + 1);
    uint32_t crc = crc32_of(b.data, len);
    rc = memport_pub_publish(pub, &b, PEER_TIMEOUT);
    if (rc != 0)
      return fail("memport_pub_publish", rc);
    report(len, crc);
  }
  if (held)
    hold();
  memport_pub_close(pub); /* orderly: the subscribers receive everything, then MEMPORT_ECLOSED */
  say("end");
  return 0;
}

/* Frames: like a camera, COUNT frames of SIZE bytes, each with only its number written at its
 * start and end (as uint64_t: seq and seq + 1000), so a frame costs two pages to make. */
static int frames(const char *name, unsigned count, size_t size) {
  if (size < 2 * sizeof(uint64_t))
    return usage_error("frames: SIZE below 16");
  memport_topic_opts_t o;
  memport_topic_opts_init(&o);
  size_t page = memport_page_size();
  o.buffer_size = (size + page - 1) / page * page;
  o.buffers = 16;
  o.depth = 4;
  memport_pub_t *pub;
  int rc = memport_pub_create(&pub, name, &o);
  if (rc != 0)
    return fail("memport_pub_create", rc);
  say("ready");
  for (int i = 0; memport_pub_subscribers(pub) < 1; i++) {
    if (i > 30000)
      return fail("waiting for a subscriber", MEMPORT_ETIMEDOUT);
    memport_pub_process(pub);
    sleep_ms(1);
  }
  for (unsigned k = 0; k < count; k++) {
    memport_buf_t b;
    rc = memport_pub_loan(pub, size, &b, PEER_TIMEOUT);
    if (rc != 0)
      return fail("memport_pub_loan", rc);
    uint64_t first = k, last = (uint64_t)k + 1000;
    memcpy(b.data, &first, sizeof first);
    memcpy((unsigned char *)b.data + (size - sizeof last) / sizeof last * sizeof last, &last, sizeof last);
    rc = memport_pub_publish(pub, &b, PEER_TIMEOUT);
    if (rc != 0)
      return fail("memport_pub_publish", rc);
  }
  memport_pub_close(pub);
  say("end");
  return 0;
}

static int subscriber(const char *name, unsigned count) {
  memport_sub_t *sub;
  int rc = memport_sub_connect(&sub, name, NULL, PEER_TIMEOUT);
  if (rc != 0)
    return fail("memport_sub_connect", rc);
  say("ready");
  memport_buf_t b;
  for (unsigned k = 0; k < count; k++) {
    rc = memport_sub_recv(sub, &b, PEER_TIMEOUT);
    if (rc != 0)
      return fail("memport_sub_recv", rc);
    report(b.len, crc32_of(b.data, b.len));
    memport_sub_release(sub, &b);
  }
  rc = memport_sub_recv(sub, &b, PEER_TIMEOUT);
  if (rc == 0) {
    memport_sub_release(sub, &b);
    fprintf(stderr, "c_peer: one message more than %u\n", count);
    return 1;
  }
  printf("end %s\n", memport_err_name(rc));
  fflush(stdout);
  memport_sub_close(sub);
  return rc == MEMPORT_ECLOSED ? 0 : 1;
}

/* A hostile server: takes a connection on NAME and answers the channel handshake with junk
 * bytes, then waits for the client to go. */
static int bad_server(const char *name, unsigned count) {
  memport_service_t *svc;
  int rc = memport_service_create(&svc, name, 0);
  if (rc != 0)
    return fail("memport_service_create", rc);
  say("ready");
  for (unsigned k = 0; k < count; k++) {
    memport_port_t *port;
    rc = memport_service_accept(svc, &port, PEER_TIMEOUT);
    if (rc != 0)
      return fail("memport_service_accept", rc);
    memport_msg_t *msg;
    rc = memport_msg_create(&msg);
    if (rc != 0)
      return fail("memport_msg_create", rc);
    unsigned char junk[64];
    fill(junk, sizeof junk, k + 7);
    memport_msg_set_bytes(msg, junk, (k % 2) ? sizeof junk : 3);
    rc = memport_port_send(port, msg, PEER_TIMEOUT);
    if (rc != 0 && rc != MEMPORT_EPEER)
      return fail("memport_port_send", rc);
    /* drain until the client hangs up */
    while (memport_port_recv(port, msg, PEER_TIMEOUT) == 0)
      ;
    memport_msg_close(msg);
    memport_port_close(port);
  }
  memport_service_close(svc);
  say("end");
  return 0;
}

static int usage_error(const char *why) {
  fprintf(stderr, "c_peer: %s\n", why);
  return 2;
}

static int usage(void) {
  fprintf(stderr,
          "usage: c_peer chan-server NAME COUNT SIZE [hold]\n"
          "       c_peer chan-client NAME COUNT\n"
          "       c_peer pub NAME COUNT SIZE NSUBS [hold]\n"
          "       c_peer sub NAME COUNT\n"
          "       c_peer frames NAME COUNT SIZE\n"
          "       c_peer bad-server NAME COUNT\n");
  return 2;
}

static int number(const char *s, unsigned long long max, unsigned long long *out) {
  char *end;
  unsigned long long v = strtoull(s, &end, 10);
  if (*s == '\0' || *s == '-' || *end != '\0' || v > max)
    return -1;
  *out = v;
  return 0;
}

int main(int argc, char **argv) {
  crc_init();
  unsigned long long count, size, nsubs;
  if (argc < 4 || number(argv[3], 1000000, &count) != 0)
    return usage();
  const char *mode = argv[1], *name = argv[2];
  if (strcmp(mode, "chan-server") == 0 && (argc == 5 || argc == 6)) {
    if (number(argv[4], 1ull << 30, &size) != 0 || (argc == 6 && strcmp(argv[5], "hold") != 0))
      return usage();
    return chan_server(name, (unsigned)count, (size_t)size, argc == 6);
  }
  if (strcmp(mode, "chan-client") == 0 && argc == 4)
    return chan_client(name, (unsigned)count);
  if (strcmp(mode, "pub") == 0 && (argc == 6 || argc == 7)) {
    if (number(argv[4], 1ull << 30, &size) != 0 || number(argv[5], 1024, &nsubs) != 0 ||
        (argc == 7 && strcmp(argv[6], "hold") != 0))
      return usage();
    return publisher(name, (unsigned)count, (size_t)size, (unsigned)nsubs, argc == 7);
  }
  if (strcmp(mode, "frames") == 0 && argc == 5) {
    if (number(argv[4], 1ull << 30, &size) != 0)
      return usage();
    return frames(name, (unsigned)count, (size_t)size);
  }
  if (strcmp(mode, "bad-server") == 0 && argc == 4)
    return bad_server(name, (unsigned)count);
  if (strcmp(mode, "sub") == 0 && argc == 4)
    return subscriber(name, (unsigned)count);
  return usage();
}
