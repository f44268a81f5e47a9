import CXen
import Glibc
import Synchronization
import XenPlatform

/// An open libxen handle: libxengnttab's gnttab (/dev/xen/gntdev), its gntshr
/// (/dev/xen/gntalloc), or libxenevtchn (/dev/xen/evtchn). One owner; ``close()`` is
/// explicit and idempotent, and a call after it is a typed error rather than a use of
/// freed memory.
final class LibxenHandle: @unchecked Sendable {
    // SAFETY (@unchecked): `raw` is valid until `close()`, which flips `closed` before
    // freeing it. The one owner does not close while another of its calls is in flight;
    // every call first asks ``pointer(for:)``, which refuses once closed.
    private let raw: OpaquePointer
    private let closed = Atomic<Bool>(false)
    private let closer: @Sendable (OpaquePointer) -> Void
    /// The library and device, for error messages ("gnttab /dev/xen/gntdev").
    let name: String

    /// Kinds of handle and the device each opens.
    enum Kind: Sendable {
        case gnttab, gntshr, evtchn

        /// The device libxen opens for this kind (tools/libs/*/linux.c).
        var device: String {
            switch self {
            case .gnttab: return "/dev/xen/gntdev"
            case .gntshr: return "/dev/xen/gntalloc"
            case .evtchn: return "/dev/xen/evtchn"
            }
        }

        var openCall: String {
            switch self {
            case .gnttab: return "xengnttab_open"
            case .gntshr: return "xengntshr_open"
            case .evtchn: return "xenevtchn_open"
            }
        }
    }

    /// Opens a handle of `kind`; the error names the call, the device and errno.
    init(_ kind: Kind) throws(PlatformError) {
        name = "\(kind.openCall) (\(kind.device))"
        let opened: LinuxCall.Outcome<OpaquePointer?>
        switch kind {
        case .gnttab:
            opened = LinuxCall.gnttabOpen()
            closer = LinuxCall.gnttabClose
        case .gntshr:
            opened = LinuxCall.gntshrOpen()
            closer = LinuxCall.gntshrClose
        case .evtchn:
            opened = LinuxCall.evtchnOpen()
            closer = LinuxCall.evtchnClose
        }
        guard let handle = opened.value else {
            throw kind == .evtchn
                ? .eventChannel("\(name) failed", errno: opened.errno)
                : .system(name, errno: opened.errno)
        }
        raw = handle
    }

    deinit { close() }

    /// Whether ``close()`` has run.
    var isClosed: Bool { closed.load(ordering: .acquiring) }

    /// The libxen handle for one call, or a typed error naming `call` once closed.
    @inline(__always)
    func pointer(for call: @autoclosure () -> String) throws(PlatformError) -> OpaquePointer {
        guard !closed.load(ordering: .acquiring) else {
            throw .system("\(call()) on a closed \(name) handle", errno: EBADF)
        }
        return raw
    }

    /// Closes the handle (libxen closes the device). Safe to call more than once.
    func close() {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        closer(raw)
    }
}
