# The conformance steps (issue 21, item 5), sourced by dom0-init.sh after every other
# group, so the negative clauses against Linux's backends come last in the boot:
#   conformance-blkfront  the suite as backend (`--role frontend`) against Linux's
#                         xen-blkfront in a domU, one fresh disk per clause (Linux's
#                         blkfront never leaves Closed, so one handshake per device)
#   conformance-blkback   the suite as frontend (`--role backend`) against Linux's
#                         xen-blkback, on /dev/ram1 attached to dom0 itself, positive clauses
#   conformance-netback   the same against Linux's xen-netback, a vif attached to dom0
#                         (no bridge; the suite plugs the vif), positive clauses
#   conformance-negative  the negative clauses against both, each run time-boxed
# Each run compares with Protocols/conformance/expected.tsv (`--expect linux-xen-*`), which
# decides the step. The JUnit reports go to the console between REALXEN-LOG-BEGIN and
# REALXEN-LOG-END `conformance-junit-<name>`; the host saves them (run-test.sh).
conformance_step_names="conformance-blkfront conformance-blkback conformance-netback conformance-negative"
# Clauses run against Linux's blkfront, in order, each on its own new disk. The peer answers
# no requests yet, and Linux's blkfront reads the partition table in its xenbus thread once
# Connected, which then waits for ever; so only the last clause may reach Connected.
conformance_blkfront_clauses="XENBUS-016 RING-012 BLKIF-FE-001 XENBUS-017"

# conformance_run NAME SECONDS ARGS...: one `xensplit conformance --platform xen` run,
# time-boxed, JUnit to /tmp/conf-NAME.xml; its progress lines ("pass ID") and any error as
# REALXEN-CONFORMANCE NAME lines. Returns the run's status.
conformance_run() {
    name=$1 box=$2
    shift 2
    timeout -k 10 "$box" $P/xensplit conformance --platform xen --format junit --output /tmp/conf-$name.xml "$@" \
        > /tmp/conf-$name.err 2>&1
    rc=$?
    sed "s/^/REALXEN-CONFORMANCE $name /" /tmp/conf-$name.err
    echo "REALXEN-CONFORMANCE $name rc=$rc $*"
    echo "REALXEN-LOG-BEGIN conformance-junit-$name"
    cat /tmp/conf-$name.xml 2>/dev/null
    echo "REALXEN-LOG-END conformance-junit-$name"
    return $rc
}

# The expectation to compare with, when expected.tsv has rows for it.
conformance_expect() {
    grep -q "	$1	" $P/Protocols/conformance/expected.tsv && echo "--expect $1"
}

conformance_blkfront_step() {
    cname=realxen-conf
    expect=$(conformance_expect linux-xen-blkfront)
    if grep -qE '^xen_blkback ' /proc/modules; then
        result conformance-blkfront FAIL "xen-blkback is loaded in dom0; it would take the domU's disks"
        return
    fi
    timeout -k 10 120 xl create $P/domu-boot.cfg "name=\"$cname\"" 'extra="console=hvc0 rdinit=/init realxen.role=check"' \
        > /tmp/xl-create-conf.log 2>&1
    cdomid=$(xl domid $cname 2>/dev/null)
    console=/var/log/xen/console/guest-$cname.log
    wait_console "DOMU-MARK check-done" $console 240
    bad=
    n=0
    for clause in $conformance_blkfront_clauses; do
        vdev=xvd$(echo abcdefgh | cut -c$((n + 1)))
        devid=$((51712 + 16 * n))
        n=$((n + 1))
        # xl waits 10 s for the backend's InitWait: the suite starts as soon as the
        # frontend node is there.
        timeout -k 10 60 xl block-attach $cname "format=raw,vdev=$vdev,access=rw,backendtype=phy,script=/realxen/hotplug-noop.sh,target=/realxen/disk.img" \
            > /tmp/xl-block-attach-conf-$n.log 2>&1 &
        apid=$!
        i=0
        while [ $i -lt 100 ] && ! xenstore-read /local/domain/$cdomid/device/vbd/$devid/backend > /dev/null 2>&1; do sleep 0.1; i=$((i + 1)); done
        conformance_run blkfront-$clause 120 --role frontend --device vbd --target $cname/$vdev --clauses $clause $expect \
            || bad="$bad $clause"
        wait $apid || bad="$bad $clause(xl-block-attach)"
    done
    timeout -k 10 60 xl destroy $cname > /tmp/xl-destroy-conf.log 2>&1
    why="domU $cname (domid ${cdomid:-none}) with xen-blkfront, one new disk per clause: $conformance_blkfront_clauses; ${expect:-no linux-xen-blkfront rows in expected.tsv}"
    if [ -n "$cdomid" ] && [ -z "$bad" ] && [ -n "$expect" ]; then
        result conformance-blkfront PASS "$why: every outcome as expected"
    else
        result conformance-blkfront FAIL "$why; deviations or errors in:${bad:- none}"
        log_section conformance-domu-console $console 40
        log_section xl-block-attach-conf /tmp/xl-block-attach-conf-1.log 20
    fi
}

