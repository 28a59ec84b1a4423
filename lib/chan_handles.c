/* SPDX-License-Identifier: MIT */
/* chan_handles.c: channel messages that carry handles: the bytes in a ring record, the handles in a control message over the port, matched in order by one sequence number. */
#include "chan.h"

#include <stdlib.h>
#include <string.h>

#define CHAN_HANDLES_DRAIN_MAX 65536u /* control messages read while looking for a message's handles */

void memport__chan_handles_free(struct memport__chan_handles *h) {
  if (h == NULL)
    return;
  memport__handles_close(h->h, h->count);
  free(h);
}

/* ------------------------------------------------------------------------------------------ */
/* Sending.                                                                                    */

/* Attach a copy of `h` to `out` (MEMPORT_ATTACH_COPY: the caller keeps the original). */
static int attach_copy(memport_msg_t *out, const struct memport__handle *h) {
  switch (h->kind) {
  case MEMPORT_HANDLE_REGION:
    return memport_msg_attach_region(out, h->u.region, MEMPORT_ATTACH_COPY);
  case MEMPORT_HANDLE_SEM:
    return memport_msg_attach_sem(out, h->u.sem, MEMPORT_ATTACH_COPY);
  default:
    return memport_msg_attach_port(out, h->u.port, MEMPORT_ATTACH_COPY);
  }
}

/* Reserve the record first, then send the handles over the port, then commit the record: nothing
 * can fail once the handles have gone out, and the port message precedes its record. */
static int handles_send(memport_chan_t *ch, const void *data, size_t len, memport_msg_t *src, uint32_t count,
                        unsigned flags, uint64_t deadline) {
  int rc = memport__chan_port_msg_room(ch, deadline); /* shares the bound with one-off regions */
  if (rc < 0)
    return rc;
  size_t reclen = sizeof(struct memport__rec_handles) + len;
  void *slot;
  rc = memport__chan_reserve(ch, reclen, &slot, deadline);
  if (rc < 0)
    return rc;
  struct memport__ctl_handles c = {{MEMPORT__CTL_MAGIC, MEMPORT__CTL_HANDLES, 0}, ch->tx_blob_seq, count};
  unsigned char bytes[sizeof c + MEMPORT_MSG_MAX_HANDLES];
  memcpy(bytes, &c, sizeof c);
  memport_msg_t *out = ch->ctl_out;
  memport_msg_clear(out);
  bool copy = (flags & MEMPORT_ATTACH_COPY) != 0;
  size_t n = 0;
  for (size_t i = 0; i < src->nhandles && rc == 0; i++) {
    const struct memport__handle *h = &src->handles[i];
    if (h->kind == 0)
      continue; /* taken out of the message: skipped, as memport_port_send does */
    bytes[sizeof c + n++] = (unsigned char)h->kind;
    if (copy)
      rc = attach_copy(out, h);
    else
      out->handles[out->nhandles++] = *h; /* lent: still the caller's until the send succeeds */
  }
  if (rc == 0)
    rc = memport__chan_ctl_send(ch, out, bytes, sizeof c + count, deadline);
  if (rc < 0) {
    if (!copy)
      out->nhandles = 0; /* the caller's again, untouched */
    memport_msg_clear(out);
    memport__ring_unreserve(ch->tx_ring);
    return rc;
  }
  /* Sent: the port closed our side of what went (a move), or of the copies. */
  if (!copy) {
    for (size_t i = 0; i < src->nhandles; i++) {
      src->handles[i].kind = 0;
      src->handles[i].u.port = NULL;
    }
    src->nhandles = 0;
  }
  struct memport__rec_handles r = {ch->tx_blob_seq++, count};
  memcpy(slot, &r, sizeof r);
  if (len != 0)
    memcpy((unsigned char *)slot + sizeof r, data, len);
  rc = memport__chan_commit(ch, reclen, MEMPORT__REC_HANDLES);
  memport__chan_port_msg_sent(ch);
  ch->stats.tx_msgs[0]++;
  ch->stats.tx_bytes[0] += len;
  ch->stats.tx_handle_msgs++;
  ch->stats.tx_handles += count;
  return rc;
}

