/* SPDX-License-Identifier: MIT */
/* share-region.c: a server hands read-only access to a live region to the clients that know its token. */

/*
 * Run with no arguments, it is a server that
 *   1. creates a region, maps it read-write and writes a text into it;
 *   2. converts the region to read-only (memport_region_readonly): from then on nobody can map it
 *      writable, not even root, but the server's own writable mapping keeps working;
 *   3. serves a name (memport_service_create) and starts three client processes (fork + exec of
 *      this program with --client NAME). Each is given the authorization token through a pipe on
 *      its stdin, never on the command line (which every user can read in ps or /proc). Two get
 *      the right token; the third gets a wrong one, to show the check at work;
 *   4. for each connection: checks the token in the client's first message; if it is wrong, answers
 *      DENIED and hangs up; if it is right, attaches a read-only handle of the region to the
 *      answer. The client maps it (read-only; a writable map is refused) and reads the text; the
 *      server then changes the text through its own mapping and tells the client, which sees the
 *      new text in the same mapping: the memory is shared, not copied into messages.
 * It exits 0 if both good clients read both texts and the impostor was refused.
 *
 * The token only proves that a client was started by the server (the set-up of Chromium's Mach
 * IPC design: a child gets the channel name and a token on stdin); memport itself already lets
 * only processes of the same uid connect, and tells the server each peer's pid, uid and gid.
 *
 *   share-region                 server, with two clients and one impostor
 *   share-region --client NAME   a client: reads its token from stdin, connects to NAME
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memport.h>

#define SECOND (INT64_C(1000000000))
#define TOKEN_BYTES 16
#define TOKEN_CHARS (2 * TOKEN_BYTES)
#define REGION_SIZE (64 * 1024)
#define TEXT_MAX 200
#define GOOD_CLIENTS 2
#define EXIT_DENIED 3 /* a client's exit status when the server refused its token */

/* The start of the region: what the server writes and clients read. Clients treat it as hostile
 * memory: they copy it out once, then check it. */
struct board {
  uint32_t generation;
  char text[TEXT_MAX];
};

/* The messages of the handshake, as inline bytes. */
enum { MSG_HELLO = 1, MSG_WELCOME, MSG_DENIED, MSG_READ, MSG_UPDATED };
struct wire {
  char magic[8]; /* "MPSHARE1" */
  uint32_t kind;
  uint32_t generation;       /* WELCOME, READ, UPDATED: the text's generation */
  char token[TOKEN_CHARS];   /* HELLO: the authorization token, hex, not terminated */
};
static const char magic[8] = {'M', 'P', 'S', 'H', 'A', 'R', 'E', '1'};

static const char *prog = "share-region";

static int fail(const char *who, const char *what, int rc) {
  fprintf(stderr, "%s: %s: %s: %s\n", prog, who, what, memport_strerror(rc));
  return 1;
}

static int send_wire(memport_port_t *port, memport_msg_t *msg, uint32_t kind, uint32_t generation,
                     const char *token) {
  struct wire w;
  memset(&w, 0, sizeof w);
  memcpy(w.magic, magic, sizeof magic);
  w.kind = kind;
  w.generation = generation;
  if (token != NULL)
    memcpy(w.token, token, TOKEN_CHARS);
  int rc = memport_msg_set_bytes(msg, &w, sizeof w);
  return rc != 0 ? rc : memport_port_send(port, msg, 5 * SECOND);
}

/* Receive one handshake message and check its shape; the peer's bytes are copied out once. */
static int recv_wire(memport_port_t *port, memport_msg_t *msg, struct wire *w) {
  int rc = memport_port_recv(port, msg, 5 * SECOND);
  if (rc != 0)
    return rc;
  size_t len;
  const void *bytes = memport_msg_bytes(msg, &len);
  if (bytes == NULL || len != sizeof *w)
    return MEMPORT_EPROTO;
  memcpy(w, bytes, sizeof *w);
  if (memcmp(w->magic, magic, sizeof magic) != 0 || w->kind < MSG_HELLO || w->kind > MSG_UPDATED)
    return MEMPORT_EPROTO;
  return 0;
}

