/* SPDX-License-Identifier: MIT */
/* bridge.c: the bridge's life (options, create, close), its loop (descriptors, process, run, stop), CURVE authorisation and the local channel side. */
#include "bridge_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PENDING_NS 5000000000LL /* a client silent this long in the channel handshake is dropped */

uint64_t memport__bridge_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int memport__bridge_zmq_err(void) {
  switch (zmq_errno()) {
  case EAGAIN:
    return MEMPORT_EAGAIN;
  case ENOMEM:
    return MEMPORT_ENOMEM;
  case EINVAL:
  case EPROTONOSUPPORT:
  case ENOCOMPATPROTO:
    return MEMPORT_EINVAL;
  case EADDRINUSE:
    return MEMPORT_EBUSY;
  case EMFILE:
    return MEMPORT_EMFILE;
  default:
    return MEMPORT_EPROTO;
  }
}

int memport__bridge_pollable_fd(memport_os_handle_t h) { return (int)h; }

/* ZMQ_FD is edge-triggered: what the socket can do now is asked with ZMQ_EVENTS before any wait. */
bool memport__bridge_sock_has(void *sock, int what) {
  int ev = 0;
  size_t n = sizeof ev;
  return sock != NULL && zmq_getsockopt(sock, ZMQ_EVENTS, &ev, &n) == 0 && (ev & what) != 0;
}

void memport_bridge_opts_init(memport_bridge_opts_t *o) {
  if (o == NULL)
    return;
  memset(o, 0, sizeof *o);
  o->struct_size = sizeof *o;
  o->hwm = 16;
  memport_topic_opts_init(&o->topic);
  o->topic.buffer_size = 0; /* as large as the exporter's, when the first message comes */
}

static bool key_ok(const char *k) {
  if (k == NULL || strlen(k) != MEMPORT_BRIDGE_KEY_LEN)
    return false;
  unsigned char raw[32];
  return zmq_z85_decode(raw, k) != NULL;
}

static const char *opts_bad(const memport_bridge_opts_t *o) {
  if (o->struct_size != sizeof *o)
    return "struct_size";
  if (o->direction != MEMPORT_BRIDGE_EXPORT && o->direction != MEMPORT_BRIDGE_IMPORT)
    return "direction";
  if (o->kind != MEMPORT_BRIDGE_TOPIC && o->kind != MEMPORT_BRIDGE_CHANNEL)
    return "kind";
  if (o->name == NULL || o->name[0] == '\0' || strlen(o->name) > MEMPORT_NAME_MAX)
    return "name";
  if (o->endpoint == NULL || strstr(o->endpoint, "://") == NULL)
    return "endpoint";
  if (o->hwm < 1 || o->hwm > 1000000)
    return "hwm";
  if (o->direction == MEMPORT_BRIDGE_IMPORT && o->kind == MEMPORT_BRIDGE_TOPIC) {
    memport_topic_opts_t t = o->topic;
    const char *f = NULL;
    if (t.buffer_size == 0)
      t.buffer_size = 1; /* chosen later */
    if (memport_topic_opts_check(&t, &f) < 0)
      return "topic";
  }
  if (o->chan != NULL && memport_chan_opts_check(o->chan, NULL) < 0)
    return "chan";
  if (o->direction == MEMPORT_BRIDGE_EXPORT) {
    if (o->curve_server != NULL)
      return "curve_server";
    if (o->curve_secret != NULL || o->curve_public != NULL || o->curve_allowed != NULL) {
      if (!key_ok(o->curve_secret))
        return "curve_secret";
      if (o->curve_public != NULL && !key_ok(o->curve_public))
        return "curve_public";
      if (o->curve_allowed == NULL || o->curve_allowed[0] == NULL)
        return "curve_allowed";
      for (const char *const *k = o->curve_allowed; *k != NULL; k++)
        if (!key_ok(*k))
          return "curve_allowed";
    }
  } else {
    if (o->curve_allowed != NULL)
      return "curve_allowed";
    if (o->curve_server != NULL || o->curve_secret != NULL || o->curve_public != NULL) {
      if (!key_ok(o->curve_server))
        return "curve_server";
      if (!key_ok(o->curve_public))
        return "curve_public";
      if (!key_ok(o->curve_secret))
        return "curve_secret";
    }
  }
  return NULL;
}

