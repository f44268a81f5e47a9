/// A 48-bit Ethernet (MAC) address, octets in wire order.
public struct EthernetAddress: Sendable, Hashable, CustomStringConvertible {
    /// The six octets, first in the most significant of the low 48 bits.
    public let rawValue: UInt64

    /// The address with these octets, in wire order.
    public init(_ o0: UInt8, _ o1: UInt8, _ o2: UInt8, _ o3: UInt8, _ o4: UInt8, _ o5: UInt8) {
        rawValue = [o0, o1, o2, o3, o4, o5].reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// The address in `octets`, or nil unless there are exactly six.
    public init?(octets: some Collection<UInt8>) {
        guard octets.count == 6 else { return nil }
        rawValue = octets.reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// The six octets in wire order.
    public var octets: [UInt8] { (0..<6).map { UInt8(truncatingIfNeeded: rawValue >> UInt64(8 * (5 - $0))) } }

    /// fe:ff:ff:ff:ff:ff, the address Linux's netback gives every vif: locally
    /// administered and never a guest's, so the host side is not used as a source.
    public static let netbackVif = EthernetAddress(0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF)

    public var description: String {
        octets.map { $0 < 16 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined(separator: ":")
    }
}
