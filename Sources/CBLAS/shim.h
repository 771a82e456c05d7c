#ifndef CBLAS_SHIM_H
#define CBLAS_SHIM_H
/* cblas.h comes from pkg-config "openblas" (the pthread variant, which also exports
   openblas_get_corename and friends); lapacke.h from liblapacke-dev, whose LAPACK
   resolves to OpenBLAS's own through Debian's alternatives. */
#include <cblas.h>
#include <lapacke.h>

/* OpenBLAS's pthread server (driver/others/blas_server.c): stops its worker threads; the next
   threaded BLAS call starts them again. Exported by libopenblas but declared in no header. */
int blas_thread_shutdown_(void);
#endif
