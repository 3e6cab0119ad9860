// attention.cu: the CUDA attention ops of kernels.h — attention_forward, attention_backward,
// attention_merge — and the backward's workspace (dsv3_cuda_attention_workspace).
//
// Forward, in the manner of FlashAttention-2 (our own): one block per (sequence, head, tile of
// ATTN_BLOCK_Q queries). It walks the key tiles of ATTN_BLOCK_K keys up to the last position its
// queries sit at, skips the tiles that the mask hides entirely, and keeps each query's running
// max, running sum and output accumulator (online softmax), so that no row of scores is stored.
// At the end out = accumulator / sum and lse = max + log(sum).
//
// Backward, deterministic (no atomics): delta = rowsum(dout ⊙ out) per query first (a warp per
// query, into the workspace); then two kernels that both recompute, tile pair by tile pair,
// P = exp(scale q·kᵀ − lse) and dS = P ⊙ (dout vᵀ − delta): one block per key tile sums
// dv = Pᵀ dout and dk = scale dSᵀ q over the query tiles, one block per query tile sums
// dq = scale dS k over the key tiles. Each gradient element is summed by one thread in a fixed
// order, so the results do not change from run to run.
//
// Merge: a warp per (sequence, position, head).
//
// The products are fp32 FMAs on CUDA cores, from tiles in shared memory; tensor cores would
// replace the three tile products (row_dots; accumulate_rows) without changing the walk over
// the tiles. Tensors of either dtype are read into fp32 and the result is rounded once when
// stored. When the context's matmul dtype is bf16, the operands of the products (q, k, v, dout,
// P, dS) are rounded to bf16 as they enter shared memory, as the CPU backend's bf16 GEMMs round
// theirs; softmax sums and delta use the unrounded values, as on the CPU.
//
// What it does not do: it ignores `scores` (kernels.h allows it): forward never writes it and
// backward never reads it, it recomputes q·kᵀ. Head dims above ATTN_MAX_HEAD_DIM are refused (a
// thread's output accumulators are a fixed number of registers). A query position outside
// [−1, Tk) cannot be checked on the host: the kernels record it as a data fault (reported by
// dsv3_synchronize) and treat the query as seeing no key.
//
// Legend: B sequences, Tq queries and Tk keys per sequence, H heads, Dqk query/key head dim, Dv
// value head dim, BQ / BK queries / keys of a tile. q, dq (B, Tq, H, Dqk); out, dout
// (B, Tq, H, Dv); k, dk (B, Tk, H, Dqk); v, dv (B, Tk, H, Dv): the vector of (b, t, h) starts at
// ((b·T + t)·H + h)·D with T = Tq or Tk. lse, delta (B, H, Tq). q_pos (B, Tq) each query's key
// position p (NULL: p = t; −1: no key). doc (B, Tk) document ids, or NULL for plain causal.
// Query t sees key s when s ≤ p and doc[b, s] == doc[b, p].
//
// Threads of a tile block: ATTN_THREADS = BQ × ATTN_ROW_THREADS; thread (r, g) =
// (threadIdx.x / ATTN_ROW_THREADS, threadIdx.x % ATTN_ROW_THREADS) owns row r of the tile: its
// keys g, g + 8, g + 16, g + 24 when scores are computed, its columns g, g + 8, ... of an
// accumulator when products are summed. The 8 threads of a row are adjacent lanes of one warp,
// so a row's max and sum are shuffles among them.
#include <math.h>
#include <stdint.h>

#include "kernels/checks.h"
#include "kernels/cuda/cuda_kernels.cuh"

enum {
    ATTN_BLOCK_Q = 32,    // queries of a tile
    ATTN_BLOCK_K = 32,    // keys of a tile
    ATTN_ROW_THREADS = 8, // threads that share a row of a tile
    ATTN_THREADS = ATTN_BLOCK_Q * ATTN_ROW_THREADS,
    ATTN_WARPS = ATTN_THREADS / CUDA_WARP,
    ATTN_KEYS_PER_THREAD = ATTN_BLOCK_K / ATTN_ROW_THREADS,
    // The largest Dqk and Dv: the columns of a row's accumulator are registers of its threads.
    ATTN_MAX_HEAD_DIM = 256,
    ATTN_COLS_PER_THREAD = ATTN_MAX_HEAD_DIM / ATTN_ROW_THREADS,
    // One float of padding after each row of a tile in shared memory: with rows of 32·n floats,
    // the threads reading the same column of different rows would hit one bank.
    ATTN_PAD = 1,
};

static_assert(ATTN_BLOCK_K * ATTN_ROW_THREADS == ATTN_THREADS,
              "the backward's key rows take the threads as query rows do");
static_assert(ATTN_BLOCK_Q == ATTN_BLOCK_K, "one tile loader for query and key tiles");
static_assert(CUDA_WARP % ATTN_ROW_THREADS == 0, "a row's threads are lanes of one warp");
static_assert(ATTN_THREADS % CUDA_WARP == 0, "whole warps");
static_assert(ATTN_MAX_HEAD_DIM % ATTN_ROW_THREADS == 0, "whole columns per thread");
static_assert(sizeof(int) == sizeof(float), "int and float tiles share one layout of words");

// What every kernel of a call needs besides its tensors (passed by value).
struct AttnGeometry {
    int64_t B, Tq, Tk, H;
    int Dqk, Dv;
    float scale;
    bool round_operands;  // the matmul dtype is bf16: products take bf16-rounded operands
    const int32_t *q_pos; // (B, Tq), or NULL: p = t
    const int32_t *doc;   // (B, Tk), or NULL: causal only
    CudaFault *fault;
    Dsv3Op op; // the op that reports a bad query position
};

