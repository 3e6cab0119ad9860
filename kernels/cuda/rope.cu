// rope.cu: rotary position embedding on interleaved pairs, with YaRN, on the GPU (CUDA versions
// of kernels.h's rope_tables, rope_forward and rope_backward).
//
// rope_tables computes the tables on the device in double, with the CPU reference's formulas
// step by step (torchtitan's precompute_freqs_cis), and rounds once to fp32: YaRN's correction
// range depends on the arguments only and is computed on the host by the same expressions as
// the reference; each thread then computes the frequency of its pair and the cos and sin of its
// angle. The blend of the two frequencies uses explicitly rounded products (__dmul_rn,
// __dadd_rn) so that the compiler does not fuse it into an FMA the CPU does not use.
//
// rope_forward / rope_backward rotate in place, one thread per pair (grid-stride): the pair
// (x[2i], x[2i+1]) of head h of token n = b·T + t is read as x[2i] + i·x[2i+1] and multiplied
// by e^{±i·angle(t, i)} (backward: the transpose of a rotation is the rotation by the opposite
// angle), in fp32, stored in the tensor's dtype. Vectors never overlap (checked), so the pairs
// are independent.
//
// Legend: B sequences, T positions, N = B × T tokens, H heads, R rotary dims (even), R/2
// rotated pairs. Tables cos, sin (T, R/2), fp32.
#include <math.h>
#include <stdint.h>

#include "kernels/checks.h"
#include "kernels/cuda/cuda_kernels.cuh"

enum { ROPE_THREADS = CUDA_THREADS };

// Where YaRN's ramp has both ends equal, torchtitan widens it by this much to avoid 0 / 0.
static constexpr double RAMP_MIN_WIDTH = 0.001;
static constexpr double PI = 3.14159265358979323846;

// Rotation directions: forward by +angle, backward by −angle.
static constexpr float ROPE_FORWARD = 1.0f, ROPE_BACKWARD = -1.0f;

// ---- tables ----

// YaRN's correction range over the pairs: on when T > original_seq_len; the ramp runs from
// low (weight 0: the frequency kept) to high (weight 1: the frequency divided by the factor).
typedef struct {
    int on;
    double low, high;
} RopeYarn;

// The rotary dim whose wavelength fits `rotations` turns into original_seq_len positions
// (torchtitan's find_correction_dim), as the CPU reference computes it.
static double rope_correction_dim(double rotations, int64_t R, double theta,
                                  int64_t original_seq_len) {
    return (double)R * log((double)original_seq_len / (rotations * 2.0 * PI)) / (2.0 * log(theta));
}

// The correction range, computed over R dims while the ramp runs over R/2 pairs, exactly as in
// torchtitan and the CPU reference.
static RopeYarn rope_yarn(int64_t T, int64_t R, double theta, double beta_fast, double beta_slow,
                          int64_t original_seq_len) {
    RopeYarn yarn = {T > original_seq_len, 0.0, 0.0};
    if (!yarn.on) return yarn;
    yarn.low = floor(rope_correction_dim(beta_fast, R, theta, original_seq_len));
    yarn.high = ceil(rope_correction_dim(beta_slow, R, theta, original_seq_len));
    yarn.low = fmax(yarn.low, 0.0);
    yarn.high = fmin(yarn.high, (double)(R - 1));
    if (yarn.low == yarn.high) yarn.high += RAMP_MIN_WIDTH;
    return yarn;
}

// cos, sin (T, R/2): element t·(R/2) + i = cos, sin of t · freq_i, in double, rounded once.
static __global__ void rope_tables_kernel(float *cos_table, float *sin_table, int64_t T, int64_t R,
                                          double theta, double factor, RopeYarn yarn) {
    const int64_t pairs = R / 2, count = T * pairs;
    for (int64_t idx = cuda_grid_first(); idx < count; idx += cuda_grid_stride()) {
        const int64_t t = idx / pairs, i = idx - t * pairs;
        double freq = 1.0 / pow(theta, (double)(2 * i) / (double)R);
        if (yarn.on) {
            double ramp = ((double)i - yarn.low) / (yarn.high - yarn.low);
            ramp = fmin(fmax(ramp, 0.0), 1.0);
            const double smooth = 1.0 - ramp;
            // freq / factor · (1 − smooth) + freq · smooth, rounded as the CPU rounds it.
            freq = __dadd_rn(__dmul_rn(freq / factor, 1.0 - smooth), __dmul_rn(freq, smooth));
        }
        const double angle = (double)t * freq;
        cos_table[idx] = (float)cos(angle);
        sin_table[idx] = (float)sin(angle);
    }
}

