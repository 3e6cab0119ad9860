// report: stage → coordinator messages after a step.
#include "report.h"

#include <math.h>
#include <string.h>

#include "common/core/alloc.h"
#include "common/core/log.h"
#include "common/core/stop_signal.h"
#include "common/train/metrics.h"

// Job rank of stage index 0, for the trace tracks' names.
enum { FIRST_STAGE_RANK = 1 };

// <dump_folder>/<save_traces_folder>/iteration_<step>/trace.json
enum { TRACE_PATH_CAPACITY = 2 * DSV3_CONFIG_STRING_CAPACITY + 64 };

Dsv3Err dsv3_report_send(const Dsv3Launch *launch, const Dsv3StepPlan *plan, Dsv3StepReport *report,
                         const Dsv3ExpertLoad *load, const Dsv3Trace *trace) {
    Dsv3Protocol *p = launch->protocol;
    int profile = (plan->flags & DSV3_PLAN_PROFILE) != 0;
    report->n_trace_events = profile ? trace->count : 0;
    report->stop_signal = dsv3_stop_signal_received();
    // An expert server's, which reached this rank with the step's sums (it sends no report).
    if (!report->stop_signal) report->stop_signal = report->experts.stop_signal;
    DSV3_CALL(dsv3_protocol_send_report(p, report));
    if ((plan->flags & DSV3_PLAN_EXPERT_LOAD) && launch->topology.stage_index == 0)
        DSV3_CALL(dsv3_protocol_send_expert_load(p, load->counts, load->bias,
                                                 load->n_layers * load->n_experts));
    if (profile && trace->count > 0)
        DSV3_CALL(dsv3_protocol_send_trace(p, trace->events, trace->count));
    return DSV3_OK;
}

Dsv3Err dsv3_report_gather_create(Dsv3ReportGather *g, const Dsv3Launch *launch) {
    memset(g, 0, sizeof *g);
    g->n_stage = launch->topology.n_stage;
    g->pp = launch->topology.dims.pp;
    size_t S = (size_t)g->n_stage;
    Dsv3Err err = DSV3_OK;
    DSV3_CALL_GOTO(err, fail,
                   dsv3_calloc((void **)&g->reports, S, sizeof *g->reports, "step reports"));
    DSV3_CALL_GOTO(err, fail,
                   dsv3_calloc((void **)&g->events, S, sizeof *g->events, "trace event buffers"));
    DSV3_CALL_GOTO(err, fail,
                   dsv3_calloc((void **)&g->capacity, S, sizeof *g->capacity, "trace capacities"));
    DSV3_CALL_GOTO(err, fail,
                   dsv3_calloc((void **)&g->counts, S, sizeof *g->counts, "trace event counts"));
    DSV3_CALL_GOTO(err, fail, dsv3_expert_load_create(&g->load, &launch->model));
    return DSV3_OK;
fail:
    dsv3_report_gather_destroy(g);
    return err;
}

void dsv3_report_gather_destroy(Dsv3ReportGather *g) {
    for (int64_t r = 0; g->events && r < g->n_stage; r++)
        dsv3_free(g->events[r]);
    dsv3_free(g->events);
    dsv3_free(g->capacity);
    dsv3_free(g->counts);
    dsv3_free(g->reports);
    dsv3_expert_load_destroy(&g->load);
    memset(g, 0, sizeof *g);
}

// Receives each rank's trace events, sized by its report.
static Dsv3Err gather_traces(Dsv3ReportGather *g, Dsv3Protocol *p) {
    for (int64_t r = 0; r < g->n_stage; r++) {
        int64_t count = g->reports[r].n_trace_events;
        DSV3_CHECK(count >= 0, DSV3_ERR_INTERNAL, "stage %lld reported %lld trace events",
                   (long long)r, (long long)count);
        g->counts[r] = count;
        if (count <= g->capacity[r]) continue;
        dsv3_free(g->events[r]);
        g->events[r] = NULL;
        g->capacity[r] = 0;
        DSV3_CALL(dsv3_alloc((void **)&g->events[r], (size_t)count * sizeof(Dsv3TraceEvent),
                             "trace events"));
        g->capacity[r] = count;
    }
    return dsv3_protocol_recv_traces(p, g->events, g->counts);
}

