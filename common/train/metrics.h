// metrics: the coordinator's step line, <dump_folder>/metrics.jsonl, TensorBoard scalars and
// the expert-count dump.
//
// Every logged step (metrics.log_freq) becomes one flat list of named scalars that goes to
// every sink with the same names: one JSON object per line in metrics.jsonl (`step` plus each
// scalar; non-finite values are null) and, with metrics.enable_tensorboard, one TensorBoard
// event at that step (tag = the JSON key) under <dump_folder>/<save_tb_folder>/<run start
// time>/. The names: loss, grad_norm, lr, tps and tflops (per stage rank, i.e. per device),
// mfu (%), memory_gib and memory_pct (the largest rank's peak of the step, and its share of
// the device), time_step and time_<phase> (trace.h; the slowest rank's), expert_imbalance
// (the worst MoE layer's max/mean), expert_load/layer_<l>/{max_over_mean, min_over_mean,
// max_tokens, min_tokens, bias_norm} per MoE layer, and validation_loss on validation steps.
// The console gets torchtitan's step line (in colour on a terminal unless
// metrics.disable_color_printing), a line of phase times and a line of expert load. With
// metrics.dump_expert_counts, <dump_folder>/expert_counts.jsonl gets every MoE layer's full
// tokens per expert of each logged step. No MPI here.
#ifndef DSV3_TRAIN_METRICS_H
#define DSV3_TRAIN_METRICS_H

#include <stdint.h>

#include "common/core/config.h"
#include "common/core/error.h"
#include "common/comm/protocol.h"
#include "common/train/expert_load.h"
#include "common/train/trace.h"

typedef struct Dsv3Metrics Dsv3Metrics;

// One logged step.
typedef struct {
    int64_t step;
    double loss, grad_norm, lr;
    double tps, tflops, mfu;           // per stage rank; mfu in %
    double memory_gib, memory_pct;     // peak of the step on the largest rank; % of its device
    double seconds_step;               // wall time of the step on the coordinator
    double seconds[DSV3_PHASE_COUNT];  // per phase (0: not timed this step)
    const Dsv3ExpertLoad *expert_load; // NULL: none (dense model or not captured)
    Dsv3ExpertServerStats experts;     // servers 0: the routed experts ran on the stage ranks
    double validation_loss;            // NAN: no validation this step
} Dsv3StepRecord;

// Opens the sinks the config asks for, creating <dump_folder> (and the TensorBoard folder).
Dsv3Err dsv3_metrics_open(Dsv3Metrics **out, const Dsv3Config *cfg, const Dsv3ModelArgs *args);

// Prints and writes one logged step.
Dsv3Err dsv3_metrics_log_step(Dsv3Metrics *m, const Dsv3StepRecord *r);

// Prints the line of a validation pass (its loss also goes into the step's record).
void dsv3_metrics_log_validation(const Dsv3Metrics *m, int64_t step, double loss, double tps,
                                 double seconds, int64_t tokens);

// NULL-safe; closes every file.
void dsv3_metrics_close(Dsv3Metrics *m);

// mkdir -p: creates `path` and its missing parents.
Dsv3Err dsv3_metrics_make_dirs(const char *path);

#endif
