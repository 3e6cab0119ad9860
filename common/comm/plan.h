// plan: what each rank of a job will hold, computed from the config alone.
//
// For `--job.dry_run`: the mesh place, the layers and the parameter, gradient and optimizer
// bytes of any job rank, without MPI and without allocating model memory, so that the plan of
// a 671B job on thousands of ranks can be printed on a laptop.
//
// Ownership rules (DESIGN.md §2, §6): a pipeline stage's dense parameters (norms, attention,
// dense FFNs, shared experts, routers; the embedding on the first stage, the final norm and
// output head on the last) are split over its dp_shard × cp × tp ranks, one flat buffer per
// layer padded to a multiple of that count, and replicated over dp_replicate. Routed experts
// go to the stage's ep expert servers, num_experts / ep whole experts each; without expert
// servers the stage ranks shard them like dense parameters. Master weights and gradients are
// fp32; AdamW keeps two fp32 moments.
#ifndef DSV3_COMM_PLAN_H
#define DSV3_COMM_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "common/core/error.h"
#include "common/comm/layout.h"
#include "common/model/model_args.h"

enum {
    DSV3_PLAN_PARAM_BYTES = 4,     // fp32 master weight
    DSV3_PLAN_GRAD_BYTES = 4,      // fp32 gradient
    DSV3_PLAN_OPTIMIZER_BYTES = 8, // AdamW exp_avg + exp_avg_sq, fp32 each
};

typedef struct {
    Dsv3Role role;
    int64_t job_rank;
    Dsv3StageCoord coord; // stage ranks
    int64_t pp_stage;     // stage ranks and expert servers; -1 on the coordinator
    int64_t ep_rank;      // expert servers; -1 otherwise
    int64_t first_layer;  // stage ranks and expert servers: layers [first, first + count)
    int64_t layer_count;
    int has_embedding;    // stage ranks of the first pipeline stage
    int has_head;         // stage ranks of the last pipeline stage
    int64_t first_expert; // expert servers: routed experts [first, first + count) of each
    int64_t expert_count; //   MoE layer of their stage
    int64_t params;       // parameter elements the rank owns
} Dsv3RankShare;

// The share of job rank `job_rank` (0 = coordinator, then stage ranks, then expert servers)
// in a job with resolved `dims`.
Dsv3Err dsv3_plan_rank(const Dsv3ModelArgs *args, const Dsv3ParallelDims *dims, int64_t job_rank,
                       Dsv3RankShare *out);

// One human-readable line describing `share` (no newline).
void dsv3_plan_describe(const Dsv3RankShare *share, char *out, size_t capacity);

#endif
