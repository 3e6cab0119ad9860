// model: DeepSeek-V3 on one pipeline stage — a range of layers, the embedding on the first
// stage, the final norm, output head and loss on the last — over injected services.
//
// A model is built for one micro-batch shape (B sequences of T tokens) and a number of
// activation slots: the micro-batches it can hold between their forward and their backward,
// so that a pipeline schedule can run several forwards before the matching backwards. Forward
// of the first stage takes tokens; forward of any other stage takes the previous stage's
// output activations and the document ids that travel with them (block-causal masks).
// Backward of the last stage takes labels and computes the loss; backward of any other stage
// takes the gradient of its output (from the next stage) and leaves the gradient of its input
// (for the previous stage). A training step is any number of micro-batches, whose parameter
// gradients and tokens per expert add up; the optimizer (train/optimizer.h) then uses and
// clears them. With the whole model on one stage, forward(tokens) then backward(labels) is the
// whole computation.
//
// The model owns activations and the expert-load state (expert biases and token counts of its
// MoE layers) and no parameter memory. It reaches everything else through its services
// (Dsv3ModelServices): the kernel context (backend, stream, workspace), the parameter store
// (param_store.h: acquire a group before its forward or backward, release it after, hand its
// gradients over after backward), the collectives on named groups (collectives.h: tensor and
// context parallel layers call them) and the routed experts (experts.h). It has no MPI and no
// CUDA of its own. Tensors handed in and out are in the kernel context's memory space.
//
// Tensor parallelism (tp > 1, the store's groups cut by tp; layer.h): the stage's input and
// output activations and their gradients are this tp rank's rows of the micro-batch (sequence
// parallelism), Nl = N / tp of them; tokens, labels and document ids are the whole micro-batch
// on every tp rank; every tp rank returns the same loss.
//
// Split backward (opt.split_backward, a zero-bubble pipeline): dsv3_model_backward is the I
// action — the input gradient, the loss, and every gradient but the layers' linear weights' —
// and keeps in the slot what those weight gradients need (layer.h); the W action,
// dsv3_model_backward_weight, adds them later. Both together add exactly what one backward
// adds, bit for bit. The slot takes no forward or backward between the I and the W (its W reads
// the activations of layers that are not checkpointed in place; checkpointed layers' are copied).
//
// Context parallelism (opt.cp > 1, the collectives' cp group; layer.h): tokens, labels and
// document ids are still the whole micro-batch (B, T) on every cp rank, and the rank takes its
// load-balanced T / cp positions of each sequence from them; its activations, their gradients
// and its loss are those tokens' alone (the caller adds the losses over the cp ranks).
//
// Legend: N = B × T / cp tokens of this rank, Nl = N / tp, D dim, V vocab, E experts.
#ifndef DSV3_MODEL_MODEL_H
#define DSV3_MODEL_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "common/core/error.h"
#include "common/model/collectives.h"
#include "common/model/experts.h"
#include "common/model/layer.h"
#include "common/model/model_args.h"
#include "common/model/param_store.h"
#include "common/model/params.h"
#include "kernels/kernels.h"

typedef struct {
    int64_t batch, seq_len; // micro-batch shape
    int64_t cp;             // context-parallel degree (0 or 1: none)
    int cp_ring;            // cp > 1: keys and values pass around the cp ring (torchtitan's
                            // "alltoall" rotation) instead of being all-gathered
    int32_t eos_id;         // document boundary of block-causal masks (< 0: none)
    Dsv3AcMode ac_mode;     // none, op, or full (for every layer, or see ac_every)
    int64_t ac_every;       // > 0: full AC for layers with (id + 1) % ac_every == 0 only
    int64_t loss_chunk;     // tokens per chunk of the fused output head + loss
    int gather_logits;      // tp > 1: each chunk's logits gathered over the tp ranks before
                            // the loss (parallelism.disable_loss_parallel), else loss parallel
    int64_t slots;          // activation slots: micro-batches between forward and backward
    int split_backward;     // backward leaves the layers' linear weight gradients to
                            // dsv3_model_backward_weight (the v schedules' I and W); the
                            // store keeps the layer groups' gradients in between (keep)
    Dsv3TensorDtype matmul_dtype; // what the GEMMs compute in (dsv3_kernel_context_set_matmul)
    Dsv3Backend backend;          // the kernel context of dsv3_model_create_local / _stage (0:
    int device;                   // the CPU) and its CUDA device (ignored on the CPU)
} Dsv3ModelOptions;

