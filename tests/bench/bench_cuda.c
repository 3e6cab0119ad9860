// The CUDA ops' speed on one GPU, for tests/gpu/run.sh: what the 16B model's step is made of,
// each as TFLOP/s and as a share of a peak.
//   bench_cuda [--device 0] [--dtype bfloat16|float32] [--tokens 8192] [--seq_len 4096]
//              [--repeat 10]
// Prints, one `bench_cuda <part> ...` line each:
//   - peak: the data-sheet dense peak of the GPU for the dtype (by its name; 0 when unknown),
//     and cuBLAS's own: an 8192³ GEMM through linear_forward;
//   - gemm: every linear layer of the 16B model over `tokens` tokens, forward and backward
//     (input and weight gradients), against cuBLAS's own peak;
//   - attention: causal attention of one sequence of seq_len, 16 heads, head dims 192/128,
//     forward and backward, against the data-sheet peak;
//   - experts: 64 experts × top-6 over `tokens` tokens (768 rows each), dim 2048, hidden 1408,
//     forward and backward, against the data-sheet peak.
// Times are wall clock over `repeat` calls after one warm-up call, with the context's stream
// drained (dsv3_synchronize) before and after. Without a CUDA device it says so and exits 77.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/error.h"
#include "common/core/log.h"
#include "common/core/rng.h"
#include "kernels/cuda/cuda_device.h"
#include "kernels/kernels.h"

enum { BENCH_SKIP = 77 };

// The 16B model's sizes (common/model/model_args.c, flavor 16B).
enum {
    B16_DIM = 2048,
    B16_HEADS = 16,
    B16_QK_HEAD = 192, // nope 128 + rope 64
    B16_V_HEAD = 128,
    B16_KV_LORA = 512,
    B16_ROPE = 64,
    B16_INTER = 10944,
    B16_MOE_INTER = 1408,
    B16_SHARED = 2,
    B16_EXPERTS = 64,
    B16_TOP_K = 6,
    B16_VOCAB = 102400,
};

// cuBLAS's own peak: one square GEMM of this size.
enum { BENCH_PEAK_SIZE = 8192 };

typedef struct {
    int device;
    Dsv3TensorDtype dtype;
    int64_t tokens, seq_len, repeat;
} BenchOptions;

typedef struct {
    Dsv3KernelContext ctx;
    BenchOptions opt;
    double sheet_peak, cublas_peak; // TFLOP/s
} Bench;

// The data sheet's dense (no sparsity) tensor-core peak, TFLOP/s, by the device's name.
static double bench_sheet_peak(const char *name, Dsv3TensorDtype dtype) {
    static const struct {
        const char *part;
        double bf16, fp32;
    } sheet[] = {
        {"H200", 989.4, 66.9},
        {"H100 PCIe", 756.0, 51.2},
        {"H100", 989.4, 66.9}, // SXM
        {"A100", 312.0, 19.5},
    };
    for (size_t i = 0; i < sizeof sheet / sizeof sheet[0]; i++)
        if (strstr(name, sheet[i].part))
            return dtype == DSV3_TENSOR_BF16 ? sheet[i].bf16 : sheet[i].fp32;
    return 0;
}

static size_t bench_bytes(const Bench *b, int64_t count) {
    return (size_t)count * (b->opt.dtype == DSV3_TENSOR_BF16 ? 2 : 4);
}

