// mla.c: multi-head latent attention's key/value assembly (fast CPU version).
//
// wkv_b's output holds, per token and head, the non-rotary key channels then the value; the
// rotary key channels are one vector per token shared by all heads. Forward copies them into
// the per-head keys and values that attention reads; backward copies the gradients back and
// sums the rotary key's gradient over the heads, in head order from zero (the order is part of
// the result). Tokens are split between threads.
//
// Legend: N tokens, H heads, nope non-rotary key dims, R rotary dims, Dv value dims.
// kvb, dkvb (N, H, nope + Dv); k, dk (N, H, nope + R); v, dv (N, H, Dv); kpe, dkpe rows of R
// channels at a stride.
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

// Elements of k below which the loops stay on one thread.
enum { MLA_PARALLEL_MIN_ELEMENTS = 1 << 15 };

Dsv3Err dsv3_cpu_mla_kv_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *k_,
                                void *v_, const void *kvb_, const void *kpe_, int64_t kpe_stride,
                                int64_t N, int64_t H, int64_t nope, int64_t R, int64_t Dv) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("mla_kv_forward", dtype));
    float *k = k_, *v = v_;               // (N, H, nope + R), (N, H, Dv)
    const float *kvb = kvb_, *kpe = kpe_; // (N, H, nope + Dv), rows of R at kpe_stride
    DSV3_CALL(dsv3_check_mla_kv("mla_kv_forward", k, v, kvb, kpe, kpe_stride, N, H, nope, R, Dv));
    const int64_t Dqk = nope + R, nv = nope + Dv;
#pragma omp parallel for schedule(static) if (N * H * Dqk >= MLA_PARALLEL_MIN_ELEMENTS)
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < H; h++) {
            const float *src = kvb + (n * H + h) * nv; // (nope + Dv)
            float *kh = k + (n * H + h) * Dqk;         // (nope + R)
            memcpy(kh, src, (size_t)nope * sizeof(float));
            memcpy(kh + nope, kpe + n * kpe_stride, (size_t)R * sizeof(float));
            memcpy(v + (n * H + h) * Dv, src + nope, (size_t)Dv * sizeof(float));
        }
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_mla_kv_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *dkvb_,
                                 void *dkpe_, int64_t dkpe_stride, const void *dk_, const void *dv_,
                                 int64_t N, int64_t H, int64_t nope, int64_t R, int64_t Dv) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("mla_kv_backward", dtype));
    float *dkvb = dkvb_, *dkpe = dkpe_; // (N, H, nope + Dv), rows of R at dkpe_stride
    const float *dk = dk_, *dv = dv_;   // (N, H, nope + R), (N, H, Dv)
    DSV3_CALL(
        dsv3_check_mla_kv("mla_kv_backward", dk, dv, dkvb, dkpe, dkpe_stride, N, H, nope, R, Dv));
    const int64_t Dqk = nope + R, nv = nope + Dv;
#pragma omp parallel for schedule(static) if (N * H * Dqk >= MLA_PARALLEL_MIN_ELEMENTS)
    for (int64_t n = 0; n < N; n++) {
        float *dpe = dkpe + n * dkpe_stride; // (R)
        memset(dpe, 0, (size_t)R * sizeof(float));
        for (int64_t h = 0; h < H; h++) {
            const float *dkh = dk + (n * H + h) * Dqk; // (nope + R)
            float *dst = dkvb + (n * H + h) * nv;      // (nope + Dv)
            memcpy(dst, dkh, (size_t)nope * sizeof(float));
            memcpy(dst + nope, dv + (n * H + h) * Dv, (size_t)Dv * sizeof(float));
            for (int64_t r = 0; r < R; r++)
                dpe[r] += dkh[nope + r];
        }
    }
    return DSV3_OK;
}
