import Glibc
import SharedMemory
import Testing
import XenLinux
import XenPlatform

/// The platform against real Xen, in dom0 or a domU: this domain grants pages to itself,
/// maps and grant-copies them, loops an event channel back to itself, and uses xenstore
/// through the socket and through /dev/xen/xenbus.
// Skipped where /dev/xen is absent (the build machines): scripts/realxen/run-test.sh runs
// this suite in its QEMU dom0 from the same test bundle and fails unless every test here
// passes (it counts the @Test lines of this file), and scripts/test.sh lets this skip, and
// no other, through on the host. A skip is reported as skipped, never as passed.
@Suite(.enabled(if: xenPresent, "skipped: /dev/xen absent (no Xen here)"), .serialized)
struct RealXenSelfTests {
    @Test func platformIsAvailable() {
        #expect(LinuxPlatform.isAvailable)
    }

    @Test func shareMapCopyAndEndAccessWithOurselves() async throws {
        let platform = try await LinuxPlatform.detect()
        let me = platform.domainID
        let pages = try platform.grantTable.share(pages: 2, with: me, writable: true)
        #expect(pages.refs.count == 2)
        #expect(pages.view.bytes(at: 0, length: 2 * pageSize).allSatisfy { $0 == 0 })
        for i in 0..<(2 * pageSize) { pages.view.store(UInt8(truncatingIfNeeded: i &* 7 &+ 3), at: i) }

        // Map: the same bytes, both ways.
        let mapping = try platform.grantMapper.map(pages.refs, from: me, writable: true)
        #expect(mapping.view.bytes(at: 0, length: 2 * pageSize) == pages.view.bytes(at: 0, length: 2 * pageSize))
        mapping.view.store(UInt32(0xDEAD_BEEF), at: pageSize + 100)
        #expect(pages.view.load(UInt32.self, at: pageSize + 100) == 0xDEAD_BEEF)

        // Copy: grant -> buffer, buffer -> grant, and one bad ref that must not stop them.
        let buffer = try platform.grantMapper.registerCopyBuffer(pages: 1)
        var segments = [
            GrantCopySegment(source: .grant(domain: me, ref: pages.refs[1], offset: 16),
                             destination: .local(buffer: buffer.id, offset: 8), length: 64),
            GrantCopySegment(source: .grant(domain: me, ref: 0x00FF_FFFF, offset: 0),
                             destination: .local(buffer: buffer.id, offset: 1024), length: 8),
            GrantCopySegment(source: .grant(domain: me, ref: pages.refs[0], offset: 4000),
                             destination: .local(buffer: buffer.id, offset: 0), length: 200),
        ]
        try segments.withUnsafeMutableBufferPointer { try platform.grantMapper.copy($0) }
        #expect(segments.map(\.status) == [.okay, .badGrantRef, .badCopyArgument])
        #expect(buffer.view.bytes(at: 8, length: 64) == pages.view.bytes(at: pageSize + 16, length: 64))

        var back = [GrantCopySegment(source: .local(buffer: buffer.id, offset: 8),
                                     destination: .grant(domain: me, ref: pages.refs[0], offset: 1024), length: 64)]
        try back.withUnsafeMutableBufferPointer { try platform.grantMapper.copy($0) }
        #expect(back[0].status == .okay)
        #expect(pages.view.bytes(at: 1024, length: 64) == buffer.view.bytes(at: 8, length: 64))

        // Unmap, and a second unmap is GNTST_bad_handle as on Xen.
        try platform.grantMapper.unmap(mapping)
        #expect(throws: PlatformError.self) { try platform.grantMapper.unmap(mapping) }
        do { try platform.grantMapper.unmap(mapping) } catch {
            guard case .grant(.badHandle, _, _, _) = error else { Issue.record("unexpected \(error)"); return }
        }

        // A map of a ref we never granted reports Xen's status for it.
        do {
            _ = try platform.grantMapper.map([0x00FF_FFFF], from: me, writable: false)
            Issue.record("a map of an ungranted ref succeeded")
        } catch {
            guard case let .grant(status, ref, _, _) = error else { Issue.record("unexpected \(error)"); return }
            #expect(status == .badGrantRef && ref == 0x00FF_FFFF)
        }

        try platform.grantTable.endAccess(pages)
        #expect(throws: PlatformError.self) { try platform.grantTable.endAccess(pages) }
    }

