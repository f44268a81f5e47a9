#!/bin/sh
# dom0's init for scripts/realxen/run-test.sh, run from the payload disk mounted at
# /realxen (dom0-boot.sh execs it as PID 1). It starts the Xen toolstack daemons, runs the
# steps and powers the machine off. Everything the host judges is a line on the console:
#   REALXEN-MARK <event> uptime=<s> [...]     progress; the host times the phases by them
#   REALXEN-SELFTEST <line>                    xensplit selftest's own output, as it comes
#   REALXEN-SWIFTTEST <line>                   the real-Xen Swift suite's output, as it comes
#   REALXEN-RESULT <step> PASS|FAIL|SKIP <why> one line per step
#   REALXEN-LOG-BEGIN <name> ... REALXEN-LOG-END <name>   logs the host prints on failure
# Each marker starts its line; the host counts no other (scripts/realxen/console.sh).
# Kernel cmdline knobs: realxen.requests=N (ring step), realxen.domu=0 (no domU steps),
# realxen.blkback=OPTS (extra `xensplit blkback` options, "+" for spaces),
# realxen.steps=LIST (step groups), realxen.bench=N (benchmark rounds).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/xen-4.17/bin
P=/realxen

up() { cut -d' ' -f1 /proc/uptime; }
mark() { echo "REALXEN-MARK $1 uptime=$(up)${2:+ $2}"; }
result() { step=$1; verdict=$2; shift 2; echo "REALXEN-RESULT $step $verdict $*"; }
log_section() {
    echo "REALXEN-LOG-BEGIN $1"
    if [ -f "$2" ]; then tail -n "${3:-60}" "$2" | tr -d '\r'; else echo "($2 does not exist)"; fi
    echo "REALXEN-LOG-END $1"
}
cmdline_value() { sed -n "s/.*realxen\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
# realxen.steps=boot+vbd+bench+frontend+net+netfront+restart+netbench (the default;
# conformance only when named) picks the step groups to run.
steps=$(cmdline_value steps | tr '+' ',')
steps=${steps:-boot,vbd,bench,frontend,net,netfront,restart,netbench}
[ "$(cmdline_value domu)" = 0 ] && steps=$(echo ",$steps," | sed 's/,boot,/,/; s/,vbd,/,/; s/,bench,/,/; s/,net,/,/; s/,netbench,/,/; s/,restart,/,/')
has_step() { case ",$steps," in *",$1,"*) return 0 ;; esac; return 1; }
# realxen.blkback=--a=1+--b=2 adds options to every `xensplit blkback` ("+" for spaces).
extra_args=$(cmdline_value blkback | tr '+' ' ')
power_off() {
    mark tests-done
    sync
    umount $P 2>/dev/null
    # sysrq 'o' powers off at once; no userspace shutdown to wait for.
    echo o > /proc/sysrq-trigger
    sleep 10
    poweroff -f
}

mark init
# Only errors reach the console from here on, so kernel chatter does not split our lines.
echo 4 > /proc/sys/kernel/printk
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/xen /run/xenstored /run/lock /var/log/xen/console /var/lib/xen

# --- Xen devices and daemons. No udev: it would load xen-blkback/netback, which would
# take the domU's devices away from a userspace backend.
setup_ok=1
for m in xenfs xen-evtchn xen-gntdev xen-gntalloc xen-privcmd; do
    modprobe $m || { echo "modprobe $m failed"; setup_ok=0; }
done
# gntalloc lets all of dom0 share 1024 pages by default; `xensplit blkfront` grants every
# request slot's pages up front (32 slots of 32 data pages and an indirect page against
# Linux's blkback), which is past it.
echo 65536 > /sys/module/xen_gntalloc/parameters/limit || setup_ok=0
mount -t xenfs xenfs /proc/xen || setup_ok=0
xenstored --pid-file=/run/xenstored.pid > /tmp/xenstored.out 2>&1 || setup_ok=0
xen-init-dom0 > /tmp/xen-init-dom0.log 2>&1 || setup_ok=0
xenconsoled --pid-file=/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console || setup_ok=0
domid=$(xenstore-read /local/domain/0/domid 2>/dev/null)
if [ $setup_ok = 1 ] && [ "$domid" = 0 ]; then
    result setup PASS "xenfs, evtchn, gntdev, gntalloc, privcmd loaded; xenstored, xenconsoled up; domid $domid"
else
    result setup FAIL "module load, xenfs mount or a daemon failed (xenstore domid '$domid')"
    ls -l /dev/xen
    log_section xen-init-dom0 /tmp/xen-init-dom0.log
    power_off
fi
mark ready "$(xl info 2>/dev/null | sed -n 's/^xen_version *: */xen=/p') $(uname -r)"

# --- Step 1: xensplit against real Xen inside dom0 (grants to itself, grant copy, event
# channel to itself, a ring between two threads).
requests=$(cmdline_value requests)
mark selftest-begin
{
    timeout -k 10 600 $P/xensplit selftest --platform xen ${requests:+--requests $requests} 2>&1
    echo $? > /tmp/selftest.rc
} | tee /tmp/selftest.log | sed -u 's/^/REALXEN-SELFTEST /'
mark selftest-end "rc=$(cat /tmp/selftest.rc)"

# --- Step 1b: the real-Xen Swift suite (Tests/XenLinuxTests/RealXenSelfTests.swift) from
# the test bundle run-test.sh built, with the Swift libraries it links beside it. The host
# counts its tests against the source and fails the run unless all of them passed here.
mark swifttests-begin
{
    cd /tmp && NO_COLOR=1 LD_LIBRARY_PATH=$P/swift-tests/lib timeout -k 10 600 $P/swift-tests/XenSplitPackageTests.xctest \
        --testing-library swift-testing --filter RealXenSelfTests 2>&1
    echo $? > /tmp/swifttests.rc
} | tee /tmp/swifttests.log | sed -u 's/^/REALXEN-SWIFTTEST /'
mark swifttests-end "rc=$(cat /tmp/swifttests.rc)"

# --- Step 2: a PV domU boots from the blkfront/netfront initramfs (no devices), which is
# what the block backend steps will run in.
if ! has_step boot; then
    result domu-boot SKIP "not in realxen.steps ($steps)"
