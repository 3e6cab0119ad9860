// Unit tests for common/core/toml: every supported feature, every rejected input with the line
// its message names, and no counted bytes left behind after a parse, successful or not.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/core/alloc.h"
#include "common/core/error.h"
#include "common/core/toml.h"

// Name every parse in these tests gives its input, so messages start "t.toml:<line>:".
#define SOURCE "t.toml"

// ---- helpers ----

// Records the counted bytes before a test; the teardown checks they came back.
static int leak_setup(void **state) {
    static size_t start;
    start = dsv3_alloc_current_bytes();
    *state = &start;
    dsv3_error_clear();
    return 0;
}

static int leak_teardown(void **state) {
    size_t start = *(size_t *)*state;
    assert_int_equal(dsv3_alloc_current_bytes(), start);
    dsv3_error_clear();
    return 0;
}

#define TOML_TEST(f) cmocka_unit_test_setup_teardown(f, leak_setup, leak_teardown)

static Dsv3TomlValue *parse_ok(const char *text) {
    Dsv3TomlValue *root = NULL;
    Dsv3Err err = dsv3_toml_parse(text, strlen(text), SOURCE, &root);
    if (err != DSV3_OK) fail_msg("unexpected failure: %s", dsv3_error_text());
    assert_non_null(root);
    assert_int_equal(root->type, DSV3_TOML_TABLE);
    return root;
}

// Parses `length` bytes that must fail with a config error whose message starts with
// "t.toml:<line>: " and contains `needle`; no counted bytes may stay allocated.
static void expect_error_n(const char *text, size_t length, int line, const char *needle) {
    size_t before = dsv3_alloc_current_bytes();
    Dsv3TomlValue *root = (Dsv3TomlValue *)(uintptr_t)1; // must be reset to NULL
    Dsv3Err err = dsv3_toml_parse(text, length, SOURCE, &root);
    assert_int_equal(err, DSV3_ERR_CONFIG);
    assert_null(root);
    const char *message = dsv3_error_message();
    char prefix[64];
    snprintf(prefix, sizeof prefix, SOURCE ":%d: ", line);
    if (strncmp(message, prefix, strlen(prefix)) != 0 || !strstr(message, needle))
        fail_msg("message '%s' lacks prefix '%s' or '%s'", message, prefix, needle);
    assert_non_null(strstr(dsv3_error_text(), "config error"));
    assert_int_equal(dsv3_alloc_current_bytes(), before);
    dsv3_error_clear();
}

static void expect_error(const char *text, int line, const char *needle) {
    expect_error_n(text, strlen(text), line, needle);
}

static const Dsv3TomlValue *get(const Dsv3TomlValue *table, const char *key, Dsv3TomlType type) {
    const Dsv3TomlValue *v = dsv3_toml_get(table, key);
    if (!v) fail_msg("key '%s' missing", key);
    if (v->type != type)
        fail_msg("key '%s' is a %s, expected %s", key, dsv3_toml_type_name(v->type),
                 dsv3_toml_type_name(type));
    return v;
}

static int64_t get_int(const Dsv3TomlValue *table, const char *key) {
    return get(table, key, DSV3_TOML_INTEGER)->integer;
}

static double get_float(const Dsv3TomlValue *table, const char *key) {
    return get(table, key, DSV3_TOML_FLOAT)->number;
}

static const char *get_str(const Dsv3TomlValue *table, const char *key) {
    return get(table, key, DSV3_TOML_STRING)->string;
}

// Parses `text`, expects one key "v" of `type` and returns a copy of the root to free.
static Dsv3TomlValue *parse_single(const char *text, Dsv3TomlType type) {
    Dsv3TomlValue *root = parse_ok(text);
    assert_int_equal(root->table.count, 1);
    get(root, "v", type);
    return root;
}

static void check_string(const char *text, const char *expected) {
    Dsv3TomlValue *root = parse_single(text, DSV3_TOML_STRING);
    assert_string_equal(get_str(root, "v"), expected);
    dsv3_toml_free(root);
}

static void check_int(const char *text, int64_t expected) {
    Dsv3TomlValue *root = parse_single(text, DSV3_TOML_INTEGER);
    assert_true(get_int(root, "v") == expected);
    dsv3_toml_free(root);
}

static void check_float(const char *text, double expected) {
    Dsv3TomlValue *root = parse_single(text, DSV3_TOML_FLOAT);
    double got = get_float(root, "v");
    if (got != expected) fail_msg("'%s' gave %.17g, expected %.17g", text, got, expected);
    dsv3_toml_free(root);
}

// ---- structure ----

static void test_empty_input(void **state) {
    (void)state;
    Dsv3TomlValue *root = parse_ok("");
    assert_int_equal(root->table.count, 0);
    assert_int_equal(root->line, 1);
    dsv3_toml_free(root);
}

static void test_comments_and_blank_lines(void **state) {
    (void)state;
    Dsv3TomlValue *root = parse_ok("# top\r\n\n   \t\n# another # with hash\r\na = 1 # trailing\n"
                                   "#last line without newline");
    assert_int_equal(root->table.count, 1);
    assert_int_equal(get_int(root, "a"), 1);
    dsv3_toml_free(root);
}

