// AVX2 loops of the refinement's least-squares start (Sources/Apply/RefinementStart.swift).
//
// Exactness: the same IEEE operations, lane for lane, as the portable Swift loops (which run on
// two-lane SSE2): a multiply and an add stay two roundings (contraction into FMA is off below),
// and each select matches the Swift comparison's handling of NaN (ordered comparisons, false for
// NaN). The Swift caller does the horizontal sums and the tails, so the results are bit for bit
// those of the portable path.
#include "Avx512.h"
#include "CKernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

#pragma clang fp contract(off)

int mvc_newton_avx2_available(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2");
}

__attribute__((target("avx2"))) ptrdiff_t mvc_newton_sums_avx2(
    double *p, double step, const double *c, ptrdiff_t count, const double *lo, const double *hi, double *g4,
    double *h4) {
  // Eight lanes first where the CPU has them (Avx512.c, the same sums); the rest from here.
  ptrdiff_t k = mvc_avx512_in_use() ? mvc_newton_sums_avx512(p, step, c, count, lo, hi, g4, h4) : 0;
  const __m256d s = _mm256_set1_pd(step), zero = _mm256_setzero_pd();
  __m256d g = _mm256_loadu_pd(g4), h = _mm256_loadu_pd(h4);
  for (; k + 4 <= count; k += 4) {
    __m256d a = _mm256_loadu_pd(c + k);
    __m256d q = _mm256_add_pd(_mm256_loadu_pd(p + k), _mm256_mul_pd(s, a));
    _mm256_storeu_pd(p + k, q);
    __m256d l = _mm256_loadu_pd(lo + k), u = _mm256_loadu_pd(hi + k);
    // (q − l) where q < l (not q ≥ l: NaN keeps the difference), likewise above hi.
    __m256d below = _mm256_blendv_pd(_mm256_sub_pd(q, l), zero, _mm256_cmp_pd(q, l, _CMP_GE_OQ));
    __m256d above = _mm256_blendv_pd(_mm256_sub_pd(q, u), zero, _mm256_cmp_pd(q, u, _CMP_LE_OQ));
    __m256d d = _mm256_add_pd(below, above);
    g = _mm256_add_pd(g, _mm256_mul_pd(a, d));
    h = _mm256_add_pd(h, _mm256_blendv_pd(_mm256_mul_pd(a, a), zero, _mm256_cmp_pd(d, zero, _CMP_EQ_OQ)));
  }
  _mm256_storeu_pd(g4, g);
  _mm256_storeu_pd(h4, h);
  return k;
}

__attribute__((target("avx2"))) ptrdiff_t mvc_newton_column_row_avx2(
    double a, const float *lo, const float *hi, const double *moved, double *g, double *h, ptrdiff_t width) {
  ptrdiff_t k = mvc_avx512_in_use() ? mvc_newton_column_row_avx512(a, lo, hi, moved, g, h, width) : 0;
  const __m256d A = _mm256_set1_pd(a), zero = _mm256_setzero_pd();
  const __m256d aa = _mm256_mul_pd(A, A);
  for (; k + 4 <= width; k += 4) {
    __m256d q = _mm256_mul_pd(_mm256_loadu_pd(moved + k), A);
    __m256d l = _mm256_cvtps_pd(_mm_loadu_ps(lo + k)), m = _mm256_cvtps_pd(_mm_loadu_ps(hi + k));
    // (q < l ? q − l : 0) + (q > m ? q − m : 0): NaN gives 0 here.
    __m256d below = _mm256_blendv_pd(zero, _mm256_sub_pd(q, l), _mm256_cmp_pd(q, l, _CMP_LT_OQ));
    __m256d above = _mm256_blendv_pd(zero, _mm256_sub_pd(q, m), _mm256_cmp_pd(q, m, _CMP_GT_OQ));
    __m256d d = _mm256_add_pd(below, above);
    _mm256_storeu_pd(g + k, _mm256_add_pd(_mm256_loadu_pd(g + k), _mm256_mul_pd(A, d)));
    __m256d curvature = _mm256_blendv_pd(aa, zero, _mm256_cmp_pd(d, zero, _CMP_EQ_OQ));
    _mm256_storeu_pd(h + k, _mm256_add_pd(_mm256_loadu_pd(h + k), curvature));
  }
  return k;
}

#else

int mvc_newton_avx2_available(void) { return 0; }

ptrdiff_t mvc_newton_sums_avx2(
    double *p, double step, const double *c, ptrdiff_t count, const double *lo, const double *hi, double *g4,
    double *h4) {
  return 0;
}

ptrdiff_t mvc_newton_column_row_avx2(
    double a, const float *lo, const float *hi, const double *moved, double *g, double *h, ptrdiff_t width) {
  return 0;
}

#endif
