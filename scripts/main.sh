#!/usr/bin/env bash
# The main job. Until `xensplit demo` exists: the ring benchmark, Swift rings against
# Xen's C ring.h macros in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
scripts/setup.sh --no-build
swift build -c release --product xensplit-bench
.build/release/xensplit-bench ring "$@"
