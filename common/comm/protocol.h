// protocol: every message between the coordinator, the stage ranks and (later) the expert
// servers during training, as typed functions on one communicator, each wait under a deadline.
//
// A Dsv3Protocol is created on every rank after start-up (comm/launch.h does it). It duplicates
// the job communicator, so its traffic never meets another subsystem's; tags are those of
// comm/tags.h. Every function states whether it is collective on the job (every rank calls it,
// in the same order) or point-to-point (one sender, one receiver). Collectives are non-blocking
// MPI calls on every rank (blocking and non-blocking collectives do not match each other), and
// every wait goes through the protocol's watch (comm/watch.h): a deadline, liveness pings
// answered while waiting, and on silence DSV3_ERR_TIMEOUT naming the silent rank by role and
// rank, which the role's main() prints before MPI_Abort. The deadline is
// comm.init_timeout_seconds until the first training step completes and during checkpoint
// saves and loads, comm.train_timeout_seconds otherwise (dsv3_protocol_set_patience).
//
// Point-to-point counts are 64-bit and sent in chunks of at most INT_MAX elements (token
// windows of huge batches, trace events), all posted at once; the receiver posts the same
// chunks, which MPI's ordering of messages on one tag matches one to one.
//
// The order of messages (C coordinator, S every stage rank, r one stage rank, A all ranks):
//
// Start-up (after dsv3_launch_start):
//   1. A  dsv3_protocol_create                            collective (MPI_Comm_dup)
//   2. C→A the start plan (step 0, EOS id)                 send_plan / recv_plan
//          stage ranks build their models, then S duplicate their group communicators
//          (dsv3_collectives_mpi_create, collective on the stage ranks)
//   3. A  peak FLOPs: the best stage rank's to C           share_peak
//   4. C→A the checkpoint load command                     send_load / recv_load
//          when it names something: S load it, then A agree (stage ranks pass 1 or end the
//          job with their own error)
//   5. A  the ready point                                  ready
//
// A training step s (DESIGN.md §4):
//   1. C→A the step plan                                   send_plan / recv_plan
//   2. for each micro-batch i, for each stage rank r in mesh order:
//      C→r its part of the token windows (layout.h: B × (T + 1) int32, or B × T tokens or
//      labels under a pipeline)                            send_batch / recv_batch
//   3. S  all-reduce over dp of gradients, then of tokens per expert (comm/collectives_mpi.h)
//   4. r→C the step report                                 send_report
//      stage rank 0 → C, with DSV3_PLAN_EXPERT_LOAD: tokens per expert and biases
//                                                          send_expert_load
//      C receives all of them at once                      recv_reports
//      r→C, with DSV3_PLAN_PROFILE and events: trace events  send_trace / recv_traces
//   5. with checkpoint.enable: C→A the save command         send_save / recv_save
//      and when it says to save, the checkpoint save below
//   6. when validation is due: a validation pass
// The end: C→A a plan with stop = 1.
//
// A validation pass after step s: C→A a plan with validate = 1 and micro_batches held-out
// micro-batches; for each, C→r windows as in a step (padding DSV3_PAD_TOKEN); r→C a report
// (loss sum and labels only; no expert load, no trace events).
//
// A checkpoint save of step s (common/ckpt/checkpoint.h; patience INIT throughout): stage ranks
// that own tensors write their shards, C writes the train state; A agree (all-reduce of "ok");
// A gather the shard descriptions on C (lengths, then texts); C commits the folder while the
// stage ranks wait for the next plan.
//
// This module does not decide when anything is sent (common/train, common/ckpt do), and it does
// not carry the collectives of the model (comm/collectives_mpi.h), which share its watch.
#ifndef DSV3_COMM_PROTOCOL_H
#define DSV3_COMM_PROTOCOL_H

#include <mpi.h>
#include <stdint.h>

#include "common/core/error.h"
#include "common/comm/layout.h"
#include "common/comm/topology.h"
#include "common/comm/watch.h"
#include "common/train/trace.h"

// Plan flags: what the stage ranks send after the step's report.
enum {
    DSV3_PLAN_EXPERT_LOAD = 1 << 0, // tokens per expert and expert biases (a logged step)
    DSV3_PLAN_PROFILE = 1 << 1,     // the step's trace events (a profiled step)
};

// In validation windows: no token here (padding rows, positions past validation.seq_len).
// A stage rank reads it as token 0 with an ignored label.
enum { DSV3_PAD_TOKEN = -1 };

// Bytes of a checkpoint path in a load command (DSV3_CKPT_PATH_CAPACITY of ckpt/manifest.h)
// and of a tensor name in a report (DSV3_FQN_CAPACITY of model/params.h).
enum { DSV3_PROTOCOL_PATH_CAPACITY = 4096 + 128, DSV3_PROTOCOL_FQN_CAPACITY = 96 };