/* memport_chan_send_msg, called with the send direction held (lib/chan.c). */
int memport__chan_send_msg_impl(memport_chan_t *chan, const void *data, size_t len, memport_msg_t *handles,
                                unsigned flags, int64_t timeout_ns) {
  if (chan == NULL || (data == NULL && len != 0) || (flags & ~MEMPORT_ATTACH_COPY) != 0)
    return MEMPORT_EINVAL;
  uint32_t count = 0;
  if (handles != NULL)
    for (size_t i = 0; i < handles->nhandles; i++)
      count += handles->handles[i].kind != 0;
  if (count == 0)
    return memport__chan_send_impl(chan, data, len, 0, timeout_ns); /* a plain message */
  int rc = memport__chan_live(chan);
  if (rc < 0)
    return memport__chan_tx_code(chan, rc);
  if (len > memport_ring_max_record(chan->tx_ring) - sizeof(struct memport__rec_handles))
    return MEMPORT_EMSGSIZE;
  rc = handles_send(chan, data, len, handles, count, flags, memport__deadline(timeout_ns));
  if (rc >= 0)
    return rc;
  if (rc == MEMPORT_ETIMEDOUT || rc == MEMPORT_EAGAIN)
    memport__chan_tx_idle(chan);
  else
    rc = memport__chan_tx_code(chan, rc);
  return memport__nowait_code(rc, timeout_ns);
}

/* ------------------------------------------------------------------------------------------ */
/* Receiving.                                                                                  */

int memport__chan_handles_arrived(memport_chan_t *ch, memport_msg_t *m, const unsigned char *b, size_t len) {
  struct memport__ctl_handles c;
  if (len < sizeof c)
    return MEMPORT_EPROTO;
  memcpy(&c, b, sizeof c);
  if (c.count == 0 || c.count > MEMPORT_MSG_MAX_HANDLES || len != sizeof c + c.count ||
      memport_msg_handle_count(m) != (int)c.count)
    return MEMPORT_EPROTO;
  if (c.seq != ch->rx_blob_announced || memport__chan_blobs_full(ch))
    return MEMPORT_EPROTO;
  for (uint32_t i = 0; i < c.count; i++)
    if (memport_msg_handle_kind(m, i) != (int)b[sizeof c + i])
      return MEMPORT_EPROTO;
  struct memport__chan_handles *h = malloc(sizeof *h + c.count * sizeof h->h[0]);
  if (h == NULL)
    return MEMPORT_ENOMEM;
  h->count = c.count;
  memcpy(h->h, m->handles, c.count * sizeof h->h[0]);
  m->nhandles = 0; /* moved into h */
  memport__chan_announced_push(ch, NULL, 0, h);
  return 0;
}

static int handles_take(memport_chan_t *ch, const struct memport__chan_rec *rec, memport_msg_t *out) {
  /* Sent before the record was committed, so in the port, maybe behind more control messages
   * than one drain reads: read on until they are there or the port is empty. The bound only
   * stops a peer that floods the port without ever sending them. */
  for (unsigned n = 0; ch->rx_blobs_count == 0 && n < CHAN_HANDLES_DRAIN_MAX; n++) {
    int rc = memport__chan_pump(ch, 0);
    if (rc == MEMPORT_EAGAIN || rc == MEMPORT_ETIMEDOUT || rc == MEMPORT_EPEER)
      break;
    if (rc < 0)
      return rc;
  }
  if (ch->rx_blobs_count == 0) /* announced in the ring, never sent */
    return memport__chan_break(ch, MEMPORT_EPROTO);
  struct memport__chan_blob *s = &ch->rx_blobs[ch->rx_blobs_head];
  if (s->region != NULL) /* a one-off region where handles were announced */
    return memport__chan_break(ch, MEMPORT_EPROTO);
  if (s->handles == NULL) { /* dropped by the port for want of descriptors: this message is lost */
    memport__chan_blob_pop(ch);
    int rc = memport__ring_release(ch->rx_ring);
    if (rc < 0)
      return memport__chan_ring_error(ch, rc);
    memport__chan_released(ch);
    return MEMPORT_EMFILE;
  }
  struct memport__chan_handles *h = s->handles;
  if (h->count != rec->handles.count)
    return memport__chan_break(ch, MEMPORT_EPROTO);
  s->handles = NULL;
  memport__chan_blob_pop(ch);
  ch->stats.rx_handle_msgs++;
  ch->stats.rx_handles += h->count;
  if (out != NULL) {
    memport_msg_clear(out);
    memcpy(out->handles, h->h, h->count * sizeof h->h[0]);
    out->nhandles = h->count;
    out->sender = ch->peer;
    out->has_sender = true;
    h->count = 0; /* moved into out */
  }
  memport__chan_handles_free(h);
  return 0;
}

/* Under the control lock: the queue of announced messages is filled by whichever thread reads the
 * port (memport__chan_pump), as for one-off regions (memport__chan_blob_take). */
int memport__chan_handles_take(memport_chan_t *ch, const struct memport__chan_rec *rec, memport_msg_t *out) {
  memport__chan_lock(ch);
  int rc = handles_take(ch, rec, out);
  memport__chan_unlock(ch);
  return rc;
}
