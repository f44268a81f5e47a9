# The net steps of scripts/realxen/run-test.sh, sourced by dom0-init.sh (whose helpers it
# uses: mark, result, log_section, field, console_line, sha, holdings, wait_console, up).
# Protocols/realxen.md ("The net pair") lists the steps and what passes them.
#   net_steps        `xensplit netback` serves Linux's xen-netfront in PV domUs (no kernel
#                    xen-netback loaded), then our `xensplit netfront` on Linux's xen-netback
#   net_bench_steps  the same domU workload (iperf3) served by Linux's xen-netback and ours
# Addresses: xenbr0 198.18.0.1/24 (domU eth0 .2), xenbr1 198.18.1.1/24 at MTU 9000 (domU
# eth1 .2), xenbr2 198.18.2.1/24 (our frontend's TAP device .2, in a namespace).

net_step_names="net-vif net-ping net-tcp net-jumbo net-two-vifs net-queues net-takeup net-destroy net-second"
net_serving="backend: serving"
net_rand=/tmp/net-rand
net_rand16=/tmp/net-rand16

# Starts `xensplit netback --platform xen` with the options after $1, logging to $1, as
# netback_pid, and waits up to 30 s for its "serving" line.
start_netback() {
    log=$1
    shift
    $P/xensplit netback --platform xen "$@" > $log 2>&1 &
    netback_pid=$!
    i=0
    while [ $i -lt 120 ] && ! grep -q "$net_serving" $log && kill -0 $netback_pid 2>/dev/null; do
        sleep 0.25; i=$((i + 1))
    done
}
# net_bridge NAME ADDRESS MTU: a bridge with an address, forwarding at once (no STP).
net_bridge() {
    ip link add $1 type bridge stp_state 0 forward_delay 0 || return 1
    ip link set $1 mtu $3 && ip addr add $2 dev $1 && ip link set $1 up
}
kernel_netback() { grep -q '^xen_netback ' /proc/modules && echo loaded || echo not-loaded; }
# Whether interface $1 exists and is a port of bridge $2.
port_of() { [ -e /sys/class/net/$2/brif/$1 ] && echo yes || echo no; }
# busybox nc: `-e` runs the rest after connecting, with the socket as its stdin and stdout.
nc_send() { timeout -k 5 "$3" busybox nc "$1" "$2" -e cat "$4"; }
nc_read() { timeout -k 5 "$3" busybox nc "$1" "$2" -e sh -c 'sha256sum | cut -d" " -f1 > /tmp/net-read'; }
# rate MIB SECONDS
rate() { awk -v m="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.1f", m / s; else print "inf" }'; }
since() { awk -v a="$1" -v b="$(up)" 'BEGIN { printf "%.2f", b - a }'; }
# The traffic tests against a listening domU at $1 (its console $2): ping from dom0 (size
# $3), then MIB ($6: 64, or 16 from the start of the same data) each way over TCP on port
# $4 (dom0 sends; the domU prints its digest as net-received $5) and $4+1 (dom0 reads the
# domU's data, whose digest its listening line gives as rand-sha256 or rand16-sha256).
# Sets ping_ok, send_ok, read_ok and tcp_why.
net_traffic() {
    addr=$1 con=$2 size=$3 port=$4 tag=$5 mib=$6
    file=$net_rand want=$rand_sha key=rand-sha256
    [ "$mib" = 16 ] && file=$net_rand16 want=$rand16_sha key=rand16-sha256
    ping_out=$(busybox ping -c 3 -W 5 -s "$size" "$addr" 2>&1 | grep -o '[0-9]* packets received')
    ping_ok=no
    [ "$ping_out" = "3 packets received" ] && ping_ok=yes
    t=$(up)
    nc_send "$addr" "$port" 400 $file; src=$?
    send_s=$(since "$t")
    i=0
    while [ $i -lt 120 ] && ! grep -q "DOMU-MARK net-received $tag " "$con"; do sleep 0.25; i=$((i + 1)); done
    got=$(field sha256 "$(console_line "net-received $tag" "$con")")
    t=$(up)
    rm -f /tmp/net-read
    nc_read "$addr" $((port + 1)) 400; rrc=$?
    read_s=$(since "$t")
    back=$(cat /tmp/net-read 2>/dev/null)
    served=$(field $key "$(console_line net-listening "$con")")
    send_ok=no read_ok=no
    [ $src = 0 ] && [ "$got" = "$want" ] && send_ok=yes
    [ $rrc = 0 ] && [ -n "$served" ] && [ "$back" = "$served" ] && read_ok=yes
    tcp_why="ping -s $size from dom0: ${ping_out:-nothing}; $mib MiB dom0->domU rc=$src in ${send_s}s ($(rate $mib "$send_s") MiB/s), domU got ${got:-nothing} (sent $want); $mib MiB domU->dom0 rc=$rrc in ${read_s}s ($(rate $mib "$read_s") MiB/s), dom0 got ${back:-nothing} (domU served ${served:-nothing})"
}
# The backend's counters for one vif from its log (logged per queue when a queue goes):
# net_counter vif/DOMID/DEVID tx|rx packets|bytes, summed over the queues.
net_counter() {
    grep "netback queue statistics" $nlog | grep "queue=[^ ]*$1[/ ]" \
        | sed -n "s/.*statistics=.*$2 \([0-9]*\) packets \([0-9]*\) bytes.*/\1 \2/p" \
        | awk -v what="$3" '{ n += (what == "packets" ? $1 : $2) } END { print n + 0 }'
}
# Take-up for vif 0: what the backend offered and what Linux's netfront wrote, each taken
# value cross-checked with what the backend logged on connect and its counters; the host
# checks the lines against Protocols/realxen-net-takeup.tsv.
net_takeup_report() {
    keys=$1 vpath=$2
    fk() { v=$(sed -n "s|^fe:$1 ||p" "$keys" | head -n 1); echo "${v:-${2:-absent}}"; }
    bk() { v=$(sed -n "s|^be:$1 ||p" "$keys" | head -n 1); echo "${v:-${2:-absent}}"; }
    connected=$(grep "netback: connected" $nlog | grep "interface=$tap0 " | tail -n 1)
    logged() { echo "$connected" | sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
    tf() { [ "$1" = true ] && echo 1 || { [ "$1" = false ] && echo 0 || echo none; }; }
    queue_lines=$(grep "netback queue statistics" $nlog | grep -c "queue=[^ ]*$vpath[/ ]")
    q=$(fk multi-queue-num-queues 1)
    [ "$q" = "$(logged queues)" ] && [ "$q" = "$queue_lines" ] && [ "$q" = "$(field eth0-queues "$up_line")" ] || q=disagree
    echo "REALXEN-NETTAKEUP queues offered=$(bk multi-queue-max-queues 1) taken=$q frontend-key=$(fk multi-queue-num-queues) backend-log=$(logged queues) backend-queue-statistics=$queue_lines domu-tx-queues=$(field eth0-queues "$up_line")"
    # Split event channels: event-channel-tx and -rx (of queue 0 when there are several).
    split=0
    grep -q "^fe:\(queue-0/\)\{0,1\}event-channel-tx " "$keys" && split=1
    [ "$split" = "$(tf "$(logged split-event-channels)")" ] || split=disagree
    echo "REALXEN-NETTAKEUP split-event-channels offered=$(bk feature-split-event-channels 0) taken=$split backend-log=$(logged split-event-channels)"
    sg=$(fk feature-sg 0)
    [ "$sg" = "$(tf "$(logged sg)")" ] || sg=disagree
    # MTU 9000 on eth1 needs sg in Linux's netfront.
    echo "REALXEN-NETTAKEUP sg offered=$(bk feature-sg 0) taken=$sg backend-log=$(logged sg) domu-eth1-mtu=$(field eth1-mtu "$up_line")"
    for g in 4 6; do
        v=$(fk feature-gso-tcpv$g 0)
        [ "$v" = "$(tf "$(logged gso-tcpv$g)")" ] || v=disagree
        echo "REALXEN-NETTAKEUP gso-tcpv$g offered=$(bk feature-gso-tcpv$g 0) taken=$v backend-log=$(logged gso-tcpv$g)"
    done
    # Checksum offload is on unless the frontend writes feature-no-csum-offload = 1.
    csum=1
    [ "$(fk feature-no-csum-offload 0)" = 1 ] && csum=0
    [ "$csum" = "$(tf "$(logged csum-offload)")" ] || csum=disagree
    echo "REALXEN-NETTAKEUP csum-offload offered=1 taken=$csum frontend-no-csum-offload=$(fk feature-no-csum-offload) backend-log=$(logged csum-offload)"
    echo "REALXEN-NETTAKEUP ipv6-csum-offload offered=$(bk feature-ipv6-csum-offload 0) taken=$(fk feature-ipv6-csum-offload 0)"
    echo "REALXEN-NETTAKEUP rx-notify offered=none taken=$(fk feature-rx-notify 0)"
    echo "REALXEN-NETTAKEUP rx-copy offered=$(bk feature-rx-copy 0) taken=$(fk request-rx-copy 0)"
    ctrl=0
    grep -q "^fe:ctrl-ring-ref " "$keys" && ctrl=1
    echo "REALXEN-NETTAKEUP ctrl-ring offered=$(bk feature-ctrl-ring 0) taken=$ctrl"
    echo "REALXEN-NETTAKEUP multicast-control offered=$(bk feature-multicast-control 0) taken=$(fk request-multicast-control 0) dynamic-offered=$(bk feature-dynamic-multicast-control 0)"
    # The counters: the transfers on vif 0 went through this backend, each way.
    txb=$(net_counter "$vpath" tx bytes) rxb=$(net_counter "$vpath" rx bytes)
    txp=$(net_counter "$vpath" tx packets) rxp=$(net_counter "$vpath" rx packets)
    carried=0
    [ "$txb" -ge 67108864 ] && [ "$rxb" -ge 67108864 ] && carried=1
    echo "REALXEN-NETTAKEUP counters offered=none taken=$carried tx-packets=$txp tx-bytes=$txb rx-packets=$rxp rx-bytes=$rxb"
}
# Ends the domU named $1 with xl destroy; sets destroy_rc and destroy_why.
net_destroy() {
    timeout -k 10 60 xl destroy "$1" > /tmp/xl-destroy-$1.log 2>&1; destroy_rc=$?
    destroy_why="xl destroy rc=$destroy_rc$(grep -qi 'timed out\|timeout' /tmp/xl-destroy-$1.log && echo ', timed out')"
}
# Waits up to 20 s for the backend to hold again what it held idle, and for $1 to be gone.
net_wait_released() {
    i=0
    while [ $i -lt 80 ] && { [ "$(holdings $npid)" != "$held_idle" ] || [ -e /sys/class/net/$1 ]; }; do
        sleep 0.25; i=$((i + 1))
    done
}

net_steps() {
    nlog=/tmp/netback.log
    name=realxen-net
    con=/var/log/xen/console/guest-$name.log
    modprobe tun && modprobe bridge || { for s in $net_step_names; do result $s FAIL "modprobe tun or bridge failed"; done; return; }
    net_bridge xenbr0 198.18.0.1/24 1500 && net_bridge xenbr1 198.18.1.1/24 9000 \
        || { for s in $net_step_names; do result $s FAIL "could not make the bridges xenbr0 and xenbr1"; done; return; }
    head -c 67108864 /dev/urandom > $net_rand
    head -c 16777216 $net_rand > $net_rand16
    rand_sha=$(sha $net_rand)
    rand16_sha=$(sha $net_rand16)
    echo "REALXEN-NET backend: xensplit netback --platform xen --verbose --max-queues 2; kernel xen-netback $(kernel_netback)"
    start_netback $nlog --verbose --max-queues 2
    npid=$netback_pid
    if ! grep -q "$net_serving" $nlog; then
        for s in $net_step_names; do result $s FAIL "xensplit netback did not start (see netback log)"; done
        return
    fi
    held_idle=$(holdings $npid)
    mark net-backend-up "pid=$npid $held_idle"
    t=$(up)
    timeout -k 10 120 xl create $P/domu-net.cfg > /tmp/xl-create-net.log 2>&1; create_rc=$?
    create_s=$(since "$t")
    domid=$(xl domid $name 2>/dev/null)
    tap0=vif$domid.0 tap1=vif$domid.1
    bpath=/local/domain/0/backend/vif/$domid fpath=/local/domain/$domid/device/vif
    # Item 1: xl ran vif-bridge for both vifs, which found the backend's TAP devices.
    vif_state="$tap0 exists=$([ -e /sys/class/net/$tap0 ] && echo yes || echo no) on-xenbr0=$(port_of $tap0 xenbr0) mtu=$(cat /sys/class/net/$tap0/mtu 2>/dev/null) hotplug-status=$(xenstore-read $bpath/0/hotplug-status 2>&1);"
    vif_state="$vif_state $tap1 exists=$([ -e /sys/class/net/$tap1 ] && echo yes || echo no) on-xenbr1=$(port_of $tap1 xenbr1) mtu=$(cat /sys/class/net/$tap1/mtu 2>/dev/null) hotplug-status=$(xenstore-read $bpath/1/hotplug-status 2>&1)"
    mark net-domu-created "domid=${domid:-none} rc=$create_rc seconds=$create_s"
    [ -n "$domid" ] && wait_console "DOMU-MARK net-listening" $con 360
    up_line=$(console_line net-up $con)
    states="vif0 backend=$(xenstore-read $bpath/0/state 2>&1) frontend=$(xenstore-read $fpath/0/state 2>&1) vif1 backend=$(xenstore-read $bpath/1/state 2>&1) frontend=$(xenstore-read $fpath/1/state 2>&1)"
    mark net-domu-listening "$states"
    vif_why="xl create rc=$create_rc in ${create_s}s$(grep -qi 'timed out\|timeout' /tmp/xl-create-net.log && echo ', timed out'); $vif_state; $states; kernel xen-netback $(kernel_netback)"
    if [ "$create_rc" = 0 ] && ! grep -qi 'timed out\|timeout' /tmp/xl-create-net.log \
            && [ "$vif_state" = "$tap0 exists=yes on-xenbr0=yes mtu=1500 hotplug-status=connected; $tap1 exists=yes on-xenbr1=yes mtu=9000 hotplug-status=connected" ] \
            && [ "$states" = "vif0 backend=4 frontend=4 vif1 backend=4 frontend=4" ] && [ "$(kernel_netback)" = not-loaded ]; then
        result net-vif PASS "$vif_why"
    else
        result net-vif FAIL "$vif_why"
    fi
    echo "REALXEN-NET console: $up_line"
    # Item 2: ping both ways, 64 MiB each way on eth0 (MTU 1500) and on eth1 (MTU 9000).
    domu_ping0=$(console_line "net-ping eth0" $con)
    domu_ping1=$(console_line "net-ping eth1" $con)
    mark net-traffic-begin
    net_traffic 198.18.0.2 $con 56 5001 eth0 64
    ping0_ok=$ping_ok; tcp0_ok="$send_ok $read_ok"; tcp0_why=$tcp_why
    mark net-traffic-eth0-done
    net_traffic 198.18.1.2 $con 8000 5003 eth1 16
    ping1_ok=$ping_ok; tcp1_ok="$send_ok $read_ok"; tcp1_why=$tcp_why
    mark net-traffic-end
    echo "REALXEN-NET eth0: $tcp0_why"
    echo "REALXEN-NET eth1: $tcp1_why"
    why="domU: ${domu_ping0:-no net-ping eth0 line}; dom0 to 198.18.0.2: ping $ping0_ok"
    if echo "$domu_ping0" | grep -q '3-packets-received' && [ "$ping0_ok" = yes ]; then
        result net-ping PASS "$why"
    else
        result net-ping FAIL "$why"
    fi
    if [ "$tcp0_ok" = "yes yes" ]; then result net-tcp PASS "eth0: $tcp0_why"; else result net-tcp FAIL "eth0: $tcp0_why"; fi
    why="domU eth1 mtu $(field eth1-mtu "$up_line"), its ping -s 8000: ${domu_ping1:-none}; dom0's ping -s 8000 $ping1_ok; $tcp1_why"
    if [ "$(field eth1-mtu "$up_line")" = 9000 ] && echo "$domu_ping1" | grep -q '3-packets-received' && [ "$ping1_ok" = yes ] \
            && [ "$tcp1_ok" = "yes yes" ]; then
        result net-jumbo PASS "$why"
    else
        result net-jumbo FAIL "$why"
    fi
    # Take-up keys, saved before the destroy (xl removes them).
    { xenstore-ls -f $fpath/0 2>/dev/null | sed -n "s|^$fpath/0/\([^ ]*\) = \"\(.*\)\"$|fe:\1 \2|p"
      xenstore-ls -f $bpath/0 2>/dev/null | sed -n "s|^$bpath/0/\([^ ]*\) = \"\(.*\)\"$|be:\1 \2|p"; } > /tmp/net-keys
    xenstore-ls -fp $fpath > /tmp/xs-net-frontend.txt 2>&1
    xenstore-ls -fp $bpath > /tmp/xs-net-backend.txt 2>&1
    held_connected=$(holdings $npid)
    # Item 4: xl destroy while iperf3 sends to the domU.
    timeout -k 5 120 iperf3 -c 198.18.0.2 -t 90 -f m --forceflush > /tmp/iperf-destroy.log 2>&1 &
    ipid=$!
    # Two interval lines: the transfer is under way.
    i=0
    while [ $i -lt 80 ] && [ "$(grep -c 'Mbits/sec' /tmp/iperf-destroy.log)" -lt 2 ]; do sleep 0.25; i=$((i + 1)); done
    flowing=$(grep -c 'Mbits/sec' /tmp/iperf-destroy.log)
    mark net-destroy "iperf3 interval lines so far=$flowing; $held_connected"
    net_destroy $name
    kill $ipid 2>/dev/null
    wait $ipid 2>/dev/null
    net_wait_released $tap0
    held_after=$(holdings $npid)
    gone="$tap0 $([ -e /sys/class/net/$tap0 ] && echo present || echo gone), $tap1 $([ -e /sys/class/net/$tap1 ] && echo present || echo gone)"
    alive=$(kill -0 $npid 2>/dev/null && echo running || echo exited)
    mark net-destroyed "$held_after"
    why="$destroy_why with iperf3 flowing ($flowing interval lines); $gone; backend held idle: $held_idle, connected: $held_connected, after: $held_after; backend $alive"
    if [ "$destroy_rc" = 0 ] && [ "$flowing" -gt 0 ] && [ "$gone" = "$tap0 gone, $tap1 gone" ] && [ "$held_after" = "$held_idle" ] \
            && [ "$held_connected" != "$held_idle" ] && [ "$alive" = running ]; then
        result net-destroy PASS "$why"
    else
        result net-destroy FAIL "$why"
    fi
    # Counters are logged as the queues go: both vifs carried their transfers.
    i=0
    while [ $i -lt 40 ] && [ "$(grep -c 'netback queue statistics' $nlog)" -lt 4 ]; do sleep 0.25; i=$((i + 1)); done
    v0=vif/$domid/0 v1=vif/$domid/1
    why="vif0 tx $(net_counter $v0 tx bytes) rx $(net_counter $v0 rx bytes) bytes; vif1 tx $(net_counter $v1 tx bytes) rx $(net_counter $v1 rx bytes) bytes; domU saw $(field vifs "$up_line") vifs"
    if [ "$(field vifs "$up_line")" = 2 ] && [ "$(net_counter $v0 rx bytes)" -ge 67108864 ] && [ "$(net_counter $v1 rx bytes)" -ge 16777216 ] \
            && [ "$(net_counter $v0 tx bytes)" -ge 67108864 ] && [ "$(net_counter $v1 tx bytes)" -ge 16777216 ]; then
        result net-two-vifs PASS "$why"
    else
        result net-two-vifs FAIL "$why"
    fi
    net_takeup_report /tmp/net-keys vif/$domid/0 > /tmp/net-takeup.txt
    cat /tmp/net-takeup.txt
    queues=$(sed -n 's/^REALXEN-NETTAKEUP queues .*taken=\([^ ]*\).*/\1/p' /tmp/net-takeup.txt)
    why="$(sed -n 's/^REALXEN-NETTAKEUP queues //p' /tmp/net-takeup.txt)"
    if [ "$queues" = 2 ]; then result net-queues PASS "$why"; else result net-queues FAIL "$why"; fi
    if grep -q "interface=$tap0 " $nlog && [ "$(grep -c '^REALXEN-NETTAKEUP' /tmp/net-takeup.txt)" -ge 10 ]; then
        result net-takeup PASS "recorded (the host checks the REALXEN-NETTAKEUP lines against Protocols/realxen-net-takeup.tsv)"
    else
        result net-takeup FAIL "no 'netback: connected' line for $tap0 in the backend log"
    fi
    # Item 4, second half: the same backend serves a second domU, the benchmark's (created
    # here with no vif; the vif is attached while this backend runs, then detached).
    net_bench_domu
    bench_gen=$((bench_gen + 1))
    xl network-attach $bench_name mac=$bench_mac bridge=xenbr0 > /tmp/xl-network-attach-second.log 2>&1; attach2_rc=$?
    wait_console "DOMU-MARK net-listening gen=$bench_gen " $bench_con 240
    listening=$(console_line "net-listening gen=$bench_gen " $bench_con)
    mark net-second-listening "${listening:-no net-listening gen=$bench_gen line}"
    ping_out=$(busybox ping -c 3 -W 5 198.18.0.2 2>&1 | grep -o '[0-9]* packets received')
    timeout -k 5 60 iperf3 -c 198.18.0.2 -t 3 -f m > /tmp/iperf-second.log 2>&1; iperf_rc=$?
    iperf_line=$(grep ' receiver$' /tmp/iperf-second.log | tail -n 1 | sed 's/^\[ *[0-9]*\] *//; s/  */ /g')
    held_second=$(holdings $npid)
    timeout -k 10 60 xl network-detach $bench_name $bench_mac > /tmp/xl-network-detach-second.log 2>&1; detach2_rc=$?
    net_bench_gone second
    net_wait_released vif$(xl domid $bench_name 2>/dev/null).0
    held_after2=$(holdings $npid)
    kill -TERM $npid 2>/dev/null
    wait $npid; stop_rc=$?
    why="domU $bench_name: xl network-attach rc=$attach2_rc; the domU: ${listening:-no net-listening line}; dom0's ping: ${ping_out:-nothing}; iperf3 rc=$iperf_rc ${iperf_line:-no receiver line}; backend held $held_second, after xl network-detach (rc=$detach2_rc) $held_after2; SIGTERM: backend exited $stop_rc"
    if [ "$attach2_rc" = 0 ] && [ "$(field ping "$listening")" = 3-packets-received ] && [ "$ping_out" = "3 packets received" ] \
            && [ "$iperf_rc" = 0 ] && [ -n "$iperf_line" ] && [ "$held_second" != "$held_idle" ] && [ "$detach2_rc" = 0 ] \
            && [ "$held_after2" = "$held_idle" ] && [ "$stop_rc" = 0 ]; then
        result net-second PASS "$why"
    else
        result net-second FAIL "$why"
    fi
}

# Item 5: our frontend against Linux's xen-netback. xl attaches a vif to dom0 itself on
# xenbr2; `xensplit netfront Domain-0 DEVID` is its frontend, a TAP device in a namespace.
net_frontend_step() {
    flog=/tmp/netfront.log
    ns=realxen-nf
    if grep -q '^xen_netfront ' /proc/modules; then
        result net-frontend-kernel FAIL "xen-netfront is loaded in dom0; it would take the vif"
        return
    fi
    modprobe tun; modprobe bridge
    [ -s $net_rand16 ] || head -c 16777216 /dev/urandom > $net_rand16
    rand16_sha=$(sha $net_rand16)
    modprobe xen-netback || { result net-frontend-kernel FAIL "modprobe xen-netback failed"; return; }
    # xen-netback's own complaints (netdev_dbg) go to the kernel log, quoted on failure.
    mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
    echo 'module xen_netback +p' > /sys/kernel/debug/dynamic_debug/control 2>/dev/null
    dmesg -c > /dev/null
    net_bridge xenbr2 198.18.2.1/24 1500
    timeout -k 10 60 xl network-attach 0 mac=00:16:3e:58:00:10 bridge=xenbr2 > /tmp/xl-network-attach.log 2>&1; attach_rc=$?
    devid=$(xenstore-list /local/domain/0/device/vif 2>/dev/null | tail -n 1)
    kvif=vif0.$devid
    fb=/local/domain/0/backend/vif/0/$devid
    echo "REALXEN-NETFRONT xl network-attach 0 rc=$attach_rc devid=${devid:-none} backend state $(xenstore-read $fb/state 2>&1) $kvif on xenbr2: $(port_of $kvif xenbr2)"
    ip netns add $ns
    $P/xensplit netfront Domain-0 "${devid:-0}" --tap nf0 --netns $ns --platform xen --verbose > $flog 2>&1 &
    fpid=$!
    i=0
    while [ $i -lt 240 ] && ! grep -q "connected as nf0" $flog && kill -0 $fpid 2>/dev/null; do sleep 0.25; i=$((i + 1)); done
    echo "REALXEN-NETFRONT $(grep -o 'netfront: Domain-0 vif .*connected as.*' $flog | head -n 1)"
    ip netns exec $ns ip link set lo up
    ip netns exec $ns ip addr add 198.18.2.2/24 dev nf0
    rm -f /tmp/nf-got /tmp/net-read
    ping_out=none ping_back=none src=x rrc=x send_s=0 read_s=0 l1= l2=
    if grep -q "connected as nf0" $flog; then
        # The first frames may go before the bridge port forwards: ping until one answers.
        i=0
        while [ $i -lt 30 ] && ! ip netns exec $ns busybox ping -c 1 -W 1 198.18.2.1 > /dev/null 2>&1; do i=$((i + 1)); done
        ping_out=$(ip netns exec $ns busybox ping -c 3 -W 5 198.18.2.1 2>&1 | grep -o '[0-9]* packets received')
        ping_back=$(busybox ping -c 3 -W 5 198.18.2.2 2>&1 | grep -o '[0-9]* packets received')
        # 16 MiB each way: the namespace serves, dom0 (the kernel vif's side) is the client.
        ip netns exec $ns busybox nc -l -p 5011 -e sh -c 'sha256sum | cut -d" " -f1 > /tmp/nf-got' &
        l1=$!
        ip netns exec $ns busybox nc -l -p 5012 -e cat $net_rand16 &
        l2=$!
        sleep 0.5
        t=$(up)
        nc_send 198.18.2.2 5011 300 $net_rand16; src=$?
        send_s=$(since "$t")
        i=0
        while [ $i -lt 40 ] && [ ! -s /tmp/nf-got ]; do sleep 0.25; i=$((i + 1)); done
        t=$(up)
        nc_read 198.18.2.2 5012 300; rrc=$?
        read_s=$(since "$t")
    fi
    state_connected="backend=$(xenstore-read $fb/state 2>&1) frontend=$(xenstore-read /local/domain/0/device/vif/$devid/state 2>&1)"
    # What each end saw, for a failure: both interfaces' counters, the bridge's ports, the
    # namespace's neighbours and IP/ICMP counters, the vif's nodes.
    {
        echo "kernel vif $kvif on xenbr2: $(port_of $kvif xenbr2); xenbr2 ports: $(ls /sys/class/net/xenbr2/brif 2>&1 | paste -sd' ' -)"
        ip -s link show $kvif
        ip netns exec $ns ip -s link show nf0
        ip netns exec $ns ip neigh
        ip neigh show dev xenbr2
        ip netns exec $ns cat /proc/net/snmp | grep '^\(Ip\|Icmp\):'
        xenstore-ls -fp $fb
        xenstore-ls -fp /local/domain/0/device/vif/$devid
        dmesg | tail -n 30
    } > /tmp/netfront-diag.txt 2>&1
    [ -n "$l1" ] && kill $l1 $l2 2>/dev/null
    kill -TERM $fpid 2>/dev/null
    wait $fpid; stop_rc=$?
    timeout -k 10 60 xl network-detach 0 "$devid" > /tmp/xl-network-detach.log 2>&1; detach_rc=$?
    i=0
    while [ $i -lt 40 ] && ! rmmod xen-netback 2>/dev/null; do sleep 0.25; i=$((i + 1)); done
    ip netns del $ns
    ip link del xenbr2
    why="attach rc=$attach_rc; states while served: $state_connected; ping from the namespace: ${ping_out:-nothing}, from dom0: ${ping_back:-nothing}; 16 MiB to the frontend rc=$src in ${send_s}s ($(rate 16 "$send_s") MiB/s), got $(cat /tmp/nf-got 2>/dev/null); 16 MiB from it rc=$rrc in ${read_s}s ($(rate 16 "$read_s") MiB/s), got $(cat /tmp/net-read 2>/dev/null) (sent $rand16_sha); netfront exited $stop_rc; network-detach rc=$detach_rc; xen-netback $(kernel_netback)"
    echo "REALXEN-NETFRONT $why"
    if [ "$attach_rc" = 0 ] && [ "$state_connected" = "backend=4 frontend=4" ] && [ "$ping_out" = "3 packets received" ] \
            && [ "$ping_back" = "3 packets received" ] && [ "$src" = 0 ] && [ "$(cat /tmp/nf-got 2>/dev/null)" = "$rand16_sha" ] \
            && [ "$rrc" = 0 ] && [ "$(cat /tmp/net-read 2>/dev/null)" = "$rand16_sha" ] && [ "$stop_rc" = 0 ] \
            && [ "$(kernel_netback)" = not-loaded ]; then
        result net-frontend-kernel PASS "xensplit netfront on Linux's xen-netback: ping both ways, 16 MiB each way verified; $why"
    else
        result net-frontend-kernel FAIL "$why"
    fi
}

# Item 6: iperf3 between dom0 and a 2-vCPU domU with one vif on xenbr0, served in
# alternating rounds by Linux's xen-netback (the reference, with xl's vif-bridge) and by
# `xensplit netback`: one domU, the vif attached and detached per backend and round. Workloads (4 s each, dom0 the client): tcp-rx (dom0 to domU), tcp-tx
# (domU to dom0, -R), udp64-rx and udp64-tx (64-byte datagrams, as fast as iperf3 sends).
# Per workload dom0 prints the receiver's rate, its CPU time split (/proc/stat) and, for
# ours, each backend thread's CPU time.
net_bench_cpu() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $5 + $6 }' /proc/stat; }
net_bench_threads() {
    for t in /proc/$1/task/*; do
        [ -r $t/stat ] && awk '{ sub(/^[^)]*\) /, ""); print $12 + $13 }' $t/stat | sed "s|^|$(cat $t/comm | tr ' ' '_'):|"
    done
}
net_bench_one() {
    side=$1 round=$2 wl=$3 pid=$4
    case $wl in
        tcp-rx) args="-t 4" ;;
        tcp-tx) args="-t 4 -R" ;;
        udp64-rx) args="-t 4 -u -l 64 -b 0" ;;
        udp64-tx) args="-t 4 -u -l 64 -b 0 -R" ;;
    esac
    cpu0=$(net_bench_cpu)
    t0=$(up)
    [ -n "$pid" ] && net_bench_threads $pid > /tmp/threads0
    # What TCP and the vif saw over the workload (REALXEN-NETDIAG, for a short result):
    # dom0's retransmissions and timeouts, the vif's drops, the domU's own counters.
    vif=$(ls /sys/class/net | grep '^vif' | head -n 1)
    nstat -n > /dev/null 2>&1
    timeout -k 5 60 iperf3 -c 198.18.0.2 $args -f m > /tmp/iperf-$wl.log 2>&1
    rc=$?
    cpu1=$(net_bench_cpu)
    line=$(grep ' receiver$' /tmp/iperf-$wl.log | tail -n 1)
    case $wl in
        tcp-*) value=$(echo "$line" | awk '{ for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") print $(i - 1) }'); unit=Mbit/s ;;
        udp*) value=$(echo "$line" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\/[0-9]+$/) { split($i, p, "/"); print (p[2] - p[1]) / 4 } }'); unit=pkt/s ;;
    esac
    busy=$(echo "$cpu0 $cpu1" | awk '{ b = $3 - $1; i = $4 - $2; if (b + i > 0) printf "%.0f", 100 * b / (b + i); else print 0 }')
    if [ $rc = 0 ] && [ -n "$value" ]; then
        echo "REALXEN-NETBENCH side=$side round=$round name=$wl value=$value unit=$unit dom0-cpu-busy=$busy%"
    else
        echo "REALXEN-NETBENCH-ERROR $side $round $wl iperf3 rc=$rc: $(tail -n 2 /tmp/iperf-$wl.log | paste -sd' ' -)"
    fi
    if [ -n "$pid" ]; then
        net_bench_threads $pid > /tmp/threads1
        # CPU seconds per thread name over the workload (4 s of traffic plus iperf3's setup).
        echo "REALXEN-NETBENCH-THREADS side=$side round=$round name=$wl wall=$(since "$t0")s $(awk -F: -v hz="$(getconf CLK_TCK 2>/dev/null || echo 100)" 'NR == FNR { a[$1] += $2; next } { d[$1] += $2 } END { for (k in d) if (d[k] - a[k] > 0) printf "%s=%.2fs ", k, (d[k] - a[k]) / hz }' /tmp/threads0 /tmp/threads1)"
    fi
    echo "REALXEN-NETDIAG $side $wl dom0-nstat $(nstat -z 2>/dev/null | grep -E 'TcpRetransSegs|TcpInCsumErrors|TcpInErrs|TcpExtTCPTimeouts|TcpExtTCPLostRetransmit|TcpOutSegs|TcpInSegs|TcpExtTCPFastRetrans|TcpExtTCPSlowStartRetrans|IpInDiscards|TcpExtTCPOFOQueue|TcpExtTCPSpuriousRTOs|TcpExtTCPDSACK|Reorder' | awk '{printf "%s=%s ", $1, $2}')"
    echo "REALXEN-NETDIAG $side $wl dom0-vif $(ip -s -s link show dev $vif 2>&1 | paste -sd' ' - | tr -s ' ')"
    timeout -k 2 15 busybox nc 198.18.0.2 5098 < /dev/null 2>&1 | sed "s/^/REALXEN-NETDIAG $side $wl domu /"
    # The events the domU raised on the backend's ports, as dom0 counts them: the kernel's
    # vif IRQs, or the evtchn device's per-port IRQs of our process (cumulative; the next
    # workload's line minus this one is what it raised).
    grep -E 'vif|evtchn' /proc/interrupts | tr -s ' ' | sed "s/^/REALXEN-NETDIAG $side $wl dom0-interrupts /"
}
# The bench domU, with no vif at first (net-second uses it too): made once.
bench_name=realxen-netbench
bench_mac=00:16:3e:58:00:21
bench_con=/var/log/xen/console/guest-$bench_name.log
bench_gen=0
net_bench_domu() {
    xl domid $bench_name > /dev/null 2>&1 && return 0
    timeout -k 10 120 xl create $P/domu-net.cfg "name=\"$bench_name\"" 'extra="console=hvc0 rdinit=/init realxen.role=netbench"' \
        'vif=[]' > /tmp/xl-create-netbench.log 2>&1 || return 1
    wait_console "DOMU-MARK ready" $bench_con 240
    mark netbench-domu-ready
}
# After a detach: waits (up to 60 s) until the bench domU says its eth0 went, so the next
# attach's eth0 is never the last one still going away (a CI run's rounds 2 and 3 took the
# old eth0's teardown for the new vif and found no ping).
net_bench_gone() {
    wait_console "DOMU-MARK net-gone gen=$bench_gen " $bench_con 120
    console_line "net-gone gen=$bench_gen " $bench_con | grep -q . \
        || echo "REALXEN-NETBENCH-ERROR $1 the domU's eth0 was still there 60 s after xl network-detach"
}
# One round for one backend: the vif attached to the bench domU, the workloads, the vif
# detached. $bench_gen counts the attaches (the domU's "net-listening gen=N").
net_bench_round() {
    side=$1 round=$2
    bench_gen=$((bench_gen + 1))
    pid=
    if [ $side = kernel ]; then
        modprobe xen-netback || { echo "REALXEN-NETBENCH-ERROR $side $round modprobe xen-netback failed"; return; }
    else
        start_netback /tmp/netback-bench-$round.log
        pid=$netback_pid
    fi
    mark netbench-attach "$side round=$round"
    timeout -k 10 120 xl network-attach $bench_name mac=$bench_mac bridge=xenbr0 > /tmp/xl-network-attach-bench.log 2>&1 \
        || echo "REALXEN-NETBENCH-ERROR $side $round xl network-attach: $(tail -n 1 /tmp/xl-network-attach-bench.log)"
    wait_console "DOMU-MARK net-listening gen=$bench_gen " $bench_con 240
    mark netbench-listening "$side round=$round"
    listening=$(console_line "net-listening gen=$bench_gen " $bench_con)
    if [ -n "$listening" ] && [ "$(field ping "$listening")" = 3-packets-received ]; then
        for wl in tcp-rx tcp-tx udp64-rx udp64-tx; do net_bench_one $side $round $wl $pid; done
    else
        echo "REALXEN-NETBENCH-ERROR $side $round the domU's eth0 did not come up and ping dom0: ${listening:-no net-listening gen=$bench_gen line}"
    fi
    [ $round = 1 ] && echo "REALXEN-NETBENCH-INFO $side $(console_line "net-up gen=$bench_gen " $bench_con)"
    timeout -k 10 60 xl network-detach $bench_name $bench_mac > /tmp/xl-network-detach-bench.log 2>&1 \
        || echo "REALXEN-NETBENCH-ERROR $side $round xl network-detach: $(tail -n 1 /tmp/xl-network-detach-bench.log)"
    net_bench_gone "$side $round"
    if [ $side = kernel ]; then
        i=0
        while [ $i -lt 40 ] && ! rmmod xen-netback 2>/dev/null; do sleep 0.25; i=$((i + 1)); done
        grep -q '^xen_netback ' /proc/modules && echo "REALXEN-NETBENCH-ERROR $side $round rmmod xen-netback failed"
    else
        kill -TERM $pid 2>/dev/null
        wait $pid || echo "REALXEN-NETBENCH-ERROR $side $round xensplit netback exited $?"
        # What the backend said (its queues, warnings, the shutdown), for a slow round.
        tail -n 30 /tmp/netback-bench-$round.log | sed "s/^/REALXEN-NETDIAG $side round=$round backend-log /"
    fi
}
net_bench_steps() {
    rounds=$(cmdline_value bench)
    rounds=${rounds:-3}
    if [ "$rounds" = 0 ]; then
        result netbench SKIP "realxen.bench=0 on the kernel command line"
        return
    fi
    modprobe tun; modprobe bridge
    [ -e /sys/class/net/xenbr0 ] || net_bridge xenbr0 198.18.0.1/24 1500
    net_bench_domu || { result netbench FAIL "xl create: $(tail -n 1 /tmp/xl-create-netbench.log)"; return; }
    r=1
    while [ $r -le "$rounds" ]; do
        mark netbench-round "round=$r"
        net_bench_round kernel $r
        net_bench_round ours $r
        r=$((r + 1))
    done
    timeout -k 10 60 xl destroy $bench_name > /dev/null 2>&1 || echo "REALXEN-NETBENCH-ERROR xl destroy $bench_name failed"
    log_section netbench-console $bench_con 40
    result netbench PASS "$rounds alternating rounds ran on one domU (the host checks every round reported every workload)"
}
