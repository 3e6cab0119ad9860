// json_text: the text of one string field of a JSON object held on one line (a JSON lines
// record), for the text reader.
//
// The line is validated as strict JSON (RFC 8259): single quotes, trailing commas, comments,
// numbers with leading zeros, NaN/Infinity, raw control characters inside strings and invalid
// escapes are errors, each with the reason and the 1-based byte column. The field's string is
// decoded exactly as Python's json.loads decodes it: every escape, surrogate pairs written as
// two \u escapes joined into one supplementary-plane character. A lone or mismatched surrogate
// escape (which json.loads keeps as a lone surrogate, a string that `tokenizers` cannot take and
// UTF-8 cannot hold) becomes U+FFFD, one per escape, and is counted. Bytes of the line that are
// not escapes are copied as they are (invalid UTF-8 is the tokenizer's to replace). When a key
// repeats, the last one wins, as in json.loads.
//
// Not here: reading files (text_reader.h), JSON values other than the field's (they are only
// validated), JSON documents spanning several lines (but see the surrogate-pair rewrite below).
#ifndef DSV3_DATA_JSON_TEXT_H
#define DSV3_DATA_JSON_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "common/core/error.h"

enum { DSV3_JSON_TEXT_WHY_CAPACITY = 256 };

// The decoded field of the last line parsed; its buffer is reused from line to line.
typedef struct {
    char *text; // the field's UTF-8 (not NUL-terminated), valid until the next parse
    size_t length, capacity;
    int64_t lone_surrogates; // lone surrogate escapes replaced by U+FFFD in `text`
    char *key;               // scratch: the decoded key being compared with the field name
    size_t key_length, key_capacity;
} Dsv3JsonText;

// Parses line[0 .. length) and decodes its top-level `field` into out. *ok = 0 when the line
// is malformed, not an object, or its field is missing or not a string: then `why` says which
// (NUL-terminated). Fails only when out of memory.
Dsv3Err dsv3_json_text_field(Dsv3JsonText *out, const char *line, size_t length, const char *field,
                             int *ok, char why[DSV3_JSON_TEXT_WHY_CAPACITY]);

void dsv3_json_text_free(Dsv3JsonText *t);

// Rewrites every surrogate pair of escapes inside the strings of the JSON text[0 .. *length) as
// the UTF-8 of its code point, in place (the text only shrinks), leaving everything else as it
// is: for JSON libraries that decode some pairs wrongly (json-c turns the 32,768 whose code
// point's low 16 bits are 0xD800-0xDFFF, U+1D800-U+1DFFF ... U+10D800-U+10DFFF, into U+FFFD).
void dsv3_json_text_join_surrogate_pairs(char *text, size_t *length);

#endif
