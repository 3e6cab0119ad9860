// layer: MLA, SwiGLU FFN and MoE composed from the kernels, with activation checkpointing and
// the split backward's deferred weight gradients. Every op runs on the layer context's kernel
// context. Legend as in layer.h.
#include "layer.h"

#include <inttypes.h>
#include <string.h>

// The model computes in fp32: the dtype of every op's activations and weights.
static const Dsv3TensorDtype F32 = DSV3_TENSOR_F32;

// ---- activations ----

// Which buffers op-mode recomputes: norm outputs, SwiGLU products, gathered expert inputs.
enum { KEEP = 0, RECOMPUTE = 1 };

// Tk: the key positions per sequence the attention's k, v hold (T · cp gathered, or T: one
// ring shard); Nk = B · Tk.
typedef struct {
    int64_t N, Nl, D, H, Dqk, Dv, Q, C, R, I, E, K, M, F, Fs, B, T, cp, Tk, Nk;
    int ring;
} Dims;

// A tp and cp rank's dimensions: its rows of the micro-batch, heads and hidden features
// (model_config checks that tp divides them), and the keys its attention sees.
static Dims dims_of(const Dsv3ModelArgs *a, int64_t B, int64_t T, int64_t tp, int64_t cp,
                    int ring) {
    Dims d = {.N = B * T,
              .Nl = B * T / tp,
              .D = a->dim,
              .H = a->n_heads / tp,
              .Dqk = a->qk_nope_head_dim + a->qk_rope_head_dim,
              .Dv = a->v_head_dim,
              .Q = a->q_lora_rank,
              .C = a->kv_lora_rank,
              .R = a->qk_rope_head_dim,
              .I = a->inter_dim / tp,
              .E = a->num_experts,
              .K = a->top_k,
              .F = a->moe_inter_dim,
              .Fs = a->moe_inter_dim * a->num_shared_experts / tp,
              .B = B,
              .T = T,
              .cp = cp,
              .ring = cp > 1 && ring,
              .Tk = cp > 1 && ring ? T : T * cp,
              .Nk = cp > 1 && ring ? B * T : B * T * cp};
    d.M = d.Nl * d.K;
    return d;
}

