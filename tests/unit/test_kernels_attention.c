// Unit tests for the attention group of kernels: rope (tables, forward, backward) and
// attention (forward, backward). The fast ops are compared with the reference ops on random
// inputs of several shapes — odd sizes, one token, sequence lengths that are not a multiple
// of any tile, with and without document masks — by relative error ‖fast − ref‖ / ‖ref‖; and
// both reject bad arguments with a message that names the argument. The fast ops run on a
// DSV3_BACKEND_CPU context, the reference ops on a DSV3_BACKEND_CPU_REFERENCE one, each with
// the workspace that dsv3_workspace_bytes asks for.
//
// Legend: B sequences, T positions, H heads, Dqk / Dv query-key / value head dims, R rotary
// dims, L latent dims in front of k_pe (kv_lora_rank).
#include <math.h>
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/core/alloc.h"
#include "common/core/error.h"
#include "kernels/kernels.h"
#include "tests/kernels_test.h"

// Fast vs reference, per tensor.
#define TOLERANCE 1e-5
// torchtitan's defaults for DeepSeek-V3's rotary embedding.
#define ROPE_THETA 10000.0
#define ROPE_FACTOR 40.0
#define BETA_FAST 32.0
#define BETA_SLOW 1.0

// Every tensor of these ops is fp32.
static const Dsv3TensorDtype F32 = DSV3_TENSOR_F32;

static size_t start_bytes;
static Dsv3KernelContext cpu, reference; // the fast and the reference backend

static int record_start(void **state) {
    (void)state;
    dsv3_error_clear();
    start_bytes = dsv3_alloc_current_bytes();
    return kernels_test_contexts_create(&cpu, &reference);
}

static int check_nothing_leaked(void **state) {
    (void)state;
    kernels_test_contexts_destroy(&cpu, &reference);
    size_t now = dsv3_alloc_current_bytes();
    if (now != start_bytes) {
        print_error("%zu bytes still counted after the test (started at %zu)\n", now, start_bytes);
        return -1;
    }
    dsv3_error_clear();
    return 0;
}

// ---- helpers ----

static uint64_t rng_state;

static float uniform(float lo, float hi) {
    // xorshift64*: reproducible and the same on every platform.
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    uint64_t r = rng_state * 2685821657736338717ull;
    return lo + (hi - lo) * (float)((double)(r >> 40) / (double)(1ull << 24));
}

static float *random_floats(int64_t n, float lo, float hi) {
    float *x = NULL;
    assert_int_equal(dsv3_alloc((void **)&x, (size_t)n * sizeof *x, "test tensor"), DSV3_OK);
    for (int64_t i = 0; i < n; i++)
        x[i] = uniform(lo, hi);
    return x;
}

static void free_floats(float **x, size_t n) {
    for (size_t i = 0; i < n; i++)
        dsv3_free(x[i]);
}

static float *copy_floats(const float *x, int64_t n) {
    float *y = NULL;
    assert_int_equal(dsv3_alloc((void **)&y, (size_t)n * sizeof *y, "test copy"), DSV3_OK);
    memcpy(y, x, (size_t)n * sizeof *y);
    return y;
}

static void assert_close(const char *what, const float *fast, const float *ref, int64_t n) {
    double err = kernels_test_relative_error(fast, ref, n);
    print_message("%-28s relative error %.2e\n", what, err);
    if (!(err <= TOLERANCE)) fail_msg("%s: relative error %.3e exceeds %.0e", what, err, TOLERANCE);
}

static void assert_usage_error(Dsv3Err err, const char *expected_words) {
    assert_int_equal(err, DSV3_ERR_USAGE);
    const char *msg = dsv3_error_message();
    if (strstr(msg, expected_words) == NULL)
        fail_msg("message '%s' does not mention '%s'", msg, expected_words);
    dsv3_error_clear();
}

// Document ids as torchtitan derives them from EOS tokens: each id runs until (and including)
// its EOS. Every position ends a document with probability 1 / mean_length.
static int32_t *random_documents(int64_t B, int64_t T, int mean_length) {
    int32_t *doc = NULL;
    assert_int_equal(dsv3_alloc((void **)&doc, (size_t)(B * T) * sizeof *doc, "test docs"),
                     DSV3_OK);
    for (int64_t b = 0; b < B; b++) {
        int32_t id = 0;
        for (int64_t t = 0; t < T; t++) {
            doc[b * T + t] = id;
            if (uniform(0.0f, 1.0f) < 1.0f / (float)mean_length) id++;
        }
    }
    return doc;
}

// ---- rope ----

static void check_tables(int64_t T, int64_t R, int64_t original_seq_len) {
    const int64_t n = T * R / 2;
    float *cf = random_floats(n, 0, 1), *sf = random_floats(n, 0, 1);
    float *cr = random_floats(n, 0, 1), *sr = random_floats(n, 0, 1);
    assert_int_equal(dsv3_rope_tables(&cpu, cf, sf, T, R, ROPE_THETA, ROPE_FACTOR, BETA_FAST,
                                      BETA_SLOW, original_seq_len),
                     DSV3_OK);
    assert_int_equal(dsv3_rope_tables(&reference, cr, sr, T, R, ROPE_THETA, ROPE_FACTOR, BETA_FAST,
                                      BETA_SLOW, original_seq_len),
                     DSV3_OK);
    assert_close("cos", cf, cr, n);
    assert_close("sin", sf, sr, n);
    for (int64_t i = 0; i < n; i++) // a rotation: cos² + sin² = 1
        assert_true(fabs((double)cf[i] * cf[i] + (double)sf[i] * sf[i] - 1.0) < 1e-6);
    for (int64_t i = 0; i < R / 2; i++) { // position 0 does not rotate
        assert_true(cf[i] == 1.0f && sf[i] == 0.0f);
    }
    dsv3_free(cf);
    dsv3_free(sf);
    dsv3_free(cr);
    dsv3_free(sr);
}

static void test_rope_tables_match_reference(void **state) {
    (void)state;
    check_tables(1, 2, 4096);  // one position, one pair
    check_tables(7, 64, 4096); // no YaRN: T <= original_seq_len
    check_tables(70, 64, 16);  // YaRN, ramp inside the pairs
    check_tables(129, 8, 32);  // YaRN, correction range clamped to the dims
    check_tables(33, 64, 32);  // YaRN right past the original length
}

