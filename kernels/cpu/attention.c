// attention.c: causal / block-causal scaled dot-product attention (see kernels.h), tiled in
// the manner of FlashAttention-2.
//
// Forward: for each (sequence, head, query block), the scores over the keys the block may see
// are computed tile by tile (a tile: the block × one chunk of keys), into the kept scores when
// the caller keeps them, else into the thread's scratch; then each row's softmax, exact (the
// whole row is there: no running rescaling), and out = P v in one GEMM. Score tiles are GEMMs
// (dsv3_cpu_gemm) that read q, k, v in place (the rows of one head are H·D floats apart: that is
// the leading dimension) or, where the CPU has AVX-512 and GEMMs run in fp32, GEMMs against each
// head's keys and values packed once per call (see "keys and values packed once per call").
// Key tiles that the mask hides entirely are skipped; only tiles that the mask cuts
// are masked element by element.
//
// Backward: the probabilities are recomputed from the saved lse, P = exp(S − lse) — from the
// scores themselves when the caller kept them (scores not NULL: no q·kᵀ again), with
// delta_t = dout_t · out_t, dP = dout vᵀ and dS = P ⊙ (dP − delta); then dv += Pᵀ dout,
// dk += scale dSᵀ q, dq += scale dS k, accumulated by sgemm straight into the outputs.
// When the (sequence, head) pairs share out evenly enough over the threads, each thread owns
// whole heads; otherwise key chunks (dk, dv) and query blocks (dq) are split over threads in
// two passes that both recompute P. Both schedules add the same tiles in the same order, so
// the result does not depend on the number of threads.
//
// OpenMP runs the query blocks in parallel and each sgemm inside runs on one thread: OpenBLAS's
// pthreads build serialises concurrent multi-threaded GEMMs, so its thread count is set to 1
// for the length of a parallel region and restored after (dsv3_cpu_blas_threads_enter). Each
// thread's tiles and the backward's delta come from the context's workspace.
//
// Legend: B sequences, Tq queries and Tk keys per sequence, H heads, Dqk query/key head dim, Dv
// value head dim, BQ query rows of a block. q, dq (B, Tq, H, Dqk); out, dout
// (B, Tq, H, Dv); k, dk (B, Tk, H, Dqk); v, dv (B, Tk, H, Dv): the vector of (b, t, h) starts
// at ((b·T + t)·H + h)·D with T = Tq or Tk. lse, delta (B, H, Tq). q_pos (B, Tq) each query's
// key position p (NULL: p = t; −1: no key). doc (B, Tk) document ids, or NULL for plain
// causal. Query t sees key s when s ≤ p and doc[b, s] == doc[b, p]. A query block's positions
// need not be contiguous: a tile is classified by the range of its queries' positions.
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/core/error.h"
#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

// Query blocks of BLOCK_Q rows. Keys come in chunks on a grid fixed per call (chunk c holds keys
// [c·KEY_CHUNK, (c + 1)·KEY_CHUNK)), cut to the keys a block can see. A tile is one query block
// × one chunk: large enough that sgemm's packing is amortised, small enough that its scores and
// their gradient stay in L2. Forward, backward and every schedule visit the same tiles with the
// same GEMMs, so the results do not depend on the thread count or on whether scores were kept.
enum { BLOCK_Q = 64, KEY_CHUNK = 256 };

typedef enum { TILE_HIDDEN, TILE_VISIBLE, TILE_CUT } TileKind;

static int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max_i64(int64_t a, int64_t b) { return a > b ? a : b; }

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

// p (n) = e^(s − shift), shift >= every s (p may be s); returns the sum.
static float exp_shifted(float *p, const float *s, int64_t n, float shift) {
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < n; j++) {
        p[j] = exp_nonpositive(s[j] - shift);
        sum += p[j];
    }
    return sum;
}

static int in_range(int32_t x, int32_t lo, int32_t hi) { return x >= lo && x <= hi; }

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
// their range and (with doc) the range of their document ids; the keys it may see lie in
// [key_start, key_end): up to its last position and, with doc, from the first key of its
// documents on (keys in between that it may not see are masked tile by tile).
typedef struct {
    int64_t q0, nq;
    const int32_t *pos; // (Tq) the sequence's query positions, or NULL
    int64_t pos_lo, pos_hi;
    int32_t doc_lo, doc_hi;
    int64_t key_start, key_end;
} QueryBlock;

