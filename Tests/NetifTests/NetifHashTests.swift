import CRingReference
import SharedMemory
import Testing
@testable import Netif

/// The Toeplitz hash, the hash input of a frame, and the control-ring messages.
@Suite struct NetifHashTests {
    /// The 40-byte key of Microsoft's RSS verification suite.
    static let rssKey: [UInt8] = [
        0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
        0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
        0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
    ]

    static func reference(key: [UInt8], input: [UInt8]) -> UInt32 {
        key.withUnsafeBufferPointer { k in
            input.withUnsafeBufferPointer { b in
                cref_netif_toeplitz(k.baseAddress, UInt32(k.count), b.baseAddress, UInt32(b.count))
            }
        }
    }

    @Test("Toeplitz: the RSS verification suite's IPv4 and IPv4+TCP values, from both ours and io/netif.h's function")
    func rssVerificationSuite() {
        // 66.9.149.187:2794 -> 161.142.100.80:1766
        let addresses: [UInt8] = [66, 9, 149, 187, 161, 142, 100, 80]
        let ports: [UInt8] = [0x0a, 0xea, 0x06, 0xe6]
        #expect(NetifToeplitz.hash(key: Self.rssKey, input: addresses) == 0x323e_8fc2)
        #expect(NetifToeplitz.hash(key: Self.rssKey, input: addresses + ports) == 0x51cc_c178)
        #expect(Self.reference(key: Self.rssKey, input: addresses + ports) == 0x51cc_c178)
    }

