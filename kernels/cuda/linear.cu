// linear.cu: y = x · Wᵀ without bias (torch.nn.Linear's layout) on CUDA, and its gradients.
//
// Each direction is one or two GEMMs through dsv3_cuda_gemm (cuBLASLt, fp32 accumulation); this
// file only checks the arguments and picks the transposes, leading dimensions and dtypes:
//   forward:  out (N, Out)  = x (N, In) · W (Out, In)ᵀ                 C in the op's dtype
//   dx:       dx (N, In)    = dout (N, Out) · W (Out, In)  (+ dx)      C in the op's dtype
//   dweight:  dW (Out, In) += dout (N, Out)ᵀ · x (N, In)                C fp32, beta 1
// No kernel of its own and no workspace.
//
// Legend: N rows (tokens), In input features, Out output features.
#include <stdint.h>

#include "kernels/checks.h"
#include "kernels/cuda/cuda_kernels.cuh"

extern "C" Dsv3Err dsv3_cuda_linear_forward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                            void *out, const void *x, const void *weight, int64_t N,
                                            int64_t In, int64_t Out) {
    // out (N, Out), x (N, In), weight (Out, In), all of dtype
    DSV3_CALL(dsv3_cuda_check_dtype(dtype, "linear_forward"));
    DSV3_CALL(dsv3_check_linear_forward(out, x, weight, N, In, Out));
    if (N == 0) return DSV3_OK;
    DSV3_CALL(dsv3_cuda_gemm(ctx, CUDA_GEMM_NO_TRANS, CUDA_GEMM_TRANS, N, Out, In, 1.0f, x, In,
                             weight, In, dtype, 0.0f, out, Out, dtype));
    return DSV3_OK;
}

extern "C" Dsv3Err dsv3_cuda_linear_backward(const Dsv3KernelContext *ctx, Dsv3TensorDtype dtype,
                                             void *dx, float *dweight, const void *dout,
                                             const void *x, const void *weight, int64_t N,
                                             int64_t In, int64_t Out, int accumulate_dx) {
    // dx (N, In) and dout (N, Out), x (N, In), weight (Out, In) of dtype; dweight (Out, In) fp32
    DSV3_CALL(dsv3_cuda_check_dtype(dtype, "linear_backward"));
    DSV3_CALL(dsv3_check_linear_backward(dx, dweight, dout, x, weight, N, In, Out));
    if (N == 0) return DSV3_OK;
    if (dx != NULL) // beta 1 adds onto dx (accumulate_dx); beta 0 never reads it
        DSV3_CALL(dsv3_cuda_gemm(ctx, CUDA_GEMM_NO_TRANS, CUDA_GEMM_NO_TRANS, N, In, Out, 1.0f,
                                 dout, Out, weight, In, dtype, accumulate_dx ? 1.0f : 0.0f, dx, In,
                                 dtype));
    if (dweight != NULL) // weight gradients are fp32 whatever the activations are
        DSV3_CALL(dsv3_cuda_gemm(ctx, CUDA_GEMM_TRANS, CUDA_GEMM_NO_TRANS, Out, In, N, 1.0f, dout,
                                 Out, x, In, dtype, 1.0f, dweight, In, DSV3_TENSOR_F32));
    return DSV3_OK;
}
