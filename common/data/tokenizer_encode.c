// tokenizer_encode: UTF-8 clean-up, added-token splitting, BPE merges with a word cache, and
// decoding.
#include <string.h>

#include "common/core/alloc.h"
#include "tokenizer_internal.h"

enum {
    CACHE_SLOTS = 1 << 15,              // words remembered before the cache is cleared
    CACHE_MAX_WORD = 256,               // longer words are not cached (rare, and costly to keep)
    CACHE_KEY_BYTES = CACHE_SLOTS * 16, // byte budget of cached words before clearing
    REPLACEMENT_LENGTH = 3,             // U+FFFD in UTF-8: EF BF BD
};

static const char REPLACEMENT[REPLACEMENT_LENGTH] = {(char)0xEF, (char)0xBF, (char)0xBD};

void dsv3_token_ids_free(Dsv3TokenIds *ids) {
    dsv3_free(ids->ids);
    memset(ids, 0, sizeof *ids);
}

static Dsv3Err ids_reserve(Dsv3TokenIds *ids, size_t more) {
    if (ids->count + more <= ids->capacity) return DSV3_OK;
    size_t cap = ids->capacity ? ids->capacity : 256;
    while (cap < ids->count + more)
        cap *= 2;
    int32_t *grown = NULL;
    DSV3_CALL(dsv3_alloc((void **)&grown, cap * sizeof *grown, "token ids"));
    if (ids->count) memcpy(grown, ids->ids, ids->count * sizeof *grown);
    dsv3_free(ids->ids);
    ids->ids = grown;
    ids->capacity = cap;
    return DSV3_OK;
}

// Appends `count` ids. None is nothing to copy: an empty list may have no buffer yet, and a
// word whose bytes have no token gives none.
static Dsv3Err ids_append(Dsv3TokenIds *ids, const int32_t *from, size_t count) {
    if (count == 0) return DSV3_OK;
    DSV3_CALL(ids_reserve(ids, count));
    memcpy(ids->ids + ids->count, from, count * sizeof *from);
    ids->count += count;
    return DSV3_OK;
}

Dsv3Err dsv3_token_ids_push(Dsv3TokenIds *ids, int32_t id) {
    DSV3_CALL(ids_reserve(ids, 1));
    ids->ids[ids->count++] = id;
    return DSV3_OK;
}

// ---- UTF-8 clean-up ----

// Length of the valid UTF-8 sequence at s[0 .. n), or 0 with *bad = the length of the maximal
// invalid subpart to replace (Unicode's "maximal subpart" rule, which Python follows).
static size_t utf8_valid(const unsigned char *s, size_t n, size_t *bad) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    int need;
    unsigned char lo = 0x80, hi = 0xBF; // range of the second byte
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c >= 0xE0 && c <= 0xEF)
        need = 2, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4)
        need = 3, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else {
        *bad = 1;
        return 0;
    }
    for (int i = 1; i <= need; i++) {
        unsigned char lower = i == 1 ? lo : 0x80, upper = i == 1 ? hi : 0xBF;
        if ((size_t)i >= n || s[i] < lower || s[i] > upper) {
            *bad = (size_t)i;
            return 0;
        }
    }
    return (size_t)need + 1;
}

// The text itself when it is valid UTF-8, else a copy in t->clean with each maximal invalid
// subpart replaced by U+FFFD.
static Dsv3Err sanitize(Dsv3Tokenizer *t, const char *text, size_t n, const char **out,
                        size_t *out_n) {
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0, bad = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t v = utf8_valid(s + i, n - i, &bad);
        if (v == 0) break;
        i += v;
    }
    if (i == n) {
        *out = text, *out_n = n;
        return DSV3_OK;
    }
    // Each invalid byte grows into at most 3 bytes.
    size_t cap = n * REPLACEMENT_LENGTH + 1;
    if (t->clean_capacity < cap) {
        dsv3_free(t->clean);
        t->clean = NULL;
        t->clean_capacity = 0;
        DSV3_CALL(dsv3_alloc((void **)&t->clean, cap, "UTF-8 clean-up"));
        t->clean_capacity = cap;
    }
    memcpy(t->clean, text, i);
    size_t o = i;
    while (i < n) {
        size_t v = utf8_valid(s + i, n - i, &bad);
        if (v) {
            memcpy(t->clean + o, text + i, v);
            o += v, i += v;
        } else {
            memcpy(t->clean + o, REPLACEMENT, REPLACEMENT_LENGTH);
            o += REPLACEMENT_LENGTH, i += bad;
            t->replaced++;
        }
    }
    *out = t->clean, *out_n = o;
    return DSV3_OK;
}

