// validation: held-out windows on the coordinator, forward and loss on the stage ranks.
#include "validation.h"

#include <inttypes.h>
#include <string.h>

#include "common/core/alloc.h"
#include "common/core/log.h"
#include "common/data/synthetic.h"
#include "common/data/token_file.h"
#include "common/comm/layout.h"
#include "common/train/stage_runtime.h"
#include "kernels/kernels.h"

// The first held-out synthetic window; pass windows count down from it. Training takes windows
// from 0 up and would need 2^62 of them to meet it.
static const int64_t SYNTHETIC_HELD_OUT_TOP = ((int64_t)1 << 62) - 1;

struct Dsv3Validation {
    Dsv3Synthetic *synthetic;
    Dsv3TokenFile *tokens;
    int64_t B, T;   // training's micro-batch shape, which the model is built for
    int64_t vB, vT; // held-out sequences per batch per data-parallel rank, and their length
    int64_t dp, freq, batches, micro_per_batch;
    int32_t eos_id;
    int32_t *window; // (vT + 1)
};

static Dsv3Err read_window(Dsv3Validation *v, int64_t i, int32_t *out) {
    if (v->synthetic) return dsv3_synthetic_window(v->synthetic, SYNTHETIC_HELD_OUT_TOP - i, out);
    return dsv3_token_file_window(v->tokens, i, out);
}

Dsv3Err dsv3_validation_open(Dsv3Validation **out, const Dsv3Launch *launch) {
    const Dsv3Config *cfg = &launch->config;
    *out = NULL;
    if (!cfg->validation.enable) return DSV3_OK;
    Dsv3Validation *v = NULL;
    DSV3_CALL(dsv3_calloc((void **)&v, 1, sizeof *v, "validation"));
    Dsv3Err err = DSV3_OK;
    const Dsv3ParallelDims *dims = &launch->topology.dims;
    v->B = cfg->training.local_batch_size;
    v->T = cfg->training.seq_len;
    v->vB = cfg->validation.local_batch_size > 0 ? cfg->validation.local_batch_size : v->B;
    v->vT = cfg->validation.seq_len > 0 ? cfg->validation.seq_len : v->T;
    v->dp = dims->dp_replicate * dims->dp_shard;
    v->freq = cfg->validation.freq;
    v->micro_per_batch = (v->vB + v->B - 1) / v->B;
    v->eos_id = -1;
    DSV3_CHECK_GOTO(err, fail, v->vT <= v->T, DSV3_ERR_CONFIG,
                    "validation.seq_len %" PRId64 " exceeds training.seq_len %" PRId64
                    ": the model is built for training's sequence length",
                    v->vT, v->T);
    int64_t held_out = DSV3_VALIDATION_SYNTHETIC_WINDOWS;
    const char *kind = cfg->validation.dataset;
    if (strcmp(kind, "synthetic") == 0) {
        DSV3_CALL_GOTO(err, fail,
                       dsv3_synthetic_create(&v->synthetic, launch->model.vocab_size, v->vT,
                                             (uint64_t)cfg->debug.seed));
        v->eos_id = dsv3_synthetic_eos_id(v->synthetic);
    } else if (strcmp(kind, "tokens") == 0) {
        DSV3_CALL_GOTO(err, fail,
                       dsv3_token_file_open(&v->tokens, cfg->validation.dataset_path,
                                            launch->model.vocab_size, v->vT));
        held_out = dsv3_token_file_num_windows(v->tokens);
    } else {
        DSV3_CHECK_GOTO(err, fail, 0, DSV3_ERR_CONFIG,
                        "validation.dataset = \"%s\" is not supported yet "
                        "(use \"synthetic\" or \"tokens\")",
                        kind);
    }
    v->batches = cfg->validation.steps > 0 ? cfg->validation.steps : held_out / (v->vB * v->dp);
    if (v->batches < 1) v->batches = 1; // a held-out set smaller than one batch wraps around
    DSV3_CALL_GOTO(err, fail,
                   dsv3_alloc((void **)&v->window, (size_t)(v->vT + 1) * sizeof *v->window,
                              "validation window"));
    DSV3_LOG_INFO("validation: every %" PRId64 " steps, %" PRId64 " batch(es) of %" PRId64
                  " × %" PRId64 " sequences of %" PRId64 " tokens from %s%s",
                  v->freq, v->batches, v->vB, v->dp, v->vT,
                  v->synthetic ? "held-out synthetic windows" : "the token file ",
                  v->synthetic ? "" : cfg->validation.dataset_path);
    *out = v;
    return DSV3_OK;
fail:
    dsv3_validation_close(v);
    return err;
}

