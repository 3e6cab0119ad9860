// checkpoint: saving and loading during training, collective over the job (DESIGN.md §8).
//
// After every step the coordinator tells every rank whether to save (one broadcast per step).
// With checkpoint.async_mode = "async" (or "async_with_pinned_mem", the same on CPUs) a save
// before the last step is asynchronous: every stage rank copies the boxes it writes into host
// memory (a copy of its share of the state) and a background thread writes them while training
// goes on; the save is completed — all ranks agree, the coordinator commits the folder — when
// the next save begins, at the last step, or when a stop signal arrives, so at most one save is
// in flight and a crash or signal during it leaves the previous checkpoint the one to resume
// from. The last save and a stop signal's save are synchronous.
// With checkpoint.enable, the state after step s is saved to <dump_folder>/<folder>/step-s
// when s is a multiple of checkpoint.interval and after the last step (model only, in
// checkpoint.export_dtype, with last_save_model_only). A save: the coordinator makes
// step-s.tmp/ and tells every rank (one broadcast per step); every stage rank and expert server
// writes the boxes of the tensors it is the first holder of (tensors.h: each element once) into
// its shard files, the
// coordinator writes train_state.json and config.toml; all ranks agree it worked
// (all-reduce); the coordinator gathers the shard descriptions, writes the virtual-dataset
// index files (model.h5, optimizer.h5) and the manifest, renames the folder, and removes
// checkpoints beyond keep_latest_k (never the one this run resumed from).
//
// At start: with checkpoint.enable and a committed full checkpoint in the folder, the run
// resumes from it (the latest, or checkpoint.load_step): model, expert biases, AdamW moments,
// and the step, from which the data position, LR and AdamW's step counter follow. Otherwise
// checkpoint.initial_load_path, a checkpoint folder (step-N or a converted one; the model
// only unless initial_load_model_only = false) or, with initial_load_in_hf, an HF folder.
// Every rank reads its own boxes, so any layout loads what any other layout wrote.
// Loading verifies the manifest (files, sizes; CRC-32s split over the stage ranks) first.
// Every message is a function of comm/protocol.h (which documents their order); its waits
// have comm.init_timeout_seconds during a load or a save, since both may take long.
//
// Fault injection for tests: DSV3_CKPT_TEST_KILL=<point>:<step> makes a process SIGKILL
// itself during the save of that step — "shards" (stage rank 0, after writing its shards) or
// "manifest" (the coordinator, after writing the manifest, before the rename).
#ifndef DSV3_CKPT_CHECKPOINT_H
#define DSV3_CKPT_CHECKPOINT_H

#include <stdint.h>

#include "common/ckpt/manifest.h"
#include "common/comm/protocol.h"
#include "common/comm/launch.h"
#include "common/model/model.h"

typedef struct {
    char root[DSV3_CKPT_PATH_CAPACITY]; // <dump_folder>/<folder>
    int64_t resumed_step;               // the step-N this run loaded from root (-1: none)
    int64_t global_batch;               // G, for the train state
    Dsv3CkptSaveCommand pending;        // the save being written in the background (step 0: none)
    double pending_start;               // when it began
    char pending_error[1024];           // the coordinator's own failure in it ("" if none)
} Dsv3CkptCoordinator;

// Coordinator, at start (collective with dsv3_ckpt_rank_start): finds what to load, tells the
// stage ranks and expert servers, waits until they have loaded it. *first_step is the first step to
// train (1, or the resumed step + 1).
Dsv3Err dsv3_ckpt_coordinator_start(Dsv3CkptCoordinator *c, const Dsv3Launch *launch,
                                    int64_t global_batch, int64_t *first_step);

// Coordinator, after every training step (collective with dsv3_ckpt_rank_step): saves when due,
// and whenever `stop` is set (a stop signal, core/stop_signal.h: the full state after this step
// is saved whatever checkpoint.enable says). `lr` is the rate the step used.
Dsv3Err dsv3_ckpt_coordinator_step(Dsv3CkptCoordinator *c, const Dsv3Launch *launch, int64_t step,
                                   double lr, int stop);

// What a stage rank or an expert server saves and loads.
typedef struct {
    // A stage rank's models, one per pipeline stage it holds: their stores' groups and their
    // stages' expert biases, written to one shard file.
    Dsv3Model *const *models;
    int64_t n_models; // 0 on an expert server
    // An expert server's routed experts, one store per pipeline stage it serves.
    Dsv3ParamStore *const *stores;
    int64_t n_stores;
} Dsv3CkptRank;

// Stage rank or expert server: the other side of the two calls above.
Dsv3Err dsv3_ckpt_rank_start(const Dsv3Launch *launch, const Dsv3CkptRank *rank);
Dsv3Err dsv3_ckpt_rank_step(const Dsv3Launch *launch, const Dsv3CkptRank *rank);

#endif
