// expert_load: how evenly a step's tokens spread over the routed experts of each MoE layer.
//
// A stage rank captures, after the data-parallel all-reduce and before the optimizer step
// (which uses and clears them), every MoE layer's tokens per expert of the step and the expert
// biases that routed them; the coordinator receives that (report.h) and summarises each layer:
// max/mean and min/mean of the counts (1 is perfect balance; max/mean is the slowdown of
// expert-parallel compute, which waits for its busiest expert) and the L2 norm of the bias
// (the aux-loss-free balancer's correction). Rows of dense layers stay zero. Legend: L layers,
// E routed experts per layer. No MPI here.
#ifndef DSV3_TRAIN_EXPERT_LOAD_H
#define DSV3_TRAIN_EXPERT_LOAD_H

#include <stdint.h>

#include "common/core/error.h"
#include "common/model/model.h"

typedef struct {
    int64_t n_layers, n_experts, n_dense_layers;
    int64_t *counts; // (L, E) tokens routed to each expert in the step (top-k: k per token)
    float *bias;     // (L, E) expert_bias of each MoE layer during the step
} Dsv3ExpertLoad;

typedef struct {
    int64_t tokens;       // Σ counts of the layer (tokens × top_k)
    int64_t max, min;     // busiest and idlest expert
    double max_over_mean; // max / (tokens / E); 0 when the layer saw no tokens
    double min_over_mean;
    double bias_norm; // ‖expert_bias‖₂
} Dsv3ExpertLayerLoad;

// Zeroed (L, E) buffers for a model of these arguments.
Dsv3Err dsv3_expert_load_create(Dsv3ExpertLoad *load, const Dsv3ModelArgs *args);
void dsv3_expert_load_destroy(Dsv3ExpertLoad *load);

// Layer l has routed experts (torchtitan: layers from n_dense_layers on are MoE).
int dsv3_expert_load_is_moe(const Dsv3ExpertLoad *load, int64_t layer);

// Copies the current tokens per expert and expert biases of the rank's models (one per
// pipeline stage it holds; zeros for layers none of them runs). Call before the optimizer step
// clears the counts.
void dsv3_expert_load_capture(Dsv3ExpertLoad *load, Dsv3Model *const *models, int64_t n_models);

// The summary of one MoE layer.
void dsv3_expert_load_layer(const Dsv3ExpertLoad *load, int64_t layer, Dsv3ExpertLayerLoad *out);

#endif
