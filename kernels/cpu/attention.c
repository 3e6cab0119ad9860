// attention.c: causal / block-causal scaled dot-product attention (see kernels.h), tiled in
// the manner of FlashAttention-2.
//
// Forward: for each (sequence, head, query block), the key blocks it can see are visited in
// order with an online softmax (running max m, running sum l, unnormalised output o), so the
// T × T score matrix never exists. Score and output tiles are GEMMs (dsv3_cpu_gemm) that read q,
// k, v in place (the rows of one head are H·D floats apart: that is the leading dimension).
// Key blocks that the mask hides entirely are skipped; only tiles that the mask cuts are
// masked element by element.
//
// Backward: the probabilities are recomputed from the saved lse, P = exp(S − lse) — from the
// scores themselves when the caller kept them (scores not NULL: no q·kᵀ again), with
// delta_t = dout_t · out_t, dP = dout vᵀ and dS = P ⊙ (dP − delta); then dv += Pᵀ dout,
// dk += scale dSᵀ q, dq += scale dS k, accumulated by sgemm straight into the outputs.
// When the (sequence, head) pairs share out evenly enough over the threads, each thread owns
// whole heads; otherwise key blocks (dk, dv) and query blocks (dq) are split over threads in
// two passes that both recompute P. Both schedules add the tiles in the same order, so the
// result does not depend on the number of threads.
//
// OpenMP runs the tiles in parallel and each sgemm inside runs on one thread: OpenBLAS's
// pthreads build serialises concurrent multi-threaded GEMMs, so its thread count is set to 1
// for the length of a parallel region and restored after. Each thread's tiles and the
// backward's delta come from the context's workspace.
//
// Legend: B sequences, Tq queries and Tk keys per sequence, H heads, Dqk query/key head dim, Dv
// value head dim, BQ / BK query / key rows of a tile. q, dq (B, Tq, H, Dqk); out, dout
// (B, Tq, H, Dv); k, dk (B, Tk, H, Dqk); v, dv (B, Tk, H, Dv): the vector of (b, t, h) starts
// at ((b·T + t)·H + h)·D with T = Tq or Tk. lse, delta (B, H, Tq). q_pos (B, Tq) each query's
// key position p (NULL: p = t; −1: no key). doc (B, Tk) document ids, or NULL for plain
// causal. Query t sees key s when s ≤ p and doc[b, s] == doc[b, p]. A query block's positions
// need not be contiguous: a tile is classified by the range of its queries' positions.
#include <cblas.h>

#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/core/error.h"
#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

// Tile sizes: large enough that sgemm's packing is amortised, small enough that a tile's
// scores and one block of q, k, v stay in L2.
enum { BLOCK_Q = 64, BLOCK_K = 64 };

typedef enum { TILE_HIDDEN, TILE_VISIBLE, TILE_CUT } TileKind;

static int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }

// ---- exp of the probabilities ----
//
// Every score of every tile goes through exp; glibc's expf is a scalar call, so this is a
// branch-free version that GCC vectorises (Cody–Waite reduction x = n·ln2 + r, |r| ≤ ln2/2,
// and Cephes' degree-6 polynomial for e^r; within 2 ulp of the exact value, measured 1.4).
// The clamp and the select use integer operations on the bits: float comparisons may raise
// FP exceptions, which keeps GCC (with its default -ftrapping-math) from vectorising them.

#define EXP_LOG2E 1.44269504088896341f
#define EXP_LN2_HI 0.693359375f // ln 2 = EXP_LN2_HI + EXP_LN2_LO, HI exact in few bits
#define EXP_LN2_LO -2.12194440e-4f
#define EXP_MIN_ARG (-87.0f) // below this e^x is under FLT_MIN: the result is 0
enum { FLOAT_EXPONENT_BIAS = 127, FLOAT_MANTISSA_BITS = 23 };

typedef union {
    float f;
    int32_t i;
} FloatBits;

