/// Block-size constraints of an export (proto.md "Size constraints", `NBD_INFO_BLOCK_SIZE`).
public struct NBDBlockSizes: Equatable, Sendable {
    /// Smallest addressable unit; offsets and lengths must be multiples of it.
    public let minimum: UInt32
    /// The size from which aligned I/O is efficient.
    public let preferred: UInt32
    /// Largest read or write payload the server accepts.
    public let maximum: UInt32

    /// proto.md defaults: byte granularity, 4 KiB preferred, 32 MiB maximum payload.
    public static let `default` = try! NBDBlockSizes(minimum: 1, preferred: 4096, maximum: 32 << 20)

    /// Validates the rules of proto.md: minimum a power of two up to 64 KiB, preferred a
    /// power of two at least max(minimum, 512), maximum at least preferred.
    public init(minimum: UInt32, preferred: UInt32, maximum: UInt32) throws(NBDError) {
        func fail(_ reason: String) -> NBDError {
            .invalidBlockSizes(minimum: minimum, preferred: preferred, maximum: maximum, reason: reason)
        }
        guard minimum != 0, minimum.nonzeroBitCount == 1, minimum <= 65536 else {
            throw fail("minimum must be a power of two no larger than 65536")
        }
        guard preferred.nonzeroBitCount == 1, preferred >= max(minimum, 512) else {
            throw fail("preferred must be a power of two at least max(minimum, 512)")
        }
        guard maximum >= preferred else { throw fail("maximum must be at least preferred") }
        self.minimum = minimum
        self.preferred = preferred
        self.maximum = maximum
    }
}

/// What an export can do beyond read and write; each maps onto a transmission flag.
public struct NBDExportFeatures: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// `flush()` makes completed writes durable (`NBD_FLAG_SEND_FLUSH`).
    public static let flush = NBDExportFeatures(rawValue: 1 << 0)
    /// Writes honour `fua` (`NBD_FLAG_SEND_FUA`).
    public static let fua = NBDExportFeatures(rawValue: 1 << 1)
    /// `trim` discards ranges (`NBD_FLAG_SEND_TRIM`).
    public static let trim = NBDExportFeatures(rawValue: 1 << 2)
    /// `writeZeroes` zeroes ranges without a payload (`NBD_FLAG_SEND_WRITE_ZEROES`).
    public static let writeZeroes = NBDExportFeatures(rawValue: 1 << 3)
    /// Every connection sees one cache, so a flush on one covers writes on all
    /// (`NBD_FLAG_CAN_MULTI_CONN`).
    public static let multiConnection = NBDExportFeatures(rawValue: 1 << 4)
}

/// A request the server passes to ``NBDExport/submit(_:completion:)``, already checked
/// against the export's size, block sizes and read-only flag.
public enum NBDExportCommand: Sendable {
    /// `NBD_CMD_READ` of `length` bytes at `offset`.
    case read(offset: UInt64, length: Int)
    /// `NBD_CMD_WRITE` of `data` at `offset`, with `NBD_CMD_FLAG_FUA` when `fua`.
    case write(offset: UInt64, data: [UInt8], fua: Bool)
    /// `NBD_CMD_FLUSH`.
    case flush
    /// `NBD_CMD_TRIM`.
    case trim(offset: UInt64, length: UInt64, fua: Bool)
    /// `NBD_CMD_WRITE_ZEROES`; `mayPunchHole` is false with `NBD_CMD_FLAG_NO_HOLE`.
    case writeZeroes(offset: UInt64, length: UInt64, mayPunchHole: Bool, fua: Bool)
}

extension NBDExportCommand {
    /// The command `request` asks for, with a write's `payload`; nil for a command the
    /// export never sees (the server refuses those first).
    init?(_ request: NBDRequest, payload: [UInt8] = []) {
        let fua = request.flags.contains(.fua)
        switch request.command {
        case .read: self = .read(offset: request.offset, length: Int(request.length))
        case .write: self = .write(offset: request.offset, data: payload, fua: fua)
        case .flush: self = .flush
        case .trim: self = .trim(offset: request.offset, length: UInt64(request.length), fua: fua)
        case .writeZeroes:
            self = .writeZeroes(offset: request.offset, length: UInt64(request.length),
                                mayPunchHole: !request.flags.contains(.noHole), fua: fua)
        default: return nil
        }
    }
}

/// The end of a submitted command: a read's bytes (empty for the others) or its failure.
public typealias NBDExportCompletion = @Sendable (Result<[UInt8], NBDError>) -> Void

