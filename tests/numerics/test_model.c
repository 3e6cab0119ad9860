// The whole model against the PyTorch reference (tests/reference/model_case.py, float64):
//   1. one step: loss, logits, every parameter gradient, tokens per expert;
//   2. training: the losses, gradient norms and learning rates of every step with clipping,
//      expert-bias updates, AdamW and the LR schedule, and the final parameters;
//   3. activation checkpointing: every mode gives the losses of mode none (≤ 1e-6);
//   4. accumulation: M micro-batches of B give the gradients of one batch of M × B.
// Usage: test_model CASE_DIR. Prints one line per check; exits non-zero on any failure.
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/alloc.h"
#include "common/model/model.h"
#include "common/train/lr_schedule.h"
#include "common/train/optimizer.h"
#include "tests/numerics/case.h"
#include "tests/numerics/npy.h"

// Relative error allowed against float64 (DESIGN: ≤ 1e-4 per tensor), between checkpointing
// modes, and between accumulation and one big batch (same float32 math, other sum order).
static const double TOLERANCE = 1e-4, AC_TOLERANCE = 1e-6, ACCUMULATION_TOLERANCE = 1e-5;

// Column of the checks' names in the output lines.
enum { WHAT_WIDTH = 48 };

typedef struct {
    Dsv3ModelArgs args;
    int64_t seq_len, batch, micro_batches, steps;
    int32_t eos_id;
    Dsv3OptimizerStep optim; // lr = peak lr
    Dsv3LrScheduleParams schedule;
} Case;

// The case directory, the lines of the checks and their failures.
static Dsv3Case checks;

static int fail_with(Dsv3Err err) {
    fprintf(stderr, "%s", dsv3_error_text());
    return err ? (int)err : 1;
}

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        Dsv3Err try_err_ = (expr);                                                                 \
        if (try_err_ != DSV3_OK) exit(fail_with(try_err_));                                        \
    } while (0)

static double num(json_object *o, const char *key) {
    json_object *v = NULL;
    if (!json_object_object_get_ex(o, key, &v)) {
        fprintf(stderr, "config.json: missing key '%s'\n", key);
        exit(1);
    }
    return json_object_get_double(v);
}

static const char *str(json_object *o, const char *key) {
    json_object *v = NULL;
    if (!json_object_object_get_ex(o, key, &v)) {
        fprintf(stderr, "config.json: missing key '%s'\n", key);
        exit(1);
    }
    return json_object_get_string(v);
}

static void read_case(Case *c, const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_object *root = json_object_from_file(path), *m = NULL, *o = NULL, *s = NULL;
    if (!root || !json_object_object_get_ex(root, "model", &m) ||
        !json_object_object_get_ex(root, "optimizer", &o) ||
        !json_object_object_get_ex(root, "lr_scheduler", &s)) {
        fprintf(stderr, "%s: cannot read model/optimizer/lr_scheduler\n", path);
        exit(1);
    }
    Dsv3ModelArgs *a = &c->args;
#define I(key) a->key = (int64_t)num(m, #key)
#define F(key) a->key = num(m, #key)
    I(vocab_size);
    I(dim);
    I(inter_dim);
    I(moe_inter_dim);
    I(n_layers);
    I(n_dense_layers);
    I(n_heads);
    F(norm_eps);
    I(num_experts);
    I(num_shared_experts);
    I(top_k);
    F(route_scale);
    I(num_expert_groups);
    I(num_limited_groups);
    F(load_balance_coeff);
    I(q_lora_rank);
    I(kv_lora_rank);
    I(qk_nope_head_dim);
    I(qk_rope_head_dim);
    I(v_head_dim);
    I(original_seq_len);
    F(rope_theta);
    F(rope_factor);
    F(beta_fast);
    F(beta_slow);
    F(mscale);
#undef I
#undef F
    json_object *rn = NULL;
    json_object_object_get_ex(m, "route_norm", &rn);
    a->route_norm = json_object_get_boolean(rn);
    a->score_func =
        strcmp(str(m, "score_func"), "sigmoid") == 0 ? DSV3_SCORE_SIGMOID : DSV3_SCORE_SOFTMAX;
    a->attn_mask_type = strcmp(str(m, "attn_mask_type"), "block_causal") == 0
                            ? DSV3_MASK_BLOCK_CAUSAL
                            : DSV3_MASK_CAUSAL;
    c->seq_len = (int64_t)num(root, "seq_len");
    c->batch = (int64_t)num(root, "local_batch_size");
    c->micro_batches = (int64_t)num(root, "micro_batches");
    c->steps = (int64_t)num(root, "steps");
    c->eos_id = (int32_t)num(root, "eos_id");
    c->optim = (Dsv3OptimizerStep){.lr = num(o, "lr"),
                                   .beta1 = (float)num(o, "beta1"),
                                   .beta2 = (float)num(o, "beta2"),
                                   .eps = (float)num(o, "eps"),
                                   .weight_decay = (float)num(o, "weight_decay"),
                                   .max_norm = num(root, "max_norm")};
    double ratio = num(s, "decay_ratio");
    c->schedule = (Dsv3LrScheduleParams){.warmup_steps = (int64_t)num(s, "warmup_steps"),
                                         .total_steps = (int64_t)num(s, "total_steps"),
                                         .has_decay_ratio = ratio >= 0,
                                         .decay_ratio = ratio,
                                         .min_lr_factor = num(s, "min_lr_factor")};
    TRY(dsv3_lr_decay_type_parse(str(s, "decay_type"), &c->schedule.decay_type));
    json_object_put(root);
}

