// embedding_reference.c: token embedding lookup and its gradient, written for clarity.
//
// Legend: N tokens, D model width, V vocabulary.
#include <stdint.h>

#include "kernels/cpu/checks.h"
#include "kernels/kernels_reference.h"

Dsv3Err dsv3_embedding_forward_reference(float *out, const int32_t *tokens, const float *weight,
                                         int64_t N, int64_t D, int64_t V) {
    DSV3_CALL(dsv3_cpu_check_embedding(out, "out", tokens, weight, "weight", N, D, V));
    for (int64_t n = 0; n < N; n++)
        for (int64_t j = 0; j < D; j++)
            out[n * D + j] = weight[(int64_t)tokens[n] * D + j];
    return DSV3_OK;
}

Dsv3Err dsv3_embedding_backward_reference(float *dweight, const float *dout, const int32_t *tokens,
                                          int64_t N, int64_t D, int64_t V) {
    DSV3_CALL(dsv3_cpu_check_embedding(dweight, "dweight", tokens, dout, "dout", N, D, V));
    for (int64_t n = 0; n < N; n++)
        for (int64_t j = 0; j < D; j++)
            dweight[(int64_t)tokens[n] * D + j] += dout[n * D + j];
    return DSV3_OK;
}
