/* SPDX-License-Identifier: MIT */
/* _memport_topic.c: the Publisher (loan, send, process) and Subscriber (recv) types of memport topics. */
#include "_memport.h"

#include <string.h>

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

static void ep_dealloc(mp_endpoint_t *ep) {
  mp_ep_dealloc_common(ep);
  Py_TYPE(ep)->tp_free((PyObject *)ep);
}

static PyObject *ep_repr(mp_endpoint_t *ep) {
  return PyUnicode_FromFormat("<memport.%s%s>", mp_ep_name(ep), ep->closed ? " closed" : "");
}

static int uint_arg(PyObject *obj, const char *what, unsigned *out) {
  size_t v = *out;
  if (mp_size_arg(obj, what, &v) < 0)
    return -1;
  if (v > UINT32_MAX) {
    PyErr_Format(PyExc_ValueError, "%s is too large", what);
    return -1;
  }
  *out = (unsigned)v;
  return 0;
}

static int spin_arg(PyObject *obj, int64_t *out) {
  size_t v = (size_t)*out;
  if (mp_size_arg(obj, "spin_ns", &v) < 0)
    return -1;
  *out = (int64_t)v;
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Publisher.                                                                                  */

static int pub_send_op(void *ctx, int64_t t) {
  mp_tx_io_t *c = ctx;
  return memport_pub_send(c->h, c->data, c->len, t);
}

static int pub_loan_op(void *ctx, int64_t t) {
  mp_tx_io_t *c = ctx;
  return memport_pub_loan(c->h, c->len, &c->buf, t);
}

/* The Publishers this process made and has not closed. A Subscriber joining a topic waits for its
 * publisher to answer, and a publisher answers only inside its own calls: one run by the same
 * thread would never answer, and the join would wait for ever. So while a Subscriber joins, it
 * lets this process's idle Publishers handle their joins (memport_pub_process never waits), in
 * short slices. The list is used with the GIL held. */
static mp_endpoint_t *local_pubs;

static void pub_list(mp_endpoint_t *ep) {
  ep->pub_owner = mp_pid;
  ep->pub_prev = NULL;
  ep->pub_next = local_pubs;
  if (local_pubs != NULL)
    local_pubs->pub_prev = ep;
  local_pubs = ep;
  ep->pub_listed = true;
}

void mp_pub_unlist(mp_endpoint_t *ep) {
  if (!ep->pub_listed)
    return;
  if (ep->pub_prev != NULL)
    ep->pub_prev->pub_next = ep->pub_next;
  else
    local_pubs = ep->pub_next;
  if (ep->pub_next != NULL)
    ep->pub_next->pub_prev = ep->pub_prev;
  ep->pub_next = ep->pub_prev = NULL;
  ep->pub_listed = false;
}

/* Whether this process has a Publisher of its own (not one inherited through fork). */
static bool local_pubs_here(void) {
  for (mp_endpoint_t *ep = local_pubs; ep != NULL; ep = ep->pub_next)
    if (ep->pub_owner == mp_pid && !ep->closed && ep->h != NULL)
      return true;
  return false;
}

/* Let each idle Publisher of this process handle what waits for it (joins above all). One that
 * another thread is using is skipped: that thread's calls handle its joins. The GIL stays held:
 * memport_pub_process does not wait, and the list cannot change under us. */
static void local_pubs_process(void) {
  for (mp_endpoint_t *ep = local_pubs; ep != NULL; ep = ep->pub_next) {
    if (ep->pub_owner != mp_pid || ep->closed || ep->h == NULL ||
        !PyThread_acquire_lock(ep->lock[MP_TX], NOWAIT_LOCK))
      continue;
    ep->inflight++;
    (void)memport_pub_process(ep->h);
    ep->inflight--;
    PyThread_release_lock(ep->lock[MP_TX]);
  }
}

static PyObject *pub_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
  static const char *kwlist[] = {"name",       "depth", "overflow", "history", "buffers", "buffer_size",
                           "inline_max", "max_subscribers", "wait", "spin_ns", NULL};
  PyObject *name_obj, *depth = NULL, *overflow = NULL, *history = NULL, *buffers = NULL, *buffer_size = NULL,
                      *inline_max = NULL, *max_subs = NULL, *wait = NULL, *spin = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|OOOOOOO$OO:Publisher", (char **)kwlist, &name_obj, &depth, &overflow, &history,
                                   &buffers, &buffer_size, &inline_max, &max_subs, &wait, &spin))
    return NULL;
  const char *name;
  if (mp_name_arg(name_obj, &name) < 0)
    return NULL;
  memport_topic_opts_t o;
  memport_topic_opts_init(&o);
  if (uint_arg(depth, "depth", &o.depth) < 0 || uint_arg(history, "history", &o.history) < 0 ||
      uint_arg(buffers, "buffers", &o.buffers) < 0 || mp_size_arg(buffer_size, "buffer_size", &o.buffer_size) < 0 ||
      mp_size_arg(inline_max, "inline_max", &o.inline_max) < 0 ||
      uint_arg(max_subs, "max_subscribers", &o.max_subscribers) < 0 || mp_wait_arg(wait, &o.wait_policy) < 0 ||
      spin_arg(spin, &o.spin_ns) < 0)
    return NULL;
  if (overflow != NULL && overflow != Py_None) {
    if (!PyUnicode_Check(overflow)) {
      PyErr_Format(PyExc_TypeError, "overflow must be a str, not %.100s", Py_TYPE(overflow)->tp_name);
      return NULL;
    }
    if (PyUnicode_CompareWithASCIIString(overflow, "block") == 0)
      o.overflow = MEMPORT_TOPIC_BLOCK;
    else if (PyUnicode_CompareWithASCIIString(overflow, "drop_oldest") == 0 ||
             PyUnicode_CompareWithASCIIString(overflow, "drop-oldest") == 0)
      o.overflow = MEMPORT_TOPIC_DROP_OLDEST;
    else {
      PyErr_SetString(PyExc_ValueError, "overflow must be \"block\" or \"drop_oldest\"");
      return NULL;
    }
  }
  const char *field = NULL;
  if (memport_topic_opts_check(&o, &field) < 0) {
    PyErr_Format(PyExc_ValueError, "topic option out of range: %s", field != NULL ? field : "?");
    return NULL;
  }
  mp_endpoint_t *ep = (mp_endpoint_t *)type->tp_alloc(type, 0);
  if (ep == NULL)
    return NULL;
  if (mp_ep_init(ep, MP_PUB) < 0) {
    Py_DECREF(ep);
    return NULL;
  }
  memport_pub_t *h = NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = memport_pub_create(&h, name, &o);
  Py_END_ALLOW_THREADS
  if (rc < 0) {
    Py_DECREF(ep);
    return mp_raise(rc);
  }
  ep->h = h;
  pub_list(ep);
  return (PyObject *)ep;
}

