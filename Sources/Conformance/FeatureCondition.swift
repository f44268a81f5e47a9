/// When a clause applies: a node of the target's own xenstore directory that must offer a
/// feature (Protocols/conformance/README.md, column `feature`).
public struct FeatureCondition: Sendable, Hashable, CustomStringConvertible {
    public enum Test: Sendable, Hashable {
        /// Present and not `0`.
        case offered
        /// A decimal above the bound.
        case above(UInt64)
        /// A decimal with all of these bits set.
        case bits(UInt64)
    }

    /// The node name, relative to the target's device directory.
    public let key: String
    public let test: Test

    public init(key: String, test: Test) {
        self.key = key
        self.test = test
    }

    /// Parses `KEY`, `KEY>N` or `KEY&BIT`; `-` is no condition (nil).
    public static func parse(_ text: String) throws(FeatureConditionError) -> FeatureCondition? {
        if text == "-" { return nil }
        func number(_ s: Substring) throws(FeatureConditionError) -> UInt64 {
            guard let n = UInt64(s) else { throw .notANumber(String(s)) }
            return n
        }
        if let i = text.firstIndex(of: ">") {
            return FeatureCondition(key: try validKey(text[..<i]), test: .above(try number(text[text.index(after: i)...])))
        }
        if let i = text.firstIndex(of: "&") {
            return FeatureCondition(key: try validKey(text[..<i]), test: .bits(try number(text[text.index(after: i)...])))
        }
        return FeatureCondition(key: try validKey(text[...]), test: .offered)
    }

    private static func validKey(_ key: Substring) throws(FeatureConditionError) -> String {
        guard !key.isEmpty, key.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-") }) else {
            throw .badKey(String(key))
        }
        return String(key)
    }

    /// Whether the target offers the feature, given the nodes of its directory (nil:
    /// absent). A value that is not a decimal where one is needed does not offer it.
    public func isOffered(by nodes: [String: String]) -> Bool {
        guard let value = nodes[key] else { return false }
        switch test {
        case .offered: return value != "0"
        case let .above(bound): return UInt64(value).map { $0 > bound } ?? false
        case let .bits(bits): return UInt64(value).map { $0 & bits == bits } ?? false
        }
    }

    public var description: String {
        switch test {
        case .offered: return key
        case let .above(bound): return "\(key)>\(bound)"
        case let .bits(bits): return "\(key)&\(bits)"
        }
    }
}

/// Why a `feature` column does not parse.
public enum FeatureConditionError: Error, Equatable, Sendable {
    /// The node name has characters a xenstore feature key does not.
    case badKey(String)
    /// The bound or bit mask is not a decimal.
    case notANumber(String)
}
