/* SPDX-License-Identifier: MIT */
/* bridge_int.h: the bridge object shared by bridge.c (life, loop, CURVE), export.c and import.c. */
#ifndef MEMPORT_BRIDGE_INT_H
#define MEMPORT_BRIDGE_INT_H

#include "frame.h"

#include <memport.h>
#include <memport_bridge.h>

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <zmq.h>

/* A view lent to ZeroMQ (export): where it came from, so the loop can release it. ZeroMQ calls
 * the free function from its I/O thread; the loop is the only one that touches the source. */
struct memport__bridge_lent {
  memport_buf_t buf;
  void *owner;          /* the memport_sub_t or memport_chan_t it came from */
  uint32_t next;        /* the freed stack (index + 1; 0 ends it) */
  bool used;
  struct memport_bridge *b;
};

struct memport_bridge {
  int direction, kind;
  char name[MEMPORT_NAME_MAX + 1];
  char *endpoint;
  int hwm;
  memport_topic_opts_t topic;
  memport_chan_opts_t chan_opts;
  bool chan_opts_set;
  bool curve;
  unsigned char (*allowed)[32]; /* export with CURVE: the importers' public keys */
  unsigned nallowed;

  void *ctx, *sock, *zap;
  int wake[2];            /* a pipe: ZeroMQ's free function and memport_bridge_stop write to it */
  _Atomic int wake_armed; /* 1 from the write of the pipe's one byte (or just before) until it is read */
  volatile sig_atomic_t stop;
  int fatal;

  /* Export. */
  memport_sub_t *sub;
  memport_sub_t *joining;      /* export of a topic: the join in progress */
  uint64_t join_since;
  memport_service_t *svc;      /* channels, both directions */
  memport_chan_pending_t *pending;
  uint64_t pending_since;
  memport_chan_t *ch;
  void *ending;                /* a source that ended: closed once its lent views are back */
  bool ending_is_sub;
  uint64_t retry_at_ns;        /* export of a topic: next subscribe attempt */
  struct memport__bridge_lent *lent;
  uint32_t nlent, lent_free;   /* capacity; our free list (index + 1) */
  _Atomic uint32_t freed;      /* the stack ZeroMQ pushes released views on (index + 1) */
  _Atomic uint32_t freed_n;    /* views on that stack (ZeroMQ adds, the loop's reap takes away) */
  _Atomic uint32_t lent_out;   /* views lent to ZeroMQ and not given back by it yet */
  uint32_t in_flight;
  bool ring_held;              /* export of a channel: a ring message is lent, the next receive waits for it */
  memport_buf_t held;          /* received, not yet accepted by ZeroMQ */
  void *held_owner;
  int held_stage;              /* 0 none, 1 received, 2 header sent and held_msg made */
  zmq_msg_t held_msg;          /* the payload part, lending held.data (or a copy: held_copy) */
  bool held_copy;              /* a channel ring message: copied into held_msg, given back at once */
  uint64_t missed_base;        /* source_missed of the subscriptions that ended */
  uint64_t stream, seq, max_len;

  /* Import. */
  memport_pub_t *pub;
  size_t pub_buffer;           /* its buffers' size: larger messages are dropped and counted */
  zmq_msg_t in_hdr, in_body;
  bool have_in;                /* a parsed message waits for the local side */
  bool zmq_looked;             /* import: the last ZeroMQ call was a receive that found nothing */
  struct memport__bridge_frame in_f;
  struct memport__bridge_seqstate seqst;

  memport_bridge_stats_t st;
};

/* bridge.c */
MEMPORT_BRIDGE_HIDDEN uint64_t memport__bridge_now_ns(void);
MEMPORT_BRIDGE_HIDDEN int memport__bridge_zmq_err(void);
MEMPORT_BRIDGE_HIDDEN int memport__bridge_pollable_fd(memport_os_handle_t h);
MEMPORT_BRIDGE_HIDDEN bool memport__bridge_sock_has(void *sock, int what);
/* Make the loop's pipe readable (at most one byte in it: see drain_wake). Async-signal-safe. */
MEMPORT_BRIDGE_HIDDEN void memport__bridge_wake(struct memport_bridge *b);

/* export.c */
MEMPORT_BRIDGE_HIDDEN int memport__bridge_export_init(struct memport_bridge *b);
MEMPORT_BRIDGE_HIDDEN int memport__bridge_export_process(struct memport_bridge *b);
MEMPORT_BRIDGE_HIDDEN int memport__bridge_export_fds(struct memport_bridge *b, struct pollfd *fds, int n,
                                                     int64_t *timeout_ns);
MEMPORT_BRIDGE_HIDDEN void memport__bridge_export_fini(struct memport_bridge *b);
MEMPORT_BRIDGE_HIDDEN void memport__bridge_reap(struct memport_bridge *b, bool all);

/* import.c */
MEMPORT_BRIDGE_HIDDEN int memport__bridge_import_init(struct memport_bridge *b);
MEMPORT_BRIDGE_HIDDEN int memport__bridge_import_process(struct memport_bridge *b);
MEMPORT_BRIDGE_HIDDEN int memport__bridge_import_fds(struct memport_bridge *b, struct pollfd *fds, int n,
                                                     int64_t *timeout_ns);
MEMPORT_BRIDGE_HIDDEN void memport__bridge_import_fini(struct memport_bridge *b);

/* Both: the local channel side (serve the name, one client at a time). */
MEMPORT_BRIDGE_HIDDEN int memport__bridge_chan_progress(struct memport_bridge *b);

#endif
