// params: shapes of every slot, flat-buffer layout and initialisation.
//
// Legend: D dim, V vocab, H heads, Dqk = qk_nope + qk_rope head dims, R qk_rope, Dv v head
// dim, Q q_lora_rank, C kv_lora_rank, F moe_inter_dim, Fs = F × num_shared_experts,
// E num_experts, I inter_dim.
#include "params.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/core/alloc.h"
#include "common/core/rng.h"

#define DSV3_PARAM_SLOT_SUFFIX(slot, suffix) suffix,
static const char *const slot_suffix[DSV3_PARAM_SLOT_COUNT] = {
    DSV3_PARAM_SLOTS(DSV3_PARAM_SLOT_SUFFIX)};
#undef DSV3_PARAM_SLOT_SUFFIX

// torchtitan's standard deviation for most weights, and its truncation bounds: absolute ±2,
// i.e. no truncation in practice at std 0.02 (torch.nn.init.trunc_normal_'s defaults).
static const double INIT_STD = 0.02, INIT_CUT = 2.0;
// The output head: std dim^-0.5, truncated at ±3 σ.
static const double OUTPUT_CUT_SIGMAS = 3.0;

typedef enum {
    INIT_ONES,
    INIT_NORMAL,
    INIT_TRUNC_STD,
    INIT_TRUNC_DEPTH,
    INIT_TRUNC_OUTPUT
} InitKind;

static void set_shape(Dsv3Param *p, int ndim, int64_t d0, int64_t d1, int64_t d2) {
    p->ndim = ndim;
    p->shape[0] = d0, p->shape[1] = d1, p->shape[2] = d2;
    p->numel = d0 * (ndim > 1 ? d1 : 1) * (ndim > 2 ? d2 : 1);
}

// The shape of `slot` in a group, or no shape (numel 0) when the group has no such slot.
static void slot_shape(Dsv3Param *p, Dsv3ParamSlot slot, const Dsv3ModelArgs *a, Dsv3GroupKind kind,
                       int moe) {
    int64_t D = a->dim, H = a->n_heads, Dqk = a->qk_nope_head_dim + a->qk_rope_head_dim;
    int64_t Q = a->q_lora_rank, C = a->kv_lora_rank, F = a->moe_inter_dim, E = a->num_experts;
    int64_t Fs = F * a->num_shared_experts;
    int layer = kind == DSV3_GROUP_LAYER, dense = layer && !moe, shared = moe && Fs > 0;
    p->numel = 0;
    switch (slot) {
    case DSV3_P_TOK_EMBEDDINGS:
        if (kind == DSV3_GROUP_EMBEDDING) set_shape(p, 2, a->vocab_size, D, 0);
        break;
    case DSV3_P_ATTENTION_NORM:
        if (layer) set_shape(p, 1, D, 0, 0);
        break;
    case DSV3_P_WQ:
        if (layer && Q == 0) set_shape(p, 2, H * Dqk, D, 0);
        break;
    case DSV3_P_WQ_A:
        if (layer && Q > 0) set_shape(p, 2, Q, D, 0);
        break;
    case DSV3_P_Q_NORM:
        if (layer && Q > 0) set_shape(p, 1, Q, 0, 0);
        break;
    case DSV3_P_WQ_B:
        if (layer && Q > 0) set_shape(p, 2, H * Dqk, Q, 0);
        break;
    case DSV3_P_WKV_A:
        if (layer) set_shape(p, 2, C + a->qk_rope_head_dim, D, 0);
        break;
    case DSV3_P_KV_NORM:
        if (layer) set_shape(p, 1, C, 0, 0);
        break;
    case DSV3_P_WKV_B:
        if (layer) set_shape(p, 2, H * (a->qk_nope_head_dim + a->v_head_dim), C, 0);
        break;
    case DSV3_P_WO:
        if (layer) set_shape(p, 2, D, H * a->v_head_dim, 0);
        break;
    case DSV3_P_FFN_NORM:
        if (layer) set_shape(p, 1, D, 0, 0);
        break;
    case DSV3_P_FF_W1:
        if (dense) set_shape(p, 2, a->inter_dim, D, 0);
        break;
    case DSV3_P_FF_W2:
        if (dense) set_shape(p, 2, D, a->inter_dim, 0);
        break;
    case DSV3_P_FF_W3:
        if (dense) set_shape(p, 2, a->inter_dim, D, 0);
        break;
    case DSV3_P_GATE:
        if (moe) set_shape(p, 2, E, D, 0);
        break;
    case DSV3_P_EXPERTS_W1:
        if (moe) set_shape(p, 3, E, F, D);
        break;
    case DSV3_P_EXPERTS_W2:
        if (moe) set_shape(p, 3, E, D, F);
        break;
    case DSV3_P_EXPERTS_W3:
        if (moe) set_shape(p, 3, E, F, D);
        break;
    case DSV3_P_SHARED_W1:
        if (shared) set_shape(p, 2, Fs, D, 0);
        break;
    case DSV3_P_SHARED_W2:
        if (shared) set_shape(p, 2, D, Fs, 0);
        break;
    case DSV3_P_SHARED_W3:
        if (shared) set_shape(p, 2, Fs, D, 0);
        break;
    case DSV3_P_NORM:
        if (kind == DSV3_GROUP_HEAD) set_shape(p, 1, D, 0, 0);
        break;
    case DSV3_P_OUTPUT:
        if (kind == DSV3_GROUP_HEAD) set_shape(p, 2, a->vocab_size, D, 0);
        break;
    case DSV3_PARAM_SLOT_COUNT: break;
    }
}

