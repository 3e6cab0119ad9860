#!/usr/bin/python3
"""Writes a whole-model case for the C model test: config, initial parameters, one step's
inputs and expected loss/logits/gradients/expert counts, and optionally S training steps.

    model_case.py CASE_DIR --case NAME [--steps S] [--seed N] [--min-margin X]

Everything is computed in float64 by dsv3_reference.py, except that the final norm uses the
float32 eps (1.1920929e-07) because that is what a float32 run of torchtitan's RMSNorm(dim)
uses. The file list is in README.md beside this script.

Routing is discontinuous: a float32 implementation may pick another expert where two candidate
scores (or group scores) are closer than its rounding. The writer therefore tries seeds from
--seed on and keeps the first whose smallest routing margin, over every forward of the case, is
at least --min-margin; the margin it got is printed and stored in info.json. Measured
float32-vs-float64 differences of the routing scores in these cases are 3-8e-8 (`--twin` checks
that a float32 run routes every token the same way), far below the default 2e-6.
"""

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Dict

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dsv3_reference as ref  # noqa: E402


@dataclass
class Case:
    model: Dict
    seq_len: int
    local_batch_size: int
    micro_batches: int
    eos_id: int
    optimizer: ref.OptimizerConfig
    lr_scheduler: ref.LRSchedulerConfig
    max_norm: float
    documents: bool = False  # put EOS tokens inside the sequences
    ignore_fraction: tuple = (0.1,)  # share of -100 labels, per micro-batch (cycled)
    seed: int = 0


# the model keys every case shares unless it overrides them
_DEFAULTS = dict(
    norm_eps=1e-5, route_scale=1.0, num_expert_groups=0, num_limited_groups=0,
    load_balance_coeff=1e-3, original_seq_len=4096, rope_theta=10000.0, rope_factor=40.0,
    beta_fast=32, beta_slow=1, mscale=1.0, attn_mask_type="causal")


def _model(**kw) -> Dict:
    m = dict(_DEFAULTS)
    m.update(kw)
    return m


CASES = {
    # q_lora 0, softmax, 2 shared experts, causal, 1 dense + 2 MoE layers, clipping active
    "small_softmax": Case(
        model=_model(vocab_size=128, dim=48, inter_dim=96, moe_inter_dim=32, n_layers=3,
                     n_dense_layers=1, n_heads=4, num_experts=8, num_shared_experts=2, top_k=2,
                     score_func="softmax", route_norm=False, q_lora_rank=0, kv_lora_rank=32,
                     qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16),
        seq_len=32, local_batch_size=2, micro_batches=2, eos_id=0,
        optimizer=ref.OptimizerConfig(lr=3e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1),
        lr_scheduler=ref.LRSchedulerConfig(warmup_steps=2, decay_ratio=None, decay_type="linear",
                                           min_lr_factor=0.1, total_steps=5),
        max_norm=0.5, seed=104),
    # q_lora > 0, sigmoid, route_norm, route_scale 2.5, E=8 in 4 groups of which 2, top 2,
    # 1 shared expert, block-causal documents
    "small_sigmoid_groups": Case(
        model=_model(vocab_size=96, dim=32, inter_dim=64, moe_inter_dim=16, n_layers=3,
                     n_dense_layers=1, n_heads=2, num_experts=8, num_shared_experts=1, top_k=2,
                     score_func="sigmoid", route_norm=True, route_scale=2.5,
                     num_expert_groups=4, num_limited_groups=2, q_lora_rank=24,
                     kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=12,
                     attn_mask_type="block_causal"),
        seq_len=24, local_batch_size=2, micro_batches=2, eos_id=1, documents=True,
        optimizer=ref.OptimizerConfig(lr=2e-3, beta1=0.85, beta2=0.99, eps=1e-7,
                                      weight_decay=0.05),
        lr_scheduler=ref.LRSchedulerConfig(warmup_steps=1, decay_ratio=0.5, decay_type="cosine",
                                           min_lr_factor=0.0, total_steps=4),
        max_norm=1.0, seed=200),
    # seq_len 40 > original_seq_len 24: YaRN-corrected frequencies (ramp from channel pair 1 to
    # 4) and the mscale factor; no shared experts; softmax + route_norm; no dense layer
    "small_yarn": Case(
        model=_model(vocab_size=64, dim=32, inter_dim=64, moe_inter_dim=24, n_layers=2,
                     n_dense_layers=0, n_heads=2, num_experts=4, num_shared_experts=0, top_k=2,
                     score_func="softmax", route_norm=True, load_balance_coeff=1e-2,
                     q_lora_rank=0, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=16,
                     v_head_dim=8, original_seq_len=24, rope_theta=20.0, rope_factor=4.0,
                     beta_fast=2, beta_slow=1, mscale=0.7),
        seq_len=40, local_batch_size=2, micro_batches=1, eos_id=0,
        optimizer=ref.OptimizerConfig(lr=1e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1),
        lr_scheduler=ref.LRSchedulerConfig(warmup_steps=2, decay_ratio=0.4, decay_type="sqrt",
                                           min_lr_factor=0.2, total_steps=6),
        max_norm=100.0, seed=301),
    # 4 micro-batches with different numbers of -100 labels: accumulation and the global count
    "small_accum": Case(
        model=_model(vocab_size=64, dim=32, inter_dim=64, moe_inter_dim=16, n_layers=2,
                     n_dense_layers=1, n_heads=2, num_experts=4, num_shared_experts=1, top_k=1,
                     score_func="softmax", route_norm=False, q_lora_rank=0, kv_lora_rank=16,
                     qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8),
        seq_len=16, local_batch_size=2, micro_batches=4, eos_id=0,
        ignore_fraction=(0.0, 0.1, 0.3, 0.6),
        optimizer=ref.OptimizerConfig(lr=2e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1),
        lr_scheduler=ref.LRSchedulerConfig(warmup_steps=1, decay_ratio=None, decay_type="linear",
                                           min_lr_factor=0.0, total_steps=3),
        max_norm=1.0, seed=400),
}