// e^x for x <= 0 (or a rounding error above 0), including −∞ (gives 0). The bits of a
// negative float, read as a signed integer, increase as the float decreases (from INT32_MIN
// at −0): so x > EXP_MIN_ARG exactly when the bits are below the limit's or are >= 0.
static inline float exp_nonpositive(float x) {
    FloatBits v = {.f = x};
    const FloatBits limit = {.f = EXP_MIN_ARG};
    const int32_t keep = (v.i >= 0) | (v.i < limit.i); // 1 when x > EXP_MIN_ARG, else 0
    v.i = (v.i & -keep) | (limit.i & (keep - 1));      // max(x, EXP_MIN_ARG)
    const float clamped = v.f;
    const int32_t n = (int32_t)(clamped * EXP_LOG2E - 0.5f); // round to nearest for x <= 0
    const float nf = (float)n;
    const float r = (clamped - nf * EXP_LN2_HI) - nf * EXP_LN2_LO;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    const FloatBits two_to_n = {.i = (n + FLOAT_EXPONENT_BIAS) * (1 << FLOAT_MANTISSA_BITS)};
    return p * two_to_n.f * (float)keep;
}

// x (n) = e^(x − shift) in place, shift >= every x; returns the sum.
static float exp_shifted(float *x, int64_t n, float shift) {
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < n; j++) {
        x[j] = exp_nonpositive(x[j] - shift);
        sum += x[j];
    }
    return sum;
}

static void doc_range(const int32_t *doc_b, int64_t start, int64_t end, int32_t *lo, int32_t *hi) {
    *lo = INT32_MAX;
    *hi = INT32_MIN;
    for (int64_t t = start; t < end; t++) {
        if (doc_b[t] < *lo) *lo = doc_b[t];
        if (doc_b[t] > *hi) *hi = doc_b[t];
    }
}

static int64_t query_position(const int32_t *pos_b, int64_t t) { return pos_b ? pos_b[t] : t; }

// A query block: rows [q0, q0 + nq) of one sequence, its queries' positions (pos, or NULL),
// their range and (with doc) the range of their document ids.
typedef struct {
    int64_t q0, nq;
    const int32_t *pos; // (Tq) the sequence's query positions, or NULL
    int64_t pos_lo, pos_hi;
    int32_t doc_lo, doc_hi;
} QueryBlock;

static QueryBlock query_block(const int32_t *q_pos, const int32_t *doc_b, int64_t b, int64_t qb,
                              int64_t Tq) {
    QueryBlock blk = {.q0 = qb * BLOCK_Q, .nq = min_i64(BLOCK_Q, Tq - qb * BLOCK_Q)};
    blk.pos = q_pos ? q_pos + b * Tq : NULL;
    blk.pos_lo = INT64_MAX;
    blk.pos_hi = INT64_MIN;
    blk.doc_lo = INT32_MAX;
    blk.doc_hi = INT32_MIN;
    for (int64_t t = blk.q0; t < blk.q0 + blk.nq; t++) {
        const int64_t p = query_position(blk.pos, t);
        if (p < blk.pos_lo) blk.pos_lo = p;
        if (p > blk.pos_hi) blk.pos_hi = p;
        if (doc_b == NULL || p < 0) continue;
        if (doc_b[p] < blk.doc_lo) blk.doc_lo = doc_b[p];
        if (doc_b[p] > blk.doc_hi) blk.doc_hi = doc_b[p];
    }
    return blk;
}

// Whether the mask hides all of the tile (query block × keys [k0, k1)), none of it, or cuts it.
static TileKind tile_kind(const int32_t *doc_b, const QueryBlock *blk, int64_t k0, int64_t k1) {
    if (k0 > blk->pos_hi) return TILE_HIDDEN;
    int causal_whole = k1 - 1 <= blk->pos_lo;
    if (doc_b == NULL) return causal_whole ? TILE_VISIBLE : TILE_CUT;
    int32_t k_lo, k_hi;
    doc_range(doc_b, k0, k1, &k_lo, &k_hi);
    if (k_hi < blk->doc_lo || k_lo > blk->doc_hi) return TILE_HIDDEN;
    int one_doc = blk->doc_lo == blk->doc_hi && k_lo == k_hi && k_lo == blk->doc_lo;
    return causal_whole && one_doc ? TILE_VISIBLE : TILE_CUT;
}

