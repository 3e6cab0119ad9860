// synthetic: the built-in seeded dataset (training.dataset = "synthetic") whose per-token
// entropy floor is known exactly, so a training run can show how close it gets to the best
// possible loss.
//
// Windows. Training reads a token stream cut into windows of seq_len + 1 tokens (input = the
// first seq_len, labels = the last seq_len). Here every window is exactly one document of
// seq_len + 1 tokens, and window w is a pure function of (seed, w, vocab_size, seq_len): it is
// computed from counter-based random numbers (common/core/rng.h) keyed by the seed and
// counted by (w, position), never from a stream. So resuming, any data-parallel layout and any
// order of reads see the same windows. The dataset is infinite: every w >= 0 is a window.
//
// Token ids (legend):
//   0                                  EOS, the last token of every document. The model's
//                                      block-causal (document) mask splits documents at it.
//   1 .. NUM_REGIMES                   regime tokens: regime r is announced by id 1 + r.
//   FIRST_CONTENT_ID .. vocab_size-1   content. The content ids are cut into NUM_REGIMES equal
//                                      contiguous blocks of B = (vocab_size - FIRST_CONTENT_ID)
//                                      / NUM_REGIMES ids, one block per regime; the last
//                                      (vocab_size - FIRST_CONTENT_ID) % NUM_REGIMES ids are
//                                      never used.
//
// A document (positions 0 .. seq_len):
//   position 0          the regime token; regime r is drawn with probability weight_r / 10
//                       (weights below). It is an input only, never a label.
//   positions 1..T-1    content (T = seq_len), laid out per regime. Content index c = p - 1
//                       runs in groups of 2·g·S positions: first g spans of S "fresh" tokens,
//                       then g spans that copy those fresh spans verbatim in reverse order
//                       (copy span j of a group repeats fresh span g-1-j, so copies reach back
//                       S, 3S, 5S, ... positions). The last group is cut off at position T-1.
//                       A fresh token is drawn i.i.d. from the regime's Zipf distribution over
//                       its block: rank k = 1..B (id = block start + k - 1) has probability
//                       k^(-s) / Σ_j j^(-s).
//   position T          EOS.
//
// Regimes (weight out of 10, Zipf exponent s, span length S, spans per group g):
//   r = 0:  4,  1.0,  8,  1      copy distance 8
//   r = 1:  3,  1.2,  4,  3      copy distances 4, 12, 20
//   r = 2:  2,  0.8, 16,  2      copy distances 16, 48
//   r = 3:  1,  1.5,  2,  4      copy distances 2, 6, 10, 14
// So the data rewards attention (a copied token is predictable only by looking back at its
// source) and routing (each regime has its own vocabulary and statistics, announced by the
// first token).
//
// Entropy floor. Given the window's context (everything before a label), the best possible
// predictor knows the regime (from position 0) and hence the layout: a fresh token has
// entropy H_r = -Σ_k p_k log p_k (independent of everything before it), a copied token and
// the EOS have entropy 0. With F_r fresh positions in regime r's layout, the floor is
//     floor = Σ_r (weight_r / 10) · F_r · H_r / seq_len      (nats per label token),
// exact by construction up to double rounding (the samplers' CDFs and the 53-bit uniforms
// deviate from the stated probabilities by about 1e-16). It does not depend on the seed.
// For the debug model (vocab_size 2048, seq_len 256): B = 510 ids per regime, H_r = 4.762,
// 3.962, 5.427, 2.830 nats, and the floor is 2.2494 nats per token, against log 2048 = 7.62
// for a uniform guess.
//
// This module does not batch, shard or shuffle windows (the sampler does); it allocates only
// the per-regime sampling tables at creation.
#ifndef DSV3_DATA_SYNTHETIC_H
#define DSV3_DATA_SYNTHETIC_H

#include <stdint.h>

#include "common/core/error.h"

