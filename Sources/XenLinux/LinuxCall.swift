import CXen
import Glibc
import SharedMemory
import SystemCalls

/// The one call site of every libc and libxen function XenLinux uses. Each wrapper makes
/// the call, captures errno immediately after it, and repeats calls that can be
/// interrupted while they fail with EINTR (through the one shared loop, ``SystemCall``). Callers turn the outcome into a typed error
/// that names the call.
enum LinuxCall {
    /// The result of one call and the errno captured right after it (0 on success).
    struct Outcome<Value> {
        var value: Value
        var errno: Int32
        /// Whether the call failed (errno was set).
        var failed: Bool { errno != 0 }
    }

    /// Runs `body` until it does not return -1 with EINTR (``SystemCall/retrying(_:)``).
    @inline(__always)
    private static func retrying<T: FixedWidthInteger & SignedInteger>(_ body: () -> T) -> Outcome<T> {
        switch SystemCall.retrying(body) {
        case let .success(value): return Outcome(value: value, errno: 0)
        case let .failure(errno): return Outcome(value: -1, errno: errno.code)
        }
    }

    /// Runs `body` once: for calls that must not be repeated blindly (a repeat after a
    /// partial effect would not be the same call).
    @inline(__always)
    private static func once<T: FixedWidthInteger & SignedInteger>(_ body: () -> T) -> Outcome<T> {
        let value = body()
        return Outcome(value: value, errno: value < 0 ? Glibc.errno : 0)
    }

    /// Runs a call that returns NULL with errno set on failure.
    @inline(__always)
    private static func pointer<P>(_ body: () -> P?) -> Outcome<P?> {
        let value = body()
        return Outcome(value: value, errno: value == nil ? Glibc.errno : 0)
    }

    // MARK: libc

