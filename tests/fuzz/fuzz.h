/* SPDX-License-Identifier: MIT */
/* fuzz.h: what the libFuzzer harnesses share: an input reader, and descriptor/mapping leak checks. */
#ifndef MEMPORT_FUZZ_H
#define MEMPORT_FUZZ_H

#include "config.h"

#include "internal.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* The input, consumed front to back; reads past the end give zeros (and mark it exhausted). */
struct fz {
  const uint8_t *p;
  size_t n;
};

static inline int fz_empty(const struct fz *f) { return f->n == 0; }

static inline void fz_bytes(struct fz *f, void *out, size_t len) {
  size_t k = len < f->n ? len : f->n;
  if (k != 0)
    memcpy(out, f->p, k);
  if (k < len)
    memset((unsigned char *)out + k, 0, len - k);
  f->p += k;
  f->n -= k;
}

static inline uint8_t fz_u8(struct fz *f) {
  uint8_t v;
  fz_bytes(f, &v, sizeof v);
  return v;
}

static inline uint16_t fz_u16(struct fz *f) {
  uint16_t v;
  fz_bytes(f, &v, sizeof v);
  return v;
}

static inline uint32_t fz_u32(struct fz *f) {
  uint32_t v;
  fz_bytes(f, &v, sizeof v);
  return v;
}

static inline uint64_t fz_u64(struct fz *f) {
  uint64_t v;
  fz_bytes(f, &v, sizeof v);
  return v;
}

/* A number that is often interesting: 0, small, near a limit, near a base value, or anything. */
static inline uint64_t fz_num(struct fz *f, uint64_t base) {
  uint8_t mode = fz_u8(f);
  switch (mode & 7u) {
  case 0:
    return 0;
  case 1:
    return fz_u8(f);
  case 2:
    return base + fz_u8(f);
  case 3:
    return base - fz_u8(f);
  case 4:
    return UINT64_MAX - fz_u8(f);
  case 5:
    return (uint64_t)1 << (fz_u8(f) & 63u);
  case 6:
    return base + ((uint64_t)(int64_t)(int16_t)fz_u16(f) << 4); /* aligned steps either way */
  default:
    return fz_u64(f);
  }
}

/* MEMPORT_FUZZ_DEBUG=1 in the environment: the harnesses say what each operation returned. */
static inline int fz_debugging(void) {
  static int on = -1;
  if (on < 0)
    on = getenv("MEMPORT_FUZZ_DEBUG") != NULL;
  return on;
}
#define fz_debug(...)                                                                                 \
  do {                                                                                                \
    if (fz_debugging())                                                                               \
      fprintf(stderr, __VA_ARGS__);                                                                   \
  } while (0)

/* Open descriptors of this process (the directory's own excluded); listed on stderr if `show`. */
static inline int fz_count_fds_show(int show) {
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL)
    return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.')
      continue;
    n++;
    if (show) {
      char path[300], target[256];
      snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
      ssize_t k = readlink(path, target, sizeof target - 1);
      target[k < 0 ? 0 : k] = '\0';
      fprintf(stderr, "  fd %s -> %s\n", e->d_name, target);
    }
  }
  closedir(d);
  return n - 1;
}

static inline int fz_count_fds(void) { return fz_count_fds_show(0); }

/* Mappings of memfds (every memport region is one): lines of /proc/self/maps naming "/memfd:". */
static inline int fz_count_memfd_maps(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  if (f == NULL)
    return -1;
  char line[512];
  int n = 0;
  while (fgets(line, sizeof line, f) != NULL)
    if (strstr(line, "/memfd:") != NULL)
      n++;
  fclose(f);
  return n;
}

/* Abort (a libFuzzer crash, with the input saved) when an iteration leaves descriptors or
 * memfd mappings behind. `every` spaces out the mapping check (it reads /proc/self/maps). */
struct fz_leaks {
  int fds, maps;
  unsigned long runs;
};

static inline void fz_leaks_begin(struct fz_leaks *l) {
  /* Descriptors are counted around every input (libFuzzer's symbolizer opens pipes of its own
   * between inputs); memfd mappings are memport's alone, so one count at the start does. */
  l->fds = fz_count_fds();
  if (l->runs++ == 0)
    l->maps = fz_count_memfd_maps();
}

static inline void fz_leaks_end(struct fz_leaks *l, unsigned long every) {
  int fds = fz_count_fds();
  if (fds != l->fds) {
    fprintf(stderr, "fuzz: descriptor leak: %d open, %d before\n", fds, l->fds);
    fz_count_fds_show(1);
    abort();
  }
  if (every != 0 && l->runs % every == 0) {
    int maps = fz_count_memfd_maps();
    if (maps != l->maps) {
      fprintf(stderr, "fuzz: mapping leak: %d memfd mappings, %d before\n", maps, l->maps);
      abort();
    }
  }
}

#endif /* MEMPORT_FUZZ_H */
