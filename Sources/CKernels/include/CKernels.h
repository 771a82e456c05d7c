// Wide-vector kernels for the canonical rule (docs/FORMAT.md), chosen at run time when the CPU has
// them. Each gives exactly the bytes of the portable Swift path; Apply is their only user.
#ifndef MVC_CKERNELS_H
#define MVC_CKERNELS_H

#include <stddef.h>

/// 1 when this CPU runs `mvc_rank_one_run_tile4_avx2` (x86-64 with AVX2 and FMA), else 0.
int mvc_rank_one_run_avx2_available(void);

/// Four rows × eight Float32 columns of `x` (rows `stride` floats apart) through `count` rank-one
/// states: x ← (float)((double)x + u[r·count + s]·vt[8s + c]) for s = 0…count−1, each state rounded
/// to Float32. `u` holds the four rows' Float64 factors (`count` per row), `vt` the tile's columns
/// (8 per state). A row whose results are all finite is stored; the others are left as they were
/// and flagged in the returned mask (bit r for row r), for the caller's element-by-element path.
unsigned mvc_rank_one_run_tile4_avx2(float *x, ptrdiff_t stride, const double *u, ptrdiff_t count, const double *vt);

#endif
