// rmsnorm.cu: RMSNorm (torch.nn.RMSNorm) forward and backward on the GPU (CUDA versions of
// kernels.h's rmsnorm_forward and rmsnorm_backward), for fp32 or bf16 activations and weight;
// rstd and dweight are fp32.
//
// Forward, per row: rstd = 1 / sqrt(mean(x²) + eps), y = x · rstd · w.
// Backward, per row, with s = Σ_k dy_k w_k x_k:
//   dx_j = rstd · w_j · dy_j − x_j · rstd³ · s / D        (written)
//   dw_j += Σ_n dy_nj · x_nj · rstd_n                     (added)
// The row sums (Σ x², s) are accumulated in double, as the CPU reference does, by one block
// per row (grid-stride over the rows) in a fixed order. The weight gradient is a second kernel:
// a block per 32 columns, whose DWEIGHT_ROW_GROUPS warps sum interleaved rows in double and
// then add their partials in warp order — deterministic, no atomics, no workspace.
//
// Legend: N rows (tokens), D normalised width.
#include <math.h>
#include <stdint.h>

#include "kernels/checks.h"
#include "kernels/cuda/cuda_kernels.cuh"

enum {
    RMSNORM_THREADS = CUDA_THREADS, // per row
    // The weight gradient's blocks: CUDA_WARP columns × DWEIGHT_ROW_GROUPS interleaved row
    // sets, so that each warp reads 32 consecutive columns of a row.
    DWEIGHT_COLUMNS = CUDA_WARP,
    DWEIGHT_ROW_GROUPS = 16,
};

// ---- forward ----

// out (N, D) and rstd (N) from x (N, D) and weight (D), one block per row.
template <typename T>
static __global__ void rmsnorm_forward_kernel(T *out, float *rstd, const T *x, const T *weight,
                                              int64_t N, int64_t D, float eps) {
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        const T *xr = x + n * D; // (D)
        T *yr = out + n * D;     // (D)
        double squares = 0;
        for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
            const double v = cuda_load(xr, j);
            squares += v * v;
        }
        squares = cuda_block_sum(squares);
        const float r = (float)(1.0 / sqrt(squares / (double)D + (double)eps));
        if (threadIdx.x == 0) rstd[n] = r;
        for (int64_t j = threadIdx.x; j < D; j += blockDim.x)
            cuda_store(yr, j, cuda_load(xr, j) * r * cuda_load(weight, j));
    }
}

template <typename T>
static Dsv3Err rmsnorm_forward_launch(const Dsv3KernelContext *ctx, void *out, float *rstd,
                                      const void *x, const void *weight, int64_t N, int64_t D,
                                      float eps) {
    rmsnorm_forward_kernel<T><<<cuda_blocks(N, 1), RMSNORM_THREADS, 0, cuda_stream(ctx)>>>(
        (T *)out, rstd, (const T *)x, (const T *)weight, N, D, eps);
    CUDA_LAUNCHED();
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_rmsnorm_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                             void *out, float *rstd, const void *x,
                                             const void *weight, int64_t N, int64_t D, float eps) {
    DSV3_CALL(dsv3_cuda_check_dtype(dtype, "rmsnorm_forward"));
    DSV3_CALL(dsv3_check_rmsnorm_forward(out, rstd, x, weight, N, D, eps));
    if (N == 0) return DSV3_OK;
    return dtype == DSV3_TENSOR_BF16
               ? rmsnorm_forward_launch<__nv_bfloat16>(ctx, out, rstd, x, weight, N, D, eps)
               : rmsnorm_forward_launch<float>(ctx, out, rstd, x, weight, N, D, eps);
}

// ---- backward ----

