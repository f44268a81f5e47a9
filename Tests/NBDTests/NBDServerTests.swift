import Foundation
import Glibc
import Testing
@testable import NBD

/// A fresh directory under /tmp, removed with its contents by `remove()`.
struct TemporaryDirectory {
    let path: String

    init() {
        var template = Array("/tmp/nbd-test-XXXXXX".utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }

    func remove() {
        // Not readdir(3) by hand: loading a dirent's fixed-size d_name reads past the end of
        // a short entry (AddressSanitizer caught that in another suite's copy).
        try? FileManager.default.removeItem(atPath: path)
    }
}

/// Runs `body` against a server for `export` on a Unix socket in a temporary directory.
func withServer<Export: NBDExport>(_ export: Export, name: String = "",
                                   _ body: (NBDServer<Export>, NBDAddress, TemporaryDirectory) throws -> Void) throws
{
    let directory = TemporaryDirectory()
    defer { directory.remove() }
    let server = NBDServer(export: export, name: name)
    let address = try server.start(listeningOn: .unix(path: directory.path + "/nbd.sock"))
    defer { server.stop() }
    try body(server, address, directory)
}

/// Seeded byte patterns, so a failure reproduces.
struct SeededBytes {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next(_ count: Int) -> [UInt8] {
        (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return UInt8(truncatingIfNeeded: state >> 33)
        }
    }
}

/// An export whose every backend call fails, and that offers neither flush, FUA nor zeroing.
final class FailingExport: NBDExport {
    let size: UInt64 = 1 << 20
    let blockSizes = NBDBlockSizes.default
    let isReadOnly = false
    let features: NBDExportFeatures = [.trim]

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(NBDError) {
        throw .exportIO(call: "pread", errno: EIO)
    }
    func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64, fua: Bool) throws(NBDError) {
        throw .exportIO(call: "pwrite", errno: EDQUOT)
    }
    func flush() throws(NBDError) { throw .exportIO(call: "fdatasync", errno: EIO) }
    func trim(at offset: UInt64, length: UInt64, fua: Bool) throws(NBDError) {
        throw .exportIO(call: "fallocate", errno: EROFS)
    }
    func writeZeroes(at offset: UInt64, length: UInt64, mayPunchHole: Bool, fua: Bool) throws(NBDError) {
        throw .exportIO(call: "fallocate", errno: ENOMEM)
    }
}

@Suite struct NBDServerTests {
    @Test func goAdvertisesExportAndBlockSizes() throws {
        let sizes = try NBDBlockSizes(minimum: 512, preferred: 4096, maximum: 1 << 20)
        let export = NBDMemoryExport(size: 1 << 20, blockSizes: sizes)
        try withServer(export, name: "xvda") { _, address, _ in
            let client = try NBDTestClient(address)
            let greeting = try client.greet()
            #expect(greeting.flags == [.fixedNewstyle, .noZeroes])
            let info = try client.infoOrGo(.info, name: "xvda", requests: [.blockSize, .name])
            #expect(info.final.type == .ack)
            #expect(info.infos.contains(.export(size: 1 << 20, flags: export.transmissionFlags)))
            #expect(info.infos.contains(.blockSize(sizes)))
            #expect(info.infos.contains(.name("xvda")))
            // INFO leaves the client in option haggling: LIST still works.
            try client.sendOption(.list)
            let entry = try client.readOptionReply()
            #expect(entry.type == .server)
            #expect(try NBDServerEntry.decode(entry.data) == NBDServerEntry(name: "xvda"))
            #expect(try client.readOptionReply().type == .ack)
            let go = try client.infoOrGo(.go, name: "")
            #expect(go.final.type == .ack)
            let flags = export.transmissionFlags
            #expect(flags == [.hasFlags, .sendFlush, .sendFUA, .sendTrim, .sendWriteZeroes, .canMultiConn])
            try client.sendRequest(.disconnect, offset: 0, length: 0)
            #expect(client.isClosedByServer())
        }
    }