// Loads "<prefix><fqn>.npy" into every parameter and "<buffer_prefix>…expert_bias" into biases.
static void load_state(Dsv3Model *m, const char *dir, const char *prefix,
                       const char *buffer_prefix) {
    const Dsv3ParamStore *st = dsv3_model_services(m)->params;
    Dsv3ParamGroup *groups = st->groups;
    char name[256];
    for (int g = 0; g < st->n_groups; g++)
        for (int s = 0; s < DSV3_PARAM_SLOT_COUNT; s++) {
            Dsv3Param *p = &groups[g].params[s];
            if (!p->numel) continue;
            float *data = NULL;
            int64_t count = 0;
            snprintf(name, sizeof name, "%s%s", prefix, p->fqn);
            TRY(dsv3_npy_read_f32(&data, &count, dir, name));
            if (count != p->numel) {
                fprintf(stderr, "%s: %lld values, the model has %lld\n", name, (long long)count,
                        (long long)p->numel);
                exit(1);
            }
            memcpy(p->data, data, (size_t)count * sizeof(float));
            dsv3_free(data);
        }
    const Dsv3ModelArgs *a = dsv3_model_args(m);
    for (int64_t l = 0; l < a->n_layers; l++) {
        float *bias = dsv3_model_expert_bias(m, l), *data = NULL;
        if (!bias) continue;
        int64_t count = 0;
        snprintf(name, sizeof name, "%slayers.%lld.moe.expert_bias", buffer_prefix, (long long)l);
        TRY(dsv3_npy_read_f32(&data, &count, dir, name));
        memcpy(bias, data, (size_t)a->num_experts * sizeof(float));
        dsv3_free(data);
    }
}

static Dsv3Model *make_model(const Case *c, int64_t batch, Dsv3AcMode mode, int64_t every) {
    Dsv3ModelOptions opt = {.batch = batch,
                            .seq_len = c->seq_len,
                            .eos_id = c->eos_id,
                            .ac_mode = mode,
                            .ac_every = every,
                            .loss_chunk = 7,
                            .slots = 1};
    Dsv3Model *m = NULL;
    TRY(dsv3_model_create_local(&m, &c->args, &opt, NULL, 0, NULL));
    return m;
}

static int64_t count_labels(const int32_t *labels, int64_t n) {
    int64_t count = 0;
    for (int64_t i = 0; i < n; i++)
        count += labels[i] != DSV3_IGNORE_INDEX;
    return count;
}

// One step's forward and backward over `mb` micro-batches of B sequences; returns the loss.
static double run_micro_batches(Dsv3Model *m, const int32_t *tokens, const int32_t *labels,
                                int64_t mb, int64_t per_micro, float *logits0) {
    int64_t total = count_labels(labels, mb * per_micro);
    double loss = 0;
    for (int64_t i = 0; i < mb; i++) {
        double sum = 0;
        int64_t n = 0;
        TRY(dsv3_model_forward(m, 0, &(Dsv3StageInput){.tokens = tokens + i * per_micro}));
        if (i == 0 && logits0) TRY(dsv3_model_logits(m, 0, logits0));
        Dsv3StageGrad grad = {.labels = labels + i * per_micro, .grad_scale = 1.0f / (float)total};
        TRY(dsv3_model_backward(m, 0, &grad, &sum, &n));
        loss += sum;
    }
    return loss / (double)total;
}

// Compares got (count) with the array `name` of the case; a missing file or another count
// ends the program.
static void compare_file(const char *what, const float *got, int64_t count, const char *name,
                         double tolerance) {
    TRY(dsv3_case_check_within(&checks, what, got, count, name, tolerance));
}

