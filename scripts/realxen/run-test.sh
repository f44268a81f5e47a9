#!/usr/bin/env bash
# XenSplit on real Xen: boots Debian's Xen 4.17 under QEMU with a Debian PV dom0, runs
# `xensplit selftest --platform xen` and the real-Xen Swift suite (RealXenSelfTests) in
# dom0, then the domU, backend, benchmark and frontend steps of the block pair and of the
# net pair (dom0-net.sh), and decides pass or fail from
# markers dom0 prints at the start of serial console lines (see dom0-init.sh, console.sh).
#
# Usage: scripts/realxen/run-test.sh
# Phases, each timed: rootfs (debootstrap, cached), build (xensplit release, static Swift
# stdlib; the test bundle, debug), image (a copy-on-write overlay of the cached dom0 disk
# plus a payload disk), boot (QEMU start to dom0 ready), test, poweroff. Exits 0 only when
# every step passed; SKIP steps are listed as SKIP and do not count as passed.
# Protocols/realxen.md has the details: the cache, the disks, the markers and what decides
# pass or fail.
#
# With CI=true (any value but empty, false or 0) every step runs as written: REALXEN_DOMU
# other than 1, REALXEN_STEPS, REALXEN_BENCH_ROUNDS other than a positive count,
# REALXEN_REQUESTS and REALXEN_BLKBACK_ARGS are refused, each named, before anything starts.
#
# Environment:
#   XENSPLIT_REALXEN_CACHE  where cached root filesystems live, one folder per hash of
#                           dom0-packages.txt, the suite and dom0-boot.sh
#                           (default /var/cache/xensplit-realxen; shared by every clone)
#   XENSPLIT_REALXEN_WORK   this run's disks and logs (default <repo>/.build/realxen)
#   XENSPLIT_REALXEN_SCRATCH  swift build's scratch path for xensplit and the test bundle
#                           (default <repo>/.build, where scripts/test.sh builds them)
#   REALXEN_MIRROR          Debian mirror for debootstrap (default http://deb.debian.org/debian)
#   REALXEN_ACCEL           tcg (default) or kvm (with REALXEN_CPU, default qemu64)
#   REALXEN_MEM             QEMU memory in MiB (default 2560; dom0 gets REALXEN_DOM0_MEM)
#   REALXEN_DOM0_MEM        dom0 memory (default 1024M)
#   REALXEN_REQUESTS        requests in the selftest's ring step (default: xensplit's own)
#   REALXEN_DOMU            0 skips the domU steps (default 1)
#   REALXEN_BLKBACK_ARGS    extra options for `xensplit blkback` in dom0, without spaces
#                           inside an option (e.g. --max-indirect-segments=0)
#   REALXEN_BENCH_ROUNDS    alternating kernel/xensplit rounds of each benchmark, block
#                           and net (default 3; 0 skips both)
#   REALXEN_BENCH_COPY      1 adds a third backend per round: ours with --persistent-grants=off
#   REALXEN_STEPS           step groups after the selftest, comma-separated (default
#                           boot,vbd,bench,frontend,net,netfront,restart,netbench;
#                           conformance, the suite against Linux's drivers
#                           (dom0-conformance.sh), only when named; REALXEN_DOMU=0 drops
#                           all but frontend, netfront and conformance)
#   REALXEN_CONFORMANCE     parts of the conformance group, comma-separated (default
#                           blkfront,netfront,blkback,netback,negative; dom0-conformance.sh)
#   REALXEN_TIMEOUT         seconds the whole QEMU run may take (default 1800)
set -euo pipefail

