// params: the table's rows as data, group layouts for a shard spec, and initialisation.
// Legend as in params.h; a "piece" is a rank's tensor-parallel (or expert-parallel) part of a
// tensor, a "shard" its FSDP rows of that piece.
#include "params.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/core/alloc.h"
#include "common/core/rng.h"

const Dsv3ShardSpec dsv3_shard_none = {.tp = 1, .fsdp = 1, .ep = 1};

// torchtitan's standard deviation for most weights, and its truncation bounds: absolute ±2,
// i.e. no truncation in practice at std 0.02 (torch.nn.init.trunc_normal_'s defaults).
static const double INIT_STD = 0.02, INIT_CUT = 2.0;
// The output head: std dim^-0.5, truncated at ±3 σ.
static const double OUTPUT_CUT_SIGMAS = 3.0;

// One row of DSV3_PARAM_SLOTS, with its shape evaluated.
typedef struct {
    const char *suffix, *hf;
    Dsv3GroupKind group;
    Dsv3ParamWhen when;
    int ndim;
    int64_t shape[DSV3_PARAM_MAX_DIMS];
    Dsv3ParamInit init;
    Dsv3TpPlacement tp;
} SlotRow;

static SlotRow slot_row(Dsv3ParamSlot slot, const Dsv3ParamDims *dims) {
    const Dsv3ParamDims s = *dims; // the name the table's shape expressions use
#define DSV3_PARAM_SLOT_ROW(SLOT, fqn_suffix, hf_name, group_, when_, ndim_, d0, d1, d2, init_,    \
                            tp_)                                                                   \
    case DSV3_P_##SLOT:                                                                            \
        return (SlotRow){.suffix = fqn_suffix,                                                     \
                         .hf = hf_name,                                                            \
                         .group = DSV3_GROUP_##group_,                                             \
                         .when = DSV3_WHEN_##when_,                                                \
                         .ndim = ndim_,                                                            \
                         .shape = {d0, d1, d2},                                                    \
                         .init = DSV3_INIT_##init_,                                                \
                         .tp = DSV3_TP_##tp_};
    switch (slot) {
        DSV3_PARAM_SLOTS(DSV3_PARAM_SLOT_ROW)
    case DSV3_PARAM_SLOT_COUNT: break;
    }
#undef DSV3_PARAM_SLOT_ROW
    return (SlotRow){0};
}

const char *dsv3_group_kind_name(Dsv3GroupKind kind) {
    static const char *const names[DSV3_GROUP_KIND_COUNT] = {"embedding", "layer", "experts",
                                                             "head"};
    return (unsigned)kind < DSV3_GROUP_KIND_COUNT ? names[kind] : "unknown";
}

// The rows' names and groups do not depend on the dimensions.
static SlotRow slot_names(Dsv3ParamSlot slot) {
    const Dsv3ParamDims none = {0};
    return slot_row(slot, &none);
}

const char *dsv3_param_slot_suffix(Dsv3ParamSlot slot) { return slot_names(slot).suffix; }

const char *dsv3_param_slot_hf_name(Dsv3ParamSlot slot) { return slot_names(slot).hf; }

Dsv3GroupKind dsv3_param_slot_group(Dsv3ParamSlot slot) { return slot_names(slot).group; }

void dsv3_param_dims(const Dsv3ModelArgs *a, Dsv3ParamDims *out) {
    *out = (Dsv3ParamDims){.V = a->vocab_size,
                           .D = a->dim,
                           .H = a->n_heads,
                           .Dqk = a->qk_nope_head_dim + a->qk_rope_head_dim,
                           .nope = a->qk_nope_head_dim,
                           .R = a->qk_rope_head_dim,
                           .Dv = a->v_head_dim,
                           .Q = a->q_lora_rank,
                           .C = a->kv_lora_rank,
                           .Fd = a->inter_dim,
                           .E = a->num_experts,
                           .F = a->moe_inter_dim,
                           .Fs = a->moe_inter_dim * a->num_shared_experts};
}

static int is_moe_layer(const Dsv3ModelArgs *a, int64_t layer_id) {
    return layer_id >= a->n_dense_layers;
}

