// linear_reference.c: y = x · Wᵀ without bias (torch.nn.Linear's layout), written for clarity.
//
// Plain triple loops with double accumulators.
//
// Legend: N rows (tokens), I input features, O output features.
#include <inttypes.h>
#include <stdint.h>

#include "kernels/kernels_reference.h"

static Dsv3Err linear_check_sizes(int64_t N, int64_t I, int64_t O) {
    DSV3_CHECK(N >= 0, DSV3_ERR_USAGE, "linear: N = %" PRId64 " rows, expected N >= 0", N);
    DSV3_CHECK(I > 0, DSV3_ERR_USAGE, "linear: I = %" PRId64 " input features, expected I > 0", I);
    DSV3_CHECK(O > 0, DSV3_ERR_USAGE, "linear: O = %" PRId64 " output features, expected O > 0", O);
    return DSV3_OK;
}

Dsv3Err dsv3_linear_forward_reference(float *out, const float *x, const float *weight, int64_t N,
                                      int64_t I, int64_t O) {
    DSV3_CALL(linear_check_sizes(N, I, O));
    if (N == 0) return DSV3_OK;
    DSV3_CHECK(out != NULL && x != NULL && weight != NULL, DSV3_ERR_USAGE,
               "linear_forward: out, x and weight must not be NULL");
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < O; o++) {
            double sum = 0;
            for (int64_t i = 0; i < I; i++) sum += (double)x[n * I + i] * weight[o * I + i];
            out[n * O + o] = (float)sum;
        }
    return DSV3_OK;
}

Dsv3Err dsv3_linear_backward_reference(float *dx, float *dweight, const float *dout, const float *x,
                                       const float *weight, int64_t N, int64_t I, int64_t O,
                                       int accumulate_dx) {
    DSV3_CALL(linear_check_sizes(N, I, O));
    if (N == 0) return DSV3_OK;
    DSV3_CHECK(dweight != NULL && dout != NULL && x != NULL, DSV3_ERR_USAGE,
               "linear_backward: dweight, dout and x must not be NULL");
    DSV3_CHECK(dx == NULL || weight != NULL, DSV3_ERR_USAGE,
               "linear_backward: weight must not be NULL when dx is wanted");
    if (dx != NULL)
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < I; i++) {
                double sum = 0;
                for (int64_t o = 0; o < O; o++) sum += (double)dout[n * O + o] * weight[o * I + i];
                dx[n * I + i] = accumulate_dx ? (float)(dx[n * I + i] + sum) : (float)sum;
            }
    for (int64_t o = 0; o < O; o++)
        for (int64_t i = 0; i < I; i++) {
            double sum = 0;
            for (int64_t n = 0; n < N; n++) sum += (double)dout[n * O + o] * x[n * I + i];
            dweight[o * I + i] += (float)sum;
        }
    return DSV3_OK;
}
