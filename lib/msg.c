/* SPDX-License-Identifier: MIT */
/* lib/msg.c: message objects: a preallocated byte buffer plus up to MEMPORT_MSG_MAX_HANDLES owned handles. */
#include "config.h"

#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* Close one handle object of the given kind (the message owns it). */
static void handle_close(int kind, void *object) {
  switch (kind) {
  case MEMPORT_HANDLE_REGION:
    memport_region_close(object);
    break;
  case MEMPORT_HANDLE_SEM:
    memport_sem_close(object);
    break;
  case MEMPORT_HANDLE_PORT:
    memport_port_close(object);
    break;
  default:
    break;
  }
}

int memport__msg_push(memport_msg_t *msg, int kind, void *object) {
  if (msg->nhandles >= MEMPORT_MSG_MAX_HANDLES) {
    handle_close(kind, object);
    return MEMPORT_ENOSPC;
  }
  struct memport__handle *h = &msg->handles[msg->nhandles++];
  h->kind = kind;
  switch (kind) {
  case MEMPORT_HANDLE_REGION:
    h->u.region = object;
    break;
  case MEMPORT_HANDLE_SEM:
    h->u.sem = object;
    break;
  default:
    h->u.port = object;
    break;
  }
  return 0;
}

static void *handle_object(const struct memport__handle *h) {
  switch (h->kind) {
  case MEMPORT_HANDLE_REGION:
    return h->u.region;
  case MEMPORT_HANDLE_SEM:
    return h->u.sem;
  case MEMPORT_HANDLE_PORT:
    return h->u.port;
  default:
    return NULL;
  }
}

void memport__msg_drop_handles(memport_msg_t *msg) {
  for (size_t i = 0; i < msg->nhandles; i++) {
    struct memport__handle *h = &msg->handles[i];
    handle_close(h->kind, handle_object(h));
    h->kind = 0;
    h->u.port = NULL;
  }
  msg->nhandles = 0;
}

void memport__handles_close(struct memport__handle *h, size_t n) {
  for (size_t i = 0; i < n; i++) {
    handle_close(h[i].kind, handle_object(&h[i]));
    h[i].kind = 0;
    h[i].u.port = NULL;
  }
}

/* Make the object of one raw received handle: portable fields from the record, the rest by the
 * backend. NULL with *err set on failure; the raw handle then still owns its OS handles. */
static void *object_from_raw(const struct memport__raw_handle *rh, const memport_cred_t *sender, int *err) {
  void *obj;
  switch (rh->kind) {
  case MEMPORT_HANDLE_REGION: {
    memport_region_t *r = calloc(1, sizeof *r);
    if (r != NULL) {
      r->handle = rh->h[0];
      r->size = rh->size;
      r->readonly = rh->readonly;
    }
    obj = r;
    break;
  }
  case MEMPORT_HANDLE_SEM: {
    memport_sem_t *s = calloc(1, sizeof *s);
    if (s != NULL)
      s->handle = rh->h[0];
    obj = s;
    break;
  }
  case MEMPORT_HANDLE_PORT: {
    memport_port_t *p = memport__port_alloc();
    if (p != NULL) {
      p->rx = rh->h[0];
      p->tx = rh->h[1];
      p->peer = *sender; /* the process that handed the port over (a backend may know better) */
    }
    obj = p;
    break;
  }
  default:
    *err = MEMPORT_EPROTO; /* backends deliver only the three kinds */
    return NULL;
  }
  if (obj == NULL) {
    *err = MEMPORT_ENOMEM;
    return NULL;
  }
  int rc = memport__os_recv_finish(rh->kind, obj);
  if (rc != 0) {
    free(obj);
    *err = rc;
    return NULL;
  }
  return obj;
}