static __host__ __device__ int64_t tiles_of(int64_t n, int64_t tile) {
    return (n + tile - 1) / tile;
}

static __device__ __forceinline__ float operand(float x, bool round) {
    return round ? cuda_round_bf16(x) : x;
}

// ---- shared memory layouts, in 4-byte words from the start of the dynamic shared memory ----

// Forward: row_pos, row_doc (BQ) and key_doc (BK) ints; q (BQ, Dqk + PAD), k (BK, Dqk + PAD),
// v (BK, Dv + PAD), p (BQ, BK + PAD) floats.
struct ForwardLayout {
    int row_pos, row_doc, key_doc, q, k, v, p, words;
};

static __host__ __device__ ForwardLayout forward_layout(int Dqk, int Dv) {
    ForwardLayout l;
    int at = 0;
    l.row_pos = at, at += ATTN_BLOCK_Q;
    l.row_doc = at, at += ATTN_BLOCK_Q;
    l.key_doc = at, at += ATTN_BLOCK_K;
    l.q = at, at += ATTN_BLOCK_Q * (Dqk + ATTN_PAD);
    l.k = at, at += ATTN_BLOCK_K * (Dqk + ATTN_PAD);
    l.v = at, at += ATTN_BLOCK_K * (Dv + ATTN_PAD);
    l.p = at, at += ATTN_BLOCK_Q * (ATTN_BLOCK_K + ATTN_PAD);
    l.words = at;
    return l;
}

// Backward: row_pos, row_doc (BQ) and key_doc (BK) ints; row_lse, row_delta (BQ), q
// (BQ, Dqk + PAD), dout (BQ, Dv + PAD), k (BK, Dqk + PAD), v (BK, Dv + PAD), p and ds
// (BQ, BK + PAD) floats.
struct BackwardLayout {
    int row_pos, row_doc, key_doc, row_lse, row_delta, q, dout, k, v, p, ds, words;
};

static __host__ __device__ BackwardLayout backward_layout(int Dqk, int Dv) {
    BackwardLayout l;
    int at = 0;
    l.row_pos = at, at += ATTN_BLOCK_Q;
    l.row_doc = at, at += ATTN_BLOCK_Q;
    l.key_doc = at, at += ATTN_BLOCK_K;
    l.row_lse = at, at += ATTN_BLOCK_Q;
    l.row_delta = at, at += ATTN_BLOCK_Q;
    l.q = at, at += ATTN_BLOCK_Q * (Dqk + ATTN_PAD);
    l.dout = at, at += ATTN_BLOCK_Q * (Dv + ATTN_PAD);
    l.k = at, at += ATTN_BLOCK_K * (Dqk + ATTN_PAD);
    l.v = at, at += ATTN_BLOCK_K * (Dv + ATTN_PAD);
    l.p = at, at += ATTN_BLOCK_Q * (ATTN_BLOCK_K + ATTN_PAD);
    l.ds = at, at += ATTN_BLOCK_Q * (ATTN_BLOCK_K + ATTN_PAD);
    l.words = at;
    return l;
}

// The backward's tiles in shared memory (backward_layout) and their row strides.
struct BackwardTiles {
    int *row_pos, *row_doc, *key_doc;
    float *row_lse, *row_delta;
    float *q, *dout, *k, *v, *p, *ds;
    int ldqk, ldv, ldp;
};

static __device__ BackwardTiles backward_tiles(float *smem, int Dqk, int Dv) {
    const BackwardLayout l = backward_layout(Dqk, Dv);
    BackwardTiles s;
    s.row_pos = (int *)(smem + l.row_pos);
    s.row_doc = (int *)(smem + l.row_doc);
    s.key_doc = (int *)(smem + l.key_doc);
    s.row_lse = smem + l.row_lse;
    s.row_delta = smem + l.row_delta;
    s.q = smem + l.q;
    s.dout = smem + l.dout;
    s.k = smem + l.k;
    s.v = smem + l.v;
    s.p = smem + l.p;
    s.ds = smem + l.ds;
    s.ldqk = Dqk + ATTN_PAD;
    s.ldv = Dv + ATTN_PAD;
    s.ldp = ATTN_BLOCK_K + ATTN_PAD;
    return s;
}

// ---- pieces every tile kernel shares ----

// The key position of query t of sequence b: −1 (no key) for a row past Tq, and for a position
// outside [−1, Tk), which is recorded as a data fault.
static __device__ int query_position(const AttnGeometry &g, int64_t b, int64_t t) {
    if (t >= g.Tq) return -1;
    if (g.q_pos == NULL) return (int)t;
    const int64_t n = b * g.Tq + t;
    const int p = g.q_pos[n];
    if (p < -1 || p >= g.Tk) {
        cuda_fault(g.fault, g.op, n, p);
        return -1;
    }
    return p;
}

// The document of the key at position pos (≥ 0) of sequence b; 0 without documents.
static __device__ int document_at(const AttnGeometry &g, int64_t b, int64_t pos) {
    return g.doc != NULL && pos >= 0 ? g.doc[b * g.Tk + pos] : 0;
}

