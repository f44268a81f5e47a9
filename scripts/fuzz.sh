#!/usr/bin/env bash
# Builds the libFuzzer binary and fuzzes one target.
# Usage: scripts/fuzz.sh TARGET [libFuzzer options...]     e.g. scripts/fuzz.sh ring -max_total_time=60
#        TARGET: ring, xenstore, blkback (a hostile frontend against one blkback queue) or netif
#          (a guest's tx ring chain by chain, checksum location, rx plans) or netifctrl (control
#          requests against the hash configuration)
#        scripts/fuzz.sh --smoke    every target for a fixed number of runs (the test suite does this)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
swift build --product xensplit-fuzz --scratch-path .build-fuzz \
  -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING -Xswiftc -parse-as-library >/dev/null
bin=.build-fuzz/debug/xensplit-fuzz
# The Swift backtracer trips AddressSanitizer; libFuzzer reports crashes itself.
export SWIFT_BACKTRACE=enable=no
corpus=.build-fuzz/corpus
if [ "${1:-}" = "--smoke" ]; then
  for t in ${XENSPLIT_FUZZ_TARGETS:-ring xenstore blkback netif netifctrl}; do
    mkdir -p "$corpus/$t"
    echo "fuzz smoke: $t"
    # A blkback input builds a queue (copy buffers, a grant cache): fewer, dearer runs.
    runs=50000
    [ "$t" = blkback ] && runs=10000
    XENSPLIT_FUZZ_TARGET=$t "$bin" -runs="${XENSPLIT_FUZZ_RUNS:-$runs}" -seed=1 -max_len=4096 -artifact_prefix=.build-fuzz/ \
      "$corpus/$t" 2>&1 | tail -n 3
  done
  exit 0
fi
t="${1:?usage: scripts/fuzz.sh TARGET [libFuzzer options] | --smoke}"
shift
mkdir -p "$corpus/$t"
XENSPLIT_FUZZ_TARGET=$t exec "$bin" -max_len=4096 -artifact_prefix=.build-fuzz/ "$@" "$corpus/$t"
