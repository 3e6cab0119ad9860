// model: the stage's forward/backward over its groups and layers. Legend as in model.h.
#include "model.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "common/core/alloc.h"
#include "common/core/arena.h"

// torchtitan's final norm is nn.RMSNorm(dim) without eps: torch.finfo(float32).eps.
static const float FINAL_NORM_EPS = FLT_EPSILON;

// The model computes in fp32: the dtype of every op's activations and weights.
static const Dsv3TensorDtype F32 = DSV3_TENSOR_F32;

// The CPU backend has no device.
enum { MODEL_NO_DEVICE = -1 };

struct Dsv3Model {
    Dsv3ModelArgs args;
    Dsv3ModelOptions opt;
    Dsv3KernelContext kernels; // every op of the model and its optimizer runs here
    int n_groups;
    Dsv3ParamGroup *groups;      // embedding, layers, head
    float **expert_bias;         // per layer: (E) or NULL (dense layers)
    int64_t **tokens_per_expert; // per layer: (E) or NULL
    Dsv3Arena arena;             // activations, scratch, tables
    Dsv3LayerActs *acts;         // per layer
    Dsv3LayerActs shared;        // recomputation buffers of checkpointed layers
    Dsv3LayerScratch scratch;
    Dsv3LayerContext ctx;
    int32_t *tokens;   // (N) of the last forward
    float *last;       // (N, D) output of the last layer
    float *final_rstd; // (N)
    float *final_out;  // (N, D) after the final norm
    float *dfinal;     // (N, D)
    float *dh;         // (N, D) gradient flowing down the layers
};

static Dsv3AcMode layer_mode(const Dsv3ModelOptions *o, int64_t layer) {
    if (o->ac_every > 0) return (layer + 1) % o->ac_every == 0 ? DSV3_AC_FULL : DSV3_AC_NONE;
    return o->ac_mode;
}

// The ops a forward, a backward and an optimizer step call, each with the shapes it is called
// with (the fields of its signature; element counts without a field of their own go in N).
// Their largest workspace is the model's.
static Dsv3Err workspace_bytes(const Dsv3Model *m, size_t *bytes) {
    const Dsv3ModelArgs *a = &m->args;
    const int64_t B = m->opt.batch, T = m->opt.seq_len, N = B * T, D = a->dim, V = a->vocab_size;
    const int64_t H = a->n_heads, Dqk = a->qk_nope_head_dim + a->qk_rope_head_dim;
    const int64_t Dv = a->v_head_dim, E = a->num_experts, K = a->top_k, M = N * K;
    const int64_t F = a->moe_inter_dim, Fs = F * a->num_shared_experts, I = a->inter_dim;
    const int64_t hidden = I > Fs ? I : Fs;
    int64_t largest_group = 0;
    for (int g = 0; g < m->n_groups; g++)
        if (m->groups[g].numel > largest_group) largest_group = m->groups[g].numel;
    const struct {
        Dsv3Op op;
        Dsv3OpShape shape;
    } calls[] = {
        {DSV3_OP_ROPE_TABLES, {.T = T}},
        {DSV3_OP_TOKENS_CHECK, {.N = N, .V = V}},
        {DSV3_OP_DOCUMENT_IDS, {.B = B, .T = T}},
        {DSV3_OP_LABELS_COUNT, {.N = N}},
        {DSV3_OP_EMBEDDING_FORWARD, {.N = N, .D = D, .V = V}},
        {DSV3_OP_EMBEDDING_BACKWARD, {.N = N, .D = D, .V = V}},
        {DSV3_OP_RMSNORM_FORWARD, {.N = N, .D = D}},
        {DSV3_OP_RMSNORM_BACKWARD, {.N = N, .D = D}},
        {DSV3_OP_RMSNORM_FORWARD, {.N = N, .D = a->q_lora_rank}},
        {DSV3_OP_RMSNORM_BACKWARD, {.N = N, .D = a->q_lora_rank}},
        {DSV3_OP_RMSNORM_FORWARD, {.N = N, .D = a->kv_lora_rank}},
        {DSV3_OP_RMSNORM_BACKWARD, {.N = N, .D = a->kv_lora_rank}},
        {DSV3_OP_LINEAR_FORWARD, {.N = N}},
        {DSV3_OP_LINEAR_BACKWARD, {.N = N}},
        {DSV3_OP_ROPE_FORWARD, {.B = B, .T = T, .H = H}},
        {DSV3_OP_ROPE_BACKWARD, {.B = B, .T = T, .H = H}},
        {DSV3_OP_COPY_COLUMNS, {.N = N}},
        {DSV3_OP_MLA_KV_FORWARD, {.N = N, .H = H, .Dv = Dv}},
        {DSV3_OP_MLA_KV_BACKWARD, {.N = N, .H = H, .Dv = Dv}},
        {DSV3_OP_ATTENTION_FORWARD, {.B = B, .T = T, .H = H, .Dqk = Dqk, .Dv = Dv}},
        {DSV3_OP_ATTENTION_BACKWARD, {.B = B, .T = T, .H = H, .Dqk = Dqk, .Dv = Dv}},
        {DSV3_OP_ADD, {.N = N * D}},
        {DSV3_OP_SWIGLU_FORWARD, {.N = N, .F = hidden}},
        {DSV3_OP_SWIGLU_BACKWARD, {.N = N, .F = hidden}},
        {DSV3_OP_ROUTER_FORWARD, {.N = N, .E = E, .K = K}},
        {DSV3_OP_ROUTER_BACKWARD, {.N = N, .E = E, .K = K}},
        {DSV3_OP_COUNTS_ACCUMULATE, {.E = E}},
        {DSV3_OP_MOE_PLAN, {.N = N, .K = K, .E = E}},
        {DSV3_OP_MOE_GATHER, {.M = M, .K = K, .D = D}},
        {DSV3_OP_MOE_GATHER_BACKWARD, {.M = M, .K = K, .D = D}},
        {DSV3_OP_MOE_COMBINE_FORWARD, {.N = N, .K = K, .D = D}},
        {DSV3_OP_MOE_COMBINE_BACKWARD, {.N = N, .K = K, .D = D}},
        {DSV3_OP_EXPERTS_FORWARD, {.E = E, .D = D, .F = F, .M = M}},
        {DSV3_OP_EXPERTS_BACKWARD, {.E = E, .D = D, .F = F, .M = M}},
        {DSV3_OP_CROSS_ENTROPY, {.N = N, .D = D, .V = V, .chunk = m->opt.loss_chunk}},
        {DSV3_OP_SUM_SQUARES, {.N = largest_group}},
        {DSV3_OP_SCALE, {.N = largest_group}},
        {DSV3_OP_EXPERT_BIAS_UPDATE, {.E = E}},
        {DSV3_OP_ADAMW_STEP, {.N = largest_group}},
    };
    *bytes = 0;
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
        size_t need = 0;
        DSV3_CALL(dsv3_workspace_bytes(&m->kernels, calls[i].op, &calls[i].shape, &need));
        if (need > *bytes) *bytes = need;
    }
    return DSV3_OK;
}

