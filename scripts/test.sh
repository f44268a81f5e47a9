#!/usr/bin/env bash
# Installs what the tests need, builds, runs a fuzzing smoke pass, every test, then the
# test on real Xen under QEMU (scripts/realxen/run-test.sh, Protocols/realxen.md).
# Each part's wall time is printed as it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
part() {
    local name=$1 start=$SECONDS
    shift
    "$@"
    echo "test.sh: $name took $((SECONDS - start)) s"
}
part setup scripts/setup.sh --no-build
part build swift build --build-tests
part fuzz-smoke scripts/fuzz.sh --smoke
# A test that skips has not passed. On this host only the real-Xen suites may skip: they
# need /dev/xen, and the realxen part below runs them inside the guest. Any other skip (a
# tool setup.sh failed to install, a binary not built) fails the run, naming the test.
swift_tests() {
    local log
    log=$(mktemp)
    swift test --skip-build 2>&1 | tee "$log"
    local unexpected
    unexpected=$(grep -E '(Test|Suite) .* skipped' "$log" \
        | grep -vE '/dev/xen absent|half of the real-Xen peer test' || true)
    rm -f "$log"
    if [ -n "$unexpected" ]; then
        printf 'test.sh: tests skipped here, which counts as failing:\n%s\n' "$unexpected" >&2
        return 1
    fi
}
part swift-test swift_tests
part realxen scripts/realxen/run-test.sh