// tile (BQ rows; row i at tile + i·ld) = rows [t0, t0 + BQ) of head h of sequence b of
// x (B, len, H, D), as operands of the products; rows past len are zero, so that the products
// of masked entries stay finite. A warp per row: the loads of a row are contiguous.
template <typename T>
static __device__ void load_tile(float *tile, int ld, const T *x, int64_t b, int64_t t0,
                                 int64_t len, int64_t H, int64_t h, int D, bool round) {
    const int warp = threadIdx.x / CUDA_WARP, lane = threadIdx.x % CUDA_WARP;
    for (int i = warp; i < ATTN_BLOCK_Q; i += ATTN_WARPS) {
        float *row = tile + i * ld; // (D)
        if (t0 + i < len) {
            const T *src = x + ((b * len + t0 + i) * H + h) * D; // (D)
            for (int d = lane; d < D; d += CUDA_WARP)
                row[d] = operand(cuda_load(src, d), round);
        } else {
            for (int d = lane; d < D; d += CUDA_WARP)
                row[d] = 0.0f;
        }
    }
}

// key_doc (BK) = the documents of keys [k0, k0 + BK) of sequence b (0 past Tk, where no query
// looks); nothing without documents.
static __device__ void load_key_docs(int *key_doc, const AttnGeometry &g, int64_t b, int64_t k0) {
    if (g.doc == NULL) return;
    for (int i = threadIdx.x; i < ATTN_BLOCK_K; i += blockDim.x)
        key_doc[i] = k0 + i < g.Tk ? g.doc[b * g.Tk + k0 + i] : 0;
}

// The last position of the tile's queries (−1 when none sees a key): keys after it are hidden.
static __device__ int last_position(const int *row_pos) {
    int last = -1;
    for (int i = 0; i < ATTN_BLOCK_Q; i++)
        last = max(last, row_pos[i]);
    return last;
}

// Bit j set when the query at position pos, of document doc_r, sees key k0 + g + j·ROW_THREADS
// of the tile whose documents are key_doc.
static __device__ unsigned visible_keys(int pos, int doc_r, const int *key_doc, int64_t k0, int g,
                                        bool has_doc) {
    unsigned bits = 0;
#pragma unroll
    for (int j = 0; j < ATTN_KEYS_PER_THREAD; j++) {
        const int c = g + j * ATTN_ROW_THREADS;
        if (k0 + c <= pos && (!has_doc || key_doc[c] == doc_r)) bits |= 1u << j;
    }
    return bits;
}

// dots[j] = a_row (D) · row g + j·ROW_THREADS of tile (ld), summed over d in order: the scores
// (q·k) and dP (dout·v) of thread (r, g).
static __device__ void row_dots(float dots[ATTN_KEYS_PER_THREAD], const float *a_row,
                                const float *tile, int ld, int g, int D) {
    float acc[ATTN_KEYS_PER_THREAD];
#pragma unroll
    for (int j = 0; j < ATTN_KEYS_PER_THREAD; j++)
        acc[j] = 0.0f;
    for (int d = 0; d < D; d++) {
        const float a = a_row[d];
#pragma unroll
        for (int j = 0; j < ATTN_KEYS_PER_THREAD; j++)
            acc[j] += a * tile[(g + j * ATTN_ROW_THREADS) * ld + d];
    }
#pragma unroll
    for (int j = 0; j < ATTN_KEYS_PER_THREAD; j++)
        dots[j] = acc[j];
}

// acc[c] += Σ_i a[i·a_stride] · rows[i·ld + g + c·ROW_THREADS] over the n rows i, for the columns
// below D: a thread's share of a tile product (P v, dS k, Pᵀ dout, dSᵀ q).
static __device__ void accumulate_rows(float acc[ATTN_COLS_PER_THREAD], const float *a,
                                       int a_stride, const float *rows, int ld, int n, int D,
                                       int g) {
    for (int i = 0; i < n; i++) {
        const float ai = a[i * a_stride];
        const float *row = rows + i * ld; // (D)
#pragma unroll
        for (int c = 0; c < ATTN_COLS_PER_THREAD; c++) {
            const int d = g + c * ATTN_ROW_THREADS;
            if (d < D) acc[c] += ai * row[d];
        }
    }
}

// x reduced over the ROW_THREADS adjacent lanes of a row (every lane gets the same bits: each
// step adds or compares the same two values on both lanes).
static __device__ __forceinline__ float row_max(float x) {
    for (int offset = ATTN_ROW_THREADS / 2; offset > 0; offset /= 2)
        x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
    return x;
}

static __device__ __forceinline__ float row_sum(float x) {
    for (int offset = ATTN_ROW_THREADS / 2; offset > 0; offset /= 2)
        x += __shfl_xor_sync(0xffffffffu, x, offset);
    return x;
}

// Writes a thread's columns of row `row` (D) of a tensor: x · acc.
template <typename T>
static __device__ void store_columns(T *row, const float acc[ATTN_COLS_PER_THREAD], float x, int D,
                                     int g) {
#pragma unroll
    for (int c = 0; c < ATTN_COLS_PER_THREAD; c++) {
        const int d = g + c * ATTN_ROW_THREADS;
        if (d < D) cuda_store(row, d, x * acc[c]);
    }
}

static __device__ void zero_columns(float acc[ATTN_COLS_PER_THREAD]) {
#pragma unroll
    for (int c = 0; c < ATTN_COLS_PER_THREAD; c++)
        acc[c] = 0.0f;
}

// ---- forward ----

