// Numerics of the attention ops against PyTorch in float64 (tests/reference/ops_attention.py):
// the rotary tables with and without YaRN, rotary embedding forward and backward on MLA's q_pe
// (last channels of every head) and k_pe (last channels of wkv_a's output), and causal /
// block-causal attention forward and backward.
//
// Usage: test_ops_attention CASE_DIR. Both the reference and the fast version of every op (a
// context of DSV3_BACKEND_CPU_REFERENCE, then of DSV3_BACKEND_CPU) run in float32 on the same
// inputs; each output and gradient must be within TOLERANCE relative
// error (‖got − expected‖ / ‖expected‖) of the float64 expectation. The rotary cases rotate
// with the tables that dsv3 computes, so they check tables and rotation together. Prints one
// line per check and exits non-zero when any check fails.
//
// Legend: B sequences, T positions, H heads, Dqk / Dv query-key / value head dims, R rotary
// dims, L latent dims in front of k_pe.
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>

#include "case.h"
#include "common/core/alloc.h"
#include "kernels/kernels.h"
#include "tests/kernels_test.h"

#define TOLERANCE 1e-4

// Columns of the check lines: sub-case, check.
enum { CASE_WIDTH = 27, WHAT_WIDTH = 5 };

// Every tensor of these ops is fp32.
static const Dsv3TensorDtype F32 = DSV3_TENSOR_F32;

// Both versions of every op, so that each case runs them the same way: one context each.
typedef struct {
    const char *name;
    Dsv3Backend backend;
} Impl;

