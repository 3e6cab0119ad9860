"""How far one training run is from another, for the end-to-end layout tests: the relative
differences of every step's loss and grad norm and of the final checkpoint's tensors; and
whether a pipeline run's Chrome trace follows its printed schedule."""
import json
import re

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


def resumed_losses(work, names, ref, first=6, last=10, tol=1e-5):
    """Runs `names` resumed from a checkpoint: each logged exactly steps first..last, with the
    losses of the uninterrupted run `ref` within `tol` relative (asserted, and printed)."""
    uninterrupted = {r["step"]: r["loss"] for r in metrics(work, ref)}
    for name in names:
        got = {r["step"]: r["loss"] for r in metrics(work, name)}
        assert sorted(got) == list(range(first, last + 1)), (name, sorted(got))
        worst = max(rel(got[s], uninterrupted[s]) for s in got)
        print(f"{name}: steps {first}-{last} within {worst:.1e} of the uninterrupted losses")
        assert worst <= tol, (name, worst)


def validation_agrees(work, names, ref, tol=1e-5):
    """Runs `names` logged the held-out losses of run `ref`, within `tol` relative (asserted,
    and printed)."""
    def held_out(name):
        return [r["validation_loss"] for r in metrics(work, name)
                if r.get("validation_loss") is not None]
    want = held_out(ref)
    for name in names:
        got = held_out(name)
        assert want and len(got) == len(want), (name, want, got)
        worst = max(rel(x, y) for x, y in zip(got, want))
        print(f"validation: {name} loss {got[-1]:.6f}, {ref} {want[-1]:.6f} ({worst:.1e} relative)")
        assert worst <= tol, (name, worst)


def pipeline_agrees(work, pairs, tol=1e-5):
    """Each (run, reference) pair of pipeline runs agrees within `tol` relative (agreement;
    asserted), printed with the seconds the run's stages waited for their neighbours."""
    for name, ref in pairs:
        loss, norm, state, worst = agreement(work, name, ref)
        wait = sum(a["time_pipeline_wait"] for a in metrics(work, name))
        print(f"{name}: losses {loss:.1e}, grad norms {norm:.1e}, final state {state:.1e} "
              f"relative (worst {worst}); tokens per expert identical; {wait:.2f} s waiting for "
              "neighbours")
        assert loss <= tol and norm <= tol and state <= tol, (name, loss, norm, state)


# The trace event of each compute action of a printed schedule.
PHASE_OF_ACTION = {"F": "forward", "B": "backward", "I": "backward", "W": "backward_weight"}


def trace_follows_schedule(work, name, step=10):
    """Run `name` printed its schedule (parallelism.print_schedule) and profiled step `step`:
    each stage rank's forward, backward and backward_weight spans, with their micro-batch and
    stage, come in the order of the computations of its list (asserted, and printed)."""
    text = open(f"{work}/{name}.out").read()
    # A paired F ("PF3.0", DualPipeV) is an F; the trace shows its share of the pair first.
    lists = {int(r): [a.removeprefix("P") for a in actions.split()
                      if a.removeprefix("P")[0] in PHASE_OF_ACTION]
             for r, actions in re.findall(r"layout: pipeline schedule: rank (\d+):(.*)", text)}
    trace = json.load(open(f"{work}/{name}/trace/iteration_{step}/trace.json"))["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in trace
             if e["ph"] == "M" and e["name"] == "process_name"}
    assert lists, name
    for rank, actions in sorted(lists.items()):
        pid = next(p for p, n in names.items() if n == f"stage {rank + 1}")
        spans = sorted((e["ts"], e["name"], e["args"]) for e in trace if e["ph"] == "X" and
                       e["pid"] == pid and e["name"] in PHASE_OF_ACTION.values())
        seen = [(n, a["micro_batch"], a["stage"]) for _, n, a in spans]
        want = [(PHASE_OF_ACTION[a[0]], *map(int, a[1:].split("."))) for a in actions]
        assert seen == want, (name, rank, seen, want)
        print(f"trace: {name} rank {rank} ran {' '.join(actions)}")