// s (nq, BK) = −∞ where query q0 + i may not see key k0 + j.
static void mask_tile(float *s, const int32_t *doc_b, const QueryBlock *blk, int64_t k0,
                      int64_t nk) {
    for (int64_t i = 0; i < blk->nq; i++) {
        const int64_t p = query_position(blk->pos, blk->q0 + i);
        for (int64_t j = 0; j < nk; j++) {
            const int64_t u = k0 + j;
            if (u > p || (doc_b != NULL && doc_b[u] != doc_b[p])) s[i * BLOCK_K + j] = -INFINITY;
        }
    }
}

// The geometry every tile of one call shares.
typedef struct {
    const int32_t *q_pos;
    int64_t Tq, Tk, H, Dqk, Dv;
    float scale;
} Geometry;

// s (nq, BK) = scale · q_tile (nq, Dqk) · k_tile (nk, Dqk)ᵀ, masked; false when hidden.
static int score_tile(const Dsv3KernelContext *ctx, float *s, const float *q, const float *k,
                      const int32_t *doc_b, int64_t b, int64_t h, const QueryBlock *blk, int64_t k0,
                      int64_t nk, const Geometry *g) {
    TileKind kind = tile_kind(doc_b, blk, k0, k0 + nk);
    if (kind == TILE_HIDDEN) return 0;
    const int ld = (int)(g->H * g->Dqk);
    dsv3_cpu_gemm(ctx, DSV3_GEMM_NO_TRANS, DSV3_GEMM_TRANS, (int)blk->nq, (int)nk, (int)g->Dqk,
                  g->scale, q + ((b * g->Tq + blk->q0) * g->H + h) * g->Dqk, ld,
                  k + ((b * g->Tk + k0) * g->H + h) * g->Dqk, ld, 0.0f, s, BLOCK_K);
    if (kind == TILE_CUT) mask_tile(s, doc_b, blk, k0, nk);
    return 1;
}

// Inside our parallel regions every sgemm must run on the calling thread (see the top).
static int blas_threads_enter(void) {
    int saved = openblas_get_num_threads();
    if (omp_get_max_threads() > 1 && saved > 1) openblas_set_num_threads(1);
    return saved;
}

static void blas_threads_leave(int saved) {
    if (openblas_get_num_threads() != saved) openblas_set_num_threads(saved);
}

// BLAS takes int leading dimensions; the other checks are shared with the reference version
// (checks.h).
static Dsv3Err check_blas_dims(int64_t H, int64_t Dqk, int64_t Dv) {
    DSV3_CHECK(H * Dqk <= INT_MAX && H * Dv <= INT_MAX, DSV3_ERR_USAGE,
               "attention: H*Dqk and H*Dv must fit in an int for BLAS, got %lld and %lld",
               (long long)(H * Dqk), (long long)(H * Dv));
    return DSV3_OK;
}

// ---- forward ----

// Per-thread scratch of the forward: s (BQ, BK) scores then probabilities, o (BQ, Dv)
// unnormalised output, m (BQ) running max, l (BQ) running sum.
static int64_t forward_scratch_floats(int64_t Dv) {
    return BLOCK_Q * BLOCK_K + BLOCK_Q * Dv + 2 * BLOCK_Q;
}

