import Foundation
import Glibc
@testable import NBD
import Synchronization
import SystemCalls
import Testing
import XenTesting

/// Faults from real sources, each through the whole path as a user runs it: `xensplit
/// hypervisor`, `xensplit blkback` and `xensplit blkfront` (exporting the guest's disk over
/// NBD) as separate processes, an NBD client in the test. The backend's answers are judged
/// where a user sees them: the NBD replies, xenstore, the backend's log and its counters.
@Suite("faults from real sources", .serialized)
struct FaultInjectionTests {
    static let enabled = access(xensplitBinary, X_OK) == 0

    /// A guest's disk attached by `xensplit blkfront NAME xvda --nbd unix:...` and an NBD
    /// client connected to it.
    struct Attached {
        let blkfront: Child
        let client: NBDStreamClient
    }

    static func attach(_ scenario: LocalScenario, guest: String) async throws -> Attached {
        let socket = scenario.state + "/\(guest).sock"
        let blkfront = try scenario.start("blkfront-\(guest)", ["blkfront", guest, "xvda", "--nbd", "unix:\(socket)",
                                                               "--platform", "local", "--state-dir", scenario.state])
        try await eventually("\(guest)'s NBD socket") { FileManager.default.fileExists(atPath: socket) }
        let client = try await offThePool { try NBDStreamClient(socketPath: socket) }
        return Attached(blkfront: blkfront, client: client)
    }

    static func startBlkback(_ scenario: LocalScenario) throws -> Child {
        try scenario.start("blkback", ["blkback", "--platform", "local", "--state-dir", scenario.state, "--workers", "1"])
    }

    /// The backend's xenbus state of domain `domid`'s xvda, read with Xen's xenstore-read.
    static func backendState(_ scenario: LocalScenario, domid: Int) async throws -> String {
        let (status, output) = try await runTool(["XENSTORED_PATH=\(scenario.state)/xenstored.socket", "xenstore-read",
                                                  "/local/domain/0/backend/vbd/\(domid)/51712/state"], in: scenario.state)
        guard status == 0 else { throw DemoTestError("xenstore-read: \(output)") }
        return output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// SIGTERM to the frontend, its clean exit, and then the backend's statistics line for
    /// the queue that went (the backend logs it when a queue is removed).
    static func detach(_ attached: Attached, blkback: Child) async throws -> String {
        let statistics = { blkback.output.split(separator: "\n").filter { $0.contains("queue statistics") } }
        let before = statistics().count
        attached.client.disconnect()
        attached.blkfront.signal(SIGTERM)
        #expect(await attached.blkfront.wait() == 0, "\(attached.blkfront.output)")
        try await eventually("the backend's queue statistics") { statistics().count > before }
        return statistics().last.map(String.init) ?? ""
    }

    // MARK: ENOSPC

    @Test("a backing file on a full tmpfs: the write that does not fit is BLKIF_RSP_ERROR, the device stays Connected, writes that fit succeed",
          .enabled(if: enabled, "the xensplit binary is not built"))
    func fullTmpfsFailsOnlyTheWriteThatDoesNotFit() async throws {
        let tmpfs = try SmallTmpfs(bytes: 1 << 20)
        defer { tmpfs.remove() }
        let scenario = try LocalScenario("xensplit-enospc", imageBytes: 4096)
        defer { scenario.stop() }
        // An 8 MiB sparse image on the 1 MiB tmpfs, and ballast that leaves it 16 pages.
        let image = tmpfs.directory + "/disk.img"
        guard FileManager.default.createFile(atPath: image, contents: nil), truncate(image, 8 << 20) == 0 else {
            throw DemoTestError("cannot make \(image)")
        }
        try tmpfs.fill("ballast", bytes: (1 << 20) - 20 * 4096)
        try tmpfs.fill("spare", bytes: 4 * 4096)
        _ = try await scenario.startHypervisor()
        try await scenario.createDomain("guest", disks: ["vdev=xvda,access=rw,target=\(image)"])
        let blkback = try Self.startBlkback(scenario)
        let disk = try await Self.attach(scenario, guest: "guest")
        let client = disk.client

        // 4 KiB blocks, one page each, at new offsets until one finds no room.
        var full: Int?
        for block in 0 ..< 64 {
            let error = try await offThePool { try client.write(offset: UInt64(block * 4096), NBDWriteStream.block(block, bytes: 4096)) }
            if error != .success {
                #expect(error == .io, "the frontend sees BLKIF_RSP_ERROR as EIO")
                full = block
                break
            }
        }
        let refused = try #require(full, "the tmpfs never filled")
        #expect(refused > 0)
        #expect(try await Self.backendState(scenario, domid: 1) == "4", "still Connected after the refused write")
        // Overwrites of allocated blocks fit, and read back.
        let again = NBDWriteStream.block(1000, bytes: 4096)
        #expect(try await offThePool { try client.write(offset: 0, again) } == .success)
        #expect(try await offThePool { try client.read(offset: 0, length: 4096) } == again)
        // The same new block still does not fit.
        #expect(try await offThePool { try client.write(offset: UInt64(refused * 4096), NBDWriteStream.block(refused, bytes: 4096)) } == .io)
        // With four pages free, a 64 KiB write at new offsets (one request) is taken in part
        // by the file system; the rest still finds no room, so it fails as a whole.
        unlink(tmpfs.directory + "/spare")
        #expect(try await offThePool { try client.write(offset: 4 << 20, NBDWriteStream.block(4096, bytes: 64 << 10)) } == .io)
        #expect(try await Self.backendState(scenario, domid: 1) == "4")
        // Once room is made, writes at new offsets fit.
        unlink(tmpfs.directory + "/ballast")
        for block in refused ..< refused + 8 {
            #expect(try await offThePool { try client.write(offset: UInt64(block * 4096), NBDWriteStream.block(block, bytes: 4096)) } == .success)
        }
        #expect(try await offThePool { try client.read(offset: UInt64(refused * 4096), length: 4096) }
                == NBDWriteStream.block(refused, bytes: 4096))
        #expect(try await Self.backendState(scenario, domid: 1) == "4")
        #expect(disk.blkfront.output.components(separatedBy: "-> Connected").count - 1 == 1,
                "the frontend connected once and never had to reconnect: \(disk.blkfront.output)")

