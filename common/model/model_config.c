// model_config: [model] keys from the flavor, checks that need model arguments, and the
// model arguments of a config.
#include "common/model/model_config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Where the value of section.key came from ("conf/x.toml:12", "command line --a.b", "default").
static const char *key_where(const Dsv3Config *cfg, const char *section, const char *key) {
    return dsv3_config_key_where(cfg, dsv3_config_key_find(section, key));
}

static int model_key_is_set(const Dsv3Config *cfg, const char *key) {
    return dsv3_config_key_is_set(cfg, dsv3_config_key_find("model", key));
}

// Copies the flavor's value of every [model] argument the user did not set into the config.
static Dsv3Err fill_from_flavor(Dsv3Config *cfg) {
    Dsv3ModelArgs a;
    Dsv3Err err = dsv3_model_args_flavor(cfg->model.flavor, &a);
    if (err != DSV3_OK) {
        // Say where the bad flavor came from, keeping the list of known names.
        DSV3_RAISE(err, "%s: %s", key_where(cfg, "model", "flavor"), dsv3_error_message());
    }
#define FILL(name)                                                                                 \
    if (!model_key_is_set(cfg, #name)) cfg->model.name = a.name
    FILL(vocab_size);
    FILL(dim);
    FILL(inter_dim);
    FILL(moe_inter_dim);
    FILL(n_layers);
    FILL(n_dense_layers);
    FILL(n_heads);
    FILL(norm_eps);
    FILL(num_experts);
    FILL(num_shared_experts);
    FILL(top_k);
    FILL(route_norm);
    FILL(route_scale);
    FILL(num_expert_groups);
    FILL(num_limited_groups);
    FILL(load_balance_coeff);
    FILL(q_lora_rank);
    FILL(kv_lora_rank);
    FILL(qk_nope_head_dim);
    FILL(qk_rope_head_dim);
    FILL(v_head_dim);
    FILL(original_seq_len);
    FILL(rope_theta);
    FILL(rope_factor);
    FILL(beta_fast);
    FILL(beta_slow);
    FILL(mscale);
#undef FILL
    if (!model_key_is_set(cfg, "score_func"))
        snprintf(cfg->model.score_func, sizeof cfg->model.score_func, "%s",
                 a.score_func == DSV3_SCORE_SIGMOID ? "sigmoid" : "softmax");
    if (!model_key_is_set(cfg, "attn_mask_type"))
        snprintf(cfg->model.attn_mask_type, sizeof cfg->model.attn_mask_type, "%s",
                 a.attn_mask_type == DSV3_MASK_BLOCK_CAUSAL ? "block_causal" : "causal");
    cfg->model_filled = 1;
    return DSV3_OK;
}

// The parallel degrees that split the model must fit it.
static Dsv3Err check_parallel_degrees(const Dsv3Config *cfg, const Dsv3ModelArgs *args) {
    int64_t ep = cfg->parallelism.expert_parallel_degree;
    DSV3_CHECK(args->num_experts % ep == 0, DSV3_ERR_CONFIG,
               "%s: parallelism.expert_parallel_degree %" PRId64 " does not divide "
               "model.num_experts %" PRId64,
               key_where(cfg, "parallelism", "expert_parallel_degree"), ep, args->num_experts);
    int64_t pp = cfg->parallelism.pipeline_parallel_degree;
    DSV3_CHECK(pp <= args->n_layers, DSV3_ERR_CONFIG,
               "%s: parallelism.pipeline_parallel_degree %" PRId64
               " exceeds model.n_layers %" PRId64 ": every pipeline stage needs at least one layer",
               key_where(cfg, "parallelism", "pipeline_parallel_degree"), pp, args->n_layers);
    int64_t tp = cfg->parallelism.tensor_parallel_degree;
    DSV3_CHECK(args->n_heads % tp == 0, DSV3_ERR_CONFIG,
               "%s: parallelism.tensor_parallel_degree %" PRId64
               " does not divide model.n_heads %" PRId64,
               key_where(cfg, "parallelism", "tensor_parallel_degree"), tp, args->n_heads);
    DSV3_CHECK(args->n_dense_layers == 0 || args->inter_dim % tp == 0, DSV3_ERR_CONFIG,
               "%s: parallelism.tensor_parallel_degree %" PRId64
               " does not divide model.inter_dim %" PRId64 " (the dense FFN's hidden features)",
               key_where(cfg, "parallelism", "tensor_parallel_degree"), tp, args->inter_dim);
    int64_t cp = cfg->parallelism.context_parallel_degree;
    DSV3_CHECK(cfg->training.seq_len % (tp * cp) == 0, DSV3_ERR_CONFIG,
               "%s: parallelism.tensor_parallel_degree %" PRId64
               " × context_parallel_degree %" PRId64 " does not divide training.seq_len %" PRId64
               " (sequence parallelism splits a cp rank's seq_len / cp positions of every "
               "sequence over the tp ranks)",
               key_where(cfg, "parallelism", "tensor_parallel_degree"), tp, cp,
               cfg->training.seq_len);
    int64_t shared = args->moe_inter_dim * args->num_shared_experts;
    DSV3_CHECK(shared % tp == 0, DSV3_ERR_CONFIG,
               "%s: parallelism.tensor_parallel_degree %" PRId64
               " does not divide the shared experts' hidden features %" PRId64
               " (model.moe_inter_dim × model.num_shared_experts)",
               key_where(cfg, "parallelism", "tensor_parallel_degree"), tp, shared);
    return DSV3_OK;
}

Dsv3Err dsv3_model_config_resolve(Dsv3Config *cfg) {
    DSV3_CALL(fill_from_flavor(cfg));
    DSV3_CALL(dsv3_config_resolve(cfg));
    Dsv3ModelArgs args;
    dsv3_model_args_from_config(cfg, &args);
    DSV3_CALL(dsv3_model_args_validate(&args));
    DSV3_CALL(check_parallel_degrees(cfg, &args));
    return DSV3_OK;
}

void dsv3_model_args_from_config(const Dsv3Config *cfg, Dsv3ModelArgs *out) {
    *out = (Dsv3ModelArgs){
        .vocab_size = cfg->model.vocab_size,
        .dim = cfg->model.dim,
        .inter_dim = cfg->model.inter_dim,
        .moe_inter_dim = cfg->model.moe_inter_dim,
        .n_layers = cfg->model.n_layers,
        .n_dense_layers = cfg->model.n_dense_layers,
        .n_heads = cfg->model.n_heads,
        .norm_eps = cfg->model.norm_eps,
        .num_experts = cfg->model.num_experts,
        .num_shared_experts = cfg->model.num_shared_experts,
        .top_k = cfg->model.top_k,
        .score_func =
            strcmp(cfg->model.score_func, "sigmoid") == 0 ? DSV3_SCORE_SIGMOID : DSV3_SCORE_SOFTMAX,
        .route_norm = cfg->model.route_norm,
        .route_scale = cfg->model.route_scale,
        .num_expert_groups = cfg->model.num_expert_groups,
        .num_limited_groups = cfg->model.num_limited_groups,
        .load_balance_coeff = cfg->model.load_balance_coeff,
        .q_lora_rank = cfg->model.q_lora_rank,
        .kv_lora_rank = cfg->model.kv_lora_rank,
        .qk_nope_head_dim = cfg->model.qk_nope_head_dim,
        .qk_rope_head_dim = cfg->model.qk_rope_head_dim,
        .v_head_dim = cfg->model.v_head_dim,
        .attn_mask_type = strcmp(cfg->model.attn_mask_type, "block_causal") == 0
                              ? DSV3_MASK_BLOCK_CAUSAL
                              : DSV3_MASK_CAUSAL,
        .original_seq_len = cfg->model.original_seq_len,
        .rope_theta = cfg->model.rope_theta,
        .rope_factor = cfg->model.rope_factor,
        .beta_fast = cfg->model.beta_fast,
        .beta_slow = cfg->model.beta_slow,
        .mscale = cfg->model.mscale,
    };
}

// Tokens per chunk of the fused output head + loss: bounds the logits held at once to
// LOSS_CHUNK × vocab floats (129,280 × 1024 × 4 B = 0.5 GiB at the 671B vocabulary).
enum { LOSS_CHUNK = 1024 };

Dsv3Err dsv3_model_options_from_config(const Dsv3Config *cfg, int32_t eos_id,
                                       Dsv3ModelOptions *out) {
    const char *mode = cfg->activation_checkpoint.mode;
    const char *option = cfg->activation_checkpoint.selective_ac_option;
    *out = (Dsv3ModelOptions){
        .batch = cfg->training.local_batch_size,
        .seq_len = cfg->training.seq_len,
        .cp = cfg->parallelism.context_parallel_degree,
        .cp_ring = strcmp(cfg->parallelism.context_parallel_rotate_method, "alltoall") == 0,
        .eos_id = eos_id,
        .ac_mode = DSV3_AC_NONE,
        .loss_chunk = LOSS_CHUNK,
        .gather_logits = cfg->parallelism.disable_loss_parallel,
        .slots = 1,
        .matmul_dtype = strcmp(cfg->training.mixed_precision_param, "bfloat16") == 0
                            ? DSV3_TENSOR_BF16
                            : DSV3_TENSOR_F32};
    if (strcmp(mode, "full") == 0)
        out->ac_mode = DSV3_AC_FULL;
    else if (strcmp(mode, "selective") == 0 && strcmp(option, "op") == 0)
        out->ac_mode = DSV3_AC_OP;
    else if (strcmp(mode, "selective") == 0)
        out->ac_every = strtoll(option, NULL, 10);
    return DSV3_OK;
}
