// stage_loop: a stage rank's side of training (DESIGN.md §4).
//
// Builds the stage's runtime (train/stage_runtime.h: torchtitan's initialisation, seeded by
// debug.seed) and its pipeline schedule, then serves steps until the coordinator says stop:
// each micro-batch it receives (first and last pipeline stages) runs through the schedule
// (train/pipeline_step.h), then the reductions of gradients and tokens per expert over the
// data-parallel ranks, the global grad norm (over FSDP, expert servers and pipeline stages),
// clipping, expert-bias update, AdamW, and a report to the coordinator. Collective over the job.
#ifndef DSV3_TRAIN_STAGE_LOOP_H
#define DSV3_TRAIN_STAGE_LOOP_H

#include "common/comm/launch.h"
#include "common/model/model.h"

Dsv3Err dsv3_stage_train(Dsv3Launch *launch);

#endif
