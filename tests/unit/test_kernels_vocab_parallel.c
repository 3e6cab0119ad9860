// Unit tests for the vocabulary-parallel ops: the embedding of a slice of the table
// (vocab_start), and the output head with cross-entropy split by vocabulary rows
// (vocab_logits, vocab_logits_sums, vocab_logits_backward). The ranks of a tensor-parallel
// group are simulated here: the table is cut into uneven slices, and the all-reduces between
// the ops (max of the row maxima, sum of the sums, sum of dh) are done by hand. Checked on both
// CPU backends, the fast one at 1 and 3 OpenMP threads:
//   - the embedding outputs of the slices sum to the whole table's, and each slice's gradient
//     is its rows of the whole table's gradient, exactly;
//   - with one slice the three ops give the loss, dh and dweight of the fused cross_entropy;
//   - with 2 and 3 slices, the loss (on every slice), the summed dh and each slice's dweight
//     equal the fused op's on the whole vocabulary;
//   - without dh only the loss is computed; the GEMMs are counted by the profiler; the argument
//     checks name the bad value before any work;
//   - cross_entropy_logits on the whole vocabulary's logits (what a rank holds when the logits
//     are gathered instead), followed by the head's linear backward, gives the fused op's loss,
//     dh and dweight; without dlogits only the loss, the logits untouched.
//
// Legend: N tokens, D model width, V whole vocabulary, Vs rows of one slice.
#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/core/alloc.h"
#include "kernels/kernels.h"
#include "tests/kernels_test.h"
#include "tests/unit/kernels_fixture.h"

// Relative error allowed against the fused op: the ops differ from it in summation order only
// (across slices: the order of the all-reduces and of the GEMMs over the vocabulary).
#define TOLERANCE 1e-6

enum { MAX_SLICES = 3 };

// Thread counts the fast ops run with: one, and an odd count that splits unevenly.
static const int THREAD_COUNTS[] = {1, 3};
enum { THREAD_COUNT_CASES = sizeof THREAD_COUNTS / sizeof THREAD_COUNTS[0] };

static const Dsv3TensorDtype F32 = DSV3_TENSOR_F32;

// How a vocabulary of V rows is cut: slice s is [start[s], start[s + 1]), start[count] = V.
typedef struct {
    int count;
    int64_t start[MAX_SLICES + 1];
} Split;

// ---- buffers (freed by the fixture, kernels_fixture.h) ----

static float *floats(int64_t count) { return test_floats(count); }

static double *doubles(int64_t count) { return test_buffer(count, sizeof(double)); }

static int32_t *ints(int64_t count) { return test_buffer(count, sizeof(int32_t)); }

static float *copy_of(const float *src, int64_t count) {
    float *dst = floats(count);
    memcpy(dst, src, (size_t)count * sizeof(float));
    return dst;
}

// The backends, each run at the thread counts that matter to it (the reference has one).
typedef struct {
    Dsv3KernelContext *ctx;
    int threads;
} Run;

static int runs(Run out[THREAD_COUNT_CASES + 1]) {
    int count = 0;
    for (int t = 0; t < THREAD_COUNT_CASES; t++)
        out[count++] = (Run){&cpu, THREAD_COUNTS[t]};
    out[count++] = (Run){&reference, 1};
    return count;
}

static void describe(char *text, size_t size, const Run *run, const char *what) {
    snprintf(text, size, "%s (%s, %d thread(s))", what, dsv3_backend_name(run->ctx->backend),
             run->threads);
}

// ---- random inputs (splitmix64: the same numbers on every machine) ----

static uint64_t rng_state;

static void fill(float *x, int64_t count, float scale) {
    for (int64_t i = 0; i < count; i++)
        x[i] = kernels_test_uniform(&rng_state, scale);
}

static int32_t rng_index(int64_t bound) {
    return (int32_t)(kernels_test_rng_next(&rng_state) % (uint64_t)bound);
}

// ---- comparison ----

static void expect_close(const float *got, const float *want, int64_t count, const char *what) {
    const double err = kernels_test_relative_error(got, want, count);
    if (!(err <= TOLERANCE)) fail_msg("%s: relative error %.3e > %.0e", what, err, TOLERANCE);
}

