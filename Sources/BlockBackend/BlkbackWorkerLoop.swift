import Dispatch
import Glibc
import Logging
import Synchronization
import URing
import XenPlatform

/// The worker thread's state; touched only by that thread.
final class BlkbackWorkerLoop: @unchecked Sendable {
    // SAFETY (@unchecked): created by the control thread and then used only by the worker
    // thread it is handed to (pthread_create orders the memory).

    /// What a completion's user data says it is for (bits 56-63).
    enum Tag: UInt64 {
        case io = 1
        case eventChannel = 2
        case mailbox = 3
        case cancel = 4
    }

    struct Entry {
        let queue: BlkbackQueue
        let onDisconnect: @Sendable (BlockBackendError) -> Void
        var pollArmed = false
        var dirty = false
        var disconnectReported = false
        var removal: BlkbackReply?
        var removing = false
    }

    let worker: BlkbackWorker
    let factory: BlockIOEngineFactory
    var entries: [Entry?]
    var dirtyList: [Int]
    /// Queues that stopped on their budget: served again after the others.
    var againList: [Int]
    let completions: UnsafeMutableBufferPointer<Completion>
    var mailboxArmed = false
    var stopReply: BlkbackReply?
    var stopping = false
    var reservedCapacity = 0
    /// Whether the engine holds a file table with one slot per entry, so each queue's
    /// I/O names its backing store by slot (see ``BlkbackQueue/file``).
    var filesRegistered = false

    init(worker: BlkbackWorker, factory: BlockIOEngineFactory) {
        self.worker = worker
        self.factory = factory
        entries = Array(repeating: nil, count: worker.maxQueues)
        dirtyList = []
        dirtyList.reserveCapacity(worker.maxQueues)
        againList = []
        againList.reserveCapacity(worker.maxQueues)
        completions = .allocate(capacity: 256)
        completions.initialize(repeating: Completion(userData: 0, result: 0))
    }

    deinit { completions.deallocate() }

    static func userData(_ tag: Tag, queue: Int, slot: Int = 0) -> UInt64 {
        tag.rawValue << 56 | UInt64(queue) << 32 | UInt64(UInt32(slot))
    }

    /// The thread's body: make the engine here, report, serve until stopped.
    func run(started: BlkbackReply) {
        let engine: any BlockIOEngine
        do { engine = try factory.makeEngine() } catch {
            worker.mailbox.withLock { $0 = nil }
            started.signal(.engine(error))
            return
        }
        // This thread submits, waits and closes: the ring's descriptor can be registered
        // with it, which saves a file lookup on every wait.
        _ = (engine as? URingEngine)?.ring.registerRingDescriptor()
        started.signal()
        serve(engine)
        engine.close()
        for command in worker.mailbox.withLock({ commands -> [BlkbackCommand] in
            defer { commands = nil }
            return commands ?? []
        }) {
            reject(command)
        }
        stopReply?.signal()
    }

    func reject(_ command: BlkbackCommand) {
        switch command {
        case let .add(_, _, reply), let .remove(_, reply), let .resize(_, _, reply): reply.signal(.workerStopped)
        case let .stop(reply): reply.signal()
        }
    }

    /// The loop, generic so engine calls are direct.
    func serve<Engine: BlockIOEngine>(_ engine: Engine) {
        armMailbox(engine)
        do {
            try engine.registerFiles(Array(repeating: -1, count: entries.count))
            filesRegistered = true
        } catch {
            worker.logger.notice("blkback worker: no registered file table; I/O names descriptors",
                                 metadata: ["error": "\(error)"])
        }
        while !(stopping && entries.allSatisfy({ $0 == nil })) {
            // With queues still owed service, only collect what finished; never sleep.
            do { try engine.wait(minimum: againList.isEmpty ? 1 : 0, timeout: nil) } catch {
                worker.logger.critical("blkback worker: engine wait failed; stopping", metadata: ["error": "\(error)"])
                return
            }
            let count = engine.reap(into: completions)
            for completion in completions[0..<count] { route(completion, engine: engine) }
            for index in againList { markDirty(index) }
            againList.removeAll(keepingCapacity: true)
            while let index = dirtyList.popLast() { serviceEntry(index, engine: engine) }
        }
    }

