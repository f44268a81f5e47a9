import Foundation
import Glibc
import NBD
import Synchronization
import SystemCalls
import Testing
import XenTesting
@testable import BlockFrontend

/// Whether `tool` is an executable on PATH.
func toolExists(_ tool: String) -> Bool {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    return path.split(separator: ":").contains { access("\($0)/\(tool)", X_OK) == 0 }
}

/// A child process with its combined output in a file; `exited()` waits without holding
/// a thread of the concurrency pool.
final class ToolProcess: Sendable {
    let process: ChildProcess
    let outputPath: String

    init(_ arguments: [String], outputPath: String) throws {
        self.outputPath = outputPath
        process = try ChildProcess("/usr/bin/env", arguments, standardInput: .null, standardOutput: .file(outputPath),
                                   standardError: .standardOutput)
    }

    func exited() async -> Int32 {
        await process.exited().code
    }

    var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }
}

/// The frontend behind the NBD export, driven by fio's nbd engine.
@Suite struct BlockFrontendNBDTests {
    /// A frontend with `depth` slots whose backend takes requests and never answers, its
    /// disk exported over NBD on a Unix socket in the rig's directory.
    static func stalledExport(ringPageOrder: UInt32, depth: Int) async throws
        -> (Rig, BlockFrontend, NBDServer<NBDBlockFrontendExport>, String)
    {
        let rig = try await Rig(sectors: 16384)
        await rig.stopBackend()
        rig.startBackend(serving: false)
        let front = try rig.frontend(BlockFrontendConfiguration(maxRingPageOrder: ringPageOrder, queues: 1, depth: depth))
        let export = try await bounded("frontend connects") { try await NBDBlockFrontendExport.connecting(front, logger: testLogger) }
        return (rig, front, NBDServer(export: export, logger: testLogger), rig.image.directory + "/nbd.sock")
    }

    /// fio at iodepth 32 against a backend that answers nothing: all 32 requests reach
    /// the frontend's ring at once (the NBD connection does not serialise them). Then a
    /// working backend replaces the stalled one; the frontend sends the 32 again and fio
    /// finishes, its crc32c verification passing and no request failing.
    @Test(.enabled(if: toolExists("fio"), "fio is not installed"))
    func fioQueueDepthReachesTheRingAndSurvivesABackendRestart() async throws {
        let (rig, front, server, socket) = try await Self.stalledExport(ringPageOrder: 1, depth: 32)
        let address = try server.start(listeningOn: .unix(path: socket))
        let log = rig.image.directory + "/fio.log"
        defer { unlink(log) }
        let fio = try ToolProcess(["fio", "--name=qd32", "--thread", "--ioengine=nbd", "--uri=\(address.uri)", "--rw=randwrite",
                                   "--bs=4k", "--size=4M", "--iodepth=32", "--verify=crc32c", "--do_verify=1",
                                   "--verify_fatal=1", "--verify_state_save=0", "--randseed=32",
                                   "--output-format=terse", "--terse-version=3"], outputPath: log)
        do {
            try await eventually("32 requests in the frontend's ring at once") { front.inFlightRequests == 32 }
            await rig.stopBackend()
            try await eventually("frontend closed after its backend") { front.state == .closed }
            rig.startBackend()
            let status = try await bounded("fio finishes after the restart", seconds: 120) { await fio.exited() }
            #expect(status == 0, "\(fio.output)")
            // Terse v3: field 5 is the job's error; 0 means every write and verify passed.
            let fields = fio.output.split(separator: "\n").last { $0.hasPrefix("3;") }?
                .split(separator: ";", omittingEmptySubsequences: false)
            #expect(fields.map { $0.count > 5 && $0[4] == "0" } == true, "\(fio.output)")
            #expect(front.reissuedRequests >= 32, "the stalled requests were sent again")
            #expect(front.connections == 2)
        } catch {
            // --thread: the job is this one process.
            fio.process.signal(SIGKILL)
            _ = await fio.exited()
            throw error
        }
        server.stop()
        unlink(socket)
        #expect(await front.close() == 0)
        await rig.shutdown()
    }

    /// A client killed with 16 requests in the frontend: its connection ends at once
    /// (nothing waits for a backend that never answers), and closing the frontend later
    /// fails those requests into the dropped connection and gives every grant back.
    @Test(.enabled(if: toolExists("fio"), "fio is not installed"))
    func aKilledClientsRequestsAreDroppedAndTheFrontendClosesClean() async throws {
        let (rig, front, server, socket) = try await Self.stalledExport(ringPageOrder: 0, depth: 16)
        let address = try server.start(listeningOn: .unix(path: socket))
        let log = rig.image.directory + "/fio.log"
        defer { unlink(log) }
        // --thread: one process, so SIGKILL takes the job (and its connection) with it.
        let fio = try ToolProcess(["fio", "--name=stuck", "--thread", "--ioengine=nbd", "--uri=\(address.uri)", "--rw=randread",
                                   "--bs=4k", "--size=4M", "--iodepth=16", "--time_based", "--runtime=600"], outputPath: log)
        try await eventually("16 reads in the frontend") { front.inFlightRequests == 16 }
        #expect(server.clientCount == 1)
        fio.process.signal(SIGKILL)
        _ = try await bounded("fio dies") { await fio.exited() }
        try await eventually("the killed client's connection ends") { server.clientCount == 0 }
        #expect(front.inFlightRequests == 16, "the requests are still the frontend's")
        #expect(await front.close() == 0, "every grant given back")
        #expect(front.grantedPageSets == 0)
        server.stop()
        unlink(socket)
        await rig.shutdown()
    }
}