enum {
    DSV3_SYNTHETIC_EOS_ID = 0,
    DSV3_SYNTHETIC_NUM_REGIMES = 4,
    DSV3_SYNTHETIC_FIRST_REGIME_ID = 1,
    DSV3_SYNTHETIC_FIRST_CONTENT_ID = DSV3_SYNTHETIC_FIRST_REGIME_ID + DSV3_SYNTHETIC_NUM_REGIMES,
    // Fewest content ids per regime: below this the regimes' distributions are too small to
    // differ meaningfully.
    DSV3_SYNTHETIC_MIN_REGIME_VOCAB = 8,
    // Smallest vocab_size: EOS, the regime tokens and every regime's minimal block.
    DSV3_SYNTHETIC_MIN_VOCAB = DSV3_SYNTHETIC_FIRST_CONTENT_ID +
                               DSV3_SYNTHETIC_NUM_REGIMES * DSV3_SYNTHETIC_MIN_REGIME_VOCAB,
    // Smallest seq_len: a regime token, at least one content token and the EOS.
    DSV3_SYNTHETIC_MIN_SEQ_LEN = 2,
};

// What a document position holds (see the layout above).
typedef enum {
    DSV3_SYNTHETIC_REGIME_TOKEN, // position 0
    DSV3_SYNTHETIC_FRESH,        // drawn from the regime's Zipf distribution
    DSV3_SYNTHETIC_COPY,         // equal to an earlier fresh position of the same document
    DSV3_SYNTHETIC_EOS_TOKEN,    // position seq_len
} Dsv3SyntheticKind;

typedef struct Dsv3Synthetic Dsv3Synthetic;

// Builds the generator. vocab_size is model.vocab_size (at least DSV3_SYNTHETIC_MIN_VOCAB and
// at most 2^31), seq_len is training.seq_len (at least DSV3_SYNTHETIC_MIN_SEQ_LEN), seed is
// training.seed. Errors name the key, its value and what is needed.
Dsv3Err dsv3_synthetic_create(Dsv3Synthetic **out, int64_t vocab_size, int64_t seq_len,
                              uint64_t seed);

// Frees the generator; NULL is ignored.
void dsv3_synthetic_destroy(Dsv3Synthetic *s);

// Writes window `window` (>= 0) into tokens[0 .. seq_len] (seq_len + 1 ids, each < vocab_size).
// Thread-safe: the generator is not modified.
Dsv3Err dsv3_synthetic_window(const Dsv3Synthetic *s, int64_t window, int32_t *tokens);

// The entropy floor in nats per label token (see above); 0 < floor < log(vocab_size).
double dsv3_synthetic_entropy_floor(const Dsv3Synthetic *s);

// The EOS id (DSV3_SYNTHETIC_EOS_ID).
int32_t dsv3_synthetic_eos_id(const Dsv3Synthetic *s);

int64_t dsv3_synthetic_vocab_size(const Dsv3Synthetic *s);
int64_t dsv3_synthetic_seq_len(const Dsv3Synthetic *s);

// Probability of regime r (0 <= r < DSV3_SYNTHETIC_NUM_REGIMES) at position 0.
double dsv3_synthetic_regime_probability(int regime);

// The regime announced by `token` (a document's first token), or -1 if it is no regime token.
int dsv3_synthetic_regime_of(int32_t token);

// Entropy H_r in nats of one fresh token of regime r.
double dsv3_synthetic_regime_entropy(const Dsv3Synthetic *s, int regime);

// Probability that a fresh token of regime r is `token` (0 outside the regime's block).
double dsv3_synthetic_token_probability(const Dsv3Synthetic *s, int regime, int32_t token);

// What position `pos` (0 <= pos <= seq_len) of a regime-r document holds; for a copy,
// *source (if not NULL) is the earlier fresh position it repeats, otherwise -1. A regime out
// of range has no layout: every content position reads as fresh.
Dsv3SyntheticKind dsv3_synthetic_position_kind(const Dsv3Synthetic *s, int regime, int64_t pos,
                                               int64_t *source);

// Logs one line with the vocabulary, regimes and the entropy floor (for start-up).
void dsv3_synthetic_log_summary(const Dsv3Synthetic *s);

#endif
