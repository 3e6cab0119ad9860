// checkpoint: the save and load protocols between the coordinator, the stage ranks and the
// expert servers.
#include "checkpoint.h"

#include <errno.h>
#include <pthread.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common/ckpt/dtype.h"
#include "common/ckpt/hf.h"
#include "common/ckpt/store.h"
#include "common/ckpt/tensors.h"
#include "common/ckpt/train_state.h"
#include "common/core/alloc.h"
#include "common/core/format.h"
#include "common/core/log.h"
#include "common/comm/protocol.h"

_Static_assert((int)DSV3_PROTOCOL_PATH_CAPACITY == (int)DSV3_CKPT_PATH_CAPACITY,
               "the load command carries a checkpoint path");

static const char KILL_ENV[] = "DSV3_CKPT_TEST_KILL";

// The fault-injection hook: SIGKILL this process at `point` of the save of `step`.
static void maybe_kill(const char *point, int64_t step) {
    const char *spec = getenv(KILL_ENV);
    if (!spec) return;
    size_t n = strlen(point);
    if (strncmp(spec, point, n) != 0 || spec[n] != ':' || strtoll(spec + n + 1, NULL, 10) != step)
        return;
    DSV3_LOG_WARN("%s=%s: killing this process during the save of step %" PRId64, KILL_ENV, spec,
                  step);
    raise(SIGKILL);
}

static void root_of(const Dsv3Config *cfg, char out[DSV3_CKPT_PATH_CAPACITY]) {
    if (snprintf(out, DSV3_CKPT_PATH_CAPACITY, "%s/%s", cfg->job.dump_folder,
                 cfg->checkpoint.folder) >= DSV3_CKPT_PATH_CAPACITY)
        out[0] = '\0';
}

// ---- save ----

// Which of its boxes a stage rank writes (tensors.h): data-parallel replicas hold the same
// shards, and so do the dp_shard × cp ranks of a store that does not shard over them. An
// expert server is the only holder of its experts' boxes.
static Dsv3CkptWriters writers_of(const Dsv3Launch *launch, const Dsv3CkptRank *rank) {
    if (!rank->n_models) return (Dsv3CkptWriters){.shard_writer = 1};
    const Dsv3StageCoord *c = &launch->topology.coord;
    const Dsv3ParamStore *st = dsv3_model_services(rank->models[0])->params;
    int fsdp_sharded = st->n_groups > 0 && st->groups[0].spec.fsdp > 1;
    int first_of_fsdp = c->dp_shard == 0 && c->cp == 0;
    return (Dsv3CkptWriters){.shard_writer =
                                 c->dp_replicate == 0 && (fsdp_sharded || first_of_fsdp),
                             .stage_lead = c->dp_replicate == 0 && first_of_fsdp && c->tp == 0,
                             .tp_rank = c->tp};
}

// The tensors of a rank's stores: the boxes of their groups (values, moments) and, on a stage
// rank (models, one per store; NULL on an expert server), the expert biases of its stages, with
// `writers` deciding the writes flags.
static Dsv3Err tensors_of_stores(Dsv3CkptTensors *out, const Dsv3ModelArgs *args,
                                 Dsv3ParamStore *const *stores, Dsv3Model *const *models, int64_t n,
                                 const Dsv3CkptWriters *writers) {
    int n_groups = 0;
    for (int64_t k = 0; k < n; k++)
        n_groups += stores[k]->n_groups;
    float **bias = NULL;
    Dsv3ParamGroup *groups = NULL; // every store's, one after the other (copies of the tables)
    Dsv3ParamShard *shards = NULL;
    Dsv3Err err = dsv3_calloc((void **)&bias, (size_t)args->n_layers, sizeof *bias, "bias table");
    if (err == DSV3_OK)
        err = dsv3_calloc((void **)&groups, (size_t)(n_groups ? n_groups : 1), sizeof *groups,
                          "checkpoint groups");
    if (err == DSV3_OK)
        err = dsv3_calloc((void **)&shards, (size_t)(n_groups ? n_groups : 1), sizeof *shards,
                          "checkpoint shards");
    for (int64_t k = 0, at = 0; err == DSV3_OK && k < n; k++) {
        const Dsv3ParamStore *st = stores[k];
        memcpy(groups + at, st->groups, (size_t)st->n_groups * sizeof *groups);
        memcpy(shards + at, st->shards, (size_t)st->n_groups * sizeof *shards);
        at += st->n_groups;
        for (int64_t l = 0; models && l < args->n_layers; l++)
            if (!bias[l]) bias[l] = dsv3_model_expert_bias(models[k], l);
    }
    if (err == DSV3_OK)
        err = dsv3_ckpt_tensors_of_groups(out, args, groups, shards, n_groups, bias, writers);
    dsv3_free(shards);
    dsv3_free(groups);
    dsv3_free(bias);
    return err;
}

