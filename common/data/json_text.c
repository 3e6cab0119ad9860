// json_text: a strict JSON (RFC 8259) parser for one line that decodes a single string field.
#include "json_text.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/core/alloc.h"

enum {
    MAX_DEPTH = 512,       // nesting limit (Python's json.loads stops near its recursion limit)
    HEX_DIGITS = 4,        // \uXXXX
    ESCAPE_U_LENGTH = 6,   // the bytes of "\uXXXX"
    FIRST_CAPACITY = 256,  // first size of a decode buffer
    REASON_CAPACITY = 160, // the reason, leaving room for the prefix and the column
};

static const uint32_t HIGH_SURROGATE_FIRST = 0xD800, HIGH_SURROGATE_LAST = 0xDBFF,
                      LOW_SURROGATE_FIRST = 0xDC00, LOW_SURROGATE_LAST = 0xDFFF,
                      SUPPLEMENTARY_FIRST = 0x10000, REPLACEMENT_CHARACTER = 0xFFFD;

// A decode target: the field's text or the key being compared.
typedef struct {
    char **bytes;
    size_t *length, *capacity;
    int64_t *lone_surrogates;
} Target;

typedef struct {
    const unsigned char *s;
    size_t n, at;
    char *why;
    Dsv3Err err; // out of memory while decoding
} Parser;

// Records why the line is malformed (column = 1-based byte position); returns 0.
static int malformed(Parser *p, size_t at, const char *fmt, ...) {
    char reason[REASON_CAPACITY];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    snprintf(p->why, DSV3_JSON_TEXT_WHY_CAPACITY, "not a JSON value: %s at column %zu", reason,
             at + 1);
    return 0;
}

static void skip_space(Parser *p) {
    while (p->at < p->n && (p->s[p->at] == ' ' || p->s[p->at] == '\t' || p->s[p->at] == '\n' ||
                            p->s[p->at] == '\r'))
        p->at++;
}

static int append(Parser *p, const Target *t, const void *bytes, size_t n) {
    if (!t || n == 0) return 1;
    if (*t->length + n > *t->capacity) {
        size_t cap = *t->capacity ? *t->capacity : FIRST_CAPACITY;
        while (cap < *t->length + n)
            cap *= 2;
        char *grown = NULL;
        p->err = dsv3_alloc((void **)&grown, cap, "JSON text");
        if (p->err != DSV3_OK) {
            snprintf(p->why, DSV3_JSON_TEXT_WHY_CAPACITY, "out of memory");
            return 0;
        }
        if (*t->length) memcpy(grown, *t->bytes, *t->length);
        dsv3_free(*t->bytes);
        *t->bytes = grown;
        *t->capacity = cap;
    }
    memcpy(*t->bytes + *t->length, bytes, n);
    *t->length += n;
    return 1;
}

// The UTF-8 of code point c in u; returns its length.
static size_t utf8_encode(uint32_t c, unsigned char u[4]) {
    if (c < 0x80) {
        u[0] = (unsigned char)c;
        return 1;
    }
    if (c < 0x800) {
        u[0] = (unsigned char)(0xC0 | c >> 6), u[1] = (unsigned char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < SUPPLEMENTARY_FIRST) {
        u[0] = (unsigned char)(0xE0 | c >> 12), u[1] = (unsigned char)(0x80 | (c >> 6 & 0x3F));
        u[2] = (unsigned char)(0x80 | (c & 0x3F));
        return 3;
    }
    u[0] = (unsigned char)(0xF0 | c >> 18), u[1] = (unsigned char)(0x80 | (c >> 12 & 0x3F));
    u[2] = (unsigned char)(0x80 | (c >> 6 & 0x3F)), u[3] = (unsigned char)(0x80 | (c & 0x3F));
    return 4;
}

static int append_code_point(Parser *p, const Target *t, uint32_t c) {
    unsigned char u[4];
    size_t n = utf8_encode(c, u);
    return append(p, t, u, n);
}

// The 4 hex digits at s[0 .. available) as a code unit, or -1.
static int32_t hex4_at(const unsigned char *s, size_t available) {
    if (available < HEX_DIGITS) return -1;
    int32_t v = 0;
    for (int i = 0; i < HEX_DIGITS; i++) {
        unsigned char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) return -1;
        v = v << 4 | d;
    }
    return v;
}

