// tokenizer_load: reads tokenizer.json and tokenizer_config.json into a Dsv3Tokenizer,
// refusing (with the JSON path) anything whose behaviour we do not reproduce exactly.
#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "common/core/alloc.h"
#include "common/core/log.h"
#include "json_text.h"
#include "tokenizer_internal.h"

enum {
    JSON_PATH_CAPACITY = 256,
    FILE_PATH_CAPACITY = 4096,
    // GPT-2's byte alphabet uses code points below 0x144 (bytes without a printable
    // character of their own go to 0x100 + n).
    BYTE_ALPHABET_LIMIT = 0x144,
    BYTE_ALPHABET_SHIFT = 0x100,
};

// Largest id we accept, so per-id arrays stay sane and ids fit int32.
static const int64_t MAX_TOKEN_ID = 1 << 26;

// code point -> byte for GPT-2's bytes_to_unicode alphabet, -1 outside it.
static int16_t byte_of_char[BYTE_ALPHABET_LIMIT];

static void init_alphabet(void) {
    for (int c = 0; c < BYTE_ALPHABET_LIMIT; c++)
        byte_of_char[c] = -1;
    int n = 0;
    for (int b = 0; b < TOK_BYTE_VALUES; b++) {
        int printable =
            (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        byte_of_char[printable ? b : BYTE_ALPHABET_SHIFT + n++] = (int16_t)b;
    }
}

uint64_t dsv3_tok_hash(const char *bytes, size_t length) {
    uint64_t h = 1469598103934665603ull; // FNV-1a offset basis and prime
    for (size_t i = 0; i < length; i++)
        h = (h ^ (unsigned char)bytes[i]) * 1099511628211ull;
    return h | 1; // never 0, the cache's empty mark
}

// Decodes one UTF-8 character at s[0 .. n); returns its length (1 for an invalid byte, with
// *cp = -1).
static int utf8_char(const unsigned char *s, size_t n, int32_t *cp) {
    int len = s[0] < 0x80         ? 1
              : (s[0] >> 5) == 6  ? 2
              : (s[0] >> 4) == 14 ? 3
              : (s[0] >> 3) == 30 ? 4
                                  : 0;
    if (len == 0 || (size_t)len > n) {
        *cp = -1;
        return 1;
    }
    int32_t c = len == 1 ? s[0] : s[0] & (0x7F >> len);
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *cp = -1;
            return 1;
        }
        c = (c << 6) | (s[i] & 0x3F);
    }
    *cp = c;
    return len;
}

// Makes room for n more bytes in the token byte pool.
static Dsv3Err pool_reserve(Dsv3Tokenizer *t, size_t n) {
    if (t->pool_length + n <= t->pool_capacity) return DSV3_OK;
    size_t cap = (t->pool_length + n) * 2;
    char *grown = NULL;
    DSV3_CALL(dsv3_alloc((void **)&grown, cap, "tokenizer token bytes"));
    if (t->pool_length) memcpy(grown, t->pool, t->pool_length);
    dsv3_free(t->pool);
    t->pool = grown;
    t->pool_capacity = cap;
    return DSV3_OK;
}

// Maps a byte-level string to bytes as the ByteLevel decoder does: characters of the alphabet
// become their byte, any other character stays as its UTF-8. Appends to the pool; returns
// whether every character was in the alphabet.
static Dsv3Err pool_append_bytelevel(Dsv3Tokenizer *t, const char *s, size_t n, int64_t *offset,
                                     int32_t *length, int *representable) {
    DSV3_CALL(pool_reserve(t, n));
    *offset = (int64_t)t->pool_length;
    *representable = 1;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        int32_t cp;
        int len = utf8_char(u + i, n - i, &cp);
        if (cp >= 0 && cp < BYTE_ALPHABET_LIMIT && byte_of_char[cp] >= 0) {
            t->pool[t->pool_length++] = (char)byte_of_char[cp];
        } else {
            *representable = 0;
            memcpy(t->pool + t->pool_length, s + i, (size_t)len);
            t->pool_length += (size_t)len;
        }
        i += (size_t)len;
    }
    *length = (int32_t)(t->pool_length - (size_t)*offset);
    return DSV3_OK;
}

int32_t dsv3_tok_lookup(const Dsv3Tokenizer *t, const char *bytes, size_t length) {
    for (size_t i = dsv3_tok_hash(bytes, length) & t->lookup_mask;; i = (i + 1) & t->lookup_mask) {
        int32_t id = t->lookup[i];
        if (id < 0) return -1;
        if ((size_t)t->decode_length[id] == length &&
            memcmp(t->pool + t->decode_offset[id], bytes, length) == 0)
            return id;
    }
}

static void lookup_insert(Dsv3Tokenizer *t, int32_t id) {
    const char *b = t->pool + t->decode_offset[id];
    size_t n = (size_t)t->decode_length[id];
    size_t i = dsv3_tok_hash(b, n) & t->lookup_mask;
    while (t->lookup[i] >= 0)
        i = (i + 1) & t->lookup_mask;
    t->lookup[i] = id;
}

static size_t merge_slot(size_t mask, int32_t left, int32_t right) {
    uint64_t h = ((uint64_t)(uint32_t)left << 32 | (uint32_t)right) * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 20) & mask;
}

