// model: one pipeline stage's forward and backward over its layers, through its services.
// Legend as in model.h; L the stage's layers.
#include "model.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/core/alloc.h"
#include "common/core/arena.h"

// torchtitan's final norm is nn.RMSNorm(dim) without eps: torch.finfo(float32).eps.
static const float FINAL_NORM_EPS = FLT_EPSILON;

// Slots of the kernel context's scalars (kernels.h) that the loss and label count pass through.
enum { MODEL_SCALAR_LOSS, MODEL_SCALAR_LABELS };

// What one micro-batch in flight keeps between its forward and its backward.
typedef struct {
    int32_t *tokens;          // (N) first stage: the forward's tokens (this rank's)
    int32_t *doc;             // (B, T) document ids of the whole sequences, or NULL (causal)
    Dsv3LayerActs *acts;      // (L) per layer; acts[0].x is the stage input
    float *last;              // (Nl, D) the last layer's output: the stage output
    float *final_rstd;        // (Nl) last stage
    float *final_out;         // (N, D) last stage: after the final norm (every tp rank's rows)
    int32_t *ring_pos;        // cp_ring: (cp, B, T / cp) this rank's tokens' places among each
    int32_t *ring_doc;        // rank's keys, and (cp, B, T / cp) their document ids (layer.h)
    Dsv3WeightGrads deferred; // split_backward: the weight gradients its backward deferred
} Slot;

struct Dsv3Model {
    Dsv3ModelArgs args;
    Dsv3ModelOptions opt;
    Dsv3ModelServices services;
    Dsv3StageRange range; // the store's
    int group_embedding;  // store group indices, or -1
    int group_head;
    int *group_layer;             // (L)
    float **expert_bias;          // (L) per layer: (E) or NULL (dense layers)
    int64_t **tokens_per_expert;  // (L) per layer: (E) or NULL
    Dsv3Arena arena;              // activations, scratch, tables
    Dsv3ArenaMemory arena_memory; // the arena's arrays: the kernel context's memory
    Slot *slots;                  // (opt.slots)
    Dsv3LayerActs shared;         // recomputation buffers of checkpointed layers
    Dsv3LayerScratch scratch;
    Dsv3LayerContext ctx;
    float *dfinal;               // (N, D) last stage (partial under tp)
    float *dh;                   // (Nl, D) gradient flowing down the layers
    int64_t tp, tp_rank;         // tensor-parallel degree and rank of the store's groups
    int64_t cp, cp_rank;         // context-parallel degree and rank (the collectives' cp group)
    int32_t *labels;             // (N) cp > 1: this rank's labels of a backward
    float *head_logits;          // (loss_chunk, V/tp) last stage with tp > 1: a chunk's logits;
                                 // (tp, loss_chunk, V/tp) every tp rank's when gathered
    float *head_max;             // (loss_chunk) their rows' maxima (loss parallel)
    double *head_sums;           // (2 loss_chunk) sums of exponentials and target logits
    float *head_whole;           // (loss_chunk, V) gathered logits (opt.gather_logits)
    struct LocalServices *local; // dsv3_model_create_local's services, owned by the model
};

// The services of a whole model on one process (dsv3_model_create_local). They live at fixed
// addresses (the model and the experts point into them), hence their own allocation.
typedef struct LocalServices {
    Dsv3KernelContext kernels;
    void *workspace;
    Dsv3ParamStore *store;
    Dsv3LocalExperts experts;
} LocalServices;

static Dsv3AcMode layer_mode(const Dsv3ModelOptions *o, int64_t layer) {
    if (o->ac_every > 0) return (layer + 1) % o->ac_every == 0 ? DSV3_AC_FULL : DSV3_AC_NONE;
    return o->ac_mode;
}

// Tokens of the micro-batch's whole sequences, and this rank's share of them (cp > 1: its
// positions of each sequence).
static int64_t sequence_tokens(const Dsv3Model *m) { return m->opt.batch * m->opt.seq_len; }
static int64_t n_tokens(const Dsv3Model *m) { return sequence_tokens(m) / m->cp; }

// The context-parallel degree an options struct asks for.
static int64_t options_cp(const Dsv3ModelOptions *opt) { return opt->cp > 1 ? opt->cp : 1; }

// dst (B, T / cp) rows of `row_bytes` = this rank's positions of src (B, T) (layer.h: chunks
// cp_rank and 2·cp − 1 − cp_rank of 2·cp); cp 1: a copy.
static Dsv3Err cp_take(const Dsv3Model *m, void *dst, const void *src, int64_t B,
                       size_t row_bytes) {
    const int64_t T = m->opt.seq_len, C = T / (2 * m->cp);
    for (int64_t b = 0; b < B; b++)
        for (int64_t half = 0; half < 2; half++) {
            const int64_t chunk = dsv3_layer_cp_chunk(m->cp, m->cp_rank, half);
            DSV3_CALL(dsv3_memory_copy(m->services.kernels,
                                       (char *)dst + (size_t)(b * 2 * C + half * C) * row_bytes,
                                       (const char *)src + (size_t)(b * T + chunk * C) * row_bytes,
                                       (size_t)C * row_bytes, DSV3_COPY_DEVICE_TO_DEVICE));
        }
    return DSV3_OK;
}

// This rank's rows of the micro-batch (sequence parallelism: the tp ranks split its tokens).
static int64_t n_rows(const Dsv3Model *m) { return n_tokens(m) / m->tp; }

// Where the slot's stage input goes: the first layer's input, or, on a stage without layers,
// the stage output itself.
static float *stage_input(const Dsv3Model *m, const Slot *s) {
    return m->range.n_layers > 0 ? s->acts[0].x : s->last;
}

// split_backward: the slot's queue, with room for every layer's deferred weight gradients.
static Dsv3Err create_deferred(Dsv3Model *m, Slot *s) {
    const Dsv3ModelArgs *a = &m->args;
    const int64_t L = m->range.n_layers, T = m->opt.seq_len / m->cp;
    int64_t floats = 0;
    for (int64_t i = 0; i < L; i++) {
        const int64_t layer = m->range.first_layer + i;
        floats +=
            dsv3_layer_deferred_floats(a, layer >= a->n_dense_layers, layer_mode(&m->opt, layer),
                                       m->opt.batch, T, m->tp, m->cp, m->opt.cp_ring);
    }
    return dsv3_layer_weight_grads_create(&s->deferred, &m->arena, L * DSV3_LAYER_DEFERRED_MAX,
                                          floats);
}

