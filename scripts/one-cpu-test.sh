#!/usr/bin/env bash
# Usage: scripts/one-cpu-test.sh [swift test arguments...]
#
# Runs the tests with Swift's cooperative pool one thread wide (scripts/one-cpu/one-cpu.c,
# preloaded, reports one CPU). A test or a program that blocks a thread of the pool while
# waiting for work that needs the pool deadlocks here at once; on CI's two cores it hangs
# only when two such waits meet. A silence of 2 minutes prints every thread's stack
# (scripts/quiet-watch.sh). Tests that fail here by running out of their own time bounds
# (everything shares one thread) are not necessarily wrong; a hang always is.
# Outside CI; build first (swift build --build-tests).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
shim=.build/one-cpu.so
gcc -shared -fPIC -O2 -Wall scripts/one-cpu/one-cpu.c -o "$shim" -ldl
log=$(mktemp /tmp/one-cpu-test-XXXXXX.log)
echo "one-cpu-test: log $log"
LD_PRELOAD="$PWD/$shim" scripts/quiet-watch.sh 120 "$log" swift test --skip-build "$@"
