#!/usr/bin/env bash
# Downloads a Hugging Face Hub repository's assets, as torchtitan's download_hf_assets.py:
#
#   run/download_hf_assets.sh --repo_id deepseek-ai/DeepSeek-V3 --assets tokenizer [config] [index] [safetensors]
#                             [--additional_patterns PATTERN...] [--all] [--local_dir DIR] [--hf_token TOKEN]
#
# Files land in DIR/<repo name>/ (DIR defaults to assets/hf, so the tokenizer of
# deepseek-ai/DeepSeek-V3 lands where model.hf_assets_path looks by default). Asset kinds:
#   tokenizer    tokenizer.json tokenizer_config.json tokenizer.model vocab.txt vocab.json merges.txt
#                special_tokens_map.json
#   config       config.json generation_config.json
#   index        *model.safetensors.index.json
#   safetensors  *.safetensors and *model.safetensors.index.json
# A file is fetched into <file>.incomplete and renamed when whole; a failed or interrupted run
# keeps the .incomplete file and the next run resumes it (HTTP Range). Files already present are
# skipped. HF_ENDPOINT (default https://huggingface.co) and HF_TOKEN are honoured; --hf_token
# overrides HF_TOKEN. Needs curl.
set -euo pipefail

die() { printf 'download_hf_assets: error: %s\n' "$*" >&2; exit 1; }
log() { printf 'download_hf_assets: %s\n' "$*"; }

usage() {
    sed -n '2,18s/^# \{0,1\}//p' "$0"
}

repo_id="" local_dir="assets/hf" token=${HF_TOKEN:-} all=0
assets=() patterns=()
mode=""
while [ $# -gt 0 ]; do
    case $1 in
        -h | --help) usage; exit 0 ;;
        --repo_id) [ $# -ge 2 ] || die "--repo_id needs a value"; repo_id=$2; shift 2; mode="" ;;
        --repo_id=*) repo_id=${1#*=}; shift; mode="" ;;
        --local_dir) [ $# -ge 2 ] || die "--local_dir needs a value"; local_dir=$2; shift 2; mode="" ;;
        --local_dir=*) local_dir=${1#*=}; shift; mode="" ;;
        --hf_token) [ $# -ge 2 ] || die "--hf_token needs a value"; token=$2; shift 2; mode="" ;;
        --hf_token=*) token=${1#*=}; shift; mode="" ;;
        --all) all=1; shift; mode="" ;;
        --assets) mode=assets; shift ;;
        --additional_patterns) mode=patterns; shift ;;
        -*) die "unknown option '$1' (see --help)" ;;
        *)
            case $mode in
                assets) assets+=("$1") ;;
                patterns) patterns+=("$1") ;;
                *) die "unexpected argument '$1' (see --help)" ;;
            esac
            shift ;;
    esac
done
[ -n "$repo_id" ] || die "--repo_id is required, e.g. --repo_id deepseek-ai/DeepSeek-V3"
case $repo_id in */*) ;; *) die "--repo_id '$repo_id' must be 'organization/model-name'" ;; esac
[ $all -eq 1 ] || [ ${#assets[@]} -gt 0 ] || [ ${#patterns[@]} -gt 0 ] ||
    die "say what to download: --assets tokenizer [config] [index] [safetensors], --additional_patterns or --all"
command -v curl >/dev/null 2>&1 || die "curl is needed: install it (apt-get install curl)"

for a in "${assets[@]}"; do
    case $a in
        tokenizer) patterns+=(tokenizer.json tokenizer_config.json tokenizer.model vocab.txt vocab.json merges.txt
                              special_tokens_map.json) ;;
        config) patterns+=(config.json generation_config.json) ;;
        index) patterns+=('*model.safetensors.index.json') ;;
        safetensors) patterns+=('*.safetensors' '*model.safetensors.index.json') ;;
        *) die "unknown asset '$a': use tokenizer, config, index, safetensors (or --additional_patterns / --all)" ;;
    esac
done

endpoint=${HF_ENDPOINT:-https://huggingface.co}
endpoint=${endpoint%/}
dest_dir=$local_dir/${repo_id##*/}
auth=()
[ -z "$token" ] || auth=(-H "Authorization: Bearer $token")
progress=(-sS)
[ -t 2 ] && progress=(--progress-bar)

# explain CURL_EXIT HTTP_CODE URL: one clear sentence for a failed request.
explain() {
    local rc=$1 code=$2 url=$3
    case $code in
        401 | 403) die "access denied (HTTP $code) for $url: the repository is gated or private. Pass a token with
access to it (--hf_token or HF_TOKEN), after accepting the model's terms on its page." ;;
        404) die "not found (HTTP 404): $url. Check --repo_id '$repo_id' (organization/model-name) and that the
file exists in the repository." ;;
        000 | "" | 2??) die "network error (curl exit $rc) reaching $url: check the connection and HF_ENDPOINT
('$endpoint')${4:+; the partial file $4 is kept: run the same command again to resume}" ;;
        *) die "HTTP $code (curl exit $rc) for $url${4:+; the partial file $4 is kept: run again to resume}" ;;
    esac
}

# The repository's file list (the Hub's model API: {"siblings": [{"rfilename": ...}]}).
list_url="$endpoint/api/models/$repo_id"
log "listing $repo_id at $endpoint"
listing=$(mktemp)
trap 'rm -f "$listing"' EXIT
rc=0
code=$(curl -fsS --retry 2 --connect-timeout 20 -o "$listing" -w '%{http_code}' "${auth[@]}" "$list_url") || rc=$?
[ "$rc" -eq 0 ] && [ "$code" = 200 ] || explain "$rc" "$code" "$list_url"
mapfile -t available < <(grep -oE '"rfilename"[[:space:]]*:[[:space:]]*"[^"]*"' "$listing" |
    sed -E 's/.*:[[:space:]]*"([^"]*)"$/\1/')
[ ${#available[@]} -gt 0 ] || die "$repo_id lists no files (is $list_url a Hub API endpoint?)"

wanted=()
for f in "${available[@]}"; do
    if [ $all -eq 1 ]; then wanted+=("$f"); continue; fi
    base=${f##*/}
    for p in "${patterns[@]}"; do
        # shellcheck disable=SC2053 # the pattern is a glob on purpose
        if [[ $base == $p ]]; then wanted+=("$f"); break; fi
    done
done
[ ${#wanted[@]} -gt 0 ] || die "no file of $repo_id matches (${patterns[*]}); it has: ${available[*]:0:10}"
log "${#wanted[@]} file(s) to $dest_dir: ${wanted[*]}"

for f in "${wanted[@]}"; do
    dest=$dest_dir/$f
    if [ -f "$dest" ]; then
        log "$f: already there, skipped"
        continue
    fi
    mkdir -p "$(dirname "$dest")"
    part=$dest.incomplete
    url="$endpoint/$repo_id/resolve/main/$f"
    [ -s "$part" ] && log "$f: resuming after $(stat -c %s "$part") bytes" || log "$f"
    rc=0
    code=$(curl -fL "${progress[@]}" --connect-timeout 20 -C - -o "$part" -w '%{http_code}' "${auth[@]}" "$url") ||
        rc=$?
    # 416: the partial file was already whole (a run ended between the transfer and the rename).
    if [ "$rc" -eq 0 ] && { [ "$code" = 200 ] || [ "$code" = 206 ]; } || [ "$code" = 416 ]; then
        mv "$part" "$dest"
    else
        [ -s "$part" ] || rm -f "$part"
        explain "$rc" "$code" "$url" "$([ -s "$part" ] && echo "$part")"
    fi
done
log "done: $dest_dir"