// The kernel context's workspace, sized for every op the model calls (after the parameter
// groups, whose sizes the optimizer's ops take).
static Dsv3Err create_workspace(Dsv3Model *m) {
    size_t bytes = 0;
    DSV3_CALL(workspace_bytes(m, &bytes));
    DSV3_CALL(dsv3_memory_alloc(&m->kernels, &m->kernels.workspace, bytes, "kernel workspace"));
    m->kernels.workspace_bytes = bytes;
    return DSV3_OK;
}

static Dsv3Err create_state(Dsv3Model *m) {
    const Dsv3ModelArgs *a = &m->args;
    int64_t L = a->n_layers, B = m->opt.batch, T = m->opt.seq_len, N = B * T, D = a->dim;
    int64_t R = a->qk_rope_head_dim;
    Dsv3Arena *arena = &m->arena;
    m->n_groups = (int)L + 2;
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, m->groups, m->n_groups, "parameter groups"));
    DSV3_CALL(dsv3_param_group_create(&m->groups[0], a, DSV3_GROUP_EMBEDDING, -1));
    for (int64_t l = 0; l < L; l++)
        DSV3_CALL(dsv3_param_group_create(&m->groups[1 + l], a, DSV3_GROUP_LAYER, l));
    DSV3_CALL(dsv3_param_group_create(&m->groups[L + 1], a, DSV3_GROUP_HEAD, -1));
    for (int g = 0; g < m->n_groups; g++)
        dsv3_param_group_init(&m->groups[g], a, m->opt.seed);
    DSV3_CALL(create_workspace(m));

    DSV3_CALL(DSV3_ARENA_ARRAY(arena, m->expert_bias, L, "expert bias table"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, m->tokens_per_expert, L, "token count table"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, m->acts, L, "layer activations"));
    int any_checkpointed = 0;
    for (int64_t l = 0; l < L; l++)
        any_checkpointed |= layer_mode(&m->opt, l) != DSV3_AC_NONE;
    if (any_checkpointed)
        DSV3_CALL(dsv3_layer_acts_create(&m->shared, arena, DSV3_AC_NONE, NULL, a, -1, B, T));
    for (int64_t l = 0; l < L; l++) {
        int moe = m->groups[1 + l].moe;
        DSV3_CALL(dsv3_layer_acts_create(&m->acts[l], arena, layer_mode(&m->opt, l), &m->shared, a,
                                         moe, B, T));
        if (!moe) continue;
        DSV3_CALL(DSV3_ARENA_ARRAY(arena, m->expert_bias[l], a->num_experts, "expert bias"));
        DSV3_CALL(
            DSV3_ARENA_ARRAY(arena, m->tokens_per_expert[l], a->num_experts, "tokens per expert"));
    }
    DSV3_CALL(dsv3_layer_scratch_create(&m->scratch, arena, a, B, T));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, m->tokens, N, "tokens"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, m->last, N * D, "last layer output"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, m->final_rstd, N, "final norm rstd"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, m->final_out, N * D, "final norm output"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, m->dfinal, N * D, "final norm gradient"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, m->dh, N * D, "hidden gradient"));

    // Shared context: RoPE tables for positions 0 … T-1, softmax scale, router settings.
    float *cos = NULL, *sin = NULL;
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, cos, T * R / 2, "rope cos"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, sin, T * R / 2, "rope sin"));
    DSV3_CALL(dsv3_rope_tables(&m->kernels, cos, sin, T, R, a->rope_theta, a->rope_factor,
                               a->beta_fast, a->beta_slow, a->original_seq_len));
    double scale = 1.0 / sqrt((double)(a->qk_nope_head_dim + a->qk_rope_head_dim));
    if (T > a->original_seq_len) { // YaRN's attention temperature
        double mscale = 0.1 * a->mscale * log(a->rope_factor) + 1.0;
        scale *= mscale * mscale;
    }
    int32_t *doc = NULL;
    if (a->attn_mask_type == DSV3_MASK_BLOCK_CAUSAL)
        DSV3_CALL(DSV3_ARENA_ARRAY(arena, doc, N, "document ids"));
    m->ctx = (Dsv3LayerContext){
        .kernels = &m->kernels,
        .B = B,
        .T = T,
        .rope_cos = cos,
        .rope_sin = sin,
        .softmax_scale = (float)scale,
        .doc = doc,
        .router = {.num_experts = a->num_experts,
                   .top_k = a->top_k,
                   .num_groups = a->num_expert_groups,
                   .num_limited_groups = a->num_limited_groups,
                   .sigmoid = a->score_func == DSV3_SCORE_SIGMOID,
                   .route_norm = a->route_norm,
                   .route_scale = (float)a->route_scale},
        .experts = &dsv3_local_experts,
    };
    return DSV3_OK;
}

