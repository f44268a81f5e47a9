import Foundation
import Glibc
import Testing
@testable import NBD

/// ``NBDReadBuffer``: what the reader takes from the socket through the buffer is the
/// byte stream the peer sent, whatever the sizes of the reads and of the peer's writes.
@Suite struct NBDReadBufferTests {
    /// A connected pair of Unix stream sockets: ours (read through the buffer) and the peer's.
    static func pair() throws -> (NBDSocket, Int32) {
        var ends: (Int32, Int32) = (-1, -1)
        let result = withUnsafeMutableBytes(of: &ends) {
            socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, $0.baseAddress!.assumingMemoryBound(to: Int32.self))
        }
        try #require(result == 0)
        return (NBDSocket(descriptor: ends.0), ends.1)
    }

    /// Bytes 0, 1, 2, ... from `seed`, wrapping.
    static func pattern(_ count: Int, seed: Int) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ seed) }
    }

    static func send(_ peer: Int32, _ bytes: [UInt8]) {
        bytes.withUnsafeBytes { buffer in
            var done = 0
            while done < buffer.count {
                let sent = Glibc.send(peer, buffer.baseAddress! + done, buffer.count - done, Int32(MSG_NOSIGNAL))
                guard sent > 0 else { return }
                done += sent
            }
        }
    }

    func read(_ input: NBDReadBuffer, _ count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { try input.readExactly(into: $0) }
        return bytes
    }

    @Test func headersPayloadsAndSkipsComeOutInOrder() throws {
        let (socket, peer) = try Self.pair()
        defer { Glibc.close(peer) }
        // Small reads that straddle what one recv returned, a skip across the buffer's
        // end, and a payload larger than the buffer (read past it).
        let stream = Self.pattern(28, seed: 1) + Self.pattern(100, seed: 2) + Self.pattern(300, seed: 3)
            + Self.pattern(5000, seed: 4) + Self.pattern(28, seed: 5)
        Self.send(peer, stream)
        let input = NBDReadBuffer(socket: socket, capacity: 256)
        #expect(try read(input, 28) == Self.pattern(28, seed: 1))
        #expect(try read(input, 100) == Self.pattern(100, seed: 2))
        try input.skip(300)
        #expect(try read(input, 5000) == Self.pattern(5000, seed: 4))
        #expect(try read(input, 28) == Self.pattern(28, seed: 5))
    }

    @Test func aReadWaitsForBytesStillToCome() throws {
        let (socket, peer) = try Self.pair()
        let input = NBDReadBuffer(socket: socket, capacity: 64)
        let bytes = Self.pattern(200, seed: 9)
        // The peer sends in pieces from another thread; the reader sees one stream.
        let sender = Thread {
            for start in stride(from: 0, to: bytes.count, by: 13) {
                Self.send(peer, Array(bytes[start ..< min(start + 13, bytes.count)]))
            }
            Glibc.close(peer)
        }
        sender.start()
        #expect(try read(input, 150) == Array(bytes[0..<150]))
        #expect(try read(input, 50) == Array(bytes[150...]))
        #expect(throws: NBDError.connectionClosed) { try read(input, 1) }
    }

    @Test func anEndInTheMiddleIsConnectionClosed() throws {
        let (socket, peer) = try Self.pair()
        Self.send(peer, Self.pattern(10, seed: 0))
        Glibc.close(peer)
        let input = NBDReadBuffer(socket: socket, capacity: 64)
        #expect(throws: NBDError.connectionClosed) { try read(input, 28) }
        let (other, otherPeer) = try Self.pair()
        Self.send(otherPeer, Self.pattern(10, seed: 0))
        Glibc.close(otherPeer)
        #expect(throws: NBDError.connectionClosed) { try NBDReadBuffer(socket: other, capacity: 64).skip(11) }
    }
}