else
    mark domu-begin
    if grep -qE '^xen_(blk|net)back ' /proc/modules; then
        result domu-boot FAIL "a kernel xen-blkback or xen-netback is loaded in dom0"
    elif ! timeout -k 10 120 xl create $P/domu-boot.cfg > /tmp/xl-create.log 2>&1; then
        result domu-boot FAIL "xl create failed (see xl-create log)"
    else
        console=/var/log/xen/console/guest-realxen-boot.log
        i=0
        while [ $i -lt 240 ] && ! grep -q "DOMU-MARK ready" $console 2>/dev/null; do
            sleep 0.5; i=$((i + 1))
        done
        if grep -q "DOMU-MARK ready" $console; then
            result domu-boot PASS "$(grep -a -o 'DOMU-MARK ready.*' $console | tr -d '\r' | head -1)"
        else
            result domu-boot FAIL "no 'DOMU-MARK ready' on the domU console within 120 s"
        fi
        timeout -k 10 60 xl destroy realxen-boot > /tmp/xl-destroy.log 2>&1 \
            || echo "xl destroy failed: $(cat /tmp/xl-destroy.log)"
        log_section domu-console $console 40
    fi
    log_section xl-create /tmp/xl-create.log 30
    mark domu-end
fi

# --- The vbd steps: `xensplit blkback` serves a PV domU's three disks (route B:
# backendtype=phy and a no-op hotplug script, so xl writes backend/vbd/<domid>/<devid> and
# waits for the backend; no kernel blkback is loaded). xvda (51712) is disk.img, writable;
# xvdb (51728) is disk-ro.img, read-only; xvdc (51744) is disk-fs.img, for discard and ext4.
console_line() { grep -a -o "DOMU-MARK $1.*" "$2" 2>/dev/null | tr -d '\r' | head -1; }
field() { echo "$2" | sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
# Waits up to $3 half-seconds for a console line; stops early when blkfront gave a disk up
# ("disabled for further use": the domU's reads then never return).
wait_console() {
    i=0
    while [ $i -lt "$3" ] && ! grep -q "$1\|disabled for further use" "$2" 2>/dev/null; do
        sleep 0.5; i=$((i + 1))
    done
}
# The image the domU should leave behind: disk.img with the three patterns domu-init.sh writes.
expected_image() {
    cp $P/disk.img /tmp/expected.img
    yes XENSPLIT-REALXEN-PATTERN-A | head -c 4096 > /tmp/pa
    yes XENSPLIT-REALXEN-PATTERN-B | head -c 4096 > /tmp/pb
    yes XENSPLIT-REALXEN-PATTERN-C | head -c 512 > /tmp/pc
    last=$(( $(stat -c %s $P/disk.img) / 4096 - 1 ))
    dd if=/tmp/pa of=/tmp/expected.img bs=4096 seek=1 conv=notrunc status=none
    dd if=/tmp/pb of=/tmp/expected.img bs=4096 seek=$last conv=notrunc status=none
    dd if=/tmp/pc of=/tmp/expected.img bs=512 seek=12345 conv=notrunc status=none
}
# What the backend process holds: grant mappings (gntdev in its maps) and its gntdev and
# evtchn file descriptors (one evtchn fd per event channel).
# Starts `xensplit blkback --platform xen $extra_args` with the options after $1, logging
# to $1, as backend_pid (a child of this shell), and waits up to 30 s for its
# "vbd backend: serving" line (XenDevice's backend daemon logs it once it watches).
serving="vbd backend: serving"
start_backend() {
    log=$1
    shift
    $P/xensplit blkback --platform xen $extra_args "$@" > $log 2>&1 &
    backend_pid=$!
    i=0
    while [ $i -lt 120 ] && ! grep -q "$serving" $log && kill -0 $backend_pid 2>/dev/null; do
        sleep 0.25; i=$((i + 1))
    done
}
holdings() {
    echo "gntdev-maps=$(grep -c /dev/xen/gntdev /proc/$1/maps 2>/dev/null)" \
         "evtchn-fds=$(ls -l /proc/$1/fd 2>/dev/null | grep -c /dev/xen/evtchn)" \
         "gntdev-fds=$(ls -l /proc/$1/fd 2>/dev/null | grep -c /dev/xen/gntdev)" \
         "fds=$(ls /proc/$1/fd 2>/dev/null | wc -l)"
}
# Take-up (issue 8, item 5): for xvda, what the backend offered (its keys), what Linux's
# blkfront took (its keys, the domU's sysfs and its blkfront line) and what the backend
# logged on connect. The host checks each against Protocols/realxen-takeup.tsv.
# The backend's per-queue statistics (logged when a queue is removed), summed over a
# device's queues: queue_stat DEVICE-PATH NAME.
queue_stat() {
    grep "blkback: queue statistics" /tmp/blkback.log | grep "queue=$1[/ ]" \
        | sed -n "s/.* $2=\([0-9]*\).*/\1/p" | awk '{ n += $1 } END { print n + 0 }'
}
takeup_report() {
    tb=$1 tf=$2 tl=$3
    # Keys saved before xl destroy: backend ($tb) and frontend ($tf).
    bk() { v=$(sed -n "s/^$1 //p" "$tb"); [ "$v" = absent ] || [ -z "$v" ] && v=${2:-absent}; echo "$v"; }
    fk() { v=$(sed -n "s/^$1 //p" "$tf"); [ "$v" = absent ] || [ -z "$v" ] && v=${2:-absent}; echo "$v"; }
    connected=$(grep "blkback: connected" /tmp/blkback.log | grep "device=$5 " | tail -n 1)
    log_queues=$(echo "$connected" | sed -n 's/.*queues=\([0-9]*\).*/\1/p')
    log_pages=$(echo "$connected" | sed -n 's/.*ring-pages=\([0-9]*\).*/\1/p')
    yn() { [ "$1" = enabled ] && echo 1 || echo 0; }
    # The frontend's key counts only when the domU's queues and the backend's log agree.
    queues=$(fk multi-queue-num-queues 1)
    [ "$queues" = "$(field queues "$tl")" ] && [ "$queues" = "$log_queues" ] || queues="disagree"
    echo "REALXEN-TAKEUP queues offered=$(bk multi-queue-max-queues 1) taken=$queues frontend-key=$(fk multi-queue-num-queues) domu-mq=$(field queues "$tl") backend-log=${log_queues:-none}"
    order=$(fk ring-page-order 0)
    [ "$((1 << order))" = "$log_pages" ] 2>/dev/null || order="disagree"
    echo "REALXEN-TAKEUP ring-page-order offered=$(bk max-ring-page-order 0) taken=$order frontend-key=$(fk ring-page-order) backend-log-pages=${log_pages:-none}"
    echo "REALXEN-TAKEUP persistent offered=$(bk feature-persistent 0) taken=$(yn "$(field persistent "$tl")") frontend-key=$(fk feature-persistent) domu=$(field persistent "$tl")"
    # Indirect, flush, barrier and discard as blkfront set its queue up, and whether the
    # backend's own counters saw such requests (the workload issues all but barriers; the
    # discards go to xvdc, $4). A limit the counters contradict counts as "disagree".
    indirect=0
    [ "$(field indirect "$tl")" = enabled ] && indirect=$(field max_segments "$tl")
    n_indirect=$(queue_stat $5 indirect)
    { [ "$indirect" = 0 ] && [ "$n_indirect" = 0 ]; } || { [ "$indirect" != 0 ] && [ "$n_indirect" -gt 0 ]; } || indirect=disagree
    echo "REALXEN-TAKEUP indirect-segments offered=$(bk feature-max-indirect-segments 0) taken=$indirect domu=$(field indirect "$tl") max_segments=$(field max_segments "$tl") backend-indirect-requests=$n_indirect"
    flush=0
    [ "$(field flush "$tl")" = enabled ] && [ "$(field write_cache "$tl")" = write-back ] && flush=1
    n_flush=$(queue_stat $5 flushes)
    { [ $flush = 0 ] && [ "$n_flush" = 0 ]; } || { [ $flush = 1 ] && [ "$n_flush" -gt 0 ]; } || flush=disagree
    echo "REALXEN-TAKEUP flush-cache offered=$(bk feature-flush-cache 0) taken=$flush domu=$(field flush "$tl") write_cache=$(field write_cache "$tl") backend-flush-requests=$n_flush"
    fua=$(field fua "$tl")
    n_barrier=$(queue_stat $5 barriers)
    [ "$fua" = 1 ] || [ "$n_barrier" = 0 ] || fua=disagree
    echo "REALXEN-TAKEUP barrier-fua offered=$(bk feature-barrier 0) taken=$fua fua=$(field fua "$tl") backend-barrier-requests=$n_barrier"
    discard=0
    [ "$(field discard_max_bytes "$tl")" -gt 0 ] 2>/dev/null && discard=1
    n_discard=$(queue_stat $4 discards)
    [ $discard = 0 ] || [ "$n_discard" -gt 0 ] || discard=disagree
    echo "REALXEN-TAKEUP discard offered=$(bk feature-discard 0) taken=$discard discard_max_bytes=$(field discard_max_bytes "$tl") backend-discard-requests-xvdc=$n_discard"
    echo "REALXEN-TAKEUP discard-granularity offered=$(bk discard-granularity none) taken=$(field discard_granularity "$tl")"
}
vbd_steps() {
    blog=/tmp/blkback.log
    vconsole=/var/log/xen/console/guest-realxen-vbd.log
    image_sha=$(sha $P/disk.img)
    ro_sha=$(sha $P/disk-ro.img)
    fs_kib_before=$(du -k $P/disk-fs.img | cut -f1)
    expected_image
    expected_sha=$(sha /tmp/expected.img)
    echo "REALXEN-VBD disk.img sha256=$image_sha expected-after-writes=$expected_sha disk-ro.img sha256=$ro_sha disk-fs.img ${fs_kib_before} KiB allocated"
    echo "REALXEN-VBD backend: xensplit blkback --platform xen --verbose $extra_args"
    start_backend $blog --verbose
    bpid=$backend_pid
    if ! grep -q "$serving" $blog; then
        for s in vbd-handshake vbd-io vbd-readonly vbd-discard vbd-ext4 vbd-takeup vbd-teardown vbd-release vbd-second; do
            result $s FAIL "xensplit blkback did not start (see blkback log)"
        done
        return
    fi
    held_idle=$(holdings $bpid)
    mark vbd-backend-up "pid=$bpid $held_idle"
    timeout -k 10 120 xl create $P/domu-vbd.cfg > /tmp/xl-create-vbd.log 2>&1; create_rc=$?
    vdomid=$(xl domid realxen-vbd 2>/dev/null)
    mark vbd-domu-created "domid=${vdomid:-none}"
    [ -n "$vdomid" ] && wait_console "DOMU-MARK vbd-done" $vconsole 600
    # The other disks run their checks beside a disabled one: give them a moment to report.
    grep -q "DOMU-MARK vbd-done" $vconsole 2>/dev/null || sleep 10
    held_connected=$(holdings $bpid)
    mark vbd-domu-done "$held_connected"
    xenstore-ls -fp /local/domain/0/backend/vbd > /tmp/xs-backend.txt 2>&1
    xenstore-ls -fp /local/domain/${vdomid:-none}/device/vbd > /tmp/xs-frontend.txt 2>&1
    b=/local/domain/0/backend/vbd/$vdomid
    f=/local/domain/$vdomid/device/vbd
    states=
    for d in xvda:51712 xvdb:51728 xvdc:51744; do
        states="$states ${d%:*} backend=$(xenstore-read $b/${d#*:}/state 2>&1) frontend=$(xenstore-read $f/${d#*:}/state 2>&1)"
    done
    states=${states# }
    xvda=$(console_line xvda $vconsole)
    echo "REALXEN-VBD states: $states"
    echo "REALXEN-VBD console: $(console_line up $vconsole)"
    echo "REALXEN-VBD console: $xvda"
    if [ $create_rc = 0 ] && [ "$states" = "xvda backend=4 frontend=4 xvdb backend=4 frontend=4 xvdc backend=4 frontend=4" ] \
            && [ "$(field sectors "$xvda")" = 32768 ] && [ "$(field signature "$xvda")" = XENSPLIT-REALXEN-DISK ]; then
        result vbd-handshake PASS "three disks Connected (4/4) through xensplit blkback; domU sees xvda: $xvda"
    else
        result vbd-handshake FAIL "xl create rc=$create_rc (xl waits 10 s for InitWait); states: $states; domU: ${xvda:-no xvda line}"
    fi

    read_line=$(console_line vbd-read $vconsole)
    write_line=$(console_line vbd-write $vconsole)
    written_line=$(console_line vbd-written $vconsole)
    xvdb=$(console_line xvdb $vconsole)
    discard_line=$(console_line discard $vconsole)
    fs_line=$(console_line "fs " $vconsole)
    takeup_a=$(console_line takeup-xvda $vconsole)
    for l in "$read_line" "$write_line" "$written_line" "$xvdb" "$discard_line" "$fs_line" "$takeup_a" \
            "$(console_line takeup-xvdb $vconsole)" "$(console_line takeup-xvdc $vconsole)"; do
        echo "REALXEN-VBD console: $l"
    done
    # The backend's keys and the frontend's, before xl destroy removes them.
    for k in multi-queue-max-queues max-ring-page-order feature-persistent feature-max-indirect-segments \
            feature-flush-cache feature-barrier feature-discard discard-granularity; do
        echo "$k $(xenstore-read $b/51712/$k 2>/dev/null || echo absent)"
    done > /tmp/takeup-backend-keys
    for k in multi-queue-num-queues ring-page-order feature-persistent; do
        echo "$k $(xenstore-read $f/51712/$k 2>/dev/null || echo absent)"
    done > /tmp/takeup-frontend-keys

    mark vbd-destroy-begin
    if [ -n "$vdomid" ]; then
        timeout -k 10 60 xl destroy realxen-vbd > /tmp/xl-destroy-vbd.log 2>&1; destroy_rc=$?
    else
        destroy_rc=none
    fi
    mark vbd-destroy-end "rc=$destroy_rc"
    # The backend node goes once xl saw Closed (or gave up); the driver logs its own walk.
    i=0
    while [ $i -lt 40 ] && xenstore-read $b/51712/state > /dev/null 2>&1; do sleep 0.25; i=$((i + 1)); done
    # Queues are released after the driver's walk to Closed; let the log catch up.
    i=0
    while [ $i -lt 40 ] && [ "$(grep -c 'blkback: device released' $blog)" -lt 3 ]; do sleep 0.25; i=$((i + 1)); done
    held_after=$(holdings $bpid)
    takeup_report /tmp/takeup-backend-keys /tmp/takeup-frontend-keys "$takeup_a" $b/51744 $b/51712 > /tmp/takeup.txt
    cat /tmp/takeup.txt
    if [ -n "$takeup_a" ] && grep "device=$b/51712 " $blog | grep -q "blkback: connected" \
            && grep "queue=$b/51712" $blog | grep -q "blkback: queue statistics"; then
        result vbd-takeup PASS "recorded (the host checks the REALXEN-TAKEUP lines against Protocols/realxen-takeup.tsv)"
    else
        result vbd-takeup FAIL "no takeup-xvda line from the domU, or no 'blkback: connected' or 'queue statistics' for $b/51712 in the backend log"
    fi
    file_sha=$(sha $P/disk.img)
    ro_after=$(sha $P/disk-ro.img)
    fs_kib_after=$(du -k $P/disk-fs.img | cut -f1)
    dom0_fsck=$(e2fsck -f -n $P/disk-fs.img 2>&1 | tail -n 1)
    dom0_fsck_rc=$(e2fsck -f -n $P/disk-fs.img > /dev/null 2>&1; echo $?)

    kernel_errors=$(grep -a 'xvd[a-z]: .*\(wrong\|disabled for\|error\)' $vconsole | grep -v 'flush diskcache' \
        | tr -d '\r' | sed 's/^\[[ 0-9.]*\] //' | head -3 | paste -sd';' -)
    echo "REALXEN-VBD domU kernel: ${kernel_errors:-no block errors}"
    io_why="${kernel_errors:+domU kernel: $kernel_errors; }domU read sha256 $(field sha256 "$read_line") (image $image_sha); $(echo "$write_line" | sed 's/DOMU-MARK vbd-write //'); domU after writes $(field sha256 "$written_line"), disk.img after destroy $file_sha (expected $expected_sha)"
    if [ "$(field sha256 "$read_line")" = "$image_sha" ] && [ "$(field write-errors "$write_line")" = 0 ] \
            && [ "$(field readback "$write_line")" = ok ] && [ "$(field sha256 "$written_line")" = "$expected_sha" ] \
            && [ "$file_sha" = "$expected_sha" ]; then
        result vbd-io PASS "$io_why"
    else
        result vbd-io FAIL "$io_why"
    fi
    ro_why="domU: ${xvdb:-no xvdb line}; disk-ro.img $ro_sha before, $ro_after after"
    if [ "$(field ro "$xvdb")" = 1 ] && [ "$(field write "$xvdb")" = refused ] && [ "$(field sha256 "$xvdb")" = "$ro_sha" ] \
            && [ "$(field sectors "$xvdb")" = 8192 ] && [ "$ro_after" = "$ro_sha" ]; then
        result vbd-readonly PASS "$ro_why"
    else
        result vbd-readonly FAIL "$ro_why"
    fi
    discard_why="domU: ${discard_line:-no discard line}; disk-fs.img ${fs_kib_before} KiB allocated before, ${fs_kib_after} KiB after (mkfs discards too)"
    if [ "$(field result "$discard_line")" = ok ] && [ "$(field readback "$discard_line")" = ok ] \
            && [ "$fs_kib_after" -lt "$fs_kib_before" ]; then
        result vbd-discard PASS "$discard_why"
    else
        result vbd-discard FAIL "$discard_why"
    fi
    fs_why="domU: ${fs_line:-no fs line}; dom0 e2fsck -fn disk-fs.img after destroy: rc=$dom0_fsck_rc ($dom0_fsck)"
    if [ "$(field mount "$fs_line")" = ok ] && [ "$(field fsck-rc "$fs_line")" = 0 ] && [ "$(field problems "$fs_line")" = none ] \
            && [ "$dom0_fsck_rc" = 0 ]; then
        result vbd-ext4 PASS "$fs_why"
    else
        result vbd-ext4 FAIL "$fs_why"
    fi

    closed=$(grep -c -i "xenbus state .* -> Closed" $blog)
    node_left=$(xenstore-ls -f $b 2>/dev/null | wc -l)
    if kill -0 $bpid 2>/dev/null; then alive=yes; else alive=no; fi
    td_why="xl destroy rc=$destroy_rc; backend logged $closed transition(s) to Closed; $node_left key(s) left under $b; backend running after destroy: $alive"
    if [ "$destroy_rc" = 0 ] && [ "$closed" -ge 3 ] && [ "$node_left" = 0 ] && [ $alive = yes ] \
            && ! grep -qi "timed out\|timeout" /tmp/xl-destroy-vbd.log; then
        result vbd-teardown PASS "$td_why"
    else
        result vbd-teardown FAIL "$td_why"
    fi
    # Item 7: after xl destroy the backend holds what it held before the domU existed.
    rel_why="backend before the domU: $held_idle; connected: $held_connected; after xl destroy: $held_after"
    if [ $alive = yes ] && [ "$held_after" = "$held_idle" ] && [ "$held_connected" != "$held_idle" ]; then
        result vbd-release PASS "$rel_why"
    else
        result vbd-release FAIL "$rel_why"
    fi

    # ... and serves a second domU created afterwards: it reads all of xvda, which must be
    # what the first domU left.
    mark vbd-second-begin
    sconsole=/var/log/xen/console/guest-realxen-vbd2.log
    timeout -k 10 120 xl create $P/domu-vbd.cfg 'name="realxen-vbd2"' 'extra="console=hvc0 rdinit=/init realxen.role=check"' \
        > /tmp/xl-create-vbd2.log 2>&1; create2_rc=$?
    sdomid=$(xl domid realxen-vbd2 2>/dev/null)
    [ -n "$sdomid" ] && wait_console "DOMU-MARK check-done" $sconsole 300
    held_second=$(holdings $bpid)
    check_line=$(console_line check-read $sconsole)
    echo "REALXEN-VBD console (second domU): ${check_line:-no check-read line}"
    [ -n "$sdomid" ] && timeout -k 10 60 xl destroy realxen-vbd2 > /tmp/xl-destroy-vbd2.log 2>&1; destroy2_rc=$?
    i=0
    while [ $i -lt 40 ] && xenstore-read /local/domain/0/backend/vbd/$sdomid/51712/state > /dev/null 2>&1; do sleep 0.25; i=$((i + 1)); done
    i=0
    while [ $i -lt 40 ] && [ "$(grep -c 'blkback: device released' $blog)" -lt 6 ]; do sleep 0.25; i=$((i + 1)); done
    held_after2=$(holdings $bpid)
    mark vbd-second-end "rc=$destroy2_rc"
    if kill -0 $bpid 2>/dev/null; then alive2=yes; else alive2=no; fi
    kill -TERM $bpid 2>/dev/null
    wait $bpid; stop_rc=$?
    second_why="xl create rc=$create2_rc domid ${sdomid:-none}; domU read sha256 $(field sha256 "$check_line") (expected $expected_sha); connected: $held_second; after xl destroy rc=$destroy2_rc: $held_after2; running: $alive2; after SIGTERM it exited $stop_rc"
    if [ "$create2_rc" = 0 ] && [ "$(field sha256 "$check_line")" = "$expected_sha" ] && [ "$destroy2_rc" = 0 ] \
            && [ "$held_after2" = "$held_idle" ] && [ $alive2 = yes ] && [ $stop_rc = 0 ]; then
        result vbd-second PASS "$second_why"
    else
        result vbd-second FAIL "$second_why"
    fi
}
# vbd-4k: Linux's blkfront on a disk of 4096-byte sectors, a loop device (losetup
# --sector-size 4096) over a zeroed 16 MiB file, marked direct-io-safe, served by a fresh
# backend to a domU (realxen.role=sector4k) that reports the size and block size it sees
# and writes a 1 MiB pattern at 12 MiB; dom0 finds the pattern in the file.
vbd_4k_step() {
    blog4k=/tmp/blkback-4k.log
    kconsole=/var/log/xen/console/guest-realxen-vbd4k.log
    modprobe loop 2>/dev/null
    head -c 16M /dev/zero > /tmp/vbd4k.img
    if ! loop4k=$(losetup --find --show --sector-size 4096 /tmp/vbd4k.img 2>/tmp/losetup.err); then
        result vbd-4k FAIL "losetup --sector-size 4096: $(cat /tmp/losetup.err)"
        return
    fi
    start_backend $blog4k --verbose
    kpid=$backend_pid
    timeout -k 10 120 xl create $P/domu-vbd.cfg 'name="realxen-vbd4k"' 'extra="console=hvc0 rdinit=/init realxen.role=sector4k"' \
        "disk=[\"format=raw,vdev=xvda,access=rw,backendtype=phy,script=/realxen/hotplug-noop.sh,direct-io-safe,target=$loop4k\"]" \
        > /tmp/xl-create-vbd4k.log 2>&1; create_rc=$?
    xl domid realxen-vbd4k > /dev/null 2>&1 && wait_console "DOMU-MARK sector4k-done" $kconsole 300
    line=$(console_line "sector4k " $kconsole)
    opened=$(grep -o "direct-io=[a-z]* .*sector-size=[0-9]*" $blog4k | head -n 1)
    timeout -k 10 60 xl destroy realxen-vbd4k > /tmp/xl-destroy-vbd4k.log 2>&1; destroy_rc=$?
    kill -TERM $kpid 2>/dev/null
    wait $kpid; stop_rc=$?
    file_sha=$(dd if=/tmp/vbd4k.img bs=1M skip=12 count=1 status=none | sha256sum | cut -d' ' -f1)
    losetup -d $loop4k
    why="xl create rc=$create_rc; domU: ${line:-no sector4k line}; backend: ${opened:-no backing store line}; the file's 1 MiB at 12 MiB $file_sha; xl destroy rc=$destroy_rc; backend exited $stop_rc"
    if [ "$create_rc" = 0 ] && [ "$(field lbs "$line")" = 4096 ] && [ "$(field sectors "$line")" = 32768 ] \
            && [ "$(field write "$line")" = ok ] && [ "$(field readback "$line")" = ok ] \
            && [ "$file_sha" = "$(field pattern "$line")" ] && echo "$opened" | grep -q "direct-io=on .*sector-size=4096" \
            && [ "$destroy_rc" = 0 ] && [ "$stop_rc" = 0 ]; then
        result vbd-4k PASS "$why"
    else
        result vbd-4k FAIL "$why"
        log_section blkback-4k $blog4k 30
        log_section console-vbd4k $kconsole 30
    fi
}
vbd_step_names="vbd-handshake vbd-io vbd-readonly vbd-discard vbd-ext4 vbd-takeup vbd-teardown vbd-release vbd-second vbd-4k"
if ! has_step vbd; then
    for s in $vbd_step_names; do result $s SKIP "not in realxen.steps ($steps)"; done
else
    mark vbd-begin
    vbd_steps
    mark vbd-4k-begin
    vbd_4k_step
    mark vbd-end
    log_section blkback /tmp/blkback.log 200
    log_section xenstore-backend /tmp/xs-backend.txt 120
    log_section xenstore-frontend /tmp/xs-frontend.txt 120
    log_section domu-vbd-console /var/log/xen/console/guest-realxen-vbd.log 80
    log_section domu-vbd2-console /var/log/xen/console/guest-realxen-vbd2.log 40
    log_section xl-create-vbd /tmp/xl-create-vbd.log 40
    log_section xl-destroy-vbd /tmp/xl-destroy-vbd.log 40
    log_section xl-create-vbd2 /tmp/xl-create-vbd2.log 40
    log_section hotplug-noop /run/hotplug-noop.log 20
fi

# --- Benchmark (item 8): the bench domU's dd workload on dom0's ramdisk /dev/ram0, served
# in alternating rounds by Linux's xen-blkback (the reference) and by `xensplit blkback`.
# Each round is one domU; the host turns the REALXEN-BENCH lines into bench lines.
bench_round() {
    side=$1 round=$2
    name=realxen-bench-$side-$round
    bconsole=/var/log/xen/console/guest-$name.log
    if [ $side = kernel ]; then
        modprobe xen-blkback || { echo "REALXEN-BENCH-ERROR $side $round modprobe xen-blkback failed"; return 1; }
        disk='disk=["format=raw,vdev=xvda,access=rw,target=/dev/ram0"]'
    else
        # ours-copy: the same backend with persistent grants off (a grant copy per request).
        # The disk is direct-io-safe, so ours bypasses dom0's page cache as xen-blkback does.
        copy_args=
        [ $side = ours-copy ] && copy_args=--persistent-grants=off
        start_backend /tmp/blkback-bench-$round.log $copy_args
        kpid=$backend_pid
        disk='disk=["format=raw,vdev=xvda,access=rw,backendtype=phy,script=/realxen/hotplug-noop.sh,direct-io-safe,target=/dev/ram0"]'
    fi
    mark bench-create "$side round=$round"
    timeout -k 10 120 xl create $P/domu-bench.cfg "name=\"$name\"" "$disk" > /tmp/xl-create-bench.log 2>&1 \
        || echo "REALXEN-BENCH-ERROR $side $round xl create: $(tail -n 1 /tmp/xl-create-bench.log)"
    mark bench-created "$side round=$round domid=$(xl domid $name 2>&1)"
    xl domid $name > /dev/null 2>&1 && wait_console "DOMU-BENCH done" $bconsole 600
    mark bench-measured "$side round=$round"
    tr -d '\r' < $bconsole | sed -n "s/^.*DOMU-BENCH \([a-z0-9-]*\) mib=\([0-9]*\) seconds=\([0-9.]*\).*/REALXEN-BENCH side=$side round=$round name=\1 mib=\2 seconds=\3/p"
    tr -d '\r' < $bconsole | grep -a "DOMU-BENCH .*failed\|DOMU-BENCH no\|disabled for further use" \
        | sed "s/^/REALXEN-BENCH-ERROR $side $round /"
    if ! grep -q "DOMU-BENCH done" $bconsole 2>/dev/null; then
        echo "REALXEN-BENCH-ERROR $side $round no 'DOMU-BENCH done' from the domU"
        log_section bench-console-$side-$round $bconsole 30
        log_section bench-xl-create-$side-$round /tmp/xl-create-bench.log 20
        [ $side != kernel ] && log_section bench-blkback-$side-$round /tmp/blkback-bench-$round.log 30
    fi
    [ $round = 1 ] && tr -d '\r' < $bconsole | grep -a "DOMU-BENCH disk\|blkfront: xvda" | sed "s/^/REALXEN-BENCH-INFO $side /"
    timeout -k 10 60 xl destroy $name > /dev/null 2>&1 || echo "REALXEN-BENCH-ERROR $side $round xl destroy failed"
    if [ $side = kernel ]; then
        i=0
        while [ $i -lt 40 ] && ! rmmod xen-blkback 2>/dev/null; do sleep 0.25; i=$((i + 1)); done
        grep -q '^xen_blkback ' /proc/modules && echo "REALXEN-BENCH-ERROR $side $round rmmod xen-blkback failed"
    else
        kill -TERM $kpid 2>/dev/null
        wait $kpid || echo "REALXEN-BENCH-ERROR $side $round xensplit blkback exited $?"
    fi
    return 0
}
bench_steps() {
    rounds=$(cmdline_value bench)
    rounds=${rounds:-3}
    if [ "$rounds" = 0 ]; then
        result bench SKIP "realxen.bench=0 on the kernel command line"
        return
    fi
    # 64 MiB ramdisks: ram0 for the benchmark, ram1 for the frontend step.
    modprobe brd rd_nr=2 rd_size=65536 || { result bench FAIL "modprobe brd failed"; return; }
    yes XENSPLIT-REALXEN-BENCH | head -c 64M | dd of=/dev/ram0 bs=1M iflag=fullblock oflag=direct status=none
    r=1
    while [ $r -le "$rounds" ]; do
        mark bench-round "round=$r"
        bench_round kernel $r
        bench_round ours $r
        [ "$(cmdline_value benchcopy)" = 1 ] && bench_round ours-copy $r
        r=$((r + 1))
    done
    result bench PASS "$rounds alternating rounds ran (the host checks every round reported every workload)"
}
if ! has_step bench; then
    result bench SKIP "not in realxen.steps ($steps)"
else
    mark bench-begin
    bench_steps
    mark bench-end
fi

# --- Item 6: our frontend against Linux's kernel blkback. xen-blkback is loaded (and
# xen-blkfront is not), xl attaches ram1 to dom0 itself as xvdb (51728),
# `xensplit blkfront` is that disk's frontend and exports it over NBD, and nbdcopy writes a
# pattern through it and reads the whole disk back. dom0 also checks the pattern on ram1
# directly and writes a second one there that must read back through the frontend.
# Starts `xensplit blkfront Domain-0 $1`, serving NBD on $sock and logging to $flog, as
# fpid, and waits up to 60 s for its "serving nbd" line.
start_dom0_blkfront() {
    $P/xensplit blkfront Domain-0 $1 --platform xen --nbd unix:$sock --verbose > $flog 2>&1 &
    fpid=$!
    i=0
    while [ $i -lt 240 ] && ! grep -q "serving nbd" $flog && kill -0 $fpid 2>/dev/null; do sleep 0.25; i=$((i + 1)); done
}
frontend_steps() {
    flog=/tmp/blkfront.log
    sock=/tmp/blkfront.sock
    devid=51728
    fb=/local/domain/0/backend/vbd/0/$devid
    if grep -q '^xen_blkfront ' /proc/modules; then
        result frontend-kernel FAIL "xen-blkfront is loaded in dom0; it would take the disk"
        return
    fi
    [ -b /dev/ram1 ] || modprobe brd rd_nr=2 rd_size=65536
    modprobe xen-blkback || { result frontend-kernel FAIL "modprobe xen-blkback failed"; return; }
    yes XENSPLIT-REALXEN-FRONTEND-1 | head -c 8M > /tmp/fe-p1
    yes XENSPLIT-REALXEN-FRONTEND-2 | head -c 4M > /tmp/fe-p2
    dd if=/dev/zero of=/dev/ram1 bs=1M count=64 oflag=direct status=none
    dd if=/tmp/fe-p2 of=/dev/ram1 bs=1M seek=16 iflag=fullblock oflag=direct status=none
    head -c 64M /dev/zero > /tmp/fe-expected
    dd if=/tmp/fe-p1 of=/tmp/fe-expected conv=notrunc status=none
    dd if=/tmp/fe-p2 of=/tmp/fe-expected bs=1M seek=16 conv=notrunc status=none
    timeout -k 10 60 xl block-attach 0 "format=raw,vdev=xvdb,access=rw,target=/dev/ram1" > /tmp/xl-block-attach.log 2>&1
    attach_rc=$?
    echo "REALXEN-FRONTEND xl block-attach 0 rc=$attach_rc backend state $(xenstore-read $fb/state 2>&1)"
    start_dom0_blkfront xvdb
    echo "REALXEN-FRONTEND $(grep -o 'blkfront: Domain-0 xvdb .*serving.*' $flog | head -n 1)"
    uri="nbd+unix:///?socket=$sock"
    wrc=x rrc=x
    if grep -q "serving nbd" $flog; then
        timeout -k 10 300 nbdcopy /tmp/fe-p1 "$uri" > /tmp/nbdcopy.log 2>&1; wrc=$?
        timeout -k 10 300 nbdcopy "$uri" /tmp/fe-back > /tmp/nbdcopy.log 2>&1; rrc=$?
    fi
    back_sha=$(sha /tmp/fe-back 2>/dev/null)
    ram_sha=$(dd if=/dev/ram1 bs=1M count=8 iflag=direct status=none | sha256sum | cut -d' ' -f1)
    state_connected="backend=$(xenstore-read $fb/state 2>&1) frontend=$(xenstore-read /local/domain/0/device/vbd/$devid/state 2>&1)"
    kill -TERM $fpid 2>/dev/null
    wait $fpid; stop_rc=$?
    state_closed="backend=$(xenstore-read $fb/state 2>&1) frontend=$(xenstore-read /local/domain/0/device/vbd/$devid/state 2>&1)"
    timeout -k 10 60 xl block-detach 0 xvdb > /tmp/xl-block-detach.log 2>&1; detach_rc=$?
    i=0
    while [ $i -lt 40 ] && ! rmmod xen-blkback 2>/dev/null; do sleep 0.25; i=$((i + 1)); done
    why="attach rc=$attach_rc; states while served: $state_connected; nbdcopy write rc=$wrc, read rc=$rrc; read back $back_sha (expected $(sha /tmp/fe-expected)); ram1's first 8 MiB $ram_sha (pattern $(sha /tmp/fe-p1)); blkfront exited $stop_rc, then $state_closed; block-detach rc=$detach_rc"
    echo "REALXEN-FRONTEND $why"
    if [ "$attach_rc" = 0 ] && [ "$wrc" = 0 ] && [ "$rrc" = 0 ] && [ "$back_sha" = "$(sha /tmp/fe-expected)" ] \
            && [ "$ram_sha" = "$(sha /tmp/fe-p1)" ] && [ "$stop_rc" = 0 ] && [ "$state_connected" = "backend=4 frontend=4" ]; then
        result frontend-kernel PASS "xensplit blkfront on Linux's xen-blkback: nbdcopy wrote 8 MiB and read 64 MiB back, both verified"
    else
        result frontend-kernel FAIL "$why"
    fi
}
# --- Our frontend against Linux's blkback on a disk of 4096-byte sectors: a loop device
# (losetup --sector-size 4096) over a 16 MiB file, attached to dom0 as xvdc (51744). Linux's
# blkback publishes sector-size 4096 and `sectors` in 512-byte units (32768); the export
# must be exactly 16 MiB, and a pattern written through it must land in the file.
frontend_4k_step() {
    flog=/tmp/blkfront-4k.log
    sock=/tmp/blkfront-4k.sock
    devid=51744
    fb=/local/domain/0/backend/vbd/0/$devid
    modprobe loop 2>/dev/null
    head -c 16M /dev/zero > /tmp/fe4k.img
    if ! loop=$(losetup --find --show --sector-size 4096 /tmp/fe4k.img 2>/tmp/losetup.err); then
        result frontend-4k FAIL "losetup --sector-size 4096: $(cat /tmp/losetup.err)"
        return
    fi
    modprobe xen-blkback || { losetup -d $loop; result frontend-4k FAIL "modprobe xen-blkback failed"; return; }
    yes XENSPLIT-REALXEN-FRONTEND-4K | head -c 4M > /tmp/fe4k-p
    cp /tmp/fe4k.img /tmp/fe4k-expected
    dd if=/tmp/fe4k-p of=/tmp/fe4k-expected conv=notrunc status=none
    timeout -k 10 60 xl block-attach 0 "format=raw,vdev=xvdc,access=rw,target=$loop" > /tmp/xl-block-attach-4k.log 2>&1
    attach_rc=$?
    start_dom0_blkfront xvdc
    echo "REALXEN-FRONTEND-4K $(grep -o 'blkfront: Domain-0 xvdc .*serving.*' $flog | head -n 1)"
    uri="nbd+unix:///?socket=$sock"
    size=none wrc=x rrc=x
    if grep -q "serving nbd" $flog; then
        size=$(timeout -k 10 60 nbdinfo --size "$uri" 2>&1)
        timeout -k 10 120 nbdcopy /tmp/fe4k-p "$uri" > /tmp/nbdcopy-4k.log 2>&1; wrc=$?
        timeout -k 10 120 nbdcopy "$uri" /tmp/fe4k-back > /tmp/nbdcopy-4k.log 2>&1; rrc=$?
    fi
    keys="sector-size=$(xenstore-read $fb/sector-size 2>&1) sectors=$(xenstore-read $fb/sectors 2>&1)"
    kill -TERM $fpid 2>/dev/null
    wait $fpid; stop_rc=$?
    timeout -k 10 60 xl block-detach 0 xvdc > /tmp/xl-block-detach-4k.log 2>&1; detach_rc=$?
    file_sha=$(dd if=/tmp/fe4k.img bs=1M count=4 status=none | sha256sum | cut -d' ' -f1)
    losetup -d $loop
    i=0
    while [ $i -lt 40 ] && ! rmmod xen-blkback 2>/dev/null; do sleep 0.25; i=$((i + 1)); done
    why="attach rc=$attach_rc; Linux's blkback wrote $keys; export size $size; nbdcopy write rc=$wrc, read rc=$rrc; read back $(sha /tmp/fe4k-back 2>/dev/null) (expected $(sha /tmp/fe4k-expected)); the file's first 4 MiB $file_sha (pattern $(sha /tmp/fe4k-p)); blkfront exited $stop_rc; block-detach rc=$detach_rc"
    echo "REALXEN-FRONTEND-4K $why"
    if [ "$attach_rc" = 0 ] && [ "$keys" = "sector-size=4096 sectors=32768" ] && [ "$size" = 16777216 ] \
            && [ "$wrc" = 0 ] && [ "$rrc" = 0 ] && [ "$(sha /tmp/fe4k-back 2>/dev/null)" = "$(sha /tmp/fe4k-expected)" ] \
            && [ "$file_sha" = "$(sha /tmp/fe4k-p)" ] && [ "$stop_rc" = 0 ]; then
        result frontend-4k PASS "xensplit blkfront on Linux's xen-blkback, 4096-byte sectors: a 16 MiB export, 4 MiB written and all read back, verified"
    else
        result frontend-4k FAIL "$why"
    fi
}
if ! has_step frontend; then
    result frontend-kernel SKIP "not in realxen.steps ($steps)"
    result frontend-4k SKIP "not in realxen.steps ($steps)"
else
    mark frontend-begin
    frontend_steps
    frontend_4k_step
    mark frontend-end
    log_section blkfront-4k /tmp/blkfront-4k.log 40
    log_section xl-block-attach-4k /tmp/xl-block-attach-4k.log 20
    log_section blkfront /tmp/blkfront.log 80
    log_section xl-block-attach /tmp/xl-block-attach.log 20
    log_section xl-block-detach /tmp/xl-block-detach.log 20
    log_section nbdcopy /tmp/nbdcopy.log 20
fi

# --- The net pair (Protocols/realxen.md, "The net pair"): dom0-net.sh has the steps.
. $P/dom0-net.sh
if ! has_step net; then
    for s in $net_step_names; do result $s SKIP "not in realxen.steps ($steps)"; done
else
    mark net-begin
    net_steps
    mark net-end
    log_section netback /tmp/netback.log 150
    log_section xs-net-backend /tmp/xs-net-backend.txt 80
    log_section xs-net-frontend /tmp/xs-net-frontend.txt 80
    log_section domu-net-console /var/log/xen/console/guest-realxen-net.log 60
    log_section domu-net2-console /var/log/xen/console/guest-realxen-net2.log 30
    log_section xl-create-net /tmp/xl-create-net.log 30
    log_section xl-destroy-net /tmp/xl-destroy-realxen-net.log 30
    log_section vif-bridge /var/log/xen/xen-hotplug.log 40
fi
if ! has_step netfront; then
    result net-frontend-kernel SKIP "not in realxen.steps ($steps)"
else
    mark netfront-begin
    net_frontend_step
    mark netfront-end
    log_section netfront /tmp/netfront.log 60
    log_section netfront-diag /tmp/netfront-diag.txt 80
    log_section xl-network-attach /tmp/xl-network-attach.log 20
    log_section xl-network-detach /tmp/xl-network-detach.log 20
fi
if ! has_step netbench; then
    result netbench SKIP "not in realxen.steps ($steps)"
    # The net steps' second domU is the bench domU: nothing is left running.
    xl domid realxen-netbench > /dev/null 2>&1 && timeout -k 10 60 xl destroy realxen-netbench
else
    mark netbench-begin
    net_bench_steps
    mark netbench-end
fi

# --- The block backend killed and replaced under a domU's writes (issue 22): dom0-restart.sh.
. $P/dom0-restart.sh
if ! has_step restart; then
    result restart SKIP "not in realxen.steps ($steps)"
else
    mark restart-begin
    restart_steps
    mark restart-end
    for f in /tmp/blkback-restart-*.log; do log_section "$(basename $f .log)" $f 30; done
    log_section domu-restart-console /var/log/xen/console/guest-realxen-restart.log 60
    log_section xl-create-restart /tmp/xl-create-restart.log 20
fi

# --- The conformance suite against Linux's drivers (dom0-conformance.sh), last: its
# negative clauses may upset Linux's backends.
. $P/dom0-conformance.sh
if ! has_step conformance; then
    for s in $conformance_step_names; do result $s SKIP "not in realxen.steps ($steps)"; done
else
    mark conformance-begin
    conformance_steps
    mark conformance-end
fi

log_section selftest /tmp/selftest.log 80
log_section swift-tests /tmp/swifttests.log 80
power_off
