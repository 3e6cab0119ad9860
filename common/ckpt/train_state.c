// train_state: train_state.json (json-c) and config.toml of a checkpoint.
#include "train_state.h"

#include <errno.h>
#include <inttypes.h>
#include <json.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/ckpt/manifest.h"
#include "common/core/alloc.h"
#include "common/core/log.h"

static Dsv3Err write_text(const char *dir, const char *name, const char *text) {
    char path[DSV3_CKPT_PATH_CAPACITY];
    int n = snprintf(path, sizeof path, "%s/%s", dir, name);
    DSV3_CHECK(n > 0 && n < (int)sizeof path, DSV3_ERR_USAGE, "checkpoint path %s/%s is too long",
               dir, name);
    FILE *f = fopen(path, "w");
    DSV3_CHECK(f, DSV3_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    int ok =
        fputs(text, f) >= 0 && fputc('\n', f) != EOF && fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    DSV3_CHECK(ok, DSV3_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    return DSV3_OK;
}

// Bytes of the dataset file (-1 for none or unreadable): part of the data identity.
static int64_t dataset_bytes(const Dsv3Config *cfg) {
    struct stat st;
    if (strcmp(cfg->training.dataset, "synthetic") == 0 ||
        stat(cfg->training.dataset_path, &st) != 0)
        return -1;
    return (int64_t)st.st_size;
}

static json_object *data_identity(const Dsv3Config *cfg, int64_t step, int64_t global_batch) {
    json_object *d = json_object_new_object();
    json_object_object_add(d, "dataset", json_object_new_string(cfg->training.dataset));
    json_object_object_add(d, "dataset_path", json_object_new_string(cfg->training.dataset_path));
    json_object_object_add(d, "dataset_bytes", json_object_new_int64(dataset_bytes(cfg)));
    json_object_object_add(d, "seed", json_object_new_int64(cfg->debug.seed));
    json_object_object_add(d, "vocab_size", json_object_new_int64(cfg->model.vocab_size));
    json_object_object_add(d, "seq_len", json_object_new_int64(cfg->training.seq_len));
    json_object_object_add(d, "global_batch_size", json_object_new_int64(global_batch));
    json_object_object_add(d, "windows_consumed", json_object_new_int64(step * global_batch));
    return d;
}

static json_object *schedule(const Dsv3Config *cfg, double lr) {
    json_object *s = json_object_new_object();
    json_object_object_add(s, "lr", json_object_new_double(cfg->optimizer.lr));
    json_object_object_add(s, "warmup_steps",
                           json_object_new_int64(cfg->lr_scheduler.warmup_steps));
    json_object_object_add(s, "total_steps",
                           json_object_new_int64(cfg->lr_scheduler.total_steps
                                                     ? cfg->lr_scheduler.total_steps
                                                     : cfg->training.steps));
    json_object_object_add(s, "decay_ratio", json_object_new_double(cfg->lr_scheduler.decay_ratio));
    json_object_object_add(s, "decay_type", json_object_new_string(cfg->lr_scheduler.decay_type));
    json_object_object_add(s, "min_lr_factor",
                           json_object_new_double(cfg->lr_scheduler.min_lr_factor));
    json_object_object_add(s, "last_lr", json_object_new_double(lr));
    return s;
}

Dsv3Err dsv3_train_state_write(const char *dir, const Dsv3Config *cfg, int64_t step,
                               int64_t global_batch, double lr) {
    json_object *root = json_object_new_object(), *rng = json_object_new_object(),
                *opt = json_object_new_object();
    DSV3_CHECK(root && rng && opt, DSV3_ERR_MEMORY, "cannot build the train state");
    json_object_object_add(root, "format_version", json_object_new_int64(DSV3_CKPT_FORMAT_VERSION));
    json_object_object_add(root, "step", json_object_new_int64(step));
    json_object_object_add(root, "data", data_identity(cfg, step, global_batch));
    json_object_object_add(root, "lr_schedule", schedule(cfg, lr));
    json_object_object_add(rng, "seed", json_object_new_int64(cfg->debug.seed));
    json_object_object_add(rng, "kind",
                           json_object_new_string("counter-based (no generator state)"));
    json_object_object_add(root, "rng", rng);
    json_object_object_add(opt, "name", json_object_new_string(cfg->optimizer.name));
    json_object_object_add(opt, "step", json_object_new_int64(step));
    json_object_object_add(root, "optimizer", opt);
    Dsv3Err err = write_text(
        dir, DSV3_TRAIN_STATE_FILE,
        json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                                 JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(root);
    if (err != DSV3_OK) return dsv3_error_trace(err, __FILE__, __LINE__, __func__);
    char *toml = NULL;
    DSV3_CALL(dsv3_config_to_toml(cfg, &toml));
    err = write_text(dir, DSV3_CONFIG_FILE, toml);
    dsv3_free(toml);
    return err;
}

// Logs each field of `saved` that differs from `now` (both objects of scalars).
static void compare(const char *what, json_object *saved, json_object *now) {
    if (!saved) return;
    json_object_object_foreach(now, key, value) {
        json_object *old = NULL;
        if (strcmp(key, "windows_consumed") == 0 || strcmp(key, "last_lr") == 0) continue;
        if (!json_object_object_get_ex(saved, key, &old)) continue;
        const char *a = json_object_to_json_string(old), *b = json_object_to_json_string(value);
        if (strcmp(a, b) != 0)
            DSV3_LOG_WARN("resuming with another %s: %s was %s, now %s", what, key, a, b);
    }
}

Dsv3Err dsv3_train_state_read(const char *dir, const Dsv3Config *cfg, int64_t global_batch,
                              int64_t *step) {
    char path[DSV3_CKPT_PATH_CAPACITY];
    int n = snprintf(path, sizeof path, "%s/%s", dir, DSV3_TRAIN_STATE_FILE);
    DSV3_CHECK(n > 0 && n < (int)sizeof path, DSV3_ERR_USAGE, "checkpoint path %s is too long",
               dir);
    json_object *root = json_object_from_file(path);
    DSV3_CHECK(root, DSV3_ERR_IO, "cannot read %s: %s", path, json_util_get_last_err());
    json_object *v = NULL, *data = NULL, *sched = NULL;
    Dsv3Err err = DSV3_OK;
    if (!json_object_object_get_ex(root, "step", &v) || json_object_get_type(v) != json_type_int ||
        json_object_get_int64(v) < 0)
        err = dsv3_error_raise(DSV3_ERR_USAGE, __FILE__, __LINE__, __func__,
                               "%s has no valid \"step\"", path);
    else
        *step = json_object_get_int64(v);
    if (err == DSV3_OK) {
        json_object_object_get_ex(root, "data", &data);
        json_object_object_get_ex(root, "lr_schedule", &sched);
        json_object *now_data = data_identity(cfg, *step, global_batch),
                    *now_sched = schedule(cfg, 0);
        compare("dataset", data, now_data);
        compare("LR schedule", sched, now_sched);
        json_object_put(now_data);
        json_object_put(now_sched);
    }
    json_object_put(root);
    return err;
}
