// Unit tests for the kernel context API and the ops it added: contexts of every backend (and
// the error for CUDA in a build without its kernels), names, the dispatch checks, the memory
// ops, the workspace contract (the query grows with the shape; too small a workspace is a
// clear error that writes nothing; ops allocate nothing), bf16 refused by the CPU backends,
// dtype conversion (round trip, rounding to nearest even on ties), and the token, element-wise,
// MLA and load-balancing ops: fast against reference, and each against an independent
// computation here; and the profiling counters (op calls, GEMM FLOPs and shapes).
//
// Legend: N tokens (B × T), B sequences, T positions, V vocabulary, D width, H heads, Dqk / Dv
// head dims, E experts, K experts per token, M = N × K routed rows, F expert hidden width.
#include <float.h>
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
#include "common/core/log.h"
#include "kernels/kernels.h"
#include "tests/kernels_test.h"

// Every tensor of these ops is fp32, unless a test says otherwise.
static const Dsv3TensorDtype F32 = DSV3_TENSOR_F32;

// ‖fast − reference‖ / ‖reference‖ allowed where the versions sum in another order.
static const double TOLERANCE = 1e-6;

// Thread counts the fast ops run with: one, and an odd count that splits unevenly.
static const int THREAD_COUNTS[] = {1, 3};
enum { THREAD_COUNT_CASES = sizeof THREAD_COUNTS / sizeof THREAD_COUNTS[0] };

// The two CPU backends, in the order of the loops below.
static const Dsv3Backend CPU_BACKENDS[] = {DSV3_BACKEND_CPU, DSV3_BACKEND_CPU_REFERENCE};
enum { CPU_BACKEND_COUNT = sizeof CPU_BACKENDS / sizeof CPU_BACKENDS[0] };

// A byte no op writes by chance: outputs filled with it show what a failed call touched.
enum { UNTOUCHED = 0xA5 };

// ---- fixtures: both contexts, leak-checked after every test ----

static Dsv3KernelContext cpu, reference; // the fast and the reference backend
static size_t start_bytes;
static int start_threads;

static int setup(void **state) {
    (void)state;
    dsv3_error_clear();
    start_bytes = dsv3_alloc_current_bytes();
    start_threads = omp_get_max_threads();
    return kernels_test_contexts_create(&cpu, &reference);
}

static int teardown(void **state) {
    (void)state;
    kernels_test_contexts_destroy(&cpu, &reference);
    omp_set_num_threads(start_threads);
    dsv3_error_clear();
    size_t now = dsv3_alloc_current_bytes();
    if (now != start_bytes) {
        print_error("%zu bytes still counted after the test (started at %zu)\n", now, start_bytes);
        return -1;
    }
    return 0;
}

static Dsv3KernelContext *context_of(Dsv3Backend backend) {
    return backend == DSV3_BACKEND_CPU ? &cpu : &reference;
}

// ---- helpers ----

static uint64_t rng_state;

static uint64_t rng_next(void) { return kernels_test_rng_next(&rng_state); }

static float rng_uniform(float scale) { return kernels_test_uniform(&rng_state, scale); }

static void fill(float *x, int64_t count, float scale) {
    for (int64_t i = 0; i < count; i++)
        x[i] = rng_uniform(scale);
}

// Test arrays are counted allocations, freed by the test.
static void *zeros(int64_t count, size_t size) {
    void *p = NULL;
    assert_int_equal(dsv3_calloc(&p, (size_t)(count > 0 ? count : 1), size, "test array"), DSV3_OK);
    return p;
}

static void expect_close(const float *got, const float *want, int64_t count, const char *what) {
    const double err = kernels_test_relative_error(got, want, count);
    if (!(err <= TOLERANCE)) fail_msg("%s: relative error %.3e > %.0e", what, err, TOLERANCE);
}

static void expect_usage_error(Dsv3Err err, const char *fragment) {
    assert_int_equal(err, DSV3_ERR_USAGE);
    if (fragment && !strstr(dsv3_error_message(), fragment))
        fail_msg("error message '%s' does not mention '%s'", dsv3_error_message(), fragment);
    dsv3_error_clear();
}

