/* SPDX-License-Identifier: MIT */
/* test_stress.c: four channel pairs at once, millions of checksummed messages of mixed sizes, bounded memory. */
#include "helpers.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAIRS 4
#define SRC_BYTES (8u << 20)
#define DEFAULT_MESSAGES 10000000ull /* MEMPORT_STRESS_MESSAGES overrides; 20000 under valgrind */

/*
 * Eight processes: for each of PAIRS channels a sender and a receiver, forked from the test, all
 * running at once. Every message carries a header (sequence number, length, checksum of the
 * payload); its length follows from its sequence number, so the receiver knows what must come:
 * mostly 24..512 bytes, 1 in 100 of 4..64 KiB (a third of them sent zero-copy through the pool),
 * 1 in 50000 of 1..2 MiB sent zero-copy from the pool (filled in place), 1 in 200000 of 3..4 MiB
 * (larger than a pool buffer: a one-off region each). The receiver checks each one in place: the sequence number (no loss, no
 * duplicate, no reordering), the length and the checksum. Each process samples its resident
 * memory (VmRSS) every 16384 messages; the maximum must stay under a bound that follows from the
 * channel's sizes, and it must not grow between the first tenth of the run and the end.
 */

struct hdr {
  uint64_t seq;
  uint64_t len; /* whole message, header included */
  uint64_t sum; /* of the payload, seeded with seq */
};

struct result {
  uint64_t messages;
  uint64_t bytes;
  uint64_t zerocopy;
  uint64_t ns;
  uint64_t rss_max_kb, rss_warm_kb, rss_end_kb;
  int64_t error; /* 0, or a description code (see below) */
  uint64_t error_seq;
};

static struct result *g_results; /* shared with the children: [pair][0 sender, 1 receiver] */
static unsigned char *g_src;

static uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

/* Length of message `seq` of pair `pair`, header included. */
static size_t msg_len(unsigned pair, uint64_t seq) {
  uint64_t r = mix(seq * 4 + pair + 1);
  if (r % 200000 == 11)
    return (3u << 20) + (size_t)((r >> 20) % (1u << 20)); /* larger than a pool buffer: a one-off region */
  if (r % 50000 == 7)
    return (1u << 20) + (size_t)((r >> 20) % (1u << 20));
  if (r % 100 == 3)
    return 4096 + (size_t)((r >> 20) % (60u << 10));
  return sizeof(struct hdr) + (size_t)((r >> 20) % (513 - sizeof(struct hdr)));
}

static uint64_t checksum(const unsigned char *p, size_t n, uint64_t seed) {
  uint64_t h = seed * 0x9e3779b97f4a7c15ull + n;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    h = (h ^ w) * 0x100000001b3ull;
    h ^= h >> 29;
  }
  for (; i < n; i++)
    h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

/* Sent zero-copy: the largest always (filled in place), a third of the 4..64 KiB ones (copied in). */
static bool msg_zerocopy(unsigned pair, uint64_t seq, size_t len) {
  return len >= (1u << 20) || (len >= 4096 && mix(seq * 4 + pair + 1) % 3 == 0);
}

/* Where the payload of message `seq` comes from in the shared source bytes. */
static const unsigned char *payload_src(uint64_t seq, size_t plen) {
  return g_src + (size_t)(mix(seq) % (SRC_BYTES - plen + 1));
}

static uint64_t rss_kb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (f == NULL)
    return 0;
  char line[256];
  unsigned long long kb = 0;
  while (fgets(line, sizeof line, f) != NULL)
    if (sscanf(line, "VmRSS: %llu kB", &kb) == 1)
      break;
  fclose(f);
  return kb;
}

static void sample(struct result *res, uint64_t i, uint64_t n) {
  uint64_t kb = rss_kb();
  if (kb > res->rss_max_kb)
    res->rss_max_kb = kb;
  if (res->rss_warm_kb == 0 && i >= n / 10)
    res->rss_warm_kb = kb;
  res->rss_end_kb = kb;
}

enum { E_SEND = 1, E_RECV, E_SEQ, E_LEN, E_SUM, E_RELEASE };

