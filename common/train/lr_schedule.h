// lr_schedule: the learning-rate factor of each step, as torchtitan's
// linear_warmup_stable_decay (torchtitan/components/lr_scheduler.py) computes it.
//
// The learning rate of step s is optimizer.lr × dsv3_lr_factor(s). Steps are 1-based, as the
// training loop counts them; torchtitan's LambdaLR evaluates its lambda at i = s - 1 for step s
// (the lambda runs once when the scheduler is built and once after every optimizer step).
// With W warm-up, D decay and T total steps (below), and i = s - 1:
//   i < W              warm-up: (i + 1) / W             (the first step gets 1/W, never 0)
//   i < W + stable     stable:  1
//   otherwise          decay:   p = (i + 1 - W - stable) / D,
//                               d = 1 - p (linear), 1 - sqrt(p) (sqrt), (1 + cos(π p)) / 2
//                               (cosine); factor = min_lr_factor + (1 - min_lr_factor) · d
// where, as torchtitan derives them from the config:
//   W = min(warmup_steps, T)                          (with a warning when it is cut)
//   D = T - W                                         without decay_ratio
//     = min(round(T · decay_ratio), T - W)            with it (round half to even, as
//                                                      Python's round; a warning when cut)
//   stable = T + 1 - W - D
// The "+ 1" in stable is torchtitan's virtual last step: decay reaches its end one step after
// T, so the last step's rate is not min_lr_factor (linear: min + (1 - min) / D at s = T). In
// particular without decay_ratio, step W + 1 is one stable step at 1 before decay begins.
//
// Beyond the schedule (s > T + 1, i.e. training.steps > lr_scheduler.total_steps) the decay
// formula runs on with p > 1, as torchtitan's does: linear and sqrt fall below min_lr_factor
// and eventually below zero, cosine rises again. Where D = 0 torchtitan's code asserts there;
// this one returns min_lr_factor, the value every decay type reaches at p = 1.
//
// This module does not read the config (the caller maps lr_scheduler.* and training.steps to
// Dsv3LrScheduleParams) and knows nothing of the optimizer.
#ifndef DSV3_TRAIN_LR_SCHEDULE_H
#define DSV3_TRAIN_LR_SCHEDULE_H

#include <stdint.h>

#include "common/core/error.h"

typedef enum {
    DSV3_LR_DECAY_LINEAR,
    DSV3_LR_DECAY_SQRT,
    DSV3_LR_DECAY_COSINE,
} Dsv3LrDecayType;

// Plain values, named after the config keys they come from.
typedef struct {
    int64_t warmup_steps; // lr_scheduler.warmup_steps (>= 0)
    int64_t total_steps;  // lr_scheduler.total_steps, or training.steps when that is unset (>= 0)
    int has_decay_ratio;  // 0: lr_scheduler.decay_ratio unset (the config's -1): decay right
                          // after warm-up
    double decay_ratio;   // lr_scheduler.decay_ratio (>= 0) when has_decay_ratio
    Dsv3LrDecayType decay_type; // lr_scheduler.decay_type
    double min_lr_factor;       // lr_scheduler.min_lr_factor, in [0, 1]
} Dsv3LrScheduleParams;

// The derived phase lengths (see above); fill with dsv3_lr_schedule_init.
typedef struct {
    int64_t warmup_steps; // W
    int64_t stable_steps; // T + 1 - W - D
    int64_t decay_steps;  // D
    Dsv3LrDecayType decay_type;
    double min_lr_factor;
} Dsv3LrSchedule;

// Derives the phases from `params`, logging torchtitan's warnings when warm-up or decay is cut
// to fit total_steps. Impossible values fail with a message naming the lr_scheduler key.
Dsv3Err dsv3_lr_schedule_init(Dsv3LrSchedule *out, const Dsv3LrScheduleParams *params);

// The factor of 1-based step `step` (>= 1): multiply optimizer.lr by it.
double dsv3_lr_factor(const Dsv3LrSchedule *s, int64_t step);

// Parses lr_scheduler.decay_type ("linear", "sqrt" or "cosine").
Dsv3Err dsv3_lr_decay_type_parse(const char *name, Dsv3LrDecayType *out);

// The config spelling of a decay type.
const char *dsv3_lr_decay_type_name(Dsv3LrDecayType type);

#endif
