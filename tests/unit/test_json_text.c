// Unit tests for json_text: strict JSON lines (each kind of malformed input refused with its
// reason and column), escapes decoded as Python's json.loads does, every surrogate pair of
// planes 1-16 joined into its code point, lone surrogates replaced and counted.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/data/json_text.h"

static const uint32_t SUPPLEMENTARY_FIRST = 0x10000, LAST_CODE_POINT = 0x10FFFF;

// Parses `line` for field "text"; returns ok, leaves the reason in why.
static int parse(Dsv3JsonText *t, const char *line, char *why) {
    int ok = -1;
    assert_int_equal(dsv3_json_text_field(t, line, strlen(line), "text", &ok, why), DSV3_OK);
    return ok;
}

static void expect_text(const char *line, const char *want, size_t want_length, int64_t lone) {
    Dsv3JsonText t = {0};
    char why[DSV3_JSON_TEXT_WHY_CAPACITY];
    if (!parse(&t, line, why)) fail_msg("%s: refused: %s", line, why);
    if (t.length != want_length || memcmp(t.text, want, want_length) != 0)
        fail_msg("%s: decoded '%.*s'", line, (int)t.length, t.text);
    assert_int_equal(t.lone_surrogates, lone);
    dsv3_json_text_free(&t);
}

#define EXPECT_TEXT(line, want, lone) expect_text((line), (want), sizeof(want) - 1, (lone))

static void expect_refused(const char *line, const char *reason) {
    Dsv3JsonText t = {0};
    char why[DSV3_JSON_TEXT_WHY_CAPACITY];
    if (parse(&t, line, why)) fail_msg("%s: accepted, expected '%s'", line, reason);
    if (!strstr(why, reason)) fail_msg("%s: reason '%s', expected '%s'", line, why, reason);
    dsv3_json_text_free(&t);
}

static void test_escapes(void **state) {
    (void)state;
    EXPECT_TEXT("{\"text\": \"plain\"}", "plain", 0);
    EXPECT_TEXT(" {\"a\": [1, -2.5e+3, {\"b\": null}], \"text\": \"x\", \"c\": true} ", "x", 0);
    EXPECT_TEXT("{\"text\": \"\\\"\\\\\\/\\b\\f\\n\\r\\t\"}", "\"\\/\b\f\n\r\t", 0);
    EXPECT_TEXT("{\"text\": \"\\u00e9\\u4E2D\\u0000z\"}", "\xc3\xa9\xe4\xb8\xad\0z", 0);
    EXPECT_TEXT("{\"text\": \"caf\xc3\xa9 \xff\"}", "caf\xc3\xa9 \xff",
                0); // bytes kept as they are
    // Keys with escapes, repeated keys (the last wins), the field nested elsewhere ignored.
    EXPECT_TEXT("{\"t\\u0065xt\": \"escaped key\"}", "escaped key", 0);
    EXPECT_TEXT("{\"text\": \"first\", \"text\": \"last\"}", "last", 0);
    EXPECT_TEXT("{\"o\": {\"text\": \"inner\"}, \"text\": \"outer\"}", "outer", 0);
    // Surrogates: a pair joins; lone ones (high at the end, low alone, high + non-low, reversed
    // pair) become one U+FFFD each, as json.loads keeps each as one lone surrogate.
    EXPECT_TEXT("{\"text\": \"\\ud876\\udcef\"}", "\xf0\xad\xa3\xaf", 0); // U+2D8EF
    EXPECT_TEXT("{\"text\": \"a\\ud800\"}", "a\xef\xbf\xbd", 1);
    EXPECT_TEXT("{\"text\": \"\\udc00b\"}",
                "\xef\xbf\xbd"
                "b",
                1);
    EXPECT_TEXT("{\"text\": \"\\ud800\\u0041\"}",
                "\xef\xbf\xbd"
                "A",
                1);
    EXPECT_TEXT("{\"text\": \"\\udc00\\ud800\"}", "\xef\xbf\xbd\xef\xbf\xbd", 2);
    EXPECT_TEXT("{\"text\": \"\\ud800\\ud800\\udc00\"}", "\xef\xbf\xbd\xf0\x90\x80\x80", 1);
}

