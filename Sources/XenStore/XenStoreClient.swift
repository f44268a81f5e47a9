import Synchronization

/// A transaction id (`tx_id`); 0 is no transaction.
public typealias XenStoreTransactionID = UInt32

/// An async xenstore client speaking the io/xs_wire.h protocol over any
/// ``XenStoreTransport``, so it talks to C xenstored, oxenstored and ``XenStoreServer``.
///
/// Requests may be issued concurrently from many tasks: each gets a fresh `req_id` and
/// its reply is matched by it. One reader thread takes replies and watch events off the
/// transport. Errors from xenstored come back as ``XenStoreError/daemon(_:)``.
public final class XenStoreClient: Sendable {
    typealias Reply = CheckedContinuation<Result<XenStoreMessage, XenStoreError>, Never>

    struct State {
        var nextRequestID: UInt32 = 1
        var nextToken: UInt64 = 1
        var pending: [UInt32: Reply] = [:]
        var watches: [[UInt8]: AsyncStream<XenStoreWatchEvent>.Continuation] = [:]
        var closed = false
    }

    final class Shared: Sendable {
        let state = Mutex<State>(State())
    }

    let transport: any XenStoreTransport
    let shared = Shared()
    private let reader = Mutex<JoinableThread?>(nil)

    /// A client over `transport`; starts its reader thread.
    public init(transport: any XenStoreTransport) throws(XenStoreError) {
        self.transport = transport
        let thread = try JoinableThread { [shared, transport] in
            Self.readLoop(transport: transport, shared: shared)
        }
        reader.withLock { $0 = thread }
    }

    /// A client on xenstored's Unix socket (`$XENSTORED_PATH` or the default, as libxenstore).
    public convenience init(socketPath: String? = nil) throws(XenStoreError) {
        try self.init(transport: XenStoreSocketTransport(path: socketPath))
    }

    deinit { close() }

    /// Closes the connection: outstanding requests fail with
    /// ``XenStoreError/connectionClosed`` and watch sequences end.
    public func close() {
        transport.close()
        if let thread = reader.withLock({ t -> JoinableThread? in defer { t = nil }; return t }) { thread.join() }
        Self.fail(shared)
    }

    private static func fail(_ shared: Shared) {
        let (pending, watches) = shared.state.withLock { s in
            s.closed = true
            defer { s.pending = [:]; s.watches = [:] }
            return (s.pending, s.watches)
        }
        for continuation in pending.values { continuation.resume(returning: .failure(.connectionClosed)) }
        for continuation in watches.values { continuation.finish() }
    }

    private static func readLoop(transport: any XenStoreTransport, shared: Shared) {
        var framer = XenStoreMessageFramer()
        var buffer = [UInt8](repeating: 0, count: 65536)
        loop: while true {
            let received = buffer.withUnsafeMutableBytes { raw in
                Result { () throws(XenStoreError) in try transport.receive(into: raw) }
            }
            guard case let .success(count) = received, count > 0 else { break }
            buffer.withUnsafeBytes { framer.append(UnsafeRawBufferPointer(rebasing: $0[0 ..< count])) }
            while true {
                let next = Result { () throws(XenStoreError) in try framer.next() }
                guard case let .success(message) = next else { break loop }
                guard let message else { break }
                if message.type == .watchEvent {
                    let fields = message.payload.split(separator: 0, maxSplits: 1, omittingEmptySubsequences: false)
                    guard fields.count == 2 else { continue }
                    var token = Array(fields[1])
                    if token.last == 0 { token.removeLast() }
                    let event = XenStoreWatchEvent(path: String(decoding: fields[0], as: UTF8.self),
                                                   token: String(decoding: token, as: UTF8.self))
                    _ = shared.state.withLock { $0.watches[token]?.yield(event) }
                } else if let continuation = shared.state.withLock({ $0.pending.removeValue(forKey: message.requestID) }) {
                    continuation.resume(returning: .success(message))
                }
            }
        }
        fail(shared)
    }

    // MARK: Requests

    /// Sends one request and returns the reply payload.
    public func request(_ request: XenStoreRequest, transaction: XenStoreTransactionID = 0) async throws(XenStoreError) -> [UInt8] {
        let type = request.type
        let payload = request.payload()
        let result = await withCheckedContinuation { (continuation: Reply) in
            let id: UInt32? = shared.state.withLock { s in
                guard !s.closed else { return nil }
                let id = s.nextRequestID
                s.nextRequestID &+= 1
                s.pending[id] = continuation
                return id
            }
            guard let id else {
                continuation.resume(returning: .failure(.connectionClosed))
                return
            }
            let message = XenStoreMessage(type: type, requestID: id, transactionID: transaction, payload: payload)
            let sent = Result { () throws(XenStoreError) in try transport.send(message.encoded()) }
            if case let .failure(error) = sent,
               let waiting = shared.state.withLock({ $0.pending.removeValue(forKey: id) }) {
                waiting.resume(returning: .failure(error))
            }
        }
        let reply = try result.get()
        if reply.type == .error { throw .daemon(XSDErrorCode(payload: reply.payload) ?? .einval) }
        guard reply.rawType == type.rawValue else { throw .unexpectedReply(request: type, reply: reply.rawType) }
        return reply.payload
    }

    static func bytes(_ path: String) throws(XenStoreError) -> [UInt8] {
        let bytes = Array(path.utf8)
        guard !bytes.contains(0) else { throw .invalidPath(path: path, reason: "contains NUL") }
        return bytes
    }

