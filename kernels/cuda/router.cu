// router: the MoE router (torchtitan's TokenChoiceTopKRouter), CUDA backend.
//
// One warp per token (several tokens per block), its E experts spread over the lanes (expert e
// on lane e mod 32) and its per-token state in the block's shared memory. The math follows the
// reference (router_reference.c) operation by operation, in the same precision:
//   forward: scores = softmax or sigmoid of the logits, computed in double and rounded to fp32;
//     choice = scores + expert_bias in fp32; with groups, each group scored by the fp32 sum of
//     its two best choices, the num_limited_groups best groups kept and the others' experts
//     set to −inf; then K times the largest choice not yet taken. Every "largest" breaks ties
//     towards the lower index, as the reference's first-met scan does. weights = the UNbiased
//     scores of the chosen experts, over their double sum + 1e-20 when route_norm, times
//     route_scale, rounded once. counts (E) = tokens per expert (integer atomics: exact).
//   backward: dscores at the chosen experts through route_norm and route_scale, then through
//     the sigmoid or the softmax, in double, rounded once into dlogits.
// The sequential sums of the reference (over k) stay sequential on lane 0 and use the _rn
// intrinsics, which nvcc never fuses into FMAs; the sums over experts (the softmax's
// normaliser and its backward's inner product) are summed by the warp in double, whose
// rounding differs from the reference's order by far less than an fp32 ulp.
//
// An expert index outside [0, E) in the backward's topk_idx is a data fault (recorded, the
// assignment skipped). The choice has no gradient.
//
// Legend: N tokens, E experts, K experts per token, G expert groups (E/G experts each), L
// groups a token may use.
#include <inttypes.h>
#include <math.h>
#include <stdint.h>

#include "kernels/checks.h"
#include "kernels/cuda/cuda_kernels.cuh"

// torchtitan's route_norm adds this to the sum of a token's weights before dividing.
static const double ROUTER_NORM_EPS = 1e-20;

enum {
    // Experts whose biased scores make up one group's score (torchtitan: the top 2 of the
    // group); a group must hold at least this many experts (the shared checks' constant).
    ROUTER_GROUP_TOP = DSV3_ROUTER_GROUP_TOP,
    ROUTER_MAX_WARPS = 8, // tokens (warps) per block
    // Shared memory a block may take without opting in: bounds the tokens per block, and E.
    ROUTER_SHARED_BYTES = 48 * 1024,
    ROUTER_SHARED_ALIGNMENT = 16, // each warp's slice starts aligned
};

// The router's settings as the kernels use them (Dsv3RouterArgs is a host pointer).
struct RouterShape {
    int64_t E, K, G, L;
    int64_t per_group; // E / G (0 when groups are off)
    int sigmoid, route_norm;
    float route_scale;
    int64_t warp_bytes; // shared memory of one warp (token)
};

// Every block's shared memory, carved into one slice per warp.
extern __shared__ double router_shared[];

// ---- warp helpers ----

// The candidate (value, index) of a lane; index −1: none.
struct RouterPick {
    float value;
    int64_t index;
};

// Whether b beats a: larger, or equal and lower index; a lane without a candidate loses.
__device__ __forceinline__ bool router_beats(RouterPick b, RouterPick a) {
    if (b.index < 0) return false;
    if (a.index < 0) return true;
    return b.value > a.value || (b.value == a.value && b.index < a.index);
}

// The best candidate of the warp (largest value, lowest index), on every lane. A tree towards
// lane 0, then lane 0's answer broadcast, so that every lane agrees even with NaNs.
__device__ RouterPick router_warp_best(RouterPick p) {
    for (int offset = CUDA_WARP / 2; offset > 0; offset /= 2) {
        RouterPick other;
        other.value = __shfl_down_sync(0xffffffffu, p.value, offset);
        other.index = __shfl_down_sync(0xffffffffu, p.index, offset);
        if (router_beats(other, p)) p = other;
    }
    p.value = __shfl_sync(0xffffffffu, p.value, 0);
    p.index = __shfl_sync(0xffffffffu, p.index, 0);
    return p;
}

