import Glibc
import XenStore

/// Errors of the XenBus module. Every case about a value the other end (or the
/// toolstack) wrote names the node's full path and the value as read.
public enum XenbusError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A `state` node holds something that is not a value of io/xenbus.h's enum xenbus_state.
    case invalidState(path: String, value: String)
    /// A key the protocol requires is absent.
    case missingKey(path: String)
    /// A key's value is malformed or out of range; `expected` says what was allowed.
    case invalidValue(path: String, value: String, expected: String)
    /// The other end's path (`frontend` or `backend`) is not under the home of the
    /// domain its `frontend-id`/`backend-id` names, or is not a device path at all.
    case otherEndOutsideDomain(path: String, value: String, domain: UInt16)
    /// A device path does not have the layout `/local/domain/<id>/backend/<type>/<fe>/<devid>`
    /// or `/local/domain/<id>/device/<type>/<devid>`.
    case invalidDevicePath(path: String, reason: String)
    /// A key name a device asked to write is not a relative xenstore path.
    case invalidKey(String)
    /// A xenstore request on `path` failed.
    case store(path: String, XenStoreError)
    /// A device hook refused or failed; `reason` is its own description.
    case hookFailed(hook: String, reason: String)
    /// The device's own node was removed (by the toolstack) while the driver ran.
    case nodeRemoved(path: String)
    /// The other end broke the protocol on the data path (a ring it overran, a slot that
    /// cannot be decoded); `reason` is the device's own description of what it did.
    case protocolViolation(path: String, reason: String)

    /// The errno a Linux driver would report for this error, as written in the `error`
    /// node by `xenbus_dev_fatal`.
    public var errno: Int32 {
        switch self {
        case .invalidState, .invalidValue, .otherEndOutsideDomain, .invalidDevicePath, .invalidKey, .hookFailed:
            return EINVAL
        case .missingKey, .nodeRemoved:
            return ENOENT
        case .protocolViolation:
            return EPROTO
        case let .store(_, error):
            if case let .daemon(code) = error { return code.errno }
            return EIO
        }
    }

    public var description: String {
        switch self {
        case let .invalidState(path, value):
            return "\(path) is '\(value)', not a xenbus state (0...8)"
        case let .missingKey(path):
            return "\(path) is missing"
        case let .invalidValue(path, value, expected):
            return "\(path) is '\(value)', expected \(expected)"
        case let .otherEndOutsideDomain(path, value, domain):
            return "\(path) is '\(value)', which is not a device node under /local/domain/\(domain)"
        case let .invalidDevicePath(path, reason):
            return "'\(path)' is not a xenbus device path: \(reason)"
        case let .invalidKey(key):
            return "'\(key)' is not a relative xenstore key"
        case let .store(path, error):
            return "xenstore on \(path): \(error)"
        case let .hookFailed(hook, reason):
            return "\(hook): \(reason)"
        case let .nodeRemoved(path):
            return "\(path) was removed"
        case let .protocolViolation(path, reason):
            return "protocol violation by the other end of \(path): \(reason)"
        }
    }

    /// A peer-written value made printable for an error message: at most 64 bytes,
    /// bytes outside printable ASCII as `\xNN`.
    static func printable(_ bytes: [UInt8]) -> String {
        var out = ""
        for byte in bytes.prefix(64) {
            if byte >= 0x20, byte < 0x7F, byte != UInt8(ascii: "\\") {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                let hex = String(byte, radix: 16)
                out += "\\x" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        if bytes.count > 64 { out += "...(\(bytes.count) bytes)" }
        return out
    }

    /// Wraps a hook's error: a ``XenbusError`` passes through, anything else is described.
    static func fromHook(_ hook: String, _ error: any Error) -> XenbusError {
        if let e = error as? XenbusError { return e }
        return .hookFailed(hook: hook, reason: String(describing: error))
    }
}
