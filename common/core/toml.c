// toml: a recursive-descent parser over the whole input, building the tree of toml.h directly.
//
// Which tables TOML lets a later line extend depends on how each table was created (by its own
// [header], as the parent in a header, by a dotted key, or inline). The public tree has no room
// for that, so the parser keeps a private shadow tree of TableInfo in step with every table that
// a header or a dotted key can still reach, and frees it when parsing ends.
//
// Every level of nesting (a dotted key part, a header part, an array, an inline table) counts
// towards TOML_MAX_DEPTH, which bounds the recursion here and in dsv3_toml_free on any input.
#include "toml.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

enum {
    // Deepest value below the root (a key of the root is at depth 1); deeper input is an error.
    TOML_MAX_DEPTH = 64,
    // Longest key path quoted in a message, so that a message stays readable.
    TOML_SHOWN_CHARS = 128,
    // Room for one message before the "<source>:<line>: " prefix is added.
    TOML_MESSAGE_CAPACITY = 512,
    // Slots a table or array gets on its first insertion; it doubles when full.
    TOML_FIRST_CAPACITY = 4,
    // Smallest buffer for a string's bytes; it doubles when full.
    TOML_FIRST_STRING_CAPACITY = 32,
};

typedef enum {
    TABLE_IMPLICIT, // created as a parent by a header such as [a.b]; [a] may still define it once
    TABLE_HEADER,   // defined by its own [header] (the root counts as one)
    TABLE_DOTTED,   // created by a dotted key (a.b = 1); only further dotted keys extend it
    TABLE_INLINE,   // an inline table { ... }; closed for good at its '}'
} TableKind;

typedef struct TableInfo TableInfo;
struct TableInfo {
    TableKind kind;
    int depth;            // of the table itself; the root is 0
    size_t capacity;      // slots in the table's keys and values, and in children
    TableInfo **children; // children[i] describes values[i] when that is a table, else NULL
};

// A table of the tree together with its shadow.
typedef struct {
    Dsv3TomlValue *value;
    TableInfo *info;
} TableRef;

// The parts of a (possibly dotted) key, as written.
typedef struct {
    char *parts[TOML_MAX_DEPTH];
    size_t count;
} KeyPath;

typedef struct {
    char *data;
    size_t length;
    size_t capacity;
} Buffer;

typedef struct {
    const char *text;
    size_t length;
    size_t pos;
    int line;           // of the character at pos
    const char *source; // names the input in messages
    char found[32];     // scratch for describe()
} Parser;

// ---- errors ----

static Dsv3Err toml_fail(const Parser *p, int line, const char *file, int code_line,
                         const char *func, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

// Records a config error "<source>:<line>: <message>" at the caller's file, line and function.
static Dsv3Err toml_fail(const Parser *p, int line, const char *file, int code_line,
                         const char *func, const char *fmt, ...) {
    char message[TOML_MESSAGE_CAPACITY];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    return dsv3_error_raise(DSV3_ERR_CONFIG, file, code_line, func, "%s:%d: %s", p->source, line,
                            message);
}

#define TOML_FAIL(p, line, ...) toml_fail((p), (line), __FILE__, __LINE__, __func__, __VA_ARGS__)

// ---- characters ----

static int peek_at(const Parser *p, size_t offset) {
    return p->pos + offset < p->length ? (unsigned char)p->text[p->pos + offset] : -1;
}

static int peek(const Parser *p) { return peek_at(p, 0); }

static bool at_end(const Parser *p) { return p->pos >= p->length; }

// Moves past one byte; the caller has checked that one is there.
static void advance(Parser *p) {
    if (p->text[p->pos] == '\n') p->line++;
    p->pos++;
}

static void advance_by(Parser *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        advance(p);
}

// A newline is LF or CR LF; a CR on its own is a control character.
static bool at_newline(const Parser *p) {
    return peek(p) == '\n' || (peek(p) == '\r' && peek_at(p, 1) == '\n');
}

static void skip_newline(Parser *p) { advance_by(p, peek(p) == '\r' ? 2 : 1); }

static void skip_ws(Parser *p) {
    while (peek(p) == ' ' || peek(p) == '\t')
        advance(p);
}

static bool is_control(int c) { return (c >= 0 && c < 0x20 && c != '\t') || c == 0x7f; }

static bool is_digit(int c) { return c >= '0' && c <= '9'; }

static bool is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

static bool is_bare_key_char(int c) { return is_alpha(c) || is_digit(c) || c == '_' || c == '-'; }

// Characters of an unquoted value: numbers, booleans, inf/nan, and dates (to reject them).
static bool is_token_char(int c) { return is_bare_key_char(c) || c == '+' || c == '.' || c == ':'; }

// Says what is at the current position, for "expected X, found Y" messages.
static const char *describe(Parser *p) {
    int c = peek(p);
    if (c < 0) return "end of input";
    if (at_newline(p)) return "end of line";
    if (is_control(c))
        snprintf(p->found, sizeof p->found, "control character U+%04X", c);
    else if (c < 0x80)
        snprintf(p->found, sizeof p->found, "'%c'", c);
    else
        snprintf(p->found, sizeof p->found, "byte 0x%02X", c);
    return p->found;
}

// Length of the UTF-8 sequence at s (1 to 4), or 0 when it is malformed, overlong, a surrogate
// or beyond U+10FFFF.
static size_t utf8_length(const unsigned char *s, size_t n) {
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t len;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0; // overlong
        if (c == 0xED) hi = 0x9F; // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90; // overlong
        if (c == 0xF4) hi = 0x8F; // beyond U+10FFFF
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi) return 0;
    for (size_t k = 2; k < len; k++)
        if ((s[k] & 0xC0) != 0x80) return 0;
    return len;
}