static int when_holds(Dsv3ParamWhen when, const Dsv3ModelArgs *a, int64_t layer_id) {
    switch (when) {
    case DSV3_WHEN_ALWAYS: return 1;
    case DSV3_WHEN_Q_FULL: return a->q_lora_rank == 0;
    case DSV3_WHEN_Q_LORA: return a->q_lora_rank > 0;
    case DSV3_WHEN_DENSE_FFN: return !is_moe_layer(a, layer_id);
    case DSV3_WHEN_MOE: return is_moe_layer(a, layer_id);
    case DSV3_WHEN_MOE_SHARED: return is_moe_layer(a, layer_id) && a->num_shared_experts > 0;
    }
    return 0;
}

int dsv3_param_group_exists(const Dsv3ModelArgs *a, Dsv3GroupKind kind, int64_t layer_id) {
    switch (kind) {
    case DSV3_GROUP_EMBEDDING:
    case DSV3_GROUP_HEAD: return 1;
    case DSV3_GROUP_LAYER: return layer_id >= 0 && layer_id < a->n_layers;
    case DSV3_GROUP_EXPERTS:
        return layer_id >= 0 && layer_id < a->n_layers && is_moe_layer(a, layer_id);
    }
    return 0;
}

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

static int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }

void dsv3_param_chunk(int64_t n, int64_t parts, int64_t k, int64_t *start, int64_t *count) {
    int64_t size = ceil_div(n, parts);
    *start = min_i64(k * size, n);
    *count = min_i64(size, n - *start);
}

static Dsv3Err check_spec(const Dsv3ShardSpec *s) {
    DSV3_CHECK(s->tp >= 1 && s->tp_rank >= 0 && s->tp_rank < s->tp && s->fsdp >= 1 &&
                   s->fsdp_rank >= 0 && s->fsdp_rank < s->fsdp && s->ep >= 1 && s->ep_rank >= 0 &&
                   s->ep_rank < s->ep,
               DSV3_ERR_USAGE,
               "shard spec: tp %" PRId64 " rank %" PRId64 ", fsdp %" PRId64 " rank %" PRId64
               ", ep %" PRId64 " rank %" PRId64 ": every degree must be ≥ 1 and every rank "
               "inside its degree",
               s->tp, s->tp_rank, s->fsdp, s->fsdp_rank, s->ep, s->ep_rank);
    return DSV3_OK;
}

// The piece of `p` (shape set) that this rank holds: p->local, starting at p->piece_start.
static void lay_out_piece(Dsv3Param *p, Dsv3GroupKind kind, const Dsv3ShardSpec *s) {
    int64_t *piece_start = p->piece_start;
    for (int d = 0; d < DSV3_PARAM_MAX_DIMS; d++) {
        p->local[d] = d < p->ndim ? p->shape[d] : 0;
        piece_start[d] = 0;
    }
    int dim = -1;
    int64_t parts = 1, k = 0;
    if (kind == DSV3_GROUP_EXPERTS && s->ep > 1) {
        dim = 0, parts = s->ep, k = s->ep_rank;
    } else if (s->tp > 1 && p->tp != DSV3_TP_REPLICATE) {
        dim = p->tp == DSV3_TP_ROWWISE ? 1 : 0, parts = s->tp, k = s->tp_rank;
    }
    if (dim >= 0) dsv3_param_chunk(p->shape[dim], parts, k, &piece_start[dim], &p->local[dim]);
    p->local_numel = 1;
    for (int d = 0; d < p->ndim; d++)
        p->local_numel *= p->local[d];
}

// The FSDP shard of the piece and its box.
static void lay_out_shard(Dsv3Param *p, const Dsv3ShardSpec *s) {
    const int64_t *piece_start = p->piece_start;
    int64_t rows = p->local[0];
    p->shard_rows = ceil_div(rows, s->fsdp);
    dsv3_param_chunk(rows, s->fsdp, s->fsdp_rank, &p->shard_row0, &p->real_rows);
    memset(&p->box, 0, sizeof p->box);
    for (int d = 0; d < p->ndim; d++) {
        p->box.start[d] = piece_start[d];
        p->box.count[d] = p->local[d];
    }
    p->box.start[0] += p->shard_row0;
    p->box.count[0] = p->real_rows;
}

int64_t dsv3_param_shard_numel(const Dsv3Param *p) {
    return p->shard_rows * (p->local_numel / (p->local[0] ? p->local[0] : 1));
}

