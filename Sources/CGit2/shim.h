#ifndef CGIT2_SHIM_H
#define CGIT2_SHIM_H
#include <git2.h>
/* git_repository_set_odb and the git_odb_backend struct: mvc builds its own object
   database with an uncompressed loose backend (its blobs are zstd frames already). */
#include <git2/sys/repository.h>
#include <git2/sys/odb_backend.h>

/* git_libgit2_opts is variadic, which Swift cannot call: one fixed-argument wrapper per use. */
static inline int mvc_git_limit_pack_windows(size_t window_size, size_t mapped_limit) {
  int error = git_libgit2_opts(GIT_OPT_SET_MWINDOW_SIZE, window_size);
  if (error < 0) return error;
  return git_libgit2_opts(GIT_OPT_SET_MWINDOW_MAPPED_LIMIT, mapped_limit);
}
/* Whether libgit2 re-hashes every object it reads (on by default). mvc turns it off only while
   it copies its own objects into a pack and hashes them itself (PackWriter, OpenSSL). */
static inline int mvc_git_set_strict_hash_verification(int enabled) {
  return git_libgit2_opts(GIT_OPT_ENABLE_STRICT_HASH_VERIFICATION, enabled);
}
#endif
