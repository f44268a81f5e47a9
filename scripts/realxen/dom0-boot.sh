#!/bin/sh
# PID 1 baked into the cached dom0 image (the kernel runs it as init=/sbin/realxen-boot).
# It only mounts this run's payload disk and hands over to the init on it, so the scripts,
# xensplit and the domU files can change without rebuilding the cached image.
# The initrd has moved these over already; mount whichever is missing.
[ -e /proc/self ] || mount -t proc proc /proc
[ -d /sys/kernel ] || mount -t sysfs sys /sys
[ -e /dev/null ] || mount -t devtmpfs dev /dev
mount -o remount,rw /
mkdir -p /realxen
if mount -t ext4 /dev/vdb /realxen && [ -x /realxen/dom0-init.sh ]; then
    exec /realxen/dom0-init.sh
fi
echo "REALXEN-MARK payload-missing: /dev/vdb did not mount or has no dom0-init.sh"
echo o > /proc/sysrq-trigger
sleep 10
poweroff -f
