// embedding.cu: token embedding lookup and its gradient on the GPU (CUDA versions of kernels.h's
// embedding_forward and embedding_backward), on a slice [vocab_start, vocab_start + V) of the
// table (the whole table: vocab_start 0), for fp32 or bf16 activations.
//
// Forward: one block per token row (grid-stride over the rows) copies the weight row of the
// token, or zeroes the row of a token of another slice.
//
// Backward: a scatter-add where tokens repeat. Instead of floating-point atomics, each row of
// dweight belongs to one block (row mod the grid size): every block reads all token ids, a
// chunk at a time into shared memory, and adds the dout rows of the tokens it owns in token
// order, thread j always on the same columns. So each element of dweight gets its additions in
// token order, as the CPU reference adds them (same bits in fp32), and the result does not
// change from run to run. The price is that every block reads the N ids (from L2).
//
// Data faults: a negative token id (the CPU rejects it before any work) cannot be checked on
// the host without waiting; the kernels record it (dsv3_synchronize reports it) and skip the
// token: forward writes a zero row for it, backward adds nothing for it (the other rows are
// still accumulated, unlike the CPU, which checks all ids first).
//
// Legend: N tokens, D model width, V rows of the slice.
#include <stdint.h>

#include "kernels/checks.h"
#include "kernels/cuda/cuda_kernels.cuh"

enum {
    EMBEDDING_THREADS = CUDA_THREADS,
    // Blocks of the backward: each owns the rows ≡ its index mod this count, and reads all the
    // ids; about what an H100's multiprocessors hold at once.
    EMBEDDING_BACKWARD_BLOCKS = 1024,
    // A token of no row of this block (shared memory of the backward).
    EMBEDDING_NOT_MINE = -1,
};

// ---- forward ----

// out (N, D) row n = weight (V, D) row tokens[n] − vocab_start, or zeros for a token outside
// the slice (or a negative one, recorded as a fault).
template <typename T>
static __global__ void embedding_forward_kernel(CudaFault *fault, T *out, const int32_t *tokens,
                                                const T *weight, int64_t N, int64_t D, int64_t V,
                                                int64_t vocab_start) {
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        const int32_t id = tokens[n];
        if (id < 0 && threadIdx.x == 0) cuda_fault(fault, DSV3_OP_EMBEDDING_FORWARD, n, id);
        const int64_t row = (int64_t)id - vocab_start; // of the slice
        T *dst = out + n * D;                          // (D)
        if (id >= 0 && row >= 0 && row < V) {
            const T *src = weight + row * D; // (D)
            for (int64_t j = threadIdx.x; j < D; j += blockDim.x)
                dst[j] = src[j];
        } else {
            for (int64_t j = threadIdx.x; j < D; j += blockDim.x)
                cuda_store(dst, j, 0.0f);
        }
    }
}

template <typename T>
static Dsv3Err embedding_forward_launch(const Dsv3KernelContext *ctx, void *out,
                                        const int32_t *tokens, const void *weight, int64_t N,
                                        int64_t D, int64_t V, int64_t vocab_start) {
    embedding_forward_kernel<T><<<cuda_blocks(N, 1), EMBEDDING_THREADS, 0, cuda_stream(ctx)>>>(
        cuda_fault_record(ctx), (T *)out, tokens, (const T *)weight, N, D, V, vocab_start);
    CUDA_LAUNCHED();
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_embedding_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                               void *out, const int32_t *tokens, const void *weight,
                                               int64_t N, int64_t D, int64_t V,
                                               int64_t vocab_start) {
    DSV3_CALL(dsv3_cuda_check_dtype(dtype, "embedding_forward"));
    DSV3_CALL(dsv3_check_embedding(out, "out", tokens, weight, "weight", N, D, V, vocab_start));
    if (N == 0) return DSV3_OK;
    return dtype == DSV3_TENSOR_BF16
               ? embedding_forward_launch<__nv_bfloat16>(ctx, out, tokens, weight, N, D, V,
                                                         vocab_start)
               : embedding_forward_launch<float>(ctx, out, tokens, weight, N, D, V, vocab_start);
}