static void test_bare_keys(void **state) {
    (void)state;
    Dsv3TomlValue *root = parse_ok("key = 1\nbare_key = 2\nbare-key = 3\n1234 = 4\nABC = 5\n");
    assert_int_equal(root->table.count, 5);
    assert_int_equal(get_int(root, "key"), 1);
    assert_int_equal(get_int(root, "bare_key"), 2);
    assert_int_equal(get_int(root, "bare-key"), 3);
    assert_int_equal(get_int(root, "1234"), 4);
    assert_int_equal(get_int(root, "ABC"), 5);
    dsv3_toml_free(root);
}

static void test_quoted_keys(void **state) {
    (void)state;
    Dsv3TomlValue *root = parse_ok("\"a b\" = 1\n'c.d' = 2\n\"\" = 3\n\"\\u00e9\" = 4\n'x\\y' = 5");
    assert_int_equal(get_int(root, "a b"), 1);
    assert_int_equal(get_int(root, "c.d"), 2);
    assert_int_equal(get_int(root, ""), 3);
    assert_int_equal(get_int(root, "\xc3\xa9"), 4);
    assert_int_equal(get_int(root, "x\\y"), 5);
    dsv3_toml_free(root);
}

static void test_dotted_keys(void **state) {
    (void)state;
    Dsv3TomlValue *root = parse_ok("a.b.c = 1\na . b . d = 2\na.\"e.f\" = 3\nx = 0\n");
    const Dsv3TomlValue *a = get(root, "a", DSV3_TOML_TABLE);
    const Dsv3TomlValue *b = get(a, "b", DSV3_TOML_TABLE);
    assert_int_equal(get_int(b, "c"), 1);
    assert_int_equal(get_int(b, "d"), 2);
    assert_int_equal(get_int(a, "e.f"), 3);
    assert_int_equal(a->line, 1);
    dsv3_toml_free(root);
}

static void test_tables(void **state) {
    (void)state;
    Dsv3TomlValue *root = parse_ok("top = 1\n[model]\ndim = 64\n[model.moe]\nexperts = 8\n"
                                   "[ train ]\nsteps = 10\n");
    assert_int_equal(root->table.count, 3);
    const Dsv3TomlValue *model = get(root, "model", DSV3_TOML_TABLE);
    assert_int_equal(model->line, 2);
    assert_int_equal(get_int(model, "dim"), 64);
    const Dsv3TomlValue *moe = get(model, "moe", DSV3_TOML_TABLE);
    assert_int_equal(moe->line, 4);
    assert_int_equal(get_int(moe, "experts"), 8);
    assert_int_equal(get_int(get(root, "train", DSV3_TOML_TABLE), "steps"), 10);
    dsv3_toml_free(root);
}

static void test_quoted_keys_in_headers(void **state) {
    (void)state;
    Dsv3TomlValue *root = parse_ok("[\"a.b\"]\nx = 1\n[ c . 'd e' . \"f\" ]\ny = 2\n");
    assert_int_equal(get_int(get(root, "a.b", DSV3_TOML_TABLE), "x"), 1);
    const Dsv3TomlValue *c = get(root, "c", DSV3_TOML_TABLE);
    const Dsv3TomlValue *de = get(c, "d e", DSV3_TOML_TABLE);
    assert_int_equal(get_int(get(de, "f", DSV3_TOML_TABLE), "y"), 2);
    dsv3_toml_free(root);
}

static void test_insertion_order(void **state) {
    (void)state;
    Dsv3TomlValue *root = parse_ok("z = 1\na = 2\nm = 3\nb = 4\ny = 5\nc = 6\n");
    const char *expected[] = {"z", "a", "m", "b", "y", "c"};
    assert_int_equal(root->table.count, 6);
    for (size_t i = 0; i < 6; i++) {
        assert_string_equal(root->table.keys[i], expected[i]);
        assert_int_equal(root->table.values[i].integer, (int64_t)i + 1);
    }
    dsv3_toml_free(root);
}

static void test_implicit_table_defined_later(void **state) {
    (void)state;
    Dsv3TomlValue *root = parse_ok("[a.b]\nx = 1\n[a]\ny = 2\n");
    const Dsv3TomlValue *a = get(root, "a", DSV3_TOML_TABLE);
    assert_int_equal(a->line, 3);
    assert_int_equal(get_int(get(a, "b", DSV3_TOML_TABLE), "x"), 1);
    assert_int_equal(get_int(a, "y"), 2);
    dsv3_toml_free(root);
}

static void test_header_under_dotted_table(void **state) {
    (void)state;
    Dsv3TomlValue *root = parse_ok("[fruit]\napple.color = 'red'\napple.taste.sweet = true\n"
                                   "[fruit.apple.texture]\nsmooth = true\n");
    const Dsv3TomlValue *apple = get(get(root, "fruit", DSV3_TOML_TABLE), "apple", DSV3_TOML_TABLE);
    assert_string_equal(get_str(apple, "color"), "red");
    assert_true(get(get(apple, "texture", DSV3_TOML_TABLE), "smooth", DSV3_TOML_BOOL)->boolean);
    dsv3_toml_free(root);
}

static void test_many_keys(void **state) {
    (void)state;
    char text[4096];
    size_t used = 0;
    for (int i = 0; i < 200; i++)
        used += (size_t)snprintf(text + used, sizeof text - used, "k%d = %d\n", i, i);
    Dsv3TomlValue *root = parse_ok(text);
    assert_int_equal(root->table.count, 200);
    assert_int_equal(get_int(root, "k0"), 0);
    assert_int_equal(get_int(root, "k199"), 199);
    dsv3_toml_free(root);
}

// ---- strings ----

