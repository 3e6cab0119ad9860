"""Checks every output of a training run with metrics, TensorBoard, profiling, validation and
expert-count dumping on (tests/e2e/test_metrics.sh):

    check_metrics.py DUMP_FOLDER STEPS VALIDATED PROFILED STAGE_RANKS TOKENS_PER_STEP

STEPS, VALIDATED, PROFILED: comma-separated steps that were logged, validated, traced.
TensorBoard's own event reader reads the event file; every value of metrics.jsonl must be there.
"""
import glob
import json
import math
import os
import sys

from tensorboard.backend.event_processing import event_accumulator, event_file_loader


def fail(message):
    sys.exit(f"FAIL: {message}")


def steps_arg(text):
    return [int(s) for s in text.split(",") if s]


def close(a, b, rel=2e-6):
    # TensorBoard stores float32 (simple_value).
    return abs(a - b) <= rel * max(abs(a), abs(b)) + 1e-30


def check_jsonl(dump, logged, validated):
    records = [json.loads(line) for line in open(os.path.join(dump, "metrics.jsonl"))]
    if [r["step"] for r in records] != logged:
        fail(f"metrics.jsonl steps {[r['step'] for r in records]}, expected {logged}")
    required = ["loss", "grad_norm", "lr", "tps", "tflops", "mfu", "memory_gib", "memory_pct", "time_step",
                "time_data", "time_forward", "time_backward", "time_optimizer", "time_comm_batch",
                "time_comm_grad_allreduce", "time_comm_expert_counts", "expert_imbalance"]
    for r in records:
        for key in required:
            if not isinstance(r.get(key), (int, float)) or not math.isfinite(r[key]):
                fail(f"step {r['step']}: {key} missing or not a number: {r.get(key)!r}")
        if not (r["tps"] > 0 and r["tflops"] > 0 and 0 < r["mfu"] < 1000 and r["memory_gib"] > 0):
            fail(f"step {r['step']}: implausible throughput or memory {r}")
        if ("validation_loss" in r) != (r["step"] in validated):
            fail(f"step {r['step']}: validation_loss present {('validation_loss' in r)}, expected the steps {validated}")
        if "validation_loss" in r and not 0 < r["validation_loss"] < 20:
            fail(f"step {r['step']}: validation_loss {r['validation_loss']}")
        layers = sorted(int(k.split("/")[1][len("layer_"):]) for k in r if k.endswith("/max_over_mean"))
        if not layers:
            fail(f"step {r['step']}: no per-layer expert load")
        worst = max(r[f"expert_load/layer_{l}/max_over_mean"] for l in layers)
        if not close(worst, r["expert_imbalance"]) or worst < 1:
            fail(f"step {r['step']}: expert_imbalance {r['expert_imbalance']} is not the worst layer's {worst}")
    return records, layers


def check_counts(dump, records, layers, tokens_per_step):
    counts = [json.loads(line) for line in open(os.path.join(dump, "expert_counts.jsonl"))]
    if [c["step"] for c in counts] != [r["step"] for r in records]:
        fail("expert_counts.jsonl has not one line per logged step")
    for c, r in zip(counts, records):
        totals = set()
        for l in layers:
            row = c[f"layer_{l}"]
            if max(row) != r[f"expert_load/layer_{l}/max_tokens"] or min(row) != r[f"expert_load/layer_{l}/min_tokens"]:
                fail(f"step {c['step']} layer {l}: counts {row} disagree with metrics.jsonl")
            totals.add(sum(row))
        # Every token goes to top_k experts in every MoE layer: the same total everywhere.
        if len(totals) != 1 or next(iter(totals)) % tokens_per_step:
            fail(f"step {c['step']}: tokens per layer {totals} are not top_k × {tokens_per_step}")


