// coordinator_loop: data, schedule, and the step line.
#include "coordinator_loop.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/ckpt/checkpoint.h"
#include "common/core/alloc.h"
#include "common/core/format.h"
#include "common/core/log.h"
#include "common/core/stop_signal.h"
#include "common/data/synthetic.h"
#include "common/data/text_dataset.h"
#include "common/data/token_file.h"
#include "common/data/tokenizer.h"
#include "common/comm/protocol.h"
#include "common/train/lr_schedule.h"
#include "common/train/metrics.h"
#include "common/train/peak.h"
#include "common/train/report.h"
#include "common/train/trace.h"
#include "common/train/validation.h"

static const double GIB = 1024.0 * 1024.0 * 1024.0;

// The training data: one of the dataset kinds, read by window index.
typedef struct {
    Dsv3Synthetic *synthetic;
    Dsv3TokenFile *tokens;
    Dsv3TextDataset *text;
} Data;

static Dsv3Err data_open(Data *d, const Dsv3Config *cfg) {
    memset(d, 0, sizeof *d);
    const char *kind = cfg->training.dataset;
    if (strcmp(kind, "synthetic") == 0)
        return dsv3_synthetic_create(&d->synthetic, cfg->model.vocab_size, cfg->training.seq_len,
                                     (uint64_t)cfg->debug.seed);
    if (strcmp(kind, "tokens") == 0)
        return dsv3_token_file_open(&d->tokens, cfg->training.dataset_path, cfg->model.vocab_size,
                                    cfg->training.seq_len);
    if (strcmp(kind, "text") == 0)
        return dsv3_text_dataset_open(&d->text, cfg->training.dataset_path,
                                      cfg->model.hf_assets_path, cfg->model.vocab_size,
                                      cfg->training.seq_len);
    DSV3_RAISE(DSV3_ERR_CONFIG,
               "training.dataset = \"%s\" is not supported (use \"synthetic\", "
               "\"tokens\" or \"text\")",
               kind);
}

static Dsv3Err data_window(Data *d, int64_t w, int32_t *tokens) {
    if (d->synthetic) return dsv3_synthetic_window(d->synthetic, w, tokens);
    if (d->text) return dsv3_text_dataset_window(d->text, w, tokens);
    return dsv3_token_file_window(d->tokens, w, tokens);
}

static void data_close(Data *d) {
    dsv3_synthetic_destroy(d->synthetic);
    dsv3_token_file_close(d->tokens);
    dsv3_text_dataset_close(d->text);
}

typedef struct {
    int64_t B, T, dp, G, micro_batches;
} BatchShape;

static Dsv3Err batch_shape(const Dsv3Launch *launch, BatchShape *s) {
    const Dsv3Config *cfg = &launch->config;
    const Dsv3ParallelDims *dims = &launch->topology.dims;
    s->B = cfg->training.local_batch_size;
    s->T = cfg->training.seq_len;
    s->dp = dims->dp_replicate * dims->dp_shard;
    s->G = cfg->training.global_batch_size > 0 ? cfg->training.global_batch_size : s->B * s->dp;
    s->micro_batches = s->G / (s->B * s->dp);
    DSV3_ASSERT(s->micro_batches * s->B * s->dp == s->G); // checked at start-up
    return DSV3_OK;
}

// Sends step `step`'s windows to the first and last pipeline stages (the tokens to the first,
// the labels to the last: comm/layout.h): data-parallel rank d takes global windows
// [(step-1)·G + d·G/dp, … + G/dp), micro-batch i the B after i·B of those.
static Dsv3Err send_batches(const Dsv3Launch *launch, Data *data, const BatchShape *s, int64_t step,
                            int32_t *windows, Dsv3Trace *trace) {
    const Dsv3Topology *t = &launch->topology;
    int64_t per_rank = s->G / s->dp, W = s->T + 1;
    for (int64_t i = 0; i < s->micro_batches; i++)
        for (int64_t r = 0; r < t->n_stage; r++) {
            Dsv3StageCoord c;
            DSV3_CALL(dsv3_layout_stage_coord(&t->dims, r, &c));
            Dsv3BatchPart part = dsv3_layout_batch_part(&t->dims, &c);
            if (part == DSV3_BATCH_NONE) continue;
            int64_t d = c.dp_replicate * t->dims.dp_shard + c.dp_shard;
            int64_t first = (step - 1) * s->G + d * per_rank + i * s->B;
            double t0 = dsv3_log_seconds();
            for (int64_t b = 0; b < s->B; b++)
                DSV3_CALL(data_window(data, first + b, windows + b * W));
            double t1 = dsv3_log_seconds();
            DSV3_CALL(dsv3_protocol_send_batch(launch->protocol, r, i, part, windows, s->B, s->T));
            DSV3_CALL(dsv3_trace_add(trace, DSV3_PHASE_DATA, (int32_t)i, t0, t1));
            DSV3_CALL(
                dsv3_trace_add(trace, DSV3_PHASE_COMM_BATCH, (int32_t)i, t1, dsv3_log_seconds()));
        }
    return DSV3_OK;
}

