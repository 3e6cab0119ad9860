// test_cuda_dense: the CUDA versions of the dense element-wise ops against the reference CPU
// backend — token bookkeeping (tokens_check, document_ids, labels_count), add, copy_columns,
// embedding, RMSNorm, SwiGLU, the rotary embedding (tables and rotation) and MLA's key/value
// assembly, forward and backward — on random inputs of several shapes: odd sizes, size 1, rows
// longer than a block, and more elements (or rows) than one grid of the grid-stride loops.
//
// Tolerances, relative (‖cuda − ref‖ / ‖ref‖):
// - fp32: 1e-5 (TOLERANCE_F32); the rotary tables 1e-7 (both sides compute in double and round
//   once to fp32); copies (copy_columns, embedding forward, MLA's k, v, dkvb), the embedding's
//   weight gradient (the same fp32 additions in the same token order), token ids, document ids
//   and counts exactly.
// - bf16: the host inputs are rounded to bf16 first, so that both sides see the same values,
//   and the reference computes on them in fp32. An output stored as bf16 is one rounding of a
//   value computed in fp32, at most 2^-9 ≈ 1.95e-3 relative, so 4e-3 (TOLERANCE_BF16) leaves
//   room for the fp32 differences; fp32 outputs of bf16 inputs (rstd, dweight) keep 1e-5, and
//   copies stay exact.
// Also: weight gradients added onto non-zero buffers, outputs fully written over garbage,
// channels outside the rotated or copied blocks untouched, the in-place aliasing that
// kernels.h allows (add's out = a, swiglu's da = a and db = b), the data faults (a negative
// token id, reported by dsv3_synchronize naming the op), and the host argument checks
// (DSV3_ERR_USAGE with the CPU's message).
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "tests/cuda/cuda_test.h"

#define TOLERANCE_F32 1e-5
#define TOLERANCE_BF16 4e-3
#define TOLERANCE_TABLES 1e-7
#define EXACT 0.0

// The rotary settings of the CPU tests (DeepSeek-V3's YaRN values).
#define ROPE_THETA 10000.0
#define ROPE_FACTOR 40.0
#define BETA_FAST 32.0
#define BETA_SLOW 1.0

enum {
    // More elements than one grid of the grid-stride loops holds (4096 blocks × 256 threads).
    PAST_ONE_GRID = (1 << 20) + 77,
    // More rows than one grid of the one-block-per-row kernels (4096 blocks).
    ROWS_PAST_ONE_GRID = 4100,
    // An id that no test vocabulary reaches.
    FAR_TOKEN = 1 << 30,
    // A dtype that no backend knows.
    BAD_DTYPE = 7,
};

static const Dsv3TensorDtype F32 = DSV3_TENSOR_F32;
static const Dsv3TensorDtype DTYPES[] = {DSV3_TENSOR_F32, DSV3_TENSOR_BF16};
enum { DTYPE_COUNT = sizeof DTYPES / sizeof DTYPES[0] };

// ---- buffers ----

static float *floats(int64_t count) { return test_floats(count); }

static int32_t *ints(int64_t count) { return test_buffer(count, sizeof(int32_t)); }

static float *copy_of(const float *src, int64_t count) {
    float *dst = floats(count);
    memcpy(dst, src, (size_t)count * sizeof(float));
    return dst;
}

static size_t dtype_bytes(Dsv3TensorDtype dtype) {
    return dtype == DSV3_TENSOR_BF16 ? sizeof(uint16_t) : sizeof(float);
}

static const char *dtype_name(Dsv3TensorDtype dtype) {
    return dtype == DSV3_TENSOR_BF16 ? "bf16" : "f32";
}

// x (count) as a tensor of dtype holds it: rounded to bf16 in place for bf16.
static void as_dtype(Dsv3TensorDtype dtype, float *x, int64_t count) {
    if (dtype == DSV3_TENSOR_BF16) cuda_test_round_bf16(x, count);
}

// A device tensor of dtype holding the host values x (count), freed after the shape.
static void *upload(Dsv3TensorDtype dtype, const float *x, int64_t count) {
    return dtype == DSV3_TENSOR_BF16 ? cuda_test_upload_bf16(x, count)
                                     : cuda_test_upload(x, (size_t)count * sizeof(float));
}

static float *download(Dsv3TensorDtype dtype, const void *device, int64_t count) {
    return dtype == DSV3_TENSOR_BF16 ? cuda_test_download_bf16(device, count)
                                     : cuda_test_download_floats(device, count);
}

static int32_t *upload_ints(const int32_t *x, int64_t count) {
    return cuda_test_upload(x, (size_t)count * sizeof(int32_t));
}

static int32_t *download_ints(const int32_t *device, int64_t count) {
    int32_t *host = ints(count);
    cuda_test_download(host, device, (size_t)count * sizeof(int32_t));
    return host;
}

// Element `offset` of a device tensor of dtype.
static void *element(Dsv3TensorDtype dtype, void *base, int64_t offset) {
    return (char *)base + (size_t)offset * dtype_bytes(dtype);
}

// Frees the host and device buffers of a shape before the next one (the per-case teardown).
static void next_shape(void) { (void)cuda_test_teardown_case(NULL); }

// ---- random inputs (splitmix64: the same numbers on every machine) ----

static uint64_t rng_state;

static void fill(float *x, int64_t count, float scale) {
    for (int64_t i = 0; i < count; i++)
        x[i] = kernels_test_uniform(&rng_state, scale);
}

static int32_t rng_index(int64_t bound) {
    return (int32_t)(kernels_test_rng_next(&rng_state) % (uint64_t)bound);
}

// ---- checks ----

static double tolerance(Dsv3TensorDtype dtype) {
    return dtype == DSV3_TENSOR_BF16 ? TOLERANCE_BF16 : TOLERANCE_F32;
}

// cuda_test_expect_close, naming the output, the shape and the dtype.
static void expect_close(const float *got, const float *want, int64_t count, double tol,
                         const char *what, const char *shape, Dsv3TensorDtype dtype) {
    char label[192];
    snprintf(label, sizeof label, "%s (%s, %s)", what, shape, dtype_name(dtype));
    cuda_test_expect_close(got, want, count, tol, label);
}

static void expect_error(Dsv3Err got, const char *fragment) {
    assert_int_equal(got, DSV3_ERR_USAGE);
    if (!strstr(dsv3_error_message(), fragment))
        fail_msg("error message '%s' does not mention '%s'", dsv3_error_message(), fragment);
    dsv3_error_clear();
}

// The next synchronisation reports a data fault of `op`, once.
static void expect_fault(Dsv3Op op) {
    expect_error(dsv3_synchronize(&cuda_ctx), dsv3_op_name(op));
    cuda_test_ok(dsv3_synchronize(&cuda_ctx));
}

