// stage_runtime: a stage rank's model and the services it runs on, built from the launch.
//
// The stage's pipeline range (layers, embedding on the first stage, head on the last) comes
// from the layout (comm/layout.h), its parameter store from the parameter table laid out as
// comm/plan.h says (today the local store: whole groups, replicated over the data-parallel
// ranks), its routed experts are computed locally when the job has no expert servers, its
// kernels run on the CPU backend with one workspace sized for every op, and its collectives
// are `collectives` (the caller's: MPI over the stage rank's communicators, or one-rank).
// What is not implemented yet is refused here with a message naming it, never silently
// replaced.
#ifndef DSV3_TRAIN_STAGE_RUNTIME_H
#define DSV3_TRAIN_STAGE_RUNTIME_H

#include "common/comm/launch.h"
#include "common/core/config.h"
#include "common/model/model.h"

typedef struct {
    Dsv3KernelContext kernels;
    void *workspace;
    Dsv3ParamStore *store;
    Dsv3LocalExperts experts;
    Dsv3Model *model;
} Dsv3StageRuntime;

// The model options a config asks for (batch, seq_len, activation checkpointing, one
// activation slot: the step runs each micro-batch's forward and backward together).
Dsv3Err dsv3_stage_model_options(const Dsv3Config *cfg, int32_t eos_id, Dsv3ModelOptions *out);

// Builds this stage rank's runtime (collectives are the caller's and must outlive it).
// `rt` must be zeroed; on failure it holds what was built, for dsv3_stage_runtime_destroy.
Dsv3Err dsv3_stage_runtime_create(Dsv3StageRuntime *rt, const Dsv3Launch *launch, int32_t eos_id,
                                  Dsv3Collectives *collectives);

// Frees what was built. Safe on a zeroed or partly built runtime.
void dsv3_stage_runtime_destroy(Dsv3StageRuntime *rt);

#endif