extern "C" Dsv3Err dsv3_cuda_rope_tables(const Dsv3KernelContext *ctx, float *cos_table,
                                         float *sin_table, int64_t T, int64_t R, double theta,
                                         double factor, double beta_fast, double beta_slow,
                                         int64_t original_seq_len) {
    DSV3_CALL(dsv3_check_rope_tables(cos_table, sin_table, T, R, theta, factor, beta_fast,
                                     beta_slow, original_seq_len));
    const RopeYarn yarn = rope_yarn(T, R, theta, beta_fast, beta_slow, original_seq_len);
    const int64_t count = T * (R / 2);
    rope_tables_kernel<<<cuda_blocks(count, ROPE_THREADS), ROPE_THREADS, 0, cuda_stream(ctx)>>>(
        cos_table, sin_table, T, R, theta, factor, yarn);
    CUDA_LAUNCHED();
    return DSV3_OK;
}

// ---- rotation ----

// Rotates every pair of x by direction × angle(t, i): pair idx of N · H · (R/2) is pair
// i = idx mod R/2 of head h of token n, with t = n mod T.
template <typename T>
static __global__ void rope_rotate_kernel(T *x, const float *cos_table, const float *sin_table,
                                          int64_t N, int64_t positions, int64_t H, int64_t pairs,
                                          int64_t row_stride, int64_t head_stride,
                                          float direction) {
    const int64_t count = N * H * pairs;
    for (int64_t idx = cuda_grid_first(); idx < count; idx += cuda_grid_stride()) {
        const int64_t i = idx % pairs, head = idx / pairs;
        const int64_t h = head % H, n = head / H, t = n % positions;
        T *v = x + n * row_stride + h * head_stride + 2 * i; // the pair
        const float c = cos_table[t * pairs + i], s = direction * sin_table[t * pairs + i];
        const float re = cuda_load(v, 0), im = cuda_load(v, 1);
        cuda_store(v, 0, re * c - im * s);
        cuda_store(v, 1, re * s + im * c);
    }
}

template <typename T>
static Dsv3Err rope_rotate_launch(const Dsv3KernelContext *ctx, void *x, const float *cos_table,
                                  const float *sin_table, int64_t B, int64_t positions, int64_t H,
                                  int64_t R, int64_t row_stride, int64_t head_stride,
                                  float direction) {
    const int64_t N = B * positions, pairs = R / 2;
    rope_rotate_kernel<T>
        <<<cuda_blocks(N * H * pairs, ROPE_THREADS), ROPE_THREADS, 0, cuda_stream(ctx)>>>(
            (T *)x, cos_table, sin_table, N, positions, H, pairs, row_stride, head_stride,
            direction);
    CUDA_LAUNCHED();
    return DSV3_OK;
}

static Dsv3Err rope_rotate(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype, void *x,
                           const float *cos_table, const float *sin_table, int64_t B, int64_t T,
                           int64_t H, int64_t R, int64_t row_stride, int64_t head_stride,
                           float direction) {
    DSV3_CALL(dsv3_check_rope_apply(x, cos_table, sin_table, B, T, H, R, row_stride, head_stride));
    return dtype == DSV3_TENSOR_BF16
               ? rope_rotate_launch<__nv_bfloat16>(ctx, x, cos_table, sin_table, B, T, H, R,
                                                   row_stride, head_stride, direction)
               : rope_rotate_launch<float>(ctx, x, cos_table, sin_table, B, T, H, R, row_stride,
                                           head_stride, direction);
}

extern "C" Dsv3Err dsv3_cuda_rope_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                          void *x, const float *cos_table, const float *sin_table,
                                          int64_t B, int64_t T, int64_t H, int64_t R,
                                          int64_t row_stride, int64_t head_stride) {
    DSV3_CALL(dsv3_cuda_check_dtype(dtype, "rope_forward"));
    DSV3_CALL(rope_rotate(ctx, dtype, x, cos_table, sin_table, B, T, H, R, row_stride, head_stride,
                          ROPE_FORWARD));
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_rope_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                           void *dx, const float *cos_table, const float *sin_table,
                                           int64_t B, int64_t T, int64_t H, int64_t R,
                                           int64_t row_stride, int64_t head_stride) {
    DSV3_CALL(dsv3_cuda_check_dtype(dtype, "rope_backward"));
    DSV3_CALL(rope_rotate(ctx, dtype, dx, cos_table, sin_table, B, T, H, R, row_stride, head_stride,
                          ROPE_BACKWARD));
    return DSV3_OK;
}
