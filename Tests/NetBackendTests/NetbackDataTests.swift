import Glibc
import NetBackend
import Netif
import Tap
import Testing
import XenPlatform
import XenTesting

@Suite("netback data path", .serialized)
struct NetbackDataTests {
    static let guestMAC = "00:16:3e:00:00:02"
    static let guestMACBytes: [UInt8] = [0x00, 0x16, 0x3E, 0x00, 0x00, 0x02]
    static let dom0Address: [UInt8] = [198, 18, 5, 1]
    static let guestAddress: [UInt8] = [198, 18, 5, 2]

    @Test("a guest's echo request reaches dom0's kernel through the TAP device and the reply comes back on rx")
    func echoThroughTheVif() async throws {
        let world = try NetWorld()
        do {
            let (domain, guest) = try await world.guest("g", mac: Self.guestMAC)
            let frontend = try RawNetfront(guest, domain: domain)
            try await world.plug(domain: domain, address: "198.18.5.1", guestAddress: "198.18.5.2", guestMAC: Self.guestMAC)
            var features = NetifFrontendFeatures()
            features.requestRxCopy = true
            features.rxNotify = true
            try await frontend.connect(features: features)
            // netback gives its TAP devices Linux netback's address.
            let tapAddress = EthernetAddress.netbackVif

            let payload = (0..<56).map { UInt8($0) }
            let icmp = TestFrames.echoRequest(identifier: 0x4242, sequence: 1, payload: payload)
            let frame = tapAddress.octets + Self.guestMACBytes + TestFrames.etherTypeIPv4
                + TestFrames.ipv4(from: Self.guestAddress, to: Self.dom0Address, protocol: 1, payloadLength: icmp.count) + icmp
            try frontend.send(frame, id: 7)
            let responses = try frontend.txResponses(1)
            #expect(responses == [NetifTxResponse(id: 7, status: .okay)])

            // The kernel answers; skip anything else it sends (IPv6 router solicitations).
            var reply: [UInt8] = []
            for _ in 0..<16 {
                let (response, bytes) = try frontend.receive()
                #expect(response.error == nil)
                if bytes.count >= 34, bytes[12] == 0x08, bytes[13] == 0x00, bytes[23] == 1, bytes[34] == 0 {
                    reply = bytes
                    break
                }
            }
            #expect(reply.count == frame.count, "an echo reply of the request's size")
            #expect(Array(reply[0..<6]) == Self.guestMACBytes)
            #expect(Array(reply[26..<30]) == Self.dom0Address && Array(reply[30..<34]) == Self.guestAddress)
            #expect(Array(reply[42...]) == payload)
            #expect(InternetChecksum.checksum(of: Array(reply[34...])) == 0, "the ICMP checksum verifies")
        } catch {
            await world.stop()
            throw error
        }
        await world.stop()
    }
}
