// checks_attention: the CPU's check of attention's query positions, after the shared checks
// (kernels/checks.h).
#include <stdint.h>

#include "kernels/cpu/checks.h"

// Every query position (B, Tq) in [-1, Tk), when there are positions.
static Dsv3Err check_q_pos(const char *op, const int32_t *q_pos, int64_t B, int64_t Tq,
                           int64_t Tk) {
    for (int64_t n = 0; q_pos != NULL && n < B * Tq; n++)
        DSV3_CHECK(q_pos[n] >= -1 && q_pos[n] < Tk, DSV3_ERR_USAGE,
                   "%s: query %lld of sequence %lld sits at key position %d, outside "
                   "[-1, Tk=%lld)",
                   op, (long long)(n % Tq), (long long)(n / Tq), (int)q_pos[n], (long long)Tk);
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_check_attention_forward(const float *out, const float *lse, const float *q,
                                         const float *k, const float *v, const int32_t *q_pos,
                                         int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t Dqk,
                                         int64_t Dv, float scale) {
    DSV3_CALL(dsv3_check_attention_forward(out, lse, q, k, v, q_pos, B, Tq, Tk, H, Dqk, Dv, scale));
    return check_q_pos("attention_forward", q_pos, B, Tq, Tk);
}

Dsv3Err dsv3_cpu_check_attention_backward(const float *dq, const float *dk, const float *dv,
                                          const float *dout, const float *q, const float *k,
                                          const float *v, const float *out, const float *lse,
                                          const int32_t *q_pos, int64_t B, int64_t Tq, int64_t Tk,
                                          int64_t H, int64_t Dqk, int64_t Dv, float scale) {
    DSV3_CALL(dsv3_check_attention_backward(dq, dk, dv, dout, q, k, v, out, lse, q_pos, B, Tq, Tk,
                                            H, Dqk, Dv, scale));
    return check_q_pos("attention_backward", q_pos, B, Tq, Tk);
}