int memport_bridge_opts_check(const memport_bridge_opts_t *o, const char **field) {
  const char *f = o == NULL ? "opts" : opts_bad(o);
  if (field != NULL)
    *field = f;
  return f != NULL ? MEMPORT_EINVAL : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* CURVE: the ZAP handler (RFC 27) runs in this loop, on the inproc socket libzmq asks.          */

static void zap_serve(struct memport_bridge *b) {
  for (int budget = 64; budget > 0 && memport__bridge_sock_has(b->zap, ZMQ_POLLIN); budget--) {
    zmq_msg_t part[8];
    int n = 0;
    bool more = true;
    while (more) {
      zmq_msg_t m;
      zmq_msg_init(&m);
      if (zmq_msg_recv(&m, b->zap, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m);
        break;
      }
      more = zmq_msg_more(&m);
      if (n < 8)
        part[n++] = m;
      else
        zmq_msg_close(&m);
    }
    /* version, request id, domain, address, identity, mechanism, then the client's key */
    bool ok = false;
    if (n == 7 && zmq_msg_size(&part[0]) == 3 && memcmp(zmq_msg_data(&part[0]), "1.0", 3) == 0 &&
        zmq_msg_size(&part[5]) == 5 && memcmp(zmq_msg_data(&part[5]), "CURVE", 5) == 0 &&
        zmq_msg_size(&part[6]) == 32)
      for (unsigned k = 0; k < b->nallowed && !ok; k++)
        ok = memcmp(zmq_msg_data(&part[6]), b->allowed[k], 32) == 0;
    if (n >= 2) {
      const char *status = ok ? "200" : "400";
      const char *text = ok ? "OK" : "not allowed";
      zmq_send(b->zap, "1.0", 3, ZMQ_SNDMORE | ZMQ_DONTWAIT);
      zmq_send(b->zap, zmq_msg_data(&part[1]), zmq_msg_size(&part[1]), ZMQ_SNDMORE | ZMQ_DONTWAIT);
      zmq_send(b->zap, status, 3, ZMQ_SNDMORE | ZMQ_DONTWAIT);
      zmq_send(b->zap, text, strlen(text), ZMQ_SNDMORE | ZMQ_DONTWAIT);
      zmq_send(b->zap, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
      zmq_send(b->zap, "", 0, ZMQ_DONTWAIT);
    }
    for (int i = 0; i < n; i++)
      zmq_msg_close(&part[i]);
  }
}

/* ------------------------------------------------------------------------------------------ */
/* The local channel side: serve the name, one client at a time, the handshake never waited for. */

int memport__bridge_chan_progress(struct memport_bridge *b) {
  const memport_chan_opts_t *co = b->chan_opts_set ? &b->chan_opts : NULL;
  if (b->ch == NULL && b->pending == NULL && b->ending == NULL) {
    int rc = memport_chan_accept_start(&b->pending, b->svc, co, MEMPORT_NOWAIT);
    if (rc == 0)
      b->pending_since = memport__bridge_now_ns();
    else
      b->pending = NULL;
  }
  if (b->pending != NULL) {
    memport_chan_t *ch = NULL;
    int rc = memport_chan_pending_finish(b->pending, &ch, MEMPORT_NOWAIT);
    if (rc == 0) {
      memport_chan_pending_close(b->pending);
      b->pending = NULL;
      b->ch = ch;
      b->st.restarts++;
      b->st.connected = 1;
    } else if ((rc != MEMPORT_EAGAIN && rc != MEMPORT_ETIMEDOUT) ||
               memport__bridge_now_ns() - b->pending_since > (uint64_t)PENDING_NS) {
      memport_chan_pending_close(b->pending);
      b->pending = NULL;
    }
  }
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Life.                                                                                        */

static int setopt_int(void *sock, int opt, int v) { return zmq_setsockopt(sock, opt, &v, sizeof v); }

static int sock_setup(struct memport_bridge *b, const memport_bridge_opts_t *o) {
  bool exp = b->direction == MEMPORT_BRIDGE_EXPORT;
  b->sock = zmq_socket(b->ctx, exp ? ZMQ_PUSH : ZMQ_PULL);
  if (b->sock == NULL)
    return memport__bridge_zmq_err();
  int64_t maxmsg = (int64_t)1 << 30; /* a peer's frame larger than 1 GiB ends its connection */
  if (setopt_int(b->sock, exp ? ZMQ_SNDHWM : ZMQ_RCVHWM, b->hwm) < 0 || setopt_int(b->sock, ZMQ_LINGER, 0) < 0 ||
      /* a link that stopped answering is found within 5 s, then ZeroMQ reconnects by itself */
      setopt_int(b->sock, ZMQ_HEARTBEAT_IVL, 1000) < 0 || setopt_int(b->sock, ZMQ_HEARTBEAT_TIMEOUT, 5000) < 0 ||
      setopt_int(b->sock, ZMQ_HEARTBEAT_TTL, 6000) < 0 || setopt_int(b->sock, ZMQ_RECONNECT_IVL, 100) < 0 ||
      setopt_int(b->sock, ZMQ_RECONNECT_IVL_MAX, 1000) < 0 ||
      (!exp && zmq_setsockopt(b->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) < 0))
    return memport__bridge_zmq_err();
  if (b->curve) {
    if (exp) {
      if (setopt_int(b->sock, ZMQ_CURVE_SERVER, 1) < 0 ||
          zmq_setsockopt(b->sock, ZMQ_CURVE_SECRETKEY, o->curve_secret, MEMPORT_BRIDGE_KEY_LEN) < 0 ||
          zmq_setsockopt(b->sock, ZMQ_ZAP_DOMAIN, "memport", 7) < 0)
        return memport__bridge_zmq_err();
    } else if (zmq_setsockopt(b->sock, ZMQ_CURVE_SERVERKEY, o->curve_server, MEMPORT_BRIDGE_KEY_LEN) < 0 ||
               zmq_setsockopt(b->sock, ZMQ_CURVE_PUBLICKEY, o->curve_public, MEMPORT_BRIDGE_KEY_LEN) < 0 ||
               zmq_setsockopt(b->sock, ZMQ_CURVE_SECRETKEY, o->curve_secret, MEMPORT_BRIDGE_KEY_LEN) < 0) {
      return memport__bridge_zmq_err();
    }
  }
  int rc = exp ? zmq_bind(b->sock, b->endpoint) : zmq_connect(b->sock, b->endpoint);
  return rc < 0 ? memport__bridge_zmq_err() : 0;
}

static int curve_setup(struct memport_bridge *b, const memport_bridge_opts_t *o) {
  b->curve = o->curve_secret != NULL;
  if (!b->curve)
    return 0;
  if (!zmq_has("curve"))
    return MEMPORT_ENOTSUP;
  if (b->direction == MEMPORT_BRIDGE_IMPORT)
    return 0;
  for (const char *const *k = o->curve_allowed; *k != NULL; k++)
    b->nallowed++;
  b->allowed = calloc(b->nallowed, sizeof b->allowed[0]);
  if (b->allowed == NULL)
    return MEMPORT_ENOMEM;
  for (unsigned i = 0; i < b->nallowed; i++)
    zmq_z85_decode(b->allowed[i], o->curve_allowed[i]);
  /* Bound before the server socket: libzmq asks this handler about every CURVE client. */
  b->zap = zmq_socket(b->ctx, ZMQ_REP);
  if (b->zap == NULL || setopt_int(b->zap, ZMQ_LINGER, 0) < 0 || zmq_bind(b->zap, "inproc://zeromq.zap.01") < 0)
    return memport__bridge_zmq_err();
  return 0;
}

static int pipe_setup(int fd[2]) {
  if (pipe(fd) < 0)
    return errno == EMFILE || errno == ENFILE ? MEMPORT_EMFILE : MEMPORT_ENOMEM;
  for (int i = 0; i < 2; i++)
    if (fcntl(fd[i], F_SETFL, O_NONBLOCK) < 0 || fcntl(fd[i], F_SETFD, FD_CLOEXEC) < 0)
      return MEMPORT_EMFILE;
  return 0;
}

int memport_bridge_create(memport_bridge_t **out, const memport_bridge_opts_t *o) {
  if (out == NULL)
    return MEMPORT_EINVAL;
  *out = NULL;
  if (memport_bridge_opts_check(o, NULL) < 0)
    return MEMPORT_EINVAL;
  struct memport_bridge *b = calloc(1, sizeof *b);
  if (b == NULL)
    return MEMPORT_ENOMEM;
  b->wake[0] = b->wake[1] = -1;
  b->direction = o->direction;
  b->kind = o->kind;
  memcpy(b->name, o->name, strlen(o->name) + 1);
  b->hwm = o->hwm;
  b->topic = o->topic;
  if (o->chan != NULL) {
    b->chan_opts = *o->chan;
    b->chan_opts_set = true;
  }
  b->st.struct_size = sizeof b->st;
  int rc = (b->endpoint = strdup(o->endpoint)) == NULL ? MEMPORT_ENOMEM : 0;
  if (rc == 0)
    rc = pipe_setup(b->wake);
  if (rc == 0 && (b->ctx = zmq_ctx_new()) == NULL)
    rc = MEMPORT_ENOMEM;
  if (rc == 0)
    rc = curve_setup(b, o);
  if (rc == 0)
    rc = sock_setup(b, o);
  if (rc == 0)
    rc = b->direction == MEMPORT_BRIDGE_EXPORT ? memport__bridge_export_init(b) : memport__bridge_import_init(b);
  if (rc < 0) {
    memport_bridge_close(b);
    return rc;
  }
  *out = b;
  return 0;
}

int memport_bridge_close(memport_bridge_t *b) {
  if (b == NULL)
    return 0;
  /* The sockets first (linger 0: what was not sent is dropped), then the context: once
   * zmq_ctx_term returns, ZeroMQ holds no view of ours and has called every free function. */
  if (b->direction == MEMPORT_BRIDGE_IMPORT)
    memport__bridge_import_fini(b);
  if (b->sock != NULL)
    zmq_close(b->sock);
  if (b->zap != NULL)
    zmq_close(b->zap);
  if (b->ctx != NULL)
    zmq_ctx_term(b->ctx);
  if (b->direction == MEMPORT_BRIDGE_EXPORT)
    memport__bridge_export_fini(b);
  memport_chan_close(b->ch);
  memport_chan_pending_close(b->pending);
  memport_service_close(b->svc);
  for (int i = 0; i < 2; i++)
    if (b->wake[i] >= 0)
      close(b->wake[i]);
  free(b->allowed);
  free(b->endpoint);
  free(b);
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* The loop.                                                                                    */

static void add_fd(struct pollfd *fds, int *n, int fd) {
  if (fd < 0)
    return;
  fds[*n].fd = fd;
  fds[*n].events = POLLIN;
  fds[*n].revents = 0;
  (*n)++;
}

int memport_bridge_pollfds(memport_bridge_t *b, struct pollfd *fds, unsigned cap, int64_t *timeout_ns) {
  if (b == NULL || fds == NULL || cap < MEMPORT_BRIDGE_MAX_FDS)
    return MEMPORT_EINVAL;
  int64_t t = b->stop || b->fatal ? 0 : MEMPORT_FOREVER;
  int n = 0;
  add_fd(fds, &n, b->wake[0]);
  int fd;
  size_t len = sizeof fd;
  if (zmq_getsockopt(b->sock, ZMQ_FD, &fd, &len) == 0)
    add_fd(fds, &n, fd);
  if (b->zap != NULL) {
    len = sizeof fd;
    if (zmq_getsockopt(b->zap, ZMQ_FD, &fd, &len) == 0)
      add_fd(fds, &n, fd);
    if (memport__bridge_sock_has(b->zap, ZMQ_POLLIN))
      t = 0;
  }
  if (b->kind == MEMPORT_BRIDGE_CHANNEL) {
    memport_os_handle_t h;
    bool export_busy = b->direction == MEMPORT_BRIDGE_EXPORT && (b->held_stage != 0 || b->lent_free == 0 || b->ring_held);
    if (b->ch != NULL) {
      /* An export that cannot take a message now waits on ZeroMQ, not on a channel that stays ready. */
      if (!export_busy && memport_chan_pollable(b->ch, &h) == 0)
        add_fd(fds, &n, memport__bridge_pollable_fd(h));
    }
    else if (b->pending != NULL && memport_chan_pending_pollable(b->pending, &h) == 0)
      add_fd(fds, &n, memport__bridge_pollable_fd(h));
    else if (b->svc != NULL && b->ending == NULL && memport_service_pollable(b->svc, &h) == 0)
      add_fd(fds, &n, memport__bridge_pollable_fd(h));
    if (b->pending != NULL) {
      uint64_t now = memport__bridge_now_ns(), end = b->pending_since + PENDING_NS;
      int64_t left = end > now ? (int64_t)(end - now) : 0;
      if (t < 0 || left < t)
        t = left;
    }
  }
  int64_t t2 = MEMPORT_FOREVER;
  n = b->direction == MEMPORT_BRIDGE_EXPORT ? memport__bridge_export_fds(b, fds, n, &t2)
                                             : memport__bridge_import_fds(b, fds, n, &t2);
  if (t2 >= 0 && (t < 0 || t2 < t))
    t = t2;
  if (timeout_ns != NULL)
    *timeout_ns = t;
  return n;
}

/* The pipe holds at most one byte: it is written only by whoever turned wake_armed from 0 to 1
 * (memport__bridge_wake), and only this reader turns it back, after taking that byte. So with
 * wake_armed 0 there is nothing to read (no system call), and a byte not written yet when we look
 * is taken at the next look: wake_armed stays 1 until then. */
static void drain_wake(struct memport_bridge *b) {
  if (atomic_load_explicit(&b->wake_armed, memory_order_acquire) == 0)
    return;
  char c;
  if (read(b->wake[0], &c, 1) == 1)
    atomic_store_explicit(&b->wake_armed, 0, memory_order_seq_cst);
}

void memport__bridge_wake(struct memport_bridge *b) {
  if (atomic_exchange_explicit(&b->wake_armed, 1, memory_order_seq_cst) == 0) {
    ssize_t w = write(b->wake[1], "w", 1); /* async-signal-safe */
    (void)w;
  }
}

int memport_bridge_process(memport_bridge_t *b) {
  if (b == NULL)
    return MEMPORT_EINVAL;
  if (b->fatal)
    return b->fatal;
  drain_wake(b);
  if (b->zap != NULL)
    zap_serve(b);
  int rc = b->direction == MEMPORT_BRIDGE_EXPORT ? memport__bridge_export_process(b)
                                                  : memport__bridge_import_process(b);
  if (rc < 0)
    b->fatal = rc;
  return rc;
}

int memport_bridge_run(memport_bridge_t *b, int64_t timeout_ns) {
  if (b == NULL)
    return MEMPORT_EINVAL;
  uint64_t end = timeout_ns < 0 ? UINT64_MAX : memport__bridge_now_ns() + (uint64_t)timeout_ns;
  for (;;) {
    int rc = memport_bridge_process(b);
    if (rc < 0)
      return rc;
    if (b->stop) {
      b->stop = 0;
      return 0;
    }
    uint64_t now = memport__bridge_now_ns();
    if (now >= end)
      return 0;
    struct pollfd fds[MEMPORT_BRIDGE_MAX_FDS];
    int64_t t;
    int n = memport_bridge_pollfds(b, fds, MEMPORT_BRIDGE_MAX_FDS, &t);
    if (n < 0)
      return n;
    uint64_t left = end - now;
    if (t < 0 || (uint64_t)t > left)
      t = end == UINT64_MAX ? -1 : (int64_t)left;
    int ms = t < 0 ? -1 : (int)((t + 999999) / 1000000);
    if (poll(fds, (nfds_t)n, ms) < 0 && errno != EINTR)
      return MEMPORT_EPROTO;
  }
}

void memport_bridge_stop(memport_bridge_t *b) {
  if (b == NULL)
    return;
  b->stop = 1;
  memport__bridge_wake(b);
}

int memport_bridge_stats(memport_bridge_t *b, memport_bridge_stats_t *stats) {
  if (b == NULL || stats == NULL || stats->struct_size < sizeof *stats)
    return MEMPORT_EINVAL;
  memport_bridge_stats_t st = b->st;
  st.struct_size = sizeof st;
  st.in_flight = atomic_load_explicit(&b->lent_out, memory_order_relaxed);
  memcpy(stats, &st, sizeof st);
  return 0;
}

int memport_bridge_endpoint(memport_bridge_t *b, char *buf, size_t cap) {
  if (b == NULL || buf == NULL || cap == 0)
    return MEMPORT_EINVAL;
  char ep[1024];
  size_t n = sizeof ep;
  if (b->direction != MEMPORT_BRIDGE_EXPORT || zmq_getsockopt(b->sock, ZMQ_LAST_ENDPOINT, ep, &n) < 0 || n == 0)
    snprintf(ep, sizeof ep, "%s", b->endpoint);
  ep[sizeof ep - 1] = '\0';
  if (strlen(ep) >= cap)
    return MEMPORT_EMSGSIZE;
  memcpy(buf, ep, strlen(ep) + 1);
  return 0;
}
