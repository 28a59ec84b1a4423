/* SPDX-License-Identifier: MIT */
/* chan-server.c: a channel server in one poll() loop: non-blocking accept, per-client channels, a silent client that stalls nobody. */

/*
 * The server serves the name "chan-server-PID". It forks one client that connects and then says
 * nothing, and then four clients that each send a word and wait for it back in capitals.
 *
 * The server never waits for any one client. Its poll() set holds:
 *  - the service's handle (memport_service_pollable): a connection waits. The server takes it
 *    with memport_chan_accept_start(MEMPORT_NOWAIT), which sends the server's half of the
 *    handshake and returns at once with a *pending connection*;
 *  - each pending connection's handle (memport_chan_pending_pollable): the client's half of the
 *    handshake arrived (or the client left). memport_chan_pending_finish(MEMPORT_NOWAIT) then
 *    gives the channel; MEMPORT_EAGAIN would just mean "not yet", and nothing is dropped;
 *  - each channel's handle (memport_chan_pollable): a message waits.
 * The silent client stays pending the whole time while the four others are served. The library
 * keeps no timer for it: when to give up on a client is the server's decision (here, once the
 * others are done, it closes the pending connection).
 *
 * memport_chan_peer tells the server who each client is (pid, uid, gid as the kernel saw them).
 *
 * Darwin: the handles are Mach receive rights, which poll() cannot watch; use a kqueue with
 * EVFILT_MACHPORT or a dispatch source (see examples/poll-port.c). This program builds there but
 * says so and exits instead of running its poll() loop.
 */

#include <ctype.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memport.h>

#define CLIENTS 4
#define SEC 1000000000LL

static char name[MEMPORT_NAME_MAX + 1];
static const char *const words[CLIENTS] = {"alpha", "bravo", "charlie", "delta"};

static int silent_client(void) {
  memport_port_t *port;
  if (memport_port_connect(&port, name, 10 * SEC) != 0)
    return 1;
  sleep(10); /* connected, and never says a word (the server kills us when it is done) */
  memport_port_close(port);
  return 0;
}

static int client(int i) {
  memport_chan_t *ch;
  int err = memport_chan_connect(&ch, name, NULL, 10 * SEC);
  if (err != 0) {
    fprintf(stderr, "client %d: connect: %s\n", i, memport_strerror(err));
    return 1;
  }
  char reply[32];
  size_t len = 0;
  err = memport_chan_send(ch, words[i], strlen(words[i]), 0, 10 * SEC);
  if (err == 0)
    err = memport_chan_recv_copy(ch, reply, sizeof reply - 1, &len, 10 * SEC);
  memport_chan_close(ch);
  if (err != 0)
    return 1;
  reply[len] = '\0';
  printf("  client %d (pid %ld) got \"%s\"\n", i, (long)getpid(), reply);
  fflush(stdout); /* we leave with _exit */
  return 0;
}

static pid_t spawn(int (*fn)(int), int arg) {
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0)
    _exit(fn(arg));
  return pid;
}
static int silent_fn(int unused) {
  (void)unused;
  return silent_client();
}

/* The pollable handle as a poll() descriptor (Linux); Darwin has none (see the top). */
static int as_fd(memport_os_handle_t h) {
#if defined(__APPLE__)
  (void)h;
  return -1;
#else
  return h;
#endif
}

