// hf: reading a Hugging Face DeepSeek-V3 checkpoint folder tensor by tensor.
//
// The folder holds config.json and either model.safetensors or shards listed by
// model.safetensors.index.json ("weight_map": name → file). config.json must agree with the
// model (num_hidden_layers, hidden_size, vocab_size, n_routed_experts, moe_intermediate_size);
// layers at or beyond num_hidden_layers (DeepSeek-V3's multi-token-prediction layer) are
// skipped. Every other tensor maps to a torchtitan FQN (hf_names.h) and must have the model's
// shape — one expert's (F, D) / (D, F) for per-expert weights, which become a row of the
// stacked (E, F, D) / (E, D, F) tensor — else the error names the tensor and both shapes.
// F32, BF16, F16 and F8_E4M3 (with its <name>_scale_inv 128×128 block scales, dequantised)
// are read as float32, one HF tensor at a time and only the rows of it that each tensor's box
// (tensors.h) needs, so memory stays near the largest box. Every model tensor must be found
// exactly once; a missing e_score_correction_bias is zero.
#ifndef DSV3_CKPT_HF_H
#define DSV3_CKPT_HF_H

#include <stdint.h>

#include "common/ckpt/tensors.h"
#include "common/core/error.h"

#define DSV3_HF_CONFIG "config.json"
#define DSV3_HF_INDEX "model.safetensors.index.json"
#define DSV3_HF_SINGLE "model.safetensors"

// Receives the part of one HF tensor that t's box needs, as float32 and box-shaped: the box of
// `t` (expert −1), or the box's slice of row `expert` of a stacked expert weight.
typedef Dsv3Err (*Dsv3HfSink)(const Dsv3CkptTensor *t, int64_t expert, const float *data,
                              int64_t numel, void *arg);

// Reads every model tensor of `t` from the HF folder `dir` into `sink`.
Dsv3Err dsv3_hf_read(const char *dir, const Dsv3ModelArgs *args, const Dsv3CkptTensors *t,
                     Dsv3HfSink sink, void *arg);

// Loads an HF folder straight into the box buffers of `t` (checkpoint.initial_load_in_hf).
Dsv3Err dsv3_hf_load(const char *dir, const Dsv3ModelArgs *args, const Dsv3CkptTensors *t);

#endif
