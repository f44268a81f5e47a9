import CXenLocal
import Foundation
import Testing
import XenLocal
import XenPlatform

/// A client that speaks the socket protocol by hand, bypassing LocalPlatform's own checks:
/// the hypervisor must enforce everything itself.
final class RawClient {
    let fd: Int32
    init(path: String) throws {
        fd = xl_connect_unix(path)
        try #require(fd >= 0, "connect \(path): \(-fd)")
    }
    deinit { close(fd) }

    func send(_ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { xl_send_with_fds(fd, $0.baseAddress, $0.count, nil, 0) }
    }

    /// One reply, or nil if the hypervisor closed the connection.
    func receive() -> (HypervisorMessage, fds: [Int32])? {
        var fds: [Int32] = []
        func read(_ n: Int) -> [UInt8]? {
            var out = [UInt8](repeating: 0, count: n)
            var got = 0
            while got < n {
                var r = [Int32](repeating: -1, count: 16)
                var count: Int32 = 0
                let k = out.withUnsafeMutableBytes { b in r.withUnsafeMutableBufferPointer { xl_recv_with_fds(fd, b.baseAddress! + got, n - got, $0.baseAddress, 16, &count) } }
                fds += r[0..<Int(count)]
                if k <= 0 { return nil }
                got += k
            }
            return out
        }
        guard let header = read(16), let h = try? HypervisorMessage.decodeHeader(header),
              let payload = read(h.length) else { return nil }
        return (HypervisorMessage(kind: h.kind, tag: h.tag, status: h.status, payload: payload), fds)
    }

    func call(_ kind: HypervisorMessage.Kind, _ payload: [UInt8]) -> HypervisorMessage? {
        send(HypervisorMessage(kind: kind, tag: 7, payload: payload).encoded())
        guard let (reply, fds) = receive() else { return nil }
        for f in fds { close(f) }
        return reply
    }
}

@Suite struct RawClientTests {
    func mapRequest(domain: DomainID, refs: [GrantRef], writable: Bool) -> [UInt8] {
        var w = PayloadWriter()
        w.u16(domain)
        w.u8(writable ? 1 : 0)
        w.u8(0)
        w.u32(UInt32(refs.count))
        for r in refs { w.u32(r) }
        return w.bytes
    }

    @Test func theHypervisorNotTheLibraryEnforcesGrants() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let (id, guest) = try await fx.createDomain("guest")
        let (otherID, _) = try await fx.createDomain("other")
        let toOther = try guest.grantTable.share(pages: 1, with: otherID, writable: true)
        let toDom0 = try guest.grantTable.share(pages: 1, with: 0, writable: false)

