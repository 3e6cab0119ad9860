#!/usr/bin/env bash
# Exports a dsv3 checkpoint folder (a step-N, or a converted one) as Hugging Face safetensors:
#
#   ./run/convert_to_hf.sh CKPT_DIR HF_DIR [--checkpoint.export_dtype bfloat16] [--max_shard_bytes N]
#
# HF_DIR gets model-0000k-of-0000n.safetensors shards (5 GB by default), their
# model.safetensors.index.json and config.json. The model comes from CKPT_DIR/config.toml;
# export_dtype defaults to the one in it. Builds dsv3 first if needed.
set -euo pipefail
source "$(dirname "$0")/common.sh"
[ $# -ge 2 ] || dsv3_die "usage: $0 CKPT_DIR HF_DIR [--checkpoint.export_dtype D] [--max_shard_bytes N]"
dsv3_ensure_packages "${DSV3_RUN_PACKAGES[@]}"
dsv3_ensure_build "$DSV3_BUILD_DIR" -Dcuda=auto
exec "$DSV3_BUILD_DIR/roles/dsv3-convert" to-hf "$@"
