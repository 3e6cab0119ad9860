// expert_server: what an expert server does in a training job (DESIGN.md §2, §4).
//
// Expert server j of ep in pipeline stage s owns experts [j·E/ep, (j+1)·E/ep) of every MoE layer
// of stage s: their weights, gradients and both AdamW moments (a local parameter store cut over
// ep, model/param_store.h), initialised as the one-process model's. It takes part in every
// job-wide message of comm/protocol.h in the stage ranks' order (plans, peak, checkpoint load
// and saves, the ready point), and in each step or validation pass it serves the stage ranks'
// requests (comm/expert_exchange.h) until the pass ends:
//   forward   the rows of every stage rank, grouped by expert, through the grouped SwiGLU
//             kernels; the rows and hidden activations are kept for the layer's backward (one
//             forward per layer in flight: a recomputed forward replaces it)
//   backward  the gradients of those outputs: input gradients back, weight gradients added
// After a training step's last request it adds its squared gradient norm to the stage ranks'
// (one global norm), then clips by the same factor and steps AdamW with the plan's rate, or
// skips the step when the norm is not finite, as the stage ranks do. It saves and loads its
// own boxes of the routed experts with the stage ranks' checkpoints (common/ckpt/checkpoint.h).
// At the end it logs what it served: rows, bytes, time computing and time waiting.
#ifndef DSV3_TRAIN_EXPERT_SERVER_H
#define DSV3_TRAIN_EXPERT_SERVER_H

#include "common/comm/launch.h"
#include "common/core/error.h"

// The role body of dsv3-expert in a training job.
Dsv3Err dsv3_expert_server_train(Dsv3Launch *launch);

#endif
