import Glibc
import Testing
@testable import URing

/// The operations a net backend needs on descriptors without a file position (a TAP
/// device; here a SEQPACKET socket pair, which keeps packet boundaries as a TAP does, and
/// a pipe), one contract for both engines.
@Suite struct StreamOperationContractTests {
    /// A connected pair of non-blocking SEQPACKET sockets.
    static func packetPair() throws -> (Int32, Int32) {
        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw Errno.current
        }
        return (fds[0], fds[1])
    }

    @Test("a packet written by writev arrives whole through read, and scattered through readv",
          arguments: BlockIOEngineKind.allCases)
    func packetsThroughStreamReadAndWrite(kind: BlockIOEngineKind) throws {
        let engine = try makeEngine(kind)
        defer { engine.close() }
        let (a, b) = try Self.packetPair()
        defer { close(a); close(b) }
        let parts: [[UInt8]] = [Array(repeating: 0xA1, count: 14), Array(0..<200), Array(repeating: 0x5C, count: 1286)]
        let total = parts.reduce(0) { $0 + $1.count }
        let storage = parts.map { part -> UnsafeMutableRawBufferPointer in
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: part.count, alignment: 8)
            buffer.copyBytes(from: part)
            return buffer
        }
        defer { for buffer in storage { buffer.deallocate() } }
        let vectors = UnsafeMutableBufferPointer<iovec>.allocate(capacity: 3)
        defer { vectors.deallocate() }
        for (i, buffer) in storage.enumerated() { vectors[i] = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count) }

        // Two packets out, gathered from three pieces each.
        engine.mustEnqueue(.streamWriteVector(.descriptor(a), vectors: UnsafeBufferPointer(vectors)), userData: 1)
        #expect(try engine.drain(1) == [1: Int32(total)])
        engine.mustEnqueue(.streamWriteVector(.descriptor(a), vectors: UnsafeBufferPointer(vectors)), userData: 2)
        #expect(try engine.drain(1) == [2: Int32(total)])

        // The first comes in whole through one read.
        let whole = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 8)
        defer { whole.deallocate() }
        engine.mustEnqueue(.streamRead(.descriptor(b), into: whole), userData: 3)
        #expect(try engine.drain(1) == [3: Int32(total)], "one read, one packet")
        #expect(Array(whole[0..<total]) == parts.flatMap { $0 })

        // The second is scattered over two buffers through readv.
        let head = UnsafeMutableRawBufferPointer.allocate(byteCount: 100, alignment: 8)
        let tail = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 8)
        defer { head.deallocate(); tail.deallocate() }
        let into = UnsafeMutableBufferPointer<iovec>.allocate(capacity: 2)
        defer { into.deallocate() }
        into[0] = iovec(iov_base: head.baseAddress, iov_len: head.count)
        into[1] = iovec(iov_base: tail.baseAddress, iov_len: tail.count)
        engine.mustEnqueue(.streamReadVector(.descriptor(b), vectors: UnsafeBufferPointer(into)), userData: 4)
        #expect(try engine.drain(1) == [4: Int32(total)])
        #expect(Array(head) + Array(tail[0..<(total - 100)]) == parts.flatMap { $0 })

        // A stream read with nothing to read and a registered file: the result of the read
        // (io_uring's -EAGAIN or a wait for data) is the same on both engines once data comes.
        try engine.registerFiles([b])
        engine.mustEnqueue(.streamWriteVector(.descriptor(a), vectors: UnsafeBufferPointer(rebasing: vectors[0..<1])),
                           userData: 5)
        #expect(try engine.drain(1) == [5: 14])
        engine.mustEnqueue(.streamRead(.registered(0), into: whole), userData: 6)
        #expect(try engine.drain(1) == [6: 14])
    }

    @Test("poll-writable completes only once a full pipe has room again", arguments: BlockIOEngineKind.allCases)
    func pollWritableWaitsForRoom(kind: BlockIOEngineKind) throws {
        let engine = try makeEngine(kind)
        defer { engine.close() }
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        let (readEnd, writeEnd) = (fds[0], fds[1])
        for fd in [readEnd, writeEnd] { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
        defer { close(readEnd); close(writeEnd) }
        var chunk = [UInt8](repeating: 7, count: 4096)
        var filled = 0
        while write(writeEnd, &chunk, chunk.count) > 0 { filled += 1 }
        #expect(errno == EAGAIN && filled > 0, "the pipe is full")

        engine.mustEnqueue(.pollWritable(writeEnd), userData: 9)
        try engine.submit()
        try engine.wait(minimum: 0, timeout: .milliseconds(50))
        let buffer = UnsafeMutableBufferPointer<Completion>.allocate(capacity: 4)
        defer { buffer.deallocate() }
        #expect(engine.reap(into: buffer) == 0, "no room yet: the poll is still waiting")

        // Empty the pipe: room again.
        while read(readEnd, &chunk, chunk.count) > 0 {}
        let results = try engine.drain(1)
        #expect((results[9] ?? 0) & Int32(POLLOUT) != 0, "completed with POLLOUT: \(results)")

        // A readable poll on the same (now empty) pipe's read end does not fire.
        engine.mustEnqueue(.pollReadable(readEnd), userData: 10)
        try engine.submit()
        try engine.wait(minimum: 0, timeout: .milliseconds(50))
        #expect(engine.reap(into: buffer) == 0)
        engine.mustEnqueue(.cancel(target: 10), userData: 11)
        let cancelled = try engine.drain(2)
        #expect(cancelled[10] == -ECANCELED && cancelled[11] == 0, "\(cancelled)")
    }

    @Test("a stream read waiting for input on a blocking pipe is cancelled, and a later one reads what comes",
          arguments: BlockIOEngineKind.allCases)
    func waitingStreamReadIsCancelled(kind: BlockIOEngineKind) throws {
        let engine = try makeEngine(kind)
        defer { engine.close() }
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
        defer { buffer.deallocate() }
        // The descriptor blocks: an engine that ran the read on a thread at once could
        // not cancel it (a removed net device's queue would wait forever).
        engine.mustEnqueue(.streamRead(.descriptor(fds[0]), into: buffer), userData: 20)
        try engine.submit()
        try engine.wait(minimum: 0, timeout: .milliseconds(50))
        engine.mustEnqueue(.cancel(target: 20), userData: 21)
        let cancelled = try engine.drain(2)
        #expect(cancelled[20] == -ECANCELED && cancelled[21] == 0, "\(cancelled)")

        engine.mustEnqueue(.streamRead(.descriptor(fds[0]), into: buffer), userData: 22)
        try engine.submit()
        #expect(write(fds[1], "late", 4) == 4)
        #expect(try engine.drain(1) == [22: 4])
        #expect(Array(buffer[0..<4]) == Array("late".utf8))
    }
}