// The tensors a rank saves and loads: a stage rank's models (their stores' groups and their
// stages' expert biases), or an expert server's stores (routed experts only, no biases).
static Dsv3Err rank_tensors(const Dsv3Launch *launch, const Dsv3CkptRank *rank,
                            Dsv3CkptTensors *t) {
    Dsv3CkptWriters writers = writers_of(launch, rank);
    if (!rank->n_models)
        return tensors_of_stores(t, &launch->model, rank->stores, NULL, rank->n_stores, &writers);
    Dsv3ParamStore **stores = NULL;
    DSV3_CALL(dsv3_calloc((void **)&stores, (size_t)rank->n_models, sizeof *stores, "stores"));
    for (int64_t k = 0; k < rank->n_models; k++)
        stores[k] = dsv3_model_services(rank->models[k])->params;
    Dsv3Err err =
        tensors_of_stores(t, &launch->model, stores, rank->models, rank->n_models, &writers);
    dsv3_free(stores);
    return err;
}

// The number of a rank's shard files: stage ranks by stage index, then the expert servers.
static int64_t shard_of(const Dsv3Launch *launch, const Dsv3CkptRank *rank) {
    const Dsv3Topology *t = &launch->topology;
    return rank->n_models ? t->stage_index : t->n_stage + t->expert_index;
}

// A state with NaN or infinite values is never saved (it would displace good checkpoints).
static Dsv3Err refuse_nonfinite(const Dsv3CkptTensors *t, int64_t step) {
    for (int64_t i = 0; i < t->count; i++) {
        const Dsv3CkptTensor *x = &t->items[i];
        int64_t n = dsv3_box_numel(&x->box, x->ndim);
        const float *arrays[] = {x->data, x->exp_avg, x->exp_avg_sq};
        const char *what[] = {"", "AdamW's exp_avg of ", "AdamW's exp_avg_sq of "};
        for (int a = 0; a < 3; a++)
            DSV3_CHECK(!arrays[a] || dsv3_count_nonfinite(arrays[a], n) == 0, DSV3_ERR_NUMERIC,
                       "the state after step %" PRId64 " is not saved: %s%s holds NaN or "
                       "infinite values",
                       step, what[a], x->fqn);
    }
    return DSV3_OK;
}

// Stage rank or expert server: writes its shards; returns its description (counted; "" when it
// owns nothing).
static Dsv3Err stage_write(const Dsv3Launch *launch, const Dsv3CkptRank *rank,
                           const Dsv3CkptSaveCommand *cmd, const char *dir, char **description) {
    const Dsv3Config *cfg = &launch->config;
    Dsv3Dtype dtype = DSV3_DTYPE_F32;
    if (cmd->model_only) DSV3_CALL(dsv3_dtype_from_export(cfg->checkpoint.export_dtype, &dtype));
    Dsv3CkptTensors t;
    DSV3_CALL(rank_tensors(launch, rank, &t));
    Dsv3Err err = refuse_nonfinite(&t, cmd->step);
    if (err == DSV3_OK)
        err = dsv3_ckpt_store_write_shards(dir, shard_of(launch, rank), &t, !cmd->model_only, dtype,
                                           cmd->step, description);
    dsv3_ckpt_tensors_free(&t);
    if (err == DSV3_OK && rank->n_models && launch->topology.stage_index == 0)
        maybe_kill("shards", cmd->step);
    return err;
}