// One activation buffer: a float/int32/int64 array of `count` elements, kept or recomputed.
#define ACT_FLOAT(field, count, policy)                                                            \
    DSV3_CALL(act_buffer((void **)&acts->field, shared ? (void *)shared->field : NULL, (count),    \
                         sizeof(float), (policy), #field, acts, arena))
#define ACT_I32(field, count, policy)                                                              \
    DSV3_CALL(act_buffer((void **)&acts->field, shared ? (void *)shared->field : NULL, (count),    \
                         sizeof(int32_t), (policy), #field, acts, arena))
#define ACT_I64(field, count, policy)                                                              \
    DSV3_CALL(act_buffer((void **)&acts->field, shared ? (void *)shared->field : NULL, (count),    \
                         sizeof(int64_t), (policy), #field, acts, arena))

static Dsv3Err act_buffer(void **field, void *shared_field, int64_t count, size_t size, int policy,
                          const char *name, const Dsv3LayerActs *acts, Dsv3Arena *arena) {
    int own = acts->mode == DSV3_AC_NONE || (acts->mode == DSV3_AC_OP && policy == KEEP);
    if (!own) { // a checkpointed layer recomputes into the shared set (NULL in a plan)
        *field = shared_field;
        return DSV3_OK;
    }
    return dsv3_arena_calloc(arena, field, (size_t)(count > 0 ? count : 0), size, name);
}

Dsv3Err dsv3_layer_acts_create(Dsv3LayerActs *acts, Dsv3Arena *arena, Dsv3AcMode mode,
                               const Dsv3LayerActs *shared, const Dsv3ModelArgs *args, int moe,
                               int local_experts, int64_t B, int64_t T, int64_t tp, int64_t cp,
                               int cp_ring) {
    DSV3_ASSERT(mode == DSV3_AC_NONE || shared);
    Dims d = dims_of(args, B, T, tp, cp, cp_ring);
    memset(acts, 0, sizeof *acts);
    acts->mode = mode;
    DSV3_CALL(dsv3_arena_calloc(arena, (void **)&acts->x, (size_t)(d.Nl * d.D), sizeof(float),
                                "layer input"));
    ACT_FLOAT(xn, d.N * d.D, RECOMPUTE);
    ACT_FLOAT(attn_rstd, d.Nl, KEEP);
    if (d.Q > 0) {
        ACT_FLOAT(qa, d.N * d.Q, KEEP);
        ACT_FLOAT(qa_rstd, d.N, KEEP);
        ACT_FLOAT(qn, d.N * d.Q, RECOMPUTE);
    }
    ACT_FLOAT(q, d.N * d.H * d.Dqk, KEEP);
    ACT_FLOAT(kvc, d.N * d.C, KEEP);
    ACT_FLOAT(kv_rstd, d.N, KEEP);
    ACT_FLOAT(kvn, d.N * d.C, RECOMPUTE);
    ACT_FLOAT(kpe, d.N * d.R, KEEP);
    ACT_FLOAT(k, d.Nk * d.H * d.Dqk, KEEP);
    ACT_FLOAT(v, d.Nk * d.H * d.Dv, KEEP);
    ACT_FLOAT(o, d.N * d.H * d.Dv, KEEP);
    ACT_FLOAT(lse, d.B * d.H * d.T, KEEP);
    // The ring visits cp shards: their scores are recomputed in backward.
    if (!d.ring &&
        d.B * d.H * d.T * d.Tk * (int64_t)sizeof(float) <= DSV3_ATTENTION_SCORES_MAX_BYTES)
        ACT_FLOAT(attn_scores, d.B * d.H * d.T * d.Tk, KEEP);
    ACT_FLOAT(h, d.Nl * d.D, KEEP);
    ACT_FLOAT(hn, d.N * d.D, RECOMPUTE);
    ACT_FLOAT(ffn_rstd, d.Nl, KEEP);
    // The shared set (moe < 0) serves dense and MoE layers alike.
    int64_t hidden = moe > 0 ? d.Fs : (moe == 0 ? d.I : (d.I > d.Fs ? d.I : d.Fs));
    if (hidden > 0) {
        ACT_FLOAT(fa, d.N * hidden, KEEP);
        ACT_FLOAT(fb, d.N * hidden, KEEP);
        ACT_FLOAT(fg, d.N * hidden, RECOMPUTE);
    }
    if (moe != 0) {
        ACT_FLOAT(logits, d.Nl * d.E, KEEP);
        ACT_FLOAT(scores, d.Nl * d.E, KEEP);
        ACT_FLOAT(weights, d.Nl * d.K, KEEP);
        ACT_I32(topk, d.Nl * d.K, KEEP);
        ACT_I64(counts, d.E, KEEP);
        ACT_I32(order, d.M, KEEP);
        ACT_I64(offsets, d.E + 1, KEEP);
        ACT_FLOAT(xs, d.M * d.D, RECOMPUTE);
        if (local_experts) {
            ACT_FLOAT(h1, d.M * d.F, KEEP);
            ACT_FLOAT(h3, d.M * d.F, KEEP);
        }
        ACT_FLOAT(ys, d.M * d.D, KEEP);
    }
    return DSV3_OK;
}

Dsv3Err dsv3_layer_scratch_create(Dsv3LayerScratch *s, Dsv3Arena *arena, const Dsv3ModelArgs *args,
                                  int64_t B, int64_t T, int64_t tp, int64_t cp, int cp_ring) {
    Dims d = dims_of(args, B, T, tp, cp, cp_ring);
    int64_t hidden = d.I > d.Fs ? d.I : d.Fs, nv = args->qk_nope_head_dim + d.Dv;
    memset(s, 0, sizeof *s);
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->kva, d.N * (d.C + d.R), "scratch kva"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->kvb, d.N * d.H * nv, "scratch kvb"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->dx, d.Nl * d.D, "scratch dx"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->dh, d.Nl * d.D, "scratch dh"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->dn, d.N * d.D, "scratch dn"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->dq, d.N * d.H * d.Dqk, "scratch dq"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->dk, d.N * d.H * d.Dqk, "scratch dk"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->dv, d.N * d.H * d.Dv, "scratch dv"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->do_, d.N * d.H * d.Dv, "scratch do"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->dkvb, d.N * d.H * nv, "scratch dkvb"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->dkvn, d.N * d.C, "scratch dkvn"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->dkvc, d.N * d.C, "scratch dkvc"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->dkva, d.N * (d.C + d.R), "scratch dkva"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->dqn, d.N * d.Q, "scratch dqn"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->dqa, d.N * d.Q, "scratch dqa"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->dfa, d.N * hidden, "scratch dfa"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->dfb, d.N * hidden, "scratch dfb"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->dfg, d.N * hidden, "scratch dfg"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->ffn_out, d.N * d.D, "scratch ffn_out"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->dlogits, d.Nl * d.E, "scratch dlogits"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->dweights, d.Nl * d.K, "scratch dweights"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->dxs, d.M * d.D, "scratch dxs"));
    DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->dys, d.M * d.D, "scratch dys"));
    if (tp > 1) {
        DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->rows, d.Nl * d.D, "scratch sequence rows"));
        DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->gathered, d.N * d.D, "scratch gathered gradient"));
    }
    if (d.ring) {
        const int64_t n_keys = d.N * d.H * d.Dqk, n_values = d.N * d.H * d.Dv;
        for (int i = 0; i < 2; i++) {
            DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->ring_k[i], n_keys, "scratch ring keys"));
            DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->ring_v[i], n_values, "scratch ring values"));
            DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->ring_dk[i], n_keys, "scratch ring key gradients"));
            DSV3_CALL(
                DSV3_ARENA_ARRAY(arena, s->ring_dv[i], n_values, "scratch ring value gradients"));
        }
        DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->ring_o, n_values, "scratch ring partial output"));
        DSV3_CALL(
            DSV3_ARENA_ARRAY(arena, s->ring_lse, d.B * d.H * d.T, "scratch ring partial lse"));
        DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->ring_dq, n_keys, "scratch ring partial dq"));
        DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->ring_dk_part, n_keys, "scratch ring partial dk"));
        DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->ring_dv_part, n_values, "scratch ring partial dv"));
    } else if (cp > 1) {
        DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->k_ranks, d.Nk * d.H * d.Dqk, "scratch keys by rank"));
        DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->v_ranks, d.Nk * d.H * d.Dv, "scratch values by rank"));
        DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->dk_keys, d.Nk * d.H * d.Dqk, "scratch dk of keys"));
        DSV3_CALL(DSV3_ARENA_ARRAY(arena, s->dv_keys, d.Nk * d.H * d.Dv, "scratch dv of keys"));
    }
    return DSV3_OK;
}

// ---- forward ----

static const float *P(const Dsv3ParamGroup *g, Dsv3ParamSlot slot) { return g->params[slot].data; }

static float *G(Dsv3ParamGroup *g, Dsv3ParamSlot slot) { return g->params[slot].grad; }

// This rank's rows of a micro-batch-sized (N, D) buffer.
static float *local_rows(const Dsv3LayerContext *ctx, float *full, const Dims *d) {
    return full + ctx->tp_rank * d->Nl * d->D;
}

Dsv3Err dsv3_layer_sp_gather(const Dsv3LayerContext *ctx, float *full, const float *rows,
                             int64_t n_rows, int64_t D) {
    float *mine = full + ctx->tp_rank * n_rows * D;
    if (rows != mine)
        DSV3_CALL(dsv3_memory_copy(ctx->kernels, mine, rows, (size_t)(n_rows * D) * sizeof(float),
                                   DSV3_COPY_DEVICE_TO_DEVICE));
    if (ctx->tp == 1) return DSV3_OK;
    Dsv3Collectives *c = ctx->collectives;
    return c->all_gather(c, DSV3_GROUP_TP, full, mine, n_rows * D, DSV3_ELEM_F32);
}

Dsv3Err dsv3_layer_sp_reduce(const Dsv3LayerContext *ctx, float *rows, const float *partial,
                             int64_t n_rows, int64_t D) {
    Dsv3Collectives *c = ctx->collectives;
    return c->reduce_scatter(c, DSV3_GROUP_TP, rows, partial, n_rows * D, DSV3_ELEM_F32,
                             DSV3_REDUCE_SUM);
}

// The attention or FFN input (N, D): this rank's rows are in place; all-gathered under tp.
static Dsv3Err gather_input(const Dsv3LayerContext *ctx, float *full, const Dims *d) {
    return dsv3_layer_sp_gather(ctx, full, local_rows(ctx, full, d), d->Nl, d->D);
}

