// model_config: the job config's [model] keys and the checks that need model arguments.
//
// common/core/config.h holds plain values and knows nothing of the model. This module is the
// bridge: it fills the [model] keys the user left unset from the chosen flavor
// (model_args.h), runs the core's checks of plain values, then the checks that need model
// arguments (the arguments hang together; the parallel degrees fit the model), and turns a
// resolved config into Dsv3ModelArgs. Every program resolves its config here.
// It does no I/O and no MPI; the layout checks that need process counts live in comm/.
#ifndef DSV3_MODEL_MODEL_CONFIG_H
#define DSV3_MODEL_MODEL_CONFIG_H

#include "common/core/config.h"
#include "common/core/error.h"
#include "common/model/model.h"
#include "common/model/model_args.h"

// Fills the [model] keys the user did not set from model.flavor (their origins stay empty:
// filling is not the user setting a key), then checks every value and every combination that
// needs no process counts: dsv3_config_resolve's checks of plain values, then
// dsv3_model_args_validate, and that expert_parallel_degree divides num_experts,
// pipeline_parallel_degree ≤ n_layers and tensor_parallel_degree divides n_heads. Errors name
// where each value came from. Call once after loading.
Dsv3Err dsv3_model_config_resolve(Dsv3Config *cfg);

// The model arguments of a resolved config.
void dsv3_model_args_from_config(const Dsv3Config *cfg, Dsv3ModelArgs *out);

// The model options of a stage rank that a resolved config asks for (batch, seq_len,
// activation checkpointing, one activation slot: a step runs each micro-batch's forward and
// backward together); `eos_id` is the tokenizer's (block-causal masks).
Dsv3Err dsv3_model_options_from_config(const Dsv3Config *cfg, int32_t eos_id,
                                       Dsv3ModelOptions *out);

#endif
