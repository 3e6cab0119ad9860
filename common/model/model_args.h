// model_args: DeepSeek-V3 hyperparameters, the named flavors, parameter counts and FLOPs.
//
// The flavors are torchtitan's (torchtitan/models/deepseek_v3/__init__.py): debugmodel, 16B,
// 236B, 671B. Counts follow the module structure of torchtitan's DeepSeekV3Model exactly
// (expert_bias and token counters are buffers, not parameters). This module does no I/O, no
// MPI and no allocation.
#ifndef DSV3_MODEL_MODEL_ARGS_H
#define DSV3_MODEL_MODEL_ARGS_H

#include <stdint.h>

#include "common/core/error.h"

typedef enum { DSV3_SCORE_SOFTMAX, DSV3_SCORE_SIGMOID } Dsv3ScoreFunc;
typedef enum { DSV3_MASK_CAUSAL, DSV3_MASK_BLOCK_CAUSAL } Dsv3MaskType;

typedef struct {
    int64_t vocab_size;
    int64_t dim;
    int64_t inter_dim;     // hidden size of the dense FFN layers
    int64_t moe_inter_dim; // hidden size of one routed expert (shared: × num_shared_experts)
    int64_t n_layers;
    int64_t n_dense_layers; // the first n_dense_layers layers use a dense FFN, the rest MoE
    int64_t n_heads;
    double norm_eps;
    // MoE
    int64_t num_experts;
    int64_t num_shared_experts;
    int64_t top_k;
    Dsv3ScoreFunc score_func;
    int route_norm; // 0 or 1
    double route_scale;
    int64_t num_expert_groups;  // 0: no group-limited routing
    int64_t num_limited_groups; // 0: no group-limited routing
    double load_balance_coeff;  // 0: no aux-loss-free bias update
    // Multi-head latent attention
    int64_t q_lora_rank; // 0: a single wq
    int64_t kv_lora_rank;
    int64_t qk_nope_head_dim;
    int64_t qk_rope_head_dim;
    int64_t v_head_dim;
    Dsv3MaskType attn_mask_type;
    // RoPE with YaRN
    int64_t original_seq_len;
    double rope_theta;
    double rope_factor;
    double beta_fast;
    double beta_slow;
    double mscale;
} Dsv3ModelArgs;

// Parameter counts of the whole model.
typedef struct {
    int64_t total;          // every parameter
    int64_t active;         // total − routed experts + routed experts × top_k / num_experts
    int64_t embedding;      // tok_embeddings
    int64_t routed_experts; // all layers' moe.experts.{w1,w2,w3}
    int64_t shared_experts; // all layers' moe.shared_experts.*
    int64_t router;         // all layers' moe.router.gate
} Dsv3ParamCounts;

// The parameters of one layer (or of the embedding / the head), split by who will hold them.
typedef struct {
    int64_t dense;  // held by stage ranks: norms, attention, dense FFN, shared experts, router
    int64_t routed; // routed experts (held by expert servers when the job has them)
} Dsv3LayerParams;

// The names accepted by dsv3_model_args_flavor, NULL-terminated.
extern const char *const dsv3_model_flavor_names[];

// *out = the named flavor. An unknown name is a config error listing the known ones.
Dsv3Err dsv3_model_args_flavor(const char *flavor, Dsv3ModelArgs *out);

// Checks the arguments hang together (n_dense_layers ≤ n_layers, top_k ≤ num_experts, groups
// divide num_experts, num_limited_groups ≤ num_expert_groups, …); a failure is a config error
// that names the offending [model] key(s) and says what was expected.
Dsv3Err dsv3_model_args_validate(const Dsv3ModelArgs *args);

void dsv3_model_param_counts(const Dsv3ModelArgs *args, Dsv3ParamCounts *out);

// Parameters of transformer layer `layer` (0-based).
Dsv3LayerParams dsv3_model_layer_params(const Dsv3ModelArgs *args, int64_t layer);

// Parameters of tok_embeddings (first pipeline stage) and of norm + output (last stage).
int64_t dsv3_model_embedding_params(const Dsv3ModelArgs *args);
int64_t dsv3_model_head_params(const Dsv3ModelArgs *args);

// Training FLOPs per token as torchtitan counts them for MoE models:
//   6 × (non-embedding dense params + router + shared experts + routed × top_k / num_experts)
//   + 6 × n_layers × n_heads × (qk_nope_head_dim + qk_rope_head_dim + v_head_dim) × seq_len
int64_t dsv3_model_flops_per_token(const Dsv3ModelArgs *args, int64_t seq_len);

#endif
