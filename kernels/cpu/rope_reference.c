// rope_reference.c: rotary position embedding on interleaved pairs, with YaRN, written for
// clarity (see kernels.h). The fast version (rope.c) is tested against this one,
// and this one against PyTorch (tests/reference/ops_attention.py).
//
// Legend: B sequences, T positions, H heads, R rotary dims (even), R/2 rotated pairs.
// Tables cos, sin (T, R/2). A rotated vector is R floats holding R/2 pairs (x[2i], x[2i+1]),
// read as the complex number x[2i] + i·x[2i+1] and multiplied by e^{i·angle(t, i)}.
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "common/core/error.h"
#include "kernels/cpu/checks.h"
#include "kernels/cpu/cpu.h"

// Where a ramp's two ends coincide, torchtitan widens it by this much to avoid 0 / 0.
#define RAMP_MIN_WIDTH 0.001
// C11 does not define M_PI.
#define PI 3.14159265358979323846

// find_correction_dim: the rotary dim whose wavelength fits `rotations` turns into
// original_seq_len positions.
static double correction_dim(double rotations, int64_t R, double theta, int64_t original_seq_len) {
    return (double)R * log((double)original_seq_len / (rotations * 2.0 * PI)) / (2.0 * log(theta));
}

// Frequency of pair i, following torchtitan's precompute_freqs_cis step by step, in double
// (torchtitan uses float32; double then one rounding to float keeps the tables within an ulp of
// the exact values).
static double frequency(int64_t i, int64_t T, int64_t R, double theta, double factor,
                        double beta_fast, double beta_slow, int64_t original_seq_len) {
    double freq = 1.0 / pow(theta, (double)(2 * i) / (double)R);
    if (T > original_seq_len) {
        // YaRN: the correction range is computed over R dims but the ramp runs over R/2 pairs,
        // exactly as in torchtitan.
        double low = floor(correction_dim(beta_fast, R, theta, original_seq_len));
        double high = ceil(correction_dim(beta_slow, R, theta, original_seq_len));
        low = fmax(low, 0.0);
        high = fmin(high, (double)(R - 1));
        if (low == high) high += RAMP_MIN_WIDTH;
        double ramp = ((double)i - low) / (high - low);
        ramp = fmin(fmax(ramp, 0.0), 1.0);
        double smooth = 1.0 - ramp;
        freq = freq / factor * (1.0 - smooth) + freq * smooth;
    }
    return freq;
}

Dsv3Err dsv3_cpu_reference_rope_tables(const Dsv3KernelContext *ctx, float *cos_table,
                                       float *sin_table, int64_t T, int64_t R, double theta,
                                       double factor, double beta_fast, double beta_slow,
                                       int64_t original_seq_len) {
    (void)ctx;
    DSV3_CALL(dsv3_check_rope_tables(cos_table, sin_table, T, R, theta, factor, beta_fast,
                                     beta_slow, original_seq_len));
    const int64_t pairs = R / 2;
    for (int64_t i = 0; i < pairs; i++) {
        const double freq =
            frequency(i, T, R, theta, factor, beta_fast, beta_slow, original_seq_len);
        for (int64_t t = 0; t < T; t++) {
            double angle = (double)t * freq;
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
    for (int64_t b = 0; b < B; b++) {
        for (int64_t t = 0; t < T; t++) {
            for (int64_t h = 0; h < H; h++) {
                float *v = x + (b * T + t) * row_stride + h * head_stride; // (R)
                for (int64_t i = 0; i < pairs; i++) {
                    float c = cos_table[t * pairs + i];
                    float s = direction * sin_table[t * pairs + i];
                    float re = v[2 * i], im = v[2 * i + 1];
                    v[2 * i] = re * c - im * s;
                    v[2 * i + 1] = re * s + im * c;
                }
            }
        }
    }
}

Dsv3Err dsv3_cpu_reference_rope_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                        void *x_, const float *cos_table, const float *sin_table,
                                        int64_t B, int64_t T, int64_t H, int64_t R,
                                        int64_t row_stride, int64_t head_stride) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("rope_forward", dtype));
    float *x = x_; // rotated slices of (B, T, row_stride)
    DSV3_CALL(dsv3_check_rope_apply(x, cos_table, sin_table, B, T, H, R, row_stride, head_stride));
    rotate_all(x, cos_table, sin_table, B, T, H, R, row_stride, head_stride, 1.0f);
    return DSV3_OK;
}

Dsv3Err dsv3_cpu_reference_rope_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                         void *dx_, const float *cos_table, const float *sin_table,
                                         int64_t B, int64_t T, int64_t H, int64_t R,
                                         int64_t row_stride, int64_t head_stride) {
    (void)ctx;
    DSV3_CALL(dsv3_cpu_check_f32("rope_backward", dtype));
    float *dx = dx_; // rotated slices of (B, T, row_stride)
    DSV3_CALL(dsv3_check_rope_apply(dx, cos_table, sin_table, B, T, H, R, row_stride, head_stride));
    rotate_all(dx, cos_table, sin_table, B, T, H, R, row_stride, head_stride, -1.0f);
    return DSV3_OK;
}
