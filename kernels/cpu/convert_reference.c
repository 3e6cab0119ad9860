// convert_reference.c: dtype conversion on the CPU, written for clarity: f32 → bf16 rounding
// to nearest even, bf16 → f32, f32 → f32.
//
// An f32 lies between two neighbouring bf16 values of its sign: its bits cut to the upper
// half (toward zero), and the next one away from zero. The rounding compares the distances to
// both, in double, where they are exact, and on a tie takes the one whose last bit is even.
// The neighbour past bf16's largest finite value counts as 2^128, the value the next pattern
// would have with an unbounded exponent, so that values at or beyond half an ulp above the
// largest round to infinity, as IEEE rounding does. NaN becomes torch's quiet NaN (0x7FC0).
//
// Legend: n elements.
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

enum {
    BF16_SHIFT = 16, // bf16 bits are the upper 16 of the f32 bits
    BF16_MANTISSA_BITS = 7,
    BF16_EXPONENT_MASK = 0xFF,
    BF16_EXPONENT_BIAS = 127,
    BF16_SUBNORMAL_EXPONENT = -126, // the exponent of bf16's (and f32's) subnormals
    BF16_SIGN_BIT = 0x8000,
    BF16_QUIET_NAN = 0x7FC0,
};

// The magnitude of the bf16 pattern `bits` (sign ignored); exponent 255 reads as an ordinary
// power of two (2^128 for the pattern after the largest finite value).
static double bf16_magnitude(uint32_t bits) {
    const int exponent = (int)((bits >> BF16_MANTISSA_BITS) & BF16_EXPONENT_MASK);
    const double mantissa = (double)(bits & ((1u << BF16_MANTISSA_BITS) - 1));
    if (exponent == 0)
        return ldexp(mantissa, BF16_SUBNORMAL_EXPONENT - BF16_MANTISSA_BITS); // subnormal
    return ldexp(1.0 + mantissa / (double)(1u << BF16_MANTISSA_BITS),
                 exponent - BF16_EXPONENT_BIAS);
}

static uint16_t bf16_round(float x) {
    if (isnan(x)) return BF16_QUIET_NAN;
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    const uint32_t sign = (bits >> BF16_SHIFT) & BF16_SIGN_BIT;
    const uint32_t below = (bits >> BF16_SHIFT) & ~(uint32_t)BF16_SIGN_BIT; // |x| cut to zero
    const uint32_t dropped = bits & ((1u << BF16_SHIFT) - 1);
    if (dropped == 0) return (uint16_t)(sign | below); // exact (also ±infinity)
    const double magnitude = fabs((double)x);
    const double to_below = magnitude - bf16_magnitude(below);
    const double to_above = bf16_magnitude(below + 1) - magnitude;
    const int up = to_above < to_below || (to_above == to_below && (below & 1u) != 0);
    return (uint16_t)(sign | (below + (uint32_t)up));
}

Dsv3Err dsv3_cpu_reference_convert(const Dsv3KernelContext *ctx, void *dst,
                                   Dsv3TensorDtype dst_dtype, const void *src,
                                   Dsv3TensorDtype src_dtype, int64_t n) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_convert(dst, dst_dtype, src, src_dtype, n));
    for (int64_t i = 0; i < n; i++) {
        if (src_dtype == DSV3_TENSOR_F32 && dst_dtype == DSV3_TENSOR_F32) {
            ((float *)dst)[i] = ((const float *)src)[i];
        } else if (dst_dtype == DSV3_TENSOR_BF16) {
            ((uint16_t *)dst)[i] = bf16_round(((const float *)src)[i]);
        } else {
            const uint32_t bits = (uint32_t)((const uint16_t *)src)[i] << BF16_SHIFT;
            memcpy((float *)dst + i, &bits, sizeof(float));
        }
    }
    return DSV3_OK;
}