static Dsv3Err create_slot(Dsv3Model *m, Slot *s) {
    const Dsv3ModelArgs *a = &m->args;
    int64_t L = m->range.n_layers, B = m->opt.batch, T = m->opt.seq_len / m->cp;
    int64_t N = n_tokens(m), Nl = n_rows(m), D = a->dim;
    Dsv3Arena *arena = &m->arena;
    if (m->range.first) DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->tokens, N, "tokens"));
    if (a->attn_mask_type == DSV3_MASK_BLOCK_CAUSAL)
        DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->doc, sequence_tokens(m), "document ids"));
    if (m->cp > 1 && m->opt.cp_ring) {
        DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->ring_pos, m->cp * N, "ring positions"));
        if (s->doc) DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->ring_doc, m->cp * N, "ring documents"));
    }
    DSV3_CALL(DSV3_ARENA_TABLE(arena, s->acts, L, "layer activations"));
    for (int64_t i = 0; i < L; i++) {
        int64_t layer = m->range.first_layer + i;
        DSV3_CALL(dsv3_layer_acts_create(&s->acts[i], arena, layer_mode(&m->opt, layer), &m->shared,
                                         a, layer >= a->n_dense_layers, m->range.routed, B, T,
                                         m->tp, m->cp, m->opt.cp_ring));
    }
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->last, Nl * D, "stage output"));
    if (m->range.last) {
        DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->final_rstd, Nl, "final norm rstd"));
        DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->final_out, N * D, "final norm output"));
    }
    if (m->opt.split_backward) DSV3_CALL(create_deferred(m, s));
    return DSV3_OK;
}

// The store's group of (kind, layer), which the stage must have.
static Dsv3Err find_group(const Dsv3Model *m, Dsv3GroupKind kind, int64_t layer, int *out) {
    *out = dsv3_param_store_find(m->services.params, kind, layer);
    DSV3_CHECK(*out >= 0, DSV3_ERR_USAGE,
               "model: the parameter store has no %s group for layer %" PRId64
               " of this stage (layers %" PRId64 "-%" PRId64 ")",
               dsv3_group_kind_name(kind), layer, m->range.first_layer,
               m->range.first_layer + m->range.n_layers - 1);
    return DSV3_OK;
}

// The position in its sequence of token i of cp rank `rank` (cp_take's order).
static int64_t cp_position(const Dsv3Model *m, int64_t rank, int64_t i) {
    const int64_t C = m->opt.seq_len / (2 * m->cp);
    return dsv3_layer_cp_chunk(m->cp, rank, i / C) * C + i % C;
}

// Context parallelism's positions of this rank in q_pos (B, T / cp), the same for every
// sequence, and its rows of the RoPE tables (T, R/2) in cos, sin (T / cp, R/2).
static Dsv3Err cp_positions(Dsv3Model *m, int32_t *q_pos, float *cos, float *sin,
                            const float *cos_all, const float *sin_all) {
    const int64_t B = m->opt.batch, Tl = m->opt.seq_len / m->cp, R = m->args.qk_rope_head_dim;
    int32_t *host = NULL;
    DSV3_CALL(dsv3_alloc((void **)&host, (size_t)(B * Tl) * sizeof *host, "positions"));
    for (int64_t n = 0; n < B * Tl; n++)
        host[n] = (int32_t)cp_position(m, m->cp_rank, n % Tl);
    Dsv3Err err = dsv3_memory_copy(m->services.kernels, q_pos, host,
                                   (size_t)(B * Tl) * sizeof *host, DSV3_COPY_HOST_TO_DEVICE);
    dsv3_free(host);
    DSV3_CALL(err);
    DSV3_CALL(cp_take(m, cos, cos_all, 1, (size_t)(R / 2) * sizeof(float)));
    return cp_take(m, sin, sin_all, 1, (size_t)(R / 2) * sizeof(float));
}

static Dsv3Err create_state(Dsv3Model *m) {
    const Dsv3ModelArgs *a = &m->args;
    int64_t L = m->range.n_layers, B = m->opt.batch, T = m->opt.seq_len, Tl = T / m->cp;
    int64_t N = n_tokens(m), D = a->dim;
    int64_t R = a->qk_rope_head_dim;
    Dsv3Arena *arena = &m->arena;
    m->group_embedding = m->group_head = -1;
    if (m->range.first) DSV3_CALL(find_group(m, DSV3_GROUP_EMBEDDING, -1, &m->group_embedding));
    if (m->range.last) DSV3_CALL(find_group(m, DSV3_GROUP_HEAD, -1, &m->group_head));
    DSV3_CALL(DSV3_ARENA_TABLE(arena, m->group_layer, L, "layer group table"));
    DSV3_CALL(DSV3_ARENA_TABLE(arena, m->expert_bias, L, "expert bias table"));
    DSV3_CALL(DSV3_ARENA_TABLE(arena, m->tokens_per_expert, L, "token count table"));
    int any_checkpointed = 0, any_moe = 0;
    for (int64_t i = 0; i < L; i++) {
        int64_t layer = m->range.first_layer + i;
        DSV3_CALL(find_group(m, DSV3_GROUP_LAYER, layer, &m->group_layer[i]));
        any_checkpointed |= layer_mode(&m->opt, layer) != DSV3_AC_NONE;
        if (layer < a->n_dense_layers) continue;
        any_moe = 1;
        DSV3_CALL(DSV3_ARENA_ARRAY(arena, m->expert_bias[i], a->num_experts, "expert bias"));
        DSV3_CALL(
            DSV3_ARENA_ARRAY(arena, m->tokens_per_expert[i], a->num_experts, "tokens per expert"));
    }
    DSV3_CHECK(!any_moe || m->services.experts, DSV3_ERR_USAGE,
               "model: layers %" PRId64 "-%" PRId64 " include MoE layers but no experts service "
               "was given",
               m->range.first_layer, m->range.first_layer + L - 1);
    if (any_checkpointed)
        DSV3_CALL(dsv3_layer_acts_create(&m->shared, arena, DSV3_AC_NONE, NULL, a, -1,
                                         m->range.routed, B, Tl, m->tp, m->cp, m->opt.cp_ring));
    DSV3_CALL(DSV3_ARENA_TABLE(arena, m->slots, m->opt.slots, "activation slots"));
    for (int64_t k = 0; k < m->opt.slots; k++)
        DSV3_CALL(create_slot(m, &m->slots[k]));
    DSV3_CALL(
        dsv3_layer_scratch_create(&m->scratch, arena, a, B, Tl, m->tp, m->cp, m->opt.cp_ring));
    if (m->range.last && m->cp > 1) DSV3_CALL(DSV3_ARENA_ARRAY(arena, m->labels, N, "labels"));
    if (m->range.last) DSV3_CALL(DSV3_ARENA_ARRAY(arena, m->dfinal, N * D, "final norm gradient"));
    if (m->range.last && m->tp > 1) {
        int64_t chunk = m->opt.loss_chunk < N ? m->opt.loss_chunk : N, start = 0, vocab = 0;
        dsv3_param_chunk(a->vocab_size, m->tp, 0, &start, &vocab); // the first slice: the largest
        if (m->opt.gather_logits) {
            DSV3_CALL(DSV3_ARENA_ARRAY(arena, m->head_logits, m->tp * chunk * vocab,
                                       "head logits chunk of every tp rank"));
            DSV3_CALL(DSV3_ARENA_ARRAY(arena, m->head_whole, chunk * a->vocab_size,
                                       "head logits chunk, whole vocabulary"));
        } else {
            DSV3_CALL(DSV3_ARENA_ARRAY(arena, m->head_logits, chunk * vocab, "head logits chunk"));
            DSV3_CALL(DSV3_ARENA_ARRAY(arena, m->head_max, chunk, "head logits maxima"));
            DSV3_CALL(DSV3_ARENA_ARRAY(arena, m->head_sums, 2 * chunk, "head logits sums"));
        }
    }
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, m->dh, n_rows(m) * D, "hidden gradient"));

    // Shared context: RoPE tables for positions 0 … T-1 (under cp, this rank's rows of them and
    // its positions), softmax scale, router settings.
    float *cos = NULL, *sin = NULL, *cos_local = NULL, *sin_local = NULL;
    int32_t *q_pos = NULL;
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, cos, T * R / 2, "rope cos"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, sin, T * R / 2, "rope sin"));
    if (m->cp > 1) {
        DSV3_CALL(DSV3_ARENA_ARRAY(arena, cos_local, Tl * R / 2, "rope cos of this rank"));
        DSV3_CALL(DSV3_ARENA_ARRAY(arena, sin_local, Tl * R / 2, "rope sin of this rank"));
        DSV3_CALL(DSV3_ARENA_ARRAY(arena, q_pos, B * Tl, "positions of this rank"));
    }
    const Dsv3KernelContext *k = m->services.kernels;
    if (!arena->measure) { // a plan (dsv3_model_plan_activation_bytes) has no tables to fill
        DSV3_CALL(dsv3_rope_tables(k, cos, sin, T, R, a->rope_theta, a->rope_factor, a->beta_fast,
                                   a->beta_slow, a->original_seq_len));
        if (m->cp > 1) DSV3_CALL(cp_positions(m, q_pos, cos_local, sin_local, cos, sin));
    }
    double scale = 1.0 / sqrt((double)(a->qk_nope_head_dim + a->qk_rope_head_dim));
    if (T > a->original_seq_len) { // YaRN's attention temperature
        double mscale = 0.1 * a->mscale * log(a->rope_factor) + 1.0;
        scale *= mscale * mscale;
    }
    m->ctx = (Dsv3LayerContext){
        .kernels = k,
        .B = B,
        .T = Tl,
        .rope_cos = m->cp > 1 ? cos_local : cos,
        .rope_sin = m->cp > 1 ? sin_local : sin,
        .softmax_scale = (float)scale,
        .router = {.num_experts = a->num_experts,
                   .top_k = a->top_k,
                   .num_groups = a->num_expert_groups,
                   .num_limited_groups = a->num_limited_groups,
                   .sigmoid = a->score_func == DSV3_SCORE_SIGMOID,
                   .route_norm = a->route_norm,
                   .route_scale = (float)a->route_scale},
        .experts = m->services.experts,
        .tp = m->tp,
        .tp_rank = m->tp_rank,
        .collectives = m->services.collectives,
        .cp = m->cp,
        .cp_rank = m->cp_rank,
        .cp_ring = m->opt.cp_ring,
        .q_pos = q_pos,
    };
    return DSV3_OK;
}

