/* SPDX-License-Identifier: MIT */
/* lib/name.c: named services, connecting by name, region publication on a library thread, the name listing. */
#include "internal.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------------ */
/* Services.                                                                                   */

static int service_open(memport_service_t **out, const char *name, int kind) {
  int rc = memport__name_check(name);
  if (rc != 0)
    return rc;
  memport_service_t *s = calloc(1, sizeof *s);
  if (s == NULL)
    return MEMPORT_ENOMEM;
  s->handle = MEMPORT_OS_HANDLE_INVALID;
  strcpy(s->name, name); /* length checked by memport__name_check */
  s->kind = kind;
  rc = memport__os_service_create(s);
  if (rc != 0) {
    free(s);
    return rc;
  }
  *out = s;
  return 0;
}

int memport_service_create(memport_service_t **out, const char *name, unsigned flags) {
  if (out == NULL || name == NULL || flags != 0)
    return MEMPORT_EINVAL;
  return service_open(out, name, MEMPORT_NAME_SERVICE);
}

int memport__service_create_kind(memport_service_t **out, const char *name, int kind) {
  if (out == NULL || name == NULL || (kind != MEMPORT_NAME_SERVICE && kind != MEMPORT_NAME_TOPIC))
    return MEMPORT_EINVAL;
  return service_open(out, name, kind);
}

int memport__service_set_subscribers(memport_service_t *svc, uint32_t subs) {
  if (svc == NULL || svc->kind != MEMPORT_NAME_TOPIC)
    return MEMPORT_EINVAL;
  int fd = memport__os_service_record_fd(svc);
  return fd < 0 ? MEMPORT_EINVAL : memport__registry_set_subs(fd, subs);
}

int memport_service_close(memport_service_t *svc) {
  if (svc == NULL)
    return 0;
  memport__os_service_close(svc);
  free(svc);
  return 0;
}

/* One thread may accept while another allows: the slot is written before the count that makes it
 * visible is published (memport__service_allows loads the count with acquire). Concurrent
 * allow_uid calls on one service must be serialized by the caller. */
int memport_service_allow_uid(memport_service_t *svc, uid_t uid) {
  if (svc == NULL)
    return MEMPORT_EINVAL;
  if (uid == geteuid())
    return 0; /* always allowed (memport__service_allows): takes no slot */
  size_t n = __atomic_load_n(&svc->nallowed, __ATOMIC_RELAXED);
  for (size_t i = 0; i < n; i++)
    if (svc->allowed[i] == uid)
      return 0;
  if (n >= MEMPORT__MAX_ALLOWED_UIDS)
    return MEMPORT_ENOSPC;
  svc->allowed[n] = uid;
  __atomic_store_n(&svc->nallowed, n + 1, __ATOMIC_RELEASE);
  return 0;
}

int memport_service_accept(memport_service_t *svc, memport_port_t **out, int64_t timeout_ns) {
  if (svc == NULL || out == NULL)
    return MEMPORT_EINVAL;
  /* As memport_port_recv: MEMPORT_NOWAIT reports MEMPORT_EAGAIN when nobody waits. */
  return memport__nowait_code(memport__service_accept(svc, out, memport__deadline(timeout_ns)), timeout_ns);
}

int memport__service_accept(memport_service_t *svc, memport_port_t **out, uint64_t deadline) {
  /* Accepted into a local first: a look that finds nobody (the topic publisher looks periodically,
   * never waiting) allocates nothing. The backends fill the port by value. */
  memport_port_t tmp;
  memset(&tmp, 0, sizeof tmp);
  tmp.rx = tmp.tx = MEMPORT_OS_HANDLE_INVALID;
  int rc = memport__os_service_accept(svc, &tmp, deadline);
  if (rc != 0)
    return rc;
  memport_port_t *p = memport__port_alloc();
  if (p == NULL) {
    memport__os_port_close(&tmp);
    return MEMPORT_ENOMEM;
  }
  *p = tmp;
  *out = p;
  return 0;
}

int memport_service_pollable(const memport_service_t *svc, memport_os_handle_t *out) {
  if (svc == NULL || out == NULL)
    return MEMPORT_EINVAL;
  *out = svc->handle;
  return 0;
}

static int connect_kind(memport_port_t **out, const char *name, int kind, uint64_t deadline) {
  memport_port_t *p = memport__port_alloc();
  if (p == NULL)
    return MEMPORT_ENOMEM;
  int rc = memport__os_port_connect(p, name, kind, deadline);
  if (rc != 0) {
    free(p);
    return rc;
  }
  *out = p;
  return 0;
}