        // Domain "other" asks, by hand, for a mapping of a page granted to it.
        let other = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory, domain: "other"))
        let denied = try #require(other.call(.map, mapRequest(domain: id, refs: toOther.refs, writable: true)))
        #expect(denied.status == Int32(GrantStatus.permissionDenied.rawValue))
        // It cannot create or destroy domains either.
        #expect(other.call(.domainCreate, Array("sneaky".utf8))?.status == EPERM)
        var w = PayloadWriter()
        w.u16(id)
        #expect(other.call(.domainDestroy, w.bytes)?.status == EPERM)
        // Nor end access to pages of another domain: its end-access names its own frames.
        var e = PayloadWriter()
        e.u32(UInt32(toOther.token))
        #expect(other.call(.endAccess, e.bytes)?.status == ENOENT)

        // Dom0, by hand: write access to a read-only grant, a ref past the table.
        let dom0 = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory))
        #expect(dom0.call(.map, mapRequest(domain: id, refs: toDom0.refs, writable: true))?.status == Int32(GrantStatus.generalError.rawValue))
        #expect(dom0.call(.map, mapRequest(domain: id, refs: [5000], writable: false))?.status == Int32(GrantStatus.badGrantRef.rawValue))
        // A count that claims more refs than the payload holds.
        var lying = PayloadWriter()
        lying.u16(id); lying.u8(0); lying.u8(0); lying.u32(1000); lying.u32(8)
        let truncated = try #require(dom0.call(.map, lying.bytes))
        #expect(truncated.status == EINVAL)
        #expect(String(decoding: truncated.payload, as: UTF8.self).contains("count"))
        // The library's own view is unchanged: the read-only grant is not busy.
        try guest.grantTable.endAccess(toDom0)
    }

    @Test func everyGrantMisuseByHandGetsXensStatus() async throws {
        let fx = try HypervisorFixture(grantEntries: 1024)
        defer { fx.stop() }
        let (id, guest) = try await fx.createDomain("guest")
        let (otherID, _) = try await fx.createDomain("other")
        let toOther = try guest.grantTable.share(pages: 1, with: otherID, writable: true)
        let toDom0 = try guest.grantTable.share(pages: 1, with: 0, writable: true)
        let dom0 = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory))
        func status(_ kind: HypervisorMessage.Kind, _ payload: [UInt8]) -> Int32? { dom0.call(kind, payload)?.status }
        let generalError = Int32(GrantStatus.generalError.rawValue)
        // Wrong domid: granted to "other", asked for by dom0.
        #expect(status(.map, mapRequest(domain: id, refs: toOther.refs, writable: false)) == generalError)
        // Never granted, past the table, unknown domain.
        #expect(status(.map, mapRequest(domain: id, refs: [700], writable: false)) == generalError)
        #expect(status(.map, mapRequest(domain: id, refs: [1024], writable: false)) == Int32(GrantStatus.badGrantRef.rawValue))
        #expect(status(.map, mapRequest(domain: 555, refs: [8], writable: false)) == Int32(GrantStatus.badDomain.rawValue))
        // End access while mapped (asked by the guest itself, by hand), then double unmap.
        let mapped = try #require(dom0.call(.map, mapRequest(domain: id, refs: toDom0.refs, writable: true)))
        #expect(mapped.status == 0)
        var handle = PayloadReader(mapped.payload)
        let h = try handle.u64("handle")
        let guestRaw = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory, domain: "guest"))
        var end = PayloadWriter()
        end.u32(UInt32(toDom0.token))
        #expect(guestRaw.call(.endAccess, end.bytes)?.status == EBUSY)
        var unmap = PayloadWriter()
        unmap.u64(h)
        #expect(status(.unmap, unmap.bytes) == 0)
        #expect(status(.unmap, unmap.bytes) == Int32(GrantStatus.badHandle.rawValue))
        #expect(guestRaw.call(.endAccess, end.bytes)?.status == 0)
        // Grant copy by hand: "other" copying out of a page the guest granted to dom0 only.
        let otherRaw = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory, domain: "other"))
        var buffer = PayloadWriter()
        buffer.u32(1)
        let allocated = try #require(otherRaw.call(.allocateBuffer, buffer.bytes))
        var b = PayloadReader(allocated.payload)
        let bufferID = try b.u32("buffer")
        let stillToDom0 = try guest.grantTable.share(pages: 1, with: 0, writable: true)
        var copy = PayloadWriter()
        copy.u32(2)
        for ref in [stillToDom0.refs[0], toOther.refs[0]] {
            copy.u16(64); copy.u16(0)
            copy.u16(id); copy.u16(1); copy.u32(ref); copy.u32(0)          // source: the guest's grant
            copy.u16(0); copy.u16(0); copy.u32(bufferID); copy.u32(0)      // destination: own buffer
        }
        let copied = try #require(otherRaw.call(.copy, copy.bytes))
        var statuses = PayloadReader(copied.payload)
        #expect(try statuses.i16("s0") == GrantStatus.generalError.rawValue, "not granted to this domain")
        #expect(try statuses.i16("s1") == GrantStatus.okay.rawValue, "granted to this domain")
    }

    @Test func malformedTrafficClosesOnlyThatConnection() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let (_, guest) = try await fx.createDomain("guest")
        let bad = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory, domain: "guest"))
        // Unknown message type 99.
        var w = PayloadWriter()
        w.u32(99); w.u32(1); w.u32(0); w.u32(0)
        bad.send(w.bytes)
        #expect(bad.receive() == nil, "the hypervisor hangs up on an unknown type")
        // A payload length over the limit.
        let big = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory, domain: "guest"))
        var h = PayloadWriter()
        h.u32(HypervisorMessage.Kind.share.rawValue); h.u32(1); h.u32(UInt32.max); h.u32(0)
        big.send(h.bytes)
        #expect(big.receive() == nil)
        // A client that sends half a header and stalls does not stall anyone else.
        let stalled = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory))
        stalled.send([1, 0, 0])
        let pages = try guest.grantTable.share(pages: 1, with: 0, writable: true)
        try guest.grantTable.endAccess(pages)
        #expect(try fx.dom0().listDomains().count == 2)
        // Hello with a version we do not speak.
        let old = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory))
        var v = PayloadWriter()
        v.u32(99)
        #expect(old.call(.hello, v.bytes)?.status == EPROTO)
    }

    @Test func protocolHeaderDecodingNamesWhatIsWrong() {
        #expect(throws: HypervisorProtocolError.unknownType(0)) { _ = try HypervisorMessage.decodeHeader([UInt8](repeating: 0, count: 16)) }
        var w = PayloadWriter()
        w.u32(1); w.u32(1); w.u32(UInt32(HypervisorMessage.maxPayload + 1)); w.u32(0)
        #expect(throws: HypervisorProtocolError.payloadTooLarge(HypervisorMessage.maxPayload + 1, limit: HypervisorMessage.maxPayload)) {
            _ = try HypervisorMessage.decodeHeader(w.bytes)
        }
        #expect(throws: HypervisorProtocolError.truncated(field: "status", needed: 4, available: 0)) {
            _ = try HypervisorMessage.decodeHeader(Array(w.bytes[0..<12]))
        }
        let m = HypervisorMessage(kind: .copy, tag: 9, status: -3, payload: [1, 2, 3])
        let e = m.encoded()
        let h = try? HypervisorMessage.decodeHeader(Array(e[0..<16]))
        #expect(h?.kind == .copy && h?.tag == 9 && h?.status == -3 && h?.length == 3)
    }
}

