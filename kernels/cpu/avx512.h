// avx512: helpers of the files compiled for AVX-512 (gemm_bf16.c, gemm_panels.c); include it
// only there.
#ifndef DSV3_KERNELS_CPU_AVX512_H
#define DSV3_KERNELS_CPU_AVX512_H

#include <immintrin.h>
#include <stdint.h>

enum { DSV3_AVX512_LANES = 16 }; // 32-bit lanes of a zmm register

// The first n lanes (none for n <= 0, all for n >= 16).
static inline __mmask16 dsv3_avx512_lanes_mask(int64_t n) {
    return n >= DSV3_AVX512_LANES ? (__mmask16)0xFFFF
           : n <= 0               ? (__mmask16)0
                                  : (__mmask16)((1u << n) - 1);
}

// In place: r[i] lane j becomes r[j] lane i (16 × 16 words: pairs within 32-bit lanes, then
// 64-bit, then 128-bit lanes across registers).
static inline void dsv3_avx512_transpose_16x16(__m512i r[DSV3_AVX512_LANES]) {
    __m512i t[DSV3_AVX512_LANES];
    for (int i = 0; i < DSV3_AVX512_LANES; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < DSV3_AVX512_LANES;
         i += 4) { // r[i + m], 128-bit lane L: rows i..i+3 of column 4L + m
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int m = 0; m < 4; m++) {
        const __m512i x0 = _mm512_shuffle_i32x4(r[m], r[4 + m], 0x44); // lanes 0, 1 of each
        const __m512i x1 = _mm512_shuffle_i32x4(r[m], r[4 + m], 0xEE); // lanes 2, 3 of each
        const __m512i y0 = _mm512_shuffle_i32x4(r[8 + m], r[12 + m], 0x44);
        const __m512i y1 = _mm512_shuffle_i32x4(r[8 + m], r[12 + m], 0xEE);
        t[m] = _mm512_shuffle_i32x4(x0, y0, 0x88);      // column m
        t[4 + m] = _mm512_shuffle_i32x4(x0, y0, 0xDD);  // column 4 + m
        t[8 + m] = _mm512_shuffle_i32x4(x1, y1, 0x88);  // column 8 + m
        t[12 + m] = _mm512_shuffle_i32x4(x1, y1, 0xDD); // column 12 + m
    }
    for (int i = 0; i < DSV3_AVX512_LANES; i++)
        r[i] = t[i];
}

#endif
