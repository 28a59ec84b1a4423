/* SPDX-License-Identifier: MIT */
/* test_strict_posix.c: memport.h in a program that asks for strict POSIX (macOS then hides ESHUTDOWN, behind MEMPORT_ECLOSED): it compiles, and every error code has its name. */
#define _POSIX_C_SOURCE 200809L
#include <memport.h>

#include <stdio.h>
#include <string.h>

int main(void) {
  static const int codes[] = {MEMPORT_EPEER, MEMPORT_ECLOSED, MEMPORT_ETIMEDOUT, MEMPORT_EAGAIN, MEMPORT_EPROTO};
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
    if (strncmp(memport_err_name(codes[i]), "MEMPORT_E", 9) != 0) {
      fprintf(stderr, "code %d has no name: %s\n", codes[i], memport_err_name(codes[i]));
      return 1;
    }
  if (strcmp(memport_err_name(MEMPORT_ECLOSED), "MEMPORT_ECLOSED") != 0) {
    fprintf(stderr, "MEMPORT_ECLOSED is named %s\n", memport_err_name(MEMPORT_ECLOSED));
    return 1;
  }
  return 0;
}