// Every parameter's gradient (`grads`) or value against "<name_prefix><fqn>".
static void compare_params(Dsv3Model *m, int grads, const char *name_prefix,
                           const char *what_prefix) {
    const Dsv3ParamStore *st = dsv3_model_services(m)->params;
    Dsv3ParamGroup *groups = st->groups;
    char name[256], what[256];
    for (int g = 0; g < st->n_groups; g++)
        for (int s = 0; s < DSV3_PARAM_SLOT_COUNT; s++) {
            Dsv3Param *p = &groups[g].params[s];
            if (!p->numel) continue;
            snprintf(name, sizeof name, "%s%s", name_prefix, p->fqn);
            snprintf(what, sizeof what, "%s%s", what_prefix, p->fqn);
            compare_file(what, grads ? p->grad : p->data, p->numel, name, TOLERANCE);
        }
}

static void check_one_step(const Case *c, const char *dir, const int32_t *tokens,
                           const int32_t *labels) {
    Dsv3Model *m = make_model(c, c->batch, DSV3_AC_NONE, 0);
    load_state(m, dir, "param.", "buffer.");
    int64_t per_micro = c->batch * c->seq_len, V = c->args.vocab_size;
    float *logits = NULL;
    TRY(dsv3_alloc((void **)&logits, (size_t)(per_micro * V) * sizeof(float), "logits"));
    float loss = (float)run_micro_batches(m, tokens, labels, c->micro_batches, per_micro, logits);
    compare_file("step-1 loss", &loss, 1, "loss", TOLERANCE);
    compare_file("logits (micro-batch 0)", logits, per_micro * V, "logits", TOLERANCE);
    dsv3_free(logits);
    compare_params(m, 1, "grad.", "grad ");
    char name[256], what[256];
    for (int64_t l = 0; l < c->args.n_layers; l++) {
        int64_t *counts = dsv3_model_tokens_per_expert(m, l);
        if (!counts) continue;
        float as_float[4096];
        for (int64_t e = 0; e < c->args.num_experts; e++)
            as_float[e] = (float)counts[e];
        snprintf(name, sizeof name, "counts.layers.%lld", (long long)l);
        snprintf(what, sizeof what, "tokens per expert, layer %lld", (long long)l);
        compare_file(what, as_float, c->args.num_experts, name, 0.0);
    }
    dsv3_model_destroy(m);
}

// Trains c->steps steps; fills losses, norms, lrs (steps) and leaves the model for inspection.
static Dsv3Model *train(const Case *c, const char *dir, Dsv3AcMode mode, int64_t every,
                        const int32_t *tokens, const int32_t *labels, double *losses, double *norms,
                        double *lrs) {
    Dsv3Model *m = make_model(c, c->batch, mode, every);
    load_state(m, dir, "param.", "buffer.");
    Dsv3LrSchedule schedule;
    TRY(dsv3_lr_schedule_init(&schedule, &c->schedule));
    int64_t per_micro = c->batch * c->seq_len, per_step = per_micro * c->micro_batches;
    for (int64_t s = 0; s < c->steps; s++) {
        losses[s] = run_micro_batches(m, tokens + s * per_step, labels + s * per_step,
                                      c->micro_batches, per_micro, NULL);
        double sum_squares = 0;
        TRY(dsv3_optimizer_grad_sum_squares(m, &sum_squares));
        norms[s] = sqrt(sum_squares);
        Dsv3OptimizerStep step = c->optim;
        step.lr = c->optim.lr * dsv3_lr_factor(&schedule, s + 1);
        step.step = s + 1;
        lrs[s] = step.lr;
        TRY(dsv3_optimizer_step(m, &step, sum_squares));
    }
    return m;
}

