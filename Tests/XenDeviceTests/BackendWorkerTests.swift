import Dispatch
import Glibc
import Synchronization
import Testing
import URing
import XenDevice
import XenPlatform
import XenTesting

/// A queue with no ring: it relays bytes from one pipe to another through the worker's
/// engine with stream reads (as a net backend reads a TAP device), and can be told to
/// stop serving through its event channel. It proves the worker serves a queue type that
/// is not a disk: a read that waits for input, a cancel at removal, a disconnect.
final class PipeRelayQueue: BackendQueue, @unchecked Sendable {
    // SAFETY (@unchecked): used by the worker's thread while on it, by the test after.
    let name: String
    let eventChannel: any EventChannel
    let port: EventPort
    let input: Int32
    let output: Int32
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
    var userDataBase: UInt64 = 0
    var readInFlight = false
    var disconnected = false
    /// Removal began: no new reads.
    var leaving = false
    /// Set by the test: the next service stops serving (a frontend that broke the rules).
    let poisoned = Atomic<Bool>(false)
    let retirements = Atomic<Int>(0)
    let relayed = Atomic<Int>(0)
    let servedOn = Mutex<Set<String>>([])

    init(name: String, eventChannel: any EventChannel, port: EventPort, input: Int32, output: Int32) {
        self.name = name
        self.eventChannel = eventChannel
        self.port = port
        self.input = input
        self.output = output
    }

    deinit { buffer.deallocate() }

    func handles(port: EventPort) -> Bool { port == self.port }
    var engineReservation: Int { 2 }
    var inFlight: Int { readInFlight ? 1 : 0 }
    var isDisconnected: Bool { disconnected }
    var registrableDescriptor: Int32? { nil }

    func attach(userDataBase: UInt64, registeredFile: UInt32?) { self.userDataBase = userDataBase }

    func service<Engine: BlockIOEngine>(engine: Engine) -> Bool {
        servedOn.withLock { $0.insert(currentThreadName()) }
        if poisoned.load(ordering: .relaxed) { disconnected = true }
        guard !disconnected, !leaving, !readInFlight else { return false }
        if case .accepted = engine.enqueue(BlockRequest(.streamRead(.descriptor(input), into: buffer),
                                                         userData: userDataBase)) {
            readInFlight = true
        }
        return false
    }

    func complete<Engine: BlockIOEngine>(slot: Int, result: Int32, engine: Engine) {
        readInFlight = false
        if result > 0 {
            _ = write(output, buffer.baseAddress, Int(result))
            relayed.add(Int(result), ordering: .relaxed)
        }
        _ = service(engine: engine)
    }

    func pushResponses() {}

    func cancelWaits<Engine: BlockIOEngine>(engine: Engine) {
        leaving = true
        guard readInFlight else { return }
        _ = engine.enqueue(BlockRequest(.cancel(target: userDataBase), userData: userDataBase | 1))
    }

    func eventChannelFailed(_ error: PlatformError) { disconnected = true }

    func retire() { retirements.add(1, ordering: .relaxed) }
}

/// The calling thread's name, as /proc shows it.
func currentThreadName() -> String {
    let path = "/proc/thread-self/comm"
    guard let file = fopen(path, "r") else { return "" }
    defer { fclose(file) }
    var name = [CChar](repeating: 0, count: 32)
    guard fgets(&name, Int32(name.count), file) != nil else { return "" }
    return String(cString: name).trimmingNewline()
}

extension String {
    func trimmingNewline() -> String { hasSuffix("\n") ? String(dropLast()) : self }
}

/// A pipe relay, its two pipes and the frontend's end of its event channel.
struct Relay {
    let queue: PipeRelayQueue
    let feed: Int32
    let drain: Int32
    let frontendChannel: any EventChannel
    let frontendPort: EventPort

    init(name: String, hypervisor: InProcessHypervisor, dom0: InProcessPlatform, guest: InProcessPlatform) throws {
        var first: [Int32] = [0, 0], second: [Int32] = [0, 0]
        #expect(pipe(&first) == 0 && pipe(&second) == 0)
        let backend = try dom0.openEventChannel()
        let port = try backend.allocateUnbound(remote: guest.domainID)
        frontendChannel = try guest.openEventChannel()
        frontendPort = try frontendChannel.bindInterdomain(remote: dom0.domainID, remotePort: port)
        queue = PipeRelayQueue(name: name, eventChannel: backend, port: port, input: first[0], output: second[1])
        feed = first[1]
        drain = second[0]
    }

    /// Writes `bytes` in and reads as many back out (blocking reads: the worker relays).
    func roundTrip(_ bytes: [UInt8]) -> [UInt8] {
        _ = bytes.withUnsafeBytes { write(feed, $0.baseAddress, $0.count) }
        var out = [UInt8](repeating: 0, count: bytes.count)
        var got = 0
        while got < bytes.count {
            let n = out.withUnsafeMutableBytes { read(drain, $0.baseAddress! + got, bytes.count - got) }
            guard n > 0 else { break }
            got += n
        }
        return out
    }

