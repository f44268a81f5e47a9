# The domU side of the restart step (dom0-restart.sh), sourced by domu-init.sh for
# realxen.role=restart (it uses up and drop_caches from there). xvda's first 64 MiB are
# written while dom0 kills and replaces its backend: four writers, each owning every
# fourth 1 MiB chunk, write chunks of a 64 MiB random source with O_DIRECT, pass after pass
# (pass p puts source chunk (i + p) mod 64 at chunk i), until dom0 writes the stop word
# at 64 MiB (the disk's last MiB, which only dom0 writes; read here every second through
# the same backend) or realxen.seconds passed; each writer logs the time each write
# completed and which source chunk it wrote. Then every chunk is read back with O_DIRECT
# and compared with the source chunk last written there.
seconds=$(sed -n 's/.*realxen\.seconds=\([0-9]*\).*/\1/p' /proc/cmdline)
seconds=${seconds:-600}
chunks=64
writers=4
stop_word=XENSPLIT-RESTART-STOP
# Centiseconds of uptime, for whole-number arithmetic in awk and sort.
cs() { awk '{ printf "%d", $1 * 100 }' /proc/uptime; }
restart_writer() {
    w=$1 p=0
    : > /tmp/wlog.$w
    while [ ! -e /tmp/stop ]; do
        i=$w
        while [ $i -lt $chunks ] && [ ! -e /tmp/stop ]; do
            s=$(( (i + p) % chunks ))
            if dd if=/tmp/src of=/dev/xvda bs=1M skip=$s seek=$i count=1 oflag=direct conv=notrunc 2>/tmp/werr.$w.last; then
                echo "$(cs) $i $s" >> /tmp/wlog.$w
            else
                echo "chunk $i: $(tail -n 1 /tmp/werr.$w.last)" >> /tmp/werr.$w
            fi
            i=$((i + writers))
        done
        p=$((p + 1))
    done
}
# Touches /tmp/stop once dom0's stop word is on the disk, or after $seconds.
restart_stopper() {
    k=0
    while [ $k -lt $seconds ]; do
        [ "$(dd if=/dev/xvda bs=4096 skip=$((chunks * 256)) count=1 iflag=direct 2>/dev/null | head -c ${#stop_word})" = $stop_word ] && break
        sleep 1
        k=$((k + 1))
    done
    echo "DOMU-MARK restart-stop uptime=$(up) $([ $k -lt $seconds ] && echo by=dom0 || echo by=time)"
    touch /tmp/stop
}
if [ -b /dev/xvda ] && [ "$(cat /sys/block/xvda/size)" = $(((chunks + 1) * 2048)) ]; then
    head -c $((chunks << 20)) /dev/urandom > /tmp/src
    echo "DOMU-MARK restart-writing uptime=$(up) at-most=${seconds}s"
    w=0
    while [ $w -lt $writers ]; do restart_writer $w & w=$((w + 1)); done
    restart_stopper
    wait
    nwrites=$(cat /tmp/wlog.* | wc -l)
    werrors=$(cat /tmp/werr.[0-9] 2>/dev/null | wc -l)
    echo "DOMU-MARK restart-written uptime=$(up) writes=$nwrites write-errors=$werrors $(head -n 1 /tmp/werr.[0-9] 2>/dev/null | grep chunk | head -n 1)"
    # Each chunk's last source, from the writers' logs (a failed write leaves the one
    # before; a chunk never written is still dom0's zeroes); the disk must read back as
    # those chunks in order, checked chunk by chunk only when the whole differs.
    cat /tmp/wlog.* | awk -v n=$chunks '{ last[$2] = $3 } END { for (i = 0; i < n; i++) print (i in last) ? last[i] : "none" }' > /tmp/lastsrc
    chunk() { if [ "$1" = none ]; then head -c 1048576 /dev/zero; else dd if=/tmp/src bs=1M skip=$1 count=1 2>/dev/null; fi; }
    expected=$(while read -r s; do chunk $s; done < /tmp/lastsrc | sha256sum | cut -d' ' -f1)
    drop_caches /dev/xvda
    disk=$(dd if=/dev/xvda bs=1M count=$chunks iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
    bad=0
    if [ "$disk" != "$expected" ]; then
        j=0
        while read -r s; do
            got=$(dd if=/dev/xvda bs=1M skip=$j count=1 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
            [ "$got" = "$(chunk $s | sha256sum | cut -d' ' -f1)" ] || bad=$((bad + 1))
            j=$((j + 1))
        done < /tmp/lastsrc
        [ $bad -gt 0 ] || bad=whole-disk-differs
    fi
    errors=$(dmesg | grep -i 'i/o error\|blk_update_request\|buffer i/o\|incorrect id\|no pending request\|wrong operation\|disabled for further\|critical' | grep -vc 'flush diskcache')
    echo "DOMU-MARK restart-verify chunks=$chunks bad=$bad kernel-errors=$errors expected-sha256=$expected read-sha256=$disk uptime=$(up)"
    dmesg | grep -i 'i/o error\|blk_update_request\|buffer i/o\|incorrect id\|no pending request\|wrong operation\|disabled for further\|critical' | head -n 5 \
        | sed 's/^/DOMU-MARK restart-kernel /'
    # Gaps between consecutive completed writes over all writers: the longest are the
    # pauses the replacements caused (each stops every writer at once).
    cat /tmp/wlog.* | sort -n | awk 'NR > 1 { print $1 - t } { t = $1 }' | sort -n > /tmp/gaps
    n=$(wc -l < /tmp/gaps)
    median=$(awk -v n="$n" 'NR == int((n + 1) / 2) { printf "%.2f", $1 / 100 }' /tmp/gaps)
    top=$(tail -n 8 /tmp/gaps | sort -rn | awk '{ printf "%s%.2f", (NR > 1 ? "," : ""), $1 / 100 }')
    echo "DOMU-MARK restart-gaps writes=$n median=$median top=$top"
else
    echo "DOMU-MARK restart-no-disk xvda sectors=$(cat /sys/block/xvda/size 2>/dev/null)"
fi
echo "DOMU-MARK restart-done uptime=$(up)"