static Dsv3Err check_options(const Dsv3ModelOptions *opt, const Dsv3ModelServices *services) {
    DSV3_CHECK(opt->batch > 0 && opt->seq_len > 0 && opt->loss_chunk > 0 && opt->slots > 0,
               DSV3_ERR_USAGE,
               "model batch (%" PRId64 "), seq_len (%" PRId64 "), loss chunk (%" PRId64
               ") and activation slots (%" PRId64 ") must be positive",
               opt->batch, opt->seq_len, opt->loss_chunk, opt->slots);
    const int64_t cp = options_cp(opt);
    DSV3_CHECK(cp == 1 || opt->seq_len % (2 * cp) == 0, DSV3_ERR_USAGE,
               "model: seq_len %" PRId64 " does not split into 2 × cp = %" PRId64
               " equal chunks for context parallelism",
               opt->seq_len, 2 * cp);
    DSV3_CHECK(services->kernels && services->params && services->collectives, DSV3_ERR_USAGE,
               "model: the kernel context, the parameter store and the collectives are required");
    const Dsv3StageRange *r = &services->params->range;
    // A stage may hold the embedding or the head alone (torchtitan's split gives the last of
    // many stages the final norm and output head only).
    DSV3_CHECK(r->dense && (r->n_layers >= 1 || r->first || r->last), DSV3_ERR_USAGE,
               "model: the parameter store holds no layers of a stage (dense %d, %" PRId64
               " layers)",
               r->dense, r->n_layers);
    int has_moe =
        r->n_layers > 0 && r->first_layer + r->n_layers > services->params->args.n_dense_layers;
    DSV3_CHECK(services->experts || !has_moe, DSV3_ERR_USAGE,
               "model: the stage has MoE layers but no routed experts to call");
    return DSV3_OK;
}

// The ops a forward, a backward and an optimizer step call, each with the shapes it is called
// with (the fields of its signature; element counts without a field of their own go in N).
// Their largest workspace is the model's.
Dsv3Err dsv3_model_workspace_bytes(const Dsv3KernelContext *kernels, const Dsv3ModelArgs *a,
                                   const Dsv3ModelOptions *opt, const Dsv3ParamStore *params,
                                   size_t *bytes) {
    const int64_t B = opt->batch, T = opt->seq_len, Tl = T / options_cp(opt), N = B * Tl;
    const int64_t D = a->dim, V = a->vocab_size;
    const int64_t H = a->n_heads, Dqk = a->qk_nope_head_dim + a->qk_rope_head_dim;
    const int64_t Dv = a->v_head_dim, E = a->num_experts, K = a->top_k, M = N * K;
    const int64_t F = a->moe_inter_dim, Fs = F * a->num_shared_experts, I = a->inter_dim;
    const int64_t hidden = I > Fs ? I : Fs;
    int64_t largest_group = 0; // the optimizer's ops run over the store's shards
    for (int g = 0; g < params->n_groups; g++)
        if (params->groups[g].shard_numel > largest_group)
            largest_group = params->groups[g].shard_numel;
    const struct {
        Dsv3Op op;
        Dsv3OpShape shape;
    } calls[] = {
        {DSV3_OP_ROPE_TABLES, {.T = T}},
        {DSV3_OP_TOKENS_CHECK, {.N = B * T, .V = V}},
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
        {DSV3_OP_ROPE_FORWARD, {.B = B, .T = Tl, .H = H}},
        {DSV3_OP_ROPE_BACKWARD, {.B = B, .T = Tl, .H = H}},
        {DSV3_OP_COPY_COLUMNS, {.N = N}},
        {DSV3_OP_MLA_KV_FORWARD, {.N = N, .H = H, .Dv = Dv}},
        {DSV3_OP_MLA_KV_BACKWARD, {.N = N, .H = H, .Dv = Dv}},
        {DSV3_OP_ATTENTION_FORWARD, {.B = B, .Tq = Tl, .Tk = T, .H = H, .Dqk = Dqk, .Dv = Dv}},
        {DSV3_OP_ATTENTION_BACKWARD, {.B = B, .Tq = Tl, .Tk = T, .H = H, .Dqk = Dqk, .Dv = Dv}},
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
        {DSV3_OP_CROSS_ENTROPY, {.N = N, .D = D, .V = V, .chunk = opt->loss_chunk}},
        {DSV3_OP_CROSS_ENTROPY_LOGITS, {.N = opt->loss_chunk < N ? opt->loss_chunk : N, .V = V}},
        {DSV3_OP_SUM_SQUARES, {.N = largest_group}},
        {DSV3_OP_SCALE, {.N = largest_group}},
        {DSV3_OP_EXPERT_BIAS_UPDATE, {.E = E}},
        {DSV3_OP_ADAMW_STEP, {.N = largest_group}},
    };
    *bytes = 0;
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
        size_t need = 0;
        DSV3_CALL(dsv3_workspace_bytes(kernels, calls[i].op, &calls[i].shape, &need));
        if (need > *bytes) *bytes = need;
    }
    return DSV3_OK;
}