static PyObject *pub_send(mp_endpoint_t *ep, PyObject *args, PyObject *kw) {
  static const char *kwlist[] = {"obj", "timeout", NULL};
  PyObject *obj, *timeout = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O:send", (char **)kwlist, &obj, &timeout))
    return NULL;
  return mp_ep_send_obj(ep, obj, timeout, 0, pub_send_op);
}

static PyObject *pub_loan(mp_endpoint_t *ep, PyObject *args, PyObject *kw) {
  static const char *kwlist[] = {"n", "timeout", NULL};
  PyObject *n_obj, *timeout = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O:loan", (char **)kwlist, &n_obj, &timeout))
    return NULL;
  return mp_ep_loan(ep, n_obj, timeout, pub_loan_op);
}

static PyObject *pub_process(mp_endpoint_t *ep, PyObject *noargs) {
  (void)noargs;
  if (mp_ep_check(ep) < 0)
    return NULL;
  mp_deadline_t dl = {true, false, 0};
  int rc = mp_ep_begin(ep, MP_TX, &dl);
  if (rc != 0)
    return mp_fail(rc, "Publisher");
  Py_BEGIN_ALLOW_THREADS
  rc = memport_pub_process(ep->h);
  Py_END_ALLOW_THREADS
  mp_ep_end(ep, MP_TX);
  if (rc < 0)
    return mp_raise(rc);
  return PyLong_FromLong(rc);
}

