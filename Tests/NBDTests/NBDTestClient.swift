import Glibc
@testable import NBD

/// A deliberately low-level NBD client: it sends whatever bytes a test asks for, so tests
/// can break the protocol on purpose and watch what the server does.
final class NBDTestClient {
    let socket: NBDSocket

    init(_ address: NBDAddress) throws {
        let fd: Int32
        switch address {
        case let .unix(path):
            fd = Self.makeSocket(AF_UNIX)
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
            let result = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            guard result == 0 else { throw NBDError.system(call: "connect", errno: errno) }
        case let .tcp(host, port):
            fd = Self.makeSocket(AF_INET)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = port.bigEndian
            inet_pton(AF_INET, host, &addr.sin_addr)
            let result = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            guard result == 0 else { throw NBDError.system(call: "connect", errno: errno) }
        }
        socket = NBDSocket(descriptor: fd)
    }

    private static func makeSocket(_ family: Int32) -> Int32 {
        Glibc.socket(family, Int32(SOCK_STREAM.rawValue), 0)
    }

    func send(_ bytes: [UInt8]) throws { try socket.writeAll(bytes) }
    func receive(_ count: Int) throws -> [UInt8] { try socket.readExactly(count: count) }

    /// True when the server has closed the connection (reading gives end of stream).
    func isClosedByServer() -> Bool {
        var byte: UInt8 = 0
        while true {
            let result = recv(socket.descriptor, &byte, 1, 0)
            if result == 0 { return true }
            if result < 0 && errno == EINTR { continue }
            return result < 0 && errno == ECONNRESET
        }
    }

    /// Reads the greeting and answers with `flags`.
    @discardableResult
    func greet(flags: NBDClientFlags = [.fixedNewstyle, .noZeroes]) throws -> NBDServerGreeting {
        let greeting = try NBDServerGreeting.decode(try receive(NBDServerGreeting.size))
        try send(flags.encode())
        return greeting
    }

    func sendOption(_ option: NBDOption, _ data: [UInt8] = []) throws {
        try send(NBDOptionHeader(option: option, length: UInt32(data.count)).encode() + data)
    }

    func readOptionReply() throws -> NBDOptionReply {
        let header = try NBDOptionReply.decodeHeader(try receive(NBDOptionReply.headerSize))
        return NBDOptionReply(option: header.option, type: header.type, data: try receive(Int(header.length)))
    }

    /// Sends `NBD_OPT_INFO` or `NBD_OPT_GO` and collects the info replies and final reply.
    func infoOrGo(_ option: NBDOption, name: String = "", requests: [NBDInfoType] = [.blockSize])
        throws -> (infos: [NBDInfo], final: NBDOptionReply)
    {
        try sendOption(option, NBDInfoRequest(name: name, requests: requests).encode())
        var infos: [NBDInfo] = []
        while true {
            let reply = try readOptionReply()
            guard reply.type == .info else { return (infos, reply) }
            infos.append(try NBDInfo.decode(reply.data))
        }
    }

    /// Greets and enters transmission with `NBD_OPT_GO`.
    func connect(name: String = "") throws -> (size: UInt64, flags: NBDTransmissionFlags) {
        try greet()
        let (infos, final) = try infoOrGo(.go, name: name)
        guard final.type == .ack else { throw NBDError.serverState("GO refused: \(final.type.rawValue)") }
        for case let .export(size, flags) in infos { return (size, flags) }
        throw NBDError.serverState("no NBD_INFO_EXPORT")
    }

    func sendRequest(_ command: NBDCommand, flags: NBDCommandFlags = [], cookie: UInt64 = 1,
                     offset: UInt64, length: UInt32, payload: [UInt8] = []) throws
    {
        try send(NBDRequest(flags: flags, command: command, cookie: cookie, offset: offset, length: length).encode() + payload)
    }

    func readReply() throws -> NBDSimpleReply {
        try receive(NBDSimpleReply.size).withUnsafeBytes { bytes throws(NBDError) in try NBDSimpleReply.decode(bytes) }
    }

    /// One request and its reply; a successful read also returns its data.
    func transact(_ command: NBDCommand, flags: NBDCommandFlags = [], cookie: UInt64 = 7,
                  offset: UInt64, length: UInt32, payload: [UInt8] = []) throws -> (error: NBDErrno, data: [UInt8])
    {
        try sendRequest(command, flags: flags, cookie: cookie, offset: offset, length: length, payload: payload)
        let reply = try readReply()
        guard reply.cookie == cookie else { throw NBDError.serverState("cookie \(reply.cookie) for \(cookie)") }
        if command == .read, reply.error == .success { return (reply.error, try receive(Int(length))) }
        return (reply.error, [])
    }
}
