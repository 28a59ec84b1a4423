/* SPDX-License-Identifier: MIT */
/* lat_chan.c: memport-bench's latency methods on a memport channel: through its ring (memport_chan_send, a
 * ring large enough for every size) and zero-copy (memport_chan_alloc + memport_chan_send_buf). */
#include "lat.h"

#include <inttypes.h>
#include <string.h>

static size_t pow2_at_least(size_t v) {
  size_t p = 4096;
  while (p < v && p < ((size_t)1 << 40)) p <<= 1;
  return p;
}

void chan_options(const struct lat_method *m, size_t maxlen, memport_chan_opts_t *o) {
  memport_chan_opts_init(o);
  o->wait_policy = m->policy;
  if (m->kind == LK_RING) {
    /* large enough that every size of the run travels through the ring */
    size_t want = pow2_at_least(2 * maxlen + 4096);
    if (want > o->ring_capacity) o->ring_capacity = want;
    if (o->zerocopy_threshold < maxlen) o->zerocopy_threshold = maxlen;
  } else {
    size_t page = memport_page_size();
    size_t want = (maxlen + page - 1) / page * page;
    if (o->pool_buffer_size < want) o->pool_buffer_size = want;
    o->pool_buffers = 4; /* one message in flight; the warm-up produces each buffer once */
  }
}

static int chan_open(struct lat_ctx *c) {
  int rc = memport_port_pair(&c->pa, &c->pb);
  if (rc < 0) return ctx_fail(c, "memport_port_pair: %s", memport_strerror(rc));
  return 0;
}

/* The channel handshake runs here. */
static int chan_side(struct lat_ctx *c) {
  memport_port_t *p;
  if (c->receiver) {
    memport_port_close(c->pa);
    p = c->pb;
  } else {
    memport_port_close(c->pb);
    p = c->pa;
  }
  c->pa = c->pb = NULL;
  memport_chan_opts_t o;
  chan_options(c->m, c->maxlen, &o);
  int rc = memport_chan_open(&c->chan, p, &o, IO_TIMEOUT);
  if (rc < 0) {
    c->notsup = rc == MEMPORT_ENOTSUP;
    return ctx_fail(c, "memport_chan_open: %s", memport_strerror(rc));
  }
  return 0;
}

static void chan_close(struct lat_ctx *c) {
  memport_chan_close(c->chan);
  memport_port_close(c->port);
  memport_port_close(c->pa);
  memport_port_close(c->pb);
  c->chan = NULL;
  c->port = c->pa = c->pb = NULL;
}

static int chan_send(struct lat_ctx *c, size_t len, uint64_t seq) {
  int rc;
  if (c->m->kind == LK_RING) {
    stamp(c->src, len, seq);
    rc = memport_chan_send(c->chan, c->src, len, 0, IO_TIMEOUT);
    return rc < 0 ? ctx_fail(c, "memport_chan_send(%zu): %s", len, memport_strerror(rc)) : 0;
  }
  memport_buf_t b;
  if ((rc = memport_chan_alloc(c->chan, len, &b, IO_TIMEOUT)) < 0)
    return ctx_fail(c, "memport_chan_alloc(%zu): %s", len, memport_strerror(rc));
  bool known = false;
  for (size_t i = 0; i < c->nfilled; i++) known = known || c->filled[i] == b.data;
  if (!known) {
    /* the payload is produced in place once per pool buffer; later messages re-stamp it */
    fill_pattern(b.data, len);
    if (c->nfilled < sizeof c->filled / sizeof c->filled[0]) c->filled[c->nfilled++] = b.data;
  }
  stamp(b.data, len, seq);
  rc = memport_chan_send_buf(c->chan, &b, IO_TIMEOUT);
  return rc < 0 ? ctx_fail(c, "memport_chan_send_buf(%zu): %s", len, memport_strerror(rc)) : 0;
}

static int chan_recv(struct lat_ctx *c, size_t len, const unsigned char **data) {
  int rc;
  if ((rc = memport_chan_recv(c->chan, &c->rbuf, IO_TIMEOUT)) < 0)
    return ctx_fail(c, "memport_chan_recv: %s", memport_strerror(rc));
  if (c->rbuf.len != len) return ctx_fail(c, "channel: got %zu bytes, expected %zu", c->rbuf.len, len);
  *data = c->rbuf.data;
  return 0;
}

static int chan_release(struct lat_ctx *c) {
  int rc = memport_chan_release(c->chan, &c->rbuf);
  return rc < 0 ? ctx_fail(c, "memport_chan_release: %s", memport_strerror(rc)) : 0;
}

static int chan_ack(struct lat_ctx *c, uint64_t seq) {
  int rc = memport_chan_send(c->chan, &seq, sizeof seq, 0, IO_TIMEOUT);
  return rc < 0 ? ctx_fail(c, "ack memport_chan_send: %s", memport_strerror(rc)) : 0;
}

static int chan_wait_ack(struct lat_ctx *c, uint64_t seq) {
  uint64_t got = 0;
  size_t n = 0;
  int rc;
  if ((rc = memport_chan_recv_copy(c->chan, &got, sizeof got, &n, IO_TIMEOUT)) < 0)
    return ctx_fail(c, "ack memport_chan_recv_copy: %s", memport_strerror(rc));
  if (n != sizeof got) return ctx_fail(c, "ack: %zu bytes", n);
  return got == seq ? 0 : ctx_fail(c, "ack %" PRIu64 ", expected %" PRIu64, got, seq);
}

const struct lat_ops lat_chan_ops = {chan_open, chan_side,    chan_close, chan_send,
                                     chan_recv, chan_release, chan_ack,   chan_wait_ack};