/// A domU cannot exhaust the hypervisor: replies it does not read, ports, connections.
@Suite struct ResourceLimitTests {
    @Test func aClientThatNeverReadsIsThrottledNotServedForever() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        _ = try await fx.createDomain("guest")
        let greedy = try RawClient(path: LocalHypervisor.socketPath(stateDirectory: fx.directory, domain: "guest"))
        // Thousands of requests, no reads: the hypervisor stops reading once its replies
        // for this client pile up, and keeps serving everyone else.
        let one = HypervisorMessage(kind: .domainList, tag: 1).encoded()
        var burst: [UInt8] = []
        for _ in 0..<2000 { burst += one }
        _ = burst.withUnsafeBytes { send(greedy.fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        #expect(try fx.dom0().listDomains().count == 2)
        // Its replies are all there when it finally reads them, in order.
        for _ in 0..<50 { #expect(greedy.receive()?.0.kind == .domainList) }
    }

    @Test func portsPerDomainAreBounded() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let (_, guest) = try await fx.createDomain("guest")
        let events = try guest.openEventChannel()
        var opened = 0
        var refused: PlatformError?
        while refused == nil, opened < 2000 {
            do {
                _ = try events.allocateUnbound(remote: 0)
                opened += 1
            } catch { refused = error }
        }
        #expect(opened == 1024)
        guard case let .eventChannel(message, errno)? = refused else {
            Issue.record("expected an event-channel error, got \(String(describing: refused))")
            return
        }
        #expect(errno == ENOSPC && message.contains("1024"))
        // Dom0 is unaffected.
        #expect(try fx.dom0().openEventChannel().allocateUnbound(remote: 1) > 0)
    }
}
