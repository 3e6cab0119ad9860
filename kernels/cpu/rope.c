// rope.c: rotary position embedding on interleaved pairs, with YaRN (see kernels.h).
//
// Memory-bound: one pass over the rotated channels, parallel over tokens with OpenMP. The
// tables are computed in double (torchtitan uses float32) and rounded once to float.
//
// Legend: B sequences, T positions, N = B × T tokens, H heads, R rotary dims (even), R/2
// rotated pairs. Tables cos, sin (T, R/2). A rotated vector is R floats holding R/2 pairs
// (x[2i], x[2i+1]), read as x[2i] + i·x[2i+1] and multiplied by e^{i·angle(t, i)}.
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "common/core/error.h"
#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

// Where YaRN's ramp has both ends equal, torchtitan widens it by this much to avoid 0 / 0.
#define RAMP_MIN_WIDTH 0.001
// C11 does not define M_PI.
#define PI 3.14159265358979323846

// The rotary dim whose wavelength fits `rotations` turns into original_seq_len positions
// (torchtitan's find_correction_dim).
static double correction_dim(double rotations, int64_t R, double theta, int64_t original_seq_len) {
    return (double)R * log((double)original_seq_len / (rotations * 2.0 * PI)) / (2.0 * log(theta));
}

// YaRN's weight of the scaled frequency at pair i: 0 below the correction range (fast
// rotations keep their frequency), 1 above it (slow ones are divided by the factor).
static double yarn_ramp(int64_t i, double low, double high) {
    double ramp = ((double)i - low) / (high - low);
    return ramp < 0.0 ? 0.0 : (ramp > 1.0 ? 1.0 : ramp);
}

Dsv3Err dsv3_cpu_rope_tables(const Dsv3KernelContext *ctx, float *cos_table, float *sin_table,
                             int64_t T, int64_t R, double theta, double factor, double beta_fast,
                             double beta_slow, int64_t original_seq_len) {
    (void)ctx;
    DSV3_CALL(dsv3_check_rope_tables(cos_table, sin_table, T, R, theta, factor, beta_fast,
                                     beta_slow, original_seq_len));
    const int64_t pairs = R / 2;
    // YaRN only when training beyond the original context; its range is computed over R dims
    // while the ramp runs over the R/2 pairs, as in torchtitan.
    const int yarn = T > original_seq_len;
    double low = 0.0, high = 0.0;
    if (yarn) {
        low = fmax(floor(correction_dim(beta_fast, R, theta, original_seq_len)), 0.0);
        high = fmin(ceil(correction_dim(beta_slow, R, theta, original_seq_len)), (double)(R - 1));
        if (low == high) high += RAMP_MIN_WIDTH;
    }
    // Threads split the pairs, so that each frequency is computed once and needs no scratch;
    // a column of the tables is written per pair.
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < pairs; i++) {
        double f = pow(theta, -(double)(2 * i) / (double)R);
        if (yarn) {
            double smooth = 1.0 - yarn_ramp(i, low, high);
            f = f / factor * (1.0 - smooth) + f * smooth;
        }
        for (int64_t t = 0; t < T; t++) {
            double angle = (double)t * f;
            cos_table[t * pairs + i] = (float)cos(angle);
            sin_table[t * pairs + i] = (float)sin(angle);
        }
    }
    return DSV3_OK;
}

// Rotates every pair by `direction` × angle(t, i): +1 forward, −1 backward (the transpose of a
// rotation is the rotation by the opposite angle).
static void rotate_all(float *x, const float *cos_table, const float *sin_table, int64_t B,
                       int64_t T, int64_t H, int64_t R, int64_t row_stride, int64_t head_stride,
                       float direction) {
    const int64_t pairs = R / 2;
    const int64_t N = B * T;
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const int64_t t = n % T;
        const float *c = cos_table + t * pairs; // (R/2)
        const float *s = sin_table + t * pairs; // (R/2)
        for (int64_t h = 0; h < H; h++) {
            float *v = x + n * row_stride + h * head_stride; // (R)
            for (int64_t i = 0; i < pairs; i++) {
                float si = direction * s[i];
                float re = v[2 * i], im = v[2 * i + 1];
                v[2 * i] = re * c[i] - im * si;
                v[2 * i + 1] = re * si + im * c[i];
            }
        }
    }
}

Dsv3Err dsv3_cpu_rope_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *x_,
                              const float *cos_table, const float *sin_table, int64_t B, int64_t T,
                              int64_t H, int64_t R, int64_t row_stride, int64_t head_stride) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("rope_forward", dtype));
    float *x = x_; // rotated slices of (B, T, row_stride)
    DSV3_CALL(dsv3_check_rope_apply(x, cos_table, sin_table, B, T, H, R, row_stride, head_stride));
    rotate_all(x, cos_table, sin_table, B, T, H, R, row_stride, head_stride, 1.0f);
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_rope_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *dx_,
                               const float *cos_table, const float *sin_table, int64_t B, int64_t T,
                               int64_t H, int64_t R, int64_t row_stride, int64_t head_stride) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("rope_backward", dtype));
    float *dx = dx_; // rotated slices of (B, T, row_stride)
    DSV3_CALL(dsv3_check_rope_apply(dx, cos_table, sin_table, B, T, H, R, row_stride, head_stride));
    rotate_all(dx, cos_table, sin_table, B, T, H, R, row_stride, head_stride, -1.0f);
    return DSV3_OK;
}
