import CXen
import XenPlatform

extension GrantStatus {
    /// The status for a GNTST_* value as Xen wrote it into a gnttab_copy or map op
    /// (grant_table.h). A value outside the table (a newer Xen, or a corrupted status) is
    /// GNTST_general_error, Xen's own catch-all, never a trap.
    public init(gntst raw: Int16) {
        switch Int32(raw) {
        case GNTST_okay: self = .okay
        case GNTST_general_error: self = .generalError
        case GNTST_bad_domain: self = .badDomain
        case GNTST_bad_gntref: self = .badGrantRef
        case GNTST_bad_handle: self = .badHandle
        case GNTST_bad_virt_addr: self = .badVirtualAddress
        case GNTST_bad_dev_addr: self = .badDeviceAddress
        case GNTST_no_device_space: self = .noDeviceSpace
        case GNTST_permission_denied: self = .permissionDenied
        case GNTST_bad_page: self = .badPage
        case GNTST_bad_copy_arg: self = .badCopyArgument
        case GNTST_address_too_big: self = .addressTooBig
        case GNTST_eagain: self = .eagain
        case GNTST_no_space: self = .noSpace
        default: self = .generalError
        }
    }

    /// The GNTST_* value Xen uses for this status (grant_table.h).
    public var gntst: Int16 {
        switch self {
        case .okay: return Int16(GNTST_okay)
        case .generalError: return Int16(GNTST_general_error)
        case .badDomain: return Int16(GNTST_bad_domain)
        case .badGrantRef: return Int16(GNTST_bad_gntref)
        case .badHandle: return Int16(GNTST_bad_handle)
        case .badVirtualAddress: return Int16(GNTST_bad_virt_addr)
        case .badDeviceAddress: return Int16(GNTST_bad_dev_addr)
        case .noDeviceSpace: return Int16(GNTST_no_device_space)
        case .permissionDenied: return Int16(GNTST_permission_denied)
        case .badPage: return Int16(GNTST_bad_page)
        case .badCopyArgument: return Int16(GNTST_bad_copy_arg)
        case .addressTooBig: return Int16(GNTST_address_too_big)
        case .eagain: return Int16(GNTST_eagain)
        case .noSpace: return Int16(GNTST_no_space)
        }
    }
}
