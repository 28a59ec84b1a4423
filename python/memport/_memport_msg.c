/* SPDX-License-Identifier: MIT */
/* _memport_msg.c: what Channel, Publisher and Subscriber share (locks, deferred close, give-backs) and the Message and Loan types. */
#include "_memport.h"

#include <string.h>

static char empty_bytes[1];

/* ------------------------------------------------------------------------------------------ */
/* Endpoints.                                                                                  */

const char *mp_ep_name(const mp_endpoint_t *ep) {
  switch (ep->kind) {
  case MP_CHAN:
    return "Channel";
  case MP_PUB:
    return "Publisher";
  default:
    return "Subscriber";
  }
}

int mp_ep_init(mp_endpoint_t *ep, int kind) {
  ep->kind = kind;
  ep->h = NULL;
  ep->closed = false;
  ep->inflight = 0;
  ep->exports = 0;
  ep->live = NULL;
  ep->weakrefs = NULL;
  ep->ring_seen = 0;
  ep->fd = -1;
  ep->used_pid = 0;
  memset(ep->pending, 0, sizeof ep->pending);
  ep->lock[0] = PyThread_allocate_lock();
  ep->lock[1] = kind == MP_CHAN ? PyThread_allocate_lock() : ep->lock[0];
  if (ep->lock[0] == NULL || ep->lock[1] == NULL) {
    PyErr_NoMemory();
    return -1;
  }
  return 0;
}

int mp_ep_check(mp_endpoint_t *ep) {
  if (ep->closed || ep->h == NULL) {
    mp_closed_error(mp_ep_name(ep));
    return -1;
  }
  return 0;
}

static void unlink_buf(mp_bufobj_t *b) {
  if (!b->linked)
    return;
  if (b->prev != NULL)
    b->prev->next = b->next;
  else
    b->ep->live = b->next;
  if (b->next != NULL)
    b->next->prev = b->prev;
  b->prev = b->next = NULL;
  b->linked = false;
}

static void link_buf(mp_bufobj_t *b) {
  mp_endpoint_t *ep = b->ep;
  b->prev = NULL;
  b->next = ep->live;
  if (ep->live != NULL)
    ep->live->prev = b;
  ep->live = b;
  b->linked = true;
}

void mp_ep_maybe_free(mp_endpoint_t *ep) {
  if (!ep->closed || ep->h == NULL || ep->inflight > 0 || ep->exports > 0)
    return;
  void *h = ep->h;
  ep->h = NULL;
  ep->fd = -1;
  for (int i = 0; i < 2; i++) {
    PyMem_Free(ep->pending[i].bufs);
    memset(&ep->pending[i], 0, sizeof ep->pending[i]);
  }
  /* Closing may take a moment (an orderly end is announced): without the GIL. Nothing else uses
   * the handle any more. */
  int kind = ep->kind;
  /* A channel end used in this process ends in order (a pair's ends, and so the ends of a
   * forked child, otherwise close without announcing it); the copy of an end this process never
   * used (the other process's end, inherited through fork) just goes. */
  bool orderly = kind == MP_CHAN && ep->used_pid == mp_pid;
  Py_BEGIN_ALLOW_THREADS
  switch (kind) {
  case MP_CHAN:
    if (orderly)
      (void)memport_chan_shutdown(h, MEMPORT_CHAN_SHUT_SEND);
    memport_chan_close(h);
    break;
  case MP_PUB:
    memport_pub_close(h);
    break;
  default:
    memport_sub_close(h);
    break;
  }
  Py_END_ALLOW_THREADS
}

void mp_ep_close(mp_endpoint_t *ep) {
  if (ep->closed)
    return;
  ep->closed = true;
  if (ep->kind == MP_PUB)
    mp_pub_unlist(ep);
  while (ep->live != NULL) { /* the library frees their buffers with the endpoint */
    mp_bufobj_t *b = ep->live;
    b->live = false;
    unlink_buf(b);
  }
  mp_ep_maybe_free(ep);
}

