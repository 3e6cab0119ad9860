// test_buffers: the buffers a CMocka test takes from the counted allocator
// (common/core/alloc.h), freed by the test as its cases finish (test_buffers_free_after) and by
// its teardown, so that the leak check (leak_check.h) counts only what the code under test kept.
// Header only, for the test programs.
#ifndef DSV3_TESTS_UNIT_TEST_BUFFERS_H
#define DSV3_TESTS_UNIT_TEST_BUFFERS_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/core/alloc.h"

enum { TEST_BUFFERS_MAX = 64 };

static void *test_buffers[TEST_BUFFERS_MAX];
static int test_buffer_count;

// `count` zeroed elements of `size` bytes (one byte when count is 0).
static void *test_buffer(int64_t count, size_t size) {
    void *ptr = NULL;
    assert_true(test_buffer_count < TEST_BUFFERS_MAX);
    assert_int_equal(dsv3_calloc(&ptr, count > 0 ? (size_t)count : 1, size, "test buffer"),
                     DSV3_OK);
    test_buffers[test_buffer_count++] = ptr;
    return ptr;
}

static float *test_floats(int64_t count) { return test_buffer(count, sizeof(float)); }

// Frees the buffers taken after the first `keep` (0: all of them).
static void test_buffers_free_after(int keep) {
    while (test_buffer_count > keep)
        dsv3_free(test_buffers[--test_buffer_count]);
}

#endif
