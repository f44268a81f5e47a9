/// Keys a device publishes in its own node, in the order given (ring-ref, event-channel,
/// feature-*, sectors, ...). Names are relative paths under the node ("queue-0/ring-ref").
public struct XenbusKeys: Sendable, Equatable, ExpressibleByDictionaryLiteral {
    /// The keys and values in writing order.
    public private(set) var entries: [(key: String, value: String)]

    /// No keys.
    public init() { entries = [] }

    /// The keys of a feature set's xenstore form, in key order (a stable writing order).
    public init(_ entries: [String: String]) {
        self.entries = entries.sorted { $0.key < $1.key }.map { (key: $0.key, value: $0.value) }
    }

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