// The largest value[i], i in [0, n), with taken[i] == 0 (the lowest i on ties), over the warp:
// each lane scans its own i (lane, lane + 32, …). taken[i] is only touched by i's lane.
__device__ int64_t router_warp_argmax(const float *value, const unsigned char *taken, int64_t n) {
    const int lane = threadIdx.x % CUDA_WARP;
    RouterPick mine = {0.0f, -1};
    for (int64_t i = lane; i < n; i += CUDA_WARP) {
        const RouterPick candidate = {value[i], i};
        if (!taken[i] && router_beats(candidate, mine)) mine = candidate;
    }
    return router_warp_best(mine).index;
}

// The fp32 sum of the ROUTER_GROUP_TOP largest of value (n), picked one at a time as the
// reference does (first met on ties). One thread.
__device__ float router_group_score(const float *value, int64_t n) {
    int64_t picked[ROUTER_GROUP_TOP];
    float sum = 0;
    for (int t = 0; t < ROUTER_GROUP_TOP; t++) {
        int64_t best = -1;
        for (int64_t i = 0; i < n; i++) {
            bool taken = false;
            for (int u = 0; u < t; u++)
                taken = taken || picked[u] == i;
            if (!taken && (best < 0 || value[i] > value[best])) best = i;
        }
        picked[t] = best;
        sum += value[best];
    }
    return sum;
}

// ---- forward ----

// The slices of one warp's shared memory: s, choice (E) floats, group_score (G) floats,
// taken (E) and kept (G) bytes.
struct RouterTokenScratch {
    float *s, *choice, *group_score;
    unsigned char *taken, *kept;
};

static int64_t router_forward_warp_bytes(int64_t E, int64_t G) {
    const int64_t bytes = (2 * E + G) * (int64_t)sizeof(float) + E + G;
    return (bytes + ROUTER_SHARED_ALIGNMENT - 1) / ROUTER_SHARED_ALIGNMENT *
           ROUTER_SHARED_ALIGNMENT;
}

__device__ RouterTokenScratch router_token_scratch(const RouterShape &r) {
    unsigned char *base = (unsigned char *)router_shared + (threadIdx.x / CUDA_WARP) * r.warp_bytes;
    RouterTokenScratch t;
    t.s = (float *)base;
    t.choice = t.s + r.E;
    t.group_score = t.choice + r.E;
    t.taken = (unsigned char *)(t.group_score + r.G);
    t.kept = t.taken + r.E;
    return t;
}

// s (E) = softmax or sigmoid of logits l (E), in double, rounded to fp32; also written to
// scores (E).
template <typename T>
__device__ void router_scores(float *s, float *scores, const T *l, const RouterShape &r) {
    const int lane = threadIdx.x % CUDA_WARP;
    if (r.sigmoid) {
        for (int64_t e = lane; e < r.E; e += CUDA_WARP)
            s[e] = (float)(1.0 / (1.0 + exp(-(double)cuda_load(l, e))));
    } else {
        float max = -INFINITY;
        for (int64_t e = lane; e < r.E; e += CUDA_WARP)
            max = fmaxf(max, cuda_load(l, e));
        max = cuda_warp_max(max);
        double sum = 0;
        for (int64_t e = lane; e < r.E; e += CUDA_WARP)
            sum += exp((double)cuda_load(l, e) - (double)max);
        sum = cuda_warp_sum(sum);
        for (int64_t e = lane; e < r.E; e += CUDA_WARP)
            s[e] = (float)(exp((double)cuda_load(l, e) - (double)max) / sum);
    }
    for (int64_t e = lane; e < r.E; e += CUDA_WARP)
        scores[e] = s[e];
}

