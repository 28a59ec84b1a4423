/* SPDX-License-Identifier: MIT */
/* _memport_region.c: the Region, Mapping, Publication and Semaphore types. */
#include "_memport.h"

#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Region.                                                                                     */

typedef struct {
  PyObject_HEAD
  memport_region_t *r;
  PyObject *weakrefs;
} mp_region_t;

typedef struct {
  PyObject_HEAD
  void *addr; /* NULL once closed */
  size_t size;
  bool readonly;
  Py_ssize_t exports;
  PyObject *weakrefs;
} mp_mapping_t;

typedef struct {
  PyObject_HEAD
  memport_publication_t *p;
  PyObject *name;
  PyObject *weakrefs;
} mp_publication_t;

static PyObject *region_wrap(PyTypeObject *type, memport_region_t *r) {
  mp_region_t *o = (mp_region_t *)type->tp_alloc(type, 0);
  if (o == NULL) {
    memport_region_close(r);
    return NULL;
  }
  o->r = r;
  return (PyObject *)o;
}

static int region_check(mp_region_t *o) {
  if (o->r == NULL) {
    mp_closed_error("Region");
    return -1;
  }
  return 0;
}

static PyObject *region_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
  static const char *kwlist[] = {"size", NULL};
  PyObject *size_obj;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O:Region", (char **)kwlist, &size_obj))
    return NULL;
  size_t size = 0;
  if (size_obj == Py_None) {
    PyErr_SetString(PyExc_TypeError, "size must be an int");
    return NULL;
  }
  if (mp_size_arg(size_obj, "size", &size) < 0)
    return NULL;
  if (size == 0) {
    PyErr_SetString(PyExc_ValueError, "size must be positive");
    return NULL;
  }
  memport_region_t *r = NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS
  rc = memport_region_create(&r, size, 0);
  Py_END_ALLOW_THREADS
  if (rc < 0)
    return mp_raise(rc);
  return region_wrap(type, r);
}

static void region_dealloc(mp_region_t *o) {
  if (o->weakrefs != NULL)
    PyObject_ClearWeakRefs((PyObject *)o);
  memport_region_close(o->r);
  Py_TYPE(o)->tp_free((PyObject *)o);
}

static PyObject *region_close(mp_region_t *o, PyObject *noargs) {
  (void)noargs;
  memport_region_t *r = o->r;
  o->r = NULL;
  memport_region_close(r);
  Py_RETURN_NONE;
}

static PyObject *region_enter(mp_region_t *o, PyObject *noargs) {
  (void)noargs;
  if (region_check(o) < 0)
    return NULL;
  Py_INCREF(o);
  return (PyObject *)o;
}

static PyObject *region_exit(mp_region_t *o, PyObject *args) {
  (void)args;
  return region_close(o, NULL);
}

static PyObject *region_get_size(mp_region_t *o, void *closure) {
  (void)closure;
  if (region_check(o) < 0)
    return NULL;
  return PyLong_FromSize_t(memport_region_size(o->r));
}

static PyObject *region_get_closed(mp_region_t *o, void *closure) {
  (void)closure;
  return PyBool_FromLong(o->r == NULL);
}

static PyObject *region_get_is_readonly(mp_region_t *o, void *closure) {
  (void)closure;
  if (region_check(o) < 0)
    return NULL;
  int rc = memport_region_is_readonly(o->r);
  if (rc < 0)
    return mp_raise(rc);
  return PyBool_FromLong(rc);
}

static PyObject *region_map(mp_region_t *o, PyObject *args, PyObject *kw) {
  static const char *kwlist[] = {"readonly", NULL};
  int readonly = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|p:map", (char **)kwlist, &readonly))
    return NULL;
  if (region_check(o) < 0)
    return NULL;
  void *addr = NULL;
  int rc = memport_region_map(o->r, readonly ? MEMPORT_MAP_READONLY : 0, &addr);
  if (rc < 0)
    return mp_raise(rc);
  mp_mapping_t *m = (mp_mapping_t *)mp_MappingType.tp_alloc(&mp_MappingType, 0);
  if (m == NULL) {
    memport_unmap(addr);
    return NULL;
  }
  m->addr = addr;
  m->size = memport_region_size(o->r);
  m->readonly = readonly != 0;
  return (PyObject *)m;
}

