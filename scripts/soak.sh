#!/usr/bin/env bash
# The soak: 8 guests with 8 disks each (their own raw images on tmpfs) under fio at queue
# depth 32 with crc32c verify, and 16 vifs (two per guest) carrying iperf3 TCP both ways,
# all through one `xensplit backend` (blkback and netback in one process) on the local
# hypervisor, for MINUTES minutes. Meanwhile the backend's RSS, open fds and threads are
# sampled. It fails (exit 1, naming what) on any error: a fio pass that does not verify, an
# iperf3 run that fails or moves nothing, a frontend or the backend that dies or exits non-zero,
# an error line in a log, a queue statistics line with errors, something left mapped in the
# hypervisor after teardown, fds (a lasting change, or a rise over 4) or threads not flat after warm-up, and, for runs of 10
# minutes or more, RSS after warm-up not flat within 5% (a shorter run is mostly warm-up, so
# its RSS is printed, not judged).
#
# Usage: scripts/soak.sh [--no-build] MINUTES        (as root: namespaces and TAP devices)
# The shape can be changed for experiments (the figures printed say what ran):
#   SOAK_GUESTS=8 SOAK_DISKS=8 (per guest) SOAK_VIFS=2 (per guest) SOAK_DISK_MIB=16
#   SOAK_PASS_MIB=4 (one fio pass: that much of the disk written then verified; each pass
#   moves on to the next stretch, so the passes go round the whole disk)
#   SOAK_DEPTH=32 SOAK_NET_RATE=20M (iperf3 -b, per direction per vif) SOAK_SAMPLE=5 (s)
#   SOAK_WARMUP (s; default a fifth of the run, at least 60 s for runs of 10 minutes or more)
#   XENSPLIT (the binary; default .build/debug/xensplit, built first unless --no-build)
#   SOAK_KEEP=1 keeps the logs and samples (a failed run always keeps them)
#
# What it touches: a directory under /dev/shm (images, sockets, logs), network namespaces
# named xssoak<PID>-*, in dom0's namespace a bridge and the backend's TAP devices, addresses
# from 198.19.50.0/24 (inside 198.18.0.0/15). All of it, and every process it started (by
# PID), goes on exit however it exits.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export PATH="/opt/swift/usr/bin:$PATH"

build=1
if [ "${1:-}" = "--no-build" ]; then build=0; shift; fi
minutes=${1:?usage: scripts/soak.sh [--no-build] MINUTES}
[[ $minutes =~ ^[0-9]+$ ]] && [ "$minutes" -ge 1 ] || { echo "soak: MINUTES must be a whole number >= 1" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "soak: needs root (network namespaces, TAP devices)" >&2; exit 2; }
for tool in fio iperf3 ip timeout; do
    command -v "$tool" >/dev/null || { echo "soak: $tool is missing (scripts/setup.sh installs it)" >&2; exit 2; }
done

guests=${SOAK_GUESTS:-8}
disks_per_guest=${SOAK_DISKS:-8}
vifs_per_guest=${SOAK_VIFS:-2}
disk_mib=${SOAK_DISK_MIB:-16}
pass_mib=${SOAK_PASS_MIB:-4}
depth=${SOAK_DEPTH:-32}
net_rate=${SOAK_NET_RATE:-20M}
sample_every=${SOAK_SAMPLE:-5}
run_seconds=$((minutes * 60))
judge_rss=0
if [ "$minutes" -ge 10 ]; then
    judge_rss=1
    warmup=${SOAK_WARMUP:-$(( run_seconds / 5 > 60 ? run_seconds / 5 : 60 ))}
else
    warmup=${SOAK_WARMUP:-$(( run_seconds / 5 ))}
fi
[ "$disks_per_guest" -le 8 ] || { echo "soak: at most 8 disks per guest (xvda..xvdh)" >&2; exit 2; }

if [ "$build" -eq 1 ] && [ -z "${XENSPLIT:-}" ]; then
    swift build --product xensplit >/dev/null
