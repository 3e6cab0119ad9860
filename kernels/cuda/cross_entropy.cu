// cross_entropy.cu: the output head fused with the cross-entropy loss, and the loss of given
// logits, on CUDA.
//
// cross_entropy: the tokens go through in chunks of at most `chunk` rows, so that no more than
// chunk × V logits exist at once (they live in the workspace):
//   logits (C, V) = h_c (C, D) · W (V, D)ᵀ                    dsv3_cuda_gemm, fp32 C
//   per row, one block: m = max, s = Σ exp(l − m) (double), row_loss = m + log s − l[label]
//     (double); when dh is wanted, dlogits = grad_scale · (softmax − onehot) on counted rows,
//     0 on ignored ones, over the logits (fp32) or into a bf16 copy (bf16 ops: the GEMMs below
//     take one dtype for both operands)
//   dh_c (C, D) = dlogits (C, V) · W (V, D)                    written, in h's dtype
//   dW (V, D) += dlogits (C, V)ᵀ · h_c (C, D)                  fp32, beta 1
// The row losses of all chunks go to a workspace array (N doubles) that one block sums in a
// fixed order at the end: *loss_sum (device) is written, and does not change from run to run.
//
// cross_entropy_logits: the same per-row kernel on the caller's logits (N, V), fp32 whatever
// `dtype` says (it only has to be a dtype this backend knows); dlogits may be logits itself.
//
// Labels. The CPU backends check every label before any work; here a label lives in device
// memory, so the row kernel checks its own: a label that is neither DSV3_IGNORE_INDEX nor in
// [0, V) is recorded as a data fault (reported by the next dsv3_synchronize) and its row
// skipped (no loss, zero gradient) — the other rows, and so dweight, are still computed.
//
// Legend: N tokens, D model width, V vocabulary, C rows of one chunk (C ≤ chunk).
#include <inttypes.h>
#include <stdint.h>

#include "kernels/checks.h"
#include "kernels/cuda/cuda_kernels.cuh"

// Blocks of the row kernel at most (it loops over the rows beyond).
enum { ROW_BLOCKS_MAX = 65535 };

// ---- workspace ----

// Slices of the fused op's workspace: logits (C, V) fp32, row_loss (N) doubles, and, for a bf16
// op with gradients, dlogits (C, V) bf16. The bf16 slice comes last, so that the fp32 op takes
// a prefix of what the workspace function promises.
typedef struct {
    size_t row_loss, dlogits_bf16, bytes; // offsets of the slices, and the total
} CeLayout;

// SIZE_MAX in bytes when the layout cannot exist.
static CeLayout ce_layout(int64_t N, int64_t V, int64_t chunk, int with_bf16) {
    CeLayout layout = {0, 0, SIZE_MAX};
    if (N <= 0 || V <= 0 || chunk <= 0) return CeLayout{0, 0, 0};
    // Each slice under a quarter of the address space: their aligned sum cannot overflow.
    const uint64_t rows = (uint64_t)(chunk < N ? chunk : N), limit = SIZE_MAX / 4;
    if (rows > limit / sizeof(float) / (uint64_t)V || (uint64_t)N > limit / sizeof(double))
        return layout;
    const size_t logits = cuda_align((size_t)(rows * (uint64_t)V) * sizeof(float));
    layout.row_loss = logits;
    layout.dlogits_bf16 = logits + cuda_align((size_t)N * sizeof(double));
    layout.bytes = layout.dlogits_bf16;
    if (with_bf16) layout.bytes += cuda_align((size_t)(rows * (uint64_t)V) * sizeof(__nv_bfloat16));
    return layout;
}

size_t dsv3_cuda_cross_entropy_workspace(Dsv3Op op, const Dsv3OpShape *shape) {
    switch (op) {
    case DSV3_OP_CROSS_ENTROPY: // the dtype is not in the shape: room for the bf16 copy
        return ce_layout(shape->N, shape->V, shape->chunk, 1).bytes;
    case DSV3_OP_CROSS_ENTROPY_LOGITS: // row_loss (N) doubles
        if (shape->N <= 0) return 0;
        if ((uint64_t)shape->N > SIZE_MAX / 4 / sizeof(double)) return SIZE_MAX;
        return cuda_align((size_t)shape->N * sizeof(double));
    default: return 0;
    }
}

// ---- kernels ----

