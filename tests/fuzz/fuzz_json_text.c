// fuzz_json_text: libFuzzer harness for common/data/json_text (JSON lines for the text reader).
//
// Every input is parsed as one JSON line for the field "text". A rejected input must say why.
// An accepted one's decoded text is written back as a JSON string (control characters, '"' and
// '\' as \u escapes, every other byte raw, so the text's bytes, valid UTF-8 or not, survive) and
// parsed again: the same bytes must come back, with no lone surrogate. The surrogate-pair rewrite
// for tokenizer.json must never grow its input, and must leave text without backslashes unchanged.
// Any broken expectation aborts, which libFuzzer reports. The same file also builds with gcc
// for tests/fuzz/replay_main.c.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/alloc.h"
#include "common/data/json_text.h"
#include "fuzz_support.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { ESCAPED_BYTE_LENGTH = 6 }; // "\u00XX"

// {"text": "<text with bytes below 0x20, '"' and '\' escaped>"}; malloc'd.
static char *as_json_line(const char *text, size_t length, size_t *out_length) {
    static const char head[] = "{\"text\": \"", tail[] = "\"}";
    char *line = malloc(sizeof head + length * ESCAPED_BYTE_LENGTH + sizeof tail);
    if (!line) fuzz_fail("out of memory");
    size_t n = sizeof head - 1;
    memcpy(line, head, n);
    for (size_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c < 0x20 || c == '"' || c == '\\')
            n += (size_t)snprintf(line + n, ESCAPED_BYTE_LENGTH + 1, "\\u%04x", c);
        else
            line[n++] = (char)c;
    }
    memcpy(line + n, tail, sizeof tail - 1);
    *out_length = n + sizeof tail - 1;
    return line;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t before = dsv3_alloc_current_bytes();
    Dsv3JsonText t = {0}, again = {0};
    char why[DSV3_JSON_TEXT_WHY_CAPACITY];
    int ok = 0;
    if (dsv3_json_text_field(&t, (const char *)data, size, "text", &ok, why) != DSV3_OK)
        fuzz_fail("parse failed: %s", dsv3_error_message());
    if (!ok && why[0] == '\0') fuzz_fail("refused without a reason");
    if (ok) {
        size_t n = 0;
        char *line = as_json_line(t.text, t.length, &n);
        if (dsv3_json_text_field(&again, line, n, "text", &ok, why) != DSV3_OK || !ok)
            fuzz_fail("the decoded text written back is refused: %s", why);
        if (again.length != t.length || (t.length && memcmp(again.text, t.text, t.length) != 0))
            fuzz_fail("the decoded text written back reads differently");
        if (again.lone_surrogates != 0) fuzz_fail("lone surrogates in text written back");
        free(line);
    }
    char *copy = malloc(size + 1);
    if (!copy) fuzz_fail("out of memory");
    memcpy(copy, data, size);
    size_t length = size;
    dsv3_json_text_join_surrogate_pairs(copy, &length);
    if (length > size) fuzz_fail("the surrogate-pair rewrite grew the text");
    if (!memchr(data, '\\', size) && (length != size || memcmp(copy, data, size) != 0))
        fuzz_fail("the surrogate-pair rewrite changed a text without escapes");
    free(copy);
    dsv3_json_text_free(&t);
    dsv3_json_text_free(&again);
    if (dsv3_alloc_current_bytes() != before)
        fuzz_fail("%zu counted bytes leaked", dsv3_alloc_current_bytes() - before);
    return 0;
}
