// embedding.c: token embedding lookup and its gradient (fast CPU version).
//
// The forward copies one weight row per token. The backward is a scatter-add in which tokens
// repeat, so threads do not split the tokens: every thread reads all the token ids and adds
// the rows of the tokens it owns (token id mod thread count). Each row of dweight is then
// written by one thread only, in token order, which needs no atomics and gives the same bits
// as one thread.
//
// Legend: N tokens, D model width, V vocabulary.
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

// Tokens below which both loops stay on one thread (thread start-up costs more than it saves).
enum { EMBEDDING_PARALLEL_MIN_TOKENS = 64 };

Dsv3Err dsv3_cpu_embedding_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *out_,
                                   const int32_t *tokens, const void *weight_, int64_t N, int64_t D,
                                   int64_t V) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("embedding_forward", dtype));
    float *out = out_;             // (N, D)
    const float *weight = weight_; // (V, D)
    DSV3_CALL(dsv3_cpu_check_embedding(out, "out", tokens, weight, "weight", N, D, V));
    const size_t row_bytes = (size_t)D * sizeof(float);
#pragma omp parallel for schedule(static) if (N >= EMBEDDING_PARALLEL_MIN_TOKENS)
    for (int64_t n = 0; n < N; n++)
        memcpy(out + n * D, weight + (int64_t)tokens[n] * D, row_bytes); // (D) ← (D)
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_embedding_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                    float *dweight, const void *dout_, const int32_t *tokens,
                                    int64_t N, int64_t D, int64_t V) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("embedding_backward", dtype));
    const float *dout = dout_; // (N, D)
    DSV3_CALL(dsv3_cpu_check_embedding(dweight, "dweight", tokens, dout, "dout", N, D, V));
#pragma omp parallel if (N >= EMBEDDING_PARALLEL_MIN_TOKENS)
    {
        const int32_t threads = omp_get_num_threads(), me = omp_get_thread_num();
        for (int64_t n = 0; n < N; n++) {
            if (tokens[n] % threads != me) continue;
            float *dst = dweight + (int64_t)tokens[n] * D; // (D) row of the token
            const float *src = dout + n * D;               // (D)
#pragma omp simd
            for (int64_t j = 0; j < D; j++)
                dst[j] += src[j];
        }
    }
    return DSV3_OK;
}
