import Logging
import Netif
import SharedMemory
import URing
import XenDevice
import XenPlatform
import XenRing

/// A vif's control ring (io/netif.h, "Control ring"), served on the worker of its queue
/// 0: each request answered from ``NetbackHashing``; the key and mapping pages it names
/// are grant-copied into the queue's own page (never mapped), after their sizes are
/// checked. What a request asks is never a violation: a bad one is answered with its
/// XEN_NETIF_CTRL_STATUS_*. Only the ring's indices can break the protocol (req_prod more
/// than a ring ahead), and that stops the vif as on its other rings.
public final class NetbackControlQueue: @unchecked Sendable {
    // SAFETY (@unchecked): used by one worker thread while on it, by its owner otherwise.
    /// For logs: the vif's backend path and `/ctrl`.
    public let name: String
    /// The guest whose grants the key and table pages are.
    public let frontendDomain: DomainID
    /// The handle `port` is bound on.
    public let eventChannel: any EventChannel
    /// The local end of `event-channel-ctrl`.
    public let port: EventPort
    /// What the requests set, shared with the vif's rx queues.
    public let hashing: NetbackHashing
    /// Why the queue stopped serving; nil while it serves.
    public private(set) var disconnectReason: NetbackError?
    /// Requests answered.
    public private(set) var answered = 0

    var ring: BackRing
    let mapper: any GrantMapper
    let guestLog: GuestLog
    /// One page: where a request's key or mapping is copied to.
    let page: CopyBuffer
    var unpushed = false
    var closed = false

    /// A control queue over the mapped ring `ring` of `frontendDomain`, notified on `port`.
    public init(name: String, frontendDomain: DomainID, ring: BackRing, eventChannel: any EventChannel, port: EventPort,
                mapper: any GrantMapper, hashing: NetbackHashing, guestLog: GuestLog) throws(NetbackError) {
        self.name = name
        self.frontendDomain = frontendDomain
        self.ring = ring
        self.eventChannel = eventChannel
        self.port = port
        self.mapper = mapper
        self.hashing = hashing
        self.guestLog = guestLog
        do { page = try mapper.registerCopyBuffer(pages: 1) } catch { throw .platform(error) }
    }

    /// Stops serving for `reason`, once, with a log line.
    func disconnect(_ reason: NetbackError) {
        guard disconnectReason == nil else { return }
        disconnectReason = reason
        guestLog.log(.error, "netback control ring disconnected", metadata: [
            "queue": "\(name)", "frontend": "d\(frontendDomain)", "reason": "\(reason)"])
    }

    /// The first `length` bytes (at most a page, checked by the caller) of the frontend's
    /// page `ref`, by grant copy; nil if the copy failed (a bad or revoked grant).
    func read(_ ref: UInt32, _ length: Int) -> [UInt8]? {
        guard length > 0, length <= page.view.count else { return nil }
        var segment = GrantCopySegment(source: .grant(domain: frontendDomain, ref: ref, offset: 0),
                                       destination: .local(buffer: page.id, offset: 0), length: UInt16(length))
        do {
            try withUnsafeMutablePointer(to: &segment) { pointer throws(PlatformError) in
                try mapper.copy(UnsafeMutableBufferPointer(start: pointer, count: 1))
            }
        } catch {
            return nil
        }
        guard segment.status == .okay else { return nil }
        return page.view.bytes(at: 0, length: length)
    }

    /// Releases the copy page, once.
    func close() {
        guard !closed else { return }
        closed = true
        try? mapper.unregisterCopyBuffer(page)
    }
}

extension NetbackControlQueue: BackendQueue {
    public func handles(port: EventPort) -> Bool { port == self.port }
    /// Grant copies are synchronous: no engine operation.
    public var engineReservation: Int { 0 }
    public var inFlight: Int { 0 }
    public var isDisconnected: Bool { disconnectReason != nil }
    public var registrableDescriptor: Int32? { nil }
    public func attach(userDataBase: UInt64, registeredFile: UInt32?) {}
    public func complete<Engine: BlockIOEngine>(slot: Int, result: Int32, engine: Engine) {}

    /// Answers what the frontend published, at most a ring's worth per call.
    public func service<Engine: BlockIOEngine>(engine: Engine) -> Bool {
        guard disconnectReason == nil, !closed else { return false }
        var budget = Int(ring.size)
        do throws(RingError) {
            while true {
                var waiting = try ring.unconsumedRequests()
                if waiting == 0 {
                    guard try ring.finalCheckForRequests() else { return false }
                    waiting = try ring.unconsumedRequests()
                }
                guard budget > 0 else { return true }
                for _ in 0..<waiting where budget > 0 {
                    // Read once into a value; the slot is then reused for the response.
                    let slot = ring.requestSlot(ring.requestConsumer)
                    let request: NetifCtrlRequest
                    do { request = try NetifCtrlRequest.decode(from: slot, at: 0) } catch {
                        // Not reached: every slot of a ring of 16-byte entries holds a request.
                        disconnect(.packet(error))
                        return false
                    }
                    ring.requestConsumer &+= 1
                    let response = hashing.answer(request) { ref, length in read(ref, length) }
                    response.encode(into: ring.responseSlot(ring.responseProducerPrivate), at: 0)
                    ring.responseProducerPrivate &+= 1
                    unpushed = true
                    answered += 1
                    budget -= 1
                    if response.status != .success {
                        guestLog.log(.info, "netback control request refused", metadata: [
                            "queue": "\(name)", "type": "\(request.type)", "status": "\(response.status)"])
                    }
                }
            }
        } catch {
            disconnect(.controlRing(error))
            return false
        }
    }

    public func pushResponses() {
        guard disconnectReason == nil, unpushed else { return }
        unpushed = false
        guard ring.pushResponsesAndCheckNotify() else { return }
        do throws(PlatformError) { try eventChannel.notify(port) } catch { disconnect(.platform(error)) }
    }

    public func eventChannelFailed(_ error: PlatformError) { disconnect(.platform(error)) }

    public func retire() { close() }
}
