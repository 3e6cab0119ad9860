// router.c: the MoE router (torchtitan's TokenChoiceTopKRouter), fast CPU version.
//
// Tokens are independent, so OpenMP splits them between threads. The top-k of a token keeps
// a short list sorted by value (descending) into which each candidate is inserted, one pass
// over the E experts instead of K; candidates come in increasing index order and only a
// strictly larger value moves past an equal one, so ties go to the lower index, as in the
// reference version. Group-limited routing picks groups the same way and then scans only the
// experts of the kept groups. The backward needs no scratch: the scores' gradient is nonzero
// at the K chosen experts only.
//
// Legend: N tokens, E experts, K experts per token, G expert groups (E/G experts each), L
// groups a token may use.
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <omp.h>

#include "common/core/alloc.h"
#include "kernels/cpu/checks.h"
#include "kernels/kernels.h"

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

Dsv3Err dsv3_router_forward(float *scores, int32_t *topk_idx, float *weights, int64_t *counts,
                            const float *logits, const float *expert_bias, int64_t N,
                            const Dsv3RouterArgs *args) {
    DSV3_CALL(dsv3_cpu_check_router_forward(scores, topk_idx, weights, counts, logits, N, args));
    const int64_t E = args->num_experts, K = args->top_k, G = args->num_groups;
    memset(counts, 0, (size_t)E * sizeof(int64_t));
    if (N == 0) return DSV3_OK;

    // Per-thread scratch: choice (E), kval (K), gval (G) floats; gidx (G) int32; kept (G) bytes.
    const int threads = omp_get_max_threads();
    const int64_t Gs = G > 0 ? G : 1;
    const int64_t floats_per_thread = E + K + Gs, ints_per_thread = Gs, bytes_per_thread = Gs;
    Dsv3Err err = DSV3_OK;
    float *fscratch = NULL;
    int32_t *iscratch = NULL;
    unsigned char *bscratch = NULL;
    DSV3_CALL_GOTO(err, done,
                   dsv3_alloc((void **)&fscratch,
                              (size_t)(threads * floats_per_thread) * sizeof(float),
                              "router scratch"));
    DSV3_CALL_GOTO(err, done,
                   dsv3_alloc((void **)&iscratch,
                              (size_t)(threads * ints_per_thread) * sizeof(int32_t),
                              "router group scratch"));
    DSV3_CALL_GOTO(
        err, done,
        dsv3_alloc((void **)&bscratch, (size_t)(threads * bytes_per_thread), "router group flags"));

#pragma omp parallel if (N >= ROUTER_PARALLEL_MIN_TOKENS)
    {
        const int t = omp_get_thread_num();
        float *choice = fscratch + t * floats_per_thread;
        float *kval = choice + E;
        float *gval = kval + K;
        int32_t *gidx = iscratch + t * ints_per_thread;
        unsigned char *kept = bscratch + t * bytes_per_thread;
#pragma omp for schedule(static)
        for (int64_t n = 0; n < N; n++)
            router_token(scores + n * E, topk_idx + n * K, weights + n * K, logits + n * E,
                         expert_bias, args, choice, gval, gidx, kval, kept);
    }
    // N·K increments: cheaper on one thread than merging per-thread histograms.
    for (int64_t i = 0; i < N * K; i++)
        counts[topk_idx[i]]++;
done:
    dsv3_free(fscratch);
    dsv3_free(iscratch);
    dsv3_free(bscratch);
    return err;
}

Dsv3Err dsv3_router_backward(float *dlogits, const float *dweights, const float *scores,
                             const int32_t *topk_idx, int64_t N, const Dsv3RouterArgs *args) {
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