// A device tensor of `count` elements of the bench's dtype, uniform in [−scale, scale).
static Dsv3Err bench_tensor(Bench *b, void **out, int64_t count, float scale, uint64_t seed) {
    float *host = malloc((size_t)count * sizeof *host);
    DSV3_CHECK(host != NULL, DSV3_ERR_MEMORY, "bench: %lld host floats", (long long)count);
    const uint64_t key = dsv3_rng_key(seed, "bench_cuda");
    for (int64_t i = 0; i < count; i++)
        host[i] = scale * (float)(2.0 * dsv3_rng_uniform(key, (uint64_t)i) - 1.0);
    void *f32 = NULL;
    Dsv3Err err = dsv3_memory_alloc(&b->ctx, &f32, (size_t)count * sizeof(float), "bench fp32");
    if (err == DSV3_OK) err = dsv3_memory_alloc(&b->ctx, out, bench_bytes(b, count), "bench");
    if (err == DSV3_OK)
        err = dsv3_memory_copy(&b->ctx, f32, host, (size_t)count * sizeof(float),
                               DSV3_COPY_HOST_TO_DEVICE);
    if (err == DSV3_OK)
        err = dsv3_convert(&b->ctx, *out, b->opt.dtype, f32, DSV3_TENSOR_F32, count);
    if (err == DSV3_OK) err = dsv3_synchronize(&b->ctx);
    free(host);
    (void)dsv3_memory_free(&b->ctx, f32);
    DSV3_CALL(err);
    return DSV3_OK;
}

static Dsv3Err bench_zeros(Bench *b, void **out, size_t bytes) {
    DSV3_CALL(dsv3_memory_alloc(&b->ctx, out, bytes, "bench"));
    DSV3_CALL(dsv3_memory_zero(&b->ctx, *out, bytes));
    return DSV3_OK;
}

// Seconds per call of `run` (one warm-up call, then opt.repeat timed ones).
typedef Dsv3Err (*BenchRun)(Bench *b, void *arg);
static Dsv3Err bench_time(Bench *b, BenchRun run, void *arg, double *seconds) {
    DSV3_CALL(run(b, arg));
    DSV3_CALL(dsv3_synchronize(&b->ctx));
    const double start = dsv3_log_seconds();
    for (int64_t i = 0; i < b->opt.repeat; i++)
        DSV3_CALL(run(b, arg));
    DSV3_CALL(dsv3_synchronize(&b->ctx));
    *seconds = (dsv3_log_seconds() - start) / (double)b->opt.repeat;
    return DSV3_OK;
}

// The context's workspace sized for the larger of two ops (a forward and its backward).
static Dsv3Err bench_workspace(Bench *b, Dsv3Op forward, Dsv3Op backward,
                               const Dsv3OpShape *shape) {
    size_t forward_bytes = 0, backward_bytes = 0;
    DSV3_CALL(dsv3_workspace_bytes(&b->ctx, forward, shape, &forward_bytes));
    DSV3_CALL(dsv3_workspace_bytes(&b->ctx, backward, shape, &backward_bytes));
    const size_t bytes = forward_bytes > backward_bytes ? forward_bytes : backward_bytes;
    if (bytes > 0) DSV3_CALL(dsv3_memory_alloc(&b->ctx, &b->ctx.workspace, bytes, "workspace"));
    b->ctx.workspace_bytes = bytes;
    return DSV3_OK;
}

// Frees `count` device buffers (NULL ones skipped) and the context's workspace.
static void bench_release(Bench *b, void *const *buffers, size_t count) {
    for (size_t i = 0; i < count; i++)
        (void)dsv3_memory_free(&b->ctx, buffers[i]);
    (void)dsv3_memory_free(&b->ctx, b->ctx.workspace);
    b->ctx.workspace = NULL;
    b->ctx.workspace_bytes = 0;
}

// ---- GEMMs (linear layers) ----

typedef struct {
    const char *name;
    int64_t in, out;
    void *x, *w, *y, *dx;
    float *dw;
    int64_t N;
} BenchLinear;

static Dsv3Err bench_linear_forward(Bench *b, void *arg) {
    BenchLinear *l = arg;
    return dsv3_linear_forward(&b->ctx, b->opt.dtype, l->y, l->x, l->w, l->N, l->in, l->out);
}

static Dsv3Err bench_linear_backward(Bench *b, void *arg) {
    BenchLinear *l = arg;
    return dsv3_linear_backward(&b->ctx, b->opt.dtype, l->dx, l->dw, l->y, l->x, l->w, l->N, l->in,
                                l->out, 0);
}