// ---- tokens_check ----

// Both backends refuse tokens (N) with the same message (device: the CUDA copy).
static void expect_same_refusal(const int32_t *tokens, int64_t N, int64_t V) {
    char want[512];
    assert_int_equal(dsv3_tokens_check(&ref_ctx, tokens, N, V), DSV3_ERR_USAGE);
    snprintf(want, sizeof want, "%s", dsv3_error_message());
    dsv3_error_clear();
    const int32_t *device = upload_ints(tokens, N);
    assert_int_equal(dsv3_tokens_check(&cuda_ctx, device, N, V), DSV3_ERR_USAGE);
    if (strcmp(dsv3_error_message(), want) != 0)
        fail_msg("tokens_check: CUDA says '%s', the reference '%s'", dsv3_error_message(), want);
    dsv3_error_clear();
}

static void test_tokens_check_names_the_first_bad_position(void **state) {
    (void)state;
    enum { V = 1000 };
    static const int64_t SIZES[] = {1, 300, PAST_ONE_GRID};
    rng_state = 1;
    for (size_t s = 0; s < sizeof SIZES / sizeof SIZES[0]; s++) {
        const int64_t N = SIZES[s];
        int32_t *tokens = ints(N);
        for (int64_t n = 0; n < N; n++)
            tokens[n] = rng_index(V);
        tokens[N - 1] = V - 1; // the last id of the vocabulary is in it
        cuda_test_ok(dsv3_tokens_check(&cuda_ctx, upload_ints(tokens, N), N, V));
        tokens[N - 1] = V;
        expect_same_refusal(tokens, N, V);
        // Of several bad positions the first is named, whichever thread finds it first: one in
        // a later stride of a low thread, then one in the first stride of a higher thread.
        if (N > (1 << 20) + 5) {
            tokens[(1 << 20) + 5] = -1;
            expect_same_refusal(tokens, N, V);
            tokens[700] = V + 5;
            expect_same_refusal(tokens, N, V);
            expect_error(dsv3_tokens_check(&cuda_ctx, upload_ints(tokens, N), N, V),
                         "tokens[700] = 1005 is outside the vocabulary [0, 1000)");
        }
        next_shape();
    }
}

static void test_tokens_check_rejects_bad_arguments(void **state) {
    (void)state;
    int32_t *tokens = upload_ints((const int32_t[]){1, 2, 3}, 3);
    cuda_test_ok(dsv3_tokens_check(&cuda_ctx, NULL, 0, 10));
    expect_error(dsv3_tokens_check(&cuda_ctx, tokens, -1, 10), "N = -1");
    expect_error(dsv3_tokens_check(&cuda_ctx, tokens, 3, 0), "V = 0");
    expect_error(dsv3_tokens_check(&cuda_ctx, tokens, 3, ((int64_t)1 << 31) + 1), "2^31");
    expect_error(dsv3_tokens_check(&cuda_ctx, NULL, 3, 10), "tokens is NULL");
}

// ---- document_ids ----

static void test_document_ids_match_reference(void **state) {
    (void)state;
    // Sequences of one chunk and of several (256 positions each), and more sequences than
    // the grid's blocks.
    static const int64_t SHAPES[][2] = {
        {1, 1}, {3, 7}, {2, 1000}, {5, 257}, {ROWS_PAST_ONE_GRID, 3}};
    static const int32_t EOS[] = {0, 7, -1}; // a frequent eos, a rare one, none
    enum { VOCAB = 8 };
    rng_state = 2;
    for (size_t s = 0; s < sizeof SHAPES / sizeof SHAPES[0]; s++) {
        const int64_t B = SHAPES[s][0], T = SHAPES[s][1];
        int32_t *tokens = ints(B * T);
        for (int64_t n = 0; n < B * T; n++)
            tokens[n] = rng_index(VOCAB);
        tokens[0] = 0;         // an eos that opens a sequence
        tokens[B * T - 1] = 0; // and one that ends the last
        int32_t *garbage = ints(B * T);
        for (int64_t n = 0; n < B * T; n++)
            garbage[n] = -5;
        const int32_t *device_tokens = upload_ints(tokens, B * T);
        for (size_t e = 0; e < sizeof EOS / sizeof EOS[0]; e++) {
            int32_t *want = ints(B * T);
            cuda_test_ok(dsv3_document_ids(&ref_ctx, want, tokens, B, T, EOS[e]));
            int32_t *doc = upload_ints(garbage, B * T);
            cuda_test_ok(dsv3_document_ids(&cuda_ctx, doc, device_tokens, B, T, EOS[e]));
            char what[96];
            snprintf(what, sizeof what, "document ids (B %" PRId64 " T %" PRId64 " eos %d)", B, T,
                     (int)EOS[e]);
            cuda_test_expect_equal_ints(download_ints(doc, B * T), want, B * T, what);
        }
        next_shape();
    }
}

static void test_document_ids_reject_bad_arguments(void **state) {
    (void)state;
    int32_t *buffer = upload_ints((const int32_t[]){0, 1, 2, 3}, 4);
    cuda_test_ok(dsv3_document_ids(&cuda_ctx, NULL, NULL, 0, 4, 0));
    cuda_test_ok(dsv3_document_ids(&cuda_ctx, NULL, NULL, 2, 0, 0));
    expect_error(dsv3_document_ids(&cuda_ctx, buffer, buffer, -1, 4, 0), "B = -1");
    expect_error(dsv3_document_ids(&cuda_ctx, buffer, buffer, 1, -4, 0), "T = -4");
    expect_error(dsv3_document_ids(&cuda_ctx, NULL, buffer, 1, 4, 0), "must not be NULL");
}

// ---- labels_count ----

static void test_labels_count_matches_reference(void **state) {
    (void)state;
    enum { V = 50, STALE_COUNT = 12345 };
    static const int64_t SIZES[] = {0, 1, 1000, PAST_ONE_GRID};
    rng_state = 3;
    for (size_t s = 0; s < sizeof SIZES / sizeof SIZES[0]; s++) {
        const int64_t N = SIZES[s];
        int32_t *labels = ints(N);
        for (int64_t n = 0; n < N; n++) // about a third ignored
            labels[n] = rng_index(3) == 0 ? DSV3_IGNORE_INDEX : rng_index(V);
        int64_t want = -1, got = -1;
        cuda_test_ok(dsv3_labels_count(&ref_ctx, &want, labels, N));
        const int64_t stale = STALE_COUNT; // overwritten, not added to
        int64_t *count = cuda_test_upload(&stale, sizeof stale);
        cuda_test_ok(dsv3_labels_count(&cuda_ctx, count, N > 0 ? upload_ints(labels, N) : NULL, N));
        cuda_test_download(&got, count, sizeof got);
        if (got != want)
            fail_msg("labels_count (N %" PRId64 "): %" PRId64 ", expected %" PRId64, N, got, want);
        next_shape();
    }
}

