// optimizer: clipping, expert-bias update and AdamW over the rank's parameter shards.
#include "optimizer.h"

#include <math.h>

#include "kernels/kernels.h"

Dsv3Err dsv3_optimizer_grad_sum_squares(Dsv3Model *m, double *sum_squares) {
    const Dsv3ModelServices *sv = dsv3_model_services(m);
    const Dsv3ParamStore *st = sv->params;
    *sum_squares = 0;
    for (int g = 0; g < st->n_groups; g++) {
        double part = 0;
        DSV3_CALL(
            dsv3_sum_squares(sv->kernels, &part, st->shards[g].grad, st->groups[g].shard_numel));
        *sum_squares += part;
    }
    return DSV3_OK;
}

Dsv3Err dsv3_optimizer_step(Dsv3Model *m, const Dsv3OptimizerStep *s, double sum_squares) {
    const Dsv3ModelServices *sv = dsv3_model_services(m);
    const Dsv3KernelContext *k = sv->kernels;
    const Dsv3ParamStore *st = sv->params;
    const Dsv3ModelArgs *a = dsv3_model_args(m);
    double norm = sqrt(sum_squares);
    double coef = s->max_norm / (norm + DSV3_CLIP_EPS);
    if (coef > 1.0) coef = 1.0;
    for (int g = 0; g < st->n_groups; g++)
        DSV3_CALL(dsv3_scale(k, st->shards[g].grad, st->groups[g].shard_numel, (float)coef));
    for (int64_t l = 0; l < a->n_layers; l++) {
        float *bias = dsv3_model_expert_bias(m, l);
        int64_t *counts = dsv3_model_tokens_per_expert(m, l);
        if (!bias) continue;
        if (a->load_balance_coeff > 0)
            DSV3_CALL(
                dsv3_expert_bias_update(k, bias, counts, a->num_experts, a->load_balance_coeff));
        DSV3_CALL(dsv3_memory_zero(k, counts, (size_t)a->num_experts * sizeof *counts));
    }
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
