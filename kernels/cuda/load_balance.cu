// load_balance: the aux-loss-free load balancing of the MoE router (CUDA backend) — tokens per
// expert accumulated over micro-batches, and the expert-bias update of a step.
//
// The update is torchtitan's, computed as the reference (load_balance_reference.c) does: with
// mean = Σ counts / E and δ = coeff · sign(mean − counts), every δ is ±coeff or 0, so mean(δ) =
// coeff · (experts below the mean − experts above it) / E; then bias = float(bias + (δ −
// mean(δ))) in double, one rounding. The integer sums are exact whatever their order, so one
// block of the update gives the reference's bits. E is small (the experts of one layer).
//
// Not here: the all-reduce of the counts over ranks (the trainer's).
//
// Legend: E experts, n elements.
#include <stdint.h>

#include "kernels/checks.h"
#include "kernels/cuda/cuda_kernels.cuh"

// ---- counts_accumulate ----

__global__ void counts_accumulate_kernel(int64_t *total, const int64_t *counts, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        total[i] += counts[i];
}

extern "C" Dsv3Err dsv3_cuda_counts_accumulate(const Dsv3KernelContext *ctx, int64_t *total,
                                               const int64_t *counts, int64_t n) {
    DSV3_CALL(dsv3_check_counts_accumulate(total, counts, n));
    if (n == 0) return DSV3_OK;
    counts_accumulate_kernel<<<cuda_blocks(n, CUDA_THREADS), CUDA_THREADS, 0, cuda_stream(ctx)>>>(
        total, counts, n);
    CUDA_LAUNCHED();
    return DSV3_OK;
}

// ---- expert_bias_update ----

// One block of CUDA_THREADS threads; bias (E) updated from counts (E).
__global__ void expert_bias_update_kernel(float *bias, const int64_t *counts, int64_t E,
                                          double coeff) {
    long long total = 0;
    for (int64_t e = threadIdx.x; e < E; e += blockDim.x)
        total += counts[e];
    total = cuda_block_sum(total); // integers: exact in any order
    const double mean = (double)total / (double)E;
    long long below = 0, above = 0;
    for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
        below += (double)counts[e] < mean;
        above += (double)counts[e] > mean;
    }
    below = cuda_block_sum(below);
    above = cuda_block_sum(above);
    const double delta_mean = coeff * (double)(below - above) / (double)E;
    for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
        const double count = (double)counts[e];
        const double delta = count < mean ? coeff : (count > mean ? -coeff : 0.0);
        bias[e] = __double2float_rn(__dadd_rn((double)bias[e], __dsub_rn(delta, delta_mean)));
    }
}

extern "C" Dsv3Err dsv3_cuda_expert_bias_update(const Dsv3KernelContext *ctx, float *bias,
                                                const int64_t *counts, int64_t E, double coeff) {
    DSV3_CALL(dsv3_check_expert_bias_update(bias, counts, E, coeff));
    expert_bias_update_kernel<<<1, CUDA_THREADS, 0, cuda_stream(ctx)>>>(bias, counts, E, coeff);
    CUDA_LAUNCHED();
    return DSV3_OK;
}
