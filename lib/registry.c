/* SPDX-License-Identifier: MIT */
/* lib/registry.c: the portable name registry: lock-file records, liveness, reclaiming and listing, in a backend's private directory. */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/*
 * Both backends keep the names of a user in a private directory that they find and verify
 * themselves (Linux: $XDG_RUNTIME_DIR/memport or /tmp/memport-UID; Darwin: the user's temporary
 * directory). What is in it, and what it means, is decided here, once:
 *
 *  - A name N has the lock file "N.lock". Its owner holds open-file-description write locks on
 *    two bytes of it for its lifetime (lock_take): byte 0 (MEMPORT__LOCK_CLAIM) from
 *    the claim on, which makes it the one creator, and byte 1 (MEMPORT__LOCK_LIVE) once its
 *    record is written, which tells readers that the record is its own. Until then the file may
 *    still hold a dead owner's record, which readers must not take for the new owner's. The
 *    kernel drops the locks when the last descriptor of that open file description is closed, so
 *    when the owner dies in any way the name has no live owner and the next creator reclaims the
 *    file. A fork child that inherited the descriptor shares the locks: the name stays live
 *    while either holds them. The locks can be tested without being taken
 *    (lock_held), so a listing or a lookup never makes a concurrent creator fail.
 *  - The file holds one record line, written by the owner once it holds the claim lock:
 *        "memport-name 1 kind=K pid=P uid=U gid=G\n"
 *    (K is MEMPORT_NAME_SERVICE, MEMPORT_NAME_REGION or MEMPORT_NAME_TOPIC, P > 0, every number
 *    plain decimal of at most 20 digits within its type, nothing before, between or after). A
 *    topic's record, and only a topic's, has " subs=S" before the newline: the subscribers its
 *    publisher counts now, which it rewrites in place (memport__registry_set_subs) as they come and
 *    go. Readers treat it as untrusted text: anything else, including a record still being
 *    written, is "no record". Readers never write: nothing they do reaches the owner.
 *  - The owner removes the file at close, while still holding the lock; a creator that
 *    opened the file just before finds, once it has the lock, that the path no longer names
 *    its file, and starts over.
 *  - A sweeper (memport__registry_sweep: at service creation, memport_name_sweep) removes the file
 *    of a dead owner. It first takes byte 2 (MEMPORT__LOCK_SWEEP), then the claim byte, which
 *    no live or starting owner holds then; it checks that the path still names the file it
 *    locked, lets the backend remove its transport entry, and unlinks the file while still
 *    holding both locks. A creator whose claim fails while the sweep byte is held, or whose file
 *    is no longer the one the path names, starts over instead of reporting MEMPORT_EEXIST: a
 *    sweep never makes a creator fail. Readers only test locks, so a sweep looks to them like
 *    an owner still starting, then like an absent name.
 *
 * The backend adds its own transport (Linux: the N.sock socket; Darwin: the bootstrap name).
 */

#define LOCK_SUFFIX ".lock"
#define ENTRY_MAX (MEMPORT_NAME_MAX + sizeof LOCK_SUFFIX)
#define CLAIM_TRIES 64

static int neg_errno(int e, int fallback) { return e > 0 ? -e : fallback; }

/* The lock primitive: open-file-description locks. lib/registry.c relies on their semantics on
 * both kernels: owned by the open file, not the process, so shared with a fork child that
 * inherits the descriptor and dropped only when the last descriptor of the open file closes
 * (xnu: the fileglob is the owner, FG_HAS_OFDLOCK unlocks at its last close; bsd/kern/
 * kern_lockf.c lf_advlock); tested without being taken by F_OFD_GETLK, which also reports locks
 * of other open files of this process. flock() cannot be tested without taking it: a listing or
 * a connect could then make a concurrent creator fail with MEMPORT_EEXIST. Bytes past the end of
 * the file can be locked. */
static struct flock byte_lock(int which) {
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = which;
  fl.l_len = 1;
  return fl;
}

/* 0, or MEMPORT_EEXIST when another open file description holds the byte. */
static int lock_take(int fd, int which) {
  struct flock fl = byte_lock(which);
  if (fcntl(fd, MEMPORT__F_OFD_SETLK, &fl) == 0)
    return 0;
  if (errno == EAGAIN || errno == EACCES)
    return MEMPORT_EEXIST;
  return neg_errno(errno, MEMPORT_EPROTO);
}

