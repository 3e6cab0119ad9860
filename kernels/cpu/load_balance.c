// load_balance.c: the aux-loss-free load balancing of the MoE router (fast CPU version):
// tokens per expert accumulated over micro-batches, and the expert-bias update of a step.
//
// The update is torchtitan's: δ = coeff · sign(mean(n) − n), bias += δ − mean(δ), in double,
// with the mean of δ summed in expert order and each expert's δ recomputed when it is added
// (no scratch); only the final increment is rounded to float. E is small (experts of one
// layer), so both ops run on one thread.
//
// Legend: E experts, n elements.
#include <stdint.h>

#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

Dsv3Err dsv3_cpu_counts_accumulate(const Dsv3KernelContext *ctx, int64_t *total,
                                   const int64_t *counts, int64_t n) {
    (void)ctx;
    DSV3_CALL(dsv3_check_counts_accumulate(total, counts, n));
#pragma omp simd
    for (int64_t i = 0; i < n; i++)
        total[i] += counts[i];
    return DSV3_OK;
}

// −1, 0 or 1.
static double sign_of(double x) { return (double)((x > 0) - (x < 0)); }

Dsv3Err dsv3_cpu_expert_bias_update(const Dsv3KernelContext *ctx, float *bias,
                                    const int64_t *counts, int64_t E, double coeff) {
    (void)ctx;
    DSV3_CALL(dsv3_check_expert_bias_update(bias, counts, E, coeff));
    double mean_count = 0;
    for (int64_t e = 0; e < E; e++)
        mean_count += (double)counts[e];
    mean_count /= (double)E;
    double delta_mean = 0;
    for (int64_t e = 0; e < E; e++)
        delta_mean += coeff * sign_of(mean_count - (double)counts[e]);
    delta_mean /= (double)E;
    for (int64_t e = 0; e < E; e++)
        bias[e] += (float)(coeff * sign_of(mean_count - (double)counts[e]) - delta_mean);
    return DSV3_OK;
}
