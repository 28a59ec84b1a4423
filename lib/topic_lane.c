/* SPDX-License-Identifier: MIT */
/* topic_lane.c: what publisher and subscriber share: the options, waking the other side of a lane, small port messages. */
#include "topic.h"

#include <string.h>

void memport_topic_opts_init(memport_topic_opts_t *o) {
  if (o == NULL)
    return;
  memset(o, 0, sizeof *o);
  o->struct_size = sizeof *o;
  o->depth = 64;
  o->overflow = MEMPORT_TOPIC_BLOCK;
  o->history = 0;
  o->inline_max = 200;
  o->buffer_size = (size_t)1 << 20;
  o->buffers = 32;
  o->max_subscribers = 64;
  o->wait_policy = MEMPORT_WAIT_ADAPTIVE;
  o->spin_ns = 0;
}

int memport__topic_opts_valid(const memport_topic_opts_t *o, const char **field) {
  const char *f = NULL;
  if (o->struct_size != sizeof *o)
    f = "struct_size";
  else if (o->depth < 1 || o->depth > MEMPORT__DEPTH_MAX)
    f = "depth";
  else if (o->overflow != MEMPORT_TOPIC_BLOCK && o->overflow != MEMPORT_TOPIC_DROP_OLDEST)
    f = "overflow";
  else if (o->inline_max > MEMPORT__INLINE_MAX)
    f = "inline_max";
  else if (o->buffers < 1 || o->buffers > MEMPORT__POOL_MAX_BUFFERS)
    f = "buffers";
  else if (o->buffer_size == 0 || o->buffer_size > UINT32_MAX ||
           memport__pool_geometry_check(o->buffers, memport__page_round(o->buffer_size)) < 0)
    f = "buffer_size";
  else if (o->history > o->depth || o->history >= o->buffers)
    f = "history";
  else if (o->max_subscribers < 1 || o->max_subscribers > 1024)
    f = "max_subscribers";
  else if (o->wait_policy != MEMPORT_WAIT_BLOCK && o->wait_policy != MEMPORT_WAIT_SPIN &&
           o->wait_policy != MEMPORT_WAIT_ADAPTIVE)
    f = "wait_policy";
  else if (o->spin_ns < 0)
    f = "spin_ns";
  if (field != NULL)
    *field = f;
  return f != NULL ? MEMPORT_EINVAL : 0;
}

int memport_topic_opts_check(const memport_topic_opts_t *o, const char **field) {
  if (field != NULL)
    *field = NULL;
  if (o == NULL) {
    if (field != NULL)
      *field = "opts";
    return MEMPORT_EINVAL;
  }
  return memport__topic_opts_valid(o, field);
}

int memport__topic_send_hdr(memport_port_t *port, memport_msg_t *msg, uint16_t type) {
  struct memport__topic_hdr h = {MEMPORT__TOPIC_MAGIC, type, MEMPORT__TOPIC_VERSION};
  memport_msg_clear(msg);
  int rc = memport_msg_set_bytes(msg, &h, sizeof h);
  if (rc == 0)
    rc = memport__port_send(port, msg, 0);
  return rc;
}

bool memport__topic_hdr_is(memport_msg_t *msg, uint16_t type, size_t len, int nhandles) {
  size_t n;
  const unsigned char *b = memport_msg_bytes(msg, &n);
  struct memport__topic_hdr h;
  if (b == NULL || n != len || len < sizeof h || memport_msg_handle_count(msg) != nhandles)
    return false;
  memcpy(&h, b, sizeof h);
  return h.magic == MEMPORT__TOPIC_MAGIC && h.type == type && h.version == MEMPORT__TOPIC_VERSION;
}

/* A full port is readable already, and a dead peer is found by the next call: a WAKE that does
 * not fit is not needed. */
void memport__topic_wake_slow(_Atomic uint32_t *word, memport_sem_t *sem, memport_port_t *port, memport_msg_t *msg) {
  uint32_t v = atomic_exchange_explicit(word, 0, memory_order_seq_cst);
  if (v & MEMPORT__WAIT_SEM)
    memport__os_sem_signal(sem);
  if ((v & MEMPORT__TOPIC_WAKE_PORT) && port != NULL)
    (void)memport__topic_send_hdr(port, msg, MEMPORT__TOPIC_WAKE);
}