    @Test(arguments: [false, true]) func readWriteFlushTrimZeroes(looped: Bool) throws {
        let export = NBDMemoryExport(size: 256 << 10)
        try withServer(export, looped: looped) { address, _ in
            let client = try NBDTestClient(address)
            _ = try client.connect()
            var random = SeededBytes(seed: 42)
            let data = random.next(64 << 10)
            #expect(try client.transact(.write, offset: 4096, length: UInt32(data.count), payload: data).error == .success)
            #expect(try client.transact(.read, offset: 4096, length: UInt32(data.count)).data == data)
            #expect(try client.transact(.write, flags: .fua, offset: 0, length: 4, payload: [1, 2, 3, 4]).error == .success)
            #expect(export.counters.fuaWrites == 1)
            #expect(try client.transact(.flush, offset: 0, length: 0).error == .success)
            #expect(export.counters.flushes == 1)
            #expect(try client.transact(.trim, offset: 4096, length: 4096).error == .success)
            #expect(export.bytes(at: 4096, count: 4096).allSatisfy { $0 == 0 })
            #expect(try client.transact(.writeZeroes, flags: .noHole, offset: 8192, length: 8192).error == .success)
            #expect(export.bytes(at: 8192, count: 8192).allSatisfy { $0 == 0 })
            #expect(export.bytes(at: 16384, count: 16) == Array(data[12288..<12304]))
            #expect(export.counters.holePunches == 1)
            // Reads answer in request order even when pipelined.
            for cookie in UInt64(1)...8 { try client.sendRequest(.read, cookie: cookie, offset: 0, length: 4) }
            for cookie in UInt64(1)...8 {
                let reply = try client.readReply()
                #expect(reply.cookie == cookie && reply.error == .success)
                #expect(try client.receive(4) == [1, 2, 3, 4])
            }
        }
    }

