// synthetic: per-regime Zipf samplers (inverse CDF) and the fixed copy layout.
#include "synthetic.h"

#include <math.h>
#include <stdio.h>

#include "common/core/alloc.h"
#include "common/core/log.h"
#include "common/core/rng.h"

// Regime weights are integers out of this total, so the regime draw is one uniform bucket.
enum { REGIME_WEIGHT_TOTAL = 10 };

// Characters per regime in the start-up line ("/12.345").
enum { SUMMARY_ENTRY_CAPACITY = 16 };

// Largest vocab_size whose ids fit int32_t.
static const int64_t SYNTHETIC_MAX_VOCAB = (int64_t)INT32_MAX + 1;

// Names the key of the synthetic data's random stream (mixed with training.seed).
static const char SYNTHETIC_RNG_NAME[] = "data.synthetic";

typedef struct {
    int weight;           // out of REGIME_WEIGHT_TOTAL
    double zipf_exponent; // s in p_k ∝ k^(-s)
    int64_t span;         // S: tokens per span
    int64_t group;        // g: fresh spans per group (followed by g copy spans)
} RegimeSpec;

// The table documented in synthetic.h.
static const RegimeSpec REGIMES[DSV3_SYNTHETIC_NUM_REGIMES] = {
    {4, 1.0, 8, 1},
    {3, 1.2, 4, 3},
    {2, 0.8, 16, 2},
    {1, 1.5, 2, 4},
};

struct Dsv3Synthetic {
    int64_t vocab_size;
    int64_t seq_len;
    uint64_t seed;
    uint64_t key;                                    // rng key from the seed
    int64_t block;                                   // B: content ids per regime
    double *cdf[DSV3_SYNTHETIC_NUM_REGIMES];         // (B,) cumulative Zipf probabilities
    double *prob[DSV3_SYNTHETIC_NUM_REGIMES];        // (B,) Zipf probabilities by rank - 1
    double entropy[DSV3_SYNTHETIC_NUM_REGIMES];      // H_r, nats
    int64_t fresh_count[DSV3_SYNTHETIC_NUM_REGIMES]; // F_r: fresh positions per document
    double floor;                                    // nats per label token
};

// Content index c = pos - 1 of a regime's layout: fresh (returns -1) or the content index of
// the fresh position it copies.
static int64_t layout_source(const RegimeSpec *r, int64_t c) {
    int64_t fresh_len = r->group * r->span;
    int64_t q = c % (2 * fresh_len);
    if (q < fresh_len) return -1;
    int64_t j = (q - fresh_len) / r->span, offset = (q - fresh_len) % r->span;
    return (c - q) + (r->group - 1 - j) * r->span + offset;
}

// Fills the Zipf table of one regime and returns its entropy.
static double zipf_table(double *prob, double *cdf, int64_t n, double exponent) {
    double norm = 0.0;
    for (int64_t k = 1; k <= n; k++)
        norm += pow((double)k, -exponent);
    double entropy = 0.0, sum = 0.0;
    for (int64_t k = 1; k <= n; k++) {
        double p = pow((double)k, -exponent) / norm;
        prob[k - 1] = p;
        entropy -= p * log(p);
        sum += p;
        cdf[k - 1] = sum;
    }
    // The sampler's uniforms are < 1, so the last rank must catch whatever rounding left over.
    cdf[n - 1] = 1.0;
    return entropy;
}

