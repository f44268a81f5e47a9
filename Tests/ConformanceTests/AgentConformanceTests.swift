import Foundation
import Testing
import XenTesting
import SystemCalls
@testable import Conformance

/// xensplit-agent, the user side the suite uses for a kernel frontend (on Xen: in the domU,
/// on its console). Here the agent's stream is a pty, as xenconsoled's is in dom0: the agent
/// holds the master, the suite opens the slave. Judged against our netfront, the agent must
/// give the verdicts the direct user side (--tap) gives: the same rows of expected.tsv. Our
/// blkfront offers its disk only over NBD, and an NBD-to-file bridge (nbdfuse) loses its
/// connection when the suite makes the blkfront connect again, so the block half is judged
/// here on a file and on real Xen against Linux's blkfront (scripts/realxen, conformance).
@Suite("xensplit-agent: a kernel frontend's user side over a console", .serialized)
struct AgentConformanceTests {
    static var binary: String { TestCommand.xensplit }
    static var agentBinary: String {
        URL(fileURLWithPath: TestCommand.xensplit).deletingLastPathComponent().appendingPathComponent("xensplit-agent").path
    }

    /// A pty pair: the master's descriptor (the agent's stdin and stdout) and the slave's path.
    struct Pty {
        let master: Int32
        let slave: String

        init() throws {
            // posix_openpt by hand (Swift's Glibc leaves the XSI calls out): /dev/ptmx, then
            // TIOCSPTLCK to unlock the slave and TIOCGPTN for its number (asm-generic/ioctls.h).
            master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC)
            var unlock: Int32 = 0
            var number: UInt32 = 0
            guard master >= 0, ioctl(master, 0x4004_5431, &unlock) == 0, ioctl(master, 0x8004_5430, &number) == 0 else {
                throw JUnitReaderError(description: "a pty: errno \(errno)")
            }
            slave = "/dev/pts/\(number)"
        }

        func close() { Glibc.close(master) }
    }

    /// Starts the agent on `pty` (in `namespace`, when given, as a guest's agent is in the
    /// guest's network).
    static func startAgent(_ pty: Pty, namespace: String? = nil) throws -> ChildProcess {
        let (program, arguments) = namespace.map { ("/usr/sbin/ip", ["netns", "exec", $0, agentBinary]) } ?? (agentBinary, [])
        return try ChildProcess(program, arguments, standardInput: .fileDescriptor(pty.master),
                                standardOutput: .fileDescriptor(pty.master), standardError: .null)
    }

    static func makeStateDirectory(_ tag: String) throws -> String {
        var template = Array("/tmp/xensplit-agent-\(tag)-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw JUnitReaderError(description: "mkdtemp: errno \(errno)") }
        return String(cString: made)
    }

    @Test("the agent does a batch at once on a disk file and answers each operation; bad commands and devices are named")
    func protocolAgainstAFile() async throws {
        let state = try Self.makeStateDirectory("proto")
        defer { try? FileManager.default.removeItem(atPath: state) }
        let disk = state + "/disk.img"
        #expect(FileManager.default.createFile(atPath: disk, contents: nil))
        #expect(truncate(disk, 1 << 20) == 0)
        let pty = try Pty()
        defer { pty.close() }
        let process = try Self.startAgent(pty)
        defer {
            _ = process.signal(SIGTERM)
            _ = process.wait()
        }
        let agent = try FrontendAgent(path: pty.slave)
        defer { agent.close() }
        let io = AgentBlockIO(agent: agent, device: disk)
        let bytes = (0 ..< 8192).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let written = try await io.run([.write(offset: 4096, bytes: bytes), .flush])
        #expect(written == [FrontendBlockIOResult(error: nil), FrontendBlockIOResult(error: nil)])
        let read = try await io.run([.read(offset: 4096, length: 8192), .read(offset: (1 << 20) - 4096, length: 8192)])
        #expect(read[0] == FrontendBlockIOResult(error: nil, data: bytes))
        // A read across the end: the user saw only part of it.
        #expect(read[1].error?.contains("short read: 4096 of 8192") == true, "\(read[1])")
        let file = try #require(FileHandle(forReadingAtPath: disk))
        try file.seek(toOffset: 4096)
        #expect(Array(try file.read(upToCount: 8192) ?? Data()) == bytes, "the agent wrote what it was given, where it was told")
        let missing = try await AgentBlockIO(agent: agent, device: state + "/absent").run([.read(offset: 0, length: 4096)])
        #expect(missing[0].error?.contains("absent: No such file or directory") == true, "\(missing[0])")
        #expect(throws: PeerError.self) { try agent.call("bogus", within: .seconds(10)) }
        do {
            try agent.call("link no-such-interface", within: .seconds(10))
            Issue.record("linking a missing interface succeeded")
        } catch { #expect("\(error)".contains("no interface no-such-interface")) }
        // The agent reads every line of a bad batch, so the next command is understood.
        #expect(throws: PeerError.self) { try agent.call("io \(disk) 2", body: ["r 0 4096", "x"], within: .seconds(10)) }
        #expect(try agent.call("drain", within: .seconds(10)) == ["ok 0"])
    }

    @Test("our netfront judged through the agent on its TAP device: every frontend-role vif clause as expected.tsv has it for ours-netfront")
    func netfrontThroughTheAgent() async throws {
        try await NetfrontConformanceTests.withNetfront(mac: "00:16:3e:5a:01:03", tap: "nfagent0") { state, ns, _ in
            let pty = try Pty()
            defer { pty.close() }
            let agent = try Self.startAgent(pty, namespace: ns.name)
            defer {
                _ = agent.signal(SIGTERM)
                _ = agent.wait()
            }
            let junit = state + "/report.xml"
            // The interface by its MAC address, as the real-Xen rig names a domU's.
            let run = try await offThePool {
                try TestCommand.run(Self.binary, ["conformance", "--role", "frontend", "--device", "vif", "--platform", "local", "--state-dir", state,
                                                  "--target", "guest/0", "--agent", pty.slave, "--agent-device", "00:16:3e:5a:01:03",
                                                  "--expect", "ours-netfront", "--format", "junit", "--output", junit])
            }
            #expect(run.status == 0, "conformance: \(run.stderr)")
            let executed = try JUnitReader.checkAgainstExpectations(junit, target: "ours-netfront", scope: ConformanceScope(role: .frontend, device: .vif))
            #expect(executed == NetifFrontendSuite.checks.count)
            // The suite closed the pty's slave at its end: the agent read the hang-up and ended.
            #expect(agent.wait() == .exited(0))
        }
    }
}
