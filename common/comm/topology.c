// topology: builds the job's communicators by splitting one duplicate of the job communicator;
// see topology.h.
//
// Every communicator is one MPI_Comm_split over the whole job, which every rank calls in the
// same order: members pass a colour that names their group (the stage index of the group's
// first member, or the pipeline stage, or the role) and a key that orders them by mesh index;
// everyone else passes MPI_UNDEFINED and gets MPI_COMM_NULL.
#include "topology.h"

#include <stddef.h>

#include "mpi_check.h"
#include "roles.h"

// Which mesh dimensions vary inside a stage-rank communicator.
enum {
    VARY_PP = 1 << 0,
    VARY_DP_REPLICATE = 1 << 1,
    VARY_DP_SHARD = 1 << 2,
    VARY_CP = 1 << 3,
    VARY_TP = 1 << 4,
};

// The number of parallel degrees in Dsv3ParallelDims, compared across ranks.
enum { TOPOLOGY_N_DEGREES = 6 };

static void topology_clear(Dsv3Topology *topo) {
    MPI_Comm *comms[] = {&topo->job,   &topo->pp,           &topo->dp_replicate, &topo->dp_shard,
                         &topo->dp,    &topo->dp_shard_cp,  &topo->cp,           &topo->tp,
                         &topo->stage, &topo->expert_group, &topo->moe,          &topo->role_comm};
    for (size_t i = 0; i < sizeof comms / sizeof comms[0]; i++)
        *comms[i] = MPI_COMM_NULL;
    topo->role = DSV3_ROLE_COORDINATOR;
    topo->job_rank = -1;
    topo->job_size = 0;
    topo->n_stage = 0;
    topo->n_expert = 0;
    topo->dims = (Dsv3ParallelDims){0};
    topo->stage_index = -1;
    topo->coord = (Dsv3StageCoord){-1, -1, -1, -1, -1};
    topo->expert_index = -1;
    topo->ep_rank = -1;
    topo->pp_stage = -1;
}

void dsv3_topology_destroy(Dsv3Topology *topo) {
    if (!topo) return;
    MPI_Comm *comms[] = {&topo->pp,           &topo->dp_replicate, &topo->dp_shard,  &topo->dp,
                         &topo->dp_shard_cp,  &topo->cp,           &topo->tp,        &topo->stage,
                         &topo->expert_group, &topo->moe,          &topo->role_comm, &topo->job};
    // Nothing useful can be done about a failed free at shutdown, so its code is not checked.
    for (size_t i = 0; i < sizeof comms / sizeof comms[0]; i++)
        if (*comms[i] != MPI_COMM_NULL) MPI_Comm_free(comms[i]);
    topology_clear(topo);
}

// Fails on every rank alike when the ranks were given different dims: one all-reduce of the
// degrees and their negations with MPI_MIN gives each degree's minimum and maximum.
static Dsv3Err topology_check_same_dims(MPI_Comm job, const Dsv3ParallelDims *dims) {
    const int64_t mine[TOPOLOGY_N_DEGREES] = {dims->pp, dims->dp_replicate, dims->dp_shard,
                                              dims->cp, dims->tp,           dims->ep};
    static const char *const keys[TOPOLOGY_N_DEGREES] = {
        "pipeline_parallel_degree", "data_parallel_replicate_degree", "data_parallel_shard_degree",
        "context_parallel_degree",  "tensor_parallel_degree",         "expert_parallel_degree"};
    int64_t bounds[2 * TOPOLOGY_N_DEGREES];
    for (int i = 0; i < TOPOLOGY_N_DEGREES; i++) {
        bounds[i] = mine[i];
        bounds[TOPOLOGY_N_DEGREES + i] = -mine[i];
    }
    DSV3_MPI_CALL(
        MPI_Allreduce(MPI_IN_PLACE, bounds, 2 * TOPOLOGY_N_DEGREES, MPI_INT64_T, MPI_MIN, job));
    for (int i = 0; i < TOPOLOGY_N_DEGREES; i++)
        DSV3_CHECK(bounds[i] == -bounds[TOPOLOGY_N_DEGREES + i], DSV3_ERR_USAGE,
                   "the ranks of the job disagree on parallelism.%s (from %lld to %lld); every "
                   "rank must build the topology from the same config",
                   keys[i], (long long)bounds[i], (long long)-bounds[TOPOLOGY_N_DEGREES + i]);
    return DSV3_OK;
}

// Colour of the stage-rank communicator in which the dimensions in `vary` vary: the stage
// index of its first member (the caller's coordinates with those dimensions at 0).
static Dsv3Err topology_stage_color(const Dsv3Topology *topo, int vary, int *color) {
    if (topo->role != DSV3_ROLE_STAGE) {
        *color = MPI_UNDEFINED;
        return DSV3_OK;
    }
    Dsv3StageCoord first = topo->coord;
    if (vary & VARY_PP) first.pp = 0;
    if (vary & VARY_DP_REPLICATE) first.dp_replicate = 0;
    if (vary & VARY_DP_SHARD) first.dp_shard = 0;
    if (vary & VARY_CP) first.cp = 0;
    if (vary & VARY_TP) first.tp = 0;
    int64_t index = 0;
    DSV3_CALL(dsv3_layout_stage_index(&topo->dims, &first, &index));
    *color = (int)index;
    return DSV3_OK;
}

