// Unit tests for alloc: the current and peak counters, alignment, zeroing, overflow and
// failure messages that name the buffer, strdup, and counting from several threads.
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/core/alloc.h"
#include "leak_check.h"

// A request no machine can satisfy but that does not overflow the size arithmetic.
#define IMPOSSIBLE_BYTES (SIZE_MAX / 4)

enum { THREADS = 4, ALLOCS_PER_THREAD = 2000 };

// The failure test asks for an impossible size on purpose; under AddressSanitizer that must
// come back as NULL (as from the C library) instead of ending the test binary.
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "allocator_may_return_null=1"; }

static void test_alloc_and_free_move_the_current_counter(void **state) {
    (void)state;
    void *a = NULL, *b = NULL;
    assert_int_equal(dsv3_alloc(&a, 1000, "a"), DSV3_OK);
    assert_non_null(a);
    assert_int_equal(dsv3_alloc_current_bytes(), leak_check_start_bytes + 1000);
    assert_int_equal(dsv3_alloc(&b, 24, "b"), DSV3_OK);
    assert_int_equal(dsv3_alloc_current_bytes(), leak_check_start_bytes + 1024);
    assert_true(dsv3_alloc_peak_bytes() >= leak_check_start_bytes + 1024);
    dsv3_free(a);
    assert_int_equal(dsv3_alloc_current_bytes(), leak_check_start_bytes + 24);
    dsv3_free(b);
    assert_int_equal(dsv3_alloc_current_bytes(), leak_check_start_bytes);
}

static void test_peak_keeps_the_high_water_mark_until_reset(void **state) {
    (void)state;
    dsv3_alloc_reset_peak();
    assert_int_equal(dsv3_alloc_peak_bytes(), leak_check_start_bytes);
    void *big = NULL, *small = NULL;
    assert_int_equal(dsv3_alloc(&big, 5000, "big"), DSV3_OK);
    dsv3_free(big);
    assert_int_equal(dsv3_alloc(&small, 100, "small"), DSV3_OK);
    assert_int_equal(dsv3_alloc_peak_bytes(), leak_check_start_bytes + 5000);
    // A reset restarts the peak from what is in use now (e.g. at a step boundary).
    dsv3_alloc_reset_peak();
    assert_int_equal(dsv3_alloc_peak_bytes(), leak_check_start_bytes + 100);
    dsv3_free(small);
    assert_int_equal(dsv3_alloc_peak_bytes(), leak_check_start_bytes + 100);
    dsv3_alloc_reset_peak();
    assert_int_equal(dsv3_alloc_peak_bytes(), leak_check_start_bytes);
}

static void test_every_buffer_is_aligned_and_writable(void **state) {
    (void)state;
    const size_t sizes[] = {0, 1, 3, 63, 64, 65, 127, 128, 1000, 4095, 4096, 4097, 1 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        void *p = NULL;
        assert_int_equal(dsv3_alloc(&p, sizes[i], "aligned"), DSV3_OK);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % DSV3_ALLOC_ALIGNMENT, 0);
        // Every requested byte is usable (AddressSanitizer reports any overrun).
        memset(p, 0x5a, sizes[i]);
        assert_int_equal(dsv3_alloc_current_bytes(), leak_check_start_bytes + sizes[i]);
        dsv3_free(p);
    }
}

static void test_calloc_zeroes_and_is_aligned(void **state) {
    (void)state;
    // Dirty a buffer first so that a calloc reusing its memory would show stale bytes.
    unsigned char *dirty = NULL;
    assert_int_equal(dsv3_alloc((void **)&dirty, 4096, "dirty"), DSV3_OK);
    memset(dirty, 0xff, 4096);
    dsv3_free(dirty);

    uint32_t *zeros = NULL;
    assert_int_equal(dsv3_calloc((void **)&zeros, 1024, sizeof *zeros, "zeros"), DSV3_OK);
    assert_int_equal((uintptr_t)zeros % DSV3_ALLOC_ALIGNMENT, 0);
    assert_int_equal(dsv3_alloc_current_bytes(), leak_check_start_bytes + 1024 * sizeof *zeros);
    for (size_t i = 0; i < 1024; i++)
        assert_int_equal(zeros[i], 0);
    dsv3_free(zeros);

    // Zero elements, or elements of size zero, are valid empty buffers.
    void *empty = NULL;
    assert_int_equal(dsv3_calloc(&empty, 0, 8, "empty"), DSV3_OK);
    dsv3_free(empty);
    assert_int_equal(dsv3_calloc(&empty, 8, 0, "empty"), DSV3_OK);
    dsv3_free(empty);
}

static void test_calloc_overflow_names_the_buffer(void **state) {
    (void)state;
    void *p = (void *)&p; // must be reset to NULL on failure
    assert_int_equal(dsv3_calloc(&p, SIZE_MAX / 2 + 1, 4, "expert weights"), DSV3_ERR_MEMORY);
    assert_null(p);
    const char *msg = dsv3_error_message();
    assert_non_null(strstr(msg, "expert weights"));
    assert_non_null(strstr(msg, "overflow"));
    assert_non_null(strstr(dsv3_error_text(), "out of memory: "));
    assert_int_equal(dsv3_alloc_current_bytes(), leak_check_start_bytes);
    dsv3_error_clear();
}

