/* SPDX-License-Identifier: MIT */
/* internal.h: the real object structs and the memport__os_* operations every backend provides. */
#ifndef MEMPORT_INTERNAL_H
#define MEMPORT_INTERNAL_H

#ifndef MEMPORT_BUILDING
#define MEMPORT_BUILDING 1
#endif
#include "memport.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Everything not declared MEMPORT_EXPORT is hidden (-fvisibility=hidden); this marks internal
 * functions explicitly as well, for builds that do not pass the flag. */
#if defined(__GNUC__)
#define MEMPORT_HIDDEN __attribute__((visibility("hidden")))
#else
#define MEMPORT_HIDDEN
#endif

#define MEMPORT__UNUSED(x) ((void)(x))
#define MEMPORT__LIKELY(x) __builtin_expect(!!(x), 1)
#define MEMPORT__UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Absolute deadlines on the monotonic clock, in nanoseconds; UINT64_MAX means forever. */
#define MEMPORT__NO_DEADLINE UINT64_MAX
MEMPORT_HIDDEN uint64_t memport__now_ns(void);
/* timeout_ns < 0: forever; 0: now (returned as 0, without reading the clock: a deadline of 0 has
 * always passed, and says "do not wait"); else now + timeout (saturating). */
MEMPORT_HIDDEN uint64_t memport__deadline(int64_t timeout_ns);
/* 1 when the deadline has passed. */
MEMPORT_HIDDEN int memport__expired(uint64_t deadline);
/* A wait that gave up with MEMPORT_ETIMEDOUT reports MEMPORT_EAGAIN when it was asked not to wait
 * at all (MEMPORT_NOWAIT), the same for every call that takes a timeout. */
MEMPORT_HIDDEN int memport__nowait_code(int rc, int64_t timeout_ns);
/* The relative timeout left until `deadline`: MEMPORT_FOREVER for none, 0 once it has passed. */
MEMPORT_HIDDEN int64_t memport__remaining_ns(uint64_t deadline);

/* size rounded up to pages; 0 on overflow. */
MEMPORT_HIDDEN size_t memport__page_round(size_t size);

/* ------------------------------------------------------------------------------------------ */
/* Objects. Fields marked (os) belong to the backend; portable code does not interpret them.  */

/* Each backend's own part of every object: struct memport__os_region, _sem, _port, _service. */
#if defined(__APPLE__)
#include "darwin/fields.h"
#else
#include "linux/fields.h"
#endif

struct memport_region {
  memport_os_handle_t handle; /* (os) Linux: memfd; Darwin: send right to the memory entry */
  size_t size;                /* bytes, a page multiple */
  bool readonly;              /* this handle can only be mapped read-only */
  struct memport__os_region os; /* (os) */
};

struct memport_sem {
  memport_os_handle_t handle; /* (os) Linux: memfd of the futex page; Darwin: semaphore_t */
  struct memport__os_sem os;  /* (os) */
};

struct memport_port {
  memport_os_handle_t rx;     /* (os) Linux: the socket; Darwin: our receive right */
  memport_os_handle_t tx;     /* (os) Linux: same socket; Darwin: send right to the peer */
  memport_cred_t peer;        /* who is at the other end */
  struct memport__os_port os; /* (os) */
};

struct memport__handle {
  int kind; /* MEMPORT_HANDLE_*, 0 once taken */
  union {
    memport_region_t *region;
    memport_sem_t *sem;
    memport_port_t *port;
  } u;
};

struct memport_msg {
  unsigned char *bytes; /* capacity MEMPORT_MSG_MAX_BYTES, allocated once at create */
  size_t len;
  struct memport__handle handles[MEMPORT_MSG_MAX_HANDLES];
  size_t nhandles;
  memport_cred_t sender;
  bool has_sender;
  void *os_buf; /* (os) a receive/send scratch buffer, allocated once by the backend, freed by
                   memport__os_msg_free */
};

#define MEMPORT__MAX_ALLOWED_UIDS 16
struct memport_service {
  memport_os_handle_t handle; /* (os) Linux: listening socket; Darwin: receive right checked in */
  char name[MEMPORT_NAME_MAX + 1];
  int kind; /* MEMPORT_NAME_SERVICE, MEMPORT_NAME_REGION or MEMPORT_NAME_TOPIC */
  uid_t allowed[MEMPORT__MAX_ALLOWED_UIDS];
  size_t nallowed; /* the owner's uid is always allowed */
  struct memport__os_service os; /* (os) */
};

