// metrics: the step line, metrics.jsonl, TensorBoard, expert counts.
#include "metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/core/alloc.h"
#include "common/core/format.h"
#include "common/core/log.h"
#include "common/train/tensorboard.h"

enum {
    PATH_CAPACITY = 2 * DSV3_CONFIG_STRING_CAPACITY + 64, // dump_folder / tb folder / run time
    NAME_CAPACITY = 64,                                   // "expert_load/layer_60/max_over_mean"
    FIXED_SCALARS = 21,                                   // loss … validation_loss
    SCALARS_PER_LAYER = 5,
    RUN_TIME_CAPACITY = 32, // "20250101-120000"
};

// torchtitan's colours (tools/utils.py Color): ANSI escapes, 24-bit for orange and turquoise.
typedef struct {
    const char *red, *green, *yellow, *orange, *turquoise, *blue, *cyan, *magenta, *reset;
} Colors;
static const Colors COLORS = {
    "\033[31m", "\033[32m", "\033[33m", "\033[38;2;180;60;0m", "\033[38;2;54;234;195m", "\033[34m",
    "\033[36m", "\033[35m", "\033[39m"};
static const Colors NO_COLORS = {"", "", "", "", "", "", "", "", ""};

struct Dsv3Metrics {
    FILE *jsonl, *counts;
    Dsv3TbWriter *tb;
    Colors color;
    int64_t capacity, n;
    char (*names)[NAME_CAPACITY];
    const char **tags; // tags[i] = names[i], for the TensorBoard writer
    double *values;
};

Dsv3Err dsv3_metrics_make_dirs(const char *path) {
    char buf[PATH_CAPACITY];
    DSV3_CHECK(strlen(path) < sizeof buf, DSV3_ERR_IO, "path '%s' is too long", path);
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        DSV3_CHECK(mkdir(buf, 0777) == 0 || errno == EEXIST, DSV3_ERR_IO,
                   "cannot create folder '%s': %s", buf, strerror(errno));
        *p = '/';
    }
    DSV3_CHECK(mkdir(buf, 0777) == 0 || errno == EEXIST, DSV3_ERR_IO,
               "cannot create folder '%s': %s", buf, strerror(errno));
    return DSV3_OK;
}

