// topology: the communicators of a job, built once at start-up.
//
// From the job communicator (comm/job_comm.h) and the resolved parallel dims, every rank builds
// the communicators it belongs to; the layout is that of comm/layout.h (coordinator at job rank
// 0, stage index i at job rank 1 + i, expert index j at job rank 1 + S + j). Within every
// communicator ranks are in mesh order: a communicator's rank k is its k-th member in
// increasing stage index (stage ranks) or expert index (expert servers).
//
// Stage-rank communicators, named by the mesh dimensions that vary inside them (the others are
// those of the calling rank):
//
//     pp            [pp]                         pipeline neighbours (send/recv activations)
//     dp_replicate  [dp_replicate]               HSDP replicas (all-reduce of gradients)
//     dp_shard      [dp_shard]                   FSDP shards without cp
//     dp            [dp_replicate][dp_shard]     all data-parallel ranks (batch slices)
//     dp_shard_cp   [dp_shard][cp]               the FSDP shard group: parameters are sharded
//                                                over it (all-gather / reduce-scatter), because
//                                                cp ranks hold the same parameters
//     cp            [cp]                         context parallel (sequence slices)
//     tp            [tp]                         tensor parallel
//     stage         [dp_replicate][dp_shard][cp][tp]  all stage ranks of one pipeline stage
//
// Expert-server communicators:
//
//     expert_group  the ep expert servers of one pipeline stage, in ep-rank order
//
// Both stage ranks and expert servers, when the job has expert servers:
//
//     moe           one pipeline stage's stage ranks in mesh order, then its expert servers
//                   in ep-rank order; tokens are dispatched and combined over it
//
// Every rank: role_comm holds all ranks of the caller's role (for the coordinator, just itself).
//
// The coordinator's control path to every rank is `job` itself: the coordinator is its rank 0,
// and it reaches stage index i at rank 1 + i and expert index j at rank 1 + S + j.
//
// A communicator a rank is not a member of is MPI_COMM_NULL. All communicators, `job` included,
// have MPI_ERRORS_RETURN, so their failures come back through DSV3_MPI_CALL (comm/mpi_check.h).
// Subsystems that exchange messages duplicate the communicator they use, so their traffic never
// meets another's.
#ifndef DSV3_COMM_TOPOLOGY_H
#define DSV3_COMM_TOPOLOGY_H

#include <mpi.h>
#include <stdint.h>

#include "common/core/error.h"
#include "layout.h"

typedef struct {
    MPI_Comm job;          // duplicate of the job communicator; the coordinator is rank 0
    Dsv3Role role;         // the caller's role
    int job_rank;          // the caller's rank in `job`
    int job_size;          // 1 + n_stage + n_expert
    int64_t n_stage;       // S, the stage ranks of the job
    int64_t n_expert;      // E, the expert servers of the job (0 when dims.ep == 1)
    Dsv3ParallelDims dims; // resolved: dp_shard filled in

    // Stage ranks (otherwise stage_index is -1, coord all -1 and the communicators null).
    int64_t stage_index;  // in [0, S); job rank − 1
    Dsv3StageCoord coord; // place in the mesh [pp][dp_replicate][dp_shard][cp][tp]
    MPI_Comm pp, dp_replicate, dp_shard, dp, dp_shard_cp, cp, tp, stage;

    // Expert servers (otherwise expert_index and ep_rank are -1 and expert_group is null).
    int64_t expert_index; // in [0, E); job rank − 1 − S
    int64_t ep_rank;      // expert_index % ep: which 1/ep of the stage's routed experts it holds
    MPI_Comm expert_group;

    // Stage ranks and expert servers: the pipeline stage they belong to (coord.pp for a stage
    // rank, expert_index / ep for an expert server); -1 on the coordinator.
    int64_t pp_stage;
    // Stage ranks and expert servers when E > 0, otherwise null.
    MPI_Comm moe;

    MPI_Comm role_comm; // every rank of the caller's role, in job-rank order
} Dsv3Topology;

// Collective over `job` (every rank must call it, with the same `resolved` dims): checks the
// roles (comm/roles.h) and the dims against the launch (dsv3_layout_resolve; dp_shard may still
// be -1 and is then filled), duplicates `job` and builds every communicator above by
// MPI_Comm_split of that duplicate. `role` is the caller's own role. A wrong launch or dims that
// differ between ranks fail on every rank with the same code and message, and `*out` then holds
// no communicators. `job` stays the caller's.
Dsv3Err dsv3_topology_create(MPI_Comm job, Dsv3Role role, const Dsv3ParallelDims *resolved,
                             Dsv3Topology *out);

// Collective over the job (MPI_Comm_free is collective): frees every communicator of `topo` and
// leaves them null. Safe on a zeroed or already destroyed topology.
void dsv3_topology_destroy(Dsv3Topology *topo);

#endif
