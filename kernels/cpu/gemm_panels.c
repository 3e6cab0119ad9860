// gemm_panels.c: C = alpha · A · Bᵀ in fp32 against a B packed once into panels, for a GEMM
// whose B is reused by many calls with different A (attention's keys and values, against every
// query block). This file is compiled with -mavx512f and called only where the CPU has AVX-512
// (dsv3_cpu_gemm_panels_supported, gemm.c).
//
// B (N, K) is packed into ceil(N / NR) panels of (K, NR): panel p holds rows [p·NR, (p + 1)·NR)
// of B transposed, each k's NR values side by side (zeros past N), from B's rows (row j at
// b + j·ldb: 16 × 16 blocks transposed in registers) or from Bᵀ's (row k at bt + k·ld: copies). The
// micro-kernel keeps an MR × NR tile of C in 16 zmm registers and, per k, broadcasts each of its
// MR rows' A value (read in place: A is not packed) and adds it times the panel's NR values. An
// element of C is alpha times its K products summed in order of k by FMAs from zero, whatever
// its tile and the call's M: every call that computes it gives the same bits.
#include <immintrin.h>
#include <stdint.h>

#include "kernels/cpu/avx512.h"
#include "kernels/cpu/cpu.h"

enum {
    MR = 8,  // rows of the micro-kernel's tile
    NR = 32, // columns of the tile (rows of B): two zmm of fp32
    LANES = 16,
};

_Static_assert((int)NR == (int)DSV3_CPU_PANEL_WIDTH, "panel width");

static int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }

void dsv3_cpu_pack_panels(float *panels, const float *b, int64_t ldb, int64_t N, int64_t K) {
    // 16 rows × 16 k at a time: loaded as rows, stored as k after a transpose.
    for (int64_t j0 = 0; j0 < N; j0 += LANES) {
        float *dst = panels + j0 / NR * NR * K + j0 % NR; // lane 0 of k 0 in the panel
        for (int64_t k0 = 0; k0 < K; k0 += LANES) {
            const __mmask16 ks = dsv3_avx512_lanes_mask(K - k0);
            __m512i r[LANES];
            for (int64_t j = 0; j < LANES; j++)
                r[j] = j0 + j < N
                           ? _mm512_castps_si512(_mm512_maskz_loadu_ps(ks, b + (j0 + j) * ldb + k0))
                           : _mm512_setzero_si512();
            dsv3_avx512_transpose_16x16(r);
            for (int64_t m = 0; m < LANES && k0 + m < K; m++)
                _mm512_storeu_ps(dst + (k0 + m) * NR, _mm512_castsi512_ps(r[m]));
        }
    }
    // A last panel's rows past N (whole groups of 16) are zero too.
    for (int64_t j0 = (N + LANES - 1) / LANES * LANES; j0 % NR != 0; j0 += LANES)
        for (int64_t k = 0; k < K; k++)
            _mm512_storeu_ps(panels + j0 / NR * NR * K + j0 % NR + k * NR, _mm512_setzero_ps());
}

void dsv3_cpu_pack_panels_columns(float *panels, const float *bt, int64_t ld, int64_t N,
                                  int64_t K) {
    for (int64_t p0 = 0; p0 < N; p0 += NR) {
        const __mmask16 lo = dsv3_avx512_lanes_mask(N - p0),
                        hi = dsv3_avx512_lanes_mask(N - p0 - LANES);
        for (int64_t k = 0; k < K; k++) {
            const float *x = bt + k * ld + p0;
            float *dst = panels + p0 * K + k * NR;
            _mm512_storeu_ps(dst, _mm512_maskz_loadu_ps(lo, x));
            _mm512_storeu_ps(dst + LANES, _mm512_maskz_loadu_ps(hi, x + LANES));
        }
    }
}

// C rows [0, rows) (rows <= MR) from columns [c0, c1) of the panel's NR (0 <= c0 < c1 <= NR),
// column c0 at c, over K k: set to alpha · sum, or (accumulate) alpha · sum added. Rows past
// `rows` repeat the last one, so that every A read stays inside A.
static void micro_kernel(int64_t K, float alpha, const float *a, int64_t lda, int64_t rows,
                         const float *restrict panel, float *c, int64_t ldc, int64_t c0, int64_t c1,
                         int accumulate) {
    const float *row[MR];
    for (int i = 0; i < MR; i++)
        row[i] = a + min_i64(i, rows - 1) * lda;
    __m512 lo[MR], hi[MR]; // columns 0-15 and 16-31 of each row
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
        lo[i] = _mm512_setzero_ps();
        hi[i] = _mm512_setzero_ps();
    }
    for (int64_t k = 0; k < K; k++) {
        const __m512 b_lo = _mm512_loadu_ps(panel + k * NR);
        const __m512 b_hi = _mm512_loadu_ps(panel + k * NR + LANES);
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            const __m512 ai = _mm512_set1_ps(row[i][k]);
            lo[i] = _mm512_fmadd_ps(ai, b_lo, lo[i]);
            hi[i] = _mm512_fmadd_ps(ai, b_hi, hi[i]);
        }
    }
    // Columns c0, c0 + 1, ... move to lanes 0, 1, ... (VPERMT2PS over the row's two registers).
    const __m512i shift_lo =
        _mm512_add_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                         _mm512_set1_epi32((int)c0));
    const __m512i shift_hi = _mm512_add_epi32(shift_lo, _mm512_set1_epi32(LANES));
    const __mmask16 keep_lo = dsv3_avx512_lanes_mask(c1 - c0),
                    keep_hi = dsv3_avx512_lanes_mask(c1 - c0 - LANES);
    const __m512 va = _mm512_set1_ps(alpha);
    for (int64_t i = 0; i < rows; i++) {
        float *ci = c + i * ldc;
        __m512 out_lo = _mm512_mul_ps(va, lo[i]), out_hi = _mm512_mul_ps(va, hi[i]);
        if (c0 > 0) {
            const __m512 x = out_lo;
            out_lo = _mm512_permutex2var_ps(x, shift_lo, out_hi);
            out_hi = _mm512_permutex2var_ps(x, shift_hi, out_hi);
        }
        if (accumulate) {
            out_lo = _mm512_add_ps(_mm512_maskz_loadu_ps(keep_lo, ci), out_lo);
            out_hi = _mm512_add_ps(_mm512_maskz_loadu_ps(keep_hi, ci + LANES), out_hi);
        }
        _mm512_mask_storeu_ps(ci, keep_lo, out_lo);
        _mm512_mask_storeu_ps(ci + LANES, keep_hi, out_hi);
    }
}

void dsv3_cpu_gemm_panels_run(int64_t M, int64_t n0, int64_t n1, int64_t k0, int64_t k1,
                              float alpha, const float *a, int64_t lda, const float *panels,
                              int64_t K, float *c, int64_t ldc, int accumulate) {
    for (int64_t p0 = n0 / NR * NR; p0 < n1; p0 += NR) {
        const int64_t c0 = p0 < n0 ? n0 - p0 : 0, c1 = min_i64(NR, n1 - p0);
        for (int64_t i0 = 0; i0 < M; i0 += MR)
            micro_kernel(k1 - k0, alpha, a + i0 * lda, lda, min_i64(MR, M - i0),
                         panels + p0 * K + k0 * NR, c + i0 * ldc + (p0 + c0 - n0), ldc, c0, c1,
                         accumulate);
    }
}
