import CXenLocal
import Foundation
import Glibc

/// One run of a device hotplug script, as libxl's `device_hotplug` runs one: the script in a
/// process group of its own with the toolstack's environment plus the device's variables,
/// its standard error collected, killed (the whole group, with SIGKILL) when it outlives
/// its timeout.
struct HotplugScriptRun: Sendable {
    /// How the script ended.
    enum Outcome: Sendable, Equatable {
        /// It exited with this status.
        case exited(Int32)
        /// A signal ended it.
        case signalled(Int32)
        /// It ran past the timeout and was killed.
        case timedOut
    }

    let outcome: Outcome
    /// Its standard error, at most ``stderrLimit`` bytes of it.
    let stderr: String

    /// How much standard error is kept: enough for any diagnostic, bounded for a chatty script.
    static let stderrLimit = 64 * 1024

    /// Runs `path` with `arguments` (argv[1...]) on a thread of its own, so waiting for the
    /// script blocks no task. With `networkNamespace` (a namespace file) that thread enters
    /// it first, so the script starts there; the thread ends with the run, so no other work
    /// ever runs in the namespace. Throws the errno posix_spawn (or open, setns) gave when
    /// it could not start.
    static func run(_ path: String, arguments: [String], environment: [String: String],
                    timeout: Duration, networkNamespace: String? = nil) async throws(SpawnFailure) -> HotplugScriptRun {
        let result: Result<HotplugScriptRun, SpawnFailure> = await withCheckedContinuation { continuation in
            Thread {
                continuation.resume(returning: Result { () throws(SpawnFailure) in
                    if let networkNamespace { try enter(networkNamespace) }
                    return try runBlocking(path, arguments: arguments, environment: environment, timeout: timeout)
                })
            }.start()
        }
        return try result.get()
    }

    /// posix_spawn's errno.
    struct SpawnFailure: Error {
        let errno: Int32
    }

    /// Moves the calling thread into the network namespace whose file is `path`.
    static func enter(_ path: String) throws(SpawnFailure) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SpawnFailure(errno: errno) }
        defer { close(fd) }
        let entered = xl_setns_net(fd)
        guard entered == 0 else { throw SpawnFailure(errno: -entered) }
    }

    static func runBlocking(_ path: String, arguments: [String], environment: [String: String],
                            timeout: Duration) throws(SpawnFailure) -> HotplugScriptRun {
        var fds: [Int32] = [-1, -1]
        let piped = xl_pipe_cloexec(&fds)
        guard piped == 0 else { throw SpawnFailure(errno: -piped) }
        let (readEnd, writeEnd) = (fds[0], fds[1])
        defer { close(readEnd) }
        let argv = ([path] + arguments).map { strdup($0) }
        let envp = environment.sorted { $0.key < $1.key }.map { strdup($0.key + "=" + $0.value) }
        defer { (argv + envp).forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = (argv + [nil]).withUnsafeBufferPointer { a in
            (envp + [nil]).withUnsafeBufferPointer { e in
                xl_spawn(path, a.baseAddress, e.baseAddress, writeEnd, &pid)
            }
        }
        close(writeEnd)
        guard spawned == 0 else { throw SpawnFailure(errno: -spawned) }

        let exitFD = xl_pidfd_open(pid)
        defer { if exitFD >= 0 { close(exitFD) } }
        let deadline = ContinuousClock.now + timeout
        var collected: [UInt8] = []
        var readOpen = true
        var exited = false, reaped = false
        var status: Int32 = 0
        while !exited {
            let left = ContinuousClock.now.duration(to: deadline)
            if left <= .zero { break }
            var polled = [pollfd(fd: readOpen ? readEnd : -1, events: Int16(POLLIN), revents: 0),
                          pollfd(fd: exitFD, events: Int16(POLLIN), revents: 0)]
            // Without a pidfd (kernels before 5.3) the exit is checked every 100 ms.
            let cap: Int64 = exitFD >= 0 ? 1_000 : 100
            let ms = Int32(min(cap, max(1, left.components.seconds * 1_000 + left.components.attoseconds / 1_000_000_000_000_000)))
            if poll(&polled, 2, ms) < 0, errno != EINTR { break }
            if readOpen, polled[0].revents != 0 { readOpen = drain(readEnd, into: &collected) }
            if exitFD >= 0 {
                exited = polled[1].revents != 0
            } else if waitpid(pid, &status, WNOHANG) == pid {
                exited = true
                reaped = true
            }
        }
        let outcome: Outcome
        if exited {
            if !reaped { while waitpid(pid, &status, 0) < 0, errno == EINTR {} }
            // What it wrote before exiting is in the pipe; descendants it left may hold the
            // pipe open, so read only what is there now.
            if readOpen, fcntl(readEnd, F_SETFL, O_NONBLOCK) == 0 { _ = drain(readEnd, into: &collected) }
            outcome = (status & 0x7f) == 0 ? .exited((status >> 8) & 0xff) : .signalled(status & 0x7f)
        } else {
            // The group is the script's own (xl_spawn made it), so this reaches only what it started.
            kill(-pid, SIGKILL)
            while waitpid(pid, &status, 0) < 0, errno == EINTR {}
            outcome = .timedOut
        }
        return HotplugScriptRun(outcome: outcome, stderr: String(decoding: collected, as: UTF8.self))
    }

    /// Reads what `fd` holds into `collected` (keeping at most the limit); false at end of file.
    static func drain(_ fd: Int32, into collected: inout [UInt8]) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n == 0 { return false }
            if n < 0 { return errno == EINTR || errno == EAGAIN }
            collected += buffer[0..<min(n, max(0, stderrLimit - collected.count))]
            // A blocking descriptor: one read per readiness, so poll decides when to come back.
            if fcntl(fd, F_GETFL) & O_NONBLOCK == 0 { return true }
        }
    }
}
