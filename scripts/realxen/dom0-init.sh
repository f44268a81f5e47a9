#!/bin/sh
# dom0's init for scripts/realxen/run-test.sh, run from the payload disk mounted at
# /realxen (dom0-boot.sh execs it as PID 1). It starts the Xen toolstack daemons, runs the
# steps and powers the machine off. Everything the host judges is a line on the console:
#   REALXEN-MARK <event> uptime=<s> [...]     progress; the host times the phases by them
#   REALXEN-SELFTEST <line>                    xensplit selftest's own output, as it comes
#   REALXEN-RESULT <step> PASS|FAIL|SKIP <why> one line per step
#   REALXEN-LOG-BEGIN <name> ... REALXEN-LOG-END <name>   logs the host prints on failure
# Kernel cmdline knobs: realxen.requests=N (ring step), realxen.domu=0 (no domU steps),
# realxen.blkback=OPTS (extra `xensplit blkback` options, commas for spaces).
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
    timeout 600 $P/xensplit selftest --platform xen ${requests:+--requests $requests} 2>&1
    echo $? > /tmp/selftest.rc
} | tee /tmp/selftest.log | sed -u 's/^/REALXEN-SELFTEST /'
mark selftest-end "rc=$(cat /tmp/selftest.rc)"

# --- Step 2: a PV domU boots from the blkfront/netfront initramfs (no devices), which is
# what the block backend steps will run in.
if [ "$(cmdline_value domu)" = 0 ]; then
    result domu-boot SKIP "realxen.domu=0 on the kernel command line"
else
    mark domu-begin
    if grep -qE '^xen_(blk|net)back ' /proc/modules; then
        result domu-boot FAIL "a kernel xen-blkback or xen-netback is loaded in dom0"
    elif ! timeout 120 xl create $P/domu-boot.cfg > /tmp/xl-create.log 2>&1; then
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
        timeout 60 xl destroy realxen-boot > /tmp/xl-destroy.log 2>&1 \
            || echo "xl destroy failed: $(cat /tmp/xl-destroy.log)"
        log_section domu-console $console 40
    fi
    log_section xl-create /tmp/xl-create.log 30
    mark domu-end
fi

