import Logging
import Synchronization
import Testing
@testable import URing

/// Records what is logged, for checking the fallback warning.
final class LogRecord: Sendable {
    let entries = Mutex<[(Logger.Level, String)]>([])
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
        record.entries.withLock { $0.append((event.level, event.message.description)) }
    }
}

@Suite struct BlockIOEngineFactoryTests {
    let record = LogRecord()
    var logger: Logger { Logger(label: "test") { [record] _ in RecordingLogHandler(record: record) } }

    static func failingProbe() throws(URingError) {
        throw .unavailable(reason: "io_uring_setup: EPERM (Operation not permitted)")
    }

    @Test func unavailableIOURingFallsBackToThreadsWithOneWarning() throws {
        let factory = try BlockIOEngineFactory(
            configuration: .init(queueDepth: 4), environment: [:], logger: logger, probe: Self.failingProbe)
        #expect(factory.kind == .threads)
        #expect(factory.fallbackReason?.contains("EPERM") == true)
        let engines = try (0..<3).map { _ in try factory.makeEngine() }
        #expect(engines.allSatisfy { $0 is ThreadPoolEngine })
        engines.forEach { $0.close() }
        let warnings = record.entries.withLock { $0.filter { $0.0 == .warning } }
        #expect(warnings.count == 1, "\(warnings)")
    }

    @Test func theEnvironmentForcesAnEngine() throws {
        let threads = try BlockIOEngineFactory(
            configuration: .init(queueDepth: 4), environment: ["XENSPLIT_IO_ENGINE": "threads"], logger: logger,
            probe: { () throws(URingError) in Issue.record("forcing threads must not probe io_uring") })
        #expect(threads.kind == .threads && threads.fallbackReason == nil)
        #expect(throws: URingError.unavailable(reason: "io_uring_setup: EPERM (Operation not permitted)")) {
            _ = try BlockIOEngineFactory(
                configuration: .init(queueDepth: 4), environment: ["XENSPLIT_IO_ENGINE": "uring"], logger: logger,
                probe: Self.failingProbe)
        }
        #expect(throws: URingError.unknownEngine("aio")) {
            _ = try BlockIOEngineFactory(
                configuration: .init(queueDepth: 4), environment: ["XENSPLIT_IO_ENGINE": "aio"], logger: logger,
                probe: Self.failingProbe)
        }
        #expect(record.entries.withLock { $0.isEmpty }, "forced choices log nothing")
    }

    @Test func theRealProbePicksIOURingWhenItWorks() throws {
        let factory = try BlockIOEngineFactory(configuration: .init(queueDepth: 4), environment: [:], logger: logger)
        let engine = try factory.makeEngine()
        defer { engine.close() }
        #expect(engine.kind == factory.kind)
        if factory.kind == .threads {
            // The machine has no io_uring: the fallback must say why, once.
            print("io_uring unavailable here: \(factory.fallbackReason ?? "?")")
            #expect(factory.fallbackReason != nil)
            #expect(record.entries.withLock { $0.count } == 1)
        } else {
            #expect(factory.fallbackReason == nil)
            #expect(record.entries.withLock { $0.isEmpty })
        }
    }
}
