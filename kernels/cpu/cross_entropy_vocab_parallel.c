// cross_entropy_vocab_parallel.c: the output head and cross-entropy with the head split over
// ranks by vocabulary rows (fast CPU version). One rank's slice is the V rows
// [vocab_start, vocab_start + V) of the head; the caller reduces row_max (max) and sums (sum)
// over the ranks between the three ops (kernels.h). Per chunk of n tokens:
//   vocab_logits:          logits (n, V) = h (n, D) · W (V, D)ᵀ        GEMM; row maxima
//   vocab_logits_sums:     per row s = Σ exp(l − m) (double), and the label's logit if it is
//                          in the slice
//   vocab_logits_backward: loss += m + log s − l[label] per counted row, in row order;
//                          dlogits = grad_scale · (softmax − onehot), in place
//                          dh (n, D) = dlogits (n, V) · W (V, D)       GEMM
//                          dW (V, D) += dlogits (n, V)ᵀ · h (n, D)     GEMM, beta = 1
// The arithmetic of each row is cross_entropy.c's (vec_exp, sums in double, the same factor
// grad_scale / s), so that with one slice the ops give the fused op's loss and gradients. The
// ops need no workspace: the logits are the caller's.
//
// Legend: n tokens of a chunk, D model width, V rows of the slice.
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/vec_exp.h"

// OpenBLAS takes its sizes as 32-bit ints (the LP64 interface); the other checks are shared
// with the reference version (checks.h).
static Dsv3Err vocab_check_blas_sizes(const char *op, int64_t n, int64_t D, int64_t V) {
    DSV3_CHECK(n >= 0 && n <= INT_MAX, DSV3_ERR_USAGE,
               "%s: n = %" PRId64 " tokens, expected 0 <= n <= %d", op, n, INT_MAX);
    DSV3_CHECK(D > 0 && D <= INT_MAX, DSV3_ERR_USAGE, "%s: D = %" PRId64 ", expected 0 < D <= %d",
               op, D, INT_MAX);
    DSV3_CHECK(V > 0 && V <= INT_MAX, DSV3_ERR_USAGE, "%s: V = %" PRId64 ", expected 0 < V <= %d",
               op, V, INT_MAX);
    return DSV3_OK;
}

// The column of the slice that holds `label`'s logit, or -1 when the label is ignored or
// belongs to another slice.
static int64_t vocab_label_column(int32_t label, int64_t V, int64_t vocab_start) {
    if (label == DSV3_IGNORE_INDEX) return -1;
    const int64_t column = label - vocab_start;
    return column >= 0 && column < V ? column : -1;
}

Dsv3Err dsv3_cpu_vocab_logits(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, float *logits,
                              float *row_max, const void *h_, const void *weight_, int64_t n,
                              int64_t D, int64_t V) {
    DSV3_CALL(dsv3_cpu_check_f32("vocab_logits", dtype));
    const float *h = h_, *weight = weight_; // (n, D), (V, D)
    DSV3_CALL(vocab_check_blas_sizes("vocab_logits", n, D, V));
    DSV3_CALL(dsv3_check_vocab_logits(logits, row_max, h, weight, n, D, V));
    if (n == 0) return DSV3_OK;
    dsv3_cpu_gemm(ctx, DSV3_GEMM_NO_TRANS, DSV3_GEMM_TRANS, n, V, D, 1.0f, h, D, weight, D, 0.0f,
                  logits, V);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const float *row = logits + i * V; // (V)
        float m = row[0];
#pragma omp simd reduction(max : m)
        for (int64_t j = 1; j < V; j++)
            m = row[j] > m ? row[j] : m;
        row_max[i] = m;
    }
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_vocab_logits_sums(const Dsv3KernelContext *ctx, double *sums, const float *logits,
                                   const float *row_max, const int32_t *labels, int64_t n,
                                   int64_t V, int64_t vocab_start) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_vocab_logits_sums(sums, logits, row_max, labels, n, V, vocab_start));
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const float *row = logits + i * V; // (V)
        const float m = row_max[i];
        // The exponentials are summed in double: a row of all ranks holds up to ~10^5 terms.
        double s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < V; j++)
            s += vec_exp(row[j] - m);
        sums[i] = s;
        const int64_t column = vocab_label_column(labels[i], V, vocab_start);
        sums[n + i] = column >= 0 ? (double)row[column] : 0.0;
    }
    return DSV3_OK;
}

// One counted row of logits (V) overwritten with grad_scale · (softmax − onehot(column)), the
// softmax from the row maximum m and the sum s of all ranks; column -1: the label is elsewhere.
static void vocab_row_gradient(float *row, float m, double s, int64_t column, int64_t V,
                               float grad_scale) {
    const float factor = (float)((double)grad_scale / s);
#pragma omp simd
    for (int64_t j = 0; j < V; j++)
        row[j] = vec_exp(row[j] - m) * factor;
    if (column >= 0) row[column] -= grad_scale;
}

Dsv3Err dsv3_cpu_vocab_logits_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                       double *loss_sum, void *dh_, float *dweight, float *logits,
                                       const float *row_max, const double *sums, const void *h_,
                                       const void *weight_, const int32_t *labels, int64_t n,
                                       int64_t D, int64_t V, int64_t vocab_start,
                                       float grad_scale) {
    DSV3_CALL(dsv3_cpu_check_f32("vocab_logits_backward", dtype));
    float *dh = dh_;                        // (n, D)
    const float *h = h_, *weight = weight_; // (n, D), (V, D)
    DSV3_CALL(vocab_check_blas_sizes("vocab_logits_backward", n, D, V));
    DSV3_CALL(dsv3_cpu_check_vocab_logits_backward(loss_sum, dh, dweight, logits, row_max, sums, h,
                                                   weight, labels, n, D, V, vocab_start));
    // The loss in row order (n logarithms: one thread), as cross_entropy sums its rows.
    double total = 0;
    int64_t counted = 0;
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] == DSV3_IGNORE_INDEX) continue;
        total += (double)row_max[i] + log(sums[i]) - sums[n + i];
        counted++;
    }
    *loss_sum = total;
    if (dh == NULL) return DSV3_OK;
    if (counted == 0) { // nothing to learn from this chunk: skip its two GEMMs
        memset(dh, 0, (size_t)(n * D) * sizeof(float));
        return DSV3_OK;
    }

#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float *row = logits + i * V; // (V), then its dlogits
        if (labels[i] == DSV3_IGNORE_INDEX)
            memset(row, 0, (size_t)V * sizeof(float));
        else
            vocab_row_gradient(row, row_max[i], sums[i],
                               vocab_label_column(labels[i], V, vocab_start), V, grad_scale);
    }
    dsv3_cpu_gemm(ctx, DSV3_GEMM_NO_TRANS, DSV3_GEMM_NO_TRANS, n, D, V, 1.0f, logits, V, weight, D,
                  0.0f, dh, D);
    dsv3_cpu_gemm(ctx, DSV3_GEMM_TRANS, DSV3_GEMM_NO_TRANS, V, D, n, 1.0f, logits, V, h, D, 1.0f,
                  dweight, D);
    return DSV3_OK;
}