static size_t utf8_encode(unsigned long cp, char out[4]) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

// Rejects NUL bytes and malformed UTF-8 up front, so that the parser may treat every byte at or
// above 0x80 as part of a valid character and every string it builds is valid UTF-8.
static Dsv3Err check_encoding(const Parser *p) {
    const unsigned char *s = (const unsigned char *)p->text;
    int line = 1;
    for (size_t i = 0; i < p->length;) {
        if (s[i] == 0) return TOML_FAIL(p, line, "NUL byte in the input (is this a text file?)");
        if (s[i] == '\n') line++;
        size_t n = utf8_length(s + i, p->length - i);
        if (n == 0) return TOML_FAIL(p, line, "invalid UTF-8 (byte 0x%02X)", s[i]);
        i += n;
    }
    return DSV3_OK;
}

// ---- strings ----

// Appends n bytes and keeps the buffer NUL-terminated.
static Dsv3Err buffer_push(Buffer *b, const char *bytes, size_t n) {
    if (b->length + n + 1 > b->capacity) {
        size_t capacity = b->capacity ? b->capacity : TOML_FIRST_STRING_CAPACITY;
        while (capacity < b->length + n + 1)
            capacity *= 2;
        char *data;
        DSV3_CALL(dsv3_alloc((void **)&data, capacity, "TOML string"));
        if (b->length) memcpy(data, b->data, b->length);
        dsv3_free(b->data);
        b->data = data;
        b->capacity = capacity;
    }
    if (n) memcpy(b->data + b->length, bytes, n);
    b->length += n;
    b->data[b->length] = '\0';
    return DSV3_OK;
}

