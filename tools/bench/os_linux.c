/* SPDX-License-Identifier: MIT */
/* os_linux.c: memport-bench's Linux parts: CPU pinning with sched_setaffinity, the futex, the CPU model. */
#include "bench.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

const bool bench_can_pin = true;
const bool bench_have_futex = true;
const char bench_port_transport[] = "SOCK_SEQPACKET";

int pin_to(int cpu) {
  if (cpu < 0) return -1;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return sched_setaffinity(0, sizeof set, &set) == 0 ? 0 : -1;
}

static cpu_set_t saved_affinity;
static bool have_saved_affinity;

void save_affinity(void) { have_saved_affinity = sched_getaffinity(0, sizeof saved_affinity, &saved_affinity) == 0; }

void restore_affinity(void) {
  if (have_saved_affinity) sched_setaffinity(0, sizeof saved_affinity, &saved_affinity);
}

void choose_cpus(void) {
  cpu_set_t set;
  if (!cfg.pin || sched_getaffinity(0, sizeof set, &set) != 0) return;
  int n = 0;
  for (int c = 0; c < CPU_SETSIZE && n < 2; c++)
    if (CPU_ISSET(c, &set)) cpus[n++] = c;
  if (n < 2) cpus[0] = cpus[1] = -1;
}

/* The affinity mask, not merely the CPUs online. */
int usable_cpus(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
  return online_cpus();
}

void cpu_model(char *out, size_t cap) {
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (f == NULL) return;
  char line[256];
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "model name", 10) == 0) {
      char *c = strchr(line, ':');
      if (c) {
        c++;
        while (*c == ' ') c++;
        c[strcspn(c, "\n")] = 0;
        snprintf(out, cap, "%s", c);
      }
      break;
    }
  }
  fclose(f);
}

void futex_wait_word(_Atomic uint32_t *w, uint32_t val) {
  struct timespec t = {0, 100 * 1000 * 1000};
  syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT, val, &t, NULL, 0);
}

void futex_wake_word(_Atomic uint32_t *w) { syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE, 1, NULL, NULL, 0); }

void futex_wake_all_word(_Atomic uint32_t *w) { syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE, INT_MAX, NULL, NULL, 0); }
