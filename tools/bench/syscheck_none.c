/* SPDX-License-Identifier: MIT */
/* syscheck_none.c: memport-bench's stand-in for the steady-state check where there is no ptrace to count
 * system calls with (Darwin): the check is reported as not run. */
#include "bench.h"

struct sys_result sysres[SYS_RUNS];
size_t nsysres;

void run_syscheck(void) { progress("steady state: the syscall count uses ptrace and is Linux-only\n"); }

const char *syscall_name(long nr) {
  (void)nr;
  return NULL;
}
