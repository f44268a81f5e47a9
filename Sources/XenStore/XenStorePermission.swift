/// One entry of a node's permission list, written on the wire as a letter and a domid
/// ("r5", "n0"). The first entry of a list names the owner and the access of every domain
/// not listed; later entries grant access to one domain each.
public struct XenStorePermission: Equatable, Hashable, Sendable, CustomStringConvertible {
    /// The access an entry grants.
    public enum Access: UInt8, Sendable, CaseIterable {
        /// `n`: no access.
        case none = 0
        /// `r`: read.
        case read = 1
        /// `w`: write.
        case write = 2
        /// `b`: read and write.
        case both = 3

        /// The wire letter.
        public var letter: Character {
            switch self {
            case .none: return "n"
            case .read: return "r"
            case .write: return "w"
            case .both: return "b"
            }
        }

        /// Whether the entry lets a domain read.
        public var canRead: Bool { rawValue & 1 != 0 }
        /// Whether the entry lets a domain write.
        public var canWrite: Bool { rawValue & 2 != 0 }
    }

    /// The domain the entry is about (the owner, for the first entry).
    public var domid: UInt16
    /// The access granted.
    public var access: Access

    /// An entry.
    public init(domid: UInt16, access: Access) {
        self.domid = domid
        self.access = access
    }

    /// Parses one permission string, without its NUL: a letter then 1 to 5 decimal digits
    /// naming a domid up to 65535.
    public init(parsing bytes: ArraySlice<UInt8>) throws(XenStoreError) {
        let text = XenStorePath.printable(bytes)
        guard let letter = bytes.first else { throw .invalidPermission(text) }
        switch letter {
        case UInt8(ascii: "n"): access = .none
        case UInt8(ascii: "r"): access = .read
        case UInt8(ascii: "w"): access = .write
        case UInt8(ascii: "b"): access = .both
        default: throw .invalidPermission(text)
        }
        let digits = bytes.dropFirst()
        guard let value = XenStoreNumber.decimal(digits, max: UInt64(UInt16.max)) else { throw .invalidPermission(text) }
        domid = UInt16(value)
    }

    /// The wire string without its NUL.
    public var description: String { "\(access.letter)\(domid)" }

    /// Parses a list of NUL-terminated permission strings (a GET_PERMS reply, the tail of
    /// a SET_PERMS request). At least one entry is required.
    public static func parseList(_ payload: ArraySlice<UInt8>) throws(XenStoreError) -> [XenStorePermission] {
        var result: [XenStorePermission] = []
        for field in try XenStoreStrings.split(payload, type: .getPerms) {
            result.append(try XenStorePermission(parsing: field))
        }
        guard !result.isEmpty else { throw .invalidPermission("") }
        return result
    }

    /// The list as NUL-terminated strings.
    public static func encodeList(_ permissions: [XenStorePermission]) -> [UInt8] {
        var out: [UInt8] = []
        for p in permissions { out += Array(p.description.utf8) + [0] }
        return out
    }
}

/// Decimal fields of payloads (domids, offsets, transaction ids).
public enum XenStoreNumber {
    /// A decimal of 1 to 20 digits, no sign, at most `max`; nil otherwise.
    public static func decimal(_ bytes: ArraySlice<UInt8>, max: UInt64) -> UInt64? {
        guard !bytes.isEmpty, bytes.count <= 20 else { return nil }
        var value: UInt64 = 0
        for byte in bytes {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(UInt64(byte - UInt8(ascii: "0")))
            guard !o1, !o2 else { return nil }
            value = a
        }
        return value <= max ? value : nil
    }
}

/// NUL-separated string fields of payloads.
public enum XenStoreStrings {
    /// Splits a payload made only of NUL-terminated strings; throws if the last one lacks
    /// its NUL.
    public static func split(_ payload: ArraySlice<UInt8>, type: XSDSockmsgType) throws(XenStoreError) -> [ArraySlice<UInt8>] {
        guard payload.isEmpty || payload.last == 0 else {
            throw .malformedPayload(type: type, reason: "last string of \(payload.count) bytes lacks its NUL")
        }
        var fields: [ArraySlice<UInt8>] = []
        var start = payload.startIndex
        for i in payload.indices where payload[i] == 0 {
            fields.append(payload[start ..< i])
            start = i + 1
        }
        return fields
    }

    /// Joins strings, each followed by a NUL.
    public static func join(_ strings: [String]) -> [UInt8] {
        var out: [UInt8] = []
        for s in strings { out += Array(s.utf8) + [0] }
        return out
    }
}