// Later duplicates of a pair replace earlier ones, as in `tokenizers` (a hash map insert).
static void merge_insert(Dsv3Tokenizer *t, int32_t left, int32_t right, int32_t rank,
                         int32_t merged) {
    size_t i = merge_slot(t->merge_mask, left, right);
    while (t->merges[i].left >= 0 && !(t->merges[i].left == left && t->merges[i].right == right))
        i = (i + 1) & t->merge_mask;
    t->merges[i] = (TokMerge){left, right, rank, merged};
}

// ---- JSON helpers: every failure names the file and the JSON path. ----

typedef struct {
    const char *file;
    char path[JSON_PATH_CAPACITY];
} Where;

static Dsv3Err member(const Where *w, json_object *obj, const char *key, json_type type,
                      int required, json_object **out) {
    *out = NULL;
    json_object *v = NULL;
    if (!json_object_object_get_ex(obj, key, &v) || v == NULL) {
        DSV3_CHECK(!required, DSV3_ERR_CONFIG, "%s: %s%s%s is missing", w->file, w->path,
                   w->path[0] ? "." : "", key);
        return DSV3_OK;
    }
    DSV3_CHECK(json_object_is_type(v, type), DSV3_ERR_CONFIG,
               "%s: %s%s%s must be a JSON %s, not %s", w->file, w->path, w->path[0] ? "." : "", key,
               json_type_to_name(type), json_type_to_name(json_object_get_type(v)));
    *out = v;
    return DSV3_OK;
}

// Fails unless obj.key is absent, null, false, 0 or "" (a feature we do not implement).
static Dsv3Err require_off(const Where *w, json_object *obj, const char *key) {
    json_object *v = NULL;
    if (!json_object_object_get_ex(obj, key, &v) || v == NULL) return DSV3_OK;
    int off =
        (json_object_is_type(v, json_type_boolean) && !json_object_get_boolean(v)) ||
        ((json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double)) &&
         json_object_get_double(v) == 0.0) ||
        (json_object_is_type(v, json_type_string) && json_object_get_string_len(v) == 0);
    DSV3_CHECK(off, DSV3_ERR_CONFIG, "%s: %s%s%s = %s is not supported (only null/false)", w->file,
               w->path, w->path[0] ? "." : "", key,
               json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
    return DSV3_OK;
}

static Dsv3Err type_of(const Where *w, json_object *obj, const char **type) {
    json_object *v;
    DSV3_CALL(member(w, obj, "type", json_type_string, 1, &v));
    *type = json_object_get_string(v);
    return DSV3_OK;
}

static Dsv3Err unsupported_type(const Where *w, const char *type, const char *supported) {
    DSV3_RAISE(DSV3_ERR_CONFIG, "%s: %s.type = \"%s\" is not supported (supported: %s)", w->file,
               w->path, type, supported);
}

static void sub_path(Where *child, const Where *parent, const char *key, int index) {
    child->file = parent->file;
    int n = index >= 0 ? snprintf(child->path, sizeof child->path, "%s%s%s[%d]", parent->path,
                                  parent->path[0] ? "." : "", key, index)
                       : snprintf(child->path, sizeof child->path, "%s%s%s", parent->path,
                                  parent->path[0] ? "." : "", key);
    if (n < 0 || (size_t)n >= sizeof child->path)
        strcpy(child->path + sizeof child->path - 4, "...");
}

// ---- sections of tokenizer.json ----

// null, or Sequences (possibly nested) of nothing: the text is left as it is.
static Dsv3Err load_normalizer(const Where *w, json_object *n) {
    if (n == NULL) return DSV3_OK;
    const char *type;
    DSV3_CALL(type_of(w, n, &type));
    if (strcmp(type, "Sequence") != 0)
        return unsupported_type(
            w, type, "null or a \"Sequence\" of none (normalizers that change text are not)");
    json_object *list;
    DSV3_CALL(member(w, n, "normalizers", json_type_array, 1, &list));
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        Where c;
        sub_path(&c, w, "normalizers", (int)i);
        DSV3_CALL(load_normalizer(&c, json_object_array_get_idx(list, i)));
    }
    return DSV3_OK;
}

static Dsv3Err add_step(Dsv3Tokenizer *t, pcre2_code *code, TokSplitBehavior behavior, int invert) {
    TokSplitStep *grown = NULL;
    Dsv3Err err = dsv3_alloc((void **)&grown, (size_t)(t->n_steps + 1) * sizeof *grown,
                             "pre-tokenizer steps");
    if (err != DSV3_OK) {
        pcre2_code_free(code);
        return err;
    }
    if (t->n_steps) memcpy(grown, t->steps, (size_t)t->n_steps * sizeof *grown);
    dsv3_free(t->steps);
    t->steps = grown;
    t->steps[t->n_steps++] = (TokSplitStep){code, behavior, invert};
    return DSV3_OK;
}