// *out = this rank's rows of the sum over tp of a row-wise layer's `partial` (N, D) output, or
// of a gradient leaving column-wise layers: reduce-scattered into s->rows; without tp, partial.
static Dsv3Err reduce_rows(const Dsv3LayerContext *ctx, float **out, float *partial,
                           Dsv3LayerScratch *s, const Dims *d) {
    *out = partial;
    if (ctx->tp == 1) return DSV3_OK;
    *out = s->rows;
    return dsv3_layer_sp_reduce(ctx, s->rows, partial, d->Nl, d->D);
}

// *full = the gradient `rows` (Nl, D) of every tp rank, gathered into s->gathered (N, D);
// without tp, rows.
static Dsv3Err gather_rows(const Dsv3LayerContext *ctx, const float **full, const float *rows,
                           Dsv3LayerScratch *s, const Dims *d) {
    *full = rows;
    if (ctx->tp == 1) return DSV3_OK;
    *full = s->gathered;
    return dsv3_layer_sp_gather(ctx, s->gathered, rows, d->Nl, d->D);
}

int64_t dsv3_layer_cp_chunk(int64_t cp, int64_t rank, int64_t half) {
    return half == 0 ? rank : 2 * cp - 1 - rank;
}

// Context parallelism's two orders of the whole sequences' rows of `width` floats: by
// sequence, (B, Tk), and by rank, (cp, B, T), rank r's rows holding chunks r and 2·cp − 1 − r
// (T / 2 positions each) of every sequence. to_sequence: by_rank → by_sequence, else back.
static Dsv3Err cp_reorder(const Dsv3LayerContext *ctx, float *by_sequence, float *by_rank,
                          int64_t width, const Dims *d, int to_sequence) {
    const int64_t C = d->T / 2;
    const size_t bytes = (size_t)(C * width) * sizeof(float);
    for (int64_t r = 0; r < d->cp; r++)
        for (int64_t b = 0; b < d->B; b++)
            for (int64_t half = 0; half < 2; half++) {
                const int64_t chunk = dsv3_layer_cp_chunk(d->cp, r, half);
                float *seq = by_sequence + (b * d->Tk + chunk * C) * width;
                float *rank = by_rank + ((r * d->B + b) * d->T + half * C) * width;
                DSV3_CALL(dsv3_memory_copy(ctx->kernels, to_sequence ? seq : rank,
                                           to_sequence ? rank : seq, bytes,
                                           DSV3_COPY_DEVICE_TO_DEVICE));
            }
    return DSV3_OK;
}

// cp > 1: every rank's keys and values (this rank's already in its place of s->k_ranks,
// s->v_ranks) all-gathered over the cp group, into the whole sequences' order in a->k, a->v.
static Dsv3Err cp_gather_keys(const Dsv3LayerContext *ctx, Dsv3LayerActs *a, Dsv3LayerScratch *s,
                              const Dims *d) {
    Dsv3Collectives *c = ctx->collectives;
    const int64_t nk = d->N * d->H * d->Dqk, nv = d->N * d->H * d->Dv;
    DSV3_CALL(c->all_gather(c, DSV3_GROUP_CP, s->k_ranks, s->k_ranks + ctx->cp_rank * nk, nk,
                            DSV3_ELEM_F32));
    DSV3_CALL(c->all_gather(c, DSV3_GROUP_CP, s->v_ranks, s->v_ranks + ctx->cp_rank * nv, nv,
                            DSV3_ELEM_F32));
    DSV3_CALL(cp_reorder(ctx, a->k, s->k_ranks, d->H * d->Dqk, d, 1));
    return cp_reorder(ctx, a->v, s->v_ranks, d->H * d->Dv, d, 1);
}

// cp > 1: the whole sequences' key and value gradients (s->dk_keys, s->dv_keys) summed over the
// cp group and reduce-scattered: s->dk, s->dv get this rank's tokens'.
static Dsv3Err cp_reduce_keys(const Dsv3LayerContext *ctx, Dsv3LayerScratch *s, const Dims *d) {
    Dsv3Collectives *c = ctx->collectives;
    DSV3_CALL(cp_reorder(ctx, s->dk_keys, s->k_ranks, d->H * d->Dqk, d, 0));
    DSV3_CALL(cp_reorder(ctx, s->dv_keys, s->v_ranks, d->H * d->Dv, d, 0));
    DSV3_CALL(c->reduce_scatter(c, DSV3_GROUP_CP, s->dk, s->k_ranks, d->N * d->H * d->Dqk,
                                DSV3_ELEM_F32, DSV3_REDUCE_SUM));
    return c->reduce_scatter(c, DSV3_GROUP_CP, s->dv, s->v_ranks, d->N * d->H * d->Dv,
                             DSV3_ELEM_F32, DSV3_REDUCE_SUM);
}

// cp_ring, pass i: one shard's keys and values (when `keys`) and, when dk is not NULL, the
// gradients that travel with it passed on to the next rank of the ring, the previous rank's
// received into pass i's buffers (the last pass's gradients into s->dk, s->dv).
static Dsv3Err ring_pass(const Dsv3LayerContext *ctx, Dsv3LayerScratch *s, const Dims *d, int64_t i,
                         float **k, float **v, float **dk, float **dv, int keys) {
    Dsv3Collectives *c = ctx->collectives;
    const int64_t nk = d->N * d->H * d->Dqk, nv = d->N * d->H * d->Dv;
    if (keys) {
        DSV3_CALL(c->shift(c, DSV3_GROUP_CP, s->ring_k[i % 2], *k, nk, DSV3_ELEM_F32));
        DSV3_CALL(c->shift(c, DSV3_GROUP_CP, s->ring_v[i % 2], *v, nv, DSV3_ELEM_F32));
        *k = s->ring_k[i % 2];
        *v = s->ring_v[i % 2];
    }
    if (!dk) return DSV3_OK;
    // The last pass brings this rank's own shard's gradients home.
    float *dk_in = i == d->cp ? s->dk : s->ring_dk[i % 2];
    float *dv_in = i == d->cp ? s->dv : s->ring_dv[i % 2];
    DSV3_CALL(c->shift(c, DSV3_GROUP_CP, dk_in, *dk, nk, DSV3_ELEM_F32));
    DSV3_CALL(c->shift(c, DSV3_GROUP_CP, dv_in, *dv, nv, DSV3_ELEM_F32));
    *dk = dk_in;
    *dv = dv_in;
    return DSV3_OK;
}

