import Glibc
import SharedMemory
import XenPlatform
import XenRing

/// Exercises a platform against itself, one step at a time: share pages with our own
/// domain and map them back, grant-copy both ways, an event channel bound to itself, and a
/// ring over granted pages between two threads with notifications. `xensplit selftest`
/// runs it on the local hypervisor or on real Xen (in dom0), where it is the first thing
/// to try when nothing works.
public struct PlatformSelfTest {
    /// One step's outcome.
    public struct Step: Sendable {
        public let name: String
        public let passed: Bool
        public let detail: String
    }

    let platform: any Platform
    /// Requests in the ring step.
    public var ringRequests: UInt64 = 100_000

    public init(platform: any Platform) { self.platform = platform }

    /// Runs every step, reporting each as it finishes; returns all of them.
    public func run(report: (Step) -> Void = { _ in }) -> [Step] {
        var steps: [Step] = []
        func record(_ name: String, _ body: () throws -> String) {
            let step: Step
            do { step = Step(name: name, passed: true, detail: try body()) } catch {
                step = Step(name: name, passed: false, detail: "\(error)")
            }
            steps.append(step)
            report(step)
        }
        let me = platform.domainID
        record("share 4 pages with d\(me), map them, see writes both ways") {
            let pages = try platform.grantTable.share(pages: 4, with: me, writable: true)
            pages.view.store(UInt64(0x5E1F_7E57), at: 3 * pageSize + 8)
            let m = try platform.grantMapper.map(pages.refs, from: me, writable: true)
            defer { try? platform.grantMapper.unmap(m) }
            guard m.view.load(UInt64.self, at: 3 * pageSize + 8) == 0x5E1F_7E57 else { throw SelfTestFailure("mapping does not show the granter's write") }
            m.view.store(UInt32(0xFACE), at: 16)
            guard pages.view.load(UInt32.self, at: 16) == 0xFACE else { throw SelfTestFailure("granter does not see the mapper's write") }
            try platform.grantMapper.unmap(m)
            try platform.grantTable.endAccess(pages)
            return "refs \(pages.refs.map(String.init).joined(separator: ","))"
        }
        record("read-only grant refuses a writable map") {
            let pages = try platform.grantTable.share(pages: 1, with: me, writable: false)
            defer { try? platform.grantTable.endAccess(pages) }
            do {
                let m = try platform.grantMapper.map(pages.refs, from: me, writable: true)
                try? platform.grantMapper.unmap(m)
                throw SelfTestFailure("a writable map of a read-only grant succeeded")
            } catch let error as PlatformError {
                guard case let .grant(status, _, _, _) = error else { throw error }
                return "refused with \(status)"
            }
        }
        record("grant copy in and out, and a bad ref beside a good one") {
            let pages = try platform.grantTable.share(pages: 1, with: me, writable: true)
            defer { try? platform.grantTable.endAccess(pages) }
            let buffer = try platform.grantMapper.registerCopyBuffer(pages: 1)
            defer { try? platform.grantMapper.unregisterCopyBuffer(buffer) }
            pages.view.fill(0xA5, at: 0, length: 4096)
            var segments = [
                GrantCopySegment(source: .grant(domain: me, ref: pages.refs[0], offset: 0),
                                 destination: .local(buffer: buffer.id, offset: 0), length: 4096),
                GrantCopySegment(source: .local(buffer: buffer.id, offset: 0),
                                 destination: .grant(domain: me, ref: pages.refs[0], offset: 2048), length: 16),
                GrantCopySegment(source: .grant(domain: me, ref: 0x7FFF_FFF0, offset: 0),
                                 destination: .local(buffer: buffer.id, offset: 0), length: 8),
            ]
            try segments.withUnsafeMutableBufferPointer { try platform.grantMapper.copy($0) }
            guard segments[0].status == .okay, segments[1].status == .okay, segments[2].status != .okay else {
                throw SelfTestFailure("statuses \(segments.map(\.status))")
            }
            guard buffer.view.bytes(at: 0, length: 4096).allSatisfy({ $0 == 0xA5 }) else { throw SelfTestFailure("copied bytes differ") }
            return "statuses \(segments.map { "\($0.status)" }.joined(separator: ","))"
        }
        record("event channel bound to itself: notify, pending") {
            let a = try platform.openEventChannel()
            let b = try platform.openEventChannel()
            defer { a.close(); b.close() }
            let offered = try a.allocateUnbound(remote: me)
            let bound = try b.bindInterdomain(remote: me, remotePort: offered)
            // Xen marks a new binding pending; drain it first.
            while let p = try b.pending() { try b.unmask(p) }
            try b.notify(bound)
            guard waitPending(a) == offered else { throw SelfTestFailure("port \(offered) never became pending") }
            return "ports \(offered) <-> \(bound)"
        }
        record("ring over 2 granted pages, \(ringRequests) requests, two threads, event channels") {
            let pages = try platform.grantTable.share(pages: 2, with: me, writable: true)
            defer { try? platform.grantTable.endAccess(pages) }
            let ring = try SharedRing(memory: pages.view, pages: 2, entrySize: RingExchange.blkifEntrySize)
            _ = FrontRing(initializing: ring)
            let m = try platform.grantMapper.map(pages.refs, from: me, writable: true)
            defer { try? platform.grantMapper.unmap(m) }
            let backRing = try SharedRing(memory: m.view, pages: 2, entrySize: RingExchange.blkifEntrySize)
            let frontEvents = try platform.openEventChannel()
            let backEvents = try platform.openEventChannel()
            defer { frontEvents.close(); backEvents.close() }
            let frontPort = try frontEvents.allocateUnbound(remote: me)
            let backPort = try backEvents.bindInterdomain(remote: me, remotePort: frontPort)
            let count = ringRequests
            let (f, b) = runConcurrently({
                Result { () throws(RingExchange.Failure) -> UInt64 in
                    try RingExchange.blkifFrontend(ring: ring, count: count, depth: 32,
                                                   signal: EventChannelSignal(channel: frontEvents, port: frontPort))
                }
            }, {
                Result { () throws(RingExchange.Failure) -> UInt64 in
                    try RingExchange.blkifBackend(ring: backRing, count: count,
                                                  signal: EventChannelSignal(channel: backEvents, port: backPort))
                }
            })
            guard try f.get() == count, try b.get() == count else { throw SelfTestFailure("requests lost") }
            return "\(count) requests, every id answered once"
        }
        return steps
    }

    func waitPending(_ channel: any EventChannel) -> EventPort? {
        for _ in 0..<500 {
            if let p = try? channel.pending() {
                try? channel.unmask(p)
                return p
            }
            var fds = pollfd(fd: channel.fileDescriptor, events: Int16(POLLIN), revents: 0)
            _ = poll(&fds, 1, 10)
        }
        return nil
    }
}

struct SelfTestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
