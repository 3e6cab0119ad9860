// attention_reference.c: causal / block-causal scaled dot-product attention, written for
// clarity (see kernels_reference.h): one query row at a time, every sum in double. The fast
// version (attention.c) is tested against this one, and this one against PyTorch
// (tests/reference/ops_attention.py).
//
// Legend: B sequences, T positions, H heads, Dqk query/key head dim, Dv value head dim.
// q, k (B, T, H, Dqk); v, out (B, T, H, Dv): the vector of (b, t, h) starts at
// ((b·T + t)·H + h)·D. lse (B, H, T). doc (B, T) document ids, or NULL for plain causal.
// Query t sees key s when s ≤ t and doc[b, s] == doc[b, t].
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "common/core/alloc.h"
#include "common/core/error.h"
#include "kernels/cpu/checks.h"
#include "kernels/kernels_reference.h"

static int visible(const int32_t *doc_b, int64_t t, int64_t s) {
    return s <= t && (doc_b == NULL || doc_b[s] == doc_b[t]);
}

// p (T) = softmax over the visible keys of query (b, t, h), zero elsewhere; returns its lse.
static double probabilities(double *p, const float *q, const float *k, const int32_t *doc_b,
                            int64_t b, int64_t t, int64_t h, int64_t T, int64_t H, int64_t Dqk,
                            float scale) {
    const float *qt = q + ((b * T + t) * H + h) * Dqk; // (Dqk)
    double max = -INFINITY;
    for (int64_t s = 0; s <= t; s++) {
        if (!visible(doc_b, t, s)) {
            p[s] = -INFINITY;
            continue;
        }
        const float *ks = k + ((b * T + s) * H + h) * Dqk; // (Dqk)
        double dot = 0.0;
        for (int64_t d = 0; d < Dqk; d++)
            dot += (double)qt[d] * (double)ks[d];
        p[s] = (double)scale * dot;
        if (p[s] > max) max = p[s];
    }
    double sum = 0.0;
    for (int64_t s = 0; s <= t; s++) {
        p[s] = visible(doc_b, t, s) ? exp(p[s] - max) : 0.0;
        sum += p[s];
    }
    for (int64_t s = 0; s <= t; s++)
        p[s] /= sum;
    for (int64_t s = t + 1; s < T; s++)
        p[s] = 0.0;
    return max + log(sum); // key s = t is always visible, so sum >= 1
}

Dsv3Err dsv3_attention_forward_reference(float *out, float *lse, const float *q, const float *k,
                                         const float *v, const int32_t *doc, int64_t B, int64_t T,
                                         int64_t H, int64_t Dqk, int64_t Dv, float scale) {
    DSV3_CALL(dsv3_cpu_check_attention_forward(out, lse, q, k, v, B, T, H, Dqk, Dv, scale));
    double *p = NULL; // (T)
    DSV3_CALL(dsv3_alloc((void **)&p, (size_t)T * sizeof *p, "attention probabilities"));
    for (int64_t b = 0; b < B; b++) {
        const int32_t *doc_b = doc == NULL ? NULL : doc + b * T; // (T)
        for (int64_t h = 0; h < H; h++) {
            for (int64_t t = 0; t < T; t++) {
                lse[(b * H + h) * T + t] =
                    (float)probabilities(p, q, k, doc_b, b, t, h, T, H, Dqk, scale);
                float *ot = out + ((b * T + t) * H + h) * Dv; // (Dv)
                for (int64_t d = 0; d < Dv; d++) {
                    double acc = 0.0;
                    for (int64_t s = 0; s <= t; s++)
                        acc += p[s] * (double)v[((b * T + s) * H + h) * Dv + d];
                    ot[d] = (float)acc;
                }
            }
        }
    }
    dsv3_free(p);
    return DSV3_OK;
}

