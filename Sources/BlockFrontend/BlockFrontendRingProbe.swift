import Blkif
import Logging
import XenPlatform

/// One connection's rings driven by hand, with no xenbus and no I/O thread: requests are
/// queued, sent and their responses taken through the very code the I/O thread runs
/// (``BlockFrontendConnection``'s dispatch and response consumer). The way in for the fuzz
/// target that plays a lying backend (FuzzTargets' BlkfrontFuzz); not for serving disks.
public final class BlockFrontendRingProbe: @unchecked Sendable {
    // SAFETY (@unchecked): one thread drives it.
    let core: BlockFrontendCore
    let connection: BlockFrontendConnection
    var io: BlockFrontendIOState
    private var closed = false

    /// Grants the rings and data pages to `backendDomain` as the initialise hook does.
    public init(platform: any Platform, backendDomain: DomainID, features: BlkifBackendFeatures,
                configuration: BlockFrontendConfiguration, logger: Logger) throws(BlockFrontendError) {
        core = try BlockFrontendCore(platform: platform, configuration: configuration, logger: logger)
        connection = try core.prepare(backendDomain: backendDomain, features: features, handle: 0)
        io = BlockFrontendIOState()
        swap(&io, &connection.io)
    }

    /// Each ring's grant references and event-channel port, as the frontend publishes them.
    public var rings: [(refs: [GrantRef], port: EventPort)] {
        connection.ringPages.indices.map { (connection.ringPages[$0].refs, connection.ports[$0]) }
    }

    /// The connection's event channel (its ports are ``rings``' ports).
    public var eventChannel: any EventChannel { connection.eventChannel }

    /// Queues a request of `kind` (read, write, flush or discard) for the next ``send()``;
    /// `completion` runs once, when every part is answered or the probe closes.
    public func queue(_ request: BlockFrontendRequest, completion: @escaping BlockFrontendCompletion) {
        let operation: BlockFrontendOperation
        switch request {
        case let .read(sector, count):
            operation = BlockFrontendOperation(kind: .read, sector: sector, count: count,
                                               data: [UInt8](repeating: 0, count: Int(count) * 512), completion: completion)
        case let .write(sector, data):
            operation = BlockFrontendOperation(kind: .write, sector: sector, count: UInt64(data.count / 512), data: data,
                                               completion: completion)
        case .flush:
            operation = BlockFrontendOperation(kind: .flush, sector: 0, count: 0, data: [], completion: completion)
        case let .discard(sector, count):
            operation = BlockFrontendOperation(kind: .discard, sector: sector, count: count, data: [], completion: completion)
        }
        core.enqueue(operation)
    }

    /// Sends what waits while slots and ring space last, and publishes it. True if any went.
    @discardableResult
    public func send() -> Bool {
        let sent = connection.dispatch(&io, core: core)
        connection.pushAll(&io)
        return sent
    }

    /// Takes every published response, as the I/O thread does. True if any was taken.
    @discardableResult
    public func takeResponses() -> Bool { connection.consumeAll(&io) }

    /// RING_FINAL_CHECK_FOR_RESPONSES on every ring still served.
    public func finalCheck() -> Bool { connection.hasResponses(&io) }

    /// Requests sent and not answered.
    public var inFlight: Int { connection.inFlight.load(ordering: .relaxed) }
    /// Rings stopped because the backend lied on them.
    public var brokenRings: Int { connection.brokenRings.load(ordering: .relaxed) }
    /// Slots free for requests, and the connection's depth.
    public var freeSlots: Int { io.freeSlots.count }
    public var depth: Int { connection.depth }

    /// Disconnects as a backend going away makes it (unanswered work waits to be sent
    /// again), then closes: every waiting request fails, the grants are given back (those
    /// the backend still maps, once it unmaps: see ``deferredGrants``).
    public func close() {
        guard !closed else { return }
        closed = true
        swap(&io, &connection.io)
        core.disconnect(reason: "probe closed")
        core.close()
    }

    /// Page sets whose grants could not end yet (the backend still maps them); retried now.
    public var deferredGrants: Int { core.releaseDeferred() }
}