static void test_rope_tables_without_yarn_are_plain_frequencies(void **state) {
    (void)state;
    enum { T = 5, R = 8 };
    float c[T * R / 2], s[T * R / 2];
    assert_int_equal(
        dsv3_rope_tables(&cpu, c, s, T, R, ROPE_THETA, ROPE_FACTOR, BETA_FAST, BETA_SLOW, T),
        DSV3_OK);
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < R / 2; i++) {
            double angle = t * pow(ROPE_THETA, -2.0 * i / R);
            assert_true(fabs(c[t * R / 2 + i] - cos(angle)) < 1e-7);
            assert_true(fabs(s[t * R / 2 + i] - sin(angle)) < 1e-7);
        }
    }
}

static void test_rope_tables_with_yarn_slow_down_the_low_frequencies(void **state) {
    (void)state;
    // With original_seq_len 16 and R 64 the correction range is pairs [0, 4]: pair 0 keeps
    // its frequency, the last pair is divided by the factor.
    enum { T = 32, R = 64 };
    float c[T * R / 2], s[T * R / 2];
    assert_int_equal(
        dsv3_rope_tables(&cpu, c, s, T, R, ROPE_THETA, ROPE_FACTOR, BETA_FAST, BETA_SLOW, 16),
        DSV3_OK);
    const int t = 3, last = R / 2 - 1;
    assert_true(fabs(s[t * R / 2] - sin(3.0)) < 1e-7);
    double slow = 3.0 * pow(ROPE_THETA, -2.0 * last / R) / ROPE_FACTOR;
    assert_true(fabs(s[t * R / 2 + last] - sin(slow)) < 1e-7);
}

// q layout: x = q + (Dqk − R) inside (B, T, H, Dqk); k_pe layout: x = kv + L inside (B, T, L + R).
static void check_rope(int64_t B, int64_t T, int64_t H, int64_t row_stride, int64_t head_stride,
                       int64_t offset, int64_t R) {
    const int64_t n = B * T * row_stride, pairs = R / 2;
    float *c = NULL, *s = NULL; // (T, R/2)
    assert_int_equal(dsv3_alloc((void **)&c, (size_t)(T * pairs) * sizeof *c, "cos"), DSV3_OK);
    assert_int_equal(dsv3_alloc((void **)&s, (size_t)(T * pairs) * sizeof *s, "sin"), DSV3_OK);
    assert_int_equal(
        dsv3_rope_tables(&cpu, c, s, T, R, ROPE_THETA, ROPE_FACTOR, BETA_FAST, BETA_SLOW, 4),
        DSV3_OK);
    float *x = random_floats(n, -2, 2);
    float *fast = copy_floats(x, n), *ref = copy_floats(x, n);
    assert_int_equal(
        dsv3_rope_forward(&cpu, F32, fast + offset, c, s, B, T, H, R, row_stride, head_stride),
        DSV3_OK);
    assert_int_equal(
        dsv3_rope_forward(&reference, F32, ref + offset, c, s, B, T, H, R, row_stride, head_stride),
        DSV3_OK);
    assert_close("rope forward", fast, ref, n);
    // Channels outside the rotated slices are untouched.
    for (int64_t row = 0; row < B * T; row++) {
        for (int64_t j = 0; j < row_stride; j++) {
            int64_t rel = j - offset, inside = 0;
            for (int64_t h = 0; h < H; h++)
                inside |= rel >= h * head_stride && rel < h * head_stride + R;
            if (!inside) assert_true(fast[row * row_stride + j] == x[row * row_stride + j]);
        }
    }
    float *gfast = random_floats(n, -1, 1);
    float *gref = copy_floats(gfast, n), *g = copy_floats(gfast, n);
    assert_int_equal(
        dsv3_rope_backward(&cpu, F32, gfast + offset, c, s, B, T, H, R, row_stride, head_stride),
        DSV3_OK);
    assert_int_equal(dsv3_rope_backward(&reference, F32, gref + offset, c, s, B, T, H, R,
                                        row_stride, head_stride),
                     DSV3_OK);
    assert_close("rope backward", gfast, gref, n);
    // A rotation is orthogonal: backward undoes forward.
    assert_int_equal(
        dsv3_rope_backward(&cpu, F32, fast + offset, c, s, B, T, H, R, row_stride, head_stride),
        DSV3_OK);
    assert_close("rope backward after forward", fast, x, n);
    // <forward(x), g> = <x, backward(g)>.
    double lhs = 0.0, rhs = 0.0;
    for (int64_t i = 0; i < n; i++) {
        lhs += (double)ref[i] * g[i];
        rhs += (double)x[i] * gref[i];
    }
    assert_true(fabs(lhs - rhs) <= 1e-5 * (fabs(lhs) + 1.0));
    dsv3_free(c);
    dsv3_free(s);
    dsv3_free(x);
    dsv3_free(fast);
    dsv3_free(ref);
    dsv3_free(gfast);
    dsv3_free(gref);
    dsv3_free(g);
}

static void test_rope_on_query_heads_matches_reference(void **state) {
    (void)state;
    // (B, T, H, Dqk) with the rotary part in the last R channels of every head.
    check_rope(2, 7, 3, 3 * 24, 24, 24 - 8, 8);
    check_rope(1, 1, 1, 24, 24, 24 - 8, 8);
    check_rope(1, 70, 16, 16 * 192, 192, 192 - 64, 64);
    check_rope(3, 5, 2, 2 * 2, 2, 0, 2); // every channel rotated, R = 2
}

static void test_rope_on_shared_key_matches_reference(void **state) {
    (void)state;
    // k_pe: the last R channels of (B, T, L + R), one head.
    check_rope(2, 9, 1, 12 + 8, 0, 12, 8);
    check_rope(1, 129, 1, 512 + 64, 64, 512, 64);
}

