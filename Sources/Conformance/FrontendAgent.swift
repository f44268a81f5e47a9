import Dispatch
import Glibc
import Synchronization

/// The suite's end of `xensplit-agent` (Sources/xensplit-agent), the user side of a kernel
/// frontend: a program beside the frontend (in a domU, on its console) that does block I/O
/// on its disk and sends and receives frames on its interface when asked. The stream is a
/// character device or pty (on Xen, the domU console's pty that xenconsoled made), put in
/// raw mode. The line protocol is Protocols/conformance/agent.md: commands "SEQ VERB ...",
/// replies "XSA SEQ ...", anything else on the line (a console's own output) skipped.
public final class FrontendAgent: @unchecked Sendable {
    // SAFETY (@unchecked): `fd` is written under `writing`; everything else is in `state`.

    /// The stream's path, for messages.
    public let path: String
    /// Closed by the reader when it stops (``close()``, or the stream's end).
    private let fd: Int32
    private let writing = Mutex<Void>(())
    private let state = Mutex(State())

    private struct State {
        var nextSequence: UInt64 = 1
        var waiters: [UInt64: Waiter] = [:]
        /// Commands posted without a wait (frames sent), whose reply is still to come.
        var posted: Set<UInt64> = []
        /// The first error a posted command was answered with, until it is reported.
        var postedError: String?
        /// Why the stream ended, once it has.
        var closed: String?
        /// ``close()`` was called: the reader stops at its next look.
        var closing = false
    }

    private final class Waiter: @unchecked Sendable {
        // SAFETY (@unchecked): `lines` is touched only under the agent's state lock.
        var lines: [String] = []
        let isLast: @Sendable (String) -> Bool
        let done = DispatchSemaphore(value: 0)
        init(isLast: @escaping @Sendable (String) -> Bool) { self.isLast = isLast }
    }

    /// Opens the stream at `path`, sets it raw and checks that an agent answers (within
    /// `within`: a console may first replay what the guest printed before).
    public init(path: String, within: Duration = .seconds(30)) throws(PeerError) {
        self.path = path
        fd = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard fd >= 0 else { throw PeerError.platform("opening the agent's stream \(path): \(String(cString: strerror(errno)))") }
        var mode = termios()
        if tcgetattr(fd, &mode) == 0 {
            cfmakeraw(&mode)
            tcsetattr(fd, TCSANOW, &mode)
        }
        AgentReader(agent: self).start()
        let nonce = UInt64.random(in: 1 ... UInt64.max)
        do throws(PeerError) {
            let answer = try call("hello \(nonce)", within: within)
            guard answer.first?.hasSuffix(" \(nonce)") == true else {
                throw PeerError.unusable("the agent on \(path) answered hello with \(answer.first ?? "nothing")")
            }
        } catch {
            close()
            throw error
        }
    }

    /// Stops the reader, which closes the stream; calls after it fail.
    public func close() {
        state.withLock { $0.closing = true }
    }

    /// Sends `command` (and the lines of its body) and waits for its reply lines, up to the
    /// one `isLast` accepts (by default the first). The words after "XSA SEQ" are returned;
    /// an "error ..." reply is thrown.
    @discardableResult
    public func call(_ command: String, body: [String] = [], within: Duration,
                     isLast: @escaping @Sendable (String) -> Bool = { _ in true }) throws(PeerError) -> [String] {
        let waiter = Waiter(isLast: isLast)
        let sequence = try register { $0.waiters[$1] = waiter }
        try send(([ "\(sequence) \(command)" ] + body).joined(separator: "\n") + "\n")
        let timedOut = waiter.done.wait(timeout: .now() + .milliseconds(Int(within / .milliseconds(1)))) == .timedOut
        let (lines, closed): ([String], String?) = state.withLock { state in
            state.waiters[sequence] = nil
            return (waiter.lines, state.closed)
        }
        if timedOut {
            throw PeerError.unusable("the agent on \(path) did not finish `\(command.prefix(40))` within \(within)\(closed.map { " (\($0))" } ?? "") (\(lines.count) reply lines)")
        }
        if let error = lines.first(where: { $0.hasPrefix("error ") }) {
            throw PeerError.badResponse("the agent: \(error.dropFirst(6))")
        }
        // Woken by the stream's end, not by the reply's last line.
        guard let last = lines.last, isLast(last) else {
            throw PeerError.unusable("the agent's stream \(path) ended (\(closed ?? "closed")) before `\(command.prefix(40))` was answered")
        }
        return lines
    }

