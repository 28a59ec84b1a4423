/* SPDX-License-Identifier: MIT */
/* chan_blob.c: the channel's oversized messages: each in a one-off region sent over the port, ordered by a ring record. */
#include "chan.h"

#include <stdlib.h>
#include <string.h>

#define CHAN_BLOB_DRAIN_MAX 65536u /* control messages read while looking for an oversized message's region */

/* ------------------------------------------------------------------------------------------ */
/* One-off regions the application holds: a table private to the endpoint, indexed by the       */
/* buffer's tag and checked against its ticket, so a stale copy never unmaps or closes anything. */
/* Both directions use it (received and allocated regions): under ctl_lock.                    */

static int held_slot(memport_chan_t *ch, uint32_t *out) {
  for (uint32_t i = 0; i < ch->blobs_held_cap; i++)
    if (ch->blobs_held[i].ticket == 0) {
      *out = i;
      return 0;
    }
  if (ch->blobs_held_cap >= MEMPORT__CHAN_MAX_HELD_BLOBS)
    return MEMPORT_ENOMEM;
  uint32_t cap = ch->blobs_held_cap == 0 ? 8u : ch->blobs_held_cap * 2u;
  if (cap > MEMPORT__CHAN_MAX_HELD_BLOBS)
    cap = MEMPORT__CHAN_MAX_HELD_BLOBS;
  struct memport__chan_blob_held *t = realloc(ch->blobs_held, cap * sizeof t[0]);
  if (t == NULL)
    return MEMPORT_ENOMEM;
  memset(t + ch->blobs_held_cap, 0, (cap - ch->blobs_held_cap) * sizeof t[0]);
  *out = ch->blobs_held_cap;
  ch->blobs_held = t;
  ch->blobs_held_cap = cap;
  return 0;
}

/* The held one-off region `buf` names, if it is the one this copy was given for. */
static struct memport__chan_blob_held *held_find(memport_chan_t *ch, const memport_buf_t *buf, unsigned kind) {
  uint32_t i = MEMPORT__BUF_INDEX(buf->priv[0]);
  if (buf->priv[2] != (uintptr_t)ch || MEMPORT__BUF_KIND(buf->priv[0]) != kind || i >= ch->blobs_held_cap)
    return NULL;
  struct memport__chan_blob_held *h = &ch->blobs_held[i];
  if (h->ticket == 0 || h->ticket != buf->priv[1] || h->kind != kind)
    return NULL;
  return h;
}

static void held_drop(struct memport__chan_blob_held *h) {
  if (h->map != NULL)
    memport_unmap(h->map);
  memport_region_close(h->region);
  memset(h, 0, sizeof *h);
}

int memport__chan_blob_hold(memport_chan_t *ch, void *map, size_t maplen, size_t len, memport_buf_t *buf) {
  uint32_t i;
  memport__chan_lock(ch);
  int rc = held_slot(ch, &i);
  if (rc < 0) {
    memport__chan_unlock(ch);
    return rc;
  }
  struct memport__chan_blob_held *h = &ch->blobs_held[i];
  h->ticket = memport__chan_rx_ticket(ch);
  h->kind = MEMPORT__BUF_RX_BLOB;
  h->map = map;
  h->maplen = maplen;
  h->len = len;
  memport__chan_buf_set(ch, buf, map, len, MEMPORT__BUF_RX_BLOB, i, h->ticket);
  memport__chan_unlock(ch);
  return 0;
}

static int held_find_drop(memport_chan_t *ch, const memport_buf_t *buf, unsigned kind) {
  memport__chan_lock(ch);
  struct memport__chan_blob_held *h = held_find(ch, buf, kind);
  if (h != NULL)
    held_drop(h);
  memport__chan_unlock(ch);
  return h == NULL ? MEMPORT_EINVAL : 0;
}

int memport__chan_blob_release(memport_chan_t *ch, memport_buf_t *buf) {
  return held_find_drop(ch, buf, MEMPORT__BUF_RX_BLOB);
}

bool memport__chan_blob_held(memport_chan_t *ch, const memport_buf_t *buf) {
  return held_find(ch, buf, MEMPORT__BUF_RX_BLOB) != NULL;
}

void memport__chan_blob_held_fini(memport_chan_t *ch) {
  for (uint32_t i = 0; i < ch->blobs_held_cap; i++)
    if (ch->blobs_held[i].ticket != 0)
      held_drop(&ch->blobs_held[i]);
  free(ch->blobs_held);
  ch->blobs_held = NULL;
  ch->blobs_held_cap = 0;
}

int memport__chan_blob_alloc(memport_chan_t *ch, size_t len, memport_buf_t *buf) {
  /* A one-off region, sealed read-only when sent. */
  uint32_t i;
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
  memport__chan_lock(ch);
  rc = held_slot(ch, &i);
  if (rc < 0) {
    memport__chan_unlock(ch);
    memport_unmap(map);
    memport_region_close(region);
    return rc;
  }
  struct memport__chan_blob_held *h = &ch->blobs_held[i];
  h->ticket = memport__chan_tx_ticket(ch);
  h->kind = MEMPORT__BUF_TX_BLOB;
  h->map = map;
  h->maplen = memport_region_size(region);
  h->len = len;
  h->region = region;
  memport__chan_buf_set(ch, buf, map, len, MEMPORT__BUF_TX_BLOB, i, h->ticket);
  memport__chan_unlock(ch);
  return 0;
}

int memport__chan_blob_free(memport_chan_t *ch, memport_buf_t *buf) {
  if (held_find_drop(ch, buf, MEMPORT__BUF_TX_BLOB) < 0)
    return MEMPORT_EINVAL;
  memset(buf, 0, sizeof *buf);
  return 0;
}

