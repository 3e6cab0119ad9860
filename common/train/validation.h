// validation: the loss on held-out data, without gradients, every validation.freq steps.
//
// The held-out stream: validation.dataset = "synthetic" takes windows of the built-in dataset
// (same seed and vocabulary as training, so the same entropy floor) counted down from window
// 2^62 − 1, a range training never reaches; "tokens" reads validation.dataset_path, a uint32
// token file like training's. Each validation pass starts from the stream's beginning, so
// passes are comparable: validation.steps batches of validation.local_batch_size sequences
// per data-parallel rank (each rank its contiguous slice, as in training), or with steps = -1
// the whole held-out set (the token file's windows; DSV3_VALIDATION_SYNTHETIC_WINDOWS for the
// synthetic dataset). validation.seq_len and validation.local_batch_size of -1 take
// training's. The model is built for one micro-batch shape (training.local_batch_size ×
// training.seq_len), so held-out sequences travel in micro-batches of that shape: rows beyond
// the batch and positions beyond validation.seq_len are padding (DSV3_PAD_TOKEN) with ignored
// labels, which changes no loss because attention is causal. The loss is Σ cross-entropy /
// labels over the whole pass (dsv3_model_backward with grad_scale 0: forward and loss only);
// the pass's tokens per expert are cleared so that they never steer the expert-bias update.
#ifndef DSV3_TRAIN_VALIDATION_H
#define DSV3_TRAIN_VALIDATION_H

#include <stdint.h>

#include "common/core/error.h"
#include "common/comm/launch.h"
#include "common/comm/protocol.h"
#include "common/model/model.h"
#include "common/train/pipeline_step.h"
#include "common/train/report.h"

// Held-out windows of the synthetic dataset in a pass over "the whole set" (steps = -1).
enum { DSV3_VALIDATION_SYNTHETIC_WINDOWS = 64 };

typedef struct Dsv3Validation Dsv3Validation;

// Coordinator: opens the held-out stream (NULL *out when validation.enable is false).
Dsv3Err dsv3_validation_open(Dsv3Validation **out, const Dsv3Launch *launch);
void dsv3_validation_close(Dsv3Validation *v);

// Whether a validation pass follows training step `step`.
int dsv3_validation_due(const Dsv3Validation *v, int64_t step);

// Coordinator, collective over the job: one validation pass after step `step`. `gather` is the
// coordinator's report buffers; `windows` holds local_batch_size × (seq_len + 1) int32 of
// training's shape.
Dsv3Err dsv3_validation_run(Dsv3Validation *v, const Dsv3Launch *launch, Dsv3ReportGather *gather,
                            int64_t step, int32_t *windows, double *loss, int64_t *tokens,
                            double *seconds);

// Stage rank: serves a validation plan (the windows on the first and last pipeline stages,
// forward and loss of each micro-batch through the pipeline, train/pipeline_step.h) and fills
// the report (loss_sum, n_labels, seconds of the validation phase).
Dsv3Err dsv3_validation_stage(const Dsv3PipelineStage *stage, const Dsv3Launch *launch,
                              const Dsv3StepPlan *plan, int32_t *windows, int32_t *tokens,
                              int32_t *labels, Dsv3StepReport *r);

#endif