    /// XS_READ: a node's value.
    public func read(_ path: String, transaction: XenStoreTransactionID = 0) async throws(XenStoreError) -> [UInt8] {
        try await request(.read(path: Self.bytes(path)), transaction: transaction)
    }

    /// XS_READ, decoded as UTF-8.
    public func readString(_ path: String, transaction: XenStoreTransactionID = 0) async throws(XenStoreError) -> String {
        String(decoding: try await read(path, transaction: transaction), as: UTF8.self)
    }

    /// XS_WRITE: sets a node's value, creating it and missing parents.
    public func write(_ path: String, _ value: [UInt8], transaction: XenStoreTransactionID = 0) async throws(XenStoreError) {
        _ = try await request(.write(path: Self.bytes(path), value: value), transaction: transaction)
    }

    /// XS_WRITE of a string's UTF-8 bytes.
    public func write(_ path: String, _ value: String, transaction: XenStoreTransactionID = 0) async throws(XenStoreError) {
        try await write(path, Array(value.utf8), transaction: transaction)
    }

    /// XS_MKDIR: creates a node if absent.
    public func mkdir(_ path: String, transaction: XenStoreTransactionID = 0) async throws(XenStoreError) {
        _ = try await request(.mkdir(path: Self.bytes(path)), transaction: transaction)
    }

    /// XS_RM: removes a node and its subtree.
    public func rm(_ path: String, transaction: XenStoreTransactionID = 0) async throws(XenStoreError) {
        _ = try await request(.rm(path: Self.bytes(path)), transaction: transaction)
    }

    /// The children of a node: XS_DIRECTORY, falling back to XS_DIRECTORY_PART when the
    /// list does not fit one reply (E2BIG), as libxenstore does.
    public func directory(_ path: String, transaction: XenStoreTransactionID = 0) async throws(XenStoreError) -> [String] {
        let p = try Self.bytes(path)
        do {
            return Self.names(try await request(.directory(path: p), transaction: transaction)[...])
        } catch .daemon(.e2big) {
            return try await directoryInParts(p, transaction: transaction)
        }
    }

    private func directoryInParts(_ path: [UInt8], transaction: XenStoreTransactionID) async throws(XenStoreError) -> [String] {
        // The node may change between parts (its generation moves); start over then, a
        // bounded number of times.
        for _ in 0 ..< 64 {
            var names: [String] = []
            var offset: UInt32 = 0
            var generation: ArraySlice<UInt8>?
            var consistent = true
            while consistent {
                let reply = try await request(.directoryPart(path: path, offset: offset), transaction: transaction)
                guard let nul = reply.firstIndex(of: 0) else {
                    throw .malformedPayload(type: .directoryPart, reason: "reply has no generation string")
                }
                let gen = reply[..<nul]
                if let generation, generation != gen {
                    consistent = false
                    break
                }
                generation = gen
                let rest = reply[(nul + 1)...]
                // A list that ends here finishes with an empty string (a second NUL).
                let finished = rest.count >= 1 && rest.last == 0 && (rest.count == 1 || rest[rest.endIndex - 2] == 0)
                let part = finished ? rest.dropLast() : rest
                names += Self.names(part)
                if finished { return names }
                let (next, overflow) = offset.addingReportingOverflow(UInt32(part.count))
                guard !part.isEmpty, !overflow else {
                    throw .malformedPayload(type: .directoryPart, reason: "part at offset \(offset) makes no progress")
                }
                offset = next
            }
        }
        throw .daemon(.eagain)
    }

    static func names(_ payload: ArraySlice<UInt8>) -> [String] {
        payload.split(separator: 0, omittingEmptySubsequences: true).map { String(decoding: $0, as: UTF8.self) }
    }

    /// XS_GET_PERMS.
    public func getPermissions(_ path: String, transaction: XenStoreTransactionID = 0) async throws(XenStoreError) -> [XenStorePermission] {
        try XenStorePermission.parseList(try await request(.getPerms(path: Self.bytes(path)), transaction: transaction)[...])
    }

    /// XS_SET_PERMS: the first entry names the owner and everyone else's access.
    public func setPermissions(_ path: String, _ permissions: [XenStorePermission], transaction: XenStoreTransactionID = 0) async throws(XenStoreError) {
        _ = try await request(.setPerms(path: Self.bytes(path), permissions: permissions), transaction: transaction)
    }

    /// XS_GET_DOMAIN_PATH.
    public func getDomainPath(_ domid: UInt16) async throws(XenStoreError) -> String {
        let reply = try await request(.getDomainPath(domid: domid))
        return String(decoding: reply.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// XS_INTRODUCE (privileged).
    public func introduce(domid: UInt16, mfn: UInt64, port: UInt32) async throws(XenStoreError) {
        _ = try await request(.introduce(domid: domid, mfn: mfn, port: port))
    }

    /// XS_RELEASE (privileged).
    public func release(domid: UInt16) async throws(XenStoreError) {
        _ = try await request(.release(domid: domid))
    }

    /// XS_IS_DOMAIN_INTRODUCED (privileged).
    public func isDomainIntroduced(_ domid: UInt16) async throws(XenStoreError) -> Bool {
        try await request(.isDomainIntroduced(domid: domid)).first == UInt8(ascii: "T")
    }

    /// XS_RESET_WATCHES: drops every watch and transaction of this connection.
    public func resetWatches() async throws(XenStoreError) {
        _ = try await request(.resetWatches)
    }
}
