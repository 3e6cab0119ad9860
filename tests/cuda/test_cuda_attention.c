// test_cuda_attention: the CUDA attention ops (attention_forward, attention_backward,
// attention_merge) against the reference CPU backend on the same random inputs: causal masks,
// query positions (a context-parallel rank's slice, and random positions with some −1 that see
// no key, so Tq != Tk), document masks with several documents per sequence, odd sizes (T = 1,
// 37, 130, 300: one tile, ragged tiles, many tiles; B = 900: more query rows than one grid of
// the backward's delta kernel), small and real head dims (16/8, 5/3, 192/128, the largest
// 256/256), B and H > 1; forward out and lse, backward dq, dk, dv, merge.
// The backward runs on both sides from the CUDA forward's out and lse, so that it is compared
// alone; and once from an lse that is not its forward's (that of more keys, as ring attention
// passes it, and −∞ for some queries, which then get no gradient).
//
// Tolerances, relative (‖cuda − ref‖ / ‖ref‖ per tensor):
// - fp32: 1e-5 (TOLERANCE_F32): fp32 sums in the tiles' order against the reference's sums in
//   double.
// - bf16 tensors: the host inputs are rounded to bf16 first, so that both sides see the same
//   values, and the reference computes on them in fp32. out, dq, dk, dv are stored as bf16:
//   one rounding of a value computed in fp32, at most 2^-9 ≈ 1.95e-3 relative per element;
//   2e-2 (TOLERANCE_BF16) leaves room for the fp32 sums in another order. lse stays fp32:
//   1e-5.
// - bf16 GEMMs (dsv3_kernel_context_set_matmul) on fp32 tensors: q, k, v, dout, P and dS are
//   rounded to bf16 before the products, so every output must be close to fp32, within 2e-2,
//   but not equal, above 1e-5 (so the rounding really happens), as the CPU's bf16 test asks.
// Also: outputs and gradients written over garbage, two runs bit-identical (the backward sums
// in a fixed order, no atomics), a query position outside [−1, Tk) reported by
// dsv3_synchronize as a data fault naming the op, and the host argument checks (DSV3_ERR_USAGE
// with the CPU's messages under the CUDA op names).
//
// Legend: B sequences, T keys per sequence, Tq queries per sequence, H heads, Dqk / Dv
// query-key / value head dims.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "tests/cuda/cuda_test.h"

#define TOLERANCE_F32 1e-5
#define TOLERANCE_BF16 2e-2
// bf16 GEMMs must move the results by more than this from fp32 (their operands are rounded).
#define BF16_MATMUL_FLOOR 1e-5
// The softmax scale over Dqk^-0.5: an mscale-like factor, as the CPU tests use.
#define MSCALE 1.3f

enum {
    // A dtype that no backend knows.
    BAD_DTYPE = 7,
    // Head dims above the CUDA kernels' limit (256).
    TOO_WIDE = 257,
    // One query in about this many of the random positions sees no key (−1).
    NO_KEY_ONE_IN = 8,
};

static const Dsv3TensorDtype F32 = DSV3_TENSOR_F32, BF16 = DSV3_TENSOR_BF16;

// ---- buffers ----

static int32_t *ints(int64_t count) { return test_buffer(count, sizeof(int32_t)); }

static float *copy_of(const float *src, int64_t count) {
    float *dst = test_floats(count);
    memcpy(dst, src, (size_t)count * sizeof(float));
    return dst;
}

// A device tensor of dtype holding the host values x (count).
static void *upload(Dsv3TensorDtype dtype, const float *x, int64_t count) {
    return dtype == BF16 ? cuda_test_upload_bf16(x, count)
                         : cuda_test_upload(x, (size_t)count * sizeof(float));
}

static float *download(Dsv3TensorDtype dtype, const void *device, int64_t count) {
    return dtype == BF16 ? cuda_test_download_bf16(device, count)
                         : cuda_test_download_floats(device, count);
}

// A device copy of x (count), or NULL when x is NULL (no positions, no documents).
static int32_t *upload_ints(const int32_t *x, int64_t count) {
    return x == NULL ? NULL : cuda_test_upload(x, (size_t)count * sizeof(int32_t));
}

// Frees the host and device buffers of a shape before the next one (the per-case teardown,
// which also turns bf16 GEMMs off).
static void next_shape(void) { (void)cuda_test_teardown_case(NULL); }

// ---- random inputs (splitmix64: the same numbers on every machine) ----

static uint64_t rng_state;

static float *random_floats(int64_t count, float scale) {
    float *x = test_floats(count);
    for (int64_t i = 0; i < count; i++)
        x[i] = kernels_test_uniform(&rng_state, scale);
    return x;
}

