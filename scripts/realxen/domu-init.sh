#!/bin/sh
# /init of the domU's busybox initramfs (scripts/realxen/run-test.sh builds it with
# xen-blkfront.ko and xen-netfront.ko). Prints DOMU-MARK lines on its console, which
# xenconsoled logs in dom0 for dom0-init.sh to read.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
up() { cut -d' ' -f1 /proc/uptime; }
echo "DOMU-MARK up uptime=$(up)"
# Loading a frontend waits until its devices connect, so each loads in the background
# and "ready" comes once both returned or after 60 s, whichever is first.
mkdir -p /tmp
(insmod /lib/xen-blkfront.ko && echo "DOMU-MARK blkfront-loaded uptime=$(up)"; touch /tmp/blk) &
(insmod /lib/xen-netfront.ko && echo "DOMU-MARK netfront-loaded uptime=$(up)"; touch /tmp/net) &
i=0
while { [ ! -e /tmp/blk ] || [ ! -e /tmp/net ]; } && [ $i -lt 120 ]; do sleep 0.5; i=$((i + 1)); done
vbds=$(ls /sys/bus/xen/devices 2>/dev/null | grep -c '^vbd-')
echo "DOMU-MARK ready uptime=$(up) vbd-devices=$vbds"
# With a disk (domu-vbd.cfg), report the device and its first sector's signature.
i=0
while [ "$vbds" -gt 0 ] && [ ! -b /dev/xvda ] && [ $i -lt 120 ]; do sleep 0.5; i=$((i + 1)); done
# A second, read-only disk: its content must read back and a write must be refused. It runs
# beside the xvda checks, so a hang on one disk does not hide the other's result.
readonly_disk() {
    i=0
    while [ "$vbds" -gt 1 ] && [ ! -b /dev/xvdb ] && [ $i -lt 60 ]; do sleep 0.5; i=$((i + 1)); done
    if [ -b /dev/xvdb ]; then
        yes XENSPLIT-REALXEN-PATTERN-A | head -c 4096 > /tmp/ro-pattern
        if dd if=/tmp/ro-pattern of=/dev/xvdb bs=4096 seek=2 conv=notrunc,fsync 2>/dev/null; then wr=accepted; else wr=refused; fi
        blockdev --flushbufs /dev/xvdb 2>/dev/null
        echo 3 > /proc/sys/vm/drop_caches
        echo "DOMU-MARK xvdb ro=$(cat /sys/block/xvdb/ro) sectors=$(cat /sys/block/xvdb/size) write=$wr sha256=$(sha256sum /dev/xvdb | cut -d' ' -f1)"
    fi
}
readonly_disk &
if [ -b /dev/xvda ]; then
    sectors=$(cat /sys/block/xvda/size)
    echo "DOMU-MARK xvda sectors=$sectors signature=$(head -c 24 /dev/xvda | tr -dc 'A-Z0-9-')"
    # vbd-io: read the whole disk, write three patterns (two 4 KiB blocks, one at each end,
    # and one 512-byte sector inside a page), read them back past the page cache, and
    # report the whole disk's digest; dom0 applies the same writes to a copy of the image
    # and compares. The patterns must stay identical to expected_image in dom0-init.sh.
    echo "DOMU-MARK vbd-read sha256=$(sha256sum /dev/xvda | cut -d' ' -f1) uptime=$(up)"
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
    blockdev --flushbufs /dev/xvda
    echo 3 > /proc/sys/vm/drop_caches
    back() { dd if=/dev/xvda bs="$1" skip="$2" count=1 2>/dev/null | sha256sum | cut -d' ' -f1; }
    want() { sha256sum "$1" | cut -d' ' -f1; }
    rb=
    [ "$(back 4096 1)" = "$(want /tmp/pa)" ] || rb="${rb}bad-A,"
    [ "$(back 4096 $last)" = "$(want /tmp/pb)" ] || rb="${rb}bad-B,"
    [ "$(back 512 12345)" = "$(want /tmp/pc)" ] || rb="${rb}bad-C,"
    rb=${rb:-ok}
    echo "DOMU-MARK vbd-write write-errors=$werr readback=$rb $(grep -v 'records\|bytes' /tmp/dd.err | head -1)"
    blockdev --flushbufs /dev/xvda
    echo 3 > /proc/sys/vm/drop_caches
    echo "DOMU-MARK vbd-written sha256=$(sha256sum /dev/xvda | cut -d' ' -f1) uptime=$(up)"
fi
wait
echo "DOMU-MARK vbd-done uptime=$(up)"
sleep 100000