# Under CI the knobs that leave steps out or shrink them are refused; plain bash, so nothing
# has started yet.
case ${CI:-} in
    '' | false | 0) ;;
    *)
        refused=()
        [ "${REALXEN_DOMU:-1}" = 1 ] || refused+=("REALXEN_DOMU=$REALXEN_DOMU: drops the domU boot, vbd and bench steps")
        [ -z "${REALXEN_STEPS:-}" ] || refused+=("REALXEN_STEPS=$REALXEN_STEPS: picks step groups, leaving the others out")
        [ -z "${REALXEN_BENCH_ROUNDS:-}" ] || [[ $REALXEN_BENCH_ROUNDS =~ ^[1-9][0-9]*$ ]] \
            || refused+=("REALXEN_BENCH_ROUNDS=$REALXEN_BENCH_ROUNDS: the benchmark needs a positive count (0 skips it)")
        [ -z "${REALXEN_REQUESTS:-}" ] || refused+=("REALXEN_REQUESTS=$REALXEN_REQUESTS: changes the selftest's ring step")
        [ -z "${REALXEN_CONFORMANCE:-}" ] || refused+=("REALXEN_CONFORMANCE=$REALXEN_CONFORMANCE: picks parts of the conformance group")
        [ -z "${REALXEN_BLKBACK_ARGS:-}" ] || refused+=("REALXEN_BLKBACK_ARGS=$REALXEN_BLKBACK_ARGS: changes the backend under test")
        if [ ${#refused[@]} -gt 0 ]; then
            echo "realxen: FAIL: CI=$CI runs every step as written; unset these:" >&2
            printf '  %s\n' "${refused[@]}" >&2
            exit 2
        fi
        ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
suite=bookworm
cache_root=${XENSPLIT_REALXEN_CACHE:-/var/cache/xensplit-realxen}
work=${XENSPLIT_REALXEN_WORK:-$repo/.build/realxen}
scratch=${XENSPLIT_REALXEN_SCRATCH:-$repo/.build}
mirror=${REALXEN_MIRROR:-http://deb.debian.org/debian}
accel=${REALXEN_ACCEL:-tcg}
mem=${REALXEN_MEM:-2560}
dom0_mem=${REALXEN_DOM0_MEM:-1024M}
run_timeout=${REALXEN_TIMEOUT:-1800}
bench_rounds=${REALXEN_BENCH_ROUNDS:-3}
# netbench, the net benchmark, is in the default since its quiet run (Protocols/realxen.md,
# "Net benchmark, quiet"): 278 s for 3 rounds. On a host short of CPU both backends stall
# (the section before it), so its numbers mean something only on a quiet machine.
# conformance is not in the default: its parts take 35-45 minutes on a quiet machine
# (Protocols/realxen.md), twice CI's real-Xen budget. REALXEN_STEPS=...,conformance runs it.
steps=${REALXEN_STEPS:-boot,vbd,bench,frontend,net,netfront,restart,netbench}
if [ "${REALXEN_DOMU:-1}" = 0 ]; then steps=$(sed 's/\(^\|,\)\(boot\|vbd\|bench\|net\|netbench\|restart\)\b//g; s/^,//' <<< "$steps"); fi
has_step() { [[ ",$steps," == *",$1,"* ]]; }
conformance_parts=${REALXEN_CONFORMANCE:-blkfront,netfront,blkback,netback,negative}
# The selftest's steps (issue 8, item 2); fewer PASS lines than this is a failure even if
# nothing says FAIL, so a step that stops running cannot go unnoticed.
min_selftest_steps=5
# The real-Xen Swift suite dom0 runs from the test bundle; every one of its tests must pass
# there (on the host they skip: no /dev/xen), counted from the source.
swift_suite=RealXenSelfTests
swift_suite_file=$repo/Tests/XenLinuxTests/$swift_suite.swift
swift_suite_tests=$(grep -c '^[[:space:]]*@Test\b' "$swift_suite_file" || true)
# shellcheck source=console.sh
. "$here/console.sh"

export PATH="/opt/swift/usr/bin:$PATH"

phase_names=()
phase_seconds=()
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
record_phase() { phase_names+=("$1"); phase_seconds+=("$2"); }
say() { echo "realxen: $*"; }
die() { say "FAIL: $*"; verdict_printed=1; exit 1; }

qemu_pid=
verdict_printed=0
cleanup() {
    local rc=$?
    if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
        say "stopping QEMU (pid $qemu_pid)"
        kill "$qemu_pid" 2>/dev/null || true
        wait "$qemu_pid" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ] && [ "$verdict_printed" = 0 ]; then
        say "FAIL: stopped early with status $rc (the message above says why)"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

for tool in debootstrap qemu-system-x86_64 qemu-img mkfs.ext4 cpio flock swift strip ldd gcc; do
    command -v "$tool" > /dev/null || die "$tool not found (run scripts/setup.sh)"
done
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, and mkfs.ext4 -d keeping owners)"
[ "${swift_suite_tests:-0}" -gt 0 ] || die "no @Test lines in $swift_suite_file, the suite dom0 runs"

# ---------------------------------------------------------------- rootfs (cached)
# The key covers everything baked into the cached image; the payload disk carries the rest.
key=$( {
    echo "format 2 suite $suite variant minbase"
    grep -v '^#' "$here/dom0-packages.txt" | grep -v '^[[:space:]]*$' | sort
    cat "$here/dom0-boot.sh"
} | sha256sum | cut -c1-16)
cache=$cache_root/$key
mkdir -p "$cache_root"

build_rootfs() {
    local tmp=$cache.partial rootfs packages kver
    rm -rf "$tmp"
    mkdir -p "$tmp"
    rootfs=$tmp/rootfs
    packages=$(grep -v '^#' "$here/dom0-packages.txt" | grep -v '^[[:space:]]*$' | paste -sd, -)
    say "debootstrap $suite ($packages) into $rootfs; log $tmp/debootstrap.log"
    if ! debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" \
            > "$tmp/debootstrap.log" 2>&1; then
        tail -n 30 "$tmp/debootstrap.log"
        die "debootstrap (log $tmp/debootstrap.log)"
    fi
    kver=$(ls "$rootfs/lib/modules" | head -n 1)
    # QEMU's -kernel boots the hypervisor (an ELF multiboot image) without a bootloader,
    # and takes dom0's kernel and initrd as multiboot modules, so they live on the host.
    zcat "$rootfs"/boot/xen-4.17-amd64.gz > "$tmp/xen"
    cp "$rootfs/boot/vmlinuz-$kver" "$tmp/vmlinuz"
    cp "$rootfs/boot/initrd.img-$kver" "$tmp/initrd.img"
    # What the domU initramfs is made of; run-test.sh assembles it each run.
    mkdir -p "$tmp/domu"
    cp "$rootfs/bin/busybox" "$tmp/domu/"
    for m in xen-blkfront xen-netfront; do
        find "$rootfs/lib/modules/$kver" -name "$m.ko" -exec cp {} "$tmp/domu/" \;
        [ -f "$tmp/domu/$m.ko" ] || { say "no $m.ko in $kver"; return 1; }
    done
    # The domU's filesystem checks: ext4 and what it loads first (crc32c is a soft
    # dependency the domU cannot load on demand), in load order, and e2fsprogs with its
    # libraries and the loader, laid out as in the rootfs.
    mkdir -p "$tmp/domu/modules" "$tmp/domu/e2fs/sbin" "$tmp/domu/e2fs/etc"
    : > "$tmp/domu/modules/order"
    for m in crc32c_generic ext4; do
        chroot "$rootfs" /sbin/modprobe -S "$kver" --show-depends "$m" | sed -n 's/^insmod \([^ ]*\).*/\1/p'
    done | while read -r ko; do
        [ -f "$tmp/domu/modules/$(basename "$ko")" ] && continue
        cp "$rootfs$ko" "$tmp/domu/modules/"
        basename "$ko" >> "$tmp/domu/modules/order"
    done
    grep -q '^ext4.ko$' "$tmp/domu/modules/order" || { say "ext4.ko not found in $kver"; return 1; }
    cp "$rootfs/sbin/mke2fs" "$rootfs/sbin/e2fsck" "$tmp/domu/e2fs/sbin/"
    cp "$rootfs/etc/mke2fs.conf" "$tmp/domu/e2fs/etc/"
    chroot "$rootfs" /usr/bin/ldd /sbin/mke2fs /sbin/e2fsck | sed -n 's/.*[[:space:]]\(\/[^ ]*\) (0x.*/\1/p' | sort -u \
        | while read -r lib; do
            mkdir -p "$tmp/domu/e2fs$(dirname "$lib")"
            cp -L "$rootfs$lib" "$tmp/domu/e2fs$lib"
        done
    [ -e "$tmp/domu/e2fs/lib64/ld-linux-x86-64.so.2" ] || { say "no loader for e2fsprogs"; return 1; }
    # iperf3 for the net steps, with its libraries, laid out the same way.
    mkdir -p "$tmp/domu/iperf3/usr/bin"
    cp "$rootfs/usr/bin/iperf3" "$tmp/domu/iperf3/usr/bin/"
    chroot "$rootfs" /usr/bin/ldd /usr/bin/iperf3 | sed -n 's/.*[[:space:]]\(\/[^ ]*\) (0x.*/\1/p' | sort -u \
        | while read -r lib; do
            mkdir -p "$tmp/domu/iperf3$(dirname "$lib")"
            cp -L "$rootfs$lib" "$tmp/domu/iperf3$lib"
        done
    [ -e "$tmp/domu/iperf3/lib64/ld-linux-x86-64.so.2" ] || { say "no loader for iperf3"; return 1; }
    # xl reads the domU kernel from dom0's filesystem.
    ln -sf "vmlinuz-$kver" "$rootfs/boot/vmlinuz"
    install -m 755 "$here/dom0-boot.sh" "$rootfs/sbin/realxen-boot"
    mkdir -p "$rootfs/realxen"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb
    mkfs.ext4 -q -L dom0 -d "$rootfs" "$tmp/dom0.ext4" 2G > /dev/null
    # Runs only ever read it, through a qcow2 overlay each.
    chmod a-w "$tmp/dom0.ext4"
    rm -rf "$rootfs"
    echo "$kver" > "$tmp/kernel-version"
    mv "$tmp" "$cache"
}

t0=$(now)
exec 8> "$cache_root/$key.lock"
flock 8
if [ -f "$cache/dom0.ext4" ]; then
    say "rootfs: cached in $cache"
    rootfs_how="cached"
else
    say "rootfs: building $cache (about 3 minutes)"
    # Called plainly so that set -e stops at the first command that fails inside it.
    build_rootfs
    rootfs_how="built"
fi
flock -u 8
record_phase "rootfs ($rootfs_how)" "$(elapsed "$t0" "$(now)")"

# ---------------------------------------------------------------- build
t0=$(now)
mkdir -p "$work"
exec 9> "$work/lock"
flock -n 9 || die "another run-test.sh is using $work"
say "build: swift build -c release --static-swift-stdlib --product xensplit; swift build --build-tests (scratch $scratch)"
(cd "$repo" && swift build -c release --static-swift-stdlib --product xensplit --scratch-path "$scratch") > "$work/build.log" 2>&1 \
    || { tail -n 30 "$work/build.log"; die "swift build of xensplit (log $work/build.log)"; }
bin=$(cd "$repo" && swift build -c release --static-swift-stdlib --show-bin-path --scratch-path "$scratch")/xensplit
# The test bundle for dom0's Swift suite: the debug one scripts/test.sh has just built.
(cd "$repo" && swift build --build-tests --scratch-path "$scratch") >> "$work/build.log" 2>&1 \
    || { tail -n 30 "$work/build.log"; die "swift build --build-tests (log $work/build.log)"; }
tests_bin=$(cd "$repo" && swift build --show-bin-path --scratch-path "$scratch")/XenSplitPackageTests.xctest
# The conformance agent for the domU's initramfs: static, so busybox's root needs no libc.
gcc -static -O2 -pthread -o "$work/xensplit-agent" "$repo/Sources/xensplit-agent/agent.c" >> "$work/build.log" 2>&1 \
    || { tail -n 30 "$work/build.log"; die "gcc -static of xensplit-agent (log $work/build.log)"; }
[ -x "$tests_bin" ] || die "no test bundle at $tests_bin after swift build --build-tests"
record_phase "build" "$(elapsed "$t0" "$(now)")"

# ---------------------------------------------------------------- image
t0=$(now)
run=$work/run
rm -rf "$run"
mkdir -p "$run/payload" "$run/domu-root"/{bin,lib,proc,sys,dev}
# dom0's root: a qcow2 overlay, so the cached image is only ever read.
qemu-img create -q -f qcow2 -b "$cache/dom0.ext4" -F raw "$run/dom0.qcow2"
# The domU initramfs: busybox, the two frontends and domu-init.sh.
cp "$cache/domu/busybox" "$run/domu-root/bin/"
for applet in $("$run/domu-root/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$run/domu-root/bin/$applet"
done
cp "$cache"/domu/*.ko "$run/domu-root/lib/"
cp -r "$cache/domu/modules" "$run/domu-root/lib/"
cp -r "$cache"/domu/e2fs/* "$run/domu-root/"
cp -r "$cache"/domu/iperf3/* "$run/domu-root/"
install -m 755 "$here/domu-init.sh" "$run/domu-root/init"
install -m 755 "$work/xensplit-agent" "$run/domu-root/bin/xensplit-agent"
install -m 644 "$here/domu-restart.sh" "$run/domu-root/restart.sh"
(cd "$run/domu-root" && find . | cpio -o -H newc --quiet | gzip -1) > "$run/payload/domu.cpio.gz"
# The payload disk, mounted at /realxen in dom0.
install -m 755 "$bin" "$here/dom0-init.sh" "$here/dom0-net.sh" "$here/dom0-restart.sh" "$here/dom0-conformance.sh" "$here/hotplug-noop.sh" "$run/payload/"
# The clauses and expected.tsv, where `xensplit conformance` looks beside its binary.
mkdir -p "$run/payload/Protocols"
cp -r "$repo/Protocols/conformance" "$run/payload/Protocols/"
# The test bundle without its debug info, and the Swift toolchain's libraries it links
# (dom0 has glibc, libstdc++, liburing and libxen's; the bundle finds the rest through
# LD_LIBRARY_PATH).
mkdir -p "$run/payload/swift-tests/lib"
strip --strip-debug -o "$run/payload/swift-tests/XenSplitPackageTests.xctest" "$tests_bin"
toolchain_lib=$(cd "$(dirname "$(command -v swift)")/../lib" && pwd)
ldd "$tests_bin" | awk -v lib="$toolchain_lib/" 'index($3, lib) == 1 { print $3 }' \
    | while read -r so; do cp -L "$so" "$run/payload/swift-tests/lib/"; done
[ -n "$(ls "$run/payload/swift-tests/lib")" ] || die "ldd found no Swift libraries under $toolchain_lib for $tests_bin"
cp "$here/domu-boot.cfg" "$here/domu-vbd.cfg" "$here/domu-bench.cfg" "$here/domu-net.cfg" "$run/payload/"
truncate -s 16M "$run/payload/disk.img"
printf 'XENSPLIT-REALXEN-DISK' | dd of="$run/payload/disk.img" conv=notrunc status=none
truncate -s 4M "$run/payload/disk-ro.img"
printf 'XENSPLIT-REALXEN-RO-DISK' | dd of="$run/payload/disk-ro.img" conv=notrunc status=none
# The discard and ext4 disk starts fully written, so dom0 can see discards punch holes.
head -c 32M < <(yes XENSPLIT-REALXEN-FS-DISK) > "$run/payload/disk-fs.img"
payload_mib=$(( $(du -sm "$run/payload" | cut -f1) + 64 ))
mkfs.ext4 -q -L realxen -d "$run/payload" "$run/payload.ext4" "${payload_mib}M" > /dev/null
record_phase "image" "$(elapsed "$t0" "$(now)")"

# ---------------------------------------------------------------- boot, test, poweroff
serial=$run/serial.log
if [ "$accel" = kvm ]; then
    cpu_args=(-accel kvm -cpu "${REALXEN_CPU:-qemu64}")
else
    # SMAP kills the PV dom0 at its first instruction under TCG; with XSAVE exposed dom0
    # processes crashed at random once a domU ran (see /work/shared/real-xen/README.md).
    cpu_args=(-accel tcg,thread=multi -cpu max,-smap,-smep,-xsave)
fi
dom0_cmdline="console=hvc0 earlyprintk=xen root=/dev/vda rw init=/sbin/realxen-boot"
dom0_cmdline+=" realxen.domu=${REALXEN_DOMU:-1}${REALXEN_REQUESTS:+ realxen.requests=$REALXEN_REQUESTS}"
dom0_cmdline+="${REALXEN_BLKBACK_ARGS:+ realxen.blkback=$(tr ' ' '+' <<< "$REALXEN_BLKBACK_ARGS")}"
# QEMU's -initrd splits its argument at commas (",," is a literal one), so the lists go
# to dom0 with "+" between items.
dom0_cmdline+=" realxen.bench=$bench_rounds realxen.benchcopy=${REALXEN_BENCH_COPY:-0} realxen.steps=$(tr ',' '+' <<< "$steps")"
dom0_cmdline+=" realxen.conformance=$(tr ',' '+' <<< "$conformance_parts")"
: > "$serial"
t_qemu=$(now)
# No `noreboot` for Xen: if dom0 dies, Xen reboots, -no-reboot turns that into QEMU exiting.
qemu-system-x86_64 "${cpu_args[@]}" -M pc -m "$mem" -smp 2 \
    -nographic -nodefaults -no-reboot -serial "file:$serial" \
    -kernel "$cache/xen" \
    -append "console=com1 com1=115200,8n1 dom0_mem=$dom0_mem,max:$dom0_mem dom0_max_vcpus=2 gnttab_max_frames=256 loglvl=all guest_loglvl=all" \
    -initrd "$cache/vmlinuz $dom0_cmdline,$cache/initrd.img" \
    -drive "file=$run/dom0.qcow2,format=qcow2,if=virtio,cache=unsafe" \
    -drive "file=$run/payload.ext4,format=raw,if=virtio,cache=unsafe" \
    > "$run/qemu.out" 2>&1 &
qemu_pid=$!
say "boot: QEMU pid $qemu_pid ($accel, ${mem} MiB), serial log $serial"

# Waits for a marker at the start of a console line; its time is when this loop first saw it.
saw() { saw_marker "$1" < "$serial"; }
wait_for() {
    local marker=$1 deadline=$2
    while ! saw "$marker"; do
        kill -0 "$qemu_pid" 2>/dev/null || { saw "$marker"; return; }
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}
deadline=$(( $(date +%s) + run_timeout ))
outcome=ok
t_ready=
t_done=
if wait_for "REALXEN-MARK ready" "$deadline"; then
    t_ready=$(now)
    record_phase "boot" "$(elapsed "$t_qemu" "$t_ready")"
    if wait_for "REALXEN-MARK tests-done" "$deadline"; then
        t_done=$(now)
        record_phase "test" "$(elapsed "$t_ready" "$t_done")"
    else
        outcome="dom0 never reported tests-done (QEMU exited or ${run_timeout}s passed)"
    fi
else
    outcome="dom0 never reported ready (QEMU exited or ${run_timeout}s passed)"
fi
while kill -0 "$qemu_pid" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.2; done
if kill -0 "$qemu_pid" 2>/dev/null; then
    [ "$outcome" = ok ] && outcome="QEMU still running after ${run_timeout}s"
    cleanup
fi
qemu_rc=0
wait "$qemu_pid" 2>/dev/null || qemu_rc=$?
qemu_pid=
t_exit=$(now)
[ -n "$t_done" ] && record_phase "poweroff" "$(elapsed "$t_done" "$t_exit")"
record_phase "qemu total" "$(elapsed "$t_qemu" "$t_exit")"

# ---------------------------------------------------------------- verdict
clean=$run/serial.clean
tr -d '\r' < "$serial" > "$clean"
failures=()
[ "$outcome" = ok ] || failures+=("$outcome")
[ "$qemu_rc" -eq 0 ] || failures+=("QEMU exited with $qemu_rc")
saw_marker "REALXEN-MARK payload-missing" < "$clean" && failures+=("dom0 could not mount the payload disk")
# Anywhere in a line: a crash counts however it is printed.
grep -q "(XEN) Hardware Dom0 crashed\|Kernel panic" "$clean" && failures+=("dom0 crashed or panicked")

marks=$(marker_lines REALXEN-MARK < "$clean")
selftest_lines=$(marker_lines REALXEN-SELFTEST < "$clean")
selftest_pass=$(grep -c '^PASS ' <<< "$selftest_lines" || true)
selftest_fail=$(grep -c '^FAIL ' <<< "$selftest_lines" || true)
selftest_rc=$(sed -n 's/^selftest-end .*rc=\([0-9]*\).*/\1/p' <<< "$marks" | head -n 1)
selftest_summary=$(grep -m 1 '^selftest: [0-9]* passed, [0-9]* failed' <<< "$selftest_lines" || true)
if [ -z "$selftest_rc" ]; then
    failures+=("selftest: no end marker")
elif [ "$selftest_rc" != 0 ] || [ "$selftest_fail" -gt 0 ] || [ "$selftest_pass" -lt "$min_selftest_steps" ] \
        || [ "$selftest_summary" != "selftest: $selftest_pass passed, 0 failed" ]; then
    failures+=("selftest: rc=$selftest_rc, $selftest_pass PASS, $selftest_fail FAIL lines (need $min_selftest_steps PASS), summary '${selftest_summary:-none}'")
fi

# The Swift suite: it ended with rc 0, and swift-testing's summary counts every test of the
# suite in its source, passed, with none skipped and no issue.
swift_lines=$(marker_lines REALXEN-SWIFTTEST < "$clean")
swift_rc=$(sed -n 's/^swifttests-end .*rc=\([0-9]*\).*/\1/p' <<< "$marks" | head -n 1)
swift_summary=$(grep -m 1 'Test run with [0-9]* tests\{0,1\} ' <<< "$swift_lines" || true)
swift_skipped=$(grep -c ' skipped' <<< "$swift_lines" || true)
swift_issues=$(grep -c ' failed\| recorded an issue' <<< "$swift_lines" || true)
swift_why="rc=${swift_rc:-none}, summary '${swift_summary:-none}', $swift_skipped skipped and $swift_issues failure lines (need $swift_suite_tests tests passed)"
if [ -z "$swift_rc" ]; then
    failures+=("swift-tests: no end marker ($swift_suite did not run)")
elif [ "$swift_rc" != 0 ] || [ "$swift_skipped" != 0 ] || [ "$swift_issues" != 0 ] \
        || ! grep -q "Test run with $swift_suite_tests tests .*passed" <<< "$swift_summary"; then
    failures+=("swift-tests: $swift_why")
    swift_verdict=FAIL
else
    swift_verdict=PASS
fi

results=$(marker_lines REALXEN-RESULT < "$clean")
while IFS= read -r failure; do
    failures+=("$failure")
done < <(step_failures < "$clean")
required=(setup)
has_step boot && required+=(domu-boot)
has_step vbd && required+=(vbd-handshake vbd-io vbd-readonly vbd-discard vbd-ext4 vbd-takeup vbd-teardown vbd-release vbd-second vbd-4k)
has_step bench && [ "$bench_rounds" != 0 ] && required+=(bench)
has_step frontend && required+=(frontend-kernel frontend-4k)
has_step net && required+=(net-vif net-ping net-tcp net-jumbo net-two-vifs net-queues net-takeup net-destroy net-second)
has_step netfront && required+=(net-frontend-kernel)
if has_step conformance; then
    for part in ${conformance_parts//,/ }; do required+=(conformance-$part); done
fi
has_step netbench && [ "$bench_rounds" != 0 ] && required+=(netbench)
has_step restart && required+=(restart)
while read -r step; do
    failures+=("$step: no PASS line")
done < <(steps_without_pass "${required[@]}" < "$clean")

# Take-up: each feature's line (REALXEN-TAKEUP for the block pair, REALXEN-NETTAKEUP for
# the net pair) against its written list. check_takeup MARKER LIST LABEL appends a line per
# feature to takeup_checked and a failure for each that breaks its rule.
takeup_checked=()
check_takeup() {
    local marker=$1 list=$2 label=$3 lines feature rule line offered taken want verdict
    lines=$(marker_lines "$marker" < "$clean")
    while IFS=$'\t' read -r feature rule _; do
        case $feature in ''|'#'*) continue ;; esac
        line=$(grep -m 1 "^$feature " <<< "$lines" || true)
        offered=$(sed -n 's/.* offered=\([^ ]*\).*/\1/p' <<< "$line")
        taken=$(sed -n 's/.* taken=\([^ ]*\).*/\1/p' <<< "$line")
        case $rule in
            same) want=$offered ;;
            min:*) if [[ $offered =~ ^[0-9]+$ ]]; then want=$(( offered < ${rule#min:} ? offered : ${rule#min:} )); else want="?"; fi ;;
            *) want=$rule ;;
        esac
        if [ -z "$line" ]; then
            failures+=("$label $feature: dom0 printed no $marker line")
            verdict=FAIL
        elif [ "$taken" != "$want" ]; then
            failures+=("$label $feature: offered $offered, Linux took $taken, $(basename "$list") says $rule = $want")
            verdict=FAIL
        else
            verdict=ok
        fi
        takeup_checked+=("$(printf '%-9s %-20s offered=%-6s taken=%-8s rule=%-7s %s' "$label" "$feature" "$offered" "$taken" "$rule" "$verdict")")
    done < "$list"
}
grep -q "^vbd-takeup PASS" <<< "$results" && check_takeup REALXEN-TAKEUP "$repo/Protocols/realxen-takeup.tsv" vbd
grep -q "^net-takeup PASS" <<< "$results" && check_takeup REALXEN-NETTAKEUP "$repo/Protocols/realxen-net-takeup.tsv" vif

# Benchmark: per workload, MiB/s of each round for the kernel's blkback (reference) and ours;
# medians compared, spread the larger (max-min)/median of the two.
bench_samples=$(marker_lines REALXEN-BENCH < "$clean" \
    | sed -n 's/^side=\([a-z-]*\) round=\([0-9]*\) name=\([a-z0-9-]*\) mib=\([0-9]*\) seconds=\([0-9.]*\).*/\1 \3 \4 \5/p')
bench_errors=$(marker_lines REALXEN-BENCH-ERROR < "$clean")
bench_lines=()
if has_step bench && [ "$bench_rounds" != 0 ]; then
    [ -z "$bench_errors" ] || failures+=("bench: $(paste -sd';' - <<< "$bench_errors")")
    sides=(kernel ours)
    [ "${REALXEN_BENCH_COPY:-0}" = 1 ] && sides+=(ours-copy)
    # compare OURS REFERENCE LABEL: one bench line per workload.
    compare() {
        local name line
        for name in read-1m read-4k write-1m write-4k; do
            line=$(awk -v name="$name" -v ours="$1" -v ref="$2" -v label="$3" '
                function median(a, n,   i, j, t) {
                    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
                    return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
                }
                $2 == name && $4 > 0 { if ($1 == ours) o[++no] = $3 / $4; else if ($1 == ref) k[++nk] = $3 / $4 }
                END {
                    if (no == 0 || nk == 0) exit
                    mo = median(o, no); mk = median(k, nk)
                    so = (o[no] - o[1]) / mo * 100; sk = (k[nk] - k[1]) / mk * 100
                    printf "bench %s-%s ours=%.2f reference=%.2f unit=MiB/s ratio=%.3f spread=%.1f%%", label, name, mo, mk, mo / mk, (so > sk ? so : sk)
                }' <<< "$bench_samples")
            [ -n "$line" ] && bench_lines+=("$line")
        done
    }
    for name in read-1m read-4k write-1m write-4k; do
        for side in "${sides[@]}"; do
            n=$(grep -c "^$side $name " <<< "$bench_samples" || true)
            [ "$n" = "$bench_rounds" ] || failures+=("bench $name: $n of $bench_rounds $side rounds reported")
        done
    done
    compare ours kernel realxen
    # Persistent grants on (ours) against off (ours-copy), when asked for.
    [ "${REALXEN_BENCH_COPY:-0}" = 1 ] && compare ours ours-copy realxen-persistent-vs-copy
fi

# Net benchmark: per iperf3 workload, the receiver's rate in each round for Linux's
# xen-netback (reference) and ours; medians compared, spread as for the block benchmark.
netbench_workloads=(tcp-rx tcp-tx udp64-rx udp64-tx)
netbench_samples=$(marker_lines REALXEN-NETBENCH < "$clean" \
    | sed -n 's/^side=\([a-z]*\) round=\([0-9]*\) name=\([a-z0-9-]*\) value=\([0-9.]*\) unit=\([^ ]*\).*/\1 \3 \4 \5/p')
netbench_lines=()
if has_step netbench && [ "$bench_rounds" != 0 ]; then
    netbench_errors=$(marker_lines REALXEN-NETBENCH-ERROR < "$clean")
    [ -z "$netbench_errors" ] || failures+=("netbench: $(paste -sd';' - <<< "$netbench_errors")")
    for name in "${netbench_workloads[@]}"; do
        for side in kernel ours; do
            n=$(grep -c "^$side $name " <<< "$netbench_samples" || true)
            [ "$n" = "$bench_rounds" ] || failures+=("netbench $name: $n of $bench_rounds $side rounds reported")
        done
        line=$(awk -v name="$name" '
            function median(a, n,   i, j, t) {
                for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
                return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
            }
            $2 == name { unit = $4; if ($1 == "ours") o[++no] = $3; else if ($1 == "kernel") k[++nk] = $3 }
            END {
                if (no == 0 || nk == 0) exit
                mo = median(o, no); mk = median(k, nk)
                if (mo <= 0 || mk <= 0) exit
                so = (o[no] - o[1]) / mo * 100; sk = (k[nk] - k[1]) / mk * 100
                printf "bench realxen-net-%s ours=%.2f reference=%.2f unit=%s ratio=%.3f spread=%.1f%%", name, mo, mk, unit, mo / mk, (so > sk ? so : sk)
            }' <<< "$netbench_samples")
        [ -n "$line" ] && netbench_lines+=("$line")
    done
fi

echo
echo "=== realxen: what dom0 reported"
[ -z "$marks" ] || sed 's/^/REALXEN-MARK /' <<< "$marks"
echo "--- xensplit selftest --platform xen (ring between two threads of one process, not two processes)"
[ -n "$selftest_lines" ] && echo "$selftest_lines" || echo "(no selftest output)"
echo "--- $swift_suite (the Swift suite, from the test bundle, in dom0)"
[ -n "$swift_lines" ] && echo "$swift_lines" || echo "(no output from the test bundle)"
echo "--- steps"
while read -r step verdict why; do
    [ "$step" = setup ] && printf '%-14s %-4s %s\n' "$step" "$verdict" "$why"
done <<< "$results"
printf '%-14s %-4s %s\n' selftest "$([ -n "$selftest_rc" ] && [ "$selftest_rc" = 0 ] && [ "$selftest_fail" -eq 0 ] && [ "$selftest_pass" -ge "$min_selftest_steps" ] && echo PASS || echo FAIL)" \
    "$selftest_pass steps passed, $selftest_fail failed (rc ${selftest_rc:-none})"
printf '%-14s %-4s %s\n' swift-tests "${swift_verdict:-FAIL}" "$swift_suite: $swift_why"
while read -r step verdict why; do
    [ -n "$step" ] && [ "$step" != setup ] && printf '%-14s %-4s %s\n' "$step" "$verdict" "$why"
done <<< "$results"
echo "--- block backend steps (dom0's view)"
marker_lines REALXEN-VBD < "$clean"
echo "--- take-up (vbd: xvda, rules from Protocols/realxen-takeup.tsv; vif: vif 0, Protocols/realxen-net-takeup.tsv)"
if [ ${#takeup_checked[@]} -gt 0 ]; then printf '%s\n' "${takeup_checked[@]}"; else echo "(not checked)"; fi
{ marker_lines REALXEN-TAKEUP < "$clean"; marker_lines REALXEN-NETTAKEUP < "$clean"; } | sed -n 's/^\([a-z0-9-]* offered=\)/  observed: \1/p'
echo "--- benchmark (dd O_DIRECT in a 2-vCPU domU on dom0's /dev/ram0; reference: Linux's xen-blkback; under TCG emulation)"
marker_lines REALXEN-BENCH-INFO < "$clean" | sed 's/^/REALXEN-BENCH-INFO /'
if [ ${#bench_lines[@]} -gt 0 ]; then printf '%s\n' "${bench_lines[@]}"; else echo "(no benchmark)"; fi
echo "--- our frontend against Linux's blkback (dom0)"
{ marker_lines REALXEN-FRONTEND < "$clean"; marker_lines REALXEN-FRONTEND-4K < "$clean"; }
echo "--- the net pair (dom0's view)"
marker_lines REALXEN-NET < "$clean"
marker_lines REALXEN-NETFRONT < "$clean" | sed 's/^/netfront: /'
echo "--- the conformance suite against Linux's drivers (JUnit reports in $run/conformance/)"
mkdir -p "$run/conformance"
for name in $(sed -n 's/^REALXEN-LOG-BEGIN conformance-junit-\([^ ]*\)$/\1/p' "$clean"); do
    sed -n "/^REALXEN-LOG-BEGIN conformance-junit-$name\$/,/^REALXEN-LOG-END conformance-junit-$name\$/p" "$clean" \
        | sed '1d;$d' > "$run/conformance/$name.xml"
done
marker_lines REALXEN-CONFORMANCE < "$clean"
marker_lines REALXEN-CONFORMANCE-TIME < "$clean" | sed 's/^/dom0 time: /'
echo "--- net benchmark (iperf3, dom0 the client, a 2-vCPU domU with one vif; reference: Linux's xen-netback; under TCG emulation)"
marker_lines REALXEN-NETBENCH-INFO < "$clean" | sed 's/^/REALXEN-NETBENCH-INFO /'
marker_lines REALXEN-NETBENCH < "$clean" | sed 's/^/  round: /'
marker_lines REALXEN-NETBENCH-THREADS < "$clean" | sed 's/^/  ours, CPU ticks per thread: /'
if [ ${#netbench_lines[@]} -gt 0 ]; then printf '%s\n' "${netbench_lines[@]}"; else echo "(no net benchmark)"; fi
echo "--- block backend restart (dom0's view; pauses under TCG emulation)"
marker_lines REALXEN-RESTART < "$clean"
echo "--- step groups in dom0 (s, from the marks' uptime)"
awk '$2 ~ /-begin$|-end$|^tests-done$/ { sub(/^uptime=/, "", $3); print $2, $3 }' <<< "$(sed 's/^/x /' <<< "$marks")" \
    | awk '{ n = $1; t = $2 } n ~ /-begin$/ { b[substr(n, 1, length(n) - 6)] = t } n ~ /-end$/ { g = substr(n, 1, length(n) - 4); if (g in b) printf "%-18s %8.1f\n", g, t - b[g] }'
echo "--- timings (s)"
for i in "${!phase_names[@]}"; do printf '%-18s %8s\n' "${phase_names[$i]}" "${phase_seconds[$i]}"; done

section() {
    local text
    text=$(sed -n "/^REALXEN-LOG-BEGIN $1\$/,/^REALXEN-LOG-END $1\$/p" "$clean" | sed '1d;$d')
    echo "${text:-(not in the serial log: the step did not run or dom0 stopped first)}"
}
if [ ${#failures[@]} -gt 0 ]; then
    echo "--- tail of the serial log ($serial)"
    tail -n 60 "$clean"
    echo "--- QEMU's own output"
    cat "$run/qemu.out"
    echo "--- domU console"
    section domu-console
    echo "--- xl create"
    section xl-create
    echo "--- xensplit selftest output"
    section selftest
    echo "--- $swift_suite output"
    section swift-tests
    for name in blkback xenstore-backend xenstore-frontend domu-vbd-console domu-vbd2-console xl-create-vbd xl-destroy-vbd \
            xl-create-vbd2 hotplug-noop blkfront xl-block-attach xl-block-detach nbdcopy \
            netback xs-net-backend xs-net-frontend domu-net-console domu-net2-console xl-create-net xl-destroy-net \
            netfront netfront-diag xl-network-attach xl-network-detach vif-bridge \
            conformance-domu-console xl-attach-conf dmesg-conformance \
            $(sed -n 's/^REALXEN-LOG-BEGIN \(\(net\)\{0,1\}bench-[^ ]*\)$/\1/p' "$clean"); do
        echo "--- $name"
        section "$name"
    done
    verdict_printed=1
    echo "=== realxen: FAIL"
    for f in "${failures[@]}"; do echo "  - $f"; done
    exit 1
fi
verdict_printed=1
skips=$(grep -c '^[^ ]* SKIP ' <<< "$results" || true)
echo "=== realxen: PASS (every step that ran passed; $skips step(s) SKIPPED, listed above, not passed)"
