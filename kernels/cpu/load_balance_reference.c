// load_balance_reference.c: the aux-loss-free load balancing of the MoE router, written for
// clarity: tokens per expert accumulated over micro-batches, and the expert-bias update of a
// step (torchtitan's), bias += δ − mean(δ) with δ = coeff · sign(mean(n) − n). Since every δ is
// ±coeff or 0, mean(δ) = coeff · (experts below the mean − experts above it) / E, in double.
//
// Legend: E experts, n elements.
#include <stdint.h>

#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

Dsv3Err dsv3_cpu_reference_counts_accumulate(const Dsv3KernelContext *ctx, int64_t *total,
                                             const int64_t *counts, int64_t n) {
    (void)ctx;
    DSV3_CALL(dsv3_check_counts_accumulate(total, counts, n));
    for (int64_t i = 0; i < n; i++)
        total[i] = total[i] + counts[i];
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_reference_expert_bias_update(const Dsv3KernelContext *ctx, float *bias,
                                              const int64_t *counts, int64_t E, double coeff) {
    (void)ctx;
    DSV3_CALL(dsv3_check_expert_bias_update(bias, counts, E, coeff));
    int64_t total = 0;
    for (int64_t e = 0; e < E; e++)
        total += counts[e];
    const double mean = (double)total / (double)E;
    int64_t below = 0, above = 0;
    for (int64_t e = 0; e < E; e++) {
        below += (double)counts[e] < mean;
        above += (double)counts[e] > mean;
    }
    const double delta_mean = coeff * (double)(below - above) / (double)E;
    for (int64_t e = 0; e < E; e++) {
        const double count = (double)counts[e];
        const double delta = count < mean ? coeff : (count > mean ? -coeff : 0.0);
        bias[e] = (float)((double)bias[e] + (delta - delta_mean));
    }
    return DSV3_OK;
}
