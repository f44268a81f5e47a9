import CXenLocal
import Foundation
import Testing
import XenLocal
import XenPlatform

// Each test here checks one statement of Protocols/local-hypervisor.md by speaking the raw
// protocol, with payloads written out byte by byte as a peer in another language would.

extension RawClient {
    /// One request with a given tag; the reply and the descriptors it carried (the caller's).
    func exchange(_ type: UInt32, tag: UInt32 = 7, _ payload: [UInt8]) -> (reply: HypervisorMessage, fds: [Int32])? {
        send(le32(type) + le32(tag) + le32(UInt32(payload.count)) + le32(0) + payload)
        return receive()
    }

    /// A request that must succeed; its payload and descriptors.
    func succeed(_ type: UInt32, _ payload: [UInt8], fds expected: Int = 0,
                 sourceLocation: SourceLocation = #_sourceLocation) throws -> (payload: [UInt8], fds: [Int32]) {
        let (reply, fds) = try #require(exchange(type, payload), "no reply to type \(type)", sourceLocation: sourceLocation)
        #expect(reply.status == 0, "type \(type): status \(reply.status) \(String(decoding: reply.payload, as: UTF8.self))",
                sourceLocation: sourceLocation)
        #expect(reply.kind.rawValue == type && reply.tag == 7, sourceLocation: sourceLocation)
        #expect(fds.count == expected, "type \(type) carried \(fds.count) descriptors", sourceLocation: sourceLocation)
        return (reply.payload, fds)
    }
}

func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8)] }
func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8((v >> (8 * $0)) & 0xFF) } }
func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8((v >> (8 * UInt64($0))) & 0xFF) } }
func u16(_ b: [UInt8], _ at: Int) -> UInt16 { UInt16(b[at]) | UInt16(b[at + 1]) << 8 }
func u32(_ b: [UInt8], _ at: Int) -> UInt32 { (0..<4).reduce(UInt32(0)) { $0 | UInt32(b[at + $1]) << (8 * UInt32($1)) } }
func u64(_ b: [UInt8], _ at: Int) -> UInt64 { (0..<8).reduce(UInt64(0)) { $0 | UInt64(b[at + $1]) << (8 * UInt64($1)) } }

/// Pages of a descriptor the hypervisor handed over (a pool or a grant table), mapped
/// shared and writable, as a peer's own process maps them.
final class MappedPages {
    let base: UnsafeMutableRawPointer
    let length: Int
    init(fd: Int32, offset: Int, length: Int) throws {
        let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off_t(offset))
        try #require(p != MAP_FAILED, "mmap: errno \(errno)")
        base = p!
        self.length = length
    }
    deinit { munmap(base, length) }
    func store16(_ v: UInt16, at o: Int) { base.storeBytes(of: v.littleEndian, toByteOffset: o, as: UInt16.self) }
    func store32(_ v: UInt32, at o: Int) { base.storeBytes(of: v.littleEndian, toByteOffset: o, as: UInt32.self) }
    func load16(at o: Int) -> UInt16 { UInt16(littleEndian: base.loadUnaligned(fromByteOffset: o, as: UInt16.self)) }
    func bytes(at o: Int, count: Int) -> [UInt8] { (0..<count).map { base.load(fromByteOffset: o + $0, as: UInt8.self) } }
    func fill(_ byte: UInt8, at o: Int, count: Int) { memset(base + o, Int32(byte), count) }
}

/// grant_table.h values, as a peer writes them into its own grant entries.
enum GTF {
    static let permitAccess: UInt16 = 1
    static let acceptTransfer: UInt16 = 2
    static let transitive: UInt16 = 3
    static let readonly: UInt16 = 1 << 2
    static let reading: UInt16 = 1 << 3
    static let writing: UInt16 = 1 << 4
    static let subPage: UInt16 = 1 << 8
}

@Suite struct ProtocolContractTests {
    static let hello: UInt32 = 1, share: UInt32 = 2, endAccess: UInt32 = 3, map: UInt32 = 4, unmap: UInt32 = 5
    static let allocateBuffer: UInt32 = 6, freeBuffer: UInt32 = 7, copy: UInt32 = 8
    static let allocUnbound: UInt32 = 9, bind: UInt32 = 10, close: UInt32 = 11
    static let create: UInt32 = 12, destroy: UInt32 = 13, list: UInt32 = 14, usage: UInt32 = 15

    // MARK: Socket type and framing

