/* SPDX-License-Identifier: MIT */
/* fuzz_portrec.c: libFuzzer harness: Linux port receive (lib/linux/port.c) of records a hostile peer writes to the socket, with any header, payload and set of descriptors. */
#include "fuzz.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * Per input: a port pair. The harness writes records straight to the peer's socket with
 * sendmsg(), as a hostile process would: the 80-byte wire header (raw from the input, or valid
 * with fields perturbed), a payload (short, or around the 64 KiB limit so the kernel truncates),
 * SCM_RIGHTS with descriptors of every kind memport meets or must refuse (good and bad memfds,
 * semaphores, sockets of both types, pipes, /dev/null, eventfds; up to past the 64 a message can
 * carry, so the kernel truncates the control data), optionally SCM_CREDENTIALS, or nothing at
 * all; then memport_port_recv(NOWAIT) receives each. The peer may hang up before the last one.
 * Every descriptor the harness makes is closed after sendmsg; the library's copies must be
 * gone after memport_msg_clear (checked by counting descriptors and memfd mappings).
 *
 * Checked: an accepted record has exactly the announced payload and handles of the announced
 * kinds, each usable; a refused one leaves the message empty; nothing leaks or crashes.
 */

#define WIRE_MAGIC 0x534d504du
#define WIRE_HDR 80u /* 16 bytes + one kind byte per possible handle */
#define MAX_FDS 70u  /* more than MEMPORT_MSG_MAX_HANDLES */

static struct fz_leaks leaks;
static unsigned char payload[MEMPORT_MSG_MAX_BYTES + 512];

