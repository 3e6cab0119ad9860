// store: shard files, virtual-dataset index files, and reading tensors back.
// Legend: a box is (start, count) per dimension of a tensor's global shape.
#include "store.h"

#include <hdf5.h>
#include <inttypes.h>
#include <json.h>
#include <stdio.h>
#include <string.h>

#include "common/ckpt/h5.h"
#include "common/core/alloc.h"

static const char SHARDS[] = "shards";

typedef enum { KIND_MODEL, KIND_EXP_AVG, KIND_EXP_AVG_SQ, KIND_COUNT } Kind;

static const char *index_file(Kind k) {
    return k == KIND_MODEL ? DSV3_CKPT_MODEL_FILE : DSV3_CKPT_OPTIMIZER_FILE;
}

// Dataset name of a tensor in its file: "<fqn>" or "exp_avg/<fqn>".
static void dataset_name(char *out, size_t cap, Kind k, const char *fqn) {
    if (k == KIND_MODEL)
        snprintf(out, cap, "%s", fqn);
    else
        snprintf(out, cap, "%s/%s", k == KIND_EXP_AVG ? DSV3_CKPT_EXP_AVG : DSV3_CKPT_EXP_AVG_SQ,
                 fqn);
}

static const float *kind_data(const Dsv3CkptTensor *t, Kind k) {
    return k == KIND_MODEL ? t->data : k == KIND_EXP_AVG ? t->exp_avg : t->exp_avg_sq;
}

static json_object *int_array(int n, const int64_t *v) {
    json_object *a = json_object_new_array();
    for (int i = 0; i < n; i++)
        json_object_array_add(a, json_object_new_int64(v[i]));
    return a;
}

// Writes one shard file holding `kinds` of every tensor; records it and its slices in `desc`.
static Dsv3Err write_shard(const char *dir, const char *relative, const Dsv3CkptTensors *t,
                           Kind first, Kind last, Dsv3Dtype model_dtype, int64_t step,
                           json_object *files, json_object *datasets) {
    char path[DSV3_CKPT_PATH_CAPACITY];
    snprintf(path, sizeof path, "%s/%s", dir, relative);
    hid_t file = -1;
    DSV3_CALL(dsv3_h5_create(&file, path));
    Dsv3Err err = dsv3_h5_attr_write_int(file, path, "step", step);
    for (int64_t i = 0; i < t->count && err == DSV3_OK; i++) {
        const Dsv3CkptTensor *x = &t->items[i];
        if (!x->writes || dsv3_box_numel(&x->box, x->ndim) == 0) continue;
        for (Kind k = first; k <= last && err == DSV3_OK; k++) {
            if (k != KIND_MODEL && x->is_bias) continue; // buffers have no optimizer state
            Dsv3Dtype dtype = k == KIND_MODEL && !x->is_bias ? model_dtype : DSV3_DTYPE_F32;
            char name[DSV3_FQN_CAPACITY + 16];
            dataset_name(name, sizeof name, k, x->fqn);
            // The shard file's dataset is the box itself; the description places it.
            int64_t origin[DSV3_PARAM_MAX_DIMS] = {0};
            hid_t dset = -1;
            err = dsv3_h5_dataset_create(&dset, file, path, name, dtype, x->ndim, x->box.count);
            if (err == DSV3_OK)
                err = dsv3_h5_write_box(dset, path, name, dtype, x->ndim, origin, x->box.count,
                                        kind_data(x, k));
            if (dset >= 0) H5Dclose(dset);
            if (err != DSV3_OK) break;
            json_object *d = json_object_new_object();
            json_object_object_add(d, "index", json_object_new_string(index_file(k)));
            json_object_object_add(d, "name", json_object_new_string(name));
            json_object_object_add(d, "dtype", json_object_new_string(dsv3_dtype_name(dtype)));
            json_object_object_add(d, "shape", int_array(x->ndim, x->shape));
            json_object_object_add(d, "start", int_array(x->ndim, x->box.start));
            json_object_object_add(d, "count", int_array(x->ndim, x->box.count));
            json_object_object_add(d, "file", json_object_new_string(relative));
            json_object_array_add(datasets, d);
        }
    }
    Dsv3Err closed = dsv3_h5_close(file, path, 1);
    if (err == DSV3_OK) err = closed;
    if (err != DSV3_OK) return dsv3_error_trace(err, __FILE__, __LINE__, __func__);
    Dsv3ManifestFile entry;
    DSV3_CALL(dsv3_manifest_describe(dir, relative, &entry));
    json_object *f = json_object_new_object();
    json_object_object_add(f, "path", json_object_new_string(relative));
    json_object_object_add(f, "bytes", json_object_new_int64(entry.bytes));
    json_object_object_add(f, "crc32", json_object_new_int64(entry.crc32));
    json_object_array_add(files, f);
    return DSV3_OK;
}

