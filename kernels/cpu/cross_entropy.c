// cross_entropy.c: the output head fused with the cross-entropy loss (fast CPU version).
//
// The logits of a whole batch (N × V, e.g. 16k tokens × 129k words) would not fit in memory,
// so the tokens go through in chunks of at most `chunk` rows, each chunk doing:
//   logits (C, V) = h_c (C, D) · W (V, D)ᵀ                          sgemm
//   per row: m = max, s = Σ exp(l − m) (double), lse = m + log s,
//            loss += lse − l[label];  dlogits = grad_scale · (softmax − onehot), in place
//   dh_c (C, D) = dlogits (C, V) · W (V, D)                           sgemm
//   dW (V, D) += dlogits (C, V)ᵀ · h_c (C, D)                        sgemm, beta = 1
// Rows whose label is DSV3_IGNORE_INDEX add nothing to the loss and get zero gradients. The
// per-row losses of a chunk are summed in row order, so the loss does not depend on the
// thread count. The chunk's logits and row losses live in the context's workspace.
//
// Legend: N tokens, D model width, V vocabulary, C rows of one chunk (C ≤ chunk).

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
static Dsv3Err cross_entropy_check_blas_sizes(int64_t N, int64_t D, int64_t V) {
    DSV3_CHECK(N >= 0 && N <= INT_MAX, DSV3_ERR_USAGE,
               "cross_entropy: N = %" PRId64 " tokens, expected 0 <= N <= %d", N, INT_MAX);
    DSV3_CHECK(D > 0 && D <= INT_MAX, DSV3_ERR_USAGE,
               "cross_entropy: D = %" PRId64 ", expected 0 < D <= %d", D, INT_MAX);
    DSV3_CHECK(V > 0 && V <= INT_MAX, DSV3_ERR_USAGE,
               "cross_entropy: V = %" PRId64 ", expected 0 < V <= %d", V, INT_MAX);
    return DSV3_OK;
}

// One row of logits (V): returns logsumexp − logit[label]; when `grad` is set, overwrites the
// row with grad_scale · (softmax − onehot(label)). The exponentials are summed in double: a
// row holds up to ~10^5 terms.
static double cross_entropy_row(float *row, int32_t label, int64_t V, int grad, float grad_scale) {
    float m = row[0];
#pragma omp simd reduction(max : m)
    for (int64_t v = 1; v < V; v++)
        m = row[v] > m ? row[v] : m;
    const double target = row[label];
    double s = 0;
    if (grad) {
#pragma omp simd reduction(+ : s)
        for (int64_t v = 0; v < V; v++) {
            const float e = vec_exp(row[v] - m);
            row[v] = e;
            s += e;
        }
        const float factor = (float)((double)grad_scale / s);
#pragma omp simd
        for (int64_t v = 0; v < V; v++)
            row[v] *= factor;
        row[label] -= grad_scale;
    } else {
#pragma omp simd reduction(+ : s)
        for (int64_t v = 0; v < V; v++)
            s += vec_exp(row[v] - m);
    }
    return (double)m + log(s) - target;
}

// Workspace: logits (C, V) floats, then row_loss (C) doubles, C = min(chunk, N) rows.
// *row_loss_offset (when not NULL) gets row_loss's offset.
static size_t cross_entropy_workspace(const Dsv3OpShape *shape, size_t *row_loss_offset) {
    const int64_t rows = shape->chunk < shape->N ? shape->chunk : shape->N;
    Dsv3CpuLayout layout = {0};
    if (rows > 0 && shape->V > 0 && rows > INT64_MAX / shape->V) return SIZE_MAX;
    dsv3_cpu_layout_add(&layout, rows * shape->V, sizeof(float));
    const size_t row_loss = dsv3_cpu_layout_add(&layout, rows, sizeof(double));
    if (row_loss_offset) *row_loss_offset = row_loss;
    return layout.bytes;
}

size_t dsv3_cpu_cross_entropy_workspace(const Dsv3OpShape *shape, int threads) {
    (void)threads;
    return cross_entropy_workspace(shape, NULL);
}

