"""Renders a run's metrics.jsonl to PNG files (run/plot.sh is the entry point).

    plot_metrics.py METRICS_JSONL OUT_FOLDER

Writes loss.png (training and validation loss), lr.png, grad_norm.png, tps.png,
expert_imbalance.png (max/mean tokens per expert of every MoE layer and the worst) and
overview.png (all of them), and prints each path. metrics.jsonl is appended to by every run
in the same dump folder: only the last run (from the last restart of the step count) is drawn.
"""
import json
import math
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402

LAYER_KEY = re.compile(r"^expert_load/layer_(\d+)/max_over_mean$")


def last_run(path):
    records = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: not a JSON object ({e})")
            if records and record.get("step", 0) <= records[-1].get("step", 0):
                records = []  # a new run started in the same folder
            records.append(record)
    if not records:
        sys.exit(f"{path} holds no logged steps")
    return records


def series(records, key):
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    points = [(s, v) for s, v in points if math.isfinite(v)]
    return [s for s, _ in points], [v for _, v in points]


def draw_loss(ax, records):
    ax.plot(*series(records, "loss"), label="training", color="tab:blue")
    steps, values = series(records, "validation_loss")
    if steps:
        ax.plot(steps, values, "o-", label="validation", color="tab:orange")
    ax.set_title("loss (nats per token)")
    ax.legend()


def draw_one(key, title, color, log=False):
    def draw(ax, records):
        steps, values = series(records, key)
        ax.plot(steps, values, color=color)
        if log and values and min(values) > 0:
            ax.set_yscale("log")
        ax.set_title(title)

    return draw


def draw_imbalance(ax, records):
    layers = sorted({int(m.group(1)) for r in records for k in r for m in [LAYER_KEY.match(k)] if m})
    for layer in layers:
        ax.plot(*series(records, f"expert_load/layer_{layer}/max_over_mean"), linewidth=0.8,
                alpha=0.7, label=f"layer {layer}")
    steps, values = series(records, "expert_imbalance")
    if steps:
        ax.plot(steps, values, color="black", linewidth=1.5, label="worst")
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=0.8)
    ax.set_title("expert imbalance (max / mean tokens per expert)")
    if layers and len(layers) <= 12:
        ax.legend(fontsize="small", ncol=2)


PLOTS = [
    ("loss", draw_loss),
    ("lr", draw_one("lr", "learning rate", "tab:green")),
    ("grad_norm", draw_one("grad_norm", "gradient norm (before clipping)", "tab:red", log=True)),
    ("tps", draw_one("tps", "tokens per second per stage rank", "tab:purple")),
    ("expert_imbalance", draw_imbalance),
]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    records = last_run(sys.argv[1])
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    for name, draw in PLOTS:
        fig, ax = plt.subplots(figsize=(7, 4))
        draw(ax, records)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = os.path.join(out, f"{name}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        print(path)
    fig, axes = plt.subplots(3, 2, figsize=(13, 11))
    for ax, (_, draw) in zip(axes.flat, PLOTS):
        draw(ax, records)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes.flat[-1].axis("off")
    fig.suptitle(f"{sys.argv[1]} (steps {records[0]['step']}–{records[-1]['step']})")
    fig.tight_layout()
    path = os.path.join(out, "overview.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(path)


if __name__ == "__main__":
    main()
