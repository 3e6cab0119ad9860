// router.c: the MoE router (torchtitan's TokenChoiceTopKRouter), fast CPU version.
//
// Tokens are independent, so OpenMP splits them between threads. The top-k of a token keeps
// a short list sorted by value (descending) into which each candidate is inserted, one pass
// over the E experts instead of K; candidates come in increasing index order and only a
// strictly larger value moves past an equal one, so ties go to the lower index, as in the
// reference version. Group-limited routing picks groups the same way and then scans only the
// experts of the kept groups; each thread's lists live in the context's workspace. The
// backward needs no scratch: the scores' gradient is nonzero at the K chosen experts only.
//
// Legend: N tokens, E experts, K experts per token, G expert groups (E/G experts each), L
// groups a token may use.
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <omp.h>

#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

// torchtitan's route_norm adds this to the sum of a token's weights before dividing.
static const float ROUTER_NORM_EPS = 1e-20f;

// Tokens below which a call stays on one thread (thread start-up costs more than it saves).
enum { ROUTER_PARALLEL_MIN_TOKENS = 64 };

// A list of at most `cap` (value, index) pairs kept sorted by value, descending.
typedef struct {
    float *value;   // (cap)
    int32_t *index; // (cap)
    int64_t size, cap;
} TopList;

// Offers (v, i); i must exceed every index offered before, so that equal values stay in index
// order and a full list keeps the lower index.
static inline void toplist_offer(TopList *t, float v, int32_t i) {
    int64_t p;
    if (t->size < t->cap)
        p = t->size++;
    else if (v > t->value[t->cap - 1])
        p = t->cap - 1;
    else
        return;
    while (p > 0 && t->value[p - 1] < v) {
        t->value[p] = t->value[p - 1];
        t->index[p] = t->index[p - 1];
        p--;
    }
    t->value[p] = v;
    t->index[p] = i;
}

// One token: scores s (E) from logits l (E); topk idx (K) and weights w (K). `choice` (E),
// `gval` (G), `gidx` (G), `kval` (K) and `kept` (G) are this thread's scratch.
static void router_token(float *s, int32_t *idx, float *w, const float *l, const float *bias,
                         const Dsv3RouterArgs *args, float *choice, float *gval, int32_t *gidx,
                         float *kval, unsigned char *kept) {
    const int64_t E = args->num_experts, K = args->top_k, G = args->num_groups;
    if (args->sigmoid) {
        for (int64_t e = 0; e < E; e++)
            s[e] = 1.0f / (1.0f + expf(-l[e]));
    } else {
        float max = l[0], sum = 0;
        for (int64_t e = 1; e < E; e++)
            max = l[e] > max ? l[e] : max;
        for (int64_t e = 0; e < E; e++) {
            s[e] = expf(l[e] - max);
            sum += s[e];
        }
        const float inv = 1.0f / sum;
        for (int64_t e = 0; e < E; e++)
            s[e] *= inv;
    }
    for (int64_t e = 0; e < E; e++)
        choice[e] = bias ? s[e] + bias[e] : s[e];

    TopList top = {kval, idx, 0, K};
    if (G > 0) {
        const int64_t per_group = E / G;
        float two_v[DSV3_ROUTER_GROUP_TOP];
        int32_t two_i[DSV3_ROUTER_GROUP_TOP];
        TopList groups = {gval, gidx, 0, args->num_limited_groups};
        for (int64_t g = 0; g < G; g++) {
            TopList two = {two_v, two_i, 0, DSV3_ROUTER_GROUP_TOP};
            for (int64_t i = 0; i < per_group; i++)
                toplist_offer(&two, choice[g * per_group + i], (int32_t)i);
            float gs = 0;
            for (int t = 0; t < DSV3_ROUTER_GROUP_TOP; t++)
                gs += two_v[t];
            toplist_offer(&groups, gs, (int32_t)g);
        }
        memset(kept, 0, (size_t)G);
        for (int64_t t = 0; t < groups.size; t++)
            kept[gidx[t]] = 1;
        // Kept groups in increasing order, so experts are offered in increasing index order.
        for (int64_t g = 0; g < G; g++)
            if (kept[g])
                for (int64_t e = g * per_group; e < (g + 1) * per_group; e++)
                    toplist_offer(&top, choice[e], (int32_t)e);
    } else {
        for (int64_t e = 0; e < E; e++)
            toplist_offer(&top, choice[e], (int32_t)e);
    }

    float sum = 0;
    for (int64_t k = 0; k < K; k++) {
        w[k] = s[idx[k]];
        sum += w[k];
    }
    if (args->route_norm) {
        const float denom = sum + ROUTER_NORM_EPS;
        for (int64_t k = 0; k < K; k++)
            w[k] /= denom;
    }
    for (int64_t k = 0; k < K; k++)
        w[k] *= args->route_scale;
}

// Per-thread scratch of the forward: choice (E), kval (K), gval (G) floats; gidx (G) int32;
// kept (G) bytes. The workspace query's shape has no G: since groups divide the E experts,
// G ≤ E, and every layout reserves for G = E. offsets (SCRATCH_BLOCKS, when not NULL) get the
// offsets of the float, int32 and byte blocks, each (threads, per thread). No tokens, no scratch.
enum { SCRATCH_BLOCKS = 3 };

