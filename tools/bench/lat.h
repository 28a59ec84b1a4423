/* SPDX-License-Identifier: MIT */
/* lat.h: the latency driver (lat.c) and its method families (lat_fd.c, lat_port.c, lat_chan.c): a sender
 * (parent) and a receiver (child) ping-pong; the receiver computes the one-way time from the timestamp in
 * the message and acknowledges with 8 bytes back. */
#ifndef MEMPORT_BENCH_LAT_H
#define MEMPORT_BENCH_LAT_H

#include "bench.h"

struct lat_ctx {
  const struct lat_method *m;
  bool receiver;
  size_t maxlen;       /* largest timed message */
  size_t buflen;       /* largest message including the priming ones */
  unsigned char *src; /* sender: pattern + marks */
  unsigned char *ref; /* receiver: reference pattern */
  unsigned char *dst; /* receiver: buffer for copying transports */
  int fwd[2], back[2]; /* pipe: fwd sender->receiver, back receiver->sender; unix: fwd = socketpair */
  int wfd, rfd;
  memport_port_t *pa, *pb, *port;
  memport_msg_t *msg, *ack;
  memport_chan_t *chan;
  memport_buf_t rbuf;
  void *filled[64]; /* zero-copy: pool buffers already holding the pattern for this size */
  size_t nfilled;
  bool notsup; /* the library says this platform cannot do it: n/a rather than a failure */
  char err[200];
};

/* One family of transports; each call returns 0 or -1 with c->err set (ctx_fail). */
struct lat_ops {
  int (*open)(struct lat_ctx *c); /* before fork: create the transport */
  int (*side)(struct lat_ctx *c); /* after fork: keep this side's end and finish the setup */
  void (*close)(struct lat_ctx *c);
  int (*send)(struct lat_ctx *c, size_t len, uint64_t seq); /* sender: stamp and send one message */
  int (*recv)(struct lat_ctx *c, size_t len, const unsigned char **data); /* valid until release */
  int (*release)(struct lat_ctx *c);
  int (*ack)(struct lat_ctx *c, uint64_t seq);
  int (*wait_ack)(struct lat_ctx *c, uint64_t seq);
};

extern const struct lat_ops lat_fd_ops;   /* pipe, unix socket */
extern const struct lat_ops lat_port_ops; /* memport port */
extern const struct lat_ops lat_chan_ops; /* memport channel: ring and zero-copy */

__attribute__((format(printf, 2, 3))) int ctx_fail(struct lat_ctx *c, const char *fmt, ...);

#endif
