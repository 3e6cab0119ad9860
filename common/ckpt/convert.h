// convert: Hugging Face DeepSeek-V3 safetensors ↔ dsv3 model checkpoints, one tensor at a time.
//
// from-hf reads an HF folder (hf.h: names, shapes, F32/BF16/F16/FP8 with block scales) and
// writes a model-only checkpoint folder — model.h5 with one global-shape dataset per FQN in
// checkpoint.export_dtype (expert biases in F32), config.toml, manifest.json — that
// checkpoint.initial_load_path loads. to-hf reads a checkpoint folder (a step-N, or a
// converted one; its config.toml gives the model) and writes model-0000k-of-0000n.safetensors
// shards of at most max_shard_bytes in export_dtype, model.safetensors.index.json and an HF
// config.json. Both write into <out>.tmp and rename it when complete, and refuse an existing
// <out>. Memory: one tensor (one expert's matrix for stacked expert weights) at a time.
#ifndef DSV3_CKPT_CONVERT_H
#define DSV3_CKPT_CONVERT_H

#include <stdint.h>

#include "common/core/config.h"
#include "common/core/error.h"

// Default shard size of to-hf, as Hugging Face's save_pretrained (5 GB).
#define DSV3_CONVERT_SHARD_BYTES ((int64_t)5 * 1000 * 1000 * 1000)

// `cfg` is resolved: its [model] gives the tensors, checkpoint.export_dtype the stored type.
Dsv3Err dsv3_convert_from_hf(const char *hf_dir, const char *out_dir, const Dsv3Config *cfg);

// `cfg` is the checkpoint's config.toml with any overrides, resolved.
Dsv3Err dsv3_convert_to_hf(const char *ckpt_dir, const char *hf_dir, const Dsv3Config *cfg,
                           int64_t max_shard_bytes);

#endif
