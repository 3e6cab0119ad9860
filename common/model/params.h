// params: the parameter table of DeepSeek-V3 and the layout of its flat buffers.
//
// Every parameter slot is declared once, in DSV3_PARAM_SLOTS, with:
//   - its FQN suffix: torchtitan's module path (layer slots get the prefix "layers.<id>.") and
//     its Hugging Face name (ckpt/hf_names.h maps one to the other from this table);
//   - its group and the condition under which the group has it: the embedding (first pipeline
//     stage), a layer's dense parameters, a MoE layer's routed experts, the head (last stage);
//   - its shape, as expressions in the model's dimensions (Dsv3ParamDims `s`);
//   - its initialisation (torchtitan's init_weights);
//   - its tensor-parallel placement, torchtitan's DeepSeek-V3 plan (parallelize.py):
//     wq / wq_b / wkv_b and the dense and shared-expert w1 / w3 column-wise (output features
//     split, dim 0), wo and the dense and shared-expert w2 row-wise (input features, dim 1),
//     the embedding row-wise over the vocabulary (dim 0), the output head column-wise over the
//     vocabulary (dim 0), wq_a / wkv_a / the norms / the router gate replicated; routed experts
//     are replicated over tp (their owner serves the tokens of every tp rank).
// The owner of a slot is its group's: stage ranks own the embedding, layer and head groups;
// the routed experts of a MoE layer are a group of their own, owned by the pipeline stage's
// expert servers (expert j of ep holds experts [j·E/ep, (j+1)·E/ep)), or by the stage ranks
// when the job has none.
//
// Sharding (Dsv3ShardSpec). A rank holds, of every tensor of its groups, its tensor-parallel
// piece ("local" shape: the sharded dim cut in tp chunks as torch.chunk cuts, the last ones
// possibly shorter) and, of that piece, its FSDP shard: torchtitan's FSDP2 Shard(0), rows of
// dim 0 cut in fsdp chunks of ceil(rows / fsdp) rows, the last padded. Routed experts on
// expert servers are first cut on dim 0 (experts) in ep chunks. A group's flat shard buffer
// packs its tensors' padded shards back to back, so every shard of a group has the same size;
// its full buffer (what a layer computes with, once gathered) holds the local pieces back to
// back. Without sharding (tp = fsdp = ep = 1) both layouts are the same. For each tensor the
// layout also gives the box (start, count in global coordinates) of the rank's real rows: the
// checkpoint and HF loaders read and write exactly those.
//
// Values are a pure function of (seed, FQN, global index), so every rank initialises any box
// of any tensor identically. This module does no I/O, no MPI, and allocates only scratch.
//
// Legend: V vocab, D dim, H heads, Dqk = nope + R query/key head dim, nope qk_nope_head_dim,
// R qk_rope_head_dim, Dv v head dim, Q q_lora_rank, C kv_lora_rank, Fd inter_dim (the dense
// FFN), E experts, F moe_inter_dim, Fs = F × num_shared_experts.
#ifndef DSV3_MODEL_PARAMS_H
#define DSV3_MODEL_PARAMS_H

#include <stdint.h>

#include "common/core/error.h"
#include "common/model/model_args.h"

enum { DSV3_FQN_CAPACITY = 96, DSV3_PARAM_MAX_DIMS = 3 };

// The model's dimensions, as the table's shape expressions name them.
typedef struct {
    int64_t V, D, H, Dqk, nope, R, Dv, Q, C, Fd, E, F, Fs;
} Dsv3ParamDims;

typedef enum {
    DSV3_GROUP_EMBEDDING, // tok_embeddings: first pipeline stage
    DSV3_GROUP_LAYER,     // one layer's dense parameters: stage ranks
    DSV3_GROUP_EXPERTS,   // one MoE layer's routed experts: expert servers, or the stage ranks
    DSV3_GROUP_HEAD,      // final norm and output head: last pipeline stage
} Dsv3GroupKind;

enum { DSV3_GROUP_KIND_COUNT = 4 };

// When a group has a slot.
typedef enum {
    DSV3_WHEN_ALWAYS,     // every group of the slot's kind
    DSV3_WHEN_Q_FULL,     // q_lora_rank == 0: a single wq
    DSV3_WHEN_Q_LORA,     // q_lora_rank > 0: wq_a → q_norm → wq_b
    DSV3_WHEN_DENSE_FFN,  // layers with a dense FFN (id < n_dense_layers)
    DSV3_WHEN_MOE,        // MoE layers
    DSV3_WHEN_MOE_SHARED, // MoE layers with shared experts
} Dsv3ParamWhen;

