// optimizer: clipping, expert-bias update and AdamW over the model's parameter groups.
#include "optimizer.h"

#include <math.h>

#include "kernels/kernels.h"

Dsv3Err dsv3_optimizer_grad_sum_squares(Dsv3Model *m, double *sum_squares) {
    const Dsv3KernelContext *kc = dsv3_model_kernel_context(m);
    int n = 0;
    Dsv3ParamGroup *groups = dsv3_model_groups(m, &n);
    double sum = 0;
    for (int g = 0; g < n; g++) {
        double group = 0;
        DSV3_CALL(dsv3_sum_squares(kc, &group, groups[g].grad, groups[g].numel));
        sum += group;
    }
    *sum_squares = sum;
    return DSV3_OK;
}

Dsv3Err dsv3_optimizer_step(Dsv3Model *m, const Dsv3OptimizerStep *s, double sum_squares) {
    const Dsv3KernelContext *kc = dsv3_model_kernel_context(m);
    int n = 0;
    Dsv3ParamGroup *groups = dsv3_model_groups(m, &n);
    const Dsv3ModelArgs *a = dsv3_model_args(m);
    double norm = sqrt(sum_squares);
    double coef = s->max_norm / (norm + DSV3_CLIP_EPS);
    if (coef > 1.0) coef = 1.0;
    for (int g = 0; g < n; g++)
        DSV3_CALL(dsv3_scale(kc, groups[g].grad, groups[g].numel, (float)coef));
    // expert_bias += δ − mean(δ), δ = coeff · sign(mean(n) − n); then n = 0.
    for (int64_t l = 0; l < a->n_layers; l++) {
        float *bias = dsv3_model_expert_bias(m, l);
        int64_t *counts = dsv3_model_tokens_per_expert(m, l);
        if (!bias) continue;
        if (a->load_balance_coeff > 0)
            DSV3_CALL(
                dsv3_expert_bias_update(kc, bias, counts, a->num_experts, a->load_balance_coeff));
        DSV3_CALL(dsv3_memory_zero(kc, counts, (size_t)a->num_experts * sizeof *counts));
    }
    Dsv3AdamWArgs adam = {.lr = (float)s->lr,
                          .beta1 = s->beta1,
                          .beta2 = s->beta2,
                          .eps = s->eps,
                          .weight_decay = s->weight_decay,
                          .step = s->step};
    for (int g = 0; g < n; g++) {
        DSV3_CALL(dsv3_adamw_step(kc, groups[g].data, groups[g].grad, groups[g].adam_m,
                                  groups[g].adam_v, groups[g].numel, &adam));
        DSV3_CALL(dsv3_memory_zero(kc, groups[g].grad, (size_t)groups[g].numel * sizeof(float)));
    }
    return DSV3_OK;
}
