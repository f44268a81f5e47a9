import Glibc

/// The errors xenstored sends as strings in an XS_ERROR reply (io/xs_wire.h: xsd_errors).
///
/// The wire carries the name ("EINVAL\0"); ``errno`` is the Linux value a C client
/// (libxenstore) turns it into.
public enum XSDErrorCode: String, Error, Sendable, CaseIterable, CustomStringConvertible {
    /// Invalid argument: a malformed payload or path, a bad permission string.
    case einval = "EINVAL"
    /// Permission denied by the node's ACL, or a privileged operation from a domU.
    case eacces = "EACCES"
    /// Already exists: a duplicate watch.
    case eexist = "EEXIST"
    /// Is a directory.
    case eisdir = "EISDIR"
    /// No such node, transaction, watch or domain.
    case enoent = "ENOENT"
    /// Out of memory.
    case enomem = "ENOMEM"
    /// A per-domain quota is exhausted (nodes, entry size, transactions, permissions).
    case enospc = "ENOSPC"
    /// Input/output error.
    case eio = "EIO"
    /// Directory not empty.
    case enotempty = "ENOTEMPTY"
    /// Unknown or unsupported message type.
    case enosys = "ENOSYS"
    /// Read-only.
    case erofs = "EROFS"
    /// Busy: a transaction started inside a transaction.
    case ebusy = "EBUSY"
    /// Try again: a transaction commit found a conflicting change.
    case eagain = "EAGAIN"
    /// Already connected.
    case eisconn = "EISCONN"
    /// Too big: a reply over the payload limit, or the watch quota.
    case e2big = "E2BIG"
    /// Not permitted: a domU changing a node's owner.
    case eperm = "EPERM"

    /// The Linux errno value for this error.
    public var errno: Int32 {
        switch self {
        case .einval: return EINVAL
        case .eacces: return EACCES
        case .eexist: return EEXIST
        case .eisdir: return EISDIR
        case .enoent: return ENOENT
        case .enomem: return ENOMEM
        case .enospc: return ENOSPC
        case .eio: return EIO
        case .enotempty: return ENOTEMPTY
        case .enosys: return ENOSYS
        case .erofs: return EROFS
        case .ebusy: return EBUSY
        case .eagain: return EAGAIN
        case .eisconn: return EISCONN
        case .e2big: return E2BIG
        case .eperm: return EPERM
        }
    }

    /// The error named by an XS_ERROR payload (the name, with or without its NUL).
    public init?(payload: [UInt8]) {
        var bytes = payload[...]
        if bytes.last == 0 { bytes = bytes.dropLast() }
        guard bytes.count <= 16, bytes.allSatisfy({ $0 != 0 }) else { return nil }
        self.init(rawValue: String(decoding: bytes, as: UTF8.self))
    }

    /// The XS_ERROR payload: the name and its NUL.
    public var payload: [UInt8] { Array(rawValue.utf8) + [0] }

    public var description: String { rawValue }
}
