#!/bin/sh
# /init of the domU's busybox initramfs (scripts/realxen/run-test.sh builds it with
# xen-blkfront.ko, xen-netfront.ko, ext4 and its modules, and e2fsprogs). Prints DOMU-MARK
# lines on its console, which xenconsoled logs in dom0 for dom0-init.sh to read.
# realxen.role= on the kernel command line picks the job:
#   vbd (default)  the block checks on xvda (read, patterns), xvdb (read-only) and xvdc
#                  (discard, ext4), and what blkfront negotiated
#   check          a later domU on the same backend: reads all of xvda
#   bench          times dd with O_DIRECT on xvda (dom0's ramdisk)
#   restart        writes xvda while dom0 replaces its backend, then verifies (domu-restart.sh)
#   sector4k       xvda has 4096-byte sectors: its size and block size, a pattern near its end
#   net            the net checks: eth0 (198.18.0.2, MTU 1500) and eth1 when present
#                  (198.18.1.2, MTU 9000), pings to dom0, 64 MiB of random data served
#                  and received over TCP on each (busybox nc), iperf3 as a server
#   netbench       iperf3 as a server for dom0's benchmark; eth0 is set up each time dom0
#                  attaches a vif (it detaches and attaches one per backend and round)
#   agent          xensplit-agent on the console: the user side of this domU's kernel
#                  frontends for the conformance suite in dom0
export PATH=/bin:/sbin:/usr/bin
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
up() { cut -d' ' -f1 /proc/uptime; }
role=$(sed -n 's/.*realxen\.role=\([^ ]*\).*/\1/p' /proc/cmdline)
role=${role:-vbd}
echo "DOMU-MARK up uptime=$(up) role=$role cpus=$(grep -c ^processor /proc/cpuinfo)"
# Loading a frontend waits until its devices connect, so each loads in the background
# and "ready" comes once both returned or after 60 s, whichever is first. blkfront may use
# rings of up to 16 pages (its default is one).
mkdir -p /tmp
(insmod /lib/xen-blkfront.ko max_ring_page_order=4 && echo "DOMU-MARK blkfront-loaded uptime=$(up)"; touch /tmp/blk) &
(insmod /lib/xen-netfront.ko && echo "DOMU-MARK netfront-loaded uptime=$(up)"; touch /tmp/net) &
i=0
while { [ ! -e /tmp/blk ] || [ ! -e /tmp/net ]; } && [ $i -lt 120 ]; do sleep 0.5; i=$((i + 1)); done
vbds=$(ls /sys/bus/xen/devices 2>/dev/null | grep -c '^vbd-')
echo "DOMU-MARK ready uptime=$(up) vbd-devices=$vbds"
i=0
while [ "$vbds" -gt 0 ] && [ ! -b /dev/xvda ] && [ $i -lt 120 ]; do sleep 0.5; i=$((i + 1)); done
drop_caches() {
    blockdev --flushbufs "$1" 2>/dev/null
    echo 3 > /proc/sys/vm/drop_caches
}
digest() { sha256sum "$1" | cut -d' ' -f1; }

# What blkfront took up for a disk: queues and limits from sysfs, grants and indirect
# descriptors from its "blkfront: xvdX: flush diskcache: ...; persistent grants: ..." line.
takeup() {
    q=/sys/block/$1/queue
    line=$(dmesg | grep "blkfront: $1: " | tail -n 1)
    persistent=$(echo "$line" | sed -n 's/.*persistent grants: \([a-z]*\).*/\1/p')
    indirect=$(echo "$line" | sed -n 's/.*indirect descriptors: \([a-z]*\).*/\1/p')
    flush=$(echo "$line" | sed -n 's/.*flush diskcache: \([a-z]*\).*/\1/p')
    echo "DOMU-MARK takeup-$1 queues=$(ls /sys/block/$1/mq | wc -l) max_segments=$(cat $q/max_segments)" \
        "write_cache=$(tr ' ' '-' < $q/write_cache) fua=$(cat $q/fua) discard_max_bytes=$(cat $q/discard_max_bytes)" \
        "discard_granularity=$(cat $q/discard_granularity) persistent=${persistent:-none} indirect=${indirect:-none}" \
        "flush=${flush:-none} ro=$(cat /sys/block/$1/ro)"
}

