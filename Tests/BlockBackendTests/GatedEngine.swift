import Synchronization
import URing

/// Holds back the completions of disk operations while closed, so a test can disconnect a
/// frontend with its I/O provably still in flight, then let the I/O finish.
final class IOGate: Sendable {
    struct State {
        var open = true
        var held = 0
    }

    let state = Mutex(State())

    func close() { state.withLock { $0.open = false } }
    func open() { state.withLock { $0.open = true } }
    var isOpen: Bool { state.withLock { $0.open } }
    /// Completions held back right now.
    var held: Int { state.withLock { $0.held } }
    func setHeld(_ count: Int) { state.withLock { $0.held = count } }
}

/// A thread-pool engine whose disk completions (not polls or cancels) wait for an
/// ``IOGate``; used through ``BlockIOEngineFactory/init(kind:configuration:make:)``.
final class GatedEngine: BlockIOEngine {
    let inner: ThreadPoolEngine
    let gate: IOGate?
    var dataOperations: Set<UInt64> = []
    var ready: [Completion] = []
    var held: [Completion] = []
    var scratch: UnsafeMutableBufferPointer<Completion>

    init(configuration: BlockIOEngineConfiguration, gate: IOGate?) throws(URingError) {
        inner = try ThreadPoolEngine(configuration: configuration)
        self.gate = gate
        scratch = .allocate(capacity: 256)
    }

    deinit { scratch.deallocate() }

    var kind: BlockIOEngineKind { .threads }
    var capacity: Int { inner.capacity }
    var inFlight: Int { inner.inFlight + ready.count + held.count }

    func registerFiles(_ descriptors: [Int32]) throws(URingError) { try inner.registerFiles(descriptors) }
    func updateRegisteredFiles(_ descriptors: [Int32], at offset: Int) throws(URingError) {
        try inner.updateRegisteredFiles(descriptors, at: offset)
    }
    func registerBuffers(_ buffers: [UnsafeMutableRawBufferPointer]) throws(URingError) { try inner.registerBuffers(buffers) }

    func enqueue(_ request: BlockRequest) -> EnqueueOutcome {
        switch request.operation {
        case .pollReadable, .cancel: break
        default: if gate != nil { dataOperations.insert(request.userData) }
        }
        return inner.enqueue(request)
    }

    func submit() throws(URingError) { try inner.submit() }

    func wait(minimum: Int, timeout: Duration?) throws(URingError) {
        let clock = ContinuousClock()
        let deadline = timeout.map { clock.now.advanced(by: $0) }
        while true {
            try inner.wait(minimum: 0, timeout: nil)
            collect()
            if minimum == 0 || !ready.isEmpty || (gate?.isOpen ?? true) && !held.isEmpty { return }
            if let deadline, clock.now >= deadline { return }
            // Short sleeps while holding, so opening the gate is noticed without a wake-up.
            try inner.wait(minimum: 1, timeout: held.isEmpty ? timeout : .milliseconds(10))
            collect()
            if !ready.isEmpty || (gate?.isOpen ?? true) && !held.isEmpty { return }
            if let deadline, clock.now >= deadline { return }
        }
    }

    private func collect() {
        let count = inner.reap(into: scratch)
        for completion in scratch[0..<count] {
            if dataOperations.remove(completion.userData) != nil { held.append(completion) } else { ready.append(completion) }
        }
        if let gate, gate.isOpen {
            ready += held
            held.removeAll()
        }
        gate?.setHeld(held.count)
    }

    func reap(into buffer: UnsafeMutableBufferPointer<Completion>) -> Int {
        collect()
        let count = min(buffer.count, ready.count)
        for index in 0..<count { buffer[index] = ready[index] }
        ready.removeFirst(count)
        return count
    }

    func close() {
        inner.close()
    }
}
