#!/usr/bin/env bash
# run/download_hf_assets.sh against a stand-in Hub on loopback (hub_server.py): asset kinds land
# in <local_dir>/<repo name>/ byte for byte, a dropped connection leaves a partial file that the
# next run resumes with a Range request, and 401, 404 and network failures stop with a clear
# message.
source "$(dirname "$0")/lib.sh"
download=$DSV3_SOURCE_ROOT/run/download_hf_assets.sh
hub=$WORK/hub
repo=$hub/deepseek-ai/Tiny-V3
mkdir -p "$repo" "$hub/org/Gated"
echo '{"model": {"type": "BPE"}}' >"$repo/tokenizer.json"
echo '{"eos_token": "<eos>"}' >"$repo/tokenizer_config.json"
echo '{"hidden_size": 8}' >"$repo/config.json"
echo '{"weight_map": {}}' >"$repo/model.safetensors.index.json"
echo 'readme' >"$repo/README.md"
head -c 300000 /dev/urandom >"$repo/model-00001-of-00002.safetensors"
head -c 200000 /dev/urandom >"$repo/model-00002-of-00002.safetensors"
touch "$repo/model-00002-of-00002.safetensors.cut" # its first download breaks off halfway
echo '{"x": 1}' >"$hub/org/Gated/tokenizer.json"
echo 'secret' >"$hub/org/Gated/.token"

python3 "$DSV3_SOURCE_ROOT/tests/e2e/hub_server.py" "$hub" "$WORK/port" 120 2>"$WORK/hub.log" &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do [ -s "$WORK/port" ] && break; sleep 0.1; done
[ -s "$WORK/port" ] || fail "the stand-in hub did not start"
export HF_ENDPOINT="http://127.0.0.1:$(cat "$WORK/port")"
unset HF_TOKEN
out=$WORK/assets
got=$out/Tiny-V3

# Tokenizer only.
"$download" --repo_id deepseek-ai/Tiny-V3 --assets tokenizer --local_dir "$out" >"$WORK/a.out" 2>&1 ||
    { cat "$WORK/a.out"; fail "tokenizer download failed"; }
cmp "$repo/tokenizer.json" "$got/tokenizer.json" && cmp "$repo/tokenizer_config.json" "$got/tokenizer_config.json" ||
    fail "tokenizer files differ"
[ ! -e "$got/config.json" ] && [ ! -e "$got/README.md" ] || fail "downloaded more than the tokenizer"

# Config and index; the tokenizer is already there.
"$download" --repo_id deepseek-ai/Tiny-V3 --assets tokenizer config index --local_dir "$out" >"$WORK/b.out" 2>&1 ||
    { cat "$WORK/b.out"; fail "config/index download failed"; }
expect_in "$WORK/b.out" "tokenizer.json: already there, skipped"
cmp "$repo/config.json" "$got/config.json" && cmp "$repo/model.safetensors.index.json" "$got/model.safetensors.index.json" ||
    fail "config/index files differ"

# Safetensors: the second shard's transfer breaks off; the rerun resumes it with a Range request.
run_expect_fail "$WORK/c.out" "$download" --repo_id deepseek-ai/Tiny-V3 --assets safetensors --local_dir "$out"
expect_in "$WORK/c.out" "network error"
expect_in "$WORK/c.out" "run the same command again to resume"
[ -s "$got/model-00002-of-00002.safetensors.incomplete" ] || fail "no partial file kept"
[ ! -e "$got/model-00002-of-00002.safetensors" ] || fail "a partial file appeared under its final name"
"$download" --repo_id deepseek-ai/Tiny-V3 --assets safetensors --local_dir "$out" >"$WORK/d.out" 2>&1 ||
    { cat "$WORK/d.out"; fail "resumed download failed"; }
expect_in "$WORK/d.out" "resuming after 100000 bytes"
expect_in "$WORK/hub.log" "bytes=100000-"
cmp "$repo/model-00001-of-00002.safetensors" "$got/model-00001-of-00002.safetensors" &&
    cmp "$repo/model-00002-of-00002.safetensors" "$got/model-00002-of-00002.safetensors" ||
    fail "safetensors shards differ after resuming"
[ ! -e "$got/model-00002-of-00002.safetensors.incomplete" ] || fail "the partial file remained"

# 404, 401 (and the token through HF_TOKEN or --hf_token), network failure, bad usage.
run_expect_fail "$WORK/e.out" "$download" --repo_id deepseek-ai/Missing --assets tokenizer --local_dir "$out"
expect_in "$WORK/e.out" "not found (HTTP 404)"
run_expect_fail "$WORK/f.out" "$download" --repo_id org/Gated --assets tokenizer --local_dir "$out"
expect_in "$WORK/f.out" "access denied (HTTP 401)"
expect_in "$WORK/f.out" "--hf_token or HF_TOKEN"
HF_TOKEN=secret "$download" --repo_id org/Gated --assets tokenizer --local_dir "$out" >"$WORK/g.out" 2>&1 ||
    { cat "$WORK/g.out"; fail "HF_TOKEN was not used"; }
rm -rf "$out/Gated"
"$download" --repo_id org/Gated --assets tokenizer --local_dir "$out" --hf_token secret >"$WORK/h.out" 2>&1 ||
    { cat "$WORK/h.out"; fail "--hf_token was not used"; }
cmp "$hub/org/Gated/tokenizer.json" "$out/Gated/tokenizer.json" || fail "gated file differs"
HF_ENDPOINT=http://127.0.0.1:9 run_expect_fail "$WORK/i.out" "$download" --repo_id deepseek-ai/Tiny-V3 \
    --assets tokenizer --local_dir "$WORK/elsewhere"
expect_in "$WORK/i.out" "network error"
run_expect_fail "$WORK/j.out" "$download" --repo_id Tiny --assets tokenizer
expect_in "$WORK/j.out" "must be 'organization/model-name'"
run_expect_fail "$WORK/k.out" "$download" --repo_id a/b --assets weights
expect_in "$WORK/k.out" "unknown asset 'weights'"
echo "download: ok"
