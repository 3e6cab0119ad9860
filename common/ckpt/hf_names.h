// hf_names: Hugging Face DeepSeek-V3 tensor names ↔ torchtitan FQNs.
//
// The mapping is torchtitan's DeepSeekV3StateDictAdapter: model.embed_tokens.weight ↔
// tok_embeddings.weight, model.layers.L.self_attn.* ↔ layers.L.attention.*,
// model.layers.L.mlp.{gate,up,down}_proj ↔ layers.L.feed_forward.w{1,3,2} (dense layers),
// model.layers.L.mlp.experts.E.{gate,up,down}_proj.weight ↔ row E of the stacked
// layers.L.moe.experts.w{1,3,2} (E, F, D) / (E, D, F), model.layers.L.mlp.gate.weight ↔
// layers.L.moe.router.gate.weight, model.layers.L.mlp.gate.e_score_correction_bias ↔
// layers.L.moe.expert_bias, model.layers.L.mlp.shared_experts.* ↔ layers.L.moe.shared_experts.*,
// model.norm.weight ↔ norm.weight, lm_head.weight ↔ output.weight. Both the q-LoRA names
// (q_a_proj, q_a_layernorm, q_b_proj) and q_proj are known; which one a model has follows from
// its arguments. `<weight>_scale_inv` names are recognised as FP8 scales of their weight.
// Names only: shapes and data are the caller's.
#ifndef DSV3_CKPT_HF_NAMES_H
#define DSV3_CKPT_HF_NAMES_H

#include <stddef.h>
#include <stdint.h>

#include "common/core/error.h"
#include "common/model/params.h"

// The expert bias is a buffer, not a Dsv3Param: its FQN suffix (torchtitan's).
#define DSV3_EXPERT_BIAS_SUFFIX "moe.expert_bias"
// The FP8 scale that goes with a weight: "<weight name>" + this.
#define DSV3_HF_SCALE_SUFFIX "_scale_inv"

enum { DSV3_HF_NAME_CAPACITY = 160 };

typedef enum {
    DSV3_HF_TENSOR,  // a model tensor: fqn (and expert ≥ 0 for one expert of a stacked weight)
    DSV3_HF_SCALE,   // the FP8 scale of the weight named in `weight`
    DSV3_HF_UNKNOWN, // no torchtitan counterpart
} Dsv3HfKind;

typedef struct {
    Dsv3HfKind kind;
    char fqn[DSV3_FQN_CAPACITY];        // DSV3_HF_TENSOR
    int64_t layer;                      // -1 outside layers
    int64_t expert;                     // -1 unless one expert of a stacked weight
    char weight[DSV3_HF_NAME_CAPACITY]; // DSV3_HF_SCALE: the HF name of the scaled weight
} Dsv3HfName;

// Classifies an HF name. Never fails on an unknown name (kind DSV3_HF_UNKNOWN).
void dsv3_hf_name_parse(const char *hf_name, Dsv3HfName *out);

// The HF name of an FQN (expert ≥ 0 selects one expert of a stacked weight, and is required
// for them). Fails for an FQN the adapter does not know.
Dsv3Err dsv3_hf_name_from_fqn(const char *fqn, int64_t expert, char out[DSV3_HF_NAME_CAPACITY]);

// Whether an FQN is a stacked expert weight (layers.L.moe.experts.w1/w2/w3).
int dsv3_hf_fqn_is_stacked(const char *fqn);

#endif