static void test_basic_string_escapes(void **state) {
    (void)state;
    check_string("v = \"a\\bb\\tc\\nd\\fe\\rf\\\"g\\\\h\"", "a\bb\tc\nd\fe\rf\"g\\h");
    check_string("v = \"\"", "");
    check_string("v = \"tab\there\"", "tab\there");
}

static void test_unicode_escapes(void **state) {
    (void)state;
    check_string("v = \"\\u00e9\\u20AC\\U0001F600\\u0041\"", "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"
                                                             "A");
    check_string("v = \"\\U0010FFFF\\uFFFD\"", "\xf4\x8f\xbf\xbf\xef\xbf\xbd");
}

static void test_literal_strings(void **state) {
    (void)state;
    check_string("v = 'C:\\Users\\nodejs\\templates'", "C:\\Users\\nodejs\\templates");
    check_string("v = '<\\i\\c*\\s*>'", "<\\i\\c*\\s*>");
    check_string("v = ''", "");
    check_string("v = 'say \"hi\"'", "say \"hi\"");
}

static void test_multi_line_basic(void **state) {
    (void)state;
    check_string("v = \"\"\"\nRoses are red\nViolets are blue\"\"\"",
                 "Roses are red\nViolets are blue");
    check_string("v = \"\"\"\r\nline one\r\nline two\r\n\"\"\"", "line one\nline two\n");
    check_string("v = \"\"\"\nThe quick brown \\\n\n\n  fox jumps \\   \n    over.\"\"\"",
                 "The quick brown fox jumps over.");
    check_string("v = \"\"\"Here are two quotes: \"\". Simple.\"\"\"",
                 "Here are two quotes: \"\". Simple.");
    check_string("v = \"\"\"\"This,\" she said, \"is a quote.\"\"\"\"\"",
                 "\"This,\" she said, \"is a quote.\"\"");
    check_string("v = \"\"\"\"\"\"", "");
    check_string("v = \"\"\"a\\tb\\u00e9\"\"\"", "a\tb\xc3\xa9");
}

static void test_multi_line_literal(void **state) {
    (void)state;
    check_string("v = '''\nThe first newline is\ntrimmed in raw strings.\n   All other whitespace\n"
                 "   is preserved.\n'''",
                 "The first newline is\ntrimmed in raw strings.\n   All other whitespace\n"
                 "   is preserved.\n");
    check_string("v = '''I [dw]on't need \\d{2} apples'''", "I [dw]on't need \\d{2} apples");
    check_string("v = ''''That,' she said, 'is still pointless.'''''",
                 "'That,' she said, 'is still pointless.''");
    check_string("v = '''a\\\n  b'''", "a\\\n  b");
}

static void test_utf8_in_strings_and_comments(void **state) {
    (void)state;
    Dsv3TomlValue *root =
        parse_ok("# caf\xc3\xa9 \xe2\x82\xac\nv = \"\xf0\x9f\x98\x80 ok\" # \xc3\xa9\n");
    assert_string_equal(get_str(root, "v"), "\xf0\x9f\x98\x80 ok");
    dsv3_toml_free(root);
}

static void test_byte_order_mark(void **state) {
    (void)state;
    Dsv3TomlValue *root = parse_ok("\xef\xbb\xbf"
                                   "a = 1\n");
    assert_int_equal(get_int(root, "a"), 1);
    dsv3_toml_free(root);
}

// ---- numbers and booleans ----

static void test_integers(void **state) {
    (void)state;
    check_int("v = 42", 42);
    check_int("v = +99", 99);
    check_int("v = -17", -17);
    check_int("v = 0", 0);
    check_int("v = +0", 0);
    check_int("v = -0", 0);
    check_int("v = 1_000_000", 1000000);
    check_int("v = 5_3_49_221", 5349221);
    check_int("v = 9223372036854775807", INT64_MAX);
    check_int("v = -9223372036854775808", INT64_MIN);
}

static void test_prefixed_integers(void **state) {
    (void)state;
    check_int("v = 0xDEADbeef", 0xDEADBEEF);
    check_int("v = 0xdead_beef", 0xDEADBEEF);
    check_int("v = 0x7fffffffffffffff", INT64_MAX);
    check_int("v = 0x00", 0);
    check_int("v = 0o01234567", 01234567);
    check_int("v = 0o755", 0755);
    check_int("v = 0b11010110", 214);
    check_int("v = 0b1_0", 2);
}

static void test_floats(void **state) {
    (void)state;
    check_float("v = +1.0", 1.0);
    check_float("v = 3.1415", 3.1415);
    check_float("v = -0.01", -0.01);
    check_float("v = 5e+22", 5e22);
    check_float("v = 1e06", 1e6);
    check_float("v = -2E-2", -2e-2);
    check_float("v = 6.626e-34", 6.626e-34);
    check_float("v = 224_617.445_991_228", 224617.445991228);
    check_float("v = 1e1_0", 1e10);
    check_float("v = 0.0", 0.0);
    check_float("v = 1e-400", 0.0); // underflow rounds to zero, as IEEE 754 does
    Dsv3TomlValue *root = parse_single("v = -0.0", DSV3_TOML_FLOAT);
    assert_true(signbit(get_float(root, "v")));
    dsv3_toml_free(root);
}

