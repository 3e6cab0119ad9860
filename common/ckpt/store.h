// store: a checkpoint folder's tensor files — shard files, the virtual-dataset index files that
// stitch them into global shapes, and reading tensors back. No MPI: checkpoint.h runs this on
// each rank and passes the descriptions between them.
//
// Files of a checkpoint folder (README.md, "Checkpoints"):
//   shards/model-sNNNNN.h5      a rank's slices of the model tensors (NNNNN: the stage index of a
//                               stage rank; S + expert index for an expert server)
//   shards/optimizer-sNNNNN.h5  its slices of AdamW's exp_avg/<fqn> and exp_avg_sq/<fqn>
//   model.h5                    one global-shape dataset per FQN (virtual: its sources are the
//                               shard slices, by relative path), attributes format_version, step
//   optimizer.h5                exp_avg/<fqn>, exp_avg_sq/<fqn> the same way, attribute step
// A rank writes a box (start, count in the global shape) per tensor it owns and reads the box
// it needs (tensors.h), so the files do not depend on the layout that wrote them. model.h5 may also
// hold ordinary datasets (a checkpoint written by one process, e.g. the converter): reading is the
// same either way.
#ifndef DSV3_CKPT_STORE_H
#define DSV3_CKPT_STORE_H

#include "common/ckpt/dtype.h"
#include "common/ckpt/manifest.h"
#include "common/ckpt/tensors.h"
#include "common/core/error.h"

#define DSV3_CKPT_MODEL_FILE "model.h5"
#define DSV3_CKPT_OPTIMIZER_FILE "optimizer.h5"
#define DSV3_CKPT_EXP_AVG "exp_avg"
#define DSV3_CKPT_EXP_AVG_SQ "exp_avg_sq"

// Writes the shard files of one rank (`shard` numbers them) into `dir`/shards: the box of every
// tensor of `t` that the rank writes (its `writes` flag; no file when it writes none), the
// model in `model_dtype` (expert biases always F32), the AdamW moments (F32) when
// `with_optimizer`. *description (counted, freed by the caller) is JSON that names the files
// (size, CRC-32) and every box, for dsv3_ckpt_store_index.
Dsv3Err dsv3_ckpt_store_write_shards(const char *dir, int64_t shard, const Dsv3CkptTensors *t,
                                     int with_optimizer, Dsv3Dtype model_dtype, int64_t step,
                                     char **description);

// From every rank's description: checks that the slices of each dataset cover it exactly once,
// writes model.h5 (and optimizer.h5 when any rank wrote optimizer state) as virtual datasets,
// and adds every shard and index file to the manifest.
Dsv3Err dsv3_ckpt_store_index(const char *dir, char *const *descriptions, int64_t n, int64_t step,
                              Dsv3Manifest *manifest);

// Reads the box of every tensor of `t` (model values and expert biases; with `with_optimizer`
// also the moments) from `dir`, whatever layout wrote it, checking each dataset's name, shape and
// type against the model and that the files hold no tensor the model lacks; errors name the first
// mismatch.
Dsv3Err dsv3_ckpt_store_read(const char *dir, const Dsv3CkptTensors *t, int with_optimizer);

#endif
