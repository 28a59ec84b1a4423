/* SPDX-License-Identifier: MIT */
/* lat_fd.c: memport-bench's latency methods on file descriptors, the baselines: pipe(2) (one pipe each way)
 * and a SOCK_STREAM socketpair; write()/read() of the whole message. */
#include "lat.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int write_full(int fd, const void *buf, size_t len) {
  const unsigned char *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int read_full(int fd, void *buf, size_t len) {
  unsigned char *p = buf;
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) return -EPIPE;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

static int set_cloexec(int fd) { return fcntl(fd, F_SETFD, FD_CLOEXEC); }

static int fd_open(struct lat_ctx *c) {
  if (c->m->kind == LK_PIPE) {
    if (pipe(c->fwd) != 0 || pipe(c->back) != 0) return ctx_fail(c, "pipe: %s", strerror(errno));
    set_cloexec(c->fwd[0]);
    set_cloexec(c->fwd[1]);
    set_cloexec(c->back[0]);
    set_cloexec(c->back[1]);
    return 0;
  }
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, c->fwd) != 0) return ctx_fail(c, "socketpair: %s", strerror(errno));
  set_cloexec(c->fwd[0]);
  set_cloexec(c->fwd[1]);
  return 0;
}

static int fd_side(struct lat_ctx *c) {
  if (c->m->kind == LK_PIPE) {
    if (c->receiver) {
      close_fd(&c->fwd[1]);
      close_fd(&c->back[0]);
      c->rfd = c->fwd[0];
      c->wfd = c->back[1];
    } else {
      close_fd(&c->fwd[0]);
      close_fd(&c->back[1]);
      c->wfd = c->fwd[1];
      c->rfd = c->back[0];
    }
    return 0;
  }
  if (c->receiver) {
    close_fd(&c->fwd[0]);
    c->rfd = c->wfd = c->fwd[1];
  } else {
    close_fd(&c->fwd[1]);
    c->rfd = c->wfd = c->fwd[0];
  }
  return 0;
}

static void fd_close(struct lat_ctx *c) {
  close_fd(&c->fwd[0]);
  close_fd(&c->fwd[1]);
  close_fd(&c->back[0]);
  close_fd(&c->back[1]);
}

static int fd_send(struct lat_ctx *c, size_t len, uint64_t seq) {
  stamp(c->src, len, seq);
  int rc = write_full(c->wfd, c->src, len);
  return rc < 0 ? ctx_fail(c, "write: %s", strerror(-rc)) : 0;
}

static int fd_recv(struct lat_ctx *c, size_t len, const unsigned char **data) {
  int rc = read_full(c->rfd, c->dst, len);
  if (rc < 0) return ctx_fail(c, "read: %s", strerror(-rc));
  *data = c->dst;
  return 0;
}

static int fd_release(struct lat_ctx *c) {
  (void)c;
  return 0;
}

static int fd_ack(struct lat_ctx *c, uint64_t seq) {
  int rc = write_full(c->wfd, &seq, sizeof seq);
  return rc < 0 ? ctx_fail(c, "ack write: %s", strerror(-rc)) : 0;
}

static int fd_wait_ack(struct lat_ctx *c, uint64_t seq) {
  uint64_t got = 0;
  int rc = read_full(c->rfd, &got, sizeof got);
  if (rc < 0) return ctx_fail(c, "ack read: %s", strerror(-rc));
  return got == seq ? 0 : ctx_fail(c, "ack %" PRIu64 ", expected %" PRIu64, got, seq);
}

const struct lat_ops lat_fd_ops = {fd_open, fd_side, fd_close, fd_send, fd_recv, fd_release, fd_ack, fd_wait_ack};