static int sender(memport_chan_t *c, unsigned pair, uint64_t n, struct result *res) {
  unsigned char *buf = malloc(64 << 10);
  if (buf == NULL)
    return 1;
  uint64_t t0 = th_now_ns();
  for (uint64_t seq = 0; seq < n; seq++) {
    size_t len = msg_len(pair, seq), plen = len - sizeof(struct hdr);
    const unsigned char *src = payload_src(seq, plen);
    struct hdr h = {seq, len, checksum(src, plen, seq)};
    int rc;
    if (len >= (1u << 20)) {
      memport_buf_t b;
      rc = memport_chan_alloc(c, len, &b, 20 * SEC);
      if (rc == 0) {
        memcpy(b.data, &h, sizeof h);
        memcpy((unsigned char *)b.data + sizeof h, src, plen);
        rc = memport_chan_send_buf(c, &b, 20 * SEC);
      }
      res->zerocopy++;
    } else {
      memcpy(buf, &h, sizeof h);
      memcpy(buf + sizeof h, src, plen);
      bool zc = msg_zerocopy(pair, seq, len);
      rc = memport_chan_send(c, buf, len, zc ? MEMPORT_SEND_ZEROCOPY : 0, 20 * SEC);
      res->zerocopy += zc;
    }
    if (rc != 0) {
      res->error = E_SEND * 1000 - rc;
      res->error_seq = seq;
      break;
    }
    res->messages++;
    res->bytes += len;
    if ((seq & 16383) == 0)
      sample(res, seq, n);
  }
  res->ns = th_now_ns() - t0;
  sample(res, n, n);
  free(buf);
  return res->error != 0;
}

static int receiver(memport_chan_t *c, unsigned pair, uint64_t n, struct result *res) {
  uint64_t t0 = th_now_ns();
  for (uint64_t seq = 0; seq < n; seq++) {
    memport_buf_t b;
    int rc = memport_chan_recv(c, &b, 20 * SEC);
    if (rc != 0) {
      res->error = E_RECV * 1000 - rc;
      res->error_seq = seq;
      break;
    }
    struct hdr h;
    size_t want = msg_len(pair, seq);
    if (b.len < sizeof h) {
      res->error = E_LEN * 1000;
    } else {
      memcpy(&h, b.data, sizeof h);
      if (h.seq != seq)
        res->error = E_SEQ * 1000;
      else if (h.len != want || b.len != want)
        res->error = E_LEN * 1000;
      else if (checksum((const unsigned char *)b.data + sizeof h, b.len - sizeof h, seq) != h.sum)
        res->error = E_SUM * 1000;
    }
    res->zerocopy += msg_zerocopy(pair, seq, want);
    res->bytes += b.len;
    if (res->error == 0 && (rc = memport_chan_release(c, &b)) != 0)
      res->error = E_RELEASE * 1000 - rc;
    if (res->error != 0) {
      res->error_seq = seq;
      break;
    }
    res->messages++;
    if ((seq & 16383) == 0)
      sample(res, seq, n);
  }
  /* Nothing more may come: the sender closes after its last message. */
  if (res->error == 0) {
    memport_buf_t b;
    int rc = memport_chan_recv(c, &b, 20 * SEC);
    if (rc != MEMPORT_EPEER) {
      res->error = E_RECV * 1000 - (rc == 0 ? 1 : rc);
      res->error_seq = n;
    }
  }
  res->ns = th_now_ns() - t0;
  sample(res, n, n);
  return res->error != 0;
}

static const char *error_text(int64_t e) {
  switch (e / 1000) {
  case E_SEND: return "send failed";
  case E_RECV: return "receive failed (or a message after the last)";
  case E_SEQ: return "wrong sequence number (loss, duplicate or reordering)";
  case E_LEN: return "wrong length";
  case E_SUM: return "checksum mismatch";
  default: return "release failed";
  }
}

