/// A 48-bit Ethernet address, first octet most significant.
public struct NetifMACAddress: Sendable, Hashable, CustomStringConvertible {
    /// The six octets packed into the low 48 bits.
    public let rawValue: UInt64

    /// The address with the given octets, in wire order.
    @inlinable
    public init(_ o0: UInt8, _ o1: UInt8, _ o2: UInt8, _ o3: UInt8, _ o4: UInt8, _ o5: UInt8) {
        let high = UInt64(o0) << 40 | UInt64(o1) << 32 | UInt64(o2) << 24
        rawValue = high | UInt64(o3) << 16 | UInt64(o4) << 8 | UInt64(o5)
    }

    @inlinable
    init(rawValue: UInt64) { self.rawValue = rawValue & 0xFFFF_FFFF_FFFF }

    /// Octet `index` (0...5) in wire order.
    @inlinable
    public subscript(index: Int) -> UInt8 {
        precondition(index >= 0 && index < 6, "MAC octet index out of range")
        return UInt8(truncatingIfNeeded: rawValue >> UInt64(8 * (5 - index)))
    }

    public var description: String {
        (0..<6).map { i in
            let hex = String(self[i], radix: 16)
            return hex.count == 1 ? "0" + hex : hex
        }.joined(separator: ":")
    }
}