fi
xensplit=${XENSPLIT:-$root/.build/debug/xensplit}
[ -x "$xensplit" ] || { echo "soak: $xensplit is not built" >&2; exit 2; }

dir=$(mktemp -d /dev/shm/xssoak.XXXXXX)
tag=xssoak$$
dom0ns=$tag-dom0
bridge=xssoakbr0
subnet=198.19.50
pids=()          # every process this script started, ended by PID on exit
namespaces=()
failures=()
fail() { failures+=("$*"); echo "soak: FAIL: $*" >&2; }
say() { echo "soak: $*"; }

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    local pid
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    local ns
    for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    # fio and iperf3 clients run inside loops (subshells): their PIDs are in the loops' files.
    for pid in $(cat "$dir"/fio-*.pid "$dir"/iperf3-*.pid 2>/dev/null); do kill -TERM "$pid" 2>/dev/null || true; done
    if [ "$status" -ne 0 ] || [ -n "${SOAK_KEEP:-}" ]; then
        rm -f "$dir"/*.img
        say "logs kept in $dir (remove with rm -rf $dir)"
    else
        rm -rf "$dir"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts a background process, remembering its PID for cleanup; the PID is left in $started.
start() {
    local log=$1
    shift
    "$@" >"$log" 2>&1 &
    started=$!
    pids+=("$started")
}

# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || { echo "soak: $what did not happen within $seconds s" >&2; return 1; }
        sleep 0.2
    done
}

vdevs=(xvda xvdb xvdc xvdd xvde xvdf xvdg xvdh)
x() { "$xensplit" "$@" --state-dir "$dir"; }

say "$guests guests x $disks_per_guest disks of $disk_mib MiB at depth $depth (fio crc32c verify, $pass_mib MiB a pass), $((guests * vifs_per_guest)) vifs with iperf3 TCP both ways at $net_rate each, $minutes min; backend sampled every $sample_every s, warm-up $warmup s"
say "binary $xensplit, directory $dir"
setup_start=$SECONDS

# --- the local hypervisor, dom0's network namespace with its bridge, the backend there ---
# Dom0's memory pool: each vbd queue registers a copy buffer per ring slot (32 slots of 32
# pages) plus a scratch one, about 1056 pages, so 64 disks need some 67,600 pages, over the
# default 65,536 (measured: the 58th disk's backend was refused with ENOMEM). The pool is
# allocated as used.
start "$dir/hypervisor.log" "$xensplit" hypervisor --state-dir "$dir" --pool-pages $((131072 > guests * disks_per_guest * 1100 + 16384 ? 131072 : guests * disks_per_guest * 1100 + 16384))
wait_for 60 "the hypervisor's socket" test -S "$dir/hypervisor.socket"
ip netns add "$dom0ns"
namespaces+=("$dom0ns")
ip -n "$dom0ns" link set dev lo up
ip -n "$dom0ns" link add "$bridge" type bridge
ip -n "$dom0ns" addr add "$subnet.1/24" dev "$bridge"
ip -n "$dom0ns" link set dev "$bridge" up
start "$dir/backend.log" ip netns exec "$dom0ns" "$xensplit" backend --devices vbd,vif --state-dir "$dir"
backend=$started
wait_for 60 "the backend's start" grep -q 'backend: I/O engine' "$dir/backend.log"
# What dom0 holds with no guest: the teardown must come back to it.
usage_before=$(x domain list --usage | awk '$2 == "Domain-0"')

# --- the guests: disks (own images) and vifs, created in dom0's namespace so the vif
#     script puts each backend interface on the bridge there ---
for g in $(seq 1 "$guests"); do
    args=()
    for d in $(seq 0 $((disks_per_guest - 1))); do
        image="$dir/g$g-${vdevs[$d]}.img"
        truncate -s "${disk_mib}M" "$image"
        args+=(--disk "format=raw,vdev=${vdevs[$d]},access=rw,target=$image")
    done
    for v in $(seq 0 $((vifs_per_guest - 1))); do
        args+=(--nic "bridge=$bridge,mac=00:16:3e:5a:$(printf %02x "$g"):$(printf %02x "$v")")
    done
    ip netns exec "$dom0ns" "$xensplit" domain create --state-dir "$dir" "g$g" "${args[@]}" >"$dir/create-g$g.log" 2>&1 \
        || { cat "$dir/create-g$g.log" >&2; echo "soak: creating guest g$g failed" >&2; exit 1; }
done

# --- the frontends: a blkfront per disk (an NBD export for fio), a netfront per vif (eth0
#     in a namespace of its own) ---
disk_names=()
frontends=()
frontend_names=()
for g in $(seq 1 "$guests"); do
    for d in $(seq 0 $((disks_per_guest - 1))); do
        name=g$g-${vdevs[$d]}
        start "$dir/blkfront-$name.log" "$xensplit" blkfront "g$g" "${vdevs[$d]}" --nbd "unix:$dir/$name.sock" \
            --depth "$depth" --state-dir "$dir"
        frontends+=("$started")
        frontend_names+=("blkfront $name")
        disk_names+=("$name")
    done
done
vif_namespaces=()
vif_addresses=()
for g in $(seq 1 "$guests"); do
    for v in $(seq 0 $((vifs_per_guest - 1))); do
        ns=$tag-g$g-v$v
        ip netns add "$ns"
        namespaces+=("$ns")
        start "$dir/netfront-g$g-v$v.log" "$xensplit" netfront "g$g" "$v" --tap eth0 --netns "$ns" --state-dir "$dir"
        frontends+=("$started")
        frontend_names+=("netfront g$g vif $v")
        vif_namespaces+=("$ns")
        vif_addresses+=("$subnet.$((10 + ${#vif_addresses[@]}))")
    done
done
for name in "${disk_names[@]}"; do
    wait_for 300 "the NBD export of $name" test -S "$dir/$name.sock"
done
carrier() { ip -n "$1" -o link show dev eth0 | grep -q LOWER_UP; }
for i in "${!vif_namespaces[@]}"; do
    ns=${vif_namespaces[$i]}
    wait_for 300 "eth0 in $ns with its carrier on (backend Connected)" carrier "$ns"
    ip -n "$ns" link set dev lo up
    ip -n "$ns" addr add "${vif_addresses[$i]}/24" dev eth0
done
for i in "${!vif_namespaces[@]}"; do
    wait_for 60 "a ping from ${vif_namespaces[$i]} to dom0's bridge" \
        ip netns exec "${vif_namespaces[$i]}" ping -n -q -c 1 -W 2 "$subnet.1" >/dev/null
done
say "set up in $((SECONDS - setup_start)) s: ${#disk_names[@]} disks exported, ${#vif_namespaces[@]} vifs connected"

# --- the sampler: backend RSS (KiB), open fds, and its threads in three kinds: its own
#     (main, backend workers: must be flat), io_uring's io-wq workers (the kernel starts and
#     ends them as I/O blocks, capped by --io-workers per worker) and Dispatch's pool threads
#     (the Swift global executor's, started and ended by Dispatch as work comes and goes).
#     The two pools are elastic by design, so they are judged bounded, not flat ---
sample() {
    local start=$1
    while kill -0 "$backend" 2>/dev/null; do
        local rss fds names own iowq dispatch anon shmem
        rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$backend/status" 2>/dev/null) || break
        # RSS in two parts: the heap (RssAnon) and the guests' pages mapped from the
        # hypervisor's memfds (RssShmem: persistent grants, at most 1056 pages a vbd queue).
        anon=$(awk '/^RssAnon:/ { print $2 }' "/proc/$backend/status" 2>/dev/null) || break
        shmem=$(awk '/^RssShmem:/ { print $2 }' "/proc/$backend/status" 2>/dev/null) || break
        fds=$(find "/proc/$backend/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
        names=$(cat /proc/"$backend"/task/*/comm 2>/dev/null)
        iowq=$(grep -c '^iou-wrk-' <<<"$names" || true)
        # Dispatch's root-queue threads (the global executor's pool), named after their queue.
        dispatch=$(grep -c 'qos' <<<"$names" || true)
        own=$(( $(wc -l <<<"$names") - iowq - dispatch ))
        echo "$((SECONDS - start)) $rss $fds $own $iowq $dispatch $anon $shmem"
        echo "$((SECONDS - start)) $(sed 's/[0-9]*$//' <<<"$names" | sort | uniq -c | tr -s ' \n' ' ')" >>"$dir/thread-names.txt"
        sleep "$sample_every"
    done
}

