#!/usr/bin/env bash
# Builds the libFuzzer binary and fuzzes one target.
# Usage: scripts/fuzz.sh TARGET [libFuzzer options...]     e.g. scripts/fuzz.sh netback -max_total_time=60
#        TARGET, each a Sources/FuzzTargets type:
#          ring        a hostile peer on a shared ring and the xenstore byte ring
#          xenstore    a connection's byte stream to the xenstore engine
#          blkif       blkif request and response slots decoded per ABI (native, x86_32, x86_64)
#          blkback     a hostile frontend against one blkback queue
#          netif       a guest's tx ring chain by chain, checksum location, rx plans
#          netifctrl   control requests against the hash configuration
#          netback     a hostile frontend's tx and rx rings against one netback queue
#          blkfront    a lying backend's responses to blkfront's rings
#          netfront    a lying backend's responses to netfront's tx and rx rings
#          nbd         a hostile client's byte stream to the NBD server
#          hypervisor  a client's byte stream to the local hypervisor, as dom0 or a guest
#          diskspec    DISKSPEC strings (and vdev names)
#          vifspec     VIFSPEC strings
#        scripts/fuzz.sh --smoke    every target for XENSPLIT_FUZZ_SECONDS (15) seconds, printing
#                                   each one's executions and coverage (the test suite runs this);
#                                   XENSPLIT_FUZZ_TARGETS picks targets, XENSPLIT_FUZZ_JOBS how many
#                                   run at once (default: one per core)
#        scripts/fuzz.sh --build    only builds the binary
#        scripts/fuzz.sh --seed     regenerates the seeds (Fuzz/seeds.py) and merges them with what
#                                   the fuzzer found into Fuzz/corpus, minimised (-merge=1)
# Fuzz/corpus/TARGET (in the repository, read-only here) seeds every run; what a run finds goes
# to .build-fuzz/corpus/TARGET, crashes to .build-fuzz/crash-*. Long runs: scripts/fuzz-long.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
targets="ring xenstore blkif blkback netif netifctrl netback blkfront netfront nbd hypervisor diskspec vifspec"
swift build --product xensplit-fuzz --scratch-path .build-fuzz \
  -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING -Xswiftc -parse-as-library >/dev/null
bin=.build-fuzz/debug/xensplit-fuzz
# The Swift backtracer trips AddressSanitizer; libFuzzer reports crashes itself.
export SWIFT_BACKTRACE=enable=no
corpus=.build-fuzz/corpus
# Every run: inputs up to 4 KiB, an input taking 10 s is a hang, 2 GiB of memory is a leak.
common=(-max_len=4096 -timeout=10 -rss_limit_mb=2048 -artifact_prefix=.build-fuzz/)
mkdir -p Fuzz/corpus
[ "${1:-}" = "--build" ] && exit 0

if [ "${1:-}" = "--smoke" ]; then
  seconds=${XENSPLIT_FUZZ_SECONDS:-15}
  # Each target gets its full time; they run side by side, one per core (XENSPLIT_FUZZ_JOBS),
  # so the pass takes about targets / cores * seconds.
  jobs=${XENSPLIT_FUZZ_JOBS:-$(nproc)}
  smoke_one() {
    local t=$1 log=.build-fuzz/smoke-$1.log
    if ! XENSPLIT_FUZZ_TARGET=$t "$bin" -max_total_time="$seconds" -seed=1 -print_final_stats=1 "${common[@]}" \
        "$corpus/$t" "Fuzz/corpus/$t" >"$log" 2>&1; then
      echo failed >".build-fuzz/smoke-$t.status"
      return
    fi
    echo passed >".build-fuzz/smoke-$t.status"
  }
  list=(${XENSPLIT_FUZZ_TARGETS:-$targets})
  for t in "${list[@]}"; do
    mkdir -p "$corpus/$t" "Fuzz/corpus/$t"
    rm -f ".build-fuzz/smoke-$t.status"
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    smoke_one "$t" &
  done
  wait
  failed=0
  for t in "${list[@]}"; do
    log=.build-fuzz/smoke-$t.log
    if [ "$(cat ".build-fuzz/smoke-$t.status" 2>/dev/null)" != passed ]; then
      tail -n 40 "$log"
      echo "fuzz smoke: $t FAILED (log $log; reproduce: swift run xensplit-fuzz $t .build-fuzz/crash-*)"
      failed=1
      continue
    fi
    # The last status line: "#RUNS DONE cov: C ft: F corp: N/SIZE ...".
    done_line=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
    execs=$(grep -E '^stat::number_of_executed_units:' "$log" | awk '{print $2}')
    rate=$(grep -E '^stat::average_exec_per_sec:' "$log" | awk '{print $2}')
    cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$done_line")
    ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$done_line")
    corp=$(sed -nE 's/.* corp: ([0-9]+)\/.*/\1/p' <<<"$done_line")
    echo "fuzz smoke: $t: ${execs:-?} execs in ${seconds} s (${rate:-?}/s), cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}"
  done
  exit "$failed"
fi

if [ "${1:-}" = "--seed" ]; then
  seeds=$(mktemp -d)
  trap 'rm -rf "$seeds"' EXIT
  python3 Fuzz/seeds.py "$seeds"
  for t in ${XENSPLIT_FUZZ_TARGETS:-$targets}; do
    mkdir -p "$corpus/$t" "$seeds/$t" "Fuzz/corpus/$t"
    merged=$(mktemp -d)
    XENSPLIT_FUZZ_TARGET=$t "$bin" -merge=1 "${common[@]}" "$merged" "Fuzz/corpus/$t" "$seeds/$t" "$corpus/$t" \
      >".build-fuzz/merge-$t.log" 2>&1 || { tail -n 20 ".build-fuzz/merge-$t.log"; exit 1; }
    rm -rf "Fuzz/corpus/$t"
    mv "$merged" "Fuzz/corpus/$t"
    chmod 755 "Fuzz/corpus/$t"
    echo "fuzz seed: $t: $(ls "Fuzz/corpus/$t" | wc -l) inputs, $(du -sk "Fuzz/corpus/$t" | cut -f1) KiB"
  done
  exit 0
fi

t="${1:?usage: scripts/fuzz.sh TARGET [libFuzzer options] | --smoke | --seed}"
shift
mkdir -p "$corpus/$t" "Fuzz/corpus/$t"
XENSPLIT_FUZZ_TARGET=$t exec "$bin" "${common[@]}" "$@" "$corpus/$t" "Fuzz/corpus/$t"