static void test_inf_and_nan(void **state) {
    (void)state;
    check_float("v = inf", INFINITY);
    check_float("v = +inf", INFINITY);
    check_float("v = -inf", -INFINITY);
    const char *nans[] = {"v = nan", "v = +nan", "v = -nan"};
    for (int i = 0; i < 3; i++) {
        Dsv3TomlValue *root = parse_single(nans[i], DSV3_TOML_FLOAT);
        assert_true(isnan(get_float(root, "v")));
        dsv3_toml_free(root);
    }
}

static void test_booleans(void **state) {
    (void)state;
    Dsv3TomlValue *root = parse_ok("t = true\nf = false\n");
    assert_int_equal(get(root, "t", DSV3_TOML_BOOL)->boolean, 1);
    assert_int_equal(get(root, "f", DSV3_TOML_BOOL)->boolean, 0);
    dsv3_toml_free(root);
}

// ---- arrays and inline tables ----

static void test_arrays(void **state) {
    (void)state;
    Dsv3TomlValue *root =
        parse_ok("a = [1, 2, 3]\nb = []\nc = [\"x\", 1.5, true, [1, [2]], {k = 1}]\n"
                 "d = [ 1 , 2 , ]\n");
    const Dsv3TomlValue *a = get(root, "a", DSV3_TOML_ARRAY);
    assert_int_equal(a->array.count, 3);
    assert_int_equal(a->array.items[2].integer, 3);
    assert_int_equal(get(root, "b", DSV3_TOML_ARRAY)->array.count, 0);
    const Dsv3TomlValue *c = get(root, "c", DSV3_TOML_ARRAY);
    assert_int_equal(c->array.count, 5);
    assert_string_equal(c->array.items[0].string, "x");
    assert_int_equal(c->array.items[1].type, DSV3_TOML_FLOAT);
    assert_int_equal(c->array.items[2].type, DSV3_TOML_BOOL);
    const Dsv3TomlValue *nested = &c->array.items[3];
    assert_int_equal(nested->type, DSV3_TOML_ARRAY);
    assert_int_equal(nested->array.items[1].array.items[0].integer, 2);
    assert_int_equal(get_int(&c->array.items[4], "k"), 1);
    assert_int_equal(get(root, "d", DSV3_TOML_ARRAY)->array.count, 2);
    dsv3_toml_free(root);
}

static void test_arrays_across_lines(void **state) {
    (void)state;
    Dsv3TomlValue *root =
        parse_ok("a = [\n  1, # one\n\n  # a comment line\n  2,\r\n  3,\n]\nb = 4\n");
    const Dsv3TomlValue *a = get(root, "a", DSV3_TOML_ARRAY);
    assert_int_equal(a->array.count, 3);
    assert_int_equal(a->line, 1);
    assert_int_equal(a->array.items[0].line, 2);
    assert_int_equal(a->array.items[1].line, 5);
    assert_int_equal(get(root, "b", DSV3_TOML_INTEGER)->line, 8);
    dsv3_toml_free(root);
}

static void test_large_array(void **state) {
    (void)state;
    char text[8192] = "v = [";
    size_t used = strlen(text);
    for (int i = 0; i < 1000; i++)
        used += (size_t)snprintf(text + used, sizeof text - used, "%d,", i);
    snprintf(text + used, sizeof text - used, "]");
    Dsv3TomlValue *root = parse_single(text, DSV3_TOML_ARRAY);
    const Dsv3TomlValue *v = get(root, "v", DSV3_TOML_ARRAY);
    assert_int_equal(v->array.count, 1000);
    assert_int_equal(v->array.items[999].integer, 999);
    dsv3_toml_free(root);
}

static void test_inline_tables(void **state) {
    (void)state;
    Dsv3TomlValue *root = parse_ok("p = { a = 1, b.c = 2, b.d = 'x', e = { f = [1, 2] } }\nq = {}\n"
                                   "r = {a=1,b=2}\n");
    const Dsv3TomlValue *p = get(root, "p", DSV3_TOML_TABLE);
    assert_int_equal(p->table.count, 3);
    assert_int_equal(get_int(p, "a"), 1);
    const Dsv3TomlValue *b = get(p, "b", DSV3_TOML_TABLE);
    assert_int_equal(get_int(b, "c"), 2);
    assert_string_equal(get_str(b, "d"), "x");
    const Dsv3TomlValue *e = get(p, "e", DSV3_TOML_TABLE);
    assert_int_equal(get(e, "f", DSV3_TOML_ARRAY)->array.count, 2);
    assert_int_equal(get(root, "q", DSV3_TOML_TABLE)->table.count, 0);
    assert_int_equal(get(root, "r", DSV3_TOML_TABLE)->table.count, 2);
    dsv3_toml_free(root);
}

static void test_inline_table_with_multi_line_array(void **state) {
    (void)state;
    Dsv3TomlValue *root = parse_ok("p = { a = [\n 1,\n 2\n], b = 3 }\nq = 1\n");
    const Dsv3TomlValue *p = get(root, "p", DSV3_TOML_TABLE);
    assert_int_equal(get(p, "a", DSV3_TOML_ARRAY)->array.count, 2);
    assert_int_equal(get_int(p, "b"), 3);
    assert_int_equal(get(root, "q", DSV3_TOML_INTEGER)->line, 5);
    dsv3_toml_free(root);
}

static void test_nesting_at_the_bound(void **state) {
    (void)state;
    // "v" is at depth 1 and each '[' adds one: 64 levels is the deepest allowed.
    char text[256] = "v = ";
    for (int i = 0; i < 64; i++)
        strcat(text, "[");
    for (int i = 0; i < 64; i++)
        strcat(text, "]");
    Dsv3TomlValue *root = parse_single(text, DSV3_TOML_ARRAY);
    dsv3_toml_free(root);
}

