// tokenizer_pretok: Oniguruma patterns on PCRE2, the Split pre-tokenizer's behaviors, and
// leftmost-longest matching of added tokens.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/alloc.h"
#include "common/core/log.h"
#include "tokenizer_internal.h"

enum { PATTERN_ERROR_CAPACITY = 256 };

// ---- Oniguruma (Ruby syntax, as `tokenizers` compiles patterns) -> PCRE2 ----
//
// Escapes whose meaning differs are rewritten so they mean what they mean in Oniguruma:
//   \s \S   Unicode White_Space (Oniguruma), not PCRE2's \s (which adds U+180E under UCP)
//   \h \H   hexadecimal digit (Oniguruma), not horizontal space (PCRE2)
//   \uHHHH  a code point (Ruby), which PCRE2 spells \x{HHHH}
//   \p{X}   general category X of Oniguruma's Unicode version: PCRE2's own \p{X} plus the
//           characters assigned to X since PCRE2's Unicode version (tokenizer_unicode.c)
// Ruby's ^ and $ match at every line end: PCRE2_MULTILINE with LF newlines. Escapes and
// inline options whose meaning we cannot reproduce exactly are refused: \w \W \b \B (another
// set of word characters) and (?imx-...) (in Ruby (?m) is PCRE2's dotall).

typedef struct {
    char *text;
    size_t length, capacity;
} Buffer;

static Dsv3Err put(Buffer *b, const char *s, size_t n) {
    if (b->length + n + 1 > b->capacity) {
        size_t cap = b->capacity ? 2 * b->capacity : 256;
        while (cap < b->length + n + 1)
            cap *= 2;
        char *grown = NULL;
        DSV3_CALL(dsv3_alloc((void **)&grown, cap, "regex pattern"));
        if (b->length) memcpy(grown, b->text, b->length);
        dsv3_free(b->text);
        b->text = grown;
        b->capacity = cap;
    }
    memcpy(b->text + b->length, s, n);
    b->length += n;
    b->text[b->length] = '\0';
    return DSV3_OK;
}

static Dsv3Err puts_(Buffer *b, const char *s) { return put(b, s, strlen(s)); }

// PCRE2's Unicode major version against Oniguruma's (in `tokenizers`): <0 older, 0 same, >0 newer.
static int unicode_order(void) {
    char version[32] = "";
    pcre2_config(PCRE2_CONFIG_UNICODE_VERSION, version);
    return atoi(version) - atoi(DSV3_TOK_UNICODE_TO);
}

// Long general-category names Oniguruma accepts, and their short form.
static const char *short_category(const char *name) {
    static const char *const names[][2] = {
        {"Letter", "L"}, {"Mark", "M"},      {"Number", "N"}, {"Punctuation", "P"},
        {"Symbol", "S"}, {"Separator", "Z"}, {"Other", "C"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i][0]) == 0) return names[i][1];
    return name;
}

static int is_general_category(const char *name) {
    return strlen(name) <= 2 && strchr("LMNPSZC", name[0]) != NULL;
}

// \p{name} / \P{name} (negated), inside a character class or not.
static Dsv3Err put_property(Buffer *b, const char *name, int negated, int in_class,
                            const char *json_path, const char *file) {
    const char *cat = short_category(name);
    const char *items = NULL;
    if (unicode_order() < 0) {
        for (int i = 0; dsv3_tok_unicode_shrunk[i]; i++)
            DSV3_CHECK(strcmp(cat, dsv3_tok_unicode_shrunk[i]) != 0, DSV3_ERR_CONFIG,
                       "%s: %s: \\p{%s} is not supported with this PCRE2 (its Unicode version has "
                       "characters in "
                       "%s that Unicode %s moved out)",
                       file, json_path, name, cat, DSV3_TOK_UNICODE_TO);
        for (int i = 0; dsv3_tok_unicode_extra[i].category; i++)
            if (strcmp(cat, dsv3_tok_unicode_extra[i].category) == 0)
                items = dsv3_tok_unicode_extra[i].items;
    }
    if (!is_general_category(cat) && unicode_order() != 0)
        DSV3_LOG_WARN("%s: %s: \\p{%s} follows PCRE2's Unicode tables, not those of `tokenizers` "
                      "(Unicode %s): "
                      "characters assigned in between may split differently",
                      file, json_path, name, DSV3_TOK_UNICODE_TO);
    char prop[64];
    int n = snprintf(prop, sizeof prop, "\\p{%s}", cat);
    DSV3_CHECK(n > 0 && (size_t)n < sizeof prop, DSV3_ERR_CONFIG, "%s: %s: property name too long",
               file, json_path);
    if (!items) {
        if (negated) prop[1] = 'P';
        return puts_(b, prop);
    }
    DSV3_CHECK(!(negated && in_class), DSV3_ERR_CONFIG,
               "%s: %s: \\P{%s} inside a character class is not supported "
               "with this PCRE2 (older Unicode tables)",
               file, json_path, name);
    if (!in_class) DSV3_CALL(puts_(b, negated ? "[^" : "["));
    DSV3_CALL(puts_(b, prop));
    DSV3_CALL(puts_(b, items));
    if (!in_class) DSV3_CALL(puts_(b, "]"));
    return DSV3_OK;
}