    /// Sends `command` without waiting for its reply; an error it is answered with is thrown
    /// by a later ``post(_:)`` or ``checkPosted()``. At most `outstanding` stay unanswered.
    public func post(_ command: String, outstanding: Int = 32) throws(PeerError) {
        try checkPosted()
        let deadline = ContinuousClock.now + .seconds(30)
        while state.withLock({ $0.posted.count }) >= outstanding {
            guard ContinuousClock.now < deadline else { throw PeerError.unusable("the agent on \(path) answered none of \(outstanding) commands within 30 s") }
            usleep(200)
        }
        let sequence = try register { $0.posted.insert($1) }
        try send("\(sequence) \(command)\n")
    }

    /// Throws the first error a posted command was answered with.
    public func checkPosted() throws(PeerError) {
        if let error = state.withLock({ state -> String? in
            defer { state.postedError = nil }
            return state.postedError
        }) { throw PeerError.badResponse("the agent: \(error)") }
    }

    private func register(_ body: (inout State, UInt64) -> Void) throws(PeerError) -> UInt64 {
        let result: Result<UInt64, PeerError> = state.withLock { state in
            if let closed = state.closed { return .failure(PeerError.unusable("the agent's stream \(path) ended: \(closed)")) }
            let sequence = state.nextSequence
            state.nextSequence += 1
            body(&state, sequence)
            return .success(sequence)
        }
        return try result.get()
    }

    private func send(_ text: String) throws(PeerError) {
        let bytes = Array(text.utf8)
        let failure: Int32? = writing.withLock { _ in
            if state.withLock({ $0.closed != nil }) { return EBADF }
            var offset = 0
            while offset < bytes.count {
                let n = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                if n < 0 {
                    if errno == EINTR || errno == EAGAIN { continue }
                    return errno
                }
                offset += n
            }
            return nil
        }
        if let failure { throw PeerError.platform("writing to the agent's stream \(path): \(String(cString: strerror(failure)))") }
    }

    /// The reader: splits the stream into lines and hands each reply to its waiter.
    fileprivate func readLoop() {
        var pending: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        var why = "end of stream"
        while true {
            // A read on a pty does not end when another thread closes it: look every 200 ms.
            if state.withLock({ $0.closing }) {
                why = "closed by the suite"
                break
            }
            var look = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&look, 1, 200)
            if ready == 0 || (ready < 0 && errno == EINTR) { continue }
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR || errno == EAGAIN { continue }
            if n < 0 { why = String(cString: strerror(errno)) }
            if n <= 0 { break }
            var start = 0
            for i in 0 ..< n where buffer[i] == UInt8(ascii: "\n") {
                pending += buffer[start ..< i]
                deliver(pending)
                pending.removeAll(keepingCapacity: true)
                start = i + 1
            }
            pending += buffer[start ..< n]
        }
        let ended = why
        // Under the write lock, so no command is written to a closed (or reused) descriptor.
        let waiters = writing.withLock { _ in
            let waiters = state.withLock { state in
                state.closed = ended
                return Array(state.waiters.values)
            }
            Glibc.close(fd)
            return waiters
        }
        for waiter in waiters { waiter.done.signal() }
    }

    private func deliver(_ raw: [UInt8]) {
        var line = String(decoding: raw, as: UTF8.self)
        // A console adds carriage returns; a guest's own output may share the line's start.
        while line.hasSuffix("\r") { line.removeLast() }
        guard let marker = line.range(of: "XSA ") else { return }
        let words = line[marker.upperBound...].split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
        guard words.count == 2, let sequence = UInt64(words[0]), sequence > 0 else { return }
        let reply = String(words[1])
        let waiter: Waiter? = state.withLock { state in
            if state.posted.remove(sequence) != nil {
                if reply.hasPrefix("error "), state.postedError == nil { state.postedError = String(reply.dropFirst(6)) }
                return nil
            }
            guard let waiter = state.waiters[sequence] else { return nil }
            waiter.lines.append(reply)
            return waiter.isLast(reply) || reply.hasPrefix("error ") ? waiter : nil
        }
        waiter?.done.signal()
    }
}

/// The agent's reader, on a thread of its own: a read blocks until the guest writes.
private final class AgentReader: @unchecked Sendable {
    // SAFETY (@unchecked): holds only the agent, which is thread-safe.
    let agent: FrontendAgent
    init(agent: FrontendAgent) { self.agent = agent }

    func start() {
        let box = Unmanaged.passRetained(self)
        var thread = pthread_t()
        let created = pthread_create(&thread, nil, { raw in
            let reader = Unmanaged<AgentReader>.fromOpaque(raw!).takeRetainedValue()
            reader.agent.readLoop()
            return nil
        }, box.toOpaque())
        if created == 0 { pthread_detach(thread) } else { box.release() }
    }
}