static int hex_value(int c) {
    if (is_digit(c)) return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Reads one escape sequence starting at its backslash and appends what it stands for.
static Dsv3Err parse_escape(Parser *p, Buffer *b) {
    advance(p); // the backslash
    int c = peek(p);
    const char *simple = NULL;
    switch (c) {
    case 'b': simple = "\b"; break;
    case 't': simple = "\t"; break;
    case 'n': simple = "\n"; break;
    case 'f': simple = "\f"; break;
    case 'r': simple = "\r"; break;
    case '"': simple = "\""; break;
    case '\\': simple = "\\"; break;
    case 'u':
    case 'U': break;
    default:
        return TOML_FAIL(p, p->line,
                         "invalid escape: '\\' followed by %s (valid: \\b \\t \\n \\f \\r \\\" "
                         "\\\\ \\uXXXX \\UXXXXXXXX)",
                         describe(p));
    }
    advance(p);
    if (simple) {
        DSV3_CALL(buffer_push(b, simple, 1));
        return DSV3_OK;
    }
    int digits = c == 'u' ? 4 : 8;
    unsigned long cp = 0;
    for (int i = 0; i < digits; i++) {
        int v = hex_value(peek(p));
        if (v < 0)
            return TOML_FAIL(p, p->line, "\\%c needs %d hexadecimal digits, found %s", c, digits,
                             describe(p));
        cp = cp * 16 + (unsigned long)v;
        advance(p);
    }
    if (cp == 0)
        return TOML_FAIL(p, p->line, "\\%c escape of U+0000 (NUL) is not supported in strings", c);
    if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
        return TOML_FAIL(p, p->line, "\\%c escape of U+%04lX is not a Unicode scalar value", c, cp);
    char utf8[4];
    DSV3_CALL(buffer_push(b, utf8, utf8_encode(cp, utf8)));
    return DSV3_OK;
}

// Reads a one-line string after its opening quote, up to and including the closing quote.
static Dsv3Err read_single_line(Parser *p, int quote, Buffer *b) {
    int start = p->line;
    for (;;) {
        int c = peek(p);
        if (c < 0 || at_newline(p))
            return TOML_FAIL(p, start,
                             "unterminated string: expected %c before %s (use %c%c%c for "
                             "a multi-line string)",
                             quote, describe(p), quote, quote, quote);
        if (c == quote) {
            advance(p);
            return DSV3_OK;
        }
        if (c == '\\' && quote == '"') {
            DSV3_CALL(parse_escape(p, b));
            continue;
        }
        if (is_control(c))
            return TOML_FAIL(p, p->line, "%s in a string (write it as an escape)", describe(p));
        char byte = (char)c;
        DSV3_CALL(buffer_push(b, &byte, 1));
        advance(p);
    }
}

// In a multi-line basic string, a backslash that ends its line trims itself, the newline and all
// whitespace up to the next content. Returns whether the backslash at pos was one (and skipped).
static bool skip_line_ending_backslash(Parser *p) {
    size_t i = 1;
    while (peek_at(p, i) == ' ' || peek_at(p, i) == '\t')
        i++;
    if (!(peek_at(p, i) == '\n' || (peek_at(p, i) == '\r' && peek_at(p, i + 1) == '\n')))
        return false;
    advance_by(p, i);
    for (;;) {
        if (peek(p) == ' ' || peek(p) == '\t')
            advance(p);
        else if (at_newline(p))
            skip_newline(p);
        else
            return true;
    }
}

// Reads a multi-line string from its opening triple quote to its closing one.
static Dsv3Err read_multi_line(Parser *p, int quote, Buffer *b) {
    int start = p->line;
    advance_by(p, 3);
    if (at_newline(p)) skip_newline(p); // a newline right after the opening quotes is trimmed
    for (;;) {
        int c = peek(p);
        if (c < 0)
            return TOML_FAIL(p, start,
                             "unterminated multi-line string: expected %c%c%c before the "
                             "end of input",
                             quote, quote, quote);
        if (c == quote) {
            // One or two quotes may sit right before the closing three.
            size_t run = 0;
            while (peek_at(p, run) == quote)
                run++;
            if (run > 5)
                return TOML_FAIL(p, p->line,
                                 "%zu quotes in a row in a multi-line string; escape "
                                 "some of them",
                                 run);
            size_t kept = run >= 3 ? run - 3 : run;
            char byte = (char)quote;
            for (size_t i = 0; i < kept; i++)
                DSV3_CALL(buffer_push(b, &byte, 1));
            advance_by(p, run);
            if (run >= 3) return DSV3_OK;
            continue;
        }
        if (at_newline(p)) {
            DSV3_CALL(buffer_push(b, "\n", 1)); // CR LF becomes LF
            skip_newline(p);
            continue;
        }
        if (c == '\\' && quote == '"') {
            if (!skip_line_ending_backslash(p)) DSV3_CALL(parse_escape(p, b));
            continue;
        }
        if (is_control(c))
            return TOML_FAIL(p, p->line, "%s in a string (write it as an escape)", describe(p));
        char byte = (char)c;
        DSV3_CALL(buffer_push(b, &byte, 1));
        advance(p);
    }
}

// Reads a basic ("...") or literal ('...') string, one-line or (when allowed) multi-line.
static Dsv3Err parse_string(Parser *p, bool allow_multi_line, char **out) {
    *out = NULL;
    int quote = peek(p);
    bool multi_line = peek_at(p, 1) == quote && peek_at(p, 2) == quote;
    if (multi_line && !allow_multi_line)
        return TOML_FAIL(p, p->line, "a multi-line string cannot be a key");
    Buffer b = {0};
    Dsv3Err err;
    if (multi_line) {
        err = read_multi_line(p, quote, &b);
    } else {
        advance(p);
        err = read_single_line(p, quote, &b);
    }
    if (err == DSV3_OK) err = buffer_push(&b, "", 0); // an empty string still needs its buffer
    if (err != DSV3_OK) {
        dsv3_free(b.data);
        return dsv3_error_trace(err, __FILE__, __LINE__, __func__);
    }
    *out = b.data;
    return DSV3_OK;
}

// ---- keys ----

static void key_path_clear(KeyPath *k) {
    for (size_t i = 0; i < k->count; i++)
        dsv3_free(k->parts[i]);
    k->count = 0;
}

// Writes parts [0, n) joined by '.' into buf for messages, cut to fit.
static const char *key_path_text(const KeyPath *k, size_t n, char *buf, size_t size) {
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && used + 1 < size; i++) {
        int w = snprintf(buf + used, size - used, "%s%s", i ? "." : "", k->parts[i]);
        if (w < 0) break;
        used += (size_t)w;
    }
    return buf;
}

static Dsv3Err parse_simple_key(Parser *p, char **out) {
    *out = NULL;
    if (peek(p) == '"' || peek(p) == '\'') {
        DSV3_CALL(parse_string(p, false, out));
        return DSV3_OK;
    }
    size_t begin = p->pos;
    while (is_bare_key_char(peek(p)))
        advance(p);
    size_t n = p->pos - begin;
    if (n == 0) return TOML_FAIL(p, p->line, "expected a key, found %s", describe(p));
    DSV3_CALL(dsv3_alloc((void **)out, n + 1, "TOML key"));
    memcpy(*out, p->text + begin, n);
    (*out)[n] = '\0';
    return DSV3_OK;
}

// Reads key *( '.' key ) with optional blanks around the dots. On failure the caller still
// clears k.
static Dsv3Err parse_key_path(Parser *p, KeyPath *k) {
    for (;;) {
        if (k->count == TOML_MAX_DEPTH)
            return TOML_FAIL(p, p->line, "key has more than %d dotted parts", TOML_MAX_DEPTH);
        DSV3_CALL(parse_simple_key(p, &k->parts[k->count]));
        k->count++;
        skip_ws(p);
        if (peek(p) != '.') return DSV3_OK;
        advance(p);
        skip_ws(p);
    }
}

// ---- tree ----

