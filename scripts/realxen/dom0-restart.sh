# The restart step of scripts/realxen/run-test.sh (issue 22, item 5), sourced by
# dom0-init.sh (whose helpers it uses: mark, result, log_section, field, console_line, up).
# Protocols/realxen.md ("Restart") says what passes it.
#
# A PV domU (realxen.role=restart, domu-restart.sh) writes random data to the first 64 MiB
# of its one disk, served by `xensplit blkback --platform xen`, from four writers in 1 MiB
# O_DIRECT chunks, pass after pass; meanwhile dom0 kills the backend with SIGKILL
# $restart_kills times, each time once the queues' state files show requests in flight,
# and starts a new one, which takes the disk over; then one `--take-over` replacement.
# Then dom0 writes the stop word into the disk's last MiB, and the domU reads every chunk
# back and compares it with what it wrote last there, and reports its kernel log's block
# errors and the longest gaps between completed writes.

restart_kills=5
# The most the domU writes, if dom0 never says stop.
restart_seconds=900
restart_disk_mib=65
restart_state=/run/xensplit/blkback

# Seconds of dom0 uptime, without a process (this runs between a check and a kill).
restart_now() { read -r restart_t _ < /proc/uptime; }

# Requests taken and not yet answered over the state files of $1 (a glob): u32 consumed
# at offset 96, answered at 100 (Protocols/blkback-restart.md, "Layout").
restart_in_flight() {
    for f in $1; do
        [ -f "$f" ] && od -An -tu4 -j96 -N8 "$f"
    done | awk '{ n += ($1 - $2 + 4294967296) % 4294967296 } END { print n + 0 }'
}

# restart_kill_in_flight GLOB PID SECONDS: polls the state files every millisecond and
# sends PID SIGKILL as soon as they show requests in flight (or after SECONDS, then with
# none); prints the requests in flight it saw and dom0's uptime at the kill. One perl
# process, so nothing forks between the look and the kill: a shell loop took long enough
# under emulation for the requests it saw to complete before the signal.
restart_kill_in_flight() {
    perl -e '
        my ($glob, $pid, $limit) = @ARGV;
        sub up { open(my $u, "<", "/proc/uptime") or return 0; my ($t) = split(" ", scalar <$u>); return $t }
        my $end = up() + $limit;
        my $n;
        while (1) {
            $n = 0;
            for my $f (glob($glob)) {
                open(my $h, "<", $f) or next;
                sysseek($h, 96, 0) or next;
                sysread($h, my $b, 8) == 8 or next;
                my ($consumed, $answered) = unpack("VV", $b);
                $n += ($consumed - $answered) % 4294967296;
            }
            last if $n > 0 || up() > $end;
            select(undef, undef, undef, 0.001);
        }
        kill("KILL", $pid);
        printf("%d %s\n", $n, up());
    ' "$1" "$2" "$3"
}

# Waits up to 300 s for a "took over" line in log $1 from process $2, polling every
# 20 ms; prints the line, empty if none, and leaves its time in restart_t.
restart_took_over() {
    restart_now
    end=${restart_t%.*}
    end=$((end + 300))
    while ! grep -q "took over" "$1" && kill -0 "$2" 2>/dev/null; do
        restart_now
        [ ${restart_t%.*} -lt $end ] || break
        sleep 0.02
    done
    restart_now
    grep -m 1 "took over" "$1"
}

