import Dispatch
import Glibc
import Synchronization
import XenBus

/// Ignores SIGINT's and SIGTERM's default action and calls `handler` (off the signal
/// context) with each one that arrives; keep the result alive as long as it should.
func onStopSignals(_ handler: @escaping @Sendable (Int32) -> Void) -> [DispatchSourceSignal] {
    [SIGINT, SIGTERM].map { sig in
        signal(sig, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        source.setEventHandler { handler(sig) }
        source.resume()
        return source
    }
}

/// SIGINT and SIGTERM turned into something async code can wait for.
final class StopSignal: Sendable {
    private struct State: ~Copyable {
        var stopped = false
        var waiters: [CheckedContinuation<Void, Never>] = []
        var interrupt: (@Sendable () async -> Void)?
        var interrupting: Task<Void, Never>?
    }

    private let state = Mutex(State())

    /// Ignores the signals' default action and delivers them here; keep the result alive.
    func install() -> [DispatchSourceSignal] {
        onStopSignals { [self] _ in fire() }
    }

    /// Records the stop, wakes the waiters and starts the registered interruption.
    func fire() {
        let resume = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            guard !s.stopped else { return [] }
            s.stopped = true
            if let interrupt = s.interrupt { s.interrupting = Task { await interrupt() } }
            s.interrupt = nil
            defer { s.waiters = [] }
            return s.waiters
        }
        for continuation in resume { continuation.resume() }
    }

    /// Returns once a signal arrived.
    func wait() async {
        await withCheckedContinuation { continuation in
            let now = state.withLock { s -> Bool in
                if s.stopped { return true }
                s.waiters.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    /// Runs `body`; a signal meanwhile runs `interrupt` (which should make `body` end).
    /// Returns nil if a signal arrived, after `interrupt` finished; else `body`'s value.
    func interrupting<T: Sendable>(_ body: () async throws -> T,
                                   by interrupt: @escaping @Sendable () async -> Void) async throws -> T? {
        let already = state.withLock { s -> Bool in
            if !s.stopped { s.interrupt = interrupt }
            return s.stopped
        }
        if already {
            await interrupt()
            return nil
        }
        let outcome: Result<T, any Error>
        do { outcome = .success(try await body()) } catch { outcome = .failure(error) }
        let started = state.withLock { s -> Task<Void, Never>? in
            s.interrupt = nil
            return s.interrupting
        }
        if let started {
            await started.value
            return nil
        }
        return try outcome.get()
    }
}

/// Why a frontend's driver stopped, once it has; it fires a ``StopSignal`` then, so a
/// command waiting for a signal also ends when its device or the hypervisor goes.
final class FrontendEnd: Sendable {
    private final class Reason: Sendable {
        let value = Mutex<XenbusStopReason?>(nil)
    }

    private let reason = Reason()
    private let task: Task<XenbusStopReason, Never>

    init(firing stop: StopSignal, when stopped: @escaping @Sendable () async -> XenbusStopReason) {
        let reason = self.reason
        task = Task {
            let why = await stopped()
            reason.value.withLock { $0 = why }
            stop.fire()
            return why
        }
    }

    /// Whether the driver stopped because the hypervisor went away: then nobody can unmap
    /// the grants any more, so closing need not wait for it.
    var hypervisorLost: Bool { reason.value.withLock { $0 } == .connectionLost }

    /// Why the driver stopped (after the command's own close, ``XenbusStopReason/closed``).
    var value: XenbusStopReason { get async { await task.value } }
}

/// The failure a frontend command reports when its driver stopped by itself (`reason`
/// other than ``XenbusStopReason/closed``, which is the command's own close): nil otherwise.
func frontendEnded(_ reason: XenbusStopReason, command: String, device: String) -> CommandFailure? {
    switch reason {
    case .closed: return nil
    case .connectionLost:
        return CommandFailure("\(command): lost the hypervisor: the xenstore connection closed; \(device) is no longer served")
    case .nodeRemoved:
        return CommandFailure("\(command): the toolstack removed \(device); it is no longer served")
    }
}
