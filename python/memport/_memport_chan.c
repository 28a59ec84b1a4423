/* SPDX-License-Identifier: MIT */
/* _memport_chan.c: the Channel (pair, connect, send, loan, recv) and Service (accept) types. */
#include "_memport.h"

#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Options.                                                                                    */

static const char *opt_names[] = {"ring_capacity", "zerocopy_threshold", "pool_buffer_size", "pool_buffers", "wait",
                            "spin_ns", NULL};

/* Fill *o from the six option objects (NULL or None: the default). */
static int chan_opts(PyObject *const *v, memport_chan_opts_t *o) {
  memport_chan_opts_init(o);
  size_t n;
  if (mp_size_arg(v[0], "ring_capacity", &o->ring_capacity) < 0 ||
      mp_size_arg(v[1], "zerocopy_threshold", &o->zerocopy_threshold) < 0 ||
      mp_size_arg(v[2], "pool_buffer_size", &o->pool_buffer_size) < 0)
    return -1;
  n = o->pool_buffers;
  if (mp_size_arg(v[3], "pool_buffers", &n) < 0)
    return -1;
  if (n > UINT32_MAX) {
    PyErr_SetString(PyExc_ValueError, "pool_buffers is too large");
    return -1;
  }
  o->pool_buffers = (unsigned)n;
  if (mp_wait_arg(v[4], &o->wait_policy) < 0)
    return -1;
  n = (size_t)o->spin_ns;
  if (mp_size_arg(v[5], "spin_ns", &n) < 0)
    return -1;
  o->spin_ns = (int64_t)n;
  const char *field = NULL;
  if (memport_chan_opts_check(o, &field) < 0) {
    PyErr_Format(PyExc_ValueError, "channel option out of range: %s", field != NULL ? field : "?");
    return -1;
  }
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Channel.                                                                                    */

static PyObject *chan_wrap(PyTypeObject *cls, memport_chan_t *h) {
  mp_endpoint_t *ep = (mp_endpoint_t *)cls->tp_alloc(cls, 0);
  if (ep == NULL) {
    memport_chan_close(h);
    return NULL;
  }
  if (mp_ep_init(ep, MP_CHAN) < 0) {
    memport_chan_close(h);
    Py_DECREF(ep);
    return NULL;
  }
  ep->h = h;
  return (PyObject *)ep;
}

static void chan_dealloc(mp_endpoint_t *ep) {
  mp_ep_dealloc_common(ep);
  Py_TYPE(ep)->tp_free((PyObject *)ep);
}

static PyObject *chan_pair(PyObject *cls, PyObject *args, PyObject *kw) {
  PyObject *v[6] = {NULL};
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|$OOOOOO:pair", (char **)opt_names, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]))
    return NULL;
  memport_chan_opts_t o;
  if (chan_opts(v, &o) < 0)
    return NULL;
  memport_chan_t *a = NULL, *b = NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = memport_chan_pair(&a, &b, &o);
  Py_END_ALLOW_THREADS
  if (rc < 0)
    return mp_raise(rc);
  PyObject *pa = chan_wrap((PyTypeObject *)cls, a);
  if (pa == NULL) {
    memport_chan_close(b);
    return NULL;
  }
  PyObject *pb = chan_wrap((PyTypeObject *)cls, b);
  if (pb == NULL) {
    Py_DECREF(pa);
    return NULL;
  }
  PyObject *t = PyTuple_Pack(2, pa, pb);
  Py_DECREF(pa);
  Py_DECREF(pb);
  return t;
}

/* Finish a pending connection in slices (at least `grace_ns` from now). */
struct pending_ctx {
  memport_chan_pending_t *p;
  memport_chan_t *out;
};

static int pending_op(void *ctx, int64_t t) {
  struct pending_ctx *c = ctx;
  return memport_chan_pending_finish(c->p, &c->out, t);
}

static int finish_pending(memport_chan_pending_t *p, const mp_deadline_t *dl, int64_t grace_ns, mp_between_fn between,
                          void *bctx, memport_chan_t **out) {
  mp_deadline_t d = *dl;
  if (!d.forever) {
    int64_t min_at = mp_now_ns() + grace_ns;
    if (d.at < min_at)
      d.at = min_at;
    d.nowait = false;
  }
  struct pending_ctx c = {p, NULL};
  int rc = mp_wait(pending_op, &c, &d, between, bctx);
  memport_chan_pending_close(p);
  if (rc == 0)
    *out = c.out;
  return rc;
}

struct connect_ctx {
  const char *name;
  memport_port_t *port;
};

static int connect_op(void *ctx, int64_t t) {
  struct connect_ctx *c = ctx;
  return memport_port_connect(&c->port, c->name, t);
}

static PyObject *chan_connect(PyObject *cls, PyObject *args, PyObject *kw) {
  static const char *kwlist[] = {"name", "timeout", "ring_capacity", "zerocopy_threshold", "pool_buffer_size",
                           "pool_buffers", "wait", "spin_ns", NULL};
  PyObject *name_obj, *timeout = Py_None;
  PyObject *v[6] = {NULL};
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O$OOOOOO:connect", (char **)kwlist, &name_obj, &timeout, &v[0], &v[1], &v[2],
                                   &v[3], &v[4], &v[5]))
    return NULL;
  const char *name;
  mp_deadline_t dl;
  memport_chan_opts_t o;
  if (mp_name_arg(name_obj, &name) < 0 || mp_parse_timeout(timeout, &dl) < 0 || chan_opts(v, &o) < 0)
    return NULL;
  struct connect_ctx c = {name, NULL};
  int rc = mp_wait(connect_op, &c, &dl, NULL, NULL);
  if (rc < 0)
    return mp_raise(rc);
  memport_chan_pending_t *p = NULL;
  rc = memport_chan_open_start(&p, c.port, &o);
  if (rc < 0)
    return mp_raise(rc);
  memport_chan_t *h = NULL;
  rc = finish_pending(p, &dl, 0, NULL, NULL, &h);
  if (rc < 0)
    return mp_raise(rc);
  return chan_wrap((PyTypeObject *)cls, h);
}

