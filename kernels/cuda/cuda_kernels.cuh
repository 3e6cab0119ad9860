// cuda_kernels: what the .cu files of the CUDA backend share, private to kernels/cuda/ — the op
// functions of its table, the checks of CUDA and cuBLASLt return codes, the state behind a
// context, element loads and stores of either dtype, launch shapes, block reductions, data
// faults, the workspace layouts and the GEMM.
//
// Every op of kernels.h has a CUDA version, dsv3_cuda_<op>, with the signature of kernels.h,
// listed by the table of backend_cuda.cu. An op checks its sizes and pointers on the host
// (DSV3_ERR_USAGE, computing nothing), then launches its kernels on the context's stream and
// returns without waiting. Tensors are device memory; an op never allocates: its scratch is a
// slice of ctx->workspace, whose size the op's workspace function computes (workspace.cu asks
// the same functions, so what dsv3_workspace_bytes promises is what the op takes).
//
// Data faults. Values the host cannot check without waiting for the device (a token id, a
// label, an expert index, a permutation entry) are checked by the kernels that read them: the
// first bad one is recorded in the context's fault record (op, position, value), the element is
// skipped, and the next dsv3_synchronize reports it as DSV3_ERR_USAGE naming the op.
//
// Numerics. fp32 tensors are computed in fp32 (cuBLASLt with CUBLAS_COMPUTE_32F, never TF32);
// bf16 tensors are read into fp32, computed in fp32 and rounded to nearest even when stored.
// When ctx->matmul_dtype is bf16, GEMMs round their fp32 operands to bf16 and sum in fp32, as
// the CPU backend's bf16 GEMMs do. Reductions run in a fixed order (no floating-point atomics
// where a sum is a result), so a result does not change from run to run.
#ifndef DSV3_KERNELS_CUDA_CUDA_KERNELS_CUH
#define DSV3_KERNELS_CUDA_CUDA_KERNELS_CUH

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "kernels/backend.h"

// ---- the op functions of the table ----

extern "C" {
#define DSV3_CUDA_OP_DECLARE(ID, name, params, args) Dsv3Err dsv3_cuda_##name params;
DSV3_KERNEL_OPS(DSV3_CUDA_OP_DECLARE)
#undef DSV3_CUDA_OP_DECLARE
}

// ---- return codes ----

// Raises DSV3_ERR_BACKEND with the runtime's description of a failed CUDA call.
#define CUDA_CALL(expr)                                                                            \
    do {                                                                                           \
        cudaError_t cuda_rc_ = (expr);                                                             \
        if (cuda_rc_ != cudaSuccess)                                                               \
            return dsv3_error_raise(DSV3_ERR_BACKEND, __FILE__, __LINE__, __func__,                \
                                    "%s failed: %s (%s)", #expr, cudaGetErrorString(cuda_rc_),     \
                                    cudaGetErrorName(cuda_rc_));                                   \
    } while (0)