// One block per (sequence, head, query tile): the online softmax of its rows over the key tiles.
template <typename T>
static __global__ void __launch_bounds__(ATTN_THREADS)
    attention_forward_kernel(T *out, float *lse, const T *q, const T *k, const T *v,
                             AttnGeometry geo) {
    extern __shared__ float smem[];
    const ForwardLayout l = forward_layout(geo.Dqk, geo.Dv);
    int *row_pos = (int *)(smem + l.row_pos), *row_doc = (int *)(smem + l.row_doc); // (BQ)
    int *key_doc = (int *)(smem + l.key_doc);                                       // (BK)
    float *q_tile = smem + l.q, *k_tile = smem + l.k, *v_tile = smem + l.v, *p_tile = smem + l.p;
    const int ldqk = geo.Dqk + ATTN_PAD, ldv = geo.Dv + ATTN_PAD, ldp = ATTN_BLOCK_K + ATTN_PAD;
    const bool round = geo.round_operands, has_doc = geo.doc != NULL;

    // Later query tiles see more keys: they come first.
    const int64_t q_tiles = tiles_of(geo.Tq, ATTN_BLOCK_Q);
    const int64_t qt = q_tiles - 1 - (int64_t)blockIdx.x % q_tiles;
    const int64_t bh = (int64_t)blockIdx.x / q_tiles, b = bh / geo.H, h = bh % geo.H;
    const int64_t t0 = qt * ATTN_BLOCK_Q;
    const int r = threadIdx.x / ATTN_ROW_THREADS, g = threadIdx.x % ATTN_ROW_THREADS;

    for (int i = threadIdx.x; i < ATTN_BLOCK_Q; i += blockDim.x) {
        row_pos[i] = query_position(geo, b, t0 + i);
        row_doc[i] = document_at(geo, b, row_pos[i]);
    }
    load_tile(q_tile, ldqk, q, b, t0, geo.Tq, geo.H, h, geo.Dqk, round);
    __syncthreads();
    const int pos = row_pos[r], doc_r = row_doc[r];
    const int64_t key_end = (int64_t)last_position(row_pos) + 1;

    float max_r = -INFINITY, sum_r = 0.0f; // row r's running max and sum of e^(s − max)
    float acc[ATTN_COLS_PER_THREAD];       // row r's Σ e^(s − max) v, the columns of thread g
    zero_columns(acc);
    for (int64_t k0 = 0; k0 < key_end; k0 += ATTN_BLOCK_K) {
        load_key_docs(key_doc, geo, b, k0);
        __syncthreads();
        const unsigned vis = visible_keys(pos, doc_r, key_doc, k0, g, has_doc);
        if (!__syncthreads_or(vis != 0)) continue; // the mask hides the whole tile
        load_tile(k_tile, ldqk, k, b, k0, geo.Tk, geo.H, h, geo.Dqk, round);
        load_tile(v_tile, ldv, v, b, k0, geo.Tk, geo.H, h, geo.Dv, round);
        __syncthreads();
        float s[ATTN_KEYS_PER_THREAD];
        row_dots(s, q_tile + r * ldqk, k_tile, ldqk, g, geo.Dqk);
        float tile_max = -INFINITY;
#pragma unroll
        for (int j = 0; j < ATTN_KEYS_PER_THREAD; j++) {
            s[j] = ((vis >> j) & 1u) ? geo.scale * s[j] : -INFINITY;
            tile_max = fmaxf(tile_max, s[j]);
        }
        const float new_max = fmaxf(max_r, row_max(tile_max));
        // Until a row sees a key its max is −∞: nothing to rescale (and no −∞ − −∞).
        const float rescale = new_max == -INFINITY ? 1.0f : expf(max_r - new_max);
        float p_sum = 0.0f;
#pragma unroll
        for (int j = 0; j < ATTN_KEYS_PER_THREAD; j++) {
            const float p = ((vis >> j) & 1u) ? expf(s[j] - new_max) : 0.0f;
            p_sum += p;
            p_tile[r * ldp + g + j * ATTN_ROW_THREADS] = operand(p, round);
        }
        sum_r = rescale * sum_r + row_sum(p_sum);
        max_r = new_max;
#pragma unroll
        for (int c = 0; c < ATTN_COLS_PER_THREAD; c++)
            acc[c] *= rescale;
        __syncthreads();
        accumulate_rows(acc, p_tile + r * ldp, 1, v_tile, ldv, ATTN_BLOCK_K, geo.Dv, g);
        // Not needed today (the next tile writes shared memory only after its first barrier),
        // kept so that each tile ends with every read of it done.
        __syncthreads();
    }

    const int64_t t = t0 + r;
    if (t >= geo.Tq) return;
    // A query that sees a key sees the one at its position, whose term is e^0: sum_r >= 1. One
    // that sees none (sum_r 0) gets out 0 and lse −∞.
    const bool seen = sum_r > 0.0f;
    store_columns(out + ((b * geo.Tq + t) * geo.H + h) * geo.Dv, acc, seen ? 1.0f / sum_r : 0.0f,
                  geo.Dv, g);
    if (g == 0) lse[(b * geo.H + h) * geo.Tq + t] = seen ? max_r + logf(sum_r) : -INFINITY;
}

// ---- backward ----

