import URing
import XenDevice
import XenPlatform

/// What the device-neutral worker loop asks of a blkif ring.
extension BlkbackQueue: BackendQueue {
    /// One engine operation per request slot.
    public var engineReservation: Int { configuration.slots }

    public func handles(port: EventPort) -> Bool { port == self.port }

    public var isDisconnected: Bool { disconnectReason != nil }

    /// The backing store, so each request names it by its file-table slot.
    public var registrableDescriptor: Int32? { fileDescriptor }

    public func attach(userDataBase: UInt64, registeredFile: UInt32?) {
        self.userDataBase = userDataBase
        file = registeredFile.map { .registered($0) } ?? .descriptor(fileDescriptor)
    }

    public func eventChannelFailed(_ error: PlatformError) {
        disconnect(.platform(error))
    }

    /// Unmaps the persistent grants and releases the copy buffers; the owner's later
    /// ``close()`` then finds nothing left to do.
    public func retire() {
        do { try close() } catch {
            logger.error("blkback queue: releasing its grants and buffers failed",
                         metadata: ["queue": "\(name)", "error": "\(error)"])
        }
    }
}
