/* SPDX-License-Identifier: MIT */
/* memport.h: the public API of memport, zero-copy data movement between processes. */
#ifndef MEMPORT_H
#define MEMPORT_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "memport/version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(MEMPORT_BUILDING) && defined(__GNUC__)
#define MEMPORT_EXPORT __attribute__((visibility("default")))
#else
#define MEMPORT_EXPORT
#endif

/* ------------------------------------------------------------------------------------------ */
/* Errors: every function returns 0 (or a count) on success and a negative code on failure.   */
/* On POSIX systems each code is a negated errno value; errno itself is not part of the API.  */

#define MEMPORT_EPERM        (-EPERM)        /* not allowed (credentials, access policy) */
#define MEMPORT_ENOENT       (-ENOENT)       /* no such name */
#define MEMPORT_EINTR        (-EINTR)        /* interrupted (never returned by waits) */
#define MEMPORT_EBADF        (-EBADF)        /* not a valid handle, or handle of the wrong kind */
#define MEMPORT_EAGAIN       (-EAGAIN)       /* nothing available right now (non-blocking call) */
#define MEMPORT_ENOMEM       (-ENOMEM)       /* out of memory or address space */
#define MEMPORT_EACCES       (-EACCES)       /* forbidden by protection (e.g. writable map of a read-only region) */
#define MEMPORT_EBUSY        (-EBUSY)        /* object in use (e.g. unmap of a range still remapped) */
#define MEMPORT_EEXIST       (-EEXIST)       /* name already served by a live owner */
#define MEMPORT_EINVAL       (-EINVAL)       /* invalid argument: NULL, misaligned, unknown flag, zero size */
#define MEMPORT_EMFILE       (-EMFILE)       /* out of descriptors */
#define MEMPORT_ENOSPC       (-ENOSPC)       /* no space (ring or pool full) */
#define MEMPORT_EPEER        (-EPIPE)        /* the peer closed its port, died, or broke off the channel (an orderly channel close is MEMPORT_ECLOSED) */
#define MEMPORT_ENAMETOOLONG (-ENAMETOOLONG) /* name longer than MEMPORT_NAME_MAX */
#define MEMPORT_EOVERFLOW    (-EOVERFLOW)    /* size arithmetic would overflow */
#define MEMPORT_EPROTO       (-EPROTO)       /* the peer broke the protocol (bad message, hostile shared memory) */
#define MEMPORT_EMSGSIZE     (-EMSGSIZE)     /* message too large for this path, or receive buffer too small */
#define MEMPORT_ENOTSUP      (-ENOTSUP)      /* this platform cannot do that (see the man page) */
#define MEMPORT_ETIMEDOUT    (-ETIMEDOUT)    /* the timeout expired */
/* The channel was closed in order (by the peer, or for sending by us). macOS's <errno.h> hides
 * ESHUTDOWN (58 there) from programs that ask for strict POSIX (_POSIX_C_SOURCE), so its value is
 * given here then; Linux always defines it. */
#if defined(ESHUTDOWN)
#define MEMPORT_ECLOSED      (-ESHUTDOWN)
#elif defined(__APPLE__)
#define MEMPORT_ECLOSED      (-58)
#else
#error "memport.h: <errno.h> defines no ESHUTDOWN on this system"
#endif

/* Describe an error code (never NULL; unknown codes get a generic text). Thread-safe. */
MEMPORT_EXPORT const char *memport_strerror(int err);
/* The symbolic name of an error code, e.g. "MEMPORT_EINVAL" (never NULL). Thread-safe. */
MEMPORT_EXPORT const char *memport_err_name(int err);

/* Library version at run time, as MEMPORT_VERSION_NUM would compute it. Thread-safe. */
MEMPORT_EXPORT unsigned memport_version(void);
MEMPORT_EXPORT const char *memport_version_string(void);

/* ------------------------------------------------------------------------------------------ */
/* Timeouts: relative, in nanoseconds, measured on the monotonic clock.                       */
#define MEMPORT_FOREVER ((int64_t)-1) /* wait without limit */
#define MEMPORT_NOWAIT  ((int64_t)0)  /* do not wait: MEMPORT_EAGAIN or MEMPORT_ETIMEDOUT at once */

/* The OS handle behind an object: a file descriptor on Linux, a Mach port name on Darwin. */
#if defined(__APPLE__)
typedef unsigned int memport_os_handle_t;
#define MEMPORT_OS_HANDLE_INVALID 0u
#else
typedef int memport_os_handle_t;
#define MEMPORT_OS_HANDLE_INVALID (-1)
#endif

/* Who sent a message or opened a connection, as the kernel reports it. */
typedef struct memport_cred {
  pid_t pid;
  uid_t uid;
  gid_t gid;
} memport_cred_t;

typedef struct memport_region memport_region_t;
typedef struct memport_sem memport_sem_t;
typedef struct memport_port memport_port_t;
typedef struct memport_msg memport_msg_t;
typedef struct memport_service memport_service_t;
typedef struct memport_publication memport_publication_t;
typedef struct memport_ring memport_ring_t;
typedef struct memport_chan memport_chan_t;
typedef struct memport_chan_pending memport_chan_pending_t;
typedef struct memport_pub memport_pub_t;
typedef struct memport_sub memport_sub_t;

