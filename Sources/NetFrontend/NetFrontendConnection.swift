import Logging
import Netif
import SharedMemory
import XenBus
import XenDevice
import XenPlatform
import XenRing

/// Everything one handshake set up: per queue pair the tx and rx ring pages, the tx and rx
/// buffer pages granted to the backend and one port or (with
/// `feature-split-event-channels`) two; the I/O threads that serve the pairs, each with an
/// event channel holding its pairs' ports. Made by the initialise hook, started by connect,
/// stopped and released by disconnect; a backend restart makes a new one.
///
/// Pairs are dealt to threads round robin (pair i to thread i mod T), T being the smaller
/// of the pair count and the frontend's I/O contexts (one per core at most): a thread per
/// pair up to a thread per core spreads the work over the cores the way the kernel spreads
/// flows over the TAP queues; more threads than cores would only take turns on them, and a
/// thread serves several pairs in one pass as cheaply as one.
final class NetFrontendConnection: @unchecked Sendable {
    // SAFETY (@unchecked): the creator's until start(), then the I/O threads' (through
    // the datapaths) until stop() joined them.
    let grants: any GrantTable
    /// One per I/O thread.
    let eventChannels: [any EventChannel]
    let link: NetFrontendLink
    let pageSets: [SharedPages]
    let connectionKeys: NetifConnectionKeys
    /// The queue pairs, pair 0 first.
    let datapaths: [NetFrontendDatapath]
    let threads: [FrontendIOThread<NetFrontendRingService>]
    /// The context of each thread.
    let contexts: [FrontendIOContext]

    /// Grants each pair's rings (read-write) and buffers (tx read-only: the backend only
    /// reads them; rx read-write: it copies packets in) to `backendDomain`, allocates the
    /// ports, on `contexts.count` threads at most. On failure everything already made is undone.
    init(platform: any Platform, backendDomain: DomainID, link: NetFrontendLink, txBuffers: Int,
         contexts: [FrontendIOContext], statistics: [NetFrontendStatistics], logger: Logger,
         onViolation: @escaping @Sendable (NetFrontendError) -> Void) throws(NetFrontendError) {
        precondition(link.queues >= 1 && link.queues <= statistics.count && !contexts.isEmpty,
                     "netfront: \(link.queues) queue pairs for \(statistics.count) counters and \(contexts.count) contexts")
        grants = platform.grantTable
        self.link = link
        let threadCount = min(link.queues, contexts.count)
        var channels: [any EventChannel] = []
        var made: [SharedPages] = []
        var queues: [NetifConnectionKeys.Queue] = []
        var datapaths: [NetFrontendDatapath] = []
        do throws(NetFrontendError) {
            for _ in 0 ..< threadCount {
                do { channels.append(try platform.openEventChannel()) } catch { throw .platform(error) }
            }
            func share(_ pages: Int, writable: Bool) throws(NetFrontendError) -> SharedPages {
                do {
                    let shared = try platform.grantTable.share(pages: pages, with: backendDomain, writable: writable)
                    made.append(shared)
                    return shared
                } catch {
                    throw .platform(error)
                }
            }
            for index in 0 ..< link.queues {
                let channel = channels[index % threadCount]
                let txRingPage = try share(1, writable: true)
                let rxRingPage = try share(1, writable: true)
                let txRing: FrontRing
                let rxRing: FrontRing
                do {
                    txRing = FrontRing(initializing: try SharedRing(memory: txRingPage.view, pages: 1, entrySize: NetifLayout.txSlotSize))
                    rxRing = FrontRing(initializing: try SharedRing(memory: rxRingPage.view, pages: 1, entrySize: NetifLayout.rxSlotSize))
                } catch {
                    throw .platform(.invalidArgument("ring layout: \(error)"))
                }
                let tx = try share(txBuffers, writable: false)
                let rx = try share(Int(rxRing.size), writable: true)
                let txPort: EventPort
                let rxPort: EventPort
                let ports: NetifConnectionKeys.EventChannels
                do {
                    txPort = try channel.allocateUnbound(remote: backendDomain)
                    if link.backend.splitEventChannels {
                        rxPort = try channel.allocateUnbound(remote: backendDomain)
                        ports = .split(tx: txPort, rx: rxPort)
                    } else {
                        rxPort = txPort
                        ports = .shared(txPort)
                    }
                } catch {
                    throw .platform(error)
                }
                queues.append(NetifConnectionKeys.Queue(txRingRef: txRingPage.refs[0], rxRingRef: rxRingPage.refs[0],
                                                        eventChannels: ports))
                datapaths.append(NetFrontendDatapath(queue: index, txRing: txRing, rxRing: rxRing, txBuffers: tx, rxBuffers: rx,
                                                     backend: link.backend, eventChannel: channel, txPort: txPort,
                                                     rxPort: rxPort, statistics: statistics[index], onViolation: onViolation))
            }
        } catch {
            for pages in made { try? platform.grantTable.endAccess(pages) }
            for channel in channels { channel.close() }
            throw error
        }
        eventChannels = channels
        pageSets = made
        connectionKeys = NetifConnectionKeys(queues: queues)
        self.datapaths = datapaths
        self.contexts = Array(contexts.prefix(threadCount))
        threads = (0 ..< threadCount).map { index in
            FrontendIOThread(name: threadCount == 1 ? "netfront" : "netfront\(index)", context: contexts[index],
                             eventChannel: channels[index], logger: logger)
        }
    }

    /// The context of the thread serving queue pair `queue`.
    func context(ofQueue queue: Int) -> FrontendIOContext { contexts[queue % contexts.count] }

    /// The keys published with Initialised: ring references and event channels (under
    /// `queue-N/` for several pairs, with `multi-queue-num-queues`) and the frontend's
    /// features (`io/netif.h`, "Frontend XenBus Nodes" and "Multiple transmit and receive
    /// queues").
    var keys: XenbusKeys {
        var keys = XenbusKeys()
        var features = NetFrontendLink.frontendFeatures
        // One pair keeps the keys of a frontend that knows nothing of multi-queue, as
        // io/netif.h asks; the count is written only for more.
        if link.queues > 1 { features.queueCount = UInt32(link.queues) }
        var entries = features.xenstoreEntries
        // `trusted` is the toolstack's word to the frontend, not ours to write (or to
        // remove with our keys on disconnect).
        entries[NetifFrontendFeatures.Key.trusted] = nil
        entries.merge(connectionKeys.xenstoreEntries) { a, _ in a }
        // Each queue's directory first: removing it on disconnect takes its keys along.
        for directory in connectionKeys.queueDirectories { keys.set(directory, "") }
        for (key, value) in entries.sorted(by: { $0.key < $1.key }) { keys.set(key, value) }
        return keys
    }

    /// Starts the I/O threads; if one cannot start, those started are stopped again.
    func start() throws(NetFrontendError) {
        for (index, thread) in threads.enumerated() {
            let service = NetFrontendRingService(datapaths: datapaths.filter { $0.queue % threads.count == index })
            do { try thread.start(service) } catch {
                stop()
                throw .platform(error)
            }
        }
    }

    /// Stops and joins the I/O threads (those that ran).
    func stop() {
        for thread in threads { _ = thread.stop() }
    }

    /// Closes the ports; the page sets go back through the frontend's grant ledger.
    func release() {
        for channel in eventChannels { channel.close() }
    }
}