void mp_ep_dealloc_common(mp_endpoint_t *ep) {
  if (ep->weakrefs != NULL)
    PyObject_ClearWeakRefs((PyObject *)ep);
  ep->inflight = 0;
  ep->exports = 0; /* nothing can hold a view any more: views hold their message, which holds us */
  if (ep->h != NULL) {
    ep->closed = false;
    mp_ep_close(ep);
  }
  for (int i = 0; i < 2; i++)
    PyMem_Free(ep->pending[i].bufs);
  if (ep->lock[1] != NULL && ep->lock[1] != ep->lock[0])
    PyThread_free_lock(ep->lock[1]);
  if (ep->lock[0] != NULL)
    PyThread_free_lock(ep->lock[0]);
  ep->lock[0] = ep->lock[1] = NULL;
}

int mp_give_back(mp_endpoint_t *ep, bool loan, memport_buf_t *buf) {
  if (ep->h == NULL)
    return 0;
  switch (ep->kind) {
  case MP_CHAN:
    return loan ? memport_chan_free_buf(ep->h, buf) : memport_chan_release(ep->h, buf);
  case MP_PUB:
    return memport_pub_discard(ep->h, buf);
  default:
    return memport_sub_release(ep->h, buf);
  }
}

static void drain_one(mp_endpoint_t *ep, int dir) {
  mp_pending_t *p = &ep->pending[dir];
  for (size_t i = 0; i < p->n; i++)
    if (!ep->closed)
      (void)mp_give_back(ep, dir == MP_TX, &p->bufs[i]);
  p->n = 0;
}

/* Give-backs left by others while this thread held the lock of `dir` (GIL held). */
static void drain(mp_endpoint_t *ep, int dir) {
  if (ep->kind == MP_CHAN) {
    drain_one(ep, dir);
  } else {
    drain_one(ep, MP_RX);
    drain_one(ep, MP_TX);
  }
}

int mp_ep_between(void *ctx) {
  mp_ep_between_t *b = ctx;
  if (b->ep->closed)
    return MP_EGONE;
  if (b->dir >= 0)
    drain(b->ep, b->dir);
  return 0;
}

int mp_ep_begin(mp_endpoint_t *ep, int dir, const mp_deadline_t *dl) {
  if (ep->closed || ep->h == NULL)
    return MP_EGONE;
  ep->inflight++;
  ep->used_pid = mp_pid;
  mp_ep_between_t bt = {ep, -1};
  int rc = mp_lock(ep->lock[dir], dl, mp_ep_between, &bt);
  if (rc == 0 && ep->closed) {
    PyThread_release_lock(ep->lock[dir]);
    rc = MP_EGONE;
  }
  if (rc != 0) {
    ep->inflight--;
    mp_ep_maybe_free(ep);
  }
  return rc;
}

void mp_ep_end(mp_endpoint_t *ep, int dir) {
  drain(ep, dir);
  PyThread_release_lock(ep->lock[dir]);
  ep->inflight--;
  mp_ep_maybe_free(ep);
}

/* Give a message's or loan's library buffer back, now if its direction is free, else through
 * the holder of the lock (who may be blocked in a receive for ever: never wait here). */
static void give_back_or_defer(mp_bufobj_t *b) {
  mp_endpoint_t *ep = b->ep;
  int dir = b->loan ? MP_TX : MP_RX;
  if (ep->closed || ep->h == NULL)
    return;
  if (PyThread_acquire_lock(ep->lock[dir], NOWAIT_LOCK)) {
    (void)mp_give_back(ep, b->loan, &b->buf);
    drain(ep, dir);
    PyThread_release_lock(ep->lock[dir]);
    return;
  }
  mp_pending_t *p = &ep->pending[dir];
  if (p->n == p->cap) {
    size_t cap = p->cap ? 2 * p->cap : 8;
    memport_buf_t *nb = PyMem_Realloc(p->bufs, cap * sizeof *nb);
    if (nb == NULL)
      return; /* kept by the library until the endpoint closes */
    p->bufs = nb;
    p->cap = cap;
  }
  p->bufs[p->n++] = b->buf;
}

/* ------------------------------------------------------------------------------------------ */
/* Message and Loan.                                                                           */