// One row of logits (V) per block (rows beyond the grid looped over): row_loss[r] =
// logsumexp − logit[label], 0 for an ignored or bad label. When dlogits is not NULL, its row
// (G: fp32, possibly the logits themselves, or bf16) = grad_scale · (softmax − onehot), zero on
// ignored and bad rows. Fault positions count from `first` (the chunk's first token).
template <typename G>
static __global__ void ce_rows_kernel(double *row_loss, G *dlogits, const float *logits,
                                      const int32_t *labels, int64_t C, int64_t V, float grad_scale,
                                      int64_t first, int op, CudaFault *fault) {
    for (int64_t r = blockIdx.x; r < C; r += gridDim.x) {
        const float *row = logits + r * V; // (V)
        G *drow = dlogits ? dlogits + r * V : NULL;
        const int32_t label = labels[r];
        const bool bad = label != DSV3_IGNORE_INDEX && (label < 0 || label >= V);
        if (label == DSV3_IGNORE_INDEX || bad) { // the same branch for the whole block
            if (threadIdx.x == 0) {
                if (bad) cuda_fault(fault, (Dsv3Op)op, first + r, label);
                row_loss[r] = 0;
            }
            for (int64_t j = threadIdx.x; drow && j < V; j += blockDim.x)
                cuda_store(drow, j, 0.0f);
            continue;
        }
        // Read before the block's first barrier (inside cuda_block_max), so before any thread
        // writes drow, which may be row.
        const float target = row[label];
        float m = -INFINITY;
        for (int64_t j = threadIdx.x; j < V; j += blockDim.x)
            m = fmaxf(m, row[j]);
        m = cuda_block_max(m);
        double s = 0;
        for (int64_t j = threadIdx.x; j < V; j += blockDim.x)
            s += exp((double)row[j] - m);
        s = cuda_block_sum(s);
        const double lse = (double)m + log(s);
        if (threadIdx.x == 0) row_loss[r] = lse - target;
        // Each thread reads row[j] before writing drow[j], for the same j.
        for (int64_t j = threadIdx.x; drow && j < V; j += blockDim.x) {
            const double onehot = j == label ? 1.0 : 0.0;
            cuda_store(drow, j, (float)(grad_scale * (exp((double)row[j] - lse) - onehot)));
        }
    }
}

// *out = Σ terms (n), by one block in an order fixed by n.
static __global__ void ce_sum_kernel(double *out, const double *terms, int64_t n) {
    double s = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        s += terms[i];
    s = cuda_block_sum(s);
    if (threadIdx.x == 0) *out = s;
}

// Launches the row kernel over C rows (G: the gradient's type; dlogits may be NULL).
template <typename G>
static Dsv3Err ce_rows(const Dsv3KernelContext *ctx, Dsv3Op op, double *row_loss, G *dlogits,
                       const float *logits, const int32_t *labels, int64_t C, int64_t V,
                       float grad_scale, int64_t first) {
    const unsigned blocks = (unsigned)(C < (int64_t)ROW_BLOCKS_MAX ? C : (int64_t)ROW_BLOCKS_MAX);
    ce_rows_kernel<G><<<blocks, CUDA_THREADS, 0, cuda_stream(ctx)>>>(
        row_loss, dlogits, logits, labels, C, V, grad_scale, first, (int)op,
        cuda_fault_record(ctx));
    CUDA_LAUNCHED();
    return DSV3_OK;
}

static Dsv3Err ce_sum(const Dsv3KernelContext *ctx, double *out, const double *terms, int64_t n) {
    ce_sum_kernel<<<1, CUDA_THREADS, 0, cuda_stream(ctx)>>>(out, terms, n);
    CUDA_LAUNCHED();
    return DSV3_OK;
}

// ---- cross_entropy ----

static size_t dtype_bytes(Dsv3TensorDtype dtype) {
    return dtype == DSV3_TENSOR_BF16 ? sizeof(__nv_bfloat16) : sizeof(float);
}

