import Glibc
import SystemCalls

/// The one place XenStore calls libc: each wrapper retries EINTR (``SystemCall/retrying(_:)``)
/// and turns a failure into ``XenStoreError/systemCall(_:errno:)`` naming the call.
enum Syscall {
    /// Runs `body` until it does not fail with EINTR.
    static func retrying(_ name: @autoclosure () -> String, _ body: () -> Int) throws(XenStoreError) -> Int {
        switch SystemCall.retrying(body) {
        case let .success(value): return value
        case let .failure(errno): throw .systemCall(name(), errno: errno.code)
        }
    }

    /// A new Unix stream socket, close-on-exec, optionally non-blocking.
    static func unixSocket(nonBlocking: Bool) throws(XenStoreError) -> Int32 {
        var type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        if nonBlocking { type |= Int32(SOCK_NONBLOCK.rawValue) }
        return Int32(try retrying("socket(AF_UNIX)") { Int(socket(AF_UNIX, type, 0)) })
    }

    /// Fills a sockaddr_un for `path` and calls `body` with it.
    static func withAddress<T>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) throws(XenStoreError) -> T {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard !bytes.isEmpty, bytes.count < capacity else {
            throw .invalidPath(path: path, reason: "socket path of \(bytes.count) bytes does not fit sun_path (\(capacity - 1))")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }

    /// A listening socket bound at `path` (a stale socket file there is replaced).
    static func listen(path: String) throws(XenStoreError) -> Int32 {
        let fd = try unixSocket(nonBlocking: true)
        do throws(XenStoreError) {
            unlink(path)
            let r = try withAddress(path) { bind(fd, $0, $1) }
            if r != 0 { throw XenStoreError.systemCall("bind(\(path))", errno: errno) }
            // Owner only, set before listen(2): nobody can connect while the mode is the umask's.
            if chmod(path, 0o600) != 0 { throw XenStoreError.systemCall("chmod(\(path), 0600)", errno: errno) }
            _ = try retrying("listen(\(path))") { Int(Glibc.listen(fd, 128)) }
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    /// A blocking socket connected to `path`.
    static func connect(path: String) throws(XenStoreError) -> Int32 {
        let fd = try unixSocket(nonBlocking: false)
        do throws(XenStoreError) {
            let r = try withAddress(path) { Glibc.connect(fd, $0, $1) }
            if r != 0 { throw XenStoreError.systemCall("connect(\(path))", errno: errno) }
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    /// A non-blocking, close-on-exec pipe used to wake a poll loop: (read end, write end).
    static func wakePipe() throws(XenStoreError) -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        _ = try retrying("pipe") { Int(pipe(&fds)) }
        for fd in fds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        return (fds[0], fds[1])
    }

    /// Makes a wake descriptor readable (a pipe's write end, or an eventfd).
    static func signal(_ fd: Int32) {
        var one: UInt64 = 1
        _ = withUnsafeBytes(of: &one) { write(fd, $0.baseAddress, 8) }
    }

    /// Reads whatever a wake descriptor holds (a pipe's bytes, an eventfd's counter) so
    /// that it stops being readable.
    static func drain(_ fd: Int32) {
        var buffer = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        while withUnsafeMutableBytes(of: &buffer, { read(fd, $0.baseAddress, $0.count) }) == 64 {}
    }
}