typedef enum {
    DSV3_INIT_ONES,         // norms
    DSV3_INIT_NORMAL,       // N(0, 1): embeddings
    DSV3_INIT_TRUNC_STD,    // trunc-normal, std 0.02, cut at ±2
    DSV3_INIT_TRUNC_DEPTH,  // trunc-normal, std 0.02 / sqrt(2 (layer + 1)), cut at ±2
    DSV3_INIT_TRUNC_OUTPUT, // trunc-normal, std D^-0.5, cut at ±3 σ
} Dsv3ParamInit;

// Tensor-parallel placement: which dim tp cuts.
typedef enum {
    DSV3_TP_REPLICATE,         // every tp rank holds the whole tensor
    DSV3_TP_COLWISE,           // output features (dim 0) split
    DSV3_TP_ROWWISE,           // input features (dim 1) split
    DSV3_TP_EMBEDDING_ROWWISE, // vocabulary rows of the embedding (dim 0) split
} Dsv3TpPlacement;

// X(SLOT, fqn suffix, HF name, group, when, ndim, d0, d1, d2, init, tp). The HF name is
// DeepSeek-V3's in Hugging Face checkpoints (torchtitan's DeepSeekV3StateDictAdapter): for
// layer slots the part after "model.layers.<id>.", with "{}" for the expert of a stacked expert
// weight. Shapes are expressions in `s`, a Dsv3ParamDims; unused dims are 0.
#define DSV3_PARAM_SLOTS(X)                                                                        \
    X(TOK_EMBEDDINGS, "tok_embeddings.weight", "model.embed_tokens.weight", EMBEDDING, ALWAYS, 2,  \
      s.V, s.D, 0, NORMAL, EMBEDDING_ROWWISE)                                                      \
    X(ATTENTION_NORM, "attention_norm.weight", "input_layernorm.weight", LAYER, ALWAYS, 1, s.D, 0, \
      0, ONES, REPLICATE)                                                                          \
    X(WQ, "attention.wq.weight", "self_attn.q_proj.weight", LAYER, Q_FULL, 2, (s.H * s.Dqk), s.D,  \
      0, TRUNC_STD, COLWISE)                                                                       \
    X(WQ_A, "attention.wq_a.weight", "self_attn.q_a_proj.weight", LAYER, Q_LORA, 2, s.Q, s.D, 0,   \
      TRUNC_STD, REPLICATE)                                                                        \
    X(Q_NORM, "attention.q_norm.weight", "self_attn.q_a_layernorm.weight", LAYER, Q_LORA, 1, s.Q,  \
      0, 0, ONES, REPLICATE)                                                                       \
    X(WQ_B, "attention.wq_b.weight", "self_attn.q_b_proj.weight", LAYER, Q_LORA, 2, (s.H * s.Dqk), \
      s.Q, 0, TRUNC_STD, COLWISE)                                                                  \
    X(WKV_A, "attention.wkv_a.weight", "self_attn.kv_a_proj_with_mqa.weight", LAYER, ALWAYS, 2,    \
      s.C + s.R, s.D, 0, TRUNC_STD, REPLICATE)                                                     \
    X(KV_NORM, "attention.kv_norm.weight", "self_attn.kv_a_layernorm.weight", LAYER, ALWAYS, 1,    \
      s.C, 0, 0, ONES, REPLICATE)                                                                  \
    X(WKV_B, "attention.wkv_b.weight", "self_attn.kv_b_proj.weight", LAYER, ALWAYS, 2,             \
      (s.H * (s.nope + s.Dv)), s.C, 0, TRUNC_STD, COLWISE)                                         \
    X(WO, "attention.wo.weight", "self_attn.o_proj.weight", LAYER, ALWAYS, 2, s.D, (s.H * s.Dv),   \
      0, TRUNC_DEPTH, ROWWISE)                                                                     \
    X(FFN_NORM, "ffn_norm.weight", "post_attention_layernorm.weight", LAYER, ALWAYS, 1, s.D, 0, 0, \
      ONES, REPLICATE)                                                                             \
    X(FF_W1, "feed_forward.w1.weight", "mlp.gate_proj.weight", LAYER, DENSE_FFN, 2, s.Fd, s.D, 0,  \
      TRUNC_STD, COLWISE)                                                                          \
    X(FF_W2, "feed_forward.w2.weight", "mlp.down_proj.weight", LAYER, DENSE_FFN, 2, s.D, s.Fd, 0,  \
      TRUNC_DEPTH, ROWWISE)                                                                        \
    X(FF_W3, "feed_forward.w3.weight", "mlp.up_proj.weight", LAYER, DENSE_FFN, 2, s.Fd, s.D, 0,    \
      TRUNC_DEPTH, COLWISE)                                                                        \
    X(GATE, "moe.router.gate.weight", "mlp.gate.weight", LAYER, MOE, 2, s.E, s.D, 0, TRUNC_DEPTH,  \
      REPLICATE)                                                                                   \
    X(SHARED_W1, "moe.shared_experts.w1.weight", "mlp.shared_experts.gate_proj.weight", LAYER,     \
      MOE_SHARED, 2, s.Fs, s.D, 0, TRUNC_STD, COLWISE)                                             \
    X(SHARED_W2, "moe.shared_experts.w2.weight", "mlp.shared_experts.down_proj.weight", LAYER,     \
      MOE_SHARED, 2, s.D, s.Fs, 0, TRUNC_DEPTH, ROWWISE)                                           \
    X(SHARED_W3, "moe.shared_experts.w3.weight", "mlp.shared_experts.up_proj.weight", LAYER,       \
      MOE_SHARED, 2, s.Fs, s.D, 0, TRUNC_DEPTH, COLWISE)                                           \
    X(EXPERTS_W1, "moe.experts.w1", "mlp.experts.{}.gate_proj.weight", EXPERTS, ALWAYS, 3, s.E,    \
      s.F, s.D, TRUNC_STD, REPLICATE)                                                              \
    X(EXPERTS_W2, "moe.experts.w2", "mlp.experts.{}.down_proj.weight", EXPERTS, ALWAYS, 3, s.E,    \
      s.D, s.F, TRUNC_DEPTH, REPLICATE)                                                            \
    X(EXPERTS_W3, "moe.experts.w3", "mlp.experts.{}.up_proj.weight", EXPERTS, ALWAYS, 3, s.E, s.F, \
      s.D, TRUNC_DEPTH, REPLICATE)                                                                 \
    X(NORM, "norm.weight", "model.norm.weight", HEAD, ALWAYS, 1, s.D, 0, 0, ONES, REPLICATE)       \
    X(OUTPUT, "output.weight", "lm_head.weight", HEAD, ALWAYS, 2, s.V, s.D, 0, TRUNC_OUTPUT,       \
      COLWISE)

