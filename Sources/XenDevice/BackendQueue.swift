import URing
import XenPlatform

/// One ring a ``BackendWorker`` serves: what a device type gives the device-neutral worker
/// loop. The worker owns the I/O engine and the event-channel polls; the queue owns its
/// ring, its request slots and its data movement.
///
/// Every method is called on the worker's thread only, while the queue is on that worker;
/// none may block. A queue is on one worker for its life.
public protocol BackendQueue: AnyObject {
    /// For logs: the backend path of the device, with `queue-N` for multi-queue devices.
    var name: String { get }
    /// The handle the frontend's port is bound on; the worker polls its descriptor.
    var eventChannel: any EventChannel { get }
    /// Whether `port`, pending on ``eventChannel``, is one of this queue's (a queue may
    /// have several, as a net queue with split tx and rx channels; several queues may
    /// share one handle).
    func handles(port: EventPort) -> Bool
    /// The most engine operations this queue has in flight at once; the worker reserves
    /// that much engine capacity (plus its poll) when the queue is added.
    var engineReservation: Int { get }
    /// Engine operations of this queue not completed yet; removal waits for 0.
    var inFlight: Int { get }
    /// Whether the queue stopped serving its frontend (a protocol violation, a failed
    /// channel); the worker then reports it once and stops polling its channel.
    var isDisconnected: Bool { get }
    /// A descriptor the worker should put in its engine's file table for this queue (a
    /// disk's backing file), or nil.
    var registrableDescriptor: Int32? { get }

    /// On being added: the worker's user data for this queue's operations (the queue ORs
    /// a slot number below bit 32 into it) and the file-table index it was given for
    /// ``registrableDescriptor`` (nil: name the descriptor).
    func attach(userDataBase: UInt64, registeredFile: UInt32?)
    /// Takes and starts what the frontend published. Returns true when it stopped on its
    /// budget with work left, so the worker serves it again after the other queues.
    func service<Engine: BlockIOEngine>(engine: Engine) -> Bool
    /// One of this queue's operations finished (`slot` from its user data).
    func complete<Engine: BlockIOEngine>(slot: Int, result: Int32, engine: Engine)
    /// Publishes the responses written since the last push and notifies if the ring says so.
    func pushResponses()
    /// Removal began: cancel the operations that wait for input rather than for work to
    /// finish (a read of a TAP device with nothing to read), so ``inFlight`` reaches 0.
    /// A queue whose operations all finish on their own needs nothing here.
    func cancelWaits<Engine: BlockIOEngine>(engine: Engine)
    /// The queue's event channel cannot be read any more: stop serving, with that reason.
    func eventChannelFailed(_ error: PlatformError)
    /// The queue leaves its worker with nothing in flight (removal or the worker's stop):
    /// release what must not outlive the worker's service (its registered file slot is
    /// already gone). Called once.
    func retire()
}

extension BackendQueue {
    /// Nothing to cancel: every operation finishes on its own (a disk's reads and writes).
    public func cancelWaits<Engine: BlockIOEngine>(engine: Engine) {}
}
