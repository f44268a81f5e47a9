import Foundation
import SystemCalls
import Testing
import XenLocal

/// `xensplit selftest` as a user runs it, against a hypervisor in another process.
@Suite struct SelfTestCommandTests {
    @Test func selfTestPassesOnTheLocalHypervisorAndFailsClearlyWithoutOne() throws {
        var template = Array("/tmp/xensplit-selftest-XXXXXX".utf8CString)
        let dir = String(cString: try #require(mkdtemp(&template)))
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // No hypervisor yet: a clear error, non-zero exit.
        let missing = try DomainCommandDiskTests.run(DomainCommandDiskTests.xensplit, ["selftest", "--platform", "local", "--state-dir", dir])
        #expect(missing.status != 0)
        #expect(missing.err.contains("is `xensplit hypervisor` running"), "said: \(missing.err)")

        let hypervisor = try ChildProcess(DomainCommandDiskTests.xensplit, ["hypervisor", "--state-dir", dir], standardError: .null)
        defer {
            hypervisor.signal(SIGTERM)
            hypervisor.wait()
        }
        let socket = LocalHypervisor.socketPath(stateDirectory: dir)
        for _ in 0..<500 where !FileManager.default.fileExists(atPath: socket) { usleep(10_000) }
        let r = try DomainCommandDiskTests.run(DomainCommandDiskTests.xensplit,
                                               ["selftest", "--platform", "local", "--state-dir", dir, "--requests", "20000"])
        #expect(r.status == 0, "selftest said: \(r.out) \(r.err)")
        #expect(r.out.contains("selftest: 5 passed, 0 failed"), "said: \(r.out)")
        #expect(!r.out.contains("FAIL"))
    }
}
