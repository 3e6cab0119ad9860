// trace: where the time of a training step goes — per-phase timers and Chrome-trace events.
//
// Every rank times the phases of each step (data, forward, backward, optimizer, communication
// by kind) into a Dsv3Trace: the seconds of each phase are summed per step and reported to the
// coordinator. On a profiled step (profiling.enable_profiling, every profiling.profile_freq
// steps) the trace also keeps one event per timed span; the stage ranks send theirs to the
// coordinator, which writes one Chrome-trace JSON file (one track per rank) that Perfetto and
// chrome://tracing open. Between dsv3_trace_ops_begin and _end a profiled step also keeps one
// event per kernels op (its name, and the FLOPs of its GEMMs), nested in the phase that ran it.
// Times are seconds relative to the rank's own start of the step (the moment it sent or received
// the step plan), so tracks line up without synchronised clocks. Pipeline bubbles get a phase once
// pipelines exist. No MPI here.
#ifndef DSV3_TRAIN_TRACE_H
#define DSV3_TRAIN_TRACE_H

#include <stdint.h>
#include <stdio.h>

#include "common/core/error.h"

// The phases, X(ID, name, category); name is the event name and the metrics key (time_<name>):
//   data                 coordinator: reading the step's token windows
//   forward, backward    stage: model forward; loss and backward (per micro-batch)
//   backward_weight      stage: the weight gradients of a split backward (a v schedule's W)
//   optimizer            stage: grad norm, clipping, expert-bias update, AdamW
//   comm_batch           windows coordinator → stage (on a stage: waiting and receiving)
//   comm_grad_allreduce  stage: gradient all-reduce over the data-parallel ranks
//   comm_expert_counts   stage: tokens-per-expert all-reduce over the data-parallel ranks
//   comm_plan            every rank: the step-plan broadcast
//   comm_experts         stage: routed rows away at the expert servers (dispatch, their work,
//                        combine), inside forward and backward; no events
//   experts_hidden       stage: the part of comm_experts other compute overlapped (the shared
//                        experts; under DualPipeV also the paired micro-batch)
//   comm_tp              stage: tensor-parallel collectives (the sums, gathers and reductions
//                        inside forward and backward, and the grad norm's), no events
//   comm_cp              stage: context-parallel collectives (the attention's key and value
//                        gathers and their gradients' reductions, the tokens per expert), no
//                        events
//   wait_reports         coordinator: waiting for the stage reports (the stages compute)
//   pipeline_wait        stage: waiting for a neighbouring pipeline stage (the bubble), no events
//   validation           held-out loss without gradients
#define DSV3_PHASES(X)                                                                             \
    X(DATA, "data", "data")                                                                        \
    X(FORWARD, "forward", "compute")                                                               \
    X(BACKWARD, "backward", "compute")                                                             \
    X(BACKWARD_WEIGHT, "backward_weight", "compute")                                               \
    X(OPTIMIZER, "optimizer", "compute")                                                           \
    X(COMM_BATCH, "comm_batch", "comm")                                                            \
    X(COMM_GRAD, "comm_grad_allreduce", "comm")                                                    \
    X(COMM_EXPERT_COUNTS, "comm_expert_counts", "comm")                                            \
    X(COMM_PLAN, "comm_plan", "comm")                                                              \
    X(COMM_EXPERTS, "comm_experts", "comm")                                                        \
    X(EXPERTS_HIDDEN, "experts_hidden", "comm")                                                    \
    X(COMM_TP, "comm_tp", "comm")                                                                  \
    X(COMM_CP, "comm_cp", "comm")                                                                  \
    X(WAIT_REPORTS, "wait_reports", "wait")                                                        \
    X(PIPELINE_WAIT, "pipeline_wait", "wait")                                                      \
    X(VALIDATION, "validation", "compute")

#define DSV3_PHASE_ENUM(id, name, cat) DSV3_PHASE_##id,
typedef enum { DSV3_PHASES(DSV3_PHASE_ENUM) DSV3_PHASE_COUNT } Dsv3Phase;
#undef DSV3_PHASE_ENUM

// "forward", "comm_grad_allreduce", …; NULL outside the enum.
const char *dsv3_phase_name(int phase);
// "compute", "comm", "data", "wait".
const char *dsv3_phase_category(int phase);

// The phase of an op's event.
enum { DSV3_TRACE_OP = -1 };

// One timed span; plain data, sent between ranks as bytes.
typedef struct {
    int32_t phase;     // Dsv3Phase, or DSV3_TRACE_OP
    int32_t index;     // micro-batch, or -1
    int32_t stage;     // the pipeline stage a forward or backward ran, or -1
    int32_t op;        // DSV3_TRACE_OP: the kernels op (Dsv3Op); else 0
    double start;      // seconds since the rank's start of the step
    double seconds;    // duration
    double gemm_flops; // DSV3_TRACE_OP: 2·M·N·K summed over the op's GEMMs; else 0
} Dsv3TraceEvent;

typedef struct {
    double origin;                    // dsv3_log_seconds() at the start of the step
    double seconds[DSV3_PHASE_COUNT]; // per phase, summed over the step
    int recording;                    // keep events this step
    int ops;                          // between dsv3_trace_ops_begin and _end on a recording step
    int64_t ops_lost;                 // op events the buffer could not grow for
    Dsv3TraceEvent *events;           // counted buffer, grown on demand
    int64_t count, capacity;
} Dsv3Trace;

// Starts a step: clears the sums and events; `recording` keeps events.
void dsv3_trace_step_start(Dsv3Trace *t, int recording);

// Adds the span [start, end] (dsv3_log_seconds values) to its phase, and as an event when
// recording. Fails only when the event buffer cannot grow.
Dsv3Err dsv3_trace_add(Dsv3Trace *t, Dsv3Phase phase, int32_t index, double start, double end);

// The same for a forward or backward of pipeline stage `stage`.
Dsv3Err dsv3_trace_add_stage(Dsv3Trace *t, Dsv3Phase phase, int32_t index, int32_t stage,
                             double start, double end);

// On a recording step, turns the kernels' op profiling on with this trace as its sink, so that
// every op call until dsv3_trace_ops_end is kept as an event; otherwise does nothing. Ops
// profiling times each GEMM too, so a profiled step runs a little slower than the others.
void dsv3_trace_ops_begin(Dsv3Trace *t);

// Turns op profiling off again; fails if the event buffer could not grow for an op.
Dsv3Err dsv3_trace_ops_end(Dsv3Trace *t);

// Frees the events (and turns op profiling off if this trace is still its sink).
void dsv3_trace_destroy(Dsv3Trace *t);

// One rank's events, for the merged file.
typedef struct {
    char name[32]; // "coordinator 0", "stage 1"
    const Dsv3TraceEvent *events;
    int64_t count;
} Dsv3TraceTrack;

// Writes a Chrome-trace JSON object ({"traceEvents": [...]}) of one step: a process per track
// (pid = the track's index, named and sorted by metadata events) with one complete event
// ("ph": "X", microseconds) per span; an op's event is named after the op, in category "op",
// with its GEMM GFLOP and GFLOP/s as arguments. Writes to `path`.tmp and renames, so a reader never
// sees half a file.
Dsv3Err dsv3_trace_write_chrome(const char *path, int64_t step, const Dsv3TraceTrack *tracks,
                                int64_t n_tracks);

#endif