typedef struct {
    int64_t step;          // 1-based
    int64_t micro_batches; // per data-parallel rank
    double lr;             // schedule applied
    double grad_scale;     // 1 / labels in the whole global batch
    int32_t eos_id;        // document boundary for block-causal masks (-1: none)
    int32_t stop;          // 1: no more steps
    int32_t flags;         // DSV3_PLAN_* bits
    int32_t validate;      // 1: a validation pass, not a training step
} Dsv3StepPlan;

// The expert servers of a stage rank's pipeline stage in one step (all zero without them).
typedef struct {
    int64_t servers;
    double rows, rows_max, rows_min; // rows received in all, by the busiest, by the least busy
    double compute_max_s;            // the busiest server's computing
    double idle_min_s;               // the least idle server's waiting for rows
    int32_t stop_signal;             // a stop signal one of them received (0: none)
    int32_t pad;
} Dsv3ExpertServerStats;

typedef struct {
    double loss_sum;                   // Σ cross-entropy over this rank's labels
    int64_t n_labels;                  // labels counted
    double grad_norm;                  // global, before clipping (the same on every rank)
    double seconds[DSV3_PHASE_COUNT];  // per phase, summed over the step (trace.h)
    int64_t bytes_current, bytes_peak; // counted allocations of this rank (peak of this step)
    int64_t device_bytes;              // memory of this rank's device (peak.h)
    int64_t n_trace_events;            // events that follow (a profiled step), else 0
    Dsv3ExpertServerStats experts;     // its stage's expert servers
    int32_t stop_signal;               // a stop signal this rank received (core/stop_signal.h)
    // When the global gradient norm is not finite: this rank's first group (in forward order)
    // and tensor with a NaN or infinite gradient (-1 and "" when it owns none).
    int32_t nonfinite_group;
    char nonfinite_fqn[DSV3_PROTOCOL_FQN_CAPACITY];
} Dsv3StepReport;

// The checkpoint command after every step (with checkpoint.enable).
typedef struct {
    int64_t step;       // > 0: save the state after this step now; 0: no save
    int32_t model_only; // the last step's model-only export
    int32_t async;      // the stage ranks write this save in the background (checkpoint.async_mode)
    int32_t finish;     // first complete the save still written in the background
    int32_t pad;
} Dsv3CkptSaveCommand;

// What the start-up load command loads.
typedef enum {
    DSV3_CKPT_LOAD_NONE = 0,
    DSV3_CKPT_LOAD_DSV3, // a dsv3 checkpoint folder
    DSV3_CKPT_LOAD_HF,   // a folder of HF safetensors
} Dsv3CkptLoadSource;

typedef struct {
    int32_t source;     // Dsv3CkptLoadSource
    int32_t model_only; // no optimizer state
    int64_t step;
    char path[DSV3_PROTOCOL_PATH_CAPACITY];
} Dsv3CkptLoadCommand;

typedef struct Dsv3Protocol Dsv3Protocol;

// Collective on the job (`topo->job`): duplicates it and starts the watch (comm/watch.h) with
// the two timeouts (seconds); the coordinator polls idly, every other rank tightly at first.
Dsv3Err dsv3_protocol_create(Dsv3Protocol **out, const Dsv3Topology *topo, double init_timeout_s,
                             double train_timeout_s);

// Collective on the job: frees the communicator and the watch (its ping receive cancelled and
// completed). NULL is a no-op.
void dsv3_protocol_destroy(Dsv3Protocol *p);

// Not collective: the watch every wait of this rank goes through (comm/collectives_mpi.h
// shares it).
Dsv3Watch *dsv3_protocol_watch(Dsv3Protocol *p);

// Not collective: which deadline the next waits of this rank get.
void dsv3_protocol_set_patience(Dsv3Protocol *p, Dsv3Patience patience);

// For tests: point-to-point messages are split into chunks of at most `elems` elements
// (INT_MAX by default and for elems ≤ 0). Not collective, but both ends of a message must use
// the same limit.
void dsv3_protocol_set_chunk_limit(Dsv3Protocol *p, int64_t elems);

// ---- plans, peak, ready ----

// Collective on the job, the coordinator's side: every other rank receives `plan`.
Dsv3Err dsv3_protocol_send_plan(Dsv3Protocol *p, const Dsv3StepPlan *plan);

// Collective on the job, every rank but the coordinator (stage ranks; expert servers too, once
// they train): receives the coordinator's plan.
Dsv3Err dsv3_protocol_recv_plan(Dsv3Protocol *p, Dsv3StepPlan *plan);

