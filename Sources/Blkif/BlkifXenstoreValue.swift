/// Strict parsing of xenstore values: booleans are "0" or "1", numbers plain decimal.
enum BlkifXenstoreValue {
    /// "1" or "0".
    static func text(_ value: Bool) -> String { value ? "1" : "0" }

    static func flag(_ entries: [String: String], _ key: String, default value: Bool) throws(BlkifError) -> Bool {
        switch entries[key] {
        case nil: return value
        case "0": return false
        case "1": return true
        case let other?: throw .featureValue(key: key, value: other, expected: "0 or 1")
        }
    }

    static func uint32(_ entries: [String: String], _ key: String,
                       range: ClosedRange<UInt64> = 0...UInt64(UInt32.max)) throws(BlkifError) -> UInt32? {
        guard let text = entries[key] else { return nil }
        let value = try uint64(key, text)
        guard range.contains(value) else { throw .featureRange(key: key, value: value, limit: range) }
        return UInt32(value)
    }

    /// Plain decimal digits only: no sign, space, or radix prefix.
    static func uint64(_ key: String, _ text: String) throws(BlkifError) -> UInt64 {
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let value = UInt64(text) else {
            throw .featureValue(key: key, value: text, expected: "a decimal number")
        }
        return value
    }
}
