import CURing
import Glibc
import SystemCalls

/// A one-shot CLOCK_MONOTONIC timer as a descriptor (timerfd), so a worker waits for it
/// the way it waits for everything else: a `.pollReadable` in its engine, which also
/// makes the wait cancellable. One owner; closed on deinit.
public final class TimerDescriptor {
    /// The descriptor to poll: readable once the timer fired.
    public let fileDescriptor: Int32

    public init() throws(URingError) {
        let fd = curing_timerfd_create()
        guard fd >= 0 else { throw .system(call: "timerfd_create", Errno(code: -fd)) }
        fileDescriptor = fd
    }

    deinit { Glibc.close(fileDescriptor) }

    /// Fires once after `delay` (at least a microsecond), replacing any earlier arming.
    public func arm(after delay: Duration) throws(URingError) {
        let wait = max(delay, .microseconds(1))
        let (seconds, attoseconds) = wait.components
        let result = curing_timerfd_arm(fileDescriptor, seconds, Int(attoseconds / 1_000_000_000))
        guard result == 0 else { throw .system(call: "timerfd_settime", Errno(code: -result)) }
    }

    /// Takes the expiry count so the descriptor is no longer readable (non-blocking).
    public func drain() {
        var expirations: UInt64 = 0
        _ = read(fileDescriptor, &expirations, 8)
    }
}
