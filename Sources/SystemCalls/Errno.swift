import Glibc

/// A Linux errno value with a readable name: what a failed system call or a failed
/// io_uring completion (a negative `res`) reports. Its description names it and says
/// what it means (`EBADF (Bad file descriptor)`), so an error message that interpolates
/// one names the errno.
public enum Errno: Error, Hashable, Sendable, CustomStringConvertible {
    /// Operation not permitted (also what seccomp and `io_uring_disabled` report).
    case EPERM
    /// No such file or directory (also: a cancel found no matching request).
    case ENOENT
    /// Interrupted system call; the wrappers retry it, so callers rarely see it.
    case EINTR
    /// Input/output error.
    case EIO
    /// Bad file descriptor.
    case EBADF
    /// Resource temporarily unavailable.
    case EAGAIN
    /// Out of memory (also: a locked-memory limit hit while registering buffers).
    case ENOMEM
    /// Permission denied.
    case EACCES
    /// Bad address.
    case EFAULT
    /// Device or resource busy.
    case EBUSY
    /// File exists (also: a single-issuer ring used from another thread).
    case EEXIST
    /// Invalid argument.
    case EINVAL
    /// File too large.
    case EFBIG
    /// No space left on device.
    case ENOSPC
    /// Illegal seek (the file has no offsets).
    case ESPIPE
    /// Read-only file system.
    case EROFS
    /// Function not implemented (no io_uring in this kernel, or blocked by seccomp).
    case ENOSYS
    /// Operation not supported (for example a fallocate mode the file system lacks).
    case EOPNOTSUPP
    /// Operation already in progress (a cancel came too late).
    case EALREADY
    /// Timer expired (an io_uring timeout fired).
    case ETIME
    /// Operation canceled.
    case ECANCELED
    /// No such process (also: no such domain, as Xen's event channels answer).
    case ESRCH
    /// No such device or address.
    case ENXIO
    /// No such device.
    case ENODEV
    /// Inappropriate ioctl for device.
    case ENOTTY
    /// Too many open files in this process.
    case EMFILE
    /// Broken pipe (the peer closed its end).
    case EPIPE
    /// The socket is not connected.
    case ENOTCONN
    /// Connection reset by peer.
    case ECONNRESET
    /// Connection timed out.
    case ETIMEDOUT
    /// Connection refused (nothing listens there).
    case ECONNREFUSED
    /// Any other errno, by number.
    case other(Int32)

    /// The errno for `code` (a positive number).
    @inlinable
    public init(code: Int32) {
        switch code {
        case Glibc.EPERM: self = .EPERM
        case Glibc.ENOENT: self = .ENOENT
        case Glibc.EINTR: self = .EINTR
        case Glibc.EIO: self = .EIO
        case Glibc.EBADF: self = .EBADF
        case Glibc.EAGAIN: self = .EAGAIN
        case Glibc.ENOMEM: self = .ENOMEM
        case Glibc.EACCES: self = .EACCES
        case Glibc.EFAULT: self = .EFAULT
        case Glibc.EBUSY: self = .EBUSY
        case Glibc.EEXIST: self = .EEXIST
        case Glibc.EINVAL: self = .EINVAL
        case Glibc.EFBIG: self = .EFBIG
        case Glibc.ENOSPC: self = .ENOSPC
        case Glibc.ESPIPE: self = .ESPIPE
        case Glibc.EROFS: self = .EROFS
        case Glibc.ENOSYS: self = .ENOSYS
        case Glibc.EOPNOTSUPP: self = .EOPNOTSUPP
        case Glibc.EALREADY: self = .EALREADY
        case Glibc.ETIME: self = .ETIME
        case Glibc.ECANCELED: self = .ECANCELED
        case Glibc.ESRCH: self = .ESRCH
        case Glibc.ENXIO: self = .ENXIO
        case Glibc.ENODEV: self = .ENODEV
        case Glibc.ENOTTY: self = .ENOTTY
        case Glibc.EMFILE: self = .EMFILE
        case Glibc.EPIPE: self = .EPIPE
        case Glibc.ENOTCONN: self = .ENOTCONN
        case Glibc.ECONNRESET: self = .ECONNRESET
        case Glibc.ETIMEDOUT: self = .ETIMEDOUT
        case Glibc.ECONNREFUSED: self = .ECONNREFUSED
        default: self = .other(code)
        }
    }

