import CRingReference
import Foundation
import Glibc
import Netif
import Tap
import XenPlatform
import XenTesting

/// A packet taken off an rx ring with the extra-info slots that followed it.
struct RxPacket {
    var response: NetifRxResponse
    var bytes: [UInt8]
    var extras: [NetifExtraInfo]
}

extension RawNetfront {
    /// Sends `requests` on the control ring in one push and waits (up to 20 s) for as many
    /// responses, in ring order.
    func ctrl(_ requests: [NetifCtrlRequest]) async throws -> [NetifCtrlResponse] {
        guard let control else { throw NetTestError("no control ring") }
        return try await offThePool {
            for request in requests { try control.produceRequest { request.encode(into: $0, at: 0) } }
            _ = try control.pushRequestsAndNotify()
            var out: [NetifCtrlResponse] = []
            let deadline = ContinuousClock.now + .seconds(20)
            while out.count < requests.count {
                var failure: NetifError?
                _ = try control.consumeResponses { view in
                    do throws(NetifError) { out.append(try NetifCtrlResponse.decode(from: view, at: 0)) } catch { failure = error }
                }
                if let failure { throw failure }
                if out.count < requests.count, try !control.finalCheckForResponses() {
                    guard ContinuousClock.now < deadline else {
                        throw NetTestError("\(out.count) of \(requests.count) control responses in 20 s")
                    }
                    RawNetfront.waitForEvent(control.eventChannel, milliseconds: 100)
                }
            }
            return out
        }
    }

    func ctrl(_ request: NetifCtrlRequest) async throws -> NetifCtrlResponse {
        try await ctrl([request])[0]
    }

    /// Writes `bytes` at the start of control page `index` and returns its grant.
    func controlPage(_ index: Int, _ bytes: [UInt8]) throws -> UInt32 {
        guard let controlPages else { throw NetTestError("no control pages") }
        let base = controlPages.view.baseAddress + index * 4096
        bytes.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        return controlPages.refs[index]
    }