static QueryBlock query_block(const int32_t *q_pos, const int32_t *doc_b, int64_t b, int64_t qb,
                              int64_t Tq, int64_t Tk) {
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
    blk.key_start = 0;
    blk.key_end = min_i64(blk.pos_hi + 1, Tk);
    if (doc_b != NULL) {
        while (blk.key_start < blk.key_end &&
               !in_range(doc_b[blk.key_start], blk.doc_lo, blk.doc_hi))
            blk.key_start++;
        while (blk.key_end > blk.key_start &&
               !in_range(doc_b[blk.key_end - 1], blk.doc_lo, blk.doc_hi))
            blk.key_end--;
    }
    return blk;
}

// The end of the tile that starts at key k0 of a visible range ending at `end`.
static int64_t tile_end(int64_t k0, int64_t end) {
    return min_i64((k0 / KEY_CHUNK + 1) * KEY_CHUNK, end);
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

// s (nq, nk; row i at s + i·lds) = −∞ where query q0 + i may not see key k0 + j.
static void mask_tile(float *s, int64_t lds, const int32_t *doc_b, const QueryBlock *blk,
                      int64_t k0, int64_t nk) {
    for (int64_t i = 0; i < blk->nq; i++) {
        const int64_t p = query_position(blk->pos, blk->q0 + i);
        float *si = s + i * lds;
        const int64_t seen = min_i64(max_i64(p + 1 - k0, 0), nk); // keys k0 .. p
        for (int64_t j = seen; j < nk; j++)
            si[j] = -INFINITY;
        if (doc_b == NULL) continue;
        for (int64_t j = 0; j < seen; j++)
            if (doc_b[k0 + j] != doc_b[p]) si[j] = -INFINITY;
    }
}

// ---- keys and values packed once per call ----
//
// Every query block of a head multiplies against the same keys and values: q kᵀ (scores) and
// P v in forward, dout vᵀ and dS k in backward. Where the CPU has AVX-512 and GEMMs run in
// fp32, each head's keys and values are packed once per call into panels for these four
// (dsv3_cpu_gemm_panels) instead of by sgemm in every tile; forward and backward make the same
// calls for the same tiles.
typedef struct {
    const float *qk;  // keys as the B of q kᵀ: (B, H, row_panel_floats(Tk, Dqk))
    const float *pv;  // values as the B of P v: (B, H, column_panel_floats(Tk, Dv))
    const float *dov; // values as the B of dout vᵀ: (B, H, row_panel_floats(Tk, Dv))
    const float *dsk; // keys as the B of dS k: (B, H, column_panel_floats(Tk, Dqk))
} Panels;

static int uses_panels(const Dsv3KernelContext *ctx) {
    return ctx->matmul_dtype == DSV3_TENSOR_F32 && dsv3_cpu_gemm_panels_supported();
}

static int64_t padded(int64_t n) {
    return (n + DSV3_CPU_PANEL_WIDTH - 1) / DSV3_CPU_PANEL_WIDTH * DSV3_CPU_PANEL_WIDTH;
}

// Floats of one head's panels: keys or values by rows (q kᵀ, dout vᵀ: width D), or by columns
// (P v, dS k).
static int64_t row_panel_floats(int64_t Tk, int64_t D) { return padded(Tk) * D; }
static int64_t column_panel_floats(int64_t Tk, int64_t D) { return padded(D) * Tk; }

// panels (B, H, one head's floats) ← x (B, Tk, H, D), one head per task: by rows (B = x's rows
// of the head) or by columns (Bᵀ = them).
static void pack_heads(float *panels, const float *x, int64_t B, int64_t Tk, int64_t H, int64_t D,
                       int by_columns) {
    const int64_t per_head = by_columns ? column_panel_floats(Tk, D) : row_panel_floats(Tk, D);
#pragma omp parallel for schedule(static)
    for (int64_t bh = 0; bh < B * H; bh++) {
        const float *head = x + ((bh / H) * Tk * H + bh % H) * D; // (Tk, D), ld H·D
        if (by_columns)
            dsv3_cpu_pack_panels_columns(panels + bh * per_head, head, H * D, D, Tk);
        else
            dsv3_cpu_pack_panels(panels + bh * per_head, head, H * D, Tk, D);
    }
}

// The geometry every tile of one call shares, and the call's panels (all NULL when it packs
// none).
typedef struct {
    const int32_t *q_pos;
    int64_t Tq, Tk, H, Dqk, Dv;
    float scale;
    Panels panels;
} Geometry;

// Head (b, h)'s share of panels of `per_head` floats each.
static const float *head_of(const float *panels, int64_t b, int64_t h, int64_t per_head,
                            const Geometry *g) {
    return panels + (b * g->H + h) * per_head;
}

// s (nq, nk; row i at s + i·lds) = scale · q_tile (nq, Dqk) · k_tile (nk, Dqk)ᵀ, masked; false
// (nothing written) when the mask hides the whole tile.
static int score_tile(const Dsv3KernelContext *ctx, float *s, int64_t lds, const float *q,
                      const float *k, const int32_t *doc_b, int64_t b, int64_t h,
                      const QueryBlock *blk, int64_t k0, int64_t nk, const Geometry *g) {
    TileKind kind = tile_kind(doc_b, blk, k0, k0 + nk);
    if (kind == TILE_HIDDEN) return 0;
    const int ld = (int)(g->H * g->Dqk);
    const float *q_block = q + ((b * g->Tq + blk->q0) * g->H + h) * g->Dqk; // (nq, Dqk), ld
    if (g->panels.qk)
        dsv3_cpu_gemm_panels(blk->nq, k0, k0 + nk, 0, g->Dqk, g->scale, q_block, ld,
                             head_of(g->panels.qk, b, h, row_panel_floats(g->Tk, g->Dqk), g),
                             g->Dqk, s, lds, 0);
    else
        dsv3_cpu_gemm(ctx, DSV3_GEMM_NO_TRANS, DSV3_GEMM_TRANS, (int)blk->nq, (int)nk, (int)g->Dqk,
                      g->scale, q_block, ld, k + ((b * g->Tk + k0) * g->H + h) * g->Dqk, ld, 0.0f,
                      s, (int)lds);
    if (kind == TILE_CUT) mask_tile(s, lds, doc_b, blk, k0, nk);
    return 1;
}

// BLAS takes int leading dimensions; the other checks are shared with the reference version
// (checks.h).
static Dsv3Err check_blas_dims(int64_t Tk, int64_t H, int64_t Dqk, int64_t Dv) {
    DSV3_CHECK(H * Dqk <= INT_MAX && H * Dv <= INT_MAX && Tk <= INT_MAX, DSV3_ERR_USAGE,
               "attention: H*Dqk, H*Dv and Tk must fit in an int for BLAS, got %lld, %lld and "
               "%lld",
               (long long)(H * Dqk), (long long)(H * Dv), (long long)Tk);
    return DSV3_OK;
}

// ---- forward ----

// Per-thread scratch of the forward: p (BQ, Tk), the probabilities of a query block's rows
// (their scores first, when they are not kept).
static int64_t forward_scratch_floats(int64_t Tk) { return BLOCK_Q * Tk; }

// The scaled, masked scores of visible tiles, kept for backward: cache (B, H, Tq, Tk).
static float *cache_row(float *cache, int64_t b, int64_t h, int64_t t, const Geometry *g) {
    return cache + ((b * g->H + h) * g->Tq + t) * g->Tk;
}

// One query block of one (sequence, head): its scores over the keys it may see, tile by tile
// (into the cache when there is one), their softmax row by row, then out = P v in one GEMM.
static void forward_query_block(const Dsv3KernelContext *ctx, float *out, float *lse, float *cache,
                                const float *q, const float *k, const float *v, const int32_t *doc,
                                int64_t b, int64_t h, int64_t qb, const Geometry *g, float *p) {
    const int64_t Tq = g->Tq, Tk = g->Tk, H = g->H, Dv = g->Dv;
    const int32_t *doc_b = doc == NULL ? NULL : doc + b * Tk; // (Tk)
    const QueryBlock blk = query_block(g->q_pos, doc_b, b, qb, Tq, Tk);
    const int64_t q0 = blk.q0, nq = blk.nq, start = blk.key_start, end = blk.key_end;
    float *s = cache ? cache_row(cache, b, h, q0, g) : p; // (nq, Tk): row i at s + i·Tk
    for (int64_t k0 = start, k1; k0 < end; k0 = k1) {
        k1 = tile_end(k0, end);
        if (!score_tile(ctx, s + k0, Tk, q, k, doc_b, b, h, &blk, k0, k1 - k0, g))
            for (int64_t i = 0; i < nq; i++)
                for (int64_t j = k0; j < k1; j++)
                    s[i * Tk + j] = -INFINITY;
    }
    float *out_q = out + ((b * Tq + q0) * H + h) * Dv; // (nq, Dv), ld H·Dv
    float *lse_q = lse + (b * H + h) * Tq + q0;        // (nq)
    float inv_sum[BLOCK_Q];
    for (int64_t i = 0; i < nq; i++) {
        const float *si = s + i * Tk + start;
        float *pi = p + i * Tk + start; // (end − start) each
        float row_max = -INFINITY;
#pragma omp simd reduction(max : row_max)
        for (int64_t j = 0; j < end - start; j++)
            row_max = si[j] > row_max ? si[j] : row_max;
        if (row_max == -INFINITY) { // the query sees no key: out 0, lse −∞
            memset(pi, 0, (size_t)(end - start) * sizeof *pi);
            inv_sum[i] = 0.0f;
            lse_q[i] = -INFINITY;
            continue;
        }
        // A query that sees a key sees the one at its position, so the sum is >= 1.
        const float sum = exp_shifted(pi, si, end - start, row_max);
        inv_sum[i] = 1.0f / sum;
        lse_q[i] = row_max + logf(sum);
    }
    if (end > start && g->panels.pv)
        dsv3_cpu_gemm_panels(nq, 0, Dv, start, end, 1.0f, p + start, Tk,
                             head_of(g->panels.pv, b, h, column_panel_floats(Tk, Dv), g), Tk, out_q,
                             H * Dv, 0);
    else if (end > start)
        dsv3_cpu_gemm(ctx, DSV3_GEMM_NO_TRANS, DSV3_GEMM_NO_TRANS, (int)nq, (int)Dv,
                      (int)(end - start), 1.0f, p + start, (int)Tk,
                      v + ((b * Tk + start) * H + h) * Dv, (int)(H * Dv), 0.0f, out_q,
                      (int)(H * Dv));
    for (int64_t i = 0; i < nq; i++) {
        float *out_t = out_q + i * H * Dv; // (Dv)
        if (end == start) memset(out_t, 0, (size_t)Dv * sizeof *out_t);
        for (int64_t d = 0; d < Dv; d++)
            out_t[d] *= inv_sum[i];
    }
}

// Workspace of the forward: scratch (threads, forward_scratch_floats) floats, then the panels of
// q kᵀ and of P v where the CPU can use them. offsets (when not NULL) gets theirs.
static size_t forward_workspace(const Dsv3OpShape *shape, int threads, size_t offsets[2]) {
    Dsv3CpuLayout layout = {0};
    dsv3_cpu_layout_add(&layout, threads * forward_scratch_floats(shape->Tk), sizeof(float));
    const int64_t heads = dsv3_cpu_gemm_panels_supported() ? shape->B * shape->H : 0;
    const size_t qk = dsv3_cpu_layout_add(&layout, heads * row_panel_floats(shape->Tk, shape->Dqk),
                                          sizeof(float));
    const size_t pv = dsv3_cpu_layout_add(
        &layout, heads * column_panel_floats(shape->Tk, shape->Dv), sizeof(float));
    if (offsets) {
        offsets[0] = qk;
        offsets[1] = pv;
    }
    return layout.bytes;
}

size_t dsv3_cpu_attention_forward_workspace(const Dsv3OpShape *shape, int threads) {
    return forward_workspace(shape, threads, NULL);
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
    DSV3_CALL(check_blas_dims(Tk, H, Dqk, Dv));
    const int threads = omp_get_max_threads();
    const Dsv3OpShape shape = {.B = B, .Tq = Tq, .Tk = Tk, .H = H, .Dqk = Dqk, .Dv = Dv};
    size_t offsets[2] = {0};
    DSV3_CALL(dsv3_cpu_check_workspace(ctx, "attention_forward",
                                       forward_workspace(&shape, threads, offsets)));
    const int64_t per_thread = forward_scratch_floats(Tk);
    float *scratch = ctx->workspace; // (threads, per_thread)
    Geometry g = {q_pos, Tq, Tk, H, Dqk, Dv, scale, {NULL, NULL, NULL, NULL}};
    if (uses_panels(ctx)) {
        float *qk = dsv3_cpu_workspace_at(ctx, offsets[0]);
        float *pv = dsv3_cpu_workspace_at(ctx, offsets[1]);
        pack_heads(qk, k, B, Tk, H, Dqk, 0);
        pack_heads(pv, v, B, Tk, H, Dv, 1);
        g.panels.qk = qk;
        g.panels.pv = pv;
    }
    const int64_t blocks = (Tq + BLOCK_Q - 1) / BLOCK_Q;
    const int64_t tasks = B * H * blocks;
    const int saved = dsv3_cpu_blas_threads_enter();
    // Later query blocks see more keys: hand them out first so the short ones fill the gaps.
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; task++) {
        const int64_t qb = blocks - 1 - task % blocks, bh = task / blocks;
        forward_query_block(ctx, out, lse, scores, q, k, v, doc, bh / H, bh % H, qb, &g,
                            scratch + omp_get_thread_num() * per_thread);
    }
    dsv3_cpu_blas_threads_leave(saved);
    return DSV3_OK;
}