static void test_rope_rejects_bad_arguments(void **state) {
    (void)state;
    float c[8] = {0}, s[8] = {0}, x[64] = {0};
    for (int ref = 0; ref < 2; ref++) {
        const Dsv3KernelContext *k = ref ? &reference : &cpu;
        assert_usage_error(dsv3_rope_tables(k, c, s, 2, 3, 1e4, 40, 32, 1, 4),
                           "R (rotary dims) must be even");
        assert_usage_error(dsv3_rope_tables(k, c, s, 0, 4, 1e4, 40, 32, 1, 4), "T (positions)");
        assert_usage_error(dsv3_rope_tables(k, c, s, 2, 4, 1.0, 40, 32, 1, 4), "theta");
        assert_usage_error(dsv3_rope_tables(k, c, s, 2, 4, 1e4, 0, 32, 1, 4), "factor");
        assert_usage_error(dsv3_rope_tables(k, c, s, 2, 4, 1e4, 40, 0, 1, 4), "beta_fast");
        assert_usage_error(dsv3_rope_tables(k, c, s, 2, 4, 1e4, 40, 32, 1, 0), "original_seq_len");
        assert_usage_error(dsv3_rope_tables(k, NULL, s, 2, 4, 1e4, 40, 32, 1, 4), "cos and sin");
        assert_usage_error(dsv3_rope_forward(k, F32, NULL, c, s, 1, 2, 1, 4, 4, 4),
                           "x must not be NULL");
        assert_usage_error(dsv3_rope_forward(k, F32, x, c, NULL, 1, 2, 1, 4, 4, 4), "cos and sin");
        assert_usage_error(dsv3_rope_forward(k, F32, x, c, s, 0, 2, 1, 4, 4, 4), "B, T, H");
        assert_usage_error(dsv3_rope_forward(k, F32, x, c, s, 1, 2, 1, 5, 8, 8), "R (rotary dims)");
        assert_usage_error(dsv3_rope_forward(k, F32, x, c, s, 1, 2, 2, 4, 8, 2), "head_stride");
        assert_usage_error(dsv3_rope_backward(k, F32, x, c, s, 1, 2, 2, 4, 6, 4), "row_stride");
    }
}

// ---- attention ----

// Which queries a case asks about: every position in order (q_pos NULL), the load-balanced
// slice of a context-parallel rank (cp 2, rank 1: chunks 1 and 2 of 4), or random positions
// in random order, some repeated and some −1 (no key), different in each sequence.
typedef enum { QUERIES_ALL, QUERIES_CP_SLICE, QUERIES_RANDOM } Queries;

typedef struct {
    int64_t B, T, H, Dqk, Dv;
    int doc_mean_length; // 0: causal only
    Queries queries;
} AttentionCase;

// The positions of rank `rank`'s queries under context parallelism of degree cp: chunks rank
// and 2·cp − 1 − rank of the sequence cut into 2·cp (T a multiple of 2·cp), the same in each
// of the B sequences. pos (B, T / cp).
static void cp_slice_positions(int32_t *pos, int64_t B, int64_t T, int64_t cp, int64_t rank) {
    const int64_t chunk = T / (2 * cp);
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < chunk; i++) {
            pos[b * 2 * chunk + i] = (int32_t)(rank * chunk + i);
            pos[b * 2 * chunk + chunk + i] = (int32_t)((2 * cp - 1 - rank) * chunk + i);
        }
}

// The query positions (B, Tq) of a case (NULL for QUERIES_ALL) and their count *Tq.
static int32_t *case_positions(const AttentionCase *tc, int64_t *Tq) {
    *Tq = tc->T;
    if (tc->queries == QUERIES_ALL) return NULL;
    *Tq = tc->queries == QUERIES_CP_SLICE ? tc->T / 2 : tc->T / 2 + 1;
    int32_t *pos = NULL;
    assert_int_equal(dsv3_alloc((void **)&pos, (size_t)(tc->B * *Tq) * sizeof *pos, "positions"),
                     DSV3_OK);
    if (tc->queries == QUERIES_CP_SLICE) {
        cp_slice_positions(pos, tc->B, tc->T, 2, 1);
        return pos;
    }
    for (int64_t n = 0; n < tc->B * *Tq; n++) // one in about 8 sees nothing
        pos[n] = (int32_t)((int64_t)(uniform(0.0f, 1.0f) * (float)(tc->T + tc->T / 8)) %
                           (tc->T + tc->T / 8));
    for (int64_t n = 0; n < tc->B * *Tq; n++)
        if (pos[n] >= tc->T) pos[n] = -1;
    return pos;
}