Dsv3Err dsv3_param_group_layout(Dsv3ParamGroup *g, const Dsv3ModelArgs *args, Dsv3GroupKind kind,
                                int64_t layer_id, const Dsv3ShardSpec *spec) {
    DSV3_CALL(check_spec(spec));
    int layered = kind == DSV3_GROUP_LAYER || kind == DSV3_GROUP_EXPERTS;
    DSV3_CHECK(dsv3_param_group_exists(args, kind, layer_id), DSV3_ERR_USAGE,
               "params: the model has no %s group for layer %" PRId64 " (%" PRId64
               " layers, the first %" PRId64 " dense)",
               dsv3_group_kind_name(kind), layer_id, args->n_layers, args->n_dense_layers);
    DSV3_CHECK(kind != DSV3_GROUP_EXPERTS || args->num_experts % spec->ep == 0, DSV3_ERR_USAGE,
               "params: ep %" PRId64 " does not divide the %" PRId64 " routed experts", spec->ep,
               args->num_experts);
    memset(g, 0, sizeof *g);
    g->kind = kind;
    g->layer_id = layered ? layer_id : -1;
    g->moe = layered && is_moe_layer(args, layer_id);
    g->spec = *spec;
    Dsv3ParamDims dims;
    dsv3_param_dims(args, &dims);
    for (int slot = 0; slot < DSV3_PARAM_SLOT_COUNT; slot++) {
        SlotRow row = slot_row((Dsv3ParamSlot)slot, &dims);
        Dsv3Param *p = &g->params[slot];
        if (row.group != kind || !when_holds(row.when, args, layer_id)) continue;
        p->ndim = row.ndim;
        p->numel = 1;
        for (int d = 0; d < row.ndim; d++) {
            p->shape[d] = row.shape[d];
            p->numel *= row.shape[d];
        }
        p->init = row.init;
        p->tp = row.tp;
        if (layered)
            snprintf(p->fqn, sizeof p->fqn, "layers.%" PRId64 ".%s", layer_id, row.suffix);
        else
            snprintf(p->fqn, sizeof p->fqn, "%s", row.suffix);
        lay_out_piece(p, kind, spec);
        lay_out_shard(p, spec);
        p->offset = g->numel;
        g->numel += p->local_numel;
        p->shard_offset = g->shard_numel;
        g->shard_numel += dsv3_param_shard_numel(p);
    }
    return DSV3_OK;
}

void dsv3_param_group_bind(Dsv3ParamGroup *g, float *data, float *grad) {
    g->data = data;
    g->grad = grad;
    for (int s = 0; s < DSV3_PARAM_SLOT_COUNT; s++) {
        Dsv3Param *p = &g->params[s];
        p->data = p->numel && data ? data + p->offset : NULL;
        p->grad = p->numel && grad ? grad + p->offset : NULL;
    }
}

int64_t dsv3_box_numel(const Dsv3Box *box, int ndim) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= box->count[d];
    return n;
}

// The initial value of global element `index` of `p`.
static float init_value(const Dsv3Param *p, uint64_t key, uint64_t index, double depth_std,
                        double output_std) {
    double x = 1.0;
    switch (p->init) {
    case DSV3_INIT_ONES: break;
    case DSV3_INIT_NORMAL: x = dsv3_rng_normal(key, index); break;
    case DSV3_INIT_TRUNC_STD:
        x = dsv3_rng_trunc_normal(key, index, 0, INIT_STD, -INIT_CUT, INIT_CUT);
        break;
    case DSV3_INIT_TRUNC_DEPTH:
        x = dsv3_rng_trunc_normal(key, index, 0, depth_std, -INIT_CUT, INIT_CUT);
        break;
    case DSV3_INIT_TRUNC_OUTPUT: {
        double cut = OUTPUT_CUT_SIGMAS * output_std;
        x = dsv3_rng_trunc_normal(key, index, 0, output_std, -cut, cut);
        break;
    }
    }
    return (float)x;
}

