/* SPDX-License-Identifier: MIT */
/* alloc_count.c: memport-bench's heap-allocation counter (Linux): on glibc the program defines
 * malloc/calloc/realloc/free (and the aligned variants) and forwards them to glibc's allocator; the dynamic
 * linker binds libmemport's calls to these definitions, so the steady-state check can count every heap
 * allocation the library makes. Not under sanitizers (they replace the allocator themselves). */
#include "bench.h"

#include <errno.h>
#include <stdlib.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define BENCH_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#ifndef BENCH_SANITIZED
#define BENCH_SANITIZED 1
#endif
#endif

static _Atomic unsigned long bench_allocs;
unsigned long alloc_count(void) { return atomic_load_explicit(&bench_allocs, memory_order_relaxed); }

#if defined(__GLIBC__) && !defined(BENCH_SANITIZED)
const bool bench_counts_malloc = true;

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void *__libc_memalign(size_t align, size_t size);
extern void __libc_free(void *p);

void *malloc(size_t size) {
  atomic_fetch_add_explicit(&bench_allocs, 1, memory_order_relaxed);
  return __libc_malloc(size);
}
void *calloc(size_t n, size_t size) {
  atomic_fetch_add_explicit(&bench_allocs, 1, memory_order_relaxed);
  return __libc_calloc(n, size);
}
void *realloc(void *p, size_t size) {
  atomic_fetch_add_explicit(&bench_allocs, 1, memory_order_relaxed);
  return __libc_realloc(p, size);
}
void free(void *p) { __libc_free(p); }
int posix_memalign(void **out, size_t align, size_t size) {
  if (align % sizeof(void *) != 0 || (align & (align - 1)) != 0) return EINVAL;
  atomic_fetch_add_explicit(&bench_allocs, 1, memory_order_relaxed);
  void *p = __libc_memalign(align, size);
  if (p == NULL) return ENOMEM;
  *out = p;
  return 0;
}
void *aligned_alloc(size_t align, size_t size) {
  atomic_fetch_add_explicit(&bench_allocs, 1, memory_order_relaxed);
  return __libc_memalign(align, size);
}
#else
const bool bench_counts_malloc = false;
#endif
