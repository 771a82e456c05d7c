// AVX-512 loops behind the AVX2 entry points of CKernels.h (private to CKernels). Each does the
// AVX2 loop's operations, lane for lane, sixteen or eight elements at a time, and returns how many
// elements it did; the AVX2 loop then goes on from there, so the results are those of the AVX2
// (and portable) loops bit for bit.
#ifndef MVC_AVX512_H
#define MVC_AVX512_H

#include <stddef.h>

/// 1 when the AVX-512 loops run: the CPU has AVX-512F and `mvc_allow_avx512` did not turn them off.
int mvc_avx512_in_use(void);

ptrdiff_t mvc_newton_sums_avx512(
    double *p, double step, const double *c, ptrdiff_t count, const double *lo, const double *hi, double *g4,
    double *h4);

ptrdiff_t mvc_newton_column_row_avx512(
    double a, const float *lo, const float *hi, const double *moved, double *g, double *h, ptrdiff_t width);

ptrdiff_t mvc_bf16_intervals_avx512(
    const unsigned short *new_bits, const unsigned short *old_bits, ptrdiff_t count, double *lo, double *hi,
    unsigned char *flagged_blocks);

ptrdiff_t mvc_f16_intervals_avx512(
    const unsigned short *new_bits, const unsigned short *old_bits, ptrdiff_t count, double *lo, double *hi,
    unsigned char *flagged_blocks);

#endif
