import Foundation
import Glibc
import SharedMemory
import Testing
import XenLinux
import XenPlatform

/// Which half of the two-domain test this process is, from XENSPLIT_XENLINUX_PEER:
/// "frontend" in a domU, "backend" in dom0 (with XENSPLIT_XENLINUX_PEER_DOMID naming the
/// domU). Unset everywhere else, so both tests skip.
private let peerRole = ProcessInfo.processInfo.environment["XENSPLIT_XENLINUX_PEER"]

/// The page a frontend shares: its first half holds the frontend's pattern, the second
/// half receives the backend's.
private func frontendByte(_ i: Int) -> UInt8 { UInt8(truncatingIfNeeded: i &* 13 &+ 1) }
private func backendByte(_ i: Int) -> UInt8 { UInt8(truncatingIfNeeded: i &* 7 &+ 5) }
private let half = pageSize / 2

/// A domU shares a page with dom0 and offers it an event channel through xenstore, the
/// way a split-driver frontend does; dom0 maps and grant-copies the page and signals back.
// Both halves run only inside the real-Xen rig, started by its script in each domain.
@Suite(.enabled(if: xenPresent && peerRole != nil, "skipped: not a half of the real-Xen peer test (XENSPLIT_XENLINUX_PEER unset or /dev/xen absent)"),
       .serialized)
struct RealXenPeerTests {
    @Test(.enabled(if: xenPresent && peerRole == "frontend", "runs only as the domU half of the real-Xen peer test"))
    func frontendSharesAPageWithDom0() async throws {
        let platform = try await LinuxPlatform.detect()
        let me = platform.domainID
        #expect(me != .dom0)
        let client = try platform.connectXenStore()
        defer { client.close() }
        let pages = try platform.grantTable.share(pages: 1, with: .dom0, writable: true)
        for i in 0..<half { pages.view.store(frontendByte(i), at: i) }
        let channel = try platform.openEventChannel()
        defer { channel.close() }
        let port = try channel.allocateUnbound(remote: .dom0)
        let base = "/local/domain/\(me)/data/xenlinux-peer"
        try await client.write(base + "/ref", "\(pages.refs[0])")
        try await client.write(base + "/port", "\(port)")
        print("XENLINUX-PEER frontend d\(me) shared ref \(pages.refs[0]) port \(port)")

        // The backend writes its half, then notifies.
        try waitReadable(channel.fileDescriptor)
        #expect(try channel.pending() == port)
        try channel.unmask(port)
        #expect(pages.view.bytes(at: half, length: half) == (0..<half).map(backendByte))
        #expect(pages.view.bytes(at: 0, length: half) == (0..<half).map(frontendByte))
        try channel.notify(port)

        // The backend unmaps and says so; our end of access then frees the page at once.
        try waitReadable(channel.fileDescriptor)
        #expect(try channel.pending() == port)
        try channel.unmask(port)
        try platform.grantTable.endAccess(pages)
        try channel.unbind(port)
        print("XENLINUX-PEER frontend done")
    }

    @Test(.enabled(if: xenPresent && peerRole == "backend", "runs only as the dom0 half of the real-Xen peer test"))
    func backendMapsAndCopiesTheDomUsPage() async throws {
        let peerText = try #require(ProcessInfo.processInfo.environment["XENSPLIT_XENLINUX_PEER_DOMID"])
        let peer = try LinuxPlatform.parseDomainID(Array(peerText.utf8))
        let platform = try await LinuxPlatform.detect()
        #expect(platform.domainID == .dom0)
        let client = try platform.connectXenStore()
        defer { client.close() }
        let base = "/local/domain/\(peer)/data/xenlinux-peer"
        let watch = try await client.watch(base + "/port")
        var portText: String?
        for await _ in watch {
            if let text = try? await client.readString(base + "/port") { portText = text; break }
        }
        let remotePort = try #require(portText.flatMap { EventPort($0) })
        let ref = try #require(GrantRef(try await client.readString(base + "/ref")))
        print("XENLINUX-PEER backend sees d\(peer) ref \(ref) port \(remotePort)")

        let mapping = try platform.grantMapper.map([ref], from: peer, writable: true)
        #expect(mapping.view.bytes(at: 0, length: half) == (0..<half).map(frontendByte))
        let buffer = try platform.grantMapper.registerCopyBuffer(pages: 1)
        var segments = [GrantCopySegment(source: .grant(domain: peer, ref: ref, offset: 100),
                                         destination: .local(buffer: buffer.id, offset: 0), length: 200)]
        try segments.withUnsafeMutableBufferPointer { try platform.grantMapper.copy($0) }
        #expect(segments[0].status == .okay)
        #expect(buffer.view.bytes(at: 0, length: 200) == (100..<300).map(frontendByte))
        for i in 0..<half { mapping.view.store(backendByte(i), at: half + i) }

        let channel = try platform.openEventChannel()
        defer { channel.close() }
        let local = try channel.bindInterdomain(remote: peer, remotePort: remotePort)
        // Xen marks a newly bound interdomain port pending; take that event first.
        try waitReadable(channel.fileDescriptor)
        #expect(try channel.pending() == local)
        try channel.unmask(local)
        try channel.notify(local)

        // The frontend checked our half and acknowledges.
        try waitReadable(channel.fileDescriptor)
        #expect(try channel.pending() == local)
        try channel.unmask(local)
        try platform.grantMapper.unmap(mapping)
        try channel.notify(local)
        try channel.unbind(local)
        print("XENLINUX-PEER backend done")
    }

    /// Blocks until `fd` is readable; the bound only keeps a broken peer from hanging the
    /// rig, it is not a timing assertion.
    private func waitReadable(_ fd: Int32) throws {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        var n: Int32
        repeat { n = poll(&p, 1, 120_000) } while n < 0 && errno == EINTR
        #expect(n == 1, "event channel fd \(fd) not readable")
    }
}