/* ------------------------------------------------------------------------------------------ */
/* Regions: shareable memory objects of fixed size (memfd on Linux, memory entry on Darwin).  */

/* Size of a page as the region and mapping functions round to it. Thread-safe. */
MEMPORT_EXPORT size_t memport_page_size(void);

/* Create a zero-filled region of at least `size` bytes (rounded up to pages); flags must be 0.
 * The caller owns *out and closes it with memport_region_close. Thread-safe. */
MEMPORT_EXPORT int memport_region_create(memport_region_t **out, size_t size, unsigned flags);
/* Close a region handle. Mappings made from it stay valid until unmapped. NULL is a no-op. */
MEMPORT_EXPORT int memport_region_close(memport_region_t *region);
/* Size of the region in bytes (a page multiple), 0 for NULL. Thread-safe. */
MEMPORT_EXPORT size_t memport_region_size(const memport_region_t *region);
/* 1 if the region can only be mapped read-only, 0 if writable, negative on error. */
MEMPORT_EXPORT int memport_region_is_readonly(const memport_region_t *region);
/* Another handle to the same memory; MEMPORT_DUP_READONLY makes it a read-only handle of a
 * region that stays writable (see memport_region_dup(3) for the per-platform guarantee). */
#define MEMPORT_DUP_READONLY (1u << 0)
MEMPORT_EXPORT int memport_region_dup(memport_region_t *region, unsigned flags, memport_region_t **out);
/* One-way conversion to read-only: afterwards neither `region` nor the returned handle can be
 * mapped writable by anyone who holds them; mappings that already exist keep their access.
 * The caller owns *out. */
MEMPORT_EXPORT int memport_region_readonly(memport_region_t *region, memport_region_t **out);
/* The OS handle of the region, borrowed (still owned by the region). */
MEMPORT_EXPORT int memport_region_os_handle(const memport_region_t *region, memport_os_handle_t *out);
/* Wrap an OS handle received by other means as a region; on success the region owns `handle`.
 * `size` is the region size (0: ask the OS where it can tell, see the man page). */
#define MEMPORT_ADOPT_READONLY (1u << 0)
MEMPORT_EXPORT int memport_region_adopt(memport_region_t **out, memport_os_handle_t handle, size_t size,
                                        unsigned flags);

/* Map flags. Default: read-write at a kernel-chosen address. */
#define MEMPORT_MAP_READONLY (1u << 0) /* map read-only */
#define MEMPORT_MAP_MIRROR   (1u << 1) /* map the region twice back to back (2x size of address space) */
/* Map the whole region; *addr receives the address. Unmap with memport_unmap. Thread-safe. */
MEMPORT_EXPORT int memport_region_map(memport_region_t *region, unsigned flags, void **addr);
/* Unmap a mapping made by memport_region_map or memport_remap, given its start address.
 * Any other address gives MEMPORT_EINVAL. Thread-safe. */
MEMPORT_EXPORT int memport_unmap(void *addr);
/* Length in bytes of the memport mapping that starts at addr (2x region size for a mirror). */
MEMPORT_EXPORT int memport_mapping_size(const void *addr, size_t *len);
/* A second view of `len` bytes of this process's memory at `addr` (page-aligned) at another,
 * kernel-chosen address; MEMPORT_MAP_READONLY makes the view read-only while the original stays
 * writable. Linux: only memport mappings and memory made MEMPORT_INHERIT_SHARE. */
MEMPORT_EXPORT int memport_remap(void *addr, size_t len, unsigned flags, void **out);

/* ------------------------------------------------------------------------------------------ */
/* Fork inheritance: what a child made by fork() gets of a page-aligned range.                */
#define MEMPORT_INHERIT_SHARE 1 /* child and parent see each other's writes */
#define MEMPORT_INHERIT_COPY  2 /* copy-on-write (the default for private memory) */
#define MEMPORT_INHERIT_NONE  3 /* the range is absent in the child */
#define MEMPORT_INHERIT_ZERO  4 /* the child gets fresh zero-filled pages */
/* Set the inheritance of [addr, addr+len). Not thread-safe against other threads touching the
 * range while SHARE moves it (Linux). */
MEMPORT_EXPORT int memport_inherit(void *addr, size_t len, int mode);

/* ------------------------------------------------------------------------------------------ */
/* Semaphores: counting, usable across processes (shared by fork or sent in a message).       */