// Folds the probabilities of one score tile into the running softmax of its rows: s becomes
// exp(s − m_new), o and l are rescaled by exp(m_old − m_new).
static void online_softmax_tile(float *s, float *o, float *m, float *l, int64_t nq, int64_t nk,
                                int64_t Dv) {
    for (int64_t i = 0; i < nq; i++) {
        float *si = s + i * BLOCK_K; // (nk)
        float row_max = -INFINITY;
#pragma omp simd reduction(max : row_max)
        for (int64_t j = 0; j < nk; j++)
            row_max = si[j] > row_max ? si[j] : row_max;
        const float m_new = row_max > m[i] ? row_max : m[i];
        if (m_new == -INFINITY) { // nothing visible to this row yet
            for (int64_t j = 0; j < nk; j++)
                si[j] = 0.0f;
            continue;
        }
        const float sum = exp_shifted(si, nk, m_new);
        if (m_new != m[i]) {
            const float correction = exp_nonpositive(m[i] - m_new); // 0 when m[i] is −∞
            for (int64_t d = 0; d < Dv; d++)
                o[i * Dv + d] *= correction;
            l[i] *= correction;
            m[i] = m_new;
        }
        l[i] += sum;
    }
}

// The scaled, masked scores of visible tiles, kept for backward: cache (B, H, Tq, Tk).
static float *cache_row(float *cache, int64_t b, int64_t h, int64_t t, const Geometry *g) {
    return cache + ((b * g->H + h) * g->Tq + t) * g->Tk;
}

static void forward_query_block(const Dsv3KernelContext *ctx, float *out, float *lse, float *cache,
                                const float *q, const float *k, const float *v, const int32_t *doc,
                                int64_t b, int64_t h, int64_t qb, const Geometry *g,
                                float *scratch) {
    const int64_t Tq = g->Tq, Tk = g->Tk, H = g->H, Dv = g->Dv;
    float *s = scratch;                                       // (BQ, BK)
    float *o = s + BLOCK_Q * BLOCK_K;                         // (BQ, Dv)
    float *m = o + BLOCK_Q * Dv;                              // (BQ)
    float *l = m + BLOCK_Q;                                   // (BQ)
    const int32_t *doc_b = doc == NULL ? NULL : doc + b * Tk; // (Tk)
    const QueryBlock blk = query_block(g->q_pos, doc_b, b, qb, Tq);
    const int64_t q0 = blk.q0, nq = blk.nq;
    for (int64_t i = 0; i < nq; i++) {
        m[i] = -INFINITY;
        l[i] = 0.0f;
    }
    memset(o, 0, (size_t)(nq * Dv) * sizeof *o);
    for (int64_t k0 = 0; k0 <= blk.pos_hi; k0 += BLOCK_K) {
        const int64_t nk = min_i64(BLOCK_K, Tk - k0);
        if (!score_tile(ctx, s, q, k, doc_b, b, h, &blk, k0, nk, g)) continue;
        if (cache)
            for (int64_t i = 0; i < nq; i++)
                memcpy(cache_row(cache, b, h, q0 + i, g) + k0, s + i * BLOCK_K,
                       (size_t)nk * sizeof *s);
        online_softmax_tile(s, o, m, l, nq, nk, Dv);
        dsv3_cpu_gemm(ctx, DSV3_GEMM_NO_TRANS, DSV3_GEMM_NO_TRANS, (int)nq, (int)Dv, (int)nk, 1.0f,
                      s, BLOCK_K, v + ((b * Tk + k0) * H + h) * Dv, (int)(H * Dv), 1.0f, o,
                      (int)Dv);
    }
    // A query that sees a key sees the one at its position, so l >= 1 then; a query that sees
    // none (position −1) gets zeros and an lse of −∞.
    for (int64_t i = 0; i < nq; i++) {
        float *out_t = out + ((b * Tq + q0 + i) * H + h) * Dv; // (Dv)
        const float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
        for (int64_t d = 0; d < Dv; d++)
            out_t[d] = o[i * Dv + d] * inv;
        lse[(b * H + h) * Tq + q0 + i] = l[i] > 0.0f ? m[i] + logf(l[i]) : -INFINITY;
    }
}

