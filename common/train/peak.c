// peak: the start-up GEMM benchmark, device memory, MFU.
#include "peak.h"

#include <string.h>
#include <unistd.h>

#include "common/core/alloc.h"
#include "common/core/log.h"
#include "kernels/kernels.h"

// At least PEAK_MIN_REPEATS timed GEMMs and PEAK_MIN_SECONDS of them, after one warm-up.
enum { PEAK_MIN_REPEATS = 3, PEAK_MAX_REPEATS = 1000 };
static const double PEAK_MIN_SECONDS = 0.2;

// How much faster fp32 GEMMs must run than bf16 ones before start-up says bf16 slows training.
static const double BF16_SLOWER_MARGIN = 1.1;

// The benchmark runs the model's GEMM, on the CPU backend (which has no device).
enum { PEAK_NO_DEVICE = -1 };

// "bf16" or "fp32": what the config's GEMMs compute in.
static const char *matmul_name(const Dsv3Config *cfg) {
    return strcmp(cfg->training.mixed_precision_param, "bfloat16") == 0 ? "bf16" : "fp32";
}

Dsv3Err dsv3_peak_measure_tflops(Dsv3TensorDtype matmul, double *tflops, double *seconds) {
    const int64_t n = DSV3_PEAK_GEMM_DIM;
    const size_t bytes = (size_t)(n * n) * sizeof(float);
    double start = dsv3_log_seconds();
    float *a = NULL, *b = NULL, *c = NULL;
    Dsv3Err err = DSV3_OK;
    *tflops = 0;
    Dsv3KernelContext kc = {0};
    DSV3_CALL_GOTO(err, done, dsv3_kernel_context_create(&kc, DSV3_BACKEND_CPU, PEAK_NO_DEVICE));
    DSV3_CALL_GOTO(err, done, dsv3_kernel_context_set_matmul(&kc, matmul));
    DSV3_CALL_GOTO(err, done, dsv3_alloc((void **)&a, bytes, "peak benchmark input"));
    DSV3_CALL_GOTO(err, done, dsv3_alloc((void **)&b, bytes, "peak benchmark weight"));
    DSV3_CALL_GOTO(err, done, dsv3_alloc((void **)&c, bytes, "peak benchmark output"));
    // Values of order one keep the GEMM away from denormals, which would slow it down.
    for (int64_t i = 0; i < n * n; i++) {
        a[i] = (float)((i % 7) - 3) * 0.25f;
        b[i] = (float)((i % 5) - 2) * 0.5f;
    }
    DSV3_CALL_GOTO(err, done,
                   dsv3_linear_forward(&kc, DSV3_TENSOR_F32, c, a, b, n, n, n)); // warm-up
    double best = 0, flops = 2.0 * (double)n * (double)n * (double)n;
    double bench_start = dsv3_log_seconds();
    for (int r = 0; r < PEAK_MAX_REPEATS; r++) {
        double t0 = dsv3_log_seconds();
        DSV3_CALL_GOTO(err, done, dsv3_linear_forward(&kc, DSV3_TENSOR_F32, c, a, b, n, n, n));
        double t = dsv3_log_seconds() - t0;
        if (t > 0 && flops / t > best) best = flops / t;
        if (r + 1 >= PEAK_MIN_REPEATS && dsv3_log_seconds() - bench_start >= PEAK_MIN_SECONDS)
            break;
    }
    *tflops = best / 1e12;
done:
    dsv3_kernel_context_destroy(&kc);
    dsv3_free(a);
    dsv3_free(b);
    dsv3_free(c);
    *seconds = dsv3_log_seconds() - start;
    return err;
}

int64_t dsv3_peak_device_memory_bytes(void) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (int64_t)pages * (int64_t)page : 0;
}

double dsv3_peak_mfu_percent(double flops_per_token, double tokens_per_second, double peak_tflops) {
    if (peak_tflops <= 0) return 0;
    return 100.0 * flops_per_token * tokens_per_second / (peak_tflops * 1e12);
}

double dsv3_peak_after_step(double peak_tflops, double configured_tflops, double step_tflops,
                            int *raised) {
    *raised = configured_tflops <= 0 && step_tflops > peak_tflops;
    return *raised ? step_tflops : peak_tflops;
}

Dsv3Err dsv3_peak_start_stage(const Dsv3Launch *launch) {
    if (launch->config.metrics.peak_tflops > 0) return DSV3_OK;
    double tflops = 0, seconds = 0;
    const int bf16 = strcmp(launch->config.training.mixed_precision_param, "bfloat16") == 0;
    DSV3_CALL(
        dsv3_peak_measure_tflops(bf16 ? DSV3_TENSOR_BF16 : DSV3_TENSOR_F32, &tflops, &seconds));
    dsv3_log(launch->topology.stage_index == 0 ? DSV3_LOG_INFO : DSV3_LOG_DEBUG,
             "start-up: peak: %.3f TFLOP/s on this rank (%s GEMM %d³; fp32 GEMMs on OpenBLAS's "
             "%s kernels) in %.2f s",
             tflops, matmul_name(&launch->config), DSV3_PEAK_GEMM_DIM, dsv3_cpu_blas_kernels(),
             seconds);
    // AVX512-BF16's VDPBF16PS runs at half the rate of fp32 FMAs on some CPUs (Intel Emerald
    // Rapids: 92 against 194 GFLOP/s on one core): there bf16 only makes training slower.
    double fp32_tflops = 0;
    if (bf16 && launch->topology.stage_index == 0) {
        DSV3_CALL(dsv3_peak_measure_tflops(DSV3_TENSOR_F32, &fp32_tflops, &seconds));
        if (fp32_tflops > BF16_SLOWER_MARGIN * tflops)
            DSV3_LOG_WARN("bf16 GEMMs run at %.3f TFLOP/s on this CPU and fp32 GEMMs at %.3f: "
                          "training.mixed_precision_param = \"float32\" trains faster here",
                          tflops, fp32_tflops);
    }
    // The benchmark's buffers are gone; the step lines report the peak of each step.
    dsv3_alloc_reset_peak();
    return dsv3_protocol_share_peak(launch->protocol, tflops, NULL);
}

Dsv3Err dsv3_peak_start_coordinator(const Dsv3Launch *launch, double *peak_tflops) {
    *peak_tflops = launch->config.metrics.peak_tflops;
    if (*peak_tflops > 0) {
        DSV3_LOG_INFO("MFU against metrics.peak_tflops = %.3f TFLOP/s per device", *peak_tflops);
        return DSV3_OK;
    }
    DSV3_CALL(dsv3_protocol_share_peak(launch->protocol, 0, peak_tflops));
    DSV3_LOG_INFO(
        "MFU against a measured peak of %.3f TFLOP/s per stage rank (the best of %lld ranks, %s "
        "GEMM %d³ at start-up; set metrics.peak_tflops for a data-sheet peak)",
        *peak_tflops, (long long)launch->topology.n_stage, matmul_name(&launch->config),
        DSV3_PEAK_GEMM_DIM);
    return DSV3_OK;
}
