import Foundation
import SystemCalls
import Testing
import XenLocal
import XenPlatform

/// A local hypervisor served on a thread of the test process, in its own state directory.
final class HypervisorFixture: @unchecked Sendable {
    let directory: String
    let hypervisor: LocalHypervisor

    init(poolPages: Int = 4096, grantEntries: Int = 1024) throws {
        var template = Array("/tmp/xensplit-test-XXXXXX".utf8CString)
        guard let p = mkdtemp(&template) else { throw PlatformError.system("mkdtemp", errno: errno) }
        directory = String(cString: p)
        var config = LocalHypervisor.Configuration(stateDirectory: directory)
        config.poolPages = poolPages
        config.grantEntries = grantEntries
        hypervisor = try LocalHypervisor(configuration: config)
        hypervisor.start()
    }

    /// Stops the hypervisor and removes the state directory.
    func stop() {
        hypervisor.stopAndWait()
        try? FileManager.default.removeItem(atPath: directory)
    }

    func dom0() throws -> LocalPlatform { try LocalPlatform(stateDirectory: directory) }

    func createDomain(_ name: String) async throws -> (DomainID, LocalPlatform) {
        let id = try await LocalToolstack(platform: dom0()).createDomain(name: name)
        return (id, try LocalPlatform(stateDirectory: directory, domain: name))
    }
}

/// A child process running `xensplit-peer`, read line by line.
final class PeerProcess: @unchecked Sendable {
    let process: ChildProcess
    private var buffer: [UInt8] = []

    static var binary: URL {
        // The test bundle sits beside the package's built products.
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("xensplit-peer")
    }

    init(_ arguments: [String]) throws {
        process = try ChildProcess(Self.binary.path, arguments, standardOutput: .pipe)
    }

    /// The next line the peer prints, or nil at end of output.
    func readLine() -> String? {
        while true {
            if let nl = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[buffer.startIndex..<nl], as: UTF8.self)
                buffer.removeSubrange(buffer.startIndex...nl)
                return line
            }
            guard let chunk = try? process.readStandardOutput() else { return nil }
            if chunk.isEmpty { return nil }
            buffer += chunk
        }
    }

    func waitForExit() -> Int32 {
        process.wait().code
    }

    func kill() {
        process.signal(SIGKILL)
        process.wait()
    }
}

/// Retries `body` until it stops throwing, for state another process changes (bounded).
func eventually<T>(_ what: String, attempts: Int = 500, _ body: () throws -> T) throws -> T {
    var lastError: Error?
    for _ in 0..<attempts {
        do { return try body() } catch {
            lastError = error
            usleep(10_000)
        }
    }
    Issue.record("\(what) never happened: \(String(describing: lastError))")
    throw lastError!
}