// The tensor-parallel cut of the store's groups (the same for all).
static void store_tp(const Dsv3ModelServices *services, int64_t *tp, int64_t *tp_rank) {
    const Dsv3ParamStore *st = services->params;
    *tp = st->n_groups > 0 ? st->groups[0].spec.tp : 1;
    *tp_rank = st->n_groups > 0 ? st->groups[0].spec.tp_rank : 0;
}

// The collectives' cp group has cp ranks: this rank's place in it.
static Dsv3Err check_context_parallel(Dsv3Model *m) {
    m->cp = options_cp(&m->opt);
    if (m->cp == 1) return DSV3_OK;
    Dsv3Collectives *c = m->services.collectives;
    int64_t size = 0;
    DSV3_CALL(c->group(c, DSV3_GROUP_CP, &size, &m->cp_rank));
    DSV3_CHECK(size == m->cp, DSV3_ERR_USAGE,
               "model: built for context-parallel degree %" PRId64
               ", but this rank's cp group has %" PRId64 " ranks",
               m->cp, size);
    return DSV3_OK;
}

// With tp > 1, the collectives' tp group has tp ranks.
static Dsv3Err check_tensor_parallel(const Dsv3Model *m) {
    if (m->tp == 1) return DSV3_OK;
    Dsv3Collectives *c = m->services.collectives;
    int64_t size = 0, rank = 0;
    DSV3_CALL(c->group(c, DSV3_GROUP_TP, &size, &rank));
    DSV3_CHECK(size == m->tp && rank == m->tp_rank, DSV3_ERR_USAGE,
               "model: the parameters are cut for tp rank %" PRId64 " of %" PRId64
               ", but this rank is %" PRId64 " of a tp group of %" PRId64,
               m->tp_rank, m->tp, rank, size);
    DSV3_CHECK(n_tokens(m) % m->tp == 0, DSV3_ERR_USAGE,
               "model: a micro-batch of %" PRId64 " tokens does not split over %" PRId64
               " tp ranks",
               n_tokens(m), m->tp);
    return DSV3_OK;
}

// The arena's arrays (activations, scratch, expert-load state) in the kernel context's memory.
static Dsv3Err model_memory_alloc_zeroed(void *kernels, void **out, size_t bytes,
                                         const char *what) {
    DSV3_CALL(dsv3_memory_alloc(kernels, out, bytes, what));
    Dsv3Err err = dsv3_memory_zero(kernels, *out, bytes);
    if (err != DSV3_OK) {
        (void)dsv3_memory_free(kernels, *out);
        *out = NULL;
        return dsv3_error_trace(err, __FILE__, __LINE__, __func__);
    }
    return DSV3_OK;
}

static void model_memory_release(void *kernels, void *ptr) { (void)dsv3_memory_free(kernels, ptr); }

Dsv3Err dsv3_model_create(Dsv3Model **out, const Dsv3ModelArgs *args, const Dsv3ModelOptions *opt,
                          const Dsv3ModelServices *services) {
    *out = NULL;
    DSV3_CALL(check_options(opt, services));
    DSV3_CALL(dsv3_model_args_validate(args));
    size_t need = 0;
    DSV3_CALL(dsv3_model_workspace_bytes(services->kernels, args, opt, services->params, &need));
    DSV3_CHECK(services->kernels->workspace_bytes >= need, DSV3_ERR_USAGE,
               "model: the kernel context's workspace has %zu bytes, the model's ops need %zu "
               "(size it with dsv3_model_workspace_bytes)",
               services->kernels->workspace_bytes, need);
    Dsv3Model *m = NULL;
    DSV3_CALL(dsv3_calloc((void **)&m, 1, sizeof *m, "model"));
    m->args = *args;
    m->opt = *opt;
    m->services = *services;
    m->range = services->params->range;
    m->arena_memory = (Dsv3ArenaMemory){(void *)services->kernels, model_memory_alloc_zeroed,
                                        model_memory_release};
    m->arena.memory = &m->arena_memory;
    store_tp(services, &m->tp, &m->tp_rank);
    Dsv3Err err = check_context_parallel(m);
    if (err == DSV3_OK) err = check_tensor_parallel(m);
    if (err == DSV3_OK) err = create_state(m);
    if (err != DSV3_OK) {
        dsv3_model_destroy(m);
        return dsv3_error_trace(err, __FILE__, __LINE__, __func__);
    }
    *out = m;
    return DSV3_OK;
}

// Experts that are never called: a plan's model only lays out its activations.
static Dsv3Experts planned_experts;

Dsv3Err dsv3_model_plan_activation_bytes(const Dsv3ModelArgs *args, const Dsv3ModelOptions *opt,
                                         const Dsv3StageRange *range, int64_t tp, int64_t *bytes) {
    *bytes = 0;
    Dsv3ParamStore store = {.args = *args, .range = *range};
    store.n_groups = dsv3_param_stage_group_count(args, range);
    DSV3_CALL(dsv3_calloc((void **)&store.groups, (size_t)(store.n_groups ? store.n_groups : 1),
                          sizeof *store.groups, "planned groups"));
    Dsv3Model m = {.args = *args,
                   .opt = *opt,
                   .services = {.params = &store, .experts = &planned_experts},
                   .range = *range,
                   .tp = tp,
                   .cp = options_cp(opt),
                   .arena = {.measure = 1}};
    Dsv3Err err = dsv3_param_stage_groups(args, range, &dsv3_shard_none, store.groups);
    if (err == DSV3_OK) err = create_state(&m);
    *bytes = (int64_t)m.arena.bytes;
    dsv3_arena_destroy(&m.arena);
    dsv3_free(store.groups);
    DSV3_CALL(err);
    return DSV3_OK;
}

static void local_services_destroy(LocalServices *l) {
    if (!l) return;
    dsv3_param_store_destroy(l->store);
    if (l->workspace) dsv3_memory_free(&l->kernels, l->workspace);
    dsv3_kernel_context_destroy(&l->kernels);
    dsv3_free(l);
}

static Dsv3Err local_store_create(Dsv3ParamStore **out, const Dsv3KernelContext *kernels,
                                  const Dsv3ModelArgs *args, const Dsv3StageRange *range,
                                  uint64_t seed, void *arg) {
    (void)arg;
    return dsv3_param_store_local_create(out, kernels, args, range, NULL, seed);
}

