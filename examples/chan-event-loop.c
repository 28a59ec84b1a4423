/* SPDX-License-Identifier: MIT */
/* chan-event-loop.c: both ends of a channel driven by the same poll() loop, sending only when there is room, receiving what arrives, closing in order. */

/*
 * A channel pair is made, then the process forks; parent and child each keep one end and run
 * the same loop over it. Each side sends MESSAGES checksummed messages of mixed sizes: small ones
 * copied through the ring (memport_chan_send) and large ones built in place in a pool buffer
 * (memport_chan_alloc, memport_chan_send_buf). No call ever waits: every send and receive uses
 * MEMPORT_NOWAIT, and the only place the loop sleeps is poll() on the channel's pollable handle
 * (memport_chan_pollable). That handle is ready when
 *  - a message waits, or the peer's sending side has ended and no receive has said so yet
 *    (receives then return MEMPORT_ECLOSED), or
 *  - a send, alloc or send_buf that failed with MEMPORT_EAGAIN could now succeed;
 * whatever calls were made in between, so the loop needs no particular call order before poll().
 * Once a receive has returned MEMPORT_ECLOSED the ended side no longer makes the handle ready, so
 * a side that still has messages to send after the peer's half-close waits for room as before.
 *
 * When a side has sent everything it says so with memport_chan_shutdown(MEMPORT_CHAN_SHUT_SEND)
 * and goes on receiving. A side is done when its own sending is done and its receives returned
 * MEMPORT_ECLOSED; it has then checked every message (sequence number, length, checksum).
 * The channel is small on purpose (a 16 KiB ring, 4 pool buffers) so that both sides run out of
 * room often and really wait on the handle.
 *
 * An alarm() watchdog fails the program after 60 s, so a readiness bug shows as a failure, not
 * as a hang of `make check`.
 *
 * Darwin: the pollable handle is a Mach port set, which poll() cannot watch (use a kqueue with
 * EVFILT_MACHPORT or a dispatch source, see examples/poll-port.c). This program builds there but
 * says so and exits 77 (a skipped test) instead of running.
 */

#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memport.h>

#define MESSAGES 3000
#define WATCHDOG_S 60

/* Every message starts with this header; the payload after it is derived from (side, seq). */
struct hdr {
  uint32_t seq;
  uint32_t len; /* of the whole message, header included */
  uint64_t sum; /* checksum of the payload */
};

/* What one side has done so far. */
struct side {
  const char *name;
  uint32_t side_id; /* 0 parent, 1 child: the two streams differ */
  memport_chan_t *ch;
  uint32_t next_tx;   /* next message to send */
  uint32_t next_rx;   /* sequence number expected next */
  int have_buf;       /* a filled pool buffer whose send_buf failed with MEMPORT_EAGAIN */
  memport_buf_t buf;  /* ... kept here to be sent again, not refilled */
  int shut;           /* our sending side is shut down */
  int peer_done;      /* receives returned MEMPORT_ECLOSED */
  unsigned polls, tx_eagain, zerocopy_sent;
  unsigned late_polls, late_idle; /* polls after our receives ended; of them, wakes that found nothing to do */
};

static void on_alarm(int sig) {
  (void)sig;
  static const char msg[] = "chan-event-loop: watchdog: not done after 60 s (WATCHDOG_S), failing\n";
  (void)!write(2, msg, sizeof msg - 1);
  _exit(1);
}

static uint64_t mix(uint64_t x) { /* splitmix64 finalizer */
  x ^= x >> 30;
  x *= UINT64_C(0xbf58476d1ce4e5b9);
  x ^= x >> 27;
  x *= UINT64_C(0x94d049bb133111eb);
  return x ^ (x >> 31);
}

/* Mixed sizes: every fourth message is large and goes zero-copy (up to 48 KiB, within one pool
 * buffer so no one-off region is needed); the others are small and go through the ring. */
static int is_zerocopy(uint32_t seq) { return seq % 4 == 3; }
static uint32_t msg_len(uint32_t side_id, uint32_t seq) {
  uint64_t r = mix(((uint64_t)side_id << 32) | seq);
  if (is_zerocopy(seq))
    return (uint32_t)(sizeof(struct hdr) + 1024 + r % (48 * 1024));
  return (uint32_t)(sizeof(struct hdr) + r % 240);
}

static uint64_t fnv1a(const unsigned char *p, size_t n) {
  uint64_t h = UINT64_C(0xcbf29ce484222325);
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * UINT64_C(0x100000001b3);
  return h;
}