/* 1 when another open file description holds the byte, 0 when not, negative on error. */
static int lock_held(int fd, int which) {
  struct flock fl = byte_lock(which);
  if (fcntl(fd, MEMPORT__F_OFD_GETLK, &fl) != 0)
    return neg_errno(errno, MEMPORT_EPROTO);
  return fl.l_type != F_UNLCK;
}

static int entry_of(char out[ENTRY_MAX], const char *name) {
  int n = snprintf(out, ENTRY_MAX, "%s%s", name, LOCK_SUFFIX);
  return n < 0 || (size_t)n >= ENTRY_MAX ? MEMPORT_ENAMETOOLONG : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* The record.                                                                                 */

int memport__registry_format(char *buf, size_t cap, int kind, const memport_cred_t *owner, uint32_t subs) {
  if (kind != MEMPORT_NAME_SERVICE && kind != MEMPORT_NAME_REGION && kind != MEMPORT_NAME_TOPIC)
    return MEMPORT_EINVAL;
  int n = kind == MEMPORT_NAME_TOPIC
              ? snprintf(buf, cap, "memport-name 1 kind=%d pid=%ld uid=%lu gid=%lu subs=%010lu\n", kind,
                         (long)owner->pid, (unsigned long)owner->uid, (unsigned long)owner->gid, (unsigned long)subs)
              : snprintf(buf, cap, "memport-name 1 kind=%d pid=%ld uid=%lu gid=%lu\n", kind, (long)owner->pid,
                         (unsigned long)owner->uid, (unsigned long)owner->gid);
  if (n <= 0 || (size_t)n >= cap)
    return MEMPORT_EOVERFLOW;
  return n;
}

/* An unsigned decimal field "key=digits" at text[*at..n): advances *at. */
static bool parse_field(const char *t, size_t n, size_t *at, const char *key, unsigned long long max,
                        unsigned long long *out) {
  size_t kl = strlen(key);
  if (n - *at < kl || memcmp(t + *at, key, kl) != 0)
    return false;
  size_t i = *at + kl, digits = 0;
  unsigned long long v = 0;
  while (i < n && t[i] >= '0' && t[i] <= '9') {
    unsigned d = (unsigned)(t[i] - '0');
    if (v > max / 10 || (v == max / 10 && d > max % 10))
      return false; /* v * 10 + d would pass max */
    v = v * 10 + d;
    i++;
    digits++;
  }
  if (digits == 0 || digits > 20)
    return false;
  *out = v;
  *at = i;
  return true;
}

/* One expected byte at text[*at]. */
static bool parse_byte(const char *t, size_t n, size_t *at, char c) {
  if (*at >= n || t[*at] != c)
    return false;
  (*at)++;
  return true;
}

bool memport__registry_parse(const char *text, size_t n, int *kind_out, memport_cred_t *owner, uint32_t *subs) {
  static const char magic[] = "memport-name 1 ";
  if (text == NULL || n == 0 || n >= MEMPORT__RECORD_MAX || text[n - 1] != '\n')
    return false;
  if (memchr(text, '\0', n) != NULL)
    return false;
  if (n < sizeof magic - 1 || memcmp(text, magic, sizeof magic - 1) != 0)
    return false;
  size_t at = sizeof magic - 1;
  unsigned long long kind, pid, uid, gid, count = 0;
  if (!parse_field(text, n, &at, "kind=", 3, &kind) || !parse_byte(text, n, &at, ' ') ||
      !parse_field(text, n, &at, "pid=", INT_MAX, &pid) || !parse_byte(text, n, &at, ' ') ||
      !parse_field(text, n, &at, "uid=", UINT32_MAX, &uid) || !parse_byte(text, n, &at, ' ') ||
      !parse_field(text, n, &at, "gid=", UINT32_MAX, &gid))
    return false;
  /* A topic's record, and only a topic's, counts its subscribers. */
  if (kind == MEMPORT_NAME_TOPIC &&
      (!parse_byte(text, n, &at, ' ') || !parse_field(text, n, &at, "subs=", UINT32_MAX, &count)))
    return false;
  if (!parse_byte(text, n, &at, '\n') || at != n)
    return false;
  if ((kind != MEMPORT_NAME_SERVICE && kind != MEMPORT_NAME_REGION && kind != MEMPORT_NAME_TOPIC) || pid == 0)
    return false;
  *kind_out = (int)kind;
  if (subs != NULL)
    *subs = (uint32_t)count;
  owner->pid = (pid_t)pid;
  owner->uid = (uid_t)uid;
  owner->gid = (gid_t)gid;
  return true;
}

/* ------------------------------------------------------------------------------------------ */
/* Owning a name.                                                                              */

/* Why the lock file could not be opened for writing: something that is not a lock file in its
 * place (a symbolic link: ELOOP with O_NOFOLLOW; a directory: EISDIR; a socket: ENXIO on Linux,
 * EOPNOTSUPP on Darwin; a device without its driver: ENXIO/ENODEV) is MEMPORT_EACCES, as for a
 * FIFO or a foreign file, which open and fstat let through; resources and the like pass on. */
static int open_err(int e) {
  switch (e) {
  case ELOOP:
  case EISDIR:
  case ENXIO:
  case ENODEV:
  case EOPNOTSUPP:
#if EOPNOTSUPP != ENOTSUP
  case ENOTSUP:
#endif
  case ETXTBSY:
    return MEMPORT_EACCES;
  default:
    return neg_errno(e, MEMPORT_EACCES);
  }
}

/* Does the path `entry` still name the file st describes? */
static bool names_file(int dirfd, const char *entry, const struct stat *st) {
  struct stat now;
  return fstatat(dirfd, entry, &now, AT_SYMLINK_NOFOLLOW) == 0 && now.st_dev == st->st_dev &&
         now.st_ino == st->st_ino;
}

/* The claim lock of fd is held by someone: a sweeper (it holds the sweep byte until it has
 * unlinked the file) rather than an owner? */
static bool swept_under_us(int dirfd, const char *entry, int fd, const struct stat *st) {
  return lock_held(fd, MEMPORT__LOCK_SWEEP) > 0 || !names_file(dirfd, entry, st);
}

static void sweep_nap(void) {
  struct timespec ts = {0, 100000}; /* 100 us: a sweep holds a file for a few system calls */
  nanosleep(&ts, NULL);
}

int memport__registry_claim(int dirfd, const char *name, int *out) {
  char entry[ENTRY_MAX];
  int rc = entry_of(entry, name);
  if (rc != 0)
    return rc;
  for (int attempt = 0; attempt < CLAIM_TRIES; attempt++) {
    int fd = openat(dirfd, entry, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0)
      return open_err(errno);
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
      close(fd);
      return MEMPORT_EACCES;
    }
    rc = lock_take(fd, MEMPORT__LOCK_CLAIM);
    if (rc == MEMPORT_EEXIST && swept_under_us(dirfd, entry, fd, &st)) {
      close(fd);
      sweep_nap();
      continue; /* a sweeper holds the dead owner's file, about to remove it */
    }
    if (rc != 0) {
      close(fd);
      return rc; /* MEMPORT_EEXIST: a live owner holds it */
    }
    /* We hold a lock, but on the file the path names now? The previous owner unlinks its lock
     * file at close; if we opened that inode just before, start over on a fresh file. */
    struct stat now;
    if (fstatat(dirfd, entry, &now, AT_SYMLINK_NOFOLLOW) == 0 && now.st_dev == st.st_dev &&
        now.st_ino == st.st_ino) {
      /* A dead owner's record stays until ours replaces it; readers ignore it meanwhile, as we
       * do not hold the live lock yet (see the top of this file). */
      *out = fd;
      return 0;
    }
    close(fd);
  }
  return MEMPORT_EEXIST;
}

