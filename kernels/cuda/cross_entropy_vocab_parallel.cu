// cross_entropy_vocab_parallel.cu: the output head and cross-entropy with the head split over
// ranks by vocabulary rows, on CUDA. One rank's slice is the V rows [vocab_start,
// vocab_start + V) of the head; the caller reduces row_max (max) and sums (sum) over the ranks
// between the ops (kernels.h). No collective here.
//   vocab_logits:          logits (n, V) = h (n, D) · W (V, D)ᵀ   dsv3_cuda_gemm, fp32 C;
//                          row_max by one block per row
//   vocab_logits_sums:     one block per row: s = Σ exp(l − m) in double, and the label's logit
//                          when this slice holds it
//   vocab_logits_backward: *loss_sum by one block summing the rows in a fixed order (double,
//                          written); when dh: dlogits = grad_scale · (softmax − onehot) over the
//                          logits (0 on ignored rows), dh = dlogits · W (written, h's dtype),
//                          dW += dlogitsᵀ · h (fp32, beta 1)
// Labels are checked where they are read: one that is neither DSV3_IGNORE_INDEX nor a token id
// (>= 0) is a data fault (reported by the next dsv3_synchronize), its row skipped (no loss,
// label logit 0, zero gradient). The CPU backends check them all before any work.
//
// Workspace: only vocab_logits_backward of a bf16 op with dh: a bf16 copy of dlogits (n, V),
// since the GEMMs take one dtype for both operands and W and h are bf16 (the logits stay fp32,
// as kernels.h says). dsv3_cuda_vocab_parallel_workspace answers it for {.N = n, .V = V}; an
// fp32 op takes none.
//
// Legend: n tokens of a chunk, D model width, V rows of the slice.
#include <inttypes.h>
#include <stdint.h>

#include "kernels/checks.h"
#include "kernels/cuda/cuda_kernels.cuh"

// Blocks of the per-row kernels at most (they loop over the rows beyond).
enum { ROW_BLOCKS_MAX = 65535 };

static unsigned row_blocks(int64_t n) {
    return (unsigned)(n < (int64_t)ROW_BLOCKS_MAX ? n : (int64_t)ROW_BLOCKS_MAX);
}

// ---- workspace ----

// The bf16 copy of dlogits (n, V); SIZE_MAX when it cannot exist.
static size_t vocab_copy_bytes(int64_t n, int64_t V) {
    if (n <= 0 || V <= 0) return 0;
    if ((uint64_t)n > SIZE_MAX / 4 / sizeof(__nv_bfloat16) / (uint64_t)V) return SIZE_MAX;
    return cuda_align((size_t)n * (size_t)V * sizeof(__nv_bfloat16));
}

size_t dsv3_cuda_vocab_parallel_workspace(Dsv3Op op, const Dsv3OpShape *shape) {
    // The dtype is not in the shape: room for the bf16 copy.
    return op == DSV3_OP_VOCAB_LOGITS_BACKWARD ? vocab_copy_bytes(shape->N, shape->V) : 0;
}

// ---- kernels ----

// row_max (n) = the max of each row of logits (n, V); one block per row.
static __global__ void vocab_max_kernel(float *row_max, const float *logits, int64_t n, int64_t V) {
    for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
        float m = -INFINITY;
        for (int64_t j = threadIdx.x; j < V; j += blockDim.x)
            m = fmaxf(m, logits[i * V + j]);
        m = cuda_block_max(m);
        if (threadIdx.x == 0) row_max[i] = m;
    }
}

// The column of the label in this slice, or −1: ignored, elsewhere, or a bad label (recorded).
static __device__ int64_t vocab_label_column(int32_t label, int64_t i, int64_t V,
                                             int64_t vocab_start, Dsv3Op op, CudaFault *fault) {
    if (label == DSV3_IGNORE_INDEX) return -1;
    if (label < 0) {
        cuda_fault(fault, op, i, label);
        return -1;
    }
    const int64_t column = (int64_t)label - vocab_start;
    return column >= 0 && column < V ? column : -1;
}