static void expect_loss_close(double got, double want, const char *what) {
    const double err = want == 0 ? fabs(got) : fabs(got - want) / fabs(want);
    if (!(err <= TOLERANCE)) fail_msg("%s: loss %.12g, expected %.12g", what, got, want);
}

static void expect_usage_error(Dsv3Err got, const char *fragment) {
    assert_int_equal(got, DSV3_ERR_USAGE);
    if (!strstr(dsv3_error_message(), fragment))
        fail_msg("error message '%s' does not mention '%s'", dsv3_error_message(), fragment);
    dsv3_error_clear();
}

// ---- embedding of a slice of the table ----

static void test_embedding_slices_sum_to_the_whole_table(void **state) {
    (void)state;
    enum { N = 300, D = 33, V = 37 }; // enough tokens for the threaded paths, many repeats
    static const Split SPLITS[] = {{2, {0, 20, V}}, {3, {0, 5, 23, V}}};
    rng_state = 1;
    int32_t *tokens = ints(N);
    for (int64_t n = 0; n < N; n++)
        tokens[n] = rng_index(V);
    float *weight = floats(V * D), *dout = floats(N * D), *dweight0 = floats(V * D);
    fill(weight, V * D, 1);
    fill(dout, N * D, 1);
    fill(dweight0, V * D, 1);
    float *out_whole = floats(N * D), *dweight_whole = floats(V * D), *out_sum = floats(N * D);
    float *out = floats(N * D), *dweight = floats(V * D);
    Run run[THREAD_COUNT_CASES + 1];
    for (int r = 0, run_count = runs(run); r < run_count; r++) {
        const Dsv3KernelContext *k = run[r].ctx;
        omp_set_num_threads(run[r].threads);
        memcpy(dweight_whole, dweight0, sizeof(float) * V * D);
        assert_int_equal(dsv3_embedding_forward(k, F32, out_whole, tokens, weight, N, D, V, 0),
                         DSV3_OK);
        assert_int_equal(dsv3_embedding_backward(k, F32, dweight_whole, dout, tokens, N, D, V, 0),
                         DSV3_OK);
        for (size_t p = 0; p < sizeof SPLITS / sizeof SPLITS[0]; p++) {
            const Split *split = &SPLITS[p];
            memset(out_sum, 0, sizeof(float) * N * D);
            memcpy(dweight, dweight0, sizeof(float) * V * D);
            for (int s = 0; s < split->count; s++) {
                const int64_t start = split->start[s], Vs = split->start[s + 1] - start;
                // Every output is written: the rows of other slices' tokens too (as zeros).
                memset(out, 0xA5, sizeof(float) * N * D);
                assert_int_equal(dsv3_embedding_forward(k, F32, out, tokens, weight + start * D, N,
                                                        D, Vs, start),
                                 DSV3_OK);
                for (int64_t i = 0; i < N * D; i++)
                    out_sum[i] += out[i];
                assert_int_equal(dsv3_embedding_backward(k, F32, dweight + start * D, dout, tokens,
                                                         N, D, Vs, start),
                                 DSV3_OK);
            }
            for (int64_t i = 0; i < N * D; i++)
                if (out_sum[i] != out_whole[i])
                    fail_msg("%s, %d slices: out[%" PRId64 "] = %.9g summed, %.9g whole",
                             dsv3_backend_name(k->backend), split->count, i, (double)out_sum[i],
                             (double)out_whole[i]);
            // Each slice's rows were added in token order, as the whole table's: the same bits.
            assert_memory_equal(dweight, dweight_whole, sizeof(float) * V * D);
        }
    }
}

// ---- the output head with cross-entropy, split by vocabulary rows ----

typedef struct {
    int64_t N, D, V;
    int ignore_every; // every k-th label is DSV3_IGNORE_INDEX; 0: none; 1: all
} LossCase;

// The inputs of one case: hidden states, the whole head, labels, the gradient to add to.
typedef struct {
    int64_t N, D, V;
    float *h, *weight, *dweight0; // (N, D), (V, D), (V, D)
    int32_t *labels;              // (N)
    float grad_scale;
} LossProblem;

