#!/usr/bin/env bash
# Runs the test suite under AddressSanitizer or ThreadSanitizer (outside CI: the whole suite
# takes several times as long as a plain run).
#
# Usage: scripts/sanitize.sh address|thread [FILTER...]
#   FILTER: `swift test --filter` patterns (e.g. XenRingTests BlkbackQueueTests); none runs
#   every test. SANITIZE_SCRATCH sets the build directory (default .build-address or
#   .build-thread, apart from the plain build so neither rebuilds the other).
#
# 1. Builds the tests, and every binary they start (xensplit, xensplit-peer, ...), with
#    -sanitize=KIND (Swift and C targets alike).
# 2. Runs the canary first (Sources/sanitizer-canary: a one-byte heap overflow for address, a
#    data race between two threads for thread) and fails unless the sanitizer reports it, and
#    checks the test bundle carries the sanitizer's runtime: a build in which the sanitizer
#    is silently off cannot pass.
# 3. Runs the tests with the sanitizer writing every report, from the test process and from
#    every child it starts, to a file of its own (log_path), so a report from a child whose
#    output a test swallowed still counts. Exits non-zero if a test fails or any report was
#    written, printing the reports.
#
# Suppressions live in scripts/sanitize/ (leak.supp for LeakSanitizer under address,
# thread.supp for thread), each with the reason it is not ours to fix.
#
# What ThreadSanitizer cannot see, so a clean run says nothing about it:
# - io_uring: the kernel writes completions and read data into our memory (CQ ring, buffers)
#   without any instrumented access, and the submission queue is read by the kernel. The
#   ordering between a submitted buffer and its completion is the kernel's, invisible here.
# - Shared memory written by another process: ring pages, grant-mapped pages and grant
#   tables are written by the peer (frontend, backend, the local hypervisor) in another
#   process. TSan sees only this process's accesses, so a missing fence against the peer is
#   not reported: that is what the fences' pairing comments, the C-reference ring tests and
#   the hostile-peer and fuzz tests are for.
# - The local hypervisor when it runs as its own process (`xensplit hypervisor`): its races
#   are seen only in tests that run it in-process and in its own sanitized binary's reports.
# - eventfds and sockets as synchronisation: a notify through an event channel orders
#   memory for the peer, but TSan does not know that a read of an eventfd synchronises with
#   its write, so it may miss (never invent) a race that only such a notify orders.
# - Synchronization.Mutex's contended hand-over: its slow paths live in the toolchain's
#   uninstrumented library, so two threads meeting on one Mutex look like a race. Such
#   reports are suppressed per file in scripts/sanitize/thread.supp after reading that every
#   access there is inside the lock; a lock TSan can see (pthread_mutex in TSan builds) would
#   let them go.
# AddressSanitizer likewise checks only our own heap and stack: a mapping of a peer's page
# is a plain mmap region, whose bounds are SharedMemory's checks, not ASan's.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"

kind=${1:-}
case $kind in
    address) canary=heap-overflow; expected='ERROR: AddressSanitizer: heap-buffer-overflow'; runtime=__asan_init; prefix=asan ;;
    thread) canary=data-race; expected='WARNING: ThreadSanitizer: (data race|Swift access race)'; runtime=__tsan_init; prefix=tsan ;;
    *) echo "usage: scripts/sanitize.sh address|thread [swift test --filter pattern...]" >&2; exit 2 ;;
esac
shift
scratch=${SANITIZE_SCRATCH:-.build-$kind}

echo "sanitize: building the tests with -sanitize=$kind in $scratch"
swift build --build-tests --sanitize="$kind" --scratch-path "$scratch"
bin=$scratch/debug

reports=$(mktemp -d "/tmp/sanitize-$kind.XXXXXX")
# The Swift backtracer's signal handlers get in the sanitizers' way; they print their own.
export SWIFT_BACKTRACE=enable=no
options="log_path=$reports/$prefix"
case $kind in
    # LeakSanitizer stays on: its reports count too. Every child the tests start writes its
    # reports under its own PID.
    address)
        export ASAN_OPTIONS="$options:detect_leaks=1:abort_on_error=0"
        export LSAN_OPTIONS="suppressions=$PWD/scripts/sanitize/leak.supp:print_suppressions=0"
        ;;
    # Report every race and go on, so one run lists them all.
    thread)
        [ -f scripts/sanitize/thread.supp ] && options="$options:suppressions=$PWD/scripts/sanitize/thread.supp"
        export TSAN_OPTIONS="$options:halt_on_error=0:second_deadlock_stack=1"
        ;;
esac

# --- the canary: the sanitizer must report the deliberate bug ---
canary_dir=$reports/canary
mkdir "$canary_dir"
set +e
case $kind in
    address) ASAN_OPTIONS="log_path=$canary_dir/$prefix:detect_leaks=0" "$bin/sanitizer-canary" "$canary" >/dev/null 2>&1 ;;
    thread) TSAN_OPTIONS="log_path=$canary_dir/$prefix" "$bin/sanitizer-canary" "$canary" >/dev/null 2>&1 ;;
esac
canary_status=$?
set -e
# (A race on a Swift variable is reported as a "Swift access race".)
if ! cat "$canary_dir"/* 2>/dev/null | grep -qE "$expected"; then
    echo "sanitize: FAIL: the canary ($canary, exit $canary_status) produced no '$expected' report: $kind sanitizer is not active" >&2
    cat "$canary_dir"/* 2>/dev/null >&2 || true
    exit 1
fi
echo "sanitize: canary $canary reported ($(grep -m1 -ohE "$expected.*" "$canary_dir"/* | head -n 1 | cut -c1-100)), exit $canary_status"
rm -rf "$canary_dir"
bundle=$bin/XenSplitPackageTests.xctest
# (grep reads nm's whole output: an early exit would fail the pipeline under pipefail.)
[ "$(nm "$bundle" 2>/dev/null | grep -cw "$runtime")" -gt 0 ] || {
    echo "sanitize: FAIL: $bundle has no $runtime: the test bundle is not built with the $kind sanitizer" >&2
    exit 1
}

# --- the tests ---
filters=()
for f in "$@"; do filters+=(--filter "$f"); done
echo "sanitize: running ${*:-every test} under the $kind sanitizer; reports go to $reports"
set +e
swift test --skip-build --sanitize="$kind" --scratch-path "$scratch" "${filters[@]}"
status=$?
set -e
found=$(find "$reports" -type f | sort)
if [ -n "$found" ]; then
    echo "sanitize: FAIL: $(echo "$found" | wc -l) sanitizer report file(s):" >&2
    for f in $found; do
        echo "==== $f" >&2
        cat "$f" >&2
    done
    exit 1
fi
rm -rf "$reports"
if [ "$status" -ne 0 ]; then
    echo "sanitize: FAIL: the tests failed (exit $status) under the $kind sanitizer, without a sanitizer report" >&2
    exit "$status"
fi
echo "sanitize: passed under the $kind sanitizer, no reports"
