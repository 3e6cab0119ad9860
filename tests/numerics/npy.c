// npy: the .npy header is a Python dict literal; we read 'descr', 'fortran_order' and 'shape'.
#include "npy.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/alloc.h"

enum { NPY_PATH_CAPACITY = 4096, NPY_PREAMBLE = 8, NPY_MAX_HEADER = 1 << 16 };

static const char NPY_MAGIC[] = "\x93NUMPY";

static size_t type_size(Dsv3NpyType t) { return t == DSV3_NPY_F32 || t == DSV3_NPY_I32 ? 4 : 8; }

static const char *type_descr(Dsv3NpyType t) {
    static const char *const d[] = {"<f4", "<f8", "<i4", "<i8"};
    return d[t];
}

static Dsv3Err parse_header(Dsv3Npy *out, const char *h, const char *path) {
    const char *descr = strstr(h, "'descr'");
    DSV3_CHECK(descr, DSV3_ERR_IO, "%s: no 'descr' in the .npy header", path);
    int found = 0;
    for (int t = DSV3_NPY_F32; t <= DSV3_NPY_I64; t++) {
        char quoted[16];
        snprintf(quoted, sizeof quoted, "'%s'", type_descr((Dsv3NpyType)t));
        if (strstr(descr, quoted) == strchr(descr + 7, '\'')) {
            out->type = (Dsv3NpyType)t;
            found = 1;
        }
    }
    DSV3_CHECK(found, DSV3_ERR_IO, "%s: dtype must be little-endian f4, f8, i4 or i8", path);
    DSV3_CHECK(strstr(h, "'fortran_order': False"), DSV3_ERR_IO,
               "%s: Fortran order is not supported", path);
    const char *shape = strstr(h, "'shape'");
    DSV3_CHECK(shape && strchr(shape, '('), DSV3_ERR_IO, "%s: no 'shape' in the .npy header", path);
    const char *p = strchr(shape, '(') + 1;
    out->ndim = 0;
    out->count = 1;
    while (*p && *p != ')') {
        char *end = NULL;
        long long n = strtoll(p, &end, 10);
        if (end == p) {
            p++;
            continue;
        }
        DSV3_CHECK(out->ndim < DSV3_NPY_MAX_DIMS && n >= 0, DSV3_ERR_IO, "%s: bad shape", path);
        out->shape[out->ndim++] = n;
        out->count *= n;
        p = end;
    }
    return DSV3_OK;
}