static void test_labels_count_rejects_bad_arguments(void **state) {
    (void)state;
    int32_t *labels = upload_ints((const int32_t[]){1, DSV3_IGNORE_INDEX}, 2);
    int64_t *count = cuda_test_device(sizeof(int64_t));
    expect_error(dsv3_labels_count(&cuda_ctx, NULL, labels, 2), "count is NULL");
    expect_error(dsv3_labels_count(&cuda_ctx, count, labels, -1), "N = -1");
    expect_error(dsv3_labels_count(&cuda_ctx, count, NULL, 2), "labels is NULL");
}

// ---- add ----

static void test_add_matches_reference(void **state) {
    (void)state;
    static const int64_t SIZES[] = {1, 1000, PAST_ONE_GRID};
    rng_state = 4;
    for (size_t s = 0; s < sizeof SIZES / sizeof SIZES[0]; s++)
        for (int d = 0; d < DTYPE_COUNT; d++) {
            const int64_t n = SIZES[s];
            const Dsv3TensorDtype dtype = DTYPES[d];
            char shape[32];
            snprintf(shape, sizeof shape, "n %" PRId64, n);
            float *a = floats(n), *b = floats(n), *want = floats(n);
            fill(a, n, 2);
            fill(b, n, 2);
            as_dtype(dtype, a, n);
            as_dtype(dtype, b, n);
            cuda_test_ok(dsv3_add(&ref_ctx, F32, want, a, b, n));
            void *da = upload(dtype, a, n), *db = upload(dtype, b, n);
            void *out = upload(dtype, b, n); // garbage
            cuda_test_ok(dsv3_add(&cuda_ctx, dtype, out, da, db, n));
            expect_close(download(dtype, out, n), want, n, tolerance(dtype), "add", shape, dtype);
            cuda_test_ok(dsv3_add(&cuda_ctx, dtype, da, da, db, n)); // out may alias a
            expect_close(download(dtype, da, n), want, n, tolerance(dtype), "add in place", shape,
                         dtype);
            next_shape();
        }
}

static void test_add_rejects_bad_arguments(void **state) {
    (void)state;
    float *x = cuda_test_device(4 * sizeof(float));
    cuda_test_ok(dsv3_add(&cuda_ctx, F32, NULL, NULL, NULL, 0));
    expect_error(dsv3_add(&cuda_ctx, F32, x, x, x, -2), "n = -2");
    expect_error(dsv3_add(&cuda_ctx, F32, x, NULL, x, 2), "must not be NULL");
    expect_error(dsv3_add(&cuda_ctx, (Dsv3TensorDtype)BAD_DTYPE, x, x, x, 2), "add");
}

// ---- copy_columns ----

static void test_copy_columns_matches_reference(void **state) {
    (void)state;
    // rows, cols, dst_stride, src_stride; the last copies more elements than one grid holds.
    static const int64_t SHAPES[][4] = {
        {1, 1, 1, 1}, {7, 5, 9, 6}, {300, 33, 40, 33}, {5000, 300, 301, 310}};
    enum { DST_FIRST = 3 }; // the block starts inside dst's rows
    rng_state = 5;
    for (size_t s = 0; s < sizeof SHAPES / sizeof SHAPES[0]; s++)
        for (int d = 0; d < DTYPE_COUNT; d++) {
            const int64_t rows = SHAPES[s][0], cols = SHAPES[s][1];
            const int64_t dst_stride = SHAPES[s][2] + DST_FIRST, src_stride = SHAPES[s][3];
            const int64_t dst_count = rows * dst_stride, src_count = rows * src_stride;
            const Dsv3TensorDtype dtype = DTYPES[d];
            char shape[96];
            snprintf(shape, sizeof shape,
                     "rows %" PRId64 " cols %" PRId64 " strides %" PRId64 ", %" PRId64, rows, cols,
                     dst_stride, src_stride);
            float *dst0 = floats(dst_count), *src = floats(src_count);
            fill(dst0, dst_count, 1);
            fill(src, src_count, 1);
            as_dtype(dtype, dst0, dst_count);
            as_dtype(dtype, src, src_count);
            float *want = copy_of(dst0, dst_count);
            cuda_test_ok(dsv3_copy_columns(&ref_ctx, F32, want + DST_FIRST, dst_stride, src,
                                           src_stride, rows, cols));
            void *dst = upload(dtype, dst0, dst_count);
            cuda_test_ok(dsv3_copy_columns(&cuda_ctx, dtype, element(dtype, dst, DST_FIRST),
                                           dst_stride, upload(dtype, src, src_count), src_stride,
                                           rows, cols));
            expect_close(download(dtype, dst, dst_count), want, dst_count, EXACT, "copy_columns",
                         shape, dtype);
            next_shape();
        }
}

static void test_copy_columns_rejects_bad_arguments(void **state) {
    (void)state;
    float *x = cuda_test_device(16 * sizeof(float));
    cuda_test_ok(dsv3_copy_columns(&cuda_ctx, F32, NULL, 4, NULL, 4, 0, 3));
    expect_error(dsv3_copy_columns(&cuda_ctx, F32, x, 2, x, 4, 2, 3), "must be >= cols = 3");
    expect_error(dsv3_copy_columns(&cuda_ctx, F32, x, 4, NULL, 4, 2, 3), "must not be NULL");
    expect_error(dsv3_copy_columns(&cuda_ctx, F32, x, 4, x, 4, -1, 3), "rows = -1");
    expect_error(dsv3_copy_columns(&cuda_ctx, (Dsv3TensorDtype)BAD_DTYPE, x, 4, x, 4, 2, 3),
                 "copy_columns");
}

// ---- embedding ----