static PyObject *pub_get_subscribers(mp_endpoint_t *ep, void *closure) {
  (void)closure;
  if (mp_ep_check(ep) < 0)
    return NULL;
  mp_deadline_t dl = {true, false, 0};
  int rc = mp_ep_begin(ep, MP_TX, &dl);
  if (rc != 0)
    return mp_fail(rc, "Publisher");
  rc = memport_pub_subscribers(ep->h);
  mp_ep_end(ep, MP_TX);
  if (rc < 0)
    return mp_raise(rc);
  return PyLong_FromLong(rc);
}

static PyObject *pub_stats(mp_endpoint_t *ep, PyObject *noargs) {
  (void)noargs;
  if (mp_ep_check(ep) < 0)
    return NULL;
  mp_deadline_t dl = {true, false, 0};
  int rc = mp_ep_begin(ep, MP_TX, &dl);
  if (rc != 0)
    return mp_fail(rc, "Publisher");
  memport_pub_stats_t s;
  memset(&s, 0, sizeof s);
  s.struct_size = sizeof s;
  rc = memport_pub_stats(ep->h, &s);
  PyObject *subs = NULL;
  if (rc == 0) {
    subs = PyList_New(0);
    for (unsigned i = 0; subs != NULL && i < s.subscribers; i++) {
      memport_pub_sub_stats_t ss;
      memset(&ss, 0, sizeof ss);
      ss.struct_size = sizeof ss;
      if (memport_pub_sub_stats(ep->h, i, &ss) < 0)
        break;
      PyObject *d = Py_BuildValue("{s:l,s:k,s:k,s:K,s:K,s:k,s:k}", "pid", (long)ss.cred.pid, "uid",
                                  (unsigned long)ss.cred.uid, "gid", (unsigned long)ss.cred.gid, "delivered",
                                  (unsigned long long)ss.delivered, "dropped", (unsigned long long)ss.dropped,
                                  "queued", (unsigned long)ss.queued, "held", (unsigned long)ss.held);
      if (d == NULL || PyList_Append(subs, d) < 0) {
        Py_XDECREF(d);
        Py_CLEAR(subs);
        break;
      }
      Py_DECREF(d);
    }
  }
  mp_ep_end(ep, MP_TX);
  if (rc < 0)
    return mp_raise(rc);
  if (subs == NULL)
    return NULL;
  PyObject *d = PyDict_New();
  if (d == NULL || PyDict_SetItemString(d, "subscriber_stats", subs) < 0) {
    Py_XDECREF(d);
    Py_DECREF(subs);
    return NULL;
  }
  Py_DECREF(subs);
  SET_U64(d, "published", s.published);
  SET_U64(d, "published_pool", s.published_pool);
  SET_U64(d, "delivered", s.delivered);
  SET_U64(d, "dropped", s.dropped);
  SET_U64(d, "joined", s.joined);
  SET_U64(d, "left", s.left);
  SET_U64(d, "subscribers", s.subscribers);
  SET_U64(d, "history", s.history);
  SET_U64(d, "buffers", s.buffers);
  SET_U64(d, "buffers_free", s.buffers_free);
  SET_U64(d, "buffers_loaned", s.buffers_loaned);
  SET_U64(d, "buffers_in_use", s.buffers_in_use);
  return d;
}