// ---- backward ----

// Per-thread scratch of the backward: p (BQ, KEY_CHUNK) probabilities, ds (BQ, KEY_CHUNK)
// their gradient.
static int64_t backward_scratch_floats(void) { return 2 * BLOCK_Q * KEY_CHUNK; }

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

// One tile (query block blk × keys [k0, k1) of sequence b, head h): recomputes P and dS, then
// adds its share to dq and/or to dk, dv as `updates` says.
static void backward_tile(const Backward *a, int64_t b, int64_t h, const QueryBlock *blk,
                          int64_t k0, int64_t k1, int updates, float *scratch) {
    float *p = scratch;                  // (BQ, KEY_CHUNK)
    float *ds = p + BLOCK_Q * KEY_CHUNK; // (BQ, KEY_CHUNK)
    const Geometry *g = &a->g;
    const int64_t Tq = g->Tq, Tk = g->Tk, H = g->H, Dqk = g->Dqk, Dv = g->Dv;
    const int32_t *doc_b = a->doc == NULL ? NULL : a->doc + b * Tk; // (Tk)
    const int64_t q0 = blk->q0, nq = blk->nq, nk = k1 - k0;
    const float *s = p; // (nq, nk): row i at s + i·lds
    int64_t lds = KEY_CHUNK;
    if (a->scores) {
        if (tile_kind(doc_b, blk, k0, k1) == TILE_HIDDEN) return;
        s = cache_row((float *)a->scores, b, h, q0, g) + k0;
        lds = Tk;
    } else if (!score_tile(a->ctx, p, KEY_CHUNK, a->q, a->k, doc_b, b, h, blk, k0, nk, g)) {
        return;
    }
    const float *lse_q = a->lse + (b * H + h) * Tq + q0;     // (nq)
    const float *delta_q = a->delta + (b * H + h) * Tq + q0; // (nq)
    const int ldqk = (int)(H * Dqk), ldv = (int)(H * Dv);
    const float *q_tile = a->q + ((b * Tq + q0) * H + h) * Dqk;      // (nq, Dqk), ld H·Dqk
    const float *k_tile = a->k + ((b * Tk + k0) * H + h) * Dqk;      // (nk, Dqk), ld H·Dqk
    const float *v_tile = a->v + ((b * Tk + k0) * H + h) * Dv;       // (nk, Dv), ld H·Dv
    const float *dout_tile = a->dout + ((b * Tq + q0) * H + h) * Dv; // (nq, Dv), ld H·Dv
    if (g->panels.dov)
        dsv3_cpu_gemm_panels(nq, k0, k1, 0, Dv, 1.0f, dout_tile, ldv,
                             head_of(g->panels.dov, b, h, row_panel_floats(Tk, Dv), g), Dv, ds,
                             KEY_CHUNK, 0);
    else
        dsv3_cpu_gemm(a->ctx, DSV3_GEMM_NO_TRANS, DSV3_GEMM_TRANS, (int)nq, (int)nk, (int)Dv, 1.0f,
                      dout_tile, ldv, v_tile, ldv, 0.0f, ds, KEY_CHUNK);
    for (int64_t i = 0; i < nq; i++) {
        float *pi = p + i * KEY_CHUNK, *dsi = ds + i * KEY_CHUNK; // (nk) each
        if (lse_q[i] == -INFINITY) { // the query sees no key at all: no gradient
            memset(pi, 0, (size_t)nk * sizeof *pi);
            memset(dsi, 0, (size_t)nk * sizeof *dsi);
            continue;
        }
        exp_shifted(pi, s + i * lds, nk, lse_q[i]); // masked scores are −∞: P = 0, dS = 0
#pragma omp simd
        for (int64_t j = 0; j < nk; j++)
            dsi[j] = pi[j] * (dsi[j] - delta_q[i]);
    }
    if (updates & UPDATE_DKV) {
        dsv3_cpu_gemm(a->ctx, DSV3_GEMM_TRANS, DSV3_GEMM_NO_TRANS, (int)nk, (int)Dv, (int)nq, 1.0f,
                      p, KEY_CHUNK, dout_tile, ldv, 1.0f, a->dv + ((b * Tk + k0) * H + h) * Dv,
                      ldv);
        dsv3_cpu_gemm(a->ctx, DSV3_GEMM_TRANS, DSV3_GEMM_NO_TRANS, (int)nk, (int)Dqk, (int)nq,
                      g->scale, ds, KEY_CHUNK, q_tile, ldqk, 1.0f,
                      a->dk + ((b * Tk + k0) * H + h) * Dqk, ldqk);
    }
    if ((updates & UPDATE_DQ) && g->panels.dsk)
        dsv3_cpu_gemm_panels(nq, 0, Dqk, k0, k1, g->scale, ds, KEY_CHUNK,
                             head_of(g->panels.dsk, b, h, column_panel_floats(Tk, Dqk), g), Tk,
                             a->dq + ((b * Tq + q0) * H + h) * Dqk, ldqk, 1);
    else if (updates & UPDATE_DQ)
        dsv3_cpu_gemm(a->ctx, DSV3_GEMM_NO_TRANS, DSV3_GEMM_NO_TRANS, (int)nq, (int)Dqk, (int)nk,
                      g->scale, ds, KEY_CHUNK, k_tile, ldqk, 1.0f,
                      a->dq + ((b * Tq + q0) * H + h) * Dqk, ldqk);
}