static void test_key_nesting_at_the_bound(void **state) {
    (void)state;
    char text[512] = "";
    for (int i = 0; i < 63; i++)
        strcat(text, "a.");
    strcat(text, "b = 1\n");
    Dsv3TomlValue *root = parse_ok(text);
    dsv3_toml_free(root);
}

static void test_job_config(void **state) {
    (void)state;
    const char *text = "# Small DeepSeek-V3 job for tests.\n"
                       "name = \"dsv3-tiny\"\n"
                       "\n"
                       "[model]\n"
                       "dim = 256            # hidden size\n"
                       "n_layers = 4\n"
                       "rope_theta = 10_000.0\n"
                       "moe = { experts = 8, top_k = 2, shared = 1 }\n"
                       "\n"
                       "[train]\n"
                       "steps = 1_000\n"
                       "lr = 3e-4\n"
                       "betas = [0.9, 0.95]\n"
                       "data = 'data/tiny.bin'\n"
                       "log.every = 10\n"
                       "log.path = \"runs/tiny\\tlog\"\n"
                       "\n"
                       "[parallel]\n"
                       "mesh = [\n"
                       "  2, # data\n"
                       "  2, # expert\n"
                       "]\n"
                       "overlap = true\n";
    Dsv3TomlValue *root = parse_ok(text);
    assert_string_equal(get_str(root, "name"), "dsv3-tiny");
    const Dsv3TomlValue *model = get(root, "model", DSV3_TOML_TABLE);
    assert_int_equal(get_int(model, "dim"), 256);
    assert_true(get_float(model, "rope_theta") == 10000.0);
    assert_int_equal(get_int(get(model, "moe", DSV3_TOML_TABLE), "top_k"), 2);
    const Dsv3TomlValue *train = get(root, "train", DSV3_TOML_TABLE);
    assert_int_equal(get_int(train, "steps"), 1000);
    assert_true(get_float(train, "lr") == 3e-4);
    assert_string_equal(get_str(get(train, "log", DSV3_TOML_TABLE), "path"), "runs/tiny\tlog");
    const Dsv3TomlValue *mesh =
        get(get(root, "parallel", DSV3_TOML_TABLE), "mesh", DSV3_TOML_ARRAY);
    assert_int_equal(mesh->array.count, 2);
    assert_int_equal(mesh->line, 19);
    dsv3_toml_free(root);
}

// ---- API ----

static void test_length_is_respected(void **state) {
    (void)state;
    const char text[] = "a = 1\nb = 2garbage";
    Dsv3TomlValue *root = NULL;
    assert_int_equal(dsv3_toml_parse(text, 11, SOURCE, &root), DSV3_OK);
    assert_int_equal(root->table.count, 2);
    assert_int_equal(get_int(root, "b"), 2);
    dsv3_toml_free(root);
}

static void test_get_and_type_names(void **state) {
    (void)state;
    Dsv3TomlValue *root = parse_ok("a = 1\n[t]\nb = 2\n");
    assert_null(dsv3_toml_get(root, "missing"));
    assert_null(dsv3_toml_get(root, "t.b")); // one key, not a dotted path
    assert_null(dsv3_toml_get(get(root, "a", DSV3_TOML_INTEGER), "x"));
    assert_null(dsv3_toml_get(NULL, "a"));
    assert_string_equal(dsv3_toml_type_name(DSV3_TOML_TABLE), "table");
    assert_string_equal(dsv3_toml_type_name(DSV3_TOML_ARRAY), "array");
    assert_string_equal(dsv3_toml_type_name(DSV3_TOML_STRING), "string");
    assert_string_equal(dsv3_toml_type_name(DSV3_TOML_INTEGER), "integer");
    assert_string_equal(dsv3_toml_type_name(DSV3_TOML_FLOAT), "float");
    assert_string_equal(dsv3_toml_type_name(DSV3_TOML_BOOL), "boolean");
    dsv3_toml_free(root);
    dsv3_toml_free(NULL);
}

static void test_usage_errors(void **state) {
    (void)state;
    Dsv3TomlValue *root = (Dsv3TomlValue *)(uintptr_t)1;
    assert_int_equal(dsv3_toml_parse(NULL, 3, SOURCE, &root), DSV3_ERR_USAGE);
    assert_null(root);
    assert_int_equal(dsv3_toml_parse("a = 1", 5, SOURCE, NULL), DSV3_ERR_USAGE);
    dsv3_error_clear();
    assert_int_equal(dsv3_toml_parse(NULL, 0, SOURCE, &root), DSV3_OK);
    assert_int_equal(root->table.count, 0);
    dsv3_toml_free(root);
}

static void test_error_names_source_and_clears(void **state) {
    (void)state;
    Dsv3TomlValue *root = NULL;
    assert_int_equal(dsv3_toml_parse("a = \n", 5, "conf/job.toml", &root), DSV3_ERR_CONFIG);
    assert_true(strncmp(dsv3_error_message(), "conf/job.toml:1: ", 17) == 0);
    assert_non_null(strstr(dsv3_error_text(), "toml.c"));
    dsv3_error_clear();
    assert_string_equal(dsv3_error_message(), "");
    assert_string_equal(dsv3_error_text(), "");
}

// ---- rejected input ----

