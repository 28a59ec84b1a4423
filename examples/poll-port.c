/* SPDX-License-Identifier: MIT */
/* poll-port.c: one event loop that waits with poll() on the ports of two child processes. */

/*
 * Two children ("fast", a message every 20 ms, and "slow", every 70 ms) each get one end of a
 * port pair, send a few numbered readings and exit. The parent does not block in
 * memport_port_recv on either of them: it asks each port for its pollable handle
 * (memport_port_pollable), puts both in one poll() set, and receives, without waiting, from
 * whichever port is ready. That is how a port joins an existing event loop (libuv, libevent, a
 * GUI main loop, your own): watch the handle for readability, then drain the port with
 * MEMPORT_NOWAIT until it says MEMPORT_EAGAIN.
 *
 * Rules for the handle:
 *  - it is borrowed: do not close it, and never read from it yourself (that would steal or
 *    corrupt messages); it only tells you that memport_port_recv will not block;
 *  - readable also means "the peer hung up": memport_port_recv then returns MEMPORT_EPEER
 *    once every message sent before the hang-up has been received.
 *
 * Linux: the handle is the port's socket descriptor, usable with poll, epoll or select.
 * Darwin: the handle is the port's Mach receive right, not a file descriptor, so poll() cannot
 * watch it. Use a kqueue instead:
 *     struct kevent ev;
 *     EV_SET(&ev, handle, EVFILT_MACHPORT, EV_ADD | EV_ENABLE, 0, 0, NULL);
 *     kevent(kq, &ev, 1, NULL, 0, NULL);    // then kevent() reports it like a readable fd
 * or a dispatch source: dispatch_source_create(DISPATCH_SOURCE_TYPE_MACH_RECV, handle, 0, queue).
 * This program builds on Darwin but says so and exits instead of running its poll() loop there.
 */

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <memport.h>

#define READINGS 6

struct reading {
  uint32_t sensor;
  uint32_t seq;
  int64_t sent_ns; /* when the child sent it, on the monotonic clock (shared by all processes) */
};

struct sensor {
  const char *name;
  long period_ms;
  memport_port_t *port; /* the parent's end */
  pid_t pid;
  uint32_t received;
  int open; /* still in the poll set */
};

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The file descriptor poll() can watch for this port, or MEMPORT_ENOTSUP where the pollable
 * handle is not a file descriptor (Darwin: a Mach port; see the comment at the top). */
static int pollable_fd(const memport_port_t *port, int *fd) {
  memport_os_handle_t handle;
  int rc = memport_port_pollable(port, &handle);
  if (rc != 0)
    return rc;
#if defined(__APPLE__)
  (void)handle;
  (void)fd;
  return MEMPORT_ENOTSUP;
#else
  *fd = handle;
  return 0;
#endif
}

static int child_main(memport_port_t *port, uint32_t sensor, long period_ms) {
  memport_msg_t *msg = NULL;
  int rc = memport_msg_create(&msg);
  for (uint32_t seq = 1; rc == 0 && seq <= READINGS; seq++) {
    struct timespec pause = {0, period_ms * 1000000L};
    nanosleep(&pause, NULL);
    struct reading r = {sensor, seq, now_ns()};
    rc = memport_msg_set_bytes(msg, &r, sizeof r);
    if (rc == 0)
      rc = memport_port_send(port, msg, INT64_C(5000000000));
  }
  if (rc != 0)
    fprintf(stderr, "poll-port: child %" PRIu32 ": %s\n", sensor, memport_strerror(rc));
  memport_msg_close(msg);
  memport_port_close(port); /* the parent's poll() sees it, and its recv returns MEMPORT_EPEER */
  return rc == 0 ? 0 : 1;
}