// The queries' places among rank j's keys, and its keys' document ids (layer.h).
static const int32_t *ring_positions(const Dsv3LayerContext *ctx, const Dims *d, int64_t j) {
    return ctx->ring_pos + j * d->B * d->T;
}

static const int32_t *ring_documents(const Dsv3LayerContext *ctx, const Dims *d, int64_t j) {
    return ctx->ring_doc ? ctx->ring_doc + j * d->B * d->T : NULL;
}

// cp_ring: the attention of this rank's queries over every rank's keys, a shard per step (own
// first, then from the previous rank on), each partial result merged into a->o, a->lse.
static Dsv3Err ring_attention_forward(const Dsv3LayerContext *ctx, Dsv3LayerActs *a,
                                      Dsv3LayerScratch *s, const Dims *d) {
    const Dsv3KernelContext *kc = ctx->kernels;
    float *k = a->k, *v = a->v;
    for (int64_t i = 0; i < d->cp; i++) {
        const int64_t j = (ctx->cp_rank - i + d->cp) % d->cp; // whose shard
        if (i > 0) DSV3_CALL(ring_pass(ctx, s, d, i, &k, &v, NULL, NULL, 1));
        DSV3_CALL(dsv3_attention_forward(kc, F32, i ? s->ring_o : a->o, i ? s->ring_lse : a->lse,
                                         NULL, a->q, k, v, ring_positions(ctx, d, j),
                                         ring_documents(ctx, d, j), d->B, d->T, d->T, d->H, d->Dqk,
                                         d->Dv, ctx->softmax_scale));
        if (i > 0)
            DSV3_CALL(dsv3_attention_merge(kc, F32, a->o, a->lse, s->ring_o, s->ring_lse, d->B,
                                           d->T, d->H, d->Dv));
    }
    return DSV3_OK;
}

// cp_ring backward: s->dq from every shard; each shard's key and value gradients travel around
// the ring with it, gathering every rank's share, and this rank's own arrive in s->dk, s->dv.
static Dsv3Err ring_attention_backward(const Dsv3LayerContext *ctx, Dsv3LayerActs *a,
                                       Dsv3LayerScratch *s, const Dims *d) {
    const Dsv3KernelContext *kc = ctx->kernels;
    const int64_t nq = d->N * d->H * d->Dqk, nv = d->N * d->H * d->Dv;
    float *k = a->k, *v = a->v, *dk = s->dk, *dv = s->dv;
    DSV3_CALL(dsv3_attention_backward(kc, F32, s->dq, dk, dv, s->do_, a->q, k, v, a->o, a->lse,
                                      NULL, ring_positions(ctx, d, ctx->cp_rank),
                                      ring_documents(ctx, d, ctx->cp_rank), d->B, d->T, d->T, d->H,
                                      d->Dqk, d->Dv, ctx->softmax_scale));
    for (int64_t i = 1; i <= d->cp; i++) {
        DSV3_CALL(ring_pass(ctx, s, d, i, &k, &v, &dk, &dv, i < d->cp));
        if (i == d->cp) break; // home: dk, dv are s->dk, s->dv
        const int64_t j = (ctx->cp_rank - i + d->cp) % d->cp;
        DSV3_CALL(dsv3_attention_backward(
            kc, F32, s->ring_dq, s->ring_dk_part, s->ring_dv_part, s->do_, a->q, k, v, a->o, a->lse,
            NULL, ring_positions(ctx, d, j), ring_documents(ctx, d, j), d->B, d->T, d->T, d->H,
            d->Dqk, d->Dv, ctx->softmax_scale));
        DSV3_CALL(dsv3_add(kc, F32, s->dq, s->dq, s->ring_dq, nq));
        DSV3_CALL(dsv3_add(kc, F32, dk, dk, s->ring_dk_part, nq));
        DSV3_CALL(dsv3_add(kc, F32, dv, dv, s->ring_dv_part, nv));
    }
    return DSV3_OK;
}

static Dsv3Err attention_forward(Dsv3LayerActs *a, const Dsv3ParamGroup *g, const Dims *d,
                                 const Dsv3ModelArgs *args, const Dsv3LayerContext *ctx,
                                 Dsv3LayerScratch *s) {
    const Dsv3KernelContext *kc = ctx->kernels;
    int64_t N = d->N, nope = args->qk_nope_head_dim, nv = nope + d->Dv, CR = d->C + d->R;
    float eps = (float)args->norm_eps;
    if (d->Q > 0) {
        DSV3_CALL(dsv3_linear_forward(kc, F32, a->qa, a->xn, P(g, DSV3_P_WQ_A), N, d->D, d->Q));
        DSV3_CALL(dsv3_rmsnorm_forward(kc, F32, a->qn, a->qa_rstd, a->qa, P(g, DSV3_P_Q_NORM), N,
                                       d->Q, eps));
        DSV3_CALL(
            dsv3_linear_forward(kc, F32, a->q, a->qn, P(g, DSV3_P_WQ_B), N, d->Q, d->H * d->Dqk));
    } else {
        DSV3_CALL(
            dsv3_linear_forward(kc, F32, a->q, a->xn, P(g, DSV3_P_WQ), N, d->D, d->H * d->Dqk));
    }
    DSV3_CALL(dsv3_rope_forward(kc, F32, a->q + nope, ctx->rope_cos, ctx->rope_sin, d->B, d->T,
                                d->H, d->R, d->H * d->Dqk, d->Dqk));
    // wkv_a gives the latent (N, C) and the shared rotary key (N, R) side by side.
    DSV3_CALL(dsv3_linear_forward(kc, F32, s->kva, a->xn, P(g, DSV3_P_WKV_A), N, d->D, CR));
    DSV3_CALL(dsv3_copy_columns(kc, F32, a->kvc, d->C, s->kva, CR, N, d->C));
    DSV3_CALL(dsv3_copy_columns(kc, F32, a->kpe, d->R, s->kva + d->C, CR, N, d->R));
    DSV3_CALL(dsv3_rope_forward(kc, F32, a->kpe, ctx->rope_cos, ctx->rope_sin, d->B, d->T, 1, d->R,
                                d->R, d->R));
    DSV3_CALL(dsv3_rmsnorm_forward(kc, F32, a->kvn, a->kv_rstd, a->kvc, P(g, DSV3_P_KV_NORM), N,
                                   d->C, eps));
    DSV3_CALL(dsv3_linear_forward(kc, F32, s->kvb, a->kvn, P(g, DSV3_P_WKV_B), N, d->C, d->H * nv));
    // k = [k_nope of each head, the shared k_pe]; v from the rest of wkv_b's output. Under cp
    // they go to this rank's place among every rank's, then are gathered.
    float *k = a->k, *v = a->v;
    if (d->cp > 1 && !d->ring) {
        k = s->k_ranks + ctx->cp_rank * N * d->H * d->Dqk;
        v = s->v_ranks + ctx->cp_rank * N * d->H * d->Dv;
    }
    DSV3_CALL(dsv3_mla_kv_forward(kc, F32, k, v, s->kvb, a->kpe, d->R, N, d->H, nope, d->R, d->Dv));
    if (d->ring) return ring_attention_forward(ctx, a, s, d);
    if (d->cp > 1) DSV3_CALL(cp_gather_keys(ctx, a, s, d));
    DSV3_CALL(dsv3_attention_forward(kc, F32, a->o, a->lse, a->attn_scores, a->q, a->k, a->v,
                                     ctx->q_pos, ctx->doc, d->B, d->T, d->Tk, d->H, d->Dqk, d->Dv,
                                     ctx->softmax_scale));
    return DSV3_OK;
}