/* ------------------------------------------------------------------------------------------ */
/* Portable helpers shared between files.                                                      */

/* Validate a name: 1..MEMPORT_NAME_MAX bytes of [A-Za-z0-9._-], not starting with '.' or '-'.
 * Returns 0, MEMPORT_EINVAL or MEMPORT_ENAMETOOLONG. */
MEMPORT_HIDDEN int memport__name_check(const char *name);
/* May this service accept a peer with credentials `peer`? */
MEMPORT_HIDDEN bool memport__service_allows(const memport_service_t *svc, const memport_cred_t *peer);
/* A port object with no OS handles yet (calloc; NULL when out of memory). */
MEMPORT_HIDDEN memport_port_t *memport__port_alloc(void);
/* Take ownership of a handle into a message slot; closes it and fails when the message is full. */
MEMPORT_HIDDEN int memport__msg_push(memport_msg_t *msg, int kind, void *object);
/* Close and forget every handle in a message. */
MEMPORT_HIDDEN void memport__msg_drop_handles(memport_msg_t *msg);
/* Close n handles outside a message (kind 0: taken, skipped); each slot is left taken. */
MEMPORT_HIDDEN void memport__handles_close(struct memport__handle *h, size_t n);
/* memport_port_send(3) and memport_port_recv(3) on an absolute deadline, for portable code inside
 * the library (lib/port.c): MEMPORT_ETIMEDOUT when it passes, whatever the deadline. */
MEMPORT_HIDDEN int memport__port_send(memport_port_t *p, memport_msg_t *msg, uint64_t deadline);
MEMPORT_HIDDEN int memport__port_recv(memport_port_t *p, memport_msg_t *msg, uint64_t deadline);
/* memport_port_connect(3) (no NOWAIT mapping there either) and memport_service_accept(3) on a
 * deadline (lib/name.c). */
MEMPORT_HIDDEN int memport__port_connect(memport_port_t **out, const char *name, uint64_t deadline);
MEMPORT_HIDDEN int memport__service_accept(memport_service_t *svc, memport_port_t **out, uint64_t deadline);
/* Receive the next message on p into a cleared msg (lib/msg.c): the backend receives raw handles
 * (memport__os_port_recv), this builds the objects. All-or-nothing, as memport_port_recv(3). */
MEMPORT_HIDDEN int memport__msg_recv(memport_port_t *p, memport_msg_t *msg, uint64_t deadline);
/* After memport__os_inherit set `mode` on [addr, addr+len): memport mappings there that a fork
 * child does not get (NONE, ZERO) are forgotten in the child, so that its memport_unmap never
 * unmaps what the child put at those addresses since (lib/region.c). */
MEMPORT_HIDDEN void memport__reg_inherit(const void *addr, size_t len, int mode);

/* ------------------------------------------------------------------------------------------ */
/* Backend: memory. All return 0 or a negative MEMPORT_E* code.                                */

MEMPORT_HIDDEN size_t memport__os_page_size(void);
/* New zero-filled region of `size` (a page multiple) bytes. Sets handle; r->size is set to `size`
 * by the caller and may be raised by the backend to what it made (Darwin: whole kernel pages);
 * readonly is set by the caller. */
MEMPORT_HIDDEN int memport__os_region_create(memport_region_t *r, size_t size);
MEMPORT_HIDDEN void memport__os_region_close(memport_region_t *r);
/* Another handle to the same memory; readonly: the new handle maps read-only only. */
MEMPORT_HIDDEN int memport__os_region_dup(const memport_region_t *r, bool readonly, memport_region_t *out);
/* Convert the region in place, one-way, to read-only for every future mapping. */
MEMPORT_HIDDEN int memport__os_region_seal(memport_region_t *r);
/* Check an OS handle and fill r (size 0: ask the OS). Does not take ownership on failure. */
MEMPORT_HIDDEN int memport__os_region_adopt(memport_region_t *r, memport_os_handle_t h, size_t size,
                                            bool readonly);
/* Reserve `len` bytes of address space, inaccessible. */
MEMPORT_HIDDEN int memport__os_reserve(size_t len, void **addr);
/* Map [off, off+len) of the region; at `fixed` (replacing what is there) when non-NULL. */
MEMPORT_HIDDEN int memport__os_map(const memport_region_t *r, size_t off, size_t len, bool writable, void *fixed,
                                   void **addr);