// Forward and backward TFLOP/s of one linear layer over N tokens.
static Dsv3Err bench_linear(Bench *b, BenchLinear *l, double *forward, double *backward) {
    Dsv3Err err = bench_tensor(b, &l->x, l->N * l->in, 1.0f, 1);
    if (err == DSV3_OK) err = bench_tensor(b, &l->w, l->out * l->in, 0.02f, 2);
    if (err == DSV3_OK) err = bench_tensor(b, &l->y, l->N * l->out, 1.0f, 3);
    if (err == DSV3_OK) err = bench_zeros(b, &l->dx, bench_bytes(b, l->N * l->in));
    if (err == DSV3_OK)
        err = bench_zeros(b, (void **)&l->dw, (size_t)(l->out * l->in) * sizeof(float));
    double fwd = 0, bwd = 0;
    if (err == DSV3_OK) err = bench_time(b, bench_linear_forward, l, &fwd);
    if (err == DSV3_OK) err = bench_time(b, bench_linear_backward, l, &bwd);
    void *const buffers[] = {l->x, l->w, l->y, l->dx, l->dw};
    bench_release(b, buffers, sizeof buffers / sizeof buffers[0]);
    DSV3_CALL(err);
    const double flops = 2.0 * (double)l->N * (double)l->in * (double)l->out;
    *forward = flops / fwd * 1e-12;
    *backward = 2.0 * flops / bwd * 1e-12;
    return DSV3_OK;
}

static Dsv3Err bench_peak(Bench *b) {
    char line[256];
    DSV3_CALL(dsv3_cuda_device_describe(b->opt.device, line, sizeof line));
    b->sheet_peak = bench_sheet_peak(line, b->opt.dtype);
    BenchLinear square = {"square", BENCH_PEAK_SIZE, BENCH_PEAK_SIZE, NULL, NULL, NULL, NULL,
                          NULL,     BENCH_PEAK_SIZE};
    double forward = 0, backward = 0;
    DSV3_CALL(bench_linear(b, &square, &forward, &backward));
    b->cublas_peak = forward;
    printf("bench_cuda device %s\n", line);
    printf("bench_cuda peak dtype=%s sheet_tflops=%.1f cublas_tflops=%.1f (%d³ GEMM)\n",
           b->opt.dtype == DSV3_TENSOR_BF16 ? "bfloat16" : "float32", b->sheet_peak, b->cublas_peak,
           BENCH_PEAK_SIZE);
    return DSV3_OK;
}

static Dsv3Err bench_gemms(Bench *b) {
    const int64_t q = B16_HEADS * B16_QK_HEAD, kv_a = B16_KV_LORA + B16_ROPE,
                  kv_b = B16_HEADS * (B16_QK_HEAD - B16_ROPE + B16_V_HEAD),
                  o = B16_HEADS * B16_V_HEAD, shared = B16_SHARED * B16_MOE_INTER;
    BenchLinear layers[] = {
        {"wq", B16_DIM, q, NULL, NULL, NULL, NULL, NULL, 0},
        {"wkv_a", B16_DIM, kv_a, NULL, NULL, NULL, NULL, NULL, 0},
        {"wkv_b", B16_KV_LORA, kv_b, NULL, NULL, NULL, NULL, NULL, 0},
        {"wo", o, B16_DIM, NULL, NULL, NULL, NULL, NULL, 0},
        {"dense_w1", B16_DIM, B16_INTER, NULL, NULL, NULL, NULL, NULL, 0},
        {"dense_w2", B16_INTER, B16_DIM, NULL, NULL, NULL, NULL, NULL, 0},
        {"shared_w1", B16_DIM, shared, NULL, NULL, NULL, NULL, NULL, 0},
        {"shared_w2", shared, B16_DIM, NULL, NULL, NULL, NULL, NULL, 0},
        {"output", B16_DIM, B16_VOCAB, NULL, NULL, NULL, NULL, NULL, 0},
    };
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++) {
        BenchLinear *l = &layers[i];
        l->N = b->opt.tokens;
        double forward = 0, backward = 0;
        DSV3_CALL(bench_linear(b, l, &forward, &backward));
        printf("bench_cuda gemm %-10s N=%lld in=%lld out=%lld forward_tflops=%.1f "
               "backward_tflops=%.1f of_cublas=%.0f%%/%.0f%%\n",
               l->name, (long long)l->N, (long long)l->in, (long long)l->out, forward, backward,
               100.0 * forward / b->cublas_peak, 100.0 * backward / b->cublas_peak);
    }
    return DSV3_OK;
}

