import Glibc

/// A blocking NBD client: fixed-newstyle handshake with NBD_OPT_GO, then batches of
/// requests sent together and their simple replies matched by cookie, so a batch is in
/// flight at once on the server. For tools that drive an export (the conformance suite's
/// I/O through our blkfront), not for speed. Used by one thread at a time.
public final class NBDClient: @unchecked Sendable {
    // SAFETY (@unchecked): one caller at a time, as documented.

    /// One request of a batch.
    public enum Command: Sendable, Equatable {
        case read(offset: UInt64, length: UInt32)
        case write(offset: UInt64, bytes: [UInt8])
        case flush
    }

    /// A reply: the server's error (`.success` when it did it) and, for a read that
    /// succeeded, the bytes.
    public struct Reply: Sendable, Equatable {
        public var error: NBDErrno
        public var data: [UInt8]
    }

    let socket: NBDSocket
    /// The export's size in bytes.
    public let size: UInt64
    /// The export's transmission flags (read-only, flush, ...).
    public let flags: NBDTransmissionFlags
    var nextCookie: UInt64 = 1

    /// Connects to `address` and enters transmission on the default export.
    public init(_ address: NBDAddress) throws(NBDError) {
        socket = try Self.connect(address)
        let greeting = try NBDServerGreeting.decode(try socket.readExactly(count: NBDServerGreeting.size))
        guard greeting.flags.contains(.fixedNewstyle) else { throw .serverState("the server does not speak fixed newstyle") }
        try socket.writeAll(NBDClientFlags([.fixedNewstyle, .noZeroes]).encode())
        let request = NBDInfoRequest(name: "", requests: []).encode()
        try socket.writeAll(NBDOptionHeader(option: .go, length: UInt32(request.count)).encode() + request)
        var export: (UInt64, NBDTransmissionFlags)?
        while true {
            let header = try NBDOptionReply.decodeHeader(try socket.readExactly(count: NBDOptionReply.headerSize))
            let data = try socket.readExactly(count: Int(header.length))
            if header.type == .ack { break }
            guard header.type == .info else { throw .serverState("NBD_OPT_GO refused: \(header.type)") }
            if case let .export(size, flags) = try NBDInfo.decode(data) { export = (size, flags) }
        }
        guard let export else { throw .serverState("NBD_OPT_GO gave no NBD_INFO_EXPORT") }
        (size, flags) = export
    }

    private static func connect(_ address: NBDAddress) throws(NBDError) -> NBDSocket {
        switch address {
        case let .unix(path):
            let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw .system(call: "socket", errno: errno) }
            let socket = NBDSocket(descriptor: fd)
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(path.utf8)
            guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { throw .invalidAddress("unix:\(path) is too long") }
            withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes) }
            let result = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard result == 0 else { throw .system(call: "connect \(path)", errno: errno) }
            return socket
        case let .tcp(host, port):
            let fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw .system(call: "socket", errno: errno) }
            let socket = NBDSocket(descriptor: fd)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = port.bigEndian
            guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else { throw .invalidAddress("tcp:\(host):\(port)") }
            let result = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard result == 0 else { throw .system(call: "connect \(host):\(port)", errno: errno) }
            return socket
        }
    }

    /// Sends every command of `batch` before reading any reply, then collects the
    /// replies (in whatever order the server sends them); returns them in batch order.
    public func run(_ batch: [Command]) throws(NBDError) -> [Reply] {
        var lengths: [UInt64: (index: Int, read: Int)] = [:]
        for (index, command) in batch.enumerated() {
            let cookie = nextCookie
            nextCookie &+= 1
            switch command {
            case let .read(offset, length):
                lengths[cookie] = (index, Int(length))
                try socket.writeAll(NBDRequest(command: .read, cookie: cookie, offset: offset, length: length).encode())
            case let .write(offset, bytes):
                lengths[cookie] = (index, 0)
                try socket.writeAll(NBDRequest(command: .write, cookie: cookie, offset: offset, length: UInt32(bytes.count)).encode() + bytes)
            case .flush:
                lengths[cookie] = (index, 0)
                try socket.writeAll(NBDRequest(command: .flush, cookie: cookie, offset: 0, length: 0).encode())
            }
        }
        var replies = [Reply?](repeating: nil, count: batch.count)
        while !lengths.isEmpty {
            let header = try socket.readExactly(count: NBDSimpleReply.size)
            let decoded = header.withUnsafeBytes { bytes in Result { () throws(NBDError) in try NBDSimpleReply.decode(bytes) } }
            let reply = try decoded.get()
            guard let (index, read) = lengths.removeValue(forKey: reply.cookie) else {
                throw .serverState("a reply with cookie \(reply.cookie) answers no request in flight")
            }
            let data = reply.error == .success && read > 0 ? try socket.readExactly(count: read) : []
            replies[index] = Reply(error: reply.error, data: data)
        }
        return replies.map { $0! }
    }

    /// Says goodbye (NBD_CMD_DISC) and closes the socket.
    public func close() {
        try? socket.writeAll(NBDRequest(command: .disconnect, cookie: 0, offset: 0, length: 0).encode())
        socket.close()
    }
}
