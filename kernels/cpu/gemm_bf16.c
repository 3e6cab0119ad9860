// gemm_bf16.c: C (M, N) = alpha · op(A) (M, K) · op(B) (K, N) + beta · C on row-major fp32
// matrices, with A and B rounded to bf16 (to nearest even) and the products summed in fp32: the
// GEMM of the fast CPU backend when ctx->matmul_dtype is DSV3_TENSOR_BF16 on a CPU with
// AVX512-BF16. This file is compiled with -mavx512bf16 and called only where the CPU has it
// (gemm.c decides).
//
// Blocking as Goto's and BLIS's. For each NC columns of op(B) and KC of K, op(B) is packed once
// into bf16 panels of NR columns, each k pair of a column as two adjacent bf16 (the operand
// layout of VDPBF16PS); for each MC rows of op(A), op(A) is packed into panels of MR rows, each
// row's k pair as one 32-bit word. The micro-kernel keeps an MR × NR tile of C in 28 zmm
// registers and, per k pair, broadcasts each row's word and adds both products of every element
// in one VDPBF16PS (fp32 products of bf16 values are exact; VDPBF16PS treats denormal inputs and
// results as zero). Packing pads the edges with zeros, so partial tiles compute full ones and
// store only their rows and columns.
//
// An element of C sums its K products in order of k pairs, KC at a time (the first slice with
// beta, the others added), whatever the split of M and N: the result does not depend on the
// number of threads. Called outside an OpenMP parallel region with more than one thread, the
// larger of M and N is split between the threads; inside one, it runs on the calling thread.
// The packed panels live in thread-local buffers of fixed size, as a BLAS library keeps its own.
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>

#include "kernels/cpu/avx512.h"
#include "kernels/cpu/bf16.h"
#include "kernels/cpu/cpu.h"

enum {
    MR = 14,   // rows of the micro-kernel's tile
    NR = 32,   // columns of the tile: two zmm of fp32
    KC = 256,  // k per packed slice (even): an A panel and a B panel sit in L1
    MC = 112,  // rows of A packed at once (a multiple of MR): the A block sits in L2
    NC = 1024, // columns of B packed at once (a multiple of NR)
    LANES = 16,
};

// Multiply-adds below which a GEMM stays on one thread.
static const int64_t GEMM_PARALLEL_MIN_WORK = 1 << 21;

_Static_assert(MC % MR == 0 && NC % NR == 0 && KC % 2 == 0, "blocking");

static _Thread_local _Alignas(64) uint32_t packed_a[MC * KC / 2]; // (MC / MR, KC / 2, MR)
static _Thread_local _Alignas(64) uint16_t packed_b[NC * KC];     // (NC / NR, KC / 2, NR, 2)

typedef struct {
    int trans_a, trans_b;
    int64_t M, N, K;
    float alpha, beta;
    const float *A, *B;
    int64_t lda, ldb;
    float *C;
    int64_t ldc;
} Gemm;

static int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }

// The bf16 pair (x at k, y at k + 1) as one word: x in the low half, as VDPBF16PS pairs them.
static inline uint32_t pair(float x, float y) {
    return (uint32_t)dsv3_bf16_from_f32(x) | (uint32_t)dsv3_bf16_from_f32(y) << DSV3_BF16_SHIFT;
}

// Pairs along memory, for `lines` (≤ 16) lines of x (line c at x + c · ld, kc floats each):
// dst[p · stride + c] = pair(line c [2p], line c [2p + 1]) for the ceil(kc / 2) pairs, the last
// one (line c [kc − 1], 0) when kc is odd, and 0 for lines c in [lines, width). 16 pairs of 16
// lines at a time: VCVTNE2PS2BF16 puts the bf16 of its second operand's 16 floats in the low
// half, so each word of a line's register is a pair; a 16 × 16 transpose turns the lines'
// registers into one register per pair.
static void pairs_along(uint32_t *dst, int64_t stride, int64_t width, const float *x, int64_t ld,
                        int64_t lines, int64_t kc) {
    int64_t p = 0;
    for (; 2 * p + 2 * LANES <= kc; p += LANES) {
        __m512i r[LANES];
        for (int64_t c = 0; c < LANES; c++)
            r[c] = c < lines
                       ? (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + c * ld + 2 * p + LANES),
                                                      _mm512_loadu_ps(x + c * ld + 2 * p))
                       : _mm512_setzero_si512();
        dsv3_avx512_transpose_16x16(r);
        for (int64_t q = 0; q < LANES; q++)
            _mm512_mask_storeu_epi32(dst + (p + q) * stride, dsv3_avx512_lanes_mask(width), r[q]);
    }
    for (int64_t c = 0; c < width; c++)
        for (int64_t q = p; 2 * q < kc; q++)
            dst[q * stride + c] =
                c >= lines ? 0
                           : pair(x[c * ld + 2 * q], 2 * q + 1 < kc ? x[c * ld + 2 * q + 1] : 0.0f);
}