static InitKind slot_init(Dsv3ParamSlot slot) {
    switch (slot) {
    case DSV3_P_TOK_EMBEDDINGS: return INIT_NORMAL;
    case DSV3_P_ATTENTION_NORM:
    case DSV3_P_Q_NORM:
    case DSV3_P_KV_NORM:
    case DSV3_P_FFN_NORM:
    case DSV3_P_NORM: return INIT_ONES;
    case DSV3_P_WO:
    case DSV3_P_FF_W2:
    case DSV3_P_FF_W3:
    case DSV3_P_GATE:
    case DSV3_P_EXPERTS_W2:
    case DSV3_P_EXPERTS_W3:
    case DSV3_P_SHARED_W2:
    case DSV3_P_SHARED_W3: return INIT_TRUNC_DEPTH;
    case DSV3_P_OUTPUT: return INIT_TRUNC_OUTPUT;
    default: return INIT_TRUNC_STD;
    }
}

void dsv3_param_group_layout(Dsv3ParamGroup *g, const Dsv3ModelArgs *args, Dsv3GroupKind kind,
                             int64_t layer_id) {
    memset(g, 0, sizeof *g);
    g->kind = kind;
    g->layer_id = kind == DSV3_GROUP_LAYER ? layer_id : -1;
    g->moe = kind == DSV3_GROUP_LAYER && layer_id >= args->n_dense_layers;
    for (int s = 0; s < DSV3_PARAM_SLOT_COUNT; s++) {
        Dsv3Param *p = &g->params[s];
        slot_shape(p, (Dsv3ParamSlot)s, args, kind, g->moe);
        if (!p->numel) continue;
        if (kind == DSV3_GROUP_LAYER)
            snprintf(p->fqn, sizeof p->fqn, "layers.%lld.%s", (long long)layer_id, slot_suffix[s]);
        else
            snprintf(p->fqn, sizeof p->fqn, "%s", slot_suffix[s]);
        p->offset = g->numel;
        g->numel += p->numel;
    }
}

Dsv3Err dsv3_param_group_create(Dsv3ParamGroup *g, const Dsv3ModelArgs *args, Dsv3GroupKind kind,
                                int64_t layer_id) {
    dsv3_param_group_layout(g, args, kind, layer_id);
    Dsv3Err err = DSV3_OK;
    const char *what = kind == DSV3_GROUP_LAYER ? "layer parameters" : "embedding/head parameters";
    size_t n = (size_t)g->numel;
    DSV3_CALL_GOTO(err, fail, dsv3_alloc((void **)&g->data, n * sizeof(float), what));
    DSV3_CALL_GOTO(err, fail, dsv3_calloc((void **)&g->grad, n, sizeof(float), "gradients"));
    DSV3_CALL_GOTO(err, fail, dsv3_calloc((void **)&g->adam_m, n, sizeof(float), "AdamW exp_avg"));
    DSV3_CALL_GOTO(err, fail,
                   dsv3_calloc((void **)&g->adam_v, n, sizeof(float), "AdamW exp_avg_sq"));
    for (int s = 0; s < DSV3_PARAM_SLOT_COUNT; s++) {
        Dsv3Param *p = &g->params[s];
        if (!p->numel) continue;
        p->data = g->data + p->offset;
        p->grad = g->grad + p->offset;
    }
    return DSV3_OK;
fail:
    dsv3_param_group_destroy(g);
    return err;
}

void dsv3_param_group_destroy(Dsv3ParamGroup *g) {
    dsv3_free(g->data);
    dsv3_free(g->grad);
    dsv3_free(g->adam_m);
    dsv3_free(g->adam_v);
    g->data = g->grad = g->adam_m = g->adam_v = NULL;
}

void dsv3_param_group_init(Dsv3ParamGroup *g, const Dsv3ModelArgs *args, uint64_t seed) {
    // torchtitan: weight_init_std = 0.02 / sqrt(2 (layer_id + 1)).
    double depth_std = INIT_STD / sqrt(2.0 * (double)(g->layer_id + 1));
    double output_std = 1.0 / sqrt((double)args->dim);
    for (int s = 0; s < DSV3_PARAM_SLOT_COUNT; s++) {
        Dsv3Param *p = &g->params[s];
        if (!p->numel) continue;
        InitKind kind = slot_init((Dsv3ParamSlot)s);
        uint64_t key = dsv3_rng_key(seed, p->fqn);
        for (int64_t i = 0; i < p->numel; i++) {
            double x = 1.0;
            switch (kind) {
            case INIT_ONES: break;
            case INIT_NORMAL: x = dsv3_rng_normal(key, (uint64_t)i); break;
            case INIT_TRUNC_STD:
                x = dsv3_rng_trunc_normal(key, (uint64_t)i, 0, INIT_STD, -INIT_CUT, INIT_CUT);
                break;
            case INIT_TRUNC_DEPTH:
                x = dsv3_rng_trunc_normal(key, (uint64_t)i, 0, depth_std, -INIT_CUT, INIT_CUT);
                break;
            case INIT_TRUNC_OUTPUT: {
                double cut = OUTPUT_CUT_SIGMAS * output_std;
                x = dsv3_rng_trunc_normal(key, (uint64_t)i, 0, output_std, -cut, cut);
                break;
            }
            }
            p->data[i] = (float)x;
        }
    }
}
