# Reading dom0's serial console: sourced by run-test.sh, and by its test
# (Tests/XenLinuxTests/RealXenConsoleTests.swift), which feeds these functions made-up logs.
# Each reads the console on standard input, carriage returns and all.
#
# A marker counts only at the start of a line, and only outside the logs dom0 quotes between
# REALXEN-LOG-BEGIN and REALXEN-LOG-END: a line that merely contains a marker (a backend's
# log line, a kernel message that ran into ours, a quoted domU console) passes no step.

# judged_lines: the console without carriage returns and without the quoted logs.
judged_lines() { tr -d '\r' | sed '/^REALXEN-LOG-BEGIN /,/^REALXEN-LOG-END /d'; }

# marker_lines MARKER: the rest of every judged line that begins with "MARKER ".
marker_lines() { judged_lines | sed -n "s/^$1 //p"; }

# saw_marker TEXT: whether a judged line begins with TEXT (read to the end, so that a
# pipeline under pipefail never sees this side close early).
saw_marker() { [ "$(judged_lines | grep -c -- "^$1")" -gt 0 ]; }

# steps_without_pass STEP...: each STEP that has no "REALXEN-RESULT STEP PASS" line.
steps_without_pass() {
    local results step
    results=$(marker_lines REALXEN-RESULT)
    for step in "$@"; do
        grep -q "^$step PASS" <<< "$results" || echo "$step"
    done
}

# step_failures: "STEP: WHY" for every REALXEN-RESULT line whose verdict is FAIL.
step_failures() {
    marker_lines REALXEN-RESULT | while read -r step verdict why; do
        [ "$verdict" = FAIL ] && echo "$step: $why"
    done
    return 0
}