static mp_bufobj_t *bufobj_new(PyTypeObject *type, mp_endpoint_t *ep, const memport_buf_t *buf, bool loan) {
  mp_bufobj_t *b = PyObject_New(mp_bufobj_t, type);
  if (b == NULL)
    return NULL;
  Py_INCREF(ep);
  b->ep = ep;
  b->prev = b->next = NULL;
  b->buf = *buf;
  b->copy = NULL;
  b->live = true;
  b->linked = false;
  b->loan = loan;
  b->busy = false;
  b->release_at_last_view = false;
  b->exports = 0;
  return b;
}

PyObject *mp_message_new(mp_endpoint_t *ep, const memport_buf_t *buf, bool inplace) {
  memport_buf_t tmp = *buf;
  mp_bufobj_t *b = bufobj_new(&mp_MessageType, ep, buf, false);
  if (b == NULL) {
    (void)mp_give_back(ep, false, &tmp);
    return NULL;
  }
  if (!inplace) {
    b->copy = PyMem_Malloc(buf->len ? buf->len : 1);
    if (b->copy != NULL && buf->len != 0)
      memcpy(b->copy, buf->data, buf->len);
    (void)mp_give_back(ep, false, &tmp);
    if (b->copy == NULL) {
      b->live = false;
      Py_DECREF(b);
      return PyErr_NoMemory();
    }
  }
  link_buf(b);
  return (PyObject *)b;
}

PyObject *mp_loan_new(mp_endpoint_t *ep, const memport_buf_t *buf) {
  memport_buf_t tmp = *buf;
  mp_bufobj_t *b = bufobj_new(&mp_LoanType, ep, buf, true);
  if (b == NULL) {
    (void)mp_give_back(ep, true, &tmp);
    return NULL;
  }
  link_buf(b);
  return (PyObject *)b;
}


static int buf_check_live(mp_bufobj_t *b) {
  if (!b->live) {
    PyErr_Format(PyExc_ValueError, b->loan ? "loan was sent or discarded" : "message is released");
    return -1;
  }
  return 0;
}

static void bufobj_dealloc(mp_bufobj_t *b) {
  if (b->live) {
    b->live = false;
    if (b->copy == NULL)
      give_back_or_defer(b);
  }
  unlink_buf(b);
  PyMem_Free(b->copy);
  mp_endpoint_t *ep = b->ep;
  PyObject_Free(b);
  Py_DECREF(ep);
}

static int bufobj_getbuffer(mp_bufobj_t *b, Py_buffer *view, int flags) {
  if (buf_check_live(b) < 0) {
    view->obj = NULL;
    return -1;
  }
  if (b->busy) {
    PyErr_SetString(PyExc_BufferError, "the loan is being sent");
    view->obj = NULL;
    return -1;
  }
  if (!b->loan && (flags & PyBUF_WRITABLE) == PyBUF_WRITABLE) {
    PyErr_SetString(PyExc_BufferError, "a message is read-only");
    view->obj = NULL;
    return -1;
  }
  void *data = b->copy != NULL ? b->copy : b->buf.data;
  if (data == NULL)
    data = empty_bytes;
  if (PyBuffer_FillInfo(view, (PyObject *)b, data, (Py_ssize_t)b->buf.len, !b->loan, flags) < 0)
    return -1;
  b->exports++;
  if (b->copy == NULL)
    b->ep->exports++;
  return 0;
}

/* Give back what a message or loan holds (it is no longer live). */
static void bufobj_end(mp_bufobj_t *b) {
  b->live = false;
  unlink_buf(b);
  if (b->copy == NULL)
    give_back_or_defer(b);
  else {
    PyMem_Free(b->copy);
    b->copy = NULL;
    b->buf.data = NULL;
  }
}

static void bufobj_releasebuffer(mp_bufobj_t *b, Py_buffer *view) {
  (void)view;
  bool library = b->copy == NULL; /* counted in ep->exports by getbuffer */
  b->exports--;
  /* A with block that an exception left while views existed: released (a loan discarded) now
   * that the last view is gone. */
  if (b->exports == 0 && b->release_at_last_view && b->live && !b->busy)
    bufobj_end(b);
  if (library) {
    b->ep->exports--;
    mp_ep_maybe_free(b->ep);
  }
}

