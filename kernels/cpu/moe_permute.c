// moe_permute.c: MoE token permutation to experts and back, fast CPU version.
//
// An assignment a = n·K + k is token n's k-th chosen expert. The plan lists the assignments
// expert by expert, each expert's in increasing a (torch.argsort(stable=True) of the flattened
// expert indices); routed row j holds assignment order[j], a copy of token order[j] / K.
//
// The plan is a counting sort: each thread counts the experts of one contiguous slice of the
// assignments, a prefix sum over (expert, slice) gives every slice its place inside every
// expert, and the slices scatter in increasing a, which keeps the sort stable. The backward of
// the gather and both directions of the combine go over tokens rather than rows (through the
// inverse permutation), so every output row is written by one thread only: no atomics, and the
// same bits for every thread count. The plan's counts and the inverse permutation live in the
// context's workspace.
//
// Legend: N tokens, K experts per token, E experts, D model width, M = N × K routed rows.
#include <inttypes.h>
#include <stdint.h>
#include <string.h>

#include <omp.h>

#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

// Assignments (or rows) below which a call stays on one thread.
enum { PERMUTE_PARALLEL_MIN_ROWS = 256 };

// Assignments one thread of the plan's counting sort should at least have.
enum { PERMUTE_PLAN_MIN_SLICE = 4096 };

// Columns accumulated at once on the stack by the combine (1 KiB of floats).
enum { PERMUTE_COLUMN_BLOCK = 256 };

// Slices of the plan's counting sort: one per thread, each of at least PERMUTE_PLAN_MIN_SLICE
// assignments; none without assignments.
static int64_t plan_slices(int64_t M, int threads) {
    if (M <= 0) return 0;
    int64_t slices = threads;
    if (slices > M / PERMUTE_PLAN_MIN_SLICE) slices = M / PERMUTE_PLAN_MIN_SLICE;
    return slices < 1 ? 1 : slices;
}

// Workspace of the plan: place (slices, E) int64.
size_t dsv3_cpu_moe_plan_workspace(const Dsv3OpShape *shape, int threads) {
    Dsv3CpuLayout layout = {0};
    const int64_t M =
        shape->K > 0 && shape->N > INT64_MAX / shape->K ? INT64_MAX : shape->N * shape->K;
    dsv3_cpu_layout_add(&layout, plan_slices(M, threads) * shape->E, sizeof(int64_t));
    return layout.bytes;
}

// Workspace of the gather backward and the combine: row_of (M = N × K) int32.
size_t dsv3_cpu_moe_rows_of_workspace(const Dsv3OpShape *shape, int threads) {
    (void)threads;
    Dsv3CpuLayout layout = {0};
    const int64_t M = shape->M > 0 ? shape->M : shape->N * shape->K;
    dsv3_cpu_layout_add(&layout, M, sizeof(int32_t));
    return layout.bytes;
}

Dsv3Err dsv3_cpu_moe_plan(const Dsv3KernelContext *ctx, int32_t *order, int64_t *offsets,
                          const int32_t *topk_idx, int64_t N, int64_t K, int64_t E) {
    DSV3_CALL(dsv3_check_moe_plan(order, offsets, topk_idx, N, K, E));
    const int64_t M = N * K;
    const int64_t slices = plan_slices(M, omp_get_max_threads());
    const Dsv3OpShape shape = {.N = N, .K = K, .E = E};
    DSV3_CALL(dsv3_cpu_check_workspace(ctx, "moe_plan",
                                       dsv3_cpu_moe_plan_workspace(&shape, omp_get_max_threads())));
    if (M == 0) {
        memset(offsets, 0, (size_t)(E + 1) * sizeof(int64_t));
        return DSV3_OK;
    }
    int64_t first_bad = M;
#pragma omp parallel for schedule(static)                                                          \
    reduction(min                                                                                  \
              : first_bad) if (M >= PERMUTE_PARALLEL_MIN_ROWS)
    for (int64_t a = 0; a < M; a++)
        if ((topk_idx[a] < 0 || topk_idx[a] >= E) && a < first_bad) first_bad = a;
    DSV3_CHECK(first_bad == M, DSV3_ERR_USAGE,
               "moe_plan: topk_idx[%" PRId64 "][%" PRId64 "] = %" PRId32
               " is not an expert in [0, %" PRId64 ")",
               first_bad / K, first_bad % K, first_bad < M ? topk_idx[first_bad] : 0, E);

    // (slices, E): counts, then each slice's next row in each expert.
    int64_t *place = ctx->workspace;
    memset(place, 0, (size_t)(slices * E) * sizeof(int64_t));

#pragma omp parallel num_threads(slices) if (slices > 1)
    {
        // The team may be smaller than asked; its threads then share out all the slices.
        const int64_t team = omp_get_num_threads();
        for (int64_t s = omp_get_thread_num(); s < slices; s += team) {
            int64_t *mine = place + s * E;
            for (int64_t a = s * M / slices; a < (s + 1) * M / slices; a++)
                mine[topk_idx[a]]++;
        }
#pragma omp barrier
#pragma omp single
        {
            int64_t row = 0;
            for (int64_t e = 0; e < E; e++) {
                offsets[e] = row;
                for (int64_t s = 0; s < slices; s++) {
                    const int64_t count = place[s * E + e];
                    place[s * E + e] = row;
                    row += count;
                }
            }
            offsets[E] = row;
        } // implicit barrier
        for (int64_t s = omp_get_thread_num(); s < slices; s += team) {
            int64_t *mine = place + s * E;
            for (int64_t a = s * M / slices; a < (s + 1) * M / slices; a++)
                order[mine[topk_idx[a]]++] = (int32_t)a;
        }
    }
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_moe_gather(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *xs_,
                            const void *x_, const int32_t *order, int64_t M, int64_t K, int64_t D) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("moe_gather", dtype));
    float *xs = xs_;     // (M, D)
    const float *x = x_; // (N, D)
    int64_t N;
    DSV3_CALL(dsv3_cpu_check_moe_gather(&N, xs, x, order, M, K, D));
    if (M == 0) return DSV3_OK;
    const size_t row_bytes = (size_t)D * sizeof(float);
