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
# A test that skips (or cancels itself) has not passed. On this host exactly one suite may
# skip, RealXenSelfTests, for the reason it gives when /dev/xen is absent: the realxen part
# below runs it in dom0 from this build's test bundle and fails unless every one of its
# tests passes there. Any other skip (a tool setup.sh failed to install, a binary not
# built, io_uring missing) fails the run, naming the test.
real_xen_skips() {
    local reason='"skipped: /dev/xen absent (no Xen here)"'
    echo "Suite RealXenSelfTests skipped: $reason"
    awk '/@Test/ { t = 1 } t && match($0, /func [A-Za-z0-9_]+\(/) { print substr($0, RSTART + 5, RLENGTH - 6); t = 0 }' \
        Tests/XenLinuxTests/RealXenSelfTests.swift | sed "s|.*|Test &() skipped: $reason|"
}
# The tests a log shows started and not yet passed, failed or skipped.
in_flight() {
    python3 - "$1" <<'PY'
import re, sys
started = {}
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"◇ Test (?!case |run started)(.*) started\.$", line)
    if m:
        started[m.group(1)] = True
        continue
    m = re.match(r"[✔✘➜] Test (.*?)( with \d+ test cases?)? (passed after|failed after|skipped)", line)
    if m:
        started.pop(m.group(1), None)
for name in started:
    print("    " + name)
PY
}
swift_tests() {
    local log allowed
    log=$(mktemp)
    allowed=$(mktemp)
    real_xen_skips > "$allowed"
    # Tests print all the time; 5 minutes without a line is a hang. The watch then prints
    # every thread's stack and fails the part, well inside CI's limit.
    local status=0
    scripts/quiet-watch.sh 300 "$log" swift test --skip-build || status=$?
    if [ "$status" -eq 124 ]; then
        echo "test.sh: the tests that started and never ended (one of them hangs):" >&2
        in_flight "$log" >&2
    fi
    if [ "$status" -ne 0 ]; then
        rm -f "$log" "$allowed"
        return "$status"
    fi
    local unexpected
    unexpected=$(grep -E '(Test|Suite) .* (skipped|was cancelled|cancelled)( |:|\.|$)' "$log" \
        | grep -vE ' (passed|failed) after |started\.$' \
        | sed 's/^[^ ]* //' | grep -vxF -f "$allowed" || true)
    rm -f "$log" "$allowed"
    if [ -n "$unexpected" ]; then
        printf 'test.sh: tests skipped or cancelled here, which counts as failing:\n%s\n' "$unexpected" >&2
        return 1
    fi
}
part swift-test swift_tests
# One minute of scripts/soak.sh: 8 guests x 8 disks under fio verify and 16 vifs under iperf3
# through one backend, checking errors, teardown, fds and threads; RSS flatness is judged on
# runs of 10 minutes or more only (run those by hand: scripts/soak.sh 10).
part soak scripts/soak.sh --no-build 1
part realxen scripts/realxen/run-test.sh
