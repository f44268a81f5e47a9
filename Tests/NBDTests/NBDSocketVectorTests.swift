import Dispatch
import Foundation
import Glibc
import Synchronization
import Testing
@testable import NBD

/// ``NBDSocket/writeAll(vectors:)``, which the reply writer gathers replies with: more
/// entries than one sendmsg takes, and sends cut short in the middle of an entry.
@Suite struct NBDSocketVectorTests {
    @Test func everyByteOfEveryEntryArrivesInOrder() throws {
        let (socket, peer) = try NBDReadBufferTests.pair()
        // A small send buffer, so sendmsg keeps stopping part way through an entry.
        var small: Int32 = 4096
        setsockopt(socket.descriptor, SOL_SOCKET, SO_SNDBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        var random: UInt64 = 0x1234_5678_9ABC_DEF1
        var pieces: [[UInt8]] = []
        for index in 0..<(NBDSocket.maximumVectors * 2 + 37) {
            random ^= random << 13
            random ^= random >> 7
            random ^= random << 17
            // Some entries empty, as a reply without data would be.
            let length = index % 5 == 0 ? 0 : Int(random % 700)
            pieces.append(NBDReadBufferTests.pattern(length, seed: index))
        }
        let expected = pieces.flatMap { $0 }
        let received = Mutex<[UInt8]>([])
        let readerDone = DispatchSemaphore(value: 0)
        let reader = Thread {
            var buffer = [UInt8](repeating: 0, count: 1000)
            while true {
                let count = buffer.withUnsafeMutableBytes { recv(peer, $0.baseAddress!, $0.count, 0) }
                guard count > 0 else { break }
                received.withLock { $0 += buffer[0..<count] }
            }
            Glibc.close(peer)
            readerDone.signal()
        }
        reader.start()
        let vectors = UnsafeMutableBufferPointer<iovec>.allocate(capacity: pieces.count)
        defer { vectors.deallocate() }
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(expected.count, 1), alignment: 8)
        defer { storage.deallocate() }
        var offset = 0
        for (index, piece) in pieces.enumerated() {
            piece.withUnsafeBytes { bytes in
                if let source = bytes.baseAddress { (storage.baseAddress! + offset).copyMemory(from: source, byteCount: bytes.count) }
            }
            vectors[index] = iovec(iov_base: storage.baseAddress! + offset, iov_len: piece.count)
            offset += piece.count
        }
        try socket.writeAll(vectors: vectors)
        // The peer reads to the end of the stream, then compares.
        socket.shutdown()
        readerDone.wait()
        #expect(received.withLock { $0 } == expected)
    }
}
