/* SPDX-License-Identifier: MIT */
/* consumer.c: the C consumer of producer.py: connects to its named channel, checks every message's checksum in place, and answers with what it counted. */

/*
 * Message format (little-endian, as producer.py writes it): a 16-byte header {uint32 seq, uint32
 * nwords, uint64 sum} and then nwords uint32 words whose sum (mod 2^64) is `sum`. Messages arrive
 * in order (seq 0, 1, ...). When the producer half-closes (MEMPORT_ECLOSED here), the consumer
 * sends one 16-byte reply {uint64 messages, uint64 bytes} and closes.
 *
 * `make` builds it as examples/python/consumer. By hand, from the sources after `make`, or against an
 * installed memport with pkg-config:
 *   cc -O2 -Iinclude examples/python/consumer.c -o consumer -L.libs -lmemport -Wl,-rpath,$PWD/.libs
 *   cc -O2 examples/python/consumer.c -o consumer $(pkg-config --cflags --libs memport)
 *
 *   consumer [SERVICE]        (default py-producer; waits up to 10 s for the service)
 *
 * Exit status 0 when every message was in order with the right checksum.
 */

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <memport.h>

#define SECOND (INT64_C(1000000000))

struct head {
  uint32_t seq;
  uint32_t nwords;
  uint64_t sum;
};

int main(int argc, char **argv) {
  const char *name = argc > 1 ? argv[1] : "py-producer";
  memport_chan_t *chan;
  int rc = memport_chan_connect(&chan, name, NULL, 10 * SECOND);
  if (rc != 0) {
    fprintf(stderr, "consumer: connect %s: %s\n", name, memport_strerror(rc));
    return 1;
  }
  uint64_t messages = 0, bytes = 0;
  int ok = 1;
  for (;;) {
    memport_buf_t b;
    rc = memport_chan_recv(chan, &b, 30 * SECOND);
    if (rc == MEMPORT_ECLOSED)
      break; /* the producer is done */
    if (rc != 0) {
      fprintf(stderr, "consumer: receive: %s\n", memport_strerror(rc));
      ok = 0;
      break;
    }
    struct head h;
    if (b.len < sizeof h) {
      fprintf(stderr, "consumer: a message of %zu bytes\n", b.len);
      ok = 0;
    } else {
      memcpy(&h, b.data, sizeof h); /* loaded once: the sender's memory is not trusted */
      uint64_t sum = 0;
      const unsigned char *w = (const unsigned char *)b.data + sizeof h;
      if ((b.len - sizeof h) / 4 != h.nwords) {
        fprintf(stderr, "consumer: message %" PRIu32 ": %zu bytes for %" PRIu32 " words\n", h.seq, b.len, h.nwords);
        ok = 0;
      } else {
        for (uint32_t i = 0; i < h.nwords; i++) {
          uint32_t v;
          memcpy(&v, w + 4 * (size_t)i, 4);
          sum += v;
        }
        if (sum != h.sum || h.seq != messages) {
          fprintf(stderr, "consumer: message %" PRIu32 " (expected %" PRIu64 "): checksum %s\n", h.seq, messages,
                  sum == h.sum ? "right" : "WRONG");
          ok = 0;
        }
      }
    }
    messages++;
    bytes += b.len;
    memport_chan_release(chan, &b);
  }
  uint64_t reply[2] = {messages, bytes};
  int src = memport_chan_send(chan, reply, sizeof reply, 0, 10 * SECOND);
  if (src != 0)
    fprintf(stderr, "consumer: reply: %s\n", memport_strerror(src));
  memport_chan_close(chan);
  printf("consumer: %" PRIu64 " messages, %" PRIu64 " bytes, %s\n", messages, bytes,
         ok ? "every checksum right" : "ERRORS");
  return ok && src == 0 ? 0 : 1;
}
