/* SPDX-License-Identifier: MIT */
/* memport-bridge.c: the bridge tool: export or import a memport topic or channel over ZeroMQ, or make a CURVE key pair (memport-bridge(1)). */
#include <memport_bridge.h>

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

static memport_bridge_t *g_bridge;
static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
  (void)sig;
  g_stop = 1;
  memport_bridge_stop(g_bridge);
}

static void usage(FILE *f) {
  fprintf(f, "usage: memport-bridge export|import topic|channel NAME ENDPOINT [options]\n"
             "       memport-bridge keygen FILE\n"
             "options: --hwm N  --depth N  --overflow block|drop-oldest  --history K  --buffers N\n"
             "         --buffer-size BYTES  --max-subscribers N  --curve-keys FILE  --curve-allow FILE\n"
             "         --curve-server KEY  --stats SECONDS  --quiet  -h|--help\n"
             "(memport-bridge(1))\n");
}

static int bad(const char *what, const char *arg) {
  fprintf(stderr, "memport-bridge: %s: %s\n", what, arg);
  usage(stderr);
  return 2;
}

static int keygen(const char *path) {
  char pub[MEMPORT_BRIDGE_KEY_LEN + 1], sec[MEMPORT_BRIDGE_KEY_LEN + 1];
  if (!zmq_has("curve") || zmq_curve_keypair(pub, sec) != 0) {
    fprintf(stderr, "memport-bridge: this libzmq has no CURVE\n");
    return 1;
  }
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    fprintf(stderr, "memport-bridge: %s: %s\n", path, strerror(errno));
    return 1;
  }
  char text[128];
  int n = snprintf(text, sizeof text, "public %s\nsecret %s\n", pub, sec);
  if (write(fd, text, (size_t)n) != n || close(fd) != 0) {
    fprintf(stderr, "memport-bridge: %s: %s\n", path, strerror(errno));
    return 1;
  }
  printf("%s\n", pub);
  return 0;
}

/* A key file: `public <key>` and `secret <key>` lines. */
static int read_keys(const char *path, char pub[41], char sec[41]) {
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    fprintf(stderr, "memport-bridge: %s: %s\n", path, strerror(errno));
    return -1;
  }
  char line[256], k[256];
  pub[0] = sec[0] = '\0';
  while (fgets(line, sizeof line, f) != NULL) {
    if (sscanf(line, "public %255s", k) == 1 && strlen(k) == MEMPORT_BRIDGE_KEY_LEN)
      memcpy(pub, k, 41);
    else if (sscanf(line, "secret %255s", k) == 1 && strlen(k) == MEMPORT_BRIDGE_KEY_LEN)
      memcpy(sec, k, 41);
  }
  fclose(f);
  if (pub[0] == '\0' || sec[0] == '\0') {
    fprintf(stderr, "memport-bridge: %s: not a key pair (memport-bridge keygen)\n", path);
    return -1;
  }
  return 0;
}

static void free_allowed(char **v) {
  if (v == NULL)
    return;
  for (char **k = v; *k != NULL; k++)
    free(*k);
  free(v);
}

/* Allowed public keys, one per line (a line starting with '#' is a comment): a NULL-terminated array. */
static char **read_allowed(const char *path) {
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    fprintf(stderr, "memport-bridge: %s: %s\n", path, strerror(errno));
    return NULL;
  }
  char **v = calloc(1, sizeof *v);
  size_t n = 0;
  char line[256], k[256];
  while (v != NULL && fgets(line, sizeof line, f) != NULL) {
    /* A comment is a line whose first word starts with '#' (Z85 keys may contain '#'). */
    if (sscanf(line, "%255s", k) != 1 || k[0] == '#')
      continue;
    if (strlen(k) != MEMPORT_BRIDGE_KEY_LEN) {
      fprintf(stderr, "memport-bridge: %s: not a public key: %s\n", path, k);
      fclose(f);
      free_allowed(v);
      return NULL;
    }
    char **nv = realloc(v, (n + 2) * sizeof *v);
    char *key = nv != NULL ? strdup(k) : NULL;
    if (nv != NULL)
      v = nv;
    if (key == NULL) {
      fprintf(stderr, "memport-bridge: out of memory\n");
      fclose(f);
      free_allowed(v);
      return NULL;
    }
    v[n++] = key;
    v[n] = NULL;
  }
  fclose(f);
  if (v == NULL || n == 0) {
    fprintf(stderr, "memport-bridge: %s: no public key in it\n", path);
    free_allowed(v);
    return NULL;
  }
  return v;
}

