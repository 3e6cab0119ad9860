// router_reference.c: the MoE router (torchtitan's TokenChoiceTopKRouter), written for clarity.
//
// Forward, per token: scores = softmax or sigmoid of the logits; the choice looks at scores +
// expert_bias, limited (when groups are on) to the best groups by the sum of their two best
// biased scores; the top K of the choice are picked one at a time, each the largest not yet
// picked. Ties go to the lower index (the first one met). The weights are the UNbiased scores
// of the chosen experts, renormalised when route_norm, times route_scale.
// Backward: from dweights through route_norm and the gather into dscores, then through
// softmax / sigmoid into dlogits. The choice itself has no gradient.
//
// Legend: N tokens, E experts, K experts per token, G expert groups (E/G experts each), L
// groups a token may use.
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

// torchtitan's route_norm adds this to the sum of a token's weights before dividing.
static const double ROUTER_NORM_EPS = 1e-20;

// Index of the largest value[i] with i in [0, n) and taken[i] == 0 (the lowest on ties), or −1.
static int64_t argmax_untaken(const float *value, const unsigned char *taken, int64_t n) {
    int64_t best = -1;
    for (int64_t i = 0; i < n; i++)
        if (!taken[i] && (best < 0 || value[i] > value[best])) best = i;
    return best;
}

// Workspace of the forward: choice (E) floats, taken (E) bytes, group_score (G) floats. The
// workspace query's shape has no G; groups divide the E experts, so G ≤ E. offsets
// (SCRATCH_SLICES, when not NULL) get the slices' offsets.
enum { SCRATCH_SLICES = 3 };

static size_t forward_workspace(const Dsv3OpShape *shape, size_t *offsets) {
    Dsv3CpuLayout layout = {0};
    const size_t choice = dsv3_cpu_layout_add(&layout, shape->E, sizeof(float));
    const size_t taken = dsv3_cpu_layout_add(&layout, shape->E, 1);
    const size_t group_score = dsv3_cpu_layout_add(&layout, shape->E, sizeof(float)); // G ≤ E
    if (offsets) offsets[0] = choice, offsets[1] = taken, offsets[2] = group_score;
    return layout.bytes;
}

size_t dsv3_cpu_reference_router_forward_workspace(const Dsv3OpShape *shape) {
    return forward_workspace(shape, NULL);
}

// Workspace of the backward: dscores (E) doubles.
size_t dsv3_cpu_reference_router_backward_workspace(const Dsv3OpShape *shape) {
    Dsv3CpuLayout layout = {0};
    dsv3_cpu_layout_add(&layout, shape->E, sizeof(double));
    return layout.bytes;
}

