/* SPDX-License-Identifier: MIT */
/* bridge-camera.c: a camera publishes 1080p frames and exports its own topic from its own poll loop; an import bridge (another "host") republishes them and a viewer checks each one. Loopback only. */
#include <memport_bridge.h>

#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FRAME (1920 * 1080 * 3)
#define FRAMES 60

static const char *g_cam, *g_view; /* topic names on "host A" and "host B" */
static char *g_endpoint;           /* a MAP_SHARED page: where the camera's exporter listens */

static void die(const char *what, int err) {
  fprintf(stderr, "bridge-camera: %s: %s\n", what, memport_strerror(err));
  exit(1);
}

/* Frame k: its number, then bytes that depend on it. */
static void paint(unsigned char *p, uint32_t k) {
  memcpy(p, &k, sizeof k);
  for (size_t i = sizeof k; i < FRAME; i += 4096)
    p[i] = (unsigned char)(k * 31 + i / 4096);
  p[FRAME - 1] = (unsigned char)k;
}

static int frame_ok(const unsigned char *p, size_t len, uint32_t k) {
  uint32_t got;
  memcpy(&got, p, sizeof got);
  if (len != FRAME || got != k || p[FRAME - 1] != (unsigned char)k)
    return 0;
  for (size_t i = sizeof k; i < FRAME; i += 4096)
    if (p[i] != (unsigned char)(k * 31 + i / 4096))
      return 0;
  return 1;
}

/* Host B, part 1: the import bridge, until told to stop. */
static memport_bridge_t *g_import;
static void stop_import(int sig) {
  (void)sig;
  memport_bridge_stop(g_import);
}

static int run_import(void) {
  /* ZeroMQ allocates each received frame with malloc: keep that memory for the next frame rather
   * than give it back to the kernel after each one (memport_bridge_create(3), NOTES). */
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 32 << 20);
  while (g_endpoint[0] == '\0')
    usleep(1000);
  memport_bridge_opts_t o;
  memport_bridge_opts_init(&o);
  o.direction = MEMPORT_BRIDGE_IMPORT;
  o.kind = MEMPORT_BRIDGE_TOPIC;
  o.name = g_view;
  o.endpoint = g_endpoint;
  o.topic.buffer_size = FRAME; /* the topic exists at once: the viewer may join before frame 0 */
  int err = memport_bridge_create(&g_import, &o);
  if (err != 0)
    die("import bridge", err);
  signal(SIGTERM, stop_import);
  err = memport_bridge_run(g_import, MEMPORT_FOREVER);
  memport_bridge_stats_t st = {.struct_size = sizeof st};
  memport_bridge_stats(g_import, &st);
  printf("import bridge: %llu frames delivered, lost %llu, malformed %llu\n", (unsigned long long)st.messages,
         (unsigned long long)st.lost, (unsigned long long)st.malformed);
  memport_bridge_close(g_import);
  return err == 0 && st.lost == 0 && st.malformed == 0 ? 0 : 1;
}

/* Host B, part 2: an unchanged subscriber of the imported topic. */
static int run_viewer(void) {
  memport_sub_t *sub;
  int err;
  for (int i = 0; (err = memport_sub_connect(&sub, g_view, NULL, 100000000)) != 0; i++)
    if (i > 300)
      die("viewer: connect", err);
  for (uint32_t k = 0; k < FRAMES; k++) {
    memport_buf_t b;
    if ((err = memport_sub_recv(sub, &b, 30000000000LL)) != 0)
      die("viewer: recv", err);
    if (!frame_ok(b.data, b.len, k)) {
      fprintf(stderr, "viewer: frame %u is wrong\n", k);
      return 1;
    }
    memport_sub_release(sub, &b);
  }
  printf("viewer: %d frames of %d bytes, each in order and intact\n", FRAMES, FRAME);
  memport_sub_close(sub);
  return 0;
}