static Dsv3Err load_split(Dsv3Tokenizer *t, const Where *w, json_object *p) {
    json_object *pattern, *behavior, *invert, *v;
    DSV3_CALL(member(w, p, "pattern", json_type_object, 1, &pattern));
    DSV3_CALL(member(w, p, "behavior", json_type_string, 1, &behavior));
    DSV3_CALL(member(w, p, "invert", json_type_boolean, 0, &invert));
    static const char *const names[] = {"Isolated", "Removed", "MergedWithPrevious",
                                        "MergedWithNext", "Contiguous"};
    int b = -1;
    for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++)
        if (strcmp(json_object_get_string(behavior), names[i]) == 0) b = i;
    DSV3_CHECK(b >= 0, DSV3_ERR_CONFIG, "%s: %s.behavior = \"%s\" is not a Split behavior", w->file,
               w->path, json_object_get_string(behavior));
    Where pw;
    sub_path(&pw, w, "pattern", -1);
    int regex = json_object_object_get_ex(pattern, "Regex", &v);
    if (!regex) DSV3_CALL(member(&pw, pattern, "String", json_type_string, 1, &v));
    DSV3_CHECK(json_object_is_type(v, json_type_string), DSV3_ERR_CONFIG,
               "%s: %s.%s must be a string", w->file, pw.path, regex ? "Regex" : "String");
    char jp[JSON_PATH_CAPACITY + 16];
    snprintf(jp, sizeof jp, "%s.%s", pw.path, regex ? "Regex" : "String");
    pcre2_code *code = NULL;
    DSV3_CALL(dsv3_tok_compile(&code, json_object_get_string(v),
                               (size_t)json_object_get_string_len(v), regex, jp, w->file));
    return add_step(t, code, (TokSplitBehavior)b, invert && json_object_get_boolean(invert));
}

// GPT-2's pattern, which ByteLevel applies when use_regex is true.
static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static Dsv3Err load_pretokenizer(Dsv3Tokenizer *t, const Where *w, json_object *p,
                                 int *saw_bytelevel) {
    const char *type;
    DSV3_CALL(type_of(w, p, &type));
    DSV3_CHECK(!*saw_bytelevel, DSV3_ERR_CONFIG,
               "%s: %s: nothing may follow the ByteLevel pre-tokenizer", w->file, w->path);
    if (strcmp(type, "Sequence") == 0) {
        json_object *list;
        DSV3_CALL(member(w, p, "pretokenizers", json_type_array, 1, &list));
        size_t n = json_object_array_length(list);
        for (size_t i = 0; i < n; i++) {
            Where c;
            sub_path(&c, w, "pretokenizers", (int)i);
            DSV3_CALL(load_pretokenizer(t, &c, json_object_array_get_idx(list, i), saw_bytelevel));
        }
        return DSV3_OK;
    }
    if (strcmp(type, "Split") == 0) return load_split(t, w, p);
    if (strcmp(type, "Digits") == 0) {
        json_object *individual;
        DSV3_CALL(member(w, p, "individual_digits", json_type_boolean, 0, &individual));
        int each = individual && json_object_get_boolean(individual);
        pcre2_code *code = NULL;
        DSV3_CALL(dsv3_tok_compile_digits(&code, each, w->path, w->file));
        return add_step(t, code, TOK_SPLIT_ISOLATED, 0);
    }
    if (strcmp(type, "ByteLevel") == 0) {
        json_object *use_regex;
        DSV3_CALL(require_off(w, p, "add_prefix_space"));
        DSV3_CALL(member(w, p, "use_regex", json_type_boolean, 0, &use_regex));
        *saw_bytelevel = 1;
        // Absent use_regex means true, as in `tokenizers`.
        if (use_regex == NULL || json_object_get_boolean(use_regex)) {
            pcre2_code *code = NULL;
            DSV3_CALL(dsv3_tok_compile(&code, GPT2_PATTERN, sizeof GPT2_PATTERN - 1, 1, w->path,
                                       w->file));
            DSV3_CALL(add_step(t, code, TOK_SPLIT_ISOLATED, 0));
        }
        return DSV3_OK;
    }
    return unsupported_type(w, type, "\"Sequence\", \"Split\", \"Digits\", \"ByteLevel\"");
}

// Only offsets change under these, never ids.
static Dsv3Err load_post_processor(const Where *w, json_object *p) {
    if (p == NULL) return DSV3_OK;
    const char *type;
    DSV3_CALL(type_of(w, p, &type));
    if (strcmp(type, "ByteLevel") == 0) return DSV3_OK;
    return unsupported_type(
        w, type,
        "null or \"ByteLevel\" (templates that add tokens are not; BOS and EOS come "
        "from tokenizer_config.json)");
}

static Dsv3Err load_decoder(const Where *w, json_object *d) {
    DSV3_CHECK(d != NULL, DSV3_ERR_CONFIG,
               "%s: decoder is null: only the \"ByteLevel\" decoder is supported", w->file);
    const char *type;
    DSV3_CALL(type_of(w, d, &type));
    if (strcmp(type, "ByteLevel") == 0) return DSV3_OK;
    return unsupported_type(w, type, "\"ByteLevel\"");
}

// Largest id of model.vocab and added_tokens, checking each.
static Dsv3Err max_id(const Where *w, json_object *vocab, json_object *added, int64_t *out) {
    int64_t m = -1;
    json_object_object_foreach(vocab, key, val) {
        DSV3_CHECK(json_object_is_type(val, json_type_int), DSV3_ERR_CONFIG,
                   "%s: model.vocab[\"%s\"] must be an integer id", w->file, key);
        int64_t id = json_object_get_int64(val);
        DSV3_CHECK(id >= 0 && id < MAX_TOKEN_ID, DSV3_ERR_CONFIG,
                   "%s: model.vocab[\"%s\"] = %lld is not in [0, %lld)", w->file, key,
                   (long long)id, (long long)MAX_TOKEN_ID);
        if (id > m) m = id;
    }
    for (size_t i = 0; added && i < json_object_array_length(added); i++) {
        json_object *a = json_object_array_get_idx(added, i), *id;
        Where c;
        sub_path(&c, w, "added_tokens", (int)i);
        DSV3_CHECK(json_object_is_type(a, json_type_object), DSV3_ERR_CONFIG,
                   "%s: %s must be an object", w->file, c.path);
        DSV3_CALL(member(&c, a, "id", json_type_int, 1, &id));
        int64_t v = json_object_get_int64(id);
        DSV3_CHECK(v >= 0 && v < MAX_TOKEN_ID, DSV3_ERR_CONFIG,
                   "%s: %s.id = %lld is not in [0, %lld)", w->file, c.path, (long long)v,
                   (long long)MAX_TOKEN_ID);
        if (v > m) m = v;
    }
    DSV3_CHECK(m >= 0, DSV3_ERR_CONFIG, "%s: model.vocab is empty", w->file);
    *out = m + 1;
    return DSV3_OK;
}

