import Foundation
import SharedMemory
import XenLocal
import XenPlatform
import XenRing
import XenTesting
import XenStore
import Synchronization

// A scripted second process for multi-process tests of the local hypervisor. Each mode
// prints one status line on stdout that the test reads, and exits 0 only on success.
//
//   ring-front STATE_DIR DOMAIN PAGES COUNT [DEPTH]
//                                             share PAGES with dom0, offer a port, print
//                                             "READY ref,ref,... port", run a frontend
//   ring-back STATE_DIR DOMID REFS PORT COUNT map REFS of DOMID, bind PORT, run a backend
//   map-and-hold STATE_DIR DOMID REFS         map REFS writable, print "MAPPED", sleep
//   bind-and-echo STATE_DIR DOMID REFS PORT   map REFS writable, bind PORT of DOMID, print
//                                             "BOUND port", then on every event copy the
//                                             u32 at byte 0 of the first page to byte 4
//                                             and notify, when they differ (until killed)
//   xenstore-ring STATE_DIR DOMAIN            share a xenstore ring page with dom0, offer
//                                             a port, print "READY ref port", then use
//                                             xenstore over the ring and print "OK ..."
@main
struct Peer {
    static func main() {
        let a = CommandLine.arguments
        do {
            switch a.count > 1 ? a[1] : "" {
            case "ring-front" where a.count == 6 || a.count == 7:
                try ringFront(stateDir: a[2], domain: a[3], pages: Int(a[4])!, count: UInt64(a[5])!,
                              depth: a.count == 7 ? UInt32(a[6])! : 32)
            case "ring-back" where a.count == 7:
                try ringBack(stateDir: a[2], domid: DomainID(a[3])!, refs: a[4].split(separator: ",").map { GrantRef($0)! },
                             port: EventPort(a[5])!, count: UInt64(a[6])!)
            case "xenstore-ring" where a.count == 4:
                try xenstoreRing(stateDir: a[2], domain: a[3])
            case "map-and-hold" where a.count == 5:
                let platform = try LocalPlatform(stateDirectory: a[2])
                let m = try platform.grantMapper.map(a[4].split(separator: ",").map { GrantRef($0)! },
                                                     from: DomainID(a[3])!, writable: true)
                m.view.store(UInt32(0xFEED), at: 0)
                say("MAPPED")
                while true { sleep(60) }
            case "bind-and-echo" where a.count == 6:
                try bindAndEcho(stateDir: a[2], domid: DomainID(a[3])!, refs: a[4].split(separator: ",").map { GrantRef($0)! },
                                port: EventPort(a[5])!)
            default:
                say("usage: xensplit-peer ring-front|ring-back|map-and-hold|bind-and-echo ...")
                exit(2)
            }
        } catch {
            say("ERROR \(error)")
            exit(1)
        }
    }

    /// One unbuffered line, so the test sees it before the process goes on.
    static func say(_ line: String) {
        var text = line + "\n"
        text.withUTF8 { _ = write(1, $0.baseAddress, $0.count) }
    }

    static func ringFront(stateDir: String, domain: String, pages: Int, count: UInt64, depth: UInt32) throws {
        let platform = try LocalPlatform(stateDirectory: stateDir, domain: domain)
        let shared = try platform.grantTable.share(pages: pages, with: 0, writable: true)
        let ring = try SharedRing(memory: shared.view, pages: pages, entrySize: RingExchange.blkifEntrySize)
        _ = FrontRing(initializing: ring)
        let events = try platform.openEventChannel()
        let port = try events.allocateUnbound(remote: 0)
        say("READY \(shared.refs.map(String.init).joined(separator: ",")) \(port)")
        let done = try RingExchange.blkifFrontend(ring: ring, count: count, depth: depth,
                                                  signal: EventChannelSignal(channel: events, port: port))
        // The backend has unmapped when it exits; wait for that before ending access.
        while !(try endAccessUnlessBusy(platform, shared)) { usleep(10_000) }
        say("DONE \(done)")
    }

