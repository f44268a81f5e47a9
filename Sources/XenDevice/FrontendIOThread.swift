import Glibc
import Logging
import Synchronization
import XenPlatform

/// The I/O thread of one frontend connection: it serves the device's rings through its
/// ``FrontendRingService``, runs the tasks of the frontend's ``FrontendExecutor``, serves
/// the attached ``FrontendLoopSource``s, and sleeps in poll(2) on the connection's event
/// channel, the frontend's wake-up pipe and the sources' descriptors. Made with the
/// connection, started once it is Connected (``start(_:)``), stopped and joined when it
/// goes (``stop()``), which hands the service back with whatever it holds.
///
/// A wait that fails (poll, or the event channel's descriptor or pending ports) would
/// otherwise return at once, again and again: the first such failure is logged with its
/// reason and kept (``channelFailure``), every one is counted (``waitFailures``), and the
/// thread stops waiting on the channel. While requests are in flight it then looks at the
/// rings after a wait that doubles from 1 to 64 ms while nothing comes (a poll that fails
/// outright sleeps that long), until the next connection brings a new channel.
public final class FrontendIOThread<Service: FrontendRingService>: @unchecked Sendable {
    // SAFETY (@unchecked): `thread` and `finished` are the creator's before start() and
    // after stop() joined the thread; the thread writes `finished` just before it ends.
    /// The device's short name: the thread is `NAME-io`, log lines start `NAME:`.
    public let name: String
    let context: FrontendIOContext
    let eventChannel: any EventChannel
    let logger: Logger
    let stopping = Atomic<Bool>(false)
    let failures = Atomic<Int>(0)
    let failure = Mutex<PlatformError?>(nil)
    var thread: pthread_t?
    var finished: Service?

    /// A thread for the connection whose rings notify through `eventChannel`, sharing
    /// `context` with the frontend's other connections; not started.
    public init(name: String, context: FrontendIOContext, eventChannel: any EventChannel, logger: Logger) {
        self.name = name
        self.context = context
        self.eventChannel = eventChannel
        self.logger = logger
    }

    /// Failed waits: poll failing, or the event channel reporting an error (the first
    /// one is ``channelFailure``).
    public var waitFailures: Int { failures.load(ordering: .relaxed) }

    /// Why the thread stopped waiting on its event channel, or nil while it waits on it.
    public var channelFailure: PlatformError? { failure.withLock { $0 } }

    /// Starts the thread, which serves `service` until ``stop()``. Called once.
    public func start(_ service: Service) throws(PlatformError) {
        precondition(thread == nil && !stopping.load(ordering: .relaxed), "\(name): an I/O thread starts once")
        let context = Unmanaged.passRetained(FrontendThreadBody { [self] in
            nameThisThread(name + "-io")
            var service = service
            run(&service)
            finished = service
        }).toOpaque()
        var handle = pthread_t()
        let result = pthread_create(&handle, nil, { context in
            guard let context else { return nil }
            Unmanaged<FrontendThreadBody>.fromOpaque(context).takeRetainedValue().body()
            return nil
        }, context)
        guard result == 0 else {
            Unmanaged<FrontendThreadBody>.fromOpaque(context).release()
            throw .system("pthread_create", errno: result)
        }
        thread = handle
    }

    /// Stops and joins the thread; returns the service as the thread left it, after a
    /// last ``FrontendRingService/consumeResponses()`` (answers already published count),
    /// or nil if the thread never started.
    public func stop() -> Service? {
        guard let thread else { return nil }
        stopping.store(true, ordering: .releasing)
        context.wakeUp.wake()
        pthread_join(thread, nil)
        self.thread = nil
        defer { finished = nil }
        return finished
    }

    /// The first and the longest wait, in milliseconds, between looks at the rings once
    /// the event channel failed.
    static var firstBackoff: Int32 { 1 }
    static var longestBackoff: Int32 { 64 }

