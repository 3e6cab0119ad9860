// mla_reference.c: multi-head latent attention's key/value assembly, written for clarity.
//
// Forward: k[n, h] = [kvb[n, h, :nope], kpe[n]] (the rotary key is shared by the heads) and
// v[n, h] = kvb[n, h, nope:]. Backward: dkvb[n, h] = [dk[n, h, :nope], dv[n, h]] and
// dkpe[n] = Σ_h dk[n, h, nope:], summed in double.
//
// Legend: N tokens, H heads, nope non-rotary key dims, R rotary dims, Dv value dims.
// kvb, dkvb (N, H, nope + Dv); k, dk (N, H, nope + R); v, dv (N, H, Dv); kpe, dkpe rows of R
// channels at a stride.
#include <stdint.h>

#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

Dsv3Err dsv3_cpu_reference_mla_kv_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                          void *k_, void *v_, const void *kvb_, const void *kpe_,
                                          int64_t kpe_stride, int64_t N, int64_t H, int64_t nope,
                                          int64_t R, int64_t Dv) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("mla_kv_forward", dtype));
    float *k = k_, *v = v_;               // (N, H, nope + R), (N, H, Dv)
    const float *kvb = kvb_, *kpe = kpe_; // (N, H, nope + Dv), rows of R at kpe_stride
    DSV3_CALL(dsv3_check_mla_kv("mla_kv_forward", k, v, kvb, kpe, kpe_stride, N, H, nope, R, Dv));
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < H; h++) {
            for (int64_t c = 0; c < nope; c++)
                k[(n * H + h) * (nope + R) + c] = kvb[(n * H + h) * (nope + Dv) + c];
            for (int64_t r = 0; r < R; r++)
                k[(n * H + h) * (nope + R) + nope + r] = kpe[n * kpe_stride + r];
            for (int64_t c = 0; c < Dv; c++)
                v[(n * H + h) * Dv + c] = kvb[(n * H + h) * (nope + Dv) + nope + c];
        }
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_reference_mla_kv_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                           void *dkvb_, void *dkpe_, int64_t dkpe_stride,
                                           const void *dk_, const void *dv_, int64_t N, int64_t H,
                                           int64_t nope, int64_t R, int64_t Dv) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("mla_kv_backward", dtype));
    float *dkvb = dkvb_, *dkpe = dkpe_; // (N, H, nope + Dv), rows of R at dkpe_stride
    const float *dk = dk_, *dv = dv_;   // (N, H, nope + R), (N, H, Dv)
    DSV3_CALL(
        dsv3_check_mla_kv("mla_kv_backward", dk, dv, dkvb, dkpe, dkpe_stride, N, H, nope, R, Dv));
    for (int64_t n = 0; n < N; n++) {
        for (int64_t h = 0; h < H; h++) {
            for (int64_t c = 0; c < nope; c++)
                dkvb[(n * H + h) * (nope + Dv) + c] = dk[(n * H + h) * (nope + R) + c];
            for (int64_t c = 0; c < Dv; c++)
                dkvb[(n * H + h) * (nope + Dv) + nope + c] = dv[(n * H + h) * Dv + c];
        }
        for (int64_t r = 0; r < R; r++) {
            double sum = 0;
            for (int64_t h = 0; h < H; h++)
                sum += dk[(n * H + h) * (nope + R) + nope + r];
            dkpe[n * dkpe_stride + r] = (float)sum;
        }
    }
    return DSV3_OK;
}
