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
if [ -b /dev/xvda ]; then
    echo "DOMU-MARK xvda sectors=$(cat /sys/block/xvda/size) signature=$(head -c 24 /dev/xvda | tr -dc 'A-Z0-9-')"
fi
sleep 100000