Dsv3Err dsv3_model_kernels_matmul(Dsv3KernelContext *kernels, Dsv3TensorDtype dtype) {
    if (dsv3_kernel_context_set_matmul(kernels, dtype) == DSV3_OK) return DSV3_OK;
    char why[512];
    snprintf(why, sizeof why, "%s", dsv3_error_message());
    DSV3_RAISE(DSV3_ERR_USAGE, "training.mixed_precision_param = \"%s\" is not possible: %s",
               dtype == DSV3_TENSOR_BF16 ? "bfloat16" : "float32", why);
}

static Dsv3Err local_services_create(LocalServices **out, const Dsv3ModelArgs *args,
                                     const Dsv3ModelOptions *opt, const Dsv3StageRange *range,
                                     uint64_t seed, const Dsv3StoreFactory *store) {
    LocalServices *l = NULL;
    DSV3_CALL(dsv3_calloc((void **)&l, 1, sizeof *l, "model services"));
    *out = l;
    Dsv3KernelContext *k = &l->kernels;
    DSV3_CALL(dsv3_kernel_context_create(k, opt->backend, opt->device));
    DSV3_CALL(dsv3_model_kernels_matmul(k, opt->matmul_dtype));
    DSV3_CALL(store->create(&l->store, k, args, range, seed, store->arg));
    size_t bytes = 0;
    DSV3_CALL(dsv3_model_workspace_bytes(k, args, opt, l->store, &bytes));
    if (bytes > 0) DSV3_CALL(dsv3_memory_alloc(k, &l->workspace, bytes, "kernel workspace"));
    k->workspace = l->workspace;
    k->workspace_bytes = bytes;
    dsv3_local_experts_init(&l->experts, l->store, k);
    return DSV3_OK;
}

Dsv3Err dsv3_model_create_local(Dsv3Model **out, const Dsv3ModelArgs *args,
                                const Dsv3ModelOptions *opt, const Dsv3StageRange *range,
                                uint64_t seed, Dsv3Collectives *collectives) {
    return dsv3_model_create_stage(out, args, opt, range, seed, collectives, NULL, NULL);
}

Dsv3Err dsv3_model_create_stage(Dsv3Model **out, const Dsv3ModelArgs *args,
                                const Dsv3ModelOptions *opt, const Dsv3StageRange *range,
                                uint64_t seed, Dsv3Collectives *collectives,
                                const Dsv3StoreFactory *store, Dsv3Experts *experts) {
    *out = NULL;
    const Dsv3StoreFactory local = {local_store_create, NULL};
    if (!store) store = &local;
    DSV3_CALL(dsv3_model_args_validate(args));
    Dsv3StageRange whole = dsv3_stage_range_whole(args);
    if (!range) range = &whole;
    LocalServices *l = NULL;
    Dsv3Err err = local_services_create(&l, args, opt, range, seed, store);
    if (err == DSV3_OK) {
        Dsv3ModelServices services = {.kernels = &l->kernels,
                                      .params = l->store,
                                      .collectives =
                                          collectives ? collectives : &dsv3_collectives_local,
                                      .experts = range->routed ? &l->experts.base : experts};
        err = dsv3_model_create(out, args, opt, &services);
    }
    if (err != DSV3_OK) {
        local_services_destroy(l);
        return dsv3_error_trace(err, __FILE__, __LINE__, __func__);
    }
    (*out)->local = l;
    return DSV3_OK;
}

void dsv3_model_destroy(Dsv3Model *m) {
    if (!m) return;
    dsv3_arena_destroy(&m->arena);
    local_services_destroy(m->local);
    dsv3_free(m);
}

const Dsv3ModelArgs *dsv3_model_args(const Dsv3Model *m) { return &m->args; }

const Dsv3ModelServices *dsv3_model_services(const Dsv3Model *m) { return &m->services; }

Dsv3Param *dsv3_model_find(Dsv3Model *m, const char *fqn) {
    return dsv3_param_store_find_fqn(m->services.params, fqn, NULL);
}

// Index of `layer` among the stage's layers, or -1.
static int64_t local_layer(const Dsv3Model *m, int64_t layer) {
    int64_t i = layer - m->range.first_layer;
    return i >= 0 && i < m->range.n_layers ? i : -1;
}

float *dsv3_model_expert_bias(Dsv3Model *m, int64_t layer) {
    int64_t i = local_layer(m, layer);
    return i < 0 ? NULL : m->expert_bias[i];
}

int64_t *dsv3_model_tokens_per_expert(Dsv3Model *m, int64_t layer) {
    int64_t i = local_layer(m, layer);
    return i < 0 ? NULL : m->tokens_per_expert[i];
}

static Dsv3Err acquire(Dsv3Model *m, int g, Dsv3ParamUse use) {
    Dsv3ParamStore *st = m->services.params;
    return st->ops->acquire(st, g, use);
}

// Releases group g after `use`; after a backward or a W, first hands its gradients over.
static Dsv3Err release(Dsv3Model *m, int g, Dsv3ParamUse use) {
    Dsv3ParamStore *st = m->services.params;
    if (use != DSV3_PARAM_USE_FORWARD) DSV3_CALL(st->ops->reduce(st, g));
    return st->ops->release(st, g, use);
}

// Releases layer group g after its backward: with split_backward, its I pass, whose gradients
// the store keeps until the W pass (dsv3_model_backward_weight) adds the rest and hands them
// over.
static Dsv3Err release_backward_input(Dsv3Model *m, int g) {
    Dsv3ParamStore *st = m->services.params;
    if (!m->opt.split_backward) return release(m, g, DSV3_PARAM_USE_BACKWARD);
    DSV3_CALL(st->ops->keep(st, g));
    return st->ops->release(st, g, DSV3_PARAM_USE_BACKWARD);
}

// A split backward's slot takes no `next` (forward or backward) before its W has run.
static Dsv3Err check_drained(const Slot *s, int64_t slot, const char *next) {
    DSV3_CHECK(s->deferred.count == 0, DSV3_ERR_USAGE,
               "model: activation slot %" PRId64 " still holds the weight gradients its last "
               "backward deferred; run dsv3_model_backward_weight on it before its next %s",
               slot, next);
    return DSV3_OK;
}

static Dsv3Err check_slot(const Dsv3Model *m, int64_t slot) {
    DSV3_CHECK(slot >= 0 && slot < m->opt.slots, DSV3_ERR_USAGE,
               "model: activation slot %" PRId64 " outside [0, %" PRId64 ")", slot, m->opt.slots);
    return DSV3_OK;
}

