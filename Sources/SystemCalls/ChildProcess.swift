import Glibc
import Synchronization

/// A program started with posix_spawn, for the tests, the benchmarks and the CLIs.
///
/// It exists because Foundation's `Process.run` reads /proc/self/fd to find the highest
/// descriptor and crashed intermittently when that directory was long. Here the child gets
/// exactly its 0, 1 and 2 (everything from 3 up is closed in the child where glibc can),
/// an empty signal mask and default signal dispositions, whatever the spawning thread had
/// blocked or ignored.
///
/// The child is reaped exactly once, under a lock; until then its pid cannot be reused, so
/// ``signal(_:)`` never reaches another process.
public final class ChildProcess: Sendable {
    /// Where one of the child's standard streams goes.
    public enum Stream: Sendable {
        /// The parent's own descriptor.
        case inherit
        /// /dev/null.
        case null
        /// A copy of the parent's descriptor (the parent keeps and closes its own).
        case fileDescriptor(Int32)
        /// The file at the path, opened by the child: read for input; created or
        /// truncated for output.
        case file(String)
        /// A pipe whose other end the parent holds: write it with ``writeStandardInput(_:)``,
        /// read it with ``readStandardOutput(upTo:)`` or ``collectOutput()``.
        case pipe
        /// For standard error only: wherever standard output went (one combined stream).
        case standardOutput
    }

    /// How the child ended.
    public enum ExitStatus: Hashable, Sendable, CustomStringConvertible {
        /// It exited with this code (0 to 255).
        case exited(Int32)
        /// A signal ended it.
        case signalled(Int32)
        /// Something other than this object reaped it, so its status is unknown.
        case lost

        /// Whether it exited with code 0.
        public var succeeded: Bool { self == .exited(0) }

        /// One number as Foundation's `terminationStatus` gave it: the exit code, or the
        /// number of the signal that ended it (-1 when lost).
        public var code: Int32 {
            switch self {
            case let .exited(code): return code
            case let .signalled(signal): return signal
            case .lost: return -1
            }
        }

        /// Decodes a wait status as waitpid fills it.
        init(waitStatus: Int32) {
            let signal = waitStatus & 0x7f
            self = signal == 0 ? .exited((waitStatus >> 8) & 0xff) : .signalled(signal)
        }

        public var description: String {
            switch self {
            case let .exited(code): return "exit code \(code)"
            case let .signalled(signal): return "signal \(signal) (\(String(cString: strsignal(signal))))"
            case .lost: return "status lost (reaped elsewhere)"
            }
        }
    }

    /// posix_spawn or one of its set-up steps failed.
    public struct SpawnError: Error, CustomStringConvertible {
        /// The program that was to run.
        public let executable: String
        /// What failed (`posix_spawn`, `pipe2`, a file action).
        public let step: String
        /// Its errno.
        public let errno: Errno

        public var description: String { "cannot start \(executable): \(step) failed with \(errno)" }
    }

    /// The child's process id.
    public let pid: pid_t
    /// The program, as given.
    public let executable: String
    /// The parent's read ends of the standard output and error pipes (-1 where not a pipe).
    private let outputPipe: Int32
    private let errorPipe: Int32
    private struct State {
        var status: ExitStatus?
        /// The parent's write end of the standard input pipe, until closed.
        var inputPipe: Int32
    }
    private let state: Mutex<State>

