/* SPDX-License-Identifier: MIT */
/* libuv-chan.c: a memport channel inside a libuv event loop: receive without blocking, acknowledge without blocking, stop in order. */

/*
 * A parent process runs a libuv loop; a forked child produces messages on a channel
 * (memport_chan_pair before fork) with ordinary blocking sends:
 *  - most are small (up to 1500 bytes) and copied through the ring (memport_chan_send);
 *  - every 8th is larger (8 to 200 KiB), written in place into a pool buffer
 *    (memport_chan_alloc) and handed over zero-copy (memport_chan_send_buf);
 *  - each starts with a header (sequence number, payload length, checksum).
 * After its last message the child shuts its sending side (memport_chan_shutdown): the parent
 * receives everything, then MEMPORT_ECLOSED, which is how it knows the stream ended in order
 * (MEMPORT_EPEER would mean the child died).
 *
 * The loop never blocks on the channel. It watches
 *  - a uv_poll_t on the channel's pollable handle (memport_chan_pollable), which is ready while a
 *    message waits, when the stream has ended (until a receive has said so), and after a send
 *    failed with MEMPORT_EAGAIN, once that send could succeed;
 *  - a uv_timer_t: the watchdog.
 * Every K messages (and at the end) the loop sends an acknowledgement back over the same channel
 * with MEMPORT_NOWAIT: "I have everything up to message X". Acks are cumulative, so when the ring
 * is full (MEMPORT_EAGAIN) nothing is queued: the loop remembers the latest count and sends it
 * when the handle says there is room. The child reads its acks only between bursts of 1024
 * messages, so the parent's small ring does fill up and that path really runs.
 *
 *   libuv-chan [-n MESSAGES] [-k ACK_EVERY]      (defaults: 2000 messages, an ack every 4)
 *
 * Exit status 0 only if every message arrived intact and in order, the stream ended in order
 * after the last one, both paths (ring and zero-copy) were used, and the child saw every
 * acknowledgement, in order, up to the last message, then the parent's orderly close.
 *
 * Darwin: the handle is a Mach port set, which uv_poll cannot watch (it wants a file descriptor;
 * use a kqueue or a dispatch source there). This program builds there but says so and exits.
 */

#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memport.h>
#include <uv.h>

#define SECOND INT64_C(1000000000)
#define SMALL_MAX 1500              /* payload bytes of a ring message, at most */
#define LARGE_MIN (8u << 10)        /* payload bytes of a zero-copy message, at least */
#define LARGE_MAX (200u << 10)      /* ... at most (below a pool buffer: no one-off region) */
#define LARGE_EVERY 8               /* every 8th message goes zero-copy */
#define CHILD_BURST 1024            /* the child reads its acks after this many sends */
#define TICK_MS 10                  /* timer period: the retry delay of the last ack */
#define WATCHDOG_MS 30000           /* the parent gives up after this long */
#define CHILD_TIMEOUT (10 * SECOND) /* the child's blocking calls give up after this long */

enum { KIND_DATA = 1, KIND_ACK = 2 };

/* The start of every message from the child. */
struct head {
  uint32_t kind;
  uint32_t seq; /* 1, 2, ... */
  uint64_t len; /* payload bytes after this header */
  uint64_t sum; /* checksum of the payload */
};

/* The parent's acknowledgement: every message up to `upto` arrived intact. */
struct ack {
  uint32_t kind;
  uint32_t upto;
};

static uint64_t fnv1a(const unsigned char *p, size_t n) {
  uint64_t h = UINT64_C(14695981039346656037);
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * UINT64_C(1099511628211);
  return h;
}

/* The payload of message `seq`: its length, whether it goes zero-copy, and its bytes. */
static size_t payload_len(uint32_t seq, int *zerocopy) {
  uint32_t x = seq * UINT32_C(2654435761);
  *zerocopy = seq % LARGE_EVERY == 0;
  return *zerocopy ? LARGE_MIN + x % (LARGE_MAX - LARGE_MIN + 1) : x % (SMALL_MAX + 1);
}

static void fill(unsigned char *p, size_t n, uint32_t seq) {
  uint32_t x = seq | 1u;
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    p[i] = (unsigned char)x;
  }
}

/* ------------------------------------------------------------------------------------------ */
/* The child: a plain blocking producer, no event loop.                                         */

/* Read the acks that are there (MEMPORT_NOWAIT), or all of them until the parent closes, and
 * check that they only move forward, by whole multiples of k except the last one. */
