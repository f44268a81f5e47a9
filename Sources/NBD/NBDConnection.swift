import Glibc
import Logging
import XenPlatform

/// One client, from greeting to disconnect, served on its own thread.
///
/// In transmission the client's thread only reads: it checks each request, waits for
/// room (``NBDInFlight``: at most `maximumRequests` requests and about `maximumBytes`
/// of payload per connection), reads a write's payload and hands the request to the
/// export, which may answer later, in any order. A second thread writes the replies,
/// each header with its data in one piece, so replies go out as requests finish, in any
/// order (proto.md: the cookie matches them), and never interleave on the socket.
/// Replies are simple replies only.
///
/// On `NBD_CMD_DISC` every request already read is answered before the connection
/// closes. When the client goes away instead, or breaks the protocol, or the server
/// stops, requests still with the export are dropped: their answers, whenever they
/// come, only give their room back.
///
/// An export with an event loop of its own (``NBDLoopExport``) serves transmission there
/// instead, by the same rules (``NBDLoopClient``); the client's thread then only waits
/// for it to end, and no writer thread is started.
// @unchecked: the accepting thread builds it and hands it over; from then on only the
// client's own threads touch it (`inFlight` and `socket.shutdown` are safe from any).
final class NBDConnection<Export: NBDExport>: @unchecked Sendable {
    /// Option data larger than this is refused with `NBD_REP_ERR_TOO_BIG` (the largest
    /// legitimate option here is `NBD_OPT_GO`: a 4096-byte name and a few info types).
    static var optionDataLimit: UInt32 { 8192 }
    /// Option data beyond this is not even skipped: the connection is dropped.
    static var optionSkipLimit: UInt32 { 1 << 20 }
    /// Scratch space for skipping data that is read only to be dropped.
    static var scratchSize: Int { 128 << 10 }
    /// Bytes read from the socket at once in transmission: many request headers, or a
    /// few small write payloads.
    static var inputBufferSize: Int { 64 << 10 }
    /// The send buffer asked for a client served on an export's loop.
    static var loopSendBuffer: Int32 { 4 << 20 }

    let socket: NBDSocket
    let export: Export
    let exportName: String
    let logger: Logger
    /// Requests between the socket and the export, and their replies.
    let inFlight: NBDInFlight
    /// The client's transmission on the export's loop, while it runs there.
    private let loopClient = NBDLock<NBDLoopClient?>(nil)
    private let buffer: UnsafeMutableRawBufferPointer
    private let header: UnsafeMutableRawBufferPointer
    private let blockSizes: NBDBlockSizes
    private let exportSize: UInt64
    private let flags: NBDTransmissionFlags
    /// A rejected write payload up to this size is read and dropped so the connection
    /// survives; proto.md asks servers not to treat payloads up to 32 MiB as an attack.
    private let payloadSkipLimit: UInt64

    init(socket: NBDSocket, export: Export, exportName: String, maximumRequests: Int, maximumBytes: Int,
         logger: Logger) {
        self.socket = socket
        self.export = export
        self.exportName = exportName
        self.logger = logger
        blockSizes = export.blockSizes
        exportSize = export.size
        flags = export.transmissionFlags
        payloadSkipLimit = max(UInt64(32 << 20), UInt64(blockSizes.maximum))
        buffer = .allocate(byteCount: Self.scratchSize, alignment: 4096)
        header = .allocate(byteCount: 32, alignment: 8)
        inFlight = NBDInFlight(maximumRequests: maximumRequests, maximumBytes: maximumBytes)
    }

    deinit {
        buffer.deallocate()
        header.deallocate()
    }

    /// Drops the client from another thread (the server stopping): requests in flight
    /// are dropped and both of its threads wake up.
    func abort() {
        inFlight.abort()
        socket.shutdown()
        loopClient.withLock { $0?.abandon() }
    }

