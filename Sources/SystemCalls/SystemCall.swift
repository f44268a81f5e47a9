import Glibc

/// The one wrapper every module's system-call sites go through: it repeats a call that
/// failed with EINTR (a signal arrived before it did anything) and turns a failure into
/// the ``Errno`` it reported, read at once, before anything else can overwrite it.
///
/// Each module keeps its own call sites (URing's `Syscall`, XenStore's `Syscall`,
/// XenLinux's `LinuxCall`), which name the call in their typed errors; this is only the
/// loop and the errno they share. Calls whose repeat would not be the same call (close,
/// an unmap after a partial effect) do not come here.
public enum SystemCall {
    /// Runs `call`, which returns a negative value and sets `errno` on failure (libc's
    /// convention), until it does not fail with EINTR: its value, or its errno.
    @inlinable
    public static func retrying<T: FixedWidthInteger & SignedInteger>(_ call: () -> T) -> Result<T, Errno> {
        while true {
            let value = call()
            if value >= 0 { return .success(value) }
            let error = Errno.current
            if error != .EINTR { return .failure(error) }
        }
    }

    /// Runs `call`, which returns the negated errno on failure (liburing's and the raw
    /// kernel interface's convention), until it does not fail with EINTR: its value, or
    /// its errno.
    @inlinable
    public static func retryingNegated<T: FixedWidthInteger & SignedInteger>(_ call: () -> T) -> Result<T, Errno> {
        while true {
            let value = call()
            if value >= 0 { return .success(value) }
            let error = Errno(code: Int32(truncatingIfNeeded: -value))
            if error != .EINTR { return .failure(error) }
        }
    }
}