MEMPORT_HIDDEN int memport__os_unmap(void *addr, size_t len);
/* A second view of [src, src+len) of this process; MEMPORT_ENOTSUP where the OS cannot. */
MEMPORT_HIDDEN int memport__os_remap(void *src, size_t len, bool readonly, void **out);
/* Fork inheritance of a page-aligned range. */
MEMPORT_HIDDEN int memport__os_inherit(void *addr, size_t len, int mode);

/* ------------------------------------------------------------------------------------------ */
/* Backend: semaphores. Deadlines are absolute (memport__deadline).                            */

MEMPORT_HIDDEN int memport__os_sem_create(memport_sem_t *s, unsigned initial);
MEMPORT_HIDDEN void memport__os_sem_close(memport_sem_t *s);
MEMPORT_HIDDEN int memport__os_sem_signal(memport_sem_t *s);
MEMPORT_HIDDEN int memport__os_sem_signal_all(memport_sem_t *s);
/* Waits are not interrupted by signals (EINTR is retried). */
MEMPORT_HIDDEN int memport__os_sem_wait(memport_sem_t *s, uint64_t deadline);
MEMPORT_HIDDEN int memport__os_sem_trywait(memport_sem_t *s);
MEMPORT_HIDDEN int memport__os_sem_dup(const memport_sem_t *s, memport_sem_t *out);

/* An event count: a 32-bit word in shared memory that only its owner increments, which any number
 * of processes (mapping it read-only) sleep on until it changes; one call wakes them all. Where
 * the platform has no such wait (memport__os_count_wait_supported false: Darwin, whose only
 * cross-process address wait is private API), callers use a semaphore per sleeper instead.
 * memport__os_count_wait sleeps while *count == seen, until `deadline`: 0 (it changed, or a wake,
 * possibly spurious: look again), MEMPORT_ETIMEDOUT, MEMPORT_ENOTSUP. */
MEMPORT_HIDDEN bool memport__os_count_wait_supported(void);
MEMPORT_HIDDEN int memport__os_count_wait(const _Atomic uint32_t *count, uint32_t seen, uint64_t deadline);
MEMPORT_HIDDEN void memport__os_count_wake_all(_Atomic uint32_t *count);

/* ------------------------------------------------------------------------------------------ */
/* Backend: ports, messages and names.                                                          */

MEMPORT_HIDDEN int memport__os_port_pair(memport_port_t *a, memport_port_t *b);
MEMPORT_HIDDEN void memport__os_port_close(memport_port_t *p);
MEMPORT_HIDDEN int memport__os_port_dup(const memport_port_t *p, memport_port_t *out);
/* Send msg's bytes and handles. On success the backend has moved the handles (portable code
 * then forgets or closes them); on failure nothing was sent. */
MEMPORT_HIDDEN int memport__os_port_send(memport_port_t *p, memport_msg_t *msg, uint64_t deadline);

/* One handle of a received message as the backend got it from the OS, checked, before any object
 * exists. The raw record owns its OS handles until an object takes them. */
struct memport__raw_handle {
  int kind;                   /* MEMPORT_HANDLE_* */
  bool readonly;              /* region: announced read-only */
  size_t size;                /* region: bytes, a page multiple (0: the backend asks the OS) */
  memport_os_handle_t h[2];   /* region, sem: h[0]; port: h[0] the receive side, h[1] the send
                                 side (Linux: the same socket in both, owned once) */
};

/* A received message before its objects exist: the bytes are already in msg->bytes. */
struct memport__raw_msg {
  size_t len;                 /* bytes received into msg->bytes */
  size_t nhandles;
  struct memport__raw_handle handles[MEMPORT_MSG_MAX_HANDLES];
  memport_cred_t sender;      /* the sending process, as the kernel reported it */
};

/* Receive the next message: its bytes into msg->bytes, its handles and sender into *raw. The
 * backend touches nothing else of msg but its os_buf scratch, and makes no object. On error every
 * OS handle received with the message is released already and raw->nhandles is 0. */
MEMPORT_HIDDEN int memport__os_port_recv(memport_port_t *p, memport_msg_t *msg, struct memport__raw_msg *raw,
                                         uint64_t deadline);