// Group-limited routing: choice (E) of the experts outside the L best groups set to −inf.
__device__ void router_limit_groups(const RouterTokenScratch &t, const RouterShape &r) {
    const int lane = threadIdx.x % CUDA_WARP;
    __syncwarp(); // choice was written by every lane
    for (int64_t g = lane; g < r.G; g += CUDA_WARP) {
        t.group_score[g] = router_group_score(t.choice + g * r.per_group, r.per_group);
        t.kept[g] = 0;
    }
    __syncwarp();
    for (int64_t i = 0; i < r.L; i++) {
        const int64_t g = router_warp_argmax(t.group_score, t.kept, r.G);
        if (g % CUDA_WARP == lane) t.kept[g] = 1;
    }
    __syncwarp();
    for (int64_t e = lane; e < r.E; e += CUDA_WARP)
        if (!t.kept[e / r.per_group]) t.choice[e] = -INFINITY;
}

// The top K of choice into idx (K), the unbiased scores' weights into w (K), counts updated.
__device__ void router_choose(int32_t *idx, float *w, unsigned long long *counts,
                              const RouterTokenScratch &t, const RouterShape &r) {
    const int lane = threadIdx.x % CUDA_WARP;
    for (int64_t e = lane; e < r.E; e += CUDA_WARP)
        t.taken[e] = 0;
    __syncwarp(); // choice was written by every lane
    for (int64_t k = 0; k < r.K; k++) {
        const int64_t e = router_warp_argmax(t.choice, t.taken, r.E);
        if (e % CUDA_WARP == lane) t.taken[e] = 1;
        if (lane == 0) {
            idx[k] = (int32_t)e;
            atomicAdd(&counts[e], 1ull);
        }
    }
    __syncwarp();
    if (lane != 0) return;
    double sum = 0; // Σ_k s[idx[k]], in k order
    for (int64_t k = 0; k < r.K; k++)
        sum = __dadd_rn(sum, (double)t.s[idx[k]]);
    for (int64_t k = 0; k < r.K; k++) {
        double weight = t.s[idx[k]];
        if (r.route_norm) weight = __ddiv_rn(weight, __dadd_rn(sum, ROUTER_NORM_EPS));
        w[k] = __double2float_rn(__dmul_rn(weight, (double)r.route_scale));
    }
}

// Warp w of the block routes tokens blockIdx.x · warps + w, then every gridDim.x · warps.
// scores (N, E), topk_idx (N, K), weights (N, K), counts (E, zeroed), logits (N, E), bias (E)
// or NULL.
template <typename T>
__global__ void router_forward_kernel(float *scores, int32_t *topk_idx, float *weights,
                                      unsigned long long *counts, const T *logits,
                                      const float *bias, int64_t N, RouterShape r) {
    const int lane = threadIdx.x % CUDA_WARP;
    const int64_t warps = blockDim.x / CUDA_WARP;
    const RouterTokenScratch t = router_token_scratch(r);
    for (int64_t n = blockIdx.x * warps + threadIdx.x / CUDA_WARP; n < N; n += gridDim.x * warps) {
        router_scores(t.s, scores + n * r.E, logits + n * r.E, r);
        for (int64_t e = lane; e < r.E; e += CUDA_WARP)
            t.choice[e] = bias != NULL ? t.s[e] + bias[e] : t.s[e];
        if (r.G > 0) router_limit_groups(t, r);
        router_choose(topk_idx + n * r.K, weights + n * r.K, counts, t, r);
        __syncwarp(); // lane 0 read the token's scratch: the next token may overwrite it
    }
}

// ---- launch shape (the CUDA router's own limit on num_experts) ----

