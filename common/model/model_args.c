// model_args: the named DeepSeek-V3 flavors, their validation, parameter counts and FLOPs.
//
// Shape legend (weights as torch stores them, (out, in)):
//   V vocab_size        D dim              I inter_dim (dense FFN)   F moe_inter_dim
//   H n_heads           E num_experts      S num_shared_experts      Rq q_lora_rank
//   Rkv kv_lora_rank    Dn qk_nope_head_dim   Dr qk_rope_head_dim    Dv v_head_dim
//
// Per layer (torchtitan's TransformerBlock):
//   attention_norm (D), ffn_norm (D)
//   attention: wq (H·(Dn+Dr), D)                          when Rq == 0
//              wq_a (Rq, D), q_norm (Rq), wq_b (H·(Dn+Dr), Rq)   when Rq > 0
//              wkv_a (Rkv+Dr, D), kv_norm (Rkv), wkv_b (H·(Dn+Dv), Rkv), wo (D, H·Dv)
//   dense layer (layer < n_dense_layers): feed_forward w1 (I, D), w2 (D, I), w3 (I, D)
//   MoE layer:  moe.router.gate (E, D)
//               moe.experts w1 (E, F, D), w2 (E, D, F), w3 (E, F, D)
//               moe.shared_experts w1 (S·F, D), w2 (D, S·F), w3 (S·F, D)   absent when S == 0
// Model: tok_embeddings (V, D), the layers, norm (D), output (V, D). No linear has a bias.
// moe.expert_bias and moe.tokens_per_expert are buffers and are not counted.
#include "common/model/model_args.h"

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

// torchtitan's defaults (DeepSeekV3ModelArgs, MoEArgs) for what a flavor leaves unset.
#define MODEL_DEFAULT_NORM_EPS 1e-5
#define MODEL_DEFAULT_ORIGINAL_SEQ_LEN 4096
#define MODEL_DEFAULT_ROPE_THETA 10000.0
#define MODEL_DEFAULT_ROPE_FACTOR 40.0
#define MODEL_DEFAULT_BETA_FAST 32.0
#define MODEL_DEFAULT_BETA_SLOW 1.0
#define MODEL_DEFAULT_MSCALE 1.0
#define MODEL_DEFAULT_ROUTE_SCALE 1.0
#define MODEL_DEFAULT_LOAD_BALANCE_COEFF 1e-3
// The small flavors (debugmodel, 16B) override the YaRN mscale.
#define MODEL_SMALL_FLAVOR_MSCALE 0.70

// Each layer has two RMSNorm weights of size D: attention_norm and ffn_norm.
#define MODEL_NORMS_PER_LAYER 2
// A SwiGLU FFN has three matrices of the same size: w1, w2, w3.
#define MODEL_SWIGLU_MATRICES 3
// Forward (1 matmul) + backward (2 matmuls), 2 FLOPs per multiply-add: 6 FLOPs per parameter
// and token, as torchtitan counts them.
#define MODEL_TRAIN_FLOPS_PER_PARAM 6
// Group-limited routing ranks each group by the sum of its top-2 expert scores, so a group
// needs at least this many experts.
#define MODEL_MIN_EXPERTS_PER_GROUP 2
// Largest total parameter count accepted. 6 × this still fits in an int64_t with room for the
// attention term of the FLOPs, so no count or FLOP figure of a valid model overflows.
#define MODEL_MAX_PARAMS (INT64_C(1) << 53)

// ---------------------------------------------------------------------------------------------
// Flavors

// DeepSeekV3ModelArgs() and MoEArgs() with no arguments.
static void flavor_defaults(Dsv3ModelArgs *a) {
    *a = (Dsv3ModelArgs){
        .vocab_size = 102400,
        .dim = 2048,
        .inter_dim = 10944,
        .moe_inter_dim = 1408,
        .n_layers = 27,
        .n_dense_layers = 1,
        .n_heads = 16,
        .norm_eps = MODEL_DEFAULT_NORM_EPS,
        .num_experts = 8,
        .num_shared_experts = 1,
        .top_k = 1,
        .score_func = DSV3_SCORE_SIGMOID,
        .route_norm = 0,
        .route_scale = MODEL_DEFAULT_ROUTE_SCALE,
        .num_expert_groups = 0,
        .num_limited_groups = 0,
        .load_balance_coeff = MODEL_DEFAULT_LOAD_BALANCE_COEFF,
        .q_lora_rank = 0,
        .kv_lora_rank = 512,
        .qk_nope_head_dim = 128,
        .qk_rope_head_dim = 64,
        .v_head_dim = 128,
        .attn_mask_type = DSV3_MASK_CAUSAL,
        .original_seq_len = MODEL_DEFAULT_ORIGINAL_SEQ_LEN,
        .rope_theta = MODEL_DEFAULT_ROPE_THETA,
        .rope_factor = MODEL_DEFAULT_ROPE_FACTOR,
        .beta_fast = MODEL_DEFAULT_BETA_FAST,
        .beta_slow = MODEL_DEFAULT_BETA_SLOW,
        .mscale = MODEL_DEFAULT_MSCALE,
    };
}

