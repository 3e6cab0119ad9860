// Unit tests for the LR schedule: phase lengths as torchtitan derives them, factors worked out
// by hand from its formula, and errors. tests/numerics/test_lr_schedule.c compares every
// factor of many settings with torch's LambdaLR.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/train/lr_schedule.h"

static const double TOLERANCE = 1e-15;
static const double PI = 3.141592653589793238462643383279502884;

static Dsv3LrSchedule init_or_fail(int64_t warmup, int64_t total, int has_ratio, double ratio,
                                   Dsv3LrDecayType type, double min_lr) {
    Dsv3LrScheduleParams p = {warmup, total, has_ratio, ratio, type, min_lr};
    Dsv3LrSchedule s;
    if (dsv3_lr_schedule_init(&s, &p) != DSV3_OK) fail_msg("init: %s", dsv3_error_text());
    return s;
}

static void expect_factors(const Dsv3LrSchedule *s, const double *expected, int64_t count) {
    for (int64_t step = 1; step <= count; step++) {
        double got = dsv3_lr_factor(s, step);
        if (fabs(got - expected[step - 1]) > TOLERANCE)
            fail_msg("step %lld: factor %.17g, expected %.17g", (long long)step, got,
                     expected[step - 1]);
    }
}

static void expect_message_contains(const char *needle) {
    const char *msg = dsv3_error_message();
    if (strstr(msg, needle) == NULL) fail_msg("message '%s' does not name '%s'", msg, needle);
    dsv3_error_clear();
}

// conf/debug_model.toml: warm-up 2, decay over the last 80% of 10 steps, linear.
static void test_debug_config(void **state) {
    (void)state;
    Dsv3LrSchedule s = init_or_fail(2, 10, 1, 0.8, DSV3_LR_DECAY_LINEAR, 0.0);
    assert_int_equal(s.warmup_steps, 2);
    assert_int_equal(s.decay_steps, 8);
    assert_int_equal(s.stable_steps, 1);
    const double expected[] = {0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125};
    expect_factors(&s, expected, 10);
}

// Without decay_ratio decay starts after one stable step (torchtitan's virtual last step).
static void test_no_decay_ratio(void **state) {
    (void)state;
    Dsv3LrSchedule s = init_or_fail(0, 10, 0, 0.0, DSV3_LR_DECAY_LINEAR, 0.0);
    assert_int_equal(s.decay_steps, 10);
    assert_int_equal(s.stable_steps, 1);
    const double expected[] = {1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0, -0.1};
    expect_factors(&s, expected, 12);

    s = init_or_fail(4, 8, 0, 0.0, DSV3_LR_DECAY_LINEAR, 0.2);
    const double with_min[] = {
        0.25, 0.5, 0.75, 1.0, 1.0, 0.2 + 0.8 * 0.75, 0.2 + 0.8 * 0.5, 0.2 + 0.8 * 0.25, 0.2};
    expect_factors(&s, with_min, 9);
}

static void test_decay_shapes(void **state) {
    (void)state;
    // warm-up 0, decay 4 after one stable step: progress 1/4, 2/4, 3/4, 1 at steps 2..5.
    Dsv3LrSchedule s = init_or_fail(0, 4, 0, 0.0, DSV3_LR_DECAY_SQRT, 0.0);
    const double sqrt_expected[] = {1.0, 0.5, 1.0 - sqrt(0.5), 1.0 - sqrt(0.75), 0.0};
    expect_factors(&s, sqrt_expected, 5);
    s = init_or_fail(0, 4, 0, 0.0, DSV3_LR_DECAY_COSINE, 0.1);
    const double cos_expected[] = {1.0, 0.1 + 0.9 * 0.5 * (1 + cos(PI / 4)), 0.1 + 0.9 * 0.5,
                                   0.1 + 0.9 * 0.5 * (1 + cos(3 * PI / 4)), 0.1};
    expect_factors(&s, cos_expected, 5);
}

// decay_ratio 0: stable to the end; past the end torchtitan asserts, we give min_lr_factor.
static void test_zero_decay(void **state) {
    (void)state;
    Dsv3LrSchedule s = init_or_fail(3, 10, 1, 0.0, DSV3_LR_DECAY_COSINE, 0.1);
    assert_int_equal(s.decay_steps, 0);
    assert_int_equal(s.stable_steps, 8);
    const double expected[] = {1.0 / 3, 2.0 / 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0.1, 0.1};
    expect_factors(&s, expected, 13);
}

// Python's round() rounds half to even: 10 · 0.25 = 2.5 gives 2, 10 · 0.05 = 0.5 gives 0.
static void test_round_half_even(void **state) {
    (void)state;
    assert_int_equal(init_or_fail(0, 10, 1, 0.25, DSV3_LR_DECAY_LINEAR, 0).decay_steps, 2);
    assert_int_equal(init_or_fail(0, 10, 1, 0.05, DSV3_LR_DECAY_LINEAR, 0).decay_steps, 0);
    assert_int_equal(init_or_fail(0, 10, 1, 0.35, DSV3_LR_DECAY_LINEAR, 0).decay_steps, 4);
    assert_int_equal(init_or_fail(0, 100, 1, 0.125, DSV3_LR_DECAY_LINEAR, 0).decay_steps, 12);
}