/* Compare tokens in time independent of where they differ. */
static int token_equal(const char *a, const char *b) {
  unsigned char diff = 0;
  for (size_t i = 0; i < TOKEN_CHARS; i++)
    diff |= (unsigned char)(a[i] ^ b[i]);
  return diff == 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Client.                                                                                     */

static int client_main(const char *name) {
  char who[32];
  snprintf(who, sizeof who, "client %ld", (long)getpid());

  /* The token arrives on stdin, private to the process that started us. */
  char token[TOKEN_CHARS + 2];
  if (fgets(token, sizeof token, stdin) == NULL || strlen(token) < TOKEN_CHARS) {
    fprintf(stderr, "%s: %s: no token on stdin\n", prog, who);
    return 1;
  }

  memport_port_t *port = NULL;
  memport_msg_t *msg = NULL;
  memport_region_t *region = NULL;
  void *view = NULL;
  struct wire w;
  int status = 1, rc;
  if ((rc = memport_msg_create(&msg)) != 0 || (rc = memport_port_connect(&port, name, 5 * SECOND)) != 0) {
    fail(who, "connect", rc);
    goto out;
  }
  if ((rc = send_wire(port, msg, MSG_HELLO, 0, token)) != 0 || (rc = recv_wire(port, msg, &w)) != 0) {
    fail(who, "handshake", rc);
    goto out;
  }
  if (w.kind == MSG_DENIED) {
    printf("%s: the server refused my token and hung up\n", who);
    status = EXIT_DENIED;
    goto out;
  }
  if (w.kind != MSG_WELCOME || memport_msg_handle_count(msg) != 1 ||
      memport_msg_handle_kind(msg, 0) != MEMPORT_HANDLE_REGION) {
    fail(who, "welcome", MEMPORT_EPROTO);
    goto out;
  }
  if ((rc = memport_msg_take_region(msg, 0, &region)) != 0) {
    fail(who, "take the region", rc);
    goto out;
  }
  /* What we were given is read-only for good: a writable mapping is refused. */
  void *w_try = NULL;
  rc = memport_region_map(region, 0, &w_try);
  if (rc == 0) {
    memport_unmap(w_try);
    fprintf(stderr, "%s: %s: the region could be mapped writable\n", prog, who);
    goto out;
  }
  printf("%s: got a region of %zu bytes, read-only=%d; mapping it writable: %s\n", who,
         memport_region_size(region), memport_region_is_readonly(region), memport_err_name(rc));
  if (memport_region_size(region) < sizeof(struct board)) {
    fail(who, "region size", MEMPORT_EPROTO);
    goto out;
  }
  if ((rc = memport_region_map(region, MEMPORT_MAP_READONLY, &view)) != 0) {
    fail(who, "map read-only", rc);
    goto out;
  }

  for (int round = 0; round < 2; round++) {
    struct board b;
    memcpy(&b, view, sizeof b); /* shared memory: copy once, then check */
    b.text[TEXT_MAX - 1] = '\0';
    if (b.generation != w.generation) {
      fprintf(stderr, "%s: %s: generation %" PRIu32 " in the region, %" PRIu32 " announced\n", prog, who,
              b.generation, w.generation);
      goto out;
    }
    printf("%s: read \"%s\"\n", who, b.text);
    if ((rc = send_wire(port, msg, MSG_READ, b.generation, NULL)) != 0) {
      fail(who, "send", rc);
      goto out;
    }
    if (round == 1)
      break;
    if ((rc = recv_wire(port, msg, &w)) != 0 || w.kind != MSG_UPDATED) {
      fail(who, "wait for the update", rc != 0 ? rc : MEMPORT_EPROTO);
      goto out;
    }
  }
  status = 0;
out:
  if (view != NULL)
    memport_unmap(view);
  memport_region_close(region);
  memport_msg_close(msg);
  memport_port_close(port);
  return status;
}

/* ------------------------------------------------------------------------------------------ */
/* Server.                                                                                     */

static int random_token(char *out) {
  unsigned char raw[TOKEN_BYTES];
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  ssize_t n = read(fd, raw, sizeof raw);
  close(fd);
  if (n != (ssize_t)sizeof raw)
    return -1;
  for (size_t i = 0; i < TOKEN_BYTES; i++)
    snprintf(out + 2 * i, 3, "%02x", raw[i]);
  return 0;
}

/* Start `self --client NAME` with `token` on its stdin. */
static pid_t spawn_client(const char *self, const char *name, const char *token) {
  int fds[2];
  if (pipe(fds) != 0)
    return -1;
  fcntl(fds[0], F_SETFD, FD_CLOEXEC);
  fcntl(fds[1], F_SETFD, FD_CLOEXEC);
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    if (dup2(fds[0], STDIN_FILENO) < 0)
      _exit(127);
    char *const args[] = {(char *)self, (char *)"--client", (char *)name, NULL};
    if (strchr(self, '/') != NULL)
      execv(self, args);
    else
      execvp(self, args);
    _exit(127);
  }
  close(fds[0]);
  if (pid > 0) {
    char line[TOKEN_CHARS + 2];
    snprintf(line, sizeof line, "%.*s\n", TOKEN_CHARS, token);
    if (write(fds[1], line, strlen(line)) != (ssize_t)strlen(line))
      fprintf(stderr, "%s: server: could not pass the token to client %ld\n", prog, (long)pid);
  }
  close(fds[1]);
  return pid;
}