static void test_rejects_dates_and_times(void **state) {
    (void)state;
    expect_error("a = 1\nd = 1979-05-27\n", 2, "dates and times are not supported");
    expect_error("d = 1979-05-27T07:32:00Z", 1, "dates and times are not supported");
    expect_error("d = 1979-05-27 07:32:00", 1, "dates and times are not supported");
    expect_error("\n\nt = 07:32:00", 3, "dates and times are not supported");
    expect_error("a = [1979-05-27]", 1, "dates and times are not supported");
}

static void test_rejects_arrays_of_tables(void **state) {
    (void)state;
    expect_error("a = 1\n[[products]]\nname = 'x'\n", 2, "not supported");
}

static void test_rejects_duplicate_keys(void **state) {
    (void)state;
    expect_error("x = 1\ny = 2\nx = 3\n", 3, "key 'x' defined twice (first at line 1)");
    expect_error("[t]\nx = 1\n\"x\" = 2\n", 3, "key 'x' defined twice (first at line 2)");
    expect_error("a.b = 1\na.b = 2\n", 2, "key 'a.b' defined twice (first at line 1)");
    expect_error("a.b = 1\na = 2\n", 2, "key 'a' defined twice (first at line 1)");
    expect_error("p = { x = 1, x = 2 }", 1, "key 'x' defined twice (first at line 1)");
}

static void test_rejects_redefined_tables(void **state) {
    (void)state;
    expect_error("[a]\nx = 1\n[b]\n[a]\n", 4, "table [a] defined twice (first at line 1)");
    expect_error("[a.b]\n[a]\n[a]\n", 3, "table [a] defined twice (first at line 2)");
    expect_error("[a]\nb.c = 1\n[a.b]\n", 3, "already defined by dotted keys at line 2");
    expect_error("a = { b = 1 }\n[a]\n", 2, "defined inline at line 1");
    expect_error("a = { b = 1 }\n[a.c]\n", 2, "defined inline at line 1");
}

static void test_rejects_value_used_as_table(void **state) {
    (void)state;
    expect_error("a = 1\n[a]\n", 2, "key 'a' is already an integer (line 1)");
    expect_error("a = 1\n[a.b]\n", 2, "key 'a' is already an integer (line 1)");
    expect_error("a = 'x'\na.b = 2\n", 2, "key 'a' is already a string (line 1)");
    expect_error("a = [1]\n[a]\n", 2, "key 'a' is already an array (line 1)");
}

static void test_rejects_extending_closed_tables(void **state) {
    (void)state;
    expect_error("a = { b = 1 }\na.c = 2\n", 2, "inline tables cannot be extended");
    expect_error("a = { b = { c = 1 }, b.d = 2 }", 1, "inline tables cannot be extended");
    expect_error("[a.b.c]\nz = 9\n[a]\nb.c.t = 1\n", 4, "comes from a [table] header at line 1");
    expect_error("[a.b]\n[a]\nb.x = 1\n", 3, "comes from a [table] header");
}

static void test_rejects_missing_equals(void **state) {
    (void)state;
    expect_error("steps = 1\nlr 0.1\n", 2, "expected '=' after key 'lr', found '0'");
    expect_error("a.b\n", 1, "expected '=' after key 'a.b', found end of line");
    expect_error("key", 1, "expected '=' after key 'key', found end of input");
    expect_error("p = { a 1 }", 1, "expected '=' after key 'a'");
}

static void test_rejects_missing_keys(void **state) {
    (void)state;
    expect_error("= 1\n", 1, "expected a key, found '='");
    expect_error("a. = 1\n", 1, "expected a key");
    expect_error("[]\n", 1, "expected a key, found ']'");
    expect_error("\"\"\"k\"\"\" = 1\n", 1, "a multi-line string cannot be a key");
    expect_error("a = 1\n@ = 2\n", 2, "expected a key, found '@'");
    expect_error("caf\xc3\xa9 = 1\n", 1, "expected '=' after key 'caf', found byte 0xC3");
}

static void test_rejects_missing_values(void **state) {
    (void)state;
    expect_error("a =\n", 1, "expected a value");
    expect_error("a = # nothing\n", 1, "expected a value");
    expect_error("a = hello\n", 1, "invalid value 'hello' (strings need quotes)");
    expect_error("a = True\n", 1, "invalid value 'True'");
    expect_error("a = infinity\n", 1, "invalid value 'infinity'");
    expect_error("a = .5\n", 1, "invalid value '.5'");
}

static void test_rejects_bad_headers(void **state) {
    (void)state;
    expect_error("[a\nx = 1\n", 1, "expected ']' to close the table header, found end of line");
    expect_error("[a b]\n", 1, "expected ']'");
    expect_error("[a] x = 1\n", 1,
                 "expected the end of the line after the table header, found 'x'");
}

static void test_rejects_unterminated_strings(void **state) {
    (void)state;
    expect_error("a = 1\nb = \"abc\nc = 2\n", 2, "unterminated string");
    expect_error("b = 'abc", 1, "unterminated string");
    expect_error("b = \"abc\\", 1, "invalid escape");
    expect_error("x = 1\nb = \"\"\"abc\n\ndef\n", 2, "unterminated multi-line string");
    expect_error("b = '''abc\n''", 1, "unterminated multi-line string");
    expect_error("\"abc = 1\n", 1, "unterminated string");
}