    /// Serves the client until it disconnects or breaks the protocol.
    func run() {
        do throws(NBDError) {
            if try negotiate() {
                if let loop = export as? any NBDLoopExport { try transmit(on: loop) } else { try transmit() }
            }
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
        let writer = try spawnThread { [self] in
            nameThisThread("nbd-replies")
            writeReplies()
        }
        // The handshake read exactly what it needed, so nothing is buffered elsewhere.
        let input = NBDReadBuffer(socket: socket, capacity: Self.inputBufferSize)
        var graceful = false
        defer {
            if !graceful {
                let dropped = inFlight.abort()
                if dropped > 0 { logger.debug("dropping \(dropped) requests in flight") }
            }
            pthread_join(writer, nil)
        }
        while true {
            try input.readExactly(into: UnsafeMutableRawBufferPointer(rebasing: header[0..<NBDRequest.size]))
            let request = try NBDRequest.decode(UnsafeRawBufferPointer(header))
            if request.command == .disconnect {
                // The writer answers everything read so far, then ends.
                inFlight.finishReading()
                graceful = true
                return
            }
            let refusal = validate(request)
            guard refusal == .success else {
                if request.command == .write {
                    // The payload is on the wire whatever we answer; drop it in bounded
                    // chunks, or the connection if it is too large to be worth reading.
                    guard UInt64(request.length) <= payloadSkipLimit else {
                        throw .fieldOutOfRange(field: "NBD_CMD_WRITE length", value: UInt64(request.length),
                                               limit: UInt64(blockSizes.maximum))
                    }
                    try input.skip(UInt64(request.length))
                }
                guard inFlight.reserve(bytes: 0) else { return }
                inFlight.complete(.init(error: refusal, cookie: request.cookie, data: [], bytes: 0))
                continue
            }
            let length = Int(request.length)
            let held = request.command == .read || request.command == .write ? length : 0
            guard inFlight.reserve(bytes: held) else { return }
            let payload = request.command == .write ? try readPayload(length, from: input) : []
            guard let command = NBDExportCommand(request, payload: payload) else {
                // validate() refuses every other command.
                inFlight.complete(.init(error: .invalid, cookie: request.cookie, data: [], bytes: held))
                continue
            }
            let cookie = request.cookie
            let inFlight = self.inFlight
            let logger = self.logger
            let isRead = request.command == .read
            // A large write's payload goes back with its reply, to be reused after it.
            let spare = payload.count >= NBDSpareBuffers.minimum ? payload : []
            let completion: NBDExportCompletion = { [spare] result in
                let (error, data) = NBDErrno.answer(result, isRead: isRead, length: length, logger: logger)
                inFlight.complete(.init(error: error, cookie: cookie, data: data, bytes: held,
                                        spare: error == .success ? spare : []))
            }
            if isRead, let spare = inFlight.takeSpare(count: length) {
                export.submitRead(offset: request.offset, into: consume spare, completion: completion)
            } else {
                export.submit(command, completion: completion)
            }
        }
    }

    /// Serves transmission on `loop`'s thread, this one waiting, until the client is done
    /// there or the server stops; then takes it off the loop. Served here, on the
    /// connection's threads, when the loop is gone (a closed frontend: each request is
    /// answered with its error).
    func transmit(on loop: any NBDLoopExport) throws(NBDError) {
        let client = NBDLoopClient(socket: socket, export: export, maximumRequests: inFlight.maximumRequests,
                                   maximumBytes: inFlight.maximumBytes, payloadSkipLimit: payloadSkipLimit,
                                   inputBytes: Self.inputBufferSize, logger: logger) { [self] in validate($0) }
        loopClient.withLock { $0 = client }
        try socket.setNonBlocking(true)
        // Room for several large replies, so the loop hands a 1 MiB read's data to the
        // socket in one send instead of waiting on the client between pieces of it.
        socket.requestSendBuffer(Self.loopSendBuffer)
        guard loop.attach(client) else {
            loopClient.withLock { $0 = nil }
            try socket.setNonBlocking(false)
            return try transmit()
        }
        client.waitUntilDone()
        loop.detach(client)
        client.close()
        loopClient.withLock { $0 = nil }
        if let failure = client.failure { throw failure }
    }

    /// A write's payload, read straight into the array the export receives (a spare
    /// when one of its size was kept).
    private func readPayload(_ length: Int, from input: NBDReadBuffer) throws(NBDError) -> [UInt8] {
        if var spare = inFlight.takeSpare(count: length) {
            var failure: NBDError?
            spare.withUnsafeMutableBytes { buffer in
                do throws(NBDError) { try input.readExactly(into: buffer) } catch { failure = error }
            }
            if let failure { throw failure }
            return spare
        }
        var failure: NBDError?
        let data = [UInt8](unsafeUninitializedCapacity: length) { buffer, count in
            do throws(NBDError) {
                try input.readExactly(into: UnsafeMutableRawBufferPointer(buffer))
            } catch {
                failure = error
                UnsafeMutableRawBufferPointer(buffer).initializeMemory(as: UInt8.self, repeating: 0)
            }
            count = length
        }
        if let failure { throw failure }
        return data
    }

    /// The writer thread: sends replies as they are queued, all those queued at once
    /// per wake-up, until ``NBDInFlight`` says the connection is done. A failed send drops
    /// the client (and wakes its reader).
    private func writeReplies() {
        // Replies go out in groups of up to `group`: every header and its data in one
        // sendmsg, a system call per wake-up rather than per reply.
        let group = NBDSocket.maximumVectors / 2
        let headers = UnsafeMutableRawBufferPointer.allocate(byteCount: group * NBDSimpleReply.size, alignment: 8)
        let vectors = UnsafeMutableBufferPointer<iovec>.allocate(capacity: group * 2)
        defer {
            headers.deallocate()
            vectors.deallocate()
        }
        var batch: [NBDInFlight.Reply] = []
        batch.reserveCapacity(inFlight.maximumRequests)
        while inFlight.takeReplies(into: &batch) {
            var first = 0
            while first < batch.count {
                let last = min(first + group, batch.count)
                var count = 0
                for (slot, index) in (first ..< last).enumerated() {
                    let header = UnsafeMutableRawBufferPointer(rebasing: headers[slot * NBDSimpleReply.size ..< (slot + 1) * NBDSimpleReply.size])
                    NBDSimpleReply(error: batch[index].error, cookie: batch[index].cookie).encode(into: header)
                    vectors[count] = iovec(iov_base: header.baseAddress, iov_len: header.count)
                    count += 1
                    guard !batch[index].data.isEmpty else { continue }
                    // SAFETY: `batch` owns this array and neither changes nor drops it until
                    // sent(batch) below, after the sendmsg; a native array's storage stays
                    // in place while it is not mutated, so the address is valid for the send.
                    let data = batch[index].data.withUnsafeBytes { $0 }
                    vectors[count] = iovec(iov_base: UnsafeMutableRawPointer(mutating: data.baseAddress), iov_len: data.count)
                    count += 1
                }
                do throws(NBDError) {
                    try socket.writeAll(vectors: UnsafeMutableBufferPointer(rebasing: vectors[0 ..< count]))
                } catch {
                    logger.notice("cannot send a reply, dropping the client: \(error)")
                    inFlight.sent(&batch)
                    abort()
                    return
                }
                first = last
            }
            inFlight.sent(&batch)
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

}

extension NBDErrno {
    /// What the export's `result` for a request becomes on the wire: its error, and the
    /// data a read sends back (a read that came back short is an I/O error).
    static func answer(_ result: Result<[UInt8], NBDError>, isRead: Bool, length: Int,
                       logger: Logger) -> (error: NBDErrno, data: [UInt8]) {
        switch result {
        case let .success(data) where !isRead || data.count == length:
            return (.success, isRead ? data : [])
        case let .success(data):
            logger.error("export read \(data.count) bytes where \(length) were asked for")
            return (.io, [])
        case let .failure(error):
            logger.warning("export I/O failed: \(error)")
            return (NBDErrno(exportFailure: error), [])
        }
    }

    /// The error the client sees for an export's failure.
    init(exportFailure error: NBDError) {
        guard case let .exportIO(_, code) = error else {
            self = .io
            return
        }
        switch code {
        case ENOSPC, EDQUOT, EFBIG: self = .noSpace
        case EPERM, EROFS: self = .permission
        case ENOMEM: self = .noMemory
        case EINVAL: self = .invalid
        case EOPNOTSUPP: self = .notSupported
        default: self = .io
        }
    }
}
