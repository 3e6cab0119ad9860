// h5: checked HDF5 calls for checkpoint files.
#include "h5.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/core/alloc.h"

enum {
    H5_MESSAGE_CAPACITY = 256,
    H5_TEXT_CAPACITY = 2 * H5_MESSAGE_CAPACITY + 8,
    SHAPE_TEXT_CAPACITY = 96
};
// Elements converted at a time when a box is written in F16/BF16 (bounds the scratch buffer).
enum { CONVERT_CHUNK = 1 << 20 };

// HDF5's error stack, for our own error text: the API call's message and the innermost one,
// which holds the operating system's reason (errno and its text) when there is one.
typedef struct {
    char api[H5_MESSAGE_CAPACITY];
    char cause[H5_MESSAGE_CAPACITY];
} H5Messages;

static herr_t collect_message(unsigned n, const H5E_error2_t *e, void *arg) {
    H5Messages *m = arg;
    const char *desc = e->desc ? e->desc : "?";
    if (n == 0) {
        snprintf(m->api, sizeof m->api, "%s (in %s)", desc, e->func_name ? e->func_name : "?");
        return 0;
    }
    // A failed system call reads "…, errno = 28, error message = 'No space left on device', …"
    // over several lines: keep the reason; otherwise the first line.
    static const char key[] = "error message = '";
    const char *reason = strstr(desc, key);
    if (reason) {
        reason += sizeof key - 1;
        const char *end = strchr(reason, '\'');
        snprintf(m->cause, sizeof m->cause, "%.*s", (int)(end ? end - reason : 64), reason);
    } else {
        snprintf(m->cause, sizeof m->cause, "%.*s", (int)strcspn(desc, "\n"), desc);
    }
    return 0;
}

static const char *h5_message(char buf[H5_TEXT_CAPACITY]) {
    H5Messages m = {.api = "no HDF5 message", .cause = ""};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect_message, &m);
    H5Eclear2(H5E_DEFAULT);
    snprintf(buf, H5_TEXT_CAPACITY, "%s%s%s", m.api, m.cause[0] ? ": " : "", m.cause);
    return buf;
}

// Fails with HDF5's message when `cond` (an HDF5 result) is false.
#define H5_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            char h5_text_[H5_TEXT_CAPACITY], what_[512];                                           \
            snprintf(what_, sizeof what_, __VA_ARGS__);                                            \
            return dsv3_error_raise(DSV3_ERR_BACKEND, __FILE__, __LINE__, __func__, "%s: %s",      \
                                    what_, h5_message(h5_text_));                                  \
        }                                                                                          \
    } while (0)

static void quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

static const char *shape_text(int ndim, const int64_t *shape, char out[SHAPE_TEXT_CAPACITY]) {
    size_t n = (size_t)snprintf(out, SHAPE_TEXT_CAPACITY, "(");
    for (int d = 0; d < ndim && n < SHAPE_TEXT_CAPACITY; d++)
        n += (size_t)snprintf(out + n, SHAPE_TEXT_CAPACITY - n, d ? ", %" PRId64 : "%" PRId64,
                              shape[d]);
    if (n < SHAPE_TEXT_CAPACITY) snprintf(out + n, SHAPE_TEXT_CAPACITY - n, ")");
    return out;
}