// The stage input into the slot: embedded tokens (and their document ids) on the first stage,
// the previous stage's activations and document ids on the others.
static Dsv3Err take_input(Dsv3Model *m, Slot *s, const Dsv3StageInput *in) {
    const Dsv3KernelContext *k = m->services.kernels;
    const Dsv3ModelArgs *a = &m->args;
    int64_t B = m->opt.batch, T = m->opt.seq_len, N = n_tokens(m), D = a->dim;
    if (m->range.first) {
        DSV3_CHECK(in->tokens, DSV3_ERR_USAGE, "model: the first stage's forward needs tokens");
        DSV3_CALL(dsv3_tokens_check(k, in->tokens, B * T, a->vocab_size));
        DSV3_CALL(cp_take(m, s->tokens, in->tokens, B, sizeof *s->tokens));
        if (s->doc) DSV3_CALL(dsv3_document_ids(k, s->doc, in->tokens, B, T, m->opt.eos_id));
        DSV3_CALL(acquire(m, m->group_embedding, DSV3_PARAM_USE_FORWARD));
        // With tp, each rank looks the whole micro-batch up in its slice of the vocabulary; the
        // sum over the tp group is reduce-scattered into its rows.
        const Dsv3Param *table =
            &m->services.params->groups[m->group_embedding].params[DSV3_P_TOK_EMBEDDINGS];
        float *embedded = m->tp > 1 ? m->scratch.gathered : stage_input(m, s);
        DSV3_CALL(dsv3_embedding_forward(k, DSV3_TENSOR_F32, embedded, s->tokens, table->data, N, D,
                                         table->local[0], table->piece_start[0]));
        if (m->tp > 1)
            DSV3_CALL(dsv3_layer_sp_reduce(&m->ctx, stage_input(m, s), embedded, n_rows(m), D));
        return release(m, m->group_embedding, DSV3_PARAM_USE_FORWARD);
    }
    DSV3_CHECK(in->x && (in->doc || !s->doc), DSV3_ERR_USAGE,
               "model: a later stage's forward needs the previous stage's activations%s",
               s->doc ? " and document ids" : "");
    DSV3_CALL(dsv3_memory_copy(k, stage_input(m, s), in->x, (size_t)(n_rows(m) * D) * sizeof(float),
                               DSV3_COPY_DEVICE_TO_DEVICE));
    if (s->doc)
        DSV3_CALL(dsv3_memory_copy(k, s->doc, in->doc, (size_t)(B * T) * sizeof *s->doc,
                                   DSV3_COPY_DEVICE_TO_DEVICE));
    return DSV3_OK;
}

// cp_ring: the slot's ring_pos and ring_doc (layer.h) from its document ids. Token t of this rank
// at position p sees, of rank j's keys (positions in increasing order), those up to the last
// one at or before p; under a block-causal mask none when that key's document is not p's
// (documents only grow along the sequence).
static Dsv3Err ring_positions(Dsv3Model *m, Slot *s) {
    const Dsv3KernelContext *k = m->services.kernels;
    const int64_t B = m->opt.batch, T = m->opt.seq_len, cp = m->cp, Tl = T / cp, C = Tl / 2;
    int32_t *pos = NULL, *keys_doc = NULL, *doc = NULL; // host copies
    Dsv3Err err = DSV3_OK;
    DSV3_CALL_GOTO(
        err, done,
        dsv3_calloc((void **)&pos, (size_t)(cp * B * Tl), sizeof *pos, "ring positions"));
    if (s->doc) {
        DSV3_CALL_GOTO(err, done,
                       dsv3_calloc((void **)&keys_doc, (size_t)(cp * B * Tl), sizeof *keys_doc,
                                   "ring documents"));
        DSV3_CALL_GOTO(err, done,
                       dsv3_calloc((void **)&doc, (size_t)(B * T), sizeof *doc, "document ids"));
        DSV3_CALL_GOTO(err, done,
                       dsv3_memory_copy(k, doc, s->doc, (size_t)(B * T) * sizeof *doc,
                                        DSV3_COPY_DEVICE_TO_HOST));
    }
    for (int64_t j = 0; j < cp; j++)
        for (int64_t b = 0; b < B; b++) {
            int32_t *pos_jb = pos + (j * B + b) * Tl;
            const int32_t *doc_b = doc ? doc + b * T : NULL;
            for (int64_t t = 0; t < Tl; t++) {
                const int64_t p = cp_position(m, m->cp_rank, t);
                const int64_t head = p - dsv3_layer_cp_chunk(cp, j, 0) * C + 1;
                const int64_t tail = p - dsv3_layer_cp_chunk(cp, j, 1) * C + 1;
                int64_t last = (head < 0   ? 0
                                : head > C ? C
                                           : head) +
                               (tail < 0   ? 0
                                : tail > C ? C
                                           : tail) -
                               1;
                if (doc_b && last >= 0 && doc_b[cp_position(m, j, last)] != doc_b[p]) last = -1;
                pos_jb[t] = (int32_t)last;
                if (doc_b) keys_doc[(j * B + b) * Tl + t] = doc_b[cp_position(m, j, t)];
            }
        }
    DSV3_CALL_GOTO(err, done,
                   dsv3_memory_copy(k, s->ring_pos, pos, (size_t)(cp * B * Tl) * sizeof *pos,
                                    DSV3_COPY_HOST_TO_DEVICE));
    if (doc)
        DSV3_CALL_GOTO(err, done,
                       dsv3_memory_copy(k, s->ring_doc, keys_doc,
                                        (size_t)(cp * B * Tl) * sizeof *keys_doc,
                                        DSV3_COPY_HOST_TO_DEVICE));
done:
    dsv3_free(pos);
    dsv3_free(keys_doc);
    dsv3_free(doc);
    return err;
}

// The layers' context for slot s.
static void context_of_slot(Dsv3Model *m, Slot *s, int64_t slot) {
    m->ctx.defer = m->opt.split_backward ? &s->deferred : NULL;
    m->ctx.doc = s->doc;
    m->ctx.ring_pos = s->ring_pos;
    m->ctx.ring_doc = s->ring_doc;
    m->ctx.slot = slot;
}

Dsv3Err dsv3_model_forward(Dsv3Model *m, int64_t slot, const Dsv3StageInput *in) {
    DSV3_CALL(check_slot(m, slot));
    const Dsv3ModelArgs *a = &m->args;
    const Dsv3KernelContext *k = m->services.kernels;
    int64_t L = m->range.n_layers, Nl = n_rows(m);
    Slot *s = &m->slots[slot];
    // Deferred weight gradients read the activations this forward would overwrite.
    DSV3_CALL(check_drained(s, slot, "forward"));
    DSV3_CALL(take_input(m, s, in));
    if (s->ring_pos) DSV3_CALL(ring_positions(m, s));
    context_of_slot(m, s, slot);
    for (int64_t i = 0; i < L; i++) {
        float *out = i + 1 < L ? s->acts[i + 1].x : s->last;
        int g = m->group_layer[i];
        DSV3_CALL(acquire(m, g, DSV3_PARAM_USE_FORWARD));
        DSV3_CALL(dsv3_layer_forward(out, s->acts[i].x, &s->acts[i], &m->services.params->groups[g],
                                     a, m->expert_bias[i], &m->ctx, &m->scratch));
        DSV3_CALL(release(m, g, DSV3_PARAM_USE_FORWARD));
        if (m->tokens_per_expert[i])
            DSV3_CALL(dsv3_counts_accumulate(k, m->tokens_per_expert[i], s->acts[i].counts,
                                             a->num_experts));
    }
    if (!m->range.last) return DSV3_OK;
    DSV3_CALL(acquire(m, m->group_head, DSV3_PARAM_USE_FORWARD));
    const Dsv3ParamGroup *head = &m->services.params->groups[m->group_head];
    // The output head takes every tp rank's rows.
    float *mine = s->final_out + m->tp_rank * Nl * a->dim;
    DSV3_CALL(dsv3_rmsnorm_forward(k, DSV3_TENSOR_F32, mine, s->final_rstd, s->last,
                                   head->params[DSV3_P_NORM].data, Nl, a->dim, FINAL_NORM_EPS));
    DSV3_CALL(dsv3_layer_sp_gather(&m->ctx, s->final_out, mine, Nl, a->dim));
    return release(m, m->group_head, DSV3_PARAM_USE_FORWARD);
}

