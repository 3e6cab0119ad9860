// tokens_reference.c: token bookkeeping of a micro-batch, written for clarity: the range check
// of the input ids, the document ids of a block-causal mask (torchtitan's
// get_document_mask_mod: position t belongs to the document that the last eos before it
// closed, so its id is the number of eos strictly before it in its sequence; an eos ends its
// own document), and the count of the labels that the loss counts.
//
// Legend: N tokens (B × T), B sequences, T positions, V vocabulary.
#include <inttypes.h>
#include <stdint.h>

#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

Dsv3Err dsv3_cpu_reference_tokens_check(const Dsv3KernelContext *ctx, const int32_t *tokens,
                                        int64_t N, int64_t V) {
    (void)ctx;
    DSV3_CALL(dsv3_check_tokens(tokens, N, V));
    for (int64_t n = 0; n < N; n++)
        DSV3_CHECK(tokens[n] >= 0 && tokens[n] < V, DSV3_ERR_USAGE,
                   "tokens_check: tokens[%" PRId64 "] = %" PRId32
                   " is outside the vocabulary [0, %" PRId64 ")",
                   n, tokens[n], V);
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_reference_document_ids(const Dsv3KernelContext *ctx, int32_t *doc,
                                        const int32_t *tokens, int64_t B, int64_t T, int32_t eos) {
    (void)ctx;
    DSV3_CALL(dsv3_check_document_ids(doc, tokens, B, T));
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            int32_t eos_before = 0;
            for (int64_t s = 0; s < t; s++)
                eos_before += eos >= 0 && tokens[b * T + s] == eos;
            doc[b * T + t] = eos_before;
        }
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_reference_labels_count(const Dsv3KernelContext *ctx, int64_t *count,
                                        const int32_t *labels, int64_t N) {
    (void)ctx;
    DSV3_CALL(dsv3_check_labels_count(count, labels, N));
    *count = 0;
    for (int64_t n = 0; n < N; n++)
        if (labels[n] != DSV3_IGNORE_INDEX) ++*count;
    return DSV3_OK;
}