restart_steps() {
    rconsole=/var/log/xen/console/guest-realxen-restart.log
    img=/tmp/restart.img
    dev=51712
    head -c ${restart_disk_mib}M /dev/zero > $img
    $P/xensplit blkback --platform xen $extra_args > /tmp/blkback-restart-0.log 2>&1 &
    rpid=$!
    i=0
    while [ $i -lt 120 ] && ! grep -q "$serving" /tmp/blkback-restart-0.log && kill -0 $rpid 2>/dev/null; do
        sleep 0.25; i=$((i + 1))
    done
    timeout -k 10 120 xl create $P/domu-bench.cfg 'name="realxen-restart"' 'memory=448' \
        "extra=\"console=hvc0 rdinit=/init realxen.role=restart realxen.seconds=$restart_seconds\"" \
        "disk=[\"format=raw,vdev=xvda,access=rw,backendtype=phy,script=/realxen/hotplug-noop.sh,target=$img\"]" \
        > /tmp/xl-create-restart.log 2>&1; create_rc=$?
    rdomid=$(xl domid realxen-restart 2>/dev/null)
    mark restart-domu-created "domid=${rdomid:-none} rc=$create_rc"
    b=/local/domain/0/backend/vbd/$rdomid/$dev
    fe=/local/domain/$rdomid/device/vbd/$dev
    files="$restart_state/vbd-$rdomid-$dev-*.state"
    [ -n "$rdomid" ] && wait_console "DOMU-MARK restart-writing" $rconsole 600
    problems=
    grep -q "DOMU-MARK restart-writing" $rconsole 2>/dev/null || problems="no restart-writing line from the domU; "

    # The replacements: SIGKILL with requests in flight, then one --take-over. Per
    # replacement: the requests in flight seen just before, and the seconds from the
    # signal (or the new process's start) until the new process logged "took over".
    n=0 per= pauses= took=0 redone=0
    while [ -z "$problems" ] && [ $n -le $restart_kills ]; do
        n=$((n + 1))
        log=/tmp/blkback-restart-$n.log
        if [ $n -le $restart_kills ]; then
            how=kill
            set -- $(restart_kill_in_flight "$files" $rpid 120)
            inflight=${1:-0} t0=${2:-0}
            wait $rpid 2>/dev/null
            restart_now
            gone=$restart_t
            $P/xensplit blkback --platform xen $extra_args > $log 2>&1 &
            rpid=$!
        else
            how=take-over
            inflight=$(restart_in_flight "$files")
            old=$rpid
            restart_now
            t0=$restart_t
            $P/xensplit blkback --platform xen --take-over $extra_args > $log 2>&1 &
            rpid=$!
            wait $old; old_rc=$?
            restart_now
            gone=$restart_t
            [ $old_rc = 0 ] || problems="${problems}the backend handing over exited $old_rc; "
        fi
        restart_took_over $log $rpid > /tmp/restart-line
        line=$(cat /tmp/restart-line)
        t1=$restart_t
        if grep -q "DOMU-MARK restart-written" $rconsole; then
            problems="${problems}the domU's writes ended before replacement $n (raise restart_seconds); "
        fi
        if [ -z "$line" ]; then
            problems="${problems}replacement $n ($how) logged no 'took over' line; "
            break
        fi
        tn=$(echo "$line" | sed -n 's/.*took over \([0-9]*\) requests, re-executed \([0-9]*\).*/\1/p')
        tm=$(echo "$line" | sed -n 's/.*took over \([0-9]*\) requests, re-executed \([0-9]*\).*/\2/p')
        took=$((took + ${tn:-0}))
        redone=$((redone + ${tm:-0}))
        pause=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
        pauses="$pauses $pause"
        # How long the old process took to be gone (killed and reaped, or handed over).
        gone_s=$(awk -v a="$t0" -v b="$gone" 'BEGIN { printf "%.2f", b - a }')
        per="$per $n:$how:in-flight=$inflight:took-over=${tn:-?}:re-executed=${tm:-?}:${pause}s(old-gone-after=${gone_s}s)"
        [ $how = kill ] && [ "$inflight" = 0 ] && problems="${problems}no request in flight before kill $n; "
        now_states="backend=$(xenstore-read $b/state 2>&1) frontend=$(xenstore-read $fe/state 2>&1)"
        [ "$now_states" = "backend=4 frontend=4" ] || problems="${problems}after replacement $n: $now_states; "
        mark restart-replaced "n=$n how=$how in-flight=$inflight took-over=$tn re-executed=$tm pause=$pause"
        # Some I/O on the new backend before the next one.
        sleep 1
    done
    # The stop word, where only dom0 writes: the domU stops writing and verifies.
    printf XENSPLIT-RESTART-STOP | dd of=$img bs=1M seek=64 conv=notrunc,fsync status=none
    echo "REALXEN-RESTART replacements:$per"
    echo "REALXEN-RESTART took over $took requests, re-executed $redone over $((n)) replacements"
    # dom0's pause: kill (or start) to "took over", polled every 20 ms.
    dom0_pause=$(echo $pauses | tr ' ' '\n' | sort -n | awk '{ a[NR] = $1 } END { if (NR) printf "median=%s worst=%s", a[int((NR + 1) / 2)], a[NR] }')
    echo "REALXEN-RESTART dom0 pause (signal to 'took over'): $dom0_pause"

    [ -n "$rdomid" ] && wait_console "DOMU-MARK restart-done" $rconsole 600
    verify=$(console_line restart-verify $rconsole)
    gaps=$(console_line restart-gaps $rconsole)
    written=$(console_line restart-written $rconsole)
    echo "REALXEN-RESTART domU: $written"
    echo "REALXEN-RESTART domU: $verify"
    echo "REALXEN-RESTART domU: $gaps"
    # The guest's pause: the $n longest gaps between its completed writes (every
    # replacement stops all four writers at once), the lower median and the worst.
    guest_pause=$(field top "$gaps" | tr ',' '\n' | head -n $n | sort -n \
        | awk '{ a[NR] = $1 } END { if (NR) printf "median=%s worst=%s", a[int((NR + 1) / 2)], a[NR] }')
    echo "REALXEN-RESTART guest pause (the $n longest gaps between completed writes): $guest_pause; median gap $(field median "$gaps") s"
    final_states="backend=$(xenstore-read $b/state 2>&1) frontend=$(xenstore-read $fe/state 2>&1)"
    timeout -k 10 60 xl destroy realxen-restart > /tmp/xl-destroy-restart.log 2>&1; destroy_rc=$?
    kill -TERM $rpid 2>/dev/null
    wait $rpid; stop_rc=$?
    left=$(ls $files 2>/dev/null | wc -l)
    image_sha=$(head -c 64M $img | sha256sum | cut -d' ' -f1)
    rm -f $img
    [ $took -gt 0 ] || problems="${problems}no replacement took a request over; "
    [ "$(field bad "$verify")" = 0 ] || problems="${problems}chunks that did not verify: $(field bad "$verify"); "
    [ "$(field write-errors "$written")" = 0 ] || problems="${problems}write errors in the domU: $(field write-errors "$written"); "
    [ "$(field kernel-errors "$verify")" = 0 ] || problems="${problems}block errors in the domU's kernel log; "
    [ -n "$(field expected-sha256 "$verify")" ] && [ "$image_sha" = "$(field expected-sha256 "$verify")" ] \
        || problems="${problems}the image after destroy ($image_sha) is not what the domU wrote ($(field expected-sha256 "$verify")); "
    [ "$final_states" = "backend=4 frontend=4" ] || problems="${problems}at the end: $final_states; "
    [ "$destroy_rc" = 0 ] && [ "$stop_rc" = 0 ] && [ "$left" = 0 ] \
        || problems="${problems}xl destroy rc=$destroy_rc, backend exited $stop_rc, $left state files left; "
    why="$((n)) replacements ($restart_kills SIGKILL with requests in flight, 1 --take-over), took over $took requests, re-executed $redone; domU: $(echo "$verify" | sed 's/DOMU-MARK restart-verify //'); dom0 pause $dom0_pause s; guest pause $guest_pause s"
    if [ -z "$problems" ]; then
        result restart PASS "$why"
    else
        result restart FAIL "${problems}$why"
    fi
}