static void value_clear(Dsv3TomlValue *v) {
    switch (v->type) {
    case DSV3_TOML_STRING: dsv3_free(v->string); break;
    case DSV3_TOML_ARRAY:
        for (size_t i = 0; i < v->array.count; i++)
            value_clear(&v->array.items[i]);
        dsv3_free(v->array.items);
        break;
    case DSV3_TOML_TABLE:
        for (size_t i = 0; i < v->table.count; i++) {
            dsv3_free(v->table.keys[i]);
            value_clear(&v->table.values[i]);
        }
        dsv3_free(v->table.keys);
        dsv3_free(v->table.values);
        break;
    default: break;
    }
    memset(v, 0, sizeof *v);
}

static Dsv3Err info_new(TableInfo **out, TableKind kind, int depth) {
    DSV3_CALL(dsv3_calloc((void **)out, 1, sizeof **out, "TOML table info"));
    (*out)->kind = kind;
    (*out)->depth = depth;
    return DSV3_OK;
}

static void info_free(TableInfo *info) {
    if (!info) return;
    for (size_t i = 0; i < info->capacity; i++)
        info_free(info->children[i]);
    dsv3_free(info->children);
    dsv3_free(info);
}

static const char *with_article(Dsv3TomlType type) {
    switch (type) {
    case DSV3_TOML_TABLE: return "a table";
    case DSV3_TOML_ARRAY: return "an array";
    case DSV3_TOML_STRING: return "a string";
    case DSV3_TOML_INTEGER: return "an integer";
    case DSV3_TOML_FLOAT: return "a float";
    case DSV3_TOML_BOOL: return "a boolean";
    }
    return "a value";
}

// Index of `key` in a table, or its count when absent. Linear: config tables are small.
static size_t table_find(const Dsv3TomlValue *t, const char *key) {
    size_t i = 0;
    while (i < t->table.count && strcmp(t->table.keys[i], key) != 0)
        i++;
    return i;
}

// Appends a copy of `key` with *value (moved in) and `child`, the info of a table value or NULL.
// On success the table owns value and child; on failure the caller still does.
static Dsv3Err table_append(TableRef t, const char *key, Dsv3TomlValue *value, TableInfo *child) {
    Dsv3TomlValue *tv = t.value;
    size_t n = tv->table.count;
    char *copy;
    DSV3_CALL(dsv3_strdup(&copy, key, "TOML key"));
    if (n == t.info->capacity) {
        size_t capacity = n ? 2 * n : TOML_FIRST_CAPACITY;
        char **keys = NULL;
        Dsv3TomlValue *values = NULL;
        TableInfo **children = NULL;
        Dsv3Err err = dsv3_calloc((void **)&keys, capacity, sizeof *keys, "TOML table keys");
        if (err == DSV3_OK)
            err = dsv3_calloc((void **)&values, capacity, sizeof *values, "TOML table values");
        if (err == DSV3_OK)
            err = dsv3_calloc((void **)&children, capacity, sizeof *children, "TOML table info");
        if (err != DSV3_OK) {
            dsv3_free(copy);
            dsv3_free(keys);
            dsv3_free(values);
            dsv3_free(children);
            return dsv3_error_trace(err, __FILE__, __LINE__, __func__);
        }
        if (n) {
            memcpy(keys, tv->table.keys, n * sizeof *keys);
            memcpy(values, tv->table.values, n * sizeof *values);
            memcpy(children, t.info->children, n * sizeof *children);
        }
        dsv3_free(tv->table.keys);
        dsv3_free(tv->table.values);
        dsv3_free(t.info->children);
        tv->table.keys = keys;
        tv->table.values = values;
        t.info->children = children;
        t.info->capacity = capacity;
    }
    tv->table.keys[n] = copy;
    tv->table.values[n] = *value;
    t.info->children[n] = child;
    tv->table.count = n + 1;
    return DSV3_OK;
}

// Adds an empty table of `kind` under `key` and points *out at it.
static Dsv3Err table_add_table(TableRef parent, const char *key, TableKind kind, int line,
                               TableRef *out) {
    TableInfo *info;
    DSV3_CALL(info_new(&info, kind, parent.info->depth + 1));
    Dsv3TomlValue v = {.type = DSV3_TOML_TABLE, .line = line};
    Dsv3Err err = table_append(parent, key, &v, info);
    if (err != DSV3_OK) {
        info_free(info);
        return dsv3_error_trace(err, __FILE__, __LINE__, __func__);
    }
    size_t i = parent.value->table.count - 1;
    *out = (TableRef){&parent.value->table.values[i], info};
    return DSV3_OK;
}

// ---- values ----

static Dsv3Err parse_value(Parser *p, int depth, Dsv3TomlValue *out, TableInfo **out_info);
static Dsv3Err parse_keyval(Parser *p, TableRef table);

// Skips blanks, newlines and comments, which may sit anywhere between array elements.
static Dsv3Err skip_blank(Parser *p) {
    for (;;) {
        skip_ws(p);
        if (at_newline(p)) {
            skip_newline(p);
        } else if (peek(p) == '#') {
            while (!at_end(p) && !at_newline(p)) {
                if (is_control(peek(p)))
                    return TOML_FAIL(p, p->line, "%s in a comment", describe(p));
                advance(p);
            }
        } else {
            return DSV3_OK;
        }
    }
}

