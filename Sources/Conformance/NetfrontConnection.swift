import Glibc
import Netif
import SharedMemory
import XenPlatform
import XenRing

/// One handshake's rings on the scripted netfront's side: per queue a tx and an rx ring
/// with their ports (one port for both unless split), the optional control ring, and the
/// event channel all the ports live on.
final class NetfrontConnection: @unchecked Sendable {
    // SAFETY (@unchecked): owned by one NetfrontPeer, used by one task at a time.
    struct Queue {
        let txPages: SharedPages
        let rxPages: SharedPages
        var tx: FrontRing
        var rx: FrontRing
        let txPort: EventPort
        let rxPort: EventPort
        /// Posted rx buffers by id: the data page each was posted on.
        var posted: [UInt16: Int] = [:]
    }

    struct Control {
        let pages: SharedPages
        var ring: FrontRing
        let port: EventPort
    }

    let platform: any Platform
    let handshake: NetfrontPeer.Handshake
    let channel: any EventChannel
    var queues: [Queue] = []
    var control: Control?

    init(platform: any Platform, backend: DomainID, handshake: NetfrontPeer.Handshake) throws {
        self.platform = platform
        self.handshake = handshake
        do { channel = try platform.openEventChannel() } catch { throw PeerError.platform("event channel: \(error)") }
        var granted: [SharedPages] = []
        func ring(_ entrySize: Int) throws -> (SharedPages, FrontRing) {
            let pages = try platform.grantTable.share(pages: 1, with: backend, writable: true)
            granted.append(pages)
            return (pages, FrontRing(initializing: try SharedRing(memory: pages.view, pages: 1, entrySize: entrySize)))
        }
        do {
            for _ in 0 ..< max(handshake.queues, 1) {
                let (txPages, tx) = try ring(NetifLayout.txSlotSize)
                let (rxPages, rx) = try ring(NetifLayout.rxSlotSize)
                let txPort = try channel.allocateUnbound(remote: backend)
                let rxPort = handshake.splitEventChannels ? try channel.allocateUnbound(remote: backend) : txPort
                queues.append(Queue(txPages: txPages, rxPages: rxPages, tx: tx, rx: rx, txPort: txPort, rxPort: rxPort))
            }
            if handshake.controlRing {
                let (pages, ring) = try ring(NetifLayout.ctrlSlotSize)
                control = Control(pages: pages, ring: ring, port: try channel.allocateUnbound(remote: backend))
            }
        } catch {
            channel.close()
            for pages in granted { try? platform.grantTable.endAccess(pages) }
            throw PeerError.platform("granting rings: \(error)")
        }
    }

    /// Closes the channel and ends access to the ring pages; returns those the backend
    /// still maps.
    func release() -> [SharedPages] {
        channel.close()
        let pages = queues.flatMap { [$0.txPages, $0.rxPages] } + (control.map { [$0.pages] } ?? [])
        queues = []
        control = nil
        return pages.filter { (try? platform.grantTable.endAccess($0)) == nil }
    }

    /// The connection keys of these rings.
    var keys: NetifConnectionKeys {
        NetifConnectionKeys(queues: queues.map {
            .init(txRingRef: $0.txPages.refs[0], rxRingRef: $0.rxPages.refs[0],
                  eventChannels: handshake.splitEventChannels ? .split(tx: $0.txPort, rx: $0.rxPort) : .shared($0.txPort))
        }, control: control.map { .init(ringRef: $0.pages.refs[0], eventChannel: $0.port) })
    }

    func notify(_ port: EventPort) throws {
        do { try channel.notify(port) } catch { throw PeerError.platform("notify: \(error)") }
    }

    /// Sleeps on the event channel for up to `left` (at most 100 ms), taking what is
    /// pending; true when an event came.
    @discardableResult
    func sleep(_ left: Duration) throws -> Bool {
        var fd = pollfd(fd: channel.fileDescriptor, events: Int16(POLLIN), revents: 0)
        let ms = max(1, min(Int32(left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000), 100))
        let ready = poll(&fd, 1, ms)
        if ready > 0 {
            do {
                try channel.takePending(atMost: 64) { [channel] port throws(PlatformError) in try channel.unmask(port) }
            } catch {
                throw PeerError.platform("event channel: \(error)")
            }
            return true
        }
        if ready < 0, errno != EINTR { throw PeerError.platform("poll: errno \(errno)") }
        return false
    }
}
