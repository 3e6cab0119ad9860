// coordinator_loop: the coordinator's side of training (DESIGN.md §2, §4).
//
// Opens the dataset (synthetic, with its entropy floor printed, or a token file), then for
// every step computes the learning rate, broadcasts the step plan, sends every stage rank its
// micro-batches of token windows (step s takes global windows [(s−1)·G, s·G), data-parallel
// rank d its contiguous slice, micro-batches consecutive within it), gathers the stage
// reports and prints one line per logged step, also appended to <dump_folder>/metrics.jsonl.
// Collective over the job.
#ifndef DSV3_TRAIN_COORDINATOR_LOOP_H
#define DSV3_TRAIN_COORDINATOR_LOOP_H

#include "common/comm/launch.h"

Dsv3Err dsv3_coordinator_train(Dsv3Launch *launch);

#endif
