// moe_permute: MoE token permutation to experts and back (CUDA backend).
//
// An assignment a = n·K + k is token n's k-th chosen expert. The plan lists the assignments
// expert by expert, each expert's in increasing a (torch.argsort(stable=True) of the flattened
// expert indices); routed row j holds assignment order[j], a copy of token order[j] / K.
//
// The plan is a counting sort over chunks of consecutive assignments, one warp per chunk:
//   1. count: each warp counts its chunk's assignments per expert into cells (E, chunks),
//      32 assignments at a time (__match_any_sync groups the lanes of one expert);
//   2. scan: one block turns the cells, read expert-major, into their exclusive prefix sums:
//      cell (e, c) becomes the first row of chunk c's assignments of expert e, and cell (e, 0)
//      is offsets[e];
//   3. scatter: each warp walks its chunk again in the same order, a lane's row being its
//      cell plus the lanes of its expert before it, and moves the cell past the group.
// Chunks are in increasing a, and so are the lanes within a step, so the sort is stable, and
// deterministic: no atomics.
//
// The backward of the gather and both directions of the combine go over tokens (through the
// inverse permutation row_of, built in the workspace), so that every output element is written
// by one thread, summing its token's K rows in k order: no atomics, the same bits every run.
// The gather and the combine-backward's dys copy or scale values (exact in either dtype); the
// combine forward sums the K weighted rows in double, and the backward's dot products too, as
// the reference does.
//
// Data faults (recorded, the element skipped; dsv3_synchronize reports them): an expert index
// outside [0, E) in the plan; an order entry outside [0, M), or an assignment held by two rows
// (order is not a permutation), in the ops that read order.
//
// Legend: N tokens, K experts per token, E experts, D model width, M = N × K routed rows.
#include <stdint.h>

#include "kernels/checks.h"
#include "kernels/cuda/cuda_kernels.cuh"

enum {
    PLAN_CHUNK = 1024,                // assignments a warp of the plan sorts, at least
    PLAN_MAX_CELLS = 1 << 20,         // (expert, chunk) cells at most (E more when E is larger)
    PLAN_WARPS = 8,                   // warps (chunks) per block of the count and the scatter
    PLAN_SCAN_THREADS = 1024,         // the scan's one block
    PLAN_SCAN_ITEMS = 4,              // consecutive cells per thread per round of the scan
    PERMUTE_ROW_THREADS = 256,        // most threads per block of the row kernels (one row each)
    PERMUTE_MAX_ROW_BLOCKS = 1 << 16, // blocks of a row kernel (grid-stride beyond)
    PERMUTE_WARPS = 8,                // warps per block of the combine's backward (one (n, k) each)
    PERMUTE_ROW_NONE = -1,            // row_of of an assignment no row holds (after a fault)
};

static const unsigned PERMUTE_FULL_MASK = 0xffffffffu;

// ---- workspace ----

// Chunks of the plan's counting sort for M assignments and E experts: about PLAN_CHUNK
// assignments each, but no more than PLAN_MAX_CELLS / E chunks (at least one).
static int64_t plan_chunks(int64_t M, int64_t E) {
    if (M <= 0) return 0;
    int64_t chunks = (M + PLAN_CHUNK - 1) / PLAN_CHUNK;
    const int64_t cap = E < PLAN_MAX_CELLS ? PLAN_MAX_CELLS / E : 1;
    return chunks < cap ? chunks : cap;
}

// Bytes of `count` elements of `size` bytes, aligned; SIZE_MAX when that overflows.
static size_t permute_bytes(int64_t count, size_t size) {
    if (count <= 0) return 0;
    if ((uint64_t)count > (SIZE_MAX - CUDA_WORKSPACE_ALIGNMENT) / size) return SIZE_MAX;
    return cuda_align((size_t)count * size);
}

// The plan: cells (E, chunks) int64.
static size_t plan_workspace(int64_t N, int64_t K, int64_t E) {
    if (N <= 0 || K <= 0 || E <= 0) return 0;
    if (N > INT64_MAX / K) return SIZE_MAX;
    return permute_bytes(plan_chunks(N * K, E) * E, sizeof(int64_t));
}

