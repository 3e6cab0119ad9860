// optimizer: the AdamW step, and the sum of squares and scaling that gradient clipping needs,
// on fp32 master state (CUDA backend).
//
// adamw_step computes every element exactly as the reference (adamw_reference.c) does: in
// double, rounded once when stored, with the bias corrections computed on the host by the same
// pow. The device arithmetic goes through the _rn intrinsics, which nvcc never fuses into FMAs,
// so each operation rounds as the reference's (compiled without contraction) does and the
// results are the reference's bits. sum_squares is a fixed-order two-pass reduction in double
// (per-block partials in the context's reduce_partials, then one block), so its result depends
// on n only. scale is element-wise.
//
// Not here: the gradient-norm bookkeeping over parameter groups and ranks (the trainer's).
//
// Legend: n elements of one flat parameter buffer (and of its gradient and moments).
#include <math.h>
#include <stdint.h>

#include "kernels/checks.h"
#include "kernels/cuda/cuda_kernels.cuh"

// ---- adamw_step ----

// The step's scalars, in double as the reference computes them.
struct AdamwScalars {
    double lr, beta1, beta2, eps;
    double decay;            // 1 − lr·wd
    double one_minus_beta1;  // 1 − β1
    double one_minus_beta2;  // 1 − β2
    double bias_correction1; // 1 − β1^step
    double bias_correction2; // 1 − β2^step
};

// param, m, v (n) updated from grad (n), element by element.
__global__ void adamw_kernel(float *param, const float *grad, float *m, float *v, int64_t n,
                             AdamwScalars s) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const double g = grad[i];
        const double p = __dmul_rn((double)param[i], s.decay);
        const double mi =
            __dadd_rn(__dmul_rn(s.beta1, (double)m[i]), __dmul_rn(s.one_minus_beta1, g));
        const double vi = __dadd_rn(__dmul_rn(s.beta2, (double)v[i]),
                                    __dmul_rn(__dmul_rn(s.one_minus_beta2, g), g));
        const double m_hat = __ddiv_rn(mi, s.bias_correction1);
        const double v_hat = __ddiv_rn(vi, s.bias_correction2);
        // p − lr · m̂ / (sqrt(v̂) + eps), left to right as in the reference.
        const double update =
            __ddiv_rn(__dmul_rn(s.lr, m_hat), __dadd_rn(__dsqrt_rn(v_hat), s.eps));
        param[i] = __double2float_rn(__dsub_rn(p, update));
        m[i] = __double2float_rn(mi);
        v[i] = __double2float_rn(vi);
    }
}

extern "C" Dsv3Err dsv3_cuda_adamw_step(const Dsv3KernelContext *ctx, float *param,
                                        const float *grad, float *m, float *v, int64_t n,
                                        const Dsv3AdamWArgs *args) {
    DSV3_CALL(dsv3_check_adamw(param, grad, m, v, n, args));
    if (n == 0) return DSV3_OK;
    AdamwScalars s;
    s.lr = args->lr;
    s.beta1 = args->beta1;
    s.beta2 = args->beta2;
    s.eps = args->eps;
    s.decay = 1.0 - s.lr * (double)args->weight_decay;
    s.one_minus_beta1 = 1.0 - s.beta1;
    s.one_minus_beta2 = 1.0 - s.beta2;
    s.bias_correction1 = 1.0 - pow(s.beta1, (double)args->step);
    s.bias_correction2 = 1.0 - pow(s.beta2, (double)args->step);
    adamw_kernel<<<cuda_blocks(n, CUDA_THREADS), CUDA_THREADS, 0, cuda_stream(ctx)>>>(param, grad,
                                                                                      m, v, n, s);
    CUDA_LAUNCHED();
    return DSV3_OK;
}

// ---- sum_squares ----

// Pass one: partials[b] = Σ x² over the elements block b visits (a fixed grid-stride share of
// CUDA_REDUCE_BLOCKS blocks of CUDA_THREADS threads), in double.
__global__ void sum_squares_partials_kernel(double *partials, const float *x, int64_t n) {
    double sum = 0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const double xi = x[i];
        sum += xi * xi; // exact in double: fusing it changes nothing
    }
    sum = cuda_block_sum(sum);
    if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

// Pass two, one block of CUDA_REDUCE_BLOCKS threads: *out = Σ partials.
__global__ void sum_squares_total_kernel(double *out, const double *partials) {
    const double total = cuda_block_sum(partials[threadIdx.x]);
    if (threadIdx.x == 0) *out = total;
}

static_assert(CUDA_REDUCE_BLOCKS % CUDA_WARP == 0 && CUDA_REDUCE_BLOCKS <= 1024,
              "the second pass runs one thread per partial in one block");

extern "C" Dsv3Err dsv3_cuda_sum_squares(const Dsv3KernelContext *ctx, double *out, const float *x,
                                         int64_t n) {
    DSV3_CALL(dsv3_check_sum_squares(out, x, n));
    if (n == 0) { // the sum of nothing: +0.0, all zero bits
        CUDA_CALL(cudaMemsetAsync(out, 0, sizeof(double), cuda_stream(ctx)));
        return DSV3_OK;
    }
    double *partials = cuda_state(ctx)->reduce_partials; // (CUDA_REDUCE_BLOCKS)
    sum_squares_partials_kernel<<<CUDA_REDUCE_BLOCKS, CUDA_THREADS, 0, cuda_stream(ctx)>>>(partials,
                                                                                           x, n);
    CUDA_LAUNCHED();
    sum_squares_total_kernel<<<1, CUDA_REDUCE_BLOCKS, 0, cuda_stream(ctx)>>>(out, partials);
    CUDA_LAUNCHED();
    return DSV3_OK;
}

// ---- scale ----

__global__ void scale_kernel(float *x, int64_t n, float factor) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        x[i] *= factor;
}

extern "C" Dsv3Err dsv3_cuda_scale(const Dsv3KernelContext *ctx, float *x, int64_t n,
                                   float factor) {
    DSV3_CALL(dsv3_check_scale(x, n));
    if (n == 0) return DSV3_OK;
    scale_kernel<<<cuda_blocks(n, CUDA_THREADS), CUDA_THREADS, 0, cuda_stream(ctx)>>>(x, n, factor);
    CUDA_LAUNCHED();
    return DSV3_OK;
}