static LossProblem loss_problem(const LossCase *c) {
    LossProblem p = {.N = c->N, .D = c->D, .V = c->V};
    p.h = floats(c->N * c->D);
    p.weight = floats(c->V * c->D);
    p.dweight0 = floats(c->V * c->D);
    p.labels = ints(c->N);
    fill(p.h, c->N * c->D, 1);
    fill(p.weight, c->V * c->D, 1);
    fill(p.dweight0, c->V * c->D, 0.01f);
    for (int64_t n = 0; n < c->N; n++) {
        const int ignored = c->ignore_every > 0 && n % c->ignore_every == 0;
        p.labels[n] = ignored ? DSV3_IGNORE_INDEX : rng_index(c->V);
    }
    p.grad_scale = 0.37f; // not 1: the scale reaches every gradient
    return p;
}

// What the fused op computes on the whole vocabulary (in chunks smaller than N).
typedef struct {
    double loss;
    float *dh, *dweight; // (N, D), (V, D): dweight0 + the gradient
} LossResult;

static LossResult fused_loss(Dsv3KernelContext *ctx, const LossProblem *p) {
    const int64_t N = p->N, D = p->D, V = p->V, chunk = 16;
    LossResult r = {.loss = -1, .dh = floats(N * D), .dweight = copy_of(p->dweight0, V * D)};
    assert_int_equal(
        dsv3_cross_entropy(SIZED(ctx, CROSS_ENTROPY, .N = N, .D = D, .V = V, .chunk = chunk), F32,
                           &r.loss, r.dh, r.dweight, p->h, p->weight, p->labels, N, D, V,
                           p->grad_scale, chunk),
        DSV3_OK);
    return r;
}

// The three ops on every slice of `split`, with the all-reduces done here: the loss of each
// slice (all should agree) in losses, dh summed over the slices, dweight the slices' gradients
// side by side (each added to its rows of dweight0).
static LossResult split_loss(const Dsv3KernelContext *ctx, const LossProblem *p, const Split *split,
                             double losses[MAX_SLICES]) {
    const int64_t N = p->N, D = p->D, V = p->V;
    float *logits[MAX_SLICES], *row_max[MAX_SLICES];
    double *sums[MAX_SLICES];
    float *max = floats(N), *dh_slice = floats(N * D);
    double *all_sums = doubles(2 * N);
    LossResult r = {.loss = -1, .dh = floats(N * D), .dweight = copy_of(p->dweight0, V * D)};
    for (int s = 0; s < split->count; s++) {
        const int64_t start = split->start[s], Vs = split->start[s + 1] - start;
        logits[s] = floats(N * Vs);
        row_max[s] = floats(N);
        sums[s] = doubles(2 * N);
        assert_int_equal(dsv3_vocab_logits(ctx, F32, logits[s], row_max[s], p->h,
                                           p->weight + start * D, N, D, Vs),
                         DSV3_OK);
    }
    for (int64_t i = 0; i < N; i++) { // all-reduce (max)
        max[i] = row_max[0][i];
        for (int s = 1; s < split->count; s++)
            max[i] = fmaxf(max[i], row_max[s][i]);
    }
    for (int s = 0; s < split->count; s++) {
        const int64_t start = split->start[s], Vs = split->start[s + 1] - start;
        assert_int_equal(
            dsv3_vocab_logits_sums(ctx, sums[s], logits[s], max, p->labels, N, Vs, start), DSV3_OK);
    }
    for (int64_t i = 0; i < 2 * N; i++) { // all-reduce (sum)
        all_sums[i] = 0;
        for (int s = 0; s < split->count; s++)
            all_sums[i] += sums[s][i];
    }
    for (int s = 0; s < split->count; s++) {
        const int64_t start = split->start[s], Vs = split->start[s + 1] - start;
        fill(dh_slice, N * D, 1); // dh is written, whatever was there
        assert_int_equal(dsv3_vocab_logits_backward(ctx, F32, &losses[s], dh_slice,
                                                    r.dweight + start * D, logits[s], max, all_sums,
                                                    p->h, p->weight + start * D, p->labels, N, D,
                                                    Vs, start, p->grad_scale),
                         DSV3_OK);
        for (int64_t i = 0; i < N * D; i++) // the sum of dh over the ranks
            r.dh[i] += dh_slice[i];
    }
    r.loss = losses[0];
    return r;
}