static void test_stress_four_pairs_mixed_sizes(void **state) {
  (void)state;
  const char *env = getenv("MEMPORT_STRESS_MESSAGES");
  uint64_t total = env != NULL && *env != '\0' ? strtoull(env, NULL, 0) : DEFAULT_MESSAGES;
  if (th_under_valgrind() && (env == NULL || *env == '\0'))
    total = 20000;
  uint64_t per = total / PAIRS;
  g_results = mmap(NULL, sizeof(struct result) * PAIRS * 2, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  assert_true(g_results != MAP_FAILED);
  memset(g_results, 0, sizeof(struct result) * PAIRS * 2);
  g_src = malloc(SRC_BYTES);
  assert_non_null(g_src);
  uint64_t x = 0x1234567;
  for (size_t i = 0; i < SRC_BYTES; i += 8) {
    x = mix(x + i);
    memcpy(g_src + i, &x, 8);
  }

  memport_chan_opts_t o;
  memport_chan_opts_init(&o);
  o.ring_capacity = 1u << 20;
  o.zerocopy_threshold = 64u << 10;
  o.pool_buffer_size = 2u << 20;
  o.pool_buffers = 4;
  o.wait_policy = MEMPORT_WAIT_ADAPTIVE;
  memport_chan_t *tx[PAIRS], *rx[PAIRS];
  for (unsigned p = 0; p < PAIRS; p++)
    th_assert_ok(memport_chan_pair(&tx[p], &rx[p], &o));
  unsigned timeout = (unsigned)(120 + per / 20000);
  pid_t pids[PAIRS * 2];
  uint64_t t0 = th_now_ns();
  for (unsigned k = 0; k < PAIRS * 2; k++) {
    fflush(NULL);
    pids[k] = fork();
    assert_true(pids[k] >= 0);
    if (pids[k] == 0) {
      alarm(timeout);
      unsigned p = k / 2;
      memport_chan_t *mine = k % 2 ? rx[p] : tx[p];
      for (unsigned q = 0; q < PAIRS; q++) { /* the copies of every other end */
        if (tx[q] != mine)
          memport_chan_close(tx[q]);
        if (rx[q] != mine)
          memport_chan_close(rx[q]);
      }
      int rc = k % 2 ? receiver(mine, p, per, &g_results[k]) : sender(mine, p, per, &g_results[k]);
      memport_chan_close(mine);
      free(g_src);
      _exit(rc);
    }
  }
  for (unsigned p = 0; p < PAIRS; p++) {
    memport_chan_close(tx[p]);
    memport_chan_close(rx[p]);
  }
  int failed = 0;
  for (unsigned k = 0; k < PAIRS * 2; k++) {
    int st = th_wait(pids[k], timeout + 10);
    if (st != 0) {
      printf("# %s of pair %u: status %d\n", k % 2 ? "receiver" : "sender", k / 2, st);
      failed = 1;
    }
  }
  double secs = (double)(th_now_ns() - t0) / 1e9;
  uint64_t msgs = 0, bytes = 0, zc = 0, rss_max = 0;
  int64_t growth = INT64_MIN;
  for (unsigned k = 0; k < PAIRS * 2; k++) {
    struct result *r = &g_results[k];
    if (r->error != 0)
      printf("# %s of pair %u: %s at message %llu (%s)\n", k % 2 ? "receiver" : "sender", k / 2, error_text(r->error),
             (unsigned long long)r->error_seq, memport_err_name(-(int)(r->error % 1000)));
    if (k % 2) {
      msgs += r->messages;
      bytes += r->bytes;
      zc += r->zerocopy;
    }
    rss_max = r->rss_max_kb > rss_max ? r->rss_max_kb : rss_max;
    int64_t g = (int64_t)r->rss_end_kb - (int64_t)r->rss_warm_kb;
    growth = g > growth ? g : growth;
  }
  printf("# %llu messages (%llu zero-copy, %.2f GB) over %d pairs in %.2f s: %.0f messages/s, %.2f GB/s; "
         "largest VmRSS %llu KiB, largest growth after the first tenth %lld KiB\n",
         (unsigned long long)msgs, (unsigned long long)zc, (double)bytes / 1e9, PAIRS, secs, (double)msgs / secs,
         (double)bytes / 1e9 / secs, (unsigned long long)rss_max, (long long)growth);
  assert_false(failed);
  assert_int_equal(msgs, per * PAIRS);
  /* The bound: the two rings and the pool of a channel, mapped in both processes, plus the
   * program itself (64 MiB covers its heap, the source bytes and sanitizer overhead; valgrind's
   * own memory counts too when it runs the test). */
  uint64_t bound_kb = (2 * o.ring_capacity + (uint64_t)o.pool_buffers * o.pool_buffer_size) / 1024 +
                      (th_under_valgrind() ? 192 : 64) * 1024;
  if (rss_max > bound_kb)
    fail_msg("a process reached %llu KiB resident, more than %llu KiB", (unsigned long long)rss_max,
             (unsigned long long)bound_kb);
  /* After the first tenth only pool pages not touched yet may still come in (and the rings'). */
  int64_t growth_kb = (int64_t)((2 * o.ring_capacity + (uint64_t)o.pool_buffers * o.pool_buffer_size) / 1024) + 4096;
  if (growth > growth_kb)
    fail_msg("resident memory grew by %lld KiB after warm-up", (long long)growth);
  munmap(g_results, sizeof(struct result) * PAIRS * 2);
  free(g_src);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_stress_four_pairs_mixed_sizes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
