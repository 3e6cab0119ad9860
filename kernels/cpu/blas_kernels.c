// blas_kernels: which kernels OpenBLAS runs, and a process restarted on better ones where
// OpenBLAS did not recognise the CPU (kernels.h).
//
// OpenBLAS (a DYNAMIC_ARCH build, as distributions ship it) picks its kernels once, when it
// loads, from the CPU's model number, or from OPENBLAS_CORETYPE when that is set. A model newer
// than the release (Intel Emerald Rapids under Debian 12's 0.3.21) gets its generic SSE3 kernels,
// "Prescott": a 1024³ sgemm runs 36 GFLOP/s on one core there against 185 with the AVX-512
// ("SkylakeX") kernels the CPU runs.
#include <cblas.h>
#include <stdlib.h>
#include <strings.h>
#include <unistd.h>

#include "kernels/kernels.h"

// OpenBLAS's kernels for a CPU it does not know.
static const char FALLBACK_KERNELS[] = "Prescott";

const char *dsv3_cpu_blas_kernels(void) { return openblas_get_corename(); }

// The OPENBLAS_CORETYPE of the fastest OpenBLAS kernels this CPU can run, from its instruction
// sets (SkylakeX: AVX-512 F, CD, BW, DQ, VL; Haswell: AVX2 and FMA; Sandybridge: AVX), or NULL.
static const char *kernels_for_this_cpu(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
    if (__builtin_cpu_supports("avx")) return "Sandybridge";
    return NULL;
}

void dsv3_cpu_blas_restart_on_fallback(char **argv) {
    if (getenv("OPENBLAS_CORETYPE") != NULL) return; // the user chose
    if (strcasecmp(dsv3_cpu_blas_kernels(), FALLBACK_KERNELS) != 0) return;
    const char *better = kernels_for_this_cpu();
    if (better == NULL || setenv("OPENBLAS_CORETYPE", better, 1) != 0) return;
    execv("/proc/self/exe", argv);
    unsetenv("OPENBLAS_CORETYPE"); // exec failed: go on as OpenBLAS chose, and say so truthfully
}