/* Receive everything that is waiting on one sensor's port, without blocking. */
static int drain(struct sensor *s, uint32_t index, memport_msg_t *msg, int64_t start) {
  for (;;) {
    int rc = memport_port_recv(s->port, msg, MEMPORT_NOWAIT);
    if (rc == MEMPORT_EAGAIN || rc == MEMPORT_ETIMEDOUT)
      return 0; /* nothing more for now: back to poll() */
    if (rc == MEMPORT_EPEER) {
      printf("%7.1f ms  %-4s hung up after %" PRIu32 " readings\n", (double)(now_ns() - start) / 1e6, s->name,
             s->received);
      s->open = 0;
      return 0;
    }
    if (rc != 0)
      return rc;
    size_t len;
    const void *bytes = memport_msg_bytes(msg, &len);
    struct reading r;
    if (bytes == NULL || len != sizeof r)
      return MEMPORT_EPROTO;
    memcpy(&r, bytes, sizeof r);
    if (r.sensor != index || r.seq != s->received + 1)
      return MEMPORT_EPROTO; /* out of order or from the wrong sensor */
    s->received++;
    int64_t t = now_ns();
    printf("%7.1f ms  %-4s reading %" PRIu32 " (in flight %.0f us)\n", (double)(t - start) / 1e6, s->name,
           r.seq, (double)(t - r.sent_ns) / 1e3);
  }
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  struct sensor sensors[2] = {
    {"fast", 20, NULL, -1, 0, 1},
    {"slow", 70, NULL, -1, 0, 1},
  };
  struct pollfd fds[2];
  int fd[2] = {-1, -1};
  memport_msg_t *msg = NULL;
  int status = 1, rc;

  for (uint32_t i = 0; i < 2; i++) {
    memport_port_t *child_end = NULL;
    if ((rc = memport_port_pair(&sensors[i].port, &child_end)) != 0) {
      fprintf(stderr, "poll-port: memport_port_pair: %s\n", memport_strerror(rc));
      goto out;
    }
    if ((rc = pollable_fd(sensors[i].port, &fd[i])) != 0) {
      memport_port_close(child_end);
      if (rc == MEMPORT_ENOTSUP)
        fprintf(stderr, "poll-port: here a port's pollable handle is not a file descriptor (a Mach receive "
                        "right on Darwin): watch it with kqueue EVFILT_MACHPORT or a dispatch source, not "
                        "poll(); see the comment at the top of poll-port.c\n");
      else
        fprintf(stderr, "poll-port: memport_port_pollable: %s\n", memport_strerror(rc));
      goto out;
    }
    fds[i].events = POLLIN;
    fflush(NULL);
    sensors[i].pid = fork();
    if (sensors[i].pid == 0) {
      for (uint32_t j = 0; j <= i; j++)
        memport_port_close(sensors[j].port);
      _exit(child_main(child_end, i, sensors[i].period_ms));
    }
    memport_port_close(child_end);
    if (sensors[i].pid < 0) {
      perror("poll-port: fork");
      goto out;
    }
  }
  if ((rc = memport_msg_create(&msg)) != 0) {
    fprintf(stderr, "poll-port: memport_msg_create: %s\n", memport_strerror(rc));
    goto out;
  }

  printf("event loop: poll() on 2 ports (fd %d and %d)\n", fd[0], fd[1]);
  int64_t start = now_ns();
  unsigned wakeups = 0;
  while (sensors[0].open || sensors[1].open) {
    for (int i = 0; i < 2; i++)
      fds[i].fd = sensors[i].open ? fd[i] : -1; /* poll() skips negative descriptors */
    int n = poll(fds, 2, 5000);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      perror("poll-port: poll");
      goto out;
    }
    if (n == 0) {
      fprintf(stderr, "poll-port: nothing for 5 s\n");
      goto out;
    }
    wakeups++;
    for (uint32_t i = 0; i < 2; i++) {
      if (fds[i].fd < 0 || fds[i].revents == 0)
        continue;
      if ((rc = drain(&sensors[i], i, msg, start)) != 0) {
        fprintf(stderr, "poll-port: %s: %s\n", sensors[i].name, memport_strerror(rc));
        goto out;
      }
    }
  }
  status = sensors[0].received == READINGS && sensors[1].received == READINGS ? 0 : 1;
  printf("%u wake-ups for %d readings; %s\n", wakeups, 2 * READINGS, status == 0 ? "OK" : "readings missing");

out:
  memport_msg_close(msg);
  for (int i = 0; i < 2; i++) {
    memport_port_close(sensors[i].port);
    if (sensors[i].pid > 0) {
      int ws = 0;
      while (waitpid(sensors[i].pid, &ws, 0) < 0 && errno == EINTR) {
      }
      if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
        status = 1;
    }
  }
  return status;
}