// dx (N, D) from dout, x (N, D), weight (D) and rstd (N), one block per row.
template <typename T>
static __global__ void rmsnorm_backward_dx_kernel(T *dx, const T *dout, const T *x, const T *weight,
                                                  const float *rstd, int64_t N, int64_t D) {
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        const T *xr = x + n * D;    // (D)
        const T *gr = dout + n * D; // (D)
        T *dxr = dx + n * D;        // (D)
        double s = 0;               // Σ_k dy_k w_k x_k
        for (int64_t j = threadIdx.x; j < D; j += blockDim.x)
            s += (double)cuda_load(gr, j) * cuda_load(weight, j) * cuda_load(xr, j);
        s = cuda_block_sum(s);
        const float r = rstd[n];
        const float c = (float)((double)r * r * r * s / (double)D);
        for (int64_t j = threadIdx.x; j < D; j += blockDim.x)
            cuda_store(dxr, j, r * cuda_load(weight, j) * cuda_load(gr, j) - cuda_load(xr, j) * c);
    }
}

// dweight (D) += Σ_n dout[n, j] · x[n, j] · rstd[n]: a block per DWEIGHT_COLUMNS columns
// (grid-stride), thread (column c, group g) summing the rows g, g + DWEIGHT_ROW_GROUPS, …;
// then the groups' partials are added in group order.
template <typename T>
static __global__ void rmsnorm_backward_dweight_kernel(float *dweight, const T *dout, const T *x,
                                                       const float *rstd, int64_t N, int64_t D) {
    __shared__ double partial[DWEIGHT_ROW_GROUPS][DWEIGHT_COLUMNS];
    for (int64_t first = (int64_t)blockIdx.x * DWEIGHT_COLUMNS; first < D;
         first += (int64_t)gridDim.x * DWEIGHT_COLUMNS) {
        const int64_t j = first + threadIdx.x;
        double sum = 0;
        if (j < D)
            for (int64_t n = threadIdx.y; n < N; n += DWEIGHT_ROW_GROUPS)
                sum += (double)cuda_load(dout, n * D + j) * cuda_load(x, n * D + j) * rstd[n];
        partial[threadIdx.y][threadIdx.x] = sum;
        __syncthreads();
        if (threadIdx.y == 0 && j < D) {
            double total = 0;
            for (int g = 0; g < DWEIGHT_ROW_GROUPS; g++)
                total += partial[g][threadIdx.x];
            dweight[j] += (float)total;
        }
        __syncthreads(); // partial is rewritten by the next columns
    }
}

template <typename T>
static Dsv3Err rmsnorm_backward_launch(const Dsv3KernelContext *ctx, void *dx, float *dweight,
                                       const void *dout, const void *x, const void *weight,
                                       const float *rstd, int64_t N, int64_t D) {
    cudaStream_t stream = cuda_stream(ctx);
    // dweight first: it reads dout and x whole, which the dx kernel could overwrite if a caller
    // passed dx aliasing one of them (the dx kernel itself reads each element before writing).
    const dim3 threads(DWEIGHT_COLUMNS, DWEIGHT_ROW_GROUPS);
    rmsnorm_backward_dweight_kernel<T><<<cuda_blocks(D, DWEIGHT_COLUMNS), threads, 0, stream>>>(
        dweight, (const T *)dout, (const T *)x, rstd, N, D);
    CUDA_LAUNCHED();
    rmsnorm_backward_dx_kernel<T><<<cuda_blocks(N, 1), RMSNORM_THREADS, 0, stream>>>(
        (T *)dx, (const T *)dout, (const T *)x, (const T *)weight, rstd, N, D);
    CUDA_LAUNCHED();
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_rmsnorm_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                              void *dx, float *dweight, const void *dout,
                                              const void *x, const void *weight, const float *rstd,
                                              int64_t N, int64_t D) {
    DSV3_CALL(dsv3_cuda_check_dtype(dtype, "rmsnorm_backward"));
    DSV3_CALL(dsv3_check_rmsnorm_backward(dx, dweight, dout, x, weight, rstd, N, D));
    if (N == 0) return DSV3_OK;
    return dtype == DSV3_TENSOR_BF16
               ? rmsnorm_backward_launch<__nv_bfloat16>(ctx, dx, dweight, dout, x, weight, rstd, N,
                                                        D)
               : rmsnorm_backward_launch<float>(ctx, dx, dweight, dout, x, weight, rstd, N, D);
}
