// cross_entropy_reference.c: the output head fused with the cross-entropy loss, written for
// clarity.
//
// Materialises all N × V logits in double (so it ignores `chunk` beyond checking it), takes a
// stable log-softmax per row and the gradient of grad_scale × loss_sum:
//   dlogits = grad_scale · (softmax − onehot) on counted rows, 0 on ignored ones,
//   dh = dlogits · W,   dW += dlogitsᵀ · h.
//
// Legend: N tokens, D model width, V vocabulary.
#include <math.h>
#include <stdint.h>

#include "common/core/alloc.h"
#include "kernels/cpu/checks.h"
#include "kernels/kernels_reference.h"

Dsv3Err dsv3_cross_entropy_reference(double *loss_sum, float *dh, float *dweight, const float *h,
                                     const float *weight, const int32_t *labels, int64_t N,
                                     int64_t D, int64_t V, float grad_scale, int64_t chunk) {
    DSV3_CALL(
        dsv3_cpu_check_cross_entropy(loss_sum, dh, dweight, h, weight, labels, N, D, V, chunk));
    *loss_sum = 0;
    if (N == 0) return DSV3_OK;

    double *dlogits = NULL; // (N, V): the logits, then their gradient
    DSV3_CALL(dsv3_calloc((void **)&dlogits, (size_t)N * (size_t)V, sizeof(double),
                          "reference cross-entropy logits"));
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
    dsv3_free(dlogits);
    return DSV3_OK;
}
