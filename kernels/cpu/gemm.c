// gemm: the one GEMM of the fast CPU ops — OpenBLAS's sgemm, or gemm_bf16.c's when the context
// computes GEMMs in bf16 (ctx->matmul_dtype), each timed by shape while profiling is on
// (kernels.h) — and whether this CPU and this build can do bf16, and GEMMs against panels.
#include <cblas.h>
#include <limits.h>
#include <omp.h>
#include <stdlib.h>

#include "kernels/backend.h"
#include "kernels/cpu/cpu.h"

int dsv3_cpu_gemm_bf16_supported(const char **why) {
#ifdef DSV3_HAVE_GEMM_BF16
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512bf16")) return 1;
    *why = "this CPU has no AVX512-BF16 (the VDPBF16PS instruction; e.g. Intel Cooper Lake or "
           "Sapphire Rapids and later, AMD Zen 4 and later)";
#else
    *why = "this build's compiler cannot target AVX512-BF16 (gemm_bf16.c was not compiled)";
#endif
    return 0;
}

int dsv3_cpu_gemm_panels_supported(void) {
#ifdef DSV3_HAVE_GEMM_PANELS
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

static CBLAS_TRANSPOSE cblas_transpose(Dsv3GemmTranspose t) {
    return t == DSV3_GEMM_TRANS ? CblasTrans : CblasNoTrans;
}

static void gemm(const Dsv3KernelContext *ctx, Dsv3GemmTranspose trans_a, Dsv3GemmTranspose trans_b,
                 int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                 const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
#ifdef DSV3_HAVE_GEMM_BF16
    if (ctx->matmul_dtype == DSV3_TENSOR_BF16) {
        dsv3_cpu_gemm_bf16(trans_a == DSV3_GEMM_TRANS, trans_b == DSV3_GEMM_TRANS, M, N, K, alpha,
                           A, lda, B, ldb, beta, C, ldc);
        return;
    }
#endif
    cblas_sgemm(CblasRowMajor, cblas_transpose(trans_a), cblas_transpose(trans_b), (int)M, (int)N,
                (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

void dsv3_cpu_gemm(const Dsv3KernelContext *ctx, Dsv3GemmTranspose trans_a,
                   Dsv3GemmTranspose trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                   const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                   int64_t ldc) {
    if (!dsv3_profiling) {
        gemm(ctx, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    const double start = dsv3_profile_now();
    gemm(ctx, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    dsv3_profile_gemm(trans_a == DSV3_GEMM_TRANS, trans_b == DSV3_GEMM_TRANS, M, N, K,
                      dsv3_profile_now() - start, omp_in_parallel());
}

void dsv3_cpu_gemm_panels(int64_t M, int64_t n0, int64_t n1, int64_t k0, int64_t k1, float alpha,
                          const float *a, int64_t lda, const float *panels, int64_t K, float *c,
                          int64_t ldc, int accumulate) {
#ifdef DSV3_HAVE_GEMM_PANELS
    if (!dsv3_profiling) {
        dsv3_cpu_gemm_panels_run(M, n0, n1, k0, k1, alpha, a, lda, panels, K, c, ldc, accumulate);
        return;
    }
    const double start = dsv3_profile_now();
    dsv3_cpu_gemm_panels_run(M, n0, n1, k0, k1, alpha, a, lda, panels, K, c, ldc, accumulate);
    dsv3_profile_gemm(0, 1, M, n1 - n0, k1 - k0, dsv3_profile_now() - start, omp_in_parallel());
#else
    (void)M, (void)n0, (void)n1, (void)k0, (void)k1, (void)alpha, (void)a, (void)lda, (void)panels,
        (void)K, (void)c, (void)ldc, (void)accumulate;
    abort(); // callers ask dsv3_cpu_gemm_panels_supported first
#endif
}

int dsv3_cpu_blas_threads_enter(void) {
    const int saved = openblas_get_num_threads();
    if (omp_get_max_threads() > 1 && saved > 1) openblas_set_num_threads(1);
    return saved;
}

void dsv3_cpu_blas_threads_leave(int saved) {
    if (openblas_get_num_threads() != saved) openblas_set_num_threads(saved);
}
