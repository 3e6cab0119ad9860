// Unit tests for the synthetic dataset: the entropy floor against the empirical loss of the
// true generator, the layout (copies copy, EOS last, ids in range), determinism and errors.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/core/alloc.h"
#include "common/data/synthetic.h"

// The debug model's setting.
enum { DEBUG_VOCAB = 2048, DEBUG_SEQ_LEN = 256 };
// Windows drawn for the empirical floor; a few thousand keep the standard error near 0.01.
enum { EMPIRICAL_WINDOWS = 4000 };
// Allowed deviation of an empirical mean from its expectation, in standard errors.
static const double MAX_STANDARD_ERRORS = 5.0;

static Dsv3Synthetic *create_or_fail(int64_t vocab, int64_t seq_len, uint64_t seed) {
    Dsv3Synthetic *s = NULL;
    if (dsv3_synthetic_create(&s, vocab, seq_len, seed) != DSV3_OK)
        fail_msg("create(%lld, %lld): %s", (long long)vocab, (long long)seq_len, dsv3_error_text());
    return s;
}

static int32_t *window_or_fail(const Dsv3Synthetic *s, int64_t w, int32_t *tokens) {
    if (dsv3_synthetic_window(s, w, tokens) != DSV3_OK)
        fail_msg("window %lld: %s", (long long)w, dsv3_error_text());
    return tokens;
}

static void expect_message_contains(const char *needle) {
    const char *msg = dsv3_error_message();
    if (strstr(msg, needle) == NULL) fail_msg("message '%s' does not name '%s'", msg, needle);
}

// −log p(label | context) of every label of one window under the generator's own
// probabilities; fails if a copy does not copy, the EOS is missing or an id is out of place.
static double window_nll(const Dsv3Synthetic *s, const int32_t *tokens) {
    int64_t seq_len = dsv3_synthetic_seq_len(s), vocab = dsv3_synthetic_vocab_size(s);
    int regime = dsv3_synthetic_regime_of(tokens[0]);
    if (regime < 0) fail_msg("first token %d is no regime token", tokens[0]);
    double nll = 0.0;
    for (int64_t pos = 1; pos <= seq_len; pos++) {
        int32_t t = tokens[pos];
        if (t < 0 || t >= vocab)
            fail_msg("id %d at %lld is outside [0, %lld)", t, (long long)pos, (long long)vocab);
        int64_t src = -2;
        Dsv3SyntheticKind kind = dsv3_synthetic_position_kind(s, regime, pos, &src);
        switch (kind) {
        case DSV3_SYNTHETIC_FRESH: {
            assert_int_equal(src, -1);
            double p = dsv3_synthetic_token_probability(s, regime, t);
            if (!(p > 0.0))
                fail_msg("fresh id %d at %lld is outside regime %d's vocabulary", t, (long long)pos,
                         regime);
            nll -= log(p);
            break;
        }
        case DSV3_SYNTHETIC_COPY:
            if (src < 1 || src >= pos)
                fail_msg("copy at %lld has source %lld", (long long)pos, (long long)src);
            assert_int_equal(dsv3_synthetic_position_kind(s, regime, src, NULL),
                             DSV3_SYNTHETIC_FRESH);
            if (t != tokens[src])
                fail_msg("position %lld (%d) does not copy %lld (%d)", (long long)pos, t,
                         (long long)src, tokens[src]);
            break;
        case DSV3_SYNTHETIC_EOS_TOKEN:
            assert_int_equal(pos, seq_len);
            assert_int_equal(t, dsv3_synthetic_eos_id(s));
            break;
        default: fail_msg("label position %lld has kind %d", (long long)pos, (int)kind);
        }
    }
    return nll / (double)seq_len;
}

// The empirical mean loss of the true generator over many windows equals the floor within
// MAX_STANDARD_ERRORS standard errors (of the per-window means), and the regimes appear with
// their probabilities.
static void check_empirical_floor(int64_t vocab, int64_t seq_len, uint64_t seed) {
    Dsv3Synthetic *s = create_or_fail(vocab, seq_len, seed);
    int32_t *tokens = NULL;
    assert_int_equal(dsv3_alloc((void **)&tokens, (size_t)(seq_len + 1) * sizeof *tokens, "tokens"),
                     DSV3_OK);
    double sum = 0.0, sum_sq = 0.0;
    int64_t regime_count[DSV3_SYNTHETIC_NUM_REGIMES] = {0};
    for (int64_t w = 0; w < EMPIRICAL_WINDOWS; w++) {
        double nll = window_nll(s, window_or_fail(s, w, tokens));
        sum += nll;
        sum_sq += nll * nll;
        regime_count[dsv3_synthetic_regime_of(tokens[0])]++;
    }
    double n = EMPIRICAL_WINDOWS, mean = sum / n;
    double se = sqrt(fmax(sum_sq / n - mean * mean, 0.0) / n);
    double floor = dsv3_synthetic_entropy_floor(s);
    if (fabs(mean - floor) > MAX_STANDARD_ERRORS * se + 1e-12)
        fail_msg("vocab %lld seq_len %lld: empirical %.6f vs floor %.6f (standard error %.6f)",
                 (long long)vocab, (long long)seq_len, mean, floor, se);
    for (int r = 0; r < DSV3_SYNTHETIC_NUM_REGIMES; r++) {
        double p = dsv3_synthetic_regime_probability(r), freq = (double)regime_count[r] / n;
        if (fabs(freq - p) > MAX_STANDARD_ERRORS * sqrt(p * (1 - p) / n))
            fail_msg("regime %d appears %.4f of the time, expected %.4f", r, freq, p);
    }
    dsv3_free(tokens);
    dsv3_synthetic_destroy(s);
}