static void test_embedding_matches_reference(void **state) {
    (void)state;
    // N, D, V (rows of the slice), vocab_start. Tokens come from [0, vocab_start + 3V/2 + 1),
    // so that some fall outside the slice. Then: V below the backward's block count with many
    // repeats of each row, and V above it (blocks owning several rows), N past a chunk.
    static const int64_t SHAPES[][4] = {{1, 1, 1, 0},       {7, 33, 5, 0},
                                        {300, 100, 17, 10}, {517, 130, 1000, 0},
                                        {2000, 40, 3, 0},   {3000, 64, 1500, 500}};
    rng_state = 6;
    for (size_t s = 0; s < sizeof SHAPES / sizeof SHAPES[0]; s++)
        for (int d = 0; d < DTYPE_COUNT; d++) {
            const int64_t N = SHAPES[s][0], D = SHAPES[s][1], V = SHAPES[s][2];
            const int64_t vocab_start = SHAPES[s][3];
            const Dsv3TensorDtype dtype = DTYPES[d];
            char shape[96];
            snprintf(shape, sizeof shape, "N %" PRId64 " D %" PRId64 " V %" PRId64 " from %" PRId64,
                     N, D, V, vocab_start);
            int32_t *tokens = ints(N);
            for (int64_t n = 0; n < N; n++)
                tokens[n] = rng_index(vocab_start + V + V / 2 + 1);
            tokens[N - 1] = tokens[0];                   // a repeated token: its rows are summed
            if (N > 2) tokens[1] = (int32_t)vocab_start; // the slice's first row
            float *weight = floats(V * D), *dout = floats(N * D), *dweight0 = floats(V * D);
            float *garbage = floats(N * D);
            fill(weight, V * D, 1);
            fill(dout, N * D, 1);
            fill(dweight0, V * D, 1); // gradients are added to what is there
            fill(garbage, N * D, 1);
            as_dtype(dtype, weight, V * D);
            as_dtype(dtype, dout, N * D);
            float *out_ref = floats(N * D), *dweight_ref = copy_of(dweight0, V * D);
            cuda_test_ok(dsv3_embedding_forward(&ref_ctx, F32, out_ref, tokens, weight, N, D, V,
                                                vocab_start));
            cuda_test_ok(dsv3_embedding_backward(&ref_ctx, F32, dweight_ref, dout, tokens, N, D, V,
                                                 vocab_start));
            const int32_t *device_tokens = upload_ints(tokens, N);
            void *out = upload(dtype, garbage, N * D); // every row written, zero rows too
            float *dweight = cuda_test_upload(dweight0, (size_t)(V * D) * sizeof(float));
            cuda_test_ok(dsv3_embedding_forward(&cuda_ctx, dtype, out, device_tokens,
                                                upload(dtype, weight, V * D), N, D, V,
                                                vocab_start));
            cuda_test_ok(dsv3_embedding_backward(&cuda_ctx, dtype, dweight,
                                                 upload(dtype, dout, N * D), device_tokens, N, D, V,
                                                 vocab_start));
            expect_close(download(dtype, out, N * D), out_ref, N * D, EXACT, "embedding out", shape,
                         dtype);
            expect_close(cuda_test_download_floats(dweight, V * D), dweight_ref, V * D, EXACT,
                         "embedding dweight", shape, dtype);
            next_shape();
        }
}

static void test_embedding_faults_on_negative_tokens(void **state) {
    (void)state;
    enum { N = 5, D = 4, V = 17, BAD = 3 };
    const int32_t tokens[N] = {0, 1, 2, -1, 4};
    float *weight = floats(V * D), *dout = floats(N * D);
    rng_state = 7;
    fill(weight, V * D, 1);
    fill(dout, N * D, 1);
    const int32_t *device_tokens = upload_ints(tokens, N);
    float *out = cuda_test_device(N * D * sizeof(float));
    float *dweight = cuda_test_device(V * D * sizeof(float));
    // The op itself succeeds (it cannot see the id without waiting); the fault comes with the
    // next synchronisation, naming the op. The bad token's row is zero, the others are right.
    cuda_test_ok(dsv3_embedding_forward(&cuda_ctx, F32, out, device_tokens,
                                        cuda_test_upload(weight, V * D * sizeof(float)), N, D, V,
                                        0));
    expect_fault(DSV3_OP_EMBEDDING_FORWARD);
    const float *got = cuda_test_download_floats(out, N * D);
    for (int64_t n = 0; n < N; n++)
        for (int64_t j = 0; j < D; j++)
            assert_true(got[n * D + j] == (n == BAD ? 0.0f : weight[tokens[n] * D + j]));
    cuda_test_ok(dsv3_embedding_backward(&cuda_ctx, F32, dweight,
                                         cuda_test_upload(dout, N * D * sizeof(float)),
                                         device_tokens, N, D, V, 0));
    expect_fault(DSV3_OP_EMBEDDING_BACKWARD);
    const float *grad = cuda_test_download_floats(dweight, V * D);
    for (int64_t j = 0; j < D; j++) // the other tokens still added their rows
        assert_true(grad[4 * D + j] == dout[4 * D + j]);
}

static void test_embedding_rejects_bad_arguments(void **state) {
    (void)state;
    enum { N = 5, D = 4, V = 17 };
    const int32_t *tokens = upload_ints((const int32_t[]){0, 1, 2, 3, 4}, N);
    float *weight = cuda_test_device(V * D * sizeof(float));
    float *out = cuda_test_device(N * D * sizeof(float));
    expect_error(dsv3_embedding_forward(&cuda_ctx, F32, out, tokens, weight, N, 0, V, 0), "D = 0");
    expect_error(dsv3_embedding_forward(&cuda_ctx, F32, out, tokens, weight, N, D, 0, 0), "V = 0");
    expect_error(dsv3_embedding_forward(&cuda_ctx, F32, out, tokens, weight, N, D, V, -1),
                 "vocab_start = -1");
    // The slice must hold int32 ids: it may end at 2^31, not past it.
    const int64_t last_start = ((int64_t)1 << 31) - V;
    cuda_test_ok(dsv3_embedding_forward(&cuda_ctx, F32, out, tokens, weight, N, D, V, last_start));
    expect_error(
        dsv3_embedding_forward(&cuda_ctx, F32, out, tokens, weight, N, D, V, last_start + 1),
        "vocab_start + V <= 2^31");
    expect_error(dsv3_embedding_forward(&cuda_ctx, F32, out, tokens, weight, -1, D, V, 0),
                 "N = -1");
    expect_error(dsv3_embedding_forward(&cuda_ctx, F32, NULL, tokens, weight, N, D, V, 0),
                 "out is NULL");
    expect_error(dsv3_embedding_forward(&cuda_ctx, F32, out, tokens, NULL, N, D, V, 0),
                 "weight is NULL");
    expect_error(dsv3_embedding_backward(&cuda_ctx, F32, NULL, out, tokens, N, D, V, 0),
                 "dweight is NULL");
    expect_error(dsv3_embedding_backward(&cuda_ctx, F32, weight, out, NULL, N, D, V, 0),
                 "tokens is NULL");
    expect_error(dsv3_embedding_forward(&cuda_ctx, (Dsv3TensorDtype)BAD_DTYPE, out, tokens, weight,
                                        N, D, V, 0),
                 "embedding_forward");
    cuda_test_ok(dsv3_embedding_backward(&cuda_ctx, F32, NULL, NULL, NULL, 0, D, V, 0));
}

// ---- RMSNorm ----

