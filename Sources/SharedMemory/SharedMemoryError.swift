import Glibc

/// Errors of the SharedMemory module.
public enum SharedMemoryError: Error, Equatable, Sendable, CustomStringConvertible {
    /// An access `offset..<offset+count` fell outside a region of `size` bytes.
    case outOfBounds(offset: Int, count: Int, size: Int)
    /// A region size that is zero, negative or not a whole number of pages.
    case badSize(Int)
    /// A system call failed with errno.
    case systemCall(String, errno: Int32)

    public var description: String {
        switch self {
        case let .outOfBounds(offset, count, size):
            return "access of \(count) bytes at offset \(offset) is outside the \(size)-byte region"
        case let .badSize(size):
            return "region size \(size) is not a positive multiple of the \(pageSize)-byte page"
        case let .systemCall(name, errno):
            return "\(name) failed: \(String(cString: strerror(errno))) (errno \(errno))"
        }
    }
}

/// The page size of Xen's ABI, which is also the host's on x86 and arm64 Linux.
public let pageSize = 4096