// delta (B, H, Tq) = Σ_d dout·out per query, a warp per query (summed in double, as the CPU
// does).
template <typename T>
static __global__ void attention_delta_kernel(float *delta, const T *dout, const T *out,
                                              AttnGeometry geo) {
    const int warps_per_block = blockDim.x / CUDA_WARP, lane = threadIdx.x % CUDA_WARP;
    const int64_t rows = geo.B * geo.Tq * geo.H, warps = (int64_t)gridDim.x * warps_per_block;
    for (int64_t n = (int64_t)blockIdx.x * warps_per_block + threadIdx.x / CUDA_WARP; n < rows;
         n += warps) { // n = (b·Tq + t)·H + h
        double acc = 0.0;
        for (int d = lane; d < geo.Dv; d += CUDA_WARP)
            acc += (double)cuda_load(dout, n * geo.Dv + d) * (double)cuda_load(out, n * geo.Dv + d);
        acc = cuda_warp_sum(acc);
        const int64_t h = n % geo.H, bt = n / geo.H, t = bt % geo.Tq, b = bt / geo.Tq;
        if (lane == 0) delta[(b * geo.H + h) * geo.Tq + t] = (float)acc;
    }
}

// Rows of the query tile at t0 (threads 0..BQ−1): position, document, lse and delta. A query
// whose lse is −∞ saw no key anywhere and gets no gradient: it sees none here either.
static __device__ void load_backward_rows(const BackwardTiles &s, const AttnGeometry &geo,
                                          const float *lse, const float *delta, int64_t b,
                                          int64_t h, int64_t t0) {
    for (int i = threadIdx.x; i < ATTN_BLOCK_Q; i += blockDim.x) {
        const int64_t t = t0 + i, at = (b * geo.H + h) * geo.Tq + t;
        const float lse_t = t < geo.Tq ? lse[at] : -INFINITY;
        int pos = query_position(geo, b, t);
        if (lse_t == -INFINITY) pos = -1;
        s.row_pos[i] = pos;
        s.row_doc[i] = document_at(geo, b, pos);
        s.row_lse[i] = lse_t;
        s.row_delta[i] = t < geo.Tq ? delta[at] : 0.0f;
    }
}

// p and ds of the tile pair in shared memory, thread (r, g) for the keys g + j·ROW_THREADS of row
// r: P = exp(scale q·k − lse) where the query sees the key, else 0; dS = P (dout·v − delta);
// both stored as operands of the products that follow.
static __device__ void tile_probabilities(const BackwardTiles &s, unsigned vis, int r, int g,
                                          const AttnGeometry &geo) {
    float sc[ATTN_KEYS_PER_THREAD], dp[ATTN_KEYS_PER_THREAD];
    row_dots(sc, s.q + r * s.ldqk, s.k, s.ldqk, g, geo.Dqk);
    row_dots(dp, s.dout + r * s.ldv, s.v, s.ldv, g, geo.Dv);
    const float lse_r = s.row_lse[r], delta_r = s.row_delta[r];
#pragma unroll
    for (int j = 0; j < ATTN_KEYS_PER_THREAD; j++) {
        const int at = r * s.ldp + g + j * ATTN_ROW_THREADS;
        const float p = ((vis >> j) & 1u) ? expf(geo.scale * sc[j] - lse_r) : 0.0f;
        s.p[at] = operand(p, geo.round_operands);
        s.ds[at] = operand(p * (dp[j] - delta_r), geo.round_operands);
    }
}

// One block per (sequence, head, key tile): dv = Σ Pᵀ dout and dk = scale Σ dSᵀ q over the query
// tiles that see the key tile. Thread (c, g) sums the columns g + i·ROW_THREADS of key row c.
template <typename T>
static __global__ void __launch_bounds__(ATTN_THREADS)
    attention_dkdv_kernel(T *dk, T *dv, const T *dout, const T *q, const T *k, const T *v,
                          const float *lse, const float *delta, AttnGeometry geo) {
    extern __shared__ float smem[];
    const BackwardTiles s = backward_tiles(smem, geo.Dqk, geo.Dv);
    const bool round = geo.round_operands, has_doc = geo.doc != NULL;
    const int64_t k_tiles = tiles_of(geo.Tk, ATTN_BLOCK_K),
                  q_tiles = tiles_of(geo.Tq, ATTN_BLOCK_Q);
    const int64_t kt = (int64_t)blockIdx.x % k_tiles, bh = (int64_t)blockIdx.x / k_tiles;
    const int64_t b = bh / geo.H, h = bh % geo.H, s0 = kt * ATTN_BLOCK_K;
    // r: the query row of a tile pair's scores, and the key row of the sums (BK == BQ rows).
    const int r = threadIdx.x / ATTN_ROW_THREADS, g = threadIdx.x % ATTN_ROW_THREADS;

    load_key_docs(s.key_doc, geo, b, s0);
    load_tile(s.k, s.ldqk, k, b, s0, geo.Tk, geo.H, h, geo.Dqk, round);
    load_tile(s.v, s.ldv, v, b, s0, geo.Tk, geo.H, h, geo.Dv, round);
    float dk_acc[ATTN_COLS_PER_THREAD], dv_acc[ATTN_COLS_PER_THREAD];
    zero_columns(dk_acc);
    zero_columns(dv_acc);
    // Without query positions query t sits at t: the tiles before this one's first key see none.
    for (int64_t qt = geo.q_pos == NULL ? s0 / ATTN_BLOCK_Q : 0; qt < q_tiles; qt++) {
        const int64_t t0 = qt * ATTN_BLOCK_Q;
        load_backward_rows(s, geo, lse, delta, b, h, t0);
        __syncthreads();
        const unsigned vis = visible_keys(s.row_pos[r], s.row_doc[r], s.key_doc, s0, g, has_doc);
        if (!__syncthreads_or(vis != 0)) continue; // the mask hides the whole tile pair
        load_tile(s.q, s.ldqk, q, b, t0, geo.Tq, geo.H, h, geo.Dqk, round);
        load_tile(s.dout, s.ldv, dout, b, t0, geo.Tq, geo.H, h, geo.Dv, round);
        __syncthreads();
        tile_probabilities(s, vis, r, g, geo);
        __syncthreads();
        accumulate_rows(dv_acc, s.p + r, s.ldp, s.dout, s.ldv, ATTN_BLOCK_Q, geo.Dv, g);
        accumulate_rows(dk_acc, s.ds + r, s.ldp, s.q, s.ldqk, ATTN_BLOCK_Q, geo.Dqk, g);
        __syncthreads(); // every read of the tile pair done (a guard, as in the forward)
    }

    const int64_t key = s0 + r;
    if (key >= geo.Tk) return;
    store_columns(dk + ((b * geo.Tk + key) * geo.H + h) * geo.Dqk, dk_acc, geo.scale, geo.Dqk, g);
    store_columns(dv + ((b * geo.Tk + key) * geo.H + h) * geo.Dv, dv_acc, 1.0f, geo.Dv, g);
}

