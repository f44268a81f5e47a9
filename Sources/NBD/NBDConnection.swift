import Glibc
import Logging

/// One client, from greeting to disconnect, served on its own thread.
///
/// Requests are handled one at a time in arrival order; a pipelining client simply finds
/// its later requests waiting in the socket. Replies are simple replies only.
// @unchecked: the accepting thread builds it and hands it over; from then on only the
// client's own thread touches it.
final class NBDConnection<Export: NBDExport>: @unchecked Sendable {
    /// Option data larger than this is refused with `NBD_REP_ERR_TOO_BIG` (the largest
    /// legitimate option here is `NBD_OPT_GO`: a 4096-byte name and a few info types).
    static var optionDataLimit: UInt32 { 8192 }
    /// Option data beyond this is not even skipped: the connection is dropped.
    static var optionSkipLimit: UInt32 { 1 << 20 }
    /// Holds payloads in flight; grown on demand up to the maximum block size.
    static var initialBufferSize: Int { 128 << 10 }

    let socket: NBDSocket
    let export: Export
    let exportName: String
    let logger: Logger
    private var buffer: UnsafeMutableRawBufferPointer
    private let header: UnsafeMutableRawBufferPointer
    private let blockSizes: NBDBlockSizes
    private let exportSize: UInt64
    private let flags: NBDTransmissionFlags
    /// A rejected write payload up to this size is read and dropped so the connection
    /// survives; proto.md asks servers not to treat payloads up to 32 MiB as an attack.
    private let payloadSkipLimit: UInt64

    init(socket: NBDSocket, export: Export, exportName: String, logger: Logger) {
        self.socket = socket
        self.export = export
        self.exportName = exportName
        self.logger = logger
        blockSizes = export.blockSizes
        exportSize = export.size
        flags = export.transmissionFlags
        payloadSkipLimit = max(UInt64(32 << 20), UInt64(blockSizes.maximum))
        buffer = .allocate(byteCount: Self.initialBufferSize, alignment: 4096)
        header = .allocate(byteCount: 32, alignment: 8)
    }

    deinit {
        buffer.deallocate()
        header.deallocate()
    }

    /// Serves the client until it disconnects or breaks the protocol.
    func run() {
        do throws(NBDError) {
            if try negotiate() { try transmit() }
            logger.debug("client disconnected")
        } catch .connectionClosed {
            logger.debug("client closed the connection")
        } catch {
            logger.notice("dropping client: \(error)")
        }
    }

    // MARK: option haggling