# Attaches /dev/ram1 to dom0 as xvdb (51728) through Linux's xen-blkback.
conformance_blkback_attach() {
    [ -b /dev/ram1 ] || modprobe brd rd_nr=2 rd_size=65536
    modprobe xen-blkback || return 1
    timeout -k 10 60 xl block-attach 0 "format=raw,vdev=xvdb,access=rw,target=/dev/ram1" > /tmp/xl-block-attach-conf.log 2>&1
}

# Attaches a vif to dom0 through Linux's xen-netback, with the no-op hotplug script (the
# suite's --plug brings vif0.N up and writes hotplug-status); sets conf_vif.
conformance_netback_attach() {
    modprobe xen-netback || return 1
    timeout -k 10 60 xl network-attach 0 mac=00:16:3e:58:00:30 script=/realxen/hotplug-noop.sh > /tmp/xl-network-attach-conf.log 2>&1 || return 1
    conf_vif=$(xenstore-list /local/domain/0/device/vif 2>/dev/null | tail -n 1)
}

conformance_backend_step() {
    step=$1 target=$2
    shift 2
    expect=$(conformance_expect $target)
    if conformance_run "$@" $expect; then
        result $step PASS "$target: every outcome as expected (expected.tsv)"
    else
        result $step FAIL "$target: ${expect:-no $target rows in expected.tsv}; deviations, or the run did not finish (REALXEN-CONFORMANCE lines)"
    fi
}

conformance_steps() {
    conformance_blkfront_step
    mark conformance-backends
    blk_ok=0 net_ok=0
    conformance_blkback_attach && blk_ok=1
    echo "REALXEN-CONFORMANCE blkback xl block-attach 0 xvdb: $([ $blk_ok = 1 ] && echo ok || cat /tmp/xl-block-attach-conf.log) backend state $(xenstore-read /local/domain/0/backend/vbd/0/51728/state 2>&1)"
    if [ $blk_ok = 1 ]; then
        conformance_backend_step conformance-blkback linux-xen-blkback blkback 600 \
            --role backend --device vbd --target Domain-0/xvdb --kind positive
    else
        result conformance-blkback FAIL "xen-blkback or xl block-attach failed"
    fi
    conformance_netback_attach && net_ok=1
    echo "REALXEN-CONFORMANCE netback xl network-attach 0: $([ $net_ok = 1 ] && echo "devid $conf_vif" || cat /tmp/xl-network-attach-conf.log) backend state $(xenstore-read /local/domain/0/backend/vif/0/${conf_vif:-x}/state 2>&1)"
    if [ $net_ok = 1 ]; then
        conformance_backend_step conformance-netback linux-xen-netback netback 600 \
            --role backend --device vif --target Domain-0/$conf_vif --plug --kind positive
    else
        result conformance-netback FAIL "xen-netback or xl network-attach failed"
    fi
    # Last: the lies, each run time-boxed.
    mark conformance-negative
    neg=
    if [ $blk_ok = 1 ]; then
        expect=$(conformance_expect linux-xen-blkback)
        conformance_run blkback-negative 300 --role backend --device vbd --target Domain-0/xvdb --kind negative $expect \
            || neg="$neg linux-xen-blkback"
    fi
    if [ $net_ok = 1 ]; then
        expect=$(conformance_expect linux-xen-netback)
        conformance_run netback-negative 300 --role backend --device vif --target Domain-0/$conf_vif --plug --kind negative $expect \
            || neg="$neg linux-xen-netback"
    fi
    if [ $blk_ok = 1 ] && [ $net_ok = 1 ] && [ -z "$neg" ]; then
        result conformance-negative PASS "negative clauses against Linux's xen-blkback and xen-netback: every outcome as expected"
    else
        result conformance-negative FAIL "negative clauses: deviations or no run in:${neg:- none} (blkback attached=$blk_ok, netback attached=$net_ok)"
    fi
    # Every device goes and both kernel backends are unloaded: a loaded xen-netback would
    # take every later vif.
    [ $blk_ok = 1 ] && timeout -k 10 60 xl block-detach 0 xvdb > /tmp/xl-block-detach-conf.log 2>&1
    [ $net_ok = 1 ] && timeout -k 10 60 xl network-detach 0 "$conf_vif" > /tmp/xl-network-detach-conf.log 2>&1
    for m in xen-blkback xen-netback; do
        i=0
        while [ $i -lt 40 ] && grep -q "^$(echo $m | tr - _) " /proc/modules && ! rmmod $m 2>/dev/null; do sleep 0.25; i=$((i + 1)); done
    done
    echo "REALXEN-CONFORMANCE after: $(grep -cE '^xen_(blk|net)back ' /proc/modules) kernel backends loaded"
    dmesg | tail -n 60 > /tmp/dmesg-conf.txt
    log_section dmesg-conformance /tmp/dmesg-conf.txt 40
}