#define DSV3_PARAM_SLOT_ENUM(slot, ...) DSV3_P_##slot,
typedef enum { DSV3_PARAM_SLOTS(DSV3_PARAM_SLOT_ENUM) DSV3_PARAM_SLOT_COUNT } Dsv3ParamSlot;
#undef DSV3_PARAM_SLOT_ENUM

// How a rank's groups are cut (see the top of this file). tp and fsdp apply to the embedding,
// layer and head groups and to routed experts on stage ranks; ep to routed experts on expert
// servers (which use tp = fsdp = 1).
typedef struct {
    int64_t tp, tp_rank;
    int64_t fsdp, fsdp_rank;
    int64_t ep, ep_rank;
} Dsv3ShardSpec;

// Nothing cut: one rank holds every tensor whole.
extern const Dsv3ShardSpec dsv3_shard_none;

// A box of a tensor: start and count per dim, in global coordinates.
typedef struct {
    int64_t start[DSV3_PARAM_MAX_DIMS], count[DSV3_PARAM_MAX_DIMS];
} Dsv3Box;

typedef struct {
    char fqn[DSV3_FQN_CAPACITY]; // "" when the group has no such slot
    int ndim;
    int64_t shape[DSV3_PARAM_MAX_DIMS]; // global
    int64_t numel;                      // global; 0 when absent
    Dsv3ParamInit init;
    Dsv3TpPlacement tp;
    // This rank's piece (tensor parallel and, for routed experts on expert servers, ep).
    int64_t local[DSV3_PARAM_MAX_DIMS];
    int64_t piece_start[DSV3_PARAM_MAX_DIMS]; // where the piece starts, in global coordinates
    int64_t local_numel;
    int64_t offset; // of the piece in the group's full buffer
    // Its FSDP shard: shard_rows rows of the piece (padding included) from row shard_row0, of
    // which real_rows exist; at shard_offset in the group's flat shard buffer.
    int64_t shard_rows, shard_row0, real_rows;
    int64_t shard_offset;
    Dsv3Box box;        // the real rows of the shard, in global coordinates
    float *data, *grad; // views into the full buffers while the group is acquired (or NULL)
} Dsv3Param;

