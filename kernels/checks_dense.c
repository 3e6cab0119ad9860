// checks_dense: the shared argument checks of AdamW and gradient clipping (sum of squares,
// scale), cross-entropy (fused, and vocabulary-parallel), embedding, linear and rmsnorm.
#include <inttypes.h>
#include <stdint.h>

#include "kernels/checks.h"

Dsv3Err dsv3_check_adamw(const void *param, const void *grad, const void *m, const void *v,
                         int64_t n, const Dsv3AdamWArgs *args) {
    DSV3_CHECK(args != NULL, DSV3_ERR_USAGE, "adamw_step: args is NULL");
    DSV3_CHECK(n >= 0, DSV3_ERR_USAGE, "adamw_step: n = %" PRId64 ", expected n >= 0", n);
    DSV3_CHECK(args->lr >= 0, DSV3_ERR_USAGE, "adamw_step: lr = %g, expected lr >= 0",
               (double)args->lr);
    DSV3_CHECK(args->beta1 >= 0 && args->beta1 < 1, DSV3_ERR_USAGE,
               "adamw_step: beta1 = %g, expected 0 <= beta1 < 1", (double)args->beta1);
    DSV3_CHECK(args->beta2 >= 0 && args->beta2 < 1, DSV3_ERR_USAGE,
               "adamw_step: beta2 = %g, expected 0 <= beta2 < 1", (double)args->beta2);
    DSV3_CHECK(args->eps >= 0, DSV3_ERR_USAGE, "adamw_step: eps = %g, expected eps >= 0",
               (double)args->eps);
    DSV3_CHECK(args->weight_decay >= 0, DSV3_ERR_USAGE,
               "adamw_step: weight_decay = %g, expected weight_decay >= 0",
               (double)args->weight_decay);
    DSV3_CHECK(args->step >= 1, DSV3_ERR_USAGE,
               "adamw_step: step = %" PRId64 ", expected step >= 1 (1 on the first step)",
               args->step);
    if (n == 0) return DSV3_OK;
    DSV3_CHECK(param != NULL && grad != NULL && m != NULL && v != NULL, DSV3_ERR_USAGE,
               "adamw_step: param, grad, m and v must not be NULL");
    return DSV3_OK;
}

Dsv3Err dsv3_check_sum_squares(const void *out, const void *x, int64_t n) {
    DSV3_CHECK(out != NULL, DSV3_ERR_USAGE, "sum_squares: out is NULL");
    DSV3_CHECK(n >= 0, DSV3_ERR_USAGE, "sum_squares: n = %" PRId64 ", expected n >= 0", n);
    DSV3_CHECK(n == 0 || x != NULL, DSV3_ERR_USAGE, "sum_squares: x is NULL");
    return DSV3_OK;
}

Dsv3Err dsv3_check_scale(const void *x, int64_t n) {
    DSV3_CHECK(n >= 0, DSV3_ERR_USAGE, "scale: n = %" PRId64 ", expected n >= 0", n);
    DSV3_CHECK(n == 0 || x != NULL, DSV3_ERR_USAGE, "scale: x is NULL");
    return DSV3_OK;
}

// ---- cross-entropy and embedding ----

Dsv3Err dsv3_check_cross_entropy(const void *loss_sum, const void *dh, const void *dweight,
                                 const void *h, const void *weight, const void *labels, int64_t N,
                                 int64_t D, int64_t V, int64_t chunk) {
    DSV3_CHECK(loss_sum != NULL, DSV3_ERR_USAGE, "cross_entropy: loss_sum is NULL");
    DSV3_CHECK(N >= 0, DSV3_ERR_USAGE, "cross_entropy: N = %" PRId64 " tokens, expected N >= 0", N);
    DSV3_CHECK(D > 0, DSV3_ERR_USAGE, "cross_entropy: D = %" PRId64 ", expected D > 0", D);
    DSV3_CHECK(V > 0, DSV3_ERR_USAGE, "cross_entropy: V = %" PRId64 ", expected V > 0", V);
    DSV3_CHECK(chunk > 0, DSV3_ERR_USAGE,
               "cross_entropy: chunk = %" PRId64 " tokens, expected chunk > 0", chunk);
    if (N == 0) return DSV3_OK;
    DSV3_CHECK(h != NULL && weight != NULL && labels != NULL, DSV3_ERR_USAGE,
               "cross_entropy: h, weight and labels must not be NULL");
    DSV3_CHECK(dh == NULL || dweight != NULL, DSV3_ERR_USAGE,
               "cross_entropy: dweight must not be NULL when dh is wanted");
    return DSV3_OK;
}

