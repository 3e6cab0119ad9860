"""Training-step throughput of torchtitan's own DeepSeek-V3 model on the CPU, for comparison
with dsv3 (run/bench.sh --torchtitan runs both, alternating).

The model is torchtitan's (`torchtitan.models.deepseek_v3`, from the checkout named by --source,
at the commit the design pins) with its `debugmodel` flavor, fp32, on the CPU: SDPA attention and
the for-loop experts torchtitan chooses on machines without grouped GEMMs (use_grouped_mm =
False, as its update_from_config does there). A step is torchtitan's train_step without the
distributed parts: forward, cross-entropy (sum over tokens / tokens), backward, gradient
clipping at 1.0, the aux-loss-free expert-bias update (torchtitan's optimizer hook, coefficient
1e-3), AdamW (lr 8e-4, betas 0.9 / 0.95, eps 1e-8, weight decay 0.1), as bench_step and
bench_torch.py do.

One change to torchtitan: its router counts tokens per expert with torch.histc on the int64
expert indices, which the CPU kernel refuses ("histogram_cpu" not implemented for 'Long'); the
indices are cast to float for that call and the counts back to int64, the dtype the GPU kernel
returns (exact: they are small integers).

    bench_torchtitan.py --source DIR [--seq_len 512] [--batch 2] [--steps 3] [--warmup 2]
                        [--threads N] [--compile] [--dtype float32|bfloat16]

--compile wraps each transformer block in torch.compile, as torchtitan's apply_compile does.
--dtype bfloat16 runs forward and loss under torch.autocast(bfloat16), torchtitan's mixed
precision without FSDP (maybe_enable_amp): bf16 matmuls and attention, fp32 weights, gradients
and AdamW state.
Prints one line: `torchtitan tokens_per_s=<x>` (timed steps only).
"""

import argparse
import sys
import time


def patch_histc(torch):
    original = torch.histc

    def histc(values, *args, **kwargs):
        if values.is_floating_point():
            return original(values, *args, **kwargs)
        return original(values.float(), *args, **kwargs).to(values.dtype)

    torch.histc = histc


def update_expert_bias(model, coeff):
    """torchtitan's _update_expert_bias on one rank: move each MoE layer's bias towards the
    experts that got fewer tokens than the mean, then clear the counts."""
    import torch

    with torch.no_grad():
        for block in model.layers.values():
            if not block.moe_enabled:
                continue
            moe = block.moe
            counts = moe.tokens_per_expert
            delta = coeff * torch.sign(counts.float().mean() - counts.float())
            moe.expert_bias.add_(delta - delta.mean())
            counts.zero_()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="torchtitan DeepSeek-V3 debugmodel step throughput")
    ap.add_argument("--source", required=True, help="a torchtitan checkout")
    ap.add_argument("--seq_len", type=int, default=512)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--compile", action="store_true", help="torch.compile each block")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="bfloat16: forward and loss under torch.autocast")
    ap.add_argument("--seed", type=int, default=0)
    ns = ap.parse_args(argv)
    if ns.seq_len < 1 or ns.batch < 1 or ns.steps < 1 or ns.warmup < 0:
        ap.error("--seq_len, --batch, --steps must be >= 1 and --warmup >= 0")

    sys.path.insert(0, ns.source)
    import torch
    import torch.nn.functional as F
    from torchtitan.models.deepseek_v3 import DeepSeekV3Model, deepseekv3_args

    if ns.threads > 0:
        torch.set_num_threads(ns.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(ns.seed)
    patch_histc(torch)

    args = deepseekv3_args["debugmodel"]
    args.max_seq_len = ns.seq_len
    args.moe_args.use_grouped_mm = False
    args.moe_impl = "standard"  # update_from_config's, from expert_parallel_comm_backend's default
    model = DeepSeekV3Model(args)
    with torch.no_grad():  # as torchtitan's trainer initialises
        model.init_weights(buffer_device=torch.device("cpu"))
    model.train()
    if ns.compile:
        for name, block in model.layers.named_children():
            model.layers.register_module(name, torch.compile(block))
    opt = torch.optim.AdamW(model.parameters(), lr=8e-4, betas=(0.9, 0.95), eps=1e-8,
                            weight_decay=0.1, foreach=True)
    gen = torch.Generator().manual_seed(ns.seed)

    elapsed = 0.0
    for s in range(ns.warmup + ns.steps):
        win = torch.randint(0, args.vocab_size, (ns.batch, ns.seq_len + 1), generator=gen)
        inputs, labels = win[:, :-1].contiguous(), win[:, 1:].contiguous()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=ns.dtype == "bfloat16"):
            logits = model(inputs)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(0, 1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        update_expert_bias(model, args.moe_args.load_balance_coeff)
        opt.step()
        dt = time.perf_counter() - t0
        if s >= ns.warmup:
            elapsed += dt
    print(f"torchtitan tokens_per_s={ns.batch * ns.seq_len * ns.steps / elapsed:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