// What the model calls. Owned by the caller, who keeps them alive as long as the model; the
// store's range says which layers (and embedding, head) this stage runs.
typedef struct {
    const Dsv3KernelContext *kernels;
    Dsv3ParamStore *params;
    Dsv3Collectives *collectives;
    Dsv3Experts *experts; // needed when the stage has MoE layers
} Dsv3ModelServices;

typedef struct Dsv3Model Dsv3Model;

// The workspace the model's ops (and the optimizer's, over the store's shards) need on
// `kernels`: the largest of dsv3_workspace_bytes over their shapes, for the calling thread's
// OpenMP thread count. The caller sizes kernels->workspace with it before dsv3_model_create.
Dsv3Err dsv3_model_workspace_bytes(const Dsv3KernelContext *kernels, const Dsv3ModelArgs *args,
                                   const Dsv3ModelOptions *opt, const Dsv3ParamStore *params,
                                   size_t *bytes);

// Allocates a stage's activations for the store's range. The kernel context's workspace must
// hold dsv3_model_workspace_bytes.
Dsv3Err dsv3_model_create(Dsv3Model **out, const Dsv3ModelArgs *args, const Dsv3ModelOptions *opt,
                          const Dsv3ModelServices *services);

// A stage with services of its own: a kernel context (opt->backend on opt->device) with the
// workspace the model needs, a local parameter store holding the groups of `range` (NULL: the
// whole model) initialised with `seed`, and local experts when the range holds the routed
// experts; all owned by the model. `collectives` (NULL: one rank alone) stays the caller's and must
// outlive the model.
Dsv3Err dsv3_model_create_local(Dsv3Model **out, const Dsv3ModelArgs *args,
                                const Dsv3ModelOptions *opt, const Dsv3StageRange *range,
                                uint64_t seed, Dsv3Collectives *collectives);

// How dsv3_model_create_stage makes its parameter store: the groups of `range`, in memory of
// `kernels` (which outlives the store), initialised with `seed`; `arg` is the factory's.
typedef struct {
    Dsv3Err (*create)(Dsv3ParamStore **out, const Dsv3KernelContext *kernels,
                      const Dsv3ModelArgs *args, const Dsv3StageRange *range, uint64_t seed,
                      void *arg);
    void *arg;
} Dsv3StoreFactory;

// As dsv3_model_create_local, with the parameter store `store` makes (NULL: a local store),
// which the model owns, and, for a range without the routed experts (range->routed = 0) that
// has MoE layers, the caller's `experts` (the pipeline stage's expert servers), which must
// outlive the model.
Dsv3Err dsv3_model_create_stage(Dsv3Model **out, const Dsv3ModelArgs *args,
                                const Dsv3ModelOptions *opt, const Dsv3StageRange *range,
                                uint64_t seed, Dsv3Collectives *collectives,
                                const Dsv3StoreFactory *store, Dsv3Experts *experts);

// Makes `kernels` compute its GEMMs in `dtype` (a model option's matmul_dtype); when its
// backend cannot, the error names training.mixed_precision_param and says why.
Dsv3Err dsv3_model_kernels_matmul(Dsv3KernelContext *kernels, Dsv3TensorDtype dtype);

// Frees the activations (and the services of dsv3_model_create_local). NULL is allowed.
void dsv3_model_destroy(Dsv3Model *m);

const Dsv3ModelArgs *dsv3_model_args(const Dsv3Model *m);
const Dsv3ModelServices *dsv3_model_services(const Dsv3Model *m);