void dsv3_param_init_box(const Dsv3Param *p, int64_t layer_id, const Dsv3ModelArgs *args,
                         uint64_t seed, const Dsv3Box *box, float *out) {
    // torchtitan: weight_init_std = 0.02 / sqrt(2 (layer_id + 1)).
    double depth_std = INIT_STD / sqrt(2.0 * (double)(layer_id + 1));
    double output_std = 1.0 / sqrt((double)args->dim);
    uint64_t key = dsv3_rng_key(seed, p->fqn);
    int64_t n = dsv3_box_numel(box, p->ndim);
    int64_t inner[DSV3_PARAM_MAX_DIMS] = {1, 1, 1}; // box elements per step of each dim
    for (int d = p->ndim - 2; d >= 0; d--)
        inner[d] = inner[d + 1] * box->count[d + 1];
    for (int64_t i = 0; i < n; i++) {
        int64_t index = 0, rest = i;
        for (int d = 0; d < p->ndim; d++) {
            int64_t at = rest / inner[d];
            rest -= at * inner[d];
            index = index * p->shape[d] + box->start[d] + at;
        }
        out[i] = init_value(p, key, (uint64_t)index, depth_std, output_std);
    }
}

void dsv3_param_group_init_shard(const Dsv3ParamGroup *g, const Dsv3ModelArgs *args, uint64_t seed,
                                 float *shard) {
    memset(shard, 0, (size_t)g->shard_numel * sizeof *shard);
    for (int s = 0; s < DSV3_PARAM_SLOT_COUNT; s++) {
        const Dsv3Param *p = &g->params[s];
        if (!p->numel || !p->real_rows) continue;
        dsv3_param_init_box(p, g->layer_id, args, seed, &p->box, shard + p->shard_offset);
    }
}

Dsv3StageRange dsv3_stage_range_whole(const Dsv3ModelArgs *args) {
    return (Dsv3StageRange){.first_layer = 0,
                            .n_layers = args->n_layers,
                            .first = 1,
                            .last = 1,
                            .dense = 1,
                            .routed = 1};
}

// The groups of `range` in order: their kinds and layers (when the arrays are not NULL);
// returns how many.
static int list_stage_groups(const Dsv3ModelArgs *args, const Dsv3StageRange *range,
                             Dsv3GroupKind *kinds, int64_t *layers) {
    int n = 0;
#define ADD_GROUP(kind, layer)                                                                     \
    do {                                                                                           \
        if (kinds) kinds[n] = (kind), layers[n] = (layer);                                         \
        n++;                                                                                       \
    } while (0)
    if (range->dense && range->first) ADD_GROUP(DSV3_GROUP_EMBEDDING, -1);
    for (int64_t l = range->first_layer; l < range->first_layer + range->n_layers; l++) {
        if (range->dense) ADD_GROUP(DSV3_GROUP_LAYER, l);
        if (range->routed && is_moe_layer(args, l)) ADD_GROUP(DSV3_GROUP_EXPERTS, l);
    }
    if (range->dense && range->last) ADD_GROUP(DSV3_GROUP_HEAD, -1);
#undef ADD_GROUP
    return n;
}

int dsv3_param_stage_group_count(const Dsv3ModelArgs *args, const Dsv3StageRange *range) {
    return list_stage_groups(args, range, NULL, NULL);
}

Dsv3Err dsv3_param_stage_groups(const Dsv3ModelArgs *args, const Dsv3StageRange *range,
                                const Dsv3ShardSpec *spec, Dsv3ParamGroup *out) {
    DSV3_CHECK(range->first_layer >= 0 && range->n_layers >= 0 &&
                   range->first_layer + range->n_layers <= args->n_layers,
               DSV3_ERR_USAGE,
               "params: stage layers [%" PRId64 ", %" PRId64 ") outside the model's %" PRId64,
               range->first_layer, range->first_layer + range->n_layers, args->n_layers);
    int n = list_stage_groups(args, range, NULL, NULL);
    Dsv3GroupKind *kinds = NULL;
    int64_t *layers = NULL;
    Dsv3Err err = dsv3_calloc((void **)&kinds, (size_t)n, sizeof *kinds, "stage group kinds");
    if (err == DSV3_OK)
        err = dsv3_calloc((void **)&layers, (size_t)n, sizeof *layers, "stage group layers");
    if (err == DSV3_OK) list_stage_groups(args, range, kinds, layers);
    for (int i = 0; i < n && err == DSV3_OK; i++)
        err = dsv3_param_group_layout(&out[i], args, kinds[i], layers[i], spec);
    dsv3_free(kinds);
    dsv3_free(layers);
    DSV3_CALL(err);
    return DSV3_OK;
}
