/// One guest network interface as xl's VIFSPEC describes it (`man 5 xl-network-configuration`):
/// comma-separated `key=value` pairs and the flags `trusted`/`untrusted`, whitespace before
/// each ignored; the empty string is a valid VIFSPEC (every default). Pure: no I/O.
///
/// Accepted: `mac=`, `bridge=`, `ip=`, `gatewaydev=` (and its deprecated alias `netdev=`),
/// `vifname=`, `backend=`, `devid=`, `mtu=`, `type=vif`, `model=` (an emulated card's model,
/// meaningless to a PV interface: recorded, written nowhere, as libxl does for PV guests),
/// `script=` (the hotplug script; a name without '/' is looked up in the toolstack's script
/// directory when the device is attached) and `rate=RATE/s[@INTERVAL]` (``VifRate``).
/// Refused, each with an error naming the parameter: `type=ioemu` (local domains have no
/// device model), `accel=` and the COLO parameters. Unlike xl, which lets a later value
/// replace an earlier one, a parameter given twice is refused.
public struct VifSpec: Sendable, Equatable {
    /// The guest's MAC address; nil lets the toolstack pick one in Xen's OUI 00:16:3e.
    public var mac: [UInt8]?
    /// The bridge the backend should join (backend `bridge`); xl's default `xenbr0`.
    public var bridge: String
    /// Backend `ip`: addresses the guest may use, for the hotplug script or netback.
    public var ip: String?
    /// Backend `gatewaydev`.
    public var gatewayDevice: String?
    /// Backend `vifname`: the backend's interface name.
    public var vifName: String?
    /// `backend=`: the backend domain's name; nil for dom0.
    public var backendDomain: String?
    /// `devid=`: the device id; nil means its index in the domain's VIFSPEC list.
    public var devid: UInt32?
    /// `mtu=` (`io/netif.h`: MTU), written to frontend and backend when given.
    public var mtu: UInt32?
    /// `trusted`/`untrusted` (frontend `trusted`).
    public var trusted: Bool
    /// `model=`, kept for configuration files written for HVM guests.
    public var model: String?
    /// `script=`: the hotplug script as written, a path or a name in the script directory;
    /// nil for the toolstack's default (`vif-bridge`).
    public var script: String?
    /// `rate=`: the transmit limit (backend `rate`); nil for unlimited.
    public var rate: VifRate?

    /// Parses one VIFSPEC; the error names the offending parameter, its position and what
    /// was expected.
    public init(parsing spec: String) throws(DeviceSpecError) {
        mac = nil
        bridge = "xenbr0"
        trusted = true
        var seen: Set<String> = []
        let chars = Array(spec)
        var i = 0, index = 0
        while i < chars.count {
            while i < chars.count, chars[i] == " " || chars[i] == "\t" || chars[i] == "\n" { i += 1 }
            if i == chars.count { break }
            let start = i
            while i < chars.count, chars[i] != "," { i += 1 }
            index += 1
            let t = DeviceSpecToken(syntax: "VIFSPEC", text: String(chars[start..<i]), index: index, offset: start)
            if i < chars.count { i += 1 }
            try apply(t, seen: &seen)
        }
    }

    private static let coloPrefix = "colo_"

    private mutating func apply(_ t: DeviceSpecToken, seen: inout Set<String>) throws(DeviceSpecError) {
        guard let eq = t.text.firstIndex(of: "=") else {
            switch t.text {
            case "trusted", "untrusted":
                guard seen.insert("trusted").inserted else { throw .repeated(t, parameter: "trusted/untrusted") }
                trusted = t.text == "trusted"
                return
            default:
                throw .malformed(t, reason: "expected key=value, trusted or untrusted")
            }
        }
        var key = String(t.text[..<eq])
        let value = String(t.text[t.text.index(after: eq)...])
        if key == "netdev" { key = "gatewaydev" }
        let known: Set<String> = ["mac", "bridge", "ip", "gatewaydev", "vifname", "backend", "devid", "mtu", "type", "model",
                                  "script", "rate", "accel", "forwarddev"]
        guard known.contains(key) || key.hasPrefix(Self.coloPrefix) else { throw .unknownKey(t, key: key) }
        guard seen.insert(key).inserted else { throw .repeated(t, parameter: key) }
        switch key {
        case "mac": mac = try Self.parseMAC(value, t)
        case "bridge": bridge = value
        case "ip": ip = value
        case "gatewaydev": gatewayDevice = value
        case "vifname": vifName = value
        case "backend": backendDomain = value.isEmpty ? nil : value
        case "model": model = value
        case "devid":
            guard let n = Self.decimal(value), n <= UInt32(Int32.max) else {
                throw .badValue(t, parameter: "devid", expected: "a decimal number up to 2147483647")
            }
            devid = n
        case "mtu":
            // 68 is the least MTU IPv4 allows; 65535 the most an IP packet can use.
            guard let n = Self.decimal(value), (68...65535).contains(n) else {
                throw .badValue(t, parameter: "mtu", expected: "a decimal number from 68 to 65535")
            }
            mtu = n
        case "type":
            switch value {
            case "vif": break
            case "ioemu": throw .unsupported(t, parameter: "type=ioemu", reason: "an emulated card needs a device model; local domains have paravirtual interfaces only")
            default: throw .badValue(t, parameter: "type", expected: "vif or ioemu")
            }
        case "script":
            // The script runs with the toolstack's privileges: a name, or a path to it, nothing else.
            guard !value.isEmpty, !value.utf8.contains(0), !value.hasSuffix("/") else {
                throw .badValue(t, parameter: "script", expected: "a script name (vif-bridge) or a path to one")
            }
            script = value
        case "rate":
            rate = try VifRate(parsing: value, t)
        case "accel":
            throw .unsupported(t, parameter: "accel=", reason: "xl itself ignores it")
        default:
            throw .unsupported(t, parameter: key + "=", reason: "COLO network replication is not part of the local toolstack")
        }
    }

    /// Six octets of one or two hex digits separated by ':'.
    static func parseMAC(_ value: String, _ t: DeviceSpecToken) throws(DeviceSpecError) -> [UInt8] {
        let parts = value.split(separator: ":", omittingEmptySubsequences: false)
        var out: [UInt8] = []
        for part in parts {
            guard (1...2).contains(part.count), let octet = UInt8(part, radix: 16), part.allSatisfy(\.isHexDigit) else { break }
            out.append(octet)
        }
        guard parts.count == 6, out.count == 6 else {
            throw .badValue(t, parameter: "mac", expected: "six hex octets separated by ':' (00:16:3e:12:34:56)")
        }
        return out
    }

    static func decimal(_ s: String) -> UInt32? {
        guard !s.isEmpty, s.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), s.utf8.count <= 10 else { return nil }
        return UInt32(s)
    }

    /// The MAC as libxl writes it: lower-case hex, colon-separated.
    public static func format(mac: [UInt8]) -> String {
        mac.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":")
    }

    /// A MAC in Xen's OUI 00:16:3e with the fourth octet's top bit clear, as libxl picks one.
    public static func randomMAC<G: RandomNumberGenerator>(using generator: inout G) -> [UInt8] {
        [0x00, 0x16, 0x3e, UInt8.random(in: 0...0x7f, using: &generator),
         UInt8.random(in: 0...0xff, using: &generator), UInt8.random(in: 0...0xff, using: &generator)]
    }
}
