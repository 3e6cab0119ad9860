// mla.cu: multi-head latent attention's key/value assembly on the GPU (CUDA versions of
// kernels.h's mla_kv_forward and mla_kv_backward), for fp32 or bf16 tensors.
//
// wkv_b's output holds, per token and head, the non-rotary key channels then the value; the
// rotary key is one vector per token shared by the heads. Forward copies them into the
// per-head keys and values that attention reads (element copies, bit-exact); backward copies
// the gradients back and sums the rotary key's gradient over the heads, one thread per
// (token, rotary channel), in head order from zero and in double as the CPU reference sums it,
// so that the result does not change from run to run. All kernels are grid-stride loops over
// their outputs.
//
// Legend: N tokens, H heads, nope non-rotary key dims, R rotary dims, Dv value dims.
// kvb, dkvb (N, H, nope + Dv); k, dk (N, H, nope + R); v, dv (N, H, Dv); kpe, dkpe rows of R
// channels at a stride.
#include <stdint.h>

#include "kernels/checks.h"
#include "kernels/cuda/cuda_kernels.cuh"

enum { MLA_THREADS = CUDA_THREADS };

// ---- forward ----

// k (N, H, nope + R): channel c < nope of kvb's head, then the token's rotary key.
template <typename T>
static __global__ void mla_k_kernel(T *k, const T *kvb, const T *kpe, int64_t kpe_stride, int64_t N,
                                    int64_t H, int64_t nope, int64_t R, int64_t Dv) {
    const int64_t Dqk = nope + R, count = N * H * Dqk;
    for (int64_t idx = cuda_grid_first(); idx < count; idx += cuda_grid_stride()) {
        const int64_t head = idx / Dqk, c = idx - head * Dqk; // head = n·H + h
        k[idx] = c < nope ? kvb[head * (nope + Dv) + c] : kpe[(head / H) * kpe_stride + c - nope];
    }
}

// v (N, H, Dv): the channels of kvb's head after the non-rotary key.
template <typename T>
static __global__ void mla_v_kernel(T *v, const T *kvb, int64_t N, int64_t H, int64_t nope,
                                    int64_t Dv) {
    const int64_t count = N * H * Dv;
    for (int64_t idx = cuda_grid_first(); idx < count; idx += cuda_grid_stride()) {
        const int64_t head = idx / Dv, c = idx - head * Dv;
        v[idx] = kvb[head * (nope + Dv) + nope + c];
    }
}

template <typename T>
static Dsv3Err mla_kv_forward_launch(const Dsv3KernelContext *ctx, void *k, void *v,
                                     const void *kvb, const void *kpe, int64_t kpe_stride,
                                     int64_t N, int64_t H, int64_t nope, int64_t R, int64_t Dv) {
    cudaStream_t stream = cuda_stream(ctx);
    const int64_t k_count = N * H * (nope + R), v_count = N * H * Dv;
    if (k_count > 0) {
        mla_k_kernel<T><<<cuda_blocks(k_count, MLA_THREADS), MLA_THREADS, 0, stream>>>(
            (T *)k, (const T *)kvb, (const T *)kpe, kpe_stride, N, H, nope, R, Dv);
        CUDA_LAUNCHED();
    }
    if (v_count > 0) {
        mla_v_kernel<T><<<cuda_blocks(v_count, MLA_THREADS), MLA_THREADS, 0, stream>>>(
            (T *)v, (const T *)kvb, N, H, nope, Dv);
        CUDA_LAUNCHED();
    }
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_mla_kv_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                            void *k, void *v, const void *kvb, const void *kpe,
                                            int64_t kpe_stride, int64_t N, int64_t H, int64_t nope,
                                            int64_t R, int64_t Dv) {
    DSV3_CALL(dsv3_cuda_check_dtype(dtype, "mla_kv_forward"));
    DSV3_CALL(dsv3_check_mla_kv("mla_kv_forward", k, v, kvb, kpe, kpe_stride, N, H, nope, R, Dv));
    if (N == 0) return DSV3_OK;
    return dtype == DSV3_TENSOR_BF16
               ? mla_kv_forward_launch<__nv_bfloat16>(ctx, k, v, kvb, kpe, kpe_stride, N, H, nope,
                                                      R, Dv)
               : mla_kv_forward_launch<float>(ctx, k, v, kvb, kpe, kpe_stride, N, H, nope, R, Dv);
}