# --- the load: per disk, fio passes (random writes of mixed sizes over SOAK_PASS_MIB of the
#     disk at depth 32, each block with its crc32c, then every block read back and checked;
#     the next pass on the next stretch) until the time is up; per vif, one iperf3 run both
#     ways for the whole time ---
traffic_start=$SECONDS
deadline=$((SECONDS + run_seconds))
start "$dir/samples.txt" sample "$traffic_start"
sampler=$started
# fio runs as a separate job per disk; its status lines go to $dir/fio-NAME.status.
disk_loop() {
    local name=$1 pass=0 offset
    while [ $SECONDS -lt "$deadline" ]; do
        pass=$((pass + 1))
        offset=$(( (pass - 1) * pass_mib % disk_mib ))
        fio --name="$name" --ioengine=nbd --uri="nbd+unix:///?socket=$dir/$name.sock" --rw=randwrite \
            --bssplit=4k/50:16k/25:64k/20:256k/5 --blockalign=4k --offset="${offset}M" --size="${pass_mib}M" --iodepth="$depth" \
            --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 --randseed="$pass" \
            --output-format=terse --terse-version=3 >"$dir/fio-$name.out" 2>&1 &
        echo $! >"$dir/fio-$name.pid"
        if wait $!; then
            # Terse v3: field 5 is the job's error code.
            code=$(awk -F';' '/^3;/ { print $5 }' "$dir/fio-$name.out" | tail -n 1)
            if [ "$code" = 0 ]; then echo "$((SECONDS - traffic_start)) pass $pass ok"; else echo "pass $pass error $code"; return 1; fi
        else
            echo "pass $pass fio exited $?: $(tail -n 3 "$dir/fio-$name.out" | tr '\n' ' ')"
            return 1
        fi
    done
}
for i in "${!vif_namespaces[@]}"; do
    port=$((5201 + i))
    start "$dir/iperf3-server-$i.log" ip netns exec "$dom0ns" iperf3 -s -1 -B "$subnet.1" -p "$port"