static size_t pow2_above(size_t n) {
    size_t p = 16;
    while (p < n)
        p <<= 1;
    return p;
}

static Dsv3Err load_vocab(Dsv3Tokenizer *t, const Where *w, json_object *vocab) {
    size_t n = (size_t)json_object_object_length(vocab);
    t->lookup_mask = pow2_above(2 * n) - 1;
    DSV3_CALL(dsv3_alloc((void **)&t->lookup, (t->lookup_mask + 1) * sizeof *t->lookup,
                         "tokenizer lookup"));
    memset(t->lookup, 0xFF, (t->lookup_mask + 1) * sizeof *t->lookup);
    json_object_object_foreach(vocab, key, val) {
        int32_t id = (int32_t)json_object_get_int64(val);
        DSV3_CHECK(t->decode_offset[id] < 0, DSV3_ERR_CONFIG,
                   "%s: model.vocab[\"%s\"] = %d: that id is used twice", w->file, key, id);
        int representable;
        DSV3_CALL(pool_append_bytelevel(t, key, strlen(key), &t->decode_offset[id],
                                        &t->decode_length[id], &representable));
        // Not representable (or empty): decode only, since merges of raw bytes never produce it.
        if (!representable || t->decode_length[id] == 0) continue;
        DSV3_CHECK(
            dsv3_tok_lookup(t, t->pool + t->decode_offset[id], (size_t)t->decode_length[id]) < 0,
            DSV3_ERR_CONFIG, "%s: model.vocab[\"%s\"]: the same bytes have two ids", w->file, key);
        lookup_insert(t, id);
    }
    for (int b = 0; b < TOK_BYTE_VALUES; b++) {
        char c = (char)b;
        t->byte_id[b] = dsv3_tok_lookup(t, &c, 1);
    }
    return DSV3_OK;
}

// Raw bytes of a byte-level string into buf (at most cap); -1 if not representable.
static long to_raw(const char *s, size_t n, char *buf, size_t cap) {
    size_t out = 0;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        int32_t cp;
        i += (size_t)utf8_char(u + i, n - i, &cp);
        if (cp < 0 || cp >= BYTE_ALPHABET_LIMIT || byte_of_char[cp] < 0 || out >= cap) return -1;
        buf[out++] = (char)byte_of_char[cp];
    }
    return (long)out;
}

enum { MERGE_TOKEN_CAPACITY = 1024 };

static Dsv3Err load_merges(Dsv3Tokenizer *t, const Where *w, json_object *merges) {
    size_t n = json_object_array_length(merges);
    t->merge_mask = pow2_above(2 * n + 1) - 1;
    DSV3_CALL(dsv3_alloc((void **)&t->merges, (t->merge_mask + 1) * sizeof *t->merges,
                         "tokenizer merges"));
    memset(t->merges, 0xFF, (t->merge_mask + 1) * sizeof *t->merges);
    char a[MERGE_TOKEN_CAPACITY * 2], b[MERGE_TOKEN_CAPACITY];
    for (size_t i = 0; i < n; i++) {
        json_object *m = json_object_array_get_idx(merges, i);
        const char *left, *right;
        size_t nl, nr;
        if (json_object_is_type(m, json_type_string)) {
            const char *s = json_object_get_string(m), *space = strchr(s, ' ');
            DSV3_CHECK(space && !strchr(space + 1, ' '), DSV3_ERR_CONFIG,
                       "%s: model.merges[%zu] = \"%s\" must be two tokens separated by one space",
                       w->file, i, s);
            left = s, nl = (size_t)(space - s), right = space + 1, nr = strlen(space + 1);
        } else {
            DSV3_CHECK(json_object_is_type(m, json_type_array) &&
                           json_object_array_length(m) == 2 &&
                           json_object_is_type(json_object_array_get_idx(m, 0), json_type_string) &&
                           json_object_is_type(json_object_array_get_idx(m, 1), json_type_string),
                       DSV3_ERR_CONFIG, "%s: model.merges[%zu] must be \"a b\" or [\"a\", \"b\"]",
                       w->file, i);
            left = json_object_get_string(json_object_array_get_idx(m, 0));
            right = json_object_get_string(json_object_array_get_idx(m, 1));
            nl = strlen(left), nr = strlen(right);
        }
        long ra = to_raw(left, nl, a, MERGE_TOKEN_CAPACITY),
             rb = to_raw(right, nr, b, MERGE_TOKEN_CAPACITY);
        if (ra < 0 || rb < 0)
            continue; // involves a token raw bytes never form: the merge never fires
        int32_t ia = dsv3_tok_lookup(t, a, (size_t)ra), ib = dsv3_tok_lookup(t, b, (size_t)rb);
        DSV3_CHECK(ia >= 0 && ib >= 0, DSV3_ERR_CONFIG,
                   "%s: model.merges[%zu]: token \"%.*s\" is not in model.vocab", w->file, i,
                   (int)(ia < 0 ? nl : nr), ia < 0 ? left : right);
        memcpy(a + ra, b, (size_t)rb);
        int32_t merged = dsv3_tok_lookup(t, a, (size_t)(ra + rb));
        DSV3_CHECK(merged >= 0, DSV3_ERR_CONFIG,
                   "%s: model.merges[%zu]: the merged token \"%.*s%.*s\" is not in "
                   "model.vocab",
                   w->file, i, (int)nl, left, (int)nr, right);
        merge_insert(t, ia, ib, (int32_t)i, merged);
    }
    return DSV3_OK;
}

