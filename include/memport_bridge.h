/* SPDX-License-Identifier: MIT */
/* memport_bridge.h: carry a memport topic or channel between hosts over ZeroMQ (libmemport-bridge, memport_bridge(3)). */
#ifndef MEMPORT_BRIDGE_H
#define MEMPORT_BRIDGE_H

#include <memport.h>

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A bridge is one end of a link: an export (local -> network) or an import (network -> local).
 * It is driven by the caller's loop (memport_bridge_pollfds + memport_bridge_process) or by
 * memport_bridge_run; it starts no thread beyond ZeroMQ's own I/O thread. Not thread-safe: one
 * thread at a time, except memport_bridge_stop. */
typedef struct memport_bridge memport_bridge_t;

#define MEMPORT_BRIDGE_EXPORT 1 /* local topic or channel -> ZeroMQ socket bound to endpoint */
#define MEMPORT_BRIDGE_IMPORT 2 /* ZeroMQ socket connected to endpoint -> local topic or channel */

#define MEMPORT_BRIDGE_TOPIC   1 /* export: subscribes to `name`; import: publishes `name` */
#define MEMPORT_BRIDGE_CHANNEL 2 /* both: serves `name`; export receives from the channel a client
                                  * opens, import sends to it (one client at a time) */

#define MEMPORT_BRIDGE_MAX_FDS 8 /* memport_bridge_pollfds never fills more */
#define MEMPORT_BRIDGE_KEY_LEN 40 /* a CURVE key in Z85 text (zmq_curve_keypair), without the NUL */

typedef struct memport_bridge_opts {
  size_t struct_size;   /* sizeof(memport_bridge_opts_t), set by memport_bridge_opts_init */
  int direction;        /* MEMPORT_BRIDGE_EXPORT or MEMPORT_BRIDGE_IMPORT */
  int kind;             /* MEMPORT_BRIDGE_TOPIC or MEMPORT_BRIDGE_CHANNEL */
  const char *name;     /* the local name (copied) */
  const char *endpoint; /* ZeroMQ endpoint (copied): export binds it ("tcp://127.0.0.1:7000",
                         * "tcp://0.0.0.0:7000"), import connects to it ("tcp://hostA:7000") */
  int hwm;              /* ZeroMQ high-water mark, in messages, of each side's socket (default 16) */
  /* Import of a topic: the local topic's options. topic.buffer_size 0 (the default) creates the
   * topic when the first message arrives, its buffers as large as the exporter's. */
  memport_topic_opts_t topic;
  /* Import of a channel, and export of a channel: the local channel's options (NULL: defaults). */
  const memport_chan_opts_t *chan;
  /* CURVE (optional; all Z85 text, MEMPORT_BRIDGE_KEY_LEN characters, copied).
   * Export: curve_secret set = CURVE on; only importers whose public key is in curve_allowed
   * (NULL-terminated, at least one) are let in.
   * Import: curve_server = the exporter's public key, with curve_public/curve_secret its own pair. */
  const char *curve_secret;
  const char *curve_public;
  const char *curve_server;
  const char *const *curve_allowed;
} memport_bridge_opts_t;

/* Defaults: hwm 16, topic options from memport_topic_opts_init with buffer_size 0, no CURVE. */
MEMPORT_EXPORT void memport_bridge_opts_init(memport_bridge_opts_t *opts);
/* Check options as memport_bridge_create does: 0, or MEMPORT_EINVAL with *field naming the first
 * wrong one (a static string; field may be NULL). */
MEMPORT_EXPORT int memport_bridge_opts_check(const memport_bridge_opts_t *opts, const char **field);

/* Create a bridge: binds (export) or connects (import) its ZeroMQ socket, and sets up its local
 * side: a channel's service is served at once; an import of a topic with topic.buffer_size set
 * creates the topic at once (with 0, when the first message arrives); an export of a topic
 * subscribes when the topic appears, and again after its publisher restarts. MEMPORT_ENOTSUP:
 * CURVE keys given but this libzmq has no CURVE; MEMPORT_EBUSY: the endpoint is in use;
 * MEMPORT_EPROTO: ZeroMQ refused the socket or endpoint otherwise. */
MEMPORT_EXPORT int memport_bridge_create(memport_bridge_t **out, const memport_bridge_opts_t *opts);
/* The descriptors to wait on (events POLLIN) before the next memport_bridge_process: their
 * number (<= cap; MEMPORT_EINVAL when cap < MEMPORT_BRIDGE_MAX_FDS). *timeout_ns (may be NULL):
 * how long the caller may wait at most, MEMPORT_FOREVER when it may wait for a descriptor alone.
 * The set changes: ask again before each wait. */
MEMPORT_EXPORT int memport_bridge_pollfds(memport_bridge_t *bridge, struct pollfd *fds, unsigned cap,
                                          int64_t *timeout_ns);
/* Do everything that can be done now without waiting: carry messages, accept, reconnect, release.
 * 0, or a fatal error (the bridge can only be closed). */
MEMPORT_EXPORT int memport_bridge_process(memport_bridge_t *bridge);
/* Wait and process until timeout_ns passed (MEMPORT_FOREVER: until memport_bridge_stop): 0 when
 * the time is up or stopped, or a fatal error. */
MEMPORT_EXPORT int memport_bridge_run(memport_bridge_t *bridge, int64_t timeout_ns);
/* Make memport_bridge_run return soon. Async-signal-safe, and callable from any thread. */
MEMPORT_EXPORT void memport_bridge_stop(memport_bridge_t *bridge);

typedef struct memport_bridge_stats {
  size_t struct_size;  /* in: sizeof(memport_bridge_stats_t); out: the bytes filled */
  uint64_t messages;   /* carried: sent to the network (export), delivered locally (import) */
  uint64_t bytes;      /* their payload bytes */
  uint64_t lost;       /* import: messages an exporter sent that never arrived (sequence gaps) */
  uint64_t skipped;    /* import: messages an exporter had sent before this importer first heard
                        * of it (to an earlier importer, or lost while none was connected) */
  uint64_t source_missed; /* export: messages its topic subscription missed (drop-oldest); import:
                           * as last reported by the exporter */
  uint64_t dropped;    /* import: carried but not delivered: larger than the topic's buffers, or
                        * the channel's client went away with them queued */
  uint64_t malformed;  /* import: frames refused (bad header, length, order): dropped */
  uint64_t restarts;   /* import: new exporter runs seen; export: local (re)connections */
  uint32_t in_flight;  /* export: messages lent to ZeroMQ, not yet sent and released */
  uint32_t connected;  /* 1 while the local side is connected (topic subscribed, channel open) */
} memport_bridge_stats_t;
MEMPORT_EXPORT int memport_bridge_stats(memport_bridge_t *bridge, memport_bridge_stats_t *stats);

/* The endpoint as bound (export: "tcp://127.0.0.1:*" binds a free port, this says which) or as
 * given (import), NUL-terminated in buf: 0, or MEMPORT_EMSGSIZE when cap is too small. */
MEMPORT_EXPORT int memport_bridge_endpoint(memport_bridge_t *bridge, char *buf, size_t cap);

/* Close: local side and socket (messages not yet sent are dropped). NULL is a no-op. */
MEMPORT_EXPORT int memport_bridge_close(memport_bridge_t *bridge);

#ifdef __cplusplus
}
#endif

#endif
