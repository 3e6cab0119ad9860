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

struct Dsv3Model {
    Dsv3ModelArgs args;
    Dsv3ModelOptions opt;
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
    DSV3_CALL(dsv3_rope_tables(cos, sin, T, R, a->rope_theta, a->rope_factor, a->beta_fast,
                               a->beta_slow, a->original_seq_len));
    double scale = 1.0 / sqrt((double)(a->qk_nope_head_dim + a->qk_rope_head_dim));
    if (T > a->original_seq_len) { // YaRN's attention temperature
        double mscale = 0.1 * a->mscale * log(a->rope_factor) + 1.0;
        scale *= mscale * mscale;
    }
    int32_t *doc = NULL;
    if (a->attn_mask_type == DSV3_MASK_BLOCK_CAUSAL)
        DSV3_CALL(DSV3_ARENA_ARRAY(arena, doc, N, "document ids"));
    m->ctx = (Dsv3LayerContext){
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
    Dsv3Err err = create_state(m);
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
    dsv3_free(m);
}

const Dsv3ModelArgs *dsv3_model_args(const Dsv3Model *m) { return &m->args; }

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

// Document ids as torchtitan's get_document_mask_mod: a position belongs to the document
// that the last EOS before it closed; the EOS itself ends its own document.
static void document_ids(int32_t *doc, const int32_t *tokens, int64_t B, int64_t T, int32_t eos) {
    for (int64_t b = 0; b < B; b++) {
        int32_t id = 0;
        for (int64_t t = 0; t < T; t++) {
            doc[b * T + t] = id;
            if (tokens[b * T + t] == eos) id++;
        }
    }
}

Dsv3Err dsv3_model_forward(Dsv3Model *m, const int32_t *tokens) {
    const Dsv3ModelArgs *a = &m->args;
    int64_t N = m->opt.batch * m->opt.seq_len, L = a->n_layers;
    for (int64_t n = 0; n < N; n++)
        DSV3_CHECK(tokens[n] >= 0 && tokens[n] < a->vocab_size, DSV3_ERR_USAGE,
                   "token %" PRId32 " at position %" PRId64 " of the micro-batch is outside the "
                   "vocabulary [0, %" PRId64 ")",
                   tokens[n], n, a->vocab_size);
    memcpy(m->tokens, tokens, (size_t)N * sizeof *tokens);
    if (m->ctx.doc)
        document_ids((int32_t *)m->ctx.doc, tokens, m->opt.batch, m->opt.seq_len, m->opt.eos_id);
    DSV3_CALL(dsv3_embedding_forward(m->acts[0].x, tokens,
                                     m->groups[0].params[DSV3_P_TOK_EMBEDDINGS].data, N, a->dim,
                                     a->vocab_size));
    for (int64_t l = 0; l < L; l++) {
        float *out = l + 1 < L ? m->acts[l + 1].x : m->last;
        DSV3_CALL(dsv3_layer_forward(out, m->acts[l].x, &m->acts[l], &m->groups[1 + l], a,
                                     m->expert_bias[l], &m->ctx, &m->scratch));
        if (m->tokens_per_expert[l])
            for (int64_t e = 0; e < a->num_experts; e++)
                m->tokens_per_expert[l][e] += m->acts[l].counts[e];
    }
    const Dsv3ParamGroup *head = &m->groups[L + 1];
    DSV3_CALL(dsv3_rmsnorm_forward(m->final_out, m->final_rstd, m->last,
                                   head->params[DSV3_P_NORM].data, N, a->dim, FINAL_NORM_EPS));
    return DSV3_OK;
}

Dsv3Err dsv3_model_logits(Dsv3Model *m, float *logits) {
    int64_t N = m->opt.batch * m->opt.seq_len;
    const Dsv3Param *output = &m->groups[m->args.n_layers + 1].params[DSV3_P_OUTPUT];
    return dsv3_linear_forward(logits, m->final_out, output->data, N, m->args.dim,
                               m->args.vocab_size);
}

Dsv3Err dsv3_model_backward(Dsv3Model *m, const int32_t *labels, float grad_scale, double *loss_sum,
                            int64_t *n_labels) {
    const Dsv3ModelArgs *a = &m->args;
    int64_t N = m->opt.batch * m->opt.seq_len, L = a->n_layers, D = a->dim;
    *n_labels = 0;
    for (int64_t n = 0; n < N; n++)
        *n_labels += labels[n] != DSV3_IGNORE_INDEX;
    Dsv3ParamGroup *head = &m->groups[L + 1];
    Dsv3Param *output = &head->params[DSV3_P_OUTPUT], *norm = &head->params[DSV3_P_NORM];
    int train = grad_scale != 0.0f;
    *loss_sum = 0;
    DSV3_CALL(dsv3_cross_entropy(loss_sum, train ? m->dfinal : NULL, train ? output->grad : NULL,
                                 m->final_out, output->data, labels, N, D, a->vocab_size,
                                 grad_scale, m->opt.loss_chunk));
    if (!train) return DSV3_OK;
    DSV3_CALL(dsv3_rmsnorm_backward(m->dh, norm->grad, m->dfinal, m->last, norm->data,
                                    m->final_rstd, N, D));
    for (int64_t l = L - 1; l >= 0; l--)
        DSV3_CALL(dsv3_layer_backward(m->dh, m->dh, &m->acts[l], &m->groups[1 + l], a,
                                      m->expert_bias[l], &m->ctx, &m->scratch, &m->shared));
    DSV3_CALL(dsv3_embedding_backward(m->groups[0].params[DSV3_P_TOK_EMBEDDINGS].grad, m->dh,
                                      m->tokens, N, D, a->vocab_size));
    return DSV3_OK;
}

int64_t dsv3_model_activation_bytes(const Dsv3Model *m) { return (int64_t)m->arena.bytes; }
