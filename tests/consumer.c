/* SPDX-License-Identifier: MIT */
/* consumer.c: a program outside the build that uses the installed memport through pkg-config only. */
#include <memport.h>
#include <memport/version.h>

#include <stdio.h>
#include <string.h>

#if !MEMPORT_VERSION_CHECK(0, 1, 0)
#error "memport headers older than 0.1.0"
#endif

int main(void) {
  if (memport_version() != MEMPORT_VERSION) {
    fprintf(stderr, "consumer: header version %s, library %s\n", MEMPORT_VERSION_STRING, memport_version_string());
    return 1;
  }
  memport_region_t *region = NULL;
  void *a = NULL, *b = NULL;
  int rc = memport_region_create(&region, 100, 0);
  if (rc == 0)
    rc = memport_region_map(region, 0, &a);
  if (rc == 0)
    rc = memport_region_map(region, MEMPORT_MAP_READONLY, &b);
  if (rc != 0) {
    fprintf(stderr, "consumer: %s\n", memport_strerror(rc));
    return 1;
  }
  strcpy((char *)a, "hello through two mappings");
  int same = strcmp((const char *)b, "hello through two mappings") == 0;
  memport_unmap(a);
  memport_unmap(b);
  memport_region_close(region);
  printf("consumer: memport %s, %s\n", memport_version_string(), same ? "ok" : "MISMATCH");
  return same ? 0 : 1;
}