int memport__msg_recv(memport_port_t *p, memport_msg_t *msg, uint64_t deadline) {
  /* On the stack: no allocation per message beyond the objects themselves. */
  struct memport__raw_msg raw;
  raw.len = 0;
  raw.nhandles = 0;
  int rc = memport__os_port_recv(p, msg, &raw, deadline);
  if (rc != 0)
    return rc; /* the backend released whatever came */
  if (raw.len > MEMPORT_MSG_MAX_BYTES || raw.nhandles > MEMPORT_MSG_MAX_HANDLES) {
    rc = MEMPORT_EPROTO; /* cannot happen with a correct backend; never trust it blindly */
    raw.nhandles = raw.nhandles > MEMPORT_MSG_MAX_HANDLES ? MEMPORT_MSG_MAX_HANDLES : raw.nhandles;
    for (size_t i = 0; i < raw.nhandles; i++)
      memport__os_recv_release(&raw.handles[i]);
    return rc;
  }
  /* All or nothing: once one object cannot be made, the objects made so far are closed and the
   * raw handles not yet taken are released. */
  for (size_t i = 0; i < raw.nhandles; i++) {
    void *obj = object_from_raw(&raw.handles[i], &raw.sender, &rc);
    size_t next = i; /* the first raw handle no object owns */
    if (obj != NULL) {
      next = i + 1;
      rc = memport__msg_push(msg, raw.handles[i].kind, obj); /* closes obj when msg is full */
    }
    if (rc != 0) {
      for (size_t k = next; k < raw.nhandles; k++)
        memport__os_recv_release(&raw.handles[k]);
      memport__msg_drop_handles(msg);
      return rc;
    }
  }
  msg->len = raw.len;
  msg->sender = raw.sender;
  msg->has_sender = true;
  return 0;
}

int memport_msg_create(memport_msg_t **out) {
  if (out == NULL)
    return MEMPORT_EINVAL;
  memport_msg_t *m = calloc(1, sizeof *m);
  if (m == NULL)
    return MEMPORT_ENOMEM;
  m->bytes = malloc(MEMPORT_MSG_MAX_BYTES);
  if (m->bytes == NULL) {
    free(m);
    return MEMPORT_ENOMEM;
  }
  *out = m;
  return 0;
}

int memport_msg_close(memport_msg_t *msg) {
  if (msg == NULL)
    return 0;
  memport__msg_drop_handles(msg);
  memport__os_msg_free(msg);
  free(msg->bytes);
  free(msg);
  return 0;
}

int memport_msg_clear(memport_msg_t *msg) {
  if (msg == NULL)
    return MEMPORT_EINVAL;
  memport__msg_drop_handles(msg);
  msg->len = 0;
  msg->has_sender = false;
  memset(&msg->sender, 0, sizeof msg->sender);
  return 0;
}

int memport_msg_set_bytes(memport_msg_t *msg, const void *data, size_t len) {
  if (msg == NULL || (data == NULL && len != 0))
    return MEMPORT_EINVAL;
  if (len > MEMPORT_MSG_MAX_BYTES)
    return MEMPORT_EMSGSIZE;
  if (len != 0)
    memmove(msg->bytes, data, len); /* data may point into the message itself */
  msg->len = len;
  return 0;
}

const void *memport_msg_bytes(const memport_msg_t *msg, size_t *len) {
  if (msg == NULL) {
    if (len != NULL)
      *len = 0;
    return NULL;
  }
  if (len != NULL)
    *len = msg->len;
  return msg->bytes;
}

/* Common rules of the attach functions: a moved handle belongs to the message from the call on,
 * so every early failure closes it. */
static int attach_check(memport_msg_t *msg, void *object, int kind, unsigned flags) {
  if (object == NULL)
    return MEMPORT_EINVAL;
  if (msg == NULL || (flags & ~MEMPORT_ATTACH_COPY) != 0) {
    if (!(flags & MEMPORT_ATTACH_COPY))
      handle_close(kind, object);
    return MEMPORT_EINVAL;
  }
  if (flags & MEMPORT_ATTACH_COPY) {
    if (msg->nhandles >= MEMPORT_MSG_MAX_HANDLES)
      return MEMPORT_ENOSPC; /* do not make a copy only to close it again */
    return 1;
  }
  /* Moving a handle the message already owns would close it twice later: refuse, and leave it
   * where it is (still owned by the message). */
  for (size_t i = 0; i < msg->nhandles; i++)
    if (msg->handles[i].kind == kind && handle_object(&msg->handles[i]) == object)
      return MEMPORT_EINVAL;
  return 1;
}

