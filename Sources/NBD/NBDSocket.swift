import Glibc

// The only place the NBD module makes socket system calls: each call site retries EINTR
// and turns errno into NBDError.system.

/// A connected stream socket, owned: `close()` releases it exactly once.
final class NBDSocket: @unchecked Sendable {
    // @unchecked: `descriptor` is written only by close(), which the owner calls after the
    // connection's thread has stopped using it; shutdown() only reads it.
    private(set) var descriptor: Int32

    init(descriptor: Int32) { self.descriptor = descriptor }

    deinit { if descriptor >= 0 { Glibc.close(descriptor) } }

    func close() {
        if descriptor >= 0 { Glibc.close(descriptor) }
        descriptor = -1
    }

    /// Wakes any thread blocked on this socket; its next call sees end of stream.
    func shutdown() {
        if descriptor >= 0 { _ = Glibc.shutdown(descriptor, Int32(SHUT_RDWR)) }
    }

    /// Reads exactly `buffer.count` bytes; a clean end of stream is `connectionClosed`.
    func readExactly(into buffer: UnsafeMutableRawBufferPointer) throws(NBDError) {
        var done = 0
        while done < buffer.count {
            let result = recv(descriptor, buffer.baseAddress! + done, buffer.count - done, 0)
            if result > 0 {
                done += result
            } else if result == 0 {
                throw .connectionClosed
            } else if errno != EINTR {
                throw .system(call: "recv", errno: errno)
            }
        }
    }

    func readExactly(count: Int) throws(NBDError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var failure: NBDError?
        bytes.withUnsafeMutableBytes { buffer in
            do throws(NBDError) { try readExactly(into: buffer) } catch { failure = error }
        }
        if let failure { throw failure }
        return bytes
    }

    /// Reads and drops `count` bytes through `scratch`, never holding more than it.
    func skip(_ count: UInt64, scratch: UnsafeMutableRawBufferPointer) throws(NBDError) {
        var left = count
        while left > 0 {
            let chunk = Int(min(left, UInt64(scratch.count)))
            try readExactly(into: UnsafeMutableRawBufferPointer(rebasing: scratch[0..<chunk]))
            left -= UInt64(chunk)
        }
    }

    /// Writes every byte; MSG_NOSIGNAL so a vanished peer is an error, not SIGPIPE.
    func writeAll(_ buffer: UnsafeRawBufferPointer) throws(NBDError) {
        var done = 0
        while done < buffer.count {
            let result = send(descriptor, buffer.baseAddress! + done, buffer.count - done, Int32(MSG_NOSIGNAL))
            if result >= 0 {
                done += result
            } else if errno != EINTR {
                throw .system(call: "send", errno: errno)
            }
        }
    }

    /// Writes all of `first` then all of `second` with as few sendmsg calls as the kernel
    /// allows, so a reply header and its data leave together.
    func writeAll(_ first: UnsafeRawBufferPointer, _ second: UnsafeRawBufferPointer) throws(NBDError) {
        var done = 0
        let total = first.count + second.count
        while done < total {
            var vectors = (iovec(), iovec())
            let count: Int32
            if done < first.count {
                vectors.0 = iovec(iov_base: UnsafeMutableRawPointer(mutating: first.baseAddress! + done), iov_len: first.count - done)
                vectors.1 = iovec(iov_base: UnsafeMutableRawPointer(mutating: second.baseAddress), iov_len: second.count)
                count = second.isEmpty ? 1 : 2
            } else {
                let offset = done - first.count
                vectors.0 = iovec(iov_base: UnsafeMutableRawPointer(mutating: second.baseAddress! + offset), iov_len: second.count - offset)
                count = 1
            }
            let result = withUnsafeMutableBytes(of: &vectors) { raw -> Int in
                var message = msghdr()
                message.msg_iov = raw.baseAddress!.assumingMemoryBound(to: iovec.self)
                message.msg_iovlen = Int(count)
                return sendmsg(descriptor, &message, Int32(MSG_NOSIGNAL))
            }
            if result >= 0 {
                done += result
            } else if errno != EINTR {
                throw .system(call: "sendmsg", errno: errno)
            }
        }
    }

    /// Most entries one sendmsg takes (linux/uio.h: UIO_MAXIOV).
    static var maximumVectors: Int { 1024 }