// The file type of a dtype; the caller closes it with H5Tclose.
static hid_t file_type(Dsv3Dtype dtype) {
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    if (t < 0 || dtype == DSV3_DTYPE_F32) return t;
    // Bit fields (sign position, exponent position and size, mantissa position and size), bias.
    int bf16 = dtype == DSV3_DTYPE_BF16;
    size_t epos = bf16 ? 7 : 10, esize = bf16 ? 8 : 5, msize = bf16 ? 7 : 10,
           ebias = bf16 ? 127 : 15;
    if (H5Tset_fields(t, 15, epos, esize, 0, msize) < 0 || H5Tset_precision(t, 16) < 0 ||
        H5Tset_size(t, 2) < 0 || H5Tset_ebias(t, ebias) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

Dsv3Err dsv3_h5_create(hid_t *out, const char *path) {
    quiet();
    *out = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5_CHECK(*out >= 0, "cannot create HDF5 file %s", path);
    return DSV3_OK;
}

Dsv3Err dsv3_h5_open(hid_t *out, const char *path) {
    quiet();
    *out = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    H5_CHECK(*out >= 0, "cannot open HDF5 file %s (missing, truncated or not HDF5)", path);
    return DSV3_OK;
}

Dsv3Err dsv3_h5_close(hid_t file, const char *path, int sync) {
    H5_CHECK(H5Fclose(file) >= 0, "cannot close HDF5 file %s", path);
    if (!sync) return DSV3_OK;
    int fd = open(path, O_RDONLY);
    DSV3_CHECK(fd >= 0, DSV3_ERR_IO, "cannot reopen %s to flush it: %s", path, strerror(errno));
    int rc = fsync(fd);
    close(fd);
    DSV3_CHECK(rc == 0, DSV3_ERR_IO, "cannot flush %s to disk: %s", path, strerror(errno));
    return DSV3_OK;
}

// Dataset creation with intermediate groups ("exp_avg/<fqn>").
static hid_t link_plist(void) {
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    if (lcpl >= 0 && H5Pset_create_intermediate_group(lcpl, 1) < 0) {
        H5Pclose(lcpl);
        return -1;
    }
    return lcpl;
}

Dsv3Err dsv3_h5_dataset_create(hid_t *out, hid_t file, const char *path, const char *name,
                               Dsv3Dtype dtype, int ndim, const int64_t *shape) {
    DSV3_ASSERT(ndim >= 1 && ndim <= DSV3_H5_MAX_DIMS);
    hsize_t dims[DSV3_H5_MAX_DIMS];
    for (int d = 0; d < ndim; d++)
        dims[d] = (hsize_t)shape[d];
    hid_t space = H5Screate_simple(ndim, dims, NULL), type = file_type(dtype), lcpl = link_plist();
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    int ok = space >= 0 && type >= 0 && lcpl >= 0 && dcpl >= 0 &&
             H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) >= 0 &&
             H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_LATE) >= 0;
    *out = ok ? H5Dcreate2(file, name, type, space, lcpl, dcpl, H5P_DEFAULT) : -1;
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    if (lcpl >= 0) H5Pclose(lcpl);
    if (dcpl >= 0) H5Pclose(dcpl);
    H5_CHECK(*out >= 0, "%s: cannot create dataset %s", path, name);
    return DSV3_OK;
}

// File and memory dataspaces of a box.
static Dsv3Err box_spaces(hid_t dset, int ndim, const int64_t *start, const int64_t *count,
                          hid_t *file_space, hid_t *mem_space) {
    hsize_t s[DSV3_H5_MAX_DIMS], c[DSV3_H5_MAX_DIMS];
    for (int d = 0; d < ndim; d++)
        s[d] = (hsize_t)start[d], c[d] = (hsize_t)count[d];
    *file_space = H5Dget_space(dset);
    *mem_space = H5Screate_simple(ndim, c, NULL);
    if (*file_space < 0 || *mem_space < 0 ||
        H5Sselect_hyperslab(*file_space, H5S_SELECT_SET, s, NULL, c, NULL) < 0) {
        if (*file_space >= 0) H5Sclose(*file_space);
        if (*mem_space >= 0) H5Sclose(*mem_space);
        return DSV3_ERR_BACKEND;
    }
    return DSV3_OK;
}

Dsv3Err dsv3_h5_write_box(hid_t dset, const char *path, const char *name, Dsv3Dtype dtype, int ndim,
                          const int64_t *start, const int64_t *count, const float *data) {
    hid_t fs = -1, ms = -1;
    H5_CHECK(box_spaces(dset, ndim, start, count, &fs, &ms) == DSV3_OK,
             "%s: cannot select a box of %s", path, name);
    herr_t rc;
    if (dtype == DSV3_DTYPE_F32) {
        rc = H5Dwrite(dset, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, data);
    } else {
        // Our own rounding (nearest even) to 16 bits, written as the file type itself.
        int64_t n = 1;
        for (int d = 0; d < ndim; d++)
            n *= count[d];
        uint16_t *half = NULL;
        Dsv3Err err =
            dsv3_alloc((void **)&half, (size_t)(n ? n : 1) * sizeof *half, "16-bit export buffer");
        hid_t type = err == DSV3_OK ? file_type(dtype) : -1;
        if (err == DSV3_OK) err = dsv3_dtype_from_f32(half, data, n, dtype);
        rc = err == DSV3_OK && type >= 0 ? H5Dwrite(dset, type, ms, fs, H5P_DEFAULT, half) : -1;
        if (type >= 0) H5Tclose(type);
        dsv3_free(half);
    }
    H5Sclose(fs);
    H5Sclose(ms);
    H5_CHECK(rc >= 0, "%s: cannot write dataset %s", path, name);
    return DSV3_OK;
}

