#!/usr/bin/env bash
# Installs what the tests need, builds, runs a fuzzing smoke pass, every test, then the
# test on real Xen under QEMU (scripts/realxen/run-test.sh, Protocols/realxen.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
scripts/setup.sh --no-build
swift build --build-tests
scripts/fuzz.sh --smoke
swift test --skip-build
scripts/realxen/run-test.sh