Dsv3Err dsv3_model_create(Dsv3Model **out, const Dsv3ModelArgs *args, const Dsv3ModelOptions *opt) {
    *out = NULL;
    DSV3_CHECK(opt->batch > 0 && opt->seq_len > 0 && opt->loss_chunk > 0, DSV3_ERR_USAGE,
               "model batch (%" PRId64 "), seq_len (%" PRId64 ") and loss chunk (%" PRId64
               ") must be positive",
               opt->batch, opt->seq_len, opt->loss_chunk);
    DSV3_CALL(dsv3_model_args_validate(args));
    Dsv3Model *m = NULL;
    DSV3_CALL(dsv3_calloc((void **)&m, 1, sizeof *m, "model"));
    m->args = *args;
    m->opt = *opt;
    Dsv3Err err = dsv3_kernel_context_create(&m->kernels, DSV3_BACKEND_CPU, MODEL_NO_DEVICE);
    if (err == DSV3_OK) err = create_state(m);
    if (err != DSV3_OK) {
        dsv3_model_destroy(m);
        return dsv3_error_trace(err, __FILE__, __LINE__, __func__);
    }
    *out = m;
    return DSV3_OK;
}

void dsv3_model_destroy(Dsv3Model *m) {
    if (!m) return;
    for (int g = 0; g < m->n_groups && m->groups; g++)
        dsv3_param_group_destroy(&m->groups[g]);
    dsv3_arena_destroy(&m->arena);
    if (m->kernels.ops) (void)dsv3_memory_free(&m->kernels, m->kernels.workspace);
    dsv3_kernel_context_destroy(&m->kernels);
    dsv3_free(m);
}

const Dsv3ModelArgs *dsv3_model_args(const Dsv3Model *m) { return &m->args; }

const Dsv3KernelContext *dsv3_model_kernel_context(const Dsv3Model *m) { return &m->kernels; }

Dsv3ParamGroup *dsv3_model_groups(Dsv3Model *m, int *count) {
    *count = m->n_groups;
    return m->groups;
}

Dsv3Param *dsv3_model_find(Dsv3Model *m, const char *fqn) {
    for (int g = 0; g < m->n_groups; g++)
        for (int s = 0; s < DSV3_PARAM_SLOT_COUNT; s++) {
            Dsv3Param *p = &m->groups[g].params[s];
            if (p->numel && strcmp(p->fqn, fqn) == 0) return p;
        }
    return NULL;
}

