// expert_load: capture on a stage rank, per-layer summary on the coordinator.
#include "expert_load.h"

#include <math.h>
#include <string.h>

#include "common/core/alloc.h"

Dsv3Err dsv3_expert_load_create(Dsv3ExpertLoad *load, const Dsv3ModelArgs *args) {
    memset(load, 0, sizeof *load);
    load->n_layers = args->n_layers;
    load->n_experts = args->num_experts;
    load->n_dense_layers = args->n_dense_layers;
    size_t n = (size_t)(args->n_layers * args->num_experts);
    Dsv3Err err =
        dsv3_calloc((void **)&load->counts, n, sizeof *load->counts, "expert load counts");
    if (err == DSV3_OK)
        err = dsv3_calloc((void **)&load->bias, n, sizeof *load->bias, "expert load biases");
    if (err != DSV3_OK) dsv3_expert_load_destroy(load);
    DSV3_CALL(err);
    return DSV3_OK;
}

void dsv3_expert_load_destroy(Dsv3ExpertLoad *load) {
    dsv3_free(load->counts);
    dsv3_free(load->bias);
    memset(load, 0, sizeof *load);
}

int dsv3_expert_load_is_moe(const Dsv3ExpertLoad *load, int64_t layer) {
    return layer >= load->n_dense_layers && layer < load->n_layers;
}

void dsv3_expert_load_capture(Dsv3ExpertLoad *load, Dsv3Model *const *models, int64_t n_models) {
    const int64_t E = load->n_experts;
    for (int64_t l = 0; l < load->n_layers; l++) {
        const int64_t *counts = NULL;
        const float *bias = NULL;
        for (int64_t k = 0; k < n_models && !counts; k++) {
            counts = dsv3_model_tokens_per_expert(models[k], l);
            bias = dsv3_model_expert_bias(models[k], l);
        }
        if (counts)
            memcpy(load->counts + l * E, counts, (size_t)E * sizeof *counts);
        else
            memset(load->counts + l * E, 0, (size_t)E * sizeof *load->counts);
        if (bias)
            memcpy(load->bias + l * E, bias, (size_t)E * sizeof *bias);
        else
            memset(load->bias + l * E, 0, (size_t)E * sizeof *load->bias);
    }
}

void dsv3_expert_load_layer(const Dsv3ExpertLoad *load, int64_t layer, Dsv3ExpertLayerLoad *out) {
    const int64_t E = load->n_experts;
    const int64_t *c = load->counts + layer * E;
    const float *b = load->bias + layer * E;
    memset(out, 0, sizeof *out);
    out->max = out->min = c[0];
    double squares = 0;
    for (int64_t e = 0; e < E; e++) {
        out->tokens += c[e];
        if (c[e] > out->max) out->max = c[e];
        if (c[e] < out->min) out->min = c[e];
        squares += (double)b[e] * (double)b[e];
    }
    out->bias_norm = sqrt(squares);
    if (out->tokens == 0) return;
    double mean = (double)out->tokens / (double)E;
    out->max_over_mean = (double)out->max / mean;
    out->min_over_mean = (double)out->min / mean;
}