static int32_t hex4(const Parser *p, size_t at) { return hex4_at(p->s + at, p->n - at); }

// The code point of a surrogate pair of escapes "\uD8xx\uDCxx" at s[0 .. available), or 0.
static uint32_t surrogate_pair_at(const unsigned char *s, size_t available) {
    if (available < 2 * ESCAPE_U_LENGTH || s[0] != '\\' || s[1] != 'u' ||
        s[ESCAPE_U_LENGTH] != '\\' || s[ESCAPE_U_LENGTH + 1] != 'u')
        return 0;
    int32_t high = hex4_at(s + 2, HEX_DIGITS), low = hex4_at(s + ESCAPE_U_LENGTH + 2, HEX_DIGITS);
    if (high < (int32_t)HIGH_SURROGATE_FIRST || high > (int32_t)HIGH_SURROGATE_LAST ||
        low < (int32_t)LOW_SURROGATE_FIRST || low > (int32_t)LOW_SURROGATE_LAST)
        return 0;
    return SUPPLEMENTARY_FIRST + (((uint32_t)high - HIGH_SURROGATE_FIRST) << 10) +
           ((uint32_t)low - LOW_SURROGATE_FIRST);
}

// A \u escape at p->at (the backslash): one code point, or a surrogate pair as json.loads
// joins them; a lone surrogate becomes U+FFFD.
static int unicode_escape(Parser *p, const Target *t) {
    int32_t unit = hex4(p, p->at + 2);
    if (unit < 0) return malformed(p, p->at, "an invalid \\u escape (4 hex digits expected)");
    uint32_t c = surrogate_pair_at(p->s + p->at, p->n - p->at);
    if (c) {
        p->at += 2 * ESCAPE_U_LENGTH;
        return append_code_point(p, t, c);
    }
    c = (uint32_t)unit;
    p->at += ESCAPE_U_LENGTH;
    if (c >= HIGH_SURROGATE_FIRST && c <= LOW_SURROGATE_LAST) {
        c = REPLACEMENT_CHARACTER;
        if (t) (*t->lone_surrogates)++;
    }
    return append_code_point(p, t, c);
}

// A string at p->at (the opening quote), decoded into t (NULL: only validated).
static int string(Parser *p, const Target *t) {
    size_t open = p->at++;
    for (;;) {
        size_t run = p->at;
        while (p->at < p->n && p->s[p->at] != '"' && p->s[p->at] != '\\' && p->s[p->at] >= 0x20)
            p->at++;
        if (!append(p, t, p->s + run, p->at - run)) return 0;
        if (p->at == p->n)
            return malformed(p, open, "a string that does not end on its line, opened");
        unsigned char c = p->s[p->at];
        if (c == '"') {
            p->at++;
            return 1;
        }
        if (c < 0x20)
            return malformed(p, p->at,
                             "a raw control character 0x%02X inside a string (JSON needs it "
                             "escaped, e.g. \\u%04X)",
                             c, c);
        if (p->at + 1 == p->n)
            return malformed(p, open, "a string that does not end on its line, opened");
        unsigned char e = p->s[p->at + 1];
        if (e == 'u') {
            if (!unicode_escape(p, t)) return 0;
            continue;
        }
        const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
        const char *k = e ? strchr(from, e) : NULL;
        if (!k) {
            if (e >= 0x20 && e < 0x7F) return malformed(p, p->at, "an invalid escape \\%c", e);
            return malformed(p, p->at, "an invalid escape (backslash before byte 0x%02X)", e);
        }
        if (!append(p, t, to + (k - from), 1)) return 0;
        p->at += 2;
    }
}

static int is_digit(const Parser *p) {
    return p->at < p->n && p->s[p->at] >= '0' && p->s[p->at] <= '9';
}

