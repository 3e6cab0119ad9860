// hf: an HF folder's files, names, shapes and dtypes, delivered as float32 tensors.
#include "hf.h"

#include <errno.h>
#include <inttypes.h>
#include <json.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/ckpt/fp8.h"
#include "common/ckpt/hf_names.h"
#include "common/ckpt/manifest.h"
#include "common/ckpt/safetensors.h"
#include "common/core/alloc.h"
#include "common/core/log.h"

enum { SHAPE_TEXT = 96 };

typedef struct {
    const char *dir;
    const Dsv3ModelArgs *args;
    const Dsv3CkptTensors *t;
    int64_t hf_layers; // num_hidden_layers of config.json
    int64_t n_files;
    Dsv3Safetensors **files;
    uint8_t **seen; // per tensor: one flag per expert (stacked) or one
    float *buffer;  // the rows of the current HF tensor that the box needs, as float32
    float *part;    // the box's part of them (its columns)
    uint8_t *raw;   // FP8 bytes of those rows
    float *scale;
} Reader;

// The part of one HF tensor (rows × cols, row-major) that a box needs: rows [row0, row0 +
// rows) and columns [col0, col0 + cols).
typedef struct {
    int64_t row0, rows, col0, cols;
} Part;

// The part of an HF tensor (of want_ndim dims) that target t's box needs;
// `stacked`: x is one expert's row of t. rows = 0 when the box needs nothing of it.
static Part part_of(const Dsv3CkptTensor *t, int stacked, int64_t expert, int want_ndim) {
    const int64_t *start = t->box.start + (stacked ? 1 : 0);
    const int64_t *count = t->box.count + (stacked ? 1 : 0);
    Part p = {.row0 = start[0], .rows = count[0], .cols = want_ndim > 1 ? count[1] : 1};
    if (want_ndim > 1) p.col0 = start[1];
    if (stacked && (expert < t->box.start[0] || expert >= t->box.start[0] + t->box.count[0]))
        p.rows = 0;
    return p;
}

static void join(char *out, size_t cap, const char *dir, const char *name) {
    if (snprintf(out, cap, "%s/%s", dir, name) >= (int)cap) out[0] = '\0';
}

// config.json: the model must match it where both say something.
static Dsv3Err check_config(Reader *r) {
    char path[DSV3_CKPT_PATH_CAPACITY];
    join(path, sizeof path, r->dir, DSV3_HF_CONFIG);
    json_object *root = json_object_from_file(path);
    DSV3_CHECK(root, DSV3_ERR_IO,
               "%s: cannot read it (%s); an HF checkpoint folder has config.json beside its "
               "safetensors",
               path, json_util_get_last_err());
    const struct {
        const char *key;
        int64_t model;
        const char *ours;
    } keys[] = {
        {"num_hidden_layers", r->args->n_layers, "model.n_layers"},
        {"hidden_size", r->args->dim, "model.dim"},
        {"vocab_size", r->args->vocab_size, "model.vocab_size"},
        {"n_routed_experts", r->args->num_experts, "model.num_experts"},
        {"moe_intermediate_size", r->args->moe_inter_dim, "model.moe_inter_dim"},
        {"num_attention_heads", r->args->n_heads, "model.n_heads"},
    };
    Dsv3Err err = DSV3_OK;
    r->hf_layers = r->args->n_layers;
    for (size_t i = 0; i < sizeof keys / sizeof *keys && err == DSV3_OK; i++) {
        json_object *v = NULL;
        if (!json_object_object_get_ex(root, keys[i].key, &v) ||
            json_object_get_type(v) != json_type_int)
            continue;
        int64_t value = json_object_get_int64(v);
        if (value != keys[i].model)
            err = dsv3_error_raise(
                DSV3_ERR_USAGE, __FILE__, __LINE__, __func__,
                "%s says %s = %" PRId64 " but the model has %s = %" PRId64
                ": choose the matching model.flavor or override it (--%s %" PRId64 ")",
                path, keys[i].key, value, keys[i].ours, keys[i].model, keys[i].ours, value);
    }
    json_object_put(root);
    return err;
}