static Dsv3Err swiglu_ffn_forward(const Dsv3KernelContext *kc, float *out, Dsv3LayerActs *a,
                                  const float *w1, const float *w2, const float *w3, int64_t N,
                                  int64_t D, int64_t hidden) {
    DSV3_CALL(dsv3_linear_forward(kc, F32, a->fa, a->hn, w1, N, D, hidden));
    DSV3_CALL(dsv3_linear_forward(kc, F32, a->fb, a->hn, w3, N, D, hidden));
    DSV3_CALL(dsv3_swiglu_forward(kc, F32, a->fg, a->fa, a->fb, N, hidden));
    DSV3_CALL(dsv3_linear_forward(kc, F32, out, a->fg, w2, N, hidden, D));
    return DSV3_OK;
}

// *out (Nl, D) = the MoE output of this rank's rows: the router and the routed experts on its
// own tokens, the shared experts (split over tp) on the gathered micro-batch.
static Dsv3Err moe_forward(float **out, Dsv3LayerActs *a, const Dsv3ParamGroup *g, const Dims *d,
                           const float *expert_bias, const Dsv3LayerContext *ctx,
                           Dsv3LayerScratch *s) {
    const Dsv3KernelContext *kc = ctx->kernels;
    const float *hn = local_rows(ctx, a->hn, d);
    DSV3_CALL(dsv3_linear_forward(kc, F32, a->logits, hn, P(g, DSV3_P_GATE), d->Nl, d->D, d->E));
    DSV3_CALL(dsv3_router_forward(kc, F32, a->scores, a->topk, a->weights, a->counts, a->logits,
                                  expert_bias, d->Nl, &ctx->router));
    DSV3_CALL(dsv3_moe_plan(kc, a->order, a->offsets, a->topk, d->Nl, d->K, d->E));
    DSV3_CALL(dsv3_moe_gather(kc, F32, a->xs, hn, a->order, d->M, d->K, d->D));
    DSV3_CALL(ctx->experts->forward(ctx->experts, g->layer_id, ctx->slot, F32, a->ys, a->h1, a->h3,
                                    a->xs, a->offsets));
    // The shared experts while the routed rows may be away (experts.h).
    if (d->Fs > 0) {
        DSV3_CALL(gather_input(ctx, a->hn, d));
        DSV3_CALL(swiglu_ffn_forward(kc, s->ffn_out, a, P(g, DSV3_P_SHARED_W1),
                                     P(g, DSV3_P_SHARED_W2), P(g, DSV3_P_SHARED_W3), d->N, d->D,
                                     d->Fs));
        DSV3_CALL(reduce_rows(ctx, out, s->ffn_out, s, d));
    } else {
        *out = s->ffn_out;
        DSV3_CALL(dsv3_memory_zero(kc, *out, (size_t)(d->Nl * d->D) * sizeof(float)));
    }
    DSV3_CALL(ctx->experts->finish(ctx->experts, g->layer_id));
    DSV3_CALL(
        dsv3_moe_combine_forward(kc, F32, *out, a->ys, a->weights, a->order, d->Nl, d->K, d->D));
    return DSV3_OK;
}

Dsv3Err dsv3_layer_forward(float *out, const float *x, Dsv3LayerActs *a, const Dsv3ParamGroup *g,
                           const Dsv3ModelArgs *args, const float *expert_bias,
                           const Dsv3LayerContext *ctx, Dsv3LayerScratch *s) {
    const Dsv3KernelContext *kc = ctx->kernels;
    Dims d = dims_of(args, ctx->B, ctx->T, ctx->tp, ctx->cp, ctx->cp_ring);
    float eps = (float)args->norm_eps;
    int64_t NlD = d.Nl * d.D;
    if (x != a->x)
        DSV3_CALL(
            dsv3_memory_copy(kc, a->x, x, (size_t)NlD * sizeof(float), DSV3_COPY_DEVICE_TO_DEVICE));
    DSV3_CALL(dsv3_rmsnorm_forward(kc, F32, local_rows(ctx, a->xn, &d), a->attn_rstd, a->x,
                                   P(g, DSV3_P_ATTENTION_NORM), d.Nl, d.D, eps));
    DSV3_CALL(gather_input(ctx, a->xn, &d));
    DSV3_CALL(attention_forward(a, g, &d, args, ctx, s));
    DSV3_CALL(
        dsv3_linear_forward(kc, F32, s->ffn_out, a->o, P(g, DSV3_P_WO), d.N, d.H * d.Dv, d.D));
    float *part = NULL; // this rank's rows of the attention, then of the FFN output
    DSV3_CALL(reduce_rows(ctx, &part, s->ffn_out, s, &d));
    DSV3_CALL(dsv3_add(kc, F32, a->h, a->x, part, NlD));
    DSV3_CALL(dsv3_rmsnorm_forward(kc, F32, local_rows(ctx, a->hn, &d), a->ffn_rstd, a->h,
                                   P(g, DSV3_P_FFN_NORM), d.Nl, d.D, eps));
    if (g->moe) {
        DSV3_CALL(moe_forward(&part, a, g, &d, expert_bias, ctx, s));
    } else {
        DSV3_CALL(gather_input(ctx, a->hn, &d));
        DSV3_CALL(swiglu_ffn_forward(kc, s->ffn_out, a, P(g, DSV3_P_FF_W1), P(g, DSV3_P_FF_W2),
                                     P(g, DSV3_P_FF_W3), d.N, d.D, d.I));
        DSV3_CALL(reduce_rows(ctx, &part, s->ffn_out, s, &d));
    }
    DSV3_CALL(dsv3_add(kc, F32, out, a->h, part, NlD));
    return DSV3_OK;
}

