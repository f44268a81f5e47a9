// Pure encode/decode of the transmission phase (proto.md "Request message",
// "Simple reply message"). Fixed-size, so they work on caller-owned buffers with no
// allocation on the request path.

/// A transmission request header (28 bytes); a write's payload follows it.
public struct NBDRequest: Equatable, Sendable {
    /// Encoded length in bytes.
    public static let size = 28
    /// Command flags.
    public var flags: NBDCommandFlags
    /// The command.
    public var command: NBDCommand
    /// The client's cookie (formerly "handle"), echoed in the reply.
    public var cookie: UInt64
    /// Byte offset into the export.
    public var offset: UInt64
    /// Byte length of the operation (and of a write's payload).
    public var length: UInt32

    public init(flags: NBDCommandFlags = [], command: NBDCommand, cookie: UInt64, offset: UInt64, length: UInt32) {
        self.flags = flags
        self.command = command
        self.cookie = cookie
        self.offset = offset
        self.length = length
    }

    /// Decodes the first 28 bytes of `bytes`, checking `NBD_REQUEST_MAGIC`.
    @inlinable
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(NBDError) -> NBDRequest {
        guard bytes.count >= size else { throw .truncated(message: "request", length: bytes.count, needed: size) }
        let magic = bytes.loadBigEndian(UInt32.self, at: 0)
        guard magic == NBDMagic.request else {
            throw .badMagic(field: "request magic", value: UInt64(magic), expected: UInt64(NBDMagic.request))
        }
        return NBDRequest(
            flags: NBDCommandFlags(rawValue: bytes.loadBigEndian(UInt16.self, at: 4)),
            command: NBDCommand(rawValue: bytes.loadBigEndian(UInt16.self, at: 6)),
            cookie: bytes.loadBigEndian(UInt64.self, at: 8),
            offset: bytes.loadBigEndian(UInt64.self, at: 16),
            length: bytes.loadBigEndian(UInt32.self, at: 24))
    }

    /// Encodes into the first 28 bytes of `bytes`, which must hold at least that many.
    @inlinable
    public func encode(into bytes: UnsafeMutableRawBufferPointer) {
        precondition(bytes.count >= Self.size, "caller's buffer smaller than a request")
        bytes.storeBigEndian(NBDMagic.request, at: 0)
        bytes.storeBigEndian(flags.rawValue, at: 4)
        bytes.storeBigEndian(command.rawValue, at: 6)
        bytes.storeBigEndian(cookie, at: 8)
        bytes.storeBigEndian(offset, at: 16)
        bytes.storeBigEndian(length, at: 24)
    }

    public func encode() -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: Self.size) { buffer, count in
            encode(into: UnsafeMutableRawBufferPointer(buffer))
            count = Self.size
        }
    }
}

/// A simple reply header (16 bytes); a successful read's data follows it.
public struct NBDSimpleReply: Equatable, Sendable {
    /// Encoded length in bytes.
    public static let size = 16
    /// The error, `.success` if none.
    public var error: NBDErrno
    /// The cookie of the request answered.
    public var cookie: UInt64

    public init(error: NBDErrno, cookie: UInt64) {
        self.error = error
        self.cookie = cookie
    }

    /// Encodes into the first 16 bytes of `bytes`, which must hold at least that many.
    @inlinable
    public func encode(into bytes: UnsafeMutableRawBufferPointer) {
        precondition(bytes.count >= Self.size, "caller's buffer smaller than a reply")
        bytes.storeBigEndian(NBDMagic.simpleReply, at: 0)
        bytes.storeBigEndian(error.rawValue, at: 4)
        bytes.storeBigEndian(cookie, at: 8)
    }

    public func encode() -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: Self.size) { buffer, count in
            encode(into: UnsafeMutableRawBufferPointer(buffer))
            count = Self.size
        }
    }

    @inlinable
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(NBDError) -> NBDSimpleReply {
        guard bytes.count >= size else { throw .truncated(message: "simple reply", length: bytes.count, needed: size) }
        let magic = bytes.loadBigEndian(UInt32.self, at: 0)
        guard magic == NBDMagic.simpleReply else {
            throw .badMagic(field: "simple reply magic", value: UInt64(magic), expected: UInt64(NBDMagic.simpleReply))
        }
        return NBDSimpleReply(error: NBDErrno(rawValue: bytes.loadBigEndian(UInt32.self, at: 4)),
                              cookie: bytes.loadBigEndian(UInt64.self, at: 8))
    }
}
