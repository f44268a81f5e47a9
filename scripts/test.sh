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
part swift-test swift test --skip-build
part realxen scripts/realxen/run-test.sh
