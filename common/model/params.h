// params: the model's parameters in flat buffers, named by torchtitan's FQNs.
//
// Parameters come in groups: the embedding, one group per transformer layer, and the head
// (final norm and output). Each group owns four flat fp32 buffers — values, gradients and
// AdamW's two moments — and every parameter is a view at an offset into them, so that FSDP
// shards are slices of a group and the optimizer runs over one array per group. The list of
// slots is declared once (DSV3_PARAM_SLOTS); which slots a group has and their shapes follow
// from the model arguments. Initialisation is torchtitan's (trunc-normal std 0.02, depth-
// scaled for wo, w2, w3, router gate and experts' w2/w3; embeddings normal(0, 1); output
// trunc-normal std dim^-0.5 cut at ±3σ; norms ones), each value a pure function of
// (seed, FQN, index) so that any rank initialises any slice identically.
// This module does no MPI.
#ifndef DSV3_MODEL_PARAMS_H
#define DSV3_MODEL_PARAMS_H

#include <stdint.h>

#include "common/core/error.h"
#include "common/model/model_args.h"

enum { DSV3_FQN_CAPACITY = 96, DSV3_PARAM_MAX_DIMS = 3 };

// X(SLOT, fqn suffix). Layer slots get the prefix "layers.<id>.".
#define DSV3_PARAM_SLOTS(X)                                                                        \
    X(TOK_EMBEDDINGS, "tok_embeddings.weight")                                                     \
    X(ATTENTION_NORM, "attention_norm.weight")                                                     \
    X(WQ, "attention.wq.weight")                                                                   \
    X(WQ_A, "attention.wq_a.weight")                                                               \
    X(Q_NORM, "attention.q_norm.weight")                                                           \
    X(WQ_B, "attention.wq_b.weight")                                                               \
    X(WKV_A, "attention.wkv_a.weight")                                                             \
    X(KV_NORM, "attention.kv_norm.weight")                                                         \
    X(WKV_B, "attention.wkv_b.weight")                                                             \
    X(WO, "attention.wo.weight")                                                                   \
    X(FFN_NORM, "ffn_norm.weight")                                                                 \
    X(FF_W1, "feed_forward.w1.weight")                                                             \
    X(FF_W2, "feed_forward.w2.weight")                                                             \
    X(FF_W3, "feed_forward.w3.weight")                                                             \
    X(GATE, "moe.router.gate.weight")                                                              \
    X(EXPERTS_W1, "moe.experts.w1")                                                                \
    X(EXPERTS_W2, "moe.experts.w2")                                                                \
    X(EXPERTS_W3, "moe.experts.w3")                                                                \
    X(SHARED_W1, "moe.shared_experts.w1.weight")                                                   \
    X(SHARED_W2, "moe.shared_experts.w2.weight")                                                   \
    X(SHARED_W3, "moe.shared_experts.w3.weight")                                                   \
    X(NORM, "norm.weight")                                                                         \
    X(OUTPUT, "output.weight")

#define DSV3_PARAM_SLOT_ENUM(slot, suffix) DSV3_P_##slot,
typedef enum { DSV3_PARAM_SLOTS(DSV3_PARAM_SLOT_ENUM) DSV3_PARAM_SLOT_COUNT } Dsv3ParamSlot;
#undef DSV3_PARAM_SLOT_ENUM

typedef enum { DSV3_GROUP_EMBEDDING, DSV3_GROUP_LAYER, DSV3_GROUP_HEAD } Dsv3GroupKind;

typedef struct {
    char fqn[DSV3_FQN_CAPACITY]; // "" when the group has no such slot
    int ndim;
    int64_t shape[DSV3_PARAM_MAX_DIMS];
    int64_t numel;      // 0 when absent
    int64_t offset;     // into the group's flat buffers
    float *data, *grad; // views (NULL when absent)
} Dsv3Param;

typedef struct {
    Dsv3GroupKind kind;
    int64_t layer_id; // DSV3_GROUP_LAYER only
    int moe;          // a MoE layer (layer_id ≥ n_dense_layers)
    Dsv3Param params[DSV3_PARAM_SLOT_COUNT];
    int64_t numel; // elements of the flat buffers
    float *data, *grad, *adam_m, *adam_v;
} Dsv3ParamGroup;

// Lays out a group (FQNs, shapes, offsets, numel) without allocating: data pointers stay NULL.
// For tools that need the model's tensor list without its memory (checkpoint conversion).
void dsv3_param_group_layout(Dsv3ParamGroup *group, const Dsv3ModelArgs *args, Dsv3GroupKind kind,
                             int64_t layer_id);

// Lays out and allocates a group (values, zeroed gradients and moments). `layer_id` is used
// for DSV3_GROUP_LAYER only.
Dsv3Err dsv3_param_group_create(Dsv3ParamGroup *group, const Dsv3ModelArgs *args,
                                Dsv3GroupKind kind, int64_t layer_id);

void dsv3_param_group_destroy(Dsv3ParamGroup *group);

// Fills the values of a group with torchtitan's initialisation, seeded by `seed`.
void dsv3_param_group_init(Dsv3ParamGroup *group, const Dsv3ModelArgs *args, uint64_t seed);

#endif
