// attention_reference.c: causal / block-causal scaled dot-product attention, written for
// clarity (see kernels.h): one query row at a time, every sum in double, the rows of one head
// in the context's workspace. The fast version (attention.c) is tested against this one, and
// this one against PyTorch (tests/reference/ops_attention.py). It ignores kept scores and
// recomputes them (a backend may, see kernels.h); backward takes the probabilities from the
// given lse and out, which may be those of more keys than these (kernels.h).
//
// Legend: B sequences, Tq queries and Tk keys per sequence, H heads, Dqk query/key head dim,
// Dv value head dim. q (B, Tq, H, Dqk); out (B, Tq, H, Dv); k (B, Tk, H, Dqk); v (B, Tk, H,
// Dv): the vector of (b, t, h) starts at ((b·T + t)·H + h)·D with T = Tq or Tk. lse (B, H, Tq).
// q_pos (B, Tq) each query's key position p (−1: none), or NULL (p = t). doc (B, Tk) document
// ids, or NULL for plain causal. Query t sees key s when s ≤ p and doc[b, s] == doc[b, p].
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "common/core/error.h"
#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

// Whether the query at key position pos (≥ 0) sees key s.
static int visible(const int32_t *doc_b, int64_t pos, int64_t s) {
    return s <= pos && (doc_b == NULL || doc_b[s] == doc_b[pos]);
}

// p (Tk) = softmax over the visible keys of query (b, t, h), at key position pos, zero
// elsewhere; returns its lse.
static double probabilities(double *p, const float *q, const float *k, const int32_t *doc_b,
                            int64_t b, int64_t t, int64_t pos, int64_t h, int64_t Tq, int64_t Tk,
                            int64_t H, int64_t Dqk, float scale) {
    const float *qt = q + ((b * Tq + t) * H + h) * Dqk; // (Dqk)
    double max = -INFINITY;
    for (int64_t s = 0; s <= pos; s++) {
        if (!visible(doc_b, pos, s)) {
            p[s] = -INFINITY;
            continue;
        }
        const float *ks = k + ((b * Tk + s) * H + h) * Dqk; // (Dqk)
        double dot = 0.0;
        for (int64_t d = 0; d < Dqk; d++)
            dot += (double)qt[d] * (double)ks[d];
        p[s] = (double)scale * dot;
        if (p[s] > max) max = p[s];
    }
    double sum = 0.0;
    for (int64_t s = 0; s <= pos; s++) {
        p[s] = visible(doc_b, pos, s) ? exp(p[s] - max) : 0.0;
        sum += p[s];
    }
    for (int64_t s = 0; s <= pos; s++)
        p[s] /= sum;
    for (int64_t s = pos + 1; s < Tk; s++)
        p[s] = 0.0;
    return max + log(sum); // key s = pos is always visible, so sum >= 1
}

static int64_t position(const int32_t *q_pos, int64_t b, int64_t t, int64_t Tq) {
    return q_pos ? q_pos[b * Tq + t] : t;
}

// Workspace of the forward: p (Tk) doubles.
size_t dsv3_cpu_reference_attention_forward_workspace(const Dsv3OpShape *shape) {
    Dsv3CpuLayout layout = {0};
    dsv3_cpu_layout_add(&layout, shape->Tk, sizeof(double));
    return layout.bytes;
}

Dsv3Err dsv3_cpu_reference_attention_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                             void *out_, float *lse, float *scores, const void *q_,
                                             const void *k_, const void *v_, const int32_t *q_pos,
                                             const int32_t *doc, int64_t B, int64_t Tq, int64_t Tk,
                                             int64_t H, int64_t Dqk, int64_t Dv, float scale) {
    (void)scores; // nothing kept: the backward recomputes
    DSV3_CALL(dsv3_cpu_check_f32("attention_forward", dtype));
    float *out = out_;                     // (B, Tq, H, Dv)
    const float *q = q_, *k = k_, *v = v_; // (B, Tq, H, Dqk), (B, Tk, H, Dqk), (B, Tk, H, Dv)
    DSV3_CALL(
        dsv3_cpu_check_attention_forward(out, lse, q, k, v, q_pos, B, Tq, Tk, H, Dqk, Dv, scale));
    const Dsv3OpShape shape = {.B = B, .Tq = Tq, .Tk = Tk, .H = H, .Dqk = Dqk, .Dv = Dv};
    DSV3_CALL(dsv3_cpu_check_workspace(ctx, "attention_forward",
                                       dsv3_cpu_reference_attention_forward_workspace(&shape)));
    double *p = ctx->workspace; // (Tk)
    for (int64_t b = 0; b < B; b++) {
        const int32_t *doc_b = doc == NULL ? NULL : doc + b * Tk; // (Tk)
        for (int64_t h = 0; h < H; h++) {
            for (int64_t t = 0; t < Tq; t++) {
                const int64_t pos = position(q_pos, b, t, Tq);
                lse[(b * H + h) * Tq + t] =
                    (float)probabilities(p, q, k, doc_b, b, t, pos, h, Tq, Tk, H, Dqk, scale);
                float *ot = out + ((b * Tq + t) * H + h) * Dv; // (Dv)
                for (int64_t d = 0; d < Dv; d++) {
                    double acc = 0.0;
                    for (int64_t s = 0; s <= pos; s++)
                        acc += p[s] * (double)v[((b * Tk + s) * H + h) * Dv + d];
                    ot[d] = (float)acc;
                }
            }
        }
    }
    return DSV3_OK;
}