#pragma omp parallel for schedule(static) if (M >= PERMUTE_PARALLEL_MIN_ROWS)
    for (int64_t j = 0; j < M; j++)
        memcpy(xs + j * D, x + (int64_t)(order[j] / K) * D, row_bytes); // (D) ← (D)
    return DSV3_OK;
}

// row_of (M) from the context's workspace, filled from order; checked before any work.
static Dsv3Err rows_of(int32_t **row_of, const Dsv3KernelContext *ctx, const char *op,
                       const int32_t *order, int64_t M) {
    const Dsv3OpShape shape = {.M = M};
    DSV3_CALL(dsv3_cpu_check_workspace(ctx, op, dsv3_cpu_moe_rows_of_workspace(&shape, 1)));
    *row_of = ctx->workspace;
    if (M > 0) DSV3_CALL(dsv3_cpu_moe_rows_of(*row_of, order, M));
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_moe_gather_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *dx_,
                                     const void *dxs_, const int32_t *order, int64_t M, int64_t K,
                                     int64_t D) {
    DSV3_CALL(dsv3_cpu_check_f32("moe_gather_backward", dtype));
    float *dx = dx_;         // (N, D)
    const float *dxs = dxs_; // (M, D)
    int64_t N;
    DSV3_CALL(dsv3_check_moe_gather_backward(&N, dx, dxs, order, M, K, D));
    int32_t *row_of = NULL; // (M)
    DSV3_CALL(rows_of(&row_of, ctx, "moe_gather_backward", order, M));
    if (M == 0) return DSV3_OK;
#pragma omp parallel for schedule(static) if (M >= PERMUTE_PARALLEL_MIN_ROWS)
    for (int64_t n = 0; n < N; n++) {
        float *dst = dx + n * D; // (D)
        for (int64_t k = 0; k < K; k++) {
            const float *src = dxs + (int64_t)row_of[n * K + k] * D; // (D)
            for (int64_t d = 0; d < D; d++)
                dst[d] += src[d];
        }
    }
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_moe_combine_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                     void *out_, const void *ys_, const float *weights,
                                     const int32_t *order, int64_t N, int64_t K, int64_t D) {
    DSV3_CALL(dsv3_cpu_check_f32("moe_combine_forward", dtype));
    float *out = out_;     // (N, D)
    const float *ys = ys_; // (M, D)
    DSV3_CALL(dsv3_check_moe_combine_forward(out, ys, weights, order, N, K, D));
    const int64_t M = N * K;
    int32_t *row_of = NULL; // (M)
    DSV3_CALL(rows_of(&row_of, ctx, "moe_combine_forward", order, M));
    if (M == 0) return DSV3_OK;
#pragma omp parallel for schedule(static) if (M >= PERMUTE_PARALLEL_MIN_ROWS)
    for (int64_t n = 0; n < N; n++) {
        // The weighted sum over k first, then onto out: torchtitan's bmm, then its addition to
        // the shared experts' output.
        for (int64_t d0 = 0; d0 < D; d0 += PERMUTE_COLUMN_BLOCK) {
            const int64_t width = D - d0 < PERMUTE_COLUMN_BLOCK ? D - d0 : PERMUTE_COLUMN_BLOCK;
            float acc[PERMUTE_COLUMN_BLOCK];
            for (int64_t d = 0; d < width; d++)
                acc[d] = 0.0f;
            for (int64_t k = 0; k < K; k++) {
                const float w = weights[n * K + k];
                const float *y = ys + (int64_t)row_of[n * K + k] * D + d0; // (width)
                for (int64_t d = 0; d < width; d++)
                    acc[d] += w * y[d];
            }
            float *o = out + n * D + d0; // (width)
            for (int64_t d = 0; d < width; d++)
                o[d] += acc[d];
        }
    }
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_moe_combine_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                      void *dys_, float *dweights, const void *dout_,
                                      const void *ys_, const float *weights, const int32_t *order,
                                      int64_t N, int64_t K, int64_t D) {
    DSV3_CALL(dsv3_cpu_check_f32("moe_combine_backward", dtype));
    float *dys = dys_;                    // (M, D)
    const float *dout = dout_, *ys = ys_; // (N, D), (M, D)
    DSV3_CALL(dsv3_check_moe_combine_backward(dys, dweights, dout, ys, weights, order, N, K, D));
    const int64_t M = N * K;
    int32_t *row_of = NULL; // (M)
    DSV3_CALL(rows_of(&row_of, ctx, "moe_combine_backward", order, M));
    if (M == 0) return DSV3_OK;
#pragma omp parallel for schedule(static) if (M >= PERMUTE_PARALLEL_MIN_ROWS)
    for (int64_t n = 0; n < N; n++) {
        const float *g = dout + n * D; // (D)
        for (int64_t k = 0; k < K; k++) {
            const int64_t j = row_of[n * K + k];
            const float w = weights[n * K + k];
            const float *y = ys + j * D; // (D)
            float *dy = dys + j * D;     // (D)
            float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
            for (int64_t d = 0; d < D; d++) {
                dy[d] = w * g[d];
                dot += g[d] * y[d];
            }
            dweights[n * K + k] = dot;
        }
    }
    return DSV3_OK;
}