static Dsv3Err check_model_type(const Where *root, json_object *model) {
    Where w;
    sub_path(&w, root, "model", -1);
    const char *type;
    DSV3_CALL(type_of(&w, model, &type));
    if (strcmp(type, "BPE") != 0) return unsupported_type(&w, type, "\"BPE\"");
    return DSV3_OK;
}

// model: a BPE model (check_model_type has seen its type).
static Dsv3Err load_model(Dsv3Tokenizer *t, const Where *root, json_object *model) {
    Where w;
    sub_path(&w, root, "model", -1);
    DSV3_CALL(require_off(&w, model, "dropout"));
    DSV3_CALL(require_off(&w, model, "continuing_subword_prefix"));
    DSV3_CALL(require_off(&w, model, "end_of_word_suffix"));
    DSV3_CALL(require_off(&w, model, "byte_fallback"));
    json_object *ignore, *vocab, *merges, *unk;
    DSV3_CALL(member(&w, model, "ignore_merges", json_type_boolean, 0, &ignore));
    t->ignore_merges = ignore && json_object_get_boolean(ignore);
    DSV3_CALL(member(&w, model, "vocab", json_type_object, 1, &vocab));
    DSV3_CALL(member(&w, model, "merges", json_type_array, 1, &merges));
    DSV3_CALL(load_vocab(t, &w, vocab));
    DSV3_CALL(load_merges(t, &w, merges));
    // An unknown token only stands in for a byte the vocabulary lacks.
    DSV3_CALL(member(&w, model, "unk_token", json_type_string, 0, &unk));
    for (int b = 0; unk && b < TOK_BYTE_VALUES; b++)
        DSV3_CHECK(t->byte_id[b] >= 0, DSV3_ERR_CONFIG,
                   "%s: model.unk_token is set and byte 0x%02x has no token: "
                   "unknown-token substitution is not supported",
                   w.file, b);
    return DSV3_OK;
}

static Dsv3Err load_added(Dsv3Tokenizer *t, const Where *root, json_object *added) {
    size_t n = added ? json_object_array_length(added) : 0;
    const char **text[2] = {NULL, NULL};
    int32_t *length[2] = {NULL, NULL}, *id[2] = {NULL, NULL}, count[2] = {0, 0};
    Dsv3Err err = DSV3_OK;
    for (int s = 0; s < 2; s++) {
        DSV3_CALL_GOTO(err, done,
                       dsv3_calloc((void **)&text[s], n + 1, sizeof *text[s], "added tokens"));
        DSV3_CALL_GOTO(err, done,
                       dsv3_calloc((void **)&length[s], n + 1, sizeof *length[s], "added tokens"));
        DSV3_CALL_GOTO(err, done,
                       dsv3_calloc((void **)&id[s], n + 1, sizeof *id[s], "added tokens"));
    }
    for (size_t i = 0; i < n; i++) {
        json_object *a = json_object_array_get_idx(added, i), *content, *special, *normalized, *idv;
        Where w;
        sub_path(&w, root, "added_tokens", (int)i);
        DSV3_CALL_GOTO(err, done, member(&w, a, "content", json_type_string, 1, &content));
        DSV3_CALL_GOTO(err, done, member(&w, a, "id", json_type_int, 1, &idv));
        DSV3_CALL_GOTO(err, done, member(&w, a, "special", json_type_boolean, 0, &special));
        DSV3_CALL_GOTO(err, done, member(&w, a, "normalized", json_type_boolean, 0, &normalized));
        DSV3_CALL_GOTO(err, done, require_off(&w, a, "single_word"));
        DSV3_CALL_GOTO(err, done, require_off(&w, a, "lstrip"));
        DSV3_CALL_GOTO(err, done, require_off(&w, a, "rstrip"));
        int32_t tid = (int32_t)json_object_get_int64(idv);
        size_t len = (size_t)json_object_get_string_len(content);
        DSV3_CHECK_GOTO(err, done, len > 0, DSV3_ERR_CONFIG, "%s: %s.content is empty", w.file,
                        w.path);
        int is_special = special && json_object_get_boolean(special);
        // `tokenizers` defaults "normalized" to the opposite of "special".
        int is_normalized = normalized ? json_object_get_boolean(normalized) : !is_special;
        int representable;
        DSV3_CALL_GOTO(err, done,
                       pool_append_bytelevel(t, json_object_get_string(content), len,
                                             &t->decode_offset[tid], &t->decode_length[tid],
                                             &representable));
        t->flags[tid] = (uint8_t)(TOK_FLAG_ADDED | (is_special ? TOK_FLAG_SPECIAL : 0));
        int s = is_normalized ? 1 : 0;
        text[s][count[s]] = json_object_get_string(content);
        length[s][count[s]] = (int32_t)len;
        id[s][count[s]++] = tid;
    }
    // The added sets must outlive json-c's strings: copy their raw bytes into the pool (as
    // offsets first, since the pool may move while it grows).
    for (int s = 0; s < 2; s++)
        for (int32_t i = 0; i < count[s]; i++) {
            DSV3_CALL_GOTO(err, done, pool_reserve(t, (size_t)length[s][i]));
            memcpy(t->pool + t->pool_length, text[s][i], (size_t)length[s][i]);
            text[s][i] = (const char *)(uintptr_t)t->pool_length;
            t->pool_length += (size_t)length[s][i];
        }
    for (int s = 0; s < 2; s++)
        for (int32_t i = 0; i < count[s]; i++)
            text[s][i] = t->pool + (uintptr_t)text[s][i];
    DSV3_CALL_GOTO(err, done,
                   dsv3_tok_added_build(&t->added_raw, text[0], length[0], id[0], count[0]));
    DSV3_CALL_GOTO(err, done,
                   dsv3_tok_added_build(&t->added_normalized, text[1], length[1], id[1], count[1]));
done:
    for (int s = 0; s < 2; s++) {
        dsv3_free(text[s]);
        dsv3_free(length[s]);
        dsv3_free(id[s]);
    }
    return err;
}

