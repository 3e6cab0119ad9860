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
// same bits for every thread count.
//
// Legend: N tokens, K experts per token, E experts, D model width, M = N × K routed rows.
#include <inttypes.h>
#include <stdint.h>
#include <string.h>

#include <omp.h>

#include "common/core/alloc.h"
#include "kernels/cpu/checks.h"
#include "kernels/kernels.h"

// Assignments (or rows) below which a call stays on one thread.
enum { PERMUTE_PARALLEL_MIN_ROWS = 256 };

// Assignments one thread of the plan's counting sort should at least have.
enum { PERMUTE_PLAN_MIN_SLICE = 4096 };

// Columns accumulated at once on the stack by the combine (1 KiB of floats).
enum { PERMUTE_COLUMN_BLOCK = 256 };

Dsv3Err dsv3_moe_plan(int32_t *order, int64_t *offsets, const int32_t *topk_idx, int64_t N,
                      int64_t K, int64_t E) {
    DSV3_CALL(dsv3_cpu_check_moe_plan(order, offsets, topk_idx, N, K, E));
    const int64_t M = N * K;
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

    int64_t slices = omp_get_max_threads();
    if (slices > M / PERMUTE_PLAN_MIN_SLICE) slices = M / PERMUTE_PLAN_MIN_SLICE;
    if (slices < 1) slices = 1;
    int64_t *place = NULL; // (slices, E): counts, then each slice's next row in each expert
    DSV3_CALL(
        dsv3_calloc((void **)&place, (size_t)(slices * E), sizeof(int64_t), "moe plan counts"));

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
    dsv3_free(place);
    return DSV3_OK;
}

Dsv3Err dsv3_moe_gather(float *xs, const float *x, const int32_t *order, int64_t M, int64_t K,
                        int64_t D) {
    int64_t N;
    DSV3_CALL(dsv3_cpu_check_moe_gather(&N, xs, x, order, M, K, D));
    if (M == 0) return DSV3_OK;
    const size_t row_bytes = (size_t)D * sizeof(float);
#pragma omp parallel for schedule(static) if (M >= PERMUTE_PARALLEL_MIN_ROWS)
    for (int64_t j = 0; j < M; j++)
        memcpy(xs + j * D, x + (int64_t)(order[j] / K) * D, row_bytes); // (D) ← (D)
    return DSV3_OK;
}

Dsv3Err dsv3_moe_gather_backward(float *dx, const float *dxs, const int32_t *order, int64_t M,
                                 int64_t K, int64_t D) {
    int64_t N;
    DSV3_CALL(dsv3_cpu_check_moe_gather_backward(&N, dx, dxs, order, M, K, D));
    if (M == 0) return DSV3_OK;
    int32_t *row_of = NULL; // (M)
    DSV3_CALL(dsv3_cpu_moe_rows_of(&row_of, order, M));
#pragma omp parallel for schedule(static) if (M >= PERMUTE_PARALLEL_MIN_ROWS)
    for (int64_t n = 0; n < N; n++) {
        float *dst = dx + n * D; // (D)
        for (int64_t k = 0; k < K; k++) {
            const float *src = dxs + (int64_t)row_of[n * K + k] * D; // (D)
            for (int64_t d = 0; d < D; d++)
                dst[d] += src[d];
        }
    }
    dsv3_free(row_of);
    return DSV3_OK;
}

Dsv3Err dsv3_moe_combine_forward(float *out, const float *ys, const float *weights,
                                 const int32_t *order, int64_t N, int64_t K, int64_t D) {
    DSV3_CALL(dsv3_cpu_check_moe_combine_forward(out, ys, weights, order, N, K, D));
    const int64_t M = N * K;
    if (M == 0) return DSV3_OK;
    int32_t *row_of = NULL; // (M)
    DSV3_CALL(dsv3_cpu_moe_rows_of(&row_of, order, M));
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
    dsv3_free(row_of);
    return DSV3_OK;
}

Dsv3Err dsv3_moe_combine_backward(float *dys, float *dweights, const float *dout, const float *ys,
                                  const float *weights, const int32_t *order, int64_t N, int64_t K,
                                  int64_t D) {
    DSV3_CALL(
        dsv3_cpu_check_moe_combine_backward(dys, dweights, dout, ys, weights, order, N, K, D));
    const int64_t M = N * K;
    if (M == 0) return DSV3_OK;
    int32_t *row_of = NULL; // (M)
    DSV3_CALL(dsv3_cpu_moe_rows_of(&row_of, order, M));
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
    dsv3_free(row_of);
    return DSV3_OK;
}