// The logged step's record from the gathered reports and the coordinator's own timings.
static void step_record(const Dsv3ReportGather *g, const Dsv3Trace *own, const BatchShape *s,
                        int64_t step, double lr, double seconds, double flops_per_token,
                        double peak_tflops, Dsv3StepRecord *out) {
    Dsv3ReportTotals totals;
    dsv3_report_combine(g, &totals);
    // Per stage rank (device), as torchtitan reports tokens per second.
    double tps = (double)(s->G * s->T) / seconds / (double)g->n_stage;
    *out =
        (Dsv3StepRecord){.step = step,
                         .loss = totals.loss,
                         .grad_norm = totals.grad_norm,
                         .lr = lr,
                         .tps = tps,
                         .tflops = flops_per_token * tps / 1e12,
                         .mfu = dsv3_peak_mfu_percent(flops_per_token, tps, peak_tflops),
                         .memory_gib = (double)totals.bytes_peak / GIB,
                         .memory_pct = totals.device_bytes > 0 ? 100.0 * (double)totals.bytes_peak /
                                                                     (double)totals.device_bytes
                                                               : 0,
                         .seconds_step = seconds,
                         .expert_load = &g->load,
                         .validation_loss = NAN};
    memcpy(out->seconds, totals.seconds, sizeof out->seconds);
    out->experts = totals.experts;
    // The coordinator's own phases: reading data, broadcasting the plan.
    out->seconds[DSV3_PHASE_DATA] = own->seconds[DSV3_PHASE_DATA];
    out->seconds[DSV3_PHASE_COMM_PLAN] = own->seconds[DSV3_PHASE_COMM_PLAN];
    out->seconds[DSV3_PHASE_WAIT_REPORTS] = own->seconds[DSV3_PHASE_WAIT_REPORTS];
    if (g->load.n_dense_layers >= g->load.n_layers) out->expert_load = NULL; // no MoE layer
}

static Dsv3Err schedule_of(const Dsv3Config *cfg, Dsv3LrSchedule *out) {
    double ratio = cfg->lr_scheduler.decay_ratio;
    Dsv3LrScheduleParams p = {.warmup_steps = cfg->lr_scheduler.warmup_steps,
                              .total_steps = cfg->lr_scheduler.total_steps
                                                 ? cfg->lr_scheduler.total_steps
                                                 : cfg->training.steps,
                              .has_decay_ratio = ratio >= 0,
                              .decay_ratio = ratio,
                              .min_lr_factor = cfg->lr_scheduler.min_lr_factor};
    DSV3_CALL(dsv3_lr_decay_type_parse(cfg->lr_scheduler.decay_type, &p.decay_type));
    return dsv3_lr_schedule_init(out, &p);
}

// The state of the step loop beside the data.
typedef struct {
    Dsv3Metrics *metrics;
    Dsv3ReportGather gather;
    Dsv3Trace trace;
    Dsv3Validation *validation;
    double peak_tflops;    // MFU's peak: configured, or measured and raised by faster steps
    int peak_warned;       // a configured peak below a step's rate was reported
    int64_t skipped_steps; // steps with NaN or infinite values skipped so far
} LoopState;

