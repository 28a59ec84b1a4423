/* SPDX-License-Identifier: MIT */
/* error.c: names and descriptions of the MEMPORT_E* error codes. */
#include "internal.h"

#include <string.h>

#define MEMPORT__ERRORS(X)                                                           \
  X(EPERM, "operation not permitted")                                                \
  X(ENOENT, "no such name")                                                          \
  X(EINTR, "interrupted")                                                            \
  X(EBADF, "bad handle")                                                             \
  X(EAGAIN, "resource temporarily unavailable")                                      \
  X(ENOMEM, "out of memory or address space")                                        \
  X(EACCES, "access denied by protection")                                           \
  X(EBUSY, "object busy")                                                            \
  X(EEXIST, "name already served by a live owner")                                   \
  X(EINVAL, "invalid argument")                                                      \
  X(EMFILE, "too many open descriptors")                                             \
  X(ENOSPC, "no space left in ring or pool")                                         \
  X(EPEER, "peer gone (port closed, process died or channel broken off)")            \
  X(ENAMETOOLONG, "name too long")                                                   \
  X(EOVERFLOW, "size overflow")                                                      \
  X(EPROTO, "protocol error: the peer sent malformed data")                          \
  X(EMSGSIZE, "message too long")                                                    \
  X(ENOTSUP, "not supported on this platform")                                       \
  X(ETIMEDOUT, "timed out")                                                          \
  X(ECLOSED, "channel closed in order")

const char *memport_strerror(int err) {
  if (err == 0)
    return "success";
#define MEMPORT__STR(name, text) \
  if (err == MEMPORT_##name)     \
    return text;
  MEMPORT__ERRORS(MEMPORT__STR)
#undef MEMPORT__STR
  return "unknown error";
}

const char *memport_err_name(int err) {
  if (err == 0)
    return "0";
#define MEMPORT__NAME(name, text) \
  if (err == MEMPORT_##name)      \
    return "MEMPORT_" #name;
  MEMPORT__ERRORS(MEMPORT__NAME)
#undef MEMPORT__NAME
  return "MEMPORT_EUNKNOWN";
}
