// Pure encode/decode of the fixed-newstyle handshake (proto.md "Newstyle negotiation",
// "Fixed newstyle negotiation", "Option types", "Option reply types").

/// The server's opening message: `NBDMAGIC`, `IHAVEOPT`, 16-bit handshake flags.
public struct NBDServerGreeting: Equatable, Sendable {
    /// Encoded length in bytes.
    public static let size = 18
    /// The handshake flags offered.
    public var flags: NBDHandshakeFlags

    public init(flags: NBDHandshakeFlags) { self.flags = flags }

    public func encode() -> [UInt8] {
        var writer = NBDByteWriter()
        writer.append(NBDMagic.initPassword)
        writer.append(NBDMagic.option)
        writer.append(flags.rawValue)
        return writer.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(NBDError) -> NBDServerGreeting {
        var reader = NBDByteReader(bytes, message: "server greeting")
        let password = try reader.read(UInt64.self)
        guard password == NBDMagic.initPassword else {
            throw .badMagic(field: "greeting NBDMAGIC", value: password, expected: NBDMagic.initPassword)
        }
        let magic = try reader.read(UInt64.self)
        guard magic == NBDMagic.option else {
            throw .badMagic(field: "greeting IHAVEOPT", value: magic, expected: NBDMagic.option)
        }
        return NBDServerGreeting(flags: NBDHandshakeFlags(rawValue: try reader.read(UInt16.self)))
    }
}

extension NBDClientFlags {
    /// Encoded length in bytes.
    public static let size = 4

    /// Decodes the client's flags, refusing any the server did not offer (proto.md: the
    /// server must drop the connection on an unknown flag or one it did not advertise).
    public static func decode(_ bytes: [UInt8], offered: NBDHandshakeFlags) throws(NBDError) -> NBDClientFlags {
        var reader = NBDByteReader(bytes, message: "client flags")
        let value = try reader.read(UInt32.self)
        var known = NBDClientFlags.fixedNewstyle.rawValue
        if offered.contains(.noZeroes) { known |= NBDClientFlags.noZeroes.rawValue }
        guard value & ~known == 0 else { throw .unknownClientFlags(value: value, known: known) }
        return NBDClientFlags(rawValue: value)
    }

    public func encode() -> [UInt8] {
        var writer = NBDByteWriter()
        writer.append(rawValue)
        return writer.bytes
    }
}

/// The fixed part of a client option: `IHAVEOPT`, option, data length (data follows).
public struct NBDOptionHeader: Equatable, Sendable {
    /// Encoded length in bytes.
    public static let size = 16
    /// The option requested.
    public var option: NBDOption
    /// Length of the option data that follows.
    public var length: UInt32

    public init(option: NBDOption, length: UInt32) {
        self.option = option
        self.length = length
    }

    public func encode() -> [UInt8] {
        var writer = NBDByteWriter()
        writer.append(NBDMagic.option)
        writer.append(option.rawValue)
        writer.append(length)
        return writer.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(NBDError) -> NBDOptionHeader {
        var reader = NBDByteReader(bytes, message: "option header")
        let magic = try reader.read(UInt64.self)
        guard magic == NBDMagic.option else {
            throw .badMagic(field: "option IHAVEOPT", value: magic, expected: NBDMagic.option)
        }
        let option = NBDOption(rawValue: try reader.read(UInt32.self))
        return NBDOptionHeader(option: option, length: try reader.read(UInt32.self))
    }
}

/// A server reply to an option: magic, option, reply type, data length, data.
public struct NBDOptionReply: Equatable, Sendable {
    /// Length of the fixed header in bytes.
    public static let headerSize = 20
    /// The option this answers.
    public var option: NBDOption
    /// The reply type.
    public var type: NBDOptionReplyType
    /// The reply data.
    public var data: [UInt8]

    public init(option: NBDOption, type: NBDOptionReplyType, data: [UInt8] = []) {
        self.option = option
        self.type = type
        self.data = data
    }

