/* SPDX-License-Identifier: MIT */
/* import.c: ZeroMQ -> local topic or channel: each message is checked, accounted (gaps, restarts) and copied once, from the network message into the local topic's or channel's buffer. */
#include "bridge_int.h"

#include <errno.h>
#include <string.h>

static int pub_make(struct memport_bridge *b, uint64_t want) {
  memport_topic_opts_t o = b->topic;
  if (o.buffer_size == 0) {
    /* As large as the exporter's buffers (or this message), at least a page. */
    o.buffer_size = want > 4096 ? (size_t)want : 4096;
  }
  int rc = memport_pub_create(&b->pub, b->name, &o);
  if (rc < 0) {
    b->pub = NULL;
    return rc;
  }
  size_t ps = memport_page_size(); /* the topic rounds its buffers up to whole pages */
  b->pub_buffer = (o.buffer_size + ps - 1) / ps * ps;
  b->st.connected = 1;
  return 0;
}

int memport__bridge_import_init(struct memport_bridge *b) {
  zmq_msg_init(&b->in_hdr);
  zmq_msg_init(&b->in_body);
  if (b->kind == MEMPORT_BRIDGE_CHANNEL)
    return memport_service_create(&b->svc, b->name, 0);
  if (b->topic.buffer_size != 0)
    return pub_make(b, 0); /* now: local subscribers may connect before the exporter is there */
  return 0;
}

void memport__bridge_import_fini(struct memport_bridge *b) {
  zmq_msg_close(&b->in_hdr);
  zmq_msg_close(&b->in_body);
  b->have_in = false;
  memport_pub_close(b->pub); /* orderly: subscribers receive what was published, then the end */
  b->pub = NULL;
}

/* Hand the message in hand to the local side: 1 done (delivered or dropped and counted), 0 must
 * wait for the local side, or a fatal error. */
static int deliver(struct memport_bridge *b) {
  const void *data = zmq_msg_data(&b->in_body);
  size_t len = zmq_msg_size(&b->in_body);
  int rc;
  if (b->kind == MEMPORT_BRIDGE_TOPIC) {
    if (b->pub == NULL && (rc = pub_make(b, b->in_f.max_len > len ? b->in_f.max_len : len)) < 0)
      return rc; /* the name is served by someone else, or no memory: nothing this loop can fix */
    if (len > b->pub_buffer) {
      b->st.dropped++; /* larger than the buffers this topic was made with */
      return 1;
    }
    rc = memport_pub_send(b->pub, data, len, MEMPORT_NOWAIT);
  } else {
    if (b->ch == NULL)
      return 0; /* no client: it waits here, and ZeroMQ's queue fills behind it */
    rc = memport_chan_send(b->ch, data, len, 0, MEMPORT_NOWAIT);
    if (rc == MEMPORT_EPEER || rc == MEMPORT_ECLOSED) {
      memport_chan_close(b->ch); /* gone: the message waits for the next client */
      b->ch = NULL;
      b->st.connected = 0;
      return 0;
    }
  }
  if (rc == MEMPORT_EAGAIN || rc == MEMPORT_ETIMEDOUT)
    return 0;
  if (rc < 0) {
    b->st.dropped++;
    return 1;
  }
  b->st.messages++;
  b->st.bytes += len;
  return 1;
}

/* Read one message from ZeroMQ: 1 one is in hand, 0 none waiting. A malformed one is dropped and
 * counted. */