// The attention shape every flavor shares (and the dataclass default).
static void flavor_mla(Dsv3ModelArgs *a, int64_t q_lora_rank) {
    a->q_lora_rank = q_lora_rank;
    a->kv_lora_rank = 512;
    a->qk_nope_head_dim = 128;
    a->qk_rope_head_dim = 64;
    a->v_head_dim = 128;
}

static void flavor_debugmodel(Dsv3ModelArgs *a) {
    flavor_defaults(a);
    a->vocab_size = 2048;
    a->dim = 256;
    a->inter_dim = 1024;
    a->moe_inter_dim = 256;
    a->n_layers = 6;
    a->n_dense_layers = 1;
    a->n_heads = 16;
    a->num_experts = 8;
    a->num_shared_experts = 2;
    a->top_k = 3;
    a->score_func = DSV3_SCORE_SOFTMAX;
    a->route_norm = 0;
    flavor_mla(a, 0);
    a->mscale = MODEL_SMALL_FLAVOR_MSCALE;
    a->attn_mask_type = DSV3_MASK_CAUSAL;
}

static void flavor_16b(Dsv3ModelArgs *a) {
    flavor_defaults(a);
    a->vocab_size = 102400;
    a->dim = 2048;
    a->inter_dim = 10944;
    a->moe_inter_dim = 1408;
    a->n_layers = 27;
    a->n_dense_layers = 1;
    a->n_heads = 16;
    a->num_experts = 64;
    a->num_shared_experts = 2;
    a->top_k = 6;
    a->score_func = DSV3_SCORE_SOFTMAX;
    a->route_norm = 0;
    flavor_mla(a, 0);
    a->mscale = MODEL_SMALL_FLAVOR_MSCALE;
    a->attn_mask_type = DSV3_MASK_BLOCK_CAUSAL;
}

static void flavor_236b(Dsv3ModelArgs *a) {
    flavor_defaults(a);
    a->vocab_size = 102400;
    a->dim = 5120;
    a->inter_dim = 12288;
    a->moe_inter_dim = 1536;
    a->n_layers = 60;
    a->n_dense_layers = 1;
    a->n_heads = 128;
    a->num_experts = 160;
    a->num_shared_experts = 2;
    a->top_k = 6;
    a->num_expert_groups = 8;
    a->num_limited_groups = 3;
    a->score_func = DSV3_SCORE_SOFTMAX;
    a->route_norm = 0;
    a->route_scale = 16.0;
    flavor_mla(a, 1536);
    a->attn_mask_type = DSV3_MASK_BLOCK_CAUSAL;
}

static void flavor_671b(Dsv3ModelArgs *a) {
    flavor_defaults(a);
    a->vocab_size = 129280;
    a->dim = 7168;
    a->inter_dim = 18432;
    a->moe_inter_dim = 2048;
    a->n_layers = 61;
    a->n_dense_layers = 3;
    a->n_heads = 128;
    a->num_experts = 256;
    a->num_shared_experts = 1;
    a->top_k = 8;
    a->num_expert_groups = 8;
    a->num_limited_groups = 4;
    a->score_func = DSV3_SCORE_SIGMOID;
    a->route_norm = 1;
    a->route_scale = 2.5;
    flavor_mla(a, 1536);
    a->attn_mask_type = DSV3_MASK_BLOCK_CAUSAL;
}

// One list drives both the public names and the lookup, so they cannot drift apart.
#define MODEL_FLAVORS(X)                                                                           \
    X("debugmodel", flavor_debugmodel)                                                             \
    X("16B", flavor_16b)                                                                           \
    X("236B", flavor_236b)                                                                         \
    X("671B", flavor_671b)

