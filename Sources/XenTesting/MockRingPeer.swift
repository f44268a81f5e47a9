import Glibc
import SharedMemory
import XenPlatform
import XenRing

/// Scripted ends of an io/ring.h ring over a platform's grants and event channels, for
/// device unit tests (after rust-vmm's `MockSplitQueue`): a device under test plays one
/// role, a ``Frontend`` or ``Backend`` here plays the other, pushing raw entry bytes and
/// reading what comes back. Each end is set up the way a real driver does it, so the
/// device sees exactly what it would see from a guest or a backend domain.
///
/// The ends are classes used by one thread at a time; hand one to another thread only
/// through something that orders memory (a thread start, a semaphore).
public enum MockRingPeer {
    /// What a frontend publishes in xenstore for its backend: the ring's grant refs
    /// (`ring-ref` / `ring-refN`) and its unbound port (`event-channel`).
    public struct Connection: Sendable, Equatable {
        /// The frontend's domain.
        public var frontendDomain: DomainID
        /// One grant ref per ring page, in order.
        public var refs: [GrantRef]
        /// The port the frontend allocated for the backend to bind.
        public var port: EventPort

        public init(frontendDomain: DomainID, refs: [GrantRef], port: EventPort) {
            self.frontendDomain = frontendDomain
            self.refs = refs
            self.port = port
        }
    }

    /// Both ends at once: a frontend on `frontend`'s platform and a backend on `backend`'s,
    /// connected over `pages` ring pages of `entrySize`-byte slots.
    public static func connect(frontend: any Platform, backend: any Platform, pages: Int = 1,
                               entrySize: Int) throws(XenTestingError) -> (Frontend, Backend) {
        let f = try Frontend(platform: frontend, backendDomain: backend.domainID, pages: pages, entrySize: entrySize)
        let b = try Backend(platform: backend, connection: f.connection, entrySize: entrySize)
        return (f, b)
    }

    /// The frontend's end: shares the ring pages, initialises the ring
    /// (io/ring.h: SHARED_RING_INIT, FRONT_RING_INIT) and offers an unbound port.
    public final class Frontend: @unchecked Sendable {
        // SAFETY (@unchecked): used by one thread at a time, as documented on MockRingPeer.
        /// The platform it runs on.
        public let platform: any Platform
        /// The backend's domain.
        public let backendDomain: DomainID
        /// The granted ring pages.
        public let pages: SharedPages
        /// Its event-channel handle; wait on its `fileDescriptor`.
        public let eventChannel: any EventChannel
        /// Its end of the event channel.
        public let port: EventPort
        /// The ring's private indices; tests may move them to misbehave on purpose.
        public var ring: FrontRing
        private var closed = false

        /// Shares `pages` pages with `backendDomain`, lays a ring of `entrySize`-byte
        /// slots over them and allocates a port for the backend.
        public init(platform: any Platform, backendDomain: DomainID, pages count: Int = 1,
                    entrySize: Int) throws(XenTestingError) {
            self.platform = platform
            self.backendDomain = backendDomain
            let pages: SharedPages
            do { pages = try platform.grantTable.share(pages: count, with: backendDomain, writable: true) } catch {
                throw .platform(error)
            }
            let shared: SharedRing
            do { shared = try SharedRing(memory: pages.view, pages: count, entrySize: entrySize) } catch {
                try? platform.grantTable.endAccess(pages)
                throw .ring(error)
            }
            let channel: any EventChannel
            let port: EventPort
            do throws(PlatformError) {
                channel = try platform.openEventChannel()
                do { port = try channel.allocateUnbound(remote: backendDomain) } catch {
                    channel.close()
                    throw error
                }
            } catch {
                try? platform.grantTable.endAccess(pages)
                throw .platform(error)
            }
            self.pages = pages
            self.eventChannel = channel
            self.port = port
            self.ring = FrontRing(initializing: shared)
        }

        /// What the backend needs to connect.
        public var connection: Connection {
            Connection(frontendDomain: platform.domainID, refs: pages.refs, port: port)
        }

        /// The shared page's header and slots, for tests that scribble on them.
        public var shared: SharedRing { ring.shared }

