/* SPDX-License-Identifier: MIT */
/* chan_accept.c: the server's non-blocking handshake: a pending connection, pollable, finished as its client's HELLO arrives. */
#include "chan.h"

#include <stdlib.h>

/*
 * A pending connection is the server's half of a channel whose HELLO has gone out and whose
 * client's HELLO has not been read yet. It holds no timer and is looked at only when the caller
 * asks (memport_chan_pending_finish), typically after its pollable handle, the connection's port,
 * became ready: the client's HELLO arrived, or the client went away. A silent client therefore
 * costs its pending object and nothing else; the server decides when to give up on it.
 */
struct memport_chan_pending {
  memport_chan_t *chan; /* our half, HELLO sent; NULL once finished or failed */
  int error;            /* the handshake's final error once it failed, else 0 */
};

static int pending_new(memport_chan_pending_t **out, memport_port_t *port, const memport_chan_opts_t *opts) {
  memport_chan_pending_t *p = calloc(1, sizeof *p);
  if (p == NULL) {
    memport_port_close(port);
    return MEMPORT_ENOMEM;
  }
  int rc = memport__chan_handshake_start(&p->chan, port, opts);
  if (rc < 0) {
    free(p);
    return rc;
  }
  *out = p;
  return 0;
}

int memport_chan_accept_start(memport_chan_pending_t **out, memport_service_t *svc, const memport_chan_opts_t *opts,
                              int64_t timeout_ns) {
  if (out == NULL || svc == NULL)
    return MEMPORT_EINVAL;
  *out = NULL;
  int rc = memport__chan_opts_valid(opts); /* before a connection is taken from the service */
  if (rc < 0)
    return rc;
  memport_port_t *port;
  rc = memport__service_accept(svc, &port, memport__deadline(timeout_ns));
  if (rc < 0)
    return memport__nowait_code(rc, timeout_ns);
  return pending_new(out, port, opts);
}

int memport_chan_open_start(memport_chan_pending_t **out, memport_port_t *port, const memport_chan_opts_t *opts) {
  if (out == NULL || port == NULL) {
    memport_port_close(port);
    return MEMPORT_EINVAL;
  }
  *out = NULL;
  return pending_new(out, port, opts);
}

int memport_chan_pending_pollable(const memport_chan_pending_t *pending, memport_os_handle_t *out) {
  if (pending == NULL || out == NULL)
    return MEMPORT_EINVAL;
  if (pending->chan == NULL)
    return pending->error != 0 ? pending->error : MEMPORT_EINVAL;
  return memport_port_pollable(pending->chan->port, out);
}

int memport_chan_pending_peer(const memport_chan_pending_t *pending, memport_cred_t *out) {
  if (pending == NULL || out == NULL)
    return MEMPORT_EINVAL;
  if (pending->chan == NULL)
    return pending->error != 0 ? pending->error : MEMPORT_EINVAL;
  return memport_chan_peer(pending->chan, out);
}

int memport_chan_pending_finish(memport_chan_pending_t *pending, memport_chan_t **out, int64_t timeout_ns) {
  if (pending == NULL || out == NULL)
    return MEMPORT_EINVAL;
  *out = NULL;
  if (pending->chan == NULL)
    return pending->error != 0 ? pending->error : MEMPORT_EINVAL; /* finished already */
  int rc = memport__chan_handshake_finish(pending->chan, memport__deadline(timeout_ns));
  if (rc == MEMPORT_ETIMEDOUT)
    return memport__nowait_code(rc, timeout_ns); /* not yet: still pending, nothing dropped */
  if (rc < 0) {
    memport__chan_free(pending->chan);
    pending->chan = NULL;
    pending->error = rc;
    return rc;
  }
  *out = pending->chan;
  pending->chan = NULL;
  return 0;
}

int memport_chan_pending_close(memport_chan_pending_t *pending) {
  if (pending == NULL)
    return 0;
  if (pending->chan != NULL)
    memport__chan_free(pending->chan); /* the client sees its connection closed: MEMPORT_EPEER */
  free(pending);
  return 0;
}
