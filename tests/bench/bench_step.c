// Training-step throughput of dsv3 on one process, for run/bench.sh.
//
// The same work as tests/reference/bench_torch.py: torchtitan's debugmodel architecture,
// random tokens, and per step forward, loss, backward, clipping, expert-bias update and AdamW.
//   bench_step [--seq_len 512] [--batch 2] [--steps 3] [--warmup 1] [--threads N] [--ac
//   none|op|full] [--matmul float32|bfloat16] [--profile 1]
// Prints `dsv3 tokens_per_s=<x>`, the OpenBLAS kernels it ran (`dsv3 blas_kernels=<name>`: it
// restarts on better ones where OpenBLAS did not recognise the CPU, as training does) and the
// memory line: peak RSS of this process against parameters + gradients + AdamW state + the
// activations and scratch the model allocated.
// --profile 1 also prints where a timed step's time goes (the op library's profiling): each op's
// time and share of the step with the GFLOP/s of its GEMMs against the peak the training start-up
// measures (a large GEMM in the same dtype, on the same threads), then each GEMM shape's.
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "common/core/log.h"
#include "common/core/rng.h"
#include "common/model/model.h"
#include "common/train/optimizer.h"
#include "common/train/peak.h"
#include "kernels/kernels.h"

// Bytes per parameter held during training: fp32 value, gradient, and AdamW's two moments.
enum { TRAINING_BYTES_PER_PARAM = 16 };

static const double MIB = 1024.0 * 1024.0;

static int fail(void) {
    fprintf(stderr, "%s", dsv3_error_text());
    return 1;
}

static int by_seconds(const void *a, const void *b) {
    const double x = ((const Dsv3GemmProfile *)a)->seconds,
                 y = ((const Dsv3GemmProfile *)b)->seconds;
    return (x < y) - (x > y);
}

// The op and GEMM tables of --profile, per timed step.
static Dsv3Err print_profile(Dsv3TensorDtype matmul, int64_t steps, double elapsed) {
    static Dsv3OpProfile ops[DSV3_OP_COUNT];
    static Dsv3GemmProfile gemms[DSV3_PROFILE_MAX_GEMM_SHAPES];
    int64_t n_gemms = 0;
    dsv3_profile_read(ops, gemms, &n_gemms);
    double peak = 0, peak_seconds = 0;
    DSV3_CALL(dsv3_peak_measure_tflops(matmul, &peak, &peak_seconds));
    peak *= 1e3; // GFLOP/s
    const double step = elapsed / (double)steps;
    const char *dtype = matmul == DSV3_TENSOR_BF16 ? "bf16" : "fp32";
    printf("profile: %.3f s per step, %d thread(s), %s GEMM peak %.1f GFLOP/s (1024³, as training "
           "measures it; OpenBLAS's %s kernels)\n",
           step, omp_get_max_threads(), dtype, peak, dsv3_cpu_blas_kernels());
    printf("%-22s %8s %9s %6s %10s %9s %7s\n", "op", "calls", "ms/step", "share", "GFLOP/step",
           "GFLOP/s", "of peak");
    double in_ops = 0;
    for (int op = 0; op < DSV3_OP_COUNT; op++) {
        const Dsv3OpProfile *p = &ops[op];
        if (p->calls == 0) continue;
        in_ops += p->seconds;
        const double rate = p->gemm_flops / p->seconds / 1e9;
        printf("%-22s %8.0f %9.2f %5.1f%% %10.2f", dsv3_op_name((Dsv3Op)op),
               (double)p->calls / (double)steps, 1e3 * p->seconds / (double)steps,
               100 * p->seconds / elapsed, p->gemm_flops / 1e9 / (double)steps);
        if (p->gemm_flops > 0)
            printf(" %9.1f %6.1f%%\n", rate, 100 * rate / peak);
        else
            printf("\n");
    }
    printf("%-22s %8s %9.2f %5.1f%%\n", "(outside ops)", "",
           1e3 * (elapsed - in_ops) / (double)steps, 100 * (elapsed - in_ops) / elapsed);
    qsort(gemms, (size_t)n_gemms, sizeof *gemms, by_seconds);
    printf("GEMM shapes by time (op(A) M×K · op(B) K×N; in an op's parallel region: time of the "
           "thread that ran it):\n");
    printf("%-2s %6s %6s %6s %8s %9s %9s %7s\n", "", "M", "N", "K", "calls", "ms/step", "GFLOP/s",
           "of peak");
    for (int64_t i = 0; i < n_gemms && i < 24; i++) {
        const Dsv3GemmProfile *g = &gemms[i];
        const double rate =
            2.0 * (double)g->M * (double)g->N * (double)g->K * (double)g->calls / g->seconds / 1e9;
        printf("%c%c %6lld %6lld %6lld %8.0f %9.2f %9.1f %6.1f%%%s\n", g->trans_a ? 'T' : 'N',
               g->trans_b ? 'T' : 'N', (long long)g->M, (long long)g->N, (long long)g->K,
               (double)g->calls / (double)steps, 1e3 * g->seconds / (double)steps, rate,
               100 * rate / peak, g->in_parallel ? "  (in parallel)" : "");
    }
    return DSV3_OK;
}