// ---- attention ----

typedef struct {
    int64_t B, T, H, Dqk, Dv;
    void *q, *k, *v, *out, *dout, *dq, *dk, *dv;
    float *lse;
} BenchAttention;

static Dsv3Err bench_attention_forward(Bench *b, void *arg) {
    BenchAttention *a = arg;
    return dsv3_attention_forward(&b->ctx, b->opt.dtype, a->out, a->lse, NULL, a->q, a->k, a->v,
                                  NULL, NULL, a->B, a->T, a->T, a->H, a->Dqk, a->Dv,
                                  1.0f / sqrtf((float)a->Dqk));
}

static Dsv3Err bench_attention_backward(Bench *b, void *arg) {
    BenchAttention *a = arg;
    return dsv3_attention_backward(&b->ctx, b->opt.dtype, a->dq, a->dk, a->dv, a->dout, a->q, a->k,
                                   a->v, a->out, a->lse, NULL, NULL, NULL, a->B, a->T, a->T, a->H,
                                   a->Dqk, a->Dv, 1.0f / sqrtf((float)a->Dqk));
}

static Dsv3Err bench_attention_run(Bench *b, BenchAttention *a) {
    const int64_t rows = a->B * a->T * a->H;
    DSV3_CALL(bench_tensor(b, &a->q, rows * a->Dqk, 1.0f, 11));
    DSV3_CALL(bench_tensor(b, &a->k, rows * a->Dqk, 1.0f, 12));
    DSV3_CALL(bench_tensor(b, &a->v, rows * a->Dv, 1.0f, 13));
    DSV3_CALL(bench_tensor(b, &a->dout, rows * a->Dv, 1.0f, 14));
    DSV3_CALL(bench_zeros(b, &a->out, bench_bytes(b, rows * a->Dv)));
    DSV3_CALL(bench_zeros(b, &a->dq, bench_bytes(b, rows * a->Dqk)));
    DSV3_CALL(bench_zeros(b, &a->dk, bench_bytes(b, rows * a->Dqk)));
    DSV3_CALL(bench_zeros(b, &a->dv, bench_bytes(b, rows * a->Dv)));
    DSV3_CALL(bench_zeros(b, (void **)&a->lse, (size_t)rows * sizeof(float)));
    const Dsv3OpShape shape = {
        .B = a->B, .Tq = a->T, .Tk = a->T, .H = a->H, .Dqk = a->Dqk, .Dv = a->Dv};
    DSV3_CALL(bench_workspace(b, DSV3_OP_ATTENTION_FORWARD, DSV3_OP_ATTENTION_BACKWARD, &shape));
    double fwd = 0, bwd = 0;
    DSV3_CALL(bench_time(b, bench_attention_forward, a, &fwd));
    DSV3_CALL(bench_time(b, bench_attention_backward, a, &bwd));
    // Causal: half of the Tq × Tk scores. Forward: q·kᵀ and P·v; backward: q·kᵀ again, dout·vᵀ,
    // Pᵀ·dout, dS·k and dSᵀ·q.
    const double pairs = (double)a->B * (double)a->H * (double)a->T * (double)a->T / 2.0;
    const double forward = 2.0 * pairs * (double)(a->Dqk + a->Dv) / fwd * 1e-12;
    const double backward = 2.0 * pairs * (double)(3 * a->Dqk + 2 * a->Dv) / bwd * 1e-12;
    printf("bench_cuda attention B=%lld T=%lld H=%lld Dqk=%lld Dv=%lld causal forward_tflops=%.1f "
           "(%.0f%% of peak) backward_tflops=%.1f (%.0f%%) forward_ms=%.2f backward_ms=%.2f\n",
           (long long)a->B, (long long)a->T, (long long)a->H, (long long)a->Dqk, (long long)a->Dv,
           forward, b->sheet_peak > 0 ? 100.0 * forward / b->sheet_peak : 0.0, backward,
           b->sheet_peak > 0 ? 100.0 * backward / b->sheet_peak : 0.0, 1e3 * fwd, 1e3 * bwd);
    return DSV3_OK;
}