// Reads a whole file into a counted buffer (`what` names it in messages).
static Dsv3Err read_text(const char *file, const char *what, char **out, size_t *length) {
    *out = NULL;
    *length = 0;
    FILE *f = fopen(file, "rb");
    DSV3_CHECK(f, DSV3_ERR_IO, "cannot read %s '%s': %s", what, file, strerror(errno));
    char *text = NULL;
    Dsv3Err err = DSV3_OK;
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    DSV3_CHECK_GOTO(err, done, size >= 0 && size < INT_MAX && fseek(f, 0, SEEK_SET) == 0,
                    DSV3_ERR_IO, "cannot read %s '%s': %s", what, file,
                    size >= INT_MAX ? "larger than 2 GiB" : strerror(errno));
    DSV3_CALL_GOTO(err, done, dsv3_alloc((void **)&text, (size_t)size + 1, what));
    DSV3_CHECK_GOTO(err, done, fread(text, 1, (size_t)size, f) == (size_t)size, DSV3_ERR_IO,
                    "cannot read %s '%s': %s", what, file, strerror(errno));
    *out = text, *length = (size_t)size;
    text = NULL;
done:
    dsv3_free(text);
    fclose(f);
    return err;
}

// Parses JSON text with json-c after rewriting, in place, the surrogate-pair escapes that json-c
// would decode wrongly (json_text.h); `file` and `what` name the text in messages.
static Dsv3Err parse_json(char *text, size_t length, const char *file, const char *what,
                          json_object **out) {
    *out = NULL;
    DSV3_CHECK(length < INT_MAX, DSV3_ERR_IO, "cannot read %s '%s': larger than 2 GiB", what, file);
    dsv3_json_text_join_surrogate_pairs(text, &length);
    json_tokener *tok = json_tokener_new();
    DSV3_CHECK(tok, DSV3_ERR_MEMORY, "cannot allocate a JSON parser");
    *out = json_tokener_parse_ex(tok, text, (int)length);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    json_tokener_free(tok);
    if (jerr != json_tokener_success && *out) {
        json_object_put(*out);
        *out = NULL;
    }
    DSV3_CHECK(*out, DSV3_ERR_IO, "cannot read %s '%s': not valid JSON (%s)", what, file,
               jerr == json_tokener_continue ? "unexpected end of file"
                                             : json_tokener_error_desc(jerr));
    return DSV3_OK;
}

// Reads and parses a JSON file.
static Dsv3Err read_json(const char *file, const char *what, json_object **out) {
    *out = NULL;
    char *text = NULL;
    size_t length = 0;
    DSV3_CALL(read_text(file, what, &text, &length));
    Dsv3Err err = parse_json(text, length, file, what, out);
    dsv3_free(text);
    return err;
}

