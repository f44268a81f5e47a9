import CURing
import XenTesting
import Glibc
import Testing
@testable import URing

/// One contract, run against both engines on real files.
@Suite struct BlockIOEngineContractTests {
    static let block = 4096

    @Test(arguments: BlockIOEngineKind.allCases)
    func writesAndReadsBackEveryFormWithMatchingChecksums(kind: BlockIOEngineKind) throws {
        let engine = try makeEngine(kind)
        defer { engine.close() }
        let directory = try TemporaryDirectory()
        let fd = try directory.open("data", size: 64 * Self.block)
        defer { close(fd) }
        try engine.registerFiles([fd])
        let source = AlignedBuffer(count: 24 * Self.block)
        source.fill(seed: 0x5EED_0001)
        try engine.registerBuffers([source.bytes])

        // Eight blocks each by write, writev (two iovecs per block) and writeFixed, at
        // seeded distinct offsets.
        var generator = SeededGenerator(seed: 42)
        let offsets = Array((0..<64).shuffled(using: &generator).prefix(24)).map { UInt64($0 * Self.block) }
        let vectors = UnsafeMutableBufferPointer<iovec>.allocate(capacity: 16)
        defer { vectors.deallocate() }
        for i in 0..<24 {
            let chunk = source.slice(i * Self.block, Self.block)
            switch i % 3 {
            case 0:
                engine.mustEnqueue(.write(.descriptor(fd), offset: offsets[i], from: UnsafeRawBufferPointer(chunk)),
                                   userData: UInt64(i))
            case 1:
                let v = (i / 3) * 2
                vectors[v] = iovec(iov_base: chunk.baseAddress, iov_len: 1000)
                vectors[v + 1] = iovec(iov_base: chunk.baseAddress! + 1000, iov_len: Self.block - 1000)
                engine.mustEnqueue(.writeVector(.registered(0), offset: offsets[i],
                                                vectors: UnsafeBufferPointer(rebasing: vectors[v..<(v + 2)])),
                                   userData: UInt64(i))
            default:
                engine.mustEnqueue(.writeFixed(.registered(0), offset: offsets[i],
                                               from: UnsafeRawBufferPointer(chunk), bufferIndex: 0),
                                   userData: UInt64(i))
            }
        }
        let written = try engine.drain(24)
        #expect(written.count == 24)
        #expect(written.values.allSatisfy { $0 == Int32(Self.block) }, "\(written)")
        engine.mustEnqueue(.flush(.descriptor(fd)), userData: 100)
        #expect(try engine.drain(1) == [100: 0])

        // Read back through the other forms, into a registered destination.
        let destination = AlignedBuffer(count: 24 * Self.block)
        for i in 0..<24 {
            let chunk = destination.slice(i * Self.block, Self.block)
            switch i % 3 {
            case 0:
                vectors[0] = iovec(iov_base: chunk.baseAddress, iov_len: 512)
                vectors[1] = iovec(iov_base: chunk.baseAddress! + 512, iov_len: Self.block - 512)
                engine.mustEnqueue(.readVector(.descriptor(fd), offset: offsets[i],
                                               vectors: UnsafeBufferPointer(rebasing: vectors[0..<2])),
                                   userData: UInt64(i))
                // Vectored reads finish before their iovecs are reused.
                #expect(try engine.drain(1) == [UInt64(i): Int32(Self.block)])
            case 1:
                engine.mustEnqueue(.read(.registered(0), offset: offsets[i], into: chunk), userData: UInt64(i))
                #expect(try engine.drain(1) == [UInt64(i): Int32(Self.block)])
            default:
                engine.mustEnqueue(.read(.descriptor(fd), offset: offsets[i], into: chunk), userData: UInt64(i))
                #expect(try engine.drain(1) == [UInt64(i): Int32(Self.block)])
            }
        }
        for i in 0..<24 {
            #expect(checksum(UnsafeRawBufferPointer(source.slice(i * Self.block, Self.block)))
                == checksum(UnsafeRawBufferPointer(destination.slice(i * Self.block, Self.block))),
                "block \(i) at offset \(offsets[i])")
        }
        #expect(engine.inFlight == 0)
    }

    @Test(arguments: BlockIOEngineKind.allCases)
    func fixedBuffersReadIntoRegisteredMemory(kind: BlockIOEngineKind) throws {
        let engine = try makeEngine(kind)
        defer { engine.close() }
        let directory = try TemporaryDirectory()
        let fd = try directory.open("fixed")
        defer { close(fd) }
        let pattern = AlignedBuffer(count: 2 * Self.block)
        pattern.fill(seed: 7)
        #expect(pwrite(fd, pattern.bytes.baseAddress, pattern.bytes.count, 0) == pattern.bytes.count)
        let registered = AlignedBuffer(count: 4 * Self.block)
        try engine.registerBuffers([registered.bytes])
        engine.mustEnqueue(.readFixed(.descriptor(fd), offset: 0, into: registered.slice(Self.block, 2 * Self.block),
                                      bufferIndex: 0), userData: 1)
        #expect(try engine.drain(1) == [1: Int32(2 * Self.block)])
        #expect(checksum(UnsafeRawBufferPointer(registered.slice(Self.block, 2 * Self.block)))
            == checksum(UnsafeRawBufferPointer(pattern.bytes)))
    }

    @Test(arguments: BlockIOEngineKind.allCases)
    func registeredFileSlotsCanBeFilledAndEmptiedLater(kind: BlockIOEngineKind) throws {
        let engine = try makeEngine(kind)
        defer { engine.close() }
        let directory = try TemporaryDirectory()
        let fd = try directory.open("slot", size: 8192)
        defer { close(fd) }
        try engine.registerFiles([-1, -1, -1, -1])
        let buffer = AlignedBuffer(count: 4096)
        engine.mustEnqueue(.read(.registered(2), offset: 0, into: buffer.bytes), userData: 1)
        #expect(try engine.drain(1) == [1: -EBADF], "an empty slot")
        try engine.updateRegisteredFiles([fd], at: 2)
        engine.mustEnqueue(.read(.registered(2), offset: 4096, into: buffer.bytes), userData: 2)
        #expect(try engine.drain(1) == [2: 4096])
        try engine.updateRegisteredFiles([-1], at: 2)
        engine.mustEnqueue(.read(.registered(2), offset: 0, into: buffer.bytes), userData: 3)
        #expect(try engine.drain(1) == [3: -EBADF], "emptied again")
        #expect(throws: URingError.invalidArgument(name: "offset", value: 4, limit: 3)) {
            try engine.updateRegisteredFiles([fd], at: 4)
        }
    }

    @Test(arguments: BlockIOEngineKind.allCases)
    func shortReadsAtEndOfFile(kind: BlockIOEngineKind) throws {
        let engine = try makeEngine(kind)
        defer { engine.close() }
        let directory = try TemporaryDirectory()
        let fd = try directory.open("short", size: 6000)
        defer { close(fd) }
        let buffer = AlignedBuffer(count: 3 * Self.block)
        engine.mustEnqueue(.read(.descriptor(fd), offset: 4096, into: buffer.slice(0, Self.block * 2)), userData: 1)
        engine.mustEnqueue(.read(.descriptor(fd), offset: 8192, into: buffer.slice(2 * Self.block, Self.block)),
                           userData: 2)
        #expect(try engine.drain(2) == [1: 6000 - 4096, 2: 0])
    }

    @Test(arguments: BlockIOEngineKind.allCases)
    func failuresArriveAsTypedErrnos(kind: BlockIOEngineKind) throws {
        let engine = try makeEngine(kind)
        defer { engine.close() }
        let directory = try TemporaryDirectory()
        let readOnly = try directory.open("ro", size: 8192)
        close(readOnly)
        let fd = try directory.open("ro", flags: O_RDONLY)
        defer { close(fd) }
        try engine.registerFiles([fd])
        let buffer = AlignedBuffer(count: 2 * Self.block)
        engine.mustEnqueue(.read(.descriptor(-1), offset: 0, into: buffer.slice(0, 512)), userData: 1)
        engine.mustEnqueue(.write(.descriptor(fd), offset: 0, from: UnsafeRawBufferPointer(buffer.slice(0, 512))),
                           userData: 2)
        engine.mustEnqueue(.read(.registered(5), offset: 0, into: buffer.slice(0, 512)), userData: 3)
        // An offset that is negative as a file position, and an empty discard, are invalid.
        engine.mustEnqueue(.read(.registered(0), offset: 1 << 63, into: buffer.slice(0, Self.block)), userData: 4)
        engine.mustEnqueue(.discard(.registered(0), offset: 0, length: 0), userData: 6)
        // A fixed read outside any registered buffer.
        engine.mustEnqueue(.readFixed(.descriptor(fd), offset: 0, into: buffer.slice(0, 512), bufferIndex: 3),
                           userData: 5)
        let results = try engine.drain(6)
        let errors = results.mapValues { Completion(userData: 0, result: $0).error }
        #expect(errors[1] == .EBADF)
        #expect(errors[2] == .EBADF)
        #expect(errors[3] == .EBADF)
        #expect(errors[4] == .EINVAL)
        #expect(errors[5] == .EFAULT)
        #expect(errors[6] == .EINVAL)
    }

    @Test(arguments: BlockIOEngineKind.allCases)
    func cancelStopsAWaitingPoll(kind: BlockIOEngineKind) throws {
        let engine = try makeEngine(kind)
        defer { engine.close() }
        let eventFD = curing_eventfd(0)
        defer { close(eventFD) }
        engine.mustEnqueue(.pollReadable(eventFD), userData: 10)
        try engine.submit()
        engine.mustEnqueue(.cancel(target: 10), userData: 11)
        engine.mustEnqueue(.cancel(target: 99), userData: 12)
        let results = try engine.drain(3)
        #expect(results == [10: -ECANCELED, 11: 0, 12: -ENOENT])
        #expect(engine.inFlight == 0)
    }

    @Test(arguments: BlockIOEngineKind.allCases)
    func pollOnAnEventfdCompletesWhenWrittenAlongsideDiskIO(kind: BlockIOEngineKind) throws {
        let engine = try makeEngine(kind)
        defer { engine.close() }
        let directory = try TemporaryDirectory()
        let fd = try directory.open("disk", size: Self.block)
        defer { close(fd) }
        let eventFD = curing_eventfd(0)
        defer { close(eventFD) }
        engine.mustEnqueue(.pollReadable(eventFD), userData: 1)
        try engine.wait(minimum: 0, timeout: nil)
        let buffer = UnsafeMutableBufferPointer<Completion>.allocate(capacity: 4)
        defer { buffer.deallocate() }
        #expect(engine.reap(into: buffer) == 0, "nothing was written to the eventfd yet")
        // A bounded wait with nothing ready returns without completions.
        try engine.wait(minimum: 1, timeout: .milliseconds(1))
        #expect(engine.reap(into: buffer) == 0)

        let data = AlignedBuffer(count: Self.block)
        engine.mustEnqueue(.read(.descriptor(fd), offset: 0, into: data.bytes), userData: 2)
        signal(eventFD: eventFD)
        let results = try engine.drain(2)
        #expect(results[2] == Int32(Self.block))
        let mask = try #require(results[1])
        #expect(mask > 0 && mask & Int32(POLLIN) != 0, "poll result \(mask)")
    }

    @Test(arguments: BlockIOEngineKind.allCases)
    func aFullQueueHandsTheRequestBack(kind: BlockIOEngineKind) throws {
        let engine = try makeEngine(kind, .init(queueDepth: 4, capacity: 8, threads: 2))
        defer { engine.close() }
        #expect(engine.capacity == 8)
        let directory = try TemporaryDirectory()
        let fd = try directory.open("full", size: 32 * 512)
        defer { close(fd) }
        let pattern = AlignedBuffer(count: 32 * 512)
        pattern.fill(seed: 99)
        #expect(pwrite(fd, pattern.bytes.baseAddress, pattern.bytes.count, 0) == pattern.bytes.count)
        let destination = AlignedBuffer(count: 32 * 512)

        // 32 reads through a queue of 4 entries and 8 slots: enqueue submits full batches
        // by itself, and past 8 in flight the request comes back to be retried.
        var handedBack: BlockRequest? = nil
        var handBacks = 0
        var done: [UInt64: Int32] = [:]
        let completions = UnsafeMutableBufferPointer<Completion>.allocate(capacity: 3)
        defer { completions.deallocate() }
        var next = 0
        while done.count < 32 {
            while next < 32 {
                let request = handedBack ?? makeRead(next)
                handedBack = nil
                if case let .queueFull(back) = engine.enqueue(request) {
                    #expect(back.userData == UInt64(next), "the same request is handed back")
                    handBacks += 1
                    handedBack = back
                    break
                }
                next += 1
            }
            try engine.wait(minimum: 1, timeout: .seconds(10))
            let reaped = engine.reap(into: completions)
            for c in completions[0..<reaped] { done[c.userData] = c.result }
        }
        #expect(handBacks > 0)
        #expect(done.count == 32 && done.values.allSatisfy { $0 == 512 })
        #expect(checksum(UnsafeRawBufferPointer(destination.bytes)) == checksum(UnsafeRawBufferPointer(pattern.bytes)))

        func makeRead(_ i: Int) -> BlockRequest {
            BlockRequest(.read(.descriptor(fd), offset: UInt64(i * 512), into: destination.slice(i * 512, 512)),
                         userData: UInt64(i))
        }
    }

    @Test(arguments: BlockIOEngineKind.allCases)
    func discardAndWriteZeroesReadBackZeroes(kind: BlockIOEngineKind) throws {
        let engine = try makeEngine(kind)
        defer { engine.close() }
        let directory = try TemporaryDirectory()
        let fd = try directory.open("holes")
        defer { close(fd) }
        let size = 16 * Self.block
        let pattern = AlignedBuffer(count: size)
        pattern.fill(seed: 3)
        #expect(pwrite(fd, pattern.bytes.baseAddress, size, 0) == size)
        engine.mustEnqueue(.discard(.descriptor(fd), offset: UInt64(2 * Self.block), length: UInt64(4 * Self.block)),
                           userData: 1)
        engine.mustEnqueue(.writeZeroes(.descriptor(fd), offset: UInt64(10 * Self.block), length: UInt64(3 * Self.block)),
                           userData: 2)
        #expect(try engine.drain(2) == [1: 0, 2: 0])
        var status = stat()
        #expect(fstat(fd, &status) == 0 && Int(status.st_size) == size, "discard keeps the size")

        let readBack = AlignedBuffer(count: size)
        engine.mustEnqueue(.read(.descriptor(fd), offset: 0, into: readBack.bytes), userData: 3)
        #expect(try engine.drain(1) == [3: Int32(size)])
        for blockIndex in 0..<16 {
            let got = UnsafeRawBufferPointer(readBack.slice(blockIndex * Self.block, Self.block))
            if (2..<6).contains(blockIndex) || (10..<13).contains(blockIndex) {
                #expect(got.allSatisfy { $0 == 0 }, "block \(blockIndex) reads back zeroes")
            } else {
                #expect(checksum(got) == checksum(UnsafeRawBufferPointer(pattern.slice(blockIndex * Self.block, Self.block))),
                        "block \(blockIndex) is untouched")
            }
        }
    }

    @Test(arguments: BlockIOEngineKind.allCases)
    func aClosedEngineRefusesWork(kind: BlockIOEngineKind) throws {
        let engine = try makeEngine(kind)
        engine.close()
        engine.close()
        #expect(throws: URingError.closed) { try engine.submit() }
        #expect(throws: URingError.closed) { try engine.wait(minimum: 1, timeout: nil) }
        if case .accepted = engine.enqueue(BlockRequest(.flush(.descriptor(0)), userData: 1)) {
            Issue.record("a closed engine accepted a request")
        }
    }
}

@Suite struct ThreadPoolEngineTests {
    /// A caller with its own poll loop learns of completions from `completionEventFD`.
    @Test func theCompletionEventfdFiresWhenWorkFinishes() throws {
        let engine = try ThreadPoolEngine(configuration: .init(queueDepth: 4, threads: 1))
        defer { engine.close() }
        let directory = try TemporaryDirectory()
        let fd = try directory.open("signal", size: 4096)
        defer { close(fd) }
        let buffer = AlignedBuffer(count: 4096)
        engine.mustEnqueue(.read(.descriptor(fd), offset: 0, into: buffer.bytes), userData: 5)
        try engine.submit()
        var watch = pollfd(fd: engine.completionEventFD, events: Int16(POLLIN), revents: 0)
        #expect(poll(&watch, 1, 30_000) == 1 && watch.revents & Int16(POLLIN) != 0)
        try engine.wait(minimum: 0, timeout: nil)
        let completions = UnsafeMutableBufferPointer<Completion>.allocate(capacity: 2)
        defer { completions.deallocate() }
        #expect(engine.reap(into: completions) == 1)
        #expect(completions[0] == Completion(userData: 5, result: 4096))
    }
}