    @Test func theSocketsAreStreamSocketsWithoutMessageBoundaries() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        _ = try await fx.createDomain("guest")
        // SEQPACKET and DGRAM clients are refused by the listeners' type.
        let paths = [LocalHypervisor.socketPath(stateDirectory: fx.directory),
                     LocalHypervisor.socketPath(stateDirectory: fx.directory, domain: "guest"),
                     LocalHypervisor.xenStorePath(stateDirectory: fx.directory, domain: nil),
                     LocalHypervisor.xenStorePath(stateDirectory: fx.directory, domain: "guest")]
        for path in paths {
            var st = stat()
            #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o600, "\(path) is mode 0600")
        }
        for path in paths {
          for type in [SOCK_SEQPACKET, SOCK_DGRAM] {
            let s = socket(AF_UNIX, Int32(type.rawValue), 0)
            defer { Glibc.close(s) }
            var a = sockaddr_un()
            a.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &a.sun_path) { p in
                for (i, b) in path.utf8.enumerated() { p[i] = b }
            }
            let rc = withUnsafePointer(to: &a) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(s, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            #expect(rc == -1 && errno == EPROTOTYPE, "\(path) took a \(type) connection")
          }
        }
        // A stream: one request sent a byte at a time is one request...
        let dom0 = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory))
        let list = le32(Self.list) + le32(41) + le32(0) + le32(0)
        for b in list { dom0.send([b]) }
        let first = try #require(dom0.receive())
        #expect(first.0.kind == .domainList && first.0.tag == 41 && first.0.status == 0)
        // ...and three requests in one write are three, answered in order.
        var three: [UInt8] = []
        for tag: UInt32 in [1, 2, 3] { three += le32(Self.list) + le32(tag) + le32(0) + le32(0) }
        dom0.send(three)
        for tag: UInt32 in [1, 2, 3] { #expect(dom0.receive()?.0.tag == tag) }
    }

    @Test func requestsStraddlingReadsAreReassembledInOrder() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let dom0 = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory))
        // 120 requests of 1..6 KiB (trailing bytes are ignored) in one write of far more
        // than one read takes: requests split across reads at every offset.
        var burst: [UInt8] = []
        for tag in 0..<120 {
            let padding = [UInt8](repeating: UInt8(tag), count: 1000 + (tag * 389) % 5200)
            burst += le32(Self.list) + le32(UInt32(tag)) + le32(UInt32(padding.count)) + le32(0) + padding
        }
        #expect(burst.count > 4 * 65536)
        dom0.send(burst)
        for tag in 0..<120 {
            let reply = try #require(dom0.receive())
            #expect(reply.0.tag == UInt32(tag) && reply.0.status == 0)
            #expect(reply.0.payload == le16(0) + le16(8) + Array("Domain-0".utf8))
        }
    }

    @Test func descriptorsArriveWithTheFirstByteOfTheirReply() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let dom0 = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory))
        dom0.send(le32(Self.hello) + le32(1) + le32(4) + le32(0) + le32(1))
        var byte: UInt8 = 0
        var fds = [Int32](repeating: -1, count: 16)
        var count: Int32 = 0
        let n = fds.withUnsafeMutableBufferPointer { xl_recv_with_fds(dom0.fd, &byte, 1, $0.baseAddress, 16, &count) }
        #expect(n == 1 && byte == UInt8(Self.hello))
        #expect(count == 2, "pool and grant-table memfds come with the reply's first byte")
        for fd in fds[0..<Int(count)] { Glibc.close(fd) }
    }

    // MARK: Every request's payload and reply, byte by byte

    @Test func everyRequestAndReplyHasTheDocumentedLayout() async throws {
        let fx = try HypervisorFixture(poolPages: 4096, grantEntries: 1024)
        defer { fx.stop() }
        let (id, _) = try await fx.createDomain("guest")
        let dom0 = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory))
        let guest = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory, domain: "guest"))

        // 1 hello: u32 version -> u16 domid, u16 0, u32 pool pages, u32 grant entries; pool, table.
        let hello = try guest.succeed(Self.hello, le32(1), fds: 2)
        #expect(hello.payload == le16(id) + [0, 0] + le32(4096) + le32(1024))
        #expect(id != 1 || hello.payload == [0x01, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00])
        hello.fds.forEach { Glibc.close($0) }

        // 2 share: u16 grantee, u8 writable, u8 0, u32 count -> u32 first frame, u32 ref x count.
        let shared = try guest.succeed(Self.share, le16(0) + [1, 0] + le32(2))
        #expect(shared.payload.count == 4 + 2 * 4)
        let first = u32(shared.payload, 0)
        let refs = [u32(shared.payload, 4), u32(shared.payload, 8)]
        #expect(refs.allSatisfy { $0 >= 8 && $0 < 1024 }, "refs 0-7 are reserved")

        // 4 map (dom0): u16 granter, u8 writable, u8 0, u32 count, u32 ref x count
        //   -> u64 handle, u32 frame x count; the granter's pool memfd.
        let mapped = try dom0.succeed(Self.map, le16(id) + [1, 0] + le32(2) + le32(refs[0]) + le32(refs[1]), fds: 1)
        #expect(mapped.payload.count == 8 + 2 * 4)
        #expect(u32(mapped.payload, 8) == first && u32(mapped.payload, 12) == first + 1, "frames of the shared run")
        mapped.fds.forEach { Glibc.close($0) }
        // 5 unmap: u64 handle -> empty.
        #expect(try dom0.succeed(Self.unmap, le64(u64(mapped.payload, 0))).payload.isEmpty)

        // 6 allocate copy buffer: u32 pages -> u32 buffer id. 8 copy: u32 count, 28-byte
        // segments (u16 length, u16 0, source, destination; each end u16 domid, u16 kind,
        // u32 ref or buffer, u32 offset) -> i16 status x count.
        let buffer = u32(try dom0.succeed(Self.allocateBuffer, le32(1)).payload, 0)
        let segment = le16(16) + [0, 0]
            + le16(id) + le16(1) + le32(refs[1]) + le32(4080)     // source: the guest's grant, last 16 bytes
            + le16(0) + le16(0) + le32(buffer) + le32(100)        // destination: dom0's buffer
        let tooLong = le16(17) + Array(segment[2...])           // crosses the page: GNTST_bad_copy_arg
        let copied = try dom0.succeed(Self.copy, le32(2) + segment + tooLong)
        #expect(copied.payload == le16(0) + le16(UInt16(bitPattern: -10)))
        // 7 free copy buffer: u32 id -> empty.
        #expect(try dom0.succeed(Self.freeBuffer, le32(buffer)).payload.isEmpty)

        // 3 end access: u32 first frame -> empty.
        #expect(try guest.succeed(Self.endAccess, le32(first)).payload.isEmpty)

        // 9 alloc unbound: u16 remote domid -> u32 port; receive and notify eventfds.
        let offered = try guest.succeed(Self.allocUnbound, le16(0), fds: 2)
        #expect(offered.payload.count == 4)
        let port = u32(offered.payload, 0)
        // 10 bind interdomain: u16 remote domid, u16 0, u32 remote port -> u32 port; two eventfds.
        let bound = try dom0.succeed(Self.bind, le16(id) + [0, 0] + le32(port), fds: 2)
        #expect(bound.payload.count == 4)
        // 11 close: u32 port -> empty.
        #expect(try dom0.succeed(Self.close, bound.payload).payload.isEmpty)
        #expect(try guest.succeed(Self.close, le32(port)).payload.isEmpty)
        (offered.fds + bound.fds).forEach { Glibc.close($0) }

        // 12 domain create: UTF-8 name -> u16 domid. 14 list -> (u16 domid, u16 length, name) x n.
        let made = try dom0.succeed(Self.create, Array("zz".utf8)).payload
        #expect(made.count == 2)
        let newID = u16(made, 0)
        let listed = try guest.succeed(Self.list, []).payload
        #expect(listed == le16(0) + le16(8) + Array("Domain-0".utf8) + le16(id) + le16(5) + Array("guest".utf8)
                    + le16(newID) + le16(2) + Array("zz".utf8))
        // 15 usage (dom0): per domain u16 domid, u16 0, six u32 counts.
        let usage = try dom0.succeed(Self.usage, []).payload
        #expect(usage.count == 3 * 28)
        #expect(Array(usage[0..<4]) == le16(0) + [0, 0])
        #expect(Array(usage[28..<32]) == le16(id) + [0, 0] && u32(usage, 36) == 0, "the guest closed its port")
        #expect(Array(usage[56..<60]) == le16(newID) + [0, 0] && Array(usage[60..<84]) == [UInt8](repeating: 0, count: 24))
        // 13 destroy (dom0): u16 domid -> empty.
        #expect(try dom0.succeed(Self.destroy, le16(newID)).payload.isEmpty)
    }

    @Test func aShortPayloadGetsEINVALNamingTheField() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let dom0 = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory))
        let cases: [(UInt32, [UInt8], String)] = [
            (Self.hello, [1, 0, 0], "version"),
            (Self.share, le16(1) + [1, 0] + [1, 0], "count"),
            (Self.endAccess, [], "first-frame"),
            (Self.map, le16(1) + [1], "pad"),
            (Self.unmap, le32(1), "handle"),
            (Self.allocateBuffer, [1], "pages"),
            (Self.freeBuffer, [1, 0], "buffer"),
            (Self.copy, le32(1) + [16, 0], "count"),
            (Self.allocUnbound, [0], "remote"),
            (Self.bind, le16(1) + [0, 0], "remote-port"),
            (Self.close, [], "port"),
            (Self.destroy, [1], "domid"),
        ]
        for (type, payload, field) in cases {
            let (reply, fds) = try #require(dom0.exchange(type, payload))
            #expect(fds.isEmpty)
            #expect(reply.status == EINVAL, "type \(type)")
            #expect(String(decoding: reply.payload, as: UTF8.self).contains(field), "type \(type): \(String(decoding: reply.payload, as: UTF8.self))")
        }
        // The connection is still served.
        #expect(dom0.exchange(Self.list, [])?.reply.status == 0)
    }

    @Test func extraBytesZeroFieldsAndSentDescriptorsAreIgnored() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let (id, _) = try await fx.createDomain("guest")
        let guest = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory, domain: "guest"))
        let dom0 = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory))
        // Two bytes after alloc unbound's u16; a non-zero pad in bind.
        let offered = try guest.succeed(Self.allocUnbound, le16(0) + [0xEE, 0xEE], fds: 2)
        let bound = try dom0.succeed(Self.bind, le16(id) + [0xFF, 0xFF] + le32(u32(offered.payload, 0)), fds: 2)
        (offered.fds + bound.fds).forEach { Glibc.close($0) }
        // A request with a descriptor attached is served as if it had none.
        let efd = xl_eventfd(1)
        defer { Glibc.close(efd) }
        let request = le32(Self.list) + le32(9) + le32(0) + le32(0)
        var fds = [efd]
        #expect(request.withUnsafeBytes { b in fds.withUnsafeMutableBufferPointer { xl_send_with_fds(dom0.fd, b.baseAddress, b.count, $0.baseAddress, 1) } } == 16)
        let reply = try #require(dom0.receive())
        #expect(reply.0.tag == 9 && reply.0.status == 0 && reply.fds.isEmpty)
    }

    @Test func eachDocumentedErrorHasItsStatus() async throws {
        let fx = try HypervisorFixture(grantEntries: 1024)
        defer { fx.stop() }
        let (id, _) = try await fx.createDomain("guest")
        let guest = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory, domain: "guest"))
        let dom0 = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory))
        func status(_ c: RawClient, _ type: UInt32, _ payload: [UInt8]) -> Int32? {
            guard let (reply, fds) = c.exchange(type, payload) else { return nil }
            fds.forEach { Glibc.close($0) }
            return reply.status
        }
        #expect(status(guest, Self.hello, le32(2)) == EPROTO)
        #expect(status(guest, Self.share, le16(0) + [1, 0] + le32(0)) == EINVAL)
        #expect(status(guest, Self.share, le16(0) + [1, 0] + le32(4097)) == EINVAL)
        #expect(status(guest, Self.endAccess, le32(12345)) == ENOENT)
        #expect(status(guest, Self.map, le16(id) + [0, 0] + le32(1) + le32(8)) == -8, "GNTST_permission_denied")
        #expect(status(dom0, Self.map, le16(id) + [0, 0] + le32(0)) == EINVAL)
        #expect(status(dom0, Self.map, le16(id) + [0, 0] + le32(4097) + [UInt8](repeating: 0, count: 4097 * 4)) == EINVAL)
        #expect(status(dom0, Self.map, le16(999) + [0, 0] + le32(1) + le32(8)) == -2, "GNTST_bad_domain")
        let badHandle = try #require(dom0.exchange(Self.unmap, le64(777)))
        #expect(badHandle.reply.status == -4 && u32(badHandle.reply.payload, 0) == 0, "GNTST_bad_handle, ref 0")
        #expect(status(guest, Self.allocateBuffer, le32(0)) == EINVAL)
        #expect(status(guest, Self.freeBuffer, le32(3)) == ENOENT)
        #expect(status(guest, Self.copy, le32(4097)) == EINVAL)
        let buffer = u32(try guest.succeed(Self.allocateBuffer, le32(1)).payload, 0)
        let local = le16(0) + le16(0) + le32(buffer) + le32(0)
        #expect(status(guest, Self.copy, le32(1) + le16(8) + [0, 0] + le16(0) + le16(2) + le32(8) + le32(0) + local) == EINVAL, "kind 2")
        #expect(status(guest, Self.copy, le32(1) + le16(8) + [0, 0] + le16(0) + le16(1) + le32(8) + le32(4096) + local) == EINVAL, "offset 4096")
        // Per-segment statuses.
        let segments: [[UInt8]] = [
            le16(0) + [0, 0] + local + local,                                                   // length 0
            le16(8) + [0, 0] + local + le16(0) + le16(0) + le32(buffer + 1) + le32(0),           // not its buffer
            le16(8) + [0, 0] + le16(0) + le16(0) + le32(buffer) + le32(4090) + local,            // past the buffer
            le16(8) + [0, 0] + le16(999) + le16(1) + le32(8) + le32(0) + local,                  // unknown granter
            le16(8) + [0, 0] + le16(0) + le16(1) + le32(8) + le32(4090) + local,                 // crosses the page
        ]
        let copied = try guest.succeed(Self.copy, le32(UInt32(segments.count)) + segments.flatMap { $0 })
        #expect((0..<segments.count).map { Int16(bitPattern: u16(copied.payload, 2 * $0)) } == [-10, -5, -10, -2, -10])
        #expect(status(guest, Self.allocUnbound, le16(999)) == ESRCH)
        #expect(status(guest, Self.bind, le16(999) + [0, 0] + le32(1)) == ESRCH)
        #expect(status(guest, Self.bind, le16(0) + [0, 0] + le32(4242)) == EINVAL, "no such port")
        let toOther = try dom0.succeed(Self.allocUnbound, le16(0), fds: 2)
        toOther.fds.forEach { Glibc.close($0) }
        #expect(status(guest, Self.bind, le16(0) + [0, 0] + toOther.payload) == EINVAL, "offered to dom0, not the guest")
        let toGuest = try dom0.succeed(Self.allocUnbound, le16(id), fds: 2)
        toGuest.fds.forEach { Glibc.close($0) }
        #expect(status(guest, Self.bind, le16(0) + [0, 0] + toGuest.payload) == 0)
        #expect(status(guest, Self.bind, le16(0) + [0, 0] + toGuest.payload) == EINVAL, "already bound")
        #expect(status(guest, Self.close, le32(4242)) == EINVAL)
        #expect(status(guest, Self.create, Array("x".utf8)) == EPERM)
        #expect(status(dom0, Self.create, Array("bad name".utf8)) == EINVAL)
        #expect(status(dom0, Self.create, Array("Domain-0".utf8)) == EINVAL)
        #expect(status(dom0, Self.create, Array(".hidden".utf8)) == EINVAL)
        #expect(status(dom0, Self.create, Array("guest".utf8)) == EEXIST)
        #expect(status(guest, Self.destroy, le16(id)) == EPERM)
        #expect(status(dom0, Self.destroy, le16(0)) == ESRCH)
        #expect(status(dom0, Self.destroy, le16(999)) == ESRCH)
        #expect(status(guest, Self.usage, []) == EPERM)
    }

    @Test func exhaustedPoolsAndTablesGetENOMEMAndENOSPC() async throws {
        // 8 frames; 12 entries, of which 8 are reserved: 4 to hand out.
        let fx = try HypervisorFixture(poolPages: 8, grantEntries: 12)
        defer { fx.stop() }
        _ = try await fx.createDomain("guest")
        let guest = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory, domain: "guest"))
        #expect(guest.exchange(Self.share, le16(0) + [1, 0] + le32(9))?.reply.status == ENOMEM)
        #expect(guest.exchange(Self.share, le16(0) + [1, 0] + le32(5))?.reply.status == ENOSPC)
        let four = try guest.succeed(Self.share, le16(0) + [1, 0] + le32(4)).payload
        #expect((1...4).map { u32(four, 4 * $0) } == [8, 9, 10, 11], "the lowest free entries, from 8")
        #expect(guest.exchange(Self.allocateBuffer, le32(5))?.reply.status == ENOMEM)
        #expect(guest.exchange(Self.share, le16(0) + [1, 0] + le32(1))?.reply.status == ENOSPC)
    }

    // MARK: Grants

    @Test func endAccessToAGrantAlreadyEndedIsENOENTAndChangesNothing() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        _ = try await fx.createDomain("guest")
        let guest = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory, domain: "guest"))
        let first = u32(try guest.succeed(Self.share, le16(0) + [1, 0] + le32(1)).payload, 0)
        let id = try #require(fx.dom0().listDomains().first { $0.name == "guest" }).id
        let other = try guest.succeed(Self.share, le16(0) + [1, 0] + le32(1)).payload
        #expect(try guest.succeed(Self.endAccess, le32(first)).payload.isEmpty)
        let again = try #require(guest.exchange(Self.endAccess, le32(first)))
        #expect(again.reply.status == ENOENT)
        #expect(String(decoding: again.reply.payload, as: UTF8.self).contains("\(first)"), "names the frame")
        // The other run is untouched: dom0 still maps it, and while it does, ending it is
        // EBUSY with the busy ref as the whole payload.
        let dom0 = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory))
        let mapped = try dom0.succeed(Self.map, le16(id) + [0, 0] + le32(1) + le32(u32(other, 4)), fds: 1)
        mapped.fds.forEach { Glibc.close($0) }
        let busy = try #require(guest.exchange(Self.endAccess, le32(u32(other, 0))))
        #expect(busy.reply.status == EBUSY && busy.reply.payload == le32(u32(other, 4)))
    }

    @Test func aGuestWritesItsOwnGrantEntriesAndTheHypervisorChecksThemOnMap() async throws {
        let fx = try HypervisorFixture(poolPages: 4096, grantEntries: 1024)
        defer { fx.stop() }
        let (id, _) = try await fx.createDomain("guest")
        let guest = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory, domain: "guest"))
        let hello = try guest.succeed(Self.hello, le32(1), fds: 2)
        defer { hello.fds.forEach { Glibc.close($0) } }
        // The guest's own memory and its own grant table, mapped by the guest itself.
        let frame = 4000
        let page = try MappedPages(fd: hello.fds[0], offset: frame * 4096, length: 4096)
        let table = try MappedPages(fd: hello.fds[1], offset: 0, length: 1024 * 8)
        page.fill(0x5A, at: 0, count: 4096)
        func entry(_ ref: Int, flags: UInt16, domid: UInt16, frame: UInt32) {
            table.store32(frame, at: ref * 8 + 4)
            table.store16(domid, at: ref * 8 + 2)
            table.store16(flags, at: ref * 8)
        }
        entry(1000, flags: GTF.permitAccess, domid: 0, frame: UInt32(frame))
        entry(1001, flags: GTF.permitAccess | GTF.readonly, domid: 0, frame: UInt32(frame))
        entry(1002, flags: 0, domid: 0, frame: UInt32(frame))
        entry(1003, flags: GTF.acceptTransfer, domid: 0, frame: UInt32(frame))
        entry(1004, flags: GTF.transitive, domid: 0, frame: UInt32(frame))
        entry(1005, flags: GTF.permitAccess | GTF.subPage, domid: 0, frame: UInt32(frame))
        entry(1006, flags: GTF.permitAccess, domid: 7, frame: UInt32(frame))
        entry(1007, flags: GTF.permitAccess, domid: 0, frame: 4096)
        entry(1008, flags: GTF.permitAccess | 1 << 5 | 1 << 7 | 1 << 12, domid: 0, frame: UInt32(frame))

        let dom0 = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory))
        func map(_ ref: UInt32, writable: Bool) -> (status: Int32, ref: UInt32, handle: UInt64?) {
            guard let (reply, fds) = dom0.exchange(Self.map, le16(id) + [writable ? 1 : 0, 0] + le32(1) + le32(ref)) else {
                return (Int32.min, 0, nil)
            }
            fds.forEach { Glibc.close($0) }
            guard reply.status == 0 else { return (reply.status, reply.payload.count >= 4 ? u32(reply.payload, 0) : 0, nil) }
            return (0, ref, u64(reply.payload, 0))
        }
        // Refused, each with GNTST_general_error and the ref named first in the payload.
        for (ref, writable) in [(1002, false), (1003, false), (1004, false), (1005, false), (1006, false), (1001, true)] {
            let r = map(UInt32(ref), writable: writable)
            #expect(r.status == -1 && r.ref == UInt32(ref), "ref \(ref) writable \(writable): \(r.status)")
        }
        // A frame past the pool: GNTST_bad_page, its busy bits cleared again; a ref past
        // the table: GNTST_bad_gntref.
        #expect(map(1007, writable: false).status == -9)
        #expect(table.load16(at: 1007 * 8) == GTF.permitAccess)
        #expect(map(1024, writable: false).status == -3)
        // All or nothing: a good ref before a bad one is not left mapped.
        if let (reply, fds) = dom0.exchange(Self.map, le16(id) + [0, 0] + le32(2) + le32(1000) + le32(1002)) {
            fds.forEach { Glibc.close($0) }
            #expect(reply.status == -1 && u32(reply.payload, 0) == 1002)
        } else { Issue.record("no reply to a two-ref map") }
        #expect(table.load16(at: 1000 * 8) == GTF.permitAccess)
        // Bits other than the type, readonly, busy and sub-page bits are not looked at.
        let other = try #require(map(1008, writable: true).handle)
        #expect(try dom0.succeed(Self.unmap, le64(other)).payload.isEmpty)
        // Refusals leave the entries as the guest wrote them.
        #expect(table.load16(at: 1001 * 8) == GTF.permitAccess | GTF.readonly)

        // Accepted: the busy bits appear in the guest's own table while mapped...
        let rw = try #require(map(1000, writable: true).handle)
        let ro = try #require(map(1001, writable: false).handle)
        #expect(table.load16(at: 1000 * 8) == GTF.permitAccess | GTF.reading | GTF.writing)
        #expect(table.load16(at: 1001 * 8) == GTF.permitAccess | GTF.readonly | GTF.reading)
        // ...so a guest ending access with one compare-exchange of the flags to 0 sees them.
        // After unmap they are clear again.
        #expect(try dom0.succeed(Self.unmap, le64(rw)).payload.isEmpty)
        #expect(try dom0.succeed(Self.unmap, le64(ro)).payload.isEmpty)
        #expect(table.load16(at: 1000 * 8) == GTF.permitAccess)
        #expect(table.load16(at: 1001 * 8) == GTF.permitAccess | GTF.readonly)
        // Ended by the guest itself (flags to 0): a new map is refused.
        table.store16(0, at: 1000 * 8)
        #expect(map(1000, writable: false).status == -1)
    }

    @Test func guestWrittenEntriesAreCheckedTheSameWayOnCopy() async throws {
        let fx = try HypervisorFixture(poolPages: 4096, grantEntries: 1024)
        defer { fx.stop() }
        let (id, _) = try await fx.createDomain("guest")
        let (otherID, _) = try await fx.createDomain("other")
        let guest = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory, domain: "guest"))
        let hello = try guest.succeed(Self.hello, le32(1), fds: 2)
        defer { hello.fds.forEach { Glibc.close($0) } }
        let frame = 4001
        let page = try MappedPages(fd: hello.fds[0], offset: frame * 4096, length: 4096)
        let table = try MappedPages(fd: hello.fds[1], offset: 0, length: 1024 * 8)
        for i in 0..<4096 { page.base.storeBytes(of: UInt8(truncatingIfNeeded: i * 7), toByteOffset: i, as: UInt8.self) }
        func entry(_ ref: Int, flags: UInt16, domid: UInt16) {
            table.store32(UInt32(frame), at: ref * 8 + 4)
            table.store16(domid, at: ref * 8 + 2)
            table.store16(flags, at: ref * 8)
        }
        entry(900, flags: GTF.permitAccess, domid: otherID)
        entry(901, flags: GTF.permitAccess | GTF.readonly, domid: otherID)
        entry(902, flags: GTF.permitAccess, domid: 0)
        entry(903, flags: GTF.acceptTransfer, domid: otherID)

        // Domain "other" copies (it may not map): its copy buffer is in its own pool.
        let other = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory, domain: "other"))
        let otherHello = try other.succeed(Self.hello, le32(1), fds: 2)
        defer { otherHello.fds.forEach { Glibc.close($0) } }
        let buffer = u32(try other.succeed(Self.allocateBuffer, le32(1)).payload, 0)
        func segment(_ length: UInt16, from ref: UInt32, toGuest: Bool) -> [UInt8] {
            let grantEnd = le16(id) + le16(1) + le32(ref) + le32(0)
            let localEnd = le16(0) + le16(0) + le32(buffer) + le32(0)
            return le16(length) + [0, 0] + (toGuest ? localEnd + grantEnd : grantEnd + localEnd)
        }
        let segments = [
            segment(4096, from: 900, toGuest: false),   // read a writable grant: okay
            segment(64, from: 901, toGuest: false),     // read a read-only grant: okay
            segment(64, from: 901, toGuest: true),      // write a read-only grant: general error
            segment(64, from: 902, toGuest: false),     // granted to dom0, not "other": general error
            segment(64, from: 903, toGuest: false),     // not permit-access: general error
            segment(64, from: 1024, toGuest: false),    // past the table: bad gntref
        ]
        let copied = try other.succeed(Self.copy, le32(UInt32(segments.count)) + segments.flatMap { $0 })
        let statuses = (0..<segments.count).map { Int16(bitPattern: u16(copied.payload, 2 * $0)) }
        #expect(statuses == [0, 0, -1, -1, -1, -3])
        // What landed in "other"'s buffer is what the guest wrote in its own page.
        let landed = try MappedPages(fd: otherHello.fds[0], offset: Int(buffer) * 4096, length: 4096)
        #expect(landed.bytes(at: 0, count: 4096) == page.bytes(at: 0, count: 4096))
        // A copy pins only while it runs: no busy bits are left behind.
        for ref in 900...903 { #expect(table.load16(at: ref * 8) & (GTF.reading | GTF.writing) == 0) }
    }

    // MARK: Event channels

    /// A channel set up by hand: dom0 offers, the guest binds. Each side's descriptors.
    func channel(_ fx: HypervisorFixture, guestID: DomainID) throws -> (dom0: (port: UInt32, receive: Int32, notify: Int32),
                                                                         guest: (port: UInt32, receive: Int32, notify: Int32),
                                                                         clients: [RawClient]) {
        let dom0 = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory))
        let guest = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory, domain: "guest"))
        let offered = try dom0.succeed(Self.allocUnbound, le16(guestID), fds: 2)
        let port = u32(offered.payload, 0)
        let bound = try guest.succeed(Self.bind, le16(0) + [0, 0] + le32(port), fds: 2)
        return ((port, offered.fds[0], offered.fds[1]), (u32(bound.payload, 0), bound.fds[0], bound.fds[1]), [dom0, guest])
    }

    @Test func aNotifyIsAWriteOfOneAndANewBindingStartsPending() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let (id, _) = try await fx.createDomain("guest")
        let (d, g, clients) = try channel(fx, guestID: id)
        defer { for fd in [d.receive, d.notify, g.receive, g.notify] { Glibc.close(fd) }; withExtendedLifetime(clients) {} }
        // All four are non-blocking eventfds.
        for fd in [d.receive, d.notify, g.receive, g.notify] {
            #expect(fcntl(fd, F_GETFL) & O_NONBLOCK != 0)
            var link = [CChar](repeating: 0, count: 64)
            let n = readlink("/proc/self/fd/\(fd)", &link, 63)
            #expect(n > 0 && String(cString: link) == "anon_inode:[eventfd]")
        }
        // The binder's port starts pending; the offering side's does not.
        #expect(xl_eventfd_drain(g.receive) == 1)
        #expect(xl_eventfd_drain(d.receive) == 0)
        // Notifying is adding 1 to the notify eventfd, which is the peer's receive eventfd.
        #expect(xl_eventfd_signal(d.notify) == 0)
        #expect(xl_eventfd_signal(d.notify) == 0)
        #expect(xl_eventfd_drain(g.receive) == 2, "the counter counts notifications since the last read")
        #expect(xl_eventfd_drain(d.receive) == 0)
        #expect(xl_eventfd_signal(g.notify) == 0)
        #expect(xl_eventfd_drain(d.receive) == 1)
        // The guest closes its end and binds again: the same pair, so dom0's notify
        // eventfd still reaches it (after the new binding's own pending write).
        let guest = clients[1]
        #expect(try guest.succeed(Self.close, le32(g.port)).payload.isEmpty)
        let again = try guest.succeed(Self.bind, le16(0) + [0, 0] + le32(d.port), fds: 2)
        defer { again.fds.forEach { Glibc.close($0) } }
        #expect(xl_eventfd_drain(again.fds[0]) == 1)
        #expect(xl_eventfd_signal(d.notify) == 0)
        #expect(xl_eventfd_drain(again.fds[0]) == 1)
        #expect(xl_eventfd_signal(again.fds[1]) == 0)
        #expect(xl_eventfd_drain(d.receive) == 1)
    }

    @Test func eachNotifyIsOneEdgeWhetherOrNotTheEventfdIsRead() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let (id, _) = try await fx.createDomain("guest")
        let (d, g, clients) = try channel(fx, guestID: id)
        defer { for fd in [d.receive, d.notify, g.receive, g.notify] { Glibc.close(fd) }; withExtendedLifetime(clients) {} }
        let ep = xl_epoll_create()
        defer { Glibc.close(ep) }
        #expect(xl_epoll_add(ep, d.receive, d.port) == 0)
        var tags = [UInt32](repeating: 0, count: 4)
        func look() -> [UInt32] {
            let n = Int(xl_epoll_wait_tags(ep, &tags, 4))
            return n > 0 ? Array(tags[0..<n]) : []
        }
        #expect(look().isEmpty)
        #expect(xl_eventfd_signal(g.notify) == 0)
        #expect(look() == [d.port])
        #expect(look().isEmpty, "one notify, one edge")
        // The counter was never read and is non-zero, yet the next notify is a new edge.
        #expect(xl_eventfd_signal(g.notify) == 0)
        #expect(look() == [d.port])
        // An edge is reported only while the counter is non-zero when the receiver looks:
        // the peer, which holds the same eventfd, takes its own notify back by reading it.
        #expect(xl_eventfd_signal(g.notify) == 0)
        #expect(xl_eventfd_drain(g.notify) == 3, "three notifies, none read by the receiver")
        #expect(look().isEmpty)
        #expect(xl_eventfd_signal(g.notify) == 0)
        #expect(look() == [d.port])
    }

    @Test func xenSplitsOwnClientConsumesEventsByEdgeAndNeverReadsTheEventfd() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let (id, guest) = try await fx.createDomain("guest")
        // A raw dom0 offers; the library binds as the guest.
        let dom0 = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory))
        let offered = try dom0.succeed(Self.allocUnbound, le16(id), fds: 2)
        defer { offered.fds.forEach { Glibc.close($0) } }
        let notify = offered.fds[1]
        let events = try guest.openEventChannel()
        defer { events.close() }
        let port = try events.bindInterdomain(remote: 0, remotePort: u32(offered.payload, 0))
        #expect(try events.pending() == port, "a new binding starts pending")
        #expect(try events.pending() == nil)
        #expect(xl_eventfd_signal(notify) == 0)
        #expect(try events.pending() == port)
        #expect(try events.pending() == nil)
        #expect(xl_eventfd_signal(notify) == 0)
        #expect(try events.pending() == port)
        // The library left the counter alone: the bind's event and both notifies are in it.
        #expect(xl_eventfd_drain(notify) == 3)
    }
}