static int take(struct memport_bridge *b) {
  b->zmq_looked = false;
  for (int budget = 256; budget > 0; budget--) { /* a flood of bad frames cannot hold the loop */
    if (zmq_msg_recv(&b->in_hdr, b->sock, ZMQ_DONTWAIT) < 0) {
      b->zmq_looked = zmq_errno() == EAGAIN;
      return 0;
    }
    bool ok = zmq_msg_more(&b->in_hdr) && zmq_msg_recv(&b->in_body, b->sock, ZMQ_DONTWAIT) >= 0 &&
              !zmq_msg_more(&b->in_body);
    /* ZeroMQ delivers all parts of a message or none: drain whatever parts are left over. */
    zmq_msg_t extra;
    zmq_msg_init(&extra);
    int more = 0;
    size_t ml = sizeof more;
    while (zmq_getsockopt(b->sock, ZMQ_RCVMORE, &more, &ml) == 0 && more &&
           zmq_msg_recv(&extra, b->sock, ZMQ_DONTWAIT) >= 0) {
      ok = false;
      ml = sizeof more;
    }
    zmq_msg_close(&extra);
    struct memport__bridge_frame f;
    uint64_t lost, skipped;
    int restart;
    if (ok && memport__bridge_frame_parse(zmq_msg_data(&b->in_hdr), zmq_msg_size(&b->in_hdr),
                                          zmq_msg_size(&b->in_body), &f) == 0 &&
        memport__bridge_seq_account(&b->seqst, &f, &lost, &skipped, &restart) == 0) {
      b->in_f = f;
      b->st.lost += lost;
      b->st.skipped += skipped;
      b->st.restarts += (uint64_t)restart;
      b->st.source_missed = f.missed;
      b->have_in = true;
      return 1;
    }
    b->st.malformed++;
  }
  return 0;
}

/* A channel's client sends nothing to an import: whatever it sends is read and let go, so that
 * its handle does not stay ready. */
static void chan_drain(struct memport_bridge *b) {
  memport_buf_t buf;
  int rc;
  for (int i = 0; i < 64 && b->ch != NULL && (rc = memport_chan_recv(b->ch, &buf, MEMPORT_NOWAIT)) != MEMPORT_EAGAIN; i++) {
    if (rc == 0) {
      memport_chan_release(b->ch, &buf);
      continue;
    }
    if (rc == MEMPORT_ECLOSED)
      break; /* it sends no more; it may still receive */
    memport_chan_close(b->ch);
    b->ch = NULL;
    b->st.connected = 0;
  }
}

/* Carry what ZeroMQ holds: 0, 1 when a message still waits for room on the local side, or a fatal
 * error. */
static int carry(struct memport_bridge *b) {
  for (int budget = 256; budget > 0; budget--) {
    if (!b->have_in && take(b) == 0)
      return 0;
    int rc = deliver(b);
    if (rc < 0)
      return rc;
    if (rc == 0)
      return 1;
    b->have_in = false;
  }
  return 0;
}

int memport__bridge_import_process(struct memport_bridge *b) {
  /* Messages first: the local subscriber is woken before the housekeeping's system calls, which
   * would otherwise sit between the network and it on every message. */
  int rc = b->kind == MEMPORT_BRIDGE_CHANNEL && b->ch == NULL ? 1 : carry(b);
  if (rc < 0)
    return rc;
  if (b->kind == MEMPORT_BRIDGE_CHANNEL) {
    memport__bridge_chan_progress(b);
    chan_drain(b);
  } else if (b->pub != NULL) {
    memport_pub_process(b->pub); /* joins, leaves, releases */
  }
  if (rc == 1) /* waiting for room or a client: the housekeeping may have made some */
    rc = carry(b);
  return rc < 0 ? rc : 0;
}

int memport__bridge_import_fds(struct memport_bridge *b, struct pollfd *fds, int n, int64_t *timeout_ns) {
  memport_os_handle_t h;
  if (b->pub != NULL && memport_pub_pollable(b->pub, &h) == 0) {
    fds[n].fd = memport__bridge_pollable_fd(h);
    fds[n].events = POLLIN;
    fds[n].revents = 0;
    n++;
  }
  /* ZeroMQ's descriptor signals changes and stays readable until they are looked at: so look
   * (ZMQ_EVENTS) before every wait, even when we cannot take a message now. Not needed when our last
   * call on the socket was a receive that found nothing: libzmq 4.3's non-blocking recv processes
   * the pending commands before it says EAGAIN (socket_base_t::recv), so nothing is left unlooked
   * at, and whatever comes later makes the descriptor readable. Saves a poll and a getpid. */
  if (b->zmq_looked)
    return n;
  bool in = memport__bridge_sock_has(b->sock, ZMQ_POLLIN);
  if (in && !b->have_in)
    *timeout_ns = 0; /* a message is there: the descriptor may never fire again for it */
  return n;
}
