#!/usr/bin/env bash
# Installs everything XenSplit builds and tests with on Debian 12, then builds.
# Usage: scripts/setup.sh [--no-build]
set -euo pipefail

packages=(
  # build: liburing for the io_uring engine, libxen for the real-Xen platform
  liburing-dev libxen-dev pkg-config
  # C interop tests: the x86_32 layouts need -m32
  gcc gcc-multilib
  # real tools the tests and benchmarks drive
  xenstore-utils python3-pyxs fio qemu-utils nbdkit libnbd-bin iperf3 iproute2 valgrind
  # the net tests: ping inside test namespaces, tcpdump for captures
  iputils-ping tcpdump
  # the conformance tests read the suite's JUnit reports with a real JUnit library
  python3-junitparser
  # scripts/quiet-watch.sh prints the stacks of a hung test run
  gdb
  # loop devices (losetup) give the backing-store tests block devices
  mount
  # scripts/realxen/run-test.sh: Xen under QEMU with a debootstrapped dom0
  qemu-system-x86 debootstrap busybox-static cpio e2fsprogs
)

if [ "$(id -u)" -eq 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    apt-get update
    apt-get install -y --no-install-recommends "${packages[@]}"
  fi
else
  echo "setup: not root; assuming these are installed: ${packages[*]}" >&2
fi

export PATH="/opt/swift/usr/bin:$PATH"
if [ "${1:-}" != "--no-build" ]; then
  cd "$(dirname "$0")/.."
  swift build
fi
