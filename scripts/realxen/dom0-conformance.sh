# The conformance steps (issue 21, item 5), sourced by dom0-init.sh after every other
# group, so the negative clauses against Linux's backends come last in the boot:
#   conformance-blkfront  the suite as backend (`--role frontend`) against Linux's
#                         xen-blkfront in a domU, one fresh disk per clause that makes a
#                         handshake (Linux's blkfront answers InitWait only from
#                         Initialising: one handshake per device), positive clauses first
#   conformance-netfront  the same against Linux's xen-netfront in a second domU, one
#                         fresh vif per clause
#   conformance-blkback   the suite as frontend (`--role backend`) against Linux's
#                         xen-blkback, on /dev/ram1 attached to dom0 itself, positive clauses
#   conformance-netback   the same against Linux's xen-netback, a vif attached to dom0
#                         (no bridge; the suite plugs the vif), positive clauses
#   conformance-negative  the negative clauses against both, each run time-boxed
# realxen.conformance=blkfront+netfront+blkback+netback+negative (the default: all) picks
# the parts; the others report SKIP. Each run compares with
# Protocols/conformance/expected.tsv (`--expect linux-xen-*`), which decides the step. The
# JUnit reports go to the console between REALXEN-LOG-BEGIN and REALXEN-LOG-END
# `conformance-junit-<name>`; the host saves them (run-test.sh). Each part's dom0 time is a
# REALXEN-CONFORMANCE-TIME line.
conformance_step_names="conformance-blkfront conformance-netfront conformance-blkback conformance-netback conformance-negative"
conformance_parts=$(cmdline_value conformance | tr '+' ' ')
conformance_parts=${conformance_parts:-blkfront netfront blkback netback negative}
has_part() { case " $conformance_parts " in *" $1 "*) return 0 ;; esac; return 1; }

# The frontend-role clauses, each run on its own new device (Linux's frontends take a
# device once): those that need nothing but a handshake first, then those that make the
# frontend send requests or frames through its user side, then the negative ones (a lying
# disk can leave the domU's xenbus thread held: in a run of 7 Dec 2026 every device after
# BLKIF-FE-034's sector-size 1000 stayed Initialising, so it goes last). The user side is xensplit-agent in
# the domU, on its console (Protocols/conformance/agent.md): the suite reaches it through
# the console's pty (--agent), and it works on the device's /dev/xvdX or, for a vif, the
# interface with the device's MAC. XENBUS-020 has no check: not executed. Positive clauses
# come before negative ones in each group. A lie can still hold the domU's xenbus thread
# (in a run of 7 Dec 2026 every device after RING-016's stayed Initialising), or silence its
# agent (after NETIF-FE-019): a clause whose new device never leaves Initialising, or whose
# agent does not answer, gets a fresh domU and one more try, and the clause before it is
# named as the one that held the domU (REALXEN-CONFORMANCE-HELD).
conformance_blkfront_positive="XENBUS-001 XENBUS-016 XENBUS-017 XENBUS-018 XENBUS-019 RING-012 BLKIF-FE-001 BLKIF-FE-002 BLKIF-FE-003 BLKIF-FE-004 BLKIF-FE-005"
conformance_blkfront_userside="RING-001 RING-002 RING-013 RING-014 RING-015 XENBUS-020 BLKIF-FE-006 BLKIF-FE-007 BLKIF-FE-008 BLKIF-FE-009 BLKIF-FE-010 BLKIF-FE-011 BLKIF-FE-012 BLKIF-FE-013 BLKIF-FE-014 BLKIF-FE-015 BLKIF-FE-016 BLKIF-FE-017 RING-016 RING-017 RING-018 BLKIF-FE-030 BLKIF-FE-031 BLKIF-FE-032 BLKIF-FE-035 BLKIF-FE-039 BLKIF-FE-040"
conformance_blkfront_negative="XENBUS-021 XENBUS-022 BLKIF-FE-033 BLKIF-FE-036 BLKIF-FE-037 BLKIF-FE-038 BLKIF-FE-034"
conformance_netfront_positive="XENBUS-001 XENBUS-016 XENBUS-017 XENBUS-018 XENBUS-019 RING-012 NETIF-FE-001 NETIF-FE-002 NETIF-FE-003 NETIF-FE-004 NETIF-FE-005 NETIF-FE-006 NETIF-FE-015 NETIF-FE-016"
conformance_netfront_userside="RING-001 RING-002 RING-013 RING-014 RING-015 XENBUS-020 NETIF-FE-007 NETIF-FE-008 NETIF-FE-009 NETIF-FE-010 NETIF-FE-011 NETIF-FE-012 NETIF-FE-013 NETIF-FE-014 RING-016 RING-017 RING-018 NETIF-FE-017 NETIF-FE-018 NETIF-FE-019 NETIF-FE-020 NETIF-FE-021 NETIF-FE-022 NETIF-FE-023 NETIF-FE-024"
conformance_netfront_negative="XENBUS-021 XENBUS-022 NETIF-FE-025"