// Whether the rank writes anything (a rank that writes nothing makes no shard file).
static int writes_any(const Dsv3CkptTensors *t) {
    for (int64_t i = 0; i < t->count; i++)
        if (t->items[i].writes && dsv3_box_numel(&t->items[i].box, t->items[i].ndim) > 0) return 1;
    return 0;
}

Dsv3Err dsv3_ckpt_store_write_shards(const char *dir, int64_t shard, const Dsv3CkptTensors *t,
                                     int with_optimizer, Dsv3Dtype model_dtype, int64_t step,
                                     char **description) {
    *description = NULL;
    json_object *root = json_object_new_object(), *files = json_object_new_array(),
                *datasets = json_object_new_array();
    DSV3_CHECK(root && files && datasets, DSV3_ERR_MEMORY, "cannot describe the shards of %s", dir);
    json_object_object_add(root, "files", files);
    json_object_object_add(root, "datasets", datasets);
    Dsv3Err err = DSV3_OK;
    if (writes_any(t)) {
        char relative[64];
        snprintf(relative, sizeof relative, "%s/model-s%05" PRId64 ".h5", SHARDS, shard);
        err = write_shard(dir, relative, t, KIND_MODEL, KIND_MODEL, model_dtype, step, files,
                          datasets);
        if (err == DSV3_OK && with_optimizer) {
            snprintf(relative, sizeof relative, "%s/optimizer-s%05" PRId64 ".h5", SHARDS, shard);
            err = write_shard(dir, relative, t, KIND_EXP_AVG, KIND_EXP_AVG_SQ, model_dtype, step,
                              files, datasets);
        }
    }
    if (err == DSV3_OK)
        err = dsv3_strdup(description, json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN),
                          "shard description");
    json_object_put(root);
    return err;
}

// ---- the index files ----

enum { MAX_SOURCES_PER_DATASET = 1 << 16 };

// One dataset of an index file and its sources, collected from the descriptions.
typedef struct {
    const char *index, *name, *dtype;
    int ndim;
    int64_t shape[DSV3_H5_MAX_DIMS];
    int n_sources;
    Dsv3H5Source *sources;
} Entry;

static Dsv3Err read_ints(json_object *obj, const char *key, int *n, int64_t *out) {
    json_object *a = NULL;
    DSV3_CHECK(json_object_object_get_ex(obj, key, &a) &&
                   json_object_get_type(a) == json_type_array && json_object_array_length(a) >= 1 &&
                   json_object_array_length(a) <= DSV3_H5_MAX_DIMS,
               DSV3_ERR_INTERNAL, "shard description: bad \"%s\"", key);
    *n = (int)json_object_array_length(a);
    for (int i = 0; i < *n; i++)
        out[i] = json_object_get_int64(json_object_array_get_idx(a, (size_t)i));
    return DSV3_OK;
}

static const char *get_str(json_object *obj, const char *key) {
    json_object *v = NULL;
    return json_object_object_get_ex(obj, key, &v) && json_object_get_type(v) == json_type_string
               ? json_object_get_string(v)
               : NULL;
}