/// A disk the NBD server exports.
///
/// The server reads each client's requests on that client's thread and hands them to
/// ``submit(_:completion:)``, so calls for several clients may run at once and an
/// implementation must be safe for that. An export that can keep many requests in
/// flight implements `submit` and returns at once; the default runs the blocking methods
/// below on the client's thread, one request at a time. The server has already checked
/// every range against `size` and `blockSizes` and refused writes to a read-only export,
/// so an implementation sees only valid requests; it reports backend failures as
/// `NBDError.exportIO`, which the client receives as `NBD_EIO` (or `NBD_ENOSPC` /
/// `NBD_EPERM` / `NBD_ENOMEM` where the errno says so).
public protocol NBDExport: AnyObject, Sendable {
    /// Size of the disk in bytes.
    var size: UInt64 { get }
    /// Block-size constraints advertised with `NBD_INFO_BLOCK_SIZE` and enforced.
    var blockSizes: NBDBlockSizes { get }
    /// Whether writes, trims and zeroing are refused with `NBD_EPERM`.
    var isReadOnly: Bool { get }
    /// Optional operations the export supports.
    var features: NBDExportFeatures { get }

    /// Fills `buffer` with the bytes at `offset`.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(NBDError)
    /// Writes `buffer` at `offset`; with `fua`, durably before returning.
    func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64, fua: Bool) throws(NBDError)
    /// Makes every completed write durable.
    func flush() throws(NBDError)
    /// Discards `length` bytes at `offset`; their contents become unspecified.
    func trim(at offset: UInt64, length: UInt64, fua: Bool) throws(NBDError)
    /// Makes `length` bytes at `offset` read as zero; `mayPunchHole` false
    /// (`NBD_CMD_FLAG_NO_HOLE`) asks for the blocks to stay allocated.
    func writeZeroes(at offset: UInt64, length: UInt64, mayPunchHole: Bool, fua: Bool) throws(NBDError)
    /// Starts `command`; `completion` runs exactly once, on any thread, and must not
    /// block (the server only queues the reply there).
    func submit(_ command: NBDExportCommand, completion: @escaping NBDExportCompletion)
    /// Starts `NBD_CMD_READ` of `buffer.count` bytes at `offset`, as ``submit(_:completion:)``
    /// does, and may read into `buffer` (a spare the server recycles; nothing else holds
    /// it) and hand it back, instead of making a new array. The default ignores it.
    func submitRead(offset: UInt64, into buffer: consuming [UInt8], completion: @escaping NBDExportCompletion)
}

extension NBDExport {
    /// Reads into a new array: `submit(.read(offset:length:))`.
    public func submitRead(offset: UInt64, into buffer: consuming [UInt8], completion: @escaping NBDExportCompletion) {
        submit(.read(offset: offset, length: buffer.count), completion: completion)
    }

    /// Runs `command` through the blocking methods, then completes, on the calling thread.
    public func submit(_ command: NBDExportCommand, completion: @escaping NBDExportCompletion) {
        do throws(NBDError) {
            switch command {
            case let .read(offset, length):
                var failure: NBDError?
                let bytes = [UInt8](unsafeUninitializedCapacity: length) { buffer, count in
                    do throws(NBDError) {
                        try read(into: UnsafeMutableRawBufferPointer(buffer), at: offset)
                    } catch {
                        failure = error
                        // The bytes are dropped; make them initialised for the array all the same.
                        UnsafeMutableRawBufferPointer(buffer).initializeMemory(as: UInt8.self, repeating: 0)
                    }
                    count = length
                }
                if let failure { throw failure }
                completion(.success(bytes))
                return
            case let .write(offset, data, fua):
                let failure = data.withUnsafeBytes { buffer -> NBDError? in
                    do throws(NBDError) {
                        try write(buffer, at: offset, fua: fua)
                        return nil
                    } catch {
                        return error
                    }
                }
                if let failure { throw failure }
            case .flush:
                try flush()
            case let .trim(offset, length, fua):
                try trim(at: offset, length: length, fua: fua)
            case let .writeZeroes(offset, length, mayPunchHole, fua):
                try writeZeroes(at: offset, length: length, mayPunchHole: mayPunchHole, fua: fua)
            }
            completion(.success([]))
        } catch {
            completion(.failure(error))
        }
    }
}

extension NBDExport {
    /// The transmission flags this export is advertised with.
    public var transmissionFlags: NBDTransmissionFlags {
        var flags: NBDTransmissionFlags = .hasFlags
        if isReadOnly { flags.insert(.readOnly) }
        if features.contains(.flush) { flags.insert(.sendFlush) }
        if features.contains(.fua) { flags.insert(.sendFUA) }
        if features.contains(.multiConnection) { flags.insert(.canMultiConn) }
        if !isReadOnly {
            if features.contains(.trim) { flags.insert(.sendTrim) }
            if features.contains(.writeZeroes) { flags.insert(.sendWriteZeroes) }
        }
        return flags
    }
}