// One chunk of C rows from token n0: its logits, row losses and (when dh) gradients.
static Dsv3Err cross_entropy_chunk(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                   const CeLayout *layout, void *dh, float *dweight, const void *h,
                                   const void *weight, const int32_t *labels, int64_t n0, int64_t C,
                                   int64_t D, int64_t V, float grad_scale) {
    float *logits = (float *)ctx->workspace;                                       // (C, V)
    double *row_loss = (double *)((char *)ctx->workspace + layout->row_loss) + n0; // (C)
    const void *hc = (const char *)h + (size_t)(n0 * D) * dtype_bytes(dtype);      // (C, D)
    DSV3_CALL(dsv3_cuda_gemm(ctx, CUDA_GEMM_NO_TRANS, CUDA_GEMM_TRANS, C, V, D, 1.0f, hc, D, weight,
                             D, dtype, 0.0f, logits, V, DSV3_TENSOR_F32));
    const void *dlogits = logits; // (C, V) of dtype: what the gradient GEMMs read
    if (dh == NULL) {
        DSV3_CALL(ce_rows<float>(ctx, DSV3_OP_CROSS_ENTROPY, row_loss, NULL, logits, labels + n0, C,
                                 V, grad_scale, n0));
        return DSV3_OK;
    }
    if (dtype == DSV3_TENSOR_BF16) {
        __nv_bfloat16 *copy = (__nv_bfloat16 *)((char *)ctx->workspace + layout->dlogits_bf16);
        DSV3_CALL(ce_rows(ctx, DSV3_OP_CROSS_ENTROPY, row_loss, copy, logits, labels + n0, C, V,
                          grad_scale, n0));
        dlogits = copy;
    } else {
        DSV3_CALL(ce_rows(ctx, DSV3_OP_CROSS_ENTROPY, row_loss, logits, logits, labels + n0, C, V,
                          grad_scale, n0));
    }
    void *dhc = (char *)dh + (size_t)(n0 * D) * dtype_bytes(dtype); // (C, D)
    DSV3_CALL(dsv3_cuda_gemm(ctx, CUDA_GEMM_NO_TRANS, CUDA_GEMM_NO_TRANS, C, D, V, 1.0f, dlogits, V,
                             weight, D, dtype, 0.0f, dhc, D, dtype));
    DSV3_CALL(dsv3_cuda_gemm(ctx, CUDA_GEMM_TRANS, CUDA_GEMM_NO_TRANS, V, D, C, 1.0f, dlogits, V,
                             hc, D, dtype, 1.0f, dweight, D, DSV3_TENSOR_F32));
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_cross_entropy(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                           double *loss_sum, void *dh, float *dweight,
                                           const void *h, const void *weight, const int32_t *labels,
                                           int64_t N, int64_t D, int64_t V, float grad_scale,
                                           int64_t chunk) {
    // h, dh (N, D) and weight (V, D) of dtype; dweight (V, D) fp32; labels (N); loss_sum (1)
    DSV3_CALL(dsv3_cuda_check_dtype(dtype, "cross_entropy"));
    DSV3_CALL(dsv3_check_cross_entropy(loss_sum, dh, dweight, h, weight, labels, N, D, V, chunk));
    if (N == 0) { // the loss of no tokens is still written
        CUDA_CALL(cudaMemsetAsync(loss_sum, 0, sizeof(double), cuda_stream(ctx)));
        return DSV3_OK;
    }
    const int64_t rows = chunk < N ? chunk : N; // C at most
    const CeLayout layout = ce_layout(N, V, chunk, dtype == DSV3_TENSOR_BF16 && dh != NULL);
    DSV3_CHECK(layout.bytes != SIZE_MAX, DSV3_ERR_USAGE,
               "cross_entropy: chunk %" PRId64 " × V %" PRId64 " logits do not fit in memory", rows,
               V);
    DSV3_CALL(dsv3_cuda_check_workspace(ctx, layout.bytes, "cross_entropy"));
    for (int64_t n0 = 0; n0 < N; n0 += rows) {
        const int64_t C = N - n0 < rows ? N - n0 : rows;
        DSV3_CALL(cross_entropy_chunk(ctx, dtype, &layout, dh, dweight, h, weight, labels, n0, C, D,
                                      V, grad_scale));
    }
    DSV3_CALL(ce_sum(ctx, loss_sum, (const double *)((char *)ctx->workspace + layout.row_loss), N));
    return DSV3_OK;
}

// ---- cross_entropy_logits ----

extern "C" Dsv3Err dsv3_cuda_cross_entropy_logits(const Dsv3KernelContext *ctx,
                                                  Dsv3TensorDtype dtype, double *loss_sum,
                                                  float *dlogits, const float *logits,
                                                  const int32_t *labels, int64_t N, int64_t V,
                                                  float grad_scale) {
    // logits, dlogits (N, V) fp32 (dlogits may be logits); labels (N); loss_sum (1)
    DSV3_CALL(dsv3_cuda_check_dtype(dtype, "cross_entropy_logits"));
    DSV3_CALL(dsv3_check_cross_entropy_logits(loss_sum, logits, labels, N, V));
    if (N == 0) {
        CUDA_CALL(cudaMemsetAsync(loss_sum, 0, sizeof(double), cuda_stream(ctx)));
        return DSV3_OK;
    }
    Dsv3OpShape shape = {};
    shape.N = N;
    shape.V = V;
    DSV3_CALL(dsv3_cuda_check_workspace(
        ctx, dsv3_cuda_cross_entropy_workspace(DSV3_OP_CROSS_ENTROPY_LOGITS, &shape),
        "cross_entropy_logits"));
    double *row_loss = (double *)ctx->workspace; // (N)
    DSV3_CALL(ce_rows(ctx, DSV3_OP_CROSS_ENTROPY_LOGITS, row_loss, dlogits, logits, labels, N, V,
                      grad_scale, 0));
    DSV3_CALL(ce_sum(ctx, loss_sum, row_loss, N));
    return DSV3_OK;
}
