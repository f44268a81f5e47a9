/// Strict parsing of xenstore values: booleans are "0" or "1", numbers plain decimal.
enum NetifXenstoreValue {
    static func flag(_ entries: [String: String], _ key: String, default value: Bool) throws(NetifError) -> Bool {
        switch entries[key] {
        case nil: return value
        case "0": return false
        case "1": return true
        case let other?: throw .featureValue(key: key, value: other, expected: "0 or 1")
        }
    }

    static func uint32(_ entries: [String: String], _ key: String,
                       range: ClosedRange<UInt64>) throws(NetifError) -> UInt32? {
        guard let text = entries[key] else { return nil }
        guard !text.isEmpty, text.utf8.count <= 20, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
              let value = UInt64(text) else {
            throw .featureValue(key: key, value: text, expected: "a decimal number")
        }
        guard range.contains(value) else { throw .featureRange(key: key, value: value, limit: range) }
        return UInt32(value)
    }
}