// sums (2n): sums[i] = Σ_j exp(logits[i, j] − row_max[i]); sums[n + i] = the label's logit
// when this slice holds it, else 0. One block per row.
static __global__ void vocab_sums_kernel(double *sums, const float *logits, const float *row_max,
                                         const int32_t *labels, int64_t n, int64_t V,
                                         int64_t vocab_start, CudaFault *fault) {
    for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
        const float *row = logits + i * V; // (V)
        const double m = row_max[i];
        double s = 0;
        for (int64_t j = threadIdx.x; j < V; j += blockDim.x)
            s += exp((double)row[j] - m);
        s = cuda_block_sum(s);
        if (threadIdx.x == 0) {
            sums[i] = s;
            const int64_t column =
                vocab_label_column(labels[i], i, V, vocab_start, DSV3_OP_VOCAB_LOGITS_SUMS, fault);
            sums[n + i] = column >= 0 ? (double)row[column] : 0.0;
        }
    }
}

// *loss_sum = Σ over counted rows of log(sums[i]) + row_max[i] − sums[n + i]; one block, in an
// order fixed by n. Bad labels are recorded and their rows skipped.
static __global__ void vocab_loss_kernel(double *loss_sum, const float *row_max, const double *sums,
                                         const int32_t *labels, int64_t n, CudaFault *fault) {
    double loss = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const int32_t label = labels[i];
        if (label == DSV3_IGNORE_INDEX) continue;
        if (label < 0) {
            cuda_fault(fault, DSV3_OP_VOCAB_LOGITS_BACKWARD, i, label);
            continue;
        }
        loss += log(sums[i]) + (double)row_max[i] - sums[n + i];
    }
    loss = cuda_block_sum(loss);
    if (threadIdx.x == 0) *loss_sum = loss;
}

// logits (n, V) ← dlogits = grad_scale · (softmax − onehot) on counted rows, 0 on ignored and
// bad ones; also into copy (n, V) as bf16 when copy is not NULL. One block per row; each thread
// reads logits[i, j] before writing it.
static __global__ void vocab_grad_kernel(float *logits, __nv_bfloat16 *copy, const float *row_max,
                                         const double *sums, const int32_t *labels, int64_t n,
                                         int64_t V, int64_t vocab_start, float grad_scale) {
    for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
        float *row = logits + i * V; // (V)
        const int32_t label = labels[i];
        const bool counted = label != DSV3_IGNORE_INDEX && label >= 0; // bad: the loss records it
        const int64_t column = counted ? (int64_t)label - vocab_start : -1; // may lie elsewhere
        const double m = row_max[i], s = sums[i];
        for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
            float g = 0.0f;
            if (counted) {
                const double onehot = j == column ? 1.0 : 0.0;
                g = (float)(grad_scale * (exp((double)row[j] - m) / s - onehot));
            }
            row[j] = g;
            if (copy) copy[i * V + j] = __float2bfloat16_rn(g);
        }
    }
}

// ---- the ops ----

