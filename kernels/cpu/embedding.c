// embedding.c: token embedding lookup and its gradient (fast CPU version), on a slice
// [vocab_start, vocab_start + V) of the table (the whole table: vocab_start 0).
//
// The forward copies one weight row per token of the slice and zeroes the rows of the others.
// The backward is a scatter-add in which tokens repeat, so threads do not split the tokens:
// every thread reads all the token ids and adds the rows of the tokens it owns (row of the
// slice mod thread count). Each row of dweight is then written by one thread only, in token
// order, which needs no atomics and gives the same bits as one thread.
//
// Legend: N tokens, D model width, V rows of the slice.
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

// Tokens below which both loops stay on one thread (thread start-up costs more than it saves).
enum { EMBEDDING_PARALLEL_MIN_TOKENS = 64 };

Dsv3Err dsv3_cpu_embedding_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *out_,
                                   const int32_t *tokens, const void *weight_, int64_t N, int64_t D,
                                   int64_t V, int64_t vocab_start) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("embedding_forward", dtype));
    float *out = out_;             // (N, D)
    const float *weight = weight_; // (V, D)
    DSV3_CALL(dsv3_cpu_check_embedding(out, "out", tokens, weight, "weight", N, D, V, vocab_start));
    const size_t row_bytes = (size_t)D * sizeof(float);
#pragma omp parallel for schedule(static) if (N >= EMBEDDING_PARALLEL_MIN_TOKENS)
    for (int64_t n = 0; n < N; n++) {
        const int64_t row = tokens[n] - vocab_start; // of the slice
        if (row >= 0 && row < V)
            memcpy(out + n * D, weight + row * D, row_bytes); // (D) ← (D)
        else
            memset(out + n * D, 0, row_bytes);
    }
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_embedding_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                    float *dweight, const void *dout_, const int32_t *tokens,
                                    int64_t N, int64_t D, int64_t V, int64_t vocab_start) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("embedding_backward", dtype));
    const float *dout = dout_; // (N, D)
    DSV3_CALL(
        dsv3_cpu_check_embedding(dweight, "dweight", tokens, dout, "dout", N, D, V, vocab_start));
#pragma omp parallel if (N >= EMBEDDING_PARALLEL_MIN_TOKENS)
    {
        const int64_t threads = omp_get_num_threads(), me = omp_get_thread_num();
        for (int64_t n = 0; n < N; n++) {
            const int64_t row = tokens[n] - vocab_start; // of the slice
            if (row < 0 || row >= V || row % threads != me) continue;
            float *dst = dweight + row * D;  // (D) row of the token
            const float *src = dout + n * D; // (D)
#pragma omp simd
            for (int64_t j = 0; j < D; j++)
                dst[j] += src[j];
        }
    }
    return DSV3_OK;
}