int main(int argc, char **argv) {
    dsv3_cpu_blas_restart_on_fallback(argv); // as training does
    int64_t seq_len = 512, batch = 2, steps = 3, warmup = 1, threads = 0, profile = 0;
    Dsv3AcMode ac = DSV3_AC_NONE;
    Dsv3TensorDtype matmul = DSV3_TENSOR_F32;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--seq_len"))
            seq_len = atoll(v);
        else if (!strcmp(k, "--batch"))
            batch = atoll(v);
        else if (!strcmp(k, "--steps"))
            steps = atoll(v);
        else if (!strcmp(k, "--warmup"))
            warmup = atoll(v);
        else if (!strcmp(k, "--profile"))
            profile = atoll(v);
        else if (!strcmp(k, "--threads"))
            threads = atoll(v);
        else if (!strcmp(k, "--matmul"))
            matmul = !strcmp(v, "bfloat16") ? DSV3_TENSOR_BF16 : DSV3_TENSOR_F32;
        else if (!strcmp(k, "--ac"))
            ac = !strcmp(v, "full") ? DSV3_AC_FULL : !strcmp(v, "op") ? DSV3_AC_OP : DSV3_AC_NONE;
        else {
            fprintf(stderr, "unknown option %s\n", k);
            return 2;
        }
    }
    if (threads > 0) {
        omp_set_num_threads((int)threads);
        openblas_set_num_threads((int)threads);
    }
    Dsv3ModelArgs args;
    if (dsv3_model_args_flavor("debugmodel", &args) != DSV3_OK) return fail();
    Dsv3ModelOptions opt = {.batch = batch,
                            .seq_len = seq_len,
                            .eos_id = 0,
                            .ac_mode = ac,
                            .loss_chunk = 1024,
                            .slots = 1,
                            .matmul_dtype = matmul};
    Dsv3Model *m = NULL;
    if (dsv3_model_create_local(&m, &args, &opt, NULL, 0, NULL) != DSV3_OK) return fail();
    int64_t N = batch * seq_len;
    int32_t *tokens = malloc((size_t)N * sizeof *tokens),
            *labels = malloc((size_t)N * sizeof *labels);
    uint64_t key = dsv3_rng_key(0, "bench tokens");
    double elapsed = 0;
    for (int64_t s = 0; s < warmup + steps; s++) {
        if (profile && s == warmup) dsv3_profile_start();
        for (int64_t n = 0; n < N; n++) {
            tokens[n] = (int32_t)(dsv3_rng_bits(key, (uint64_t)(2 * (s * N + n))) %
                                  (uint64_t)args.vocab_size);
            labels[n] = (int32_t)(dsv3_rng_bits(key, (uint64_t)(2 * (s * N + n) + 1)) %
                                  (uint64_t)args.vocab_size);
        }
        double t0 = dsv3_log_seconds(), loss = 0;
        int64_t count = 0;
        Dsv3StageGrad grad = {.labels = labels, .grad_scale = 1.0f / (float)N};
        if (dsv3_model_forward(m, 0, &(Dsv3StageInput){.tokens = tokens}) != DSV3_OK ||
            dsv3_model_backward(m, 0, &grad, &loss, &count) != DSV3_OK)
            return fail();
        Dsv3OptimizerStep step = {.lr = 8e-4,
                                  .beta1 = 0.9f,
                                  .beta2 = 0.95f,
                                  .eps = 1e-8f,
                                  .weight_decay = 0.1f,
                                  .max_norm = 1.0,
                                  .step = s + 1};
        double sum_squares = 0;
        if (dsv3_optimizer_grad_sum_squares(m, &sum_squares) != DSV3_OK) return fail();
        if (dsv3_optimizer_step(m, &step, sum_squares) != DSV3_OK) return fail();
        if (s >= warmup) elapsed += dsv3_log_seconds() - t0;
    }
    dsv3_profile_stop();
    if (profile && print_profile(matmul, steps, elapsed) != DSV3_OK) return fail();
    Dsv3ParamCounts counts;
    dsv3_model_param_counts(&args, &counts);
    double state = (double)counts.total * TRAINING_BYTES_PER_PARAM / MIB;
    double activations = (double)dsv3_model_activation_bytes(m) / MIB;
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    double rss = (double)usage.ru_maxrss / 1024.0; // ru_maxrss is in KiB on Linux
    printf("dsv3 tokens_per_s=%.1f\n", (double)(N * steps) / elapsed);
    printf("dsv3 blas_kernels=%s\n", dsv3_cpu_blas_kernels());
    printf("dsv3 peak_rss_mib=%.1f params+grads+adam_mib=%.1f activations_mib=%.1f ratio=%.2f\n",
           rss, state, activations, rss / (state + activations));
    free(tokens);
    free(labels);
    dsv3_model_destroy(m);
    return 0;
}
