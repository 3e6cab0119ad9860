// tokens.cu: token bookkeeping of a micro-batch on the GPU (CUDA versions of kernels.h's
// tokens_check, document_ids and labels_count).
//
// tokens_check is the one op of the backend that waits for the device: its result is the
// error itself (the first position outside the vocabulary and its value, in the CPU's words),
// so it copies what its kernels found back to the host and synchronizes the stream. Callers
// run it once per batch. document_ids is a running count of eos per sequence, one block per
// sequence scanning its positions in chunks; labels_count a block-wise integer count.
//
// Not here: the data faults of other ops (their kernels record them; dsv3_synchronize
// reports them), any workspace (tokens_check borrows two slots of reduce_partials).
//
// Legend: N tokens (B × T), B sequences, T positions, V vocabulary.
#include <inttypes.h>
#include <stdint.h>

#include "kernels/checks.h"
#include "kernels/cuda/cuda_kernels.cuh"

enum {
    TOKENS_THREADS = CUDA_THREADS,
    TOKENS_WARPS = TOKENS_THREADS / CUDA_WARP,
    // The slots of reduce_partials (read as long long) that tokens_check borrows: the first
    // bad position (N when none) and the id found there.
    CHECK_SLOT_POSITION = 0,
    CHECK_SLOT_VALUE = 1,
    CHECK_SLOTS = 2,
};

static_assert(sizeof(long long) == sizeof(double) && (int)CHECK_SLOTS <= (int)CUDA_REDUCE_BLOCKS,
              "tokens_check keeps its slots in reduce_partials");

// ---- tokens_check ----

// No bad position yet: slots[POSITION] = N.
static __global__ void tokens_check_init_kernel(long long *slots, int64_t N) {
    slots[CHECK_SLOT_POSITION] = (long long)N;
    slots[CHECK_SLOT_VALUE] = 0;
}

// slots[POSITION] = the smallest position whose id is outside [0, V). A thread's indices grow,
// so its first bad one is its smallest; atomicMin over integers gives the same answer in any
// order.
static __global__ void tokens_check_scan_kernel(long long *slots, const int32_t *tokens, int64_t N,
                                                int64_t V) {
    for (int64_t i = cuda_grid_first(); i < N; i += cuda_grid_stride()) {
        const int32_t id = tokens[i];
        if (id < 0 || id >= V) {
            atomicMin(&slots[CHECK_SLOT_POSITION], (long long)i);
            return;
        }
    }
}

// slots[VALUE] = the id at the first bad position, if there is one (one thread).
static __global__ void tokens_check_value_kernel(long long *slots, const int32_t *tokens,
                                                 int64_t N) {
    const long long first = slots[CHECK_SLOT_POSITION];
    if (first < N) slots[CHECK_SLOT_VALUE] = tokens[first];
}

extern "C" Dsv3Err dsv3_cuda_tokens_check(const Dsv3KernelContext *ctx, const int32_t *tokens,
                                          int64_t N, int64_t V) {
    DSV3_CALL(dsv3_check_tokens(tokens, N, V));
    if (N == 0) return DSV3_OK;
    cudaStream_t stream = cuda_stream(ctx);
    long long *slots = (long long *)cuda_state(ctx)->reduce_partials; // (CHECK_SLOTS)
    tokens_check_init_kernel<<<1, 1, 0, stream>>>(slots, N);
    CUDA_LAUNCHED();
    tokens_check_scan_kernel<<<cuda_blocks(N, TOKENS_THREADS), TOKENS_THREADS, 0, stream>>>(
        slots, tokens, N, V);
    CUDA_LAUNCHED();
    tokens_check_value_kernel<<<1, 1, 0, stream>>>(slots, tokens, N);
    CUDA_LAUNCHED();
    // The answer is needed on the host: copy it back and wait (once per batch).
    long long found[CHECK_SLOTS] = {0, 0};
    CUDA_CALL(cudaMemcpyAsync(found, slots, sizeof found, cudaMemcpyDeviceToHost, stream));
    CUDA_CALL(cudaStreamSynchronize(stream));
    const int64_t first = (int64_t)found[CHECK_SLOT_POSITION];
    DSV3_CHECK(first == N, DSV3_ERR_USAGE,
               "tokens_check: tokens[%" PRId64 "] = %" PRId32
               " is outside the vocabulary [0, %" PRId64 ")",
               first, (int32_t)found[CHECK_SLOT_VALUE], V);
    return DSV3_OK;
}