static int child_acks(memport_chan_t *ch, uint32_t *acked, uint32_t n, uint32_t k, int64_t timeout) {
  for (;;) {
    memport_buf_t m;
    int rc = memport_chan_recv(ch, &m, timeout);
    if (rc == MEMPORT_EAGAIN && timeout == MEMPORT_NOWAIT)
      return 0;
    if (rc == MEMPORT_ECLOSED) /* the parent's orderly close: did it acknowledge everything? */
      return *acked == n ? 0 : MEMPORT_EPROTO;
    if (rc != 0)
      return rc;
    struct ack a = {0, 0};
    if (m.len == sizeof a)
      memcpy(&a, m.data, sizeof a);
    memport_chan_release(ch, &m);
    if (a.kind != KIND_ACK || a.upto <= *acked || a.upto > n || (a.upto % k != 0 && a.upto != n))
      return MEMPORT_EPROTO;
    *acked = a.upto;
  }
}

static int child_main(memport_chan_t *ch, uint32_t n, uint32_t k) {
  static unsigned char small[sizeof(struct head) + SMALL_MAX];
  uint32_t acked = 0;
  int rc = 0;
  for (uint32_t seq = 1; rc == 0 && seq <= n; seq++) {
    int zerocopy;
    size_t len = payload_len(seq, &zerocopy);
    struct head h = {KIND_DATA, seq, len, 0};
    if (zerocopy) {
      /* Written where the parent will read it: no copy on either side. */
      memport_buf_t b;
      rc = memport_chan_alloc(ch, sizeof h + len, &b, CHILD_TIMEOUT);
      if (rc == 0) {
        unsigned char *p = b.data;
        fill(p + sizeof h, len, seq);
        h.sum = fnv1a(p + sizeof h, len);
        memcpy(p, &h, sizeof h);
        rc = memport_chan_send_buf(ch, &b, CHILD_TIMEOUT); /* on failure the buffer is already back */
      }
    } else {
      fill(small + sizeof h, len, seq);
      h.sum = fnv1a(small + sizeof h, len);
      memcpy(small, &h, sizeof h);
      rc = memport_chan_send(ch, small, sizeof h + len, 0, CHILD_TIMEOUT);
    }
    if (rc == 0 && seq % CHILD_BURST == 0)
      rc = child_acks(ch, &acked, n, k, MEMPORT_NOWAIT);
  }
  /* The end of the stream, in order: an end made by memport_chan_pair announces nothing when it
   * is closed (a forked copy may still be in use), so say it. Acks still arrive after it. */
  if (rc == 0)
    rc = memport_chan_shutdown(ch, MEMPORT_CHAN_SHUT_SEND);
  if (rc == 0)
    rc = child_acks(ch, &acked, n, k, CHILD_TIMEOUT);
  if (rc != 0)
    fprintf(stderr, "libuv-chan: child: %s (acknowledged up to %" PRIu32 ")\n", memport_strerror(rc), acked);
  memport_chan_close(ch);
  return rc == 0 ? 0 : 1;
}

/* ------------------------------------------------------------------------------------------ */
/* The parent: the event loop.                                                                  */

struct consumer {
  memport_chan_t *ch;
  uv_poll_t readable; /* the channel's pollable handle */
  uv_timer_t tick;
  uint32_t n, k;
  uint32_t received;  /* messages checked, in order */
  uint64_t bytes;     /* their payload bytes */
  uint32_t ack_due;   /* what we owe the child: received, rounded down to k (or all at the end) */
  uint32_t acked;     /* what the child has been sent */
  int ack_waiting;    /* ack_due found the ring full */
  unsigned acks_sent, ring_full, readiness, ticks;
  int ended;          /* the child shut its sending side after its last message */
  int closing;
  const char *failure;
  uint64_t start_ms;
};

static void stop(struct consumer *c, const char *failure) {
  if (failure != NULL && c->failure == NULL)
    c->failure = failure;
  if (c->closing)
    return;
  c->closing = 1;
  /* With both handles closed, uv_run returns. The handle behind `readable` belongs to the
   * channel, so libuv must let go of it before memport_chan_close closes it (in parent_main). */
  uv_close((uv_handle_t *)&c->readable, NULL);
  uv_close((uv_handle_t *)&c->tick, NULL);
}

/* Send the ack we owe, if any. Never waits: when the ring has no room, the debt stays in ack_due,
 * and the failed send makes the channel's handle ready once the same send could succeed; the
 * next pass then sends the newest value, which covers this one. */
static void flush_ack(struct consumer *c) {
  if (c->ack_due == c->acked || c->closing)
    return;
  struct ack a = {KIND_ACK, c->ack_due};
  int rc = memport_chan_send(c->ch, &a, sizeof a, 0, MEMPORT_NOWAIT);
  if (rc == MEMPORT_EAGAIN) {
    c->ring_full += !c->ack_waiting;
    c->ack_waiting = 1;
    return;
  }
  if (rc != 0) {
    fprintf(stderr, "libuv-chan: ack: %s\n", memport_strerror(rc));
    stop(c, "could not acknowledge");
    return;
  }
  c->acked = c->ack_due;
  c->ack_waiting = 0;
  c->acks_sent++;
}

