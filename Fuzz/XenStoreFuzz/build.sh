#!/usr/bin/env bash
# Builds the libFuzzer target over XenStore's request path into .build/fuzz/xenstore-fuzz.
# XenStore and its dependencies are compiled with -sanitize=fuzzer (coverage
# instrumentation) in their own scratch directory, then linked with libFuzzer's main.
# Usage: Fuzz/XenStoreFuzz/build.sh   then   .build/fuzz/xenstore-fuzz [-runs=N] [corpus]
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="/opt/swift/usr/bin:$PATH"
scratch=.build/fuzz
swift build --scratch-path "$scratch" --target XenStore \
  -Xswiftc -sanitize=fuzzer -Xswiftc -parse-as-library -Xcc -fsanitize=fuzzer-no-link >&2
bin="$scratch/debug"
objects=()
for module in XenStore XenRing SharedMemory CSharedMemory Logging; do
  objects+=("$bin/$module.build"/*.o)
done
swiftc -sanitize=fuzzer -parse-as-library -g \
  -I "$bin/Modules" -Xcc -fmodule-map-file="$bin/CSharedMemory.build/module.modulemap" \
  Fuzz/XenStoreFuzz/FuzzXenStoreRequests.swift "${objects[@]}" \
  -o "$scratch/xenstore-fuzz" >&2
echo "$scratch/xenstore-fuzz"