// The probabilities come from the scores, recomputed from q and k, and the given lse:
// P_ts = exp(scale q_t·k_s − lse_t) on visible keys; with dP_ts = dout_t · v_s and
// delta_t = dout_t · out_t (the given out), dS = P ⊙ (dP − delta); dq_t = scale Σ_s dS_ts k_s,
// dk_s = scale Σ_t dS_ts q_t, dv_s = Σ_t P_ts dout_t.
// Workspace of the backward: p, ds (Tk) doubles, one query row; dk_acc (Tk, Dqk) and dv_acc
// (Tk, Dv) doubles, one head's dk and dv. offsets (4) get the slices' offsets (when not NULL).
static size_t backward_workspace(const Dsv3OpShape *shape, size_t *offsets) {
    Dsv3CpuLayout layout = {0};
    const size_t p = dsv3_cpu_layout_add(&layout, shape->Tk, sizeof(double));
    const size_t ds = dsv3_cpu_layout_add(&layout, shape->Tk, sizeof(double));
    const size_t dk = dsv3_cpu_layout_add(&layout, shape->Tk * shape->Dqk, sizeof(double));
    const size_t dv = dsv3_cpu_layout_add(&layout, shape->Tk * shape->Dv, sizeof(double));
    if (offsets) {
        offsets[0] = p, offsets[1] = ds, offsets[2] = dk, offsets[3] = dv;
    }
    return layout.bytes;
}

size_t dsv3_cpu_reference_attention_backward_workspace(const Dsv3OpShape *shape) {
    return backward_workspace(shape, NULL);
}

// p (Tk) = exp(scale q·k_s − lse) of query (b, t, h) at key position pos on its visible keys s,
// 0 elsewhere.
static void given_probabilities(double *p, const float *q, const float *k, const int32_t *doc_b,
                                int64_t b, int64_t t, int64_t pos, int64_t h, int64_t Tq,
                                int64_t Tk, int64_t H, int64_t Dqk, float scale, double lse) {
    const float *qt = q + ((b * Tq + t) * H + h) * Dqk; // (Dqk)
    for (int64_t s = 0; s < Tk; s++) {
        p[s] = 0.0;
        if (pos < 0 || !visible(doc_b, pos, s)) continue;
        const float *ks = k + ((b * Tk + s) * H + h) * Dqk; // (Dqk)
        double dot = 0.0;
        for (int64_t d = 0; d < Dqk; d++)
            dot += (double)qt[d] * (double)ks[d];
        p[s] = exp((double)scale * dot - lse);
    }
}

