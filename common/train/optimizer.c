// optimizer: clipping, expert-bias update and AdamW over the rank's parameter shards.
#include "optimizer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

// Slot of the kernel context's scalars (kernels.h) that sums of squares pass through.
enum { OPTIMIZER_SCALAR_SUM = 0 };

// *host = Σ x² over n elements of the kernel context's memory, read back.
static Dsv3Err sum_squares_read(const Dsv3KernelContext *k, const float *x, int64_t n,
                                double *host) {
    double *slot = (double *)k->scalars + OPTIMIZER_SCALAR_SUM;
    DSV3_CALL(dsv3_sum_squares(k, slot, x, n));
    return dsv3_scalar_read(k, host, slot, sizeof *host);
}

// A group's share of the squared norm. With tensor parallelism a replicated tensor counts on tp
// rank 0 only (the other tp ranks hold the same gradients), the pieces of a cut one on every
// rank, so that a sum over the tp group counts every element once.
static Dsv3Err group_sum_squares(const Dsv3KernelContext *k, const Dsv3ParamGroup *group,
                                 const float *grad, double *out) {
    if (group->spec.tp == 1 || group->spec.tp_rank == 0)
        return sum_squares_read(k, grad, group->shard_numel, out);
    *out = 0;
    for (int slot = 0; slot < DSV3_PARAM_SLOT_COUNT; slot++) {
        const Dsv3Param *p = &group->params[slot];
        if (p->numel == 0 || p->tp == DSV3_TP_REPLICATE) continue;
        double part = 0;
        DSV3_CALL(sum_squares_read(k, grad + p->shard_offset, dsv3_param_shard_numel(p), &part));
        *out += part;
    }
    return DSV3_OK;
}

Dsv3Err dsv3_optimizer_store_sum_squares(const Dsv3KernelContext *k, const Dsv3ParamStore *st,
                                         double *sum_squares) {
    *sum_squares = 0;
    for (int g = 0; g < st->n_groups; g++) {
        double part = 0;
        DSV3_CALL(group_sum_squares(k, &st->groups[g], st->shards[g].grad, &part));
        *sum_squares += part;
    }
    return DSV3_OK;
}

Dsv3OptimizerStep dsv3_optimizer_step_of(const Dsv3Config *cfg, double lr, int64_t step) {
    return (Dsv3OptimizerStep){.lr = lr,
                               .beta1 = (float)cfg->optimizer.beta1,
                               .beta2 = (float)cfg->optimizer.beta2,
                               .eps = (float)cfg->optimizer.eps,
                               .weight_decay = (float)cfg->optimizer.weight_decay,
                               .max_norm = cfg->training.max_norm,
                               .step = step};
}

Dsv3Err dsv3_optimizer_grad_sum_squares(Dsv3Model *m, double *sum_squares) {
    const Dsv3ModelServices *sv = dsv3_model_services(m);
    return dsv3_optimizer_store_sum_squares(sv->kernels, sv->params, sum_squares);
}

Dsv3Err dsv3_optimizer_store_step(const Dsv3KernelContext *k, const Dsv3ParamStore *st,
                                  const Dsv3OptimizerStep *s, double sum_squares) {
    double norm = sqrt(sum_squares);
    double coef = s->max_norm / (norm + DSV3_CLIP_EPS);
    if (coef > 1.0) coef = 1.0;
    for (int g = 0; g < st->n_groups; g++)
        DSV3_CALL(dsv3_scale(k, st->shards[g].grad, st->groups[g].shard_numel, (float)coef));
    Dsv3AdamWArgs adam = {.lr = (float)s->lr,
                          .beta1 = s->beta1,
                          .beta2 = s->beta2,
                          .eps = s->eps,
                          .weight_decay = s->weight_decay,
                          .step = s->step};
    for (int g = 0; g < st->n_groups; g++) {
        const Dsv3ParamShard *sh = &st->shards[g];
        int64_t n = st->groups[g].shard_numel;
        DSV3_CALL(dsv3_adamw_step(k, sh->data, sh->grad, sh->adam_m, sh->adam_v, n, &adam));
        DSV3_CALL(dsv3_memory_zero(k, sh->grad, (size_t)n * sizeof(float)));
    }
    return DSV3_OK;
}

