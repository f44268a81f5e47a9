import CRingReference
import Foundation
import Logging
import SharedMemory
import SystemCalls
import XenLocal
import XenPlatform
import XenRing
import XenTesting

/// `xensplit-bench platform`: the local hypervisor's grant map+unmap rate and its loop
/// thread's CPU time per map+unmap (alone and with 64 idle clients connected), its grant
/// copy rate, and the event-channel notify-to-wakeup rate between two processes against
/// Xen's C ring macros between two processes over plain eventfds.
struct PlatformBench {
    var runs = 5
    var quick = false

    func run() throws {
        var template = Array("/tmp/xensplit-bench-XXXXXX".utf8CString)
        guard let p = mkdtemp(&template) else { throw BenchFailure("mkdtemp failed") }
        let dir = String(cString: p)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = LocalHypervisor.Configuration(stateDirectory: dir)
        config.poolPages = 8192
        var logger = Logger(label: "xensplit.hypervisor")
        logger.logLevel = .warning
        let hv = try LocalHypervisor(configuration: config, logger: logger)
        // The hypervisor's loop thread is the one start() adds: its CPU time per request is
        // what the loop costs, and reads steadier than wall-clock rates on a busy machine.
        let beforeStart = ThreadCPU.threads()
        hv.start()
        defer { hv.stopAndWait() }
        var loopThreads = Set<Int32>()
        for _ in 0..<1000 where loopThreads.isEmpty {
            loopThreads = ThreadCPU.threads().subtracting(beforeStart)
            if loopThreads.isEmpty { usleep(1000) }
        }
        guard !loopThreads.isEmpty else { throw BenchFailure("the hypervisor's thread never appeared") }
        let dom0 = try LocalPlatform(stateDirectory: dir)
        let id = try dom0.createDomain(name: "bench")
        let guest = try LocalPlatform(stateDirectory: dir, domain: "bench")
        let pages = try guest.grantTable.share(pages: 32, with: 0, writable: true)

        let mapCount = quick ? 2_000 : 20_000
        /// Map+unmap pairs per second, and the hypervisor thread's CPU microseconds per pair.
        func mapUnmap(_ rate: inout BenchComparison, _ cpu: inout BenchComparison) throws {
            for _ in 0..<runs {
                let cpuBefore = ThreadCPU.sample(loopThreads)
                let start = now()
                for i in 0..<mapCount {
                    let m = try dom0.grantMapper.map([pages.refs[i % 32]], from: id, writable: true)
                    try dom0.grantMapper.unmap(m)
                }
                rate.ours.append(Double(mapCount) / (now() - start))
                cpu.ours.append(Double(ThreadCPU.elapsed(from: cpuBefore, to: ThreadCPU.sample(loopThreads))) / 1000 / Double(mapCount))
            }
        }
        var map = BenchComparison(name: "platform-grant-map-unmap", unit: "ops/s")
        var mapCPU = BenchComparison(name: "platform-hypervisor-cpu-per-map-unmap", unit: "us", lowerIsBetter: true)
        try mapUnmap(&map, &mapCPU)
        print(map.line)
        print(mapCPU.line)

        // The same with 64 idle clients connected, as when many backends and frontends are
        // joined: what the hypervisor's loop costs per wake-up as its poll set grows.
        let idle = try (0..<64).map { _ in try LocalPlatform(stateDirectory: dir) }
        var mapIdle = BenchComparison(name: "platform-grant-map-unmap-64-idle", unit: "ops/s")
        var mapIdleCPU = BenchComparison(name: "platform-hypervisor-cpu-per-map-unmap-64-idle", unit: "us", lowerIsBetter: true)
        try mapUnmap(&mapIdle, &mapIdleCPU)
        print(mapIdle.line)
        print(mapIdleCPU.line)
        withExtendedLifetime(idle) {}

        let buffer = try dom0.grantMapper.registerCopyBuffer(pages: 32)
        var segments = (0..<32).map { i in
            GrantCopySegment(source: .grant(domain: id, ref: pages.refs[i], offset: 0),
                             destination: .local(buffer: buffer.id, offset: i * pageSize), length: 4096)
        }
        let batches = quick ? 500 : 5_000
        var copy = BenchComparison(name: "platform-grant-copy-4k", unit: "copies/s")
        for _ in 0..<runs {
            let start = now()
            for _ in 0..<batches {
                try segments.withUnsafeMutableBufferPointer { try dom0.grantMapper.copy($0) }
            }
            copy.ours.append(Double(batches * 32) / (now() - start))
            guard segments.allSatisfy({ $0.status == .okay }) else { throw BenchFailure("grant copy failed: \(segments[0].status)") }
        }
        print(copy.line)

        // Notify-to-wakeup: a QD1 blkif ring exchange, where every request and every
        // response is one notification and one wakeup.
        let count: UInt64 = quick ? 10_000 : 50_000
        var wake = BenchComparison(name: "platform-evtchn-wakeup", unit: "wakeups/s")
        let ring = RingBench(runs: 1, quick: quick)
        try alternate(&wake, runs: runs, ours: {
            try eventChannelExchange(dir: dir, dom0: dom0, domid: id, count: count) * 2
        }, reference: {
            // Like for like: Xen's C ring macros between two unpinned processes over eventfds.
            try ring.crossProcessExchange(count: count) * 2
        })
        print(wake.line)
    }

    /// Runs a frontend in a second process (domain "bench") and the backend here, at QD1
    /// over local event channels; returns requests per second.
    func eventChannelExchange(dir: String, dom0: LocalPlatform, domid: DomainID, count: UInt64) throws -> Double {
        let peerPath = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .appendingPathComponent("xensplit-peer").path
        let peer = try ChildProcess(peerPath, ["ring-front", dir, "bench", "1", "\(count)", "1"], standardOutput: .pipe)
        var line: [UInt8] = []
        while !line.contains(10) {
            let chunk = try peer.readStandardOutput()
            if chunk.isEmpty { throw BenchFailure("xensplit-peer ended before it was ready") }
            line += chunk
        }
        let words = String(decoding: line, as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard words.count >= 3, words[0] == "READY", let port = EventPort(words[2]) else {
            throw BenchFailure("xensplit-peer said: \(String(decoding: line, as: UTF8.self))")
        }
        let refs = words[1].split(separator: ",").compactMap { GrantRef($0) }
        let mapping = try dom0.grantMapper.map(refs, from: domid, writable: true)
        let ring = try SharedRing(memory: mapping.view, pages: refs.count, entrySize: RingExchange.blkifEntrySize)
        let events = try dom0.openEventChannel()
        let local = try events.bindInterdomain(remote: domid, remotePort: port)
        let start = now()
        let done = try RingExchange.blkifBackend(ring: ring, count: count, signal: EventChannelSignal(channel: events, port: local))
        let elapsed = now() - start
        try dom0.grantMapper.unmap(mapping)
        events.close()
        guard done == count, peer.wait().succeeded else { throw BenchFailure("event-channel exchange ended early") }
        return Double(count) / elapsed
    }
}
