import Blkif
import XenPlatform
import XenRing

/// Errors of the scripted ring peers (``MockRingPeer``) and the blkif ring driver
/// (``BlkifRingDriver``).
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
    /// A ``BlkifRingDriver`` setting outside its limits, or one the rings cannot hold.
    case configuration(String)
    /// The backend does not offer what the ``BlkifRingDriver`` was configured to use.
    case backendLacks(feature: String, offered: Int, needed: Int)
    /// The xenbus handshake of the frontend at `frontend` failed, for `reason`.
    case handshake(frontend: String, reason: String)
    /// The frontend at `frontend` was not connected (after waiting `waited`).
    case notConnected(frontend: String, waited: Duration)
    /// A transfer of `bytes` bytes is not whole sectors within `limit` bytes.
    case transferSize(bytes: Int, limit: Int)
    /// The slot is out of range or in flight, or the queue out of range.
    case slotUnavailable(slot: Int, queue: Int)
    /// The request could not be built (the blkif rule it broke).
    case request(BlkifError)
    /// The backend's response on ring `ring` is malformed or answers nothing in flight.
    case response(ring: Int, reason: String)
    /// The backend sent no event for `seconds` seconds.
    case noEvent(seconds: Int)

    public var description: String {
        switch self {
        case let .platform(error): return "platform: \(error)"
        case let .ring(error): return "ring: \(error)"
        case let .entryTooLarge(bytes, entrySize): return "message of \(bytes) bytes exceeds the \(entrySize)-byte ring entry"
        case let .ringFull(size): return "ring full: all \(size) slots hold outstanding requests"
        case let .noRequestToAnswer(producer, consumer):
            return "response \(producer) would pass the \(consumer) requests consumed"
        case let .wait(errno): return "poll on the event channel failed (errno \(errno))"
        case let .configuration(what): return "blkif ring driver: \(what)"
        case let .backendLacks(feature, offered, needed):
            return "the backend offers \(feature) = \(offered); \(needed) needed"
        case let .handshake(frontend, reason): return "\(frontend): handshake failed: \(reason)"
        case let .notConnected(frontend, waited): return "\(frontend): not connected after \(waited)"
        case let .transferSize(bytes, limit): return "a transfer of \(bytes) bytes is not whole sectors within \(limit) bytes"
        case let .slotUnavailable(slot, queue): return "slot \(slot) on queue \(queue) is out of range or in flight"
        case let .request(error): return "request: \(error)"
        case let .response(ring, reason): return "response on ring \(ring): \(reason)"
        case let .noEvent(seconds): return "the backend sent no event for \(seconds) s"
        }
    }
}