// ---- backward ----

// op mode: rebuilds the element-wise buffers from the kept matmul outputs, by the same ops.
static Dsv3Err recompute_elementwise(const Dsv3LayerContext *ctx, Dsv3LayerActs *a,
                                     const Dsv3ParamGroup *g, const Dims *d,
                                     const Dsv3ModelArgs *args) {
    const Dsv3KernelContext *kc = ctx->kernels;
    float eps = (float)args->norm_eps;
    DSV3_CALL(dsv3_rmsnorm_forward(kc, F32, local_rows(ctx, a->xn, d), a->attn_rstd, a->x,
                                   P(g, DSV3_P_ATTENTION_NORM), d->Nl, d->D, eps));
    DSV3_CALL(gather_input(ctx, a->xn, d));
    if (d->Q > 0)
        DSV3_CALL(dsv3_rmsnorm_forward(kc, F32, a->qn, a->qa_rstd, a->qa, P(g, DSV3_P_Q_NORM), d->N,
                                       d->Q, eps));
    DSV3_CALL(dsv3_rmsnorm_forward(kc, F32, a->kvn, a->kv_rstd, a->kvc, P(g, DSV3_P_KV_NORM), d->N,
                                   d->C, eps));
    DSV3_CALL(dsv3_rmsnorm_forward(kc, F32, local_rows(ctx, a->hn, d), a->ffn_rstd, a->h,
                                   P(g, DSV3_P_FFN_NORM), d->Nl, d->D, eps));
    int64_t hidden = g->moe ? d->Fs : d->I;
    if (hidden > 0) {
        DSV3_CALL(gather_input(ctx, a->hn, d));
        DSV3_CALL(dsv3_swiglu_forward(kc, F32, a->fg, a->fa, a->fb, d->N, hidden));
    }
    if (g->moe)
        DSV3_CALL(
            dsv3_moe_gather(kc, F32, a->xs, local_rows(ctx, a->hn, d), a->order, d->M, d->K, d->D));
    return DSV3_OK;
}

// q records the weight gradient of linear `slot` of g: copies of its dout (N, Out) and x (N, In),
// whose buffers the rest of the backward (or the next layer's recomputation) overwrites.
static Dsv3Err defer_weight_grad(Dsv3WeightGrads *q, const Dsv3KernelContext *kc,
                                 const Dsv3ParamGroup *g, Dsv3ParamSlot slot, const float *dout,
                                 const float *x, int64_t N, int64_t In, int64_t Out) {
    const int64_t need = N * (q->inputs_kept ? Out : In + Out);
    DSV3_CHECK(q->count < q->capacity && q->used + need <= q->n_floats, DSV3_ERR_USAGE,
               "layer %" PRId64 ": the weight-gradient queue is full (%" PRId64 " of %" PRId64
               " records, %" PRId64 " of %" PRId64 " floats used, %" PRId64
               " more needed); size it with dsv3_layer_deferred_floats",
               g->layer_id, q->count, q->capacity, q->used, q->n_floats, need);
    float *at = q->floats + q->used;
    DSV3_CALL(dsv3_memory_copy(kc, at, dout, (size_t)(N * Out) * sizeof(float),
                               DSV3_COPY_DEVICE_TO_DEVICE));
    if (!q->inputs_kept) {
        DSV3_CALL(dsv3_memory_copy(kc, at + N * Out, x, (size_t)(N * In) * sizeof(float),
                                   DSV3_COPY_DEVICE_TO_DEVICE));
        x = at + N * Out;
    }
    q->records[q->count++] = (Dsv3WeightGrad){
        .layer_id = g->layer_id, .param = slot, .N = N, .In = In, .Out = Out, .dout = at, .x = x};
    q->used += need;
    return DSV3_OK;
}

// The backward of linear `slot` of g, whose forward was (N, Out) = x (N, In) · weightᵀ: dx
// from dout (added when accumulate), and the weight's gradient added to g's, or deferred into
// ctx->defer for a split backward's W pass.
static Dsv3Err linear_backward(const Dsv3LayerContext *ctx, float *dx, Dsv3ParamGroup *g,
                               Dsv3ParamSlot slot, const float *dout, const float *x, int64_t N,
                               int64_t In, int64_t Out, int accumulate) {
    const Dsv3KernelContext *kc = ctx->kernels;
    if (!ctx->defer)
        return dsv3_linear_backward(kc, F32, dx, G(g, slot), dout, x, P(g, slot), N, In, Out,
                                    accumulate);
    DSV3_CALL(defer_weight_grad(ctx->defer, kc, g, slot, dout, x, N, In, Out));
    return dsv3_linear_backward(kc, F32, dx, NULL, dout, NULL, P(g, slot), N, In, Out, accumulate);
}

// A SwiGLU FFN's backward, first half: w2's gradient and the gradients of the hidden
// activations (s->dfa, s->dfb) from dout.
static Dsv3Err swiglu_ffn_backward_hidden(const Dsv3LayerContext *ctx, const float *dout,
                                          Dsv3LayerActs *a, Dsv3ParamGroup *g, Dsv3ParamSlot w2,
                                          int64_t N, int64_t D, int64_t hidden,
                                          Dsv3LayerScratch *s) {
    DSV3_CALL(linear_backward(ctx, s->dfg, g, w2, dout, a->fg, N, hidden, D, 0));
    return dsv3_swiglu_backward(ctx->kernels, F32, s->dfa, s->dfb, s->dfg, a->fa, a->fb, N, hidden);
}

// Second half: w1's and w3's gradients, and dn (N, D) gets (accumulate = 1: adds) the gradient
// of the FFN input.
static Dsv3Err swiglu_ffn_backward_input(const Dsv3LayerContext *ctx, float *dn, int accumulate,
                                         Dsv3LayerActs *a, Dsv3ParamGroup *g, Dsv3ParamSlot w1,
                                         Dsv3ParamSlot w3, int64_t N, int64_t D, int64_t hidden,
                                         Dsv3LayerScratch *s) {
    DSV3_CALL(linear_backward(ctx, dn, g, w1, s->dfa, a->hn, N, D, hidden, accumulate));
    return linear_backward(ctx, dn, g, w3, s->dfb, a->hn, N, D, hidden, 1);
}