    public func encode() -> [UInt8] {
        var writer = NBDByteWriter()
        writer.append(NBDMagic.optionReply)
        writer.append(option.rawValue)
        writer.append(type.rawValue)
        writer.append(UInt32(data.count))
        writer.append(contentsOf: data)
        return writer.bytes
    }

    /// Decodes the header alone: option, type and the data length still to read.
    public static func decodeHeader(_ bytes: [UInt8]) throws(NBDError) -> (option: NBDOption, type: NBDOptionReplyType, length: UInt32) {
        var reader = NBDByteReader(bytes, message: "option reply header")
        let magic = try reader.read(UInt64.self)
        guard magic == NBDMagic.optionReply else {
            throw .badMagic(field: "option reply magic", value: magic, expected: NBDMagic.optionReply)
        }
        let option = NBDOption(rawValue: try reader.read(UInt32.self))
        let type = NBDOptionReplyType(rawValue: try reader.read(UInt32.self))
        return (option, type, try reader.read(UInt32.self))
    }
}

/// The data of `NBD_OPT_INFO` and `NBD_OPT_GO`: export name and the information wanted.
public struct NBDInfoRequest: Equatable, Sendable {
    /// The export name; empty selects the default export.
    public var name: String
    /// The information types the client asked for, in its order.
    public var requests: [NBDInfoType]

    public init(name: String, requests: [NBDInfoType]) {
        self.name = name
        self.requests = requests
    }

    public func encode() -> [UInt8] {
        var writer = NBDByteWriter()
        let name = Array(self.name.utf8)
        writer.append(UInt32(name.count))
        writer.append(contentsOf: name)
        writer.append(UInt16(requests.count))
        for request in requests { writer.append(request.rawValue) }
        return writer.bytes
    }

    /// Decodes option data; the name length and request count must account for every byte.
    public static func decode(_ bytes: [UInt8]) throws(NBDError) -> NBDInfoRequest {
        var reader = NBDByteReader(bytes, message: "NBD_OPT_INFO/GO data")
        let nameLength = try reader.read(UInt32.self)
        guard bytes.count >= 6, UInt64(nameLength) <= UInt64(bytes.count - 6) else {
            throw .fieldOutOfRange(field: "NBD_OPT_INFO/GO name length", value: UInt64(nameLength),
                                   limit: UInt64(max(bytes.count - 6, 0)))
        }
        let name = try NBDString.decode(try reader.readBytes(Int(nameLength)), field: "export name")
        let count = try reader.read(UInt16.self)
        guard reader.remaining == Int(count) * 2 else {
            throw .fieldOutOfRange(field: "NBD_OPT_INFO/GO request count", value: UInt64(count),
                                   limit: UInt64(reader.remaining / 2))
        }
        var requests: [NBDInfoType] = []
        requests.reserveCapacity(Int(count))
        for _ in 0..<count { requests.append(NBDInfoType(rawValue: try reader.read(UInt16.self))) }
        return NBDInfoRequest(name: name, requests: requests)
    }
}

/// One `NBD_REP_INFO` payload (proto.md "NBD_REP_INFO").
public enum NBDInfo: Equatable, Sendable {
    /// `NBD_INFO_EXPORT`: size in bytes and transmission flags.
    case export(size: UInt64, flags: NBDTransmissionFlags)
    /// `NBD_INFO_NAME`: the canonical export name.
    case name(String)
    /// `NBD_INFO_BLOCK_SIZE`: minimum, preferred and maximum payload sizes.
    case blockSize(NBDBlockSizes)
    /// An information type this implementation does not decode, with its raw data.
    case other(type: NBDInfoType, data: [UInt8])

