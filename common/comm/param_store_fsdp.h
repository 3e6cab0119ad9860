// param_store_fsdp: the FSDP (ZeRO-3) parameter store of a stage rank, over the stage's FSDP
// group (dp_shard × cp, comm/topology.h), with HSDP replicas over dp_replicate.
//
// Each rank owns 1/N of every tensor of its groups — dim-0 shards as the parameter table lays
// them out (model/params.h: rows cut in N chunks of ceil(rows / N), the last padded) — and of
// its gradient and both AdamW moments; nothing else persists. The store implements
// param_store.h's calls with non-blocking MPI on the FSDP group:
//   acquire  waits for the group's all-gather (one MPI_Iallgatherv per tensor straight into
//            the tensor's place in a pool buffer, so nothing is copied), started earlier by a
//            prefetch or now, and starts the all-gather of the group needed next (forward: the
//            next group; backward: the previous layer, a layer's experts after the layer), so
//            that communication overlaps compute. For backward it also hands out a zeroed
//            buffer for the group's full gradients.
//   release  after forward frees the gathered copy or keeps it (the reshard policy,
//            model/fsdp_plan.h); after backward always frees it.
//   reduce   starts the reduce-scatter of the group's gradients (one MPI_Ireduce_scatter per
//            tensor, fp32 sums, in place in the gradient buffer) and returns; it completes when
//            a buffer is needed and it is the oldest in flight, or at finish, and its sums are
//            then added to the shard's gradient (micro-batches accumulate there).
//   finish   completes every reduce-scatter, sums the shards' gradients over the HSDP replicas
//            (an all-reduce over dp_replicate) and drops every gathered copy.
// The sums are those of the one-process run (the loss is already divided by the global label
// count), in another order: results agree to rounding, not bitwise.
//
// Buffers are a fixed pool (model/fsdp_plan.h) allocated at creation, so the memory of a step
// does not change from step to step. Every wait runs under the protocol's watch (deadline,
// silent rank named). Host memory only: the CUDA backend has no FSDP store (start-up refuses
// it). Every call is collective on the FSDP group, in the same order on every rank (the
// model's order), and, for finish, on the dp_replicate group.
#ifndef DSV3_COMM_PARAM_STORE_FSDP_H
#define DSV3_COMM_PARAM_STORE_FSDP_H

#include <stdint.h>

#include "common/comm/collectives_mpi.h"
#include "common/core/error.h"
#include "common/model/fsdp_plan.h"
#include "common/model/param_store.h"
#include "common/model/params.h"

typedef struct {
    Dsv3ShardSpec spec;              // this rank's (comm/plan.h dsv3_plan_stage_spec)
    Dsv3CollectivesMpi *collectives; // its FSDP and dp_replicate groups carry the traffic
    Dsv3ReshardPolicy policy;
    int pipelined;      // pp > 1 (the default policy then keeps every group)
    int split_backward; // the model splits backward (kept gradient buffers: model/fsdp_plan.h)
} Dsv3FsdpOptions;

// Time spent on the store's communication since creation: `comm_seconds` from each operation's
// start to its observed completion, `wait_seconds` of that spent blocked in waits (the rest
// overlapped compute), `bytes` of the groups gathered and of the shards reduced.
typedef struct {
    double comm_seconds, wait_seconds;
    int64_t bytes;
} Dsv3FsdpTimes;

// Collective on the FSDP group: the groups of `range` laid out for this rank's FSDP shard, in
// host memory of `kernels` (CPU backend), initialised with `seed`; the buffer pool allocated.
// `opt->collectives` and `kernels` must outlive the store.
Dsv3Err dsv3_param_store_fsdp_create(Dsv3ParamStore **out, const Dsv3KernelContext *kernels,
                                     const Dsv3ModelArgs *args, const Dsv3StageRange *range,
                                     uint64_t seed, const Dsv3FsdpOptions *opt);

// The store's communication times (zero for a store of another kind).
Dsv3FsdpTimes dsv3_param_store_fsdp_times(const Dsv3ParamStore *store);

#endif
