// AVX2 loops of bf16 and f16 rounding intervals (Sources/DeltaStore/RoundingIntervals.swift), the
// refinement's most frequent pass: it runs over the whole tensor twice per least-squares pass.
//
// Exactness: the same operations, lane for lane, as the portable Swift loop: the midpoints are
// binary32 patterns half a bfloat16 step either side of the value, widened to binary64 exactly
// (`vcvtps2pd`, as Swift's `Double(Float)`), minus the widened parent (one binary64 subtraction).
// A flag per block of eight marks the blocks whose elements the Swift caller redoes by the general
// path (a zero, the largest magnitude or a non-finite value, or a non-finite parent): only those.
#include "Avx512.h"
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
    unsigned char *flagged_blocks) {
  const __m256i half_step = _mm256_set1_epi32(0x8000), magnitude = _mm256_set1_epi32(0x7FFF);
  const __m256i largest_below = _mm256_set1_epi32(0x7F7E), exponent = _mm256_set1_epi32(0x7F80);
  const __m256i zero = _mm256_setzero_si256();
  // Sixteen lanes first where the CPU has them (Avx512.c, the same values); the rest from here.
  ptrdiff_t k = mvc_avx512_in_use() ? mvc_bf16_intervals_avx512(new_bits, old_bits, count, lo, hi, flagged_blocks) : 0;
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
    flagged_blocks[k / 8] = !_mm256_testz_si256(special, special);
  }
  return k;
}

// The F16 loop (the same file's helper; the portable loop's formulas): a normal binary16 value
// widens to `sign | (magnitude << 13) + (112 << 23)`, its midpoints half a binary16 step (bit 12)
// either side; a normal or zero parent widens the same way. Others (subnormals and the smallest
// binade, whose step below differs; the largest value; infinities and NaN; a subnormal or
// non-finite parent) are flagged for the Swift caller's general path.
__attribute__((target("avx2"))) ptrdiff_t mvc_f16_intervals_avx2(
    const unsigned short *new_bits, const unsigned short *old_bits, ptrdiff_t count, double *lo, double *hi,
    unsigned char *flagged_blocks) {
  const __m256i magnitude_mask = _mm256_set1_epi32(0x7FFF), sign_mask = _mm256_set1_epi32(0x8000);
  const __m256i rebias = _mm256_set1_epi32(0x38000000), half_step = _mm256_set1_epi32(0x1000);
  const __m256i exponent_mask = _mm256_set1_epi32(0x1F), all_ones = _mm256_set1_epi32(31);
  const __m256i largest = _mm256_set1_epi32(0x7BFF), two = _mm256_set1_epi32(2), zero = _mm256_setzero_si256();
  // Sixteen lanes first where the CPU has them (Avx512.c, the same values); the rest from here.
  ptrdiff_t k = mvc_avx512_in_use() ? mvc_f16_intervals_avx512(new_bits, old_bits, count, lo, hi, flagged_blocks) : 0;
  for (; k + 8 <= count; k += 8) {
    __m256i bits = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(new_bits + k)));
    __m256i parent = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(old_bits + k)));
    __m256i magnitude = _mm256_and_si256(bits, magnitude_mask);
    __m256i wide = _mm256_or_si256(
        _mm256_slli_epi32(_mm256_and_si256(bits, sign_mask), 16),
        _mm256_add_epi32(_mm256_slli_epi32(magnitude, 13), rebias));
    // A negative value's lower midpoint is the one of larger magnitude.
    __m256i flip = _mm256_slli_epi32(_mm256_srli_epi32(bits, 15), 13);
    __m256 lower = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_sub_epi32(wide, half_step), flip));
    __m256 upper = _mm256_castsi256_ps(_mm256_sub_epi32(_mm256_add_epi32(wide, half_step), flip));
    __m256i parent_magnitude = _mm256_and_si256(parent, magnitude_mask);
    __m256i parent_zero = _mm256_cmpeq_epi32(parent_magnitude, zero);
    __m256i parent_wide = _mm256_or_si256(
        _mm256_slli_epi32(_mm256_and_si256(parent, sign_mask), 16),
        _mm256_andnot_si256(parent_zero, _mm256_add_epi32(_mm256_slli_epi32(parent_magnitude, 13), rebias)));
    __m256 old = _mm256_castsi256_ps(parent_wide);
    __m256d old_low = _mm256_cvtps_pd(_mm256_castps256_ps128(old));
    __m256d old_high = _mm256_cvtps_pd(_mm256_extractf128_ps(old, 1));
    mvc_store_differences(lo + k, lower, old_low, old_high);
    mvc_store_differences(hi + k, upper, old_low, old_high);
    // Others: exponent below 2 or all ones, the largest magnitude, or a nonzero parent whose
    // exponent is 0 (subnormal) or all ones.
    __m256i exponent = _mm256_and_si256(_mm256_srli_epi32(bits, 10), exponent_mask);
    __m256i parent_exponent = _mm256_and_si256(_mm256_srli_epi32(parent, 10), exponent_mask);
    __m256i special = _mm256_or_si256(_mm256_cmpgt_epi32(two, exponent), _mm256_cmpeq_epi32(exponent, all_ones));
    special = _mm256_or_si256(special, _mm256_cmpeq_epi32(magnitude, largest));
    __m256i parent_special =
        _mm256_or_si256(_mm256_cmpeq_epi32(parent_exponent, zero), _mm256_cmpeq_epi32(parent_exponent, all_ones));
    special = _mm256_or_si256(special, _mm256_andnot_si256(parent_zero, parent_special));
    flagged_blocks[k / 8] = !_mm256_testz_si256(special, special);
  }
  return k;
}

#else

int mvc_avx2_available(void) { return 0; }

ptrdiff_t mvc_f16_intervals_avx2(
    const unsigned short *new_bits, const unsigned short *old_bits, ptrdiff_t count, double *lo, double *hi,
    unsigned char *flagged_blocks) {
  (void)new_bits, (void)old_bits, (void)count, (void)lo, (void)hi, (void)flagged_blocks;
  return 0;
}

ptrdiff_t mvc_bf16_intervals_avx2(
    const unsigned short *new_bits, const unsigned short *old_bits, ptrdiff_t count, double *lo, double *hi,
    unsigned char *flagged_blocks) {
  (void)new_bits, (void)old_bits, (void)count, (void)lo, (void)hi, (void)flagged_blocks;
  return 0;
}

#endif
