// cuda_test: what the tests of the CUDA ops share. Each test program (tests/cuda/test_cuda_*.c,
// the `cuda` suite) runs an op on a CUDA context and on the reference CPU backend with the same
// random inputs and compares the results; without a CUDA device, or in a build without the CUDA
// backend, it exits 77 (skipped) before running anything.
//
// A case builds its inputs on the host, uploads them (cuda_test_upload: device copies that the
// harness frees after the case), runs both backends, downloads the CUDA results
// (cuda_test_download, which waits for the stream and reports the context's data faults) and
// compares them with cuda_test_expect_close. bf16 cases round the host inputs to bf16 first
// (cuda_test_round_bf16), so that both backends see the same values, and compare within the
// tolerance each test states. Header only, for the test programs; uses CMocka.
#ifndef DSV3_TESTS_CUDA_CUDA_TEST_H
#define DSV3_TESTS_CUDA_CUDA_TEST_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "kernels/kernels.h"
#include "tests/kernels_test.h"
#include "tests/unit/test_buffers.h"

#ifdef DSV3_HAVE_CUDA
#include "kernels/cuda/cuda_device.h"
#endif

enum { CUDA_TEST_SKIP = 77, CUDA_TEST_MAX_DEVICE_BUFFERS = 64 };

// The contexts of every case: the CUDA backend on device 0, and the reference backend.
static Dsv3KernelContext cuda_ctx, ref_ctx;
static void *cuda_test_device_buffers[CUDA_TEST_MAX_DEVICE_BUFFERS];
static int cuda_test_device_buffer_count;

// 0 when a CUDA device and the CUDA backend are there, CUDA_TEST_SKIP (after saying why) when
// not. For main, before cmocka_run_group_tests.
static inline int cuda_test_available(void) {
#ifdef DSV3_HAVE_CUDA
    int count = 0;
    if (dsv3_cuda_device_count(&count) != DSV3_OK) {
        fprintf(stderr, "%s", dsv3_error_text());
        return 1;
    }
    if (count == 0) {
        printf("no CUDA device: skipped\n");
        return CUDA_TEST_SKIP;
    }
    if (!dsv3_backend_built(DSV3_BACKEND_CUDA)) {
        printf("this build has no CUDA backend: skipped\n");
        return CUDA_TEST_SKIP;
    }
    return 0;
#else
    printf("this build has no CUDA: skipped\n");
    return CUDA_TEST_SKIP;
#endif
}

static inline int cuda_test_setup(void **state) {
    (void)state;
    if (dsv3_kernel_context_create(&cuda_ctx, DSV3_BACKEND_CUDA, 0) != DSV3_OK ||
        dsv3_kernel_context_create(&ref_ctx, DSV3_BACKEND_CPU_REFERENCE, KERNELS_TEST_NO_DEVICE) !=
            DSV3_OK) {
        fprintf(stderr, "%s\n", dsv3_error_text());
        return -1;
    }
    return 0;
}

// After each case: its device and host buffers freed, both workspaces freed, bf16 GEMMs off.
static inline int cuda_test_teardown_case(void **state) {
    (void)state;
    while (cuda_test_device_buffer_count > 0)
        (void)dsv3_memory_free(&cuda_ctx,
                               cuda_test_device_buffers[--cuda_test_device_buffer_count]);
    test_buffers_free_after(0);
    kernels_test_free_workspace(&cuda_ctx);
    kernels_test_free_workspace(&ref_ctx);
    (void)dsv3_kernel_context_set_matmul(&cuda_ctx, DSV3_TENSOR_F32);
    return 0;
}

static inline int cuda_test_teardown(void **state) {
    cuda_test_teardown_case(state);
    dsv3_kernel_context_destroy(&cuda_ctx);
    dsv3_kernel_context_destroy(&ref_ctx);
    return 0;
}

// Fails the case with the error's text when err is not DSV3_OK.
static inline void cuda_test_ok(Dsv3Err err) {
    if (err != DSV3_OK) fail_msg("%s", dsv3_error_text());
}

// `bytes` of device memory, freed after the case; zeroed.
static inline void *cuda_test_device(size_t bytes) {
    void *p = NULL;
    assert_true(cuda_test_device_buffer_count < CUDA_TEST_MAX_DEVICE_BUFFERS);
    cuda_test_ok(dsv3_memory_alloc(&cuda_ctx, &p, bytes > 0 ? bytes : 1, "test device buffer"));
    cuda_test_device_buffers[cuda_test_device_buffer_count++] = p;
    cuda_test_ok(dsv3_memory_zero(&cuda_ctx, p, bytes > 0 ? bytes : 1));
    return p;
}