/* Check one message from the child; the caller releases it. */
static const char *check(struct consumer *c, const memport_buf_t *m) {
  struct head h;
  if (m->len < sizeof h)
    return "a message shorter than its header";
  /* The bytes are the sender's shared memory, which it could still change: copy the header once
   * and use only the copy. (A payload changed under us just fails the checksum.) */
  memcpy(&h, m->data, sizeof h);
  if (h.kind != KIND_DATA)
    return "a message of the wrong kind";
  if (h.seq != c->received + 1)
    return "a message out of order (or lost)";
  if (h.len != m->len - sizeof h)
    return "a payload length that disagrees with the message";
  if (fnv1a((const unsigned char *)m->data + sizeof h, h.len) != h.sum)
    return "a checksum mismatch";
  c->received++;
  c->bytes += h.len;
  if (c->received % c->k == 0)
    c->ack_due = c->received;
  return NULL;
}

/* The child said it sends no more, after its last message. */
static void on_ended(struct consumer *c) {
  if (c->received != c->n) {
    stop(c, "the child ended its stream early");
    return;
  }
  c->ended = 1;
  c->ack_due = c->received; /* the last ack, even if not a multiple of k */
  /* Once a receive has returned MEMPORT_ECLOSED the handle is no longer ready for the ended
   * stream: it only says when a send that failed with MEMPORT_EAGAIN could now succeed. So the
   * same poll keeps serving the last ack if the ring is full. */
}

/* Receive what waits. Going on until MEMPORT_EAGAIN is not required (the handle stays ready while
 * a message waits, whatever else was called), but it takes a burst in one callback; a loop with
 * other work to be fair to could stop after a few messages instead. */
static void drain(struct consumer *c) {
  while (!c->closing && !c->ended) {
    memport_buf_t m;
    int rc = memport_chan_recv(c->ch, &m, MEMPORT_NOWAIT);
    if (rc == MEMPORT_EAGAIN)
      return;
    if (rc == MEMPORT_ECLOSED) {
      on_ended(c);
      return;
    }
    if (rc != 0) { /* MEMPORT_EPEER: the child died (an orderly end is MEMPORT_ECLOSED) */
      fprintf(stderr, "libuv-chan: recv: %s\n", memport_strerror(rc));
      stop(c, rc == MEMPORT_EPEER ? "the child died before the end of its stream" : "receive failed");
      return;
    }
    const char *bad = check(c, &m);
    memport_chan_release(c->ch, &m);
    if (bad != NULL) {
      stop(c, bad);
      return;
    }
    flush_ack(c); /* now, not after the burst: the child is waiting for it */
  }
}

/* One pass over the channel: what could not be sent before, then what waits. */
static void service(struct consumer *c) {
  flush_ack(c);
  drain(c);
  flush_ack(c);
  if (c->ended && c->acked == c->ack_due)
    stop(c, NULL); /* all here, and the child has been told so */
}

static void on_readable(uv_poll_t *p, int status, int events) {
  struct consumer *c = p->data;
  if (status < 0) {
    fprintf(stderr, "libuv-chan: poll: %s\n", uv_strerror(status));
    stop(c, "uv_poll failed");
    return;
  }
  (void)events;
  c->readiness++;
  service(c);
}

static void on_tick(uv_timer_t *t) {
  struct consumer *c = t->data;
  c->ticks++;
  if (uv_now(t->loop) - c->start_ms > WATCHDOG_MS)
    stop(c, "timed out");
}

/* The pollable handle as a descriptor for uv_poll (Linux); Darwin has none (see the top). */
static int as_fd(memport_os_handle_t h) {
#if defined(__APPLE__)
  (void)h;
  return -1;
#else
  return h;
#endif
}