// Reads '[' value *( ',' value ) [','] ']', across lines. A failure leaves the partial array in
// *out for parse_value to clear.
static Dsv3Err parse_array(Parser *p, int depth, Dsv3TomlValue *out) {
    int start = p->line;
    size_t capacity = 0;
    out->type = DSV3_TOML_ARRAY;
    advance(p);
    for (;;) {
        DSV3_CALL(skip_blank(p));
        if (peek(p) == ']') break;
        if (at_end(p))
            return TOML_FAIL(p, p->line, "array opened at line %d is not closed: expected ']'",
                             start);
        if (out->array.count == capacity) {
            size_t grown = capacity ? 2 * capacity : TOML_FIRST_CAPACITY;
            Dsv3TomlValue *items;
            DSV3_CALL(dsv3_calloc((void **)&items, grown, sizeof *items, "TOML array"));
            if (capacity) memcpy(items, out->array.items, capacity * sizeof *items);
            dsv3_free(out->array.items);
            out->array.items = items;
            capacity = grown;
        }
        TableInfo *info = NULL;
        DSV3_CALL(parse_value(p, depth + 1, &out->array.items[out->array.count], &info));
        info_free(info); // nothing can extend a table inside an array, so it needs no shadow
        out->array.count++;
        DSV3_CALL(skip_blank(p));
        if (peek(p) == ',') {
            advance(p);
        } else if (peek(p) == ']') {
            break;
        } else {
            if (at_end(p))
                return TOML_FAIL(p, p->line, "array opened at line %d is not closed: expected ']'",
                                 start);
            return TOML_FAIL(p, p->line, "expected ',' or ']' after an array element, found %s",
                             describe(p));
        }
    }
    advance(p); // ']'
    return DSV3_OK;
}

// Reads '{' [ keyval *( ',' keyval ) ] '}' on one line, as TOML 1.0 requires.
static Dsv3Err parse_inline_table(Parser *p, int depth, Dsv3TomlValue *out, TableInfo **out_info) {
    int start = p->line;
    out->type = DSV3_TOML_TABLE;
    DSV3_CALL(info_new(out_info, TABLE_INLINE, depth));
    TableRef t = {out, *out_info};
    advance(p);
    skip_ws(p);
    if (peek(p) == '}') {
        advance(p);
        return DSV3_OK;
    }
    for (;;) {
        if (at_end(p) || at_newline(p))
            return TOML_FAIL(p, p->line,
                             "inline table opened at line %d must end with '}' on "
                             "the same line",
                             start);
        if (peek(p) == '}') // only reachable right after a comma
            return TOML_FAIL(p, p->line, "trailing comma in an inline table (not allowed there)");
        DSV3_CALL(parse_keyval(p, t));
        skip_ws(p);
        if (peek(p) == '}') {
            advance(p);
            return DSV3_OK;
        }
        if (peek(p) == ',') {
            advance(p);
            skip_ws(p);
        } else if (!at_end(p) && !at_newline(p)) {
            return TOML_FAIL(p, p->line, "expected ',' or '}' in an inline table, found %s",
                             describe(p));
        }
    }
}

static int digit_value(int c, int base) {
    int v = hex_value(c);
    return v >= 0 && v < base ? v : -1;
}

// Moves *i over digits of `base` in s[*i, n), with '_' allowed only between two digits. Returns
// how many digits it read, or SIZE_MAX for a misplaced '_'.
static size_t scan_digits(const char *s, size_t n, size_t *i, int base) {
    size_t digits = 0;
    while (*i < n) {
        if (digit_value(s[*i], base) >= 0) {
            digits++;
        } else if (s[*i] == '_') {
            if (digits == 0 || *i + 1 >= n || digit_value(s[*i + 1], base) < 0) return SIZE_MAX;
        } else {
            break;
        }
        (*i)++;
    }
    return digits;
}

// Converts the digits of tok[begin, n) (already validated) to an int64, failing on overflow.
static Dsv3Err integer_value(const Parser *p, const char *tok, size_t n, size_t begin, int base,
                             bool negative, Dsv3TomlValue *out) {
    uint64_t limit = negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    uint64_t magnitude = 0;
    for (size_t k = begin; k < n; k++) {
        if (tok[k] == '_') continue;
        uint64_t d = (uint64_t)digit_value(tok[k], base);
        if (magnitude > (limit - d) / (uint64_t)base)
            return TOML_FAIL(p, p->line, "integer '%.*s' does not fit in 64 bits", (int)n, tok);
        magnitude = magnitude * (uint64_t)base + d;
    }
    out->type = DSV3_TOML_INTEGER;
    if (!negative)
        out->integer = (int64_t)magnitude;
    else if (magnitude == (uint64_t)INT64_MAX + 1)
        out->integer = INT64_MIN;
    else
        out->integer = -(int64_t)magnitude;
    return DSV3_OK;
}