// *dn (Nl, D) = the gradient of this rank's rows of the MoE input hn, from dout (Nl, D), this
// rank's rows of the output's gradient, and dout_full (N, D), every rank's.
static Dsv3Err moe_backward(float **dn, const float *dout, const float *dout_full, Dsv3LayerActs *a,
                            Dsv3ParamGroup *g, const Dims *d, const Dsv3LayerContext *ctx,
                            Dsv3LayerScratch *s) {
    const Dsv3KernelContext *kc = ctx->kernels;
    DSV3_CALL(dsv3_moe_combine_backward(kc, F32, s->dys, s->dweights, dout, a->ys, a->weights,
                                        a->order, d->Nl, d->K, d->D));
    DSV3_CALL(ctx->experts->backward(ctx->experts, g->layer_id, ctx->slot, F32, s->dxs, s->dys,
                                     a->xs, a->h1, a->h3, a->offsets));
    // While the routed gradients may be away (experts.h): what does not add into dn, so that dn
    // sums its terms in one order wherever the experts run.
    DSV3_CALL(dsv3_router_backward(kc, F32, s->dlogits, s->dweights, a->scores, a->topk, d->Nl,
                                   &ctx->router));
    if (d->Fs > 0)
        DSV3_CALL(swiglu_ffn_backward_hidden(ctx, dout_full, a, g, DSV3_P_SHARED_W2, d->N, d->D,
                                             d->Fs, s));
    DSV3_CALL(ctx->experts->finish(ctx->experts, g->layer_id));
    float *mine = ctx->tp == 1 ? s->dn : s->rows;
    *dn = mine;
    DSV3_CALL(dsv3_memory_zero(kc, mine, (size_t)(d->Nl * d->D) * sizeof(float)));
    DSV3_CALL(dsv3_moe_gather_backward(kc, F32, mine, s->dxs, a->order, d->M, d->K, d->D));
    DSV3_CALL(linear_backward(ctx, mine, g, DSV3_P_GATE, s->dlogits, local_rows(ctx, a->hn, d),
                              d->Nl, d->D, d->E, 1));
    if (d->Fs == 0) return DSV3_OK;
    if (ctx->tp == 1)
        return swiglu_ffn_backward_input(ctx, mine, 1, a, g, DSV3_P_SHARED_W1, DSV3_P_SHARED_W3,
                                         d->N, d->D, d->Fs, s);
    // The shared experts' term: partial over tp, reduce-scattered on its own, then added.
    DSV3_CALL(swiglu_ffn_backward_input(ctx, s->dn, 0, a, g, DSV3_P_SHARED_W1, DSV3_P_SHARED_W3,
                                        d->N, d->D, d->Fs, s));
    DSV3_CALL(dsv3_layer_sp_reduce(ctx, s->dx, s->dn, d->Nl, d->D));
    return dsv3_add(kc, F32, mine, mine, s->dx, d->Nl * d->D);
}

// dn (N, D) = gradient of the attention input xn (of this rank's heads: partial under tp), from
// dy (N, D), the gradient of wo's output.
static Dsv3Err attention_backward(float *dn, const float *dy, Dsv3LayerActs *a, Dsv3ParamGroup *g,
                                  const Dims *d, const Dsv3ModelArgs *args,
                                  const Dsv3LayerContext *ctx, Dsv3LayerScratch *s) {
    const Dsv3KernelContext *kc = ctx->kernels;
    int64_t N = d->N, nope = args->qk_nope_head_dim, nv = nope + d->Dv, CR = d->C + d->R;
    DSV3_CALL(linear_backward(ctx, s->do_, g, DSV3_P_WO, dy, a->o, N, d->H * d->Dv, d->D, 0));
    const int gathered = d->cp > 1 && !d->ring;
    if (d->ring) {
        DSV3_CALL(ring_attention_backward(ctx, a, s, d));
    } else {
        DSV3_CALL(dsv3_attention_backward(kc, F32, s->dq, gathered ? s->dk_keys : s->dk,
                                          gathered ? s->dv_keys : s->dv, s->do_, a->q, a->k, a->v,
                                          a->o, a->lse, a->attn_scores, ctx->q_pos, ctx->doc, d->B,
                                          d->T, d->Tk, d->H, d->Dqk, d->Dv, ctx->softmax_scale));
    }
    if (gathered) DSV3_CALL(cp_reduce_keys(ctx, s, d));
    // Undo the assembly of k and v: per-head k_nope and v go back to wkv_b's output; the
    // shared k_pe receives the sum over heads.
    DSV3_CALL(dsv3_mla_kv_backward(kc, F32, s->dkvb, s->dkva + d->C, CR, s->dk, s->dv, N, d->H,
                                   nope, d->R, d->Dv));
    DSV3_CALL(dsv3_rope_backward(kc, F32, s->dkva + d->C, ctx->rope_cos, ctx->rope_sin, d->B, d->T,
                                 1, d->R, CR, d->R));
    DSV3_CALL(
        linear_backward(ctx, s->dkvn, g, DSV3_P_WKV_B, s->dkvb, a->kvn, N, d->C, d->H * nv, 0));
    DSV3_CALL(dsv3_rmsnorm_backward(kc, F32, s->dkvc, G(g, DSV3_P_KV_NORM), s->dkvn, a->kvc,
                                    P(g, DSV3_P_KV_NORM), a->kv_rstd, N, d->C));
    DSV3_CALL(dsv3_copy_columns(kc, F32, s->dkva, CR, s->dkvc, d->C, N, d->C));
    DSV3_CALL(dsv3_rope_backward(kc, F32, s->dq + nope, ctx->rope_cos, ctx->rope_sin, d->B, d->T,
                                 d->H, d->R, d->H * d->Dqk, d->Dqk));
    if (d->Q > 0) {
        DSV3_CALL(
            linear_backward(ctx, s->dqn, g, DSV3_P_WQ_B, s->dq, a->qn, N, d->Q, d->H * d->Dqk, 0));
        DSV3_CALL(dsv3_rmsnorm_backward(kc, F32, s->dqa, G(g, DSV3_P_Q_NORM), s->dqn, a->qa,
                                        P(g, DSV3_P_Q_NORM), a->qa_rstd, N, d->Q));
        DSV3_CALL(linear_backward(ctx, dn, g, DSV3_P_WQ_A, s->dqa, a->xn, N, d->D, d->Q, 0));
    } else {
        DSV3_CALL(linear_backward(ctx, dn, g, DSV3_P_WQ, s->dq, a->xn, N, d->D, d->H * d->Dqk, 0));
    }
    DSV3_CALL(linear_backward(ctx, dn, g, DSV3_P_WKV_A, s->dkva, a->xn, N, d->D, CR, 1));
    return DSV3_OK;
}