Dsv3Err dsv3_synthetic_create(Dsv3Synthetic **out, int64_t vocab_size, int64_t seq_len,
                              uint64_t seed) {
    DSV3_CHECK(out, DSV3_ERR_USAGE, "dsv3_synthetic_create: out is NULL");
    *out = NULL;
    DSV3_CHECK(
        vocab_size >= DSV3_SYNTHETIC_MIN_VOCAB && vocab_size <= SYNTHETIC_MAX_VOCAB,
        DSV3_ERR_CONFIG,
        "model.vocab_size = %lld is too small for training.dataset = \"synthetic\": it needs "
        "at least %d ids (EOS = 0, %d regime tokens, %d content ids per regime) and at most %lld",
        (long long)vocab_size, DSV3_SYNTHETIC_MIN_VOCAB, DSV3_SYNTHETIC_NUM_REGIMES,
        DSV3_SYNTHETIC_MIN_REGIME_VOCAB, (long long)SYNTHETIC_MAX_VOCAB);
    DSV3_CHECK(
        seq_len >= DSV3_SYNTHETIC_MIN_SEQ_LEN, DSV3_ERR_CONFIG,
        "training.seq_len = %lld is too short for training.dataset = \"synthetic\": a document "
        "needs at least %d labels (content and EOS)",
        (long long)seq_len, DSV3_SYNTHETIC_MIN_SEQ_LEN);

    Dsv3Synthetic *s = NULL;
    DSV3_CALL(dsv3_calloc((void **)&s, 1, sizeof *s, "synthetic dataset"));
    s->vocab_size = vocab_size;
    s->seq_len = seq_len;
    s->seed = seed;
    s->key = dsv3_rng_key(seed, SYNTHETIC_RNG_NAME);
    s->block = (vocab_size - DSV3_SYNTHETIC_FIRST_CONTENT_ID) / DSV3_SYNTHETIC_NUM_REGIMES;

    Dsv3Err err = DSV3_OK;
    s->floor = 0.0;
    for (int r = 0; r < DSV3_SYNTHETIC_NUM_REGIMES; r++) {
        DSV3_CALL_GOTO(err, fail,
                       dsv3_alloc((void **)&s->prob[r], (size_t)s->block * sizeof(double),
                                  "synthetic Zipf probabilities"));
        DSV3_CALL_GOTO(err, fail,
                       dsv3_alloc((void **)&s->cdf[r], (size_t)s->block * sizeof(double),
                                  "synthetic Zipf CDF"));
        s->entropy[r] = zipf_table(s->prob[r], s->cdf[r], s->block, REGIMES[r].zipf_exponent);
        int64_t fresh = 0;
        for (int64_t c = 0; c < seq_len - 1; c++)
            fresh += layout_source(&REGIMES[r], c) < 0;
        s->fresh_count[r] = fresh;
        s->floor += dsv3_synthetic_regime_probability(r) * (double)fresh * s->entropy[r];
    }
    s->floor /= (double)seq_len;
    *out = s;
    return DSV3_OK;
fail:
    dsv3_synthetic_destroy(s);
    return err;
}

void dsv3_synthetic_destroy(Dsv3Synthetic *s) {
    if (!s) return;
    for (int r = 0; r < DSV3_SYNTHETIC_NUM_REGIMES; r++) {
        dsv3_free(s->prob[r]);
        dsv3_free(s->cdf[r]);
    }
    dsv3_free(s);
}

// The regime whose cumulative weight bucket holds u in (0, 1).
static int draw_regime(double u) {
    int bucket = (int)(u * REGIME_WEIGHT_TOTAL), cumulative = 0;
    for (int r = 0; r < DSV3_SYNTHETIC_NUM_REGIMES; r++) {
        cumulative += REGIMES[r].weight;
        if (bucket < cumulative) return r;
    }
    return DSV3_SYNTHETIC_NUM_REGIMES - 1;
}

