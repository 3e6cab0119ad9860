// checks_attention: the shared argument checks of attention, of the rotary embedding and of
// MLA's key/value assembly.
#include <inttypes.h>
#include <math.h>
#include <stdint.h>

#include "kernels/checks.h"

// Sizes and scale of either direction of attention (op names it); q_pos only for being given.
static Dsv3Err attention_check_dims(const char *op, const void *q_pos, int64_t B, int64_t Tq,
                                    int64_t Tk, int64_t H, int64_t Dqk, int64_t Dv, float scale) {
    DSV3_CHECK(B >= 1 && Tq >= 1 && Tk >= 1 && H >= 1, DSV3_ERR_USAGE,
               "%s: B, Tq, Tk, H must be >= 1, got B=%lld Tq=%lld Tk=%lld H=%lld", op, (long long)B,
               (long long)Tq, (long long)Tk, (long long)H);
    DSV3_CHECK(Dqk >= 1 && Dv >= 1, DSV3_ERR_USAGE,
               "%s: head dims Dqk and Dv must be >= 1, got Dqk=%lld Dv=%lld", op, (long long)Dqk,
               (long long)Dv);
    DSV3_CHECK(isfinite(scale) && scale > 0.0f, DSV3_ERR_USAGE,
               "%s: scale must be finite and > 0 (e.g. Dqk^-0.5), got %g", op, (double)scale);
    DSV3_CHECK(q_pos != NULL || Tq == Tk, DSV3_ERR_USAGE,
               "%s: without query positions Tq must equal Tk, got Tq=%lld Tk=%lld", op,
               (long long)Tq, (long long)Tk);
    return DSV3_OK;
}

Dsv3Err dsv3_check_attention_forward(const void *out, const void *lse, const void *q, const void *k,
                                     const void *v, const void *q_pos, int64_t B, int64_t Tq,
                                     int64_t Tk, int64_t H, int64_t Dqk, int64_t Dv, float scale) {
    DSV3_CHECK(out != NULL && lse != NULL && q != NULL && k != NULL && v != NULL, DSV3_ERR_USAGE,
               "attention_forward: out, lse, q, k, v must not be NULL");
    return attention_check_dims("attention_forward", q_pos, B, Tq, Tk, H, Dqk, Dv, scale);
}

Dsv3Err dsv3_check_attention_backward(const void *dq, const void *dk, const void *dv,
                                      const void *dout, const void *q, const void *k, const void *v,
                                      const void *out, const void *lse, const void *q_pos,
                                      int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t Dqk,
                                      int64_t Dv, float scale) {
    DSV3_CHECK(dq != NULL && dk != NULL && dv != NULL && dout != NULL && q != NULL && k != NULL &&
                   v != NULL && out != NULL && lse != NULL,
               DSV3_ERR_USAGE,
               "attention_backward: dq, dk, dv, dout, q, k, v, out, lse must not be NULL");
    return attention_check_dims("attention_backward", q_pos, B, Tq, Tk, H, Dqk, Dv, scale);
}

Dsv3Err dsv3_check_attention_merge(const void *out, const void *lse, const void *part_out,
                                   const void *part_lse, int64_t B, int64_t T, int64_t H,
                                   int64_t Dv) {
    DSV3_CHECK(out != NULL && lse != NULL && part_out != NULL && part_lse != NULL, DSV3_ERR_USAGE,
               "attention_merge: out, lse, part_out, part_lse must not be NULL");
    DSV3_CHECK(B >= 1 && T >= 1 && H >= 1 && Dv >= 1, DSV3_ERR_USAGE,
               "attention_merge: B, T, H, Dv must be >= 1, got B=%lld T=%lld H=%lld Dv=%lld",
               (long long)B, (long long)T, (long long)H, (long long)Dv);
    return DSV3_OK;
}