// Workspace of the forward: scratch (threads, forward_scratch_floats) floats.
size_t dsv3_cpu_attention_forward_workspace(const Dsv3OpShape *shape, int threads) {
    Dsv3CpuLayout layout = {0};
    dsv3_cpu_layout_add(&layout, threads * forward_scratch_floats(shape->Dv), sizeof(float));
    return layout.bytes;
}

Dsv3Err dsv3_cpu_attention_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *out_,
                                   float *lse, float *scores, const void *q_, const void *k_,
                                   const void *v_, const int32_t *q_pos, const int32_t *doc,
                                   int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t Dqk,
                                   int64_t Dv, float scale) {
    DSV3_CALL(dsv3_cpu_check_f32("attention_forward", dtype));
    float *out = out_;                     // (B, Tq, H, Dv)
    const float *q = q_, *k = k_, *v = v_; // (B, Tq, H, Dqk), (B, Tk, H, Dqk), (B, Tk, H, Dv)
    DSV3_CALL(
        dsv3_cpu_check_attention_forward(out, lse, q, k, v, q_pos, B, Tq, Tk, H, Dqk, Dv, scale));
    DSV3_CALL(check_blas_dims(H, Dqk, Dv));
    const int threads = omp_get_max_threads();
    const Dsv3OpShape shape = {.B = B, .Tq = Tq, .Tk = Tk, .H = H, .Dqk = Dqk, .Dv = Dv};
    DSV3_CALL(dsv3_cpu_check_workspace(ctx, "attention_forward",
                                       dsv3_cpu_attention_forward_workspace(&shape, threads)));
    const int64_t per_thread = forward_scratch_floats(Dv);
    float *scratch = ctx->workspace; // (threads, per_thread)
    const Geometry g = {q_pos, Tq, Tk, H, Dqk, Dv, scale};
    const int64_t blocks = (Tq + BLOCK_Q - 1) / BLOCK_Q;
    const int64_t tasks = B * H * blocks;
    const int saved = blas_threads_enter();
    // Later query blocks see more keys: hand them out first so the short ones fill the gaps.
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; task++) {
        const int64_t qb = blocks - 1 - task % blocks, bh = task / blocks;
        forward_query_block(ctx, out, lse, scores, q, k, v, doc, bh / H, bh % H, qb, &g,
                            scratch + omp_get_thread_num() * per_thread);
    }
    blas_threads_leave(saved);
    return DSV3_OK;
}

// ---- backward ----

// Per-thread scratch of the backward: p (BQ, BK) probabilities, ds (BQ, BK) their gradient.
static int64_t backward_scratch_floats(void) { return 2 * BLOCK_Q * BLOCK_K; }

typedef struct {
    const Dsv3KernelContext *ctx;
    float *dq, *dk, *dv;
    const float *dout, *q, *k, *v, *lse, *delta;
    const float *scores; // (B, H, Tq, Tk) kept by the forward, or NULL: recompute
    const int32_t *doc;
    Geometry g;
} Backward;

enum { UPDATE_DQ = 1, UPDATE_DKV = 2 };

// GEMMs per tile: S, dP, dv, dk, dq in one pass; S and dP once more in the second pass.
enum { ONE_PASS_GEMMS = 5, TWO_PASS_GEMMS = 7 };

// The causal part of the mask: query block qb sees no key block after last_key_block, and
// key block kb is seen by no query block before first_query_block (with positions in query
// order; given positions may come in any order, so all are visited and hidden tiles skipped).
static int64_t last_key_block(const Geometry *g, int64_t qb) {
    if (g->q_pos == NULL) return (min_i64((qb + 1) * BLOCK_Q, g->Tq) - 1) / BLOCK_K;
    return (g->Tk - 1) / BLOCK_K;
}

static int64_t first_query_block(const Geometry *g, int64_t kb) {
    return g->q_pos == NULL ? kb * BLOCK_K / BLOCK_Q : 0;
}

