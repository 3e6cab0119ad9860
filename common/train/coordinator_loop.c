// coordinator_loop: data, schedule, and the step line.
#include "coordinator_loop.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/core/alloc.h"
#include "common/core/format.h"
#include "common/core/log.h"
#include "common/data/synthetic.h"
#include "common/data/token_file.h"
#include "common/dist/idle_wait.h"
#include "common/dist/mpi_check.h"
#include "common/dist/tags.h"
#include "common/train/lr_schedule.h"
#include "common/train/protocol.h"

// Room for job.dump_folder (DSV3_CONFIG_STRING_CAPACITY) plus a file name.
enum { PATH_CAPACITY = DSV3_CONFIG_STRING_CAPACITY + 64 };

static const double GIB = 1024.0 * 1024.0 * 1024.0;

// The training data: one of the dataset kinds, read by window index.
typedef struct {
    Dsv3Synthetic *synthetic;
    Dsv3TokenFile *tokens;
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
    DSV3_RAISE(DSV3_ERR_CONFIG, "training.dataset = \"%s\" is not supported yet (use \"synthetic\" "
               "or \"tokens\")", kind);
}

static Dsv3Err data_window(Data *d, int64_t w, int32_t *tokens) {
    if (d->synthetic) return dsv3_synthetic_window(d->synthetic, w, tokens);
    return dsv3_token_file_window(d->tokens, w, tokens);
}

static void data_close(Data *d) {
    dsv3_synthetic_destroy(d->synthetic);
    dsv3_token_file_close(d->tokens);
}