/* A receive: the handle, and the buffer it fills. */
struct chan_io {
  memport_chan_t *h;
  memport_buf_t buf;
};

static int send_op(void *ctx, int64_t t) {
  mp_tx_io_t *c = ctx;
  return memport_chan_send(c->h, c->data, c->len, c->flags, t);
}

static int alloc_op(void *ctx, int64_t t) {
  mp_tx_io_t *c = ctx;
  return memport_chan_alloc(c->h, c->len, &c->buf, t);
}

static int recv_op(void *ctx, int64_t t) {
  struct chan_io *c = ctx;
  return memport_chan_recv(c->h, &c->buf, t);
}

static PyObject *chan_send(mp_endpoint_t *ep, PyObject *args, PyObject *kw) {
  static const char *kwlist[] = {"obj", "timeout", "zerocopy", NULL};
  PyObject *obj, *timeout = Py_None;
  int zerocopy = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O$p:send", (char **)kwlist, &obj, &timeout, &zerocopy))
    return NULL;
  return mp_ep_send_obj(ep, obj, timeout, zerocopy ? MEMPORT_SEND_ZEROCOPY : 0, send_op);
}

static PyObject *chan_loan(mp_endpoint_t *ep, PyObject *args, PyObject *kw) {
  static const char *kwlist[] = {"n", "timeout", NULL};
  PyObject *n_obj, *timeout = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O:loan", (char **)kwlist, &n_obj, &timeout))
    return NULL;
  return mp_ep_loan(ep, n_obj, timeout, alloc_op);
}

/* Receive one message (holding the receive lock); 0 with c->buf, or a code. *copied: it came
 * through the ring (small) and must be copied and given back at once: the ring holds one. */