/* Create with an initial count; flags must be 0. The caller owns *out. Thread-safe. */
MEMPORT_EXPORT int memport_sem_create(memport_sem_t **out, unsigned initial, unsigned flags);
MEMPORT_EXPORT int memport_sem_close(memport_sem_t *sem);
/* Add one to the count, waking one waiter. No system call when nobody waits (Linux). */
MEMPORT_EXPORT int memport_sem_signal(memport_sem_t *sem);
/* Wake every process or thread waiting now. */
MEMPORT_EXPORT int memport_sem_signal_all(memport_sem_t *sem);
/* Take one from the count, waiting up to timeout_ns; MEMPORT_ETIMEDOUT on expiry. */
MEMPORT_EXPORT int memport_sem_wait(memport_sem_t *sem, int64_t timeout_ns);
/* Take one if available at once, else MEMPORT_EAGAIN. */
MEMPORT_EXPORT int memport_sem_trywait(memport_sem_t *sem);
/* Another handle to the same semaphore (for sending while keeping one). */
MEMPORT_EXPORT int memport_sem_dup(memport_sem_t *sem, memport_sem_t **out);

/* ------------------------------------------------------------------------------------------ */
/* Messages: inline bytes plus attached handles.                                               */
#define MEMPORT_MSG_MAX_BYTES   65536u /* inline bytes per message */
#define MEMPORT_MSG_MAX_HANDLES 64u    /* attached handles per message */

#define MEMPORT_HANDLE_REGION 1
#define MEMPORT_HANDLE_SEM    2
#define MEMPORT_HANDLE_PORT   3

#define MEMPORT_ATTACH_COPY (1u << 0) /* attach a duplicate; the caller keeps its handle */

/* A message object, reusable for many sends and receives. Not thread-safe. */
MEMPORT_EXPORT int memport_msg_create(memport_msg_t **out);
/* Free the message and close every handle still attached. NULL is a no-op. */
MEMPORT_EXPORT int memport_msg_close(memport_msg_t *msg);
/* Empty the message: drop the bytes, close attached handles, keep the buffers for reuse. */
MEMPORT_EXPORT int memport_msg_clear(memport_msg_t *msg);
/* Copy `len` bytes (at most MEMPORT_MSG_MAX_BYTES) into the message. */
MEMPORT_EXPORT int memport_msg_set_bytes(memport_msg_t *msg, const void *data, size_t len);
/* The inline bytes (valid until the message changes); *len receives their count. */
MEMPORT_EXPORT const void *memport_msg_bytes(const memport_msg_t *msg, size_t *len);
/* Attach a handle. Without MEMPORT_ATTACH_COPY the message takes ownership at once (the caller
 * must not use or close it any more), whether or not the call later fails. */
MEMPORT_EXPORT int memport_msg_attach_region(memport_msg_t *msg, memport_region_t *region, unsigned flags);
MEMPORT_EXPORT int memport_msg_attach_sem(memport_msg_t *msg, memport_sem_t *sem, unsigned flags);
MEMPORT_EXPORT int memport_msg_attach_port(memport_msg_t *msg, memport_port_t *port, unsigned flags);
/* Number of handles attached (or received and not yet taken). */
MEMPORT_EXPORT int memport_msg_handle_count(const memport_msg_t *msg);
/* Kind of handle `index` (MEMPORT_HANDLE_*), or 0 if already taken; negative if out of range. */
MEMPORT_EXPORT int memport_msg_handle_kind(const memport_msg_t *msg, size_t index);
/* Take ownership of received handle `index`; the caller closes it. */
MEMPORT_EXPORT int memport_msg_take_region(memport_msg_t *msg, size_t index, memport_region_t **out);
MEMPORT_EXPORT int memport_msg_take_sem(memport_msg_t *msg, size_t index, memport_sem_t **out);
MEMPORT_EXPORT int memport_msg_take_port(memport_msg_t *msg, size_t index, memport_port_t **out);
/* Who sent a received message. */
MEMPORT_EXPORT int memport_msg_sender(const memport_msg_t *msg, memport_cred_t *out);

/* ------------------------------------------------------------------------------------------ */
/* Ports: message endpoints.                                                                   */

/* A connected pair (for a parent and the child it forks). The caller owns both. */
MEMPORT_EXPORT int memport_port_pair(memport_port_t **a, memport_port_t **b);
MEMPORT_EXPORT int memport_port_close(memport_port_t *port);
/* Send the message; on success its handles are gone (moved to the peer) and its bytes kept.
 * On failure nothing was sent and the message is unchanged. Never raises SIGPIPE. */
MEMPORT_EXPORT int memport_port_send(memport_port_t *port, memport_msg_t *msg, int64_t timeout_ns);
/* Receive into `msg` (cleared first). MEMPORT_EPEER once the peer is gone and nothing is left. */
MEMPORT_EXPORT int memport_port_recv(memport_port_t *port, memport_msg_t *msg, int64_t timeout_ns);
/* Credentials of the process at the other end, as seen when the connection was made. */
MEMPORT_EXPORT int memport_port_peer(const memport_port_t *port, memport_cred_t *out);
/* A handle for event loops that becomes ready when a message waits (Linux: fd, readable;
 * Darwin: the receive right, for kqueue EVFILT_MACHPORT or a dispatch source). Borrowed. */
MEMPORT_EXPORT int memport_port_pollable(const memport_port_t *port, memport_os_handle_t *out);

/* ------------------------------------------------------------------------------------------ */
/* Names and services.                                                                         */
#define MEMPORT_NAME_MAX 64 /* bytes; [A-Za-z0-9._-], not starting with '.' or '-' */