static void expect_same_loss(const LossResult *got, const LossResult *want, const LossProblem *p,
                             const char *what) {
    char text[160];
    snprintf(text, sizeof text, "%s: dh", what);
    expect_close(got->dh, want->dh, p->N * p->D, text);
    snprintf(text, sizeof text, "%s: dweight", what);
    expect_close(got->dweight, want->dweight, p->V * p->D, text);
    expect_loss_close(got->loss, want->loss, what);
}

static const LossCase LOSS_CASES[] = {
    {1, 4, 3, 0}, {37, 16, 50, 5}, {45, 24, 500, 7}, {64, 32, 2048, 3}, {10, 8, 100, 1},
};
enum { LOSS_CASE_COUNT = sizeof LOSS_CASES / sizeof LOSS_CASES[0] };

static void test_one_slice_matches_the_fused_op(void **state) {
    (void)state;
    rng_state = 2;
    Run run[THREAD_COUNT_CASES + 1];
    for (int c = 0; c < LOSS_CASE_COUNT; c++) {
        const LossProblem p = loss_problem(&LOSS_CASES[c]);
        const Split whole = {1, {0, p.V}};
        for (int r = 0, run_count = runs(run); r < run_count; r++) {
            omp_set_num_threads(run[r].threads);
            const LossResult want = fused_loss(run[r].ctx, &p);
            double losses[MAX_SLICES];
            const LossResult got = split_loss(run[r].ctx, &p, &whole, losses);
            char what[128];
            char shape[96];
            snprintf(shape, sizeof shape,
                     "one slice, N %" PRId64 " D %" PRId64 " V %" PRId64 " ignore every %d", p.N,
                     p.D, p.V, LOSS_CASES[c].ignore_every);
            describe(what, sizeof what, &run[r], shape);
            expect_same_loss(&got, &want, &p, what);
        }
        test_buffers_free_after(0);
    }
}

static void test_slices_match_the_whole_vocabulary(void **state) {
    (void)state;
    rng_state = 3;
    Run run[THREAD_COUNT_CASES + 1];
    for (int c = 0; c < LOSS_CASE_COUNT; c++) {
        const LossProblem p = loss_problem(&LOSS_CASES[c]);
        const int problem_buffers = test_buffer_count;
        const int64_t V = p.V; // >= 3: three slices of at least one row
        // Uneven cuts: about 2/3 + 1/3, and 1/7 + 1/2 + the rest.
        const Split splits[] = {{2, {0, 2 * V / 3, V}}, {3, {0, V / 7 + 1, V / 7 + 1 + V / 2, V}}};
        for (int r = 0, run_count = runs(run); r < run_count; r++) {
            test_buffers_free_after(problem_buffers);
            omp_set_num_threads(run[r].threads);
            const LossResult want = fused_loss(run[r].ctx, &p);
            const int want_buffers = test_buffer_count;
            for (size_t q = 0; q < sizeof splits / sizeof splits[0]; q++) {
                test_buffers_free_after(want_buffers);
                double losses[MAX_SLICES];
                const LossResult got = split_loss(run[r].ctx, &p, &splits[q], losses);
                char shape[96], what[128];
                snprintf(shape, sizeof shape,
                         "%d slices, N %" PRId64 " D %" PRId64 " V %" PRId64 " ignore every %d",
                         splits[q].count, p.N, p.D, V, LOSS_CASES[c].ignore_every);
                describe(what, sizeof what, &run[r], shape);
                expect_same_loss(&got, &want, &p, what);  // dweight: each slice's rows
                for (int s = 1; s < splits[q].count; s++) // every rank has the loss
                    expect_loss_close(losses[s], want.loss, what);
            }
        }
        test_buffers_free_after(0);
    }
}