// One tile (query block qb × key block kb of sequence b, head h): recomputes P and dS, then
// adds its share to dq and/or to dk, dv as `updates` says.
static void backward_tile(const Backward *a, int64_t b, int64_t h, int64_t qb, int64_t kb,
                          int updates, float *scratch) {
    float *p = scratch;                // (BQ, BK)
    float *ds = p + BLOCK_Q * BLOCK_K; // (BQ, BK)
    const Geometry *g = &a->g;
    const int64_t Tq = g->Tq, Tk = g->Tk, H = g->H, Dqk = g->Dqk, Dv = g->Dv;
    const int32_t *doc_b = a->doc == NULL ? NULL : a->doc + b * Tk; // (Tk)
    const int64_t k0 = kb * BLOCK_K, nk = min_i64(BLOCK_K, Tk - k0);
    const QueryBlock blk = query_block(g->q_pos, doc_b, b, qb, Tq);
    const int64_t q0 = blk.q0, nq = blk.nq;
    if (a->scores) {
        if (tile_kind(doc_b, &blk, k0, k0 + nk) == TILE_HIDDEN) return;
        for (int64_t i = 0; i < nq; i++)
            memcpy(p + i * BLOCK_K, cache_row((float *)a->scores, b, h, q0 + i, g) + k0,
                   (size_t)nk * sizeof *p);
    } else if (!score_tile(a->ctx, p, a->q, a->k, doc_b, b, h, &blk, k0, nk, g)) {
        return;
    }
    const float *lse_q = a->lse + (b * H + h) * Tq + q0;     // (nq)
    const float *delta_q = a->delta + (b * H + h) * Tq + q0; // (nq)
    const int ldqk = (int)(H * Dqk), ldv = (int)(H * Dv);
    const float *q_tile = a->q + ((b * Tq + q0) * H + h) * Dqk;      // (nq, Dqk), ld H·Dqk
    const float *k_tile = a->k + ((b * Tk + k0) * H + h) * Dqk;      // (nk, Dqk), ld H·Dqk
    const float *v_tile = a->v + ((b * Tk + k0) * H + h) * Dv;       // (nk, Dv), ld H·Dv
    const float *dout_tile = a->dout + ((b * Tq + q0) * H + h) * Dv; // (nq, Dv), ld H·Dv
    dsv3_cpu_gemm(a->ctx, DSV3_GEMM_NO_TRANS, DSV3_GEMM_TRANS, (int)nq, (int)nk, (int)Dv, 1.0f,
                  dout_tile, ldv, v_tile, ldv, 0.0f, ds, BLOCK_K);
    for (int64_t i = 0; i < nq; i++) {
        float *pi = p + i * BLOCK_K, *dsi = ds + i * BLOCK_K; // (nk) each
        if (lse_q[i] == -INFINITY) { // the query sees no key at all: no gradient
            memset(pi, 0, (size_t)nk * sizeof *pi);
            memset(dsi, 0, (size_t)nk * sizeof *dsi);
            continue;
        }
        exp_shifted(pi, nk, lse_q[i]); // masked scores are −∞: P = 0, dS = 0
#pragma omp simd
        for (int64_t j = 0; j < nk; j++)
            dsi[j] = pi[j] * (dsi[j] - delta_q[i]);
    }
    if (updates & UPDATE_DKV) {
        dsv3_cpu_gemm(a->ctx, DSV3_GEMM_TRANS, DSV3_GEMM_NO_TRANS, (int)nk, (int)Dv, (int)nq, 1.0f,
                      p, BLOCK_K, dout_tile, ldv, 1.0f, a->dv + ((b * Tk + k0) * H + h) * Dv, ldv);
        dsv3_cpu_gemm(a->ctx, DSV3_GEMM_TRANS, DSV3_GEMM_NO_TRANS, (int)nk, (int)Dqk, (int)nq,
                      g->scale, ds, BLOCK_K, q_tile, ldqk, 1.0f,
                      a->dk + ((b * Tk + k0) * H + h) * Dqk, ldqk);
    }
    if (updates & UPDATE_DQ)
        dsv3_cpu_gemm(a->ctx, DSV3_GEMM_NO_TRANS, DSV3_GEMM_NO_TRANS, (int)nq, (int)Dqk, (int)nk,
                      g->scale, ds, BLOCK_K, k_tile, ldqk, 1.0f,
                      a->dq + ((b * Tq + q0) * H + h) * Dqk, ldqk);
}