Dsv3Err dsv3_h5_dataset_open(hid_t *out, hid_t file, const char *path, const char *name, int ndim,
                             const int64_t *shape, int f32_only) {
    char want[SHAPE_TEXT_CAPACITY], have[SHAPE_TEXT_CAPACITY];
    quiet();
    htri_t exists = H5Lexists(file, name, H5P_DEFAULT);
    if (exists > 0 && strchr(name, '/')) exists = H5Oexists_by_name(file, name, H5P_DEFAULT);
    DSV3_CHECK(exists > 0, DSV3_ERR_USAGE,
               "%s has no dataset %s %s: the checkpoint does not fit this model", path, name,
               shape_text(ndim, shape, want));
    H5Eclear2(H5E_DEFAULT);
    *out = H5Dopen2(file, name, H5P_DEFAULT);
    H5_CHECK(*out >= 0, "%s: cannot open dataset %s", path, name);
    hid_t space = H5Dget_space(*out), type = H5Dget_type(*out);
    int rank = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    hsize_t dims[DSV3_H5_MAX_DIMS + 1] = {0};
    int64_t got[DSV3_H5_MAX_DIMS + 1] = {0};
    if (rank >= 0 && rank <= DSV3_H5_MAX_DIMS) H5Sget_simple_extent_dims(space, dims, NULL);
    for (int d = 0; d < rank && d <= DSV3_H5_MAX_DIMS; d++)
        got[d] = (int64_t)dims[d];
    H5T_class_t cls = type >= 0 ? H5Tget_class(type) : H5T_NO_CLASS;
    size_t size = type >= 0 ? H5Tget_size(type) : 0;
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    int same = rank == ndim;
    for (int d = 0; d < ndim && same; d++)
        same = got[d] == shape[d];
    Dsv3Err err = DSV3_OK;
    if (!same)
        err = dsv3_error_raise(
            DSV3_ERR_USAGE, __FILE__, __LINE__, __func__,
            "%s: dataset %s has shape %s but the model's tensor is %s", path, name,
            rank > DSV3_H5_MAX_DIMS ? "(more than 3 dimensions)" : shape_text(rank, got, have),
            shape_text(ndim, shape, want));
    else if (cls != H5T_FLOAT || (size != 4 && size != 2) || (f32_only && size != 4))
        err = dsv3_error_raise(DSV3_ERR_USAGE, __FILE__, __LINE__, __func__,
                               "%s: dataset %s is stored as %s of %zu bytes, but %s is expected",
                               path, name, cls == H5T_FLOAT ? "a float" : "a non-float type", size,
                               f32_only ? "float32" : "float32, float16 or bfloat16");
    if (err != DSV3_OK) {
        H5Dclose(*out);
        *out = -1;
    }
    return err;
}

Dsv3Err dsv3_h5_read_box(hid_t dset, const char *path, const char *name, int ndim,
                         const int64_t *start, const int64_t *count, float *data) {
    hid_t fs = -1, ms = -1;
    H5_CHECK(box_spaces(dset, ndim, start, count, &fs, &ms) == DSV3_OK,
             "%s: cannot select a box of %s", path, name);
    herr_t rc = H5Dread(dset, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, data);
    H5Sclose(fs);
    H5Sclose(ms);
    H5_CHECK(rc >= 0, "%s: cannot read dataset %s (a source file missing or truncated?)", path,
             name);
    return DSV3_OK;
}

Dsv3Err dsv3_h5_virtual_create(hid_t file, const char *path, const char *name, Dsv3Dtype dtype,
                               int ndim, const int64_t *shape, const Dsv3H5Source *sources,
                               int n_sources) {
    DSV3_ASSERT(ndim >= 1 && ndim <= DSV3_H5_MAX_DIMS);
    hsize_t dims[DSV3_H5_MAX_DIMS];
    for (int d = 0; d < ndim; d++)
        dims[d] = (hsize_t)shape[d];
    hid_t vspace = H5Screate_simple(ndim, dims, NULL), type = file_type(dtype), lcpl = link_plist();
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    float fill = NAN; // a source that goes missing reads as NaN, not as plausible zeros
    int ok = vspace >= 0 && type >= 0 && lcpl >= 0 && dcpl >= 0 &&
             H5Pset_fill_value(dcpl, H5T_NATIVE_FLOAT, &fill) >= 0;
    for (int i = 0; i < n_sources && ok; i++) {
        hsize_t s[DSV3_H5_MAX_DIMS], c[DSV3_H5_MAX_DIMS];
        for (int d = 0; d < ndim; d++)
            s[d] = (hsize_t)sources[i].start[d], c[d] = (hsize_t)sources[i].count[d];
        hid_t src = H5Screate_simple(ndim, c, NULL);
        ok = src >= 0 && H5Sselect_hyperslab(vspace, H5S_SELECT_SET, s, NULL, c, NULL) >= 0 &&
             H5Pset_virtual(dcpl, vspace, sources[i].file, sources[i].name, src) >= 0;
        if (src >= 0) H5Sclose(src);
    }
    hid_t dset = ok ? H5Dcreate2(file, name, type, vspace, lcpl, dcpl, H5P_DEFAULT) : -1;
    if (dset >= 0) H5Dclose(dset);
    if (vspace >= 0) H5Sclose(vspace);
    if (type >= 0) H5Tclose(type);
    if (lcpl >= 0) H5Pclose(lcpl);
    if (dcpl >= 0) H5Pclose(dcpl);
    H5_CHECK(dset >= 0, "%s: cannot create virtual dataset %s", path, name);
    return DSV3_OK;
}