def check_tensorboard(dump, records):
    files = glob.glob(os.path.join(dump, "tb", "*", "*tfevents*"))
    if len(files) != 1:
        fail(f"expected one event file under {dump}/tb/<run>/, found {files}")
    # The raw loader stops at a record whose CRC does not match: count them all.
    events = list(event_file_loader.EventFileLoader(files[0]).Load())
    if len(events) != 1 + len(records) or events[0].file_version != "brain.Event:2":
        fail(f"{files[0]}: {len(events)} events read, expected the version event + {len(records)}")
    acc = event_accumulator.EventAccumulator(os.path.dirname(files[0]), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    checked = 0
    for key in {k for r in records for k in r if k != "step"}:
        if key not in tags:
            fail(f"TensorBoard has no scalar '{key}'")
        logged = {r["step"]: r[key] for r in records if isinstance(r.get(key), (int, float))}
        seen = {e.step: e.value for e in acc.Scalars(key)}
        if set(seen) != set(logged):
            fail(f"'{key}': TensorBoard steps {sorted(seen)}, metrics.jsonl steps {sorted(logged)}")
        for step, value in logged.items():
            if not close(seen[step], value):
                fail(f"'{key}' at step {step}: TensorBoard {seen[step]}, metrics.jsonl {value}")
            checked += 1
    print(f"tensorboard: {len(events)} events, {len(tags)} scalar tags, {checked} values equal to metrics.jsonl")


def check_trace(dump, step, stage_ranks):
    path = os.path.join(dump, "profile_trace", f"iteration_{step}", "trace.json")
    with open(path) as f:
        trace = json.load(f)
    names, spans, ops, phases = {}, {}, {}, {}
    for e in trace["traceEvents"]:
        if e["ph"] == "M":
            if e["name"] == "process_name":
                names[e["pid"]] = e["args"]["name"]
        elif e["ph"] == "X":
            if not (e["ts"] >= 0 and e["dur"] >= 0 and isinstance(e["tid"], int) and e["cat"]):
                fail(f"{path}: malformed event {e}")
            if e["cat"] == "op":
                ops.setdefault(e["pid"], []).append(e)
            else:
                spans.setdefault(e["pid"], set()).add(e["name"])
                phases.setdefault(e["pid"], []).append(e)
        else:
            fail(f"{path}: unexpected event kind {e}")
    expected = {0: "coordinator 0", **{r: f"stage {r}" for r in range(1, stage_ranks + 1)}}
    if names != expected:
        fail(f"{path}: tracks {names}, expected {expected}")
    if not {"comm_plan", "data", "comm_batch", "wait_reports"} <= spans.get(0, set()):
        fail(f"{path}: coordinator spans {spans.get(0)}")
    stage = {"comm_batch", "forward", "backward", "optimizer"}
    if stage_ranks > 1:
        stage |= {"comm_grad_allreduce", "comm_expert_counts"}
    for r in range(1, stage_ranks + 1):
        if not stage <= spans.get(r, set()):
            fail(f"{path}: stage {r} spans {spans.get(r)}, expected at least {stage}")
        check_ops(path, r, ops.get(r, []), phases[r])
    if 0 in ops:
        fail(f"{path}: the coordinator runs no ops, yet its track has {len(ops[0])}")
    print(f"trace {path}: {len(trace['traceEvents'])} events on {len(names)} tracks, "
          f"{sum(map(len, ops.values()))} of them ops")


def check_ops(path, rank, ops, phases):
    """A stage's op events: each inside the phase span that ran it (forward, backward, optimizer,
    or the gradient reduction that sums shards), the model's GEMM ops with their work and rate."""
    # Rounding of microseconds to 3 decimals on both ends.
    slack = 0.002
    for op in ops:
        if not any(p["ts"] - slack <= op["ts"] and op["ts"] + op["dur"] <= p["ts"] + p["dur"] + slack
                   for p in phases):
            fail(f"{path}: stage {rank}'s op {op} lies outside every phase span")
    names = {op["name"] for op in ops}
    expected = {"embedding_forward", "rmsnorm_forward", "linear_forward", "attention_forward",
                "attention_backward", "linear_backward", "adamw_step"}
    if not expected <= names:
        fail(f"{path}: stage {rank} ran ops {sorted(names)}, expected at least {sorted(expected)}")
    for op in ops:
        if op["name"] == "linear_forward" and not (op["args"]["gemm_gflop"] > 0 and
                                                   op["args"]["gemm_gflop_per_s"] > 0):
            fail(f"{path}: stage {rank}'s GEMM op without its work: {op}")


def main():
    dump, logged, validated, profiled = sys.argv[1], *map(steps_arg, sys.argv[2:5])
    stage_ranks, tokens_per_step = int(sys.argv[5]), int(sys.argv[6])
    records, layers = check_jsonl(dump, logged, validated)
    check_counts(dump, records, layers, tokens_per_step)
    check_tensorboard(dump, records)
    traces = sorted(glob.glob(os.path.join(dump, "profile_trace", "iteration_*")))
    if sorted(int(t.rsplit("_", 1)[1]) for t in traces) != profiled:
        fail(f"traced steps {traces}, expected {profiled}")
    for step in profiled:
        check_trace(dump, step, stage_ranks)
    print("metrics outputs: ok")


if __name__ == "__main__":
    main()