mtu() { cat /sys/class/net/$1/mtu 2>/dev/null || echo none; }
net_up_line() {
    echo "DOMU-MARK net-up ${1:+$1 }uptime=$(up) eth0-mtu=$(mtu eth0) eth1-mtu=$(mtu eth1)" \
        "eth0-queues=$(ls -d /sys/class/net/eth0/queues/tx-* 2>/dev/null | wc -l) eth0-mac=$(cat /sys/class/net/eth0/address 2>/dev/null)" \
        "vifs=$(ls /sys/bus/xen/devices 2>/dev/null | grep -c '^vif-')"
}
# ping_dom0 ADDRESS [OPTIONS]: the first frames may go before dom0's bridge port forwards,
# so ping until one answers, then count three.
ping_dom0() {
    n=0
    while [ $n -lt 30 ]; do
        ping -c 1 -W 1 $2 $1 > /dev/null 2>&1 && { ping -c 3 -W 5 $2 $1 2>&1 | grep -o '[0-9]* packets received'; return; }
        n=$((n + 1))
    done
    echo "0 packets received"
}

case $role in
net)
    # dom0 drives the transfers as the client: the domU serves. Each listener takes one
    # connection; a receiver prints the digest of what it read, a sender serves /tmp/rand.
    ip link set lo up
    ip addr add 198.18.0.2/24 dev eth0 2>/dev/null
    ip link set eth0 up 2>/dev/null
    if [ -e /sys/class/net/eth1 ]; then
        # Linux's netfront refuses an MTU past 1500 unless the backend offered feature-sg.
        ip link set eth1 mtu 9000 2>/tmp/mtu.err || echo "DOMU-MARK net-mtu failed: $(cat /tmp/mtu.err)"
        ip addr add 198.18.1.2/24 dev eth1
        ip link set eth1 up
    fi
    net_up_line
    echo "DOMU-MARK net-ping eth0 to=198.18.0.1 $(ping_dom0 198.18.0.1 | tr ' ' '-')"
    iperf3 -s -D > /dev/null 2>&1 || echo "DOMU-MARK net-iperf3 failed to start"
    head -c 67108864 /dev/urandom > /tmp/rand
    head -c 16777216 /tmp/rand > /tmp/rand16
    cat > /tmp/recv.sh <<'RECV'
#!/bin/sh
echo "DOMU-MARK net-received $1 sha256=$(sha256sum | cut -d' ' -f1) uptime=$(cut -d' ' -f1 /proc/uptime)" > /dev/console
RECV
    chmod 755 /tmp/recv.sh
    # 5001: dom0 sends over eth0; 5002: dom0 reads /tmp/rand; 5003 and 5004 the same on eth1
    # with 16 MiB (/tmp/rand16, the first 16 MiB of /tmp/rand).
    nc -l -p 5001 -e /tmp/recv.sh eth0 &
    nc -l -p 5002 -e cat /tmp/rand &
    if [ -e /sys/class/net/eth1 ]; then
        echo "DOMU-MARK net-ping eth1 to=198.18.1.1 size=8000 $(ping_dom0 198.18.1.1 '-s 8000' | tr ' ' '-')"
        nc -l -p 5003 -e /tmp/recv.sh eth1 &
        nc -l -p 5004 -e cat /tmp/rand16 &
    fi
    echo "DOMU-MARK net-listening uptime=$(up) rand-sha256=$(sha256sum < /tmp/rand | cut -d' ' -f1) rand16-sha256=$(sha256sum < /tmp/rand16 | cut -d' ' -f1)"
    sleep 100000
    ;;