static Dsv3Err bench_attention(Bench *b) {
    BenchAttention a = {
        .B = 1, .T = b->opt.seq_len, .H = B16_HEADS, .Dqk = B16_QK_HEAD, .Dv = B16_V_HEAD};
    const Dsv3Err err = bench_attention_run(b, &a);
    void *const buffers[] = {a.q, a.k, a.v, a.out, a.dout, a.dq, a.dk, a.dv, a.lse};
    bench_release(b, buffers, sizeof buffers / sizeof buffers[0]);
    DSV3_CALL(err);
    return DSV3_OK;
}

// ---- routed experts ----

typedef struct {
    int64_t E, D, F, M;
    void *xs, *w1, *w2, *w3, *ys, *h1, *h3, *dxs;
    float *dw1, *dw2, *dw3;
    int64_t *offsets;
} BenchExperts;

static Dsv3Err bench_experts_forward(Bench *b, void *arg) {
    BenchExperts *x = arg;
    return dsv3_experts_forward(&b->ctx, b->opt.dtype, x->ys, x->h1, x->h3, x->xs, x->w1, x->w2,
                                x->w3, x->offsets, x->E, x->D, x->F);
}

static Dsv3Err bench_experts_backward(Bench *b, void *arg) {
    BenchExperts *x = arg;
    return dsv3_experts_backward(&b->ctx, b->opt.dtype, x->dxs, x->dw1, x->dw2, x->dw3, x->ys,
                                 x->xs, x->h1, x->h3, x->w1, x->w2, x->w3, x->offsets, x->E, x->D,
                                 x->F);
}

static Dsv3Err bench_experts_run(Bench *b, BenchExperts *x) {
    const int64_t M = x->M, E = x->E, D = x->D, F = x->F;
    DSV3_CALL(bench_tensor(b, &x->xs, M * D, 1.0f, 21));
    DSV3_CALL(bench_tensor(b, &x->w1, E * F * D, 0.02f, 22));
    DSV3_CALL(bench_tensor(b, &x->w2, E * D * F, 0.02f, 23));
    DSV3_CALL(bench_tensor(b, &x->w3, E * F * D, 0.02f, 24));
    DSV3_CALL(bench_zeros(b, &x->ys, bench_bytes(b, M * D)));
    DSV3_CALL(bench_zeros(b, &x->h1, bench_bytes(b, M * F)));
    DSV3_CALL(bench_zeros(b, &x->h3, bench_bytes(b, M * F)));
    DSV3_CALL(bench_zeros(b, &x->dxs, bench_bytes(b, M * D)));
    DSV3_CALL(bench_zeros(b, (void **)&x->dw1, (size_t)(E * F * D) * sizeof(float)));
    DSV3_CALL(bench_zeros(b, (void **)&x->dw2, (size_t)(E * D * F) * sizeof(float)));
    DSV3_CALL(bench_zeros(b, (void **)&x->dw3, (size_t)(E * F * D) * sizeof(float)));
    // Balanced routing: every expert gets M / E rows.
    int64_t host_offsets[B16_EXPERTS + 1];
    for (int64_t e = 0; e <= E; e++)
        host_offsets[e] = e * (M / E);
    DSV3_CALL(bench_zeros(b, (void **)&x->offsets, sizeof host_offsets));
    DSV3_CALL(dsv3_memory_copy(&b->ctx, x->offsets, host_offsets, sizeof host_offsets,
                               DSV3_COPY_HOST_TO_DEVICE));
    const Dsv3OpShape shape = {.M = M, .E = E, .D = D, .F = F};
    DSV3_CALL(bench_workspace(b, DSV3_OP_EXPERTS_FORWARD, DSV3_OP_EXPERTS_BACKWARD, &shape));
    double fwd = 0, bwd = 0;
    DSV3_CALL(bench_time(b, bench_experts_forward, x, &fwd));
    DSV3_CALL(bench_time(b, bench_experts_backward, x, &bwd));
    const double gemm = 2.0 * (double)M * (double)D * (double)F;
    const double forward = 3.0 * gemm / fwd * 1e-12, backward = 6.0 * gemm / bwd * 1e-12;
    printf("bench_cuda experts E=%lld top_k=%d tokens=%lld M=%lld D=%lld F=%lld "
           "forward_tflops=%.1f (%.0f%% of peak) backward_tflops=%.1f (%.0f%%)\n",
           (long long)E, B16_TOP_K, (long long)b->opt.tokens, (long long)M, (long long)D,
           (long long)F, forward, b->sheet_peak > 0 ? 100.0 * forward / b->sheet_peak : 0.0,
           backward, b->sheet_peak > 0 ? 100.0 * backward / b->sheet_peak : 0.0);
    return DSV3_OK;
}