/* Serve `name`: peers of the same uid connect to it (others after memport_service_allow_uid).
 * A name left by a dead owner is reclaimed; a live owner gives MEMPORT_EEXIST. flags must be 0. */
MEMPORT_EXPORT int memport_service_create(memport_service_t **out, const char *name, unsigned flags);
MEMPORT_EXPORT int memport_service_close(memport_service_t *svc);
/* Also accept peers running as `uid`. */
MEMPORT_EXPORT int memport_service_allow_uid(memport_service_t *svc, uid_t uid);
/* Wait for a connection; the caller owns *out. Refused peers are dropped, not returned. */
MEMPORT_EXPORT int memport_service_accept(memport_service_t *svc, memport_port_t **out, int64_t timeout_ns);
/* A handle that becomes ready when a connection waits (as memport_port_pollable). */
MEMPORT_EXPORT int memport_service_pollable(const memport_service_t *svc, memport_os_handle_t *out);
/* Connect to the service `name`, waiting up to timeout_ns for it to appear and answer. */
MEMPORT_EXPORT int memport_port_connect(memport_port_t **out, const char *name, int64_t timeout_ns);

/* Access a publisher grants one peer. */
#define MEMPORT_ACCESS_DENY      0
#define MEMPORT_ACCESS_READONLY  1
#define MEMPORT_ACCESS_READWRITE 2
typedef int (*memport_access_fn)(const memport_cred_t *peer, void *arg);
/* Publish a region under `name`, served by the library on its own thread. `access` decides per
 * peer (NULL: read-only for the same uid). The publication holds its own handle of the region. */
MEMPORT_EXPORT int memport_region_publish(memport_publication_t **out, memport_region_t *region,
                                          const char *name, memport_access_fn access, void *arg);
MEMPORT_EXPORT int memport_publication_close(memport_publication_t *pub);
/* Open a region published under `name`. The caller owns *out. */
MEMPORT_EXPORT int memport_region_open(memport_region_t **out, const char *name, int64_t timeout_ns);

#define MEMPORT_NAME_SERVICE 1
#define MEMPORT_NAME_REGION  2
#define MEMPORT_NAME_TOPIC   3
typedef struct memport_name_info {
  char name[MEMPORT_NAME_MAX + 1];
  int kind;             /* MEMPORT_NAME_SERVICE, MEMPORT_NAME_REGION or MEMPORT_NAME_TOPIC */
  memport_cred_t owner; /* the serving process */
  uint32_t subscribers; /* MEMPORT_NAME_TOPIC: subscribers as its publisher last recorded; else 0 */
} memport_name_info_t;
/* Call fn for every live name of this user; a non-zero return from fn stops and is returned. */
MEMPORT_EXPORT int memport_name_foreach(int (*fn)(const memport_name_info_t *info, void *arg), void *arg);
/* Remove the entries names of dead owners left behind, looking at no more than max_entries names
 * (0: all); never a live or starting owner's. Returns how many were removed. Thread-safe. */
MEMPORT_EXPORT int memport_name_sweep(size_t max_entries);

/* ------------------------------------------------------------------------------------------ */
/* Ring: single-producer single-consumer records in a mirrored region.                        */
#define MEMPORT_WAIT_BLOCK    0 /* sleep on the semaphore */
#define MEMPORT_WAIT_SPIN     1 /* busy-poll until the deadline */
#define MEMPORT_WAIT_ADAPTIVE 2 /* spin for a bounded time, then sleep */

/* Create a ring whose data area holds `capacity` bytes (rounded up to pages). flags must be 0. */
MEMPORT_EXPORT int memport_ring_create(memport_ring_t **out, size_t capacity, unsigned flags);
MEMPORT_EXPORT int memport_ring_close(memport_ring_t *ring);
/* Attach copies of the ring's region and semaphores to msg, for the peer's memport_ring_import. */
MEMPORT_EXPORT int memport_ring_export(memport_ring_t *ring, memport_msg_t *msg);
/* Take the handles memport_ring_export attached (from index `first`) and map the ring. */
MEMPORT_EXPORT int memport_ring_import(memport_ring_t **out, memport_msg_t *msg, size_t first);
/* Largest record the ring accepts. */
MEMPORT_EXPORT size_t memport_ring_max_record(const memport_ring_t *ring);
/* This endpoint's wait policy; spin_ns bounds the spinning of ADAPTIVE (0: the default). */
MEMPORT_EXPORT int memport_ring_set_wait(memport_ring_t *ring, int policy, int64_t spin_ns);
/* Producer: reserve `len` bytes, write them at *ptr, then commit (at most the reserved length). */
MEMPORT_EXPORT int memport_ring_reserve(memport_ring_t *ring, size_t len, void **ptr, int64_t timeout_ns);
MEMPORT_EXPORT int memport_ring_commit(memport_ring_t *ring, size_t len);
/* Consumer: the next record, in place, until memport_ring_release. */
MEMPORT_EXPORT int memport_ring_peek(memport_ring_t *ring, const void **ptr, size_t *len, int64_t timeout_ns);
MEMPORT_EXPORT int memport_ring_release(memport_ring_t *ring);
/* Copy-in / copy-out conveniences. read returns MEMPORT_EMSGSIZE (record kept) if cap is short. */
MEMPORT_EXPORT int memport_ring_write(memport_ring_t *ring, const void *data, size_t len, int64_t timeout_ns);
MEMPORT_EXPORT int memport_ring_read(memport_ring_t *ring, void *buf, size_t cap, size_t *len,
                                     int64_t timeout_ns);