    /// Runs the fixed-newstyle handshake; true when the client entered transmission.
    func negotiate() throws(NBDError) -> Bool {
        let offered: NBDHandshakeFlags = [.fixedNewstyle, .noZeroes]
        try socket.writeAll(NBDServerGreeting(flags: offered).encode())
        let clientFlags = try NBDClientFlags.decode(try socket.readExactly(count: NBDClientFlags.size), offered: offered)
        let noZeroes = clientFlags.contains(.noZeroes)
        while true {
            let header = try NBDOptionHeader.decode(try socket.readExactly(count: NBDOptionHeader.size))
            let option = header.option
            if header.length > Self.optionDataLimit {
                // NBD_OPT_EXPORT_NAME has no error reply, so an oversized one ends the session.
                guard option != .exportName, header.length <= Self.optionSkipLimit else {
                    throw .fieldOutOfRange(field: "\(option) data length", value: UInt64(header.length),
                                           limit: UInt64(Self.optionDataLimit))
                }
                try socket.skip(UInt64(header.length), scratch: buffer)
                try reply(option, .errTooBig, message: "option data of \(header.length) bytes is too large")
                continue
            }
            let data = try socket.readExactly(count: Int(header.length))
            switch option {
            case .exportName:
                let name = try NBDString.decode(data[...], field: "NBD_OPT_EXPORT_NAME name")
                guard matches(name) else { throw .unknownExport(name: name) }
                try socket.writeAll(NBDExportNameReply(size: exportSize, flags: flags).encode(noZeroes: noZeroes))
                logger.debug("client chose the export with NBD_OPT_EXPORT_NAME")
                return true
            case .abort:
                // The client may already have gone; the reply is a courtesy.
                try? reply(option, .ack)
                return false
            case .list:
                guard data.isEmpty else {
                    try reply(option, .errInvalid, message: "NBD_OPT_LIST takes no data")
                    continue
                }
                try socket.writeAll(NBDOptionReply(option: option, type: .server,
                                                   data: NBDServerEntry(name: exportName).encode()).encode())
                try reply(option, .ack)
            case .info, .go:
                let request: NBDInfoRequest
                do throws(NBDError) {
                    request = try NBDInfoRequest.decode(data)
                } catch {
                    try reply(option, .errInvalid, message: "\(error)")
                    continue
                }
                guard matches(request.name) else {
                    try reply(option, .errUnknown, message: "no export named \"\(request.name)\"")
                    continue
                }
                try info(option, .export(size: exportSize, flags: flags))
                // Sent whether asked for or not (proto.md allows it), so even clients
                // that did not ask learn the alignment the server enforces.
                try info(option, .blockSize(blockSizes))
                if request.requests.contains(.name) { try info(option, .name(exportName)) }
                try reply(option, .ack)
                if option == .go {
                    logger.debug("client chose the export with NBD_OPT_GO")
                    return true
                }
            default:
                try reply(option, .errUnsupported, message: "\(option) is not supported")
            }
        }
    }

    private func matches(_ name: String) -> Bool { name.isEmpty || name == exportName }

    private func reply(_ option: NBDOption, _ type: NBDOptionReplyType, message: String = "") throws(NBDError) {
        try socket.writeAll(NBDOptionReply(option: option, type: type, data: Array(message.utf8)).encode())
    }

    private func info(_ option: NBDOption, _ info: NBDInfo) throws(NBDError) {
        try socket.writeAll(NBDOptionReply(option: option, type: .info, data: info.encode()).encode())
    }

    // MARK: transmission

