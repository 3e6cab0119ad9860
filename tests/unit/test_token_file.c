// Unit tests for token files: windows, wrapping, and every malformed file, on files the test
// writes into a fresh temporary folder.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/core/alloc.h"
#include "common/data/token_file.h"

enum { PATH_CAPACITY = 4096 };

static char temp_dir[PATH_CAPACITY];

static int setup_dir(void **state) {
    (void)state;
    const char *base = getenv("TMPDIR");
    int n = snprintf(temp_dir, sizeof temp_dir, "%s/dsv3_token_file_XXXXXX",
                     base && *base ? base : "/tmp");
    if (n < 0 || (size_t)n >= sizeof temp_dir) return -1;
    return mkdtemp(temp_dir) ? 0 : -1;
}

static int teardown_dir(void **state) {
    (void)state;
    return rmdir(temp_dir);
}

// Writes `count` ids as little-endian uint32 (byte by byte, whatever the host's order), then
// `extra` stray bytes; returns the path in `path`.
static void write_tokens(char *path, const char *name, const uint32_t *ids, size_t count,
                         size_t extra) {
    int n = snprintf(path, PATH_CAPACITY, "%s/%s", temp_dir, name);
    assert_true(n > 0 && n < PATH_CAPACITY);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (size_t i = 0; i < count; i++) {
        unsigned char b[4] = {(unsigned char)ids[i], (unsigned char)(ids[i] >> 8),
                              (unsigned char)(ids[i] >> 16), (unsigned char)(ids[i] >> 24)};
        assert_int_equal(fwrite(b, 1, 4, f), 4);
    }
    for (size_t i = 0; i < extra; i++)
        assert_int_equal(fputc(0, f), 0);
    assert_int_equal(fclose(f), 0);
}

static void expect_message_contains(const char *needle) {
    const char *msg = dsv3_error_message();
    if (strstr(msg, needle) == NULL) fail_msg("message '%s' does not name '%s'", msg, needle);
}

static Dsv3TokenFile *open_or_fail(const char *path, int64_t vocab, int64_t seq_len) {
    Dsv3TokenFile *f = NULL;
    if (dsv3_token_file_open(&f, path, vocab, seq_len) != DSV3_OK)
        fail_msg("open %s: %s", path, dsv3_error_text());
    return f;
}

// Windows of seq_len + 1 consecutive ids, without overlap, wrapping past the end; the tail
// shorter than a window is never read.
static void test_windows_and_wrap(void **state) {
    (void)state;
    enum {
        SEQ_LEN = 4,
        WINDOW = SEQ_LEN + 1,
        WINDOWS = 3,
        TAIL = 2,
        COUNT = WINDOWS * WINDOW + TAIL
    };
    uint32_t ids[COUNT];
    // Large ids exercise every byte of the little-endian encoding.
    for (uint32_t i = 0; i < COUNT; i++)
        ids[i] = i * 0x01010101u % 0x7fffffffu;
    char path[PATH_CAPACITY];
    write_tokens(path, "stream.bin", ids, COUNT, 0);
    Dsv3TokenFile *f = open_or_fail(path, (int64_t)1 << 31, SEQ_LEN);
    assert_int_equal(dsv3_token_file_num_tokens(f), COUNT);
    assert_int_equal(dsv3_token_file_num_windows(f), WINDOWS);
    int32_t tokens[WINDOW];
    for (int64_t w = 0; w < 3 * WINDOWS + 1; w++) {
        if (dsv3_token_file_window(f, w, tokens) != DSV3_OK)
            fail_msg("window %lld: %s", (long long)w, dsv3_error_text());
        int64_t start = (w % WINDOWS) * WINDOW;
        for (int i = 0; i < WINDOW; i++)
            assert_int_equal(tokens[i], (int32_t)ids[start + i]);
    }
    assert_int_equal(dsv3_token_file_window(f, -1, tokens), DSV3_ERR_USAGE);
    dsv3_error_clear();
    dsv3_token_file_close(f);
    dsv3_token_file_close(NULL);
    unlink(path);
}

// A file of exactly one window is enough.
static void test_exactly_one_window(void **state) {
    (void)state;
    uint32_t ids[] = {5, 6, 7};
    char path[PATH_CAPACITY];
    write_tokens(path, "one.bin", ids, 3, 0);
    Dsv3TokenFile *f = open_or_fail(path, 8, 2);
    assert_int_equal(dsv3_token_file_num_windows(f), 1);
    int32_t tokens[3];
    assert_int_equal(dsv3_token_file_window(f, 5, tokens), DSV3_OK);
    assert_int_equal(tokens[0], 5);
    assert_int_equal(tokens[2], 7);
    dsv3_token_file_close(f);
    unlink(path);
}