netbench)
    # One domU for every round: dom0 attaches a vif (served by Linux's netback or ours),
    # runs iperf3 against the server here, and detaches it again. Each time eth0 appears
    # without its address it is set up, and "net-listening gen=N" says so the Nth time.
    ip link set lo up
    iperf3 -s -D > /dev/null 2>&1 || echo "DOMU-MARK net-iperf3 failed to start"
    # eth0 as the domU sees it (counters, TCP statistics, the event-channel interrupts the
    # backend raised on netfront's ports, the kernel log), for the lines dom0 prints after
    # each workload (REALXEN-NETDIAG).
    ( while true; do nc -l -p 5098 -e sh -c 'for f in /sys/class/net/eth0/statistics/*; do echo "$(basename $f)=$(cat $f)"; done | tr "\n" " "; echo; grep "^Tcp:" /proc/net/snmp; grep "^TcpExt:" /proc/net/netstat; ethtool -S eth0 2>/dev/null; grep -E "eth0|xen-net|vif" /proc/interrupts | tr -s " " | sed "s/^/interrupts: /"; dmesg | tail -n 8'; done ) &
    # A generation counts only once its address took: an eth0 still going away when seen
    # (the last vif's teardown) makes `ip addr add` fail and is not counted. "net-gone gen=N"
    # says the Nth eth0 went, which dom0 waits for before it attaches the next vif.
    gen=0
    present=0
    while true; do
        if [ -e /sys/class/net/eth0 ]; then
            if ! ip addr show dev eth0 2>/dev/null | grep -q 198.18.0.2 \
                    && ip addr add 198.18.0.2/24 dev eth0 2>/dev/null && ip link set eth0 up 2>/dev/null; then
                gen=$((gen + 1))
                present=1
                net_up_line "gen=$gen"
                echo "DOMU-MARK net-listening gen=$gen uptime=$(up) ping=$(ping_dom0 198.18.0.1 | tr ' ' '-')"
            fi
        elif [ $present = 1 ]; then
            present=0
            echo "DOMU-MARK net-gone gen=$gen uptime=$(up)"
        fi
        sleep 0.5
    done
    ;;
check)
    if [ -b /dev/xvda ]; then
        echo "DOMU-MARK check-read sha256=$(digest /dev/xvda) sectors=$(cat /sys/block/xvda/size) uptime=$(up)"
    fi
    echo "DOMU-MARK check-done uptime=$(up)"
    sleep 100000
    ;;
agent)
    # The conformance suite's user side of this domU's frontends (Protocols/conformance/
    # agent.md), on the console that dom0 opens through xenconsoled's pty. The kernel keeps
    # its messages off the console (printk level 1), so none lands inside a reply line.
    echo "DOMU-MARK check-done uptime=$(up) agent=$(ls /bin/xensplit-agent 2>/dev/null)"
    echo 1 > /proc/sys/kernel/printk
    while true; do
        /bin/xensplit-agent
        sleep 1
    done
    ;;
restart)
    . /restart.sh
    sleep 100000
    ;;
sector4k)
    # A 16 MiB disk of 4096-byte sectors: Linux sizes it from `sectors` in 512-byte units,
    # so a backend counting 4096-byte units would show 2 MiB and refuse the write at 12 MiB.
    if [ -b /dev/xvda ]; then
        yes XENSPLIT-REALXEN-4K | head -c 1048576 > /tmp/p4k
        w=ok
        dd if=/tmp/p4k of=/dev/xvda bs=4096 seek=3072 conv=notrunc,fsync 2>/tmp/dd4k.err || w=failed
        drop_caches /dev/xvda
        rb=bad
        [ "$(dd if=/dev/xvda bs=4096 skip=3072 count=256 2>/dev/null | sha256sum | cut -d' ' -f1)" = "$(digest /tmp/p4k)" ] && rb=ok
        echo "DOMU-MARK sector4k lbs=$(cat /sys/block/xvda/queue/logical_block_size) sectors=$(cat /sys/block/xvda/size) write=$w readback=$rb pattern=$(digest /tmp/p4k)"
    fi
    echo "DOMU-MARK sector4k-done uptime=$(up)"
    sleep 100000
    ;;
