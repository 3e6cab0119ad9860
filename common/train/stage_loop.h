// stage_loop: a stage rank's side of training (DESIGN.md §4).
//
// Builds the model from the config (torchtitan's initialisation, seeded by debug.seed), then
// serves steps until the coordinator says stop: forward and backward of every micro-batch it
// receives, the all-reduce of gradients and tokens per expert over the data-parallel ranks
// (every rank holds the whole model for now: replicated data parallelism), clipping,
// expert-bias update, AdamW, and a report to the coordinator. Collective over the job.
#ifndef DSV3_TRAIN_STAGE_LOOP_H
#define DSV3_TRAIN_STAGE_LOOP_H

#include "common/comm/launch.h"
#include "common/model/model.h"

Dsv3Err dsv3_stage_train(Dsv3Launch *launch);

// The model options a config asks for (batch, seq_len, activation checkpointing, seed).
Dsv3Err dsv3_stage_model_options(const Dsv3Config *cfg, int32_t eos_id, Dsv3ModelOptions *out);

#endif
