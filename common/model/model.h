// model: DeepSeek-V3 on one pipeline stage — embedding, layers, final norm, output head and
// loss — with its parameters, expert-load state and activations.
//
// A model is built for one micro-batch shape (B sequences of T tokens). A training step is
// any number of micro-batches (dsv3_model_forward, then dsv3_model_backward), which add up
// parameter gradients and tokens per expert; the optimizer (train/optimizer.h) then uses and
// clears them. This module holds a whole model (one stage); pipeline stages come later.
// Every op runs on the model's CPU kernel context, whose workspace is sized at creation for
// the OpenMP thread count of the creating thread: run the model with at most that many.
// Legend: N = B × T, D dim, V vocab, E experts. No MPI here.
#ifndef DSV3_MODEL_MODEL_H
#define DSV3_MODEL_MODEL_H

#include <stdint.h>

#include "common/core/error.h"
#include "common/model/layer.h"
#include "common/model/model_args.h"
#include "common/model/params.h"

typedef struct {
    int64_t batch, seq_len; // micro-batch shape
    int32_t eos_id;         // document boundary of block-causal masks
    Dsv3AcMode ac_mode;     // none, op, or full (for every layer, or see ac_every)
    int64_t ac_every;       // > 0: full AC for layers with (id + 1) % ac_every == 0 only
    int64_t loss_chunk;     // tokens per chunk of the fused output head + loss
    uint64_t seed;          // initialisation
} Dsv3ModelOptions;

typedef struct Dsv3Model Dsv3Model;

// Allocates and initialises (torchtitan's init, seeded) a whole model.
Dsv3Err dsv3_model_create(Dsv3Model **out, const Dsv3ModelArgs *args, const Dsv3ModelOptions *opt);
void dsv3_model_destroy(Dsv3Model *m);

const Dsv3ModelArgs *dsv3_model_args(const Dsv3Model *m);

// The kernel context the model's ops run on (with its workspace), for the optimizer.
const Dsv3KernelContext *dsv3_model_kernel_context(const Dsv3Model *m);

// Parameter groups: [0] embedding, [1 … n_layers] layers, [n_layers + 1] head.
Dsv3ParamGroup *dsv3_model_groups(Dsv3Model *m, int *count);

// The parameter with this FQN, or NULL.
Dsv3Param *dsv3_model_find(Dsv3Model *m, const char *fqn);

// Expert bias (E) and tokens per expert (E) accumulated since the last clear, of a MoE layer;
// NULL for dense layers.
float *dsv3_model_expert_bias(Dsv3Model *m, int64_t layer);
int64_t *dsv3_model_tokens_per_expert(Dsv3Model *m, int64_t layer);

// Forward of one micro-batch: tokens (B, T), every id in [0, V) (else an error naming the
// position). Keeps what backward needs; adds the micro-batch's tokens per expert.
Dsv3Err dsv3_model_forward(Dsv3Model *m, const int32_t *tokens);

// Logits (N, V) of the last forward (for tests and evaluation).
Dsv3Err dsv3_model_logits(Dsv3Model *m, float *logits);

// Loss and backward of the last forward: *loss_sum = Σ cross-entropy over labels (B, T) that
// are not DSV3_IGNORE_INDEX, *n_labels their count; parameter gradients += the gradient of
// grad_scale × loss_sum (grad_scale = 1 / labels in the whole global batch). With
// grad_scale = 0 no backward runs (evaluation).
Dsv3Err dsv3_model_backward(Dsv3Model *m, const int32_t *labels, float grad_scale, double *loss_sum,
                            int64_t *n_labels);

// Bytes of activations and scratch (the kernel workspace included) the model allocated (for
// memory reports).
int64_t dsv3_model_activation_bytes(const Dsv3Model *m);

#endif