// Whether giving each thread whole heads beats the two-pass schedule, which balances the load
// but computes 7 GEMMs per tile instead of 5: true when the heads fill at least 5/7 of the
// threads' rounds (e.g. 16 heads on 16 threads, 3 heads on 2 threads; not 17 on 16).
static int whole_heads_per_thread(int64_t heads, int threads) {
    const int64_t rounds = (heads + threads - 1) / threads;
    return heads * TWO_PASS_GEMMS >= rounds * threads * ONE_PASS_GEMMS;
}

// Workspace of the backward: scratch (threads, backward_scratch_floats) floats, then delta
// (B, H, Tq) floats. *delta_offset (when not NULL) gets delta's offset.
static size_t backward_workspace(const Dsv3OpShape *shape, int threads, size_t *delta_offset) {
    Dsv3CpuLayout layout = {0};
    dsv3_cpu_layout_add(&layout, threads * backward_scratch_floats(), sizeof(float));
    const size_t delta =
        dsv3_cpu_layout_add(&layout, shape->B * shape->H * shape->Tq, sizeof(float));
    if (delta_offset) *delta_offset = delta;
    return layout.bytes;
}

size_t dsv3_cpu_attention_backward_workspace(const Dsv3OpShape *shape, int threads) {
    return backward_workspace(shape, threads, NULL);
}