static PyBufferProcs bufobj_as_buffer = {
    (getbufferproc)bufobj_getbuffer,
    (releasebufferproc)bufobj_releasebuffer,
};

static Py_ssize_t bufobj_len(mp_bufobj_t *b) {
  if (buf_check_live(b) < 0)
    return -1;
  return (Py_ssize_t)b->buf.len;
}

static PySequenceMethods bufobj_as_sequence = {
    .sq_length = (lenfunc)bufobj_len,
};

static PyObject *message_release(mp_bufobj_t *b, PyObject *noargs) {
  (void)noargs;
  if (!b->live)
    Py_RETURN_NONE;
  if (b->exports > 0) {
    PyErr_Format(PyExc_BufferError, "cannot release a message while %zd buffer view(s) of it exist", b->exports);
    return NULL;
  }
  bufobj_end(b);
  Py_RETURN_NONE;
}

static PyObject *bufobj_enter(PyObject *self, PyObject *noargs) {
  (void)noargs;
  Py_INCREF(self);
  return self;
}

/* Leaving a with block by an exception while views of the message exist: the exception goes on
 * (a BufferError here would replace it), and the message is released when its last view goes. */
static bool exit_by_exception(mp_bufobj_t *b, PyObject *args) {
  if (!b->live || b->exports == 0 || PyTuple_GET_SIZE(args) < 1 || PyTuple_GET_ITEM(args, 0) == Py_None)
    return false;
  b->release_at_last_view = true;
  return true;
}

static PyObject *message_exit(mp_bufobj_t *b, PyObject *args) {
  if (exit_by_exception(b, args))
    Py_RETURN_NONE;
  return message_release(b, NULL);
}

static PyObject *message_tobytes(mp_bufobj_t *b, PyObject *noargs) {
  (void)noargs;
  if (buf_check_live(b) < 0)
    return NULL;
  const void *data = b->copy != NULL ? b->copy : b->buf.data;
  return PyBytes_FromStringAndSize(data != NULL ? data : empty_bytes, (Py_ssize_t)b->buf.len);
}

static PyObject *bufobj_get_released(mp_bufobj_t *b, void *closure) {
  (void)closure;
  return PyBool_FromLong(!b->live);
}

static PyObject *bufobj_get_inplace(mp_bufobj_t *b, void *closure) {
  (void)closure;
  if (buf_check_live(b) < 0)
    return NULL;
  return PyBool_FromLong(b->copy == NULL);
}

static PyObject *message_repr(mp_bufobj_t *b) {
  if (!b->live)
    return PyUnicode_FromString("<memport.Message released>");
  return PyUnicode_FromFormat("<memport.Message %zu bytes%s>", b->buf.len, b->copy != NULL ? " (copied)" : "");
}