# The Nth disk's vdev letters: a..z, then aa, ab, ... (xl and Linux both count on).
vdev_letters() {
    k=$1 letters=
    while [ "$k" -gt 0 ]; do
        k=$((k - 1))
        letters=$(printf "\\$(printf %o $((97 + k % 26)))")$letters
        k=$((k / 26))
    done
    echo "$letters"
}

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

# conformance_domu NAME: boots a PV domU (role agent: no devices, both frontends loaded,
# xensplit-agent on its console); sets cdomid and cagent (the console's pty in dom0).
conformance_domu() {
    timeout -k 10 120 xl create $P/domu-boot.cfg "name=\"$1\"" 'extra="console=hvc0 rdinit=/init realxen.role=agent"' \
        > /tmp/xl-create-$1.log 2>&1
    cdomid=$(xl domid $1 2>/dev/null)
    wait_console "DOMU-MARK check-done" /var/log/xen/console/guest-$1.log 240
    cagent=$(xenstore-read /local/domain/$cdomid/console/tty 2>/dev/null)
}

# conformance_frontend_device KIND NAME N ATTACH-ARGS...: attaches a new device of KIND
# (vbd or vif) to domU NAME (`xl block-attach` or `xl network-attach`, in the background:
# xl waits for the backend's InitWait, which the suite writes) and waits up to 10 s for
# its frontend node; sets cdev (its devid, or empty) and apid.
conformance_frontend_device() {
    kind=$1 dname=$2 n=$3
    shift 3
    before=$(xenstore-list /local/domain/$cdomid/device/$kind 2>/dev/null | tr '\n' ' ')
    if [ $kind = vbd ]; then
        timeout -k 10 60 xl block-attach $dname "$@" > /tmp/xl-attach-conf-$dname-$n.log 2>&1 &
    else
        timeout -k 10 60 xl network-attach $dname "$@" > /tmp/xl-attach-conf-$dname-$n.log 2>&1 &
    fi
    apid=$!
    cdev=
    i=0
    while [ $i -lt 100 ] && [ -z "$cdev" ]; do
        for d in $(xenstore-list /local/domain/$cdomid/device/$kind 2>/dev/null); do
            case " $before " in *" $d "*) ;; *) xenstore-read /local/domain/$cdomid/device/$kind/$d/backend > /dev/null 2>&1 && cdev=$d ;; esac
        done
        [ -n "$cdev" ] || sleep 0.1
        i=$((i + 1))
    done
}

