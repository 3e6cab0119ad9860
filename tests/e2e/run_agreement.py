"""How far one training run is from another, for the end-to-end layout tests: the relative
differences of every step's loss and grad norm and of the final checkpoint's tensors."""
import json

from ckpt_tensors import checkpoint_tensors, state_difference


def metrics(work, name):
    """The metrics.jsonl records of run `name` in folder `work`."""
    return [json.loads(line) for line in open(f"{work}/{name}/metrics.jsonl")]


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-30)


def agreement(work, name, ref, steps=10):
    """(loss, grad norm, final state, worst tensor): the largest relative differences of run
    `name` from run `ref` (both in `work`, each with `steps` logged steps and a checkpoint at the
    last), the state as checkpoint_tensors / state_difference measure it. The tokens per expert
    of every step must be identical (asserted)."""
    m, r = metrics(work, name), metrics(work, ref)
    assert len(m) == steps and len(r) == steps, (name, len(m), ref, len(r))
    loss = max(rel(a["loss"], b["loss"]) for a, b in zip(m, r))
    norm = max(rel(a["grad_norm"], b["grad_norm"]) for a, b in zip(m, r))
    for a, b in zip(m, r):
        load_a = {k: v for k, v in a.items() if k.endswith("_tokens")}
        load_b = {k: v for k, v in b.items() if k.endswith("_tokens")}
        assert load_a and load_a == load_b, (name, a["step"], load_a, load_b)
    state, worst = state_difference(
        checkpoint_tensors(f"{work}/{name}/checkpoint/step-{steps}"),
        checkpoint_tensors(f"{work}/{ref}/checkpoint/step-{steps}"))
    return loss, norm, state, worst
