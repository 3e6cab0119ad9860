// checks_dense: the CPU's checks of the labels of cross-entropy (fused, and vocabulary-parallel)
// and of the token ids of the embedding, after the shared checks (kernels/checks.h).
#include <inttypes.h>
#include <stdint.h>

#include "kernels/cpu/checks.h"

// Every label DSV3_IGNORE_INDEX or a token id in [0, V).
static Dsv3Err check_labels(const char *op, const int32_t *labels, int64_t N, int64_t V) {
    for (int64_t n = 0; n < N; n++)
        DSV3_CHECK(labels[n] == DSV3_IGNORE_INDEX || (labels[n] >= 0 && labels[n] < V),
                   DSV3_ERR_USAGE,
                   "%s: labels[%" PRId64 "] = %" PRId32 " is neither a token id in [0, %" PRId64
                   ") nor the ignore index %d",
                   op, n, labels[n], V, DSV3_IGNORE_INDEX);
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_check_cross_entropy(const double *loss_sum, const float *dh, const float *dweight,
                                     const float *h, const float *weight, const int32_t *labels,
                                     int64_t N, int64_t D, int64_t V, int64_t chunk) {
    DSV3_CALL(dsv3_check_cross_entropy(loss_sum, dh, dweight, h, weight, labels, N, D, V, chunk));
    return check_labels("cross_entropy", labels, N, V);
}

Dsv3Err dsv3_cpu_check_cross_entropy_logits(const double *loss_sum, const float *logits,
                                            const int32_t *labels, int64_t N, int64_t V) {
    DSV3_CALL(dsv3_check_cross_entropy_logits(loss_sum, logits, labels, N, V));
    return check_labels("cross_entropy_logits", labels, N, V);
}

Dsv3Err dsv3_cpu_check_embedding(const void *a, const char *a_name, const int32_t *tokens,
                                 const void *b, const char *b_name, int64_t N, int64_t D, int64_t V,
                                 int64_t vocab_start) {
    DSV3_CALL(dsv3_check_embedding(a, a_name, tokens, b, b_name, N, D, V, vocab_start));
    for (int64_t n = 0; n < N; n++)
        DSV3_CHECK(tokens[n] >= 0, DSV3_ERR_USAGE,
                   "embedding: tokens[%" PRId64 "] = %" PRId32 " is not a token id (>= 0)", n,
                   tokens[n]);
    return DSV3_OK;
}

// Every label (n) is DSV3_IGNORE_INDEX or a token id, of this rank's slice or another's.
static Dsv3Err check_vocab_labels(const char *op, const int32_t *labels, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        DSV3_CHECK(labels[i] == DSV3_IGNORE_INDEX || labels[i] >= 0, DSV3_ERR_USAGE,
                   "%s: labels[%" PRId64 "] = %" PRId32
                   " is neither a token id (>= 0) nor the ignore index %d",
                   op, i, labels[i], DSV3_IGNORE_INDEX);
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_check_vocab_logits_sums(const double *sums, const float *logits,
                                         const float *row_max, const int32_t *labels, int64_t n,
                                         int64_t V, int64_t vocab_start) {
    DSV3_CALL(dsv3_check_vocab_logits_sums(sums, logits, row_max, labels, n, V, vocab_start));
    return check_vocab_labels("vocab_logits_sums", labels, n);
}

Dsv3Err dsv3_cpu_check_vocab_logits_backward(const double *loss_sum, const float *dh,
                                             const float *dweight, const float *logits,
                                             const float *row_max, const double *sums,
                                             const float *h, const float *weight,
                                             const int32_t *labels, int64_t n, int64_t D, int64_t V,
                                             int64_t vocab_start) {
    DSV3_CALL(dsv3_check_vocab_logits_backward(loss_sum, dh, dweight, logits, row_max, sums, h,
                                               weight, labels, n, D, V, vocab_start));
    return check_vocab_labels("vocab_logits_backward", labels, n);
}
