import Netif
import Tap
import URing
import XenDevice
import XenPlatform
import XenRing

/// Errors of the NetBackend module: what the frontend, the platform or the host did that
/// stops a vif or one of its queues, and why.
public enum NetbackError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The frontend broke a ring's protocol (a req_prod overrun): the vif is refused.
    case ring(direction: NetbackDirection, RingError)
    /// The frontend broke the control ring's protocol (a req_prod overrun): the vif is
    /// refused. What a control request asks never is; it is answered with a status.
    case controlRing(RingError)
    /// A tx chain or an extra-info slot the frontend wrote breaks io/netif.h's rules past
    /// what is answered with an error (a chain past the fatal bound, a fragment crossing
    /// its page, a GSO extra of size 0 or an unknown type): the vif is refused.
    case packet(NetifError)
    /// A tx chain never ends: a whole ring of slots with NETTXF_more_data.
    case endlessChain(slots: UInt32)
    /// A grant, copy-buffer or event-channel call failed.
    case platform(PlatformError)
    /// The TAP device could not be made or set up.
    case tap(TapError)
    /// A backend worker refused the queue.
    case worker(BackendWorkerError)
    /// The engine-side resource a queue needs (its credit timer) could not be made.
    case engine(URingError)
    /// A configuration value is outside what the backend accepts.
    case configuration(name: String, value: Int, limit: ClosedRange<Int>)
    /// The toolstack's hotplug script did not report the vif connected in time.
    case hotplugTimeout(path: String, seconds: Int)
    /// The hotplug script reported an error (`hotplug-status` = `error`).
    case hotplugFailed(path: String, error: String?)

    public var description: String {
        switch self {
        case let .ring(direction, error): return "\(direction) ring protocol violated: \(error)"
        case let .controlRing(error): return "control ring protocol violated: \(error)"
        case let .packet(error): return "tx packet breaks io/netif.h: \(error)"
        case let .endlessChain(slots): return "a tx chain fills all \(slots) slots of the ring and goes on"
        case let .platform(error): return "platform: \(error)"
        case let .tap(error): return "TAP: \(error)"
        case let .worker(error): return "backend worker: \(error)"
        case let .engine(error): return "I/O engine: \(error)"
        case let .configuration(name, value, limit):
            return "\(name) \(value) is outside \(limit.lowerBound)...\(limit.upperBound)"
        case let .hotplugTimeout(path, seconds):
            return "\(path)/hotplug-status did not read connected within \(seconds) s (did the vif script run?)"
        case let .hotplugFailed(path, error):
            return "the vif script failed for \(path)" + (error.map { ": \($0)" } ?? "")
        }
    }
}

/// Which of a queue's two rings (io/netif.h: tx is guest to host, rx host to guest).
public enum NetbackDirection: String, Sendable, Equatable {
    case tx
    case rx
}
