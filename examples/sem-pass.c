/* SPDX-License-Identifier: MIT */
/* sem-pass.c: send two semaphores and a region to a child in a message, then ping-pong across processes. */

/*
 * The parent makes a connected pair of ports and forks. Only then does it create two semaphores
 * ("ping" and "pong", count 0) and a one-page region, so the child can get them in no other way
 * than the message the parent sends it: the handles travel inside the message (on Linux as file
 * descriptors over a unix socket, on Darwin as Mach port rights) and are the child's own once
 * received.
 *
 * Then the two processes take turns with a counter in the region: the parent adds one and
 * signals "ping"; the child, waiting on "ping", adds one and signals "pong"; and so on. Each side
 * waits with a timeout, so a lost signal ends the program with an error instead of a hang.
 *
 *   sem-pass [ROUNDS]      (default 5)
 */

#include <errno.h>
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

static int fail(const char *who, const char *what, int rc) {
  fprintf(stderr, "sem-pass: %s: %s: %s\n", who, what, memport_strerror(rc));
  return 1;
}

static int child_main(memport_port_t *port, unsigned rounds) {
  memport_msg_t *msg = NULL;
  memport_sem_t *ping = NULL, *pong = NULL;
  memport_region_t *region = NULL;
  volatile uint64_t *ball = NULL;
  int status = 1, rc;
  if ((rc = memport_msg_create(&msg)) != 0 || (rc = memport_port_recv(port, msg, 5 * SECOND)) != 0) {
    fail("child", "receive", rc);
    goto out;
  }
  memport_cred_t from;
  memport_msg_sender(msg, &from);
  if (memport_msg_handle_count(msg) != 3 || memport_msg_handle_kind(msg, 0) != MEMPORT_HANDLE_SEM ||
      memport_msg_handle_kind(msg, 1) != MEMPORT_HANDLE_SEM ||
      memport_msg_handle_kind(msg, 2) != MEMPORT_HANDLE_REGION) {
    fail("child", "the message", MEMPORT_EPROTO);
    goto out;
  }
  if ((rc = memport_msg_take_sem(msg, 0, &ping)) != 0 || (rc = memport_msg_take_sem(msg, 1, &pong)) != 0 ||
      (rc = memport_msg_take_region(msg, 2, &region)) != 0 ||
      (rc = memport_region_map(region, 0, (void **)&ball)) != 0) {
    fail("child", "take the handles", rc);
    goto out;
  }
  printf("child  (pid %ld): got 2 semaphores and a region from pid %ld\n", (long)getpid(),
         (long)from.pid);
  for (unsigned i = 0; i < rounds; i++) {
    if ((rc = memport_sem_wait(ping, 5 * SECOND)) != 0) {
      fail("child", "wait for ping", rc);
      goto out;
    }
    uint64_t v = *ball;
    if (v != 2 * (uint64_t)i + 1) {
      fprintf(stderr, "sem-pass: child: the ball is %" PRIu64 ", expected %" PRIu64 "\n", v,
              2 * (uint64_t)i + 1);
      goto out;
    }
    *ball = v + 1;
    printf("child  (pid %ld): ping %u received, ball %" PRIu64 " -> %" PRIu64 ", pong\n", (long)getpid(),
           i + 1, v, v + 1);
    if ((rc = memport_sem_signal(pong)) != 0) {
      fail("child", "signal pong", rc);
      goto out;
    }
  }
  status = 0;
out:
  if (ball != NULL)
    memport_unmap((void *)ball);
  memport_region_close(region);
  memport_sem_close(ping);
  memport_sem_close(pong);
  memport_msg_close(msg);
  return status;
}

int main(int argc, char **argv) {
  unsigned rounds = 5;
  if (argc > 2 || (argc == 2 && (sscanf(argv[1], "%u", &rounds) != 1 || rounds == 0 || rounds > 1000000))) {
    fprintf(stderr, "usage: sem-pass [ROUNDS]   (1..1000000, default 5)\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);

  memport_port_t *mine = NULL, *theirs = NULL;
  int rc = memport_port_pair(&mine, &theirs);
  if (rc != 0)
    return fail("parent", "memport_port_pair", rc);
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    perror("sem-pass: fork");
    return 1;
  }
  if (pid == 0) {
    memport_port_close(mine);
    int st = child_main(theirs, rounds);
    memport_port_close(theirs);
    _exit(st);
  }
  memport_port_close(theirs);

  /* Created after the fork: the child can only get these through the message. */
  memport_sem_t *ping = NULL, *pong = NULL;
  memport_region_t *region = NULL;
  memport_msg_t *msg = NULL;
  volatile uint64_t *ball = NULL;
  int status = 1;
  if ((rc = memport_sem_create(&ping, 0, 0)) != 0 || (rc = memport_sem_create(&pong, 0, 0)) != 0 ||
      (rc = memport_region_create(&region, memport_page_size(), 0)) != 0 ||
      (rc = memport_region_map(region, 0, (void **)&ball)) != 0 || (rc = memport_msg_create(&msg)) != 0) {
    fail("parent", "create", rc);
    goto out;
  }
  /* Attach copies: the parent keeps its own handles to the same semaphores and region. */
  static const char hello[] = "two semaphores and the ball";
  if ((rc = memport_msg_set_bytes(msg, hello, sizeof hello)) != 0 ||
      (rc = memport_msg_attach_sem(msg, ping, MEMPORT_ATTACH_COPY)) != 0 ||
      (rc = memport_msg_attach_sem(msg, pong, MEMPORT_ATTACH_COPY)) != 0 ||
      (rc = memport_msg_attach_region(msg, region, MEMPORT_ATTACH_COPY)) != 0 ||
      (rc = memport_port_send(mine, msg, 5 * SECOND)) != 0) {
    fail("parent", "send", rc);
    goto out;
  }
  printf("parent (pid %ld): sent 2 semaphores and a region to the child, pid %ld\n", (long)getpid(),
         (long)pid);

  for (unsigned i = 0; i < rounds; i++) {
    uint64_t v = *ball;
    *ball = v + 1;
    printf("parent (pid %ld): ball %" PRIu64 " -> %" PRIu64 ", ping %u\n", (long)getpid(), v, v + 1, i + 1);
    if ((rc = memport_sem_signal(ping)) != 0) {
      fail("parent", "signal ping", rc);
      goto out;
    }
    if ((rc = memport_sem_wait(pong, 5 * SECOND)) != 0) {
      fail("parent", "wait for pong", rc);
      goto out;
    }
  }
  if (*ball != 2 * (uint64_t)rounds) {
    fprintf(stderr, "sem-pass: parent: the ball is %" PRIu64 ", expected %" PRIu64 "\n", *ball,
            2 * (uint64_t)rounds);
    goto out;
  }
  status = 0;
out:
  memport_port_close(mine); /* the child, if still waiting for the message, sees MEMPORT_EPEER */
  int ws = 0;
  while (waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0) {
    fprintf(stderr, "sem-pass: the child failed\n");
    status = 1;
  }
  if (status == 0)
    printf("parent (pid %ld): %u round trips through semaphores the child received in a message: OK\n",
           (long)getpid(), rounds);
  if (ball != NULL)
    memport_unmap((void *)ball);
  memport_region_close(region);
  memport_sem_close(ping);
  memport_sem_close(pong);
  memport_msg_close(msg);
  return status;
}
