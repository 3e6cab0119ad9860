// pipeline_schedule: pipeline schedules as explicit per-rank action lists (no MPI, no model).
//
// A schedule runs n_micro micro-batches through V = pp × stages_per_rank (virtual) stages on
// pp ranks. Rank r holds the stages dsv3_pipe_stage_of(s, r, k), k in [0, stages_per_rank):
// one stage (stage r) for GPipe and 1F1B; stages r, r + pp, r + 2·pp, … for Interleaved 1F1B
// (torchtitan's loop style); stages r and 2·pp − 1 − r for ZBVZeroBubble and DualPipeV (the v
// style: the model goes down the ranks and back up, so rank pp − 1 feeds itself and rank 0
// holds both ends). Each rank's list says, in the order the rank executes it:
//
//   F(m, s)        forward of micro-batch m on stage s
//   B(m, s)        backward of micro-batch m on stage s (input and weight gradients together)
//   I(m, s)        its input gradients only (what stage s − 1 needs), in the v schedules
//   W(m, s)        its weight gradients, after I(m, s), where the schedule has room
//   RECV_F(m, s)   post the receive of stage s's input activations of m, from stage s − 1
//   SEND_F(m, s)   send the output activations of F(m, s) to stage s + 1
//   RECV_B(m, s)   post the receive of the gradient of stage s's output of m, from stage s + 1
//   SEND_B(m, s)   send the input gradient of B(m, s) to stage s − 1
//
// Sends and receives are non-blocking: a RECV is posted one compute action ahead of the compute
// that consumes it (so the transfer overlaps that compute) and waited for by the consumer; a
// SEND follows its compute at once. F(m, s) needs F(m, s − 1) (s > 0); B(m, s) (or I(m, s))
// needs F(m, s) and B(m, s + 1) (or I(m, s + 1); s < V − 1); W(m, s) needs I(m, s). SEND_B
// follows B or I. Messages between two ranks in one direction are matched in order
// (MPI's non-overtaking rule): the lists are built so that the sender's SENDs of a channel
// (source rank, destination rank, F or B) come in the order of the receiver's RECVs.
//
// Every rank keeps at most dsv3_pipe_schedule_slots(...) micro-batches of a stage between their
// F and their B (or W: the weight gradients need what the forward kept); micro-batch m uses
// activation slot m % slots, and the lists never reuse a slot whose B (W) has not run.
//
// Bubble: with a forward taking 1 and a backward 2 time units and free communication,
// GPipe and 1F1B take (n_micro + pp − 1) · 3 units per rank for n_micro · 3 of work: bubble
// fraction (pp − 1) / (n_micro + pp − 1); Interleaved 1F1B with v stages per rank
// (pp − 1) / (v · n_micro + pp − 1) (dsv3_pipe_schedule_bubble). ZBVZeroBubble, with I and W
// taking one unit each, leaves every rank idle · max(pp − 1, 2 · (2·pp − 1 − n_micro)) units of
// its 6 · n_micro: bubble idle / (6 · n_micro + idle). Once n_micro ≥ 2·pp − 1 that is pp − 1
// forwards of its half-size stages, where 1F1B idles 3 · (pp − 1) forwards of full-size ones:
// a sixth of the time (held-back W fill the cool-down). DualPipeV (n_micro ≥ 2·pp) pairs the
// forward of one micro-batch with the backward of another, which DeepSeek's DualPipe overlaps
// with the expert dispatch and combine of each. Where there is such an exchange to hide
// (overlap_pairs: the job has expert servers) the F is listed paired ("PF3.0") with the B
// right after it, of the rank's other stage, and the pair is one unit of the list: both its
// RECVs are posted before it (one unit ahead), it starts once both messages are in, and both
// its SENDs follow it; the stage runtime runs the two as turns that hand over at the expert
// exchanges (train/pipeline_step.h). Its bubble is then DeepSeek's (pp − 1) · (F&B + B − 3·W)
// units per rank, with F&B the pair's time: in the units above (F&B = F + B = 3, the pair
// counted without the overlap's gain) 2 · (pp − 1). Otherwise the pair is an F and a B listed
// one after the other, run in turn, and DualPipeV idles as ZBVZeroBubble does.
#ifndef DSV3_TRAIN_PIPELINE_SCHEDULE_H
#define DSV3_TRAIN_PIPELINE_SCHEDULE_H

#include <stddef.h>
#include <stdint.h>

#include "common/core/error.h"

typedef enum {
    DSV3_PIPE_GPIPE,            // all forwards, then all backwards
    DSV3_PIPE_1F1B,             // warm-up forwards, then one forward one backward, cool-down
    DSV3_PIPE_INTERLEAVED_1F1B, // 1F1B over several stages per rank (looped)
    DSV3_PIPE_ZBV,              // two stages per rank in a v, backward split into I and W
    DSV3_PIPE_DUALPIPEV,        // the v of ZBV, forwards paired with other micro-batches' backwards
} Dsv3PipeKind;

enum { DSV3_PIPE_KIND_COUNT = 5 };

