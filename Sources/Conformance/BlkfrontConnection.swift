import Blkif
import Glibc
import SharedMemory
import XenPlatform
import XenRing

/// One handshake's rings on the peer's side: the granted pages, the front ring's private
/// indices and the port of each queue, and the event channel they share.
final class BlkfrontConnection: @unchecked Sendable {
    // SAFETY (@unchecked): owned by one BlkfrontPeer, used by one task at a time.
    struct Queue {
        let pages: SharedPages
        var ring: FrontRing
        let port: EventPort
    }

    let platform: any Platform
    let handshake: BlkfrontPeer.Handshake
    let channel: any EventChannel
    var queues: [Queue] = []

    init(platform: any Platform, backend: DomainID, handshake: BlkfrontPeer.Handshake) throws {
        self.platform = platform
        self.handshake = handshake
        do { channel = try platform.openEventChannel() } catch { throw PeerError.platform("event channel: \(error)") }
        let pages = 1 << Int(min(handshake.ringPageOrder, 4))
        do {
            for _ in 0 ..< max(handshake.queues, 1) {
                let granted = try platform.grantTable.share(pages: pages, with: backend, writable: !handshake.readOnlyRing)
                let port: EventPort
                let shared: SharedRing
                do {
                    shared = try SharedRing(memory: granted.view, pages: pages, entrySize: handshake.abi.slotSize)
                    port = try channel.allocateUnbound(remote: backend)
                } catch {
                    try? platform.grantTable.endAccess(granted)
                    throw error
                }
                queues.append(Queue(pages: granted, ring: FrontRing(initializing: shared), port: port))
            }
        } catch {
            _ = release()
            throw PeerError.platform("granting rings: \(error)")
        }
    }

    /// Closes the channel and ends access to the ring pages; returns those the backend
    /// still maps.
    func release() -> [SharedPages] {
        channel.close()
        defer { queues = [] }
        return queues.map(\.pages).filter { (try? platform.grantTable.endAccess($0)) == nil }
    }

    var layout: BlkifLayout { handshake.abi.layout }

    /// Writes a request into the next free slot of `queue` without publishing it; `lie`
    /// may then rewrite the slot's bytes. Returns the slot's index.
    @discardableResult
    func produce(_ request: BlkifRequest, queue: Int = 0, lie: (SharedView, BlkifLayout) -> Void = { _, _ in }) throws -> RingIndex {
        guard !queues[queue].ring.isFull else { throw PeerError.unusable("ring \(queue) is full") }
        let index = queues[queue].ring.requestProducerPrivate
        let slot = queues[queue].ring.requestSlot(index)
        request.encode(into: slot, at: 0, abi: handshake.abi)
        lie(slot, layout)
        queues[queue].ring.requestProducerPrivate = index &+ 1
        return index
    }

    /// Publishes the produced requests and notifies where the backend asked
    /// (`RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`).
    func push(queue: Int = 0) throws {
        if queues[queue].ring.pushRequestsAndCheckNotify() { try notify(queue: queue) }
    }

    func notify(queue: Int = 0) throws {
        do { try channel.notify(queues[queue].port) } catch { throw PeerError.platform("notify: \(error)") }
    }

    /// Consumes responses on `queue` until every id of `ids` is answered; sleeps on the
    /// event channel in between (`RING_FINAL_CHECK_FOR_RESPONSES` first, so the backend
    /// knows to notify). A response to an id not asked for, or a second one, is an error.
    /// Returns the responses by id and whether any wake-up came from an event.
    func awaitResponses(_ ids: Set<UInt64>, queue: Int = 0, within: Duration = BlkfrontPeer.patience) throws -> (responses: [UInt64: BlkifResponse], woken: Bool) {
        var waiting = ids
        var found: [UInt64: BlkifResponse] = [:]
        var woken = false
        let deadline = ContinuousClock.now + within
        while true {
            let producer: RingIndex
            do { producer = try queues[queue].ring.checkedResponseProducer() } catch { throw PeerError.badResponse("\(error)") }
            while queues[queue].ring.responseConsumer != producer {
                let index = queues[queue].ring.responseConsumer
                let response: BlkifResponse
                do { response = try BlkifResponse.decode(from: queues[queue].ring.responseSlot(index), at: 0, abi: handshake.abi) } catch {
                    throw PeerError.badResponse("slot \(index): \(error)")
                }
                queues[queue].ring.responseConsumer = index &+ 1
                guard waiting.remove(response.id) != nil else {
                    throw PeerError.badResponse("id \(response.id) answers no request in flight (or a second time)")
                }
                found[response.id] = response
            }
            if waiting.isEmpty { return (found, woken) }
            let more: Bool
            do { more = try queues[queue].ring.finalCheckForResponses() } catch { throw PeerError.badResponse("\(error)") }
            if more { continue }
            let left = deadline - ContinuousClock.now
            guard left > .zero else {
                throw PeerError.noResponse(ids: waiting.sorted(), seconds: Int(within.components.seconds), backendState: "?")
            }
            var fd = pollfd(fd: channel.fileDescriptor, events: Int16(POLLIN), revents: 0)
            let ready = poll(&fd, 1, Int32(min(left.components.seconds * 1000 + 1, 1000)))
            if ready > 0 {
                woken = true
                do {
                    try channel.takePending(atMost: 64) { [channel] port throws(PlatformError) in try channel.unmask(port) }
                } catch {
                    throw PeerError.platform("event channel: \(error)")
                }
            } else if ready < 0, errno != EINTR {
                throw PeerError.platform("poll: errno \(errno)")
            }
        }
    }
}