/* A memfd of `size` bytes with `seals`, or -1. */
static int make_memfd(size_t size, unsigned seals, int magic_sem) {
  int fd = memfd_create("fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0)
    return -1;
  if (size != 0 && ftruncate(fd, (off_t)size) != 0) {
    close(fd);
    return -1;
  }
  if (magic_sem && size >= 8) {
    uint32_t words[2] = {0xdeadbeefu, 1u}; /* not a semaphore page */
    (void)pwrite(fd, words, sizeof words, 0);
  }
  if (seals != 0)
    (void)fcntl(fd, F_ADD_SEALS, seals);
  return fd;
}

/* One descriptor of the kind the input picks (the caller closes it), or -1. */
static int make_fd(uint8_t kind) {
  size_t page = memport_page_size();
  switch (kind % 14u) {
  case 0: { /* a region of memport's own: sealed GROW|SHRINK */
    memport_region_t *r;
    if (memport_region_create(&r, page, 0) != 0)
      return -1;
    int fd = fcntl(r->handle, F_DUPFD_CLOEXEC, 0);
    memport_region_close(r);
    return fd;
  }
  case 1: { /* a read-only region (F_SEAL_FUTURE_WRITE) */
    memport_region_t *r, *ro;
    if (memport_region_create(&r, page, 0) != 0)
      return -1;
    int fd = -1;
    if (memport_region_readonly(r, &ro) == 0) {
      fd = fcntl(ro->handle, F_DUPFD_CLOEXEC, 0);
      memport_region_close(ro);
    }
    memport_region_close(r);
    return fd;
  }
  case 2: { /* a semaphore */
    memport_sem_t *s;
    if (memport_sem_create(&s, 0, 0) != 0)
      return -1;
    int fd = fcntl(s->handle, F_DUPFD_CLOEXEC, 0);
    memport_sem_close(s);
    return fd;
  }
  case 3: /* a memfd that can shrink */
    return make_memfd(page, 0, 0);
  case 4: /* sealed, but empty */
    return make_memfd(0, F_SEAL_SHRINK | F_SEAL_GROW, 0);
  case 5: /* sealed page that is no semaphore */
    return make_memfd(page, F_SEAL_SHRINK | F_SEAL_GROW, 1);
  case 6: /* sealed, write-sealed (cannot be mapped writable at all) */
    return make_memfd(page, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE, 1);
  case 7: { /* a connected SOCK_SEQPACKET socket: a port */
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
      return -1;
    close(sv[1]);
    return sv[0];
  }
  case 8: { /* a stream socket */
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
      return -1;
    close(sv[1]);
    return sv[0];
  }
  case 9: /* a socket never connected */
    return socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  case 10: {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
      return -1;
    close(p[1]);
    return p[0];
  }
  case 11:
    return open("/dev/null", O_RDWR | O_CLOEXEC);
  case 12:
    return eventfd(0, EFD_CLOEXEC);
  default: { /* a memfd region opened read-only through /proc */
    int fd = make_memfd(page, F_SEAL_SHRINK | F_SEAL_GROW, 0);
    if (fd < 0)
      return -1;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    int ro = open(path, O_RDONLY | O_CLOEXEC);
    close(fd);
    return ro;
  }
  }
}

/* Write one hostile record to the peer socket. Returns the announced handle kinds in kinds[]. */
static void send_record(struct fz *f, int sock, uint8_t *kinds, size_t *nkinds, size_t *nbytes_out) {
  uint8_t mode = fz_u8(f);
  unsigned char hdr[WIRE_HDR];
  size_t nfds = fz_u8(f);
  nfds = (nfds & 0x80u) ? 60u + nfds % (MAX_FDS - 59u) : nfds % 6u;
  size_t nbytes;
  uint8_t lenmode = fz_u8(f);
  if (lenmode % 8u == 0)
    nbytes = MEMPORT_MSG_MAX_BYTES + 8u - fz_u8(f) % 17u; /* either side of the limit */
  else
    nbytes = fz_u8(f) % 64u;

  if (mode % 4u == 0) {
    fz_bytes(f, hdr, sizeof hdr); /* anything */
  } else {
    /* A valid header, then the input perturbs it. */
    memset(hdr, 0, sizeof hdr);
    uint32_t magic = WIRE_MAGIC, nb = (uint32_t)nbytes, res = 0;
    uint16_t version = 1, nh = (uint16_t)nfds;
    memcpy(hdr, &magic, 4);
    memcpy(hdr + 4, &version, 2);
    memcpy(hdr + 6, &nh, 2);
    memcpy(hdr + 8, &nb, 4);
    memcpy(hdr + 12, &res, 4);
    for (size_t i = 0; i < nfds && i < 64; i++)
      hdr[16 + i] = fz_u8(f);
    if (mode % 4u == 2) { /* flip some bytes */
      unsigned k = fz_u8(f) % 4u;
      for (unsigned i = 0; i < k; i++) {
        size_t at = fz_u8(f) % WIRE_HDR; /* (two reads: one statement each, in this order) */
        hdr[at] ^= fz_u8(f);
      }
    }
  }
  int fds[MAX_FDS];
  size_t made = 0;
  for (size_t i = 0; i < nfds; i++) {
    uint8_t k = (i < 64 && mode % 4u != 0) ? (uint8_t)(hdr[16 + i] & 0x0fu) : fz_u8(f);
    /* Descriptors that match the announced kind most of the time, anything otherwise. */
    if (mode % 4u != 0 && (fz_u8(f) & 3u) != 0)
      k = k == MEMPORT_HANDLE_REGION ? (fz_u8(f) & 1u) : k == MEMPORT_HANDLE_SEM ? 2 : k == MEMPORT_HANDLE_PORT ? 7 : k;
    else
      k = fz_u8(f);
    int fd = make_fd(k);
    if (fd >= 0)
      fds[made++] = fd;
  }
  *nkinds = made < 64 ? made : 64;
  memcpy(kinds, hdr + 16, 64);

  size_t pl = nbytes;
  if (pl > sizeof payload)
    pl = sizeof payload;
  memset(payload, mode, pl);
  struct iovec iov[2] = {{.iov_base = hdr, .iov_len = sizeof hdr}, {.iov_base = payload, .iov_len = pl}};
  uint8_t shape = fz_u8(f);
  struct msghdr mh;
  memset(&mh, 0, sizeof mh);
  mh.msg_iov = iov;
  mh.msg_iovlen = 2;
  if (shape % 8u == 0) { /* a short record: part of the header only */
    iov[0].iov_len = fz_u8(f) % (WIRE_HDR + 1);
    mh.msg_iovlen = 1;
  }
  *nbytes_out = mh.msg_iovlen == 2 ? pl : 0; /* what an accepted record must carry */
  union {
    char buf[CMSG_SPACE(sizeof(int) * MAX_FDS) + CMSG_SPACE(sizeof(struct ucred))];
    struct cmsghdr align;
  } ctl;
  memset(&ctl, 0, sizeof ctl);
  size_t clen = 0;
  if (made != 0) {
    struct cmsghdr *c = (struct cmsghdr *)(void *)ctl.buf;
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * made);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * made);
    clen += CMSG_SPACE(sizeof(int) * made);
  }
  if (shape & 0x10u) { /* our own credentials, explicitly */
    struct cmsghdr *c = (struct cmsghdr *)(void *)(ctl.buf + clen);
    struct ucred uc = {getpid(), geteuid(), getegid()};
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_CREDENTIALS;
    c->cmsg_len = CMSG_LEN(sizeof uc);
    memcpy(CMSG_DATA(c), &uc, sizeof uc);
    clen += CMSG_SPACE(sizeof uc);
  }
  if (clen != 0) {
    mh.msg_control = ctl.buf;
    mh.msg_controllen = clen;
  }
  (void)sendmsg(sock, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
  for (size_t i = 0; i < made; i++)
    close(fds[i]);
}