    func close() {
        for fd in [queue.input, queue.output, feed, drain] { Glibc.close(fd) }
        queue.eventChannel.close()
        frontendChannel.close()
    }
}

@Suite("BackendWorker with a queue that is not a disk")
struct BackendWorkerTests {
    static func world() throws -> (InProcessHypervisor, InProcessPlatform, InProcessPlatform) {
        let hypervisor = try InProcessHypervisor()
        let guest = try hypervisor.createDomain(name: "guest")
        return (hypervisor, try hypervisor.platform(for: 0), try hypervisor.platform(for: guest))
    }

    static func worker(_ engine: BlockIOEngineKind, capacity: Int = 64) throws -> BackendWorker {
        let factory = try BlockIOEngineFactory(kind: engine, configuration: .init(queueDepth: min(32, capacity), capacity: capacity, threads: 2))
        return try BackendWorker(factory: factory, maxQueues: 4, threadName: "test-worker")
    }

    @Test("two relays on one worker each carry their bytes, on the worker's thread; removal cancels the waiting read",
          arguments: BlockIOEngineKind.allCases)
    func relays(engine: BlockIOEngineKind) throws {
        let (hypervisor, dom0, guest) = try Self.world()
        let worker = try Self.worker(engine)
        defer { worker.stop() }
        let relays = try (0..<2).map { try Relay(name: "relay\($0)", hypervisor: hypervisor, dom0: dom0, guest: guest) }
        defer { for relay in relays { relay.close() } }
        for relay in relays { try worker.addQueue(relay.queue) }
        for round in 0..<20 {
            for (n, relay) in relays.enumerated() {
                let bytes = (0..<(100 + round * 37)).map { UInt8(truncatingIfNeeded: $0 &* (n + 3) &+ round) }
                #expect(relay.roundTrip(bytes) == bytes)
            }
        }
        // Each relay has a read waiting for input now; removal must cancel it to finish.
        for relay in relays {
            try worker.removeQueue(relay.queue)
            #expect(relay.queue.inFlight == 0)
            #expect(relay.queue.retirements.load(ordering: .relaxed) == 1)
            #expect(relay.queue.servedOn.withLock { $0 } == ["test-worker"])
        }
        #expect(throws: BackendWorkerError.notOnThisWorker(queue: "relay0")) { try worker.removeQueue(relays[0].queue) }
    }

    @Test("a queue that stops serving is reported once and no longer polled; its neighbour keeps relaying",
          arguments: BlockIOEngineKind.allCases)
    func disconnect(engine: BlockIOEngineKind) throws {
        let (hypervisor, dom0, guest) = try Self.world()
        let worker = try Self.worker(engine)
        defer { worker.stop() }
        let bad = try Relay(name: "bad", hypervisor: hypervisor, dom0: dom0, guest: guest)
        let good = try Relay(name: "good", hypervisor: hypervisor, dom0: dom0, guest: guest)
        defer { bad.close(); good.close() }
        let reports = Atomic<Int>(0)
        let reported = DispatchSemaphore(value: 0)
        try worker.addQueue(bad.queue) {
            reports.add(1, ordering: .relaxed)
            reported.signal()
        }
        try worker.addQueue(good.queue)
        bad.queue.poisoned.store(true, ordering: .relaxed)
        try bad.frontendChannel.notify(bad.frontendPort)
        reported.wait()
        for _ in 0..<5 { try bad.frontendChannel.notify(bad.frontendPort) }
        let bytes = [UInt8](repeating: 0x5A, count: 3000)
        #expect(good.roundTrip(bytes) == bytes)
        // The worker has passed its loop since the notifies: a second report would be in.
        try worker.perform(on: good.queue) { _ in }
        #expect(reports.load(ordering: .relaxed) == 1)
        try worker.removeQueue(bad.queue)
        try worker.removeQueue(good.queue)
    }

    @Test("a queue the engine cannot hold is refused with what it needed; perform runs on the worker",
          arguments: BlockIOEngineKind.allCases)
    func capacityAndPerform(engine: BlockIOEngineKind) throws {
        let (hypervisor, dom0, guest) = try Self.world()
        let worker = try Self.worker(engine, capacity: 8)
        defer { worker.stop() }
        let relays = try (0..<3).map { try Relay(name: "r\($0)", hypervisor: hypervisor, dom0: dom0, guest: guest) }
        defer { for relay in relays { relay.close() } }
        // Each relay reserves 2 + its poll and cancel; the mailbox keeps 2 of the 8.
        try worker.addQueue(relays[0].queue)
        #expect(throws: BackendWorkerError.capacity(resource: "engine entries", needed: 4, available: 2)) {
            try worker.addQueue(relays[1].queue)
        }
        let thread = Mutex("")
        try worker.perform(on: relays[0].queue) { _ in thread.withLock { $0 = currentThreadName() } }
        #expect(thread.withLock { $0 } == "test-worker")
        worker.stop()
        #expect(relays[0].queue.retirements.load(ordering: .relaxed) == 1, "stop retires the queues it held")
        #expect(throws: BackendWorkerError.workerStopped) { try worker.addQueue(relays[2].queue) }
    }
}
