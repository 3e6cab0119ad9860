// stage_runtime: a stage rank's models and the services they run on, built from the launch.
//
// A stage rank holds one model per pipeline stage of its schedule (comm/plan.h
// dsv3_plan_rank_chunks: one, or several under a looped schedule). A stage's range (layers,
// embedding on the first stage, head on the last) comes from the layout (comm/layout.h); its
// parameter store holds the range's groups as comm/plan.h
// lays them out (the local store, the rank's whole tensor-parallel pieces replicated over the
// data-parallel ranks, when the FSDP group dp_shard × cp has one rank; otherwise the FSDP store of
// comm/param_store_fsdp.h, sharded over that group, with the reshard policy of
// parallelism.fsdp_reshard_after_forward); its routed
// experts are computed locally when the job has no expert servers, and are otherwise the
// caller's (the stage's expert servers, comm/expert_exchange.h); its kernels run on the CPU
// backend with one workspace sized for every op; its collectives are the caller's.
#ifndef DSV3_TRAIN_STAGE_RUNTIME_H
#define DSV3_TRAIN_STAGE_RUNTIME_H

#include "common/comm/collectives_mpi.h"
#include "common/comm/launch.h"
#include "common/comm/plan.h"
#include "common/core/config.h"
#include "common/model/model.h"

// The model of pipeline stage `chunk` of this stage rank with its services (freed with
// dsv3_model_destroy); `collectives` and `experts` (the expert servers' when the job has them,
// else NULL) must outlive it. Collective on the FSDP group when it has more than one rank.
Dsv3Err dsv3_stage_model_create(Dsv3Model **out, const Dsv3Launch *launch,
                                const Dsv3PlanChunk *chunk, int32_t eos_id,
                                Dsv3CollectivesMpi *collectives, Dsv3Experts *experts);

// The ranks of a tp group compute the same loss over the same labels: the first of them
// reports it, the others zero their loss sum and label count.
void dsv3_stage_report_loss_once(const Dsv3Topology *t, double *loss_sum, int64_t *n_labels);

#endif