/* Write message seq of this side into dst (msg_len bytes). */
static void fill(unsigned char *dst, uint32_t side_id, uint32_t seq) {
  uint32_t len = msg_len(side_id, seq);
  unsigned char *payload = dst + sizeof(struct hdr);
  size_t n = len - sizeof(struct hdr);
  uint64_t x = mix(((uint64_t)side_id << 32) ^ seq ^ UINT64_C(0x5eed));
  for (size_t i = 0; i < n; i++) {
    if (i % 8 == 0)
      x = mix(x);
    payload[i] = (unsigned char)(x >> (8 * (i % 8)));
  }
  struct hdr h = {seq, len, fnv1a(payload, n)};
  memcpy(dst, &h, sizeof h);
}

/* Try to send the next message without waiting: 0 sent, MEMPORT_EAGAIN no room now (the
 * pollable handle becomes ready when the same call could succeed), another code on failure. */
static int send_next(struct side *s) {
  uint32_t seq = s->next_tx;
  uint32_t len = msg_len(s->side_id, seq);
  int err;
  if (!is_zerocopy(seq)) {
    unsigned char small[sizeof(struct hdr) + 240];
    fill(small, s->side_id, seq);
    err = memport_chan_send(s->ch, small, len, 0, MEMPORT_NOWAIT); /* copied into the ring */
  } else {
    if (!s->have_buf) {
      err = memport_chan_alloc(s->ch, len, &s->buf, MEMPORT_NOWAIT); /* EAGAIN: no free pool buffer */
      if (err != 0)
        return err;
      fill(s->buf.data, s->side_id, seq); /* built in place, in shared memory */
      s->have_buf = 1;
    }
    /* A send_buf that fails with MEMPORT_EAGAIN (no room in the ring for its announcement) leaves
     * the filled buffer with us: keep it and send the same buffer again later. */
    err = memport_chan_send_buf(s->ch, &s->buf, MEMPORT_NOWAIT);
    if (err == 0) {
      s->have_buf = 0;
      s->zerocopy_sent++;
    }
  }
  if (err == 0)
    s->next_tx++;
  return err;
}

/* Check one received message: the next sequence number, the length that number implies, and
 * the checksum. The bytes are read in place in memory the peer can still write; our peer is our
 * own fork, but a program that does not trust its peer copies first (memport_chan_send(3)). */
static int verify(struct side *s, const void *data, size_t len) {
  struct hdr h;
  uint32_t peer = 1 - s->side_id;
  if (len < sizeof h) {
    fprintf(stderr, "%s: message %u: only %zu bytes\n", s->name, s->next_rx, len);
    return -1;
  }
  memcpy(&h, data, sizeof h);
  if (h.seq != s->next_rx || h.len != len || len != msg_len(peer, s->next_rx) ||
      fnv1a((const unsigned char *)data + sizeof h, len - sizeof h) != h.sum) {
    fprintf(stderr, "%s: message %u: got seq %u, %zu bytes: out of order or corrupt\n", s->name,
            s->next_rx, h.seq, len);
    return -1;
  }
  s->next_rx++;
  return 0;
}

/* Receive without waiting until nothing is left: 0 (drained), or -1 on failure. Sets peer_done
 * when the peer's side has ended in order. */
static int receive_all(struct side *s) {
  for (;;) {
    memport_buf_t m;
    int err = memport_chan_recv(s->ch, &m, MEMPORT_NOWAIT);
    if (err == MEMPORT_EAGAIN)
      return 0;
    if (err == MEMPORT_ECLOSED) { /* the peer shut down its sending side: all its messages came */
      s->peer_done = 1;
      return 0;
    }
    if (err != 0) { /* MEMPORT_EPEER: the peer died; anything else: a bug */
      fprintf(stderr, "%s: recv: %s\n", s->name, memport_strerror(err));
      return -1;
    }
    int bad = verify(s, m.data, m.len);
    memport_chan_release(s->ch, &m); /* at once: a ring message must go before the next recv */
    if (bad)
      return -1;
  }
}

