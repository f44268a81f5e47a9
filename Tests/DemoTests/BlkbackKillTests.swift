import Dispatch
import Foundation
import Glibc
@testable import NBD
import Synchronization
import SystemCalls
import Testing
import XenTesting

/// A blocking NBD client over a Unix socket, enough for a write stream: handshake with
/// NBD_OPT_GO, then requests and simple replies.
final class NBDStreamClient: @unchecked Sendable {
    // @unchecked: used by one thread at a time (the test, then the writer thread, then the test).
    let socket: NBDSocket
    let size: UInt64

    init(socketPath: String) throws {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw DemoTestError("socket: errno \(errno)") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(socketPath.utf8)) }
        let result = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        socket = NBDSocket(descriptor: fd)
        guard result == 0 else { throw DemoTestError("connect \(socketPath): errno \(errno)") }
        let greeting = try NBDServerGreeting.decode(try socket.readExactly(count: NBDServerGreeting.size))
        guard greeting.flags.contains(.fixedNewstyle) else { throw DemoTestError("not fixed newstyle") }
        try socket.writeAll(NBDClientFlags([.fixedNewstyle, .noZeroes]).encode())
        let request = NBDInfoRequest(name: "", requests: [])
        try socket.writeAll(NBDOptionHeader(option: .go, length: UInt32(request.encode().count)).encode() + request.encode())
        var size: UInt64?
        while true {
            let header = try NBDOptionReply.decodeHeader(try socket.readExactly(count: NBDOptionReply.headerSize))
            let data = try socket.readExactly(count: Int(header.length))
            if header.type == .ack { break }
            guard header.type == .info else { throw DemoTestError("NBD_OPT_GO refused: \(header.type)") }
            if case let .export(exportSize, _) = try NBDInfo.decode(data) { size = exportSize }
        }
        guard let size else { throw DemoTestError("no NBD_INFO_EXPORT") }
        self.size = size
    }

    func send(_ command: NBDCommand, cookie: UInt64, offset: UInt64, length: UInt32, payload: [UInt8] = []) throws {
        try socket.writeAll(NBDRequest(command: command, cookie: cookie, offset: offset, length: length).encode() + payload)
    }

    func reply() throws -> NBDSimpleReply {
        try socket.readExactly(count: NBDSimpleReply.size).withUnsafeBytes { bytes throws(NBDError) in
            try NBDSimpleReply.decode(bytes)
        }
    }

    /// Reads `length` bytes at `offset` (one request, waited for).
    func read(offset: UInt64, length: Int) throws -> [UInt8] {
        try send(.read, cookie: 0xEAD, offset: offset, length: UInt32(length))
        let answer = try reply()
        guard answer.error == .success, answer.cookie == 0xEAD else { throw DemoTestError("read at \(offset): \(answer)") }
        return try socket.readExactly(count: length)
    }

    func disconnect() {
        try? send(.disconnect, cookie: 0, offset: 0, length: 0)
        socket.close()
    }
}

/// Writes `count` blocks of `blockBytes`, block i at i x blockBytes with data only it
/// has, keeping `window` requests in flight, on a thread of its own. It stops sending at block `pauseAt` until
/// `resume()` (still collecting replies), so a test can change the world at a known point.
final class NBDWriteStream: @unchecked Sendable {
    // @unchecked: the counters are atomics; `failures` is under its mutex; the client
    // belongs to the writer thread until `finished` resumes.
    let client: NBDStreamClient
    let count: Int
    let blockBytes: Int
    let window: Int
    let pauseAt: Int
    let sent = Atomic<Int>(0)
    let acknowledged = Atomic<Int>(0)
    let failures = Mutex<[String]>([])
    /// Set when the writer thread has stopped (every reply read, or a failure).
    let ended = Atomic<Bool>(false)
    private let gate = DispatchSemaphore(value: 0)