// A stage rank's save written in the background (checkpoint.async_mode): a copy of the boxes it
// writes and the thread writing them. A stage process has at most one in flight.
typedef struct {
    int64_t step; // 0: none
    pthread_t thread;
    Dsv3CkptTensors t; // the rank's tensors, pointing into `copy`
    float *copy;
    char dir[DSV3_CKPT_PATH_CAPACITY];
    int64_t shard;
    int with_optimizer;
    Dsv3Dtype dtype;
    Dsv3Err err;
    char failure[1024]; // the thread's error message
    char *description;
} StagePending;

static StagePending stage_pending;

static void *stage_pending_main(void *arg) {
    StagePending *s = arg;
    s->err = refuse_nonfinite(&s->t, s->step);
    if (s->err == DSV3_OK)
        s->err = dsv3_ckpt_store_write_shards(s->dir, s->shard, &s->t, s->with_optimizer, s->dtype,
                                              s->step, &s->description);
    if (s->err != DSV3_OK) snprintf(s->failure, sizeof s->failure, "%s", dsv3_error_message());
    return NULL;
}

// Stage rank: copies the boxes it writes (values, and moments unless model-only) into host
// memory and starts writing them in the background.
static Dsv3Err stage_write_async(const Dsv3Launch *launch, const Dsv3CkptRank *rank,
                                 const Dsv3CkptSaveCommand *cmd, const char *dir) {
    StagePending *s = &stage_pending;
    memset(s, 0, sizeof *s);
    DSV3_CALL(rank_tensors(launch, rank, &s->t));
    int64_t total = 0;
    for (int64_t i = 0; i < s->t.count; i++)
        if (s->t.items[i].writes)
            total += 3 * dsv3_box_numel(&s->t.items[i].box, s->t.items[i].ndim);
    Dsv3Err err = dsv3_alloc((void **)&s->copy, (size_t)(total ? total : 1) * sizeof(float),
                             "background checkpoint copy");
    float *at = s->copy;
    for (int64_t i = 0; i < s->t.count && err == DSV3_OK; i++) {
        Dsv3CkptTensor *x = &s->t.items[i];
        int64_t n = dsv3_box_numel(&x->box, x->ndim);
        float **arrays[] = {&x->data, &x->exp_avg, &x->exp_avg_sq};
        for (int a = 0; a < 3; a++) {
            if (!x->writes || !*arrays[a]) {
                if (!x->writes) *arrays[a] = NULL;
                continue;
            }
            memcpy(at, *arrays[a], (size_t)n * sizeof(float));
            *arrays[a] = at;
            at += n;
        }
    }
    s->dtype = DSV3_DTYPE_F32;
    if (err == DSV3_OK && cmd->model_only)
        err = dsv3_dtype_from_export(launch->config.checkpoint.export_dtype, &s->dtype);
    if (err == DSV3_OK) {
        snprintf(s->dir, sizeof s->dir, "%s", dir);
        s->shard = shard_of(launch, rank);
        s->with_optimizer = !cmd->model_only;
        s->step = cmd->step;
        int rc = pthread_create(&s->thread, NULL, stage_pending_main, s);
        if (rc != 0) {
            s->step = 0;
            err = dsv3_error_raise(DSV3_ERR_INTERNAL, __FILE__, __LINE__, __func__,
                                   "could not start the background checkpoint writer: %s",
                                   strerror(rc));
        }
    }
    if (err != DSV3_OK) {
        dsv3_ckpt_tensors_free(&s->t);
        dsv3_free(s->copy);
        s->copy = NULL;
    }
    return err;
}

// Stage rank: waits for the background save; returns its result as stage_write does.
static Dsv3Err stage_wait_async(char **description, char *failure, size_t capacity) {
    StagePending *s = &stage_pending;
    pthread_join(s->thread, NULL);
    Dsv3Err err = s->err;
    snprintf(failure, capacity, "%.*s", (int)capacity - 1, s->failure);
    *description = s->description;
    dsv3_ckpt_tensors_free(&s->t);
    dsv3_free(s->copy);
    memset(s, 0, sizeof *s);
    return err;
}