Dsv3Err dsv3_cpu_attention_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *dq_,
                                    void *dk_, void *dv_, const void *dout_, const void *q_,
                                    const void *k_, const void *v_, const void *out_,
                                    const float *lse, const float *scores, const int32_t *q_pos,
                                    const int32_t *doc, int64_t B, int64_t Tq, int64_t Tk,
                                    int64_t H, int64_t Dqk, int64_t Dv, float scale) {
    DSV3_CALL(dsv3_cpu_check_f32("attention_backward", dtype));
    float *dq = dq_, *dk = dk_, *dv = dv_;  // (B, Tq, H, Dqk), (B, Tk, H, Dqk), (B, Tk, H, Dv)
    const float *q = q_, *k = k_, *v = v_;  // (B, Tq, H, Dqk), (B, Tk, H, Dqk), (B, Tk, H, Dv)
    const float *out = out_, *dout = dout_; // (B, Tq, H, Dv)
    DSV3_CALL(dsv3_cpu_check_attention_backward(dq, dk, dv, dout, q, k, v, out, lse, q_pos, B, Tq,
                                                Tk, H, Dqk, Dv, scale));
    DSV3_CALL(check_blas_dims(H, Dqk, Dv));
    const int threads = omp_get_max_threads();
    const int64_t per_thread = backward_scratch_floats();
    const Dsv3OpShape shape = {.B = B, .Tq = Tq, .Tk = Tk, .H = H, .Dqk = Dqk, .Dv = Dv};
    size_t delta_offset = 0;
    DSV3_CALL(dsv3_cpu_check_workspace(ctx, "attention_backward",
                                       backward_workspace(&shape, threads, &delta_offset)));
    float *scratch = ctx->workspace;                         // (threads, per_thread)
    float *delta = dsv3_cpu_workspace_at(ctx, delta_offset); // (B, H, Tq)
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < B * Tq; n++) {
        const int64_t b = n / Tq, t = n % Tq;
        for (int64_t h = 0; h < H; h++) {
            const float *dout_t = dout + (n * H + h) * Dv, *out_t = out + (n * H + h) * Dv; // (Dv)
            double acc = 0.0;
            for (int64_t d = 0; d < Dv; d++)
                acc += (double)dout_t[d] * (double)out_t[d];
            delta[(b * H + h) * Tq + t] = (float)acc;
        }
        // The gradients are sums of tiles: start from zero.
        memset(dq + n * H * Dqk, 0, (size_t)(H * Dqk) * sizeof *dq);
    }
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < B * Tk; n++) {
        memset(dk + n * H * Dqk, 0, (size_t)(H * Dqk) * sizeof *dk);
        memset(dv + n * H * Dv, 0, (size_t)(H * Dv) * sizeof *dv);
    }
    const Backward a = {ctx,
                        dq,
                        dk,
                        dv,
                        dout,
                        q,
                        k,
                        v,
                        lse,
                        delta,
                        scores,
                        doc,
                        {q_pos, Tq, Tk, H, Dqk, Dv, scale}};
    const Geometry *g = &a.g;
    const int64_t q_blocks = (Tq + BLOCK_Q - 1) / BLOCK_Q, k_blocks = (Tk + BLOCK_K - 1) / BLOCK_K;
    const int saved = blas_threads_enter();
    if (whole_heads_per_thread(B * H, threads)) {
        // Each thread owns whole heads: one pass, every tile adds to dq, dk and dv.
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t bh = 0; bh < B * H; bh++) {
            float *mine = scratch + omp_get_thread_num() * per_thread;
            for (int64_t kb = 0; kb < k_blocks; kb++)
                for (int64_t qb = first_query_block(g, kb); qb < q_blocks; qb++)
                    backward_tile(&a, bh / H, bh % H, qb, kb, UPDATE_DQ | UPDATE_DKV, mine);
        }
    } else {
        // Heads do not share out evenly: key blocks own dk, dv; then query blocks own dq. The
        // earliest key blocks and the latest query blocks have the most tiles: they go first.
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t task = 0; task < B * H * k_blocks; task++) {
            float *mine = scratch + omp_get_thread_num() * per_thread;
            const int64_t bh = task / k_blocks, kb = task % k_blocks;
            for (int64_t qb = first_query_block(g, kb); qb < q_blocks; qb++)
                backward_tile(&a, bh / H, bh % H, qb, kb, UPDATE_DKV, mine);
        }
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t task = 0; task < B * H * q_blocks; task++) {
            float *mine = scratch + omp_get_thread_num() * per_thread;
            const int64_t bh = task / q_blocks, qb = q_blocks - 1 - task % q_blocks;
            for (int64_t kb = 0; kb <= last_key_block(g, qb); kb++)
                backward_tile(&a, bh / H, bh % H, qb, kb, UPDATE_DQ, mine);
        }
    }
    blas_threads_leave(saved);
    return DSV3_OK;
}

// ---- merge ----

// Each (sequence, position, head) on its own: the two lse combine through their max, so that
// no exponential overflows; a side at −∞ has weight 0.
Dsv3Err dsv3_cpu_attention_merge(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *out_,
                                 float *lse, const void *part_out_, const float *part_lse,
                                 int64_t B, int64_t T, int64_t H, int64_t Dv) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("attention_merge", dtype));
    float *out = out_;                 // (B, T, H, Dv)
    const float *part_out = part_out_; // (B, T, H, Dv)
    DSV3_CALL(dsv3_cpu_check_attention_merge(out, lse, part_out, part_lse, B, T, H, Dv));
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < B * T; n++) {
        const int64_t b = n / T, t = n % T;
        for (int64_t h = 0; h < H; h++) {
            float *l = lse + (b * H + h) * T + t;
            const float pl = part_lse[(b * H + h) * T + t];
            if (pl == -INFINITY) continue;
            float *o = out + (n * H + h) * Dv;
            const float *po = part_out + (n * H + h) * Dv;
            const float m = *l > pl ? *l : pl;
            const float w_old = exp_nonpositive(*l - m), w_part = exp_nonpositive(pl - m);
            const float sum = w_old + w_part;
            for (int64_t d = 0; d < Dv; d++)
                o[d] = (o[d] * w_old + po[d] * w_part) / sum;
            *l = m + logf(sum);
        }
    }
    return DSV3_OK;
}
