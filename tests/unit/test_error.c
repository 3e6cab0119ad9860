// Unit tests for error: the first failure's message, one traceback frame per level, the
// *_GOTO variants, clearing, the per-thread record, and records too long for the buffer.
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/core/error.h"

// Longer than the record's buffer (8 KiB), so that truncation is exercised.
enum { LONG_MESSAGE_LENGTH = 20000, DEEP_TRACE_FRAMES = 1000 };

// Each failing helper stores the line of its macro so that the frames can be checked exactly.
static int check_line, call2_line, call1_line, assert_line, raise_line, goto_line, check_goto_line;
static int cleaned_up;

// ---------------------------------------------------------------------------------------------
// A three-level call chain: check_positive fails, two DSV3_CALLs pass the code up.

static Dsv3Err check_positive(int x) {
    check_line = __LINE__ + 1;
    DSV3_CHECK(x > 0, DSV3_ERR_USAGE, "x must be positive, not %d", x);
    return DSV3_OK;
}

static Dsv3Err call_level2(int x) {
    call2_line = __LINE__ + 1;
    DSV3_CALL(check_positive(x));
    return DSV3_OK;
}

static Dsv3Err call_level1(int x) {
    call1_line = __LINE__ + 1;
    DSV3_CALL(call_level2(x));
    return DSV3_OK;
}

static Dsv3Err assert_invariant(int x) {
    assert_line = __LINE__ + 1;
    DSV3_ASSERT(x == 1);
    return DSV3_OK;
}

static Dsv3Err raise_always(const char *what) {
    raise_line = __LINE__ + 1;
    DSV3_RAISE(DSV3_ERR_IO, "cannot read '%s'", what);
}

// DSV3_CALL_GOTO must reach the clean-up with `err` set and one frame added.
static Dsv3Err call_goto(int x) {
    Dsv3Err err = DSV3_OK;
    cleaned_up = 0;
    goto_line = __LINE__ + 1;
    DSV3_CALL_GOTO(err, done, check_positive(x));
    err = DSV3_OK;
done:
    cleaned_up = 1;
    return err;
}

static Dsv3Err check_goto(int x) {
    Dsv3Err err = DSV3_OK;
    cleaned_up = 0;
    check_goto_line = __LINE__ + 1;
    DSV3_CHECK_GOTO(err, done, x > 0, DSV3_ERR_CONFIG, "x = %d must be positive", x);
done:
    cleaned_up = 1;
    return err;
}

// Re-raises the current failure with more context, quoting its message: the pattern callers
// use to say where a value came from. The argument points into the record being rewritten.
static Dsv3Err wrap_with_context(int x) {
    Dsv3Err err = check_positive(x);
    if (err != DSV3_OK) DSV3_RAISE(err, "while reading layer %d: %s", 7, dsv3_error_message());
    return DSV3_OK;
}

// "  at <this file>:<line> in <func>()\n"
static void format_frame(char *out, size_t capacity, int line, const char *func) {
    snprintf(out, capacity, "  at %s:%d in %s()\n", __FILE__, line, func);
}

// ---------------------------------------------------------------------------------------------

static void test_success_leaves_the_record_empty(void **state) {
    (void)state;
    dsv3_error_clear();
    assert_int_equal(call_level1(5), DSV3_OK);
    assert_string_equal(dsv3_error_text(), "");
    assert_string_equal(dsv3_error_message(), "");
}

static void test_check_records_message_and_one_frame_per_level(void **state) {
    (void)state;
    assert_int_equal(call_level1(-3), DSV3_ERR_USAGE);
    char expected[1024], frame[256];
    snprintf(expected, sizeof expected, "usage error: x must be positive, not -3\n");
    format_frame(frame, sizeof frame, check_line, "check_positive");
    strcat(expected, frame);
    format_frame(frame, sizeof frame, call2_line, "call_level2");
    strcat(expected, frame);
    format_frame(frame, sizeof frame, call1_line, "call_level1");
    strcat(expected, frame);
    assert_string_equal(dsv3_error_text(), expected);
    assert_string_equal(dsv3_error_message(), "x must be positive, not -3");
    dsv3_error_clear();
}

static void test_assert_reports_internal_error_with_condition(void **state) {
    (void)state;
    assert_int_equal(assert_invariant(2), DSV3_ERR_INTERNAL);
    char expected[512], frame[256];
    format_frame(frame, sizeof frame, assert_line, "assert_invariant");
    snprintf(expected, sizeof expected, "internal error: assertion 'x == 1' failed\n%s", frame);
    assert_string_equal(dsv3_error_text(), expected);
    assert_string_equal(dsv3_error_message(), "assertion 'x == 1' failed");
    dsv3_error_clear();
    assert_int_equal(assert_invariant(1), DSV3_OK);
    assert_string_equal(dsv3_error_text(), "");
}

static void test_raise_fails_unconditionally(void **state) {
    (void)state;
    assert_int_equal(raise_always("weights.h5"), DSV3_ERR_IO);
    char expected[512], frame[256];
    format_frame(frame, sizeof frame, raise_line, "raise_always");
    snprintf(expected, sizeof expected, "I/O error: cannot read 'weights.h5'\n%s", frame);
    assert_string_equal(dsv3_error_text(), expected);
    dsv3_error_clear();
}