static Dsv3Err translate_into(Buffer *b, const char *p, size_t n, const char *json_path,
                              const char *file) {
    int in_class = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '(' && !in_class && i + 2 < n && p[i + 1] == '?' &&
            (p[i + 2] == '-' || p[i + 2] == '^' ||
             ((p[i + 2] | 0x20) >= 'a' && (p[i + 2] | 0x20) <= 'z')))
            DSV3_RAISE(DSV3_ERR_CONFIG,
                       "%s: %s: inline option \"(?%c\" at byte %zu is not supported (Oniguruma and "
                       "PCRE2 read it differently)",
                       file, json_path, p[i + 2], i);
        if (c == '[') {
            if (in_class && i + 1 < n && p[i + 1] == ':') { // a POSIX class such as [:alpha:]
                const char *end = strstr(p + i, ":]");
                size_t len = end ? (size_t)(end - (p + i)) + 2 : 1;
                DSV3_CALL(put(b, p + i, len));
                i += len - 1;
                continue;
            }
            DSV3_CHECK(!in_class, DSV3_ERR_CONFIG,
                       "%s: %s: nested character classes (byte %zu) are not supported", file,
                       json_path, i);
            in_class = 1;
            DSV3_CALL(put(b, "[", 1));
            if (i + 1 < n && p[i + 1] == '^') DSV3_CALL(put(b, p + ++i, 1));
            if (i + 1 < n && p[i + 1] == ']')
                DSV3_CALL(put(b, p + ++i, 1)); // a leading ']' is literal
            continue;
        }
        if (c == ']' && in_class) in_class = 0;
        if (c != '\\' || i + 1 == n) {
            DSV3_CALL(put(b, &c, 1));
            continue;
        }
        char e = p[++i];
        if (e == 's' || e == 'S' || e == 'h' || e == 'H') {
            DSV3_CALL(puts_(b, e == 's'   ? "\\p{White_Space}"
                               : e == 'S' ? "\\P{White_Space}"
                               : e == 'h' ? "\\p{AHex}"
                                          : "\\P{AHex}"));
        } else if (e == 'w' || e == 'W' || e == 'b' || e == 'B') {
            DSV3_RAISE(DSV3_ERR_CONFIG,
                       "%s: %s: \\%c at byte %zu is not supported (Oniguruma's word characters "
                       "differ from PCRE2's)",
                       file, json_path, e, i - 1);
        } else if (e == 'u' && i + 4 < n && strspn(p + i + 1, "0123456789abcdefABCDEF") >= 4) {
            char code[16];
            snprintf(code, sizeof code, "\\x{%.4s}", p + i + 1);
            DSV3_CALL(puts_(b, code));
            i += 4;
        } else if ((e == 'p' || e == 'P') && i + 1 < n) {
            char name[48];
            size_t len = 1;
            if (p[i + 1] == '{') {
                const char *close = memchr(p + i + 2, '}', n - i - 2);
                DSV3_CHECK(close && (size_t)(close - (p + i + 2)) < sizeof name, DSV3_ERR_CONFIG,
                           "%s: %s: malformed \\%c{...} at byte %zu", file, json_path, e, i - 1);
                len = (size_t)(close - (p + i + 2));
                memcpy(name, p + i + 2, len);
                i += len + 2;
            } else {
                name[0] = p[++i];
            }
            name[len] = '\0';
            int negated = e == 'P';
            const char *bare = name;
            if (bare[0] == '^') negated = !negated, bare++;
            DSV3_CALL(put_property(b, bare, negated, in_class, json_path, file));
        } else {
            char pair[2] = {'\\', e};
            DSV3_CALL(put(b, pair, 2));
        }
    }
    return DSV3_OK;
}