typedef struct {
    Dsv3GroupKind kind;
    int64_t layer_id; // layer and experts groups; -1 otherwise
    int moe;          // a MoE layer (layer_id ≥ n_dense_layers)
    Dsv3ShardSpec spec;
    Dsv3Param params[DSV3_PARAM_SLOT_COUNT];
    int64_t numel;       // elements of the full buffer (the rank's pieces, gathered)
    int64_t shard_numel; // elements of the rank's flat shard (padded; the same on every rank)
    float *data, *grad;  // the full buffers while acquired (or NULL)
} Dsv3ParamGroup;

// One group's state on a rank: its flat shard of values, gradients and AdamW moments
// (shard_numel elements each; param_store.h says where they live).
typedef struct {
    float *data, *grad, *adam_m, *adam_v;
} Dsv3ParamShard;

// "layer", "experts", …
const char *dsv3_group_kind_name(Dsv3GroupKind kind);

// A slot's FQN suffix, its HF name (as in DSV3_PARAM_SLOTS) and its group kind.
const char *dsv3_param_slot_suffix(Dsv3ParamSlot slot);
const char *dsv3_param_slot_hf_name(Dsv3ParamSlot slot);
Dsv3GroupKind dsv3_param_slot_group(Dsv3ParamSlot slot);

// The dimensions of these model arguments.
void dsv3_param_dims(const Dsv3ModelArgs *args, Dsv3ParamDims *out);

// Whether a group of this kind exists for `layer_id` (experts: MoE layers only).
int dsv3_param_group_exists(const Dsv3ModelArgs *args, Dsv3GroupKind kind, int64_t layer_id);

// Lays out a group (FQNs, shapes, pieces, shards, boxes, offsets) for `spec`; data pointers
// stay NULL. An impossible spec (degrees < 1, ranks outside them, ep not dividing the experts)
// is DSV3_ERR_USAGE.
Dsv3Err dsv3_param_group_layout(Dsv3ParamGroup *group, const Dsv3ModelArgs *args,
                                Dsv3GroupKind kind, int64_t layer_id, const Dsv3ShardSpec *spec);

// Points every parameter's data and grad into full buffers `data` and `grad` (group->numel
// elements each; either may be NULL).
void dsv3_param_group_bind(Dsv3ParamGroup *group, float *data, float *grad);

// Writes torchtitan's initial values of `param` (of a group laid out for `layer_id`) for
// the elements of `box` into out (box-shaped, row-major). `seed` is debug.seed.
void dsv3_param_init_box(const Dsv3Param *param, int64_t layer_id, const Dsv3ModelArgs *args,
                         uint64_t seed, const Dsv3Box *box, float *out);

// Fills a group's flat shard (shard_numel elements): every tensor's real rows initialised,
// padding zero.
void dsv3_param_group_init_shard(const Dsv3ParamGroup *group, const Dsv3ModelArgs *args,
                                 uint64_t seed, float *shard);

// Elements of a box.
int64_t dsv3_box_numel(const Dsv3Box *box, int ndim);

// Chunk k of `parts` of n elements, as torch.chunk cuts (and tensor parallelism and FSDP cut
// tensors here): chunks of ceil(n / parts) from the start, the last ones shorter or empty.
void dsv3_param_chunk(int64_t n, int64_t parts, int64_t k, int64_t *start, int64_t *count);

// Elements of param's FSDP shard (shard_rows rows of its piece, padding included), which start
// at its shard_offset in the group's flat shard.
int64_t dsv3_param_shard_numel(const Dsv3Param *p);

// Which groups a rank holds: a pipeline stage's layer range, with the embedding on the first
// stage and the head on the last, its dense groups on stage ranks and its routed experts on
// its expert servers (or on the stage ranks, when the job has none).
typedef struct {
    int64_t first_layer, n_layers; // layers [first_layer, first_layer + n_layers)
    int first, last;               // the first / last pipeline stage (embedding / head)
    int dense;                     // the embedding, layer and head groups (stage ranks)
    int routed;                    // the experts groups of the MoE layers in the range
} Dsv3StageRange;

// The whole model on one rank.
Dsv3StageRange dsv3_stage_range_whole(const Dsv3ModelArgs *args);

// The number of groups of `range` (at most 2 + 2 × n_layers).
int dsv3_param_stage_group_count(const Dsv3ModelArgs *args, const Dsv3StageRange *range);

// Lays out the groups of `range` for `spec` into out (room for dsv3_param_stage_group_count),
// in the order embedding, then per layer its dense group and its experts group, then head.
Dsv3Err dsv3_param_stage_groups(const Dsv3ModelArgs *args, const Dsv3StageRange *range,
                                const Dsv3ShardSpec *spec, Dsv3ParamGroup *out);

#endif
