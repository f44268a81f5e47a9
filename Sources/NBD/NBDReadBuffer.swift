import Glibc

/// The transmission phase's reads from a client socket, through a buffer: one `recv`
/// takes every request header (and small payload) the client has sent so far, where
/// reading each header by itself costs a system call per request. Payloads at least as
/// large as the buffer go straight from the socket to their destination.
///
/// Used by the connection's reader thread only.
final class NBDReadBuffer {
    let socket: NBDSocket
    private let storage: UnsafeMutableRawBufferPointer
    /// Buffered bytes not yet consumed: `start..<end` of `storage`.
    private var start = 0
    private var end = 0

    init(socket: NBDSocket, capacity: Int) {
        self.socket = socket
        storage = .allocate(byteCount: max(capacity, 64), alignment: 64)
    }

    deinit { storage.deallocate() }

    /// Fills `destination` whole: buffered bytes first, then the socket.
    func readExactly(into destination: UnsafeMutableRawBufferPointer) throws(NBDError) {
        var done = take(into: destination)
        while done < destination.count {
            let rest = UnsafeMutableRawBufferPointer(rebasing: destination[done...])
            if rest.count >= storage.count {
                // Large: no point in passing it through the buffer.
                try socket.readExactly(into: rest)
                return
            }
            try refill()
            done += take(into: rest)
        }
    }

    /// Reads and drops `count` bytes.
    func skip(_ count: UInt64) throws(NBDError) {
        var left = count
        while left > 0 {
            if start == end { try refill() }
            let chunk = Int(min(left, UInt64(end - start)))
            start += chunk
            left -= UInt64(chunk)
        }
    }

    /// Copies what is buffered, up to `destination.count` bytes; returns how many.
    private func take(into destination: UnsafeMutableRawBufferPointer) -> Int {
        let count = min(destination.count, end - start)
        guard count > 0 else { return 0 }
        destination.baseAddress!.copyMemory(from: storage.baseAddress! + start, byteCount: count)
        start += count
        return count
    }

    /// Called with the buffer empty: waits for at least one byte, takes all there are.
    private func refill() throws(NBDError) {
        start = 0
        end = 0
        while true {
            let result = recv(socket.descriptor, storage.baseAddress!, storage.count, 0)
            if result > 0 {
                end = result
                return
            } else if result == 0 {
                throw .connectionClosed
            } else if errno != EINTR {
                throw .system(call: "recv", errno: errno)
            }
        }
    }
}
