import Logging
import Synchronization

/// The log lines a guest can cause (refused requests, a broken ring), rate-limited per
/// device so a frontend cannot flood dom0's log: at most ``Policy/burst`` lines per
/// ``Policy/window``; the lines over that are counted, and the count goes out as one line
/// once the guest has been quiet for ``Policy/quiet`` (or the window ended), from
/// ``flush()`` (which the daemon calls on its timer) or from the next line let through.
///
/// Shared by a device's queues, which may sit on different workers; the lock is taken
/// only on the refusal path, never for a request served.
public final class GuestLog: Sendable {
    /// How many lines, per how long.
    public struct Policy: Sendable {
        /// Lines let through per window.
        public var burst: Int
        /// The window; it starts at the first line after the last one ended.
        public var window: Duration
        /// Suppressed lines are reported once no line was suppressed for this long.
        public var quiet: Duration

        public init(burst: Int = 100, window: Duration = .seconds(10), quiet: Duration = .seconds(1)) {
            self.burst = burst
            self.window = window
            self.quiet = quiet
        }
    }

    struct State {
        var windowStart: ContinuousClock.Instant?
        var logged = 0
        var suppressed = 0
        var lastSuppressed: ContinuousClock.Instant?
        var totalSuppressed = 0
    }

    /// Where the lines go (metadata names the device).
    public let logger: Logger
    public let policy: Policy
    let state = Mutex(State())

    public init(logger: Logger, policy: Policy = Policy()) {
        self.logger = logger
        self.policy = policy
    }

    /// Lines suppressed so far, in all.
    public var suppressedLines: Int { state.withLock { $0.totalSuppressed } }

    /// Logs `message` at `level` if the budget allows; otherwise counts it. `metadata` is
    /// built only for a line that goes out.
    public func log(_ level: Logger.Level, _ message: @autoclosure () -> Logger.Message,
                    metadata: @autoclosure () -> Logger.Metadata) {
        let now = ContinuousClock.now
        let (admitted, pending) = state.withLock { s -> (Bool, Int) in
            var pending = 0
            if let start = s.windowStart, now - start < policy.window {
                // Within the window: its budget decides.
            } else {
                pending = s.suppressed
                s.suppressed = 0
                s.windowStart = now
                s.logged = 0
            }
            guard s.logged < policy.burst else {
                s.suppressed += 1
                s.totalSuppressed += 1
                s.lastSuppressed = now
                return (false, pending)
            }
            s.logged += 1
            return (true, pending)
        }
        if pending > 0 { reportSuppressed(pending) }
        if admitted { logger.log(level: level, message(), metadata: metadata()) }
    }

    /// Reports lines suppressed so far if the guest has been quiet long enough or the
    /// window ended. Returns how many were reported.
    @discardableResult
    public func flush() -> Int {
        let now = ContinuousClock.now
        let pending = state.withLock { s -> Int in
            guard s.suppressed > 0 else { return 0 }
            let quiet = s.lastSuppressed.map { now - $0 >= policy.quiet } ?? true
            let ended = s.windowStart.map { now - $0 >= policy.window } ?? true
            guard quiet || ended else { return 0 }
            defer { s.suppressed = 0 }
            return s.suppressed
        }
        if pending > 0 { reportSuppressed(pending) }
        return pending
    }

    private func reportSuppressed(_ count: Int) {
        logger.warning("guest-caused log lines suppressed", metadata: [
            "suppressed": "\(count)", "limit": "\(policy.burst) per \(policy.window)"])
    }
}
