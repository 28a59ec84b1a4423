/* SPDX-License-Identifier: MIT */
/* fuzz_name.c: libFuzzer harness: name syntax (memport__name_check) and the portable registry's record parser and formatter (lib/registry.c, used by both backends), against reference implementations and through a private name directory full of hostile entries. */
#include "fuzz.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

/*
 * The first input byte picks one of four modes:
 *   - a string for memport__name_check, compared with a reference implementation of the rule
 *     (1..MEMPORT_NAME_MAX bytes of [A-Za-z0-9._-], not starting with '.' or '-');
 *   - bytes for memport__registry_parse (the lock-file record of lib/registry.c, the same on
 *     Linux and Darwin), compared with a reference parser of
 *     "memport-name 1 kind=K pid=P uid=U gid=G\n";
 *   - a kind and credentials for memport__registry_format: what it writes must parse back to the
 *     same values (and be refused for a kind that is none of service, region, topic), in
 *     buffers of every size;
 *   - a private name directory (XDG_RUNTIME_DIR points into a temporary directory made at start
 *     and removed at exit) holding up to three lock files with names and contents from the input,
 *     some locked by this process as a live owner or a creator still starting would:
 *     memport_name_foreach must list exactly the live, well-formed ones, and memport_port_connect
 *     (no wait) must not crash or hang.
 */

static struct fz_leaks leaks;
static char tmpdir[PATH_MAX];
static char namedir[PATH_MAX];
static int dirfd_ = -1;

static void cleanup(void) {
  if (dirfd_ >= 0)
    close(dirfd_);
  if (namedir[0] != '\0')
    rmdir(namedir);
  if (tmpdir[0] != '\0')
    rmdir(tmpdir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  const char *base = getenv("TMPDIR");
  snprintf(tmpdir, sizeof tmpdir, "%s/memport-fuzz-name-XXXXXX", base != NULL && base[0] == '/' ? base : "/tmp");
  if (mkdtemp(tmpdir) == NULL) {
    perror("mkdtemp");
    exit(1);
  }
  snprintf(namedir, sizeof namedir, "%s/memport", tmpdir);
  if (mkdir(namedir, 0700) != 0 || chmod(namedir, 0700) != 0) {
    perror("mkdir");
    exit(1);
  }
  dirfd_ = open(namedir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirfd_ < 0) {
    perror("open");
    exit(1);
  }
  atexit(cleanup);
  setenv("XDG_RUNTIME_DIR", tmpdir, 1);
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* References.                                                                                 */

static int ref_name_check(const char *s) {
  if (s[0] == '\0' || s[0] == '.' || s[0] == '-')
    return MEMPORT_EINVAL;
  for (size_t i = 0; s[i] != '\0'; i++) {
    if (i >= MEMPORT_NAME_MAX)
      return MEMPORT_ENAMETOOLONG;
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
          c == '-'))
      return MEMPORT_EINVAL;
  }
  return 0;
}

/* "key=" then 1..20 decimal digits (leading zeros allowed) whose value is at most max. */
static int ref_field(const char *t, size_t n, size_t *at, const char *key, unsigned long long max,
                     unsigned long long *out) {
  size_t kl = strlen(key);
  if (n - *at < kl || memcmp(t + *at, key, kl) != 0)
    return 0;
  size_t i = *at + kl, digits = 0;
  unsigned long long v = 0;
  int over = 0;
  while (i < n && t[i] >= '0' && t[i] <= '9') {
    unsigned d = (unsigned)(t[i] - '0');
    if (v > (ULLONG_MAX - d) / 10)
      over = 1;
    else
      v = v * 10 + d;
    i++;
    digits++;
  }
  if (digits == 0 || digits > 20 || over || v > max)
    return 0;
  *out = v;
  *at = i;
  return 1;
}