static PyObject *region_readonly(mp_region_t *o, PyObject *noargs) {
  (void)noargs;
  if (region_check(o) < 0)
    return NULL;
  memport_region_t *r = NULL;
  int rc = memport_region_readonly(o->r, &r);
  if (rc < 0)
    return mp_raise(rc);
  return region_wrap(Py_TYPE(o), r);
}

static PyObject *region_publish(mp_region_t *o, PyObject *args, PyObject *kw) {
  static const char *kwlist[] = {"name", NULL};
  PyObject *name_obj;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O:publish", (char **)kwlist, &name_obj))
    return NULL;
  const char *name;
  if (mp_name_arg(name_obj, &name) < 0 || region_check(o) < 0)
    return NULL;
  memport_publication_t *p = NULL;
  int rc;
  memport_region_t *r = o->r;
  Py_BEGIN_ALLOW_THREADS
  rc = memport_region_publish(&p, r, name, NULL, NULL);
  Py_END_ALLOW_THREADS
  if (rc < 0)
    return mp_raise(rc);
  mp_publication_t *po = (mp_publication_t *)mp_PublicationType.tp_alloc(&mp_PublicationType, 0);
  if (po == NULL) {
    memport_publication_close(p);
    return NULL;
  }
  po->p = p;
  Py_INCREF(name_obj);
  po->name = name_obj;
  return (PyObject *)po;
}

struct open_ctx {
  const char *name;
  memport_region_t *r;
};

static int open_op(void *ctx, int64_t t) {
  struct open_ctx *c = ctx;
  return memport_region_open(&c->r, c->name, t);
}

static PyObject *region_open(PyObject *cls, PyObject *args, PyObject *kw) {
  static const char *kwlist[] = {"name", "timeout", NULL};
  PyObject *name_obj, *timeout = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O:open", (char **)kwlist, &name_obj, &timeout))
    return NULL;
  const char *name;
  mp_deadline_t dl;
  if (mp_name_arg(name_obj, &name) < 0 || mp_parse_timeout(timeout, &dl) < 0)
    return NULL;
  struct open_ctx c = {name, NULL};
  int rc = mp_wait(open_op, &c, &dl, NULL, NULL);
  if (rc < 0)
    return mp_raise(rc);
  return region_wrap((PyTypeObject *)cls, c.r);
}

static PyObject *region_repr(mp_region_t *o) {
  if (o->r == NULL)
    return PyUnicode_FromString("<memport.Region closed>");
  return PyUnicode_FromFormat("<memport.Region %zu bytes%s>", memport_region_size(o->r),
                              memport_region_is_readonly(o->r) == 1 ? " read-only" : "");
}

