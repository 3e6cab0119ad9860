// convert: the two directions of HF conversion over h5.h, hf.h and safetensors.h.
#include "convert.h"

#include <errno.h>
#include <hdf5.h>
#include <inttypes.h>
#include <json.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/ckpt/dtype.h"
#include "common/ckpt/h5.h"
#include "common/ckpt/hf.h"
#include "common/ckpt/hf_names.h"
#include "common/ckpt/manifest.h"
#include "common/ckpt/safetensors.h"
#include "common/ckpt/store.h"
#include "common/ckpt/tensors.h"
#include "common/ckpt/train_state.h"
#include "common/core/alloc.h"
#include "common/core/log.h"
#include "common/model/model_config.h"

static Dsv3Err path_join(char out[DSV3_CKPT_PATH_CAPACITY], const char *dir, const char *name) {
    int n = snprintf(out, DSV3_CKPT_PATH_CAPACITY, "%s/%s", dir, name);
    DSV3_CHECK(n > 0 && n < DSV3_CKPT_PATH_CAPACITY, DSV3_ERR_USAGE, "path %s/%s is too long", dir,
               name);
    return DSV3_OK;
}

// <out>.tmp, fresh; <out> must not exist.
static Dsv3Err begin_output(const char *out, char tmp[DSV3_CKPT_PATH_CAPACITY]) {
    struct stat st;
    DSV3_CHECK(stat(out, &st) != 0, DSV3_ERR_USAGE, "%s already exists: choose a new output folder",
               out);
    int n = snprintf(tmp, DSV3_CKPT_PATH_CAPACITY, "%s.tmp", out);
    DSV3_CHECK(n > 0 && n < DSV3_CKPT_PATH_CAPACITY, DSV3_ERR_USAGE, "path %s is too long", out);
    DSV3_CALL(dsv3_ckpt_remove_tree(tmp));
    DSV3_CHECK(mkdir(tmp, 0777) == 0, DSV3_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    return DSV3_OK;
}

static Dsv3Err finish_output(const char *tmp, const char *out) {
    DSV3_CHECK(rename(tmp, out) == 0, DSV3_ERR_IO, "cannot rename %s to %s: %s", tmp, out,
               strerror(errno));
    return DSV3_OK;
}

// A failed conversion leaves nothing behind: removes <out>.tmp and returns `err`, whose message
// is kept (a folder that cannot be removed is named in a warning).
static Dsv3Err abandon_output(Dsv3Err err, const char *tmp) {
    char message[1024];
    snprintf(message, sizeof message, "%s", dsv3_error_message());
    if (dsv3_ckpt_remove_tree(tmp) != DSV3_OK) {
        DSV3_LOG_WARN("%s", dsv3_error_message());
        return dsv3_error_raise(err, __FILE__, __LINE__, __func__, "%s", message);
    }
    return dsv3_error_trace(err, __FILE__, __LINE__, __func__);
}

// Values are converted as they are; NaN or infinite ones are named, as a model that holds them
// will not train.
static void warn_nonfinite(const char *what, const float *data, int64_t numel) {
    int64_t bad = dsv3_count_nonfinite(data, numel);
    if (bad)
        DSV3_LOG_WARN("tensor %s holds %" PRId64 " NaN or infinite value(s) of %" PRId64
                      "; converted as they are",
                      what, bad, numel);
}

// ---- from HF ----

typedef struct {
    const char *path;
    hid_t file;
    hid_t *dsets;    // per tensor
    Dsv3Dtype dtype; // of non-bias tensors
    const Dsv3CkptTensors *t;
} H5Sink;

static Dsv3Err h5_sink(const Dsv3CkptTensor *x, int64_t expert, const float *data, int64_t numel,
                       void *arg) {
    H5Sink *s = arg;
    char hf_name[DSV3_HF_NAME_CAPACITY];
    DSV3_CALL(dsv3_hf_name_from_fqn(x->fqn, expert, hf_name));
    warn_nonfinite(hf_name, data, numel);
    int64_t start[DSV3_H5_MAX_DIMS] = {0}, count[DSV3_H5_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++)
        count[d] = x->shape[d];
    if (expert >= 0) start[0] = expert, count[0] = 1;
    Dsv3Dtype dtype = x->is_bias ? DSV3_DTYPE_F32 : s->dtype;
    return dsv3_h5_write_box(s->dsets[x - s->t->items], s->path, x->fqn, dtype, x->ndim, start,
                             count, data);
}

static Dsv3Err write_model_file(const char *hf_dir, const char *tmp, const Dsv3Config *cfg,
                                const Dsv3ModelArgs *args, const Dsv3CkptTensors *t) {
    char path[DSV3_CKPT_PATH_CAPACITY];
    DSV3_CALL(path_join(path, tmp, DSV3_CKPT_MODEL_FILE));
    H5Sink s = {.path = path, .t = t};
    DSV3_CALL(dsv3_dtype_from_export(cfg->checkpoint.export_dtype, &s.dtype));
    DSV3_CALL(dsv3_calloc((void **)&s.dsets, (size_t)t->count, sizeof *s.dsets, "dataset handles"));
    for (int64_t i = 0; i < t->count; i++)
        s.dsets[i] = -1;
    Dsv3Err err = dsv3_h5_create(&s.file, path);
    if (err == DSV3_OK)
        err = dsv3_h5_attr_write_int(s.file, path, "format_version", DSV3_CKPT_FORMAT_VERSION);
    if (err == DSV3_OK) err = dsv3_h5_attr_write_int(s.file, path, "step", 0);
    if (err == DSV3_OK) err = dsv3_h5_attr_write_str(s.file, path, "source", hf_dir);
    for (int64_t i = 0; i < t->count && err == DSV3_OK; i++) {
        const Dsv3CkptTensor *x = &t->items[i];
        err = dsv3_h5_dataset_create(&s.dsets[i], s.file, path, x->fqn,
                                     x->is_bias ? DSV3_DTYPE_F32 : s.dtype, x->ndim, x->shape);
    }
    if (err == DSV3_OK) err = dsv3_hf_read(hf_dir, args, t, h5_sink, &s);
    for (int64_t i = 0; i < t->count; i++)
        if (s.dsets[i] >= 0) H5Dclose(s.dsets[i]);
    dsv3_free(s.dsets);
    if (s.file > 0) {
        Dsv3Err closed = dsv3_h5_close(s.file, path, 1);
        if (err == DSV3_OK) err = closed;
    }
    return err;
}

Dsv3Err dsv3_convert_from_hf(const char *hf_dir, const char *out_dir, const Dsv3Config *cfg) {
    Dsv3ModelArgs args;
    dsv3_model_args_from_config(cfg, &args);
    char tmp[DSV3_CKPT_PATH_CAPACITY];
    DSV3_CALL(begin_output(out_dir, tmp));
    Dsv3CkptTensors t;
    DSV3_CALL(dsv3_ckpt_tensors_of_model(&t, &args));
    Dsv3Manifest m = {.step = 0};
    snprintf(m.kind, sizeof m.kind, "model");
    Dsv3Err err = write_model_file(hf_dir, tmp, cfg, &args, &t);
    char *toml = NULL;
    if (err == DSV3_OK) err = dsv3_config_to_toml(cfg, &toml);
    if (err == DSV3_OK) {
        char path[DSV3_CKPT_PATH_CAPACITY];
        err = path_join(path, tmp, DSV3_CONFIG_FILE);
        FILE *f = err == DSV3_OK ? fopen(path, "w") : NULL;
        if (err == DSV3_OK && (!f || fputs(toml, f) < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0))
            err = dsv3_error_raise(DSV3_ERR_IO, __FILE__, __LINE__, __func__, "cannot write %s: %s",
                                   path, strerror(errno));
        if (f && fclose(f) != 0 && err == DSV3_OK)
            err = dsv3_error_raise(DSV3_ERR_IO, __FILE__, __LINE__, __func__, "cannot write %s",
                                   path);
    }
    dsv3_free(toml);
    const char *files[] = {DSV3_CKPT_MODEL_FILE, DSV3_CONFIG_FILE};
    for (size_t i = 0; i < 2 && err == DSV3_OK; i++) {
        Dsv3ManifestFile f;
        err = dsv3_manifest_describe(tmp, files[i], &f);
        if (err == DSV3_OK) err = dsv3_manifest_add(&m, &f);
    }
    if (err == DSV3_OK) err = dsv3_manifest_write(tmp, &m);
    if (err == DSV3_OK) err = finish_output(tmp, out_dir);
    dsv3_manifest_free(&m);
    dsv3_ckpt_tensors_free(&t);
    if (err != DSV3_OK) return abandon_output(err, tmp);
    DSV3_LOG_INFO("converted %s to %s (%s)", hf_dir, out_dir, cfg->checkpoint.export_dtype);
    return DSV3_OK;
}

// ---- to HF ----

// One HF tensor: a whole model tensor, or one expert's row of a stacked one.
typedef struct {
    const Dsv3CkptTensor *x;
    int64_t expert;
    char name[DSV3_HF_NAME_CAPACITY];
    Dsv3SafetensorsSpec spec;
    int64_t bytes;
} HfTensor;

static Dsv3Err list_hf_tensors(const Dsv3CkptTensors *t, Dsv3Dtype dtype, HfTensor **out,
                               int64_t *count) {
    int64_t n = 0;
    for (int64_t i = 0; i < t->count; i++)
        n += dsv3_hf_fqn_is_stacked(t->items[i].fqn) ? t->items[i].shape[0] : 1;
    DSV3_CALL(dsv3_calloc((void **)out, (size_t)(n ? n : 1), sizeof **out, "HF tensor list"));
    int64_t k = 0;
    for (int64_t i = 0; i < t->count; i++) {
        const Dsv3CkptTensor *x = &t->items[i];
        int stacked = dsv3_hf_fqn_is_stacked(x->fqn);
        for (int64_t e = 0; e < (stacked ? x->shape[0] : 1); e++) {
            HfTensor *h = &(*out)[k++];
            h->x = x;
            h->expert = stacked ? e : -1;
            DSV3_CALL(dsv3_hf_name_from_fqn(x->fqn, h->expert, h->name));
            h->spec.name = h->name;
            h->spec.dtype = x->is_bias ? DSV3_DTYPE_F32 : dtype;
            h->spec.ndim = stacked ? x->ndim - 1 : x->ndim;
            memcpy(h->spec.shape, stacked ? x->shape + 1 : x->shape,
                   (size_t)h->spec.ndim * sizeof(int64_t));
            h->bytes = (int64_t)dsv3_dtype_size(h->spec.dtype) *
                       (stacked ? x->numel / x->shape[0] : x->numel);
        }
    }
    *count = n;
    return DSV3_OK;
}

// Writes tensors [first, last) into one shard.
static Dsv3Err write_shard(const char *path, const char *ckpt, hid_t file, const HfTensor *h,
                           int64_t first, int64_t last, float *buffer, void *converted) {
    Dsv3SafetensorsSpec *specs = NULL;
    DSV3_CALL(dsv3_calloc((void **)&specs, (size_t)(last - first), sizeof *specs, "shard specs"));
    for (int64_t i = first; i < last; i++)
        specs[i - first] = h[i].spec;
    Dsv3SafetensorsWriter *w = NULL;
    Dsv3Err err = dsv3_safetensors_writer_open(&w, path, specs, (size_t)(last - first));
    for (int64_t i = first; i < last && err == DSV3_OK; i++) {
        const Dsv3CkptTensor *x = h[i].x;
        int64_t start[DSV3_H5_MAX_DIMS] = {0}, count[DSV3_H5_MAX_DIMS];
        for (int d = 0; d < x->ndim; d++)
            count[d] = x->shape[d];
        if (h[i].expert >= 0) start[0] = h[i].expert, count[0] = 1;
        hid_t dset = -1;
        err = dsv3_h5_dataset_open(&dset, file, ckpt, x->fqn, x->ndim, x->shape, x->is_bias);
        if (err == DSV3_OK)
            err = dsv3_h5_read_box(dset, ckpt, x->fqn, x->ndim, start, count, buffer);
        if (dset >= 0) H5Dclose(dset);
        int64_t numel = h[i].bytes / (int64_t)dsv3_dtype_size(h[i].spec.dtype);
        if (err == DSV3_OK) warn_nonfinite(h[i].name, buffer, numel);
        if (err == DSV3_OK) err = dsv3_dtype_from_f32(converted, buffer, numel, h[i].spec.dtype);
        if (err == DSV3_OK) err = dsv3_safetensors_writer_append(w, converted, (size_t)h[i].bytes);
    }
    if (err == DSV3_OK)
        err = dsv3_safetensors_writer_close(w);
    else
        dsv3_safetensors_writer_abandon(w);
    dsv3_free(specs);
    return err;
}

static json_object *hf_config(const Dsv3ModelArgs *a, const char *dtype) {
    json_object *c = json_object_new_object(), *arch = json_object_new_array(),
                *rope = json_object_new_object();
    json_object_array_add(arch, json_object_new_string("DeepseekV3ForCausalLM"));
    json_object_object_add(c, "architectures", arch);
    json_object_object_add(c, "model_type", json_object_new_string("deepseek_v3"));
    json_object_object_add(c, "vocab_size", json_object_new_int64(a->vocab_size));
    json_object_object_add(c, "hidden_size", json_object_new_int64(a->dim));
    json_object_object_add(c, "intermediate_size", json_object_new_int64(a->inter_dim));
    json_object_object_add(c, "moe_intermediate_size", json_object_new_int64(a->moe_inter_dim));
    json_object_object_add(c, "num_hidden_layers", json_object_new_int64(a->n_layers));
    json_object_object_add(c, "first_k_dense_replace", json_object_new_int64(a->n_dense_layers));
    json_object_object_add(c, "num_attention_heads", json_object_new_int64(a->n_heads));
    json_object_object_add(c, "num_key_value_heads", json_object_new_int64(a->n_heads));
    json_object_object_add(c, "n_routed_experts", json_object_new_int64(a->num_experts));
    json_object_object_add(c, "n_shared_experts", json_object_new_int64(a->num_shared_experts));
    json_object_object_add(c, "num_experts_per_tok", json_object_new_int64(a->top_k));
    json_object_object_add(c, "n_group",
                           json_object_new_int64(a->num_expert_groups ? a->num_expert_groups : 1));
    json_object_object_add(
        c, "topk_group", json_object_new_int64(a->num_limited_groups ? a->num_limited_groups : 1));
    json_object_object_add(c, "routed_scaling_factor", json_object_new_double(a->route_scale));
    json_object_object_add(
        c, "scoring_func",
        json_object_new_string(a->score_func == DSV3_SCORE_SIGMOID ? "sigmoid" : "softmax"));
    json_object_object_add(c, "norm_topk_prob", json_object_new_boolean(a->route_norm));
    json_object_object_add(c, "q_lora_rank",
                           a->q_lora_rank ? json_object_new_int64(a->q_lora_rank) : NULL);
    json_object_object_add(c, "kv_lora_rank", json_object_new_int64(a->kv_lora_rank));
    json_object_object_add(c, "qk_nope_head_dim", json_object_new_int64(a->qk_nope_head_dim));
    json_object_object_add(c, "qk_rope_head_dim", json_object_new_int64(a->qk_rope_head_dim));
    json_object_object_add(c, "v_head_dim", json_object_new_int64(a->v_head_dim));
    json_object_object_add(c, "rope_theta", json_object_new_double(a->rope_theta));
    json_object_object_add(rope, "type", json_object_new_string("yarn"));
    json_object_object_add(rope, "factor", json_object_new_double(a->rope_factor));
    json_object_object_add(rope, "beta_fast", json_object_new_double(a->beta_fast));
    json_object_object_add(rope, "beta_slow", json_object_new_double(a->beta_slow));
    json_object_object_add(rope, "mscale", json_object_new_double(a->mscale));
    json_object_object_add(rope, "mscale_all_dim", json_object_new_double(a->mscale));
    json_object_object_add(rope, "original_max_position_embeddings",
                           json_object_new_int64(a->original_seq_len));
    json_object_object_add(c, "rope_scaling", rope);
    json_object_object_add(c, "rms_norm_eps", json_object_new_double(a->norm_eps));
    json_object_object_add(c, "tie_word_embeddings", json_object_new_boolean(0));
    json_object_object_add(c, "torch_dtype", json_object_new_string(dtype));
    return c;
}

static Dsv3Err write_json(const char *dir, const char *name, json_object *obj) {
    char path[DSV3_CKPT_PATH_CAPACITY];
    DSV3_CALL(path_join(path, dir, name));
    int rc = json_object_to_file_ext(path, obj,
                                     JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
    DSV3_CHECK(rc == 0, DSV3_ERR_IO, "cannot write %s: %s", path, json_util_get_last_err());
    return DSV3_OK;
}

static Dsv3Err export_all(const char *ckpt, const char *tmp, const Dsv3ModelArgs *args,
                          const char *dtype_name, int64_t max_shard_bytes, HfTensor *h, int64_t n) {
    // Shards: consecutive tensors up to max_shard_bytes (a larger tensor gets its own).
    int64_t n_shards = 0, bytes = 0, largest = 1, total = 0;
    for (int64_t i = 0; i < n; i++) {
        if (i == 0 || bytes + h[i].bytes > max_shard_bytes) n_shards++, bytes = 0;
        bytes += h[i].bytes, total += h[i].bytes;
        int64_t numel = h[i].bytes / (int64_t)dsv3_dtype_size(h[i].spec.dtype);
        if (numel > largest) largest = numel;
    }
    char model[DSV3_CKPT_PATH_CAPACITY];
    DSV3_CALL(path_join(model, ckpt, DSV3_CKPT_MODEL_FILE));
    hid_t file = -1;
    DSV3_CALL(dsv3_h5_open(&file, model));
    float *buffer = NULL;
    void *converted = NULL;
    json_object *index = json_object_new_object(), *meta = json_object_new_object(),
                *map = json_object_new_object();
    json_object_object_add(meta, "total_size", json_object_new_int64(total));
    json_object_object_add(index, "metadata", meta);
    json_object_object_add(index, "weight_map", map);
    Dsv3Err err = dsv3_alloc((void **)&buffer, (size_t)largest * sizeof(float), "export buffer");
    if (err == DSV3_OK)
        err = dsv3_alloc(&converted, (size_t)largest * sizeof(float), "export conversion buffer");
    int64_t first = 0;
    for (int64_t s = 1; s <= n_shards && err == DSV3_OK; s++) {
        int64_t last = first, size = 0;
        while (last < n && (last == first || size + h[last].bytes <= max_shard_bytes))
            size += h[last++].bytes;
        char name[64], path[DSV3_CKPT_PATH_CAPACITY];
        snprintf(name, sizeof name, "model-%05" PRId64 "-of-%05" PRId64 ".safetensors", s,
                 n_shards);
        err = path_join(path, tmp, name);
        if (err == DSV3_OK) err = write_shard(path, model, file, h, first, last, buffer, converted);
        for (int64_t i = first; i < last; i++)
            json_object_object_add(map, h[i].name, json_object_new_string(name));
        first = last;
    }
    dsv3_free(buffer);
    dsv3_free(converted);
    Dsv3Err closed = dsv3_h5_close(file, model, 0);
    if (err == DSV3_OK) err = closed;
    if (err == DSV3_OK) err = write_json(tmp, DSV3_HF_INDEX, index);
    json_object_put(index);
    if (err == DSV3_OK) {
        json_object *config = hf_config(args, dtype_name);
        err = write_json(tmp, DSV3_HF_CONFIG, config);
        json_object_put(config);
    }
    return err;
}

Dsv3Err dsv3_convert_to_hf(const char *ckpt_dir, const char *hf_dir, const Dsv3Config *cfg,
                           int64_t max_shard_bytes) {
    DSV3_CHECK(max_shard_bytes > 0, DSV3_ERR_USAGE, "the shard size must be positive");
    Dsv3Manifest m;
    DSV3_CALL(dsv3_manifest_read(ckpt_dir, &m));
    Dsv3Err err = dsv3_manifest_verify(ckpt_dir, &m, 0, 1);
    dsv3_manifest_free(&m);
    if (err != DSV3_OK) return dsv3_error_trace(err, __FILE__, __LINE__, __func__);
    Dsv3ModelArgs args;
    dsv3_model_args_from_config(cfg, &args);
    Dsv3Dtype dtype;
    DSV3_CALL(dsv3_dtype_from_export(cfg->checkpoint.export_dtype, &dtype));
    Dsv3CkptTensors t;
    DSV3_CALL(dsv3_ckpt_tensors_of_model(&t, &args));
    HfTensor *h = NULL;
    int64_t n = 0;
    char tmp[DSV3_CKPT_PATH_CAPACITY];
    err = list_hf_tensors(&t, dtype, &h, &n);
    int started = 0;
    if (err == DSV3_OK) err = begin_output(hf_dir, tmp);
    if (err == DSV3_OK) {
        started = 1;
        err = export_all(ckpt_dir, tmp, &args, cfg->checkpoint.export_dtype, max_shard_bytes, h, n);
    }
    if (err == DSV3_OK) err = finish_output(tmp, hf_dir);
    dsv3_free(h);
    dsv3_ckpt_tensors_free(&t);
    if (err != DSV3_OK && started) return abandon_output(err, tmp);
    if (err != DSV3_OK) return dsv3_error_trace(err, __FILE__, __LINE__, __func__);
    DSV3_LOG_INFO("exported %s to %s (%" PRId64 " tensors, %s)", ckpt_dir, hf_dir, n,
                  cfg->checkpoint.export_dtype);
    return DSV3_OK;
}