static void test_rejects_control_characters(void **state) {
    (void)state;
    expect_error("a = \"x\x01y\"\n", 1, "control character U+0001 in a string");
    expect_error("a = 'x\x1fy'\n", 1, "control character U+001F in a string");
    expect_error("a = \"\"\"x\n\x7fy\"\"\"\n", 2, "control character U+007F in a string");
    expect_error("a = 1 # bell\x07\n", 1, "control character U+0007 in a comment");
    expect_error("a = [ # x\x02\n]", 1, "in a comment");
    expect_error("a = 1\rb = 2\n", 1, "found control character U+000D");
    expect_error("a = \"x\ry\"\n", 1, "control character U+000D in a string");
}

static void test_rejects_invalid_escapes(void **state) {
    (void)state;
    expect_error("a = \"\\q\"", 1, "invalid escape: '\\' followed by 'q'");
    expect_error("a = \"\\x41\"", 1, "invalid escape");
    expect_error("a = \"\\ \"", 1, "invalid escape");
    expect_error("a = \"\"\"\\ x\"\"\"", 1, "invalid escape");
    expect_error("a = \"\\u12\"", 1, "\\u needs 4 hexadecimal digits, found '\"'");
    expect_error("a = \"\\U0001F60\"", 1, "\\U needs 8 hexadecimal digits");
}

static void test_rejects_surrogates_and_nul_escapes(void **state) {
    (void)state;
    expect_error("a = \"\\uD800\"", 1, "U+D800 is not a Unicode scalar value");
    expect_error("a = \"\\uDFFF\"", 1, "is not a Unicode scalar value");
    expect_error("a = \"\\U00110000\"", 1, "U+110000 is not a Unicode scalar value");
    expect_error("a = \"\\U0000D800\"", 1, "is not a Unicode scalar value");
    expect_error("a = \"\\u0000\"", 1, "U+0000 (NUL) is not supported");
}

static void test_rejects_nul_bytes(void **state) {
    (void)state;
    expect_error_n("a = 1\nb = \"x\0y\"\n", 14, 2, "NUL byte in the input");
    expect_error_n("\0", 1, 1, "NUL byte");
}

static void test_rejects_invalid_utf8(void **state) {
    (void)state;
    expect_error("a = \"\xff\"\n", 1, "invalid UTF-8 (byte 0xFF)");
    expect_error("a = 1\n# \xc3\x28\n", 2, "invalid UTF-8");
    expect_error("a = \"\xc0\xaf\"", 1, "invalid UTF-8");         // overlong '/'
    expect_error("a = \"\xed\xa0\x80\"", 1, "invalid UTF-8");     // encoded surrogate
    expect_error("a = \"\xf4\x90\x80\x80\"", 1, "invalid UTF-8"); // beyond U+10FFFF
    expect_error("a = \"\xe2\x82\"", 1, "invalid UTF-8");         // cut short
}

static void test_rejects_trailing_garbage(void **state) {
    (void)state;
    expect_error("a = 1 2\n", 1, "expected the end of the line after the value, found '2'");
    expect_error("a = \"x\" \"y\"\n", 1, "found '\"'");
    expect_error("a = true false\n", 1, "found 'f'");
    expect_error("a = [1] ]\n", 1, "found ']'");
    expect_error("a = 1 b = 2\n", 1, "found 'b'");
    expect_error("a = truex\n", 1, "invalid value 'truex'");
}

static void test_rejects_bad_integers(void **state) {
    (void)state;
    expect_error("v = 01\n", 1, "leading zeros are not allowed in '01'");
    expect_error("v = -007\n", 1, "leading zeros");
    expect_error("v = 0_1\n", 1, "leading zeros");
    expect_error("v = 1__000\n", 1, "misplaced '_'");
    expect_error("v = 1_\n", 1, "misplaced '_'");
    expect_error("v = _1\n", 1, "invalid value '_1'");
    expect_error("v = 0x_1\n", 1, "invalid base-16 integer");
    expect_error("v = 0x\n", 1, "invalid base-16 integer");
    expect_error("v = 0b102\n", 1, "invalid base-2 integer");
    expect_error("v = 0o8\n", 1, "invalid base-8 integer");
    expect_error("v = +0x1\n", 1, "cannot have a sign");
    expect_error("v = 0X1\n", 1, "invalid number '0X1'");
    expect_error("v = 12abc\n", 1, "invalid number");
}

static void test_rejects_integer_overflow(void **state) {
    (void)state;
    expect_error("a = 1\nv = 9223372036854775808\n", 2, "does not fit in 64 bits");
    expect_error("v = -9223372036854775809\n", 1, "does not fit in 64 bits");
    expect_error("v = 99999999999999999999999\n", 1, "does not fit in 64 bits");
    expect_error("v = 0x8000000000000000\n", 1, "does not fit in 64 bits");
    expect_error("v = 0b1_0000000000000000000000000000000000000000000000000000000000000000\n", 1,
                 "does not fit in 64 bits");
}

static void test_rejects_bad_floats(void **state) {
    (void)state;
    expect_error("v = 1.\n", 1, "expected digits after '.'");
    expect_error("v = 1.e5\n", 1, "expected digits after '.'");
    expect_error("v = 1e\n", 1, "expected digits in the exponent");
    expect_error("v = 1e+\n", 1, "expected digits in the exponent");
    expect_error("v = 1.5_\n", 1, "expected digits after '.'");
    expect_error("v = 1._5\n", 1, "expected digits after '.'");
    expect_error("v = 03.14\n", 1, "leading zeros");
    expect_error("v = 1.2.3\n", 1, "invalid number");
    expect_error("v = 1e400\n", 1, "float '1e400' is out of range");
    expect_error("v = -1e400\n", 1, "out of range");
    expect_error("v = -+1\n", 1, "invalid value");
}