// ---- document_ids ----

// One block per sequence (grid-stride over the sequences). The positions go by in chunks of
// TOKENS_THREADS, one per thread: a position's id is the eos of the chunks before (carry) plus
// the eos of its own chunk before it, counted from the ballots of its warp and of the warps
// before. Integers: exact in any order.
static __global__ void document_ids_kernel(int32_t *doc, const int32_t *tokens, int64_t B,
                                           int64_t T, int32_t eos) {
    __shared__ int warp_eos[TOKENS_WARPS]; // eos in each warp's share of the chunk
    const int lane = threadIdx.x % CUDA_WARP, warp = threadIdx.x / CUDA_WARP;
    const unsigned lanes_before = (1u << lane) - 1u;
    for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
        const int32_t *seq = tokens + b * T; // (T)
        int32_t *ids = doc + b * T;          // (T)
        int64_t carry = 0;                   // eos before the chunk
        for (int64_t base = 0; base < T; base += TOKENS_THREADS) {
            const int64_t t = base + threadIdx.x;
            const bool is_eos = eos >= 0 && t < T && seq[t] == eos;
            const unsigned ballot = __ballot_sync(0xffffffffu, is_eos);
            if (lane == 0) warp_eos[warp] = __popc(ballot);
            __syncthreads();
            int before = __popc(ballot & lanes_before), in_chunk = 0;
            for (int w = 0; w < TOKENS_WARPS; w++) {
                if (w < warp) before += warp_eos[w];
                in_chunk += warp_eos[w];
            }
            if (t < T) ids[t] = (int32_t)(carry + before);
            carry += in_chunk;
            __syncthreads(); // warp_eos is rewritten by the next chunk
        }
    }
}

extern "C" Dsv3Err dsv3_cuda_document_ids(const Dsv3KernelContext *ctx, int32_t *doc,
                                          const int32_t *tokens, int64_t B, int64_t T,
                                          int32_t eos) {
    DSV3_CALL(dsv3_check_document_ids(doc, tokens, B, T));
    if (B == 0 || T == 0) return DSV3_OK;
    document_ids_kernel<<<cuda_blocks(B, 1), TOKENS_THREADS, 0, cuda_stream(ctx)>>>(doc, tokens, B,
                                                                                    T, eos);
    CUDA_LAUNCHED();
    return DSV3_OK;
}

// ---- labels_count ----

// *count += the labels of this block's share that count (after the op zeroed *count). Integer
// atomics: the total does not depend on the order.
static __global__ void labels_count_kernel(long long *count, const int32_t *labels, int64_t N) {
    long long mine = 0;
    for (int64_t i = cuda_grid_first(); i < N; i += cuda_grid_stride())
        mine += labels[i] != DSV3_IGNORE_INDEX;
    const long long block = cuda_block_sum(mine);
    if (threadIdx.x == 0 && block != 0)
        atomicAdd((unsigned long long *)count, (unsigned long long)block);
}

extern "C" Dsv3Err dsv3_cuda_labels_count(const Dsv3KernelContext *ctx, int64_t *count,
                                          const int32_t *labels, int64_t N) {
    DSV3_CALL(dsv3_check_labels_count(count, labels, N));
    cudaStream_t stream = cuda_stream(ctx);
    CUDA_CALL(cudaMemsetAsync(count, 0, sizeof *count, stream)); // also the answer for N = 0
    if (N == 0) return DSV3_OK;
    static_assert(sizeof(int64_t) == sizeof(unsigned long long), "count is a 64-bit counter");
    labels_count_kernel<<<cuda_blocks(N, TOKENS_THREADS), TOKENS_THREADS, 0, stream>>>(
        (long long *)count, labels, N);
    CUDA_LAUNCHED();
    return DSV3_OK;
}
