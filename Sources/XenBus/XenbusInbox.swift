import Synchronization
import XenStore

/// What wakes a driver's loop: watch events (coalesced: the loop re-reads everything,
/// so one pending wake-up is as good as many), a close request, or a lost watch.
final class XenbusInbox: Sendable {
    struct Flags {
        var closeRequested = false
        var watchLost = false
        /// A protocol violation reported by the device and not yet acted on (the first
        /// wins: one is enough to refuse the device).
        var violation: XenbusError?
    }

    let stream: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation
    let flags = Mutex(Flags())
    /// What the driver shows the outside.
    let status = Mutex(XenbusDriverStatus())

    init() {
        (stream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    func wake() { continuation.yield() }

    func requestClose() {
        flags.withLock { $0.closeRequested = true }
        continuation.yield()
    }

    func reportViolation(_ error: XenbusError) {
        flags.withLock { $0.violation = $0.violation ?? error }
        continuation.yield()
    }

    func watchEnded() {
        flags.withLock { $0.watchLost = true }
        continuation.yield()
    }

    /// Feeds `watch` into the inbox until the watch ends.
    func pump(_ watch: XenStoreWatch) {
        Task { [self] in
            for await _ in watch { wake() }
            watchEnded()
        }
    }
}

/// What a driver shows the outside while its loop runs: the state it last wrote and
/// the paths it found.
struct XenbusDriverStatus {
    var state: XenbusState = .unknown
    var paths: XenbusDevicePaths?
}

/// A driver's loop running in its task, as both driver kinds expose it: the state it last
/// wrote, the paths it found, a close request and the reason it stopped.
final class XenbusDriverRun: Sendable {
    let inbox: XenbusInbox
    private let runner: Task<XenbusStopReason, Never>

    /// Starts `loop` with a fresh inbox it is given to wake on.
    init(_ loop: @escaping @Sendable (XenbusInbox) async -> XenbusStopReason) {
        let inbox = XenbusInbox()
        self.inbox = inbox
        runner = Task { await loop(inbox) }
    }

    var state: XenbusState { inbox.status.withLock { $0.state } }
    var paths: XenbusDevicePaths? { inbox.status.withLock { $0.paths } }

    func close() async -> XenbusStopReason {
        inbox.requestClose()
        return await stopped()
    }

    func reportViolation(_ error: XenbusError) { inbox.reportViolation(error) }

    func stopped() async -> XenbusStopReason { await runner.value }
}