// The files: the index's weight_map values, or model.safetensors.
static Dsv3Err open_files(Reader *r) {
    char path[DSV3_CKPT_PATH_CAPACITY];
    join(path, sizeof path, r->dir, DSV3_HF_INDEX);
    struct stat st;
    if (stat(path, &st) != 0) {
        join(path, sizeof path, r->dir, DSV3_HF_SINGLE);
        DSV3_CHECK(stat(path, &st) == 0, DSV3_ERR_IO, "%s has neither %s nor %s", r->dir,
                   DSV3_HF_INDEX, DSV3_HF_SINGLE);
        DSV3_CALL(dsv3_calloc((void **)&r->files, 1, sizeof *r->files, "safetensors files"));
        r->n_files = 1;
        return dsv3_safetensors_open(&r->files[0], path);
    }
    json_object *root = json_object_from_file(path), *map = NULL;
    DSV3_CHECK(root, DSV3_ERR_IO, "cannot read %s: %s", path, json_util_get_last_err());
    Dsv3Err err = DSV3_OK;
    if (!json_object_object_get_ex(root, "weight_map", &map) ||
        json_object_get_type(map) != json_type_object)
        err = dsv3_error_raise(DSV3_ERR_USAGE, __FILE__, __LINE__, __func__,
                               "%s has no \"weight_map\" object", path);
    // Distinct file names, in first-seen order.
    const char **names = NULL;
    int64_t n = 0, capacity = err == DSV3_OK ? json_object_object_length(map) : 0;
    if (err == DSV3_OK)
        err = dsv3_calloc((void **)&names, (size_t)(capacity ? capacity : 1), sizeof *names,
                          "shard names");
    if (err == DSV3_OK) {
        json_object_object_foreach(map, tensor, file) {
            const char *f = json_object_get_string(file);
            if (json_object_get_type(file) != json_type_string || strchr(f, '/')) {
                err = dsv3_error_raise(DSV3_ERR_USAGE, __FILE__, __LINE__, __func__,
                                       "%s: weight_map[\"%s\"] is not a file name in the folder",
                                       path, tensor);
                break;
            }
            int64_t k = 0;
            while (k < n && strcmp(names[k], f) != 0)
                k++;
            if (k == n) names[n++] = f;
        }
    }
    if (err == DSV3_OK)
        err = dsv3_calloc((void **)&r->files, (size_t)(n ? n : 1), sizeof *r->files,
                          "safetensors files");
    for (int64_t k = 0; k < n && err == DSV3_OK; k++) {
        char file[DSV3_CKPT_PATH_CAPACITY];
        join(file, sizeof file, r->dir, names[k]);
        err = dsv3_safetensors_open(&r->files[k], file);
        r->n_files = k + 1;
    }
    // Every tensor of the map is in the file the map names.
    if (err == DSV3_OK) {
        json_object_object_foreach(map, tensor, file) {
            int64_t k = 0;
            while (strcmp(names[k], json_object_get_string(file)) != 0)
                k++;
            if (!dsv3_safetensors_find(r->files[k], tensor)) {
                err = dsv3_error_raise(DSV3_ERR_USAGE, __FILE__, __LINE__, __func__,
                                       "%s lists %s in %s, which does not hold it", path, tensor,
                                       names[k]);
                break;
            }
        }
    }
    dsv3_free(names);
    json_object_put(root);
    return err;
}

static const Dsv3SafetensorsTensor *find_any(const Reader *r, const char *name, int64_t *file) {
    for (int64_t k = 0; k < r->n_files; k++) {
        const Dsv3SafetensorsTensor *x = dsv3_safetensors_find(r->files[k], name);
        if (x) {
            *file = k;
            return x;
        }
    }
    return NULL;
}

