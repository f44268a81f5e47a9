import Foundation
import SystemCalls
import Testing
@testable import XenStore

@Suite struct XenstoredCommandTests {
    /// `xensplit xenstored --socket PATH` serves Xen's tools on its own. The binary is built
    /// with the tests (`swift build --build-tests`).
    @Test func standaloneServerServesXenTools() async throws {
        // Beside the test bundle, whatever the scratch path.
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("xensplit")
        try #require(FileManager.default.isExecutableFile(atPath: binary.path), "build xensplit first")
        let dir = temporaryDirectory("cli")
        let socket = dir + "/xenstored.socket"
        let server = try ChildProcess(binary.path, ["xenstored", "--socket", socket], standardError: .null)
        defer {
            server.signal(SIGKILL)
            server.wait()
        }
        // The socket appears once the server listens.
        var client: XenStoreClient?
        for _ in 0 ..< 10_000 {
            if let c = try? XenStoreClient(socketPath: socket) {
                client = c
                break
            }
            try await Task.sleep(nanoseconds: 1_000_000)
        }
        let c = try #require(client)
        defer { c.close() }
        try await c.write("/cli/hello", "world")
        let read = try ChildProcess("/usr/bin/xenstore-read", ["/cli/hello"], environment: ["XENSTORED_PATH": socket],
                                    standardOutput: .pipe)
        let text = String(decoding: try read.collectOutput().standardOutput, as: UTF8.self)
        #expect(read.wait() == .exited(0))
        #expect(text == "world\n")
    }
}
