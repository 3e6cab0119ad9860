// safetensors: the header parser (json-c), ranged reads, and the streaming writer.
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/core/alloc.h"

// Nesting accepted in a header: tensor entries sit at depth 3 ({name: {"shape": [..]}}).
enum { HEADER_MAX_DEPTH = 8 };
// The header is padded with spaces to a multiple of this, as the Python package writes it.
enum { HEADER_ALIGN = 8 };
// Bytes converted to float32 at a time by read_f32 (bounds its scratch buffer).
enum { CONVERT_CHUNK_BYTES = 1 << 20 };

static const char METADATA_KEY[] = "__metadata__";

struct Dsv3Safetensors {
    char *source;
    int fd;                // -1 for memory
    const uint8_t *memory; // the whole file, for memory-backed ones
    uint64_t data_start;   // 8 + header length
    uint64_t data_size;
    size_t count;
    Dsv3SafetensorsTensor *tensors;
    json_object *metadata; // the "__metadata__" object (owned by `header`), or NULL
    json_object *header;
};

static uint64_t read_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void write_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static int compare_begin(const void *a, const void *b) {
    const Dsv3SafetensorsTensor *x = *(Dsv3SafetensorsTensor *const *)a,
                                *y = *(Dsv3SafetensorsTensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

// A non-negative JSON integer, or -1.
static int64_t json_count(json_object *v) {
    if (!v || json_object_get_type(v) != json_type_int) return -1;
    int64_t n = json_object_get_int64(v);
    return n < 0 || n == INT64_MAX ? -1 : n;
}

static Dsv3Err parse_entry(Dsv3Safetensors *f, const char *name, json_object *entry,
                           Dsv3SafetensorsTensor *t) {
    const char *src = f->source;
    DSV3_CHECK(json_object_get_type(entry) == json_type_object, DSV3_ERR_USAGE,
               "%s: header entry \"%.128s\" is not an object with dtype, shape and data_offsets",
               src, name);
    json_object *dtype = NULL, *shape = NULL, *offsets = NULL;
    json_object_object_get_ex(entry, "dtype", &dtype);
    json_object_object_get_ex(entry, "shape", &shape);
    json_object_object_get_ex(entry, "data_offsets", &offsets);
    DSV3_CHECK(dtype && json_object_get_type(dtype) == json_type_string, DSV3_ERR_USAGE,
               "%s: tensor \"%.128s\" has no string \"dtype\"", src, name);
    if (dsv3_dtype_parse(json_object_get_string(dtype), &t->dtype) != DSV3_OK) {
        char reason[256];
        snprintf(reason, sizeof reason, "%s", dsv3_error_message());
        DSV3_RAISE(DSV3_ERR_USAGE, "%s: tensor \"%.128s\": %s", src, name, reason);
    }
    DSV3_CHECK(shape && json_object_get_type(shape) == json_type_array, DSV3_ERR_USAGE,
               "%s: tensor \"%.128s\" has no \"shape\" array", src, name);
    size_t ndim = json_object_array_length(shape);
    DSV3_CHECK(ndim <= DSV3_SAFETENSORS_MAX_DIMS, DSV3_ERR_USAGE,
               "%s: tensor \"%.128s\" has %zu dimensions; at most %d are supported", src, name,
               ndim, DSV3_SAFETENSORS_MAX_DIMS);
    t->ndim = (int)ndim;
    uint64_t numel = 1;
    int overflow = 0;
    for (size_t d = 0; d < ndim; d++) {
        int64_t n = json_count(json_object_array_get_idx(shape, d));
        DSV3_CHECK(n >= 0, DSV3_ERR_USAGE,
                   "%s: tensor \"%.128s\": shape[%zu] is not a non-negative integer", src, name, d);
        t->shape[d] = n;
        if (n && numel > UINT64_MAX / (uint64_t)n)
            overflow = 1;
        else
            numel *= (uint64_t)n;
    }
    DSV3_CHECK(offsets && json_object_get_type(offsets) == json_type_array &&
                   json_object_array_length(offsets) == 2,
               DSV3_ERR_USAGE, "%s: tensor \"%.128s\" has no \"data_offsets\" pair [begin, end]",
               src, name);
    int64_t begin = json_count(json_object_array_get_idx(offsets, 0));
    int64_t end = json_count(json_object_array_get_idx(offsets, 1));
    DSV3_CHECK(begin >= 0 && end >= begin, DSV3_ERR_USAGE,
               "%s: tensor \"%.128s\": data_offsets must be integers with 0 <= begin <= end", src,
               name);
    DSV3_CHECK((uint64_t)end <= f->data_size, DSV3_ERR_USAGE,
               "%s: tensor \"%.128s\": data_offsets [%" PRId64 ", %" PRId64
               ") reach outside the %" PRIu64 " bytes of data",
               src, name, begin, end, f->data_size);
    uint64_t size = dsv3_dtype_size(t->dtype);
    DSV3_CHECK(!overflow && numel <= UINT64_MAX / size && numel * size == (uint64_t)(end - begin),
               DSV3_ERR_USAGE,
               "%s: tensor \"%.128s\": shape and dtype %s give %s%" PRIu64
               " bytes but data_offsets span %" PRId64,
               src, name, dsv3_dtype_name(t->dtype), overflow ? "more than " : "",
               overflow ? UINT64_MAX : numel * size, end - begin);
    t->numel = (int64_t)numel;
    t->begin = (uint64_t)begin, t->end = (uint64_t)end;
    return dsv3_strdup(&t->name, name, "safetensors tensor name");
}

// Every byte of the data belongs to exactly one tensor.
static Dsv3Err check_coverage(Dsv3Safetensors *f) {
    if (f->count == 0) {
        DSV3_CHECK(f->data_size == 0, DSV3_ERR_USAGE,
                   "%s: no tensors, but %" PRIu64 " bytes of data", f->source, f->data_size);
        return DSV3_OK;
    }
    Dsv3SafetensorsTensor **order = NULL;
    DSV3_CALL(dsv3_calloc((void **)&order, f->count, sizeof *order, "safetensors order"));
    for (size_t i = 0; i < f->count; i++)
        order[i] = &f->tensors[i];
    qsort(order, f->count, sizeof *order, compare_begin);
    uint64_t next = 0;
    Dsv3Err err = DSV3_OK;
    for (size_t i = 0; i < f->count && err == DSV3_OK; i++) {
        const Dsv3SafetensorsTensor *t = order[i];
        if (t->begin < next)
            err = dsv3_error_raise(DSV3_ERR_USAGE, __FILE__, __LINE__, __func__,
                                   "%s: tensor \"%.128s\" [%" PRIu64 ", %" PRIu64
                                   ") overlaps \"%.128s\"",
                                   f->source, t->name, t->begin, t->end, order[i - 1]->name);
        else if (t->begin > next)
            err = dsv3_error_raise(DSV3_ERR_USAGE, __FILE__, __LINE__, __func__,
                                   "%s: data bytes [%" PRIu64 ", %" PRIu64 ") belong to no tensor",
                                   f->source, next, t->begin);
        next = t->end;
    }
    if (err == DSV3_OK && next != f->data_size)
        err = dsv3_error_raise(DSV3_ERR_USAGE, __FILE__, __LINE__, __func__,
                               "%s: data bytes [%" PRIu64 ", %" PRIu64 ") belong to no tensor",
                               f->source, next, f->data_size);
    dsv3_free(order);
    return err;
}

static Dsv3Err parse_header(Dsv3Safetensors *f, const char *text, size_t length) {
    const char *src = f->source;
    for (size_t i = 0; i < length; i++)
        DSV3_CHECK(text[i] != '\0', DSV3_ERR_USAGE, "%s: the header holds a NUL byte at offset %zu",
                   src, i);
    json_tokener *tok = json_tokener_new_ex(HEADER_MAX_DEPTH);
    DSV3_CHECK(tok, DSV3_ERR_MEMORY, "%s: cannot allocate a JSON parser", src);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    f->header = json_tokener_parse_ex(tok, text, (int)length);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    DSV3_CHECK(f->header && jerr == json_tokener_success, DSV3_ERR_USAGE,
               "%s: the %zu-byte header is not valid JSON (%s)", src, length,
               jerr == json_tokener_continue ? "it ends early" : json_tokener_error_desc(jerr));
    for (size_t i = end; i < length; i++)
        DSV3_CHECK(text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r',
                   DSV3_ERR_USAGE, "%s: the header has bytes after its JSON object (offset %zu)",
                   src, i);
    DSV3_CHECK(json_object_get_type(f->header) == json_type_object, DSV3_ERR_USAGE,
               "%s: the header is JSON but not an object of tensors", src);
    size_t entries = (size_t)json_object_object_length(f->header);
    DSV3_CALL(dsv3_calloc((void **)&f->tensors, entries ? entries : 1, sizeof *f->tensors,
                          "safetensors tensors"));
    struct json_object_iterator it = json_object_iter_begin(f->header),
                                stop = json_object_iter_end(f->header);
    for (; !json_object_iter_equal(&it, &stop); json_object_iter_next(&it)) {
        const char *name = json_object_iter_peek_name(&it);
        json_object *value = json_object_iter_peek_value(&it);
        if (strcmp(name, METADATA_KEY) == 0) {
            DSV3_CHECK(json_object_get_type(value) == json_type_object, DSV3_ERR_USAGE,
                       "%s: \"__metadata__\" is not an object of strings", src);
            f->metadata = value;
            continue;
        }
        DSV3_CALL(parse_entry(f, name, value, &f->tensors[f->count]));
        f->count++;
    }
    return check_coverage(f);
}

// Parses the header of a file of `file_size` bytes whose first bytes are `prefix`, reading the
// header through `read_header`.
static Dsv3Err open_common(Dsv3Safetensors *f, uint64_t file_size, const uint8_t *prefix) {
    DSV3_CHECK(file_size >= DSV3_SAFETENSORS_PREFIX_BYTES, DSV3_ERR_USAGE,
               "%s: %" PRIu64
               " bytes is too short for a safetensors file (8-byte header length first)",
               f->source, file_size);
    uint64_t length = read_le64(prefix);
    DSV3_CHECK(length <= DSV3_SAFETENSORS_MAX_HEADER, DSV3_ERR_USAGE,
               "%s: header length %" PRIu64 " is above the 100 MB limit (not a safetensors file?)",
               f->source, length);
    DSV3_CHECK(length <= file_size - DSV3_SAFETENSORS_PREFIX_BYTES, DSV3_ERR_USAGE,
               "%s: header length %" PRIu64 " is beyond the end of the %" PRIu64
               "-byte file (truncated?)",
               f->source, length, file_size);
    f->data_start = DSV3_SAFETENSORS_PREFIX_BYTES + length;
    f->data_size = file_size - f->data_start;
    char *text = NULL;
    DSV3_CALL(dsv3_alloc((void **)&text, length + 1, "safetensors header"));
    Dsv3Err err = DSV3_OK;
    if (f->memory) {
        memcpy(text, f->memory + DSV3_SAFETENSORS_PREFIX_BYTES, length);
    } else {
        ssize_t got = pread(f->fd, text, length, DSV3_SAFETENSORS_PREFIX_BYTES);
        if (got != (ssize_t)length)
            err = dsv3_error_raise(DSV3_ERR_IO, __FILE__, __LINE__, __func__,
                                   "%s: cannot read the header: %s", f->source,
                                   got < 0 ? strerror(errno) : "short read");
    }
    text[length] = '\0';
    if (err == DSV3_OK) err = parse_header(f, text, length);
    dsv3_free(text);
    return err;
}

static Dsv3Err new_file(Dsv3Safetensors **out, const char *source) {
    DSV3_CALL(dsv3_calloc((void **)out, 1, sizeof **out, "safetensors file"));
    (*out)->fd = -1;
    return dsv3_strdup(&(*out)->source, source, "safetensors path");
}

Dsv3Err dsv3_safetensors_open(Dsv3Safetensors **out, const char *path) {
    *out = NULL;
    Dsv3Safetensors *f = NULL;
    DSV3_CALL(new_file(&f, path));
    Dsv3Err err = DSV3_OK;
    struct stat st;
    uint8_t prefix[DSV3_SAFETENSORS_PREFIX_BYTES] = {0};
    f->fd = open(path, O_RDONLY);
    DSV3_CHECK_GOTO(err, fail, f->fd >= 0, DSV3_ERR_IO, "cannot open safetensors file %s: %s", path,
                    strerror(errno));
    DSV3_CHECK_GOTO(err, fail, fstat(f->fd, &st) == 0 && S_ISREG(st.st_mode), DSV3_ERR_IO,
                    "%s is not a regular file", path);
    if ((uint64_t)st.st_size >= sizeof prefix)
        DSV3_CHECK_GOTO(err, fail, pread(f->fd, prefix, sizeof prefix, 0) == (ssize_t)sizeof prefix,
                        DSV3_ERR_IO, "cannot read %s: %s", path, strerror(errno));
    DSV3_CALL_GOTO(err, fail, open_common(f, (uint64_t)st.st_size, prefix));
    *out = f;
    return DSV3_OK;
fail:
    dsv3_safetensors_close(f);
    return err;
}

Dsv3Err dsv3_safetensors_open_memory(Dsv3Safetensors **out, const void *data, size_t size,
                                     const char *source) {
    *out = NULL;
    Dsv3Safetensors *f = NULL;
    DSV3_CALL(new_file(&f, source));
    f->memory = data;
    uint8_t prefix[DSV3_SAFETENSORS_PREFIX_BYTES] = {0};
    if (size >= sizeof prefix) memcpy(prefix, data, sizeof prefix);
    Dsv3Err err = open_common(f, size, prefix);
    if (err != DSV3_OK) {
        dsv3_safetensors_close(f);
        return dsv3_error_trace(err, __FILE__, __LINE__, __func__);
    }
    *out = f;
    return DSV3_OK;
}

void dsv3_safetensors_close(Dsv3Safetensors *f) {
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    for (size_t i = 0; i < f->count; i++)
        dsv3_free(f->tensors[i].name);
    dsv3_free(f->tensors);
    if (f->header) json_object_put(f->header);
    dsv3_free(f->source);
    dsv3_free(f);
}

const Dsv3SafetensorsTensor *dsv3_safetensors_tensors(const Dsv3Safetensors *f, size_t *count) {
    *count = f->count;
    return f->tensors;
}

const Dsv3SafetensorsTensor *dsv3_safetensors_find(const Dsv3Safetensors *f, const char *name) {
    for (size_t i = 0; i < f->count; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *dsv3_safetensors_metadata(const Dsv3Safetensors *f, const char *key) {
    json_object *v = NULL;
    if (!f->metadata || !json_object_object_get_ex(f->metadata, key, &v)) return NULL;
    return json_object_get_type(v) == json_type_string ? json_object_get_string(v) : NULL;
}

const char *dsv3_safetensors_source(const Dsv3Safetensors *f) { return f->source; }

Dsv3Err dsv3_safetensors_read(const Dsv3Safetensors *f, const Dsv3SafetensorsTensor *t, void *dst,
                              uint64_t offset, uint64_t bytes) {
    uint64_t size = t->end - t->begin;
    DSV3_CHECK(offset <= size && bytes <= size - offset, DSV3_ERR_USAGE,
               "%s: tensor \"%s\": bytes [%" PRIu64 ", %" PRIu64 ") asked of %" PRIu64, f->source,
               t->name, offset, offset + bytes, size);
    uint64_t at = f->data_start + t->begin + offset;
    if (f->memory) {
        memcpy(dst, f->memory + at, bytes);
        return DSV3_OK;
    }
    uint8_t *p = dst;
    while (bytes > 0) {
        ssize_t got = pread(f->fd, p, bytes, (off_t)at);
        if (got < 0 && errno == EINTR) continue;
        DSV3_CHECK(got > 0, DSV3_ERR_IO, "%s: cannot read tensor \"%s\": %s", f->source, t->name,
                   got < 0 ? strerror(errno)
                           : "the file is shorter than its header says (truncated?)");
        p += got, at += (uint64_t)got, bytes -= (uint64_t)got;
    }
    return DSV3_OK;
}

Dsv3Err dsv3_safetensors_read_f32(const Dsv3Safetensors *f, const Dsv3SafetensorsTensor *t,
                                  float *dst, int64_t first, int64_t n) {
    DSV3_CHECK(dsv3_dtype_converts_to_f32(t->dtype), DSV3_ERR_USAGE,
               "%s: tensor \"%s\" is %s, not a floating type that converts to float32", f->source,
               t->name, dsv3_dtype_name(t->dtype));
    DSV3_CHECK(first >= 0 && n >= 0 && first <= t->numel && n <= t->numel - first, DSV3_ERR_USAGE,
               "%s: tensor \"%s\": elements [%" PRId64 ", %" PRId64 ") asked of %" PRId64,
               f->source, t->name, first, first + n, t->numel);
    size_t size = dsv3_dtype_size(t->dtype);
    if (t->dtype == DSV3_DTYPE_F32)
        return dsv3_safetensors_read(f, t, dst, (uint64_t)first * size, (uint64_t)n * size);
    int64_t per_chunk = CONVERT_CHUNK_BYTES / (int64_t)size;
    void *raw = NULL;
    DSV3_CALL(dsv3_alloc(&raw, CONVERT_CHUNK_BYTES, "safetensors conversion buffer"));
    Dsv3Err err = DSV3_OK;
    for (int64_t i = 0; i < n && err == DSV3_OK; i += per_chunk) {
        int64_t m = n - i < per_chunk ? n - i : per_chunk;
        err = dsv3_safetensors_read(f, t, raw, (uint64_t)(first + i) * size, (uint64_t)m * size);
        if (err == DSV3_OK) err = dsv3_dtype_to_f32(dst + i, raw, m, t->dtype);
    }
    dsv3_free(raw);
    if (err != DSV3_OK) return dsv3_error_trace(err, __FILE__, __LINE__, __func__);
    return DSV3_OK;
}

// ---- writer ----

struct Dsv3SafetensorsWriter {
    char *path;
    FILE *file;
    uint64_t total, written; // data bytes expected and written so far
};

static Dsv3Err build_header(const Dsv3SafetensorsSpec *specs, size_t count, char **out,
                            uint64_t *data_bytes) {
    json_object *root = json_object_new_object(), *meta = json_object_new_object();
    DSV3_CHECK(root && meta, DSV3_ERR_MEMORY, "cannot allocate a safetensors header");
    json_object_object_add(meta, "format", json_object_new_string("pt"));
    json_object_object_add(root, METADATA_KEY, meta);
    uint64_t offset = 0;
    for (size_t i = 0; i < count; i++) {
        const Dsv3SafetensorsSpec *s = &specs[i];
        json_object *entry = json_object_new_object(), *shape = json_object_new_array();
        uint64_t bytes = dsv3_dtype_size(s->dtype);
        for (int d = 0; d < s->ndim; d++) {
            json_object_array_add(shape, json_object_new_int64(s->shape[d]));
            bytes *= (uint64_t)s->shape[d];
        }
        json_object *offsets = json_object_new_array();
        json_object_array_add(offsets, json_object_new_int64((int64_t)offset));
        json_object_array_add(offsets, json_object_new_int64((int64_t)(offset + bytes)));
        json_object_object_add(entry, "dtype", json_object_new_string(dsv3_dtype_name(s->dtype)));
        json_object_object_add(entry, "shape", shape);
        json_object_object_add(entry, "data_offsets", offsets);
        json_object_object_add(root, s->name, entry);
        offset += bytes;
    }
    Dsv3Err err = dsv3_strdup(out, json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN),
                              "safetensors header");
    json_object_put(root);
    *data_bytes = offset;
    return err;
}

Dsv3Err dsv3_safetensors_writer_open(Dsv3SafetensorsWriter **out, const char *path,
                                     const Dsv3SafetensorsSpec *specs, size_t count) {
    *out = NULL;
    for (size_t i = 0; i < count; i++)
        DSV3_CHECK(specs[i].ndim >= 0 && specs[i].ndim <= DSV3_SAFETENSORS_MAX_DIMS &&
                       specs[i].dtype < DSV3_DTYPE_COUNT,
                   DSV3_ERR_USAGE, "safetensors tensor \"%s\": bad rank or dtype", specs[i].name);
    Dsv3SafetensorsWriter *w = NULL;
    char *header = NULL;
    Dsv3Err err = DSV3_OK;
    DSV3_CALL(dsv3_calloc((void **)&w, 1, sizeof *w, "safetensors writer"));
    DSV3_CALL_GOTO(err, fail, dsv3_strdup(&w->path, path, "safetensors path"));
    DSV3_CALL_GOTO(err, fail, build_header(specs, count, &header, &w->total));
    w->file = fopen(path, "wb");
    DSV3_CHECK_GOTO(err, fail, w->file, DSV3_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    size_t length = strlen(header),
           padded = (length + HEADER_ALIGN - 1) / HEADER_ALIGN * HEADER_ALIGN;
    uint8_t prefix[DSV3_SAFETENSORS_PREFIX_BYTES];
    write_le64(prefix, padded);
    int ok = fwrite(prefix, 1, sizeof prefix, w->file) == sizeof prefix &&
             fwrite(header, 1, length, w->file) == length;
    for (size_t i = length; i < padded && ok; i++)
        ok = fputc(' ', w->file) != EOF;
    DSV3_CHECK_GOTO(err, fail, ok, DSV3_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    dsv3_free(header);
    *out = w;
    return DSV3_OK;
fail:
    dsv3_free(header);
    dsv3_safetensors_writer_abandon(w);
    return err;
}

Dsv3Err dsv3_safetensors_writer_append(Dsv3SafetensorsWriter *w, const void *data, size_t bytes) {
    DSV3_CHECK(bytes <= w->total - w->written, DSV3_ERR_USAGE,
               "%s: %zu more bytes than the header describes", w->path,
               bytes - (size_t)(w->total - w->written));
    DSV3_CHECK(fwrite(data, 1, bytes, w->file) == bytes, DSV3_ERR_IO, "cannot write %s: %s",
               w->path, strerror(errno));
    w->written += bytes;
    return DSV3_OK;
}

Dsv3Err dsv3_safetensors_writer_close(Dsv3SafetensorsWriter *w) {
    if (!w) return DSV3_OK;
    Dsv3Err err = DSV3_OK;
    DSV3_CHECK_GOTO(err, fail, w->written == w->total, DSV3_ERR_USAGE,
                    "%s: %" PRIu64 " of %" PRIu64 " data bytes written", w->path, w->written,
                    w->total);
    DSV3_CHECK_GOTO(err, fail, fflush(w->file) == 0 && fsync(fileno(w->file)) == 0, DSV3_ERR_IO,
                    "cannot flush %s: %s", w->path, strerror(errno));
    int closed = fclose(w->file);
    w->file = NULL;
    DSV3_CHECK_GOTO(err, fail, closed == 0, DSV3_ERR_IO, "cannot close %s: %s", w->path,
                    strerror(errno));
    dsv3_free(w->path);
    dsv3_free(w);
    return DSV3_OK;
fail:
    dsv3_safetensors_writer_abandon(w);
    return err;
}

void dsv3_safetensors_writer_abandon(Dsv3SafetensorsWriter *w) {
    if (!w) return;
    if (w->file) {
        fclose(w->file);
        remove(w->path);
    }
    dsv3_free(w->path);
    dsv3_free(w);
}