// The settings for the kernels, with the shared memory of one warp; *warps = tokens per block,
// as many as ROUTER_SHARED_BYTES holds (at most ROUTER_MAX_WARPS).
static Dsv3Err router_shape(RouterShape *r, int *warps, const Dsv3RouterArgs *args,
                            int64_t warp_bytes, const char *op) {
    r->E = args->num_experts;
    r->K = args->top_k;
    r->G = args->num_groups;
    r->L = args->num_limited_groups;
    r->per_group = r->G > 0 ? r->E / r->G : 0;
    r->sigmoid = args->sigmoid;
    r->route_norm = args->route_norm;
    r->route_scale = args->route_scale;
    r->warp_bytes = warp_bytes;
    DSV3_CHECK(warp_bytes <= ROUTER_SHARED_BYTES, DSV3_ERR_USAGE,
               "%s: num_experts = %" PRId64 " needs %" PRId64
               " bytes of shared memory per token, more than the %d of a block of the CUDA router",
               op, r->E, warp_bytes, (int)ROUTER_SHARED_BYTES);
    const int64_t fit = ROUTER_SHARED_BYTES / warp_bytes;
    *warps = fit < ROUTER_MAX_WARPS ? (int)fit : ROUTER_MAX_WARPS;
    return DSV3_OK;
}

// Blocks of `warps` tokens each for N tokens (grid-stride beyond CUDA_MAX_BLOCKS).
static unsigned router_blocks(int64_t N, int warps) { return cuda_blocks(N, warps); }

// ---- the ops ----

template <typename T>
static Dsv3Err router_forward(const Dsv3KernelContext *ctx, float *scores, int32_t *topk_idx,
                              float *weights, int64_t *counts, const void *logits,
                              const float *expert_bias, int64_t N, const RouterShape &r,
                              int warps) {
    const size_t shared = (size_t)(warps * r.warp_bytes);
    router_forward_kernel<T>
        <<<router_blocks(N, warps), warps * CUDA_WARP, shared, cuda_stream(ctx)>>>(
            scores, topk_idx, weights, (unsigned long long *)counts, (const T *)logits, expert_bias,
            N, r);
    CUDA_LAUNCHED();
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_router_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                            float *scores, int32_t *topk_idx, float *weights,
                                            int64_t *counts, const void *logits,
                                            const float *expert_bias, int64_t N,
                                            const Dsv3RouterArgs *args) {
    DSV3_CALL(dsv3_cuda_check_dtype(dtype, "router_forward"));
    DSV3_CALL(dsv3_check_router_forward(scores, topk_idx, weights, counts, logits, N, args));
    RouterShape r;
    int warps = 0;
    DSV3_CALL(router_shape(&r, &warps, args,
                           router_forward_warp_bytes(args->num_experts, args->num_groups),
                           "router_forward"));
    // counts (E) written even without tokens.
    CUDA_CALL(cudaMemsetAsync(counts, 0, (size_t)r.E * sizeof(int64_t), cuda_stream(ctx)));
    if (N == 0) return DSV3_OK;
    return dtype == DSV3_TENSOR_BF16
               ? router_forward<__nv_bfloat16>(ctx, scores, topk_idx, weights, counts, logits,
                                               expert_bias, N, r, warps)
               : router_forward<float>(ctx, scores, topk_idx, weights, counts, logits, expert_bias,
                                       N, r, warps);
}

// ---- backward ----

// dscores (E) of one token, in double, from dweights dw (K) at the chosen experts idx (K): the
// reference's sequential sums over k, on lane 0. Indices outside [0, E) are faults (position
// `first`, the token's first assignment, plus k) and are skipped.
__device__ void router_dscores(double *ds, const float *s, const int32_t *idx, const float *dw,
                               int64_t first, CudaFault *fault, const RouterShape &r) {
    const int lane = threadIdx.x % CUDA_WARP;
    for (int64_t e = lane; e < r.E; e += CUDA_WARP)
        ds[e] = 0;
    __syncwarp();
    if (lane == 0) {
        // weights[k] = scale · s[idx[k]] / (S + eps), S = Σ_j s[idx[j]], when route_norm.
        double S = 0, dot = 0;
        for (int64_t k = 0; k < r.K; k++) {
            const int64_t e = idx[k];
            if (e < 0 || e >= r.E) {
                cuda_fault(fault, DSV3_OP_ROUTER_BACKWARD, first + k, e);
                continue;
            }
            S = __dadd_rn(S, (double)s[e]);
            dot = __dadd_rn(dot, __dmul_rn((double)dw[k], (double)s[e]));
        }
        const double denom = __dadd_rn(S, ROUTER_NORM_EPS);
        for (int64_t k = 0; k < r.K; k++) {
            const int64_t e = idx[k];
            if (e < 0 || e >= r.E) continue;
            const double g = r.route_norm ? __dsub_rn(__ddiv_rn((double)dw[k], denom),
                                                      __ddiv_rn(dot, __dmul_rn(denom, denom)))
                                          : (double)dw[k];
            ds[e] = __dadd_rn(ds[e], __dmul_rn(g, (double)r.route_scale));
        }
    }
    __syncwarp();
}