static Dsv3Err bench_experts(Bench *b) {
    BenchExperts x = {
        .E = B16_EXPERTS, .D = B16_DIM, .F = B16_MOE_INTER, .M = b->opt.tokens * B16_TOP_K};
    const Dsv3Err err = bench_experts_run(b, &x);
    void *const buffers[] = {x.xs, x.w1,  x.w2,  x.w3,  x.ys,  x.h1,
                             x.h3, x.dxs, x.dw1, x.dw2, x.dw3, x.offsets};
    bench_release(b, buffers, sizeof buffers / sizeof buffers[0]);
    DSV3_CALL(err);
    return DSV3_OK;
}

// ---- main ----

static int bench_usage(const char *arg) {
    fprintf(stderr,
            "bench_cuda: bad argument '%s'\nusage: bench_cuda [--device N] [--dtype "
            "bfloat16|float32] [--tokens N] [--seq_len T] [--repeat R]\n",
            arg);
    return 2;
}

static int bench_parse(int argc, char **argv, BenchOptions *opt) {
    for (int i = 1; i < argc; i += 2) {
        const char *key = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (!value) return bench_usage(key);
        char *end = NULL;
        const long long n = strtoll(value, &end, 10);
        const int number = *end == '\0' && n > 0;
        if (!strcmp(key, "--dtype") && !strcmp(value, "bfloat16"))
            opt->dtype = DSV3_TENSOR_BF16;
        else if (!strcmp(key, "--dtype") && !strcmp(value, "float32"))
            opt->dtype = DSV3_TENSOR_F32;
        else if (!strcmp(key, "--device") && (number || !strcmp(value, "0")))
            opt->device = (int)n;
        else if (!strcmp(key, "--tokens") && number && n % B16_EXPERTS == 0)
            opt->tokens = n;
        else if (!strcmp(key, "--seq_len") && number)
            opt->seq_len = n;
        else if (!strcmp(key, "--repeat") && number)
            opt->repeat = n;
        else
            return bench_usage(value);
    }
    return 0;
}

int main(int argc, char **argv) {
    Bench b = {
        .opt = {
            .device = 0, .dtype = DSV3_TENSOR_BF16, .tokens = 8192, .seq_len = 4096, .repeat = 10}};
    const int bad = bench_parse(argc, argv, &b.opt);
    if (bad) return bad;
    int count = 0;
    if (dsv3_cuda_device_count(&count) != DSV3_OK) goto failed;
    if (count == 0 || !dsv3_backend_built(DSV3_BACKEND_CUDA)) {
        printf("bench_cuda: no CUDA device (or no CUDA backend in this build): skipped\n");
        return BENCH_SKIP;
    }
    if (dsv3_kernel_context_create(&b.ctx, DSV3_BACKEND_CUDA, b.opt.device) != DSV3_OK) goto failed;
    Dsv3Err err = bench_peak(&b);
    if (err == DSV3_OK) err = bench_gemms(&b);
    if (err == DSV3_OK) err = bench_attention(&b);
    if (err == DSV3_OK) err = bench_experts(&b);
    dsv3_kernel_context_destroy(&b.ctx);
    if (err != DSV3_OK) goto failed;
    return 0;
failed:
    fprintf(stderr, "%s", dsv3_error_text());
    return 1;
}
