import Foundation
import Glibc
@testable import NBD
import SystemCalls
import XenTesting

/// Fault sources below the backend that the kernel and real tools provide: a small tmpfs
/// that fills up, a file made by nbdfuse from nbdkit behind its error and delay filters.
/// Each is undone by ``remove()``, which a test calls from `defer`, so a failed test leaves
/// no mount or process behind.

/// A tmpfs of `bytes` mounted on a fresh directory under /tmp.
final class SmallTmpfs {
    let directory: String
    private var mounted = false

    init(bytes: Int) throws {
        directory = try makeTemporaryDirectory("xensplit-tmpfs")
        let result = try TestCommand.run("/usr/bin/mount", ["-t", "tmpfs", "-o", "size=\(bytes),mode=0700", "tmpfs", directory])
        guard result.status == 0 else {
            rmdir(directory)
            throw DemoTestError("mount tmpfs on \(directory): \(result.stderr)")
        }
        mounted = true
    }

    /// A file of `bytes` on it, its pages allocated (written), so it takes that much room.
    func fill(_ name: String, bytes: Int) throws {
        let path = directory + "/" + name
        guard FileManager.default.createFile(atPath: path, contents: Data(repeating: 0xA5, count: bytes)) else {
            throw DemoTestError("cannot write \(bytes) bytes to \(path)")
        }
    }

    /// Unmounts (lazily, should a process still hold a file) and removes the directory.
    func remove() {
        if mounted { _ = try? TestCommand.run("/usr/bin/umount", ["-l", directory]) }
        mounted = false
        rmdir(directory)
    }
}

/// `nbdfuse MOUNT/disk --command nbdkit -s PLUGIN... FILTERS...`: nbdkit's disk as the plain
/// file ``path``. The plugin is nbdkit's pattern plugin under its cow filter, so every byte
/// is known (``expected(offset:length:)``) and the file is writable.
final class NBDFuseDisk {
    let mountPoint: String
    let path: String
    /// While this file exists, the error filter (when asked for) fails every request with EIO.
    let trigger: String
    private let child: Child

    /// `filters` are nbdkit's filter options (`--filter=delay`, `delay-read=...`); with
    /// `errors`, the error filter is added with ``trigger`` as its error file.
    init(bytes: Int, errors: Bool, filters: [String] = []) throws {
        mountPoint = try makeTemporaryDirectory("xensplit-nbdfuse")
        path = mountPoint + "/disk"
        trigger = mountPoint + ".trigger"
        var nbdkit = ["nbdkit", "-s", "pattern", "\(bytes)", "--filter=cow"] + filters
        if errors { nbdkit += ["--filter=error", "error-rate=100%", "error-file=\(trigger)"] }
        do {
            child = try Child("/usr/bin/nbdfuse", [path, "--command"] + nbdkit, outputPath: mountPoint + ".log")
        } catch {
            rmdir(mountPoint)
            throw error
        }
    }

    /// Waits (bounded) until the file is there at its size.
    func ready() async throws {
        try await eventually("nbdfuse's \(path)") {
            var info = stat()
            return stat(path, &info) == 0 && info.st_size > 0
        }
    }

    /// What nbdkit's pattern plugin holds at `offset`: each 8-byte word is its own offset,
    /// big-endian.
    static func expected(offset: Int, length: Int) -> [UInt8] {
        (0 ..< length / 8).flatMap { word in
            withUnsafeBytes(of: UInt64(offset + word * 8).bigEndian, Array.init)
        }
    }

    var output: String { child.output }

    /// Unmounts, ends nbdfuse (by its PID) and removes the mount point, trigger and log.
    func remove() {
        _ = try? TestCommand.run("/usr/bin/umount", ["-l", mountPoint])
        child.signal(SIGTERM)
        child.process.wait()
        rmdir(mountPoint)
        unlink(trigger)
        unlink(child.outputPath)
    }
}

extension NBDStreamClient {
    /// Writes `bytes` at `offset` and waits for the reply: its error (`.success` if none).
    func write(offset: UInt64, _ bytes: [UInt8], cookie: UInt64 = 0x3417E) throws -> NBDErrno {
        try send(.write, cookie: cookie, offset: offset, length: UInt32(bytes.count), payload: bytes)
        let answer = try reply()
        guard answer.cookie == cookie else { throw DemoTestError("reply for cookie \(answer.cookie), not \(cookie)") }
        return answer.error
    }

    /// Reads `length` bytes at `offset` and waits: the data, or the reply's error (which
    /// comes without data).
    func attemptRead(offset: UInt64, length: Int, cookie: UInt64 = 0x4EAD) throws -> (error: NBDErrno, data: [UInt8]) {
        try send(.read, cookie: cookie, offset: offset, length: UInt32(length))
        let answer = try reply()
        guard answer.cookie == cookie else { throw DemoTestError("reply for cookie \(answer.cookie), not \(cookie)") }
        guard answer.error == .success else { return (answer.error, []) }
        return (.success, try socket.readExactly(count: length))
    }
}

/// A process's descriptors and threads, from /proc, for leak checks. The io_uring worker
/// threads the kernel adds to a process (`iou-wrk-*`) are not counted: the kernel makes
/// and ends them as I/O blocks and idles, whatever the backend holds.
struct ProcessFootprint: Equatable, CustomStringConvertible {
    let descriptors: Int
    let threads: Int

    init(_ pid: Int32) throws {
        descriptors = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count
        threads = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task").filter { task in
            let name = (try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/comm", encoding: .utf8)) ?? ""
            return !name.hasPrefix("iou-wrk-")
        }.count
    }

    var description: String { "\(descriptors) fds, \(threads) threads" }
}

/// `xensplit domain list --usage` read into figures per domain name:
/// connections, ports, granted, pinned, mappings, copy pages.
func domainUsage(state: String) async throws -> [String: [Int]] {
    let (status, output) = try await runTool([xensplitBinary, "domain", "list", "--usage", "--state-dir", state], in: state)
    guard status == 0 else { throw DemoTestError("domain list --usage: \(output)") }
    var usage: [String: [Int]] = [:]
    for line in output.split(separator: "\n").dropFirst() {
        let fields = line.split(separator: "\t").map(String.init)
        guard fields.count == 8 else { continue }
        usage[fields[1]] = fields[2...].compactMap { Int($0) }
    }
    return usage
}
