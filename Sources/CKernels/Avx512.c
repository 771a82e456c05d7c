// AVX-512 loops of the refinement's least-squares start and of the BF16 and F16 rounding intervals (the
// hottest loops of a one-tensor commit), behind the AVX2 entry points (NewtonSums.c,
// RoundingIntervals.c), chosen at run time.
//
// Exactness: the AVX2 loops' operations, lane for lane (see those files): a multiply and an add
// stay two roundings (contraction off below), masked operations give the zeros the AVX2 blends
// give (a lane left out is 0, then added as the AVX2 loop adds its 0), and the Newton sums keep
// their four lane accumulators: each eight-element step adds its low four products, then its high
// four, which is the order of two AVX2 steps.
#include "Avx512.h"
#include "CKernels.h"

#include <stdatomic.h>

#if defined(__x86_64__)
#include <immintrin.h>

#pragma clang fp contract(off)

static atomic_int allowed = 1;

void mvc_allow_avx512(int allow) { atomic_store(&allowed, allow != 0); }

int mvc_avx512_available(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f");
}

int mvc_avx512_in_use(void) {
  // -1 until the first call looks (threads that race here store the same answer).
  static atomic_int available = -1;
  int known = atomic_load_explicit(&available, memory_order_relaxed);
  if (known < 0) {
    known = mvc_avx512_available();
    atomic_store_explicit(&available, known, memory_order_relaxed);
  }
  return known && atomic_load_explicit(&allowed, memory_order_relaxed);
}

#define AVX512 __attribute__((target("avx512f")))

// The four high lanes of `x` as their own vector.
AVX512 static inline __m256d mvc_high4(__m512d x) { return _mm512_extractf64x4_pd(x, 1); }

AVX512 ptrdiff_t mvc_newton_sums_avx512(
    double *p, double step, const double *c, ptrdiff_t count, const double *lo, const double *hi, double *g4,
    double *h4) {
  const __m512d s = _mm512_set1_pd(step), zero = _mm512_setzero_pd();
  __m256d g = _mm256_loadu_pd(g4), h = _mm256_loadu_pd(h4);
  ptrdiff_t k = 0;
  for (; k + 8 <= count; k += 8) {
    __m512d a = _mm512_loadu_pd(c + k);
    __m512d q = _mm512_add_pd(_mm512_loadu_pd(p + k), _mm512_mul_pd(s, a));
    _mm512_storeu_pd(p + k, q);
    __m512d l = _mm512_loadu_pd(lo + k), u = _mm512_loadu_pd(hi + k);
    // (q − l) unless q ≥ l (NaN keeps the difference), likewise above hi.
    __m512d below = _mm512_maskz_sub_pd(~_mm512_cmp_pd_mask(q, l, _CMP_GE_OQ), q, l);
    __m512d above = _mm512_maskz_sub_pd(~_mm512_cmp_pd_mask(q, u, _CMP_LE_OQ), q, u);
    __m512d d = _mm512_add_pd(below, above);
    __m512d gradient = _mm512_mul_pd(a, d);
    __m512d curvature = _mm512_maskz_mul_pd(_mm512_cmp_pd_mask(d, zero, _CMP_NEQ_UQ), a, a);
    g = _mm256_add_pd(g, _mm512_castpd512_pd256(gradient));
    h = _mm256_add_pd(h, _mm512_castpd512_pd256(curvature));
    g = _mm256_add_pd(g, mvc_high4(gradient));
    h = _mm256_add_pd(h, mvc_high4(curvature));
  }
  _mm256_storeu_pd(g4, g);
  _mm256_storeu_pd(h4, h);
  return k;
}

