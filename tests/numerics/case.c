// case: reading, buffers, checks and their lines for the numerics tests.
#include "case.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/core/alloc.h"

enum {
    CASE_PATH_CAPACITY = 256,   // "<sub-case>/<array>"
    CASE_RESULT_CAPACITY = 128, // "rel err …", "… of … differ"
    IMPL_WIDTH = 9,             // "reference"
    VERDICT_WIDTH = 4,          // "FAIL"
};

void dsv3_case_init(Dsv3Case *c, const char *root, double tolerance, Dsv3CaseLine line,
                    int name_width, int what_width) {
    *c = (Dsv3Case){.root = root,
                    .tolerance = tolerance,
                    .line = line,
                    .name_width = name_width,
                    .what_width = what_width};
}

void dsv3_case_begin(Dsv3Case *c, const char *impl, const char *name) {
    dsv3_arena_destroy(&c->arena);
    c->impl = impl;
    c->name = name;
}

Dsv3Err dsv3_case_end(Dsv3Case *c, Dsv3Err err) {
    dsv3_arena_destroy(&c->arena);
    if (err != DSV3_OK) {
        printf("%-*s %-*s ERROR\n%s\n", IMPL_WIDTH, c->impl ? c->impl : "", c->name_width,
               c->name ? c->name : "", dsv3_error_text());
        dsv3_error_clear();
        c->failures++;
    }
    return err;
}

// The name dsv3_npy_read_* wants for `array` of the current sub-case, written into path.
static const char *array_path(const Dsv3Case *c, const char *array, char *path) {
    if (!c->name) return array;
    snprintf(path, CASE_PATH_CAPACITY, "%s/%s", c->name, array);
    return path;
}

// Moves `data` (a counted allocation of n elements of `size` bytes) into the arena.
static Dsv3Err adopt(Dsv3Case *c, void **out, int64_t *count, void *data, int64_t n, size_t size) {
    Dsv3Err err = dsv3_case_buffer(c, out, n, size, data);
    dsv3_free(data);
    if (count) *count = n;
    return err;
}

Dsv3Err dsv3_case_read(Dsv3Case *c, Dsv3Npy *out, const char *array) {
    char path[CASE_PATH_CAPACITY];
    Dsv3Npy npy;
    DSV3_CALL(dsv3_npy_read(&npy, c->root, array_path(c, array, path)));
    const int narrow = npy.type == DSV3_NPY_F32 || npy.type == DSV3_NPY_I32;
    const size_t size = narrow ? sizeof(float) : sizeof(double); // int32 / int64 alike
    *out = npy;
    return adopt(c, &out->data, NULL, npy.data, npy.count, size);
}

// Reads `array` converted to `type` (F32, F64 or I32) into the arena.
static Dsv3Err read_as(Dsv3Case *c, Dsv3NpyType type, void **out, int64_t *count,
                       const char *array) {
    char path[CASE_PATH_CAPACITY];
    const char *name = array_path(c, array, path);
    float *f32 = NULL;
    double *f64 = NULL;
    int32_t *i32 = NULL;
    int64_t n = 0;
    switch (type) {
    case DSV3_NPY_F32:
        DSV3_CALL(dsv3_npy_read_f32(&f32, &n, c->root, name));
        return adopt(c, out, count, f32, n, sizeof *f32);
    case DSV3_NPY_F64:
        DSV3_CALL(dsv3_npy_read_f64(&f64, &n, c->root, name));
        return adopt(c, out, count, f64, n, sizeof *f64);
    case DSV3_NPY_I32:
        DSV3_CALL(dsv3_npy_read_i32(&i32, &n, c->root, name));
        return adopt(c, out, count, i32, n, sizeof *i32);
    case DSV3_NPY_I64: break;
    }
    DSV3_RAISE(DSV3_ERR_INTERNAL, "%s: no conversion to int64", array);
}

Dsv3Err dsv3_case_read_f32(Dsv3Case *c, float **out, int64_t *count, const char *array) {
    return read_as(c, DSV3_NPY_F32, (void **)out, count, array);
}