int memport__registry_write(int fd, int kind) {
  memport_cred_t self = {.pid = getpid(), .uid = geteuid(), .gid = getegid()};
  char buf[MEMPORT__RECORD_MAX];
  int n = memport__registry_format(buf, sizeof buf, kind, &self, 0);
  if (n < 0)
    return n;
  /* Written over whatever a dead owner left, then cut to length: a reader in between sees a
   * line followed by old bytes, which does not parse (no record yet), never a wrong record. */
  ssize_t w = pwrite(fd, buf, (size_t)n, 0);
  if (w != n)
    return w < 0 ? neg_errno(errno, MEMPORT_ENOSPC) : MEMPORT_ENOSPC;
  if (ftruncate(fd, n) != 0)
    return neg_errno(errno, MEMPORT_ENOSPC);
  /* Only now is the record ours to read: before, a reader holding the claim lock's word for it
   * would take a dead owner's kind and pid for ours (Linux: a connect of the other kind failed
   * with EPROTO; Darwin: a connect took the bootstrap entry for published while it was not). */
  return lock_take(fd, MEMPORT__LOCK_LIVE);
}

int memport__registry_set_subs(int fd, uint32_t subs) {
  memport_cred_t self = {.pid = getpid(), .uid = geteuid(), .gid = getegid()};
  char buf[MEMPORT__RECORD_MAX];
  int n = memport__registry_format(buf, sizeof buf, MEMPORT_NAME_TOPIC, &self, subs);
  if (n < 0)
    return n;
  /* The same line as before but for the count's 10 digits, written over it in place: the file
   * never changes length, and a reader sees the old line, the new one, or (the read racing the
   * write) digits of both, which memport__registry_foreach reads again. */
  ssize_t w = pwrite(fd, buf, (size_t)n, 0);
  if (w != n)
    return w < 0 ? neg_errno(errno, MEMPORT_ENOSPC) : MEMPORT_ENOSPC;
  return 0;
}

