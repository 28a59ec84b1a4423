/* SPDX-License-Identifier: MIT */
/* chan_blob.c: the channel's oversized messages: each in a one-off region sent over the port, ordered by a ring record. */
#include "chan.h"

#include <string.h>

#define CHAN_BLOB_DRAIN_MAX 65536u /* control messages read while looking for an oversized message's region */

int memport__chan_blob_alloc(memport_chan_t *ch, size_t len, memport_buf_t *buf) {
  /* A one-off region, sealed read-only when sent. */
  memport_region_t *region;
  int rc = memport_region_create(&region, len != 0 ? len : 1, 0);
  if (rc < 0)
    return rc;
  void *map;
  rc = memport_region_map(region, 0, &map);
  if (rc < 0) {
    memport_region_close(region);
    return rc;
  }
  MEMPORT__UNUSED(ch);
  buf->data = map;
  buf->len = len;
  buf->priv[0] = MEMPORT__BUF_TAG(MEMPORT__BUF_TX_BLOB, 0);
  buf->priv[1] = memport_region_size(region);
  buf->priv[2] = (uintptr_t)region;
  return 0;
}

void memport__chan_blob_free(memport_buf_t *buf) {
  memport_unmap(buf->data);
  memport_region_close((memport_region_t *)(uintptr_t)buf->priv[2]);
  memset(buf, 0, sizeof *buf);
}

int memport__chan_blob_send(memport_chan_t *ch, memport_buf_t *buf, uint64_t deadline) {
  if (buf->len > buf->priv[1])
    return MEMPORT_EINVAL;
  /* At most MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT oversized messages the consumer has not taken yet:
   * a consumer that does not read pins that many regions, not as many as its port holds. */
  int rc;
  if (ch->tx_blobs_sent >= MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT) {
    rc = memport__chan_wait_consumed(ch, ch->tx_blob_end[ch->tx_blobs_sent % MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT],
                                     deadline);
    if (rc < 0)
      return rc;
  }
  /* Reserve the ring record first so nothing can fail after the region has gone out. */
  memport_region_t *region = (memport_region_t *)(uintptr_t)buf->priv[2];
  void *slot;
  rc = memport__chan_reserve(ch, sizeof(struct memport__rec_blob), &slot, deadline);
  if (rc < 0)
    return rc;
  memport_region_t *ro = NULL;
  rc = memport_region_is_readonly(region);
  if (rc == 0)
    rc = memport_region_readonly(region, &ro); /* our writable mapping stays writable */
  else if (rc > 0)
    rc = memport_region_dup(region, 0, &ro);
  struct memport__ctl_blob b = {{MEMPORT__CTL_MAGIC, MEMPORT__CTL_BLOB, 0}, ch->tx_blob_seq, 0, buf->len};
  memport_msg_clear(ch->ctl_out);
  if (rc == 0)
    rc = memport_msg_attach_region(ch->ctl_out, ro, 0);
  if (rc == 0)
    rc = memport__chan_ctl_send(ch, &b, sizeof b, deadline);
  memport_msg_clear(ch->ctl_out);
  if (rc < 0) {
    memport__ring_unreserve(ch->tx_ring);
    return rc;
  }
  struct memport__rec_blob d = {ch->tx_blob_seq++, 0, buf->len};
  memcpy(slot, &d, sizeof d);
  rc = memport__chan_commit(ch, sizeof d, MEMPORT__REC_BLOB);
  ch->tx_blob_end[ch->tx_blobs_sent++ % MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT] = memport__ring_produced(ch->tx_ring);
  memport__chan_blob_free(buf);
  return rc;
}

int memport__chan_blob_arrived(memport_chan_t *ch, memport_msg_t *m, const unsigned char *b, size_t len) {
  struct memport__ctl_blob blob;
  if (len != sizeof blob || memport_msg_handle_count(m) != 1 ||
      memport_msg_handle_kind(m, 0) != MEMPORT_HANDLE_REGION)
    return MEMPORT_EPROTO;
  memcpy(&blob, b, sizeof blob);
  if (blob.seq != ch->rx_blob_announced || memport__chan_blobs_full(ch) || blob.len > SIZE_MAX)
    return MEMPORT_EPROTO;
  memport_region_t *region;
  int rc = memport_msg_take_region(m, 0, &region);
  if (rc < 0)
    return rc;
  if (memport_region_size(region) < blob.len) {
    memport_region_close(region);
    return MEMPORT_EPROTO;
  }
  struct memport__chan_blob *s =
      &ch->rx_blobs[(ch->rx_blobs_head + ch->rx_blobs_count) % MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT];
  s->region = region;
  s->len = blob.len;
  ch->rx_blobs_count++;
  ch->rx_blob_announced++;
  return 0;
}

void memport__chan_blob_lost(memport_chan_t *ch) {
  struct memport__chan_blob *s =
      &ch->rx_blobs[(ch->rx_blobs_head + ch->rx_blobs_count) % MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT];
  s->region = NULL;
  s->len = 0;
  ch->rx_blobs_count++;
  ch->rx_blob_announced++;
}

static void pop(memport_chan_t *ch) {
  ch->rx_blobs_head = (ch->rx_blobs_head + 1) % MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT;
  ch->rx_blobs_count--;
  ch->rx_blob_seq++;
}

int memport__chan_blob_take(memport_chan_t *ch, const struct memport__chan_rec *rec, void **map, size_t *maplen) {
  /* Its region was sent before its record was committed, so it is in the port, but it may sit
   * behind more control messages than one drain reads (a release per pool buffer, sent while the
   * release queue was full): read on until it is there or the port is empty. The bound only
   * stops a peer that floods the port without ever sending the region. */
  for (unsigned n = 0; ch->rx_blobs_count == 0 && n < CHAN_BLOB_DRAIN_MAX; n++) {
    int rc = memport__chan_pump(ch, 0);
    if (rc == MEMPORT_EAGAIN || rc == MEMPORT_ETIMEDOUT || rc == MEMPORT_EPEER)
      break;
    if (rc < 0)
      return rc;
  }
  if (ch->rx_blobs_count == 0)
    return memport__chan_break(ch, MEMPORT_EPROTO);
  struct memport__chan_blob *s = &ch->rx_blobs[ch->rx_blobs_head];
  if (s->region == NULL) { /* its region never arrived (memport__chan_pump): this message is lost */
    pop(ch);
    int rc = memport__chan_ring_error(ch, memport__ring_release(ch->rx_ring));
    return rc < 0 ? rc : MEMPORT_EMFILE;
  }
  if (s->len != rec->blob.len)
    return memport__chan_break(ch, MEMPORT_EPROTO);
  int rc = memport_region_map(s->region, MEMPORT_MAP_READONLY, map);
  if (rc < 0)
    return rc;
  *maplen = memport_region_size(s->region);
  memport_region_close(s->region);
  s->region = NULL;
  pop(ch);
  return 0;
}

void memport__chan_blob_fini(memport_chan_t *ch) {
  for (uint32_t i = 0; i < ch->rx_blobs_count; i++)
    memport_region_close(ch->rx_blobs[(ch->rx_blobs_head + i) % MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT].region);
  ch->rx_blobs_count = 0;
}
