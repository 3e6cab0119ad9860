// Unit tests for the tokenizer (BPE merges in both JSON forms and rank order, added tokens,
// UTF-8 clean-up, BOS/EOS, decode, and every unsupported tokenizer.json feature named by its
// JSON path), on small tokenizers the test writes into a fresh temporary folder. Exactness
// against the `tokenizers` library is tests/tokenizer/exactness.py.
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
#include "common/data/tokenizer.h"

enum { PATH_CAPACITY = 4096, JSON_CAPACITY = 8192 };

static char temp_dir[PATH_CAPACITY];

static int setup_dir(void **state) {
    (void)state;
    const char *base = getenv("TMPDIR");
    int n = snprintf(temp_dir, sizeof temp_dir, "%s/dsv3_tokenizer_XXXXXX",
                     base && *base ? base : "/tmp");
    if (n < 0 || (size_t)n >= sizeof temp_dir) return -1;
    return mkdtemp(temp_dir) ? 0 : -1;
}

static void path_of(char *out, const char *name) {
    int n = snprintf(out, PATH_CAPACITY, "%s/%s", temp_dir, name);
    assert_true(n > 0 && n < PATH_CAPACITY);
}

static int teardown_dir(void **state) {
    (void)state;
    char path[PATH_CAPACITY];
    path_of(path, "tokenizer.json");
    unlink(path);
    path_of(path, "tokenizer_config.json");
    unlink(path);
    return rmdir(temp_dir);
}

