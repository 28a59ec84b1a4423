/* SPDX-License-Identifier: MIT */
/* frame.c: building and checking the bridge's header frames, and the importer's sequence accounting (fuzzed: tests/fuzz/fuzz_bridge.c). */
#include "frame.h"

#include <memport.h>

static void put16(unsigned char *p, uint16_t v) {
  p[0] = (unsigned char)v;
  p[1] = (unsigned char)(v >> 8);
}

static void put32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

/* Layout: magic u32 @0, version u16 @4, type u16 @6, stream @8, seq @16, len @24, missed @32,
 * max_len @40. */
void memport__bridge_frame_build(unsigned char *out, const struct memport__bridge_frame *f) {
  put32(out, MEMPORT__BRIDGE_MAGIC);
  put16(out + 4, MEMPORT__BRIDGE_VERSION);
  put16(out + 6, MEMPORT__BRIDGE_DATA);
  put64(out + 8, f->stream);
  put64(out + 16, f->seq);
  put64(out + 24, f->len);
  put64(out + 32, f->missed);
  put64(out + 40, f->max_len);
}

int memport__bridge_frame_parse(const void *hdr, size_t hlen, size_t payload_len, struct memport__bridge_frame *f) {
  if (hdr == NULL || hlen != MEMPORT__BRIDGE_HDR)
    return MEMPORT_EPROTO;
  unsigned char b[MEMPORT__BRIDGE_HDR];
  const unsigned char *src = hdr;
  for (size_t i = 0; i < sizeof b; i++) /* loaded once */
    b[i] = src[i];
  struct memport__bridge_frame v;
  v.stream = get(b + 8, 8);
  v.seq = get(b + 16, 8);
  v.len = get(b + 24, 8);
  v.missed = get(b + 32, 8);
  v.max_len = get(b + 40, 8);
  if (get(b, 4) != MEMPORT__BRIDGE_MAGIC || get(b + 4, 2) != MEMPORT__BRIDGE_VERSION ||
      get(b + 6, 2) != MEMPORT__BRIDGE_DATA)
    return MEMPORT_EPROTO;
  if (v.stream == 0 || v.seq == 0 || v.len != (uint64_t)payload_len || v.len > MEMPORT__BRIDGE_MAX_LEN ||
      v.max_len > MEMPORT__BRIDGE_MAX_LEN || (v.max_len != 0 && v.len > v.max_len) || v.missed > UINT64_MAX / 2)
    return MEMPORT_EPROTO;
  *f = v;
  return 0;
}

int memport__bridge_seq_account(struct memport__bridge_seqstate *st, const struct memport__bridge_frame *f,
                                uint64_t *lost, uint64_t *skipped, int *restart) {
  *lost = *skipped = 0;
  *restart = 0;
  if (f->stream == st->stream) {
    if (f->seq <= st->seq || f->missed < st->missed)
      return MEMPORT_EPROTO;
    *lost = f->seq - st->seq - 1;
  } else {
    /* A new exporter run (or the first we hear of): what it sent before reached someone else or
     * nobody; we cannot tell which, so it is counted apart from gaps. */
    *restart = st->stream != 0;
    *skipped = f->seq - 1;
  }
  st->stream = f->stream;
  st->seq = f->seq;
  st->missed = f->missed;
  return 0;
}