static Dsv3Err open_append(const char *folder, const char *name, FILE **out) {
    char path[PATH_CAPACITY];
    snprintf(path, sizeof path, "%s/%s", folder, name);
    *out = fopen(path, "a");
    DSV3_CHECK(*out, DSV3_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    return DSV3_OK;
}

// <dump_folder>/<save_tb_folder>/<local start time>/, as torchtitan names its runs.
static Dsv3Err open_tensorboard(Dsv3Metrics *m, const Dsv3Config *cfg) {
    char run[RUN_TIME_CAPACITY], folder[PATH_CAPACITY];
    time_t now = time(NULL);
    struct tm local;
    localtime_r(&now, &local);
    strftime(run, sizeof run, "%Y%m%d-%H%M%S", &local);
    snprintf(folder, sizeof folder, "%s/%s/%s", cfg->job.dump_folder, cfg->metrics.save_tb_folder,
             run);
    DSV3_CALL(dsv3_metrics_make_dirs(folder));
    DSV3_CALL(dsv3_tb_open(&m->tb, folder));
    DSV3_LOG_INFO("TensorBoard: writing %s", dsv3_tb_path(m->tb));
    return DSV3_OK;
}

Dsv3Err dsv3_metrics_open(Dsv3Metrics **out, const Dsv3Config *cfg, const Dsv3ModelArgs *args) {
    *out = NULL;
    Dsv3Metrics *m = NULL;
    DSV3_CALL(dsv3_calloc((void **)&m, 1, sizeof *m, "metrics"));
    Dsv3Err err = DSV3_OK;
    // mpiexec hands ranks a pseudo-terminal even when its own output goes to a file, so the
    // launcher says so through NO_COLOR (no-color.org), which run/train.sh sets then.
    const char *no_color = getenv("NO_COLOR");
    int color =
        isatty(STDOUT_FILENO) && !(no_color && *no_color) && !cfg->metrics.disable_color_printing;
    m->color = color ? COLORS : NO_COLORS;
    m->capacity = FIXED_SCALARS + DSV3_PHASE_COUNT + SCALARS_PER_LAYER * args->n_layers;
    DSV3_CALL_GOTO(
        err, fail,
        dsv3_calloc((void **)&m->names, (size_t)m->capacity, sizeof *m->names, "metric names"));
    DSV3_CALL_GOTO(
        err, fail,
        dsv3_calloc((void **)&m->tags, (size_t)m->capacity, sizeof *m->tags, "metric tags"));
    for (int64_t i = 0; i < m->capacity; i++)
        m->tags[i] = m->names[i];
    DSV3_CALL_GOTO(
        err, fail,
        dsv3_calloc((void **)&m->values, (size_t)m->capacity, sizeof *m->values, "metric values"));
    DSV3_CALL_GOTO(err, fail, dsv3_metrics_make_dirs(cfg->job.dump_folder));
    DSV3_CALL_GOTO(err, fail, open_append(cfg->job.dump_folder, "metrics.jsonl", &m->jsonl));
    if (cfg->metrics.dump_expert_counts)
        DSV3_CALL_GOTO(err, fail,
                       open_append(cfg->job.dump_folder, "expert_counts.jsonl", &m->counts));
    if (cfg->metrics.enable_tensorboard) DSV3_CALL_GOTO(err, fail, open_tensorboard(m, cfg));
    *out = m;
    return DSV3_OK;
fail:
    dsv3_metrics_close(m);
    return err;
}

void dsv3_metrics_close(Dsv3Metrics *m) {
    if (!m) return;
    if (m->jsonl) fclose(m->jsonl);
    if (m->counts) fclose(m->counts);
    dsv3_tb_close(m->tb);
    dsv3_free(m->names);
    dsv3_free(m->tags);
    dsv3_free(m->values);
    dsv3_free(m);
}

static void add(Dsv3Metrics *m, double value, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void add(Dsv3Metrics *m, double value, const char *fmt, ...) {
    if (m->n >= m->capacity) return; // sized in open for every name below; never reached
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->names[m->n], NAME_CAPACITY, fmt, ap);
    va_end(ap);
    m->values[m->n++] = value;
}

// The record as named scalars, in the order they are written.
static void collect(Dsv3Metrics *m, const Dsv3StepRecord *r) {
    m->n = 0;
    add(m, r->loss, "loss");
    add(m, r->grad_norm, "grad_norm");
    add(m, r->lr, "lr");
    add(m, r->tps, "tps");
    add(m, r->tflops, "tflops");
    add(m, r->mfu, "mfu");
    add(m, r->memory_gib, "memory_gib");
    add(m, r->memory_pct, "memory_pct");
    add(m, r->seconds_step, "time_step");
    for (int p = 0; p < DSV3_PHASE_COUNT; p++)
        if (p != DSV3_PHASE_VALIDATION || r->seconds[p] > 0)
            add(m, r->seconds[p], "time_%s", dsv3_phase_name(p));
    const Dsv3ExpertServerStats *x = &r->experts;
    if (x->servers > 0) {
        add(m, x->rows, "expert_servers/rows");
        add(m, x->rows_max, "expert_servers/rows_max");
        add(m, x->rows_min, "expert_servers/rows_min");
        add(m, x->compute_max_s, "expert_servers/compute_max");
        add(m, x->idle_min_s, "expert_servers/idle_min");
    }
    const Dsv3ExpertLoad *load = r->expert_load;
    if (load) {
        double worst = 0;
        for (int64_t l = 0; l < load->n_layers; l++) {
            if (!dsv3_expert_load_is_moe(load, l)) continue;
            Dsv3ExpertLayerLoad s;
            dsv3_expert_load_layer(load, l, &s);
            worst = fmax(worst, s.max_over_mean);
        }
        add(m, worst, "expert_imbalance");
        for (int64_t l = 0; l < load->n_layers; l++) {
            if (!dsv3_expert_load_is_moe(load, l)) continue;
            Dsv3ExpertLayerLoad s;
            dsv3_expert_load_layer(load, l, &s);
            add(m, s.max_over_mean, "expert_load/layer_%" PRId64 "/max_over_mean", l);
            add(m, s.min_over_mean, "expert_load/layer_%" PRId64 "/min_over_mean", l);
            add(m, (double)s.max, "expert_load/layer_%" PRId64 "/max_tokens", l);
            add(m, (double)s.min, "expert_load/layer_%" PRId64 "/min_tokens", l);
            add(m, s.bias_norm, "expert_load/layer_%" PRId64 "/bias_norm", l);
        }
    }
    if (!isnan(r->validation_loss)) add(m, r->validation_loss, "validation_loss");
}

static Dsv3Err write_jsonl(Dsv3Metrics *m, int64_t step) {
    fprintf(m->jsonl, "{\"step\": %" PRId64, step);
    for (int64_t i = 0; i < m->n; i++) {
        if (isfinite(m->values[i]))
            fprintf(m->jsonl, ", \"%s\": %.9g", m->names[i], m->values[i]);
        else
            fprintf(m->jsonl, ", \"%s\": null", m->names[i]);
    }
    fputs("}\n", m->jsonl);
    DSV3_CHECK(fflush(m->jsonl) == 0 && !ferror(m->jsonl), DSV3_ERR_IO,
               "writing metrics.jsonl failed: %s", strerror(errno));
    return DSV3_OK;
}

static Dsv3Err write_counts(Dsv3Metrics *m, int64_t step, const Dsv3ExpertLoad *load) {
    fprintf(m->counts, "{\"step\": %" PRId64, step);
    for (int64_t l = 0; l < load->n_layers; l++) {
        if (!dsv3_expert_load_is_moe(load, l)) continue;
        fprintf(m->counts, ", \"layer_%" PRId64 "\": [", l);
        for (int64_t e = 0; e < load->n_experts; e++)
            fprintf(m->counts, "%s%" PRId64, e ? ", " : "", load->counts[l * load->n_experts + e]);
        fputc(']', m->counts);
    }
    fputs("}\n", m->counts);
    DSV3_CHECK(fflush(m->counts) == 0 && !ferror(m->counts), DSV3_ERR_IO,
               "writing expert_counts.jsonl failed: %s", strerror(errno));
    return DSV3_OK;
}

static void print_step(const Dsv3Metrics *m, const Dsv3StepRecord *r) {
    const Colors *c = &m->color;
    char tps[DSV3_FORMAT_CAPACITY];
    dsv3_format_count((int64_t)llround(r->tps), tps);
    DSV3_LOG_INFO("%sstep %5" PRId64
                  "  %sloss %8.5f  %sgrad_norm %7.4f  %slr %.4e  %smemory %5.2f GiB (%.2f%%)  "
                  "%stps %s  %stflops %.3f  %smfu %.2f%%%s",
                  c->red, r->step, c->green, r->loss, c->orange, r->grad_norm, c->yellow, r->lr,
                  c->turquoise, r->memory_gib, r->memory_pct, c->blue, tps, c->cyan, r->tflops,
                  c->magenta, r->mfu, c->reset);
    const double *s = r->seconds;
    double comm = s[DSV3_PHASE_COMM_BATCH] + s[DSV3_PHASE_COMM_GRAD] +
                  s[DSV3_PHASE_COMM_EXPERT_COUNTS] + s[DSV3_PHASE_COMM_PLAN];
    DSV3_LOG_INFO(
        "      time %.3f s: forward %.3f  backward %.3f  optimizer %.3f  comm %.3f (batch %.3f, "
        "grad_allreduce %.3f, expert_counts %.3f, plan %.3f)  data %.3f (coordinator)",
        r->seconds_step, s[DSV3_PHASE_FORWARD],
        s[DSV3_PHASE_BACKWARD] + s[DSV3_PHASE_BACKWARD_WEIGHT], s[DSV3_PHASE_OPTIMIZER], comm,
        s[DSV3_PHASE_COMM_BATCH], s[DSV3_PHASE_COMM_GRAD], s[DSV3_PHASE_COMM_EXPERT_COUNTS],
        s[DSV3_PHASE_COMM_PLAN], s[DSV3_PHASE_DATA]);
    if (s[DSV3_PHASE_COMM_TP] > 0)
        DSV3_LOG_INFO("      tensor parallel: %.3f s in tp collectives (inside forward, backward "
                      "and the grad norm)",
                      s[DSV3_PHASE_COMM_TP]);
    if (s[DSV3_PHASE_COMM_CP] > 0)
        DSV3_LOG_INFO("      context parallel: %.3f s in cp collectives (inside forward and "
                      "backward)",
                      s[DSV3_PHASE_COMM_CP]);
    const Dsv3ExpertServerStats *servers = &r->experts;
    if (servers->servers > 0)
        DSV3_LOG_INFO("      expert servers: %" PRId64 " received %.0f rows (%.0f to %.0f per "
                      "server), computed up to %.3f s, idled at least %.3f s; rows away %.3f s, "
                      "%.3f of it hidden behind other compute",
                      servers->servers, servers->rows, servers->rows_min, servers->rows_max,
                      servers->compute_max_s, servers->idle_min_s, s[DSV3_PHASE_COMM_EXPERTS],
                      s[DSV3_PHASE_EXPERTS_HIDDEN]);
    const Dsv3ExpertLoad *load = r->expert_load;
    if (!load) return;
    double worst = 0, sum = 0, bias = 0;
    int64_t worst_layer = -1, n = 0;
    for (int64_t l = 0; l < load->n_layers; l++) {
        if (!dsv3_expert_load_is_moe(load, l)) continue;
        Dsv3ExpertLayerLoad x;
        dsv3_expert_load_layer(load, l, &x);
        if (worst_layer < 0 || x.max_over_mean > worst) {
            worst = x.max_over_mean;
            worst_layer = l;
        }
        sum += x.max_over_mean;
        bias = fmax(bias, x.bias_norm);
        n++;
    }
    if (n == 0) return;
    DSV3_LOG_INFO("      experts: max/mean tokens per expert %.3f in layer %" PRId64
                  " (worst), %.3f "
                  "(mean of %" PRId64 " MoE layers); expert-bias norm up to %.4g",
                  worst, worst_layer, sum / (double)n, n, bias);
}

Dsv3Err dsv3_metrics_log_step(Dsv3Metrics *m, const Dsv3StepRecord *r) {
    collect(m, r);
    print_step(m, r);
    DSV3_CALL(write_jsonl(m, r->step));
    if (m->counts && r->expert_load) DSV3_CALL(write_counts(m, r->step, r->expert_load));
    if (m->tb) DSV3_CALL(dsv3_tb_scalars(m->tb, r->step, m->tags, m->values, (int)m->n));
    return DSV3_OK;
}

void dsv3_metrics_log_validation(const Dsv3Metrics *m, int64_t step, double loss, double tps,
                                 double seconds, int64_t tokens) {
    const Colors *c = &m->color;
    char t[DSV3_FORMAT_CAPACITY], n[DSV3_FORMAT_CAPACITY];
    dsv3_format_count((int64_t)llround(tps), t);
    dsv3_format_count(tokens, n);
    DSV3_LOG_INFO("%svalidate step %5" PRId64
                  "  %sloss %8.5f  %stps %s%s  (%s held-out tokens in %.2f s)",
                  c->yellow, step, c->green, loss, c->blue, t, c->reset, n, seconds);
}