// A step whose loss or gradient norm is NaN or infinite changed no state on the stage ranks.
// Within training.skip_nonfinite_steps it is counted and logged; beyond, the run stops with an
// error that names the first tensor with such a gradient and the last good checkpoint.
static Dsv3Err nonfinite_step(LoopState *st, const Dsv3Config *cfg, const char *ckpt_root,
                              int64_t step, const Dsv3ReportTotals *totals) {
    const Dsv3StepReport *first = NULL;
    for (int64_t r = 0; r < st->gather.n_stage; r++) {
        const Dsv3StepReport *rep = &st->gather.reports[r];
        if (rep->nonfinite_group >= 0 && (!first || rep->nonfinite_group < first->nonfinite_group))
            first = rep;
    }
    char where[DSV3_FQN_CAPACITY + 64];
    if (first)
        snprintf(where, sizeof where, "first in the gradient of %s", first->nonfinite_fqn);
    else
        snprintf(where, sizeof where, "in the loss");
    if (st->skipped_steps < cfg->training.skip_nonfinite_steps) {
        st->skipped_steps++;
        DSV3_LOG_WARN("step %" PRId64 ": loss %g, gradient norm %g: NaN or infinite values %s; "
                      "step skipped, parameters and optimizer state unchanged (%" PRId64
                      " of training.skip_nonfinite_steps = %" PRId64 ")",
                      step, totals->loss, totals->grad_norm, where, st->skipped_steps,
                      cfg->training.skip_nonfinite_steps);
        return DSV3_OK;
    }
    int64_t *steps = NULL, count = 0, good = -1;
    int *kinds = NULL;
    DSV3_CALL(dsv3_ckpt_list(ckpt_root, &steps, &kinds, &count));
    for (int64_t i = 0; i < count; i++)
        if (kinds[i] == DSV3_CKPT_FULL) good = steps[i];
    dsv3_free(steps);
    dsv3_free(kinds);
    char saved[DSV3_CKPT_PATH_CAPACITY + 64];
    if (good >= 0)
        snprintf(saved, sizeof saved, "the last good checkpoint is %s/step-%" PRId64, ckpt_root,
                 good);
    else
        snprintf(saved, sizeof saved, "no checkpoint was saved");
    DSV3_RAISE(DSV3_ERR_NUMERIC,
               "step %" PRId64 ": loss %g, gradient norm %g: NaN or infinite values %s; the "
               "parameters were not updated and %s. Lower optimizer.lr, or let "
               "training.skip_nonfinite_steps skip such steps",
               step, totals->loss, totals->grad_norm, where, saved);
}

// After step `step`'s reports: the trace file, validation, the logged line. *loss is the
// step's loss, replaced by the held-out loss (and *held_out set) when validation ran.
static Dsv3Err after_step(Dsv3Launch *launch, LoopState *st, const BatchShape *s,
                          const Dsv3StepPlan *plan, double seconds, double flops_per_token,
                          int32_t *windows, double *loss, int *held_out) {
    const Dsv3Config *cfg = &launch->config;
    if (plan->flags & DSV3_PLAN_PROFILE)
        DSV3_CALL(dsv3_report_write_trace(&st->gather, &st->trace, cfg, plan->step));
    Dsv3StepRecord rec;
    step_record(&st->gather, &st->trace, s, plan->step, plan->lr, seconds, flops_per_token,
                st->peak_tflops, &rec);
    int raised = 0;
    double peak =
        dsv3_peak_after_step(st->peak_tflops, cfg->metrics.peak_tflops, rec.tflops, &raised);
    if (raised) {
        DSV3_LOG_WARN("step %" PRId64 " reached %.3f TFLOP/s per stage rank, above the peak of "
                      "%.3f measured at start-up (the machine was busier then): MFU is against "
                      "%.3f TFLOP/s from now on (set metrics.peak_tflops for a fixed peak)",
                      plan->step, rec.tflops, st->peak_tflops, peak);
        st->peak_tflops = peak;
        rec.mfu = dsv3_peak_mfu_percent(flops_per_token, rec.tps, peak);
    } else if (rec.mfu > 100 && !st->peak_warned) {
        DSV3_LOG_WARN("MFU %.1f%% at step %" PRId64 ": metrics.peak_tflops = %.3f is below the "
                      "%.3f TFLOP/s this step reached per stage rank",
                      rec.mfu, plan->step, cfg->metrics.peak_tflops, rec.tflops);
        st->peak_warned = 1;
    }
    *loss = rec.loss;
    if (dsv3_validation_due(st->validation, plan->step)) {
        double vseconds = 0;
        int64_t vtokens = 0;
        // The gather buffers are reused: the step's expert load stays, the reports do not.
        DSV3_CALL(dsv3_validation_run(st->validation, launch, &st->gather, plan->step, windows,
                                      &rec.validation_loss, &vtokens, &vseconds));
        rec.seconds[DSV3_PHASE_VALIDATION] = vseconds;
        dsv3_metrics_log_validation(st->metrics, plan->step, rec.validation_loss,
                                    (double)vtokens / vseconds / (double)st->gather.n_stage,
                                    vseconds, vtokens);
        *loss = rec.validation_loss;
    }
    *held_out = dsv3_validation_due(st->validation, plan->step);
    if (plan->flags & DSV3_PLAN_EXPERT_LOAD) DSV3_CALL(dsv3_metrics_log_step(st->metrics, &rec));
    return DSV3_OK;
}