// tokenizer.json from its text (parsed in place); `file` names it in messages.
static Dsv3Err load_tokenizer_json(Dsv3Tokenizer *t, const char *file, char *text, size_t length) {
    json_object *root = NULL;
    DSV3_CALL(parse_json(text, length, file, "tokenizer", &root));
    Dsv3Err err = DSV3_OK;
    Where w = {.file = file, .path = ""};
    json_object *normalizer = NULL, *pre = NULL, *model = NULL, *post = NULL, *decoder = NULL,
                *vocab = NULL, *added = NULL;
    DSV3_CHECK_GOTO(err, done, json_object_is_type(root, json_type_object), DSV3_ERR_CONFIG,
                    "%s: the top level must be a JSON object", file);
    // The model's kind first: a Unigram or WordLevel tokenizer is named as such, not by the
    // first of its other fields that a BPE tokenizer would not have.
    DSV3_CALL_GOTO(err, done, member(&w, root, "model", json_type_object, 1, &model));
    DSV3_CALL_GOTO(err, done, check_model_type(&w, model));
    DSV3_CALL_GOTO(err, done, require_off(&w, root, "truncation"));
    DSV3_CALL_GOTO(err, done, require_off(&w, root, "padding"));
    DSV3_CALL_GOTO(err, done, member(&w, root, "normalizer", json_type_object, 0, &normalizer));
    DSV3_CALL_GOTO(err, done, member(&w, root, "pre_tokenizer", json_type_object, 0, &pre));
    DSV3_CALL_GOTO(err, done, member(&w, root, "post_processor", json_type_object, 0, &post));
    DSV3_CALL_GOTO(err, done, member(&w, root, "decoder", json_type_object, 0, &decoder));
    DSV3_CALL_GOTO(err, done, member(&w, root, "added_tokens", json_type_array, 0, &added));
    {
        Where mw;
        sub_path(&mw, &w, "model", -1);
        DSV3_CALL_GOTO(err, done, member(&mw, model, "vocab", json_type_object, 1, &vocab));
        DSV3_CALL_GOTO(err, done, max_id(&w, vocab, added, &t->vocab_size));
    }
    DSV3_CALL_GOTO(err, done,
                   dsv3_alloc((void **)&t->decode_offset,
                              (size_t)t->vocab_size * sizeof *t->decode_offset, "tokenizer ids"));
    memset(t->decode_offset, 0xFF, (size_t)t->vocab_size * sizeof *t->decode_offset);
    DSV3_CALL_GOTO(err, done,
                   dsv3_calloc((void **)&t->decode_length, (size_t)t->vocab_size,
                               sizeof *t->decode_length, "tokenizer ids"));
    DSV3_CALL_GOTO(err, done,
                   dsv3_calloc((void **)&t->flags, (size_t)t->vocab_size, 1, "tokenizer ids"));
    {
        Where nw, pw, ppw, dw;
        sub_path(&nw, &w, "normalizer", -1);
        sub_path(&pw, &w, "pre_tokenizer", -1);
        sub_path(&ppw, &w, "post_processor", -1);
        sub_path(&dw, &w, "decoder", -1);
        DSV3_CALL_GOTO(err, done, load_normalizer(&nw, normalizer));
        int saw_bytelevel = 0;
        DSV3_CHECK_GOTO(err, done, pre != NULL, DSV3_ERR_CONFIG,
                        "%s: pre_tokenizer is null: only byte-level BPE (a ByteLevel "
                        "pre-tokenizer) is supported",
                        file);
        DSV3_CALL_GOTO(err, done, load_pretokenizer(t, &pw, pre, &saw_bytelevel));
        DSV3_CHECK_GOTO(
            err, done, saw_bytelevel, DSV3_ERR_CONFIG,
            "%s: pre_tokenizer has no ByteLevel step: only byte-level BPE tokenizers are supported",
            file);
        DSV3_CALL_GOTO(err, done, load_post_processor(&ppw, post));
        DSV3_CALL_GOTO(err, done, load_decoder(&dw, decoder));
    }
    DSV3_CALL_GOTO(err, done, load_model(t, &w, model));
    DSV3_CALL_GOTO(err, done, load_added(t, &w, added));
done:
    json_object_put(root);
    return err;
}

// bos_token / eos_token: a string, an AddedToken object with "content", or null.
static Dsv3Err config_token(Dsv3Tokenizer *t, const char *file, json_object *root, const char *key,
                            int32_t *out) {
    *out = -1;
    json_object *v = NULL, *content = NULL;
    if (!json_object_object_get_ex(root, key, &v) || v == NULL) return DSV3_OK;
    if (json_object_is_type(v, json_type_object)) {
        DSV3_CHECK(json_object_object_get_ex(v, "content", &content) &&
                       json_object_is_type(content, json_type_string),
                   DSV3_ERR_CONFIG, "%s: %s.content must be a string", file, key);
        v = content;
    }
    DSV3_CHECK(json_object_is_type(v, json_type_string), DSV3_ERR_CONFIG,
               "%s: %s must be a string or an object with \"content\"", file, key);
    *out = dsv3_tokenizer_token_id(t, json_object_get_string(v),
                                   (size_t)json_object_get_string_len(v));
    DSV3_CHECK(*out >= 0, DSV3_ERR_CONFIG, "%s: %s = \"%s\" is not a token of %s", file, key,
               json_object_get_string(v), t->path);
    return DSV3_OK;
}

static Dsv3Err load_config_json(Dsv3Tokenizer *t, const char *file) {
    json_object *root = NULL;
    DSV3_CALL(read_json(file, "tokenizer config", &root));
    Dsv3Err err = DSV3_OK;
    DSV3_CHECK_GOTO(err, done, json_object_is_type(root, json_type_object), DSV3_ERR_CONFIG,
                    "%s: the top level must be a JSON object", file);
    DSV3_CALL_GOTO(err, done, config_token(t, file, root, "bos_token", &t->bos_id));
    DSV3_CALL_GOTO(err, done, config_token(t, file, root, "eos_token", &t->eos_id));
done:
    json_object_put(root);
    return err;
}

