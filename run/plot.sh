#!/usr/bin/env bash
# Renders a training run's metrics to PNG: loss and validation loss, learning rate, gradient
# norm, tokens per second and expert imbalance, from <dump_folder>/metrics.jsonl.
#
#   ./run/plot.sh DUMP_FOLDER [OUT_FOLDER]     (default OUT_FOLDER: DUMP_FOLDER/plots)
#
# Installs Debian's matplotlib if it is missing. Only the last run appended to metrics.jsonl
# is drawn.
set -euo pipefail
source "$(dirname "$0")/common.sh"

[ $# -ge 1 ] && [ $# -le 2 ] || dsv3_die "usage: $0 DUMP_FOLDER [OUT_FOLDER]"
dump=$1
out=${2:-$dump/plots}
[ -f "$dump/metrics.jsonl" ] || dsv3_die "$dump/metrics.jsonl does not exist: pass a run's job.dump_folder"
dsv3_ensure_packages "${DSV3_PLOT_PACKAGES[@]}"
# Debian's python, which sees Debian's matplotlib (a venv may not).
/usr/bin/python3 "$DSV3_ROOT/run/plot_metrics.py" "$dump/metrics.jsonl" "$out"