// ---- BPE ----

static const TokMerge *merge_find(const Dsv3Tokenizer *t, int32_t left, int32_t right) {
    uint64_t h = ((uint64_t)(uint32_t)left << 32 | (uint32_t)right) * 0x9E3779B97F4A7C15ull;
    for (size_t i = (size_t)(h >> 20) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        const TokMerge *m = &t->merges[i];
        if (m->left < 0) return NULL;
        if (m->left == left && m->right == right) return m;
    }
}

// A candidate merge of the symbol at pos with its right neighbour.
typedef struct {
    int32_t rank, pos, merged;
} Candidate;

static int before(const Candidate *a, const Candidate *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(Candidate *h, size_t *n, Candidate c) {
    size_t i = (*n)++;
    while (i > 0 && before(&c, &h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = c;
}

static Candidate heap_pop(Candidate *h, size_t *n) {
    Candidate top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && before(&h[c + 1], &h[c])) c++;
        if (!before(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

static void push_pair(const Dsv3Tokenizer *t, Candidate *heap, size_t *n, const int32_t *id,
                      int32_t left, int32_t right) {
    const TokMerge *m = merge_find(t, id[left], id[right]);
    if (m) heap_push(heap, n, (Candidate){m->rank, left, m->merged});
}

// Merges a word of n raw bytes as tokenizers' BPE does: repeatedly the pair of lowest rank,
// leftmost first. Bytes without a token are dropped (tokenizers without unk_token does so).
static Dsv3Err bpe_merge(Dsv3Tokenizer *t, const char *w, size_t n, Dsv3TokenIds *out) {
    // Per symbol: id, prev, next (int32 each); the heap holds at most n - 1 + 2 per merge.
    size_t need = n * 3 * sizeof(int32_t) + 3 * n * sizeof(Candidate);
    if (t->bpe_scratch_bytes < need) {
        dsv3_free(t->bpe_scratch);
        t->bpe_scratch = NULL;
        t->bpe_scratch_bytes = 0;
        DSV3_CALL(dsv3_alloc(&t->bpe_scratch, need * 2, "BPE scratch"));
        t->bpe_scratch_bytes = need * 2;
    }
    Candidate *heap = t->bpe_scratch;
    int32_t *id = (int32_t *)(heap + 3 * n), *prev = id + n, *next = prev + n;
    int32_t m = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t b = t->byte_id[(unsigned char)w[i]];
        if (b < 0) continue;
        id[m] = b;
        prev[m] = m - 1;
        next[m] = -1;
        if (m > 0) next[m - 1] = m;
        m++;
    }
    size_t h = 0;
    for (int32_t i = 0; i + 1 < m; i++)
        push_pair(t, heap, &h, id, i, i + 1);
    while (h > 0) {
        Candidate c = heap_pop(heap, &h);
        int32_t right = next[c.pos];
        // Stale: this symbol was merged away (id -1), has no right neighbour, or changed.
        if (id[c.pos] < 0 || right < 0) continue;
        const TokMerge *now = merge_find(t, id[c.pos], id[right]);
        if (!now || now->merged != c.merged) continue;
        id[c.pos] = c.merged;
        id[right] = -1;
        next[c.pos] = next[right];
        if (next[right] >= 0) prev[next[right]] = c.pos;
        if (prev[c.pos] >= 0) push_pair(t, heap, &h, id, prev[c.pos], c.pos);
        if (next[c.pos] >= 0) push_pair(t, heap, &h, id, c.pos, next[c.pos]);
    }
    DSV3_CALL(ids_reserve(out, (size_t)m));
    for (int32_t i = m > 0 ? 0 : -1; i >= 0; i = next[i])
        out->ids[out->count++] = id[i];
    return DSV3_OK;
}

static Dsv3Err cache_init(TokCache *c) {
    DSV3_CALL(dsv3_calloc((void **)&c->hash, CACHE_SLOTS, sizeof *c->hash, "BPE cache"));
    DSV3_CALL(
        dsv3_alloc((void **)&c->key_offset, CACHE_SLOTS * sizeof *c->key_offset, "BPE cache"));
    DSV3_CALL(
        dsv3_alloc((void **)&c->key_length, CACHE_SLOTS * sizeof *c->key_length, "BPE cache"));
    DSV3_CALL(
        dsv3_alloc((void **)&c->ids_offset, CACHE_SLOTS * sizeof *c->ids_offset, "BPE cache"));
    DSV3_CALL(dsv3_alloc((void **)&c->ids_count, CACHE_SLOTS * sizeof *c->ids_count, "BPE cache"));
    c->keys_capacity = CACHE_KEY_BYTES;
    DSV3_CALL(dsv3_alloc((void **)&c->keys, c->keys_capacity, "BPE cache"));
    c->ids_capacity = CACHE_KEY_BYTES;
    DSV3_CALL(dsv3_alloc((void **)&c->ids, c->ids_capacity * sizeof *c->ids, "BPE cache"));
    c->slots = CACHE_SLOTS;
    return DSV3_OK;
}

static void cache_clear(TokCache *c) {
    memset(c->hash, 0, c->slots * sizeof *c->hash);
    c->used = c->keys_length = c->ids_length = 0;
}

// Slot of the word (found: hash equal and bytes equal) or of the empty slot where it goes.
static size_t cache_slot(const TokCache *c, const char *w, size_t n, uint64_t h, int *found) {
    size_t i = h & (c->slots - 1);
    while (c->hash[i]) {
        if (c->hash[i] == h && c->key_length[i] == n &&
            memcmp(c->keys + c->key_offset[i], w, n) == 0) {
            *found = 1;
            return i;
        }
        i = (i + 1) & (c->slots - 1);
    }
    *found = 0;
    return i;
}

static Dsv3Err bpe_word(Dsv3Tokenizer *t, const char *w, size_t n, Dsv3TokenIds *out) {
    if (t->ignore_merges) {
        int32_t whole = dsv3_tok_lookup(t, w, n);
        if (whole >= 0) return dsv3_token_ids_push(out, whole);
    }
    if (n == 1) {
        int32_t b = t->byte_id[(unsigned char)w[0]];
        return b >= 0 ? dsv3_token_ids_push(out, b) : DSV3_OK;
    }
    if (n > CACHE_MAX_WORD) return bpe_merge(t, w, n, out);
    TokCache *c = &t->cache;
    if (!c->hash) DSV3_CALL(cache_init(c));
    uint64_t h = dsv3_tok_hash(w, n);
    int found;
    size_t slot = cache_slot(c, w, n, h, &found);
    if (found) return ids_append(out, c->ids + c->ids_offset[slot], c->ids_count[slot]);
    size_t first = out->count;
    DSV3_CALL(bpe_merge(t, w, n, out));
    size_t produced = out->count - first;
    if (c->used * 2 >= c->slots || c->keys_length + n > c->keys_capacity ||
        c->ids_length + produced > c->ids_capacity) {
        cache_clear(c);
        slot = cache_slot(c, w, n, h, &found);
    }
    c->hash[slot] = h;
    c->key_offset[slot] = (uint32_t)c->keys_length;
    c->key_length[slot] = (uint32_t)n;
    c->ids_offset[slot] = (uint32_t)c->ids_length;
    c->ids_count[slot] = (uint32_t)produced;
    memcpy(c->keys + c->keys_length, w, n);
    if (produced) memcpy(c->ids + c->ids_length, out->ids + first, produced * sizeof *c->ids);
    c->keys_length += n;
    c->ids_length += produced;
    c->used++;
    return DSV3_OK;
}

// ---- encode ----

// Text with no added tokens in it: pre-tokenize, then BPE each pre-token.
static Dsv3Err encode_plain(Dsv3Tokenizer *t, const char *s, size_t from, size_t end,
                            Dsv3TokenIds *out) {
    if (from == end) return DSV3_OK;
    t->pieces.count = 0;
    DSV3_CALL(dsv3_tok_pieces_push(&t->pieces, from, end - from, 0));
    DSV3_CALL(dsv3_tok_pretokenize(t, s, &t->pieces));
    for (size_t k = 0; k < t->pieces.count; k++)
        DSV3_CALL(bpe_word(t, s + t->pieces.items[k].start, t->pieces.items[k].length, out));
    return DSV3_OK;
}

// Cuts out the added tokens of `set` from s[from .. end), encoding the text between with `next`.
static Dsv3Err encode_added(Dsv3Tokenizer *t, const TokAddedSet *set, const char *s, size_t from,
                            size_t end, Dsv3TokenIds *out,
                            Dsv3Err (*next)(Dsv3Tokenizer *, const char *, size_t, size_t,
                                            Dsv3TokenIds *)) {
    size_t at = from, ms, ml;
    int32_t id;
    while (dsv3_tok_added_find(set, s, at, end, &ms, &ml, &id)) {
        DSV3_CALL(next(t, s, at, ms, out));
        DSV3_CALL(dsv3_token_ids_push(out, id));
        at = ms + ml;
    }
    return next(t, s, at, end, out);
}

static Dsv3Err encode_normalized(Dsv3Tokenizer *t, const char *s, size_t from, size_t end,
                                 Dsv3TokenIds *out) {
    // The normalizer is the identity (see tokenizer_load.c), so normalized text = text.
    return encode_added(t, &t->added_normalized, s, from, end, out, encode_plain);
}

Dsv3Err dsv3_tokenizer_encode(Dsv3Tokenizer *t, const char *text, size_t length,
                              Dsv3TokenIds *out) {
    DSV3_CHECK(t && out && (text || length == 0), DSV3_ERR_USAGE,
               "dsv3_tokenizer_encode: NULL argument");
    const char *s = text;
    size_t n = 0;
    DSV3_CALL(sanitize(t, length ? text : "", length, &s, &n));
    return encode_added(t, &t->added_raw, s, 0, n, out, encode_normalized);
}

Dsv3Err dsv3_tokenizer_encode_document(Dsv3Tokenizer *t, const char *text, size_t length,
                                       Dsv3TokenIds *out) {
    if (t->bos_id >= 0) DSV3_CALL(dsv3_token_ids_push(out, t->bos_id));
    DSV3_CALL(dsv3_tokenizer_encode(t, text, length, out));
    if (t->eos_id >= 0) DSV3_CALL(dsv3_token_ids_push(out, t->eos_id));
    return DSV3_OK;
}

Dsv3Err dsv3_tokenizer_decode(const Dsv3Tokenizer *t, const int32_t *ids, size_t count,
                              int skip_special, char **out, size_t *length) {
    DSV3_CHECK(t && out && length && (ids || count == 0), DSV3_ERR_USAGE,
               "dsv3_tokenizer_decode: NULL argument");
    *out = NULL;
    *length = 0;
    size_t total = 0;
    for (size_t i = 0; i < count; i++) {
        int32_t id = ids[i];
        DSV3_CHECK(id >= 0 && id < t->vocab_size && t->decode_offset[id] >= 0, DSV3_ERR_USAGE,
                   "cannot decode id %d (at %zu): %s has no such token", id, i, t->path);
        if (!(skip_special && (t->flags[id] & TOK_FLAG_SPECIAL)))
            total += (size_t)t->decode_length[id];
    }
    char *s = NULL;
    DSV3_CALL(dsv3_alloc((void **)&s, total + 1, "decoded text"));
    size_t o = 0;
    for (size_t i = 0; i < count; i++) {
        int32_t id = ids[i];
        if (skip_special && (t->flags[id] & TOK_FLAG_SPECIAL)) continue;
        memcpy(s + o, t->pool + t->decode_offset[id], (size_t)t->decode_length[id]);
        o += (size_t)t->decode_length[id];
    }
    s[o] = '\0';
    *out = s;
    *length = o;
    return DSV3_OK;
}

int32_t dsv3_tokenizer_token_id(const Dsv3Tokenizer *t, const char *text, size_t length) {
    size_t ms, ml;
    int32_t id;
    // An added token first (tokenizers looks there first), then a model token.
    for (int s = 0; s < 2; s++) {
        const TokAddedSet *set = s == 0 ? &t->added_raw : &t->added_normalized;
        if (dsv3_tok_added_find(set, text, 0, length, &ms, &ml, &id) && ms == 0 && ml == length)
            return id;
    }
    return length ? dsv3_tok_lookup(t, text, length) : -1;
}

int64_t dsv3_tokenizer_vocab_size(const Dsv3Tokenizer *t) { return t->vocab_size; }
int32_t dsv3_tokenizer_bos_id(const Dsv3Tokenizer *t) { return t->bos_id; }
int32_t dsv3_tokenizer_eos_id(const Dsv3Tokenizer *t) { return t->eos_id; }
int64_t dsv3_tokenizer_replaced_sequences(const Dsv3Tokenizer *t) { return t->replaced; }