static int64_t rng_below(int64_t bound) {
    return (int64_t)(kernels_test_rng_next(&rng_state) % (uint64_t)bound);
}

// Document ids (B, T) as torchtitan derives them from EOS tokens: each id runs until (and
// including) its EOS; every position ends a document with probability 1 / mean_length.
static int32_t *random_documents(int64_t B, int64_t T, int mean_length) {
    int32_t *doc = ints(B * T);
    for (int64_t b = 0; b < B; b++) {
        int32_t id = 0;
        for (int64_t t = 0; t < T; t++) {
            doc[b * T + t] = id;
            if (rng_below(mean_length) == 0) id++;
        }
    }
    return doc;
}

// ---- cases ----

// Which queries a case asks about: every position in order (q_pos NULL), the load-balanced
// slice of a context-parallel rank (cp 2, rank 1: chunks 1 and 2 of 4; T a multiple of 4), or
// random positions in random order, some repeated and some −1, different in each sequence.
typedef enum { QUERIES_ALL, QUERIES_CP_SLICE, QUERIES_RANDOM } Queries;

typedef struct {
    int64_t B, T, H, Dqk, Dv;
    int doc_mean_length; // 0: causal only
    Queries queries;
} AttentionCase;

// How a case computes: the dtype of its tensors, and whether the CUDA GEMMs round to bf16.
typedef struct {
    Dsv3TensorDtype dtype;
    int bf16_matmul;
} Precision;

static const Precision FP32 = {DSV3_TENSOR_F32, 0}, BF16_TENSORS = {DSV3_TENSOR_BF16, 0},
                       BF16_MATMUL = {DSV3_TENSOR_F32, 1};

// The query positions (B, *Tq) of a case (NULL for QUERIES_ALL, where *Tq = T).
static int32_t *case_positions(const AttentionCase *tc, int64_t *Tq) {
    const int64_t B = tc->B, T = tc->T;
    *Tq = T;
    if (tc->queries == QUERIES_ALL) return NULL;
    if (tc->queries == QUERIES_CP_SLICE) {
        const int64_t chunk = T / 4; // rank 1 of 2 holds chunks 1 and 2
        *Tq = 2 * chunk;
        int32_t *pos = ints(B * *Tq);
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < chunk; i++) {
                pos[b * *Tq + i] = (int32_t)(chunk + i);
                pos[b * *Tq + chunk + i] = (int32_t)(2 * chunk + i);
            }
        return pos;
    }
    *Tq = T / 2 + 1;
    int32_t *pos = ints(B * *Tq);
    for (int64_t n = 0; n < B * *Tq; n++) {
        const int64_t p = rng_below(T + T / NO_KEY_ONE_IN + 1);
        pos[n] = p >= T ? -1 : (int32_t)p;
    }
    return pos;
}

static void describe(char *out, size_t capacity, const AttentionCase *tc, Precision precision,
                     const char *what) {
    static const char *const QUERY_NAMES[] = {"causal", "cp slice", "random positions"};
    snprintf(out, capacity, "%s (B=%lld T=%lld H=%lld Dqk=%lld Dv=%lld, %s, docs %d, %s%s)", what,
             (long long)tc->B, (long long)tc->T, (long long)tc->H, (long long)tc->Dqk,
             (long long)tc->Dv, QUERY_NAMES[tc->queries], tc->doc_mean_length,
             precision.dtype == BF16 ? "bf16" : "f32", precision.bf16_matmul ? ", bf16 GEMMs" : "");
}

// ---- checks ----

// A CUDA result against the reference's, at the precision's tolerance (and, with bf16 GEMMs,
// not closer than BF16_MATMUL_FLOOR).
static void expect_result(const float *got, const float *want, int64_t count, double tolerance,
                          Precision precision, const AttentionCase *tc, const char *what) {
    char label[256];
    describe(label, sizeof label, tc, precision, what);
    cuda_test_expect_close(got, want, count, tolerance, label);
    const double err = kernels_test_relative_error(got, want, count);
    if (precision.bf16_matmul && !(err > BF16_MATMUL_FLOOR))
        fail_msg("%s: relative error %.3e with bf16 GEMMs, expected above %.0e", label, err,
                 BF16_MATMUL_FLOOR);
}

// lse: −∞ (no key seen) at the same places on both sides, the rest compared as expect_result.
static void expect_lse(const float *got, const float *want, int64_t count, double tolerance,
                       Precision precision, const AttentionCase *tc) {
    float *g = copy_of(got, count), *w = copy_of(want, count);
    for (int64_t i = 0; i < count; i++) {
        if ((g[i] == -INFINITY) != (w[i] == -INFINITY))
            fail_msg("lse[%lld]: CUDA %g, reference %g (a query that sees no key has lse -inf)",
                     (long long)i, (double)g[i], (double)w[i]);
        if (w[i] == -INFINITY) g[i] = w[i] = 0.0f;
    }
    expect_result(g, w, count, tolerance, precision, tc, "lse");
}