static void test_call_goto_runs_cleanup_and_adds_frame(void **state) {
    (void)state;
    assert_int_equal(call_goto(-1), DSV3_ERR_USAGE);
    assert_int_equal(cleaned_up, 1);
    char expected[1024], frame[256];
    snprintf(expected, sizeof expected, "usage error: x must be positive, not -1\n");
    format_frame(frame, sizeof frame, check_line, "check_positive");
    strcat(expected, frame);
    format_frame(frame, sizeof frame, goto_line, "call_goto");
    strcat(expected, frame);
    assert_string_equal(dsv3_error_text(), expected);
    dsv3_error_clear();

    // On success the clean-up runs too, and nothing is recorded.
    assert_int_equal(call_goto(1), DSV3_OK);
    assert_int_equal(cleaned_up, 1);
    assert_string_equal(dsv3_error_text(), "");
}

static void test_check_goto_runs_cleanup_with_message(void **state) {
    (void)state;
    assert_int_equal(check_goto(-2), DSV3_ERR_CONFIG);
    assert_int_equal(cleaned_up, 1);
    char expected[512], frame[256];
    format_frame(frame, sizeof frame, check_goto_line, "check_goto");
    snprintf(expected, sizeof expected, "config error: x = -2 must be positive\n%s", frame);
    assert_string_equal(dsv3_error_text(), expected);
    dsv3_error_clear();
    assert_int_equal(check_goto(2), DSV3_OK);
    assert_int_equal(cleaned_up, 1);
}

static void test_a_new_failure_replaces_the_old_record(void **state) {
    (void)state;
    assert_int_equal(call_level1(-1), DSV3_ERR_USAGE);
    assert_int_equal(raise_always("a"), DSV3_ERR_IO);
    assert_string_equal(dsv3_error_message(), "cannot read 'a'");
    assert_null(strstr(dsv3_error_text(), "x must be positive"));
    assert_null(strstr(dsv3_error_text(), "call_level1"));
    dsv3_error_clear();
}

static void test_raise_may_quote_the_current_message(void **state) {
    (void)state;
    assert_int_equal(wrap_with_context(-4), DSV3_ERR_USAGE);
    assert_string_equal(dsv3_error_message(), "while reading layer 7: x must be positive, not -4");
    const char *text = dsv3_error_text();
    assert_non_null(
        strstr(text, "usage error: while reading layer 7: x must be positive, not -4\n"));
    assert_non_null(strstr(text, "in wrap_with_context()"));
    dsv3_error_clear();

    // Quoting the whole text (message and frames) is just as safe.
    assert_int_equal(call_level1(-5), DSV3_ERR_USAGE);
    assert_int_equal(dsv3_error_raise(DSV3_ERR_MPI, __FILE__, __LINE__, __func__, "rank 3: %s",
                                      dsv3_error_text()),
                     DSV3_ERR_MPI);
    assert_true(strncmp(dsv3_error_message(), "rank 3: usage error: x must be positive, not -5\n",
                        strlen("rank 3: usage error: x must be positive, not -5\n")) == 0);
    dsv3_error_clear();
}

static void test_clear_forgets_the_record(void **state) {
    (void)state;
    assert_int_equal(call_level1(0), DSV3_ERR_USAGE);
    assert_true(strlen(dsv3_error_text()) > 0);
    dsv3_error_clear();
    assert_string_equal(dsv3_error_text(), "");
    assert_string_equal(dsv3_error_message(), "");
    // Clearing twice is harmless.
    dsv3_error_clear();
    assert_string_equal(dsv3_error_text(), "");
}