int memport__chan_blob_send(memport_chan_t *ch, memport_buf_t *buf, uint64_t deadline) {
  /* The slot stays ours (only the sending side touches TX entries) but the table may move while
   * the receiving side adds to it: hold its index, not a pointer. */
  memport__chan_lock(ch);
  struct memport__chan_blob_held *h = held_find(ch, buf, MEMPORT__BUF_TX_BLOB);
  bool bad = h == NULL || buf->len > h->len;
  memport_region_t *region = bad ? NULL : h->region;
  memport__chan_unlock(ch);
  if (bad)
    return MEMPORT_EINVAL;
  uint32_t held_index = MEMPORT__BUF_INDEX(buf->priv[0]);
  size_t len = buf->len;
  int rc = memport__chan_port_msg_room(ch, deadline);
  if (rc < 0)
    return rc;
  /* Reserve the ring record first so nothing can fail after the region has gone out. */
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
  struct memport__ctl_blob b = {{MEMPORT__CTL_MAGIC, MEMPORT__CTL_BLOB, 0}, ch->tx_blob_seq, 0, len};
  memport_msg_clear(ch->ctl_out);
  if (rc == 0)
    rc = memport_msg_attach_region(ch->ctl_out, ro, 0);
  if (rc == 0)
    rc = memport__chan_ctl_send(ch, ch->ctl_out, &b, sizeof b, deadline);
  memport_msg_clear(ch->ctl_out);
  if (rc < 0) {
    memport__ring_unreserve(ch->tx_ring);
    return rc;
  }
  struct memport__rec_blob d = {ch->tx_blob_seq++, 0, len};
  memcpy(slot, &d, sizeof d);
  rc = memport__chan_commit(ch, sizeof d, MEMPORT__REC_BLOB);
  memport__chan_port_msg_sent(ch);
  memport__chan_lock(ch);
  held_drop(&ch->blobs_held[held_index]);
  memport__chan_unlock(ch);
  memset(buf, 0, sizeof *buf);
  ch->stats.tx_msgs[2]++;
  if (ch->tx_pool_want_count != 0)
    ch->stats.oneoff_fallbacks++; /* larger than a pool buffer */
  ch->stats.tx_bytes[2] += len;
  return rc;
}

/* At most MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT messages carried over the port (one-off regions and
 * handles) that the consumer has not taken yet: a consumer that does not read pins that many, not
 * as many as its port holds. Waits until the oldest of them was consumed. */
int memport__chan_port_msg_room(memport_chan_t *ch, uint64_t deadline) {
  if (ch->tx_blobs_sent < MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT)
    return 0;
  return memport__chan_wait_consumed(ch, ch->tx_blob_end[ch->tx_blobs_sent % MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT],
                                     deadline);
}

/* The record announcing the port message just sent ends here: the bound above waits for it. */
void memport__chan_port_msg_sent(memport_chan_t *ch) {
  ch->tx_blob_end[ch->tx_blobs_sent++ % MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT] = memport__ring_produced(ch->tx_ring);
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
  memport__chan_announced_push(ch, region, (size_t)blob.len, NULL);
  return 0;
}

void memport__chan_announced_push(memport_chan_t *ch, memport_region_t *region, size_t len,
                                  struct memport__chan_handles *handles) {
  struct memport__chan_blob *s =
      &ch->rx_blobs[(ch->rx_blobs_head + ch->rx_blobs_count) % MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT];
  s->region = region;
  s->len = len;
  s->handles = handles;
  ch->rx_blobs_count++;
  ch->rx_blob_announced++;
}

void memport__chan_blob_lost(memport_chan_t *ch) { memport__chan_announced_push(ch, NULL, 0, NULL); }

void memport__chan_blob_pop(memport_chan_t *ch) {
  ch->rx_blobs_head = (ch->rx_blobs_head + 1) % MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT;
  ch->rx_blobs_count--;
  ch->rx_blob_seq++;
}

static int blob_take(memport_chan_t *ch, const struct memport__chan_rec *rec, void **map, size_t *maplen) {
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
  if (s->handles != NULL) /* a message's handles where a one-off region was announced */
    return memport__chan_break(ch, MEMPORT_EPROTO);
  if (s->region == NULL) { /* its region never arrived (memport__chan_pump): this message is lost */
    memport__chan_blob_pop(ch);
    int rc = memport__ring_release(ch->rx_ring);
    if (rc < 0)
      return memport__chan_ring_error(ch, rc);
    memport__chan_released(ch);
    return MEMPORT_EMFILE;
  }
  if (s->len != rec->blob.len)
    return memport__chan_break(ch, MEMPORT_EPROTO);
  int rc = memport_region_map(s->region, MEMPORT_MAP_READONLY, map);
  if (rc < 0)
    return rc;
  *maplen = memport_region_size(s->region);
  memport_region_close(s->region);
  s->region = NULL;
  memport__chan_blob_pop(ch);
  return 0;
}

int memport__chan_blob_take(memport_chan_t *ch, const struct memport__chan_rec *rec, void **map, size_t *maplen) {
  memport__chan_lock(ch);
  int rc = blob_take(ch, rec, map, maplen);
  memport__chan_unlock(ch);
  return rc;
}

void memport__chan_blob_fini(memport_chan_t *ch) {
  for (uint32_t i = 0; i < ch->rx_blobs_count; i++) {
    struct memport__chan_blob *s = &ch->rx_blobs[(ch->rx_blobs_head + i) % MEMPORT__CHAN_MAX_BLOBS_IN_FLIGHT];
    memport_region_close(s->region);
    memport__chan_handles_free(s->handles);
    s->region = NULL;
    s->handles = NULL;
  }
  ch->rx_blobs_count = 0;
}
