// report: the messages a stage rank sends the coordinator after each step (comm/protocol.h),
// and the coordinator's side that gathers and combines them.
//
// Every stage rank sends its Dsv3StepReport; when the plan has DSV3_PLAN_EXPERT_LOAD, stage
// rank 0 also sends the step's expert load (tokens per expert and biases: all-reduced over
// the data-parallel ranks, so one rank has them all); when it has DSV3_PLAN_PROFILE, every
// stage rank sends its trace events. The coordinator receives all reports at once and waits
// without spinning, under the protocol's deadline. With pipeline stages the first rank of each
// stage will send its layers' load; today every stage rank holds every layer.
#ifndef DSV3_TRAIN_REPORT_H
#define DSV3_TRAIN_REPORT_H

#include <stdint.h>

#include "common/core/error.h"
#include "common/comm/launch.h"
#include "common/comm/protocol.h"
#include "common/train/expert_load.h"
#include "common/train/trace.h"

// Stage rank: sends the report (n_trace_events filled in here) and what the plan asks for.
Dsv3Err dsv3_report_send(const Dsv3Launch *launch, const Dsv3StepPlan *plan, Dsv3StepReport *report,
                         const Dsv3ExpertLoad *load, const Dsv3Trace *trace);

// Coordinator: the reports of one step.
typedef struct {
    int64_t n_stage, pp;     // stage ranks; pipeline stages (n_stage / pp ranks each)
    Dsv3StepReport *reports; // (S) by stage index
    Dsv3ExpertLoad load;     // valid after a plan with DSV3_PLAN_EXPERT_LOAD
    Dsv3TraceEvent **events; // (S) counted buffers; reports[r].n_trace_events each
    int64_t *capacity;       // (S) events each buffer holds
    int64_t *counts;         // (S) events received into each buffer in the last profiled step
} Dsv3ReportGather;

// What the coordinator makes of the reports.
typedef struct {
    double loss; // Σ loss_sum / Σ n_labels
    int64_t n_labels;
    double grad_norm;
    double seconds[DSV3_PHASE_COUNT]; // the slowest stage rank's, per phase
    int64_t bytes_peak;               // the largest rank's peak of the step
    int64_t device_bytes;             // the smallest device of those ranks (0: unknown)
    Dsv3ExpertServerStats experts;    // the expert servers of every pipeline stage
} Dsv3ReportTotals;

Dsv3Err dsv3_report_gather_create(Dsv3ReportGather *g, const Dsv3Launch *launch);
void dsv3_report_gather_destroy(Dsv3ReportGather *g);

// Coordinator: receives every stage rank's report and what `plan` asked for.
Dsv3Err dsv3_report_gather(Dsv3ReportGather *g, const Dsv3Launch *launch, const Dsv3StepPlan *plan);

void dsv3_report_combine(const Dsv3ReportGather *g, Dsv3ReportTotals *out);

// The stop signal of the lowest stage index whose last report carried one, or 0.
int dsv3_report_stop_signal(const Dsv3ReportGather *g);

// Coordinator, after a profiled step's gather: writes
// <dump_folder>/<profiling.save_traces_folder>/iteration_<step>/trace.json, the coordinator's
// track (`own`) and every stage rank's (trace.h), and logs its path.
Dsv3Err dsv3_report_write_trace(const Dsv3ReportGather *g, const Dsv3Trace *own,
                                const Dsv3Config *cfg, int64_t step);

#endif
