// leak_check: CMocka fixtures that fail a test which leaves the allocation counter
// (common/core/alloc.h) other than it found it, failed allocations and errors included.
#ifndef DSV3_TESTS_LEAK_CHECK_H
#define DSV3_TESTS_LEAK_CHECK_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/core/alloc.h"
#include "common/core/error.h"

static size_t leak_check_start_bytes;

static int leak_check_record(void **state) {
    (void)state;
    dsv3_error_clear();
    leak_check_start_bytes = dsv3_alloc_current_bytes();
    return 0;
}

static int leak_check_verify(void **state) {
    (void)state;
    size_t now = dsv3_alloc_current_bytes();
    if (now != leak_check_start_bytes) {
        print_error("%zu bytes still counted after the test (started at %zu)\n", now,
                    leak_check_start_bytes);
        return -1;
    }
    dsv3_error_clear();
    return 0;
}

#define LEAK_CHECKED(test)                                                                         \
    cmocka_unit_test_setup_teardown(test, leak_check_record, leak_check_verify)

#endif