static void print_stats(memport_bridge_t *b) {
  memport_bridge_stats_t st;
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  if (memport_bridge_stats(b, &st) != 0)
    return;
  fprintf(stderr,
          "messages=%llu bytes=%llu lost=%llu skipped=%llu source_missed=%llu dropped=%llu malformed=%llu "
          "restarts=%llu in_flight=%u connected=%u\n",
          (unsigned long long)st.messages, (unsigned long long)st.bytes, (unsigned long long)st.lost,
          (unsigned long long)st.skipped, (unsigned long long)st.source_missed, (unsigned long long)st.dropped,
          (unsigned long long)st.malformed, (unsigned long long)st.restarts, st.in_flight, st.connected);
}

static int num(const char *s, unsigned long long max, unsigned long long *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v > max || s[0] == '-')
    return -1;
  *out = v;
  return 0;
}

/* libzmq 4.3 allocates every received message larger than 8 KiB with malloc on its I/O thread, and
 * the import frees it once copied. glibc's default then gives the freed top of that thread's arena
 * back to the kernel again and again (madvise(MADV_DONTNEED) inside free), and the next message's
 * pages are faulted in and zeroed anew: at 64 KiB that halved the import's throughput. Keep up to
 * 32 MiB of freed memory per arena, and serve messages up to 32 MiB from it (glibc's own dynamic
 * limit; setting the trim threshold turns the dynamic adjustment off). memport-bench's bridge rows
 * run with the same settings, for both methods. */
static void malloc_setup(void) {
#if defined(M_TRIM_THRESHOLD) && defined(M_MMAP_THRESHOLD)
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 32 << 20);
#endif
}

