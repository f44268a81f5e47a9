import Glibc

/// The requests of one connection between being read off the socket and their reply
/// being written, and the replies waiting for the socket.
///
/// Three parties meet here: the connection's reader (reserves room for a request before
/// reading its payload, and waits while the connection is at its limits), whoever
/// completes the request (an export's I/O thread: queues the reply, never blocks), and
/// the connection's writer (sends replies one whole reply at a time, then gives the room
/// back). A request's room is held until its reply is on the socket, so a client that
/// stops reading replies stops the server reading its requests instead of growing a queue.
///
/// Uses a pthread mutex and condition variables (not Synchronization.Mutex) because the
/// reader and the writer block here, and because ThreadSanitizer understands them.
final class NBDInFlight: @unchecked Sendable {
    // @unchecked: every stored var is only touched between pthread_mutex_lock and unlock.

    /// A reply ready to send: the simple reply header's fields, a read's data, and the
    /// room its request held.
    struct Reply: Sendable {
        var error: NBDErrno
        var cookie: UInt64
        var data: [UInt8]
        var bytes: Int
        /// A write's payload, kept as a spare once the reply is sent (a read's `data` is).
        var spare: [UInt8] = []
    }

    /// Buffers at least this large are kept for reuse once their reply is sent.
    static var spareMinimum: Int { NBDSpareBuffers.minimum }

    /// Most requests admitted and not yet answered on the socket.
    let maximumRequests: Int
    /// Most payload bytes (write payloads read, read data expected) held by admitted
    /// requests; a single request larger than this is admitted when nothing else is held.
    let maximumBytes: Int

    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    /// Signalled when room frees up (for the reader) and on abort.
    private let roomFreed: UnsafeMutablePointer<pthread_cond_t>
    /// Signalled when a reply is queued, reading ends, or on abort (for the writer).
    private let replyQueued: UnsafeMutablePointer<pthread_cond_t>
    private var requests = 0
    private var bytes = 0
    private var replies: [Reply] = []
    private var spares: NBDSpareBuffers
    private var reading = true
    private var aborted = false

    init(maximumRequests: Int, maximumBytes: Int) {
        self.maximumRequests = max(1, maximumRequests)
        self.maximumBytes = max(0, maximumBytes)
        spares = NBDSpareBuffers(maximumCount: self.maximumRequests, connectionBytes: self.maximumBytes)
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
        roomFreed = .allocate(capacity: 1)
        roomFreed.initialize(to: pthread_cond_t())
        pthread_cond_init(roomFreed, nil)
        replyQueued = .allocate(capacity: 1)
        replyQueued.initialize(to: pthread_cond_t())
        pthread_cond_init(replyQueued, nil)
        replies.reserveCapacity(self.maximumRequests)
    }

    deinit {
        pthread_cond_destroy(replyQueued)
        replyQueued.deinitialize(count: 1)
        replyQueued.deallocate()
        pthread_cond_destroy(roomFreed)
        roomFreed.deinitialize(count: 1)
        roomFreed.deallocate()
        pthread_mutex_destroy(mutex)
        mutex.deinitialize(count: 1)
        mutex.deallocate()
    }

    private func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }

    /// Reader: admits one request holding `count` bytes, waiting while the connection is
    /// at either limit. False once the connection was aborted.
    func reserve(bytes count: Int) -> Bool {
        locked {
            while !aborted, requests >= maximumRequests || (requests > 0 && bytes + count > maximumBytes) {
                pthread_cond_wait(roomFreed, mutex)
            }
            guard !aborted else { return false }
            requests += 1
            bytes += count
            return true
        }
    }

    /// Any thread: the answer to an admitted request. After an abort it is dropped and
    /// its room given back.
    func complete(_ reply: Reply) {
        locked {
            if aborted {
                release(reply)
            } else {
                replies.append(reply)
                pthread_cond_signal(replyQueued)
            }
        }
    }

    /// Reader: no further requests (NBD_CMD_DISC); the writer ends after the last reply.
    func finishReading() {
        locked {
            reading = false
            pthread_cond_signal(replyQueued)
        }
    }

    /// Drops every queued reply and every answer still to come, and wakes both the
    /// reader and the writer. Returns how many requests had no reply sent.
    @discardableResult
    func abort() -> Int {
        locked {
            let unanswered = requests
            if !aborted {
                aborted = true
                for reply in replies { release(reply) }
                replies.removeAll()
                pthread_cond_broadcast(roomFreed)
                pthread_cond_broadcast(replyQueued)
            }
            return unanswered
        }
    }

    /// Writer: moves every queued reply into `batch` (which the writer emptied), waiting
    /// for one; false once the connection is aborted, or reading finished and every
    /// admitted request was answered.
    func takeReplies(into batch: inout [Reply]) -> Bool {
        locked {
            while !aborted, replies.isEmpty, reading || requests > 0 {
                pthread_cond_wait(replyQueued, mutex)
            }
            guard !aborted, !replies.isEmpty else { return false }
            // The two arrays trade storage, so neither side allocates.
            swap(&batch, &replies)
            return true
        }
    }

    /// Writer: `batch` is on the socket; its requests' room is free again, and its large
    /// buffers become spares.
    func sent(_ batch: inout [Reply]) {
        locked {
            for index in batch.indices {
                release(batch[index])
                guard !aborted else { continue }
                spares.keep(&batch[index].data)
                spares.keep(&batch[index].spare)
            }
        }
        // The rest is freed here, outside the mutex.
        batch.removeAll(keepingCapacity: true)
    }

    /// Reader: a spare of exactly `count` bytes, if one was kept (only for large ones).
    func takeSpare(count: Int) -> [UInt8]? {
        guard count >= Self.spareMinimum else { return nil }
        return locked { spares.take(count: count) }
    }

    /// Called with the mutex held.
    private func release(_ reply: Reply) {
        requests -= 1
        bytes -= reply.bytes
        pthread_cond_signal(roomFreed)
        // The writer may be waiting for the last answer after NBD_CMD_DISC.
        if requests == 0 { pthread_cond_signal(replyQueued) }
    }
}