static int chan_recv_common(mp_endpoint_t *ep, PyObject *timeout, struct chan_io *c, bool *small) {
  mp_deadline_t dl;
  if (mp_parse_timeout(timeout, &dl) < 0)
    return MP_EPYERR;
  if (mp_ep_check(ep) < 0)
    return MP_EPYERR;
  int rc = mp_ep_begin(ep, MP_RX, &dl);
  if (rc != 0)
    return rc;
  c->h = ep->h;
  mp_ep_between_t bt = {ep, MP_RX};
  rc = mp_wait(recv_op, c, &dl, mp_ep_between, &bt);
  if (rc == 0 && ep->closed) {
    (void)memport_chan_release(ep->h, &c->buf);
    rc = MP_EGONE;
  }
  if (rc == 0) {
    /* Pool buffers and one-off regions are kept as they are; anything else (the ring) is copied. */
    int kind = memport_chan_buf_kind(ep->h, &c->buf);
    *small = kind != MEMPORT_CHAN_BUF_POOL && kind != MEMPORT_CHAN_BUF_REGION;
  }
  if (rc != 0)
    mp_ep_end(ep, MP_RX);
  return rc;
}

static PyObject *chan_recv(mp_endpoint_t *ep, PyObject *args, PyObject *kw) {
  static const char *kwlist[] = {"timeout", NULL};
  PyObject *timeout = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:recv", (char **)kwlist, &timeout))
    return NULL;
  struct chan_io c = {NULL, {0}};
  bool small = false;
  int rc = chan_recv_common(ep, timeout, &c, &small);
  if (rc != 0)
    return mp_fail(rc, "Channel");
  PyObject *m = mp_message_new(ep, &c.buf, !small);
  mp_ep_end(ep, MP_RX);
  return m;
}

static PyObject *chan_recv_bytes(mp_endpoint_t *ep, PyObject *args, PyObject *kw) {
  static const char *kwlist[] = {"timeout", NULL};
  PyObject *timeout = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:recv_bytes", (char **)kwlist, &timeout))
    return NULL;
  struct chan_io c = {NULL, {0}};
  bool small = false;
  int rc = chan_recv_common(ep, timeout, &c, &small);
  if (rc != 0)
    return mp_fail(rc, "Channel");
  PyObject *b = PyBytes_FromStringAndSize(c.buf.data, (Py_ssize_t)c.buf.len);
  (void)memport_chan_release(ep->h, &c.buf);
  mp_ep_end(ep, MP_RX);
  return b;
}

static PyObject *chan_shutdown(mp_endpoint_t *ep, PyObject *noargs) {
  (void)noargs;
  if (mp_ep_check(ep) < 0)
    return NULL;
  mp_deadline_t dl = {true, false, 0};
  int rc = mp_ep_begin(ep, MP_TX, &dl);
  if (rc != 0)
    return mp_fail(rc, "Channel");
  rc = memport_chan_shutdown(ep->h, MEMPORT_CHAN_SHUT_SEND);
  mp_ep_end(ep, MP_TX);
  if (rc < 0)
    return mp_raise(rc);
  Py_RETURN_NONE;
}

static PyObject *chan_get_peer(mp_endpoint_t *ep, void *closure) {
  (void)closure;
  if (mp_ep_check(ep) < 0)
    return NULL;
  memport_cred_t cr;
  int rc = memport_chan_peer(ep->h, &cr);
  if (rc < 0)
    return mp_raise(rc);
  return Py_BuildValue("(lkk)", (long)cr.pid, (unsigned long)cr.uid, (unsigned long)cr.gid);
}

#define SET_U64(d, k, v)                                                                                             \
  do {                                                                                                               \
    PyObject *o_ = PyLong_FromUnsignedLongLong((unsigned long long)(v));                                             \
    if (o_ == NULL || PyDict_SetItemString(d, k, o_) < 0) {                                                          \
      Py_XDECREF(o_);                                                                                                \
      Py_DECREF(d);                                                                                                  \
      return NULL;                                                                                                   \
    }                                                                                                                \
    Py_DECREF(o_);                                                                                                   \
  } while (0)

