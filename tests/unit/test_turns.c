// Unit tests for turns: the two computations alternate exactly at their yields, the one left
// runs alone to its end, a yield outside a run returns at once, the held times add up, and a
// failure of either side comes back with its message.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/core/turns.h"

enum { LOG_CAPACITY = 64 };

// The order in which the sides' steps ran, as "a0 b0 a1 …" letters and step numbers.
typedef struct {
    char log[LOG_CAPACITY][4];
    int n;
} Order;

// One side: `steps` steps with a yield after each; fails at step `fail_at` (−1: never).
typedef struct {
    Order *order;
    char name;
    int steps, fail_at;
} Side;

static Dsv3Err run_side(void *arg) {
    Side *s = arg;
    for (int i = 0; i < s->steps; i++) {
        DSV3_CHECK(i != s->fail_at, DSV3_ERR_TIMEOUT, "side %c gave up at step %d", s->name, i);
        Order *o = s->order;
        o->log[o->n][0] = s->name;
        o->log[o->n][1] = (char)('0' + i);
        o->log[o->n][2] = '\0';
        o->n++;
        dsv3_turns_yield();
    }
    return DSV3_OK;
}

static void expect_order(const Order *o, const char *const *want, int n) {
    assert_int_equal(o->n, n);
    for (int i = 0; i < n; i++)
        assert_string_equal(o->log[i], want[i]);
}

static void test_sides_alternate_at_their_yields(void **state) {
    (void)state;
    Order o = {0};
    Side a = {&o, 'a', 3, -1}, b = {&o, 'b', 3, -1};
    double held[2] = {-1, -1};
    assert_int_equal(dsv3_turns_run(run_side, &a, run_side, &b, held), DSV3_OK);
    static const char *const want[] = {"a0", "b0", "a1", "b1", "a2", "b2"};
    expect_order(&o, want, 6);
    assert_true(held[0] >= 0 && held[1] >= 0);
}

static void test_the_longer_side_finishes_alone(void **state) {
    (void)state;
    Order o = {0};
    Side a = {&o, 'a', 1, -1}, b = {&o, 'b', 4, -1};
    assert_int_equal(dsv3_turns_run(run_side, &a, run_side, &b, NULL), DSV3_OK);
    static const char *const want[] = {"a0", "b0", "b1", "b2", "b3"};
    expect_order(&o, want, 5);
    Order o2 = {0};
    Side c = {&o2, 'a', 4, -1}, d = {&o2, 'b', 1, -1};
    assert_int_equal(dsv3_turns_run(run_side, &c, run_side, &d, NULL), DSV3_OK);
    static const char *const want2[] = {"a0", "b0", "a1", "a2", "a3"};
    expect_order(&o2, want2, 5);
}

static void test_a_yield_outside_a_run_returns_at_once(void **state) {
    (void)state;
    Order o = {0};
    Side a = {&o, 'a', 2, -1};
    assert_int_equal(run_side(&a), DSV3_OK);
    assert_int_equal(o.n, 2);
}

static void test_failures_come_back(void **state) {
    (void)state;
    Order o = {0};
    Side a = {&o, 'a', 3, -1}, b = {&o, 'b', 3, 1};
    assert_int_equal(dsv3_turns_run(run_side, &a, run_side, &b, NULL), DSV3_ERR_TIMEOUT);
    assert_non_null(strstr(dsv3_error_message(), "side b gave up at step 1"));
    assert_non_null(strstr(dsv3_error_message(), "on the second thread of an overlapped pair"));
    dsv3_error_clear();
    // The failed side stops; the other runs to its end.
    static const char *const want[] = {"a0", "b0", "a1", "a2"};
    expect_order(&o, want, 4);
    Order o2 = {0};
    Side c = {&o2, 'a', 3, 0}, d = {&o2, 'b', 2, -1};
    assert_int_equal(dsv3_turns_run(run_side, &c, run_side, &d, NULL), DSV3_ERR_TIMEOUT);
    assert_string_equal(dsv3_error_message(), "side a gave up at step 0");
    dsv3_error_clear();
    static const char *const want2[] = {"b0", "b1"};
    expect_order(&o2, want2, 2);
}

static Dsv3Err run_nested(void *arg) {
    (void)arg;
    return dsv3_turns_run(run_side, NULL, run_side, NULL, NULL);
}

static void test_a_run_inside_a_turn_is_refused(void **state) {
    (void)state;
    Order o = {0};
    Side b = {&o, 'b', 1, -1};
    assert_int_equal(dsv3_turns_run(run_nested, NULL, run_side, &b, NULL), DSV3_ERR_USAGE);
    assert_string_equal(dsv3_error_message(), "dsv3_turns_run is called inside a turn");
    dsv3_error_clear();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sides_alternate_at_their_yields),
        cmocka_unit_test(test_the_longer_side_finishes_alone),
        cmocka_unit_test(test_a_yield_outside_a_run_returns_at_once),
        cmocka_unit_test(test_failures_come_back),
        cmocka_unit_test(test_a_run_inside_a_turn_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
