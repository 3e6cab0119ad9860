// tensors: a model's or a rank's checkpoint tensors as one flat list, in group order.
#include "tensors.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/ckpt/hf_names.h"
#include "common/core/alloc.h"

const char *dsv3_ckpt_shape_text(int ndim, const int64_t *shape, char out[96]) {
    size_t n = (size_t)snprintf(out, 96, "(");
    for (int d = 0; d < ndim && n < 96; d++)
        n += (size_t)snprintf(out + n, 96 - n, d ? ", %" PRId64 : "%" PRId64, shape[d]);
    if (n < 96) snprintf(out + n, 96 - n, ")");
    return out;
}

static Dsv3Box whole_box(int ndim, const int64_t *shape) {
    Dsv3Box b = {0};
    for (int d = 0; d < ndim; d++)
        b.count[d] = shape[d];
    return b;
}

// A parameter's entry: its global shape and the box of its shard.
static void param_entry(Dsv3CkptTensor *t, const Dsv3ParamGroup *g, const Dsv3Param *p) {
    snprintf(t->fqn, sizeof t->fqn, "%s", p->fqn);
    t->ndim = p->ndim;
    memcpy(t->shape, p->shape, sizeof t->shape);
    t->numel = p->numel;
    t->layer = g->layer_id;
    t->box = p->box;
}

// The expert bias of MoE layer `layer`: whole.
static void bias_entry(Dsv3CkptTensor *t, const Dsv3ModelArgs *args, int64_t layer) {
    snprintf(t->fqn, sizeof t->fqn, "layers.%" PRId64 "." DSV3_EXPERT_BIAS_SUFFIX, layer);
    t->ndim = 1;
    t->shape[0] = t->numel = args->num_experts;
    t->layer = layer;
    t->is_bias = 1;
    t->box = whole_box(1, t->shape);
}

// Room for every group's slots and one bias per layer.
static Dsv3Err alloc_items(Dsv3CkptTensors *out, int n_groups, int64_t n_layers) {
    memset(out, 0, sizeof *out);
    int64_t capacity = (int64_t)n_groups * DSV3_PARAM_SLOT_COUNT + n_layers;
    return dsv3_calloc((void **)&out->items, (size_t)(capacity ? capacity : 1), sizeof *out->items,
                       "checkpoint tensor list");
}

Dsv3Err dsv3_ckpt_tensors_of_model(Dsv3CkptTensors *out, const Dsv3ModelArgs *args) {
    Dsv3StageRange whole = dsv3_stage_range_whole(args);
    int n_groups = dsv3_param_stage_group_count(args, &whole);
    Dsv3ParamGroup *groups = NULL;
    DSV3_CALL(dsv3_calloc((void **)&groups, (size_t)n_groups, sizeof *groups, "parameter layouts"));
    Dsv3Err err = dsv3_param_stage_groups(args, &whole, &dsv3_shard_none, groups);
    if (err == DSV3_OK) err = alloc_items(out, n_groups, args->n_layers);
    for (int g = 0; g < n_groups && err == DSV3_OK; g++) {
        const Dsv3ParamGroup *grp = &groups[g];
        for (int s = 0; s < DSV3_PARAM_SLOT_COUNT; s++) {
            if (!grp->params[s].numel) continue;
            Dsv3CkptTensor *t = &out->items[out->count++];
            param_entry(t, grp, &grp->params[s]);
            t->writes = 1;
        }
        if (grp->kind == DSV3_GROUP_LAYER && grp->moe) {
            bias_entry(&out->items[out->count++], args, grp->layer_id);
            out->items[out->count - 1].writes = 1;
        }
    }
    dsv3_free(groups);
    if (err != DSV3_OK) dsv3_ckpt_tensors_free(out);
    return err;
}

Dsv3Err dsv3_ckpt_tensors_of_groups(Dsv3CkptTensors *out, const Dsv3ModelArgs *args,
                                    const Dsv3ParamGroup *groups, const Dsv3ParamShard *shards,
                                    int n_groups, float *const *expert_bias,
                                    const Dsv3CkptWriters *writers) {
    DSV3_CALL(alloc_items(out, n_groups, args->n_layers));
    for (int g = 0; g < n_groups; g++) {
        const Dsv3ParamGroup *grp = &groups[g];
        const Dsv3ParamShard *sh = &shards[g];
        for (int s = 0; s < DSV3_PARAM_SLOT_COUNT; s++) {
            const Dsv3Param *p = &grp->params[s];
            if (!p->numel) continue;
            Dsv3CkptTensor *t = &out->items[out->count++];
            param_entry(t, grp, p);
            int replicated_over_tp = p->tp == DSV3_TP_REPLICATE || grp->spec.tp == 1;
            t->writes = writers->shard_writer && (!replicated_over_tp || writers->tp_rank == 0);
            t->data = sh->data + p->shard_offset;
            t->exp_avg = sh->adam_m + p->shard_offset;
            t->exp_avg_sq = sh->adam_v + p->shard_offset;
        }
        if (grp->kind == DSV3_GROUP_LAYER && grp->moe && expert_bias[grp->layer_id]) {
            Dsv3CkptTensor *t = &out->items[out->count++];
            bias_entry(t, args, grp->layer_id);
            t->writes = writers->stage_lead;
            t->data = expert_bias[grp->layer_id];
        }
    }
    return DSV3_OK;
}

Dsv3Err dsv3_ckpt_tensors_add_rest(Dsv3CkptTensors *t, const Dsv3ModelArgs *args) {
    Dsv3CkptTensors all;
    DSV3_CALL(dsv3_ckpt_tensors_of_model(&all, args));
    Dsv3CkptTensor *items = NULL;
    Dsv3Err err = dsv3_calloc((void **)&items, (size_t)(t->count + all.count), sizeof *items,
                              "checkpoint tensor list");
    if (err == DSV3_OK) {
        memcpy(items, t->items, (size_t)t->count * sizeof *items);
        int64_t count = t->count;
        for (int64_t i = 0; i < all.count; i++) {
            if (dsv3_ckpt_tensors_find(t, all.items[i].fqn)) continue;
            items[count] = all.items[i];
            memset(&items[count].box, 0, sizeof items[count].box);
            items[count++].writes = 0;
        }
        dsv3_free(t->items);
        t->items = items;
        t->count = count;
    }
    dsv3_ckpt_tensors_free(&all);
    return err;
}

void dsv3_ckpt_tensors_free(Dsv3CkptTensors *t) {
    dsv3_free(t->items);
    t->items = NULL;
    t->count = 0;
}

Dsv3CkptTensor *dsv3_ckpt_tensors_find(const Dsv3CkptTensors *t, const char *fqn) {
    for (int64_t i = 0; i < t->count; i++)
        if (strcmp(t->items[i].fqn, fqn) == 0) return &t->items[i];
    return NULL;
}