/* Finish an object lib/msg.c made from a received raw handle (calloc'ed, its portable fields set:
 * region handle/size/readonly, sem handle, port rx/tx/peer = sender). The backend does what its OS
 * needs (Linux: check and map; Darwin: fork generation, notifications, fork tracking). On failure
 * the object holds nothing and the raw handle still owns its OS handles. */
MEMPORT_HIDDEN int memport__os_recv_finish(int kind, void *object);
/* Release the OS handles of a raw handle that no object took. */
MEMPORT_HIDDEN void memport__os_recv_release(const struct memport__raw_handle *raw);
MEMPORT_HIDDEN void memport__os_msg_free(memport_msg_t *msg);

/* A readiness handle ("bell") for one port: a single OS handle an event loop waits on, ready while
 * the port has a message (or its peer is gone) or while this process has rung the bell. Linux: an
 * epoll descriptor watching the socket and an eventfd; Darwin: a port set holding the port's receive
 * right and a receive right of our own. The port must outlive the bell's use; closing the port
 * takes it out of the bell. */
struct memport__bell {
  memport_os_handle_t handle; /* (os) what event loops wait on */
  memport_os_handle_t self;   /* (os) what ring/clear act on */
};
/* p may be NULL: a bell of no port yet (memport__os_bell_add adds them). */
MEMPORT_HIDDEN int memport__os_bell_open(struct memport__bell *b, const memport_port_t *p);
/* A bell over several handles (a topic publisher's): add or remove the receiving handle `h` of a
 * port (its rx) or of a service; the bell is then also ready while `h` has a message or
 * connection waiting (or its peer is gone). Removing a handle not in the bell does nothing. */
MEMPORT_HIDDEN int memport__os_bell_add(struct memport__bell *b, memport_os_handle_t h);
MEMPORT_HIDDEN void memport__os_bell_remove(struct memport__bell *b, memport_os_handle_t h);
MEMPORT_HIDDEN void memport__os_bell_close(struct memport__bell *b);
/* Make the handle ready (until memport__os_bell_clear), never waiting; ringing twice is one ring. */
MEMPORT_HIDDEN void memport__os_bell_ring(struct memport__bell *b);
MEMPORT_HIDDEN void memport__os_bell_clear(struct memport__bell *b);

MEMPORT_HIDDEN int memport__os_service_create(memport_service_t *s);
MEMPORT_HIDDEN void memport__os_service_close(memport_service_t *s);
MEMPORT_HIDDEN int memport__os_service_accept(memport_service_t *s, memport_port_t *out, uint64_t deadline);
MEMPORT_HIDDEN int memport__os_port_connect(memport_port_t *out, const char *name, int kind, uint64_t deadline);
/* A name whose record says `record` serves a connection that asks for `asked`: the same kind, or a
 * topic for a service (a topic is a service speaking the topic protocol over its ports). */
static inline bool memport__kind_serves(int record, int asked) {
  return record == asked || (asked == MEMPORT_NAME_SERVICE && record == MEMPORT_NAME_TOPIC);
}
/* A service of `kind` (lib/name.c; memport_service_create makes MEMPORT_NAME_SERVICE). */
MEMPORT_HIDDEN int memport__service_create_kind(memport_service_t **out, const char *name, int kind);
/* A topic's service: record `subs` as its subscriber count in its registry record (memport-ls). */
MEMPORT_HIDDEN int memport__service_set_subscribers(memport_service_t *svc, uint32_t subs);
/* The backend's claimed registry lock file of a service (lib/registry.c), or -1. */
MEMPORT_HIDDEN int memport__os_service_record_fd(const memport_service_t *s);
MEMPORT_HIDDEN int memport__os_name_foreach(int (*fn)(const memport_name_info_t *info, void *arg), void *arg);
/* memport_name_sweep(3): the registry's sweep with the backend's transport removal. */
MEMPORT_HIDDEN int memport__os_name_sweep(size_t max_entries);

/* ------------------------------------------------------------------------------------------ */
/* The name registry (lib/registry.c): lock files in a backend's verified private directory      */
/* `dirfd`; the record format, liveness, reclaiming and listing, the same on every platform.    */

#define MEMPORT__RECORD_MAX 128 /* a record line is shorter than this */
/* Format the record "memport-name 1 kind=K pid=P uid=U gid=G\n" into buf (a topic's adds
 * " subs=S" before the newline, S `subs` in 10 digits: the line keeps its length when S changes):
 * its length, or MEMPORT_EINVAL (kind) / MEMPORT_EOVERFLOW (cap). */