// A context sized for the attention of the shape in scope (B, Tq, Tk, H, Dqk, Dv); DIRECTION
// is FORWARD or BACKWARD.
#define ATTENTION(ctx, DIRECTION)                                                                  \
    SIZED((ctx), ATTENTION_##DIRECTION, .B = B, .Tq = Tq, .Tk = Tk, .H = H, .Dqk = Dqk, .Dv = Dv)

static void run_attention(const AttentionCase *tc, int threads_for_fast) {
    const int64_t B = tc->B, Tk = tc->T, H = tc->H, Dqk = tc->Dqk, Dv = tc->Dv;
    int64_t Tq = 0;
    int32_t *q_pos = case_positions(tc, &Tq);
    const int64_t nq = B * Tq * H * Dqk, no = B * Tq * H * Dv, nl = B * H * Tq;
    const int64_t nk = B * Tk * H * Dqk, nv = B * Tk * H * Dv;
    const float scale = 1.0f / sqrtf((float)Dqk) * 1.3f; // an mscale-like factor on top
    float *q = random_floats(nq, -2, 2), *k = random_floats(nk, -2, 2);
    float *v = random_floats(nv, -1, 1), *dout = random_floats(no, -1, 1);
    int32_t *doc = tc->doc_mean_length > 0 ? random_documents(B, Tk, tc->doc_mean_length) : NULL;
    float *out_f = random_floats(no, 0, 1), *out_r = random_floats(no, 0, 1);
    float *lse_f = random_floats(nl, 0, 1), *lse_r = random_floats(nl, 0, 1);
    float *dq_f = random_floats(nq, 0, 1), *dq_r = random_floats(nq, 0, 1);
    float *dk_f = random_floats(nk, 0, 1), *dk_r = random_floats(nk, 0, 1);
    float *dv_f = random_floats(nv, 0, 1), *dv_r = random_floats(nv, 0, 1);

    assert_int_equal(dsv3_attention_forward(ATTENTION(&reference, FORWARD), F32, out_r, lse_r, NULL,
                                            q, k, v, q_pos, doc, B, Tq, Tk, H, Dqk, Dv, scale),
                     DSV3_OK);
    assert_int_equal(dsv3_attention_backward(ATTENTION(&reference, BACKWARD), F32, dq_r, dk_r, dv_r,
                                             dout, q, k, v, out_r, lse_r, NULL, q_pos, doc, B, Tq,
                                             Tk, H, Dqk, Dv, scale),
                     DSV3_OK);
    const int threads_before = omp_get_max_threads();
    omp_set_num_threads(threads_for_fast);
    Dsv3Err fwd = dsv3_attention_forward(ATTENTION(&cpu, FORWARD), F32, out_f, lse_f, NULL, q, k, v,
                                         q_pos, doc, B, Tq, Tk, H, Dqk, Dv, scale);
    Dsv3Err bwd =
        dsv3_attention_backward(ATTENTION(&cpu, BACKWARD), F32, dq_f, dk_f, dv_f, dout, q, k, v,
                                out_f, lse_f, NULL, q_pos, doc, B, Tq, Tk, H, Dqk, Dv, scale);
    omp_set_num_threads(threads_before);
    assert_int_equal(fwd, DSV3_OK);
    assert_int_equal(bwd, DSV3_OK);
    assert_close("out", out_f, out_r, no);
    for (int64_t i = 0; i < nl; i++) // queries that see no key: −∞ on both sides
        if (lse_r[i] == -INFINITY) {
            assert_true(lse_f[i] == -INFINITY);
            lse_f[i] = lse_r[i] = 0.0f;
        }
    assert_close("lse", lse_f, lse_r, nl);
    assert_close("dq", dq_f, dq_r, nq);
    assert_close("dk", dk_f, dk_r, nk);
    assert_close("dv", dv_f, dv_r, nv);

    float *all[] = {q, k, v, dout, out_f, out_r, lse_f, lse_r, dq_f, dq_r, dk_f, dk_r, dv_f, dv_r};

    free_floats(all, sizeof all / sizeof all[0]);
    dsv3_free(doc);
    dsv3_free(q_pos);
}

static const AttentionCase causal_cases[] = {
    {1, 1, 1, 24, 16, 0},     // one token: out = v
    {2, 7, 3, 24, 16, 0},     // shorter than a tile
    {1, 70, 2, 24, 16, 0},    // one full tile and a ragged one
    {2, 129, 2, 24, 16, 0},   // ragged after two full tiles
    {1, 64, 1, 5, 3, 0},      // exactly one tile, tiny odd head dims
    {1, 130, 4, 192, 128, 0}, // MLA's head dims
    {1, 600, 2, 24, 16, 0},   // three key chunks, the last ragged
};

static const AttentionCase document_cases[] = {
    {1, 1, 1, 24, 16, 3},    {2, 7, 3, 24, 16, 3},    // several documents inside one tile
    {1, 70, 2, 24, 16, 5},   {2, 129, 2, 24, 16, 40}, // documents that cross tiles
    {2, 200, 1, 8, 8, 1000},                          // mostly one document: like causal
    {1, 257, 2, 24, 16, 20}, {1, 530, 2, 16, 8, 60},  // documents that cross key chunks
};

static void test_attention_causal_matches_reference(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof causal_cases / sizeof causal_cases[0]; i++)
        run_attention(&causal_cases[i], 1);
}

static void test_attention_with_documents_matches_reference(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof document_cases / sizeof document_cases[0]; i++)
        run_attention(&document_cases[i], 1);
}

static void test_attention_with_more_threads_than_heads_matches_reference(void **state) {
    (void)state;
    // B·H < threads takes the backward's two-pass schedule.
    const AttentionCase cases[] = {{1, 129, 1, 24, 16, 0},
                                   {1, 200, 2, 24, 16, 30},
                                   {1, 3, 1, 4, 4, 0},
                                   {1, 520, 1, 24, 16, 0},
                                   {1, 530, 2, 16, 8, 100}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_attention(&cases[i], 3);
}

static void test_attention_at_query_positions_matches_reference(void **state) {
    (void)state;
    const AttentionCase cases[] = {
        {2, 128, 2, 24, 16, 0, QUERIES_CP_SLICE},  {1, 200, 3, 24, 16, 0, QUERIES_CP_SLICE},
        {2, 132, 2, 24, 16, 20, QUERIES_CP_SLICE}, {1, 70, 2, 24, 16, 0, QUERIES_RANDOM},
        {2, 90, 1, 8, 8, 10, QUERIES_RANDOM},      {1, 560, 2, 16, 8, 0, QUERIES_CP_SLICE},
        {1, 540, 1, 8, 8, 40, QUERIES_RANDOM},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_attention(&cases[i], 1);
        run_attention(&cases[i], 3); // the backward's two-pass schedule
    }
}

// rows (B, n, width) = the rows of x (B, T, width) at positions pos (n).
static float *rows_at(const float *x, const int32_t *pos, int64_t B, int64_t T, int64_t n,
                      int64_t width) {
    float *rows = random_floats(B * n * width, 0, 1);
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < n; i++)
            memcpy(rows + (b * n + i) * width, x + (b * T + pos[i]) * width,
                   (size_t)width * sizeof *rows);
    return rows;
}

