import Logging
import Netif
import SharedMemory
import XenBus
import XenDevice
import XenPlatform
import XenRing

/// Everything one handshake set up: the tx and rx ring pages, the tx and rx buffer pages
/// granted to the backend, one event channel or (with `feature-split-event-channels`) two,
/// and the I/O thread that serves them. Made by the initialise hook, started by connect,
/// stopped and released by disconnect; a backend restart makes a new one.
final class NetFrontendConnection: @unchecked Sendable {
    // SAFETY (@unchecked): the creator's until start(), then the I/O thread's (through
    // the datapath) until stop() joined it.
    let grants: any GrantTable
    let eventChannel: any EventChannel
    let link: NetifBackendFeatures
    let pageSets: [SharedPages]
    let connectionKeys: NetifConnectionKeys
    let datapath: NetFrontendDatapath
    let thread: FrontendIOThread<NetFrontendRingService>

    /// Grants the rings (read-write) and buffers (tx read-only: the backend only reads
    /// them; rx read-write: it copies packets in) to `backendDomain`, allocates the ports.
    /// On failure everything already made is undone.
    init(platform: any Platform, backendDomain: DomainID, backend: NetifBackendFeatures, txBuffers: Int,
         ioContext: FrontendIOContext, statistics: NetFrontendStatistics, logger: Logger,
         onViolation: @escaping @Sendable (NetFrontendError) -> Void) throws(NetFrontendError) {
        grants = platform.grantTable
        link = backend
        let channel: any EventChannel
        do { channel = try platform.openEventChannel() } catch { throw .platform(error) }
        eventChannel = channel
        var made: [SharedPages] = []
        do throws(NetFrontendError) {
            func share(_ pages: Int, writable: Bool) throws(NetFrontendError) -> SharedPages {
                do {
                    let shared = try platform.grantTable.share(pages: pages, with: backendDomain, writable: writable)
                    made.append(shared)
                    return shared
                } catch {
                    throw .platform(error)
                }
            }
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
            let channels: NetifConnectionKeys.EventChannels
            do {
                txPort = try channel.allocateUnbound(remote: backendDomain)
                if backend.splitEventChannels {
                    rxPort = try channel.allocateUnbound(remote: backendDomain)
                    channels = .split(tx: txPort, rx: rxPort)
                } else {
                    rxPort = txPort
                    channels = .shared(txPort)
                }
            } catch {
                throw .platform(error)
            }
            connectionKeys = NetifConnectionKeys(queues: [NetifConnectionKeys.Queue(
                txRingRef: txRingPage.refs[0], rxRingRef: rxRingPage.refs[0], eventChannels: channels)])
            datapath = NetFrontendDatapath(txRing: txRing, rxRing: rxRing, txBuffers: tx, rxBuffers: rx, backend: backend,
                                           eventChannel: channel, txPort: txPort, rxPort: rxPort,
                                           statistics: statistics, onViolation: onViolation)
        } catch {
            for pages in made { try? platform.grantTable.endAccess(pages) }
            channel.close()
            throw error
        }
        pageSets = made
        thread = FrontendIOThread(name: "netfront", context: ioContext, eventChannel: channel, logger: logger)
    }

    /// The keys published with Initialised: ring references, event channels and the
    /// frontend's features (`io/netif.h`, "Frontend XenBus Nodes").
    var keys: XenbusKeys {
        var keys = XenbusKeys()
        var features = NetFrontendLink.frontendFeatures.xenstoreEntries
        // `trusted` is the toolstack's word to the frontend, not ours to write (or to
        // remove with our keys on disconnect).
        features[NetifFrontendFeatures.Key.trusted] = nil
        let entries = connectionKeys.xenstoreEntries.merging(features) { a, _ in a }
        for (key, value) in entries.sorted(by: { $0.key < $1.key }) { keys.set(key, value) }
        return keys
    }

    /// Starts the I/O thread.
    func start(core: NetFrontendCore) throws(NetFrontendError) {
        do { try thread.start(NetFrontendRingService(datapath: datapath, core: core)) } catch { throw .platform(error) }
    }

    /// Stops and joins the I/O thread (if it ran).
    func stop() { _ = thread.stop() }

    /// Closes the ports; the page sets go back through the frontend's grant ledger.
    func release() {
        eventChannel.close()
    }
}
