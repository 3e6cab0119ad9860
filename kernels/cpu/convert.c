// convert.c: dtype conversion on the CPU (fast version): f32 → bf16 rounding to nearest even,
// bf16 → f32 (exact), f32 → f32 (a copy).
//
// bf16 is the upper half of an f32, stored as uint16_t bits. Rounding to nearest even adds
// 0x7FFF plus the lowest kept bit to the f32 bits and drops the lower half: the carry reaches
// the kept bits exactly when the dropped half is above one half of the last kept place, or
// equal to it with that place odd. Finite values beyond bf16's largest round to infinity, as
// IEEE rounding does. NaN becomes torch's canonical quiet NaN (0x7FC0), so that no NaN rounds
// into an infinity. Element-wise, branch-free, split between threads.
//
// Legend: n elements.
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

// Elements below which the loop stays on one thread.
enum { CONVERT_PARALLEL_MIN_ELEMENTS = 1 << 15 };

enum {
    BF16_SHIFT = 16,                    // bf16 bits are the upper 16 of the f32 bits
    BF16_ROUND_HALF_MINUS_ONE = 0x7FFF, // one half of the last kept place, minus one
};
static const uint32_t F32_ABS_MASK = 0x7FFFFFFFu, F32_INFINITY_BITS = 0x7F800000u;
static const uint16_t BF16_QUIET_NAN = 0x7FC0u;

static inline uint16_t bf16_from_f32(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    const uint32_t odd = (bits >> BF16_SHIFT) & 1u;
    const uint16_t rounded = (uint16_t)((bits + BF16_ROUND_HALF_MINUS_ONE + odd) >> BF16_SHIFT);
    return (bits & F32_ABS_MASK) > F32_INFINITY_BITS ? BF16_QUIET_NAN : rounded;
}

static inline float f32_from_bf16(uint16_t h) {
    const uint32_t bits = (uint32_t)h << BF16_SHIFT;
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

Dsv3Err dsv3_cpu_convert(const Dsv3KernelContext *ctx, void *dst, Dsv3TensorDtype dst_dtype,
                         const void *src, Dsv3TensorDtype src_dtype, int64_t n) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_convert(dst, dst_dtype, src, src_dtype, n));
    if (n == 0) return DSV3_OK;
    if (dst_dtype == DSV3_TENSOR_F32 && src_dtype == DSV3_TENSOR_F32) {
        memcpy(dst, src, (size_t)n * sizeof(float));
    } else if (dst_dtype == DSV3_TENSOR_BF16) {
        uint16_t *out = dst;   // (n)
        const float *in = src; // (n)
#pragma omp parallel for simd schedule(static) if (n >= CONVERT_PARALLEL_MIN_ELEMENTS)
        for (int64_t i = 0; i < n; i++)
            out[i] = bf16_from_f32(in[i]);
    } else {
        float *out = dst;         // (n)
        const uint16_t *in = src; // (n)
#pragma omp parallel for simd schedule(static) if (n >= CONVERT_PARALLEL_MIN_ELEMENTS)
        for (int64_t i = 0; i < n; i++)
            out[i] = f32_from_bf16(in[i]);
    }
    return DSV3_OK;
}