static PyMethodDef message_methods[] = {
    {"release", (PyCFunction)message_release, METH_NOARGS,
     "release(): give the message back (BufferError while views of it exist; a no-op once released)."},
    {"close", (PyCFunction)message_release, METH_NOARGS, "close(): the same as release()."},
    {"tobytes", (PyCFunction)message_tobytes, METH_NOARGS, "tobytes() -> bytes: a copy of the message."},
    {"__enter__", bufobj_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)message_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef message_getset[] = {
    {"released", (getter)bufobj_get_released, NULL, "True once the message is released (or its endpoint closed).",
     NULL},
    {"inplace", (getter)bufobj_get_inplace, NULL,
     "True if the message is a view of the sender's memory, False if it was small and copied.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject mp_MessageType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "memport.Message",
    .tp_basicsize = sizeof(mp_bufobj_t),
    .tp_dealloc = (destructor)bufobj_dealloc,
    .tp_repr = (reprfunc)message_repr,
    .tp_as_sequence = &bufobj_as_sequence,
    .tp_as_buffer = &bufobj_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A received message: a read-only buffer over the sender's pages (small messages are copied), "
              "valid until release() or the end of a with block.",
    .tp_methods = message_methods,
    .tp_getset = message_getset,
};

/* Loan */

struct send_ctx {
  mp_endpoint_t *ep;
  memport_buf_t *buf;
};

static int loan_send_op(void *ctx, int64_t t) {
  struct send_ctx *c = ctx;
  if (c->ep->kind == MP_CHAN)
    return memport_chan_send_buf(c->ep->h, c->buf, t);
  return memport_pub_publish(c->ep->h, c->buf, t);
}

static PyObject *loan_send(mp_bufobj_t *b, PyObject *args, PyObject *kw) {
  static const char *kwlist[] = {"timeout", NULL};
  PyObject *timeout = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:send", (char **)kwlist, &timeout))
    return NULL;
  if (buf_check_live(b) < 0)
    return NULL;
  if (b->busy) {
    PyErr_SetString(PyExc_BufferError, "the loan is being sent");
    return NULL;
  }
  if (b->exports > 0) {
    PyErr_Format(PyExc_BufferError, "cannot send a loan while %zd buffer view(s) of it exist", b->exports);
    return NULL;
  }
  mp_deadline_t dl;
  if (mp_parse_timeout(timeout, &dl) < 0)
    return NULL;
  mp_endpoint_t *ep = b->ep;
  int rc = mp_ep_begin(ep, MP_TX, &dl);
  if (rc != 0)
    return mp_fail(rc, mp_ep_name(ep));
  struct send_ctx c = {ep, &b->buf};
  mp_ep_between_t bt = {ep, MP_TX};
  b->busy = true;
  rc = mp_wait(loan_send_op, &c, &dl, mp_ep_between, &bt);
  b->busy = false;
  if (rc == 0) {
    b->live = false;
    unlink_buf(b);
  }
  mp_ep_end(ep, MP_TX);
  if (rc != 0)
    return mp_fail(rc, mp_ep_name(ep));
  Py_RETURN_NONE;
}

static PyObject *loan_discard(mp_bufobj_t *b, PyObject *noargs) {
  (void)noargs;
  if (buf_check_live(b) < 0)
    return NULL;
  if (b->busy) {
    PyErr_SetString(PyExc_BufferError, "the loan is being sent");
    return NULL;
  }
  if (b->exports > 0) {
    PyErr_Format(PyExc_BufferError, "cannot discard a loan while %zd buffer view(s) of it exist", b->exports);
    return NULL;
  }
  b->live = false;
  unlink_buf(b);
  give_back_or_defer(b);
  Py_RETURN_NONE;
}

static PyObject *loan_close(mp_bufobj_t *b, PyObject *noargs) {
  if (!b->live)
    Py_RETURN_NONE;
  return loan_discard(b, noargs);
}

static PyObject *loan_exit(mp_bufobj_t *b, PyObject *args) {
  if (!b->busy && exit_by_exception(b, args))
    Py_RETURN_NONE; /* discarded when its last view goes */
  return loan_close(b, NULL);
}

static PyObject *loan_repr(mp_bufobj_t *b) {
  if (!b->live)
    return PyUnicode_FromString("<memport.Loan sent or discarded>");
  return PyUnicode_FromFormat("<memport.Loan %zu bytes>", b->buf.len);
}

static PyMethodDef loan_methods[] = {
    {"send", (PyCFunction)(void (*)(void))loan_send, METH_VARARGS | METH_KEYWORDS,
     "send(timeout=None): send (publish) the loaned buffer without a copy."},
    {"discard", (PyCFunction)loan_discard, METH_NOARGS, "discard(): give the buffer back unsent."},
    {"close", (PyCFunction)loan_close, METH_NOARGS, "close(): discard() unless sent or discarded already."},
    {"__enter__", bufobj_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)loan_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef loan_getset[] = {
    {"released", (getter)bufobj_get_released, NULL, "True once sent or discarded (or its endpoint closed).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject mp_LoanType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "memport.Loan",
    .tp_basicsize = sizeof(mp_bufobj_t),
    .tp_dealloc = (destructor)bufobj_dealloc,
    .tp_repr = (reprfunc)loan_repr,
    .tp_as_sequence = &bufobj_as_sequence,
    .tp_as_buffer = &bufobj_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A writable pool buffer of exactly n bytes, to fill in place and send() without a copy.",
    .tp_methods = loan_methods,
    .tp_getset = loan_getset,
};

/* ------------------------------------------------------------------------------------------ */
/* Methods every endpoint has.                                                                 */

PyObject *mp_ep_close_meth(PyObject *self, PyObject *noargs) {
  (void)noargs;
  mp_ep_close((mp_endpoint_t *)self);
  Py_RETURN_NONE;
}

PyObject *mp_ep_enter(PyObject *self, PyObject *noargs) {
  (void)noargs;
  if (mp_ep_check((mp_endpoint_t *)self) < 0)
    return NULL;
  Py_INCREF(self);
  return self;
}

PyObject *mp_ep_exit(PyObject *self, PyObject *args) {
  (void)args;
  mp_ep_close((mp_endpoint_t *)self);
  Py_RETURN_NONE;
}

PyObject *mp_ep_get_closed(PyObject *self, void *closure) {
  (void)closure;
  return PyBool_FromLong(((mp_endpoint_t *)self)->closed);
}

PyObject *mp_ep_fileno(PyObject *self, PyObject *noargs) {
  (void)noargs;
  mp_endpoint_t *ep = (mp_endpoint_t *)self;
  if (mp_ep_check(ep) < 0)
    return NULL;
  if (ep->fd >= 0)
    return PyLong_FromLong(ep->fd);
  /* Making the handle is not thread-safe against the endpoint's other calls: take both locks. */
  mp_deadline_t dl = {true, false, 0};
  int rc = mp_ep_begin(ep, MP_RX, &dl);
  if (rc != 0)
    return mp_fail(rc, mp_ep_name(ep));
  if (ep->kind == MP_CHAN) {
    rc = mp_ep_begin(ep, MP_TX, &dl);
    if (rc != 0) {
      mp_ep_end(ep, MP_RX);
      return mp_fail(rc, mp_ep_name(ep));
    }
  }
  memport_os_handle_t h = MEMPORT_OS_HANDLE_INVALID;
  switch (ep->kind) {
  case MP_CHAN:
    rc = memport_chan_pollable(ep->h, &h);
    break;
  case MP_PUB:
    rc = memport_pub_pollable(ep->h, &h);
    break;
  default:
    rc = memport_sub_pollable(ep->h, &h);
    break;
  }
  if (rc == 0)
    ep->fd = (int)h;
  if (ep->kind == MP_CHAN)
    mp_ep_end(ep, MP_TX);
  mp_ep_end(ep, MP_RX);
  if (rc != 0)
    return mp_raise(rc);
  return PyLong_FromLong((long)h);
}

/* recv_async: a coroutine waiting on fileno() with the running asyncio loop. */
static PyObject *recv_async_fn;

static const char recv_async_src[] =
    "async def recv_async(ep, timeout=None):\n"
    "    import asyncio\n"
    "    from memport._memport import WouldBlock, Timeout, ETIMEDOUT, strerror\n"
    "    loop = asyncio.get_running_loop()\n"
    "    deadline = None if timeout is None else loop.time() + timeout\n"
    "    while True:\n"
    "        try:\n"
    "            return ep.recv(0)\n"
    "        except WouldBlock:\n"
    "            pass\n"
    "        fd = ep.fileno()\n"
    "        fut = loop.create_future()\n"
    "        def ready():\n"
    "            if not fut.done():\n"
    "                fut.set_result(None)\n"
    "        loop.add_reader(fd, ready)\n"
    "        try:\n"
    "            if deadline is None:\n"
    "                await fut\n"
    "            else:\n"
    "                left = deadline - loop.time()\n"
    "                try:\n"
    "                    if left <= 0:\n"
    "                        raise asyncio.TimeoutError\n"
    "                    await asyncio.wait_for(fut, left)\n"
    "                except asyncio.TimeoutError:\n"
    "                    e = Timeout(strerror(ETIMEDOUT))\n"
    "                    e.code = ETIMEDOUT\n"
    "                    e.name = 'MEMPORT_ETIMEDOUT'\n"
    "                    raise e from None\n"
    "        finally:\n"
    "            loop.remove_reader(fd)\n";

PyObject *mp_ep_recv_async(PyObject *self, PyObject *args, PyObject *kw) {
  static const char *kwlist[] = {"timeout", NULL};
  PyObject *timeout = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:recv_async", (char **)kwlist, &timeout))
    return NULL;
  mp_deadline_t dl;
  if (mp_parse_timeout(timeout, &dl) < 0)
    return NULL;
  if (mp_ep_check((mp_endpoint_t *)self) < 0)
    return NULL;
  return PyObject_CallFunctionObjArgs(recv_async_fn, self, timeout, NULL);
}

int mp_msg_types_ready(PyObject *m) {
  if (PyType_Ready(&mp_MessageType) < 0 || PyType_Ready(&mp_LoanType) < 0)
    return -1;
  Py_INCREF(&mp_MessageType);
  if (PyModule_AddObject(m, "Message", (PyObject *)&mp_MessageType) < 0) {
    Py_DECREF(&mp_MessageType);
    return -1;
  }
  Py_INCREF(&mp_LoanType);
  if (PyModule_AddObject(m, "Loan", (PyObject *)&mp_LoanType) < 0) {
    Py_DECREF(&mp_LoanType);
    return -1;
  }
  PyObject *globals = PyDict_New();
  if (globals == NULL)
    return -1;
  if (PyDict_SetItemString(globals, "__builtins__", PyEval_GetBuiltins()) < 0) {
    Py_DECREF(globals);
    return -1;
  }
  PyObject *r = PyRun_String(recv_async_src, Py_file_input, globals, globals);
  if (r == NULL) {
    Py_DECREF(globals);
    return -1;
  }
  Py_DECREF(r);
  recv_async_fn = PyDict_GetItemString(globals, "recv_async");
  Py_XINCREF(recv_async_fn);
  Py_DECREF(globals);
  return recv_async_fn != NULL ? 0 : -1;
}

/* ------------------------------------------------------------------------------------------ */
/* The sending calls Channel and Publisher share.                                               */

PyObject *mp_ep_send_obj(mp_endpoint_t *ep, PyObject *obj, PyObject *timeout, unsigned flags, mp_op_fn op) {
  mp_deadline_t dl;
  if (mp_parse_timeout(timeout, &dl) < 0 || mp_ep_check(ep) < 0)
    return NULL;
  Py_buffer view;
  if (PyObject_GetBuffer(obj, &view, PyBUF_C_CONTIGUOUS) < 0)
    return NULL;
  int rc = mp_ep_begin(ep, MP_TX, &dl);
  if (rc == 0) {
    mp_tx_io_t c = {ep->h, view.buf, (size_t)view.len, flags, {0}};
    mp_ep_between_t bt = {ep, MP_TX};
    rc = mp_wait(op, &c, &dl, mp_ep_between, &bt);
    mp_ep_end(ep, MP_TX);
  }
  PyBuffer_Release(&view);
  if (rc != 0)
    return mp_fail(rc, mp_ep_name(ep));
  Py_RETURN_NONE;
}

PyObject *mp_ep_loan(mp_endpoint_t *ep, PyObject *n_obj, PyObject *timeout, mp_op_fn op) {
  size_t n = 0;
  mp_deadline_t dl;
  if (n_obj == Py_None) {
    PyErr_SetString(PyExc_TypeError, "n must be an int");
    return NULL;
  }
  if (mp_size_arg(n_obj, "n", &n) < 0 || mp_parse_timeout(timeout, &dl) < 0 || mp_ep_check(ep) < 0)
    return NULL;
  int rc = mp_ep_begin(ep, MP_TX, &dl);
  if (rc != 0)
    return mp_fail(rc, mp_ep_name(ep));
  mp_tx_io_t c = {ep->h, NULL, n, 0, {0}};
  mp_ep_between_t bt = {ep, MP_TX};
  rc = mp_wait(op, &c, &dl, mp_ep_between, &bt);
  PyObject *r = NULL;
  if (rc == 0) {
    if (ep->closed) {
      (void)mp_give_back(ep, true, &c.buf);
      rc = MP_EGONE;
    } else {
      r = mp_loan_new(ep, &c.buf);
    }
  }
  mp_ep_end(ep, MP_TX);
  if (rc != 0)
    return mp_fail(rc, mp_ep_name(ep));
  return r;
}
