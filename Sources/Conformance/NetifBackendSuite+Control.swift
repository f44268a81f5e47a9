import Netif
import SharedMemory
import XenBus
import XenPlatform

extension NetifBackendSuite {
    /// A connected vif with a control ring (reused while it lasts).
    static func withControl(_ peer: NetfrontPeer) async throws {
        if peer.isConnected, peer.connection?.control != nil, await peer.backendState() == .connected { return }
        try await peer.startOver(force: true)
        var handshake = NetfrontPeer.Handshake()
        handshake.controlRing = true
        try await peer.connect(handshake)
    }

    static func controlCheck(_ id: String, _ body: @escaping @Sendable (NetfrontPeer) async throws -> ClauseVerdict) -> Check {
        Check(id) { peer in
            try await withControl(peer)
            return try await body(peer)
        }
    }

    static func type(_ kind: NetifCtrlType) -> UInt16 { kind.rawValue }

    /// Whether `response` answers `request`: its id and type echoed.
    static func answers(_ response: NetifCtrlResponse, _ request: NetifCtrlRequest) -> Bool {
        response.id == request.id && response.type == request.type
    }

    /// A TCP/IPv4 frame from the host to the guest (ports 4000 to 9), marked by `payload`.
    static func tcpToGuest(_ peer: NetfrontPeer, payload: [UInt8]) -> [UInt8] {
        let tcp = u16(4000) + u16(9) + [0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18] + u16(0xFFFF) + [0, 0, 0, 0] + payload
        var ip: [UInt8] = [0x45, 0] + u16(20 + tcp.count) + [0x12, 0x35, 0x40, 0, 64, 6, 0, 0] + hostIP + guestIP
        let sum = InternetChecksum.checksum(of: ip)
        ip[10] = UInt8(sum >> 8)
        ip[11] = UInt8(sum & 0xFF)
        return peer.mac + [0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF] + [0x08, 0x00] + ip + tcp
    }

