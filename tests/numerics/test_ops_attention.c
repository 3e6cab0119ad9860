// Numerics of the attention ops against PyTorch in float64 (tests/reference/ops_attention.py):
// the rotary tables with and without YaRN, rotary embedding forward and backward on MLA's q_pe
// (last channels of every head) and k_pe (last channels of wkv_a's output), and causal /
// block-causal attention forward and backward.
//
// Usage: test_ops_attention CASE_DIR. Both the reference and the fast version of every op run
// in float32 on the same inputs; each output and gradient must be within TOLERANCE relative
// error (‖got − expected‖ / ‖expected‖) of the float64 expectation. The rotary cases rotate
// with the tables that dsv3 computes, so they check tables and rotation together. Prints one
// line per check and exits non-zero when any check fails.
//
// Legend: B sequences, T positions, H heads, Dqk / Dv query-key / value head dims, R rotary
// dims, L latent dims in front of k_pe.
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/core/alloc.h"
#include "kernels/kernels.h"
#include "kernels/kernels_reference.h"
#include "npy.h"

#define TOLERANCE 1e-4

enum { NAME_CAPACITY = 256, MAX_BUFFERS = 32 };

// Both versions of every op, so that each case runs them the same way.
typedef struct {
    const char *name;
    Dsv3Err (*rope_tables)(float *, float *, int64_t, int64_t, double, double, double, double,
                           int64_t);
    Dsv3Err (*rope_forward)(float *, const float *, const float *, int64_t, int64_t, int64_t,
                            int64_t, int64_t, int64_t);
    Dsv3Err (*rope_backward)(float *, const float *, const float *, int64_t, int64_t, int64_t,
                             int64_t, int64_t, int64_t);
    Dsv3Err (*attention_forward)(float *, float *, const float *, const float *, const float *,
                                 const int32_t *, int64_t, int64_t, int64_t, int64_t, int64_t,
                                 float);
    Dsv3Err (*attention_backward)(float *, float *, float *, const float *, const float *,
                                  const float *, const float *, const float *, const float *,
                                  const int32_t *, int64_t, int64_t, int64_t, int64_t, int64_t,
                                  float);
} Impl;

static const Impl IMPLS[] = {
    {"reference", dsv3_rope_tables_reference, dsv3_rope_forward_reference,
     dsv3_rope_backward_reference, dsv3_attention_forward_reference,
     dsv3_attention_backward_reference},
    {"fast", dsv3_rope_tables, dsv3_rope_forward, dsv3_rope_backward, dsv3_attention_forward,
     dsv3_attention_backward},
};
enum { IMPL_COUNT = sizeof IMPLS / sizeof IMPLS[0] };

static const char *const ROPE_TABLE_CASES[] = {"rope_tables_plain", "rope_tables_one",
                                               "rope_tables_yarn", "rope_tables_yarn_clamped"};
static const char *const ROPE_APPLY_CASES[] = {"rope_query", "rope_query_yarn", "rope_key",
                                               "rope_key_yarn"};
static const char *const ATTENTION_CASES[] = {"attention_one_token",        "attention_causal",
                                              "attention_causal_ragged",    "attention_documents",
                                              "attention_documents_ragged", "attention_mla",
                                              "attention_mla_documents"};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const char *case_root;
static int failures;

// Every buffer of a case is registered here and released together when the case ends.
static void *buffers[MAX_BUFFERS];
static int buffer_count;

static Dsv3Err keep(void *ptr) {
    if (buffer_count == MAX_BUFFERS) {
        dsv3_free(ptr);
        DSV3_RAISE(DSV3_ERR_INTERNAL, "more than %d buffers in one case", MAX_BUFFERS);
    }
    buffers[buffer_count++] = ptr;
    return DSV3_OK;
}

static void release_all(void) {
    for (int i = 0; i < buffer_count; i++)
        dsv3_free(buffers[i]);
    buffer_count = 0;
}

static Dsv3Err read_f32(float **out, int64_t *count, const char *case_name, const char *name) {
    char path[NAME_CAPACITY];
    snprintf(path, sizeof path, "%s/%s", case_name, name);
    int64_t n = 0;
    DSV3_CALL(dsv3_npy_read_f32(out, &n, case_root, path));
    DSV3_CALL(keep(*out));
    if (count)
        *count = n;
    return DSV3_OK;
}