done
sleep 1
# One vif's iperf3 client. On this 2-core machine under the whole load, a guest's ARP for
# dom0 has been seen to time out (iperf3: "unable to connect to server: No route to host"),
# so a client that cannot connect tries again, twice, and the retries are counted and
# printed; a connected run that fails is not retried.
vif_client() {
    local i=$1 port=$2 attempt
    for attempt in 1 2 3; do
        timeout -k 10 $((run_seconds + 120)) ip netns exec "${vif_namespaces[$i]}" \
            iperf3 -c "$subnet.1" -p "$port" -B "${vif_addresses[$i]}" -t "$run_seconds" --bidir -b "$net_rate" -J \
            >"$dir/iperf3-$i.json" 2>&1 &
        echo $! >"$dir/iperf3-$i.pid"
        wait $! && return 0
        grep -q '"error":.*unable to connect' "$dir/iperf3-$i.json" || return 1
        echo "attempt $attempt: $(grep -o '"error":.*' "$dir/iperf3-$i.json")" >>"$dir/iperf3-$i.retries"
        sleep 1
    done
    return 1
}
iperfs=()
for i in "${!vif_namespaces[@]}"; do
    start "$dir/iperf3-client-$i.log" vif_client "$i" $((5201 + i))
    iperfs+=("$started")