// Recomputes the probabilities from q and k (ignoring the saved out and lse, so that this
// version checks the whole chain): with P the probabilities, dP_ts = dout_t · v_s and
// delta_t = Σ_s P_ts dP_ts, dS = P ⊙ (dP − delta); dq_t = scale Σ_s dS_ts k_s,
// dk_s = scale Σ_t dS_ts q_t, dv_s = Σ_t P_ts dout_t.
Dsv3Err dsv3_attention_backward_reference(float *dq, float *dk, float *dv, const float *dout,
                                          const float *q, const float *k, const float *v,
                                          const float *out, const float *lse, const int32_t *doc,
                                          int64_t B, int64_t T, int64_t H, int64_t Dqk, int64_t Dv,
                                          float scale) {
    DSV3_CALL(dsv3_cpu_check_attention_backward(dq, dk, dv, dout, q, k, v, out, lse, B, T, H, Dqk,
                                                Dv, scale));
    Dsv3Err err = DSV3_OK;
    double *p = NULL, *ds = NULL; // (T) each: one query row
    double *dk_acc = NULL;        // (T, Dqk): one head's dk
    double *dv_acc = NULL;        // (T, Dv): one head's dv
    DSV3_CALL_GOTO(err, done,
                   dsv3_alloc((void **)&p, (size_t)T * sizeof *p, "attention probabilities"));
    DSV3_CALL_GOTO(err, done,
                   dsv3_alloc((void **)&ds, (size_t)T * sizeof *ds, "attention score gradients"));
    DSV3_CALL_GOTO(
        err, done,
        dsv3_alloc((void **)&dk_acc, (size_t)(T * Dqk) * sizeof *dk_acc, "attention dk"));
    DSV3_CALL_GOTO(err, done,
                   dsv3_alloc((void **)&dv_acc, (size_t)(T * Dv) * sizeof *dv_acc, "attention dv"));
    for (int64_t b = 0; b < B; b++) {
        const int32_t *doc_b = doc == NULL ? NULL : doc + b * T; // (T)
        for (int64_t h = 0; h < H; h++) {
            for (int64_t i = 0; i < T * Dqk; i++)
                dk_acc[i] = 0.0;
            for (int64_t i = 0; i < T * Dv; i++)
                dv_acc[i] = 0.0;
            for (int64_t t = 0; t < T; t++) {
                probabilities(p, q, k, doc_b, b, t, h, T, H, Dqk, scale);
                const float *dout_t = dout + ((b * T + t) * H + h) * Dv; // (Dv)
                const float *qt = q + ((b * T + t) * H + h) * Dqk;       // (Dqk)
                double delta = 0.0;
                for (int64_t s = 0; s <= t; s++) {
                    const float *vs = v + ((b * T + s) * H + h) * Dv; // (Dv)
                    double dp = 0.0;
                    for (int64_t d = 0; d < Dv; d++)
                        dp += (double)dout_t[d] * (double)vs[d];
                    ds[s] = dp;
                    delta += p[s] * dp;
                }
                for (int64_t s = 0; s <= t; s++)
                    ds[s] = p[s] * (ds[s] - delta);
                for (int64_t d = 0; d < Dqk; d++) {
                    double acc = 0.0;
                    for (int64_t s = 0; s <= t; s++)
                        acc += ds[s] * (double)k[((b * T + s) * H + h) * Dqk + d];
                    dq[((b * T + t) * H + h) * Dqk + d] = (float)((double)scale * acc);
                }
                for (int64_t s = 0; s <= t; s++) {
                    for (int64_t d = 0; d < Dqk; d++)
                        dk_acc[s * Dqk + d] += (double)scale * ds[s] * (double)qt[d];
                    for (int64_t d = 0; d < Dv; d++)
                        dv_acc[s * Dv + d] += p[s] * (double)dout_t[d];
                }
            }
            for (int64_t s = 0; s < T; s++) {
                for (int64_t d = 0; d < Dqk; d++)
                    dk[((b * T + s) * H + h) * Dqk + d] = (float)dk_acc[s * Dqk + d];
                for (int64_t d = 0; d < Dv; d++)
                    dv[((b * T + s) * H + h) * Dv + d] = (float)dv_acc[s * Dv + d];
            }
        }
    }
done:
    dsv3_free(p);
    dsv3_free(ds);
    dsv3_free(dk_acc);
    dsv3_free(dv_acc);
    return err;
}
