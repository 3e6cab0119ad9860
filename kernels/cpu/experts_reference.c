// experts_reference.c: routed experts (grouped SwiGLU FFNs), written for clarity.
//
// Expert e owns the rows [offsets[e], offsets[e+1]) of xs and computes, row by row,
// h1 = w1[e] x, h3 = w3[e] x, y = w2[e] (silu(h1) · h3), each dot product in double; the
// hidden rows in double live in the context's workspace.
//
// Legend: E experts, D model width, F expert hidden width, M routed rows (offsets[E]).
#include <math.h>
#include <stdint.h>

#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

static double silu(double a) { return a / (1.0 + exp(-a)); }

// Workspace of the forward: g (F) doubles, one row's silu(h1) · h3.
size_t dsv3_cpu_reference_experts_forward_workspace(const Dsv3OpShape *shape) {
    Dsv3CpuLayout layout = {0};
    dsv3_cpu_layout_add(&layout, shape->F, sizeof(double));
    return layout.bytes;
}

// (M, F) buffers of the backward: da, db, g.
enum { BACKWARD_BUFFERS = 3 };

// Workspace of the backward: da, db, g (M, F) doubles each. offsets (BACKWARD_BUFFERS) get the
// slices' offsets (when not NULL).
static size_t backward_workspace(const Dsv3OpShape *shape, size_t *offsets) {
    Dsv3CpuLayout layout = {0};
    for (int i = 0; i < BACKWARD_BUFFERS; i++) {
        const size_t at = dsv3_cpu_layout_add(&layout, shape->M * shape->F, sizeof(double));
        if (offsets) offsets[i] = at;
    }
    return layout.bytes;
}

size_t dsv3_cpu_reference_experts_backward_workspace(const Dsv3OpShape *shape) {
    return backward_workspace(shape, NULL);
}

Dsv3Err dsv3_cpu_reference_experts_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                           void *ys_, void *h1_, void *h3_, const void *xs_,
                                           const void *w1_, const void *w2_, const void *w3_,
                                           const int64_t *offsets, int64_t E, int64_t D,
                                           int64_t F) {
    DSV3_CALL(dsv3_cpu_check_f32("experts_forward", dtype));
    float *ys = ys_, *h1 = h1_, *h3 = h3_;       // (M, D), (M, F), (M, F)
    const float *xs = xs_;                       // (M, D)
    const float *w1 = w1_, *w2 = w2_, *w3 = w3_; // (E, F, D), (E, D, F), (E, F, D)
    DSV3_CALL(dsv3_cpu_check_experts_forward(ys, h1, h3, xs, w1, w2, w3, offsets, E, D, F));
    const Dsv3OpShape shape = {.E = E, .M = offsets[E], .F = F};
    DSV3_CALL(dsv3_cpu_check_workspace(ctx, "experts_forward",
                                       dsv3_cpu_reference_experts_forward_workspace(&shape)));
    const int64_t M = offsets[E];
    if (M == 0) return DSV3_OK;
    double *g = ctx->workspace; // (F) silu(h1) · h3 of one row
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
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_reference_experts_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                            void *dxs_, float *dw1, float *dw2, float *dw3,
                                            const void *dys_, const void *xs_, const void *h1_,
                                            const void *h3_, const void *w1_, const void *w2_,
                                            const void *w3_, const int64_t *offsets, int64_t E,
                                            int64_t D, int64_t F) {
    DSV3_CALL(dsv3_cpu_check_f32("experts_backward", dtype));
    float *dxs = dxs_;                           // (M, D)
    const float *dys = dys_, *xs = xs_;          // (M, D) each
    const float *h1 = h1_, *h3 = h3_;            // (M, F) each
    const float *w1 = w1_, *w2 = w2_, *w3 = w3_; // (E, F, D), (E, D, F), (E, F, D)
    DSV3_CALL(dsv3_cpu_check_experts_backward(dxs, dw1, dw2, dw3, dys, xs, h1, h3, w1, w2, w3,
                                              offsets, E, D, F));
    const int64_t M = offsets[E];
    const Dsv3OpShape shape = {.E = E, .M = M, .F = F};
    size_t slices[BACKWARD_BUFFERS];
    DSV3_CALL(
        dsv3_cpu_check_workspace(ctx, "experts_backward", backward_workspace(&shape, slices)));
    if (M == 0) return DSV3_OK;
    double *da = dsv3_cpu_workspace_at(ctx, slices[0]); // (M, F) gradient of h1
    double *db = dsv3_cpu_workspace_at(ctx, slices[1]); // (M, F) gradient of h3
    double *g = dsv3_cpu_workspace_at(ctx, slices[2]);  // (M, F) silu(h1) · h3

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
    return DSV3_OK;
}