// Collective on the job: *best on the coordinator = the largest `local` of the stage ranks
// (other roles' values are ignored). `best` may be NULL on other ranks.
Dsv3Err dsv3_protocol_share_peak(Dsv3Protocol *p, double local, double *best);

// Collective on the job: returns when every rank has reached it (the first step's clock).
Dsv3Err dsv3_protocol_ready(Dsv3Protocol *p);

// ---- a step's messages ----

// Point-to-point, coordinator → stage rank `stage_index`: its part (comm/layout.h; not
// DSV3_BATCH_NONE) of micro-batch `micro` of the current plan, from `windows` (B windows of T + 1
// tokens), which the tokens and labels parts overwrite (packed in place).
Dsv3Err dsv3_protocol_send_batch(Dsv3Protocol *p, int64_t stage_index, int64_t micro,
                                 Dsv3BatchPart part, int32_t *windows, int64_t B, int64_t T);

// Point-to-point, stage rank ← coordinator: the other side of dsv3_protocol_send_batch, received
// into `scratch` (B × (T + 1)); writes tokens (B, T) when the part has them, padding
// (DSV3_PAD_TOKEN) as token 0, and labels (B, T) when the part has them, padding as
// DSV3_IGNORE_INDEX.
Dsv3Err dsv3_protocol_recv_batch(Dsv3Protocol *p, int64_t micro, Dsv3BatchPart part,
                                 int32_t *scratch, int64_t B, int64_t T, int32_t *tokens,
                                 int32_t *labels);

// Point-to-point, stage rank → coordinator: this rank's report of the current plan.
Dsv3Err dsv3_protocol_send_report(Dsv3Protocol *p, const Dsv3StepReport *report);

// Point-to-point, stage rank 0 → coordinator, after its report when the plan has
// DSV3_PLAN_EXPERT_LOAD: `n` (L × E) tokens per expert and expert biases.
Dsv3Err dsv3_protocol_send_expert_load(Dsv3Protocol *p, const int64_t *counts, const float *bias,
                                       int64_t n);

// Point-to-point, stage rank → coordinator, after its report when the plan has
// DSV3_PLAN_PROFILE and `count` (its report's n_trace_events) > 0.
Dsv3Err dsv3_protocol_send_trace(Dsv3Protocol *p, const Dsv3TraceEvent *events, int64_t count);

// Point-to-point, coordinator ← every stage rank: reports[i] of stage index i (S of them) and,
// when `plan` has DSV3_PLAN_EXPERT_LOAD, stage rank 0's expert load into counts and bias (n
// each); all received at once.
Dsv3Err dsv3_protocol_recv_reports(Dsv3Protocol *p, const Dsv3StepPlan *plan,
                                   Dsv3StepReport *reports, int64_t *counts, float *bias,
                                   int64_t n);

// Point-to-point, coordinator ← every stage rank i with counts[i] > 0: its counts[i] trace
// events into events[i]; all received at once.
Dsv3Err dsv3_protocol_recv_traces(Dsv3Protocol *p, Dsv3TraceEvent *const *events,
                                  const int64_t *counts);

// ---- checkpoints ----

// Collective on the job: the coordinator sends the save command after a step, every other rank
// receives it. A save command with step > 0 switches this rank's patience to
// DSV3_PATIENCE_INIT; the caller switches it back when the save is over.
Dsv3Err dsv3_protocol_send_save(Dsv3Protocol *p, const Dsv3CkptSaveCommand *cmd);
Dsv3Err dsv3_protocol_recv_save(Dsv3Protocol *p, Dsv3CkptSaveCommand *cmd);

// Collective on the job: the start-up load command, coordinator → every other rank.
Dsv3Err dsv3_protocol_send_load(Dsv3Protocol *p, const Dsv3CkptLoadCommand *cmd);
Dsv3Err dsv3_protocol_recv_load(Dsv3Protocol *p, Dsv3CkptLoadCommand *cmd);

// Collective on the job: *all_ok = whether every rank passed ok ≠ 0.
Dsv3Err dsv3_protocol_agree(Dsv3Protocol *p, int ok, int *all_ok);

// Collective on the job: gathers every rank's shard description `mine` (a NUL-terminated text,
// "" when it wrote nothing) on the coordinator. There *all (counted) holds job size pointers,
// (*all)[r] job rank r's text, all inside one counted block at (*all)[0]: free (*all)[0] and
// *all with dsv3_free. Other ranks pass all = NULL.
Dsv3Err dsv3_protocol_gather_descriptions(Dsv3Protocol *p, const char *mine, char ***all);

#endif
