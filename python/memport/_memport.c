/* SPDX-License-Identifier: MIT */
/* _memport.c: the memport._memport module: exceptions, timeouts, sliced waits, argument checks, names(). */
#include "_memport.h"

#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

PyObject *mp_Error, *mp_Timeout, *mp_WouldBlock, *mp_PeerGone, *mp_Closed, *mp_NotFound, *mp_PermissionDenied,
    *mp_ProtocolError, *mp_MessageTooLarge;

pid_t mp_pid;

static void after_fork_child(void) { mp_pid = getpid(); }

/* ------------------------------------------------------------------------------------------ */
/* Time.                                                                                       */

int64_t mp_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int mp_parse_timeout(PyObject *obj, mp_deadline_t *dl) {
  dl->forever = false;
  dl->nowait = false;
  dl->at = 0;
  if (obj == NULL || obj == Py_None) {
    dl->forever = true;
    return 0;
  }
  if (!PyLong_Check(obj) && !PyFloat_Check(obj)) {
    PyErr_Format(PyExc_TypeError, "timeout must be None or a number of seconds, not %.100s", Py_TYPE(obj)->tp_name);
    return -1;
  }
  double s = PyFloat_AsDouble(obj);
  if (s == -1.0 && PyErr_Occurred())
    return -1;
  if (s != s || s < 0) {
    PyErr_SetString(PyExc_ValueError, "timeout must be None or a number of seconds >= 0");
    return -1;
  }
  if (s == 0) {
    dl->nowait = true;
    dl->at = mp_now_ns();
    return 0;
  }
  if (s > 1e9) { /* over 30 years: for ever */
    dl->forever = true;
    return 0;
  }
  int64_t ns = (int64_t)(s * 1e9);
  dl->at = mp_now_ns() + (ns > 0 ? ns : 1);
  return 0;
}

int64_t mp_slice_ns(const mp_deadline_t *dl) {
  if (dl->forever)
    return MP_SLICE_NS;
  if (dl->nowait)
    return MEMPORT_NOWAIT;
  int64_t left = dl->at - mp_now_ns();
  if (left <= 0)
    return 0;
  return left < MP_SLICE_NS ? left : MP_SLICE_NS;
}

bool mp_expired(const mp_deadline_t *dl) { return !dl->forever && (dl->nowait || mp_now_ns() >= dl->at); }

int mp_wait(mp_op_fn op, void *ctx, const mp_deadline_t *dl, mp_between_fn between, void *bctx) {
  for (;;) {
    int64_t t = mp_slice_ns(dl);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = op(ctx, t);
    Py_END_ALLOW_THREADS
    if (rc != MEMPORT_ETIMEDOUT && !(rc == MEMPORT_EAGAIN && t == 0 && !dl->nowait))
      return rc;
    if (mp_expired(dl))
      return dl->nowait ? rc : MEMPORT_ETIMEDOUT;
    if (PyErr_CheckSignals() < 0)
      return MP_EPYERR;
    if (between != NULL && (rc = between(bctx)) != 0)
      return rc;
  }
}

int mp_retry(mp_op_fn op, void *ctx, const mp_deadline_t *dl, bool (*retry)(int rc), mp_between_fn between,
             void *bctx) {
  for (;;) {
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = op(ctx, MEMPORT_NOWAIT);
    Py_END_ALLOW_THREADS
    if (rc == 0 || !retry(rc) || mp_expired(dl))
      return rc;
    int64_t t = mp_slice_ns(dl);
    if (t > 10000000)
      t = 10000000; /* look again every 10 ms */
    struct timespec ts = {0, (long)t};
    Py_BEGIN_ALLOW_THREADS
    nanosleep(&ts, NULL);
    Py_END_ALLOW_THREADS
    if (PyErr_CheckSignals() < 0)
      return MP_EPYERR;
    if (between != NULL && (rc = between(bctx)) != 0)
      return rc;
  }
}

static int lock_op(void *ctx, int64_t timeout_ns) {
  PY_TIMEOUT_T us = timeout_ns <= 0 ? 0 : (PY_TIMEOUT_T)(timeout_ns / 1000);
  return PyThread_acquire_lock_timed((PyThread_type_lock)ctx, us, 0) == PY_LOCK_ACQUIRED ? 0 : MEMPORT_ETIMEDOUT;
}