// A tokenizer from tokenizer.json's text (parsed in place; `name` names it in messages) and
// tokenizer_config.json at config_path (NULL: none).
static Dsv3Err tokenizer_build(Dsv3Tokenizer **out, const char *name, char *text, size_t length,
                               const char *config_path) {
    *out = NULL;
    if (byte_of_char['!'] == 0) init_alphabet(); // '!' maps to itself once initialised
    Dsv3Tokenizer *t = NULL;
    DSV3_CALL(dsv3_calloc((void **)&t, 1, sizeof *t, "tokenizer"));
    t->bos_id = t->eos_id = -1;
    Dsv3Err err = DSV3_OK;
    DSV3_CALL_GOTO(err, fail, dsv3_strdup(&t->path, name, "tokenizer path"));
    DSV3_CALL_GOTO(err, fail, load_tokenizer_json(t, name, text, length));
    if (config_path) DSV3_CALL_GOTO(err, fail, load_config_json(t, config_path));
    t->match = pcre2_match_data_create(1, NULL);
    DSV3_CHECK_GOTO(err, fail, t->match, DSV3_ERR_MEMORY, "cannot allocate PCRE2 match data");
    *out = t;
    return DSV3_OK;
fail:
    dsv3_tokenizer_free(t);
    return err;
}

Dsv3Err dsv3_tokenizer_load_files(Dsv3Tokenizer **out, const char *tokenizer_path,
                                  const char *config_path) {
    DSV3_CHECK(out && tokenizer_path, DSV3_ERR_USAGE,
               "dsv3_tokenizer_load_files: out or path is NULL");
    *out = NULL;
    char *text = NULL;
    size_t length = 0;
    DSV3_CALL(read_text(tokenizer_path, "tokenizer", &text, &length));
    Dsv3Err err = tokenizer_build(out, tokenizer_path, text, length, config_path);
    dsv3_free(text);
    return err;
}

Dsv3Err dsv3_tokenizer_load_json(Dsv3Tokenizer **out, const char *name, const char *json,
                                 size_t length) {
    DSV3_CHECK(out && name && (json || length == 0), DSV3_ERR_USAGE,
               "dsv3_tokenizer_load_json: out, name or json is NULL");
    *out = NULL;
    char *text = NULL; // parsing rewrites the text
    DSV3_CALL(dsv3_alloc((void **)&text, length + 1, "tokenizer"));
    if (length) memcpy(text, json, length);
    Dsv3Err err = tokenizer_build(out, name, text, length, NULL);
    dsv3_free(text);
    return err;
}

Dsv3Err dsv3_tokenizer_load(Dsv3Tokenizer **out, const char *folder) {
    DSV3_CHECK(out && folder, DSV3_ERR_USAGE, "dsv3_tokenizer_load: out or folder is NULL");
    char tok[FILE_PATH_CAPACITY], cfg[FILE_PATH_CAPACITY];
    int n1 = snprintf(tok, sizeof tok, "%s/tokenizer.json", folder);
    int n2 = snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", folder);
    DSV3_CHECK(n1 > 0 && n2 > 0 && (size_t)n2 < sizeof cfg, DSV3_ERR_CONFIG,
               "tokenizer folder path too long: %s", folder);
    FILE *probe = fopen(tok, "rb");
    DSV3_CHECK(probe, DSV3_ERR_IO,
               "no tokenizer.json in '%s' (model.hf_assets_path): download it with "
               "run/download_hf_assets.sh --repo_id <org/model> --assets tokenizer",
               folder);
    fclose(probe);
    probe = fopen(cfg, "rb");
    if (probe)
        fclose(probe);
    else
        DSV3_LOG_WARN("no tokenizer_config.json in '%s': documents get no BOS or EOS", folder);
    return dsv3_tokenizer_load_files(out, tok, probe ? cfg : NULL);
}

Dsv3Err dsv3_tokenizer_folder_eos_id(const char *folder, int32_t *eos_id) {
    *eos_id = -1;
    char tok[FILE_PATH_CAPACITY];
    int n = snprintf(tok, sizeof tok, "%s/tokenizer.json", folder);
    FILE *probe = n > 0 && (size_t)n < sizeof tok ? fopen(tok, "rb") : NULL;
    if (!probe) return DSV3_OK;
    fclose(probe);
    Dsv3Tokenizer *t = NULL;
    DSV3_CALL(dsv3_tokenizer_load(&t, folder));
    *eos_id = t->eos_id;
    if (*eos_id >= 0) DSV3_LOG_INFO("EOS id %d from the tokenizer in %s", *eos_id, folder);
    dsv3_tokenizer_free(t);
    return DSV3_OK;
}

void dsv3_tokenizer_free(Dsv3Tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_steps; i++)
        pcre2_code_free(t->steps[i].code);
    dsv3_free(t->steps);
    if (t->match) pcre2_match_data_free(t->match);
    dsv3_tok_added_free(&t->added_raw);
    dsv3_tok_added_free(&t->added_normalized);
    dsv3_free(t->decode_offset);
    dsv3_free(t->decode_length);
    dsv3_free(t->flags);
    dsv3_free(t->pool);
    dsv3_free(t->lookup);
    dsv3_free(t->merges);
    dsv3_free(t->pieces.items);
    dsv3_free(t->next_pieces.items);
    dsv3_free(t->matches.items);
    dsv3_free(t->clean);
    dsv3_free(t->bpe_scratch);
    TokCache *c = &t->cache;
    dsv3_free(c->hash);
    dsv3_free(c->key_offset);
    dsv3_free(c->key_length);
    dsv3_free(c->ids_offset);
    dsv3_free(c->ids_count);
    dsv3_free(c->keys);
    dsv3_free(c->ids);
    dsv3_free(t->path);
    dsv3_free(t);
}