static const Impl IMPLS[] = {
    {"reference", DSV3_BACKEND_CPU_REFERENCE},
    {"fast", DSV3_BACKEND_CPU},
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

// dims: T, R, original_seq_len; params: theta, factor, beta_fast, beta_slow.
static Dsv3Err test_rope_tables(Dsv3Case *c, Dsv3KernelContext *kc) {
    int32_t *dims = NULL;
    double *params = NULL;
    float *cos_table = NULL, *sin_table = NULL;
    DSV3_CALL(dsv3_case_read_i32(c, &dims, NULL, "dims"));
    DSV3_CALL(dsv3_case_read_f64(c, &params, NULL, "params"));
    const int64_t T = dims[0], R = dims[1], original_seq_len = dims[2];
    DSV3_CALL(DSV3_CASE_BUFFER(c, cos_table, T * R / 2, NULL)); // (T, R/2)
    DSV3_CALL(DSV3_CASE_BUFFER(c, sin_table, T * R / 2, NULL)); // (T, R/2)
    DSV3_CALL(dsv3_rope_tables(kc, cos_table, sin_table, T, R, params[0], params[1], params[2],
                               params[3], original_seq_len));
    DSV3_CALL(dsv3_case_check(c, "cos", cos_table, T * R / 2, "cos"));
    DSV3_CALL(dsv3_case_check(c, "sin", sin_table, T * R / 2, "sin"));
    return DSV3_OK;
}

// dims: B, T, H, R, row_stride, head_stride, offset, original_seq_len; params as the tables.
// x (B, T, row_stride) holds, per token, H rotated slices of R channels starting at
// offset + h·head_stride; the other channels pass through.
static Dsv3Err test_rope_apply(Dsv3Case *c, Dsv3KernelContext *kc) {
    int32_t *dims = NULL;
    double *params = NULL;
    float *x = NULL, *dout = NULL, *cos_table = NULL, *sin_table = NULL;
    int64_t n = 0;
    DSV3_CALL(dsv3_case_read_i32(c, &dims, NULL, "dims"));
    DSV3_CALL(dsv3_case_read_f64(c, &params, NULL, "params"));
    const int64_t B = dims[0], T = dims[1], H = dims[2], R = dims[3], row_stride = dims[4];
    const int64_t head_stride = dims[5], offset = dims[6], original_seq_len = dims[7];
    DSV3_CALL(dsv3_case_read_f32(c, &x, &n, "x"));         // (B, T, row_stride), rotated in place
    DSV3_CALL(dsv3_case_read_f32(c, &dout, NULL, "dout")); // same, becomes dx in place
    DSV3_CHECK(n == B * T * row_stride, DSV3_ERR_USAGE, "%s/x has %" PRId64 " elements", c->name,
               n);
    DSV3_CALL(DSV3_CASE_BUFFER(c, cos_table, T * R / 2, NULL)); // (T, R/2)
    DSV3_CALL(DSV3_CASE_BUFFER(c, sin_table, T * R / 2, NULL)); // (T, R/2)
    DSV3_CALL(dsv3_rope_tables(kc, cos_table, sin_table, T, R, params[0], params[1], params[2],
                               params[3], original_seq_len));
    DSV3_CALL(dsv3_rope_forward(kc, F32, x + offset, cos_table, sin_table, B, T, H, R, row_stride,
                                head_stride));
    DSV3_CALL(dsv3_rope_backward(kc, F32, dout + offset, cos_table, sin_table, B, T, H, R,
                                 row_stride, head_stride));
    DSV3_CALL(dsv3_case_check(c, "out", x, n, "out"));
    DSV3_CALL(dsv3_case_check(c, "dx", dout, n, "dx"));
    return DSV3_OK;
}

// dims: B, T, H, Dqk, Dv, has_doc; params: scale.
static Dsv3Err test_attention(Dsv3Case *c, Dsv3KernelContext *kc) {
    int32_t *dims = NULL, *doc = NULL;
    double *params = NULL;
    float *q = NULL, *k = NULL, *v = NULL, *dout = NULL;
    float *out = NULL, *lse = NULL, *dq = NULL, *dk = NULL, *dv = NULL;
    DSV3_CALL(dsv3_case_read_i32(c, &dims, NULL, "dims"));
    DSV3_CALL(dsv3_case_read_f64(c, &params, NULL, "params"));
    const int64_t B = dims[0], T = dims[1], H = dims[2], Dqk = dims[3], Dv = dims[4];
    const float scale = (float)params[0];
    if (dims[5]) DSV3_CALL(dsv3_case_read_i32(c, &doc, NULL, "doc")); // (B, T)
    DSV3_CALL(dsv3_case_read_f32(c, &q, NULL, "q"));                  // (B, T, H, Dqk)
    DSV3_CALL(dsv3_case_read_f32(c, &k, NULL, "k"));                  // (B, T, H, Dqk)
    DSV3_CALL(dsv3_case_read_f32(c, &v, NULL, "v"));                  // (B, T, H, Dv)
    DSV3_CALL(dsv3_case_read_f32(c, &dout, NULL, "dout"));            // (B, T, H, Dv)
    const int64_t nqk = B * T * H * Dqk, nv = B * T * H * Dv;
    DSV3_CALL(DSV3_CASE_BUFFER(c, out, nv, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, lse, B * H * T, NULL)); // (B, H, T)
    DSV3_CALL(DSV3_CASE_BUFFER(c, dq, nqk, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, dk, nqk, NULL));
    DSV3_CALL(DSV3_CASE_BUFFER(c, dv, nv, NULL));
    const Dsv3OpShape shape = {.B = B, .Tq = T, .Tk = T, .H = H, .Dqk = Dqk, .Dv = Dv};
    DSV3_CALL(kernels_test_reserve(kc, DSV3_OP_ATTENTION_FORWARD, &shape));
    DSV3_CALL(dsv3_attention_forward(kc, F32, out, lse, NULL, q, k, v, NULL, doc, B, T, T, H, Dqk,
                                     Dv, scale));
    DSV3_CALL(kernels_test_reserve(kc, DSV3_OP_ATTENTION_BACKWARD, &shape));
    DSV3_CALL(dsv3_attention_backward(kc, F32, dq, dk, dv, dout, q, k, v, out, lse, NULL, NULL, doc,
                                      B, T, T, H, Dqk, Dv, scale));
    DSV3_CALL(dsv3_case_check(c, "out", out, nv, "out"));
    DSV3_CALL(dsv3_case_check(c, "lse", lse, B * H * T, "lse"));
    DSV3_CALL(dsv3_case_check(c, "dq", dq, nqk, "dq"));
    DSV3_CALL(dsv3_case_check(c, "dk", dk, nqk, "dk"));
    DSV3_CALL(dsv3_case_check(c, "dv", dv, nv, "dv"));
    return DSV3_OK;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s CASE_DIR\n", argv[0]);
        return 2;
    }
    Dsv3Case c;
    dsv3_case_init(&c, argv[1], TOLERANCE, DSV3_CASE_LINE_TABLE, CASE_WIDTH, WHAT_WIDTH);
    for (int i = 0; i < IMPL_COUNT; i++) {
        const Impl *impl = &IMPLS[i];
        Dsv3KernelContext kc;
        if (dsv3_kernel_context_create(&kc, impl->backend, KERNELS_TEST_NO_DEVICE) != DSV3_OK) {
            fprintf(stderr, "%s", dsv3_error_text());
            return 1;
        }
        for (size_t j = 0; j < COUNT(ROPE_TABLE_CASES); j++)
            DSV3_CASE_RUN(&c, impl->name, ROPE_TABLE_CASES[j], test_rope_tables(&c, &kc));
        for (size_t j = 0; j < COUNT(ROPE_APPLY_CASES); j++)
            DSV3_CASE_RUN(&c, impl->name, ROPE_APPLY_CASES[j], test_rope_apply(&c, &kc));
        for (size_t j = 0; j < COUNT(ATTENTION_CASES); j++)
            DSV3_CASE_RUN(&c, impl->name, ATTENTION_CASES[j], test_attention(&c, &kc));
        kernels_test_release(&kc);
    }
    if (dsv3_alloc_current_bytes() != 0) {
        printf("%zu bytes still allocated at the end\n", dsv3_alloc_current_bytes());
        c.failures++;
    }
    printf("%d check(s) failed\n", c.failures);
    return c.failures == 0 ? 0 : 1;
}