AVX512 ptrdiff_t mvc_newton_column_row_avx512(
    double a, const float *lo, const float *hi, const double *moved, double *g, double *h, ptrdiff_t width) {
  const __m512d A = _mm512_set1_pd(a), zero = _mm512_setzero_pd();
  const __m512d aa = _mm512_mul_pd(A, A);
  ptrdiff_t k = 0;
  for (; k + 8 <= width; k += 8) {
    __m512d q = _mm512_mul_pd(_mm512_loadu_pd(moved + k), A);
    __m512d l = _mm512_cvtps_pd(_mm256_loadu_ps(lo + k)), m = _mm512_cvtps_pd(_mm256_loadu_ps(hi + k));
    // (q < l ? q − l : 0) + (q > m ? q − m : 0): NaN gives 0 here.
    __m512d below = _mm512_maskz_sub_pd(_mm512_cmp_pd_mask(q, l, _CMP_LT_OQ), q, l);
    __m512d above = _mm512_maskz_sub_pd(_mm512_cmp_pd_mask(q, m, _CMP_GT_OQ), q, m);
    __m512d d = _mm512_add_pd(below, above);
    _mm512_storeu_pd(g + k, _mm512_add_pd(_mm512_loadu_pd(g + k), _mm512_mul_pd(A, d)));
    __m512d curvature = _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(d, zero, _CMP_NEQ_UQ), aa);
    _mm512_storeu_pd(h + k, _mm512_add_pd(_mm512_loadu_pd(h + k), curvature));
  }
  return k;
}

// The sixteen binary32 values of `values`, widened, minus `old_low` / `old_high`, into out[0…15].
AVX512 static inline void mvc_store_differences16(double *out, __m512 values, __m512d old_low, __m512d old_high) {
  __m256 low = _mm512_castps512_ps256(values);
  __m256 high = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(values), 1));
  _mm512_storeu_pd(out, _mm512_sub_pd(_mm512_cvtps_pd(low), old_low));
  _mm512_storeu_pd(out + 8, _mm512_sub_pd(_mm512_cvtps_pd(high), old_high));
}

AVX512 ptrdiff_t mvc_bf16_intervals_avx512(
    const unsigned short *new_bits, const unsigned short *old_bits, ptrdiff_t count, double *lo, double *hi,
    unsigned char *flagged_blocks) {
  const __m512i half_step = _mm512_set1_epi32(0x8000), magnitude = _mm512_set1_epi32(0x7FFF);
  const __m512i largest_below = _mm512_set1_epi32(0x7F7E), exponent = _mm512_set1_epi32(0x7F80);
  const __m512i zero = _mm512_setzero_si512();
  ptrdiff_t k = 0;
  for (; k + 16 <= count; k += 16) {
    __m512i bits = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(new_bits + k)));
    __m512i parent = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(old_bits + k)));
    __m512i wide = _mm512_slli_epi32(bits, 16);
    // A negative value's lower midpoint is the one of larger magnitude.
    __m512i flip = _mm512_slli_epi32(_mm512_srli_epi32(bits, 15), 16);
    __m512 lower = _mm512_castsi512_ps(_mm512_add_epi32(_mm512_sub_epi32(wide, half_step), flip));
    __m512 upper = _mm512_castsi512_ps(_mm512_sub_epi32(_mm512_add_epi32(wide, half_step), flip));
    __m512 old = _mm512_castsi512_ps(_mm512_slli_epi32(parent, 16));
    __m512d old_low = _mm512_cvtps_pd(_mm512_castps512_ps256(old));
    __m512d old_high = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(old), 1)));
    mvc_store_differences16(lo + k, lower, old_low, old_high);
    mvc_store_differences16(hi + k, upper, old_low, old_high);
    // Others: |bits| is 0 or at least 0x7F7F, or the parent's exponent is all ones.
    __m512i m = _mm512_and_si512(bits, magnitude);
    __mmask16 special = _mm512_cmpeq_epi32_mask(m, zero) | _mm512_cmpgt_epi32_mask(m, largest_below);
    special |= _mm512_cmpeq_epi32_mask(_mm512_and_si512(parent, exponent), exponent);
    // The flags of the two blocks of eight, as the AVX2 loop sets them.
    flagged_blocks[k / 8] = (special & 0xFF) != 0;
    flagged_blocks[k / 8 + 1] = (special >> 8) != 0;
  }
  return k;
}

