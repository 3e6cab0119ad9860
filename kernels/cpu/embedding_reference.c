// embedding_reference.c: token embedding lookup and its gradient, written for clarity, on a
// slice [vocab_start, vocab_start + V) of the table (the whole table: vocab_start 0).
//
// Legend: N tokens, D model width, V rows of the slice.
#include <stdint.h>

#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

Dsv3Err dsv3_cpu_reference_embedding_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                             void *out_, const int32_t *tokens, const void *weight_,
                                             int64_t N, int64_t D, int64_t V, int64_t vocab_start) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("embedding_forward", dtype));
    float *out = out_;             // (N, D)
    const float *weight = weight_; // (V, D)
    DSV3_CALL(dsv3_cpu_check_embedding(out, "out", tokens, weight, "weight", N, D, V, vocab_start));
    for (int64_t n = 0; n < N; n++) {
        const int64_t row = tokens[n] - vocab_start; // of the slice
        const int in_slice = row >= 0 && row < V;
        for (int64_t j = 0; j < D; j++)
            out[n * D + j] = in_slice ? weight[row * D + j] : 0.0f;
    }
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_reference_embedding_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                              float *dweight, const void *dout_,
                                              const int32_t *tokens, int64_t N, int64_t D,
                                              int64_t V, int64_t vocab_start) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("embedding_backward", dtype));
    const float *dout = dout_; // (N, D)
    DSV3_CALL(
        dsv3_cpu_check_embedding(dweight, "dweight", tokens, dout, "dout", N, D, V, vocab_start));
    for (int64_t n = 0; n < N; n++) {
        const int64_t row = tokens[n] - vocab_start; // of the slice
        if (row < 0 || row >= V) continue;           // another slice's token
        for (int64_t j = 0; j < D; j++)
            dweight[row * D + j] += dout[n * D + j];
    }
    return DSV3_OK;
}