// One block per (sequence, head, query tile): dq = scale Σ dS k over the key tiles its queries
// see. Thread (r, g) sums the columns g + i·ROW_THREADS of query row r.
template <typename T>
static __global__ void __launch_bounds__(ATTN_THREADS)
    attention_dq_kernel(T *dq, const T *dout, const T *q, const T *k, const T *v, const float *lse,
                        const float *delta, AttnGeometry geo) {
    extern __shared__ float smem[];
    const BackwardTiles s = backward_tiles(smem, geo.Dqk, geo.Dv);
    const bool round = geo.round_operands, has_doc = geo.doc != NULL;
    const int64_t q_tiles = tiles_of(geo.Tq, ATTN_BLOCK_Q);
    const int64_t qt = q_tiles - 1 - (int64_t)blockIdx.x % q_tiles; // longest rows first
    const int64_t bh = (int64_t)blockIdx.x / q_tiles, b = bh / geo.H, h = bh % geo.H;
    const int64_t t0 = qt * ATTN_BLOCK_Q;
    const int r = threadIdx.x / ATTN_ROW_THREADS, g = threadIdx.x % ATTN_ROW_THREADS;

    load_backward_rows(s, geo, lse, delta, b, h, t0);
    load_tile(s.q, s.ldqk, q, b, t0, geo.Tq, geo.H, h, geo.Dqk, round);
    load_tile(s.dout, s.ldv, dout, b, t0, geo.Tq, geo.H, h, geo.Dv, round);
    __syncthreads();
    const int pos = s.row_pos[r], doc_r = s.row_doc[r];
    const int64_t key_end = (int64_t)last_position(s.row_pos) + 1;
    float dq_acc[ATTN_COLS_PER_THREAD];
    zero_columns(dq_acc);
    for (int64_t k0 = 0; k0 < key_end; k0 += ATTN_BLOCK_K) {
        load_key_docs(s.key_doc, geo, b, k0);
        __syncthreads();
        const unsigned vis = visible_keys(pos, doc_r, s.key_doc, k0, g, has_doc);
        if (!__syncthreads_or(vis != 0)) continue; // the mask hides the whole tile pair
        load_tile(s.k, s.ldqk, k, b, k0, geo.Tk, geo.H, h, geo.Dqk, round);
        load_tile(s.v, s.ldv, v, b, k0, geo.Tk, geo.H, h, geo.Dv, round);
        __syncthreads();
        tile_probabilities(s, vis, r, g, geo);
        __syncthreads();
        accumulate_rows(dq_acc, s.ds + r * s.ldp, 1, s.k, s.ldqk, ATTN_BLOCK_K, geo.Dqk, g);
        __syncthreads(); // every read of the tile pair done (a guard, as in the forward)
    }

    const int64_t t = t0 + r;
    if (t >= geo.Tq) return;
    store_columns(dq + ((b * geo.Tq + t) * geo.H + h) * geo.Dqk, dq_acc, geo.scale, geo.Dqk, g);
}

// ---- merge ----

// A warp per (sequence, position, head), n = (b·T + t)·H + h: out and lse become those of the
// union of both sides' keys. Every lane reads the old lse before lane 0 writes the new one.
template <typename T>
static __global__ void attention_merge_kernel(T *out, float *lse, const T *part_out,
                                              const float *part_lse, int64_t B, int64_t T_len,
                                              int64_t H, int Dv) {
    const int warps_per_block = blockDim.x / CUDA_WARP, lane = threadIdx.x % CUDA_WARP;
    const int64_t rows = B * T_len * H, warps = (int64_t)gridDim.x * warps_per_block;
    for (int64_t n = (int64_t)blockIdx.x * warps_per_block + threadIdx.x / CUDA_WARP; n < rows;
         n += warps) {
        const int64_t h = n % H, bt = n / H, t = bt % T_len, b = bt / T_len;
        const int64_t at = (b * H + h) * T_len + t;
        const float old_lse = lse[at], new_part = part_lse[at];
        if (new_part == -INFINITY) continue; // the part adds nothing
        // Through the larger lse, so that no exponential overflows; a side at −∞ weighs 0.
        const float m = fmaxf(old_lse, new_part);
        const float w_old = expf(old_lse - m), w_part = expf(new_part - m), sum = w_old + w_part;
        for (int d = lane; d < Dv; d += CUDA_WARP) {
            const int64_t i = n * Dv + d;
            cuda_store(out, i, (cuda_load(out, i) * w_old + cuda_load(part_out, i) * w_part) / sum);
        }
        __syncwarp();
        if (lane == 0) lse[at] = m + logf(sum);
    }
}