#define MODEL_FLAVOR_NAME(name, fill) name,
const char *const dsv3_model_flavor_names[] = {MODEL_FLAVORS(MODEL_FLAVOR_NAME) NULL};
#undef MODEL_FLAVOR_NAME

typedef struct {
    const char *name;
    void (*fill)(Dsv3ModelArgs *);
} ModelFlavor;

#define MODEL_FLAVOR_ENTRY(name, fill) {name, fill},
static const ModelFlavor model_flavors[] = {MODEL_FLAVORS(MODEL_FLAVOR_ENTRY)};
#undef MODEL_FLAVOR_ENTRY

enum { MODEL_FLAVOR_COUNT = sizeof model_flavors / sizeof model_flavors[0] };
// Room for "name, " per flavor in the error message.
enum { MODEL_FLAVOR_LIST_CAPACITY = 256 };

Dsv3Err dsv3_model_args_flavor(const char *flavor, Dsv3ModelArgs *out) {
    DSV3_CHECK(out != NULL, DSV3_ERR_USAGE, "dsv3_model_args_flavor needs an output struct");
    DSV3_CHECK(flavor != NULL, DSV3_ERR_CONFIG,
               "model.flavor is not set; set it to one of the known flavors");
    for (size_t i = 0; i < MODEL_FLAVOR_COUNT; i++) {
        if (strcmp(flavor, model_flavors[i].name) == 0) {
            model_flavors[i].fill(out);
            return DSV3_OK;
        }
    }
    char known[MODEL_FLAVOR_LIST_CAPACITY] = "";
    size_t used = 0;
    for (size_t i = 0; i < MODEL_FLAVOR_COUNT && used < sizeof known; i++) {
        int n = snprintf(known + used, sizeof known - used, "%s%s", i ? ", " : "",
                         model_flavors[i].name);
        if (n < 0) break;
        used += (size_t)n;
    }
    DSV3_RAISE(DSV3_ERR_CONFIG, "model.flavor = '%s' is not a known flavor; expected one of: %s",
               flavor, known);
}

// ---------------------------------------------------------------------------------------------
// Counting. All arithmetic saturates at INT64_MAX instead of overflowing, so that validation
// can count an absurd model and reject it without undefined behaviour. A negative operand can
// only come from arguments that validation rejects; it counts as 0.

static int64_t count_mul(int64_t a, int64_t b) {
    if (a <= 0 || b <= 0) return 0;
    if (a > INT64_MAX / b) return INT64_MAX;
    return a * b;
}

static int64_t count_add(int64_t a, int64_t b) {
    if (a < 0) a = 0;
    if (b < 0) b = 0;
    if (a > INT64_MAX - b) return INT64_MAX;
    return a + b;
}

static int64_t count_mul3(int64_t a, int64_t b, int64_t c) { return count_mul(count_mul(a, b), c); }

// Multi-head latent attention of one layer, without the surrounding norms.
static int64_t count_attention(const Dsv3ModelArgs *a) {
    int64_t qk_head = count_add(a->qk_nope_head_dim, a->qk_rope_head_dim);
    int64_t q_out = count_mul(a->n_heads, qk_head); // H·(Dn+Dr)
    int64_t n = 0;
    if (a->q_lora_rank == 0) {
        n = count_mul(a->dim, q_out); // wq
    } else {
        n = count_mul(a->dim, a->q_lora_rank);              // wq_a
        n = count_add(n, a->q_lora_rank);                   // q_norm
        n = count_add(n, count_mul(a->q_lora_rank, q_out)); // wq_b
    }
    n = count_add(n, count_mul(a->dim, count_add(a->kv_lora_rank, a->qk_rope_head_dim))); // wkv_a
    n = count_add(n, a->kv_lora_rank);                                                    // kv_norm
    int64_t kv_out = count_mul(a->n_heads, count_add(a->qk_nope_head_dim, a->v_head_dim));
    n = count_add(n, count_mul(a->kv_lora_rank, kv_out));            // wkv_b
    n = count_add(n, count_mul3(a->n_heads, a->v_head_dim, a->dim)); // wo
    return n;
}