Dsv3Err dsv3_case_read_f64(Dsv3Case *c, double **out, int64_t *count, const char *array) {
    return read_as(c, DSV3_NPY_F64, (void **)out, count, array);
}

Dsv3Err dsv3_case_read_i32(Dsv3Case *c, int32_t **out, int64_t *count, const char *array) {
    return read_as(c, DSV3_NPY_I32, (void **)out, count, array);
}

Dsv3Err dsv3_case_buffer(Dsv3Case *c, void **out, int64_t count, size_t size, const void *init) {
    DSV3_CHECK(count >= 0, DSV3_ERR_USAGE,
               "numerics buffer of %" PRId64 " elements: expected a count >= 0", count);
    DSV3_CALL(dsv3_arena_calloc(&c->arena, out, (size_t)count, size, "numerics buffer"));
    if (init && count > 0) memcpy(*out, init, (size_t)count * size);
    return DSV3_OK;
}

static void print_line(Dsv3Case *c, const char *what, const char *result, int ok) {
    if (c->line == DSV3_CASE_LINE_VERDICT)
        printf("%-*s %-*s %s\n", VERDICT_WIDTH, ok ? "ok" : "FAIL", c->what_width, what, result);
    else
        printf("%-*s %-*s %-*s %s  %s\n", IMPL_WIDTH, c->impl ? c->impl : "", c->name_width,
               c->name ? c->name : "", c->what_width, what, result, ok ? "ok" : "FAIL");
    c->failures += !ok;
}

void dsv3_case_report(Dsv3Case *c, const char *what, double error, double tolerance) {
    char result[CASE_RESULT_CAPACITY];
    if (c->line == DSV3_CASE_LINE_VERDICT)
        snprintf(result, sizeof result, "rel error %.3e (tolerance %.0e)", error, tolerance);
    else
        snprintf(result, sizeof result, "rel err %.3e", error);
    print_line(c, what, result, error <= tolerance);
}

// Reads the expectation `expected` (count elements) as float64, integers included (exact up to
// 2^53). Not kept in the arena: a test may compare many more arrays than it reads as inputs
// (every gradient of a model). The caller frees *want.
static Dsv3Err read_expected(Dsv3Case *c, double **want, int64_t count, const char *expected) {
    char path[CASE_PATH_CAPACITY];
    const char *name = array_path(c, expected, path);
    int64_t n = 0;
    DSV3_CALL(dsv3_npy_read_f64(want, &n, c->root, name));
    if (n == count) return DSV3_OK;
    dsv3_free(*want);
    *want = NULL;
    DSV3_RAISE(DSV3_ERR_USAGE, "%s/%s.npy has %" PRId64 " elements, the op produced %" PRId64,
               c->root, name, n, count);
}

Dsv3Err dsv3_case_check_within(Dsv3Case *c, const char *what, const float *got, int64_t count,
                               const char *expected, double tolerance) {
    double *want = NULL;
    DSV3_CALL(read_expected(c, &want, count, expected));
    dsv3_case_report(c, what, dsv3_npy_relative_error(got, want, count), tolerance);
    dsv3_free(want);
    return DSV3_OK;
}

Dsv3Err dsv3_case_check(Dsv3Case *c, const char *what, const float *got, int64_t count,
                        const char *expected) {
    return dsv3_case_check_within(c, what, got, count, expected, c->tolerance);
}

void dsv3_case_check_scalar(Dsv3Case *c, const char *what, double got, double expected) {
    double err = expected == 0 ? fabs(got) : fabs(got - expected) / fabs(expected);
    dsv3_case_report(c, what, err, c->tolerance);
}

Dsv3Err dsv3_case_check_exact(Dsv3Case *c, const char *what, const int64_t *got, int64_t count,
                              const char *expected) {
    double *want = NULL;
    DSV3_CALL(read_expected(c, &want, count, expected));
    int64_t wrong = 0;
    for (int64_t i = 0; i < count; i++)
        wrong += (double)got[i] != want[i];
    dsv3_free(want);
    char result[CASE_RESULT_CAPACITY];
    snprintf(result, sizeof result, "%" PRId64 " of %" PRId64 " differ", wrong, count);
    print_line(c, what, result, wrong == 0);
    return DSV3_OK;
}