// The gather backward and the combine: row_of (M) int32.
static size_t rows_of_workspace(int64_t M) { return permute_bytes(M, sizeof(int32_t)); }

size_t dsv3_cuda_moe_workspace(Dsv3Op op, const Dsv3OpShape *shape) {
    switch (op) {
    case DSV3_OP_MOE_PLAN: return plan_workspace(shape->N, shape->K, shape->E);
    case DSV3_OP_MOE_GATHER_BACKWARD:
    case DSV3_OP_MOE_COMBINE_FORWARD:
    case DSV3_OP_MOE_COMBINE_BACKWARD: {
        // The gather's callers give M, the combines' N and K.
        if (shape->M > 0) return rows_of_workspace(shape->M);
        if (shape->N <= 0 || shape->K <= 0) return 0;
        if (shape->N > INT64_MAX / shape->K) return SIZE_MAX;
        return rows_of_workspace(shape->N * shape->K);
    }
    default: return 0;
    }
}

// ---- moe_plan ----

// The first and one-past-last assignment of chunk c of `chunks` over M.
__device__ __forceinline__ void plan_chunk_range(int64_t *begin, int64_t *end, int64_t c,
                                                 int64_t chunks, int64_t M) {
    *begin = c * M / chunks;
    *end = (c + 1) * M / chunks;
}

// The expert of assignment a for the sort, or −1 when a is past the chunk or its expert is
// outside [0, E) (a fault, recorded when `fault` is not NULL).
__device__ __forceinline__ int plan_key(const int32_t *topk_idx, int64_t a, int64_t end, int64_t E,
                                        CudaFault *fault) {
    if (a >= end) return -1;
    const int32_t e = topk_idx[a];
    if (e < 0 || e >= E) {
        if (fault != NULL) cuda_fault(fault, DSV3_OP_MOE_PLAN, a, e);
        return -1;
    }
    return e;
}

// Warp c counts the assignments of chunk c per expert: cells (E, chunks) column c.
__global__ void plan_count_kernel(int64_t *cells, const int32_t *topk_idx, int64_t M, int64_t E,
                                  int64_t chunks, CudaFault *fault) {
    const int lane = threadIdx.x % CUDA_WARP;
    const int64_t c = blockIdx.x * (int64_t)PLAN_WARPS + threadIdx.x / CUDA_WARP;
    if (c >= chunks) return; // the whole warp
    for (int64_t e = lane; e < E; e += CUDA_WARP)
        cells[e * chunks + c] = 0;
    __syncwarp();
    int64_t begin, end;
    plan_chunk_range(&begin, &end, c, chunks, M);
    for (int64_t base = begin; base < end; base += CUDA_WARP) {
        const int key = plan_key(topk_idx, base + lane, end, E, fault);
        const unsigned group = __match_any_sync(PERMUTE_FULL_MASK, key);
        if (key >= 0 && lane == __ffs(group) - 1) cells[key * chunks + c] += __popc(group);
        __syncwarp(); // the next step's leader of an expert may be another lane
    }
}

// The block's exclusive prefix sum of x over its threads (blockDim.x a multiple of 32); *total
// gets the block's sum. Every thread must call it.
__device__ long long plan_block_exclusive_scan(long long x, long long *total) {
    __shared__ long long warp_totals[PLAN_SCAN_THREADS / CUDA_WARP];
    const int lane = threadIdx.x % CUDA_WARP, warp = threadIdx.x / CUDA_WARP;
    const int warps = blockDim.x / CUDA_WARP;
    long long inclusive = x;
    for (int offset = 1; offset < CUDA_WARP; offset *= 2) {
        const long long up = __shfl_up_sync(PERMUTE_FULL_MASK, inclusive, offset);
        if (lane >= offset) inclusive += up;
    }
    if (lane == CUDA_WARP - 1) warp_totals[warp] = inclusive;
    __syncthreads();
    long long before = 0, sum = 0;
    for (int w = 0; w < warps; w++) {
        if (w < warp) before += warp_totals[w];
        sum += warp_totals[w];
    }
    __syncthreads(); // warp_totals is read before the next call writes it
    *total = sum;
    return before + inclusive - x;
}

