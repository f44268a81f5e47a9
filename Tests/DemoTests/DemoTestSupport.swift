import XenTesting
import BlockBackend
import Foundation
import Logging
import SystemCalls
import URing
import XenLocal
import XenPlatform

let quietLogger: Logger = {
    var logger = Logger(label: "xensplit.demo-tests")
    logger.logLevel = .critical
    return logger
}()

struct DemoTestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A fresh directory under /tmp, made with mkdtemp.
func makeTemporaryDirectory(_ prefix: String) throws -> String {
    var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { throw DemoTestError("mkdtemp: errno \(errno)") }
    return String(cString: made)
}

/// The built `xensplit` binary, beside the test bundle.
var xensplitBinary: String {
    URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("xensplit").path
}

/// Whether `tool` is an executable on PATH.
func toolExists(_ tool: String) -> Bool {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    return path.split(separator: ":").contains { access("\($0)/\(tool)", X_OK) == 0 }
}

/// A child process whose combined output goes to a file, so waiting for it never blocks a
/// thread of the concurrency pool (the NBD server under test needs that pool).
final class Child: @unchecked Sendable {
    // @unchecked: `process` is only started here and then read.
    let process: ChildProcess
    let outputPath: String

    init(_ executable: String, _ arguments: [String], outputPath: String) throws {
        self.outputPath = outputPath
        guard FileManager.default.createFile(atPath: outputPath, contents: nil) else {
            throw DemoTestError("cannot create \(outputPath)")
        }
        process = try ChildProcess(executable, arguments, standardInput: .null, standardOutput: .file(outputPath),
                                   standardError: .standardOutput)
    }

    var pid: Int32 { process.pid }
    var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }

    /// Waits for the exit on a thread of its own; returns the status.
    func wait() async -> Int32 {
        await process.exited().code
    }

    /// Signals the child if it has not been reaped yet (a reaped pid may belong to another process).
    func signal(_ sig: Int32) { process.signal(sig) }
}

/// Runs `arguments` (through /usr/bin/env) to completion: status and combined output.
func runTool(_ arguments: [String], in directory: String) async throws -> (status: Int32, output: String) {
    let child = try Child("/usr/bin/env", arguments, outputPath: directory + "/tool-\(UUID().uuidString).log")
    let status = await child.wait()
    let output = child.output
    unlink(child.outputPath)
    return (status, output)
}

/// A seeded byte pattern.
func pattern(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed
    return (0..<count).map { _ in
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return UInt8(truncatingIfNeeded: state >> 33)
    }
}

/// The local hypervisor on a thread and the block backend in a task of this process, in
/// a directory of their own that also holds the disk images.
final class BlockWorld: @unchecked Sendable {
    // @unchecked: set up in init, then only read; stop() is called once.
    let directory: String
    let hypervisor: LocalHypervisor
    let dom0: LocalPlatform
    let toolstack: LocalToolstack
    let daemon: BlkbackDaemon
    let daemonTask: Task<Void, any Error>

    init() throws {
        directory = try makeTemporaryDirectory("xensplit-demo-test")
        var configuration = LocalHypervisor.Configuration(stateDirectory: directory)
        configuration.poolPages = 8192
        configuration.grantEntries = 4096
        hypervisor = try LocalHypervisor(configuration: configuration, logger: quietLogger)
        hypervisor.start()
        dom0 = try LocalPlatform(stateDirectory: directory)
        toolstack = LocalToolstack(platform: dom0)
        let factory = try BlockIOEngineFactory(kind: .uring, configuration: .init(queueDepth: 64, capacity: 1024, threads: 2),
                                               logger: quietLogger)
        let daemon = try BlkbackDaemon(platform: dom0, configuration: .init(workers: 1), factory: factory, logger: quietLogger)
        self.daemon = daemon
        daemonTask = Task { try await daemon.run() }
    }

    /// A zero-filled image of `bytes` in the world's directory.
    func image(_ name: String, bytes: Int) throws -> String {
        let path = directory + "/" + name
        guard FileManager.default.createFile(atPath: path, contents: nil), truncate(path, off_t(bytes)) == 0 else {
            throw DemoTestError("cannot make \(path)")
        }
        return path
    }

    func stop() async throws {
        daemon.stop()
        try await daemonTask.value
        hypervisor.stopAndWait()
        try FileManager.default.removeItem(atPath: directory)
    }
}

/// Writes `bytes` over the start of the existing file `path`, in place (the backend keeps
/// it open, so the file must stay the same inode).
func overwrite(_ path: String, with bytes: [UInt8]) throws {
    let fd = open(path, O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else { throw DemoTestError("open \(path): errno \(errno)") }
    defer { close(fd) }
    let written = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    guard written == bytes.count, fsync(fd) == 0 else { throw DemoTestError("pwrite \(path): errno \(errno)") }
}

/// Separate xensplit processes on the local hypervisor, as a user runs them: a state
/// directory holding a raw image, `xensplit hypervisor`, and domain "guest" whose xvda is
/// the image. ``stop()`` SIGKILLs every child still running and removes the directory.
final class LocalScenario {
    let state: String
    let image: String
    private(set) var children: [Child] = []

    init(_ label: String, imageBytes: Int) throws {
        state = try makeTemporaryDirectory(label)
        image = state + "/disk.img"
        guard FileManager.default.createFile(atPath: image, contents: nil), truncate(image, off_t(imageBytes)) == 0 else {
            try? FileManager.default.removeItem(atPath: state)
            throw DemoTestError("cannot make \(image)")
        }
    }

    /// Starts `xensplit ARGUMENTS`, its output in STATE/NAME.log.
    func start(_ name: String, _ arguments: [String]) throws -> Child {
        let child = try Child(xensplitBinary, arguments, outputPath: state + "/\(name).log")
        children.append(child)
        return child
    }

    /// Starts the hypervisor, waits for its sockets and creates "guest" with the image as
    /// xvda (`xensplit domain create`); returns the hypervisor's process.
    func startHypervisorWithGuest() async throws -> Child {
        let hypervisor = try await startHypervisor()
        try await createDomain("guest", disks: ["vdev=xvda,access=rw,target=\(image)"])
        return hypervisor
    }

    /// Starts `xensplit hypervisor` and waits for its sockets; returns its process.
    func startHypervisor() async throws -> Child {
        let hypervisor = try start("hypervisor", ["hypervisor", "--state-dir", state])
        // xenstored's socket comes first, the hypervisor's own a moment later.
        try await eventually("the hypervisor's sockets") {
            FileManager.default.fileExists(atPath: state + "/xenstored.socket")
                && FileManager.default.fileExists(atPath: state + "/hypervisor.socket")
        }
        return hypervisor
    }

    /// `xensplit domain create NAME --disk SPEC...`, waited for.
    func createDomain(_ name: String, disks: [String]) async throws {
        let create = try start("create-\(name)", ["domain", "create", name, "--state-dir", state]
                                                   + disks.flatMap { ["--disk", $0] })
        guard await create.wait() == 0 else { throw DemoTestError("domain create \(name) failed: \(create.output)") }
    }

    /// A zero-filled image of `bytes` in the state directory.
    func image(_ name: String, bytes: Int) throws -> String {
        let path = state + "/" + name
        guard FileManager.default.createFile(atPath: path, contents: nil), truncate(path, off_t(bytes)) == 0 else {
            throw DemoTestError("cannot make \(path)")
        }
        return path
    }

    func stop() {
        for child in children { child.signal(SIGKILL) }
        try? FileManager.default.removeItem(atPath: state)
    }
}