// ---- host side ----

// The limits of these kernels, after the shared checks (kernels/checks.h): head dims, int32
// positions, the grid.
static Dsv3Err check_attention_limits(const char *op, int64_t B, int64_t Tq, int64_t Tk, int64_t H,
                                      int64_t Dqk, int64_t Dv) {
    DSV3_CHECK(Dqk <= ATTN_MAX_HEAD_DIM && Dv <= ATTN_MAX_HEAD_DIM, DSV3_ERR_USAGE,
               "%s: the CUDA kernels take head dims Dqk and Dv up to %d, got Dqk=%lld Dv=%lld", op,
               (int)ATTN_MAX_HEAD_DIM, (long long)Dqk, (long long)Dv);
    DSV3_CHECK(Tq <= INT32_MAX && Tk <= INT32_MAX, DSV3_ERR_USAGE,
               "%s: Tq and Tk must fit in int32 (positions are int32), got Tq=%lld Tk=%lld", op,
               (long long)Tq, (long long)Tk);
    // One block per (sequence, head, tile): a grid's x dimension holds up to 2^31 − 1 blocks.
    const int64_t tiles = tiles_of(Tq > Tk ? Tq : Tk, ATTN_BLOCK_Q);
    DSV3_CHECK(B <= INT32_MAX / H && B * H <= INT32_MAX / tiles, DSV3_ERR_USAGE,
               "%s: B·H·(tiles of %d positions) must be at most 2^31 - 1 CUDA blocks, got B=%lld "
               "H=%lld Tq=%lld Tk=%lld",
               op, (int)ATTN_BLOCK_Q, (long long)B, (long long)H, (long long)Tq, (long long)Tk);
    return DSV3_OK;
}

static AttnGeometry attention_geometry(const Dsv3KernelContext *ctx, Dsv3Op op,
                                       const int32_t *q_pos, const int32_t *doc, int64_t B,
                                       int64_t Tq, int64_t Tk, int64_t H, int64_t Dqk, int64_t Dv,
                                       float scale) {
    AttnGeometry geo;
    geo.B = B, geo.Tq = Tq, geo.Tk = Tk, geo.H = H;
    geo.Dqk = (int)Dqk, geo.Dv = (int)Dv; // at most ATTN_MAX_HEAD_DIM (check_attention_limits)
    geo.scale = scale;
    geo.round_operands = ctx->matmul_dtype == DSV3_TENSOR_BF16;
    geo.q_pos = q_pos;
    geo.doc = doc;
    geo.fault = cuda_fault_record(ctx);
    geo.op = op;
    return geo;
}

// Lets `kernel` take `bytes` of dynamic shared memory (more than the default 48 KiB).
template <typename Kernel> static Dsv3Err allow_shared_memory(Kernel kernel, size_t bytes) {
    CUDA_CALL(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    return DSV3_OK;
}

template <typename T>
static Dsv3Err forward_launch(const Dsv3KernelContext *ctx, const AttnGeometry &geo, void *out,
                              float *lse, const void *q, const void *k, const void *v) {
    const size_t bytes = (size_t)forward_layout(geo.Dqk, geo.Dv).words * sizeof(float);
    DSV3_CALL(allow_shared_memory(attention_forward_kernel<T>, bytes));
    const int64_t blocks = geo.B * geo.H * tiles_of(geo.Tq, ATTN_BLOCK_Q);
    attention_forward_kernel<T><<<(unsigned)blocks, ATTN_THREADS, bytes, cuda_stream(ctx)>>>(
        (T *)out, lse, (const T *)q, (const T *)k, (const T *)v, geo);
    CUDA_LAUNCHED();
    return DSV3_OK;
}

template <typename T>
static Dsv3Err backward_launch(const Dsv3KernelContext *ctx, const AttnGeometry &geo, float *delta,
                               void *dq, void *dk, void *dv, const void *dout, const void *q,
                               const void *k, const void *v, const void *out, const float *lse) {
    const cudaStream_t stream = cuda_stream(ctx);
    const int64_t rows = geo.B * geo.Tq * geo.H;
    attention_delta_kernel<T>
        <<<cuda_blocks(rows, CUDA_THREADS / CUDA_WARP), CUDA_THREADS, 0, stream>>>(
            delta, (const T *)dout, (const T *)out, geo);
    CUDA_LAUNCHED();
    const size_t bytes = (size_t)backward_layout(geo.Dqk, geo.Dv).words * sizeof(float);
    DSV3_CALL(allow_shared_memory(attention_dkdv_kernel<T>, bytes));
    DSV3_CALL(allow_shared_memory(attention_dq_kernel<T>, bytes));
    const int64_t key_blocks = geo.B * geo.H * tiles_of(geo.Tk, ATTN_BLOCK_K);
    attention_dkdv_kernel<T><<<(unsigned)key_blocks, ATTN_THREADS, bytes, stream>>>(
        (T *)dk, (T *)dv, (const T *)dout, (const T *)q, (const T *)k, (const T *)v, lse, delta,
        geo);
    CUDA_LAUNCHED();
    const int64_t query_blocks = geo.B * geo.H * tiles_of(geo.Tq, ATTN_BLOCK_Q);
    attention_dq_kernel<T><<<(unsigned)query_blocks, ATTN_THREADS, bytes, stream>>>(
        (T *)dq, (const T *)dout, (const T *)q, (const T *)k, (const T *)v, lse, delta, geo);
    CUDA_LAUNCHED();
    return DSV3_OK;
}

template <typename T>
static Dsv3Err merge_launch(const Dsv3KernelContext *ctx, void *out, float *lse,
                            const void *part_out, const float *part_lse, int64_t B, int64_t T_len,
                            int64_t H, int64_t Dv) {
    const int64_t rows = B * T_len * H;
    attention_merge_kernel<T>
        <<<cuda_blocks(rows, CUDA_THREADS / CUDA_WARP), CUDA_THREADS, 0, cuda_stream(ctx)>>>(
            (T *)out, lse, (const T *)part_out, part_lse, B, T_len, H, (int)Dv);
    CUDA_LAUNCHED();
    return DSV3_OK;
}

// Bytes of scratch: the backward's delta (B, H, Tq) floats; none for forward and merge. SIZE_MAX
// (workspace.cu's "does not fit") when the count overflows.
size_t dsv3_cuda_attention_workspace(Dsv3Op op, const Dsv3OpShape *shape) {
    if (op != DSV3_OP_ATTENTION_BACKWARD || shape->B <= 0 || shape->H <= 0 || shape->Tq <= 0)
        return 0;
    const int64_t limit = INT64_MAX / (int64_t)sizeof(float) / 2; // room for the alignment
    if (shape->B > limit / shape->H || shape->B * shape->H > limit / shape->Tq) return SIZE_MAX;
    return cuda_align((size_t)(shape->B * shape->H * shape->Tq) * sizeof(float));
}

extern "C" Dsv3Err dsv3_cuda_attention_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                               void *out, float *lse, float *scores, const void *q,
                                               const void *k, const void *v, const int32_t *q_pos,
                                               const int32_t *doc, int64_t B, int64_t Tq,
                                               int64_t Tk, int64_t H, int64_t Dqk, int64_t Dv,
                                               float scale) {
    (void)scores; // not kept: backward recomputes the scores (kernels.h allows it)
    DSV3_CALL(dsv3_cuda_check_dtype(dtype, "attention_forward"));
    DSV3_CALL(dsv3_check_attention_forward(out, lse, q, k, v, q_pos, B, Tq, Tk, H, Dqk, Dv, scale));
    DSV3_CALL(check_attention_limits("attention_forward", B, Tq, Tk, H, Dqk, Dv));
    const AttnGeometry geo = attention_geometry(ctx, DSV3_OP_ATTENTION_FORWARD, q_pos, doc, B, Tq,
                                                Tk, H, Dqk, Dv, scale);
    if (dtype == DSV3_TENSOR_BF16)
        DSV3_CALL(forward_launch<__nv_bfloat16>(ctx, geo, out, lse, q, k, v));
    else
        DSV3_CALL(forward_launch<float>(ctx, geo, out, lse, q, k, v));
    return DSV3_OK;
}