static uint32_t bits_of(float x) {
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

static float float_of(uint32_t b) {
    float x;
    memcpy(&x, &b, sizeof x);
    return x;
}

// ---- contexts, names, dispatch ----

static void test_contexts_of_every_backend(void **state) {
    (void)state;
    assert_string_equal(dsv3_backend_name(DSV3_BACKEND_CPU), "cpu");
    assert_string_equal(dsv3_backend_name(DSV3_BACKEND_CPU_REFERENCE), "cpu-reference");
    assert_string_equal(dsv3_backend_name(DSV3_BACKEND_CUDA), "cuda");
    for (int b = 0; b < DSV3_BACKEND_COUNT; b++) {
        const Dsv3Backend backend = (Dsv3Backend)b;
        Dsv3KernelContext ctx;
        if (!dsv3_backend_built(backend)) {
            // This build has no CUDA kernels: the context is refused, saying so.
            assert_int_equal(backend, DSV3_BACKEND_CUDA);
            expect_usage_error(dsv3_kernel_context_create(&ctx, backend, 0), "CUDA");
            assert_null(ctx.ops);
            continue;
        }
        const Dsv3Err err = dsv3_kernel_context_create(&ctx, backend, 0);
        if (backend == DSV3_BACKEND_CUDA && err == DSV3_ERR_BACKEND) { // built, but no device
            dsv3_error_clear();
            continue;
        }
        assert_int_equal(err, DSV3_OK);
        assert_non_null(ctx.ops);
        assert_int_equal(ctx.backend, backend);
        assert_null(ctx.workspace);
        assert_int_equal(ctx.workspace_bytes, 0);
        if (backend != DSV3_BACKEND_CUDA) {
            assert_int_equal(ctx.device, -1);
            assert_null(ctx.stream);
            assert_null(ctx.blas);
        }
        assert_int_equal(dsv3_synchronize(&ctx), DSV3_OK);
        dsv3_kernel_context_destroy(&ctx);
        assert_null(ctx.ops);
        // A destroyed context runs nothing.
        expect_usage_error(dsv3_synchronize(&ctx), "no backend");
    }
    Dsv3KernelContext zeroed;
    memset(&zeroed, 0, sizeof zeroed);
    dsv3_kernel_context_destroy(&zeroed); // safe
    dsv3_kernel_context_destroy(NULL);
    expect_usage_error(dsv3_kernel_context_create(&zeroed, (Dsv3Backend)DSV3_BACKEND_COUNT, 0),
                       "unknown backend");
    expect_usage_error(dsv3_kernel_context_create(NULL, DSV3_BACKEND_CPU, -1), "ctx is NULL");
}

static void test_dispatch_checks_the_context(void **state) {
    (void)state;
    float x[4] = {1, 2, 3, 4};
    expect_usage_error(dsv3_scale(NULL, x, 4, 2.0f), "scale: ctx is NULL");
    Dsv3KernelContext empty;
    memset(&empty, 0, sizeof empty);
    expect_usage_error(dsv3_add(&empty, F32, x, x, x, 4), "add: the kernel context has no backend");
    for (int i = 0; i < 4; i++)
        assert_true(x[i] == (float)(i + 1)); // nothing ran
}

static void test_op_names(void **state) {
    (void)state;
    assert_string_equal(dsv3_op_name(DSV3_OP_MEMORY_ALLOC), "memory_alloc");
    assert_string_equal(dsv3_op_name(DSV3_OP_ATTENTION_FORWARD), "attention_forward");
    assert_string_equal(dsv3_op_name(DSV3_OP_EXPERT_BIAS_UPDATE), "expert_bias_update");
    assert_string_equal(dsv3_op_name(DSV3_OP_SCALE), "scale");
    assert_string_equal(dsv3_op_name(DSV3_OP_COUNT), "unknown op");
    for (int a = 0; a < DSV3_OP_COUNT; a++) // every op has its own name
        for (int b = a + 1; b < DSV3_OP_COUNT; b++)
            assert_string_not_equal(dsv3_op_name((Dsv3Op)a), dsv3_op_name((Dsv3Op)b));
    size_t bytes = 0;
    const Dsv3OpShape shape = {.N = 1};
    expect_usage_error(dsv3_workspace_bytes(&cpu, DSV3_OP_COUNT, &shape, &bytes), "not an op");
    expect_usage_error(dsv3_workspace_bytes(&reference, -1, &shape, &bytes), "not an op");
    expect_usage_error(dsv3_workspace_bytes(&cpu, DSV3_OP_ADD, NULL, &bytes), "NULL");
}

static void test_profiling_counts_ops_and_gemms(void **state) {
    (void)state;
    enum { N = 5, IN = 7, OUT = 3 };
    float x[N * IN], w[OUT * IN], out[N * OUT];
    for (int i = 0; i < N * IN; i++)
        x[i] = (float)(i % 5);
    for (int i = 0; i < OUT * IN; i++)
        w[i] = (float)(i % 3);
    static Dsv3OpProfile ops[DSV3_OP_COUNT];
    static Dsv3GemmProfile gemms[DSV3_PROFILE_MAX_GEMM_SHAPES];
    int64_t n_gemms = -1;
    dsv3_profile_start();
    assert_int_equal(dsv3_linear_forward(&cpu, F32, out, x, w, N, IN, OUT), DSV3_OK);
    assert_int_equal(dsv3_linear_forward(&cpu, F32, out, x, w, N, IN, OUT), DSV3_OK);
    assert_int_equal(dsv3_scale(&cpu, out, N * OUT, 2.0f), DSV3_OK);
    dsv3_profile_stop();
    assert_int_equal(dsv3_linear_forward(&cpu, F32, out, x, w, N, IN, OUT), DSV3_OK); // not counted
    dsv3_profile_read(ops, gemms, &n_gemms);
    assert_int_equal(ops[DSV3_OP_LINEAR_FORWARD].calls, 2);
    assert_true(ops[DSV3_OP_LINEAR_FORWARD].seconds > 0);
    assert_true(ops[DSV3_OP_LINEAR_FORWARD].gemm_flops == 2.0 * 2 * N * IN * OUT);
    assert_int_equal(ops[DSV3_OP_SCALE].calls, 1);
    assert_true(ops[DSV3_OP_SCALE].gemm_flops == 0);
    assert_int_equal(ops[DSV3_OP_ADD].calls, 0);
    assert_int_equal(n_gemms, 1); // out = x · wᵀ: M N, N OUT, K IN, B transposed
    assert_int_equal(gemms[0].M, N);
    assert_int_equal(gemms[0].N, OUT);
    assert_int_equal(gemms[0].K, IN);
    assert_int_equal(gemms[0].trans_a, 0);
    assert_int_equal(gemms[0].trans_b, 1);
    assert_int_equal(gemms[0].calls, 2);
    assert_int_equal(gemms[0].in_parallel, 0);
    dsv3_profile_start(); // zeroes the counters
    dsv3_profile_stop();
    dsv3_profile_read(ops, gemms, &n_gemms);
    assert_int_equal(ops[DSV3_OP_LINEAR_FORWARD].calls, 0);
    assert_int_equal(n_gemms, 0);
}

// What the op sink of test_profiling_sink_sees_each_op saw.
typedef struct {
    int calls;
    Dsv3Op ops[4];
    double start[4], end[4], gemm_flops[4];
} SeenOps;

static void see_op(void *sink_ctx, Dsv3Op op, double start, double end, double gemm_flops) {
    SeenOps *seen = sink_ctx;
    if (seen->calls < 4) {
        seen->ops[seen->calls] = op;
        seen->start[seen->calls] = start;
        seen->end[seen->calls] = end;
        seen->gemm_flops[seen->calls] = gemm_flops;
    }
    seen->calls++;
}

static void test_profiling_sink_sees_each_op(void **state) {
    (void)state;
    enum { N = 4, IN = 6, OUT = 5 };
    float x[N * IN], w[OUT * IN], out[N * OUT];
    for (int i = 0; i < N * IN; i++)
        x[i] = (float)(i % 3);
    for (int i = 0; i < OUT * IN; i++)
        w[i] = (float)(i % 4);
    SeenOps seen = {0};
    dsv3_profile_set_sink(see_op, &seen);
    assert_int_equal(dsv3_scale(&cpu, out, N * OUT, 2.0f), DSV3_OK); // profiling off: unseen
    assert_int_equal(seen.calls, 0);
    const double before = dsv3_log_seconds();
    dsv3_profile_start();
    assert_int_equal(dsv3_linear_forward(&cpu, F32, out, x, w, N, IN, OUT), DSV3_OK);
    assert_int_equal(dsv3_scale(&cpu, out, N * OUT, 2.0f), DSV3_OK);
    dsv3_profile_stop();
    const double after = dsv3_log_seconds();
    dsv3_profile_set_sink(NULL, NULL);
    assert_int_equal(seen.calls, 2);
    assert_int_equal(seen.ops[0], DSV3_OP_LINEAR_FORWARD);
    assert_true(seen.gemm_flops[0] == 2.0 * N * IN * OUT); // this call's GEMM only
    assert_int_equal(seen.ops[1], DSV3_OP_SCALE);
    assert_true(seen.gemm_flops[1] == 0);
    // On the clock of dsv3_log_seconds, in order.
    assert_true(before <= seen.start[0] && seen.start[0] <= seen.end[0]);
    assert_true(seen.end[0] <= seen.start[1] && seen.start[1] <= seen.end[1] &&
                seen.end[1] <= after);
    dsv3_profile_start(); // no sink: counted only
    assert_int_equal(dsv3_scale(&cpu, out, N * OUT, 2.0f), DSV3_OK);
    dsv3_profile_stop();
    assert_int_equal(seen.calls, 2);
}

static void test_memory_ops(void **state) {
    (void)state;
    enum { COUNT = 1000 };
    for (int b = 0; b < CPU_BACKEND_COUNT; b++) {
        const Dsv3KernelContext *ctx = context_of(CPU_BACKENDS[b]);
        const size_t before = dsv3_alloc_current_bytes();
        float *p = NULL, *q = NULL;
        assert_int_equal(dsv3_memory_alloc(ctx, (void **)&p, COUNT * sizeof(float), "test p"),
                         DSV3_OK);
        assert_int_equal(dsv3_memory_alloc(ctx, (void **)&q, COUNT * sizeof(float), "test q"),
                         DSV3_OK);
        assert_int_equal((uintptr_t)p % 64, 0); // 64-byte aligned
        assert_true(dsv3_alloc_current_bytes() == before + 2 * COUNT * sizeof(float)); // counted
        for (int i = 0; i < COUNT; i++)
            p[i] = (float)i;
        assert_int_equal(
            dsv3_memory_copy(ctx, q, p, COUNT * sizeof(float), DSV3_COPY_HOST_TO_DEVICE), DSV3_OK);
        assert_memory_equal(p, q, COUNT * sizeof(float));
        assert_int_equal(dsv3_memory_zero(ctx, p + 10, 5 * sizeof(float)), DSV3_OK);
        for (int i = 0; i < COUNT; i++)
            assert_true(p[i] == (i >= 10 && i < 15 ? 0.0f : (float)i));
        assert_int_equal(
            dsv3_memory_copy(ctx, q, p, COUNT * sizeof(float), DSV3_COPY_DEVICE_TO_HOST), DSV3_OK);
        assert_int_equal(
            dsv3_memory_copy(ctx, p, q, COUNT * sizeof(float), DSV3_COPY_DEVICE_TO_DEVICE),
            DSV3_OK);
        assert_memory_equal(p, q, COUNT * sizeof(float));
        expect_usage_error(dsv3_memory_copy(ctx, q, p, 4, (Dsv3CopyKind)7), "kind = 7");
        expect_usage_error(dsv3_memory_copy(ctx, NULL, p, 4, DSV3_COPY_DEVICE_TO_DEVICE), "NULL");
        expect_usage_error(dsv3_memory_zero(ctx, NULL, 4), "NULL");
        assert_int_equal(dsv3_memory_zero(ctx, NULL, 0), DSV3_OK);
        assert_int_equal(dsv3_memory_free(ctx, p), DSV3_OK);
        assert_int_equal(dsv3_memory_free(ctx, q), DSV3_OK);
        assert_int_equal(dsv3_memory_free(ctx, NULL), DSV3_OK);
        assert_true(dsv3_alloc_current_bytes() == before);
    }
}

// ---- bf16 refused by the CPU ops ----

static void test_cpu_ops_refuse_bf16(void **state) {
    (void)state;
    enum { N = 4 };
    static const Dsv3TensorDtype BF16 = DSV3_TENSOR_BF16;
    float x[64] = {0}, y[64] = {0}, z[64] = {0};
    int32_t tokens[N] = {0, 1, 2, 3}, order[N] = {0, 1, 2, 3};
    int64_t counts[N] = {0}, offsets[N + 1] = {0, 1, 2, 3, 4};
    double loss = 0;
    const double sums[2 * N] = {0}; // vocab_logits_backward's reduced sums
    const Dsv3RouterArgs router = {.num_experts = 4, .top_k = 1, .route_scale = 1.0f};
    for (int b = 0; b < CPU_BACKEND_COUNT; b++) {
        const Dsv3KernelContext *k = context_of(CPU_BACKENDS[b]);
        // Every op whose tensors take a dtype refuses bf16, naming itself.
#define REFUSED(name, call) expect_usage_error((call), name ": dtype bf16")
        REFUSED("add", dsv3_add(k, BF16, x, y, z, N));
        REFUSED("copy_columns", dsv3_copy_columns(k, BF16, x, 2, y, 2, 2, 2));
        REFUSED("embedding_forward", dsv3_embedding_forward(k, BF16, x, tokens, y, N, 2, N, 0));
        REFUSED("embedding_backward", dsv3_embedding_backward(k, BF16, x, y, tokens, N, 2, N, 0));
        REFUSED("rmsnorm_forward", dsv3_rmsnorm_forward(k, BF16, x, y, z, y, N, 2, 1e-6f));
        REFUSED("rmsnorm_backward", dsv3_rmsnorm_backward(k, BF16, x, y, z, y, z, y, N, 2));
        REFUSED("linear_forward", dsv3_linear_forward(k, BF16, x, y, z, N, 2, 2));
        REFUSED("linear_backward", dsv3_linear_backward(k, BF16, x, y, z, y, z, N, 2, 2, 0));
        REFUSED("rope_forward", dsv3_rope_forward(k, BF16, x, y, z, 1, N, 1, 2, 2, 2));
        REFUSED("rope_backward", dsv3_rope_backward(k, BF16, x, y, z, 1, N, 1, 2, 2, 2));
        REFUSED("mla_kv_forward", dsv3_mla_kv_forward(k, BF16, x, y, z, y, 2, N, 1, 2, 2, 2));
        REFUSED("mla_kv_backward", dsv3_mla_kv_backward(k, BF16, x, y, 2, z, y, N, 1, 2, 2, 2));
        REFUSED("attention_forward", dsv3_attention_forward(k, BF16, x, y, NULL, z, z, z, NULL,
                                                            NULL, 1, N, N, 1, 2, 2, 0.5f));
        REFUSED("attention_backward",
                dsv3_attention_backward(k, BF16, x, y, z, x, y, z, x, y, z, NULL, NULL, NULL, 1, N,
                                        N, 1, 2, 2, 0.5f));
        REFUSED("swiglu_forward", dsv3_swiglu_forward(k, BF16, x, y, z, N, 2));
        REFUSED("swiglu_backward", dsv3_swiglu_backward(k, BF16, x, y, z, x, y, N, 2));
        REFUSED("router_forward",
                dsv3_router_forward(k, BF16, x, tokens, y, counts, z, NULL, N, &router));
        REFUSED("router_backward", dsv3_router_backward(k, BF16, x, y, z, tokens, N, &router));
        REFUSED("moe_gather", dsv3_moe_gather(k, BF16, x, y, order, N, 1, 2));
        REFUSED("moe_gather_backward", dsv3_moe_gather_backward(k, BF16, x, y, order, N, 1, 2));
        REFUSED("moe_combine_forward", dsv3_moe_combine_forward(k, BF16, x, y, z, order, N, 1, 2));
        REFUSED("moe_combine_backward",
                dsv3_moe_combine_backward(k, BF16, x, y, z, x, y, order, N, 1, 2));
        REFUSED("experts_forward",
                dsv3_experts_forward(k, BF16, x, y, z, x, y, z, x, offsets, N, 2, 2));
        REFUSED("experts_backward",
                dsv3_experts_backward(k, BF16, x, y, z, x, y, z, x, y, z, x, y, offsets, N, 2, 2));
        REFUSED("cross_entropy",
                dsv3_cross_entropy(k, BF16, &loss, x, y, z, x, tokens, N, 2, N, 1.0f, N));
        REFUSED("vocab_logits", dsv3_vocab_logits(k, BF16, x, y, z, x, N, 2, N));
        REFUSED("vocab_logits_backward",
                dsv3_vocab_logits_backward(k, BF16, &loss, x, y, z, x, sums, y, z, tokens, N, 2, N,
                                           0, 1.0f));
#undef REFUSED
        for (int i = 0; i < 64; i++) // nothing was computed
            assert_true(x[i] == 0.0f && y[i] == 0.0f && z[i] == 0.0f);
        assert_true(loss == 0);
    }
}

// ---- dtype conversion ----

// f32 bit patterns and their bf16 by round to nearest even, worked out by hand: ties between
// two bf16 values go to the one whose last bit is 0.
static const struct {
    uint32_t f32;
    uint16_t bf16;
} ROUNDINGS[] = {
    {0x3F800000u, 0x3F80u}, // 1: exact
    {0x3F808000u, 0x3F80u}, // 1 + 2^-8: tie between 0x3F80 (even) and 0x3F81
    {0x3F818000u, 0x3F82u}, // tie between 0x3F81 (odd) and 0x3F82 (even): up
    {0x3F808001u, 0x3F81u}, // just above the tie: up
    {0x3F807FFFu, 0x3F80u}, // just below the tie: down
    {0xBF818000u, 0xBF82u}, // negative tie: away from zero to the even one
    {0xBF808000u, 0xBF80u}, // negative tie: toward zero to the even one
    {0x00000000u, 0x0000u}, // +0
    {0x80000000u, 0x8000u}, // −0
    {0x00008000u, 0x0000u}, // subnormal tie to 0 (even)
    {0x00018000u, 0x0002u}, // subnormal tie to 0x0002 (even)
    {0x7F7F0000u, 0x7F7Fu}, // the largest finite bf16
    {0x7F7F8000u, 0x7F80u}, // tie between it (odd) and infinity (even): infinity
    {0x7F7FFFFFu, 0x7F80u}, // FLT_MAX rounds to infinity
    {0x7F800000u, 0x7F80u}, // +infinity
    {0xFF800000u, 0xFF80u}, // −infinity
    {0x7FC00000u, 0x7FC0u}, // NaN
    {0x7F800001u, 0x7FC0u}, // a NaN whose rounding would carry into infinity: still NaN
    {0xFFFFFFFFu, 0x7FC0u}, // a negative NaN with every mantissa bit set
};
enum { ROUNDING_COUNT = sizeof ROUNDINGS / sizeof ROUNDINGS[0] };

static void test_convert_rounds_to_nearest_even(void **state) {
    (void)state;
    float f[ROUNDING_COUNT];
    uint16_t h[ROUNDING_COUNT];
    for (int i = 0; i < ROUNDING_COUNT; i++)
        f[i] = float_of(ROUNDINGS[i].f32);
    for (int b = 0; b < CPU_BACKEND_COUNT; b++) {
        const Dsv3KernelContext *k = context_of(CPU_BACKENDS[b]);
        memset(h, 0, sizeof h);
        assert_int_equal(dsv3_convert(k, h, DSV3_TENSOR_BF16, f, F32, ROUNDING_COUNT), DSV3_OK);
        for (int i = 0; i < ROUNDING_COUNT; i++)
            if (h[i] != ROUNDINGS[i].bf16)
                fail_msg("%s: f32 0x%08" PRIx32 " became bf16 0x%04x, expected 0x%04x",
                         dsv3_backend_name(CPU_BACKENDS[b]), ROUNDINGS[i].f32, h[i],
                         ROUNDINGS[i].bf16);
    }
}

static void test_convert_round_trips_and_versions_agree(void **state) {
    (void)state;
    enum { PATTERNS = 1 << 16, RANDOM = 200003 };
    uint16_t *all = zeros(PATTERNS, sizeof(uint16_t)), *back = zeros(PATTERNS, sizeof(uint16_t));
    float *wide = zeros(PATTERNS, sizeof(float));
    for (int i = 0; i < PATTERNS; i++)
        all[i] = (uint16_t)i;
    float *x = zeros(RANDOM, sizeof(float)), *y = zeros(RANDOM, sizeof(float));
    uint16_t *h_fast = zeros(RANDOM, sizeof(uint16_t)), *h_ref = zeros(RANDOM, sizeof(uint16_t));
    rng_state = 11;
    for (int i = 0; i < RANDOM; i++) // every kind of value: random bits
        x[i] = float_of((uint32_t)rng_next());
    for (int b = 0; b < CPU_BACKEND_COUNT; b++) {
        const Dsv3KernelContext *k = context_of(CPU_BACKENDS[b]);
        // bf16 → f32 is exact and bf16 values come back unchanged (NaNs as the quiet NaN).
        assert_int_equal(dsv3_convert(k, wide, F32, all, DSV3_TENSOR_BF16, PATTERNS), DSV3_OK);
        assert_int_equal(dsv3_convert(k, back, DSV3_TENSOR_BF16, wide, F32, PATTERNS), DSV3_OK);
        for (int i = 0; i < PATTERNS; i++) {
            assert_true(bits_of(wide[i]) == (uint32_t)i << 16);
            assert_int_equal(back[i], isnan(wide[i]) ? 0x7FC0 : i);
        }
        // f32 → f32 is a copy.
        assert_int_equal(dsv3_convert(k, y, F32, x, F32, RANDOM), DSV3_OK);
        assert_memory_equal(x, y, RANDOM * sizeof(float));
    }
    // f32 → bf16: both versions give the same bits, at every thread count; the result is within
    // half a bf16 ulp of the value where it is finite.
    assert_int_equal(dsv3_convert(&reference, h_ref, DSV3_TENSOR_BF16, x, F32, RANDOM), DSV3_OK);
    for (int t = 0; t < THREAD_COUNT_CASES; t++) {
        omp_set_num_threads(THREAD_COUNTS[t]);
        assert_int_equal(dsv3_convert(&cpu, h_fast, DSV3_TENSOR_BF16, x, F32, RANDOM), DSV3_OK);
        assert_memory_equal(h_fast, h_ref, RANDOM * sizeof(uint16_t));
    }
    for (int i = 0; i < RANDOM; i++) {
        const float r = float_of((uint32_t)h_ref[i] << 16);
        if (isfinite(x[i]) && isfinite(r) && x[i] != 0)
            // Half an ulp: at most 2^-8 relative (8 significant bits), or half the spacing of
            // bf16's subnormals (2^-133).
            assert_true(fabs((double)r - x[i]) <= fmax(ldexp(fabs((double)x[i]), -8), 0x1p-134));
    }
    // What the CPU does not convert, and overlapping buffers.
    expect_usage_error(dsv3_convert(&cpu, back, DSV3_TENSOR_BF16, all, DSV3_TENSOR_BF16, 4),
                       "convert");
    expect_usage_error(dsv3_convert(&reference, x, F32, x + 1, F32, 4), "overlap");
    expect_usage_error(dsv3_convert(&cpu, x, F32, NULL, F32, 4), "NULL");
    expect_usage_error(dsv3_convert(&cpu, x, F32, y, F32, -1), "n = -1");
    void *arrays[] = {all, back, wide, x, y, h_fast, h_ref};
    for (size_t i = 0; i < sizeof arrays / sizeof arrays[0]; i++)
        dsv3_free(arrays[i]);
}

// ---- the workspace contract ----

// One small problem for every op that takes scratch from the workspace on either CPU backend.
enum {
    WB = 2,
    WT = 9,
    WH = 2,
    WDQK = 8,
    WDV = 4,
    WN = WB * WT,
    WD = 8,
    WV = 11,
    WE = 4,
    WK = 2,
    WM = WN * WK,
    WF = 6,
    WCHUNK = 5,
    WARRAY = 4096
};

typedef struct {
    float q[WARRAY], k[WARRAY], v[WARRAY], x[WARRAY], w1[WARRAY], w2[WARRAY], w3[WARRAY];
    float lse[WARRAY], scores[WARRAY], weights[WARRAY];
    int32_t labels[WN], topk[WM], order[WM];
    int64_t offsets[WE + 1];
    Dsv3RouterArgs router;
    // Outputs, filled with UNTOUCHED before a call that must fail.
    float out[WARRAY], out2[WARRAY], out3[WARRAY], out4[WARRAY];
    int32_t iout[WARRAY];
    int64_t lout[WARRAY];
    double loss;
} Problem;

static Problem problem;

// Inputs the ops accept: random floats, valid labels, a choice of K distinct experts per token
// and its plan (by the reference backend), the lse of a forward.
static void problem_init(void) {
    Problem *p = &problem;
    memset(p, 0, sizeof *p);
    rng_state = 12;
    float *inputs[] = {p->q, p->k, p->v, p->x, p->w1, p->w2, p->w3, p->scores, p->weights};
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++)
        fill(inputs[i], WARRAY, 1.0f);
    for (int n = 0; n < WN; n++) {
        p->labels[n] = n % 4 == 1 ? DSV3_IGNORE_INDEX : (int32_t)(rng_next() % WV);
        for (int k = 0; k < WK; k++) // experts n, n + 1 (mod E): distinct
            p->topk[n * WK + k] = (n + k) % WE;
    }
    p->router = (Dsv3RouterArgs){.num_experts = WE, .top_k = WK, .route_scale = 1.0f};
    assert_int_equal(dsv3_moe_plan(&reference, p->order, p->offsets, p->topk, WN, WK, WE), DSV3_OK);
    const Dsv3OpShape shape = {.B = WB, .Tq = WT, .Tk = WT, .H = WH, .Dqk = WDQK, .Dv = WDV};
    assert_int_equal(kernels_test_reserve(&reference, DSV3_OP_ATTENTION_FORWARD, &shape), DSV3_OK);
    assert_int_equal(dsv3_attention_forward(&reference, F32, p->out, p->lse, NULL, p->q, p->k, p->v,
                                            NULL, NULL, WB, WT, WT, WH, WDQK, WDV, 0.5f),
                     DSV3_OK);
}

