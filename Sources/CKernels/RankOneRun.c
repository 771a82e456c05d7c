// AVX2 tile of `CanonicalRule.addRankOneRunF32` (Sources/Apply/Canonical/RankOneRun.swift).
//
// Exactness: the product of two Float32 values is exact in Float64, so the fused multiply-add
// x + u·v rounds once, as the rule's multiply-then-add does; _mm256_cvtpd_ps rounds to nearest,
// ties to even (the default MXCSR, which mvc never changes), as Swift's Float(Double) does.
#include "CKernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

int mvc_rank_one_run_avx2_available(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

__attribute__((target("avx2,fma"))) static inline __m256d step(__m256d x, __m256d u, __m256d v) {
  return _mm256_cvtps_pd(_mm256_cvtpd_ps(_mm256_fmadd_pd(u, v, x)));
}

// 1 when some lane of a or b is Inf or NaN (a − a is +0 in a finite lane, NaN otherwise).
__attribute__((target("avx2,fma"))) static inline unsigned nonFinite(__m256d a, __m256d b) {
  __m256d t = _mm256_add_pd(_mm256_sub_pd(a, a), _mm256_sub_pd(b, b));
  return _mm256_movemask_pd(_mm256_cmp_pd(t, t, _CMP_UNORD_Q)) != 0;
}

__attribute__((target("avx2,fma"))) unsigned mvc_rank_one_run_tile4_avx2(
    float *x, ptrdiff_t stride, const double *u, ptrdiff_t count, const double *vt) {
  float *r0 = x, *r1 = x + stride, *r2 = x + 2 * stride, *r3 = x + 3 * stride;
  __m256d a0 = _mm256_cvtps_pd(_mm_loadu_ps(r0)), a1 = _mm256_cvtps_pd(_mm_loadu_ps(r0 + 4));
  __m256d b0 = _mm256_cvtps_pd(_mm_loadu_ps(r1)), b1 = _mm256_cvtps_pd(_mm_loadu_ps(r1 + 4));
  __m256d c0 = _mm256_cvtps_pd(_mm_loadu_ps(r2)), c1 = _mm256_cvtps_pd(_mm_loadu_ps(r2 + 4));
  __m256d d0 = _mm256_cvtps_pd(_mm_loadu_ps(r3)), d1 = _mm256_cvtps_pd(_mm_loadu_ps(r3 + 4));
  const double *ua = u, *ub = u + count, *uc = u + 2 * count, *ud = u + 3 * count;
  for (ptrdiff_t s = 0; s < count; s++) {
    __m256d v0 = _mm256_loadu_pd(vt + 8 * s), v1 = _mm256_loadu_pd(vt + 8 * s + 4);
    __m256d w = _mm256_broadcast_sd(ua + s);
    a0 = step(a0, w, v0);
    a1 = step(a1, w, v1);
    w = _mm256_broadcast_sd(ub + s);
    b0 = step(b0, w, v0);
    b1 = step(b1, w, v1);
    w = _mm256_broadcast_sd(uc + s);
    c0 = step(c0, w, v0);
    c1 = step(c1, w, v1);
    w = _mm256_broadcast_sd(ud + s);
    d0 = step(d0, w, v0);
    d1 = step(d1, w, v1);
  }
  unsigned mask = nonFinite(a0, a1) | nonFinite(b0, b1) << 1 | nonFinite(c0, c1) << 2 | nonFinite(d0, d1) << 3;
  if (!(mask & 1)) { _mm_storeu_ps(r0, _mm256_cvtpd_ps(a0)); _mm_storeu_ps(r0 + 4, _mm256_cvtpd_ps(a1)); }
  if (!(mask & 2)) { _mm_storeu_ps(r1, _mm256_cvtpd_ps(b0)); _mm_storeu_ps(r1 + 4, _mm256_cvtpd_ps(b1)); }
  if (!(mask & 4)) { _mm_storeu_ps(r2, _mm256_cvtpd_ps(c0)); _mm_storeu_ps(r2 + 4, _mm256_cvtpd_ps(c1)); }
  if (!(mask & 8)) { _mm_storeu_ps(r3, _mm256_cvtpd_ps(d0)); _mm_storeu_ps(r3 + 4, _mm256_cvtpd_ps(d1)); }
  return mask;
}

#else

int mvc_rank_one_run_avx2_available(void) { return 0; }

unsigned mvc_rank_one_run_tile4_avx2(float *x, ptrdiff_t stride, const double *u, ptrdiff_t count, const double *vt) {
  (void)x; (void)stride; (void)u; (void)count; (void)vt;
  return 15;
}

#endif