// One block of PLAN_SCAN_THREADS: cells (E, chunks), read as one array of `count` = E · chunks,
// replaced by its exclusive prefix sums; offsets (E + 1) = the first row of each expert and
// the rows in all.
__global__ void plan_scan_kernel(int64_t *cells, int64_t *offsets, int64_t E, int64_t chunks) {
    const int64_t count = E * chunks;
    const int64_t per_round = (int64_t)blockDim.x * PLAN_SCAN_ITEMS;
    long long carry = 0; // the sum of the rounds before
    for (int64_t round = 0; round < count; round += per_round) {
        const int64_t first = round + (int64_t)threadIdx.x * PLAN_SCAN_ITEMS;
        long long items[PLAN_SCAN_ITEMS], mine = 0;
        for (int i = 0; i < PLAN_SCAN_ITEMS; i++) {
            items[i] = first + i < count ? cells[first + i] : 0;
            mine += items[i];
        }
        long long round_total = 0;
        long long run = carry + plan_block_exclusive_scan(mine, &round_total);
        for (int i = 0; i < PLAN_SCAN_ITEMS; i++)
            if (first + i < count) {
                cells[first + i] = run;
                run += items[i];
            }
        carry += round_total;
    }
    __syncthreads(); // the cells of other threads are read below
    for (int64_t e = threadIdx.x; e < E; e += blockDim.x)
        offsets[e] = cells[e * chunks];
    if (threadIdx.x == 0) offsets[E] = carry;
}

// Warp c places the assignments of chunk c: order (M) at the rows its cells start at.
__global__ void plan_scatter_kernel(int32_t *order, int64_t *cells, const int32_t *topk_idx,
                                    int64_t M, int64_t E, int64_t chunks) {
    const int lane = threadIdx.x % CUDA_WARP;
    const int64_t c = blockIdx.x * (int64_t)PLAN_WARPS + threadIdx.x / CUDA_WARP;
    if (c >= chunks) return; // the whole warp
    const unsigned lanes_before = (1u << lane) - 1u;
    int64_t begin, end;
    plan_chunk_range(&begin, &end, c, chunks, M);
    for (int64_t base = begin; base < end; base += CUDA_WARP) {
        const int64_t a = base + lane;
        const int key = plan_key(topk_idx, a, end, E, NULL); // the count recorded the faults
        const unsigned group = __match_any_sync(PERMUTE_FULL_MASK, key);
        if (key >= 0) order[cells[key * chunks + c] + __popc(group & lanes_before)] = (int32_t)a;
        __syncwarp(); // every lane of the group read the cell before it moves on
        if (key >= 0 && lane == __ffs(group) - 1) cells[key * chunks + c] += __popc(group);
        __syncwarp();
    }
}

extern "C" Dsv3Err dsv3_cuda_moe_plan(const Dsv3KernelContext *ctx, int32_t *order,
                                      int64_t *offsets, const int32_t *topk_idx, int64_t N,
                                      int64_t K, int64_t E) {
    DSV3_CALL(dsv3_check_moe_plan(order, offsets, topk_idx, N, K, E));
    DSV3_CALL(dsv3_cuda_check_workspace(ctx, plan_workspace(N, K, E), "moe_plan"));
    const int64_t M = N * K;
    if (M == 0) {
        CUDA_CALL(cudaMemsetAsync(offsets, 0, (size_t)(E + 1) * sizeof(int64_t), cuda_stream(ctx)));
        return DSV3_OK;
    }
    const int64_t chunks = plan_chunks(M, E);
    int64_t *cells = (int64_t *)ctx->workspace; // (E, chunks)
    const unsigned blocks = (unsigned)((chunks + PLAN_WARPS - 1) / PLAN_WARPS);
    plan_count_kernel<<<blocks, PLAN_WARPS * CUDA_WARP, 0, cuda_stream(ctx)>>>(
        cells, topk_idx, M, E, chunks, cuda_fault_record(ctx));
    CUDA_LAUNCHED();
    plan_scan_kernel<<<1, PLAN_SCAN_THREADS, 0, cuda_stream(ctx)>>>(cells, offsets, E, chunks);
    CUDA_LAUNCHED();
    plan_scatter_kernel<<<blocks, PLAN_WARPS * CUDA_WARP, 0, cuda_stream(ctx)>>>(
        order, cells, topk_idx, M, E, chunks);
    CUDA_LAUNCHED();
    return DSV3_OK;
}