typedef enum {
    DSV3_PIPE_F,
    DSV3_PIPE_B,
    DSV3_PIPE_RECV_F,
    DSV3_PIPE_SEND_F,
    DSV3_PIPE_RECV_B,
    DSV3_PIPE_SEND_B,
    DSV3_PIPE_I,
    DSV3_PIPE_W,
} Dsv3PipeOp;

typedef struct {
    Dsv3PipeOp op;
    int32_t micro;  // micro-batch in [0, n_micro)
    int32_t stage;  // virtual stage in [0, pp × stages_per_rank)
    int32_t paired; // an F of DualPipeV that overlaps the B listed right after it (see above)
} Dsv3PipeAction;

typedef struct {
    Dsv3PipeKind kind;
    int64_t pp, n_micro, stages_per_rank;
    int overlap_pairs;       // DualPipeV: its pairs are units that overlap (see above)
    int64_t *first;          // (pp + 1): rank r's actions are actions[first[r] … first[r + 1])
    Dsv3PipeAction *actions; // every rank's list, one after the other
} Dsv3PipeSchedule;

// The kind named by parallelism.pipeline_parallel_schedule ("GPipe", "1F1B",
// "Interleaved1F1B", "ZBVZeroBubble", "DualPipeV"); DSV3_ERR_CONFIG naming the key and the
// known names otherwise.
Dsv3Err dsv3_pipe_kind_parse(const char *name, Dsv3PipeKind *out);
const char *dsv3_pipe_kind_name(Dsv3PipeKind kind);

// Whether a kind runs several stages per rank (Interleaved 1F1B).
int dsv3_pipe_kind_is_looped(Dsv3PipeKind kind);

// Whether a kind places two stages per rank in a v (ZBVZeroBubble, DualPipeV).
int dsv3_pipe_kind_is_v_shaped(Dsv3PipeKind kind);

// Whether the schedule named `name` is one of those (0 for an unknown name; no error raised).
int dsv3_pipe_name_is_v_shaped(const char *name);

// Whether a kind may split a backward into I and W (ZBVZeroBubble always, DualPipeV for some).
int dsv3_pipe_kind_splits_backward(Dsv3PipeKind kind);

// The schedule's (virtual) stages: pp × stages_per_rank.
int64_t dsv3_pipe_stage_count(const Dsv3PipeSchedule *s);

// The global stage index of rank `rank`'s k-th local stage.
int64_t dsv3_pipe_stage_of(const Dsv3PipeSchedule *s, int64_t rank, int64_t k);

// The rank holding global stage `stage`, and its local index there (may be NULL).
int64_t dsv3_pipe_rank_of(const Dsv3PipeSchedule *s, int64_t stage, int64_t *local);

// Builds the lists. pp ≥ 1, n_micro ≥ 1; stages_per_rank 1 for GPipe and 1F1B, ≥ 2 for
// Interleaved 1F1B, which also needs n_micro a multiple of pp, exactly 2 for ZBVZeroBubble and
// DualPipeV, which also needs n_micro ≥ 2·pp. A violation is DSV3_ERR_CONFIG naming the numbers and
// the keys (pipeline_parallel_degree, local_batch_size / pipeline_parallel_microbatch_size
// micro-batches, pipeline_parallel_layers_per_stage). overlap_pairs: DualPipeV lists its pairs
// as overlapping units (other kinds ignore it).
Dsv3Err dsv3_pipe_schedule_create(Dsv3PipeSchedule *out, Dsv3PipeKind kind, int64_t pp,
                                  int64_t n_micro, int64_t stages_per_rank, int overlap_pairs);
void dsv3_pipe_schedule_destroy(Dsv3PipeSchedule *s);

// Activation slots rank `rank` needs for its k-th local stage: the most micro-batches between
// their F and their B on that stage.
int64_t dsv3_pipe_schedule_slots(const Dsv3PipeSchedule *s, int64_t rank, int64_t k);

// The schedule's theoretical bubble fraction (formula above).
double dsv3_pipe_schedule_bubble(const Dsv3PipeSchedule *s);

// The outcome of running every rank's list in a simulation: F takes t_forward, B t_backward,
// I and W half of it each, communication nothing; a RECV's consumer waits until the matching
// SEND has run.
typedef struct {
    double makespan;      // time until the last rank finishes
    double busy_max;      // the most compute time of one rank
    double idle_fraction; // 1 − Σ busy / (pp × makespan)
} Dsv3PipeSimulation;

// Simulates the lists; DSV3_ERR_INTERNAL with a message naming the rank and action when an
// action runs before what it needs (a dependency above, a slot still in use, a message out of
// channel order), when some action is missing or repeated, or when the ranks deadlock (every
// unfinished rank waits for a message that no rank can send).
Dsv3Err dsv3_pipe_schedule_simulate(const Dsv3PipeSchedule *s, double t_forward, double t_backward,
                                    Dsv3PipeSimulation *out);

// "F3.1" for F of micro-batch 3 on stage 1, "RF3.1", "SF3.1", "RB3.1", "SB3.1", "B3.1", "I3.1",
// "W3.1".
void dsv3_pipe_action_text(const Dsv3PipeAction *a, char *out, size_t capacity);

#endif
