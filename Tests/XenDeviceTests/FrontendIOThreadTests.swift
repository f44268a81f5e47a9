import Glibc
import Synchronization
import Testing
import XenPlatform
import XenTesting
@testable import XenDevice

/// A device's rings, faked: work the test submits waits on the board, the thread's
/// "requests" take it, the test answers it on the board (a response) and notifies.
final class FakeBoard: Sendable {
    struct State {
        var waiting: [Int] = []
        var sent: [Int] = []
        var responses: [Int] = []
        var done: [Int] = []
    }

    let state = Mutex(State())

    func submit(_ work: Int) { state.withLock { $0.waiting.append(work) } }
    func respond(_ work: Int) { state.withLock { $0.responses.append(work) } }
    var sent: [Int] { state.withLock { $0.sent } }
    var done: [Int] { state.withLock { $0.done } }
}

/// The fake device's ``FrontendRingService``: what it keeps per request lives here, on the
/// thread, and comes back from ``FrontendIOThread/stop()``.
struct FakeRings: FrontendRingService {
    let board: FakeBoard
    var inFlight: [Int] = []
    var consumed: [Int] = []
    var pushes = 0

    mutating func consumeResponses() -> Bool {
        let answered = board.state.withLock { s in
            defer { s.responses = [] }
            s.done += s.responses
            return s.responses
        }
        inFlight.removeAll { answered.contains($0) }
        consumed += answered
        return !answered.isEmpty
    }

    mutating func produceRequests() -> Bool {
        let taken = board.state.withLock { s in
            defer { s.waiting = [] }
            s.sent += s.waiting
            return s.waiting
        }
        inFlight += taken
        return !taken.isEmpty
    }

    mutating func pushRequests() { pushes += 1 }

    mutating func finalCheckForResponses() -> Bool { board.state.withLock { !$0.responses.isEmpty } }

    var awaitsResponses: Bool { !inFlight.isEmpty }

    var portCount: Int { 1 }
}

/// A loop source on a pipe: each byte written to it is served on the I/O thread, and a
/// byte 0xFF makes it report itself done.
final class PipeSource: FrontendLoopSource, Sendable {
    struct Seen {
        var bytes: [UInt8] = []
        var threads: Set<String> = []
        var closed = 0
    }

    let pipe: WakePipe
    let seen = Mutex(Seen())

    init() throws {
        pipe = try WakePipe()
    }

    func send(_ byte: UInt8) {
        var byte = byte
        _ = write(pipe.writeFD, &byte, 1)
    }

    var bytes: [UInt8] { seen.withLock { $0.bytes } }

    var loopDescriptor: Int32 { pipe.readFD }

    func loopEvents() -> Int16 { Int16(POLLIN) }

    func serve(revents: Int16) -> FrontendLoopProgress {
        guard revents & Int16(POLLIN) != 0 else { return .idle }
        var byte: UInt8 = 0
        guard read(pipe.readFD, &byte, 1) == 1 else { return .idle }
        seen.withLock {
            $0.bytes.append(byte)
            $0.threads.insert(threadName())
        }
        return byte == 0xFF ? .done : .busy
    }

    func frontendClosed() { seen.withLock { $0.closed += 1 } }
}

