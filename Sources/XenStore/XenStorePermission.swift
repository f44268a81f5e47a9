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
