// AVX2 loop of bf16 rounding intervals (Sources/DeltaStore/RoundingIntervals.swift), the
// refinement's most frequent pass: it runs over the whole tensor twice per least-squares pass.
//
// Exactness: the same operations, lane for lane, as the portable Swift loop: the midpoints are
// binary32 patterns half a bfloat16 step either side of the value, widened to binary64 exactly
// (`vcvtps2pd`, as Swift's `Double(Float)`), minus the widened parent (one binary64 subtraction).
// The flag marks the elements the Swift caller redoes by the general path (a zero, the largest
// magnitude or a non-finite value, or a non-finite parent), as its own loop does.
#include "CKernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

#pragma clang fp contract(off)

int mvc_avx2_available(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2");
}

__attribute__((target("avx2"))) static inline void mvc_store_differences(
    double *out, __m256 values, __m256d old_low, __m256d old_high) {
  _mm256_storeu_pd(out, _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(values)), old_low));
  _mm256_storeu_pd(out + 4, _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(values, 1)), old_high));
}

__attribute__((target("avx2"))) ptrdiff_t mvc_bf16_intervals_avx2(
    const unsigned short *new_bits, const unsigned short *old_bits, ptrdiff_t count, double *lo, double *hi,
    int *others) {
  const __m256i half_step = _mm256_set1_epi32(0x8000), magnitude = _mm256_set1_epi32(0x7FFF);
  const __m256i largest_below = _mm256_set1_epi32(0x7F7E), exponent = _mm256_set1_epi32(0x7F80);
  const __m256i zero = _mm256_setzero_si256();
  __m256i flagged = zero;
  ptrdiff_t k = 0;
  for (; k + 8 <= count; k += 8) {
    __m256i bits = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(new_bits + k)));
    __m256i parent = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(old_bits + k)));
    __m256i wide = _mm256_slli_epi32(bits, 16);
    // A negative value's lower midpoint is the one of larger magnitude.
    __m256i flip = _mm256_slli_epi32(_mm256_srli_epi32(bits, 15), 16);
    __m256 lower = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_sub_epi32(wide, half_step), flip));
    __m256 upper = _mm256_castsi256_ps(_mm256_sub_epi32(_mm256_add_epi32(wide, half_step), flip));
    __m256 old = _mm256_castsi256_ps(_mm256_slli_epi32(parent, 16));
    __m256d old_low = _mm256_cvtps_pd(_mm256_castps256_ps128(old));
    __m256d old_high = _mm256_cvtps_pd(_mm256_extractf128_ps(old, 1));
    mvc_store_differences(lo + k, lower, old_low, old_high);
    mvc_store_differences(hi + k, upper, old_low, old_high);
    // Others: |bits| is 0 or at least 0x7F7F, or the parent's exponent is all ones.
    __m256i m = _mm256_and_si256(bits, magnitude);
    __m256i special = _mm256_or_si256(_mm256_cmpeq_epi32(m, zero), _mm256_cmpgt_epi32(m, largest_below));
    special = _mm256_or_si256(special, _mm256_cmpeq_epi32(_mm256_and_si256(parent, exponent), exponent));
    flagged = _mm256_or_si256(flagged, special);
  }
  *others = !_mm256_testz_si256(flagged, flagged);
  return k;
}

#else

int mvc_avx2_available(void) { return 0; }

ptrdiff_t mvc_bf16_intervals_avx2(
    const unsigned short *new_bits, const unsigned short *old_bits, ptrdiff_t count, double *lo, double *hi,
    int *others) {
  (void)new_bits, (void)old_bits, (void)count, (void)lo, (void)hi;
  *others = 0;
  return 0;
}

#endif
