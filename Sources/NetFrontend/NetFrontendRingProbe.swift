import Logging
import Netif
import XenDevice
import XenPlatform

/// One queue pair of a connection driven by hand, with no xenbus, TAP device or I/O
/// thread: the connection is set up as the initialise hook sets it up, and frames are
/// sent, rx buffers posted and responses taken through the datapath's own code. The way
/// in for the fuzz target that plays a lying backend (FuzzTargets' NetfrontFuzz); not for
/// carrying traffic.
public final class NetFrontendRingProbe: @unchecked Sendable {
    // SAFETY (@unchecked): one thread drives it.
    let connection: NetFrontendConnection
    let datapath: NetFrontendDatapath
    let statistics = NetFrontendStatistics()
    let platform: any Platform
    let context: FrontendIOContext
    private var closed = false

    /// Grants one pair's rings and buffers (`txBuffers` pages) to `backendDomain`.
    public init(platform: any Platform, backendDomain: DomainID, backend: NetifBackendFeatures, txBuffers: Int,
                logger: Logger) throws(NetFrontendError) {
        self.platform = platform
        do { context = try FrontendIOContext() } catch { throw .platform(error) }
        connection = try NetFrontendConnection(
            platform: platform, backendDomain: backendDomain,
            link: NetFrontendLink(backend: backend, vif: NetifVifSettings(mac: NetifMACAddress(0, 0x16, 0x3e, 0, 0, 1)), queues: 1), txBuffers: txBuffers,
            contexts: [context], statistics: [statistics], logger: logger, onViolation: { _ in })
        datapath = connection.datapaths[0]
    }

    /// The ring references and ports, as the frontend publishes them.
    public var keys: NetifConnectionKeys.Queue { connection.connectionKeys.queues[0] }

    /// The pair's event channel.
    public var eventChannel: any EventChannel { connection.eventChannels[0] }

    /// Puts one TAP read (virtio-net header, then the frame) on the tx ring if it has room
    /// for any frame; false when it had none.
    public func send(_ packet: UnsafeMutableRawBufferPointer) -> Bool {
        guard datapath.hasTxRoom else { return false }
        datapath.send(packet)
        return true
    }

    /// Takes the tx responses. True if any.
    @discardableResult public func consumeTx() -> Bool { datapath.consumeTx() }
    /// Posts an rx buffer in every free slot. True if any.
    @discardableResult public func postRx() -> Bool { datapath.postRx() }
    /// Takes the rx responses, writing each whole packet to `tapFD` (-1: dropped).
    @discardableResult public func consumeRx(tapFD: Int32) -> Bool { datapath.consumeRx(tapFD: tapFD) }
    /// Publishes both rings' requests.
    public func push() { datapath.push() }
    /// RING_FINAL_CHECK_FOR_RESPONSES on both rings.
    public func finalCheck() -> Bool { datapath.finalCheck() }

    /// The backend's first lie, which stopped the rings.
    public var broken: NetFrontendError? { datapath.broken }
    /// Tx pages waiting for their response, and how many there are.
    public var txInFlight: Int { datapath.txInFlight }
    public var txPages: Int { datapath.txPages.count }
    /// The counters so far.
    public var counters: NetifCounters { statistics.snapshot }

    /// Closes the ports and ends access to every page set; returns how many could not end
    /// yet (the backend still maps them).
    @discardableResult
    public func close() -> Int {
        guard !closed else { return 0 }
        closed = true
        connection.stop()
        connection.release()
        context.close()
        var held = 0
        for pages in connection.pageSets {
            do { try platform.grantTable.endAccess(pages) } catch { held += 1 }
        }
        return held
    }
}
