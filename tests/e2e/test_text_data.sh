#!/usr/bin/env bash
# Text data end to end: dsv3-tokenize on .jsonl, .json.gz and .txt files (ids checked against
# BOS + encode + EOS per document; malformed lines fatal or skipped; no partial output), then
# training on the text folder (training.dataset = "text", tokenized on the fly) gives exactly
# the losses of training on dsv3-tokenize's file, with block-causal masks at the tokenizer's EOS.
source "$(dirname "$0")/lib.sh"
tokenize=$BIN/dsv3-tokenize
python3 "$DSV3_SOURCE_ROOT/tests/e2e/make_tokenizer.py" "$WORK/tok"
mkdir -p "$WORK/corpus"
python3 - "$WORK/corpus" <<'PY'
import gzip, json, random, sys
rng = random.Random(0)
words = "the cat sat on a mat and then ran into the garden where it found another cat sleeping".split()
doc = lambda: " ".join(rng.choice(words) for _ in range(rng.randint(5, 60))) + rng.choice([".", "!", " 42.", " 猫"])
with open(f"{sys.argv[1]}/a.jsonl", "w") as f:
    for _ in range(150): f.write(json.dumps({"text": doc(), "meta": {"n": 1}}) + "\n")
with gzip.open(f"{sys.argv[1]}/b.json.gz", "wt") as f:
    for _ in range(150): f.write(json.dumps({"text": doc()}) + "\n")
with open(f"{sys.argv[1]}/c.txt", "w") as f:
    for _ in range(80): f.write(doc() + "\n")
PY

# 1. dsv3-tokenize: 380 documents, each BOS ... EOS, the file under its final name only.
"$tokenize" --tokenizer "$WORK/tok" --output "$WORK/all.bin" "$WORK/corpus" >"$WORK/tok.out" 2>&1 ||
    { cat "$WORK/tok.out"; fail "dsv3-tokenize failed"; }
expect_in "$WORK/tok.out" "380 documents"
expect_in "$WORK/tok.out" "model.vocab_size >= 270"
python3 - "$WORK/all.bin" <<'PY' || fail "the token file is not BOS + ids + EOS per document"
import struct, sys
data = open(sys.argv[1], "rb").read()
ids = struct.unpack(f"<{len(data) // 4}I", data)
assert len(data) % 4 == 0 and ids[0] == 268 and ids[-1] == 269, ids[:3]
assert ids.count(268) == ids.count(269) == 380, (ids.count(268), ids.count(269))
assert max(ids) < 270
PY
[ -z "$(ls "$WORK" | grep partial)" ] || fail "a partial file was left behind"

# 2. Malformed lines: fatal, naming file:line, and nothing written; or skipped on request.
mkdir -p "$WORK/bad"
printf '{"text": "fine"}\n{"text": 3}\n{"text": "also fine"}\nnot json\n' >"$WORK/bad/bad.jsonl"
run_expect_fail "$WORK/bad.out" "$tokenize" --tokenizer "$WORK/tok" --output "$WORK/bad.bin" "$WORK/bad"
expect_in "$WORK/bad.out" "bad.jsonl:2: field \"text\" is not a string"
[ ! -e "$WORK/bad.bin" ] || fail "a failed run left its output"
[ -z "$(ls "$WORK" | grep partial)" ] || fail "a failed run left a partial file"
"$tokenize" --tokenizer "$WORK/tok" --output "$WORK/bad.bin" --skip-bad-lines "$WORK/bad/bad.jsonl" \
    >"$WORK/skip.out" 2>&1 || { cat "$WORK/skip.out"; fail "--skip-bad-lines failed"; }