Dsv3Err dsv3_cpu_reference_router_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                          float *scores, int32_t *topk_idx, float *weights,
                                          int64_t *counts, const void *logits_,
                                          const float *expert_bias, int64_t N,
                                          const Dsv3RouterArgs *args) {
    DSV3_CALL(dsv3_cpu_check_f32("router_forward", dtype));
    const float *logits = logits_; // (N, E)
    DSV3_CALL(dsv3_check_router_forward(scores, topk_idx, weights, counts, logits, N, args));
    const int64_t E = args->num_experts, K = args->top_k, G = args->num_groups;
    const Dsv3OpShape shape = {.N = N, .E = E, .K = K};
    size_t slices[SCRATCH_SLICES];
    DSV3_CALL(dsv3_cpu_check_workspace(ctx, "router_forward", forward_workspace(&shape, slices)));
    for (int64_t e = 0; e < E; e++)
        counts[e] = 0;
    if (N == 0) return DSV3_OK;
    // choice (E): biased scores of one token, −inf outside its groups; taken (E): experts (or
    // groups) already picked; group_score (G).
    float *choice = dsv3_cpu_workspace_at(ctx, slices[0]);
    unsigned char *taken = dsv3_cpu_workspace_at(ctx, slices[1]);
    float *group_score = dsv3_cpu_workspace_at(ctx, slices[2]);

    for (int64_t n = 0; n < N; n++) {
        const float *l = logits + n * E; // (E)
        float *s = scores + n * E;       // (E)
        if (args->sigmoid) {
            for (int64_t e = 0; e < E; e++)
                s[e] = (float)(1.0 / (1.0 + exp(-(double)l[e])));
        } else {
            double max = l[0], sum = 0;
            for (int64_t e = 1; e < E; e++)
                max = l[e] > max ? l[e] : max;
            for (int64_t e = 0; e < E; e++)
                sum += exp((double)l[e] - max);
            for (int64_t e = 0; e < E; e++)
                s[e] = (float)(exp((double)l[e] - max) / sum);
        }
        for (int64_t e = 0; e < E; e++)
            choice[e] = s[e] + (expert_bias ? expert_bias[e] : 0.0f);

        if (G > 0) {
            const int64_t per_group = E / G;
            for (int64_t g = 0; g < G; g++) {
                memset(taken, 0, (size_t)per_group);
                float sum = 0;
                for (int t = 0; t < DSV3_ROUTER_GROUP_TOP; t++) {
                    int64_t i = argmax_untaken(choice + g * per_group, taken, per_group);
                    taken[i] = 1;
                    sum += choice[g * per_group + i];
                }
                group_score[g] = sum;
            }
            memset(taken, 0, (size_t)G);
            for (int64_t t = 0; t < args->num_limited_groups; t++)
                taken[argmax_untaken(group_score, taken, G)] = 1; // taken = kept group
            for (int64_t g = 0; g < G; g++)
                if (!taken[g])
                    for (int64_t i = 0; i < per_group; i++)
                        choice[g * per_group + i] = -INFINITY;
        }

        memset(taken, 0, (size_t)E);
        double sum = 0;
        for (int64_t k = 0; k < K; k++) {
            int64_t e = argmax_untaken(choice, taken, E);
            taken[e] = 1;
            topk_idx[n * K + k] = (int32_t)e;
            weights[n * K + k] = s[e];
            sum += s[e];
            counts[e]++;
        }
        for (int64_t k = 0; k < K; k++) {
            double w = weights[n * K + k];
            if (args->route_norm) w /= sum + ROUTER_NORM_EPS;
            weights[n * K + k] = (float)(w * args->route_scale);
        }
    }
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_reference_router_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                           void *dlogits_, const float *dweights,
                                           const float *scores, const int32_t *topk_idx, int64_t N,
                                           const Dsv3RouterArgs *args) {
    DSV3_CALL(dsv3_cpu_check_f32("router_backward", dtype));
    float *dlogits = dlogits_; // (N, E)
    DSV3_CALL(dsv3_cpu_check_router_backward(dlogits, dweights, scores, topk_idx, N, args));
    const int64_t E = args->num_experts, K = args->top_k;
    const Dsv3OpShape shape = {.N = N, .E = E, .K = K};
    DSV3_CALL(dsv3_cpu_check_workspace(ctx, "router_backward",
                                       dsv3_cpu_reference_router_backward_workspace(&shape)));
    if (N == 0) return DSV3_OK;
    double *dscores = ctx->workspace; // (E) gradient of one token's scores

    for (int64_t n = 0; n < N; n++) {
        const float *s = scores + n * E;       // (E)
        const int32_t *idx = topk_idx + n * K; // (K)
        const float *dw = dweights + n * K;    // (K)
        // weights[k] = scale · s[idx[k]] / (S + eps) with S = Σ_j s[idx[j]] when route_norm.
        double S = 0, dot = 0;
        for (int64_t k = 0; k < K; k++) {
            S += s[idx[k]];
            dot += (double)dw[k] * s[idx[k]];
        }
        const double denom = S + ROUTER_NORM_EPS;
        for (int64_t e = 0; e < E; e++)
            dscores[e] = 0;
        for (int64_t k = 0; k < K; k++) {
            double g = args->route_norm ? dw[k] / denom - dot / (denom * denom) : dw[k];
            dscores[idx[k]] += g * args->route_scale;
        }
        float *dl = dlogits + n * E; // (E)
        if (args->sigmoid) {
            for (int64_t e = 0; e < E; e++)
                dl[e] = (float)(dscores[e] * s[e] * (1.0 - s[e]));
        } else {
            double inner = 0; // Σ_e dscores · s
            for (int64_t e = 0; e < E; e++)
                inner += dscores[e] * s[e];
            for (int64_t e = 0; e < E; e++)
                dl[e] = (float)(s[e] * (dscores[e] - inner));
        }
    }
    return DSV3_OK;
}
