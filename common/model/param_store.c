// param_store: the lookups every store shares, and the local store (every group whole).
#include "param_store.h"

#include <string.h>

#include "common/core/alloc.h"

int dsv3_param_store_find(const Dsv3ParamStore *store, Dsv3GroupKind kind, int64_t layer_id) {
    for (int g = 0; g < store->n_groups; g++)
        if (store->groups[g].kind == kind &&
            (store->groups[g].layer_id == layer_id ||
             (kind != DSV3_GROUP_LAYER && kind != DSV3_GROUP_EXPERTS)))
            return g;
    return -1;
}

Dsv3Param *dsv3_param_store_find_fqn(Dsv3ParamStore *store, const char *fqn, int *group) {
    for (int g = 0; g < store->n_groups; g++)
        for (int s = 0; s < DSV3_PARAM_SLOT_COUNT; s++) {
            Dsv3Param *p = &store->groups[g].params[s];
            if (p->numel && strcmp(p->fqn, fqn) == 0) {
                if (group) *group = g;
                return p;
            }
        }
    return NULL;
}

int64_t dsv3_param_store_numel(const Dsv3ParamStore *store) {
    int64_t n = 0;
    for (int g = 0; g < store->n_groups; g++)
        n += store->groups[g].shard_numel;
    return n;
}

void dsv3_param_store_destroy(Dsv3ParamStore *store) {
    if (store) store->ops->destroy(store);
}

// ---- the local store ----

static Dsv3Err local_nothing(Dsv3ParamStore *self, int g, Dsv3ParamUse use) {
    (void)use;
    DSV3_ASSERT(g >= 0 && g < self->n_groups);
    return DSV3_OK;
}

static Dsv3Err local_reduce(Dsv3ParamStore *self, int g) {
    DSV3_ASSERT(g >= 0 && g < self->n_groups);
    return DSV3_OK;
}

static Dsv3Err local_finish(Dsv3ParamStore *self) {
    (void)self;
    return DSV3_OK;
}

void dsv3_param_store_shards_free(Dsv3ParamStore *self) {
    for (int g = 0; self->shards && g < self->n_groups; g++) {
        Dsv3ParamShard *s = &self->shards[g];
        float *buffers[] = {s->data, s->grad, s->adam_m, s->adam_v};
        for (size_t i = 0; i < sizeof buffers / sizeof *buffers; i++)
            if (buffers[i]) dsv3_memory_free(self->kernels, buffers[i]);
    }
    dsv3_free(self->shards);
    dsv3_free(self->groups);
    self->shards = NULL;
    self->groups = NULL;
}

static void local_destroy(Dsv3ParamStore *self) {
    dsv3_param_store_shards_free(self);
    dsv3_free(self);
}

// Gradients stay in the group's buffer anyway: reduce and keep are the same nothing.
static const Dsv3ParamStoreOps local_ops = {local_nothing, local_nothing, local_reduce,
                                            local_reduce,  local_finish,  local_destroy};

// Initial values of group g into its value shard: directly in host memory, through a host
// buffer for a device.
static Dsv3Err init_values(Dsv3ParamStore *st, int g, uint64_t seed) {
    const Dsv3ParamGroup *group = &st->groups[g];
    size_t bytes = (size_t)group->shard_numel * sizeof(float);
    if (st->kernels->backend != DSV3_BACKEND_CUDA) {
        dsv3_param_group_init_shard(group, &st->args, seed, st->shards[g].data);
        return DSV3_OK;
    }
    float *host = NULL;
    DSV3_CALL(dsv3_alloc((void **)&host, bytes, "initial values"));
    dsv3_param_group_init_shard(group, &st->args, seed, host);
    Dsv3Err err =
        dsv3_memory_copy(st->kernels, st->shards[g].data, host, bytes, DSV3_COPY_HOST_TO_DEVICE);
    dsv3_free(host);
    return err;
}

Dsv3Err dsv3_param_store_shards_create(Dsv3ParamStore *st, const Dsv3ShardSpec *spec,
                                       uint64_t seed) {
    st->n_groups = dsv3_param_stage_group_count(&st->args, &st->range);
    DSV3_CALL(dsv3_calloc((void **)&st->groups, (size_t)st->n_groups, sizeof *st->groups,
                          "parameter groups"));
    DSV3_CALL(dsv3_calloc((void **)&st->shards, (size_t)st->n_groups, sizeof *st->shards,
                          "parameter shards"));
    DSV3_CALL(dsv3_param_stage_groups(&st->args, &st->range, spec, st->groups));
    for (int g = 0; g < st->n_groups; g++) {
        Dsv3ParamGroup *group = &st->groups[g];
        Dsv3ParamShard *s = &st->shards[g];
        size_t bytes = (size_t)group->shard_numel * sizeof(float);
        const char *what = dsv3_group_kind_name(group->kind);
        DSV3_CALL(dsv3_memory_alloc(st->kernels, (void **)&s->data, bytes, what));
        DSV3_CALL(dsv3_memory_alloc(st->kernels, (void **)&s->grad, bytes, "gradients"));
        DSV3_CALL(dsv3_memory_alloc(st->kernels, (void **)&s->adam_m, bytes, "AdamW exp_avg"));
        DSV3_CALL(dsv3_memory_alloc(st->kernels, (void **)&s->adam_v, bytes, "AdamW exp_avg_sq"));
        DSV3_CALL(dsv3_memory_zero(st->kernels, s->grad, bytes));
        DSV3_CALL(dsv3_memory_zero(st->kernels, s->adam_m, bytes));
        DSV3_CALL(dsv3_memory_zero(st->kernels, s->adam_v, bytes));
        DSV3_CALL(init_values(st, g, seed));
    }
    return DSV3_OK;
}

static Dsv3Err local_create_groups(Dsv3ParamStore *st, const Dsv3ShardSpec *spec, uint64_t seed) {
    DSV3_CALL(dsv3_param_store_shards_create(st, spec, seed));
    for (int g = 0; g < st->n_groups; g++) {
        Dsv3ParamGroup *group = &st->groups[g];
        DSV3_ASSERT(group->shard_numel == group->numel); // unsharded: the shard is the group
        dsv3_param_group_bind(group, st->shards[g].data, st->shards[g].grad);
    }
    return DSV3_OK;
}

Dsv3Err dsv3_param_store_local_create(Dsv3ParamStore **out, const Dsv3KernelContext *kernels,
                                      const Dsv3ModelArgs *args, const Dsv3StageRange *range,
                                      const Dsv3ShardSpec *spec, uint64_t seed) {
    *out = NULL;
    DSV3_CHECK(!spec || spec->fsdp == 1, DSV3_ERR_USAGE,
               "the local parameter store holds whole pieces: fsdp must be 1 (it is %lld)",
               (long long)spec->fsdp);
    Dsv3ParamStore *st = NULL;
    DSV3_CALL(dsv3_calloc((void **)&st, 1, sizeof *st, "parameter store"));
    *st = (Dsv3ParamStore){
        .ops = &local_ops, .kernels = kernels, .args = *args, .range = *range, .fsdp_size = 1};
    Dsv3Err err = local_create_groups(st, spec ? spec : &dsv3_shard_none, seed);
    if (err != DSV3_OK) {
        local_destroy(st);
        return dsv3_error_trace(err, __FILE__, __LINE__, __func__);
    }
    *out = st;
    return DSV3_OK;
}
