import XenDevice

/// A connection's rings as its I/O thread serves them (``FrontendRingService``): the
/// thread's private ring state, and the connection and core it sends from. Made when the
/// connection starts; the thread hands it back when it stops.
struct BlockFrontendRingService: FrontendRingService {
    let connection: BlockFrontendConnection
    let core: BlockFrontendCore
    var io: BlockFrontendIOState

    mutating func consumeResponses() -> Bool { connection.consumeAll(&io) }

    mutating func produceRequests() -> Bool { connection.dispatch(&io, core: core) }

    mutating func pushRequests() { connection.pushAll(&io) }

    mutating func finalCheckForResponses() -> Bool { connection.hasResponses(&io) }

    var awaitsResponses: Bool { io.freeSlots.count < connection.depth }

    var portCount: Int { io.rings.count }
}
