// backend: the table of a kernel backend, for the backends and kernels/dispatch.c only.
//
// A backend fills one Dsv3KernelOps with a function for every op of kernels.h, in the order of
// DSV3_KERNEL_OPS (positional initialisers generated from that list work in C and C++):
//
//     #define ENTRY(ID, name, params, args) dsv3_cpu_##name,
//     const Dsv3KernelOps dsv3_cpu_ops = {"cpu", DSV3_KERNEL_OPS(ENTRY)};
//
// Callers of the op library never include this header.
#ifndef DSV3_KERNELS_BACKEND_H
#define DSV3_KERNELS_BACKEND_H

#include "kernels/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

struct Dsv3KernelOps {
    const char *name;
#define DSV3_KERNEL_OP_FIELD(ID, name, params, args) Dsv3Err(*name) params;
    DSV3_KERNEL_OPS(DSV3_KERNEL_OP_FIELD)
#undef DSV3_KERNEL_OP_FIELD
};

// The fast CPU backend (kernels/cpu) and the reference backend (kernels/cpu/*_reference.c).
extern const Dsv3KernelOps dsv3_cpu_ops;
extern const Dsv3KernelOps dsv3_cpu_reference_ops;

// Whether the fast CPU backend can compute GEMMs in bf16 here; when not, *why says what is
// missing (the CPU's AVX512-BF16, or the compiler's). kernels/cpu/gemm.c.
int dsv3_cpu_gemm_bf16_supported(const char **why);

// Profiling (profile.c): whether it is on, the clock, the bracket of an op call (dispatch.c),
// and one GEMM of a backend, counted for the op in progress.
extern int dsv3_profiling;
double dsv3_profile_now(void);
void dsv3_profile_op(Dsv3Op op, double start, double end);
void dsv3_profile_enter(Dsv3Op op);
void dsv3_profile_gemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, double seconds,
                       int in_parallel);

#ifdef DSV3_HAVE_CUDA
// The CUDA backend (kernels/cuda), and what dsv3_kernel_context_create/destroy do for it:
// select the device, create the stream and the cuBLASLt handle; release them.
extern const Dsv3KernelOps dsv3_cuda_ops;
Dsv3Err dsv3_cuda_context_create(Dsv3KernelContext *ctx, int device);
void dsv3_cuda_context_destroy(Dsv3KernelContext *ctx);
#endif

#ifdef __cplusplus
}
#endif

#endif