typedef struct {
    Dsv3Op op;
    Dsv3OpShape shape;
} OpCall;

// The ops with scratch, each with the shape of its problem.
static const OpCall SCRATCH_OPS[] = {
    {DSV3_OP_ATTENTION_FORWARD, {.B = WB, .Tq = WT, .Tk = WT, .H = WH, .Dqk = WDQK, .Dv = WDV}},
    {DSV3_OP_ATTENTION_BACKWARD, {.B = WB, .Tq = WT, .Tk = WT, .H = WH, .Dqk = WDQK, .Dv = WDV}},
    {DSV3_OP_CROSS_ENTROPY, {.N = WN, .D = WD, .V = WV, .chunk = WCHUNK}},
    {DSV3_OP_EXPERTS_FORWARD, {.E = WE, .D = WD, .F = WF, .M = WM}},
    {DSV3_OP_EXPERTS_BACKWARD, {.E = WE, .D = WD, .F = WF, .M = WM}},
    {DSV3_OP_MOE_PLAN, {.N = WN, .K = WK, .E = WE}},
    {DSV3_OP_MOE_GATHER_BACKWARD, {.M = WM, .K = WK, .D = WD}},
    {DSV3_OP_MOE_COMBINE_FORWARD, {.N = WN, .K = WK, .D = WD}},
    {DSV3_OP_MOE_COMBINE_BACKWARD, {.N = WN, .K = WK, .D = WD}},
    {DSV3_OP_RMSNORM_BACKWARD, {.N = WN, .D = WD}},
    {DSV3_OP_ROUTER_FORWARD, {.N = WN, .E = WE, .K = WK}},
    {DSV3_OP_ROUTER_BACKWARD, {.N = WN, .E = WE, .K = WK}},
};
enum { SCRATCH_OP_COUNT = sizeof SCRATCH_OPS / sizeof SCRATCH_OPS[0] };

