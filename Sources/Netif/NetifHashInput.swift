/// Where a frame's hash input is (`io/netif.h`, "Hash types"): the source and
/// destination addresses, then for the TCP types the source and destination ports, each
/// a contiguous range of the frame. Found by ``find(in:types:)``.
public struct NetifHashInput: Sendable, Hashable {
    /// The hash type the input is for.
    public var type: NetifHashType
    /// Source then destination address: 8 bytes (IPv4) or 32 (IPv6).
    public var addresses: Range<Int>
    /// Source then destination port (4 bytes), for the TCP types.
    public var ports: Range<Int>?

    /// An input with every range given; ``find(in:types:)`` makes them from a frame.
    public init(type: NetifHashType, addresses: Range<Int>, ports: Range<Int>? = nil) {
        self.type = type
        self.addresses = addresses
        self.ports = ports
    }

    @usableFromInline static let etherTypeIPv4: UInt16 = 0x0800
    @usableFromInline static let etherTypeIPv6: UInt16 = 0x86DD
    @usableFromInline static let etherTypeVLAN: UInt16 = 0x8100
    @usableFromInline static let etherTypeQinQ: UInt16 = 0x88A8
    @usableFromInline static let protocolTCP: UInt8 = 6

    /// The input of the most specific type in `types` that fits the Ethernet `frame`
    /// (after at most one VLAN tag), as io/netif.h asks ("the 'maximal' type of hash"):
    /// IPv4+TCP for a TCP segment that is not a fragment, else IPv4 for any IPv4 packet;
    /// IPv6+TCP when TCP follows the fixed IPv6 header, else IPv6. Nil when none fits (ARP,
    /// a truncated header, a type not enabled). Every read is bounds-checked.
    @inlinable
    public static func find(in frame: UnsafeRawBufferPointer, types: NetifHashTypes) -> NetifHashInput? {
        guard !types.isEmpty, frame.count >= 14 else { return nil }
        func u16(_ at: Int) -> UInt16 { UInt16(frame[at]) << 8 | UInt16(frame[at + 1]) }
        var etherType = u16(12)
        var network = 14
        if etherType == etherTypeVLAN || etherType == etherTypeQinQ {
            guard frame.count >= 18 else { return nil }
            etherType = u16(16)
            network = 18
        }
        switch etherType {
        case etherTypeIPv4:
            guard frame.count >= network + 20, frame[network] >> 4 == 4 else { return nil }
            let headerLength = Int(frame[network] & 0x0F) * 4
            guard headerLength >= 20 else { return nil }
            let addresses = (network + 12)..<(network + 20)
            // A later fragment has no TCP header; a first one has it, but its peers do not
            // and must hash alike, as Linux's flow dissector takes them.
            let fragment = u16(network + 6) & 0x3FFF != 0
            let transport = network + headerLength
            if types.contains(.ipv4TCP), frame[network + 9] == protocolTCP, !fragment, frame.count >= transport + 4 {
                return NetifHashInput(type: .ipv4TCP, addresses: addresses, ports: transport..<(transport + 4))
            }
            return types.contains(.ipv4) ? NetifHashInput(type: .ipv4, addresses: addresses) : nil
        case etherTypeIPv6:
            guard frame.count >= network + 40, frame[network] >> 4 == 6 else { return nil }
            let addresses = (network + 8)..<(network + 40)
            let transport = network + 40
            if types.contains(.ipv6TCP), frame[network + 6] == protocolTCP, frame.count >= transport + 4 {
                return NetifHashInput(type: .ipv6TCP, addresses: addresses, ports: transport..<(transport + 4))
            }
            return types.contains(.ipv6) ? NetifHashInput(type: .ipv6, addresses: addresses) : nil
        default:
            return nil
        }
    }

    /// The Toeplitz hash of this input in `frame`, fed to `hash` (a fresh hash with the
    /// key, kept by the caller so the key is not unpacked per packet).
    @inlinable
    public func toeplitz(of frame: UnsafeRawBufferPointer, with hash: NetifToeplitz) -> UInt32 {
        var hash = hash
        hash.update(UnsafeRawBufferPointer(rebasing: frame[addresses]))
        if let ports { hash.update(UnsafeRawBufferPointer(rebasing: frame[ports])) }
        return hash.value
    }

    /// The Toeplitz hash of this input in `frame`, by `table` (the key unpacked once).
    @inlinable
    public func toeplitz(of frame: UnsafeRawBufferPointer, with table: NetifToeplitzTable) -> UInt32 {
        var value: UInt32 = 0
        table.update(&value, UnsafeRawBufferPointer(rebasing: frame[addresses]), at: 0)
        if let ports { table.update(&value, UnsafeRawBufferPointer(rebasing: frame[ports]), at: addresses.count) }
        return value
    }

    /// The bytes hashed, in order (for tests and logs).
    public func bytes(of frame: [UInt8]) -> [UInt8] {
        Array(frame[addresses]) + (ports.map { Array(frame[$0]) } ?? [])
    }
}
