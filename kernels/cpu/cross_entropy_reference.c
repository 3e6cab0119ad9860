// cross_entropy_reference.c: the output head fused with the cross-entropy loss, written for
// clarity.
//
// Materialises all N × V logits in double in the context's workspace (so it ignores `chunk`
// beyond checking it), takes a stable log-softmax per row and the gradient of
// grad_scale × loss_sum:
//   dlogits = grad_scale · (softmax − onehot) on counted rows, 0 on ignored ones,
//   dh = dlogits · W,   dW += dlogitsᵀ · h.
//
// Legend: N tokens, D model width, V vocabulary.
#include <math.h>
#include <stdint.h>

#include <string.h>

#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

// Workspace: dlogits (N, V) doubles.
size_t dsv3_cpu_reference_cross_entropy_workspace(const Dsv3OpShape *shape) {
    Dsv3CpuLayout layout = {0};
    if (shape->N > 0 && shape->V > 0 && shape->N > INT64_MAX / shape->V) return SIZE_MAX;
    dsv3_cpu_layout_add(&layout, shape->N * shape->V, sizeof(double));
    return layout.bytes;
}

Dsv3Err dsv3_cpu_reference_cross_entropy(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                         double *loss_sum, void *dh_, float *dweight,
                                         const void *h_, const void *weight_, const int32_t *labels,
                                         int64_t N, int64_t D, int64_t V, float grad_scale,
                                         int64_t chunk) {
    DSV3_CALL(dsv3_cpu_check_f32("cross_entropy", dtype));
    float *dh = dh_;                        // (N, D)
    const float *h = h_, *weight = weight_; // (N, D), (V, D)
    DSV3_CALL(
        dsv3_cpu_check_cross_entropy(loss_sum, dh, dweight, h, weight, labels, N, D, V, chunk));
    const Dsv3OpShape shape = {.N = N, .V = V, .chunk = chunk};
    DSV3_CALL(dsv3_cpu_check_workspace(ctx, "cross_entropy",
                                       dsv3_cpu_reference_cross_entropy_workspace(&shape)));
    *loss_sum = 0;
    if (N == 0) return DSV3_OK;

    double *dlogits = ctx->workspace; // (N, V): the logits, then their gradient
    memset(dlogits, 0, (size_t)(N * V) * sizeof(double));
    double loss = 0;
    for (int64_t n = 0; n < N; n++) {
        double *row = dlogits + n * V;
        if (labels[n] == DSV3_IGNORE_INDEX) continue; // row stays zero
        for (int64_t v = 0; v < V; v++) {
            double dot = 0;
            for (int64_t d = 0; d < D; d++)
                dot += (double)h[n * D + d] * weight[v * D + d];
            row[v] = dot;
        }
        double max = row[0];
        for (int64_t v = 1; v < V; v++)
            if (row[v] > max) max = row[v];
        double sum = 0;
        for (int64_t v = 0; v < V; v++)
            sum += exp(row[v] - max);
        double log_sum_exp = max + log(sum);
        loss += log_sum_exp - row[labels[n]];
        for (int64_t v = 0; v < V; v++)
            row[v] = grad_scale * exp(row[v] - log_sum_exp);
        row[labels[n]] -= grad_scale;
    }
    *loss_sum = loss;

    if (dh != NULL) {
        for (int64_t n = 0; n < N; n++)
            for (int64_t d = 0; d < D; d++) {
                double sum = 0;
                for (int64_t v = 0; v < V; v++)
                    sum += dlogits[n * V + v] * weight[v * D + d];
                dh[n * D + d] = (float)sum;
            }
        for (int64_t v = 0; v < V; v++)
            for (int64_t d = 0; d < D; d++) {
                double sum = 0;
                for (int64_t n = 0; n < N; n++)
                    sum += dlogits[n * V + v] * h[n * D + d];
                dweight[v * D + d] += (float)sum;
            }
    }
    return DSV3_OK;
}

// cross_entropy_logits: each row's log-softmax in double, one row at a time (no workspace).
Dsv3Err dsv3_cpu_reference_cross_entropy_logits(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                                double *loss_sum, float *dlogits,
                                                const float *logits, const int32_t *labels,
                                                int64_t N, int64_t V, float grad_scale) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("cross_entropy_logits", dtype));
    DSV3_CALL(dsv3_cpu_check_cross_entropy_logits(loss_sum, logits, labels, N, V));
    double loss = 0;
    for (int64_t n = 0; n < N; n++) {
        const float *row = logits + n * V; // (V)
        float *drow = dlogits ? dlogits + n * V : NULL;
        if (labels[n] == DSV3_IGNORE_INDEX) {
            for (int64_t v = 0; drow && v < V; v++)
                drow[v] = 0.0f;
            continue;
        }
        double max = row[0];
        for (int64_t v = 1; v < V; v++)
            if (row[v] > max) max = row[v];
        double sum = 0;
        for (int64_t v = 0; v < V; v++)
            sum += exp((double)row[v] - max);
        const double log_sum_exp = max + log(sum), target = row[labels[n]];
        loss += log_sum_exp - target;
        for (int64_t v = 0; drow && v < V; v++) // row[v] is read before drow[v] is written
            drow[v] = (float)(grad_scale *
                              (exp((double)row[v] - log_sum_exp) - (v == labels[n] ? 1.0 : 0.0)));
    }
    *loss_sum = loss;
    return DSV3_OK;
}