static void test_rejects_bad_arrays(void **state) {
    (void)state;
    expect_error("a = [1, 2\n", 2, "array opened at line 1 is not closed");
    expect_error("a = [1 2]\n", 1, "expected ',' or ']' after an array element, found '2'");
    expect_error("a = [,]\n", 1, "expected a value");
    expect_error("a = [1,,2]\n", 1, "expected a value");
    expect_error("a = [\n1,\n\n", 4, "array opened at line 1 is not closed");
}

static void test_rejects_bad_inline_tables(void **state) {
    (void)state;
    expect_error("a = { b = 1,\n c = 2 }\n", 1, "must end with '}' on the same line");
    expect_error("a = {\n}\n", 1, "must end with '}' on the same line");
    expect_error("a = { b = 1 \n", 1, "must end with '}' on the same line");
    expect_error("a = { b = 1, }\n", 1, "trailing comma in an inline table");
    expect_error("a = { b = 1 c = 2 }\n", 1, "expected ',' or '}' in an inline table, found 'c'");
    expect_error("a = { , }\n", 1, "expected a key");
}

static void test_rejects_deep_nesting(void **state) {
    (void)state;
    char text[512] = "v = ";
    for (int i = 0; i < 65; i++)
        strcat(text, "[");
    expect_error(text, 1, "values nest deeper than 64 levels");
    strcpy(text, "v = ");
    for (int i = 0; i < 65; i++)
        strcat(text, "{a=");
    expect_error(text, 1, "deeper than 64 levels");
    strcpy(text, "");
    for (int i = 0; i < 64; i++)
        strcat(text, "a.");
    strcat(text, "b = 1\n");
    expect_error(text, 1, "more than 64 dotted parts");
    strcpy(text, "[");
    for (int i = 0; i < 63; i++)
        strcat(text, "a.");
    strcat(text, "b]\nc = 1\n");
    expect_error(text, 2, "nests deeper than 64 levels");
}

static void test_rejects_too_many_closing_quotes(void **state) {
    (void)state;
    expect_error("a = \"\"\"x\"\"\"\"\"\"\n", 1, "6 quotes in a row");
    expect_error("a = '''x''''''\n", 1, "6 quotes in a row");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TOML_TEST(test_empty_input),
        TOML_TEST(test_comments_and_blank_lines),
        TOML_TEST(test_bare_keys),
        TOML_TEST(test_quoted_keys),
        TOML_TEST(test_dotted_keys),
        TOML_TEST(test_tables),
        TOML_TEST(test_quoted_keys_in_headers),
        TOML_TEST(test_insertion_order),
        TOML_TEST(test_implicit_table_defined_later),
        TOML_TEST(test_header_under_dotted_table),
        TOML_TEST(test_many_keys),
        TOML_TEST(test_basic_string_escapes),
        TOML_TEST(test_unicode_escapes),
        TOML_TEST(test_literal_strings),
        TOML_TEST(test_multi_line_basic),
        TOML_TEST(test_multi_line_literal),
        TOML_TEST(test_utf8_in_strings_and_comments),
        TOML_TEST(test_byte_order_mark),
        TOML_TEST(test_integers),
        TOML_TEST(test_prefixed_integers),
        TOML_TEST(test_floats),
        TOML_TEST(test_inf_and_nan),
        TOML_TEST(test_booleans),
        TOML_TEST(test_arrays),
        TOML_TEST(test_arrays_across_lines),
        TOML_TEST(test_large_array),
        TOML_TEST(test_inline_tables),
        TOML_TEST(test_inline_table_with_multi_line_array),
        TOML_TEST(test_nesting_at_the_bound),
        TOML_TEST(test_key_nesting_at_the_bound),
        TOML_TEST(test_job_config),
        TOML_TEST(test_length_is_respected),
        TOML_TEST(test_get_and_type_names),
        TOML_TEST(test_usage_errors),
        TOML_TEST(test_error_names_source_and_clears),
        TOML_TEST(test_rejects_dates_and_times),
        TOML_TEST(test_rejects_arrays_of_tables),
        TOML_TEST(test_rejects_duplicate_keys),
        TOML_TEST(test_rejects_redefined_tables),
        TOML_TEST(test_rejects_value_used_as_table),
        TOML_TEST(test_rejects_extending_closed_tables),
        TOML_TEST(test_rejects_missing_equals),
        TOML_TEST(test_rejects_missing_keys),
        TOML_TEST(test_rejects_missing_values),
        TOML_TEST(test_rejects_bad_headers),
        TOML_TEST(test_rejects_unterminated_strings),
        TOML_TEST(test_rejects_control_characters),
        TOML_TEST(test_rejects_invalid_escapes),
        TOML_TEST(test_rejects_surrogates_and_nul_escapes),
        TOML_TEST(test_rejects_nul_bytes),
        TOML_TEST(test_rejects_invalid_utf8),
        TOML_TEST(test_rejects_trailing_garbage),
        TOML_TEST(test_rejects_bad_integers),
        TOML_TEST(test_rejects_integer_overflow),
        TOML_TEST(test_rejects_bad_floats),
        TOML_TEST(test_rejects_bad_arrays),
        TOML_TEST(test_rejects_bad_inline_tables),
        TOML_TEST(test_rejects_deep_nesting),
        TOML_TEST(test_rejects_too_many_closing_quotes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