// Coordinator: index files, manifest, commit, retention.
static Dsv3Err commit(Dsv3CkptCoordinator *c, const Dsv3Launch *launch,
                      const Dsv3CkptSaveCommand *cmd, const char *dir, char **descriptions) {
    Dsv3Manifest m = {.step = cmd->step};
    snprintf(m.kind, sizeof m.kind, "%s", cmd->model_only ? "model" : "full");
    Dsv3Err err = DSV3_OK;
    int size = launch->topology.job_size;
    // descriptions[0] is the coordinator's own (empty); the rest are stage ranks'.
    DSV3_CALL_GOTO(err, done,
                   dsv3_ckpt_store_index(dir, descriptions + 1, size - 1, cmd->step, &m));
    const char *own[] = {DSV3_TRAIN_STATE_FILE, DSV3_CONFIG_FILE};
    for (size_t i = 0; i < sizeof own / sizeof *own; i++) {
        Dsv3ManifestFile f;
        DSV3_CALL_GOTO(err, done, dsv3_manifest_describe(dir, own[i], &f));
        DSV3_CALL_GOTO(err, done, dsv3_manifest_add(&m, &f));
    }
    DSV3_CALL_GOTO(err, done, dsv3_manifest_write(dir, &m));
    maybe_kill("manifest", cmd->step);
    DSV3_CALL_GOTO(err, done, dsv3_ckpt_dir_commit(c->root, cmd->step));
    DSV3_CALL_GOTO(
        err, done,
        dsv3_ckpt_retain(c->root, launch->config.checkpoint.keep_latest_k, c->resumed_step));
done:
    dsv3_manifest_free(&m);
    return err;
}

// Coordinator, when a save failed: one message with the failing ranks' own errors (`own`, the
// coordinator's, or NULL; `theirs`, by job rank, "" for a rank that did not fail, or NULL), the
// bytes the checkpoint needs and those free where it goes. The unfinished folder is removed;
// the checkpoints saved before stay as they are. The message is the error (ends the job), or
// with checkpoint.fail_on_error = false a warning (training goes on).
static Dsv3Err save_failed(const Dsv3CkptCoordinator *c, const Dsv3Launch *launch,
                           const Dsv3CkptSaveCommand *cmd, const char *dir, const char *own,
                           char *const *theirs) {
    char text[4096];
    size_t n = (size_t)snprintf(text, sizeof text,
                                "checkpoint step %" PRId64 " could not be saved in %s:", cmd->step,
                                c->root);
    if (own && n < sizeof text)
        n += (size_t)snprintf(text + n, sizeof text - n, " the coordinator: %s;", own);
    for (int r = 1; theirs && r < launch->topology.job_size && n < sizeof text; r++)
        if (theirs[r][0])
            n += (size_t)snprintf(text + n, sizeof text - n, " stage rank %d: %s;", r - 1,
                                  theirs[r]);
    Dsv3ParamCounts counts;
    dsv3_model_param_counts(&launch->model, &counts);
    Dsv3Dtype dtype = DSV3_DTYPE_F32;
    if (cmd->model_only &&
        dsv3_dtype_from_export(launch->config.checkpoint.export_dtype, &dtype) != DSV3_OK)
        dsv3_error_clear();
    double need = (double)counts.total * (double)dsv3_dtype_size(dtype) * (cmd->model_only ? 1 : 3);
    char need_text[DSV3_FORMAT_CAPACITY], free_text[DSV3_FORMAT_CAPACITY];
    struct statvfs fs;
    int known = statvfs(c->root, &fs) == 0;
    if (n < sizeof text)
        n += (size_t)snprintf(text + n, sizeof text - n, " it needs about %s (%s)",
                              dsv3_format_bytes(need, need_text),
                              cmd->model_only ? "the model"
                                              : "the model and both AdamW moments in float32");
    if (known && n < sizeof text)
        snprintf(text + n, sizeof text - n, ", and the file system there has %s free",
                 dsv3_format_bytes((double)fs.f_bavail * (double)fs.f_frsize, free_text));
    if (dsv3_ckpt_remove_tree(dir) != DSV3_OK) {
        DSV3_LOG_WARN("%s", dsv3_error_message());
        dsv3_error_clear();
    }
    if (launch->config.checkpoint.fail_on_error)
        DSV3_RAISE(DSV3_ERR_IO,
                   "%s. The checkpoints saved before are untouched; set "
                   "checkpoint.fail_on_error = false to train on when a save fails",
                   text);
    DSV3_LOG_WARN("%s. The checkpoints saved before are untouched; training goes on "
                  "(checkpoint.fail_on_error = false)",
                  text);
    dsv3_protocol_set_patience(launch->protocol, DSV3_PATIENCE_TRAIN);
    return DSV3_OK;
}