// Every supplementary-plane code point, written as json.dumps writes it (a surrogate pair),
// decodes to its 4-byte UTF-8: among them the 32,768 whose low 16 bits are 0xD800-0xDFFF.
static void test_every_surrogate_pair(void **state) {
    (void)state;
    Dsv3JsonText t = {0};
    char why[DSV3_JSON_TEXT_WHY_CAPACITY];
    for (uint32_t c = SUPPLEMENTARY_FIRST; c <= LAST_CODE_POINT; c++) {
        uint32_t v = c - SUPPLEMENTARY_FIRST;
        char line[64];
        snprintf(line, sizeof line, "{\"text\": \"\\u%04x\\u%04X\"}", 0xD800 + (v >> 10),
                 0xDC00 + (v & 0x3FF));
        unsigned char want[4] = {
            (unsigned char)(0xF0 | c >> 18), (unsigned char)(0x80 | (c >> 12 & 0x3F)),
            (unsigned char)(0x80 | (c >> 6 & 0x3F)), (unsigned char)(0x80 | (c & 0x3F))};
        if (!parse(&t, line, why)) fail_msg("U+%04X: %s", c, why);
        if (t.length != 4 || memcmp(t.text, want, 4) != 0 || t.lone_surrogates != 0)
            fail_msg("U+%04X decoded wrongly", c);
    }
    dsv3_json_text_free(&t);
}

static void test_malformed(void **state) {
    (void)state;
    expect_refused("{'text': 'a'}", "a single quote (JSON strings take double quotes) at column 2");
    expect_refused("{\"text\": 'a'}", "a single quote");
    expect_refused("{\"text\": \"a\",}", "a trailing comma at column 13");
    expect_refused("{\"text\": [1, 2,]}", "a trailing comma at column 15");
    expect_refused("{\"text\": \"a\"} // note", "a comment (JSON has none) at column 15");
    expect_refused("{\"text\": \"a\" /* note */}", "a comment");
    expect_refused("{/* note */ \"text\": \"a\"}", "a comment (JSON has none) at column 2");
    expect_refused("{\"n\": 01, \"text\": \"a\"}", "a number with a leading zero at column 7");
    expect_refused("{\"n\": -00, \"text\": \"a\"}", "a number with a leading zero");
    expect_refused("{\"n\": 1., \"text\": \"a\"}", "a malformed number");
    expect_refused("{\"n\": .5, \"text\": \"a\"}", "unexpected character '.'");
    expect_refused("{\"n\": NaN, \"text\": \"a\"}", "NaN or Infinity");
    expect_refused("{\"text\": \"a\tb\"}", "a raw control character 0x09 inside a string");
    expect_refused("{\"text\": \"a\\qb\"}", "an invalid escape \\q at column 12");
    expect_refused("{\"text\": \"a\\x41\"}", "an invalid escape \\x");
    expect_refused("{\"text\": \"\\u12G4\"}", "an invalid \\u escape");
    expect_refused("{\"text\": \"open", "a string that does not end on its line");
    expect_refused("{\"text\": \"a\"", "unexpected end of line");
    expect_refused("{text: \"a\"}", "an object key that is not a string in double quotes");
    expect_refused("{\"text\" \"a\"}", "':' expected");
    expect_refused("{\"text\": \"a\" \"b\": 1}", "'}' or ',' expected");
    expect_refused("{\"text\": tru}", "unexpected character 't'");
    expect_refused("{\"text\": \"a\"} x", "text after the JSON value at column 15");
    expect_refused("not json", "not a JSON value: unexpected character 'n' at column 1");
    expect_refused("[1, 2]", "not a JSON object");
    expect_refused("\"text\"", "not a JSON object");
    expect_refused("{\"body\": \"a\"}", "field \"text\" is missing");
    expect_refused("{\"text\": 3}", "field \"text\" is not a string");
    expect_refused("{\"text\": \"a\", \"text\": null}", "field \"text\" is not a string");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_every_surrogate_pair),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