    /// Writes every byte that `vectors` describe, in order, with as few sendmsg calls as
    /// the kernel allows. `vectors` is used up: entries are advanced past what was sent.
    func writeAll(vectors: UnsafeMutableBufferPointer<iovec>) throws(NBDError) {
        var first = 0
        while first < vectors.count, vectors[first].iov_len == 0 { first += 1 }
        while first < vectors.count {
            var message = msghdr()
            message.msg_iov = vectors.baseAddress! + first
            message.msg_iovlen = min(vectors.count - first, Self.maximumVectors)
            var sent = sendmsg(descriptor, &message, Int32(MSG_NOSIGNAL))
            guard sent >= 0 else {
                if errno == EINTR { continue }
                throw .system(call: "sendmsg", errno: errno)
            }
            // Skip what went out, whole entries then part of one.
            while first < vectors.count, sent >= vectors[first].iov_len {
                sent -= vectors[first].iov_len
                first += 1
            }
            if sent > 0 {
                vectors[first].iov_base = vectors[first].iov_base.map { $0 + sent }
                vectors[first].iov_len -= sent
            }
            while first < vectors.count, vectors[first].iov_len == 0 { first += 1 }
        }
    }

    /// Switches the socket to non-blocking I/O (for a client served on an event loop) or
    /// back.
    func setNonBlocking(_ nonBlocking: Bool) throws(NBDError) {
        let flags = fcntl(descriptor, F_GETFL)
        guard flags >= 0,
              fcntl(descriptor, F_SETFL, nonBlocking ? flags | O_NONBLOCK : flags & ~O_NONBLOCK) >= 0 else {
            throw .system(call: "fcntl(F_SETFL, O_NONBLOCK \(nonBlocking ? "on" : "off"))", errno: errno)
        }
    }