/* ------------------------------------------------------------------------------------------ */
/* Channel: bulk payloads through a ring, large ones zero-copy from a shared pool, control    */
/* over a port.                                                                                */
typedef struct memport_chan_opts {
  size_t struct_size;        /* sizeof(memport_chan_opts_t), set by memport_chan_opts_init */
  size_t ring_capacity;      /* bytes of each direction's ring */
  size_t zerocopy_threshold; /* messages larger than this go zero-copy */
  size_t pool_buffer_size;   /* size of each pool buffer */
  unsigned pool_buffers;     /* number of pool buffers */
  int wait_policy;           /* MEMPORT_WAIT_* */
  int64_t spin_ns;           /* bound on spinning for MEMPORT_WAIT_ADAPTIVE */
  unsigned flags;            /* MEMPORT_CHAN_* (a later field: options without it are accepted) */
} memport_chan_opts_t;
#define MEMPORT_CHAN_NO_ONEOFF (1u << 0) /* refuse (MEMPORT_EMSGSIZE) what does not fit a pool buffer */
MEMPORT_EXPORT void memport_chan_opts_init(memport_chan_opts_t *opts);
/* Check options as the channel constructors do: 0, or MEMPORT_EINVAL with *field naming the first
 * wrong one (a static string; field may be NULL). */
MEMPORT_EXPORT int memport_chan_opts_check(const memport_chan_opts_t *opts, const char **field);

/* A received message or a zero-copy buffer being filled; owned by the caller's stack. priv is
 * the library's (which buffer, and a ticket the channel checks: a copy kept after the buffer was
 * released, sent or freed is refused with MEMPORT_EINVAL). */
typedef struct memport_buf {
  void *data;
  size_t len;
  uint64_t priv[3]; /* library use */
} memport_buf_t;

#define MEMPORT_SEND_ZEROCOPY (1u << 0) /* send through the pool whatever the size */

MEMPORT_EXPORT int memport_chan_pair(memport_chan_t **a, memport_chan_t **b, const memport_chan_opts_t *opts);
/* Run the channel handshake over `port` (the channel takes ownership of it). */
MEMPORT_EXPORT int memport_chan_open(memport_chan_t **out, memport_port_t *port, const memport_chan_opts_t *opts,
                                     int64_t timeout_ns);
MEMPORT_EXPORT int memport_chan_connect(memport_chan_t **out, const char *name, const memport_chan_opts_t *opts,
                                        int64_t timeout_ns);
MEMPORT_EXPORT int memport_chan_accept(memport_chan_t **out, memport_service_t *svc,
                                       const memport_chan_opts_t *opts, int64_t timeout_ns);
/* Non-blocking server path (memport_chan_accept_start(3)): take a connection and send our HELLO
 * without waiting for the client's; the caller owns *out and closes it with
 * memport_chan_pending_close, whatever memport_chan_pending_finish returned. Not thread-safe. */
MEMPORT_EXPORT int memport_chan_accept_start(memport_chan_pending_t **out, memport_service_t *svc,
                                             const memport_chan_opts_t *opts, int64_t timeout_ns);
/* The same over a connected port (the pending connection takes ownership of it). */
MEMPORT_EXPORT int memport_chan_open_start(memport_chan_pending_t **out, memport_port_t *port,
                                           const memport_chan_opts_t *opts);
/* A handle that becomes ready when the client's HELLO waits or the client is gone. Borrowed. */
MEMPORT_EXPORT int memport_chan_pending_pollable(const memport_chan_pending_t *pending, memport_os_handle_t *out);
/* Credentials of the client of a pending connection. */
MEMPORT_EXPORT int memport_chan_pending_peer(const memport_chan_pending_t *pending, memport_cred_t *out);
/* Complete the handshake: 0 with *out (the caller owns the channel); MEMPORT_EAGAIN/ETIMEDOUT:
 * not yet, the connection stays pending; other errors: the connection failed. */
MEMPORT_EXPORT int memport_chan_pending_finish(memport_chan_pending_t *pending, memport_chan_t **out,
                                               int64_t timeout_ns);
/* Free a pending connection (drops it if not finished). NULL is a no-op. */
MEMPORT_EXPORT int memport_chan_pending_close(memport_chan_pending_t *pending);
/* Credentials of the process at the other end, as seen when the connection was made. */
MEMPORT_EXPORT int memport_chan_peer(const memport_chan_t *chan, memport_cred_t *out);
MEMPORT_EXPORT int memport_chan_close(memport_chan_t *chan);
MEMPORT_EXPORT int memport_chan_send(memport_chan_t *chan, const void *data, size_t len, unsigned flags,
                                     int64_t timeout_ns);
