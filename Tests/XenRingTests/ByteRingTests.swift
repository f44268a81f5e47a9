import Testing
import XenTesting
import SharedMemory
@testable import XenRing

@Suite struct ByteRingTests {
    @Test func streamSurvivesWrapAroundAndIndexWrap() throws {
        let page = try MemoryRegion.anonymous(pages: 1)
        let xs = try XenstoreRingInterface(memory: page.view)
        // Start both indices just below 2^32 so the stream crosses the index wrap too.
        page.view.store(UInt32.max - 100, at: XenstoreRingInterface.Layout.requestConsumer)
        page.view.store(UInt32.max - 100, at: XenstoreRingInterface.Layout.requestProducer)
        var rng = SeededGenerator(seed: 7)
        var sent: [UInt8] = []
        var received: [UInt8] = []
        for _ in 0..<2000 {
            let chunk = (0..<Int(rng.next() % 700)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let wrote = try chunk.withUnsafeBytes { try xs.requests.write($0) }
            #expect(wrote <= chunk.count)
            sent += chunk[..<wrote]
            var buffer = [UInt8](repeating: 0, count: Int(rng.next() % 900))
            let got = try buffer.withUnsafeMutableBytes { try xs.requests.read(into: $0) }
            received += buffer[..<got]
        }
        var rest = [UInt8](repeating: 0, count: 1024)
        let got = try rest.withUnsafeMutableBytes { try xs.requests.read(into: $0) }
        received += rest[..<got]
        #expect(sent.count > 100_000)
        #expect(received == sent)
    }

    @Test func fullRingTakesNothingMore() throws {
        let page = try MemoryRegion.anonymous(pages: 1)
        let con = try ConsoleRingInterface(memory: page.view)
        let big = [UInt8](repeating: 0x5A, count: 5000)
        #expect(try big.withUnsafeBytes { try con.output.write($0) } == 2048)
        #expect(try con.output.freeSpace() == 0)
        #expect(try big.withUnsafeBytes { try con.output.write($0) } == 0)
        #expect(try con.output.bytesAvailable() == 2048)
        #expect(try con.input.freeSpace() == 1024)
    }

    @Test func lyingIndicesAreTypedErrors() throws {
        let page = try MemoryRegion.anonymous(pages: 1)
        let xs = try XenstoreRingInterface(memory: page.view)
        // A guest claims 1025 bytes in a 1024-byte ring.
        page.view.store(UInt32(10), at: XenstoreRingInterface.Layout.responseConsumer)
        page.view.store(UInt32(10 + 1025), at: XenstoreRingInterface.Layout.responseProducer)
        var buffer = [UInt8](repeating: 0, count: 64)
        #expect(throws: RingError.byteRingOverrun(producer: 1035, consumer: 10, size: 1024)) {
            _ = try buffer.withUnsafeMutableBytes { try xs.responses.read(into: $0) }
        }
        // Producer behind consumer is the same lie seen through wrapping arithmetic.
        page.view.store(UInt32(5), at: XenstoreRingInterface.Layout.responseProducer)
        #expect(throws: RingError.self) { _ = try xs.responses.freeSpace() }
        #expect(throws: RingError.badByteRingGeometry(dataOffset: 0, size: 1000, memory: 4096)) {
            _ = try ByteRing(memory: page.view, dataOffset: 0, size: 1000, consumerOffset: 2048, producerOffset: 2052)
        }
        let small = try page.view.slice(offset: 0, length: 100)
        #expect(throws: RingError.memoryTooSmall(bytes: 100, needed: 2076)) {
            _ = try XenstoreRingInterface(memory: small)
        }
    }

    @Test func controlWords() throws {
        let page = try MemoryRegion.anonymous(pages: 1)
        let xs = try XenstoreRingInterface(memory: page.view)
        xs.serverFeatures = [.reconnection, .error]
        #expect(page.view.load(UInt32.self, at: 2064) == 3)
        xs.connectionRaw = XenstoreRingInterface.Connection.reconnect.rawValue
        #expect(page.view.load(UInt32.self, at: 2068) == 1)
        xs.errorRaw = XenstoreRingInterface.RingErrorCode.ringIndex.rawValue
        #expect(xs.errorRaw == 2)
    }
}

