/* SPDX-License-Identifier: MIT */
/* fuzz_bridge.c: libFuzzer harness: the bridge's header parser (memport__bridge_frame_parse) and the importer's sequence accounting (memport__bridge_seq_account), checked against a model. */
#include "fuzz.h"

#include "../../bridge/frame.h"

/*
 * Per input: a run of frames as an importer would meet them. Each step takes one selector byte:
 * the header is either raw bytes from the input (any length 0..64), or a valid header built with
 * memport__bridge_frame_build whose fields (a stream from a small set, so streams repeat; a
 * sequence number near the last one, before it or far past it; any len, missed, max_len) come
 * from the input, with one byte optionally overwritten; the payload length claimed by the
 * second frame is near the header's len or any number. Every header is parsed; an accepted one
 * goes through the accounting.
 *
 * Checked: the parser accepts exactly what the format allows (a reference decoder); an accepted
 * header rebuilds to the same bytes; the accounting agrees with a model (gaps within a stream,
 * skipped at a new stream, restarts, old/repeated numbers and a missed count going backwards
 * refused with the state unchanged), and within a stream the messages taken, lost and skipped
 * add up to its last sequence number.
 */

#define MAXRAW 64u

static uint64_t le(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

/* The format, decoded independently: 1 when the header is acceptable. */
static int ref_valid(const unsigned char *h, size_t hlen, size_t plen) {
  if (hlen != MEMPORT__BRIDGE_HDR)
    return 0;
  uint64_t stream = le(h + 8, 8), seq = le(h + 16, 8), len = le(h + 24, 8), missed = le(h + 32, 8),
           max_len = le(h + 40, 8);
  if (le(h, 4) != 0x5242504du || le(h + 4, 2) != 1 || le(h + 6, 2) != 1)
    return 0;
  if (stream == 0 || seq == 0 || len != (uint64_t)plen || len > ((uint64_t)1 << 34))
    return 0;
  if (max_len > ((uint64_t)1 << 34) || (max_len != 0 && len > max_len) || missed > UINT64_MAX / 2)
    return 0;
  return 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct fz in = {data, size};
  struct memport__bridge_seqstate st = {0, 0, 0};
  uint64_t taken = 0, lost_sum = 0, skipped_sum = 0; /* of the current stream */
  for (int step = 0; step < 256 && !fz_empty(&in); step++) {
    uint8_t sel = fz_u8(&in);
    unsigned char h[MAXRAW];
    size_t hlen;
    uint64_t plen;
    if ((sel & 3) == 0) {
      hlen = fz_u8(&in) % (MAXRAW + 1);
      fz_bytes(&in, h, hlen);
      plen = fz_u64(&in);
    } else {
      struct memport__bridge_frame f;
      f.stream = (sel & 4) ? fz_u64(&in) : (uint64_t)(fz_u8(&in) % 4); /* 0 too: refused */
      uint8_t how = fz_u8(&in);
      int64_t d = (int8_t)fz_u8(&in);
      f.seq = (how & 1) ? fz_u64(&in) : st.seq + (uint64_t)d; /* around the last one */
      f.len = (how & 2) ? fz_u64(&in) : fz_u16(&in);
      f.missed = (how & 4) ? fz_u64(&in) : st.missed + (uint64_t)(int8_t)fz_u8(&in);
      f.max_len = (how & 8) ? fz_u64(&in) : (how & 16) ? 0 : f.len + fz_u8(&in);
      memport__bridge_frame_build(h, &f);
      hlen = MEMPORT__BRIDGE_HDR;
      if (how & 32) /* one byte anywhere in it */
        h[fz_u8(&in) % MEMPORT__BRIDGE_HDR] = fz_u8(&in);
      if (how & 64)
        hlen = fz_u8(&in) % (MAXRAW + 1);
      plen = (how & 128) ? fz_u64(&in) : f.len;
    }
    size_t payload_len = (size_t)plen;
    struct memport__bridge_frame f;
    memset(&f, 0xa5, sizeof f);
    struct memport__bridge_frame untouched = f;
    int rc = memport__bridge_frame_parse(h, hlen, payload_len, &f);
    int want = ref_valid(h, hlen, payload_len);
    if ((rc == 0) != (want == 1) || (rc != 0 && rc != MEMPORT_EPROTO)) {
      fprintf(stderr, "parse returned %d, the reference says %d\n", rc, want);
      abort();
    }
    if (rc != 0) {
      if (memcmp(&f, &untouched, sizeof f) != 0)
        abort(); /* a refused header leaves *f alone */
      continue;
    }
    unsigned char again[MEMPORT__BRIDGE_HDR];
    memport__bridge_frame_build(again, &f);
    if (memcmp(again, h, MEMPORT__BRIDGE_HDR) != 0 || f.len != (uint64_t)payload_len)
      abort();

    struct memport__bridge_seqstate before = st;
    uint64_t lost = 77, skipped = 77;
    int restart = 77;
    rc = memport__bridge_seq_account(&st, &f, &lost, &skipped, &restart);
    if (f.stream == before.stream) {
      int ok = f.seq > before.seq && f.missed >= before.missed;
      if ((rc == 0) != ok)
        abort();
      if (rc != 0) {
        if (rc != MEMPORT_EPROTO || memcmp(&st, &before, sizeof st) != 0)
          abort();
        continue;
      }
      if (lost != f.seq - before.seq - 1 || skipped != 0 || restart != 0)
        abort();
    } else {
      if (rc != 0 || lost != 0 || skipped != f.seq - 1 || restart != (before.stream != 0))
        abort();
      taken = lost_sum = skipped_sum = 0;
    }
    if (st.stream != f.stream || st.seq != f.seq || st.missed != f.missed)
      abort();
    taken++;
    lost_sum += lost;
    skipped_sum += skipped;
    if (taken + lost_sum + skipped_sum != st.seq) /* every number of the stream is accounted for once */
      abort();
  }
  return 0;
}