// Context parallelism's identity: each of cp ranks attends with its load-balanced slice of the
// queries over the whole sequence's keys; their outputs and dq are the whole attention's rows,
// and their dk, dv add up to the whole attention's.
static void check_context_parallel_slices(int64_t cp, const int32_t *doc) {
    enum { B = 2, T = 136, H = 2, Dqk = 24, Dv = 16 };
    const int64_t Tk = T, nk = B * T * H * Dqk, nv = B * T * H * Dv, nl = B * H * T;
    const float scale = 0.3f;
    float *q = random_floats(nk, -2, 2), *k = random_floats(nk, -2, 2);
    float *v = random_floats(nv, -1, 1), *dout = random_floats(nv, -1, 1);
    float *out = random_floats(nv, 0, 1), *lse = random_floats(nl, 0, 1);
    float *dq = random_floats(nk, 0, 1), *dk = random_floats(nk, 0, 1);
    float *dv = random_floats(nv, 0, 1);
    float *dk_sum = random_floats(nk, 0, 0), *dv_sum = random_floats(nv, 0, 0);
    int64_t Tq = T;
    assert_int_equal(dsv3_attention_forward(ATTENTION(&cpu, FORWARD), F32, out, lse, NULL, q, k, v,
                                            NULL, doc, B, T, T, H, Dqk, Dv, scale),
                     DSV3_OK);
    assert_int_equal(dsv3_attention_backward(ATTENTION(&cpu, BACKWARD), F32, dq, dk, dv, dout, q, k,
                                             v, out, lse, NULL, NULL, doc, B, T, T, H, Dqk, Dv,
                                             scale),
                     DSV3_OK);
    Tq = T / cp;
    int32_t pos[B * T];
    for (int64_t rank = 0; rank < cp; rank++) {
        cp_slice_positions(pos, B, T, cp, rank);
        float *q_r = rows_at(q, pos, B, T, Tq, H * Dqk),
              *dout_r = rows_at(dout, pos, B, T, Tq, H * Dv);
        float *out_r = random_floats(B * Tq * H * Dv, 0, 1),
              *lse_r = random_floats(B * H * Tq, 0, 1);
        float *dq_r = random_floats(B * Tq * H * Dqk, 0, 1);
        float *dk_r = random_floats(nk, 0, 1), *dv_r = random_floats(nv, 0, 1);
        assert_int_equal(dsv3_attention_forward(ATTENTION(&cpu, FORWARD), F32, out_r, lse_r, NULL,
                                                q_r, k, v, pos, doc, B, Tq, Tk, H, Dqk, Dv, scale),
                         DSV3_OK);
        assert_int_equal(dsv3_attention_backward(ATTENTION(&cpu, BACKWARD), F32, dq_r, dk_r, dv_r,
                                                 dout_r, q_r, k, v, out_r, lse_r, NULL, pos, doc, B,
                                                 Tq, Tk, H, Dqk, Dv, scale),
                         DSV3_OK);
        float *out_rows = rows_at(out, pos, B, T, Tq, H * Dv);
        float *dq_rows = rows_at(dq, pos, B, T, Tq, H * Dqk);
        assert_close("cp out rows", out_r, out_rows, B * Tq * H * Dv);
        assert_close("cp dq rows", dq_r, dq_rows, B * Tq * H * Dqk);
        for (int64_t b = 0; b < B; b++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t i = 0; i < Tq; i++) {
                    const float whole = lse[(b * H + h) * T + pos[i]];
                    assert_true(fabsf(lse_r[(b * H + h) * Tq + i] - whole) <=
                                1e-5f * fmaxf(1.0f, fabsf(whole)));
                }
        for (int64_t i = 0; i < nk; i++)
            dk_sum[i] += dk_r[i];
        for (int64_t i = 0; i < nv; i++)
            dv_sum[i] += dv_r[i];
        float *each[] = {q_r, dout_r, out_r, lse_r, dq_r, dk_r, dv_r, out_rows, dq_rows};
        free_floats(each, sizeof each / sizeof each[0]);
    }
    assert_close("cp dk summed", dk_sum, dk, nk);
    assert_close("cp dv summed", dv_sum, dv, nv);
    float *all[] = {q, k, v, dout, out, lse, dq, dk, dv, dk_sum, dv_sum};
    free_floats(all, sizeof all / sizeof all[0]);
}

static void test_attention_context_parallel_slices_add_up_to_the_whole(void **state) {
    (void)state;
    int32_t *doc = random_documents(2, 136, 30);
    for (int64_t cp = 2; cp <= 4; cp += 2) {
        check_context_parallel_slices(cp, NULL);
        check_context_parallel_slices(cp, doc);
    }
    dsv3_free(doc);
}

// Ring attention's positions: the queries at pos (B, Tq) against the keys of rank j's chunks
// (its Tl = T / cp positions in increasing order): shard_pos (B, Tq) = the last of those keys at
// or before the query's position, −1 when there is none or (block-causal) when its document is
// not the query's (then none of the shard's keys is); shard_doc (B, Tl) their document ids.
static void shard_positions(int32_t *shard_pos, int32_t *shard_doc, const int32_t *pos,
                            const int32_t *doc, int64_t B, int64_t T, int64_t Tq, int64_t cp,
                            int64_t j) {
    const int64_t Tl = T / cp;
    int32_t keys[Tl];
    cp_slice_positions(keys, 1, T, cp, j);
    for (int64_t b = 0; b < B; b++) {
        for (int64_t s = 0; doc && s < Tl; s++)
            shard_doc[b * Tl + s] = doc[b * T + keys[s]];
        for (int64_t t = 0; t < Tq; t++) {
            const int32_t p = pos[b * Tq + t];
            int32_t last = -1;
            for (int64_t s = 0; s < Tl && keys[s] <= p; s++)
                last = (int32_t)s;
            if (doc && last >= 0 && doc[b * T + keys[last]] != doc[b * T + p]) last = -1;
            shard_pos[b * Tq + t] = last;
        }
    }
}