Dsv3Err dsv3_check_cross_entropy_logits(const void *loss_sum, const void *logits,
                                        const void *labels, int64_t N, int64_t V) {
    DSV3_CHECK(loss_sum != NULL, DSV3_ERR_USAGE, "cross_entropy_logits: loss_sum is NULL");
    DSV3_CHECK(N >= 0 && V > 0, DSV3_ERR_USAGE,
               "cross_entropy_logits: N = %" PRId64 ", V = %" PRId64 ", expected N >= 0, V > 0", N,
               V);
    if (N == 0) return DSV3_OK;
    DSV3_CHECK(logits != NULL && labels != NULL, DSV3_ERR_USAGE,
               "cross_entropy_logits: logits and labels must not be NULL");
    return DSV3_OK;
}

// A slice [vocab_start, vocab_start + V) of a vocabulary of int32 ids.
static Dsv3Err check_vocab_slice(const char *op, int64_t V, int64_t vocab_start) {
    DSV3_CHECK(V > 0 && vocab_start >= 0 && vocab_start <= (int64_t)INT32_MAX + 1 - V,
               DSV3_ERR_USAGE,
               "%s: V = %" PRId64 " rows from vocab_start = %" PRId64
               ", expected V > 0, vocab_start >= 0 and vocab_start + V <= 2^31 (int32 token ids)",
               op, V, vocab_start);
    return DSV3_OK;
}

Dsv3Err dsv3_check_embedding(const void *a, const char *a_name, const void *tokens, const void *b,
                             const char *b_name, int64_t N, int64_t D, int64_t V,
                             int64_t vocab_start) {
    DSV3_CHECK(N >= 0, DSV3_ERR_USAGE, "embedding: N = %" PRId64 " tokens, expected N >= 0", N);
    DSV3_CHECK(D > 0, DSV3_ERR_USAGE, "embedding: D = %" PRId64 ", expected D > 0", D);
    DSV3_CALL(check_vocab_slice("embedding", V, vocab_start));
    if (N == 0) return DSV3_OK;
    DSV3_CHECK(a != NULL, DSV3_ERR_USAGE, "embedding: %s is NULL", a_name);
    DSV3_CHECK(b != NULL, DSV3_ERR_USAGE, "embedding: %s is NULL", b_name);
    DSV3_CHECK(tokens != NULL, DSV3_ERR_USAGE, "embedding: tokens is NULL");
    return DSV3_OK;
}

Dsv3Err dsv3_check_vocab_logits(const void *logits, const void *row_max, const void *h,
                                const void *weight, int64_t n, int64_t D, int64_t V) {
    DSV3_CHECK(n >= 0, DSV3_ERR_USAGE, "vocab_logits: n = %" PRId64 " tokens, expected n >= 0", n);
    DSV3_CHECK(D > 0, DSV3_ERR_USAGE, "vocab_logits: D = %" PRId64 ", expected D > 0", D);
    DSV3_CHECK(V > 0, DSV3_ERR_USAGE, "vocab_logits: V = %" PRId64 ", expected V > 0", V);
    if (n == 0) return DSV3_OK;
    DSV3_CHECK(logits != NULL && row_max != NULL && h != NULL && weight != NULL, DSV3_ERR_USAGE,
               "vocab_logits: logits, row_max, h and weight must not be NULL");
    return DSV3_OK;
}

Dsv3Err dsv3_check_vocab_logits_sums(const void *sums, const void *logits, const void *row_max,
                                     const void *labels, int64_t n, int64_t V,
                                     int64_t vocab_start) {
    DSV3_CHECK(n >= 0, DSV3_ERR_USAGE, "vocab_logits_sums: n = %" PRId64 " tokens, expected n >= 0",
               n);
    DSV3_CALL(check_vocab_slice("vocab_logits_sums", V, vocab_start));
    if (n == 0) return DSV3_OK;
    DSV3_CHECK(sums != NULL && logits != NULL && row_max != NULL && labels != NULL, DSV3_ERR_USAGE,
               "vocab_logits_sums: sums, logits, row_max and labels must not be NULL");
    return DSV3_OK;
}