Dsv3Err dsv3_cpu_cross_entropy(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                               double *loss_sum, void *dh_, float *dweight, const void *h_,
                               const void *weight_, const int32_t *labels, int64_t N, int64_t D,
                               int64_t V, float grad_scale, int64_t chunk) {
    DSV3_CALL(dsv3_cpu_check_f32("cross_entropy", dtype));
    float *dh = dh_;                        // (N, D)
    const float *h = h_, *weight = weight_; // (N, D), (V, D)
    DSV3_CALL(cross_entropy_check_blas_sizes(N, D, V));
    DSV3_CALL(
        dsv3_cpu_check_cross_entropy(loss_sum, dh, dweight, h, weight, labels, N, D, V, chunk));
    const int64_t rows = chunk < N ? chunk : N; // C at most
    DSV3_CHECK((uint64_t)rows <= SIZE_MAX / sizeof(float) / (uint64_t)V, DSV3_ERR_USAGE,
               "cross_entropy: chunk %" PRId64 " × V %" PRId64 " logits do not fit in memory", rows,
               V);
    const Dsv3OpShape shape = {.N = N, .V = V, .chunk = chunk};
    size_t row_loss_offset = 0;
    DSV3_CALL(dsv3_cpu_check_workspace(ctx, "cross_entropy",
                                       cross_entropy_workspace(&shape, &row_loss_offset)));
    *loss_sum = 0;
    if (N == 0) return DSV3_OK;
    const int grad = dh != NULL;
    float *logits = ctx->workspace;                                 // (C, V), then dlogits
    double *row_loss = dsv3_cpu_workspace_at(ctx, row_loss_offset); // (C)

    double total = 0;
    for (int64_t n0 = 0; n0 < N; n0 += rows) {
        const int64_t C = N - n0 < rows ? N - n0 : rows;
        const float *hc = h + n0 * D;    // (C, D)
        const int32_t *lc = labels + n0; // (C)
        int64_t counted = 0;
        for (int64_t r = 0; r < C; r++)
            counted += lc[r] != DSV3_IGNORE_INDEX;
        if (counted == 0) { // nothing to learn from this chunk: skip its three GEMMs
            if (grad) memset(dh + n0 * D, 0, (size_t)(C * D) * sizeof(float));
            continue;
        }

        dsv3_cpu_gemm(ctx, DSV3_GEMM_NO_TRANS, DSV3_GEMM_TRANS, (int)C, (int)V, (int)D, 1.0f, hc,
                      (int)D, weight, (int)D, 0.0f, logits, (int)V);
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < C; r++) {
            float *row = logits + r * V; // (V)
            if (lc[r] == DSV3_IGNORE_INDEX) {
                row_loss[r] = 0;
                if (grad) memset(row, 0, (size_t)V * sizeof(float));
            } else {
                row_loss[r] = cross_entropy_row(row, lc[r], V, grad, grad_scale);
            }
        }
        for (int64_t r = 0; r < C; r++)
            total += row_loss[r];

        if (grad) {
            dsv3_cpu_gemm(ctx, DSV3_GEMM_NO_TRANS, DSV3_GEMM_NO_TRANS, (int)C, (int)D, (int)V, 1.0f,
                          logits, (int)V, weight, (int)D, 0.0f, dh + n0 * D, (int)D);
            dsv3_cpu_gemm(ctx, DSV3_GEMM_TRANS, DSV3_GEMM_NO_TRANS, (int)V, (int)D, (int)C, 1.0f,
                          logits, (int)V, hc, (int)D, 1.0f, dweight, (int)D);
        }
    }
    *loss_sum = total;
    return DSV3_OK;
}

// cross_entropy_logits: the rows of given logits through cross_entropy_row. Workspace: the row
// losses (N doubles), summed in row order.
size_t dsv3_cpu_cross_entropy_logits_workspace(const Dsv3OpShape *shape, int threads) {
    (void)threads;
    Dsv3CpuLayout layout = {0};
    dsv3_cpu_layout_add(&layout, shape->N, sizeof(double));
    return layout.bytes;
}

Dsv3Err dsv3_cpu_cross_entropy_logits(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                      double *loss_sum, float *dlogits, const float *logits,
                                      const int32_t *labels, int64_t N, int64_t V,
                                      float grad_scale) {
    DSV3_CALL(dsv3_cpu_check_f32("cross_entropy_logits", dtype));
    DSV3_CALL(dsv3_cpu_check_cross_entropy_logits(loss_sum, logits, labels, N, V));
    const Dsv3OpShape shape = {.N = N};
    DSV3_CALL(dsv3_cpu_check_workspace(ctx, "cross_entropy_logits",
                                       dsv3_cpu_cross_entropy_logits_workspace(&shape, 1)));
    double *row_loss = ctx->workspace; // (N)
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *row = logits + n * V; // (V)
        float *drow = dlogits ? dlogits + n * V : NULL;
        if (drow && drow != row) memcpy(drow, row, (size_t)V * sizeof *drow);
        if (labels[n] == DSV3_IGNORE_INDEX) {
            row_loss[n] = 0;
            if (drow) memset(drow, 0, (size_t)V * sizeof *drow);
        } else {
            // Without a gradient the row is only read.
            row_loss[n] = cross_entropy_row(drow ? drow : (float *)row, labels[n], V, drow != NULL,
                                            grad_scale);
        }
    }
    double total = 0;
    for (int64_t n = 0; n < N; n++)
        total += row_loss[n];
    *loss_sum = total;
    return DSV3_OK;
}