static int save_due(const Dsv3Config *cfg, int64_t step) {
    return step % cfg->checkpoint.interval == 0 || step == cfg->training.steps;
}

// Coordinator: completes a save whose shards are written (collective with stage_complete):
// every rank agrees it worked, the coordinator gathers the shard descriptions and commits the
// folder, or reports the failure. `own` is the coordinator's own failure ("" if none).
static Dsv3Err complete_save(Dsv3CkptCoordinator *c, const Dsv3Launch *launch,
                             const Dsv3CkptSaveCommand *cmd, const char *own_failure,
                             double start) {
    char dir[DSV3_CKPT_PATH_CAPACITY], own[1024];
    dsv3_ckpt_step_dir(dir, c->root, cmd->step, 1);
    snprintf(own, sizeof own, "%s", own_failure);
    int all_ok = 0;
    DSV3_CALL(dsv3_protocol_agree(launch->protocol, own[0] == '\0', &all_ok));
    // Every rank's shard description, or, when a rank failed, its error message.
    char **texts = NULL;
    DSV3_CALL(dsv3_protocol_gather_descriptions(launch->protocol, "", &texts));
    Dsv3Err err = DSV3_OK;
    if (all_ok) {
        err = commit(c, launch, cmd, dir, texts);
        if (err != DSV3_OK) snprintf(own, sizeof own, "%s", dsv3_error_message());
    }
    if (!all_ok || err != DSV3_OK)
        err = save_failed(c, launch, cmd, dir, own[0] ? own : NULL, all_ok ? NULL : texts);
    dsv3_free(texts[0]);
    dsv3_free(texts);
    if (err != DSV3_OK) return dsv3_error_trace(err, __FILE__, __LINE__, __func__);
    if (!all_ok || own[0]) return DSV3_OK; // reported; training goes on
    char final[DSV3_CKPT_PATH_CAPACITY];
    dsv3_ckpt_step_dir(final, c->root, cmd->step, 0);
    DSV3_LOG_INFO("checkpoint: saved %s (%s) in %.2f s%s", final,
                  cmd->model_only ? "model only" : "full state", dsv3_log_seconds() - start,
                  cmd->async ? ", written in the background" : "");
    dsv3_protocol_set_patience(launch->protocol, DSV3_PATIENCE_TRAIN);
    return DSV3_OK;
}

Dsv3Err dsv3_ckpt_coordinator_step(Dsv3CkptCoordinator *c, const Dsv3Launch *launch, int64_t step,
                                   double lr, int stop) {
    const Dsv3Config *cfg = &launch->config;
    Dsv3CkptSaveCommand cmd = {0};
    int due = cfg->checkpoint.enable && save_due(cfg, step);
    int last = stop || step == cfg->training.steps;
    if (due || stop) {
        cmd.step = step;
        cmd.model_only = due && step == cfg->training.steps && cfg->checkpoint.last_save_model_only;
        cmd.async = strcmp(cfg->checkpoint.async_mode, "disabled") != 0 && !last;
        DSV3_CALL(dsv3_ckpt_dir_begin(c->root, step));
    }
    cmd.finish = c->pending.step > 0 && (cmd.step || last);
    // A save command switches the waits to comm.init_timeout_seconds until the save is over.
    DSV3_CALL(dsv3_protocol_send_save(launch->protocol, &cmd));
    if (cmd.finish) {
        Dsv3CkptSaveCommand pending = c->pending;
        c->pending.step = 0;
        DSV3_CALL(complete_save(c, launch, &pending, c->pending_error, c->pending_start));
    }
    if (!cmd.step) return DSV3_OK;
    double t0 = dsv3_log_seconds();
    char dir[DSV3_CKPT_PATH_CAPACITY], own[1024] = "";
    dsv3_ckpt_step_dir(dir, c->root, step, 1);
    if (dsv3_train_state_write(dir, cfg, step, c->global_batch, lr) != DSV3_OK) {
        snprintf(own, sizeof own, "%s", dsv3_error_message());
        dsv3_error_clear();
    }
    if (!cmd.async) return complete_save(c, launch, &cmd, own, t0);
    c->pending = cmd;
    c->pending_start = t0;
    snprintf(c->pending_error, sizeof c->pending_error, "%s", own);
    DSV3_LOG_INFO("checkpoint: step-%" PRId64 " is being written in the background", step);
    dsv3_protocol_set_patience(launch->protocol, DSV3_PATIENCE_TRAIN);
    return DSV3_OK;
}

