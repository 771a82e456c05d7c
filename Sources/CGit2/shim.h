#ifndef CGIT2_SHIM_H
#define CGIT2_SHIM_H
#include <git2.h>
/* git_repository_set_odb and the git_odb_backend struct: mvc builds its own object
   database with an uncompressed loose backend (its blobs are zstd frames already). */
#include <git2/sys/repository.h>
#include <git2/sys/odb_backend.h>
#endif
