/* SPDX-License-Identifier: MIT */
/* topic_helpers.c: what the topic tests share: numbered messages, publishing and checking them, options, in-process subscribers. */
#include "config.h"

#include "topic_helpers.h"

#include <pthread.h>
#include <string.h>

size_t len_of(uint64_t seq) { return seq % 3 == 0 ? 5000 + (size_t)(seq % 1000) : 8 + (size_t)(seq % 50); }

void make_msg(unsigned char *p, size_t len, uint64_t seq) {
  memcpy(p, &seq, 8);
  th_fill(p + 8, len - 8, (uint32_t)seq);
}

int msg_bad(const void *data, size_t len, uint64_t seq) {
  uint64_t got;
  if (len != len_of(seq) || len < 8)
    return 1;
  memcpy(&got, data, 8);
  if (got != seq)
    return 2;
  return th_check((const unsigned char *)data + 8, len - 8, (uint32_t)seq) != 0 ? 3 : 0;
}

int pub_msg_loaned(memport_pub_t *p, uint64_t seq, int64_t timeout_ns) {
  size_t len = len_of(seq);
  memport_buf_t b;
  int rc = memport_pub_loan(p, len, &b, timeout_ns);
  if (rc < 0)
    return rc;
  make_msg(b.data, len, seq);
  rc = memport_pub_publish(p, &b, timeout_ns);
  if (rc < 0)
    memport_pub_discard(p, &b);
  return rc;
}

int sub_expect(memport_sub_t *s, uint64_t seq, int64_t timeout_ns) {
  memport_buf_t b;
  int rc = memport_sub_recv(s, &b, timeout_ns);
  if (rc < 0)
    return rc;
  int bad = msg_bad(b.data, b.len, seq);
  rc = memport_sub_release(s, &b);
  return bad != 0 ? 1000 + bad : rc;
}

void opts(memport_topic_opts_t *o, unsigned depth, int overflow, unsigned buffers) {
  memport_topic_opts_init(o);
  o->depth = depth;
  o->overflow = overflow;
  o->inline_max = INLINE_MAX;
  o->buffer_size = BUF_SIZE;
  o->buffers = buffers;
}

void *pump_main(void *arg) {
  struct pump *pm = arg;
  while (!atomic_load(&pm->stop)) {
    memport_pub_process(pm->pub);
    th_sleep_ms(1);
  }
  return NULL;
}

void connect_n(memport_pub_t *pub, const char *name, memport_sub_t **subs, int n) {
  struct pump pm = {.pub = pub};
  atomic_init(&pm.stop, false);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, pump_main, &pm), 0);
  int bad = 0;
  for (int i = 0; i < n && bad == 0; i++)
    bad = memport_sub_connect(&subs[i], name, NULL, 20 * SEC);
  atomic_store(&pm.stop, true);
  pthread_join(t, NULL);
  th_assert_ok(bad);
  th_assert_rc(memport_pub_subscribers(pub), n);
}