/* Zero-copy send: take a pool buffer of `len` bytes, fill buf->data, then memport_chan_send_buf. */
MEMPORT_EXPORT int memport_chan_alloc(memport_chan_t *chan, size_t len, memport_buf_t *buf, int64_t timeout_ns);
MEMPORT_EXPORT int memport_chan_send_buf(memport_chan_t *chan, memport_buf_t *buf, int64_t timeout_ns);
/* Give back an allocated buffer without sending it. */
MEMPORT_EXPORT int memport_chan_free_buf(memport_chan_t *chan, memport_buf_t *buf);
/* Receive the next message in place (read-only); hand it back with memport_chan_release. */
MEMPORT_EXPORT int memport_chan_recv(memport_chan_t *chan, memport_buf_t *buf, int64_t timeout_ns);
MEMPORT_EXPORT int memport_chan_release(memport_chan_t *chan, memport_buf_t *buf);
/* Where a received, not yet released buffer lives (memport_chan_buf_kind(3)): the ring, which
 * lends one message at a time, a pool buffer, or a one-off region; MEMPORT_EINVAL for any other. */
#define MEMPORT_CHAN_BUF_RING   1
#define MEMPORT_CHAN_BUF_POOL   2
#define MEMPORT_CHAN_BUF_REGION 3
MEMPORT_EXPORT int memport_chan_buf_kind(memport_chan_t *chan, const memport_buf_t *buf);
/* Send `len` bytes and the handles of `handles` (its bytes are ignored) as one message, in order
 * with the others. The handles are moved (gone from `handles` on success) unless flags has
 * MEMPORT_ATTACH_COPY. The bytes go through the ring: at most memport_ring_max_record - 8. */
MEMPORT_EXPORT int memport_chan_send_msg(memport_chan_t *chan, const void *data, size_t len, memport_msg_t *handles,
                                         unsigned flags, int64_t timeout_ns);
/* memport_chan_recv that also yields the message's handles into `handles` (cleared first; none for
 * a message without). memport_chan_recv and memport_chan_recv_copy close them. */
MEMPORT_EXPORT int memport_chan_recv_msg(memport_chan_t *chan, memport_buf_t *buf, memport_msg_t *handles,
                                         int64_t timeout_ns);
/* Receive by copying into dst; MEMPORT_EMSGSIZE (message kept) if cap is too small. */
MEMPORT_EXPORT int memport_chan_recv_copy(memport_chan_t *chan, void *dst, size_t cap, size_t *len,
                                          int64_t timeout_ns);
/* Counters of one endpoint (memport_chan_stats(3)); set struct_size before the call. */
typedef struct memport_chan_stats {
  size_t struct_size; /* in: sizeof(memport_chan_stats_t); out: the bytes filled */
  uint64_t sent_ring_msgs, sent_ring_bytes;     /* copied through the ring */
  uint64_t sent_pool_msgs, sent_pool_bytes;     /* zero-copy through a pool buffer */
  uint64_t sent_oneoff_msgs, sent_oneoff_bytes; /* in a one-off region */
  uint64_t recv_ring_msgs, recv_ring_bytes;
  uint64_t recv_pool_msgs, recv_pool_bytes;
  uint64_t recv_oneoff_msgs, recv_oneoff_bytes;
  uint64_t oneoff_fallbacks; /* sent one-off although there is a pool: larger than its buffers */
  uint64_t oneoff_refused;   /* refused with MEMPORT_EMSGSIZE (MEMPORT_CHAN_NO_ONEOFF) */
  uint64_t wakeups_sent, wakeups_received; /* wake-ups through the port */
  uint64_t tx_ring_used, tx_ring_capacity; /* bytes of our ring not yet consumed by the peer */
  uint64_t rx_ring_used, rx_ring_capacity; /* bytes of the peer's ring waiting for us */
  uint32_t tx_pool_buffers;   /* our pool (0 until first needed) */
  uint32_t tx_pool_allocated; /* ... allocated here, not sent yet */
  uint32_t tx_pool_lent;      /* ... sent, not yet released by the peer */
  uint32_t rx_pool_buffers;   /* the peer's pool (0 until it sends through it) */
  uint32_t rx_pool_held;      /* ... received here, not yet released */
  uint32_t reserved;
  uint64_t sent_handle_msgs, sent_handles; /* messages with handles (memport_chan_send_msg), handles */
  uint64_t recv_handle_msgs, recv_handles; /* ... received (also counted as ring messages) */
} memport_chan_stats_t;
/* Fill *stats (private counters: no system call, nothing shared written). Same thread rules as
 * the other calls on the endpoint. */
MEMPORT_EXPORT int memport_chan_stats(memport_chan_t *chan, memport_chan_stats_t *stats);
/* A handle that is ready while a message waits or the receiving side has ended, and, after a send,
 * alloc or send_buf failed with MEMPORT_EAGAIN, once it could succeed (memport_chan_pollable(3)). */