// Pairs across two rows: the words pair(x0[c], x1[c]) for the 16 lanes c of `mask` (0 elsewhere);
// x1 NULL stands for a row of zeros (the odd k at the end of K).
static inline __m512i pairs_across(const float *x0, const float *x1, __mmask16 mask) {
    const __m512i lo =
        _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, x0)));
    if (x1 == NULL) return lo;
    const __m512i hi =
        _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, x1)));
    return _mm512_or_si512(lo, _mm512_slli_epi32(hi, DSV3_BF16_SHIFT));
}

// Rows [i0, i0 + mc) × k [k0, k0 + kc) of op(A) into packed_a; rows past mc are zero.
static void pack_a(const Gemm *g, int64_t i0, int64_t mc, int64_t k0, int64_t kc) {
    const int64_t pairs = (kc + 1) / 2;
    for (int64_t p0 = 0; p0 < mc; p0 += MR) {
        uint32_t *panel = packed_a + p0 * pairs; // (pairs, MR)
        const int64_t rows = min_i64(MR, mc - p0);
        if (g->trans_a) { // op(A)[i, k] = A[k, i]: the panel's rows lie along memory
            const __mmask16 mask = dsv3_avx512_lanes_mask(rows);
            for (int64_t p = 0; p < pairs; p++) {
                const float *x0 = g->A + (k0 + 2 * p) * g->lda + i0 + p0;
                const __m512i w = pairs_across(x0, 2 * p + 1 < kc ? x0 + g->lda : NULL, mask);
                _mm512_mask_storeu_epi32(panel + p * MR, dsv3_avx512_lanes_mask(MR), w);
            }
            continue;
        }
        pairs_along(panel, MR, MR, g->A + (i0 + p0) * g->lda + k0, g->lda, rows, kc);
    }
}

// k [k0, k0 + kc) × columns [j0, j0 + nc) of op(B) into packed_b; columns past nc are zero.
static void pack_b(const Gemm *g, int64_t k0, int64_t kc, int64_t j0, int64_t nc) {
    const int64_t pairs = (kc + 1) / 2;
    for (int64_t q0 = 0; q0 < nc; q0 += NR) {
        uint32_t *panel = (uint32_t *)(packed_b + q0 * 2 * pairs); // (pairs, NR)
        const int64_t cols = min_i64(NR, nc - q0);
        if (!g->trans_b) { // op(B)[k, j] = B[k, j]: the panel's columns lie along memory
            for (int64_t p = 0; p < pairs; p++) {
                const float *x0 = g->B + (k0 + 2 * p) * g->ldb + j0 + q0;
                const float *x1 = 2 * p + 1 < kc ? x0 + g->ldb : NULL;
                _mm512_storeu_si512(panel + p * NR,
                                    pairs_across(x0, x1, dsv3_avx512_lanes_mask(cols)));
                _mm512_storeu_si512(panel + p * NR + LANES,
                                    pairs_across(x0 + LANES, x1 ? x1 + LANES : NULL,
                                                 dsv3_avx512_lanes_mask(cols - LANES)));
            }
            continue;
        }
        for (int64_t c0 = 0; c0 < NR; c0 += LANES)
            pairs_along(panel + c0, NR, LANES, g->B + (j0 + q0 + c0) * g->ldb + k0, g->ldb,
                        cols - c0, kc);
    }
}

