// tensors: the list of a checkpoint's tensors — every parameter under its torchtitan FQN and
// every MoE layer's expert bias (layers.L.moe.expert_bias, (E)) — with their global shapes
// and, for a training rank, the box of each tensor that the rank holds and where it keeps its
// values and AdamW moments.
//
// Built from the model arguments alone (every tensor whole, no memory: conversion tools) or
// from a rank's parameter groups, laid out from the parameter table, and its stage's expert
// biases (checkpoint.c takes them from the rank's model; this module needs no model object, so
// it links without the model's code). Each box of a checkpoint is written by exactly one rank (the
// `writes` flag: Dsv3CkptWriters says which rank that is); every rank reads its own boxes,
// whatever layout wrote the checkpoint. No I/O, no MPI.
#ifndef DSV3_CKPT_TENSORS_H
#define DSV3_CKPT_TENSORS_H

#include <stdint.h>

#include "common/core/error.h"
#include "common/model/model.h"
#include "common/model/params.h"

typedef struct {
    char fqn[DSV3_FQN_CAPACITY];
    int ndim;
    int64_t shape[DSV3_PARAM_MAX_DIMS]; // global
    int64_t numel;                      // global
    int64_t layer;                      // -1 outside layers
    int is_bias;                        // an expert bias: a buffer, no optimizer state
    Dsv3Box box;                        // the part this rank holds (the whole tensor for tools)
    int writes;                         // this rank writes `box` into a checkpoint
    float *data, *exp_avg, *exp_avg_sq; // box-shaped values and moments (NULL without a model)
} Dsv3CkptTensor;

typedef struct {
    int64_t count;
    Dsv3CkptTensor *items;
} Dsv3CkptTensors;

// Which of its boxes a rank writes, so that every element is written once: ranks that hold the
// same parameter shards (data-parallel replicas, and the dp_shard × cp ranks while the store
// does not shard over them) and the tensor-parallel ranks of a tensor tp does not cut hold
// equal copies, and only the first writes.
typedef struct {
    int shard_writer; // the first of the ranks holding this rank's shards
    int stage_lead;   // the first rank of the pipeline stage (writes the expert biases)
    int64_t tp_rank;  // tensors replicated over tp are written by tp rank 0
} Dsv3CkptWriters;

// Every tensor of a model with these arguments, whole, without buffers; writes = 1.
Dsv3Err dsv3_ckpt_tensors_of_model(Dsv3CkptTensors *out, const Dsv3ModelArgs *args);

// The tensors of parameter groups laid out for a rank (params.h), with their shards, and the
// expert biases of the MoE layers among them (expert_bias[layer], indexed by model layer; a
// NULL entry: this rank has no bias of that layer), `writers` deciding the writes flags.
Dsv3Err dsv3_ckpt_tensors_of_groups(Dsv3CkptTensors *out, const Dsv3ModelArgs *args,
                                    const Dsv3ParamGroup *groups, const Dsv3ParamShard *shards,
                                    int n_groups, float *const *expert_bias,
                                    const Dsv3CkptWriters *writers);

// Adds every tensor of the model that `t` lacks, with an empty box, no buffers and no write: a
// rank that holds part of the model (an expert server, a stage rank whose routed experts live
// on expert servers) then reads a checkpoint of the whole model and still checks each dataset
// in it against the model.
Dsv3Err dsv3_ckpt_tensors_add_rest(Dsv3CkptTensors *t, const Dsv3ModelArgs *args);

void dsv3_ckpt_tensors_free(Dsv3CkptTensors *t);

// The tensor of this FQN, or NULL.
Dsv3CkptTensor *dsv3_ckpt_tensors_find(const Dsv3CkptTensors *t, const char *fqn);

// "(a, b, c)" for messages.
const char *dsv3_ckpt_shape_text(int ndim, const int64_t *shape, char out[96]);

#endif