// Reads rows [row0, row0 + rows) of HF tensor x (its width `width` elements) as float32 into
// r->buffer.
static Dsv3Err read_rows(Reader *r, int64_t k, const Dsv3SafetensorsTensor *x, const char *name,
                         int64_t row0, int64_t rows, int64_t width) {
    if (x->dtype != DSV3_DTYPE_F8_E4M3)
        return dsv3_safetensors_read_f32(r->files[k], x, r->buffer, row0 * width, rows * width);
    char scale_name[DSV3_HF_NAME_CAPACITY + 16];
    snprintf(scale_name, sizeof scale_name, "%s%s", name, DSV3_HF_SCALE_SUFFIX);
    int64_t ks = 0;
    const Dsv3SafetensorsTensor *s = find_any(r, scale_name, &ks);
    DSV3_CHECK(s, DSV3_ERR_USAGE, "%s: %s is F8_E4M3 but the folder has no %s",
               dsv3_safetensors_source(r->files[k]), name, scale_name);
    DSV3_CHECK(x->ndim == 2 && s->ndim == 2, DSV3_ERR_USAGE,
               "%s: F8_E4M3 tensor %s and its scale must be 2-D",
               dsv3_safetensors_source(r->files[k]), name);
    DSV3_CALL(dsv3_fp8_check_scale_shape(name, x->shape[0], x->shape[1], s->shape[0], s->shape[1]));
    DSV3_CALL(dsv3_alloc((void **)&r->raw, (size_t)(rows * width), "FP8 weight rows"));
    Dsv3Err err = dsv3_alloc((void **)&r->scale, (size_t)s->numel * sizeof(float), "FP8 scale");
    if (err == DSV3_OK)
        err = dsv3_safetensors_read(r->files[k], x, r->raw, (uint64_t)(row0 * width),
                                    (uint64_t)(rows * width));
    if (err == DSV3_OK) err = dsv3_safetensors_read_f32(r->files[ks], s, r->scale, 0, s->numel);
    if (err == DSV3_OK) dsv3_fp8_dequantize_rows(r->buffer, r->raw, r->scale, row0, rows, width);
    dsv3_free(r->raw);
    dsv3_free(r->scale);
    r->raw = NULL, r->scale = NULL;
    return err;
}

// Reads the part of HF tensor x that the box needs and delivers it, box-shaped, to the sink.
static Dsv3Err deliver(Reader *r, int64_t k, const Dsv3SafetensorsTensor *x,
                       const Dsv3CkptTensor *target, int64_t expert, const Part *p, Dsv3HfSink sink,
                       void *arg) {
    int64_t width = x->ndim > 1 ? x->shape[1] : 1;
    DSV3_CALL(read_rows(r, k, x, x->name, p->row0, p->rows, width));
    const float *data = r->buffer;
    if (p->cols != width) { // the box has some columns only (a row-wise tensor-parallel piece)
        for (int64_t i = 0; i < p->rows; i++)
            memcpy(r->part + i * p->cols, r->buffer + i * width + p->col0,
                   (size_t)p->cols * sizeof(float));
        data = r->part;
    }
    return sink(target, expert, data, p->rows * p->cols, arg);
}