extern "C" Dsv3Err dsv3_cuda_vocab_logits(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                          float *logits, float *row_max, const void *h,
                                          const void *weight, int64_t n, int64_t D, int64_t V) {
    // logits (n, V), row_max (n) fp32; h (n, D), weight (V, D) of dtype
    DSV3_CALL(dsv3_cuda_check_dtype(dtype, "vocab_logits"));
    DSV3_CALL(dsv3_check_vocab_logits(logits, row_max, h, weight, n, D, V));
    if (n == 0) return DSV3_OK;
    DSV3_CALL(dsv3_cuda_gemm(ctx, CUDA_GEMM_NO_TRANS, CUDA_GEMM_TRANS, n, V, D, 1.0f, h, D, weight,
                             D, dtype, 0.0f, logits, V, DSV3_TENSOR_F32));
    vocab_max_kernel<<<row_blocks(n), CUDA_THREADS, 0, cuda_stream(ctx)>>>(row_max, logits, n, V);
    CUDA_LAUNCHED();
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_vocab_logits_sums(const Dsv3KernelContext *ctx, double *sums,
                                               const float *logits, const float *row_max,
                                               const int32_t *labels, int64_t n, int64_t V,
                                               int64_t vocab_start) {
    // sums (2n) double; logits (n, V), row_max (n) fp32; labels (n)
    DSV3_CALL(dsv3_check_vocab_logits_sums(sums, logits, row_max, labels, n, V, vocab_start));
    if (n == 0) return DSV3_OK;
    vocab_sums_kernel<<<row_blocks(n), CUDA_THREADS, 0, cuda_stream(ctx)>>>(
        sums, logits, row_max, labels, n, V, vocab_start, cuda_fault_record(ctx));
    CUDA_LAUNCHED();
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_vocab_logits_backward(
    const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, double *loss_sum, void *dh, float *dweight,
    float *logits, const float *row_max, const double *sums, const void *h, const void *weight,
    const int32_t *labels, int64_t n, int64_t D, int64_t V, int64_t vocab_start, float grad_scale) {
    // dh, h (n, D) and weight (V, D) of dtype; dweight (V, D), logits (n, V), row_max (n) fp32;
    // sums (2n) double; labels (n); loss_sum (1)
    DSV3_CALL(dsv3_cuda_check_dtype(dtype, "vocab_logits_backward"));
    DSV3_CALL(dsv3_check_vocab_logits_backward(loss_sum, dh, dweight, logits, row_max, sums, h,
                                               weight, labels, n, D, V, vocab_start));
    if (n == 0) { // the loss of no tokens is still written
        CUDA_CALL(cudaMemsetAsync(loss_sum, 0, sizeof(double), cuda_stream(ctx)));
        return DSV3_OK;
    }
    const int bf16 = dtype == DSV3_TENSOR_BF16 && dh != NULL;
    const size_t copy_bytes = bf16 ? vocab_copy_bytes(n, V) : 0;
    DSV3_CHECK(copy_bytes != SIZE_MAX, DSV3_ERR_USAGE,
               "vocab_logits_backward: n %" PRId64 " × V %" PRId64
               " bf16 gradients do not fit in memory",
               n, V);
    DSV3_CALL(dsv3_cuda_check_workspace(ctx, copy_bytes, "vocab_logits_backward"));
    vocab_loss_kernel<<<1, CUDA_THREADS, 0, cuda_stream(ctx)>>>(loss_sum, row_max, sums, labels, n,
                                                                cuda_fault_record(ctx));
    CUDA_LAUNCHED();
    if (dh == NULL) return DSV3_OK;

    __nv_bfloat16 *copy = bf16 ? (__nv_bfloat16 *)ctx->workspace : NULL; // (n, V)
    vocab_grad_kernel<<<row_blocks(n), CUDA_THREADS, 0, cuda_stream(ctx)>>>(
        logits, copy, row_max, sums, labels, n, V, vocab_start, grad_scale);
    CUDA_LAUNCHED();
    const void *dlogits = bf16 ? (const void *)copy : (const void *)logits; // (n, V) of dtype
    DSV3_CALL(dsv3_cuda_gemm(ctx, CUDA_GEMM_NO_TRANS, CUDA_GEMM_NO_TRANS, n, D, V, 1.0f, dlogits, V,
                             weight, D, dtype, 0.0f, dh, D, dtype));
    DSV3_CALL(dsv3_cuda_gemm(ctx, CUDA_GEMM_TRANS, CUDA_GEMM_NO_TRANS, V, D, n, 1.0f, dlogits, V, h,
                             D, dtype, 1.0f, dweight, D, DSV3_TENSOR_F32));
    return DSV3_OK;
}
