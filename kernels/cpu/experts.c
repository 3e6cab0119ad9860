// experts.c: routed experts (grouped SwiGLU FFNs), fast CPU version.
//
// Expert e owns the rows [offsets[e], offsets[e+1]) of xs; its products are OpenBLAS GEMMs on
// those rows (torchtitan's _run_experts_for_loop), experts without rows are skipped.
//
// Two ways to use several threads, chosen per call:
// - over experts: OpenMP hands whole experts to threads (dynamic, busiest first, since experts
//   get unequal rows) and each GEMM runs on one BLAS thread. Used when there are at least
//   EXPERTS_MIN_PER_THREAD experts with rows per thread: the GEMMs of one expert are small
//   (few rows), threads never wait for each other inside a GEMM, and each streams only its own
//   experts' weights. OpenBLAS (pthreads build) does not notice that it is called from
//   OpenMP threads, so its thread count is set to 1 for the duration of the loop and then
//   restored; that setting is process-wide, so no other thread may run BLAS meanwhile.
// - inside GEMMs: experts one after another, each GEMM threaded by BLAS, the elementwise
//   SwiGLU by OpenMP. Used when few experts have rows (a small batch, or many threads).
// Measured with OpenBLAS 0.3.21 on two cores (forward / backward, ms; the two-thread figures
// come from a machine that other work shared, so they are indicative only):
//   E 8, D 256, F 256, M 4096     1 thread 25.6 / 48.5; 2 threads: over experts 30.3 / 60.8,
//                                 inside GEMMs 41.6 / 79.8
//   E 64, D 2048, F 1408, M 768   1 thread 648 / 895; 2 threads: over experts 472 / 545,
//                                 inside GEMMs 998 / 1437
//
// Legend: E experts, D model width, F expert hidden width, M routed rows (offsets[E]), m rows
// of one expert.
#include <inttypes.h>
#include <math.h>
#include <stdint.h>

#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

#include <omp.h>

// Experts with rows per thread from which threads take whole experts instead of sharing GEMMs.
enum { EXPERTS_MIN_PER_THREAD = 2 };

// BLAS takes int sizes: D, F and the rows of every expert. Called after the checks shared with
// the reference version (checks.h), which validate offsets.
static Dsv3Err experts_check_blas_sizes(const int64_t *offsets, int64_t E, int64_t D, int64_t F) {
    DSV3_CHECK(D <= INT32_MAX, DSV3_ERR_USAGE,
               "experts: D = %" PRId64 ", expected 1 <= D <= 2^31 - 1 (BLAS int)", D);
    DSV3_CHECK(F <= INT32_MAX, DSV3_ERR_USAGE,
               "experts: F = %" PRId64 ", expected 1 <= F <= 2^31 - 1 (BLAS int)", F);
    for (int64_t e = 0; e < E; e++)
        DSV3_CHECK(offsets[e + 1] - offsets[e] <= INT32_MAX, DSV3_ERR_USAGE,
                   "experts: expert %" PRId64 " has %" PRId64 " rows, more than a BLAS int holds",
                   e, offsets[e + 1] - offsets[e]);
    return DSV3_OK;
}

// Whether to hand whole experts to threads (else: thread the GEMMs); see the file comment.
static int experts_split_over_experts(int64_t busy) {
    const int threads = omp_get_max_threads();
    return threads > 1 && busy >= (int64_t)threads * EXPERTS_MIN_PER_THREAD;
}

// order (E, the first *busy used): experts with rows, the busiest first (OpenMP's dynamic
// schedule then ends with the small ones, which balances the threads best); *busy is their
// count.
static void experts_schedule(int64_t *order, int64_t *busy, const int64_t *offsets, int64_t E) {
    int64_t n = 0;
    for (int64_t e = 0; e < E; e++) {
        const int64_t m = offsets[e + 1] - offsets[e];
        if (m == 0) continue;
        int64_t p = n++; // insertion by rows, descending; ties keep expert order
        while (p > 0 && offsets[order[p - 1] + 1] - offsets[order[p - 1]] < m) {
            order[p] = order[p - 1];
            p--;
        }
        order[p] = e;
    }
    *busy = n;
}

// Workspace: `hidden` buffers of (M, F) floats (forward: g; backward: ga, gb), then the
// schedule (E) int64. offsets (hidden + 1) get the slices' offsets (when not NULL).
static size_t experts_workspace(const Dsv3OpShape *shape, int hidden, size_t *offsets) {
    Dsv3CpuLayout layout = {0};
    for (int i = 0; i < hidden; i++) {
        const size_t at = dsv3_cpu_layout_add(&layout, shape->M * shape->F, sizeof(float));
        if (offsets) offsets[i] = at;
    }
    const size_t schedule = dsv3_cpu_layout_add(&layout, shape->E, sizeof(int64_t));
    if (offsets) offsets[hidden] = schedule;
    return layout.bytes;
}