Dsv3Err dsv3_npy_read(Dsv3Npy *out, const char *dir, const char *name) {
    char path[NPY_PATH_CAPACITY];
    snprintf(path, sizeof path, "%s/%s.npy", dir, name);
    *out = (Dsv3Npy){0};
    FILE *f = fopen(path, "rb");
    DSV3_CHECK(f, DSV3_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    Dsv3Err err = DSV3_OK;
    char *header = NULL;
    unsigned char pre[NPY_PREAMBLE + 4];
    DSV3_CHECK_GOTO(
        err, done, fread(pre, 1, NPY_PREAMBLE, f) == NPY_PREAMBLE && memcmp(pre, NPY_MAGIC, 6) == 0,
        DSV3_ERR_IO, "%s is not a .npy file", path);
    size_t header_len;
    if (pre[6] == 1) {
        unsigned char len[2];
        DSV3_CHECK_GOTO(err, done, fread(len, 1, 2, f) == 2, DSV3_ERR_IO, "%s: truncated", path);
        header_len = (size_t)len[0] | (size_t)len[1] << 8;
    } else {
        unsigned char len[4];
        DSV3_CHECK_GOTO(err, done, fread(len, 1, 4, f) == 4, DSV3_ERR_IO, "%s: truncated", path);
        header_len =
            (size_t)len[0] | (size_t)len[1] << 8 | (size_t)len[2] << 16 | (size_t)len[3] << 24;
    }
    DSV3_CHECK_GOTO(err, done, header_len < NPY_MAX_HEADER, DSV3_ERR_IO, "%s: header too long",
                    path);
    DSV3_CALL_GOTO(err, done, dsv3_alloc((void **)&header, header_len + 1, "npy header"));
    DSV3_CHECK_GOTO(err, done, fread(header, 1, header_len, f) == header_len, DSV3_ERR_IO,
                    "%s: truncated header", path);
    header[header_len] = '\0';
    DSV3_CALL_GOTO(err, done, parse_header(out, header, path));
    size_t bytes = (size_t)out->count * type_size(out->type);
    DSV3_CALL_GOTO(err, done, dsv3_alloc(&out->data, bytes ? bytes : 1, path));
    DSV3_CHECK_GOTO(err, done, fread(out->data, 1, bytes, f) == bytes, DSV3_ERR_IO,
                    "%s: truncated data", path);
done:
    dsv3_free(header);
    fclose(f);
    if (err != DSV3_OK) dsv3_npy_free(out);
    return err;
}

Dsv3Err dsv3_npy_read_f32(float **out, int64_t *count, const char *dir, const char *name) {
    Dsv3Npy npy;
    DSV3_CALL(dsv3_npy_read(&npy, dir, name));
    Dsv3Err err = DSV3_OK;
    if (npy.type == DSV3_NPY_F32) {
        *out = npy.data;
        *count = npy.count;
        return DSV3_OK;
    }
    DSV3_CHECK_GOTO(err, fail, npy.type == DSV3_NPY_F64, DSV3_ERR_IO, "%s/%s.npy: expected floats",
                    dir, name);
    DSV3_CALL_GOTO(err, fail, dsv3_alloc((void **)out, (size_t)npy.count * sizeof **out + 1, name));
    for (int64_t i = 0; i < npy.count; i++)
        (*out)[i] = (float)((double *)npy.data)[i];
    *count = npy.count;
fail:
    dsv3_npy_free(&npy);
    return err;
}

Dsv3Err dsv3_npy_read_f64(double **out, int64_t *count, const char *dir, const char *name) {
    Dsv3Npy npy;
    DSV3_CALL(dsv3_npy_read(&npy, dir, name));
    Dsv3Err err = DSV3_OK;
    if (npy.type == DSV3_NPY_F64) {
        *out = npy.data;
        *count = npy.count;
        return DSV3_OK;
    }
    DSV3_CALL_GOTO(err, fail, dsv3_alloc((void **)out, (size_t)npy.count * sizeof **out + 1, name));
    for (int64_t i = 0; i < npy.count; i++) {
        switch (npy.type) {
        case DSV3_NPY_F32: (*out)[i] = ((float *)npy.data)[i]; break;
        case DSV3_NPY_I32: (*out)[i] = ((int32_t *)npy.data)[i]; break;
        case DSV3_NPY_I64: (*out)[i] = (double)((int64_t *)npy.data)[i]; break;
        case DSV3_NPY_F64: break;
        }
    }
    *count = npy.count;
fail:
    dsv3_npy_free(&npy);
    return err;
}

Dsv3Err dsv3_npy_read_i32(int32_t **out, int64_t *count, const char *dir, const char *name) {
    Dsv3Npy npy;
    DSV3_CALL(dsv3_npy_read(&npy, dir, name));
    Dsv3Err err = DSV3_OK;
    if (npy.type == DSV3_NPY_I32) {
        *out = npy.data;
        *count = npy.count;
        return DSV3_OK;
    }
    DSV3_CHECK_GOTO(err, fail, npy.type == DSV3_NPY_I64, DSV3_ERR_IO,
                    "%s/%s.npy: expected integers", dir, name);
    DSV3_CALL_GOTO(err, fail, dsv3_alloc((void **)out, (size_t)npy.count * sizeof **out + 1, name));
    for (int64_t i = 0; i < npy.count; i++) {
        int64_t v = ((int64_t *)npy.data)[i];
        DSV3_CHECK_GOTO(err, fail, v >= INT32_MIN && v <= INT32_MAX, DSV3_ERR_IO,
                        "%s/%s.npy: value %lld does not fit int32", dir, name, (long long)v);
        (*out)[i] = (int32_t)v;
    }
    *count = npy.count;
fail:
    if (err != DSV3_OK) {
        dsv3_free(*out);
        *out = NULL;
    }
    dsv3_npy_free(&npy);
    return err;
}

Dsv3Err dsv3_npy_write_f32(const char *dir, const char *name, const float *data, int64_t count) {
    char path[NPY_PATH_CAPACITY], header[128];
    snprintf(path, sizeof path, "%s/%s.npy", dir, name);
    int n =
        snprintf(header, sizeof header,
                 "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld,), }", (long long)count);
    // Pad with spaces so that magic + version + length + header + '\n' is a multiple of 64.
    int total = NPY_PREAMBLE + 2 + n + 1;
    int pad = (64 - total % 64) % 64;
    FILE *f = fopen(path, "wb");
    DSV3_CHECK(f, DSV3_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    unsigned short len = (unsigned short)(n + pad + 1);
    unsigned char pre[10] = {0x93,
                             'N',
                             'U',
                             'M',
                             'P',
                             'Y',
                             1,
                             0,
                             (unsigned char)(len & 0xff),
                             (unsigned char)(len >> 8)};
    int ok =
        fwrite(pre, 1, sizeof pre, f) == sizeof pre && fwrite(header, 1, (size_t)n, f) == (size_t)n;
    for (int i = 0; i < pad && ok; i++)
        ok = fputc(' ', f) != EOF;
    ok = ok && fputc('\n', f) != EOF;
    ok = ok && fwrite(data, sizeof *data, (size_t)count, f) == (size_t)count;
    ok = (fclose(f) == 0) && ok;
    DSV3_CHECK(ok, DSV3_ERR_IO, "cannot write %s", path);
    return DSV3_OK;
}

void dsv3_npy_free(Dsv3Npy *npy) {
    dsv3_free(npy->data);
    npy->data = NULL;
}

double dsv3_npy_relative_error(const float *a, const double *b, int64_t count) {
    double diff = 0, norm = 0;
    for (int64_t i = 0; i < count; i++) {
        double d = (double)a[i] - b[i];
        diff += d * d;
        norm += b[i] * b[i];
    }
    if (norm == 0) return sqrt(diff);
    return sqrt(diff / norm);
}
