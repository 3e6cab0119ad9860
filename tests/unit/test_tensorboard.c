// Unit tests for the TensorBoard writer: CRC-32C against published check values, the TFRecord
// framing and the Event/Summary encoding of a written file, decoded here field by field.
// (tests/e2e/test_metrics.sh reads real runs' files with TensorBoard's own reader.)
#include <dirent.h>
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
#include "common/train/tensorboard.h"

enum { PATH_CAPACITY = 4096, FILE_CAPACITY = 1 << 16 };

static char temp_dir[PATH_CAPACITY];

static int setup_dir(void **state) {
    (void)state;
    const char *base = getenv("TMPDIR");
    int n = snprintf(temp_dir, sizeof temp_dir, "%s/dsv3_tb_XXXXXX", base && *base ? base : "/tmp");
    if (n < 0 || (size_t)n >= sizeof temp_dir) return -1;
    return mkdtemp(temp_dir) ? 0 : -1;
}

static int teardown_dir(void **state) {
    (void)state;
    DIR *d = opendir(temp_dir);
    if (d) {
        struct dirent *e;
        char path[2 * PATH_CAPACITY];
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.') continue;
            snprintf(path, sizeof path, "%s/%s", temp_dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    return rmdir(temp_dir);
}

// CRC-32C check values: RFC 3720 (iSCSI) appendix B.4 and the usual "123456789".
static void test_crc32c_known_values(void **state) {
    (void)state;
    assert_int_equal(dsv3_crc32c("123456789", 9), 0xE3069283u);
    unsigned char zeros[32] = {0}, ones[32], rising[32];
    for (int i = 0; i < 32; i++) {
        ones[i] = 0xFF;
        rising[i] = (unsigned char)i;
    }
    assert_int_equal(dsv3_crc32c(zeros, 32), 0x8A9136AAu);
    assert_int_equal(dsv3_crc32c(ones, 32), 0x62A8AB43u);
    assert_int_equal(dsv3_crc32c(rising, 32), 0x46DD794Eu);
    assert_int_equal(dsv3_crc32c("", 0), 0u);
}

// TFRecord's mask: rotate right by 15, add 0xa282ead8.
static void test_masked_crc(void **state) {
    (void)state;
    assert_int_equal(dsv3_crc32c_masked("", 0), 0xa282ead8u);
    uint32_t c = 0xE3069283u;
    assert_int_equal(dsv3_crc32c_masked("123456789", 9), ((c >> 15) | (c << 17)) + 0xa282ead8u);
}

static uint64_t le(const unsigned char *p, int bytes) {
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t varint(const unsigned char **p) {
    uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
        unsigned char b = *(*p)++;
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) return v;
    }
}

// Splits a file into records, checking both CRCs of each; returns the record count.
static int read_records(const unsigned char *file, size_t size, const unsigned char **data,
                        size_t *lengths, int capacity) {
    size_t at = 0;
    int n = 0;
    while (at < size) {
        assert_true(at + 12 <= size);
        uint64_t length = le(file + at, 8);
        assert_int_equal(le(file + at + 8, 4), dsv3_crc32c_masked(file + at, 8));
        assert_true(at + 16 + length <= size);
        assert_int_equal(le(file + at + 12 + length, 4),
                         dsv3_crc32c_masked(file + at + 12, length));
        assert_true(n < capacity);
        data[n] = file + at + 12;
        lengths[n++] = length;
        at += 16 + length;
    }
    return n;
}

static size_t read_file(const char *path, unsigned char *buf) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t n = fread(buf, 1, FILE_CAPACITY, f);
    fclose(f);
    return n;
}

static void test_event_file_decodes(void **state) {
    (void)state;
    Dsv3TbWriter *w = NULL;
    assert_int_equal(dsv3_tb_open(&w, temp_dir), DSV3_OK);
    assert_non_null(strstr(dsv3_tb_path(w), "tfevents"));
    const char *tags[] = {"loss", "expert_load/layer_1/max_over_mean"};
    const double values[] = {1.5, 0.25};
    assert_int_equal(dsv3_tb_scalars(w, 300, tags, values, 2), DSV3_OK);
    assert_int_equal(dsv3_tb_scalars(w, 301, tags, values, 1), DSV3_OK);
    char path[PATH_CAPACITY];
    snprintf(path, sizeof path, "%s", dsv3_tb_path(w));
    dsv3_tb_close(w);

    static unsigned char file[FILE_CAPACITY];
    size_t size = read_file(path, file);
    const unsigned char *rec[4];
    size_t len[4];
    assert_int_equal(read_records(file, size, rec, len, 4), 3);

    // Record 0: wall_time (field 1, fixed64), file_version (field 3) "brain.Event:2".
    const unsigned char *p = rec[0];
    assert_int_equal(*p++, 0x09);
    p += 8;
    assert_int_equal(*p++, 0x1A);
    assert_int_equal(varint(&p), 13);
    assert_memory_equal(p, "brain.Event:2", 13);
    assert_ptr_equal(p + 13, rec[0] + len[0]);

    // Record 1: wall_time, step 300 (field 2, varint), summary (field 5) of two values, each a
    // tag (field 1) and simple_value (field 2, fixed32 float).
    p = rec[1];
    assert_int_equal(*p++, 0x09);
    p += 8;
    assert_int_equal(*p++, 0x10);
    assert_int_equal(varint(&p), 300);
    assert_int_equal(*p++, 0x2A);
    uint64_t summary_len = varint(&p);
    const unsigned char *summary_end = p + summary_len;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(*p++, 0x0A);
        uint64_t value_len = varint(&p);
        const unsigned char *value_end = p + value_len;
        assert_int_equal(*p++, 0x0A);
        uint64_t tag_len = varint(&p);
        assert_int_equal(tag_len, strlen(tags[i]));
        assert_memory_equal(p, tags[i], tag_len);
        p += tag_len;
        assert_int_equal(*p++, 0x15);
        float f;
        uint32_t bits = (uint32_t)le(p, 4);
        memcpy(&f, &bits, sizeof f);
        assert_true(f == (float)values[i]);
        p += 4;
        assert_ptr_equal(p, value_end);
    }
    assert_ptr_equal(p, summary_end);
    assert_ptr_equal(p, rec[1] + len[1]);
}

static void test_open_in_missing_folder_fails(void **state) {
    (void)state;
    char missing[PATH_CAPACITY + 16];
    snprintf(missing, sizeof missing, "%s/not/here", temp_dir);
    Dsv3TbWriter *w = NULL;
    assert_int_equal(dsv3_tb_open(&w, missing), DSV3_ERR_IO);
    assert_null(w);
    assert_non_null(strstr(dsv3_error_message(), "not/here"));
}

static void test_no_leaks(void **state) {
    (void)state;
    assert_int_equal(dsv3_alloc_current_bytes(), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c_known_values),
        cmocka_unit_test(test_masked_crc),
        cmocka_unit_test(test_event_file_decodes),
        cmocka_unit_test(test_open_in_missing_folder_fails),
        cmocka_unit_test(test_no_leaks),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