bench)
    # The same workload whichever backend serves xvda; O_DIRECT so every block is a request.
    t() {
        name=$1 mib=$2
        shift 2
        a=$(up)
        if "$@" 2>/tmp/bench.err; then
            b=$(up)
            echo "DOMU-BENCH $name mib=$mib seconds=$(echo "$a $b" | awk '{ printf "%.2f", $2 - $1 }')"
        else
            echo "DOMU-BENCH $name failed: $(tail -n 1 /tmp/bench.err)"
        fi
    }
    if [ -b /dev/xvda ]; then
        echo "DOMU-BENCH disk sectors=$(cat /sys/block/xvda/size) queues=$(ls /sys/block/xvda/mq | wc -l)"
        # Sized for emulation, where one 4 KiB request takes milliseconds.
        t read-1m 64 dd if=/dev/xvda of=/dev/null bs=1M count=64 iflag=direct
        t read-4k 4 dd if=/dev/xvda of=/dev/null bs=4k count=1024 iflag=direct
        t write-1m 64 dd if=/dev/zero of=/dev/xvda bs=1M count=64 oflag=direct conv=fsync
        t write-4k 4 dd if=/dev/zero of=/dev/xvda bs=4k count=1024 oflag=direct conv=fsync
    else
        echo "DOMU-BENCH no /dev/xvda"
    fi
    echo "DOMU-BENCH done uptime=$(up)"
    sleep 100000
    ;;
esac

# A second, read-only disk: its content must read back and a write must be refused. It runs
# beside the xvda checks, so a hang on one disk does not hide the other's result.
readonly_disk() {
    i=0
    while [ "$vbds" -gt 1 ] && [ ! -b /dev/xvdb ] && [ $i -lt 60 ]; do sleep 0.5; i=$((i + 1)); done
    if [ -b /dev/xvdb ]; then
        yes XENSPLIT-REALXEN-PATTERN-A | head -c 4096 > /tmp/ro-pattern
        if dd if=/tmp/ro-pattern of=/dev/xvdb bs=4096 seek=2 conv=notrunc,fsync 2>/dev/null; then wr=accepted; else wr=refused; fi
        drop_caches /dev/xvdb
        echo "DOMU-MARK xvdb ro=$(cat /sys/block/xvdb/ro) sectors=$(cat /sys/block/xvdb/size) write=$wr sha256=$(digest /dev/xvdb)"
        takeup xvdb
    fi
}