static Dsv3Err read_f64(double **out, int64_t *count, const char *case_name, const char *name) {
    char path[NAME_CAPACITY];
    snprintf(path, sizeof path, "%s/%s", case_name, name);
    int64_t n = 0;
    DSV3_CALL(dsv3_npy_read_f64(out, &n, case_root, path));
    DSV3_CALL(keep(*out));
    if (count)
        *count = n;
    return DSV3_OK;
}

static Dsv3Err read_i32(int32_t **out, int64_t *count, const char *case_name, const char *name) {
    char path[NAME_CAPACITY];
    snprintf(path, sizeof path, "%s/%s", case_name, name);
    int64_t n = 0;
    DSV3_CALL(dsv3_npy_read_i32(out, &n, case_root, path));
    DSV3_CALL(keep(*out));
    if (count)
        *count = n;
    return DSV3_OK;
}

// A float32 buffer of `count` elements: a copy of `init` when given, else zeros.
static Dsv3Err make_buffer(float **out, int64_t count, const float *init) {
    DSV3_CALL(dsv3_calloc((void **)out, (size_t)(count > 0 ? count : 1), sizeof(float),
                          "numerics buffer"));
    DSV3_CALL(keep(*out));
    if (init)
        memcpy(*out, init, (size_t)count * sizeof(float));
    return DSV3_OK;
}

// Reads `expected_name` and compares; prints one line; counts a failure above TOLERANCE.
static Dsv3Err check(const char *case_name, const Impl *impl, const char *what, const float *got,
                     int64_t count, const char *expected_name) {
    double *expected = NULL;
    int64_t expected_count = 0;
    DSV3_CALL(read_f64(&expected, &expected_count, case_name, expected_name));
    DSV3_CHECK(expected_count == count, DSV3_ERR_USAGE,
               "%s/%s has %" PRId64 " elements, the op produced %" PRId64, case_name, expected_name,
               expected_count, count);
    double err = dsv3_npy_relative_error(got, expected, count);
    int ok = err <= TOLERANCE;
    printf("%-9s %-27s %-5s rel err %.3e  %s\n", impl->name, case_name, what, err,
           ok ? "ok" : "FAIL");
    failures += !ok;
    return DSV3_OK;
}

// dims: T, R, original_seq_len; params: theta, factor, beta_fast, beta_slow.
static Dsv3Err test_rope_tables(const Impl *impl, const char *c) {
    int32_t *dims = NULL;
    double *params = NULL;
    float *cos_table = NULL, *sin_table = NULL;
    DSV3_CALL(read_i32(&dims, NULL, c, "dims"));
    DSV3_CALL(read_f64(&params, NULL, c, "params"));
    const int64_t T = dims[0], R = dims[1], original_seq_len = dims[2];
    DSV3_CALL(make_buffer(&cos_table, T * R / 2, NULL)); // (T, R/2)
    DSV3_CALL(make_buffer(&sin_table, T * R / 2, NULL)); // (T, R/2)
    DSV3_CALL(impl->rope_tables(cos_table, sin_table, T, R, params[0], params[1], params[2],
                                params[3], original_seq_len));
    DSV3_CALL(check(c, impl, "cos", cos_table, T * R / 2, "cos"));
    DSV3_CALL(check(c, impl, "sin", sin_table, T * R / 2, "sin"));
    return DSV3_OK;
}

// dims: B, T, H, R, row_stride, head_stride, offset, original_seq_len; params as the tables.
// x (B, T, row_stride) holds, per token, H rotated slices of R channels starting at
// offset + h·head_stride; the other channels pass through.
static Dsv3Err test_rope_apply(const Impl *impl, const char *c) {
    int32_t *dims = NULL;
    double *params = NULL;
    float *x = NULL, *dout = NULL, *cos_table = NULL, *sin_table = NULL;
    int64_t n = 0;
    DSV3_CALL(read_i32(&dims, NULL, c, "dims"));
    DSV3_CALL(read_f64(&params, NULL, c, "params"));
    const int64_t B = dims[0], T = dims[1], H = dims[2], R = dims[3], row_stride = dims[4];
    const int64_t head_stride = dims[5], offset = dims[6], original_seq_len = dims[7];
    DSV3_CALL(read_f32(&x, &n, c, "x")); // (B, T, row_stride), rotated in place
    DSV3_CALL(read_f32(&dout, NULL, c, "dout")); // same, becomes dx in place
    DSV3_CHECK(n == B * T * row_stride, DSV3_ERR_USAGE, "%s/x has %" PRId64 " elements", c, n);
    DSV3_CALL(make_buffer(&cos_table, T * R / 2, NULL)); // (T, R/2)
    DSV3_CALL(make_buffer(&sin_table, T * R / 2, NULL)); // (T, R/2)
    DSV3_CALL(impl->rope_tables(cos_table, sin_table, T, R, params[0], params[1], params[2],
                                params[3], original_seq_len));
    DSV3_CALL(
        impl->rope_forward(x + offset, cos_table, sin_table, B, T, H, R, row_stride, head_stride));
    DSV3_CALL(impl->rope_backward(dout + offset, cos_table, sin_table, B, T, H, R, row_stride,
                                  head_stride));
    DSV3_CALL(check(c, impl, "out", x, n, "out"));
    DSV3_CALL(check(c, impl, "dx", dout, n, "dx"));
    return DSV3_OK;
}

