import Glibc
import Logging
import URing
import XenPlatform

/// The worker thread's state; touched only by that thread.
final class BackendWorkerLoop: @unchecked Sendable {
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
        let queue: any BackendQueue
        let onDisconnect: @Sendable () -> Void
        /// Engine capacity held for the queue: its reservation and its poll.
        let reserved: Int
        var pollArmed = false
        var dirty = false
        var disconnectReported = false
        var removal: BackendWorkerReply?
        var removing = false
        var registeredFile = false
        /// For the line at removal: how often the queue was served, how often its event
        /// channel's poll fired, and how often it stopped on its budget (a queue served far
        /// more often than its events say, or far less, shows where a device waits).
        var services = 0
        var eventPolls = 0
        var budgetStops = 0
    }

    let worker: BackendWorker
    let factory: BlockIOEngineFactory
    var entries: [Entry?]
    var dirtyList: [Int]
    /// Queues that stopped on their budget: served again after the others.
    var againList: [Int]
    let completions: UnsafeMutableBufferPointer<Completion>
    var stopReply: BackendWorkerReply?
    var stopping = false
    var reservedCapacity = 0
    /// Engine waits: how often the worker slept (minimum 1) or only collected (minimum 0).
    var sleeps = 0
    var collects = 0
    /// Whether the engine holds a file table with one slot per entry, so a queue's I/O
    /// can name its descriptor by slot.
    var filesRegistered = false

    init(worker: BackendWorker, factory: BlockIOEngineFactory) {
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
    func run(started: BackendWorkerReply) {
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
        for command in worker.mailbox.withLock({ commands -> [BackendWorkerCommand] in
            defer { commands = nil }
            return commands ?? []
        }) {
            reject(command)
        }
        stopReply?.signal()
    }

    func reject(_ command: BackendWorkerCommand) {
        switch command {
        case let .add(_, _, reply), let .remove(_, _, reply), let .perform(_, _, _, reply): reply.signal(.workerStopped)
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
            worker.logger.notice("backend worker: no registered file table; I/O names descriptors",
                                 metadata: ["error": "\(error)"])
        }
        while !(stopping && entries.allSatisfy({ $0 == nil })) {
            // With queues still owed service, only collect what finished; never sleep.
            if againList.isEmpty { sleeps += 1 } else { collects += 1 }
            do { try engine.wait(minimum: againList.isEmpty ? 1 : 0, timeout: nil) } catch {
                worker.logger.critical("backend worker: engine wait failed; stopping", metadata: ["error": "\(error)"])
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
            entries[index]!.eventPolls += 1
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
            worker.doorbell.drain()
            let commands = worker.mailbox.withLock { commands -> [BackendWorkerCommand] in
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
                          entry.queue.handles(port: port) else { continue }
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
        worker.logger.error("backend worker: event channel failed; its queues stop", metadata: ["error": "\(error)"])
        for index in entries.indices {
            guard let entry = entries[index], entry.queue.eventChannel === channel else { continue }
            entry.queue.eventChannelFailed(error)
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
        entry.services += 1
        let queue = entry.queue
        if !entry.removing, queue.service(engine: engine) {
            againList.append(index)
            entry.budgetStops += 1
        }
        queue.pushResponses()
        let disconnected = queue.isDisconnected
        if disconnected, !entry.disconnectReported {
            entry.disconnectReported = true
            entry.onDisconnect()
        }
        if !entry.removing, !disconnected, !entry.pollArmed {
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
            worker.logger.critical("backend worker: engine full, cannot arm a poll")
            return false
        }
    }

    func armMailbox<Engine: BlockIOEngine>(_ engine: Engine) {
        _ = arm(.pollReadable(worker.doorbell.readFD), userData: Self.userData(.mailbox, queue: 0), engine: engine)
    }

    func index(of id: ObjectIdentifier) -> Int? {
        entries.firstIndex { $0.map { ObjectIdentifier($0.queue) == id } ?? false }
    }

    func handle<Engine: BlockIOEngine>(_ command: BackendWorkerCommand, engine: Engine) {
        switch command {
        case let .add(box, onDisconnect, reply):
            add(box.queue, onDisconnect: onDisconnect, reply: reply, engine: engine)
        case let .remove(id, name, reply):
            guard let index = index(of: id) else { reply.signal(.notOnThisWorker(queue: name)); return }
            beginRemoval(index, reply: reply, engine: engine)
        case let .perform(id, name, body, reply):
            guard let index = index(of: id), let queue = entries[index]?.queue else {
                reply.signal(.notOnThisWorker(queue: name))
                return
            }
            body(queue)
            reply.signal()
        case let .stop(reply):
            stopping = true
            stopReply = reply
            for index in entries.indices where entries[index] != nil && !entries[index]!.removing {
                beginRemoval(index, reply: nil, engine: engine)
            }
        }
    }

    func add<Engine: BlockIOEngine>(_ queue: any BackendQueue, onDisconnect: @escaping @Sendable () -> Void,
                                    reply: BackendWorkerReply, engine: Engine) {
        guard !stopping else { reply.signal(.workerStopped); return }
        // Room in the engine for the queue's operations, its poll and its cancel, with two
        // entries kept for the mailbox's poll and its re-arm.
        let needed = queue.engineReservation + 2
        let available = engine.capacity - reservedCapacity - 2
        guard needed <= available else {
            reply.signal(.capacity(resource: "engine entries", needed: needed, available: max(0, available)))
            return
        }
        guard let index = entries.firstIndex(where: { $0 == nil }) else {
            reply.signal(.capacity(resource: "queues on this worker", needed: 1, available: 0))
            return
        }
        reservedCapacity += needed
        var registered: UInt32?
        if filesRegistered, let descriptor = queue.registrableDescriptor {
            do {
                try engine.updateRegisteredFiles([descriptor], at: index)
                registered = UInt32(index)
            } catch {
                worker.logger.notice("backend worker: descriptor not registered; its I/O names it",
                                     metadata: ["queue": "\(queue.name)", "error": "\(error)"])
            }
        }
        queue.attach(userDataBase: Self.userData(.io, queue: index), registeredFile: registered)
        entries[index] = Entry(queue: queue, onDisconnect: onDisconnect, reserved: needed,
                               registeredFile: registered != nil)
        markDirty(index)
        reply.signal()
    }

    func beginRemoval<Engine: BlockIOEngine>(_ index: Int, reply: BackendWorkerReply?, engine: Engine) {
        entries[index]!.removing = true
        entries[index]!.removal = reply
        entries[index]!.queue.cancelWaits(engine: engine)
        if entries[index]!.pollArmed {
            _ = arm(.cancel(target: Self.userData(.eventChannel, queue: index)),
                    userData: Self.userData(.cancel, queue: index), engine: engine)
        }
        markDirty(index)
    }

    func finishRemoval<Engine: BlockIOEngine>(_ index: Int, engine: Engine) {
        guard let entry = entries[index] else { return }
        entries[index] = nil
        if entry.registeredFile {
            // Nothing is in flight, so the slot can go before the owner closes the file.
            entry.queue.attach(userDataBase: 0, registeredFile: nil)
            do { try engine.updateRegisteredFiles([-1], at: index) } catch {
                worker.logger.error("backend worker: cannot empty a registered file slot",
                                    metadata: ["queue": "\(entry.queue.name)", "error": "\(error)"])
            }
        }
        reservedCapacity -= entry.reserved
        worker.logger.info("backend worker: queue removed", metadata: [
            "queue": "\(entry.queue.name)", "services": "\(entry.services)", "event-polls": "\(entry.eventPolls)",
            "budget-stops": "\(entry.budgetStops)", "worker-sleeps": "\(sleeps)", "worker-collects": "\(collects)"])
        entry.queue.retire()
        entry.removal?.signal()
    }
}