static int boxes_overlap(int ndim, const Dsv3H5Source *a, const Dsv3H5Source *b) {
    for (int d = 0; d < ndim; d++)
        if (a->start[d] + a->count[d] <= b->start[d] || b->start[d] + b->count[d] <= a->start[d])
            return 0;
    return 1;
}

// Every element of the dataset comes from exactly one source.
static Dsv3Err check_cover(const Entry *e) {
    int64_t total = 1, covered = 0;
    for (int d = 0; d < e->ndim; d++)
        total *= e->shape[d];
    for (int i = 0; i < e->n_sources; i++) {
        int64_t n = 1;
        for (int d = 0; d < e->ndim; d++) {
            DSV3_CHECK(e->sources[i].start[d] >= 0 &&
                           e->sources[i].start[d] + e->sources[i].count[d] <= e->shape[d],
                       DSV3_ERR_INTERNAL,
                       "checkpoint: a slice of %s from %s lies outside its shape", e->name,
                       e->sources[i].file);
            n *= e->sources[i].count[d];
        }
        covered += n;
        for (int j = 0; j < i; j++)
            DSV3_CHECK(!boxes_overlap(e->ndim, &e->sources[i], &e->sources[j]), DSV3_ERR_INTERNAL,
                       "checkpoint: %s is written twice (by %s and %s)", e->name,
                       e->sources[j].file, e->sources[i].file);
    }
    DSV3_CHECK(covered == total, DSV3_ERR_INTERNAL,
               "checkpoint: the ranks wrote %" PRId64 " of the %" PRId64 " elements of %s", covered,
               total, e->name);
    return DSV3_OK;
}

static Dsv3Err add_source(Entry **entries, int64_t *n, int64_t *capacity, json_object *d) {
    const char *index = get_str(d, "index"), *name = get_str(d, "name"),
               *dtype = get_str(d, "dtype"), *file = get_str(d, "file");
    DSV3_CHECK(index && name && dtype && file, DSV3_ERR_INTERNAL,
               "shard description: a dataset lacks a field");
    Entry *e = NULL;
    for (int64_t i = 0; i < *n && !e; i++)
        if (strcmp((*entries)[i].index, index) == 0 && strcmp((*entries)[i].name, name) == 0)
            e = &(*entries)[i];
    if (!e) {
        if (*n == *capacity) {
            Entry *grown = NULL;
            int64_t cap = *capacity ? 2 * *capacity : 64;
            DSV3_CALL(dsv3_calloc((void **)&grown, (size_t)cap, sizeof *grown,
                                  "checkpoint index entries"));
            if (*n) memcpy(grown, *entries, (size_t)*n * sizeof *grown);
            dsv3_free(*entries);
            *entries = grown, *capacity = cap;
        }
        e = &(*entries)[(*n)++];
        e->index = index, e->name = name, e->dtype = dtype;
        DSV3_CALL(read_ints(d, "shape", &e->ndim, e->shape));
    }
    DSV3_CHECK(e->n_sources < MAX_SOURCES_PER_DATASET, DSV3_ERR_INTERNAL,
               "checkpoint: too many slices of %s", name);
    Dsv3H5Source *grown = NULL;
    DSV3_CALL(dsv3_alloc((void **)&grown, (size_t)(e->n_sources + 1) * sizeof *grown,
                         "checkpoint slices"));
    if (e->n_sources) memcpy(grown, e->sources, (size_t)e->n_sources * sizeof *grown);
    dsv3_free(e->sources);
    e->sources = grown;
    Dsv3H5Source *s = &e->sources[e->n_sources++];
    memset(s, 0, sizeof *s);
    s->file = file, s->name = name;
    int n_start = 0, n_count = 0;
    DSV3_CALL(read_ints(d, "start", &n_start, s->start));
    DSV3_CALL(read_ints(d, "count", &n_count, s->count));
    DSV3_CHECK(n_start == e->ndim && n_count == e->ndim, DSV3_ERR_INTERNAL,
               "checkpoint: slice rank of %s", name);
    return DSV3_OK;
}