# A third disk for discard and a filesystem. Discard: 2 MiB of pattern at 4 MiB, the middle
# 1 MiB discarded, which must then read as zeroes while the pattern either side stays.
# Then mkfs.ext4 (which discards the whole disk first), mount, files, umount, a forced fsck
# that must find nothing, and the files read back after mounting again.
fs_disk() {
    i=0
    while [ "$vbds" -gt 2 ] && [ ! -b /dev/xvdc ] && [ $i -lt 60 ]; do sleep 0.5; i=$((i + 1)); done
    [ -b /dev/xvdc ] || return
    yes XENSPLIT-REALXEN-DISCARD | head -c 2097152 > /tmp/dpat
    dd if=/tmp/dpat of=/dev/xvdc bs=1M seek=4 conv=notrunc,fsync 2>/dev/null
    if blkdiscard -o 4718592 -l 1048576 /dev/xvdc 2>/tmp/discard.err; then dres=ok; else dres="failed:$(tr ' ' '_' < /tmp/discard.err)"; fi
    drop_caches /dev/xvdc
    part() { dd if="$1" bs=512k skip="$2" count="$3" 2>/dev/null | sha256sum | cut -d' ' -f1; }
    zeroes=$(head -c 1048576 /dev/zero | sha256sum | cut -d' ' -f1)
    dcheck=
    [ "$(part /dev/xvdc 9 2)" = "$zeroes" ] || dcheck="${dcheck}not-zero,"
    [ "$(part /dev/xvdc 8 1)" = "$(part /tmp/dpat 0 1)" ] || dcheck="${dcheck}bad-before,"
    [ "$(part /dev/xvdc 11 1)" = "$(part /tmp/dpat 3 1)" ] || dcheck="${dcheck}bad-after,"
    echo "DOMU-MARK discard result=$dres readback=${dcheck:-ok} uptime=$(up)"

    fs=
    for m in $(cat /lib/modules/order); do
        insmod /lib/modules/$m 2>/dev/null || fs="${fs}insmod-$m,"
    done
    mkdir -p /mnt
    if ! /sbin/mke2fs -q -F -t ext4 /dev/xvdc > /tmp/mkfs.out 2>&1; then
        echo "DOMU-MARK fs mkfs=failed $(tail -n 1 /tmp/mkfs.out)"
        return
    fi
    if ! mount -t ext4 /dev/xvdc /mnt 2>/tmp/mount.err; then
        echo "DOMU-MARK fs mkfs=ok mount=failed $(tail -n 1 /tmp/mount.err)"
        return
    fi
    mkdir -p /mnt/dir
    cp /bin/busybox /mnt/busybox
    dd if=/dev/urandom of=/mnt/random bs=64k count=64 2>/dev/null
    n=0
    while [ $n -lt 100 ]; do echo "file $n" > /mnt/dir/f$n; n=$((n + 1)); done
    files() { (cd /mnt && sha256sum busybox random dir/* | sha256sum | cut -d' ' -f1); }
    written=$(files)
    sync
    umount /mnt || fs="${fs}umount,"
    /sbin/e2fsck -f -n /dev/xvdc > /tmp/fsck.out 2>&1
    fsck_rc=$?
    mount -t ext4 -o ro /dev/xvdc /mnt 2>/dev/null || fs="${fs}remount,"
    [ "$(files)" = "$written" ] || fs="${fs}files-differ,"
    umount /mnt 2>/dev/null
    sync
    echo "DOMU-MARK fs mkfs=ok mount=ok fsck-rc=$fsck_rc files=$written problems=${fs:-none} $(grep -v '^e2fsck\|^Pass' /tmp/fsck.out | tail -n 1)"
    takeup xvdc
}

readonly_disk &
fs_disk &
if [ -b /dev/xvda ]; then
    sectors=$(cat /sys/block/xvda/size)
    echo "DOMU-MARK xvda sectors=$sectors signature=$(head -c 24 /dev/xvda | tr -dc 'A-Z0-9-')"
    # vbd-io: read the whole disk, write three patterns (two 4 KiB blocks, one at each end,
    # and one 512-byte sector inside a page), read them back past the page cache, and
    # report the whole disk's digest; dom0 applies the same writes to a copy of the image
    # and compares. The patterns must stay identical to expected_image in dom0-init.sh.
    echo "DOMU-MARK vbd-read sha256=$(digest /dev/xvda) uptime=$(up)"
    yes XENSPLIT-REALXEN-PATTERN-A | head -c 4096 > /tmp/pa
    yes XENSPLIT-REALXEN-PATTERN-B | head -c 4096 > /tmp/pb
    yes XENSPLIT-REALXEN-PATTERN-C | head -c 512 > /tmp/pc
    last=$((sectors / 8 - 1))
    werr=0
    dd if=/tmp/pa of=/dev/xvda bs=4096 seek=1 conv=notrunc,fsync 2>/tmp/dd.err || werr=1
    dd if=/tmp/pb of=/dev/xvda bs=4096 seek=$last conv=notrunc,fsync 2>>/tmp/dd.err || werr=1
    dd if=/tmp/pc of=/dev/xvda bs=512 seek=12345 conv=notrunc,fsync 2>>/tmp/dd.err || werr=1
    sync
    # Drop the block device's cached pages so the reads below go to the backend.
    drop_caches /dev/xvda
    back() { dd if=/dev/xvda bs="$1" skip="$2" count=1 2>/dev/null | sha256sum | cut -d' ' -f1; }
    rb=
    [ "$(back 4096 1)" = "$(digest /tmp/pa)" ] || rb="${rb}bad-A,"
    [ "$(back 4096 $last)" = "$(digest /tmp/pb)" ] || rb="${rb}bad-B,"
    [ "$(back 512 12345)" = "$(digest /tmp/pc)" ] || rb="${rb}bad-C,"
    rb=${rb:-ok}
    echo "DOMU-MARK vbd-write write-errors=$werr readback=$rb $(grep -v 'records\|bytes' /tmp/dd.err | head -1)"
    drop_caches /dev/xvda
    echo "DOMU-MARK vbd-written sha256=$(digest /dev/xvda) uptime=$(up)"
    takeup xvda
fi
wait
sync
echo "DOMU-MARK vbd-done uptime=$(up)"
sleep 100000
