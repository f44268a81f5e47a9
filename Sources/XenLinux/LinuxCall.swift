import Glibc

/// The one way XenLinux calls libc and libxen: run the call, capture errno right after it,
/// and run it again while it failed with EINTR (for calls that can be interrupted).
enum LinuxCall {
    /// The result of one call and the errno captured immediately after it (0 on success).
    struct Outcome<Value> {
        var value: Value
        var errno: Int32
    }

    /// Runs `body` until it does not return -1 with EINTR; returns its value and errno.
    @inline(__always)
    static func retrying<T: FixedWidthInteger & SignedInteger>(_ body: () -> T) -> Outcome<T> {
        while true {
            let value = body()
            if value >= 0 { return Outcome(value: value, errno: 0) }
            let e = Glibc.errno
            if e == EINTR { continue }
            return Outcome(value: value, errno: e)
        }
    }

    /// Runs a call that returns a pointer, NULL on failure with errno set; never retried,
    /// because the libxen calls that return pointers already retry what can be retried.
    @inline(__always)
    static func pointer<P>(_ body: () -> P?) -> Outcome<P?> {
        let value = body()
        return Outcome(value: value, errno: value == nil ? Glibc.errno : 0)
    }

    /// Whether `path` exists (access(2) with F_OK).
    static func exists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }
}