Dsv3Err dsv3_check_vocab_logits_backward(const void *loss_sum, const void *dh, const void *dweight,
                                         const void *logits, const void *row_max, const void *sums,
                                         const void *h, const void *weight, const void *labels,
                                         int64_t n, int64_t D, int64_t V, int64_t vocab_start) {
    DSV3_CHECK(loss_sum != NULL, DSV3_ERR_USAGE, "vocab_logits_backward: loss_sum is NULL");
    DSV3_CHECK(n >= 0, DSV3_ERR_USAGE,
               "vocab_logits_backward: n = %" PRId64 " tokens, expected n >= 0", n);
    DSV3_CHECK(D > 0, DSV3_ERR_USAGE, "vocab_logits_backward: D = %" PRId64 ", expected D > 0", D);
    DSV3_CALL(check_vocab_slice("vocab_logits_backward", V, vocab_start));
    if (n == 0) return DSV3_OK;
    DSV3_CHECK(row_max != NULL && sums != NULL && labels != NULL, DSV3_ERR_USAGE,
               "vocab_logits_backward: row_max, sums and labels must not be NULL");
    DSV3_CHECK(dh == NULL || (dweight != NULL && logits != NULL && h != NULL && weight != NULL),
               DSV3_ERR_USAGE,
               "vocab_logits_backward: dweight, logits, h and weight must not be NULL when dh is "
               "wanted");
    return DSV3_OK;
}

// ---- linear and rmsnorm ----

static Dsv3Err linear_check_sizes(int64_t N, int64_t In, int64_t Out) {
    DSV3_CHECK(N >= 0, DSV3_ERR_USAGE, "linear: N = %" PRId64 " rows, expected N >= 0", N);
    DSV3_CHECK(In > 0, DSV3_ERR_USAGE, "linear: In = %" PRId64 " input features, expected In > 0",
               In);
    DSV3_CHECK(Out > 0, DSV3_ERR_USAGE,
               "linear: Out = %" PRId64 " output features, expected Out > 0", Out);
    return DSV3_OK;
}

Dsv3Err dsv3_check_linear_forward(const void *out, const void *x, const void *weight, int64_t N,
                                  int64_t In, int64_t Out) {
    DSV3_CALL(linear_check_sizes(N, In, Out));
    if (N == 0) return DSV3_OK;
    DSV3_CHECK(out != NULL && x != NULL && weight != NULL, DSV3_ERR_USAGE,
               "linear_forward: out, x and weight must not be NULL");
    return DSV3_OK;
}

Dsv3Err dsv3_check_linear_backward(const void *dx, const void *dweight, const void *dout,
                                   const void *x, const void *weight, int64_t N, int64_t In,
                                   int64_t Out) {
    DSV3_CALL(linear_check_sizes(N, In, Out));
    if (N == 0) return DSV3_OK;
    DSV3_CHECK(dx != NULL || dweight != NULL, DSV3_ERR_USAGE,
               "linear_backward: dx and dweight are both NULL, nothing to compute (pass at "
               "least one)");
    DSV3_CHECK(dout != NULL, DSV3_ERR_USAGE, "linear_backward: dout must not be NULL");
    DSV3_CHECK(dx == NULL || weight != NULL, DSV3_ERR_USAGE,
               "linear_backward: weight must not be NULL when dx is wanted");
    DSV3_CHECK(dweight == NULL || x != NULL, DSV3_ERR_USAGE,
               "linear_backward: x must not be NULL when dweight is wanted");
    return DSV3_OK;
}

static Dsv3Err rmsnorm_check_sizes(int64_t N, int64_t D) {
    DSV3_CHECK(N >= 0, DSV3_ERR_USAGE, "rmsnorm: N = %" PRId64 " rows, expected N >= 0", N);
    DSV3_CHECK(D > 0, DSV3_ERR_USAGE, "rmsnorm: D = %" PRId64 ", expected D > 0", D);
    return DSV3_OK;
}

Dsv3Err dsv3_check_rmsnorm_forward(const void *out, const void *rstd, const void *x,
                                   const void *weight, int64_t N, int64_t D, float eps) {
    DSV3_CALL(rmsnorm_check_sizes(N, D));
    DSV3_CHECK(eps >= 0, DSV3_ERR_USAGE, "rmsnorm: eps = %g, expected eps >= 0", (double)eps);
    if (N == 0) return DSV3_OK;
    DSV3_CHECK(out != NULL && rstd != NULL && x != NULL && weight != NULL, DSV3_ERR_USAGE,
               "rmsnorm_forward: out, rstd, x and weight must not be NULL");
    return DSV3_OK;
}

Dsv3Err dsv3_check_rmsnorm_backward(const void *dx, const void *dweight, const void *dout,
                                    const void *x, const void *weight, const void *rstd, int64_t N,
                                    int64_t D) {
    DSV3_CALL(rmsnorm_check_sizes(N, D));
    if (N == 0) return DSV3_OK;
    DSV3_CHECK(dx != NULL && dweight != NULL && dout != NULL && x != NULL && weight != NULL &&
                   rstd != NULL,
               DSV3_ERR_USAGE,
               "rmsnorm_backward: dx, dweight, dout, x, weight and rstd must not be NULL");
    return DSV3_OK;
}
