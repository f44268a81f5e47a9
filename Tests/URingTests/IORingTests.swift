import CURing
import Glibc
import Testing
@testable import URing

/// The ring API itself: setup flags, batching, timeouts, poll removal.
@Suite struct IORingTests {
    /// A ring. io_uring is required here: a setup that fails (ENOSYS, EPERM, ...) fails
    /// the test with the call and its errno.
    func makeRing(entries: Int, flags: IORing.SetupFlags = .worker) throws -> IORing {
        try IORing(entries: entries, flags: flags)
    }

    @Test func rejectedFlagsAreDroppedAndReported() throws {
        let requested: IORing.SetupFlags = [.singleIssuer, .deferTaskrun, .coopTaskrun, .submissionQueuePolling]
        let ring = try makeRing(entries: 4, flags: requested)
        defer { ring.close() }
        #expect(ring.flags.union(ring.rejectedFlags) == requested)
        #expect(ring.flags.intersection(ring.rejectedFlags).isEmpty)
        // SQPOLL excludes DEFER_TASKRUN, so this kernel cannot have taken all four.
        #expect(!ring.rejectedFlags.isEmpty, "accepted \(ring.flags)")
        #expect(ring.submissionEntries == 4 && ring.completionEntries == 8)
    }

    @Test func invalidEntryCountsAreTypedErrors() {
        #expect(throws: URingError.invalidArgument(name: "entries", value: 0, limit: 32768)) {
            _ = try IORing(entries: 0)
        }
        #expect(throws: URingError.invalidArgument(name: "completionEntries", value: 2, limit: 65536)) {
            _ = try IORing(entries: 4, completionEntries: 2)
        }
    }

    @Test func prepareRefusesWhenTheSubmissionQueueIsFullAndBatchesOnSubmit() throws {
        let ring = try makeRing(entries: 4)
        defer { ring.close() }
        for i in 0..<4 { #expect(ring.prepare(.nop, userData: UInt64(i))) }
        #expect(ring.submissionSpace == 0)
        #expect(!ring.prepare(.nop, userData: 4), "a full queue refuses and changes nothing")
        #expect(ring.unsubmitted == 4)
        #expect(try ring.submit() == 4)
        #expect(ring.prepare(.nop, userData: 4))
        try ring.submitAndWait(minimum: 5)
        let buffer = UnsafeMutableBufferPointer<Completion>.allocate(capacity: 8)
        defer { buffer.deallocate() }
        let count = ring.reap(into: buffer)
        #expect(count == 5)
        #expect(Set(buffer[0..<count].map(\.userData)) == [0, 1, 2, 3, 4])
        #expect(buffer[0..<count].allSatisfy { $0.result == 0 })
    }

    @Test func timeoutsExpireWithETIMEAndCountTimeoutsComplete() throws {
        let ring = try makeRing(entries: 4)
        defer { ring.close() }
        #expect(ring.prepare(.timeout(.milliseconds(1), count: 0), userData: 1))
        // Completes after one other completion (the nop) rather than after an hour.
        #expect(ring.prepare(.timeout(.seconds(3600), count: 1), userData: 2))
        #expect(ring.prepare(.nop, userData: 3))
        try ring.submitAndWait(minimum: 3, timeout: .seconds(30))
        let buffer = UnsafeMutableBufferPointer<Completion>.allocate(capacity: 4)
        defer { buffer.deallocate() }
        var results: [UInt64: Int32] = [:]
        while results.count < 3 {
            try ring.submitAndWait(minimum: 1, timeout: .seconds(30))
            let count = ring.reap(into: buffer)
            for c in buffer[0..<count] { results[c.userData] = c.result }
        }
        #expect(results[1].flatMap { Completion(userData: 1, result: $0).error } == .ETIME)
        #expect(results[2] == 0)
        #expect(results[3] == 0)
    }

    @Test func pollRemoveEndsAPoll() throws {
        let ring = try makeRing(entries: 4)
        defer { ring.close() }
        let eventFD = curing_eventfd(0)
        defer { close(eventFD) }
        #expect(ring.prepare(.poll(.descriptor(eventFD), events: Int16(POLLIN)), userData: 1))
        try ring.submit()
        #expect(ring.prepare(.pollRemove(target: 1), userData: 2))
        let buffer = UnsafeMutableBufferPointer<Completion>.allocate(capacity: 4)
        defer { buffer.deallocate() }
        var results: [UInt64: Int32] = [:]
        while results.count < 2 {
            try ring.submitAndWait(minimum: 1, timeout: .seconds(30))
            let count = ring.reap(into: buffer)
            for c in buffer[0..<count] { results[c.userData] = c.result }
        }
        #expect(results == [1: -ECANCELED, 2: 0])
    }

    @Test func aReadOnAnEventfdCompletesWithItsCounterOnceWritten() throws {
        let ring = try makeRing(entries: 4)
        defer { ring.close() }
        let eventFD = curing_eventfd(0)
        defer { close(eventFD) }
        // io_uring honours O_NONBLOCK (it would answer EAGAIN), so make the eventfd blocking.
        #expect(fcntl(eventFD, F_SETFL, 0) == 0)
        var counter: UInt64 = 0
        try withUnsafeMutableBytes(of: &counter) { bytes in
            #expect(ring.prepare(.read(.descriptor(eventFD), into: bytes, offset: 0), userData: 7))
            try ring.submitAndWait(minimum: 0)
            #expect(ring.completionsReady == 0, "nothing was written yet")
            var five: UInt64 = 5
            #expect(write(eventFD, &five, 8) == 8)
            try ring.submitAndWait(minimum: 1, timeout: .seconds(30))
            let buffer = UnsafeMutableBufferPointer<Completion>.allocate(capacity: 2)
            defer { buffer.deallocate() }
            #expect(ring.reap(into: buffer) == 1)
            #expect(buffer[0] == Completion(userData: 7, result: 8))
        }
        #expect(counter == 5)
    }

    @Test func fsyncAndFdatasyncSucceedOnAFile() throws {
        let ring = try makeRing(entries: 4)
        defer { ring.close() }
        let directory = try TemporaryDirectory()
        let fd = try directory.open("sync", size: 4096)
        defer { close(fd) }
        #expect(ring.prepare(.fsync(.descriptor(fd)), userData: 1))
        #expect(ring.prepare(.fdatasync(.descriptor(fd)), userData: 2))
        try ring.submitAndWait(minimum: 2)
        let buffer = UnsafeMutableBufferPointer<Completion>.allocate(capacity: 4)
        defer { buffer.deallocate() }
        #expect(ring.reap(into: buffer) == 2)
        #expect(buffer[0].result == 0 && buffer[1].result == 0)
    }

    @Test func aClosedRingRefusesWork() throws {
        let ring = try makeRing(entries: 2)
        ring.close()
        ring.close()
        #expect(!ring.prepare(.nop, userData: 1))
        #expect(throws: URingError.closed) { try ring.submit() }
        #expect(throws: URingError.closed) { try ring.registerFiles([0]) }
    }
}