/* Serve one connection: 1 if the client was let in and read both texts, 0 if refused, <0 on error. */
static int serve_one(memport_port_t *port, const char *token, memport_region_t *readonly, struct board *board,
                     uint32_t *generation) {
  memport_cred_t peer = {0, 0, 0};
  memport_port_peer(port, &peer);
  memport_msg_t *msg = NULL;
  struct wire w;
  int rc = memport_msg_create(&msg);
  if (rc == 0)
    rc = recv_wire(port, msg, &w);
  if (rc != 0 || w.kind != MSG_HELLO) {
    memport_msg_close(msg);
    return rc != 0 ? rc : MEMPORT_EPROTO;
  }
  if (!token_equal(w.token, token)) {
    printf("server: pid %ld (uid %ld) sent a wrong token: denied\n", (long)peer.pid, (long)peer.uid);
    rc = send_wire(port, msg, MSG_DENIED, 0, NULL);
    memport_msg_close(msg);
    return rc != 0 ? rc : 0;
  }
  printf("server: pid %ld (uid %ld) sent the right token: handing it a read-only handle\n", (long)peer.pid,
         (long)peer.uid);
  /* A copy of our read-only handle travels in the message; we keep ours for the next client. */
  rc = memport_msg_attach_region(msg, readonly, MEMPORT_ATTACH_COPY);
  if (rc == 0)
    rc = send_wire(port, msg, MSG_WELCOME, *generation, NULL);
  if (rc == 0)
    rc = recv_wire(port, msg, &w);
  if (rc == 0 && (w.kind != MSG_READ || w.generation != *generation))
    rc = MEMPORT_EPROTO;
  if (rc == 0) {
    /* Change the text in place, through the writable mapping made before the seal. */
    (*generation)++;
    snprintf(board->text, TEXT_MAX, "generation %" PRIu32 ": rewritten in place after pid %ld read it",
             *generation, (long)peer.pid);
    board->generation = *generation;
    rc = send_wire(port, msg, MSG_UPDATED, *generation, NULL);
  }
  if (rc == 0)
    rc = recv_wire(port, msg, &w);
  if (rc == 0 && (w.kind != MSG_READ || w.generation != *generation))
    rc = MEMPORT_EPROTO;
  memport_msg_close(msg);
  return rc != 0 ? rc : 1;
}

