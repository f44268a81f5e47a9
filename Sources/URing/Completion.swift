import SystemCalls

/// One finished operation, copied out of the engine: the caller's user data and the result
/// the kernel (or the thread pool, with the same convention) reported.
public struct Completion: Equatable, Sendable {
    /// The value the caller attached to the request.
    public var userData: UInt64
    /// Bytes transferred, a poll mask, or 0 on success; `-errno` on failure.
    public var result: Int32
    /// io_uring's CQE flags (always 0 from the thread-pool engine).
    public var flags: UInt32

    @inlinable
    public init(userData: UInt64, result: Int32, flags: UInt32 = 0) {
        self.userData = userData
        self.result = result
        self.flags = flags
    }

    /// The failure, if `result` is negative.
    @inlinable
    public var error: Errno? { result < 0 ? Errno(code: -result) : nil }

    /// The result as a count (bytes, poll mask) or a typed errno.
    @inlinable
    public var outcome: Result<Int, Errno> {
        result < 0 ? .failure(Errno(code: -result)) : .success(Int(result))
    }
}