int main(void) {
#if defined(__APPLE__)
  printf("chan-server: Darwin handles are Mach ports, watched with kqueue, not poll(); skipped.\n");
  return 0;
#endif
  snprintf(name, sizeof name, "chan-server-%ld", (long)getpid());
  memport_service_t *svc;
  int err = memport_service_create(&svc, name, 0);
  if (err != 0) {
    fprintf(stderr, "service: %s\n", memport_strerror(err));
    return 1;
  }
  memport_os_handle_t h;
  memport_service_pollable(svc, &h);
  int svc_fd = as_fd(h);

  /* The silent client first: it is pending before anyone else connects. */
  pid_t silent_pid = spawn(silent_fn, 0);
  memport_chan_pending_t *silent;
  err = memport_chan_accept_start(&silent, svc, NULL, 10 * SEC);
  if (err != 0) {
    fprintf(stderr, "accept_start: %s\n", memport_strerror(err));
    return 1;
  }
  printf("server: a client (pid %ld) connected and says nothing; serving the others meanwhile\n",
         (long)silent_pid);
  pid_t pids[CLIENTS];
  for (int i = 0; i < CLIENTS; i++)
    pids[i] = spawn(client, i);

  memport_chan_pending_t *pending[CLIENTS + 1] = {silent};
  int npending = 1;
  memport_chan_t *chans[CLIENTS];
  int nchans = 0, served = 0, ok = 1;
  while (served < CLIENTS && ok) {
    struct pollfd pfd[1 + CLIENTS + 1 + CLIENTS];
    int n = 0;
    pfd[n++] = (struct pollfd){.fd = svc_fd, .events = POLLIN};
    for (int i = 0; i < npending; i++) {
      memport_chan_pending_pollable(pending[i], &h);
      pfd[n++] = (struct pollfd){.fd = as_fd(h), .events = POLLIN};
    }
    for (int i = 0; i < nchans; i++) {
      int fd = -1; /* poll() skips it: that client was served */
      if (chans[i] != NULL && memport_chan_pollable(chans[i], &h) == 0)
        fd = as_fd(h);
      pfd[n++] = (struct pollfd){.fd = fd, .events = POLLIN};
    }
    if (poll(pfd, (nfds_t)n, 10000) <= 0) {
      fprintf(stderr, "server: nothing happened for 10 s\n");
      ok = 0;
      break;
    }
    int polled = npending;
    /* A connection waits: start its handshake, never waiting for the client. */
    if (pfd[0].revents != 0 && npending < CLIENTS + 1) {
      memport_chan_pending_t *p;
      if (memport_chan_accept_start(&p, svc, NULL, 0) == 0)
        pending[npending++] = p;
    }
    /* A pending connection is ready: finish it (MEMPORT_EAGAIN: not yet, it stays). */
    for (int i = 0; i < polled; i++) {
      if (pfd[1 + i].revents == 0)
        continue;
      memport_chan_t *ch;
      err = memport_chan_pending_finish(pending[i], &ch, 0);
      if (err == MEMPORT_EAGAIN)
        continue;
      memport_chan_pending_close(pending[i]);
      pending[i] = NULL;
      if (err == 0 && nchans < CLIENTS) {
        memport_cred_t who;
        memport_chan_peer(ch, &who);
        printf("server: channel to pid %ld (uid %ld) open\n", (long)who.pid, (long)who.uid);
        chans[nchans++] = ch;
      }
    }
    int w = 0;
    for (int i = 0; i < npending; i++)
      if (pending[i] != NULL)
        pending[w++] = pending[i];
    npending = w;
    /* Messages: answer each word in capitals. */
    for (int i = 0; i < nchans; i++) {
      char word[32];
      size_t len;
      if (chans[i] == NULL || memport_chan_recv_copy(chans[i], word, sizeof word, &len, 0) != 0)
        continue;
      for (size_t k = 0; k < len; k++)
        word[k] = (char)toupper((unsigned char)word[k]);
      memport_chan_send(chans[i], word, len, 0, SEC);
      memport_chan_close(chans[i]);
      chans[i] = NULL;
      served++;
    }
  }
  /* Done: the silent client is still pending, undropped. Giving up on it is our call. */
  memport_chan_t *none;
  int still = npending == 1 && pending[0] == silent &&
              memport_chan_pending_finish(silent, &none, 0) == MEMPORT_EAGAIN;
  printf("server: %d clients served; the silent one is %s\n", served, still ? "still pending: closed now" : "gone?");
  memport_chan_pending_close(silent);
  kill(silent_pid, SIGTERM);
  waitpid(silent_pid, NULL, 0);
  for (int i = 0; i < CLIENTS; i++) {
    int st;
    if (waitpid(pids[i], &st, 0) != pids[i] || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
      ok = 0;
  }
  for (int i = 0; i < nchans; i++)
    memport_chan_close(chans[i]);
  memport_service_close(svc);
  return ok && still && served == CLIENTS ? 0 : 1;
}