Dsv3Err dsv3_report_gather(Dsv3ReportGather *g, const Dsv3Launch *launch,
                           const Dsv3StepPlan *plan) {
    Dsv3Protocol *p = launch->protocol;
    DSV3_CALL(dsv3_protocol_recv_reports(p, plan, g->reports, g->load.counts, g->load.bias,
                                         g->load.n_layers * g->load.n_experts));
    if (plan->flags & DSV3_PLAN_PROFILE) DSV3_CALL(gather_traces(g, p));
    return DSV3_OK;
}

int dsv3_report_stop_signal(const Dsv3ReportGather *g) {
    for (int64_t r = 0; r < g->n_stage; r++)
        if (g->reports[r].stop_signal) return g->reports[r].stop_signal;
    return 0;
}

// Every stage rank of a pipeline stage reports the same servers: the first rank of each stage
// (mesh order puts pp outermost) speaks for its stage's.
static void combine_expert_servers(const Dsv3ReportGather *g, Dsv3ExpertServerStats *out) {
    *out = (Dsv3ExpertServerStats){0};
    for (int64_t s = 0; s < g->pp; s++) {
        const Dsv3ExpertServerStats *x = &g->reports[s * (g->n_stage / g->pp)].experts;
        if (x->servers == 0) continue;
        if (out->servers == 0) {
            *out = *x;
            continue;
        }
        out->servers += x->servers;
        out->rows += x->rows;
        out->rows_max = fmax(out->rows_max, x->rows_max);
        out->rows_min = fmin(out->rows_min, x->rows_min);
        out->compute_max_s = fmax(out->compute_max_s, x->compute_max_s);
        out->idle_min_s = fmin(out->idle_min_s, x->idle_min_s);
        if (!out->stop_signal) out->stop_signal = x->stop_signal;
    }
}

void dsv3_report_combine(const Dsv3ReportGather *g, Dsv3ReportTotals *out) {
    memset(out, 0, sizeof *out);
    double loss_sum = 0;
    for (int64_t r = 0; r < g->n_stage; r++) {
        const Dsv3StepReport *rep = &g->reports[r];
        loss_sum += rep->loss_sum;
        out->n_labels += rep->n_labels;
        out->grad_norm = rep->grad_norm;
        for (int p = 0; p < DSV3_PHASE_COUNT; p++)
            out->seconds[p] = fmax(out->seconds[p], rep->seconds[p]);
        if (rep->bytes_peak > out->bytes_peak) out->bytes_peak = rep->bytes_peak;
        if (rep->device_bytes > 0 &&
            (out->device_bytes == 0 || rep->device_bytes < out->device_bytes))
            out->device_bytes = rep->device_bytes;
    }
    out->loss = out->n_labels > 0 ? loss_sum / (double)out->n_labels : NAN;
    combine_expert_servers(g, &out->experts);
}

Dsv3Err dsv3_report_write_trace(const Dsv3ReportGather *g, const Dsv3Trace *own,
                                const Dsv3Config *cfg, int64_t step) {
    char folder[TRACE_PATH_CAPACITY], path[TRACE_PATH_CAPACITY + 16];
    snprintf(folder, sizeof folder, "%s/%s/iteration_%lld", cfg->job.dump_folder,
             cfg->profiling.save_traces_folder, (long long)step);
    snprintf(path, sizeof path, "%s/trace.json", folder);
    DSV3_CALL(dsv3_metrics_make_dirs(folder));
    Dsv3TraceTrack *tracks = NULL;
    DSV3_CALL(
        dsv3_calloc((void **)&tracks, (size_t)g->n_stage + 1, sizeof *tracks, "trace tracks"));
    snprintf(tracks[0].name, sizeof tracks[0].name, "coordinator 0");
    tracks[0].events = own->events;
    tracks[0].count = own->count;
    for (int64_t r = 0; r < g->n_stage; r++) {
        snprintf(tracks[1 + r].name, sizeof tracks[1 + r].name, "stage %lld",
                 (long long)(FIRST_STAGE_RANK + r));
        tracks[1 + r].events = g->events[r];
        tracks[1 + r].count = g->reports[r].n_trace_events;
    }
    Dsv3Err err = dsv3_trace_write_chrome(path, step, tracks, g->n_stage + 1);
    dsv3_free(tracks);
    DSV3_CALL(err);
    DSV3_LOG_INFO("profile: step %lld traced to %s", (long long)step, path);
    return DSV3_OK;
}
