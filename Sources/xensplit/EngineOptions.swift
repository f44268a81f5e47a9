import ArgumentParser
import Logging
import URing

/// `--engine uring|threads`: the block I/O engine of a subcommand that runs a block backend.
struct EngineOptions: ParsableArguments {
    enum Engine: String, ExpressibleByArgument, CaseIterable {
        case uring, threads

        var kind: BlockIOEngineKind {
            switch self {
            case .uring: .uring
            case .threads: .threads
            }
        }
    }

    @Option(help: ArgumentHelp(
        "Block I/O engine: uring (io_uring) or threads (a pool of threads doing preadv/pwritev).",
        discussion: "io_uring is used unless threads is asked for; when it cannot be set up the command stops and says why (it never falls back)."))
    var engine: Engine = .uring

    /// The factory for the chosen engine. An io_uring that cannot be set up is a failure
    /// naming the reason (the errno of io_uring_setup, or the missing opcodes) and the way
    /// to run on the thread pool instead.
    func factory(configuration: BlockIOEngineConfiguration = .init(), logger: Logger) throws -> BlockIOEngineFactory {
        do {
            return try BlockIOEngineFactory(kind: engine.kind, configuration: configuration, logger: logger)
        } catch let .unavailable(reason) {
            throw CommandFailure("io_uring cannot be set up (\(reason)); the block backend does not fall back to "
                + "the thread pool by itself: pass --engine threads to use it")
        }
    }
}
