import Glibc
import Logging

/// Chooses the engine once and then makes one per worker thread.
///
/// io_uring is the engine; the thread pool is used only when asked for by name
/// (`kind: .threads`, `xensplit blkback --engine threads`). There is no fallback: when
/// io_uring is asked for and cannot be set up (the `kernel.io_uring_disabled` sysctl,
/// seccomp, ENOSYS/EPERM, a kernel without the needed opcodes), the factory logs one error
/// naming the reason and throws it, so a machine without io_uring is refused, never served
/// slowly without a word.
public final class BlockIOEngineFactory: Sendable {
    /// The engine kind every `makeEngine` returns.
    public let kind: BlockIOEngineKind
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
        self.maker = make
    }

    /// A factory of `kind` engines. For io_uring it sets up a small ring first, so that a
    /// machine where io_uring does not work is refused here (an error logged and thrown),
    /// not at the first worker.
    public convenience init(
        kind: BlockIOEngineKind = .uring,
        configuration: BlockIOEngineConfiguration = .init(),
        logger: Logger = Logger(label: "xensplit.uring")
    ) throws(URingError) {
        try self.init(kind: kind, configuration: configuration, logger: logger) { () throws(URingError) in
            let probe = try URingEngine(configuration: .init(queueDepth: 2, threads: 1))
            probe.close()
        }
    }

    /// The kind that `XENSPLIT_IO_ENGINE` names in `environment` (`uring` or `threads`;
    /// io_uring when unset), as ``init(kind:configuration:logger:)``. Throws
    /// `.unknownEngine` for any other value.
    public convenience init(
        configuration: BlockIOEngineConfiguration = .init(),
        environment: [String: String],
        logger: Logger = Logger(label: "xensplit.uring")
    ) throws(URingError) {
        let kind: BlockIOEngineKind
        switch environment[BlockIOEngineKind.environmentVariable] {
        case nil, "": kind = .uring
        case let value?:
            guard let named = BlockIOEngineKind(rawValue: value) else { throw .unknownEngine(value) }
            kind = named
        }
        try self.init(kind: kind, configuration: configuration, logger: logger)
    }

    /// As ``init(kind:configuration:logger:)``, with the io_uring setup supplied (tests
    /// inject one that fails).
    init(
        kind: BlockIOEngineKind, configuration: BlockIOEngineConfiguration, logger: Logger,
        probe: () throws(URingError) -> Void
    ) throws(URingError) {
        if kind == .uring {
            do throws(URingError) {
                try probe()
            } catch {
                logger.error(
                    "io_uring cannot be set up; refusing to run without it (the thread-pool engine is used only when asked for)",
                    metadata: ["reason": "\(error)"])
                throw error
            }
        }
        self.kind = kind
        self.configuration = configuration
        maker = nil
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
        return BlockIOEngineFactory(kind: kind, configuration: configuration, maker: maker)
    }

    private init(kind: BlockIOEngineKind, configuration: BlockIOEngineConfiguration,
                 maker: (@Sendable (BlockIOEngineConfiguration) throws(URingError) -> any BlockIOEngine)?) {
        self.kind = kind
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