expect_in "$WORK/skip.out" "bad.jsonl:4: not a JSON value"
expect_in "$WORK/skip.out" "2 documents"
expect_in "$WORK/skip.out" "2 malformed lines skipped"
# Strict JSON: what json-c would take silently is a malformed line, with the reason.
printf '{"text": "fine"}\n{"text": "a", }\n' >"$WORK/lenient.jsonl"
run_expect_fail "$WORK/lenient.out" "$tokenize" --tokenizer "$WORK/tok" --output "$WORK/x.bin" "$WORK/lenient.jsonl"
expect_in "$WORK/lenient.out" "lenient.jsonl:2: not a JSON value: a trailing comma at column 13"
# Replacements: lone surrogate escapes and invalid UTF-8 are counted, the first named file:line.
printf '{"text": "ok"}\n{"text": "a\\ud800 \\udc00"}\n\xff\xfe x\n' >"$WORK/replaced.jsonl"
printf '{"text": "ok"}\n{"text": "b\xff"}\n' >"$WORK/replaced2.jsonl"
"$tokenize" --tokenizer "$WORK/tok" --output "$WORK/r.bin" --skip-bad-lines "$WORK/replaced2.jsonl" \
    "$WORK/replaced.jsonl" >"$WORK/replaced.out" 2>&1 || { cat "$WORK/replaced.out"; fail "replacements run failed"; }
expect_in "$WORK/replaced.out" "3 replaced by U+FFFD (invalid UTF-8, lone surrogate escapes), the first at $WORK/replaced2.jsonl:2"
run_expect_fail "$WORK/notok.out" "$tokenize" --tokenizer "$WORK/none" --output "$WORK/x.bin" "$WORK/corpus"
expect_in "$WORK/notok.out" "download_hf_assets.sh"
run_expect_fail "$WORK/fmt.out" "$tokenize" --tokenizer "$WORK/tok" --output "$WORK/x.bin" "$WORK/tok.out"
expect_in "$WORK/fmt.out" "not a text file of a known format"

# 3. Training on the text folder equals training on the token file (same windows), both with
# block-causal masks at the tokenizer's EOS.
common=(--job.config_file "$CONF/debug_model.toml" --training.steps 3 --training.seq_len 64
    --training.local_batch_size 4 --lr_scheduler.warmup_steps 2 --metrics.log_freq 1
    --model.attn_mask_type block_causal --model.hf_assets_path "$WORK/tok")
"${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" "${common[@]}" --training.dataset text \
    --training.dataset_path "$WORK/corpus" --job.dump_folder "$WORK/text" : -n 1 "$BIN/dsv3-stage" \
    >"$WORK/text.out" 2>&1 || { cat "$WORK/text.out"; fail "training on text failed"; }
expect_in "$WORK/text.out" "3 file(s)"
expect_in "$WORK/text.out" "EOS 269"
"${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" "${common[@]}" --training.dataset tokens \
    --training.dataset_path "$WORK/all.bin" --job.dump_folder "$WORK/tokens" : -n 1 "$BIN/dsv3-stage" \
    >"$WORK/tokens.out" 2>&1 || { cat "$WORK/tokens.out"; fail "training on the token file failed"; }
expect_in "$WORK/tokens.out" "EOS id 269 from the tokenizer"
python3 - "$WORK/text/metrics.jsonl" "$WORK/tokens/metrics.jsonl" <<'PY' || fail "text and token-file losses differ"
import json, sys
a = [json.loads(l)["loss"] for l in open(sys.argv[1])]
b = [json.loads(l)["loss"] for l in open(sys.argv[2])]
assert len(a) == len(b) == 3 and a == b, (a, b)
print("text data vs token file: equal losses", a)
PY

# 4. A tokenizer with more ids than model.vocab_size stops the run before any step.
run_expect_fail "$WORK/vocab.out" "${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" "${common[@]}" \
    --training.dataset text --training.dataset_path "$WORK/corpus" --model.vocab_size 100 \
    --job.dump_folder "$WORK/v" : -n 1 "$BIN/dsv3-stage"
expect_in "$WORK/vocab.out" "set --model.vocab_size to at least 270"
echo "text_data: ok"
