// plan: what each rank of a job will hold, computed from the config alone.
//
// For `--job.dry_run`: the mesh place, the layers and the memory of any job rank — parameter,
// gradient and optimizer bytes, FSDP gather buffers, activations of the configured micro-batch
// and activation checkpointing, kernel workspace — without MPI and without allocating model
// memory, so that the plan of a 671B job on thousands of ranks can be printed on a laptop.
// Stage ranks log their measured peak against the same plan at the end of training.
//
// Every number comes from the parameter table (model/params.h) laid out as the rank's
// parameter store lays it out (dsv3_plan_stage_spec): a pipeline stage's groups (the embedding
// on the first stage, its layers, the final norm and output head on the last), each tensor
// cut by tensor parallelism as torchtitan's plan says, sharded over the dp_shard × cp ranks
// (FSDP, comm/param_store_fsdp.h, whose buffer pool model/fsdp_plan.h sizes) and replicated
// over dp_replicate. Routed experts go to the stage's ep expert servers, num_experts / ep
// whole experts each, or stay with the stage ranks when the job has none. Master weights and
// gradients are fp32; AdamW keeps two fp32 moments.
#ifndef DSV3_COMM_PLAN_H
#define DSV3_COMM_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "common/core/config.h"
#include "common/core/error.h"
#include "common/comm/layout.h"
#include "common/comm/pipe_exchange.h"
#include "common/model/fsdp_plan.h"
#include "common/model/model.h"
#include "common/model/model_args.h"
#include "common/model/params.h"
#include "common/train/pipeline_schedule.h"

enum {
    DSV3_PLAN_PARAM_BYTES = 4,     // fp32 master weight
    DSV3_PLAN_GRAD_BYTES = 4,      // fp32 gradient
    DSV3_PLAN_OPTIMIZER_BYTES = 8, // AdamW exp_avg + exp_avg_sq, fp32 each
    DSV3_PLAN_LINE_CAPACITY = 768, // dsv3_plan_describe's line
    DSV3_PLAN_MAX_CHUNKS = 8,      // pipeline stages on one rank (looped schedules)
};

typedef struct {
    Dsv3Role role;
    int64_t job_rank;
    Dsv3StageCoord coord; // stage ranks
    int64_t pp_stage;     // stage ranks and expert servers; -1 on the coordinator
    int64_t ep_rank;      // expert servers; -1 otherwise
    int64_t first_layer;  // stage ranks and expert servers: layers [first, first + count)
    int64_t layer_count;  //   of the rank's first (or only) pipeline stage
    int has_embedding;    // stage ranks of the first pipeline stage
    int has_head;         // stage ranks of the last pipeline stage
    int64_t n_chunks;     // stage ranks: pipeline stages held (several under looped schedules)
    Dsv3StageRange chunks[DSV3_PLAN_MAX_CHUNKS]; // their ranges, in the rank's order
    int64_t first_expert; // expert servers: routed experts [first, first + count) of each
    int64_t expert_count; //   MoE layer of their stage
    int64_t fsdp;         // stage ranks: the dp_shard × cp ranks its tensors are sharded over
    int64_t params;       // parameter elements the rank owns (its flat shards, padded)
    // Bytes of stage ranks (0 elsewhere): the FSDP gather and gradient buffers, activations and
    // scratch of one micro-batch, the kernel workspace.
    int64_t gather_bytes, activation_bytes, workspace_bytes;
} Dsv3RankShare;

// The pipeline a config asks for, with torchtitan's rules (pipeline_llm,
// build_pipeline_schedule): one stage per rank for GPipe and 1F1B; for looped schedules
// (Interleaved1F1B) 2 per rank, or as many as pipeline_parallel_layers_per_stage makes (at least
// 2 per rank, the same on every rank); each training micro-batch of local_batch_size sequences
// runs as n_micro = local_batch_size / pipeline_parallel_microbatch_size pipeline micro-batches.
// Without a pipeline (pp 1) the one stage runs the whole local batch at once (n_micro 1).
typedef struct {
    Dsv3PipeKind kind;
    int64_t stages_per_rank;
    int64_t n_micro;     // pipeline micro-batches per training micro-batch
    int64_t micro_batch; // sequences per pipeline micro-batch
    Dsv3PipeSplit split; // the layers of each (virtual) stage
    int overlap_pairs;   // DualPipeV's pairs overlap: the job has expert servers to hide
} Dsv3PlanPipeline;

// What a rank's memory depends on beyond the layout.
typedef struct {
    Dsv3ModelOptions model; // pipeline micro-batch, sequence length, activation checkpointing
    Dsv3ReshardPolicy reshard;
    Dsv3PlanPipeline pipe;
} Dsv3PlanOptions;

// The plan options a resolved config asks for. DSV3_ERR_CONFIG naming the keys when the
// pipeline keys do not fit together or with the model.
Dsv3Err dsv3_plan_options_from_config(const Dsv3Config *cfg, Dsv3PlanOptions *out);

// The layers (and embedding, head) that (virtual) pipeline stage `stage` (in [0,
// pp × stages_per_rank)) runs, with `routed` and `dense` left 0 for the caller to set.
Dsv3Err dsv3_plan_stage_range(const Dsv3ModelArgs *args, const Dsv3PlanOptions *opt, int64_t stage,
                              Dsv3StageRange *out);

// The pipeline stages of pipeline rank `rank` (of pp) under the schedule of `opt`, in the
// rank's order (k = 0 … stages_per_rank − 1): each one's stage index and activation slots (the
// most micro-batches it holds between their forward and their backward).
typedef struct {
    int64_t stage, slots;
} Dsv3PlanChunk;

Dsv3Err dsv3_plan_rank_chunks(const Dsv3PlanOptions *opt, int64_t pp, int64_t rank,
                              Dsv3PlanChunk chunks[DSV3_PLAN_MAX_CHUNKS]);

// The pipeline exchange (comm/pipe_exchange.h) of a stage rank holding the n stages `chunks`,
// with tensor-parallel degree tp (activations travel as each tp rank's rows).
Dsv3PipeExchangeShape dsv3_plan_exchange_shape(const Dsv3ModelArgs *args,
                                               const Dsv3PlanOptions *opt, int64_t tp,
                                               const Dsv3PlanChunk *chunks, int64_t n);

// The shard spec of the stage rank at `coord`: how its parameter store lays out its groups.
Dsv3ShardSpec dsv3_plan_stage_spec(const Dsv3ParallelDims *dims, const Dsv3StageCoord *coord);

// The share of job rank `job_rank` (0 = coordinator, then stage ranks, then expert servers)
// in a job with resolved `dims`.
Dsv3Err dsv3_plan_rank(const Dsv3ModelArgs *args, const Dsv3ParallelDims *dims,
                       const Dsv3PlanOptions *opt, int64_t job_rank, Dsv3RankShare *out);

// Every byte of the share: parameters, gradients, optimizer state and the byte counts above.
int64_t dsv3_plan_total_bytes(const Dsv3RankShare *share);

// One human-readable line describing `share` (no newline).
void dsv3_plan_describe(const Dsv3RankShare *share, char *out, size_t capacity);

#endif
