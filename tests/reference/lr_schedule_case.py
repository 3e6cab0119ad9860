#!/usr/bin/python3
"""Learning rates of torchtitan's linear_warmup_stable_decay schedule, through torch's LambdaLR.

A port of torchtitan's build_lr_schedulers (torchtitan/components/lr_scheduler.py at the
pinned commit): the same derivation of warmup / stable / decay steps from the config values
and the same per-step lambda, driven by torch.optim.lr_scheduler.LambdaLR exactly as
torchtitan's training loop drives it (read the lr, step the optimizer, step the scheduler).

Writes into CASE_DIR:
  params.npy   (n_cases, 6) float64: warmup_steps, total_steps, has_decay_ratio, decay_ratio,
               decay type (0 linear, 1 sqrt, 2 cosine), min_lr_factor
  base_lr.npy  (1,) float64: the optimizer's lr
  lr_<i>.npy   (steps_i,) float64: the lr of steps 1..steps_i of case i
Steps run a little past total_steps where the schedule is defined there (decay_steps > 0), so
the behaviour of training.steps > lr_scheduler.total_steps is pinned too.

usage: lr_schedule_case.py CASE_DIR
"""

import functools
import itertools
import math
import sys

import numpy as np
import torch

DECAY_TYPES = ["linear", "sqrt", "cosine"]
BASE_LR = 8e-4
# Steps evaluated past total_steps when the decay formula is defined there.
STEPS_PAST_END = 3


def linear_warmup_stable_decay(current_step, warmup_steps, stable_steps, decay_steps,
                               lr_decay_type, min_lr_factor):
    """The factor LambdaLR multiplies the base lr by at 0-based scheduler index current_step."""
    warmup_stable_steps = warmup_steps + stable_steps
    if current_step < warmup_steps:
        # The scheduler index is 0-based, so the first step already gets 1 / warmup_steps.
        return float((current_step + 1) / warmup_steps)
    if current_step < warmup_stable_steps:
        return 1.0
    assert decay_steps != 0, "decay_steps must not be zero in the decay phase"
    progress = float(current_step + 1 - warmup_stable_steps) / decay_steps
    if lr_decay_type == "linear":
        adjustment = 1 - progress
    elif lr_decay_type == "sqrt":
        adjustment = 1 - math.sqrt(progress)
    elif lr_decay_type == "cosine":
        adjustment = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(lr_decay_type)
    return min_lr_factor + (1 - min_lr_factor) * adjustment


def phases(warmup_steps, total_steps, decay_ratio):
    """(warmup, stable, decay) steps as torchtitan derives them from the config."""
    warmup_steps = min(int(warmup_steps), total_steps)
    if decay_ratio is not None:
        decay_steps = round(total_steps * decay_ratio)
        if warmup_steps + decay_steps > total_steps:
            decay_steps = total_steps - warmup_steps
    else:
        decay_steps = total_steps - warmup_steps
    # torchtitan's virtual last step keeps the final lr above min_lr_factor.
    stable_steps = total_steps + 1 - warmup_steps - decay_steps
    return warmup_steps, stable_steps, decay_steps


def run_case(warmup_steps, total_steps, decay_ratio, decay_type, min_lr_factor):
    warmup, stable, decay = phases(warmup_steps, total_steps, decay_ratio)
    lr_lambda = functools.partial(
        linear_warmup_stable_decay, warmup_steps=warmup, stable_steps=stable,
        decay_steps=decay, lr_decay_type=decay_type, min_lr_factor=min_lr_factor)
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    optimizer = torch.optim.SGD([param], lr=BASE_LR)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    # Index total_steps (step total_steps + 1) is still stable; beyond it only decay is defined.
    steps = total_steps + (STEPS_PAST_END if decay > 0 else 1)
    lrs = [scheduler.get_last_lr()[0]]
    for _ in range(steps - 1):
        # torchtitan's train_step: the optimizer steps, then the scheduler, for the next step.
        optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    return np.array(lrs, dtype=np.float64)


def settings():
    grid = itertools.product([0, 2, 10], [None, 0.8, 0.0], DECAY_TYPES, [0.0, 0.1], [10, 100])
    for warmup, ratio, decay_type, min_lr, total in grid:
        yield warmup, total, ratio, decay_type, min_lr
    # Python's round() halves to even (2.5 -> 2, 0.5 -> 0, 12.5 -> 12); warm-up longer than the
    # schedule; decay_ratio over 1; a one-step schedule.
    yield 0, 10, 0.25, "linear", 0.0
    yield 1, 10, 0.05, "cosine", 0.1
    yield 3, 100, 0.125, "sqrt", 0.0
    yield 20, 10, 0.5, "linear", 0.0
    yield 20, 10, None, "cosine", 0.1
    yield 0, 10, 1.5, "linear", 0.0
    yield 1, 1, None, "linear", 0.0
    yield 0, 1, None, "cosine", 0.0


def main():
    case_dir = sys.argv[1]
    params = []
    for i, (warmup, total, ratio, decay_type, min_lr) in enumerate(settings()):
        np.save(f"{case_dir}/lr_{i}.npy", run_case(warmup, total, ratio, decay_type, min_lr))
        params.append([warmup, total, ratio is not None, ratio if ratio is not None else 0.0,
                       DECAY_TYPES.index(decay_type), min_lr])
    np.save(f"{case_dir}/params.npy", np.array(params, dtype=np.float64))
    np.save(f"{case_dir}/base_lr.npy", np.array([BASE_LR], dtype=np.float64))


if __name__ == "__main__":
    main()