// Stage rank: the other side of complete_save, for a save written with `err` (its message in
// `failure`) and `description` (counted, freed here).
static Dsv3Err stage_complete(const Dsv3Launch *launch, int64_t step, Dsv3Err err,
                              char *description, const char *failure) {
    int all_ok = 0;
    Dsv3Err agreed = dsv3_protocol_agree(launch->protocol, err == DSV3_OK, &all_ok);
    if (agreed != DSV3_OK) {
        dsv3_free(description);
        return dsv3_error_trace(agreed, __FILE__, __LINE__, __func__);
    }
    // The coordinator reports a failure with every failing rank's own message.
    err = dsv3_protocol_gather_descriptions(launch->protocol, all_ok ? description : failure, NULL);
    dsv3_free(description);
    if (err != DSV3_OK) return dsv3_error_trace(err, __FILE__, __LINE__, __func__);
    if (all_ok || !launch->config.checkpoint.fail_on_error) return DSV3_OK;
    // The coordinator now removes the folder and ends the job with every rank's reason; a stage
    // rank that stopped first would take it down before it speaks. No next plan comes: the wait
    // ends with the job, or, if the coordinator went silent instead, with the watch's deadline.
    Dsv3StepPlan never;
    DSV3_CALL(dsv3_protocol_recv_plan(launch->protocol, &never));
    DSV3_RAISE(DSV3_ERR_IO,
               "checkpoint step %" PRId64 " was not saved%s%s, and the coordinator went on", step,
               failure[0] ? ": " : "", failure);
}

Dsv3Err dsv3_ckpt_rank_step(const Dsv3Launch *launch, const Dsv3CkptRank *rank) {
    // A save command switches the waits to comm.init_timeout_seconds; the stage loop switches
    // back once the next plan has arrived (the coordinator commits the folder meanwhile).
    Dsv3CkptSaveCommand cmd;
    DSV3_CALL(dsv3_protocol_recv_save(launch->protocol, &cmd));
    char failure[1024] = "";
    char *description = NULL;
    if (cmd.finish) {
        int64_t step = stage_pending.step;
        Dsv3Err err = stage_wait_async(&description, failure, sizeof failure);
        DSV3_CALL(stage_complete(launch, step, err, description, failure));
    }
    if (!cmd.step) return DSV3_OK;
    char root[DSV3_CKPT_PATH_CAPACITY], dir[DSV3_CKPT_PATH_CAPACITY];
    root_of(&launch->config, root);
    dsv3_ckpt_step_dir(dir, root, cmd.step, 1);
    if (cmd.async) return stage_write_async(launch, rank, &cmd, dir);
    Dsv3Err err = stage_write(launch, rank, &cmd, dir, &description);
    if (err != DSV3_OK) {
        snprintf(failure, sizeof failure, "%s", dsv3_error_message());
        dsv3_error_clear();
    }
    return stage_complete(launch, cmd.step, err, description, failure);
}

// ---- load ----