    /// Sets Toeplitz hashing of `types` with `key`, a mapping table of `mapping` (none if
    /// empty), and expects every request to succeed.
    func enableHashing(types: NetifHashTypes, key: [UInt8], mapping: [UInt32] = []) async throws {
        let keyRef = try controlPage(0, key)
        let table = mapping.flatMap { v in (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
        let tableRef = try controlPage(1, table)
        var requests = [
            NetifCtrlRequest(id: 1, .setHashAlgorithm, data: (UInt32(NetifHashAlgorithm.toeplitz.rawValue), 0, 0)),
            NetifCtrlRequest(id: 2, .setHashKey, data: (keyRef, UInt32(key.count), 0)),
            NetifCtrlRequest(id: 3, .setHashMappingSize, data: (UInt32(mapping.count), 0, 0)),
        ]
        if !mapping.isEmpty { requests.append(NetifCtrlRequest(id: 4, .setHashMapping, data: (tableRef, UInt32(mapping.count), 0))) }
        requests.append(NetifCtrlRequest(id: 5, .setHashFlags, data: (types.rawValue, 0, 0)))
        let responses = try await ctrl(requests)
        guard responses.allSatisfy({ $0.status == .success }) else { throw NetTestError("hash setup refused: \(responses)") }
    }

    /// Takes every packet on queue `queue`'s rx ring with its extras, and posts each slot's
    /// buffer again (slot k of the ring holds request id k % 8, as posted in order).
    func takeRx(queue: Int) throws -> [RxPacket] {
        let ring = queue == 0 ? rx : extraPairs[queue - 1].rx
        let data = queue == 0 ? self.data : extraPairs[queue - 1].data
        let buffers = Self.rxPages.count
        var packets: [RxPacket] = []
        var extraFollows = false
        var consumed = 0
        _ = try ring.consumeResponses { view in
            consumed += 1
            if extraFollows {
                guard let extra = try? NetifExtraInfo.decode(from: view, at: 0), !packets.isEmpty else {
                    extraFollows = false
                    return
                }
                packets[packets.count - 1].extras.append(extra)
                extraFollows = extra.flags.contains(.more)
                return
            }
            guard let response = try? NetifRxResponse.decode(from: view, at: 0) else { return }
            extraFollows = response.flags.contains(.extraInfo)
            let page = Self.rxPages.lowerBound + Int(response.id) % buffers
            let offset = Int(min(response.offset, 4095))
            let size = min(max(0, response.size ?? 0), 4096 - offset)
            let bytes = Array(UnsafeRawBufferPointer(start: data.view.baseAddress + page * 4096 + offset, count: size))
            packets.append(RxPacket(response: response, bytes: bytes, extras: []))
        }
        for _ in 0..<consumed {
            let id = rxTaken[queue] % buffers
            rxTaken[queue] += 1
            try ring.produceRequest {
                NetifRxRequest(id: UInt16(id), gref: data.refs[Self.rxPages.lowerBound + id]).encode(into: $0, at: 0)
            }
        }
        if consumed > 0 { _ = try ring.pushRequestsAndNotify() }
        return packets
    }

    /// Waits (up to `seconds`) for a packet that `matches` on any queue's rx ring; others
    /// taken meanwhile are dropped. Returns the queue and the packet.
    func awaitRx(seconds: Int = 20, matching: @escaping @Sendable ([UInt8]) -> Bool) async throws -> (queue: Int, packet: RxPacket) {
        try await offThePool { [self] in
            let deadline = ContinuousClock.now + .seconds(seconds)
            while ContinuousClock.now < deadline {
                for queue in 0..<(1 + extraPairs.count) {
                    if let packet = try takeRx(queue: queue).first(where: { matching($0.bytes) }) { return (queue, packet) }
                }
                usleep(2000)
            }
            throw NetTestError("no matching rx packet on any queue in \(seconds) s")
        }
    }
}

/// Frames the control-ring tests send and look for.
enum CtrlFrames {
    /// A TCP SYN (20-byte header, checksummed) from `source`:`sourcePort` to
    /// `destination`:`destinationPort`, in an Ethernet frame from `sourceMAC` to netback's vif.
    static func tcpSyn(from source: [UInt8], to destination: [UInt8], sourcePort: UInt16, destinationPort: UInt16,
                       sourceMAC: [UInt8]) -> [UInt8] {
        var tcp: [UInt8] = [UInt8(sourcePort >> 8), UInt8(sourcePort & 0xFF), UInt8(destinationPort >> 8),
                            UInt8(destinationPort & 0xFF), 0x01, 0x02, 0x03, 0x04, 0, 0, 0, 0, 0x50, 0x02, 0xFF, 0xFF,
                            0, 0, 0, 0]
        let pseudo = source + destination + [0, 6, 0, UInt8(tcp.count)]
        let checksum = InternetChecksum.checksum(of: pseudo + tcp)
        tcp[16] = UInt8(checksum >> 8)
        tcp[17] = UInt8(checksum & 0xFF)
        return EthernetAddress.netbackVif.octets + sourceMAC + TestFrames.etherTypeIPv4
            + TestFrames.ipv4(from: source, to: destination, protocol: 6, payloadLength: tcp.count) + tcp
    }

    /// Whether `bytes` is dom0's TCP reset to the guest's port `port`.
    static func isReset(_ bytes: [UInt8], toPort port: UInt16) -> Bool {
        bytes.count >= 54 && bytes[12] == 0x08 && bytes[13] == 0x00 && bytes[23] == 6 && TestFrames.u16(bytes, 36) == port
            && bytes[47] & 0x04 != 0
    }

    /// The Toeplitz hash io/netif.h's reference function gives the frame's IPv4 (+TCP) input.
    static func referenceHash(_ bytes: [UInt8], key: [UInt8], withPorts: Bool) -> UInt32 {
        let input = Array(bytes[26..<34]) + (withPorts ? Array(bytes[34..<38]) : [])
        return reference(key: key, input: input)
    }

    /// io/netif.h's xen_netif_toeplitz_hash, compiled from the header.
    static func reference(key: [UInt8], input: [UInt8]) -> UInt32 {
        key.withUnsafeBufferPointer { k in
            input.withUnsafeBufferPointer { b in cref_netif_toeplitz(k.baseAddress, UInt32(k.count), b.baseAddress, UInt32(b.count)) }
        }
    }
}