static Dsv3Err train_steps(Dsv3Launch *launch, Data *data, LoopState *st, int32_t eos_id,
                           double floor) {
    const Dsv3Config *cfg = &launch->config;
    BatchShape s;
    DSV3_CALL(batch_shape(launch, &s));
    Dsv3LrSchedule schedule;
    DSV3_CALL(schedule_of(cfg, &schedule));
    double flops_per_token = (double)dsv3_model_flops_per_token(&launch->model, s.T);
    int32_t *windows = NULL;
    DSV3_CALL(dsv3_alloc((void **)&windows, (size_t)(s.B * (s.T + 1)) * sizeof *windows,
                         "token windows"));
    Dsv3Err err = DSV3_OK;
    double last_loss = NAN;
    int held_out = 0;
    DSV3_LOG_INFO("training %" PRId64 " steps: global batch %" PRId64 " × seq_len %" PRId64
                  " = %" PRId64 " tokens per step, %" PRId64 " micro-batch(es) of %" PRId64
                  " per data-parallel rank; GEMMs in %s",
                  cfg->training.steps, s.G, s.T, s.G * s.T, s.micro_batches, s.B,
                  strcmp(cfg->training.mixed_precision_param, "bfloat16") == 0
                      ? "bf16 (fp32 sums; training.mixed_precision_param)"
                      : "fp32");
    // Step 0 lets the stage ranks build their models before the first step's clock starts.
    double ready_start = dsv3_log_seconds();
    Dsv3StepPlan start_plan = {.eos_id = eos_id};
    DSV3_CALL_GOTO(err, done, dsv3_protocol_send_plan(launch->protocol, &start_plan));
    DSV3_CALL_GOTO(err, done, dsv3_peak_start_coordinator(launch, &st->peak_tflops));
    Dsv3CkptCoordinator ckpt; // loads a checkpoint if the config asks for one (checkpoint.h)
    int64_t first_step = 1;
    DSV3_CALL_GOTO(err, done, dsv3_ckpt_coordinator_start(&ckpt, launch, s.G, &first_step));
    DSV3_CALL_GOTO(err, done, dsv3_protocol_ready(launch->protocol));
    DSV3_LOG_INFO("start-up: %" PRId64
                  " stage rank(s) allocated their models and are ready after %.2f s",
                  launch->topology.n_stage, dsv3_log_seconds() - ready_start);
    for (int64_t step = first_step; step <= cfg->training.steps; step++) {
        // Validation steps are logged too, so that their validation_loss is written.
        int logged = step % cfg->metrics.log_freq == 0 || step == 1 ||
                     step == cfg->training.steps || dsv3_validation_due(st->validation, step);
        int profiled = cfg->profiling.enable_profiling && step % cfg->profiling.profile_freq == 0;
        dsv3_trace_step_start(&st->trace, profiled);
        double start = st->trace.origin;
        Dsv3StepPlan plan = {.step = step,
                             .micro_batches = s.micro_batches,
                             .lr = cfg->optimizer.lr * dsv3_lr_factor(&schedule, step),
                             .grad_scale = 1.0 / (double)(s.G * s.T),
                             .eos_id = eos_id,
                             .flags = (logged ? DSV3_PLAN_EXPERT_LOAD : 0) |
                                      (profiled ? DSV3_PLAN_PROFILE : 0)};
        DSV3_CALL_GOTO(err, done, dsv3_protocol_send_plan(launch->protocol, &plan));
        DSV3_CALL_GOTO(
            err, done,
            dsv3_trace_add(&st->trace, DSV3_PHASE_COMM_PLAN, -1, start, dsv3_log_seconds()));
        DSV3_CALL_GOTO(err, done, send_batches(launch, data, &s, step, windows, &st->trace));
        double wait = dsv3_log_seconds();
        DSV3_CALL_GOTO(err, done, dsv3_report_gather(&st->gather, launch, &plan));
        // The first step of the run is over (a long one: first touches, warm-up); from now on
        // a peer that is silent for comm.train_timeout_seconds ends the job.
        dsv3_protocol_set_patience(launch->protocol, DSV3_PATIENCE_TRAIN);
        double end = dsv3_log_seconds();
        DSV3_CALL_GOTO(err, done,
                       dsv3_trace_add(&st->trace, DSV3_PHASE_WAIT_REPORTS, -1, wait, end));
        Dsv3ReportTotals totals;
        dsv3_report_combine(&st->gather, &totals);
        if (!isfinite(totals.loss) || !isfinite(totals.grad_norm))
            DSV3_CALL_GOTO(err, done, nonfinite_step(st, cfg, ckpt.root, step, &totals));
        // A stop signal here or on any stage rank ends the run after this step, saved.
        int stop_signal = dsv3_stop_signal_received();
        if (!stop_signal) stop_signal = dsv3_report_stop_signal(&st->gather);
        int stop = stop_signal && step < cfg->training.steps;
        // Saves when due (or stopping); before after_step, whose validation passes the stage
        // ranks serve after it.
        DSV3_CALL_GOTO(err, done, dsv3_ckpt_coordinator_step(&ckpt, launch, step, plan.lr, stop));
        DSV3_CALL_GOTO(err, done,
                       after_step(launch, st, &s, &plan, end - start, flops_per_token, windows,
                                  &last_loss, &held_out));
        if (stop) {
            char saved[DSV3_CKPT_PATH_CAPACITY];
            dsv3_ckpt_step_dir(saved, ckpt.root, step, 0);
            DSV3_LOG_INFO("stopping on %s after step %" PRId64 " of %" PRId64
                          ": its state is saved in %s; run the same command again to resume "
                          "from it%s",
                          dsv3_stop_signal_name(stop_signal), step, cfg->training.steps, saved,
                          cfg->checkpoint.enable ? "" : " (with checkpoint.enable = true)");
            goto done;
        }
    }
    if (!isnan(floor))
        DSV3_LOG_INFO(
            "final %s loss %.4f, %.4f above the dataset's entropy floor of %.4f nats per token",
            held_out ? "held-out" : "training", last_loss, last_loss - floor, floor);
done:
    dsv3_free(windows);
    return err;
}