static void test_every_code_has_a_name(void **state) {
    (void)state;
    const struct {
        Dsv3Err code;
        const char *name;
    } names[] = {
        {DSV3_OK, "ok"},
        {DSV3_ERR_USAGE, "usage error"},
        {DSV3_ERR_CONFIG, "config error"},
        {DSV3_ERR_INTERNAL, "internal error"},
        {DSV3_ERR_IO, "I/O error"},
        {DSV3_ERR_MEMORY, "out of memory"},
        {DSV3_ERR_MPI, "MPI error"},
        {DSV3_ERR_TIMEOUT, "timeout"},
        {DSV3_ERR_BACKEND, "backend error"},
        {DSV3_ERR_LAUNCH, "launch error"},
        {DSV3_ERR_NUMERIC, "numeric error"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        assert_string_equal(dsv3_error_name(names[i].code), names[i].name);
    // A value outside the enum (e.g. a corrupted code from a peer) still has a printable name.
    assert_string_equal(dsv3_error_name((Dsv3Err)99), "unknown error");
}

static void test_trace_without_raise_records_only_the_frame(void **state) {
    (void)state;
    dsv3_error_clear();
    int line = __LINE__ + 1;
    assert_int_equal(dsv3_error_trace(DSV3_ERR_TIMEOUT, __FILE__, line, __func__),
                     DSV3_ERR_TIMEOUT);
    char frame[256];
    format_frame(frame, sizeof frame, line, __func__);
    assert_string_equal(dsv3_error_text(), frame);
    assert_string_equal(dsv3_error_message(), "");
    dsv3_error_clear();
}

static void test_long_message_is_cut_and_keeps_the_traceback(void **state) {
    (void)state;
    static char huge[LONG_MESSAGE_LENGTH + 1];
    memset(huge, 'm', LONG_MESSAGE_LENGTH);
    huge[LONG_MESSAGE_LENGTH] = '\0';
    int line = __LINE__ + 1;
    assert_int_equal(dsv3_error_raise(DSV3_ERR_CONFIG, __FILE__, line, "deep_function", "%s", huge),
                     DSV3_ERR_CONFIG);
    assert_int_equal(dsv3_error_trace(DSV3_ERR_CONFIG, __FILE__, line + 1, "its_caller"),
                     DSV3_ERR_CONFIG);
    const char *text = dsv3_error_text();
    size_t length = strlen(text);
    assert_true(length > 0);
    assert_true(length < LONG_MESSAGE_LENGTH);
    assert_true(strncmp(text, "config error: mmmm", strlen("config error: mmmm")) == 0);
    // Where the failure happened matters more than the tail of a huge message.
    char frame[256];
    snprintf(frame, sizeof frame, "  at %s:%d in deep_function()\n", __FILE__, line);
    assert_non_null(strstr(text, frame));
    snprintf(frame, sizeof frame, "  at %s:%d in its_caller()\n", __FILE__, line + 1);
    assert_non_null(strstr(text, frame));
    const char *message = dsv3_error_message();
    assert_true(strlen(message) < LONG_MESSAGE_LENGTH);
    assert_true(strlen(message) > 0);
    assert_int_equal(strspn(message, "m"), strlen(message));
    dsv3_error_clear();
}

static void test_deep_traceback_is_cut_without_overflow(void **state) {
    (void)state;
    assert_int_equal(check_positive(-1), DSV3_ERR_USAGE);
    for (int i = 0; i < DEEP_TRACE_FRAMES; i++)
        dsv3_error_trace(DSV3_ERR_USAGE, __FILE__, i, "recursive_step");
    const char *text = dsv3_error_text();
    size_t length = strlen(text);
    // 1000 frames of ~60 bytes do not fit; the record stops at its capacity.
    assert_true(length < (size_t)DEEP_TRACE_FRAMES * 40);
    assert_true(strncmp(text, "usage error: x must be positive, not -1\n",
                        strlen("usage error: x must be positive, not -1\n")) == 0);
    assert_non_null(strstr(text, "in check_positive()"));
    // Frames are kept whole, and the reader is told that some were dropped.
    assert_int_equal(text[length - 1], '\n');
    assert_non_null(strstr(text, "frames cut"));
    // Tracing more after the record is full changes nothing and stays in bounds.
    dsv3_error_trace(DSV3_ERR_USAGE, __FILE__, 1, "one_more");
    assert_int_equal(strlen(dsv3_error_text()), length);
    assert_string_equal(dsv3_error_message(), "x must be positive, not -1");
    dsv3_error_clear();
    // The record is usable again after a full one.
    assert_int_equal(raise_always("b"), DSV3_ERR_IO);
    assert_string_equal(dsv3_error_message(), "cannot read 'b'");
    dsv3_error_clear();
}

static void *fail_in_thread(void *arg) {
    (void)arg;
    (void)raise_always("thread file");
    return NULL;
}

static void test_record_is_per_thread(void **state) {
    (void)state;
    assert_int_equal(call_level1(-9), DSV3_ERR_USAGE);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, fail_in_thread, NULL), 0);
    assert_int_equal(pthread_join(thread, NULL), 0);
    // Another thread's failure neither replaced nor mixed into this thread's record.
    assert_string_equal(dsv3_error_message(), "x must be positive, not -9");
    assert_null(strstr(dsv3_error_text(), "thread file"));
    dsv3_error_clear();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_success_leaves_the_record_empty),
        cmocka_unit_test(test_check_records_message_and_one_frame_per_level),
        cmocka_unit_test(test_assert_reports_internal_error_with_condition),
        cmocka_unit_test(test_raise_fails_unconditionally),
        cmocka_unit_test(test_call_goto_runs_cleanup_and_adds_frame),
        cmocka_unit_test(test_check_goto_runs_cleanup_with_message),
        cmocka_unit_test(test_a_new_failure_replaces_the_old_record),
        cmocka_unit_test(test_raise_may_quote_the_current_message),
        cmocka_unit_test(test_clear_forgets_the_record),
        cmocka_unit_test(test_every_code_has_a_name),
        cmocka_unit_test(test_trace_without_raise_records_only_the_frame),
        cmocka_unit_test(test_long_message_is_cut_and_keeps_the_traceback),
        cmocka_unit_test(test_deep_traceback_is_cut_without_overflow),
        cmocka_unit_test(test_record_is_per_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