int main(int argc, char **argv) {
  malloc_setup();
  if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
    usage(stdout);
    return 0;
  }
  if (argc == 3 && strcmp(argv[1], "keygen") == 0)
    return keygen(argv[2]);
  if (argc < 5)
    return bad("too few arguments", argc >= 2 ? argv[argc - 1] : "");
  memport_bridge_opts_t o;
  memport_bridge_opts_init(&o);
  if (strcmp(argv[1], "export") == 0)
    o.direction = MEMPORT_BRIDGE_EXPORT;
  else if (strcmp(argv[1], "import") == 0)
    o.direction = MEMPORT_BRIDGE_IMPORT;
  else
    return bad("not export or import", argv[1]);
  if (strcmp(argv[2], "topic") == 0)
    o.kind = MEMPORT_BRIDGE_TOPIC;
  else if (strcmp(argv[2], "channel") == 0)
    o.kind = MEMPORT_BRIDGE_CHANNEL;
  else
    return bad("not topic or channel", argv[2]);
  o.name = argv[3];
  o.endpoint = argv[4];
  char pub[41], sec[41];
  const char *keys = NULL, *allow = NULL;
  unsigned long long stats_every = 0, v;
  bool quiet = false;
  for (int i = 5; i < argc; i++) {
    const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--quiet") == 0) {
      quiet = true;
      continue;
    }
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      return 0;
    }
    if (val == NULL)
      return bad("missing value for", a);
    i++;
    if (strcmp(a, "--hwm") == 0 && num(val, 1000000, &v) == 0)
      o.hwm = (int)v;
    else if (strcmp(a, "--depth") == 0 && num(val, UINT32_MAX, &v) == 0)
      o.topic.depth = (unsigned)v;
    else if (strcmp(a, "--overflow") == 0 && strcmp(val, "block") == 0)
      o.topic.overflow = MEMPORT_TOPIC_BLOCK;
    else if (strcmp(a, "--overflow") == 0 && strcmp(val, "drop-oldest") == 0)
      o.topic.overflow = MEMPORT_TOPIC_DROP_OLDEST;
    else if (strcmp(a, "--history") == 0 && num(val, UINT32_MAX, &v) == 0)
      o.topic.history = (unsigned)v;
    else if (strcmp(a, "--buffers") == 0 && num(val, UINT32_MAX, &v) == 0)
      o.topic.buffers = (unsigned)v;
    else if (strcmp(a, "--buffer-size") == 0 && num(val, UINT32_MAX, &v) == 0 && v > 0)
      o.topic.buffer_size = (size_t)v;
    else if (strcmp(a, "--max-subscribers") == 0 && num(val, UINT32_MAX, &v) == 0)
      o.topic.max_subscribers = (unsigned)v;
    else if (strcmp(a, "--curve-keys") == 0)
      keys = val;
    else if (strcmp(a, "--curve-allow") == 0)
      allow = val;
    else if (strcmp(a, "--curve-server") == 0)
      o.curve_server = val;
    else if (strcmp(a, "--stats") == 0 && num(val, 86400, &v) == 0 && v > 0)
      stats_every = v;
    else
      return bad("bad option or value", a);
  }
  if (keys != NULL) {
    if (read_keys(keys, pub, sec) < 0)
      return 1;
    o.curve_public = pub;
    o.curve_secret = sec;
  }
  char **allowed = NULL;
  if (allow != NULL) {
    if ((allowed = read_allowed(allow)) == NULL)
      return 1;
    o.curve_allowed = (const char *const *)allowed;
  }
  const char *field = NULL;
  if (memport_bridge_opts_check(&o, &field) < 0) {
    fprintf(stderr, "memport-bridge: invalid option: %s%s\n", field,
            strncmp(field, "curve", 5) == 0 ? " (export: --curve-keys and --curve-allow; import: --curve-keys and "
                                              "--curve-server)"
                                            : "");
    free_allowed(allowed);
    return 2;
  }
  bool curve = o.curve_secret != NULL;
  if (!curve && !quiet && strncmp(o.endpoint, "tcp://", 6) == 0)
    fprintf(stderr,
            "memport-bridge: warning: no CURVE keys on %s: anyone who can reach this port can %s the stream "
            "(see memport-bridge(1), keygen)\n",
            o.endpoint, o.direction == MEMPORT_BRIDGE_EXPORT ? "read" : "feed");
  int rc = memport_bridge_create(&g_bridge, &o);
  if (rc < 0) {
    fprintf(stderr, "memport-bridge: %s %s %s on %s: %s%s%s%s\n", argv[1], argv[2], o.name, o.endpoint,
            memport_strerror(rc), rc == MEMPORT_EPROTO ? " (ZeroMQ: " : "",
            rc == MEMPORT_EPROTO ? zmq_strerror(zmq_errno()) : "", rc == MEMPORT_EPROTO ? ")" : "");
    free_allowed(allowed);
    return 1;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  while (!g_stop) {
    rc = memport_bridge_run(g_bridge, stats_every != 0 ? (int64_t)stats_every * 1000000000LL : MEMPORT_FOREVER);
    if (rc < 0)
      break;
    if (!g_stop && stats_every != 0)
      print_stats(g_bridge);
  }
  if (rc < 0)
    fprintf(stderr, "memport-bridge: %s\n", memport_strerror(rc));
  if (!quiet)
    print_stats(g_bridge);
  memport_bridge_close(g_bridge);
  free_allowed(allowed);
  return rc < 0 ? 1 : 0;
}