// Runs `op` on the problem with ctx as it is.
static Dsv3Err run_op(const Dsv3KernelContext *ctx, Dsv3Op op) {
    Problem *p = &problem;
    switch (op) {
    case DSV3_OP_ATTENTION_FORWARD:
        return dsv3_attention_forward(ctx, F32, p->out, p->out2, NULL, p->q, p->k, p->v, NULL, NULL,
                                      WB, WT, WT, WH, WDQK, WDV, 0.5f);
    case DSV3_OP_ATTENTION_BACKWARD:
        return dsv3_attention_backward(ctx, F32, p->out, p->out2, p->out3, p->x, p->q, p->k, p->v,
                                       p->w1, p->lse, NULL, NULL, NULL, WB, WT, WT, WH, WDQK, WDV,
                                       0.5f);
    case DSV3_OP_CROSS_ENTROPY:
        return dsv3_cross_entropy(ctx, F32, &p->loss, p->out, p->out2, p->x, p->w1, p->labels, WN,
                                  WD, WV, 1.0f, WCHUNK);
    case DSV3_OP_EXPERTS_FORWARD:
        return dsv3_experts_forward(ctx, F32, p->out, p->out2, p->out3, p->x, p->w1, p->w2, p->w3,
                                    p->offsets, WE, WD, WF);
    case DSV3_OP_EXPERTS_BACKWARD:
        return dsv3_experts_backward(ctx, F32, p->out, p->out2, p->out3, p->out4, p->x, p->q, p->k,
                                     p->v, p->w1, p->w2, p->w3, p->offsets, WE, WD, WF);
    case DSV3_OP_MOE_PLAN: return dsv3_moe_plan(ctx, p->iout, p->lout, p->topk, WN, WK, WE);
    case DSV3_OP_MOE_GATHER_BACKWARD:
        return dsv3_moe_gather_backward(ctx, F32, p->out, p->x, p->order, WM, WK, WD);
    case DSV3_OP_MOE_COMBINE_FORWARD:
        return dsv3_moe_combine_forward(ctx, F32, p->out, p->x, p->weights, p->order, WN, WK, WD);
    case DSV3_OP_MOE_COMBINE_BACKWARD:
        return dsv3_moe_combine_backward(ctx, F32, p->out, p->out2, p->x, p->q, p->weights,
                                         p->order, WN, WK, WD);
    case DSV3_OP_RMSNORM_BACKWARD:
        return dsv3_rmsnorm_backward(ctx, F32, p->out, p->out2, p->x, p->q, p->w1, p->weights, WN,
                                     WD);
    case DSV3_OP_ROUTER_FORWARD:
        return dsv3_router_forward(ctx, F32, p->out, p->iout, p->out2, p->lout, p->x, NULL, WN,
                                   &p->router);
    case DSV3_OP_ROUTER_BACKWARD:
        return dsv3_router_backward(ctx, F32, p->out, p->weights, p->scores, p->topk, WN,
                                    &p->router);
    default: fail_msg("no problem for op %s", dsv3_op_name(op));
    }
    return DSV3_ERR_INTERNAL;
}