static int number(Parser *p) {
    size_t start = p->at;
    if (p->s[p->at] == '-') p->at++;
    if (!is_digit(p)) return malformed(p, start, "a malformed number");
    if (p->s[p->at] == '0') {
        p->at++;
        if (is_digit(p)) return malformed(p, start, "a number with a leading zero");
    } else {
        while (is_digit(p))
            p->at++;
    }
    if (p->at < p->n && p->s[p->at] == '.') {
        p->at++;
        if (!is_digit(p)) return malformed(p, start, "a malformed number (no digit after '.')");
        while (is_digit(p))
            p->at++;
    }
    if (p->at < p->n && (p->s[p->at] == 'e' || p->s[p->at] == 'E')) {
        p->at++;
        if (p->at < p->n && (p->s[p->at] == '+' || p->s[p->at] == '-')) p->at++;
        if (!is_digit(p)) return malformed(p, start, "a malformed number (no digit in exponent)");
        while (is_digit(p))
            p->at++;
    }
    return 1;
}

static int literal(Parser *p) {
    static const char *const words[] = {"true", "false", "null"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        size_t n = strlen(words[i]);
        if (p->n - p->at >= n && memcmp(p->s + p->at, words[i], n) == 0) {
            p->at += n;
            return 1;
        }
    }
    if (p->n - p->at >= 3 && (memcmp(p->s + p->at, "NaN", 3) == 0 ||
                              (p->n - p->at >= 8 && memcmp(p->s + p->at, "Infinity", 8) == 0)))
        return malformed(p, p->at, "NaN or Infinity (not JSON numbers)");
    return 0;
}

// What the value at p->at starts with, when it cannot start a value.
static int unexpected(Parser *p) {
    if (p->at == p->n) return malformed(p, p->at, "unexpected end of line");
    unsigned char c = p->s[p->at];
    if (c == '\'') return malformed(p, p->at, "a single quote (JSON strings take double quotes)");
    if (c == '/' && p->at + 1 < p->n && (p->s[p->at + 1] == '/' || p->s[p->at + 1] == '*'))
        return malformed(p, p->at, "a comment (JSON has none)");
    if (c > 0x20 && c < 0x7F) return malformed(p, p->at, "unexpected character '%c'", c);
    return malformed(p, p->at, "unexpected byte 0x%02X", c);
}

static int value(Parser *p, int depth, const Target *t, int *is_string);

// After a member or element: ',' (not before the closing bracket) or the closing bracket.
// Returns 1 with *more = 1 after a ',', *more = 0 at the end.
static int separator(Parser *p, char close, int *more) {
    skip_space(p);
    if (p->at < p->n && p->s[p->at] == close) {
        p->at++;
        *more = 0;
        return 1;
    }
    if (p->at < p->n && p->s[p->at] == ',') {
        size_t comma = p->at++;
        skip_space(p);
        if (p->at < p->n && p->s[p->at] == close) return malformed(p, comma, "a trailing comma");
        *more = 1;
        return 1;
    }
    if (p->at == p->n || p->s[p->at] == '/' || p->s[p->at] == '\'') return unexpected(p);
    return malformed(p, p->at, "'%c' or ',' expected", close);
}

static int array(Parser *p, int depth) {
    p->at++;
    skip_space(p);
    if (p->at < p->n && p->s[p->at] == ']') {
        p->at++;
        return 1;
    }
    for (int more = 1; more;) {
        int is_string;
        if (!value(p, depth, NULL, &is_string) || !separator(p, ']', &more)) return 0;
    }
    return 1;
}

// The object at p->at. For the top-level object (find != NULL), a member named find->name has
// its string value decoded into find->target; find->found says what it was.
typedef struct {
    const char *name;
    size_t name_length;
    const Target *target, *key;
    enum { FIELD_MISSING, FIELD_STRING, FIELD_NOT_STRING } found;
} Find;

static int object(Parser *p, int depth, Find *find) {
    p->at++;
    skip_space(p);
    if (p->at < p->n && p->s[p->at] == '}') {
        p->at++;
        return 1;
    }
    for (int more = 1; more;) {
        skip_space(p);
        if (p->at == p->n || p->s[p->at] != '"') {
            if (p->at < p->n && p->s[p->at] != '\'' && p->s[p->at] != '/')
                return malformed(p, p->at, "an object key that is not a string in double quotes");
            return unexpected(p);
        }
        if (find) *find->key->length = 0;
        if (!string(p, find ? find->key : NULL)) return 0;
        int wanted = find && *find->key->length == find->name_length &&
                     memcmp(*find->key->bytes, find->name, find->name_length) == 0;
        skip_space(p);
        if (p->at == p->n || p->s[p->at] != ':') return malformed(p, p->at, "':' expected");
        p->at++;
        int is_string = 0;
        if (wanted) {
            *find->target->length = 0;
            *find->target->lone_surrogates = 0;
        }
        if (!value(p, depth, wanted ? find->target : NULL, &is_string)) return 0;
        if (wanted) find->found = is_string ? FIELD_STRING : FIELD_NOT_STRING;
        if (!separator(p, '}', &more)) return 0;
    }
    return 1;
}