static Dsv3Err translate(const char *p, size_t n, char **out, const char *json_path,
                         const char *file) {
    Buffer b = {0};
    Dsv3Err err = put(&b, "", 0);
    if (err == DSV3_OK) err = translate_into(&b, p, n, json_path, file);
    if (err != DSV3_OK) {
        dsv3_free(b.text);
        return dsv3_error_trace(err, __FILE__, __LINE__, __func__);
    }
    *out = b.text;
    return DSV3_OK;
}

// Compiles a PCRE2 pattern (UTF, LF newlines, plus `options`) with the JIT when it can.
static Dsv3Err compile_pcre2(pcre2_code **out, const char *pattern, size_t length, uint32_t options,
                             const char *json_path, const char *file) {
    *out = NULL;
    pcre2_compile_context *ctx = pcre2_compile_context_create(NULL);
    DSV3_CHECK(ctx, DSV3_ERR_MEMORY, "cannot allocate a PCRE2 compile context");
    pcre2_set_newline(ctx, PCRE2_NEWLINE_LF);
    int code = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)pattern, length, PCRE2_UTF | options, &code, &offset, ctx);
    pcre2_compile_context_free(ctx);
    if (!re) {
        PCRE2_UCHAR message[PATTERN_ERROR_CAPACITY];
        pcre2_get_error_message(code, message, sizeof message);
        DSV3_RAISE(
            DSV3_ERR_CONFIG,
            "%s: %s: the pattern does not compile (at byte %zu of the translated pattern): %s",
            file, json_path, (size_t)offset, (const char *)message);
    }
    // The JIT makes matching several times faster; without it (no JIT on this CPU) PCRE2
    // interprets the same pattern, so a failure here changes nothing but speed.
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    *out = re;
    return DSV3_OK;
}

Dsv3Err dsv3_tok_compile(pcre2_code **out, const char *pattern, size_t length, int regex,
                         const char *json_path, const char *file) {
    // PCRE2 (10.42) refuses PCRE2_UCP with PCRE2_LITERAL, and a literal has no classes for it
    // to change.
    if (!regex) return compile_pcre2(out, pattern, length, PCRE2_LITERAL, json_path, file);
    char *translated = NULL;
    DSV3_CALL(translate(pattern, length, &translated, json_path, file));
    Dsv3Err err = compile_pcre2(out, translated, strlen(translated), PCRE2_UCP | PCRE2_MULTILINE,
                                json_path, file);
    dsv3_free(translated);
    return err;
}

Dsv3Err dsv3_tok_compile_digits(pcre2_code **out, int individual, const char *json_path,
                                const char *file) {
    // PCRE2's \p{N} (Nd, Nl, No of its Unicode version) and the digits that Rust's newer
    // char::is_numeric adds (tokenizer_unicode.c); not Oniguruma's \p{N}, which `tokenizers`
    // uses for Split regexes only.
    Buffer b = {0};
    Dsv3Err err = puts_(&b, "[\\p{N}");
    if (err == DSV3_OK) err = puts_(&b, DSV3_TOK_DIGITS_EXTRA);
    if (err == DSV3_OK) err = puts_(&b, individual ? "]" : "]+");
    if (err == DSV3_OK) err = compile_pcre2(out, b.text, b.length, PCRE2_UCP, json_path, file);
    dsv3_free(b.text);
    return err;
}

Dsv3Err dsv3_tok_pieces_push(TokPieces *p, size_t start, size_t length, int is_match) {
    if (p->count == p->capacity) {
        size_t cap = p->capacity ? 2 * p->capacity : 64;
        TokPiece *grown = NULL;
        DSV3_CALL(dsv3_alloc((void **)&grown, cap * sizeof *grown, "pre-token pieces"));
        if (p->count) memcpy(grown, p->items, p->count * sizeof *grown);
        dsv3_free(p->items);
        p->items = grown;
        p->capacity = cap;
    }
    p->items[p->count++] = (TokPiece){start, length, is_match};
    return DSV3_OK;
}

