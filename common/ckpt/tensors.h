// tensors: the list of a model's checkpoint tensors — every parameter under its torchtitan FQN
// and every MoE layer's expert bias (layers.L.moe.expert_bias, (E)) — with their global
// shapes and, for a live model, where this rank keeps their values and AdamW moments.
//
// Built from the model arguments alone (shapes, no memory: conversion tools) or from a
// Dsv3Model (buffers too). A rank that holds a slice of a tensor will describe it by a box in
// the global shape (today every stage rank holds every tensor whole). No I/O, no MPI.
#ifndef DSV3_CKPT_TENSORS_H
#define DSV3_CKPT_TENSORS_H

#include <stdint.h>

#include "common/core/error.h"
#include "common/model/model.h"
#include "common/model/params.h"

typedef struct {
    char fqn[DSV3_FQN_CAPACITY];
    int ndim;
    int64_t shape[DSV3_PARAM_MAX_DIMS];
    int64_t numel;
    int64_t layer;                      // -1 outside layers
    int is_bias;                        // an expert bias: a buffer, no optimizer state
    float *data, *exp_avg, *exp_avg_sq; // this rank's values (NULL without a model)
} Dsv3CkptTensor;

typedef struct {
    int64_t count;
    Dsv3CkptTensor *items;
} Dsv3CkptTensors;

// The tensors of a model with these arguments; with `model`, also their buffers.
Dsv3Err dsv3_ckpt_tensors_build(Dsv3CkptTensors *out, const Dsv3ModelArgs *args, Dsv3Model *model);

void dsv3_ckpt_tensors_free(Dsv3CkptTensors *t);

// The tensor of this FQN, or NULL.
Dsv3CkptTensor *dsv3_ckpt_tensors_find(const Dsv3CkptTensors *t, const char *fqn);

// "(a, b, c)" for messages.
const char *dsv3_ckpt_shape_text(int ndim, const int64_t *shape, char out[96]);

#endif
