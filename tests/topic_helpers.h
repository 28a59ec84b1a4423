/* SPDX-License-Identifier: MIT */
/* topic_helpers.h: what the topic tests share: numbered messages, publishing and checking them, options, subscribers connected in-process. */
#ifndef MEMPORT_TESTS_TOPIC_HELPERS_H
#define MEMPORT_TESTS_TOPIC_HELPERS_H

#include "helpers.h"

#include <stdatomic.h>

#define INLINE_MAX 64  /* the topics' inline_max in these tests */
#define BUF_SIZE 8192  /* and their buffer_size */

/* Messages: 8 bytes of sequence number, then a pattern of that number. Every third one is large
 * (a pool buffer), the others small (inline size). */
size_t len_of(uint64_t seq);
/* Write message `seq` of `len` bytes at p. */
void make_msg(unsigned char *p, size_t len, uint64_t seq);
/* 0 when data holds message `seq` exactly; 1 wrong length, 2 wrong number, 3 wrong pattern. */
int msg_bad(const void *data, size_t len, uint64_t seq);
/* Publish message `seq` in a loaned pool buffer, whatever its size (the loan is discarded when
 * the publish fails). */
int pub_msg_loaned(memport_pub_t *p, uint64_t seq, int64_t timeout_ns);
/* Receive message `seq` and release it: 0, a memport error, or 1000 + msg_bad's code. */
int sub_expect(memport_sub_t *s, uint64_t seq, int64_t timeout_ns);
/* Default options with this depth, overflow policy and pool, INLINE_MAX and BUF_SIZE. */
void opts(memport_topic_opts_t *o, unsigned depth, int overflow, unsigned buffers);

/* Subscribers in this process: a thread runs the publisher's calls while they connect. */
struct pump {
  memport_pub_t *pub;
  atomic_bool stop;
};
void *pump_main(void *arg);
/* Connect n subscribers to the topic `name` of pub (asserts they all joined). */
void connect_n(memport_pub_t *pub, const char *name, memport_sub_t **subs, int n);

#endif