    func route<Engine: BlockIOEngine>(_ completion: Completion, engine: Engine) {
        let index = Int((completion.userData >> 32) & 0xFF_FFFF)
        switch Tag(rawValue: completion.userData >> 56) {
        case .io?:
            guard index < entries.count, let queue = entries[index]?.queue else { return }
            queue.complete(slot: Int(UInt32(truncatingIfNeeded: completion.userData)), result: completion.result,
                           engine: engine)
            markDirty(index)
        case .eventChannel?:
            guard index < entries.count, entries[index] != nil else { return }
            entries[index]!.pollArmed = false
            markDirty(index)
            guard let queue = entries[index]?.queue else { return }
            // A descriptor in error (POLLERR, POLLNVAL) would complete every poll at once:
            // the channel is given up instead of re-armed.
            if completion.result >= 0, completion.result & Int32(POLLERR | POLLNVAL) != 0 {
                let mask = completion.result & Int32(POLLNVAL) != 0 ? "POLLNVAL" : "POLLERR"
                channelFailed(queue.eventChannel, .eventChannel("its descriptor polled \(mask)", errno: EBADF))
                return
            }
            takePendingPorts(queue.eventChannel)
        case .mailbox?:
            mailboxArmed = false
            worker.doorbell.drain()
            let commands = worker.mailbox.withLock { commands -> [BlkbackCommand] in
                defer { if commands != nil { commands!.removeAll(keepingCapacity: true) } }
                return commands ?? []
            }
            for command in commands { handle(command, engine: engine) }
            if !stopping { armMailbox(engine) }
        case .cancel?, nil:
            return
        }
    }

    /// Takes every pending port of `channel`, unmasking each before its queue looks at
    /// the ring, and marks the queues they belong to.
    func takePendingPorts(_ channel: any EventChannel) {
        do {
            try channel.takePending(atMost: entries.count) { port throws(PlatformError) in
                try channel.unmask(port)
                for index in entries.indices {
                    guard let entry = entries[index], entry.queue.eventChannel === channel,
                          entry.queue.port == port else { continue }
                    markDirty(index)
                }
            }
        } catch {
            channelFailed(channel, error)
        }
    }

    /// An event-channel handle that cannot be read any more: every queue on it stops
    /// serving with that reason (reported through its onDisconnect, once, so the device is
    /// refused), and its poll is not armed again, so the worker does not spin on it.
    func channelFailed(_ channel: any EventChannel, _ error: PlatformError) {
        worker.logger.error("blkback worker: event channel failed; its queues stop", metadata: ["error": "\(error)"])
        for index in entries.indices {
            guard let entry = entries[index], entry.queue.eventChannel === channel else { continue }
            entry.queue.disconnect(.platform(error))
            markDirty(index)
        }
    }

    func markDirty(_ index: Int) {
        guard entries[index] != nil, !entries[index]!.dirty else { return }
        entries[index]!.dirty = true
        dirtyList.append(index)
    }

    func serviceEntry<Engine: BlockIOEngine>(_ index: Int, engine: Engine) {
        guard var entry = entries[index] else { return }
        entry.dirty = false
        let queue = entry.queue
        if !entry.removing, queue.service(engine: engine) { againList.append(index) }
        queue.pushResponses()
        if let reason = queue.disconnectReason, !entry.disconnectReported {
            entry.disconnectReported = true
            entry.onDisconnect(reason)
        }
        if !entry.removing, queue.disconnectReason == nil, !entry.pollArmed {
            entry.pollArmed = arm(.pollReadable(queue.eventChannel.fileDescriptor),
                                  userData: Self.userData(.eventChannel, queue: index), engine: engine)
        }
        entries[index] = entry
        if entry.removing, queue.inFlight == 0, !entry.pollArmed {
            finishRemoval(index, engine: engine)
        }
    }

