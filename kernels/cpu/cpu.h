// cpu: what the two CPU backends share inside kernels/cpu/ — the op functions of both tables,
// the workspace layouts of the ops that need scratch, and the checks every op makes of its
// context (dtype, workspace).
//
// Every op of kernels.h has a fast version, dsv3_cpu_<op> (<op>.c: OpenBLAS, OpenMP), and a
// reference version, dsv3_cpu_reference_<op> (<op>_reference.c: plain loops), with the
// signature of kernels.h; the backend tables (backend_cpu.c, backend_cpu_reference.c) list
// them. The memory ops have one implementation that both tables use (memory.c). In their
// definitions a `void *` tensor parameter is named x_ and read as the fp32 array x once the
// dtype is checked.
//
// Workspace. An op that needs scratch takes it from ctx->workspace as consecutive slices, each
// aligned to DSV3_CPU_WORKSPACE_ALIGNMENT. The op and the workspace query compute the slices
// with the same layout function (<op>_workspace below, taking the OpenMP thread count that the
// op will see), so what dsv3_workspace_bytes promises is what the op asks for. Sizes that do
// not fit a size_t saturate at SIZE_MAX, which the query reports as an error.
//
// Not here: the argument checks of each op (checks.h), the math.
#ifndef DSV3_KERNELS_CPU_CPU_H
#define DSV3_KERNELS_CPU_CPU_H

#include <stddef.h>
#include <stdint.h>

#include "common/core/error.h"
#include "kernels/kernels.h"

// ---- the op functions of both tables ----

#define DSV3_CPU_OP_DECLARE(ID, name, params, args)                                                \
    Dsv3Err dsv3_cpu_##name params;                                                                \
    Dsv3Err dsv3_cpu_reference_##name params;
DSV3_KERNEL_OPS(DSV3_CPU_OP_DECLARE)
#undef DSV3_CPU_OP_DECLARE

// ---- GEMM (gemm.c, gemm_bf16.c) ----

// C (M, N) = alpha · op(A) (M, K) · op(B) (K, N) + beta · C on row-major fp32 matrices, as
// cblas_sgemm (beta 0: C is not read). Every GEMM of the fast ops goes through here: OpenBLAS's
// sgemm, or with ctx->matmul_dtype DSV3_TENSOR_BF16 the operands rounded to bf16 and the
// products summed in fp32 (gemm_bf16.c, which runs on the calling thread inside an OpenMP
// parallel region and splits the work between the threads outside one). Sizes fit an int (the
// callers check them for BLAS).
typedef enum { DSV3_GEMM_NO_TRANS, DSV3_GEMM_TRANS } Dsv3GemmTranspose;

void dsv3_cpu_gemm(const Dsv3KernelContext *ctx, Dsv3GemmTranspose trans_a,
                   Dsv3GemmTranspose trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                   const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                   int64_t ldc);

// OpenBLAS's pthreads build serialises concurrent multi-threaded GEMMs: an OpenMP region whose
// threads each run their own GEMMs sets BLAS to one thread for its length. enter returns what
// leave restores.
int dsv3_cpu_blas_threads_enter(void);
void dsv3_cpu_blas_threads_leave(int saved);

// ---- GEMMs against a B packed once (gemm_panels.c, AVX-512) ----
//
// For a B (N, K) that many GEMMs use with different A (attention's keys and values): packed
// once into panels of DSV3_CPU_PANEL_WIDTH rows of B (ceil(N / width) · width · K floats), from
// B's rows (pack_panels: row j at b + j·ldb) or from Bᵀ's (pack_panels_columns: row k at
// bt + k·ld). Then C[:, n0:n1) = alpha · A · B[n0:n1, k0:k1)ᵀ, or with `accumulate` that added
// to C, where A (M, k1 − k0) has row i at a + i·lda, C column n0 at c, and K is what the panels
// were packed with. Each element of C gets the same bits from every call that computes it. Only
// where dsv3_cpu_gemm_panels_supported() (AVX-512 in the CPU and in this build).
enum { DSV3_CPU_PANEL_WIDTH = 32 };

int dsv3_cpu_gemm_panels_supported(void);
void dsv3_cpu_pack_panels(float *panels, const float *b, int64_t ldb, int64_t N, int64_t K);
void dsv3_cpu_pack_panels_columns(float *panels, const float *bt, int64_t ld, int64_t N, int64_t K);
// Timed by shape while profiling is on, as dsv3_cpu_gemm (gemm.c); _run is the GEMM itself.
void dsv3_cpu_gemm_panels(int64_t M, int64_t n0, int64_t n1, int64_t k0, int64_t k1, float alpha,
                          const float *a, int64_t lda, const float *panels, int64_t K, float *c,
                          int64_t ldc, int accumulate);