    /// Serves requests until `NBD_CMD_DISC`; a bad magic or a closed socket throws.
    func transmit() throws(NBDError) {
        while true {
            try socket.readExactly(into: UnsafeMutableRawBufferPointer(rebasing: header[0..<NBDRequest.size]))
            let request = try NBDRequest.decode(UnsafeRawBufferPointer(header))
            if request.command == .disconnect { return }
            let refusal = validate(request)
            let length = Int(request.length)
            if request.command == .write {
                guard refusal == .success else {
                    // The payload is on the wire whatever we answer; drop it in bounded
                    // chunks, or the connection if it is too large to be worth reading.
                    guard UInt64(request.length) <= payloadSkipLimit else {
                        throw .fieldOutOfRange(field: "NBD_CMD_WRITE length", value: UInt64(request.length),
                                               limit: UInt64(blockSizes.maximum))
                    }
                    try socket.skip(UInt64(request.length), scratch: buffer)
                    try sendReply(refusal, request.cookie)
                    continue
                }
                reserve(length)
                let payload = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<length])
                try socket.readExactly(into: payload)
                let result = perform { () throws(NBDError) in
                    try export.write(UnsafeRawBufferPointer(payload), at: request.offset, fua: request.flags.contains(.fua))
                }
                try sendReply(result, request.cookie)
                continue
            }
            guard refusal == .success else {
                try sendReply(refusal, request.cookie)
                continue
            }
            switch request.command {
            case .read:
                reserve(NBDSimpleReply.size + length)
                let data = UnsafeMutableRawBufferPointer(rebasing: buffer[NBDSimpleReply.size..<(NBDSimpleReply.size + length)])
                let result = perform { () throws(NBDError) in try export.read(into: data, at: request.offset) }
                if result == .success {
                    // Header and data in one send: one system call, and no partial reply
                    // interleaving with anything else.
                    NBDSimpleReply(error: .success, cookie: request.cookie).encode(into: buffer)
                    try socket.writeAll(UnsafeRawBufferPointer(rebasing: buffer[0..<(NBDSimpleReply.size + length)]))
                } else {
                    try sendReply(result, request.cookie)
                }
            case .flush:
                try sendReply(perform { () throws(NBDError) in try export.flush() }, request.cookie)
            case .trim:
                try sendReply(perform { () throws(NBDError) in
                    try export.trim(at: request.offset, length: UInt64(request.length), fua: request.flags.contains(.fua))
                }, request.cookie)
            case .writeZeroes:
                try sendReply(perform { () throws(NBDError) in
                    try export.writeZeroes(at: request.offset, length: UInt64(request.length),
                                           mayPunchHole: !request.flags.contains(.noHole),
                                           fua: request.flags.contains(.fua))
                }, request.cookie)
            default:
                try sendReply(.invalid, request.cookie)
            }
        }
    }

    /// The error a request is refused with before any I/O, or `.success` (proto.md
    /// "Error values": EINVAL for unknown commands and flags, misalignment and reads or
    /// trims past the end; ENOSPC for writes past the end; EPERM for changes to a
    /// read-only export).
    func validate(_ request: NBDRequest) -> NBDErrno {
        var allowed: NBDCommandFlags = []
        let changes: Bool
        let needed: NBDTransmissionFlags
        switch request.command {
        case .read:
            changes = false
            needed = []
        case .write:
            changes = true
            needed = []
        case .flush:
            changes = false
            needed = .sendFlush
        case .trim:
            changes = true
            needed = .sendTrim
        case .writeZeroes:
            changes = true
            needed = .sendWriteZeroes
            allowed.insert(.noHole)
        default:
            return .invalid
        }
        // proto.md: once NBD_FLAG_SEND_FUA is advertised, FUA is accepted on every command;
        // on one that writes nothing it is a no-op.
        if flags.contains(.sendFUA) { allowed.insert(.fua) }
        guard request.flags.isSubset(of: allowed) else { return .invalid }
        if changes, flags.contains(.readOnly) { return .permission }
        guard flags.isSuperset(of: needed) else { return .invalid }
        if request.command == .flush { return .success }
        if request.command == .read || request.command == .write, request.length > blockSizes.maximum {
            return .invalid
        }
        let (end, overflow) = request.offset.addingReportingOverflow(UInt64(request.length))
        guard !overflow, end <= exportSize else {
            return request.command == .write || request.command == .writeZeroes ? .noSpace : .invalid
        }
        let minimum = UInt64(blockSizes.minimum)
        guard request.offset % minimum == 0, UInt64(request.length) % minimum == 0 else { return .invalid }
        return .success
    }

    /// Runs one export call and maps its failure onto the error the client sees.
    private func perform(_ operation: () throws(NBDError) -> Void) -> NBDErrno {
        do throws(NBDError) {
            try operation()
            return .success
        } catch {
            logger.warning("export I/O failed: \(error)")
            guard case let .exportIO(_, code) = error else { return .io }
            switch code {
            case ENOSPC, EDQUOT, EFBIG: return .noSpace
            case EPERM, EROFS: return .permission
            case ENOMEM: return .noMemory
            default: return .io
            }
        }
    }

    private func sendReply(_ error: NBDErrno, _ cookie: UInt64) throws(NBDError) {
        NBDSimpleReply(error: error, cookie: cookie).encode(into: header)
        try socket.writeAll(UnsafeRawBufferPointer(rebasing: header[0..<NBDSimpleReply.size]))
    }

    /// Grows the payload buffer to `count` bytes; validation has capped `count` at the
    /// maximum block size plus a reply header.
    private func reserve(_ count: Int) {
        guard count > buffer.count else { return }
        let grown = max(count, min(buffer.count * 2, Int(blockSizes.maximum) + NBDSimpleReply.size))
        buffer.deallocate()
        buffer = .allocate(byteCount: grown, alignment: 4096)
    }
}
