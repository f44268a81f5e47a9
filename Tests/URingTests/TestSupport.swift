import Foundation
import XenTesting
import Glibc
import Testing
@testable import URing

/// FNV-1a over bytes: the checksum data is verified with.
func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
    var hash: UInt64 = 0xCBF2_9CE4_8422_2325
    for byte in bytes {
        hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
    }
    return hash
}

/// Page-aligned memory (O_DIRECT and registered buffers want it), zeroed.
final class AlignedBuffer {
    let bytes: UnsafeMutableRawBufferPointer
    init(count: Int) {
        bytes = UnsafeMutableRawBufferPointer(
            start: UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 4096), count: count)
        bytes.initializeMemory(as: UInt8.self, repeating: 0)
    }
    deinit { bytes.deallocate() }
    func slice(_ offset: Int, _ count: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: bytes[offset..<(offset + count)])
    }
    func fill(seed: UInt64) {
        var generator = SeededGenerator(seed: seed)
        for i in 0..<bytes.count { bytes[i] = UInt8.random(in: 1...255, using: &generator) }
    }
}

/// A scratch directory under /tmp (a disk file system: punch hole, zero range and
/// O_DIRECT all work there), removed at deinit.
final class TemporaryDirectory {
    let path: String
    init() throws {
        var template = Array("/tmp/uring-test-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw Errno.current }
        path = String(cString: made)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Opens (creating) a file in the directory; the caller closes it.
    func open(_ name: String, flags: Int32 = O_RDWR | O_CREAT | O_TRUNC, size: Int? = nil) throws -> Int32 {
        let fd = Glibc.open("\(path)/\(name)", flags | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Errno.current }
        if let size, ftruncate(fd, off_t(size)) != 0 { throw Errno.current }
        return fd
    }
}

/// Makes an engine of `kind`. io_uring is required on the machines this runs on
/// (DESIGN.md, Tests), so an io_uring that cannot be set up fails the test, naming why.
func makeEngine(_ kind: BlockIOEngineKind, _ configuration: BlockIOEngineConfiguration = .init(queueDepth: 16))
    throws -> any BlockIOEngine
{
    switch kind {
    case .threads:
        return try ThreadPoolEngine(configuration: configuration)
    case .uring:
        return try URingEngine(configuration: configuration)
    }
}

extension BlockIOEngine {
    /// Submits and collects `count` completions, keyed by user data.
    func drain(_ count: Int, timeout: Duration = .seconds(10)) throws -> [UInt64: Int32] {
        var results: [UInt64: Int32] = [:]
        let buffer = UnsafeMutableBufferPointer<Completion>.allocate(capacity: 64)
        defer { buffer.deallocate() }
        while results.count < count {
            try wait(minimum: 1, timeout: timeout)
            let reaped = reap(into: buffer)
            if reaped == 0 { break }
            for c in buffer[0..<reaped] {
                #expect(results[c.userData] == nil, "user data \(c.userData) completed twice")
                results[c.userData] = c.result
            }
        }
        return results
    }

    /// Enqueues a request that must be accepted.
    func mustEnqueue(_ operation: BlockIOOperation, userData: UInt64) {
        if case .queueFull = enqueue(BlockRequest(operation, userData: userData)) {
            Issue.record("request \(userData) was refused")
        }
    }
}

/// Writes the 8-byte increment an eventfd expects.
func signal(eventFD: Int32) {
    var one: UInt64 = 1
    #expect(Glibc.write(eventFD, &one, 8) == 8)
}