MEMPORT_EXPORT int memport_chan_pollable(memport_chan_t *chan, memport_os_handle_t *out);
#define MEMPORT_CHAN_SHUT_SEND (1u << 0) /* this end sends no more */
/* Half-close: the peer receives what was sent, then MEMPORT_ECLOSED; replies still arrive here. */
MEMPORT_EXPORT int memport_chan_shutdown(memport_chan_t *chan, unsigned how);

/* ------------------------------------------------------------------------------------------ */
/* Topic: one publisher, many subscribers; loaned pool buffers shared read-only with every     */
/* subscriber, small messages copied into each subscriber's queue.                             */
#define MEMPORT_TOPIC_BLOCK       0 /* publish waits for the slowest subscriber's queue (back-pressure) */
#define MEMPORT_TOPIC_DROP_OLDEST 1 /* a full queue loses its oldest message; the subscriber counts it */

typedef struct memport_topic_opts {
  size_t struct_size;       /* sizeof(memport_topic_opts_t), set by memport_topic_opts_init */
  unsigned depth;           /* per-subscriber queue depth, messages (default 64; 1..4096) */
  int overflow;             /* MEMPORT_TOPIC_BLOCK (default) or MEMPORT_TOPIC_DROP_OLDEST */
  unsigned history;         /* last K messages given to a subscriber that joins (default 0; <= depth, < buffers) */
  size_t inline_max;        /* messages up to this size are copied into each queue (default 200; <= 4096) */
  size_t buffer_size;       /* pool buffer size, a page multiple (default 1 MiB) */
  unsigned buffers;         /* pool buffers (default 32; 1..4096) */
  unsigned max_subscribers; /* default 64, at most 1024 */
  int wait_policy;          /* MEMPORT_WAIT_* of this side's waits */
  int64_t spin_ns;          /* bound on spinning for MEMPORT_WAIT_ADAPTIVE (0: the default) */
} memport_topic_opts_t;
MEMPORT_EXPORT void memport_topic_opts_init(memport_topic_opts_t *opts);
/* Check options: 0, or MEMPORT_EINVAL with *field naming the first wrong one (field may be NULL). */
MEMPORT_EXPORT int memport_topic_opts_check(const memport_topic_opts_t *opts, const char **field);

/* Publisher: serves `name` (same uid by default). Not thread-safe: one thread at a time. Joins,
 * releases and deaths are handled inside its calls; one that publishes rarely calls
 * memport_pub_process when its pollable handle is ready. */
MEMPORT_EXPORT int memport_pub_create(memport_pub_t **out, const char *name, const memport_topic_opts_t *opts);
/* Also accept subscribers running as `uid`. */
MEMPORT_EXPORT int memport_pub_allow_uid(memport_pub_t *pub, uid_t uid);
/* Decide per subscriber at its join (MEMPORT_ACCESS_DENY refuses it; NULL: everyone allowed). */
MEMPORT_EXPORT int memport_pub_set_access(memport_pub_t *pub, memport_access_fn fn, void *arg);
/* Loan a pool buffer of `len` bytes to fill in place (MEMPORT_EMSGSIZE beyond buffer_size). */
MEMPORT_EXPORT int memport_pub_loan(memport_pub_t *pub, size_t len, memport_buf_t *buf, int64_t timeout_ns);
/* Publish a loaned buffer (buf->len may be lowered) to every subscriber; on failure the loan is
 * still the caller's and nobody received anything. */
MEMPORT_EXPORT int memport_pub_publish(memport_pub_t *pub, memport_buf_t *buf, int64_t timeout_ns);
/* Give a loan back unpublished. */
MEMPORT_EXPORT int memport_pub_discard(memport_pub_t *pub, memport_buf_t *buf);
/* Copy-in publish of `len` bytes. */
MEMPORT_EXPORT int memport_pub_send(memport_pub_t *pub, const void *data, size_t len, int64_t timeout_ns);
/* Handle joins, releases and deaths now, never waiting. */
MEMPORT_EXPORT int memport_pub_process(memport_pub_t *pub);
/* Subscribers joined: a count, or an error. */
MEMPORT_EXPORT int memport_pub_subscribers(memport_pub_t *pub);
/* A handle ready when a join, a death or a release waits, and, after a loan or publish failed
 * with MEMPORT_EAGAIN/ETIMEDOUT, once it could succeed. Borrowed. */
MEMPORT_EXPORT int memport_pub_pollable(memport_pub_t *pub, memport_os_handle_t *out);
/* Orderly close: subscribers receive everything published, then MEMPORT_ECLOSED. NULL: no-op. */
MEMPORT_EXPORT int memport_pub_close(memport_pub_t *pub);