    static func xenstoreRing(stateDir: String, domain: String) throws {
        let platform = try LocalPlatform(stateDirectory: stateDir, domain: domain)
        let page = try platform.grantTable.share(pages: 1, with: 0, writable: true)
        let events = try platform.openEventChannel()
        let port = try events.allocateUnbound(remote: 0)
        say("READY \(page.refs[0]) \(port)")
        let signal = EventChannelSignal(channel: events, port: port)
        let transport = XenStoreRingTransport(
            interface: try XenstoreRingInterface(memory: page.view), memoryOwner: page.region,
            notify: { signal.notify() }, wait: { signal.wait(); return true })
        let client = try XenStoreClient(transport: transport)
        let done = DispatchSemaphore(value: 0)
        let result = Mutex<String>("")
        Task {
            do {
                // Relative paths resolve to this domain's home, as for any guest.
                try await client.write("data/ring", "over-the-ring")
                let value = try await client.readString("data/ring")
                let listing = try await client.directory("data")
                let watch = try await client.watch("data/ring")
                var it = watch.makeAsyncIterator()
                _ = await it.next()   // the event a new watch fires once
                try await client.write("data/ring", "changed")
                let event = await it.next()
                // A big value crosses the 1 KiB ring in several pieces each way.
                let big = String(repeating: "x", count: 2000)
                try await client.write("data/big", big)
                let bigBack = try await client.readString("data/big")
                result.withLock { $0 = "OK \(value) \(listing.sorted().joined(separator: ",")) \(event?.path ?? "none") \(bigBack == big)" }
            } catch {
                result.withLock { $0 = "ERROR \(error)" }
            }
            done.signal()
        }
        done.wait()
        say(result.withLock { $0 })
        // The client's reader sleeps in the event channel; nothing will wake it, so leave
        // without running its deinit.
        exit(0)
    }

    /// Ends access; false while the grantee still has a page mapped.
    static func endAccessUnlessBusy(_ platform: LocalPlatform, _ pages: SharedPages) throws(PlatformError) -> Bool {
        do {
            try platform.grantTable.endAccess(pages)
            return true
        } catch {
            if case .grantBusy = error { return false }
            throw error
        }
    }

    static func ringBack(stateDir: String, domid: DomainID, refs: [GrantRef], port: EventPort, count: UInt64) throws {
        let platform = try LocalPlatform(stateDirectory: stateDir)
        let mapping = try platform.grantMapper.map(refs, from: domid, writable: true)
        let ring = try SharedRing(memory: mapping.view, pages: refs.count, entrySize: RingExchange.blkifEntrySize)
        let events = try platform.openEventChannel()
        let local = try events.bindInterdomain(remote: domid, remotePort: port)
        let done = try RingExchange.blkifBackend(ring: ring, count: count,
                                                 signal: EventChannelSignal(channel: events, port: local))
        try platform.grantMapper.unmap(mapping)
        try events.unbind(local)
        say("DONE \(done)")
    }

    /// A stand-in for a backend process that a test kills and replaces: it holds a
    /// mapping and a bound port, and answers what the guest writes. The first look comes
    /// from the binding itself (a new binding starts pending), so a value the guest wrote
    /// while no process was bound is answered without a new notification.
    static func bindAndEcho(stateDir: String, domid: DomainID, refs: [GrantRef], port: EventPort) throws {
        let platform = try LocalPlatform(stateDirectory: stateDir)
        let mapping = try platform.grantMapper.map(refs, from: domid, writable: true)
        let events = try platform.openEventChannel()
        let local = try events.bindInterdomain(remote: domid, remotePort: port)
        say("BOUND \(local)")
        let signal = EventChannelSignal(channel: events, port: local)
        while true {
            signal.wait()
            // The guest's page: read each value once.
            let asked = mapping.view.load(UInt32.self, at: 0)
            if asked != mapping.view.load(UInt32.self, at: 4) {
                mapping.view.store(asked, at: 4)
                signal.notify()
            }
        }
    }
}
