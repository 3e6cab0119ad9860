// convert.c: dtype conversion on the CPU (fast version): f32 → bf16 rounding to nearest even,
// bf16 → f32 (exact), f32 → f32 (a copy).
//
// The rounding is bf16.h's. Element-wise, split between threads.
//
// Legend: n elements.
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/bf16.h"
#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

// Elements below which the loop stays on one thread.
enum { CONVERT_PARALLEL_MIN_ELEMENTS = 1 << 15 };

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
            out[i] = dsv3_bf16_from_f32(in[i]);
    } else {
        float *out = dst;         // (n)
        const uint16_t *in = src; // (n)
#pragma omp parallel for simd schedule(static) if (n >= CONVERT_PARALLEL_MIN_ELEMENTS)
        for (int64_t i = 0; i < n; i++)
            out[i] = dsv3_f32_from_bf16(in[i]);
    }
    return DSV3_OK;
}
