/* SPDX-License-Identifier: MIT */
/* lib/region.c: regions, mappings (plain, read-only, mirrored) and remaps, with the process-wide
 * registry that tells memport mappings from any other address. */
#include "config.h"

#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* The mapping registry: every live memport mapping of this process, sorted by base address.   */

#define MEMPORT__MAPPING_MIRROR   (1u << 0)
#define MEMPORT__MAPPING_READONLY (1u << 1)
#define MEMPORT__MAPPING_REMAP    (1u << 2)
#define MEMPORT__MAPPING_NOFORK   (1u << 3) /* (part of) it is not inherited by fork children */

struct memport__mapping {
  uintptr_t base;
  size_t len;
  unsigned flags; /* MEMPORT__MAPPING_* */
  uintptr_t src;  /* MEMPORT__MAPPING_REMAP: the range this view shows, [src, src+len) */
};

static pthread_mutex_t memport__reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct memport__mapping *memport__reg;
static size_t memport__reg_count, memport__reg_cap;
static size_t memport__reg_views; /* entries with MEMPORT__MAPPING_REMAP */
static pthread_once_t memport__reg_once = PTHREAD_ONCE_INIT;

/* fork() while another thread holds the lock must not leave the child's registry locked. */
static void memport__reg_prepare(void) { pthread_mutex_lock(&memport__reg_lock); }
static void memport__reg_parent(void) { pthread_mutex_unlock(&memport__reg_lock); }
static void memport__reg_child(void) {
  /* Mappings (partly) made MEMPORT_INHERIT_NONE or ZERO are not the child's (compacted in place,
   * no allocator call). */
  size_t k = 0;
  for (size_t i = 0; i < memport__reg_count; i++) {
    if (!(memport__reg[i].flags & MEMPORT__MAPPING_NOFORK))
      memport__reg[k++] = memport__reg[i];
    else if (memport__reg[i].flags & MEMPORT__MAPPING_REMAP)
      memport__reg_views--;
  }
  memport__reg_count = k;
  pthread_mutex_unlock(&memport__reg_lock);
}
static void memport__reg_init(void) {
  (void)pthread_atfork(memport__reg_prepare, memport__reg_parent, memport__reg_child);
}

static void memport__reg_lock_acquire(void) {
  pthread_once(&memport__reg_once, memport__reg_init);
  pthread_mutex_lock(&memport__reg_lock);
}