static PyMethodDef region_methods[] = {
    {"map", (PyCFunction)(void (*)(void))region_map, METH_VARARGS | METH_KEYWORDS,
     "map(readonly=False) -> Mapping: map the whole region in this process."},
    {"readonly", (PyCFunction)region_readonly, METH_NOARGS,
     "readonly() -> Region: a read-only handle; afterwards nobody can map the region writable (one-way)."},
    {"publish", (PyCFunction)(void (*)(void))region_publish, METH_VARARGS | METH_KEYWORDS,
     "publish(name) -> Publication: serve the region under `name` (read-only for this user)."},
    {"open", (PyCFunction)(void (*)(void))region_open, METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "Region.open(name, timeout=None) -> Region: open a region published under `name`."},
    {"close", (PyCFunction)region_close, METH_NOARGS, "close(): close the handle (mappings stay valid)."},
    {"__enter__", (PyCFunction)region_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)region_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef region_getset[] = {
    {"size", (getter)region_get_size, NULL, "Size in bytes (a page multiple).", NULL},
    {"is_readonly", (getter)region_get_is_readonly, NULL, "True if the region can only be mapped read-only.", NULL},
    {"closed", (getter)region_get_closed, NULL, "True once closed.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject mp_RegionType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "memport.Region",
    .tp_basicsize = sizeof(mp_region_t),
    .tp_dealloc = (destructor)region_dealloc,
    .tp_repr = (reprfunc)region_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Region(size): a shareable memory object of at least size bytes (rounded up to pages), zero-filled.",
    .tp_weaklistoffset = offsetof(mp_region_t, weakrefs),
    .tp_methods = region_methods,
    .tp_getset = region_getset,
    .tp_new = region_new,
};

/* ------------------------------------------------------------------------------------------ */
/* Mapping.                                                                                    */

static int mapping_getbuffer(mp_mapping_t *m, Py_buffer *view, int flags) {
  view->obj = NULL;
  if (m->addr == NULL) {
    mp_closed_error("Mapping");
    return -1;
  }
  if (m->readonly && (flags & PyBUF_WRITABLE) == PyBUF_WRITABLE) {
    PyErr_SetString(PyExc_BufferError, "the mapping is read-only");
    return -1;
  }
  if (PyBuffer_FillInfo(view, (PyObject *)m, m->addr, (Py_ssize_t)m->size, m->readonly, flags) < 0)
    return -1;
  m->exports++;
  return 0;
}

static void mapping_releasebuffer(mp_mapping_t *m, Py_buffer *view) {
  (void)view;
  m->exports--;
}

static PyBufferProcs mapping_as_buffer = {
    (getbufferproc)mapping_getbuffer,
    (releasebufferproc)mapping_releasebuffer,
};

static void mapping_dealloc(mp_mapping_t *m) {
  if (m->weakrefs != NULL)
    PyObject_ClearWeakRefs((PyObject *)m);
  if (m->addr != NULL)
    memport_unmap(m->addr);
  Py_TYPE(m)->tp_free((PyObject *)m);
}

static PyObject *mapping_close(mp_mapping_t *m, PyObject *noargs) {
  (void)noargs;
  if (m->addr == NULL)
    Py_RETURN_NONE;
  if (m->exports > 0) {
    PyErr_Format(PyExc_BufferError, "cannot close a mapping while %zd buffer view(s) of it exist", m->exports);
    return NULL;
  }
  void *addr = m->addr;
  m->addr = NULL;
  int rc = memport_unmap(addr);
  if (rc < 0)
    return mp_raise(rc);
  Py_RETURN_NONE;
}

static PyObject *mapping_enter(mp_mapping_t *m, PyObject *noargs) {
  (void)noargs;
  if (m->addr == NULL)
    return mp_closed_error("Mapping");
  Py_INCREF(m);
  return (PyObject *)m;
}

static PyObject *mapping_exit(mp_mapping_t *m, PyObject *args) {
  (void)args;
  return mapping_close(m, NULL);
}

static Py_ssize_t mapping_len(mp_mapping_t *m) {
  if (m->addr == NULL) {
    mp_closed_error("Mapping");
    return -1;
  }
  return (Py_ssize_t)m->size;
}

static PySequenceMethods mapping_as_sequence = {
    .sq_length = (lenfunc)mapping_len,
};

static PyObject *mapping_get_size(mp_mapping_t *m, void *closure) {
  (void)closure;
  if (m->addr == NULL)
    return mp_closed_error("Mapping");
  return PyLong_FromSize_t(m->size);
}

static PyObject *mapping_get_readonly(mp_mapping_t *m, void *closure) {
  (void)closure;
  return PyBool_FromLong(m->readonly);
}

static PyObject *mapping_get_closed(mp_mapping_t *m, void *closure) {
  (void)closure;
  return PyBool_FromLong(m->addr == NULL);
}

static PyMethodDef mapping_methods[] = {
    {"close", (PyCFunction)mapping_close, METH_NOARGS, "close(): unmap (BufferError while views of it exist)."},
    {"__enter__", (PyCFunction)mapping_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)mapping_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef mapping_getset[] = {
    {"size", (getter)mapping_get_size, NULL, "Length in bytes.", NULL},
    {"readonly", (getter)mapping_get_readonly, NULL, "True for a read-only mapping.", NULL},
    {"closed", (getter)mapping_get_closed, NULL, "True once unmapped.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject mp_MappingType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "memport.Mapping",
    .tp_basicsize = sizeof(mp_mapping_t),
    .tp_dealloc = (destructor)mapping_dealloc,
    .tp_as_sequence = &mapping_as_sequence,
    .tp_as_buffer = &mapping_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A mapping of a Region in this process: a buffer (writable unless read-only).",
    .tp_weaklistoffset = offsetof(mp_mapping_t, weakrefs),
    .tp_methods = mapping_methods,
    .tp_getset = mapping_getset,
};

/* ------------------------------------------------------------------------------------------ */
/* Publication.                                                                                */

static void publication_free(mp_publication_t *p) {
  memport_publication_t *h = p->p;
  p->p = NULL;
  if (h != NULL) {
    Py_BEGIN_ALLOW_THREADS
    memport_publication_close(h);
    Py_END_ALLOW_THREADS
  }
}

static void publication_dealloc(mp_publication_t *p) {
  if (p->weakrefs != NULL)
    PyObject_ClearWeakRefs((PyObject *)p);
  publication_free(p);
  Py_XDECREF(p->name);
  Py_TYPE(p)->tp_free((PyObject *)p);
}

static PyObject *publication_close(mp_publication_t *p, PyObject *noargs) {
  (void)noargs;
  publication_free(p);
  Py_RETURN_NONE;
}

static PyObject *publication_enter(mp_publication_t *p, PyObject *noargs) {
  (void)noargs;
  if (p->p == NULL)
    return mp_closed_error("Publication");
  Py_INCREF(p);
  return (PyObject *)p;
}

static PyObject *publication_exit(mp_publication_t *p, PyObject *args) {
  (void)args;
  return publication_close(p, NULL);
}

static PyObject *publication_get_name(mp_publication_t *p, void *closure) {
  (void)closure;
  Py_INCREF(p->name);
  return p->name;
}

static PyObject *publication_get_closed(mp_publication_t *p, void *closure) {
  (void)closure;
  return PyBool_FromLong(p->p == NULL);
}

static PyMethodDef publication_methods[] = {
    {"close", (PyCFunction)publication_close, METH_NOARGS, "close(): stop serving the name (idempotent)."},
    {"__enter__", (PyCFunction)publication_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)publication_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef publication_getset[] = {
    {"name", (getter)publication_get_name, NULL, "The published name.", NULL},
    {"closed", (getter)publication_get_closed, NULL, "True once closed.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject mp_PublicationType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "memport.Publication",
    .tp_basicsize = sizeof(mp_publication_t),
    .tp_dealloc = (destructor)publication_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A region served under a name (Region.publish); close() stops serving it.",
    .tp_weaklistoffset = offsetof(mp_publication_t, weakrefs),
    .tp_methods = publication_methods,
    .tp_getset = publication_getset,
};

/* ------------------------------------------------------------------------------------------ */
/* Semaphore.                                                                                  */

typedef struct {
  PyObject_HEAD
  memport_sem_t *s;
  bool closed;
  int inflight; /* waits running without the GIL: the close waits for them */
  PyObject *weakrefs;
} mp_sem_t;

static void sem_maybe_free(mp_sem_t *o) {
  if (o->closed && o->inflight == 0 && o->s != NULL) {
    memport_sem_close(o->s);
    o->s = NULL;
  }
}

static int sem_check(mp_sem_t *o) {
  if (o->closed || o->s == NULL) {
    mp_closed_error("Semaphore");
    return -1;
  }
  return 0;
}

static PyObject *sem_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
  static const char *kwlist[] = {"value", NULL};
  PyObject *v_obj = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:Semaphore", (char **)kwlist, &v_obj))
    return NULL;
  size_t v = 0;
  if (mp_size_arg(v_obj, "value", &v) < 0)
    return NULL;
  if (v > INT32_MAX) {
    PyErr_SetString(PyExc_ValueError, "value is too large");
    return NULL;
  }
  mp_sem_t *o = (mp_sem_t *)type->tp_alloc(type, 0);
  if (o == NULL)
    return NULL;
  int rc = memport_sem_create(&o->s, (unsigned)v, 0);
  if (rc < 0) {
    o->s = NULL;
    Py_DECREF(o);
    return mp_raise(rc);
  }
  return (PyObject *)o;
}

static void sem_dealloc(mp_sem_t *o) {
  if (o->weakrefs != NULL)
    PyObject_ClearWeakRefs((PyObject *)o);
  o->closed = true;
  o->inflight = 0;
  sem_maybe_free(o);
  Py_TYPE(o)->tp_free((PyObject *)o);
}

static PyObject *sem_post(mp_sem_t *o, PyObject *noargs) {
  (void)noargs;
  if (sem_check(o) < 0)
    return NULL;
  int rc = memport_sem_signal(o->s);
  if (rc < 0)
    return mp_raise(rc);
  Py_RETURN_NONE;
}

static PyObject *sem_post_all(mp_sem_t *o, PyObject *noargs) {
  (void)noargs;
  if (sem_check(o) < 0)
    return NULL;
  int rc = memport_sem_signal_all(o->s);
  if (rc < 0)
    return mp_raise(rc);
  Py_RETURN_NONE;
}

static int sem_wait_op(void *ctx, int64_t t) {
  memport_sem_t *s = ctx;
  return t == MEMPORT_NOWAIT ? memport_sem_trywait(s) : memport_sem_wait(s, t);
}

static int sem_between(void *ctx) { return ((mp_sem_t *)ctx)->closed ? MP_EGONE : 0; }

static PyObject *sem_wait(mp_sem_t *o, PyObject *args, PyObject *kw) {
  static const char *kwlist[] = {"timeout", NULL};
  PyObject *timeout = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:wait", (char **)kwlist, &timeout))
    return NULL;
  mp_deadline_t dl;
  if (mp_parse_timeout(timeout, &dl) < 0 || sem_check(o) < 0)
    return NULL;
  o->inflight++;
  int rc = mp_wait(sem_wait_op, o->s, &dl, sem_between, o);
  o->inflight--;
  sem_maybe_free(o);
  if (rc != 0)
    return mp_fail(rc, "Semaphore");
  Py_RETURN_NONE;
}

static PyObject *sem_try_wait(mp_sem_t *o, PyObject *noargs) {
  (void)noargs;
  if (sem_check(o) < 0)
    return NULL;
  int rc = memport_sem_trywait(o->s);
  if (rc == MEMPORT_EAGAIN || rc == MEMPORT_ETIMEDOUT)
    Py_RETURN_FALSE;
  if (rc < 0)
    return mp_raise(rc);
  Py_RETURN_TRUE;
}

static PyObject *sem_close(mp_sem_t *o, PyObject *noargs) {
  (void)noargs;
  o->closed = true;
  sem_maybe_free(o);
  Py_RETURN_NONE;
}

static PyObject *sem_enter(mp_sem_t *o, PyObject *noargs) {
  (void)noargs;
  if (sem_check(o) < 0)
    return NULL;
  Py_INCREF(o);
  return (PyObject *)o;
}

static PyObject *sem_exit(mp_sem_t *o, PyObject *args) {
  (void)args;
  return sem_close(o, NULL);
}

static PyObject *sem_get_closed(mp_sem_t *o, void *closure) {
  (void)closure;
  return PyBool_FromLong(o->closed);
}

static PyMethodDef sem_methods[] = {
    {"post", (PyCFunction)sem_post, METH_NOARGS, "post(): add one to the count, waking one waiter."},
    {"post_all", (PyCFunction)sem_post_all, METH_NOARGS, "post_all(): wake every waiter now."},
    {"wait", (PyCFunction)(void (*)(void))sem_wait, METH_VARARGS | METH_KEYWORDS,
     "wait(timeout=None): take one from the count, waiting (Timeout on expiry)."},
    {"try_wait", (PyCFunction)sem_try_wait, METH_NOARGS, "try_wait() -> bool: take one if available at once."},
    {"close", (PyCFunction)sem_close, METH_NOARGS, "close() (idempotent)."},
    {"__enter__", (PyCFunction)sem_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)sem_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef sem_getset[] = {
    {"closed", (getter)sem_get_closed, NULL, "True once closed.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject mp_SemaphoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "memport.Semaphore",
    .tp_basicsize = sizeof(mp_sem_t),
    .tp_dealloc = (destructor)sem_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Semaphore(value=0): a counting semaphore shared with processes forked after its creation.",
    .tp_weaklistoffset = offsetof(mp_sem_t, weakrefs),
    .tp_methods = sem_methods,
    .tp_getset = sem_getset,
    .tp_new = sem_new,
};

static int add_type(PyObject *m, const char *name, PyTypeObject *t) {
  if (PyType_Ready(t) < 0)
    return -1;
  Py_INCREF(t);
  if (PyModule_AddObject(m, name, (PyObject *)t) < 0) {
    Py_DECREF(t);
    return -1;
  }
  return 0;
}

int mp_region_types_ready(PyObject *m) {
  if (add_type(m, "Region", &mp_RegionType) < 0 || add_type(m, "Mapping", &mp_MappingType) < 0 ||
      add_type(m, "Publication", &mp_PublicationType) < 0 || add_type(m, "Semaphore", &mp_SemaphoreType) < 0)
    return -1;
  return 0;
}