    /// The errno number (positive).
    @inlinable
    public var code: Int32 {
        switch self {
        case .EPERM: return Glibc.EPERM
        case .ENOENT: return Glibc.ENOENT
        case .EINTR: return Glibc.EINTR
        case .EIO: return Glibc.EIO
        case .EBADF: return Glibc.EBADF
        case .EAGAIN: return Glibc.EAGAIN
        case .ENOMEM: return Glibc.ENOMEM
        case .EACCES: return Glibc.EACCES
        case .EFAULT: return Glibc.EFAULT
        case .EBUSY: return Glibc.EBUSY
        case .EEXIST: return Glibc.EEXIST
        case .EINVAL: return Glibc.EINVAL
        case .EFBIG: return Glibc.EFBIG
        case .ENOSPC: return Glibc.ENOSPC
        case .ESPIPE: return Glibc.ESPIPE
        case .EROFS: return Glibc.EROFS
        case .ENOSYS: return Glibc.ENOSYS
        case .EOPNOTSUPP: return Glibc.EOPNOTSUPP
        case .EALREADY: return Glibc.EALREADY
        case .ETIME: return Glibc.ETIME
        case .ECANCELED: return Glibc.ECANCELED
        case .ESRCH: return Glibc.ESRCH
        case .ENXIO: return Glibc.ENXIO
        case .ENODEV: return Glibc.ENODEV
        case .ENOTTY: return Glibc.ENOTTY
        case .EMFILE: return Glibc.EMFILE
        case .EPIPE: return Glibc.EPIPE
        case .ENOTCONN: return Glibc.ENOTCONN
        case .ECONNRESET: return Glibc.ECONNRESET
        case .ETIMEDOUT: return Glibc.ETIMEDOUT
        case .ECONNREFUSED: return Glibc.ECONNREFUSED
        case let .other(code): return code
        }
    }

    /// The errno of the calling thread, as left by the last failed libc call.
    @inlinable
    public static var current: Errno { Errno(code: Glibc.errno) }

    /// The C name of the errno (`"EBADF"`), or `"errno N"` for one without a case here.
    public var name: String {
        switch self {
        case .EPERM: return "EPERM"
        case .ENOENT: return "ENOENT"
        case .EINTR: return "EINTR"
        case .EIO: return "EIO"
        case .EBADF: return "EBADF"
        case .EAGAIN: return "EAGAIN"
        case .ENOMEM: return "ENOMEM"
        case .EACCES: return "EACCES"
        case .EFAULT: return "EFAULT"
        case .EBUSY: return "EBUSY"
        case .EEXIST: return "EEXIST"
        case .EINVAL: return "EINVAL"
        case .EFBIG: return "EFBIG"
        case .ENOSPC: return "ENOSPC"
        case .ESPIPE: return "ESPIPE"
        case .EROFS: return "EROFS"
        case .ENOSYS: return "ENOSYS"
        case .EOPNOTSUPP: return "EOPNOTSUPP"
        case .EALREADY: return "EALREADY"
        case .ETIME: return "ETIME"
        case .ECANCELED: return "ECANCELED"
        case .ESRCH: return "ESRCH"
        case .ENXIO: return "ENXIO"
        case .ENODEV: return "ENODEV"
        case .ENOTTY: return "ENOTTY"
        case .EMFILE: return "EMFILE"
        case .EPIPE: return "EPIPE"
        case .ENOTCONN: return "ENOTCONN"
        case .ECONNRESET: return "ECONNRESET"
        case .ETIMEDOUT: return "ETIMEDOUT"
        case .ECONNREFUSED: return "ECONNREFUSED"
        case let .other(code): return "errno \(code)"
        }
    }

    public var description: String {
        "\(name) (\(String(cString: strerror(code))))"
    }
}
