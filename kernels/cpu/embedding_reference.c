// embedding_reference.c: token embedding lookup and its gradient, written for clarity.
//
// Legend: N tokens, D model width, V vocabulary.
#include <inttypes.h>
#include <stdint.h>

#include "kernels/kernels_reference.h"

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

Dsv3Err dsv3_embedding_forward_reference(float *out, const int32_t *tokens, const float *weight,
                                         int64_t N, int64_t D, int64_t V) {
    DSV3_CALL(embedding_check(out, "out", tokens, weight, "weight", N, D, V));
    for (int64_t n = 0; n < N; n++)
        for (int64_t j = 0; j < D; j++) out[n * D + j] = weight[(int64_t)tokens[n] * D + j];
    return DSV3_OK;
}

Dsv3Err dsv3_embedding_backward_reference(float *dweight, const float *dout, const int32_t *tokens,
                                          int64_t N, int64_t D, int64_t V) {
    DSV3_CALL(embedding_check(dweight, "dweight", tokens, dout, "dout", N, D, V));
    for (int64_t n = 0; n < N; n++)
        for (int64_t j = 0; j < D; j++) dweight[(int64_t)tokens[n] * D + j] += dout[n * D + j];
    return DSV3_OK;
}