Dsv3Err dsv3_check_rope_tables(const void *cos_table, const void *sin_table, int64_t T, int64_t R,
                               double theta, double factor, double beta_fast, double beta_slow,
                               int64_t original_seq_len) {
    DSV3_CHECK(cos_table != NULL && sin_table != NULL, DSV3_ERR_USAGE,
               "rope tables: cos and sin must not be NULL");
    DSV3_CHECK(T >= 1, DSV3_ERR_USAGE, "rope tables: T (positions) must be >= 1, got %lld",
               (long long)T);
    DSV3_CHECK(R >= 2 && R % 2 == 0, DSV3_ERR_USAGE,
               "rope tables: R (rotary dims) must be even and >= 2, got %lld", (long long)R);
    DSV3_CHECK(isfinite(theta) && theta > 1.0, DSV3_ERR_USAGE,
               "rope tables: theta must be finite and > 1, got %g", theta);
    DSV3_CHECK(isfinite(factor) && factor > 0.0, DSV3_ERR_USAGE,
               "rope tables: factor must be finite and > 0, got %g", factor);
    DSV3_CHECK(isfinite(beta_fast) && beta_fast > 0.0 && isfinite(beta_slow) && beta_slow > 0.0,
               DSV3_ERR_USAGE,
               "rope tables: beta_fast and beta_slow must be finite and > 0, got %g and %g",
               beta_fast, beta_slow);
    DSV3_CHECK(original_seq_len >= 1, DSV3_ERR_USAGE,
               "rope tables: original_seq_len must be >= 1, got %lld", (long long)original_seq_len);
    return DSV3_OK;
}

Dsv3Err dsv3_check_rope_apply(const void *x, const void *cos_table, const void *sin_table,
                              int64_t B, int64_t T, int64_t H, int64_t R, int64_t row_stride,
                              int64_t head_stride) {
    DSV3_CHECK(x != NULL, DSV3_ERR_USAGE, "rope: x must not be NULL");
    DSV3_CHECK(cos_table != NULL && sin_table != NULL, DSV3_ERR_USAGE,
               "rope: cos and sin must not be NULL");
    DSV3_CHECK(B >= 1 && T >= 1 && H >= 1, DSV3_ERR_USAGE,
               "rope: B, T, H must be >= 1, got B=%lld T=%lld H=%lld", (long long)B, (long long)T,
               (long long)H);
    DSV3_CHECK(R >= 2 && R % 2 == 0, DSV3_ERR_USAGE,
               "rope: R (rotary dims) must be even and >= 2, got %lld", (long long)R);
    // Overlapping vectors would make an in-place rotation depend on the order of the work.
    DSV3_CHECK(
        H == 1 || head_stride >= R, DSV3_ERR_USAGE,
        "rope: with H=%lld heads, head_stride must be >= R=%lld so heads do not overlap, got %lld",
        (long long)H, (long long)R, (long long)head_stride);
    DSV3_CHECK(row_stride >= (H - 1) * head_stride + R, DSV3_ERR_USAGE,
               "rope: row_stride must be >= (H-1)*head_stride + R = %lld so tokens do not overlap, "
               "got %lld",
               (long long)((H - 1) * head_stride + R), (long long)row_stride);
    return DSV3_OK;
}

Dsv3Err dsv3_check_mla_kv(const char *op, const void *a, const void *b, const void *kvb,
                          const void *kpe, int64_t kpe_stride, int64_t N, int64_t H, int64_t nope,
                          int64_t R, int64_t Dv) {
    DSV3_CHECK(N >= 0 && H >= 1, DSV3_ERR_USAGE,
               "%s: N = %" PRId64 ", H = %" PRId64 ", expected N >= 0 and H >= 1", op, N, H);
    DSV3_CHECK(nope >= 0 && R >= 0 && Dv >= 0, DSV3_ERR_USAGE,
               "%s: nope = %" PRId64 ", R = %" PRId64 ", Dv = %" PRId64 ", expected all >= 0", op,
               nope, R, Dv);
    DSV3_CHECK(kpe_stride >= R, DSV3_ERR_USAGE,
               "%s: the rotary key's stride %" PRId64 " must be >= R = %" PRId64
               " (rows must not overlap)",
               op, kpe_stride, R);
    if (N == 0) return DSV3_OK;
    DSV3_CHECK(a != NULL && b != NULL && kvb != NULL && kpe != NULL, DSV3_ERR_USAGE,
               "%s: no tensor may be NULL", op);
    return DSV3_OK;
}