const float *dsv3_model_output(const Dsv3Model *m, int64_t slot) {
    return slot >= 0 && slot < m->opt.slots ? m->slots[slot].last : NULL;
}

const int32_t *dsv3_model_doc(const Dsv3Model *m, int64_t slot) {
    return slot >= 0 && slot < m->opt.slots ? m->slots[slot].doc : NULL;
}

Dsv3Err dsv3_model_logits(Dsv3Model *m, int64_t slot, float *logits) {
    DSV3_CALL(check_slot(m, slot));
    DSV3_CHECK(m->range.last, DSV3_ERR_USAGE, "model: logits exist on the last stage only");
    DSV3_CHECK(m->tp == 1, DSV3_ERR_USAGE,
               "model: with tensor parallelism the logits are split over the vocabulary");
    DSV3_CALL(acquire(m, m->group_head, DSV3_PARAM_USE_FORWARD));
    const Dsv3Param *output = &m->services.params->groups[m->group_head].params[DSV3_P_OUTPUT];
    DSV3_CALL(dsv3_linear_forward(m->services.kernels, DSV3_TENSOR_F32, logits,
                                  m->slots[slot].final_out, output->data, n_tokens(m), m->args.dim,
                                  m->args.vocab_size));
    return release(m, m->group_head, DSV3_PARAM_USE_FORWARD);
}

// The loss with the output head split over the vocabulary (tp > 1, torchtitan's loss
// parallel): per chunk of tokens, this rank's logits, the rows' maxima (max over the tp group),
// sums of exponentials and target logits (summed over it), then the loss, which every tp rank
// now has, and this rank's share of the gradients; the gradient of the head's input is summed
// over the group by the caller. No rank holds more than a chunk × V/tp of logits.
static Dsv3Err loss_parallel(Dsv3Model *m, const Slot *s, Dsv3Param *output,
                             const int32_t *all_labels, float grad_scale, double *loss_sum) {
    const Dsv3KernelContext *k = m->services.kernels;
    Dsv3Collectives *c = m->services.collectives;
    int64_t N = n_tokens(m), D = m->args.dim, V = output->local[0], v0 = output->piece_start[0];
    int train = grad_scale != 0.0f;
    *loss_sum = 0;
    for (int64_t n0 = 0; n0 < N; n0 += m->opt.loss_chunk) {
        int64_t n = N - n0 < m->opt.loss_chunk ? N - n0 : m->opt.loss_chunk;
        const float *h = s->final_out + n0 * D;
        const int32_t *labels = all_labels + n0;
        DSV3_CALL(dsv3_vocab_logits(k, DSV3_TENSOR_F32, m->head_logits, m->head_max, h,
                                    output->data, n, D, V));
        DSV3_CALL(c->all_reduce(c, DSV3_GROUP_TP, m->head_max, n, DSV3_ELEM_F32, DSV3_REDUCE_MAX));
        DSV3_CALL(
            dsv3_vocab_logits_sums(k, m->head_sums, m->head_logits, m->head_max, labels, n, V, v0));
        DSV3_CALL(
            c->all_reduce(c, DSV3_GROUP_TP, m->head_sums, 2 * n, DSV3_ELEM_F64, DSV3_REDUCE_SUM));
        double chunk_loss = 0, *chunk_loss_slot = (double *)k->scalars + MODEL_SCALAR_LOSS;
        DSV3_CALL(dsv3_vocab_logits_backward(
            k, DSV3_TENSOR_F32, chunk_loss_slot, train ? m->dfinal + n0 * D : NULL,
            train ? output->grad : NULL, m->head_logits, m->head_max, m->head_sums, h, output->data,
            labels, n, D, V, v0, grad_scale));
        DSV3_CALL(dsv3_scalar_read(k, &chunk_loss, chunk_loss_slot, sizeof chunk_loss));
        *loss_sum += chunk_loss;
    }
    return DSV3_OK;
}

// The loss with each chunk's logits gathered over the tp group first (gather_logits,
// torchtitan's disable_loss_parallel): every rank computes its slice's logits into its block of
// m->head_logits, the blocks are all-gathered and laid side by side into m->head_whole (n, V),
// whose loss and gradient every rank computes whole; its own columns of that gradient give its
// share of the head's gradients (the head input's is summed over the group by the caller).
static Dsv3Err loss_gathered(Dsv3Model *m, const Slot *s, Dsv3Param *output,
                             const int32_t *all_labels, float grad_scale, double *loss_sum) {
    const Dsv3KernelContext *k = m->services.kernels;
    Dsv3Collectives *c = m->services.collectives;
    int64_t N = n_tokens(m), D = m->args.dim, V = m->args.vocab_size;
    int64_t Vl = output->local[0], v0 = output->piece_start[0], start = 0, S = 0;
    dsv3_param_chunk(V, m->tp, 0, &start, &S); // every rank's block holds S columns' room
    int train = grad_scale != 0.0f;
    *loss_sum = 0;
    for (int64_t n0 = 0; n0 < N; n0 += m->opt.loss_chunk) {
        int64_t n = N - n0 < m->opt.loss_chunk ? N - n0 : m->opt.loss_chunk;
        const float *h = s->final_out + n0 * D;
        float *mine = m->head_logits + m->tp_rank * n * S; // (n, Vl)
        DSV3_CALL(dsv3_linear_forward(k, DSV3_TENSOR_F32, mine, h, output->data, n, D, Vl));
        DSV3_CALL(c->all_gather(c, DSV3_GROUP_TP, m->head_logits, mine, n * S, DSV3_ELEM_F32));
        for (int64_t r = 0; r < m->tp; r++) {
            int64_t first = 0, count = 0;
            dsv3_param_chunk(V, m->tp, r, &first, &count);
            if (count > 0)
                DSV3_CALL(dsv3_copy_columns(k, DSV3_TENSOR_F32, m->head_whole + first, V,
                                            m->head_logits + r * n * S, count, n, count));
        }
        double chunk_loss = 0, *chunk_loss_slot = (double *)k->scalars + MODEL_SCALAR_LOSS;
        DSV3_CALL(dsv3_cross_entropy_logits(k, DSV3_TENSOR_F32, chunk_loss_slot,
                                            train ? m->head_whole : NULL, m->head_whole,
                                            all_labels + n0, n, V, grad_scale));
        DSV3_CALL(dsv3_scalar_read(k, &chunk_loss, chunk_loss_slot, sizeof chunk_loss));
        *loss_sum += chunk_loss;
        if (!train) continue;
        DSV3_CALL(dsv3_copy_columns(k, DSV3_TENSOR_F32, mine, Vl, m->head_whole + v0, V, n, Vl));
        DSV3_CALL(dsv3_linear_backward(k, DSV3_TENSOR_F32, m->dfinal + n0 * D, output->grad, mine,
                                       h, output->data, n, D, Vl, 0));
    }
    return DSV3_OK;
}

