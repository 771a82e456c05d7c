#ifndef CMALLOC_SHIM_H
#define CMALLOC_SHIM_H
/* glibc's malloc tuning (mallopt, M_MMAP_THRESHOLD): malloc.h is not part of Swift's Glibc
   module. Part of libc, so nothing to link. */
#include <malloc.h>
#endif