void memport__registry_release(int dirfd, const char *name, int fd, bool remove) {
  if (fd < 0)
    return;
  char entry[ENTRY_MAX];
  struct stat mine, now;
  if (remove && dirfd >= 0 && entry_of(entry, name) == 0 && fstat(fd, &mine) == 0 &&
      fstatat(dirfd, entry, &now, AT_SYMLINK_NOFOLLOW) == 0 && now.st_dev == mine.st_dev &&
      now.st_ino == mine.st_ino)
    (void)unlinkat(dirfd, entry, 0); /* unlinked while still locked: see memport__registry_claim */
  close(fd); /* the lock goes with the last descriptor of this open file description */
}

/* ------------------------------------------------------------------------------------------ */
/* Looking names up.                                                                           */

/* Open the lock file `entry` for reading: never follows a symlink, never blocks on a FIFO or a
 * device planted there; -1 when absent or not a regular file. */
static int open_entry(int dirfd, const char *entry) {
  int fd = openat(dirfd, entry, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0)
    return -1;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return -1;
  }
  return fd;
}

#define SUBS_READS 4 /* reads of a topic's record until two agree */

static int lookup_entry(int dirfd, const char *entry, int *kind, memport_cred_t *owner, uint32_t *subs) {
  int fd = open_entry(dirfd, entry);
  if (fd < 0)
    return MEMPORT__REG_ABSENT;
  int state = MEMPORT__REG_ABSENT;
  if (lock_held(fd, MEMPORT__LOCK_LIVE) > 0) {
    state = MEMPORT__REG_STARTING; /* unless the record parses */
    char buf[MEMPORT__RECORD_MAX], again[MEMPORT__RECORD_MAX];
    ssize_t n = pread(fd, buf, sizeof buf, 0);
    if (n > 0 && memport__registry_parse(buf, (size_t)n, kind, owner, subs)) {
      state = MEMPORT__REG_LIVE;
      /* A topic's owner rewrites its count in place: a read that raced the write may mix two
       * counts' digits. Two reads in a row that agree hold one count (the last one read is kept
       * when the owner keeps changing it). */
      for (int r = 1; subs != NULL && *kind == MEMPORT_NAME_TOPIC && r < SUBS_READS; r++) {
        ssize_t m = pread(fd, again, sizeof again, 0);
        if (m == n && memcmp(buf, again, (size_t)n) == 0)
          break;
        int k2;
        memport_cred_t o2;
        uint32_t s2;
        if (m <= 0 || !memport__registry_parse(again, (size_t)m, &k2, &o2, &s2) || k2 != *kind ||
            o2.pid != owner->pid)
          break; /* not a count changing: keep the first reading */
        *subs = s2;
        memcpy(buf, again, (size_t)m);
        n = m;
      }
    }
  } else if (lock_held(fd, MEMPORT__LOCK_CLAIM) > 0) {
    state = MEMPORT__REG_STARTING; /* claimed, its record not written yet */
  }
  close(fd);
  return state;
}

int memport__registry_lookup(int dirfd, const char *name, int *kind, memport_cred_t *owner) {
  char entry[ENTRY_MAX];
  if (entry_of(entry, name) != 0)
    return MEMPORT__REG_ABSENT;
  return lookup_entry(dirfd, entry, kind, owner, NULL);
}