static PyObject *chan_stats(mp_endpoint_t *ep, PyObject *noargs) {
  (void)noargs;
  if (mp_ep_check(ep) < 0)
    return NULL;
  memport_chan_stats_t s;
  memset(&s, 0, sizeof s);
  s.struct_size = sizeof s;
  int rc = memport_chan_stats(ep->h, &s);
  if (rc < 0)
    return mp_raise(rc);
  PyObject *d = PyDict_New();
  if (d == NULL)
    return NULL;
  SET_U64(d, "sent_ring_msgs", s.sent_ring_msgs);
  SET_U64(d, "sent_ring_bytes", s.sent_ring_bytes);
  SET_U64(d, "sent_pool_msgs", s.sent_pool_msgs);
  SET_U64(d, "sent_pool_bytes", s.sent_pool_bytes);
  SET_U64(d, "sent_oneoff_msgs", s.sent_oneoff_msgs);
  SET_U64(d, "sent_oneoff_bytes", s.sent_oneoff_bytes);
  SET_U64(d, "recv_ring_msgs", s.recv_ring_msgs);
  SET_U64(d, "recv_ring_bytes", s.recv_ring_bytes);
  SET_U64(d, "recv_pool_msgs", s.recv_pool_msgs);
  SET_U64(d, "recv_pool_bytes", s.recv_pool_bytes);
  SET_U64(d, "recv_oneoff_msgs", s.recv_oneoff_msgs);
  SET_U64(d, "recv_oneoff_bytes", s.recv_oneoff_bytes);
  SET_U64(d, "oneoff_fallbacks", s.oneoff_fallbacks);
  SET_U64(d, "oneoff_refused", s.oneoff_refused);
  SET_U64(d, "wakeups_sent", s.wakeups_sent);
  SET_U64(d, "wakeups_received", s.wakeups_received);
  SET_U64(d, "tx_ring_used", s.tx_ring_used);
  SET_U64(d, "tx_ring_capacity", s.tx_ring_capacity);
  SET_U64(d, "rx_ring_used", s.rx_ring_used);
  SET_U64(d, "rx_ring_capacity", s.rx_ring_capacity);
  SET_U64(d, "tx_pool_buffers", s.tx_pool_buffers);
  SET_U64(d, "tx_pool_allocated", s.tx_pool_allocated);
  SET_U64(d, "tx_pool_lent", s.tx_pool_lent);
  SET_U64(d, "rx_pool_buffers", s.rx_pool_buffers);
  SET_U64(d, "rx_pool_held", s.rx_pool_held);
  SET_U64(d, "sent_handle_msgs", s.sent_handle_msgs);
  SET_U64(d, "sent_handles", s.sent_handles);
  SET_U64(d, "recv_handle_msgs", s.recv_handle_msgs);
  SET_U64(d, "recv_handles", s.recv_handles);
  return d;
}

static PyObject *ep_repr(mp_endpoint_t *ep) {
  return PyUnicode_FromFormat("<memport.%s%s>", mp_ep_name(ep), ep->closed ? " closed" : "");
}