// Last stage: the loss of the slot's labels and, unless grad_scale is 0, the gradient of the
// last layer's output into m->dh.
static Dsv3Err head_backward(Dsv3Model *m, Slot *s, const Dsv3StageGrad *grad, double *loss_sum,
                             int64_t *n_labels) {
    const Dsv3KernelContext *k = m->services.kernels;
    const Dsv3ModelArgs *a = &m->args;
    int64_t N = n_tokens(m), D = a->dim;
    DSV3_CHECK(grad->labels, DSV3_ERR_USAGE, "model: the last stage's backward needs labels");
    const int32_t *labels = grad->labels; // this rank's
    if (m->cp > 1) {
        DSV3_CALL(cp_take(m, m->labels, grad->labels, m->opt.batch, sizeof *m->labels));
        labels = m->labels;
    }
    int64_t *n_labels_slot = (int64_t *)k->scalars + MODEL_SCALAR_LABELS;
    DSV3_CALL(dsv3_labels_count(k, n_labels_slot, labels, N));
    DSV3_CALL(dsv3_scalar_read(k, n_labels, n_labels_slot, sizeof *n_labels));
    int train = grad->grad_scale != 0.0f;
    Dsv3ParamUse use = train ? DSV3_PARAM_USE_BACKWARD : DSV3_PARAM_USE_FORWARD;
    DSV3_CALL(acquire(m, m->group_head, use));
    Dsv3ParamGroup *head = &m->services.params->groups[m->group_head];
    Dsv3Param *output = &head->params[DSV3_P_OUTPUT], *norm = &head->params[DSV3_P_NORM];
    if (m->tp > 1 && m->opt.gather_logits)
        DSV3_CALL(loss_gathered(m, s, output, labels, grad->grad_scale, loss_sum));
    else if (m->tp > 1)
        DSV3_CALL(loss_parallel(m, s, output, labels, grad->grad_scale, loss_sum));
    else {
        double *loss_slot = (double *)k->scalars + MODEL_SCALAR_LOSS;
        DSV3_CALL(dsv3_cross_entropy(k, DSV3_TENSOR_F32, loss_slot, train ? m->dfinal : NULL,
                                     train ? output->grad : NULL, s->final_out, output->data,
                                     labels, N, D, a->vocab_size, grad->grad_scale,
                                     m->opt.loss_chunk));
        DSV3_CALL(dsv3_scalar_read(k, loss_sum, loss_slot, sizeof *loss_sum));
    }
    if (train) { // the final norm's gradient on this rank's rows
        const float *dnorm = m->dfinal;
        if (m->tp > 1) {
            DSV3_CALL(dsv3_layer_sp_reduce(&m->ctx, m->scratch.rows, m->dfinal, n_rows(m), D));
            dnorm = m->scratch.rows;
        }
        DSV3_CALL(dsv3_rmsnorm_backward(k, DSV3_TENSOR_F32, m->dh, norm->grad, dnorm, s->last,
                                        norm->data, s->final_rstd, n_rows(m), D));
    }
    return release(m, m->group_head, use);
}

Dsv3Err dsv3_model_backward(Dsv3Model *m, int64_t slot, const Dsv3StageGrad *grad, double *loss_sum,
                            int64_t *n_labels) {
    DSV3_CALL(check_slot(m, slot));
    const Dsv3KernelContext *k = m->services.kernels;
    const Dsv3ModelArgs *a = &m->args;
    int64_t L = m->range.n_layers, N = n_tokens(m), D = a->dim;
    Slot *s = &m->slots[slot];
    *loss_sum = 0;
    *n_labels = 0;
    DSV3_CALL(check_drained(s, slot, "backward"));
    if (m->range.last) {
        DSV3_CALL(head_backward(m, s, grad, loss_sum, n_labels));
        if (grad->grad_scale == 0.0f) return DSV3_OK; // evaluation: the loss only
    } else {
        DSV3_CHECK(grad->dout, DSV3_ERR_USAGE,
                   "model: a non-last stage's backward needs the gradient of its output");
        DSV3_CALL(dsv3_memory_copy(k, m->dh, grad->dout, (size_t)(n_rows(m) * D) * sizeof(float),
                                   DSV3_COPY_DEVICE_TO_DEVICE));
    }
    context_of_slot(m, s, slot);
    for (int64_t i = L - 1; i >= 0; i--) {
        int g = m->group_layer[i];
        DSV3_CALL(acquire(m, g, DSV3_PARAM_USE_BACKWARD));
        DSV3_CALL(dsv3_layer_backward(m->dh, m->dh, &s->acts[i], &m->services.params->groups[g], a,
                                      m->expert_bias[i], &m->ctx, &m->scratch, &m->shared));
        DSV3_CALL(release_backward_input(m, g));
    }
    // The queue is sized exactly (create_deferred): every layer filled its share.
    DSV3_ASSERT(s->deferred.used == s->deferred.n_floats);
    if (!m->range.first) return DSV3_OK;
    DSV3_CALL(acquire(m, m->group_embedding, DSV3_PARAM_USE_BACKWARD));
    Dsv3Param *table =
        &m->services.params->groups[m->group_embedding].params[DSV3_P_TOK_EMBEDDINGS];
    const float *dembedded = m->dh; // with tp: every tp rank's rows, for its vocabulary slice
    if (m->tp > 1) {
        DSV3_CALL(dsv3_layer_sp_gather(&m->ctx, m->scratch.gathered, m->dh, n_rows(m), D));
        dembedded = m->scratch.gathered;
    }
    DSV3_CALL(dsv3_embedding_backward(k, DSV3_TENSOR_F32, table->grad, dembedded, s->tokens, N, D,
                                      table->local[0], table->piece_start[0]));
    return release(m, m->group_embedding, DSV3_PARAM_USE_BACKWARD);
}

Dsv3Err dsv3_model_backward_weight(Dsv3Model *m, int64_t slot) {
    DSV3_CALL(check_slot(m, slot));
    Dsv3WeightGrads *q = &m->slots[slot].deferred;
    for (int64_t next = 0; next < q->count;) { // the records of one layer after another
        const int64_t i = local_layer(m, q->records[next].layer_id);
        DSV3_ASSERT(i >= 0);
        const int g = m->group_layer[i];
        DSV3_CALL(acquire(m, g, DSV3_PARAM_USE_WEIGHT_GRAD));
        DSV3_CALL(dsv3_layer_weight_grads_run(m->services.kernels, q, &next,
                                              &m->services.params->groups[g]));
        DSV3_CALL(release(m, g, DSV3_PARAM_USE_WEIGHT_GRAD));
    }
    q->count = q->used = 0;
    return DSV3_OK;
}

const float *dsv3_model_input_grad(const Dsv3Model *m) { return m->range.first ? NULL : m->dh; }

int64_t dsv3_model_activation_bytes(const Dsv3Model *m) { return (int64_t)m->arena.bytes; }