// Ring attention's identity: a cp rank's queries against each rank's key shard in turn, merged
// (attention_merge), give the whole attention's rows; backward against each shard with the
// merged out and lse gives dq in parts that add up to the whole's rows, and key gradients that,
// summed over the query ranks, are the whole's.
static void check_ring_shards(Dsv3KernelContext *ctx, int64_t cp, const int32_t *doc) {
    enum { B = 2, T = 136, H = 2, Dqk = 24, Dv = 16 };
    const int64_t nk = B * T * H * Dqk, nv = B * T * H * Dv, nl = B * H * T;
    const int64_t Tq = T / cp, Tk = T / cp; // a rank's queries, a shard's keys
    const float scale = 0.3f;
    float *q = random_floats(nk, -2, 2), *k = random_floats(nk, -2, 2);
    float *v = random_floats(nv, -1, 1), *dout = random_floats(nv, -1, 1);
    float *out = random_floats(nv, 0, 1), *lse = random_floats(nl, 0, 1);
    float *dq = random_floats(nk, 0, 1), *dk = random_floats(nk, 0, 1);
    float *dv = random_floats(nv, 0, 1);
    float *dk_sum = random_floats(nk, 0, 0), *dv_sum = random_floats(nv, 0, 0);
    // The whole attention.
    assert_int_equal(dsv3_attention_forward(SIZED(ctx, ATTENTION_FORWARD, .B = B, .Tq = T, .Tk = T,
                                                  .H = H, .Dqk = Dqk, .Dv = Dv),
                                            F32, out, lse, NULL, q, k, v, NULL, doc, B, T, T, H,
                                            Dqk, Dv, scale),
                     DSV3_OK);
    assert_int_equal(dsv3_attention_backward(SIZED(ctx, ATTENTION_BACKWARD, .B = B, .Tq = T,
                                                   .Tk = T, .H = H, .Dqk = Dqk, .Dv = Dv),
                                             F32, dq, dk, dv, dout, q, k, v, out, lse, NULL, NULL,
                                             doc, B, T, T, H, Dqk, Dv, scale),
                     DSV3_OK);
    int32_t pos[B * T], keys[B * T], shard_pos[B * T], shard_doc[B * T];
    for (int64_t r = 0; r < cp; r++) {
        cp_slice_positions(pos, B, T, cp, r);
        float *q_r = rows_at(q, pos, B, T, Tq, H * Dqk),
              *dout_r = rows_at(dout, pos, B, T, Tq, H * Dv);
        float *out_r = random_floats(B * Tq * H * Dv, 0, 1),
              *lse_r = random_floats(B * H * Tq, 0, 1);
        float *part_out = random_floats(B * Tq * H * Dv, 0, 1);
        float *part_lse = random_floats(B * H * Tq, 0, 1);
        float *dq_r = random_floats(B * Tq * H * Dqk, 0, 0),
              *dq_part = random_floats(B * Tq * H * Dqk, 0, 1);
        float *dk_part = random_floats(B * Tk * H * Dqk, 0, 1),
              *dv_part = random_floats(B * Tk * H * Dv, 0, 1);
        for (int64_t i = 0; i < cp; i++) { // the ring's order: r, r − 1, …
            const int64_t j = (r - i + cp) % cp;
            cp_slice_positions(keys, B, T, cp, j);
            shard_positions(shard_pos, shard_doc, pos, doc, B, T, Tq, cp, j);
            float *k_j = rows_at(k, keys, B, T, Tk, H * Dqk),
                  *v_j = rows_at(v, keys, B, T, Tk, H * Dv);
            assert_int_equal(
                dsv3_attention_forward(ATTENTION(ctx, FORWARD), F32, i ? part_out : out_r,
                                       i ? part_lse : lse_r, NULL, q_r, k_j, v_j, shard_pos,
                                       doc ? shard_doc : NULL, B, Tq, Tk, H, Dqk, Dv, scale),
                DSV3_OK);
            if (i)
                assert_int_equal(
                    dsv3_attention_merge(ctx, F32, out_r, lse_r, part_out, part_lse, B, Tq, H, Dv),
                    DSV3_OK);
            dsv3_free(k_j);
            dsv3_free(v_j);
        }
        float *out_rows = rows_at(out, pos, B, T, Tq, H * Dv);
        assert_close("ring out rows", out_r, out_rows, B * Tq * H * Dv);
        for (int64_t i = 0; i < cp; i++) {
            const int64_t j = (r - i + cp) % cp;
            cp_slice_positions(keys, B, T, cp, j);
            shard_positions(shard_pos, shard_doc, pos, doc, B, T, Tq, cp, j);
            float *k_j = rows_at(k, keys, B, T, Tk, H * Dqk),
                  *v_j = rows_at(v, keys, B, T, Tk, H * Dv);
            assert_int_equal(dsv3_attention_backward(ATTENTION(ctx, BACKWARD), F32, dq_part,
                                                     dk_part, dv_part, dout_r, q_r, k_j, v_j, out_r,
                                                     lse_r, NULL, shard_pos, doc ? shard_doc : NULL,
                                                     B, Tq, Tk, H, Dqk, Dv, scale),
                             DSV3_OK);
            for (int64_t n = 0; n < B * Tq * H * Dqk; n++)
                dq_r[n] += dq_part[n];
            for (int64_t b = 0; b < B; b++) // the shard's key gradients into their positions
                for (int64_t s = 0; s < Tk; s++) {
                    const int64_t at = b * T + keys[s], from = b * Tk + s;
                    for (int64_t e = 0; e < H * Dqk; e++)
                        dk_sum[at * H * Dqk + e] += dk_part[from * H * Dqk + e];
                    for (int64_t e = 0; e < H * Dv; e++)
                        dv_sum[at * H * Dv + e] += dv_part[from * H * Dv + e];
                }
            dsv3_free(k_j);
            dsv3_free(v_j);
        }
        float *dq_rows = rows_at(dq, pos, B, T, Tq, H * Dqk);
        assert_close("ring dq rows", dq_r, dq_rows, B * Tq * H * Dqk);
        float *each[] = {q_r,  dout_r,  out_r,   lse_r,   part_out, part_lse,
                         dq_r, dq_part, dk_part, dv_part, out_rows, dq_rows};
        free_floats(each, sizeof each / sizeof each[0]);
    }
    assert_close("ring dk summed", dk_sum, dk, nk);
    assert_close("ring dv summed", dv_sum, dv, nv);
    float *all[] = {q, k, v, dout, out, lse, dq, dk, dv, dk_sum, dv_sum};
    free_floats(all, sizeof all / sizeof all[0]);
}

static void test_attention_ring_shards_merge_into_the_whole(void **state) {
    (void)state;
    int32_t *doc = random_documents(2, 136, 30);
    for (int ref = 0; ref < 2; ref++)
        for (int64_t cp = 2; cp <= 4; cp += 2) {
            check_ring_shards(ref ? &reference : &cpu, cp, NULL);
            check_ring_shards(ref ? &reference : &cpu, cp, doc);
        }
    dsv3_free(doc);
}

