// kernels_fixture: the CMocka fixture of the kernel tests that compare the fast CPU backend with
// the reference. Before each test: both contexts (cpu, reference). After it: the test's buffers
// (test_buffers.h) freed, the contexts destroyed, the OpenMP thread count and the profiler as
// they were, and the allocation counter as it was (leak_check.h). Header only, for the tests.
#ifndef DSV3_TESTS_UNIT_KERNELS_FIXTURE_H
#define DSV3_TESTS_UNIT_KERNELS_FIXTURE_H

#include <omp.h>

#include "kernels/kernels.h"
#include "tests/kernels_test.h"
#include "tests/unit/leak_check.h"
#include "tests/unit/test_buffers.h"

static Dsv3KernelContext cpu, reference; // the fast and the reference backend
static int kernels_fixture_threads;

static int kernels_fixture_setup(void **state) {
    leak_check_record(state);
    kernels_fixture_threads = omp_get_max_threads();
    return kernels_test_contexts_create(&cpu, &reference);
}

static int kernels_fixture_teardown(void **state) {
    test_buffers_free_after(0);
    kernels_test_contexts_destroy(&cpu, &reference);
    omp_set_num_threads(kernels_fixture_threads);
    dsv3_profile_stop();
    return leak_check_verify(state);
}

#endif