extern "C" Dsv3Err
dsv3_cuda_attention_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *dq,
                             void *dk, void *dv, const void *dout, const void *q, const void *k,
                             const void *v, const void *out, const float *lse, const float *scores,
                             const int32_t *q_pos, const int32_t *doc, int64_t B, int64_t Tq,
                             int64_t Tk, int64_t H, int64_t Dqk, int64_t Dv, float scale) {
    (void)scores; // forward kept none: recomputed
    DSV3_CALL(dsv3_cuda_check_dtype(dtype, "attention_backward"));
    DSV3_CALL(dsv3_check_attention_backward(dq, dk, dv, dout, q, k, v, out, lse, q_pos, B, Tq, Tk,
                                            H, Dqk, Dv, scale));
    DSV3_CALL(check_attention_limits("attention_backward", B, Tq, Tk, H, Dqk, Dv));
    Dsv3OpShape shape = {};
    shape.B = B, shape.Tq = Tq, shape.Tk = Tk, shape.H = H, shape.Dqk = Dqk, shape.Dv = Dv;
    DSV3_CALL(dsv3_cuda_check_workspace(
        ctx, dsv3_cuda_attention_workspace(DSV3_OP_ATTENTION_BACKWARD, &shape),
        "attention_backward"));
    float *delta = (float *)ctx->workspace; // (B, H, Tq)
    const AttnGeometry geo = attention_geometry(ctx, DSV3_OP_ATTENTION_BACKWARD, q_pos, doc, B, Tq,
                                                Tk, H, Dqk, Dv, scale);
    if (dtype == DSV3_TENSOR_BF16)
        DSV3_CALL(
            backward_launch<__nv_bfloat16>(ctx, geo, delta, dq, dk, dv, dout, q, k, v, out, lse));
    else
        DSV3_CALL(backward_launch<float>(ctx, geo, delta, dq, dk, dv, dout, q, k, v, out, lse));
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_attention_merge(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                             void *out, float *lse, const void *part_out,
                                             const float *part_lse, int64_t B, int64_t T, int64_t H,
                                             int64_t Dv) {
    DSV3_CALL(dsv3_cuda_check_dtype(dtype, "attention_merge"));
    DSV3_CALL(dsv3_check_attention_merge(out, lse, part_out, part_lse, B, T, H, Dv));
    DSV3_CHECK(Dv <= INT32_MAX, DSV3_ERR_USAGE, "attention_merge: Dv must fit in int32, got %lld",
               (long long)Dv);
    if (dtype == DSV3_TENSOR_BF16)
        DSV3_CALL(merge_launch<__nv_bfloat16>(ctx, out, lse, part_out, part_lse, B, T, H, Dv));
    else
        DSV3_CALL(merge_launch<float>(ctx, out, lse, part_out, part_lse, B, T, H, Dv));
    return DSV3_OK;
}