static PyObject *pub_allow_uid(mp_endpoint_t *ep, PyObject *arg) {
  size_t uid = 0;
  if (mp_ep_check(ep) < 0 || mp_size_arg(arg, "uid", &uid) < 0)
    return NULL;
  if (uid > UINT32_MAX) {
    PyErr_SetString(PyExc_ValueError, "uid out of range");
    return NULL;
  }
  mp_deadline_t dl = {true, false, 0};
  int rc = mp_ep_begin(ep, MP_TX, &dl);
  if (rc != 0)
    return mp_fail(rc, "Publisher");
  rc = memport_pub_allow_uid(ep->h, (uid_t)uid);
  mp_ep_end(ep, MP_TX);
  if (rc < 0)
    return mp_raise(rc);
  Py_RETURN_NONE;
}

static PyMethodDef pub_methods[] = {
    {"send", (PyCFunction)(void (*)(void))pub_send, METH_VARARGS | METH_KEYWORDS,
     "send(obj, timeout=None): publish a copy of a C-contiguous buffer."},
    {"loan", (PyCFunction)(void (*)(void))pub_loan, METH_VARARGS | METH_KEYWORDS,
     "loan(n, timeout=None) -> Loan: a writable pool buffer of n bytes; Loan.send() publishes it without a copy."},
    {"process", (PyCFunction)pub_process, METH_NOARGS,
     "process(): handle joins, releases and deaths now (when fileno() is ready), never waiting."},
    {"stats", (PyCFunction)pub_stats, METH_NOARGS, "stats() -> dict: the publisher's counters (and per subscriber)."},
    {"allow_uid", (PyCFunction)pub_allow_uid, METH_O, "allow_uid(uid): also accept subscribers of this user."},
    MP_EP_COMMON_METHODS,
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef pub_getset[] = {
    {"subscribers", (getter)pub_get_subscribers, NULL, "Subscribers joined now.", NULL},
    {"closed", mp_ep_get_closed, NULL, "True once closed.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject mp_PublisherType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "memport.Publisher",
    .tp_basicsize = sizeof(mp_endpoint_t),
    .tp_dealloc = (destructor)ep_dealloc,
    .tp_repr = (reprfunc)ep_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Publisher(name, depth=64, overflow=\"block\", history=0, buffers=32, buffer_size=1<<20, "
              "inline_max=200, max_subscribers=64, *, wait=None, spin_ns=None): the publisher of a topic.",
    .tp_weaklistoffset = offsetof(mp_endpoint_t, weakrefs),
    .tp_methods = pub_methods,
    .tp_getset = pub_getset,
    .tp_new = pub_new,
};

/* ------------------------------------------------------------------------------------------ */
/* Subscriber.                                                                                 */

struct sub_io {
  memport_sub_t *h;
  const char *name;
  const memport_topic_opts_t *o;
  memport_buf_t buf;
  bool local; /* joining: this process has Publishers of its own, which need turns to answer */
};

static int sub_start_op(void *ctx, int64_t t) {
  (void)t;
  struct sub_io *c = ctx;
  return memport_sub_connect_start(&c->h, c->name, c->o);
}

static bool sub_start_retry(int rc) { return rc == MEMPORT_ENOENT || rc == MEMPORT_EAGAIN || rc == MEMPORT_ETIMEDOUT; }

#define JOIN_SLICE_NS 1000000 /* with Publishers of our own: they answer between slices this long */

static int sub_finish_op(void *ctx, int64_t t) {
  struct sub_io *c = ctx;
  if (c->local && (t < 0 || t > JOIN_SLICE_NS))
    t = JOIN_SLICE_NS;
  return memport_sub_connect_finish(c->h, t);
}

static int sub_finish_between(void *ctx) {
  struct sub_io *c = ctx;
  c->local = local_pubs_here();
  if (c->local)
    local_pubs_process();
  return 0;
}

static int sub_recv_op(void *ctx, int64_t t) {
  struct sub_io *c = ctx;
  return memport_sub_recv(c->h, &c->buf, t);
}

static PyObject *sub_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
  static const char *kwlist[] = {"name", "timeout", "wait", "spin_ns", NULL};
  PyObject *name_obj, *timeout = Py_None, *wait = NULL, *spin = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O$OO:Subscriber", (char **)kwlist, &name_obj, &timeout, &wait, &spin))
    return NULL;
  const char *name;
  mp_deadline_t dl;
  memport_topic_opts_t o;
  memport_topic_opts_init(&o);
  if (mp_name_arg(name_obj, &name) < 0 || mp_parse_timeout(timeout, &dl) < 0 || mp_wait_arg(wait, &o.wait_policy) < 0 ||
      spin_arg(spin, &o.spin_ns) < 0)
    return NULL;
  mp_endpoint_t *ep = (mp_endpoint_t *)type->tp_alloc(type, 0);
  if (ep == NULL)
    return NULL;
  if (mp_ep_init(ep, MP_SUB) < 0) {
    Py_DECREF(ep);
    return NULL;
  }
  struct sub_io c = {NULL, name, &o, {0}, false};
  int rc = mp_retry(sub_start_op, &c, &dl, sub_start_retry, NULL, NULL);
  if (rc == 0) {
    (void)sub_finish_between(&c); /* our own Publisher takes the connection now */
    rc = mp_wait(sub_finish_op, &c, &dl, sub_finish_between, &c);
    if (rc != 0) {
      memport_sub_close(c.h);
      c.h = NULL;
    }
  }
  if (rc != 0) {
    Py_DECREF(ep);
    return mp_raise(rc == MEMPORT_EAGAIN && !dl.nowait ? MEMPORT_ETIMEDOUT : rc);
  }
  ep->h = c.h;
  return (PyObject *)ep;
}

static int sub_recv_common(mp_endpoint_t *ep, PyObject *timeout, struct sub_io *c, bool *small) {
  mp_deadline_t dl;
  if (mp_parse_timeout(timeout, &dl) < 0 || mp_ep_check(ep) < 0)
    return MP_EPYERR;
  int rc = mp_ep_begin(ep, MP_RX, &dl);
  if (rc != 0)
    return rc;
  c->h = ep->h;
  mp_ep_between_t bt = {ep, MP_RX};
  rc = mp_wait(sub_recv_op, c, &dl, mp_ep_between, &bt);
  if (rc == 0 && ep->closed) {
    (void)memport_sub_release(ep->h, &c->buf);
    rc = MP_EGONE;
  }
  if (rc == 0) {
    memport_sub_stats_t s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    *small = true;
    if (memport_sub_stats(ep->h, &s) == 0) {
      uint64_t copied = s.received - s.received_pool;
      *small = copied != ep->ring_seen;
      ep->ring_seen = copied;
    }
  }
  if (rc != 0)
    mp_ep_end(ep, MP_RX);
  return rc;
}

static PyObject *sub_recv(mp_endpoint_t *ep, PyObject *args, PyObject *kw) {
  static const char *kwlist[] = {"timeout", NULL};
  PyObject *timeout = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:recv", (char **)kwlist, &timeout))
    return NULL;
  struct sub_io c = {NULL, NULL, NULL, {0}, false};
  bool small = false;
  int rc = sub_recv_common(ep, timeout, &c, &small);
  if (rc != 0)
    return mp_fail(rc, "Subscriber");
  PyObject *m = mp_message_new(ep, &c.buf, !small);
  mp_ep_end(ep, MP_RX);
  return m;
}

static PyObject *sub_recv_bytes(mp_endpoint_t *ep, PyObject *args, PyObject *kw) {
  static const char *kwlist[] = {"timeout", NULL};
  PyObject *timeout = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:recv_bytes", (char **)kwlist, &timeout))
    return NULL;
  struct sub_io c = {NULL, NULL, NULL, {0}, false};
  bool small = false;
  int rc = sub_recv_common(ep, timeout, &c, &small);
  if (rc != 0)
    return mp_fail(rc, "Subscriber");
  PyObject *b = PyBytes_FromStringAndSize(c.buf.data, (Py_ssize_t)c.buf.len);
  (void)memport_sub_release(ep->h, &c.buf);
  mp_ep_end(ep, MP_RX);
  return b;
}

static PyObject *sub_get_missed(mp_endpoint_t *ep, void *closure) {
  (void)closure;
  if (mp_ep_check(ep) < 0)
    return NULL;
  uint64_t missed = 0;
  int rc = memport_sub_missed(ep->h, &missed); /* an atomic load: safe beside the other calls */
  if (rc < 0)
    return mp_raise(rc);
  return PyLong_FromUnsignedLongLong(missed);
}

static PyObject *sub_stats(mp_endpoint_t *ep, PyObject *noargs) {
  (void)noargs;
  if (mp_ep_check(ep) < 0)
    return NULL;
  mp_deadline_t dl = {true, false, 0};
  int rc = mp_ep_begin(ep, MP_RX, &dl);
  if (rc != 0)
    return mp_fail(rc, "Subscriber");
  memport_sub_stats_t s;
  memset(&s, 0, sizeof s);
  s.struct_size = sizeof s;
  rc = memport_sub_stats(ep->h, &s);
  mp_ep_end(ep, MP_RX);
  if (rc < 0)
    return mp_raise(rc);
  PyObject *d = PyDict_New();
  if (d == NULL)
    return NULL;
  SET_U64(d, "received", s.received);
  SET_U64(d, "received_pool", s.received_pool);
  SET_U64(d, "missed", s.missed);
  SET_U64(d, "queued", s.queued);
  SET_U64(d, "held", s.held);
  SET_U64(d, "buffer_size", s.buffer_size);
  return d;
}

static PyMethodDef sub_methods[] = {
    {"recv", (PyCFunction)(void (*)(void))sub_recv, METH_VARARGS | METH_KEYWORDS,
     "recv(timeout=None) -> Message: the next message (large ones read in the publisher's pages)."},
    {"recv_bytes", (PyCFunction)(void (*)(void))sub_recv_bytes, METH_VARARGS | METH_KEYWORDS,
     "recv_bytes(timeout=None) -> bytes: the next message, copied."},
    {"recv_async", (PyCFunction)(void (*)(void))mp_ep_recv_async, METH_VARARGS | METH_KEYWORDS,
     "async recv_async(timeout=None) -> Message: recv on the running asyncio loop."},
    {"stats", (PyCFunction)sub_stats, METH_NOARGS, "stats() -> dict: the subscriber's counters."},
    MP_EP_COMMON_METHODS,
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef sub_getset[] = {
    {"missed", (getter)sub_get_missed, NULL, "Messages lost so far under overflow=\"drop_oldest\".", NULL},
    {"closed", mp_ep_get_closed, NULL, "True once closed.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject mp_SubscriberType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "memport.Subscriber",
    .tp_basicsize = sizeof(mp_endpoint_t),
    .tp_dealloc = (destructor)ep_dealloc,
    .tp_repr = (reprfunc)ep_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Subscriber(name, timeout=None, *, wait=None, spin_ns=None): join the topic `name`.",
    .tp_weaklistoffset = offsetof(mp_endpoint_t, weakrefs),
    .tp_methods = sub_methods,
    .tp_getset = sub_getset,
    .tp_new = sub_new,
};

int mp_topic_types_ready(PyObject *m) {
  if (PyType_Ready(&mp_PublisherType) < 0 || PyType_Ready(&mp_SubscriberType) < 0)
    return -1;
  Py_INCREF(&mp_PublisherType);
  if (PyModule_AddObject(m, "Publisher", (PyObject *)&mp_PublisherType) < 0) {
    Py_DECREF(&mp_PublisherType);
    return -1;
  }
  Py_INCREF(&mp_SubscriberType);
  if (PyModule_AddObject(m, "Subscriber", (PyObject *)&mp_SubscriberType) < 0) {
    Py_DECREF(&mp_SubscriberType);
    return -1;
  }
  return 0;
}