int mp_lock(PyThread_type_lock lock, const mp_deadline_t *dl, mp_between_fn between, void *bctx) {
  if (PyThread_acquire_lock(lock, NOWAIT_LOCK))
    return 0;
  if (dl->nowait)
    return MEMPORT_EAGAIN;
  if (PyErr_CheckSignals() < 0)
    return MP_EPYERR;
  if (between != NULL) {
    int rc = between(bctx);
    if (rc != 0)
      return rc;
  }
  return mp_wait(lock_op, lock, dl, between, bctx);
}

/* ------------------------------------------------------------------------------------------ */
/* Errors.                                                                                     */

static PyObject *error_type(int err) {
  switch (err) {
  case MEMPORT_ETIMEDOUT:
    return mp_Timeout;
  case MEMPORT_EAGAIN:
    return mp_WouldBlock;
  case MEMPORT_EPEER:
    return mp_PeerGone;
  case MEMPORT_ECLOSED:
    return mp_Closed;
  case MEMPORT_ENOENT:
    return mp_NotFound;
  case MEMPORT_EPERM:
  case MEMPORT_EACCES:
    return mp_PermissionDenied;
  case MEMPORT_EPROTO:
    return mp_ProtocolError;
  case MEMPORT_EMSGSIZE:
    return mp_MessageTooLarge;
  default:
    return mp_Error;
  }
}

PyObject *mp_raise(int err) {
  if (err == MP_EPYERR) {
    if (!PyErr_Occurred())
      PyErr_SetString(PyExc_SystemError, "memport: lost exception");
    return NULL;
  }
  if (err == MP_EGONE)
    return mp_closed_error("object");
  if (err == MEMPORT_ENOMEM)
    return PyErr_NoMemory();
  PyObject *type = error_type(err);
  PyObject *exc = PyObject_CallFunction(type, "s", memport_strerror(err));
  if (exc == NULL)
    return NULL;
  PyObject *code = PyLong_FromLong(err);
  PyObject *name = PyUnicode_FromString(memport_err_name(err));
  if (code == NULL || name == NULL || PyObject_SetAttrString(exc, "code", code) < 0 ||
      PyObject_SetAttrString(exc, "name", name) < 0) {
    Py_XDECREF(code);
    Py_XDECREF(name);
    Py_DECREF(exc);
    return NULL;
  }
  Py_DECREF(code);
  Py_DECREF(name);
  if (PyObject_IsInstance(exc, PyExc_OSError) == 1) { /* errno as OSError has it; str() stays the text */
    PyObject *en = PyLong_FromLong(-err);
    if (en == NULL || PyObject_SetAttrString(exc, "errno", en) < 0)
      PyErr_Clear();
    Py_XDECREF(en);
  }
  PyErr_SetObject(type, exc);
  Py_DECREF(exc);
  return NULL;
}

PyObject *mp_closed_error(const char *what) {
  PyErr_Format(PyExc_ValueError, "%s is closed", what);
  return NULL;
}

PyObject *mp_fail(int err, const char *what) {
  if (err == MP_EGONE)
    return mp_closed_error(what);
  return mp_raise(err);
}

/* ------------------------------------------------------------------------------------------ */
/* Arguments.                                                                                  */

int mp_size_arg(PyObject *obj, const char *what, size_t *out) {
  if (obj == NULL || obj == Py_None)
    return 0;
  if (!PyLong_Check(obj) || PyBool_Check(obj)) {
    PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s", what, Py_TYPE(obj)->tp_name);
    return -1;
  }
  int overflow = 0;
  long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
  if (v == -1 && PyErr_Occurred())
    return -1;
  if (overflow < 0 || (overflow == 0 && v < 0)) {
    PyErr_Format(PyExc_ValueError, "%s must not be negative", what);
    return -1;
  }
  if (overflow > 0 || (unsigned long long)v > (unsigned long long)PY_SSIZE_T_MAX) {
    PyErr_Format(PyExc_ValueError, "%s is too large", what);
    return -1;
  }
  *out = (size_t)v;
  return 0;
}

