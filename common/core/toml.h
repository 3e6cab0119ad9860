// toml: a parser for the TOML that job configs use, into a tree of values.
//
// Supports tables ([a], [a.b]), dotted keys (a.b = 1), bare and quoted keys, basic strings with
// escapes (\n \t \" \\ \uXXXX \UXXXXXXXX), literal strings, multi-line strings, integers with
// `_` separators (and 0x/0o/0b), floats with fractions and exponents (inf, nan), booleans,
// arrays (nested, trailing comma, across lines), inline tables and comments. Dates and times
// and arrays of tables are rejected as unsupported, naming the line. Redefining a key or a
// table is an error. This module knows nothing of the job schema (see config.h).
#ifndef DSV3_CORE_TOML_H
#define DSV3_CORE_TOML_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef enum {
    DSV3_TOML_TABLE,
    DSV3_TOML_ARRAY,
    DSV3_TOML_STRING,
    DSV3_TOML_INTEGER,
    DSV3_TOML_FLOAT,
    DSV3_TOML_BOOL,
} Dsv3TomlType;

typedef struct Dsv3TomlValue Dsv3TomlValue;

struct Dsv3TomlValue {
    Dsv3TomlType type;
    int line; // 1-based line where the value (or table header) starts in the source
    union {
        char *string;    // DSV3_TOML_STRING: NUL-terminated UTF-8 (may not contain NUL)
        int64_t integer; // DSV3_TOML_INTEGER
        double number;   // DSV3_TOML_FLOAT
        int boolean;     // DSV3_TOML_BOOL: 0 or 1
        struct {
            Dsv3TomlValue *items;
            size_t count;
        } array; // DSV3_TOML_ARRAY
        struct {
            char **keys;           // in the order they first appear
            Dsv3TomlValue *values; // values[i] belongs to keys[i]
            size_t count;
        } table; // DSV3_TOML_TABLE
    };
};

// Parses `length` bytes of `text` (need not be NUL-terminated). `source` names the input in
// error messages ("conf/x.toml:12: expected '=' after key 'steps'"). On success *out is a
// table that the caller frees with dsv3_toml_free; on failure *out is NULL.
Dsv3Err dsv3_toml_parse(const char *text, size_t length, const char *source, Dsv3TomlValue **out);

// Frees a tree from dsv3_toml_parse; NULL is ignored.
void dsv3_toml_free(Dsv3TomlValue *root);

// The value under `key` (one key, not dotted) of a table, or NULL.
const Dsv3TomlValue *dsv3_toml_get(const Dsv3TomlValue *table, const char *key);

// "table", "array", "string", "integer", "float" or "boolean".
const char *dsv3_toml_type_name(Dsv3TomlType type);

#endif