int memport_msg_attach_region(memport_msg_t *msg, memport_region_t *region, unsigned flags) {
  int rc = attach_check(msg, region, MEMPORT_HANDLE_REGION, flags);
  if (rc <= 0)
    return rc;
  if (flags & MEMPORT_ATTACH_COPY) {
    memport_region_t *copy = NULL;
    /* A copy of a read-only handle is read-only too. */
    rc = memport_region_dup(region, region->readonly ? MEMPORT_DUP_READONLY : 0, &copy);
    if (rc != 0)
      return rc;
    region = copy;
  }
  return memport__msg_push(msg, MEMPORT_HANDLE_REGION, region);
}

int memport_msg_attach_sem(memport_msg_t *msg, memport_sem_t *sem, unsigned flags) {
  int rc = attach_check(msg, sem, MEMPORT_HANDLE_SEM, flags);
  if (rc <= 0)
    return rc;
  if (flags & MEMPORT_ATTACH_COPY) {
    memport_sem_t *copy = NULL;
    rc = memport_sem_dup(sem, &copy);
    if (rc != 0)
      return rc;
    sem = copy;
  }
  return memport__msg_push(msg, MEMPORT_HANDLE_SEM, sem);
}

int memport_msg_attach_port(memport_msg_t *msg, memport_port_t *port, unsigned flags) {
  int rc = attach_check(msg, port, MEMPORT_HANDLE_PORT, flags);
  if (rc <= 0)
    return rc;
  if (flags & MEMPORT_ATTACH_COPY) {
    memport_port_t *copy = calloc(1, sizeof *copy);
    if (copy == NULL)
      return MEMPORT_ENOMEM;
    rc = memport__os_port_dup(port, copy);
    if (rc != 0) {
      free(copy);
      return rc;
    }
    port = copy;
  }
  return memport__msg_push(msg, MEMPORT_HANDLE_PORT, port);
}

int memport_msg_handle_count(const memport_msg_t *msg) {
  if (msg == NULL)
    return MEMPORT_EINVAL;
  return (int)msg->nhandles;
}

int memport_msg_handle_kind(const memport_msg_t *msg, size_t index) {
  if (msg == NULL || index >= msg->nhandles)
    return MEMPORT_EINVAL;
  return msg->handles[index].kind;
}

/* Hand the handle in slot `index` to the caller if it is of `kind`: MEMPORT_EINVAL out of
 * range, MEMPORT_EBADF when taken already or of another kind. */
static int take(memport_msg_t *msg, size_t index, int kind, void **out) {
  if (msg == NULL || index >= msg->nhandles)
    return MEMPORT_EINVAL;
  struct memport__handle *h = &msg->handles[index];
  if (h->kind != kind)
    return MEMPORT_EBADF;
  *out = handle_object(h);
  h->kind = 0;
  h->u.port = NULL;
  return 0;
}

int memport_msg_take_region(memport_msg_t *msg, size_t index, memport_region_t **out) {
  void *o;
  int rc = out == NULL ? MEMPORT_EINVAL : take(msg, index, MEMPORT_HANDLE_REGION, &o);
  if (rc == 0)
    *out = o;
  return rc;
}

int memport_msg_take_sem(memport_msg_t *msg, size_t index, memport_sem_t **out) {
  void *o;
  int rc = out == NULL ? MEMPORT_EINVAL : take(msg, index, MEMPORT_HANDLE_SEM, &o);
  if (rc == 0)
    *out = o;
  return rc;
}

int memport_msg_take_port(memport_msg_t *msg, size_t index, memport_port_t **out) {
  void *o;
  int rc = out == NULL ? MEMPORT_EINVAL : take(msg, index, MEMPORT_HANDLE_PORT, &o);
  if (rc == 0)
    *out = o;
  return rc;
}

int memport_msg_sender(const memport_msg_t *msg, memport_cred_t *out) {
  if (msg == NULL || out == NULL)
    return MEMPORT_EINVAL;
  if (!msg->has_sender)
    return MEMPORT_ENOENT; /* not a received message */
  *out = msg->sender;
  return 0;
}