static void fill_outputs(void) {
    Problem *p = &problem;
    memset(p->out, UNTOUCHED, sizeof p->out);
    memset(p->out2, UNTOUCHED, sizeof p->out2);
    memset(p->out3, UNTOUCHED, sizeof p->out3);
    memset(p->out4, UNTOUCHED, sizeof p->out4);
    memset(p->iout, UNTOUCHED, sizeof p->iout);
    memset(p->lout, UNTOUCHED, sizeof p->lout);
    memset(&p->loss, UNTOUCHED, sizeof p->loss);
}

static int outputs_untouched(void) {
    const unsigned char *regions[] = {
        (const unsigned char *)problem.out,  (const unsigned char *)problem.out2,
        (const unsigned char *)problem.out3, (const unsigned char *)problem.out4,
        (const unsigned char *)problem.iout, (const unsigned char *)problem.lout};
    const size_t sizes[] = {sizeof problem.out,  sizeof problem.out2, sizeof problem.out3,
                            sizeof problem.out4, sizeof problem.iout, sizeof problem.lout};
    for (size_t r = 0; r < sizeof regions / sizeof regions[0]; r++)
        for (size_t i = 0; i < sizes[r]; i++)
            if (regions[r][i] != UNTOUCHED) return 0;
    const unsigned char *loss = (const unsigned char *)&problem.loss;
    for (size_t i = 0; i < sizeof problem.loss; i++)
        if (loss[i] != UNTOUCHED) return 0;
    return 1;
}

// A workspace one byte short (and none at all) is refused before any work, with a message that
// names the op and both sizes; the exact size works, and the op allocates nothing.
static void test_workspace_too_small_is_refused(void **state) {
    (void)state;
    problem_init();
    for (int b = 0; b < CPU_BACKEND_COUNT; b++) {
        Dsv3KernelContext *ctx = context_of(CPU_BACKENDS[b]);
        for (int t = 0; t < THREAD_COUNT_CASES; t++) {
            omp_set_num_threads(THREAD_COUNTS[t]);
            for (int i = 0; i < SCRATCH_OP_COUNT; i++) {
                const Dsv3Op op = SCRATCH_OPS[i].op;
                size_t need = 0;
                assert_int_equal(dsv3_workspace_bytes(ctx, op, &SCRATCH_OPS[i].shape, &need),
                                 DSV3_OK);
                if (need == 0) continue; // this backend's version needs no scratch
                kernels_test_free_workspace(ctx);
                fill_outputs();
                char expected[128];
                snprintf(expected, sizeof expected,
                         "%s: needs %zu bytes of workspace, the context has 0", dsv3_op_name(op),
                         need);
                expect_usage_error(run_op(ctx, op), expected);
                if (!outputs_untouched())
                    fail_msg("%s (%s): a call without workspace wrote its outputs",
                             dsv3_op_name(op), dsv3_backend_name(CPU_BACKENDS[b]));
                assert_int_equal(dsv3_memory_alloc(ctx, &ctx->workspace, need - 1, "short"),
                                 DSV3_OK);
                ctx->workspace_bytes = need - 1;
                snprintf(expected, sizeof expected,
                         "%s: needs %zu bytes of workspace, the context has %zu", dsv3_op_name(op),
                         need, need - 1);
                expect_usage_error(run_op(ctx, op), expected);
                if (!outputs_untouched())
                    fail_msg("%s (%s): a call with a short workspace wrote its outputs",
                             dsv3_op_name(op), dsv3_backend_name(CPU_BACKENDS[b]));
                // Exactly what the query said: the op runs, and allocates nothing.
                assert_int_equal(kernels_test_reserve(ctx, op, &SCRATCH_OPS[i].shape), DSV3_OK);
                const size_t before = dsv3_alloc_current_bytes();
                dsv3_alloc_reset_peak();
                if (run_op(ctx, op) != DSV3_OK) fail_msg("%s", dsv3_error_text());
                assert_true(dsv3_alloc_peak_bytes() == before);
            }
        }
    }
}