// ---- the inverse permutation ----

// row_of (M, all PERMUTE_ROW_NONE before) = the row of each assignment: row_of[order[j]] = j.
// An entry outside [0, M), or an assignment met twice, is a fault of `op`.
__global__ void rows_of_kernel(int32_t *row_of, const int32_t *order, int64_t M, Dsv3Op op,
                               CudaFault *fault) {
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < M;
         j += (int64_t)gridDim.x * blockDim.x) {
        const int32_t a = order[j];
        if (a < 0 || a >= M) {
            cuda_fault(fault, op, j, a);
            continue;
        }
        // Which of two rows claiming one assignment wins is a race, but the op then fails.
        if (atomicCAS(&row_of[a], PERMUTE_ROW_NONE, (int32_t)j) != PERMUTE_ROW_NONE)
            cuda_fault(fault, op, j, a);
    }
}

// row_of (M) in the context's workspace (checked by the caller), filled from order.
static Dsv3Err rows_of(int32_t **row_of, const Dsv3KernelContext *ctx, Dsv3Op op,
                       const int32_t *order, int64_t M) {
    *row_of = (int32_t *)ctx->workspace;
    static_assert(PERMUTE_ROW_NONE == -1, "row_of starts as all-ones bytes");
    CUDA_CALL(cudaMemsetAsync(*row_of, 0xff, (size_t)M * sizeof(int32_t), cuda_stream(ctx)));
    rows_of_kernel<<<cuda_blocks(M, CUDA_THREADS), CUDA_THREADS, 0, cuda_stream(ctx)>>>(
        *row_of, order, M, op, cuda_fault_record(ctx));
    CUDA_LAUNCHED();
    return DSV3_OK;
}

// ---- launch shapes of the row kernels: one block per row, its threads over the D columns ----

static unsigned permute_row_threads(int64_t D) {
    const int64_t warps = (D + CUDA_WARP - 1) / CUDA_WARP;
    return warps * CUDA_WARP < PERMUTE_ROW_THREADS ? (unsigned)(warps * CUDA_WARP)
                                                   : (unsigned)PERMUTE_ROW_THREADS;
}

static unsigned permute_row_blocks(int64_t rows) {
    return rows < PERMUTE_MAX_ROW_BLOCKS ? (unsigned)rows : (unsigned)PERMUTE_MAX_ROW_BLOCKS;
}

// ---- moe_gather ----

// xs (M, D) row j = x (N, D) row order[j] / K.
template <typename T>
__global__ void gather_kernel(T *xs, const T *x, const int32_t *order, int64_t M, int64_t K,
                              int64_t D, CudaFault *fault) {
    for (int64_t j = blockIdx.x; j < M; j += gridDim.x) {
        const int32_t a = order[j];
        if (a < 0 || a >= M) { // the same a for the whole block
            if (threadIdx.x == 0) cuda_fault(fault, DSV3_OP_MOE_GATHER, j, a);
            continue;
        }
        const T *src = x + (int64_t)(a / K) * D; // (D)
        T *dst = xs + j * D;                     // (D)
        for (int64_t d = threadIdx.x; d < D; d += blockDim.x)
            dst[d] = src[d];
    }
}