static void write_file(const char *name, const char *text) {
    char path[PATH_CAPACITY];
    path_of(path, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

// The parts of a tokenizer.json; NULL takes the default.
typedef struct {
    const char *normalizer, *pre_tokenizer, *model_type, *model_extra, *merges, *added, *post,
        *decoder;
} Parts;

// Vocabulary: a b c ab abc aa Ġ (byte 0x20) x and the bytes of U+FFFD; ids 0..10.
static const char VOCAB[] =
    "{\"a\": 0, \"b\": 1, \"c\": 2, \"ab\": 3, \"abc\": 4, \"aa\": 5, \"\\u0120\": 6, "
    "\"x\": 7, \"\\u00ef\": 8, \"\\u00bf\": 9, \"\\u00bd\": 10}";

static void write_tokenizer(const Parts *p) {
    char json[JSON_CAPACITY];
    int n = snprintf(
        json, sizeof json,
        "{\"version\": \"1.0\", \"truncation\": null, \"padding\": null, \"added_tokens\": %s, "
        "\"normalizer\": %s, \"pre_tokenizer\": %s, \"post_processor\": %s, \"decoder\": %s, "
        "\"model\": {\"type\": \"%s\", \"dropout\": null, \"unk_token\": null, %s \"vocab\": %s, "
        "\"merges\": %s}}",
        p->added ? p->added
                 : "[{\"id\": 20, \"content\": \"<s>\", \"special\": true, \"normalized\": false}, "
                   "{\"id\": 21, \"content\": \"<s>x\", \"special\": false, \"normalized\": true}]",
        p->normalizer ? p->normalizer : "{\"type\": \"Sequence\", \"normalizers\": []}",
        p->pre_tokenizer
            ? p->pre_tokenizer
            : "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", "
              "\"pattern\": {\"Regex\": \"\\\\s+|[a-z]+\"}, \"behavior\": \"Isolated\", "
              "\"invert\": false}, {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
              "\"use_regex\": false}]}",
        p->post ? p->post : "{\"type\": \"ByteLevel\", \"trim_offsets\": false}",
        p->decoder ? p->decoder : "{\"type\": \"ByteLevel\"}",
        p->model_type ? p->model_type : "BPE", p->model_extra ? p->model_extra : "", VOCAB,
        p->merges ? p->merges : "[\"a b\", \"ab c\", \"a a\"]");
    assert_true(n > 0 && n < JSON_CAPACITY);
    write_file("tokenizer.json", json);
    write_file("tokenizer_config.json",
               "{\"bos_token\": \"<s>\", \"eos_token\": {\"__type\": \"AddedToken\", "
               "\"content\": \"c\"}, \"add_bos_token\": true}");
}

static Dsv3Tokenizer *load_ok(const Parts *p) {
    write_tokenizer(p);
    Dsv3Tokenizer *t = NULL;
    if (dsv3_tokenizer_load(&t, temp_dir) != DSV3_OK) fail_msg("load: %s", dsv3_error_text());
    return t;
}

// Encodes `text` and compares with the expected ids (terminated by -1).
static void expect_ids(Dsv3Tokenizer *t, const char *text, size_t length, const int32_t *want) {
    Dsv3TokenIds ids = {0};
    assert_int_equal(dsv3_tokenizer_encode(t, text, length, &ids), DSV3_OK);
    size_t n = 0;
    while (want[n] >= 0)
        n++;
    if (ids.count != n) fail_msg("'%.*s': %zu ids, expected %zu", (int)length, text, ids.count, n);
    for (size_t i = 0; i < n; i++)
        if (ids.ids[i] != want[i])
            fail_msg("'%.*s': id %zu is %d, expected %d", (int)length, text, i, ids.ids[i],
                     want[i]);
    dsv3_token_ids_free(&ids);
}

#define EXPECT(t, text, ...)                                                                       \
    expect_ids((t), (text), sizeof(text) - 1, (const int32_t[]){__VA_ARGS__, -1})

static void test_merges_in_rank_order(void **state) {
    (void)state;
    // Both JSON forms of merges give the same tokenizer.
    for (int form = 0; form < 2; form++) {
        Parts p = {.merges = form ? "[[\"a\", \"b\"], [\"ab\", \"c\"], [\"a\", \"a\"]]" : NULL};
        Dsv3Tokenizer *t = load_ok(&p);
        EXPECT(t, "abc", 4);
        EXPECT(t, "cab", 2, 3);
        EXPECT(t, "aab", 0, 3); // "a b" (rank 0) beats "a a" (rank 2)
        EXPECT(t, "aaa", 5, 0); // equal ranks: leftmost first
        EXPECT(t, "ab ab", 3, 6, 3);
        EXPECT(t, "zab", 3); // 'z' has no token: dropped, as tokenizers does without unk_token
        assert_int_equal(dsv3_tokenizer_vocab_size(t), 22);
        dsv3_tokenizer_free(t);
    }
}

static void test_ignore_merges(void **state) {
    (void)state;
    // "abc" is in the vocabulary: with ignore_merges it is taken whole even without a merge path.
    Parts p = {.model_extra = "\"ignore_merges\": true,", .merges = "[\"a b\"]"};
    Dsv3Tokenizer *t = load_ok(&p);
    EXPECT(t, "abc", 4);
    EXPECT(t, "abcab", 3, 2, 3); // not in the vocabulary whole: merged
    dsv3_tokenizer_free(t);
}

// Oniguruma's meaning of escapes and Unicode classes: a split there gives "a" "a" (ids 0 0);
// none gives one pre-token whose middle bytes have no token, so "a a" merges (id 5).
static void test_oniguruma_semantics(void **state) {
    (void)state;
    static const char *const split[] = {
        "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": "
        "{\"Regex\": "
        "\"\\\\p{S}+\"}, \"behavior\": \"Isolated\"}, {\"type\": \"ByteLevel\", \"use_regex\": "
        "false}]}",
        "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": "
        "{\"Regex\": "
        "\"\\\\s+\"}, \"behavior\": \"Removed\"}, {\"type\": \"ByteLevel\", \"use_regex\": "
        "false}]}",
    };
    Dsv3Tokenizer *t = load_ok(&(Parts){.pre_tokenizer = split[0]});
    EXPECT(t,
           "a\xf0\x9f\x9f\x99"
           "a",
           0, 0); // U+1F7D9, a symbol since Unicode 15
    EXPECT(t,
           "a\xe2\x82\xac"
           "a",
           0, 0); // U+20AC, a symbol all along
    EXPECT(t,
           "a\xf0\x9f\xa2\xba"
           "a",
           0, 0); // U+1F8BA, a symbol since Unicode 16
    EXPECT(t,
           "a\xf0\x9f\x9f\x9a"
           "a",
           5); // U+1F7DA, unassigned in Unicode 16: no split
    dsv3_tokenizer_free(t);
    t = load_ok(&(Parts){.pre_tokenizer = split[1]});
    EXPECT(t,
           "a\xe3\x80\x80"
           "a",
           0, 0); // U+3000 is White_Space: \\s
    EXPECT(t,
           "a\xe1\xa0\x8e"
           "a",
           5); // U+180E is not White_Space (PCRE2's \\s has it)
    dsv3_tokenizer_free(t);
}

// A word none of whose bytes has a token gives no ids, also into an empty list and again from
// the word cache (an empty list has no buffer yet: nothing may be copied to or from it).
static void test_word_without_tokens(void **state) {
    (void)state;
    for (int ignore = 0; ignore < 2; ignore++) {
        Dsv3Tokenizer *t =
            load_ok(&(Parts){.model_extra = ignore ? "\"ignore_merges\": true," : ""});
        for (int again = 0; again < 2; again++) {
            Dsv3TokenIds ids = {0};
            assert_int_equal(dsv3_tokenizer_encode(t, "zz", 2, &ids), DSV3_OK);
            assert_int_equal(dsv3_tokenizer_encode(t, "z", 1, &ids), DSV3_OK);
            assert_int_equal(ids.count, 0);
            dsv3_token_ids_free(&ids);
        }
        EXPECT(t, "zz ab", 6, 3);
        dsv3_tokenizer_free(t);
    }
}

// Split with a string pattern: the string itself, no regex.
static void test_split_string(void **state) {
    (void)state;
    Dsv3Tokenizer *t = load_ok(&(Parts){
        .pre_tokenizer = "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", "
                         "\"pattern\": {\"String\": \"a.\"}, \"behavior\": \"Removed\"}, "
                         "{\"type\": \"ByteLevel\", \"use_regex\": false}]}"});
    EXPECT(t, "ab-c", 4);        // no split: '-' has no token, so "ab" and "c" merge
    EXPECT(t, "ca.bc", 2, 1, 2); // "a." removed
    dsv3_tokenizer_free(t);
}

static void test_added_tokens(void **state) {
    (void)state;
    Dsv3Tokenizer *t = load_ok(&(Parts){0});
    // "<s>" (not normalized) is cut first; "<s>x" (normalized) only in the text between.
    EXPECT(t, "a<s>xb", 0, 20, 7, 1);
    EXPECT(t, "<s<s>", 20); // '<' has no token
    assert_int_equal(dsv3_tokenizer_token_id(t, "<s>", 3), 20);
    assert_int_equal(dsv3_tokenizer_token_id(t, "ab", 2), 3);
    assert_int_equal(dsv3_tokenizer_token_id(t, "zz", 2), -1);
    // BOS "<s>" and EOS "c" from tokenizer_config.json, around documents.
    assert_int_equal(dsv3_tokenizer_bos_id(t), 20);
    assert_int_equal(dsv3_tokenizer_eos_id(t), 2);
    Dsv3TokenIds ids = {0};
    assert_int_equal(dsv3_tokenizer_encode_document(t, "ab", 2, &ids), DSV3_OK);
    assert_int_equal(ids.count, 3);
    assert_int_equal(ids.ids[0], 20);
    assert_int_equal(ids.ids[1], 3);
    assert_int_equal(ids.ids[2], 2);
    // Decoding: special tokens kept or skipped; byte-level tokens back to bytes.
    char *text = NULL;
    size_t length = 0;
    int32_t some[] = {20, 3, 6, 21, 2};
    assert_int_equal(dsv3_tokenizer_decode(t, some, 5, 0, &text, &length), DSV3_OK);
    assert_string_equal(text, "<s>ab <s>xc");
    dsv3_free(text);
    assert_int_equal(dsv3_tokenizer_decode(t, some, 5, 1, &text, &length), DSV3_OK);
    assert_string_equal(text, "ab <s>xc");
    dsv3_free(text);
    int32_t bad[] = {3, 15};
    assert_int_equal(dsv3_tokenizer_decode(t, bad, 2, 0, &text, &length), DSV3_ERR_USAGE);
    assert_non_null(strstr(dsv3_error_message(), "cannot decode id 15"));
    dsv3_token_ids_free(&ids);
    dsv3_tokenizer_free(t);
    // Contents written as surrogate-pair escapes, as json.dumps writes them: U+2D8EF is one that
    // json-c alone decodes as U+FFFD; an escaped backslash before "u" is no escape.
    t = load_ok(&(Parts){.added = "[{\"id\": 20, \"content\": \"<s>\", \"special\": true}, "
                                  "{\"id\": 21, \"content\": \"\\ud876\\udcef\"}, "
                                  "{\"id\": 22, \"content\": \"\\\\ud876\\\\udcef\"}]"});
    EXPECT(t, "\xf0\xad\xa3\xaf", 21);
    EXPECT(t, "\\ud876\\udcef", 22);
    dsv3_tokenizer_free(t);
}

static void test_invalid_utf8(void **state) {
    (void)state;
    Dsv3Tokenizer *t = load_ok(&(Parts){0});
    // Each maximal invalid subpart becomes one U+FFFD (bytes EF BF BD, ids 8 9 10), as
    // Python's bytes.decode("utf-8", "replace"): E2 82 is one subpart, C0 and 80 are two.
    EXPECT(t,
           "a\xe2\x82"
           "b",
           0, 8, 9, 10, 1);
    EXPECT(t, "\xc0\x80", 8, 9, 10, 8, 9, 10);
    EXPECT(t, "\xed\xa0\x80", 8, 9, 10, 8, 9, 10, 8, 9, 10); // a surrogate: 3 subparts
    assert_int_equal(dsv3_tokenizer_replaced_sequences(t), 6);
    dsv3_tokenizer_free(t);
}

// Loading fails and the message names `needle` (the JSON path and the value).
static void expect_unsupported(const Parts *p, const char *needle) {
    write_tokenizer(p);
    Dsv3Tokenizer *t = NULL;
    Dsv3Err err = dsv3_tokenizer_load(&t, temp_dir);
    if (err == DSV3_OK) fail_msg("loaded, but '%s' should have been refused", needle);
    assert_null(t);
    if (!strstr(dsv3_error_message(), needle))
        fail_msg("message '%s' does not name '%s'", dsv3_error_message(), needle);
    if (!strstr(dsv3_error_message(), "tokenizer.json"))
        fail_msg("message '%s' does not name the file", dsv3_error_message());
}

static void test_unsupported_is_an_error_naming_its_path(void **state) {
    (void)state;
    expect_unsupported(&(Parts){.normalizer = "{\"type\": \"NFKC\"}"},
                       "normalizer.type = \"NFKC\"");
    expect_unsupported(
        &(Parts){.normalizer =
                     "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Lowercase\"}]}"},
        "normalizer.normalizers[0].type = \"Lowercase\"");
    expect_unsupported(&(Parts){.pre_tokenizer =
                                    "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": "
                                    "\"Metaspace\"}, {\"type\": \"ByteLevel\"}]}"},
                       "pre_tokenizer.pretokenizers[0].type = \"Metaspace\"");
    expect_unsupported(
        &(Parts){.pre_tokenizer =
                     "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", "
                     "\"pattern\": {\"Regex\": \"\\\\w+\"}, \"behavior\": \"Isolated\"}, "
                     "{\"type\": \"ByteLevel\"}]}"},
        "pre_tokenizer.pretokenizers[0].pattern.Regex: \\w");
    expect_unsupported(
        &(Parts){.pre_tokenizer =
                     "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", "
                     "\"pattern\": {\"Regex\": \"(?m)a\"}, \"behavior\": \"Isolated\"}, "
                     "{\"type\": \"ByteLevel\"}]}"},
        "inline option \"(?m\"");
    expect_unsupported(
        &(Parts){.pre_tokenizer =
                     "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", "
                     "\"pattern\": {\"Regex\": \"[a-\"}, \"behavior\": \"Isolated\"}, "
                     "{\"type\": \"ByteLevel\"}]}"},
        "pre_tokenizer.pretokenizers[0].pattern.Regex: the pattern does not compile");
    expect_unsupported(
        &(Parts){.pre_tokenizer =
                     "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", "
                     "\"pattern\": {\"Regex\": \"a\"}, \"behavior\": \"Sideways\"}, "
                     "{\"type\": \"ByteLevel\"}]}"},
        "pre_tokenizer.pretokenizers[0].behavior = \"Sideways\"");
    expect_unsupported(
        &(Parts){.pre_tokenizer = "{\"type\": \"ByteLevel\", \"add_prefix_space\": true}"},
        "pre_tokenizer.add_prefix_space = true");
    expect_unsupported(&(Parts){.pre_tokenizer =
                                    "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": "
                                    "\"ByteLevel\"}, {\"type\": \"Digits\"}]}"},
                       "nothing may follow the ByteLevel pre-tokenizer");
    expect_unsupported(&(Parts){.pre_tokenizer = "{\"type\": \"Digits\"}"}, "no ByteLevel step");
    expect_unsupported(&(Parts){.model_type = "WordPiece"}, "model.type = \"WordPiece\"");
    expect_unsupported(&(Parts){.model_extra = "\"continuing_subword_prefix\": \"##\","},
                       "model.continuing_subword_prefix = \"##\"");
    expect_unsupported(&(Parts){.model_extra = "\"byte_fallback\": true,"},
                       "model.byte_fallback = true");
    expect_unsupported(&(Parts){.merges = "[\"a b\", \"q a\"]"},
                       "model.merges[1]: token \"q\" is not in model.vocab");
    expect_unsupported(&(Parts){.merges = "[\"b a\"]"}, "model.merges[0]: the merged token \"ba\"");
    expect_unsupported(&(Parts){.merges = "[\"a b c\"]"}, "model.merges[0] = \"a b c\"");
    expect_unsupported(&(Parts){.added = "[{\"id\": 20, \"content\": \"<s>\", \"lstrip\": true}]"},
                       "added_tokens[0].lstrip = true");
    expect_unsupported(
        &(Parts){.added = "[{\"id\": 20, \"content\": \"<s>\", \"single_word\": true}]"},
        "added_tokens[0].single_word = true");
    expect_unsupported(&(Parts){.post = "{\"type\": \"TemplateProcessing\"}"},
                       "post_processor.type = \"TemplateProcessing\"");
    expect_unsupported(&(Parts){.decoder = "{\"type\": \"WordPiece\"}"},
                       "decoder.type = \"WordPiece\"");
    expect_unsupported(&(Parts){.decoder = "null"}, "decoder is null");
}

// A Unigram or WordLevel tokenizer.json is named by its model type, though its normalizer,
// pre-tokenizer, decoder and vocabulary would each have been refused before the model.
static void test_model_type_named_first(void **state) {
    (void)state;
    static const char *const files[][2] = {
        {"Unigram",
         "{\"version\": \"1.0\", \"truncation\": {\"max_length\": 8}, \"added_tokens\": [], "
         "\"normalizer\": {\"type\": \"Precompiled\", \"precompiled_charsmap\": \"\"}, "
         "\"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"\\u2581\"}, "
         "\"post_processor\": null, \"decoder\": {\"type\": \"Metaspace\"}, "
         "\"model\": {\"type\": \"Unigram\", \"unk_id\": 0, "
         "\"vocab\": [[\"<unk>\", 0.0], [\"a\", -1.5]]}}"},
        {"WordLevel",
         "{\"version\": \"1.0\", \"added_tokens\": [], \"normalizer\": {\"type\": "
         "\"Lowercase\"}, \"pre_tokenizer\": {\"type\": \"Whitespace\"}, \"decoder\": null, "
         "\"model\": {\"type\": \"WordLevel\", \"vocab\": {\"[UNK]\": 0, \"a\": 1}, "
         "\"unk_token\": \"[UNK]\"}}"},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        write_file("tokenizer.json", files[i][1]);
        Dsv3Tokenizer *t = NULL;
        assert_int_equal(dsv3_tokenizer_load(&t, temp_dir), DSV3_ERR_CONFIG);
        char want[128];
        snprintf(want, sizeof want, "model.type = \"%s\" is not supported (supported: \"BPE\")",
                 files[i][0]);
        if (!strstr(dsv3_error_message(), want))
            fail_msg("message '%s' does not say '%s'", dsv3_error_message(), want);
    }
}

static void test_bad_files(void **state) {
    (void)state;
    Dsv3Tokenizer *t = NULL;
    write_file("tokenizer.json", "{\"model\": ");
    assert_int_equal(dsv3_tokenizer_load(&t, temp_dir), DSV3_ERR_IO);
    assert_non_null(strstr(dsv3_error_message(), "tokenizer.json"));
    // A config naming a token the tokenizer lacks.
    write_tokenizer(&(Parts){0});
    write_file("tokenizer_config.json", "{\"eos_token\": \"</s>\"}");
    assert_int_equal(dsv3_tokenizer_load(&t, temp_dir), DSV3_ERR_CONFIG);
    assert_non_null(strstr(dsv3_error_message(), "eos_token = \"</s>\" is not a token"));
    // No tokenizer.json at all: says how to get one.
    assert_int_equal(dsv3_tokenizer_load(&t, "/nonexistent/folder"), DSV3_ERR_IO);
    assert_non_null(strstr(dsv3_error_message(), "download_hf_assets.sh"));
    int32_t eos = 5;
    assert_int_equal(dsv3_tokenizer_folder_eos_id("/nonexistent/folder", &eos), DSV3_OK);
    assert_int_equal(eos, -1);
}

// tokenizer.json's text from memory: the file loader's tokenizer, without BOS and EOS; messages
// name the given name.
static void test_load_from_memory(void **state) {
    (void)state;
    write_tokenizer(&(Parts){0});
    char path[PATH_CAPACITY], json[JSON_CAPACITY];
    path_of(path, "tokenizer.json");
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t length = fread(json, 1, sizeof json, f);
    fclose(f);
    Dsv3Tokenizer *t = NULL;
    assert_int_equal(dsv3_tokenizer_load_json(&t, "memory.json", json, length), DSV3_OK);
    EXPECT(t, "a<s>xb", 0, 20, 7, 1);
    assert_int_equal(dsv3_tokenizer_bos_id(t), -1);
    dsv3_tokenizer_free(t);
    assert_int_equal(dsv3_tokenizer_load_json(&t, "memory.json", json, length / 2), DSV3_ERR_IO);
    assert_null(t);
    assert_non_null(strstr(dsv3_error_message(), "memory.json"));
    dsv3_error_clear();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merges_in_rank_order),
        cmocka_unit_test(test_ignore_merges),
        cmocka_unit_test(test_oniguruma_semantics),
        cmocka_unit_test(test_word_without_tokens),
        cmocka_unit_test(test_split_string),
        cmocka_unit_test(test_added_tokens),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_unsupported_is_an_error_naming_its_path),
        cmocka_unit_test(test_model_type_named_first),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_load_from_memory),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
