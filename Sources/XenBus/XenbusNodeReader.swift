import XenStore

/// Typed reads of the keys of one device node, for hooks that parse what the other end
/// wrote. Each call reads its key once; every malformed value is a ``XenbusError`` that
/// names the full path, the value and what was allowed.
public struct XenbusNodeReader: Sendable {
    /// The node the keys are under.
    public let path: String
    let store: XenStoreClient

    /// A reader of `path`'s keys over `store`.
    public init(store: XenStoreClient, path: String) {
        self.store = store
        self.path = path
    }

    /// The full path of `key`.
    public func path(of key: String) -> String { path + "/" + key }

    /// The raw bytes of `key`, or nil if it does not exist.
    public func optionalBytes(_ key: String) async throws(XenbusError) -> [UInt8]? {
        let full = path(of: key)
        do {
            return try await store.read(full)
        } catch .daemon(.enoent) {
            return nil
        } catch {
            throw .store(path: full, error)
        }
    }

    /// `key` as UTF-8 text, or nil if absent. Invalid UTF-8 is refused.
    public func optionalString(_ key: String) async throws(XenbusError) -> String? {
        guard let bytes = try await optionalBytes(key) else { return nil }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw .invalidValue(path: path(of: key), value: XenbusError.printable(bytes), expected: "UTF-8 text")
        }
        return text
    }

    /// `key` as text; absent is ``XenbusError/missingKey(path:)``.
    public func string(_ key: String) async throws(XenbusError) -> String {
        guard let text = try await optionalString(key) else { throw .missingKey(path: path(of: key)) }
        return text
    }

    /// `key` as an unsigned decimal (no sign, no spaces, at most 20 digits) no larger than
    /// `max`, or nil if absent.
    public func optionalUnsigned<T: FixedWidthInteger & UnsignedInteger & Sendable>(
        _ key: String, max: T = .max
    ) async throws(XenbusError) -> T? {
        guard let bytes = try await optionalBytes(key) else { return nil }
        guard let value = XenStoreNumber.decimal(bytes[...], max: UInt64(max)) else {
            throw .invalidValue(path: path(of: key), value: XenbusError.printable(bytes), expected: "a decimal from 0 to \(max)")
        }
        return T(value)
    }

    /// `key` as an unsigned decimal no larger than `max`; absent is
    /// ``XenbusError/missingKey(path:)``.
    public func unsigned<T: FixedWidthInteger & UnsignedInteger & Sendable>(
        _ key: String, max: T = .max
    ) async throws(XenbusError) -> T {
        guard let value: T = try await optionalUnsigned(key, max: max) else { throw .missingKey(path: path(of: key)) }
        return value
    }

    /// A boolean feature key (`feature-flush-cache`, `feature-persistent`, ...): absent
    /// is false, "0" false, "1" true, anything else refused.
    public func flag(_ key: String) async throws(XenbusError) -> Bool {
        guard let bytes = try await optionalBytes(key) else { return false }
        switch bytes {
        case [UInt8(ascii: "0")]: return false
        case [UInt8(ascii: "1")]: return true
        default:
            throw .invalidValue(path: path(of: key), value: XenbusError.printable(bytes), expected: "0 or 1")
        }
    }

    /// The node's `state`, parsed; a missing node or key reads as ``XenbusState/unknown``,
    /// as Linux's `xenbus_read_driver_state` does. So does EACCES: an unprivileged
    /// domain asking for a node under a removed one is told EACCES, not ENOENT, because
    /// it may not read the ancestor that remains.
    public func state() async throws(XenbusError) -> XenbusState {
        let full = path(of: "state")
        let bytes: [UInt8]
        do {
            bytes = try await store.read(full)
        } catch .daemon(.enoent), .daemon(.eacces) {
            return .unknown
        } catch {
            throw .store(path: full, error)
        }
        return try XenbusState(parsing: bytes, at: full)
    }
}

/// Keys a device publishes in its own node, in the order given (ring-ref, event-channel,
/// feature-*, sectors, ...). Names are relative paths under the node ("queue-0/ring-ref").
public struct XenbusKeys: Sendable, Equatable, ExpressibleByDictionaryLiteral {
    /// The keys and values in writing order.
    public private(set) var entries: [(key: String, value: String)]

    /// No keys.
    public init() { entries = [] }

    public init(dictionaryLiteral elements: (String, String)...) {
        entries = elements.map { (key: $0.0, value: $0.1) }
    }

    /// Adds (or replaces) `key`.
    public mutating func set(_ key: String, _ value: String) {
        if let i = entries.firstIndex(where: { $0.key == key }) {
            entries[i].value = value
        } else {
            entries.append((key: key, value: value))
        }
    }

    /// The value of `key`, if set.
    public subscript(key: String) -> String? { entries.first { $0.key == key }?.value }

    /// The key names.
    public var keys: [String] { entries.map(\.key) }

    public static func == (a: XenbusKeys, b: XenbusKeys) -> Bool {
        a.entries.elementsEqual(b.entries) { $0.key == $1.key && $0.value == $1.value }
    }

    /// Every name must be a relative path of valid components, and never `state`,
    /// which only the driver writes.
    func validate() throws(XenbusError) {
        for (key, _) in entries {
            guard key != "state" else { throw .invalidKey(key) }
            for part in key.split(separator: "/", omittingEmptySubsequences: false) {
                do {
                    try XenbusDevicePaths.checkComponent(String(part), what: "key")
                } catch {
                    throw .invalidKey(key)
                }
            }
        }
    }
}
