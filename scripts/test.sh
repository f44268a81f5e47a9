#!/usr/bin/env bash
# Installs what the tests need, builds, runs a fuzzing smoke pass, then every test.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
scripts/setup.sh --no-build
swift build --build-tests
scripts/fuzz.sh --smoke
swift test --skip-build