// Converts a validated decimal float (with '_' separators) via strtod, which reads "C" locale
// digits: dsv3 never changes the locale.
static Dsv3Err float_value(const Parser *p, const char *tok, size_t n, Dsv3TomlValue *out) {
    char *clean;
    DSV3_CALL(dsv3_alloc((void **)&clean, n + 1, "TOML float"));
    size_t m = 0;
    for (size_t k = 0; k < n; k++)
        if (tok[k] != '_') clean[m++] = tok[k];
    clean[m] = '\0';
    errno = 0;
    char *end;
    double d = strtod(clean, &end);
    bool complete = end == clean + m, overflow = errno == ERANGE && isinf(d);
    dsv3_free(clean);
    if (!complete) return TOML_FAIL(p, p->line, "invalid float '%.*s'", (int)n, tok);
    if (overflow) return TOML_FAIL(p, p->line, "float '%.*s' is out of range", (int)n, tok);
    out->type = DSV3_TOML_FLOAT;
    out->number = d;
    return DSV3_OK;
}

// Reads an integer or float token: [sign] (inf | nan | digits [. digits] [e [sign] digits]), or
// an unsigned 0x / 0o / 0b integer.
static Dsv3Err number_value(const Parser *p, const char *tok, size_t n, Dsv3TomlValue *out) {
    int shown = n > TOML_SHOWN_CHARS ? TOML_SHOWN_CHARS : (int)n;
    size_t i = 0;
    bool has_sign = tok[0] == '+' || tok[0] == '-', negative = tok[0] == '-';
    if (has_sign) i = 1;
    if (n - i == 3 && (memcmp(tok + i, "inf", 3) == 0 || memcmp(tok + i, "nan", 3) == 0)) {
        out->type = DSV3_TOML_FLOAT;
        out->number = tok[i] == 'i' ? INFINITY : NAN;
        if (negative) out->number = -out->number;
        return DSV3_OK;
    }
    if (n - i >= 2 && tok[i] == '0' &&
        (tok[i + 1] == 'x' || tok[i + 1] == 'o' || tok[i + 1] == 'b')) {
        int base = tok[i + 1] == 'x' ? 16 : tok[i + 1] == 'o' ? 8 : 2;
        if (has_sign)
            return TOML_FAIL(p, p->line,
                             "hexadecimal, octal and binary integers cannot have a "
                             "sign: '%.*s'",
                             shown, tok);
        size_t j = i + 2;
        size_t digits = scan_digits(tok, n, &j, base);
        if (digits == 0 || digits == SIZE_MAX || j != n)
            return TOML_FAIL(p, p->line,
                             "invalid base-%d integer '%.*s' (digits may be separated "
                             "by single '_' only)",
                             base, shown, tok);
        DSV3_CALL(integer_value(p, tok, n, i + 2, base, false, out));
        return DSV3_OK;
    }
    if (i >= n || !is_digit(tok[i]))
        return TOML_FAIL(p, p->line, "invalid value '%.*s' (strings need quotes)", shown, tok);
    size_t j = i;
    size_t digits = scan_digits(tok, n, &j, 10);
    if (digits == SIZE_MAX)
        return TOML_FAIL(p, p->line, "misplaced '_' in '%.*s' ('_' must sit between digits)", shown,
                         tok);
    if (tok[i] == '0' && digits > 1)
        return TOML_FAIL(p, p->line, "leading zeros are not allowed in '%.*s'", shown, tok);
    bool is_float = false;
    if (j < n && tok[j] == '.') {
        j++;
        is_float = true;
        digits = scan_digits(tok, n, &j, 10);
        if (digits == 0 || digits == SIZE_MAX)
            return TOML_FAIL(p, p->line, "expected digits after '.' in '%.*s'", shown, tok);
    }
    if (j < n && (tok[j] == 'e' || tok[j] == 'E')) {
        j++;
        is_float = true;
        if (j < n && (tok[j] == '+' || tok[j] == '-')) j++;
        digits = scan_digits(tok, n, &j, 10);
        if (digits == 0 || digits == SIZE_MAX)
            return TOML_FAIL(p, p->line, "expected digits in the exponent of '%.*s'", shown, tok);
    }
    if (j != n) return TOML_FAIL(p, p->line, "invalid number '%.*s'", shown, tok);
    if (is_float)
        DSV3_CALL(float_value(p, tok, n, out));
    else
        DSV3_CALL(integer_value(p, tok, n, i, 10, negative, out));
    return DSV3_OK;
}

// Reads an unquoted value: a boolean or a number; dates and times are recognised to reject them.
static Dsv3Err parse_bare_value(Parser *p, Dsv3TomlValue *out) {
    size_t begin = p->pos;
    while (is_token_char(peek(p)))
        advance(p);
    const char *tok = p->text + begin;
    size_t n = p->pos - begin;
    int shown = n > TOML_SHOWN_CHARS ? TOML_SHOWN_CHARS : (int)n;
    if ((n == 4 && memcmp(tok, "true", 4) == 0) || (n == 5 && memcmp(tok, "false", 5) == 0)) {
        out->type = DSV3_TOML_BOOL;
        out->boolean = n == 4;
        return DSV3_OK;
    }
    bool date = n >= 5 && is_digit(tok[0]) && is_digit(tok[1]) && is_digit(tok[2]) &&
                is_digit(tok[3]) && tok[4] == '-';
    if (date || memchr(tok, ':', n))
        return TOML_FAIL(p, p->line,
                         "dates and times are not supported (found '%.*s'); use a "
                         "string",
                         shown, tok);
    DSV3_CALL(number_value(p, tok, n, out));
    return DSV3_OK;
}