DEFAULT_MIN_MARGIN = 2e-6


def make_batches(case: Case, steps: int, rng: np.random.Generator):
    """tokens, labels (steps, micro_batches, B, T) int64: random windows of T + 1 tokens cut
    into input and next-token labels; some labels -100; EOS inside when the case has documents."""
    V, T, B, M = case.model["vocab_size"], case.seq_len, case.local_batch_size, case.micro_batches
    tokens = np.empty((steps, M, B, T), np.int64)
    labels = np.empty((steps, M, B, T), np.int64)
    for s in range(steps):
        for m in range(M):
            win = rng.integers(0, V, size=(B, T + 1), dtype=np.int64)
            if case.documents:
                for b in range(B):
                    k = rng.integers(2, 5)
                    win[b, rng.choice(T + 1, size=k, replace=False)] = case.eos_id
                if s == 0 and m == 0:
                    # edges: a one-token document first, back-to-back EOS, EOS last
                    win[0, 0] = case.eos_id
                    win[1, T // 2: T // 2 + 2] = case.eos_id
                    win[1, T - 1] = case.eos_id
            lab = win[:, 1:].copy()
            frac = case.ignore_fraction[m % len(case.ignore_fraction)]
            lab[rng.random((B, T)) < frac] = ref.IGNORE_INDEX
            lab[0, 0] = win[0, 1]  # never a micro-batch without labels
            tokens[s, m], labels[s, m] = win[:, :T], lab
    return tokens, labels


def run_case(case: Case, steps: int, seed: int, dtype=torch.float64, record=None):
    """Builds, initialises and trains the reference; returns everything to write. With a
    list as `record`, every routing choice (N, K) of every forward is appended to it."""
    args = ref.ModelArgs.from_config(case.model, case.seq_len, final_norm_eps=ref.FLOAT32_EPS)
    model = ref.DeepSeekV3(args, dtype, eos_id=case.eos_id)
    model.init_weights(seed)
    for moe in model.moe_layers().values():
        moe.router.record = record
    param_names = {n for n, _ in model.named_parameters()}
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    total = max(case.lr_scheduler.total_steps, steps)
    sched_cfg = ref.LRSchedulerConfig(**{**asdict(case.lr_scheduler), "total_steps": total})
    opt, sched = ref.build_optimizer(model, case.optimizer, sched_cfg)
    tokens, labels = make_batches(case, max(steps, 1), np.random.default_rng(seed))
    model.reset_routing_margin()
    results = []
    for s in range(max(steps, 1)):
        mbs = [(torch.from_numpy(tokens[s, m]), torch.from_numpy(labels[s, m]))
               for m in range(case.micro_batches)]
        results.append(ref.train_step(model, opt, sched, mbs, case.max_norm,
                                      keep_grads=(s == 0), keep_logits=(s == 0)))
    final = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return dict(args=args, param_names=param_names, initial=initial, final=final,
                tokens=tokens, labels=labels, results=results, sched=sched_cfg,
                margin=model.min_routing_margin())


def twin_check(case: Case, steps: int, seed: int) -> str:
    """Runs the case again in float32 (the C side's precision) and compares: the same routing
    everywhere, and how far losses and final parameters drift."""
    picks = {}
    runs = {}
    for dtype in (torch.float64, torch.float32):
        picks[dtype] = []
        runs[dtype] = run_case(case, steps, seed, dtype, picks[dtype])
    same = len(picks[torch.float64]) == len(picks[torch.float32]) and all(
        torch.equal(a, b) for a, b in zip(picks[torch.float64], picks[torch.float32]))
    l64 = np.array([r.loss for r in runs[torch.float64]["results"]])
    l32 = np.array([r.loss for r in runs[torch.float32]["results"]])
    f64, f32 = runs[torch.float64]["final"], runs[torch.float32]["final"]
    worst = max(float((f32[k].double() - f64[k]).norm() / max(float(f64[k].norm()), 1e-300))
                for k in f64)
    return (f"float32 twin: routing {'identical' if same else 'DIFFERS'}, max loss diff "
            f"{np.abs(l64 - l32).max():.2e}, worst final-state relative error {worst:.2e}")


def _save(d: str, name: str, a) -> None:
    np.save(os.path.join(d, name + ".npy"), np.ascontiguousarray(a))


def write_case(out: str, name: str, case: Case, steps: int, run: dict, seed: int) -> None:
    os.makedirs(out, exist_ok=True)
    args, results, sched = run["args"], run["results"], run["sched"]
    opt = case.optimizer
    config = {
        "model": args.to_config(),
        "seq_len": case.seq_len,
        "local_batch_size": case.local_batch_size,
        "micro_batches": case.micro_batches,
        "eos_id": case.eos_id,
        "steps": steps,
        "optimizer": {"lr": opt.lr, "beta1": opt.beta1, "beta2": opt.beta2, "eps": opt.eps,
                      "weight_decay": opt.weight_decay},
        "lr_scheduler": {
            "warmup_steps": sched.warmup_steps,
            "decay_ratio": -1 if sched.decay_ratio is None else sched.decay_ratio,
            "decay_type": sched.decay_type,
            "min_lr_factor": sched.min_lr_factor,
            "total_steps": sched.total_steps,
        },
        "max_norm": case.max_norm,
    }
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")

    def save_state(prefix: str, state: Dict[str, torch.Tensor]) -> None:
        for k, v in state.items():
            kind = "param" if k in run["param_names"] else "buffer"
            _save(out, f"{prefix}{kind}.{k}", v.numpy().astype(np.float64))

    save_state("", run["initial"])
    first = results[0]
    _save(out, "tokens", run["tokens"][0])
    _save(out, "labels", run["labels"][0])
    _save(out, "loss", np.array([first.loss], np.float64))
    _save(out, "logits", first.logits0.numpy())
    for k, g in first.grads.items():
        _save(out, f"grad.{k}", g.numpy())
    for i, c in first.counts.items():
        _save(out, f"counts.layers.{i}", c.numpy().astype(np.int64))
    if steps > 0:
        _save(out, "train_tokens", run["tokens"])
        _save(out, "train_labels", run["labels"])
        _save(out, "train_losses", np.array([r.loss for r in results], np.float64))
        _save(out, "train_grad_norms", np.array([r.grad_norm for r in results], np.float64))
        _save(out, "train_lrs", np.array([r.lr for r in results], np.float64))
        save_state("final.", run["final"])
    info = {
        "case": name, "seed": seed, "min_routing_margin": run["margin"],
        "final_norm_eps": ref.FLOAT32_EPS, "dtype": "float64", "torch": torch.__version__,
    }
    with open(os.path.join(out, "info.json"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Write a whole-model case for the C model test.")
    ap.add_argument("case_dir")
    ap.add_argument("--case", required=True, choices=sorted(CASES))
    ap.add_argument("--steps", type=int, default=0,
                    help="training steps to record (0: only the step-1 check)")
    ap.add_argument("--seed", type=int, default=None, help="first seed to try")
    ap.add_argument("--min-margin", type=float, default=DEFAULT_MIN_MARGIN,
                    help="smallest routing margin accepted (default %(default)g)")
    ap.add_argument("--max-tries", type=int, default=50)
    ap.add_argument("--twin", action="store_true",
                    help="also run the case in float32 and report routing/loss agreement")
    ns, _ = ap.parse_known_args(argv)  # the C test gets the same arguments; ignore its own
    if ns.steps < 0:
        ap.error("--steps must be >= 0")
    torch.set_num_threads(1)
    case = CASES[ns.case]
    first_seed = case.seed if ns.seed is None else ns.seed
    t0 = time.time()
    best = None
    for seed in range(first_seed, first_seed + ns.max_tries):
        run = run_case(case, ns.steps, seed)
        if best is None or run["margin"] > best[1]["margin"]:
            best = (seed, run)
        if run["margin"] >= ns.min_margin:
            break
    seed, run = best
    if run["margin"] < ns.min_margin:
        print(f"warning: no seed in [{first_seed}, {first_seed + ns.max_tries}) reaches a routing "
              f"margin of {ns.min_margin:g}; writing seed {seed} (margin {run['margin']:.3g})",
              file=sys.stderr)
    write_case(ns.case_dir, ns.case, case, ns.steps, run, seed)
    r = run["results"]
    print(f"{ns.case}: seed {seed}, routing margin {run['margin']:.3g}, loss {r[0].loss:.6f}, "
          f"grad norm {r[0].grad_norm:.4f}, steps {ns.steps}"
          + (f", last loss {r[-1].loss:.6f}" if ns.steps > 1 else "")
          + f", {time.time() - t0:.2f} s")
    if ns.twin:
        print(twin_check(case, ns.steps, seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