static size_t forward_workspace(const Dsv3OpShape *shape, int threads, int64_t *floats_per_thread,
                                size_t *offsets) {
    if (shape->N <= 0) threads = 0;
    const int64_t groups = shape->E; // G ≤ E
    const int64_t floats = shape->E + shape->K + groups;
    Dsv3CpuLayout layout = {0};
    const size_t f = dsv3_cpu_layout_add(&layout, threads * floats, sizeof(float));
    const size_t i = dsv3_cpu_layout_add(&layout, threads * groups, sizeof(int32_t));
    const size_t b = dsv3_cpu_layout_add(&layout, threads * groups, 1);
    if (floats_per_thread) *floats_per_thread = floats;
    if (offsets) offsets[0] = f, offsets[1] = i, offsets[2] = b;
    return layout.bytes;
}

size_t dsv3_cpu_router_forward_workspace(const Dsv3OpShape *shape, int threads) {
    return forward_workspace(shape, threads, NULL, NULL);
}

Dsv3Err dsv3_cpu_router_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, float *scores,
                                int32_t *topk_idx, float *weights, int64_t *counts,
                                const void *logits_, const float *expert_bias, int64_t N,
                                const Dsv3RouterArgs *args) {
    DSV3_CALL(dsv3_cpu_check_f32("router_forward", dtype));
    const float *logits = logits_; // (N, E)
    DSV3_CALL(dsv3_check_router_forward(scores, topk_idx, weights, counts, logits, N, args));
    const int64_t E = args->num_experts, K = args->top_k;
    const Dsv3OpShape shape = {.N = N, .E = E, .K = K};
    int64_t floats_per_thread = 0;
    size_t slices[SCRATCH_BLOCKS];
    DSV3_CALL(dsv3_cpu_check_workspace(
        ctx, "router_forward",
        forward_workspace(&shape, omp_get_max_threads(), &floats_per_thread, slices)));
    memset(counts, 0, (size_t)E * sizeof(int64_t));
    if (N == 0) return DSV3_OK;
    const int64_t per_thread = E;                              // G ≤ E group entries per thread
    float *fscratch = dsv3_cpu_workspace_at(ctx, slices[0]);   // (threads, floats)
    int32_t *iscratch = dsv3_cpu_workspace_at(ctx, slices[1]); // (threads, E)
    unsigned char *bscratch = dsv3_cpu_workspace_at(ctx, slices[2]); // (threads, E)

#pragma omp parallel if (N >= ROUTER_PARALLEL_MIN_TOKENS)
    {
        const int t = omp_get_thread_num();
        float *choice = fscratch + t * floats_per_thread;
        float *kval = choice + E;
        float *gval = kval + K;
        int32_t *gidx = iscratch + t * per_thread;
        unsigned char *kept = bscratch + t * per_thread;
#pragma omp for schedule(static)
        for (int64_t n = 0; n < N; n++)
            router_token(scores + n * E, topk_idx + n * K, weights + n * K, logits + n * E,
                         expert_bias, args, choice, gval, gidx, kval, kept);
    }
    // N·K increments: cheaper on one thread than merging per-thread histograms.
    for (int64_t i = 0; i < N * K; i++)
        counts[topk_idx[i]]++;
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_router_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                 void *dlogits_, const float *dweights, const float *scores,
                                 const int32_t *topk_idx, int64_t N, const Dsv3RouterArgs *args) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("router_backward", dtype));
    float *dlogits = dlogits_; // (N, E)
    DSV3_CALL(dsv3_cpu_check_router_backward(dlogits, dweights, scores, topk_idx, N, args));
    const int64_t E = args->num_experts, K = args->top_k;
    if (N == 0) return DSV3_OK;
    const float scale = args->route_scale;

#pragma omp parallel for schedule(static) if (N >= ROUTER_PARALLEL_MIN_TOKENS)
    for (int64_t n = 0; n < N; n++) {
        const float *s = scores + n * E;       // (E)
        const int32_t *idx = topk_idx + n * K; // (K)
        const float *dw = dweights + n * K;    // (K)
        float *dl = dlogits + n * E;           // (E)
        // weights[k] = scale · s[idx[k]] / (S + eps), S = Σ_j s[idx[j]], when route_norm; so
        // dscores[idx[k]] = scale · (dw[k] / (S + eps) − Σ_j dw[j] s[idx[j]] / (S + eps)²).
        float denom = ROUTER_NORM_EPS, dot = 0;
        for (int64_t k = 0; k < K; k++) {
            denom += s[idx[k]];
            dot += dw[k] * s[idx[k]];
        }
        const float a = args->route_norm ? scale / denom : scale;
        const float b = args->route_norm ? scale * dot / (denom * denom) : 0.0f;
        if (args->sigmoid) {
            memset(dl, 0, (size_t)E * sizeof(float));
            for (int64_t k = 0; k < K; k++) {
                const float se = s[idx[k]];
                dl[idx[k]] += (a * dw[k] - b) * se * (1.0f - se);
            }
        } else {
            // Softmax: dl = s · (ds − Σ_e ds·s), with ds nonzero at the K chosen experts only.
            float inner = 0;
            for (int64_t k = 0; k < K; k++)
                inner += (a * dw[k] - b) * s[idx[k]];
            for (int64_t e = 0; e < E; e++)
                dl[e] = -s[e] * inner;
            for (int64_t k = 0; k < K; k++)
                dl[idx[k]] += s[idx[k]] * (a * dw[k] - b);
        }
    }
    return DSV3_OK;
}
