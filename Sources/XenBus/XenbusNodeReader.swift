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

    /// The nodes among `keys` that exist, by key: what a feature-set parser takes.
    public func entries(_ keys: [String]) async throws(XenbusError) -> [String: String] {
        var entries: [String: String] = [:]
        for key in keys {
            if let value = try await optionalString(key) { entries[key] = value }
        }
        return entries
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