    public func encode() -> [UInt8] {
        var writer = NBDByteWriter()
        switch self {
        case let .export(size, flags):
            writer.append(NBDInfoType.export.rawValue)
            writer.append(size)
            writer.append(flags.rawValue)
        case let .name(name):
            writer.append(NBDInfoType.name.rawValue)
            writer.append(contentsOf: name.utf8)
        case let .blockSize(sizes):
            writer.append(NBDInfoType.blockSize.rawValue)
            writer.append(sizes.minimum)
            writer.append(sizes.preferred)
            writer.append(sizes.maximum)
        case let .other(type, data):
            writer.append(type.rawValue)
            writer.append(contentsOf: data)
        }
        return writer.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(NBDError) -> NBDInfo {
        var reader = NBDByteReader(bytes, message: "NBD_REP_INFO data")
        let type = NBDInfoType(rawValue: try reader.read(UInt16.self))
        switch type {
        case .export:
            guard bytes.count == 12 else {
                throw .fieldOutOfRange(field: "NBD_INFO_EXPORT length", value: UInt64(bytes.count), limit: 12)
            }
            let size = try reader.read(UInt64.self)
            return .export(size: size, flags: NBDTransmissionFlags(rawValue: try reader.read(UInt16.self)))
        case .name:
            return .name(try NBDString.decode(try reader.readBytes(reader.remaining), field: "NBD_INFO_NAME"))
        case .blockSize:
            guard bytes.count == 14 else {
                throw .fieldOutOfRange(field: "NBD_INFO_BLOCK_SIZE length", value: UInt64(bytes.count), limit: 14)
            }
            let minimum = try reader.read(UInt32.self)
            let preferred = try reader.read(UInt32.self)
            let maximum = try reader.read(UInt32.self)
            return .blockSize(try NBDBlockSizes(minimum: minimum, preferred: preferred, maximum: maximum))
        default:
            return .other(type: type, data: Array(try reader.readBytes(reader.remaining)))
        }
    }
}

/// The server's answer to `NBD_OPT_EXPORT_NAME`: size, flags and, unless the client
/// negotiated `NBD_FLAG_C_NO_ZEROES`, 124 reserved zero bytes.
public struct NBDExportNameReply: Equatable, Sendable {
    /// Length of the reserved zero padding.
    public static let paddingSize = 124
    /// Export size in bytes.
    public var size: UInt64
    /// Transmission flags.
    public var flags: NBDTransmissionFlags

    public init(size: UInt64, flags: NBDTransmissionFlags) {
        self.size = size
        self.flags = flags
    }

    public func encode(noZeroes: Bool) -> [UInt8] {
        var writer = NBDByteWriter()
        writer.append(size)
        writer.append(flags.rawValue)
        if !noZeroes { writer.append(contentsOf: repeatElement(UInt8(0), count: Self.paddingSize)) }
        return writer.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(NBDError) -> NBDExportNameReply {
        var reader = NBDByteReader(bytes, message: "NBD_OPT_EXPORT_NAME reply")
        let size = try reader.read(UInt64.self)
        return NBDExportNameReply(size: size, flags: NBDTransmissionFlags(rawValue: try reader.read(UInt16.self)))
    }
}

/// The data of an `NBD_REP_SERVER` reply to `NBD_OPT_LIST`: name length and name.
public struct NBDServerEntry: Equatable, Sendable {
    /// The export name.
    public var name: String

    public init(name: String) { self.name = name }

    public func encode() -> [UInt8] {
        var writer = NBDByteWriter()
        let name = Array(self.name.utf8)
        writer.append(UInt32(name.count))
        writer.append(contentsOf: name)
        return writer.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(NBDError) -> NBDServerEntry {
        var reader = NBDByteReader(bytes, message: "NBD_REP_SERVER data")
        let length = try reader.read(UInt32.self)
        guard UInt64(length) <= UInt64(reader.remaining) else {
            throw .fieldOutOfRange(field: "NBD_REP_SERVER name length", value: UInt64(length), limit: UInt64(reader.remaining))
        }
        return NBDServerEntry(name: try NBDString.decode(try reader.readBytes(Int(length)), field: "NBD_REP_SERVER name"))
    }
}