// Reads any value into *out (zeroed by the caller); *out_info receives the shadow of an inline
// table. On failure both are left empty.
static Dsv3Err parse_value(Parser *p, int depth, Dsv3TomlValue *out, TableInfo **out_info) {
    if (depth > TOML_MAX_DEPTH)
        return TOML_FAIL(p, p->line, "values nest deeper than %d levels", TOML_MAX_DEPTH);
    int c = peek(p), line = p->line;
    Dsv3Err err;
    if (c == '"' || c == '\'') {
        out->type = DSV3_TOML_STRING;
        err = parse_string(p, true, &out->string);
    } else if (c == '[') {
        err = parse_array(p, depth, out);
    } else if (c == '{') {
        err = parse_inline_table(p, depth, out, out_info);
    } else if (is_token_char(c)) {
        err = parse_bare_value(p, out);
    } else {
        return TOML_FAIL(p, p->line,
                         "expected a value (string, number, boolean, array or inline "
                         "table), found %s",
                         describe(p));
    }
    if (err != DSV3_OK) {
        value_clear(out);
        info_free(*out_info);
        *out_info = NULL;
        return dsv3_error_trace(err, __FILE__, __LINE__, __func__);
    }
    out->line = line;
    return DSV3_OK;
}

// ---- statements ----

// Follows the parent parts of a dotted key from `t`, creating tables as needed; only tables that
// dotted keys created may be extended this way.
static Dsv3Err walk_dotted_key(Parser *p, TableRef *t, const KeyPath *k, int line) {
    char prefix[TOML_SHOWN_CHARS], name[TOML_SHOWN_CHARS];
    for (size_t i = 0; i + 1 < k->count; i++) {
        size_t j = table_find(t->value, k->parts[i]);
        if (j == t->value->table.count) {
            DSV3_CALL(table_add_table(*t, k->parts[i], TABLE_DOTTED, line, t));
            continue;
        }
        Dsv3TomlValue *v = &t->value->table.values[j];
        TableInfo *info = t->info->children[j];
        key_path_text(k, i + 1, prefix, sizeof prefix);
        key_path_text(k, k->count, name, sizeof name);
        if (v->type != DSV3_TOML_TABLE)
            return TOML_FAIL(p, line,
                             "key '%s' is already %s (line %d), so '%s' cannot be "
                             "added under it",
                             prefix, with_article(v->type), v->line, name);
        if (info->kind == TABLE_INLINE)
            return TOML_FAIL(p, line,
                             "cannot add '%s': table '%s' was defined inline at line %d "
                             "and inline tables cannot be extended",
                             name, prefix, v->line);
        if (info->kind != TABLE_DOTTED)
            return TOML_FAIL(p, line,
                             "cannot add '%s' with a dotted key: table '%s' comes from a "
                             "[table] header at line %d; add it in that section",
                             name, prefix, v->line);
        *t = (TableRef){v, info};
    }
    return DSV3_OK;
}

// Reads `key = value` into `table` (the current section, or an inline table being read).
static Dsv3Err parse_keyval(Parser *p, TableRef table) {
    int line = p->line;
    char name[TOML_SHOWN_CHARS];
    KeyPath k = {0};
    Dsv3TomlValue value = {0};
    TableInfo *value_info = NULL;
    Dsv3Err err;
    DSV3_CALL_GOTO(err, done, parse_key_path(p, &k));
    key_path_text(&k, k.count, name, sizeof name);
    if (peek(p) != '=') {
        err = TOML_FAIL(p, p->line, "expected '=' after key '%s', found %s", name, describe(p));
        goto done;
    }
    advance(p);
    skip_ws(p);
    if (table.info->depth + (int)k.count > TOML_MAX_DEPTH) {
        err = TOML_FAIL(p, line, "key '%s' nests deeper than %d levels", name, TOML_MAX_DEPTH);
        goto done;
    }
    TableRef t = table;
    DSV3_CALL_GOTO(err, done, walk_dotted_key(p, &t, &k, line));
    const char *last = k.parts[k.count - 1];
    size_t j = table_find(t.value, last);
    if (j < t.value->table.count) {
        err = TOML_FAIL(p, line, "key '%s' defined twice (first at line %d)", name,
                        t.value->table.values[j].line);
        goto done;
    }
    DSV3_CALL_GOTO(err, done, parse_value(p, t.info->depth + 1, &value, &value_info));
    DSV3_CALL_GOTO(err, done, table_append(t, last, &value, value_info));
    memset(&value, 0, sizeof value); // now owned by the table
    value_info = NULL;
done:
    key_path_clear(&k);
    value_clear(&value);
    info_free(value_info);
    return err;
}