    @Test("Toeplitz equals io/netif.h's xen_netif_toeplitz_hash on 20000 random keys (0...40 bytes) and inputs (0...64 bytes)")
    func matchesTheHeadersFunction() {
        var generator = SystemRandomNumberGenerator()
        for round in 0..<20000 {
            let key = (0..<Int.random(in: 0...40, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let input = (0..<Int.random(in: 0...64, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let ours = NetifToeplitz.hash(key: key, input: input)
            let theirs = Self.reference(key: key, input: input)
            #expect(ours == theirs, "round \(round): key \(key) input \(input)")
            if ours != theirs { return }
            // Fed in two pieces: the same value.
            let cut = Int.random(in: 0...input.count, using: &generator)
            var split = NetifToeplitz(key: key)
            split.update(Array(input[..<cut]))
            split.update(Array(input[cut...]))
            #expect(split.value == ours)
        }
    }

    @Test("the table-driven Toeplitz equals io/netif.h's function on 3000 random keys and inputs of 0...36 bytes, in pieces too")
    func tableMatchesTheHeadersFunction() {
        var generator = SystemRandomNumberGenerator()
        for round in 0..<3000 {
            let key = (0..<Int.random(in: 0...40, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let table = NetifToeplitzTable(key: key)
            for _ in 0..<4 {
                let input = (0..<Int.random(in: 0...36, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
                let theirs = Self.reference(key: key, input: input)
                #expect(table.hash(input) == theirs, "round \(round): key \(key) input \(input)")
                let cut = Int.random(in: 0...input.count, using: &generator)
                var value: UInt32 = 0
                Array(input[..<cut]).withUnsafeBytes { table.update(&value, $0, at: 0) }
                Array(input[cut...]).withUnsafeBytes { table.update(&value, $0, at: cut) }
                #expect(value == theirs)
            }
        }
    }

    @Test("an empty key hashes everything to 0")
    func emptyKey() {
        #expect(NetifToeplitz.hash(key: [], input: [1, 2, 3, 4, 5, 6, 7, 8]) == 0)
    }

    // MARK: Hash input

    static func ipv4(protocol value: UInt8, options: Int = 0, fragment: UInt16 = 0, vlan: Bool = false) -> [UInt8] {
        var frame = [UInt8](repeating: 0xEE, count: 12) + (vlan ? [0x81, 0x00, 0x00, 0x05] : []) + [0x08, 0x00]
        var ip = [UInt8](repeating: 0, count: 20 + options)
        ip[0] = 0x40 | UInt8(5 + options / 4)
        ip[6] = UInt8(fragment >> 8)
        ip[7] = UInt8(fragment & 0xFF)
        ip[9] = value
        ip.replaceSubrange(12..<20, with: [66, 9, 149, 187, 161, 142, 100, 80])
        frame += ip + [0x0a, 0xea, 0x06, 0xe6] + [UInt8](repeating: 0, count: 16)
        return frame
    }

    static func ipv6(next: UInt8) -> [UInt8] {
        var ip = [UInt8](repeating: 0, count: 40)
        ip[0] = 0x60
        ip[6] = next
        for i in 8..<40 { ip[i] = UInt8(i) }
        return [UInt8](repeating: 0xEE, count: 12) + [0x86, 0xDD] + ip + [0x12, 0x34, 0x56, 0x78] + [UInt8](repeating: 0, count: 16)
    }

    static func find(_ frame: [UInt8], _ types: NetifHashTypes) -> NetifHashInput? {
        frame.withUnsafeBytes { NetifHashInput.find(in: $0, types: types) }
    }

    @Test("the hash input of IPv4, IPv4+TCP (with options, behind a VLAN tag), fragments, IPv6 and IPv6+TCP")
    func hashInput() throws {
        let all = NetifHashConfiguration.supportedTypes
        let tcp = Self.ipv4(protocol: 6)
        let tcpInput = try #require(Self.find(tcp, all))
        #expect(tcpInput == NetifHashInput(type: .ipv4TCP, addresses: 26..<34, ports: 34..<38))
        #expect(tcpInput.bytes(of: tcp) == [66, 9, 149, 187, 161, 142, 100, 80, 0x0a, 0xea, 0x06, 0xe6])
        let value = tcp.withUnsafeBytes { tcpInput.toeplitz(of: $0, with: NetifToeplitz(key: Self.rssKey)) }
        #expect(value == 0x51cc_c178)
        let tableValue = tcp.withUnsafeBytes { tcpInput.toeplitz(of: $0, with: NetifToeplitzTable(key: Self.rssKey)) }
        #expect(tableValue == 0x51cc_c178)
        let v6 = Self.ipv6(next: 6)
        let v6Input = try #require(Self.find(v6, all))
        let v6Value = v6.withUnsafeBytes { v6Input.toeplitz(of: $0, with: NetifToeplitzTable(key: Self.rssKey)) }
        #expect(v6Value == Self.reference(key: Self.rssKey, input: v6Input.bytes(of: v6)))
        // Only IPv4 enabled: the addresses alone ("the maximal type" enabled).
        #expect(Self.find(tcp, [.ipv4]) == NetifHashInput(type: .ipv4, addresses: 26..<34))
        // Only IPv4+TCP enabled: a UDP packet has no hash.
        #expect(Self.find(Self.ipv4(protocol: 17), [.ipv4TCP]) == nil)
        #expect(Self.find(Self.ipv4(protocol: 17), all)?.type == .ipv4)
        #expect(Self.find(Self.ipv4(protocol: 6, options: 8), all) == NetifHashInput(type: .ipv4TCP, addresses: 26..<34, ports: 42..<46))
        #expect(Self.find(Self.ipv4(protocol: 6, vlan: true), all) == NetifHashInput(type: .ipv4TCP, addresses: 30..<38, ports: 38..<42))
        // Fragments (more-fragments set, or an offset): addresses only.
        #expect(Self.find(Self.ipv4(protocol: 6, fragment: 0x2000), all)?.type == .ipv4)
        #expect(Self.find(Self.ipv4(protocol: 6, fragment: 0x0010), all)?.type == .ipv4)
        #expect(Self.find(Self.ipv6(next: 6), all) == NetifHashInput(type: .ipv6TCP, addresses: 22..<54, ports: 54..<58))
        #expect(Self.find(Self.ipv6(next: 17), all) == NetifHashInput(type: .ipv6, addresses: 22..<54))
        #expect(Self.find(Self.ipv6(next: 6), [.ipv4, .ipv4TCP]) == nil)
    }

    @Test("no hash input for ARP, a wrong IP version, truncated headers, no types")
    func noHashInput() {
        let all = NetifHashConfiguration.supportedTypes
        var arp = Self.ipv4(protocol: 6)
        arp[12] = 0x08; arp[13] = 0x06
        #expect(Self.find(arp, all) == nil)
        var wrongVersion = Self.ipv4(protocol: 6)
        wrongVersion[14] = 0x65
        #expect(Self.find(wrongVersion, all) == nil)
        var shortIHL = Self.ipv4(protocol: 6)
        shortIHL[14] = 0x44
        #expect(Self.find(shortIHL, all) == nil)
        let tcp = Self.ipv4(protocol: 6)
        for length in 0..<34 { #expect(Self.find(Array(tcp[..<length]), all) == nil, "\(length) bytes") }
        // Addresses present, ports cut: the IPv4 type.
        #expect(Self.find(Array(tcp[..<36]), all)?.type == .ipv4)
        #expect(Self.find(Array(Self.ipv6(next: 6)[..<53]), all) == nil)
        #expect(Self.find(tcp, []) == nil)
    }

    // MARK: Messages

    @Test("control request and response: encoded at their io/netif.h offsets, decoded back; an unknown status refused")
    func messages() throws {
        let region = try MemoryRegion.anonymous(pages: 1)
        let view = region.view
        let request = NetifCtrlRequest(id: 0x0102, .setHashMapping, data: (0x0304_0506, 7, 0xFFFF_FFFF))
        request.encode(into: view, at: 16)
        #expect(view.bytes(at: 16, length: 16) == [0x02, 0x01, 6, 0, 0x06, 0x05, 0x04, 0x03, 7, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF])
        #expect(try NetifCtrlRequest.decode(from: view, at: 16) == request)
        // Any type decodes: it is judged when answered.
        NetifCtrlRequest(id: 1, type: 0xBEEF).encode(into: view, at: 0)
        #expect(try NetifCtrlRequest.decode(from: view, at: 0).kind == nil)
        let response = NetifCtrlResponse(id: 9, type: 4, status: .bufferOverflow, data: 128)
        response.encode(into: view, at: 100)
        #expect(view.bytes(at: 100, length: 12) == [9, 0, 4, 0, 3, 0, 0, 0, 128, 0, 0, 0])
        #expect(try NetifCtrlResponse.decode(from: view, at: 100) == response)
        view.store(UInt32(4), at: 104)
        #expect(throws: NetifError.unknownCtrlStatus(4)) { try NetifCtrlResponse.decode(from: view, at: 100) }
        #expect(throws: NetifError.slotOutOfBounds(offset: 4090, length: 16, size: 4096)) {
            try NetifCtrlRequest.decode(from: view, at: 4090)
        }
    }
}
