import ArgumentParser
import Foundation
import XenTesting

/// `xensplit selftest`: the platform against itself, a line per step.
struct SelfTestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "selftest",
        abstract: "Check grants, grant copy, event channels and a ring on this platform.",
        discussion: """
        Shares pages with this domain and maps them back, grant-copies both ways, binds an \
        event channel to itself and runs a ring over granted pages between two threads. On \
        the local hypervisor it needs `xensplit hypervisor` running; on Xen, run it in dom0 \
        with gntdev, gntalloc and evtchn loaded. Exits non-zero if any step fails.
        """
    )

    @OptionGroup var platform: PlatformOptions

    @Option(help: "Requests in the ring step.")
    var requests: UInt64 = 100_000

    func run() async throws {
        let p = try await platform.open()
        print("selftest: platform \(platform.kind.rawValue), domain \(p.domainID)")
        var test = PlatformSelfTest(platform: p)
        test.ringRequests = requests
        let steps = test.run { step in
            print("\(step.passed ? "PASS" : "FAIL") \(step.name): \(step.detail)")
        }
        let failed = steps.filter { !$0.passed }.count
        print("selftest: \(steps.count - failed) passed, \(failed) failed")
        if failed > 0 { throw ExitCode(1) }
    }
}