done
# The disks' load starts once the TCP streams are up (2 s), so connecting is not raced
# against 64 fio processes starting at once.
sleep 2
loads=()
for name in "${disk_names[@]}"; do
    start "$dir/fio-$name.status" disk_loop "$name"
    loads+=("$started")
done

# Everything ends by itself; a pass that started before the deadline finishes after it.
for i in "${!loads[@]}"; do
    wait "${loads[$i]}" || fail "disk ${disk_names[$i]}: $(tail -n 1 "$dir/fio-${disk_names[$i]}.status")"
done
for i in "${!iperfs[@]}"; do
    wait "${iperfs[$i]}" || fail "vif ${vif_namespaces[$i]}: iperf3 failed ($(grep -m1 '"error"' "$dir/iperf3-$i.json" || true))"
done
retries=$( (cat "$dir"/iperf3-*.retries 2>/dev/null || true) | wc -l)
traffic_seconds=$((SECONDS - traffic_start))
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true

# --- figures from the load ---
passes=0
for name in "${disk_names[@]}"; do
    n=$(grep -c ' ok$' "$dir/fio-$name.status" || true)
    [ "$n" -ge 1 ] || fail "disk $name: no fio pass completed"
    passes=$((passes + n))
done
net_bytes=0
for i in "${!vif_namespaces[@]}"; do
    # iperf3 -J: end.sum_sent (this side's stream) and end.sum_sent_bidir_reverse (dom0's).
    read -r up down < <(python3 - "$dir/iperf3-$i.json" <<'EOF'
import json, sys
try:
    end = json.load(open(sys.argv[1]))["end"]
    print(int(end["sum_received"]["bytes"]), int(end["sum_received_bidir_reverse"]["bytes"]))
except Exception:
    print(0, 0)
EOF
)
    [ "$up" -gt 0 ] && [ "$down" -gt 0 ] || fail "vif ${vif_namespaces[$i]}: iperf3 moved guest->dom0 $up, dom0->guest $down bytes"
    net_bytes=$((net_bytes + up + down))
done
say "load ran $traffic_seconds s: $passes fio passes verified over ${#disk_names[@]} disks ($((passes * pass_mib * 2)) MiB written and read back), TCP $((net_bytes >> 20)) MiB over ${#vif_namespaces[@]} vifs ($((net_bytes * 8 / 1000000 / (traffic_seconds > 0 ? traffic_seconds : 1))) Mbit/s), $retries iperf3 connection retries"

# --- every frontend and the backend lived through it ---
for i in "${!frontends[@]}"; do
    kill -0 "${frontends[$i]}" 2>/dev/null || fail "${frontend_names[$i]} died during the soak"
done
kill -0 "$backend" 2>/dev/null || fail "the backend died during the soak"

# --- resources: after warm-up, fds and threads flat, RSS within 5% (runs >= 10 min) once
#     the persistent-grant caches are full ---
# Warm-up lasts at least until every disk has finished its first pass: by then each queue's
# persistent grants (up to 1056 mapped pages a queue, counted in RSS) are in use.
first_passes=$(awk '/ pass 1 ok$/ { if ($1 > m) m = $1 } END { print m + 0 }' "$dir"/fio-*.status)
if [ "$first_passes" -gt "$warmup" ]; then
    say "warm-up extended from $warmup s to $first_passes s, when the last disk finished its first pass"
    warmup=$first_passes