void dsv3_cpu_gemm_panels_run(int64_t M, int64_t n0, int64_t n1, int64_t k0, int64_t k1,
                              float alpha, const float *a, int64_t lda, const float *panels,
                              int64_t K, float *c, int64_t ldc, int accumulate);

// The bf16 GEMM itself, for CPUs with AVX512-BF16 (dsv3_cpu_gemm_bf16_supported, backend.h).
void dsv3_cpu_gemm_bf16(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                        const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                        float *C, int64_t ldc);

// ---- SwiGLU on rows (swiglu.c), for the ops that gate inside (routed experts) ----

// h (count) = silu(a) · b; and its gradient: da = dh · b · silu'(a), db = dh · silu(a) (outputs
// may alias inputs).
void dsv3_cpu_swiglu_rows(float *h, const float *a, const float *b, int64_t count);
void dsv3_cpu_swiglu_rows_backward(float *da, float *db, const float *dh, const float *a,
                                   const float *b, int64_t count);

// ---- workspace layouts ----

// Alignment of every workspace slice: a cache line, as the allocations the slices replace.
enum { DSV3_CPU_WORKSPACE_ALIGNMENT = 64 };

// Bytes of a workspace being laid out; slices are appended at aligned offsets.
typedef struct {
    size_t bytes;
} Dsv3CpuLayout;

// Appends a slice of `count` elements of `size` bytes (count < 0 counts as 0) and returns its
// offset; the total saturates at SIZE_MAX instead of overflowing.
size_t dsv3_cpu_layout_add(Dsv3CpuLayout *layout, int64_t count, size_t size);

// The slice at `offset` of ctx's workspace.
static inline void *dsv3_cpu_workspace_at(const Dsv3KernelContext *ctx, size_t offset) {
    return (char *)ctx->workspace + offset;
}

// Workspace bytes of each op that needs scratch, for `shape` with `threads` OpenMP threads.
// Fast versions (<op>.c):
size_t dsv3_cpu_attention_forward_workspace(const Dsv3OpShape *shape, int threads);
size_t dsv3_cpu_attention_backward_workspace(const Dsv3OpShape *shape, int threads);
size_t dsv3_cpu_cross_entropy_workspace(const Dsv3OpShape *shape, int threads);
size_t dsv3_cpu_cross_entropy_logits_workspace(const Dsv3OpShape *shape, int threads);
size_t dsv3_cpu_experts_forward_workspace(const Dsv3OpShape *shape, int threads);
size_t dsv3_cpu_experts_backward_workspace(const Dsv3OpShape *shape, int threads);
size_t dsv3_cpu_moe_plan_workspace(const Dsv3OpShape *shape, int threads);
// The row of every assignment (the inverse of the plan's order): gather backward and combine.
size_t dsv3_cpu_moe_rows_of_workspace(const Dsv3OpShape *shape, int threads);
size_t dsv3_cpu_rmsnorm_backward_workspace(const Dsv3OpShape *shape, int threads);
size_t dsv3_cpu_router_forward_workspace(const Dsv3OpShape *shape, int threads);
// Reference versions (<op>_reference.c), single-threaded:
size_t dsv3_cpu_reference_attention_forward_workspace(const Dsv3OpShape *shape);
size_t dsv3_cpu_reference_attention_backward_workspace(const Dsv3OpShape *shape);
size_t dsv3_cpu_reference_cross_entropy_workspace(const Dsv3OpShape *shape);
size_t dsv3_cpu_reference_experts_forward_workspace(const Dsv3OpShape *shape);
size_t dsv3_cpu_reference_experts_backward_workspace(const Dsv3OpShape *shape);
size_t dsv3_cpu_reference_moe_combine_workspace(const Dsv3OpShape *shape); // both directions
size_t dsv3_cpu_reference_router_forward_workspace(const Dsv3OpShape *shape);
size_t dsv3_cpu_reference_router_backward_workspace(const Dsv3OpShape *shape);

// ---- checks of the context (checks_context.c) ----

// DSV3_ERR_USAGE naming `op` and the dtype unless dtype is DSV3_TENSOR_F32: the CPU backends
// compute in fp32 only.
Dsv3Err dsv3_cpu_check_f32(const char *op, Dsv3TensorDtype dtype);

// DSV3_ERR_USAGE naming `op`, the bytes `needed` and the bytes ctx has, unless ctx's workspace
// holds at least `needed` bytes. Called before any work.
Dsv3Err dsv3_cpu_check_workspace(const Dsv3KernelContext *ctx, const char *op, size_t needed);

// The arguments of a workspace query (both backends): op is a DSV3_OP_*, shape and bytes given.
Dsv3Err dsv3_cpu_check_workspace_query(int op, const Dsv3OpShape *shape, const size_t *bytes);

#endif
