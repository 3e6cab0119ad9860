// gemm: every matrix product of the CUDA backend's ops, row-major and cblas_sgemm-like, through
// cuBLASLt on the context's stream (dsv3_cuda_gemm, cuda_kernels.cuh).
//
// cuBLASLt is column-major. A row-major C (M, N) is the column-major Cᵀ (N, M), and
// Cᵀ = op(B)ᵀ · op(A)ᵀ, so the call passes B as cuBLASLt's first operand and A as its second,
// each with its own transpose flag: a row-major X (r, c) with leading dimension ld is the
// column-major (c, r) with the same ld.
//
// Precision: CUBLAS_COMPUTE_32F sums in fp32 and keeps fp32 operands fp32 (no TF32);
// CUBLAS_COMPUTE_32F_FAST_16BF rounds fp32 operands to bf16 first (ctx->matmul_dtype bf16).
// The heuristic is told the operands' real alignment, since sub-matrices (a head's columns,
// an expert's rows) need not start on the 256 bytes it otherwise assumes.
//
// Not here: batching (callers loop), descriptor caching (a later optimisation: creating the
// descriptors costs microseconds against GEMMs of milliseconds).
#include <stdint.h>

#include "kernels/cuda/cuda_kernels.cuh"

// The alignment of a pointer in bytes, up to cuBLASLt's largest (256).
static uint32_t gemm_alignment(const void *p) {
    enum { GEMM_MAX_ALIGNMENT = 256 };
    uint32_t alignment = GEMM_MAX_ALIGNMENT;
    while (alignment > 1 && (uintptr_t)p % alignment != 0)
        alignment /= 2;
    return alignment;
}

static cudaDataType_t gemm_type(Dsv3TensorDtype dtype) {
    return dtype == DSV3_TENSOR_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

// C (M, N) ·= beta for the K = 0 products (no term to add).
template <typename T>
__global__ void gemm_scale_kernel(T *C, int64_t ldc, int64_t M, int64_t N, float beta) {
    const int64_t total = M * N;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / N, c = i % N;
        cuda_store(C, r * ldc + c, beta == 0.0f ? 0.0f : beta * cuda_load(C, r * ldc + c));
    }
}

static Dsv3Err gemm_scale(const Dsv3KernelContext *ctx, void *C, int64_t ldc, int64_t M, int64_t N,
                          float beta, Dsv3TensorDtype c_dtype) {
    if (beta == 1.0f) return DSV3_OK;
    const unsigned blocks = cuda_blocks(M * N, CUDA_THREADS);
    if (c_dtype == DSV3_TENSOR_BF16)
        gemm_scale_kernel<<<blocks, CUDA_THREADS, 0, cuda_stream(ctx)>>>((__nv_bfloat16 *)C, ldc, M,
                                                                         N, beta);
    else
        gemm_scale_kernel<<<blocks, CUDA_THREADS, 0, cuda_stream(ctx)>>>((float *)C, ldc, M, N,
                                                                         beta);
    CUDA_LAUNCHED();
    return DSV3_OK;
}

// The descriptors of one call, destroyed together whatever happened.
typedef struct {
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t first, second, c; // B, A, C in cuBLASLt's column-major terms
    cublasLtMatmulPreference_t preference;
} GemmDescriptors;

static void gemm_descriptors_destroy(GemmDescriptors *d) {
    if (d->preference) (void)cublasLtMatmulPreferenceDestroy(d->preference);
    if (d->c) (void)cublasLtMatrixLayoutDestroy(d->c);
    if (d->second) (void)cublasLtMatrixLayoutDestroy(d->second);
    if (d->first) (void)cublasLtMatrixLayoutDestroy(d->first);
    if (d->desc) (void)cublasLtMatmulDescDestroy(d->desc);
}

