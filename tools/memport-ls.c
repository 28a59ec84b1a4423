/* SPDX-License-Identifier: MIT */
/* memport-ls.c: list this user's live memport names (services, published regions, topics) with their owners and each topic's subscriber count. */
#include <memport.h>

#include <stdio.h>
#include <string.h>

static void usage(FILE *f, const char *argv0) {
  fprintf(f,
          "usage: %s [-h]\n"
          "List the live memport names of this user: services, published regions and topics,\n"
          "with the pid and uid of the process serving each one, and for a topic the number\n"
          "of its subscribers (SUBS; '-' for other kinds).\n"
          "Names whose owner has died are not listed; the entries they left behind are removed.\n"
          "\n"
          "  -h, --help   show this help and exit\n",
          argv0);
}

static const char *kind_name(int kind) {
  switch (kind) {
  case MEMPORT_NAME_SERVICE:
    return "service";
  case MEMPORT_NAME_REGION:
    return "region";
  case MEMPORT_NAME_TOPIC:
    return "topic";
  default:
    return "?";
  }
}

static int print_one(const memport_name_info_t *info, void *arg) {
  unsigned *count = arg;
  char subs[16] = "-";
  if (info->kind == MEMPORT_NAME_TOPIC)
    snprintf(subs, sizeof subs, "%lu", (unsigned long)info->subscribers);
  printf("%-40s %-8s %8ld %8lu %6s\n", info->name, kind_name(info->kind), (long)info->owner.pid,
         (unsigned long)info->owner.uid, subs);
  (*count)++;
  return 0;
}

int main(int argc, char **argv) {
  const char *argv0 = "memport-ls";
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      usage(stdout, argv0);
      return 0;
    }
    fprintf(stderr, "%s: unknown argument '%s'\n", argv0, argv[i]);
    usage(stderr, argv0);
    return 2;
  }
  /* Clear what dead owners left first (never a live name); a failure here does not stop the listing. */
  (void)memport_name_sweep(0);
  printf("%-40s %-8s %8s %8s %6s\n", "NAME", "KIND", "PID", "UID", "SUBS");
  unsigned count = 0;
  int rc = memport_name_foreach(print_one, &count);
  if (fflush(stdout) != 0) {
    perror(argv0);
    return 1;
  }
  if (rc < 0) {
    fprintf(stderr, "%s: %s (%s)\n", argv0, memport_strerror(rc), memport_err_name(rc));
    return 1;
  }
  return 0;
}
