// fuzz_toml: libFuzzer harness for common/core/toml.
//
// Every input is parsed. A rejected input must leave no tree, a config error whose message names
// the input, and no counted bytes. An accepted one is walked (strings are NUL-terminated, no key
// appears twice in a table, nesting stays within the parser's bound), printed back as TOML,
// parsed again and compared with the first tree, which catches values that read back
// differently; then both trees are freed. Any broken expectation aborts, which libFuzzer reports.
// The same file also builds with gcc for tests/fuzz/replay_main.c.
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/alloc.h"
#include "common/core/error.h"
#include "common/core/toml.h"
#include "fuzz_support.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

// The parser's nesting bound (TOML_MAX_DEPTH in toml.c): no value may sit deeper.
enum { FUZZ_MAX_DEPTH = 64 };

#define FUZZ_SOURCE "fuzz"

// ---- walking ----

static void walk(const Dsv3TomlValue *v, int depth) {
    if (depth > FUZZ_MAX_DEPTH) fuzz_fail("value at depth %d, beyond the bound", depth);
    if (v->line < 1) fuzz_fail("value with line %d", v->line);
    switch (v->type) {
    case DSV3_TOML_STRING: (void)strlen(v->string); break;
    case DSV3_TOML_INTEGER:
    case DSV3_TOML_FLOAT: break;
    case DSV3_TOML_BOOL:
        if (v->boolean != 0 && v->boolean != 1) fuzz_fail("boolean %d", v->boolean);
        break;
    case DSV3_TOML_ARRAY:
        for (size_t i = 0; i < v->array.count; i++)
            walk(&v->array.items[i], depth + 1);
        break;
    case DSV3_TOML_TABLE:
        for (size_t i = 0; i < v->table.count; i++) {
            if (dsv3_toml_get(v, v->table.keys[i]) != &v->table.values[i])
                fuzz_fail("key '%s' appears twice in one table", v->table.keys[i]);
            walk(&v->table.values[i], depth + 1);
        }
        break;
    default: fuzz_fail("unknown type %d", (int)v->type);
    }
}

// ---- printing back as TOML ----

typedef struct {
    char *data;
    size_t length;
    size_t capacity;
} Text;

static void text_append(Text *t, const char *s, size_t n) {
    if (t->length + n + 1 > t->capacity) {
        size_t capacity = t->capacity ? t->capacity : 256;
        while (capacity < t->length + n + 1)
            capacity *= 2;
        char *data = realloc(t->data, capacity);
        if (!data) fuzz_fail("out of memory printing the tree");
        t->data = data;
        t->capacity = capacity;
    }
    memcpy(t->data + t->length, s, n);
    t->length += n;
    t->data[t->length] = '\0';
}

static void text_puts(Text *t, const char *s) { text_append(t, s, strlen(s)); }

// A basic string, escaping quotes, backslashes and control characters; other bytes stay as they
// are (the parser only accepts valid UTF-8, so they are).
static void write_string(Text *t, const char *s) {
    text_puts(t, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char escape[8];
        if (c == '"' || c == '\\') {
            snprintf(escape, sizeof escape, "\\%c", c);
            text_puts(t, escape);
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(escape, sizeof escape, "\\u%04X", c);
            text_puts(t, escape);
        } else {
            text_append(t, s, 1);
        }
    }
    text_puts(t, "\"");
}

static void write_float(Text *t, double d) {
    char number[64];
    if (isnan(d))
        snprintf(number, sizeof number, "%snan", signbit(d) ? "-" : "");
    else if (isinf(d))
        snprintf(number, sizeof number, "%sinf", d < 0 ? "-" : "");
    else
        snprintf(number, sizeof number, "%.17g", d); // 17 digits read back exactly
    // "%g" may print an integer ("1"); a fraction keeps it a float.
    if (!strpbrk(number, ".eni")) strcat(number, ".0");
    text_puts(t, number);
}