// The loss of materialised logits (N, V) = h · weightᵀ, then dh = dlogits · weight and
// dweight += dlogitsᵀ · h by the linear op's backward.
static LossResult logits_loss(Dsv3KernelContext *ctx, const LossProblem *p) {
    const int64_t N = p->N, D = p->D, V = p->V;
    LossResult r = {.loss = -1, .dh = floats(N * D), .dweight = copy_of(p->dweight0, V * D)};
    float *logits = floats(N * V), *kept = floats(N * V);
    assert_int_equal(dsv3_linear_forward(ctx, F32, logits, p->h, p->weight, N, D, V), DSV3_OK);
    memcpy(kept, logits, (size_t)(N * V) * sizeof *kept);
    double loss_only = -1;
    assert_int_equal(dsv3_cross_entropy_logits(SIZED(ctx, CROSS_ENTROPY_LOGITS, .N = N, .V = V),
                                               F32, &loss_only, NULL, logits, p->labels, N, V,
                                               p->grad_scale),
                     DSV3_OK);
    assert_memory_equal(logits, kept, (size_t)(N * V) * sizeof *kept); // only read
    assert_int_equal(dsv3_cross_entropy_logits(ctx, F32, &r.loss, logits, logits, p->labels, N, V,
                                               p->grad_scale),
                     DSV3_OK);
    assert_true(loss_only == r.loss);
    assert_int_equal(dsv3_linear_backward(SIZED(ctx, LINEAR_BACKWARD, .N = N), F32, r.dh, r.dweight,
                                          logits, p->h, p->weight, N, D, V, 0),
                     DSV3_OK);
    return r;
}

static void test_loss_of_materialised_logits_matches_the_fused_op(void **state) {
    (void)state;
    rng_state = 5;
    Run run[THREAD_COUNT_CASES + 1];
    for (int c = 0; c < LOSS_CASE_COUNT; c++) {
        const LossProblem p = loss_problem(&LOSS_CASES[c]);
        for (int r = 0, run_count = runs(run); r < run_count; r++) {
            omp_set_num_threads(run[r].threads);
            const LossResult want = fused_loss(run[r].ctx, &p);
            const LossResult got = logits_loss(run[r].ctx, &p);
            char shape[96], what[128];
            snprintf(shape, sizeof shape,
                     "logits, N %" PRId64 " D %" PRId64 " V %" PRId64 " ignore every %d", p.N, p.D,
                     p.V, LOSS_CASES[c].ignore_every);
            describe(what, sizeof what, &run[r], shape);
            expect_same_loss(&got, &want, &p, what);
        }
        test_buffers_free_after(0);
    }
}

static void test_loss_only_without_dh(void **state) {
    (void)state;
    rng_state = 4;
    const LossCase c = {29, 12, 300, 4};
    const LossProblem p = loss_problem(&c);
    const int64_t N = p.N, D = p.D, V = p.V;
    Run run[THREAD_COUNT_CASES + 1];
    for (int r = 0, run_count = runs(run); r < run_count; r++) {
        const Dsv3KernelContext *k = run[r].ctx;
        omp_set_num_threads(run[r].threads);
        float *logits = floats(N * V), *row_max = floats(N);
        double *sums = doubles(2 * N);
        assert_int_equal(dsv3_vocab_logits(k, F32, logits, row_max, p.h, p.weight, N, D, V),
                         DSV3_OK);
        assert_int_equal(dsv3_vocab_logits_sums(k, sums, logits, row_max, p.labels, N, V, 0),
                         DSV3_OK);
        const float *logits0 = copy_of(logits, N * V);
        float *dweight = copy_of(p.dweight0, V * D);
        double loss_only = -1, loss = -1;
        assert_int_equal(dsv3_vocab_logits_backward(k, F32, &loss_only, NULL, dweight, logits,
                                                    row_max, sums, p.h, p.weight, p.labels, N, D, V,
                                                    0, p.grad_scale),
                         DSV3_OK);
        // Untouched: the gradient, and the logits (not turned into their gradient).
        assert_memory_equal(dweight, p.dweight0, sizeof(float) * V * D);
        assert_memory_equal(logits, logits0, sizeof(float) * N * V);
        // Without dh the gradient's inputs may be absent.
        double loss_bare = -1;
        assert_int_equal(dsv3_vocab_logits_backward(k, F32, &loss_bare, NULL, NULL, NULL, row_max,
                                                    sums, NULL, NULL, p.labels, N, D, V, 0,
                                                    p.grad_scale),
                         DSV3_OK);
        float *dh = floats(N * D);
        assert_int_equal(dsv3_vocab_logits_backward(k, F32, &loss, dh, dweight, logits, row_max,
                                                    sums, p.h, p.weight, p.labels, N, D, V, 0,
                                                    p.grad_scale),
                         DSV3_OK);
        assert_true(loss_only == loss && loss_bare == loss); // the same sum, in the same order
        const LossResult want = fused_loss(run[r].ctx, &p);
        expect_loss_close(loss_only, want.loss, "loss without dh");
    }
}