# conformance_frontend_step STEP KIND TARGET DOMU: the suite as KIND's backend against
# Linux's frontend in a new domU DOMU: each handshake clause on its own new device
# (positive first), then the user-side clauses together on one more.
conformance_frontend_step() {
    step=$1 kind=$2 target=$3 dname=$4
    t0=$(up)
    expect=$(conformance_expect $target)
    if grep -qE "^xen_$(echo $kind | sed 's/vbd/blk/; s/vif/net/')back " /proc/modules; then
        result $step FAIL "the kernel's $kind backend is loaded in dom0; it would take the domU's devices"
        return
    fi
    conformance_domu $dname
    console=/var/log/xen/console/guest-$dname.log
    if [ $kind = vbd ]; then
        clauses="$conformance_blkfront_positive $conformance_blkfront_userside $conformance_blkfront_negative" userside=" $conformance_blkfront_userside "
    else
        clauses="$conformance_netfront_positive $conformance_netfront_userside $conformance_netfront_negative" userside=" $conformance_netfront_userside "
    fi
    bad=
    n=0
    previous=
    for clause in $clauses; do
      for try in 1 2; do
        n=$((n + 1))
        ta=$(up)
        mac=00:16:3e:58:01:$(printf %02x $n)
        if [ $kind = vbd ]; then
            vdev=xvd$(vdev_letters $n)
            conformance_frontend_device vbd $dname $n "format=raw,vdev=$vdev,access=rw,backendtype=phy,script=/realxen/hotplug-noop.sh,target=/realxen/disk.img"
        else
            conformance_frontend_device vif $dname $n "mac=$mac" script=/realxen/hotplug-noop.sh
        fi
        tb=$(up)
        if [ -z "$cdev" ]; then
            bad="$bad $clause(no-device)"
        else
            user=
            case "$userside" in *" $clause "*)
                if [ $kind = vbd ]; then agent_device=/dev/$vdev; else agent_device=$mac; fi
                if [ -n "$cagent" ]; then user="--agent $cagent --agent-device $agent_device"; else bad="$bad $clause(no-console-pty)"; fi
            esac
            held=0
            if ! conformance_run $kind-front-$clause 120 --role frontend --device $kind --target $dname/$cdev --takes-device-once \
                    --clauses "$clause" $user $expect; then
                if [ $try = 1 ] && grep -q "state did not reach .* (reads Initialising)\|the agent on .* did not finish" /tmp/conf-$kind-front-$clause.err; then
                    held=1
                else
                    bad="$bad $clause"
                fi
            fi
        fi
        # XENBUS-020 makes no handshake, so xl's wait for InitWait runs out there.
        tc=$(up)
        wait $apid || [ $clause = XENBUS-020 ] || [ "$held" = 1 ] || bad="$bad $clause(xl-attach)"
        # Where a device's time goes: its frontend node appearing, the run, then xl's return.
        echo "REALXEN-CONFORMANCE-TIME $step/$clause $(echo "$ta $tb $tc $(up)" | awk '{ printf "node %.1f s, run %.1f s, xl after %.1f s", $2 - $1, $3 - $2, $4 - $3 }')"
        [ "$held" = 1 ] || break
        echo "REALXEN-CONFORMANCE-HELD $step $clause's device stayed Initialising or the domU's agent went silent: the domU is held since ${previous:-the start}; a fresh domU for $clause"
        log_section conformance-held-domu-console $console 20
        timeout -k 10 60 xl destroy $dname > /tmp/xl-destroy-$dname.log 2>&1
        # The new domU's console log starts empty, so its check-done is its own.
        mv $console $console.held-$n 2>/dev/null
        conformance_domu $dname
      done
      previous=$clause
    done
    timeout -k 10 60 xl destroy $dname > /tmp/xl-destroy-$dname.log 2>&1
    echo "REALXEN-CONFORMANCE-TIME $step $(echo "$t0 $(up)" | awk '{ printf "%.0f", $2 - $1 }') s"
    why="domU $dname (domid ${cdomid:-none}), one new $kind per clause, the user side through xensplit-agent on ${cagent:-no console pty}: $clauses; ${expect:-no $target rows in expected.tsv}"
    if [ -n "$cdomid" ] && [ -z "$bad" ] && [ -n "$expect" ]; then
        result $step PASS "$why: every outcome as expected"
    else
        result $step FAIL "$why; deviations or errors in:${bad:- none}"
        log_section conformance-domu-console $console 40
        log_section xl-attach-conf /tmp/xl-attach-conf-$dname-1.log 20
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
    for part in blkfront netfront blkback netback negative; do
        has_part $part || result conformance-$part SKIP "not in realxen.conformance ($conformance_parts)"
    done
    has_part blkfront && conformance_frontend_step conformance-blkfront vbd linux-xen-blkfront realxen-conf
    has_part netfront && conformance_frontend_step conformance-netfront vif linux-xen-netfront realxen-conf-net
    mark conformance-backends
    has_part blkback || has_part netback || has_part negative || return 0
    blk_ok=0 net_ok=0
    t0=$(up)
    conformance_blkback_attach && blk_ok=1
    echo "REALXEN-CONFORMANCE blkback xl block-attach 0 xvdb: $([ $blk_ok = 1 ] && echo ok || cat /tmp/xl-block-attach-conf.log) backend state $(xenstore-read /local/domain/0/backend/vbd/0/51728/state 2>&1)"
    if ! has_part blkback; then
        :
    elif [ $blk_ok = 1 ]; then
        conformance_backend_step conformance-blkback linux-xen-blkback blkback 600 \
            --role backend --device vbd --target Domain-0/xvdb --kind positive
    else
        result conformance-blkback FAIL "xen-blkback or xl block-attach failed"
    fi
    echo "REALXEN-CONFORMANCE-TIME conformance-blkback $(echo "$t0 $(up)" | awk '{ printf "%.0f", $2 - $1 }') s"
    t0=$(up)
    conformance_netback_attach && net_ok=1
    echo "REALXEN-CONFORMANCE netback xl network-attach 0: $([ $net_ok = 1 ] && echo "devid $conf_vif" || cat /tmp/xl-network-attach-conf.log) backend state $(xenstore-read /local/domain/0/backend/vif/0/${conf_vif:-x}/state 2>&1)"
    if ! has_part netback; then
        :
    elif [ $net_ok = 1 ]; then
        conformance_backend_step conformance-netback linux-xen-netback netback 600 \
            --role backend --device vif --target Domain-0/$conf_vif --plug --kind positive
    else
        result conformance-netback FAIL "xen-netback or xl network-attach failed"
    fi
    echo "REALXEN-CONFORMANCE-TIME conformance-netback $(echo "$t0 $(up)" | awk '{ printf "%.0f", $2 - $1 }') s"
    # Last: the lies, each run time-boxed.
    mark conformance-negative
    t0=$(up)
    if has_part negative; then
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
    fi
    echo "REALXEN-CONFORMANCE-TIME conformance-negative $(echo "$t0 $(up)" | awk '{ printf "%.0f", $2 - $1 }') s"
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
