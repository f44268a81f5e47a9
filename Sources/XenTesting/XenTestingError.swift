import XenPlatform
import XenRing

/// Errors of the scripted ring peers (``MockRingPeer``).
public enum XenTestingError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A platform call (share, map, bind, notify, ...) failed.
    case platform(PlatformError)
    /// The ring's geometry is impossible, or the other end broke io/ring.h's index rules.
    case ring(RingError)
    /// A message of `bytes` bytes does not fit the ring's `entrySize`-byte slots.
    case entryTooLarge(bytes: Int, entrySize: Int)
    /// No request slot is free: `size` requests are outstanding (io/ring.h: RING_FULL).
    case ringFull(size: UInt32)
    /// The backend may not produce more responses than requests it consumed.
    case noRequestToAnswer(responseProducer: UInt32, requestConsumer: UInt32)
    /// Waiting on the event channel's descriptor failed with `errno`.
    case wait(errno: Int32)

    public var description: String {
        switch self {
        case let .platform(error): return "platform: \(error)"
        case let .ring(error): return "ring: \(error)"
        case let .entryTooLarge(bytes, entrySize): return "message of \(bytes) bytes exceeds the \(entrySize)-byte ring entry"
        case let .ringFull(size): return "ring full: all \(size) slots hold outstanding requests"
        case let .noRequestToAnswer(producer, consumer):
            return "response \(producer) would pass the \(consumer) requests consumed"
        case let .wait(errno): return "poll on the event channel failed (errno \(errno))"
        }
    }
}