template <typename T>
static Dsv3Err gather(const Dsv3KernelContext *ctx, void *xs, const void *x, const int32_t *order,
                      int64_t M, int64_t K, int64_t D) {
    gather_kernel<T><<<permute_row_blocks(M), permute_row_threads(D), 0, cuda_stream(ctx)>>>(
        (T *)xs, (const T *)x, order, M, K, D, cuda_fault_record(ctx));
    CUDA_LAUNCHED();
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_moe_gather(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                        void *xs, const void *x, const int32_t *order, int64_t M,
                                        int64_t K, int64_t D) {
    DSV3_CALL(dsv3_cuda_check_dtype(dtype, "moe_gather"));
    int64_t N = 0;
    DSV3_CALL(dsv3_check_moe_gather(&N, xs, x, order, M, K, D));
    if (M == 0) return DSV3_OK;
    return dtype == DSV3_TENSOR_BF16 ? gather<__nv_bfloat16>(ctx, xs, x, order, M, K, D)
                                     : gather<float>(ctx, xs, x, order, M, K, D);
}

// ---- moe_gather_backward ----

// dx (N, D) row n += dxs (M, D) rows of its K assignments, in k order, summed in fp32.
template <typename T>
__global__ void gather_backward_kernel(T *dx, const T *dxs, const int32_t *row_of, int64_t N,
                                       int64_t K, int64_t D) {
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x)
        for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
            float acc = cuda_load(dx, n * D + d);
            for (int64_t k = 0; k < K; k++) {
                const int64_t j = row_of[n * K + k];
                if (j != PERMUTE_ROW_NONE) acc += cuda_load(dxs, j * D + d);
            }
            cuda_store(dx, n * D + d, acc);
        }
}

template <typename T>
static Dsv3Err gather_backward(const Dsv3KernelContext *ctx, void *dx, const void *dxs,
                               const int32_t *row_of, int64_t N, int64_t K, int64_t D) {
    gather_backward_kernel<T>
        <<<permute_row_blocks(N), permute_row_threads(D), 0, cuda_stream(ctx)>>>(
            (T *)dx, (const T *)dxs, row_of, N, K, D);
    CUDA_LAUNCHED();
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_moe_gather_backward(const Dsv3KernelContext *ctx,
                                                 Dsv3TensorDtype dtype, void *dx, const void *dxs,
                                                 const int32_t *order, int64_t M, int64_t K,
                                                 int64_t D) {
    DSV3_CALL(dsv3_cuda_check_dtype(dtype, "moe_gather_backward"));
    int64_t N = 0;
    DSV3_CALL(dsv3_check_moe_gather_backward(&N, dx, dxs, order, M, K, D));
    DSV3_CALL(dsv3_cuda_check_workspace(ctx, rows_of_workspace(M), "moe_gather_backward"));
    if (M == 0) return DSV3_OK;
    int32_t *row_of = NULL; // (M)
    DSV3_CALL(rows_of(&row_of, ctx, DSV3_OP_MOE_GATHER_BACKWARD, order, M));
    return dtype == DSV3_TENSOR_BF16 ? gather_backward<__nv_bfloat16>(ctx, dx, dxs, row_of, N, K, D)
                                     : gather_backward<float>(ctx, dx, dxs, row_of, N, K, D);
}

// ---- moe_combine_forward ----

// out (N, D) row n += Σ_k weights[n, k] · ys (M, D) row of (n, k), the sum in double over k
// in order, rounded to fp32 and then added (the reference's order).
template <typename T>
__global__ void combine_forward_kernel(T *out, const T *ys, const float *weights,
                                       const int32_t *row_of, int64_t N, int64_t K, int64_t D) {
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x)
        for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
            double sum = 0; // the products are exact in double: fusing changes nothing
            for (int64_t k = 0; k < K; k++) {
                const int64_t j = row_of[n * K + k];
                if (j != PERMUTE_ROW_NONE)
                    sum += (double)weights[n * K + k] * (double)cuda_load(ys, j * D + d);
            }
            cuda_store(out, n * D + d, cuda_load(out, n * D + d) + __double2float_rn(sum));
        }
}