// What every layer has, dense or MoE: attention_norm, ffn_norm and the attention.
static int64_t count_layer_common(const Dsv3ModelArgs *a) {
    return count_add(count_mul(MODEL_NORMS_PER_LAYER, a->dim), count_attention(a));
}

// A SwiGLU FFN D → hidden → D.
static int64_t count_swiglu(int64_t dim, int64_t hidden) {
    return count_mul3(MODEL_SWIGLU_MATRICES, dim, hidden);
}

static int64_t count_router(const Dsv3ModelArgs *a) { return count_mul(a->num_experts, a->dim); }

static int64_t count_shared_experts(const Dsv3ModelArgs *a) {
    return count_swiglu(a->dim, count_mul(a->moe_inter_dim, a->num_shared_experts));
}

static int64_t count_routed_experts(const Dsv3ModelArgs *a) {
    return count_mul(a->num_experts, count_swiglu(a->dim, a->moe_inter_dim));
}

static int64_t count_moe_layers(const Dsv3ModelArgs *a) {
    if (a->n_dense_layers < 0 || a->n_dense_layers >= a->n_layers) return 0;
    return a->n_layers - a->n_dense_layers;
}

Dsv3LayerParams dsv3_model_layer_params(const Dsv3ModelArgs *args, int64_t layer) {
    Dsv3LayerParams p = {0, 0};
    if (layer < 0 || layer >= args->n_layers) return p; // no such layer: nothing to hold
    p.dense = count_layer_common(args);
    if (layer < args->n_dense_layers) {
        p.dense = count_add(p.dense, count_swiglu(args->dim, args->inter_dim));
    } else {
        p.dense = count_add(p.dense, count_router(args));
        p.dense = count_add(p.dense, count_shared_experts(args));
        p.routed = count_routed_experts(args);
    }
    return p;
}

int64_t dsv3_model_embedding_params(const Dsv3ModelArgs *args) {
    return count_mul(args->vocab_size, args->dim);
}

int64_t dsv3_model_head_params(const Dsv3ModelArgs *args) {
    return count_add(args->dim, count_mul(args->vocab_size, args->dim)); // norm + output
}

void dsv3_model_param_counts(const Dsv3ModelArgs *args, Dsv3ParamCounts *out) {
    int64_t moe_layers = count_moe_layers(args);
    int64_t dense_ffn = count_swiglu(args->dim, args->inter_dim);
    int64_t layer_common = count_layer_common(args);

    *out = (Dsv3ParamCounts){0};
    out->embedding = dsv3_model_embedding_params(args);
    out->routed_experts = count_mul(moe_layers, count_routed_experts(args));
    out->shared_experts = count_mul(moe_layers, count_shared_experts(args));
    out->router = count_mul(moe_layers, count_router(args));

    int64_t total = out->embedding;
    total = count_add(total, count_mul(args->n_layers, layer_common));
    total = count_add(total, count_mul(args->n_dense_layers, dense_ffn));
    total = count_add(total, out->routed_experts);
    total = count_add(total, out->shared_experts);
    total = count_add(total, out->router);
    total = count_add(total, dsv3_model_head_params(args));
    out->total = total;

    // torchtitan takes routed × top_k // num_experts over the whole model. The routed count is
    // moe_layers × 3 × E × F × D, a multiple of E, so (routed / E) × top_k is the same number
    // exactly and cannot overflow where routed × top_k could.
    int64_t routed_active =
        args->num_experts > 0 ? count_mul(out->routed_experts / args->num_experts, args->top_k) : 0;
    out->active = count_add(total - out->routed_experts, routed_active);
}

int64_t dsv3_model_flops_per_token(const Dsv3ModelArgs *args, int64_t seq_len) {
    Dsv3ParamCounts c;
    dsv3_model_param_counts(args, &c);
    // Active parameters without the embedding: a lookup, not a matmul. The head is a matmul
    // and stays in.
    int64_t matmul_params = c.active - c.embedding;
    int64_t head_dims =
        count_add(count_add(args->qk_nope_head_dim, args->qk_rope_head_dim), args->v_head_dim);
    // Attention scores and their weighted sum: per layer, head and context position.
    int64_t attention = count_mul(count_mul3(args->n_layers, args->n_heads, head_dims), seq_len);
    return count_mul(MODEL_TRAIN_FLOPS_PER_PARAM, count_add(matmul_params, attention));
}