    static let control: [Check] = [
        controlCheck("NETIF-BE-070") { peer in
            // io/netif.h: the flags are answered once an algorithm is chosen.
            let (_, chosen) = try peer.control(type(.setHashAlgorithm), data: (UInt32(NetifHashAlgorithm.toeplitz.rawValue), 0, 0))
            let (request, response) = try peer.control(type(.getHashFlags))
            return .expect(answers(response, request) && response.status == .success && response.data & ~0xF == 0,
                           "SET_HASH_ALGORITHM toeplitz: \(chosen.status); GET_HASH_FLAGS id \(request.id): answered id \(response.id) type \(response.type) \(response.status) data 0x\(String(response.data, radix: 16))")
        },
        controlCheck("NETIF-BE-078") { peer in
            let key = pattern(NetifToeplitz.maxKeySize, seed: 0x7E5)
            key.withUnsafeBytes { peer.controlData.view.copyBytes(from: $0, to: 0) }
            let (_, algorithm) = try peer.control(type(.setHashAlgorithm), data: (UInt32(NetifHashAlgorithm.toeplitz.rawValue), 0, 0))
            let (_, flags) = try peer.control(type(.setHashFlags), data: ((NetifHashTypes.ipv4.rawValue | NetifHashTypes.ipv4TCP.rawValue), 0, 0))
            let (_, setKey) = try peer.control(type(.setHashKey), data: (peer.controlData.refs[0], UInt32(key.count), 0))
            let set = "SET_HASH_ALGORITHM \(algorithm.status), SET_HASH_FLAGS \(flags.status), SET_HASH_KEY \(setKey.status)"
            guard [algorithm, flags, setKey].allSatisfy({ $0.status == .success }) else { return .fail(set) }
            let payload = pattern(100, seed: 0x7E6)
            let frame = tcpToGuest(peer, payload: payload)
            try peer.host.send(frame)
            let packets = try peer.rxPackets { $0.contains { $0.bytes == frame } }
            guard let packet = packets.first(where: { $0.bytes == frame }) else { return .fail("\(set); the TCP frame did not reach the guest") }
            let expected = NetifToeplitz.hash(key: key, input: hostIP + guestIP + u16(4000) + u16(9))
            let hashes = packet.extras.compactMap { extra -> String? in
                guard case let .hash(type, algorithm, value) = extra.kind else { return nil }
                return "\(type) \(algorithm) 0x\(String(value, radix: 16))"
            }
            let wanted = "\(NetifHashType.ipv4TCP) \(NetifHashAlgorithm.toeplitz) 0x\(String(expected, radix: 16))"
            return .expect(packet.responses.first?.flags.contains(.extraInfo) == true && hashes == [wanted],
                           "\(set); the TCP frame came with extras \(hashes) (Toeplitz of its addresses and ports: \(wanted))")
        },
        controlCheck("NETIF-BE-071") { peer in
            let (request, response) = try peer.control(0x7777)
            return .expect(answers(response, request) && response.status == .notSupported,
                           "type 0x7777: answered id \(response.id) type 0x\(String(response.type, radix: 16)) \(response.status)")
        },
        controlCheck("NETIF-BE-072") { peer in
            let (_, toeplitz) = try peer.control(type(.setHashAlgorithm), data: (UInt32(NetifHashAlgorithm.toeplitz.rawValue), 0, 0))
            let (_, unknown) = try peer.control(type(.setHashAlgorithm), data: (9, 0, 0))
            return .expect(toeplitz.status == .success && unknown.status == .invalidParameter,
                           "SET_HASH_ALGORITHM toeplitz: \(toeplitz.status); algorithm 9: \(unknown.status)")
        },
        controlCheck("NETIF-BE-073") { peer in
            let (request, response) = try peer.control(type(.getHashMappingSize))
            return .expect(answers(response, request) && response.status == .success && response.data >= 1,
                           "GET_HASH_MAPPING_SIZE: \(response.status) data \(response.data)")
        },
        controlCheck("NETIF-BE-074") { peer in
            peer.controlData.view.fill(0x5A, at: 0, length: pageSize)
            let (_, response) = try peer.control(type(.setHashKey), data: (peer.controlData.refs[0], UInt32(pageSize), 0))
            let seen = "SET_HASH_KEY of \(pageSize) bytes: \(response.status)"
            guard [.invalidParameter, .bufferOverflow].contains(response.status) else { return .fail(seen) }
            return await stillServing(peer, seen)
        },
        controlCheck("NETIF-BE-075") { peer in
            _ = try peer.control(type(.setHashAlgorithm), data: (UInt32(NetifHashAlgorithm.toeplitz.rawValue), 0, 0))
            let (_, size) = try peer.control(type(.setHashMappingSize), data: (1, 0, 0))
            peer.controlData.view.store(UInt32(1), at: 0)
            let (_, response) = try peer.control(type(.setHashMapping), data: (peer.controlData.refs[0], 1, 0))
            return .expect(response.status == .invalidParameter,
                           "SET_HASH_MAPPING_SIZE 1: \(size.status); a mapping naming queue 1 of 1: \(response.status)")
        },
        Check("NETIF-BE-076") { peer in
            try await withControl(peer)
            let rings = try peer.rings()
            guard let control = rings.control else { return .fail("no control ring") }
            let shared = control.ring.shared
            shared.storeRequestProducer(shared.loadResponseProducer() &+ shared.size &+ 1)
            try rings.notify(control.port)
            return try await refused(peer, "ctrl req_prod a ring and one past rsp_prod")
        },
        controlCheck("NETIF-BE-077") { peer in
            var generator = SystemRandomNumberGenerator()
            var statuses: [NetifCtrlStatus: Int] = [:]
            for _ in 0 ..< 200 {
                let kind = UInt16.random(in: 0 ... 12, using: &generator)
                let data = (UInt32.random(in: 0 ... .max, using: &generator), UInt32.random(in: 0 ... 64, using: &generator),
                            UInt32.random(in: 0 ... 64, using: &generator))
                let (request, response) = try peer.control(kind, data: data)
                guard answers(response, request) else {
                    return .fail("type \(kind) id \(request.id) answered with id \(response.id) type \(response.type)")
                }
                statuses[response.status, default: 0] += 1
            }
            return await stillServing(peer, "200 random requests answered once each, id and type echoed: \(statuses.map { "\($0.key) \($0.value)" }.sorted())")
        },
    ]
}