AVX512 ptrdiff_t mvc_f16_intervals_avx512(
    const unsigned short *new_bits, const unsigned short *old_bits, ptrdiff_t count, double *lo, double *hi,
    unsigned char *flagged_blocks) {
  const __m512i magnitude_mask = _mm512_set1_epi32(0x7FFF), sign_mask = _mm512_set1_epi32(0x8000);
  const __m512i rebias = _mm512_set1_epi32(0x38000000), half_step = _mm512_set1_epi32(0x1000);
  const __m512i exponent_mask = _mm512_set1_epi32(0x1F), all_ones = _mm512_set1_epi32(31);
  const __m512i largest = _mm512_set1_epi32(0x7BFF), two = _mm512_set1_epi32(2), zero = _mm512_setzero_si512();
  ptrdiff_t k = 0;
  for (; k + 16 <= count; k += 16) {
    __m512i bits = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(new_bits + k)));
    __m512i parent = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(old_bits + k)));
    __m512i magnitude = _mm512_and_si512(bits, magnitude_mask);
    __m512i wide = _mm512_or_si512(
        _mm512_slli_epi32(_mm512_and_si512(bits, sign_mask), 16),
        _mm512_add_epi32(_mm512_slli_epi32(magnitude, 13), rebias));
    // A negative value's lower midpoint is the one of larger magnitude.
    __m512i flip = _mm512_slli_epi32(_mm512_srli_epi32(bits, 15), 13);
    __m512 lower = _mm512_castsi512_ps(_mm512_add_epi32(_mm512_sub_epi32(wide, half_step), flip));
    __m512 upper = _mm512_castsi512_ps(_mm512_sub_epi32(_mm512_add_epi32(wide, half_step), flip));
    __m512i parent_magnitude = _mm512_and_si512(parent, magnitude_mask);
    __mmask16 parent_zero = _mm512_cmpeq_epi32_mask(parent_magnitude, zero);
    __m512i parent_wide = _mm512_or_si512(
        _mm512_slli_epi32(_mm512_and_si512(parent, sign_mask), 16),
        _mm512_maskz_add_epi32(~parent_zero, _mm512_slli_epi32(parent_magnitude, 13), rebias));
    __m512 old = _mm512_castsi512_ps(parent_wide);
    __m512d old_low = _mm512_cvtps_pd(_mm512_castps512_ps256(old));
    __m512d old_high = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(old), 1)));
    mvc_store_differences16(lo + k, lower, old_low, old_high);
    mvc_store_differences16(hi + k, upper, old_low, old_high);
    // Others: exponent below 2 or all ones, the largest magnitude, or a nonzero parent whose
    // exponent is 0 (subnormal) or all ones.
    __m512i exponent = _mm512_and_si512(_mm512_srli_epi32(bits, 10), exponent_mask);
    __m512i parent_exponent = _mm512_and_si512(_mm512_srli_epi32(parent, 10), exponent_mask);
    __mmask16 special = _mm512_cmpgt_epi32_mask(two, exponent) | _mm512_cmpeq_epi32_mask(exponent, all_ones);
    special |= _mm512_cmpeq_epi32_mask(magnitude, largest);
    __mmask16 parent_special =
        _mm512_cmpeq_epi32_mask(parent_exponent, zero) | _mm512_cmpeq_epi32_mask(parent_exponent, all_ones);
    special |= parent_special & (__mmask16)~parent_zero;
    flagged_blocks[k / 8] = (special & 0xFF) != 0;
    flagged_blocks[k / 8 + 1] = (special >> 8) != 0;
  }
  return k;
}

#else

// Elsewhere only the public functions: the loops are called from the AVX2 loops alone, which are
// x86 code too.
void mvc_allow_avx512(int allow) { (void)allow; }
int mvc_avx512_available(void) { return 0; }

#endif