// Collective over topo->job: the stage-rank communicator in which the dimensions in `vary` vary.
static Dsv3Err topology_split_stage(const Dsv3Topology *topo, int vary, MPI_Comm *out) {
    int color = MPI_UNDEFINED;
    DSV3_CALL(topology_stage_color(topo, vary, &color));
    int key = topo->role == DSV3_ROLE_STAGE ? (int)topo->stage_index : 0;
    DSV3_MPI_CALL(MPI_Comm_split(topo->job, color, key, out));
    return DSV3_OK;
}

// Fills the caller's place in the layout from its job rank.
static Dsv3Err topology_place(Dsv3Topology *topo) {
    int64_t rank = topo->job_rank;
    switch (topo->role) {
    case DSV3_ROLE_COORDINATOR: DSV3_ASSERT(rank == 0); break;
    case DSV3_ROLE_STAGE:
        DSV3_ASSERT(rank >= 1 && rank <= topo->n_stage);
        topo->stage_index = rank - 1;
        DSV3_CALL(dsv3_layout_stage_coord(&topo->dims, topo->stage_index, &topo->coord));
        topo->pp_stage = topo->coord.pp;
        break;
    case DSV3_ROLE_EXPERT:
        DSV3_ASSERT(rank > topo->n_stage && rank < topo->job_size);
        topo->expert_index = rank - 1 - topo->n_stage;
        DSV3_CALL(dsv3_layout_expert_coord(&topo->dims, topo->expert_index, &topo->pp_stage,
                                           &topo->ep_rank));
        break;
    }
    return DSV3_OK;
}

// Collective over topo->job: every communicator in the order of topology.h. All ranks make
// the same sequence of MPI_Comm_split calls, members or not.
static Dsv3Err topology_split_all(Dsv3Topology *topo) {
    DSV3_CALL(topology_split_stage(topo, VARY_PP, &topo->pp));
    DSV3_CALL(topology_split_stage(topo, VARY_DP_REPLICATE, &topo->dp_replicate));
    DSV3_CALL(topology_split_stage(topo, VARY_DP_SHARD, &topo->dp_shard));
    DSV3_CALL(topology_split_stage(topo, VARY_DP_REPLICATE | VARY_DP_SHARD, &topo->dp));
    DSV3_CALL(topology_split_stage(topo, VARY_DP_SHARD | VARY_CP, &topo->dp_shard_cp));
    DSV3_CALL(topology_split_stage(topo, VARY_CP, &topo->cp));
    DSV3_CALL(topology_split_stage(topo, VARY_TP, &topo->tp));
    DSV3_CALL(topology_split_stage(topo, VARY_DP_REPLICATE | VARY_DP_SHARD | VARY_CP | VARY_TP,
                                   &topo->stage));

    int is_expert = topo->role == DSV3_ROLE_EXPERT;
    DSV3_MPI_CALL(MPI_Comm_split(topo->job, is_expert ? (int)topo->pp_stage : MPI_UNDEFINED,
                                 is_expert ? (int)topo->ep_rank : 0, &topo->expert_group));

    // Stage ranks first (by stage index), then the expert servers (by expert index, which
    // within one pipeline stage is the ep rank order).
    int in_moe = topo->n_expert > 0 && topo->role != DSV3_ROLE_COORDINATOR;
    int moe_key = topo->role == DSV3_ROLE_STAGE    ? (int)topo->stage_index
                  : topo->role == DSV3_ROLE_EXPERT ? (int)(topo->n_stage + topo->expert_index)
                                                   : 0;
    DSV3_MPI_CALL(MPI_Comm_split(topo->job, in_moe ? (int)topo->pp_stage : MPI_UNDEFINED, moe_key,
                                 &topo->moe));

    DSV3_MPI_CALL(MPI_Comm_split(topo->job, (int)topo->role, topo->job_rank, &topo->role_comm));
    return DSV3_OK;
}

Dsv3Err dsv3_topology_create(MPI_Comm job, Dsv3Role role, const Dsv3ParallelDims *resolved,
                             Dsv3Topology *out) {
    DSV3_CHECK(out != NULL && resolved != NULL, DSV3_ERR_USAGE,
               "dsv3_topology_create: resolved dims and out must not be NULL");
    topology_clear(out);
    DSV3_CHECK(job != MPI_COMM_NULL, DSV3_ERR_USAGE, "dsv3_topology_create: the job comm is null");

    // Both checks end alike on every rank, so no rank goes on to split while another returns.
    int64_t n_stage = 0, n_expert = 0;
    DSV3_CALL(dsv3_roles_gather(job, role, &n_stage, &n_expert));
    DSV3_CALL(topology_check_same_dims(job, resolved));
    Dsv3ParallelDims dims = *resolved;
    DSV3_CALL(dsv3_layout_resolve(&dims, n_stage, n_expert));

    Dsv3Err err = DSV3_OK;
    DSV3_MPI_CALL_GOTO(err, fail, MPI_Comm_dup(job, &out->job));
    // Inherited by every communicator split from it, so failures come back as codes.
    DSV3_MPI_CALL_GOTO(err, fail, MPI_Comm_set_errhandler(out->job, MPI_ERRORS_RETURN));
    DSV3_MPI_CALL_GOTO(err, fail, MPI_Comm_rank(out->job, &out->job_rank));
    DSV3_MPI_CALL_GOTO(err, fail, MPI_Comm_size(out->job, &out->job_size));
    out->role = role;
    out->n_stage = n_stage;
    out->n_expert = n_expert;
    out->dims = dims;
    DSV3_CALL_GOTO(err, fail, topology_place(out));
    DSV3_CALL_GOTO(err, fail, topology_split_all(out));
    return DSV3_OK;
fail:
    dsv3_topology_destroy(out);
    return err;
}