# --- Steps 3 to 6: `xensplit blkback` serves a PV domU's two disks (route B: backendtype=phy
# and a no-op hotplug script, so xl writes backend/vbd/<domid>/<devid> and waits for the
# backend; no kernel blkback is loaded). xvda (51712) is disk.img, writable; xvdb (51728)
# is disk-ro.img, read-only.
console_line() { grep -a -o "DOMU-MARK $1.*" "$2" 2>/dev/null | tr -d '\r' | head -1; }
field() { echo "$2" | sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
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
vbd_steps() {
    blog=/tmp/blkback.log
    vconsole=/var/log/xen/console/guest-realxen-vbd.log
    image_sha=$(sha $P/disk.img)
    ro_sha=$(sha $P/disk-ro.img)
    expected_image
    expected_sha=$(sha /tmp/expected.img)
    echo "REALXEN-VBD disk.img sha256=$image_sha expected-after-writes=$expected_sha disk-ro.img sha256=$ro_sha"
    # realxen.blkback=--a=1,--b=2 on the kernel command line adds options (commas for spaces).
    extra_args=$(cmdline_value blkback | tr ',' ' ')
    echo "REALXEN-VBD backend: xensplit blkback --platform xen --verbose $extra_args"
    $P/xensplit blkback --platform xen --verbose $extra_args > $blog 2>&1 &
    bpid=$!
    i=0
    while [ $i -lt 120 ] && ! grep -q "blkback: serving" $blog && kill -0 $bpid 2>/dev/null; do
        sleep 0.25; i=$((i + 1))
    done
    if ! grep -q "blkback: serving" $blog; then
        for s in vbd-handshake vbd-io vbd-readonly vbd-teardown; do
            result $s FAIL "xensplit blkback did not start (see blkback log)"
        done
        return
    fi
    mark vbd-backend-up "pid=$bpid"
    timeout 120 xl create $P/domu-vbd.cfg > /tmp/xl-create-vbd.log 2>&1; create_rc=$?
    vdomid=$(xl domid realxen-vbd 2>/dev/null)
    mark vbd-domu-created "domid=${vdomid:-none}"
    i=0
    # Linux blkfront gives a device up for good on a bad response ("disabled for further
    # use"); the domU's reads then never return, so stop waiting at once.
    while [ -n "$vdomid" ] && [ $i -lt 480 ] \
            && ! grep -q "DOMU-MARK vbd-done\|disabled for further use" $vconsole 2>/dev/null; do
        sleep 0.5; i=$((i + 1))
    done
    # The other disk runs its checks beside the disabled one: give it a moment to report.
    grep -q "DOMU-MARK vbd-done" $vconsole 2>/dev/null || sleep 10
    mark vbd-domu-done
    xenstore-ls -fp /local/domain/0/backend/vbd > /tmp/xs-backend.txt 2>&1
    xenstore-ls -fp /local/domain/${vdomid:-none}/device/vbd > /tmp/xs-frontend.txt 2>&1
    b=/local/domain/0/backend/vbd/$vdomid
    f=/local/domain/$vdomid/device/vbd
    states="xvda backend=$(xenstore-read $b/51712/state 2>&1) frontend=$(xenstore-read $f/51712/state 2>&1)"
    states="$states xvdb backend=$(xenstore-read $b/51728/state 2>&1) frontend=$(xenstore-read $f/51728/state 2>&1)"
    xvda=$(console_line xvda $vconsole)
    echo "REALXEN-VBD states: $states"
    echo "REALXEN-VBD console: $xvda"
    if [ $create_rc = 0 ] && [ "$states" = "xvda backend=4 frontend=4 xvdb backend=4 frontend=4" ] \
            && [ "$(field sectors "$xvda")" = 32768 ] && [ "$(field signature "$xvda")" = XENSPLIT-REALXEN-DISK ]; then
        result vbd-handshake PASS "both disks Connected (4/4) through xensplit blkback; domU sees xvda: $xvda"
    else
        result vbd-handshake FAIL "xl create rc=$create_rc (xl waits 10 s for InitWait); states: $states; domU: ${xvda:-no xvda line}"
    fi

    read_line=$(console_line vbd-read $vconsole)
    write_line=$(console_line vbd-write $vconsole)
    written_line=$(console_line vbd-written $vconsole)
    xvdb=$(console_line xvdb $vconsole)
    echo "REALXEN-VBD console: $read_line"
    echo "REALXEN-VBD console: $write_line"
    echo "REALXEN-VBD console: $written_line"
    echo "REALXEN-VBD console: $xvdb"

    mark vbd-destroy-begin
    if [ -n "$vdomid" ]; then
        timeout 60 xl destroy realxen-vbd > /tmp/xl-destroy-vbd.log 2>&1; destroy_rc=$?
    else
        destroy_rc=none
    fi
    mark vbd-destroy-end "rc=$destroy_rc"
    # The backend node goes once xl saw Closed (or gave up); the driver logs its own walk.
    i=0
    while [ $i -lt 40 ] && xenstore-read $b/51712/state > /dev/null 2>&1; do sleep 0.25; i=$((i + 1)); done
    sleep 1
    file_sha=$(sha $P/disk.img)
    ro_after=$(sha $P/disk-ro.img)

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

    closed=$(grep -c -i "xenbus state .* -> Closed" $blog)
    node_left=$(xenstore-ls -f $b 2>/dev/null | wc -l)
    if kill -0 $bpid 2>/dev/null; then alive=yes; else alive=no; fi
    td_why="xl destroy rc=$destroy_rc; backend logged $closed transition(s) to Closed; $node_left key(s) left under $b; backend running after destroy: $alive"
    kill -TERM $bpid 2>/dev/null
    wait $bpid; stop_rc=$?
    td_why="$td_why; after SIGTERM it exited $stop_rc"
    if [ "$destroy_rc" = 0 ] && [ "$closed" -ge 2 ] && [ "$node_left" = 0 ] && [ $alive = yes ] && [ $stop_rc = 0 ] \
            && ! grep -qi "timed out\|timeout" /tmp/xl-destroy-vbd.log; then
        result vbd-teardown PASS "$td_why"
    else
        result vbd-teardown FAIL "$td_why"
    fi
}
if [ "$(cmdline_value domu)" = 0 ]; then
    for s in vbd-handshake vbd-io vbd-readonly vbd-teardown; do result $s SKIP "realxen.domu=0 on the kernel command line"; done
else
    mark vbd-begin
    vbd_steps
    mark vbd-end
    log_section blkback /tmp/blkback.log 200
    log_section xenstore-backend /tmp/xs-backend.txt 80
    log_section xenstore-frontend /tmp/xs-frontend.txt 80
    log_section domu-vbd-console /var/log/xen/console/guest-realxen-vbd.log 60
    log_section xl-create-vbd /tmp/xl-create-vbd.log 40
    log_section xl-destroy-vbd /tmp/xl-destroy-vbd.log 40
    log_section hotplug-noop /run/hotplug-noop.log 20
fi

log_section selftest /tmp/selftest.log 80
power_off