// The parameter with this FQN in this stage's store, or NULL.
Dsv3Param *dsv3_model_find(Dsv3Model *m, const char *fqn);

// Expert bias (E) and tokens per expert (E) accumulated since the last clear, of MoE layer
// `layer` of this stage; NULL for dense layers and layers of other stages.
float *dsv3_model_expert_bias(Dsv3Model *m, int64_t layer);
int64_t *dsv3_model_tokens_per_expert(Dsv3Model *m, int64_t layer);

// The input of a stage's forward: tokens (B, T) on the first stage, every id in [0, V) (else
// an error naming the position); on the others x (Nl, D), the previous stage's output, and doc
// (B, T), its document ids (NULL for causal masks).
typedef struct {
    const int32_t *tokens;
    const float *x;
    const int32_t *doc;
} Dsv3StageInput;

// Forward of one micro-batch into activation slot `slot` (in [0, slots)): keeps what backward
// needs; adds the micro-batch's tokens per expert. Not the last stage: the output is then
// dsv3_model_output (and dsv3_model_doc).
Dsv3Err dsv3_model_forward(Dsv3Model *m, int64_t slot, const Dsv3StageInput *in);

// A non-last stage's output (Nl, D) of slot's last forward, and its document ids (B, T), the
// whole sequences' (NULL for causal masks): valid until the slot's next forward.
const float *dsv3_model_output(const Dsv3Model *m, int64_t slot);
const int32_t *dsv3_model_doc(const Dsv3Model *m, int64_t slot);

// Logits (N, V) of slot's last forward, last stage only and without tp (for tests and
// evaluation); under cp, of this rank's tokens.
Dsv3Err dsv3_model_logits(Dsv3Model *m, int64_t slot, float *logits);

// The input of a stage's backward: on the last stage labels (B, T), DSV3_IGNORE_INDEX or in
// [0, V), and grad_scale (1 / labels in the whole global batch; 0: the loss only, no
// backward, for evaluation); on the others dout (Nl, D), the gradient of the stage's output.
typedef struct {
    const int32_t *labels;
    float grad_scale;
    const float *dout;
} Dsv3StageGrad;

// Backward of slot's micro-batch: parameter gradients handed to the store (under tp, the
// replicated tensors' are this rank's share: the caller sums them over the tp group). The last
// stage also returns *loss_sum = Σ cross-entropy over its labels and *n_labels their count
// (others 0). Not the first stage: the gradient of the input is then dsv3_model_input_grad.
// With split_backward the layers' linear weight gradients are deferred to
// dsv3_model_backward_weight, which must run on the slot before its next backward (else
// DSV3_ERR_USAGE); grad_scale 0 defers nothing.
Dsv3Err dsv3_model_backward(Dsv3Model *m, int64_t slot, const Dsv3StageGrad *grad, double *loss_sum,
                            int64_t *n_labels);

// The W action of a split backward: adds the weight gradients that slot's last backward
// deferred and hands the layers' gradients to the store. Nothing to do (a backward without
// split_backward, or of an evaluation) is not an error.
Dsv3Err dsv3_model_backward_weight(Dsv3Model *m, int64_t slot);

// A non-first stage's input gradient (Nl, D) from its last backward: valid until the next
// backward of any slot.
const float *dsv3_model_input_grad(const Dsv3Model *m);

// Bytes of activations and scratch the model allocated (for memory reports).
int64_t dsv3_model_activation_bytes(const Dsv3Model *m);

// The bytes dsv3_model_activation_bytes will report for a stage of `range` built with `opt`
// (its cp included) and tensor-parallel degree tp, computed without allocating them (memory
// plans of any model size).
Dsv3Err dsv3_model_plan_activation_bytes(const Dsv3ModelArgs *args, const Dsv3ModelOptions *opt,
                                         const Dsv3StageRange *range, int64_t tp, int64_t *bytes);

#endif