template <typename T>
static Dsv3Err combine_forward(const Dsv3KernelContext *ctx, void *out, const void *ys,
                               const float *weights, const int32_t *row_of, int64_t N, int64_t K,
                               int64_t D) {
    combine_forward_kernel<T>
        <<<permute_row_blocks(N), permute_row_threads(D), 0, cuda_stream(ctx)>>>(
            (T *)out, (const T *)ys, weights, row_of, N, K, D);
    CUDA_LAUNCHED();
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_moe_combine_forward(const Dsv3KernelContext *ctx,
                                                 Dsv3TensorDtype dtype, void *out, const void *ys,
                                                 const float *weights, const int32_t *order,
                                                 int64_t N, int64_t K, int64_t D) {
    DSV3_CALL(dsv3_cuda_check_dtype(dtype, "moe_combine_forward"));
    DSV3_CALL(dsv3_check_moe_combine_forward(out, ys, weights, order, N, K, D));
    const int64_t M = N * K;
    DSV3_CALL(dsv3_cuda_check_workspace(ctx, rows_of_workspace(M), "moe_combine_forward"));
    if (M == 0) return DSV3_OK;
    int32_t *row_of = NULL; // (M)
    DSV3_CALL(rows_of(&row_of, ctx, DSV3_OP_MOE_COMBINE_FORWARD, order, M));
    return dtype == DSV3_TENSOR_BF16
               ? combine_forward<__nv_bfloat16>(ctx, out, ys, weights, row_of, N, K, D)
               : combine_forward<float>(ctx, out, ys, weights, row_of, N, K, D);
}

// ---- moe_combine_backward ----

// One warp per assignment i = (n, k), j its row: dys (M, D) row j = weights[i] · dout (N, D)
// row n, in fp32; dweights[i] = dout row n · ys (M, D) row j, summed in double.
template <typename T>
__global__ void combine_backward_kernel(T *dys, float *dweights, const T *dout, const T *ys,
                                        const float *weights, const int32_t *row_of, int64_t N,
                                        int64_t K, int64_t D) {
    const int lane = threadIdx.x % CUDA_WARP;
    const int64_t warps = blockDim.x / CUDA_WARP;
    for (int64_t i = blockIdx.x * warps + threadIdx.x / CUDA_WARP; i < N * K;
         i += gridDim.x * warps) {
        const int64_t j = row_of[i], n = i / K;
        if (j == PERMUTE_ROW_NONE) continue; // the whole warp
        const float w = weights[i];
        double dot = 0; // the products are exact in double: fusing changes nothing
        for (int64_t d = lane; d < D; d += CUDA_WARP) {
            const float g = cuda_load(dout, n * D + d);
            cuda_store(dys, j * D + d, w * g);
            dot += (double)g * (double)cuda_load(ys, j * D + d);
        }
        dot = cuda_warp_sum(dot);
        if (lane == 0) dweights[i] = __double2float_rn(dot);
    }
}

template <typename T>
static Dsv3Err combine_backward(const Dsv3KernelContext *ctx, void *dys, float *dweights,
                                const void *dout, const void *ys, const float *weights,
                                const int32_t *row_of, int64_t N, int64_t K, int64_t D) {
    combine_backward_kernel<T>
        <<<cuda_blocks(N * K, PERMUTE_WARPS), PERMUTE_WARPS * CUDA_WARP, 0, cuda_stream(ctx)>>>(
            (T *)dys, dweights, (const T *)dout, (const T *)ys, weights, row_of, N, K, D);
    CUDA_LAUNCHED();
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_moe_combine_backward(const Dsv3KernelContext *ctx,
                                                  Dsv3TensorDtype dtype, void *dys, float *dweights,
                                                  const void *dout, const void *ys,
                                                  const float *weights, const int32_t *order,
                                                  int64_t N, int64_t K, int64_t D) {
    DSV3_CALL(dsv3_cuda_check_dtype(dtype, "moe_combine_backward"));
    DSV3_CALL(dsv3_check_moe_combine_backward(dys, dweights, dout, ys, weights, order, N, K, D));
    const int64_t M = N * K;
    DSV3_CALL(dsv3_cuda_check_workspace(ctx, rows_of_workspace(M), "moe_combine_backward"));
    if (M == 0) return DSV3_OK;
    int32_t *row_of = NULL; // (M)
    DSV3_CALL(rows_of(&row_of, ctx, DSV3_OP_MOE_COMBINE_BACKWARD, order, M));
    return dtype == DSV3_TENSOR_BF16
               ? combine_backward<__nv_bfloat16>(ctx, dys, dweights, dout, ys, weights, row_of, N,
                                                 K, D)
               : combine_backward<float>(ctx, dys, dweights, dout, ys, weights, row_of, N, K, D);
}
