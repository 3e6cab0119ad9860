// experts_reference.c: routed experts (grouped SwiGLU FFNs), written for clarity.
//
// Expert e owns the rows [offsets[e], offsets[e+1]) of xs and computes, row by row,
// h1 = w1[e] x, h3 = w3[e] x, y = w2[e] (silu(h1) · h3), each dot product in double.
//
// Legend: E experts, D model width, F expert hidden width, M routed rows (offsets[E]).
#include <math.h>
#include <stdint.h>

#include "common/core/alloc.h"
#include "kernels/cpu/checks.h"
#include "kernels/kernels_reference.h"

static double silu(double a) { return a / (1.0 + exp(-a)); }

Dsv3Err dsv3_experts_forward_reference(float *ys, float *h1, float *h3, const float *xs,
                                       const float *w1, const float *w2, const float *w3,
                                       const int64_t *offsets, int64_t E, int64_t D, int64_t F) {
    DSV3_CALL(dsv3_cpu_check_experts_forward(ys, h1, h3, xs, w1, w2, w3, offsets, E, D, F));
    const int64_t M = offsets[E];
    if (M == 0) return DSV3_OK;
    Dsv3Err err = DSV3_OK;
    double *g = NULL; // (F) silu(h1) · h3 of one row
    DSV3_CALL_GOTO(err, done,
                   dsv3_alloc((void **)&g, (size_t)F * sizeof(double), "experts hidden"));
    for (int64_t e = 0; e < E; e++) {
        const float *w1e = w1 + e * F * D, *w3e = w3 + e * F * D; // (F, D)
        const float *w2e = w2 + e * D * F;                        // (D, F)
        for (int64_t m = offsets[e]; m < offsets[e + 1]; m++) {
            const float *x = xs + m * D; // (D)
            for (int64_t f = 0; f < F; f++) {
                double a = 0, b = 0;
                for (int64_t d = 0; d < D; d++) {
                    a += (double)w1e[f * D + d] * x[d];
                    b += (double)w3e[f * D + d] * x[d];
                }
                h1[m * F + f] = (float)a;
                h3[m * F + f] = (float)b;
                g[f] = silu(a) * b;
            }
            for (int64_t d = 0; d < D; d++) {
                double y = 0;
                for (int64_t f = 0; f < F; f++)
                    y += w2e[d * F + f] * g[f];
                ys[m * D + d] = (float)y;
            }
        }
    }
done:
    dsv3_free(g);
    return err;
}

Dsv3Err dsv3_experts_backward_reference(float *dxs, float *dw1, float *dw2, float *dw3,
                                        const float *dys, const float *xs, const float *h1,
                                        const float *h3, const float *w1, const float *w2,
                                        const float *w3, const int64_t *offsets, int64_t E,
                                        int64_t D, int64_t F) {
    DSV3_CALL(dsv3_cpu_check_experts_backward(dxs, dw1, dw2, dw3, dys, xs, h1, h3, w1, w2, w3,
                                              offsets, E, D, F));
    const int64_t M = offsets[E];
    if (M == 0) return DSV3_OK;
    Dsv3Err err = DSV3_OK;
    double *da = NULL; // (M, F) gradient of h1
    double *db = NULL; // (M, F) gradient of h3
    double *g = NULL;  // (M, F) silu(h1) · h3
    const size_t bytes = (size_t)(M * F) * sizeof(double);
    DSV3_CALL_GOTO(err, done, dsv3_alloc((void **)&da, bytes, "experts dh1"));
    DSV3_CALL_GOTO(err, done, dsv3_alloc((void **)&db, bytes, "experts dh3"));
    DSV3_CALL_GOTO(err, done, dsv3_alloc((void **)&g, bytes, "experts hidden"));

    for (int64_t e = 0; e < E; e++) {
        const float *w1e = w1 + e * F * D, *w3e = w3 + e * F * D; // (F, D)
        const float *w2e = w2 + e * D * F;                        // (D, F)
        const int64_t m0 = offsets[e], m1 = offsets[e + 1];
        for (int64_t m = m0; m < m1; m++)
            for (int64_t f = 0; f < F; f++) {
                // silu(a) = a σ(a); silu'(a) = σ(a) (1 + a (1 − σ(a))).
                const double a = h1[m * F + f], b = h3[m * F + f];
                const double sig = 1.0 / (1.0 + exp(-a));
                double dg = 0; // gradient of g = (dys · w2[e])[m, f]
                for (int64_t d = 0; d < D; d++)
                    dg += (double)dys[m * D + d] * w2e[d * F + f];
                g[m * F + f] = a * sig * b;
                da[m * F + f] = dg * b * sig * (1.0 + a * (1.0 - sig));
                db[m * F + f] = dg * a * sig;
            }
        float *dw1e = dw1 + e * F * D, *dw3e = dw3 + e * F * D; // (F, D)
        float *dw2e = dw2 + e * D * F;                          // (D, F)
        for (int64_t d = 0; d < D; d++)
            for (int64_t f = 0; f < F; f++) {
                double s2 = 0, s1 = 0, s3 = 0;
                for (int64_t m = m0; m < m1; m++) {
                    s2 += (double)dys[m * D + d] * g[m * F + f];
                    s1 += da[m * F + f] * xs[m * D + d];
                    s3 += db[m * F + f] * xs[m * D + d];
                }
                dw2e[d * F + f] += (float)s2;
                dw1e[f * D + d] += (float)s1;
                dw3e[f * D + d] += (float)s3;
            }
        for (int64_t m = m0; m < m1; m++)
            for (int64_t d = 0; d < D; d++) {
                double s = 0;
                for (int64_t f = 0; f < F; f++)
                    s += da[m * F + f] * w1e[f * D + d] + db[m * F + f] * w3e[f * D + d];
                dxs[m * D + d] = (float)s;
            }
    }
done:
    dsv3_free(da);
    dsv3_free(db);
    dsv3_free(g);
    return err;
}