// The GEMMs go through the backend's GEMM (bf16 when the context says so), counted for their op.
static void test_gemms_are_counted_for_their_op(void **state) {
    (void)state;
    rng_state = 5;
    const LossCase c = {20, 8, 60, 0};
    const LossProblem p = loss_problem(&c);
    const int64_t N = p.N, D = p.D, V = p.V;
    float *logits = floats(N * V), *row_max = floats(N), *dh = floats(N * D);
    double *sums = doubles(2 * N), loss = -1;
    float *dweight = copy_of(p.dweight0, V * D);
    static Dsv3OpProfile ops[DSV3_OP_COUNT];
    static Dsv3GemmProfile gemms[DSV3_PROFILE_MAX_GEMM_SHAPES];
    int64_t n_gemms = -1;
    dsv3_profile_start();
    assert_int_equal(dsv3_vocab_logits(&cpu, F32, logits, row_max, p.h, p.weight, N, D, V),
                     DSV3_OK);
    assert_int_equal(dsv3_vocab_logits_sums(&cpu, sums, logits, row_max, p.labels, N, V, 0),
                     DSV3_OK);
    assert_int_equal(dsv3_vocab_logits_backward(&cpu, F32, &loss, dh, dweight, logits, row_max,
                                                sums, p.h, p.weight, p.labels, N, D, V, 0,
                                                p.grad_scale),
                     DSV3_OK);
    dsv3_profile_stop();
    dsv3_profile_read(ops, gemms, &n_gemms);
    const double gemm = 2.0 * (double)N * (double)V * (double)D; // one GEMM of the head
    assert_int_equal(ops[DSV3_OP_VOCAB_LOGITS].calls, 1);
    assert_true(ops[DSV3_OP_VOCAB_LOGITS].gemm_flops == gemm);
    assert_int_equal(ops[DSV3_OP_VOCAB_LOGITS_SUMS].calls, 1);
    assert_true(ops[DSV3_OP_VOCAB_LOGITS_SUMS].gemm_flops == 0);
    assert_int_equal(ops[DSV3_OP_VOCAB_LOGITS_BACKWARD].calls, 1);
    assert_true(ops[DSV3_OP_VOCAB_LOGITS_BACKWARD].gemm_flops == 2 * gemm); // dh and dweight
    assert_int_equal(n_gemms, 3);
    assert_string_equal(dsv3_op_name(DSV3_OP_VOCAB_LOGITS_BACKWARD), "vocab_logits_backward");
}

// ---- argument checks ----