    init(client: NBDStreamClient, count: Int, blockBytes: Int, window: Int, pauseAt: Int) {
        self.client = client
        self.count = count
        self.blockBytes = blockBytes
        self.window = window
        self.pauseAt = pauseAt
    }

    /// The bytes of block `index`: 8-byte words that name the block and the word.
    static func block(_ index: Int, bytes: Int) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: bytes) { buffer, initialised in
            let words = UnsafeMutableRawBufferPointer(buffer)
            for word in 0 ..< bytes / 8 {
                words.storeBytes(of: (UInt64(index) << 32 | UInt64(word)) ^ 0x9E37_79B9_7F4A_7C15, toByteOffset: word * 8,
                                 as: UInt64.self)
            }
            initialised = bytes
        }
    }

    func start() {
        Thread { [self] in
            run()
            ended.store(true, ordering: .releasing)
        }.start()
    }

    func resume() { gate.signal() }

    private func run() {
        var next = 0
        var outstanding = 0
        var paused = false
        do {
            while acknowledged.load(ordering: .relaxed) < count {
                while outstanding < window, next < count {
                    if next == pauseAt, !paused {
                        // Every earlier write answered first, then wait for the test.
                        if outstanding > 0 { break }
                        gate.wait()
                        paused = true
                    }
                    try client.send(.write, cookie: UInt64(next), offset: UInt64(next * blockBytes),
                                    length: UInt32(blockBytes), payload: Self.block(next, bytes: blockBytes))
                    next += 1
                    outstanding += 1
                    sent.store(next, ordering: .relaxed)
                }
                let reply = try client.reply()
                outstanding -= 1
                if reply.error != .success {
                    failures.withLock { $0.append("write \(reply.cookie): \(reply.error)") }
                }
                acknowledged.add(1, ordering: .relaxed)
            }
        } catch {
            failures.withLock { $0.append("stream: \(error)") }
        }
    }
}

