// AVX2 loop of the F32 rounding contexts (Sources/Apply/Canonical/RoundingContext.swift): the
// context byte a conditioned residual is coded against, computed at every commit and checkout
// of an F32 low-rank state, for every element of the tensor.
//
// Exactness: the bytes are part of the format (a decoder that computes another context decodes
// another residual), so each lane does the portable loop's IEEE operations in its order: the
// widening and the sum (one rounding), the narrowing to binary32 (round to nearest even, as
// Swift's `Float(Double)`), the exact difference, one multiplication and one subtraction (two
// roundings: contraction into FMA is off below), truncating conversions, and ordered
// comparisons, false for NaN as Swift's. The exponent arithmetic is done on 32-bit integers,
// where its values (within ±1152) are the same as on Swift's `Int`.
#include "CKernels.h"

#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>

#pragma clang fp contract(off)

// The low 32 bits of each 64-bit lane, in order.
__attribute__((target("avx2"))) static inline __m128i mvc_low_dwords(__m256i lanes) {
  return _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(lanes, _mm256_setr_epi32(0, 2, 4, 6, 0, 0, 0, 0)));
}

// 2^k as binary64 for each 32-bit k, clamped to the normal exponents (−1022…1023).
__attribute__((target("avx2"))) static inline __m256d mvc_powers_of_two(__m128i k) {
  __m128i clamped = _mm_min_epi32(_mm_max_epi32(k, _mm_set1_epi32(-1022)), _mm_set1_epi32(1023));
  __m256i biased = _mm256_cvtepi32_epi64(_mm_add_epi32(clamped, _mm_set1_epi32(1023)));
  return _mm256_castsi256_pd(_mm256_slli_epi64(biased, 52));
}

__attribute__((target("avx2"))) ptrdiff_t mvc_rounding_contexts_avx2(
    const float *x, const double *d, ptrdiff_t count, unsigned char *out) {
  const __m256d zero = _mm256_setzero_pd(), two = _mm256_set1_pd(2), sixteen = _mm256_set1_pd(16);
  const __m256d thirty_two = _mm256_set1_pd(32);
  const __m256d magnitude = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7FFFFFFFFFFFFFFFLL));
  const __m128i bytes = _mm_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  ptrdiff_t k = 0;
  for (; k + 4 <= count; k += 4) {
    __m256d sum = _mm256_loadu_pd(d + k);
    __m256d y = _mm256_add_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + k)), sum);
    __m128 r = _mm256_cvtpd_ps(y);
    __m256d e = _mm256_sub_pd(y, _mm256_cvtps_pd(r));
    // E_r = max(biased exponent of r, 1); e_d = biased exponent of the sum − 1023.
    __m128i er = _mm_max_epi32(
        _mm_and_si128(_mm_srli_epi32(_mm_castps_si128(r), 23), _mm_set1_epi32(0xFF)), _mm_set1_epi32(1));
    __m256i sum_exponent = _mm256_and_si256(_mm256_srli_epi64(_mm256_castpd_si256(sum), 52), _mm256_set1_epi64x(0x7FF));
    __m128i ed = _mm_sub_epi32(mvc_low_dwords(sum_exponent), _mm_set1_epi32(1023));
    __m256d half_spacing = mvc_powers_of_two(_mm_sub_epi32(_mm_sub_epi32(er, _mm_set1_epi32(128)), ed));
    __m256d per_ulp = mvc_powers_of_two(_mm_sub_epi32(_mm_set1_epi32(23), ed));
    __m256d q = _mm256_sub_pd(half_spacing, _mm256_mul_pd(_mm256_and_pd(e, magnitude), per_ulp));
    // t = q in [0, 16) ? q : 16 (NaN: 16).
    __m256d in_range = _mm256_and_pd(_mm256_cmp_pd(q, zero, _CMP_GE_OQ), _mm256_cmp_pd(q, sixteen, _CMP_LT_OQ));
    __m256d t = _mm256_blendv_pd(sixteen, q, in_range);
    __m128i fine = _mm_add_epi32(_mm256_cvttpd_epi32(_mm256_mul_pd(t, thirty_two)), _mm_set1_epi32(1));
    __m128i coarse = _mm_add_epi32(_mm256_cvttpd_epi32(t), _mm_set1_epi32(63));
    __m128i below_two = mvc_low_dwords(_mm256_castpd_si256(_mm256_cmp_pd(t, two, _CMP_LT_OQ)));
    __m128i below_sixteen = mvc_low_dwords(_mm256_castpd_si256(_mm256_cmp_pd(t, sixteen, _CMP_LT_OQ)));
    __m128i bucket = _mm_blendv_epi8(_mm_and_si128(coarse, below_sixteen), fine, below_two);
    // The down bit unless e ≥ 0 (NaN: set).
    __m128i up = mvc_low_dwords(_mm256_castpd_si256(_mm256_cmp_pd(e, zero, _CMP_GE_OQ)));
    __m128i code = _mm_or_si128(bucket, _mm_andnot_si128(up, _mm_set1_epi32(0x80)));
    int packed = _mm_cvtsi128_si32(_mm_shuffle_epi8(code, bytes));
    memcpy(out + k, &packed, 4);
  }
  return k;
}

#else

ptrdiff_t mvc_rounding_contexts_avx2(const float *x, const double *d, ptrdiff_t count, unsigned char *out) {
  (void)x, (void)d, (void)count, (void)out;
  return 0;
}

#endif