static Dsv3Err write_index(const char *dir, const char *index, const Entry *entries, int64_t n,
                           int64_t step, Dsv3Manifest *manifest) {
    char path[DSV3_CKPT_PATH_CAPACITY];
    snprintf(path, sizeof path, "%s/%s", dir, index);
    hid_t file = -1;
    DSV3_CALL(dsv3_h5_create(&file, path));
    Dsv3Err err = dsv3_h5_attr_write_int(file, path, "format_version", DSV3_CKPT_FORMAT_VERSION);
    if (err == DSV3_OK) err = dsv3_h5_attr_write_int(file, path, "step", step);
    for (int64_t i = 0; i < n && err == DSV3_OK; i++) {
        if (strcmp(entries[i].index, index) != 0) continue;
        Dsv3Dtype dtype = DSV3_DTYPE_F32;
        err = dsv3_dtype_parse(entries[i].dtype, &dtype);
        if (err == DSV3_OK) err = check_cover(&entries[i]);
        if (err == DSV3_OK)
            err =
                dsv3_h5_virtual_create(file, path, entries[i].name, dtype, entries[i].ndim,
                                       entries[i].shape, entries[i].sources, entries[i].n_sources);
    }
    Dsv3Err closed = dsv3_h5_close(file, path, 1);
    if (err == DSV3_OK) err = closed;
    if (err != DSV3_OK) return dsv3_error_trace(err, __FILE__, __LINE__, __func__);
    Dsv3ManifestFile entry;
    DSV3_CALL(dsv3_manifest_describe(dir, index, &entry));
    return dsv3_manifest_add(manifest, &entry);
}

Dsv3Err dsv3_ckpt_store_index(const char *dir, char *const *descriptions, int64_t n, int64_t step,
                              Dsv3Manifest *manifest) {
    json_object **roots = NULL;
    Entry *entries = NULL;
    int64_t n_entries = 0, capacity = 0;
    int any_optimizer = 0;
    Dsv3Err err =
        dsv3_calloc((void **)&roots, (size_t)(n ? n : 1), sizeof *roots, "shard descriptions");
    for (int64_t r = 0; r < n && err == DSV3_OK; r++) {
        roots[r] = json_tokener_parse(descriptions[r]);
        json_object *files = NULL, *datasets = NULL;
        if (!roots[r] || !json_object_object_get_ex(roots[r], "files", &files) ||
            !json_object_object_get_ex(roots[r], "datasets", &datasets)) {
            err = dsv3_error_raise(
                DSV3_ERR_INTERNAL, __FILE__, __LINE__, __func__,
                "checkpoint: the shard description of rank %" PRId64 " does not parse", r);
            break;
        }
        for (size_t i = 0; i < json_object_array_length(files) && err == DSV3_OK; i++) {
            json_object *f = json_object_array_get_idx(files, i), *v = NULL;
            Dsv3ManifestFile entry = {0};
            snprintf(entry.path, sizeof entry.path, "%s",
                     get_str(f, "path") ? get_str(f, "path") : "");
            if (json_object_object_get_ex(f, "bytes", &v)) entry.bytes = json_object_get_int64(v);
            if (json_object_object_get_ex(f, "crc32", &v))
                entry.crc32 = (uint32_t)json_object_get_int64(v);
            err = dsv3_manifest_add(manifest, &entry);
        }
        for (size_t i = 0; i < json_object_array_length(datasets) && err == DSV3_OK; i++) {
            json_object *d = json_object_array_get_idx(datasets, i);
            err = add_source(&entries, &n_entries, &capacity, d);
            const char *index = get_str(d, "index");
            any_optimizer |= index && strcmp(index, DSV3_CKPT_OPTIMIZER_FILE) == 0;
        }
    }
    if (err == DSV3_OK)
        err = write_index(dir, DSV3_CKPT_MODEL_FILE, entries, n_entries, step, manifest);
    if (err == DSV3_OK && any_optimizer)
        err = write_index(dir, DSV3_CKPT_OPTIMIZER_FILE, entries, n_entries, step, manifest);
    for (int64_t i = 0; i < n_entries; i++)
        dsv3_free(entries[i].sources);
    dsv3_free(entries);
    for (int64_t r = 0; r < n && roots; r++)
        if (roots[r]) json_object_put(roots[r]);
    dsv3_free(roots);
    return err;
}

