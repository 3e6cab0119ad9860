// vec_exp: e^x in fp32 written so that the compiler vectorizes it inside `omp simd` loops.
//
// The C library's expf is a call the compiler cannot vectorize (without -ffast-math), and the
// softmax of the loss and the SwiGLU gate spend most of their time in it. This one is plain
// arithmetic: x = n·ln2 + r with n = round(x / ln2) and |r| ≤ ln2/2, e^r by its Taylor series
// to r⁷/7! (truncation error below 1e-8, under 0.1 fp32 ulp), and 2^n put straight into the
// exponent bits. Accuracy: within 2 ulp of e^x on [VEC_EXP_MIN_ARG, VEC_EXP_MAX_ARG].
//
// Outside that range the argument is clamped: below, the result is about 1.2e-38 (the smallest
// normal float) instead of a subnormal or 0; above, about 1.65e38 instead of up to 3.4e38 or
// +inf. Neither use can tell: in the softmax, arguments are ≤ 0 and such a term is nothing next
// to the row's largest, which is 1; in the sigmoid 1 / (1 + e^−a), both give 1 or a value
// within 1e-38 of 0. NaN gives NaN. Private to the CPU backend.
#ifndef DSV3_KERNELS_CPU_VEC_EXP_H
#define DSV3_KERNELS_CPU_VEC_EXP_H

#include <stdint.h>
#include <string.h>

#define VEC_EXP_MIN_ARG (-87.33654f) // ln(2^−126): 2^n stays a normal float
#define VEC_EXP_MAX_ARG 88.0f        // n ≤ 127: 2^n stays finite
#define VEC_EXP_LOG2E 1.44269504f
// ln 2 split in two: the high part has few enough bits that n · hi is exact for |n| ≤ 128.
#define VEC_EXP_LN2_HI 0.693359375f
#define VEC_EXP_LN2_LO (-2.12194440e-4f)
// 1.5 · 2^23: adding it to a float t with |t| < 2^22 rounds t to the nearest integer n
// (default rounding mode) and leaves n in the low mantissa bits, where an integer subtraction
// reads it; no float-to-int conversion, so nothing is undefined even for NaN.
#define VEC_EXP_ROUNDER 12582912.0f

// x clamped into [lo, hi] (NaN stays NaN) by masks on the bits rather than `?:`. The compiler
// vectorizes a loop only if it can turn its branches into selects, and given a `?:` it
// specializes the code after it for the clamped constants, leaving the floating-point
// arithmetic under a condition, from where it may not be moved back (it can trap); masks leave
// it nothing to specialize.
static inline float vec_exp_clamp(float x, float lo, float hi) {
    uint32_t xb, lb, hb;
    memcpy(&xb, &x, sizeof xb);
    memcpy(&lb, &lo, sizeof lb);
    memcpy(&hb, &hi, sizeof hb);
    const uint32_t below = 0u - (uint32_t)(x < lo), above = 0u - (uint32_t)(x > hi);
    xb = (xb & ~below) | (lb & below);
    xb = (xb & ~above) | (hb & above);
    float clamped;
    memcpy(&clamped, &xb, sizeof clamped);
    return clamped;
}

static inline float vec_exp(float x) {
    const float xc = vec_exp_clamp(x, VEC_EXP_MIN_ARG, VEC_EXP_MAX_ARG);
    const float shifted = xc * VEC_EXP_LOG2E + VEC_EXP_ROUNDER;
    const float n = shifted - VEC_EXP_ROUNDER;
    const float r = (xc - n * VEC_EXP_LN2_HI) - n * VEC_EXP_LN2_LO;
    float p = 1.0f / 5040.0f; // Horner on 1 + r + r²/2! + … + r⁷/7!
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    uint32_t shifted_bits, rounder_bits;
    const float rounder = VEC_EXP_ROUNDER;
    memcpy(&shifted_bits, &shifted, sizeof shifted_bits);
    memcpy(&rounder_bits, &rounder, sizeof rounder_bits);
    // n + 127 is the biased exponent of 2^n (unsigned: wraps instead of overflowing for NaN).
    const uint32_t scale_bits = (shifted_bits - rounder_bits + 127u) << 23;
    float scale;
    memcpy(&scale, &scale_bits, sizeof scale);
    return p * scale;
}

#endif