// The fields of Dsv3OpShape.
static const size_t SHAPE_FIELDS[] = {
    offsetof(Dsv3OpShape, N),    offsetof(Dsv3OpShape, D),  offsetof(Dsv3OpShape, V),
    offsetof(Dsv3OpShape, B),    offsetof(Dsv3OpShape, T),  offsetof(Dsv3OpShape, H),
    offsetof(Dsv3OpShape, Dqk),  offsetof(Dsv3OpShape, Dv), offsetof(Dsv3OpShape, E),
    offsetof(Dsv3OpShape, K),    offsetof(Dsv3OpShape, M),  offsetof(Dsv3OpShape, F),
    offsetof(Dsv3OpShape, chunk)};

// Every op's need, for each field of its shape doubled in turn, never shrinks; nor with more
// threads.
static void test_workspace_grows_with_the_shape(void **state) {
    (void)state;
    for (int b = 0; b < CPU_BACKEND_COUNT; b++) {
        const Dsv3KernelContext *ctx = context_of(CPU_BACKENDS[b]);
        for (int op = 0; op < DSV3_OP_COUNT; op++) {
            const Dsv3OpShape base = {.N = 37,
                                      .D = 24,
                                      .V = 301,
                                      .B = 3,
                                      .T = 70,
                                      .H = 4,
                                      .Dqk = 24,
                                      .Dv = 16,
                                      .E = 8,
                                      .K = 3,
                                      .M = 111,
                                      .F = 40,
                                      .chunk = 16};
            for (size_t field = 0; field < sizeof SHAPE_FIELDS / sizeof SHAPE_FIELDS[0]; field++) {
                Dsv3OpShape grown = base;
                *(int64_t *)((char *)&grown + SHAPE_FIELDS[field]) *= 2;
                size_t small = 0, large = 0;
                omp_set_num_threads(1);
                assert_int_equal(dsv3_workspace_bytes(ctx, op, &base, &small), DSV3_OK);
                assert_int_equal(dsv3_workspace_bytes(ctx, op, &grown, &large), DSV3_OK);
                if (large < small)
                    fail_msg("%s (%s): %zu bytes, then %zu with shape field %zu doubled",
                             dsv3_op_name((Dsv3Op)op), dsv3_backend_name(CPU_BACKENDS[b]), small,
                             large, field);
                omp_set_num_threads(THREAD_COUNTS[THREAD_COUNT_CASES - 1]);
                assert_int_equal(dsv3_workspace_bytes(ctx, op, &base, &large), DSV3_OK);
                assert_true(large >= small);
            }
        }
    }
    // Some ops do need scratch that grows, and the fast ones keep some per thread.
    const Dsv3OpShape shape = {.B = 1, .Tq = 100, .Tk = 100, .H = 2, .Dqk = 8, .Dv = 8};
    Dsv3OpShape longer = shape;
    longer.Tq = longer.Tk = 1000;
    size_t one = 0, three = 0, short_t = 0, long_t = 0;
    omp_set_num_threads(1);
    assert_int_equal(dsv3_workspace_bytes(&cpu, DSV3_OP_ATTENTION_FORWARD, &shape, &one), DSV3_OK);
    omp_set_num_threads(3);
    assert_int_equal(dsv3_workspace_bytes(&cpu, DSV3_OP_ATTENTION_FORWARD, &shape, &three),
                     DSV3_OK);
    assert_true(one > 0 && three > one);
    assert_int_equal(dsv3_workspace_bytes(&reference, DSV3_OP_ATTENTION_BACKWARD, &shape, &short_t),
                     DSV3_OK);
    assert_int_equal(dsv3_workspace_bytes(&reference, DSV3_OP_ATTENTION_BACKWARD, &longer, &long_t),
                     DSV3_OK);
    assert_true(short_t > 0 && long_t > short_t);
    // A shape whose workspace could not exist is an error, not a wrapped-around size.
    const Dsv3OpShape huge = {.N = INT64_MAX / 2, .V = INT64_MAX / 2, .chunk = INT64_MAX / 2};
    size_t bytes = 0;
    expect_usage_error(dsv3_workspace_bytes(&reference, DSV3_OP_CROSS_ENTROPY, &huge, &bytes),
                       "does not fit");
}

// ---- token bookkeeping ----

static void test_tokens_check_names_the_first_bad_position(void **state) {
    (void)state;
    enum { N = 40000, V = 1000 }; // enough tokens for the fast version's threads
    int32_t *tokens = zeros(N, sizeof(int32_t));
    for (int n = 0; n < N; n++)
        tokens[n] = n % V;
    for (int b = 0; b < CPU_BACKEND_COUNT; b++) {
        const Dsv3KernelContext *k = context_of(CPU_BACKENDS[b]);
        for (int t = 0; t < THREAD_COUNT_CASES; t++) {
            omp_set_num_threads(THREAD_COUNTS[t]);
            assert_int_equal(dsv3_tokens_check(k, tokens, N, V), DSV3_OK);
            tokens[31000] = -1, tokens[20001] = V; // the first, in a later thread's share
            expect_usage_error(dsv3_tokens_check(k, tokens, N, V),
                               "tokens[20001] = 1000 is outside the vocabulary [0, 1000)");
            tokens[7] = V + 5;
            expect_usage_error(dsv3_tokens_check(k, tokens, N, V), "tokens[7] = 1005");
            tokens[7] = 7, tokens[20001] = 1, tokens[31000] = 0;
        }
        assert_int_equal(dsv3_tokens_check(k, NULL, 0, V), DSV3_OK);
        expect_usage_error(dsv3_tokens_check(k, tokens, N, 0), "V = 0");
        expect_usage_error(dsv3_tokens_check(k, NULL, 3, V), "tokens is NULL");
    }
    dsv3_free(tokens);
}

static void test_document_ids(void **state) {
    (void)state;
    // eos = 9 at the first position, in the middle, twice in a row and at the last position.
    enum { B = 2, T = 8 };
    const int32_t eos = 9;
    const int32_t tokens[B * T] = {9, 1, 2, 9, 3, 9, 9, 4, /**/ 5, 6, 7, 8, 1, 2, 3, 9};
    const int32_t want[B * T] = {0, 1, 1, 1, 2, 2, 3, 4, /**/ 0, 0, 0, 0, 0, 0, 0, 0};
    int32_t doc[B * T];
    for (int b = 0; b < CPU_BACKEND_COUNT; b++) {
        const Dsv3KernelContext *k = context_of(CPU_BACKENDS[b]);
        memset(doc, 0xff, sizeof doc);
        assert_int_equal(dsv3_document_ids(k, doc, tokens, B, T, eos), DSV3_OK);
        assert_memory_equal(doc, want, sizeof want);
        memset(doc, 0xff, sizeof doc);
        assert_int_equal(dsv3_document_ids(k, doc, tokens, B, T, -1), DSV3_OK); // no eos
        for (int i = 0; i < B * T; i++)
            assert_int_equal(doc[i], 0);
        expect_usage_error(dsv3_document_ids(k, NULL, tokens, B, T, eos), "NULL");
        expect_usage_error(dsv3_document_ids(k, doc, tokens, -1, T, eos), "B = -1");
    }
    // Many sequences, fast against reference, and against the rule itself: a position's id is
    // the number of eos before it in its sequence.
    enum { BIG_B = 64, BIG_T = 300 };
    int32_t *many = zeros(BIG_B * BIG_T, sizeof(int32_t));
    int32_t *fast = zeros(BIG_B * BIG_T, sizeof(int32_t)), *ref = zeros(BIG_B * BIG_T, 4);
    rng_state = 13;
    for (int i = 0; i < BIG_B * BIG_T; i++)
        many[i] = (int32_t)(rng_next() % 20); // eos (0) one time in 20
    assert_int_equal(dsv3_document_ids(&reference, ref, many, BIG_B, BIG_T, 0), DSV3_OK);
    for (int t = 0; t < THREAD_COUNT_CASES; t++) {
        omp_set_num_threads(THREAD_COUNTS[t]);
        assert_int_equal(dsv3_document_ids(&cpu, fast, many, BIG_B, BIG_T, 0), DSV3_OK);
        assert_memory_equal(fast, ref, BIG_B * BIG_T * sizeof(int32_t));
    }
    for (int b = 0; b < BIG_B; b++) {
        int32_t seen = 0;
        for (int t = 0; t < BIG_T; t++) {
            assert_int_equal(ref[b * BIG_T + t], seen);
            seen += many[b * BIG_T + t] == 0;
        }
    }
    dsv3_free(many);
    dsv3_free(fast);
    dsv3_free(ref);
}

