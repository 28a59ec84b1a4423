/* SPDX-License-Identifier: MIT */
/* _memport.h: declarations shared by the source files of the memport CPython extension. */
#ifndef MEMPORT_PY_MEMPORT_H
#define MEMPORT_PY_MEMPORT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "memport.h"

/*
 * How the binding behaves (for the docs and tests):
 * - Blocking calls release the GIL and wait in slices of at most 50 ms; between slices they
 *   take the GIL back, run PyErr_CheckSignals (Ctrl-C: KeyboardInterrupt) and notice a close()
 *   made by another thread (ValueError "... is closed").
 * - Endpoints are safe to share between threads: a lock per direction (Channel: send and
 *   receive; Publisher, Subscriber: one) serialises the library calls the C API lets run one at
 *   a time. A message released (or a loan discarded) while another thread holds that lock, e.g.
 *   blocked in recv(), is given back by that thread within a slice: release() never waits.
 * - close() marks the endpoint closed at once; the library object is freed when the last call
 *   running on it returns and the last buffer view of its messages and loans is gone, so no
 *   view ever points at unmapped memory. Its live messages and loans report released.
 * - A Channel end closes in order (the peer gets Closed) if this process used it; the copy of
 *   an end this process never used (the other end of a pair, inherited through fork) just goes.
 * - Messages of more than the channel's zero-copy threshold (topic: inline_max) are views of the
 *   sender's pages; smaller ones came through the ring (topic: the queue) and are copied into
 *   the Message and given back at once, because the library holds one ring message at a time
 *   (Message.inplace tells which).
 */

/* Blocking calls wait in slices of at most this long, checking signals in between. */
#define MP_SLICE_NS 50000000LL

/* Codes of the binding itself, beside the library's negative MEMPORT_E* codes. */
#define MP_EPYERR  (INT_MIN)     /* a Python exception is set (a signal handler raised) */
#define MP_EGONE   (INT_MIN + 1) /* the object was closed (by another thread) while the call waited */

/* ------------------------------------------------------------------------------------------ */
/* Deadlines and slices (_memport.c).                                                          */

typedef struct mp_deadline {
  bool forever;
  bool nowait; /* timeout=0: one call with MEMPORT_NOWAIT */
  int64_t at;  /* absolute, monotonic nanoseconds (unless forever) */
} mp_deadline_t;

int64_t mp_now_ns(void);
/* This process's id, kept up to date across fork (no system call). */
extern pid_t mp_pid;
/* Parse a timeout argument (None, or seconds as int/float >= 0); -1 with an exception set. */
int mp_parse_timeout(PyObject *obj, mp_deadline_t *dl);
/* The next slice of a wait: at most MP_SLICE_NS, 0 when the deadline has passed. */
int64_t mp_slice_ns(const mp_deadline_t *dl);
bool mp_expired(const mp_deadline_t *dl);

/* An operation run without the GIL with a relative timeout; returns 0 or a MEMPORT_E* code. */
typedef int (*mp_op_fn)(void *ctx, int64_t timeout_ns);
/* Called with the GIL between slices; 0 to go on, or a code to stop with. */
typedef int (*mp_between_fn)(void *ctx);
/* Run `op` in slices until it returns anything but MEMPORT_ETIMEDOUT, or the deadline passes
 * (then MEMPORT_ETIMEDOUT, or the call's own code for timeout=0). Checks signals between slices
 * (MP_EPYERR). Must be called with the GIL held. */
int mp_wait(mp_op_fn op, void *ctx, const mp_deadline_t *dl, mp_between_fn between, void *bctx);
/* Sleep without the GIL until `op` succeeds: for calls that fail at once while a thing is absent
 * (`retry(rc)` says which codes mean "try again"). */
int mp_retry(mp_op_fn op, void *ctx, const mp_deadline_t *dl, bool (*retry)(int rc), mp_between_fn between,
             void *bctx);
/* Take `lock`, waiting in slices (MEMPORT_EAGAIN for timeout=0 when it is held). */
int mp_lock(PyThread_type_lock lock, const mp_deadline_t *dl, mp_between_fn between, void *bctx);