// Coordinator: what to load at start, from the config and the checkpoint folder.
static Dsv3Err choose_load(Dsv3CkptCoordinator *c, const Dsv3Config *cfg,
                           Dsv3CkptLoadCommand *cmd) {
    memset(cmd, 0, sizeof *cmd);
    if (!cfg->checkpoint.enable) { // checkpoints left by an earlier run are not used: say so
        int64_t *steps = NULL, count = 0;
        int *kinds = NULL;
        DSV3_CALL(dsv3_ckpt_list(c->root, &steps, &kinds, &count));
        if (count > 0)
            DSV3_LOG_WARN("checkpoint.enable is false: %s holds %" PRId64
                          " checkpoint folder(s) (the latest step-%" PRId64
                          "), which this run neither resumes from nor replaces; it starts from "
                          "step 1 (set checkpoint.enable = true to resume)",
                          c->root, count, steps[count - 1]);
        dsv3_free(steps);
        dsv3_free(kinds);
    } else {
        int64_t *steps = NULL, count = 0;
        int *kinds = NULL;
        DSV3_CALL(dsv3_ckpt_list(c->root, &steps, &kinds, &count));
        Dsv3Err err = DSV3_OK;
        int64_t chosen = -1;
        if (cfg->checkpoint.load_step >= 0) {
            for (int64_t i = 0; i < count; i++)
                if (steps[i] == cfg->checkpoint.load_step) chosen = i;
            if (chosen < 0)
                err = dsv3_error_raise(
                    DSV3_ERR_CONFIG, __FILE__, __LINE__, __func__,
                    "checkpoint.load_step %" PRId64 ": %s has no step-%" PRId64 " (%" PRId64
                    " checkpoint folder(s)%s%" PRId64 ")",
                    cfg->checkpoint.load_step, c->root, cfg->checkpoint.load_step, count,
                    count ? ", the latest step-" : "", count ? steps[count - 1] : 0);
        } else {
            for (int64_t i = count - 1; i >= 0 && chosen < 0; i--) {
                if (kinds[i] == DSV3_CKPT_FULL)
                    chosen = i;
                else if (kinds[i] == DSV3_CKPT_MODEL)
                    DSV3_LOG_INFO("checkpoint: step-%" PRId64
                                  " holds the model only (last_save_model_only); "
                                  "resuming needs a full checkpoint",
                                  steps[i]);
                else
                    break; // a damaged newest checkpoint: load it below, which names the problem
            }
            if (chosen < 0 && count > 0 && kinds[count - 1] == DSV3_CKPT_INVALID)
                chosen = count - 1;
        }
        if (err == DSV3_OK && chosen >= 0) {
            cmd->source = DSV3_CKPT_LOAD_DSV3;
            cmd->step = steps[chosen];
            cmd->model_only = kinds[chosen] == DSV3_CKPT_MODEL;
            dsv3_ckpt_step_dir(cmd->path, c->root, steps[chosen], 0);
            c->resumed_step = steps[chosen];
        }
        dsv3_free(steps);
        dsv3_free(kinds);
        if (err != DSV3_OK || cmd->source != DSV3_CKPT_LOAD_NONE) return err;
    }
    if (!cfg->checkpoint.initial_load_path[0]) return DSV3_OK;
    snprintf(cmd->path, sizeof cmd->path, "%s", cfg->checkpoint.initial_load_path);
    cmd->source = cfg->checkpoint.initial_load_in_hf ? DSV3_CKPT_LOAD_HF : DSV3_CKPT_LOAD_DSV3;
    cmd->model_only = cfg->checkpoint.initial_load_model_only || cfg->checkpoint.initial_load_in_hf;
    return DSV3_OK;
}