// Every table is printed inline, which keeps each value at the depth it had.
static void write_value(Text *t, const Dsv3TomlValue *v) {
    char number[32];
    switch (v->type) {
    case DSV3_TOML_STRING: write_string(t, v->string); break;
    case DSV3_TOML_INTEGER:
        snprintf(number, sizeof number, "%" PRId64, v->integer);
        text_puts(t, number);
        break;
    case DSV3_TOML_FLOAT: write_float(t, v->number); break;
    case DSV3_TOML_BOOL: text_puts(t, v->boolean ? "true" : "false"); break;
    case DSV3_TOML_ARRAY:
        text_puts(t, "[");
        for (size_t i = 0; i < v->array.count; i++) {
            if (i) text_puts(t, ", ");
            write_value(t, &v->array.items[i]);
        }
        text_puts(t, "]");
        break;
    case DSV3_TOML_TABLE:
        text_puts(t, "{");
        for (size_t i = 0; i < v->table.count; i++) {
            text_puts(t, i ? ", " : " ");
            write_string(t, v->table.keys[i]);
            text_puts(t, " = ");
            write_value(t, &v->table.values[i]);
        }
        text_puts(t, " }");
        break;
    }
}

static void write_root(Text *t, const Dsv3TomlValue *root) {
    for (size_t i = 0; i < root->table.count; i++) {
        write_string(t, root->table.keys[i]);
        text_puts(t, " = ");
        write_value(t, &root->table.values[i]);
        text_puts(t, "\n");
    }
}

// ---- comparing ----

static void check_same(const Dsv3TomlValue *a, const Dsv3TomlValue *b) {
    if (a->type != b->type)
        fuzz_fail("%s read back as %s", dsv3_toml_type_name(a->type), dsv3_toml_type_name(b->type));
    switch (a->type) {
    case DSV3_TOML_STRING:
        if (strcmp(a->string, b->string) != 0) fuzz_fail("string read back differently");
        break;
    case DSV3_TOML_INTEGER:
        if (a->integer != b->integer)
            fuzz_fail("integer %" PRId64 " read back as %" PRId64, a->integer, b->integer);
        break;
    case DSV3_TOML_FLOAT:
        if (isnan(a->number) ? !isnan(b->number)
                             : (a->number != b->number || signbit(a->number) != signbit(b->number)))
            fuzz_fail("float %.17g read back as %.17g", a->number, b->number);
        break;
    case DSV3_TOML_BOOL:
        if (a->boolean != b->boolean) fuzz_fail("boolean read back differently");
        break;
    case DSV3_TOML_ARRAY:
        if (a->array.count != b->array.count) fuzz_fail("array length read back differently");
        for (size_t i = 0; i < a->array.count; i++)
            check_same(&a->array.items[i], &b->array.items[i]);
        break;
    case DSV3_TOML_TABLE:
        if (a->table.count != b->table.count) fuzz_fail("table size read back differently");
        for (size_t i = 0; i < a->table.count; i++) {
            if (strcmp(a->table.keys[i], b->table.keys[i]) != 0) fuzz_fail("key order changed");
            check_same(&a->table.values[i], &b->table.values[i]);
        }
        break;
    }
}

static void round_trip(const Dsv3TomlValue *root) {
    Text t = {0};
    text_puts(&t, "");
    write_root(&t, root);
    Dsv3TomlValue *again = NULL;
    if (dsv3_toml_parse(t.data, t.length, FUZZ_SOURCE, &again) != DSV3_OK)
        fuzz_fail("printed tree does not parse: %s\n--- printed ---\n%s", dsv3_error_text(),
                  t.data);
    check_same(root, again);
    dsv3_toml_free(again);
    free(t.data);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t before = dsv3_alloc_current_bytes();
    Dsv3TomlValue *root = NULL;
    Dsv3Err err = dsv3_toml_parse((const char *)data, size, FUZZ_SOURCE, &root);
    if (err == DSV3_OK) {
        if (!root || root->type != DSV3_TOML_TABLE) fuzz_fail("success without a root table");
        walk(root, 0);
        round_trip(root);
        dsv3_toml_free(root);
    } else {
        if (root) fuzz_fail("failure left a tree behind");
        if (err != DSV3_ERR_CONFIG) fuzz_fail("unexpected error: %s", dsv3_error_text());
        if (strncmp(dsv3_error_message(), FUZZ_SOURCE ":", strlen(FUZZ_SOURCE ":")) != 0)
            fuzz_fail("message does not name the input: %s", dsv3_error_message());
        dsv3_error_clear();
    }
    if (dsv3_alloc_current_bytes() != before)
        fuzz_fail("%zu counted bytes leaked", dsv3_alloc_current_bytes() - before);
    return 0;
}