// Hidden (M, F) buffers of each direction.
enum { FORWARD_HIDDEN = 1, BACKWARD_HIDDEN = 2 };

size_t dsv3_cpu_experts_forward_workspace(const Dsv3OpShape *shape, int threads) {
    (void)threads;
    return experts_workspace(shape, FORWARD_HIDDEN, NULL);
}

size_t dsv3_cpu_experts_backward_workspace(const Dsv3OpShape *shape, int threads) {
    (void)threads;
    return experts_workspace(shape, BACKWARD_HIDDEN, NULL);
}

// Forward of expert e on its m rows; g (m, F) is scratch.
static void expert_forward(const Dsv3KernelContext *ctx, float *ys, float *h1, float *h3, float *g,
                           const float *xs, const float *w1e, const float *w2e, const float *w3e,
                           int64_t m, int64_t D, int64_t F) {
    const int im = (int)m, iD = (int)D, iF = (int)F;
    // h1, h3 (m, F) = xs (m, D) · w (F, D)ᵀ
    dsv3_cpu_gemm(ctx, DSV3_GEMM_NO_TRANS, DSV3_GEMM_TRANS, im, iF, iD, 1.0f, xs, iD, w1e, iD, 0.0f,
                  h1, iF);
    dsv3_cpu_gemm(ctx, DSV3_GEMM_NO_TRANS, DSV3_GEMM_TRANS, im, iF, iD, 1.0f, xs, iD, w3e, iD, 0.0f,
                  h3, iF);
    dsv3_cpu_swiglu_rows(g, h1, h3, m * F);
    // ys (m, D) = g (m, F) · w2 (D, F)ᵀ
    dsv3_cpu_gemm(ctx, DSV3_GEMM_NO_TRANS, DSV3_GEMM_TRANS, im, iD, iF, 1.0f, g, iF, w2e, iF, 0.0f,
                  ys, iD);
}

// Backward of expert e on its m rows; ga, gb (m, F) are scratch.
static void expert_backward(const Dsv3KernelContext *ctx, float *dxs, float *dw1e, float *dw2e,
                            float *dw3e, float *ga, float *gb, const float *dys, const float *xs,
                            const float *h1, const float *h3, const float *w1e, const float *w2e,
                            const float *w3e, int64_t m, int64_t D, int64_t F) {
    const int im = (int)m, iD = (int)D, iF = (int)F;
    // dw2 (D, F) += dysᵀ (D, m) · g (m, F), with g = silu(h1) · h3 recomputed in gb.
    dsv3_cpu_swiglu_rows(gb, h1, h3, m * F);
    dsv3_cpu_gemm(ctx, DSV3_GEMM_TRANS, DSV3_GEMM_NO_TRANS, iD, iF, im, 1.0f, dys, iD, gb, iF, 1.0f,
                  dw2e, iF);
    // dg (m, F) = dys (m, D) · w2 (D, F), in ga; then da in ga and db in gb (g is spent).
    dsv3_cpu_gemm(ctx, DSV3_GEMM_NO_TRANS, DSV3_GEMM_NO_TRANS, im, iF, iD, 1.0f, dys, iD, w2e, iF,
                  0.0f, ga, iF);
    dsv3_cpu_swiglu_rows_backward(ga, gb, ga, h1, h3, m * F);
    // dw1, dw3 (F, D) += daᵀ, dbᵀ (F, m) · xs (m, D)
    dsv3_cpu_gemm(ctx, DSV3_GEMM_TRANS, DSV3_GEMM_NO_TRANS, iF, iD, im, 1.0f, ga, iF, xs, iD, 1.0f,
                  dw1e, iD);
    dsv3_cpu_gemm(ctx, DSV3_GEMM_TRANS, DSV3_GEMM_NO_TRANS, iF, iD, im, 1.0f, gb, iF, xs, iD, 1.0f,
                  dw3e, iD);
    // dxs (m, D) = da (m, F) · w1 (F, D) + db (m, F) · w3 (F, D)
    dsv3_cpu_gemm(ctx, DSV3_GEMM_NO_TRANS, DSV3_GEMM_NO_TRANS, im, iD, iF, 1.0f, ga, iF, w1e, iD,
                  0.0f, dxs, iD);
    dsv3_cpu_gemm(ctx, DSV3_GEMM_NO_TRANS, DSV3_GEMM_NO_TRANS, im, iD, iF, 1.0f, gb, iF, w3e, iD,
                  1.0f, dxs, iD);
}