Dsv3Err dsv3_coordinator_train(Dsv3Launch *launch) {
    const Dsv3Config *cfg = &launch->config;
    Data data;
    DSV3_CALL(data_open(&data, cfg));
    Dsv3StepPlan stop = {.stop = 1};
    Dsv3Err err = DSV3_OK;
    double floor = NAN;
    int32_t eos_id = -1;
    if (data.synthetic) {
        dsv3_synthetic_log_summary(data.synthetic);
        floor = dsv3_synthetic_entropy_floor(data.synthetic);
        eos_id = dsv3_synthetic_eos_id(data.synthetic);
    } else if (data.text) {
        eos_id = dsv3_text_dataset_eos_id(data.text);
    } else if (launch->model.attn_mask_type == DSV3_MASK_BLOCK_CAUSAL) {
        // A token file carries no EOS id: take it from the tokenizer that made it, if present.
        err = dsv3_tokenizer_folder_eos_id(cfg->model.hf_assets_path, &eos_id);
        if (err != DSV3_OK) {
            data_close(&data);
            return dsv3_error_trace(err, __FILE__, __LINE__, __func__);
        }
    }
    if (launch->model.attn_mask_type == DSV3_MASK_BLOCK_CAUSAL && eos_id < 0)
        DSV3_LOG_WARN(
            "training.dataset = \"%s\" gives no EOS id (no tokenizer with an eos_token in "
            "model.hf_assets_path = '%s'): block_causal attention sees each window as one document",
            cfg->training.dataset, cfg->model.hf_assets_path);
    LoopState st = {0};
    DSV3_CALL_GOTO(err, done, dsv3_metrics_open(&st.metrics, cfg, &launch->model));
    DSV3_CALL_GOTO(err, done, dsv3_report_gather_create(&st.gather, launch));
    DSV3_CALL_GOTO(err, done, dsv3_validation_open(&st.validation, launch));
    DSV3_CALL_GOTO(err, done, train_steps(launch, &data, &st, eos_id, floor));
    DSV3_CALL_GOTO(err, done, dsv3_protocol_send_plan(launch->protocol, &stop));
done:
    dsv3_metrics_close(st.metrics);
    dsv3_report_gather_destroy(&st.gather);
    dsv3_trace_destroy(&st.trace);
    dsv3_validation_close(st.validation);
    data_close(&data);
    return err;
}