static void test_attention_merge_matches_reference(void **state) {
    (void)state;
    enum { B = 2, T = 5, H = 3, Dv = 7 };
    const int64_t no = B * T * H * Dv, nl = B * H * T;
    float *out_f = random_floats(no, -1, 1), *lse_f = random_floats(nl, -3, 3);
    float *part_out = random_floats(no, -1, 1), *part_lse = random_floats(nl, -3, 3);
    lse_f[1] = -INFINITY;    // the running side empty: the part is copied
    part_lse[2] = -INFINITY; // the part empty: nothing changes
    float *out_r = copy_floats(out_f, no), *lse_r = copy_floats(lse_f, nl);
    assert_int_equal(dsv3_attention_merge(&cpu, F32, out_f, lse_f, part_out, part_lse, B, T, H, Dv),
                     DSV3_OK);
    assert_int_equal(
        dsv3_attention_merge(&reference, F32, out_r, lse_r, part_out, part_lse, B, T, H, Dv),
        DSV3_OK);
    assert_close("merged out", out_f, out_r, no);
    assert_close("merged lse", lse_f, lse_r, nl);
    float *all[] = {out_f, lse_f, part_out, part_lse, out_r, lse_r};
    free_floats(all, sizeof all / sizeof all[0]);
}

static void test_attention_rejects_query_positions_outside_the_keys(void **state) {
    (void)state;
    float x[64] = {0}, lse[8] = {0};
    const int64_t B = 1, Tq = 2, Tk = 3, H = 1, Dqk = 4, Dv = 4;
    const int32_t pos[2] = {1, 3}; // (B, Tq)
    for (int ref = 0; ref < 2; ref++) {
        Dsv3KernelContext *ctx = ref ? &reference : &cpu;
        assert_usage_error(dsv3_attention_forward(ATTENTION(ctx, FORWARD), F32, x, lse, NULL, x, x,
                                                  x, pos, NULL, B, Tq, Tk, H, Dqk, Dv, 0.5f),
                           "query 1 of sequence 0 sits at key position 3, outside [-1, Tk=3)");
        assert_usage_error(dsv3_attention_forward(ATTENTION(ctx, FORWARD), F32, x, lse, NULL, x, x,
                                                  x, NULL, NULL, B, Tq, Tk, H, Dqk, Dv, 0.5f),
                           "without query positions Tq must equal Tk");
    }
}

// The outputs of two runs of the same attention, for bit-for-bit comparisons.
typedef struct {
    int64_t nqk, nv, nl;
    float *out[2], *lse[2], *dq[2], *dk[2], *dv[2];
} TwoRuns;

static void two_runs_init(TwoRuns *r, int64_t B, int64_t T, int64_t H, int64_t Dqk, int64_t Dv) {
    r->nqk = B * T * H * Dqk, r->nv = B * T * H * Dv, r->nl = B * H * T;
    for (int run = 0; run < 2; run++) { // garbage, so that every output must be written
        r->out[run] = random_floats(r->nv, 0, 1);
        r->lse[run] = random_floats(r->nl, 0, 1);
        r->dq[run] = random_floats(r->nqk, 0, 1);
        r->dk[run] = random_floats(r->nqk, 0, 1);
        r->dv[run] = random_floats(r->nv, 0, 1);
    }
}

// Asserts that both runs wrote the same bits, then frees them.
static void two_runs_check_equal(TwoRuns *r) {
    assert_memory_equal(r->out[0], r->out[1], (size_t)r->nv * sizeof(float));
    assert_memory_equal(r->lse[0], r->lse[1], (size_t)r->nl * sizeof(float));
    assert_memory_equal(r->dq[0], r->dq[1], (size_t)r->nqk * sizeof(float));
    assert_memory_equal(r->dk[0], r->dk[1], (size_t)r->nqk * sizeof(float));
    assert_memory_equal(r->dv[0], r->dv[1], (size_t)r->nv * sizeof(float));
    for (int run = 0; run < 2; run++) {
        dsv3_free(r->out[run]);
        dsv3_free(r->lse[run]);
        dsv3_free(r->dq[run]);
        dsv3_free(r->dk[run]);
        dsv3_free(r->dv[run]);
    }
}

// Keeping the scores for backward changes the work, not a single bit of the results.
static void test_attention_with_kept_scores_is_identical(void **state) {
    (void)state;
    enum { B = 2, T = 300, H = 3, Dqk = 24, Dv = 16 }; // two key chunks
    const int64_t Tq = T, Tk = T;
    TwoRuns r;
    two_runs_init(&r, B, T, H, Dqk, Dv);
    float *q = random_floats(r.nqk, -2, 2), *k = random_floats(r.nqk, -2, 2);
    float *v = random_floats(r.nv, -1, 1), *dout = random_floats(r.nv, -1, 1);
    float *scores = random_floats(B * H * T * T, 0, 1);
    int32_t doc[B * T];
    for (int64_t i = 0; i < B * T; i++)
        doc[i] = (int32_t)((i % T) / 100); // three documents
    for (int run = 0; run < 2; run++) {
        float *kept = run == 0 ? NULL : scores;
        assert_int_equal(dsv3_attention_forward(ATTENTION(&cpu, FORWARD), F32, r.out[run],
                                                r.lse[run], kept, q, k, v, NULL, doc, B, T, T, H,
                                                Dqk, Dv, 0.25f),
                         DSV3_OK);
        assert_int_equal(dsv3_attention_backward(ATTENTION(&cpu, BACKWARD), F32, r.dq[run],
                                                 r.dk[run], r.dv[run], dout, q, k, v, r.out[run],
                                                 r.lse[run], kept, NULL, doc, B, T, T, H, Dqk, Dv,
                                                 0.25f),
                         DSV3_OK);
    }
    two_runs_check_equal(&r);
    dsv3_free(q);
    dsv3_free(k);
    dsv3_free(v);
    dsv3_free(dout);
    dsv3_free(scores);
}

static void test_attention_does_not_depend_on_thread_count(void **state) {
    (void)state;
    enum { B = 1, T = 513, H = 2, Dqk = 16, Dv = 8 }; // T − 1 on a key-chunk boundary
    const int64_t Tq = T, Tk = T;
    TwoRuns r;
    two_runs_init(&r, B, T, H, Dqk, Dv);
    float *q = random_floats(r.nqk, -2, 2), *k = random_floats(r.nqk, -2, 2);
    float *v = random_floats(r.nv, -1, 1), *dout = random_floats(r.nv, -1, 1);
    const int threads_before = omp_get_max_threads();
    for (int run = 0; run < 2; run++) {
        omp_set_num_threads(run == 0 ? 1 : 4); // one schedule, then the other
        assert_int_equal(dsv3_attention_forward(ATTENTION(&cpu, FORWARD), F32, r.out[run],
                                                r.lse[run], NULL, q, k, v, NULL, NULL, B, T, T, H,
                                                Dqk, Dv, 0.25f),
                         DSV3_OK);
        assert_int_equal(dsv3_attention_backward(ATTENTION(&cpu, BACKWARD), F32, r.dq[run],
                                                 r.dk[run], r.dv[run], dout, q, k, v, r.out[run],
                                                 r.lse[run], NULL, NULL, NULL, B, T, T, H, Dqk, Dv,
                                                 0.25f),
                         DSV3_OK);
    }
    omp_set_num_threads(threads_before);
    two_runs_check_equal(&r);
    dsv3_free(q);
    dsv3_free(k);
    dsv3_free(v);
    dsv3_free(dout);
}

