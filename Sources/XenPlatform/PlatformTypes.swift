import SystemCalls

/// A Xen domain id (xen.h: domid_t).
public typealias DomainID = UInt16

/// A grant reference: an index into the granting domain's grant table (grant_table.h: grant_ref_t).
public typealias GrantRef = UInt32

/// An event-channel port (event_channel.h: evtchn_port_t).
public typealias EventPort = UInt32

extension DomainID {
    /// The control domain.
    public static let dom0: DomainID = 0
    /// xen.h: DOMID_SELF, "the calling domain".
    public static let domidSelf: DomainID = 0x7FF0
}

/// grant_table.h: GNTST_* status codes, as Xen returns them for each grant operation.
public enum GrantStatus: Int16, Error, Sendable, CustomStringConvertible {
    case okay = 0
    case generalError = -1
    case badDomain = -2
    case badGrantRef = -3
    case badHandle = -4
    case badVirtualAddress = -5
    case badDeviceAddress = -6
    case noDeviceSpace = -7
    case permissionDenied = -8
    case badPage = -9
    case badCopyArgument = -10
    case addressTooBig = -11
    case eagain = -12
    case noSpace = -13

    public var description: String {
        switch self {
        case .okay: return "GNTST_okay"
        case .generalError: return "GNTST_general_error"
        case .badDomain: return "GNTST_bad_domain"
        case .badGrantRef: return "GNTST_bad_gntref"
        case .badHandle: return "GNTST_bad_handle"
        case .badVirtualAddress: return "GNTST_bad_virt_addr"
        case .badDeviceAddress: return "GNTST_bad_dev_addr"
        case .noDeviceSpace: return "GNTST_no_device_space"
        case .permissionDenied: return "GNTST_permission_denied"
        case .badPage: return "GNTST_bad_page"
        case .badCopyArgument: return "GNTST_bad_copy_arg"
        case .addressTooBig: return "GNTST_address_too_big"
        case .eagain: return "GNTST_eagain"
        case .noSpace: return "GNTST_no_space"
        }
    }
}

/// grant_table.h: grant_entry_v1 flag bits (the GTF_* values).
public struct GrantFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// GTF_permit_access: the type field says "access permitted".
    public static let permitAccess = GrantFlags(rawValue: 1)
    /// GTF_type_mask: the two type bits.
    public static let typeMask = GrantFlags(rawValue: 3)
    /// GTF_readonly: the grantee may only read.
    public static let readOnly = GrantFlags(rawValue: 1 << 2)
    /// GTF_reading: mapped for reading (set by the hypervisor).
    public static let reading = GrantFlags(rawValue: 1 << 3)
    /// GTF_writing: mapped for writing (set by the hypervisor).
    public static let writing = GrantFlags(rawValue: 1 << 4)
    /// GTF_sub_page: only part of the page is granted (not supported here).
    public static let subPage = GrantFlags(rawValue: 1 << 8)
}

/// Errors of the platform: what a grant, event-channel or hypervisor call refused, and why.
public enum PlatformError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A grant operation on `ref` of `domain` failed with Xen's status code.
    case grant(GrantStatus, ref: GrantRef, domain: DomainID, reason: String)
    /// Ending access failed because the peer still has the page mapped (GTF_reading/writing).
    case grantBusy(ref: GrantRef)
    /// An event-channel call failed; `errno` is what Xen or the local hypervisor answered.
    case eventChannel(String, errno: Int32)
    /// A system call failed.
    case system(String, errno: Int32)
    /// The hypervisor connection broke or answered something malformed.
    case hypervisor(String)
    /// The operation is not available on this platform.
    case unsupported(String)
    /// A caller argument out of range (count, offset, length).
    case invalidArgument(String)

    public var description: String {
        switch self {
        case let .grant(status, ref, domain, reason):
            return "grant \(ref) of d\(domain): \(status) (\(reason))"
        case let .grantBusy(ref):
            return "grant \(ref) is still mapped by its grantee (GTF_reading/GTF_writing set)"
        case let .eventChannel(what, errno):
            return "event channel: \(what): \(Errno(code: errno))"
        case let .system(call, errno):
            return "\(call) failed: \(Errno(code: errno))"
        case let .hypervisor(what):
            return "hypervisor: \(what)"
        case let .unsupported(what):
            return "unsupported: \(what)"
        case let .invalidArgument(what):
            return "invalid argument: \(what)"
        }
    }
}