int memport_port_connect(memport_port_t **out, const char *name, int64_t timeout_ns) {
  if (out == NULL || name == NULL)
    return MEMPORT_EINVAL;
  return memport__port_connect(out, name, memport__deadline(timeout_ns));
}

int memport__port_connect(memport_port_t **out, const char *name, uint64_t deadline) {
  int rc = memport__name_check(name);
  if (rc != 0)
    return rc;
  return connect_kind(out, name, MEMPORT_NAME_SERVICE, deadline);
}

/* ------------------------------------------------------------------------------------------ */
/* Named regions.                                                                              */
/*
 * The publisher serves its name on one library thread (created by memport_region_publish,
 * joined by memport_publication_close). For every connection it asks the access function, then
 * sends exactly one reply message and closes the connection:
 *   bytes: struct pub_reply (magic, version, status); handles: one region when status is 0.
 * status 0: granted (the handle is read-only or writable as granted); MEMPORT_EPERM: denied.
 * The thread runs with every signal blocked; it waits in accept with a bounded slice and is woken
 * at close by a connection of our own, so closing is prompt without busy polling.
 */

#define PUB_MAGIC 0x6d70726567696f6eull /* "mpregion" */
#define PUB_VERSION 1u
#define PUB_ACCEPT_SLICE_NS 5000000000LL /* safety net: the stop flag is re-checked this often */
#define PUB_SEND_TIMEOUT_NS 1000000000   /* a client that does not drain its socket is dropped */
#define PUB_REPLY_GRACE_NS 1000000000    /* how long memport_region_open waits for a live publisher */
#define PUB_WAKE_TIMEOUT_NS 200000000    /* the wake-up connection at close */

struct pub_reply {
  uint64_t magic;
  uint32_t version;
  int32_t status;
};

struct memport_publication {
  memport_service_t *svc;
  memport_region_t *region; /* our own handle */
  memport_access_fn access;
  void *arg;
  pthread_t thread;
  pid_t owner;
  atomic_bool stop;
};

static void pub_nap(void) {
  struct timespec ts = {0, 10000000}; /* 10 ms */
  nanosleep(&ts, NULL);
}

static int pub_decide(const struct memport_publication *pub, const memport_cred_t *peer) {
  int level;
  if (pub->access != NULL)
    level = pub->access(peer, pub->arg);
  else
    level = peer->uid == geteuid() ? MEMPORT_ACCESS_READONLY : MEMPORT_ACCESS_DENY;
  if (level != MEMPORT_ACCESS_READONLY && level != MEMPORT_ACCESS_READWRITE)
    level = MEMPORT_ACCESS_DENY; /* anything unexpected denies */
  return level;
}

static void pub_serve(struct memport_publication *pub, memport_port_t *port, memport_msg_t *msg) {
  memport_cred_t peer;
  if (memport_port_peer(port, &peer) != 0)
    return;
  int level = pub_decide(pub, &peer);
  struct pub_reply reply = {.magic = PUB_MAGIC, .version = PUB_VERSION, .status = 0};
  memport_region_t *h = NULL;
  if (level == MEMPORT_ACCESS_DENY) {
    reply.status = MEMPORT_EPERM;
  } else {
    bool ro = level == MEMPORT_ACCESS_READONLY && memport_region_is_readonly(pub->region) == 0;
    if (memport_region_dup(pub->region, ro ? MEMPORT_DUP_READONLY : 0, &h) != 0)
      return; /* out of descriptors or memory: the client sees the connection close */
  }
  memport_msg_clear(msg);
  if (memport_msg_set_bytes(msg, &reply, sizeof reply) != 0) {
    memport_region_close(h);
    return;
  }
  if (h != NULL && memport_msg_attach_region(msg, h, 0) != 0)
    return; /* the message took h and closed it */
  memport_port_send(port, msg, PUB_SEND_TIMEOUT_NS);
  memport_msg_clear(msg);
}

static void *pub_thread(void *arg) {
  struct memport_publication *pub = arg;
  memport_msg_t *msg = NULL;
  while (!atomic_load_explicit(&pub->stop, memory_order_acquire)) {
    if (msg == NULL && memport_msg_create(&msg) != 0) {
      msg = NULL;
      pub_nap();
      continue;
    }
    memport_port_t *port = NULL;
    int rc = memport_service_accept(pub->svc, &port, PUB_ACCEPT_SLICE_NS);
    if (rc == MEMPORT_ETIMEDOUT)
      continue;
    if (rc != 0) {
      pub_nap(); /* out of descriptors: do not spin */
      continue;
    }
    if (!atomic_load_explicit(&pub->stop, memory_order_acquire))
      pub_serve(pub, port, msg);
    memport_port_close(port);
  }
  memport_msg_close(msg);
  return NULL;
}

