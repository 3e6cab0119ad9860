// checks_tokens: the shared argument checks of the token bookkeeping ops (tokens_check,
// document_ids, labels_count).
#include <inttypes.h>
#include <stdint.h>

#include "kernels/checks.h"

Dsv3Err dsv3_check_tokens(const void *tokens, int64_t N, int64_t V) {
    DSV3_CHECK(N >= 0, DSV3_ERR_USAGE, "tokens_check: N = %" PRId64 " tokens, expected N >= 0", N);
    DSV3_CHECK(V > 0 && V <= (int64_t)INT32_MAX + 1, DSV3_ERR_USAGE,
               "tokens_check: V = %" PRId64 ", expected 0 < V <= 2^31 (int32 token ids)", V);
    DSV3_CHECK(N == 0 || tokens != NULL, DSV3_ERR_USAGE, "tokens_check: tokens is NULL");
    return DSV3_OK;
}

Dsv3Err dsv3_check_document_ids(const void *doc, const void *tokens, int64_t B, int64_t T) {
    DSV3_CHECK(B >= 0 && T >= 0, DSV3_ERR_USAGE,
               "document_ids: B = %" PRId64 ", T = %" PRId64 ", expected both >= 0", B, T);
    if (B == 0 || T == 0) return DSV3_OK;
    DSV3_CHECK(doc != NULL && tokens != NULL, DSV3_ERR_USAGE,
               "document_ids: doc and tokens must not be NULL");
    return DSV3_OK;
}

Dsv3Err dsv3_check_labels_count(const void *count, const void *labels, int64_t N) {
    DSV3_CHECK(count != NULL, DSV3_ERR_USAGE, "labels_count: count is NULL");
    DSV3_CHECK(N >= 0, DSV3_ERR_USAGE, "labels_count: N = %" PRId64 " labels, expected N >= 0", N);
    DSV3_CHECK(N == 0 || labels != NULL, DSV3_ERR_USAGE, "labels_count: labels is NULL");
    return DSV3_OK;
}
