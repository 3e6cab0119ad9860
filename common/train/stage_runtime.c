// stage_runtime: the model of one stage rank, from the launch.
#include "stage_runtime.h"

#include "common/comm/param_store_fsdp.h"
#include "common/comm/plan.h"

static Dsv3Err fsdp_store_create(Dsv3ParamStore **out, const Dsv3KernelContext *kernels,
                                 const Dsv3ModelArgs *args, const Dsv3StageRange *range,
                                 uint64_t seed, void *arg) {
    return dsv3_param_store_fsdp_create(out, kernels, args, range, seed, arg);
}

// Without FSDP: the rank's whole pieces (its tensor-parallel cut of every tensor).
static Dsv3Err whole_store_create(Dsv3ParamStore **out, const Dsv3KernelContext *kernels,
                                  const Dsv3ModelArgs *args, const Dsv3StageRange *range,
                                  uint64_t seed, void *arg) {
    const Dsv3FsdpOptions *fsdp = arg;
    return dsv3_param_store_local_create(out, kernels, args, range, &fsdp->spec, seed);
}

Dsv3Err dsv3_stage_model_create(Dsv3Model **out, const Dsv3Launch *launch,
                                const Dsv3PlanChunk *chunk, int32_t eos_id,
                                Dsv3CollectivesMpi *collectives, Dsv3Experts *experts) {
    const Dsv3Topology *t = &launch->topology;
    const Dsv3ModelArgs *args = &launch->model;
    Dsv3PlanOptions plan;
    DSV3_CALL(dsv3_plan_options_from_config(&launch->config, &plan));
    Dsv3StageRange range;
    DSV3_CALL(dsv3_plan_stage_range(args, &plan, chunk->stage, &range));
    range.dense = 1;
    range.routed = t->n_expert == 0;
    Dsv3ModelOptions opt = plan.model;
    opt.eos_id = eos_id;
    opt.slots = chunk->slots;
    Dsv3FsdpOptions fsdp = {.spec = dsv3_plan_stage_spec(&t->dims, &t->coord),
                            .collectives = collectives,
                            .pipelined = t->dims.pp > 1,
                            .split_backward = opt.split_backward};
    DSV3_CALL(dsv3_reshard_policy_parse(launch->config.parallelism.fsdp_reshard_after_forward,
                                        &fsdp.policy));
    Dsv3StoreFactory sharded = {fsdp_store_create, &fsdp}, whole = {whole_store_create, &fsdp};
    return dsv3_model_create_stage(out, args, &opt, &range, (uint64_t)launch->config.debug.seed,
                                   dsv3_collectives_mpi_interface(collectives),
                                   fsdp.spec.fsdp > 1 ? &sharded : &whole, experts);
}

void dsv3_stage_report_loss_once(const Dsv3Topology *t, double *loss_sum, int64_t *n_labels) {
    if (t->coord.tp == 0) return;
    *loss_sum = 0;
    *n_labels = 0;
}