/// The calling thread's name.
func threadName() -> String {
    ((try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? "").trimmingCharacters(in: .newlines)
}

/// An I/O thread of a fake device on a guest's event channel, and the backend's end of it.
struct FrontendRig {
    let hypervisor: InProcessHypervisor
    let context: FrontendIOContext
    let board = FakeBoard()
    let channel: FailingEventChannel
    let backend: any EventChannel
    let backendPort: EventPort
    let thread: FrontendIOThread<FakeRings>

    init() throws {
        hypervisor = try InProcessHypervisor()
        let guest = try hypervisor.createDomain(name: "front")
        channel = FailingEventChannel(try hypervisor.platform(for: guest).openEventChannel())
        let port = try channel.allocateUnbound(remote: .dom0)
        backend = try hypervisor.platform(for: .dom0).openEventChannel()
        backendPort = try backend.bindInterdomain(remote: guest, remotePort: port)
        context = try FrontendIOContext()
        thread = FrontendIOThread(name: "fakefront", context: context, eventChannel: channel, logger: quiet)
        try thread.start(FakeRings(board: board))
    }

    /// Waits until the thread sleeps in poll, so only a wake-up or an event moves it on.
    func asleep() async throws {
        try await eventually("the I/O thread sleeps") { context.wakeUp.sleeping.load(ordering: .sequentiallyConsistent) }
    }

    /// Runs a job on the thread (on the pool once it stopped) and waits for it: every
    /// pass the thread made before is over.
    func pass() async {
        await withTaskExecutorPreference(context.executor) {}
    }

    func close() {
        channel.close()
        backend.close()
    }
}

@Suite("XenDevice's frontend I/O thread, with a fake device")
struct FrontendIOThreadTests {
    @Test func aSubmitterWakesTheSleepingThreadAndTheEventChannelBringsResponses() async throws {
        let rig = try FrontendRig()
        defer { rig.close() }
        try await rig.asleep()
        rig.board.submit(1)
        rig.context.wakeUp.wakeIfSleeping()
        try await eventually("the thread wrote the request") { rig.board.sent == [1] }
        try await rig.asleep()
        rig.board.respond(1)
        try rig.backend.notify(rig.backendPort)
        try await eventually("the thread consumed the response") { rig.board.done == [1] }
        let final = try #require(rig.thread.stop())
        #expect(final.consumed == [1])
        #expect(final.inFlight.isEmpty)
        #expect(final.pushes > 0)
        #expect(rig.thread.waitFailures == 0)
        #expect(rig.thread.channelFailure == nil)
    }

    @Test func executorJobsRunOnTheThreadWhileItRunsAndOnThePoolOnceItStopped() async throws {
        let rig = try FrontendRig()
        defer { rig.close() }
        // Until the thread runs, jobs go to the pool: wait for it.
        try await rig.asleep()
        let onThread = await withTaskExecutorPreference(rig.context.executor) { (threadName(), rig.context.onIOThread) }
        #expect(onThread.0 == "fakefront-io")
        #expect(onThread.1)
        #expect(!rig.context.onIOThread)
        _ = rig.thread.stop()
        let afterStop = await withTaskExecutorPreference(rig.context.executor) { (threadName(), rig.context.onIOThread) }
        #expect(afterStop.0 != "fakefront-io")
        #expect(!afterStop.1)
        #expect(rig.context.ioThread.load(ordering: .acquiring) == 0)
    }

    @Test func stopJoinsTheThreadAndHandsBackWhatItHeld() async throws {
        let rig = try FrontendRig()
        defer { rig.close() }
        rig.board.submit(1)
        rig.board.submit(2)
        rig.context.wakeUp.wake()
        try await eventually("both requests written") { rig.board.sent == [1, 2] }
        rig.board.respond(2)
        let final = try #require(rig.thread.stop())
        // Answers published before the stop count, even unnotified: a last look takes them.
        #expect(final.consumed == [2])
        #expect(final.inFlight == [1])
        #expect(rig.thread.stop() == nil, "a joined thread is not joined twice")
        // Nothing serves the board any more.
        rig.board.submit(3)
        rig.context.wakeUp.wake()
        await rig.pass()
        #expect(rig.board.sent == [1, 2])
    }

    @Test func aLoopSourceIsServedOnTheThreadUntilDetachedDoneOrClosed() async throws {
        let rig = try FrontendRig()
        defer { rig.close() }
        let kept = try PipeSource()
        let finishing = try PipeSource()
        #expect(rig.context.attach(kept))
        #expect(rig.context.attach(finishing))
        kept.send(7)
        finishing.send(0xFF)
        try await eventually("both sources served") { kept.bytes == [7] && finishing.bytes == [0xFF] }
        #expect(kept.seen.withLock { $0.threads } == ["fakefront-io"])
        // Done: dropped, so later input is not served.
        finishing.send(1)
        kept.send(8)
        try await eventually("the kept source served again") { kept.bytes == [7, 8] }
        await rig.pass()
        #expect(finishing.bytes == [0xFF])
        // Detached: the thread no longer calls it once detach returns.
        rig.context.detach(kept)
        kept.send(9)
        rig.context.wakeUp.wake()
        await rig.pass()
        #expect(kept.bytes == [7, 8])
        // Closed: attached sources are told, new ones refused.
        let last = try PipeSource()
        #expect(rig.context.attach(last))
        rig.context.close()
        #expect(last.seen.withLock { $0.closed } == 1)
        #expect(kept.seen.withLock { $0.closed } == 0)
        #expect(!rig.context.attach(try PipeSource()))
        _ = rig.thread.stop()
    }

    @Test func aFailingEventChannelIsGivenUpAndTheRingsLookedAtOnATimer() async throws {
        let rig = try FrontendRig()
        defer { rig.close() }
        rig.board.submit(1)
        rig.board.submit(2)
        rig.context.wakeUp.wake()
        try await eventually("both requests written") { rig.board.sent == [1, 2] }
        try await rig.asleep()
        rig.channel.failPendingReads(with: .eventChannel("test", errno: EIO))
        rig.board.respond(1)
        try rig.backend.notify(rig.backendPort)
        try await eventually("the thread gave the channel up") { rig.thread.channelFailure != nil }
        #expect(rig.thread.waitFailures == 1)
        // With a request in flight and no channel, only the timer finds this answer.
        rig.board.respond(2)
        try await eventually("the unnotified answer consumed") { rig.board.done == [1, 2] }
        #expect(rig.channel.failedPendingReads == 1, "the failing channel was read once, then left alone")
        _ = rig.thread.stop()
    }
}