fi
read -r count rss_min rss_max fd_min fd_max th_min th_max iowq_max dispatch_max anon_min anon_max shmem_min shmem_max < <(awk -v w="$warmup" '
    $1 >= w { n++; if (n == 1 || $2 < rmin) rmin = $2; if ($2 > rmax) rmax = $2
              if (n == 1 || $3 < fmin) fmin = $3; if ($3 > fmax) fmax = $3
              if (n == 1 || $4 < tmin) tmin = $4; if ($4 > tmax) tmax = $4
              if ($5 > imax) imax = $5; if ($6 > dmax) dmax = $6
              if (n == 1 || $7 < amin) amin = $7; if ($7 > amax) amax = $7
              if (n == 1 || $8 < smin) smin = $8; if ($8 > smax) smax = $8 }
    END { print n + 0, rmin + 0, rmax + 0, fmin + 0, fmax + 0, tmin + 0, tmax + 0, imax + 0, dmax + 0, amin + 0, amax + 0, smin + 0, smax + 0 }' "$dir/samples.txt")
first=$(head -n 1 "$dir/samples.txt")
# The pools' bounds: io-wq, per backend worker (one per core) at most --io-workers (one per
# core) in each of its two pools (bounded and unbounded work); Dispatch, a small multiple of the cores (its overcommit
# pool grows only when work blocks, which the backend's async code must not do for long).
cores=$(nproc)
iowq_bound=$((2 * cores * cores))
dispatch_bound=$((4 * cores + 4))
say "backend samples: $(wc -l < "$dir/samples.txt") (first: t=$(echo "$first" | cut -d' ' -f1) s RSS $(echo "$first" | cut -d' ' -f2) KiB), $count after the $warmup s warm-up"
if [ "$count" -lt 2 ]; then
    fail "only $count backend samples after warm-up: nothing to judge"
else
    spread=$(awk -v a="$rss_min" -v b="$rss_max" 'BEGIN { printf "%.1f", (b - a) * 100 / a }')
    say "backend after warm-up: RSS $rss_min..$rss_max KiB (spread $spread%; heap $anon_min..$anon_max, mapped guest pages $shmem_min..$shmem_max), fds $fd_min..$fd_max, own threads $th_min..$th_max, pools at most $iowq_max io-wq workers (bound $iowq_bound) and $dispatch_max Dispatch threads (bound $dispatch_bound)"
    # A leak lasts: the count at the end is above the count when warm-up ended. A sample
    # may catch a descriptor the backend holds for a moment (CI runs saw 389, once 390,
    # then 389 again; one such 390 was the last sample), so each end is the smallest of
    # its three samples: a leak raises all three, a moment's descriptor one.
    fd_start=$(awk -v w="$warmup" '$1 >= w { print $3 }' "$dir/samples.txt" | head -n 3 | sort -n | head -n 1)
    fd_end=$(awk -v w="$warmup" '$1 >= w { print $3 }' "$dir/samples.txt" | tail -n 3 | sort -n | head -n 1)
    [ "$fd_end" -le "$fd_start" ] || fail "backend fds not flat after warm-up: $fd_start when it ended, $fd_end at the end (least of three samples each; $fd_min..$fd_max)"
    [ $((fd_max - fd_start)) -le 4 ] || fail "backend fds rose by $((fd_max - fd_start)) after warm-up: $fd_min..$fd_max"
    [ "$th_min" -eq "$th_max" ] || fail "backend's own threads not flat after warm-up: $th_min..$th_max"
    [ "$iowq_max" -le "$iowq_bound" ] || fail "backend io-wq workers reached $iowq_max, over the bound $iowq_bound"
    [ "$dispatch_max" -le "$dispatch_bound" ] || fail "backend Dispatch pool threads reached $dispatch_max, over the bound $dispatch_bound"
    if [ "$judge_rss" -eq 1 ]; then
        # RSS is judged once the mapped guest pages stopped growing: each vbd queue's
        # persistent-grant cache (up to 1056 pages) fills as the frontend first uses each
        # grant, minutes under this load, and RSS counts them. From the first sample after
        # warm-up past which they never rise again, at the latest half-way through the run
        # (so pages that keep rising, a leak, are still judged on the second half).
        rss_from=$(awk -v w="$warmup" -v cap=$((minutes * 30)) '$1 >= w { t[n] = $1; s[n] = $8; n++ }
            END { m = -1; for (i = n - 1; i >= 0; i--) { if (s[i] > m) m = s[i]; top[i] = m }
                  from = w; for (i = 0; i < n; i++) if (s[i] >= top[i]) { from = t[i]; break }
                  print (from > cap ? cap : from) }' "$dir/samples.txt")
        read -r rss_min rss_max < <(awk -v f="$rss_from" '$1 >= f { n++; if (n == 1 || $2 < a) a = $2; if ($2 > b) b = $2 } END { print a + 0, b + 0 }' "$dir/samples.txt")
        spread=$(awk -v a="$rss_min" -v b="$rss_max" 'BEGIN { printf "%.1f", (b - a) * 100 / a }')
        say "backend RSS from t=$rss_from s (the mapped guest pages' last rise; at most half-way): $rss_min..$rss_max KiB (spread $spread%)"
        awk -v s="$spread" 'BEGIN { exit !(s <= 5) }' || fail "backend RSS not flat within 5% from t=$rss_from s: $rss_min..$rss_max KiB ($spread%)"
    else
        say "RSS flatness is judged on runs of 10 minutes or more only (this one: $minutes)"
    fi
fi

# --- teardown, checked: every frontend closes, guests go, nothing stays held ---
# What the load must show is judged strictly below on the lines logged before this point.
# Closing 80 frontends at once is judged by what the hypervisor holds afterwards; two things
# it shows today are printed, not failed: a frontend whose 5-s wait for the backend to unmap
# its grants runs out (exit 1, "still mapped by the backend"; the backend unmaps them later,
# which the usage check below proves), and netback rx copies into buffers a netfront has
# already ended (it ends its grants before it writes Closing), counted as rx errors.
# SOAK_STRICT_TEARDOWN=1 fails on them too.
teardown_at=$(date -u +%Y-%m-%dT%H:%M:%S)
teardown_start=$SECONDS
late_unmaps=0
for pid in "${frontends[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
for i in "${!frontends[@]}"; do
    status=0
    wait "${frontends[$i]}" || status=$?
    [ "$status" -eq 0 ] && continue
    log=$dir/$(echo "${frontend_names[$i]}" | awk '{ print $1 == "blkfront" ? "blkfront-" $2 : "netfront-" $2 "-v" $4 }').log
    if [ "$status" -eq 1 ] && grep -q 'granted page sets were still mapped at close' "$log" \
        && [ -z "${SOAK_STRICT_TEARDOWN:-}" ]; then
        late_unmaps=$((late_unmaps + 1))
    else
        fail "${frontend_names[$i]} exited $status on SIGTERM: $(tail -n 1 "$log")"
    fi
done
say "frontends closed in $((SECONDS - teardown_start)) s; $late_unmaps of ${#frontends[@]} gave up waiting 5 s for the backend to unmap their grants (teardown finding, see above)"
for g in $(seq 1 "$guests"); do
    ip netns exec "$dom0ns" "$xensplit" domain destroy --state-dir "$dir" "g$g" >"$dir/destroy-g$g.log" 2>&1 \
        || fail "destroying g$g: $(tail -n 2 "$dir/destroy-g$g.log")"
done
# The backend lets a queue go when its guest does; wait for each queue's statistics line.
blk_queues=$((guests * disks_per_guest))
queues_logged() { [ "$(grep -c 'blkback: queue statistics' "$dir/backend.log")" -ge "$1" ]; }
wait_for 120 "a queue statistics line for each of the $blk_queues disks" queues_logged "$blk_queues" \
    || fail "the backend logged $(grep -c 'blkback: queue statistics' "$dir/backend.log") of $blk_queues disk queue statistics"
usage_after=$(x domain list --usage | awk '$2 == "Domain-0"')
# Domain-0's connections, ports, grants, mappings and copy-buffer pages as before the
# guests came: nothing the load took is still held.
say "dom0 in the hypervisor (connections ports granted pinned mappings copy-pages): before $(echo "$usage_before" | cut -f3-8 | tr '\t' ' '), after $(echo "$usage_after" | cut -f3-8 | tr '\t' ' ')"
[ "$(echo "$usage_after" | cut -f3-8)" = "$(echo "$usage_before" | cut -f3-8)" ] \
    || fail "dom0 holds other resources after teardown than before the guests: before '$usage_before', after '$usage_after'"
kill -TERM "$backend"
status=0
wait "$backend" || status=$?
[ "$status" -eq 0 ] || fail "the backend exited $status on SIGTERM"

blk_errors=$(grep 'blkback: queue statistics' "$dir/backend.log" | grep -o 'errors=[0-9]*' | cut -d= -f2 | awk '{ s += $1 } END { print s + 0 }')
net_stats=$(grep 'netback queue statistics' "$dir/backend.log" \
    | sed -n 's/.*tx \([0-9]*\) packets [0-9]* bytes \([0-9]*\) dropped \([0-9]*\) errors, rx \([0-9]*\) packets [0-9]* bytes \([0-9]*\) dropped \([0-9]*\) errors.*/\1 \2 \3 \4 \5 \6/p' \
    | awk '{ for (i = 1; i <= 6; i++) s[i] += $i; n++ } END { printf "%d %d %d %d %d %d %d", n, s[1], s[2], s[3], s[4], s[5], s[6] }')
read -r net_queues tx_packets tx_dropped tx_errors rx_packets rx_dropped rx_errors <<<"$net_stats"
say "blkback: $(grep -c 'blkback: queue statistics' "$dir/backend.log") queues, errors $blk_errors; netback: $net_queues queues, tx $tx_packets packets ($tx_dropped dropped, $tx_errors errors), rx $rx_packets packets ($rx_dropped dropped, $rx_errors errors)"
[ "$blk_errors" -eq 0 ] || fail "blkback answered $blk_errors requests with errors"
[ "$tx_errors" -eq 0 ] || fail "netback counted $tx_errors tx errors"
# Each failed rx copy is logged (rate-limited) as a warning: none may come before teardown.
load_rx_failures=$(awk -v t="$teardown_at" 'substr($1, 1, 19) < t && /netback rx grant copy failed/' "$dir/backend.log" | wc -l)
[ "$load_rx_failures" -eq 0 ] || fail "netback rx grant copies failed $load_rx_failures times during the load"
if [ "$rx_errors" -gt 0 ]; then
    if [ -n "${SOAK_STRICT_TEARDOWN:-}" ]; then
        fail "netback counted $rx_errors rx errors, all at teardown"
    else
        say "netback's $rx_errors rx errors all came at teardown (copies into buffers netfronts had ended; teardown finding)"
    fi
fi
[ "$net_queues" -ge 1 ] || fail "no netback queue statistics in the backend's log"

# Any error line from our processes (swift-log: 'TIME LEVEL LABEL : ...'); at teardown, all
# but the frontends' give-up line on the backend's late unmaps (counted above).
logs=("$dir"/backend.log "$dir"/hypervisor.log "$dir"/blkfront-*.log "$dir"/netfront-*.log)
errors=$(grep -hE '^[^ ]+ (error|critical) ' "${logs[@]}" \
    | awk -v t="$teardown_at" -v strict="${SOAK_STRICT_TEARDOWN:-}" \
        'substr($1, 1, 19) < t || strict != "" || !/granted page sets still mapped by the backend after/' || true)
[ -z "$errors" ] || fail "error lines in the logs: $(echo "$errors" | head -n 5)"
warnings=$(cat "$dir"/backend.log "$dir"/blkfront-*.log "$dir"/netfront-*.log | grep -cE '^[^ ]+ warning ' || true)
say "warning lines in the backend's and frontends' logs: $warnings"

if [ ${#failures[@]} -gt 0 ]; then
    echo "soak: FAILED, ${#failures[@]} violation(s):" >&2
    printf '  %s\n' "${failures[@]}" >&2
    exit 1
fi
say "passed"
