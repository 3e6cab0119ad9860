// optimizer: clipping, expert-bias update and AdamW over the model's parameter groups.
#include "optimizer.h"

#include <math.h>
#include <string.h>

#include "kernels/kernels.h"

double dsv3_optimizer_grad_sum_squares(Dsv3Model *m) {
    int n = 0;
    Dsv3ParamGroup *groups = dsv3_model_groups(m, &n);
    double sum = 0;
    for (int g = 0; g < n; g++)
        sum += dsv3_sum_squares(groups[g].grad, groups[g].numel);
    return sum;
}

// expert_bias += δ − mean(δ), δ = coeff · sign(mean(n) − n); then n = 0.
static void update_expert_bias(float *bias, int64_t *counts, int64_t E, double coeff) {
    double mean_count = 0;
    for (int64_t e = 0; e < E; e++)
        mean_count += (double)counts[e];
    mean_count /= (double)E;
    double delta_mean = 0;
    for (int64_t e = 0; e < E; e++) {
        double diff = mean_count - (double)counts[e];
        delta_mean += coeff * (double)((diff > 0) - (diff < 0));
    }
    delta_mean /= (double)E;
    for (int64_t e = 0; e < E; e++) {
        double diff = mean_count - (double)counts[e];
        bias[e] += (float)(coeff * (double)((diff > 0) - (diff < 0)) - delta_mean);
    }
}

Dsv3Err dsv3_optimizer_step(Dsv3Model *m, const Dsv3OptimizerStep *s, double sum_squares) {
    int n = 0;
    Dsv3ParamGroup *groups = dsv3_model_groups(m, &n);
    const Dsv3ModelArgs *a = dsv3_model_args(m);
    double norm = sqrt(sum_squares);
    double coef = s->max_norm / (norm + DSV3_CLIP_EPS);
    if (coef > 1.0) coef = 1.0;
    for (int g = 0; g < n; g++)
        dsv3_scale(groups[g].grad, groups[g].numel, (float)coef);
    for (int64_t l = 0; l < a->n_layers; l++) {
        float *bias = dsv3_model_expert_bias(m, l);
        int64_t *counts = dsv3_model_tokens_per_expert(m, l);
        if (!bias) continue;
        if (a->load_balance_coeff > 0)
            update_expert_bias(bias, counts, a->num_experts, a->load_balance_coeff);
        memset(counts, 0, (size_t)a->num_experts * sizeof *counts);
    }
    Dsv3AdamWArgs adam = {.lr = (float)s->lr,
                          .beta1 = s->beta1,
                          .beta2 = s->beta2,
                          .eps = s->eps,
                          .weight_decay = s->weight_decay,
                          .step = s->step};
    for (int g = 0; g < n; g++) {
        DSV3_CALL(dsv3_adamw_step(groups[g].data, groups[g].grad, groups[g].adam_m,
                                  groups[g].adam_v, groups[g].numel, &adam));
        memset(groups[g].grad, 0, (size_t)groups[g].numel * sizeof(float));
    }
    return DSV3_OK;
}
