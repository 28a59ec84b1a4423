/* SPDX-License-Identifier: MIT */
/* os_darwin.c: memport-bench's stand-ins where Darwin has no CPU affinity, futex or /proc: nothing is pinned,
 * the futex ping-pong is n/a, the CPU model unknown. */
#include "bench.h"

const bool bench_can_pin = false;
const bool bench_have_futex = false;
const char bench_port_transport[] = "Mach messages";

int pin_to(int cpu) {
  (void)cpu;
  return -1;
}

void save_affinity(void) {}

void restore_affinity(void) {}

void choose_cpus(void) {}

int usable_cpus(void) { return online_cpus(); }

void cpu_model(char *out, size_t cap) {
  (void)out;
  (void)cap;
}

void futex_wait_word(_Atomic uint32_t *w, uint32_t val) {
  (void)w;
  (void)val;
}

void futex_wake_word(_Atomic uint32_t *w) { (void)w; }
void futex_wake_all_word(_Atomic uint32_t *w) { (void)w; }