// Length of the UTF-8 character at s (the text is valid UTF-8 here).
static size_t char_length(unsigned char c) {
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

// The matches of `step` in one piece as alternating (range, is_match) entries covering it,
// as tokenizers' find_matches: after an empty match the search moves on by one character.
static Dsv3Err find_matches(Dsv3Tokenizer *t, const TokSplitStep *step, const char *text,
                            TokPiece piece) {
    TokPieces *m = &t->matches;
    m->count = 0;
    const char *subject = text + piece.start;
    size_t prev = 0, at = 0;
    while (at <= piece.length) {
        int rc = pcre2_match(step->code, (PCRE2_SPTR)subject, piece.length, at, PCRE2_NO_UTF_CHECK,
                             t->match, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        // 0: the pattern captures groups that the one-pair match data has no room for; the
        // whole match (pair 0), the only one used, is still there.
        DSV3_CHECK(rc >= 0, DSV3_ERR_INTERNAL, "PCRE2 match failed with code %d in %s", rc,
                   t->path);
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->match);
        size_t s = ov[0], e = ov[1];
        if (s > prev) DSV3_CALL(dsv3_tok_pieces_push(m, piece.start + prev, s - prev, 0));
        DSV3_CALL(dsv3_tok_pieces_push(m, piece.start + s, e - s, 1));
        prev = e;
        if (e > s)
            at = e;
        else if (e < piece.length)
            at = e + char_length((unsigned char)subject[e]);
        else
            break;
    }
    if (prev < piece.length)
        DSV3_CALL(dsv3_tok_pieces_push(m, piece.start + prev, piece.length - prev, 0));
    if (step->invert)
        for (size_t i = 0; i < m->count; i++)
            m->items[i].is_match = !m->items[i].is_match;
    return DSV3_OK;
}

// Applies the behavior to t->matches, appending the non-empty pieces to `out`
// (tokenizers' SplitDelimiterBehavior).
static Dsv3Err apply_behavior(Dsv3Tokenizer *t, TokSplitBehavior behavior, TokPieces *out) {
    TokPieces *m = &t->matches;
    size_t first = out->count;
    int prev_match = 0;
    if (behavior == TOK_SPLIT_MERGED_WITH_NEXT) {
        // Walk backwards, growing the following piece leftwards, then restore the order.
        for (size_t k = m->count; k-- > 0;) {
            TokPiece p = m->items[k];
            if (p.is_match && !prev_match && out->count > first) {
                TokPiece *last = &out->items[out->count - 1];
                last->length += last->start - p.start;
                last->start = p.start;
            } else {
                DSV3_CALL(dsv3_tok_pieces_push(out, p.start, p.length, 0));
            }
            prev_match = p.is_match;
        }
        for (size_t a = first, b = out->count; a + 1 < b; a++, b--) {
            TokPiece tmp = out->items[a];
            out->items[a] = out->items[b - 1];
            out->items[b - 1] = tmp;
        }
    } else {
        for (size_t k = 0; k < m->count; k++) {
            TokPiece p = m->items[k];
            int extend =
                (behavior == TOK_SPLIT_MERGED_WITH_PREVIOUS && p.is_match && !prev_match) ||
                (behavior == TOK_SPLIT_CONTIGUOUS && p.is_match == prev_match);
            if (behavior == TOK_SPLIT_REMOVED && p.is_match) {
                // dropped
            } else if (extend && out->count > first) {
                TokPiece *last = &out->items[out->count - 1];
                last->length = p.start + p.length - last->start;
            } else {
                DSV3_CALL(dsv3_tok_pieces_push(out, p.start, p.length, 0));
            }
            prev_match = p.is_match;
        }
    }
    // Empty pieces (from empty matches) vanish, as in tokenizers.
    size_t kept = first;
    for (size_t k = first; k < out->count; k++)
        if (out->items[k].length) out->items[kept++] = out->items[k];
    out->count = kept;
    return DSV3_OK;
}

Dsv3Err dsv3_tok_pretokenize(Dsv3Tokenizer *t, const char *text, TokPieces *in) {
    for (int s = 0; s < t->n_steps; s++) {
        TokPieces *out = &t->next_pieces;
        out->count = 0;
        for (size_t k = 0; k < in->count; k++) {
            DSV3_CALL(find_matches(t, &t->steps[s], text, in->items[k]));
            DSV3_CALL(apply_behavior(t, t->steps[s].behavior, out));
        }
        TokPieces swap = *in;
        *in = *out;
        *out = swap;
    }
    return DSV3_OK;
}

// ---- added tokens ----

static const TokAddedSet *sort_set; // qsort has no context argument

static int bucket_of(const TokAddedSet *s, int32_t i) {
    return (unsigned char)s->text[i][0] << 8 | (unsigned char)s->text[i][1];
}

static int compare_added(const void *a, const void *b) {
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    int bi = bucket_of(sort_set, i), bj = bucket_of(sort_set, j);
    if (bi != bj) return bi - bj;
    if (sort_set->length[i] != sort_set->length[j])
        return sort_set->length[j] - sort_set->length[i];
    return i - j;
}

Dsv3Err dsv3_tok_added_build(TokAddedSet *set, const char **text, const int32_t *length,
                             const int32_t *id, int32_t count) {
    memset(set, 0, sizeof *set);
    for (int b = 0; b < TOK_BYTE_VALUES; b++)
        set->single[b] = -1;
    Dsv3Err err = DSV3_OK;
    int32_t *order = NULL, multi = 0;
    DSV3_CALL_GOTO(
        err, fail,
        dsv3_calloc((void **)&set->bucket, TOK_PAIR_BUCKETS + 1, sizeof *set->bucket, "added"));
    DSV3_CALL_GOTO(err, fail,
                   dsv3_calloc((void **)&set->text, (size_t)count + 1, sizeof *set->text, "added"));
    DSV3_CALL_GOTO(
        err, fail,
        dsv3_calloc((void **)&set->length, (size_t)count + 1, sizeof *set->length, "added"));
    DSV3_CALL_GOTO(err, fail,
                   dsv3_calloc((void **)&set->id, (size_t)count + 1, sizeof *set->id, "added"));
    DSV3_CALL_GOTO(err, fail,
                   dsv3_calloc((void **)&order, (size_t)count + 1, sizeof *order, "added"));
    for (int32_t i = 0; i < count; i++) {
        set->lead[(unsigned char)text[i][0]] = 1;
        if (length[i] == 1) {
            // A later duplicate wins, as a later insert into tokenizers' map does.
            set->single[(unsigned char)text[i][0]] = id[i];
            continue;
        }
        set->text[multi] = text[i];
        set->length[multi] = length[i];
        set->id[multi] = id[i];
        order[multi] = multi;
        multi++;
    }
    set->count = multi;
    sort_set = set;
    qsort(order, (size_t)multi, sizeof *order, compare_added);
    {
        const char **t2 = NULL;
        int32_t *l2 = NULL, *i2 = NULL;
        DSV3_CALL_GOTO(err, fail,
                       dsv3_calloc((void **)&t2, (size_t)multi + 1, sizeof *t2, "added"));
        err = dsv3_calloc((void **)&l2, (size_t)multi + 1, sizeof *l2, "added");
        if (err == DSV3_OK) err = dsv3_calloc((void **)&i2, (size_t)multi + 1, sizeof *i2, "added");
        if (err != DSV3_OK) {
            dsv3_free(t2);
            dsv3_free(l2);
            goto fail;
        }
        for (int32_t k = 0; k < multi; k++) {
            t2[k] = set->text[order[k]];
            l2[k] = set->length[order[k]];
            i2[k] = set->id[order[k]];
        }
        dsv3_free(set->text);
        dsv3_free(set->length);
        dsv3_free(set->id);
        set->text = t2, set->length = l2, set->id = i2;
    }
    for (int32_t k = 0; k < multi; k++)
        set->bucket[bucket_of(set, k) + 1]++;
    for (int b = 0; b < TOK_PAIR_BUCKETS; b++)
        set->bucket[b + 1] += set->bucket[b];
    dsv3_free(order);
    return DSV3_OK;
fail:
    dsv3_free(order);
    dsv3_tok_added_free(set);
    return err;
}

void dsv3_tok_added_free(TokAddedSet *set) {
    dsv3_free(set->bucket);
    dsv3_free(set->text);
    dsv3_free(set->length);
    dsv3_free(set->id);
    memset(set, 0, sizeof *set);
}

int dsv3_tok_added_find(const TokAddedSet *set, const char *text, size_t from, size_t end,
                        size_t *match_start, size_t *match_length, int32_t *id) {
    if (!set->bucket) return 0;
    for (size_t i = from; i < end; i++) {
        unsigned char b0 = (unsigned char)text[i];
        if (!set->lead[b0]) continue;
        if (i + 1 < end) {
            int key = b0 << 8 | (unsigned char)text[i + 1];
            // Longest first within the bucket, so the first that fits is the longest.
            for (int32_t k = set->bucket[key]; k < set->bucket[key + 1]; k++) {
                size_t n = (size_t)set->length[k];
                if (n <= end - i && memcmp(text + i, set->text[k], n) == 0) {
                    *match_start = i, *match_length = n, *id = set->id[k];
                    return 1;
                }
            }
        }
        if (set->single[b0] >= 0) {
            *match_start = i, *match_length = 1, *id = set->single[b0];
            return 1;
        }
    }
    return 0;
}
