#!/usr/bin/env bash
# A long fuzzing run of one target, outside CI, resumable: its corpus, crashes, logs and the
# budget spent so far live under a persistent directory, and the run goes in chunks, each
# recorded when it ends; run the same command again after an interruption and it goes on
# with what is left (a finished budget just reports).
# Usage: scripts/fuzz-long.sh TARGET [HOURS | --runs N]
#   Default budget: 10 million executions for the parser targets (ring, blkif, netif,
#   netifctrl, diskspec, vifspec); 2 CPU-hours for the queue and server targets (blkback,
#   netback, blkfront, netfront, nbd, hypervisor, and xenstore: the whole server, a few
#   hundred executions a second, so 10 million would be ten hours).
#   XENSPLIT_FUZZ_HOME: the persistent directory (default ~/.cache/xensplit-fuzz); the
#   target's part is XENSPLIT_FUZZ_HOME/TARGET/{corpus,crashes,logs,spent}.
#   XENSPLIT_FUZZ_CHUNK: seconds per time chunk (600) or executions per runs chunk (1000000).
# Crashes end the run with the reproducer's path; fix the bug, add the input as a regression
# test (Tests/*: the target's replay), then run again to go on.
set -euo pipefail
cd "$(dirname "$0")/.."
t="${1:?usage: scripts/fuzz-long.sh TARGET [HOURS | --runs N]}"
shift
case "$t" in
  ring | blkif | netif | netifctrl | diskspec | vifspec) unit=runs budget=10000000 ;;
  xenstore | blkback | netback | blkfront | netfront | nbd | hypervisor) unit=seconds budget=$((2 * 3600)) ;;
  *) echo "fuzz-long: unknown target $t" >&2; exit 2 ;;
esac
if [ "${1:-}" = "--runs" ]; then
  unit=runs budget="${2:?--runs needs a count}"
elif [ -n "${1:-}" ]; then
  unit=seconds budget=$(awk -v h="$1" 'BEGIN { printf "%d", h * 3600 }')
fi
home="${XENSPLIT_FUZZ_HOME:-$HOME/.cache/xensplit-fuzz}/$t"
mkdir -p "$home/corpus" "$home/crashes" "$home/logs"
state="$home/spent-$unit-$budget"
spent=$(cat "$state" 2>/dev/null || echo 0)
if [ "$unit" = runs ]; then chunk=${XENSPLIT_FUZZ_CHUNK:-1000000}; else chunk=${XENSPLIT_FUZZ_CHUNK:-600}; fi

# The build (and its checks) once, through fuzz.sh; then the binary directly.
scripts/fuzz.sh --build
bin=.build-fuzz/debug/xensplit-fuzz
export SWIFT_BACKTRACE=enable=no
mkdir -p "Fuzz/corpus/$t"
echo "fuzz-long: $t: $spent of $budget $unit done; corpus $home/corpus ($(ls "$home/corpus" | wc -l) inputs)"
while [ "$spent" -lt "$budget" ]; do
  step=$((budget - spent < chunk ? budget - spent : chunk))
  if [ "$unit" = runs ]; then limit=(-runs="$step"); else limit=(-max_total_time="$step"); fi
  log="$home/logs/$(date -u +%Y%m%dT%H%M%SZ).log"
  start=$SECONDS
  # -seed=0: a new random seed each chunk, so chunks do not repeat each other.
  if ! XENSPLIT_FUZZ_TARGET=$t "$bin" "${limit[@]}" -seed=0 -print_final_stats=1 -max_len=4096 -timeout=10 \
      -rss_limit_mb=2048 -artifact_prefix="$home/crashes/" "$home/corpus" "Fuzz/corpus/$t" >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz-long: $t found a crash (log $log):"
    ls -t "$home/crashes" | head -n 3 | sed "s|^|  $home/crashes/|"
    echo "  replay: swift run xensplit-fuzz $t FILE"
    exit 1
  fi
  execs=$(awk '/^stat::number_of_executed_units:/ {print $2}' "$log")
  if [ "$unit" = runs ]; then spent=$((spent + ${execs:-$step})); else spent=$((spent + SECONDS - start)); fi
  echo "$spent" >"$state"
  echo "fuzz-long: $t: +${execs:-?} execs; $(grep -E '^#[0-9]+' "$log" | tail -n 1 | sed -E 's/ +/ /g'); $spent of $budget $unit"
done
echo "fuzz-long: $t: budget of $budget $unit done; minimise its corpus into the repository with" \
  "scripts/fuzz.sh --seed after copying $home/corpus into .build-fuzz/corpus/$t"
