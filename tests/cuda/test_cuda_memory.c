// The CUDA backend's context and memory ops: allocation (counted, freed, refused when the
// device cannot hold it), copies in every direction, zeroing, conversion between fp32 and bf16
// (bit-exact against round-to-nearest-even on the host), the workspace query, bf16 GEMMs
// accepted by set_matmul, and the argument errors of each.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "kernels/cuda/cuda_device.h"
#include "tests/cuda/cuda_test.h"

static void expect_usage_error(Dsv3Err got, const char *fragment) {
    assert_int_equal(got, DSV3_ERR_USAGE);
    if (!strstr(dsv3_error_message(), fragment))
        fail_msg("error message '%s' does not mention '%s'", dsv3_error_message(), fragment);
    dsv3_error_clear();
}

static void test_context_describes_itself(void **state) {
    (void)state;
    assert_int_equal(cuda_ctx.backend, DSV3_BACKEND_CUDA);
    assert_int_equal(cuda_ctx.device, 0);
    assert_non_null(cuda_ctx.stream);
    assert_non_null(cuda_ctx.blas);
    assert_string_equal(dsv3_backend_name(cuda_ctx.backend), "cuda");
    assert_true(dsv3_backend_built(DSV3_BACKEND_CUDA));
}

static void test_alloc_is_counted_and_freed(void **state) {
    (void)state;
    enum { BYTES = 3 << 20 };
    const size_t before = dsv3_cuda_allocated_bytes();
    void *p = NULL;
    cuda_test_ok(dsv3_memory_alloc(&cuda_ctx, &p, BYTES, "counted buffer"));
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 64, 0);
    assert_int_equal(dsv3_cuda_allocated_bytes(), before + BYTES);
    assert_true(dsv3_cuda_allocated_peak_bytes() >= before + BYTES);
    cuda_test_ok(dsv3_memory_free(&cuda_ctx, p));
    assert_int_equal(dsv3_cuda_allocated_bytes(), before);
    cuda_test_ok(dsv3_memory_free(&cuda_ctx, NULL));
    // Many live allocations grow the table; all are found again when freed.
    enum { MANY = 3000 };
    static void *many[MANY];
    for (int i = 0; i < MANY; i++)
        cuda_test_ok(dsv3_memory_alloc(&cuda_ctx, &many[i], (size_t)(i % 7 + 1) * 512, "many"));
    for (int i = MANY - 1; i >= 0; i--)
        cuda_test_ok(dsv3_memory_free(&cuda_ctx, many[i]));
    assert_int_equal(dsv3_cuda_allocated_bytes(), before);
}

static void test_alloc_errors(void **state) {
    (void)state;
    int host = 0;
    expect_usage_error(dsv3_memory_free(&cuda_ctx, &host), "not device memory");
    void *p = NULL;
    // More than any GPU holds: refused with the name of the buffer and the device's figures.
    const Dsv3Err err = dsv3_memory_alloc(&cuda_ctx, &p, (size_t)1 << 50, "the huge buffer");
    assert_int_equal(err, DSV3_ERR_BACKEND);
    assert_non_null(strstr(dsv3_error_message(), "the huge buffer"));
    assert_null(p);
    dsv3_error_clear();
    expect_usage_error(dsv3_memory_alloc(&cuda_ctx, NULL, 16, "x"), "out is NULL");
}

static void test_copies_and_zero(void **state) {
    (void)state;
    enum { COUNT = 100003 };
    float *host = test_floats(COUNT);
    uint64_t rng = 7;
    for (int64_t i = 0; i < COUNT; i++)
        host[i] = kernels_test_uniform(&rng, 3.0f);
    float *a = cuda_test_upload(host, COUNT * sizeof(float));
    float *b = cuda_test_device(COUNT * sizeof(float));
    cuda_test_ok(
        dsv3_memory_copy(&cuda_ctx, b, a, COUNT * sizeof(float), DSV3_COPY_DEVICE_TO_DEVICE));
    float *back = cuda_test_download_floats(b, COUNT);
    assert_memory_equal(back, host, COUNT * sizeof(float));
    // Zero the middle third only.
    cuda_test_ok(dsv3_memory_zero(&cuda_ctx, b + COUNT / 3, (COUNT / 3) * sizeof(float)));
    back = cuda_test_download_floats(b, COUNT);
    for (int64_t i = 0; i < COUNT; i++) {
        const int zeroed = i >= COUNT / 3 && i < 2 * (COUNT / 3);
        if (back[i] != (zeroed ? 0.0f : host[i])) fail_msg("element %lld", (long long)i);
    }
    expect_usage_error(dsv3_memory_copy(&cuda_ctx, NULL, a, 4, DSV3_COPY_DEVICE_TO_DEVICE),
                       "must not be NULL");
    expect_usage_error(dsv3_memory_copy(&cuda_ctx, b, a, 4, (Dsv3CopyKind)9), "Dsv3CopyKind");
    expect_usage_error(dsv3_memory_zero(&cuda_ctx, NULL, 4), "dst is NULL");
}

