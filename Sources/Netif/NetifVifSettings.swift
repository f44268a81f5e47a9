/// What the toolstack writes into a vif's frontend node for the guest (xl's `mac=` and
/// `mtu=`; see Protocols/netif-xenstore.tsv): the guest interface's address and MTU.
public struct NetifVifSettings: Sendable, Hashable {
    /// `mac`: the guest interface's Ethernet address.
    public var mac: NetifMACAddress
    /// `mtu`: the MTU the guest may use (absent: 1500).
    public var mtu: UInt32

    /// The node names.
    public enum Key {
        public static let mac = "mac"
        public static let mtu = "mtu"
    }

    /// The MTU when the toolstack wrote none (Ethernet's).
    public static let defaultMTU: UInt32 = 1500

    public init(mac: NetifMACAddress, mtu: UInt32 = defaultMTU) {
        self.mac = mac
        self.mtu = mtu
    }

    /// Parses `mac` (six two-digit hex octets separated by ':', required) and `mtu`
    /// (68...65535, as Linux takes for an Ethernet device).
    public init(xenstore entries: [String: String]) throws(NetifError) {
        guard let text = entries[Key.mac] else { throw .missingKey(Key.mac) }
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        var octets: [UInt8] = []
        for part in parts {
            // Hex digits only: UInt8(_:radix:) would also take a sign.
            guard part.utf8.count == 2, part.utf8.allSatisfy({ $0 < 0x80 && Character(Unicode.Scalar($0)).isHexDigit }),
                  let octet = UInt8(part, radix: 16) else { break }
            octets.append(octet)
        }
        guard parts.count == 6, octets.count == 6 else {
            throw .featureValue(key: Key.mac, value: text, expected: "six hex octets separated by ':'")
        }
        mac = NetifMACAddress(octets[0], octets[1], octets[2], octets[3], octets[4], octets[5])
        mtu = try NetifXenstoreValue.uint32(entries, Key.mtu, range: 68...65535) ?? Self.defaultMTU
    }
}