// ---- backward ----

// dkvb (N, H, nope + Dv): dk's non-rotary channels of the head, then dv's.
template <typename T>
static __global__ void mla_dkvb_kernel(T *dkvb, const T *dk, const T *dv, int64_t N, int64_t H,
                                       int64_t nope, int64_t R, int64_t Dv) {
    const int64_t width = nope + Dv, count = N * H * width;
    for (int64_t idx = cuda_grid_first(); idx < count; idx += cuda_grid_stride()) {
        const int64_t head = idx / width, c = idx - head * width; // head = n·H + h
        dkvb[idx] = c < nope ? dk[head * (nope + R) + c] : dv[head * Dv + c - nope];
    }
}

// dkpe[n·dkpe_stride + r] = Σ_h dk[n, h, nope + r], in head order and in double, one thread
// per (n, r).
template <typename T>
static __global__ void mla_dkpe_kernel(T *dkpe, int64_t dkpe_stride, const T *dk, int64_t N,
                                       int64_t H, int64_t nope, int64_t R) {
    const int64_t Dqk = nope + R, count = N * R;
    for (int64_t idx = cuda_grid_first(); idx < count; idx += cuda_grid_stride()) {
        const int64_t n = idx / R, r = idx - n * R;
        const T *src = dk + n * H * Dqk + nope + r; // head 0's channel; heads Dqk apart
        double sum = 0.0;
        for (int64_t h = 0; h < H; h++)
            sum += cuda_load(src, h * Dqk);
        cuda_store(dkpe, n * dkpe_stride + r, (float)sum);
    }
}

template <typename T>
static Dsv3Err mla_kv_backward_launch(const Dsv3KernelContext *ctx, void *dkvb, void *dkpe,
                                      int64_t dkpe_stride, const void *dk, const void *dv,
                                      int64_t N, int64_t H, int64_t nope, int64_t R, int64_t Dv) {
    cudaStream_t stream = cuda_stream(ctx);
    const int64_t dkvb_count = N * H * (nope + Dv), dkpe_count = N * R;
    if (dkvb_count > 0) {
        mla_dkvb_kernel<T><<<cuda_blocks(dkvb_count, MLA_THREADS), MLA_THREADS, 0, stream>>>(
            (T *)dkvb, (const T *)dk, (const T *)dv, N, H, nope, R, Dv);
        CUDA_LAUNCHED();
    }
    if (dkpe_count > 0) {
        mla_dkpe_kernel<T><<<cuda_blocks(dkpe_count, MLA_THREADS), MLA_THREADS, 0, stream>>>(
            (T *)dkpe, dkpe_stride, (const T *)dk, N, H, nope, R);
        CUDA_LAUNCHED();
    }
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_mla_kv_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                             void *dkvb, void *dkpe, int64_t dkpe_stride,
                                             const void *dk, const void *dv, int64_t N, int64_t H,
                                             int64_t nope, int64_t R, int64_t Dv) {
    DSV3_CALL(dsv3_cuda_check_dtype(dtype, "mla_kv_backward"));
    DSV3_CALL(
        dsv3_check_mla_kv("mla_kv_backward", dk, dv, dkvb, dkpe, dkpe_stride, N, H, nope, R, Dv));
    if (N == 0) return DSV3_OK;
    return dtype == DSV3_TENSOR_BF16 ? mla_kv_backward_launch<__nv_bfloat16>(
                                           ctx, dkvb, dkpe, dkpe_stride, dk, dv, N, H, nope, R, Dv)
                                     : mla_kv_backward_launch<float>(ctx, dkvb, dkpe, dkpe_stride,
                                                                     dk, dv, N, H, nope, R, Dv);
}