static void check_training(const Case *c, const char *dir) {
    int32_t *tokens = NULL, *labels = NULL;
    TRY(dsv3_case_read_i32(&checks, &tokens, NULL, "train_tokens"));
    TRY(dsv3_case_read_i32(&checks, &labels, NULL, "train_labels"));
    double losses[64], norms[64], lrs[64], ac_losses[64], ac_norms[64], ac_lrs[64];
    if (c->steps > 64) {
        fprintf(stderr, "at most 64 training steps\n");
        exit(1);
    }
    Dsv3Model *m = train(c, dir, DSV3_AC_NONE, 0, tokens, labels, losses, norms, lrs);
    float as_float[64];
    for (int64_t s = 0; s < c->steps; s++)
        as_float[s] = (float)losses[s];
    compare_file("training losses (every step)", as_float, c->steps, "train_losses", TOLERANCE);
    // Per-step loss errors too: the contract is every step, not the norm over steps.
    double *want = NULL;
    TRY(dsv3_case_read_f64(&checks, &want, NULL, "train_losses"));
    double worst = 0;
    for (int64_t s = 0; s < c->steps; s++)
        worst = fmax(worst, fabs(losses[s] - want[s]) / fabs(want[s]));
    dsv3_case_report(&checks, "training loss, worst single step", worst, TOLERANCE);
    for (int64_t s = 0; s < c->steps; s++)
        as_float[s] = (float)norms[s];
    compare_file("gradient norms (every step)", as_float, c->steps, "train_grad_norms", TOLERANCE);
    for (int64_t s = 0; s < c->steps; s++)
        as_float[s] = (float)lrs[s];
    compare_file("learning rates (every step)", as_float, c->steps, "train_lrs", TOLERANCE);
    compare_params(m, 0, "final.param.", "after training: ");
    dsv3_model_destroy(m);

    // Activation checkpointing: the same losses in every mode.
    struct {
        const char *name;
        Dsv3AcMode mode;
        int64_t every;
    } modes[] = {
        {"op", DSV3_AC_OP, 0}, {"full", DSV3_AC_FULL, 0}, {"every 2nd layer", DSV3_AC_NONE, 2}};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        Dsv3Model *ac = train(c, dir, modes[i].mode, modes[i].every, tokens, labels, ac_losses,
                              ac_norms, ac_lrs);
        double err = 0;
        for (int64_t s = 0; s < c->steps; s++)
            err = fmax(err, fabs(ac_losses[s] - losses[s]) / fabs(losses[s]));
        char what[256];
        snprintf(what, sizeof what, "activation checkpointing %s vs none", modes[i].name);
        dsv3_case_report(&checks, what, err, AC_TOLERANCE);
        dsv3_model_destroy(ac);
    }
}

// M micro-batches of B sequences against one batch of M × B sequences.
static void check_accumulation(const Case *c, const char *dir, const int32_t *tokens,
                               const int32_t *labels) {
    Dsv3Model *small = make_model(c, c->batch, DSV3_AC_NONE, 0);
    Dsv3Model *big = make_model(c, c->batch * c->micro_batches, DSV3_AC_NONE, 0);
    load_state(small, dir, "param.", "buffer.");
    load_state(big, dir, "param.", "buffer.");
    int64_t per_micro = c->batch * c->seq_len;
    double a = run_micro_batches(small, tokens, labels, c->micro_batches, per_micro, NULL);
    double b = run_micro_batches(big, tokens, labels, 1, per_micro * c->micro_batches, NULL);
    dsv3_case_report(&checks, "accumulated loss vs one big batch", fabs(a - b) / fabs(b),
                     ACCUMULATION_TOLERANCE);
    const Dsv3ParamStore *ss = dsv3_model_services(small)->params,
                         *sb = dsv3_model_services(big)->params;
    Dsv3ParamGroup *gs = ss->groups, *gb = sb->groups;
    double diff = 0, norm = 0;
    for (int g = 0; g < ss->n_groups; g++)
        for (int64_t i = 0; i < gs[g].numel; i++) {
            double d = (double)gs[g].grad[i] - gb[g].grad[i];
            diff += d * d;
            norm += (double)gb[g].grad[i] * gb[g].grad[i];
        }
    dsv3_case_report(&checks, "accumulated gradients vs one big batch", sqrt(diff / norm),
                     ACCUMULATION_TOLERANCE);
    dsv3_model_destroy(small);
    dsv3_model_destroy(big);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s CASE_DIR\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    dsv3_case_init(&checks, dir, TOLERANCE, DSV3_CASE_LINE_VERDICT, 0, WHAT_WIDTH);
    Case c;
    read_case(&c, dir);
    int32_t *tokens = NULL, *labels = NULL;
    TRY(dsv3_case_read_i32(&checks, &tokens, NULL, "tokens"));
    TRY(dsv3_case_read_i32(&checks, &labels, NULL, "labels"));
    check_one_step(&c, dir, tokens, labels);
    if (c.micro_batches > 1) check_accumulation(&c, dir, tokens, labels);
    if (c.steps > 0) check_training(&c, dir);
    dsv3_case_end(&checks, DSV3_OK);
    printf("%s: %d check(s) failed\n", checks.failures ? "FAIL" : "ok", checks.failures);
    return checks.failures ? 1 : 0;
}