float *dsv3_model_expert_bias(Dsv3Model *m, int64_t layer) { return m->expert_bias[layer]; }

int64_t *dsv3_model_tokens_per_expert(Dsv3Model *m, int64_t layer) {
    return m->tokens_per_expert[layer];
}

Dsv3Err dsv3_model_forward(Dsv3Model *m, const int32_t *tokens) {
    const Dsv3ModelArgs *a = &m->args;
    const Dsv3KernelContext *kc = &m->kernels;
    int64_t N = m->opt.batch * m->opt.seq_len, L = a->n_layers;
    DSV3_CALL(dsv3_tokens_check(kc, tokens, N, a->vocab_size));
    DSV3_CALL(dsv3_memory_copy(kc, m->tokens, tokens, (size_t)N * sizeof *tokens,
                               DSV3_COPY_HOST_TO_DEVICE));
    // Document ids of the block-causal mask: torchtitan's get_document_mask_mod.
    if (m->ctx.doc)
        DSV3_CALL(dsv3_document_ids(kc, (int32_t *)m->ctx.doc, m->tokens, m->opt.batch,
                                    m->opt.seq_len, m->opt.eos_id));
    DSV3_CALL(dsv3_embedding_forward(kc, F32, m->acts[0].x, m->tokens,
                                     m->groups[0].params[DSV3_P_TOK_EMBEDDINGS].data, N, a->dim,
                                     a->vocab_size));
    for (int64_t l = 0; l < L; l++) {
        float *out = l + 1 < L ? m->acts[l + 1].x : m->last;
        DSV3_CALL(dsv3_layer_forward(out, m->acts[l].x, &m->acts[l], &m->groups[1 + l], a,
                                     m->expert_bias[l], &m->ctx, &m->scratch));
        if (m->tokens_per_expert[l])
            DSV3_CALL(dsv3_counts_accumulate(kc, m->tokens_per_expert[l], m->acts[l].counts,
                                             a->num_experts));
    }
    const Dsv3ParamGroup *head = &m->groups[L + 1];
    DSV3_CALL(dsv3_rmsnorm_forward(kc, F32, m->final_out, m->final_rstd, m->last,
                                   head->params[DSV3_P_NORM].data, N, a->dim, FINAL_NORM_EPS));
    return DSV3_OK;
}

Dsv3Err dsv3_model_logits(Dsv3Model *m, float *logits) {
    int64_t N = m->opt.batch * m->opt.seq_len;
    const Dsv3Param *output = &m->groups[m->args.n_layers + 1].params[DSV3_P_OUTPUT];
    return dsv3_linear_forward(&m->kernels, F32, logits, m->final_out, output->data, N, m->args.dim,
                               m->args.vocab_size);
}

Dsv3Err dsv3_model_backward(Dsv3Model *m, const int32_t *labels, float grad_scale, double *loss_sum,
                            int64_t *n_labels) {
    const Dsv3ModelArgs *a = &m->args;
    const Dsv3KernelContext *kc = &m->kernels;
    int64_t N = m->opt.batch * m->opt.seq_len, L = a->n_layers, D = a->dim;
    *n_labels = 0;
    DSV3_CALL(dsv3_labels_count(kc, n_labels, labels, N));
    Dsv3ParamGroup *head = &m->groups[L + 1];
    Dsv3Param *output = &head->params[DSV3_P_OUTPUT], *norm = &head->params[DSV3_P_NORM];
    int train = grad_scale != 0.0f;
    *loss_sum = 0;
    DSV3_CALL(dsv3_cross_entropy(kc, F32, loss_sum, train ? m->dfinal : NULL,
                                 train ? output->grad : NULL, m->final_out, output->data, labels, N,
                                 D, a->vocab_size, grad_scale, m->opt.loss_chunk));
    if (!train) return DSV3_OK;
    DSV3_CALL(dsv3_rmsnorm_backward(kc, F32, m->dh, norm->grad, m->dfinal, m->last, norm->data,
                                    m->final_rstd, N, D));
    for (int64_t l = L - 1; l >= 0; l--)
        DSV3_CALL(dsv3_layer_backward(m->dh, m->dh, &m->acts[l], &m->groups[1 + l], a,
                                      m->expert_bias[l], &m->ctx, &m->scratch, &m->shared));
    DSV3_CALL(dsv3_embedding_backward(kc, F32, m->groups[0].params[DSV3_P_TOK_EMBEDDINGS].grad,
                                      m->dh, m->tokens, N, D, a->vocab_size));
    return DSV3_OK;
}

int64_t dsv3_model_activation_bytes(const Dsv3Model *m) {
    return (int64_t)(m->arena.bytes + m->kernels.workspace_bytes);
}