void dsv3_validation_close(Dsv3Validation *v) {
    if (!v) return;
    dsv3_synthetic_destroy(v->synthetic);
    dsv3_token_file_close(v->tokens);
    dsv3_free(v->window);
    dsv3_free(v);
}

int dsv3_validation_due(const Dsv3Validation *v, int64_t step) { return v && step % v->freq == 0; }

// Fills micro-batch `micro` of batch `batch` for data-parallel rank d: training's (B, T + 1)
// shape, held-out rows first, padding after.
static Dsv3Err fill_micro_batch(Dsv3Validation *v, int64_t batch, int64_t micro, int64_t d,
                                int32_t *windows) {
    const int64_t W = v->T + 1;
    for (int64_t b = 0; b < v->B; b++) {
        int32_t *row = windows + b * W;
        int64_t j = micro * v->B + b; // sequence within this rank's share of the batch
        int64_t real = j < v->vB ? v->vT + 1 : 0;
        if (real) {
            DSV3_CALL(read_window(v, (batch * v->dp + d) * v->vB + j, v->window));
            memcpy(row, v->window, (size_t)real * sizeof *row);
        }
        for (int64_t t = real; t < W; t++)
            row[t] = DSV3_PAD_TOKEN;
    }
    return DSV3_OK;
}

Dsv3Err dsv3_validation_run(Dsv3Validation *v, const Dsv3Launch *launch, Dsv3ReportGather *gather,
                            int64_t step, int32_t *windows, double *loss, int64_t *tokens,
                            double *seconds) {
    const Dsv3Topology *t = &launch->topology;
    double start = dsv3_log_seconds();
    Dsv3StepPlan plan = {.step = step,
                         .micro_batches = v->batches * v->micro_per_batch,
                         .eos_id = v->eos_id,
                         .validate = 1};
    DSV3_CALL(dsv3_protocol_send_plan(launch->protocol, &plan));
    for (int64_t k = 0; k < v->batches; k++)
        for (int64_t i = 0; i < v->micro_per_batch; i++)
            for (int64_t r = 0; r < t->n_stage; r++) {
                Dsv3StageCoord c;
                DSV3_CALL(dsv3_layout_stage_coord(&t->dims, r, &c));
                Dsv3BatchPart part = dsv3_layout_batch_part(&t->dims, &c);
                if (part == DSV3_BATCH_NONE) continue;
                DSV3_CALL(fill_micro_batch(v, k, i, c.dp_replicate * t->dims.dp_shard + c.dp_shard,
                                           windows));
                DSV3_CALL(dsv3_protocol_send_batch(launch->protocol, r, k * v->micro_per_batch + i,
                                                   part, windows, v->B, v->T));
            }
    DSV3_CALL(dsv3_report_gather(gather, launch, &plan));
    Dsv3ReportTotals totals;
    dsv3_report_combine(gather, &totals);
    *loss = totals.loss;
    *tokens = totals.n_labels;
    *seconds = dsv3_log_seconds() - start;
    return DSV3_OK;
}

Dsv3Err dsv3_validation_stage(const Dsv3PipelineStage *stage, const Dsv3Launch *launch,
                              const Dsv3StepPlan *plan, int32_t *windows, int32_t *tokens,
                              int32_t *labels, Dsv3StepReport *r) {
    const Dsv3Config *cfg = &launch->config;
    const Dsv3Topology *t = &launch->topology;
    int64_t B = cfg->training.local_batch_size, T = cfg->training.seq_len;
    Dsv3BatchPart part = dsv3_layout_batch_part(&t->dims, &t->coord);
    double start = dsv3_log_seconds();
    memset(r, 0, sizeof *r);
    for (int64_t i = 0; i < plan->micro_batches; i++) {
        if (part != DSV3_BATCH_NONE)
            DSV3_CALL(
                dsv3_protocol_recv_batch(launch->protocol, i, part, windows, B, T, tokens, labels));
        DSV3_CALL(dsv3_pipeline_run(stage, tokens, labels, 0, NULL, 0, &r->loss_sum, &r->n_labels));
    }
    dsv3_stage_report_loss_once(t, &r->loss_sum, &r->n_labels);
    const Dsv3ModelArgs *a = dsv3_model_args(stage->models[0]);
    for (int64_t l = 0; l < a->n_layers; l++) {
        Dsv3Model *owner = NULL;
        int64_t *counts = dsv3_pipeline_tokens_per_expert(stage, l, &owner);
        if (counts)
            DSV3_CALL(dsv3_memory_zero(dsv3_model_services(owner)->kernels, counts,
                                       (size_t)a->num_experts * sizeof *counts));
    }
    r->seconds[DSV3_PHASE_VALIDATION] = dsv3_log_seconds() - start;
    return DSV3_OK;
}