Dsv3Err dsv3_cpu_experts_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *ys_,
                                 void *h1_, void *h3_, const void *xs_, const void *w1_,
                                 const void *w2_, const void *w3_, const int64_t *offsets,
                                 int64_t E, int64_t D, int64_t F) {
    DSV3_CALL(dsv3_cpu_check_f32("experts_forward", dtype));
    float *ys = ys_, *h1 = h1_, *h3 = h3_;       // (M, D), (M, F), (M, F)
    const float *xs = xs_;                       // (M, D)
    const float *w1 = w1_, *w2 = w2_, *w3 = w3_; // (E, F, D), (E, D, F), (E, F, D)
    DSV3_CALL(dsv3_cpu_check_experts_forward(ys, h1, h3, xs, w1, w2, w3, offsets, E, D, F));
    DSV3_CALL(experts_check_blas_sizes(offsets, E, D, F));
    const int64_t M = offsets[E];
    const Dsv3OpShape shape = {.E = E, .M = M, .F = F};
    size_t slices[FORWARD_HIDDEN + 1];
    DSV3_CALL(dsv3_cpu_check_workspace(ctx, "experts_forward",
                                       experts_workspace(&shape, FORWARD_HIDDEN, slices)));
    if (M == 0) return DSV3_OK;
    float *g = dsv3_cpu_workspace_at(ctx, slices[0]);       // (M, F) silu(h1) · h3
    int64_t *sched = dsv3_cpu_workspace_at(ctx, slices[1]); // (busy) experts with rows
    int64_t busy = 0;
    experts_schedule(sched, &busy, offsets, E);

    const int over_experts = experts_split_over_experts(busy);
    // Over experts: one BLAS thread per GEMM while OpenMP's threads each run their own experts.
    const int blas_threads = over_experts ? dsv3_cpu_blas_threads_enter() : 0;
#pragma omp parallel for schedule(dynamic, 1) if (over_experts)
    for (int64_t i = 0; i < busy; i++) {
        const int64_t e = sched[i], r = offsets[e], m = offsets[e + 1] - r;
        expert_forward(ctx, ys + r * D, h1 + r * F, h3 + r * F, g + r * F, xs + r * D,
                       w1 + e * F * D, w2 + e * D * F, w3 + e * F * D, m, D, F);
    }
    if (over_experts) dsv3_cpu_blas_threads_leave(blas_threads);
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_experts_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *dxs_,
                                  float *dw1, float *dw2, float *dw3, const void *dys_,
                                  const void *xs_, const void *h1_, const void *h3_,
                                  const void *w1_, const void *w2_, const void *w3_,
                                  const int64_t *offsets, int64_t E, int64_t D, int64_t F) {
    DSV3_CALL(dsv3_cpu_check_f32("experts_backward", dtype));
    float *dxs = dxs_;                           // (M, D)
    const float *dys = dys_, *xs = xs_;          // (M, D) each
    const float *h1 = h1_, *h3 = h3_;            // (M, F) each
    const float *w1 = w1_, *w2 = w2_, *w3 = w3_; // (E, F, D), (E, D, F), (E, F, D)
    DSV3_CALL(dsv3_cpu_check_experts_backward(dxs, dw1, dw2, dw3, dys, xs, h1, h3, w1, w2, w3,
                                              offsets, E, D, F));
    DSV3_CALL(experts_check_blas_sizes(offsets, E, D, F));
    const int64_t M = offsets[E];
    const Dsv3OpShape shape = {.E = E, .M = M, .F = F};
    size_t slices[BACKWARD_HIDDEN + 1];
    DSV3_CALL(dsv3_cpu_check_workspace(ctx, "experts_backward",
                                       experts_workspace(&shape, BACKWARD_HIDDEN, slices)));
    if (M == 0) return DSV3_OK;
    float *ga = dsv3_cpu_workspace_at(ctx, slices[0]);      // (M, F) dg, then da
    float *gb = dsv3_cpu_workspace_at(ctx, slices[1]);      // (M, F) g, then db
    int64_t *sched = dsv3_cpu_workspace_at(ctx, slices[2]); // (busy) experts with rows
    int64_t busy = 0;
    experts_schedule(sched, &busy, offsets, E);

    const int over_experts = experts_split_over_experts(busy);
    const int blas_threads = over_experts ? dsv3_cpu_blas_threads_enter() : 0;
#pragma omp parallel for schedule(dynamic, 1) if (over_experts)
    for (int64_t i = 0; i < busy; i++) {
        const int64_t e = sched[i], r = offsets[e], m = offsets[e + 1] - r;
        expert_backward(ctx, dxs + r * D, dw1 + e * F * D, dw2 + e * D * F, dw3 + e * F * D,
                        ga + r * F, gb + r * F, dys + r * D, xs + r * D, h1 + r * F, h3 + r * F,
                        w1 + e * F * D, w2 + e * D * F, w3 + e * F * D, m, D, F);
    }
    if (over_experts) dsv3_cpu_blas_threads_leave(blas_threads);
    return DSV3_OK;
}