static int server_main(const char *self) {
  char name[MEMPORT_NAME_MAX + 1], token[TOKEN_CHARS + 1], wrong[TOKEN_CHARS + 1];
  snprintf(name, sizeof name, "share-region-%ld", (long)getpid());
  if (random_token(token) != 0 || random_token(wrong) != 0) {
    fprintf(stderr, "%s: server: cannot read /dev/urandom\n", prog);
    return 1;
  }

  memport_region_t *region = NULL, *readonly = NULL;
  memport_service_t *svc = NULL;
  struct board *board = NULL;
  pid_t pids[GOOD_CLIENTS + 1];
  int nspawned = 0, status = 1, rc;
  rc = memport_region_create(&region, REGION_SIZE, 0);
  if (rc == 0)
    rc = memport_region_map(region, 0, (void **)&board);
  if (rc != 0) {
    fail("server", "region", rc);
    goto out;
  }
  uint32_t generation = 1;
  board->generation = generation;
  snprintf(board->text, TEXT_MAX, "generation 1: hello from the server, pid %ld", (long)getpid());
  /* Seal: the handles we give out can never be mapped writable, by anyone, even root; our own
   * mapping, made before, stays writable. */
  if ((rc = memport_region_readonly(region, &readonly)) != 0) {
    fail("server", "memport_region_readonly", rc);
    goto out;
  }
  if ((rc = memport_service_create(&svc, name, 0)) != 0) {
    fail("server", "memport_service_create", rc);
    goto out;
  }
  printf("server: serving a %d KiB region as \"%s\"; starting %d clients with the token, 1 without\n",
         REGION_SIZE / 1024, name, GOOD_CLIENTS);
  for (int i = 0; i <= GOOD_CLIENTS; i++) {
    pid_t pid = spawn_client(self, name, i < GOOD_CLIENTS ? token : wrong);
    if (pid < 0) {
      fprintf(stderr, "%s: server: fork: %s\n", prog, strerror(errno));
      goto reap;
    }
    pids[nspawned++] = pid;
  }

  int served = 0, refused = 0;
  for (int i = 0; i <= GOOD_CLIENTS; i++) {
    memport_port_t *port = NULL;
    if ((rc = memport_service_accept(svc, &port, 10 * SECOND)) != 0) {
      fail("server", "accept", rc);
      goto reap;
    }
    rc = serve_one(port, token, readonly, board, &generation);
    memport_port_close(port);
    if (rc < 0) {
      fail("server", "client", rc);
      goto reap;
    }
    if (rc == 1)
      served++;
    else
      refused++;
  }
  status = served == GOOD_CLIENTS && refused == 1 ? 0 : 1;

reap:
  for (int i = 0; i < nspawned; i++) {
    int ws = 0;
    while (waitpid(pids[i], &ws, 0) < 0 && errno == EINTR) {
    }
    int expected = i < GOOD_CLIENTS ? 0 : EXIT_DENIED;
    if (!WIFEXITED(ws) || WEXITSTATUS(ws) != expected) {
      fprintf(stderr, "%s: server: client %ld ended with status %d, expected %d\n", prog, (long)pids[i],
              WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws), expected);
      status = 1;
    }
  }
  if (status == 0)
    printf("server: %d clients read the live region, 1 impostor was refused: OK\n", GOOD_CLIENTS);
out:
  memport_service_close(svc);
  if (board != NULL)
    memport_unmap(board);
  memport_region_close(readonly);
  memport_region_close(region);
  return status;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc == 3 && strcmp(argv[1], "--client") == 0)
    return client_main(argv[2]);
  if (argc == 1)
    return server_main(argv[0]);
  fprintf(stderr, "usage: %s                  (server, starts its own clients)\n"
                  "       %s --client NAME    (client; the token is read from stdin)\n",
          prog, prog);
  return 2;
}
