import Glibc
import SystemCalls
import XenRing

/// Errors of the XenStore module. Decoding errors name the field, the value and the limit.
public enum XenStoreError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A header announced a payload longer than XENSTORE_PAYLOAD_MAX; the stream cannot be
    /// resynchronised, so the connection is dropped (as C xenstored does).
    case payloadTooLong(length: UInt32, limit: Int)
    /// Fewer than the 16 bytes of an xsd_sockmsg header.
    case truncatedHeader(count: Int)
    /// A peer let more than `limit` bytes of replies and events queue up without reading
    /// them; its connection is dropped.
    case peerNotReading(queuedBytes: Int, limit: Int)
    /// A message type outside io/xs_wire.h's enum, or one a peer may not send.
    case unknownMessageType(UInt32)
    /// A payload does not hold the NUL-terminated strings its type needs.
    case malformedPayload(type: XSDSockmsgType, reason: String)
    /// A path breaks io/xs_wire.h's path rules (characters, slashes, length).
    case invalidPath(path: String, reason: String)
    /// A permission string is not one of n/r/w/b followed by a domid.
    case invalidPermission(String)
    /// A numeric field (domid, offset, transaction id) is not a decimal in range.
    case invalidNumber(field: String, value: String)
    /// xenstored answered XS_ERROR with this error.
    case daemon(XSDErrorCode)
    /// The reply had a type that does not answer the request.
    case unexpectedReply(request: XSDSockmsgType, reply: UInt32)
    /// The connection closed, or the client was closed, before the answer came.
    case connectionClosed
    /// The peer's ring indices are inconsistent.
    case ring(RingError)
    /// A system call failed with errno.
    case systemCall(String, errno: Int32)
    /// This client already has a watch with this token; events are routed by token.
    case duplicateWatchToken(String)
    /// A transaction kept conflicting (EAGAIN) for `attempts` attempts.
    case transactionRetriesExhausted(attempts: Int)

    public var description: String {
        switch self {
        case let .payloadTooLong(length, limit):
            return "xenstore header len \(length) exceeds XENSTORE_PAYLOAD_MAX \(limit)"
        case let .truncatedHeader(count):
            return "xenstore header of \(count) bytes, need \(XSDSockmsgHeader.size)"
        case let .peerNotReading(queued, limit):
            return "peer left \(queued) bytes of output unread, more than \(limit)"
        case let .unknownMessageType(type):
            return "xenstore message type \(type) is not valid here"
        case let .malformedPayload(type, reason):
            return "malformed \(type) payload: \(reason)"
        case let .invalidPath(path, reason):
            return "invalid xenstore path '\(path)': \(reason)"
        case let .invalidPermission(text):
            return "invalid xenstore permission '\(text)': want n, r, w or b followed by a domid"
        case let .invalidNumber(field, value):
            return "\(field) '\(value)' is not a decimal number in range"
        case let .daemon(code):
            return "xenstored replied \(code.rawValue)"
        case let .unexpectedReply(request, reply):
            return "reply type \(reply) does not answer \(request)"
        case .connectionClosed:
            return "xenstore connection closed"
        case let .ring(error):
            return "xenstore ring: \(error)"
        case let .systemCall(name, errno):
            return "\(name) failed: \(Errno(code: errno))"
        case let .duplicateWatchToken(token):
            return "this client already has a watch with token '\(token)'"
        case let .transactionRetriesExhausted(attempts):
            return "transaction still conflicted (EAGAIN) after \(attempts) attempts"
        }
    }
}