        /// Writes one request into the next free slot, zero-filling the rest of the slot;
        /// it is seen once pushed.
        public func produceRequest(_ bytes: [UInt8]) throws(XenTestingError) {
            guard bytes.count <= ring.shared.entrySize else {
                throw .entryTooLarge(bytes: bytes.count, entrySize: ring.shared.entrySize)
            }
            try produceRequest { slot in
                slot.fill(0, at: 0, length: slot.count)
                bytes.withUnsafeBytes { slot.copyBytes(from: $0, to: 0) }
            }
        }

        /// Lets `write` fill the next free slot in place (no allocation); seen once pushed.
        public func produceRequest(_ write: (SharedView) -> Void) throws(XenTestingError) {
            guard !ring.isFull else { throw .ringFull(size: ring.size) }
            write(ring.requestSlot(ring.requestProducerPrivate))
            ring.requestProducerPrivate &+= 1
        }

        /// Publishes the produced requests and notifies the backend if it asked
        /// (io/ring.h: RING_PUSH_REQUESTS_AND_CHECK_NOTIFY). Returns whether it notified.
        @discardableResult
        public func pushRequestsAndNotify() throws(XenTestingError) -> Bool {
            guard ring.pushRequestsAndCheckNotify() else { return false }
            do { try eventChannel.notify(port) } catch { throw .platform(error) }
            return true
        }

        /// Hands each published response's slot to `body`, oldest first, after checking
        /// the backend's rsp_prod once. Returns how many were consumed.
        @discardableResult
        public func consumeResponses(_ body: (SharedView) -> Void) throws(XenTestingError) -> Int {
            let producer: RingIndex
            do { producer = try ring.checkedResponseProducer() } catch { throw .ring(error) }
            var taken = 0
            while ring.responseConsumer != producer {
                body(ring.responseSlot(ring.responseConsumer))
                ring.responseConsumer &+= 1
                taken += 1
            }
            return taken
        }

        /// Every published response, as copies of whole slots.
        public func takeResponses() throws(XenTestingError) -> [[UInt8]] {
            var out: [[UInt8]] = []
            try consumeResponses { out.append($0.bytes()) }
            return out
        }

        /// io/ring.h: RING_FINAL_CHECK_FOR_RESPONSES: true if responses wait; otherwise
        /// asks to be notified of the next.
        public func finalCheckForResponses() throws(XenTestingError) -> Bool {
            do { return try ring.finalCheckForResponses() } catch { throw .ring(error) }
        }

        /// Blocks until the handle has a pending port, unmasks and returns it.
        public func waitForEvent() throws(XenTestingError) -> EventPort {
            try MockRingPeer.waitForEvent(eventChannel)
        }

        /// Closes the port and ends access to the ring pages (fails with
        /// ``PlatformError/grantBusy(ref:)`` while the backend still maps them).
        public func close() throws(XenTestingError) {
            guard !closed else { return }
            do {
                try platform.grantTable.endAccess(pages)
            } catch {
                throw .platform(error)
            }
            closed = true
            eventChannel.close()
        }
    }

    /// The backend's end: maps the frontend's ring refs, attaches
    /// (io/ring.h: BACK_RING_INIT) and binds the frontend's port.
    public final class Backend: @unchecked Sendable {
        // SAFETY (@unchecked): used by one thread at a time, as documented on MockRingPeer.
        /// The platform it runs on.
        public let platform: any Platform
        /// What the frontend published.
        public let connection: Connection
        /// The mapped ring pages.
        public let mapping: GrantMapping
        /// Its event-channel handle; wait on its `fileDescriptor`.
        public let eventChannel: any EventChannel
        /// Its end of the event channel.
        public let port: EventPort
        /// The ring's private indices.
        public var ring: BackRing
        private var closed = false

        /// Maps `connection.refs` writable, attaches to the ring at index 0 and binds the
        /// frontend's port.
        public init(platform: any Platform, connection: Connection, entrySize: Int) throws(XenTestingError) {
            self.platform = platform
            self.connection = connection
            let mapping: GrantMapping
            do { mapping = try platform.grantMapper.map(connection.refs, from: connection.frontendDomain, writable: true) } catch {
                throw .platform(error)
            }
            let shared: SharedRing
            do { shared = try SharedRing(memory: mapping.view, pages: connection.refs.count, entrySize: entrySize) } catch {
                try? platform.grantMapper.unmap(mapping)
                throw .ring(error)
            }
            let channel: any EventChannel
            let port: EventPort
            do throws(PlatformError) {
                channel = try platform.openEventChannel()
                do { port = try channel.bindInterdomain(remote: connection.frontendDomain, remotePort: connection.port) } catch {
                    channel.close()
                    throw error
                }
            } catch {
                try? platform.grantMapper.unmap(mapping)
                throw .platform(error)
            }
            self.mapping = mapping
            self.eventChannel = channel
            self.port = port
            self.ring = BackRing(shared)
        }