    func arm<Engine: BlockIOEngine>(_ operation: BlockIOOperation, userData: UInt64, engine: Engine) -> Bool {
        switch engine.enqueue(BlockRequest(operation, userData: userData)) {
        case .accepted: return true
        case .queueFull:
            worker.logger.critical("blkback worker: engine full, cannot arm a poll")
            return false
        }
    }

    func armMailbox<Engine: BlockIOEngine>(_ engine: Engine) {
        mailboxArmed = arm(.pollReadable(worker.doorbell.readFD), userData: Self.userData(.mailbox, queue: 0), engine: engine)
    }

    func handle<Engine: BlockIOEngine>(_ command: BlkbackCommand, engine: Engine) {
        switch command {
        case let .add(box, onDisconnect, reply):
            let queue = box.queue
            // Room in the engine for every slot, the queue's poll and its cancel.
            let needed = queue.configuration.slots + 2
            guard !stopping else { reply.signal(.workerStopped); return }
            guard reservedCapacity + needed + 2 <= engine.capacity else {
                reply.signal(.configuration(name: "engine capacity for this queue", value: reservedCapacity + needed + 2,
                                            limit: 0...engine.capacity))
                return
            }
            guard let index = entries.firstIndex(where: { $0 == nil }) else {
                reply.signal(.configuration(name: "queues on this worker", value: entries.count + 1,
                                            limit: 0...entries.count))
                return
            }
            reservedCapacity += needed
            queue.userDataBase = Self.userData(.io, queue: index)
            if filesRegistered {
                do {
                    try engine.updateRegisteredFiles([queue.fileDescriptor], at: index)
                    queue.file = .registered(UInt32(index))
                } catch {
                    worker.logger.notice("blkback worker: backing store not registered; its I/O names the descriptor",
                                         metadata: ["queue": "\(queue.name)", "error": "\(error)"])
                }
            }
            entries[index] = Entry(queue: queue, onDisconnect: onDisconnect)
            markDirty(index)
            reply.signal()
        case let .remove(id, reply):
            guard let index = entries.firstIndex(where: { $0.map { ObjectIdentifier($0.queue) == id } ?? false }) else {
                reply.signal(.configuration(name: "queue not on this worker", value: 0, limit: 1...1))
                return
            }
            beginRemoval(index, reply: reply, engine: engine)
        case let .resize(id, sectors, reply):
            guard let index = entries.firstIndex(where: { $0.map { ObjectIdentifier($0.queue) == id } ?? false }) else {
                reply.signal(.configuration(name: "queue not on this worker", value: 0, limit: 1...1))
                return
            }
            entries[index]!.queue.diskSectors = sectors
            reply.signal()
        case let .stop(reply):
            stopping = true
            stopReply = reply
            for index in entries.indices where entries[index] != nil && !entries[index]!.removing {
                beginRemoval(index, reply: nil, engine: engine)
            }
        }
    }

    func beginRemoval<Engine: BlockIOEngine>(_ index: Int, reply: BlkbackReply?, engine: Engine) {
        entries[index]!.removing = true
        entries[index]!.removal = reply
        if entries[index]!.pollArmed {
            _ = arm(.cancel(target: Self.userData(.eventChannel, queue: index)),
                    userData: Self.userData(.cancel, queue: index), engine: engine)
        }
        markDirty(index)
    }

    func finishRemoval<Engine: BlockIOEngine>(_ index: Int, engine: Engine) {
        guard let entry = entries[index] else { return }
        entries[index] = nil
        if case .registered = entry.queue.file {
            // Nothing is in flight, so the slot can go before the owner closes the store.
            entry.queue.file = .descriptor(entry.queue.fileDescriptor)
            do { try engine.updateRegisteredFiles([-1], at: index) } catch {
                worker.logger.error("blkback worker: cannot empty a registered file slot",
                                    metadata: ["queue": "\(entry.queue.name)", "error": "\(error)"])
            }
        }
        reservedCapacity -= entry.queue.configuration.slots + 2
        var failure: BlockBackendError?
        do { try entry.queue.close() } catch { failure = error }
        entry.removal?.signal(failure)
    }
}