/* Counters of a publisher (memport_pub_stats(3)); set struct_size before the call. */
typedef struct memport_pub_stats {
  size_t struct_size;       /* in: sizeof(memport_pub_stats_t); out: the bytes filled */
  uint64_t published;       /* messages published */
  uint64_t published_pool;  /* of them, zero-copy in a pool buffer (the others copied into each queue) */
  uint64_t delivered;       /* messages taken by subscribers, all of them, since creation */
  uint64_t dropped;         /* messages dropped from subscribers' queues (drop-oldest), since creation */
  uint64_t joined;          /* subscribers that joined, since creation */
  uint64_t left;            /* subscribers gone (closed, died or dropped for breaking the protocol) */
  uint32_t subscribers;     /* subscribers now: memport_pub_sub_stats takes 0 .. subscribers-1 */
  uint32_t history;         /* messages kept now for late joiners */
  uint32_t buffers;         /* pool buffers */
  uint32_t buffers_free;    /* of them: free */
  uint32_t buffers_loaned;  /* loaned to the application, not yet published or discarded */
  uint32_t buffers_in_use;  /* published and still queued, held by a subscriber or kept in the history */
} memport_pub_stats_t;
/* Fill *stats, after taking what subscribers released (as memport_pub_process, but no joins). */
MEMPORT_EXPORT int memport_pub_stats(memport_pub_t *pub, memport_pub_stats_t *stats);
/* One subscriber of a publisher (memport_pub_sub_stats(3)). */
typedef struct memport_pub_sub_stats {
  size_t struct_size;  /* in: sizeof(memport_pub_sub_stats_t); out: the bytes filled */
  memport_cred_t cred; /* the subscriber's process, as the kernel reported it at its join */
  uint64_t delivered;  /* messages it took */
  uint64_t dropped;    /* messages dropped from its queue (drop-oldest) */
  uint32_t queued;     /* messages in its queue now, not taken */
  uint32_t held;       /* pool buffers it took and has not released */
} memport_pub_sub_stats_t;
/* Subscriber `index` (< memport_pub_stats' subscribers); MEMPORT_ENOENT past the last. */
MEMPORT_EXPORT int memport_pub_sub_stats(memport_pub_t *pub, unsigned index, memport_pub_sub_stats_t *stats);

/* Subscriber: connects to the publisher of `name` (which must be running its calls to answer).
 * opts_or_null: only wait_policy and spin_ns are used. Not thread-safe: one thread at a time. */
MEMPORT_EXPORT int memport_sub_connect(memport_sub_t **out, const char *name, const memport_topic_opts_t *opts_or_null,
                                       int64_t timeout_ns);
/* Non-blocking join (memport_sub_connect_start(3)): connect and send the request without waiting
 * for the publisher's answer, so one thread can run both the publisher and a subscriber. Then
 * memport_sub_connect_finish until it returns 0 (joined); MEMPORT_EAGAIN/ETIMEDOUT: not yet
 * (memport_sub_pollable is ready when the answer waits); other errors: refused (close it). Until
 * joined, the other calls but memport_sub_pollable and memport_sub_close give MEMPORT_EINVAL. */
MEMPORT_EXPORT int memport_sub_connect_start(memport_sub_t **out, const char *name, const memport_topic_opts_t *opts_or_null);
MEMPORT_EXPORT int memport_sub_connect_finish(memport_sub_t *sub, int64_t timeout_ns);
/* The next message, a read-only view, until memport_sub_release. After the publisher is gone and
 * everything was received: MEMPORT_ECLOSED (it closed) or MEMPORT_EPEER (it died). */
MEMPORT_EXPORT int memport_sub_recv(memport_sub_t *sub, memport_buf_t *buf, int64_t timeout_ns);
MEMPORT_EXPORT int memport_sub_release(memport_sub_t *sub, memport_buf_t *buf);
/* Receive by copying into dst; MEMPORT_EMSGSIZE (message kept) if cap is too small. */
MEMPORT_EXPORT int memport_sub_recv_copy(memport_sub_t *sub, void *dst, size_t cap, size_t *len, int64_t timeout_ns);
/* Messages this subscriber lost so far under MEMPORT_TOPIC_DROP_OLDEST. */
MEMPORT_EXPORT int memport_sub_missed(memport_sub_t *sub, uint64_t *missed);
/* A handle ready whenever a message waits or the publisher is gone. Borrowed. */
MEMPORT_EXPORT int memport_sub_pollable(memport_sub_t *sub, memport_os_handle_t *out);
/* Leave the topic; buffers still held are given back. NULL is a no-op. */
MEMPORT_EXPORT int memport_sub_close(memport_sub_t *sub);
/* Counters of a subscriber (memport_sub_stats(3)); set struct_size before the call. */
typedef struct memport_sub_stats {
  size_t struct_size;      /* in: sizeof(memport_sub_stats_t); out: the bytes filled */
  uint64_t received;       /* messages received (memport_sub_recv, memport_sub_recv_copy) */
  uint64_t received_pool;  /* of them, views of the publisher's pool buffers */
  uint64_t missed;         /* messages lost under MEMPORT_TOPIC_DROP_OLDEST (memport_sub_missed) */
  uint32_t queued;         /* messages waiting in its queue now */
  uint32_t held;           /* messages received and not yet released */
  uint64_t buffer_size;    /* the publisher's pool buffers: the largest message it can send */
} memport_sub_stats_t;
MEMPORT_EXPORT int memport_sub_stats(memport_sub_t *sub, memport_sub_stats_t *stats);

#ifdef __cplusplus
}
#endif
#endif /* MEMPORT_H */