Dsv3Err dsv3_cpu_reference_attention_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                              void *dq_, void *dk_, void *dv_, const void *dout_,
                                              const void *q_, const void *k_, const void *v_,
                                              const void *out_, const float *lse,
                                              const float *scores, const int32_t *q_pos,
                                              const int32_t *doc, int64_t B, int64_t Tq, int64_t Tk,
                                              int64_t H, int64_t Dqk, int64_t Dv, float scale) {
    (void)scores; // recomputed, see above
    DSV3_CALL(dsv3_cpu_check_f32("attention_backward", dtype));
    float *dq = dq_, *dk = dk_, *dv = dv_;  // (B, Tq, H, Dqk), (B, Tk, H, Dqk), (B, Tk, H, Dv)
    const float *q = q_, *k = k_, *v = v_;  // (B, Tq, H, Dqk), (B, Tk, H, Dqk), (B, Tk, H, Dv)
    const float *out = out_, *dout = dout_; // (B, Tq, H, Dv)
    DSV3_CALL(dsv3_cpu_check_attention_backward(dq, dk, dv, dout, q, k, v, out, lse, q_pos, B, Tq,
                                                Tk, H, Dqk, Dv, scale));
    const Dsv3OpShape shape = {.B = B, .Tq = Tq, .Tk = Tk, .H = H, .Dqk = Dqk, .Dv = Dv};
    size_t offsets[4];
    DSV3_CALL(
        dsv3_cpu_check_workspace(ctx, "attention_backward", backward_workspace(&shape, offsets)));
    double *p = dsv3_cpu_workspace_at(ctx, offsets[0]);      // (Tk): one query row
    double *ds = dsv3_cpu_workspace_at(ctx, offsets[1]);     // (Tk): one query row
    double *dk_acc = dsv3_cpu_workspace_at(ctx, offsets[2]); // (Tk, Dqk): one head's dk
    double *dv_acc = dsv3_cpu_workspace_at(ctx, offsets[3]); // (Tk, Dv): one head's dv
    for (int64_t b = 0; b < B; b++) {
        const int32_t *doc_b = doc == NULL ? NULL : doc + b * Tk; // (Tk)
        for (int64_t h = 0; h < H; h++) {
            for (int64_t i = 0; i < Tk * Dqk; i++)
                dk_acc[i] = 0.0;
            for (int64_t i = 0; i < Tk * Dv; i++)
                dv_acc[i] = 0.0;
            for (int64_t t = 0; t < Tq; t++) {
                const double lse_t = lse[(b * H + h) * Tq + t];
                const int64_t pos = lse_t == -INFINITY ? -1 : position(q_pos, b, t, Tq);
                given_probabilities(p, q, k, doc_b, b, t, pos, h, Tq, Tk, H, Dqk, scale, lse_t);
                const float *dout_t = dout + ((b * Tq + t) * H + h) * Dv; // (Dv)
                const float *out_t = out + ((b * Tq + t) * H + h) * Dv;   // (Dv)
                const float *qt = q + ((b * Tq + t) * H + h) * Dqk;       // (Dqk)
                double delta = 0.0;
                for (int64_t d = 0; d < Dv; d++)
                    delta += (double)dout_t[d] * (double)out_t[d];
                for (int64_t s = 0; s <= pos; s++) {
                    const float *vs = v + ((b * Tk + s) * H + h) * Dv; // (Dv)
                    double dp = 0.0;
                    for (int64_t d = 0; d < Dv; d++)
                        dp += (double)dout_t[d] * (double)vs[d];
                    ds[s] = p[s] * (dp - delta);
                }
                for (int64_t d = 0; d < Dqk; d++) {
                    double acc = 0.0;
                    for (int64_t s = 0; s <= pos; s++)
                        acc += ds[s] * (double)k[((b * Tk + s) * H + h) * Dqk + d];
                    dq[((b * Tq + t) * H + h) * Dqk + d] = (float)((double)scale * acc);
                }
                for (int64_t s = 0; s <= pos; s++) {
                    for (int64_t d = 0; d < Dqk; d++)
                        dk_acc[s * Dqk + d] += (double)scale * ds[s] * (double)qt[d];
                    for (int64_t d = 0; d < Dv; d++)
                        dv_acc[s * Dv + d] += p[s] * (double)dout_t[d];
                }
            }
            for (int64_t s = 0; s < Tk; s++) {
                for (int64_t d = 0; d < Dqk; d++)
                    dk[((b * Tk + s) * H + h) * Dqk + d] = (float)dk_acc[s * Dqk + d];
                for (int64_t d = 0; d < Dv; d++)
                    dv[((b * Tk + s) * H + h) * Dv + d] = (float)dv_acc[s * Dv + d];
            }
        }
    }
    return DSV3_OK;
}

// Merge, in double: the weights of both sides through their larger lse.
Dsv3Err dsv3_cpu_reference_attention_merge(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                           void *out_, float *lse, const void *part_out_,
                                           const float *part_lse, int64_t B, int64_t T, int64_t H,
                                           int64_t Dv) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("attention_merge", dtype));
    float *out = out_;                 // (B, T, H, Dv)
    const float *part_out = part_out_; // (B, T, H, Dv)
    DSV3_CALL(dsv3_check_attention_merge(out, lse, part_out, part_lse, B, T, H, Dv));
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t h = 0; h < H; h++) {
                float *l = lse + (b * H + h) * T + t;
                const double pl = part_lse[(b * H + h) * T + t], ol = *l;
                if (pl == -INFINITY) continue;
                const double m = ol > pl ? ol : pl;
                const double w_old = exp(ol - m), w_part = exp(pl - m), sum = w_old + w_part;
                float *o = out + ((b * T + t) * H + h) * Dv;
                const float *po = part_out + ((b * T + t) * H + h) * Dv;
                for (int64_t d = 0; d < Dv; d++)
                    o[d] = (float)(((double)o[d] * w_old + (double)po[d] * w_part) / sum);
                *l = (float)(m + log(sum));
            }
    return DSV3_OK;
}
