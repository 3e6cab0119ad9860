#!/usr/bin/env bash
# Converts a Hugging Face DeepSeek-V3 checkpoint into a dsv3 model checkpoint:
#
#   ./run/convert_from_hf.sh HF_DIR OUT_DIR --model_flavor F [--model.KEY V ...]
#
# HF_DIR holds config.json and model.safetensors or shards with model.safetensors.index.json
# (F32, BF16, or F8_E4M3 with weight_scale_inv 128x128 block scales, dequantized). OUT_DIR is
# a new folder that --checkpoint.initial_load_path loads. --checkpoint.export_dtype sets the
# stored type (default float32). Builds dsv3 first if needed.
set -euo pipefail
source "$(dirname "$0")/common.sh"
[ $# -ge 2 ] || dsv3_die "usage: $0 HF_DIR OUT_DIR --model_flavor F [--model.KEY V ...]"
dsv3_ensure_packages "${DSV3_RUN_PACKAGES[@]}"
dsv3_ensure_build "$DSV3_BUILD_DIR" -Dcuda=auto
exec "$DSV3_BUILD_DIR/roles/dsv3-convert" from-hf "$@"