Dsv3Err dsv3_layer_backward(float *dx, const float *dout, Dsv3LayerActs *a, Dsv3ParamGroup *g,
                            const Dsv3ModelArgs *args, const float *expert_bias,
                            const Dsv3LayerContext *ctx, Dsv3LayerScratch *s,
                            Dsv3LayerActs *shared) {
    const Dsv3KernelContext *kc = ctx->kernels;
    Dims d = dims_of(args, ctx->B, ctx->T, ctx->tp, ctx->cp, ctx->cp_ring);
    int64_t NlD = d.Nl * d.D;
    // Deferred weight gradients read the layer's own inputs where nothing recomputes them.
    if (ctx->defer) ctx->defer->inputs_kept = a->mode == DSV3_AC_NONE;
    if (a->mode == DSV3_AC_FULL) {
        // Rerun the whole block into the shared buffers; its output is not needed.
        DSV3_CALL(dsv3_layer_forward(s->dh, a->x, shared, g, args, expert_bias, ctx, s));
        a = shared;
    } else if (a->mode == DSV3_AC_OP) {
        DSV3_CALL(recompute_elementwise(ctx, a, g, &d, args));
    }
    // out = h + ffn(ffn_norm(h)): dh = dout + ffn_norm' · ffn'(dout). Under tp the FFN (or the
    // shared experts) sees every rank's rows of dout; dn is this rank's rows.
    const float *dout_full = NULL;
    DSV3_CALL(gather_rows(ctx, &dout_full, dout, s, &d));
    float *dn = NULL;
    if (g->moe) {
        DSV3_CALL(moe_backward(&dn, dout, dout_full, a, g, &d, ctx, s));
    } else {
        DSV3_CALL(swiglu_ffn_backward_hidden(ctx, dout_full, a, g, DSV3_P_FF_W2, d.N, d.D, d.I, s));
        DSV3_CALL(swiglu_ffn_backward_input(ctx, s->dn, 0, a, g, DSV3_P_FF_W1, DSV3_P_FF_W3, d.N,
                                            d.D, d.I, s));
        DSV3_CALL(reduce_rows(ctx, &dn, s->dn, s, &d));
    }
    DSV3_CALL(dsv3_rmsnorm_backward(kc, F32, s->dx, G(g, DSV3_P_FFN_NORM), dn, a->h,
                                    P(g, DSV3_P_FFN_NORM), a->ffn_rstd, d.Nl, d.D));
    DSV3_CALL(dsv3_add(kc, F32, s->dh, dout, s->dx, NlD));
    // h = x + wo · mla(attention_norm(x)).
    const float *dy = NULL;
    DSV3_CALL(gather_rows(ctx, &dy, s->dh, s, &d));
    DSV3_CALL(attention_backward(s->dn, dy, a, g, &d, args, ctx, s));
    DSV3_CALL(reduce_rows(ctx, &dn, s->dn, s, &d));
    DSV3_CALL(dsv3_rmsnorm_backward(kc, F32, s->dx, G(g, DSV3_P_ATTENTION_NORM), dn, a->x,
                                    P(g, DSV3_P_ATTENTION_NORM), a->attn_rstd, d.Nl, d.D));
    DSV3_CALL(dsv3_add(kc, F32, dx, s->dh, s->dx, NlD));
    return DSV3_OK;
}

// ---- split backward ----

int64_t dsv3_layer_deferred_floats(const Dsv3ModelArgs *args, int moe, Dsv3AcMode mode, int64_t B,
                                   int64_t T, int64_t tp, int64_t cp, int cp_ring) {
    Dims d = dims_of(args, B, T, tp, cp, cp_ring);
    const int64_t qk = d.H * d.Dqk, kv = d.H * (args->qk_nope_head_dim + d.Dv);
    const int64_t hidden = moe ? d.Fs : d.I;
    const int copies = mode != DSV3_AC_NONE; // the inputs too (defer_weight_grad)
    // On the N gathered rows, Out (and In) of each linear: wq, or wq_a and wq_b; wkv_a, wkv_b,
    // wo; the dense FFN's or the shared experts' w1, w3 (D → hidden) and w2 (hidden → D).
    int64_t out = (d.Q > 0 ? d.Q + qk : qk) + (d.C + d.R) + kv + d.D;
    int64_t in = (d.Q > 0 ? d.D + d.Q : d.D) + d.D + d.C + d.H * d.Dv;
    if (hidden > 0) {
        out += 2 * hidden + d.D;
        in += 2 * d.D + hidden;
    }
    // The router gate (D → E) runs on this rank's Nl rows.
    const int64_t gate = moe ? d.Nl * (d.E + (copies ? d.D : 0)) : 0;
    return d.N * (out + (copies ? in : 0)) + gate;
}

Dsv3Err dsv3_layer_weight_grads_create(Dsv3WeightGrads *q, Dsv3Arena *arena, int64_t records,
                                       int64_t n_floats) {
    *q = (Dsv3WeightGrads){.capacity = records, .n_floats = n_floats};
    DSV3_CALL(DSV3_ARENA_TABLE(arena, q->records, records, "deferred weight gradients"));
    return DSV3_ARENA_ARRAY(arena, q->floats, n_floats, "deferred weight gradients' inputs");
}

Dsv3Err dsv3_layer_weight_grads_run(const Dsv3KernelContext *kc, const Dsv3WeightGrads *q,
                                    int64_t *next, Dsv3ParamGroup *g) {
    for (; *next < q->count && q->records[*next].layer_id == g->layer_id; (*next)++) {
        const Dsv3WeightGrad *r = &q->records[*next];
        DSV3_CALL(dsv3_linear_backward(kc, F32, NULL, G(g, r->param), r->dout, r->x, NULL, r->N,
                                       r->In, r->Out, 0));
    }
    return DSV3_OK;
}
