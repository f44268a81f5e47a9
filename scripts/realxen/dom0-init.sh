#!/bin/sh
# dom0's init for scripts/realxen/run-test.sh, run from the payload disk mounted at
# /realxen (dom0-boot.sh execs it as PID 1). It starts the Xen toolstack daemons, runs the
# steps and powers the machine off. Everything the host judges is a line on the console:
#   REALXEN-MARK <event> uptime=<s> [...]     progress; the host times the phases by them
#   REALXEN-SELFTEST <line>                    xensplit selftest's own output, as it comes
#   REALXEN-RESULT <step> PASS|FAIL|SKIP <why> one line per step
#   REALXEN-LOG-BEGIN <name> ... REALXEN-LOG-END <name>   logs the host prints on failure
# Kernel cmdline knobs: realxen.requests=N (ring step), realxen.domu=0 (no domU steps).
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

# --- Steps 3 and 4 need a block backend command in xensplit, which does not exist yet.
# $P/domu-vbd.cfg (route B: backendtype=phy, a no-op hotplug script, target $P/disk.img)
# and the blkfront initramfs are in place for them.
result vbd-handshake SKIP "xensplit has no block backend command yet; domu-vbd.cfg (route B) is ready for it"
result vbd-io SKIP "xensplit has no block backend command yet; the domU init already reads /dev/xvda once it appears"

log_section selftest /tmp/selftest.log 80
power_off