// ---- backward ----

// The row of the slice that token n adds to when this block owns it, else EMBEDDING_NOT_MINE
// (block 0 records a negative id, which every block skips).
static __device__ int32_t embedding_owned_row(CudaFault *fault, const int32_t *tokens, int64_t n,
                                              int64_t V, int64_t vocab_start) {
    const int32_t id = tokens[n];
    if (id < 0) {
        if (blockIdx.x == 0) cuda_fault(fault, DSV3_OP_EMBEDDING_BACKWARD, n, id);
        return EMBEDDING_NOT_MINE;
    }
    const int64_t row = (int64_t)id - vocab_start; // of the slice; < 2^31 since V <= 2^31
    if (row < 0 || row >= V || row % gridDim.x != blockIdx.x) return EMBEDDING_NOT_MINE;
    return (int32_t)row;
}

// dweight (V, D) += dout (N, D) rows scattered by token, each row of dweight by the block that
// owns it, in token order (see the head comment).
template <typename T>
static __global__ void embedding_backward_kernel(CudaFault *fault, float *dweight, const T *dout,
                                                 const int32_t *tokens, int64_t N, int64_t D,
                                                 int64_t V, int64_t vocab_start) {
    __shared__ int32_t rows[EMBEDDING_THREADS]; // the owned row of each token of the chunk
    for (int64_t base = 0; base < N; base += EMBEDDING_THREADS) {
        const int64_t n = base + threadIdx.x;
        rows[threadIdx.x] =
            n < N ? embedding_owned_row(fault, tokens, n, V, vocab_start) : EMBEDDING_NOT_MINE;
        __syncthreads();
        const int64_t chunk = N - base < EMBEDDING_THREADS ? N - base : EMBEDDING_THREADS;
        for (int64_t k = 0; k < chunk; k++) {
            const int32_t row = rows[k];
            if (row == EMBEDDING_NOT_MINE) continue;
            float *dst = dweight + (int64_t)row * D; // (D)
            const T *src = dout + (base + k) * D;    // (D)
            for (int64_t j = threadIdx.x; j < D; j += blockDim.x)
                dst[j] += cuda_load(src, j);
        }
        __syncthreads(); // rows is rewritten by the next chunk
    }
}

template <typename T>
static Dsv3Err embedding_backward_launch(const Dsv3KernelContext *ctx, float *dweight,
                                         const void *dout, const int32_t *tokens, int64_t N,
                                         int64_t D, int64_t V, int64_t vocab_start) {
    const unsigned blocks =
        (unsigned)(V < EMBEDDING_BACKWARD_BLOCKS ? V : (int64_t)EMBEDDING_BACKWARD_BLOCKS);
    embedding_backward_kernel<T><<<blocks, EMBEDDING_THREADS, 0, cuda_stream(ctx)>>>(
        cuda_fault_record(ctx), dweight, (const T *)dout, tokens, N, D, V, vocab_start);
    CUDA_LAUNCHED();
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_embedding_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                                float *dweight, const void *dout,
                                                const int32_t *tokens, int64_t N, int64_t D,
                                                int64_t V, int64_t vocab_start) {
    DSV3_CALL(dsv3_cuda_check_dtype(dtype, "embedding_backward"));
    DSV3_CALL(dsv3_check_embedding(dweight, "dweight", tokens, dout, "dout", N, D, V, vocab_start));
    if (N == 0) return DSV3_OK;
    return dtype == DSV3_TENSOR_BF16
               ? embedding_backward_launch<__nv_bfloat16>(ctx, dweight, dout, tokens, N, D, V,
                                                          vocab_start)
               : embedding_backward_launch<float>(ctx, dweight, dout, tokens, N, D, V, vocab_start);
}