int mp_name_arg(PyObject *obj, const char **out) {
  if (!PyUnicode_Check(obj)) {
    PyErr_Format(PyExc_TypeError, "name must be a str, not %.100s", Py_TYPE(obj)->tp_name);
    return -1;
  }
  Py_ssize_t len;
  const char *s = PyUnicode_AsUTF8AndSize(obj, &len);
  if (s == NULL)
    return -1;
  if (len == 0 || len > MEMPORT_NAME_MAX) {
    PyErr_Format(PyExc_ValueError, "a name has 1 to %d bytes", MEMPORT_NAME_MAX);
    return -1;
  }
  for (Py_ssize_t i = 0; i < len; i++) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-';
    if (!ok || (i == 0 && (c == '.' || c == '-'))) {
      PyErr_SetString(PyExc_ValueError, "a name is made of [A-Za-z0-9._-] and starts with neither '.' nor '-'");
      return -1;
    }
  }
  *out = s;
  return 0;
}

int mp_wait_arg(PyObject *obj, int *out) {
  if (obj == NULL || obj == Py_None)
    return 0;
  if (!PyUnicode_Check(obj)) {
    PyErr_Format(PyExc_TypeError, "wait must be a str, not %.100s", Py_TYPE(obj)->tp_name);
    return -1;
  }
  if (PyUnicode_CompareWithASCIIString(obj, "block") == 0)
    *out = MEMPORT_WAIT_BLOCK;
  else if (PyUnicode_CompareWithASCIIString(obj, "spin") == 0)
    *out = MEMPORT_WAIT_SPIN;
  else if (PyUnicode_CompareWithASCIIString(obj, "adaptive") == 0)
    *out = MEMPORT_WAIT_ADAPTIVE;
  else {
    PyErr_SetString(PyExc_ValueError, "wait must be \"block\", \"spin\" or \"adaptive\"");
    return -1;
  }
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* names()                                                                                     */

static int name_cb(const memport_name_info_t *info, void *arg) {
  PyObject *list = arg;
  const char *kind = info->kind == MEMPORT_NAME_SERVICE  ? "service"
                     : info->kind == MEMPORT_NAME_REGION ? "region"
                     : info->kind == MEMPORT_NAME_TOPIC  ? "topic"
                                                         : "unknown";
  char name[MEMPORT_NAME_MAX + 1];
  memcpy(name, info->name, sizeof name);
  name[MEMPORT_NAME_MAX] = '\0';
  PyObject *d = Py_BuildValue("{s:s,s:s,s:l,s:k,s:k,s:k}", "name", name, "kind", kind, "pid", (long)info->owner.pid,
                              "uid", (unsigned long)info->owner.uid, "gid", (unsigned long)info->owner.gid,
                              "subscribers", (unsigned long)info->subscribers);
  if (d == NULL)
    return 1;
  int rc = PyList_Append(list, d);
  Py_DECREF(d);
  return rc < 0 ? 1 : 0;
}

static PyObject *mp_names(PyObject *self, PyObject *noargs) {
  (void)self;
  (void)noargs;
  PyObject *list = PyList_New(0);
  if (list == NULL)
    return NULL;
  int rc = memport_name_foreach(name_cb, list);
  if (rc == 1 && PyErr_Occurred()) {
    Py_DECREF(list);
    return NULL;
  }
  if (rc < 0) {
    Py_DECREF(list);
    return mp_raise(rc);
  }
  return list;
}

static PyObject *mp_strerror(PyObject *self, PyObject *arg) {
  (void)self;
  int overflow = 0;
  long v = PyLong_Check(arg) ? PyLong_AsLongAndOverflow(arg, &overflow) : 0;
  if (!PyLong_Check(arg)) {
    PyErr_SetString(PyExc_TypeError, "code must be an int");
    return NULL;
  }
  if (v == -1 && PyErr_Occurred())
    return NULL;
  if (overflow || v < INT_MIN || v > INT_MAX)
    v = INT_MIN;
  return PyUnicode_FromString(memport_strerror((int)v));
}

static PyMethodDef module_methods[] = {
    {"names", mp_names, METH_NOARGS,
     "names() -> list of dicts {name, kind, pid, uid, gid, subscribers}: the live memport names of this user."},
    {"strerror", mp_strerror, METH_O, "strerror(code) -> str: the description of a MEMPORT_E* code."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "memport._memport",
    "memport: zero-copy messaging between processes (C extension; see the memport package).", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

static int add_exc(PyObject *m, PyObject **slot, const char *name, PyObject *bases, const char *doc) {
  char full[64];
  snprintf(full, sizeof full, "memport.%s", name);
  *slot = PyErr_NewExceptionWithDoc(full, doc, bases, NULL);
  if (*slot == NULL)
    return -1;
  Py_INCREF(*slot);
  if (PyModule_AddObject(m, name, *slot) < 0) {
    Py_DECREF(*slot);
    return -1;
  }
  return 0;
}

static int add_sub(PyObject *m, PyObject **slot, const char *name, PyObject *builtin, const char *doc) {
  PyObject *bases = builtin != NULL ? PyTuple_Pack(2, mp_Error, builtin) : PyTuple_Pack(1, mp_Error);
  if (bases == NULL)
    return -1;
  int rc = add_exc(m, slot, name, bases, doc);
  Py_DECREF(bases);
  return rc;
}

static int add_code(PyObject *m, const char *name, int code) { return PyModule_AddIntConstant(m, name, code); }

PyMODINIT_FUNC PyInit__memport(void);
PyMODINIT_FUNC PyInit__memport(void) {
  PyObject *m = PyModule_Create(&module_def);
  if (m == NULL)
    return NULL;
  mp_pid = getpid();
  static bool atfork_done;
  if (!atfork_done && pthread_atfork(NULL, NULL, after_fork_child) == 0)
    atfork_done = true;
  if (add_exc(m, &mp_Error, "Error", NULL,
              "A memport call failed: .code is the negative MEMPORT_E* value, .name its name, str() the "
              "description.") < 0 ||
      add_sub(m, &mp_Timeout, "Timeout", PyExc_TimeoutError, "The timeout expired (MEMPORT_ETIMEDOUT).") < 0 ||
      add_sub(m, &mp_WouldBlock, "WouldBlock", PyExc_BlockingIOError,
              "Nothing available right now, with timeout=0 (MEMPORT_EAGAIN).") < 0 ||
      add_sub(m, &mp_PeerGone, "PeerGone", PyExc_ConnectionError,
              "The peer died or went away without closing (MEMPORT_EPEER).") < 0 ||
      add_sub(m, &mp_Closed, "Closed", NULL, "The peer closed in order (MEMPORT_ECLOSED).") < 0 ||
      add_sub(m, &mp_NotFound, "NotFound", PyExc_FileNotFoundError, "No such name (MEMPORT_ENOENT).") < 0 ||
      add_sub(m, &mp_PermissionDenied, "PermissionDenied", PyExc_PermissionError,
              "Not allowed (MEMPORT_EPERM, MEMPORT_EACCES).") < 0 ||
      add_sub(m, &mp_ProtocolError, "ProtocolError", NULL, "The peer broke the protocol (MEMPORT_EPROTO).") < 0 ||
      add_sub(m, &mp_MessageTooLarge, "MessageTooLarge", PyExc_ValueError,
              "Message too large for this path (MEMPORT_EMSGSIZE).") < 0)
    goto fail;
  /* Errors made by Python code (not by the library) have no code. */
  if (PyObject_SetAttrString(mp_Error, "code", Py_None) < 0 || PyObject_SetAttrString(mp_Error, "name", Py_None) < 0)
    goto fail;
  if (PyModule_AddStringConstant(m, "version", memport_version_string()) < 0 ||
      add_code(m, "EPERM", MEMPORT_EPERM) < 0 || add_code(m, "ENOENT", MEMPORT_ENOENT) < 0 ||
      add_code(m, "EAGAIN", MEMPORT_EAGAIN) < 0 || add_code(m, "EINVAL", MEMPORT_EINVAL) < 0 ||
      add_code(m, "EBUSY", MEMPORT_EBUSY) < 0 || add_code(m, "EACCES", MEMPORT_EACCES) < 0 ||
      add_code(m, "EEXIST", MEMPORT_EEXIST) < 0 || add_code(m, "ENOSPC", MEMPORT_ENOSPC) < 0 ||
      add_code(m, "EPEER", MEMPORT_EPEER) < 0 || add_code(m, "EPROTO", MEMPORT_EPROTO) < 0 ||
      add_code(m, "EMSGSIZE", MEMPORT_EMSGSIZE) < 0 || add_code(m, "ETIMEDOUT", MEMPORT_ETIMEDOUT) < 0 ||
      add_code(m, "ECLOSED", MEMPORT_ECLOSED) < 0)
    goto fail;
  if (mp_msg_types_ready(m) < 0 || mp_chan_types_ready(m) < 0 || mp_topic_types_ready(m) < 0 ||
      mp_region_types_ready(m) < 0)
    goto fail;
  return m;
fail:
  Py_DECREF(m);
  return NULL;
}