    /// Starts `executable` (a path, or a bare name looked up on PATH) with `arguments`
    /// (not counting the program name, which is `executable`), in `environment` (nil:
    /// this process's). Throws ``SpawnError`` if it cannot be started.
    public init(_ executable: String, _ arguments: [String] = [], environment: [String: String]? = nil,
                standardInput: Stream = .inherit, standardOutput: Stream = .inherit,
                standardError: Stream = .inherit) throws {
        self.executable = executable
        func failed(_ step: String, _ code: Int32) -> SpawnError {
            SpawnError(executable: executable, step: step, errno: Errno(code: code))
        }
        var actions = posix_spawn_file_actions_t()
        var attributes = posix_spawnattr_t()
        guard posix_spawn_file_actions_init(&actions) == 0 else { throw failed("posix_spawn_file_actions_init", Glibc.errno) }
        defer { posix_spawn_file_actions_destroy(&actions) }
        guard posix_spawnattr_init(&attributes) == 0 else { throw failed("posix_spawnattr_init", Glibc.errno) }
        defer { posix_spawnattr_destroy(&attributes) }

        // Pipe ends: the parent's (kept) and the child's (closed here once it is spawned).
        var parentEnds: [Int32] = [-1, -1, -1]
        var childEnds: [Int32] = []
        var spawned = false
        defer {
            for fd in childEnds { close(fd) }
            if !spawned { for fd in parentEnds where fd >= 0 { close(fd) } }
        }

        let streams = [standardInput, standardOutput, standardError]
        for (target, stream) in streams.enumerated() {
            let target = Int32(target)
            var result: Int32 = 0
            switch stream {
            case .inherit:
                break
            case .null:
                result = posix_spawn_file_actions_addopen(&actions, target, "/dev/null", target == 0 ? O_RDONLY : O_WRONLY, 0)
            case let .fileDescriptor(fd):
                result = posix_spawn_file_actions_adddup2(&actions, fd, target)
            case let .file(path):
                let flags = target == 0 ? O_RDONLY : O_WRONLY | O_CREAT | O_TRUNC
                result = posix_spawn_file_actions_addopen(&actions, target, path, flags, 0o644)
            case .pipe:
                var ends: [Int32] = [-1, -1]
                // pipe2 is hidden from Swift; a spawn racing the fcntl gets no copy where the
                // child closes every descriptor from 3 up.
                guard pipe(&ends) == 0 else { throw failed("pipe", Glibc.errno) }
                for fd in ends { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
                // The child reads its stdin from the read end and writes the others.
                let (parentEnd, childEnd) = target == 0 ? (ends[1], ends[0]) : (ends[0], ends[1])
                parentEnds[Int(target)] = parentEnd
                childEnds.append(childEnd)
                result = posix_spawn_file_actions_adddup2(&actions, childEnd, target)
            case .standardOutput:
                guard target == 2 else { throw failed("standard input set to .standardOutput", EINVAL) }
                result = posix_spawn_file_actions_adddup2(&actions, 1, 2)
            }
            if result != 0 { throw failed("the file action for descriptor \(target)", result) }
        }
        // Last, so the duplicated descriptors above are already in place.
        if let closeFrom = ChildProcess.addCloseFrom {
            let result = closeFrom(&actions, 3)
            if result != 0 { throw failed("posix_spawn_file_actions_addclosefrom_np", result) }
        }

        var none = sigset_t()
        sigemptyset(&none)
        var all = sigset_t()
        sigfillset(&all)
        var result = posix_spawnattr_setsigmask(&attributes, &none)
        if result == 0 { result = posix_spawnattr_setsigdefault(&attributes, &all) }
        if result == 0 { result = posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)) }
        if result != 0 { throw failed("posix_spawnattr_set*", result) }

        let argv = ([executable] + arguments).map { strdup($0) }
        defer { for pointer in argv { free(pointer) } }
        let envp = environment.map { $0.map { strdup("\($0.key)=\($0.value)") } }
        defer { for pointer in envp ?? [] { free(pointer) } }