static int parent_main(memport_chan_t *ch, uint32_t n, uint32_t k, pid_t child) {
  struct consumer c;
  memset(&c, 0, sizeof c);
  c.ch = ch;
  c.n = n;
  c.k = k;
  memport_os_handle_t h;
  int rc = memport_chan_pollable(ch, &h);
  if (rc != 0) {
    fprintf(stderr, "libuv-chan: memport_chan_pollable: %s\n", memport_strerror(rc));
    return 1;
  }
  uv_loop_t loop;
  int uvrc = uv_loop_init(&loop);
  if (uvrc == 0 && (uvrc = uv_poll_init(&loop, &c.readable, as_fd(h))) != 0)
    uv_loop_close(&loop);
  if (uvrc != 0) {
    fprintf(stderr, "libuv-chan: %s\n", uv_strerror(uvrc));
    return 1;
  }
  uv_timer_init(&loop, &c.tick);
  c.readable.data = c.tick.data = &c;
  c.start_ms = uv_now(&loop);
  uint64_t t0 = uv_hrtime();
  uv_poll_start(&c.readable, UV_READABLE, on_readable);
  uv_timer_start(&c.tick, on_tick, TICK_MS, TICK_MS);
  uv_run(&loop, UV_RUN_DEFAULT);
  double elapsed = (double)(uv_hrtime() - t0) / 1e9;
  int loop_ok = uv_loop_close(&loop) == 0;

  memport_chan_stats_t st;
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  memport_chan_stats(ch, &st);
  /* An end made by memport_chan_pair announces nothing when closed (see the child): shut it, so
   * that the child, reading its acks, gets MEMPORT_ECLOSED after the last one. */
  memport_chan_shutdown(ch, MEMPORT_CHAN_SHUT_SEND);
  memport_chan_close(ch);
  if (c.failure != NULL)
    kill(child, SIGKILL); /* it may be waiting for an ack that will not come */
  int status;
  int child_ok = waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0;

  printf("libuv-chan: %" PRIu32 " messages, %" PRIu64 " payload bytes in %.3f s (%.0f MB/s)\n", c.received,
         c.bytes, elapsed, elapsed > 0 ? (double)c.bytes / elapsed / 1e6 : 0.0);
  printf("  received through the ring: %" PRIu64 ", zero-copy from the pool: %" PRIu64 ", in one-off regions: %" PRIu64
         "\n",
         st.recv_ring_msgs, st.recv_pool_msgs, st.recv_oneoff_msgs);
  printf("  loop: %u readiness callbacks, %u timer ticks; acks: %u sent (%u of them waited for room in the ring)\n",
         c.readiness, c.ticks, c.acks_sent, c.ring_full);
  if (c.failure == NULL && n >= LARGE_EVERY && (st.recv_ring_msgs == 0 || st.recv_pool_msgs == 0))
    c.failure = "one of the two paths (ring, zero-copy) was not used";
  if (c.failure == NULL && (c.received != n || !c.ended))
    c.failure = "not every message arrived";
  if (c.failure == NULL && !child_ok)
    c.failure = "the child failed (see its message above)";
  if (c.failure == NULL && !loop_ok)
    c.failure = "the loop still had handles";
  printf("libuv-chan: %s%s\n", c.failure == NULL ? "ok: every message intact and in order, every ack seen, both ends closed in order" : "FAILED: ",
         c.failure == NULL ? "" : c.failure);
  return c.failure == NULL ? 0 : 1;
}

static int usage(void) {
  fprintf(stderr, "usage: libuv-chan [-n MESSAGES] [-k ACK_EVERY]\n");
  return 2;
}

int main(int argc, char **argv) {
  uint32_t n = 2000, k = 4;
  int opt;
  while ((opt = getopt(argc, argv, "n:k:")) != -1) {
    if (opt != 'n' && opt != 'k')
      return usage();
    unsigned long v = strtoul(optarg, NULL, 10);
    if (v == 0 || v > 1000000)
      return usage();
    *(opt == 'n' ? &n : &k) = (uint32_t)v;
  }
  if (optind != argc)
    return usage();
  setvbuf(stdout, NULL, _IOLBF, 0);
#if defined(__APPLE__)
  printf("libuv-chan: Darwin handles are Mach ports, which uv_poll cannot watch; skipped.\n");
  return 0;
#endif

  /* A small ring, so that the parent's acks can fill it (see the top); a pool whose buffers hold
   * the largest message, so that none falls back to a one-off region. */
  memport_chan_opts_t opts;
  memport_chan_opts_init(&opts);
  opts.ring_capacity = 4096;
  opts.zerocopy_threshold = sizeof(struct head) + SMALL_MAX;
  opts.pool_buffer_size = 256u << 10;
  opts.pool_buffers = 8;
  memport_chan_t *mine, *theirs;
  int rc = memport_chan_pair(&mine, &theirs, &opts);
  if (rc != 0) {
    fprintf(stderr, "libuv-chan: memport_chan_pair: %s\n", memport_strerror(rc));
    return 1;
  }
  pid_t pid = fork();
  if (pid < 0) {
    perror("libuv-chan: fork");
    return 1;
  }
  if (pid == 0) {
    memport_chan_close(mine);
    _exit(child_main(theirs, n, k));
  }
  memport_chan_close(theirs);
  return parent_main(mine, n, k, pid);
}
