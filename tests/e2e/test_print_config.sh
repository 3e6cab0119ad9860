#!/usr/bin/env bash
# --job.print_config prints the effective config as TOML that loads back to the same config:
# printing the printed config again gives the same text, overrides included.
source "$(dirname "$0")/lib.sh"
extract() { sed -n '/^# effective config$/,/^# end of effective config$/p' "$1"; }
# Start-up only (--job.dry_run): the configs' models are far too big to train here.
run() { "${MPIRUN[@]}" -n 1 "$BIN/dsv3-coordinator" "$@" --job.dry_run : -n 1 "$BIN/dsv3-stage"; }
for conf in debug_model deepseek_v3_16b deepseek_v3_671b; do
    # One stage rank and no expert servers, whatever the file asks for.
    run --job.config_file "$CONF/$conf.toml" --parallelism.expert_parallel_degree 1 \
        --job.print_config --training.steps=7 \
        --model.dim 512 --job.description 'quote " and \ back' >"$WORK/first" 2>&1 ||
        { cat "$WORK/first"; fail "$conf: first run failed"; }
    extract "$WORK/first" >"$WORK/a.toml"
    expect_in "$WORK/a.toml" "steps = 7"
    expect_in "$WORK/a.toml" "dim = 512"
    run --job.config_file "$WORK/a.toml" --job.print_config >"$WORK/second" 2>&1 ||
        { cat "$WORK/second"; fail "$conf: the printed config does not load"; }
    extract "$WORK/second" >"$WORK/b.toml"
    # Only job.config_file differs: it names the file that was loaded.
    diff <(grep -v '^config_file = ' "$WORK/a.toml") <(grep -v '^config_file = ' "$WORK/b.toml") ||
        fail "$conf: the printed config did not load back to the same config"
done
echo "print config: ok"
