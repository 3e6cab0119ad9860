// linear_reference.c: y = x · Wᵀ without bias (torch.nn.Linear's layout), written for clarity.
//
// Plain triple loops with double accumulators.
//
// Legend: N rows (tokens), I input features, O output features.
#include <inttypes.h>
#include <stdint.h>

#include "kernels/kernels_reference.h"

static Dsv3Err linear_check_sizes(int64_t N, int64_t In, int64_t Out) {
    DSV3_CHECK(N >= 0, DSV3_ERR_USAGE, "linear: N = %" PRId64 " rows, expected N >= 0", N);
    DSV3_CHECK(In > 0, DSV3_ERR_USAGE, "linear: In = %" PRId64 " input features, expected In > 0", In);
    DSV3_CHECK(Out > 0, DSV3_ERR_USAGE, "linear: Out = %" PRId64 " output features, expected Out > 0", Out);
    return DSV3_OK;
}

Dsv3Err dsv3_linear_forward_reference(float *out, const float *x, const float *weight, int64_t N,
                                      int64_t In, int64_t Out) {
    DSV3_CALL(linear_check_sizes(N, In, Out));
    if (N == 0) return DSV3_OK;
    DSV3_CHECK(out != NULL && x != NULL && weight != NULL, DSV3_ERR_USAGE,
               "linear_forward: out, x and weight must not be NULL");
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < Out; o++) {
            double sum = 0;
            for (int64_t i = 0; i < In; i++) sum += (double)x[n * In + i] * weight[o * In + i];
            out[n * Out + o] = (float)sum;
        }
    return DSV3_OK;
}

Dsv3Err dsv3_linear_backward_reference(float *dx, float *dweight, const float *dout, const float *x,
                                       const float *weight, int64_t N, int64_t In, int64_t Out,
                                       int accumulate_dx) {
    DSV3_CALL(linear_check_sizes(N, In, Out));
    if (N == 0) return DSV3_OK;
    DSV3_CHECK(dweight != NULL && dout != NULL && x != NULL, DSV3_ERR_USAGE,
               "linear_backward: dweight, dout and x must not be NULL");
    DSV3_CHECK(dx == NULL || weight != NULL, DSV3_ERR_USAGE,
               "linear_backward: weight must not be NULL when dx is wanted");
    if (dx != NULL)
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < In; i++) {
                double sum = 0;
                for (int64_t o = 0; o < Out; o++) sum += (double)dout[n * Out + o] * weight[o * In + i];
                dx[n * In + i] = accumulate_dx ? (float)(dx[n * In + i] + sum) : (float)sum;
            }
    for (int64_t o = 0; o < Out; o++)
        for (int64_t i = 0; i < In; i++) {
            double sum = 0;
            for (int64_t n = 0; n < N; n++) sum += (double)dout[n * Out + o] * x[n * In + i];
            dweight[o * In + i] += (float)sum;
        }
    return DSV3_OK;
}
