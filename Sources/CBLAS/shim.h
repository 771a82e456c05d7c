#ifndef CBLAS_SHIM_H
#define CBLAS_SHIM_H
/* cblas.h comes from pkg-config "openblas" (the pthread variant, which also exports
   openblas_get_corename and friends); lapacke.h from liblapacke-dev, whose LAPACK
   resolves to OpenBLAS's own through Debian's alternatives. */
#include <cblas.h>
#include <lapacke.h>
#endif