@Suite struct ErrnoTests {
    @Test func namesAndNumbersRoundTrip() {
        let named: [Errno] = [.EPERM, .ENOENT, .EINTR, .EIO, .EBADF, .EAGAIN, .ENOMEM, .EACCES, .EFAULT, .EBUSY,
                              .EEXIST, .EINVAL, .EFBIG, .ENOSPC, .ESPIPE, .EROFS, .ENOSYS, .EOPNOTSUPP,
                              .EALREADY, .ETIME, .ECANCELED]
        for errno in named {
            #expect(Errno(code: errno.code) == errno)
            #expect(errno.description.hasPrefix(errno.name + " ("))
        }
        #expect(Set(named.map(\.code)).count == named.count)
        #expect(Errno(code: EBADF) == .EBADF && Errno.EBADF.name == "EBADF")
        #expect(Errno(code: 4000) == .other(4000) && Errno.other(4000).code == 4000)
        #expect(Completion(userData: 9, result: -EAGAIN).outcome == .failure(.EAGAIN))
        #expect(Completion(userData: 9, result: 512).outcome == .success(512))
    }
}

/// Files without non-blocking I/O, and transfers queued straight to io_uring's workers.
@Suite struct NonblockingIOTests {
    /// A scratch file of `size` bytes of `pattern` in `directory`; the path.
    func scratchFile(in directory: String, size: Int, pattern: UInt8) throws -> String {
        var template = Array("\(directory)/xensplit-nowait-XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        try #require(fd >= 0, "mkstemp in \(directory): errno \(errno)")
        defer { close(fd) }
        let bytes = [UInt8](repeating: pattern, count: size)
        #expect(bytes.withUnsafeBytes { write(fd, $0.baseAddress, size) } == size)
        return String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    @Test func tmpfsLacksNonblockingIOAndADiskFileHasIt() throws {
        let shm = try scratchFile(in: "/dev/shm", size: 4096, pattern: 1)
        defer { unlink(shm) }
        let fd = open(shm, O_RDONLY)
        defer { close(fd) }
        #expect(!supportsNonblockingIO(fd), "tmpfs refuses RWF_NOWAIT")
        // The package's own directory is on a disk file system (ext4 or xfs on these machines).
        let disk = try scratchFile(in: ".", size: 4096, pattern: 2)
        defer { unlink(disk) }
        let diskFD = open(disk, O_RDONLY)
        defer { close(diskFD) }
        #expect(supportsNonblockingIO(diskFD), "a disk file system takes RWF_NOWAIT")
    }

    @Test func alwaysAsyncReadsAndWritesMoveTheRightBytes() throws {
        let path = try scratchFile(in: "/dev/shm", size: 8192, pattern: 0x5A)
        defer { unlink(path) }
        let fd = open(path, O_RDWR)
        defer { close(fd) }
        let engine = try makeEngine(.uring)
        defer { engine.close() }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0xC3)
        func mustEnqueue(_ operation: BlockIOOperation, userData: UInt64) {
            if case .queueFull = engine.enqueue(BlockRequest(operation, userData: userData, alwaysAsync: true)) {
                Issue.record("request \(userData) was refused")
            }
        }
        mustEnqueue(.write(.descriptor(fd), offset: 4096, from: UnsafeRawBufferPointer(buffer)), userData: 1)
        #expect(try engine.drain(1) == [1: 4096])
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        mustEnqueue(.read(.descriptor(fd), offset: 0, into: buffer), userData: 2)
        #expect(try engine.drain(1) == [2: 4096])
        #expect(buffer.allSatisfy { $0 == 0x5A }, "the first page, as written by the test")
        var back = [UInt8](repeating: 0, count: 4096)
        #expect(pread(fd, &back, 4096, 4096) == 4096)
        #expect(back.allSatisfy { $0 == 0xC3 }, "the second page, as written through the engine")
    }
}

/// The cap on io_uring's kernel worker threads.
@Suite struct KernelWorkerLimitTests {
    @Test func anEngineCapsBothPoolsOfItsThread() throws {
        let engine = try makeEngine(.uring, .init(queueDepth: 4, kernelWorkers: 3))
        defer { engine.close() }
        let ring = try #require((engine as? URingEngine)?.ring)
        // Zeroes change nothing and report the limits in force.
        let limits = try #require(ring.limitWorkers(bounded: 0, unbounded: 0), "the kernel refused the query")
        #expect(limits.bounded == 3 && limits.unbounded == 3)
    }

    @Test func theFactoryCarriesTheCapToItsEngines() {
        let factory = BlockIOEngineFactory(kind: .threads, configuration: .init(queueDepth: 4)) { configuration throws(URingError) in
            try ThreadPoolEngine(configuration: configuration)
        }
        #expect(factory.configuration.kernelWorkers == nil)
        #expect(factory.withKernelWorkers(2).configuration.kernelWorkers == 2)
        #expect(factory.withKernelWorkers(2).withCapacity(512).configuration.kernelWorkers == 2)
    }
}
