// stage_loop: a stage rank's side of training (DESIGN.md §4).
//
// Builds the stage's runtime (train/stage_runtime.h: torchtitan's initialisation, seeded by
// debug.seed), then
// serves steps until the coordinator says stop: forward and backward of every micro-batch it
// receives, the all-reduce of gradients and tokens per expert over the data-parallel ranks
// (every rank holds the whole model for now: replicated data parallelism), clipping,
// expert-bias update, AdamW, and a report to the coordinator. Collective over the job.
#ifndef DSV3_TRAIN_STAGE_LOOP_H
#define DSV3_TRAIN_STAGE_LOOP_H

#include "common/comm/launch.h"
#include "common/model/model.h"

Dsv3Err dsv3_stage_train(Dsv3Launch *launch);

#endif
