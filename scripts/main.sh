#!/usr/bin/env bash
# The main job: `xensplit demo`. In a temporary directory it starts the local hypervisor and
# the block backend, creates a guest with two disks, attaches a userspace blkfront to each,
# writes, verifies and times them; then (as root) the net backend in a dom0 network namespace,
# a vif on a bridge and a netfront TAP in a guest namespace pass ping and a checksummed TCP
# transfer both ways; then it tears everything down. Arguments go to the demo
# (e.g. --xvda-mib 256). The ring benchmark is `xensplit-bench ring`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
scripts/setup.sh --no-build
swift build -c release --product xensplit
.build/release/xensplit demo "$@"