static void test_attention_of_one_token_copies_its_value(void **state) {
    (void)state;
    enum { B = 1, T = 1, H = 1, Dqk = 4, Dv = 2 };
    const int64_t Tq = T, Tk = T;
    float q[Dqk] = {1, 2, 3, 4}, k[Dqk] = {4, 3, 2, 1}, v[Dv] = {0.5f, -7.0f}, out[Dv], lse[1];
    assert_int_equal(dsv3_attention_forward(ATTENTION(&cpu, FORWARD), F32, out, lse, NULL, q, k, v,
                                            NULL, NULL, B, T, T, H, Dqk, Dv, 0.5f),
                     DSV3_OK);
    assert_true(out[0] == 0.5f && out[1] == -7.0f);
    assert_true(fabsf(lse[0] - 0.5f * 20.0f) < 1e-6f); // lse of one score is the score
}

static void test_attention_rejects_bad_arguments(void **state) {
    (void)state;
    float x[64] = {0}, lse[8] = {0};
    // The shapes of the calls below, each with a workspace sized for it.
#define FWD(b, t, h, dqk, dv)                                                                      \
    SIZED(ctx, ATTENTION_FORWARD, .B = (b), .Tq = (t), .Tk = (t), .H = (h), .Dqk = (dqk),          \
          .Dv = (dv)),                                                                             \
        F32
#define BWD(b, t, h, dqk, dv)                                                                      \
    SIZED(ctx, ATTENTION_BACKWARD, .B = (b), .Tq = (t), .Tk = (t), .H = (h), .Dqk = (dqk),         \
          .Dv = (dv)),                                                                             \
        F32
    for (int ref = 0; ref < 2; ref++) {
        Dsv3KernelContext *ctx = ref ? &reference : &cpu;
        assert_usage_error(dsv3_attention_forward(FWD(1, 2, 1, 4, 4), NULL, lse, NULL, x, x, x,
                                                  NULL, NULL, 1, 2, 2, 1, 4, 4, 0.5f),
                           "must not be NULL");
        assert_usage_error(dsv3_attention_forward(FWD(1, 0, 1, 4, 4), x, lse, NULL, x, x, x, NULL,
                                                  NULL, 1, 0, 0, 1, 4, 4, 0.5f),
                           "B, Tq, Tk, H must be >= 1");
        assert_usage_error(dsv3_attention_forward(FWD(1, 2, 1, 0, 4), x, lse, NULL, x, x, x, NULL,
                                                  NULL, 1, 2, 2, 1, 0, 4, 0.5f),
                           "head dims");
        assert_usage_error(dsv3_attention_forward(FWD(1, 2, 1, 4, 4), x, lse, NULL, x, x, x, NULL,
                                                  NULL, 1, 2, 2, 1, 4, 4, 0.0f),
                           "scale");
        assert_usage_error(dsv3_attention_forward(FWD(1, 2, 1, 4, 4), x, lse, NULL, x, x, x, NULL,
                                                  NULL, 1, 2, 2, 1, 4, 4, NAN),
                           "scale");
        assert_usage_error(dsv3_attention_backward(BWD(1, 2, 1, 4, 4), x, x, x, x, x, x, x, x, NULL,
                                                   NULL, NULL, NULL, 1, 2, 2, 1, 4, 4, 0.5f),
                           "must not be NULL");
        assert_usage_error(dsv3_attention_backward(BWD(1, 2, 1, 4, -1), x, x, x, x, x, x, x, x, lse,
                                                   NULL, NULL, NULL, 1, 2, 2, 1, 4, -1, 0.5f),
                           "head dims");
        assert_usage_error(dsv3_attention_backward(BWD(1, 2, 1, 4, 4), x, x, x, x, x, x, x, x, lse,
                                                   NULL, NULL, NULL, 1, 2, 2, 1, 4, 4, -1.0f),
                           "scale");
    }
#undef FWD
#undef BWD
}

#define LEAK_CHECKED(test) cmocka_unit_test_setup_teardown(test, record_start, check_nothing_leaked)

int main(void) {
    rng_state = 0x9E3779B97F4A7C15ull;
    const struct CMUnitTest tests[] = {
        LEAK_CHECKED(test_rope_tables_match_reference),
        LEAK_CHECKED(test_rope_tables_without_yarn_are_plain_frequencies),
        LEAK_CHECKED(test_rope_tables_with_yarn_slow_down_the_low_frequencies),
        LEAK_CHECKED(test_rope_on_query_heads_matches_reference),
        LEAK_CHECKED(test_rope_on_shared_key_matches_reference),
        LEAK_CHECKED(test_rope_rejects_bad_arguments),
        LEAK_CHECKED(test_attention_causal_matches_reference),
        LEAK_CHECKED(test_attention_with_documents_matches_reference),
        LEAK_CHECKED(test_attention_with_more_threads_than_heads_matches_reference),
        LEAK_CHECKED(test_attention_at_query_positions_matches_reference),
        LEAK_CHECKED(test_attention_context_parallel_slices_add_up_to_the_whole),
        LEAK_CHECKED(test_attention_ring_shards_merge_into_the_whole),
        LEAK_CHECKED(test_attention_merge_matches_reference),
        LEAK_CHECKED(test_attention_rejects_query_positions_outside_the_keys),
        LEAK_CHECKED(test_attention_does_not_depend_on_thread_count),
        LEAK_CHECKED(test_attention_with_kept_scores_is_identical),
        LEAK_CHECKED(test_attention_of_one_token_copies_its_value),
        LEAK_CHECKED(test_attention_rejects_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