// Raises DSV3_ERR_BACKEND with cuBLASLt's name for a failed status.
#define CUBLAS_CALL(expr)                                                                          \
    do {                                                                                           \
        cublasStatus_t cublas_rc_ = (expr);                                                        \
        if (cublas_rc_ != CUBLAS_STATUS_SUCCESS)                                                   \
            return dsv3_error_raise(DSV3_ERR_BACKEND, __FILE__, __LINE__, __func__,                \
                                    "%s failed: %s", #expr, cublasLtGetStatusString(cublas_rc_));  \
    } while (0)

// After a kernel launch: a bad launch configuration is reported here, a fault inside the kernel
// at the next synchronisation.
#define CUDA_LAUNCHED() CUDA_CALL(cudaGetLastError())

// ---- the state behind a context (ctx->blas) ----

// The first data fault the kernels of a context saw (op = DSV3_OP_* + 1; 0: none).
struct CudaFault {
    int op;
    int reserved;
    long long index; // position of the bad value in its tensor
    long long value; // the bad value
};

struct CudaState {
    cublasLtHandle_t lt;
    void *lt_workspace; // cuBLASLt's scratch, device memory
    size_t lt_workspace_bytes;
    CudaFault *fault; // device memory, zeroed at create and after each report
    // Device memory for the partial sums of two-pass reductions (sum_squares, labels_count, the
    // loss sums): CUDA_REDUCE_BLOCKS doubles. The ops of a context run in stream order, so
    // they share it without a workspace.
    double *reduce_partials;
};

static inline CudaState *cuda_state(const Dsv3KernelContext *ctx) { return (CudaState *)ctx->blas; }

static inline cudaStream_t cuda_stream(const Dsv3KernelContext *ctx) {
    return (cudaStream_t)ctx->stream;
}

static inline CudaFault *cuda_fault_record(const Dsv3KernelContext *ctx) {
    return cuda_state(ctx)->fault;
}

// Records the first bad value seen (in a kernel); the caller then skips the element.
__device__ __forceinline__ void cuda_fault(CudaFault *fault, Dsv3Op op, int64_t index,
                                           int64_t value) {
    if (atomicCAS(&fault->op, 0, (int)op + 1) == 0) {
        fault->index = (long long)index;
        fault->value = (long long)value;
    }
}

// ---- host-side checks every op makes ----

// dtype is DSV3_TENSOR_F32 or DSV3_TENSOR_BF16 (op names the op in the message).
Dsv3Err dsv3_cuda_check_dtype(Dsv3TensorDtype dtype, const char *op);

// ctx->workspace holds at least `need` bytes.
Dsv3Err dsv3_cuda_check_workspace(const Dsv3KernelContext *ctx, size_t need, const char *op);

// ---- elements of either dtype ----
//
// Kernels are templates over the storage type T (float or __nv_bfloat16) and compute in fp32:
// load reads an element as fp32, store rounds to nearest even when T is bf16.

__device__ __forceinline__ float cuda_load(const float *p, int64_t i) { return p[i]; }
__device__ __forceinline__ float cuda_load(const __nv_bfloat16 *p, int64_t i) {
    return __bfloat162float(p[i]);
}
__device__ __forceinline__ void cuda_store(float *p, int64_t i, float x) { p[i] = x; }
__device__ __forceinline__ void cuda_store(__nv_bfloat16 *p, int64_t i, float x) {
    p[i] = __float2bfloat16_rn(x);
}

// x rounded to bf16 and back (a GEMM operand when ctx->matmul_dtype is bf16).
__device__ __forceinline__ float cuda_round_bf16(float x) {
    return __bfloat162float(__float2bfloat16_rn(x));
}

// ---- launch shapes ----

enum {
    CUDA_THREADS = 256,     // threads per block of the element-wise kernels
    CUDA_MAX_BLOCKS = 4096, // blocks of a grid-stride loop
    CUDA_WARP = 32,
    // Blocks of a two-pass reduction: each block sums a fixed share, one block sums the
    // partials, so the order of the additions depends on n only.
    CUDA_REDUCE_BLOCKS = 256,
};

// First index and stride of a grid-stride loop, in 64 bits (sizes may pass 2^31).
__device__ __forceinline__ int64_t cuda_grid_first() {
    return (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t cuda_grid_stride() { return (int64_t)gridDim.x * blockDim.x; }

// The logistic function of SwiGLU's silu(x) = x · sigmoid(x), with the accurate expf.
__device__ __forceinline__ float cuda_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// Blocks for n elements at `threads` per block in a grid-stride loop (at least one).
static inline unsigned cuda_blocks(int64_t n, int threads) {
    int64_t blocks = (n + threads - 1) / threads;
    if (blocks < 1) blocks = 1;
    if (blocks > CUDA_MAX_BLOCKS) blocks = CUDA_MAX_BLOCKS;
    return (unsigned)blocks;
}

// ---- reductions inside a block ----

template <typename A> __device__ __forceinline__ A cuda_warp_sum(A x) {
    for (int offset = CUDA_WARP / 2; offset > 0; offset /= 2)
        x += __shfl_xor_sync(0xffffffffu, x, offset);
    return x;
}

__device__ __forceinline__ float cuda_warp_max(float x) {
    for (int offset = CUDA_WARP / 2; offset > 0; offset /= 2)
        x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
    return x;
}

// The sum of x over the block (blockDim.x a multiple of 32, at most 1024), returned to every
// thread; the order of the additions is fixed. Every thread of the block must call it.
template <typename A> __device__ A cuda_block_sum(A x) {
    __shared__ A warp_sums[CUDA_WARP];
    const int lane = threadIdx.x % CUDA_WARP, warp = threadIdx.x / CUDA_WARP;
    const int warps = blockDim.x / CUDA_WARP;
    x = cuda_warp_sum(x);
    __syncthreads(); // warp_sums may still be read by a previous call
    if (lane == 0) warp_sums[warp] = x;
    __syncthreads();
    A total = lane < warps ? warp_sums[lane] : (A)0;
    return cuda_warp_sum(total);
}

// The max of x over the block, returned to every thread (same rules as cuda_block_sum).
__device__ __forceinline__ float cuda_block_max(float x) {
    __shared__ float warp_maxes[CUDA_WARP];
    const int lane = threadIdx.x % CUDA_WARP, warp = threadIdx.x / CUDA_WARP;
    const int warps = blockDim.x / CUDA_WARP;
    x = cuda_warp_max(x);
    __syncthreads();
    if (lane == 0) warp_maxes[warp] = x;
    __syncthreads();
    float total = lane < warps ? warp_maxes[lane] : -INFINITY;
    return cuda_warp_max(total);
}

// ---- workspace ----
//
// An op with scratch takes consecutive slices of ctx->workspace, each aligned to
// CUDA_WORKSPACE_ALIGNMENT. Its workspace function (below, defined in the op's file) computes
// the total for a shape; the op calls the same function with its own sizes before using it.

enum { CUDA_WORKSPACE_ALIGNMENT = 256 };

static inline size_t cuda_align(size_t bytes) {
    return (bytes + CUDA_WORKSPACE_ALIGNMENT - 1) / CUDA_WORKSPACE_ALIGNMENT *
           CUDA_WORKSPACE_ALIGNMENT;
}

// Bytes of scratch of each op that has some (workspace.cu answers 0 for the others).
size_t dsv3_cuda_attention_workspace(Dsv3Op op, const Dsv3OpShape *shape);
size_t dsv3_cuda_moe_workspace(Dsv3Op op, const Dsv3OpShape *shape);
size_t dsv3_cuda_experts_workspace(Dsv3Op op, const Dsv3OpShape *shape);
size_t dsv3_cuda_cross_entropy_workspace(Dsv3Op op, const Dsv3OpShape *shape);
size_t dsv3_cuda_vocab_parallel_workspace(Dsv3Op op, const Dsv3OpShape *shape);

// ---- GEMM (gemm.cu) ----

typedef enum { CUDA_GEMM_NO_TRANS, CUDA_GEMM_TRANS } CudaGemmTranspose;

// C (M, N) = alpha · op(A) (M, K) · op(B) (K, N) + beta · C on row-major matrices in device
// memory, as cblas_sgemm (beta 0: C is not read), through cuBLASLt on the context's stream.
// A and B hold ab_dtype, C holds c_dtype; products are summed in fp32 (CUBLAS_COMPUTE_32F:
// fp32 operands stay fp32, never TF32), except that fp32 operands are rounded to bf16 when
// ctx->matmul_dtype is bf16. Leading dimensions are in elements. M or N of 0 does nothing;
// K of 0 leaves beta · C.
Dsv3Err dsv3_cuda_gemm(const Dsv3KernelContext *ctx, CudaGemmTranspose trans_a,
                       CudaGemmTranspose trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                       const void *A, int64_t lda, const void *B, int64_t ldb,
                       Dsv3TensorDtype ab_dtype, float beta, void *C, int64_t ldc,
                       Dsv3TensorDtype c_dtype);

#endif