Dsv3Err dsv3_optimizer_step(Dsv3Model *m, const Dsv3OptimizerStep *s, double sum_squares) {
    const Dsv3ModelServices *sv = dsv3_model_services(m);
    const Dsv3KernelContext *k = sv->kernels;
    const Dsv3ModelArgs *a = dsv3_model_args(m);
    // The bias update reads the token counts, not the gradients: it may come before clipping.
    for (int64_t l = 0; l < a->n_layers; l++) {
        float *bias = dsv3_model_expert_bias(m, l);
        int64_t *counts = dsv3_model_tokens_per_expert(m, l);
        if (!bias) continue;
        if (a->load_balance_coeff > 0)
            DSV3_CALL(
                dsv3_expert_bias_update(k, bias, counts, a->num_experts, a->load_balance_coeff));
        DSV3_CALL(dsv3_memory_zero(k, counts, (size_t)a->num_experts * sizeof *counts));
    }
    return dsv3_optimizer_store_step(k, sv->params, s, sum_squares);
}

// How many of the n values at x (in the kernel context's memory) are NaN or infinite: their
// squares sum to NaN or infinity.
static Dsv3Err nonfinite(const Dsv3KernelContext *k, const float *x, int64_t n, int *bad) {
    double sum = 0;
    DSV3_CALL(sum_squares_read(k, x, n, &sum));
    *bad = !isfinite(sum);
    return DSV3_OK;
}

Dsv3Err dsv3_optimizer_store_skip(const Dsv3KernelContext *k, const Dsv3ParamStore *st,
                                  int32_t *group, char *fqn) {
    *group = -1;
    fqn[0] = '\0';
    for (int g = 0; g < st->n_groups && *group < 0; g++) {
        const Dsv3ParamGroup *pg = &st->groups[g];
        int bad = 0;
        DSV3_CALL(nonfinite(k, st->shards[g].grad, pg->shard_numel, &bad));
        if (!bad) continue;
        *group = g;
        for (int p = 0; p < DSV3_PARAM_SLOT_COUNT && !fqn[0]; p++) {
            const Dsv3Param *x = &pg->params[p];
            int64_t row = x->local_numel / (x->local[0] > 0 ? x->local[0] : 1);
            if (!x->fqn[0] || x->real_rows <= 0) continue;
            DSV3_CALL(nonfinite(k, st->shards[g].grad + x->shard_offset, x->real_rows * row, &bad));
            if (bad) snprintf(fqn, DSV3_FQN_CAPACITY, "%s", x->fqn);
        }
    }
    for (int g = 0; g < st->n_groups; g++)
        DSV3_CALL(dsv3_memory_zero(k, st->shards[g].grad,
                                   (size_t)st->groups[g].shard_numel * sizeof(float)));
    return DSV3_OK;
}

Dsv3Err dsv3_optimizer_skip(Dsv3Model *m, int32_t *group, char *fqn) {
    const Dsv3ModelServices *sv = dsv3_model_services(m);
    const Dsv3KernelContext *k = sv->kernels;
    const Dsv3ModelArgs *a = dsv3_model_args(m);
    DSV3_CALL(dsv3_optimizer_store_skip(k, sv->params, group, fqn));
    for (int64_t l = 0; l < a->n_layers; l++) {
        int64_t *counts = dsv3_model_tokens_per_expert(m, l);
        if (counts) DSV3_CALL(dsv3_memory_zero(k, counts, (size_t)a->num_experts * sizeof *counts));
    }
    return DSV3_OK;
}

Dsv3Err dsv3_optimizer_test_inject(Dsv3Model *m, int64_t step) {
    const char *spec = getenv("DSV3_TEST_NONFINITE_GRAD");
    if (!spec) return DSV3_OK;
    char *colon = NULL;
    long long at = strtoll(spec, &colon, 10);
    if (at != step || !colon || *colon != ':') return DSV3_OK;
    const Dsv3ModelServices *sv = dsv3_model_services(m);
    int g = -1;
    Dsv3Param *x = dsv3_param_store_find_fqn(sv->params, colon + 1, &g);
    DSV3_CHECK(x != NULL, DSV3_ERR_USAGE, "DSV3_TEST_NONFINITE_GRAD: no tensor %s on this rank",
               colon + 1);
    if (x->shard_row0 != 0 || x->real_rows <= 0) return DSV3_OK; // another rank owns row 0
    const float nan = NAN;
    return dsv3_memory_copy(sv->kernels, sv->params->shards[g].grad + x->shard_offset, &nan,
                            sizeof nan, DSV3_COPY_HOST_TO_DEVICE);
}