static void test_labels_count(void **state) {
    (void)state;
    enum { N = 50001 };
    int32_t *labels = zeros(N, sizeof(int32_t));
    rng_state = 14;
    int64_t want = 0;
    for (int n = 0; n < N; n++) {
        labels[n] = rng_next() % 3 == 0 ? DSV3_IGNORE_INDEX : (int32_t)(rng_next() % 100);
        want += labels[n] != DSV3_IGNORE_INDEX;
    }
    for (int b = 0; b < CPU_BACKEND_COUNT; b++) {
        const Dsv3KernelContext *k = context_of(CPU_BACKENDS[b]);
        for (int t = 0; t < THREAD_COUNT_CASES; t++) {
            omp_set_num_threads(THREAD_COUNTS[t]);
            int64_t count = -1;
            assert_int_equal(dsv3_labels_count(k, &count, labels, N), DSV3_OK);
            assert_int_equal(count, want);
        }
        int64_t count = -1;
        assert_int_equal(dsv3_labels_count(k, &count, NULL, 0), DSV3_OK);
        assert_int_equal(count, 0);
        expect_usage_error(dsv3_labels_count(k, NULL, labels, N), "count is NULL");
    }
    dsv3_free(labels);
}

// ---- element-wise and copies ----

static void test_add(void **state) {
    (void)state;
    static const int64_t SIZES[] = {0, 1, 7, 100003};
    rng_state = 15;
    for (size_t s = 0; s < sizeof SIZES / sizeof SIZES[0]; s++) {
        const int64_t n = SIZES[s];
        float *a = zeros(n, sizeof(float)), *b = zeros(n, sizeof(float));
        float *out = zeros(n, sizeof(float)), *ref = zeros(n, sizeof(float));
        fill(a, n, 1.0f);
        fill(b, n, 1.0f);
        assert_int_equal(dsv3_add(&reference, F32, ref, a, b, n), DSV3_OK);
        for (int64_t i = 0; i < n; i++)
            assert_true(ref[i] == a[i] + b[i]);
        for (int t = 0; t < THREAD_COUNT_CASES; t++) {
            omp_set_num_threads(THREAD_COUNTS[t]);
            assert_int_equal(dsv3_add(&cpu, F32, out, a, b, n), DSV3_OK);
            if (n > 0) assert_memory_equal(out, ref, (size_t)n * sizeof(float));
        }
        // out may alias an input.
        assert_int_equal(dsv3_add(&cpu, F32, a, a, b, n), DSV3_OK);
        if (n > 0) assert_memory_equal(a, ref, (size_t)n * sizeof(float));
        dsv3_free(a), dsv3_free(b), dsv3_free(out), dsv3_free(ref);
    }
    float x[2] = {0};
    expect_usage_error(dsv3_add(&cpu, F32, x, NULL, x, 2), "NULL");
    expect_usage_error(dsv3_add(&reference, F32, x, x, x, -2), "n = -2");
}

static void test_copy_columns_with_strides(void **state) {
    (void)state;
    // Columns [2, 5) of a (rows, 7) matrix into columns [1, 4) of a (rows, 5) one.
    enum { SRC_STRIDE = 7, DST_STRIDE = 5, COLS = 3, SRC_FIRST = 2, DST_FIRST = 1 };
    static const int64_t ROWS[] = {1, 4, 20000}; // the last takes the threaded path
    for (size_t r = 0; r < sizeof ROWS / sizeof ROWS[0]; r++) {
        const int64_t rows = ROWS[r];
        float *src = zeros(rows * SRC_STRIDE, sizeof(float));
        float *dst = zeros(rows * DST_STRIDE, sizeof(float));
        for (int64_t i = 0; i < rows * SRC_STRIDE; i++)
            src[i] = (float)i;
        for (int b = 0; b < CPU_BACKEND_COUNT; b++) {
            const Dsv3KernelContext *k = context_of(CPU_BACKENDS[b]);
            for (int t = 0; t < THREAD_COUNT_CASES; t++) {
                omp_set_num_threads(THREAD_COUNTS[t]);
                for (int64_t i = 0; i < rows * DST_STRIDE; i++)
                    dst[i] = -1.0f;
                assert_int_equal(dsv3_copy_columns(k, F32, dst + DST_FIRST, DST_STRIDE,
                                                   src + SRC_FIRST, SRC_STRIDE, rows, COLS),
                                 DSV3_OK);
                for (int64_t i = 0; i < rows; i++)
                    for (int64_t c = 0; c < DST_STRIDE; c++) {
                        const int inside = c >= DST_FIRST && c < DST_FIRST + COLS;
                        const float want =
                            inside ? (float)(i * SRC_STRIDE + SRC_FIRST + c - DST_FIRST) : -1.0f;
                        assert_true(dst[i * DST_STRIDE + c] == want);
                    }
            }
        }
        dsv3_free(src);
        dsv3_free(dst);
    }
    float x[8] = {0};
    expect_usage_error(dsv3_copy_columns(&cpu, F32, x, 2, x, 4, 2, 3), "must be >= cols = 3");
    expect_usage_error(dsv3_copy_columns(&reference, F32, x, 4, NULL, 4, 2, 3), "NULL");
    assert_int_equal(dsv3_copy_columns(&cpu, F32, NULL, 4, NULL, 4, 0, 3), DSV3_OK);
}

// ---- multi-head latent attention's key/value assembly ----

