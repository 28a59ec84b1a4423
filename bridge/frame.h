/* SPDX-License-Identifier: MIT */
/* frame.h: the bridge's wire format (one header frame, one payload frame) and the importer's sequence accounting. */
#ifndef MEMPORT_BRIDGE_FRAME_H
#define MEMPORT_BRIDGE_FRAME_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define MEMPORT_BRIDGE_HIDDEN __attribute__((visibility("hidden")))
#else
#define MEMPORT_BRIDGE_HIDDEN
#endif

/* Each message is a two-part ZeroMQ message: this header (little-endian, fixed size), then the
 * payload exactly as the local side had it. Nothing else is ever sent. */
#define MEMPORT__BRIDGE_MAGIC 0x5242504du /* "MPBR" */
#define MEMPORT__BRIDGE_VERSION 1u
#define MEMPORT__BRIDGE_DATA 1u
#define MEMPORT__BRIDGE_HDR 48u
/* A payload longer than this is refused whatever the header says (16 GiB). */
#define MEMPORT__BRIDGE_MAX_LEN ((uint64_t)1 << 34)

struct memport__bridge_frame {
  uint64_t stream;  /* the exporter's run: random, never 0; a new one after a restart */
  uint64_t seq;     /* 1, 2, 3... within the stream */
  uint64_t len;     /* payload bytes (the payload frame's size) */
  uint64_t missed;  /* messages the exporter's source lost so far (drop-oldest), cumulative */
  uint64_t max_len; /* the largest message the source can send (its pool buffers); 0: no bound */
};

/* Write the header for f into out (MEMPORT__BRIDGE_HDR bytes). */
MEMPORT_BRIDGE_HIDDEN void memport__bridge_frame_build(unsigned char *out, const struct memport__bridge_frame *f);
/* Parse a header frame of hlen bytes whose payload frame has payload_len bytes: 0 and *f, or
 * MEMPORT_EPROTO (wrong size, magic, version, type, stream 0, seq 0, len not the payload's,
 * missed or max_len that cannot be). Reads hdr once, byte by byte. */
MEMPORT_BRIDGE_HIDDEN int memport__bridge_frame_parse(const void *hdr, size_t hlen, size_t payload_len,
                                                      struct memport__bridge_frame *f);

/* The importer's view of the exporter's stream. */
struct memport__bridge_seqstate {
  uint64_t stream, seq; /* the last message taken (stream 0: none yet) */
  uint64_t missed;      /* the last source-missed count of this stream */
};
/* Account for a parsed frame: 0 (take it; *lost, *skipped and *restart say what the gap means),
 * or MEMPORT_EPROTO (an old or repeated sequence number, or a missed count going backwards: drop
 * it, the state is unchanged). */
MEMPORT_BRIDGE_HIDDEN int memport__bridge_seq_account(struct memport__bridge_seqstate *st,
                                                      const struct memport__bridge_frame *f, uint64_t *lost,
                                                      uint64_t *skipped, int *restart);

#endif