    @Test func exportNameWithAndWithoutZeroes() throws {
        let export = NBDMemoryExport(size: 8192, readOnly: true)
        try withServer(export, name: "disk") { _, address, _ in
            for noZeroes in [true, false] {
                let client = try NBDTestClient(address)
                try client.greet(flags: noZeroes ? [.fixedNewstyle, .noZeroes] : [.fixedNewstyle])
                try client.sendOption(.exportName, Array("disk".utf8))
                let reply = try NBDExportNameReply.decode(try client.receive(10))
                #expect(reply == NBDExportNameReply(size: 8192, flags: [.hasFlags, .readOnly, .sendFlush, .sendFUA, .canMultiConn]))
                if !noZeroes { #expect(try client.receive(124).allSatisfy { $0 == 0 }) }
                // Transmission works right after: no stray bytes in between.
                #expect(try client.transact(.read, offset: 0, length: 512).error == .success)
            }
            // An unknown name can only be answered by hanging up.
            let client = try NBDTestClient(address)
            try client.greet()
            try client.sendOption(.exportName, Array("nope".utf8))
            #expect(client.isClosedByServer())
        }
    }

    @Test func optionErrors() throws {
        try withServer(NBDMemoryExport(size: 4096), name: "d") { _, address, _ in
            let client = try NBDTestClient(address)
            try client.greet()
            for option in [NBDOption(rawValue: 99), .structuredReply, .startTLS, .setMetaContext] {
                try client.sendOption(option, [1, 2, 3])
                let reply = try client.readOptionReply()
                #expect(reply.option == option && reply.type == .errUnsupported)
            }
            try client.sendOption(.list, [0])
            #expect(try client.readOptionReply().type == .errInvalid)
            #expect(try client.infoOrGo(.go, name: "other").final.type == .errUnknown)
            try client.sendOption(.go, [0, 0, 0, 200, 0, 0])
            #expect(try client.readOptionReply().type == .errInvalid)
            // Oversized but skippable option data: refused, session continues.
            try client.sendOption(NBDOption(rawValue: 77), [UInt8](repeating: 0, count: 100_000))
            #expect(try client.readOptionReply().type == .errTooBig)
            #expect(try client.infoOrGo(.info, name: "d").final.type == .ack)
            try client.sendOption(.abort)
            #expect(try client.readOptionReply().type == .ack)
            #expect(client.isClosedByServer())
        }
    }

    @Test func handshakeViolationsDisconnect() throws {
        try withServer(NBDMemoryExport(size: 4096)) { server, address, _ in
            let badFlags = try NBDTestClient(address)
            _ = try badFlags.receive(NBDServerGreeting.size)
            try badFlags.send([0x80, 0, 0, 1])
            #expect(badFlags.isClosedByServer())

            let badMagic = try NBDTestClient(address)
            try badMagic.greet()
            try badMagic.send(Array("IHAVEOPX".utf8) + [0, 0, 0, 7, 0, 0, 0, 0])
            #expect(badMagic.isClosedByServer())

            let huge = try NBDTestClient(address)
            try huge.greet()
            try huge.send(NBDOptionHeader(option: .go, length: 0xFFFF_FFFF).encode())
            #expect(huge.isClosedByServer())

            // The server outlives them all.
            #expect(try NBDTestClient(address).connect().size == 4096)
            _ = server
        }
    }

    @Test(arguments: [false, true]) func transmissionErrors(looped: Bool) throws {
        let sizes = try NBDBlockSizes(minimum: 512, preferred: 4096, maximum: 64 << 10)
        let export = NBDMemoryExport(size: 1 << 20, blockSizes: sizes)
        try withServer(export, looped: looped) { address, _ in
            let client = try NBDTestClient(address)
            _ = try client.connect()
            #expect(try client.transact(.read, offset: (1 << 20) - 512, length: 1024).error == .invalid)
            #expect(try client.transact(.read, offset: UInt64.max - 100, length: 512).error == .invalid)
            #expect(try client.transact(.trim, offset: 1 << 20, length: 512).error == .invalid)
            let block = [UInt8](repeating: 0xEE, count: 1024)
            #expect(try client.transact(.write, offset: (1 << 20) - 512, length: 1024, payload: block).error == .noSpace)
            #expect(try client.transact(.writeZeroes, offset: 1 << 20, length: 512).error == .noSpace)
            #expect(try client.transact(.read, offset: 100, length: 512).error == .invalid)
            #expect(try client.transact(.write, offset: 0, length: 100, payload: Array(block[0..<100])).error == .invalid)
            #expect(try client.transact(NBDCommand(rawValue: 42), offset: 0, length: 512).error == .invalid)
            #expect(try client.transact(.cache, offset: 0, length: 512).error == .invalid)
            #expect(try client.transact(.blockStatus, offset: 0, length: 512).error == .invalid)
            #expect(try client.transact(.read, flags: .fua, offset: 0, length: 512).error == .success)
            #expect(try client.transact(.flush, flags: .fua, offset: 0, length: 0).error == .success)
            #expect(try client.transact(.read, flags: .doNotFragment, offset: 0, length: 512).error == .invalid)
            #expect(try client.transact(.write, flags: .noHole, offset: 0, length: 512,
                                        payload: Array(block[0..<512])).error == .invalid)
            #expect(try client.transact(.writeZeroes, flags: .fastZero, offset: 0, length: 512).error == .invalid)
            // Larger than the maximum payload: refused; the payload is skipped, not stored.
            #expect(try client.transact(.read, offset: 0, length: 128 << 10).error == .invalid)
            let big = [UInt8](repeating: 0x77, count: 128 << 10)
            #expect(try client.transact(.write, offset: 0, length: UInt32(big.count), payload: big).error == .invalid)
            #expect(export.bytes(at: 0, count: 512).allSatisfy { $0 == 0 })
            // Trim and zeroing have no payload, so longer ones are fine.
            #expect(try client.transact(.writeZeroes, offset: 0, length: 256 << 10).error == .success)
            // None of the refusals were written, and the connection still works.
            #expect(try client.transact(.write, offset: 512, length: 512, payload: Array(block[0..<512])).error == .success)
            #expect(try client.transact(.read, offset: 512, length: 512).data == Array(block[0..<512]))
            // A payload too large to be worth skipping ends the session without reading it.
            try client.sendRequest(.write, offset: 0, length: 0xFFFF_0000)
            #expect(client.isClosedByServer())
        }
    }

    @Test(arguments: [false, true]) func backendErrorsAndMissingFeatures(looped: Bool) throws {
        try withServer(FailingExport(), looped: looped) { address, _ in
            let client = try NBDTestClient(address)
            let (_, flags) = try client.connect()
            #expect(flags == [.hasFlags, .sendTrim])
            #expect(try client.transact(.read, offset: 0, length: 512).error == .io)
            #expect(try client.transact(.write, offset: 0, length: 4, payload: [1, 2, 3, 4]).error == .noSpace)
            #expect(try client.transact(.trim, offset: 0, length: 4096).error == .permission)
            // Not advertised, so refused before reaching the export.
            #expect(try client.transact(.flush, offset: 0, length: 0).error == .invalid)
            #expect(try client.transact(.writeZeroes, offset: 0, length: 4096).error == .invalid)
            #expect(try client.transact(.write, flags: .fua, offset: 0, length: 4, payload: [1, 2, 3, 4]).error == .invalid)
            #expect(try client.transact(.read, offset: 0, length: 512).error == .io)
        }
    }

    @Test func clientLimit() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let server = NBDServer(export: NBDMemoryExport(size: 4096), maximumClients: 1)
        let address = try server.start(listeningOn: .unix(path: directory.path + "/s"))
        defer { server.stop() }
        let first = try NBDTestClient(address)
        _ = try first.connect()
        let second = try NBDTestClient(address)
        #expect(second.isClosedByServer())
        #expect(try first.transact(.read, offset: 0, length: 16).error == .success)
        try first.sendRequest(.disconnect, offset: 0, length: 0)
        #expect(first.isClosedByServer())
        // The server closes a client's socket and marks it gone in one step, so once the
        // first has seen end of stream a newcomer is admitted.
        let third = try NBDTestClient(address)
        #expect(try third.connect().size == 4096)
    }

    @Test(arguments: [false, true]) func seededGarbageNeverStopsTheServer(looped: Bool) throws {
        let export = NBDMemoryExport(size: 1 << 20, contents: [0x42])
        try withServer(export, looped: looped) { address, _ in
            var random = SeededBytes(seed: 0x5EED)
            for session in 0..<60 {
                let client = try NBDTestClient(address)
                let lengths = random.next(2)
                if session % 3 == 0 {
                    // Nonsense during option haggling, sometimes behind a valid option header.
                    try client.greet()
                    let header = session % 2 == 0
                        ? NBDOptionHeader(option: NBDOption(rawValue: UInt32(lengths[0] % 12)), length: UInt32(lengths[1])).encode()
                        : []
                    // The server may hang up before all of it is sent; that is allowed.
                    try? client.send(header + random.next(Int(lengths[1]) * 8))
                } else {
                    // Well-formed headers with random fields, then random payload bytes.
                    _ = try client.connect()
                    for _ in 0..<(Int(lengths[0]) % 8 + 1) {
                        let fields = random.next(16)
                        let request = NBDRequest(
                            flags: NBDCommandFlags(rawValue: UInt16(fields[0] & 0x3F)),
                            command: NBDCommand(rawValue: UInt16(fields[1] % 9)),
                            cookie: UInt64(session),
                            offset: fields[2..<6].reduce(UInt64(0)) { $0 << 8 | UInt64($1) } << (fields[6] % 16),
                            length: fields[7..<10].reduce(UInt32(0)) { $0 << 8 | UInt32($1) } >> (fields[10] % 24))
                        let payload = random.next(Int(fields[11]) * 8)
                        guard (try? client.send(request.encode() + payload)) != nil else { break }
                    }
                }
                client.socket.close()
            }
            let client = try NBDTestClient(address)
            _ = try client.connect()
            #expect(try client.transact(.read, offset: 0, length: 1).error == .success)
        }
    }

    @Test func unixSocketPathReuse() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.path + "/s"
        // A stale socket file (its owner exited without unlinking) is replaced.
        let stale = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(stale, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        #expect(bound == 0)
        close(stale)
        let first = NBDServer(export: NBDMemoryExport(size: 4096))
        try first.start(listeningOn: .unix(path: path))
        defer { first.stop() }
        // A live one is not.
        let second = NBDServer(export: NBDMemoryExport(size: 4096))
        #expect(throws: NBDError.system(call: "bind", errno: EADDRINUSE)) {
            try second.start(listeningOn: .unix(path: path))
        }
        #expect(try NBDTestClient(.unix(path: path)).connect().size == 4096)
    }

    @Test func unixSocketAppearsListeningAndNeverReplacesAFile() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        // Somebody's file at the path is refused and left as it was.
        let taken = directory.path + "/taken"
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: taken))
        let refused = NBDServer(export: NBDMemoryExport(size: 4096))
        #expect(throws: NBDError.system(call: "bind", errno: EADDRINUSE)) {
            try refused.start(listeningOn: .unix(path: taken))
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: taken)) == Data([1, 2, 3]))
        // The socket is bound under a hidden name and renamed once it listens: the file at
        // the path is the listening socket, and nothing else is left beside it.
        let path = directory.path + "/s"
        let server = NBDServer(export: NBDMemoryExport(size: 4096))
        try server.start(listeningOn: .unix(path: path))
        defer { server.stop() }
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted() == ["s", "taken"])
        #expect(try NBDTestClient(.unix(path: path)).connect().size == 4096)
    }

    @Test(arguments: [false, true]) func readOnlyRefusesChanges(looped: Bool) throws {
        let export = NBDMemoryExport(size: 64 << 10, readOnly: true, contents: [9, 8, 7])
        try withServer(export, looped: looped) { address, _ in
            let client = try NBDTestClient(address)
            let (_, flags) = try client.connect()
            #expect(flags.contains(.readOnly) && !flags.contains(.sendTrim) && !flags.contains(.sendWriteZeroes))
            #expect(try client.transact(.write, offset: 0, length: 3, payload: [1, 1, 1]).error == .permission)
            #expect(try client.transact(.write, flags: .fua, offset: 0, length: 3, payload: [1, 1, 1]).error == .permission)
            #expect(try client.transact(.trim, offset: 0, length: 4096).error == .permission)
            #expect(try client.transact(.writeZeroes, offset: 0, length: 4096).error == .permission)
            #expect(try client.transact(.read, offset: 0, length: 3).data == [9, 8, 7])
        }
    }

    @Test(arguments: [false, true]) func badRequestMagicAndMidRequestDisconnect(looped: Bool) throws {
        let export = NBDMemoryExport(size: 64 << 10)
        try withServer(export, looped: looped) { address, _ in
            let bad = try NBDTestClient(address)
            _ = try bad.connect()
            var request = NBDRequest(command: .read, cookie: 1, offset: 0, length: 512).encode()
            request[0] = 0
            try bad.send(request)
            #expect(bad.isClosedByServer())

            // Half a header, then half a payload: the server must just drop these.
            let halfHeader = try NBDTestClient(address)
            _ = try halfHeader.connect()
            try halfHeader.send(Array(NBDRequest(command: .read, cookie: 1, offset: 0, length: 512).encode()[0..<10]))
            halfHeader.socket.close()
            let halfPayload = try NBDTestClient(address)
            _ = try halfPayload.connect()
            try halfPayload.sendRequest(.write, offset: 0, length: 8192, payload: [UInt8](repeating: 0x11, count: 4096))
            halfPayload.socket.close()
            // Mid-handshake too.
            let halfOption = try NBDTestClient(address)
            try halfOption.greet()
            try halfOption.send(Array(NBDOptionHeader(option: .go, length: 100).encode()) + [0, 0])
            halfOption.socket.close()

            let client = try NBDTestClient(address)
            _ = try client.connect()
            #expect(try client.transact(.read, offset: 0, length: 8).data == [UInt8](repeating: 0, count: 8))
        }
    }

    @Test func concurrentClientsOverTCP() throws {
        let export = NBDMemoryExport(size: 1 << 20)
        let server = NBDServer(export: export)
        let address = try server.start(listeningOn: .tcp(host: "127.0.0.1", port: 0))
        defer { server.stop() }
        guard case let .tcp(host, port) = address else { Issue.record("not TCP: \(address)"); return }
        #expect(host == "127.0.0.1" && port != 0)
        // Both clients hold open sessions at once and interleave their requests.
        let first = try NBDTestClient(address)
        let second = try NBDTestClient(address)
        _ = try first.connect()
        _ = try second.connect()
        var random = SeededBytes(seed: 7)
        for round in 0..<16 {
            let a = random.next(4096), b = random.next(4096)
            #expect(try first.transact(.write, offset: UInt64(round) * 8192, length: 4096, payload: a).error == .success)
            #expect(try second.transact(.write, offset: UInt64(round) * 8192 + 4096, length: 4096, payload: b).error == .success)
            #expect(try second.transact(.read, offset: UInt64(round) * 8192, length: 4096).data == a)
            #expect(try first.transact(.read, offset: UInt64(round) * 8192 + 4096, length: 4096).data == b)
        }
        #expect(server.clientCount == 2)
    }

    @Test func stopDisconnectsClients() throws {
        let export = NBDMemoryExport(size: 4096)
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let server = NBDServer(export: export)
        let address = try server.start(listeningOn: .unix(path: directory.path + "/s"))
        let idle = try NBDTestClient(address)
        _ = try idle.connect()
        let haggling = try NBDTestClient(address)
        try haggling.greet()
        server.stop()
        #expect(idle.isClosedByServer())
        #expect(haggling.isClosedByServer())
        #expect(server.clientCount == 0)
        #expect(access(directory.path + "/s", F_OK) != 0)
        #expect(throws: NBDError.serverState("already started")) {
            try server.start(listeningOn: .unix(path: directory.path + "/t"))
        }
    }

    @Test func fileExport() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.path + "/disk.img"
        let fd = open(path, O_CREAT | O_RDWR, 0o600)
        #expect(ftruncate(fd, 1 << 20) == 0)
        close(fd)
        let export = try NBDFileExport(path: path)
        #expect(export.size == 1 << 20)
        try withServer(export) { _, address, _ in
            let client = try NBDTestClient(address)
            _ = try client.connect()
            var random = SeededBytes(seed: 3)
            let data = random.next(256 << 10)
            #expect(try client.transact(.write, flags: .fua, offset: 0, length: UInt32(data.count), payload: data).error == .success)
            #expect(try client.transact(.read, offset: 0, length: UInt32(data.count)).data == data)
            #expect(try client.transact(.trim, offset: 0, length: 64 << 10).error == .success)
            #expect(try client.transact(.writeZeroes, flags: .noHole, offset: 64 << 10, length: 64 << 10).error == .success)
            #expect(try client.transact(.writeZeroes, offset: 128 << 10, length: 4096).error == .success)
            #expect(try client.transact(.flush, offset: 0, length: 0).error == .success)
            let back = try client.transact(.read, offset: 0, length: 256 << 10).data
            // Trim's contents are unspecified; zeroed ranges must read as zero.
            #expect(back[(64 << 10)..<((128 << 10) + 4096)].allSatisfy { $0 == 0 })
            #expect(Array(back[((128 << 10) + 4096)...]) == Array(data[((128 << 10) + 4096)...]))
        }
        #expect(throws: NBDError.self) { try NBDFileExport(path: directory.path + "/missing") }
    }
}
