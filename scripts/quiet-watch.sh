#!/usr/bin/env bash
# Usage: scripts/quiet-watch.sh SECONDS LOG COMMAND [ARGUMENT...]
#
# Runs COMMAND with its output on stdout and appended to LOG. If LOG does not grow for
# SECONDS, something under COMMAND hangs: every thread of every process under it is
# printed (gdb), the processes are ended and the script fails naming the silence. A hung
# test then fails CI with the stacks that show why, instead of running into CI's limit.
# Otherwise the script exits with COMMAND's status.
set -uo pipefail
quiet_limit=$1 log=$2
shift 2

descendants() {
    local child
    for child in $(pgrep -P "$1"); do
        echo "$child"
        descendants "$child"
    done
}

# A subshell owns the pipeline: it ends once tee has written everything, with COMMAND's status.
( "$@" 2>&1 | tee -a "$log"; exit "${PIPESTATUS[0]}" ) &
pid=$!
last_size=-1 quiet=0
while kill -0 "$pid" 2>/dev/null; do
    sleep 5
    size=$(stat -c %s "$log" 2>/dev/null || echo 0)
    if [ "$size" = "$last_size" ]; then quiet=$((quiet + 5)); else quiet=0 last_size=$size; fi
    [ "$quiet" -ge "$quiet_limit" ] || continue
    processes=$(descendants "$pid")
    echo "quiet-watch: no output for ${quiet} s from: $*" >&2
    for p in $processes; do
        [ "$(cat /proc/$p/comm 2>/dev/null)" = tee ] && continue
        echo "quiet-watch: process $p: $(tr '\0' ' ' < /proc/$p/cmdline 2>/dev/null)" >&2
        if command -v gdb > /dev/null; then
            timeout 120 gdb -p "$p" -batch -nx -ex 'set pagination off' -ex 'thread apply all bt 40' 2>&1 \
                | grep -vE '^\[(New LWP|Thread debugging|Using host)|^warning: ' >&2 || true
        else
            echo "quiet-watch: gdb is not installed; no stacks" >&2
        fi
    done
    # Only what this script started: the command and the processes under it.
    kill -KILL $processes "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null
    echo "quiet-watch: ended after ${quiet} s without output (a hang; stacks above)" >&2
    exit 124
done
wait "$pid"