static void test_truncated_file(void **state) {
    (void)state;
    uint32_t ids[] = {1, 2, 3, 4, 5, 6};
    char path[PATH_CAPACITY];
    write_tokens(path, "truncated.bin", ids, 6, 3);
    Dsv3TokenFile *f = (Dsv3TokenFile *)&f; // must be reset to NULL on failure
    assert_int_equal(dsv3_token_file_open(&f, path, 100, 2), DSV3_ERR_IO);
    assert_null(f);
    expect_message_contains(path);
    expect_message_contains("27 bytes");
    expect_message_contains("multiple of 4");
    dsv3_error_clear();
    unlink(path);
}

static void test_too_short_file(void **state) {
    (void)state;
    uint32_t ids[] = {1, 2, 3, 4};
    char path[PATH_CAPACITY];
    write_tokens(path, "short.bin", ids, 4, 0);
    Dsv3TokenFile *f = NULL;
    assert_int_equal(dsv3_token_file_open(&f, path, 100, 4), DSV3_ERR_IO);
    expect_message_contains(path);
    expect_message_contains("4 tokens");
    expect_message_contains("5 tokens");
    dsv3_error_clear();
    // An empty file too.
    write_tokens(path, "short.bin", ids, 0, 0);
    assert_int_equal(dsv3_token_file_open(&f, path, 100, 1), DSV3_ERR_IO);
    expect_message_contains("0 tokens");
    dsv3_error_clear();
    unlink(path);
}

static void test_out_of_range_token(void **state) {
    (void)state;
    enum { VOCAB = 1000 };
    uint32_t ids[] = {1, 2, 3, 4, 5, 6, 7, VOCAB, 9};
    char path[PATH_CAPACITY];
    write_tokens(path, "range.bin", ids, 9, 0);
    Dsv3TokenFile *f = open_or_fail(path, VOCAB, 2);
    int32_t tokens[3];
    assert_int_equal(dsv3_token_file_window(f, 0, tokens), DSV3_OK);
    assert_int_equal(dsv3_token_file_window(f, 1, tokens), DSV3_OK);
    // Window 2 holds ids 6..8; the id 1000 is the 8th token, at byte 28.
    assert_int_equal(dsv3_token_file_window(f, 2, tokens), DSV3_ERR_IO);
    expect_message_contains(path);
    expect_message_contains("byte offset 28");
    expect_message_contains("1000");
    expect_message_contains("model.vocab_size");
    dsv3_error_clear();
    dsv3_token_file_close(f);

    // The largest uint32 is reported as an unsigned value.
    ids[7] = UINT32_MAX;
    write_tokens(path, "range.bin", ids, 9, 0);
    f = open_or_fail(path, VOCAB, 2);
    assert_int_equal(dsv3_token_file_window(f, 2, tokens), DSV3_ERR_IO);
    expect_message_contains("4294967295");
    dsv3_error_clear();
    dsv3_token_file_close(f);
    unlink(path);
}

static void test_open_errors(void **state) {
    (void)state;
    char path[PATH_CAPACITY];
    int n = snprintf(path, sizeof path, "%s/missing.bin", temp_dir);
    assert_true(n > 0 && (size_t)n < sizeof path);
    Dsv3TokenFile *f = NULL;
    assert_int_equal(dsv3_token_file_open(&f, path, 100, 4), DSV3_ERR_IO);
    expect_message_contains(path);
    dsv3_error_clear();
    assert_int_equal(dsv3_token_file_open(&f, temp_dir, 100, 4), DSV3_ERR_IO);
    expect_message_contains("not a regular file");
    dsv3_error_clear();
    assert_int_equal(dsv3_token_file_open(&f, "", 100, 4), DSV3_ERR_CONFIG);
    expect_message_contains("training.dataset_path");
    dsv3_error_clear();

    uint32_t ids[] = {1, 2, 3};
    write_tokens(path, "ok.bin", ids, 3, 0);
    assert_int_equal(dsv3_token_file_open(&f, path, 0, 2), DSV3_ERR_CONFIG);
    expect_message_contains("model.vocab_size");
    dsv3_error_clear();
    assert_int_equal(dsv3_token_file_open(&f, path, ((int64_t)1 << 31) + 1, 2), DSV3_ERR_CONFIG);
    dsv3_error_clear();
    assert_int_equal(dsv3_token_file_open(&f, path, 100, 0), DSV3_ERR_CONFIG);
    expect_message_contains("training.seq_len");
    dsv3_error_clear();
    assert_int_equal(dsv3_token_file_open(NULL, path, 100, 2), DSV3_ERR_USAGE);
    dsv3_error_clear();
    unlink(path);
    assert_int_equal(dsv3_alloc_current_bytes(), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_windows_and_wrap),   cmocka_unit_test(test_exactly_one_window),
        cmocka_unit_test(test_truncated_file),     cmocka_unit_test(test_too_short_file),
        cmocka_unit_test(test_out_of_range_token), cmocka_unit_test(test_open_errors),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
