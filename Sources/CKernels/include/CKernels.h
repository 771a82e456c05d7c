// Wide-vector kernels for the canonical rule (docs/FORMAT.md) and the refinement's least-squares
// start, and for the rounding intervals it fits to (DeltaStore), chosen at run time when the CPU
// has them: AVX2, and AVX-512 behind some AVX2 entry points. Each gives exactly the bytes of the
// portable Swift path.
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

/// 1 when this CPU runs the two Newton loops below (x86-64 with AVX2), else 0.
int mvc_newton_avx2_available(void);

/// The vector loop of `IntervalRefiner.newtonSums` (Apply/RefinementStart.swift), four lanes at a
/// time from the lane sums in `g4`, `h4` (updated): `p[k] += step·c[k]`, then with `d` the signed
/// distance of `p[k]` to `[lo[k], hi[k]]`, `g += c·d` and `h += c²` where `d ≠ 0`. Returns the
/// elements done (a multiple of 4); the caller sums the lanes and does the rest.
ptrdiff_t mvc_newton_sums_avx2(
    double *p, double step, const double *c, ptrdiff_t count, const double *lo, const double *hi, double *g4,
    double *h4);

/// One row of the column pass's Newton step (`IntervalRefiner.fitColumns`): for each column k,
/// `q = moved[k]·a`, `d` its signed distance to `[lo[k], hi[k]]` (Float32 offsets), `g[k] += a·d`
/// and `h[k] += a²` where `d ≠ 0`. Returns the columns done (a multiple of 4).
ptrdiff_t mvc_newton_column_row_avx2(
    double a, const float *lo, const float *hi, const double *moved, double *g, double *h, ptrdiff_t width);

/// 1 when this CPU has AVX-512F: the Newton loops and the BF16 and F16 intervals below then do
/// most of their elements sixteen or eight at a time (the same values as their AVX2 loops).
int mvc_avx512_available(void);

/// Lets the AVX-512 loops run (`allow` 1, the default) or not (0), for tests that compare the
/// AVX2 loops with the portable ones on a CPU that has both.
void mvc_allow_avx512(int allow);

/// 1 when this CPU runs `mvc_bf16_intervals_avx2` (x86-64 with AVX2), else 0.
int mvc_avx2_available(void);

/// The vector loop of `FloatConversion.roundingIntervals` for BF16 (DeltaStore/RoundingIntervals.swift),
/// eight elements at a time: `lo[k]`, `hi[k]` are the binary32 midpoints half a bfloat16 step below and
/// above `new_bits[k]`, widened, minus the widened parent `old_bits[k]`. `flagged_blocks[b]` (room for
/// `count / 8` entries) is set to 1 when an element of `8b ..< 8b + 8` needs the general path (a zero,
/// the largest magnitude or a non-finite value, or a non-finite parent), else 0. Returns the
/// elements done (a multiple of 8); the caller does the rest.
ptrdiff_t mvc_bf16_intervals_avx2(
    const unsigned short *new_bits, const unsigned short *old_bits, ptrdiff_t count, double *lo, double *hi,
    unsigned char *flagged_blocks);

/// The F16 loop of `FloatConversion.roundingIntervals` as `mvc_bf16_intervals_avx2` is the BF16
/// one; a block is flagged when an element needs the general path (a subnormal, a value of the
/// smallest binade, the largest magnitude or a non-finite value, or a subnormal or non-finite
/// parent). Returns the elements done (a multiple of 8).
ptrdiff_t mvc_f16_intervals_avx2(
    const unsigned short *new_bits, const unsigned short *old_bits, ptrdiff_t count, double *lo, double *hi,
    unsigned char *flagged_blocks);

/// The vector loop of `CanonicalRule.roundingContexts` (Apply/Canonical/RoundingContext.swift),
/// four elements at a time: `out[k]` is the context byte of the Float32 parent value `x[k]` and the
/// Float64 sum `d[k]` (`CanonicalRule.context(x:d:)`, the same bytes). Needs AVX2
/// (`mvc_avx2_available`). Returns the elements done (a multiple of 4); the caller does the rest.
ptrdiff_t mvc_rounding_contexts_avx2(const float *x, const double *d, ptrdiff_t count, unsigned char *out);

#endif