static void test_rmsnorm_matches_reference(void **state) {
    (void)state;
    // Not D = 1: there dx is 0 up to eps (y = ±w whatever x), and what float32 leaves of that
    // cancellation is noise on both sides. Rows past one grid, and rows wider than a block.
    static const int64_t SHAPES[][2] = {
        {1, 3}, {5, 7}, {37, 129}, {3, 1000}, {300, 300}, {ROWS_PAST_ONE_GRID, 40}, {2, 5000}};
    const float eps = 1e-6f;
    rng_state = 8;
    for (size_t s = 0; s < sizeof SHAPES / sizeof SHAPES[0]; s++)
        for (int d = 0; d < DTYPE_COUNT; d++) {
            const int64_t N = SHAPES[s][0], D = SHAPES[s][1];
            const Dsv3TensorDtype dtype = DTYPES[d];
            char shape[64];
            snprintf(shape, sizeof shape, "N %" PRId64 " D %" PRId64, N, D);
            float *x = floats(N * D), *weight = floats(D), *dout = floats(N * D);
            float *dweight0 = floats(D);
            fill(x, N * D, 3);
            for (int64_t j = 0; j < D; j++)
                x[j] *= 100; // one row of large activations
            fill(weight, D, 1);
            fill(dout, N * D, 1);
            fill(dweight0, D, 1); // the gradient is added to what is there
            as_dtype(dtype, x, N * D);
            as_dtype(dtype, weight, D);
            as_dtype(dtype, dout, N * D);
            float *out_ref = floats(N * D), *rstd_ref = floats(N), *dx_ref = floats(N * D);
            float *dweight_ref = copy_of(dweight0, D);
            cuda_test_ok(
                dsv3_rmsnorm_forward(&ref_ctx, F32, out_ref, rstd_ref, x, weight, N, D, eps));
            cuda_test_ok(dsv3_rmsnorm_backward(REF_SIZED(RMSNORM_BACKWARD, .N = N, .D = D), F32,
                                               dx_ref, dweight_ref, dout, x, weight, rstd_ref, N,
                                               D));
            void *x_dev = upload(dtype, x, N * D), *weight_dev = upload(dtype, weight, D);
            void *out = upload(dtype, dout, N * D); // garbage
            void *dx = upload(dtype, dout, N * D);  // garbage
            float *rstd = cuda_test_device((size_t)N * sizeof(float));
            float *dweight = cuda_test_upload(dweight0, (size_t)D * sizeof(float));
            cuda_test_ok(
                dsv3_rmsnorm_forward(&cuda_ctx, dtype, out, rstd, x_dev, weight_dev, N, D, eps));
            cuda_test_ok(dsv3_rmsnorm_backward(CUDA_SIZED(RMSNORM_BACKWARD, .N = N, .D = D), dtype,
                                               dx, dweight, upload(dtype, dout, N * D), x_dev,
                                               weight_dev, rstd, N, D));
            expect_close(download(dtype, out, N * D), out_ref, N * D, tolerance(dtype),
                         "rmsnorm out", shape, dtype);
            expect_close(cuda_test_download_floats(rstd, N), rstd_ref, N, TOLERANCE_F32,
                         "rmsnorm rstd", shape, dtype);
            expect_close(download(dtype, dx, N * D), dx_ref, N * D, tolerance(dtype), "rmsnorm dx",
                         shape, dtype);
            expect_close(cuda_test_download_floats(dweight, D), dweight_ref, D, TOLERANCE_F32,
                         "rmsnorm dweight", shape, dtype);
            next_shape();
        }
}

static void test_rmsnorm_rejects_bad_arguments(void **state) {
    (void)state;
    enum { N = 2, D = 4 };
    float *x = cuda_test_device(N * D * sizeof(float)), *w = cuda_test_device(D * sizeof(float));
    float *out = cuda_test_device(N * D * sizeof(float)),
          *rstd = cuda_test_device(N * sizeof(float));
    expect_error(dsv3_rmsnorm_forward(&cuda_ctx, F32, out, rstd, x, w, N, 0, 1e-6f), "D = 0");
    expect_error(dsv3_rmsnorm_forward(&cuda_ctx, F32, out, rstd, x, w, -1, D, 1e-6f), "N = -1");
    expect_error(dsv3_rmsnorm_forward(&cuda_ctx, F32, out, rstd, x, w, N, D, -1.0f), "eps = -1");
    expect_error(dsv3_rmsnorm_forward(&cuda_ctx, F32, out, NULL, x, w, N, D, 1e-6f),
                 "must not be NULL");
    expect_error(dsv3_rmsnorm_backward(&cuda_ctx, F32, out, NULL, x, x, w, rstd, N, D),
                 "must not be NULL");
    expect_error(dsv3_rmsnorm_backward(&cuda_ctx, F32, out, w, x, x, w, rstd, N, -3), "D = -3");
    expect_error(
        dsv3_rmsnorm_forward(&cuda_ctx, (Dsv3TensorDtype)BAD_DTYPE, out, rstd, x, w, N, D, 1e-6f),
        "rmsnorm_forward");
    cuda_test_ok(dsv3_rmsnorm_forward(&cuda_ctx, F32, NULL, NULL, NULL, NULL, 0, D, 1e-6f));
}

// ---- SwiGLU ----

static void test_swiglu_matches_reference(void **state) {
    (void)state;
    static const int64_t SHAPES[][2] = {{1, 1}, {7, 33}, {300, 1000}, {1, PAST_ONE_GRID}};
    rng_state = 9;
    for (size_t s = 0; s < sizeof SHAPES / sizeof SHAPES[0]; s++)
        for (int d = 0; d < DTYPE_COUNT; d++) {
            const int64_t N = SHAPES[s][0], F = SHAPES[s][1], count = N * F;
            const Dsv3TensorDtype dtype = DTYPES[d];
            char shape[64];
            snprintf(shape, sizeof shape, "N %" PRId64 " F %" PRId64, N, F);
            float *a = floats(count), *b = floats(count), *dh = floats(count);
            fill(a, count, 6);
            fill(b, count, 2);
            fill(dh, count, 1);
            if (count > 2) {
                a[1] = -100.0f; // e^-a overflows: silu → 0
                a[2] = 100.0f;  // σ → 1
            }
            as_dtype(dtype, a, count);
            as_dtype(dtype, b, count);
            as_dtype(dtype, dh, count);
            float *h_ref = floats(count), *da_ref = floats(count), *db_ref = floats(count);
            cuda_test_ok(dsv3_swiglu_forward(&ref_ctx, F32, h_ref, a, b, N, F));
            cuda_test_ok(dsv3_swiglu_backward(&ref_ctx, F32, da_ref, db_ref, dh, a, b, N, F));
            void *a_dev = upload(dtype, a, count), *b_dev = upload(dtype, b, count);
            void *dh_dev = upload(dtype, dh, count);
            void *h = upload(dtype, dh, count); // garbage
            void *da = upload(dtype, dh, count), *db = upload(dtype, dh, count);
            cuda_test_ok(dsv3_swiglu_forward(&cuda_ctx, dtype, h, a_dev, b_dev, N, F));
            cuda_test_ok(
                dsv3_swiglu_backward(&cuda_ctx, dtype, da, db, dh_dev, a_dev, b_dev, N, F));
            expect_close(download(dtype, h, count), h_ref, count, tolerance(dtype), "swiglu h",
                         shape, dtype);
            expect_close(download(dtype, da, count), da_ref, count, tolerance(dtype), "swiglu da",
                         shape, dtype);
            expect_close(download(dtype, db, count), db_ref, count, tolerance(dtype), "swiglu db",
                         shape, dtype);
            // In place: da over a, db over b.
            cuda_test_ok(
                dsv3_swiglu_backward(&cuda_ctx, dtype, a_dev, b_dev, dh_dev, a_dev, b_dev, N, F));
            expect_close(download(dtype, a_dev, count), da_ref, count, tolerance(dtype),
                         "swiglu da in place", shape, dtype);
            expect_close(download(dtype, b_dev, count), db_ref, count, tolerance(dtype),
                         "swiglu db in place", shape, dtype);
            next_shape();
        }
}