static void test_convert_rounds_to_nearest_even(void **state) {
    (void)state;
    enum { COUNT = 70001 };
    float *host = test_floats(COUNT);
    uint64_t rng = 11;
    for (int64_t i = 0; i < COUNT; i++)
        host[i] = kernels_test_uniform(&rng, 1000.0f);
    // Ties and edge cases of the rounding.
    const float special[] = {0.0f, -0.0f, 1.0f, 1.00390625f, 1.01171875f, -2.5e-39f, 3.0e38f};
    memcpy(host, special, sizeof special);
    float *x = cuda_test_upload(host, COUNT * sizeof(float));
    void *bf = cuda_test_device(COUNT * sizeof(uint16_t));
    float *y = cuda_test_device(COUNT * sizeof(float));
    cuda_test_ok(dsv3_convert(&cuda_ctx, bf, DSV3_TENSOR_BF16, x, DSV3_TENSOR_F32, COUNT));
    cuda_test_ok(dsv3_convert(&cuda_ctx, y, DSV3_TENSOR_F32, bf, DSV3_TENSOR_BF16, COUNT));
    uint16_t *bits = test_buffer(COUNT, sizeof(uint16_t));
    cuda_test_download(bits, bf, COUNT * sizeof(uint16_t));
    float *back = cuda_test_download_floats(y, COUNT);
    for (int64_t i = 0; i < COUNT; i++) {
        const uint16_t want = cuda_test_bf16_bits(host[i]);
        if (bits[i] != want)
            fail_msg("element %lld (%.9g): bf16 bits %04x, expected %04x", (long long)i,
                     (double)host[i], bits[i], want);
        if (back[i] != cuda_test_bf16_value(want)) fail_msg("element %lld back", (long long)i);
    }
    // Same dtype: a copy.
    cuda_test_ok(dsv3_convert(&cuda_ctx, y, DSV3_TENSOR_F32, x, DSV3_TENSOR_F32, COUNT));
    back = cuda_test_download_floats(y, COUNT);
    assert_memory_equal(back, host, COUNT * sizeof(float));
    expect_usage_error(dsv3_convert(&cuda_ctx, x, DSV3_TENSOR_F32, x, DSV3_TENSOR_BF16, 8),
                       "overlap");
    expect_usage_error(dsv3_convert(&cuda_ctx, y, (Dsv3TensorDtype)5, x, DSV3_TENSOR_F32, 8),
                       "dtype");
    expect_usage_error(dsv3_convert(&cuda_ctx, y, DSV3_TENSOR_F32, x, DSV3_TENSOR_F32, -1), ">= 0");
}

static void test_workspace_query(void **state) {
    (void)state;
    size_t bytes = 1;
    const Dsv3OpShape shape = {.N = 64, .D = 32};
    cuda_test_ok(dsv3_workspace_bytes(&cuda_ctx, DSV3_OP_ADD, &shape, &bytes));
    assert_int_equal(bytes, 0);
    expect_usage_error(dsv3_workspace_bytes(&cuda_ctx, DSV3_OP_COUNT, &shape, &bytes),
                       "is not an op");
    expect_usage_error(dsv3_workspace_bytes(&cuda_ctx, DSV3_OP_ADD, NULL, &bytes),
                       "must not be NULL");
}

static void test_matmul_bf16_accepted(void **state) {
    (void)state;
    cuda_test_ok(dsv3_kernel_context_set_matmul(&cuda_ctx, DSV3_TENSOR_BF16));
    assert_int_equal(cuda_ctx.matmul_dtype, DSV3_TENSOR_BF16);
    cuda_test_ok(dsv3_kernel_context_set_matmul(&cuda_ctx, DSV3_TENSOR_F32));
    assert_int_equal(cuda_ctx.matmul_dtype, DSV3_TENSOR_F32);
}

static const struct CMUnitTest cases[] = {
    CUDA_TEST(test_context_describes_itself),
    CUDA_TEST(test_alloc_is_counted_and_freed),
    CUDA_TEST(test_alloc_errors),
    CUDA_TEST(test_copies_and_zero),
    CUDA_TEST(test_convert_rounds_to_nearest_even),
    CUDA_TEST(test_workspace_query),
    CUDA_TEST(test_matmul_bf16_accepted),
};

CUDA_TEST_MAIN(cases)
