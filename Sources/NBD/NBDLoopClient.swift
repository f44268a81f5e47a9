import BlockFrontend
import Dispatch
import Glibc
import Logging
import XenDevice

/// An export with an event loop of its own (``NBDBlockFrontendExport``: the frontend's I/O
/// thread), which serves each client's transmission phase there instead of on the
/// connection's reader and writer threads.
public protocol NBDLoopExport: NBDExport {
    /// Starts serving `client` on the export's loop; false when the loop is gone for good
    /// (the client is then served on the connection's own threads).
    func attach(_ client: NBDLoopClient) -> Bool
    /// Stops serving `client`; returns once the loop no longer calls it.
    func detach(_ client: NBDLoopClient)
}

/// One client's transmission phase served from a non-blocking socket on an export's
/// loop: the requests it reads go to the export in the same pass, and their replies
/// leave as the export answers them, all on that one thread, where a connection's own
/// threads hand each request over and each reply back.
///
/// The rules are the threaded connection's (``NBDConnection``): the same checks and error
/// replies, at most `maximumRequests` requests and about `maximumBytes` of payload held
/// per client (a request's room is held until its reply is on the socket, so a client
/// that stops reading replies stops being read), every request read answered after
/// `NBD_CMD_DISC`, and requests dropped when the client goes or breaks the protocol.
public final class NBDLoopClient: FrontendLoopSource, @unchecked Sendable {
    // @unchecked: every var is touched only between lock() and unlock(); the connection's
    // thread waits in waitUntilDone() while the loop serves the client.

    /// A reply not yet (wholly) on the socket.
    struct Reply {
        var error: NBDErrno
        var cookie: UInt64
        var data: [UInt8]
        /// The room its request held.
        var bytes: Int
        /// A write's payload, kept for reuse once the reply is sent.
        var spare: [UInt8] = []
    }

    /// A request read in this pass, handed to the export once the lock is let go (its
    /// completion may run at once, and takes the lock).
    enum Submission {
        case command(NBDExportCommand, NBDExportCompletion)
        case read(offset: UInt64, buffer: [UInt8], NBDExportCompletion)
    }

    /// What the next bytes on the socket are.
    enum Input {
        /// A request header.
        case header
        /// The rest of a write's payload.
        case payload(NBDRequest, data: [UInt8], filled: Int, held: Int)
        /// The payload of a refused write, read and dropped.
        case skip(left: UInt64)
    }

    let socket: NBDSocket
    let export: any NBDExport
    let logger: Logger
    let validate: (NBDRequest) -> NBDErrno
    let maximumRequests: Int
    let maximumBytes: Int
    let payloadSkipLimit: UInt64
    /// Why the client was dropped, if it was (nil after a clean disconnect).
    public private(set) var failure: NBDError?

    private var mutex = pthread_mutex_t()
    private let done = DispatchSemaphore(value: 0)
    private let storage: UnsafeMutableRawBufferPointer
    private var start = 0
    private var end = 0
    private var input = Input.header
    /// The storage of each call's submissions, kept between calls (only serve uses it).
    private var outbox: [Submission] = []
    private var requests = 0
    private var bytes = 0
    private var replies: [Reply] = []
    /// Replies before this index are sent; `sentInFirst` bytes of the one at it are.
    private var head = 0
    private var sentInFirst = 0
    private var spares: NBDSpareBuffers
    private var reading = true
    /// The socket may have bytes to read, or room to write: until it answers EAGAIN.
    private var mayRead = true
    private var mayWrite = true
    private var closed = false
    private var signalled = false
    /// The room the request whose header waits in the buffer needs, when that stopped
    /// the reading: a reply sent may make it.
    private var waitingForRoom: Int?
    private let headers: UnsafeMutableRawBufferPointer
    private let vectors: UnsafeMutableBufferPointer<iovec>
    /// Replies sent in one sendmsg at most (a header and data each).
    private static var group: Int { NBDSocket.maximumVectors / 2 }
    /// Requests read in one pass at most, so other sources and the rings get their turn.
    private static var passBudget: Int { 64 }