/* ------------------------------------------------------------------------------------------ */
/* Errors (_memport.c).                                                                        */

extern PyObject *mp_Error, *mp_Timeout, *mp_WouldBlock, *mp_PeerGone, *mp_Closed, *mp_NotFound,
    *mp_PermissionDenied, *mp_ProtocolError, *mp_MessageTooLarge;

/* Raise the exception of a MEMPORT_E* code (or pass MP_EPYERR through); returns NULL. */
PyObject *mp_raise(int err);
/* As mp_raise, with MP_EGONE reported as ValueError("<what> is closed"). */
PyObject *mp_fail(int err, const char *what);
PyObject *mp_closed_error(const char *what);

/* ------------------------------------------------------------------------------------------ */
/* Argument helpers (_memport.c).                                                              */

/* A size argument: an int >= 0 (TypeError / ValueError otherwise); None keeps *out. */
int mp_size_arg(PyObject *obj, const char *what, size_t *out);
/* A memport name: str of 1..MEMPORT_NAME_MAX bytes of [A-Za-z0-9._-], not starting with '.' or
 * '-'. *out points into `obj`'s UTF-8 cache. */
int mp_name_arg(PyObject *obj, const char **out);
/* A wait policy: "block", "spin" or "adaptive" (None keeps *out). */
int mp_wait_arg(PyObject *obj, int *out);

/* ------------------------------------------------------------------------------------------ */
/* Endpoints: Channel, Publisher, Subscriber (_memport_msg.c holds their common part).         */

enum { MP_CHAN = 1, MP_PUB = 2, MP_SUB = 3 };
enum { MP_RX = 0, MP_TX = 1 };

struct mp_bufobj;

typedef struct mp_pending {
  memport_buf_t *bufs;
  size_t n, cap;
} mp_pending_t;

typedef struct mp_endpoint {
  PyObject_HEAD
  int kind;
  void *h;                    /* memport_chan_t / memport_pub_t / memport_sub_t; NULL once freed */
  bool closed;                /* closed for Python: every call raises ValueError */
  int inflight;               /* calls running (the C close waits for them) */
  Py_ssize_t exports;         /* buffer views exported by this endpoint's messages and loans */
  PyThread_type_lock lock[2]; /* per direction (MP_RX, MP_TX); the same lock twice for pub/sub */
  mp_pending_t pending[2];    /* give-backs that found the lock taken, done by its holder */
  struct mp_bufobj *live;     /* messages and loans not yet released, sent or discarded */
  uint64_t ring_seen;         /* topics: small (copied) messages received so far, per the subscriber's counters */
  int fd;                     /* the pollable handle once asked for, else -1 */
  pid_t used_pid;             /* Channel: the process that last made a call on it (0: none) */
  struct mp_endpoint *pub_next, *pub_prev; /* Publisher: in this process's list (_memport_topic.c) */
  bool pub_listed;
  pid_t pub_owner;            /* Publisher: the process that made it */
  PyObject *weakrefs;
} mp_endpoint_t;

typedef struct mp_bufobj {
  PyObject_HEAD
  mp_endpoint_t *ep; /* strong reference */
  struct mp_bufobj *prev, *next;
  memport_buf_t buf;
  void *copy;  /* a private copy (small messages): no library buffer to give back */
  bool live;   /* false once released / sent / discarded / its endpoint closed */
  bool linked; /* in ep->live */
  bool loan;
  bool busy;   /* a loan being sent (without the GIL) */
  bool release_at_last_view; /* a with block left by an exception while views existed */
  Py_ssize_t exports; /* buffer views; those of library memory (no copy) also count in ep->exports */
} mp_bufobj_t;

extern PyTypeObject mp_MessageType, mp_LoanType, mp_ChannelType, mp_PublisherType, mp_SubscriberType,
    mp_ServiceType, mp_RegionType, mp_MappingType, mp_PublicationType, mp_SemaphoreType;