static void test_swiglu_rejects_bad_arguments(void **state) {
    (void)state;
    float *x = cuda_test_device(8 * sizeof(float));
    expect_error(dsv3_swiglu_forward(&cuda_ctx, F32, x, x, x, 2, 0), "F = 0");
    expect_error(dsv3_swiglu_forward(&cuda_ctx, F32, x, x, x, -1, 2), "N = -1");
    expect_error(dsv3_swiglu_forward(&cuda_ctx, F32, NULL, x, x, 2, 2), "must not be NULL");
    expect_error(dsv3_swiglu_backward(&cuda_ctx, F32, x, NULL, x, x, x, 2, 2), "must not be NULL");
    expect_error(dsv3_swiglu_backward(&cuda_ctx, (Dsv3TensorDtype)BAD_DTYPE, x, x, x, x, x, 2, 2),
                 "swiglu_backward");
    cuda_test_ok(dsv3_swiglu_backward(&cuda_ctx, F32, NULL, NULL, NULL, NULL, NULL, 0, 2));
}

// ---- rotary embedding ----

static void test_rope_tables_match_reference(void **state) {
    (void)state;
    // T, R, original_seq_len: one position and pair; no YaRN; YaRN with its ramp inside the
    // pairs, clamped to the dims, right past the original length; a long table (large angles)
    // with more elements than one grid.
    static const int64_t SHAPES[][3] = {{1, 2, 4096}, {7, 64, 4096}, {70, 64, 16},
                                        {129, 8, 32}, {33, 64, 32},  {33000, 64, 4096}};
    for (size_t s = 0; s < sizeof SHAPES / sizeof SHAPES[0]; s++) {
        const int64_t T = SHAPES[s][0], R = SHAPES[s][1], original = SHAPES[s][2];
        const int64_t count = T * R / 2;
        char shape[96];
        snprintf(shape, sizeof shape, "T %" PRId64 " R %" PRId64 " original %" PRId64, T, R,
                 original);
        float *cos_ref = floats(count), *sin_ref = floats(count);
        cuda_test_ok(dsv3_rope_tables(&ref_ctx, cos_ref, sin_ref, T, R, ROPE_THETA, ROPE_FACTOR,
                                      BETA_FAST, BETA_SLOW, original));
        float *cos_table = cuda_test_device((size_t)count * sizeof(float));
        float *sin_table = cuda_test_device((size_t)count * sizeof(float));
        cuda_test_ok(dsv3_rope_tables(&cuda_ctx, cos_table, sin_table, T, R, ROPE_THETA,
                                      ROPE_FACTOR, BETA_FAST, BETA_SLOW, original));
        const float *c = cuda_test_download_floats(cos_table, count);
        const float *sn = cuda_test_download_floats(sin_table, count);
        expect_close(c, cos_ref, count, TOLERANCE_TABLES, "rope cos", shape, F32);
        expect_close(sn, sin_ref, count, TOLERANCE_TABLES, "rope sin", shape, F32);
        for (int64_t i = 0; i < R / 2; i++) // position 0 does not rotate
            assert_true(c[i] == 1.0f && sn[i] == 0.0f);
        next_shape();
    }
}

// Fails unless the channels of x (B·T rows of row_stride) outside the rotated vectors (H of R
// channels from `offset`, head_stride apart) are those of `before`, bit for bit.
static void expect_untouched(const float *x, const float *before, int64_t rows, int64_t row_stride,
                             int64_t offset, int64_t H, int64_t head_stride, int64_t R) {
    for (int64_t row = 0; row < rows; row++)
        for (int64_t j = 0; j < row_stride; j++) {
            const int64_t rel = j - offset;
            int inside = 0;
            for (int64_t h = 0; h < H; h++)
                inside |= rel >= h * head_stride && rel < h * head_stride + R;
            if (!inside && x[row * row_stride + j] != before[row * row_stride + j])
                fail_msg("rope changed channel %" PRId64 " of row %" PRId64
                         ", outside the rotated vectors",
                         j, row);
        }
}

// A rotation of B·T rows of row_stride channels, H vectors of R from `offset`, head_stride apart.
typedef struct {
    int64_t B, T, H, row_stride, head_stride, offset, R;
} RopeCase;

