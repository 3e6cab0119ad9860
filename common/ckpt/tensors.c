// tensors: parameters and expert biases of a model as one flat list, in group order.
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

Dsv3Err dsv3_ckpt_tensors_build(Dsv3CkptTensors *out, const Dsv3ModelArgs *args, Dsv3Model *model) {
    memset(out, 0, sizeof *out);
    int n_groups = (int)args->n_layers + 2;
    Dsv3ParamGroup *layouts = NULL, *groups = NULL;
    if (model) {
        int n = 0;
        groups = dsv3_model_groups(model, &n);
        DSV3_ASSERT(n == n_groups);
    } else {
        DSV3_CALL(
            dsv3_calloc((void **)&layouts, (size_t)n_groups, sizeof *layouts, "parameter layouts"));
        dsv3_param_group_layout(&layouts[0], args, DSV3_GROUP_EMBEDDING, -1);
        for (int64_t l = 0; l < args->n_layers; l++)
            dsv3_param_group_layout(&layouts[1 + l], args, DSV3_GROUP_LAYER, l);
        dsv3_param_group_layout(&layouts[n_groups - 1], args, DSV3_GROUP_HEAD, -1);
        groups = layouts;
    }
    int64_t capacity = (int64_t)n_groups * (DSV3_PARAM_SLOT_COUNT + 1);
    Dsv3Err err = dsv3_calloc((void **)&out->items, (size_t)capacity, sizeof *out->items,
                              "checkpoint tensor list");
    for (int g = 0; g < n_groups && err == DSV3_OK; g++) {
        Dsv3ParamGroup *grp = &groups[g];
        for (int s = 0; s < DSV3_PARAM_SLOT_COUNT; s++) {
            const Dsv3Param *p = &grp->params[s];
            if (!p->numel) continue;
            Dsv3CkptTensor *t = &out->items[out->count++];
            snprintf(t->fqn, sizeof t->fqn, "%s", p->fqn);
            t->ndim = p->ndim;
            memcpy(t->shape, p->shape, sizeof t->shape);
            t->numel = p->numel;
            t->layer = grp->kind == DSV3_GROUP_LAYER ? grp->layer_id : -1;
            if (model) {
                t->data = grp->data + p->offset;
                t->exp_avg = grp->adam_m + p->offset;
                t->exp_avg_sq = grp->adam_v + p->offset;
            }
        }
        if (grp->kind == DSV3_GROUP_LAYER && grp->moe) {
            Dsv3CkptTensor *t = &out->items[out->count++];
            snprintf(t->fqn, sizeof t->fqn, "layers.%" PRId64 "." DSV3_EXPERT_BIAS_SUFFIX,
                     grp->layer_id);
            t->ndim = 1;
            t->shape[0] = t->numel = args->num_experts;
            t->layer = grp->layer_id;
            t->is_bias = 1;
            if (model) t->data = dsv3_model_expert_bias(model, grp->layer_id);
        }
    }
    dsv3_free(layouts);
    if (err != DSV3_OK) dsv3_ckpt_tensors_free(out);
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
