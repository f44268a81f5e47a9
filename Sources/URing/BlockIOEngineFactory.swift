import Glibc
import Logging

/// Chooses the engine once and then makes one per worker thread.
///
/// `XENSPLIT_IO_ENGINE=uring` or `threads` forces a kind (a forced io_uring that does not
/// work is an error). Otherwise io_uring is probed once: if it is unavailable (the
/// `kernel.io_uring_disabled` sysctl, seccomp, ENOSYS/EPERM, a kernel without the needed
/// opcodes) the factory logs ONE warning and every engine it makes is a thread pool.
public final class BlockIOEngineFactory: Sendable {
    /// The engine kind every `makeEngine` returns.
    public let kind: BlockIOEngineKind
    /// Why io_uring is not used, when the factory fell back (nil otherwise).
    public let fallbackReason: String?
    /// The settings each engine gets.
    public let configuration: BlockIOEngineConfiguration
    /// Makes the engines instead of `kind`'s own type, when set.
    let maker: (@Sendable (BlockIOEngineConfiguration) throws(URingError) -> any BlockIOEngine)?

    /// A factory whose engines `make` builds (an instrumented or wrapped engine, for tests
    /// and diagnostics); `kind` is what the engines it returns are underneath.
    public init(kind: BlockIOEngineKind, configuration: BlockIOEngineConfiguration = .init(),
                make: @escaping @Sendable (BlockIOEngineConfiguration) throws(URingError) -> any BlockIOEngine) {
        self.kind = kind
        self.configuration = configuration
        self.fallbackReason = nil
        self.maker = make
    }

    /// Reads the environment variable and probes io_uring once.
    public convenience init(
        configuration: BlockIOEngineConfiguration = .init(),
        environment: [String: String] = ProcessEnvironment.current,
        logger: Logger = Logger(label: "xensplit.uring")
    ) throws(URingError) {
        try self.init(configuration: configuration, environment: environment, logger: logger) {
            () throws(URingError) in
            let probe = try URingEngine(configuration: .init(queueDepth: 2, threads: 1))
            probe.close()
        }
    }

    /// As above, with the io_uring probe supplied (tests use a probe that fails).
    init(
        configuration: BlockIOEngineConfiguration, environment: [String: String], logger: Logger,
        probe: () throws(URingError) -> Void
    ) throws(URingError) {
        self.configuration = configuration
        maker = nil
        switch environment[BlockIOEngineKind.environmentVariable] {
        case "threads":
            kind = .threads
            fallbackReason = nil
        case "uring":
            try probe()
            kind = .uring
            fallbackReason = nil
        case nil, "":
            do throws(URingError) {
                try probe()
                kind = .uring
                fallbackReason = nil
            } catch {
                let reason = error.description
                logger.warning(
                    "io_uring unavailable; using the thread-pool I/O engine",
                    metadata: ["reason": "\(reason)"])
                kind = .threads
                fallbackReason = reason
            }
        case let value?:
            throw .unknownEngine(value)
        }
    }

    /// The same engine choice with room for at least `capacity` operations in flight
    /// (a backend worker sizes it for every queue it may serve).
    public func withCapacity(_ capacity: Int) -> BlockIOEngineFactory {
        changing { $0.capacity = Swift.max($0.capacity, capacity, $0.queueDepth) }
    }

    /// The same engine choice with `kernelWorkers` set (see
    /// ``BlockIOEngineConfiguration/kernelWorkers``).
    public func withKernelWorkers(_ kernelWorkers: Int?) -> BlockIOEngineFactory {
        changing { $0.kernelWorkers = kernelWorkers }
    }

    private func changing(_ change: (inout BlockIOEngineConfiguration) -> Void) -> BlockIOEngineFactory {
        var configuration = self.configuration
        change(&configuration)
        return BlockIOEngineFactory(kind: kind, fallbackReason: fallbackReason, configuration: configuration, maker: maker)
    }

    private init(kind: BlockIOEngineKind, fallbackReason: String?, configuration: BlockIOEngineConfiguration,
                 maker: (@Sendable (BlockIOEngineConfiguration) throws(URingError) -> any BlockIOEngine)?) {
        self.kind = kind
        self.fallbackReason = fallbackReason
        self.configuration = configuration
        self.maker = maker
    }

    /// A new engine of `kind`, owned by the calling thread from now on: call it on the worker
    /// thread that will use the engine (io_uring's single-issuer mode binds the ring to it).
    public func makeEngine() throws(URingError) -> any BlockIOEngine {
        if let maker { return try maker(configuration) }
        switch kind {
        case .uring: return try URingEngine(configuration: configuration)
        case .threads: return try ThreadPoolEngine(configuration: configuration)
        }
    }
}

/// The process environment as a dictionary.
public enum ProcessEnvironment {
    /// Every `NAME=value` of this process.
    public static var current: [String: String] {
        var result: [String: String] = [:]
        var entry = environ
        while let pointer = entry.pointee {
            let text = String(cString: pointer)
            if let equals = text.firstIndex(of: "=") {
                result[String(text[..<equals])] = String(text[text.index(after: equals)...])
            }
            entry += 1
        }
        return result
    }
}
