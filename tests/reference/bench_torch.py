#!/usr/bin/python3
"""Training-step throughput of the PyTorch model on the CPU, for comparison with dsv3.

The model is dsv3_reference.py's, in float32 and written the way torchtitan runs it on CPU:
for-loop experts, attention through F.scaled_dot_product_attention when the installed torch has
it (with a `scale` argument), else matmul + softmax. The architecture is torchtitan's
`debugmodel` flavor. A step is what torchtitan's train_step does: forward, cross-entropy,
backward, gradient clipping, expert-bias update, AdamW, LR scheduler.

    bench_torch.py [--seq_len 256] [--batch 2] [--steps 3] [--warmup 1] [--threads N]

Prints one line: `torch tokens_per_s=<x>` (timed steps only; warm-up steps are not timed).
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dsv3_reference as ref  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="PyTorch DeepSeek-V3 debugmodel step throughput")
    ap.add_argument("--seq_len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="timed steps")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verbose", action="store_true", help="print each step's loss and time")
    ns = ap.parse_args(argv)
    if ns.seq_len < 1 or ns.batch < 1 or ns.steps < 1 or ns.warmup < 0:
        ap.error("--seq_len, --batch, --steps must be >= 1 and --warmup >= 0")
    if ns.threads > 0:
        torch.set_num_threads(ns.threads)

    args = ref.debugmodel_args(ns.seq_len)
    model = ref.DeepSeekV3(args, torch.float32, attention="sdpa")
    model.init_weights(ns.seed)
    opt, sched = ref.build_optimizer(
        model, ref.OptimizerConfig(lr=8e-4, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1),
        ref.LRSchedulerConfig(warmup_steps=2, decay_ratio=None, decay_type="linear",
                              min_lr_factor=0.0, total_steps=ns.warmup + ns.steps))
    gen = torch.Generator().manual_seed(ns.seed)

    def batch():
        win = torch.randint(0, args.vocab_size, (ns.batch, ns.seq_len + 1), generator=gen)
        return [(win[:, :-1].contiguous(), win[:, 1:].contiguous())]

    elapsed = 0.0
    for s in range(ns.warmup + ns.steps):
        mbs = batch()
        t0 = time.perf_counter()
        r = ref.train_step(model, opt, sched, mbs, max_norm=1.0)
        dt = time.perf_counter() - t0
        if s >= ns.warmup:
            elapsed += dt
        if ns.verbose:
            print(f"step {s + 1}: loss {r.loss:.4f} grad norm {r.grad_norm:.3f} {dt:.3f} s "
                  f"(attention {model.attention_impl}, threads {torch.get_num_threads()})",
                  file=sys.stderr)
    print(f"torch tokens_per_s={ns.batch * ns.seq_len * ns.steps / elapsed:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