// Finds or creates the table a [header] names and makes it the current section.
static Dsv3Err define_table(Parser *p, TableRef root, const KeyPath *k, int line,
                            TableRef *current) {
    char prefix[TOML_SHOWN_CHARS], name[TOML_SHOWN_CHARS];
    key_path_text(k, k->count, name, sizeof name);
    TableRef t = root;
    for (size_t i = 0; i < k->count; i++) {
        bool last = i + 1 == k->count;
        size_t j = table_find(t.value, k->parts[i]);
        if (j == t.value->table.count) {
            DSV3_CALL(
                table_add_table(t, k->parts[i], last ? TABLE_HEADER : TABLE_IMPLICIT, line, &t));
            continue;
        }
        Dsv3TomlValue *v = &t.value->table.values[j];
        TableInfo *info = t.info->children[j];
        key_path_text(k, i + 1, prefix, sizeof prefix);
        if (v->type != DSV3_TOML_TABLE)
            return TOML_FAIL(p, line, "key '%s' is already %s (line %d), so [%s] cannot be a table",
                             prefix, with_article(v->type), v->line, name);
        if (info->kind == TABLE_INLINE)
            return TOML_FAIL(p, line,
                             "table '%s' was defined inline at line %d and cannot be "
                             "extended by [%s]",
                             prefix, v->line, name);
        if (last && info->kind == TABLE_HEADER)
            return TOML_FAIL(p, line, "table [%s] defined twice (first at line %d)", name, v->line);
        if (last && info->kind == TABLE_DOTTED)
            return TOML_FAIL(p, line, "table [%s] was already defined by dotted keys at line %d",
                             name, v->line);
        if (last) {
            info->kind = TABLE_HEADER; // an implicit parent gets its own header once
            v->line = line;
        }
        t = (TableRef){v, info};
    }
    *current = t;
    return DSV3_OK;
}

// Reads a [table] header.
static Dsv3Err parse_header(Parser *p, TableRef root, TableRef *current) {
    int line = p->line;
    advance(p);
    if (peek(p) == '[')
        return TOML_FAIL(p, line,
                         "arrays of tables ([[...]]) are not supported; use an array of "
                         "inline tables");
    skip_ws(p);
    KeyPath k = {0};
    Dsv3Err err;
    DSV3_CALL_GOTO(err, done, parse_key_path(p, &k));
    if (peek(p) != ']') {
        err =
            TOML_FAIL(p, p->line, "expected ']' to close the table header, found %s", describe(p));
        goto done;
    }
    advance(p);
    DSV3_CALL_GOTO(err, done, define_table(p, root, &k, line, current));
done:
    key_path_clear(&k);
    return err;
}

// Reads the whole input: one key/value, header, comment or nothing per line.
static Dsv3Err parse_document(Parser *p, TableRef root) {
    TableRef current = root;
    for (;;) {
        skip_ws(p);
        if (at_end(p)) return DSV3_OK;
        if (at_newline(p)) {
            skip_newline(p);
            continue;
        }
        const char *what = "comment";
        if (peek(p) == '[') {
            what = "table header";
            DSV3_CALL(parse_header(p, root, &current));
        } else if (peek(p) != '#') {
            what = "value";
            DSV3_CALL(parse_keyval(p, current));
        }
        skip_ws(p);
        if (!at_end(p) && !at_newline(p) && peek(p) != '#')
            return TOML_FAIL(p, p->line, "expected the end of the line after the %s, found %s",
                             what, describe(p));
        DSV3_CALL(skip_blank(p)); // the comment, if any, then blank lines
    }
}

// ---- public ----

Dsv3Err dsv3_toml_parse(const char *text, size_t length, const char *source, Dsv3TomlValue **out) {
    DSV3_CHECK(out != NULL, DSV3_ERR_USAGE,
               "dsv3_toml_parse: out is NULL; pass where the tree goes");
    *out = NULL;
    DSV3_CHECK(text != NULL || length == 0, DSV3_ERR_USAGE,
               "dsv3_toml_parse: text is NULL but length is %zu", length);
    Parser p = {.text = text ? text : "",
                .length = length,
                .line = 1,
                .source = source ? source : "<toml>"};
    DSV3_CALL(check_encoding(&p));
    if (length >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) p.pos = 3; // a byte order mark
    Dsv3TomlValue *root = NULL;
    TableInfo *root_info = NULL;
    Dsv3Err err;
    DSV3_CALL_GOTO(err, fail, dsv3_calloc((void **)&root, 1, sizeof *root, "TOML root table"));
    root->type = DSV3_TOML_TABLE;
    root->line = 1;
    DSV3_CALL_GOTO(err, fail, info_new(&root_info, TABLE_HEADER, 0));
    DSV3_CALL_GOTO(err, fail, parse_document(&p, (TableRef){root, root_info}));
    info_free(root_info);
    *out = root;
    return DSV3_OK;
fail:
    info_free(root_info);
    dsv3_toml_free(root);
    return err;
}

void dsv3_toml_free(Dsv3TomlValue *root) {
    if (!root) return;
    value_clear(root);
    dsv3_free(root);
}

const Dsv3TomlValue *dsv3_toml_get(const Dsv3TomlValue *table, const char *key) {
    if (!table || !key || table->type != DSV3_TOML_TABLE) return NULL;
    size_t i = table_find(table, key);
    return i < table->table.count ? &table->table.values[i] : NULL;
}

const char *dsv3_toml_type_name(Dsv3TomlType type) {
    switch (type) {
    case DSV3_TOML_TABLE: return "table";
    case DSV3_TOML_ARRAY: return "array";
    case DSV3_TOML_STRING: return "string";
    case DSV3_TOML_INTEGER: return "integer";
    case DSV3_TOML_FLOAT: return "float";
    case DSV3_TOML_BOOL: return "boolean";
    }
    return "unknown";
}