// One value at p->at (after space); strings decode into t when given.
static int value(Parser *p, int depth, const Target *t, int *is_string) {
    skip_space(p);
    *is_string = 0;
    if (p->at == p->n) return unexpected(p);
    if (depth >= MAX_DEPTH) return malformed(p, p->at, "nesting deeper than %d levels", MAX_DEPTH);
    unsigned char c = p->s[p->at];
    if (c == '"') {
        *is_string = 1;
        return string(p, t);
    }
    if (c == '{') return object(p, depth + 1, NULL);
    if (c == '[') return array(p, depth + 1);
    if (c == '-' || (c >= '0' && c <= '9')) return number(p);
    if (literal(p)) return 1;
    if (p->why[0]) return 0;
    return unexpected(p);
}

Dsv3Err dsv3_json_text_field(Dsv3JsonText *out, const char *line, size_t length, const char *field,
                             int *ok, char why[DSV3_JSON_TEXT_WHY_CAPACITY]) {
    why[0] = '\0';
    *ok = 0;
    out->length = 0;
    out->lone_surrogates = 0;
    Parser p = {.s = (const unsigned char *)line, .n = length, .why = why, .err = DSV3_OK};
    int64_t key_lone = 0;
    Target text = {&out->text, &out->length, &out->capacity, &out->lone_surrogates};
    Target key = {&out->key, &out->key_length, &out->key_capacity, &key_lone};
    Find find = {field, strlen(field), &text, &key, FIELD_MISSING};
    skip_space(&p);
    int is_object = p.at < p.n && p.s[p.at] == '{', is_string, parsed;
    parsed = is_object ? object(&p, 1, &find) : value(&p, 0, NULL, &is_string);
    if (p.err != DSV3_OK) return dsv3_error_trace(p.err, __FILE__, __LINE__, __func__);
    if (!parsed) return DSV3_OK;
    skip_space(&p);
    if (p.at < p.n && p.s[p.at] == '/') { // a comment, or a stray '/'
        unexpected(&p);
        return DSV3_OK;
    }
    if (p.at < p.n) {
        snprintf(why, DSV3_JSON_TEXT_WHY_CAPACITY, "text after the JSON value at column %zu",
                 p.at + 1);
        return DSV3_OK;
    }
    if (!is_object)
        snprintf(why, DSV3_JSON_TEXT_WHY_CAPACITY, "not a JSON object");
    else if (find.found != FIELD_STRING)
        snprintf(why, DSV3_JSON_TEXT_WHY_CAPACITY, "field \"%s\" is %s", field,
                 find.found == FIELD_MISSING ? "missing" : "not a string");
    else
        *ok = 1;
    if (!*ok) out->length = 0, out->lone_surrogates = 0;
    return DSV3_OK;
}

void dsv3_json_text_join_surrogate_pairs(char *text, size_t *length) {
    unsigned char *s = (unsigned char *)text;
    size_t n = *length, out = 0;
    int in_string = 0;
    for (size_t at = 0; at < n;) {
        if (in_string && s[at] == '\\') {
            uint32_t c = surrogate_pair_at(s + at, n - at);
            if (c) {
                out += utf8_encode(c, s + out);
                at += 2 * ESCAPE_U_LENGTH;
                continue;
            }
            s[out++] = s[at++]; // the backslash, then the escaped character below
            if (at == n) break;
        } else if (s[at] == '"') {
            in_string = !in_string;
        }
        s[out++] = s[at++];
    }
    *length = out;
}

void dsv3_json_text_free(Dsv3JsonText *t) {
    dsv3_free(t->text);
    dsv3_free(t->key);
    memset(t, 0, sizeof *t);
}