/// The block backend as a process of its own, killed while writes are in flight and
/// started again; hypervisor, blkback, blkfront (with its NBD export) and the NBD writer
/// are separate processes or threads that share nothing but sockets.
///
/// SIGKILL: the backend vanishes without a word; the new one finds the frontend still
/// Connected and takes up its rings where they stand. SIGTERM: the backend walks the disk
/// to Closed, the frontend follows, then reconnects to the new one with new rings and
/// sends again what had no answer. Either way the writer sees neither.
@Suite("blkback killed mid-stream", .serialized)
struct BlkbackKillTests {
    /// Whether every thread of `pid` is stopped (state T in /proc/PID/task/TID/stat).
    static func allThreadsStopped(_ pid: Int32) -> Bool {
        guard let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task"), !tasks.isEmpty else {
            return false
        }
        return tasks.allSatisfy { task in
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/task/\(task)/stat") else { return false }
            let text = String(decoding: data, as: UTF8.self)
            // The state follows the command name in parentheses, which may hold spaces.
            guard let open = text.firstIndex(of: "("), let close = text.lastIndex(of: ")") else { return false }
            // io_uring's kernel workers (iou-wrk, iou-sqp) do not stop for SIGSTOP; they
            // change nothing the test reads while the process's own threads are stopped.
            if text[text.index(after: open)..<close].hasPrefix("iou-") { return true }
            return text[text.index(after: close)...].split(separator: " ").first == "T"
        }
    }

    @Test(.enabled(if: access(xensplitBinary, X_OK) == 0, "the xensplit binary is not built"),
          arguments: [SIGKILL, SIGTERM])
    func everyAcknowledgedWriteSurvivesAKilledBackend(signal: Int32) async throws {
        let blocks = 512
        let blockBytes = 64 << 10
        let scenario = try LocalScenario("xensplit-blkback-kill-\(signal)", imageBytes: blocks * blockBytes)
        defer { scenario.stop() }
        let (state, image) = (scenario.state, scenario.image)
        let start = scenario.start
        let hypervisor = try await scenario.startHypervisorWithGuest()
        let backend = ["blkback", "--platform", "local", "--state-dir", state, "--workers", "1"]
        let first = try start("blkback-1", backend)
        let socket = state + "/nbd.sock"
        let blkfront = try start("blkfront", ["blkfront", "guest", "xvda", "--nbd", "unix:\(socket)",
                                              "--platform", "local", "--state-dir", state])
        try await eventually("the NBD socket") { FileManager.default.fileExists(atPath: socket) }

        let client = try NBDStreamClient(socketPath: socket)
        #expect(client.size == UInt64(blocks * blockBytes))
        let stream = NBDWriteStream(client: client, count: blocks, blockBytes: blockBytes, window: 16, pauseAt: blocks / 4)
        stream.start()
        try await eventually("a quarter of the stream acknowledged") {
            stream.acknowledged.load(ordering: .relaxed) == blocks / 4
        }
        // Stopped first (and seen stopped), so the writes sent next are certainly
        // unanswered when it dies.
        first.signal(SIGSTOP)
        try await eventually("every blkback thread stopped") { Self.allThreadsStopped(first.pid) }
        stream.resume()
        try await eventually("a full window in flight to the stopped backend") {
            stream.sent.load(ordering: .relaxed) == blocks / 4 + 16
        }
        #expect(stream.acknowledged.load(ordering: .relaxed) == blocks / 4)
        first.signal(signal)
        let unanswered: Int
        if signal == SIGKILL {
            #expect(await first.wait() == SIGKILL)
            #expect(first.process.status == .signalled(SIGKILL))
            unanswered = stream.sent.load(ordering: .relaxed) - stream.acknowledged.load(ordering: .relaxed)
        } else {
            // Measured while it is still stopped: it cannot have answered them yet.
            unanswered = stream.sent.load(ordering: .relaxed) - stream.acknowledged.load(ordering: .relaxed)
            first.signal(SIGCONT)
            #expect(await first.wait() == 0, "\(first.output)")
            try await eventually("the frontend followed its backend to Closed") {
                blkfront.output.contains("Closing -> Closed")
            }
        }
        #expect(unanswered > 0, "writes were in flight when the backend went")

        let second = try start("blkback-2", backend)
        // Bounded: a write the new backend never answers fails here instead of hanging.
        try await eventually("the stream finishes on the new backend", seconds: 120) { stream.ended.load(ordering: .acquiring) }
        #expect(stream.failures.withLock { $0 } == [], "the NBD client saw no error")
        #expect(stream.acknowledged.load(ordering: .relaxed) == blocks)
        if signal == SIGTERM {
            #expect(blkfront.output.components(separatedBy: "-> Connected").count - 1 == 2,
                    "the frontend connected to each backend: \(blkfront.output)")
        }

        // Read back through the same path, then from the file.
        var mismatches: [Int] = []
        for index in 0 ..< blocks
        where try client.read(offset: UInt64(index * blockBytes), length: blockBytes) != NBDWriteStream.block(index, bytes: blockBytes) {
            mismatches.append(index)
        }
        #expect(mismatches == [], "blocks that read back wrong through NBD")
        client.disconnect()
        let file = [UInt8](try Data(contentsOf: URL(fileURLWithPath: image)))
        let wrongInFile = (0 ..< blocks).filter {
            Array(file[$0 * blockBytes ..< ($0 + 1) * blockBytes]) != NBDWriteStream.block($0, bytes: blockBytes)
        }
        #expect(wrongInFile == [], "blocks the image file holds wrong")

        blkfront.signal(SIGTERM)
        #expect(await blkfront.wait() == 0, "\(blkfront.output)")
        second.signal(SIGTERM)
        #expect(await second.wait() == 0, "\(second.output)")
        hypervisor.signal(SIGTERM)
        #expect(await hypervisor.wait() == 0, "\(hypervisor.output)")
    }
}