static void expect_error(Dsv3Err got, const char *fragment) {
    assert_int_equal(got, DSV3_ERR_USAGE);
    if (!strstr(dsv3_error_message(), fragment))
        fail_msg("error message '%s' does not mention '%s'", dsv3_error_message(), fragment);
    dsv3_error_clear();
}

// ---- forward and backward against the reference ----

// The CUDA context with the workspace of attention's DIRECTION (FORWARD or BACKWARD) for the
// shape in scope; REF: the same for the reference.
#define CUDA_ATTENTION(DIRECTION)                                                                  \
    CUDA_SIZED(ATTENTION_##DIRECTION, .B = B, .Tq = Tq, .Tk = Tk, .H = H, .Dqk = Dqk, .Dv = Dv)
#define REF_ATTENTION(DIRECTION)                                                                   \
    REF_SIZED(ATTENTION_##DIRECTION, .B = B, .Tq = Tq, .Tk = Tk, .H = H, .Dqk = Dqk, .Dv = Dv)

static void run_case(const AttentionCase *tc, Precision precision) {
    const Dsv3TensorDtype dtype = precision.dtype;
    const int64_t B = tc->B, Tk = tc->T, H = tc->H, Dqk = tc->Dqk, Dv = tc->Dv;
    int64_t Tq = 0;
    const int32_t *q_pos = case_positions(tc, &Tq);
    const int64_t nq = B * Tq * H * Dqk, no = B * Tq * H * Dv, nl = B * H * Tq;
    const int64_t nk = B * Tk * H * Dqk, nv = B * Tk * H * Dv;
    const float scale = MSCALE / sqrtf((float)Dqk);
    float *q = random_floats(nq, 2.0f), *k = random_floats(nk, 2.0f);
    float *v = random_floats(nv, 1.0f), *dout = random_floats(no, 1.0f);
    if (dtype == BF16) {
        cuda_test_round_bf16(q, nq);
        cuda_test_round_bf16(k, nk);
        cuda_test_round_bf16(v, nv);
        cuda_test_round_bf16(dout, no);
    }
    const int32_t *doc =
        tc->doc_mean_length > 0 ? random_documents(B, Tk, tc->doc_mean_length) : NULL;
    if (precision.bf16_matmul) cuda_test_ok(dsv3_kernel_context_set_matmul(&cuda_ctx, BF16));
    const double tol_out = dtype == BF16 || precision.bf16_matmul ? TOLERANCE_BF16 : TOLERANCE_F32;
    const double tol_lse = precision.bf16_matmul ? TOLERANCE_BF16 : TOLERANCE_F32;

    // Forward, the CUDA outputs starting as garbage.
    const void *q_d = upload(dtype, q, nq), *k_d = upload(dtype, k, nk),
               *v_d = upload(dtype, v, nv);
    const void *dout_d = upload(dtype, dout, no);
    const int32_t *q_pos_d = upload_ints(q_pos, B * Tq), *doc_d = upload_ints(doc, B * Tk);
    void *out_d = upload(dtype, random_floats(no, 1.0f), no);
    float *lse_d = upload(F32, random_floats(nl, 1.0f), nl);
    cuda_test_ok(dsv3_attention_forward(CUDA_ATTENTION(FORWARD), dtype, out_d, lse_d, NULL, q_d,
                                        k_d, v_d, q_pos_d, doc_d, B, Tq, Tk, H, Dqk, Dv, scale));
    const float *out = download(dtype, out_d, no), *lse = download(F32, lse_d, nl);
    float *out_r = test_floats(no), *lse_r = test_floats(nl);
    cuda_test_ok(dsv3_attention_forward(REF_ATTENTION(FORWARD), F32, out_r, lse_r, NULL, q, k, v,
                                        q_pos, doc, B, Tq, Tk, H, Dqk, Dv, scale));
    expect_result(out, out_r, no, tol_out, precision, tc, "forward out");
    expect_lse(lse, lse_r, nl, tol_lse, precision, tc);

    // Backward from the CUDA forward's out and lse on both sides, the gradients over garbage.
    void *dq_d = upload(dtype, random_floats(nq, 1.0f), nq);
    void *dk_d = upload(dtype, random_floats(nk, 1.0f), nk);
    void *dv_d = upload(dtype, random_floats(nv, 1.0f), nv);
    cuda_test_ok(dsv3_attention_backward(CUDA_ATTENTION(BACKWARD), dtype, dq_d, dk_d, dv_d, dout_d,
                                         q_d, k_d, v_d, out_d, lse_d, NULL, q_pos_d, doc_d, B, Tq,
                                         Tk, H, Dqk, Dv, scale));
    const float *dq = download(dtype, dq_d, nq), *dk = download(dtype, dk_d, nk);
    const float *dv = download(dtype, dv_d, nv);
    float *dq_r = test_floats(nq), *dk_r = test_floats(nk), *dv_r = test_floats(nv);
    cuda_test_ok(dsv3_attention_backward(REF_ATTENTION(BACKWARD), F32, dq_r, dk_r, dv_r, dout, q, k,
                                         v, out, lse, NULL, q_pos, doc, B, Tq, Tk, H, Dqk, Dv,
                                         scale));
    expect_result(dq, dq_r, nq, tol_out, precision, tc, "dq");
    expect_result(dk, dk_r, nk, tol_out, precision, tc, "dk");
    expect_result(dv, dv_r, nv, tol_out, precision, tc, "dv");
    next_shape();
}

static void run_cases(const AttentionCase *cases, size_t count, Precision precision) {
    for (size_t i = 0; i < count; i++)
        run_case(&cases[i], precision);
}

#define RUN_CASES(cases, precision) run_cases(cases, sizeof cases / sizeof cases[0], precision)

// {B, T, H, Dqk, Dv, doc_mean_length, queries}
static const AttentionCase CAUSAL_CASES[] = {
    {1, 1, 1, 16, 8, 0, QUERIES_ALL},      // one token: out = v
    {2, 37, 3, 16, 8, 0, QUERIES_ALL},     // one ragged tile
    {1, 64, 1, 5, 3, 0, QUERIES_ALL},      // exactly two tiles, tiny odd head dims
    {1, 130, 2, 24, 16, 0, QUERIES_ALL},   // ragged after four full tiles
    {1, 300, 2, 16, 8, 0, QUERIES_ALL},    // many tiles
    {1, 130, 4, 192, 128, 0, QUERIES_ALL}, // MLA's head dims
    {1, 40, 1, 256, 256, 0, QUERIES_ALL},  // the largest head dims
    {1, 33, 2, 40, 200, 0, QUERIES_ALL},   // Dv past Dqk
    {900, 40, 1, 4, 4, 0, QUERIES_ALL},    // more query rows than one grid of delta's warps
};

static const AttentionCase DOCUMENT_CASES[] = {
    {1, 1, 1, 16, 8, 3, QUERIES_ALL},       {2, 37, 3, 16, 8, 3, QUERIES_ALL}, // short documents
    {1, 130, 2, 24, 16, 20, QUERIES_ALL},   {2, 130, 2, 16, 8, 40, QUERIES_ALL},
    {2, 200, 1, 8, 8, 1000, QUERIES_ALL},   // mostly one document: like causal
    {1, 300, 2, 16, 8, 60, QUERIES_ALL},    // documents across many tiles
    {1, 130, 2, 192, 128, 40, QUERIES_ALL}, // MLA's head dims
};

static const AttentionCase POSITION_CASES[] = {
    {2, 128, 2, 24, 16, 0, QUERIES_CP_SLICE},    {2, 132, 2, 24, 16, 20, QUERIES_CP_SLICE},
    {1, 37, 2, 16, 8, 0, QUERIES_RANDOM},        {1, 130, 3, 16, 8, 0, QUERIES_RANDOM},
    {2, 90, 1, 8, 8, 10, QUERIES_RANDOM},        {1, 300, 1, 8, 8, 40, QUERIES_RANDOM},
    {1, 1, 1, 16, 8, 0, QUERIES_RANDOM}, // one key, one query
    {1, 256, 2, 192, 128, 30, QUERIES_CP_SLICE},
};

static const AttentionCase BF16_CASES[] = {
    {2, 37, 3, 16, 8, 0, QUERIES_ALL},
    {1, 130, 2, 24, 16, 20, QUERIES_ALL},
    {2, 90, 1, 8, 8, 10, QUERIES_RANDOM},
    {1, 130, 2, 192, 128, 0, QUERIES_CP_SLICE},
};

static void test_attention_causal_matches_reference(void **state) {
    (void)state;
    rng_state = 1;
    RUN_CASES(CAUSAL_CASES, FP32);
}

static void test_attention_with_documents_matches_reference(void **state) {
    (void)state;
    rng_state = 2;
    RUN_CASES(DOCUMENT_CASES, FP32);
}

static void test_attention_at_query_positions_matches_reference(void **state) {
    (void)state;
    rng_state = 3;
    RUN_CASES(POSITION_CASES, FP32);
}

static void test_attention_on_bf16_tensors_matches_reference(void **state) {
    (void)state;
    rng_state = 4;
    RUN_CASES(BF16_CASES, BF16_TENSORS);
}

static void test_attention_with_bf16_gemms_is_close_to_fp32(void **state) {
    (void)state;
    rng_state = 5;
    RUN_CASES(BF16_CASES, BF16_MATMUL);
}

// ---- backward from the out and lse of more keys ----

// Backward with an lse that is not its forward's: that of the attention over more keys (ring
// attention merges the shards first: every finite lse grows, here by LSE_OF_MORE_KEYS), and −∞
// for one query in LSE_NONE_ONE_IN, which then gets no gradient (kernels.h) even where it sees
// keys. Both sides take the same out and lse.
static void check_backward_given_lse(const AttentionCase *tc) {
    const float LSE_OF_MORE_KEYS = 0.5f;
    const int64_t LSE_NONE_ONE_IN = 5;
    const int64_t B = tc->B, Tk = tc->T, H = tc->H, Dqk = tc->Dqk, Dv = tc->Dv;
    int64_t Tq = 0;
    const int32_t *q_pos = case_positions(tc, &Tq);
    const int64_t nq = B * Tq * H * Dqk, no = B * Tq * H * Dv, nl = B * H * Tq;
    const int64_t nk = B * Tk * H * Dqk, nv = B * Tk * H * Dv;
    const float scale = MSCALE / sqrtf((float)Dqk);
    const float *q = random_floats(nq, 2.0f), *k = random_floats(nk, 2.0f);
    const float *v = random_floats(nv, 1.0f), *dout = random_floats(no, 1.0f);
    const int32_t *doc =
        tc->doc_mean_length > 0 ? random_documents(B, Tk, tc->doc_mean_length) : NULL;
    const void *q_d = upload(F32, q, nq), *k_d = upload(F32, k, nk), *v_d = upload(F32, v, nv);
    const int32_t *q_pos_d = upload_ints(q_pos, B * Tq), *doc_d = upload_ints(doc, B * Tk);
    void *out_d = cuda_test_device((size_t)no * sizeof(float));
    float *lse_d = cuda_test_device((size_t)nl * sizeof(float));
    cuda_test_ok(dsv3_attention_forward(CUDA_ATTENTION(FORWARD), F32, out_d, lse_d, NULL, q_d, k_d,
                                        v_d, q_pos_d, doc_d, B, Tq, Tk, H, Dqk, Dv, scale));
    const float *out = download(F32, out_d, no);
    float *lse = download(F32, lse_d, nl);
    for (int64_t i = 0; i < nl; i++)
        lse[i] = i % LSE_NONE_ONE_IN == 0 ? -INFINITY : lse[i] + LSE_OF_MORE_KEYS;
    void *dq_d = upload(F32, random_floats(nq, 1.0f), nq);
    void *dk_d = upload(F32, random_floats(nk, 1.0f), nk);
    void *dv_d = upload(F32, random_floats(nv, 1.0f), nv);
    cuda_test_ok(dsv3_attention_backward(
        CUDA_ATTENTION(BACKWARD), F32, dq_d, dk_d, dv_d, upload(F32, dout, no), q_d, k_d, v_d,
        out_d, upload(F32, lse, nl), NULL, q_pos_d, doc_d, B, Tq, Tk, H, Dqk, Dv, scale));
    const float *dq = download(F32, dq_d, nq), *dk = download(F32, dk_d, nk);
    const float *dv = download(F32, dv_d, nv);
    float *dq_r = test_floats(nq), *dk_r = test_floats(nk), *dv_r = test_floats(nv);
    cuda_test_ok(dsv3_attention_backward(REF_ATTENTION(BACKWARD), F32, dq_r, dk_r, dv_r, dout, q, k,
                                         v, out, lse, NULL, q_pos, doc, B, Tq, Tk, H, Dqk, Dv,
                                         scale));
    expect_result(dq, dq_r, nq, TOLERANCE_F32, FP32, tc, "dq, given lse");
    expect_result(dk, dk_r, nk, TOLERANCE_F32, FP32, tc, "dk, given lse");
    expect_result(dv, dv_r, nv, TOLERANCE_F32, FP32, tc, "dv, given lse");
    for (int64_t b = 0; b < B; b++) // the queries at −∞: dq exactly 0
        for (int64_t h = 0; h < H; h++)
            for (int64_t t = 0; t < Tq; t++) {
                if (lse[(b * H + h) * Tq + t] != -INFINITY) continue;
                const float *row = dq + ((b * Tq + t) * H + h) * Dqk; // (Dqk)
                for (int64_t d = 0; d < Dqk; d++)
                    if (row[d] != 0.0f)
                        fail_msg("dq[b=%lld, t=%lld, h=%lld, %lld] = %g with lse -inf, expected 0",
                                 (long long)b, (long long)t, (long long)h, (long long)d,
                                 (double)row[d]);
            }
    next_shape();
}

static void test_attention_backward_takes_the_lse_it_is_given(void **state) {
    (void)state;
    rng_state = 8;
    const AttentionCase cases[] = {
        {2, 70, 2, 16, 8, 0, QUERIES_ALL},
        {1, 90, 2, 24, 16, 10, QUERIES_RANDOM},
        {1, 130, 2, 192, 128, 30, QUERIES_CP_SLICE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_backward_given_lse(&cases[i]);
}

// ---- determinism ----

// Two runs of forward and of backward (each from its own forward) give the same bits.
static void check_runs_identical(const AttentionCase *tc, Dsv3TensorDtype dtype) {
    const int64_t B = tc->B, Tk = tc->T, H = tc->H, Dqk = tc->Dqk, Dv = tc->Dv;
    int64_t Tq = 0;
    const int32_t *positions = case_positions(tc, &Tq); // sets Tq
    const int32_t *q_pos = upload_ints(positions, B * Tq);
    const int64_t nq = B * Tq * H * Dqk, no = B * Tq * H * Dv, nl = B * H * Tq;
    const int64_t nk = B * Tk * H * Dqk, nv = B * Tk * H * Dv;
    const float scale = MSCALE / sqrtf((float)Dqk);
    const void *q = upload(dtype, random_floats(nq, 2.0f), nq);
    const void *k = upload(dtype, random_floats(nk, 2.0f), nk);
    const void *v = upload(dtype, random_floats(nv, 1.0f), nv);
    const void *dout = upload(dtype, random_floats(no, 1.0f), no);
    const int32_t *doc = upload_ints(random_documents(B, Tk, tc->doc_mean_length), B * Tk);
    const float *out[2], *lse[2], *dq[2], *dk[2], *dv[2];
    for (int run = 0; run < 2; run++) {
        void *out_d = cuda_test_device((size_t)no * sizeof(float));
        float *lse_d = cuda_test_device((size_t)nl * sizeof(float));
        void *dq_d = cuda_test_device((size_t)nq * sizeof(float));
        void *dk_d = cuda_test_device((size_t)nk * sizeof(float));
        void *dv_d = cuda_test_device((size_t)nv * sizeof(float));
        cuda_test_ok(dsv3_attention_forward(CUDA_ATTENTION(FORWARD), dtype, out_d, lse_d, NULL, q,
                                            k, v, q_pos, doc, B, Tq, Tk, H, Dqk, Dv, scale));
        cuda_test_ok(dsv3_attention_backward(CUDA_ATTENTION(BACKWARD), dtype, dq_d, dk_d, dv_d,
                                             dout, q, k, v, out_d, lse_d, NULL, q_pos, doc, B, Tq,
                                             Tk, H, Dqk, Dv, scale));
        out[run] = download(dtype, out_d, no);
        lse[run] = download(F32, lse_d, nl);
        dq[run] = download(dtype, dq_d, nq);
        dk[run] = download(dtype, dk_d, nk);
        dv[run] = download(dtype, dv_d, nv);
    }
    assert_memory_equal(out[0], out[1], (size_t)no * sizeof(float));
    assert_memory_equal(lse[0], lse[1], (size_t)nl * sizeof(float));
    assert_memory_equal(dq[0], dq[1], (size_t)nq * sizeof(float));
    assert_memory_equal(dk[0], dk[1], (size_t)nk * sizeof(float));
    assert_memory_equal(dv[0], dv[1], (size_t)nv * sizeof(float));
    next_shape();
}

static void test_attention_runs_are_bit_identical(void **state) {
    (void)state;
    rng_state = 6;
    const AttentionCase tc = {2, 300, 3, 24, 16, 40, QUERIES_RANDOM};
    check_runs_identical(&tc, F32);
    check_runs_identical(&tc, BF16);
}

// ---- merge ----

// Merge of random (out, lse) and (part_out, part_lse) with sides at −∞: the running side empty
// (the part is taken), the part empty (nothing changes), both empty.
static void check_merge(Dsv3TensorDtype dtype, int64_t B, int64_t T, int64_t H, int64_t Dv) {
    const int64_t no = B * T * H * Dv, nl = B * H * T;
    float *out = random_floats(no, 1.0f), *part_out = random_floats(no, 1.0f);
    float *lse = random_floats(nl, 3.0f), *part_lse = random_floats(nl, 3.0f);
    if (dtype == BF16) {
        cuda_test_round_bf16(out, no);
        cuda_test_round_bf16(part_out, no);
    }
    lse[nl - 1] = -INFINITY;
    if (nl > 1) part_lse[0] = -INFINITY;
    if (nl > 2) lse[nl / 2] = part_lse[nl / 2] = -INFINITY;
    void *out_d = upload(dtype, out, no);
    float *lse_d = upload(F32, lse, nl);
    cuda_test_ok(dsv3_attention_merge(&cuda_ctx, dtype, out_d, lse_d, upload(dtype, part_out, no),
                                      upload(F32, part_lse, nl), B, T, H, Dv));
    const float *got_out = download(dtype, out_d, no), *got_lse = download(F32, lse_d, nl);
    cuda_test_ok(dsv3_attention_merge(&ref_ctx, F32, out, lse, part_out, part_lse, B, T, H, Dv));
    const AttentionCase tc = {B, T, H, 0, Dv, 0, QUERIES_ALL};
    const Precision precision = {dtype, 0};
    expect_result(got_out, out, no, dtype == BF16 ? TOLERANCE_BF16 : TOLERANCE_F32, precision, &tc,
                  "merged out");
    expect_lse(got_lse, lse, nl, TOLERANCE_F32, precision, &tc);
    next_shape();
}

static void test_attention_merge_matches_reference(void **state) {
    (void)state;
    rng_state = 7;
    const Dsv3TensorDtype dtypes[] = {F32, BF16};
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++) {
        check_merge(dtypes[i], 1, 1, 1, 1);
        check_merge(dtypes[i], 2, 5, 3, 7);
        check_merge(dtypes[i], 2, 37, 3, 130);    // rows longer than a warp
        check_merge(dtypes[i], 1, 2100, 16, 128); // more rows than one grid of warps
    }
}

// ---- data faults ----

// A query position outside [−1, Tk) is found by the kernels: DSV3_OK from the op, then
// DSV3_ERR_USAGE naming the op from the next synchronisation, once.
static void test_attention_reports_positions_outside_the_keys(void **state) {
    (void)state;
    const int64_t B = 1, Tq = 2, Tk = 3, H = 1, Dqk = 4, Dv = 4;
    const void *x = cuda_test_device((size_t)(B * Tk * H * Dqk) * sizeof(float));
    void *out = cuda_test_device((size_t)(B * Tq * H * Dv) * sizeof(float));
    void *dq = cuda_test_device((size_t)(B * Tq * H * Dqk) * sizeof(float));
    void *dk = cuda_test_device((size_t)(B * Tk * H * Dqk) * sizeof(float));
    void *dv = cuda_test_device((size_t)(B * Tk * H * Dv) * sizeof(float));
    float *lse = cuda_test_device((size_t)(B * H * Tq) * sizeof(float));
    const int32_t past_the_keys[] = {1, 3}, below_minus_one[] = {-2, 0}; // (B, Tq)
    cuda_test_ok(dsv3_attention_forward(CUDA_ATTENTION(FORWARD), F32, out, lse, NULL, x, x, x,
                                        upload_ints(past_the_keys, B * Tq), NULL, B, Tq, Tk, H, Dqk,
                                        Dv, 0.5f));
    expect_error(dsv3_synchronize(&cuda_ctx), dsv3_op_name(DSV3_OP_ATTENTION_FORWARD));
    cuda_test_ok(dsv3_synchronize(&cuda_ctx)); // reported once
    cuda_test_ok(dsv3_attention_backward(CUDA_ATTENTION(BACKWARD), F32, dq, dk, dv, out, x, x, x,
                                         out, lse, NULL, upload_ints(below_minus_one, B * Tq), NULL,
                                         B, Tq, Tk, H, Dqk, Dv, 0.5f));
    expect_error(dsv3_synchronize(&cuda_ctx), dsv3_op_name(DSV3_OP_ATTENTION_BACKWARD));
    cuda_test_ok(dsv3_synchronize(&cuda_ctx));
}

// ---- argument checks ----

static void test_attention_rejects_bad_arguments(void **state) {
    (void)state;
    void *x = cuda_test_device(64 * sizeof(float));
    float *lse = cuda_test_device(8 * sizeof(float));
    const int32_t *pos = upload_ints((const int32_t[]){0, 1}, 2);
    const Dsv3KernelContext *c = &cuda_ctx; // no workspace
    // Forward: (B, Tq, Tk, H, Dqk, Dv) = (1, 2, 2, 1, 4, 4) unless the case says otherwise.
    expect_error(dsv3_attention_forward(c, F32, NULL, lse, NULL, x, x, x, NULL, NULL, 1, 2, 2, 1, 4,
                                        4, 0.5f),
                 "attention_forward: out, lse, q, k, v must not be NULL");
    expect_error(dsv3_attention_forward(c, (Dsv3TensorDtype)BAD_DTYPE, x, lse, NULL, x, x, x, NULL,
                                        NULL, 1, 2, 2, 1, 4, 4, 0.5f),
                 "attention_forward");
    expect_error(
        dsv3_attention_forward(c, F32, x, lse, NULL, x, x, x, NULL, NULL, 1, 0, 0, 1, 4, 4, 0.5f),
        "B, Tq, Tk, H must be >= 1");
    expect_error(
        dsv3_attention_forward(c, F32, x, lse, NULL, x, x, x, NULL, NULL, 1, 2, 2, 1, 0, 4, 0.5f),
        "head dims Dqk and Dv must be >= 1");
    expect_error(dsv3_attention_forward(c, F32, x, lse, NULL, x, x, x, NULL, NULL, 1, 2, 2, 1,
                                        TOO_WIDE, 4, 0.5f),
                 "head dims Dqk and Dv up to 256");
    expect_error(dsv3_attention_forward(c, F32, x, lse, NULL, x, x, x, NULL, NULL, 1, 2, 2, 1, 4,
                                        TOO_WIDE, 0.5f),
                 "head dims Dqk and Dv up to 256");
    expect_error(
        dsv3_attention_forward(c, F32, x, lse, NULL, x, x, x, NULL, NULL, 1, 2, 2, 1, 4, 4, 0.0f),
        "scale must be finite and > 0");
    expect_error(
        dsv3_attention_forward(c, F32, x, lse, NULL, x, x, x, NULL, NULL, 1, 2, 2, 1, 4, 4, NAN),
        "scale must be finite and > 0");
    expect_error(
        dsv3_attention_forward(c, F32, x, lse, NULL, x, x, x, NULL, NULL, 1, 2, 3, 1, 4, 4, 0.5f),
        "without query positions Tq must equal Tk");
    // With positions Tq != Tk is fine (forward needs no workspace).
    cuda_test_ok(
        dsv3_attention_forward(c, F32, x, lse, NULL, x, x, x, pos, NULL, 1, 2, 3, 1, 4, 4, 0.5f));
    cuda_test_ok(dsv3_synchronize(c));
    // Backward.
    expect_error(dsv3_attention_backward(c, F32, x, x, x, x, x, x, x, x, NULL, NULL, NULL, NULL, 1,
                                         2, 2, 1, 4, 4, 0.5f),
                 "attention_backward: dq, dk, dv, dout, q, k, v, out, lse must not be NULL");
    expect_error(dsv3_attention_backward(c, (Dsv3TensorDtype)BAD_DTYPE, x, x, x, x, x, x, x, x, lse,
                                         NULL, NULL, NULL, 1, 2, 2, 1, 4, 4, 0.5f),
                 "attention_backward");
    expect_error(dsv3_attention_backward(c, F32, x, x, x, x, x, x, x, x, lse, NULL, NULL, NULL, 1,
                                         2, 2, 0, 4, 4, 0.5f),
                 "B, Tq, Tk, H must be >= 1");
    expect_error(dsv3_attention_backward(c, F32, x, x, x, x, x, x, x, x, lse, NULL, NULL, NULL, 1,
                                         2, 2, 1, 4, -1, 0.5f),
                 "head dims Dqk and Dv must be >= 1");
    expect_error(dsv3_attention_backward(c, F32, x, x, x, x, x, x, x, x, lse, NULL, NULL, NULL, 1,
                                         2, 2, 1, 4, 4, -1.0f),
                 "scale must be finite and > 0");
    expect_error(dsv3_attention_backward(c, F32, x, x, x, x, x, x, x, x, lse, NULL, NULL, NULL, 1,
                                         2, 2, 1, 4, 4, 0.5f),
                 "workspace"); // delta needs one
    // Merge.
    expect_error(dsv3_attention_merge(c, F32, x, NULL, x, lse, 1, 2, 1, 4),
                 "attention_merge: out, lse, part_out, part_lse must not be NULL");
    expect_error(dsv3_attention_merge(c, (Dsv3TensorDtype)BAD_DTYPE, x, lse, x, lse, 1, 2, 1, 4),
                 "attention_merge");
    expect_error(dsv3_attention_merge(c, F32, x, lse, x, lse, 1, 0, 1, 4),
                 "B, T, H, Dv must be >= 1");
}

static const struct CMUnitTest cases[] = {
    CUDA_TEST(test_attention_causal_matches_reference),
    CUDA_TEST(test_attention_with_documents_matches_reference),
    CUDA_TEST(test_attention_at_query_positions_matches_reference),
    CUDA_TEST(test_attention_on_bf16_tensors_matches_reference),
    CUDA_TEST(test_attention_with_bf16_gemms_is_close_to_fp32),
    CUDA_TEST(test_attention_backward_takes_the_lse_it_is_given),
    CUDA_TEST(test_attention_runs_are_bit_identical),
    CUDA_TEST(test_attention_merge_matches_reference),
    CUDA_TEST(test_attention_reports_positions_outside_the_keys),
    CUDA_TEST(test_attention_rejects_bad_arguments),
};

CUDA_TEST_MAIN(cases)
