// Training-step throughput of dsv3 on one process, for run/bench.sh.
//
// The same work as tests/reference/bench_torch.py: torchtitan's debugmodel architecture,
// random tokens, and per step forward, loss, backward, clipping, expert-bias update and AdamW.
//   bench_step [--seq_len 512] [--batch 2] [--steps 3] [--warmup 1] [--threads N] [--ac
//   none|op|full] [--matmul float32|bfloat16]
// Prints `dsv3 tokens_per_s=<x>` and the memory line: peak RSS of this process against
// parameters + gradients + AdamW state + the activations and scratch the model allocated.
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

// Bytes per parameter held during training: fp32 value, gradient, and AdamW's two moments.
enum { TRAINING_BYTES_PER_PARAM = 16 };

static const double MIB = 1024.0 * 1024.0;

static int fail(void) {
    fprintf(stderr, "%s", dsv3_error_text());
    return 1;
}

int main(int argc, char **argv) {
    int64_t seq_len = 512, batch = 2, steps = 3, warmup = 1, threads = 0;
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
    Dsv3ParamCounts counts;
    dsv3_model_param_counts(&args, &counts);
    double state = (double)counts.total * TRAINING_BYTES_PER_PARAM / MIB;
    double activations = (double)dsv3_model_activation_bytes(m) / MIB;
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    double rss = (double)usage.ru_maxrss / 1024.0; // ru_maxrss is in KiB on Linux
    printf("dsv3 tokens_per_s=%.1f\n", (double)(N * steps) / elapsed);
    printf("dsv3 peak_rss_mib=%.1f params+grads+adam_mib=%.1f activations_mib=%.1f ratio=%.2f\n",
           rss, state, activations, rss / (state + activations));
    free(tokens);
    free(labels);
    dsv3_model_destroy(m);
    return 0;
}