// A device copy of `bytes` of host memory, freed after the case.
static inline void *cuda_test_upload(const void *host, size_t bytes) {
    void *p = cuda_test_device(bytes);
    if (bytes > 0)
        cuda_test_ok(dsv3_memory_copy(&cuda_ctx, p, host, bytes, DSV3_COPY_HOST_TO_DEVICE));
    return p;
}

// `bytes` of device memory into host memory, after every op issued so far has finished (and
// with their data faults reported).
static inline void cuda_test_download(void *host, const void *device, size_t bytes) {
    cuda_test_ok(dsv3_synchronize(&cuda_ctx));
    if (bytes > 0)
        cuda_test_ok(dsv3_memory_copy(&cuda_ctx, host, device, bytes, DSV3_COPY_DEVICE_TO_HOST));
    cuda_test_ok(dsv3_synchronize(&cuda_ctx));
}

// The device values of a float tensor, as a host buffer freed after the case.
static inline float *cuda_test_download_floats(const float *device, int64_t count) {
    float *host = test_floats(count);
    cuda_test_download(host, device, (size_t)count * sizeof(float));
    return host;
}

// bf16 bits of x, rounded to nearest even (as the backends round).
static inline uint16_t cuda_test_bf16_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); // NaN stays NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float cuda_test_bf16_value(uint16_t bits) {
    uint32_t u = (uint32_t)bits << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

// x (count) rounded to bf16 values in place (fp32 storage).
static inline void cuda_test_round_bf16(float *x, int64_t count) {
    for (int64_t i = 0; i < count; i++)
        x[i] = cuda_test_bf16_value(cuda_test_bf16_bits(x[i]));
}

// count uniform values in [−scale, scale) from *rng, freed after the case.
static inline float *cuda_test_random_floats(uint64_t *rng, int64_t count, float scale) {
    float *x = test_floats(count);
    for (int64_t i = 0; i < count; i++)
        x[i] = kernels_test_uniform(rng, scale);
    return x;
}

// A host copy of x (count), freed after the case.
static inline float *cuda_test_copy_floats(const float *x, int64_t count) {
    float *y = test_floats(count);
    if (count > 0) memcpy(y, x, (size_t)count * sizeof(float));
    return y;
}

// A device bf16 copy of the fp32 host values x (count), freed after the case.
static inline void *cuda_test_upload_bf16(const float *x, int64_t count) {
    uint16_t *bits = test_buffer(count, sizeof(uint16_t));
    for (int64_t i = 0; i < count; i++)
        bits[i] = cuda_test_bf16_bits(x[i]);
    return cuda_test_upload(bits, (size_t)count * sizeof(uint16_t));
}

// The device bf16 tensor (count) as fp32 host values, freed after the case.
static inline float *cuda_test_download_bf16(const void *device, int64_t count) {
    uint16_t *bits = test_buffer(count, sizeof(uint16_t));
    cuda_test_download(bits, device, (size_t)count * sizeof(uint16_t));
    float *x = test_floats(count);
    for (int64_t i = 0; i < count; i++)
        x[i] = cuda_test_bf16_value(bits[i]);
    return x;
}

// Fails unless ‖got − want‖ / ‖want‖ ≤ tolerance, naming what was compared.
static inline void cuda_test_expect_close(const float *got, const float *want, int64_t count,
                                          double tolerance, const char *what) {
    const double err = kernels_test_relative_error(got, want, count);
    if (!(err <= tolerance))
        fail_msg("%s: relative error %.3e > %.1e (%lld elements)", what, err, tolerance,
                 (long long)count);
}

// Fails unless the two int32 tensors are equal, naming the first difference.
static inline void cuda_test_expect_equal_ints(const int32_t *got, const int32_t *want,
                                               int64_t count, const char *what) {
    for (int64_t i = 0; i < count; i++)
        if (got[i] != want[i])
            fail_msg("%s: element %lld is %d, expected %d", what, (long long)i, got[i], want[i]);
}

// The CUDA context with a workspace of what `op` needs for the shape (as SIZED of
// kernels_test.h, for either context).
#define CUDA_SIZED(OP, ...) SIZED(&cuda_ctx, OP, __VA_ARGS__)
#define REF_SIZED(OP, ...) SIZED(&ref_ctx, OP, __VA_ARGS__)

// Runs the group's cases, each followed by cuda_test_teardown_case; 77 without a device.
#define CUDA_TEST_MAIN(cases)                                                                      \
    int main(void) {                                                                               \
        const int available = cuda_test_available();                                               \
        if (available != 0) return available;                                                      \
        return cmocka_run_group_tests(cases, cuda_test_setup, cuda_test_teardown);                 \
    }

// One case of the group: the test function with the per-case teardown.
#define CUDA_TEST(fn) cmocka_unit_test_teardown(fn, cuda_test_teardown_case)

#endif
