// layout: where every process of a job sits, as plain arithmetic (no MPI).
//
// A job is launched as one MPMD line
//
//     mpiexec -n 1 dsv3-coordinator … : -n S dsv3-stage … [: -n E dsv3-expert …]
//
// so its job communicator holds, in rank order:
//
//     job rank 0              the coordinator
//     job ranks 1 … S         stage ranks; stage index i = job rank − 1
//     job ranks S+1 … S+E     expert servers; expert index j = job rank − 1 − S
//
// Stage ranks form the mesh [pp][dp_replicate][dp_shard][cp][tp], row-major with tp fastest:
// stage index i has the coordinates that i has as a mixed-radix number with those digits.
// Neighbours in tp are adjacent ranks, so a node holds whole tp groups when ranks are placed
// in order.
//
// Expert servers exist only when ep > 1: then E = pp × ep, and expert index j serves pipeline
// stage j / ep as expert-parallel rank j % ep, holding 1/ep of that stage's routed experts.
// With ep == 1 there are none and the stage ranks compute their routed experts themselves.
//
// This module also splits a model's layers over the pipeline stages and checks the order of
// roles on a job (comm/roles.h gathers them). It builds no communicators (comm/topology.h).
#ifndef DSV3_COMM_LAYOUT_H
#define DSV3_COMM_LAYOUT_H

#include <stdint.h>

#include "common/core/error.h"

typedef enum {
    DSV3_ROLE_COORDINATOR = 0,
    DSV3_ROLE_STAGE = 1,
    DSV3_ROLE_EXPERT = 2,
} Dsv3Role;

enum { DSV3_ROLE_COUNT = 3 };

// Degrees of parallelism, from the [parallelism] config section:
//   pp            pipeline_parallel_degree
//   dp_replicate  data_parallel_replicate_degree   (HSDP replicas)
//   dp_shard      data_parallel_shard_degree       (FSDP shards; -1 = fill from the process count)
//   cp            context_parallel_degree
//   tp            tensor_parallel_degree
//   ep            expert_parallel_degree           (expert servers per pipeline stage; 1 = none)
typedef struct {
    int64_t pp, dp_replicate, dp_shard, cp, tp, ep;
    // The pipeline's stages run down the ranks and back up (the v schedules): pipeline rank 0
    // holds the last stage as well as the first.
    int pp_v_shaped;
} Dsv3ParallelDims;

// A stage rank's place in the mesh; each field is in [0, degree).
typedef struct {
    int64_t pp, dp_replicate, dp_shard, cp, tp;
} Dsv3StageCoord;

// dp_shard value that asks dsv3_layout_resolve to fill it from the number of stage processes.
enum { DSV3_LAYOUT_FILL = -1 };

// "coordinator", "stage", "expert".
const char *dsv3_role_name(Dsv3Role role);

// The executable that plays a role: "dsv3-coordinator", "dsv3-stage", "dsv3-expert".
const char *dsv3_role_program(Dsv3Role role);

// Validates `dims` against the processes that were launched and fills dp_shard when it is -1.
// Every degree must be ≥ 1 (DSV3_ERR_CONFIG, naming the config key); the mesh must hold exactly
// `n_stage_procs` ranks and the job exactly pp × ep expert servers when ep > 1, none when ep == 1
// (DSV3_ERR_LAUNCH, naming every factor). Idempotent: a resolved `dims` resolves to itself.
// On failure `dims` is left unchanged.
Dsv3Err dsv3_layout_resolve(Dsv3ParallelDims *dims, int64_t n_stage_procs, int64_t n_expert_procs);

// pp × dp_replicate × dp_shard × cp × tp of resolved dims: the number of stage ranks.
int64_t dsv3_layout_stage_count(const Dsv3ParallelDims *dims);

// pp × ep when ep > 1, else 0: the number of expert servers.
int64_t dsv3_layout_expert_count(const Dsv3ParallelDims *dims);

// Mesh coordinates of stage index `index` (in [0, stage count)) of resolved dims.
Dsv3Err dsv3_layout_stage_coord(const Dsv3ParallelDims *dims, int64_t index, Dsv3StageCoord *out);

// Stage index of mesh coordinates `coord`; the inverse of dsv3_layout_stage_coord.
Dsv3Err dsv3_layout_stage_index(const Dsv3ParallelDims *dims, const Dsv3StageCoord *coord,
                                int64_t *index);

// The pipeline stage (`*pp_stage` = index / ep) and expert-parallel rank (`*ep_rank` =
// index % ep) of expert server `index` (in [0, expert count)).
Dsv3Err dsv3_layout_expert_coord(const Dsv3ParallelDims *dims, int64_t index, int64_t *pp_stage,
                                 int64_t *ep_rank);

// What the stage rank at `coord` receives of each micro-batch's token windows (B windows of
// T + 1 tokens): nothing on a middle pipeline rank, the whole windows when one rank holds both
// ends of the model (no pipeline, or a v), the tokens (first T of each window) on the rank of
// the first stage, which embeds them, and the labels (last T) on the rank of the last, which
// computes the loss.
typedef enum {
    DSV3_BATCH_NONE,
    DSV3_BATCH_WINDOWS,
    DSV3_BATCH_TOKENS,
    DSV3_BATCH_LABELS,
} Dsv3BatchPart;

Dsv3BatchPart dsv3_layout_batch_part(const Dsv3ParallelDims *dims, const Dsv3StageCoord *coord);

// How a model's layers are split over pipeline stages, as torchtitan's
// generate_llm_fqn_per_model_part: the embedding counts as `input_weight` layers and the final
// norm with the output head as `output_weight` layers (pipeline_parallel_first_stage_less_layers
// and _last_stage_less_layers, 1 each by default), and the n_layers + input_weight +
// output_weight "effective" layers are spread over the `n_stages` (virtual) stages as evenly as
// possible, the first stages taking one more when they do not divide.
typedef struct {
    int64_t n_stages, input_weight, output_weight;
} Dsv3PipeSplit;

// Layers [*first, *first + *count) that pipeline stage `stage` of `split` runs (the embedding
// on stage 0, the norm and head on the last). One stage runs everything. DSV3_ERR_CONFIG, naming
// the numbers and keys, when there are more stages than effective layers, or when a weight is
// larger than the smallest stage's share (the first or last stage would run fewer than zero
// layers).
Dsv3Err dsv3_layout_stage_layers(int64_t n_layers, const Dsv3PipeSplit *split, int64_t stage,
                                 int64_t *first, int64_t *count);

// Checks the roles of a job's `n` ranks in job-rank order (`roles[r]` is job rank r's role):
// exactly one coordinator, at rank 0, then at least one stage, then the expert servers if any.
// Sets `*n_stage` and `*n_expert`. A violation is DSV3_ERR_LAUNCH with a message that says which
// program runs where and how to launch the job correctly. Deterministic, so every rank that
// checks the same list reaches the same verdict.
Dsv3Err dsv3_layout_check_roles(const int *roles, int64_t n, int64_t *n_stage, int64_t *n_expert);

#endif
