// The whole model on a GPU against the CPU backend: the debug model (MoE layers, MLA,
// block-causal masks) built twice from the same seed, one on the CPU backend and one on the CUDA
// backend (opt.backend), fed the same tokens and labels.
//   - fp32: one step's loss within 1e-5 relative, every parameter's gradient within 1e-5, and,
//     after clipping, the expert-bias update and AdamW, every parameter within 1e-5;
//   - bf16 GEMMs (training.mixed_precision_param = "bfloat16", tensors fp32): ten steps whose
//     losses stay within 2e-2 of the fp32 CPU run's, as the numerics contract asks.
// Exits 77 without a CUDA device.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/core/rng.h"
#include "common/model/model.h"
#include "common/train/optimizer.h"
#include "tests/cuda/cuda_test.h"

enum { BATCH = 2, SEQ_LEN = 128, SEED = 7, BF16_STEPS = 10 };

static const double FP32_TOLERANCE = 1e-5, BF16_LOSS_TOLERANCE = 2e-2;

typedef struct {
    Dsv3Model *m;
    int32_t *tokens, *labels; // in the model's kernel context's memory
} Run;

static Dsv3ModelOptions options(Dsv3Backend backend, Dsv3TensorDtype matmul) {
    return (Dsv3ModelOptions){.batch = BATCH,
                              .seq_len = SEQ_LEN,
                              .eos_id = 0,
                              .loss_chunk = 64,
                              .slots = 1,
                              .matmul_dtype = matmul,
                              .backend = backend,
                              .device = 0};
}

static const Dsv3KernelContext *kernels_of(const Run *r) {
    return dsv3_model_services(r->m)->kernels;
}

static void run_create(Run *r, Dsv3Backend backend, Dsv3TensorDtype matmul) {
    Dsv3ModelArgs args;
    cuda_test_ok(dsv3_model_args_flavor("debugmodel", &args));
    const Dsv3ModelOptions opt = options(backend, matmul);
    cuda_test_ok(dsv3_model_create_local(&r->m, &args, &opt, NULL, SEED, NULL));
    const size_t bytes = BATCH * SEQ_LEN * sizeof(int32_t);
    cuda_test_ok(dsv3_memory_alloc(kernels_of(r), (void **)&r->tokens, bytes, "tokens"));
    cuda_test_ok(dsv3_memory_alloc(kernels_of(r), (void **)&r->labels, bytes, "labels"));
}

static void run_destroy(Run *r) {
    if (!r->m) return;
    (void)dsv3_memory_free(kernels_of(r), r->tokens);
    (void)dsv3_memory_free(kernels_of(r), r->labels);
    dsv3_model_destroy(r->m);
    memset(r, 0, sizeof *r);
}

// Step `step`'s tokens and labels (the same on every backend), into the run's memory.
static void run_batch(Run *r, int64_t step) {
    enum { N = BATCH * SEQ_LEN };
    static int32_t tokens[N], labels[N];
    const int64_t V = dsv3_model_args(r->m)->vocab_size;
    const uint64_t key = dsv3_rng_key(SEED, "cuda model batch");
    for (int64_t n = 0; n < N; n++) {
        tokens[n] = (int32_t)(dsv3_rng_bits(key, (uint64_t)(2 * (step * N + n))) % (uint64_t)V);
        labels[n] = (int32_t)(dsv3_rng_bits(key, (uint64_t)(2 * (step * N + n) + 1)) % (uint64_t)V);
    }
    cuda_test_ok(dsv3_memory_copy(kernels_of(r), r->tokens, tokens, sizeof tokens,
                                  DSV3_COPY_HOST_TO_DEVICE));
    cuda_test_ok(dsv3_memory_copy(kernels_of(r), r->labels, labels, sizeof labels,
                                  DSV3_COPY_HOST_TO_DEVICE));
}

// Forward and backward of step `step`: the mean loss.
static double run_forward_backward(Run *r, int64_t step) {
    run_batch(r, step);
    double loss_sum = 0;
    int64_t count = 0;
    const Dsv3StageGrad grad = {.labels = r->labels, .grad_scale = 1.0f / (float)(BATCH * SEQ_LEN)};
    cuda_test_ok(dsv3_model_forward(r->m, 0, &(Dsv3StageInput){.tokens = r->tokens}));
    cuda_test_ok(dsv3_model_backward(r->m, 0, &grad, &loss_sum, &count));
    assert_true(count > 0);
    return loss_sum / (double)count;
}