// The tiles of query block qb of sequence b, head h, in key order: all of them (chunk < 0) or
// the one in key chunk `chunk`.
static void backward_query_block(const Backward *a, int64_t b, int64_t h, int64_t qb, int64_t chunk,
                                 int updates, float *scratch) {
    const Geometry *g = &a->g;
    const int32_t *doc_b = a->doc == NULL ? NULL : a->doc + b * g->Tk; // (Tk)
    const QueryBlock blk = query_block(g->q_pos, doc_b, b, qb, g->Tq, g->Tk);
    int64_t start = blk.key_start, end = blk.key_end;
    if (chunk >= 0) {
        start = max_i64(start, chunk * KEY_CHUNK);
        end = min_i64(end, (chunk + 1) * KEY_CHUNK);
    }
    for (int64_t k0 = start, k1; k0 < end; k0 = k1) {
        k1 = tile_end(k0, end);
        backward_tile(a, b, h, &blk, k0, k1, updates, scratch);
    }
}

// Whether giving each thread whole heads beats the two-pass schedule, which balances the load
// but computes 7 GEMMs per tile instead of 5: true when the heads fill at least 5/7 of the
// threads' rounds (e.g. 16 heads on 16 threads, 3 heads on 2 threads; not 17 on 16).
static int whole_heads_per_thread(int64_t heads, int threads) {
    const int64_t rounds = (heads + threads - 1) / threads;
    return heads * TWO_PASS_GEMMS >= rounds * threads * ONE_PASS_GEMMS;
}

