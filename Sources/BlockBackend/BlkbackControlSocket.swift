import Dispatch
import Glibc
import Synchronization
import SystemCalls

/// The block backend's control socket (Protocols/blkback-restart.md, "Upgrade"): how a
/// new backend process asks the running one to hand its devices over.
///
/// A Unix stream socket, mode 0600, in the restart state directory. The new process sends
/// the line `take-over`; the running one stops taking requests, drains what is in flight,
/// answers `drained N` (N: requests still in flight after the drain's limit, which the
/// new process re-executes) and exits without closing its devices, so the client then
/// reads end of file. Any other line is answered `error unknown command` and ignored.
public final class BlkbackControlSocket: Sendable {
    /// The socket's path in a restart state directory.
    public static func path(restartDirectory: String) -> String { restartDirectory + "/control.socket" }

    /// The line a client sends, and the reply's first word.
    static let request = "take-over"
    static let reply = "drained"

    let descriptor: Int32
    /// Where it listens.
    public let path: String

    /// Listens at `path` (a stale socket file from an earlier process is replaced) and
    /// serves clients on a thread of its own: each `take-over` runs `handOver` (which
    /// returns the requests left in flight), answers, then calls `exit`.
    public init(path: String, handOver: @escaping @Sendable () async -> Int,
                exit: @escaping @Sendable () -> Void) throws(BlockBackendError) {
        unlink(path)
        let fd = try Self.socket(path)
        let bound = Self.withAddress(path) { bind(fd, $0, $1) }
        guard bound == 0, chmod(path, 0o600) == 0, listen(fd, 4) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw .restartState(.file(path: path, call: "bind/listen", errno: code))
        }
        descriptor = fd
        self.path = path
        // A thread of its own: the loop blocks in accept(2) for the backend's whole life,
        // and hand-over waits for Swift concurrency; on a thread of Dispatch's pool it
        // would hold one of the few threads that work needs.
        let started = startDetachedThread {
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 {
                    if errno == EINTR || errno == ECONNABORTED { continue }
                    return
                }
                guard Self.readLine(client) == Self.request else {
                    Self.write(client, "error unknown command\n")
                    Glibc.close(client)
                    continue
                }
                let left = Self.blocking(handOver)
                Self.write(client, "\(Self.reply) \(left)\n")
                // The client's end of file comes with this process's exit.
                exit()
                Glibc.close(client)
            }
        }
        if started != 0 {
            unlink(path)
            Glibc.close(fd)
            throw .restartState(.file(path: path, call: "pthread_create", errno: started))
        }
    }

    /// Stops listening and removes the socket file (the backend stopped: there is nothing
    /// to take over). The accepting thread sees its accept fail and ends.
    public func close() {
        unlink(path)
        shutdown(descriptor, Int32(SHUT_RDWR))
    }

    /// Asks the backend listening at `path` to hand its devices over and waits until it
    /// has exited. Returns the requests it left in flight, or nil if nothing listens there
    /// (no backend runs: nothing to take over from).
    public static func requestTakeOver(path: String) throws(BlockBackendError) -> Int? {
        let fd = try socket(path)
        defer { Glibc.close(fd) }
        guard withAddress(path, { connect(fd, $0, $1) }) == 0 else {
            if errno == ENOENT || errno == ECONNREFUSED { return nil }
            throw .restartState(.file(path: path, call: "connect", errno: errno))
        }
        write(fd, request + "\n")
        let answer = readLine(fd)
        let words = answer?.split(separator: " ") ?? []
        guard words.count == 2, words[0] == Substring(reply), let left = Int(words[1]) else {
            throw .restartState(.inconsistent("the running backend answered \(answer ?? "nothing") to take-over"))
        }
        // Its exit closes the connection.
        var byte: UInt8 = 0
        while Glibc.read(fd, &byte, 1) > 0 || errno == EINTR {}
        return left
    }

    static func socket(_ path: String) throws(BlockBackendError) -> Int32 {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .restartState(.file(path: path, call: "socket", errno: errno)) }
        return fd
    }

    static func withAddress(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            errno = ENAMETOOLONG
            return -1
        }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }

    /// One line (at most 256 bytes, newline dropped), or nil at end of file first.
    static func readLine(_ fd: Int32) -> String? {
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while line.count < 256 {
            let n = Glibc.read(fd, &byte, 1)
            if n < 0, errno == EINTR { continue }
            guard n == 1 else { return nil }
            if byte == UInt8(ascii: "\n") { return String(decoding: line, as: UTF8.self) }
            line.append(byte)
        }
        return String(decoding: line, as: UTF8.self)
    }

    static func write(_ fd: Int32, _ text: String) {
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { return }
            bytes = bytes.dropFirst(n)
        }
    }

    /// Runs `body` to the end from a thread outside Swift concurrency.
    static func blocking(_ body: @escaping @Sendable () async -> Int) -> Int {
        let result = Mutex(0)
        let done = DispatchSemaphore(value: 0)
        Task {
            let value = await body()
            result.withLock { $0 = value }
            done.signal()
        }
        done.wait()
        return result.withLock { $0 }
    }
}