// <dump_folder>/metrics.jsonl, created with its folder; NULL-safe on failure (logged).
static Dsv3Err open_metrics(const Dsv3Config *cfg, FILE **out) {
    char path[PATH_CAPACITY];
    *out = NULL;
    if (mkdir(cfg->job.dump_folder, 0777) != 0 && errno != EEXIST)
        DSV3_RAISE(DSV3_ERR_IO, "cannot create job.dump_folder '%s': %s", cfg->job.dump_folder, strerror(errno));
    snprintf(path, sizeof path, "%s/metrics.jsonl", cfg->job.dump_folder);
    *out = fopen(path, "a");
    DSV3_CHECK(*out, DSV3_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    return DSV3_OK;
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

// Sends step `step`'s windows: data-parallel rank d takes global windows
// [(step-1)·G + d·G/dp, … + G/dp), micro-batch i the B after i·B of those.
static Dsv3Err send_batches(const Dsv3Launch *launch, Data *data, const BatchShape *s, int64_t step,
                            int32_t *windows) {
    const Dsv3Topology *t = &launch->topology;
    int64_t per_rank = s->G / s->dp, W = s->T + 1;
    for (int64_t i = 0; i < s->micro_batches; i++)
        for (int64_t r = 0; r < t->n_stage; r++) {
            Dsv3StageCoord c;
            DSV3_CALL(dsv3_layout_stage_coord(&t->dims, r, &c));
            int64_t d = c.dp_replicate * t->dims.dp_shard + c.dp_shard;
            int64_t first = (step - 1) * s->G + d * per_rank + i * s->B;
            for (int64_t b = 0; b < s->B; b++) DSV3_CALL(data_window(data, first + b, windows + b * W));
            DSV3_MPI_CALL(MPI_Send(windows, (int)(s->B * W), MPI_INT32_T, (int)(1 + r), DSV3_TAG_BATCH, t->job));
        }
    return DSV3_OK;
}

typedef struct {
    double loss, grad_norm, seconds, tokens_per_second, tflops, memory_gib, peak_gib;
    double seconds_forward, seconds_backward, seconds_reduce, seconds_optimizer;
} StepMetrics;

// Receives every stage rank's report; the step took from `start` until the last arrived.
static Dsv3Err gather_reports(const Dsv3Launch *launch, const BatchShape *s, double start,
                              double flops_per_token, StepMetrics *out) {
    const Dsv3Topology *t = &launch->topology;
    double loss_sum = 0;
    int64_t labels = 0;
    memset(out, 0, sizeof *out);
    Dsv3StepReport *reports = NULL;
    MPI_Request *requests = NULL;
    Dsv3Err err = DSV3_OK;
    DSV3_CALL_GOTO(err, done, dsv3_calloc((void **)&reports, (size_t)t->n_stage, sizeof *reports, "step reports"));
    DSV3_CALL_GOTO(err, done, dsv3_calloc((void **)&requests, (size_t)t->n_stage, sizeof *requests, "report requests"));
    for (int64_t r = 0; r < t->n_stage; r++)
        DSV3_MPI_CALL_GOTO(err, done, MPI_Irecv(&reports[r], sizeof *reports, MPI_BYTE, (int)(1 + r),
                                                DSV3_TAG_REPORT, t->job, &requests[r]));
    DSV3_CALL_GOTO(err, done, dsv3_idle_waitall((int)t->n_stage, requests));
    for (int64_t r = 0; r < t->n_stage; r++) {
        const Dsv3StepReport *rep = &reports[r];
        loss_sum += rep->loss_sum;
        labels += rep->n_labels;
        out->grad_norm = rep->grad_norm;
        out->seconds_forward = fmax(out->seconds_forward, rep->seconds_forward);
        out->seconds_backward = fmax(out->seconds_backward, rep->seconds_backward);
        out->seconds_reduce = fmax(out->seconds_reduce, rep->seconds_reduce);
        out->seconds_optimizer = fmax(out->seconds_optimizer, rep->seconds_optimizer);
        out->memory_gib = fmax(out->memory_gib, (double)rep->bytes_current / GIB);
        out->peak_gib = fmax(out->peak_gib, (double)rep->bytes_peak / GIB);
    }
    out->loss = loss_sum / (double)labels;
    out->seconds = dsv3_log_seconds() - start;
    out->tokens_per_second = (double)(s->G * s->T) / out->seconds;
    out->tflops = flops_per_token * out->tokens_per_second / 1e12;
done:
    dsv3_free(reports);
    dsv3_free(requests);
    return err;
}

static void log_step(FILE *jsonl, int64_t step, double lr, const StepMetrics *m) {
    char tps[DSV3_FORMAT_CAPACITY];
    dsv3_format_count((int64_t)llround(m->tokens_per_second), tps);
    DSV3_LOG_INFO("step %5" PRId64 "  loss %8.4f  grad_norm %8.4f  lr %.4e  tps %s  tflops %.3f  "
                  "memory %.2f GiB (peak %.2f GiB)", step, m->loss, m->grad_norm, lr, tps, m->tflops,
                  m->memory_gib, m->peak_gib);
    if (!jsonl) return;
    fprintf(jsonl,
            "{\"step\": %" PRId64 ", \"loss\": %.9g, \"grad_norm\": %.9g, \"lr\": %.9g, \"tps\": %.6g, "
            "\"tflops\": %.6g, \"memory_gib\": %.6g, \"time_forward\": %.6g, \"time_backward\": %.6g, "
            "\"time_reduce\": %.6g, \"time_optimizer\": %.6g, \"time_step\": %.6g}\n",
            step, m->loss, m->grad_norm, lr, m->tokens_per_second, m->tflops, m->memory_gib,
            m->seconds_forward, m->seconds_backward, m->seconds_reduce, m->seconds_optimizer, m->seconds);
    fflush(jsonl);
}

static Dsv3Err schedule_of(const Dsv3Config *cfg, Dsv3LrSchedule *out) {
    double ratio = cfg->lr_scheduler.decay_ratio;
    Dsv3LrScheduleParams p = {
        .warmup_steps = cfg->lr_scheduler.warmup_steps,
        .total_steps = cfg->lr_scheduler.total_steps ? cfg->lr_scheduler.total_steps : cfg->training.steps,
        .has_decay_ratio = ratio >= 0, .decay_ratio = ratio, .min_lr_factor = cfg->lr_scheduler.min_lr_factor};
    DSV3_CALL(dsv3_lr_decay_type_parse(cfg->lr_scheduler.decay_type, &p.decay_type));
    return dsv3_lr_schedule_init(out, &p);
}

static Dsv3Err broadcast_plan(const Dsv3Launch *launch, Dsv3StepPlan *plan) {
    DSV3_MPI_CALL(MPI_Bcast(plan, sizeof *plan, MPI_BYTE, 0, launch->topology.job));
    return DSV3_OK;
}

static Dsv3Err train_steps(Dsv3Launch *launch, Data *data, FILE *jsonl, int32_t eos_id, double floor) {
    const Dsv3Config *cfg = &launch->config;
    BatchShape s;
    DSV3_CALL(batch_shape(launch, &s));
    Dsv3LrSchedule schedule;
    DSV3_CALL(schedule_of(cfg, &schedule));
    double flops_per_token = (double)dsv3_model_flops_per_token(&launch->model, s.T);
    int32_t *windows = NULL;
    DSV3_CALL(dsv3_alloc((void **)&windows, (size_t)(s.B * (s.T + 1)) * sizeof *windows, "token windows"));
    Dsv3Err err = DSV3_OK;
    double last_loss = NAN;
    DSV3_LOG_INFO("training %" PRId64 " steps: global batch %" PRId64 " × seq_len %" PRId64 " = %" PRId64
                  " tokens per step, %" PRId64 " micro-batch(es) of %" PRId64 " per data-parallel rank",
                  cfg->training.steps, s.G, s.T, s.G * s.T, s.micro_batches, s.B);
    // Step 0 lets the stage ranks build their models before the first step's clock starts.
    Dsv3StepPlan start_plan = {.eos_id = eos_id};
    DSV3_CALL_GOTO(err, done, broadcast_plan(launch, &start_plan));
    MPI_Request ready;
    DSV3_MPI_CALL_GOTO(err, done, MPI_Ibarrier(launch->topology.job, &ready));
    DSV3_CALL_GOTO(err, done, dsv3_idle_waitall(1, &ready));
    for (int64_t step = 1; step <= cfg->training.steps; step++) {
        double start = dsv3_log_seconds();
        Dsv3StepPlan plan = {.step = step, .micro_batches = s.micro_batches,
                             .lr = cfg->optimizer.lr * dsv3_lr_factor(&schedule, step),
                             .grad_scale = 1.0 / (double)(s.G * s.T), .eos_id = eos_id};
        DSV3_CALL_GOTO(err, done, broadcast_plan(launch, &plan));
        DSV3_CALL_GOTO(err, done, send_batches(launch, data, &s, step, windows));
        StepMetrics m;
        DSV3_CALL_GOTO(err, done, gather_reports(launch, &s, start, flops_per_token, &m));
        if (step % cfg->metrics.log_freq == 0 || step == 1 || step == cfg->training.steps)
            log_step(jsonl, step, plan.lr, &m);
        last_loss = m.loss;
    }
    if (!isnan(floor))
        DSV3_LOG_INFO("final loss %.4f, %.4f above the dataset's entropy floor of %.4f nats per token",
                      last_loss, last_loss - floor, floor);
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
    } else if (launch->model.attn_mask_type == DSV3_MASK_BLOCK_CAUSAL) {
        DSV3_LOG_WARN("training.dataset = \"tokens\" carries no EOS id: block_causal attention sees "
                      "each window as one document");
    }
    FILE *jsonl = NULL;
    DSV3_CALL_GOTO(err, done, open_metrics(cfg, &jsonl));
    DSV3_CALL_GOTO(err, done, train_steps(launch, &data, jsonl, eos_id, floor));
    DSV3_CALL_GOTO(err, done, broadcast_plan(launch, &stop));
done:
    if (jsonl) fclose(jsonl);
    data_close(&data);
    return err;
}
