import Foundation
import Testing
@testable import XenStore

@Suite struct XenstoredCommandTests {
    /// `xensplit xenstored --socket PATH` serves Xen's tools on its own. The binary is built
    /// with the tests (`swift build --build-tests`).
    @Test func standaloneServerServesXenTools() async throws {
        let binary = repositoryRoot.appendingPathComponent(".build/debug/xensplit")
        try #require(FileManager.default.isExecutableFile(atPath: binary.path), "build xensplit first")
        let dir = temporaryDirectory("cli")
        let socket = dir + "/xenstored.socket"
        let server = Process()
        server.executableURL = binary
        server.arguments = ["xenstored", "--socket", socket]
        server.standardError = FileHandle.nullDevice
        try server.run()
        defer {
            // SIGKILL: the test runner's threads block SIGTERM, and children inherit the mask.
            kill(server.processIdentifier, SIGKILL)
            server.waitUntilExit()
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
        let read = Process()
        read.executableURL = URL(fileURLWithPath: "/usr/bin/xenstore-read")
        read.arguments = ["/cli/hello"]
        read.environment = ["XENSTORED_PATH": socket]
        let out = Pipe()
        read.standardOutput = out
        try read.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        read.waitUntilExit()
        #expect(read.terminationStatus == 0)
        #expect(text == "world\n")
    }
}