static PyMethodDef chan_methods[] = {
    {"pair", (PyCFunction)(void (*)(void))chan_pair, METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "Channel.pair(**opts) -> (a, b): two connected channels (keep one, use the other in a forked child)."},
    {"connect", (PyCFunction)(void (*)(void))chan_connect, METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "Channel.connect(name, timeout=None, **opts) -> Channel: connect to the Service `name`."},
    {"send", (PyCFunction)(void (*)(void))chan_send, METH_VARARGS | METH_KEYWORDS,
     "send(obj, timeout=None, *, zerocopy=False): send a C-contiguous buffer (one copy)."},
    {"loan", (PyCFunction)(void (*)(void))chan_loan, METH_VARARGS | METH_KEYWORDS,
     "loan(n, timeout=None) -> Loan: a writable pool buffer of n bytes to send without a copy."},
    {"recv", (PyCFunction)(void (*)(void))chan_recv, METH_VARARGS | METH_KEYWORDS,
     "recv(timeout=None) -> Message: the next message, read in place."},
    {"recv_bytes", (PyCFunction)(void (*)(void))chan_recv_bytes, METH_VARARGS | METH_KEYWORDS,
     "recv_bytes(timeout=None) -> bytes: the next message, copied."},
    {"recv_async", (PyCFunction)(void (*)(void))mp_ep_recv_async, METH_VARARGS | METH_KEYWORDS,
     "async recv_async(timeout=None) -> Message: recv on the running asyncio loop."},
    {"shutdown", (PyCFunction)chan_shutdown, METH_NOARGS,
     "shutdown(): this end sends no more; the peer receives what was sent, then Closed."},
    {"stats", (PyCFunction)chan_stats, METH_NOARGS, "stats() -> dict: the endpoint's counters."},
    MP_EP_COMMON_METHODS,
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef chan_getset[] = {
    {"peer", (getter)chan_get_peer, NULL, "(pid, uid, gid) of the process at the other end.", NULL},
    {"closed", mp_ep_get_closed, NULL, "True once closed.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject mp_ChannelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "memport.Channel",
    .tp_basicsize = sizeof(mp_endpoint_t),
    .tp_dealloc = (destructor)chan_dealloc,
    .tp_repr = (reprfunc)ep_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "A channel endpoint: made by Channel.pair(), Channel.connect() or Service.accept().",
    .tp_weaklistoffset = offsetof(mp_endpoint_t, weakrefs),
    .tp_methods = chan_methods,
    .tp_getset = chan_getset,
};

/* ------------------------------------------------------------------------------------------ */
/* Service.                                                                                    */

typedef struct {
  PyObject_HEAD
  memport_service_t *svc;
  bool closed;
  int inflight;
  PyThread_type_lock lock;
  PyObject *weakrefs;
} mp_service_t;

static void service_maybe_free(mp_service_t *s) {
  if (s->closed && s->inflight == 0 && s->svc != NULL) {
    memport_service_close(s->svc);
    s->svc = NULL;
  }
}

static PyObject *service_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
  static const char *kwlist[] = {"name", NULL};
  PyObject *name_obj;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O:Service", (char **)kwlist, &name_obj))
    return NULL;
  const char *name;
  if (mp_name_arg(name_obj, &name) < 0)
    return NULL;
  mp_service_t *s = (mp_service_t *)type->tp_alloc(type, 0);
  if (s == NULL)
    return NULL;
  s->lock = PyThread_allocate_lock();
  if (s->lock == NULL) {
    Py_DECREF(s);
    return PyErr_NoMemory();
  }
  int rc = memport_service_create(&s->svc, name, 0);
  if (rc < 0) {
    s->svc = NULL;
    Py_DECREF(s);
    return mp_raise(rc);
  }
  return (PyObject *)s;
}

static void service_dealloc(mp_service_t *s) {
  if (s->weakrefs != NULL)
    PyObject_ClearWeakRefs((PyObject *)s);
  s->closed = true;
  s->inflight = 0;
  service_maybe_free(s);
  if (s->lock != NULL)
    PyThread_free_lock(s->lock);
  Py_TYPE(s)->tp_free((PyObject *)s);
}

static int service_check(mp_service_t *s) {
  if (s->closed || s->svc == NULL) {
    mp_closed_error("Service");
    return -1;
  }
  return 0;
}

static int service_between(void *ctx) { return ((mp_service_t *)ctx)->closed ? MP_EGONE : 0; }

struct accept_ctx {
  memport_service_t *svc;
  const memport_chan_opts_t *o;
  memport_chan_pending_t *p;
};

static int accept_op(void *ctx, int64_t t) {
  struct accept_ctx *c = ctx;
  return memport_chan_accept_start(&c->p, c->svc, c->o, t);
}

static PyObject *service_accept(mp_service_t *s, PyObject *args, PyObject *kw) {
  static const char *kwlist[] = {"timeout", "ring_capacity", "zerocopy_threshold", "pool_buffer_size", "pool_buffers",
                           "wait", "spin_ns", NULL};
  PyObject *timeout = Py_None;
  PyObject *v[6] = {NULL};
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|O$OOOOOO:accept", (char **)kwlist, &timeout, &v[0], &v[1], &v[2], &v[3], &v[4],
                                   &v[5]))
    return NULL;
  mp_deadline_t dl;
  memport_chan_opts_t o;
  if (mp_parse_timeout(timeout, &dl) < 0 || chan_opts(v, &o) < 0 || service_check(s) < 0)
    return NULL;
  s->inflight++;
  int rc = mp_lock(s->lock, &dl, service_between, s);
  memport_chan_t *h = NULL;
  if (rc == 0) {
    struct accept_ctx c = {s->svc, &o, NULL};
    rc = mp_wait(accept_op, &c, &dl, service_between, s);
    if (rc == 0) /* the client's part of the handshake gets at least a second */
      rc = finish_pending(c.p, &dl, 1000000000LL, service_between, s, &h);
    PyThread_release_lock(s->lock);
  }
  s->inflight--;
  service_maybe_free(s);
  if (rc < 0)
    return mp_fail(rc, "Service");
  return chan_wrap(&mp_ChannelType, h);
}