static Dsv3Err gemm_run(const Dsv3KernelContext *ctx, GemmDescriptors *d, CudaGemmTranspose trans_a,
                        CudaGemmTranspose trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                        const void *A, int64_t lda, const void *B, int64_t ldb,
                        Dsv3TensorDtype ab_dtype, float beta, void *C, int64_t ldc,
                        Dsv3TensorDtype c_dtype) {
    const CudaState *state = cuda_state(ctx);
    const cublasComputeType_t compute =
        ab_dtype == DSV3_TENSOR_F32 && ctx->matmul_dtype == DSV3_TENSOR_BF16
            ? CUBLAS_COMPUTE_32F_FAST_16BF
            : CUBLAS_COMPUTE_32F;
    CUBLAS_CALL(cublasLtMatmulDescCreate(&d->desc, compute, CUDA_R_32F));
    const cublasOperation_t op_first = trans_b == CUDA_GEMM_TRANS ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_second = trans_a == CUDA_GEMM_TRANS ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CALL(cublasLtMatmulDescSetAttribute(d->desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_first,
                                               sizeof op_first));
    CUBLAS_CALL(cublasLtMatmulDescSetAttribute(d->desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_second,
                                               sizeof op_second));
    // Stored shapes, column-major: B is (N, K), or (K, N) when transposed; A is (K, M), or
    // (M, K) when transposed; C is (N, M).
    const cudaDataType_t ab = gemm_type(ab_dtype);
    CUBLAS_CALL(cublasLtMatrixLayoutCreate(&d->first, ab, trans_b ? K : N, trans_b ? N : K, ldb));
    CUBLAS_CALL(cublasLtMatrixLayoutCreate(&d->second, ab, trans_a ? M : K, trans_a ? K : M, lda));
    CUBLAS_CALL(cublasLtMatrixLayoutCreate(&d->c, gemm_type(c_dtype), N, M, ldc));

    CUBLAS_CALL(cublasLtMatmulPreferenceCreate(&d->preference));
    const size_t workspace = state->lt_workspace_bytes;
    CUBLAS_CALL(cublasLtMatmulPreferenceSetAttribute(
        d->preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof workspace));
    const uint32_t align_first = gemm_alignment(B), align_second = gemm_alignment(A),
                   align_c = gemm_alignment(C);
    CUBLAS_CALL(cublasLtMatmulPreferenceSetAttribute(d->preference,
                                                     CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                     &align_first, sizeof align_first));
    CUBLAS_CALL(cublasLtMatmulPreferenceSetAttribute(d->preference,
                                                     CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                     &align_second, sizeof align_second));
    CUBLAS_CALL(cublasLtMatmulPreferenceSetAttribute(
        d->preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c, sizeof align_c));
    CUBLAS_CALL(cublasLtMatmulPreferenceSetAttribute(
        d->preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c, sizeof align_c));

    cublasLtMatmulHeuristicResult_t heuristic;
    int found = 0;
    CUBLAS_CALL(cublasLtMatmulAlgoGetHeuristic(state->lt, d->desc, d->first, d->second, d->c, d->c,
                                               d->preference, 1, &heuristic, &found));
    DSV3_CHECK(found > 0, DSV3_ERR_BACKEND,
               "gemm: cuBLASLt has no algorithm for M %lld, N %lld, K %lld (trans %d/%d, lda %lld, "
               "ldb %lld, ldc %lld, %s operands, %s C)",
               (long long)M, (long long)N, (long long)K, (int)trans_a, (int)trans_b, (long long)lda,
               (long long)ldb, (long long)ldc, ab_dtype == DSV3_TENSOR_BF16 ? "bf16" : "fp32",
               c_dtype == DSV3_TENSOR_BF16 ? "bf16" : "fp32");
    CUBLAS_CALL(cublasLtMatmul(state->lt, d->desc, &alpha, B, d->first, A, d->second, &beta, C,
                               d->c, C, d->c, &heuristic.algo, state->lt_workspace, workspace,
                               cuda_stream(ctx)));
    return DSV3_OK;
}

Dsv3Err dsv3_cuda_gemm(const Dsv3KernelContext *ctx, CudaGemmTranspose trans_a,
                       CudaGemmTranspose trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                       const void *A, int64_t lda, const void *B, int64_t ldb,
                       Dsv3TensorDtype ab_dtype, float beta, void *C, int64_t ldc,
                       Dsv3TensorDtype c_dtype) {
    DSV3_CHECK(M >= 0 && N >= 0 && K >= 0, DSV3_ERR_USAGE,
               "gemm: M %lld, N %lld, K %lld must be >= 0", (long long)M, (long long)N,
               (long long)K);
    if (M == 0 || N == 0) return DSV3_OK;
    DSV3_CHECK(ldc >= N, DSV3_ERR_USAGE, "gemm: ldc %lld < N %lld", (long long)ldc, (long long)N);
    if (K == 0) return gemm_scale(ctx, C, ldc, M, N, beta, c_dtype);
    DSV3_CHECK(lda >= (trans_a ? M : K) && ldb >= (trans_b ? K : N), DSV3_ERR_USAGE,
               "gemm: lda %lld or ldb %lld shorter than a row (M %lld, N %lld, K %lld, trans "
               "%d/%d)",
               (long long)lda, (long long)ldb, (long long)M, (long long)N, (long long)K,
               (int)trans_a, (int)trans_b);
    GemmDescriptors d = {};
    const Dsv3Err err = gemm_run(ctx, &d, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb,
                                 ab_dtype, beta, C, ldc, c_dtype);
    gemm_descriptors_destroy(&d);
    DSV3_CALL(err);
    return DSV3_OK;
}