static int run(struct side *s) {
  memport_os_handle_t h;
  int err = memport_chan_pollable(s->ch, &h); /* borrowed: never read or closed by us */
  if (err != 0) {
    fprintf(stderr, "%s: pollable: %s\n", s->name, memport_strerror(err));
    return -1;
  }
#if defined(__APPLE__)
  int fd = -1; /* not reached: main skips Darwin */
  (void)h;
#else
  int fd = h;
#endif
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  int woke_late = 0; /* the last poll returned after our receives had ended */
  for (;;) {
    /* 1. Send while there is room. */
    uint32_t tx_before = s->next_tx;
    while (s->next_tx < MESSAGES) {
      err = send_next(s);
      if (err == MEMPORT_EAGAIN) {
        s->tx_eagain++; /* the handle will be ready when this send could succeed */
        break;
      }
      if (err != 0) {
        fprintf(stderr, "%s: send %u: %s\n", s->name, s->next_tx, memport_strerror(err));
        return -1;
      }
    }
    /* 2. All sent: say so once; the peer's receives end with MEMPORT_ECLOSED after our last one. */
    if (s->next_tx == MESSAGES && !s->shut) {
      err = memport_chan_shutdown(s->ch, MEMPORT_CHAN_SHUT_SEND);
      if (err != 0) {
        fprintf(stderr, "%s: shutdown: %s\n", s->name, memport_strerror(err));
        return -1;
      }
      s->shut = 1;
    }
    /* 3. Receive everything that is there. */
    if (!s->peer_done && receive_all(s) != 0)
      return -1;
    if (s->shut && s->peer_done)
      return 0;
    if (woke_late && s->next_tx == tx_before)
      s->late_idle++; /* woken, yet still no room: should be rare, not once per spin */
    /* 4. Nothing to do until a message comes, the peer ends its side, or room frees up for the
     * send that failed. No draining or call order is needed first: the handle stays ready while
     * any of that holds. After our receives returned MEMPORT_ECLOSED (the peer is done sending
     * but still receiving), only room for our failed send makes it ready. */
    s->polls++;
    woke_late = s->peer_done;
    s->late_polls += (unsigned)woke_late;
    if (poll(&pfd, 1, -1) < 0) {
      perror("poll");
      return -1;
    }
  }
}

int main(void) {
#if defined(__APPLE__)
  printf("chan-event-loop: not supported on this platform: the channel's pollable handle is a Mach "
         "port set, which poll() cannot watch (use kqueue with EVFILT_MACHPORT); skipped\n");
  return 77;
#endif
  signal(SIGALRM, on_alarm);
  alarm(WATCHDOG_S); /* a child does not inherit a pending alarm: it sets its own below */

  /* A small channel, so that both sides often find no room and must wait on the handle. */
  memport_chan_opts_t o;
  memport_chan_opts_init(&o);
  o.ring_capacity = 16 * 1024;
  o.pool_buffers = 4;
  o.pool_buffer_size = 64 * 1024;
  memport_chan_t *a, *b;
  int err = memport_chan_pair(&a, &b, &o);
  if (err != 0) {
    fprintf(stderr, "chan_pair: %s\n", memport_strerror(err));
    return 1;
  }
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    return 1;
  }
  /* Each process closes its copy of the other's end, and closes its own end in order by
   * shutting it down first (an end made by memport_chan_pair announces nothing by itself). */
  struct side s = {0};
  if (pid == 0) {
    alarm(WATCHDOG_S);
    memport_chan_close(a);
    s.name = "child";
    s.side_id = 1;
    s.ch = b;
  } else {
    memport_chan_close(b);
    s.name = "parent";
    s.side_id = 0;
    s.ch = a;
  }
  int rc = run(&s);
  if (s.have_buf)
    memport_chan_free_buf(s.ch, &s.buf);
  memport_chan_close(s.ch);
  if (rc == 0 && s.next_rx != MESSAGES) {
    fprintf(stderr, "%s: received %u of %u messages\n", s.name, s.next_rx, MESSAGES);
    rc = -1;
  }
  /* A handle that stayed ready after the peer's end would make the loop spin: each poll would
   * return at once and find the same send still without room, thousands of times while the
   * peer drains the ring. A correct handle wakes for nothing rarely (a stale wake request). */
  if (rc == 0 && s.late_idle > 200) {
    fprintf(stderr, "%s: %u of %u polls after the peer's end woke for nothing: the handle spins\n", s.name,
            s.late_idle, s.late_polls);
    rc = -1;
  }
  if (rc == 0)
    printf("%-6s: sent %u (%u zero-copy), received and verified %u; %u polls (%u after the peer's end, "
           "%u of them for nothing), %u sends found no room\n",
           s.name, s.next_tx, s.zerocopy_sent, s.next_rx, s.polls, s.late_polls, s.late_idle, s.tx_eagain);
  if (pid == 0) {
    fflush(stdout);
    _exit(rc == 0 ? 0 : 1);
  }

  int status;
  if (waitpid(pid, &status, 0) != pid) {
    perror("waitpid");
    return 1;
  }
  int child_ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  if (rc == 0 && child_ok) {
    printf("chan-event-loop: OK: both sides sent %u messages, got all of the other's in order, "
           "and ended with MEMPORT_ECLOSED\n",
           MESSAGES);
    return 0;
  }
  printf("chan-event-loop: FAILED (parent %s, child %s)\n", rc == 0 ? "ok" : "failed",
         child_ok ? "ok" : "failed");
  return 1;
}