static void check_rope(const RopeCase *rc, Dsv3TensorDtype dtype) {
    const int64_t n = rc->B * rc->T * rc->row_stride, pairs = rc->R / 2;
    char shape[128];
    snprintf(shape, sizeof shape,
             "B %" PRId64 " T %" PRId64 " H %" PRId64 " R %" PRId64 " strides %" PRId64
             ", %" PRId64,
             rc->B, rc->T, rc->H, rc->R, rc->row_stride, rc->head_stride);
    // The reference's tables for both sides: this compares the rotations alone.
    float *c = floats(rc->T * pairs), *s = floats(rc->T * pairs);
    cuda_test_ok(dsv3_rope_tables(&ref_ctx, c, s, rc->T, rc->R, ROPE_THETA, ROPE_FACTOR, BETA_FAST,
                                  BETA_SLOW, 4));
    const float *dc = cuda_test_upload(c, (size_t)(rc->T * pairs) * sizeof(float));
    const float *ds = cuda_test_upload(s, (size_t)(rc->T * pairs) * sizeof(float));
    float *x = floats(n), *g = floats(n);
    fill(x, n, 2);
    fill(g, n, 1);
    as_dtype(dtype, x, n);
    as_dtype(dtype, g, n);
    float *x_ref = copy_of(x, n), *g_ref = copy_of(g, n);
    cuda_test_ok(dsv3_rope_forward(&ref_ctx, F32, x_ref + rc->offset, c, s, rc->B, rc->T, rc->H,
                                   rc->R, rc->row_stride, rc->head_stride));
    cuda_test_ok(dsv3_rope_backward(&ref_ctx, F32, g_ref + rc->offset, c, s, rc->B, rc->T, rc->H,
                                    rc->R, rc->row_stride, rc->head_stride));
    void *dx = upload(dtype, x, n), *dg = upload(dtype, g, n);
    cuda_test_ok(dsv3_rope_forward(&cuda_ctx, dtype, element(dtype, dx, rc->offset), dc, ds, rc->B,
                                   rc->T, rc->H, rc->R, rc->row_stride, rc->head_stride));
    cuda_test_ok(dsv3_rope_backward(&cuda_ctx, dtype, element(dtype, dg, rc->offset), dc, ds, rc->B,
                                    rc->T, rc->H, rc->R, rc->row_stride, rc->head_stride));
    const float *x_got = download(dtype, dx, n), *g_got = download(dtype, dg, n);
    expect_close(x_got, x_ref, n, tolerance(dtype), "rope forward", shape, dtype);
    expect_close(g_got, g_ref, n, tolerance(dtype), "rope backward", shape, dtype);
    expect_untouched(x_got, x, rc->B * rc->T, rc->row_stride, rc->offset, rc->H, rc->head_stride,
                     rc->R);
    expect_untouched(g_got, g, rc->B * rc->T, rc->row_stride, rc->offset, rc->H, rc->head_stride,
                     rc->R);
    if (dtype == DSV3_TENSOR_F32) { // a rotation is orthogonal: backward undoes forward
        cuda_test_ok(dsv3_rope_backward(&cuda_ctx, dtype, element(dtype, dx, rc->offset), dc, ds,
                                        rc->B, rc->T, rc->H, rc->R, rc->row_stride,
                                        rc->head_stride));
        expect_close(download(dtype, dx, n), x, n, TOLERANCE_F32, "rope backward after forward",
                     shape, dtype);
    }
}

static void test_rope_matches_reference(void **state) {
    (void)state;
    static const RopeCase CASES[] = {
        // Query heads (B, T, H, Dqk) with the rotary part in the last R channels of each head.
        {2, 7, 3, 3 * 24, 24, 24 - 8, 8},
        {1, 1, 1, 24, 24, 24 - 8, 8},
        {1, 70, 16, 16 * 192, 192, 192 - 64, 64},
        {3, 5, 2, 2 * 2, 2, 0, 2}, // every channel rotated, R = 2
        // The shared key k_pe: the last R channels of (B, T, L + R), one head.
        {2, 9, 1, 12 + 8, 0, 12, 8},
        {1, 129, 1, 512 + 64, 64, 512, 64},
        // More pairs than one grid holds.
        {3, 1024, 16, 16 * 64, 64, 0, 64},
    };
    rng_state = 10;
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++)
        for (int d = 0; d < DTYPE_COUNT; d++) {
            check_rope(&CASES[i], DTYPES[d]);
            next_shape();
        }
}

static void test_rope_rejects_bad_arguments(void **state) {
    (void)state;
    float *c = cuda_test_device(8 * sizeof(float)), *s = cuda_test_device(8 * sizeof(float));
    float *x = cuda_test_device(64 * sizeof(float));
    const Dsv3KernelContext *k = &cuda_ctx;
    expect_error(dsv3_rope_tables(k, c, s, 2, 3, 1e4, 40, 32, 1, 4),
                 "R (rotary dims) must be even");
    expect_error(dsv3_rope_tables(k, c, s, 0, 4, 1e4, 40, 32, 1, 4), "T (positions)");
    expect_error(dsv3_rope_tables(k, c, s, 2, 4, 1.0, 40, 32, 1, 4), "theta");
    expect_error(dsv3_rope_tables(k, c, s, 2, 4, 1e4, 0, 32, 1, 4), "factor");
    expect_error(dsv3_rope_tables(k, c, s, 2, 4, 1e4, 40, 0, 1, 4), "beta_fast");
    expect_error(dsv3_rope_tables(k, c, s, 2, 4, 1e4, 40, 32, 1, 0), "original_seq_len");
    expect_error(dsv3_rope_tables(k, NULL, s, 2, 4, 1e4, 40, 32, 1, 4), "cos and sin");
    expect_error(dsv3_rope_forward(k, F32, NULL, c, s, 1, 2, 1, 4, 4, 4), "x must not be NULL");
    expect_error(dsv3_rope_forward(k, F32, x, c, NULL, 1, 2, 1, 4, 4, 4), "cos and sin");
    expect_error(dsv3_rope_forward(k, F32, x, c, s, 0, 2, 1, 4, 4, 4), "B, T, H");
    expect_error(dsv3_rope_forward(k, F32, x, c, s, 1, 2, 1, 5, 8, 8), "R (rotary dims)");
    expect_error(dsv3_rope_forward(k, F32, x, c, s, 1, 2, 2, 4, 8, 2), "head_stride");
    expect_error(dsv3_rope_backward(k, F32, x, c, s, 1, 2, 2, 4, 6, 4), "row_stride");
    expect_error(dsv3_rope_backward(k, (Dsv3TensorDtype)BAD_DTYPE, x, c, s, 1, 2, 1, 4, 4, 4),
                 "rope_backward");
}

// ---- MLA key/value assembly ----

// N tokens, H heads, nope, R, Dv; the rotary key is the last R channels of rows of kpe_extra + R.
typedef struct {
    int64_t N, H, nope, R, Dv, kpe_extra;
} MlaCase;

