// embedding.c: token embedding lookup and its gradient (fast CPU version).
//
// The forward copies one weight row per token. The backward is a scatter-add in which tokens
// repeat, so threads do not split the tokens: every thread reads all the token ids and adds
// the rows of the tokens it owns (token id mod thread count). Each row of dweight is then
// written by one thread only, in token order, which needs no atomics and gives the same bits
// as one thread.
//
// Legend: N tokens, D model width, V vocabulary.
#include <inttypes.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "kernels/kernels.h"

// Tokens below which both loops stay on one thread (thread start-up costs more than it saves).
enum { EMBEDDING_PARALLEL_MIN_TOKENS = 64 };

// Checks the sizes, the pointers and every token id; names the first bad token.
static Dsv3Err embedding_check(const void *a, const char *a_name, const int32_t *tokens,
                               const void *b, const char *b_name, int64_t N, int64_t D, int64_t V) {
    DSV3_CHECK(N >= 0, DSV3_ERR_USAGE, "embedding: N = %" PRId64 " tokens, expected N >= 0", N);
    DSV3_CHECK(D > 0, DSV3_ERR_USAGE, "embedding: D = %" PRId64 ", expected D > 0", D);
    DSV3_CHECK(V > 0 && V <= (int64_t)INT32_MAX + 1, DSV3_ERR_USAGE,
               "embedding: V = %" PRId64 ", expected 0 < V <= 2^31 (int32 token ids)", V);
    if (N == 0) return DSV3_OK;
    DSV3_CHECK(a != NULL, DSV3_ERR_USAGE, "embedding: %s is NULL", a_name);
    DSV3_CHECK(b != NULL, DSV3_ERR_USAGE, "embedding: %s is NULL", b_name);
    DSV3_CHECK(tokens != NULL, DSV3_ERR_USAGE, "embedding: tokens is NULL");
    for (int64_t n = 0; n < N; n++)
        DSV3_CHECK(tokens[n] >= 0 && tokens[n] < V, DSV3_ERR_USAGE,
                   "embedding: tokens[%" PRId64 "] = %" PRId32 " is not a token id in [0, %" PRId64
                   ")",
                   n, tokens[n], V);
    return DSV3_OK;
}

Dsv3Err dsv3_embedding_forward(float *out, const int32_t *tokens, const float *weight, int64_t N,
                               int64_t D, int64_t V) {
    DSV3_CALL(embedding_check(out, "out", tokens, weight, "weight", N, D, V));
    const size_t row_bytes = (size_t)D * sizeof(float);
#pragma omp parallel for schedule(static) if (N >= EMBEDDING_PARALLEL_MIN_TOKENS)
    for (int64_t n = 0; n < N; n++)
        memcpy(out + n * D, weight + (int64_t)tokens[n] * D, row_bytes); // (D) ← (D)
    return DSV3_OK;
}

Dsv3Err dsv3_embedding_backward(float *dweight, const float *dout, const int32_t *tokens, int64_t N,
                                int64_t D, int64_t V) {
    DSV3_CALL(embedding_check(dweight, "dweight", tokens, dout, "dout", N, D, V));
#pragma omp parallel if (N >= EMBEDDING_PARALLEL_MIN_TOKENS)
    {
        const int32_t threads = omp_get_num_threads(), me = omp_get_thread_num();
        for (int64_t n = 0; n < N; n++) {
            if (tokens[n] % threads != me) continue;
            float *dst = dweight + (int64_t)tokens[n] * D; // (D) row of the token
            const float *src = dout + n * D;               // (D)
#pragma omp simd
            for (int64_t j = 0; j < D; j++) dst[j] += src[j];
        }
    }
    return DSV3_OK;
}