// ---------------------------------------------------------------------------------------------
// Validation. Real arguments must also be finite; NaN fails every comparison, so every check.

// An integer dimension that must be ≥ 1.
#define CHECK_POSITIVE(a, key)                                                                     \
    DSV3_CHECK((a)->key > 0, DSV3_ERR_CONFIG, "model." #key " = %lld must be a positive integer",  \
               (long long)(a)->key)

// An integer that may be 0 (meaning "off") but not negative.
#define CHECK_NON_NEGATIVE(a, key)                                                                 \
    DSV3_CHECK((a)->key >= 0, DSV3_ERR_CONFIG,                                                     \
               "model." #key " = %lld must be 0 or a positive integer", (long long)(a)->key)

// Every integer dimension and count on its own.
static Dsv3Err validate_integers(const Dsv3ModelArgs *a) {
    CHECK_POSITIVE(a, vocab_size);
    CHECK_POSITIVE(a, dim);
    CHECK_POSITIVE(a, inter_dim);
    CHECK_POSITIVE(a, moe_inter_dim);
    CHECK_POSITIVE(a, n_layers);
    CHECK_POSITIVE(a, n_heads);
    CHECK_POSITIVE(a, num_experts);
    CHECK_NON_NEGATIVE(a, num_shared_experts);
    CHECK_NON_NEGATIVE(a, q_lora_rank);
    CHECK_POSITIVE(a, kv_lora_rank);
    CHECK_POSITIVE(a, qk_nope_head_dim);
    CHECK_POSITIVE(a, qk_rope_head_dim);
    CHECK_POSITIVE(a, v_head_dim);
    CHECK_POSITIVE(a, original_seq_len);
    DSV3_CHECK(a->qk_rope_head_dim % 2 == 0, DSV3_ERR_CONFIG,
               "model.qk_rope_head_dim = %lld must be even: RoPE rotates interleaved pairs",
               (long long)a->qk_rope_head_dim);
    DSV3_CHECK(a->n_dense_layers >= 0 && a->n_dense_layers <= a->n_layers, DSV3_ERR_CONFIG,
               "model.n_dense_layers = %lld must be in [0, model.n_layers = %lld]",
               (long long)a->n_dense_layers, (long long)a->n_layers);
    DSV3_CHECK(a->route_norm == 0 || a->route_norm == 1, DSV3_ERR_CONFIG,
               "model.route_norm = %d must be false (0) or true (1)", a->route_norm);
    DSV3_CHECK(a->score_func == DSV3_SCORE_SOFTMAX || a->score_func == DSV3_SCORE_SIGMOID,
               DSV3_ERR_CONFIG, "model.score_func = %d must be \"softmax\" or \"sigmoid\"",
               (int)a->score_func);
    DSV3_CHECK(a->attn_mask_type == DSV3_MASK_CAUSAL || a->attn_mask_type == DSV3_MASK_BLOCK_CAUSAL,
               DSV3_ERR_CONFIG, "model.attn_mask_type = %d must be \"causal\" or \"block_causal\"",
               (int)a->attn_mask_type);
    return DSV3_OK;
}

// Top-k and group-limited routing. Needs validate_integers first.
static Dsv3Err validate_routing(const Dsv3ModelArgs *a) {
    DSV3_CHECK(a->top_k >= 1 && a->top_k <= a->num_experts, DSV3_ERR_CONFIG,
               "model.top_k = %lld must be in [1, model.num_experts = %lld]", (long long)a->top_k,
               (long long)a->num_experts);
    int64_t groups = a->num_expert_groups, limited = a->num_limited_groups;
    DSV3_CHECK(groups >= 0 && limited >= 0 && (groups == 0) == (limited == 0), DSV3_ERR_CONFIG,
               "model.num_expert_groups = %lld and model.num_limited_groups = %lld must both be 0 "
               "(no group-limited routing) or both be positive",
               (long long)groups, (long long)limited);
    if (groups == 0) return DSV3_OK;
    DSV3_CHECK(a->num_experts % groups == 0, DSV3_ERR_CONFIG,
               "model.num_expert_groups = %lld must divide model.num_experts = %lld",
               (long long)groups, (long long)a->num_experts);
    int64_t per_group = a->num_experts / groups;
    DSV3_CHECK(per_group >= MODEL_MIN_EXPERTS_PER_GROUP, DSV3_ERR_CONFIG,
               "model.num_expert_groups = %lld leaves %lld expert(s) per group of "
               "model.num_experts = %lld; groups are ranked by their top-%d scores, so each needs "
               "at least %d",
               (long long)groups, (long long)per_group, (long long)a->num_experts,
               MODEL_MIN_EXPERTS_PER_GROUP, MODEL_MIN_EXPERTS_PER_GROUP);
    DSV3_CHECK(limited <= groups, DSV3_ERR_CONFIG,
               "model.num_limited_groups = %lld must be at most model.num_expert_groups = %lld",
               (long long)limited, (long long)groups);
    DSV3_CHECK(a->top_k <= limited * per_group, DSV3_ERR_CONFIG,
               "model.top_k = %lld must be at most model.num_limited_groups = %lld × %lld experts "
               "per group (model.num_experts / model.num_expert_groups) = %lld",
               (long long)a->top_k, (long long)limited, (long long)per_group,
               (long long)(limited * per_group));
    return DSV3_OK;
}

// The floating-point arguments.
static Dsv3Err validate_reals(const Dsv3ModelArgs *a) {
    DSV3_CHECK(isfinite(a->norm_eps) && a->norm_eps > 0, DSV3_ERR_CONFIG,
               "model.norm_eps = %g must be a positive number", a->norm_eps);
    DSV3_CHECK(isfinite(a->route_scale) && a->route_scale > 0, DSV3_ERR_CONFIG,
               "model.route_scale = %g must be a positive number", a->route_scale);
    DSV3_CHECK(isfinite(a->load_balance_coeff) && a->load_balance_coeff >= 0, DSV3_ERR_CONFIG,
               "model.load_balance_coeff = %g must be 0 (no bias update) or positive",
               a->load_balance_coeff);
    // The YaRN correction range divides by log(rope_theta), so the base must exceed 1.
    DSV3_CHECK(isfinite(a->rope_theta) && a->rope_theta > 1, DSV3_ERR_CONFIG,
               "model.rope_theta = %g must be a number greater than 1", a->rope_theta);
    DSV3_CHECK(isfinite(a->rope_factor) && a->rope_factor >= 1, DSV3_ERR_CONFIG,
               "model.rope_factor = %g must be at least 1 (it stretches the context)",
               a->rope_factor);
    DSV3_CHECK(isfinite(a->beta_slow) && a->beta_slow > 0, DSV3_ERR_CONFIG,
               "model.beta_slow = %g must be a positive number", a->beta_slow);
    DSV3_CHECK(isfinite(a->beta_fast) && a->beta_fast > a->beta_slow, DSV3_ERR_CONFIG,
               "model.beta_fast = %g must be greater than model.beta_slow = %g", a->beta_fast,
               a->beta_slow);
    DSV3_CHECK(isfinite(a->mscale) && a->mscale >= 0, DSV3_ERR_CONFIG,
               "model.mscale = %g must be a number ≥ 0", a->mscale);
    return DSV3_OK;
}

// The whole model must be countable. Needs the other checks first (all operands ≥ 0).
static Dsv3Err validate_size(const Dsv3ModelArgs *a) {
    Dsv3ParamCounts c;
    dsv3_model_param_counts(a, &c);
    DSV3_CHECK(c.total <= MODEL_MAX_PARAMS, DSV3_ERR_CONFIG,
               "model.vocab_size = %lld, model.dim = %lld, model.inter_dim = %lld, "
               "model.moe_inter_dim = %lld, model.n_layers = %lld, model.num_experts = %lld give "
               "more than %lld parameters; make them smaller",
               (long long)a->vocab_size, (long long)a->dim, (long long)a->inter_dim,
               (long long)a->moe_inter_dim, (long long)a->n_layers, (long long)a->num_experts,
               (long long)MODEL_MAX_PARAMS);
    return DSV3_OK;
}

Dsv3Err dsv3_model_args_validate(const Dsv3ModelArgs *args) {
    DSV3_CHECK(args != NULL, DSV3_ERR_USAGE, "dsv3_model_args_validate needs arguments");
    DSV3_CALL(validate_integers(args));
    DSV3_CALL(validate_routing(args));
    DSV3_CALL(validate_reals(args));
    DSV3_CALL(validate_size(args));
    return DSV3_OK;
}
