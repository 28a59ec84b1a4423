/* SPDX-License-Identifier: MIT */
/* lat_port.c: memport-bench's latency method on a memport port: memport_msg_set_bytes +
 * memport_port_send / memport_port_recv, up to MEMPORT_MSG_MAX_BYTES. */
#include "lat.h"

#include <inttypes.h>
#include <string.h>

static int port_open(struct lat_ctx *c) {
  int rc = memport_port_pair(&c->pa, &c->pb);
  if (rc < 0) return ctx_fail(c, "memport_port_pair: %s", memport_strerror(rc));
  return 0;
}

static int port_side(struct lat_ctx *c) {
  int rc;
  if (c->receiver) {
    memport_port_close(c->pa);
    c->port = c->pb;
  } else {
    memport_port_close(c->pb);
    c->port = c->pa;
  }
  c->pa = c->pb = NULL;
  if ((rc = memport_msg_create(&c->msg)) < 0 || (rc = memport_msg_create(&c->ack)) < 0) {
    c->notsup = rc == MEMPORT_ENOTSUP;
    return ctx_fail(c, "memport_msg_create: %s", memport_strerror(rc));
  }
  return 0;
}

static void port_close(struct lat_ctx *c) {
  memport_port_close(c->port);
  memport_port_close(c->pa);
  memport_port_close(c->pb);
  memport_msg_close(c->msg);
  memport_msg_close(c->ack);
  c->port = c->pa = c->pb = NULL;
  c->msg = c->ack = NULL;
}

static int port_send(struct lat_ctx *c, size_t len, uint64_t seq) {
  int rc;
  stamp(c->src, len, seq);
  if ((rc = memport_msg_set_bytes(c->msg, c->src, len)) < 0)
    return ctx_fail(c, "memport_msg_set_bytes: %s", memport_strerror(rc));
  rc = memport_port_send(c->port, c->msg, IO_TIMEOUT);
  return rc < 0 ? ctx_fail(c, "memport_port_send: %s", memport_strerror(rc)) : 0;
}

static int port_recv(struct lat_ctx *c, size_t len, const unsigned char **data) {
  int rc;
  if ((rc = memport_port_recv(c->port, c->msg, IO_TIMEOUT)) < 0)
    return ctx_fail(c, "memport_port_recv: %s", memport_strerror(rc));
  size_t n = 0;
  const void *p = memport_msg_bytes(c->msg, &n);
  if (n != len || p == NULL) return ctx_fail(c, "port: got %zu bytes, expected %zu", n, len);
  *data = p;
  return 0;
}

static int port_release(struct lat_ctx *c) {
  (void)c;
  return 0;
}

static int port_ack(struct lat_ctx *c, uint64_t seq) {
  int rc;
  if ((rc = memport_msg_set_bytes(c->ack, &seq, sizeof seq)) < 0 ||
      (rc = memport_port_send(c->port, c->ack, IO_TIMEOUT)) < 0)
    return ctx_fail(c, "ack send: %s", memport_strerror(rc));
  return 0;
}

static int port_wait_ack(struct lat_ctx *c, uint64_t seq) {
  uint64_t got = 0;
  int rc;
  if ((rc = memport_port_recv(c->port, c->ack, IO_TIMEOUT)) < 0)
    return ctx_fail(c, "ack memport_port_recv: %s", memport_strerror(rc));
  size_t n = 0;
  const void *p = memport_msg_bytes(c->ack, &n);
  if (n != sizeof got || p == NULL) return ctx_fail(c, "ack: %zu bytes", n);
  memcpy(&got, p, sizeof got);
  return got == seq ? 0 : ctx_fail(c, "ack %" PRIu64 ", expected %" PRIu64, got, seq);
}

const struct lat_ops lat_port_ops = {port_open, port_side,    port_close, port_send,
                                     port_recv, port_release, port_ack,   port_wait_ack};