        let statistics = try await Self.detach(disk, blkback: blkback)
        #expect(statistics.contains("errors=3"), "\(statistics)")
        // Each refusal names the errno, the partly taken write too (its rest was sent again).
        let refusals = blkback.output.split(separator: "\n").filter { $0.contains("blkback request refused") }
        #expect(refusals.count == 3 && refusals.allSatisfy { $0.contains("write failed: ENOSPC") },
                "the backend names the error: \(blkback.output)")
    }

    // MARK: EIO from nbdkit's error filter

    @Test("reads of a file nbdfuse makes from nbdkit's error filter fail while its trigger exists and succeed once it is gone",
          .enabled(if: enabled && toolExists("nbdfuse") && toolExists("nbdkit"), "needs xensplit, nbdfuse and nbdkit"))
    func nbdkitErrorsComeAndGoWithTheTrigger() async throws {
        let source = try NBDFuseDisk(bytes: 16 << 20, errors: true)
        defer { source.remove() }
        let scenario = try LocalScenario("xensplit-eio", imageBytes: 4096)
        defer { scenario.stop() }
        try await source.ready()
        _ = try await scenario.startHypervisor()
        try await scenario.createDomain("guest", disks: ["vdev=xvda,access=rw,target=\(source.path)"])
        let blkback = try Self.startBlkback(scenario)
        let disk = try await Self.attach(scenario, guest: "guest")
        let client = disk.client

        // Fresh offsets each time: a page the kernel cached would not reach nbdkit.
        let first = try await offThePool { try client.attemptRead(offset: 0, length: 4096) }
        #expect(first.error == .success && first.data == NBDFuseDisk.expected(offset: 0, length: 4096))
        #expect(FileManager.default.createFile(atPath: source.trigger, contents: nil))
        for offset in [1 << 20, 3 << 20] {
            let failed = try await offThePool { try client.attemptRead(offset: UInt64(offset), length: 4096) }
            #expect(failed.error == .io, "read at \(offset) with the trigger in place")
        }
        #expect(try await Self.backendState(scenario, domid: 1) == "4", "still Connected after failed reads")
        unlink(source.trigger)
        for offset in [1 << 20, 3 << 20] {
            let read = try await offThePool { try client.attemptRead(offset: UInt64(offset), length: 4096) }
            #expect(read.error == .success, "read at \(offset) once the trigger is gone")
            #expect(read.data == NBDFuseDisk.expected(offset: offset, length: 4096))
        }
        #expect(disk.blkfront.output.components(separatedBy: "-> Connected").count - 1 == 1, "\(disk.blkfront.output)")
        let statistics = try await Self.detach(disk, blkback: blkback)
        #expect(statistics.contains("errors=2"), "\(statistics)")
        #expect(blkback.output.contains("read failed: EIO"), "the backend names the error: \(blkback.output)")
    }

    // MARK: Slow I/O from nbdkit's delay filter

    @Test("slow reads from nbdkit's delay filter complete with the right data, and a disk of another guest on the same backend keeps completing meanwhile",
          .enabled(if: enabled && toolExists("nbdfuse") && toolExists("nbdkit"), "needs xensplit, nbdfuse and nbdkit"))
    func slowDiskDoesNotHoldUpAnother() async throws {
        let source = try NBDFuseDisk(bytes: 16 << 20, errors: false, filters: ["--filter=delay", "delay-read=3"])
        defer { source.remove() }
        let scenario = try LocalScenario("xensplit-slow", imageBytes: 16 << 20)
        defer { scenario.stop() }
        try await source.ready()
        _ = try await scenario.startHypervisor()
        try await scenario.createDomain("slow", disks: ["vdev=xvda,access=rw,target=\(source.path)"])
        try await scenario.createDomain("bystander", disks: ["vdev=xvda,access=rw,target=\(scenario.image)"])
        let blkback = try Self.startBlkback(scenario)
        let slow = try await Self.attach(scenario, guest: "slow")
        let bystander = try await Self.attach(scenario, guest: "bystander")

        // More slow reads in flight than the backend's worker has I/O threads by default
        // (one per core), each at an offset of its own (a cached page would not be slow).
        let window = ProcessInfo.processInfo.activeProcessorCount + 2
        let offsets = (0 ..< window).map { ($0 + 1) << 20 }
        let slowDone = SlowReads()
        let slowClient = slow.client
        let slowTask = Task {
            try await offThePool { () throws -> [Int] in
                for (index, offset) in offsets.enumerated() {
                    try slowClient.send(.read, cookie: UInt64(index), offset: UInt64(offset), length: 4096)
                }
                var wrong: [Int] = []
                for _ in offsets {
                    let reply = try slowClient.reply()
                    let data = reply.error == .success ? try slowClient.socket.readExactly(count: 4096) : []
                    let offset = offsets[Int(reply.cookie)]
                    if data != NBDFuseDisk.expected(offset: offset, length: 4096) { wrong.append(offset) }
                }
                slowDone.finish()
                return wrong
            }
        }
        // The bystander writes and reads back blocks of its own while the slow reads wait.
        let bystanderClient = bystander.client
        let bystanderWrong = try await offThePool { () throws -> [Int] in
            var wrong: [Int] = []
            for block in 0 ..< 32 {
                let data = NBDWriteStream.block(block, bytes: 4096)
                guard try bystanderClient.write(offset: UInt64(block * 4096), data) == .success,
                      try bystanderClient.read(offset: UInt64(block * 4096), length: 4096) == data else {
                    wrong.append(block)
                    continue
                }
            }
            return wrong
        }
        #expect(bystanderWrong == [])
        #expect(!slowDone.isFinished, "the bystander's 64 requests were all answered before the \(window) slow reads")
        let slowWrong = try await bounded("the slow reads", seconds: 120) { try await slowTask.value }
        #expect(slowWrong == [], "slow reads that came back wrong")
        _ = try await Self.detach(bystander, blkback: blkback)
        _ = try await Self.detach(slow, blkback: blkback)
        #expect(!blkback.output.contains("refused"), "\(blkback.output)")
    }

    // MARK: A frontend killed

    /// Writes block `round` of the bystander's disk and reads it back; whether both worked.
    static func bystanderRound(_ client: NBDStreamClient, _ round: Int) async throws -> Bool {
        let data = NBDWriteStream.block(round, bytes: 4096)
        return try await offThePool {
            try client.write(offset: UInt64(round * 4096), data) == .success
                && client.read(offset: UInt64(round * 4096), length: 4096) == data
        }
    }

    @Test("a blkfront killed by SIGKILL mid-stream: its ports and connection go at once, and once its domain is destroyed every mapping, port, fd and thread of the backend is back to where it was; another guest is served throughout",
          .enabled(if: enabled, "the xensplit binary is not built"))
    func killedFrontendLeavesNothingBehind() async throws {
        let scenario = try LocalScenario("xensplit-frontend-kill", imageBytes: 32 << 20)
        defer { scenario.stop() }
        _ = try await scenario.startHypervisor()
        let bystanderImage = try scenario.image("bystander.img", bytes: 4 << 20)
        try await scenario.createDomain("bystander", disks: ["vdev=xvda,access=rw,target=\(bystanderImage)"])
        let blkback = try Self.startBlkback(scenario)
        let bystander = try await Self.attach(scenario, guest: "bystander")
        #expect(try await Self.bystanderRound(bystander.client, 0))
        // The figures with the bystander connected and idle, before the victim exists.
        try await eventually("the backend settled") { try ProcessFootprint(blkback.pid) == ProcessFootprint(blkback.pid) }
        let footprint = try ProcessFootprint(blkback.pid)
        let usage = try await domainUsage(state: scenario.state)
        let dom0 = try #require(usage["Domain-0"], "\(usage)")

        try await scenario.createDomain("victim", disks: ["vdev=xvda,access=rw,target=\(scenario.image)"])
        let victim = try await Self.attach(scenario, guest: "victim")
        let (blocks, pauseAt, window) = (512, 64, 16)
        let stream = NBDWriteStream(client: victim.client, count: blocks, blockBytes: 64 << 10, window: window, pauseAt: pauseAt)
        stream.start()
        try await eventually("the victim's stream up to its pause acknowledged") {
            stream.acknowledged.load(ordering: .relaxed) == pauseAt
        }
        let during = try await domainUsage(state: scenario.state)
        #expect((during["victim"]?[3] ?? 0) > 0, "the backend maps the victim's grants: \(during)")
        // The backend stopped (and seen stopped) while a window of writes goes out, so they
        // are certainly unanswered when the frontend dies; it serves what it finds after.
        blkback.signal(SIGSTOP)
        try await eventually("every blkback thread stopped") { BlkbackKillTests.allThreadsStopped(blkback.pid) }
        stream.resume()
        try await eventually("a window of writes sent to the victim's frontend") {
            stream.sent.load(ordering: .relaxed) == pauseAt + window
        }
        victim.blkfront.signal(SIGKILL)
        #expect(await victim.blkfront.wait() == SIGKILL)
        blkback.signal(SIGCONT)
        try await eventually("the NBD client saw its server go") { stream.ended.load(ordering: .acquiring) }
        #expect(stream.acknowledged.load(ordering: .relaxed) == pauseAt, "killed with writes in flight")

        // What the killed process held, the hypervisor let go at once: its connections and ports.
        try await eventually("the victim's connections and ports closed") {
            let now = try await domainUsage(state: scenario.state)
            return now["victim"]?[0] == 0 && now["victim"]?[1] == 0
        }
        #expect(try await Self.bystanderRound(bystander.client, 1), "the bystander is served after the kill")

        // The toolstack destroys the guest, as xl does when a guest dies: the backend lets go
        // of the rest.
        let destroy = try scenario.start("destroy-victim", ["domain", "destroy", "victim", "--state-dir", scenario.state])
        #expect(await destroy.wait() == 0, "\(destroy.output)")
        try await eventually("dom0's ports, mappings and copy buffers back to where they were", seconds: 60) {
            let now = try await domainUsage(state: scenario.state)
            return now["victim"] == nil && now["Domain-0"] == dom0
                && now["bystander"] == usage["bystander"]
        }
        try await eventually("the backend's fds and threads back to where they were", seconds: 60) {
            try ProcessFootprint(blkback.pid) == footprint
        }
        #expect(try await Self.bystanderRound(bystander.client, 2), "the bystander is served after the destroy")
        #expect(blkback.process.isRunning)
        _ = try await Self.detach(bystander, blkback: blkback)
    }

    // MARK: The hypervisor killed

    @Test("the hypervisor killed under I/O: blkback and blkfront exit on their own, each with a message naming the lost hypervisor",
          .enabled(if: enabled, "the xensplit binary is not built"))
    func killedHypervisorEndsBackendAndFrontend() async throws {
        let scenario = try LocalScenario("xensplit-hypervisor-kill", imageBytes: 32 << 20)
        defer { scenario.stop() }
        let hypervisor = try await scenario.startHypervisorWithGuest()
        let blkback = try Self.startBlkback(scenario)
        let disk = try await Self.attach(scenario, guest: "guest")
        let blocks = 512
        let stream = NBDWriteStream(client: disk.client, count: blocks, blockBytes: 64 << 10, window: 8, pauseAt: blocks)
        stream.start()
        try await eventually("part of the stream acknowledged") { stream.acknowledged.load(ordering: .relaxed) >= 32 }
        hypervisor.signal(SIGKILL)
        #expect(await hypervisor.wait() == SIGKILL)

        // Bounded: a process that hangs fails here instead of hanging the test.
        let blkfrontStatus = try await bounded("blkfront exits after the hypervisor went", seconds: 60) { await disk.blkfront.wait() }
        let blkbackStatus = try await bounded("blkback exits after the hypervisor went", seconds: 60) { await blkback.wait() }
        #expect(blkfrontStatus != 0, "\(disk.blkfront.output)")
        #expect(blkbackStatus != 0, "\(blkback.output)")
        for (name, child) in [("blkfront", disk.blkfront), ("blkback", blkback)] {
            #expect(child.output.contains("lost the hypervisor"), "\(name) says what happened: \(child.output)")
        }
        try await eventually("the NBD client saw its server go") { stream.ended.load(ordering: .acquiring) }
    }

    @Test("the hypervisor killed while blkfront waits for a backend: it exits naming the lost hypervisor",
          .enabled(if: enabled, "the xensplit binary is not built"))
    func killedHypervisorEndsAWaitingFrontend() async throws {
        let scenario = try LocalScenario("xensplit-hypervisor-kill-waiting", imageBytes: 1 << 20)
        defer { scenario.stop() }
        let hypervisor = try await scenario.startHypervisorWithGuest()
        // No backend: the frontend waits at Initialising.
        let blkfront = try scenario.start("blkfront", ["blkfront", "guest", "xvda", "--nbd", "unix:\(scenario.state)/nbd.sock",
                                                       "--platform", "local", "--state-dir", scenario.state])
        try await eventually("the frontend waiting for its backend") { blkfront.output.contains("-> Initialising") }
        hypervisor.signal(SIGKILL)
        let status = try await bounded("blkfront exits after the hypervisor went", seconds: 60) { await blkfront.wait() }
        #expect(status == 1, "\(blkfront.output)")
        #expect(blkfront.output.contains("blkfront: lost the hypervisor"), "\(blkfront.output)")
    }
}

/// Set once every slow read is answered.
final class SlowReads: Sendable {
    private let done = Atomic<Bool>(false)
    func finish() { done.store(true, ordering: .releasing) }
    var isFinished: Bool { done.load(ordering: .acquiring) }
}