static void test_bad_arguments_are_refused_before_any_work(void **state) {
    (void)state;
    enum { N = 6, D = 4, V = 10 };
    int32_t labels[N] = {1, 2, DSV3_IGNORE_INDEX, -5, 4, 1000}; // 1000: another slice's label
    float *h = floats(N * D), *weight = floats(V * D), *logits = floats(N * V);
    float *row_max = floats(N), *dh = floats(N * D), *dweight = floats(V * D);
    double *sums = doubles(2 * N), loss = -1;
    rng_state = 6;
    fill(h, N * D, 1);
    fill(weight, V * D, 1);
    const Dsv3KernelContext *contexts[] = {&cpu, &reference};
    for (size_t b = 0; b < sizeof contexts / sizeof contexts[0]; b++) {
        const Dsv3KernelContext *k = contexts[b];
        assert_int_equal(dsv3_vocab_logits(k, F32, logits, row_max, h, weight, N, D, V), DSV3_OK);
        for (int64_t i = 0; i < 2 * N; i++)
            sums[i] = 1;
        expect_usage_error(dsv3_vocab_logits_sums(k, sums, logits, row_max, labels, N, V, 0),
                           "vocab_logits_sums: labels[3] = -5");
        for (int64_t i = 0; i < 2 * N; i++)
            assert_true(sums[i] == 1); // checked before any work
        expect_usage_error(dsv3_vocab_logits_backward(k, F32, &loss, dh, dweight, logits, row_max,
                                                      sums, h, weight, labels, N, D, V, 0, 1.0f),
                           "vocab_logits_backward: labels[3] = -5");
        for (int64_t i = 0; i < V * D; i++)
            assert_true(dweight[i] == 0);
        labels[3] = 3;
        expect_usage_error(dsv3_vocab_logits_sums(k, sums, logits, row_max, labels, N, V, -1),
                           "vocab_start = -1");
        expect_usage_error(dsv3_vocab_logits_sums(k, sums, logits, row_max, labels, N, V,
                                                  ((int64_t)1 << 31) - V + 1),
                           "vocab_start + V <= 2^31");
        expect_usage_error(dsv3_vocab_logits_backward(k, F32, &loss, dh, NULL, logits, row_max,
                                                      sums, h, weight, labels, N, D, V, 0, 1.0f),
                           "dweight, logits, h and weight must not be NULL when dh is wanted");
        expect_usage_error(dsv3_vocab_logits_backward(k, F32, NULL, dh, dweight, logits, row_max,
                                                      sums, h, weight, labels, N, D, V, 0, 1.0f),
                           "loss_sum is NULL");
        expect_usage_error(dsv3_vocab_logits_backward(k, F32, &loss, NULL, NULL, NULL, row_max,
                                                      NULL, NULL, NULL, labels, N, D, V, 0, 1.0f),
                           "row_max, sums and labels must not be NULL");
        expect_usage_error(dsv3_vocab_logits(k, F32, logits, row_max, h, weight, N, D, 0), "V = 0");
        expect_usage_error(dsv3_vocab_logits(k, F32, logits, row_max, h, weight, -1, D, V),
                           "n = -1");
        expect_usage_error(dsv3_vocab_logits(k, F32, logits, NULL, h, weight, N, D, V), "NULL");
        labels[3] = -5;
        // No tokens: nothing to check or compute, and the loss is 0.
        loss = -1;
        assert_int_equal(dsv3_vocab_logits(k, F32, NULL, NULL, NULL, NULL, 0, D, V), DSV3_OK);
        assert_int_equal(dsv3_vocab_logits_sums(k, NULL, NULL, NULL, NULL, 0, V, 0), DSV3_OK);
        assert_int_equal(dsv3_vocab_logits_backward(k, F32, &loss, NULL, NULL, NULL, NULL, NULL,
                                                    NULL, NULL, NULL, 0, D, V, 0, 1.0f),
                         DSV3_OK);
        assert_true(loss == 0);
    }
}

#define FIXTURE(test)                                                                              \
    cmocka_unit_test_setup_teardown(test, kernels_fixture_setup, kernels_fixture_teardown)

int main(void) {
    const struct CMUnitTest tests[] = {
        FIXTURE(test_embedding_slices_sum_to_the_whole_table),
        FIXTURE(test_one_slice_matches_the_fused_op),
        FIXTURE(test_slices_match_the_whole_vocabulary),
        FIXTURE(test_loss_of_materialised_logits_matches_the_fused_op),
        FIXTURE(test_loss_only_without_dh),
        FIXTURE(test_gemms_are_counted_for_their_op),
        FIXTURE(test_bad_arguments_are_refused_before_any_work),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