    private func run(_ service: inout Service) {
        let wakeUp = context.wakeUp
        let executor = context.executor
        let loopSources = context.loopSources
        var fds = [pollfd(fd: eventChannel.fileDescriptor, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: wakeUp.readFD, events: Int16(POLLIN), revents: 0)]
        var (sourcesVersion, sources) = loopSources.snapshot()
        loopSources.served.store(sourcesVersion, ordering: .sequentiallyConsistent)
        context.ioThread.store(UInt(pthread_self()), ordering: .releasing)
        executor.start()
        defer {
            executor.stop()
            context.ioThread.store(0, ordering: .releasing)
            loopSources.served.store(Int.max, ordering: .sequentiallyConsistent)
        }
        /// What the last poll found on each source's descriptor.
        var sourceEvents = [Int16](repeating: 0, count: sources.count)
        var jobs: [UnownedJob] = []
        var backoff = Self.firstBackoff
        while !stopping.load(ordering: .acquiring) {
            var busy = service.consumeResponses()
            // Tasks resumed by those completions run now, and what they submit goes out
            // in this pass.
            if executor.runAll(&jobs) { busy = true }
            if loopSources.version.load(ordering: .sequentiallyConsistent) != sourcesVersion {
                (sourcesVersion, sources) = loopSources.snapshot()
                sourceEvents = [Int16](repeating: 0, count: sources.count)
                loopSources.served.store(sourcesVersion, ordering: .sequentiallyConsistent)
            }
            if !sources.isEmpty, serveSources(sources, &sourceEvents) { busy = true }
            if service.produceRequests() { busy = true }
            service.pushRequests()
            if busy || service.finalCheckForResponses() {
                backoff = Self.firstBackoff
                continue
            }
            wakeUp.sleeping.store(true, ordering: .sequentiallyConsistent)
            // Work queued before the store above did not wake us: send it now.
            if !executor.isEmpty {
                wakeUp.sleeping.store(false, ordering: .relaxed)
                continue
            }
            if service.produceRequests() {
                wakeUp.sleeping.store(false, ordering: .relaxed)
                service.pushRequests()
                continue
            }
            fds.removeSubrange(2...)
            for source in sources {
                fds.append(pollfd(fd: source.loopDescriptor, events: source.loopEvents(), revents: 0))
            }
            // Without the channel, only a wait with a timeout sees the backend's answers.
            let timeout: Int32 = fds[0].fd < 0 && service.awaitsResponses ? backoff : -1
            let ready = poll(&fds, nfds_t(fds.count), timeout)
            let pollErrno = errno
            wakeUp.sleeping.store(false, ordering: .relaxed)
            if ready < 0 {
                guard pollErrno != EINTR else { continue }
                waitFailed(.system("poll of the event channel, wake-up pipe and \(sources.count) sources", errno: pollErrno),
                           &fds)
                usleep(useconds_t(backoff) * 1000)
                backoff = min(2 * backoff, Self.longestBackoff)
                continue
            }
            if ready == 0 { backoff = min(2 * backoff, Self.longestBackoff) }
            for index in sources.indices { sourceEvents[index] = fds[2 + index].revents }
            if let condition = Self.failedCondition(fds[0].revents) {
                waitFailed(.eventChannel("poll of its descriptor \(fds[0].fd) reported \(condition.name)", errno: condition.errno),
                           &fds)
            }
            if fds[1].revents != 0 { wakeUp.drain() }
            if fds[0].revents & Int16(POLLIN) != 0, let error = takePending(atMost: service.portCount) {
                waitFailed(error, &fds)
            }
        }
        // Answers already published count: they need not be sent again.
        _ = service.consumeResponses()
    }

    /// Serves each attached source with what the last poll found for it (clearing that),
    /// dropping those that are done. True when one asks to be served again at once.
    private func serveSources(_ sources: [any FrontendLoopSource], _ events: inout [Int16]) -> Bool {
        var busy = false
        for index in sources.indices {
            let revents = events[index]
            events[index] = 0
            switch sources[index].serve(revents: revents) {
            case .idle: break
            case .busy: busy = true
            case .done: context.loopSources.remove(sources[index])
            }
        }
        return busy
    }

    /// Takes the ports pending on the event channel after poll found it readable (only
    /// then: each look is a system call); the error if that failed.
    private func takePending(atMost ports: Int) -> PlatformError? {
        // At most one event per ring's port: one that fires again meanwhile leaves the
        // channel readable, so the next poll returns at once.
        do {
            try eventChannel.takePending(atMost: ports) { port throws(PlatformError) in try? eventChannel.unmask(port) }
        } catch {
            return error
        }
        return nil
    }

    /// A poll condition on the event channel's descriptor that no read clears: its name,
    /// and the errno a read would report.
    static func failedCondition(_ revents: Int16) -> (name: String, errno: Int32)? {
        if revents & Int16(POLLNVAL) != 0 { return ("POLLNVAL", EBADF) }
        if revents & Int16(POLLERR) != 0 { return ("POLLERR", EIO) }
        if revents & Int16(POLLHUP) != 0 { return ("POLLHUP", EPIPE) }
        return nil
    }

    /// Counts a failed wait; the first one stops the thread waiting on the event channel
    /// (poll skips a negative descriptor) and is logged with its reason.
    private func waitFailed(_ error: PlatformError, _ fds: inout [pollfd]) {
        failures.add(1, ordering: .relaxed)
        guard fds[0].fd >= 0 else { return }
        fds[0].fd = -1
        fds[0].revents = 0
        failure.withLock { $0 = error }
        logger.error("\(name): the I/O thread stopped waiting on its event channel: \(error); until the next connection it looks at the rings every \(Self.firstBackoff)-\(Self.longestBackoff) ms while requests are in flight; later failures are only counted")
    }
}

/// An I/O thread's entry point, carried through pthread_create.
final class FrontendThreadBody {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}