static Dsv3Err take(Reader *r, int64_t k, const Dsv3SafetensorsTensor *x, Dsv3HfSink sink,
                    void *arg, int64_t *skipped) {
    const char *src = dsv3_safetensors_source(r->files[k]);
    Dsv3HfName n;
    dsv3_hf_name_parse(x->name, &n);
    if (n.kind == DSV3_HF_SCALE) return DSV3_OK; // read with its weight
    int64_t layer = -1;
    if (n.kind == DSV3_HF_UNKNOWN && sscanf(x->name, "model.layers.%" SCNd64 ".", &layer) == 1 &&
        layer >= r->hf_layers) {
        (*skipped)++; // the multi-token-prediction layer: not part of the trained model
        return DSV3_OK;
    }
    DSV3_CHECK(n.kind == DSV3_HF_TENSOR, DSV3_ERR_USAGE,
               "%s: tensor %s has no torchtitan counterpart (DeepSeekV3StateDictAdapter)", src,
               x->name);
    if (n.layer >= r->hf_layers) {
        (*skipped)++;
        return DSV3_OK;
    }
    const Dsv3CkptTensor *target = dsv3_ckpt_tensors_find(r->t, n.fqn);
    DSV3_CHECK(
        target, DSV3_ERR_USAGE,
        "%s: tensor %s maps to %s, which this model does not have (q_lora_rank, n_dense_layers or "
        "num_shared_experts differ from the checkpoint's?)",
        src, x->name, n.fqn);
    int stacked = dsv3_hf_fqn_is_stacked(n.fqn);
    int64_t want_ndim = stacked ? target->ndim - 1 : target->ndim;
    const int64_t *want = stacked ? target->shape + 1 : target->shape;
    int same = x->ndim == want_ndim;
    for (int d = 0; d < want_ndim && same; d++)
        same = x->shape[d] == want[d];
    char a[SHAPE_TEXT], b[SHAPE_TEXT];
    DSV3_CHECK(same, DSV3_ERR_USAGE, "%s: tensor %s has shape %s but the model's %s%s needs %s",
               src, x->name, dsv3_ckpt_shape_text(x->ndim, x->shape, a), n.fqn,
               stacked ? " (one expert of)" : "", dsv3_ckpt_shape_text((int)want_ndim, want, b));
    DSV3_CHECK(!stacked || (n.expert >= 0 && n.expert < r->args->num_experts), DSV3_ERR_USAGE,
               "%s: tensor %s is expert %" PRId64 " but the model has %" PRId64 " experts", src,
               x->name, n.expert, r->args->num_experts);
    DSV3_CHECK(dsv3_dtype_converts_to_f32(x->dtype), DSV3_ERR_USAGE,
               "%s: tensor %s is %s, not a float type", src, x->name, dsv3_dtype_name(x->dtype));
    uint8_t *seen = &r->seen[target - r->t->items][stacked ? n.expert : 0];
    DSV3_CHECK(!*seen, DSV3_ERR_USAGE, "%s: tensor %s appears twice in the checkpoint", src,
               x->name);
    *seen = 1;
    Part p = part_of(target, stacked, n.expert, (int)want_ndim);
    if (p.rows == 0) return DSV3_OK; // outside this rank's box
    return deliver(r, k, x, target, stacked ? n.expert : -1, &p, sink, arg);
}

// Every model tensor was delivered; missing expert biases become zeros.
static Dsv3Err check_complete(Reader *r, Dsv3HfSink sink, void *arg) {
    for (int64_t i = 0; i < r->t->count; i++) {
        const Dsv3CkptTensor *x = &r->t->items[i];
        int stacked = dsv3_hf_fqn_is_stacked(x->fqn);
        int64_t n = stacked ? x->shape[0] : 1;
        for (int64_t e = 0; e < n; e++) {
            if (r->seen[i][e]) continue;
            char hf[DSV3_HF_NAME_CAPACITY];
            DSV3_CALL(dsv3_hf_name_from_fqn(x->fqn, stacked ? e : -1, hf));
            if (x->is_bias) {
                DSV3_LOG_INFO("%s: no %s; the expert bias of layer %" PRId64 " starts at zero",
                              r->dir, hf, x->layer);
                int64_t numel = dsv3_box_numel(&x->box, x->ndim);
                memset(r->buffer, 0, (size_t)numel * sizeof(float));
                if (numel) DSV3_CALL(sink(x, -1, r->buffer, numel, arg));
                continue;
            }
            DSV3_RAISE(DSV3_ERR_USAGE, "%s lacks %s (the model's %s)", r->dir, hf, x->fqn);
        }
    }
    return DSV3_OK;
}