// Warp w of the block: tokens as in the forward. dlogits (N, E), dweights (N, K), scores
// (N, E), topk_idx (N, K).
template <typename T>
__global__ void router_backward_kernel(T *dlogits, const float *dweights, const float *scores,
                                       const int32_t *topk_idx, int64_t N, CudaFault *fault,
                                       RouterShape r) {
    const int lane = threadIdx.x % CUDA_WARP;
    const int64_t warps = blockDim.x / CUDA_WARP;
    double *ds =
        (double *)((unsigned char *)router_shared + (threadIdx.x / CUDA_WARP) * r.warp_bytes);
    for (int64_t n = blockIdx.x * warps + threadIdx.x / CUDA_WARP; n < N; n += gridDim.x * warps) {
        const float *s = scores + n * r.E; // (E)
        T *dl = dlogits + n * r.E;         // (E)
        router_dscores(ds, s, topk_idx + n * r.K, dweights + n * r.K, n * r.K, fault, r);
        if (r.sigmoid) {
            for (int64_t e = lane; e < r.E; e += CUDA_WARP) {
                const double se = s[e];
                cuda_store(dl, e, __double2float_rn(__dmul_rn(__dmul_rn(ds[e], se), 1.0 - se)));
            }
        } else {
            double inner = 0; // Σ_e dscores · s
            for (int64_t e = lane; e < r.E; e += CUDA_WARP)
                inner = __dadd_rn(inner, __dmul_rn(ds[e], (double)s[e]));
            inner = cuda_warp_sum(inner);
            for (int64_t e = lane; e < r.E; e += CUDA_WARP)
                cuda_store(dl, e, __double2float_rn(__dmul_rn((double)s[e], ds[e] - inner)));
        }
        __syncwarp(); // every lane read ds: the next token may overwrite it
    }
}

template <typename T>
static Dsv3Err router_backward(const Dsv3KernelContext *ctx, void *dlogits, const float *dweights,
                               const float *scores, const int32_t *topk_idx, int64_t N,
                               const RouterShape &r, int warps) {
    const size_t shared = (size_t)(warps * r.warp_bytes);
    router_backward_kernel<T>
        <<<router_blocks(N, warps), warps * CUDA_WARP, shared, cuda_stream(ctx)>>>(
            (T *)dlogits, dweights, scores, topk_idx, N, cuda_fault_record(ctx), r);
    CUDA_LAUNCHED();
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_router_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                             void *dlogits, const float *dweights,
                                             const float *scores, const int32_t *topk_idx,
                                             int64_t N, const Dsv3RouterArgs *args) {
    DSV3_CALL(dsv3_cuda_check_dtype(dtype, "router_backward"));
    DSV3_CALL(dsv3_check_router_backward(dlogits, dweights, scores, topk_idx, N, args));
    if (N == 0) return DSV3_OK;
    RouterShape r;
    int warps = 0;
    const int64_t warp_bytes = args->num_experts * (int64_t)sizeof(double); // dscores (E)
    DSV3_CALL(router_shape(&r, &warps, args, warp_bytes, "router_backward"));
    return dtype == DSV3_TENSOR_BF16
               ? router_backward<__nv_bfloat16>(ctx, dlogits, dweights, scores, topk_idx, N, r,
                                                warps)
               : router_backward<float>(ctx, dlogits, dweights, scores, topk_idx, N, r, warps);
}