static void test_empirical_floor_debug(void **state) {
    (void)state;
    check_empirical_floor(DEBUG_VOCAB, DEBUG_SEQ_LEN, 0);
}

static void test_empirical_floor_small(void **state) {
    (void)state;
    check_empirical_floor(DSV3_SYNTHETIC_MIN_VOCAB, DSV3_SYNTHETIC_MIN_SEQ_LEN, 7);
    check_empirical_floor(100, 17, 1234);
    check_empirical_floor(50000, 1000, 99);
}

// The floor from the definition, recomputed from the public probabilities and layout.
static void test_floor_formula(void **state) {
    (void)state;
    const int64_t settings[][2] = {
        {DEBUG_VOCAB, DEBUG_SEQ_LEN}, {DSV3_SYNTHETIC_MIN_VOCAB, 2}, {1000, 33}, {102400, 4096}};
    for (size_t i = 0; i < sizeof settings / sizeof settings[0]; i++) {
        int64_t vocab = settings[i][0], seq_len = settings[i][1];
        Dsv3Synthetic *s = create_or_fail(vocab, seq_len, 3);
        double expected = 0.0, weights = 0.0;
        for (int r = 0; r < DSV3_SYNTHETIC_NUM_REGIMES; r++) {
            double total = 0.0, entropy = 0.0;
            for (int32_t t = 0; t < vocab; t++) {
                double p = dsv3_synthetic_token_probability(s, r, t);
                total += p;
                if (p > 0) entropy -= p * log(p);
                // Regime vocabularies are disjoint and hold content ids only.
                if (p > 0 && t < DSV3_SYNTHETIC_FIRST_CONTENT_ID)
                    fail_msg("regime %d uses reserved id %d", r, t);
                for (int q = 0; q < r && p > 0; q++)
                    if (dsv3_synthetic_token_probability(s, q, t) > 0)
                        fail_msg("regimes %d and %d share id %d", q, r, t);
            }
            assert_true(fabs(total - 1.0) < 1e-12);
            assert_true(fabs(entropy - dsv3_synthetic_regime_entropy(s, r)) < 1e-12 * entropy);
            int64_t fresh = 0;
            for (int64_t pos = 1; pos <= seq_len; pos++)
                fresh += dsv3_synthetic_position_kind(s, r, pos, NULL) == DSV3_SYNTHETIC_FRESH;
            assert_true(fresh >= 1);
            expected +=
                dsv3_synthetic_regime_probability(r) * (double)fresh * entropy / (double)seq_len;
            weights += dsv3_synthetic_regime_probability(r);
        }
        assert_true(fabs(weights - 1.0) < 1e-15);
        double floor = dsv3_synthetic_entropy_floor(s);
        if (fabs(floor - expected) > 1e-12 * expected)
            fail_msg("floor %.15f vs %.15f", floor, expected);
        assert_true(floor > 0.0 && floor < log((double)vocab));
        dsv3_synthetic_destroy(s);
    }
}

// The debug setting must leave a clear gap below a uniform guess, so training shows learning.
static void test_floor_debug_range(void **state) {
    (void)state;
    Dsv3Synthetic *s = create_or_fail(DEBUG_VOCAB, DEBUG_SEQ_LEN, 0);
    double floor = dsv3_synthetic_entropy_floor(s);
    print_message("entropy floor (vocab %d, seq_len %d): %.6f nats (log vocab %.6f)\n", DEBUG_VOCAB,
                  DEBUG_SEQ_LEN, floor, log((double)DEBUG_VOCAB));
    assert_true(floor > 2.0 && floor < 4.0);
    dsv3_synthetic_log_summary(s);
    // The floor does not depend on the seed.
    Dsv3Synthetic *t = create_or_fail(DEBUG_VOCAB, DEBUG_SEQ_LEN, 12345);
    assert_true(dsv3_synthetic_entropy_floor(t) == floor);
    dsv3_synthetic_destroy(t);
    dsv3_synthetic_destroy(s);
}