static PyObject *service_fileno(mp_service_t *s, PyObject *noargs) {
  (void)noargs;
  if (service_check(s) < 0)
    return NULL;
  memport_os_handle_t h;
  int rc = memport_service_pollable(s->svc, &h);
  if (rc < 0)
    return mp_raise(rc);
  return PyLong_FromLong((long)h);
}

static PyObject *service_allow_uid(mp_service_t *s, PyObject *arg) {
  size_t uid = 0;
  if (service_check(s) < 0 || mp_size_arg(arg, "uid", &uid) < 0)
    return NULL;
  if (uid > UINT32_MAX) {
    PyErr_SetString(PyExc_ValueError, "uid out of range");
    return NULL;
  }
  int rc = memport_service_allow_uid(s->svc, (uid_t)uid);
  if (rc < 0)
    return mp_raise(rc);
  Py_RETURN_NONE;
}

static PyObject *service_close(mp_service_t *s, PyObject *noargs) {
  (void)noargs;
  s->closed = true;
  service_maybe_free(s);
  Py_RETURN_NONE;
}

static PyObject *service_enter(mp_service_t *s, PyObject *noargs) {
  (void)noargs;
  if (service_check(s) < 0)
    return NULL;
  Py_INCREF(s);
  return (PyObject *)s;
}

static PyObject *service_exit(mp_service_t *s, PyObject *args) {
  (void)args;
  return service_close(s, NULL);
}

static PyObject *service_get_closed(mp_service_t *s, void *closure) {
  (void)closure;
  return PyBool_FromLong(s->closed);
}

static PyMethodDef service_methods[] = {
    {"accept", (PyCFunction)(void (*)(void))service_accept, METH_VARARGS | METH_KEYWORDS,
     "accept(timeout=None, **opts) -> Channel: the next client, handshake done."},
    {"fileno", (PyCFunction)service_fileno, METH_NOARGS, "fileno() -> int: ready when a connection waits."},
    {"allow_uid", (PyCFunction)service_allow_uid, METH_O, "allow_uid(uid): also accept clients of this user."},
    {"close", (PyCFunction)service_close, METH_NOARGS, "close(): stop serving the name (idempotent)."},
    {"__enter__", (PyCFunction)service_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)service_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef service_getset[] = {
    {"closed", (getter)service_get_closed, NULL, "True once closed.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject mp_ServiceType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "memport.Service",
    .tp_basicsize = sizeof(mp_service_t),
    .tp_dealloc = (destructor)service_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Service(name): serve `name`; accept() gives a Channel per client.",
    .tp_weaklistoffset = offsetof(mp_service_t, weakrefs),
    .tp_methods = service_methods,
    .tp_getset = service_getset,
    .tp_new = service_new,
};

int mp_chan_types_ready(PyObject *m) {
  if (PyType_Ready(&mp_ChannelType) < 0 || PyType_Ready(&mp_ServiceType) < 0)
    return -1;
  Py_INCREF(&mp_ChannelType);
  if (PyModule_AddObject(m, "Channel", (PyObject *)&mp_ChannelType) < 0) {
    Py_DECREF(&mp_ChannelType);
    return -1;
  }
  Py_INCREF(&mp_ServiceType);
  if (PyModule_AddObject(m, "Service", (PyObject *)&mp_ServiceType) < 0) {
    Py_DECREF(&mp_ServiceType);
    return -1;
  }
  return 0;
}