static void test_mla_kv_assembly_and_head_sums(void **state) {
    (void)state;
    enum { N = 37, H = 5, NOPE = 6, R = 4, DV = 3, KPE_STRIDE = 11, KPE_FIRST = 7 };
    const int64_t Dqk = NOPE + R, nv = NOPE + DV;
    float *kvb = zeros(N * H * nv, sizeof(float)), *kpe = zeros(N * KPE_STRIDE, sizeof(float));
    float *k_out[2], *v_out[2], *dkvb[2], *dkpe[2];
    float *dk = zeros(N * H * Dqk, sizeof(float)), *dv = zeros(N * H * DV, sizeof(float));
    rng_state = 16;
    fill(kvb, N * H * nv, 1.0f);
    fill(kpe, N * KPE_STRIDE, 1.0f);
    fill(dk, N * H * Dqk, 1.0f);
    fill(dv, N * H * DV, 1.0f);
    for (int b = 0; b < CPU_BACKEND_COUNT; b++) {
        const Dsv3KernelContext *k = context_of(CPU_BACKENDS[b]);
        k_out[b] = zeros(N * H * Dqk, sizeof(float));
        v_out[b] = zeros(N * H * DV, sizeof(float));
        dkvb[b] = zeros(N * H * nv, sizeof(float));
        dkpe[b] = zeros(N * KPE_STRIDE, sizeof(float));
        for (int64_t i = 0; i < N * KPE_STRIDE; i++)
            dkpe[b][i] = -7.0f; // outside the R columns: must stay
        assert_int_equal(dsv3_mla_kv_forward(k, F32, k_out[b], v_out[b], kvb, kpe + KPE_FIRST,
                                             KPE_STRIDE, N, H, NOPE, R, DV),
                         DSV3_OK);
        assert_int_equal(dsv3_mla_kv_backward(k, F32, dkvb[b], dkpe[b] + KPE_FIRST, KPE_STRIDE, dk,
                                              dv, N, H, NOPE, R, DV),
                         DSV3_OK);
        // Against the layout written out: k = [k_nope of the head, the shared k_pe], v the rest
        // of wkv_b's output; the gradients back in wkv_b's layout, and k_pe's summed over heads.
        for (int64_t n = 0; n < N; n++) {
            for (int64_t h = 0; h < H; h++) {
                const float *kh = k_out[b] + (n * H + h) * Dqk, *src = kvb + (n * H + h) * nv;
                for (int64_t c = 0; c < NOPE; c++) {
                    assert_true(kh[c] == src[c]);
                    assert_true(dkvb[b][(n * H + h) * nv + c] == dk[(n * H + h) * Dqk + c]);
                }
                for (int64_t r = 0; r < R; r++)
                    assert_true(kh[NOPE + r] == kpe[n * KPE_STRIDE + KPE_FIRST + r]);
                for (int64_t c = 0; c < DV; c++) {
                    assert_true(v_out[b][(n * H + h) * DV + c] == src[NOPE + c]);
                    assert_true(dkvb[b][(n * H + h) * nv + NOPE + c] == dv[(n * H + h) * DV + c]);
                }
            }
            for (int64_t c = 0; c < KPE_STRIDE; c++) {
                const float got = dkpe[b][n * KPE_STRIDE + c];
                if (c < KPE_FIRST || c >= KPE_FIRST + R) {
                    assert_true(got == -7.0f);
                    continue;
                }
                double sum = 0;
                for (int64_t h = 0; h < H; h++)
                    sum += dk[(n * H + h) * Dqk + NOPE + (c - KPE_FIRST)];
                assert_true(fabs(got - sum) <= 1e-6 * (1 + fabs(sum)));
            }
        }
    }
    assert_memory_equal(k_out[0], k_out[1], N * H * Dqk * sizeof(float));
    assert_memory_equal(v_out[0], v_out[1], N * H * DV * sizeof(float));
    assert_memory_equal(dkvb[0], dkvb[1], N * H * nv * sizeof(float));
    expect_close(dkpe[0], dkpe[1], N * KPE_STRIDE, "mla_kv_backward dkpe");
    expect_usage_error(
        dsv3_mla_kv_forward(&cpu, F32, k_out[0], v_out[0], kvb, kpe, R - 1, N, H, NOPE, R, DV),
        "stride");
    expect_usage_error(
        dsv3_mla_kv_backward(&reference, F32, dkvb[0], NULL, R, dk, dv, N, H, NOPE, R, DV), "NULL");
    for (int b = 0; b < CPU_BACKEND_COUNT; b++) {
        dsv3_free(k_out[b]), dsv3_free(v_out[b]), dsv3_free(dkvb[b]), dsv3_free(dkpe[b]);
    }
    dsv3_free(kvb), dsv3_free(kpe), dsv3_free(dk), dsv3_free(dv);
}

// ---- load balancing ----

static void test_counts_accumulate(void **state) {
    (void)state;
    enum { E = 9 };
    const int64_t counts[E] = {0, 1, 2, 3, 100, 5, 6, 7, 8};
    for (int b = 0; b < CPU_BACKEND_COUNT; b++) {
        const Dsv3KernelContext *k = context_of(CPU_BACKENDS[b]);
        int64_t total[E] = {10, 10, 10, 10, 10, 10, 10, 10, 10};
        assert_int_equal(dsv3_counts_accumulate(k, total, counts, E), DSV3_OK);
        assert_int_equal(dsv3_counts_accumulate(k, total, counts, E), DSV3_OK);
        for (int e = 0; e < E; e++)
            assert_int_equal(total[e], 10 + 2 * counts[e]);
        expect_usage_error(dsv3_counts_accumulate(k, NULL, counts, E), "NULL");
    }
}

static void test_expert_bias_update(void **state) {
    (void)state;
    enum { E = 16 };
    const double coeff = 1e-3;
    int64_t counts[E];
    float bias0[E], got[CPU_BACKEND_COUNT][E];
    rng_state = 17;
    for (int e = 0; e < E; e++) {
        counts[e] = (int64_t)(rng_next() % 50);
        bias0[e] = rng_uniform(0.1f);
    }
    counts[3] = counts[4] = 0;
    counts[5] = 0; // ties below the mean
    // The formula: δ = coeff · sign(mean(n) − n), bias += δ − mean(δ).
    double mean = 0, delta[E], delta_mean = 0;
    for (int e = 0; e < E; e++)
        mean += (double)counts[e] / E;
    for (int e = 0; e < E; e++) {
        delta[e] = mean > (double)counts[e] ? coeff : (mean < (double)counts[e] ? -coeff : 0.0);
        delta_mean += delta[e] / E;
    }
    for (int b = 0; b < CPU_BACKEND_COUNT; b++) {
        const Dsv3KernelContext *k = context_of(CPU_BACKENDS[b]);
        memcpy(got[b], bias0, sizeof bias0);
        assert_int_equal(dsv3_expert_bias_update(k, got[b], counts, E, coeff), DSV3_OK);
        double sum_of_steps = 0;
        for (int e = 0; e < E; e++) {
            const double want = (double)bias0[e] + delta[e] - delta_mean;
            assert_true(fabs(got[b][e] - want) <= 1e-7);
            sum_of_steps += (double)got[b][e] - bias0[e];
        }
        assert_true(fabs(sum_of_steps) <= 1e-6); // re-centred to mean zero
        expect_usage_error(dsv3_expert_bias_update(k, got[b], counts, 0, coeff), "E = 0");
        expect_usage_error(dsv3_expert_bias_update(k, got[b], counts, E, NAN), "coeff");
    }
    expect_close(got[0], got[1], E, "expert_bias_update");
    // Equal counts: every δ is 0 and the bias does not move.
    const int64_t equal[E] = {4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4};
    float same[E];
    memcpy(same, bias0, sizeof bias0);
    assert_int_equal(dsv3_expert_bias_update(&cpu, same, equal, E, coeff), DSV3_OK);
    assert_memory_equal(same, bias0, sizeof bias0);
}

#define FIXTURE(test) cmocka_unit_test_setup_teardown(test, setup, teardown)

int main(void) {
    const struct CMUnitTest tests[] = {
        FIXTURE(test_contexts_of_every_backend),
        FIXTURE(test_dispatch_checks_the_context),
        FIXTURE(test_op_names),
        FIXTURE(test_profiling_counts_ops_and_gemms),
        FIXTURE(test_profiling_sink_sees_each_op),
        FIXTURE(test_memory_ops),
        FIXTURE(test_cpu_ops_refuse_bf16),
        FIXTURE(test_convert_rounds_to_nearest_even),
        FIXTURE(test_convert_round_trips_and_versions_agree),
        FIXTURE(test_workspace_too_small_is_refused),
        FIXTURE(test_workspace_grows_with_the_shape),
        FIXTURE(test_tokens_check_names_the_first_bad_position),
        FIXTURE(test_document_ids),
        FIXTURE(test_labels_count),
        FIXTURE(test_add),
        FIXTURE(test_copy_columns_with_strides),
        FIXTURE(test_mla_kv_assembly_and_head_sums),
        FIXTURE(test_counts_accumulate),
        FIXTURE(test_expert_bias_update),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