static void run_optimizer(Run *r, int64_t step) {
    const Dsv3OptimizerStep s = {.lr = 8e-4,
                                 .beta1 = 0.9f,
                                 .beta2 = 0.95f,
                                 .eps = 1e-8f,
                                 .weight_decay = 0.1f,
                                 .max_norm = 1.0,
                                 .step = step + 1};
    double sum_squares = 0;
    cuda_test_ok(dsv3_optimizer_grad_sum_squares(r->m, &sum_squares));
    cuda_test_ok(dsv3_optimizer_step(r->m, &s, sum_squares));
}

// The values of one shard buffer (data or grad) of every parameter, compared parameter by
// parameter between the CUDA run and the CPU run.
static void expect_params_close(const Run *gpu, const Run *cpu, int grads, const char *what) {
    const Dsv3ParamStore *g = dsv3_model_services(gpu->m)->params,
                         *c = dsv3_model_services(cpu->m)->params;
    assert_int_equal(g->n_groups, c->n_groups);
    // The model's context wrote them on its own stream, which cuda_ctx's copies do not wait for.
    cuda_test_ok(dsv3_synchronize(kernels_of(gpu)));
    for (int i = 0; i < g->n_groups; i++) {
        const Dsv3ParamGroup *group = &c->groups[i];
        const float *mine = grads ? g->shards[i].grad : g->shards[i].data;
        const float *want = grads ? c->shards[i].grad : c->shards[i].data;
        const int64_t n = group->shard_numel;
        float *host = test_floats(n);
        cuda_test_download(host, mine, (size_t)n * sizeof(float));
        for (int slot = 0; slot < DSV3_PARAM_SLOT_COUNT; slot++) {
            const Dsv3Param *p = &group->params[slot];
            if (!p->fqn[0] || p->numel == 0) continue;
            char label[256];
            snprintf(label, sizeof label, "%s of %s", what, p->fqn);
            cuda_test_expect_close(host + p->shard_offset, want + p->shard_offset,
                                   dsv3_param_shard_numel(p), FP32_TOLERANCE, label);
        }
        test_buffers_free_after(0);
    }
}

static void test_fp32_step_matches_cpu(void **state) {
    (void)state;
    Run gpu = {0}, cpu = {0};
    run_create(&gpu, DSV3_BACKEND_CUDA, DSV3_TENSOR_F32);
    run_create(&cpu, DSV3_BACKEND_CPU, DSV3_TENSOR_F32);
    expect_params_close(&gpu, &cpu, 0, "initial value");
    const double loss_gpu = run_forward_backward(&gpu, 0), loss_cpu = run_forward_backward(&cpu, 0);
    printf("fp32 step: loss %.9f on the GPU, %.9f on the CPU\n", loss_gpu, loss_cpu);
    if (!(fabs(loss_gpu - loss_cpu) <= FP32_TOLERANCE * fabs(loss_cpu)))
        fail_msg("loss %.9g on the GPU, %.9g on the CPU", loss_gpu, loss_cpu);
    expect_params_close(&gpu, &cpu, 1, "gradient");
    run_optimizer(&gpu, 0);
    run_optimizer(&cpu, 0);
    expect_params_close(&gpu, &cpu, 0, "updated value");
    run_destroy(&gpu);
    run_destroy(&cpu);
}

static void test_bf16_steps_follow_fp32(void **state) {
    (void)state;
    Run gpu = {0}, cpu = {0};
    run_create(&gpu, DSV3_BACKEND_CUDA, DSV3_TENSOR_BF16);
    run_create(&cpu, DSV3_BACKEND_CPU, DSV3_TENSOR_F32);
    for (int64_t step = 0; step < BF16_STEPS; step++) {
        const double bf16 = run_forward_backward(&gpu, step),
                     fp32 = run_forward_backward(&cpu, step);
        printf("step %lld: loss %.6f (bf16 GEMMs, GPU) against %.6f (fp32, CPU)\n",
               (long long)step + 1, bf16, fp32);
        if (!(fabs(bf16 - fp32) <= BF16_LOSS_TOLERANCE * fabs(fp32)))
            fail_msg("step %lld: bf16 loss %.6g is not within %.0e of the fp32 loss %.6g",
                     (long long)step + 1, bf16, BF16_LOSS_TOLERANCE, fp32);
        run_optimizer(&gpu, step);
        run_optimizer(&cpu, step);
    }
    run_destroy(&gpu);
    run_destroy(&cpu);
}

static const struct CMUnitTest cases[] = {
    CUDA_TEST(test_fp32_step_matches_cpu),
    CUDA_TEST(test_bf16_steps_follow_fp32),
};

CUDA_TEST_MAIN(cases)