Dsv3Err dsv3_h5_attr_write_int(hid_t file, const char *path, const char *name, int64_t value) {
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attr =
        space >= 0 ? H5Acreate2(file, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT) : -1;
    herr_t rc = attr >= 0 ? H5Awrite(attr, H5T_NATIVE_INT64, &value) : -1;
    if (attr >= 0) H5Aclose(attr);
    if (space >= 0) H5Sclose(space);
    H5_CHECK(rc >= 0, "%s: cannot write attribute %s", path, name);
    return DSV3_OK;
}

Dsv3Err dsv3_h5_attr_write_str(hid_t file, const char *path, const char *name, const char *value) {
    hid_t space = H5Screate(H5S_SCALAR), type = H5Tcopy(H5T_C_S1);
    int ok = space >= 0 && type >= 0 && H5Tset_size(type, strlen(value) + 1) >= 0 &&
             H5Tset_cset(type, H5T_CSET_UTF8) >= 0;
    hid_t attr = ok ? H5Acreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT) : -1;
    herr_t rc = attr >= 0 ? H5Awrite(attr, type, value) : -1;
    if (attr >= 0) H5Aclose(attr);
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    H5_CHECK(rc >= 0, "%s: cannot write attribute %s", path, name);
    return DSV3_OK;
}

Dsv3Err dsv3_h5_attr_read_int(hid_t file, const char *path, const char *name, int64_t *value) {
    quiet();
    DSV3_CHECK(H5Aexists(file, name) > 0, DSV3_ERR_USAGE, "%s has no attribute %s", path, name);
    hid_t attr = H5Aopen(file, name, H5P_DEFAULT);
    herr_t rc = attr >= 0 ? H5Aread(attr, H5T_NATIVE_INT64, value) : -1;
    if (attr >= 0) H5Aclose(attr);
    H5_CHECK(rc >= 0, "%s: cannot read attribute %s", path, name);
    return DSV3_OK;
}

typedef struct {
    Dsv3H5Visit visit;
    void *arg;
    const char *path;
    const char *group; // "" at the root
    Dsv3Err err;
} ListState;

static herr_t list_one(hid_t loc, const char *name, const H5L_info_t *info, void *arg) {
    (void)info;
    ListState *s = arg;
    H5O_info_t o;
    if (H5Oget_info_by_name(loc, name, &o, H5P_DEFAULT) < 0) return -1;
    char full[512];
    snprintf(full, sizeof full, "%s%s%s", s->group, s->group[0] ? "/" : "", name);
    if (o.type == H5O_TYPE_DATASET) {
        s->err = s->visit(full, s->arg);
        return s->err == DSV3_OK ? 0 : 1;
    }
    if (o.type == H5O_TYPE_GROUP && !s->group[0]) {
        ListState inner = *s;
        inner.group = name;
        hid_t g = H5Gopen2(loc, name, H5P_DEFAULT);
        if (g < 0) return -1;
        herr_t rc = H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, list_one, &inner);
        H5Gclose(g);
        s->err = inner.err;
        return rc;
    }
    return 0;
}

Dsv3Err dsv3_h5_list(hid_t file, const char *path, Dsv3H5Visit visit, void *arg) {
    ListState s = {.visit = visit, .arg = arg, .path = path, .group = "", .err = DSV3_OK};
    herr_t rc = H5Literate(file, H5_INDEX_NAME, H5_ITER_INC, NULL, list_one, &s);
    if (s.err != DSV3_OK) return dsv3_error_trace(s.err, __FILE__, __LINE__, __func__);
    H5_CHECK(rc >= 0, "%s: cannot list its datasets", path);
    return DSV3_OK;
}
