import Testing
@testable import NBD

/// Golden byte vectors for every message, written out by hand from proto.md's layouts.
@Suite struct NBDWireTests {
    static let ihaveopt: [UInt8] = Array("IHAVEOPT".utf8)
    static let replyMagic: [UInt8] = [0x00, 0x03, 0xE8, 0x89, 0x04, 0x55, 0x65, 0xA9]

    @Test func greeting() throws {
        let bytes = NBDServerGreeting(flags: [.fixedNewstyle, .noZeroes]).encode()
        #expect(bytes == Array("NBDMAGIC".utf8) + Self.ihaveopt + [0x00, 0x03])
        #expect(try NBDServerGreeting.decode(bytes).flags == [.fixedNewstyle, .noZeroes])
        var bad = bytes
        bad[0] = 0x4F
        #expect(throws: NBDError.badMagic(field: "greeting NBDMAGIC", value: 0x4F42_444D_4147_4943,
                                          expected: NBDMagic.initPassword)) {
            try NBDServerGreeting.decode(bad)
        }
    }

    @Test func clientFlags() throws {
        let offered: NBDHandshakeFlags = [.fixedNewstyle, .noZeroes]
        #expect(try NBDClientFlags.decode([0, 0, 0, 3], offered: offered) == [.fixedNewstyle, .noZeroes])
        #expect(try NBDClientFlags.decode([0, 0, 0, 0], offered: offered) == [])
        #expect(throws: NBDError.unknownClientFlags(value: 4, known: 3)) {
            try NBDClientFlags.decode([0, 0, 0, 4], offered: offered)
        }
        // NO_ZEROES is only legal when the server offered it.
        #expect(throws: NBDError.unknownClientFlags(value: 2, known: 1)) {
            try NBDClientFlags.decode([0, 0, 0, 2], offered: .fixedNewstyle)
        }
        #expect(throws: NBDError.truncated(message: "client flags", length: 3, needed: 4)) {
            try NBDClientFlags.decode([0, 0, 0], offered: offered)
        }
        #expect(NBDClientFlags([.fixedNewstyle, .noZeroes]).encode() == [0, 0, 0, 3])
    }

    @Test func optionHeader() throws {
        let bytes = NBDOptionHeader(option: .go, length: 10).encode()
        #expect(bytes == Self.ihaveopt + [0, 0, 0, 7, 0, 0, 0, 10])
        #expect(try NBDOptionHeader.decode(bytes) == NBDOptionHeader(option: .go, length: 10))
        var bad = bytes
        bad[7] = 0x55
        #expect(throws: NBDError.self) { try NBDOptionHeader.decode(bad) }
    }

    @Test func optionReply() throws {
        let bytes = NBDOptionReply(option: .list, type: .errUnsupported, data: [0x61]).encode()
        #expect(bytes == Self.replyMagic + [0, 0, 0, 3, 0x80, 0, 0, 1, 0, 0, 0, 1, 0x61])
        let header = try NBDOptionReply.decodeHeader(Array(bytes[0..<20]))
        #expect(header.option == .list && header.type == .errUnsupported && header.length == 1)
        #expect(header.type.isError && !NBDOptionReplyType.ack.isError)
    }

    @Test func infoRequest() throws {
        let request = NBDInfoRequest(name: "disk", requests: [.blockSize, .name])
        let bytes: [UInt8] = [0, 0, 0, 4, 0x64, 0x69, 0x73, 0x6B, 0, 2, 0, 3, 0, 1]
        #expect(request.encode() == bytes)
        #expect(try NBDInfoRequest.decode(bytes) == request)
        // Name length running past the data.
        #expect(throws: NBDError.fieldOutOfRange(field: "NBD_OPT_INFO/GO name length", value: 9, limit: 8)) {
            try NBDInfoRequest.decode([0, 0, 0, 9] + Array(bytes[4...]))
        }
        // Request count disagreeing with the bytes left.
        #expect(throws: NBDError.fieldOutOfRange(field: "NBD_OPT_INFO/GO request count", value: 3, limit: 2)) {
            try NBDInfoRequest.decode(Array(bytes[0..<8]) + [0, 3, 0, 3, 0, 1])
        }
        #expect(throws: NBDError.self) { try NBDInfoRequest.decode([0, 0]) }
        #expect(throws: NBDError.invalidString(field: "export name")) {
            try NBDInfoRequest.decode([0, 0, 0, 1, 0, 0, 0])
        }
    }

    @Test func infoReplies() throws {
        let export = NBDInfo.export(size: 0x0102_0304_0506_0708, flags: [.hasFlags, .sendFlush])
        #expect(export.encode() == [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 5])
        #expect(try NBDInfo.decode(export.encode()) == export)
        let sizes = try NBDBlockSizes(minimum: 512, preferred: 4096, maximum: 0x0200_0000)
        let blockSize = NBDInfo.blockSize(sizes)
        #expect(blockSize.encode() == [0, 3, 0, 0, 2, 0, 0, 0, 0x10, 0, 2, 0, 0, 0])
        #expect(try NBDInfo.decode(blockSize.encode()) == blockSize)
        #expect(NBDInfo.name("a").encode() == [0, 1, 0x61])
        #expect(throws: NBDError.fieldOutOfRange(field: "NBD_INFO_EXPORT length", value: 11, limit: 12)) {
            try NBDInfo.decode(Array(export.encode().dropLast()))
        }
    }

    @Test func exportNameReply() throws {
        let reply = NBDExportNameReply(size: 1 << 20, flags: [.hasFlags, .readOnly])
        let short = reply.encode(noZeroes: true)
        #expect(short == [0, 0, 0, 0, 0, 0x10, 0, 0, 0, 3])
        let padded = reply.encode(noZeroes: false)
        #expect(padded.count == 134 && padded[10...].allSatisfy { $0 == 0 } && Array(padded[0..<10]) == short)
        #expect(try NBDExportNameReply.decode(short) == reply)
    }

    @Test func serverEntry() throws {
        #expect(NBDServerEntry(name: "xvda").encode() == [0, 0, 0, 4, 0x78, 0x76, 0x64, 0x61])
        #expect(try NBDServerEntry.decode([0, 0, 0, 1, 0x41]) == NBDServerEntry(name: "A"))
        #expect(throws: NBDError.self) { try NBDServerEntry.decode([0, 0, 0, 5, 0x41]) }
    }

    @Test func request() throws {
        let request = NBDRequest(flags: .fua, command: .write, cookie: 0x1122_3344_5566_7788,
                                 offset: 0x200, length: 0x1000)
        let bytes: [UInt8] = [0x25, 0x60, 0x95, 0x13, 0, 1, 0, 1,
                              0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
                              0, 0, 0, 0, 0, 0, 2, 0,
                              0, 0, 0x10, 0]
        #expect(request.encode() == bytes)
        #expect(try bytes.withUnsafeBytes { b throws(NBDError) in try NBDRequest.decode(b) } == request)
        var bad = bytes
        bad[3] = 0x14
        #expect(throws: NBDError.badMagic(field: "request magic", value: 0x2560_9514, expected: 0x2560_9513)) {
            try bad.withUnsafeBytes { b throws(NBDError) in try NBDRequest.decode(b) }
        }
        #expect(throws: NBDError.truncated(message: "request", length: 27, needed: 28)) {
            try Array(bytes.dropLast()).withUnsafeBytes { b throws(NBDError) in try NBDRequest.decode(b) }
        }
    }

    @Test func simpleReply() throws {
        let reply = NBDSimpleReply(error: .invalid, cookie: 0xAABB)
        let bytes: [UInt8] = [0x67, 0x44, 0x66, 0x98, 0, 0, 0, 22, 0, 0, 0, 0, 0, 0, 0xAA, 0xBB]
        #expect(reply.encode() == bytes)
        #expect(try bytes.withUnsafeBytes { b throws(NBDError) in try NBDSimpleReply.decode(b) } == reply)
    }

    @Test func blockSizeRules() throws {
        #expect(NBDBlockSizes.default == (try NBDBlockSizes(minimum: 1, preferred: 4096, maximum: 32 << 20)))
        #expect(throws: NBDError.self) { try NBDBlockSizes(minimum: 3, preferred: 4096, maximum: 1 << 20) }
        #expect(throws: NBDError.self) { try NBDBlockSizes(minimum: 1 << 17, preferred: 1 << 17, maximum: 1 << 20) }
        #expect(throws: NBDError.self) { try NBDBlockSizes(minimum: 1, preferred: 256, maximum: 1 << 20) }
        #expect(throws: NBDError.self) { try NBDBlockSizes(minimum: 4096, preferred: 512, maximum: 1 << 20) }
        #expect(throws: NBDError.self) { try NBDBlockSizes(minimum: 512, preferred: 4096, maximum: 2048) }
    }

    @Test func addresses() throws {
        #expect(try NBDAddress(parsing: "unix:/run/x.sock") == .unix(path: "/run/x.sock"))
        #expect(try NBDAddress(parsing: "tcp:10809") == .tcp(host: "127.0.0.1", port: 10809))
        #expect(try NBDAddress(parsing: "tcp:0.0.0.0:1") == .tcp(host: "0.0.0.0", port: 1))
        #expect(try NBDAddress(parsing: "tcp:[::1]:5") == .tcp(host: "::1", port: 5))
        #expect(NBDAddress.tcp(host: "::1", port: 5).uri == "nbd://[::1]:5/")
        #expect(NBDAddress.unix(path: "/s").uri == "nbd+unix:///?socket=/s")
        for text in ["", "unix:", "tcp:", "tcp:host:", "tcp:1:99999", "udp:1", "tcp:[::1]5"] {
            #expect(throws: NBDError.invalidAddress(text)) { try NBDAddress(parsing: text) }
        }
    }
}