static void pub_free(struct memport_publication *pub) {
  memport_service_close(pub->svc);
  memport_region_close(pub->region);
  free(pub);
}

int memport_region_publish(memport_publication_t **out, memport_region_t *region, const char *name,
                           memport_access_fn access, void *arg) {
  if (out == NULL || region == NULL || name == NULL)
    return MEMPORT_EINVAL;
  int rc = memport__name_check(name);
  if (rc != 0)
    return rc;
  struct memport_publication *pub = calloc(1, sizeof *pub);
  if (pub == NULL)
    return MEMPORT_ENOMEM;
  pub->access = access;
  pub->arg = arg;
  pub->owner = getpid();
  atomic_init(&pub->stop, false);
  rc = memport_region_dup(region, 0, &pub->region);
  if (rc != 0) {
    free(pub);
    return rc;
  }
  rc = service_open(&pub->svc, name, MEMPORT_NAME_REGION);
  if (rc != 0) {
    pub->svc = NULL;
    pub_free(pub);
    return rc;
  }
  /* The thread must not run the application's signal handlers. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int prc = pthread_create(&pub->thread, NULL, pub_thread, pub);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (prc != 0) {
    pub_free(pub);
    return prc == EAGAIN ? MEMPORT_EAGAIN : MEMPORT_ENOMEM;
  }
  *out = pub;
  return 0;
}

int memport_publication_close(memport_publication_t *pub) {
  if (pub == NULL)
    return 0;
  if (getpid() != pub->owner) {
    /* A forked child: the thread lives only in the parent, and so does the name. Release our
     * copies of the handles (the service keeps the parent's entries in place). */
    pub_free(pub);
    return 0;
  }
  atomic_store_explicit(&pub->stop, true, memory_order_release);
  /* Wake the thread out of accept with a connection of our own; if that fails it still sees the
   * flag within PUB_ACCEPT_SLICE_NS. */
  memport_port_t *wake = NULL;
  if (connect_kind(&wake, pub->svc->name, MEMPORT_NAME_REGION, memport__deadline(PUB_WAKE_TIMEOUT_NS)) == 0)
    memport_port_close(wake);
  pthread_join(pub->thread, NULL);
  pub_free(pub);
  return 0;
}

int memport_region_open(memport_region_t **out, const char *name, int64_t timeout_ns) {
  if (out == NULL || name == NULL)
    return MEMPORT_EINVAL;
  int rc = memport__name_check(name);
  if (rc != 0)
    return rc;
  uint64_t deadline = memport__deadline(timeout_ns);
  memport_port_t *port = NULL;
  rc = connect_kind(&port, name, MEMPORT_NAME_REGION, deadline);
  if (rc != 0)
    return rc;
  memport_msg_t *msg = NULL;
  rc = memport_msg_create(&msg);
  if (rc != 0) {
    memport_port_close(port);
    return rc;
  }
  /* The publisher exists: give it a moment to answer even under a short timeout. */
  int64_t wait = memport__remaining_ns(deadline);
  if (wait != MEMPORT_FOREVER && wait < PUB_REPLY_GRACE_NS)
    wait = PUB_REPLY_GRACE_NS;
  rc = memport_port_recv(port, msg, wait);
  if (rc == MEMPORT_EAGAIN)
    rc = MEMPORT_ETIMEDOUT;
  if (rc == 0) {
    size_t len = 0;
    const void *bytes = memport_msg_bytes(msg, &len);
    struct pub_reply reply;
    int nh = memport_msg_handle_count(msg);
    if (bytes == NULL || len != sizeof reply) {
      rc = MEMPORT_EPROTO;
    } else {
      memcpy(&reply, bytes, sizeof reply);
      if (reply.magic != PUB_MAGIC || reply.version != PUB_VERSION)
        rc = MEMPORT_EPROTO;
      else if (reply.status == 0 && nh == 1 && memport_msg_handle_kind(msg, 0) == MEMPORT_HANDLE_REGION)
        rc = memport_msg_take_region(msg, 0, out);
      else if (reply.status == MEMPORT_EPERM && nh == 0)
        rc = MEMPORT_EPERM;
      else
        rc = MEMPORT_EPROTO;
    }
  }
  memport_msg_close(msg); /* closes anything left attached */
  memport_port_close(port);
  return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Listing.                                                                                    */

int memport_name_foreach(int (*fn)(const memport_name_info_t *info, void *arg), void *arg) {
  if (fn == NULL)
    return MEMPORT_EINVAL;
  return memport__os_name_foreach(fn, arg);
}

int memport_name_sweep(size_t max_entries) { return memport__os_name_sweep(max_entries); }