    @Test func aReadOnlyGrantRefusesAWritableMap() async throws {
        let platform = try await LinuxPlatform.detect()
        let pages = try platform.grantTable.share(pages: 1, with: platform.domainID, writable: false)
        defer { try? platform.grantTable.endAccess(pages) }
        do {
            let mapping = try platform.grantMapper.map(pages.refs, from: platform.domainID, writable: true)
            try? platform.grantMapper.unmap(mapping)
            Issue.record("a read-only grant mapped writable")
        } catch {
            guard case .grant(.generalError, _, _, _) = error else { Issue.record("unexpected \(error)"); return }
        }
        let mapping = try platform.grantMapper.map(pages.refs, from: platform.domainID, writable: false)
        try platform.grantMapper.unmap(mapping)
    }

    @Test func anEventChannelLoopsBackToItself() async throws {
        let platform = try await LinuxPlatform.detect()
        let me = platform.domainID
        let channel = try platform.openEventChannel()
        let offered = try channel.allocateUnbound(remote: me)
        let bound = try channel.bindInterdomain(remote: me, remotePort: offered)
        // Xen conservatively marks a newly bound interdomain port pending (an event sent
        // to the unbound port before the bind would otherwise be lost), so the first event
        // is on `bound`; Linux masks it until unmasked.
        try waitReadable(channel.fileDescriptor)
        #expect(try channel.pending() == bound)
        try channel.unmask(bound)
        #expect(try channel.pending() == nil)

        try channel.notify(bound)
        try waitReadable(channel.fileDescriptor)
        #expect(try channel.pending() == offered)
        try channel.unmask(offered)

        try channel.notify(offered)
        try waitReadable(channel.fileDescriptor)
        #expect(try channel.pending() == bound)
        try channel.unmask(bound)
        #expect(try channel.pending() == nil)

        try channel.unbind(bound)
        try channel.unbind(offered)
        #expect(throws: PlatformError.self) { try channel.unbind(offered) }
        channel.close()
        channel.close()
        #expect(throws: PlatformError.self) { try channel.notify(offered) }
    }

    @Test func xenStoreReadsAndWritesOurHome() async throws {
        let platform = try await LinuxPlatform.detect()
        let client = try platform.connectXenStore()
        defer { client.close() }
        let home = "/local/domain/\(platform.domainID)"
        #expect(try LinuxPlatform.parseDomainID(try await client.read(home + "/domid")) == platform.domainID)
        try await client.write(home + "/data/xensplit-selftest", "ok")
        #expect(try await client.readString(home + "/data/xensplit-selftest") == "ok")
        try await client.rm(home + "/data/xensplit-selftest")
    }

    @Test func theXenbusDeviceReachesTheSameXenStore() async throws {
        // In dom0 the kernel's own xenstore connection is dom0's; in a domU it is the only way.
        let device = XenStoreEndpoint.device(XenbusDeviceTransport.defaultPath)
        let platform = try await LinuxPlatform.detect(xenStoreEndpoint: device)
        let viaDefault = try await LinuxPlatform.detect()
        #expect(platform.domainID == viaDefault.domainID)
        let client = try platform.connectXenStore()
        defer { client.close() }
        let key = "data/xensplit-xenbus-selftest"
        let watch = try await client.watch(key)
        var events = watch.makeAsyncIterator()
        #expect(await events.next()?.path == key)
        try await client.write(key, "via-xenbus")
        #expect(await events.next()?.path == key)
        #expect(try await client.readString(key) == "via-xenbus")
        let tx = try await client.transactionStart()
        try await client.write(key, "in-transaction", transaction: tx)
        try await client.transactionEnd(tx, commit: true)
        #expect(try await client.readString(key) == "in-transaction")
        try await client.rm(key)
    }

    /// Blocks until `fd` is readable. The bound only keeps a broken kernel from hanging
    /// the run; it is not a timing assertion.
    private func waitReadable(_ fd: Int32) throws {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        var n: Int32
        repeat { n = poll(&p, 1, 30_000) } while n < 0 && errno == EINTR
        #expect(n == 1, "event channel fd \(fd) not readable")
    }
}
