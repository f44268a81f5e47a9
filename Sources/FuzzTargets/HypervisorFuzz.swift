import Foundation
import Glibc
import Logging
import XenLocal
import XenPlatform

/// A fuzz target for the local hypervisor's socket protocol: the bytes are what one client
/// sends, as dom0 or as a guest (the first byte picks), read in pieces of a size the second
/// byte picks, through the hypervisor's own framing, decoder and handlers
/// (``LocalHypervisor/serveForFuzzing(domain:bytes:pieceSize:)``). The hypervisor must not
/// trap, and what it sends back must frame into replies that answer the requests in the
/// order sent (same type, same tag), each with a status the protocol defines.
public enum HypervisorFuzz {
    final class World: @unchecked Sendable {
        // SAFETY (@unchecked): libFuzzer calls the target from one thread.
        let directory: String
        let hypervisor: LocalHypervisor
        init() throws {
            var template = Array("/tmp/xensplit-fuzz-hypervisor-XXXXXX".utf8CString)
            guard let made = mkdtemp(&template) else { throw PlatformError.system("mkdtemp", errno: errno) }
            directory = String(cString: made)
            var configuration = LocalHypervisor.Configuration(stateDirectory: directory)
            configuration.poolPages = 512
            configuration.grantEntries = 512
            var logger = Logger(label: "xensplit.fuzz.hypervisor")
            logger.logLevel = .critical
            hypervisor = try LocalHypervisor(configuration: configuration, logger: logger)
            // Its sockets and domain directories go when the process ends.
            HypervisorFuzz.directory = directory
            atexit { if let directory = HypervisorFuzz.directory { try? FileManager.default.removeItem(atPath: directory) } }
        }
    }

    nonisolated(unsafe) static var world: World?
    nonisolated(unsafe) static var directory: String?
    static let guestName = "fuzz"

    public static func run(_ input: UnsafeRawBufferPointer) {
        if world == nil {
            do { world = try World() } catch { fatalError("hypervisor fuzz world: \(error)") }
        }
        let h = world!.hypervisor
        guard input.count >= 2 else { return }
        if guest == nil { guest = createGuest(h) }
        let domain: DomainID = input[0] % 4 == 0 ? 0 : guest!
        let bytes = Array(input[2...])
        let replies = h.serveForFuzzing(domain: domain, bytes: bytes, pieceSize: Int(input[1]) * 4 + 1)
        check(replies: replies, answering: bytes)
        // Back to dom0 and a guest that holds nothing, so what one input shared or bound
        // does not carry over: domains dom0 made go, and the guest is made afresh if it
        // was destroyed or holds anything.
        var guestClean = false
        for (id, holds) in usage(h) where id != 0 {
            if id == guest, holds == 0 {
                guestClean = true
            } else {
                control(h, .domainDestroy, payload: le16(id))
            }
        }
        if !guestClean { guest = nil }
    }

    /// The guest domain kept between inputs while it holds nothing.
    nonisolated(unsafe) static var guest: DomainID?

    /// The requests in `sent`, in order, up to the first that does not frame.
    static func requests(in sent: [UInt8]) -> [(HypervisorMessage.Kind, UInt32)] {
        var found: [(HypervisorMessage.Kind, UInt32)] = []
        var offset = 0
        while sent.count - offset >= HypervisorMessage.headerSize {
            guard let header = try? HypervisorMessage.decodeHeader(sent[offset...].prefix(HypervisorMessage.headerSize)),
                  sent.count - offset - HypervisorMessage.headerSize >= header.length else { break }
            found.append((header.kind, header.tag))
            offset += HypervisorMessage.headerSize + header.length
        }
        return found
    }

    static func check(replies: [UInt8], answering sent: [UInt8]) {
        let asked = requests(in: sent)
        var offset = 0, index = 0
        while offset < replies.count {
            guard let header = try? HypervisorMessage.decodeHeader(replies[offset...].prefix(HypervisorMessage.headerSize)) else {
                fatalError("reply \(index) does not frame")
            }
            precondition(replies.count - offset - HypervisorMessage.headerSize >= header.length, "reply \(index) cut short")
            precondition(index < asked.count, "reply \(index) to \(asked.count) requests")
            precondition(header.kind == asked[index].0 && header.tag == asked[index].1,
                         "reply \(index) is \(header.kind) tag \(header.tag) for \(asked[index].0) tag \(asked[index].1)")
            precondition(header.status == 0 || (1...4095).contains(header.status) || (-13 ... -1).contains(header.status),
                         "reply \(index) has status \(header.status)")
            offset += HypervisorMessage.headerSize + header.length
            index += 1
        }
    }

    @discardableResult
    static func control(_ h: LocalHypervisor, _ kind: HypervisorMessage.Kind, payload: [UInt8]) -> [UInt8] {
        let replies = h.serveForFuzzing(domain: 0, bytes: HypervisorMessage(kind: kind, tag: 1, payload: payload).encoded(),
                                        pieceSize: 1 << 20)
        guard let header = try? HypervisorMessage.decodeHeader(replies), header.status == 0 else {
            fatalError("dom0's \(kind) failed: \(String(decoding: replies.dropFirst(HypervisorMessage.headerSize), as: UTF8.self))")
        }
        return Array(replies.dropFirst(HypervisorMessage.headerSize))
    }

    static func createGuest(_ h: LocalHypervisor) -> DomainID {
        let reply = control(h, .domainCreate, payload: Array(guestName.utf8))
        return DomainID(reply[0]) | DomainID(reply[1]) << 8
    }

    /// Every domain and the sum of what it holds (connections, ports, granted pages,
    /// pins, mappings, copy-buffer pages), from dom0's usage request.
    static func usage(_ h: LocalHypervisor) -> [(DomainID, Int)] {
        let payload = control(h, .domainUsage, payload: [])
        var found: [(DomainID, Int)] = []
        var offset = 0
        while offset + 28 <= payload.count {
            var holds = 0
            for field in 0..<6 {
                let at = offset + 4 + field * 4
                holds += Int(payload[at]) | Int(payload[at + 1]) << 8 | Int(payload[at + 2]) << 16 | Int(payload[at + 3]) << 24
            }
            found.append((DomainID(payload[offset]) | DomainID(payload[offset + 1]) << 8, holds))
            offset += 28
        }
        return found
    }

    static func le16(_ v: DomainID) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8)] }
}