// The tile C[rows, cols] (rows <= MR, cols <= NR) from `pairs` k pairs of an A panel and a B
// panel: alpha · sum + beta · C on the first slice of K (`first`), C + alpha · sum after.
static void micro_kernel(int64_t pairs, const uint32_t *restrict a, const uint16_t *restrict b,
                         float *c, int64_t ldc, int64_t rows, int64_t cols, float alpha, float beta,
                         int first) {
    __m512 lo[MR], hi[MR]; // columns 0-15 and 16-31 of each row
#pragma GCC unroll 14
    for (int r = 0; r < MR; r++) {
        lo[r] = _mm512_setzero_ps();
        hi[r] = _mm512_setzero_ps();
    }
    for (int64_t p = 0; p < pairs; p++) {
        const __m512bh b_lo = (__m512bh)_mm512_loadu_si512(b);
        const __m512bh b_hi = (__m512bh)_mm512_loadu_si512(b + 2 * LANES);
#pragma GCC unroll 14
        for (int r = 0; r < MR; r++) {
            const __m512bh ar = (__m512bh)_mm512_set1_epi32((int32_t)a[r]);
            lo[r] = _mm512_dpbf16_ps(lo[r], ar, b_lo);
            hi[r] = _mm512_dpbf16_ps(hi[r], ar, b_hi);
        }
        a += MR;
        b += 2 * NR;
    }
    const __mmask16 mask_lo = cols >= LANES ? (__mmask16)0xFFFF : (__mmask16)((1u << cols) - 1);
    const __mmask16 mask_hi = cols >= NR     ? (__mmask16)0xFFFF
                              : cols > LANES ? (__mmask16)((1u << (cols - LANES)) - 1)
                                             : (__mmask16)0;
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (int r = 0; r < rows; r++) {
        float *row = c + r * ldc;
        __m512 out_lo = _mm512_mul_ps(va, lo[r]), out_hi = _mm512_mul_ps(va, hi[r]);
        if (!first) {
            out_lo = _mm512_add_ps(_mm512_maskz_loadu_ps(mask_lo, row), out_lo);
            out_hi = _mm512_add_ps(_mm512_maskz_loadu_ps(mask_hi, row + LANES), out_hi);
        } else if (beta != 0.0f) { // beta 0: C is not read, as BLAS does
            out_lo = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask_lo, row), out_lo);
            out_hi = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask_hi, row + LANES), out_hi);
        }
        _mm512_mask_storeu_ps(row, mask_lo, out_lo);
        _mm512_mask_storeu_ps(row + LANES, mask_hi, out_hi);
    }
}

// C[m0:m1, n0:n1] on the calling thread.
static void gemm_block(const Gemm *g, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    for (int64_t jc = n0; jc < n1; jc += NC) {
        const int64_t nc = min_i64(NC, n1 - jc);
        for (int64_t pc = 0; pc < g->K; pc += KC) {
            const int64_t kc = min_i64(KC, g->K - pc), pairs = (kc + 1) / 2;
            pack_b(g, pc, kc, jc, nc);
            for (int64_t ic = m0; ic < m1; ic += MC) {
                const int64_t mc = min_i64(MC, m1 - ic);
                pack_a(g, ic, mc, pc, kc);
                for (int64_t jr = 0; jr < nc; jr += NR)
                    for (int64_t ir = 0; ir < mc; ir += MR)
                        micro_kernel(pairs, packed_a + ir * pairs, packed_b + jr * 2 * pairs,
                                     g->C + (ic + ir) * g->ldc + jc + jr, g->ldc,
                                     min_i64(MR, mc - ir), min_i64(NR, nc - jr), g->alpha, g->beta,
                                     pc == 0);
            }
        }
    }
}

// C = beta · C, for K = 0 (beta 0 writes zeros without reading C).
static void scale_c(const Gemm *g) {
    for (int64_t i = 0; i < g->M; i++)
        for (int64_t j = 0; j < g->N; j++) {
            float *x = g->C + i * g->ldc + j;
            *x = g->beta == 0.0f ? 0.0f : g->beta * *x;
        }
}

void dsv3_cpu_gemm_bf16(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                        const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                        float *C, int64_t ldc) {
    const Gemm g = {trans_a, trans_b, M, N, K, alpha, beta, A, B, lda, ldb, C, ldc};
    if (M == 0 || N == 0) return;
    if (K == 0) {
        scale_c(&g);
        return;
    }
    const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
    if (threads == 1 || M * N * K < GEMM_PARALLEL_MIN_WORK) {
        gemm_block(&g, 0, M, 0, N);
        return;
    }
    // Each thread takes a contiguous share of the larger dimension, in whole tiles.
    const int split_n = N >= M;
    const int64_t unit = split_n ? NR : MR, extent = split_n ? N : M;
    const int64_t units = (extent + unit - 1) / unit;
#pragma omp parallel num_threads(threads)
    {
        const int64_t t = omp_get_thread_num(), n = omp_get_num_threads();
        const int64_t lo = min_i64(extent, units * t / n * unit);
        const int64_t hi = min_i64(extent, units * (t + 1) / n * unit);
        if (hi > lo) {
            if (split_n)
                gemm_block(&g, 0, M, lo, hi);
            else
                gemm_block(&g, lo, hi, 0, N);
        }
    }
}