static void check_mla(const MlaCase *mc, Dsv3TensorDtype dtype) {
    const int64_t N = mc->N, H = mc->H, nope = mc->nope, R = mc->R, Dv = mc->Dv;
    const int64_t stride = mc->kpe_extra + R, offset = mc->kpe_extra;
    const int64_t kvb_count = N * H * (nope + Dv), k_count = N * H * (nope + R);
    const int64_t v_count = N * H * Dv, kpe_count = N * stride;
    char shape[128];
    snprintf(shape, sizeof shape,
             "N %" PRId64 " H %" PRId64 " nope %" PRId64 " R %" PRId64 " Dv %" PRId64
             " stride %" PRId64,
             N, H, nope, R, Dv, stride);
    float *kvb = floats(kvb_count), *kpe = floats(kpe_count), *dk = floats(k_count);
    float *dv = floats(v_count), *dkpe0 = floats(kpe_count);
    fill(kvb, kvb_count, 1);
    fill(kpe, kpe_count, 1);
    fill(dk, k_count, 1);
    fill(dv, v_count, 1);
    fill(dkpe0, kpe_count, 1); // channels outside the rotary key must stay
    as_dtype(dtype, kvb, kvb_count);
    as_dtype(dtype, kpe, kpe_count);
    as_dtype(dtype, dk, k_count);
    as_dtype(dtype, dv, v_count);
    as_dtype(dtype, dkpe0, kpe_count);
    float *k_ref = floats(k_count), *v_ref = floats(v_count), *dkvb_ref = floats(kvb_count);
    float *dkpe_ref = copy_of(dkpe0, kpe_count);
    cuda_test_ok(dsv3_mla_kv_forward(&ref_ctx, F32, k_ref, v_ref, kvb, kpe + offset, stride, N, H,
                                     nope, R, Dv));
    cuda_test_ok(dsv3_mla_kv_backward(&ref_ctx, F32, dkvb_ref, dkpe_ref + offset, stride, dk, dv, N,
                                      H, nope, R, Dv));
    void *k = upload(dtype, dk, k_count), *v = upload(dtype, dv, v_count); // garbage
    void *dkvb = upload(dtype, kvb, kvb_count);                            // garbage
    void *dkpe = upload(dtype, dkpe0, kpe_count);
    cuda_test_ok(dsv3_mla_kv_forward(&cuda_ctx, dtype, k, v, upload(dtype, kvb, kvb_count),
                                     element(dtype, upload(dtype, kpe, kpe_count), offset), stride,
                                     N, H, nope, R, Dv));
    cuda_test_ok(dsv3_mla_kv_backward(&cuda_ctx, dtype, dkvb, element(dtype, dkpe, offset), stride,
                                      upload(dtype, dk, k_count), upload(dtype, dv, v_count), N, H,
                                      nope, R, Dv));
    expect_close(download(dtype, k, k_count), k_ref, k_count, EXACT, "mla k", shape, dtype);
    expect_close(download(dtype, v, v_count), v_ref, v_count, EXACT, "mla v", shape, dtype);
    expect_close(download(dtype, dkvb, kvb_count), dkvb_ref, kvb_count, EXACT, "mla dkvb", shape,
                 dtype);
    const float *dkpe_got = download(dtype, dkpe, kpe_count);
    expect_close(dkpe_got, dkpe_ref, kpe_count, tolerance(dtype), "mla dkpe", shape, dtype);
    for (int64_t n = 0; n < N; n++) // the channels before the rotary key are untouched
        for (int64_t j = 0; j < offset; j++)
            assert_true(dkpe_got[n * stride + j] == dkpe0[n * stride + j]);
}

static void test_mla_kv_matches_reference(void **state) {
    (void)state;
    static const MlaCase CASES[] = {
        {1, 1, 2, 2, 2, 0},           {7, 3, 16, 8, 12, 5},
        {40, 2, 0, 4, 0, 0},          // no nope, no value
        {3, 4, 5, 0, 3, 0},           // no rotary key
        {300, 16, 128, 64, 128, 512}, // DeepSeek's heads
        {2000, 4, 128, 64, 128, 0},   // more key elements than one grid holds
    };
    rng_state = 11;
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++)
        for (int d = 0; d < DTYPE_COUNT; d++) {
            check_mla(&CASES[i], DTYPES[d]);
            next_shape();
        }
}

static void test_mla_kv_rejects_bad_arguments(void **state) {
    (void)state;
    float *x = cuda_test_device(64 * sizeof(float));
    expect_error(dsv3_mla_kv_forward(&cuda_ctx, F32, x, x, x, x, 4, 1, 0, 2, 4, 2), "H = 0");
    expect_error(dsv3_mla_kv_forward(&cuda_ctx, F32, x, x, x, x, 4, -1, 1, 2, 4, 2), "N = -1");
    expect_error(dsv3_mla_kv_forward(&cuda_ctx, F32, x, x, x, x, 4, 1, 1, -2, 4, 2),
                 "expected all >= 0");
    expect_error(dsv3_mla_kv_forward(&cuda_ctx, F32, x, x, x, x, 3, 1, 1, 2, 4, 2),
                 "stride 3 must be >= R = 4");
    expect_error(dsv3_mla_kv_forward(&cuda_ctx, F32, x, NULL, x, x, 4, 1, 1, 2, 4, 2),
                 "mla_kv_forward: no tensor may be NULL");
    expect_error(dsv3_mla_kv_backward(&cuda_ctx, F32, x, NULL, 4, x, x, 1, 1, 2, 4, 2),
                 "mla_kv_backward: no tensor may be NULL");
    expect_error(
        dsv3_mla_kv_backward(&cuda_ctx, (Dsv3TensorDtype)BAD_DTYPE, x, x, 4, x, x, 1, 1, 2, 4, 2),
        "mla_kv_backward");
    cuda_test_ok(dsv3_mla_kv_forward(&cuda_ctx, F32, NULL, NULL, NULL, NULL, 4, 0, 1, 2, 4, 2));
}

static const struct CMUnitTest cases[] = {
    CUDA_TEST(test_tokens_check_names_the_first_bad_position),
    CUDA_TEST(test_tokens_check_rejects_bad_arguments),
    CUDA_TEST(test_document_ids_match_reference),
    CUDA_TEST(test_document_ids_reject_bad_arguments),
    CUDA_TEST(test_labels_count_matches_reference),
    CUDA_TEST(test_labels_count_rejects_bad_arguments),
    CUDA_TEST(test_add_matches_reference),
    CUDA_TEST(test_add_rejects_bad_arguments),
    CUDA_TEST(test_copy_columns_matches_reference),
    CUDA_TEST(test_copy_columns_rejects_bad_arguments),
    CUDA_TEST(test_embedding_matches_reference),
    CUDA_TEST(test_embedding_faults_on_negative_tokens),
    CUDA_TEST(test_embedding_rejects_bad_arguments),
    CUDA_TEST(test_rmsnorm_matches_reference),
    CUDA_TEST(test_rmsnorm_rejects_bad_arguments),
    CUDA_TEST(test_swiglu_matches_reference),
    CUDA_TEST(test_swiglu_rejects_bad_arguments),
    CUDA_TEST(test_rope_tables_match_reference),
    CUDA_TEST(test_rope_matches_reference),
    CUDA_TEST(test_rope_rejects_bad_arguments),
    CUDA_TEST(test_mla_kv_matches_reference),
    CUDA_TEST(test_mla_kv_rejects_bad_arguments),
};

CUDA_TEST_MAIN(cases)