    init(socket: NBDSocket, export: any NBDExport, maximumRequests: Int, maximumBytes: Int,
         payloadSkipLimit: UInt64, inputBytes: Int, logger: Logger,
         validate: @escaping (NBDRequest) -> NBDErrno) {
        self.socket = socket
        self.export = export
        self.maximumRequests = max(1, maximumRequests)
        self.maximumBytes = max(0, maximumBytes)
        self.payloadSkipLimit = payloadSkipLimit
        self.logger = logger
        self.validate = validate
        spares = NBDSpareBuffers(maximumCount: self.maximumRequests, connectionBytes: self.maximumBytes)
        storage = .allocate(byteCount: max(inputBytes, 4096), alignment: 64)
        headers = .allocate(byteCount: Self.group * NBDSimpleReply.size, alignment: 8)
        vectors = .allocate(capacity: Self.group * 2)
        pthread_mutex_init(&mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(&mutex)
        storage.deallocate()
        headers.deallocate()
        vectors.deallocate()
    }

    private func lock() { pthread_mutex_lock(&mutex) }
    private func unlock() { pthread_mutex_unlock(&mutex) }

    // MARK: the connection's thread

    /// Blocks until the client is done on the loop, or ``abandon()`` was called.
    func waitUntilDone() { done.wait() }

    /// From any thread (the server stopping): lets ``waitUntilDone()`` return even when no
    /// loop runs to notice the shut-down socket.
    func abandon() { done.signal() }

    /// After the export detached it: answers that arrive from now on are dropped.
    func close() {
        lock()
        closed = true
        replies = []
        spares.removeAll()
        unlock()
    }

    // MARK: FrontendLoopSource

    public func frontendClosed() {
        lock()
        drop(.serverState("the export's frontend closed"))
        finish()
        unlock()
    }

    public var loopDescriptor: Int32 { socket.descriptor }

    public func loopEvents() -> Int16 {
        lock()
        defer { unlock() }
        var events: Int16 = 0
        if reading, !mayRead { events |= Int16(POLLIN) }
        if head < replies.count, !mayWrite { events |= Int16(POLLOUT) }
        return events
    }

    public func serve(revents: Int16) -> FrontendLoopProgress {
        lock()
        guard !closed else {
            unlock()
            return .done
        }
        if revents & Int16(POLLIN) != 0 { mayRead = true }
        if revents & Int16(POLLOUT) != 0 { mayWrite = true }
        if revents & Int16(POLLHUP | POLLERR | POLLNVAL) != 0 {
            if reading {
                mayRead = true
            } else {
                // Past NBD_CMD_DISC there is nothing to read, and no one to answer.
                drop(.connectionClosed)
            }
        }
        var submissions: [Submission] = []
        swap(&submissions, &outbox)
        let full = closed ? false : readRequests(into: &submissions)
        unlock()
        for submission in submissions {
            switch submission {
            case let .command(command, completion): export.submit(command, completion: completion)
            case let .read(offset, buffer, completion): export.submitRead(offset: offset, into: buffer, completion: completion)
            }
        }
        submissions.removeAll(keepingCapacity: true)
        lock()
        swap(&submissions, &outbox)
        defer { unlock() }
        if !closed { flushReplies() }
        if !closed, !reading, requests == 0, head == replies.count {
            // Every request read before NBD_CMD_DISC is answered.
            closed = true
        }
        if closed {
            finish()
            return .done
        }
        // Replies sent just now may have made the room a waiting request needs; nothing
        // else would wake the loop for it.
        if let held = waitingForRoom, hasRoom(for: held) { return .busy }
        return full ? .busy : .idle
    }

    // MARK: reading requests (lock held)

    /// Reads and checks requests until the socket has no more, the client's room is
    /// used up, or the pass's budget is; true when only the budget stopped it.
    private func readRequests(into submissions: inout [Submission]) -> Bool {
        var taken = 0
        while reading, !closed {
            switch input {
            case let .skip(left):
                if start == end, !fill() { return false }
                let chunk = Int(min(left, UInt64(end - start)))
                start += chunk
                input = left == UInt64(chunk) ? .header : .skip(left: left - UInt64(chunk))
            case .payload(let request, var data, var filled, let held):
                // Out of `input` while it fills, so the array stays uniquely referenced.
                input = .header
                filled += takeBuffered(into: &data, at: filled)
                while filled < data.count {
                    if data.count - filled >= storage.count {
                        // Large: straight from the socket, not through the buffer.
                        guard let count = readDirect(into: &data, at: filled) else {
                            input = .payload(request, data: data, filled: filled, held: held)
                            return false
                        }
                        filled += count
                    } else {
                        guard fill() else {
                            input = .payload(request, data: data, filled: filled, held: held)
                            return false
                        }
                        filled += takeBuffered(into: &data, at: filled)
                    }
                }
                submissions.append(.command(NBDExportCommand(request, payload: data)!,
                                            completion(for: request, held: held, isRead: false, spare: data)))
            case .header:
                guard taken < Self.passBudget else { return true }
                while end - start < NBDRequest.size {
                    if !fill() { return false }
                }
                let request: NBDRequest
                do throws(NBDError) {
                    request = try NBDRequest.decode(UnsafeRawBufferPointer(rebasing: storage[start ..< start + NBDRequest.size]))
                } catch {
                    drop(error)
                    return false
                }
                let refusal = request.command == .disconnect ? .success : validate(request)
                let length = Int(request.length)
                let held = refusal == .success && (request.command == .read || request.command == .write) ? length : 0
                // Room first; the header stays buffered until there is.
                guard hasRoom(for: held) else {
                    waitingForRoom = held
                    return false
                }
                waitingForRoom = nil
                start += NBDRequest.size
                taken += 1
                if request.command == .disconnect {
                    reading = false
                    return false
                }
                guard refusal == .success else {
                    if request.command == .write {
                        guard UInt64(request.length) <= payloadSkipLimit else {
                            drop(.fieldOutOfRange(field: "NBD_CMD_WRITE length", value: UInt64(request.length),
                                                  limit: payloadSkipLimit))
                            return false
                        }
                        if request.length > 0 { input = .skip(left: UInt64(request.length)) }
                    }
                    requests += 1
                    replies.append(Reply(error: refusal, cookie: request.cookie, data: [], bytes: 0))
                    continue
                }
                requests += 1
                bytes += held
                switch request.command {
                case .read where length > 0:
                    let answer = completion(for: request, held: held, isRead: true, spare: [])
                    if let spare = spares.take(count: length) {
                        submissions.append(.read(offset: request.offset, buffer: spare, answer))
                    } else {
                        submissions.append(.command(NBDExportCommand(request)!, answer))
                    }
                case .write:
                    input = .payload(request, data: spares.take(count: length) ?? [UInt8](repeating: 0, count: length),
                                     filled: 0, held: held)
                case .read, .flush, .trim, .writeZeroes:
                    submissions.append(.command(NBDExportCommand(request)!,
                                                completion(for: request, held: held, isRead: request.command == .read,
                                                           spare: [])))
                default:
                    // validate() refuses every other command.
                    replies.append(Reply(error: .invalid, cookie: request.cookie, data: [], bytes: held))
                }
            }
        }
        return false
    }

    /// Whether a request holding `held` bytes may be admitted now (one larger than the
    /// byte limit is, when nothing else is held).
    private func hasRoom(for held: Int) -> Bool {
        requests < maximumRequests && (requests == 0 || bytes + held <= maximumBytes)
    }

    /// Reads into the buffer, after what is left in it; false when nothing came (EAGAIN,
    /// or the client went: then it is dropped).
    private func fill() -> Bool {
        guard mayRead else { return false }
        if start > 0 {
            let left = end - start
            if left > 0 { storage.baseAddress!.copyMemory(from: storage.baseAddress! + start, byteCount: left) }
            start = 0
            end = left
        }
        guard end < storage.count else { return true }
        do throws(NBDError) {
            guard let count = try socket.readSome(into: UnsafeMutableRawBufferPointer(rebasing: storage[end...])) else {
                mayRead = false
                return false
            }
            end += count
            return true
        } catch {
            drop(error)
            return false
        }
    }

    /// Copies buffered bytes into `data` from `offset`; returns how many.
    private func takeBuffered(into data: inout [UInt8], at offset: Int) -> Int {
        let count = min(data.count - offset, end - start)
        guard count > 0 else { return 0 }
        data.withUnsafeMutableBytes { $0.baseAddress!.advanced(by: offset).copyMemory(from: storage.baseAddress! + start, byteCount: count) }
        start += count
        return count
    }

    /// Reads from the socket straight into `data` from `offset`; nil when nothing came.
    private func readDirect(into data: inout [UInt8], at offset: Int) -> Int? {
        guard mayRead else { return nil }
        var result: Result<Int?, NBDError> = .success(nil)
        data.withUnsafeMutableBytes { buffer in
            do throws(NBDError) {
                result = .success(try socket.readSome(into: UnsafeMutableRawBufferPointer(rebasing: buffer[offset...])))
            } catch {
                result = .failure(error)
            }
        }
        switch result {
        case let .success(count?): return count
        case .success(nil):
            mayRead = false
            return nil
        case let .failure(error):
            drop(error)
            return nil
        }
    }

    /// The completion of `request`: its reply is queued (and sent in the loop's next call).
    private func completion(for request: NBDRequest, held: Int, isRead: Bool, spare: [UInt8]) -> NBDExportCompletion {
        let cookie = request.cookie
        let length = Int(request.length)
        // A large write's payload comes back with its answer, to be reused.
        let keep = spare.count >= NBDSpareBuffers.minimum ? spare : []
        return { [self] result in
            let (error, data) = NBDErrno.answer(result, isRead: isRead, length: length, logger: logger)
            let reply = Reply(error: error, cookie: cookie, data: data, bytes: held, spare: keep)
            lock()
            if !closed { replies.append(reply) }
            unlock()
        }
    }

    // MARK: writing replies (lock held)

    /// Sends queued replies, several per sendmsg, until all are out or the socket is full.
    private func flushReplies() {
        while head < replies.count, mayWrite, !closed {
            var count = 0
            var slot = 0
            var index = head
            while index < replies.count, slot < Self.group {
                let header = UnsafeMutableRawBufferPointer(rebasing: headers[slot * NBDSimpleReply.size ..< (slot + 1) * NBDSimpleReply.size])
                NBDSimpleReply(error: replies[index].error, cookie: replies[index].cookie).encode(into: header)
                var skip = index == head ? sentInFirst : 0
                let headerSkip = min(skip, header.count)
                if headerSkip < header.count {
                    vectors[count] = iovec(iov_base: header.baseAddress! + headerSkip, iov_len: header.count - headerSkip)
                    count += 1
                }
                skip -= headerSkip
                if !replies[index].data.isEmpty {
                    // SAFETY: `replies` keeps this array unchanged until it is sent, below,
                    // and a native array's storage stays put while it is not mutated.
                    let data = replies[index].data.withUnsafeBytes { $0 }
                    vectors[count] = iovec(iov_base: UnsafeMutableRawPointer(mutating: data.baseAddress! + skip),
                                           iov_len: data.count - skip)
                    count += 1
                }
                slot += 1
                index += 1
            }
            let sent: Int
            do throws(NBDError) {
                sent = try socket.writeSome(vectors: UnsafeMutableBufferPointer(rebasing: vectors[0 ..< count]))
            } catch {
                logger.notice("cannot send a reply, dropping the client: \(error)")
                drop(error)
                return
            }
            guard sent > 0 else {
                mayWrite = false
                return
            }
            advance(by: sent)
        }
    }

    /// Marks `sent` more bytes as on the socket, releasing each whole reply's room.
    private func advance(by sent: Int) {
        var left = sent
        while left > 0, head < replies.count {
            let remaining = NBDSimpleReply.size + replies[head].data.count - sentInFirst
            guard left >= remaining else {
                sentInFirst += left
                return
            }
            left -= remaining
            sentInFirst = 0
            requests -= 1
            bytes -= replies[head].bytes
            spares.keep(&replies[head].data)
            spares.keep(&replies[head].spare)
            head += 1
        }
        if head == replies.count {
            replies.removeAll(keepingCapacity: true)
            head = 0
        }
    }

    // MARK: teardown (lock held)

    /// Drops the client: nothing more is read or sent, and answers still to come are lost.
    private func drop(_ error: NBDError) {
        if failure == nil { failure = error }
        reading = false
        closed = true
    }

    private func finish() {
        guard !signalled else { return }
        signalled = true
        done.signal()
    }
}