// ---- reading ----

typedef struct {
    const Dsv3CkptTensors *t;
    Kind kind;
    const char *path;
} Extra;

// A dataset of the file that the model does not have is an error (e.g. a deeper model).
static Dsv3Err check_known(const char *name, void *arg) {
    const Extra *x = arg;
    const char *fqn = name;
    if (x->kind != KIND_MODEL) {
        const char *slash = strchr(name, '/');
        DSV3_CHECK(
            slash &&
                (strncmp(name, DSV3_CKPT_EXP_AVG "/", strlen(DSV3_CKPT_EXP_AVG) + 1) == 0 ||
                 strncmp(name, DSV3_CKPT_EXP_AVG_SQ "/", strlen(DSV3_CKPT_EXP_AVG_SQ) + 1) == 0),
            DSV3_ERR_USAGE, "%s holds dataset %s, which is not AdamW state", x->path, name);
        fqn = slash + 1;
    }
    const Dsv3CkptTensor *t = dsv3_ckpt_tensors_find(x->t, fqn);
    DSV3_CHECK(t && !(x->kind != KIND_MODEL && t->is_bias), DSV3_ERR_USAGE,
               "%s holds dataset %s, which this model does not have: the checkpoint was written "
               "for another "
               "model (check [model] / model.flavor against the checkpoint's config.toml)",
               x->path, name);
    return DSV3_OK;
}

static Dsv3Err read_file(const char *dir, const Dsv3CkptTensors *t, Kind first, Kind last) {
    char path[DSV3_CKPT_PATH_CAPACITY];
    snprintf(path, sizeof path, "%s/%s", dir, index_file(first));
    hid_t file = -1;
    DSV3_CALL(dsv3_h5_open(&file, path));
    Dsv3Err err = DSV3_OK;
    for (int64_t i = 0; i < t->count && err == DSV3_OK; i++) {
        const Dsv3CkptTensor *x = &t->items[i];
        for (Kind k = first; k <= last && err == DSV3_OK; k++) {
            if (k != KIND_MODEL && x->is_bias) continue;
            char name[DSV3_FQN_CAPACITY + 16];
            dataset_name(name, sizeof name, k, x->fqn);
            hid_t dset = -1;
            err = dsv3_h5_dataset_open(&dset, file, path, name, x->ndim, x->shape,
                                       k != KIND_MODEL || x->is_bias);
            if (err == DSV3_OK && dsv3_box_numel(&x->box, x->ndim) > 0)
                err = dsv3_h5_read_box(dset, path, name, x->ndim, x->box.start, x->box.count,
                                       (float *)kind_data(x, k));
            if (dset >= 0) H5Dclose(dset);
        }
    }
    Extra extra = {.t = t, .kind = first, .path = path};
    if (err == DSV3_OK) err = dsv3_h5_list(file, path, check_known, &extra);
    Dsv3Err closed = dsv3_h5_close(file, path, 0);
    if (err == DSV3_OK) err = closed;
    if (err != DSV3_OK) return dsv3_error_trace(err, __FILE__, __LINE__, __func__);
    return DSV3_OK;
}

Dsv3Err dsv3_ckpt_store_read(const char *dir, const Dsv3CkptTensors *t, int with_optimizer) {
    DSV3_CALL(read_file(dir, t, KIND_MODEL, KIND_MODEL));
    if (with_optimizer) DSV3_CALL(read_file(dir, t, KIND_EXP_AVG, KIND_EXP_AVG_SQ));
    return DSV3_OK;
}