// Warm-up longer than the schedule, and warm-up plus decay longer than it, are cut.
static void test_clamps(void **state) {
    (void)state;
    Dsv3LrSchedule s = init_or_fail(20, 10, 1, 0.5, DSV3_LR_DECAY_LINEAR, 0.0);
    assert_int_equal(s.warmup_steps, 10);
    assert_int_equal(s.decay_steps, 0);
    assert_int_equal(s.stable_steps, 1);
    assert_true(fabs(dsv3_lr_factor(&s, 1) - 0.1) < TOLERANCE);
    assert_true(fabs(dsv3_lr_factor(&s, 10) - 1.0) < TOLERANCE);
    assert_true(fabs(dsv3_lr_factor(&s, 11) - 1.0) < TOLERANCE);

    s = init_or_fail(6, 10, 1, 0.8, DSV3_LR_DECAY_LINEAR, 0.0);
    assert_int_equal(s.decay_steps, 4);
    assert_int_equal(s.stable_steps, 1);
    s = init_or_fail(0, 10, 1, 1.5, DSV3_LR_DECAY_LINEAR, 0.0);
    assert_int_equal(s.decay_steps, 10);
    // An empty schedule is constant.
    s = init_or_fail(0, 0, 0, 0.0, DSV3_LR_DECAY_LINEAR, 0.0);
    assert_true(dsv3_lr_factor(&s, 1) == 1.0);
}

static void test_decay_type_names(void **state) {
    (void)state;
    const char *names[] = {"linear", "sqrt", "cosine"};
    for (int t = 0; t < 3; t++) {
        Dsv3LrDecayType type;
        assert_int_equal(dsv3_lr_decay_type_parse(names[t], &type), DSV3_OK);
        assert_int_equal(type, t);
        assert_string_equal(dsv3_lr_decay_type_name(type), names[t]);
    }
    Dsv3LrDecayType type;
    assert_int_equal(dsv3_lr_decay_type_parse("exp", &type), DSV3_ERR_CONFIG);
    expect_message_contains("lr_scheduler.decay_type");
    assert_int_equal(dsv3_lr_decay_type_parse(NULL, &type), DSV3_ERR_CONFIG);
    dsv3_error_clear();
}

static void test_errors(void **state) {
    (void)state;
    Dsv3LrSchedule s;
    Dsv3LrScheduleParams p = {-1, 10, 0, 0.0, DSV3_LR_DECAY_LINEAR, 0.0};
    assert_int_equal(dsv3_lr_schedule_init(&s, &p), DSV3_ERR_CONFIG);
    expect_message_contains("lr_scheduler.warmup_steps");
    p = (Dsv3LrScheduleParams){0, -1, 0, 0.0, DSV3_LR_DECAY_LINEAR, 0.0};
    assert_int_equal(dsv3_lr_schedule_init(&s, &p), DSV3_ERR_CONFIG);
    expect_message_contains("lr_scheduler.total_steps");
    p = (Dsv3LrScheduleParams){0, 10, 1, -0.5, DSV3_LR_DECAY_LINEAR, 0.0};
    assert_int_equal(dsv3_lr_schedule_init(&s, &p), DSV3_ERR_CONFIG);
    expect_message_contains("lr_scheduler.decay_ratio");
    p = (Dsv3LrScheduleParams){0, 10, 1, NAN, DSV3_LR_DECAY_LINEAR, 0.0};
    assert_int_equal(dsv3_lr_schedule_init(&s, &p), DSV3_ERR_CONFIG);
    expect_message_contains("lr_scheduler.decay_ratio");
    p = (Dsv3LrScheduleParams){0, 10, 0, 0.0, DSV3_LR_DECAY_LINEAR, 1.5};
    assert_int_equal(dsv3_lr_schedule_init(&s, &p), DSV3_ERR_CONFIG);
    expect_message_contains("lr_scheduler.min_lr_factor");
    p = (Dsv3LrScheduleParams){0, 10, 0, 0.0, (Dsv3LrDecayType)7, 0.0};
    assert_int_equal(dsv3_lr_schedule_init(&s, &p), DSV3_ERR_CONFIG);
    expect_message_contains("lr_scheduler.decay_type");
    assert_int_equal(dsv3_lr_schedule_init(NULL, &p), DSV3_ERR_USAGE);
    dsv3_error_clear();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_debug_config),     cmocka_unit_test(test_no_decay_ratio),
        cmocka_unit_test(test_decay_shapes),     cmocka_unit_test(test_zero_decay),
        cmocka_unit_test(test_round_half_even),  cmocka_unit_test(test_clamps),
        cmocka_unit_test(test_decay_type_names), cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
