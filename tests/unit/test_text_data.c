// Unit tests for text files and the "text" dataset: .txt / .jsonl / .json.gz reading, folder
// order (byte order of whole paths), malformed lines (fatal with file:line and the reason, or
// skipped and counted), replacements counted with the first file:line, and windows packed
// from BOS + document + EOS, read forward, skipped ahead, re-read from the start and wrapped.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "common/core/alloc.h"
#include "common/data/text_dataset.h"
#include "common/data/text_reader.h"

enum { PATH_CAPACITY = 4096, SEQ_LEN = 7, MAX_STREAM = 4096 };

static char temp_dir[PATH_CAPACITY];

static void path_of(char *out, const char *name) {
    int n = snprintf(out, PATH_CAPACITY, "%s/%s", temp_dir, name);
    assert_true(n > 0 && n < PATH_CAPACITY);
}

static void write_file(const char *name, const char *text) {
    char path[PATH_CAPACITY];
    path_of(path, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

static void write_gz(const char *name, const char *text) {
    char path[PATH_CAPACITY];
    path_of(path, name);
    gzFile f = gzopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(gzwrite(f, text, (unsigned)strlen(text)), (int)strlen(text));
    assert_int_equal(gzclose(f), Z_OK);
}

// A byte-level tokenizer whose every token is one printable ASCII byte (id = byte - 32), with
// BOS "<s>" = 95 and EOS "</s>" = 96 as special added tokens: ids are easy to predict.
static void write_tokenizer(void) {
    char path[PATH_CAPACITY];
    path_of(path, "tok");
    assert_int_equal(mkdir(path, 0777), 0);
    FILE *f = fopen(strcat(path, "/tokenizer.json"), "wb");
    assert_non_null(f);
    fputs("{\"added_tokens\": [{\"id\": 95, \"content\": \"<s>\", \"special\": true}, {\"id\": 96, "
          "\"content\": "
          "\"</s>\", \"special\": true}], \"normalizer\": null, \"pre_tokenizer\": {\"type\": "
          "\"ByteLevel\", "
          "\"add_prefix_space\": false, \"use_regex\": true}, \"post_processor\": null, "
          "\"decoder\": {\"type\": "
          "\"ByteLevel\"}, \"model\": {\"type\": \"BPE\", \"merges\": [], \"vocab\": {",
          f);
    for (int b = 32; b < 127; b++) {
        if (b == ' ')
            fprintf(f, "\"\\u0120\": 0");
        else if (b == '"' || b == '\\')
            fprintf(f, ", \"\\%c\": %d", b, b - 32);
        else
            fprintf(f, ", \"%c\": %d", b, b - 32);
    }
    fputs("}}}", f);
    assert_int_equal(fclose(f), 0);
    path_of(path, "tok/tokenizer_config.json");
    f = fopen(path, "wb");
    assert_non_null(f);
    fputs("{\"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}", f);
    assert_int_equal(fclose(f), 0);
}

static int setup_dir(void **state) {
    (void)state;
    const char *base = getenv("TMPDIR");
    int n = snprintf(temp_dir, sizeof temp_dir, "%s/dsv3_text_data_XXXXXX",
                     base && *base ? base : "/tmp");
    if (n < 0 || (size_t)n >= sizeof temp_dir || !mkdtemp(temp_dir)) return -1;
    char path[PATH_CAPACITY];
    path_of(path, "corpus");
    if (mkdir(path, 0777) != 0) return -1;
    path_of(path, "corpus/sub");
    if (mkdir(path, 0777) != 0) return -1;
    write_file("corpus/b.jsonl",
               "{\"text\": \"bb\", \"x\": [1, 2]}\n\n{\"text\": \"b\\u00e9\"}\r\n");
    write_gz("corpus/a.json.gz", "{\"text\": \"aaa\"}\n{\"text\": \"a\"}\n");
    write_file("corpus/sub/c.txt", "c c\n   \nlast line without newline");
    write_file("corpus/ignored.md", "not data\n");
    // Byte order of whole paths: "B.txt" < "a-b.txt" < "a.txt" < "a/b.txt" ('-' < '.' < '/'),
    // which sorting each folder level by name would not give.
    static const char *const order[] = {"order", "order/a"};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        path_of(path, order[i]);
        if (mkdir(path, 0777) != 0) return -1;
    }
    write_file("order/a/b.txt", "4\n");
    write_file("order/a.txt", "3\n");
    write_file("order/a-b.txt", "2\n");
    write_file("order/B.txt", "1\n");
    write_file("replaced.jsonl", "{\"text\": \"fine\"}\n{\"text\": \"a\\ud800b\\udc00\"}\n"
                                 "{\"text\": \"\\ud83d\\ude00\"}\n{\"text\": \"\\udfff\"}\n");
    write_file(
        "bad.jsonl",
        "{\"text\": \"ok\"}\n[1, 2]\n{\"body\": \"x\"}\n{\"text\": \"y\"} trailing\n{\"text\n");
    write_tokenizer();
    return 0;
}

static int teardown_dir(void **state) {
    (void)state;
    char command[PATH_CAPACITY + 16];
    snprintf(command, sizeof command, "rm -rf '%s'", temp_dir);
    return system(command);
}

// Reads every document of the reader into one "|"-joined string.
static void read_all(Dsv3TextReader *r, char *out, size_t cap) {
    out[0] = '\0';
    for (;;) {
        const char *text;
        size_t length;
        int done;
        if (dsv3_text_reader_next(r, &text, &length, &done) != DSV3_OK)
            fail_msg("%s", dsv3_error_text());
        if (done) break;
        strncat(out, text, length < cap - strlen(out) - 2 ? length : cap - strlen(out) - 2);
        strcat(out, "|");
    }
}

static void test_reader_formats_and_order(void **state) {
    (void)state;
    char corpus[PATH_CAPACITY], all[256];
    path_of(corpus, "corpus");
    const char *paths[] = {corpus};
    Dsv3TextReader *r = NULL;
    assert_int_equal(dsv3_text_reader_open(&r, paths, 1, "text", 0), DSV3_OK);
    assert_int_equal(dsv3_text_reader_file_count(r), 3); // ignored.md is not data
    read_all(r, all, sizeof all);
    // Sorted by path: a.json.gz, b.jsonl, sub/c.txt; blank lines and "\r" dropped.
    assert_string_equal(all, "aaa|a|bb|b\xc3\xa9|c c|last line without newline|");
    assert_int_equal(dsv3_text_reader_documents(r), 6);
    int64_t done, total;
    dsv3_text_reader_progress(r, &done, &total);
    assert_true(total > 0 && done == total);
    assert_int_equal(dsv3_text_reader_rewind(r), DSV3_OK);
    read_all(r, all, sizeof all);
    assert_string_equal(all, "aaa|a|bb|b\xc3\xa9|c c|last line without newline|");
    dsv3_text_reader_close(r);
}

static void test_reader_folder_order(void **state) {
    (void)state;
    char folder[PATH_CAPACITY], all[256];
    path_of(folder, "order");
    const char *paths[] = {folder};
    Dsv3TextReader *r = NULL;
    assert_int_equal(dsv3_text_reader_open(&r, paths, 1, "text", 0), DSV3_OK);
    read_all(r, all, sizeof all);
    assert_string_equal(all, "1|2|3|4|");
    dsv3_text_reader_close(r);
}

// Lone surrogate escapes become U+FFFD, counted with the file:line of the first; the caller's
// own replacements (the tokenizer's) add to the same count.
static void test_reader_replacements(void **state) {
    (void)state;
    char path[PATH_CAPACITY], all[256], want[PATH_CAPACITY + 32];
    path_of(path, "replaced.jsonl");
    const char *paths[] = {path};
    Dsv3TextReader *r = NULL;
    assert_int_equal(dsv3_text_reader_open(&r, paths, 1, "text", 0), DSV3_OK);
    assert_string_equal(dsv3_text_reader_first_replacement(r), "");
    read_all(r, all, sizeof all);
    assert_string_equal(all, "fine|a\xef\xbf\xbd"
                             "b\xef\xbf\xbd|\xf0\x9f\x98\x80|\xef\xbf\xbd|");
    assert_int_equal(dsv3_text_reader_replacements(r), 3);
    snprintf(want, sizeof want, "%s:2", path);
    assert_string_equal(dsv3_text_reader_first_replacement(r), want);
    dsv3_text_reader_count_replacements(r, 2);
    assert_int_equal(dsv3_text_reader_replacements(r), 5);
    assert_string_equal(dsv3_text_reader_first_replacement(r), want);
    dsv3_text_reader_close(r);
}

static void test_reader_malformed_lines(void **state) {
    (void)state;
    char bad[PATH_CAPACITY], all[256];
    path_of(bad, "bad.jsonl");
    const char *paths[] = {bad};
    Dsv3TextReader *r = NULL;
    // Fatal: the first malformed line, named file:line.
    assert_int_equal(dsv3_text_reader_open(&r, paths, 1, "text", 0), DSV3_OK);
    const char *text;
    size_t length;
    int done;
    assert_int_equal(dsv3_text_reader_next(r, &text, &length, &done), DSV3_OK);
    assert_int_equal(dsv3_text_reader_next(r, &text, &length, &done), DSV3_ERR_IO);
    assert_non_null(strstr(dsv3_error_message(), "bad.jsonl:2: not a JSON object"));
    dsv3_text_reader_close(r);
    // Malformed JSON that a lenient parser would take: file:line and the reason.
    write_file("lenient.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"a\",}\n");
    char lenient[PATH_CAPACITY];
    path_of(lenient, "lenient.jsonl");
    const char *lenient_paths[] = {lenient};
    assert_int_equal(dsv3_text_reader_open(&r, lenient_paths, 1, "text", 0), DSV3_OK);
    assert_int_equal(dsv3_text_reader_next(r, &text, &length, &done), DSV3_OK);
    assert_int_equal(dsv3_text_reader_next(r, &text, &length, &done), DSV3_ERR_IO);
    assert_non_null(strstr(dsv3_error_message(),
                           "lenient.jsonl:2: not a JSON value: a trailing comma at column 13"));
    dsv3_text_reader_close(r);
    // Skipped and counted.
    assert_int_equal(dsv3_text_reader_open(&r, paths, 1, "text", 1), DSV3_OK);
    read_all(r, all, sizeof all);
    assert_string_equal(all, "ok|");
    assert_int_equal(dsv3_text_reader_bad_lines(r), 4);
    dsv3_text_reader_close(r);
    // Another field.
    assert_int_equal(dsv3_text_reader_open(&r, paths, 1, "body", 1), DSV3_OK);
    read_all(r, all, sizeof all);
    assert_string_equal(all, "x|");
    dsv3_text_reader_close(r);
    // Paths that are not data.
    const char *missing[] = {"/nonexistent/file.jsonl"};
    assert_int_equal(dsv3_text_reader_open(&r, missing, 1, "text", 0), DSV3_ERR_IO);
    char other[PATH_CAPACITY];
    path_of(other, "corpus/ignored.md");
    const char *unknown[] = {other};
    assert_int_equal(dsv3_text_reader_open(&r, unknown, 1, "text", 0), DSV3_ERR_IO);
    assert_non_null(strstr(dsv3_error_message(), "not a text file of a known format"));
}

// The expected stream: BOS + bytes - 32 + EOS per document of the corpus, in order.
static size_t expected_stream(int32_t *ids) {
    static const char *const docs[] = {"aaa",       "a",   "bb",
                                       "b\xc3\xa9", "c c", "last line without newline"};
    size_t n = 0;
    for (size_t d = 0; d < sizeof docs / sizeof docs[0]; d++) {
        ids[n++] = 95;
        for (const char *c = docs[d]; *c; c++)
            if ((unsigned char)*c < 127) ids[n++] = *c - 32; // é has no token here: dropped
        ids[n++] = 96;
    }
    return n;
}

static void test_dataset_windows(void **state) {
    (void)state;
    char corpus[PATH_CAPACITY], tok[PATH_CAPACITY];
    path_of(corpus, "corpus");
    path_of(tok, "tok");
    int32_t stream[MAX_STREAM];
    size_t n = expected_stream(stream);
    Dsv3TextDataset *d = NULL;
    assert_int_equal(dsv3_text_dataset_open(&d, corpus, tok, 97, SEQ_LEN), DSV3_OK);
    assert_int_equal(dsv3_text_dataset_eos_id(d), 96);
    assert_int_equal(dsv3_text_dataset_bos_id(d), 95);
    // Windows 0..19 in order: the stream, repeated when the files end (the buffer carries on).
    int32_t w[SEQ_LEN + 1], first5[SEQ_LEN + 1];
    for (int64_t k = 0; k < 20; k++) {
        assert_int_equal(dsv3_text_dataset_window(d, k, w), DSV3_OK);
        for (int i = 0; i <= SEQ_LEN; i++) {
            size_t at = ((size_t)k * (SEQ_LEN + 1) + (size_t)i) % n;
            if (w[i] != stream[at])
                fail_msg("window %lld token %d: %d, expected %d", (long long)k, i, w[i],
                         stream[at]);
        }
        if (k == 5) memcpy(first5, w, sizeof w);
        assert_int_equal(dsv3_text_dataset_position(d), k + 1);
    }
    // Back to an earlier window: read again from the start, same tokens.
    assert_int_equal(dsv3_text_dataset_window(d, 5, w), DSV3_OK);
    assert_memory_equal(w, first5, sizeof w);
    dsv3_text_dataset_close(d);
    // Straight to window 5 (a resume): the same tokens as reading up to it.
    assert_int_equal(dsv3_text_dataset_open(&d, corpus, tok, 97, SEQ_LEN), DSV3_OK);
    assert_int_equal(dsv3_text_dataset_window(d, 5, w), DSV3_OK);
    assert_memory_equal(w, first5, sizeof w);
    assert_int_equal(dsv3_text_dataset_position(d), 6);
    dsv3_text_dataset_close(d);
}

static void test_dataset_errors(void **state) {
    (void)state;
    char corpus[PATH_CAPACITY], tok[PATH_CAPACITY], empty[PATH_CAPACITY];
    path_of(corpus, "corpus");
    path_of(tok, "tok");
    Dsv3TextDataset *d = NULL;
    assert_int_equal(dsv3_text_dataset_open(&d, corpus, tok, 50, SEQ_LEN), DSV3_ERR_CONFIG);
    assert_non_null(strstr(dsv3_error_message(), "set --model.vocab_size to at least 97"));
    assert_int_equal(dsv3_text_dataset_open(&d, "", tok, 97, SEQ_LEN), DSV3_ERR_CONFIG);
    assert_non_null(strstr(dsv3_error_message(), "training.dataset_path"));
    // Files with no document at all.
    write_file("empty.jsonl", "\n\n");
    path_of(empty, "empty.jsonl");
    assert_int_equal(dsv3_text_dataset_open(&d, empty, tok, 97, SEQ_LEN), DSV3_OK);
    int32_t w[SEQ_LEN + 1];
    assert_int_equal(dsv3_text_dataset_window(d, 0, w), DSV3_ERR_IO);
    assert_non_null(strstr(dsv3_error_message(), "holds no document"));
    dsv3_text_dataset_close(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reader_formats_and_order),
        cmocka_unit_test(test_reader_folder_order),
        cmocka_unit_test(test_reader_replacements),
        cmocka_unit_test(test_reader_malformed_lines),
        cmocka_unit_test(test_dataset_windows),
        cmocka_unit_test(test_dataset_errors),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
