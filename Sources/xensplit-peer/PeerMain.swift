import Foundation
import SharedMemory
import XenLocal
import XenPlatform
import XenRing
import XenTesting

// A scripted second process for multi-process tests of the local hypervisor. Each mode
// prints one status line on stdout that the test reads, and exits 0 only on success.
//
//   ring-front STATE_DIR DOMAIN PAGES COUNT   share PAGES with dom0, offer a port, print
//                                             "READY ref,ref,... port", run a frontend
//   ring-back STATE_DIR DOMID REFS PORT COUNT map REFS of DOMID, bind PORT, run a backend
//   map-and-hold STATE_DIR DOMID REFS         map REFS writable, print "MAPPED", sleep
@main
struct Peer {
    static func main() {
        let a = CommandLine.arguments
        do {
            switch a.count > 1 ? a[1] : "" {
            case "ring-front" where a.count == 6:
                try ringFront(stateDir: a[2], domain: a[3], pages: Int(a[4])!, count: UInt64(a[5])!)
            case "ring-back" where a.count == 7:
                try ringBack(stateDir: a[2], domid: DomainID(a[3])!, refs: a[4].split(separator: ",").map { GrantRef($0)! },
                             port: EventPort(a[5])!, count: UInt64(a[6])!)
            case "map-and-hold" where a.count == 5:
                let platform = try LocalPlatform(stateDirectory: a[2])
                let m = try platform.grantMapper.map(a[4].split(separator: ",").map { GrantRef($0)! },
                                                     from: DomainID(a[3])!, writable: true)
                m.view.store(UInt32(0xFEED), at: 0)
                say("MAPPED")
                while true { sleep(60) }
            default:
                say("usage: xensplit-peer ring-front|ring-back|map-and-hold ...")
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

    static func ringFront(stateDir: String, domain: String, pages: Int, count: UInt64) throws {
        let platform = try LocalPlatform(stateDirectory: stateDir, domain: domain)
        let shared = try platform.grantTable.share(pages: pages, with: 0, writable: true)
        let ring = try SharedRing(memory: shared.view, pages: pages, entrySize: RingExchange.blkifEntrySize)
        _ = FrontRing(initializing: ring)
        let events = try platform.openEventChannel()
        let port = try events.allocateUnbound(remote: 0)
        say("READY \(shared.refs.map(String.init).joined(separator: ",")) \(port)")
        let done = try RingExchange.blkifFrontend(ring: ring, count: count, depth: 32,
                                                  signal: EventChannelSignal(channel: events, port: port))
        // The backend has unmapped when it exits; wait for that before ending access.
        while !(try endAccessUnlessBusy(platform, shared)) { usleep(10_000) }
        say("DONE \(done)")
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
}