static void test_alloc_size_overflow_names_the_buffer(void **state) {
    (void)state;
    void *p = (void *)&p;
    assert_int_equal(dsv3_alloc(&p, SIZE_MAX, "token buffer"), DSV3_ERR_MEMORY);
    assert_null(p);
    assert_non_null(strstr(dsv3_error_message(), "token buffer"));
    assert_non_null(strstr(dsv3_error_message(), "overflow"));
    assert_int_equal(dsv3_alloc_current_bytes(), leak_check_start_bytes);
    dsv3_error_clear();

    // Sizes just past the limit of the padded-size arithmetic are refused, not wrapped around.
    assert_int_equal(dsv3_alloc(&p, SIZE_MAX - DSV3_ALLOC_ALIGNMENT, "edge"), DSV3_ERR_MEMORY);
    assert_null(p);
    dsv3_error_clear();
    // The largest size that passes that check fails in the allocator, still cleanly.
    assert_int_equal(dsv3_alloc(&p, SIZE_MAX - 2 * DSV3_ALLOC_ALIGNMENT, "edge"), DSV3_ERR_MEMORY);
    assert_null(p);
    dsv3_error_clear();
}

static void test_failed_allocation_names_buffer_and_size(void **state) {
    (void)state;
    void *held = NULL, *p = (void *)&p;
    assert_int_equal(dsv3_alloc(&held, 777, "held"), DSV3_OK);
    assert_int_equal(dsv3_alloc(&p, IMPOSSIBLE_BYTES, "optimizer state"), DSV3_ERR_MEMORY);
    assert_null(p);
    char size_text[64];
    snprintf(size_text, sizeof size_text, "%zu bytes", (size_t)IMPOSSIBLE_BYTES);
    const char *msg = dsv3_error_message();
    assert_non_null(strstr(msg, "optimizer state"));
    assert_non_null(strstr(msg, size_text));
    // The message says how much was already in use, to tell a leak from a too-big model.
    snprintf(size_text, sizeof size_text, "%zu bytes already in use", leak_check_start_bytes + 777);
    assert_non_null(strstr(msg, size_text));
    assert_int_equal(dsv3_alloc_current_bytes(), leak_check_start_bytes + 777);
    dsv3_free(held);
    dsv3_error_clear();

    // calloc passes the failure up with its own frame.
    assert_int_equal(dsv3_calloc(&p, IMPOSSIBLE_BYTES / 8, 8, "gradients"), DSV3_ERR_MEMORY);
    assert_null(p);
    assert_non_null(strstr(dsv3_error_message(), "gradients"));
    assert_non_null(strstr(dsv3_error_text(), "in dsv3_alloc()"));
    assert_non_null(strstr(dsv3_error_text(), "in dsv3_calloc()"));
    dsv3_error_clear();
}

static void test_strdup_copies_into_a_counted_buffer(void **state) {
    (void)state;
    const char *text = "conf/debug_model.toml";
    char *copy = NULL;
    assert_int_equal(dsv3_strdup(&copy, text, "path"), DSV3_OK);
    assert_non_null(copy);
    assert_ptr_not_equal(copy, text);
    assert_string_equal(copy, text);
    assert_int_equal((uintptr_t)copy % DSV3_ALLOC_ALIGNMENT, 0);
    assert_int_equal(dsv3_alloc_current_bytes(), leak_check_start_bytes + strlen(text) + 1);
    dsv3_free(copy);

    char *empty = NULL;
    assert_int_equal(dsv3_strdup(&empty, "", "empty"), DSV3_OK);
    assert_string_equal(empty, "");
    assert_int_equal(dsv3_alloc_current_bytes(), leak_check_start_bytes + 1);
    dsv3_free(empty);
}

static void test_free_null_is_ignored(void **state) {
    (void)state;
    size_t peak = dsv3_alloc_peak_bytes();
    dsv3_free(NULL);
    assert_int_equal(dsv3_alloc_current_bytes(), leak_check_start_bytes);
    assert_int_equal(dsv3_alloc_peak_bytes(), peak);
}

static void *alloc_and_free_many(void *arg) {
    size_t bytes = (size_t)(uintptr_t)arg;
    for (int i = 0; i < ALLOCS_PER_THREAD; i++) {
        void *p = NULL;
        if (dsv3_alloc(&p, bytes, "thread buffer") != DSV3_OK) return (void *)1;
        memset(p, i & 0xff, bytes);
        dsv3_free(p);
    }
    return NULL;
}

static void test_counters_are_exact_across_threads(void **state) {
    (void)state;
    dsv3_alloc_reset_peak();
    pthread_t threads[THREADS];
    for (uintptr_t t = 0; t < THREADS; t++)
        assert_int_equal(pthread_create(&threads[t], NULL, alloc_and_free_many,
                                        (void *)(uintptr_t)(100 * (t + 1))),
                         0);
    for (int t = 0; t < THREADS; t++) {
        void *result = (void *)&result;
        assert_int_equal(pthread_join(threads[t], &result), 0);
        assert_null(result);
    }
    assert_int_equal(dsv3_alloc_current_bytes(), leak_check_start_bytes);
    // The peak saw at least the largest single buffer and never more than all at once.
    assert_true(dsv3_alloc_peak_bytes() >= leak_check_start_bytes + 100 * THREADS);
    assert_true(dsv3_alloc_peak_bytes() <=
                leak_check_start_bytes + 100 * THREADS * (THREADS + 1) / 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        LEAK_CHECKED(test_alloc_and_free_move_the_current_counter),
        LEAK_CHECKED(test_peak_keeps_the_high_water_mark_until_reset),
        LEAK_CHECKED(test_every_buffer_is_aligned_and_writable),
        LEAK_CHECKED(test_calloc_zeroes_and_is_aligned),
        LEAK_CHECKED(test_calloc_overflow_names_the_buffer),
        LEAK_CHECKED(test_alloc_size_overflow_names_the_buffer),
        LEAK_CHECKED(test_failed_allocation_names_buffer_and_size),
        LEAK_CHECKED(test_strdup_copies_into_a_counted_buffer),
        LEAK_CHECKED(test_free_null_is_ignored),
        LEAK_CHECKED(test_counters_are_exact_across_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