// dims: B, T, H, Dqk, Dv, has_doc; params: scale.
static Dsv3Err test_attention(const Impl *impl, const char *c) {
    int32_t *dims = NULL, *doc = NULL;
    double *params = NULL;
    float *q = NULL, *k = NULL, *v = NULL, *dout = NULL;
    float *out = NULL, *lse = NULL, *dq = NULL, *dk = NULL, *dv = NULL;
    DSV3_CALL(read_i32(&dims, NULL, c, "dims"));
    DSV3_CALL(read_f64(&params, NULL, c, "params"));
    const int64_t B = dims[0], T = dims[1], H = dims[2], Dqk = dims[3], Dv = dims[4];
    const float scale = (float)params[0];
    if (dims[5])
        DSV3_CALL(read_i32(&doc, NULL, c, "doc")); // (B, T)
    DSV3_CALL(read_f32(&q, NULL, c, "q")); // (B, T, H, Dqk)
    DSV3_CALL(read_f32(&k, NULL, c, "k")); // (B, T, H, Dqk)
    DSV3_CALL(read_f32(&v, NULL, c, "v")); // (B, T, H, Dv)
    DSV3_CALL(read_f32(&dout, NULL, c, "dout")); // (B, T, H, Dv)
    const int64_t nqk = B * T * H * Dqk, nv = B * T * H * Dv;
    DSV3_CALL(make_buffer(&out, nv, NULL));
    DSV3_CALL(make_buffer(&lse, B * H * T, NULL)); // (B, H, T)
    DSV3_CALL(make_buffer(&dq, nqk, NULL));
    DSV3_CALL(make_buffer(&dk, nqk, NULL));
    DSV3_CALL(make_buffer(&dv, nv, NULL));
    DSV3_CALL(impl->attention_forward(out, lse, q, k, v, doc, B, T, H, Dqk, Dv, scale));
    DSV3_CALL(impl->attention_backward(dq, dk, dv, dout, q, k, v, out, lse, doc, B, T, H, Dqk, Dv,
                                       scale));
    DSV3_CALL(check(c, impl, "out", out, nv, "out"));
    DSV3_CALL(check(c, impl, "lse", lse, B * H * T, "lse"));
    DSV3_CALL(check(c, impl, "dq", dq, nqk, "dq"));
    DSV3_CALL(check(c, impl, "dk", dk, nqk, "dk"));
    DSV3_CALL(check(c, impl, "dv", dv, nv, "dv"));
    return DSV3_OK;
}

// Runs one case; an error (a missing file, an op that refuses its input) counts as a failure.
static void run(Dsv3Err (*test)(const Impl *, const char *), const Impl *impl, const char *c) {
    Dsv3Err err = test(impl, c);
    release_all();
    if (err != DSV3_OK) {
        printf("%-9s %-27s ERROR\n%s\n", impl->name, c, dsv3_error_text());
        dsv3_error_clear();
        failures++;
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s CASE_DIR\n", argv[0]);
        return 2;
    }
    case_root = argv[1];
    for (int i = 0; i < IMPL_COUNT; i++) {
        const Impl *impl = &IMPLS[i];
        for (size_t j = 0; j < COUNT(ROPE_TABLE_CASES); j++)
            run(test_rope_tables, impl, ROPE_TABLE_CASES[j]);
        for (size_t j = 0; j < COUNT(ROPE_APPLY_CASES); j++)
            run(test_rope_apply, impl, ROPE_APPLY_CASES[j]);
        for (size_t j = 0; j < COUNT(ATTENTION_CASES); j++)
            run(test_attention, impl, ATTENTION_CASES[j]);
    }
    if (dsv3_alloc_current_bytes() != 0) {
        printf("%zu bytes still allocated at the end\n", dsv3_alloc_current_bytes());
        failures++;
    }
    printf("%d check(s) failed\n", failures);
    return failures == 0 ? 0 : 1;
}