int main(void) {
  char cam[64], view[64];
  snprintf(cam, sizeof cam, "example.cam.%d", (int)getpid());
  snprintf(view, sizeof view, "example.view.%d", (int)getpid());
  g_cam = cam;
  g_view = view;
  g_endpoint = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (g_endpoint == MAP_FAILED)
    return 1;
  g_endpoint[0] = '\0';
  pid_t importer = fork();
  if (importer == 0) {
    int rc = run_import();
    fflush(stdout);
    _exit(rc);
  }
  pid_t viewer = fork();
  if (viewer == 0) {
    int rc = run_viewer();
    fflush(stdout);
    _exit(rc);
  }

  /* Host A: the camera publishes, and exports its own topic from the same loop. */
  memport_topic_opts_t to;
  memport_topic_opts_init(&to);
  to.buffer_size = FRAME;
  to.buffers = 40; /* more than the exporter lends to ZeroMQ (hwm + 8) */
  memport_pub_t *pub;
  int err = memport_pub_create(&pub, cam, &to);
  if (err != 0)
    die("camera topic", err);
  memport_bridge_opts_t o;
  memport_bridge_opts_init(&o);
  o.direction = MEMPORT_BRIDGE_EXPORT;
  o.kind = MEMPORT_BRIDGE_TOPIC;
  o.name = cam;
  o.endpoint = "tcp://127.0.0.1:*"; /* any free port (on a real network: every interface, port 7000, and CURVE keys) */
  memport_bridge_t *exp;
  if ((err = memport_bridge_create(&exp, &o)) != 0)
    die("export bridge", err);
  char ep[256];
  memport_bridge_endpoint(exp, ep, sizeof ep);
  memcpy(g_endpoint, ep, strlen(ep) + 1);
  printf("camera: exporting %s on %s\n", cam, ep);

  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  uint32_t sent = 0;
  memport_bridge_stats_t st = {.struct_size = sizeof st};
  while (sent < FRAMES || st.messages < FRAMES) {
    struct pollfd fds[MEMPORT_BRIDGE_MAX_FDS + 1];
    int64_t wait_ns;
    int n = memport_bridge_pollfds(exp, fds, MEMPORT_BRIDGE_MAX_FDS, &wait_ns);
    if (n < 0)
      die("pollfds", n);
    memport_os_handle_t h;
    memport_pub_pollable(pub, &h); /* joins (the exporter's), releases */
    fds[n] = (struct pollfd){.fd = (int)h, .events = POLLIN};
    int ms = wait_ns < 0 || wait_ns > 5000000 ? 5 : (int)((wait_ns + 999999) / 1000000);
    poll(fds, (nfds_t)n + 1, ms);
    if ((err = memport_bridge_process(exp)) != 0)
      die("export", err);
    memport_pub_process(pub);
    memport_bridge_stats(exp, &st);
    if (sent == FRAMES || !st.connected || memport_pub_subscribers(pub) < 1)
      continue;
    memport_buf_t b;
    if (memport_pub_loan(pub, FRAME, &b, MEMPORT_NOWAIT) != 0)
      continue; /* every buffer is out: the loop waits for releases */
    paint(b.data, sent);
    if (memport_pub_publish(pub, &b, MEMPORT_NOWAIT) != 0) {
      memport_pub_discard(pub, &b);
      continue;
    }
    sent++;
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  printf("camera: %u frames exported in %.2f s (%.0f MB/s), none copied on this side\n", sent, s,
         (double)sent * FRAME / s / 1e6);
  int vs, is;
  waitpid(viewer, &vs, 0);
  kill(importer, SIGTERM);
  waitpid(importer, &is, 0);
  memport_bridge_close(exp);
  memport_pub_close(pub);
  int ok = WIFEXITED(vs) && WEXITSTATUS(vs) == 0 && WIFEXITED(is) && WEXITSTATUS(is) == 0;
  printf("%s\n", ok ? "bridge-camera: OK" : "bridge-camera: FAILED");
  return ok ? 0 : 1;
}