static int ref_record(const char *t, size_t n, int *kind, memport_cred_t *owner, uint32_t *subs) {
  static const char magic[] = "memport-name 1 ";
  if (n == 0 || n >= 128 || t[n - 1] != '\n' || memchr(t, '\0', n) != NULL)
    return 0;
  if (n < sizeof magic - 1 || memcmp(t, magic, sizeof magic - 1) != 0)
    return 0;
  size_t at = sizeof magic - 1;
  unsigned long long k, pid, uid, gid, sc = 0;
  if (!ref_field(t, n, &at, "kind=", 3, &k) || at >= n || t[at++] != ' ' ||
      !ref_field(t, n, &at, "pid=", INT_MAX, &pid) || at >= n || t[at++] != ' ' ||
      !ref_field(t, n, &at, "uid=", UINT32_MAX, &uid) || at >= n || t[at++] != ' ' ||
      !ref_field(t, n, &at, "gid=", UINT32_MAX, &gid))
    return 0;
  if (k == MEMPORT_NAME_TOPIC && (at >= n || t[at++] != ' ' || !ref_field(t, n, &at, "subs=", UINT32_MAX, &sc)))
    return 0; /* a topic's record, and only a topic's, has its subscriber count */
  if (at >= n || t[at++] != '\n' || at != n)
    return 0;
  if ((k != MEMPORT_NAME_SERVICE && k != MEMPORT_NAME_REGION && k != MEMPORT_NAME_TOPIC) || pid == 0)
    return 0;
  *kind = (int)k;
  *subs = (uint32_t)sc;
  owner->pid = (pid_t)pid;
  owner->uid = (uid_t)uid;
  owner->gid = (gid_t)gid;
  return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* The directory.                                                                              */

struct entry {
  char name[80];
  char rec[160];
  size_t reclen;
  int fd; /* open and OFD-locked while "live" */
  int live, listed;
};

static int listed_cb(const memport_name_info_t *info, void *arg) {
  struct entry *e = arg;
  if (memport__name_check(info->name) != 0)
    abort();
  for (int i = 0; i < 3; i++) {
    if (strcmp(e[i].name, info->name) != 0)
      continue;
    int kind;
    memport_cred_t owner;
    uint32_t subs;
    if (!e[i].live || !ref_record(e[i].rec, e[i].reclen, &kind, &owner, &subs))
      abort(); /* listed: must be live and well formed */
    if (info->kind != kind || info->owner.pid != owner.pid || info->owner.uid != owner.uid ||
        info->owner.gid != owner.gid || info->subscribers != subs)
      abort();
    e[i].listed++;
    return 0;
  }
  abort(); /* a name we did not make */
}

static void run_dir(struct fz *f) {
  struct entry e[3];
  memset(e, 0, sizeof e);
  unsigned n = 1u + fz_u8(f) % 3u;
  for (unsigned i = 0; i < n; i++) {
    e[i].fd = -1;
    uint8_t nl = fz_u8(f) % 72u;
    fz_bytes(f, e[i].name, nl);
    e[i].name[nl] = '\0';
    for (size_t j = 0; j < nl; j++)
      if (e[i].name[j] == '/' || e[i].name[j] == '\0')
        e[i].name[j] = '_';
    if (fz_u8(f) & 1u) { /* a well-formed record with fields from the input */
      int k = fz_u8(f) % 5u;
      unsigned long pid = (unsigned long)fz_num(f, (uint64_t)getpid());
      unsigned long uid = fz_u32(f);
      unsigned long gid = fz_u32(f);
      uint8_t how = fz_u8(f); /* a count (as topics have) or not, whatever the kind */
      if (how & 1u)
        snprintf(e[i].rec, sizeof e[i].rec, "memport-name 1 kind=%d pid=%lu uid=%lu gid=%lu subs=%lu\n", k, pid, uid,
                 gid, (unsigned long)fz_u32(f));
      else
        snprintf(e[i].rec, sizeof e[i].rec, "memport-name 1 kind=%d pid=%lu uid=%lu gid=%lu\n", k, pid, uid, gid);
      e[i].reclen = strlen(e[i].rec);
    } else {
      e[i].reclen = fz_u8(f) % sizeof e[i].rec;
      fz_bytes(f, e[i].rec, e[i].reclen);
    }
    char entry[96];
    snprintf(entry, sizeof entry, "%s.lock", e[i].name);
    for (unsigned j = 0; j < i; j++)
      if (strcmp(e[j].name, e[i].name) == 0)
        e[i].name[0] = '\0'; /* a duplicate: skipped */
    if (e[i].name[0] == '\0')
      continue;
    int fd = openat(dirfd_, entry, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
      e[i].name[0] = '\0';
      continue;
    }
    if (e[i].reclen != 0 && write(fd, e[i].rec, e[i].reclen) != (ssize_t)e[i].reclen)
      abort();
    e[i].fd = fd;
    unsigned lock = fz_u8(f) & 3u;
    if (lock != 0) {
      /* 1: a creator that has claimed the name (byte 0 only) but not yet written its record: the
       * record there is a dead owner's, never listed. 2, 3: a live owner (the whole file, which
       * covers the live byte, as an owner of an older version holds it). */
      struct flock fl;
      memset(&fl, 0, sizeof fl);
      fl.l_type = F_WRLCK;
      fl.l_whence = SEEK_SET;
      fl.l_len = lock == 1 ? 1 : 0;
      if (fcntl(fd, F_OFD_SETLK, &fl) != 0)
        abort();
      e[i].live = lock != 1;
    }
  }

  if (memport_name_foreach(listed_cb, e) != 0)
    abort();
  for (unsigned i = 0; i < n; i++) {
    int kind;
    memport_cred_t owner;
    uint32_t subs;
    if (e[i].name[0] == '\0')
      continue;
    int expect =
        e[i].live && memport__name_check(e[i].name) == 0 && ref_record(e[i].rec, e[i].reclen, &kind, &owner, &subs);
    if (e[i].listed != expect)
      abort(); /* every live, well-formed name is listed, once */
  }
  if (fz_u8(f) & 1u) {
    memport_port_t *port = NULL;
    const char *name = e[0].name[0] != '\0' ? e[0].name : "x";
    if (memport__name_check(name) == 0) {
      int rc = memport_port_connect(&port, name, MEMPORT_NOWAIT);
      if (rc == 0)
        abort(); /* nobody listens here */
    }
  }
  for (unsigned i = 0; i < n; i++) {
    if (e[i].name[0] == '\0')
      continue;
    char entry[96];
    snprintf(entry, sizeof entry, "%s.lock", e[i].name);
    unlinkat(dirfd_, entry, 0);
    if (e[i].fd >= 0)
      close(e[i].fd);
  }
}

/* ------------------------------------------------------------------------------------------ */
/* The formatter.                                                                              */

static void run_format(struct fz *f) {
  int kind = (int)(int8_t)fz_u8(f);
  memport_cred_t who;
  who.pid = (pid_t)(int32_t)fz_num(f, (uint64_t)getpid());
  who.uid = (uid_t)fz_u32(f);
  who.gid = (gid_t)fz_u32(f);
  size_t cap = fz_u8(f) % (MEMPORT__RECORD_MAX + 8u);
  /* Exactly cap bytes of its own (ASan sees any overrun). */
  char *buf = malloc(cap != 0 ? cap : 1);
  if (buf == NULL)
    abort();
  uint32_t subs = fz_u32(f);
  int n = memport__registry_format(buf, cap, kind, &who, subs);
  if (kind != MEMPORT_NAME_SERVICE && kind != MEMPORT_NAME_REGION && kind != MEMPORT_NAME_TOPIC) {
    if (n != MEMPORT_EINVAL)
      abort();
  } else if (n < 0) {
    if (n != MEMPORT_EOVERFLOW)
      abort();
    /* refused only when the line does not fit */
    char big[MEMPORT__RECORD_MAX];
    int need = memport__registry_format(big, sizeof big, kind, &who, subs);
    if (need > 0 && (size_t)need < cap)
      abort();
  } else {
    if ((size_t)n >= cap || buf[n] != '\0')
      abort();
    int k2 = -1;
    memport_cred_t o2;
    memset(&o2, 0, sizeof o2);
    uint32_t s2 = 0, s3 = 0;
    bool got = memport__registry_parse(buf, (size_t)n, &k2, &o2, &s2);
    int k3 = -1;
    memport_cred_t o3;
    int want = ref_record(buf, (size_t)n, &k3, &o3, &s3);
    if (got != (want != 0))
      abort(); /* the parser and the reference agree on what the formatter wrote */
    /* A positive pid always gives a record that reads back as written; pid <= 0 never parses. */
    if ((who.pid > 0) != got)
      abort();
    if (got && (k2 != kind || o2.pid != who.pid || o2.uid != who.uid || o2.gid != who.gid ||
                s2 != (kind == MEMPORT_NAME_TOPIC ? subs : 0)))
      abort();
  }
  free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct fz f = {data, size};
  fz_leaks_begin(&leaks);
  uint8_t mode = fz_u8(&f);
  switch (mode % 4u) {
  case 0: {
    char s[160];
    size_t n = f.n < sizeof s - 1 ? f.n : sizeof s - 1;
    fz_bytes(&f, s, n);
    s[n] = '\0';
    if (memport__name_check(s) != ref_name_check(s))
      abort();
    break;
  }
  case 1: {
    /* Exactly the input's bytes, in a buffer of their own size (ASan sees any overread). */
    size_t n = f.n;
    char *t = malloc(n != 0 ? n : 1);
    if (t == NULL)
      abort();
    fz_bytes(&f, t, n);
    int k1 = -1, k2 = -1;
    memport_cred_t o1, o2;
    memset(&o1, 0, sizeof o1);
    memset(&o2, 0, sizeof o2);
    uint32_t s1 = 0, s2 = 0;
    bool got = memport__registry_parse(t, n, &k1, &o1, &s1);
    int want = ref_record(t, n, &k2, &o2, &s2);
    if (got != (want != 0) ||
        (got && (k1 != k2 || o1.pid != o2.pid || o1.uid != o2.uid || o1.gid != o2.gid || s1 != s2)))
      abort();
    free(t);
    break;
  }
  case 2:
    run_format(&f);
    break;
  default:
    run_dir(&f);
    break;
  }
  fz_leaks_end(&leaks, 1);
  return 0;
}