// Same (seed, window) gives the same tokens whatever the order of reads or the instance;
// different windows and different seeds give different tokens.
static void test_determinism(void **state) {
    (void)state;
    enum { WINDOWS = 64, T = 64 };
    Dsv3Synthetic *a = create_or_fail(DEBUG_VOCAB, T, 42);
    Dsv3Synthetic *b = create_or_fail(DEBUG_VOCAB, T, 42);
    Dsv3Synthetic *c = create_or_fail(DEBUG_VOCAB, T, 43);
    static int32_t fwd[WINDOWS][T + 1], rev[WINDOWS][T + 1], other[T + 1];
    for (int w = 0; w < WINDOWS; w++)
        window_or_fail(a, w, fwd[w]);
    for (int w = WINDOWS - 1; w >= 0; w--)
        window_or_fail(b, w, rev[w]);
    for (int w = 0; w < WINDOWS; w++) {
        assert_memory_equal(fwd[w], rev[w], sizeof fwd[w]);
        window_or_fail(a, w, other);
        assert_memory_equal(fwd[w], other, sizeof other);
        window_or_fail(c, w, other);
        assert_memory_not_equal(fwd[w], other, sizeof other);
        for (int v = 0; v < w; v++)
            assert_memory_not_equal(fwd[w], fwd[v], sizeof fwd[w]);
    }
    // Far-away windows are as cheap as near ones.
    window_or_fail(a, INT64_MAX / 2, other);
    assert_true(dsv3_synthetic_regime_of(other[0]) >= 0);
    assert_int_equal(other[T], DSV3_SYNTHETIC_EOS_ID);
    dsv3_synthetic_destroy(a);
    dsv3_synthetic_destroy(b);
    dsv3_synthetic_destroy(c);
}

// Copies are verbatim, reach back, and form a real share of the labels; EOS only at the end.
static void test_layout(void **state) {
    (void)state;
    Dsv3Synthetic *s = create_or_fail(DEBUG_VOCAB, DEBUG_SEQ_LEN, 5);
    assert_int_equal(dsv3_synthetic_eos_id(s), 0);
    for (int r = 0; r < DSV3_SYNTHETIC_NUM_REGIMES; r++) {
        int64_t copies = 0, src = 0;
        assert_int_equal(dsv3_synthetic_position_kind(s, r, 0, &src), DSV3_SYNTHETIC_REGIME_TOKEN);
        assert_int_equal(src, -1);
        assert_int_equal(dsv3_synthetic_position_kind(s, r, DEBUG_SEQ_LEN, &src),
                         DSV3_SYNTHETIC_EOS_TOKEN);
        assert_int_equal(dsv3_synthetic_position_kind(s, r, 1, NULL), DSV3_SYNTHETIC_FRESH);
        for (int64_t pos = 1; pos < DEBUG_SEQ_LEN; pos++)
            copies += dsv3_synthetic_position_kind(s, r, pos, NULL) == DSV3_SYNTHETIC_COPY;
        if (copies < DEBUG_SEQ_LEN / 4)
            fail_msg("regime %d has only %lld copies", r, (long long)copies);
    }
    int32_t tokens[DEBUG_SEQ_LEN + 1];
    for (int64_t w = 0; w < 200; w++) {
        window_or_fail(s, w, tokens);
        for (int pos = 1; pos < DEBUG_SEQ_LEN; pos++)
            assert_true(tokens[pos] >= DSV3_SYNTHETIC_FIRST_CONTENT_ID);
        window_nll(s, tokens); // checks the copies
    }
    dsv3_synthetic_destroy(s);
}

static void test_errors(void **state) {
    (void)state;
    Dsv3Synthetic *s = (Dsv3Synthetic *)&s; // must be reset to NULL on failure
    assert_int_equal(dsv3_synthetic_create(&s, DSV3_SYNTHETIC_MIN_VOCAB - 1, 16, 0),
                     DSV3_ERR_CONFIG);
    assert_null(s);
    expect_message_contains("model.vocab_size");
    char needed[32];
    snprintf(needed, sizeof needed, "at least %d", DSV3_SYNTHETIC_MIN_VOCAB);
    expect_message_contains(needed);
    dsv3_error_clear();
    assert_int_equal(dsv3_synthetic_create(&s, (int64_t)1 << 32, 16, 0), DSV3_ERR_CONFIG);
    expect_message_contains("model.vocab_size");
    dsv3_error_clear();
    assert_int_equal(dsv3_synthetic_create(&s, DEBUG_VOCAB, 1, 0), DSV3_ERR_CONFIG);
    expect_message_contains("training.seq_len");
    dsv3_error_clear();
    assert_int_equal(dsv3_synthetic_create(NULL, DEBUG_VOCAB, 16, 0), DSV3_ERR_USAGE);
    dsv3_error_clear();

    s = create_or_fail(DEBUG_VOCAB, 16, 0);
    int32_t tokens[17];
    assert_int_equal(dsv3_synthetic_window(s, -1, tokens), DSV3_ERR_USAGE);
    dsv3_error_clear();
    assert_int_equal(dsv3_synthetic_window(s, 0, NULL), DSV3_ERR_USAGE);
    dsv3_error_clear();
    dsv3_synthetic_destroy(s);
    dsv3_synthetic_destroy(NULL);
    assert_int_equal(dsv3_alloc_current_bytes(), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empirical_floor_debug),
        cmocka_unit_test(test_empirical_floor_small),
        cmocka_unit_test(test_floor_formula),
        cmocka_unit_test(test_floor_debug_range),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