        /// The shared page's header and slots, for tests that scribble on them.
        public var shared: SharedRing { ring.shared }

        /// Hands each published request's slot to `body`, oldest first, after checking the
        /// frontend's req_prod once; stops where a response slot is still owed
        /// (io/ring.h: RING_REQUEST_CONS_OVERFLOW). Returns how many were consumed.
        @discardableResult
        public func consumeRequests(_ body: (SharedView) -> Void) throws(XenTestingError) -> Int {
            let producer: RingIndex
            do { producer = try ring.checkedRequestProducer() } catch { throw .ring(error) }
            var taken = 0
            while ring.requestConsumer != producer, !ring.requestConsumerOverflow(ring.requestConsumer) {
                body(ring.requestSlot(ring.requestConsumer))
                ring.requestConsumer &+= 1
                taken += 1
            }
            return taken
        }

        /// Every published request, as copies of whole slots.
        public func takeRequests() throws(XenTestingError) -> [[UInt8]] {
            var out: [[UInt8]] = []
            try consumeRequests { out.append($0.bytes()) }
            return out
        }

        /// Writes one response into the next response slot, zero-filling the rest of it.
        public func produceResponse(_ bytes: [UInt8]) throws(XenTestingError) {
            guard bytes.count <= ring.shared.entrySize else {
                throw .entryTooLarge(bytes: bytes.count, entrySize: ring.shared.entrySize)
            }
            try produceResponse { slot in
                slot.fill(0, at: 0, length: slot.count)
                bytes.withUnsafeBytes { slot.copyBytes(from: $0, to: 0) }
            }
        }

        /// Lets `write` fill the next response slot in place. A response needs a consumed
        /// request to answer.
        public func produceResponse(_ write: (SharedView) -> Void) throws(XenTestingError) {
            guard ring.responseProducerPrivate != ring.requestConsumer else {
                throw .noRequestToAnswer(responseProducer: ring.responseProducerPrivate, requestConsumer: ring.requestConsumer)
            }
            write(ring.responseSlot(ring.responseProducerPrivate))
            ring.responseProducerPrivate &+= 1
        }

        /// Publishes the produced responses and notifies the frontend if it asked
        /// (io/ring.h: RING_PUSH_RESPONSES_AND_CHECK_NOTIFY). Returns whether it notified.
        @discardableResult
        public func pushResponsesAndNotify() throws(XenTestingError) -> Bool {
            guard ring.pushResponsesAndCheckNotify() else { return false }
            do { try eventChannel.notify(port) } catch { throw .platform(error) }
            return true
        }

        /// io/ring.h: RING_FINAL_CHECK_FOR_REQUESTS: true if requests wait; otherwise asks
        /// to be notified of the next.
        public func finalCheckForRequests() throws(XenTestingError) -> Bool {
            do { return try ring.finalCheckForRequests() } catch { throw .ring(error) }
        }

        /// Blocks until the handle has a pending port, unmasks and returns it.
        public func waitForEvent() throws(XenTestingError) -> EventPort {
            try MockRingPeer.waitForEvent(eventChannel)
        }

        /// Unbinds the port and unmaps the ring, so the frontend can end access.
        public func close() throws(XenTestingError) {
            guard !closed else { return }
            closed = true
            eventChannel.close()
            do { try platform.grantMapper.unmap(mapping) } catch { throw .platform(error) }
        }
    }

    /// Polls `channel`'s descriptor until a port is pending, unmasks it (the caller then
    /// checks its ring, so nothing signalled after this point is missed) and returns it.
    public static func waitForEvent(_ channel: any EventChannel) throws(XenTestingError) -> EventPort {
        while true {
            do {
                if let port = try channel.pending() {
                    try channel.unmask(port)
                    return port
                }
            } catch {
                throw .platform(error)
            }
            var p = pollfd(fd: channel.fileDescriptor, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, -1) < 0, errno != EINTR { throw .wait(errno: errno) }
        }
    }
}
