// cross_entropy_vocab_parallel_reference.c: the output head and cross-entropy with the head
// split over ranks by vocabulary rows, written for clarity. One rank's slice is the V rows
// [vocab_start, vocab_start + V) of the head; row_max and sums come reduced over the ranks
// (kernels.h). Dot products and sums are in double, the exponentials by the C library's exp;
// the logits and their gradient are stored in fp32, as the ops' signatures say.
//
// Legend: n tokens of a chunk, D model width, V rows of the slice.
#include <math.h>
#include <stdint.h>

#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

Dsv3Err dsv3_cpu_reference_vocab_logits(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                        float *logits, float *row_max, const void *h_,
                                        const void *weight_, int64_t n, int64_t D, int64_t V) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("vocab_logits", dtype));
    const float *h = h_, *weight = weight_; // (n, D), (V, D)
    DSV3_CALL(dsv3_check_vocab_logits(logits, row_max, h, weight, n, D, V));
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < V; j++) {
            double dot = 0;
            for (int64_t d = 0; d < D; d++)
                dot += (double)h[i * D + d] * weight[j * D + d];
            logits[i * V + j] = (float)dot;
        }
        float max = logits[i * V];
        for (int64_t j = 1; j < V; j++)
            if (logits[i * V + j] > max) max = logits[i * V + j];
        row_max[i] = max;
    }
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_reference_vocab_logits_sums(const Dsv3KernelContext *ctx, double *sums,
                                             const float *logits, const float *row_max,
                                             const int32_t *labels, int64_t n, int64_t V,
                                             int64_t vocab_start) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_vocab_logits_sums(sums, logits, row_max, labels, n, V, vocab_start));
    for (int64_t i = 0; i < n; i++) {
        double sum = 0;
        for (int64_t j = 0; j < V; j++)
            sum += exp((double)logits[i * V + j] - row_max[i]);
        sums[i] = sum;
        // The label's logit when this slice holds it (an ignored label never lies in a slice).
        const int64_t column = (int64_t)labels[i] - vocab_start;
        const int here = labels[i] != DSV3_IGNORE_INDEX && column >= 0 && column < V;
        sums[n + i] = here ? logits[i * V + column] : 0.0;
    }
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_reference_vocab_logits_backward(const Dsv3KernelContext *ctx,
                                                 Dsv3TensorDtype dtype, double *loss_sum, void *dh_,
                                                 float *dweight, float *logits,
                                                 const float *row_max, const double *sums,
                                                 const void *h_, const void *weight_,
                                                 const int32_t *labels, int64_t n, int64_t D,
                                                 int64_t V, int64_t vocab_start, float grad_scale) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("vocab_logits_backward", dtype));
    float *dh = dh_;                        // (n, D)
    const float *h = h_, *weight = weight_; // (n, D), (V, D)
    DSV3_CALL(dsv3_cpu_check_vocab_logits_backward(loss_sum, dh, dweight, logits, row_max, sums, h,
                                                   weight, labels, n, D, V, vocab_start));
    double loss = 0;
    for (int64_t i = 0; i < n; i++)
        if (labels[i] != DSV3_IGNORE_INDEX) loss += log(sums[i]) + row_max[i] - sums[n + i];
    *loss_sum = loss;
    if (dh == NULL) return DSV3_OK;

    // The logits become dlogits = grad_scale · (softmax − onehot) on counted rows, 0 on ignored.
    for (int64_t i = 0; i < n; i++) {
        const int ignored = labels[i] == DSV3_IGNORE_INDEX;
        const int64_t column = (int64_t)labels[i] - vocab_start; // outside [0, V): elsewhere
        for (int64_t j = 0; j < V; j++) {
            if (ignored) {
                logits[i * V + j] = 0.0f;
                continue;
            }
            const double softmax = exp((double)logits[i * V + j] - row_max[i]) / sums[i];
            const double onehot = j == column ? 1.0 : 0.0;
            logits[i * V + j] = (float)(grad_scale * (softmax - onehot));
        }
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t d = 0; d < D; d++) {
            double sum = 0;
            for (int64_t j = 0; j < V; j++)
                sum += (double)logits[i * V + j] * weight[j * D + d];
            dh[i * D + d] = (float)sum;
        }
    for (int64_t j = 0; j < V; j++)
        for (int64_t d = 0; d < D; d++) {
            double sum = 0;
            for (int64_t i = 0; i < n; i++)
                sum += (double)logits[i * V + j] * h[i * D + d];
            dweight[j * D + d] += (float)sum;
        }
    return DSV3_OK;
}