    /// access(2) with F_OK: whether `path` exists.
    static func exists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }

    /// open(2), close-on-exec.
    static func open(_ path: String, _ flags: Int32) -> Outcome<Int32> {
        retrying { Glibc.open(path, flags | O_CLOEXEC) }
    }

    /// close(2). Not retried: Linux releases the descriptor even when it reports EINTR.
    static func close(_ fd: Int32) {
        _ = Glibc.close(fd)
    }

    /// pipe(2) with both ends close-on-exec: (read end, write end).
    static func closeOnExecPipe() -> Outcome<(Int32, Int32)> {
        var fds: [Int32] = [-1, -1]
        let r = retrying { Glibc.pipe(&fds) }
        guard !r.failed else { return Outcome(value: (-1, -1), errno: r.errno) }
        for fd in fds { _ = retrying { fcntl(fd, F_SETFD, FD_CLOEXEC) } }
        return Outcome(value: (fds[0], fds[1]), errno: 0)
    }

    /// fcntl(2): adds O_NONBLOCK to `fd`'s status flags.
    static func setNonBlocking(_ fd: Int32) -> Outcome<Int32> {
        let flags = retrying { fcntl(fd, F_GETFL) }
        guard !flags.failed else { return flags }
        return retrying { fcntl(fd, F_SETFL, flags.value | O_NONBLOCK) }
    }

    /// poll(2) over `fds`; `timeout` in milliseconds, 0 to only check, -1 to wait.
    static func poll(_ fds: UnsafeMutableBufferPointer<pollfd>, timeout: Int32) -> Outcome<Int32> {
        retrying { Glibc.poll(fds.baseAddress, nfds_t(fds.count), timeout) }
    }

    /// read(2) into `buffer`.
    static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) -> Outcome<Int> {
        retrying { Glibc.read(fd, buffer.baseAddress, buffer.count) }
    }

    /// write(2) of `bytes`.
    static func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Outcome<Int> {
        retrying { Glibc.write(fd, bytes.baseAddress, bytes.count) }
    }

    /// munmap(2) of `pages` pages at `base`.
    static func munmap(_ base: UnsafeMutableRawPointer, pages: Int) -> Outcome<Int32> {
        once { Glibc.munmap(base, pages * pageSize) }
    }

    // MARK: libxengnttab: gnttab (/dev/xen/gntdev)

    static func gnttabOpen() -> Outcome<OpaquePointer?> {
        pointer { xengnttab_open(cxen_quiet_logger(), 0) }
    }

    static func gnttabClose(_ h: OpaquePointer) {
        _ = xengnttab_close(h)
    }

    /// Maps `refs` of `domain` contiguously. libxengnttab already waits and retries the
    /// mmap while Xen answers EAGAIN for a paged-out frame.
    static func mapDomainGrantRefs(_ h: OpaquePointer, domain: UInt16, refs: UnsafeMutableBufferPointer<UInt32>,
                                   writable: Bool) -> Outcome<UnsafeMutableRawPointer?> {
        pointer {
            xengnttab_map_domain_grant_refs(h, UInt32(refs.count), UInt32(domain), refs.baseAddress,
                                            writable ? PROT_READ | PROT_WRITE : PROT_READ)
        }
    }

    /// Unmaps a mapping: munmap, then the gntdev slots. Not retried: after the munmap a
    /// repeat could no longer find the slots.
    static func gnttabUnmap(_ h: OpaquePointer, _ base: UnsafeMutableRawPointer, pages: Int) -> Outcome<Int32> {
        once { xengnttab_unmap(h, base, UInt32(pages)) }
    }

    /// IOCTL_GNTDEV_GRANT_COPY over `ops`; per-op status lands in each op. A repeat
    /// copies the same bytes again, so EINTR is retried.
    static func grantCopy(_ h: OpaquePointer, _ ops: UnsafeMutableBufferPointer<xengnttab_grant_copy_segment_t>) -> Outcome<Int32> {
        retrying { xengnttab_grant_copy(h, UInt32(ops.count), ops.baseAddress) }
    }

    // MARK: libxengnttab: gntshr (/dev/xen/gntalloc)

    static func gntshrOpen() -> Outcome<OpaquePointer?> {
        pointer { xengntshr_open(cxen_quiet_logger(), 0) }
    }

    static func gntshrClose(_ h: OpaquePointer) {
        _ = xengntshr_close(h)
    }

    /// Allocates and grants `refs.count` zeroed pages to `grantee`, filling `refs`.
    static func sharePages(_ h: OpaquePointer, grantee: UInt16, refs: UnsafeMutableBufferPointer<UInt32>,
                           writable: Bool) -> Outcome<UnsafeMutableRawPointer?> {
        pointer { xengntshr_share_pages(h, UInt32(grantee), Int32(refs.count), refs.baseAddress, writable ? 1 : 0) }
    }

    /// Unshares (munmaps) pages from ``sharePages(_:grantee:refs:writable:)``.
    static func unshare(_ h: OpaquePointer, _ base: UnsafeMutableRawPointer, pages: Int) -> Outcome<Int32> {
        once { xengntshr_unshare(h, base, UInt32(pages)) }
    }

    // MARK: libxenevtchn (/dev/xen/evtchn)

    static func evtchnOpen() -> Outcome<OpaquePointer?> {
        pointer { xenevtchn_open(cxen_quiet_logger(), 0) }
    }

    static func evtchnClose(_ h: OpaquePointer) {
        _ = xenevtchn_close(h)
    }

    static func evtchnFD(_ h: OpaquePointer) -> Int32 {
        xenevtchn_fd(h)
    }

    static func bindUnboundPort(_ h: OpaquePointer, remote: UInt16) -> Outcome<Int32> {
        retrying { xenevtchn_bind_unbound_port(h, UInt32(remote)) }
    }

    static func bindInterdomain(_ h: OpaquePointer, remote: UInt16, remotePort: UInt32) -> Outcome<Int32> {
        retrying { xenevtchn_bind_interdomain(h, UInt32(remote), remotePort) }
    }

    static func notify(_ h: OpaquePointer, _ port: UInt32) -> Outcome<Int32> {
        retrying { xenevtchn_notify(h, port) }
    }

    static func unbind(_ h: OpaquePointer, _ port: UInt32) -> Outcome<Int32> {
        retrying { xenevtchn_unbind(h, port) }
    }

    /// Reads one pending port; blocks if none is queued (callers poll first).
    static func pending(_ h: OpaquePointer) -> Outcome<Int32> {
        retrying { xenevtchn_pending(h) }
    }

    static func unmask(_ h: OpaquePointer, _ port: UInt32) -> Outcome<Int32> {
        retrying { xenevtchn_unmask(h, port) }
    }
}