/* Index of the first entry whose base is >= base. Lock held. */
static size_t memport__reg_lower_bound(uintptr_t base) {
  size_t lo = 0, hi = memport__reg_count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (memport__reg[mid].base < base)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* Is some memport_remap view showing pages of [base, base+len)? Lock held. */
static bool memport__reg_viewed(uintptr_t base, size_t len) {
  if (memport__reg_views == 0)
    return false;
  for (size_t i = 0; i < memport__reg_count; i++) {
    const struct memport__mapping *m = &memport__reg[i];
    if ((m->flags & MEMPORT__MAPPING_REMAP) && m->src < base + len && base < m->src + m->len)
      return true;
  }
  return false;
}

/* Index of the entry starting exactly at base, or SIZE_MAX. Lock held. */
static size_t memport__reg_find(uintptr_t base) {
  size_t i = memport__reg_lower_bound(base);
  return (i < memport__reg_count && memport__reg[i].base == base) ? i : SIZE_MAX;
}

static void memport__reg_remove_at(size_t i) {
  if (memport__reg[i].flags & MEMPORT__MAPPING_REMAP)
    memport__reg_views--;
  memmove(&memport__reg[i], &memport__reg[i + 1], (memport__reg_count - i - 1) * sizeof *memport__reg);
  memport__reg_count--;
  if (memport__reg_count == 0) {
    free(memport__reg);
    memport__reg = NULL;
    memport__reg_cap = 0;
  }
}

/* Record a mapping the kernel just gave us. Entries overlapping it are stale (their owner
 * unmapped them behind memport's back, since the kernel handed the addresses out again) and go. */
static int memport__reg_add(void *addr, size_t len, unsigned flags, const void *src) {
  uintptr_t base = (uintptr_t)addr;
  int rc = 0;
  memport__reg_lock_acquire();
  size_t i = memport__reg_lower_bound(base);
  while (i > 0 && memport__reg[i - 1].base + memport__reg[i - 1].len > base) {
    memport__reg_remove_at(i - 1);
    i--;
  }
  while (i < memport__reg_count && memport__reg[i].base < base + len)
    memport__reg_remove_at(i);
  if (memport__reg_count == memport__reg_cap) {
    size_t ncap = memport__reg_cap ? memport__reg_cap * 2 : 16;
    struct memport__mapping *n = realloc(memport__reg, ncap * sizeof *n);
    if (n == NULL) {
      rc = MEMPORT_ENOMEM;
      goto out;
    }
    memport__reg = n;
    memport__reg_cap = ncap;
  }
  memmove(&memport__reg[i + 1], &memport__reg[i], (memport__reg_count - i) * sizeof *memport__reg);
  memport__reg[i] = (struct memport__mapping){.base = base, .len = len, .flags = flags, .src = (uintptr_t)src};
  memport__reg_count++;
  if (flags & MEMPORT__MAPPING_REMAP)
    memport__reg_views++;
out:
  pthread_mutex_unlock(&memport__reg_lock);
  return rc;
}

void memport__reg_inherit(const void *addr, size_t len, int mode) {
  uintptr_t lo = (uintptr_t)addr, hi = lo + len;
  memport__reg_lock_acquire();
  for (size_t i = 0; i < memport__reg_count; i++) {
    struct memport__mapping *m = &memport__reg[i];
    if (m->base >= hi || m->base + m->len <= lo)
      continue;
    if (mode == MEMPORT_INHERIT_NONE || mode == MEMPORT_INHERIT_ZERO)
      m->flags |= MEMPORT__MAPPING_NOFORK;
    else if (lo <= m->base && m->base + m->len <= hi) /* inherited again as a whole */
      m->flags &= ~MEMPORT__MAPPING_NOFORK;
  }
  pthread_mutex_unlock(&memport__reg_lock);
}

/* ------------------------------------------------------------------------------------------ */
/* Regions.                                                                                     */

int memport_region_create(memport_region_t **out, size_t size, unsigned flags) {
  if (out == NULL || size == 0 || flags != 0)
    return MEMPORT_EINVAL;
  size_t rounded = memport__page_round(size);
  if (rounded == 0)
    return MEMPORT_EOVERFLOW;
  memport_region_t *r = calloc(1, sizeof *r);
  if (r == NULL)
    return MEMPORT_ENOMEM;
  r->size = rounded; /* the backend may make it larger (Darwin: whole kernel pages) */
  int rc = memport__os_region_create(r, rounded);
  if (rc < 0) {
    free(r);
    return rc;
  }
  r->readonly = false;
  *out = r;
  return 0;
}

int memport_region_close(memport_region_t *region) {
  if (region == NULL)
    return 0;
  memport__os_region_close(region);
  free(region);
  return 0;
}

size_t memport_region_size(const memport_region_t *region) { return region == NULL ? 0 : region->size; }

int memport_region_is_readonly(const memport_region_t *region) {
  if (region == NULL)
    return MEMPORT_EINVAL;
  return region->readonly ? 1 : 0;
}

int memport_region_dup(memport_region_t *region, unsigned flags, memport_region_t **out) {
  if (region == NULL || out == NULL || (flags & ~MEMPORT_DUP_READONLY) != 0)
    return MEMPORT_EINVAL;
  memport_region_t *n = calloc(1, sizeof *n);
  if (n == NULL)
    return MEMPORT_ENOMEM;
  bool readonly = region->readonly || (flags & MEMPORT_DUP_READONLY) != 0;
  int rc = memport__os_region_dup(region, readonly, n);
  if (rc < 0) {
    free(n);
    return rc;
  }
  n->size = region->size;
  n->readonly = readonly;
  *out = n;
  return 0;
}

int memport_region_readonly(memport_region_t *region, memport_region_t **out) {
  if (region == NULL || out == NULL)
    return MEMPORT_EINVAL;
  memport_region_t *n = calloc(1, sizeof *n);
  if (n == NULL)
    return MEMPORT_ENOMEM;
  /* The read-only handle first, so that a failure changes nothing. */
  int rc = memport__os_region_dup(region, true, n);
  if (rc == MEMPORT_ENOTSUP) {
    /* This backend cannot make a read-only duplicate of a writable object here (Linux without
     * /proc); once the object itself is read-only, a plain duplicate is. */
    rc = memport__os_region_seal(region);
    if (rc == 0) {
      region->readonly = true;
      rc = memport__os_region_dup(region, true, n);
    }
    if (rc < 0) {
      free(n);
      return rc;
    }
  } else if (rc < 0) {
    free(n);
    return rc;
  } else {
    rc = memport__os_region_seal(region);
    if (rc < 0) {
      memport__os_region_close(n);
      free(n);
      return rc;
    }
  }
  n->size = region->size;
  n->readonly = true;
  region->readonly = true;
  *out = n;
  return 0;
}

int memport_region_os_handle(const memport_region_t *region, memport_os_handle_t *out) {
  if (region == NULL || out == NULL)
    return MEMPORT_EINVAL;
  *out = region->handle;
  return 0;
}

int memport_region_adopt(memport_region_t **out, memport_os_handle_t handle, size_t size, unsigned flags) {
  if (out == NULL || (flags & ~MEMPORT_ADOPT_READONLY) != 0)
    return MEMPORT_EINVAL;
  if (handle == MEMPORT_OS_HANDLE_INVALID)
    return MEMPORT_EINVAL;
  size_t rounded = 0;
  if (size != 0) {
    rounded = memport__page_round(size);
    if (rounded == 0)
      return MEMPORT_EOVERFLOW;
  }
  memport_region_t *r = calloc(1, sizeof *r);
  if (r == NULL)
    return MEMPORT_ENOMEM;
  int rc = memport__os_region_adopt(r, handle, rounded, (flags & MEMPORT_ADOPT_READONLY) != 0);
  if (rc < 0) {
    free(r);
    return rc;
  }
  *out = r;
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Mappings.                                                                                    */

int memport_region_map(memport_region_t *region, unsigned flags, void **addr) {
  if (region == NULL || addr == NULL || (flags & ~(MEMPORT_MAP_READONLY | MEMPORT_MAP_MIRROR)) != 0)
    return MEMPORT_EINVAL;
  bool writable = (flags & MEMPORT_MAP_READONLY) == 0;
  if (writable && region->readonly)
    return MEMPORT_EACCES;
  size_t size = region->size;
  if (size == 0)
    return MEMPORT_EINVAL;
  unsigned rflags = writable ? 0u : MEMPORT__MAPPING_READONLY;
  void *base;
  size_t len;
  int rc;
  if (flags & MEMPORT_MAP_MIRROR) {
    /* Reserve both halves at once, then put the region into each at a fixed address: no other
     * thread can take the second half between the two steps, so no retry loop is needed. */
    if (size > SIZE_MAX / 2)
      return MEMPORT_EOVERFLOW;
    len = 2 * size;
    rc = memport__os_reserve(len, &base);
    if (rc < 0)
      return rc;
    void *a, *b;
    rc = memport__os_map(region, 0, size, writable, base, &a);
    if (rc == 0)
      rc = memport__os_map(region, 0, size, writable, (char *)base + size, &b);
    if (rc < 0) {
      memport__os_unmap(base, len);
      return rc;
    }
    rflags |= MEMPORT__MAPPING_MIRROR;
  } else {
    len = size;
    rc = memport__os_map(region, 0, size, writable, NULL, &base);
    if (rc < 0)
      return rc;
  }
  rc = memport__reg_add(base, len, rflags, NULL);
  if (rc < 0) {
    memport__os_unmap(base, len);
    return rc;
  }
  *addr = base;
  return 0;
}

int memport_unmap(void *addr) {
  if (addr == NULL)
    return MEMPORT_EINVAL;
  int rc;
  memport__reg_lock_acquire();
  size_t i = memport__reg_find((uintptr_t)addr);
  if (i == SIZE_MAX) {
    rc = MEMPORT_EINVAL;
  } else if (memport__reg_viewed(memport__reg[i].base, memport__reg[i].len)) {
    /* A view made by memport_remap still shows these pages: unmap the view first, so that the
     * lifetime of a view never outlasts what it was made from (the same rule on every OS). */
    rc = MEMPORT_EBUSY;
  } else {
    /* Unmapped under the lock: the address cannot be handed out and registered meanwhile. */
    rc = memport__os_unmap(addr, memport__reg[i].len);
    if (rc == 0)
      memport__reg_remove_at(i);
  }
  pthread_mutex_unlock(&memport__reg_lock);
  return rc;
}

int memport_mapping_size(const void *addr, size_t *len) {
  if (addr == NULL || len == NULL)
    return MEMPORT_EINVAL;
  int rc = MEMPORT_EINVAL;
  memport__reg_lock_acquire();
  size_t i = memport__reg_find((uintptr_t)addr);
  if (i != SIZE_MAX) {
    *len = memport__reg[i].len;
    rc = 0;
  }
  pthread_mutex_unlock(&memport__reg_lock);
  return rc;
}

int memport_remap(void *addr, size_t len, unsigned flags, void **out) {
  if (addr == NULL || out == NULL || len == 0 || (flags & ~MEMPORT_MAP_READONLY) != 0)
    return MEMPORT_EINVAL;
  size_t page = memport__os_page_size();
  if (((uintptr_t)addr & (page - 1)) != 0 || (len & (page - 1)) != 0)
    return MEMPORT_EINVAL;
  if ((uintptr_t)addr + len < (uintptr_t)addr)
    return MEMPORT_EOVERFLOW;
  bool readonly = (flags & MEMPORT_MAP_READONLY) != 0;
  void *view;
  int rc = memport__os_remap(addr, len, readonly, &view);
  if (rc < 0)
    return rc;
  rc = memport__reg_add(view, len, MEMPORT__MAPPING_REMAP | (readonly ? MEMPORT__MAPPING_READONLY : 0u), addr);
  if (rc < 0) {
    memport__os_unmap(view, len);
    return rc;
  }
  *out = view;
  return 0;
}