/* A directory stream of our own over dirfd: a fresh open file description (its own offset, so a
 * listing never moves or is moved by another user of dirfd) that is close-on-exec (dup() is not: a
 * fork+exec in another thread meanwhile would leak it into the new program). */
static int open_listing(int dirfd, DIR **out) {
  int listfd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (listfd < 0)
    return neg_errno(errno, MEMPORT_EMFILE);
  *out = fdopendir(listfd);
  if (*out == NULL) {
    int rc = neg_errno(errno, MEMPORT_ENOMEM);
    close(listfd);
    return rc;
  }
  return 0;
}

int memport__registry_foreach(int dirfd, int (*fn)(const memport_name_info_t *info, void *arg), void *arg) {
  DIR *dir;
  int rc = open_listing(dirfd, &dir);
  if (rc < 0)
    return rc;
  const size_t sl = sizeof LOCK_SUFFIX - 1;
  struct dirent *e;
  while ((e = readdir(dir)) != NULL) {
    size_t len = strlen(e->d_name);
    if (len <= sl || len - sl > MEMPORT_NAME_MAX || strcmp(e->d_name + len - sl, LOCK_SUFFIX) != 0)
      continue;
    memport_name_info_t info;
    memset(&info, 0, sizeof info);
    memcpy(info.name, e->d_name, len - sl);
    info.name[len - sl] = '\0';
    if (memport__name_check(info.name) != 0)
      continue;
    /* Entries without a live owner are skipped: a listing only reads (memport__registry_sweep removes). */
    if (lookup_entry(dirfd, e->d_name, &info.kind, &info.owner, &info.subscribers) != MEMPORT__REG_LIVE)
      continue;
    rc = fn(&info, arg);
    if (rc != 0)
      break;
  }
  closedir(dir);
  return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Sweeping dead owners' names.                                                                */

/* Remove the lock file `entry` (of `name`) if no owner holds it: 1 when removed, else 0. */
static int sweep_entry(int dirfd, const char *entry, const char *name,
                       void (*drop)(int dirfd, const char *name)) {
  int fd = openat(dirfd, entry, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0)
    return 0;
  struct stat st;
  int removed = 0;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid())
    goto out; /* not a lock file of ours: left alone, as claim refuses it */
  /* The sweep byte first: a creator that fails on the claim byte then knows to start over. */
  if (lock_take(fd, MEMPORT__LOCK_SWEEP) != 0 || lock_take(fd, MEMPORT__LOCK_CLAIM) != 0)
    goto out; /* another sweeper, or a live (or starting) owner */
  if (!names_file(dirfd, entry, &st))
    goto out; /* its owner removed it meanwhile, and maybe someone made a new one */
  /* Nobody else can own the name now: it is ours to clear, transport first, as an owner does. */
  if (drop != NULL)
    drop(dirfd, name);
  if (unlinkat(dirfd, entry, 0) == 0)
    removed = 1;
out:
  close(fd); /* both locks go with it */
  return removed;
}

int memport__registry_sweep(int dirfd, size_t max_entries, void (*drop)(int dirfd, const char *name)) {
  DIR *dir;
  int rc = open_listing(dirfd, &dir);
  if (rc < 0)
    return rc;
  const size_t sl = sizeof LOCK_SUFFIX - 1;
  size_t seen = 0, looked = 0;
  int removed = 0;
  struct dirent *e;
  /* Bounded: at most max_entries lock files looked at, and as many other entries again (their
   * sockets) plus a few, so that a huge directory cannot stall the caller. */
  while ((max_entries == 0 || (seen < max_entries && looked < 2 * max_entries + 8)) && (e = readdir(dir)) != NULL) {
    looked++;
    size_t len = strlen(e->d_name);
    if (len <= sl || len - sl > MEMPORT_NAME_MAX || strcmp(e->d_name + len - sl, LOCK_SUFFIX) != 0)
      continue;
    char name[MEMPORT_NAME_MAX + 1];
    memcpy(name, e->d_name, len - sl);
    name[len - sl] = '\0';
    if (memport__name_check(name) != 0)
      continue;
    seen++;
    if (removed < INT_MAX)
      removed += sweep_entry(dirfd, e->d_name, name, drop);
  }
  closedir(dir);
  return removed;
}
