// stage_runtime: a stage rank's model and the services it runs on, built from the launch.
//
// The stage's pipeline range (layers, embedding on the first stage, head on the last) comes
// from the layout (comm/layout.h); its parameter store holds the range's groups as comm/plan.h
// lays them out (today the local store: whole groups, replicated over the data-parallel
// ranks; the layouts that would need more are refused at start-up, comm/launch.h); its routed
// experts are computed locally when the job has no expert servers; its kernels run on the CPU
// backend with one workspace sized for every op; its collectives are the caller's.
#ifndef DSV3_TRAIN_STAGE_RUNTIME_H
#define DSV3_TRAIN_STAGE_RUNTIME_H

#include "common/comm/launch.h"
#include "common/core/config.h"
#include "common/model/model.h"

// The model options a config asks for (batch, seq_len, activation checkpointing, one
// activation slot: a step runs each micro-batch's forward and backward together).
Dsv3Err dsv3_stage_model_options(const Dsv3Config *cfg, int32_t eos_id, Dsv3ModelOptions *out);

// This stage rank's model with its services (freed with dsv3_model_destroy); `collectives`
// must outlive it.
Dsv3Err dsv3_stage_model_create(Dsv3Model **out, const Dsv3Launch *launch, int32_t eos_id,
                                Dsv3Collectives *collectives);

#endif
