import Glibc
import Logging
import Synchronization
import Testing
@testable import URing

/// Records what is logged (level, message, metadata), for checking the refusal.
final class LogRecord: Sendable {
    let entries = Mutex<[(level: Logger.Level, message: String, metadata: Logger.Metadata)]>([])
}

struct RecordingLogHandler: LogHandler {
    let record: LogRecord
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        record.entries.withLock { $0.append((event.level, event.message.description, merged)) }
    }
}

/// The engine choice: io_uring unless the thread pool is asked for by name, and an io_uring
/// that cannot be set up refused (logged and thrown), never replaced by the thread pool.
@Suite struct BlockIOEngineFactoryTests {
    let record = LogRecord()
    var logger: Logger { Logger(label: "test") { [record] _ in RecordingLogHandler(record: record) } }

    static let eperm = URingError.unavailable(reason: "io_uring_setup: EPERM (Operation not permitted)")

    static func failingSetup() throws(URingError) { throw eperm }

    @Test func anIOURingThatCannotBeSetUpIsRefusedNamingTheErrno() throws {
        #expect(throws: Self.eperm) {
            _ = try BlockIOEngineFactory(kind: .uring, configuration: .init(queueDepth: 4), logger: logger,
                                         probe: Self.failingSetup)
        }
        let entries = record.entries.withLock { $0 }
        #expect(entries.count == 1, "one log entry for the refusal: \(entries)")
        let entry = try #require(entries.first)
        #expect(entry.level == .error)
        #expect(entry.message.contains("io_uring cannot be set up"), "\(entry.message)")
        #expect(entry.metadata["reason"]?.description.contains("EPERM") == true, "\(entry.metadata)")
    }

    @Test func theThreadPoolWhenAskedForNeverSetsUpIOURingAndDoesIO() throws {
        let factory = try BlockIOEngineFactory(
            kind: .threads, configuration: .init(queueDepth: 4), logger: logger,
            probe: { () throws(URingError) in Issue.record("asking for the thread pool must not set up io_uring") })
        #expect(factory.kind == .threads)
        let engine = try factory.makeEngine()
        defer { engine.close() }
        #expect(engine is ThreadPoolEngine)
        #expect(engine.kind == .threads)

        // A page written and read back through the engine, and found in the file.
        let directory = try TemporaryDirectory()
        let fd = try directory.open("data", size: 2 * 4096)
        defer { close(fd) }
        let out = AlignedBuffer(count: 4096)
        out.fill(seed: 0x7_4EAD)
        engine.mustEnqueue(.write(.descriptor(fd), offset: 4096, from: UnsafeRawBufferPointer(out.bytes)), userData: 1)
        #expect(try engine.drain(1) == [1: 4096])
        let back = AlignedBuffer(count: 4096)
        engine.mustEnqueue(.read(.descriptor(fd), offset: 4096, into: back.bytes), userData: 2)
        #expect(try engine.drain(1) == [2: 4096])
        #expect(checksum(UnsafeRawBufferPointer(back.bytes)) == checksum(UnsafeRawBufferPointer(out.bytes)))
        var inFile = [UInt8](repeating: 0, count: 4096)
        #expect(pread(fd, &inFile, 4096, 4096) == 4096)
        #expect(inFile == Array(out.bytes))
        #expect(record.entries.withLock { $0.isEmpty }, "an explicit choice logs nothing")
    }

    @Test func ioURingIsSetUpHereAndIsTheDefault() throws {
        // io_uring is required on the machines this runs on (DESIGN.md, Tests): a failure
        // here is the machine's, and fails the run naming the errno.
        let factory = try BlockIOEngineFactory(configuration: .init(queueDepth: 4), logger: logger)
        #expect(factory.kind == .uring)
        let engine = try factory.makeEngine()
        defer { engine.close() }
        #expect(engine is URingEngine)
        #expect(record.entries.withLock { $0.isEmpty })
    }

    @Test func theEnvironmentNamesAnEngineAndUnsetMeansIOURing() throws {
        #expect(try BlockIOEngineFactory(environment: [BlockIOEngineKind.environmentVariable: "threads"]).kind == .threads)
        #expect(try BlockIOEngineFactory(environment: [BlockIOEngineKind.environmentVariable: "uring"]).kind == .uring)
        #expect(try BlockIOEngineFactory(environment: [:]).kind == .uring)
        #expect(throws: URingError.unknownEngine("aio")) {
            _ = try BlockIOEngineFactory(environment: [BlockIOEngineKind.environmentVariable: "aio"])
        }
    }
}