const char *mp_ep_name(const mp_endpoint_t *ep);
/* A Publisher closed or freed leaves this process's list of Publishers (_memport_topic.c). */
void mp_pub_unlist(mp_endpoint_t *ep);
/* Initialise the common part of a new endpoint (locks); -1 with an exception set. */
int mp_ep_init(mp_endpoint_t *ep, int kind);
/* ValueError unless open; 0 if open. */
int mp_ep_check(mp_endpoint_t *ep);
/* Mark closed; the library object is freed now or when the last call or view is gone. */
void mp_ep_close(mp_endpoint_t *ep);
/* Free the library object if closed and nothing uses it any more. */
void mp_ep_maybe_free(mp_endpoint_t *ep);
void mp_ep_dealloc_common(mp_endpoint_t *ep);

/* A call on direction `dir`: begin (inflight++, take the lock), end (give-backs left to this
 * holder, unlock, inflight--). mp_ep_begin returns 0 or a code (lock not taken then). */
int mp_ep_begin(mp_endpoint_t *ep, int dir, const mp_deadline_t *dl);
void mp_ep_end(mp_endpoint_t *ep, int dir);
/* The `between` callback for waits of a call holding direction `dir` (ctx: mp_ep_between_t). */
typedef struct mp_ep_between {
  mp_endpoint_t *ep;
  int dir;
} mp_ep_between_t;
int mp_ep_between(void *ctx);

/* Make a Message for a buffer just received (the caller holds the receive lock). A small
 * message (not `inplace`) is copied and given back at once. */
PyObject *mp_message_new(mp_endpoint_t *ep, const memport_buf_t *buf, bool inplace);
/* Make a Loan for a buffer just allocated. */
PyObject *mp_loan_new(mp_endpoint_t *ep, const memport_buf_t *buf);

/* What a sending call of a Channel or a Publisher works on: the library handle, the bytes (send)
 * or the size (loan), the flags, and the buffer a loan gets. */
typedef struct mp_tx_io {
  void *h;
  const void *data;
  size_t len;
  unsigned flags;
  memport_buf_t buf;
} mp_tx_io_t;
/* send(obj, timeout) of a Channel or Publisher: the bytes of obj (any C-contiguous buffer) through
 * op (given an mp_tx_io_t), in the sending direction; None, or NULL with the exception set. */
PyObject *mp_ep_send_obj(mp_endpoint_t *ep, PyObject *obj, PyObject *timeout, unsigned flags, mp_op_fn op);
/* loan(n, timeout): a Loan of the buffer op (given an mp_tx_io_t) takes; given back at once if the
 * endpoint was closed meanwhile. */
PyObject *mp_ep_loan(mp_endpoint_t *ep, PyObject *n_obj, PyObject *timeout, mp_op_fn op);
/* Give a library buffer back now (the caller holds the lock of its direction). */
int mp_give_back(mp_endpoint_t *ep, bool loan, memport_buf_t *buf);

/* Methods and attributes every endpoint type has. */
PyObject *mp_ep_close_meth(PyObject *self, PyObject *noargs);
PyObject *mp_ep_enter(PyObject *self, PyObject *noargs);
PyObject *mp_ep_exit(PyObject *self, PyObject *args);
PyObject *mp_ep_fileno(PyObject *self, PyObject *noargs);
PyObject *mp_ep_recv_async(PyObject *self, PyObject *args, PyObject *kw);
PyObject *mp_ep_get_closed(PyObject *self, void *closure);
#define MP_EP_COMMON_METHODS                                                                                     \
  {"close", mp_ep_close_meth, METH_NOARGS, "close(): close (idempotent; also at the end of a with block)."},           \
      {"fileno", mp_ep_fileno, METH_NOARGS, "fileno() -> int: the pollable handle (level-triggered readiness)."}, \
      {"__enter__", mp_ep_enter, METH_NOARGS, NULL}, {"__exit__", mp_ep_exit, METH_VARARGS, NULL}

/* Module parts. */
int mp_msg_types_ready(PyObject *m);
int mp_chan_types_ready(PyObject *m);
int mp_topic_types_ready(PyObject *m);
int mp_region_types_ready(PyObject *m);

#endif