// Workspace of the backward: scratch (threads, backward_scratch_floats) floats, delta (B, H, Tq)
// floats, then the panels of q kᵀ, dout vᵀ and dS k where the CPU can use them. offsets (when
// not NULL) gets delta's and theirs.
static size_t backward_workspace(const Dsv3OpShape *shape, int threads, size_t offsets[4]) {
    Dsv3CpuLayout layout = {0};
    dsv3_cpu_layout_add(&layout, threads * backward_scratch_floats(), sizeof(float));
    const int64_t heads = dsv3_cpu_gemm_panels_supported() ? shape->B * shape->H : 0;
    const int64_t Tk = shape->Tk;
    const size_t delta =
        dsv3_cpu_layout_add(&layout, shape->B * shape->H * shape->Tq, sizeof(float));
    const size_t qk =
        dsv3_cpu_layout_add(&layout, heads * row_panel_floats(Tk, shape->Dqk), sizeof(float));
    const size_t dov =
        dsv3_cpu_layout_add(&layout, heads * row_panel_floats(Tk, shape->Dv), sizeof(float));
    const size_t dsk =
        dsv3_cpu_layout_add(&layout, heads * column_panel_floats(Tk, shape->Dqk), sizeof(float));
    if (offsets) {
        offsets[0] = delta;
        offsets[1] = qk;
        offsets[2] = dov;
        offsets[3] = dsk;
    }
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
    DSV3_CALL(check_blas_dims(Tk, H, Dqk, Dv));
    const int threads = omp_get_max_threads();
    const int64_t per_thread = backward_scratch_floats();
    const Dsv3OpShape shape = {.B = B, .Tq = Tq, .Tk = Tk, .H = H, .Dqk = Dqk, .Dv = Dv};
    size_t offsets[4] = {0};
    DSV3_CALL(dsv3_cpu_check_workspace(ctx, "attention_backward",
                                       backward_workspace(&shape, threads, offsets)));
    float *scratch = ctx->workspace;                       // (threads, per_thread)
    float *delta = dsv3_cpu_workspace_at(ctx, offsets[0]); // (B, H, Tq)
    Panels panels = {NULL, NULL, NULL, NULL};
    if (uses_panels(ctx)) {
        float *qk = dsv3_cpu_workspace_at(ctx, offsets[1]);
        float *dov = dsv3_cpu_workspace_at(ctx, offsets[2]);
        float *dsk = dsv3_cpu_workspace_at(ctx, offsets[3]);
        if (scores == NULL) { // scores recomputed
            pack_heads(qk, k, B, Tk, H, Dqk, 0);
            panels.qk = qk;
        }
        pack_heads(dov, v, B, Tk, H, Dv, 0);
        pack_heads(dsk, k, B, Tk, H, Dqk, 1);
        panels.dov = dov;
        panels.dsk = dsk;
    }
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
                        {q_pos, Tq, Tk, H, Dqk, Dv, scale, panels}};
    const int64_t q_blocks = (Tq + BLOCK_Q - 1) / BLOCK_Q;
    const int64_t chunks = (Tk + KEY_CHUNK - 1) / KEY_CHUNK;
    const int saved = dsv3_cpu_blas_threads_enter();
    if (whole_heads_per_thread(B * H, threads)) {
        // Each thread owns whole heads: one pass, every tile adds to dq, dk and dv.
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t bh = 0; bh < B * H; bh++) {
            float *mine = scratch + omp_get_thread_num() * per_thread;
            for (int64_t qb = 0; qb < q_blocks; qb++)
                backward_query_block(&a, bh / H, bh % H, qb, -1, UPDATE_DQ | UPDATE_DKV, mine);
        }
    } else {
        // Heads do not share out evenly: key chunks own dk, dv; then query blocks own dq. The
        // earliest key chunks and the latest query blocks have the most tiles: they go first.
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t task = 0; task < B * H * chunks; task++) {
            float *mine = scratch + omp_get_thread_num() * per_thread;
            const int64_t bh = task / chunks, chunk = task % chunks;
            for (int64_t qb = 0; qb < q_blocks; qb++)
                backward_query_block(&a, bh / H, bh % H, qb, chunk, UPDATE_DKV, mine);
        }
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t task = 0; task < B * H * q_blocks; task++) {
            float *mine = scratch + omp_get_thread_num() * per_thread;
            const int64_t bh = task / q_blocks, qb = q_blocks - 1 - task % q_blocks;
            backward_query_block(&a, bh / H, bh % H, qb, -1, UPDATE_DQ, mine);
        }
    }
    dsv3_cpu_blas_threads_leave(saved);
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
    DSV3_CALL(dsv3_check_attention_merge(out, lse, part_out, part_lse, B, T, H, Dv));
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