    /// Asks for a send buffer of `bytes` (the kernel caps it at net.core.wmem_max); best
    /// effort, for a socket whose sender must not wait for the peer between replies.
    func requestSendBuffer(_ bytes: Int32) {
        var size = bytes
        _ = setsockopt(descriptor, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Non-blocking: reads what is there, up to `buffer.count` bytes. nil when nothing
    /// is (EAGAIN); a clean end of stream is `connectionClosed`.
    func readSome(into buffer: UnsafeMutableRawBufferPointer) throws(NBDError) -> Int? {
        while true {
            let result = recv(descriptor, buffer.baseAddress!, buffer.count, 0)
            if result > 0 { return result }
            if result == 0 { throw .connectionClosed }
            if errno == EINTR { continue }
            if errno == EAGAIN || errno == EWOULDBLOCK { return nil }
            throw .system(call: "recv", errno: errno)
        }
    }

    /// Non-blocking: sends what the socket takes of `vectors` in one sendmsg; returns
    /// the bytes sent, 0 when it takes nothing now (EAGAIN).
    func writeSome(vectors: UnsafeMutableBufferPointer<iovec>) throws(NBDError) -> Int {
        var message = msghdr()
        message.msg_iov = vectors.baseAddress
        message.msg_iovlen = min(vectors.count, Self.maximumVectors)
        while true {
            let sent = sendmsg(descriptor, &message, Int32(MSG_NOSIGNAL))
            if sent >= 0 { return sent }
            if errno == EINTR { continue }
            if errno == EAGAIN || errno == EWOULDBLOCK { return 0 }
            throw .system(call: "sendmsg", errno: errno)
        }
    }

    func writeAll(_ bytes: [UInt8]) throws(NBDError) {
        var failure: NBDError?
        bytes.withUnsafeBytes { buffer in
            do throws(NBDError) { try writeAll(buffer) } catch { failure = error }
        }
        if let failure { throw failure }
    }
}

/// A listening socket, owned.
final class NBDListener: @unchecked Sendable {
    // @unchecked: the descriptor is fixed after init until close(), which the server calls
    // only after joining the accepting thread.
    private var descriptor: Int32
    /// The address actually bound (the kernel's port when 0 was asked for).
    let boundAddress: NBDAddress
    private let unixPath: String?

    init(address: NBDAddress, backlog: Int32 = 64) throws(NBDError) {
        let fd: Int32
        switch address {
        case let .unix(path):
            fd = try Self.check(socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0), "socket")
            let capacity = MemoryLayout.size(ofValue: sockaddr_un().sun_path)
            guard let final = Self.unixAddress(path, capacity: capacity) else {
                Glibc.close(fd)
                throw .invalidAddress("unix:\(path)")
            }
            // A socket file left by an earlier run would stand in the way: replace it, but
            // only if it is a socket and nobody answers on it.
            var info = stat()
            if lstat(path, &info) == 0 {
                // Not a socket: somebody's file, never replaced (bind would refuse it too).
                if info.st_mode & S_IFMT != S_IFSOCK || Self.answers(final) {
                    Glibc.close(fd)
                    throw .system(call: "bind", errno: EADDRINUSE)
                }
                unlink(path)
            }
            // The file appears at bind, the listening at listen: a client that connects as
            // soon as it sees the file would be refused in between. So bind a hidden name
            // beside it, listen, then rename it into place.
            let directory = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) + "/" : ""
            let name = path.split(separator: "/").last.map(String.init) ?? path
            let hidden = "\(directory).\(name).\(getpid())"
            let staged = Self.unixAddress(hidden, capacity: capacity)
            unlink(hidden)
            if Self.bindUnix(fd, staged ?? final) != 0 {
                let code = errno
                Glibc.close(fd)
                throw .system(call: "bind", errno: code)
            }
            if listen(fd, backlog) != 0 {
                let code = errno
                if staged != nil { unlink(hidden) } else { unlink(path) }
                Glibc.close(fd)
                throw .system(call: "listen", errno: code)
            }
            if staged != nil, rename(hidden, path) != 0 {
                let code = errno
                unlink(hidden)
                Glibc.close(fd)
                throw .system(call: "rename", errno: code)
            }
            unixPath = path
            boundAddress = address
        case let .tcp(host, port):
            var storage = sockaddr_storage()
            let family: Int32
            let length: Int
            if host.contains(":") {
                family = AF_INET6
                var addr = sockaddr_in6()
                addr.sin6_family = sa_family_t(AF_INET6)
                addr.sin6_port = port.bigEndian
                guard inet_pton(AF_INET6, host, &addr.sin6_addr) == 1 else { throw .invalidAddress("tcp:[\(host)]:\(port)") }
                withUnsafeMutableBytes(of: &storage) { $0.storeBytes(of: addr, as: sockaddr_in6.self) }
                length = MemoryLayout<sockaddr_in6>.size
            } else {
                family = AF_INET
                var addr = sockaddr_in()
                addr.sin_family = sa_family_t(AF_INET)
                addr.sin_port = port.bigEndian
                guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else { throw .invalidAddress("tcp:\(host):\(port)") }
                withUnsafeMutableBytes(of: &storage) { $0.storeBytes(of: addr, as: sockaddr_in.self) }
                length = MemoryLayout<sockaddr_in>.size
            }
            fd = try Self.check(socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0), "socket")
            var one: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            let result = withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(length)) }
            }
            if result != 0 {
                let code = errno
                Glibc.close(fd)
                throw .system(call: "bind", errno: code)
            }
            var bound = sockaddr_storage()
            var boundLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
            _ = withUnsafeMutablePointer(to: &bound) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &boundLength) }
            }
            let boundPort = withUnsafeBytes(of: &bound) { raw in
                family == AF_INET6 ? raw.load(as: sockaddr_in6.self).sin6_port : raw.load(as: sockaddr_in.self).sin_port
            }
            unixPath = nil
            boundAddress = .tcp(host: host, port: UInt16(bigEndian: boundPort))
        }
        if unixPath == nil, listen(fd, backlog) != 0 {
            let code = errno
            Glibc.close(fd)
            throw .system(call: "listen", errno: code)
        }
        descriptor = fd
    }

    /// `path` as a unix socket address, or nil when it does not fit or holds a NUL.
    private static func unixAddress(_ path: String, capacity: Int) -> sockaddr_un? {
        let bytes = Array(path.utf8)
        guard bytes.count < capacity, !bytes.contains(0) else { return nil }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes) }
        return addr
    }

    private static func bindUnix(_ fd: Int32, _ address: sockaddr_un) -> Int32 {
        var address = address
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
    }

    /// Whether something listens at `address` (a live server we must not replace).
    private static func answers(_ address: sockaddr_un) -> Bool {
        let probe = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard probe >= 0 else { return false }
        defer { Glibc.close(probe) }
        var address = address
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(probe, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0
            }
        }
    }

    deinit { close() }

    private static func check(_ result: Int32, _ call: String) throws(NBDError) -> Int32 {
        guard result >= 0 else { throw .system(call: call, errno: errno) }
        return result
    }

    /// Blocks for the next connection; after `shutdown()` this fails.
    func accept() throws(NBDError) -> NBDSocket {
        while true {
            let result = Glibc.accept(descriptor, nil, nil)
            if result >= 0 {
                _ = fcntl(result, F_SETFD, FD_CLOEXEC)
                if unixPath == nil {
                    // Replies are small and latency matters more than coalescing.
                    var one: Int32 = 1
                    setsockopt(result, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                }
                return NBDSocket(descriptor: result)
            }
            // A client that gave up between connect and accept is not the listener's failure.
            if errno == EINTR || errno == ECONNABORTED { continue }
            throw .system(call: "accept", errno: errno)
        }
    }

    /// Wakes a thread blocked in `accept()`.
    func shutdown() {
        if descriptor >= 0 { _ = Glibc.shutdown(descriptor, Int32(SHUT_RDWR)) }
    }

    func close() {
        guard descriptor >= 0 else { return }
        Glibc.close(descriptor)
        descriptor = -1
        if let unixPath { unlink(unixPath) }
    }
}
