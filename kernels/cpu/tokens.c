// tokens.c: token bookkeeping of a micro-batch (fast CPU version): the range check of the
// input ids, the document ids of a block-causal mask, and the count of the labels that the
// loss counts.
//
// The range check and the count are reductions split between threads (the first bad position
// is the minimum over the threads, so the message does not depend on their number); the
// document ids are a running count of eos per sequence, sequences split between threads.
//
// Legend: N tokens (B × T), B sequences, T positions, V vocabulary.
#include <inttypes.h>
#include <stdint.h>

#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

// Tokens (or sequences × positions) below which a loop stays on one thread.
enum { TOKENS_PARALLEL_MIN = 1 << 14 };

Dsv3Err dsv3_cpu_tokens_check(const Dsv3KernelContext *ctx, const int32_t *tokens, int64_t N,
                              int64_t V) {
    (void)ctx;
    DSV3_CALL(dsv3_check_tokens(tokens, N, V));
    int64_t first_bad = N;
#pragma omp parallel for schedule(static) reduction(min : first_bad) if (N >= TOKENS_PARALLEL_MIN)
    for (int64_t n = 0; n < N; n++)
        if ((tokens[n] < 0 || tokens[n] >= V) && n < first_bad) first_bad = n;
    DSV3_CHECK(first_bad == N, DSV3_ERR_USAGE,
               "tokens_check: tokens[%" PRId64 "] = %" PRId32
               " is outside the vocabulary [0, %" PRId64 ")",
               first_bad, first_bad < N ? tokens[first_bad] : 0, V);
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_document_ids(const Dsv3KernelContext *ctx, int32_t *doc, const int32_t *tokens,
                              int64_t B, int64_t T, int32_t eos) {
    (void)ctx;
    DSV3_CALL(dsv3_check_document_ids(doc, tokens, B, T));
#pragma omp parallel for schedule(static) if (B * T >= TOKENS_PARALLEL_MIN)
    for (int64_t b = 0; b < B; b++) {
        int32_t id = 0;
        for (int64_t t = 0; t < T; t++) {
            doc[b * T + t] = id;
            if (eos >= 0 && tokens[b * T + t] == eos) id++;
        }
    }
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_labels_count(const Dsv3KernelContext *ctx, int64_t *count, const int32_t *labels,
                              int64_t N) {
    (void)ctx;
    DSV3_CALL(dsv3_check_labels_count(count, labels, N));
    int64_t counted = 0;
#pragma omp parallel for schedule(static) reduction(+ : counted) if (N >= TOKENS_PARALLEL_MIN)
    for (int64_t n = 0; n < N; n++)
        counted += labels[n] != DSV3_IGNORE_INDEX;
    *count = counted;
    return DSV3_OK;
}
