// train_state: the coordinator's part of a checkpoint — train_state.json and config.toml.
//
// train_state.json holds the format version, the step (AdamW's step counter equals it), the
// data position (the sampler is a pure function of the step: step s reads global windows
// [(s−1)·G, s·G), so the position is the step plus the dataset's identity: kind, path, size,
// seed, vocab, seq_len, global batch G, windows consumed), the LR schedule (its parameters and
// the rate of the saved step; the schedule is a pure function of the step), and the RNG seed
// (initialisation and synthetic data are counter-based: no generator state to keep).
// config.toml is the whole config of the run that saved, as --job.print_config writes it.
// The expert biases and optimizer moments are tensors: they live in model.h5 / optimizer.h5.
#ifndef DSV3_CKPT_TRAIN_STATE_H
#define DSV3_CKPT_TRAIN_STATE_H

#include <stdint.h>

#include "common/core/config.h"
#include "common/core/error.h"

#define DSV3_TRAIN_STATE_FILE "train_state.json"
#define DSV3_CONFIG_FILE "config.toml"

// Writes train_state.json and config.toml into `dir` (flushed to disk). `global_batch` is G,
// `lr` the learning rate step `step` used.
Dsv3Err dsv3_train_state_write(const char *dir, const Dsv3Config *cfg, int64_t step,
                               int64_t global_batch, double lr);

// Reads the step of `dir`/train_state.json and compares its data identity and schedule with
// `cfg`; each difference is logged as a warning (a resume then does not continue the same
// data stream or schedule).
Dsv3Err dsv3_train_state_read(const char *dir, const Dsv3Config *cfg, int64_t global_batch,
                              int64_t *step);

#endif