static Dsv3Err read_all(Reader *r, Dsv3HfSink sink, void *arg) {
    DSV3_CALL(check_config(r));
    DSV3_CALL(open_files(r));
    // The buffers hold the largest box rows of one HF tensor (full width) and their part.
    int64_t largest_rows = 1, largest_part = 1;
    for (int64_t i = 0; i < r->t->count; i++) {
        const Dsv3CkptTensor *x = &r->t->items[i];
        int stacked = dsv3_hf_fqn_is_stacked(x->fqn);
        int64_t experts = stacked ? x->shape[0] : 1;
        DSV3_CALL(dsv3_calloc((void **)&r->seen[i], (size_t)experts, 1, "HF tensor flags"));
        int64_t per_row = 1, part = x->box.count[stacked ? 1 : 0];
        for (int d = (stacked ? 1 : 0) + 1; d < x->ndim; d++) {
            per_row *= x->shape[d];
            part *= x->box.count[d];
        }
        int64_t rows = x->box.count[stacked ? 1 : 0] * per_row;
        if (rows > largest_rows) largest_rows = rows;
        if (part > largest_part) largest_part = part;
    }
    DSV3_CALL(
        dsv3_alloc((void **)&r->buffer, (size_t)largest_rows * sizeof(float), "HF tensor rows"));
    DSV3_CALL(dsv3_alloc((void **)&r->part, (size_t)largest_part * sizeof(float), "HF box part"));
    int64_t skipped = 0;
    for (int64_t k = 0; k < r->n_files; k++) {
        size_t count = 0;
        const Dsv3SafetensorsTensor *xs = dsv3_safetensors_tensors(r->files[k], &count);
        for (size_t i = 0; i < count; i++)
            DSV3_CALL(take(r, k, &xs[i], sink, arg, &skipped));
    }
    if (skipped)
        DSV3_LOG_INFO("%s: skipped %" PRId64 " tensors of layers beyond num_hidden_layers %" PRId64
                      " (multi-token prediction)",
                      r->dir, skipped, r->hf_layers);
    return check_complete(r, sink, arg);
}

Dsv3Err dsv3_hf_read(const char *dir, const Dsv3ModelArgs *args, const Dsv3CkptTensors *t,
                     Dsv3HfSink sink, void *arg) {
    Reader r = {.dir = dir, .args = args, .t = t};
    Dsv3Err err = dsv3_calloc((void **)&r.seen, (size_t)(t->count ? t->count : 1), sizeof *r.seen,
                              "HF tensor flags");
    if (err == DSV3_OK) err = read_all(&r, sink, arg);
    for (int64_t k = 0; k < r.n_files; k++)
        dsv3_safetensors_close(r.files[k]);
    dsv3_free(r.files);
    for (int64_t i = 0; i < t->count && r.seen; i++)
        dsv3_free(r.seen[i]);
    dsv3_free(r.seen);
    dsv3_free(r.buffer);
    dsv3_free(r.part);
    if (err != DSV3_OK) return dsv3_error_trace(err, __FILE__, __LINE__, __func__);
    return DSV3_OK;
}

static Dsv3Err copy_sink(const Dsv3CkptTensor *t, int64_t expert, const float *data, int64_t numel,
                         void *arg) {
    (void)arg;
    DSV3_ASSERT(t->data);
    // A stacked expert weight's box holds whole experts from box.start[0] on.
    int64_t at = expert >= 0 ? (expert - t->box.start[0]) * numel : 0;
    memcpy(t->data + at, data, (size_t)numel * sizeof(float));
    return DSV3_OK;
}

Dsv3Err dsv3_hf_load(const char *dir, const Dsv3ModelArgs *args, const Dsv3CkptTensors *t) {
    return dsv3_hf_read(dir, args, t, copy_sink, NULL);
}