        var child: pid_t = 0
        let spawn = executable.contains("/") ? posix_spawn : posix_spawnp
        result = (argv + [nil]).withUnsafeBufferPointer { arguments in
            if let envp {
                return (envp + [nil]).withUnsafeBufferPointer { variables in
                    spawn(&child, executable, &actions, &attributes, arguments.baseAddress!, variables.baseAddress!)
                }
            }
            return spawn(&child, executable, &actions, &attributes, arguments.baseAddress!, environ)
        }
        if result != 0 { throw failed(executable.contains("/") ? "posix_spawn" : "posix_spawnp", result) }
        spawned = true
        pid = child
        outputPipe = parentEnds[1]
        errorPipe = parentEnds[2]
        state = Mutex(State(status: nil, inputPipe: parentEnds[0]))
    }

    deinit {
        for fd in [outputPipe, errorPipe] where fd >= 0 { close(fd) }
        let running = state.withLock { state -> Bool in
            if state.inputPipe >= 0 { close(state.inputPipe) }
            return state.status == nil
        }
        // Nobody waits any more: reap it when it ends, so it leaves no zombie.
        if running {
            let pid = self.pid
            ChildProcess.detach {
                var status: Int32 = 0
                while waitpid(pid, &status, 0) < 0 && Glibc.errno == EINTR {}
            }
        }
    }

    /// Blocks until the child has ended (retrying EINTR); how it ended. Any number of
    /// threads may wait; the child is reaped once.
    @discardableResult
    public func wait() -> ExitStatus {
        if let status = state.withLock({ $0.status }) { return status }
        // Wait without reaping, so the pid stays ours until `reap` records the status.
        var info = siginfo_t()
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) < 0 && Glibc.errno == EINTR {}
        return state.withLock { state in
            reap(&state, blocking: true)
            return state.status ?? .lost
        }
    }

    /// Waits for the child on a thread of its own, never one of the concurrency pool's.
    @discardableResult
    public func exited() async -> ExitStatus {
        await withCheckedContinuation { (continuation: CheckedContinuation<ExitStatus, Never>) in
            ChildProcess.detach { continuation.resume(returning: self.wait()) }
        }
    }

    /// How the child ended, or nil while it runs (reaps it if it has just ended).
    public var status: ExitStatus? {
        state.withLock { state in
            reap(&state, blocking: false)
            return state.status
        }
    }

    /// Whether the child has not ended yet.
    public var isRunning: Bool { status == nil }

    /// Sends `signal` to the child unless it has already been reaped; whether it was sent.
    @discardableResult
    public func signal(_ signal: Int32) -> Bool {
        state.withLock { state in
            reap(&state, blocking: false)
            return state.status == nil && kill(pid, signal) == 0
        }
    }

    /// Records the status if the child has ended (blocking: it is known to have ended).
    private func reap(_ state: inout State, blocking: Bool) {
        guard state.status == nil else { return }
        var status: Int32 = 0
        while true {
            let reaped = waitpid(pid, &status, blocking ? 0 : WNOHANG)
            if reaped == pid {
                state.status = ExitStatus(waitStatus: status)
                return
            }
            if reaped == 0 { return }
            if Glibc.errno == EINTR { continue }
            state.status = .lost
            return
        }
    }

    // MARK: The parent's pipe ends

    /// Writes all of `bytes` to the standard input pipe (retrying EINTR and short writes).
    public func writeStandardInput(_ bytes: [UInt8]) throws(Errno) {
        let fd = state.withLock { $0.inputPipe }
        guard fd >= 0 else { throw .EBADF }
        var written = 0
        while written < bytes.count {
            let result = bytes.withUnsafeBytes { buffer in
                SystemCall.retrying { Glibc.write(fd, buffer.baseAddress! + written, buffer.count - written) }
            }
            written += try result.get()
        }
    }

    /// Closes the standard input pipe, so the child reads its end.
    public func closeStandardInput() {
        state.withLock { state in
            if state.inputPipe >= 0 { close(state.inputPipe) }
            state.inputPipe = -1
        }
    }

    /// One read of the standard output pipe: what was there (waiting for something), or
    /// nothing at its end.
    public func readStandardOutput(upTo count: Int = 65536) throws(Errno) -> [UInt8] {
        guard outputPipe >= 0 else { throw .EBADF }
        var buffer = [UInt8](repeating: 0, count: count)
        let fd = outputPipe
        let got = try buffer.withUnsafeMutableBytes { bytes in
            SystemCall.retrying { Glibc.read(fd, bytes.baseAddress, bytes.count) }
        }.get()
        buffer.removeSubrange(got...)
        return buffer
    }

    /// Reads the standard output and error pipes (those that are pipes) to their ends,
    /// both at once so the child never blocks on a full one.
    public func collectOutput() throws(Errno) -> (standardOutput: [UInt8], standardError: [UInt8]) {
        var collected: [[UInt8]] = [[], []]
        var open = [outputPipe, errorPipe]
        var chunk = [UInt8](repeating: 0, count: 65536)
        while open.contains(where: { $0 >= 0 }) {
            var polled = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            _ = try SystemCall.retrying { poll(&polled, nfds_t(polled.count), -1) }.get()
            for index in polled.indices where polled[index].fd >= 0 && polled[index].revents != 0 {
                let fd = polled[index].fd
                let got = try chunk.withUnsafeMutableBytes { bytes in
                    SystemCall.retrying { Glibc.read(fd, bytes.baseAddress, bytes.count) }
                }.get()
                if got == 0 { open[index] = -1 } else { collected[index] += chunk[..<got] }
            }
        }
        return (collected[0], collected[1])
    }

    /// Runs `executable` to its end with standard input from /dev/null and its output
    /// and error collected (into one when `combined`): its status and the text.
    public static func run(_ executable: String, _ arguments: [String] = [], environment: [String: String]? = nil,
                           combined: Bool = false) throws -> (status: ExitStatus, standardOutput: String, standardError: String) {
        let child = try ChildProcess(executable, arguments, environment: environment, standardInput: .null,
                                     standardOutput: .pipe, standardError: combined ? .standardOutput : .pipe)
        let output = try child.collectOutput()
        let status = child.wait()
        return (status, String(decoding: output.standardOutput, as: UTF8.self),
                String(decoding: output.standardError, as: UTF8.self))
    }

    // MARK: Helpers

    /// glibc's posix_spawn_file_actions_addclosefrom_np (2.34 and later), found at run
    /// time: Swift does not see the declaration (it needs _GNU_SOURCE).
    private static let addCloseFrom: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
        guard let handle = dlopen(nil, RTLD_NOW), let symbol = dlsym(handle, "posix_spawn_file_actions_addclosefrom_np") else {
            return nil
        }
        return unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
    }()

    /// Whether the child closes every descriptor from 3 up (glibc has closefrom for spawn).
    public static var closesInheritedDescriptors: Bool { addCloseFrom != nil }

    /// Runs `body` on a new detached thread, or here if none can be started.
    private static func detach(_ body: @escaping @Sendable () -> Void) {
        if startDetachedThread(body) != 0 { body() }
    }
}