/* Use what an accepted message carries, then drop it. */
static void check_accepted(memport_msg_t *msg, const uint8_t *kinds, size_t nkinds) {
  int n = memport_msg_handle_count(msg);
  if (n < 0 || (size_t)n > MEMPORT_MSG_MAX_HANDLES)
    abort();
  (void)nkinds;
  for (int i = 0; i < n; i++) {
    int kind = memport_msg_handle_kind(msg, (size_t)i);
    if (kind != (kinds[i] & 0x0f))
      abort(); /* the handle is of the kind the header announced */
    switch (kind) {
    case MEMPORT_HANDLE_REGION: {
      memport_region_t *r;
      void *p;
      if (memport_msg_take_region(msg, (size_t)i, &r) != 0)
        abort();
      if (memport_region_size(r) == 0)
        abort();
      if (memport_region_map(r, MEMPORT_MAP_READONLY, &p) == 0) {
        volatile const unsigned char *b = p;
        (void)b[0];
        (void)b[memport_region_size(r) - 1];
        memport_unmap(p);
      }
      int ro = memport_region_is_readonly(r);
      if (ro == 0 && memport_region_map(r, 0, &p) == 0)
        memport_unmap(p);
      memport_region_close(r);
      break;
    }
    case MEMPORT_HANDLE_SEM: {
      memport_sem_t *s;
      if (memport_msg_take_sem(msg, (size_t)i, &s) != 0)
        abort();
      (void)memport_sem_signal(s);
      (void)memport_sem_trywait(s);
      memport_sem_close(s);
      break;
    }
    case MEMPORT_HANDLE_PORT: {
      memport_port_t *p;
      memport_cred_t c;
      if (memport_msg_take_port(msg, (size_t)i, &p) != 0)
        abort();
      (void)memport_port_peer(p, &c);
      memport_port_close(p);
      break;
    }
    default:
      abort();
    }
  }
}

static void run(struct fz *f) {
  memport_port_t *a, *b;
  memport_msg_t *msg;
  if (memport_port_pair(&a, &b) != 0 || memport_msg_create(&msg) != 0)
    abort();
  unsigned records = 1u + fz_u8(f) % 4u;
  for (unsigned i = 0; i < records && !fz_empty(f); i++) {
    uint8_t kinds[64];
    size_t nkinds = 0, nbytes = 0;
    if (b != NULL)
      send_record(f, b->tx, kinds, &nkinds, &nbytes);
    uint8_t after = fz_u8(f);
    if ((after & 0x0fu) == 0x0fu) { /* the peer hangs up */
      memport_port_close(b);
      b = NULL;
    }
    int rc = memport_port_recv(a, msg, MEMPORT_NOWAIT);
    size_t len;
    (void)memport_msg_bytes(msg, &len);
    fz_debug("record %u: %s, %zu bytes, %d handles\n", i, memport_err_name(rc), len, memport_msg_handle_count(msg));
    if (rc == 0) {
      if (len != nbytes)
        abort();
      check_accepted(msg, kinds, nkinds);
      memport_cred_t who;
      if (memport_msg_sender(msg, &who) != 0)
        abort();
    } else if (len != 0 || memport_msg_handle_count(msg) != 0) {
      abort(); /* a refused record leaves nothing behind */
    }
    memport_msg_clear(msg);
  }
  memport_msg_close(msg);
  memport_port_close(a);
  memport_port_close(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct fz f = {data, size};
  fz_leaks_begin(&leaks);
  run(&f);
  fz_leaks_end(&leaks, 1);
  return 0;
}