MEMPORT_HIDDEN int memport__registry_format(char *buf, size_t cap, int kind, const memport_cred_t *owner,
                                            uint32_t subs);
/* Parse the `n` bytes read from a lock file (untrusted, not NUL-terminated): true with *kind,
 * *owner and *subs (may be NULL; 0 but for a topic) when they are exactly one well-formed record,
 * else false and nothing written. */
MEMPORT_HIDDEN bool memport__registry_parse(const char *text, size_t n, int *kind, memport_cred_t *owner,
                                            uint32_t *subs);
/* Take the lock file of `name` (reclaiming a dead owner's): 0 with *fd locked for our lifetime,
 * MEMPORT_EEXIST when a live owner holds it, MEMPORT_EACCES when the entry is not a regular file of
 * ours (a symbolic link, directory, FIFO, socket or device). The file is left empty, which readers
 * take for an owner still starting, until the backend, ready for clients, writes its record. */
MEMPORT_HIDDEN int memport__registry_claim(int dirfd, const char *name, int *fd);
/* Write this process's record of `kind` into the claimed lock file, then show it live. */
MEMPORT_HIDDEN int memport__registry_write(int fd, int kind);
/* The owner of a topic's claimed lock file `fd` (record written) records a new subscriber count:
 * the line is rewritten in place, at the same length (readers: see memport__registry_lookup). */
MEMPORT_HIDDEN int memport__registry_set_subs(int fd, uint32_t subs);
/* Close a claimed lock file; with `remove`, first unlink it if the path still names it. */
MEMPORT_HIDDEN void memport__registry_release(int dirfd, const char *name, int fd, bool remove);
#define MEMPORT__REG_ABSENT 0   /* no lock file, or nobody holds its lock (a dead owner's) */
#define MEMPORT__REG_STARTING 1 /* a live owner, whose record is not (yet) well formed */
#define MEMPORT__REG_LIVE 2     /* a live owner, with *kind and *owner from its record */
MEMPORT_HIDDEN int memport__registry_lookup(int dirfd, const char *name, int *kind, memport_cred_t *owner);
/* Call fn for every live, well-formed name; stops at (and returns) fn's first nonzero result.
 * Dead owners' files are skipped, never removed. */
MEMPORT_HIDDEN int memport__registry_foreach(int dirfd, int (*fn)(const memport_name_info_t *info, void *arg),
                                             void *arg);
/* Remove the lock files of names whose owner is gone (no process holds the claim lock), looking
 * at no more than max_entries of them (0: all). For each, before the lock file, drop(dirfd, name)
 * removes the backend's transport entry (may be NULL). Never a live or starting owner's name, and
 * never makes a concurrent creator fail. Returns how many names were removed, or an error. */
MEMPORT_HIDDEN int memport__registry_sweep(int dirfd, size_t max_entries, void (*drop)(int dirfd, const char *name));
#define MEMPORT__SWEEP_AT_CREATE 32 /* lock files a service creation looks at */
/* The registry's lock: an open-file-description write lock on the one byte at offset
 * MEMPORT__LOCK_* of a lock file (lib/registry.c). */
#define MEMPORT__LOCK_CLAIM 0 /* held by the owner from the claim on: excludes other creators */
#define MEMPORT__LOCK_LIVE 1  /* held by the owner once its record is written: "live" to readers */
#define MEMPORT__LOCK_SWEEP 2 /* held by a sweeper removing a dead owner's file */
/* fcntl(2) commands of open-file-description locks, which both kernels have: Linux since 3.15
 * (F_OFD_GETLK 36, F_OFD_SETLK 37), xnu since before macOS 11 (bsd/kern/kern_descrip.c
 * fcntl_nocancel, F_OFD_SETLK 90 / F_OFD_GETLK 92; the macOS 11 SDK keeps them under PRIVATE in
 * sys/fcntl.h, the macOS 15 SDK publishes the same values). */
#if defined(__APPLE__)
#define MEMPORT__F_OFD_GETLK 92
#define MEMPORT__F_OFD_SETLK 90
#else
#define MEMPORT__F_OFD_GETLK 36
#define MEMPORT__F_OFD_SETLK 37
#endif

#endif /* MEMPORT_INTERNAL_H */