// The first rank (0-based) whose CDF exceeds u in (0, 1).
static int64_t draw_rank(const double *cdf, int64_t n, double u) {
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (u < cdf[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

Dsv3Err dsv3_synthetic_window(const Dsv3Synthetic *s, int64_t window, int32_t *tokens) {
    DSV3_CHECK(s && tokens, DSV3_ERR_USAGE, "dsv3_synthetic_window: generator or tokens is NULL");
    DSV3_CHECK(window >= 0, DSV3_ERR_USAGE, "dsv3_synthetic_window: window %lld is negative",
               (long long)window);
    // One key per window; the counter is the position, so each token is drawn independently.
    uint64_t key = dsv3_rng_bits(s->key, (uint64_t)window);
    int regime = draw_regime(dsv3_rng_uniform(key, 0));
    const RegimeSpec *spec = &REGIMES[regime];
    int64_t block_start = DSV3_SYNTHETIC_FIRST_CONTENT_ID + (int64_t)regime * s->block;
    tokens[0] = (int32_t)(DSV3_SYNTHETIC_FIRST_REGIME_ID + regime);
    for (int64_t pos = 1; pos < s->seq_len; pos++) {
        int64_t source = layout_source(spec, pos - 1);
        if (source >= 0) {
            tokens[pos] = tokens[source + 1];
        } else {
            int64_t rank =
                draw_rank(s->cdf[regime], s->block, dsv3_rng_uniform(key, (uint64_t)pos));
            tokens[pos] = (int32_t)(block_start + rank);
        }
    }
    tokens[s->seq_len] = DSV3_SYNTHETIC_EOS_ID;
    return DSV3_OK;
}

double dsv3_synthetic_entropy_floor(const Dsv3Synthetic *s) { return s->floor; }

int32_t dsv3_synthetic_eos_id(const Dsv3Synthetic *s) {
    (void)s;
    return DSV3_SYNTHETIC_EOS_ID;
}

int64_t dsv3_synthetic_vocab_size(const Dsv3Synthetic *s) { return s->vocab_size; }

int64_t dsv3_synthetic_seq_len(const Dsv3Synthetic *s) { return s->seq_len; }

double dsv3_synthetic_regime_probability(int regime) {
    if (regime < 0 || regime >= DSV3_SYNTHETIC_NUM_REGIMES) return 0.0;
    return (double)REGIMES[regime].weight / REGIME_WEIGHT_TOTAL;
}

int dsv3_synthetic_regime_of(int32_t token) {
    int r = (int)token - DSV3_SYNTHETIC_FIRST_REGIME_ID;
    return r >= 0 && r < DSV3_SYNTHETIC_NUM_REGIMES ? r : -1;
}

double dsv3_synthetic_regime_entropy(const Dsv3Synthetic *s, int regime) {
    if (regime < 0 || regime >= DSV3_SYNTHETIC_NUM_REGIMES) return 0.0;
    return s->entropy[regime];
}

double dsv3_synthetic_token_probability(const Dsv3Synthetic *s, int regime, int32_t token) {
    if (regime < 0 || regime >= DSV3_SYNTHETIC_NUM_REGIMES) return 0.0;
    int64_t rank = (int64_t)token - DSV3_SYNTHETIC_FIRST_CONTENT_ID - (int64_t)regime * s->block;
    return rank >= 0 && rank < s->block ? s->prob[regime][rank] : 0.0;
}

Dsv3SyntheticKind dsv3_synthetic_position_kind(const Dsv3Synthetic *s, int regime, int64_t pos,
                                               int64_t *source) {
    if (source) *source = -1;
    if (pos <= 0) return DSV3_SYNTHETIC_REGIME_TOKEN;
    if (pos >= s->seq_len) return DSV3_SYNTHETIC_EOS_TOKEN;
    if (regime < 0 || regime >= DSV3_SYNTHETIC_NUM_REGIMES) return DSV3_SYNTHETIC_FRESH;
    int64_t c = layout_source(&REGIMES[regime], pos - 1);
    if (c < 0) return DSV3_SYNTHETIC_FRESH;
    if (source) *source = c + 1;
    return DSV3_SYNTHETIC_COPY;
}

void dsv3_synthetic_log_summary(const Dsv3Synthetic *s) {
    char entropies[DSV3_SYNTHETIC_NUM_REGIMES * SUMMARY_ENTRY_CAPACITY] = "";
    size_t used = 0;
    for (int r = 0; r < DSV3_SYNTHETIC_NUM_REGIMES && used < sizeof entropies; r++) {
        int n = snprintf(entropies + used, sizeof entropies - used, "%s%.3f", r ? "/" : "",
                         s->entropy[r]);
        if (n < 0) break;
        used += (size_t)n;
    }
    DSV3_LOG_INFO("synthetic data: vocab %lld, seq_len %lld, seed %llu, %d regimes of %lld ids "
                  "(fresh-token entropy %s nats): entropy floor %.4f nats per token "
                  "(uniform guess: %.4f)",
                  (long long)s->vocab_size, (long long)s->seq_len, (unsigned long long)s->seed,
                  DSV3_SYNTHETIC_NUM_REGIMES, (long long)s->block, entropies, s->floor,
                  log((double)s->vocab_size));
}