Dsv3Err dsv3_ckpt_coordinator_start(Dsv3CkptCoordinator *c, const Dsv3Launch *launch,
                                    int64_t global_batch, int64_t *first_step) {
    const Dsv3Config *cfg = &launch->config;
    memset(c, 0, sizeof *c);
    c->resumed_step = -1;
    c->global_batch = global_batch;
    root_of(cfg, c->root);
    *first_step = 1;
    Dsv3CkptLoadCommand cmd;
    DSV3_CALL(choose_load(c, cfg, &cmd));
    if (cmd.source == DSV3_CKPT_LOAD_DSV3) {
        Dsv3Manifest m;
        DSV3_CALL(dsv3_manifest_read(cmd.path, &m));
        int full = strcmp(m.kind, "full") == 0;
        dsv3_manifest_free(&m);
        DSV3_CHECK(
            full || cmd.model_only, DSV3_ERR_CONFIG,
            "%s holds the model only; load it with checkpoint.initial_load_model_only = true",
            cmd.path);
        cmd.model_only |= !full;
        if (!cmd.model_only) {
            DSV3_CALL(dsv3_train_state_read(cmd.path, cfg, global_batch, &cmd.step));
            *first_step = cmd.step + 1;
        }
    } else if (cmd.source == DSV3_CKPT_LOAD_HF) {
        struct stat st;
        DSV3_CHECK(stat(cmd.path, &st) == 0 && S_ISDIR(st.st_mode), DSV3_ERR_CONFIG,
                   "checkpoint.initial_load_path '%s' is not a folder of HF safetensors", cmd.path);
    }
    double t0 = dsv3_log_seconds();
    // Start-up: the waits have comm.init_timeout_seconds, loads may take long.
    DSV3_CALL(dsv3_protocol_send_load(launch->protocol, &cmd));
    if (cmd.source == DSV3_CKPT_LOAD_NONE) return DSV3_OK;
    int all_ok = 0;
    if (cmd.source ==
        DSV3_CKPT_LOAD_DSV3) // the stage ranks checked every file (dsv3_ckpt_rank_start)
        DSV3_CALL(dsv3_protocol_agree(launch->protocol, 1, &all_ok));
    DSV3_CALL(dsv3_protocol_agree(launch->protocol, 1, &all_ok));
    DSV3_CHECK(all_ok, DSV3_ERR_IO, "loading %s failed on a stage rank (its error is above)",
               cmd.path);
    if (cmd.model_only)
        DSV3_LOG_INFO("checkpoint: loaded the model from %s%s in %.2f s; training starts at step 1",
                      cmd.path, cmd.source == DSV3_CKPT_LOAD_HF ? " (HF safetensors)" : "",
                      dsv3_log_seconds() - t0);
    else
        DSV3_LOG_INFO("checkpoint: resumed from %s (model, optimizer, step %" PRId64
                      ") in %.2f s; next step %" PRId64,
                      cmd.path, cmd.step, dsv3_log_seconds() - t0, *first_step);
    return DSV3_OK;
}

// Stage rank: checks its share of the manifest's files (sizes and CRC-32), which the stage ranks
// split between them.
static Dsv3Err verify_share(const Dsv3Launch *launch, const Dsv3CkptRank *rank, const char *path) {
    if (!rank->n_models) return DSV3_OK;
    Dsv3Manifest man;
    DSV3_CALL(dsv3_manifest_read(path, &man));
    Dsv3Err err =
        dsv3_manifest_verify(path, &man, launch->topology.stage_index, launch->topology.n_stage);
    dsv3_manifest_free(&man);
    return err;
}

// Stage rank or expert server: reads its own boxes, whatever layout wrote the checkpoint (or
// HF files).
static Dsv3Err stage_load(const Dsv3Launch *launch, const Dsv3CkptRank *rank,
                          const Dsv3CkptLoadCommand *cmd) {
    Dsv3CkptTensors t;
    DSV3_CALL(rank_tensors(launch, rank, &t));
    Dsv3Err err = dsv3_ckpt_tensors_add_rest(&t, &launch->model);
    if (err == DSV3_OK && cmd->source == DSV3_CKPT_LOAD_HF)
        err = dsv3_hf_load(cmd->path, &launch->model, &t);
    else if (err == DSV3_OK)
        err = dsv3_ckpt_store_read(cmd->path, &t, !cmd->model_only);
    dsv3_ckpt_tensors_free(&t);
    return err;
}

Dsv3Err dsv3_ckpt_rank_start(const Dsv3Launch *launch, const Dsv3CkptRank *rank) {
    Dsv3CkptLoadCommand cmd;
    DSV3_CALL(dsv3_protocol_recv_load(launch->protocol, &cmd));
    if (cmd.source == DSV3_CKPT_LOAD_NONE) return DSV3_OK;
    // A failure here is this rank's own (every rank reads the same files): report it and let
    // main() end the job, rather than wait for an agreement that would only delay the message.
    int all_ok = 0;
    if (cmd.source == DSV3_CKPT_LOAD_DSV3) {
        // Every file is checked before any rank reads one: a corrupt file stops the job with
        // its checker's message, and no other rank hands it to HDF5 meanwhile.
        DSV3_CALL(verify_share(launch, rank, cmd.path));
        DSV3_CALL(dsv3_protocol_agree(launch->protocol, 1, &all_ok));
    }
    DSV3_CALL(stage_load(launch, rank, &cmd));
    return dsv3_protocol_agree(launch->protocol, 1, &all_ok);
}
