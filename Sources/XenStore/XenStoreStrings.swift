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
