// optimizer: the end of a training step on one rank — clip, expert-bias update, AdamW.
//
// Runs after the step's gradients (and tokens per expert) are complete on this rank, i.e.
// after any data-parallel reduction, on what the rank owns: the flat shards of its parameter
// store (param_store.h) and the expert biases of its stage's MoE layers. In torchtitan's order:
// the global L2 norm of all gradients (this rank's share of its square comes from
// dsv3_optimizer_grad_sum_squares; the caller sums the shares of all ranks); every gradient
// scaled by min(1, max_norm / (norm + 1e-6)) (clip_grad_norm_); the aux-loss-free bias update
// of every MoE layer, expert_bias += δ − mean(δ) with δ = load_balance_coeff · sign(mean(n) − n)
// from the step's tokens per expert n; AdamW on every parameter; gradients and token counts
// cleared for the next step. Every kernel runs through the model's kernel context.
// No MPI here.
#ifndef DSV3_TRAIN_OPTIMIZER_H
#define DSV3_TRAIN_OPTIMIZER_H

#include <stdint.h>

#include "common/model/params.h"

#include "common/core/config.h"
#include "common/core/error.h"
#include "common/model/model.h"

// torch.nn.utils.clip_grad_norm_'s guard against division by zero.
#define DSV3_CLIP_EPS 1e-6

typedef struct {
    double lr; // this step's learning rate (schedule applied)
    float beta1, beta2, eps, weight_decay;
    double max_norm; // training.max_norm
    int64_t step;    // 1-based, for AdamW's bias correction
} Dsv3OptimizerStep;

// The step of training.max_norm and the [optimizer] section at learning rate `lr`.
Dsv3OptimizerStep dsv3_optimizer_step_of(const Dsv3Config *cfg, double lr, int64_t step);

// *sum_squares = the squared L2 norm of every gradient this rank owns, in double; with tensor
// parallelism, replicated tensors count on tp rank 0 only (a sum over the tp group counts every
// element once).
Dsv3Err dsv3_optimizer_grad_sum_squares(Dsv3Model *m, double *sum_squares);

// Clips with the global norm sqrt(sum_squares) (computed by the caller, possibly over several
// ranks), updates expert biases, steps AdamW, clears gradients and counts.
Dsv3Err dsv3_optimizer_step(Dsv3Model *m, const Dsv3OptimizerStep *s, double sum_squares);

// A step whose global gradient norm is not finite: leaves parameters, expert biases and AdamW
// state as they are and clears gradients and counts. *group and fqn (DSV3_FQN_CAPACITY) name
// the first group (forward order) and tensor of this rank with a NaN or infinite gradient
// (-1 and "" when it owns none).
Dsv3Err dsv3_optimizer_skip(Dsv3Model *m, int32_t *group, char *fqn);

// The same over a parameter store alone (an expert server's routed experts, which have no
// expert biases): the squared norm of its gradients; clipping and AdamW (gradients cleared);
// a skipped step (gradients cleared, the first non-finite group and tensor named).
Dsv3Err dsv3_optimizer_store_sum_squares(const Dsv3KernelContext *k, const Dsv3ParamStore *st,
                                         double *sum_squares);
Dsv3Err dsv3_optimizer_store_step(const Dsv3KernelContext *k, const Dsv3ParamStore *st,
                                  const Dsv3OptimizerStep *s, double sum_squares);
Dsv3Err dsv3_optimizer_store_skip(const Dsv3KernelContext *k, const Dsv3ParamStore *st,
                                  int32_t *group, char *fqn);

// Test hook: with DSV3_TEST_NONFINITE_GRAD=STEP:FQN set, at step STEP the rank that owns the
// first element of tensor FQN's gradient sets it to NaN. Call before the gradient norm.
Dsv3Err dsv3_optimizer_test_inject(Dsv3Model *m, int64_t step);

#endif
