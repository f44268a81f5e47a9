import Logging
import Synchronization

/// Every fuzz target, by the name `scripts/fuzz.sh` and `xensplit-fuzz` take.
public enum FuzzTarget: String, CaseIterable, Sendable {
    case ring
    case xenstore
    case blkback
    case netif
    case netifctrl
    case blkif
    case netback
    case blkfront
    case netfront
    case nbd
    case hypervisor
    case diskspec
    case vifspec

    /// One input at a time, whichever the target: several keep a world across inputs (a
    /// hypervisor, a disk) whose checks assume nothing else runs on it, and the test suites
    /// replay inputs from parallel tests. libFuzzer's single thread never waits here.
    static let oneAtATime = Mutex(())

    /// Runs `body` while no input runs (to read what the targets counted).
    public static func whileIdle<T>(_ body: () -> T) -> T { oneAtATime.withLock { _ in body() } }

    /// Runs one input through the target.
    public func run(_ input: UnsafeRawBufferPointer) {
        Self.oneAtATime.withLock { _ in runAlone(input) }
    }

    private func runAlone(_ input: UnsafeRawBufferPointer) {
        switch self {
        case .ring: RingFuzz.run(input)
        case .xenstore: XenStoreFuzz.run(input)
        case .blkback: BlkbackFuzz.run(input)
        case .netif: NetifFuzz.run(input)
        case .netifctrl: NetifCtrlFuzz.run(input)
        case .blkif: BlkifFuzz.run(input)
        case .netback: NetbackFuzz.run(input)
        case .blkfront: BlkfrontFuzz.run(input)
        case .netfront: NetfrontFuzz.run(input)
        case .nbd: NBDFuzz.run(input)
        case .hypervisor: HypervisorFuzz.run(input)
        case .diskspec: DiskSpecFuzz.run(input)
        case .vifspec: VifSpecFuzz.run(input)
        }
    }
}

/// A logger for a target's code under test: only critical lines, so the fuzzer's output
/// stays its own.
func quietLogger(_ label: String) -> Logger {
    var logger = Logger(label: label)
    logger.logLevel = .critical
    return logger
}
